//! The agent's life: wait for the network config, find the underlay (which depends on the
//! families the config enables), take a lease, set up the backend, then follow every lease
//! change until told to stop.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{sleep, sleep_until, Instant};

use crate::backend::network::{Dual, HostGwBackend, Network, VxlanBackend};
use crate::backend::udp::{self, UdpNetwork};
use crate::backend::vxlan::{self, VxlanDevice, VxlanNetwork};
use crate::backend::BackendConf;
use crate::backend::{hostgw, HostGwNetwork};
use crate::config::{Flags, NetConf};
use crate::error::chain;
use crate::etcd_access::{connect_options, failure_hint, EtcdAccess};
use crate::firewall::Firewall;
use crate::lease::{event_from_watch, Lease, LeaseAttrs, LeaseError, LeaseEvent, OwnLease, Registry, LEASE_TTL};
use crate::netlink::{Families, Kernel, Underlay};
use crate::notify::{self, Change};
use crate::subnet_choice::Previous;
use crate::subnet_file::{previous_subnets, SubnetEnv};

/// Retry delays for etcd: doubling from 200 ms up to 10 s, each drawn from the upper half
/// of its step so that many agents refused at once (a thousand started together) do not
/// come back at once.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(Duration::from_millis(200))
    }
    async fn wait(&mut self) {
        sleep(self.0.mul_f64(rand::random_range(0.5..=1.0))).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(10));
    }
    fn reset(&mut self) {
        self.0 = Duration::from_millis(200);
    }
}

async fn connect(flags: &Flags, opts: &EtcdAccess) -> Registry {
    let mut backoff = Backoff::new();
    loop {
        match Registry::connect(&flags.etcd_endpoints, &flags.etcd_prefix, opts).await {
            Ok(r) => return r,
            Err(e) => etcd_warning(&e, opts.tls(), "etcd unreachable, retrying"),
        }
        backoff.wait().await;
    }
}

/// Logs a failed etcd request with its whole error chain, plus a hint when the cause is
/// probably a refused TLS client certificate.
fn etcd_warning(e: &(dyn std::error::Error + 'static), tls: bool, what: &str) {
    let error = chain(e);
    match failure_hint(&error, tls) {
        Some(hint) => tracing::warn!(error, hint, "{what}"),
        None => tracing::warn!(error, "{what}"),
    }
}

async fn wait_for_config(reg: &mut Registry) -> String {
    let mut backoff = Backoff::new();
    let mut said = false;
    loop {
        match reg.config().await {
            Ok(Some(c)) => return c,
            Ok(None) if !said => {
                tracing::info!(key = format!("{}/config", reg.prefix()), "waiting for the network config");
                said = true;
            }
            Ok(None) => {}
            Err(e) => etcd_warning(&e, reg.tls(), "reading the network config failed, retrying"),
        }
        backoff.wait().await;
        backoff.0 = backoff.0.min(Duration::from_secs(1));
    }
}

/// How often the kernel state is checked without notifications, and at most how often a
/// notification asks for a check.
const RECONCILE_EVERY: Duration = Duration::from_secs(10);
/// How often it is checked anyway when notifications tell what changed (see `safety_period`):
/// at least this, and 600 ms per peer (10 minutes with a thousand peers).
const SAFETY_EVERY: Duration = Duration::from_secs(60);
/// Delay between a link event and the reconcile it triggers, so a burst is handled once.
const LINK_SETTLE: Duration = Duration::from_millis(300);
/// Delay between a peer change and the vxlan source filter update it triggers: at size
/// peers arrive in bursts, and every update runs `nft` (one exec per watch response made
/// 250 hosts spend most of their start-up in `nft`).
const FILTER_BATCH: Duration = Duration::from_millis(250);

pub async fn run(flags: Flags) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let etcd = connect_options(&flags).context("etcd access")?;
    let mut fw = Firewall::prepare(&flags).await?;
    let outcome = tokio::select! {
        r = serve(&flags, &etcd, &mut fw) => r,
        _ = term.recv() => { tracing::info!("SIGTERM: exiting, routes and devices left in place"); Ok(()) }
        _ = int.recv() => { tracing::info!("SIGINT: exiting, routes and devices left in place"); Ok(()) }
    };
    fw.teardown().await;
    outcome
}

