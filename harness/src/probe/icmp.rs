//! ICMP echo from inside a namespace over a raw socket (no `ping` binary), with or without
//! DF; sweeps of many peers from one socket; crafted udp datagrams carrying an inner echo,
//! and a listener that records what reaches a udp port.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use pnet_packet::icmp::echo_request::MutableEchoRequestPacket;
use pnet_packet::icmp::{IcmpPacket, IcmpTypes};
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::{MutablePacket, Packet};

use crate::error::Error;
use crate::error::Result;
use crate::lab::netns::Netns;
use crate::lab_err;

/// What became of one echo request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PingOutcome {
    Reply {
        rtt: Duration,
    },
    /// The sending stack refused it (EMSGSIZE: larger than the path MTU it knows).
    Refused,
    /// A router answered "fragmentation needed" with this next-hop MTU.
    /// (ICMPv6: "packet too big".)
    FragNeeded {
        from: std::net::IpAddr,
        mtu: u16,
    },
    /// Some other ICMP error came back.
    Unreachable {
        from: std::net::IpAddr,
        icmp_type: u8,
        code: u8,
    },
    Timeout,
    /// The local stack would not send it (no route, neighbour failed): the errno.
    NotSent {
        errno: i32,
    },
}

impl PingOutcome {
    pub fn is_reply(&self) -> bool {
        matches!(self, PingOutcome::Reply { .. })
    }
}

/// Sends one ICMP echo of `payload` bytes from `ns` to `dst` and waits up to `timeout`.
/// With `df`, the packet carries Don't Fragment and may be refused locally.
pub fn ping(ns: &Netns, dst: Ipv4Addr, payload: usize, df: bool, timeout: Duration) -> Result<PingOutcome, Error> {
    let name = ns.name().to_string();
    ns.run(move || ping_here(dst, payload, df, timeout))?.map_err(|(op, source)| Error::Socket { ns: name, op, source })
}

pub(super) fn last_err(op: &'static str) -> (&'static str, std::io::Error) {
    (op, std::io::Error::last_os_error())
}

/// Runs on a thread inside the namespace.
fn ping_here(dst: Ipv4Addr, payload: usize, df: bool, timeout: Duration) -> Result<PingOutcome, (&'static str, std::io::Error)> {
    // SAFETY: plain socket syscalls on a descriptor owned by this function.
    unsafe {
        let owned = crate::lab::sock::open(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP).map_err(|e| ("socket", e))?;
        let fd = owned.as_raw_fd();
        // PROBE: DF set, and the path MTU this namespace learned from earlier probes is
        // ignored, so every probe meets the path afresh (only the interface MTU limits it)
        let pmtu: libc::c_int = if df { libc::IP_PMTUDISC_PROBE } else { libc::IP_PMTUDISC_DONT };
        if libc::setsockopt(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, &pmtu as *const _ as *const libc::c_void, 4) != 0 {
            return Err(last_err("setsockopt IP_MTU_DISCOVER"));
        }
        crate::lab::sock::set_receive_timeout(fd, Duration::from_millis(50)).map_err(|e| ("setsockopt SO_RCVTIMEO", e))?;
        let ident: u16 = rand::random();
        let seq: u16 = 1;
        let buf = echo_request(ident, seq, payload);
        let sent_at = Instant::now();
        if let Some(declined) = sent_or_declined(send_to(fd, &buf, dst))? {
            return Ok(declined);
        }
        let deadline = sent_at + timeout;
        let mut rbuf = vec![0u8; 65536];
        while Instant::now() < deadline {
            let Some(n) = recv_some(fd, &mut rbuf)? else { continue };
            if let Some(out) = classify(&rbuf[..n], dst, ident, seq, sent_at) {
                return Ok(out);
            }
        }
        Ok(PingOutcome::Timeout)
    }
}

