//! Topology files (`topologies/*.yaml`): L2 segments, the hosts on them, and where etcd
//! attaches. Raw serde structs are validated into a [`Topology`] with every address
//! assigned.
//!
//! ```yaml
//! description: hosts on one L2 segment
//! segments:
//!   - name: lan
//!     cidr: 192.168.99.0/24
//!     cidr6: fd00:99::/64   # optional: a dual-stack underlay (every segment or none)
//!     mtu: 1500
//! hosts:
//!   - segment: lan
//!     count: 4          # h1..h4; or `names: [a, b]`
//! etcd:
//!   segment: lan
//! ```

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::input::diag::{key, load_yaml, Collector, Diagnostics, Seg, Source};
use crate::input::names::{Family, HostName, Ipv4Net, Ipv6Net, Net};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    #[serde(default)]
    description: String,
    segments: Vec<RawSegment>,
    hosts: Vec<RawHostGroup>,
    #[serde(default)]
    routers: Vec<RawRouter>,
    etcd: RawEtcd,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouter {
    name: HostName,
    segments: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSegment {
    name: String,
    cidr: Ipv4Net,
    #[serde(default)]
    cidr6: Option<Ipv6Net>,
    #[serde(default = "default_mtu")]
    mtu: u32,
}

fn default_mtu() -> u32 {
    1500
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHostGroup {
    segment: String,
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    names: Option<Vec<HostName>>,
    #[serde(default)]
    prefix: Option<String>,
    /// With `names`: each host's address, in order (an imported cluster keeps its own).
    #[serde(default)]
    addresses: Option<Vec<Ipv4Addr>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEtcd {
    segment: String,
}

/// One L2 segment: a bridge in the lab's fabric namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub name: String,
    pub cidr: Ipv4Net,
    /// The segment's IPv6 prefix on a dual-stack underlay. A node's IPv6 address carries
    /// the same host part as its IPv4 one (192.168.99.5 → fd00:99::5).
    pub cidr6: Option<Ipv6Net>,
    pub mtu: u32,
}

impl Segment {
    /// The IPv6 address that goes with `v4` on this segment, when it has a `cidr6`.
    pub fn v6_of(&self, v4: Ipv4Addr) -> Option<Ipv6Addr> {
        let host = u32::from(v4).wrapping_sub(u32::from(self.cidr.addr()));
        self.cidr6.map(|n| n.nth(u128::from(host)))
    }
}

/// A simulated host: one namespace, `eth0` on its segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: HostName,
    pub segment: usize,
    pub addr: Ipv4Addr,
}

/// A router namespace joining segments, with forwarding on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Router {
    pub name: HostName,
    /// (segment, this router's address on it)
    pub legs: Vec<(usize, Ipv4Addr)>,
}

/// A static route a node needs: `cidr via gateway`, in either family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticRoute<A: Family = Ipv4Addr> {
    pub dst: Net<A>,
    pub via: A,
}

/// A validated topology with every address assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub name: String,
    pub file: PathBuf,
    pub description: String,
    pub segments: Vec<Segment>,
    pub hosts: Vec<Host>,
    pub routers: Vec<Router>,
    /// etcd's segment and address.
    pub etcd: (usize, Ipv4Addr),
    /// Whether the host count can be overridden by a case (exactly one `count` group).
    pub scalable: bool,
}

const RESERVED: [&str; 2] = ["etcd", "fabric"];
/// Addresses taken from the top of each segment: etcd first, then routers downwards.
const TOP_RESERVED: u64 = 1;

/// A Linux bridge takes at most 1024 ports (BR_MAX_PORTS). A segment is one bridge: its
/// hosts, router legs and etcd, plus ports the lab keeps for itself (etcd cluster members,
/// the canary, hosts a case adds).
const BRIDGE_PORTS: u64 = 1024;
const LAB_PORTS: u64 = 8;

/// The most hosts one segment can hold.
pub const MAX_HOSTS_PER_SEGMENT: u64 = BRIDGE_PORTS - LAB_PORTS;

impl Topology {
    /// Loads and validates a topology file.
    pub fn load(file: &Path) -> Result<Topology, Diagnostics> {
        Topology::load_scaled(file, None)
    }

