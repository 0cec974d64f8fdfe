//! Traffic: background ICMP against a loss budget, crafted udp datagrams, throughput.

use std::time::Duration;

use serde::Deserialize;

use super::{StepError, StepKind, StepResult, Trial};
use crate::agents::Agent;
use crate::contract::{Backend, Check, SubnetEnv};
use crate::input::case::{Dur, Ref};
use crate::input::names::HostName;
use crate::lab_err;
use crate::probe;

/// Background ICMP between two pods while faults happen.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StartTraffic {
    /// The first pod on `from` pings the first pod on `to`.
    pub from: HostName,
    pub to: HostName,
    #[serde(default = "ten_ms")]
    pub interval: Dur,
}

impl StepKind for StartTraffic {
    fn refs(&self) -> Vec<Ref<'_>> {
        vec![Ref::Host(&self.from), Ref::Host(&self.to)]
    }

    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        let pod = |h: &str| t.pods.iter().find(|p| p.host == h).ok_or_else(|| format!("no pod on {h}: add create_pods first"));
        let (a, b) = (pod(self.from.as_str())?, pod(self.to.as_str())?);
        let label = format!("{} -> {} every {:?}", a.name, b.name, self.interval.0);
        let probe = crate::probe::traffic::Traffic::start(&a.ns, b.v4()?, self.interval.0)?;
        t.traffic = Some((probe, label, self.from.to_string()));
        Ok(())
    }
}

fn ten_ms() -> Dur {
    Dur(Duration::from_millis(10))
}

/// Ends the background probe and checks it against its loss budget.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StopTraffic {
    /// The loss budget: at most this many echoes may go unanswered.
    pub max_lost: u64,
    /// The longest stretch without a reply allowed.
    #[serde(default)]
    pub max_gap: Option<Dur>,
}

impl StepKind for StopTraffic {
    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        let s = self;
        let (mut probe, label, host) = t.traffic.take().ok_or("no traffic running: add start_traffic first")?;
        let r = tokio::task::spawn_blocking(move || probe.stop()).await.map_err(|e| e.to_string())??;
        let line = format!("traffic {label}: {} sent, {} lost, longest gap {} ms", r.sent, r.lost, r.longest_gap.as_millis());
        tracing::info!("{line}");
        if r.sent == 0 {
            return Err(StepError::Lab(crate::lab_err!("{line}: nothing was sent, so the budget examined nothing")));
        }
        if r.lost > s.max_lost {
            return Err(StepError::check(Check::Traffic, host, format!("{line}; budget allows {} lost", s.max_lost)));
        }
        if let Some(g) = s.max_gap {
            if r.longest_gap > g.0 {
                return Err(StepError::check(Check::Traffic, host, format!("{line}; budget allows a {} ms gap", g.0.as_millis())));
            }
        }
        Ok(())
    }
}

/// What must become of an injected datagram.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    Delivered,
    Dropped,
}

/// udp backend: sends a crafted datagram (bare inner IPv4 echo request) to a host's
/// udp port and checks whether the pod behind it sees the echo.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InjectUdp {
    /// The sending node: a host, or `etcd` (on the underlay, never a flannel peer).
    pub from: String,
    /// The host whose udp port receives it; the inner packet is addressed to its first pod.
    pub to: HostName,
    /// The inner source address is taken from this host's subnet.
    pub inner_src_from: HostName,
    pub expect: Fate,
}

impl StepKind for InjectUdp {
    fn refs(&self) -> Vec<Ref<'_>> {
        vec![Ref::Subject(&self.from), Ref::Host(&self.to), Ref::Host(&self.inner_src_from)]
    }

    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        t.inject(self, Backend::Udp).await
    }
}

/// vxlan backend: sends a crafted VXLAN frame (the configured VNI, the target's VTEP MAC
/// from its lease, an inner IPv4 echo request) to a host's vxlan port and checks whether
/// the pod behind it sees the echo. Same fields as `inject_udp`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct InjectVxlan(pub InjectUdp);

impl StepKind for InjectVxlan {
    fn refs(&self) -> Vec<Ref<'_>> {
        self.0.refs()
    }

    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        t.inject(&self.0, Backend::Vxlan).await
    }
}

/// The address a pod's traffic must arrive with.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SeenAs {
    /// The sending host's own address: masqueraded (`--ip-masq` for traffic leaving the
    /// pod network).
    Node,
    /// The pod's own address: not rewritten.
    Pod,
}

