//! The udp backend's data path: per TUN queue one thread moving packets out (TUN → UDP)
//! and one moving them in (UDP → TUN). Blocking I/O on dedicated threads and fixed
//! buffers. TCP super-packets from the TUN device leave as one UDP GSO send; datagrams
//! arrive in batches (recvmmsg, UDP GRO) and are coalesced back for the TUN device
//! ([`super::offload`]).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use super::offload::{
    finish_checksum, segment_headers_tcp4, Coalescer, Sink, VnetHdr, F_NEEDS_CSUM, GSO_NONE, GSO_TCPV4, MAX_PARTS, VNET_HDR_LEN,
};
use super::packet::{accept_in, route_out, Egress, PeerTable, Rejected};

const BATCH: usize = 8;
const BUF: usize = 65536 + VNET_HDR_LEN;
const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;
/// Segments per GSO send, keeping the total under 64 KiB.
const MAX_GSO_SEGMENTS: usize = 40;

/// Drop counters, logged at most every few seconds.
#[derive(Default)]
pub struct Stats {
    pub unknown_sender: AtomicU64,
    pub foreign_source: AtomicU64,
    pub malformed: AtomicU64,
    last_log: AtomicU64,
}

impl Stats {
    fn note(&self, r: Rejected, from: Ipv4Addr) {
        let c = match r {
            Rejected::UnknownSender => &self.unknown_sender,
            Rejected::SourceOutsidePeerSubnet => &self.foreign_source,
            Rejected::NotIpv4 => &self.malformed,
        };
        c.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let last = self.last_log.load(Ordering::Relaxed);
        if now >= last + 5 && self.last_log.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            tracing::warn!(
                last_from = %from,
                unknown_sender = self.unknown_sender.load(Ordering::Relaxed),
                foreign_source = self.foreign_source.load(Ordering::Relaxed),
                malformed = self.malformed.load(Ordering::Relaxed),
                "dropping udp datagrams that are not from a peer's subnet (totals so far)"
            );
        }
    }
}

fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    }
}

fn udp_socket(port: u16) -> std::io::Result<UdpSocket> {
    // SAFETY: plain socket setup on a descriptor we own until it becomes a UdpSocket.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let sock = <UdpSocket as std::os::fd::FromRawFd>::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let size: libc::c_int = 4 << 20;
        for (opt, v) in [(libc::SO_REUSEPORT, &one), (libc::SO_RCVBUF, &size), (libc::SO_SNDBUF, &size)] {
            if libc::setsockopt(fd, libc::SOL_SOCKET, opt, v as *const _ as *const libc::c_void, 4) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        // GRO is an optimisation: without it every datagram arrives alone.
        libc::setsockopt(fd, SOL_UDP, UDP_GRO, &one as *const _ as *const libc::c_void, 4);
        let addr = sockaddr(Ipv4Addr::UNSPECIFIED, port);
        if libc::bind(fd, &addr as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_in>() as u32) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(sock)
    }
}

/// Starts the data path on every TUN queue. `local` is the TUN device's address, the
/// source of ICMP errors sent back to pods.
pub fn start(queues: Vec<File>, port: u16, local: Ipv4Addr, table: Arc<RwLock<PeerTable>>) -> std::io::Result<Arc<Stats>> {
    let stats = Arc::new(Stats::default());
    for (q, tun) in queues.into_iter().enumerate() {
        let sock = udp_socket(port)?;
        let (tun_out, sock_out) = (tun.try_clone()?, sock.try_clone()?);
        let table_out = table.clone();
        std::thread::Builder::new().name(format!("udp-out-{q}")).spawn(move || outbound(tun_out, sock_out, port, local, table_out))?;
        let (table_in, stats_in) = (table.clone(), stats.clone());
        std::thread::Builder::new().name(format!("udp-in-{q}")).spawn(move || inbound(tun, sock, table_in, stats_in))?;
    }
    Ok(stats)
}

fn iovec(data: &[u8]) -> libc::iovec {
    libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() }
}

/// `sendmsg` of the pieces in `iov`, back to back, to `to`; with `segment`, UDP GSO cuts
/// the whole into datagrams of that size.
fn send(fd: i32, to: &libc::sockaddr_in, iov: &mut [libc::iovec], segment: Option<u16>) {
    // SAFETY: the msghdr points at locals and at iovecs over buffers that outlive the call.
    unsafe {
        let mut control = [0u64; 4];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = to as *const _ as *mut libc::c_void;
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len();
        if let Some(size) = segment {
            msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = libc::CMSG_SPACE(2) as usize;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = SOL_UDP;
            (*cmsg).cmsg_type = UDP_SEGMENT;
            (*cmsg).cmsg_len = libc::CMSG_LEN(2) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, size);
        }
        // A full socket buffer drops the packet, as a congested link would.
        libc::sendmsg(fd, &msg, 0);
    }
}

