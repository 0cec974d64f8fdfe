//! The lab: a topology made real. A fabric namespace holds one bridge per segment; every
//! host (and etcd) is a namespace with `eth0` on its segment's bridge. Everything carries
//! the run id, and dropping the [`Lab`] removes all of it, also on failure or panic;
//! [`install_signal_cleanup`] covers Ctrl-C and SIGTERM.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::sys::signal::{SigSet, Signal};

use crate::error::Error;
use crate::input::names::RunId;
use crate::input::topology::Topology;
use crate::lab::gc::{self, RunLock};
use crate::lab::netns::Netns;
use crate::lab::nl::Nl;

/// The lab names every host's underlay interface `eth0`.
pub const UNDERLAY_IF: &str = "eth0";

/// A namespace attached to a segment: a host or the etcd node.
pub struct Node {
    pub name: String,
    pub ns: Netns,
    pub nl: Nl,
    pub addr: Ipv4Addr,
    /// The node's IPv6 address on a dual-stack underlay (same host part as `addr`).
    pub addr6: Option<Ipv6Addr>,
    pub segment: usize,
    /// This node's own directory under the run's work directory.
    pub dir: PathBuf,
}

pub struct Lab {
    pub run: RunId,
    pub topo: Topology,
    pub dir: PathBuf,
    pub hosts: Vec<Node>,
    pub routers: Vec<Node>,
    pub etcd: Option<Node>,
    /// Nodes on the underlay that are not hosts (the canary), with their addresses reserved.
    pub spares: Vec<Node>,
    /// Addresses hosts gave up (`change_host_addr`): kept out of reuse, since a lease in
    /// etcd may still name them.
    retired: Vec<Ipv4Addr>,
    fabric: Option<(Netns, Nl)>,
    _lock: RunLock,
}

/// Runs alive in this process, for the signal handler.
static LIVE: Mutex<Vec<RunId>> = Mutex::new(Vec::new());

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread (call it first thing in `main`,
/// before other threads exist, so they inherit the mask) and handles them on a thread of
/// its own: every live run is torn down, then the process exits with 128+signal.
pub fn install_signal_cleanup() {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            // no process starts from now on (a restart policy or a spread start would
            // otherwise put agents into namespaces the sweep already removed, through the
            // descriptors the harness holds); the spawns under way finish first
            super::proc::stop_spawning();
            let runs: Vec<RunId> = LIVE.lock().map(|l| l.clone()).unwrap_or_default();
            // not eprintln!: with stderr a closed pipe (a killed `tee`) it would panic this
            // thread and leave the runs, and the process, behind
            let _ = std::io::Write::write_fmt(
                &mut std::io::stderr(),
                format_args!("flannel-lab: {sig}: removing {} live run(s)\n", runs.len()),
            );
            let mut sweep = gc::Sweep::default();
            for id in runs {
                gc::remove_run(id, &mut sweep);
            }
            super::sysctl::restore();
            std::process::exit(128 + sig as i32);
        }
    });
}

