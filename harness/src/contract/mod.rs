//! flannel's contract, as the harness reads it (DESIGN.md), written without the agent's
//! code: the etcd schema, the subnet file, and the kernel state each backend must leave on
//! every host. A schema mistake on either side therefore shows up as a failure.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::Value;

pub use crate::input::kinds::{Backend, Check};
use crate::input::names::{Ipv4Net, Ipv6Net};
use crate::lab::nl::{Address, FdbEntry, Neighbour, Route};
use crate::lab::UNDERLAY_IF;
pub use crate::probe::HostState;

pub mod v6;
pub mod wire;
pub use v6::check_kernel6;

pub const DEFAULT_PREFIX: &str = "/coreos.com/network";
pub const VXLAN_DEFAULT_PORT: u16 = 8472;
pub const UDP_DEFAULT_PORT: u16 = 8285;
pub const VXLAN_OVERHEAD: u32 = 50;
/// vxlan over an IPv6 underlay: the outer IPv6 header is 20 bytes longer.
pub const VXLAN6_OVERHEAD: u32 = 70;
pub const UDP_OVERHEAD: u32 = 28;
pub const UDP_DEVICE: &str = "flannel0";

/// What the harness wrote to `<prefix>/config`, read back the way flannel reads it
/// (keys case-insensitive, defaults applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConf {
    /// `EnableIPv4` (default true): the IPv4 pod network is in use.
    pub enable_ipv4: bool,
    /// Meaningless when `enable_ipv4` is false.
    pub network: Ipv4Net,
    pub subnet_len: u8,
    pub backend: Backend,
    pub vni: u32,
    pub port: u16,
    /// vxlan `DirectRouting`: peers on a directly connected network get an underlay route.
    pub direct_routing: bool,
    /// vxlan `MTU`: the device's MTU instead of underlay − 50.
    pub mtu: Option<u32>,
    /// vxlan `Learning`: the kernel learns FDB entries (flannel still installs its own).
    pub learning: bool,
    /// vxlan `GBP`: the device carries Group Based Policy marks.
    pub gbp: bool,
    /// `EnableIPv6` with `IPv6Network` and `IPv6SubnetLen` (default 64).
    pub ipv6: Option<Net6>,
}

/// The IPv6 pod network of a dual-stack or IPv6-only net-conf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net6 {
    pub network: Ipv6Net,
    pub subnet_len: u8,
}

fn get<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

impl NetConf {
    pub fn from_json(v: &Value) -> Result<NetConf, String> {
        let enable_ipv4 = get(v, "EnableIPv4").and_then(|b| b.as_bool()).unwrap_or(true);
        let ipv6 = match get(v, "EnableIPv6").and_then(|b| b.as_bool()).unwrap_or(false) {
            false => None,
            true => {
                let network: Ipv6Net = get(v, "IPv6Network")
                    .and_then(|n| n.as_str())
                    .ok_or("net-conf sets EnableIPv6 but has no string `IPv6Network`")?
                    .parse()?;
                let subnet_len = get(v, "IPv6SubnetLen").and_then(|n| n.as_u64()).unwrap_or(64) as u8;
                Some(Net6 { network, subnet_len })
            }
        };
        if !enable_ipv4 && ipv6.is_none() {
            return Err("net-conf enables neither IPv4 nor IPv6".into());
        }
        let network: Ipv4Net = match get(v, "Network").and_then(|n| n.as_str()) {
            Some(n) => n.parse()?,
            None if !enable_ipv4 => Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).expect("valid"),
            None => return Err("net-conf has no string `Network`".into()),
        };
        let subnet_len = match get(v, "SubnetLen").and_then(|n| n.as_u64()) {
            Some(n) => n as u8,
            None if network.prefix() <= 22 => 24,
            None => network.prefix() + 2,
        };
        let backend_v = get(v, "Backend");
        let ty = backend_v.and_then(|b| get(b, "Type")).and_then(|t| t.as_str()).unwrap_or("udp").to_ascii_lowercase();
        let backend = Backend::parse(&ty).ok_or_else(|| format!("the lab cannot judge backend `{ty}` yet"))?;
        let vni = backend_v.and_then(|b| get(b, "VNI")).and_then(|n| n.as_u64()).unwrap_or(1) as u32;
        let port = match backend_v.and_then(|b| get(b, "Port")).and_then(|n| n.as_u64()) {
            Some(p) if p != 0 => p as u16,
            _ if backend == Backend::Udp => UDP_DEFAULT_PORT,
            _ => VXLAN_DEFAULT_PORT,
        };
        let flag = |name: &str| backend_v.and_then(|b| get(b, name)).and_then(|n| n.as_bool()).unwrap_or(false);
        let vxlan = backend == Backend::Vxlan;
        let mtu = backend_v.and_then(|b| get(b, "MTU")).and_then(|n| n.as_u64()).filter(|m| vxlan && *m != 0).map(|m| m as u32);
        Ok(NetConf {
            enable_ipv4,
            network,
            subnet_len,
            backend,
            vni,
            port,
            direct_routing: vxlan && flag("DirectRouting"),
            mtu,
            learning: vxlan && flag("Learning"),
            gbp: vxlan && flag("GBP"),
            ipv6,
        })
    }

    /// The IPv6 twin of [`NetConf::route_device`]: `flannel-v6.<VNI>` for vxlan.
    pub fn route_device6(&self) -> String {
        match self.backend {
            Backend::Vxlan => format!("flannel-v6.{}", self.vni),
            _ => UNDERLAY_IF.to_string(),
        }
    }

    /// The MTU of the IPv4 overlay device (vxlan's `MTU` option wins when given).
    pub fn device_mtu(&self, underlay_mtu: u32) -> u32 {
        self.mtu.unwrap_or(underlay_mtu - self.overhead())
    }

    /// The MTU of the IPv6 overlay device: vxlan over IPv6 costs 70 bytes.
    pub fn device_mtu6(&self, underlay_mtu: u32) -> u32 {
        match self.backend {
            Backend::Vxlan => self.mtu.unwrap_or(underlay_mtu - VXLAN6_OVERHEAD),
            _ => self.device_mtu(underlay_mtu),
        }
    }

    /// The device peer routes go through: `flannel.<VNI>` for vxlan, the underlay for host-gw.
    pub fn route_device(&self) -> String {
        match self.backend {
            Backend::Vxlan => format!("flannel.{}", self.vni),
            Backend::HostGw => UNDERLAY_IF.to_string(),
            Backend::Udp => UDP_DEVICE.to_string(),
        }
    }

    /// What the backend costs per packet, in bytes.
    pub fn overhead(&self) -> u32 {
        match self.backend {
            Backend::Vxlan => VXLAN_OVERHEAD,
            Backend::HostGw => 0,
            Backend::Udp => UDP_OVERHEAD,
        }
    }

    /// The FLANNEL_MTU values the contract accepts: [`NetConf::overlay_mtu`], and with IPv6
    /// on under vxlan also upstream flanneld's underlay − 50 (its `MTU()` ignores the IPv6
    /// device, so pods' IPv6 packets of the last 20 bytes meet "packet too big" at the node;
    /// the `should` case dual-stack-pod-mtu judges that).
    pub fn accepted_pod_mtus(&self, underlay_mtu: u32) -> Vec<u32> {
        let mut v = vec![self.overlay_mtu(underlay_mtu)];
        if self.ipv6.is_some() && self.backend == Backend::Vxlan {
            v.push(self.device_mtu(underlay_mtu));
        }
        v.dedup();
        v
    }

    /// The pod MTU (FLANNEL_MTU) for an underlay MTU: the smallest overlay device MTU of
    /// the families in use, so that a pod's packets fit every tunnel it may take.
    pub fn overlay_mtu(&self, underlay_mtu: u32) -> u32 {
        let v4 = self.enable_ipv4.then(|| self.device_mtu(underlay_mtu));
        let v6 = self.ipv6.map(|_| self.device_mtu6(underlay_mtu));
        v4.into_iter().chain(v6).min().unwrap_or(underlay_mtu)
    }
}

