//! What the underlay must show of pod traffic, judged from captured frames (pure):
//!
//! - vxlan: every packet between pods of two hosts crosses as VXLAN on the net-conf's UDP
//!   port (8472 unless `Port`), with its VNI (1 unless `VNI`), outer addresses the two
//!   hosts' PublicIPs, and inner MACs the two leases' VtepMACs; with `DirectRouting`,
//!   hosts on one segment exchange it unencapsulated;
//! - udp: as one bare IPv4 packet per datagram to the net-conf's port (8285 unless
//!   `Port`), between the two PublicIPs;
//! - host-gw: unencapsulated.
//!
//! Frames are attributed to the hosts whose subnets hold the inner addresses; each problem
//! becomes one finding about the sending host, with how many frames showed it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::{Backend, Check, Finding, NetConf};
use crate::input::names::Ipv4Net;
use crate::lab::nl::format_mac as mac;
use crate::probe::frames::{Datagram, Mac, Wire};

/// A host as its lease describes it.
#[derive(Debug, Clone)]
pub struct WireHost {
    pub name: String,
    pub public_ip: Ipv4Addr,
    pub subnet: Ipv4Net,
    pub vtep_mac: Option<Mac>,
    /// Hosts on one segment reach each other without a gateway (DirectRouting).
    pub segment: usize,
}

/// What the capture showed: overlay frames per (sender, receiver), and the findings.
#[derive(Debug, Default)]
pub struct WireVerdict {
    pub counts: BTreeMap<(String, String), u64>,
    pub findings: Vec<Finding>,
    /// Frames of pod traffic between two hosts that were judged.
    pub examined: u64,
    /// Frames between two hosts' PublicIPs in no form the lab knows (not pod traffic it
    /// can read), per (sender, receiver): how many, and the first one's description.
    pub unknown: BTreeMap<(String, String), (u64, String)>,
}

/// How a frame carried pod traffic.
enum Form<'a> {
    /// Unencapsulated: the pod addresses are the packet's own.
    Plain {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        what: &'static str,
    },
    Vxlan {
        d: &'a Datagram,
        vni: u32,
        flags: u8,
        inner_src_mac: Mac,
        inner_dst_mac: Mac,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    },
    /// One bare IPv4 packet in a UDP datagram.
    Bare {
        d: &'a Datagram,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    },
    /// A datagram between two hosts on the udp backend's port that holds no bare IPv4 packet.
    BadPayload {
        d: &'a Datagram,
        why: String,
    },
}