/// Matches a received IPv4 packet against our probe.
fn classify(pkt: &[u8], dst: Ipv4Addr, ident: u16, seq: u16, sent_at: Instant) -> Option<PingOutcome> {
    let ip = Ipv4Packet::new(pkt)?;
    let icmp = ip.payload();
    if icmp.len() < 8 {
        return None;
    }
    let (ty, code) = (icmp[0], icmp[1]);
    let id_seq = |b: &[u8]| (u16::from_be_bytes([b[4], b[5]]), u16::from_be_bytes([b[6], b[7]]));
    match ty {
        0 if ip.get_source() == dst && id_seq(icmp) == (ident, seq) => Some(PingOutcome::Reply { rtt: sent_at.elapsed() }),
        3 | 11 => {
            // the error quotes our IPv4 header and the first 8 bytes of our echo
            let inner = Ipv4Packet::new(&icmp[8..])?;
            let quoted = inner.payload();
            if inner.get_destination() != dst || quoted.len() < 8 || quoted[0] != 8 || id_seq(quoted) != (ident, seq) {
                return None;
            }
            if ty == 3 && code == 4 {
                Some(PingOutcome::FragNeeded { from: ip.get_source().into(), mtu: u16::from_be_bytes([icmp[6], icmp[7]]) })
            } else {
                Some(PingOutcome::Unreachable { from: ip.get_source().into(), icmp_type: ty, code })
            }
        }
        _ => None,
    }
}

/// An IPv4 packet carrying an ICMP echo request, as a udp-backend datagram would carry it.
pub fn echo_packet(src: Ipv4Addr, dst: Ipv4Addr, ident: u16) -> Vec<u8> {
    let mut p = vec![0u8; 20 + 8 + 16];
    let len = p.len() as u16;
    p[0] = 0x45;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    p[8] = 64;
    p[9] = 1;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let ip_sum = pnet_packet::util::checksum(&p[..20], 5);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    p[20..].copy_from_slice(&echo_request(ident, 1, 16));
    p
}

/// Sends `payload` as one UDP datagram from inside `ns` to `to`.
pub fn send_udp(ns: &Netns, to: std::net::SocketAddrV4, payload: Vec<u8>) -> Result<()> {
    ns.run(move || -> Result<()> {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| lab_err!("bind: {e}"))?;
        sock.send_to(&payload, to).map_err(|e| lab_err!("send to {to}: {e}"))?;
        Ok(())
    })
    .map_err(|e| e.to_string())?
}

/// Listens in `ns` for an ICMP echo request with `ident` for up to `timeout`; `ready` is
/// signalled once the socket is open.
pub fn saw_echo_request(ns: &Netns, ident: u16, timeout: Duration, ready: std::sync::mpsc::Sender<()>) -> Result<bool> {
    ns.run(move || -> Result<bool> {
        // SAFETY: plain socket syscalls on a descriptor owned by this closure.
        unsafe {
            let owned =
                crate::lab::sock::open(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP).map_err(|e| lab_err!("raw socket: {e}"))?;
            let fd = owned.as_raw_fd();
            crate::lab::sock::set_receive_timeout(fd, Duration::from_millis(50)).map_err(|e| lab_err!("receive timeout: {e}"))?;
            let _ = ready.send(());
            let deadline = Instant::now() + timeout;
            let mut buf = vec![0u8; 65536];
            while Instant::now() < deadline {
                let n = libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0);
                if n < 28 {
                    continue;
                }
                let ihl = ((buf[0] & 0x0f) as usize) * 4;
                let icmp = &buf[ihl..n as usize];
                if icmp.len() >= 8 && icmp[0] == 8 && u16::from_be_bytes([icmp[4], icmp[5]]) == ident {
                    return Ok(true);
                }
            }
            Ok(false)
        }
    })
    .map_err(|e| e.to_string())?
}

