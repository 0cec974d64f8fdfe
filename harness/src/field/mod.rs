//! From a broken cluster to findings: what operators paste (etcd dumps, `kubectl get nodes`,
//! the net-conf, per node `ip`/`bridge` output and `subnet.env`) read into the lab's own
//! model and judged by the same contract checks a trial runs ([`diagnose`]); turned into a
//! topology and a case that replays the field state ([`import`]); and a live lab written out
//! in that layout with the real tools ([`dump`]).
//!
//! The layout (more may be detected by content):
//!
//! ```text
//! DIR/etcd.json | DIR/etcd.txt          etcdctl get --prefix PREFIX [-w json]
//! DIR/nodes.json + DIR/net-conf.json    kubectl get nodes -o json; the net-conf (or its ConfigMap)
//! DIR/nodes/<node>/ip-link.txt          ip -d link show      (each: plain, or the -j JSON form)
//!                  ip-route.txt         ip route
//!                  ip6-route.txt        ip -6 route
//!                  ip-neigh.txt         ip neigh
//!                  bridge-fdb.txt       bridge fdb
//!                  subnet.env           /run/flannel/subnet.env
//!                  iptables-save.txt    iptables-save (kept, not judged)
//!                  public-ip            the node's address, where its dumps do not show it
//! ```

pub mod dump;
pub mod import;
pub mod parse;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::contract::{self, Check, Finding, HostState, HostView, LeaseView, NetConf, SubnetEnv};
use crate::input::names::{Ipv4Net, Ipv6Net, Net};
use crate::lab::nl::{Address, FdbEntry, Link, Neighbour, Route, VxlanInfo};
use parse::{Problem, Problems};

/// One node as the input shows it.
#[derive(Debug, Clone, Default)]
pub struct NodeInput {
    pub name: String,
    pub public_ip: Option<Ipv4Addr>,
    pub public_ip6: Option<Ipv6Addr>,
    /// Its kernel state, when any of its `ip`/`bridge` files was given.
    pub state: Option<HostState>,
    /// The underlay interface and its MTU, as far as the dumps show.
    pub underlay: Option<(String, u32)>,
    pub subnet_env: Option<String>,
    /// The files read for it.
    pub files: Vec<String>,
}

/// A lease with where it came from.
#[derive(Debug, Clone)]
pub struct LeaseInput {
    pub lease: Result<LeaseView, String>,
    /// `etcd.json: /coreos.com/network/subnets/…` or `nodes.json: node n1`.
    pub source: String,
    /// Whom a finding about it is about: `etcd`, or the node whose annotations hold it.
    pub subject: String,
    /// The key, for etcd leases (import keeps it as it was).
    pub key: Option<String>,
    pub value: Vec<u8>,
    /// The etcd lease id the key was attached to (0: none, or not known).
    pub etcd_lease: i64,
}

/// Everything read from an input directory.
#[derive(Debug, Clone, Default)]
pub struct Input {
    pub dir: PathBuf,
    /// The net-conf as JSON, and as the contract reads it.
    pub netconf_json: Option<serde_json::Value>,
    pub conf: Option<NetConf>,
    pub prefix: String,
    pub leases: Vec<LeaseInput>,
    /// Other keys under the prefix (neither the config nor a lease-shaped key).
    pub other_keys: Vec<(String, Vec<u8>)>,
    pub nodes: Vec<NodeInput>,
    /// The leases come from Kubernetes node annotations (kube subnet manager).
    pub kube: bool,
    pub problems: Vec<Problem>,
    /// The files read, for the report.
    pub read: Vec<String>,
}

