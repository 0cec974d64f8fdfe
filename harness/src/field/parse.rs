//! Parsers for what operators paste: `ip -d link show`, `ip route`, `ip -6 route`,
//! `ip neigh`, `bridge fdb` (each plain or `-j` JSON), `etcdctl get --prefix` (plain or
//! `-w json`), `kubectl get nodes -o json`, the net-conf (the file, or the
//! `kube-flannel-cfg` ConfigMap as `kubectl get cm -o json`). Every parser skips what it
//! does not understand and says where (file:line), so a partial paste still gives what it
//! can.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::input::names::{Family, Net};

/// Something in the input the parsers could not use, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based; 0 for the file as a whole.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => write!(f, "{}: {}", self.file.display(), self.message),
            n => write!(f, "{}:{n}: {}", self.file.display(), self.message),
        }
    }
}

/// Collects problems for one file.
pub struct Problems<'a> {
    pub file: &'a Path,
    pub out: &'a mut Vec<Problem>,
}

impl Problems<'_> {
    pub fn at(&mut self, line: usize, message: impl Into<String>) {
        self.out.push(Problem { file: self.file.to_path_buf(), line, message: message.into() });
    }
}

/// One interface of `ip -d link show`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkLine {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub up: bool,
    pub kind: Option<String>,
    pub mac: Option<String>,
    pub vxlan: Option<VxlanLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VxlanLine {
    pub vni: Option<u32>,
    pub local: Option<IpAddr>,
    /// The underlay device (`dev eth0`).
    pub dev: Option<String>,
    pub port: Option<u16>,
    pub learning: Option<bool>,
    pub gbp: bool,
}

/// One route of `ip route` / `ip -6 route` (either family).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteLine {
    /// None for `default`.
    pub dst: Option<(IpAddr, u8)>,
    pub gateway: Option<IpAddr>,
    pub dev: Option<String>,
    pub onlink: bool,
    pub by_kernel: bool,
    /// `src` (the kernel's prefix routes name the interface's address).
    pub src: Option<IpAddr>,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighLine {
    pub ip: IpAddr,
    pub dev: String,
    pub mac: Option<String>,
    pub permanent: bool,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbLine {
    pub mac: String,
    pub dev: String,
    pub dst: Option<IpAddr>,
    pub permanent: bool,
    pub line: usize,
}

/// Whether a paste is the `-j` JSON form.
fn is_json(text: &str) -> bool {
    matches!(text.trim_start().chars().next(), Some('[') | Some('{'))
}

fn json_array(text: &str, p: &mut Problems) -> Vec<Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(a)) => a,
        Ok(_) => {
            p.at(1, "expected a JSON array (the `-j` output)");
            Vec::new()
        }
        Err(e) => {
            p.at(e.line(), format!("not valid JSON: {e}"));
            Vec::new()
        }
    }
}

fn mac_ok(s: &str) -> bool {
    crate::lab::nl::parse_mac(s).is_some()
}

