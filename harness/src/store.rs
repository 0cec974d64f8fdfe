//! The etcd store. The default provider runs Debian's `etcd` binary as a process in the
//! lab's etcd namespace, with a temporary data directory; readiness is a real request
//! answered within a deadline. The harness reaches it from a runtime whose threads live in
//! that namespace, so lab traffic never leaves the lab.

use std::future::Future;
use std::process::Command;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, GetOptions};

use crate::lab::Lab;
use crate::proc::{Child, ProcError};

pub const ETCD_PORT: u16 = 2379;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("`etcd` not found on PATH: run ci/setup.sh (Debian package etcd-server)")]
    NoBinary,
    #[error(transparent)]
    Proc(#[from] ProcError),
    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),
    #[error("etcd at {endpoint} not ready within {secs} s; log tail:\n{log}")]
    NotReady { endpoint: String, secs: u64, log: String },
    #[error("etcd exited ({status}); log tail:\n{log}")]
    Exited { status: String, log: String },
    #[error("etcd request `{op}` failed")]
    Request {
        op: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd request `{op}` did not finish: {reason}")]
    Aborted { op: String, reason: String },
}

pub fn etcd_binary() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("etcd")).find(|p| p.is_file())
}

/// A running etcd plus a client for it.
pub struct Store {
    child: Option<Child>,
    rt: Option<tokio::runtime::Runtime>,
    client: Option<Client>,
    pub endpoint: String,
    ns: crate::netns::Netns,
    dir: std::path::PathBuf,
}

impl Store {
    /// Starts etcd on the lab's etcd node and waits until it answers.
    pub async fn start_process(lab: &Lab, ready_within: Duration) -> Result<Store, StoreError> {
        let node = lab.etcd_node();
        let endpoint = format!("http://{}:{ETCD_PORT}", node.addr);
        let rt = node.ns.runtime()?;
        let mut store = Store { child: None, rt: Some(rt), client: None, endpoint, ns: node.ns.clone(), dir: node.dir.clone() };
        store.spawn()?;
        store.wait_ready(ready_within).await?;
        Ok(store)
    }

    /// Starts the etcd process on the existing data directory (a fresh one the first time).
    fn spawn(&mut self) -> Result<(), StoreError> {
        let bin = etcd_binary().ok_or(StoreError::NoBinary)?;
        let mut cmd = Command::new(bin);
        cmd.args(["--name", "lab"])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &self.endpoint, "--advertise-client-urls", &self.endpoint])
            .args(["--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-cluster", "lab=http://127.0.0.1:2380", "--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH);
        self.child = Some(Child::spawn("etcd", &self.ns, cmd, &self.dir.join("etcd.log"))?);
        Ok(())
    }

    /// Stops etcd (SIGTERM, then SIGKILL); the data directory stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.stop(Duration::from_secs(3));
        }
    }

    /// Starts etcd again after [`Store::stop`], optionally on an empty data directory (data
    /// loss), and waits until it answers.
    pub async fn restart(&mut self, wipe: bool, ready_within: Duration) -> Result<(), StoreError> {
        self.stop();
        if wipe {
            let _ = std::fs::remove_dir_all(self.dir.join("data"));
        }
        self.spawn()?;
        self.wait_ready(ready_within).await
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let k = key.to_string();
        self.call(&format!("delete {key}"), |mut c| async move { c.delete(k, None).await.map(|_| ()) }).await
    }

    async fn wait_ready(&mut self, within: Duration) -> Result<(), StoreError> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(s) = child.try_status() {
                    return Err(StoreError::Exited { status: Child::describe_status(&s), log: child.log_tail(15) });
                }
            }
            if self.client.is_none() {
                self.client = self.connect().await;
            }
            if self.client.is_some() && self.call("status", |mut c| async move { c.status().await }).await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let log = self.child.as_ref().map(|c| c.log_tail(15)).unwrap_or_default();
                return Err(StoreError::NotReady { endpoint: self.endpoint.clone(), secs: within.as_secs(), log });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs one client request on the store's runtime (inside the lab).
    pub async fn call<T, F, Fut>(&self, op: &str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let rt = self.rt.as_ref().expect("store runtime");
        let client = self.client.clone().ok_or_else(|| StoreError::Aborted { op: op.to_string(), reason: "not connected".into() })?;
        let fut = f(client);
        let timed = async move { tokio::time::timeout(Duration::from_secs(5), fut).await };
        match rt.spawn(timed).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(source))) => Err(StoreError::Request { op: op.to_string(), source }),
            Ok(Err(_)) => Err(StoreError::Aborted { op: op.to_string(), reason: "timed out after 5 s".into() }),
            Err(e) => Err(StoreError::Aborted { op: op.to_string(), reason: e.to_string() }),
        }
    }

    pub async fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<(), StoreError> {
        let (k, v) = (key.to_string(), value.into());
        self.call(&format!("put {key}"), |mut c| async move { c.put(k, v, None).await.map(|_| ()) }).await
    }

    /// Every key/value under `prefix`, sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let p = prefix.to_string();
        let resp =
            self.call(&format!("get {prefix}*"), |mut c| async move { c.get(p, Some(GetOptions::new().with_prefix())).await }).await?;
        Ok(resp.kvs().iter().map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.value().to_vec())).collect())
    }

    /// One connection attempt from inside the lab (etcd-client connects eagerly).
    async fn connect(&self) -> Option<Client> {
        let ep = self.endpoint.clone();
        let rt = self.rt.as_ref()?;
        let opts = ConnectOptions::new().with_connect_timeout(Duration::from_secs(1)).with_timeout(Duration::from_secs(5));
        rt.spawn(async move { Client::connect([ep.as_str()], Some(opts)).await.ok() }).await.ok().flatten()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.stop(Duration::from_secs(3));
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
