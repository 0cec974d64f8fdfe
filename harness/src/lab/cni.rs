//! Pods wired the way a kubelet wires them under flannel: the CNI `bridge` plugin with
//! `host-local` IPAM, configured from the host's subnet file exactly as flannel's own CNI
//! plugin delegates (`FLANNEL_SUBNET`/`FLANNEL_IPV6_SUBNET` as ranges, routes to the
//! network(s), `mtu` = `FLANNEL_MTU`, `isGateway`, `ipMasq` = !`FLANNEL_IPMASQ`) plus
//! kube-flannel's delegate defaults (`hairpinMode`, `isDefaultGateway`). Debian's
//! `containernetworking-plugins` provides the binaries (`ci/setup.sh` installs them).
//!
//! The plugins run inside the host's namespace (where they attach the pod's veth to the
//! `cni0` the lab set up from the same subnet file, and with `ipMasq` add their iptables
//! chains); each host's IPAM state lives under its own work directory. Everything dies with
//! the run's namespaces; nothing is left on the machine (pods are not deleted through CNI
//! DEL: their namespaces go with the run).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::input::names::{Ipv4Net, Ipv6Net};
use crate::lab::netns::Netns;

/// The bridge pods hang off on every host, as kube-flannel names it.
pub const BRIDGE: &str = "cni0";

/// What flannel's CNI plugin reads from the subnet file (the lab parses the file above this
/// stage): networks, the host's subnets, `FLANNEL_MTU`, `FLANNEL_IPMASQ`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetInfo {
    pub network: Option<Ipv4Net>,
    pub subnet: Option<Ipv4Net>,
    pub network6: Option<Ipv6Net>,
    pub subnet6: Option<Ipv6Net>,
    pub mtu: Option<u32>,
    pub ipmasq: Option<bool>,
}

/// The plugins a pod needs.
pub const PLUGINS: [&str; 2] = ["bridge", "host-local"];
/// How long one plugin call may take (its iptables calls wait on a machine-wide lock).
const PLUGIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);
/// flannel's default network name in kube-flannel's conflist.
const NETWORK_NAME: &str = "cbr0";

