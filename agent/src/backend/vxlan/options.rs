//! The vxlan backend's part of the net-conf (`Backend` with `"Type": "vxlan"`), read here
//! rather than in `config`, as flanneld's vxlan backend reads its own.

use crate::config::{BackendSection, ConfigError};

/// The longest interface name Linux accepts.
const IFNAMSIZ_MAX: usize = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `VNI`, default 1.
    pub vni: u32,
    /// `Port`; 0 or absent = the kernel's default, 8472.
    pub port: u16,
    /// `DirectRouting`: peers on a directly connected network get a plain route.
    pub direct_routing: bool,
    /// `MTU`: the device MTU (and FLANNEL_MTU); None = underlay MTU − 50.
    pub mtu: Option<u32>,
    /// `GBP`: the kernel's Group Based Policy extension.
    pub gbp: bool,
    /// `Learning`: kernel learning of source MACs (the agent installs its entries anyway).
    pub learning: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { vni: 1, port: super::DEFAULT_PORT, direct_routing: false, mtu: None, gbp: false, learning: false }
    }
}

impl Options {
    /// Reads the options; `ipv6` (the net-conf enables IPv6) also bounds the VNI, whose
    /// IPv6 device name must fit the kernel's 15 bytes.
    pub fn parse(section: &BackendSection, ipv6: bool) -> Result<Options, ConfigError> {
        section.only(&["VNI", "Port", "GBP", "Learning", "DirectRouting", "MTU", "MacPrefix"])?;
        let direct_routing = section.flag("DirectRouting")?;
        let (gbp, learning) = (section.flag("GBP")?, section.flag("Learning")?);
        let mtu = match section.number("MTU", 0, 65535)? as u32 {
            0 => None,
            m => Some(m),
        };
        if section.get("MacPrefix").is_some_and(|v| v != &serde_json::Value::Bool(false)) {
            return Err(ConfigError::Invalid("`Backend.MacPrefix` is not supported by this version of the reference agent".into()));
        }
        let vni = section.number("VNI", 1, (1 << 24) - 1)? as u32;
        let port = match section.number("Port", 0, 65535)? as u16 {
            0 => super::DEFAULT_PORT,
            p => p,
        };
        if ipv6 && super::device_name_v6(vni).len() > IFNAMSIZ_MAX {
            return Err(ConfigError::Invalid(format!(
                "`Backend.VNI` {vni} makes the IPv6 device name `{}` longer than {IFNAMSIZ_MAX} bytes (at most 9999 with `EnableIPv6`)",
                super::device_name_v6(vni)
            )));
        }
        Ok(Options { vni, port, direct_routing, mtu, gbp, learning })
    }
}
