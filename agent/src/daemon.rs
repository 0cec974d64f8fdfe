//! The agent's life: find the underlay, wait for the network config, take a lease, set up
//! the backend, then follow every lease change until told to stop.

use std::time::Duration;

use anyhow::{bail, Context};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{sleep, sleep_until, Instant};

use crate::backend::udp::{self, UdpNetwork};
use crate::backend::vxlan::{self, VxlanDevice, VxlanNetwork};
use crate::backend::{hostgw, HostGwNetwork};
use crate::config::{BackendConf, Flags, NetConf};
use crate::etcd_access::{chain, connect_options, failure_hint, EtcdAccess};
use crate::firewall::Firewall;
use crate::ipnet::Ipv4Net;
use crate::lease::{event_from_watch, Lease, LeaseAttrs, LeaseError, LeaseEvent, OwnLease, Registry, LEASE_TTL};
use crate::netlink::{Kernel, LinkChange};
use crate::subnet_file::{previous_subnet, SubnetEnv};

/// Retry delays for etcd: doubling from 200 ms up to 10 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(Duration::from_millis(200))
    }
    async fn wait(&mut self) {
        sleep(self.0).await;
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

/// How often the kernel state is checked even when no link event said so.
const RECONCILE_EVERY: Duration = Duration::from_secs(10);
/// Delay between a link event and the reconcile it triggers, so a burst is handled once.
const LINK_SETTLE: Duration = Duration::from_millis(300);

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
    let mut underlay =
        kernel.underlay(&flags.ifaces).await.context("inspect interfaces")?.with_context(|| match flags.ifaces.is_empty() {
            true => "no interface with an IPv4 address carries the default route; pass --iface".to_string(),
            false => format!("none of --iface {:?} exists with an IPv4 address", flags.ifaces),
        })?;
    let public_ip = flags.public_ip.unwrap_or(underlay.addr);
    tracing::info!(iface = underlay.name, %public_ip, mtu = underlay.mtu, "using underlay interface");
    if flags.healthz_port != 0 {
        crate::healthz::serve(flags.healthz_ip, flags.healthz_port).await?;
    }

    let mut reg = connect(flags, etcd).await;
    let text = wait_for_config(&mut reg).await;
    let conf = NetConf::parse(&text).with_context(|| format!("invalid network config at {}/config", flags.etcd_prefix))?;
    kernel.remove_other_backends(&conf, underlay.index).await.context("remove state of other backends")?;
    let (mut net, mut attrs, mtu) = match conf.backend {
        BackendConf::Vxlan { vni, port, direct_routing, mtu, gbp, learning } => {
            let mtu = vxlan::device_mtu(underlay.mtu, mtu).map_err(anyhow::Error::msg).context("vxlan MTU")?;
            let dev = VxlanDevice {
                name: vxlan::device_name(vni),
                vni,
                port,
                local: public_ip,
                underlay_index: underlay.index,
                mtu,
                gbp,
                learning,
                mac: None,
            };
            let (net, mac) = VxlanNetwork::open(kernel.clone(), &dev, conf.network, direct_routing)
                .await
                .with_context(|| format!("set up vxlan device `{}`", dev.name))?;
            (Network::Vxlan(net, vni, port), vxlan::lease_attrs(public_ip, vni, &mac), mtu)
        }
        BackendConf::HostGw => {
            let net = HostGwNetwork::new(kernel.clone(), underlay.index, conf.network);
            (Network::HostGw(net), hostgw::lease_attrs(public_ip), hostgw::overlay_mtu(underlay.mtu))
        }
        BackendConf::Udp { port } => {
            let mtu = udp::overlay_mtu(underlay.mtu).context("underlay MTU too small for udp")?;
            let net = UdpNetwork::open(kernel.clone(), conf.network, conf.subnet_len, port, mtu)?;
            (Network::Udp(net), udp::lease_attrs(public_ip), mtu)
        }
    };
    // Link notifications for the backends whose kernel state hangs on the underlay.
    let mut links = match net {
        Network::Udp(_) => None,
        _ => Some(Kernel::link_changes().context("subscribe to link notifications")?),
    };

    let previous = previous_subnet(&flags.subnet_file);
    let mut own = acquire(&mut reg, &conf, &attrs, previous).await?;
    net.set_local_subnet(own.lease.subnet).await.context("configure the backend for the local subnet")?;
    let env = SubnetEnv { network: conf.network, subnet: own.lease.subnet, mtu, ip_masq: flags.ip_masq };
    env.write(&flags.subnet_file).with_context(|| format!("write subnet file {}", flags.subnet_file.display()))?;
    tracing::info!(subnet = %own.lease.subnet, file = %flags.subnet_file.display(), "lease acquired, subnet file written");
    fw.start(conf.network, own.lease.subnet).await.context("install iptables rules")?;
    let mut iptables_at = Instant::now() + fw.resync_every;

    let renew_every = LEASE_TTL - Duration::from_secs(flags.renew_margin_minutes * 60);
    let mut renew_at = Instant::now() + renew_every;
    let mut reconcile_at = Instant::now() + RECONCILE_EVERY;
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
        if !leases.iter().any(|l| l.subnet == own.lease.subnet && l.attrs.public_ip == public_ip) {
            tracing::warn!(subnet = %own.lease.subnet, "own lease is gone from etcd, registering again");
            own = reacquire(&mut reg, &conf, &attrs, &own).await?;
            continue 'resync;
        }
        net.resync(&leases).await.context("program peers")?;
        net.sync_filter(fw).await;
        tracing::info!(peers = net.peer_count(), revision = rev, "peers programmed, watching for changes");
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
                    for ev in resp.events() {
                        match event_from_watch(reg.prefix(), ev) {
                            None => {}
                            Some(Err(why)) => tracing::warn!(entry = why, "skipping malformed lease"),
                            Some(Ok(LeaseEvent::Removed(s))) if s == own.lease.subnet => {
                                tracing::warn!(subnet = %s, "own lease was removed, registering again");
                                own = reacquire(&mut reg, &conf, &attrs, &own).await?;
                            }
                            Some(Ok(ev)) => net.handle(&ev).await.context("program peer")?,
                        }
                    }
                    net.sync_filter(fw).await;
                }
                _ = sleep_until(renew_at) => {
                    match reg.renew(own.etcd_lease_id).await {
                        Ok(true) => { tracing::info!(subnet = %own.lease.subnet, "lease renewed"); renew_at = Instant::now() + renew_every; }
                        Ok(false) => { own = reacquire(&mut reg, &conf, &attrs, &own).await?; renew_at = Instant::now() + renew_every; }
                        Err(e) => { etcd_warning(&e, reg.tls(), "renewing the lease failed, retrying"); renew_at = Instant::now() + Duration::from_secs(5); }
                    }
                }
                Some(change) = next_link_change(&mut links) => {
                    let ours = change.index == underlay.index || change.name.as_deref() == Some(underlay.name.as_str()) || change.name.as_deref() == net.device_name();
                    if ours {
                        tracing::debug!(?change, "link changed, reconciling soon");
                        reconcile_at = reconcile_at.min(Instant::now() + LINK_SETTLE);
                    }
                }
                _ = sleep_until(iptables_at) => {
                    fw.resync_iptables().await;
                    iptables_at = Instant::now() + fw.resync_every;
                }
                _ = sleep_until(reconcile_at) => {
                    reconcile_at = Instant::now() + RECONCILE_EVERY;
                    match kernel.underlay(std::slice::from_ref(&underlay.name)).await {
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
                    match net.reconcile().await {
                        Ok(None) => {}
                        Ok(Some(mac)) => {
                            let Network::Vxlan(_, vni, _) = &net else { continue };
                            attrs = vxlan::lease_attrs(public_ip, *vni, &mac);
                            match reg.republish(&own, &attrs).await {
                                Ok(()) => {
                                    tracing::info!(subnet = %own.lease.subnet, mac = vxlan::format_mac(&mac), "published the new VtepMAC");
                                    own.lease.attrs = attrs.clone();
                                }
                                Err(e) => etcd_warning(&e, reg.tls(), "publishing the new VtepMAC failed, retrying at the next reconcile"),
                            }
                        }
                        Err(e) => tracing::warn!(error = format!("{e:#}"), "reconciling kernel state failed, retrying"),
                    }
                }
            }
        }
    }
}