fn read(path: &Path, problems: &mut Vec<Problem>) -> Option<String> {
    match std::fs::read(path) {
        Ok(b) => match String::from_utf8(b) {
            Ok(s) => Some(s),
            Err(_) => {
                problems.push(Problem { file: path.to_path_buf(), line: 0, message: "not UTF-8 text".into() });
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            problems.push(Problem { file: path.to_path_buf(), line: 0, message: format!("cannot read: {e}") });
            None
        }
    }
}

/// The etcd prefix of a dump: before `/config`, else before `/subnets/`.
fn prefix_of(keys: &[parse::Kv]) -> Option<String> {
    keys.iter()
        .find_map(|k| k.key.strip_suffix("/config").map(str::to_string))
        .or_else(|| keys.iter().find_map(|k| k.key.split_once("/subnets/").map(|(p, _)| p.to_string())))
}

/// Reads `dir` (the layout above). Files that are missing are left out; what cannot be
/// parsed is a located problem, and the rest is still read.
pub fn load(dir: &Path) -> Input {
    let mut inp = Input { dir: dir.to_path_buf(), prefix: contract::DEFAULT_PREFIX.into(), ..Default::default() };
    let mut problems = Vec::new();
    // etcd
    for name in ["etcd.json", "etcd.txt"] {
        let f = dir.join(name);
        let Some(text) = read(&f, &mut problems) else { continue };
        inp.read.push(name.into());
        let kvs = parse::etcd(&text, &mut Problems { file: &f, out: &mut problems });
        if let Some(p) = prefix_of(&kvs) {
            inp.prefix = p;
        }
        for kv in kvs {
            let at = if kv.line > 0 { format!("{name}:{}", kv.line) } else { name.to_string() };
            if kv.key == format!("{}/config", inp.prefix) {
                match serde_json::from_slice(&kv.value) {
                    Ok(v) => inp.netconf_json = Some(v),
                    Err(e) => problems.push(Problem {
                        file: f.clone(),
                        line: kv.line,
                        message: format!("{}: the net-conf is not valid JSON: {e}", kv.key),
                    }),
                }
            } else if kv.key.starts_with(&format!("{}/subnets/", inp.prefix)) {
                inp.leases.push(LeaseInput {
                    lease: contract::parse_lease(&inp.prefix, &kv.key, &kv.value),
                    source: format!("{at}: {}", kv.key),
                    subject: "etcd".into(),
                    key: Some(kv.key.clone()),
                    value: kv.value.clone(),
                    etcd_lease: kv.lease,
                });
            } else {
                inp.other_keys.push((kv.key, kv.value));
            }
        }
        break;
    }
    // Kubernetes
    let nf = dir.join("net-conf.json");
    if let Some(text) = read(&nf, &mut problems) {
        inp.read.push("net-conf.json".into());
        if let Some(v) = parse::netconf(&text, &mut Problems { file: &nf, out: &mut problems }) {
            inp.netconf_json = Some(v);
        }
    }
    let kf = dir.join("nodes.json");
    let mut kube_nodes = Vec::new();
    if let Some(text) = read(&kf, &mut problems) {
        inp.read.push("nodes.json".into());
        kube_nodes = parse::kube_nodes(&text, &mut Problems { file: &kf, out: &mut problems });
        if inp.leases.is_empty() {
            inp.kube = true;
            for n in &kube_nodes {
                inp.leases.push(LeaseInput {
                    lease: kube_lease(n),
                    source: format!("nodes.json: node {}", n.name),
                    subject: n.name.clone(),
                    key: None,
                    value: Vec::new(),
                    etcd_lease: 0,
                });
            }
        }
    }
    if let Some(v) = &inp.netconf_json {
        match NetConf::from_json(v) {
            Ok(c) => inp.conf = Some(c),
            Err(e) => problems.push(Problem { file: dir.to_path_buf(), line: 0, message: format!("the net-conf cannot be judged: {e}") }),
        }
    } else {
        problems.push(Problem {
            file: dir.to_path_buf(),
            line: 0,
            message: "no net-conf: give etcd.json/etcd.txt with <prefix>/config, or net-conf.json".into(),
        });
    }
    // nodes: per-node folders, and Kubernetes nodes
    let mut names: Vec<String> = std::fs::read_dir(dir.join("nodes"))
        .map(|d| d.filter_map(|e| e.ok()).filter(|e| e.path().is_dir()).map(|e| e.file_name().to_string_lossy().to_string()).collect())
        .unwrap_or_default();
    for k in &kube_nodes {
        if !names.contains(&k.name) {
            names.push(k.name.clone());
        }
    }
    names.sort();
    for name in names {
        let mut node = load_node(&dir.join("nodes").join(&name), &name, &mut problems);
        if let Some(k) = kube_nodes.iter().find(|k| k.name == name) {
            node.public_ip = node.public_ip.or(k.public_ip).or(match k.internal_ip {
                Some(IpAddr::V4(a)) => Some(a),
                _ => None,
            });
            node.public_ip6 = node.public_ip6.or(k.public_ipv6);
        }
        inp.nodes.push(node);
    }
    inp.problems = problems;
    inp
}

/// A kube-subnet-manager lease: the node's podCIDR(s) with its flannel annotations.
fn kube_lease(n: &parse::KubeNode) -> Result<LeaseView, String> {
    let v4: Option<Ipv4Net> = n.pod_cidrs.iter().find_map(|c| c.parse().ok());
    let v6: Option<Ipv6Net> = n.pod_cidrs.iter().find_map(|c| c.parse().ok());
    if v4.is_none() && v6.is_none() {
        return Err(format!("node {} has no podCIDR", n.name));
    }
    let mac =
        |d: &Option<serde_json::Value>| d.as_ref().and_then(|d| d.get("VtepMAC")).and_then(|m| m.as_str()).map(str::to_ascii_lowercase);
    Ok(LeaseView {
        subnet: v4.unwrap_or(Net::new(Ipv4Addr::UNSPECIFIED, 0).expect("valid")),
        public_ip: n.public_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
        backend_type: n.backend_type.clone(),
        vtep_mac: mac(&n.backend_data),
        subnet6: v6,
        public_ip6: n.public_ipv6,
        vtep_mac6: mac(&n.backend_v6_data),
    })
}

/// One node's folder: its kernel state, subnet file and address.
fn load_node(dir: &Path, name: &str, problems: &mut Vec<Problem>) -> NodeInput {
    let mut node = NodeInput { name: name.to_string(), ..Default::default() };
    let mut get = |file: &str, problems: &mut Vec<Problem>| {
        let t = read(&dir.join(file), problems);
        if t.is_some() {
            node.files.push(file.to_string());
        }
        t
    };
    let links = get("ip-link.txt", problems).map(|t| parse::links(&t, &mut Problems { file: &dir.join("ip-link.txt"), out: problems }));
    let routes4 =
        get("ip-route.txt", problems).map(|t| parse::routes(&t, &mut Problems { file: &dir.join("ip-route.txt"), out: problems }));
    let routes6 =
        get("ip6-route.txt", problems).map(|t| parse::routes(&t, &mut Problems { file: &dir.join("ip6-route.txt"), out: problems }));
    let neigh =
        get("ip-neigh.txt", problems).map(|t| parse::neighbours(&t, &mut Problems { file: &dir.join("ip-neigh.txt"), out: problems }));
    let fdb = get("bridge-fdb.txt", problems).map(|t| parse::fdb(&t, &mut Problems { file: &dir.join("bridge-fdb.txt"), out: problems }));
    node.subnet_env = get("subnet.env", problems);
    let _ = get("iptables-save.txt", problems);
    if let Some(t) = get("public-ip", problems) {
        let t = t.trim();
        match t.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => node.public_ip = Some(a),
            Ok(IpAddr::V6(a)) => node.public_ip6 = Some(a),
            Err(_) => problems.push(Problem { file: dir.join("public-ip"), line: 1, message: format!("`{t}` is not an IP address") }),
        }
    }
    if links.is_none() && routes4.is_none() && routes6.is_none() && neigh.is_none() && fdb.is_none() {
        return node;
    }
    let links = links.unwrap_or_default();
    let routes: Vec<parse::RouteLine> = routes4.into_iter().chain(routes6).flatten().collect();
    // interface indexes: the link dump's, else made up per name (consistently)
    let mut index: BTreeMap<String, u32> = links.iter().map(|l| (l.name.clone(), l.index)).collect();
    let mut idx = |name: &str| -> u32 {
        let next = 100_000 + index.len() as u32;
        *index.entry(name.to_string()).or_insert(next)
    };
    let mut st = HostState { neighbours_complete: true, subnet_file: node.subnet_env.clone(), ..Default::default() };
    let underlay_of_vxlan = links.iter().find_map(|l| l.vxlan.as_ref().and_then(|v| v.dev.clone()));
    for l in &links {
        st.links.push(Link {
            index: l.index,
            name: l.name.clone(),
            mtu: l.mtu,
            up: l.up,
            kind: l.kind.clone(),
            mac: l.mac.clone(),
            controller: None,
            vxlan: l.vxlan.as_ref().map(|v| VxlanInfo {
                vni: v.vni,
                port: v.port,
                local: match v.local {
                    Some(IpAddr::V4(a)) => Some(a),
                    _ => None,
                },
                local6: match v.local {
                    Some(IpAddr::V6(a)) => Some(a),
                    _ => None,
                },
                learning: v.learning,
                underlay_index: v.dev.as_ref().and_then(|d| links.iter().find(|x| &x.name == d)).map(|x| x.index),
                gbp: v.gbp,
            }),
        });
    }
    for r in &routes {
        let oif = r.dev.as_deref().map(&mut idx);
        let dst = r.dst.unwrap_or(match r.gateway {
            Some(IpAddr::V6(_)) => (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
            _ => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        });
        match dst.0 {
            IpAddr::V4(_) => {
                if let Some(route) = route_of::<Ipv4Addr>(r, dst, oif) {
                    // the kernel's prefix route of an address names it: the interface is on that network
                    if let (true, Some(ifindex), Some(IpAddr::V4(addr))) = (r.by_kernel, oif, r.src) {
                        st.addresses.push(Address { ifindex, net: route.dst, addr });
                    }
                    st.routes.push(route);
                }
            }
            IpAddr::V6(_) => {
                if let Some(route) = route_of::<Ipv6Addr>(r, dst, oif) {
                    // an IPv6 prefix route names no source: its network stands for the address
                    // (only the prefix counts, for what is directly connected)
                    let d = route.dst;
                    if let (true, Some(ifindex)) = (r.by_kernel, oif) {
                        if d.prefix() < 128 && !d.addr().is_unicast_link_local() {
                            st.addresses6.push(Address { ifindex, net: d, addr: d.addr() });
                        }
                    }
                    st.routes6.push(route);
                }
            }
        }
    }
    for n in neigh.into_iter().flatten() {
        let ifindex = idx(&n.dev);
        match n.ip {
            IpAddr::V4(ip) => st.neighbours.push(Neighbour { ifindex, ip, mac: n.mac, permanent: n.permanent }),
            IpAddr::V6(ip) => st.neighbours6.push(Neighbour { ifindex, ip, mac: n.mac, permanent: n.permanent }),
        }
    }
    for e in fdb.into_iter().flatten() {
        let ifindex = idx(&e.dev);
        st.fdb.push(FdbEntry { ifindex, mac: e.mac, dst: e.dst, permanent: e.permanent });
    }
    st.routes.sort();
    st.routes6.sort();
    st.neighbours.sort();
    st.neighbours6.sort();
    st.fdb.sort();
    // the underlay: the vxlan device's, else the default route's interface
    let default_dev = routes.iter().find(|r| r.dst.is_none() && r.gateway.is_some_and(|g| g.is_ipv4())).and_then(|r| r.dev.clone());
    let underlay = underlay_of_vxlan.or(default_dev).or_else(|| links.iter().find(|l| l.name == "eth0").map(|l| l.name.clone()));
    if let Some(u) = &underlay {
        let mtu = links.iter().find(|l| &l.name == u).map(|l| l.mtu).unwrap_or(1500);
        node.underlay = Some((u.clone(), mtu));
        // its address: the vxlan device's local, else the kernel's prefix route's source
        let local = links.iter().find_map(|l| match l.vxlan.as_ref()?.local? {
            IpAddr::V4(a) => Some(a),
            _ => None,
        });
        let src = routes.iter().find(|r| r.by_kernel && r.dev.as_deref() == Some(u.as_str())).and_then(|r| match r.src? {
            IpAddr::V4(a) => Some(a),
            _ => None,
        });
        node.public_ip = node.public_ip.or(local).or(src);
    }
    // the IPv6 address: the IPv6 vxlan device's local (an IPv6 prefix route names none)
    let local6 = links.iter().find_map(|l| match l.vxlan.as_ref()?.local? {
        IpAddr::V6(a) => Some(a),
        _ => None,
    });
    node.public_ip6 = node.public_ip6.or(local6);
    node.state = Some(st);
    node
}

/// One pasted route of family `A` (its gateway dropped when of the other family).
fn route_of<A: crate::input::names::Family>(r: &parse::RouteLine, dst: (IpAddr, u8), oif: Option<u32>) -> Option<Route<A>> {
    Some(Route { dst: parse::net_of::<A>(dst)?, gateway: r.gateway.and_then(A::from_ip), oif, onlink: r.onlink, by_kernel: r.by_kernel })
}

/// The findings: the contract's checks on the leases, and on every node with state.
pub fn diagnose(inp: &Input) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(conf) = &inp.conf else { return out };
    for l in &inp.leases {
        if let Err(e) = &l.lease {
            out.push(Finding::new(Check::Lease, &l.subject, format!("malformed lease ({}): {e}", l.source)));
        }
    }
    for (k, _) in &inp.other_keys {
        out.push(Finding::new(Check::Lease, "etcd", format!("`{k}` is neither the config nor a lease")));
    }
    let hosts: Vec<contract::HostAddrs> =
        inp.nodes.iter().filter_map(|n| Some((n.name.clone(), n.public_ip.or(conf.enable_ipv4.then_some(None)?)?, n.public_ip6))).collect();
    for n in inp.nodes.iter().filter(|n| n.public_ip.is_none() && conf.enable_ipv4) {
        out.push(Finding::new(
            Check::Lease,
            &n.name,
            "the node's address is unknown (no vxlan local, no kernel route source, no public-ip file): its lease cannot be matched",
        ));
    }
    // one subnet in two leases (two nodes' podCIDRs; etcd keys cannot repeat)
    let mut holders: BTreeMap<Ipv4Net, &str> = BTreeMap::new();
    for l in &inp.leases {
        if let Ok(v) = &l.lease {
            if v.subnet.prefix() > 0 {
                if let Some(first) = holders.insert(v.subnet, &l.source) {
                    out.push(Finding::new(
                        Check::Lease,
                        &l.subject,
                        format!("subnet {} is leased twice: {first} and {}", v.subnet, l.source),
                    ));
                }
            }
        }
    }
    let leases: Vec<Result<LeaseView, String>> = inp.leases.iter().map(|l| l.lease.clone()).collect();
    let valid: Vec<Result<LeaseView, String>> = leases.iter().filter(|l| l.is_ok()).cloned().collect();
    let from = out.len();
    let by_ip = contract::check_leases(conf, &hosts, &valid, &mut out);
    if inp.kube {
        // the kube subnet manager keeps leases in node annotations, not in etcd
        for f in &mut out[from..] {
            f.what = f.what.replace(" in etcd", " in the node annotations");
        }
    }
    if !inp.nodes.is_empty() {
        for l in leases.iter().flatten() {
            let held = inp.nodes.iter().any(|n| {
                (Some(l.public_ip) == n.public_ip && !l.public_ip.is_unspecified())
                    || (l.public_ip6.is_some() && l.public_ip6 == n.public_ip6)
            });
            if !held {
                out.push(Finding::new(
                    Check::Lease,
                    "etcd",
                    format!(
                        "lease {} has PublicIP {}, which no node holds: a departed node's lease, still served to every peer",
                        l.subnet, l.public_ip
                    ),
                ));
            }
        }
    }
    for n in &inp.nodes {
        let Some(ip) = n.public_ip.or((!conf.enable_ipv4).then_some(Ipv4Addr::UNSPECIFIED)) else { continue };
        let (underlay, mtu) = n.underlay.clone().unwrap_or_else(|| ("eth0".into(), 1500));
        if let Some(text) = &n.subnet_env {
            let ipmasq = SubnetEnv::parse(text).ipmasq.unwrap_or(false);
            contract::check_subnet_file(conf, ipmasq, &n.name, mtu, by_ip.get(&ip), Some(text), &mut out);
        }
        if let Some(st) = &n.state {
            let view = HostView {
                conf,
                host: &n.name,
                host_ip: ip,
                host_ip6: n.public_ip6,
                underlay_mtu: mtu,
                leases: &by_ip,
                state: st,
                underlay: &underlay,
            };
            contract::check_kernel(&view, &mut out);
        }
    }
    out
}

