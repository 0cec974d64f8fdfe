//! Tests of the IPv6 half of the contract (dual-stack and IPv6-only clusters), which the
//! family-generic code of [`super::kernel`], [`super::lease`] and [`super::subnet_file`]
//! judges.

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use crate::contract::kernel::check_family;
    use crate::contract::{check_leases, parse_lease, Check, Counts, Finding, HostState, HostView, LeaseView, NetConf, DEFAULT_PREFIX};
    use crate::input::names::Ipv6Net;
    use crate::lab::nl::{Address, FdbEntry, Link, Neighbour, Route, VxlanInfo};

    fn conf(backend: &str) -> NetConf {
        NetConf::from_json(&serde_json::json!({
            "Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": {"Type": backend}
        }))
        .unwrap()
    }

    fn lease(n: u8) -> LeaseView {
        let key = format!("/coreos.com/network/subnets/10.244.{n}.0-24&fd00:10:244:{n}::-64");
        let value = format!(
            r#"{{"PublicIP":"192.168.99.{n}","PublicIPv6":"fd00:99::{n}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"02:00:00:00:04:0{n}"}},"BackendV6Data":{{"VNI":1,"VtepMAC":"02:00:00:00:06:0{n}"}}}}"#
        );
        parse_lease(DEFAULT_PREFIX, &key, value.as_bytes()).unwrap()
    }

    fn hosts() -> Vec<crate::contract::HostAddrs> {
        (1..=3)
            .map(|n| (format!("h{n}"), format!("192.168.99.{n}").parse().unwrap(), Some(format!("fd00:99::{n}").parse().unwrap())))
            .collect()
    }

    /// h1's exact IPv6 state under vxlan with peers h2 and h3.
    fn good_state() -> HostState {
        let dev = Link {
            index: 7,
            name: "flannel-v6.1".into(),
            mtu: 1430,
            up: true,
            kind: Some("vxlan".into()),
            mac: Some("02:00:00:00:06:01".into()),
            controller: None,
            vxlan: Some(VxlanInfo {
                vni: Some(1),
                port: Some(8472),
                local: None,
                local6: Some("fd00:99::1".parse().unwrap()),
                learning: Some(false),
                underlay_index: Some(2),
                gbp: false,
            }),
        };
        let peers = [2u8, 3];
        HostState {
            links: vec![super::super::tests::eth0_link(), dev],
            addresses6: vec![Address::<Ipv6Addr> { ifindex: 2, net: "fd00:99::/64".parse().unwrap(), addr: "fd00:99::1".parse().unwrap() }],
            routes6: peers
                .iter()
                .map(|n| {
                    let dst: Ipv6Net = format!("fd00:10:244:{n}::/64").parse().unwrap();
                    Route::<Ipv6Addr> { dst, gateway: Some(dst.addr()), oif: Some(7), onlink: true, by_kernel: false }
                })
                .collect(),
            neighbours6: peers
                .iter()
                .map(|n| Neighbour::<Ipv6Addr> {
                    ifindex: 7,
                    ip: format!("fd00:10:244:{n}::").parse().unwrap(),
                    mac: Some(format!("02:00:00:00:06:0{n}")),
                    permanent: true,
                })
                .collect(),
            fdb: peers
                .iter()
                .map(|n| FdbEntry {
                    ifindex: 7,
                    mac: format!("02:00:00:00:06:0{n}"),
                    dst: Some(format!("fd00:99::{n}").parse().unwrap()),
                    permanent: true,
                })
                .collect(),
            ..HostState::default()
        }
    }

    /// The IPv6 kernel checks for h1 (192.168.99.1, fd00:99::1) on a 1500-byte underlay;
    /// the counts are IPv6's.
    fn on_h1(c: &NetConf, leases: &BTreeMap<Ipv4Addr, LeaseView>, state: &HostState) -> (Vec<Finding>, Counts) {
        let view = HostView {
            conf: c,
            host: "h1",
            host_ip: "192.168.99.1".parse().unwrap(),
            host_ip6: Some("fd00:99::1".parse().unwrap()),
            underlay_mtu: 1500,
            leases,
            state,
            underlay: "eth0",
        };
        let mut out = Vec::new();
        let counts = check_family::<Ipv6Addr>(&view, &mut |check, what| out.push(Finding::new(check, "h1", what)));
        (out, counts)
    }

    fn judge(state: &HostState) -> (Vec<Finding>, Counts) {
        let c = conf("vxlan");
        let mut out = Vec::new();
        let leases = check_leases(&c, &hosts(), &[Ok(lease(1)), Ok(lease(2)), Ok(lease(3))], &mut out);
        assert!(out.is_empty(), "{out:?}");
        on_h1(&c, &leases, state)
    }

    #[test]
    fn dual_stack_keys_and_values_parse() {
        let l = lease(2);
        assert_eq!(l.subnet.to_string(), "10.244.2.0/24");
        assert_eq!(l.subnet6.map(|s| s.to_string()).as_deref(), Some("fd00:10:244:2::/64"));
        assert_eq!(l.vtep_mac6.as_deref(), Some("02:00:00:00:06:02"));
        let only6 = parse_lease(
            DEFAULT_PREFIX,
            "/coreos.com/network/subnets/0.0.0.0-0&fd00:10:244:5::-64",
            br#"{"PublicIP":"0.0.0.0","PublicIPv6":"fd00:99::5","BackendType":"host-gw"}"#,
        )
        .unwrap();
        assert!(only6.public_ip.is_unspecified());
        assert!(parse_lease(DEFAULT_PREFIX, "/coreos.com/network/subnets/10.244.1.0-24&junk", b"{}").is_err());
    }

    #[test]
    fn exact_ipv6_state_passes_and_counts_per_family() {
        let (out, counts) = judge(&good_state());
        assert!(out.is_empty(), "{out:?}");
        assert_eq!((counts.routes, counts.neighbours, counts.fdb), (2, 2, 2));
        assert_eq!(conf("vxlan").overlay_mtu(1500), 1430, "pods get the smaller family's MTU");
    }

    #[test]
    fn each_missing_ipv6_entry_is_named_on_its_own() {
        for (check, strip) in [(Check::Routes, 0), (Check::Neighbours, 1), (Check::Fdb, 2)] {
            let mut s = good_state();
            match strip {
                0 => drop(s.routes6.pop()),
                1 => drop(s.neighbours6.pop()),
                _ => drop(s.fdb.pop()),
            }
            let (out, _) = judge(&s);
            assert_eq!(out.len(), 1, "{out:?}");
            assert_eq!(out[0].check, check);
            assert!(out[0].what.contains("1 of 2 IPv6"), "{}", out[0]);
        }
        let mut s = good_state();
        s.links[1].mtu = 1450;
        let (out, _) = judge(&s);
        assert!(out[0].what.contains("has MTU 1450, expected 1430 (underlay 1500 - 70)"), "{out:?}");
    }

    #[test]
    fn an_ipv4_only_lease_is_reported_as_such() {
        let c = conf("vxlan");
        let v4only = parse_lease(
            DEFAULT_PREFIX,
            "/coreos.com/network/subnets/10.244.1.0-24",
            br#"{"PublicIP":"192.168.99.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:04:01"}}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        check_leases(&c, &hosts()[..1], &[Ok(v4only)], &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].check, Check::Lease);
        assert!(out[0].to_string().starts_with("[lease] h1: lease 10.244.1.0/24 carries no IPv6 subnet"), "{}", out[0]);
        assert!(out[0].what.contains("looks IPv4-only"));
    }

    #[test]
    fn subnet_file_names_both_families_and_the_smaller_mtu() {
        let c = conf("vxlan");
        let l = lease(1);
        let good = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fd00:10:244::/56\n\
                    FLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n";
        let mut out = Vec::new();
        crate::contract::check_subnet_file(&c, false, "h1", 1500, Some(&l), Some(good), &mut out);
        assert!(out.is_empty(), "{out:?}");
        // upstream's underlay - 50 is accepted (the should case judges it), 1500 is not
        crate::contract::check_subnet_file(&c, false, "h1", 1500, Some(&l), Some(&good.replace("=1430", "=1450")), &mut out);
        assert!(out.is_empty(), "{out:?}");
        let v4_only = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n";
        crate::contract::check_subnet_file(&c, false, "h1", 1500, Some(&l), Some(v4_only), &mut out);
        let text: Vec<String> = out.iter().map(|f| f.to_string()).collect();
        assert_eq!(out.len(), 3, "{text:?}");
        assert!(text[0].contains("FLANNEL_IPV6_NETWORK is None, expected fd00:10:244::/56"), "{text:?}");
        assert!(text[1].contains("FLANNEL_IPV6_SUBNET is None, expected fd00:10:244:1::1/64"), "{text:?}");
        assert!(text[2].contains("FLANNEL_MTU is Some(1500), expected 1430 (underlay 1500 - 70"), "{text:?}");
    }

    #[test]
    fn hostgw_expects_ipv6_routes_to_directly_connected_peers_only() {
        let c = conf("host-gw");
        let hg = |n: u8, ip6: &str| LeaseView {
            backend_type: Some("host-gw".into()),
            vtep_mac: None,
            vtep_mac6: None,
            public_ip6: Some(ip6.parse().unwrap()),
            ..lease(n)
        };
        // h3 is on another segment (fd00:98::/64): no route is expected for it
        let leases: BTreeMap<Ipv4Addr, LeaseView> =
            [hg(1, "fd00:99::1"), hg(2, "fd00:99::2"), hg(3, "fd00:98::3")].into_iter().map(|l| (l.public_ip, l)).collect();
        let route = |n: u8, via: &str| Route::<Ipv6Addr> {
            dst: format!("fd00:10:244:{n}::/64").parse().unwrap(),
            gateway: Some(via.parse().unwrap()),
            oif: Some(2),
            onlink: false,
            by_kernel: false,
        };
        let mut state = HostState {
            links: vec![super::super::tests::eth0_link()],
            addresses6: vec![Address::<Ipv6Addr> { ifindex: 2, net: "fd00:99::/64".parse().unwrap(), addr: "fd00:99::1".parse().unwrap() }],
            routes6: vec![route(2, "fd00:99::2")],
            ..HostState::default()
        };
        let judge = |state: &HostState| on_h1(&c, &leases, state);
        let (out, counts) = judge(&state);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(counts.routes, 1);
        state.routes6.clear();
        let (out, _) = judge(&state);
        assert_eq!(out.len(), 1);
        assert!(out[0].to_string().starts_with("[routes] h1: 0 of 1 IPv6 routes on eth0"), "{}", out[0]);
    }

    #[test]
    fn direct_routing_over_ipv6_replaces_the_tunnel_for_near_peers() {
        let c = NetConf { direct_routing: true, ..conf("vxlan") };
        let mut s = good_state();
        // h2 (fd00:99::2) is directly connected: a direct route instead of the vxlan trio
        s.routes6.retain(|r| !r.dst.to_string().starts_with("fd00:10:244:2:"));
        s.neighbours6.retain(|n| !n.ip.to_string().starts_with("fd00:10:244:2:"));
        s.fdb.retain(|e| e.dst != Some("fd00:99::2".parse().unwrap()));
        s.routes6.push(Route::<Ipv6Addr> {
            dst: "fd00:10:244:2::/64".parse().unwrap(),
            gateway: Some("fd00:99::2".parse().unwrap()),
            oif: Some(2),
            onlink: false,
            by_kernel: false,
        });
        // h3 is not on h1's prefix in this test: keep it on the tunnel
        let mut leases_v = vec![lease(1), lease(2), lease(3)];
        leases_v[2].public_ip6 = Some("fd00:98::3".parse().unwrap());
        s.fdb.iter_mut().filter(|e| e.dst == Some("fd00:99::3".parse().unwrap())).for_each(|e| e.dst = Some("fd00:98::3".parse().unwrap()));
        let mut hosts = hosts();
        hosts[2].2 = Some("fd00:98::3".parse().unwrap());
        let mut out = Vec::new();
        let leases = check_leases(&c, &hosts, &leases_v.into_iter().map(Ok).collect::<Vec<_>>(), &mut out);
        assert!(out.is_empty(), "{out:?}");
        let (out, counts) = on_h1(&c, &leases, &s);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!((counts.routes, counts.neighbours, counts.fdb, counts.direct), (1, 1, 1, 1));
        // the direct route lost: named as such
        s.routes6.retain(|r| r.oif != Some(2));
        let (out, _) = on_h1(&c, &leases, &s);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].what.contains("direct IPv6 routes on eth0"), "{}", out[0]);
    }

    #[test]
    fn the_kernels_own_prefix_route_is_not_the_agents() {
        let mut s = good_state();
        // upstream adds flannel-v6.1's /128 address without NOPREFIXROUTE
        s.routes6.push(Route::<Ipv6Addr> {
            dst: "fd00:10:244:1::/128".parse().unwrap(),
            gateway: None,
            oif: Some(7),
            onlink: false,
            by_kernel: true,
        });
        let (out, counts) = judge(&s);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(counts.routes, 2);
    }
}