/// Sends UDP datagrams from the first pod on `from` to `to` (`etcd`: a lab node off the pod
/// network; a host: its first pod) and judges the source address they arrive with: the
/// effect of ip-masq, not the rule text.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExpectSource {
    pub from: HostName,
    pub to: String,
    pub seen_as: SeenAs,
}

impl StepKind for ExpectSource {
    fn refs(&self) -> Vec<Ref<'_>> {
        vec![Ref::Host(&self.from), Ref::Subject(&self.to)]
    }

    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        t.expect_source(self).await
    }
}

/// A VXLAN datagram's payload: the 8-byte header (I flag, VNI) and an Ethernet frame to
/// `dst_mac` carrying `ip`.
/// Datagrams behind one injection verdict: one lost on the way does not decide it.
pub const INJECTIONS: usize = 3;

fn vxlan_frame(vni: u32, dst_mac: [u8; 6], src_mac: [u8; 6], ip: &[u8]) -> Vec<u8> {
    let mut f = vec![0x08, 0, 0, 0];
    f.extend_from_slice(&(vni << 8).to_be_bytes());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(ip);
    f
}

/// Benchmark: pod-to-pod TCP throughput between the first two hosts, and host-to-host
/// over the bare underlay; logs both and their ratio (never asserts on them).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MeasureThroughput {
    /// How long each direction of traffic runs.
    pub seconds: u64,
}

impl StepKind for MeasureThroughput {
    async fn run(&self, t: &mut Trial<'_>) -> StepResult {
        t.measure_throughput(Duration::from_secs(self.seconds)).await
    }
}