fn outbound(mut tun: File, sock: UdpSocket, port: u16, local: Ipv4Addr, table: Arc<RwLock<PeerTable>>) {
    let mut buf = vec![0u8; BUF];
    // one IP and TCP header per segment; the payload is sent from `buf` where it lies
    let mut hdrs: Vec<u8> = Vec::with_capacity(MAX_GSO_SEGMENTS * 120);
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(2 * MAX_GSO_SEGMENTS);
    let mut reply = Vec::with_capacity(128);
    let fd = sock.as_raw_fd();
    loop {
        let n = match tun.read(&mut buf) {
            Ok(n) if n > VNET_HDR_LEN => n,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!(error = %e, "reading the TUN device failed; outbound path stops");
                return;
            }
        };
        let hdr = VnetHdr::parse(&buf[..VNET_HDR_LEN]);
        let pkt = &mut buf[VNET_HDR_LEN..n];
        let verdict = route_out(&table.read().expect("peer table lock"), pkt, local);
        match verdict {
            Egress::Send(peer) => {
                let to = sockaddr(peer, port);
                match hdr.gso_type {
                    GSO_NONE => {
                        if hdr.flags & F_NEEDS_CSUM != 0 {
                            finish_checksum(pkt, hdr.csum_start as usize, hdr.csum_offset as usize);
                        }
                        send(fd, &to, &mut [iovec(pkt)], None);
                    }
                    GSO_TCPV4 => {
                        let Some(cut) = segment_headers_tcp4(pkt, hdr.gso_size as usize, &mut hdrs) else { continue };
                        let size = (cut.hlen + cut.mss) as u16;
                        for first in (0..cut.count).step_by(MAX_GSO_SEGMENTS) {
                            let last = (first + MAX_GSO_SEGMENTS).min(cut.count);
                            iov.clear();
                            for i in first..last {
                                let (h, p) = cut.parts(i, &hdrs, pkt);
                                iov.extend([iovec(h), iovec(p)]);
                            }
                            send(fd, &to, &mut iov, (last - first > 1).then_some(size));
                        }
                    }
                    _ => {} // only TSO4 is enabled on the device
                }
            }
            Egress::Reply(icmp) => {
                reply.clear();
                reply.resize(VNET_HDR_LEN, 0);
                reply.extend_from_slice(&icmp);
                let _ = tun.write(&reply);
            }
            Egress::Drop(_) => {}
        }
    }
}

struct Tun<'a>(&'a mut File);

impl Sink for Tun<'_> {
    fn emit(&mut self, parts: &[&[u8]]) {
        let mut slices = [std::io::IoSlice::new(&[]); MAX_PARTS];
        for (slot, p) in slices.iter_mut().zip(parts) {
            *slot = std::io::IoSlice::new(p);
        }
        // one writev is one frame for the TUN device
        let _ = self.0.write_vectored(&slices[..parts.len().min(MAX_PARTS)]);
    }
}

fn inbound(mut tun: File, sock: UdpSocket, table: Arc<RwLock<PeerTable>>, stats: Arc<Stats>) {
    let mut bufs = vec![0u8; BATCH * BUF];
    // SAFETY: zeroed C structs, filled in below.
    let mut addrs: Vec<libc::sockaddr_in> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut iovs: Vec<libc::iovec> = vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH];
    let mut controls = vec![[0u64; 8]; BATCH];
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut coalescer = Coalescer::default();
    let fd = sock.as_raw_fd();
    loop {
        for i in 0..BATCH {
            iovs[i] = libc::iovec { iov_base: bufs[i * BUF..].as_mut_ptr() as *mut libc::c_void, iov_len: BUF };
            let h = &mut msgs[i].msg_hdr;
            h.msg_name = &mut addrs[i] as *mut _ as *mut libc::c_void;
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = controls[i].as_mut_ptr() as *mut libc::c_void;
            h.msg_controllen = std::mem::size_of::<[u64; 8]>();
            msgs[i].msg_len = 0;
        }
        // SAFETY: every mmsghdr points at buffers owned by this frame.
        let n = unsafe { libc::recvmmsg(fd, msgs.as_mut_ptr(), BATCH as u32, libc::MSG_WAITFORONE, std::ptr::null_mut()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(error = %e, "receiving udp failed; inbound path stops");
            return;
        }
        let table = table.read().expect("peer table lock");
        let mut sink = Tun(&mut tun);
        for i in 0..n as usize {
            let len = msgs[i].msg_len as usize;
            let from = Ipv4Addr::from(u32::from_be(addrs[i].sin_addr.s_addr));
            let gro = gro_size(&msgs[i].msg_hdr).unwrap_or(len).max(1);
            for at in (i * BUF..i * BUF + len).step_by(gro) {
                let end = (at + gro).min(i * BUF + len);
                match accept_in(&table, from, &bufs[at..end]) {
                    Ok(()) => coalescer.push(&bufs, at, end - at, &mut sink),
                    Err(r) => stats.note(r, from),
                }
            }
        }
        coalescer.flush(&bufs, &mut sink);
    }
}

/// The datagram size UDP GRO reports for a coalesced receive, if any.
fn gro_size(h: &libc::msghdr) -> Option<usize> {
    // SAFETY: walking the control buffer the kernel filled, within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == SOL_UDP && (*c).cmsg_type == UDP_GRO {
                return Some(std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int) as usize);
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
        None
    }
}
