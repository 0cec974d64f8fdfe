//! flannel's contract, as the harness reads it (DESIGN.md), written without the agent's
//! code, one file per subject: the net-conf ([`netconf`]), leases in etcd ([`lease`]), the
//! subnet file ([`subnet_file`]), the kernel state each backend leaves on a host
//! ([`kernel`], both families in one generic path) and what crosses the underlay ([`wire`]). A schema mistake
//! on either side therefore shows up as a failure. Every check returns [`Finding`]s.

pub mod finding;
pub mod kernel;
pub mod lease;
pub mod netconf;
pub mod subnet_file;
#[cfg(test)]
mod v6;
pub mod wire;

pub use crate::input::kinds::{Backend, Check};
pub use crate::probe::HostState;
pub use finding::Finding;
pub use kernel::*;
pub use lease::*;
pub use netconf::*;
pub use subnet_file::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::nl::{Address, FdbEntry, Neighbour, Route};
    use crate::lab::nl::{Link, VxlanInfo};
    use crate::lab::UNDERLAY_IF;
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    /// The kernel checks of `host` at `ip` on a 1500-byte underlay.
    pub(super) fn kernel_on(
        conf: &NetConf,
        host: &str,
        ip: &str,
        leases: &BTreeMap<Ipv4Addr, LeaseView>,
        state: &HostState,
        out: &mut Vec<Finding>,
    ) -> Counts {
        let view =
            HostView { conf, host, host_ip: ip.parse().unwrap(), host_ip6: None, underlay_mtu: 1500, leases, state, underlay: "eth0" };
        check_kernel(&view, out)
    }

    fn conf() -> NetConf {
        NetConf::from_json(&serde_json::json!({"network": "10.244.0.0/16", "backend": {"type": "vxlan"}})).unwrap()
    }

    fn lease(n: u8, mac: &str) -> LeaseView {
        LeaseView {
            subnet: format!("10.244.{n}.0/24").parse().unwrap(),
            public_ip: format!("192.168.99.{n}").parse().unwrap(),
            backend_type: Some("vxlan".into()),
            vtep_mac: Some(mac.into()),
            subnet6: None,
            public_ip6: None,
            vtep_mac6: None,
        }
    }

    fn good_state(peers: &[LeaseView]) -> HostState {
        let dev = Link {
            index: 5,
            name: "flannel.1".into(),
            mtu: 1450,
            up: true,
            kind: Some("vxlan".into()),
            mac: Some("02:00:00:00:00:01".into()),
            controller: None,
            vxlan: Some(VxlanInfo {
                vni: Some(1),
                port: Some(8472),
                local: Some("192.168.99.1".parse().unwrap()),
                local6: None,
                learning: Some(false),
                underlay_index: Some(2),
                gbp: false,
            }),
        };
        HostState {
            links: vec![dev],
            addresses: vec![],
            routes: peers
                .iter()
                .map(|p| Route { dst: p.subnet, gateway: Some(p.subnet.addr()), oif: Some(5), onlink: true, by_kernel: false })
                .collect(),
            neighbours: peers
                .iter()
                .map(|p| Neighbour { ifindex: 5, ip: p.subnet.addr(), mac: p.vtep_mac.clone(), permanent: true })
                .collect(),
            fdb: peers
                .iter()
                .map(|p| FdbEntry { ifindex: 5, mac: p.vtep_mac.clone().unwrap(), dst: Some(p.public_ip.into()), permanent: true })
                .collect(),
            subnet_file: None,
            ..HostState::default()
        }
    }

    /// The underlay `eth0` at ifindex 2.
    pub(super) fn eth0_link() -> Link {
        Link {
            index: 2,
            name: UNDERLAY_IF.into(),
            mtu: 1500,
            up: true,
            kind: Some("veth".into()),
            mac: None,
            controller: None,
            vxlan: None,
        }
    }

    fn leases() -> BTreeMap<Ipv4Addr, LeaseView> {
        [lease(1, "02:00:00:00:00:01"), lease(2, "02:00:00:00:00:02"), lease(3, "02:00:00:00:00:03")]
            .into_iter()
            .map(|l| (l.public_ip, l))
            .collect()
    }

    #[test]
    fn conf_defaults_and_case_insensitive_keys() {
        let c = conf();
        assert_eq!((c.subnet_len, c.vni, c.port, c.route_device()), (24, 1, 8472, "flannel.1".to_string()));
        assert_eq!(c.overlay_mtu(1500), 1450);
    }

    #[test]
    fn exact_state_passes() {
        let l = leases();
        let peers: Vec<LeaseView> = l.values().filter(|x| x.subnet.addr().octets()[2] != 1).cloned().collect();
        let mut out = Vec::new();
        let counts = kernel_on(&conf(), "h1", "192.168.99.1", &l, &good_state(&peers), &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(counts, Counts { routes: 2, neighbours: 2, fdb: 2, direct: 0, ..Counts::default() });
    }

    /// h1 (192.168.99.1/24 on eth0) with DirectRouting: h2 is on its segment, h3 (10.0.0.3)
    /// across a router.
    fn direct_routing_case() -> (NetConf, BTreeMap<Ipv4Addr, LeaseView>, HostState) {
        let c = NetConf::from_json(&serde_json::json!({"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "DirectRouting": true}}))
            .unwrap();
        let mut far = lease(3, "02:00:00:00:00:03");
        far.public_ip = "10.0.0.3".parse().unwrap();
        let near = lease(2, "02:00:00:00:00:02");
        let l: BTreeMap<Ipv4Addr, LeaseView> =
            [lease(1, "02:00:00:00:00:01"), near.clone(), far.clone()].into_iter().map(|l| (l.public_ip, l)).collect();
        let mut st = good_state(&[far]);
        st.links.push(eth0_link());
        st.addresses.push(Address { ifindex: 2, addr: "192.168.99.1".parse().unwrap(), net: "192.168.99.0/24".parse().unwrap() });
        st.routes.push(Route { dst: near.subnet, gateway: Some(near.public_ip), oif: Some(2), onlink: false, by_kernel: false });
        (c, l, st)
    }

    #[test]
    fn direct_routing_counts_both_kinds() {
        let (c, l, st) = direct_routing_case();
        let mut out = Vec::new();
        let counts = kernel_on(&c, "h1", "192.168.99.1", &l, &st, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(counts, Counts { routes: 1, neighbours: 1, fdb: 1, direct: 1, ..Counts::default() });
    }

    #[test]
    fn direct_routing_findings_name_the_missing_kind() {
        // the direct route lost (upstream #1070)
        let (c, l, mut st) = direct_routing_case();
        st.routes.retain(|r| r.oif != Some(2));
        let mut out = Vec::new();
        kernel_on(&c, "h1", "192.168.99.1", &l, &st, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].check, Check::Routes);
        assert!(out[0].what.contains("0 of 1 direct routes on eth0"), "{}", out[0]);
        // the near peer served over vxlan instead of directly
        let (c, l, mut st) = direct_routing_case();
        st.routes.retain(|r| r.oif != Some(2));
        let near = l.values().find(|p| p.subnet.addr().octets()[2] == 2).unwrap();
        st.routes.push(Route { dst: near.subnet, gateway: Some(near.subnet.addr()), oif: Some(5), onlink: true, by_kernel: false });
        let mut out = Vec::new();
        kernel_on(&c, "h1", "192.168.99.1", &l, &st, &mut out);
        let text: Vec<String> = out.iter().map(|f| f.to_string()).collect();
        assert!(text.iter().any(|t| t.contains("unexpected: 10.244.2.0/24 via 10.244.2.0")), "{text:?}");
    }

    #[test]
    fn vxlan_options_are_judged_on_the_device() {
        let l = leases();
        let peers: Vec<LeaseView> = l.values().filter(|x| x.subnet.addr().octets()[2] != 1).cloned().collect();
        let c = NetConf::from_json(
            &serde_json::json!({"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "MTU": 1400, "GBP": true, "Learning": true}}),
        )
        .unwrap();
        assert_eq!(c.overlay_mtu(1500), 1400);
        // a device made without the options: each is named
        let mut out = Vec::new();
        kernel_on(&c, "h1", "192.168.99.1", &l, &good_state(&peers), &mut out);
        let text: Vec<String> = out.iter().map(|f| f.to_string()).collect();
        assert_eq!(out.len(), 3, "{text:?}");
        assert!(out.iter().all(|f| f.check == Check::Device), "{text:?}");
        assert!(text[0].contains("MTU 1450, expected 1400"), "{text:?}");
        assert!(text.iter().any(|t| t.contains("learning Some(false), expected on")), "{text:?}");
        assert!(text.iter().any(|t| t.contains("GBP false, expected true")), "{text:?}");
        // the device as the options ask: nothing, and learned FDB entries are not counted
        let mut st = good_state(&peers);
        st.links[0].mtu = 1400;
        let v = st.links[0].vxlan.as_mut().unwrap();
        v.learning = Some(true);
        v.gbp = true;
        st.fdb.push(FdbEntry { ifindex: 5, mac: "02:00:00:00:00:77".into(), dst: Some("192.168.99.7".parse().unwrap()), permanent: false });
        let mut out = Vec::new();
        let counts = kernel_on(&c, "h1", "192.168.99.1", &l, &st, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(counts.fdb, 2);
    }

    #[test]
    fn missing_fdb_entry_is_named() {
        let l = leases();
        let peers: Vec<LeaseView> = l.values().filter(|x| x.subnet.addr().octets()[2] != 1).cloned().collect();
        let mut st = good_state(&peers);
        st.fdb.remove(0);
        let mut out = Vec::new();
        kernel_on(&conf(), "h1", "192.168.99.1", &l, &st, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].check, Check::Fdb);
        assert_eq!(out[0].to_string(), "[fdb] h1: 1 of 2 FDB entries on flannel.1 (found 1); missing: 02:00:00:00:00:02 dst 192.168.99.2");
    }

    #[test]
    fn duplicate_entries_are_counted() {
        let l = leases();
        let peers: Vec<LeaseView> = l.values().filter(|x| x.subnet.addr().octets()[2] != 1).cloned().collect();
        let mut st = good_state(&peers);
        // the same route twice (another metric): equal as a set, wrong as a count
        st.routes.push(st.routes[0].clone());
        let mut out = Vec::new();
        let counts = kernel_on(&conf(), "h1", "192.168.99.1", &l, &st, &mut out);
        assert_eq!(counts.routes, 3);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].check, Check::Routes);
        assert!(out[0].what.contains("2 of 2 routes on flannel.1 (found 3); duplicated: 10.244.2.0/24 via 10.244.2.0"), "{}", out[0]);
    }

    #[test]
    fn stale_entries_and_wrong_mtu_are_named() {
        let l = leases();
        let peers: Vec<LeaseView> = l.values().filter(|x| x.subnet.addr().octets()[2] != 1).cloned().collect();
        let mut st = good_state(&peers);
        st.links[0].mtu = 1500;
        st.neighbours.push(Neighbour {
            ifindex: 5,
            ip: "10.244.9.0".parse().unwrap(),
            mac: Some("02:00:00:00:00:09".into()),
            permanent: true,
        });
        let mut out = Vec::new();
        kernel_on(&conf(), "h1", "192.168.99.1", &l, &st, &mut out);
        let text: Vec<String> = out.iter().map(|f| f.to_string()).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(text[0].contains("MTU 1500, expected 1450"));
        assert!(text[1].contains("2 of 2 neighbours on flannel.1 (found 3); unexpected: 10.244.9.0"), "{text:?}");
    }

    #[test]
    fn leases_and_subnet_file() {
        let c = conf();
        let raw =
            br#"{"PublicIP":"192.168.99.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"2E:74:64:fe:4b:db"}}"#;
        let l = parse_lease(DEFAULT_PREFIX, "/coreos.com/network/subnets/10.244.68.0-24", raw).unwrap();
        assert_eq!(l.subnet.to_string(), "10.244.68.0/24");
        assert_eq!(l.vtep_mac.as_deref(), Some("2e:74:64:fe:4b:db"));
        assert!(parse_lease(DEFAULT_PREFIX, "/coreos.com/network/subnets/junk", raw).is_err());
        let mut out = Vec::new();
        let hosts =
            vec![("h1".to_string(), "192.168.99.1".parse().unwrap(), None), ("h2".to_string(), "192.168.99.2".parse().unwrap(), None)];
        let by_ip = check_leases(&c, &hosts, &[Ok(l.clone())], &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].to_string(), "[lease] h2: no lease with PublicIP 192.168.99.2 in etcd");
        out.clear();
        let file = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.68.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n";
        check_subnet_file(&c, false, "h1", 1500, by_ip.get(&l.public_ip), Some(file), &mut out);
        assert!(out.is_empty(), "{out:?}");
        check_subnet_file(&c, false, "h1", 1500, by_ip.get(&l.public_ip), Some(&file.replace("1450", "1500")), &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].what.contains("FLANNEL_MTU is Some(1500), expected 1450"));
    }
}

#[cfg(test)]
mod hostgw_tests {
    use super::*;
    use crate::lab::nl::{Address, Route};
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    #[test]
    fn hostgw_expects_routes_only_to_directly_reachable_peers() {
        let conf = NetConf::from_json(&serde_json::json!({"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}})).unwrap();
        assert_eq!((conf.route_device(), conf.overlay_mtu(1500)), ("eth0".to_string(), 1500));
        let lease = |n: u8, ip: &str| LeaseView {
            subnet: format!("10.244.{n}.0/24").parse().unwrap(),
            public_ip: ip.parse().unwrap(),
            backend_type: Some("host-gw".into()),
            vtep_mac: None,
            subnet6: None,
            public_ip6: None,
            vtep_mac6: None,
        };
        let leases: BTreeMap<Ipv4Addr, LeaseView> =
            [lease(1, "192.168.1.1"), lease(2, "192.168.1.2"), lease(3, "192.168.2.3")].into_iter().map(|l| (l.public_ip, l)).collect();
        let eth = super::tests::eth0_link();
        let mut state = HostState {
            links: vec![eth],
            addresses: vec![Address { ifindex: 2, net: "192.168.1.0/24".parse().unwrap(), addr: "192.168.1.1".parse().unwrap() }],
            routes: vec![
                Route { dst: "192.168.1.0/24".parse().unwrap(), gateway: None, oif: Some(2), onlink: false, by_kernel: false },
                Route {
                    dst: "10.244.2.0/24".parse().unwrap(),
                    gateway: Some("192.168.1.2".parse().unwrap()),
                    oif: Some(2),
                    onlink: false,
                    by_kernel: false,
                },
            ],
            ..Default::default()
        };
        let mut out = Vec::new();
        let c = super::tests::kernel_on(&conf, "a", "192.168.1.1", &leases, &state, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(c.routes, 1);
        state.routes.pop();
        super::tests::kernel_on(&conf, "a", "192.168.1.1", &leases, &state, &mut out);
        assert_eq!(
            out[0].to_string(),
            "[routes] a: 0 of 1 routes on eth0 (1 peers not directly reachable) (found 0); missing: 10.244.2.0/24 via 192.168.1.2"
        );
    }
}
