//! A packet capture of the lab's underlay for a trial's duration, written as a standard
//! pcap file (Ethernet link type, through `pcap-file`) so any tool can read it. One
//! AF_PACKET socket in the fabric namespace sees every frame entering a bridge port; each
//! frame is recorded once, on ingress, truncated to a snap length, and the file is capped
//! in size. [`Capture::sync`] flushes what was captured so far and says where the file ends,
//! so a step can read back exactly the frames of its own window (`probe::frames`).

use std::cell::RefCell;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

use crate::error::{Error, Result};
use crate::lab::netns::Netns;
use crate::lab_err;

/// Bytes kept of each frame: outer headers, VXLAN or UDP header, inner headers.
pub const SNAPLEN: usize = 256;
pub const MAX_BYTES: u64 = 64 << 20;
/// The snap length the file's header states: larger than any frame (GSO super-packets
/// included), as tcpdump writes it, so readers accept every record's original length.
const HEADER_SNAPLEN: u32 = 262_144;
/// The file's global header, in bytes.
pub const HEADER_LEN: u64 = 24;

/// Sync requests and the answers of the capture thread: (generation, bytes on disk).
#[derive(Default)]
struct Syncs {
    asked: AtomicU64,
    done: Mutex<(u64, u64)>,
    cond: Condvar,
}

/// A running capture; `stop` (or drop) ends it and closes the file.
pub struct Capture {
    stop: Arc<AtomicBool>,
    syncs: Arc<Syncs>,
    thread: Option<JoinHandle<Result<u64>>>,
    pub path: PathBuf,
}

fn header() -> PcapHeader {
    PcapHeader {
        version_major: 2,
        version_minor: 4,
        ts_correction: 0,
        ts_accuracy: 0,
        snaplen: HEADER_SNAPLEN,
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::MicroSecond,
        endianness: Endianness::Little,
    }
}