fn form<'a>(conf: &NetConf, hosts: &[WireHost], w: &'a Wire) -> Option<Form<'a>> {
    let pod = |a: Ipv4Addr| conf.network.contains(a);
    let host_ip = |a: Ipv4Addr| hosts.iter().any(|h| h.public_ip == a);
    match w {
        Wire::Ip { src, dst, .. } if pod(*src) || pod(*dst) => Some(Form::Plain { src: *src, dst: *dst, what: "IPv4" }),
        Wire::Udp(d) if pod(d.src) || pod(d.dst) => Some(Form::Plain { src: d.src, dst: d.dst, what: "UDP" }),
        Wire::Udp(d) => {
            if let Some(v) = d.vxlan() {
                if let Some((src, dst)) = v.inner.filter(|(s, t)| pod(*s) || pod(*t)) {
                    return Some(Form::Vxlan {
                        d,
                        vni: v.vni,
                        flags: v.flags,
                        inner_src_mac: v.inner_src_mac,
                        inner_dst_mac: v.inner_dst_mac,
                        src,
                        dst,
                    });
                }
            }
            match d.bare_ipv4() {
                Ok((src, dst)) if pod(src) || pod(dst) => Some(Form::Bare { d, src, dst }),
                Err(why) if conf.backend == Backend::Udp && (d.dport == conf.port || d.sport == conf.port) && host_ip(d.src) => {
                    Some(Form::BadPayload { d, why })
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// Judges the frames against the net-conf and the hosts' leases.
pub fn judge(conf: &NetConf, hosts: &[WireHost], frames: &[Wire]) -> WireVerdict {
    let owner = |a: Ipv4Addr| hosts.iter().find(|h| h.subnet.contains(a));
    let by_ip = |a: Ipv4Addr| hosts.iter().find(|h| h.public_ip == a);
    let mut v = WireVerdict::default();
    // (check, host) → (frames, the first frame's story)
    let mut problems: BTreeMap<(Check, String), (u64, String)> = BTreeMap::new();
    let mut problem = |check: Check, host: &WireHost, story: String| {
        problems.entry((check, host.name.clone())).or_insert((0, story)).0 += 1;
    };
    for w in frames {
        let Some(f) = form(conf, hosts, w) else {
            let between = match w {
                Wire::Udp(d) => Some((d.src, d.dst, format!("UDP {} → {}", d.sport, d.dport))),
                Wire::Ip { src, dst, protocol, .. } => Some((*src, *dst, format!("IP protocol {protocol}"))),
                Wire::Other => None,
            };
            if let Some((Some(a), Some(b), what)) = between.map(|(x, y, what)| (by_ip(x), by_ip(y), what)) {
                v.unknown.entry((a.name.clone(), b.name.clone())).or_insert((0, what)).0 += 1;
            }
            continue;
        };
        let (sender, receiver) = match &f {
            Form::Plain { src, dst, .. } | Form::Vxlan { src, dst, .. } | Form::Bare { src, dst, .. } => (owner(*src), owner(*dst)),
            Form::BadPayload { d, .. } => (by_ip(d.src), by_ip(d.dst)),
        };
        let (Some(s), Some(r)) = (sender, receiver) else { continue };
        if s.name == r.name {
            continue;
        }
        v.examined += 1;
        *v.counts.entry((s.name.clone(), r.name.clone())).or_default() += 1;
        let pair = format!("{} → {}", s.name, r.name);
        let direct = conf.direct_routing && s.segment == r.segment;
        match (conf.backend, &f) {
            (Backend::HostGw, Form::Plain { .. }) => {}
            (Backend::Vxlan, Form::Plain { .. }) if direct => {}
            (Backend::Vxlan, Form::Vxlan { d, vni, flags, inner_src_mac, inner_dst_mac, src, dst }) if !direct => {
                let inner = format!("{pair} ({src} → {dst})");
                if d.dport != conf.port {
                    problem(Check::WirePort, s, format!("{inner}: VXLAN to UDP port {}, the net-conf's port is {}", d.dport, conf.port));
                }
                if *vni != conf.vni || flags & 0x08 == 0 {
                    problem(Check::WireVni, s, format!("{inner}: VNI {vni} (flags {flags:#04x}), the net-conf's VNI is {}", conf.vni));
                }
                if d.src != s.public_ip || d.dst != r.public_ip {
                    problem(
                        Check::WireAddresses,
                        s,
                        format!("{inner}: outer {} → {}, the leases' PublicIPs are {} → {}", d.src, d.dst, s.public_ip, r.public_ip),
                    );
                }
                if Some(*inner_src_mac) != s.vtep_mac || Some(*inner_dst_mac) != r.vtep_mac {
                    let lease = |m: &Option<Mac>| m.as_ref().map(mac).unwrap_or_else(|| "none".into());
                    problem(
                        Check::WireVtepMac,
                        s,
                        format!(
                            "{inner}: inner MACs {} → {}, the leases' VtepMACs are {} → {}",
                            mac(inner_src_mac),
                            mac(inner_dst_mac),
                            lease(&s.vtep_mac),
                            lease(&r.vtep_mac)
                        ),
                    );
                }
            }
            (Backend::Udp, Form::Bare { d, src, dst }) => {
                let inner = format!("{pair} ({src} → {dst})");
                if d.dport != conf.port {
                    problem(Check::WirePort, s, format!("{inner}: datagram to UDP port {}, the net-conf's port is {}", d.dport, conf.port));
                }
                if d.src != s.public_ip || d.dst != r.public_ip {
                    problem(
                        Check::WireAddresses,
                        s,
                        format!("{inner}: outer {} → {}, the leases' PublicIPs are {} → {}", d.src, d.dst, s.public_ip, r.public_ip),
                    );
                }
            }
            (Backend::Udp, Form::BadPayload { d, why }) => {
                problem(Check::WirePayload, s, format!("{pair}: a datagram to port {} holds no bare IPv4 packet: {why}", d.dport));
            }
            (backend, f) => {
                let seen = match f {
                    Form::Plain { src, dst, what } => format!("unencapsulated ({what} {src} → {dst})"),
                    Form::Vxlan { d, vni, .. } => format!("as VXLAN (VNI {vni}, UDP port {})", d.dport),
                    Form::Bare { d, .. } => format!("as bare IPv4 in UDP (port {}), the udp backend's format", d.dport),
                    Form::BadPayload { d, .. } => format!("in UDP to port {}", d.dport),
                };
                let want = match (backend, direct) {
                    (Backend::HostGw, _) | (Backend::Vxlan, true) => "unencapsulated",
                    (Backend::Vxlan, false) => "as VXLAN",
                    (Backend::Udp, _) => "as one bare IPv4 packet per UDP datagram",
                };
                problem(Check::WireEncap, s, format!("{pair}: pod traffic crossed the underlay {seen}; {backend} carries it {want}"));
            }
        }
    }
    v.findings = problems
        .into_iter()
        .map(|((check, host), (n, story))| Finding::new(check, host, format!("{n} frame(s) like this: {story}")))
        .collect();
    v
}

/// `h1→h2 6, h1→h3 6, …`: the per-peer frame counts for the log.
pub fn describe_counts(counts: &BTreeMap<(String, String), u64>) -> String {
    counts.iter().map(|((s, r), n)| format!("{s}→{r} {n}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::frames::decode;
    use crate::probe::frames::tests::{frame, ip_header, vxlan_payload};

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    const M1: Mac = [0x0e, 1, 1, 1, 1, 1];
    const M2: Mac = [0x0e, 2, 2, 2, 2, 2];

    fn hosts() -> Vec<WireHost> {
        vec![
            WireHost {
                name: "h1".into(),
                public_ip: a("192.168.99.1"),
                subnet: "10.244.1.0/24".parse().unwrap(),
                vtep_mac: Some(M1),
                segment: 0,
            },
            WireHost {
                name: "h2".into(),
                public_ip: a("192.168.99.2"),
                subnet: "10.244.2.0/24".parse().unwrap(),
                vtep_mac: Some(M2),
                segment: 0,
            },
        ]
    }

    fn conf(json: &str) -> NetConf {
        NetConf::from_json(&serde_json::from_str(json).unwrap()).unwrap()
    }

    fn vxlan(outer: (&str, &str), port: u16, vni: u32, macs: (Mac, Mac)) -> Wire {
        decode(&frame(a(outer.0), a(outer.1), Some((50000, port)), &vxlan_payload(vni, macs.0, macs.1, a("10.244.1.1"), a("10.244.2.1"))))
    }

    fn checks(v: &WireVerdict) -> Vec<(Check, String)> {
        v.findings.iter().map(|f| (f.check, f.host.clone())).collect()
    }

    #[test]
    fn frames_between_hosts_in_an_unknown_form_are_counted_apart() {
        let c = conf(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#);
        // UDP between the two PublicIPs to a port no backend uses, holding no packet the lab reads
        let odd = decode(&frame(a("192.168.99.1"), a("192.168.99.2"), Some((40000, 9999)), &[0xde, 0xad, 0xbe, 0xef]));
        let v = judge(&c, &hosts(), &[odd.clone(), odd]);
        assert!(v.findings.is_empty() && v.examined == 0, "not pod traffic it can read");
        assert_eq!(v.unknown.get(&("h1".into(), "h2".into())), Some(&(2, "UDP 40000 → 9999".to_string())));
        // traffic with something that is not a host (etcd) is none of its business
        let etcd = decode(&frame(a("192.168.99.1"), a("192.168.99.254"), Some((40000, 2379)), &[1, 2, 3]));
        assert!(judge(&c, &hosts(), &[etcd]).unknown.is_empty());
    }

    #[test]
    fn correct_vxlan_passes_and_each_fault_is_its_own_finding() {
        let c = conf(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#);
        let good = vxlan(("192.168.99.1", "192.168.99.2"), 8472, 1, (M1, M2));
        let v = judge(&c, &hosts(), &[good.clone(), good.clone()]);
        assert!(v.findings.is_empty(), "{:?}", v.findings);
        assert_eq!((v.examined, v.counts.get(&("h1".into(), "h2".into()))), (2, Some(&2)));
        let cases = [
            (vxlan(("192.168.99.1", "192.168.99.2"), 4789, 1, (M1, M2)), Check::WirePort),
            (vxlan(("192.168.99.1", "192.168.99.2"), 8472, 2, (M1, M2)), Check::WireVni),
            (vxlan(("192.0.2.1", "192.168.99.2"), 8472, 1, (M1, M2)), Check::WireAddresses),
            (vxlan(("192.168.99.1", "192.168.99.2"), 8472, 1, (M1, [0x0e, 0, 0, 0, 0, 1])), Check::WireVtepMac),
            (decode(&frame(a("10.244.1.1"), a("10.244.2.1"), None, &[8, 0, 0, 0])), Check::WireEncap),
        ];
        for (w, check) in cases {
            let v = judge(&c, &hosts(), &[good.clone(), w]);
            assert_eq!(checks(&v), vec![(check, "h1".to_string())], "{:?}", v.findings);
        }
        // a VNI from the net-conf
        let seven = conf(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":7,"Port":4789}}"#);
        assert!(judge(&seven, &hosts(), &[vxlan(("192.168.99.1", "192.168.99.2"), 4789, 7, (M1, M2))]).findings.is_empty());
        // DirectRouting on one segment: unencapsulated is right, VXLAN is not
        let direct = conf(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}"#);
        let plain = decode(&frame(a("10.244.1.1"), a("10.244.2.1"), None, &[8, 0, 0, 0]));
        assert!(judge(&direct, &hosts(), std::slice::from_ref(&plain)).findings.is_empty());
        assert_eq!(checks(&judge(&direct, &hosts(), &[good])), vec![(Check::WireEncap, "h1".to_string())]);
    }

    #[test]
    fn udp_wants_one_bare_ipv4_packet_to_its_port_and_host_gw_wants_none() {
        let c = conf(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}"#);
        let mut inner = ip_header(a("10.244.2.1"), a("10.244.1.1"), 1, 8);
        inner.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        let bare = |outer: (&str, &str), dport: u16, payload: &[u8]| decode(&frame(a(outer.0), a(outer.1), Some((8285, dport)), payload));
        let good = bare(("192.168.99.2", "192.168.99.1"), 8285, &inner);
        let v = judge(&c, &hosts(), std::slice::from_ref(&good));
        assert!(v.findings.is_empty() && v.examined == 1, "{:?}", v.findings);
        let mut broken = inner.clone();
        broken[0] = 0x65;
        for (w, check) in [
            (bare(("192.168.99.2", "192.168.99.1"), 4789, &inner), Check::WirePort),
            (bare(("192.0.2.2", "192.168.99.1"), 8285, &inner), Check::WireAddresses),
            (bare(("192.168.99.2", "192.168.99.1"), 8285, &broken), Check::WirePayload),
            (vxlan(("192.168.99.1", "192.168.99.2"), 8472, 1, (M1, M2)), Check::WireEncap),
        ] {
            let v = judge(&c, &hosts(), &[good.clone(), w]);
            let want = if check == Check::WireEncap { "h1" } else { "h2" };
            assert_eq!(checks(&v), vec![(check, want.to_string())], "{:?}", v.findings);
        }
        let hg = conf(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#);
        let plain = decode(&frame(a("10.244.1.1"), a("10.244.2.1"), None, &[8, 0, 0, 0]));
        assert!(judge(&hg, &hosts(), std::slice::from_ref(&plain)).findings.is_empty());
        let v = judge(&hg, &hosts(), &[plain, vxlan(("192.168.99.1", "192.168.99.2"), 4789, 99, ([2; 6], [3; 6]))]);
        assert_eq!(checks(&v), vec![(Check::WireEncap, "h1".to_string())]);
        assert!(v.findings[0].what.contains("as VXLAN (VNI 99, UDP port 4789); host-gw carries it unencapsulated"), "{:?}", v.findings);
        // traffic that is not between two hosts' pods is not examined
        let etcd = decode(&frame(a("192.168.99.1"), a("192.168.99.254"), None, &[0; 20]));
        assert_eq!(judge(&hg, &hosts(), &[etcd]).examined, 0);
    }
}
