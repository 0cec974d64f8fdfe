//! The subnet file (`--subnet-file`): what the CNI plugin reads, written atomically.
//!
//! ```text
//! FLANNEL_NETWORK=10.244.0.0/16            IPv4 enabled
//! FLANNEL_SUBNET=10.244.1.1/24             IPv4 enabled: the subnet's first host address
//! FLANNEL_IPV6_NETWORK=fd00:10:244::/56    IPv6 enabled
//! FLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64  IPv6 enabled
//! FLANNEL_MTU=1430                         the smallest overlay MTU of the enabled families
//! FLANNEL_IPMASQ=false
//! ```

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use crate::ipnet::{Ipv4Net, Ipv6Net};
use crate::subnet_choice::Previous;

pub struct SubnetEnv {
    /// The IPv4 network and this host's subnet in it; None when IPv4 is off.
    pub ipv4: Option<(Ipv4Net, Ipv4Net)>,
    /// The IPv6 network and this host's subnet in it; None when IPv6 is off.
    pub ipv6: Option<(Ipv6Net, Ipv6Net)>,
    pub mtu: u32,
    pub ip_masq: bool,
}

impl SubnetEnv {
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some((network, subnet)) = self.ipv4 {
            let _ = write!(out, "FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={}/{}\n", subnet.nth(1), subnet.prefix());
        }
        if let Some((network, subnet)) = self.ipv6 {
            let _ = write!(out, "FLANNEL_IPV6_NETWORK={network}\nFLANNEL_IPV6_SUBNET={}/{}\n", subnet.nth(1), subnet.prefix());
        }
        let _ = write!(out, "FLANNEL_MTU={}\nFLANNEL_IPMASQ={}\n", self.mtu, self.ip_masq);
        out
    }

    /// Writes to a temporary file beside `path` and renames it over `path`, so a reader
    /// never sees half a file.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(self.render().as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// The subnet recorded by a previous run, if the file exists and names one.
pub fn previous_subnet(path: &Path) -> Option<Ipv4Net> {
    previous_subnets(path).v4
}

/// The IPv4 and IPv6 subnets recorded by a previous run (`FLANNEL_SUBNET`,
/// `FLANNEL_IPV6_SUBNET`), each when the file names it.
pub fn previous_subnets(path: &Path) -> Previous {
    let Ok(text) = std::fs::read_to_string(path) else { return Previous::default() };
    let value = |key: &str| {
        let v = text.lines().find_map(|l| l.strip_prefix(key))?;
        v.trim().split_once('/').map(|(ip, len)| (ip.to_string(), len.to_string()))
    };
    Previous {
        v4: value("FLANNEL_SUBNET=").and_then(|(ip, len)| Ipv4Net::new(ip.parse().ok()?, len.parse().ok()?)),
        v6: value("FLANNEL_IPV6_SUBNET=").and_then(|(ip, len)| Ipv6Net::new(ip.parse().ok()?, len.parse().ok()?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_flannel_format_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/flannel/subnet.env");
        let env = SubnetEnv {
            ipv4: Some(("10.244.0.0/16".parse().unwrap(), "10.244.68.0/24".parse().unwrap())),
            ipv6: None,
            mtu: 1450,
            ip_masq: false,
        };
        env.write(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.68.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
        );
        assert_eq!(previous_subnet(&path), Some("10.244.68.0/24".parse().unwrap()));
        assert_eq!(previous_subnets(&path).v6, None);
        assert_eq!(previous_subnet(&dir.path().join("missing")), None);
    }

    #[test]
    fn dual_stack_adds_the_ipv6_lines_in_flannel_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subnet.env");
        let env = SubnetEnv {
            ipv4: Some(("10.244.0.0/16".parse().unwrap(), "10.244.1.0/24".parse().unwrap())),
            ipv6: Some(("fd00:10:244::/56".parse().unwrap(), "fd00:10:244:1::/64".parse().unwrap())),
            mtu: 1430,
            ip_masq: true,
        };
        env.write(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n\
             FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\n\
             FLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n"
        );
        assert_eq!(
            previous_subnets(&path),
            Previous { v4: Some("10.244.1.0/24".parse().unwrap()), v6: Some("fd00:10:244:1::/64".parse().unwrap()) }
        );
    }

    #[test]
    fn ipv6_only_omits_the_ipv4_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subnet.env");
        let env = SubnetEnv {
            ipv4: None,
            ipv6: Some(("fd00:10:244::/56".parse().unwrap(), "fd00:10:244:a::/64".parse().unwrap())),
            mtu: 1430,
            ip_masq: false,
        };
        env.write(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:a::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"
        );
        assert_eq!(previous_subnets(&path), Previous { v4: None, v6: Some("fd00:10:244:a::/64".parse().unwrap()) });
    }
}