/// The report as text: what was read, the findings per subject, the input's problems.
pub fn text(inp: &Input, findings: &[Finding]) -> String {
    let mut s = String::new();
    let conf = inp.conf.as_ref().map(|c| format!("{} {}", c.backend, c.network)).unwrap_or_else(|| "no net-conf".into());
    let _ = writeln!(
        s,
        "flannel-lab diagnose {}: {} nodes ({} with kernel state), {} leases{}, {conf}; read {}",
        inp.dir.display(),
        inp.nodes.len(),
        inp.nodes.iter().filter(|n| n.state.is_some()).count(),
        inp.leases.len(),
        if inp.kube { " (from node annotations)" } else { "" },
        inp.read.join(", ")
    );
    if findings.is_empty() {
        let _ = writeln!(s, "no findings: the state matches flannel's contract");
    }
    for f in findings {
        let _ = writeln!(s, "{f}");
    }
    if !inp.problems.is_empty() {
        let _ = writeln!(s, "input not understood (skipped; the findings above are from the rest):");
        for p in &inp.problems {
            let _ = writeln!(s, "  {p}");
        }
    }
    s
}

/// The report as Markdown.
pub fn markdown(inp: &Input, findings: &[Finding]) -> String {
    let mut s = format!("# flannel-lab diagnose `{}`\n\n", inp.dir.display());
    let _ = writeln!(s, "{} nodes, {} leases; read {}\n", inp.nodes.len(), inp.leases.len(), inp.read.join(", "));
    if findings.is_empty() {
        s.push_str("No findings: the state matches flannel's contract.\n");
    } else {
        s.push_str("| check | subject | finding |\n|---|---|---|\n");
        for f in findings {
            let _ = writeln!(s, "| {} | {} | {} |", f.check, f.host, f.what.replace('|', "\\|"));
        }
    }
    if !inp.problems.is_empty() {
        s.push_str("\nInput not understood (skipped):\n\n");
        for p in &inp.problems {
            let _ = writeln!(s, "- `{p}`");
        }
    }
    s
}

