//! Many single-entry neighbour lookups at once: `ip neigh get IP dev DEV` for every
//! address a host should have an entry for, written in batches to one raw netlink socket
//! in the host's namespace and answered from the kernel's hash table. A dump would walk
//! the kernel's one neighbour table, which holds every namespace's entries (a million in a
//! thousand-host vxlan lab), once per host; a thousand lookups one request at a time cost
//! tens of microseconds each in round trips. Batched, a host's lookups take a millisecond.

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use crate::error::Error;
use crate::lab::netns::Netns;
use crate::lab_err;

const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NUD_PERMANENT: u16 = 0x80;
/// Requests written before their answers are read.
const BATCH: usize = 256;

/// One entry found: its address, MAC and whether it is permanent.
pub type Found = (IpAddr, Option<String>, bool);

/// The request for `ip` on `ifindex`, numbered `seq`.
fn request(seq: u32, ifindex: u32, ip: IpAddr) -> Vec<u8> {
    let (family, bytes): (u8, Vec<u8>) = match ip {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    };
    let attr_len = 4 + bytes.len();
    let len = 16 + 12 + attr_len;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&RTM_GETNEIGH.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // ndmsg: family, pad, pad, ifindex, state, flags, type
    m.extend_from_slice(&[family, 0, 0, 0]);
    m.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    m.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    m.extend_from_slice(&NDA_DST.to_ne_bytes());
    m.extend_from_slice(&bytes);
    m
}

/// One answer: (sequence number, the entry's MAC and permanence, None for "no such
/// entry", or another errno).
type Answer = (u32, Result<Option<(Option<String>, bool)>, i32>);

/// The answers in one datagram.
fn answers(buf: &[u8], out: &mut Vec<Answer>) {
    let mut off = 0;
    while buf.len() >= off + 16 {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
        if len < 16 || off + len > buf.len() {
            return;
        }
        let msg = &buf[off..off + len];
        let ty = u16::from_ne_bytes([msg[4], msg[5]]);
        let seq = u32::from_ne_bytes(msg[8..12].try_into().expect("4 bytes"));
        match ty {
            NLMSG_ERROR if len >= 20 => {
                let code = -i32::from_ne_bytes(msg[16..20].try_into().expect("4 bytes"));
                out.push((seq, if code == libc::ENOENT { Ok(None) } else { Err(code) }));
            }
            RTM_NEWNEIGH if len >= 28 => {
                let state = u16::from_ne_bytes([msg[24], msg[25]]);
                let mut mac = None;
                let mut attrs = &msg[28..];
                while attrs.len() >= 4 {
                    let alen = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
                    let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
                    if alen < 4 || alen > attrs.len() {
                        break;
                    }
                    if kind == NDA_LLADDR && alen == 10 {
                        mac = attrs[4..10].try_into().ok().map(|m| crate::lab::nl::format_mac(&m));
                    }
                    attrs = attrs.get((alen + 3) & !3..).unwrap_or(&[]);
                }
                out.push((seq, Ok(Some((mac, state & NUD_PERMANENT != 0)))));
            }
            _ => {}
        }
        off += (len + 3) & !3;
    }
}

/// Looks up each of `ips` on `ifindex` in `ns`; the entries found.
pub fn neighbours_get(ns: &Netns, ifindex: u32, ips: Vec<IpAddr>) -> Result<Vec<Found>, Error> {
    let name = ns.name().to_string();
    ns.run(move || lookups(ifindex, &ips))?.map_err(|e| lab_err!("look up neighbours in netns `{name}`: {e}"))
}

fn lookups(ifindex: u32, ips: &[IpAddr]) -> std::io::Result<Vec<Found>> {
    let fd = crate::lab::sock::open(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)?;
    crate::lab::sock::set_receive_timeout(fd.as_raw_fd(), std::time::Duration::from_secs(5))?;
    let size: libc::c_int = 4 << 20;
    // SAFETY: setsockopt with an int that outlives the call (a larger buffer is a hint).
    unsafe {
        libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &size as *const _ as *const libc::c_void, 4);
    }
    let mut found = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for (chunk_no, chunk) in ips.chunks(BATCH).enumerate() {
        let base = (chunk_no * BATCH) as u32 + 1;
        let out: Vec<u8> = chunk.iter().enumerate().flat_map(|(i, ip)| request(base + i as u32, ifindex, *ip)).collect();
        // SAFETY: sending our buffer to the kernel on our socket.
        if unsafe { libc::send(fd.as_raw_fd(), out.as_ptr() as *const libc::c_void, out.len(), 0) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut got = Vec::new();
        while got.len() < chunk.len() {
            // SAFETY: receiving into our buffer.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            answers(&buf[..n as usize], &mut got);
        }
        for (seq, a) in got {
            let Some(ip) = seq.checked_sub(base).and_then(|i| chunk.get(i as usize)) else { continue };
            match a {
                Ok(Some((mac, permanent))) => found.push((*ip, mac, permanent)),
                Ok(None) => {}
                Err(errno) => return Err(std::io::Error::from_raw_os_error(errno)),
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_are_laid_out_as_rtnetlink_has_them() {
        let r = request(7, 3, "10.244.2.0".parse().unwrap());
        assert_eq!(r.len(), 36);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), RTM_GETNEIGH);
        assert_eq!(r[16], libc::AF_INET as u8);
        assert_eq!(i32::from_ne_bytes(r[20..24].try_into().unwrap()), 3);
        assert_eq!(&r[28..36], &[8, 0, 1, 0, 10, 244, 2, 0]);
        // an answer: RTM_NEWNEIGH with NUD_PERMANENT and a MAC, then "no such entry"
        let mut a = Vec::new();
        a.extend_from_slice(&40u32.to_ne_bytes());
        a.extend_from_slice(&RTM_NEWNEIGH.to_ne_bytes());
        a.extend_from_slice(&[0, 0]);
        a.extend_from_slice(&7u32.to_ne_bytes());
        a.extend_from_slice(&0u32.to_ne_bytes());
        a.extend_from_slice(&[2, 0, 0, 0, 3, 0, 0, 0]);
        a.extend_from_slice(&NUD_PERMANENT.to_ne_bytes());
        a.extend_from_slice(&[0, 0]);
        a.extend_from_slice(&10u16.to_ne_bytes());
        a.extend_from_slice(&NDA_LLADDR.to_ne_bytes());
        a.extend_from_slice(&[0x2e, 0x74, 0x64, 0xfe, 0x4b, 0xdb, 0, 0]);
        a.extend_from_slice(&36u32.to_ne_bytes());
        a.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        a.extend_from_slice(&[0, 0]);
        a.extend_from_slice(&8u32.to_ne_bytes());
        a.extend_from_slice(&0u32.to_ne_bytes());
        a.extend_from_slice(&(-libc::ENOENT).to_ne_bytes());
        a.extend_from_slice(&[0; 16]);
        let mut out = Vec::new();
        answers(&a, &mut out);
        assert_eq!(out, vec![(7, Ok(Some((Some("2e:74:64:fe:4b:db".to_string()), true)))), (8, Ok(None))]);
    }
}