/// Where the CNI plugins are: `$FLANNEL_LAB_CNI_PATH`, else Debian's `/usr/lib/cni`, else
/// `/opt/cni/bin`; the first directory that holds every plugin in [`PLUGINS`].
pub fn plugin_dir() -> Option<PathBuf> {
    let given = std::env::var_os("FLANNEL_LAB_CNI_PATH").map(PathBuf::from);
    given
        .into_iter()
        .chain([PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")])
        .find(|d| PLUGINS.iter().all(|p| d.join(p).is_file()))
}

/// The network configuration flannel's CNI plugin hands to `bridge` for this subnet file;
/// None when the file lacks what flannel's plugin requires (it would fail the pod too).
pub fn delegate_conf(env: &SubnetInfo, data_dir: &Path) -> Option<Value> {
    let mut ranges = Vec::new();
    let mut routes = Vec::new();
    if let (Some(sn), Some(nw)) = (env.subnet, env.network) {
        ranges.push(json!([{"subnet": sn.to_string()}]));
        routes.push(json!({"dst": nw.to_string()}));
    }
    if let (Some(sn6), Some(nw6)) = (env.subnet6, env.network6) {
        ranges.push(json!([{"subnet": sn6.to_string()}]));
        routes.push(json!({"dst": nw6.to_string()}));
    }
    if ranges.is_empty() {
        return None;
    }
    Some(json!({
        "cniVersion": "0.3.1",
        "name": NETWORK_NAME,
        "type": "bridge",
        "bridge": BRIDGE,
        "mtu": env.mtu?,
        "ipMasq": !env.ipmasq?,
        "isGateway": true,
        "isDefaultGateway": true,
        "hairpinMode": true,
        "ipam": {"type": "host-local", "dataDir": data_dir, "ranges": ranges, "routes": routes},
    }))
}

/// `CNI_COMMAND=ADD bridge < conf` inside `host` for the pod namespace `pod`; the pod's
/// IPv4 and IPv6 addresses from the plugin's result.
pub fn add(plugins: &Path, host: &Netns, pod: &Netns, conf: &Value) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), String> {
    let bin = plugins.join("bridge");
    let env = [
        ("CNI_COMMAND", "ADD".to_string()),
        ("CNI_CONTAINERID", pod.name().to_string()),
        ("CNI_NETNS", crate::lab::netns::path_of(pod.name()).display().to_string()),
        ("CNI_IFNAME", "eth0".to_string()),
        ("CNI_PATH", plugins.display().to_string()),
    ];
    let stdin = conf.to_string();
    let out = host
        .run(move || {
            use std::io::Write;
            let mut child = std::process::Command::new(&bin)
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .envs(env)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()?;
            child.stdin.take().expect("piped").write_all(stdin.as_bytes())?;
            // the plugin may wait on the machine-wide xtables lock: bounded, then killed
            let deadline = std::time::Instant::now() + PLUGIN_DEADLINE;
            while child.try_wait()?.is_none() {
                if std::time::Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer within {PLUGIN_DEADLINE:?}; killed")));
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            child.wait_with_output()
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("run the CNI bridge plugin: {e}"))?;
    if !out.status.success() {
        // plugins report errors as JSON on stdout
        let msg = String::from_utf8_lossy(&out.stdout);
        return Err(format!("CNI bridge plugin failed ({}): {} {}", out.status, msg.trim(), String::from_utf8_lossy(&out.stderr).trim()));
    }
    parse_result(&out.stdout)
}

/// The first IPv4 and IPv6 address of a CNI result (`ips[].address`, `ADDR/LEN`).
fn parse_result(stdout: &[u8]) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), String> {
    let v: Value =
        serde_json::from_slice(stdout).map_err(|e| format!("CNI result is not JSON ({e}): {}", String::from_utf8_lossy(stdout)))?;
    let addrs: Vec<&str> =
        v.get("ips").and_then(|i| i.as_array()).into_iter().flatten().filter_map(|ip| ip.get("address")?.as_str()).collect();
    let host_part = |a: &str| a.split_once('/').map(|(ip, _)| ip.to_string()).unwrap_or_else(|| a.to_string());
    let v4 = addrs.iter().find_map(|a| host_part(a).parse::<Ipv4Addr>().ok());
    let v6 = addrs.iter().find_map(|a| host_part(a).parse::<Ipv6Addr>().ok());
    if v4.is_none() && v6.is_none() {
        return Err(format!("CNI result names no address: {v}"));
    }
    Ok((v4, v6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delegates_like_flannels_plugin() {
        let env = SubnetInfo {
            network: Some("10.244.0.0/16".parse().unwrap()),
            subnet: Some("10.244.3.0/24".parse().unwrap()),
            network6: Some("fd00:10:244::/56".parse().unwrap()),
            subnet6: Some("fd00:10:244:3::/64".parse().unwrap()),
            mtu: Some(1430),
            ipmasq: Some(false),
        };
        let c = delegate_conf(&env, Path::new("/run/x")).unwrap();
        assert_eq!(c["mtu"], 1430);
        assert_eq!(c["ipMasq"], true, "flannel's plugin masquerades when flanneld does not");
        assert_eq!(c["isGateway"], true);
        assert_eq!(c["ipam"]["ranges"], json!([[{"subnet": "10.244.3.0/24"}], [{"subnet": "fd00:10:244:3::/64"}]]));
        assert_eq!(c["ipam"]["routes"], json!([{"dst": "10.244.0.0/16"}, {"dst": "fd00:10:244::/56"}]));
        let bare = SubnetInfo { network: None, subnet: None, network6: None, subnet6: None, mtu: Some(1450), ipmasq: Some(false) };
        assert!(delegate_conf(&bare, Path::new("/x")).is_none());
    }

    #[test]
    fn reads_addresses_from_the_result() {
        let r = br#"{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.244.3.2/24","gateway":"10.244.3.1"},{"version":"6","address":"fd00:10:244:3::2/64"}]}"#;
        assert_eq!(parse_result(r).unwrap(), (Some("10.244.3.2".parse().unwrap()), Some("fd00:10:244:3::2".parse().unwrap())));
        assert!(parse_result(br#"{"ips":[]}"#).is_err());
    }
}
