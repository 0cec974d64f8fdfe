//! A multi-queue TUN device opened through /dev/net/tun, one descriptor per queue.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUN_F_CSUM: libc::c_ulong = 0x01;
const TUN_F_TSO4: libc::c_ulong = 0x02;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens `queues` queues of the TUN device `name` (creating it if needed), every read and
/// write prefixed by a virtio-net header: `ip tuntap add NAME mode tun multi_queue vnet_hdr`.
/// Returns the queues and whether checksum and TSO offloads could be enabled (without them
/// every packet arrives complete and alone).
pub fn open(name: &str, queues: usize) -> std::io::Result<(Vec<File>, bool)> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("interface name `{name}` too long")));
    }
    let mut out = Vec::with_capacity(queues);
    for _ in 0..queues.max(1) {
        let f = OpenOptions::new().read(true).write(true).open("/dev/net/tun")?;
        let mut req = IfReq { name: [0; libc::IFNAMSIZ], flags: IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE | IFF_VNET_HDR, _pad: [0; 22] };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes an ifreq we own.
        if unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        out.push(f);
    }
    // SAFETY: TUNSETOFFLOAD takes the offload bits by value.
    let offload = out.iter().all(|f| unsafe { libc::ioctl(f.as_raw_fd(), TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4) } == 0);
    Ok((out, offload))
}