impl Lab {
    /// Builds the topology under a fresh run id. Work files go to `workdir/<run id>-<label>`.
    /// With `etcd_ns` false the etcd node is left out: a container joins later through
    /// [`Lab::attach_external`].
    pub async fn build(topo: Topology, workdir: &Path, label: &str, etcd_ns: bool) -> Result<Lab, Error> {
        // a fresh id whose work directory does not exist yet: a failed trial keeps its
        // directory, and a later run drawing the same id for the same case must not write
        // into it (its CNI IPAM records made a pod's address a duplicate allocation)
        let (lock, dir) = loop {
            let lock = RunLock::acquire().map_err(|source| Error::RunLock { dir: gc::LOCK_DIR, source })?;
            let dir = workdir.join(format!("{}-{label}", lock.id));
            if !dir.exists() {
                break (lock, dir);
            }
        };
        let run = lock.id;
        LIVE.lock().expect("live-run registry").push(run);
        let mut lab = Lab {
            run,
            topo,
            dir: dir.clone(),
            hosts: Vec::new(),
            routers: Vec::new(),
            etcd: None,
            spares: Vec::new(),
            retired: Vec::new(),
            fabric: None,
            _lock: lock,
        };
        std::fs::create_dir_all(&dir).map_err(|source| Error::WorkDir { path: dir.clone(), source })?;
        super::sysctl::raise_open_files();
        let nodes = (lab.topo.hosts.len() + lab.topo.routers.len() + 2) as u64;
        if let Some(note) = super::sysctl::ensure_room(nodes)? {
            tracing::info!("{note}");
        }

        let fabric = Netns::create(&run.netns("fabric"))?;
        let fnl = Nl::open(&fabric)?;
        fnl.set_up("lo").await?;
        // the underlay is a plain L2 switch: with br_netfilter loaded (Docker loads it),
        // bridged frames would go through this namespace's iptables and conntrack
        for family in ["iptables", "ip6tables", "arptables"] {
            let key = format!("net/bridge/bridge-nf-call-{family}");
            if std::path::Path::new("/proc/sys").join(&key).exists() {
                fabric.sysctl(&key, "0")?;
            }
        }
        for seg in &lab.topo.segments {
            let br = format!("br-{}", seg.name);
            fnl.add_bridge(&br, seg.mtu).await?;
            fnl.set_up(&br).await?;
        }
        lab.fabric = Some((fabric, fnl));
        let hosts: Vec<(String, usize, Ipv4Addr)> = lab.topo.hosts.iter().map(|h| (h.name.to_string(), h.segment, h.addr)).collect();
        for (name, seg, addr) in hosts {
            let node = lab.attach(&name, seg, addr, true).await?;
            lab.hosts.push(node);
        }
        let (seg, addr) = lab.topo.etcd;
        if etcd_ns {
            let etcd = lab.attach("etcd", seg, addr, false).await?;
            lab.etcd = Some(etcd);
        }
        let routers = lab.topo.routers.clone();
        for (ri, r) in routers.iter().enumerate() {
            let node = lab.attach_router(ri, r).await?;
            lab.routers.push(node);
        }
        // static routes between segments, through the routers
        for node in lab.hosts.iter().chain(&lab.etcd) {
            lab.add_static_routes(&node.nl, &[node.segment], None).await?;
        }
        for (node, r) in lab.routers.iter().zip(&routers) {
            let segs: Vec<usize> = r.legs.iter().map(|(s, _)| *s).collect();
            lab.add_static_routes(&node.nl, &segs, Some(&r.name)).await?;
        }
        tracing::info!(run = %run, hosts = lab.hosts.len(), dir = %lab.dir.display(), "lab built");
        Ok(lab)
    }

    /// The routes a node on `segments` needs to every other segment, in both families on a
    /// dual-stack underlay.
    async fn add_static_routes(&self, nl: &Nl, segments: &[usize], me: Option<&crate::input::names::HostName>) -> Result<(), Error> {
        for route in self.topo.routes_for(segments, me) {
            nl.add_route(route.dst, route.via).await?;
        }
        for route in self.topo.routes6_for(segments, me) {
            nl.add_route(route.dst, route.via).await?;
        }
        Ok(())
    }

    /// Gives `link` the node's IPv6 address on segment `seg` (dual-stack underlays only).
    async fn add_address(&self, nl: &Nl, link: &str, seg: usize, addr: Ipv4Addr) -> Result<Option<Ipv6Addr>, Error> {
        let segment = &self.topo.segments[seg];
        let (Some(a6), Some(net6)) = (segment.v6_of(addr), segment.cidr6) else { return Ok(None) };
        nl.add_address(link, a6, net6.prefix()).await?;
        Ok(Some(a6))
    }