/// The report as one HTML page.
pub fn html(inp: &Input, findings: &[Finding]) -> String {
    let esc = |t: &str| t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mut s = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>flannel-lab diagnose</title><style>\
         body{font:14px system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}th{background:#f3f3f3}\
         .ok{color:#176f2c}.bad{color:#a3161b}code{font-size:90%}</style></head><body>",
    );
    let _ = write!(
        s,
        "<h1>diagnose <code>{}</code></h1><p>{} nodes, {} leases; read {}</p>",
        esc(&inp.dir.display().to_string()),
        inp.nodes.len(),
        inp.leases.len(),
        esc(&inp.read.join(", "))
    );
    if findings.is_empty() {
        s.push_str("<p class=\"ok\">No findings: the state matches flannel's contract.</p>");
    } else {
        let _ = write!(s, "<p class=\"bad\">{} findings</p><table><tr><th>check</th><th>subject</th><th>finding</th></tr>", findings.len());
        for f in findings {
            let _ = write!(s, "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", f.check, esc(&f.host), esc(&f.what));
        }
        s.push_str("</table>");
    }
    if !inp.problems.is_empty() {
        s.push_str("<h2>Input not understood (skipped)</h2><ul>");
        for p in &inp.problems {
            let _ = write!(s, "<li><code>{}</code></li>", esc(&p.to_string()));
        }
        s.push_str("</ul>");
    }
    s.push_str("</body></html>\n");
    s
}