    /// Loads a topology, replacing the host count of its single `count:` group.
    pub fn load_scaled(file: &Path, hosts: Option<u32>) -> Result<Topology, Diagnostics> {
        let (raw, src): (RawTopology, Source) = load_yaml(file, "topology")?;
        validate(file, &src, raw, hosts)
    }

    pub fn parse(file: &Path, src: &str, hosts: Option<u32>) -> Result<Topology, Diagnostics> {
        let (raw, src): (RawTopology, Source) = crate::input::diag::parse_source(file, src.to_string())?;
        validate(file, &src, raw, hosts)
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name.as_str() == name)
    }

    /// Segments one hop apart (sharing a router), for each segment.
    fn neighbours(&self, seg: usize) -> impl Iterator<Item = (usize, &Router)> + '_ {
        self.routers
            .iter()
            .filter(move |r| r.legs.iter().any(|(s, _)| *s == seg))
            .flat_map(move |r| r.legs.iter().filter(move |(s, _)| *s != seg).map(move |(s, _)| (*s, r)))
    }

    /// Hops from `from` to every segment (None: unreachable), by breadth-first search.
    fn distances(&self, from: usize) -> Vec<Option<usize>> {
        let mut dist = vec![None; self.segments.len()];
        dist[from] = Some(0);
        let mut queue = std::collections::VecDeque::from([from]);
        while let Some(s) = queue.pop_front() {
            for (n, _) in self.neighbours(s) {
                if dist[n].is_none() {
                    dist[n] = Some(dist[s].unwrap_or(0) + 1);
                    queue.push_back(n);
                }
            }
        }
        dist
    }

    /// The static routes a node attached to `segments` needs to reach every other segment:
    /// for each, the next router on a shortest path, excluding the node itself.
    pub fn routes_for(&self, segments: &[usize], me: Option<&HostName>) -> Vec<StaticRoute> {
        let mut out = Vec::new();
        for target in 0..self.segments.len() {
            if segments.contains(&target) {
                continue;
            }
            let mut best: Option<(usize, Ipv4Addr)> = None;
            for &s in segments {
                for r in self.routers.iter().filter(|r| Some(&r.name) != me) {
                    let Some(&(_, addr)) = r.legs.iter().find(|(rs, _)| *rs == s) else { continue };
                    // the router's best leg toward the target
                    let d = r.legs.iter().filter_map(|(rs, _)| self.distances(*rs)[target]).min();
                    if let Some(d) = d {
                        if best.is_none_or(|(bd, _)| d < bd) {
                            best = Some((d, addr));
                        }
                    }
                }
            }
            if let Some((_, via)) = best {
                out.push(StaticRoute { dst: self.segments[target].cidr, via });
            }
        }
        out
    }

    /// Whether the underlay is dual-stack (every segment has a `cidr6`).
    pub fn dual_stack(&self) -> bool {
        !self.segments.is_empty() && self.segments.iter().all(|s| s.cidr6.is_some())
    }

    /// The IPv6 address of the node at `v4` on segment `seg`, on a dual-stack underlay.
    pub fn v6_of(&self, seg: usize, v4: Ipv4Addr) -> Option<Ipv6Addr> {
        self.segments.get(seg).and_then(|s| s.v6_of(v4))
    }

    /// [`Topology::routes_for`] for IPv6: the same next hops at their IPv6 addresses.
    pub fn routes6_for(&self, segments: &[usize], me: Option<&HostName>) -> Vec<StaticRoute<Ipv6Addr>> {
        self.routes_for(segments, me)
            .into_iter()
            .filter_map(|r| {
                let target = self.segments.iter().find(|s| s.cidr == r.dst)?;
                let via_seg = self.segments.iter().find(|s| s.cidr.contains(r.via))?;
                Some(StaticRoute { dst: target.cidr6?, via: via_seg.v6_of(r.via)? })
            })
            .collect()
    }
}

