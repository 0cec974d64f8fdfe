//! The subnet file: parsed, and checked against the host's lease and the net-conf.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::finding::Finding;
use super::lease::LeaseView;
use super::netconf::{NetConf, VXLAN6_OVERHEAD};
use crate::input::kinds::{Backend, Check};
use crate::input::names::{Ipv4Net, Ipv6Net};

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