impl Trial<'_> {
    /// Injects encapsulated echo requests as `backend` carries them (udp: the bare IPv4
    /// packet; vxlan: a VXLAN frame whose inner source MAC is the inner source host's real
    /// VtepMAC, so only the outer sender differs from a peer's) and judges whether the
    /// target's pod saw one. Each verdict rests on [`INJECTIONS`] datagrams; a `dropped`
    /// verdict about a stranger is first calibrated by the same datagrams from the inner
    /// source host itself, a real peer, which must be delivered (else nothing is judged).
    async fn inject(&mut self, spec: &InjectUdp, backend: Backend) -> StepResult {
        let conf = self.conf()?.clone();
        if conf.backend != backend {
            return Err(lab_err!("inject_{} applies to the {backend} backend, not {}", backend.name(), conf.backend).into());
        }
        let peer = spec.inner_src_from.as_str();
        if spec.expect == Fate::Dropped && spec.from != peer {
            let seen = self.inject_once(&conf, backend, peer, spec).await?;
            if !seen {
                return Err(lab_err!(
                    "the same {backend} datagrams from {peer}, a peer, on the flannel port were not delivered to {}'s pod either: a drop of the stranger's would say nothing",
                    spec.to
                )
                .into());
            }
            tracing::info!("calibration: the same datagrams from {peer} (a peer) were delivered");
        }
        let seen = self.inject_once(&conf, backend, &spec.from, spec).await?;
        let target_name = spec.to.to_string();
        let what = format!(
            "{INJECTIONS} {backend} datagrams from {} to {}:{} carrying an echo from {peer}'s subnet",
            spec.from, spec.to, conf.port
        );
        match (spec.expect, seen) {
            (Fate::Delivered, true) | (Fate::Dropped, false) => {
                tracing::info!("{what}: {}", if seen { "delivered" } else { "dropped" });
                Ok(())
            }
            (Fate::Delivered, false) => {
                Err(StepError::check(Check::Delivery, target_name, format!("{what}: none reached the pod, expected delivery")))
            }
            (Fate::Dropped, true) => {
                Err(StepError::check(Check::Delivery, target_name, format!("{what}: reached the pod, expected them to be dropped")))
            }
        }
    }

    /// Sends [`INJECTIONS`] encapsulated echo requests from `from` (a host or `etcd`) as
    /// `spec` says; whether the target's pod saw one.
    async fn inject_once(
        &mut self,
        conf: &crate::contract::NetConf,
        backend: Backend,
        from: &str,
        spec: &InjectUdp,
    ) -> Result<bool, StepError> {
        let (sender_ns, _) = if from == "etcd" {
            (self.store.netns().clone(), self.lab.topo.etcd.1)
        } else {
            let n = self.lab.host(from).ok_or_else(|| format!("no node `{from}`"))?;
            (n.ns.clone(), n.addr)
        };
        let target = self.lab.host(spec.to.as_str()).ok_or_else(|| format!("no host `{}`", spec.to))?;
        let pod = self.pods.iter().find(|p| p.host == target.name).ok_or("no pod on the target host: add create_pods first")?;
        let src_host = self.lab.host(spec.inner_src_from.as_str()).ok_or_else(|| format!("no host `{}`", spec.inner_src_from))?;
        let env = SubnetEnv::parse(
            &std::fs::read_to_string(Agent::subnet_file_path(src_host)).map_err(|e| lab_err!("subnet file of {}: {e}", src_host.name))?,
        );
        let subnet = env.subnet().ok_or("no subnet in the subnet file")?;
        let inner_src = subnet.nth(200);
        let ident: u16 = rand::random();
        let pod_addr = pod.v4()?;
        let mut packet = probe::echo_packet(inner_src, pod_addr, ident);
        if backend == Backend::Vxlan {
            let leases: Vec<crate::contract::LeaseView> = self.leases().await?.into_iter().filter_map(|(_, l)| l.ok()).collect();
            let mac_of = |addr: std::net::Ipv4Addr| {
                leases.iter().find(|l| l.public_ip == addr).and_then(|l| l.vtep_mac.as_deref()).and_then(crate::lab::nl::parse_mac)
            };
            let dst = mac_of(target.addr).ok_or_else(|| format!("no lease with a VtepMAC for {} in etcd: converge first", target.name))?;
            let src =
                mac_of(src_host.addr).ok_or_else(|| format!("no lease with a VtepMAC for {} in etcd: converge first", src_host.name))?;
            packet = vxlan_frame(conf.vni, dst, src, &packet);
        }
        let to = std::net::SocketAddrV4::new(target.addr, conf.port);
        let pod_ns = pod.ns.clone();
        let (target_ns, target_addr) = (target.ns.clone(), target.addr);
        let seen = tokio::task::spawn_blocking(move || {
            // first show that the sender's UDP reaches the target host at all, so that a
            // frame not seen by the pod was dropped at the target, not lost on the way
            let (arrived, port) = probe::udp_sources(&sender_ns, &target_ns, target_addr, 5, Duration::from_secs(2))?;
            if arrived.is_empty() {
                return Err(crate::error::Error::Lab(format!(
                    "plain UDP from the sender to {target_addr}:{port} did not arrive within 2 s: the underlay path is broken, so a drop could not be judged"
                )));
            }
            let (tx, rx) = std::sync::mpsc::channel();
            let listener = std::thread::spawn(move || probe::saw_echo_request(&pod_ns, ident, Duration::from_secs(1), tx));
            rx.recv_timeout(Duration::from_secs(5)).map_err(|_| crate::lab_err!("listener did not start"))?;
            for _ in 0..INJECTIONS {
                probe::send_udp(&sender_ns, to, packet.clone())?;
            }
            listener.join().map_err(|_| crate::lab_err!("listener panicked"))?
        })
        .await
        .map_err(|e| e.to_string())??;
        Ok(seen)
    }

    async fn expect_source(&mut self, spec: &ExpectSource) -> StepResult {
        let from = spec.from.as_str();
        let node_addr = self.host(from)?.addr;
        let pod = self.pods.iter().find(|p| p.host == from).ok_or_else(|| format!("no pod on {from}: add create_pods first"))?;
        let (dst_ns, dst_addr, dst_label) = if spec.to == "etcd" {
            (self.store.netns().clone(), self.lab.topo.etcd.1, "etcd (off the pod network)".to_string())
        } else {
            let p = self.pods.iter().find(|p| p.host == spec.to).ok_or_else(|| format!("no pod on {}: add create_pods first", spec.to))?;
            (p.ns.clone(), p.v4()?, format!("pod {} on {}", p.name, spec.to))
        };
        let want = match spec.seen_as {
            SeenAs::Node => node_addr,
            SeenAs::Pod => pod.v4()?,
        };
        let (pod_ns, pod_addr) = (pod.ns.clone(), pod.v4()?);
        const SENT: usize = 5;
        let (seen, port) =
            tokio::task::spawn_blocking(move || probe::udp_sources(&pod_ns, &dst_ns, dst_addr, SENT, Duration::from_secs(3)))
                .await
                .map_err(|e| e.to_string())??;
        let what = format!("UDP from pod {pod_addr} on {from} to {dst_label} ({dst_addr}:{port})");
        let wrong: Vec<String> = seen.iter().filter(|a| **a != want).map(|a| a.to_string()).collect();
        let expected = match spec.seen_as {
            SeenAs::Node => format!("{want}, the node's address (masqueraded)"),
            SeenAs::Pod => format!("{want}, the pod's own address (not rewritten)"),
        };
        if seen.is_empty() {
            // not a statement about the source address: the traffic did not get there at all
            return Err(StepError::check(Check::Reachability, from, format!("{what}: none of {SENT} datagrams arrived")));
        }
        if !wrong.is_empty() {
            let what = format!("{what}: {} of {} arrived from {}, expected {expected}", wrong.len(), seen.len(), wrong.join(", "));
            return Err(StepError::check(Check::SourceAddress, from, what));
        }
        tracing::info!("{what}: {} of {SENT} arrived from {expected}", seen.len());
        Ok(())
    }

    async fn measure_throughput(&mut self, seconds: Duration) -> StepResult {
        let hosts: Vec<String> = self.lab.hosts.iter().take(2).map(|h| h.name.clone()).collect();
        if hosts.len() < 2 {
            return Err("needs two hosts".into());
        }
        let pod = |h: &str| self.pods.iter().find(|p| p.host == h).ok_or_else(|| format!("no pod on {h}: add create_pods first"));
        let (a, b) = (pod(&hosts[0])?, pod(&hosts[1])?);
        let (ha, hb) = (self.lab.host(&hosts[0]).expect("host"), self.lab.host(&hosts[1]).expect("host"));
        let (pa, pb, pb_ip) = (a.ns.clone(), b.ns.clone(), b.v4()?);
        let (na, nb, hb_ip) = (ha.ns.clone(), hb.ns.clone(), hb.addr);
        let (overlay, bare, small, small_bare) = tokio::task::spawn_blocking(move || {
            use crate::probe::throughput::{measure, measure_pps};
            (
                measure(&pb, pb_ip, &pa, seconds),
                measure(&nb, hb_ip, &na, seconds),
                measure_pps(&pb, pb_ip, &pa, seconds),
                measure_pps(&nb, hb_ip, &na, seconds),
            )
        })
        .await
        .map_err(|e| e.to_string())?;
        let (overlay, bare) = (overlay.map_err(|e| lab_err!("pod to pod: {e}"))?, bare.map_err(|e| lab_err!("host to host: {e}"))?);
        let (small, small_bare) = (
            small.map_err(|e| lab_err!("pod to pod, small packets: {e}"))?,
            small_bare.map_err(|e| lab_err!("host to host, small packets: {e}"))?,
        );
        tracing::info!(
            "throughput {}: pod-to-pod {:.2} Gbit/s, bare underlay {:.2} Gbit/s, ratio {:.3} (TCP retransmissions: pod-to-pod {}, bare {})",
            self.backend,
            overlay.gbit_per_s(),
            bare.gbit_per_s(),
            overlay.gbit_per_s() / bare.gbit_per_s(),
            overlay.retransmits,
            bare.retransmits
        );
        tracing::info!(
            "packets {}: {}-byte UDP pod-to-pod {:.0} kpps delivered ({:.0} kpps sent), bare underlay {:.0} kpps, ratio {:.3}",
            self.backend,
            crate::probe::throughput::SMALL_PAYLOAD,
            small.kpps(),
            small.sent as f64 / small.elapsed.as_secs_f64() / 1e3,
            small_bare.kpps(),
            small.kpps() / small_bare.kpps()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vxlan_frames_carry_vni_and_vtep_mac() {
        let f = vxlan_frame(0x00ab_cdef, [2, 0, 0, 0, 0, 9], [2, 0, 0, 0, 0, 7], &[0x45, 0]);
        assert_eq!(&f[..8], &[0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0]);
        assert_eq!(&f[8..14], &[2, 0, 0, 0, 0, 9], "the target's VtepMAC");
        assert_eq!(&f[14..20], &[2, 0, 0, 0, 0, 7], "the inner source host's VtepMAC");
        assert_eq!(&f[20..22], &[0x08, 0x00]);
        assert_eq!(&f[22..], &[0x45, 0]);
    }
}