/// One lease as found in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    /// `0.0.0.0/0` in an IPv6-only lease.
    pub subnet: Ipv4Net,
    /// `0.0.0.0` in an IPv6-only lease.
    pub public_ip: Ipv4Addr,
    pub backend_type: Option<String>,
    pub vtep_mac: Option<String>,
    /// The IPv6 half of a dual-stack or IPv6-only lease (`…&fd00:10:244:1::-64`).
    pub subnet6: Option<Ipv6Net>,
    /// `PublicIPv6`
    pub public_ip6: Option<Ipv6Addr>,
    /// `BackendV6Data.VtepMAC`
    pub vtep_mac6: Option<String>,
}

/// Reads `<prefix>/subnets/A.B.C.D-LEN` (or `A.B.C.D-LEN&V6ADDR-LEN6`, `0.0.0.0-0&…` when
/// IPv6-only) with its JSON value.
pub fn parse_lease(prefix: &str, key: &str, value: &[u8]) -> Result<LeaseView, String> {
    let tail = key
        .strip_prefix(prefix)
        .and_then(|k| k.strip_prefix("/subnets/"))
        .ok_or_else(|| format!("`{key}` is not under {prefix}/subnets/"))?;
    let (v4, v6) = match tail.split_once('&') {
        Some((a, b)) => (a, Some(b)),
        None => (tail, None),
    };
    let subnet: Ipv4Net = v4.replacen('-', "/", 1).parse().map_err(|e| format!("key `{key}`: {e}"))?;
    let subnet6: Option<Ipv6Net> = match v6 {
        None => None,
        Some(b) => {
            let (addr, len) = b.rsplit_once('-').ok_or_else(|| format!("key `{key}`: `{b}` is not ADDR-LEN"))?;
            Some(format!("{addr}/{len}").parse().map_err(|e| format!("key `{key}`: {e}"))?)
        }
    };
    let v: Value = serde_json::from_slice(value).map_err(|e| format!("value of `{key}` is not JSON: {e}"))?;
    let public_ip = v
        .get("PublicIP")
        .and_then(|p| p.as_str())
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("value of `{key}` has no valid `PublicIP`"))?;
    let public_ip6 = match v.get("PublicIPv6") {
        None | Some(Value::Null) => None,
        Some(p) => {
            Some(p.as_str().and_then(|p| p.parse().ok()).ok_or_else(|| format!("value of `{key}` has an invalid `PublicIPv6` {p}"))?)
        }
    };
    let backend_type = v.get("BackendType").and_then(|t| t.as_str()).map(str::to_string);
    let mac_of = |data: &str| v.get(data).and_then(|d| d.get("VtepMAC")).and_then(|m| m.as_str()).map(|m| m.to_ascii_lowercase());
    Ok(LeaseView {
        subnet,
        public_ip,
        backend_type,
        vtep_mac: mac_of("BackendData"),
        subnet6,
        public_ip6,
        vtep_mac6: mac_of("BackendV6Data"),
    })
}

/// The subnet file, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetEnv {
    pub network: Option<Ipv4Net>,
    /// `FLANNEL_SUBNET`: the host's first address with the subnet's length.
    pub subnet_ip: Option<(Ipv4Addr, u8)>,
    /// `FLANNEL_IPV6_NETWORK`
    pub network6: Option<Ipv6Net>,
    /// `FLANNEL_IPV6_SUBNET`: the host's first IPv6 address with the subnet's length.
    pub subnet6_ip: Option<(Ipv6Addr, u8)>,
    pub mtu: Option<u32>,
    pub ipmasq: Option<bool>,
}

impl SubnetEnv {
    pub fn parse(text: &str) -> SubnetEnv {
        let mut env = SubnetEnv { network: None, subnet_ip: None, network6: None, subnet6_ip: None, mtu: None, ipmasq: None };
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else { continue };
            let v = v.trim();
            match k.trim() {
                "FLANNEL_NETWORK" => env.network = v.parse().ok(),
                "FLANNEL_SUBNET" => {
                    env.subnet_ip = v.split_once('/').and_then(|(ip, len)| Some((ip.parse().ok()?, len.parse().ok()?)));
                }
                "FLANNEL_IPV6_NETWORK" => env.network6 = v.parse().ok(),
                "FLANNEL_IPV6_SUBNET" => {
                    env.subnet6_ip = v.split_once('/').and_then(|(ip, len)| Some((ip.parse().ok()?, len.parse().ok()?)));
                }
                "FLANNEL_MTU" => env.mtu = v.parse().ok(),
                "FLANNEL_IPMASQ" => env.ipmasq = v.parse().ok(),
                _ => {}
            }
        }
        env
    }

    /// The subnet the file names (network address + length).
    pub fn subnet(&self) -> Option<Ipv4Net> {
        self.subnet_ip.and_then(|(ip, len)| Ipv4Net::new(ip, len))
    }

    /// What flannel's CNI plugin reads from this file.
    pub fn cni_info(&self) -> crate::lab::cni::SubnetInfo {
        crate::lab::cni::SubnetInfo {
            network: self.network,
            subnet: self.subnet(),
            network6: self.network6,
            subnet6: self.subnet6(),
            mtu: self.mtu,
            ipmasq: self.ipmasq,
        }
    }

    /// The IPv6 subnet the file names.
    pub fn subnet6(&self) -> Option<Ipv6Net> {
        self.subnet6_ip.and_then(|(ip, len)| Ipv6Net::new(ip, len))
    }
}

/// One unmet expectation, phrased for a person: which check, about which host (or `etcd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check: Check,
    pub host: String,
    pub what: String,
}

impl Finding {
    pub fn new(check: Check, host: impl Into<String>, what: impl Into<String>) -> Finding {
        Finding { check, host: host.into(), what: what.into() }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}: {}", self.check, self.host, self.what)
    }
}

