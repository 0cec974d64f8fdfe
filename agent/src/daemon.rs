//! The agent's life: wait for the network config, find the underlay (which depends on the
//! families the config enables), take a lease, set up the backend, then follow every lease
//! change until told to stop.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{sleep, sleep_until, Instant};

use crate::backend::udp::{self, UdpNetwork};
use crate::backend::vxlan::{self, VxlanDevice, VxlanNetwork};
use crate::backend::{hostgw, HostGwNetwork};
use crate::config::{BackendConf, Flags, NetConf};
use crate::error::chain;
use crate::etcd_access::{connect_options, failure_hint, EtcdAccess};
use crate::firewall::Firewall;
use crate::ipnet::{Ipv4Net, Ipv6Net};
use crate::lease::{event_from_watch, Lease, LeaseAttrs, LeaseError, LeaseEvent, OwnLease, Registry, Subnets, LEASE_TTL};
use crate::netlink::{Families, Kernel};
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
    let conf = NetConf::parse_with(&text, flags.disable_ipv6)
        .with_context(|| format!("invalid network config at {}/config", flags.etcd_prefix))?;
    if flags.disable_ipv6 && NetConf::parse(&text).is_ok_and(|c| c.ipv6.is_some()) {
        tracing::warn!("the network config enables IPv6; ignored (--disable-ipv6): publishing IPv4 leases only");
    }
    let need = Families { ipv4: conf.ipv4.is_some(), ipv6: conf.ipv6.is_some() };
    let mut underlay = kernel.underlay(&flags.ifaces, need).await.context("inspect interfaces")?.with_context(|| {
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

    remove_other_backends(&kernel, &conf, underlay.index).await.context("remove state of other backends")?;
    let (mut net, mtu) = match conf.backend {
        BackendConf::Vxlan { vni, port, direct_routing, mtu, gbp, learning } => {
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
            let v4 = match conf.ipv4 {
                None => None,
                Some(pool) => {
                    let m = vxlan::device_mtu(underlay.mtu, mtu).map_err(anyhow::Error::msg).context("vxlan MTU")?;
                    overlay_mtu = overlay_mtu.min(m);
                    let dev = dev(vxlan::device_name(vni), public_ip.into(), m);
                    let (net, _) = VxlanNetwork::open(kernel.clone(), &dev, pool.network, direct_routing)
                        .await
                        .with_context(|| format!("set up vxlan device `{}`", dev.name))?;
                    Some(net)
                }
            };
            let v6 = match (conf.ipv6, public_ipv6) {
                (Some(pool), Some(local)) => {
                    let m = vxlan::device_mtu_v6(underlay.mtu, mtu).map_err(anyhow::Error::msg).context("vxlan MTU (IPv6)")?;
                    overlay_mtu = overlay_mtu.min(m);
                    let dev = dev(vxlan::device_name_v6(vni), local.into(), m);
                    let (net, _) = VxlanNetwork::open(kernel.clone(), &dev, pool.network, direct_routing)
                        .await
                        .with_context(|| format!("set up vxlan device `{}`", dev.name))?;
                    Some(net)
                }
                _ => None,
            };
            (Network::Vxlan { v4, v6, vni, port }, overlay_mtu)
        }
        BackendConf::HostGw => {
            let v4 = conf.ipv4.map(|p| HostGwNetwork::new(kernel.clone(), underlay.index, p.network));
            let v6 = conf.ipv6.map(|p| HostGwNetwork::new(kernel.clone(), underlay.index, p.network));
            (Network::HostGw { v4, v6 }, hostgw::overlay_mtu(underlay.mtu))
        }
        BackendConf::Udp { port } => {
            let pool = conf.require_ipv4()?;
            let mtu = udp::overlay_mtu(underlay.mtu).context("underlay MTU too small for udp")?;
            let net = UdpNetwork::open(kernel.clone(), pool.network, pool.subnet_len, port, mtu)?;
            (Network::Udp(net), mtu)
        }
    };
    let mut attrs = net.lease_attrs(public_ip, public_ipv6);
    // Kernel notifications for the backends whose kernel state hangs on the underlay:
    // links, and the routes, neighbours and FDB entries the agent keeps.
    let mut changes = match net {
        Network::Udp(_) => None,
        _ => Some(notify::kernel_changes(true).context("subscribe to kernel notifications")?),
    };

    let previous = previous_subnets(&flags.subnet_file);
    let mut own = acquire(&mut reg, &conf, &attrs, previous).await?;
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
    let mut iptables_at = Instant::now() + fw.resync_every;

    let renew_every = LEASE_TTL - Duration::from_secs(flags.renew_margin_minutes * 60);
    let mut renew_at = Instant::now() + renew_every;
    let mut reconcile_at = Instant::now() + safety_period(0);
    // the last reconcile a notification asked for: in a fight with someone who keeps
    // undoing the agent's entries, one every RECONCILE_EVERY is enough
    let mut asked_at: Option<Instant> = None;
    // whether `reconcile_at` is an event's (a link change, a divergence), not the period's
    let mut reconcile_asked = false;
    let mut underlay_gone = false;
    let mut backoff = Backoff::new();
    'resync: loop {
        let (leases, malformed, rev) = match reg.snapshot().await {
            Ok(s) => s,
            Err(e) => {
                etcd_warning(&e, reg.tls(), "listing leases failed, retrying");
                reg.refresh().await;
                backoff.wait().await;
                continue;
            }
        };
        for m in malformed {
            tracing::warn!(entry = m, "skipping malformed lease");
        }
        let mine = |l: &Lease| l.subnets == own.lease.subnets && l.attrs.public_ip == public_ip && l.attrs.public_ipv6 == public_ipv6;
        if !leases.iter().any(mine) {
            tracing::warn!(subnet = %own.lease.subnets, "own lease is gone from etcd, registering again");
            own = reacquire(&mut reg, &conf, &attrs, &own).await?;
            continue 'resync;
        }
        net.resync(&leases).await.context("program peers")?;
        net.sync_filter(fw).await;
        if changes.is_some() && !reconcile_asked {
            // the next full check once the safety period for this many peers is over
            reconcile_at = Instant::now() + safety_period(net.peer_count());
        }
        let mut filter_at: Option<Instant> = None;
        tracing::info!(peers = net.peer_count(), revision = rev, "peers programmed, watching for changes");
        release_free_memory();
        let mut stream = match reg.watch(rev).await {
            Ok(s) => s,
            Err(e) => {
                etcd_warning(&e, reg.tls(), "starting the watch failed, retrying");
                backoff.wait().await;
                continue;
            }
        };
        backoff.reset();
        loop {
            tokio::select! {
                msg = stream.message() => {
                    let resp = match msg {
                        Ok(Some(r)) => r,
                        Ok(None) => { tracing::warn!("watch closed by etcd, resyncing"); continue 'resync; }
                        Err(e) => {
                            etcd_warning(&e, reg.tls(), "watch failed, resyncing");
                            backoff.wait().await;
                            continue 'resync;
                        }
                    };
                    if resp.canceled() {
                        tracing::warn!(reason = resp.cancel_reason(), compact_revision = resp.compact_revision(), "watch canceled, resyncing");
                        continue 'resync;
                    }
                    // Every event of every response: dropping all but the first is flannel bug #1726.
                    let before = net.peer_count();
                    for ev in resp.events() {
                        match event_from_watch(reg.prefix(), ev) {
                            None => {}
                            Some(Err(why)) => tracing::warn!(entry = why, "skipping malformed lease"),
                            Some(Ok(LeaseEvent::Removed(s))) if s == own.lease.subnets => {
                                tracing::warn!(subnet = %s, "own lease was removed, registering again");
                                own = reacquire(&mut reg, &conf, &attrs, &own).await?;
                            }
                            Some(Ok(ev)) => net.handle(&ev).await.context("program peer")?,
                        }
                    }
                    let now = net.peer_count();
                    if now.max(before) > crate::backend::LOG_EACH_PEER_UP_TO && now != before {
                        tracing::info!(events = resp.events().len(), peers = now, "peers changed");
                    }
                    filter_at.get_or_insert(Instant::now() + FILTER_BATCH);
                }
                _ = sleep_until(filter_at.unwrap_or_else(Instant::now)), if filter_at.is_some() => {
                    filter_at = None;
                    net.sync_filter(fw).await;
                    release_free_memory();
                }
                _ = sleep_until(renew_at) => {
                    match reg.renew(own.etcd_lease_id).await {
                        Ok(true) => { tracing::info!(subnet = %own.lease.subnets, "lease renewed"); renew_at = Instant::now() + renew_every; }
                        Ok(false) => { own = reacquire(&mut reg, &conf, &attrs, &own).await?; renew_at = Instant::now() + renew_every; }
                        Err(e) => { etcd_warning(&e, reg.tls(), "renewing the lease failed, retrying"); renew_at = Instant::now() + Duration::from_secs(5); }
                    }
                }
                Some(change) = next_change(&mut changes) => match change {
                    Change::Link(link) => {
                        let ours = link.index == underlay.index || link.name.as_deref() == Some(underlay.name.as_str()) || link.name.as_deref().is_some_and(|n| net.is_device(n));
                        if ours {
                            tracing::debug!(?link, "link changed, reconciling soon");
                            reconcile_at = reconcile_at.min(Instant::now() + LINK_SETTLE);
                            reconcile_asked = true;
                        }
                    }
                    other if net.diverges(&other) => {
                        let at = asked_at.map_or(Instant::now(), |t| t + RECONCILE_EVERY).max(Instant::now() + LINK_SETTLE);
                        if at < reconcile_at {
                            tracing::debug!(change = ?other, "kernel state moved away from the peers', reconciling soon");
                            reconcile_at = at;
                            asked_at = Some(at);
                            reconcile_asked = true;
                        }
                    }
                    _ => {}
                },
                _ = sleep_until(iptables_at) => {
                    fw.resync_iptables().await;
                    iptables_at = Instant::now() + fw.resync_every;
                }
                _ = sleep_until(reconcile_at) => {
                    reconcile_at = Instant::now() + if changes.is_some() { safety_period(net.peer_count()) } else { RECONCILE_EVERY };
                    reconcile_asked = false;
                    match kernel.underlay(std::slice::from_ref(&underlay.name), need).await {
                        Ok(Some(now)) => {
                            if underlay_gone || now.index != underlay.index {
                                tracing::info!(iface = now.name, ifindex = now.index, "underlay interface is back");
                                underlay_gone = false;
                            }
                            if now.index != underlay.index {
                                net.set_underlay(now.index);
                            }
                            underlay = now;
                        }
                        Ok(None) => {
                            if !underlay_gone {
                                tracing::warn!(iface = underlay.name, "underlay interface is gone, waiting for it to return");
                                underlay_gone = true;
                            }
                            continue;
                        }
                        Err(e) => { tracing::warn!(error = chain(&e), "inspecting interfaces failed"); continue; }
                    }
                    fw.check_vxlan_filter().await;
                    // a recreated vxlan device that got another MAC, or one not yet published
                    let changed = net.reconcile().await || net.lease_attrs(public_ip, public_ipv6) != own.lease.attrs;
                    if changed {
                        attrs = net.lease_attrs(public_ip, public_ipv6);
                        match reg.republish(&own, &attrs).await {
                            Ok(()) => {
                                tracing::info!(subnet = %own.lease.subnets, macs = net.macs(), "published the new VtepMAC");
                                own.lease.attrs = attrs.clone();
                            }
                            Err(e) => etcd_warning(&e, reg.tls(), "publishing the new VtepMAC failed, retrying at the next reconcile"),
                        }
                    }
                }
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

/// The backend chosen by the network config, with one instance per enabled family where
/// the backend has both; each arm only forwards to its module.
enum Network {
    Vxlan { v4: Option<VxlanNetwork<Kernel, Ipv4Net>>, v6: Option<VxlanNetwork<Kernel, Ipv6Net>>, vni: u32, port: u16 },
    HostGw { v4: Option<HostGwNetwork<Kernel, Ipv4Net>>, v6: Option<HostGwNetwork<Kernel, Ipv6Net>> },
    Udp(UdpNetwork),
}

impl Network {
    /// The lease value this host publishes (vxlan: with its devices' MACs).
    fn lease_attrs(&self, public_ip: Ipv4Addr, public_ipv6: Option<Ipv6Addr>) -> LeaseAttrs {
        match self {
            Network::Vxlan { v4, v6, vni, .. } => {
                let mac = v4.as_ref().and_then(|n| n.mac());
                let mac6 = v6.as_ref().and_then(|n| n.mac());
                vxlan::lease_attrs_for(public_ip, public_ipv6, *vni, mac.as_ref(), mac6.as_ref())
            }
            Network::HostGw { .. } => hostgw::lease_attrs_for(public_ip, public_ipv6),
            Network::Udp(_) => udp::lease_attrs(public_ip),
        }
    }

    /// The vxlan devices' MACs, for logs.
    fn macs(&self) -> String {
        match self {
            Network::Vxlan { v4, v6, .. } => {
                let names = v4.iter().map(|n| (n.device_name(), n.mac())).chain(v6.iter().map(|n| (n.device_name(), n.mac())));
                names.map(|(d, m)| format!("{d} {}", m.map(|m| vxlan::format_mac(&m)).unwrap_or_default())).collect::<Vec<_>>().join(", ")
            }
            _ => String::new(),
        }
    }

    async fn set_local_subnets(&mut self, own: Subnets) -> anyhow::Result<()> {
        match self {
            Network::Vxlan { v4, v6, .. } => {
                if let (Some(n), Some(s)) = (v4, own.v4) {
                    n.set_local_subnet(s).await?;
                }
                if let (Some(n), Some(s)) = (v6, own.v6) {
                    n.set_local_subnet(s).await?;
                }
            }
            Network::HostGw { v4, v6 } => {
                if let (Some(n), Some(s)) = (v4, own.v4) {
                    n.set_local_subnet(s);
                }
                if let (Some(n), Some(s)) = (v6, own.v6) {
                    n.set_local_subnet(s);
                }
            }
            Network::Udp(n) => n.set_local_subnet(own.v4.context("the udp backend needs an IPv4 subnet")?).await?,
        }
        Ok(())
    }

    async fn resync(&mut self, leases: &[Lease]) -> anyhow::Result<()> {
        match self {
            Network::Vxlan { v4, v6, .. } => {
                if let Some(n) = v4 {
                    n.resync(leases).await?;
                }
                if let Some(n) = v6 {
                    n.resync(leases).await?;
                }
            }
            Network::HostGw { v4, v6 } => {
                if let Some(n) = v4 {
                    n.resync(leases).await?;
                }
                if let Some(n) = v6 {
                    n.resync(leases).await?;
                }
            }
            Network::Udp(n) => n.resync(leases),
        }
        Ok(())
    }

    async fn handle(&mut self, ev: &LeaseEvent) -> anyhow::Result<()> {
        match self {
            Network::Vxlan { v4, v6, .. } => {
                if let Some(n) = v4 {
                    n.handle(ev).await?;
                }
                if let Some(n) = v6 {
                    n.handle(ev).await?;
                }
            }
            Network::HostGw { v4, v6 } => {
                if let Some(n) = v4 {
                    n.handle(ev).await?;
                }
                if let Some(n) = v6 {
                    n.handle(ev).await?;
                }
            }
            Network::Udp(n) => n.handle(ev),
        }
        Ok(())
    }

    /// Restores kernel state the kernel or someone else removed, each family on its own
    /// (a failure is logged and retried at the next reconcile). True when a vxlan device's
    /// MAC changed (to be republished).
    async fn reconcile(&mut self) -> bool {
        fn failed(family: &str, e: impl std::fmt::Display) {
            tracing::warn!(error = %e, family, "reconciling kernel state failed, retrying");
        }
        let mut changed = false;
        match self {
            Network::Vxlan { v4, v6, .. } => {
                if let Some(n) = v4 {
                    match n.reconcile().await {
                        Ok(mac) => changed |= mac.is_some(),
                        Err(e) => failed("IPv4", crate::error::chain(&e)),
                    }
                }
                if let Some(n) = v6 {
                    match n.reconcile().await {
                        Ok(mac) => changed |= mac.is_some(),
                        Err(e) => failed("IPv6", crate::error::chain(&e)),
                    }
                }
            }
            Network::HostGw { v4, v6 } => {
                if let Some(n) = v4 {
                    if let Err(e) = n.reconcile().await {
                        failed("IPv4", crate::error::chain(&e));
                    }
                }
                if let Some(n) = v6 {
                    if let Err(e) = n.reconcile().await {
                        failed("IPv6", crate::error::chain(&e));
                    }
                }
            }
            Network::Udp(_) => {}
        }
        changed
    }

    fn set_underlay(&mut self, index: u32) {
        match self {
            Network::Vxlan { v4, v6, .. } => {
                v4.iter_mut().for_each(|n| n.set_underlay(index));
                v6.iter_mut().for_each(|n| n.set_underlay(index));
            }
            Network::HostGw { v4, v6 } => {
                v4.iter_mut().for_each(|n| n.set_underlay(index));
                v6.iter_mut().for_each(|n| n.set_underlay(index));
            }
            Network::Udp(_) => {}
        }
    }

    /// vxlan: admits VXLAN datagrams only from the current peers, per family.
    async fn sync_filter(&self, fw: &mut Firewall) {
        if let Network::Vxlan { v4, v6, port, .. } = self {
            let peers: Option<BTreeSet<Ipv4Addr>> = v4.as_ref().map(|n| n.peer_ips());
            let peers6: Option<BTreeSet<Ipv6Addr>> = v6.as_ref().map(|n| n.peer_ips());
            fw.set_vxlan_peers(*port, peers.as_ref(), peers6.as_ref()).await;
        }
    }

    /// Whether a kernel notification moved the backend's kernel state away from what its
    /// peers want (never true for the agent's own changes).
    fn diverges(&mut self, c: &Change) -> bool {
        match self {
            // both families hear of it (each distrusts what it no longer knows)
            Network::Vxlan { v4, v6, .. } => v4.as_mut().is_some_and(|n| n.diverges(c)) | v6.as_mut().is_some_and(|n| n.diverges(c)),
            Network::HostGw { v4, v6 } => v4.as_ref().is_some_and(|n| n.diverges(c)) || v6.as_ref().is_some_and(|n| n.diverges(c)),
            Network::Udp(_) => false,
        }
    }

    /// Whether `name` is one of the backend's own devices, whose link events matter.
    fn is_device(&self, name: &str) -> bool {
        match self {
            Network::Vxlan { v4, v6, .. } => {
                v4.as_ref().is_some_and(|n| n.device_name() == name) || v6.as_ref().is_some_and(|n| n.device_name() == name)
            }
            _ => false,
        }
    }

    fn peer_count(&self) -> usize {
        match self {
            // hosts, not entries: a dual-stack peer is in both families
            Network::Vxlan { v4, v6, .. } => v4.as_ref().map_or(0, |n| n.peers().count()).max(v6.as_ref().map_or(0, |n| n.peers().count())),
            Network::HostGw { v4, v6 } => v4.as_ref().map_or(0, |n| n.peer_count()).max(v6.as_ref().map_or(0, |n| n.peer_count())),
            Network::Udp(n) => n.peer_count(),
        }
    }
}

/// After a backend switch: removes what another backend (or another family set) left
/// on this host — vxlan devices other than the ones in use (`flannel.N` without IPv4,
/// `flannel-v6.N` without IPv6), a leftover `flannel0`, host-gw peer routes of each
/// enabled family. (`ip link del flannel.1`, `ip route del SUBNET via IP dev eth0`)
async fn remove_other_backends(kernel: &Kernel, conf: &crate::config::NetConf, underlay: u32) -> Result<(), crate::netlink::NlError> {
    use crate::config::BackendConf;
    let mut keep = Vec::new();
    match conf.backend {
        BackendConf::Vxlan { vni, .. } => {
            if conf.ipv4.is_some() {
                keep.push(vxlan::device_name(vni));
            }
            if conf.ipv6.is_some() {
                keep.push(vxlan::device_name_v6(vni));
            }
        }
        BackendConf::Udp { .. } => keep.push(udp::DEVICE.to_string()),
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
    let keeps_gateway_routes = matches!(conf.backend, BackendConf::HostGw | BackendConf::Vxlan { direct_routing: true, .. });
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