/// The next link change, or never when there is no subscription.
async fn next_link_change(links: &mut Option<UnboundedReceiver<LinkChange>>) -> Option<LinkChange> {
    match links {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn acquire(reg: &mut Registry, conf: &NetConf, attrs: &LeaseAttrs, previous: Option<Ipv4Net>) -> anyhow::Result<OwnLease> {
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

/// Takes the lease again after it vanished; the subnet must stay the same, because the
/// device address, the subnet file and every pod on this host depend on it.
async fn reacquire(reg: &mut Registry, conf: &NetConf, attrs: &LeaseAttrs, own: &OwnLease) -> anyhow::Result<OwnLease> {
    let again = acquire(reg, conf, attrs, Some(own.lease.subnet)).await?;
    if again.lease.subnet != own.lease.subnet {
        bail!(
            "lost lease on {} and the subnet was taken by another host (got {} instead); exiting so pods are recreated",
            own.lease.subnet,
            again.lease.subnet
        );
    }
    tracing::info!(subnet = %again.lease.subnet, "lease registered again");
    Ok(again)
}

/// The backend chosen by the network config; each arm only forwards to its module.
enum Network {
    /// The network, its VNI and UDP port.
    Vxlan(VxlanNetwork<Kernel>, u32, u16),
    HostGw(HostGwNetwork<Kernel>),
    Udp(UdpNetwork),
}

impl Network {
    async fn set_local_subnet(&mut self, subnet: Ipv4Net) -> anyhow::Result<()> {
        match self {
            Network::Vxlan(n, _, _) => n.set_local_subnet(subnet).await?,
            Network::HostGw(n) => n.set_local_subnet(subnet),
            Network::Udp(n) => n.set_local_subnet(subnet).await?,
        }
        Ok(())
    }

    async fn resync(&mut self, leases: &[Lease]) -> anyhow::Result<()> {
        match self {
            Network::Vxlan(n, _, _) => n.resync(leases).await?,
            Network::HostGw(n) => n.resync(leases).await?,
            Network::Udp(n) => n.resync(leases),
        }
        Ok(())
    }

    async fn handle(&mut self, ev: &LeaseEvent) -> anyhow::Result<()> {
        match self {
            Network::Vxlan(n, _, _) => n.handle(ev).await?,
            Network::HostGw(n) => n.handle(ev).await?,
            Network::Udp(n) => n.handle(ev),
        }
        Ok(())
    }

    /// Restores kernel state the kernel or someone else removed. For vxlan, returns the
    /// device's MAC when it changed (to be republished).
    async fn reconcile(&mut self) -> anyhow::Result<Option<vxlan::Mac>> {
        match self {
            Network::Vxlan(n, _, _) => Ok(n.reconcile().await?),
            Network::HostGw(n) => {
                n.reconcile().await?;
                Ok(None)
            }
            Network::Udp(_) => Ok(None),
        }
    }

    fn set_underlay(&mut self, index: u32) {
        match self {
            Network::Vxlan(n, _, _) => n.set_underlay(index),
            Network::HostGw(n) => n.set_underlay(index),
            Network::Udp(_) => {}
        }
    }

    /// vxlan: admits VXLAN datagrams only from the current peers.
    async fn sync_filter(&self, fw: &mut Firewall) {
        if let Network::Vxlan(n, _, port) = self {
            fw.set_vxlan_peers(*port, &n.peer_ips()).await;
        }
    }

    /// The backend's own device, whose link events matter.
    fn device_name(&self) -> Option<&str> {
        match self {
            Network::Vxlan(n, _, _) => Some(n.device_name()),
            _ => None,
        }
    }

    fn peer_count(&self) -> usize {
        match self {
            Network::Vxlan(n, _, _) => n.peers().count(),
            Network::HostGw(n) => n.peer_count(),
            Network::Udp(n) => n.peer_count(),
        }
    }
}