fn validate(file: &Path, src: &Source, raw: RawTopology, scale: Option<u32>) -> Result<Topology, Diagnostics> {
    let mut c = Collector::new(file, src);
    let mut segments = Vec::new();
    if raw.segments.is_empty() {
        c.push(&[key("segments")], "no segments", "add at least one segment with a name and a cidr");
    }
    for (i, s) in raw.segments.iter().enumerate() {
        let here = |k: &str| vec![key("segments"), Seg::Index(i), key(k)];
        let name_ok = !s.name.is_empty() && s.name.len() <= 8 && s.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !name_ok {
            c.push(&here("name"), format!("`{}` is not a segment name", s.name), "use 1-8 of a-z and 0-9 (it names a bridge)");
        }
        if segments.iter().any(|x: &Segment| x.name == s.name) {
            c.push(&here("name"), format!("duplicate segment `{}`", s.name), "give each segment its own name");
        }
        if !(576..=65535).contains(&s.mtu) {
            c.push(&here("mtu"), format!("mtu {} is out of range", s.mtu), "use 576..65535 (1500 is Ethernet's)");
        }
        if s.cidr.prefix() > 30 {
            c.push(&here("cidr"), format!("{} is too small for a segment", s.cidr), "use a /30 or larger prefix");
        }
        if let Some(other) = segments.iter().find(|x: &&Segment| x.cidr.contains_net(&s.cidr) || s.cidr.contains_net(&x.cidr)) {
            c.push(
                &here("cidr"),
                format!("{} overlaps segment `{}` ({})", s.cidr, other.name, other.cidr),
                "segments need disjoint prefixes",
            );
        }
        if let Some(c6) = s.cidr6 {
            if u32::from(c6.prefix()) + (32 - u32::from(s.cidr.prefix())) > 128 {
                c.push(
                    &here("cidr6"),
                    format!("{c6} is smaller than {}", s.cidr),
                    "use a /64 (each node's IPv6 host part is its IPv4 one)",
                );
            }
            if let Some(other) = segments.iter().find(|x: &&Segment| x.cidr6.is_some_and(|o| o.contains_net(&c6) || c6.contains_net(&o))) {
                c.push(&here("cidr6"), format!("{c6} overlaps segment `{}`", other.name), "segments need disjoint prefixes");
            }
        }
        segments.push(Segment { name: s.name.clone(), cidr: s.cidr, cidr6: s.cidr6, mtu: s.mtu });
    }
    if raw.segments.iter().any(|s| s.cidr6.is_some()) && raw.segments.iter().any(|s| s.cidr6.is_none()) {
        let at = raw.segments.iter().position(|s| s.cidr6.is_none()).unwrap_or(0);
        c.push(
            &[key("segments"), Seg::Index(at), key("name")],
            "some segments have a `cidr6` and this one has none",
            "a dual-stack underlay gives every segment a `cidr6`",
        );
    }
    let seg_index = |name: &str| segments.iter().position(|s| s.name == name);

    let count_groups = raw.hosts.iter().filter(|g| g.count.is_some()).count();
    let scalable = count_groups == 1;
    if scale.is_some() && !scalable {
        c.push(
            &[key("hosts")],
            "a case asks for a host count, but this topology has no single `count:` group",
            "give the topology exactly one host group with `count:`",
        );
    }
    if raw.hosts.is_empty() {
        c.push(&[key("hosts")], "no hosts", "add a host group with `count:` or `names:`");
    }
    let mut hosts: Vec<Host> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut used: Vec<u32> = vec![0; segments.len()];
    // addresses given: taken before the others are handed out from .1 upwards
    let mut pinned: Vec<BTreeSet<Ipv4Addr>> = vec![BTreeSet::new(); segments.len()];
    for (i, g) in raw.hosts.iter().enumerate() {
        let (Some(list), Some(s)) = (&g.addresses, seg_index(&g.segment)) else { continue };
        let at = |j: usize| vec![key("hosts"), Seg::Index(i), key("addresses"), Seg::Index(j)];
        if g.names.as_ref().is_none_or(|n| n.len() != list.len()) {
            c.push(
                &[key("hosts"), Seg::Index(i), key("addresses")],
                "`addresses` needs `names`, one address each",
                "list as many addresses as names",
            );
        }
        let cidr = segments[s].cidr;
        for (j, a) in list.iter().enumerate() {
            if !cidr.contains(*a) || *a == cidr.addr() || *a == cidr.nth((cidr.size() - 1) as u32) {
                c.push(
                    &at(j),
                    format!("{a} is not a host address of segment `{}` ({cidr})", g.segment),
                    "give an address inside the segment",
                );
            } else if !pinned[s].insert(*a) {
                c.push(&at(j), format!("{a} is given twice"), "give each host its own address");
            }
        }
    }
    for (i, g) in raw.hosts.iter().enumerate() {
        let here = |k: &str| vec![key("hosts"), Seg::Index(i), key(k)];
        let seg = seg_index(&g.segment);
        if seg.is_none() {
            c.push(&here("segment"), format!("no segment named `{}`", g.segment), "use the name of a segment listed under `segments`");
        }
        let names: Vec<(HostName, Vec<Seg>)> = match (&g.count, &g.names) {
            (Some(_), Some(_)) | (None, None) => {
                c.push(
                    &[key("hosts"), Seg::Index(i)],
                    "a host group needs exactly one of `count` and `names`",
                    "write `count: 4` or `names: [a, b]`",
                );
                continue;
            }
            (Some(n), None) => {
                let n = scale.filter(|_| scalable).unwrap_or(*n);
                if n == 0 {
                    c.push(&here("count"), "count is 0", "a group needs at least one host");
                }
                let prefix = g.prefix.clone().unwrap_or_else(|| "h".into());
                let mut out = Vec::new();
                for k in 1..=n {
                    match format!("{prefix}{k}").parse::<HostName>() {
                        Ok(h) => out.push((h, here("count"))),
                        Err(e) => {
                            c.push(&here("prefix"), e, "shorten the prefix");
                            break;
                        }
                    }
                }
                out
            }
            (None, Some(list)) => {
                list.iter().enumerate().map(|(j, h)| (h.clone(), vec![key("hosts"), Seg::Index(i), key("names"), Seg::Index(j)])).collect()
            }
        };
        for (j, (name, at)) in names.into_iter().enumerate() {
            if RESERVED.contains(&name.as_str()) {
                c.push(&at, format!("`{name}` is reserved for the lab itself"), "pick another host name");
                continue;
            }
            if !seen.insert(name.clone()) {
                c.push(&at, format!("duplicate host `{name}`"), "host names must be unique across the topology");
                continue;
            }
            if let Some(s) = seg {
                let given = g.addresses.as_ref().and_then(|a| a.get(j)).copied();
                let addr = match given {
                    Some(a) => a,
                    None => loop {
                        used[s] += 1;
                        let a = segments[s].cidr.nth(used[s]);
                        if !pinned[s].contains(&a) {
                            break a;
                        }
                    },
                };
                hosts.push(Host { name, segment: s, addr });
            }
        }
    }
    let mut routers: Vec<Router> = Vec::new();
    let mut top_used: Vec<u64> = vec![TOP_RESERVED; segments.len()];
    for (i, r) in raw.routers.iter().enumerate() {
        let here = |k: &str| vec![key("routers"), Seg::Index(i), key(k)];
        if RESERVED.contains(&r.name.as_str()) || seen.contains(&r.name) || routers.iter().any(|x| x.name == r.name) {
            c.push(&here("name"), format!("`{}` is already taken by a host, a router or the lab", r.name), "give the router its own name");
        }
        if r.segments.len() < 2 {
            c.push(&here("segments"), "a router needs at least two segments", "list the segments it joins, e.g. [left, right]");
        }
        let mut legs = Vec::new();
        for (j, s) in r.segments.iter().enumerate() {
            match seg_index(s) {
                None => c.push(
                    &[key("routers"), Seg::Index(i), key("segments"), Seg::Index(j)],
                    format!("no segment named `{s}`"),
                    "use a segment listed under `segments`",
                ),
                Some(si) if legs.iter().any(|(x, _)| *x == si) => c.push(
                    &[key("routers"), Seg::Index(i), key("segments"), Seg::Index(j)],
                    format!("segment `{s}` listed twice"),
                    "list each segment once",
                ),
                Some(si) => {
                    top_used[si] += 1;
                    let cidr = segments[si].cidr;
                    legs.push((si, cidr.nth((cidr.size() - 1 - top_used[si]) as u32)));
                }
            }
        }
        routers.push(Router { name: r.name.clone(), legs });
    }
    let etcd_seg = seg_index(&raw.etcd.segment);
    if etcd_seg.is_none() {
        c.push(
            &[key("etcd"), key("segment")],
            format!("no segment named `{}`", raw.etcd.segment),
            "use the name of a segment listed under `segments`",
        );
    }
    for (s, seg) in segments.iter().enumerate() {
        // hosts take .1 upwards; etcd takes the last usable address
        let need = used[s] as u64 + pinned[s].len() as u64 + u64::from(etcd_seg == Some(s)) + (top_used[s] - TOP_RESERVED);
        if need > MAX_HOSTS_PER_SEGMENT {
            let at = raw.segments.iter().position(|r| r.name == seg.name).unwrap_or(0);
            c.push(
                &[key("segments"), Seg::Index(at), key("name")],
                format!(
                    "segment `{}` needs {need} bridge ports, and a Linux bridge takes at most {BRIDGE_PORTS} ({LAB_PORTS} are kept for the lab's own endpoints)",
                    seg.name
                ),
                "spread the hosts over several segments joined by routers",
            );
        }
        if need > seg.cidr.host_capacity() {
            let at = raw.segments.iter().position(|r| r.name == seg.name).unwrap_or(0);
            c.push(
                &[key("segments"), Seg::Index(at), key("cidr")],
                format!("{} holds {} addresses but segment `{}` needs {need}", seg.cidr, seg.cidr.host_capacity(), seg.name),
                "use a larger prefix or fewer hosts",
            );
        }
    }
    let topo_so_far = Topology {
        name: String::new(),
        file: PathBuf::new(),
        description: String::new(),
        segments: segments.clone(),
        hosts: Vec::new(),
        routers: routers.clone(),
        etcd: (0, Ipv4Addr::UNSPECIFIED),
        scalable,
    };
    if let Some(e) = etcd_seg {
        let dist = topo_so_far.distances(e);
        for (s, seg) in segments.iter().enumerate() {
            if dist[s].is_none() && (used[s] > 0 || raw.routers.is_empty()) {
                let at = raw.segments.iter().position(|r| r.name == seg.name).unwrap_or(0);
                c.push(
                    &[key("segments"), Seg::Index(at), key("name")],
                    format!("segment `{}` has no route to etcd's segment `{}`", seg.name, segments[e].name),
                    "add a router joining it to the rest of the topology",
                );
            }
        }
    }
    // a given address may not be etcd's or a router's (they take the top of the segment)
    if let Some(e) = etcd_seg {
        let etcd_addr = segments[e].cidr.nth((segments[e].cidr.size() - 2) as u32);
        let lab_own: Vec<Ipv4Addr> = routers.iter().flat_map(|r| r.legs.iter().map(|l| l.1)).chain([etcd_addr]).collect();
        for (i, g) in raw.hosts.iter().enumerate() {
            for (j, a) in g.addresses.iter().flatten().enumerate().filter(|(_, a)| lab_own.contains(a)) {
                c.push(
                    &[key("hosts"), Seg::Index(i), key("addresses"), Seg::Index(j)],
                    format!("{a} is taken by etcd or a router (the top addresses of a segment)"),
                    "give the host a lower address",
                );
            }
        }
    }
    c.finish()?;
    let etcd_seg = etcd_seg.expect("checked above");
    let etcd_addr = segments[etcd_seg].cidr.nth((segments[etcd_seg].cidr.size() - 2) as u32);
    Ok(Topology {
        name: file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        file: file.to_path_buf(),
        description: raw.description,
        segments,
        hosts,
        routers,
        etcd: (etcd_seg, etcd_addr),
        scalable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Topology, Diagnostics> {
        Topology::parse(Path::new("t.yaml"), src, None)
    }

    const GOOD: &str = "\
segments:
  - name: lan
    cidr: 192.168.99.0/24
hosts:
  - segment: lan
    count: 3
etcd:
  segment: lan
";

    #[test]
    fn hosts_can_keep_given_addresses() {
        let src = "segments:\n  - {name: lan, cidr: 10.0.0.0/24}\nhosts:\n  - {segment: lan, names: [a, b], addresses: [10.0.0.11, 10.0.0.2]}\n  - {segment: lan, count: 2}\netcd: {segment: lan}\n";
        let t = Topology::parse(Path::new("t.yaml"), src, None).unwrap();
        let addrs: Vec<String> = t.hosts.iter().map(|h| format!("{}={}", h.name, h.addr)).collect();
        // the others skip the given ones
        assert_eq!(addrs, vec!["a=10.0.0.11", "b=10.0.0.2", "h1=10.0.0.1", "h2=10.0.0.3"]);
        for (bad, says) in [
            ("[10.0.1.5, 10.0.0.2]", "is not a host address of segment `lan`"),
            ("[10.0.0.2, 10.0.0.2]", "is given twice"),
            ("[10.0.0.254, 10.0.0.2]", "taken by etcd or a router"),
            ("[10.0.0.2]", "one address each"),
        ] {
            let e = Topology::parse(Path::new("t.yaml"), &src.replace("[10.0.0.11, 10.0.0.2]", bad), None).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn assigns_addresses() {
        let t = parse(GOOD).unwrap();
        assert_eq!(t.hosts.len(), 3);
        assert_eq!(t.hosts[0].name.as_str(), "h1");
        assert_eq!(t.hosts[2].addr, "192.168.99.3".parse::<Ipv4Addr>().unwrap());
        assert_eq!(t.etcd.1, "192.168.99.254".parse::<Ipv4Addr>().unwrap());
        assert_eq!(t.segments[0].mtu, 1500);
        assert!(t.scalable);
        let big = Topology::parse(Path::new("t.yaml"), GOOD, Some(8)).unwrap();
        assert_eq!(big.hosts.len(), 8);
    }

    #[test]
    fn a_segment_is_one_bridge_of_at_most_1024_ports() {
        let large = GOOD.replace("192.168.99.0/24", "192.168.96.0/21");
        let fits = Topology::parse(Path::new("t.yaml"), &large, Some(1000)).expect("1000 hosts and etcd fit one bridge");
        assert_eq!(fits.hosts.len(), 1000);
        assert_eq!(fits.hosts[999].name.as_str(), "h1000");
        let e = Topology::parse(Path::new("t.yaml"), &large, Some(1020)).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert!(e.0[0].message.contains("needs 1021 bridge ports"), "{}", e.0[0].message);
        assert!(e.0[0].hint.contains("several segments"), "{}", e.0[0].hint);
    }

    fn only_error(src: &str) -> crate::input::diag::Diagnostic {
        let e = parse(src).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        e.0[0].clone()
    }

    #[test]
    fn unknown_key_has_location_and_hint() {
        let d = only_error(&GOOD.replace("    count: 3", "    count: 3\n    colour: red"));
        assert_eq!((d.line, d.column), (7, 5), "{d}");
        assert!(d.message.contains("unknown key `colour`"), "{d}");
        assert_eq!(d.path, "hosts[0].colour");
        assert!(!d.hint.is_empty());
    }

    #[test]
    fn bad_cidr_is_located() {
        let d = only_error(&GOOD.replace("192.168.99.0/24", "192.168.99.0/99"));
        assert_eq!((d.line, d.column), (3, 11), "{d}");
        assert_eq!(d.path, "segments[0].cidr");
        assert!(d.message.contains("not an IPv4 prefix"), "{d}");
    }

    #[test]
    fn duplicate_host_is_located() {
        let src = GOOD.replace("    count: 3", "    names: [a, b, a]");
        let d = only_error(&src);
        assert_eq!((d.line, d.column), (6, 19), "{d}");
        assert!(d.message.contains("duplicate host `a`"), "{d}");
    }

    #[test]
    fn too_many_hosts_for_the_cidr() {
        let small = GOOD.replace("192.168.99.0/24", "192.168.99.0/29");
        let d = only_error(&small.replace("count: 3", "count: 6"));
        assert_eq!((d.line, d.column), (3, 11), "{d}");
        assert!(d.message.contains("holds 6 addresses but segment `lan` needs 7"), "{d}");
        assert!(parse(&small.replace("count: 3", "count: 5")).is_ok());
        // a case scaling the topology up is checked the same way
        assert!(Topology::parse(Path::new("t.yaml"), &small, Some(6)).is_err());
    }

    #[test]
    fn reports_every_problem_at_once() {
        let src = "\
segments:
  - name: LAN
    cidr: 10.0.0.0/24
    mtu: 100
hosts:
  - segment: nowhere
    count: 2
etcd:
  segment: lan
";
        let e = parse(src).unwrap_err();
        assert_eq!(e.0.len(), 4, "{e}");
        let text = e.to_string();
        assert!(text.contains("t.yaml:2:11: segments[0].name"), "{text}");
        assert!(text.contains("t.yaml:4:10: segments[0].mtu"), "{text}");
        assert!(text.contains("t.yaml:6:14: hosts[0].segment"), "{text}");
        assert!(text.contains("t.yaml:9:12: etcd.segment"), "{text}");
    }

    const ROUTED: &str = "\
segments:
  - name: a
    cidr: 10.1.0.0/24
  - name: b
    cidr: 10.2.0.0/24
    mtu: 9000
  - name: c
    cidr: 10.3.0.0/24
hosts:
  - segment: a
    count: 2
  - segment: c
    names: [far]
routers:
  - name: r1
    segments: [a, b]
  - name: r2
    segments: [b, c]
etcd:
  segment: a
";

    #[test]
    fn routers_get_addresses_and_every_node_a_route_to_every_segment() {
        let t = parse(ROUTED).unwrap();
        assert_eq!(t.routers[0].legs, vec![(0, "10.1.0.253".parse().unwrap()), (1, "10.2.0.253".parse().unwrap())]);
        assert_eq!(t.routers[1].legs[1], (2, "10.3.0.253".parse().unwrap()));
        let r = |d: &str, v: &str| StaticRoute { dst: d.parse().unwrap(), via: v.parse().unwrap() };
        // a host on `a` goes through r1 for both b and c
        assert_eq!(t.routes_for(&[0], None), vec![r("10.2.0.0/24", "10.1.0.253"), r("10.3.0.0/24", "10.1.0.253")]);
        // the host on `c` goes through r2
        assert_eq!(t.routes_for(&[2], None), vec![r("10.1.0.0/24", "10.3.0.253"), r("10.2.0.0/24", "10.3.0.253")]);
        // r1 reaches c through r2's leg on b; r2 reaches a through r1
        assert_eq!(t.routes_for(&[0, 1], Some(&t.routers[0].name)), vec![r("10.3.0.0/24", "10.2.0.252")]);
        assert_eq!(t.routes_for(&[1, 2], Some(&t.routers[1].name)), vec![r("10.1.0.0/24", "10.2.0.253")]);
    }

    #[test]
    fn dual_stack_underlay_mirrors_host_parts() {
        let src = ROUTED
            .replace("10.1.0.0/24\n", "10.1.0.0/24\n    cidr6: fd00:1::/64\n")
            .replace("10.2.0.0/24\n", "10.2.0.0/24\n    cidr6: fd00:2::/64\n")
            .replace("10.3.0.0/24\n", "10.3.0.0/24\n    cidr6: fd00:3::/64\n");
        let t = parse(&src).unwrap();
        assert!(t.dual_stack());
        assert_eq!(t.v6_of(0, t.hosts[1].addr), Some("fd00:1::2".parse().unwrap()));
        let r6 = t.routes6_for(&[2], None);
        assert_eq!(r6[0], StaticRoute { dst: "fd00:1::/64".parse().unwrap(), via: "fd00:3::fd".parse().unwrap() });
        let half = ROUTED.replace("10.1.0.0/24\n", "10.1.0.0/24\n    cidr6: fd00:1::/64\n");
        assert!(parse(&half).unwrap_err().to_string().contains("a dual-stack underlay gives every segment a `cidr6`"));
    }

    #[test]
    fn an_unreachable_segment_is_rejected() {
        let src = ROUTED.replace("    segments: [b, c]\n", "    segments: [b, b]\n");
        let e = parse(&src).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("segment `b` listed twice"), "{text}");
        assert!(text.contains("segment `c` has no route to etcd's segment `a`"), "{text}");
    }

    #[test]
    fn missing_file_is_a_diagnostic_not_a_panic() {
        let e = Topology::load(Path::new("/nonexistent/topo.yaml")).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/topo.yaml:1:1: cannot read the topology file: it does not exist"), "{e}");
    }

    #[test]
    fn syntax_error_is_located() {
        let e = parse("segments:\n  - name: lan\n   cidr: [\n").unwrap_err();
        assert!(e.0[0].line >= 2, "{e}");
    }

    #[test]
    fn bundled_topologies_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "yaml") {
                Topology::load(&p).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n > 0);
    }
}
