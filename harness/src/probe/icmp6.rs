//! ICMPv6 echo from inside a namespace over a raw socket: the IPv6 twin of [`super::icmp`]'s
//! ping and sweep. The kernel fills in ICMPv6 checksums, and a raw ICMPv6 socket receives
//! the ICMPv6 message without its IPv6 header (the sender comes from `recvfrom`).

use std::net::Ipv6Addr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::icmp::{last_err, sent_or_declined, sweep_rounds, PingOutcome};
use crate::error::Error;
use crate::lab::netns::Netns;

const ECHO_REQUEST: u8 = 128;
const ECHO_REPLY: u8 = 129;
const DEST_UNREACHABLE: u8 = 1;
const PACKET_TOO_BIG: u8 = 2;
const TIME_EXCEEDED: u8 = 3;
const IPV6_DONTFRAG: libc::c_int = 62;

type SockResult<T> = Result<T, (&'static str, std::io::Error)>;

/// Sends one ICMPv6 echo of `payload` bytes from `ns` to `dst` and waits up to `timeout`.
/// With `df` the packet is never fragmented at the source (IPv6 routers never fragment):
/// too large for the interface is refused locally, too large for the path comes back as
/// "packet too big".
pub fn ping6(ns: &Netns, dst: Ipv6Addr, payload: usize, df: bool, timeout: Duration) -> Result<PingOutcome, Error> {
    let name = ns.name().to_string();
    ns.run(move || ping_here(dst, payload, df, timeout))?.map_err(|(op, source)| Error::Socket { ns: name, op, source })
}

/// Opens the raw ICMPv6 socket; with `df`, without source fragmentation and ignoring the
/// path MTU learned from earlier probes (so every probe meets the path afresh).
fn open(df: bool) -> SockResult<std::os::fd::OwnedFd> {
    let owned = crate::lab::sock::open(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6).map_err(|e| ("socket", e))?;
    let fd = owned.as_raw_fd();
    if df {
        set_int(fd, libc::IPV6_MTU_DISCOVER, libc::IPV6_PMTUDISC_PROBE).map_err(|_| last_err("setsockopt IPV6_MTU_DISCOVER"))?;
        set_int(fd, IPV6_DONTFRAG, 1).map_err(|_| last_err("setsockopt IPV6_DONTFRAG"))?;
    }
    crate::lab::sock::set_receive_timeout(fd, Duration::from_millis(20)).map_err(|e| ("setsockopt SO_RCVTIMEO", e))?;
    Ok(owned)
}

fn set_int(fd: i32, opt: libc::c_int, v: libc::c_int) -> Result<(), ()> {
    // SAFETY: setsockopt with an int that outlives the call
    let rc = unsafe { libc::setsockopt(fd, libc::IPPROTO_IPV6, opt, &v as *const _ as *const libc::c_void, 4) };
    if rc == 0 {
        Ok(())
    } else {
        Err(())
    }
}

fn ping_here(dst: Ipv6Addr, payload: usize, df: bool, timeout: Duration) -> SockResult<PingOutcome> {
    let owned = open(df)?;
    let fd = owned.as_raw_fd();
    let ident: u16 = rand::random();
    let sent_at = Instant::now();
    if let Some(o) = send(fd, &echo_request(ident, 1, payload), dst)? {
        return Ok(o);
    }
    let mut rbuf = vec![0u8; 65536];
    while sent_at.elapsed() < timeout {
        let Some((n, from)) = recv_from(fd, &mut rbuf)? else { continue };
        if let Some(out) = classify(&rbuf[..n], from, dst, ident, 1, sent_at) {
            return Ok(out);
        }
    }
    Ok(PingOutcome::Timeout)
}

/// [`super::sweep`] for IPv6: one echo to each of `dsts` from `src`, up to `attempts`
/// rounds for the silent ones; one outcome per destination, in order.
pub fn sweep6(ns: &Netns, src: Ipv6Addr, dsts: Vec<Ipv6Addr>, attempts: u32, timeout: Duration) -> Result<Vec<PingOutcome>, Error> {
    let name = ns.name().to_string();
    ns.run(move || sweep_here(src, &dsts, attempts, timeout))?.map_err(|(op, source)| Error::Socket { ns: name, op, source })
}

fn sweep_here(src: Ipv6Addr, dsts: &[Ipv6Addr], attempts: u32, timeout: Duration) -> SockResult<Vec<PingOutcome>> {
    if dsts.is_empty() {
        return Ok(Vec::new());
    }
    let owned = open(false)?;
    let fd = owned.as_raw_fd();
    let local = sockaddr(src);
    // SAFETY: bind with a sockaddr_in6 that outlives the call
    if unsafe { libc::bind(fd, &local as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_in6>() as u32) } != 0 {
        return Err(last_err("bind"));
    }
    let ident: u16 = rand::random();
    let mut rbuf = vec![0u8; 65536];
    sweep_rounds(
        dsts,
        attempts,
        timeout,
        |i, dst| send(fd, &echo_request(ident, i as u16, 56), dst),
        |matches| {
            let Some((n, from)) = recv_from(fd, &mut rbuf)? else { return Ok(None) };
            let msg = &rbuf[..n];
            Ok(matches(&|dst, seq, sent_at| classify(msg, from, dst, ident, seq, sent_at)))
        },
    )
}

/// Sends; `Some(outcome)` when the local stack declined (too big, no route, …).
fn send(fd: i32, buf: &[u8], dst: Ipv6Addr) -> SockResult<Option<PingOutcome>> {
    let to = sockaddr(dst);
    // SAFETY: sendto with a buffer and sockaddr_in6 that outlive the call
    let n = unsafe {
        libc::sendto(
            fd,
            buf.as_ptr() as *const libc::c_void,
            buf.len(),
            0,
            &to as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in6>() as u32,
        )
    };
    sent_or_declined(n)
}

/// One ICMPv6 message and its sender, or `None` when the receive timeout passed.
fn recv_from(fd: i32, buf: &mut [u8]) -> SockResult<Option<(usize, Ipv6Addr)>> {
    let mut from: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    // SAFETY: `buf` and `from` are valid for writes of their lengths during the call
    let n = unsafe {
        libc::recvfrom(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0, &mut from as *mut _ as *mut libc::sockaddr, &mut len)
    };
    if n >= 0 {
        return Ok(Some((n as usize, Ipv6Addr::from(from.sin6_addr.s6_addr))));
    }
    // the receive timeout passed, or a signal came
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
        _ => Err(("recvfrom", e)),
    }
}

