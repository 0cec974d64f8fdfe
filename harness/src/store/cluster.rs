//! The etcd store, from one of two providers: Debian's `etcd` binary as a process in the
//! lab's etcd namespace (the default), or etcd in a Docker container started through
//! testcontainers and attached to the underlay ([`crate::store::container`]). Readiness is a real
//! request answered within a deadline. The harness reaches etcd from a runtime whose
//! threads live in etcd's network namespace, so lab traffic never leaves the lab.

use std::future::Future;
use std::process::Command;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, GetOptions};

use crate::error::Error;
use crate::lab::proc::Child;
use crate::lab::Lab;
use crate::store::tls::Pki;

pub const ETCD_PORT: u16 = 2379;

/// Where etcd runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Process,
    Docker,
}

enum Backing {
    Process(Option<Child>),
    Docker(Vec<Member>),
}

/// One etcd container and where it sits on the underlay.
struct Member {
    container: crate::store::container::EtcdContainer,
    /// `etcd`, `etcd2`, … (its bridge port is `p-NAME`)
    name: String,
    addr: std::net::Ipv4Addr,
}

impl Member {
    fn mac_tag(index: usize) -> u8 {
        0xe7u8.wrapping_add(index as u8)
    }
}

pub fn etcd_binary() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("etcd")).find(|p| p.is_file())
}

/// A running etcd plus a client for it.
pub struct Store {
    backing: Backing,
    pub provider: Provider,
    rt: Option<tokio::runtime::Runtime>,
    client: Option<Client>,
    pub endpoint: String,
    ns: crate::lab::netns::Netns,
    dir: std::path::PathBuf,
    /// The run's certificates when etcd speaks TLS and asks clients for certificates.
    pub pki: Option<Pki>,
}

/// `http` or `https`.
fn scheme(tls: bool) -> &'static str {
    if tls {
        "https"
    } else {
        "http"
    }
}

impl Store {
    /// Starts etcd with `provider` (over TLS with client certificates when `tls`) and waits
    /// until it answers.
    pub async fn start(lab: &Lab, provider: Provider, members: usize, tls: bool, ready_within: Duration) -> Result<Store, Error> {
        match provider {
            Provider::Process => Store::start_process(lab, tls, ready_within).await,
            Provider::Docker => Store::start_docker(lab, members, tls, ready_within).await,
        }
    }

    /// Starts etcd on the lab's etcd node and waits until it answers.
    pub async fn start_process(lab: &Lab, tls: bool, ready_within: Duration) -> Result<Store, Error> {
        let node = lab.etcd_node().expect("a lab built with an etcd namespace");
        let endpoint = format!("{}://{}:{ETCD_PORT}", scheme(tls), node.addr);
        let pki = if tls { Some(Pki::generate(&node.dir.join("pki"), &[node.addr])?) } else { None };
        let rt = node.ns.runtime()?;
        let mut store = Store {
            backing: Backing::Process(None),
            provider: Provider::Process,
            rt: Some(rt),
            client: None,
            endpoint,
            ns: node.ns.clone(),
            dir: node.dir.clone(),
            pki,
        };
        store.spawn()?;
        store.wait_ready(ready_within).await?;
        Ok(store)
    }

