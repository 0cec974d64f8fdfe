//! The subnet file (`--subnet-file`): what the CNI plugin reads, written atomically.

use std::io::Write;
use std::path::Path;

use crate::ipnet::Ipv4Net;

pub struct SubnetEnv {
    pub network: Ipv4Net,
    pub subnet: Ipv4Net,
    pub mtu: u32,
    pub ip_masq: bool,
}

impl SubnetEnv {
    pub fn render(&self) -> String {
        format!(
            "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={}/{}\nFLANNEL_MTU={}\nFLANNEL_IPMASQ={}\n",
            self.network,
            self.subnet.nth(1),
            self.subnet.prefix(),
            self.mtu,
            self.ip_masq
        )
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
    let text = std::fs::read_to_string(path).ok()?;
    let value = text.lines().find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))?;
    let (ip, len) = value.trim().split_once('/')?;
    Ipv4Net::new(ip.parse().ok()?, len.parse().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_flannel_format_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/flannel/subnet.env");
        let env =
            SubnetEnv { network: "10.244.0.0/16".parse().unwrap(), subnet: "10.244.68.0/24".parse().unwrap(), mtu: 1450, ip_masq: false };
        env.write(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.68.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
        );
        assert_eq!(previous_subnet(&path), Some("10.244.68.0/24".parse().unwrap()));
        assert_eq!(previous_subnet(&dir.path().join("missing")), None);
    }
}
