//! The udp backend's data path: per TUN queue one thread moving packets out (TUN → UDP)
//! and one moving them in (UDP → TUN, received in batches with recvmmsg). Blocking I/O on
//! dedicated threads, fixed buffers, no allocation per packet.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use super::udp::{accept_in, route_out, Egress, PeerTable, Rejected};

const BATCH: usize = 32;
const BUF: usize = 65536;

/// Drop counters, logged at most every few seconds.
#[derive(Default)]
pub struct Stats {
    pub unknown_sender: AtomicU64,
    pub foreign_source: AtomicU64,
    pub malformed: AtomicU64,
    pub no_route: AtomicU64,
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
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: 0 },
            sin_zero: [0; 8],
        };
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

fn outbound(mut tun: File, sock: UdpSocket, port: u16, local: Ipv4Addr, table: Arc<RwLock<PeerTable>>) {
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match tun.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!(error = %e, "reading the TUN device failed; outbound path stops");
                return;
            }
        };
        let verdict = route_out(&table.read().expect("peer table lock"), &mut buf[..n], local);
        match verdict {
            Egress::Send(peer) => {
                // A full socket buffer drops the packet, as a congested link would.
                let _ = sock.send_to(&buf[..n], SocketAddrV4::new(peer, port));
            }
            Egress::Reply(icmp) => {
                let _ = tun.write(&icmp);
            }
            Egress::Drop(_) => {}
        }
    }
}

fn inbound(mut tun: File, sock: UdpSocket, table: Arc<RwLock<PeerTable>>, stats: Arc<Stats>) {
    let mut bufs = vec![0u8; BATCH * BUF];
    // SAFETY: zeroed C structs, filled in below.
    let mut addrs: Vec<libc::sockaddr_in> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut iovs: Vec<libc::iovec> = vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH];
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let fd = sock.as_raw_fd();
    loop {
        for i in 0..BATCH {
            iovs[i] = libc::iovec { iov_base: bufs[i * BUF..].as_mut_ptr() as *mut libc::c_void, iov_len: BUF };
            msgs[i].msg_hdr.msg_name = &mut addrs[i] as *mut _ as *mut libc::c_void;
            msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            msgs[i].msg_hdr.msg_iov = &mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_len = 0;
        }
        // SAFETY: every mmsghdr points at a buffer and address owned by this frame.
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
        for i in 0..n as usize {
            let len = msgs[i].msg_len as usize;
            let pkt = &bufs[i * BUF..i * BUF + len];
            let from = Ipv4Addr::from(u32::from_be(addrs[i].sin_addr.s_addr));
            match accept_in(&table, from, pkt) {
                Ok(()) => {
                    let _ = tun.write(pkt);
                }
                Err(r) => stats.note(r, from),
            }
        }
    }
}