/// Sends one echo from `src` (an address of `ns`) to each of `dsts` over one raw socket and
/// collects the replies; destinations still silent after `timeout` get another echo, up to
/// `attempts` rounds. One outcome per destination, in order: the reply, the last ICMP error
/// that named the echo, or `Timeout`.
pub fn sweep(ns: &Netns, src: Ipv4Addr, dsts: Vec<Ipv4Addr>, attempts: u32, timeout: Duration) -> Result<Vec<PingOutcome>, Error> {
    let name = ns.name().to_string();
    ns.run(move || sweep_here(src, &dsts, attempts, timeout))?.map_err(|(op, source)| Error::Socket { ns: name, op, source })
}

fn sweep_here(
    src: Ipv4Addr,
    dsts: &[Ipv4Addr],
    attempts: u32,
    timeout: Duration,
) -> Result<Vec<PingOutcome>, (&'static str, std::io::Error)> {
    if dsts.is_empty() {
        return Ok(Vec::new());
    }
    // SAFETY: plain socket syscalls on a descriptor owned by this function.
    unsafe {
        let owned = crate::lab::sock::open(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP).map_err(|e| ("socket", e))?;
        let fd = owned.as_raw_fd();
        let local = sockaddr(src);
        if libc::bind(fd, &local as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_in>() as u32) != 0 {
            return Err(last_err("bind"));
        }
        crate::lab::sock::set_receive_timeout(fd, Duration::from_millis(20)).map_err(|e| ("setsockopt SO_RCVTIMEO", e))?;
        let ident: u16 = rand::random();
        let mut rbuf = vec![0u8; 65536];
        sweep_rounds(
            dsts,
            attempts,
            timeout,
            |i, dst| sent_or_declined(send_to(fd, &echo_request(ident, i as u16, 56), dst)),
            |matches| {
                let Some(n) = recv_some(fd, &mut rbuf)? else { return Ok(None) };
                let pkt = &rbuf[..n];
                Ok(matches(&|dst, seq, sent_at| classify(pkt, dst, ident, seq, sent_at)))
            },
        )
    }
}