/// A host as the lease checks know it: name, IPv4 underlay address (its identity in the
/// maps below) and IPv6 underlay address on a dual-stack underlay.
pub type HostAddrs = (String, Ipv4Addr, Option<Ipv6Addr>);

/// Checks the leases in etcd: one per host, keyed by its PublicIP (an IPv6-only lease by
/// its PublicIPv6), distinct subnets inside the network(s). Returns the leases by the
/// host's IPv4 underlay address.
pub fn check_leases(
    conf: &NetConf,
    hosts: &[HostAddrs],
    leases: &[Result<LeaseView, String>],
    out: &mut Vec<Finding>,
) -> BTreeMap<Ipv4Addr, LeaseView> {
    let mut by_ip: BTreeMap<Ipv4Addr, LeaseView> = BTreeMap::new();
    let mut subnets6: BTreeMap<Ipv6Net, Ipv4Addr> = BTreeMap::new();
    for l in leases.iter().flatten() {
        if conf.enable_ipv4 && (!conf.network.contains_net(&l.subnet) || l.subnet.prefix() != conf.subnet_len) {
            out.push(Finding::new(
                Check::Lease,
                "etcd",
                format!("lease {} is not a /{} inside {}", l.subnet, conf.subnet_len, conf.network),
            ));
        }
        // an IPv6-only lease names its host by PublicIPv6 alone
        let id = match (l.public_ip.is_unspecified(), l.public_ip6) {
            (true, Some(ip6)) => hosts.iter().find(|h| h.2 == Some(ip6)).map_or(l.public_ip, |h| h.1),
            _ => l.public_ip,
        };
        if let (Some(net6), Some(s6)) = (conf.ipv6, l.subnet6) {
            if !net6.network.contains_net(&s6) || s6.prefix() != net6.subnet_len {
                out.push(Finding::new(Check::Lease, "etcd", format!("lease {s6} is not a /{} inside {}", net6.subnet_len, net6.network)));
            }
            if let Some(other) = subnets6.insert(s6, id) {
                out.push(Finding::new(Check::Lease, "etcd", format!("IPv6 subnet {s6} is leased twice: to {other} and {id}")));
            }
        }
        if let Some(prev) = by_ip.insert(id, l.clone()) {
            out.push(Finding::new(Check::Lease, "etcd", format!("two leases for {id}: {} and {}", prev.subnet, l.subnet)));
        }
    }
    for (name, ip, ip6) in hosts {
        match by_ip.get(ip) {
            None if !conf.enable_ipv4 => out.push(Finding::new(
                Check::Lease,
                name,
                format!(
                    "no lease with PublicIPv6 {} in etcd",
                    ip6.map(|a| a.to_string()).unwrap_or_else(|| "(none: the underlay has no IPv6)".into())
                ),
            )),
            None => out.push(Finding::new(Check::Lease, name, format!("no lease with PublicIP {ip} in etcd"))),
            Some(l) if l.backend_type.as_deref() != conf.backend.lease_type() => out.push(Finding::new(
                Check::Lease,
                name,
                format!(
                    "lease {} has BackendType {:?}, expected {:?} for {}",
                    l.subnet,
                    l.backend_type,
                    conf.backend.lease_type(),
                    conf.backend
                ),
            )),
            Some(l) => {
                if conf.enable_ipv4 && conf.backend == Backend::Vxlan && l.vtep_mac.is_none() {
                    out.push(Finding::new(Check::Lease, name, format!("lease {} has no BackendData.VtepMAC", l.subnet)));
                }
                // the IPv6 half is judged on its own, whatever the IPv4 half showed
                if let Some(net6) = conf.ipv6 {
                    check_lease6(conf, net6, name, *ip6, l, out);
                }
            }
        }
    }
    by_ip
}

/// The IPv6 half of a host's lease when the net-conf enables IPv6.
fn check_lease6(conf: &NetConf, net6: Net6, host: &str, ip6: Option<Ipv6Addr>, l: &LeaseView, out: &mut Vec<Finding>) {
    let mut bad = |what: String| out.push(Finding::new(Check::Lease, host, what));
    let Some(s6) = l.subnet6 else {
        bad(format!(
            "lease {} carries no IPv6 subnet (its key has no `&ADDR-LEN` part), although the net-conf sets EnableIPv6 with {}: \
             the implementation looks IPv4-only",
            l.subnet, net6.network
        ));
        return;
    };
    if l.public_ip6 != ip6 || ip6.is_none() {
        bad(format!(
            "lease {s6} has PublicIPv6 {:?}, expected {}",
            l.public_ip6.map(|a| a.to_string()),
            ip6.map(|a| a.to_string())
                .unwrap_or_else(|| "an IPv6 underlay address (the topology has none: give its segments a cidr6)".into())
        ));
    }
    if conf.backend == Backend::Vxlan && l.vtep_mac6.is_none() {
        bad(format!("lease {s6} has no BackendV6Data.VtepMAC"));
    }
}

/// Checks one host's subnet file against its lease and the agent's `--ip-masq`.
pub fn check_subnet_file(
    conf: &NetConf,
    ip_masq: bool,
    host: &str,
    underlay_mtu: u32,
    lease: Option<&LeaseView>,
    text: Option<&str>,
    out: &mut Vec<Finding>,
) {
    let Some(text) = text else {
        out.push(Finding::new(Check::SubnetFile, host, "subnet file not written"));
        return;
    };
    let env = SubnetEnv::parse(text);
    let mut bad = |what: String| out.push(Finding::new(Check::SubnetFile, host, what));
    if !conf.enable_ipv4 {
        if env.network.is_some() || env.subnet_ip.is_some() {
            bad(format!(
                "subnet file names an IPv4 network ({:?}, {:?}) although the net-conf sets EnableIPv4 false",
                env.network, env.subnet_ip
            ));
        }
    } else if env.network != Some(conf.network) {
        bad(format!("subnet file FLANNEL_NETWORK is {:?}, expected {}", env.network.map(|n| n.to_string()), conf.network));
    }
    if let Some(l) = lease.filter(|_| conf.enable_ipv4) {
        let want = (l.subnet.nth(1), l.subnet.prefix());
        if env.subnet_ip != Some(want) {
            bad(format!("subnet file FLANNEL_SUBNET is {:?}, expected {}/{}", env.subnet_ip, want.0, want.1));
        }
    }
    if let Some(net6) = conf.ipv6 {
        if env.network6 != Some(net6.network) {
            bad(format!("subnet file FLANNEL_IPV6_NETWORK is {:?}, expected {}", env.network6.map(|n| n.to_string()), net6.network));
        }
        if let Some(s6) = lease.and_then(|l| l.subnet6) {
            let want = (s6.nth(1), s6.prefix());
            if env.subnet6_ip != Some(want) {
                bad(format!(
                    "subnet file FLANNEL_IPV6_SUBNET is {:?}, expected {}/{}",
                    env.subnet6_ip.map(|(a, l)| format!("{a}/{l}")),
                    want.0,
                    want.1
                ));
            }
        }
    }
    let mtu = conf.overlay_mtu(underlay_mtu);
    if !env.mtu.is_some_and(|m| conf.accepted_pod_mtus(underlay_mtu).contains(&m)) {
        let why = match (conf.mtu, conf.ipv6.is_some() && conf.backend == Backend::Vxlan) {
            (Some(m), _) => format!("Backend.MTU {m}"),
            (None, true) => format!(
                "underlay {underlay_mtu} - {VXLAN6_OVERHEAD}: vxlan over IPv6, the smaller of the families; upstream's underlay - 50 is accepted too"
            ),
            (None, false) => format!("underlay {underlay_mtu} - {}", conf.overhead()),
        };
        bad(format!("subnet file FLANNEL_MTU is {:?}, expected {mtu} ({why})", env.mtu));
    }
    if env.ipmasq != Some(ip_masq) {
        bad(format!("subnet file FLANNEL_IPMASQ is {:?}, expected {ip_masq} (--ip-masq={ip_masq})", env.ipmasq));
    }
}