async fn serve(flags: &Flags, etcd: &EtcdAccess, fw: &mut Firewall) -> anyhow::Result<()> {
    let kernel = Kernel::open().context("open netlink socket")?;
    if flags.healthz_port != 0 {
        crate::healthz::serve(flags.healthz_ip, flags.healthz_port).await?;
    }

    let mut reg = connect(flags, etcd).await;
    let text = wait_for_config(&mut reg).await;
    let conf = NetConf::parse_with(&text, flags.disable_ipv6).and_then(|conf| BackendConf::from_conf(&conf).map(|backend| (conf, backend)));
    let (conf, backend) = conf.with_context(|| format!("invalid network config at {}/config", flags.etcd_prefix))?;
    if flags.disable_ipv6 && NetConf::parse(&text).is_ok_and(|c| c.ipv6.is_some()) {
        tracing::warn!("the network config enables IPv6; ignored (--disable-ipv6): publishing IPv4 leases only");
    }
    let need = Families { ipv4: conf.ipv4.is_some(), ipv6: conf.ipv6.is_some() };
    let underlay = kernel.underlay(&flags.ifaces, need).await.context("inspect interfaces")?.with_context(|| {
        match (flags.ifaces.is_empty(), need.ipv4) {
            (true, true) => "no interface with an IPv4 address carries the default route; pass --iface".to_string(),
            (true, false) => "no interface carries an IPv4 or IPv6 default route; pass --iface".to_string(),
            (false, true) => format!("none of --iface {:?} exists with an IPv4 address", flags.ifaces),
            (false, false) => format!("none of --iface {:?} exists", flags.ifaces),
        }
    })?;
    let public_ip = match need.ipv4 {
        true => flags.public_ip.or(underlay.addr).context("the underlay has no IPv4 address")?,
        false => Ipv4Addr::UNSPECIFIED,
    };
    let public_ipv6 = match need.ipv6 {
        true => Some(flags.public_ipv6.or(underlay.addr6).with_context(|| {
            format!(
                "interface `{}` has no global-scope IPv6 address, and the network config enables IPv6; pass --public-ipv6",
                underlay.name
            )
        })?),
        false => None,
    };
    match (need.ipv4, public_ipv6) {
        (_, None) => tracing::info!(iface = underlay.name, %public_ip, mtu = underlay.mtu, "using underlay interface"),
        (true, Some(v6)) => {
            tracing::info!(iface = underlay.name, %public_ip, public_ipv6 = %v6, mtu = underlay.mtu, "using underlay interface")
        }
        (false, Some(v6)) => tracing::info!(iface = underlay.name, public_ipv6 = %v6, mtu = underlay.mtu, "using underlay interface"),
    }

    remove_other_backends(&kernel, &conf, backend, underlay.index).await.context("remove state of other backends")?;
    let setup = Setup { flags, kernel, reg, conf, need, underlay, public_ip, public_ipv6 };
    match backend {
        BackendConf::Vxlan(vxlan::Options { vni, port, direct_routing, mtu, gbp, learning }) => {
            let underlay = &setup.underlay;
            let dev = |name: String, local: std::net::IpAddr, mtu: u32| VxlanDevice {
                name,
                vni,
                port,
                local,
                underlay_index: underlay.index,
                mtu,
                gbp,
                learning,
                mac: None,
            };
            let mut overlay_mtu = u32::MAX;
            let v4 = match setup.conf.ipv4 {
                None => None,
                Some(pool) => {
                    let m = vxlan::device_mtu(underlay.mtu, mtu).map_err(anyhow::Error::msg).context("vxlan MTU")?;
                    overlay_mtu = overlay_mtu.min(m);
                    let dev = dev(vxlan::device_name(vni), setup.public_ip.into(), m);
                    let (net, _) = VxlanNetwork::open(setup.kernel.clone(), &dev, pool.network, direct_routing)
                        .await
                        .with_context(|| format!("set up vxlan device `{}`", dev.name))?;
                    Some(net)
                }
            };
            let v6 = match (setup.conf.ipv6, setup.public_ipv6) {
                (Some(pool), Some(local)) => {
                    let m = vxlan::device_mtu_v6(underlay.mtu, mtu).map_err(anyhow::Error::msg).context("vxlan MTU (IPv6)")?;
                    overlay_mtu = overlay_mtu.min(m);
                    let dev = dev(vxlan::device_name_v6(vni), local.into(), m);
                    let (net, _) = VxlanNetwork::open(setup.kernel.clone(), &dev, pool.network, direct_routing)
                        .await
                        .with_context(|| format!("set up vxlan device `{}`", dev.name))?;
                    Some(net)
                }
                _ => None,
            };
            follow(setup, VxlanBackend { fam: Dual { v4, v6 }, vni, port }, overlay_mtu, fw).await
        }
        BackendConf::HostGw => {
            let (kernel, index) = (&setup.kernel, setup.underlay.index);
            let v4 = setup.conf.ipv4.map(|p| HostGwNetwork::new(kernel.clone(), index, p.network));
            let v6 = setup.conf.ipv6.map(|p| HostGwNetwork::new(kernel.clone(), index, p.network));
            let mtu = hostgw::overlay_mtu(setup.underlay.mtu);
            follow(setup, HostGwBackend { fam: Dual { v4, v6 } }, mtu, fw).await
        }
        BackendConf::Udp(udp::Options { port }) => {
            let pool = setup.conf.require_ipv4()?;
            let mtu = udp::overlay_mtu(setup.underlay.mtu).context("underlay MTU too small for udp")?;
            let net = UdpNetwork::open(setup.kernel.clone(), pool.network, pool.subnet_len, port, mtu)?;
            follow(setup, net, mtu, fw).await
        }
    }
}