/// The rounds of a sweep, for either family: each round sends one echo (sequence number =
/// index) to every destination not yet answered, then reads what comes back for `timeout`;
/// `recv` reads one message and matches it with the closure it is given (destination,
/// sequence number, when that echo was sent → outcome).
#[allow(clippy::type_complexity)]
pub(super) fn sweep_rounds<A: Copy>(
    dsts: &[A],
    attempts: u32,
    timeout: Duration,
    mut send: impl FnMut(usize, A) -> Result<Option<PingOutcome>, (&'static str, std::io::Error)>,
    mut recv: impl FnMut(
        &dyn Fn(&dyn Fn(A, u16, Instant) -> Option<PingOutcome>) -> Option<(usize, PingOutcome)>,
    ) -> Result<Option<(usize, PingOutcome)>, (&'static str, std::io::Error)>,
) -> Result<Vec<PingOutcome>, (&'static str, std::io::Error)> {
    let mut out: Vec<PingOutcome> = vec![PingOutcome::Timeout; dsts.len()];
    let mut done = vec![false; dsts.len()];
    let mut sent_at = vec![Instant::now(); dsts.len()];
    for _ in 0..attempts.max(1) {
        for (i, dst) in dsts.iter().enumerate().filter(|(i, _)| !done[*i]) {
            sent_at[i] = Instant::now();
            if let Some(o) = send(i, *dst)? {
                out[i] = o;
            }
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && done.iter().any(|d| !d) {
            let matcher = |classify: &dyn Fn(A, u16, Instant) -> Option<PingOutcome>| {
                dsts.iter().enumerate().filter(|(i, _)| !done[*i]).find_map(|(i, dst)| classify(*dst, i as u16, sent_at[i]).map(|o| (i, o)))
            };
            if let Some((i, o)) = recv(&matcher)? {
                done[i] = o.is_reply();
                out[i] = o;
            }
        }
        if done.iter().all(|d| *d) {
            break;
        }
    }
    Ok(out)
}

/// One datagram from a socket with a receive timeout: its length, or `None` when the
/// timeout passed (or a signal came) first.
fn recv_some(fd: std::os::fd::RawFd, buf: &mut [u8]) -> Result<Option<usize>, (&'static str, std::io::Error)> {
    // SAFETY: `buf` is valid for writes of its length for the duration of the call
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
        _ => Err(("recv", e)),
    }
}

/// An ICMP echo request (header and `payload` bytes counting up), checksummed.
fn echo_request(ident: u16, seq: u16, payload: usize) -> Vec<u8> {
    let mut buf = vec![0u8; 8 + payload];
    let mut req = MutableEchoRequestPacket::new(&mut buf).expect("buffer holds an echo header");
    req.set_icmp_type(IcmpTypes::EchoRequest);
    req.set_identifier(ident);
    req.set_sequence_number(seq);
    for (i, b) in req.payload_mut().iter_mut().enumerate() {
        *b = i as u8;
    }
    let sum = pnet_packet::icmp::checksum(&IcmpPacket::new(req.packet()).expect("echo is an icmp packet"));
    req.set_checksum(sum);
    buf
}

/// What `sendto(2)` returning `n` means for a probe, either family: sent (`None`), refused
/// as larger than the interface allows, or declined by the local stack (no route, a
/// prohibit/blackhole route, an output firewall, a neighbour that never answered: what the
/// probe is for). Any other error is the lab's. Call right after the send (reads errno).
pub(super) fn sent_or_declined(n: isize) -> Result<Option<PingOutcome>, (&'static str, std::io::Error)> {
    if n >= 0 {
        return Ok(None);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EMSGSIZE) => Ok(Some(PingOutcome::Refused)),
        errno if declined_to_send(errno) => Ok(Some(PingOutcome::NotSent { errno: errno.unwrap_or(0) })),
        _ => Err(("sendto", e)),
    }
}

/// The errnos with which the local stack declines to send to a destination: a finding
/// about the host's routing (no route, `prohibit`/`blackhole`/`unreachable` routes, an
/// output firewall, a neighbour that never answered), not a failure of the probe.
fn declined_to_send(errno: Option<i32>) -> bool {
    matches!(errno, Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EACCES | libc::EPERM | libc::EINVAL | libc::EAGAIN | libc::ENOBUFS))
}

/// `sendto(2)` of `buf` to `dst` on a raw socket; the raw return value.
///
/// # Safety
/// `fd` must be an open socket.
unsafe fn send_to(fd: i32, buf: &[u8], dst: Ipv4Addr) -> isize {
    let to = sockaddr(dst);
    libc::sendto(
        fd,
        buf.as_ptr() as *const libc::c_void,
        buf.len(),
        0,
        &to as *const _ as *const libc::sockaddr,
        std::mem::size_of::<libc::sockaddr_in>() as u32,
    )
}

fn sockaddr(a: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(a).to_be() },
        sin_zero: [0; 8],
    }
}

/// Datagrams a listener received: sender and payload.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(Ipv4Addr, Vec<u8>)>>>;

/// A UDP listener inside a namespace, collecting `(sender, payload)` until stopped: the
/// canary's end of the udp backend.
pub struct UdpListener {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    seen: Received,
    thread: Option<std::thread::JoinHandle<Result<Result<()>, Error>>>,
}