/// Per-host counts of overlay entries, for reports and linear-growth checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Routes through the overlay device (host-gw: through the underlay).
    pub routes: usize,
    pub neighbours: usize,
    pub fdb: usize,
    /// vxlan DirectRouting: `SUBNET via PUBLIC_IP` routes on the underlay.
    pub direct: usize,
    /// The same for IPv6 (dual-stack and IPv6-only net-confs).
    pub routes6: usize,
    pub neighbours6: usize,
    pub fdb6: usize,
    pub direct6: usize,
}

/// Checks the kernel state of one host against the backend's contract.
pub fn check_kernel(
    conf: &NetConf,
    host: &str,
    host_ip: Ipv4Addr,
    underlay_mtu: u32,
    leases: &BTreeMap<Ipv4Addr, LeaseView>,
    state: &HostState,
    out: &mut Vec<Finding>,
) -> Counts {
    if !conf.enable_ipv4 {
        // IPv6-only: the IPv6 checks judge this host
        if conf.backend != Backend::Vxlan {
            stale_vxlan_devices(state, conf.backend, &mut |check, what| out.push(Finding::new(check, host, what)));
        }
        return Counts::default();
    }
    check_pod_mtu_fits(conf, host, state, out);
    match conf.backend {
        Backend::Vxlan => check_vxlan(conf, host, host_ip, underlay_mtu, leases, state, out),
        Backend::HostGw => check_hostgw(conf, host, host_ip, leases, state, out),
        Backend::Udp => check_udp(conf, host, host_ip, underlay_mtu, leases, state, out),
    }
}

/// The subnet file's FLANNEL_MTU against the device pod traffic leaves through, as the
/// kernel has it now (not as the contract expects it: each may be right on its own and
/// still not fit each other): pods given a larger MTU than the device send packets it
/// cannot carry.
fn check_pod_mtu_fits(conf: &NetConf, host: &str, state: &HostState, out: &mut Vec<Finding>) {
    let Some(mtu) = state.subnet_file.as_deref().and_then(|t| SubnetEnv::parse(t).mtu) else { return };
    let dev = conf.route_device();
    if let Some(link) = state.links.iter().find(|l| l.name == dev).filter(|l| mtu > l.mtu) {
        let what =
            format!("subnet file FLANNEL_MTU is {mtu}, above the MTU of `{dev}` ({}): pods would send packets it cannot carry", link.mtu);
        out.push(Finding::new(Check::SubnetFile, host, what));
    }
}

/// udp: TUN `flannel0` at underlay − 28 with the subnet's `.0/32`, exactly one route (the
/// whole network) through it, and no per-peer kernel state anywhere.
fn check_udp(
    conf: &NetConf,
    host: &str,
    host_ip: Ipv4Addr,
    underlay_mtu: u32,
    leases: &BTreeMap<Ipv4Addr, LeaseView>,
    state: &HostState,
    out: &mut Vec<Finding>,
) -> Counts {
    let mut bad = |check: Check, what: String| out.push(Finding::new(check, host, what));
    stale_vxlan_devices(state, conf.backend, &mut bad);
    let Some(dev) = state.links.iter().find(|l| l.name == UDP_DEVICE) else {
        bad(Check::Device, format!("no `{UDP_DEVICE}` device"));
        return Counts::default();
    };
    if dev.kind.as_deref() != Some("tun") {
        bad(Check::Device, format!("`{UDP_DEVICE}` is a {:?} device, expected tun", dev.kind));
    }
    let want_mtu = conf.device_mtu(underlay_mtu);
    if dev.mtu != want_mtu {
        bad(Check::Device, format!("`{UDP_DEVICE}` has MTU {}, expected {want_mtu}", dev.mtu));
    }
    if !dev.up {
        bad(Check::Device, format!("`{UDP_DEVICE}` is down"));
    }
    if let Some(own) = leases.get(&host_ip) {
        let addrs: Vec<&Address> = state.addresses.iter().filter(|a| a.ifindex == dev.index).collect();
        if !addrs.iter().any(|a| a.addr == own.subnet.addr() && a.net.prefix() == 32) {
            bad(
                Check::Device,
                format!(
                    "`{UDP_DEVICE}` lacks {}/32 (has {:?})",
                    own.subnet.addr(),
                    addrs.iter().map(|a| format!("{}/{}", a.addr, a.net.prefix())).collect::<Vec<_>>()
                ),
            );
        }
    }
    let routes: Vec<&Route> = state.routes.iter().filter(|r| r.oif == Some(dev.index)).collect();
    let want = vec![format!("{} (no gateway)", conf.network)];
    let have: Vec<String> = routes.iter().map(|r| route_key(r)).collect();
    compare(&mut |w| bad(Check::Routes, w), &format!("routes through {UDP_DEVICE}"), "", &want, &have);
    let stray: Vec<String> = state
        .routes
        .iter()
        .filter(|r| r.oif != Some(dev.index) && conf.network.contains_net(&r.dst) && r.dst != conf.network && r.gateway.is_some())
        .map(|r| format!("{} via {:?}", r.dst, r.gateway))
        .collect();
    if !stray.is_empty() {
        bad(Check::Routes, format!("per-peer routes outside {UDP_DEVICE}: {}", stray.join(", ")));
    }
    Counts { routes: routes.len(), ..Counts::default() }
}