/// `ip -d link show` (or `ip -d -j link show`).
pub fn links(text: &str, p: &mut Problems) -> Vec<LinkLine> {
    if is_json(text) {
        return json_array(text, p)
            .iter()
            .filter_map(|l| {
                let name = l.get("ifname")?.as_str()?.to_string();
                let flags: Vec<&str> =
                    l.get("flags").and_then(Value::as_array).map(|f| f.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
                let info = l.get("linkinfo");
                let kind = info.and_then(|i| i.get("info_kind")).and_then(Value::as_str).map(str::to_string);
                let data = info.and_then(|i| i.get("info_data"));
                let vxlan = (kind.as_deref() == Some("vxlan")).then(|| VxlanLine {
                    vni: data.and_then(|d| d.get("id")).and_then(Value::as_u64).map(|v| v as u32),
                    local: data.and_then(|d| d.get("local").or(d.get("local6"))).and_then(Value::as_str).and_then(|s| s.parse().ok()),
                    dev: data.and_then(|d| d.get("link")).and_then(Value::as_str).map(str::to_string),
                    port: data.and_then(|d| d.get("port")).and_then(Value::as_u64).map(|v| v as u16),
                    learning: data.and_then(|d| d.get("learning")).and_then(Value::as_bool),
                    gbp: data.and_then(|d| d.get("gbp")).is_some_and(|g| g.as_bool() != Some(false)),
                });
                Some(LinkLine {
                    index: l.get("ifindex").and_then(Value::as_u64).unwrap_or(0) as u32,
                    name,
                    mtu: l.get("mtu").and_then(Value::as_u64).unwrap_or(0) as u32,
                    up: flags.contains(&"UP"),
                    kind,
                    mac: l.get("address").and_then(Value::as_str).filter(|m| mac_ok(m)).map(str::to_ascii_lowercase),
                    vxlan,
                })
            })
            .collect();
    }
    let mut out: Vec<LinkLine> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') && !line.starts_with('\t') {
            // `5: flannel.1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 qdisc …`
            let mut parts = line.splitn(3, ": ");
            let (Some(idx), Some(name), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
                p.at(n, format!("not an interface line: `{line}`"));
                continue;
            };
            let Ok(index) = idx.trim().parse::<u32>() else {
                p.at(n, format!("not an interface index: `{idx}`"));
                continue;
            };
            let name = name.split('@').next().unwrap_or(name).to_string();
            let flags = rest.strip_prefix('<').and_then(|r| r.split_once('>')).map(|(f, _)| f).unwrap_or("");
            let words: Vec<&str> = rest.split_whitespace().collect();
            let mtu = words.windows(2).find(|w| w[0] == "mtu").and_then(|w| w[1].parse().ok()).unwrap_or_else(|| {
                p.at(n, format!("`{name}` has no mtu"));
                0
            });
            out.push(LinkLine { index, name, mtu, up: flags.split(',').any(|f| f == "UP"), ..Default::default() });
            continue;
        }
        let Some(cur) = out.last_mut() else {
            p.at(n, "a detail line before any interface line");
            continue;
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            Some(w) if w.starts_with("link/") => cur.mac = words.get(1).filter(|m| mac_ok(m)).map(|m| m.to_ascii_lowercase()),
            Some("vxlan") => {
                let val = |k: &str| words.windows(2).find(|w| w[0] == k).map(|w| w[1]);
                cur.kind = Some("vxlan".into());
                cur.vxlan = Some(VxlanLine {
                    vni: val("id").and_then(|v| v.parse().ok()),
                    local: val("local").and_then(|v| v.parse().ok()),
                    dev: val("dev").map(str::to_string),
                    port: val("dstport").and_then(|v| v.parse().ok()),
                    learning: Some(!words.contains(&"nolearning")),
                    gbp: words.contains(&"gbp"),
                });
            }
            Some(k @ ("veth" | "bridge" | "tun" | "dummy" | "macvlan" | "ipip" | "wireguard")) if cur.kind.is_none() => {
                cur.kind = Some(k.to_string())
            }
            _ => {}
        }
    }
    out
}

fn addr_len(s: &str) -> Option<(IpAddr, u8)> {
    match s.split_once('/') {
        Some((a, l)) => Some((a.parse().ok()?, l.parse().ok()?)),
        None => {
            let a: IpAddr = s.parse().ok()?;
            Some((a, if a.is_ipv4() { 32 } else { 128 }))
        }
    }
}

/// `ip route` or `ip -6 route` (or their `-j` forms). `default` routes and route types
/// the contract does not judge (`unreachable`, `local`, …) are skipped silently.
pub fn routes(text: &str, p: &mut Problems) -> Vec<RouteLine> {
    if is_json(text) {
        return json_array(text, p)
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let dst = r.get("dst")?.as_str()?;
                if r.get("type").and_then(Value::as_str).is_some_and(|t| t != "unicast") {
                    return None;
                }
                let flags: Vec<&str> =
                    r.get("flags").and_then(Value::as_array).map(|f| f.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
                Some(RouteLine {
                    dst: if dst == "default" { None } else { addr_len(dst) },
                    gateway: r.get("gateway").and_then(Value::as_str).and_then(|g| g.parse().ok()),
                    dev: r.get("dev").and_then(Value::as_str).map(str::to_string),
                    onlink: flags.contains(&"onlink"),
                    by_kernel: r.get("protocol").and_then(Value::as_str) == Some("kernel"),
                    src: r.get("prefsrc").and_then(Value::as_str).and_then(|s| s.parse().ok()),
                    line: i + 1,
                })
            })
            .collect();
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(first) = words.first().copied() else { continue };
        if matches!(first, "unreachable" | "blackhole" | "prohibit" | "local" | "broadcast" | "anycast" | "multicast" | "throw" | "nexthop")
        {
            continue;
        }
        let dst = match first {
            "default" => None,
            d => match addr_len(d) {
                Some(a) => Some(a),
                None => {
                    p.at(n, format!("not a route: `{line}`"));
                    continue;
                }
            },
        };
        let val = |k: &str| words.windows(2).find(|w| w[0] == k).map(|w| w[1]);
        out.push(RouteLine {
            dst,
            gateway: val("via").and_then(|g| g.trim_start_matches("inet6 ").parse().ok()),
            dev: val("dev").map(str::to_string),
            onlink: words.contains(&"onlink"),
            by_kernel: val("proto") == Some("kernel"),
            src: val("src").and_then(|s| s.parse().ok()),
            line: n,
        });
    }
    out
}