    /// Creates a node namespace with `eth0` on segment `seg`:
    /// `ip netns add fl<id>-NAME; ip link add p-NAME type veth peer eth0 netns …; ip link set p-NAME master br-SEG`.
    async fn attach(&self, name: &str, seg: usize, addr: Ipv4Addr, forwarding: bool) -> Result<Node, Error> {
        let segment = &self.topo.segments[seg];
        let ns = Netns::create(&self.run.netns(name))?;
        let nl = Nl::open(&ns)?;
        if segment.cidr6.is_some() {
            // a link taken down keeps its IPv6 addresses, as it keeps its IPv4 ones
            ns.sysctl("net/ipv6/conf/default/keep_addr_on_down", "1")?;
            ns.sysctl("net/ipv6/conf/all/keep_addr_on_down", "1")?;
        }
        let (_, fnl) = self.fabric.as_ref().expect("fabric is built first");
        let port = format!("p-{name}");
        fnl.add_veth(&port, "eth0", &ns, segment.mtu).await?;
        fnl.enslave(&port, &format!("br-{}", segment.name)).await?;
        nl.set_up("lo").await?;
        nl.add_address("eth0", addr, segment.cidr.prefix()).await?;
        let addr6 = self.add_address(&nl, "eth0", seg, addr).await?;
        nl.set_up("eth0").await?;
        if forwarding {
            ns.sysctl("net/ipv4/ip_forward", "1")?;
            if addr6.is_some() {
                ns.sysctl("net/ipv6/conf/all/forwarding", "1")?;
            }
        }
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).map_err(|source| Error::WorkDir { path: dir.clone(), source })?;
        Ok(Node { name: name.to_string(), ns, nl, addr, addr6, segment: seg, dir })
    }

    /// Puts a namespace the lab did not create (a container's) on the etcd segment at the
    /// topology's etcd address, with routes to every segment:
    /// `ip link add p-NAME type veth peer eth0 netns PID; ip addr add …; ip route add …`.
    /// Re-run after the container restarts (its veth dies with it).
    pub async fn attach_external(&self, name: &str, ns: &Netns, addr: std::net::Ipv4Addr, mac_tag: u8) -> Result<Nl, Error> {
        let (seg, _) = self.topo.etcd;
        let segment = &self.topo.segments[seg];
        let nl = Nl::open(ns)?;
        let (_, fnl) = self.fabric.as_ref().expect("fabric is built first");
        let port = format!("p-{name}");
        // the previous attachment survives while anything still holds the old namespace
        if fnl.index_of(&port).await.is_ok() {
            fnl.del_link(&port).await?;
        }
        // the same MAC on every attachment: peers' ARP caches stay right across restarts
        fnl.add_veth_with_mac(&port, "eth0", ns, segment.mtu, Some(self.run.stable_mac(mac_tag))).await?;
        fnl.enslave(&port, &format!("br-{}", segment.name)).await?;
        nl.set_up("lo").await?;
        nl.add_address("eth0", addr, segment.cidr.prefix()).await?;
        self.add_address(&nl, "eth0", seg, addr).await?;
        nl.set_up("eth0").await?;
        self.add_static_routes(&nl, &[seg], None).await?;
        Ok(nl)
    }

    /// `n` addresses for etcd members on etcd's segment: the topology's etcd address, then
    /// the highest addresses no host or router uses.
    pub fn etcd_member_addresses(&self, n: usize) -> Result<Vec<std::net::Ipv4Addr>, Error> {
        let (seg, first) = self.topo.etcd;
        let cidr = self.topo.segments[seg].cidr;
        let taken = |a: &std::net::Ipv4Addr| {
            *a == first
                || self.topo.hosts.iter().any(|h| h.addr == *a)
                || self.topo.routers.iter().any(|r| r.legs.iter().any(|(_, x)| x == a))
        };
        let mut out = vec![first];
        out.extend((1..cidr.host_capacity() as u32).rev().map(|k| cidr.nth(k)).filter(|a| !taken(a)).take(n.saturating_sub(1)));
        if out.len() < n {
            return Err(Error::SegmentFull { segment: self.topo.segments[seg].name.clone() });
        }
        Ok(out)
    }

    /// The next address on segment `seg` that no host, router, etcd or spare node uses.
    fn free_address(&self, seg: usize) -> Result<Ipv4Addr, Error> {
        let cidr = self.topo.segments[seg].cidr;
        let used: Vec<std::net::Ipv4Addr> =
            self.topo.hosts.iter().map(|h| h.addr).chain(self.spares.iter().map(|s| s.addr)).chain(self.retired.iter().copied()).collect();
        (1..cidr.host_capacity() as u32)
            .map(|n| cidr.nth(n))
            .find(|a| !used.contains(a) && *a != self.topo.etcd.1 && !self.topo.routers.iter().any(|r| r.legs.iter().any(|(_, x)| x == a)))
            .ok_or(Error::SegmentFull { segment: self.topo.segments[seg].name.clone() })
    }

    /// A node on segment `seg` that is not a host (no agent runs there): a canary the
    /// harness announces as a fake peer. Returns its index in `spares`.
    pub async fn add_spare(&mut self, name: &str, seg: usize) -> Result<usize, Error> {
        let addr = self.free_address(seg)?;
        let node = self.attach(name, seg, addr, false).await?;
        self.add_static_routes(&node.nl, &[seg], None).await?;
        self.spares.push(node);
        Ok(self.spares.len() - 1)
    }

    /// A host joining a running lab: on the first host's segment, at the next free address.
    pub async fn add_host(&mut self, name: &crate::input::names::HostName) -> Result<(), Error> {
        let seg = self.topo.hosts.first().map(|h| h.segment).unwrap_or(0);
        let addr = self.free_address(seg)?;
        let node = self.attach(name.as_str(), seg, addr, true).await?;
        self.add_static_routes(&node.nl, &[seg], None).await?;
        self.topo.hosts.push(crate::input::topology::Host { name: name.clone(), segment: seg, addr });
        self.hosts.push(node);
        Ok(())
    }

    /// A router namespace with one leg per segment: `e-SEG` inside, `xN-SEG` on the bridge.
    async fn attach_router(&self, index: usize, r: &crate::input::topology::Router) -> Result<Node, Error> {
        let name = r.name.to_string();
        let ns = Netns::create(&self.run.netns(&name))?;
        let nl = Nl::open(&ns)?;
        let (_, fnl) = self.fabric.as_ref().expect("fabric is built first");
        nl.set_up("lo").await?;
        for (seg, addr) in &r.legs {
            let segment = &self.topo.segments[*seg];
            let (port, leg) = (format!("x{index}-{}", segment.name), format!("e-{}", segment.name));
            fnl.add_veth(&port, &leg, &ns, segment.mtu).await?;
            fnl.enslave(&port, &format!("br-{}", segment.name)).await?;
            nl.add_address(&leg, *addr, segment.cidr.prefix()).await?;
            self.add_address(&nl, &leg, *seg, *addr).await?;
            nl.set_up(&leg).await?;
        }
        ns.sysctl("net/ipv4/ip_forward", "1")?;
        if self.topo.dual_stack() {
            ns.sysctl("net/ipv6/conf/all/forwarding", "1")?;
        }
        let dir = self.dir.join(&name);
        std::fs::create_dir_all(&dir).map_err(|source| Error::WorkDir { path: dir.clone(), source })?;
        let (segment, addr) = r.legs[0];
        Ok(Node { name, ns, nl, addr, addr6: self.topo.v6_of(segment, addr), segment, dir })
    }

    /// Cuts (`up` false) or restores a node's underlay link at its bridge port.
    pub async fn set_link(&self, node: &str, up: bool) -> Result<(), Error> {
        let (_, fnl) = self.fabric.as_ref().expect("fabric is built first");
        let port = format!("p-{node}");
        if up {
            fnl.set_up(&port).await?
        } else {
            fnl.set_down(&port).await?
        }
        Ok(())
    }

    /// Takes a host's own underlay interface down for `down_for` and up again, as an
    /// operator or a flapping NIC does: the kernel deletes every route through it, and the
    /// machine's network configuration puts back its static routes to other segments (the
    /// agent's routes are the agent's to restore).
    pub async fn flap_host_link(&self, name: &str, down_for: std::time::Duration) -> Result<(), Error> {
        let node = self.host(name).ok_or_else(|| Error::Lab(format!("no host `{name}`")))?;
        node.nl.set_down(UNDERLAY_IF).await?;
        tokio::time::sleep(down_for).await;
        node.nl.set_up(UNDERLAY_IF).await?;
        self.add_static_routes(&node.nl, &[node.segment], None).await?;
        Ok(())
    }

    /// Moves a host to the next free address on its segment (a DHCP lease changed, a VM
    /// moved), putting back its static routes. Returns (old, new).
    pub async fn change_host_addr(&mut self, name: &str) -> Result<(Ipv4Addr, Ipv4Addr), Error> {
        let i = self.hosts.iter().position(|h| h.name == name).ok_or_else(|| Error::Lab(format!("no host `{name}`")))?;
        let seg = self.hosts[i].segment;
        let prefix = self.topo.segments[seg].cidr.prefix();
        let new = self.free_address(seg)?;
        let old = self.hosts[i].addr;
        let node = &self.hosts[i];
        // deleting a primary address takes its secondaries along: old first, then new
        node.nl.del_address(UNDERLAY_IF, old, prefix).await?;
        node.nl.add_address(UNDERLAY_IF, new, prefix).await?;
        let have = node.nl.routes().await?;
        for route in self.topo.routes_for(&[seg], None) {
            if !have.iter().any(|r| r.dst == route.dst) {
                node.nl.add_route(route.dst, route.via).await?;
            }
        }
        self.hosts[i].addr = new;
        if let Some(h) = self.topo.hosts.iter_mut().find(|h| h.name.as_str() == name) {
            h.addr = new;
        }
        self.retired.push(old);
        Ok((old, new))
    }

    /// Deletes a host's underlay interface and creates it again with the same name, MAC,
    /// address and static routes, as when a NIC driver reloads or a VM's interface is
    /// re-plugged. Everything bound to the old interface goes with it, among them a vxlan
    /// device created on top of it and every route through it.
    pub async fn recreate_host_link(&self, name: &str) -> Result<(), Error> {
        let node = self.host(name).ok_or_else(|| Error::Lab(format!("no host `{name}`")))?;
        let segment = &self.topo.segments[node.segment];
        let (_, fnl) = self.fabric.as_ref().expect("fabric is built first");
        let mac = node
            .nl
            .links()
            .await?
            .into_iter()
            .find(|l| l.name == UNDERLAY_IF)
            .and_then(|l| l.mac)
            .and_then(|m| crate::lab::nl::parse_mac(&m))
            .ok_or_else(|| Error::Lab(format!("{name}: no `{UNDERLAY_IF}` with a MAC to recreate it with")))?;
        let port = format!("p-{name}");
        fnl.del_link(&port).await?;
        fnl.add_veth_with_mac(&port, UNDERLAY_IF, &node.ns, segment.mtu, Some(mac)).await?;
        fnl.enslave(&port, &format!("br-{}", segment.name)).await?;
        node.nl.add_address(UNDERLAY_IF, node.addr, segment.cidr.prefix()).await?;
        self.add_address(&node.nl, UNDERLAY_IF, node.segment, node.addr).await?;
        node.nl.set_up(UNDERLAY_IF).await?;
        self.add_static_routes(&node.nl, &[node.segment], None).await?;
        Ok(())
    }

    /// Sets the MTU of a node's port on its segment bridge (`ip link set p-NODE mtu MTU` in
    /// the fabric): larger frames to or from the node are dropped there.
    pub async fn set_port_mtu(&self, node: &str, mtu: u32) -> Result<(), Error> {
        let (_, fnl) = self.fabric.as_ref().expect("fabric is built first");
        fnl.set_mtu(&format!("p-{node}"), mtu).await?;
        Ok(())
    }

    /// The namespace holding the segment bridges (where the underlay can be captured).
    pub fn fabric_ns(&self) -> &Netns {
        &self.fabric.as_ref().expect("fabric is built first").0
    }

    pub fn host(&self, name: &str) -> Option<&Node> {
        self.hosts.iter().find(|h| h.name == name)
    }

    pub fn etcd_node(&self) -> Option<&Node> {
        self.etcd.as_ref()
    }

    /// The underlay MTU of a host.
    pub fn mtu_of(&self, host: &Node) -> u32 {
        self.topo.segments[host.segment].mtu
    }

    /// Removes every namespace of this run and any process still inside one.
    pub fn teardown(&mut self) -> gc::Sweep {
        let mut sweep = gc::Sweep::default();
        self.hosts.clear();
        self.routers.clear();
        self.etcd = None;
        self.spares.clear();
        self.fabric = None;
        gc::remove_run(self.run, &mut sweep);
        if let Ok(mut live) = LIVE.lock() {
            live.retain(|r| *r != self.run);
            if live.is_empty() {
                super::sysctl::restore();
            }
        }
        for e in &sweep.errors {
            tracing::warn!(run = %self.run, error = e, "teardown problem");
        }
        sweep
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}