impl UdpListener {
    /// Binds `0.0.0.0:port` in `ns`; returns once the socket is bound.
    pub fn start(ns: &Netns, port: u16) -> Result<UdpListener> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let seen: Received = Default::default();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (ns2, stop2, seen2) = (ns.clone(), stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            ns2.run(move || -> Result<()> {
                let sock = match std::net::UdpSocket::bind(("0.0.0.0", port)) {
                    Ok(s) => s,
                    Err(e) => {
                        let msg = format!("bind udp port {port}: {e}");
                        let _ = ready_tx.send(Err(msg.clone()));
                        return Err(Error::Lab(msg));
                    }
                };
                let _ = sock.set_read_timeout(Some(Duration::from_millis(20)));
                let _ = ready_tx.send(Ok(()));
                let mut buf = vec![0u8; 65536];
                while !stop2.load(Ordering::Relaxed) {
                    if let Ok((n, std::net::SocketAddr::V4(from))) = sock.recv_from(&mut buf) {
                        seen2.lock().expect("listener buffer").push((*from.ip(), buf[..n].to_vec()));
                    }
                }
                Ok(())
            })
        });
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(UdpListener { stop, seen, thread: Some(thread) }),
            Ok(Err(e)) => Err(Error::Lab(e)),
            Err(_) => Err(lab_err!("udp listener on port {port} did not start within 5 s")),
        }
    }

    /// What arrived so far.
    pub fn seen(&self) -> Vec<(Ipv4Addr, Vec<u8>)> {
        self.seen.lock().expect("listener buffer").clone()
    }
}

impl Drop for UdpListener {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `count` tagged UDP datagrams, 50 ms apart, from `from` to a listener bound in
/// `to` on a random port at `dst`, and returns the source address of each that arrived
/// (waiting until all did or `within` ran out) and the port used.
pub fn udp_sources(from: &Netns, to: &Netns, dst: Ipv4Addr, count: usize, within: Duration) -> Result<(Vec<Ipv4Addr>, u16)> {
    let port: u16 = 40000 + rand::random::<u16>() % 20000;
    let tag = rand::random::<u64>().to_be_bytes();
    let listener = UdpListener::start(to, port)?;
    let deadline = Instant::now() + within;
    let mut sent = 0;
    loop {
        let arrived: Vec<Ipv4Addr> = listener.seen().into_iter().filter(|(_, p)| p.as_slice() == tag).map(|(a, _)| a).collect();
        if arrived.len() >= count || Instant::now() >= deadline {
            return Ok((arrived, port));
        }
        if sent < count {
            send_udp(from, std::net::SocketAddrV4::new(dst, port), tag.to_vec())?;
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The inner IPv4 source and destination of a udp-backend datagram (a bare IPv4 packet).
pub fn inner_addresses(payload: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let ip = Ipv4Packet::new(payload)?;
    (ip.get_version() == 4).then(|| (ip.get_source(), ip.get_destination()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        let len = (p.len() + payload.len()) as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn classifies_replies_and_errors() {
        let dst = Ipv4Addr::new(10, 244, 2, 2);
        let t = Instant::now();
        let reply = ipv4([10, 244, 2, 2], [10, 244, 1, 2], &[0, 0, 0, 0, 0x12, 0x34, 0, 1]);
        assert!(matches!(classify(&reply, dst, 0x1234, 1, t), Some(PingOutcome::Reply { .. })));
        assert_eq!(classify(&reply, dst, 0x9999, 1, t), None, "someone else's reply");
        let quoted = ipv4([10, 244, 1, 2], [10, 244, 2, 2], &[8, 0, 0, 0, 0x12, 0x34, 0, 1]);
        let mut frag = vec![3, 4, 0, 0, 0, 0, 0x05, 0xaa];
        frag.extend_from_slice(&quoted);
        let pkt = ipv4([10, 244, 1, 1], [10, 244, 1, 2], &frag);
        assert_eq!(
            classify(&pkt, dst, 0x1234, 1, t),
            Some(PingOutcome::FragNeeded { from: Ipv4Addr::new(10, 244, 1, 1).into(), mtu: 1450 })
        );
        let mut unreach = frag.clone();
        unreach[1] = 0;
        let pkt = ipv4([10, 244, 1, 1], [10, 244, 1, 2], &unreach);
        assert!(matches!(classify(&pkt, dst, 0x1234, 1, t), Some(PingOutcome::Unreachable { code: 0, .. })));
    }
}