/// host-gw: one route `SUBNET via PUBLIC_IP dev eth0` per peer whose PublicIP is on a
/// directly connected network (the kernel refuses the others), none for the rest, and no
/// flannel vxlan device.
fn check_hostgw(
    conf: &NetConf,
    host: &str,
    host_ip: Ipv4Addr,
    leases: &BTreeMap<Ipv4Addr, LeaseView>,
    state: &HostState,
    out: &mut Vec<Finding>,
) -> Counts {
    let mut bad = |check: Check, what: String| out.push(Finding::new(check, host, what));
    let Some(eth) = state.links.iter().find(|l| l.name == UNDERLAY_IF) else {
        bad(Check::Device, format!("no `{UNDERLAY_IF}`"));
        return Counts::default();
    };
    stale_vxlan_devices(state, conf.backend, &mut bad);
    let peers: Vec<&LeaseView> = peers_of(conf, host_ip, leases).filter(|l| !l.public_ip.is_unspecified()).collect();
    let want: Vec<(Ipv4Net, Ipv4Addr)> =
        peers.iter().filter(|p| directly_connected(state, eth.index, p.public_ip)).map(|p| (p.subnet, p.public_ip)).collect();
    let routes: Vec<&Route> = state.routes.iter().filter(|r| r.oif == Some(eth.index) && conf.network.contains_net(&r.dst)).collect();
    let want: Vec<String> = want.iter().map(|(d, g)| format!("{d} via {g}")).collect();
    let have: Vec<String> = routes.iter().map(|r| route_key(r)).collect();
    let unreachable = peers.len() - want.len();
    let note = if unreachable > 0 { format!(" ({unreachable} peers not directly reachable)") } else { String::new() };
    compare(&mut |w| bad(Check::Routes, w), &format!("routes on {UNDERLAY_IF}"), &note, &want, &have);
    Counts { routes: routes.len(), ..Counts::default() }
}

/// Whether `ip` is on a network the interface `ifindex` is directly connected to.
pub fn directly_connected(state: &HostState, ifindex: u32, ip: Ipv4Addr) -> bool {
    state.addresses.iter().any(|a| a.ifindex == ifindex && a.net.contains(ip))
}

/// vxlan: the device, and exactly one route, neighbour and FDB entry per peer lease, and
/// nothing else on the device.
fn check_vxlan(
    conf: &NetConf,
    host: &str,
    host_ip: Ipv4Addr,
    underlay_mtu: u32,
    leases: &BTreeMap<Ipv4Addr, LeaseView>,
    state: &HostState,
    out: &mut Vec<Finding>,
) -> Counts {
    let mut bad = |check: Check, what: String| out.push(Finding::new(check, host, what));
    let dev_name = conf.route_device();
    let Some(dev) = state.links.iter().find(|l| l.name == dev_name) else {
        bad(Check::Device, format!("no `{dev_name}` device"));
        return Counts::default();
    };
    let own = leases.get(&host_ip);
    let all_peers: Vec<&LeaseView> = peers_of(conf, host_ip, leases).filter(|l| !l.public_ip.is_unspecified()).collect();
    // DirectRouting: peers on a directly connected network get an underlay route instead
    let eth = state.links.iter().find(|l| l.name == UNDERLAY_IF).map(|l| l.index);
    let is_direct = |p: &LeaseView| conf.direct_routing && eth.is_some_and(|i| directly_connected(state, i, p.public_ip));
    let (direct, peers): (Vec<&LeaseView>, Vec<&LeaseView>) = all_peers.into_iter().partition(|p| is_direct(p));
    let mut direct_routes = 0;
    if let Some(eth) = eth.filter(|_| conf.direct_routing) {
        let routes: Vec<&Route> = state.routes.iter().filter(|r| r.oif == Some(eth) && conf.network.contains_net(&r.dst)).collect();
        let want: Vec<String> = direct.iter().map(|p| format!("{} via {}", p.subnet, p.public_ip)).collect();
        let have: Vec<String> = routes.iter().map(|r| route_key(r)).collect();
        let note = format!(" (DirectRouting: {} of {} peers directly connected)", direct.len(), direct.len() + peers.len());
        compare(&mut |w| bad(Check::Routes, w), &format!("direct routes on {UNDERLAY_IF}"), &note, &want, &have);
        direct_routes = routes.len();
    }
    let want = VxlanDeviceWant {
        mtu: conf.device_mtu(underlay_mtu),
        mtu_why: String::new(),
        local: Some(host_ip.into()),
        vtep_mac: own.map(|o| o.vtep_mac.as_deref()),
        mac_field: "VtepMAC",
    };
    check_vxlan_device(conf, dev, &want, &mut bad);
    let idx = dev.index;
    // routes: `SUBNET via SUBNET.0 dev flannel.1 onlink`, exactly one per peer
    let routes: Vec<&Route> = state.routes.iter().filter(|r| r.oif == Some(idx)).collect();
    let want: Vec<String> = peers.iter().map(|p| format!("{} via {}", p.subnet, p.subnet.addr())).collect();
    let have: Vec<String> = routes.iter().map(|r| onlink_key(route_key(r), r.onlink)).collect();
    compare(&mut |w| bad(Check::Routes, w), &format!("routes on {dev_name}"), "", &want, &have);
    // neighbours: `SUBNET.0 lladdr VTEPMAC PERMANENT`
    let neigh: Vec<&Neighbour> = state.neighbours.iter().filter(|x| x.ifindex == idx).collect();
    let want: Vec<String> = peers.iter().map(|p| format!("{} lladdr {}", p.subnet.addr(), p.vtep_mac.as_deref().unwrap_or("?"))).collect();
    let have: Vec<String> = neigh.iter().map(|x| neighbour_key(x.ip, x.mac.as_deref(), x.permanent)).collect();
    compare(&mut |w| bad(Check::Neighbours, w), &format!("neighbours on {dev_name}"), "", &want, &have);
    // fdb: `VTEPMAC dst PUBLICIP self permanent`
    // with Learning on, entries the kernel learned from traffic are its own business
    let fdb: Vec<&FdbEntry> = state.fdb.iter().filter(|e| e.ifindex == idx && e.dst.is_some() && (e.permanent || !conf.learning)).collect();
    let want: Vec<String> = peers.iter().map(|p| format!("{} dst {}", p.vtep_mac.as_deref().unwrap_or("?"), p.public_ip)).collect();
    let have: Vec<String> = fdb.iter().map(|e| fdb_key(e)).collect();
    compare(&mut |w| bad(Check::Fdb, w), &format!("FDB entries on {dev_name}"), "", &want, &have);
    // no whole-network route through the device
    if state.routes.iter().any(|r| r.dst == conf.network && r.oif == Some(idx)) {
        bad(Check::Routes, format!("a route for the whole network {} points at {dev_name}", conf.network));
    }
    Counts { routes: routes.len(), neighbours: neigh.len(), fdb: fdb.len(), direct: direct_routes, ..Counts::default() }
}

