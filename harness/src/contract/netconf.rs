//! The net-conf the harness wrote to `<prefix>/config`, read back the way flannel reads it,
//! and each backend's fixed numbers (ports, overheads, device names).

use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::Value;

pub use crate::input::kinds::Backend;
use crate::input::names::{Family, Ipv4Net, Ipv6Net, Net};
use crate::lab::UNDERLAY_IF;

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
    pub ipv6: Option<Pool<Ipv6Addr>>,
}

/// One family's pod network and the length of the subnets leased from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool<A: Family> {
    pub network: Net<A>,
    pub subnet_len: u8,
}

impl<A: Family> Pool<A> {
    /// The highest subnet of the pool not in `used` (looking at the top 65536 only).
    pub fn highest_free(&self, used: &[Net<A>]) -> Option<Net<A>> {
        let count = 1u128 << u32::from(self.subnet_len - self.network.prefix()).min(64);
        (1..count).rev().take(1 << 16).filter_map(|k| self.network.subnet_at(self.subnet_len, k)).find(|s| !used.contains(s))
    }
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
                Some(Pool { network, subnet_len })
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

    /// The IPv4 pool (meaningless when `enable_ipv4` is false).
    pub fn ipv4(&self) -> Pool<Ipv4Addr> {
        Pool { network: self.network, subnet_len: self.subnet_len }
    }

    /// The device IPv6 peer routes go through: `flannel-v6.<VNI>` for vxlan.
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