/// What the set-up found before a backend was chosen.
struct Setup<'a> {
    flags: &'a Flags,
    kernel: Kernel,
    reg: Registry,
    conf: NetConf,
    need: Families,
    underlay: Underlay,
    public_ip: Ipv4Addr,
    public_ipv6: Option<Ipv6Addr>,
}

/// Takes the lease, configures `net` for it, writes the subnet file and the firewall, then
/// follows the cluster until stopped.
async fn follow<'a, N: Network>(mut setup: Setup<'a>, mut net: N, mtu: u32, fw: &'a mut Firewall) -> anyhow::Result<()> {
    let (flags, conf) = (setup.flags, &setup.conf);
    let attrs = net.lease_attrs(setup.public_ip, setup.public_ipv6);
    // Kernel notifications for the backends whose kernel state hangs on the underlay:
    // links, and the routes, neighbours and FDB entries the agent keeps.
    let changes = match net.follows_kernel() {
        false => None,
        true => Some(notify::kernel_changes(true).context("subscribe to kernel notifications")?),
    };
    let previous = previous_subnets(&flags.subnet_file);
    let own = acquire(&mut setup.reg, conf, &attrs, previous).await?;
    net.set_local_subnets(own.lease.subnets).await.context("configure the backend for the local subnet")?;
    let env = SubnetEnv {
        ipv4: conf.ipv4.map(|p| p.network).zip(own.lease.subnets.v4),
        ipv6: conf.ipv6.map(|p| p.network).zip(own.lease.subnets.v6),
        mtu,
        ip_masq: flags.ip_masq,
    };
    env.write(&flags.subnet_file).with_context(|| format!("write subnet file {}", flags.subnet_file.display()))?;
    tracing::info!(subnet = %own.lease.subnets, file = %flags.subnet_file.display(), "lease acquired, subnet file written");
    fw.start(env.ipv4, env.ipv6.map(|(network, _)| network)).await.context("install iptables rules")?;
    let renew_every = LEASE_TTL - Duration::from_secs(flags.renew_margin_minutes * 60);
    let daemon = Daemon {
        iptables_at: Instant::now() + fw.resync_every,
        fw,
        setup,
        net,
        attrs,
        own,
        changes,
        renew_every,
        renew_at: Instant::now() + renew_every,
        reconcile_at: Instant::now() + safety_period(0),
        asked_at: None,
        reconcile_asked: false,
        underlay_gone: false,
        filter_at: None,
        backoff: Backoff::new(),
    };
    daemon.run().await
}

