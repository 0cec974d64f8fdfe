//! The lab's vocabulary that input files name: the backends it judges and the kinds of
//! check a finding (and so an expected failure) names.

use std::fmt;

use crate::input::diag::{Collector, Seg};

/// The backends the lab knows how to judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Backend {
    Vxlan,
    HostGw,
    Udp,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Vxlan, Backend::HostGw, Backend::Udp];
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
            Backend::Udp => "udp",
        }
    }

    /// The `BackendType` its leases carry: udp leases carry none (flanneld writes none).
    pub fn lease_type(&self) -> Option<&'static str> {
        match self {
            Backend::Udp => None,
            other => Some(other.name()),
        }
    }
    pub fn parse(s: &str) -> Option<Backend> {
        Backend::ALL.into_iter().find(|b| b.name() == s)
    }

    /// Parses a list of backend names from an input file; unknown names become located
    /// diagnostics under `at[i]`.
    pub fn parse_list(names: &[String], c: &mut Collector, at: &[Seg]) -> Vec<Backend> {
        let mut out = Vec::new();
        for (i, b) in names.iter().enumerate() {
            match Backend::parse(b) {
                Some(b) => out.push(b),
                None => {
                    let mut path = at.to_vec();
                    path.push(Seg::Index(i));
                    c.push(&path, format!("unknown backend `{b}`"), Backend::suggest(b));
                }
            }
        }
        out
    }

    /// The hint for an unknown backend name.
    pub fn known() -> String {
        format!("known: {}", Backend::ALL.map(|b| b.name()).join(", "))
    }

    /// The hint for an unknown backend name `b`: the nearest one first, when close.
    pub fn suggest(b: &str) -> String {
        match crate::input::diag::nearest(b, Backend::ALL.map(|b| b.name())) {
            Some(n) => format!("did you mean `{n}`? ({})", Backend::known()),
            None => Backend::known(),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kinds of check the lab makes. A finding names one; a negative control or a mutant
/// names the one it expects to fail (`expect_failure: {check: fdb, host: h2, …}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Leases in etcd: present, one per host, inside the network, right type and data.
    Lease,
    /// The subnet file's contents.
    SubnetFile,
    /// The overlay device: present, up, its kind, MTU, VNI, port, MAC.
    Device,
    Routes,
    Neighbours,
    Fdb,
    /// State another backend left behind.
    StaleState,
    /// A per-host number of entries that is not the contract's figure.
    Counts,
    /// Overlay traffic between hosts (convergence shown in the data plane).
    Reachability,
    /// Fresh evidence after a restart: an event the harness caused afterwards, not seen.
    Canary,
    /// Pod-to-pod echo.
    Ping,
    /// A pod interface's MTU.
    PodMtu,
    /// DF probes at and one byte above the overlay MTU.
    DfProbe,
    /// An agent exited while it should run.
    AgentExit,
    /// An agent that should have failed did not (still running, status 0, left state).
    AgentFailure,
    /// The profile's readiness condition.
    Readiness,
    /// A host's subnet changed.
    Subnets,
    /// Background traffic against its loss budget.
    Traffic,
    /// What became of an injected datagram.
    Delivery,
    /// Whether etcd admitted a host's agent: refused when it should be admitted (a TLS
    /// handshake etcd rejected), admitted when it should be refused.
    EtcdAccess,
    /// The source address a pod's traffic arrives with (ip-masq).
    SourceAddress,
    /// On the wire (the underlay capture): the VXLAN VNI of pod traffic.
    WireVni,
    /// On the wire: the UDP port pod traffic is sent to (vxlan, udp).
    WirePort,
    /// On the wire: outer addresses of encapsulated pod traffic are the hosts' PublicIPs.
    WireAddresses,
    /// On the wire: a VXLAN frame's inner MACs are the leases' VtepMACs.
    WireVtepMac,
    /// On the wire: a udp backend datagram holds exactly one bare IPv4 packet.
    WirePayload,
    /// On the wire: pod traffic is encapsulated as the backend does it (host-gw: not at all).
    WireEncap,
    /// An agent's own use of memory: above the case's `max_rss`, growing steadily through
    /// `stay_converged` (a leak), or ended by the OOM killer while the machine had memory.
    Resource,
}

impl Check {
    pub fn name(&self) -> &'static str {
        match self {
            Check::Lease => "lease",
            Check::SubnetFile => "subnet_file",
            Check::Device => "device",
            Check::Routes => "routes",
            Check::Neighbours => "neighbours",
            Check::Fdb => "fdb",
            Check::StaleState => "stale_state",
            Check::Counts => "counts",
            Check::Reachability => "reachability",
            Check::Canary => "canary",
            Check::Ping => "ping",
            Check::PodMtu => "pod_mtu",
            Check::DfProbe => "df_probe",
            Check::AgentExit => "agent_exit",
            Check::AgentFailure => "agent_failure",
            Check::Readiness => "readiness",
            Check::Subnets => "subnets",
            Check::Traffic => "traffic",
            Check::Delivery => "delivery",
            Check::EtcdAccess => "etcd_access",
            Check::SourceAddress => "source_address",
            Check::WireVni => "wire_vni",
            Check::WirePort => "wire_port",
            Check::WireAddresses => "wire_addresses",
            Check::WireVtepMac => "wire_vtep_mac",
            Check::WirePayload => "wire_payload",
            Check::WireEncap => "wire_encap",
            Check::Resource => "resource",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