/// `ip neigh` (or `ip -j neigh`).
pub fn neighbours(text: &str, p: &mut Problems) -> Vec<NeighLine> {
    if is_json(text) {
        return json_array(text, p)
            .iter()
            .enumerate()
            .filter_map(|(i, x)| {
                let states: Vec<&str> =
                    x.get("state").and_then(Value::as_array).map(|f| f.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
                Some(NeighLine {
                    ip: x.get("dst")?.as_str()?.parse().ok()?,
                    dev: x.get("dev")?.as_str()?.to_string(),
                    mac: x.get("lladdr").and_then(Value::as_str).map(str::to_ascii_lowercase),
                    permanent: states.contains(&"PERMANENT"),
                    line: i + 1,
                })
            })
            .collect();
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(first) = words.first() else { continue };
        let val = |k: &str| words.windows(2).find(|w| w[0] == k).map(|w| w[1]);
        let (Ok(ip), Some(dev)) = (first.parse::<IpAddr>(), val("dev")) else {
            p.at(n, format!("not a neighbour: `{line}`"));
            continue;
        };
        out.push(NeighLine {
            ip,
            dev: dev.to_string(),
            mac: val("lladdr").map(str::to_ascii_lowercase),
            permanent: words.last() == Some(&"PERMANENT"),
            line: n,
        });
    }
    out
}

/// `bridge fdb` (or `bridge -j fdb`).
pub fn fdb(text: &str, p: &mut Problems) -> Vec<FdbLine> {
    if is_json(text) {
        return json_array(text, p)
            .iter()
            .enumerate()
            .filter_map(|(i, x)| {
                Some(FdbLine {
                    mac: x.get("mac")?.as_str()?.to_ascii_lowercase(),
                    dev: x.get("ifname").or(x.get("dev"))?.as_str()?.to_string(),
                    dst: x.get("dst").and_then(Value::as_str).and_then(|d| d.parse().ok()),
                    permanent: x.get("state").and_then(Value::as_str) == Some("permanent"),
                    line: i + 1,
                })
            })
            .collect();
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(first) = words.first() else { continue };
        let val = |k: &str| words.windows(2).find(|w| w[0] == k).map(|w| w[1]);
        let (true, Some(dev)) = (mac_ok(first), val("dev")) else {
            p.at(n, format!("not an FDB entry: `{line}`"));
            continue;
        };
        out.push(FdbLine {
            mac: first.to_ascii_lowercase(),
            dev: dev.to_string(),
            dst: val("dst").and_then(|d| d.parse().ok()),
            permanent: words.contains(&"permanent"),
            line: n,
        });
    }
    out
}

/// One key of an etcd dump, with where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    /// The etcd lease the key is attached to (the JSON form says), 0 for none.
    pub lease: i64,
    pub line: usize,
}