    /// etcd in containers named after the run (`fl3a9c-etcd`, `fl3a9c-etcd2`, …),
    /// labelled with the run id, on the underlay: the first at the topology's etcd address.
    pub async fn start_docker(lab: &Lab, members: usize, tls: bool, ready_within: Duration) -> Result<Store, Error> {
        let bin = etcd_binary().ok_or(Error::NoEtcd)?;
        let docker = crate::lab::docker::engine().await?;
        let image = crate::store::container::ensure_image(&docker, &bin).await?;
        let addrs = lab.etcd_member_addresses(members).map_err(|e| e.context("address etcd members"))?;
        let endpoint = format!("{}://{}:{ETCD_PORT}", scheme(tls), addrs[0]);
        let dir = lab.dir.join("etcd");
        std::fs::create_dir_all(&dir).map_err(|e| Error::Docker(format!("create {}: {e}", dir.display())))?;
        let pki = if tls { Some(Pki::generate(&dir.join("pki"), &addrs)?) } else { None };
        let mut store = Store {
            backing: Backing::Docker(Vec::new()),
            provider: Provider::Docker,
            rt: None,
            client: None,
            endpoint,
            // a placeholder namespace until the first container's exists
            ns: crate::lab::netns::Netns::of_pid(std::process::id() as i64)?,
            dir,
            pki,
        };
        let names: Vec<String> = (0..members).map(|i| if i == 0 { "etcd".to_string() } else { format!("etcd{}", i + 1) }).collect();
        let cluster: Vec<String> = names.iter().zip(&addrs).map(|(n, a)| format!("{n}=http://{a}:2380")).collect();
        let mut started = Vec::new();
        for (name, addr) in names.iter().zip(&addrs) {
            // listen on every address: the underlay address only appears once the lab attaches it
            let args = member_args(name, *addr, &cluster.join(","), store.pki.as_ref());
            let c = crate::store::container::EtcdContainer::start(&docker, &image, &lab.run.netns(name), lab.run, args, store.pki_mount())
                .await?;
            started.push(Member { container: c, name: name.clone(), addr: *addr });
        }
        store.backing = Backing::Docker(started);
        store.attach(lab, None).await?;
        tracing::info!(members, image, "etcd runs in Docker containers");
        store.wait_ready(ready_within).await?;
        Ok(store)
    }

