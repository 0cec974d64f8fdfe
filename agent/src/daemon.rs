//! The agent's life: find the underlay, wait for the network config, take a lease, set up
//! the backend, then follow every lease change until told to stop.

use std::time::Duration;

use anyhow::{bail, Context};
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::{sleep, sleep_until, Instant};

use crate::backend::udp::{self, PeerTable};
use crate::backend::vxlan::{lease_attrs, VxlanDevice, VxlanNetwork};
use crate::backend::HostGwNetwork;
use std::sync::{Arc, RwLock};

/// flanneld's name for the udp backend's TUN device.
const UDP_DEVICE: &str = "flannel0";
use crate::config::{BackendConf, Flags, NetConf};
use crate::lease::{event_from_watch, LeaseEvent, OwnLease, Registry, LEASE_TTL};
use crate::lease::{Lease, LeaseEvent as Event};
use crate::netlink::Kernel;
use crate::subnet_file::{previous_subnet, SubnetEnv};

/// VXLAN over IPv4 adds 50 bytes: outer IPv4 (20), UDP (8), VXLAN (8), inner Ethernet (14).
const VXLAN_OVERHEAD: u32 = 50;

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

async fn connect(flags: &Flags) -> Registry {
    let mut backoff = Backoff::new();
    loop {
        match Registry::connect(&flags.etcd_endpoints, &flags.etcd_prefix).await {
            Ok(r) => return r,
            Err(e) => tracing::warn!(error = %anyhow::Error::from(e), endpoints = ?flags.etcd_endpoints, "etcd unreachable, retrying"),
        }
        backoff.wait().await;
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
            Err(e) => tracing::warn!(error = %anyhow::Error::from(e), "reading the network config failed, retrying"),
        }
        backoff.wait().await;
        backoff.0 = backoff.0.min(Duration::from_secs(1));
    }
}

pub async fn run(flags: Flags) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    if !flags.iptables_forward_rules {
        tracing::debug!("iptables forward rules off");
    } else {
        tracing::info!("--iptables-forward-rules: this agent installs no iptables rules");
    }
    let kernel = Kernel::open().context("open netlink socket")?;
    let underlay = kernel.underlay(&flags.ifaces).await.context("inspect interfaces")?.with_context(|| match flags.ifaces.is_empty() {
        true => "no interface with an IPv4 address carries the default route; pass --iface".to_string(),
        false => format!("none of --iface {:?} exists with an IPv4 address", flags.ifaces),
    })?;
    let public_ip = flags.public_ip.unwrap_or(underlay.addr);
    tracing::info!(iface = underlay.name, %public_ip, mtu = underlay.mtu, "using underlay interface");
    if flags.healthz_port != 0 {
        crate::healthz::serve(flags.healthz_ip, flags.healthz_port).await?;
    }

    let mut reg = connect(&flags).await;
    let text = wait_for_config(&mut reg).await;
    let conf = NetConf::parse(&text).with_context(|| format!("invalid network config at {}/config", flags.etcd_prefix))?;
    kernel.remove_other_backends(&conf, underlay.index).await.context("remove state of other backends")?;
    let (mut net, attrs, mtu) = match conf.backend {
        BackendConf::Vxlan { vni, port } => {
            let mtu = underlay.mtu.checked_sub(VXLAN_OVERHEAD).filter(|m| *m >= 576).context("underlay MTU too small for vxlan")?;
            let dev = VxlanDevice { name: format!("flannel.{vni}"), vni, port, local: public_ip, underlay_index: underlay.index, mtu };
            let (net, mac) = VxlanNetwork::open(kernel, &dev).await.with_context(|| format!("set up vxlan device `{}`", dev.name))?;
            (Network::Vxlan(net), lease_attrs(public_ip, vni, &mac), mtu)
        }
        BackendConf::HostGw => {
            let net = HostGwNetwork::new(kernel, underlay.index, conf.network);
            (Network::HostGw(net), crate::backend::hostgw::lease_attrs(public_ip), underlay.mtu)
        }
        BackendConf::Udp { port } => {
            let mtu = underlay.mtu.checked_sub(udp::OVERHEAD).filter(|m| *m >= 576).context("underlay MTU too small for udp")?;
            let queues = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(4);
            let (tun, offload) = crate::tun::open(UDP_DEVICE, queues).with_context(|| format!("open TUN device `{UDP_DEVICE}`"))?;
            tracing::info!(queues, offload, "TUN device `{UDP_DEVICE}` open");
            let net = UdpNetwork {
                kernel,
                table: Arc::new(RwLock::new(PeerTable::new(conf.network, conf.subnet_len))),
                tun: Some(tun),
                port,
                mtu,
                network: conf.network,
            };
            (Network::Udp(net), udp::lease_attrs(public_ip), mtu)
        }
    };

    let previous = previous_subnet(&flags.subnet_file);
    let mut own = acquire(&mut reg, &conf, &attrs, previous).await?;
    net.set_local_subnet(own.lease.subnet).await.context("configure the backend for the local subnet")?;
    let env = SubnetEnv { network: conf.network, subnet: own.lease.subnet, mtu, ip_masq: flags.ip_masq };
    env.write(&flags.subnet_file).with_context(|| format!("write subnet file {}", flags.subnet_file.display()))?;
    tracing::info!(subnet = %own.lease.subnet, file = %flags.subnet_file.display(), "lease acquired, subnet file written");

    let renew_every = LEASE_TTL - Duration::from_secs(flags.renew_margin_minutes * 60);
    let mut renew_at = Instant::now() + renew_every;
    let mut backoff = Backoff::new();
    'resync: loop {
        let (leases, malformed, rev) = match reg.snapshot().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %anyhow::Error::from(e), "listing leases failed, retrying");
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
        tracing::info!(peers = net.peer_count(), revision = rev, "peers programmed, watching for changes");
        let mut stream = match reg.watch(rev).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %anyhow::Error::from(e), "starting the watch failed, retrying");
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
                            tracing::warn!(error = %e, "watch failed, resyncing");
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
                }
                _ = sleep_until(renew_at) => {
                    match reg.renew(own.etcd_lease_id).await {
                        Ok(true) => { tracing::info!(subnet = %own.lease.subnet, "lease renewed"); renew_at = Instant::now() + renew_every; }
                        Ok(false) => { own = reacquire(&mut reg, &conf, &attrs, &own).await?; renew_at = Instant::now() + renew_every; }
                        Err(e) => { tracing::warn!(error = %anyhow::Error::from(e), "renewing the lease failed, retrying"); renew_at = Instant::now() + Duration::from_secs(5); }
                    }
                }
                _ = term.recv() => { tracing::info!("SIGTERM: exiting, kernel state left in place"); return Ok(()); }
                _ = int.recv() => { tracing::info!("SIGINT: exiting, kernel state left in place"); return Ok(()); }
            }
        }
    }
}