/// What one family's vxlan device must be besides the net-conf's options: its MTU (and why,
/// when not underlay − 50), its local address, and the MAC its own lease publishes.
pub(crate) struct VxlanDeviceWant<'a> {
    pub mtu: u32,
    pub mtu_why: String,
    pub local: Option<std::net::IpAddr>,
    /// The own lease's VtepMAC, when the host has a lease.
    pub vtep_mac: Option<Option<&'a str>>,
    /// Where the lease publishes it (`VtepMAC`, `BackendV6Data.VtepMAC`).
    pub mac_field: &'static str,
}

/// A vxlan device of either family against the net-conf: MTU, up, VNI, port, learning, GBP,
/// local address, and the MAC its lease publishes.
pub(crate) fn check_vxlan_device(conf: &NetConf, dev: &crate::lab::nl::Link, want: &VxlanDeviceWant, bad: &mut impl FnMut(Check, String)) {
    let dev_name = &dev.name;
    if dev.mtu != want.mtu {
        bad(Check::Device, format!("`{dev_name}` has MTU {}, expected {}{}", dev.mtu, want.mtu, want.mtu_why));
    }
    if !dev.up {
        bad(Check::Device, format!("`{dev_name}` is down"));
    }
    match &dev.vxlan {
        None => bad(Check::Device, format!("`{dev_name}` is not a vxlan device (kind {:?})", dev.kind)),
        Some(v) => {
            if v.vni != Some(conf.vni) {
                bad(Check::Device, format!("`{dev_name}` has VNI {:?}, expected {}", v.vni, conf.vni));
            }
            if v.port != Some(conf.port) {
                bad(Check::Device, format!("`{dev_name}` uses UDP port {:?}, expected {}", v.port, conf.port));
            }
            if v.learning != Some(conf.learning) {
                let w = if conf.learning { "on (Learning: true)" } else { "off" };
                bad(Check::Device, format!("`{dev_name}` has learning {:?}, expected {w}", v.learning));
            }
            if v.gbp != conf.gbp {
                bad(Check::Device, format!("`{dev_name}` has GBP {}, expected {} (Backend.GBP)", v.gbp, conf.gbp));
            }
            let local = v.local.map(std::net::IpAddr::V4).or(v.local6.map(std::net::IpAddr::V6));
            if want.local.is_some() && local != want.local {
                let w = want.local.map(|a| a.to_string()).unwrap_or_default();
                bad(Check::Device, format!("`{dev_name}` has local {:?}, expected {w}", local.map(|a| a.to_string())));
            }
        }
    }
    if let (Some(published), Some(mac)) = (want.vtep_mac, &dev.mac) {
        if published != Some(mac.as_str()) {
            bad(Check::Device, format!("`{dev_name}` MAC {mac} differs from the {} {published:?} in its lease", want.mac_field));
        }
    }
}

/// A route as compared on a vxlan device, flagging one that is not onlink.
pub(crate) fn onlink_key(key: String, onlink: bool) -> String {
    if onlink {
        key
    } else {
        format!("{key} (not onlink)")
    }
}

/// `IP lladdr MAC`, flagging a neighbour that is not permanent.
pub(crate) fn neighbour_key(ip: impl fmt::Display, mac: Option<&str>, permanent: bool) -> String {
    format!("{ip} lladdr {}{}", mac.unwrap_or("?"), if permanent { "" } else { " (not permanent)" })
}

/// `MAC dst IP`, flagging an entry that is not permanent.
pub(crate) fn fdb_key(e: &FdbEntry) -> String {
    format!("{} dst {}{}", e.mac, e.dst.map(|d| d.to_string()).unwrap_or_default(), if e.permanent { "" } else { " (not permanent)" })
}

/// The other hosts' leases of this backend's type (`leases` is keyed by host).
pub fn peers_of<'a>(
    conf: &'a NetConf,
    host_ip: Ipv4Addr,
    leases: &'a BTreeMap<Ipv4Addr, LeaseView>,
) -> impl Iterator<Item = &'a LeaseView> + 'a {
    leases.iter().filter(move |(k, l)| **k != host_ip && l.backend_type.as_deref() == conf.backend.lease_type()).map(|(_, l)| l)
}

/// The neighbours the contract expects on a host's vxlan devices (each peer's gateway, in
/// each family the net-conf enables), to be looked up one by one by a poll at size; none
/// for the other backends, which own no neighbours.
pub fn neighbour_query(conf: &NetConf, host_ip: Ipv4Addr, leases: &BTreeMap<Ipv4Addr, LeaseView>) -> crate::probe::NeighbourQuery {
    let mut q = crate::probe::NeighbourQuery { device: conf.route_device(), device6: conf.route_device6(), ..Default::default() };
    if conf.backend == Backend::Vxlan {
        for p in peers_of(conf, host_ip, leases) {
            if conf.enable_ipv4 && !p.public_ip.is_unspecified() {
                q.v4.push(p.subnet.addr());
            }
            if let Some(s6) = p.subnet6.filter(|_| conf.ipv6.is_some()) {
                q.v6.push(s6.addr());
            }
        }
    }
    q
}

/// A vxlan backend's device left behind under another backend.
fn stale_vxlan_devices(state: &HostState, backend: Backend, bad: &mut impl FnMut(Check, String)) {
    let ours = |n: &str| n.starts_with("flannel.") || n.starts_with("flannel-v6.");
    for l in state.links.iter().filter(|l| l.vxlan.is_some() && ours(&l.name)) {
        bad(Check::StaleState, format!("vxlan device `{}` present under the {backend} backend", l.name));
    }
}

/// `DST via GW` as entries are compared and reported.
fn route_key(r: &Route) -> String {
    match r.gateway {
        Some(g) => format!("{} via {g}", r.dst),
        None => format!("{} (no gateway)", r.dst),
    }
}

/// Compares the entries a host must have with those it has, both written the same way, as
/// multisets: an entry present twice (two routes to one subnet with other metrics) counts
/// as a duplicate. One finding names how many of the wanted ones it has, the missing, the
/// unexpected and the duplicated.
fn compare(bad: &mut impl FnMut(String), what: &str, note: &str, want: &[String], have: &[String]) {
    let mut left: Vec<&String> = have.iter().collect();
    let mut missing = Vec::new();
    for w in want {
        match left.iter().position(|h| *h == w) {
            Some(i) => {
                left.remove(i);
            }
            None => missing.push(w.clone()),
        }
    }
    let (dup, extra): (Vec<String>, Vec<String>) = left.into_iter().cloned().partition(|h| want.contains(h));
    if !missing.is_empty() || !extra.is_empty() || !dup.is_empty() {
        bad(format!(
            "{} of {} {what}{note} (found {}){}{}{}",
            want.len() - missing.len(),
            want.len(),
            have.len(),
            list(" missing", &missing),
            list(" unexpected", &extra),
            list(" duplicated", &dup)
        ));
    }
}

