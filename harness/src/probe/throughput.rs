//! TCP throughput between two lab namespaces, measured in-process: a receiver thread in
//! one namespace, a sender thread in the other, a fixed duration. For benchmarks only;
//! no test asserts on these figures.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::lab::netns::Netns;
use crate::lab_err;

const PORT: u16 = 5201;

/// One measurement.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub bytes: u64,
    pub elapsed: Duration,
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
            Ok(Throughput { bytes, elapsed: start.map(|s| s.elapsed()).unwrap_or_default() })
        })
        .map_err(|e| e.to_string())?
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).map_err(|_| "receiver did not start".to_string())?;
    let sent = client
        .run(move || -> Result<u64> {
            let mut conn = TcpStream::connect_timeout(&SocketAddr::from((server_ip, PORT)), Duration::from_secs(5))
                .map_err(|e| lab_err!("connect {server_ip}:{PORT}: {e}"))?;
            let buf = vec![0x5au8; 256 * 1024];
            let deadline = Instant::now() + duration;
            let mut sent = 0u64;
            while Instant::now() < deadline {
                conn.write_all(&buf).map_err(|e| lab_err!("send: {e}"))?;
                sent += buf.len() as u64;
            }
            Ok(sent)
        })
        .map_err(|e| e.to_string())??;
    let got = receiver.join().map_err(|_| "receiver panicked".to_string())??;
    if got.bytes != sent {
        return Err(lab_err!("sent {sent} bytes but {} arrived", got.bytes));
    }
    Ok(got)
}
