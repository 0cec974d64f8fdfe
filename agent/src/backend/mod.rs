//! Backends program the kernel for the local lease and for every peer lease, as flannel's
//! backend package does: set up once for the local subnet, then follow lease events.

pub mod hostgw;
pub mod network;
pub mod peers;
pub mod udp;
pub mod vxlan;

pub use hostgw::{HostGwKernel, HostGwNetwork};
pub use vxlan::{Peer, VxlanDevice, VxlanKernel, VxlanNetwork};

pub use peers::{LOG_EACH_PEER_UP_TO, MIN_MTU};

use crate::config::{ConfigError, NetConf};

/// The configured backend with its options, each read by its own backend from the
/// net-conf's `Backend` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendConf {
    Vxlan(vxlan::Options),
    HostGw,
    Udp(udp::Options),
}

impl BackendConf {
    /// The backend `conf` names, its options checked by that backend.
    pub fn from_conf(conf: &NetConf) -> Result<BackendConf, ConfigError> {
        let section = &conf.backend;
        let ipv6 = conf.ipv6.is_some();
        match section.type_name.as_str() {
            "vxlan" => Ok(BackendConf::Vxlan(vxlan::Options::parse(section, ipv6)?)),
            "host-gw" => hostgw::parse_options(section).map(|()| BackendConf::HostGw),
            "udp" => Ok(BackendConf::Udp(udp::Options::parse(section, ipv6)?)),
            other => Err(ConfigError::Invalid(format!("unknown backend type `{other}` (known: vxlan, host-gw, udp)"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(text: &str) -> Result<BackendConf, ConfigError> {
        BackendConf::from_conf(&NetConf::parse(text)?)
    }

    fn vxlan(o: vxlan::Options) -> BackendConf {
        BackendConf::Vxlan(o)
    }

    #[test]
    fn each_backend_reads_its_options_with_flannels_defaults() {
        let d = vxlan::Options::default();
        assert_eq!(backend(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap(), vxlan(d));
        assert_eq!(d, vxlan::Options { vni: 1, port: 8472, direct_routing: false, mtu: None, gbp: false, learning: false });
        assert_eq!(
            backend(r#"{"network":"10.5.0.0/28","backend":{"type":"VXLAN","vni":7}}"#).unwrap(),
            vxlan(vxlan::Options { vni: 7, ..d })
        );
        assert_eq!(backend(r#"{"Network":"10.244.0.0/16"}"#).unwrap(), BackendConf::Udp(udp::Options { port: 8285 }), "no Backend: udp");
        assert_eq!(
            backend(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":9000}}"#).unwrap(),
            BackendConf::Udp(udp::Options { port: 9000 })
        );
        assert_eq!(
            backend(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true,"Port":0}}"#).unwrap(),
            vxlan(vxlan::Options { direct_routing: true, ..d })
        );
        assert_eq!(
            backend(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","MTU":1400,"GBP":true,"Learning":true,"MacPrefix":false}}"#)
                .unwrap(),
            vxlan(vxlan::Options { mtu: Some(1400), gbp: true, learning: true, ..d })
        );
        assert_eq!(backend(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#).unwrap(), BackendConf::HostGw);
        // --disable-ipv6: udp with IPv6 settings the old implementation would not read
        let conf = NetConf::parse_with(r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56"}"#, true).unwrap();
        assert_eq!(BackendConf::from_conf(&conf).unwrap(), BackendConf::Udp(udp::Options { port: 8285 }));
    }

    #[test]
    fn option_errors_name_the_option() {
        let err = |text: &str| backend(text).unwrap_err().to_string();
        let net = |b: &str| format!(r#"{{"Network":"10.244.0.0/16","Backend":{b}}}"#);
        for (b, says) in [
            (r#"{"Type":"geneve"}"#, "unknown backend type `geneve` (known: vxlan, host-gw, udp)"),
            (r#"{"Type":"vxlan","DirectRouting":"yes"}"#, "`Backend.DirectRouting` must be true or false"),
            (r#"{"Type":"vxlan","Bogus":1}"#, "`Backend.Bogus` is not an option of the vxlan backend"),
            (r#"{"Type":"vxlan","MacPrefix":"0E:6A"}"#, "`Backend.MacPrefix` is not supported"),
            (r#"{"Type":"vxlan","MTU":-1}"#, "`Backend.MTU` must be 0..65535"),
            (r#"{"Type":"vxlan","VNI":16777216}"#, "`Backend.VNI` must be 0..16777215"),
            (r#"{"Type":"vxlan","GBP":1}"#, "`Backend.GBP` must be true or false"),
            (r#"{"Type":"host-gw","VNI":1}"#, "`Backend.VNI` is not an option of the host-gw backend"),
            (r#"{"Type":"udp","VNI":1}"#, "`Backend.VNI` is not an option of the udp backend"),
            (r#"{"Type":"udp","Port":65536}"#, "`Backend.Port` must be 0..65535"),
        ] {
            let e = err(&net(b));
            assert!(e.contains(says), "{b}: {e}");
        }
        let dual = |b: &str| format!(r#"{{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{b}}}"#);
        let e = err(&dual(r#"{"Type":"udp"}"#));
        assert!(e.contains("the udp backend is IPv4 only"), "{e}");
        let e = err(r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}"#);
        assert!(e.contains("the udp backend is IPv4 only"), "no Backend means udp: {e}");
        let e = err(&dual(r#"{"Type":"vxlan","VNI":10000}"#));
        assert!(e.contains("flannel-v6.10000") && e.contains("15 bytes"), "{e}");
        assert!(backend(&dual(r#"{"Type":"vxlan","VNI":9999}"#)).is_ok());
        assert!(backend(&net(r#"{"Type":"vxlan","VNI":10000}"#)).is_ok(), "the limit is the IPv6 device's");
    }
}
