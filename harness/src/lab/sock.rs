//! Raw sockets for probes and captures: opened in the calling thread's namespace, closed
//! when the returned descriptor drops.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

/// `socket(domain, ty | SOCK_CLOEXEC, proto)`.
pub fn open(domain: i32, ty: i32, proto: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: a plain socket call; the descriptor is owned by the returned value.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `SO_RCVTIMEO`: a blocking receive gives up after `t`.
pub fn set_receive_timeout(fd: i32, t: Duration) -> std::io::Result<()> {
    let tv = libc::timeval { tv_sec: t.as_secs() as libc::time_t, tv_usec: t.subsec_micros() as libc::suseconds_t };
    // SAFETY: setsockopt with a timeval that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
