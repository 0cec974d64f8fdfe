//! nftables over netlink for the requests the agent makes often or at every start: set
//! elements added and deleted (the vxlan source filter's peers follow every lease change),
//! a table deleted, whether a chain exists. Each call is one transaction (a batch); the
//! kernel acknowledges every request in it, and an error in any aborts all of them.
//! Creating the filter's table stays with the `nft` binary, once per run. Before this, every
//! peer change ran `nft`: at a thousand hosts, hundreds of thousands of process starts.
//!
//! Message layout (linux/netfilter/nfnetlink.h, nf_tables.h): `nlmsghdr`, a 4-byte
//! `nfgenmsg` (family, version 0, resource id), then attributes.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
/// Elements per request: a message stays well below a page-sized limit at any size.
const CHUNK: usize = 128;

/// An nftables table family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Ip,
    Ip6,
}

impl Family {
    fn proto(self) -> u8 {
        match self {
            Family::Ip => 2,   // NFPROTO_IPV4
            Family::Ip6 => 10, // NFPROTO_IPV6
        }
    }
}

/// A netlink socket to nftables, bound to a port of its own (notifications of changes made
/// through it carry that port).
pub struct Nft {
    fd: OwnedFd,
    portid: u32,
    seq: u32,
}

fn attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn name(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// One message: header, `nfgenmsg`, attributes.
fn message(ty: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(20 + attrs.len());
    m.extend_from_slice(&((20 + attrs.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[family, 0]);
    m.extend_from_slice(&res_id.to_be_bytes());
    m.extend_from_slice(attrs);
    m
}

/// `NFTA_SET_ELEM_LIST_*` of a set element request: table, set, elements (each a key).
fn elements_attrs(table: &str, set: &str, addrs: &[IpAddr]) -> Vec<u8> {
    let mut list = Vec::new();
    for a in addrs {
        let bytes = match a {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        let mut data = Vec::new();
        attr(&mut data, 1, &bytes); // NFTA_DATA_VALUE
        let mut key = Vec::new();
        attr(&mut key, 1 | NLA_F_NESTED, &data); // NFTA_SET_ELEM_KEY
        attr(&mut list, 1 | NLA_F_NESTED, &key); // NFTA_LIST_ELEM
    }
    let mut out = Vec::new();
    attr(&mut out, 1, &name(table)); // NFTA_SET_ELEM_LIST_TABLE
    attr(&mut out, 2, &name(set)); // NFTA_SET_ELEM_LIST_SET
    attr(&mut out, 3 | NLA_F_NESTED, &list); // NFTA_SET_ELEM_LIST_ELEMENTS
    out
}

/// Each acknowledgement in a datagram: (sequence number, errno; 0 for success).
fn acks(buf: &[u8]) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    for (ty, _, msg) in crate::notify::messages(buf) {
        let seq = u32::from_ne_bytes(msg[8..12].try_into().expect("4 bytes"));
        if ty == NLMSG_ERROR && msg.len() >= 20 {
            let code = i32::from_ne_bytes(msg[16..20].try_into().expect("4 bytes"));
            out.push((seq, -code));
        } else if ty >> 8 == NFNL_SUBSYS_NFTABLES {
            // an object sent back for a GET: the request succeeded
            out.push((seq, -1));
        }
    }
    out
}

impl Nft {
    pub fn open() -> io::Result<Nft> {
        // SAFETY: a new socket; the fd is owned below.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a socket we just opened.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl zeroed (port 0: the kernel picks one), then read back.
        let portid = unsafe {
            let mut sa: libc::sockaddr_nl = std::mem::zeroed();
            sa.nl_family = libc::AF_NETLINK as u16;
            let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            if libc::bind(raw, &sa as *const _ as *const libc::sockaddr, len) != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut got: libc::sockaddr_nl = std::mem::zeroed();
            let mut glen = len;
            if libc::getsockname(raw, &mut got as *mut _ as *mut libc::sockaddr, &mut glen) != 0 {
                return Err(io::Error::last_os_error());
            }
            let tv = libc::timeval { tv_sec: 2, tv_usec: 0 };
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            );
            got.nl_pid
        };
        Ok(Nft { fd, portid, seq: 1 })
    }

    /// The port notifications of this socket's changes carry.
    pub fn portid(&self) -> u32 {
        self.portid
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `requests` (type, flags, family, attributes) as one transaction and waits for
    /// an answer to each: Ok with each one's errno (0: done; -1: an object came back).
    fn transact(&mut self, requests: &[(u16, u16, u8, Vec<u8>)], batch: bool) -> io::Result<Vec<i32>> {
        let mut buf = Vec::new();
        if batch {
            let s = self.next_seq();
            buf.extend(message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, s, 0, NFNL_SUBSYS_NFTABLES, &[]));
        }
        let mut seqs = Vec::new();
        for (ty, flags, family, attrs) in requests {
            let s = self.next_seq();
            seqs.push(s);
            buf.extend(message(NFNL_SUBSYS_NFTABLES << 8 | ty, NLM_F_REQUEST | NLM_F_ACK | flags, s, *family, 0, attrs));
        }
        if batch {
            let s = self.next_seq();
            buf.extend(message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, s, 0, NFNL_SUBSYS_NFTABLES, &[]));
        }
        // SAFETY: sending our buffer on our socket (the kernel is the default destination).
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), buf.as_ptr() as *const libc::c_void, buf.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut answers: Vec<Option<i32>> = vec![None; seqs.len()];
        let mut rbuf = vec![0u8; 64 * 1024];
        while answers.iter().any(Option::is_none) {
            // SAFETY: receiving into our buffer (with the 2 s timeout set at open).
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), rbuf.as_mut_ptr() as *mut libc::c_void, rbuf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            for (seq, errno) in acks(&rbuf[..n as usize]) {
                if let Some(i) = seqs.iter().position(|s| *s == seq) {
                    // an object and then its ack: keep what the object said
                    answers[i] = Some(answers[i].map_or(errno, |prev| if prev == -1 { -1 } else { errno }));
                }
            }
        }
        Ok(answers.into_iter().map(|a| a.unwrap_or(0)).collect())
    }

    /// Adds `add` to and deletes `del` from set `set` of table `table`, all or nothing.
    pub fn set_elements(&mut self, family: Family, table: &str, set: &str, add: &[IpAddr], del: &[IpAddr]) -> io::Result<()> {
        let mut reqs = Vec::new();
        for chunk in add.chunks(CHUNK) {
            reqs.push((NFT_MSG_NEWSETELEM, NLM_F_CREATE, family.proto(), elements_attrs(table, set, chunk)));
        }
        for chunk in del.chunks(CHUNK) {
            reqs.push((NFT_MSG_DELSETELEM, 0, family.proto(), elements_attrs(table, set, chunk)));
        }
        if reqs.is_empty() {
            return Ok(());
        }
        match self.transact(&reqs, true)?.into_iter().find(|e| *e > 0) {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => Ok(()),
        }
    }

    /// Deletes a table; false when there was none.
    pub fn delete_table(&mut self, family: Family, table: &str) -> io::Result<bool> {
        let mut attrs = Vec::new();
        attr(&mut attrs, 1, &name(table)); // NFTA_TABLE_NAME
        match self.transact(&[(NFT_MSG_DELTABLE, 0, family.proto(), attrs)], true)?[0] {
            0 => Ok(true),
            libc::ENOENT => Ok(false),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }

    /// Whether chain `chain` exists in table `table` (iptables-nft keeps iptables chains as
    /// nftables chains of tables `filter` and `nat`).
    pub fn chain_exists(&mut self, family: Family, table: &str, chain: &str) -> io::Result<bool> {
        let mut attrs = Vec::new();
        attr(&mut attrs, 1, &name(table)); // NFTA_CHAIN_TABLE
        attr(&mut attrs, 3, &name(chain)); // NFTA_CHAIN_NAME
        match self.transact(&[(NFT_MSG_GETCHAIN, 0, family.proto(), attrs)], false)?[0] {
            -1 => Ok(true),
            0 | libc::ENOENT => Ok(false),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_element_requests_are_laid_out_as_nftables_reads_them() {
        let a = elements_attrs("t", "peers", &["192.168.99.2".parse().unwrap()]);
        // table "t\0" padded to 4, set "peers\0" padded to 8, then the nested list
        assert_eq!(&a[0..8], &[6, 0, 1, 0, b't', 0, 0, 0]);
        assert_eq!(&a[8..20], &[10, 0, 2, 0, b'p', b'e', b'e', b'r', b's', 0, 0, 0]);
        // ELEMENTS(nested) > LIST_ELEM(nested) > KEY(nested) > DATA_VALUE: 4 address bytes
        assert_eq!(&a[20..24], &[20, 0, 3, 0x80]);
        assert_eq!(&a[24..28], &[16, 0, 1, 0x80]);
        assert_eq!(&a[28..32], &[12, 0, 1, 0x80]);
        assert_eq!(&a[32..40], &[8, 0, 1, 0, 192, 168, 99, 2]);
        let m = message(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE, 7, 2, 0, &a);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize, m.len());
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x0a0c);
        assert_eq!(&m[16..20], &[2, 0, 0, 0], "nfgenmsg: NFPROTO_IPV4, version 0, resource 0");
        let begin = message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 1, 0, NFNL_SUBSYS_NFTABLES, &[]);
        assert_eq!(&begin[16..20], &[0, 0, 0, 10], "the batch names the nftables subsystem, big-endian");
    }

    #[test]
    fn acknowledgements_are_read_per_request() {
        let ack = |seq: u32, err: i32| {
            let mut m = Vec::new();
            m.extend_from_slice(&36u32.to_ne_bytes());
            m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            m.extend_from_slice(&[0, 0]);
            m.extend_from_slice(&seq.to_ne_bytes());
            m.extend_from_slice(&0u32.to_ne_bytes());
            m.extend_from_slice(&err.to_ne_bytes());
            m.extend_from_slice(&[0; 16]);
            m
        };
        let mut buf = ack(5, 0);
        buf.extend(ack(6, -libc::ENOENT));
        assert_eq!(acks(&buf), vec![(5, 0), (6, libc::ENOENT)]);
    }
}