fn list(label: &str, items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!(";{label}: {}", items.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::nl::{Link, VxlanInfo};

    fn conf() -> NetConf {
        NetConf::from_json(&serde_json::json!({"network": "10.244.0.0/16", "backend": {"type": "vxlan"}})).unwrap()
    }

    fn lease(n: u8, mac: &str) -> LeaseView {
        LeaseView {
            subnet: format!("10.244.{n}.0/24").parse().unwrap(),
            public_ip: format!("192.168.99.{n}").parse().unwrap(),
            backend_type: Some("vxlan".into()),
            vtep_mac: Some(mac.into()),
            subnet6: None,
            public_ip6: None,
            vtep_mac6: None,
        }
    }

    fn good_state(peers: &[LeaseView]) -> HostState {
        let dev = Link {
            index: 5,
            name: "flannel.1".into(),
            mtu: 1450,
            up: true,
            kind: Some("vxlan".into()),
            mac: Some("02:00:00:00:00:01".into()),
            controller: None,
            vxlan: Some(VxlanInfo {
                vni: Some(1),
                port: Some(8472),
                local: Some("192.168.99.1".parse().unwrap()),
                local6: None,
                learning: Some(false),
                underlay_index: Some(2),
                gbp: false,
            }),
        };
        HostState {
            links: vec![dev],
            addresses: vec![],
            routes: peers.iter().map(|p| Route { dst: p.subnet, gateway: Some(p.subnet.addr()), oif: Some(5), onlink: true }).collect(),
            neighbours: peers
                .iter()
                .map(|p| Neighbour { ifindex: 5, ip: p.subnet.addr(), mac: p.vtep_mac.clone(), permanent: true })
                .collect(),
            fdb: peers
                .iter()
                .map(|p| FdbEntry { ifindex: 5, mac: p.vtep_mac.clone().unwrap(), dst: Some(p.public_ip.into()), permanent: true })
                .collect(),
            subnet_file: None,
            ..HostState::default()
        }
    }

    /// The underlay `eth0` at ifindex 2.
    pub(super) fn eth0_link() -> Link {
        Link {
            index: 2,
            name: UNDERLAY_IF.into(),
            mtu: 1500,
            up: true,
            kind: Some("veth".into()),
            mac: None,
            controller: None,
            vxlan: None,
        }
    }

    fn leases() -> BTreeMap<Ipv4Addr, LeaseView> {
        [lease(1, "02:00:00:00:00:01"), lease(2, "02:00:00:00:00:02"), lease(3, "02:00:00:00:00:03")]
            .into_iter()
            .map(|l| (l.public_ip, l))
            .collect()
    }

    #[test]
    fn conf_defaults_and_case_insensitive_keys() {
        let c = conf();
        assert_eq!((c.subnet_len, c.vni, c.port, c.route_device()), (24, 1, 8472, "flannel.1".to_string()));
        assert_eq!(c.overlay_mtu(1500), 1450);
    }

    #[test]
    fn exact_state_passes() {
        let l = leases();
        let peers: Vec<LeaseView> = l.values().filter(|x| x.subnet.addr().octets()[2] != 1).cloned().collect();
        let mut out = Vec::new();
        let counts = check_kernel(&conf(), "h1", "192.168.99.1".parse().unwrap(), 1500, &l, &good_state(&peers), &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(counts, Counts { routes: 2, neighbours: 2, fdb: 2, direct: 0, ..Counts::default() });
    }

    /// h1 (192.168.99.1/24 on eth0) with DirectRouting: h2 is on its segment, h3 (10.0.0.3)
    /// across a router.
    fn direct_routing_case() -> (NetConf, BTreeMap<Ipv4Addr, LeaseView>, HostState) {
        let c = NetConf::from_json(&serde_json::json!({"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "DirectRouting": true}}))
            .unwrap();
        let mut far = lease(3, "02:00:00:00:00:03");
        far.public_ip = "10.0.0.3".parse().unwrap();
        let near = lease(2, "02:00:00:00:00:02");
        let l: BTreeMap<Ipv4Addr, LeaseView> =
            [lease(1, "02:00:00:00:00:01"), near.clone(), far.clone()].into_iter().map(|l| (l.public_ip, l)).collect();
        let mut st = good_state(&[far]);
        st.links.push(eth0_link());
        st.addresses.push(Address { ifindex: 2, addr: "192.168.99.1".parse().unwrap(), net: "192.168.99.0/24".parse().unwrap() });
        st.routes.push(Route { dst: near.subnet, gateway: Some(near.public_ip), oif: Some(2), onlink: false });
        (c, l, st)
    }

    #[test]
    fn direct_routing_counts_both_kinds() {
        let (c, l, st) = direct_routing_case();
        let mut out = Vec::new();
        let counts = check_kernel(&c, "h1", "192.168.99.1".parse().unwrap(), 1500, &l, &st, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(counts, Counts { routes: 1, neighbours: 1, fdb: 1, direct: 1, ..Counts::default() });
    }

    #[test]
    fn direct_routing_findings_name_the_missing_kind() {
        // the direct route lost (upstream #1070)
        let (c, l, mut st) = direct_routing_case();
        st.routes.retain(|r| r.oif != Some(2));
        let mut out = Vec::new();
        check_kernel(&c, "h1", "192.168.99.1".parse().unwrap(), 1500, &l, &st, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].check, Check::Routes);
        assert!(out[0].what.contains("0 of 1 direct routes on eth0"), "{}", out[0]);
        // the near peer served over vxlan instead of directly
        let (c, l, mut st) = direct_routing_case();
        st.routes.retain(|r| r.oif != Some(2));
        let near = l.values().find(|p| p.subnet.addr().octets()[2] == 2).unwrap();
        st.routes.push(Route { dst: near.subnet, gateway: Some(near.subnet.addr()), oif: Some(5), onlink: true });
        let mut out = Vec::new();
        check_kernel(&c, "h1", "192.168.99.1".parse().unwrap(), 1500, &l, &st, &mut out);
        let text: Vec<String> = out.iter().map(|f| f.to_string()).collect();
        assert!(text.iter().any(|t| t.contains("unexpected: 10.244.2.0/24 via 10.244.2.0")), "{text:?}");
    }

    #[test]
    fn vxlan_options_are_judged_on_the_device() {
        let l = leases();
        let peers: Vec<LeaseView> = l.values().filter(|x| x.subnet.addr().octets()[2] != 1).cloned().collect();
        let c = NetConf::from_json(
            &serde_json::json!({"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "MTU": 1400, "GBP": true, "Learning": true}}),
        )
        .unwrap();
        assert_eq!(c.overlay_mtu(1500), 1400);
        // a device made without the options: each is named
        let mut out = Vec::new();
        check_kernel(&c, "h1", "192.168.99.1".parse().unwrap(), 1500, &l, &good_state(&peers), &mut out);
        let text: Vec<String> = out.iter().map(|f| f.to_string()).collect();
        assert_eq!(out.len(), 3, "{text:?}");
        assert!(out.iter().all(|f| f.check == Check::Device), "{text:?}");
        assert!(text[0].contains("MTU 1450, expected 1400"), "{text:?}");
        assert!(text.iter().any(|t| t.contains("learning Some(false), expected on")), "{text:?}");
        assert!(text.iter().any(|t| t.contains("GBP false, expected true")), "{text:?}");
        // the device as the options ask: nothing, and learned FDB entries are not counted
        let mut st = good_state(&peers);
        st.links[0].mtu = 1400;
        let v = st.links[0].vxlan.as_mut().unwrap();
        v.learning = Some(true);
        v.gbp = true;
        st.fdb.push(FdbEntry { ifindex: 5, mac: "02:00:00:00:00:77".into(), dst: Some("192.168.99.7".parse().unwrap()), permanent: false });
        let mut out = Vec::new();
        let counts = check_kernel(&c, "h1", "192.168.99.1".parse().unwrap(), 1500, &l, &st, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(counts.fdb, 2);
    }

    #[test]
    fn missing_fdb_entry_is_named() {
        let l = leases();
        let peers: Vec<LeaseView> = l.values().filter(|x| x.subnet.addr().octets()[2] != 1).cloned().collect();
        let mut st = good_state(&peers);
        st.fdb.remove(0);
        let mut out = Vec::new();
        check_kernel(&conf(), "h1", "192.168.99.1".parse().unwrap(), 1500, &l, &st, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].check, Check::Fdb);
        assert_eq!(out[0].to_string(), "[fdb] h1: 1 of 2 FDB entries on flannel.1 (found 1); missing: 02:00:00:00:00:02 dst 192.168.99.2");
    }

    #[test]
    fn duplicate_entries_are_counted() {
        let l = leases();
        let peers: Vec<LeaseView> = l.values().filter(|x| x.subnet.addr().octets()[2] != 1).cloned().collect();
        let mut st = good_state(&peers);
        // the same route twice (another metric): equal as a set, wrong as a count
        st.routes.push(st.routes[0].clone());
        let mut out = Vec::new();
        let counts = check_kernel(&conf(), "h1", "192.168.99.1".parse().unwrap(), 1500, &l, &st, &mut out);
        assert_eq!(counts.routes, 3);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].check, Check::Routes);
        assert!(out[0].what.contains("2 of 2 routes on flannel.1 (found 3); duplicated: 10.244.2.0/24 via 10.244.2.0"), "{}", out[0]);
    }

    #[test]
    fn stale_entries_and_wrong_mtu_are_named() {
        let l = leases();
        let peers: Vec<LeaseView> = l.values().filter(|x| x.subnet.addr().octets()[2] != 1).cloned().collect();
        let mut st = good_state(&peers);
        st.links[0].mtu = 1500;
        st.neighbours.push(Neighbour {
            ifindex: 5,
            ip: "10.244.9.0".parse().unwrap(),
            mac: Some("02:00:00:00:00:09".into()),
            permanent: true,
        });
        let mut out = Vec::new();
        check_kernel(&conf(), "h1", "192.168.99.1".parse().unwrap(), 1500, &l, &st, &mut out);
        let text: Vec<String> = out.iter().map(|f| f.to_string()).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(text[0].contains("MTU 1500, expected 1450"));
        assert!(text[1].contains("2 of 2 neighbours on flannel.1 (found 3); unexpected: 10.244.9.0"), "{text:?}");
    }

    #[test]
    fn leases_and_subnet_file() {
        let c = conf();
        let raw =
            br#"{"PublicIP":"192.168.99.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"2E:74:64:fe:4b:db"}}"#;
        let l = parse_lease(DEFAULT_PREFIX, "/coreos.com/network/subnets/10.244.68.0-24", raw).unwrap();
        assert_eq!(l.subnet.to_string(), "10.244.68.0/24");
        assert_eq!(l.vtep_mac.as_deref(), Some("2e:74:64:fe:4b:db"));
        assert!(parse_lease(DEFAULT_PREFIX, "/coreos.com/network/subnets/junk", raw).is_err());
        let mut out = Vec::new();
        let hosts =
            vec![("h1".to_string(), "192.168.99.1".parse().unwrap(), None), ("h2".to_string(), "192.168.99.2".parse().unwrap(), None)];
        let by_ip = check_leases(&c, &hosts, &[Ok(l.clone())], &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].to_string(), "[lease] h2: no lease with PublicIP 192.168.99.2 in etcd");
        out.clear();
        let file = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.68.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n";
        check_subnet_file(&c, false, "h1", 1500, by_ip.get(&l.public_ip), Some(file), &mut out);
        assert!(out.is_empty(), "{out:?}");
        check_subnet_file(&c, false, "h1", 1500, by_ip.get(&l.public_ip), Some(&file.replace("1450", "1500")), &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].what.contains("FLANNEL_MTU is Some(1500), expected 1450"));
    }
}

#[cfg(test)]
mod hostgw_tests {
    use super::*;
    use crate::lab::nl::Address;

    #[test]
    fn hostgw_expects_routes_only_to_directly_reachable_peers() {
        let conf = NetConf::from_json(&serde_json::json!({"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}})).unwrap();
        assert_eq!((conf.route_device(), conf.overlay_mtu(1500)), ("eth0".to_string(), 1500));
        let lease = |n: u8, ip: &str| LeaseView {
            subnet: format!("10.244.{n}.0/24").parse().unwrap(),
            public_ip: ip.parse().unwrap(),
            backend_type: Some("host-gw".into()),
            vtep_mac: None,
            subnet6: None,
            public_ip6: None,
            vtep_mac6: None,
        };
        let leases: BTreeMap<Ipv4Addr, LeaseView> =
            [lease(1, "192.168.1.1"), lease(2, "192.168.1.2"), lease(3, "192.168.2.3")].into_iter().map(|l| (l.public_ip, l)).collect();
        let eth = super::tests::eth0_link();
        let mut state = HostState {
            links: vec![eth],
            addresses: vec![Address { ifindex: 2, net: "192.168.1.0/24".parse().unwrap(), addr: "192.168.1.1".parse().unwrap() }],
            routes: vec![
                Route { dst: "192.168.1.0/24".parse().unwrap(), gateway: None, oif: Some(2), onlink: false },
                Route { dst: "10.244.2.0/24".parse().unwrap(), gateway: Some("192.168.1.2".parse().unwrap()), oif: Some(2), onlink: false },
            ],
            ..Default::default()
        };
        let mut out = Vec::new();
        let c = check_kernel(&conf, "a", "192.168.1.1".parse().unwrap(), 1500, &leases, &state, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(c.routes, 1);
        state.routes.pop();
        check_kernel(&conf, "a", "192.168.1.1".parse().unwrap(), 1500, &leases, &state, &mut out);
        assert_eq!(
            out[0].to_string(),
            "[routes] a: 0 of 1 routes on eth0 (1 peers not directly reachable) (found 0); missing: 10.244.2.0/24 via 192.168.1.2"
        );
    }
}