/// The file, shared between the pcap writer and the flushes `sync` asks for.
#[derive(Clone)]
struct Shared(Rc<RefCell<BufWriter<File>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

impl Capture {
    /// Starts capturing every bridge port of the `fabric` namespace into `path`.
    pub fn start(fabric: &Netns, path: &Path) -> Result<Capture> {
        let stop = Arc::new(AtomicBool::new(false));
        let syncs = Arc::new(Syncs::default());
        let (flag, out, answers) = (stop.clone(), path.to_path_buf(), syncs.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let ns = fabric.clone();
        let thread = std::thread::spawn(move || ns.run(move || capture_loop(&out, &flag, &answers, tx)).map_err(|e| e.to_string())?);
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(Capture { stop, syncs, thread: Some(thread), path: path.to_path_buf() }),
            Ok(Err(e)) => Err(Error::Lab(e)),
            Err(_) => Err("capture thread did not start".into()),
        }
    }

    /// Writes out every frame captured so far and returns the file's length: frames
    /// captured from now on start at that offset.
    pub fn sync(&self) -> Result<u64> {
        let want = self.syncs.asked.fetch_add(1, Ordering::SeqCst) + 1;
        let done = self.syncs.done.lock().map_err(|_| "capture sync lock poisoned".to_string())?;
        let (done, timeout) = self
            .syncs
            .cond
            .wait_timeout_while(done, Duration::from_secs(3), |(gen, _)| *gen < want)
            .map_err(|_| "capture sync lock poisoned".to_string())?;
        if timeout.timed_out() {
            return Err(lab_err!("the underlay capture did not flush within 3s (its thread is stuck or gone)"));
        }
        Ok(done.1)
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

fn capture_loop(path: &Path, stop: &AtomicBool, syncs: &Syncs, ready: std::sync::mpsc::Sender<Result<(), String>>) -> Result<u64> {
    let fail = |e: String| {
        let _ = ready.send(Err(e.clone()));
        Error::Lab(e)
    };
    let owned = crate::lab::sock::open(libc::AF_PACKET, libc::SOCK_RAW, (libc::ETH_P_ALL as u16).to_be() as i32)
        .map_err(|e| fail(format!("open packet socket: {e}")))?;
    let fd = owned.as_raw_fd();
    crate::lab::sock::set_receive_timeout(fd, Duration::from_millis(100)).map_err(|e| fail(format!("receive timeout: {e}")))?;
    let file = File::create(path).map_err(|e| fail(format!("create {}: {e}", path.display())))?;
    let shared = Shared(Rc::new(RefCell::new(BufWriter::new(file))));
    let mut w = PcapWriter::with_header(shared.clone(), header()).map_err(|e| fail(format!("write {}: {e}", path.display())))?;
    let _ = ready.send(Ok(()));
    let bridges = bridge_indexes();
    // only the snap length is copied out of the kernel; MSG_TRUNC still gives the full length
    let mut buf = vec![0u8; SNAPLEN];
    let (mut written, mut frames, mut answered) = (HEADER_LEN, 0u64, 0u64);
    // one frame from the socket into the file; false when none was waiting
    let mut take = |flags: i32, written: &mut u64, frames: &mut u64| -> Result<bool> {
        // SAFETY: zeroed sockaddr filled by recvfrom.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: receiving into our buffer; MSG_TRUNC reports the full length.
        let n = unsafe {
            libc::recvfrom(
                fd,
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_TRUNC | flags,
                &mut from as *mut _ as *mut libc::sockaddr,
                &mut len,
            )
        };
        if n <= 0 {
            return Ok(false);
        }
        if from.sll_pkttype == libc::PACKET_OUTGOING || bridges.contains(&(from.sll_ifindex as u32)) {
            return Ok(true);
        }
        let original = n as usize;
        let captured = original.min(SNAPLEN).min(buf.len());
        if *written + 16 + captured as u64 > MAX_BYTES {
            return Ok(true);
        }
        let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let packet = PcapPacket::new(at, original as u32, &buf[..captured]);
        *written += w.write_packet(&packet).map_err(|e| lab_err!("write {}: {e}", path.display()))? as u64;
        *frames += 1;
        Ok(true)
    };
    while !stop.load(Ordering::Relaxed) {
        let asked = syncs.asked.load(Ordering::SeqCst);
        if asked != answered {
            // what the socket already holds belongs before the mark
            for _ in 0..100_000 {
                if !take(libc::MSG_DONTWAIT, &mut written, &mut frames)? {
                    break;
                }
            }
            shared.clone().flush().map_err(|e| lab_err!("flush {}: {e}", path.display()))?;
            answered = asked;
            if let Ok(mut d) = syncs.done.lock() {
                *d = (asked, written);
            }
            syncs.cond.notify_all();
        }
        take(0, &mut written, &mut frames)?;
    }
    shared.clone().flush().map_err(|e| lab_err!("flush {}: {e}", path.display()))?;
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
    fn the_file_is_a_standard_pcap_that_records_truncated_frames() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.pcap");
        let shared = Shared(Rc::new(RefCell::new(BufWriter::new(File::create(&path).unwrap()))));
        let mut w = PcapWriter::with_header(shared.clone(), header()).unwrap();
        let frame = vec![0xabu8; SNAPLEN];
        let n = w.write_packet(&PcapPacket::new(Duration::from_secs(7), 1514, &frame)).unwrap();
        assert_eq!(n, 16 + SNAPLEN);
        shared.clone().flush().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, HEADER_LEN + n as u64);
        assert_eq!(&bytes[0..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian magic");
        assert_eq!(u32::from_le_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]), 1, "LINKTYPE_ETHERNET");
        let mut r = pcap_file::pcap::PcapReader::new(std::io::Cursor::new(bytes)).unwrap();
        let p = r.next_packet().unwrap().unwrap();
        assert_eq!((p.orig_len, p.data.len(), p.timestamp), (1514, SNAPLEN, Duration::from_secs(7)));
    }
}