    /// Connects containers (all, or only member `only`) to the underlay and points the
    /// client runtime at the first member's namespace.
    async fn attach(&mut self, lab: &Lab, only: Option<usize>) -> Result<(), Error> {
        let Backing::Docker(members) = &self.backing else { return Ok(()) };
        let mut first_ns = None;
        for (i, m) in members.iter().enumerate() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            let pid = m.container.pid().await?;
            let ns = crate::lab::netns::Netns::of_pid(pid)?;
            lab.attach_external(&m.name, &ns, m.addr, Member::mac_tag(i)).await.map_err(|e| e.context("attach an etcd member"))?;
            if i == 0 {
                first_ns = Some(ns);
            }
        }
        if let Some(ns) = first_ns {
            if let Some(rt) = self.rt.take() {
                rt.shutdown_background();
            }
            self.rt = Some(ns.runtime()?);
            self.client = None;
            self.ns = ns;
        }
        Ok(())
    }

    /// One member's (member id, leader id), asked of that member alone.
    async fn member_status(&self, addr: std::net::Ipv4Addr) -> Option<(u64, u64)> {
        let ep = format!("{}://{addr}:{ETCD_PORT}", scheme(self.pki.is_some()));
        let rt = self.rt.as_ref()?;
        let mut opts = ConnectOptions::new().with_connect_timeout(Duration::from_secs(1)).with_timeout(Duration::from_secs(2));
        if let Some(pki) = &self.pki {
            opts = opts.with_tls(pki.client_tls().ok()?);
        }
        rt.spawn(async move {
            let mut c = Client::connect([ep], Some(opts)).await.ok()?;
            let st = c.status().await.ok()?;
            Some((st.header()?.member_id(), st.leader()))
        })
        .await
        .ok()
        .flatten()
    }

    /// Whether every member of a cluster answers on its own (a single store: true).
    async fn all_members_answer(&self) -> bool {
        let Backing::Docker(members) = &self.backing else { return true };
        if members.len() < 2 {
            return true;
        }
        for m in members {
            if self.member_status(m.addr).await.is_none() {
                return false;
            }
        }
        true
    }

    /// Every client URL, comma-separated (what agents get as `--etcd-endpoints`).
    pub fn endpoints(&self) -> String {
        match &self.backing {
            Backing::Docker(members) if members.len() > 1 => {
                let s = scheme(self.pki.is_some());
                members.iter().map(|m| format!("{s}://{}:{ETCD_PORT}", m.addr)).collect::<Vec<_>>().join(",")
            }
            _ => self.endpoint.clone(),
        }
    }

    /// Stops the member that currently leads the cluster; returns its name.
    pub async fn stop_leader(&mut self) -> Result<String, Error> {
        let Backing::Docker(members) = &self.backing else {
            return Err(Error::Docker("leader loss needs an etcd cluster in Docker".into()));
        };
        if members.len() < 2 {
            return Err(Error::Docker("leader loss needs `etcd_members: 3`".into()));
        }
        let mut leader = None;
        for (i, m) in members.iter().enumerate() {
            if let Some((id, leads)) = self.member_status(m.addr).await {
                if id == leads {
                    leader = Some(i);
                    break;
                }
            }
        }
        let i = leader.ok_or_else(|| Error::Docker("no member says it leads".into()))?;
        members[i].container.stop().await?;
        Ok(members[i].name.clone())
    }

    /// The network namespace etcd lives in (for probes sent from the etcd node).
    pub fn netns(&self) -> &crate::lab::netns::Netns {
        &self.ns
    }

    /// A line saying where etcd runs, for trial logs.
    pub fn describe(&self) -> String {
        let tls = if self.pki.is_some() { " (TLS, client certificates required)" } else { "" };
        match &self.backing {
            Backing::Process(_) => format!("etcd process at {}{tls}", self.endpoint),
            Backing::Docker(m) if m.len() == 1 => format!("etcd in Docker container {} at {}{tls}", m[0].container.name, self.endpoint),
            Backing::Docker(m) => format!("etcd cluster of {} Docker containers at {}{tls}", m.len(), self.endpoints()),
        }
    }

    /// Where a container sees the run's certificates: (host directory, container directory).
    fn pki_mount(&self) -> Option<(std::path::PathBuf, String)> {
        self.pki.as_ref().map(|p| (p.dir.clone(), CONTAINER_PKI.to_string()))
    }

    /// Every TLS connection etcd refused so far, from its log.
    pub async fn refused_connections(&self) -> Result<Vec<Refusal>, Error> {
        let text = match &self.backing {
            Backing::Process(_) => {
                let f = self.dir.join("etcd.log");
                std::fs::read_to_string(&f).map_err(|e| crate::lab_err!("read {}: {e}", f.display()))?
            }
            Backing::Docker(members) => {
                let mut all = String::new();
                for m in members {
                    all.push_str(&m.container.log().await?);
                }
                all
            }
        };
        Ok(parse_refusals(&text))
    }

    /// Starts the etcd process on the existing data directory (a fresh one the first time).
    fn spawn(&mut self) -> Result<(), Error> {
        let bin = etcd_binary().ok_or(Error::NoEtcd)?;
        let mut cmd = Command::new(bin);
        let data = self.dir.join("data").display().to_string();
        let peer = "http://127.0.0.1:2380";
        let mut args = etcd_flags(&EtcdFlags {
            name: "lab",
            data_dir: &data,
            listen_client: &self.endpoint,
            advertise_client: &self.endpoint,
            listen_peer: peer,
            advertise_peer: peer,
            cluster: &format!("lab={peer}"),
        });
        if let Some(pki) = &self.pki {
            args.extend(pki.server_flags(&pki.dir));
        }
        cmd.args(args).env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH);
        self.backing = Backing::Process(Some(Child::spawn("etcd", &self.ns, cmd, &self.dir.join("etcd.log"))?));
        Ok(())
    }

    /// Stops etcd (SIGTERM, then SIGKILL); its data stays.
    pub async fn stop(&mut self) -> Result<(), Error> {
        match &mut self.backing {
            Backing::Process(child) => {
                if let Some(mut c) = child.take() {
                    c.stop(Duration::from_secs(3));
                }
                Ok(())
            }
            Backing::Docker(members) => {
                for m in members.iter() {
                    m.container.stop().await?;
                }
                Ok(())
            }
        }
    }

    /// Freezes etcd (SIGSTOP for the process, `docker pause` for containers) or thaws it.
    pub async fn freeze(&mut self, frozen: bool) -> Result<(), Error> {
        match &mut self.backing {
            Backing::Process(Some(c)) => {
                c.signal(if frozen { nix::sys::signal::Signal::SIGSTOP } else { nix::sys::signal::Signal::SIGCONT });
                Ok(())
            }
            Backing::Process(None) => Err(Error::Docker("etcd is not running".into())),
            Backing::Docker(members) => {
                for m in members.iter() {
                    let r = if frozen { m.container.pause().await } else { m.container.unpause().await };
                    r?;
                }
                Ok(())
            }
        }
    }

    /// Starts etcd again after [`Store::stop`], optionally on an empty data directory (data
    /// loss), and waits until it answers. A container is re-attached to the underlay.
    pub async fn restart(&mut self, lab: &Lab, wipe: bool, ready_within: Duration) -> Result<(), Error> {
        self.stop().await?;
        match &mut self.backing {
            Backing::Process(_) => {
                if wipe {
                    let _ = std::fs::remove_dir_all(self.dir.join("data"));
                }
                self.spawn()?;
            }
            Backing::Docker(members) if members.len() > 1 => {
                return Err(Error::Docker("restarting a whole etcd cluster is not supported; stop its leader instead".into()))
            }
            Backing::Docker(members) if wipe => {
                // data loss: a new container on the same address, with an empty data dir
                let m = &mut members[0];
                m.container.remove().await?;
                let (docker, cname) = (m.container.docker.clone(), m.container.name.clone());
                let bin = etcd_binary().ok_or(Error::NoEtcd)?;
                let image = crate::store::container::ensure_image(&docker, &bin).await?;
                let args = member_args(&m.name, m.addr, &format!("{}=http://{}:2380", m.name, m.addr), self.pki.as_ref());
                let mount = self.pki.as_ref().map(|p| (p.dir.clone(), CONTAINER_PKI.to_string()));
                m.container = crate::store::container::EtcdContainer::start(&docker, &image, &cname, lab.run, args, mount).await?;
                self.attach(lab, None).await?;
            }
            Backing::Docker(members) => {
                members[0].container.start_again().await?;
                self.attach(lab, None).await?;
            }
        }
        self.wait_ready(ready_within).await
    }

    /// Revokes the etcd lease `key` is attached to (which deletes the key), or deletes the
    /// key when it has no lease. Returns the lease id revoked.
    pub async fn revoke_key_lease(&self, key: &str) -> Result<Option<i64>, Error> {
        let k = key.to_string();
        let resp = self.call(&format!("get {key}"), |mut c| async move { c.get(k, None).await }).await?;
        let lease = resp.kvs().first().map(|kv| kv.lease()).filter(|l| *l != 0);
        match lease {
            Some(id) => {
                self.call(&format!("revoke lease {id:x}"), move |mut c| async move { c.lease_revoke(id).await.map(|_| ()) }).await?;
                Ok(Some(id))
            }
            None => self.delete(key).await.map(|_| None),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        let k = key.to_string();
        self.call_retrying(&format!("delete {key}"), |mut c| {
            let k = k.clone();
            async move { c.delete(k, None).await.map(|_| ()) }
        })
        .await
    }

    /// [`Store::call`] for requests that may be repeated: in a cluster a request can land
    /// on a member that was just stopped, so it is tried again, up to 2 s, before failing.
    async fn call_retrying<T, F, Fut>(&self, op: &str, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match self.call(op, &f).await {
                Err(Error::Etcd { .. }) if self.endpoints().contains(',') && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                other => return other,
            }
        }
    }

    async fn wait_ready(&mut self, within: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + within;
        loop {
            if let Backing::Process(Some(child)) = &mut self.backing {
                if let Some(s) = child.try_status() {
                    return Err(Error::EtcdExited { status: Child::describe_status(&s), log: child.log_tail(15) });
                }
            }
            if self.client.is_none() {
                self.client = self.connect().await;
            }
            if self.client.is_some()
                && self.call("status", |mut c| async move { c.status().await }).await.is_ok()
                && self.all_members_answer().await
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let log = match &self.backing {
                    Backing::Process(Some(c)) => c.log_tail(15),
                    _ => String::new(),
                };
                return Err(Error::EtcdNotReady { endpoint: self.endpoint.clone(), secs: within.as_secs(), log });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs one client request on the store's runtime (inside the lab).
    pub async fn call<T, F, Fut>(&self, op: &str, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let rt = self.rt.as_ref().expect("store runtime");
        let client = self.client.clone().ok_or_else(|| Error::EtcdAborted { op: op.to_string(), reason: "not connected".into() })?;
        let fut = f(client);
        let timed = async move { tokio::time::timeout(Duration::from_secs(5), fut).await };
        match rt.spawn(timed).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(source))) => Err(Error::Etcd { op: op.to_string(), source }),
            Ok(Err(_)) => Err(Error::EtcdAborted { op: op.to_string(), reason: "timed out after 5 s".into() }),
            Err(e) => Err(Error::EtcdAborted { op: op.to_string(), reason: e.to_string() }),
        }
    }

    pub async fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<(), Error> {
        let (k, v) = (key.to_string(), value.into());
        self.call_retrying(&format!("put {key}"), |mut c| {
            let (k, v) = (k.clone(), v.clone());
            async move { c.put(k, v, None).await.map(|_| ()) }
        })
        .await
    }

    /// Puts `key` attached to a fresh etcd lease of `ttl` seconds: it vanishes when that
    /// runs out, as a flannel lease left by a departed node does.
    pub async fn put_with_ttl(&self, key: &str, value: impl Into<Vec<u8>>, ttl: i64) -> Result<(), Error> {
        let (k, v) = (key.to_string(), value.into());
        self.call_retrying(&format!("put {key} with a {ttl} s lease"), |mut c| {
            let (k, v) = (k.clone(), v.clone());
            async move {
                let lease = c.lease_grant(ttl, None).await?.id();
                c.put(k, v, Some(etcd_client::PutOptions::new().with_lease(lease))).await.map(|_| ())
            }
        })
        .await
    }

    /// etcd's current revision: every write moves it by one, and each write is one watch
    /// event for every agent watching the prefix.
    pub async fn revision(&self) -> Result<i64, Error> {
        let resp = self.call_retrying("get revision", |mut c| async move { c.get("/", None).await }).await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Every key/value under `prefix`, sorted by key (retried over a stopped member).
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let p = prefix.to_string();
        let resp = self
            .call_retrying(&format!("get {prefix}*"), |mut c| {
                let p = p.clone();
                async move { c.get(p, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        Ok(resp.kvs().iter().map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.value().to_vec())).collect())
    }

    /// One connection attempt from inside the lab (etcd-client connects eagerly).
    async fn connect(&self) -> Option<Client> {
        let eps: Vec<String> = self.endpoints().split(',').map(str::to_string).collect();
        let rt = self.rt.as_ref()?;
        let mut opts = ConnectOptions::new().with_connect_timeout(Duration::from_secs(1)).with_timeout(Duration::from_secs(5));
        if let Some(pki) = &self.pki {
            opts = opts.with_tls(pki.client_tls().ok()?);
        }
        rt.spawn(async move { Client::connect(eps, Some(opts)).await.ok() }).await.ok().flatten()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        match &mut self.backing {
            Backing::Process(child) => {
                if let Some(mut c) = child.take() {
                    c.stop(Duration::from_secs(3));
                }
            }
            Backing::Docker(members) => {
                // removal is async; do it on a thread of its own (we may be inside a runtime)
                let mut taken: Vec<crate::store::container::EtcdContainer> = members.drain(..).map(|m| m.container).collect();
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                    rt.block_on(async {
                        for c in &mut taken {
                            let _ = c.remove().await;
                        }
                    });
                    Some(())
                })
                .join();
            }
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// One etcd member's command line.
struct EtcdFlags<'a> {
    name: &'a str,
    data_dir: &'a str,
    listen_client: &'a str,
    advertise_client: &'a str,
    listen_peer: &'a str,
    advertise_peer: &'a str,
    cluster: &'a str,
}

fn etcd_flags(f: &EtcdFlags) -> Vec<String> {
    [
        ("--name", f.name),
        ("--data-dir", f.data_dir),
        ("--listen-client-urls", f.listen_client),
        ("--advertise-client-urls", f.advertise_client),
        ("--listen-peer-urls", f.listen_peer),
        ("--initial-advertise-peer-urls", f.advertise_peer),
        ("--initial-cluster", f.cluster),
        ("--initial-cluster-state", "new"),
        ("--logger", "zap"),
        ("--log-level", "warn"),
    ]
    .iter()
    .flat_map(|(k, v)| [k.to_string(), v.to_string()])
    .collect()
}

/// Where a container finds the run's certificates (a read-only bind mount).
const CONTAINER_PKI: &str = "/etc/flannel-lab/pki";

/// The command line of one etcd member in a container (data in /var/lib/etcd, listening on
/// every address, advertising its underlay address). Peers talk plain HTTP between
/// themselves; clients get TLS when `pki` is given.
fn member_args(name: &str, addr: std::net::Ipv4Addr, cluster: &str, pki: Option<&Pki>) -> Vec<String> {
    let s = scheme(pki.is_some());
    let (client, peer) = (format!("{s}://{addr}:{ETCD_PORT}"), format!("http://{addr}:2380"));
    let mut args = etcd_flags(&EtcdFlags {
        name,
        data_dir: "/var/lib/etcd",
        listen_client: &format!("{s}://0.0.0.0:{ETCD_PORT}"),
        advertise_client: &client,
        listen_peer: "http://0.0.0.0:2380",
        advertise_peer: &peer,
        cluster,
    });
    if let Some(pki) = pki {
        args.extend(pki.server_flags(std::path::Path::new(CONTAINER_PKI)));
    }
    args
}

/// A TLS handshake etcd refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// When etcd logged it (None when its timestamp did not parse).
    pub at: Option<std::time::SystemTime>,
    pub from: std::net::SocketAddr,
    pub reason: String,
}

