//! TCP throughput and small-packet rates between two lab namespaces, measured in-process:
//! a receiver thread in one namespace, a sender thread in the other, a fixed duration.
//! For benchmarks only; no test asserts on these figures.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::lab::netns::Netns;
use crate::lab_err;

const PORT: u16 = 5201;
const PPS_PORT: u16 = 5202;
/// UDP payload of the small-packet measurement (a 92-byte IPv4 packet with the headers).
pub const SMALL_PAYLOAD: usize = 64;

/// One measurement.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub bytes: u64,
    pub elapsed: Duration,
    /// TCP segments the sender retransmitted (its namespace's counter, which nothing
    /// else uses during the measurement).
    pub retransmits: u64,
}

impl Throughput {
    pub fn gbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e9
    }
}

/// Sends for `duration` from `client` to `server_ip` (which lives in `server`), and
/// returns what the receiver counted between its first byte and end of stream.
pub fn measure(server: &Netns, server_ip: Ipv4Addr, client: &Netns, duration: Duration) -> Result<Throughput> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let srv = server.clone();
    let receiver = std::thread::spawn(move || {
        srv.run(move || -> Result<Throughput> {
            crate::lab::proc::at_default_priority();
            let listener = TcpListener::bind(SocketAddr::from((server_ip, PORT))).map_err(|e| lab_err!("bind {server_ip}:{PORT}: {e}"))?;
            let _ = ready_tx.send(());
            let (mut conn, _) = listener.accept().map_err(|e| lab_err!("accept: {e}"))?;
            conn.set_read_timeout(Some(duration + Duration::from_secs(10))).map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; 256 * 1024];
            let mut bytes = 0u64;
            let mut start = None;
            loop {
                match conn.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        start.get_or_insert_with(Instant::now);
                        bytes += n as u64;
                    }
                    Err(e) => return Err(lab_err!("receive: {e}")),
                }
            }
            Ok(Throughput { bytes, elapsed: start.map(|s| s.elapsed()).unwrap_or_default(), retransmits: 0 })
        })
        .map_err(|e| e.to_string())?
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).map_err(|_| "receiver did not start".to_string())?;
    let (sent, retransmits) = client
        .run(move || -> Result<(u64, u64)> {
            crate::lab::proc::at_default_priority();
            let before = retransmitted_segments()?;
            let mut conn = TcpStream::connect_timeout(&SocketAddr::from((server_ip, PORT)), Duration::from_secs(5))
                .map_err(|e| lab_err!("connect {server_ip}:{PORT}: {e}"))?;
            let buf = vec![0x5au8; 256 * 1024];
            let deadline = Instant::now() + duration;
            let mut sent = 0u64;
            while Instant::now() < deadline {
                conn.write_all(&buf).map_err(|e| lab_err!("send: {e}"))?;
                sent += buf.len() as u64;
            }
            drop(conn);
            Ok((sent, retransmitted_segments()?.saturating_sub(before)))
        })
        .map_err(|e| e.to_string())??;
    let got = receiver.join().map_err(|_| "receiver panicked".to_string())??;
    if got.bytes != sent {
        return Err(lab_err!("sent {sent} bytes but {} arrived", got.bytes));
    }
    Ok(Throughput { retransmits, ..got })
}

/// The calling thread's network namespace's count of retransmitted TCP segments.
fn retransmitted_segments() -> Result<u64> {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").map_err(|e| lab_err!("read /proc/thread-self/net/snmp: {e}"))?;
    snmp_field(&snmp, "Tcp", "RetransSegs").ok_or_else(|| lab_err!("no Tcp RetransSegs in /proc/thread-self/net/snmp"))
}