/// `etcdctl get --prefix P -w json` (keys and values base64) or the plain form (key and
/// value on alternate lines).
pub fn etcd(text: &str, p: &mut Problems) -> Vec<Kv> {
    if is_json(text) {
        let v: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                p.at(e.line(), format!("not valid JSON: {e}"));
                return Vec::new();
            }
        };
        let Some(kvs) = v.get("kvs").and_then(Value::as_array) else {
            if v.get("header").is_none() {
                p.at(1, "no `kvs` list: expected the output of `etcdctl get --prefix PREFIX -w json`");
            }
            return Vec::new();
        };
        let b64 = |s: &str| base64_decode(s);
        let mut out = Vec::new();
        for (i, kv) in kvs.iter().enumerate() {
            let (Some(k), v) = (kv.get("key").and_then(Value::as_str).and_then(b64), kv.get("value").and_then(Value::as_str).and_then(b64))
            else {
                p.at(0, format!("kvs[{i}]: a key that is not base64"));
                continue;
            };
            out.push(Kv {
                key: String::from_utf8_lossy(&k).to_string(),
                value: v.unwrap_or_default(),
                lease: kv.get("lease").and_then(Value::as_i64).unwrap_or(0),
                line: 0,
            });
        }
        return out;
    }
    let lines: Vec<(usize, &str)> = text.lines().enumerate().map(|(i, l)| (i + 1, l)).filter(|(_, l)| !l.trim().is_empty()).collect();
    let mut out = Vec::new();
    let mut it = lines.into_iter().peekable();
    while let Some((n, key)) = it.next() {
        if !key.starts_with('/') {
            p.at(n, format!("expected a key (starting with /), found `{key}`"));
            continue;
        }
        // a key with no value line before the next key: an empty value
        let value = match it.peek() {
            Some((_, v)) if !v.starts_with('/') => it.next().map(|(_, v)| v.as_bytes().to_vec()).unwrap_or_default(),
            _ => Vec::new(),
        };
        out.push(Kv { key: key.trim().to_string(), value, lease: 0, line: n });
    }
    out
}

/// Standard base64, as etcdctl's JSON writes keys and values.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = s.bytes().filter(|b| *b != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= val(*c)? << (18 - 6 * i);
        }
        let n = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    Some(out)
}

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// A node of `kubectl get nodes -o json` with flannel's annotations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KubeNode {
    pub name: String,
    pub internal_ip: Option<IpAddr>,
    pub public_ip: Option<Ipv4Addr>,
    pub public_ipv6: Option<Ipv6Addr>,
    pub backend_type: Option<String>,
    pub backend_data: Option<Value>,
    pub backend_v6_data: Option<Value>,
    pub pod_cidrs: Vec<String>,
}

/// `kubectl get nodes -o json` (a List, or a single Node).
pub fn kube_nodes(text: &str, p: &mut Problems) -> Vec<KubeNode> {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            p.at(e.line(), format!("not valid JSON: {e}"));
            return Vec::new();
        }
    };
    let items: Vec<&Value> = match v.get("items").and_then(Value::as_array) {
        Some(a) => a.iter().collect(),
        None if v.get("kind").and_then(Value::as_str) == Some("Node") => vec![&v],
        None => {
            p.at(1, "expected `kubectl get nodes -o json` (a List of Node objects)");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, n) in items.iter().enumerate() {
        let Some(name) = n.pointer("/metadata/name").and_then(Value::as_str) else {
            p.at(0, format!("items[{i}] has no metadata.name"));
            continue;
        };
        let ann = |k: &str| {
            n.pointer("/metadata/annotations").and_then(|a| a.get(format!("flannel.alpha.coreos.com/{k}"))).and_then(Value::as_str)
        };
        let json_ann = |k: &str| ann(k).and_then(|s| serde_json::from_str::<Value>(s).ok());
        let mut pod_cidrs: Vec<String> = n
            .pointer("/spec/podCIDRs")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        if pod_cidrs.is_empty() {
            pod_cidrs.extend(n.pointer("/spec/podCIDR").and_then(Value::as_str).map(str::to_string));
        }
        let internal_ip = n
            .pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|x| x.get("type").and_then(Value::as_str) == Some("InternalIP")))
            .and_then(|x| x.get("address")?.as_str()?.parse().ok());
        let public_ip = ann("public-ip").and_then(|s| s.parse().ok());
        if ann("public-ip").is_some() && public_ip.is_none() {
            p.at(0, format!("node {name}: annotation public-ip `{}` is not an IPv4 address", ann("public-ip").unwrap_or_default()));
        }
        out.push(KubeNode {
            name: name.to_string(),
            internal_ip,
            public_ip,
            public_ipv6: ann("public-ipv6").and_then(|s| s.parse().ok()),
            backend_type: ann("backend-type").map(str::to_string),
            backend_data: json_ann("backend-data"),
            backend_v6_data: json_ann("backend-v6-data"),
            pod_cidrs,
        });
    }
    out
}