async fn acquire(
    reg: &mut Registry,
    conf: &NetConf,
    attrs: &crate::lease::LeaseAttrs,
    previous: Option<crate::ipnet::Ipv4Net>,
) -> anyhow::Result<OwnLease> {
    let mut backoff = Backoff::new();
    loop {
        match reg.acquire(conf, attrs, previous).await {
            Ok(own) => return Ok(own),
            Err(e @ crate::lease::LeaseError::OutOfSubnets { .. }) => return Err(e.into()),
            Err(e) => tracing::warn!(error = %anyhow::Error::from(e), "taking a lease failed, retrying"),
        }
        backoff.wait().await;
    }
}

/// Takes the lease again after it vanished; the subnet must stay the same, because the
/// device address, the subnet file and every pod on this host depend on it.
async fn reacquire(reg: &mut Registry, conf: &NetConf, attrs: &crate::lease::LeaseAttrs, own: &OwnLease) -> anyhow::Result<OwnLease> {
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

/// The backend chosen by the network config.
enum Network {
    Vxlan(VxlanNetwork<Kernel>),
    HostGw(HostGwNetwork<Kernel>),
    Udp(UdpNetwork),
}

/// The udp backend's control side: the TUN device and the peer table its data path reads.
struct UdpNetwork {
    kernel: Kernel,
    table: Arc<RwLock<PeerTable>>,
    /// Queues not yet handed to the data path (it starts once the subnet is known).
    tun: Option<Vec<std::fs::File>>,
    port: u16,
    mtu: u32,
    network: crate::ipnet::Ipv4Net,
}

impl UdpNetwork {
    async fn set_local_subnet(&mut self, subnet: crate::ipnet::Ipv4Net) -> anyhow::Result<()> {
        self.table.write().expect("peer table lock").set_own(subnet);
        self.kernel.configure_tun(UDP_DEVICE, self.mtu, subnet.addr(), self.network).await?;
        // New TUN devices send IPv6 router solicitations; nothing here speaks IPv6.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{UDP_DEVICE}/disable_ipv6"), "1");
        if let Some(queues) = self.tun.take() {
            crate::backend::udp_datapath::start(queues, self.port, subnet.addr(), self.table.clone()).context("start the udp data path")?;
            tracing::info!(port = self.port, device = UDP_DEVICE, "udp data path running");
        }
        Ok(())
    }
}

impl Network {
    async fn set_local_subnet(&mut self, subnet: crate::ipnet::Ipv4Net) -> anyhow::Result<()> {
        match self {
            Network::Vxlan(n) => n.set_local_subnet(subnet).await?,
            Network::HostGw(n) => n.set_local_subnet(subnet),
            Network::Udp(n) => n.set_local_subnet(subnet).await?,
        }
        Ok(())
    }

    async fn resync(&mut self, leases: &[Lease]) -> anyhow::Result<()> {
        match self {
            Network::Vxlan(n) => n.resync(leases).await?,
            Network::HostGw(n) => n.resync(leases).await?,
            Network::Udp(n) => n.table.write().expect("peer table lock").resync(leases),
        }
        Ok(())
    }

    async fn handle(&mut self, ev: &Event) -> anyhow::Result<()> {
        match self {
            Network::Vxlan(n) => n.handle(ev).await?,
            Network::HostGw(n) => n.handle(ev).await?,
            Network::Udp(n) => {
                if n.table.write().expect("peer table lock").apply(ev) {
                    tracing::info!(event = ?ev, "udp peer table updated");
                }
            }
        }
        Ok(())
    }

    fn peer_count(&self) -> usize {
        match self {
            Network::Vxlan(n) => n.peers().count(),
            Network::HostGw(n) => n.peer_count(),
            Network::Udp(n) => n.table.read().expect("peer table lock").len(),
        }
    }
}