/// A counter from /proc/net/snmp's layout: per protocol, a line of names then a line of values.
fn snmp_field(snmp: &str, proto: &str, name: &str) -> Option<u64> {
    let prefix = format!("{proto}:");
    let mut lines = snmp.lines().filter(|l| l.starts_with(&prefix));
    let (names, values) = (lines.next()?, lines.next()?);
    let i = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// Small datagrams sent as fast as one thread can and counted where they arrive.
#[derive(Debug, Clone, Copy)]
pub struct PacketRate {
    pub sent: u64,
    pub received: u64,
    pub elapsed: Duration,
}

impl PacketRate {
    /// Datagrams delivered per second (thousands).
    pub fn kpps(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e3
    }
}

/// Sends [`SMALL_PAYLOAD`]-byte UDP datagrams for `duration` from `client` to `server_ip`
/// (in `server`), 64 per `sendmmsg`, and counts what the receiver got: the delivered rate
/// is what a path carries of small packets (the rest is dropped on the way, by design of
/// the measurement).
pub fn measure_pps(server: &Netns, server_ip: Ipv4Addr, client: &Netns, duration: Duration) -> Result<PacketRate> {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let srv = server.clone();
    let receiver = std::thread::spawn(move || {
        srv.run(move || -> Result<u64> {
            crate::lab::proc::at_default_priority();
            let sock =
                UdpSocket::bind(SocketAddr::from((server_ip, PPS_PORT))).map_err(|e| lab_err!("bind {server_ip}:{PPS_PORT}: {e}"))?;
            sock.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
            let _ = ready_tx.send(());
            let mut buf = [0u8; 2048];
            let mut got = 0u64;
            // until the sender is done (or gone, having failed) and nothing arrived for 200 ms
            loop {
                match sock.recv(&mut buf) {
                    Ok(_) => got += 1,
                    Err(_) if !matches!(done_rx.try_recv(), Err(mpsc::TryRecvError::Empty)) => return Ok(got),
                    Err(_) => {}
                }
            }
        })
        .map_err(|e| e.to_string())?
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).map_err(|_| "receiver did not start".to_string())?;
    let sent = client
        .run(move || -> Result<u64> {
            crate::lab::proc::at_default_priority();
            let sock = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))).map_err(|e| lab_err!("bind: {e}"))?;
            sock.connect(SocketAddr::from((server_ip, PPS_PORT))).map_err(|e| lab_err!("connect {server_ip}:{PPS_PORT}: {e}"))?;
            let payload = [0x5au8; SMALL_PAYLOAD];
            const BATCH: usize = 64;
            let mut iov: Vec<libc::iovec> =
                (0..BATCH).map(|_| libc::iovec { iov_base: payload.as_ptr() as *mut libc::c_void, iov_len: payload.len() }).collect();
            // SAFETY: zeroed mmsghdrs pointing at our iovecs, which outlive every call.
            let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
            for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
            }
            let deadline = Instant::now() + duration;
            let mut sent = 0u64;
            while Instant::now() < deadline {
                // SAFETY: sendmmsg on our connected socket with BATCH valid headers.
                let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
                if n > 0 {
                    sent += n as u64;
                }
            }
            Ok(sent)
        })
        .map_err(|e| e.to_string())??;
    let _ = done_tx.send(());
    let received = receiver.join().map_err(|_| "receiver panicked".to_string())??;
    if received == 0 {
        return Err(lab_err!("none of {sent} small datagrams arrived"));
    }
    Ok(PacketRate { sent, received, elapsed: duration })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snmp_counters_are_read_by_name() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\nTcp: RtoAlgorithm ActiveOpens RetransSegs InErrs\nTcp: 1 7 42 0\nUdp: InDatagrams\nUdp: 5\n";
        assert_eq!(snmp_field(snmp, "Tcp", "RetransSegs"), Some(42));
        assert_eq!(snmp_field(snmp, "Udp", "InDatagrams"), Some(5));
        assert_eq!(snmp_field(snmp, "Tcp", "Nope"), None);
        assert_eq!(snmp_field(snmp, "Icmp", "InMsgs"), None);
    }
}