/// Whether the watch goes on or starts again from a fresh snapshot.
#[derive(PartialEq, Eq)]
enum Flow {
    Watch,
    Resync,
}

/// The running agent: its lease, its backend, and when each of its chores is due.
struct Daemon<'a, N: Network> {
    fw: &'a mut Firewall,
    /// The host as set up (the underlay is updated when it comes back recreated).
    setup: Setup<'a>,
    net: N,
    /// The lease value this host publishes now.
    attrs: LeaseAttrs,
    own: OwnLease,
    changes: Option<UnboundedReceiver<Change>>,
    renew_every: Duration,
    renew_at: Instant,
    iptables_at: Instant,
    reconcile_at: Instant,
    /// The last reconcile a notification asked for: in a fight with someone who keeps
    /// undoing the agent's entries, one every RECONCILE_EVERY is enough.
    asked_at: Option<Instant>,
    /// Whether `reconcile_at` is an event's (a link change, a divergence), not the period's.
    reconcile_asked: bool,
    underlay_gone: bool,
    /// When the vxlan source filter is due after a burst of peer changes.
    filter_at: Option<Instant>,
    backoff: Backoff,
}

impl<N: Network> Daemon<'_, N> {
    /// Snapshot, watch from the snapshot's revision, and handle whatever comes first, for
    /// ever (a watch that breaks starts again from a snapshot).
    async fn run(mut self) -> anyhow::Result<()> {
        loop {
            let Some(mut stream) = self.resync().await? else { continue };
            loop {
                let flow = tokio::select! {
                    msg = stream.message() => self.on_watch(msg).await?,
                    _ = sleep_until(self.filter_at.unwrap_or_else(Instant::now)), if self.filter_at.is_some() => {
                        self.on_filter_due().await;
                        Flow::Watch
                    }
                    _ = sleep_until(self.renew_at) => {
                        self.on_renew_due().await?;
                        Flow::Watch
                    }
                    Some(change) = next_change(&mut self.changes) => {
                        self.on_kernel_change(change);
                        Flow::Watch
                    }
                    _ = sleep_until(self.iptables_at) => {
                        self.fw.resync_iptables().await;
                        self.iptables_at = Instant::now() + self.fw.resync_every;
                        Flow::Watch
                    }
                    _ = sleep_until(self.reconcile_at) => {
                        self.on_reconcile_due().await;
                        Flow::Watch
                    }
                };
                if flow == Flow::Resync {
                    break;
                }
            }
        }
    }

    /// Every lease as etcd has it now, programmed; the watch from that revision. None when
    /// it must be tried again (etcd failed, or the own lease had to be taken again).
    async fn resync(&mut self) -> anyhow::Result<Option<etcd_client::WatchStream>> {
        let (leases, malformed, rev) = match self.setup.reg.snapshot().await {
            Ok(s) => s,
            Err(e) => {
                etcd_warning(&e, self.setup.reg.tls(), "listing leases failed, retrying");
                self.setup.reg.refresh().await;
                self.backoff.wait().await;
                return Ok(None);
            }
        };
        for m in malformed {
            tracing::warn!(entry = m, "skipping malformed lease");
        }
        let (own, public_ip, public_ipv6) = (&self.own, self.setup.public_ip, self.setup.public_ipv6);
        let mine = |l: &Lease| l.subnets == own.lease.subnets && l.attrs.public_ip == public_ip && l.attrs.public_ipv6 == public_ipv6;
        if !leases.iter().any(mine) {
            tracing::warn!(subnet = %self.own.lease.subnets, "own lease is gone from etcd, registering again");
            self.own = reacquire(&mut self.setup.reg, &self.setup.conf, &self.attrs, &self.own).await?;
            return Ok(None);
        }
        self.net.resync(&leases).await.context("program peers")?;
        self.net.sync_filter(self.fw).await;
        if self.changes.is_some() && !self.reconcile_asked {
            // the next full check once the safety period for this many peers is over
            self.reconcile_at = Instant::now() + safety_period(self.net.peer_count());
        }
        self.filter_at = None;
        tracing::info!(peers = self.net.peer_count(), revision = rev, "peers programmed, watching for changes");
        release_free_memory();
        match self.setup.reg.watch(rev).await {
            Ok(s) => {
                self.backoff.reset();
                Ok(Some(s))
            }
            Err(e) => {
                etcd_warning(&e, self.setup.reg.tls(), "starting the watch failed, retrying");
                self.backoff.wait().await;
                Ok(None)
            }
        }
    }

    /// A watch response: every event of it (dropping all but the first is flannel bug #1726).
    async fn on_watch(&mut self, msg: Result<Option<etcd_client::WatchResponse>, etcd_client::Error>) -> anyhow::Result<Flow> {
        let resp = match msg {
            Ok(Some(r)) => r,
            Ok(None) => {
                tracing::warn!("watch closed by etcd, resyncing");
                return Ok(Flow::Resync);
            }
            Err(e) => {
                etcd_warning(&e, self.setup.reg.tls(), "watch failed, resyncing");
                self.backoff.wait().await;
                return Ok(Flow::Resync);
            }
        };
        if resp.canceled() {
            tracing::warn!(reason = resp.cancel_reason(), compact_revision = resp.compact_revision(), "watch canceled, resyncing");
            return Ok(Flow::Resync);
        }
        let before = self.net.peer_count();
        for ev in resp.events() {
            match event_from_watch(self.setup.reg.prefix(), ev) {
                None => {}
                Some(Err(why)) => tracing::warn!(entry = why, "skipping malformed lease"),
                Some(Ok(LeaseEvent::Removed(s))) if s == self.own.lease.subnets => {
                    tracing::warn!(subnet = %s, "own lease was removed, registering again");
                    self.own = reacquire(&mut self.setup.reg, &self.setup.conf, &self.attrs, &self.own).await?;
                }
                Some(Ok(ev)) => self.net.handle(&ev).await.context("program peer")?,
            }
        }
        let now = self.net.peer_count();
        if now.max(before) > crate::backend::LOG_EACH_PEER_UP_TO && now != before {
            tracing::info!(events = resp.events().len(), peers = now, "peers changed");
        }
        self.filter_at.get_or_insert(Instant::now() + FILTER_BATCH);
        Ok(Flow::Watch)
    }

    async fn on_filter_due(&mut self) {
        self.filter_at = None;
        self.net.sync_filter(self.fw).await;
        release_free_memory();
    }

    async fn on_renew_due(&mut self) -> anyhow::Result<()> {
        match self.setup.reg.renew(self.own.etcd_lease_id).await {
            Ok(true) => {
                tracing::info!(subnet = %self.own.lease.subnets, "lease renewed");
                self.renew_at = Instant::now() + self.renew_every;
            }
            Ok(false) => {
                self.own = reacquire(&mut self.setup.reg, &self.setup.conf, &self.attrs, &self.own).await?;
                self.renew_at = Instant::now() + self.renew_every;
            }
            Err(e) => {
                etcd_warning(&e, self.setup.reg.tls(), "renewing the lease failed, retrying");
                self.renew_at = Instant::now() + Duration::from_secs(5);
            }
        }
        Ok(())
    }

    /// A kernel notification: a link change of the underlay or an own device, or a change
    /// that moved the backend's state away from the peers', brings the next reconcile closer.
    fn on_kernel_change(&mut self, change: Change) {
        match change {
            Change::Link(link) => {
                let ours = link.index == self.setup.underlay.index
                    || link.name.as_deref() == Some(self.setup.underlay.name.as_str())
                    || link.name.as_deref().is_some_and(|n| self.net.is_device(n));
                if ours {
                    tracing::debug!(?link, "link changed, reconciling soon");
                    self.reconcile_at = self.reconcile_at.min(Instant::now() + LINK_SETTLE);
                    self.reconcile_asked = true;
                }
            }
            other if self.net.diverges(&other) => {
                let at = self.asked_at.map_or(Instant::now(), |t| t + RECONCILE_EVERY).max(Instant::now() + LINK_SETTLE);
                if at < self.reconcile_at {
                    tracing::debug!(change = ?other, "kernel state moved away from the peers', reconciling soon");
                    self.reconcile_at = at;
                    self.asked_at = Some(at);
                    self.reconcile_asked = true;
                }
            }
            _ => {}
        }
    }

    /// The underlay checked (it may be gone, or back under another index), the vxlan
    /// filter, the backend's kernel state restored, and a changed VtepMAC published.
    async fn on_reconcile_due(&mut self) {
        self.reconcile_at = Instant::now() + if self.changes.is_some() { safety_period(self.net.peer_count()) } else { RECONCILE_EVERY };
        self.reconcile_asked = false;
        match self.setup.kernel.underlay(std::slice::from_ref(&self.setup.underlay.name), self.setup.need).await {
            Ok(Some(now)) => {
                if self.underlay_gone || now.index != self.setup.underlay.index {
                    tracing::info!(iface = now.name, ifindex = now.index, "underlay interface is back");
                    self.underlay_gone = false;
                }
                if now.index != self.setup.underlay.index {
                    self.net.set_underlay(now.index);
                }
                self.setup.underlay = now;
            }
            Ok(None) => {
                if !self.underlay_gone {
                    tracing::warn!(iface = self.setup.underlay.name, "underlay interface is gone, waiting for it to return");
                    self.underlay_gone = true;
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = chain(&e), "inspecting interfaces failed");
                return;
            }
        }
        self.fw.check_vxlan_filter().await;
        // a recreated vxlan device that got another MAC, or one not yet published
        let changed =
            self.net.reconcile().await || self.net.lease_attrs(self.setup.public_ip, self.setup.public_ipv6) != self.own.lease.attrs;
        if changed {
            self.attrs = self.net.lease_attrs(self.setup.public_ip, self.setup.public_ipv6);
            match self.setup.reg.republish(&self.own, &self.attrs).await {
                Ok(()) => {
                    tracing::info!(subnet = %self.own.lease.subnets, macs = self.net.macs(), "published the new VtepMAC");
                    self.own.lease.attrs = self.attrs.clone();
                }
                Err(e) => etcd_warning(&e, self.setup.reg.tls(), "publishing the new VtepMAC failed, retrying at the next reconcile"),
            }
        }
    }
}

