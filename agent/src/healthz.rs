//! `--healthz-port`: answers `GET /healthz` with 200 while the agent runs.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub async fn serve(ip: Ipv4Addr, port: u16) -> anyhow::Result<()> {
    let listener = TcpListener::bind(SocketAddr::from((ip, port))).await.with_context(|| format!("bind healthz on {ip}:{port}"))?;
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 512];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let ok = buf[..n].starts_with(b"GET /healthz");
                let reply: &[u8] = if ok {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
                } else {
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                };
                let _ = conn.write_all(reply).await;
            });
        }
    });
    Ok(())
}