/// Matches an ICMPv6 message from `from` against our probe to `dst`.
fn classify(msg: &[u8], from: Ipv6Addr, dst: Ipv6Addr, ident: u16, seq: u16, sent_at: Instant) -> Option<PingOutcome> {
    if msg.len() < 8 {
        return None;
    }
    let id_seq = |b: &[u8]| (u16::from_be_bytes([b[4], b[5]]), u16::from_be_bytes([b[6], b[7]]));
    match msg[0] {
        ECHO_REPLY if from == dst && id_seq(msg) == (ident, seq) => Some(PingOutcome::Reply { rtt: sent_at.elapsed() }),
        DEST_UNREACHABLE | PACKET_TOO_BIG | TIME_EXCEEDED => {
            // the error quotes our IPv6 header (40 bytes) and the start of our echo
            let quoted = msg.get(8..)?;
            let inner_dst = Ipv6Addr::from(<[u8; 16]>::try_from(quoted.get(24..40)?).ok()?);
            let echo = quoted.get(40..48)?;
            if inner_dst != dst || echo[0] != ECHO_REQUEST || id_seq(echo) != (ident, seq) {
                return None;
            }
            if msg[0] == PACKET_TOO_BIG {
                let mtu = u32::from_be_bytes([msg[4], msg[5], msg[6], msg[7]]);
                Some(PingOutcome::FragNeeded { from: from.into(), mtu: mtu.min(u32::from(u16::MAX)) as u16 })
            } else {
                Some(PingOutcome::Unreachable { from: from.into(), icmp_type: msg[0], code: msg[1] })
            }
        }
        _ => None,
    }
}

/// An ICMPv6 echo request; the kernel computes the checksum.
fn echo_request(ident: u16, seq: u16, payload: usize) -> Vec<u8> {
    let mut buf = vec![0u8; 8 + payload];
    buf[0] = ECHO_REQUEST;
    buf[4..6].copy_from_slice(&ident.to_be_bytes());
    buf[6..8].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in buf[8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    buf
}

fn sockaddr(a: Ipv6Addr) -> libc::sockaddr_in6 {
    libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as u16,
        sin6_port: 0,
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr { s6_addr: a.octets() },
        sin6_scope_id: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_replies_and_too_big_errors() {
        let dst: Ipv6Addr = "fd00:10:244:2::1".parse().unwrap();
        let gw: Ipv6Addr = "fd00:10:244:1::1".parse().unwrap();
        let t = Instant::now();
        let mut reply = echo_request(7, 3, 4);
        reply[0] = ECHO_REPLY;
        assert!(classify(&reply, dst, dst, 7, 3, t).is_some_and(|o| o.is_reply()));
        assert_eq!(classify(&reply, gw, dst, 7, 3, t), None, "a reply from elsewhere is not ours");
        // packet too big from the gateway, quoting our header and echo
        let mut ptb = vec![PACKET_TOO_BIG, 0, 0, 0, 0, 0, 0x05, 0x96];
        let mut hdr = vec![0u8; 40];
        hdr[24..40].copy_from_slice(&dst.octets());
        ptb.extend(hdr);
        ptb.extend(echo_request(7, 3, 0));
        assert_eq!(classify(&ptb, gw, dst, 7, 3, t), Some(PingOutcome::FragNeeded { from: gw.into(), mtu: 1430 }));
        assert_eq!(classify(&ptb, gw, dst, 7, 4, t), None, "another probe's error");
    }
}
