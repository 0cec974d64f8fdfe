//! A packet capture of the lab's underlay for a trial's duration, written as a standard
//! pcap file (Ethernet link type) so any tool can read it. One AF_PACKET socket in the
//! fabric namespace sees every frame entering a bridge port; each frame is recorded once,
//! on ingress, truncated to a snap length, and the file is capped in size.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::lab::netns::Netns;
use crate::lab_err;

pub const SNAPLEN: usize = 256;
pub const MAX_BYTES: u64 = 64 << 20;

/// A running capture; `stop` (or drop) ends it and closes the file.
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<u64>>>,
    pub path: PathBuf,
}

fn pcap_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    h[16..20].copy_from_slice(&(SNAPLEN as u32).to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    h
}

/// One pcap record header.
fn record_header(captured: usize, original: usize) -> [u8; 16] {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut r = [0u8; 16];
    r[0..4].copy_from_slice(&(now.as_secs() as u32).to_le_bytes());
    r[4..8].copy_from_slice(&now.subsec_micros().to_le_bytes());
    r[8..12].copy_from_slice(&(captured as u32).to_le_bytes());
    r[12..16].copy_from_slice(&(original as u32).to_le_bytes());
    r
}

impl Capture {
    /// Starts capturing every bridge port of the `fabric` namespace into `path`.
    pub fn start(fabric: &Netns, path: &Path) -> Result<Capture> {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, out) = (stop.clone(), path.to_path_buf());
        let (tx, rx) = std::sync::mpsc::channel();
        let ns = fabric.clone();
        let thread = std::thread::spawn(move || ns.run(move || capture_loop(&out, &flag, tx)).map_err(|e| e.to_string())?);
        match rx.recv_timeout(std::time::Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(Capture { stop, thread: Some(thread), path: path.to_path_buf() }),
            Ok(Err(e)) => Err(Error::Lab(e)),
            Err(_) => Err("capture thread did not start".into()),
        }
    }

    /// Stops and returns how many frames were written.
    pub fn stop(&mut self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| "capture thread panicked".to_string())?,
            None => Ok(0),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn capture_loop(path: &Path, stop: &AtomicBool, ready: std::sync::mpsc::Sender<Result<(), String>>) -> Result<u64> {
    let owned = match crate::lab::sock::open(libc::AF_PACKET, libc::SOCK_RAW, (libc::ETH_P_ALL as u16).to_be() as i32) {
        Ok(fd) => fd,
        Err(e) => {
            let e = format!("open packet socket: {e}");
            let _ = ready.send(Err(e.clone()));
            return Err(Error::Lab(e));
        }
    };
    let fd = owned.as_raw_fd();
    crate::lab::sock::set_receive_timeout(fd, std::time::Duration::from_millis(100)).map_err(|e| lab_err!("receive timeout: {e}"))?;
    let file = match File::create(path) {
        Ok(f) => f,
        Err(e) => {
            let e = format!("create {}: {e}", path.display());
            let _ = ready.send(Err(e.clone()));
            return Err(Error::Lab(e));
        }
    };
    let mut w = BufWriter::new(file);
    w.write_all(&pcap_header()).map_err(|e| e.to_string())?;
    let _ = ready.send(Ok(()));
    let bridges = bridge_indexes();
    let mut buf = vec![0u8; 65536];
    let (mut written, mut frames) = (24u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: zeroed sockaddr filled by recvfrom.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: receiving into our buffer; MSG_TRUNC reports the full length.
        let n = unsafe {
            libc::recvfrom(
                fd,
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_TRUNC,
                &mut from as *mut _ as *mut libc::sockaddr,
                &mut len,
            )
        };
        if n <= 0 {
            continue;
        }
        if from.sll_pkttype == libc::PACKET_OUTGOING || bridges.contains(&(from.sll_ifindex as u32)) {
            continue;
        }
        let original = n as usize;
        let captured = original.min(SNAPLEN).min(buf.len());
        if written + 16 + captured as u64 > MAX_BYTES {
            continue;
        }
        w.write_all(&record_header(captured, original)).map_err(|e| e.to_string())?;
        w.write_all(&buf[..captured]).map_err(|e| e.to_string())?;
        written += 16 + captured as u64;
        frames += 1;
    }
    w.flush().map_err(|e| e.to_string())?;
    Ok(frames)
}

/// Interface indexes of the segment bridges (`br-*`) in the calling thread's namespace.
fn bridge_indexes() -> Vec<u32> {
    let mut out = Vec::new();
    // SAFETY: if_nameindex returns a list we free below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut p = list;
        while (*p).if_index != 0 {
            let name = std::ffi::CStr::from_ptr((*p).if_name).to_string_lossy();
            if name.starts_with("br-") {
                out.push((*p).if_index);
            }
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcap_global_header_is_standard() {
        let h = pcap_header();
        assert_eq!(&h[0..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian magic");
        assert_eq!(u16::from_le_bytes([h[4], h[5]]), 2);
        assert_eq!(u32::from_le_bytes([h[20], h[21], h[22], h[23]]), 1);
        let r = record_header(60, 1514);
        assert_eq!(u32::from_le_bytes([r[8], r[9], r[10], r[11]]), 60);
        assert_eq!(u32::from_le_bytes([r[12], r[13], r[14], r[15]]), 1514);
    }
}