/// The next kernel notification, or never when there is no subscription. A subscription
/// whose reader stopped ends: the agent falls back to reconciling every RECONCILE_EVERY.
async fn next_change(changes: &mut Option<UnboundedReceiver<Change>>) -> Option<Change> {
    match changes {
        Some(rx) => match rx.recv().await {
            Some(c) => Some(c),
            None => {
                *changes = None;
                Some(Change::Overflow)
            }
        },
        None => std::future::pending().await,
    }
}

/// Hands the allocator's free pages back to the kernel. After a burst of watch events the
/// heap holds freed buffers (decoded responses, netlink dumps) that glibc keeps resident;
/// with one agent per host that is memory a thousand times over.
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How often kernel state is checked in full when notifications say what changed: a safety
/// net, jittered so that a thousand agents started together do not check together, and
/// longer with more peers (each check dumps the neighbour table, which the kernel walks
/// whole, every namespace's entries included).
fn safety_period(peers: usize) -> Duration {
    let base = SAFETY_EVERY.max(Duration::from_millis(600) * peers as u32);
    base.mul_f64(rand::random_range(0.8..=1.2))
}

async fn acquire(reg: &mut Registry, conf: &NetConf, attrs: &LeaseAttrs, previous: Previous) -> anyhow::Result<OwnLease> {
    let mut backoff = Backoff::new();
    loop {
        match reg.acquire(conf, attrs, previous).await {
            Ok(own) => return Ok(own),
            Err(e @ LeaseError::OutOfSubnets(_)) => return Err(e.into()),
            Err(e) => {
                etcd_warning(&e, reg.tls(), "taking a lease failed, retrying");
                reg.refresh().await;
            }
        }
        backoff.wait().await;
    }
}