/// The net-conf: the JSON itself, or the ConfigMap (`kubectl get cm kube-flannel-cfg -o
/// json`) holding it under `data["net-conf.json"]`.
pub fn netconf(text: &str, p: &mut Problems) -> Option<Value> {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            p.at(e.line(), format!("not valid JSON: {e}"));
            return None;
        }
    };
    if let Some(inner) = v.pointer("/data/net-conf.json").and_then(Value::as_str) {
        return match serde_json::from_str(inner) {
            Ok(n) => Some(n),
            Err(e) => {
                p.at(0, format!("data[\"net-conf.json\"] is not valid JSON: {e}"));
                None
            }
        };
    }
    Some(v)
}

/// A prefix of family `A` from `(addr, len)`.
pub fn net_of<A: Family>(a: (IpAddr, u8)) -> Option<Net<A>> {
    Net::new(A::from_ip(a.0)?, a.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probs() -> (PathBuf, Vec<Problem>) {
        (PathBuf::from("x.txt"), Vec::new())
    }

    #[test]
    fn plain_and_json_link_dumps_agree() {
        let plain = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\n\
            \x20   link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00 promiscuity 0\n\
            2: eth0@if7: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\n\
            \x20   link/ether 02:f1:ab:00:01:02 brd ff:ff:ff:ff:ff:ff link-netnsid 0 promiscuity 0\n\
            \x20   veth addrgenmode eui64 numtxqueues 1\n\
            5: flannel.1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 qdisc noqueue state UNKNOWN mode DEFAULT group default\n\
            \x20   link/ether 6A:11:22:33:44:55 brd ff:ff:ff:ff:ff:ff promiscuity 0 minmtu 68 maxmtu 65535\n\
            \x20   vxlan id 1 local 192.168.99.2 dev eth0 srcport 0 0 dstport 8472 nolearning ttl auto ageing 300\n";
        let json = r#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"mtu":65536,"address":"00:00:00:00:00:00"},
            {"ifindex":2,"ifname":"eth0","link_index":7,"flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"address":"02:f1:ab:00:01:02","linkinfo":{"info_kind":"veth"}},
            {"ifindex":5,"ifname":"flannel.1","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1450,"address":"6a:11:22:33:44:55",
             "linkinfo":{"info_kind":"vxlan","info_data":{"id":1,"local":"192.168.99.2","link":"eth0","port":8472,"learning":false}}}]"#;
        let (f, mut out) = probs();
        let a = links(plain, &mut Problems { file: &f, out: &mut out });
        let b = links(json, &mut Problems { file: &f, out: &mut out });
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(a, b);
        assert_eq!(a[2].name, "flannel.1");
        assert_eq!(a[2].vxlan.as_ref().unwrap().vni, Some(1));
        assert_eq!(a[2].vxlan.as_ref().unwrap().learning, Some(false));
        assert_eq!(a[1].name, "eth0");
        assert_eq!(a[1].kind.as_deref(), Some("veth"));
    }

    #[test]
    fn routes_neighbours_and_fdb_in_both_forms() {
        let (f, mut out) = probs();
        let mut p = Problems { file: &f, out: &mut out };
        let r = routes(
            "default via 192.168.99.1 dev eth0\n10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink\n\
             192.168.99.0/24 dev eth0 proto kernel scope link src 192.168.99.2\nunreachable 10.9.0.0/16\nnonsense here\n",
            &mut p,
        );
        assert_eq!(r.len(), 3);
        assert!(r[1].onlink && r[1].gateway == Some("10.244.2.0".parse().unwrap()) && r[1].dev.as_deref() == Some("flannel.1"));
        assert!(r[2].by_kernel && r[2].src == Some("192.168.99.2".parse().unwrap()));
        let j = routes(r#"[{"dst":"10.244.2.0/24","gateway":"10.244.2.0","dev":"flannel.1","flags":["onlink"]}]"#, &mut p);
        assert_eq!(j[0].dst, r[1].dst);
        assert!(j[0].onlink);
        let n = neighbours("10.244.2.0 dev flannel.1 lladdr 6A:11:22:33:44:56 PERMANENT\n192.168.99.1 dev eth0 FAILED\n", &mut p);
        assert_eq!(n.len(), 2);
        assert!(n[0].permanent && n[0].mac.as_deref() == Some("6a:11:22:33:44:56"));
        assert!(!n[1].permanent && n[1].mac.is_none());
        let nj = neighbours(r#"[{"dst":"10.244.2.0","dev":"flannel.1","lladdr":"6a:11:22:33:44:56","state":["PERMANENT"]}]"#, &mut p);
        assert_eq!((nj[0].ip, nj[0].permanent), (n[0].ip, true));
        let b = fdb("6a:11:22:33:44:56 dev flannel.1 dst 192.168.99.3 self permanent\n33:33:00:00:00:01 dev eth0 self permanent\n", &mut p);
        assert_eq!(b[0].dst, Some("192.168.99.3".parse().unwrap()));
        assert_eq!(b[1].dst, None);
        let bj =
            fdb(r#"[{"mac":"6a:11:22:33:44:56","ifname":"flannel.1","dst":"192.168.99.3","flags":["self"],"state":"permanent"}]"#, &mut p);
        assert_eq!(bj[0].mac, b[0].mac);
        assert!(bj[0].permanent);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].to_string(), "x.txt:5: not a route: `nonsense here`");
    }

    #[test]
    fn etcd_dumps_in_both_forms() {
        let (f, mut out) = probs();
        let mut p = Problems { file: &f, out: &mut out };
        let plain = "/coreos.com/network/config\n{\"Network\":\"10.244.0.0/16\"}\n/coreos.com/network/subnets/10.244.2.0-24\n{\"PublicIP\":\"192.168.99.3\"}\n";
        let kv = etcd(plain, &mut p);
        assert_eq!(kv.len(), 2);
        assert_eq!((kv[1].key.as_str(), kv[1].line), ("/coreos.com/network/subnets/10.244.2.0-24", 3));
        let json = format!(
            r#"{{"header":{{"revision":9}},"kvs":[{{"key":"{}","value":"{}","lease":7587}}],"count":1}}"#,
            base64_encode(kv[1].key.as_bytes()),
            base64_encode(&kv[1].value)
        );
        let kj = etcd(&json, &mut p);
        assert_eq!((kj[0].key.as_str(), kj[0].value.as_slice(), kj[0].lease), (kv[1].key.as_str(), kv[1].value.as_slice(), 7587));
        assert!(out.is_empty(), "{out:?}");
        for s in ["", "f", "fo", "foo", "foob", "fooba", "foobar"] {
            assert_eq!(base64_decode(&base64_encode(s.as_bytes())).unwrap(), s.as_bytes());
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn kube_nodes_and_the_configmap() {
        let (f, mut out) = probs();
        let mut p = Problems { file: &f, out: &mut out };
        let nodes = kube_nodes(
            r#"{"kind":"List","items":[{"kind":"Node","metadata":{"name":"n1","annotations":{
                "flannel.alpha.coreos.com/public-ip":"192.168.99.2","flannel.alpha.coreos.com/backend-type":"vxlan",
                "flannel.alpha.coreos.com/backend-data":"{\"VNI\":1,\"VtepMAC\":\"6a:11:22:33:44:55\"}"}},
                "spec":{"podCIDR":"10.244.1.0/24"},"status":{"addresses":[{"type":"InternalIP","address":"192.168.99.2"}]}}]}"#,
            &mut p,
        );
        assert_eq!(nodes[0].public_ip, Some("192.168.99.2".parse().unwrap()));
        assert_eq!(nodes[0].pod_cidrs, vec!["10.244.1.0/24"]);
        assert_eq!(nodes[0].backend_data.as_ref().unwrap()["VtepMAC"], "6a:11:22:33:44:55");
        let cm = netconf(
            r#"{"kind":"ConfigMap","data":{"net-conf.json":"{\"Network\":\"10.244.0.0/16\",\"Backend\":{\"Type\":\"vxlan\"}}"}}"#,
            &mut p,
        )
        .unwrap();
        assert_eq!(cm["Network"], "10.244.0.0/16");
        assert!(netconf("{\"Network\": ", &mut p).is_none());
        assert_eq!(out.len(), 1);
    }
}