/// etcd's (zap, JSON) log lines for refused TLS handshakes:
/// `{"level":"warn","ts":"2026-11-26T14:34:30.248Z",…,"msg":"rejected connection","remote-addr":"192.168.99.3:41234",…,"error":"tls: …"}`.
fn parse_refusals(log: &str) -> Vec<Refusal> {
    log.lines()
        .filter(|l| l.contains("rejected connection"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["msg"] == "rejected connection")
        .filter_map(|v| {
            Some(Refusal {
                at: v["ts"].as_str().and_then(parse_utc),
                from: v["remote-addr"].as_str()?.parse().ok()?,
                reason: v["error"].as_str().unwrap_or("no reason given").to_string(),
            })
        })
        .collect()
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` (zap's ISO 8601 in UTC) as a time.
fn parse_utc(ts: &str) -> Option<std::time::SystemTime> {
    let ts = ts.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    // days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm)
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = u64::try_from(days * 86400 + hh * 3600 + mm * 60 + ss).ok()?;
    let nanos = format!("{frac:0<9}").get(..9)?.parse::<u32>().ok()?;
    Some(std::time::UNIX_EPOCH + Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_come_from_etcd_log_lines() {
        let log = concat!(
            r#"{"level":"warn","ts":"2026-11-26T14:34:30.248Z","caller":"embed/config_logging.go:287","msg":"rejected connection","remote-addr":"192.168.99.3:53268","server-name":"","error":"tls: client didn't provide a certificate"}"#,
            "\n",
            r#"{"level":"warn","msg":"slow request","took":"1s"}"#,
            "\nnot json: rejected connection\n",
            r#"{"level":"warn","msg":"rejected connection","remote-addr":"192.168.99.4:1","error":"tls: failed to verify client certificate: x509: certificate signed by unknown authority"}"#,
        );
        let r = parse_refusals(log);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].from, "192.168.99.3:53268".parse().unwrap());
        assert!(r[0].reason.contains("didn't provide a certificate"));
        assert!(r[1].reason.contains("unknown authority"));
        assert_eq!(r[0].at, Some(std::time::UNIX_EPOCH + Duration::from_millis(1_795_703_670_248)));
        assert_eq!(r[1].at, None);
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some(std::time::UNIX_EPOCH));
        assert_eq!(parse_utc("2000-03-01T00:00:01.5Z"), Some(std::time::UNIX_EPOCH + Duration::from_millis(951_868_801_500)));
    }

    #[test]
    fn container_members_get_tls_flags_for_clients_only() {
        let d = tempfile::tempdir().unwrap();
        let pki = Pki::generate(d.path(), &[]).unwrap();
        let a = member_args("etcd", "192.168.99.254".parse().unwrap(), "etcd=http://192.168.99.254:2380", Some(&pki));
        let text = a.join(" ");
        assert!(text.contains("--listen-client-urls https://0.0.0.0:2379"), "{text}");
        assert!(text.contains("--listen-peer-urls http://0.0.0.0:2380"), "{text}");
        assert!(text.contains("--trusted-ca-file /etc/flannel-lab/pki/ca.pem --client-cert-auth"), "{text}");
        let plain = member_args("etcd", "192.168.99.254".parse().unwrap(), "etcd=http://192.168.99.254:2380", None).join(" ");
        assert!(!plain.contains("https") && !plain.contains("--client-cert-auth"), "{plain}");
    }
}