/// Takes the lease again after it vanished; the subnets must stay the same, because the
/// device addresses, the subnet file and every pod on this host depend on them.
async fn reacquire(reg: &mut Registry, conf: &NetConf, attrs: &LeaseAttrs, own: &OwnLease) -> anyhow::Result<OwnLease> {
    let previous = Previous { v4: own.lease.subnets.v4, v6: own.lease.subnets.v6 };
    let again = acquire(reg, conf, attrs, previous).await?;
    if again.lease.subnets != own.lease.subnets {
        bail!(
            "lost lease on {} and the subnet was taken by another host (got {} instead); exiting so pods are recreated",
            own.lease.subnets,
            again.lease.subnets
        );
    }
    tracing::info!(subnet = %again.lease.subnets, "lease registered again");
    Ok(again)
}

/// After a backend switch: removes what another backend (or another family set) left
/// on this host — vxlan devices other than the ones in use (`flannel.N` without IPv4,
/// `flannel-v6.N` without IPv6), a leftover `flannel0`, host-gw peer routes of each
/// enabled family. (`ip link del flannel.1`, `ip route del SUBNET via IP dev eth0`)
async fn remove_other_backends(
    kernel: &Kernel,
    conf: &NetConf,
    backend: BackendConf,
    underlay: u32,
) -> Result<(), crate::netlink::NlError> {
    let mut keep = Vec::new();
    match backend {
        BackendConf::Vxlan(vxlan::Options { vni, .. }) => {
            if conf.ipv4.is_some() {
                keep.push(vxlan::device_name(vni));
            }
            if conf.ipv6.is_some() {
                keep.push(vxlan::device_name_v6(vni));
            }
        }
        BackendConf::Udp(_) => keep.push(udp::DEVICE.to_string()),
        BackendConf::HostGw => {}
    }
    for l in kernel.links().await? {
        let name = crate::netlink::link_name(&l).unwrap_or_default();
        let vxlan_name = name.starts_with(vxlan::DEVICE_PREFIX) || name.starts_with(vxlan::DEVICE_PREFIX_V6);
        let ours = name == udp::DEVICE || (vxlan_name && crate::netlink::vxlan_settings(&l).is_some());
        if ours && !keep.contains(&name) {
            tracing::info!(device = name, "removing the device of another backend");
            crate::netlink::gone_ok(
                kernel.handle.link().del(l.header.index).execute().await.map_err(crate::netlink::ctx(format!("delete `{name}`"))),
            )?;
        }
    }
    let keeps_gateway_routes = matches!(backend, BackendConf::HostGw | BackendConf::Vxlan(vxlan::Options { direct_routing: true, .. }));
    if !keeps_gateway_routes {
        if let Some(pool) = conf.ipv4 {
            kernel.remove_gateway_routes(underlay, pool.network).await?;
        }
        if let Some(pool) = conf.ipv6 {
            kernel.remove_gateway_routes(underlay, pool.network).await?;
        }
    }
    Ok(())
}
