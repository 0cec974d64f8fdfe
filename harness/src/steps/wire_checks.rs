//! Wire checks: what the underlay capture shows of pod traffic, against the backend's wire
//! format, the net-conf and the leases (`contract::wire`).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{outcome, StepError, StepKind, StepResult, Trial};
use crate::contract::wire::{describe_counts, judge, WireHost};
use crate::probe;

/// Every host echoes every peer over the overlay while the underlay is captured; the frames
/// of that window must carry the traffic as the backend does (VXLAN with the net-conf's VNI
/// and port between the PublicIPs, inner MACs the VtepMACs; udp: one bare IPv4 packet per
/// datagram to its port; host-gw: unencapsulated). Every pair of hosts that answered must
/// show up in the capture, or the capture examined nothing (a lab error).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExpectWire {}

impl StepKind for ExpectWire {
    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        let conf = t.conf()?.clone();
        let capture = t.capture.as_ref().ok_or("expect_wire needs the underlay capture, and none is running (see the trial log)")?;
        let path = capture.path.clone();
        let from = capture.sync()?;
        let cross = t.cross_segment_fails();
        let unanswered = t.reachability(&cross).await?;
        if !unanswered.is_empty() {
            // the wire shows nothing worth judging for pairs that do not talk
            return Err(StepError::Check(unanswered));
        }
        let to = t.capture.as_ref().ok_or("the underlay capture stopped")?.sync()?;
        let frames =
            tokio::task::spawn_blocking(move || probe::frames::read_window(&path, from, to)).await.map_err(|e| e.to_string())??;
        let leases: Vec<crate::contract::LeaseView> = t.leases().await?.into_iter().filter_map(|(_, l)| l.ok()).collect();
        let hosts: Vec<WireHost> = t
            .active_hosts()
            .filter_map(|h| {
                let l = leases.iter().find(|l| l.public_ip == h.addr)?;
                Some(WireHost {
                    name: h.name.clone(),
                    public_ip: h.addr,
                    subnet: l.subnet,
                    vtep_mac: l.vtep_mac.as_deref().and_then(crate::lab::nl::parse_mac),
                    segment: h.segment,
                })
            })
            .collect();
        let v = judge(&conf, &hosts, &frames);
        tracing::info!(
            "wire ({} frames captured, {} of pod traffic between hosts): {}",
            frames.len(),
            v.examined,
            describe_counts(&v.counts)
        );
        t.wire = v.counts.clone();
        // every pair that answered each other must be on the wire
        let missing: Vec<String> = hosts
            .iter()
            .flat_map(|a| hosts.iter().map(move |b| (a, b)))
            .filter(|(a, b)| a.name != b.name && !t.unreachable_pair(&cross, &a.name, &b.name))
            .filter(|(a, b)| !v.counts.contains_key(&(a.name.clone(), b.name.clone())))
            .map(|(a, b)| format!("{} → {}", a.name, b.name))
            .collect();
        // pairs that answered, with traffic between their PublicIPs in a form the lab does
        // not know: the implementation carries pod traffic some other way
        let strange: Vec<crate::contract::Finding> = hosts
            .iter()
            .flat_map(|a| hosts.iter().map(move |b| (a, b)))
            .filter(|(a, b)| missing.contains(&format!("{} → {}", a.name, b.name)))
            .filter_map(|(a, b)| {
                let (n, what) = v.unknown.get(&(a.name.clone(), b.name.clone()))?;
                let story = format!(
                    "{} → {}: the pair answers, and no frame between them carries pod traffic in a form the lab knows; {n} frame(s) between their PublicIPs ({what}, …): {} carries it {}",
                    a.name,
                    b.name,
                    conf.backend,
                    match conf.backend {
                        crate::contract::Backend::Vxlan => "as VXLAN",
                        crate::contract::Backend::Udp => "as one bare IPv4 packet per UDP datagram",
                        crate::contract::Backend::HostGw => "unencapsulated",
                    }
                );
                Some(crate::contract::Finding::new(crate::contract::Check::WireEncap, a.name.as_str(), story))
            })
            .collect();
        if !strange.is_empty() {
            return Err(StepError::Check(v.findings.into_iter().chain(strange).collect()));
        }
        if !missing.is_empty() || hosts.len() < 2 {
            return Err(StepError::Lab(crate::lab_err!(
                "the underlay capture holds no pod traffic for {} of the pairs that answered ({}); {} frames in the window: the wire checks examined nothing there",
                missing.len(),
                missing.iter().take(6).cloned().collect::<Vec<_>>().join(", "),
                frames.len()
            )));
        }
        outcome(v.findings)
    }
}

/// Per-peer frame counts seen on the wire, for the report.
pub type WireCounts = BTreeMap<(String, String), u64>;
