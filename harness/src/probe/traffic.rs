//! A background traffic probe: one ICMP echo every `interval` from a pod to a pod, while a
//! fault is in progress; reports how many were sent and lost and the longest stretch
//! without a reply.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::lab::netns::Netns;

/// What the probe saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficReport {
    pub sent: u64,
    pub lost: u64,
    pub longest_gap: Duration,
}

pub struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<TrafficReport>>>,
}

impl Traffic {
    pub fn start(ns: &Netns, dst: Ipv4Addr, interval: Duration) -> Result<Traffic> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let ns = ns.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || ns.run(move || run(dst, interval, &flag, tx)).map_err(|e| e.to_string())?);
        rx.recv_timeout(Duration::from_secs(5)).map_err(|_| "traffic probe did not start".to_string())??;
        Ok(Traffic { stop, thread: Some(thread) })
    }

    /// Stops sending, waits a second for late replies, and reports.
    pub fn stop(&mut self) -> Result<TrafficReport> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().ok_or("traffic probe already stopped")?.join().map_err(|_| "traffic probe panicked".to_string())?
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The gap accounting, separated for testing: `sent` maps sequence → send time, `replied`
/// holds the sequences answered.
pub fn summarize(sent: &BTreeMap<u16, Instant>, replied: &std::collections::BTreeSet<u16>, interval: Duration) -> TrafficReport {
    let mut longest = Duration::ZERO;
    let mut last_ok: Option<Instant> = sent.values().next().map(|t| *t - interval);
    for (seq, at) in sent {
        if replied.contains(seq) {
            if let Some(prev) = last_ok {
                longest = longest.max(at.duration_since(prev).saturating_sub(interval));
            }
            last_ok = Some(*at);
        }
    }
    if let (Some(prev), Some(end)) = (last_ok, sent.values().last()) {
        longest = longest.max(end.duration_since(prev));
    }
    TrafficReport { sent: sent.len() as u64, lost: (sent.len() - replied.len()) as u64, longest_gap: longest }
}

fn run(dst: Ipv4Addr, interval: Duration, stop: &AtomicBool, ready: std::sync::mpsc::Sender<Result<(), String>>) -> Result<TrafficReport> {
    let owned = match crate::lab::sock::open(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_NONBLOCK, libc::IPPROTO_ICMP) {
        Ok(fd) => fd,
        Err(e) => {
            let e = format!("raw socket: {e}");
            let _ = ready.send(Err(e.clone()));
            return Err(Error::Lab(e));
        }
    };
    let fd = owned.as_raw_fd();
    let _ = ready.send(Ok(()));
    let ident: u16 = rand::random();
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(dst).to_be() },
        sin_zero: [0; 8],
    };
    let mut sent: BTreeMap<u16, Instant> = BTreeMap::new();
    let mut replied = std::collections::BTreeSet::new();
    let mut seq: u16 = 0;
    let mut next = Instant::now();
    let mut drain_until: Option<Instant> = None;
    let mut buf = [0u8; 2048];
    loop {
        let now = Instant::now();
        if drain_until.is_none() && stop.load(Ordering::Relaxed) {
            drain_until = Some(now + Duration::from_secs(1));
        }
        if drain_until.is_some_and(|d| now >= d) {
            break;
        }
        if drain_until.is_none() && now >= next && seq < u16::MAX {
            let mut pkt = [0u8; 16];
            pkt[0] = 8;
            pkt[4..6].copy_from_slice(&ident.to_be_bytes());
            pkt[6..8].copy_from_slice(&seq.to_be_bytes());
            let c = pnet_packet::util::checksum(&pkt, 1);
            pkt[2..4].copy_from_slice(&c.to_be_bytes());
            // SAFETY: sending a stack buffer to a stack address.
            unsafe {
                libc::sendto(
                    fd,
                    pkt.as_ptr() as *const libc::c_void,
                    pkt.len(),
                    0,
                    &addr as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            };
            sent.insert(seq, now);
            seq += 1;
            next += interval;
        }
        let wait = next.saturating_duration_since(Instant::now()).min(Duration::from_millis(20));
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: polling one descriptor we own.
        unsafe { libc::poll(&mut pfd, 1, wait.as_millis().max(1) as i32) };
        loop {
            // SAFETY: non-blocking receive into a stack buffer.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
            if n < 28 {
                break;
            }
            let ihl = ((buf[0] & 0x0f) as usize) * 4;
            let icmp = &buf[ihl..n as usize];
            let from = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
            if icmp.len() >= 8 && icmp[0] == 0 && from == dst && u16::from_be_bytes([icmp[4], icmp[5]]) == ident {
                replied.insert(u16::from_be_bytes([icmp[6], icmp[7]]));
            }
        }
    }
    Ok(summarize(&sent, &replied, interval))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_and_losses() {
        let t0 = Instant::now();
        let iv = Duration::from_millis(10);
        let sent: BTreeMap<u16, Instant> = (0..10u16).map(|i| (i, t0 + iv * i as u32)).collect();
        let all: std::collections::BTreeSet<u16> = (0..10).collect();
        assert_eq!(summarize(&sent, &all, iv), TrafficReport { sent: 10, lost: 0, longest_gap: Duration::ZERO });
        let some: std::collections::BTreeSet<u16> = [0, 1, 5, 6, 7, 8, 9].into_iter().collect();
        let r = summarize(&sent, &some, iv);
        assert_eq!((r.sent, r.lost), (10, 3));
        assert_eq!(r.longest_gap, Duration::from_millis(30), "probes 2, 3, 4 unanswered");
        let tail: std::collections::BTreeSet<u16> = [0, 1].into_iter().collect();
        assert_eq!(summarize(&sent, &tail, iv).longest_gap, Duration::from_millis(80));
    }
}
