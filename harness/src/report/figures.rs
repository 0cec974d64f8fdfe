//! The drawings of the HTML report, as inline SVG: a trial's step timeline (faults,
//! convergence times, traffic and its gaps) and its topology (segments, routers, hosts,
//! etcd). Pure functions of the trial's record.

use std::fmt::Write;
use std::time::Duration;

use crate::input::topology::Topology;
use crate::run::{StepOutcome, StepRecord};
use crate::scale::plot::esc;

/// Step kinds that do something to the cluster (drawn apart from checks and waits).
const FAULTS: &[&str] = &[
    "restart_etcd",
    "revoke_lease",
    "restart_agent",
    "put_key",
    "pause_etcd",
    "cut_link",
    "flap_link",
    "impair_link",
    "recreate_link",
    "change_public_ip",
    "firewall",
    "stop_agents",
    "remove_host",
    "switch_backend",
    "stop_etcd_leader",
    "add_host",
    "break",
    "udev_mac_policy",
];

const WIDTH: f64 = 900.0;
const LABEL: f64 = 190.0;
const ROW: f64 = 18.0;

fn colour(s: &StepRecord) -> &'static str {
    match s.outcome {
        StepOutcome::Failed => "#d0473d",
        StepOutcome::LabError => "#e69b23",
        StepOutcome::Passed if s.n == 0 => "#b8bec6",
        StepOutcome::Passed if FAULTS.contains(&s.kind) => "#7b5ea7",
        StepOutcome::Passed => "#3a9a5b",
    }
}

/// What the timeline marks on a step: a convergence time or a traffic summary.
fn marker(s: &StepRecord) -> Option<String> {
    s.notes.iter().rev().find_map(|n| {
        if let Some(rest) = n.strip_prefix("converged ") {
            // "converged 188 ms after agents started (150 ms waiting, …"
            let waited =
                rest.split_once('(').and_then(|(_, w)| w.split(" ms waiting").next()).filter(|w| w.chars().all(|c| c.is_ascii_digit()));
            return Some(match waited {
                Some(w) => format!("converged after {w} ms"),
                None => "converged".to_string(),
            });
        }
        if n.contains("converged again") {
            return n.rsplit_once("converged again ").map(|(_, t)| format!("converged again {}", t.trim_end_matches(" after it")));
        }
        n.strip_prefix("traffic ").map(|t| t.split_once(": ").map(|(_, x)| format!("traffic: {x}")).unwrap_or_else(|| t.to_string()))
    })
}

/// A tick spacing of 1, 2 or 5 × 10^k seconds giving about six ticks.
fn tick(span: f64) -> f64 {
    let raw = (span / 6.0).max(1e-3);
    let pow = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * pow).find(|t| *t >= raw).unwrap_or(10.0 * pow)
}

/// The steps against time: one row per step for a single lab; one row per lab (its steps
/// side by side) when the trial ran several. Hovering a bar shows the step's notes.
pub fn timeline(steps: &[StepRecord], total: Duration) -> String {
    let labs: Vec<&str> = steps.iter().fold(Vec::new(), |mut v, s| {
        if !v.contains(&s.lab.as_str()) {
            v.push(s.lab.as_str());
        }
        v
    });
    let single = labs.len() <= 1;
    let rows: Vec<Vec<&StepRecord>> = if single {
        steps.iter().map(|s| vec![s]).collect()
    } else {
        labs.iter().take(40).map(|l| steps.iter().filter(|s| s.lab == *l).collect()).collect()
    };
    let span = total.as_secs_f64().max(steps.iter().map(|s| s.end.as_secs_f64()).fold(0.0, f64::max)).max(0.001);
    let plot = WIDTH - LABEL - 20.0;
    let x = |t: Duration| LABEL + t.as_secs_f64() / span * plot;
    let height = 30.0 + rows.len() as f64 * ROW + 24.0;
    let mut s = format!(
        r#"<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="step timeline">"#
    );
    // axis and grid
    let axis_y = 20.0 + rows.len() as f64 * ROW + 4.0;
    let step = tick(span);
    let mut t = 0.0;
    while t <= span + 1e-9 {
        let gx = LABEL + t / span * plot;
        let _ = write!(
            s,
            r##"<line x1="{gx:.1}" y1="16" x2="{gx:.1}" y2="{axis_y:.1}" stroke="#e3e6ea"/><text x="{gx:.1}" y="{:.1}" font-size="10" text-anchor="middle" fill="#555">{}</text>"##,
            axis_y + 12.0,
            seconds(t)
        );
        t += step;
    }
    // background traffic: from the end of start_traffic to the end of stop_traffic
    let mut started: Option<&StepRecord> = None;
    for st in steps.iter().filter(|st| single || st.lab == labs[0]) {
        match st.kind {
            "start_traffic" => started = Some(st),
            "stop_traffic" => {
                if let Some(a) = started.take() {
                    let (x0, x1) = (x(a.end), x(st.end));
                    let label = marker(st).unwrap_or_else(|| "traffic".into());
                    let _ = write!(
                        s,
                        r##"<rect class="traffic" x="{x0:.1}" y="14" width="{:.1}" height="{:.1}" fill="#3b7dd8" fill-opacity="0.10" stroke="#3b7dd8" stroke-opacity="0.4"><title>{}</title></rect><text x="{:.1}" y="11" font-size="10" fill="#2a5fa8">{}</text>"##,
                        (x1 - x0).max(1.0),
                        axis_y - 14.0,
                        esc(&label),
                        x0 + 2.0,
                        esc(&label)
                    );
                }
            }
            _ => {}
        }
    }
    for (i, row) in rows.iter().enumerate() {
        let y = 20.0 + i as f64 * ROW;
        let name = if single {
            let st = row[0];
            if st.n == 0 {
                "setup".to_string()
            } else {
                format!("{} {}", st.n, st.kind)
            }
        } else {
            format!("lab {}", row.first().map(|r| r.lab.as_str()).unwrap_or(""))
        };
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#222">{}</text>"##,
            LABEL - 6.0,
            y + 12.0,
            esc(&name)
        );
        for st in row {
            let (x0, x1) = (x(st.start), x(st.end));
            let mut tip = format!("step {} {} ({:.2}–{:.2} s)", st.n, st.kind, st.start.as_secs_f64(), st.end.as_secs_f64());
            for n in st.notes.iter().take(6) {
                tip.push('\n');
                tip.push_str(n);
            }
            let _ = write!(
                s,
                r#"<rect class="step" x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="2" fill="{}"><title>{}</title></rect>"#,
                y + 2.0,
                (x1 - x0).max(2.0),
                ROW - 5.0,
                colour(st),
                esc(&tip)
            );
            if single {
                if let Some(m) = marker(st).filter(|_| st.kind != "stop_traffic") {
                    let _ = write!(
                        s,
                        r##"<path d="M{x1:.1} {:.1} l4 5 l-4 5 l-4 -5 z" fill="#111"/><text x="{:.1}" y="{:.1}" font-size="10" fill="#111">{}</text>"##,
                        y + 3.0,
                        x1 + 6.0,
                        y + 12.0,
                        esc(&m)
                    );
                }
            }
        }
    }
    s.push_str("</svg>");
    s
}

fn seconds(t: f64) -> String {
    if t == 0.0 {
        "0".into()
    } else if t < 1.0 {
        format!("{:.0} ms", t * 1000.0)
    } else if t.fract().abs() < 1e-9 {
        format!("{t:.0} s")
    } else {
        format!("{t:.1} s")
    }
}

/// Hosts drawn per segment before the rest are summed up.
const CHIPS: usize = 10;

/// Segments side by side, each a column with its hosts (and etcd) on a bus; routers above,
/// wired to the segments they join.
pub fn topology(t: &Topology) -> String {
    let col = 220.0;
    let top = if t.routers.is_empty() { 10.0 } else { 64.0 };
    let chips: Vec<usize> = t
        .segments
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let n = t.hosts.iter().filter(|h| h.segment == i).count();
            n.min(CHIPS) + usize::from(n > CHIPS) + usize::from(t.etcd.0 == i)
        })
        .collect();
    let tallest = chips.iter().copied().max().unwrap_or(0) as f64;
    let width = (col * t.segments.len() as f64).max(260.0) + 20.0;
    let height = top + 44.0 + tallest * 30.0 + 16.0;
    let mut s = format!(
        r#"<svg class="topology" xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" role="img" aria-label="topology {}">"#,
        esc(&t.name)
    );
    let cx = |i: usize| 10.0 + col * i as f64 + col / 2.0;
    for (r, router) in t.routers.iter().enumerate() {
        let rx = if router.legs.is_empty() {
            cx(0)
        } else {
            router.legs.iter().map(|(seg, _)| cx(*seg)).sum::<f64>() / router.legs.len() as f64 + r as f64 * 12.0
        };
        for (seg, addr) in &router.legs {
            let _ = write!(
                s,
                r##"<line x1="{rx:.1}" y1="34" x2="{:.1}" y2="{:.1}" stroke="#7b5ea7" stroke-width="2"><title>{} {addr}</title></line>"##,
                cx(*seg),
                top + 6.0,
                esc(router.name.as_str())
            );
        }
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="12" width="90" height="24" rx="12" fill="#efe9f7" stroke="#7b5ea7"/><text x="{rx:.1}" y="28" font-size="11" text-anchor="middle">router {}</text>"##,
            rx - 45.0,
            esc(router.name.as_str())
        );
    }
    for (i, seg) in t.segments.iter().enumerate() {
        let x0 = 10.0 + col * i as f64 + 6.0;
        let _ = write!(
            s,
            r##"<rect class="segment" x="{x0:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" rx="6" fill="#f4f6f8" stroke="#9aa4ae"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle" font-weight="600">{}</text><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle" fill="#555">{} · MTU {}</text>"##,
            col - 12.0,
            height - top - 6.0,
            cx(i),
            top + 15.0,
            esc(&seg.name),
            cx(i),
            top + 28.0,
            seg.cidr,
            seg.mtu
        );
        let bus = x0 + 14.0;
        let _ = write!(
            s,
            r##"<line x1="{bus:.1}" y1="{:.1}" x2="{bus:.1}" y2="{:.1}" stroke="#4a5561" stroke-width="3"/>"##,
            top + 36.0,
            height - 16.0
        );
        let mut y = top + 40.0;
        let mut chip = |label: String, fill: &str, s: &mut String| {
            let _ = write!(
                s,
                r##"<line x1="{bus:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#4a5561"/><rect class="node" x="{:.1}" y="{y:.1}" width="{:.1}" height="22" rx="4" fill="{fill}" stroke="#4a5561"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"##,
                y + 11.0,
                bus + 16.0,
                y + 11.0,
                bus + 16.0,
                col - 58.0,
                bus + 22.0,
                y + 15.0,
                esc(&label)
            );
            y += 30.0;
        };
        let hosts: Vec<_> = t.hosts.iter().filter(|h| h.segment == i).collect();
        for h in hosts.iter().take(CHIPS) {
            chip(format!("{}  {}", h.name, h.addr), "#ffffff", &mut s);
        }
        if hosts.len() > CHIPS {
            let (a, b) = (&hosts[CHIPS].name, &hosts[hosts.len() - 1].name);
            chip(format!("… {} more ({a}–{b})", hosts.len() - CHIPS), "#eef1f4", &mut s);
        }
        if t.etcd.0 == i {
            chip(format!("etcd  {}", t.etcd.1), "#fff4d6", &mut s);
        }
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(n: usize, kind: &'static str, start: u64, end: u64, outcome: StepOutcome, notes: &[&str]) -> StepRecord {
        StepRecord {
            lab: String::new(),
            n,
            kind,
            start: Duration::from_millis(start),
            end: Duration::from_millis(end),
            outcome,
            notes: notes.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_timeline_draws_every_step_with_faults_convergence_and_traffic() {
        let steps = vec![
            step(0, "setup", 0, 300, StepOutcome::Passed, &[]),
            step(1, "start_agents", 300, 320, StepOutcome::Passed, &[]),
            step(
                2,
                "wait_converged",
                320,
                600,
                StepOutcome::Passed,
                &["converged 280 ms after agents started (270 ms waiting, data plane included)"],
            ),
            step(3, "start_traffic", 600, 610, StepOutcome::Passed, &[]),
            step(4, "restart_etcd", 610, 5000, StepOutcome::Passed, &["etcd <down> for 30s"]),
            step(5, "stop_traffic", 5000, 5100, StepOutcome::Failed, &["traffic h1-p1 -> h2-p1: 480 sent, 3 lost, longest gap 40 ms"]),
        ];
        let svg = timeline(&steps, Duration::from_millis(5200));
        assert_eq!(svg.matches(r#"class="step""#).count(), 6, "{svg}");
        assert!(svg.contains("#7b5ea7"), "the fault is drawn as one");
        assert!(svg.contains("#d0473d"), "the failed step is red");
        assert!(svg.contains("converged after 270 ms"), "{svg}");
        assert!(svg.contains("traffic: 480 sent, 3 lost, longest gap 40 ms"), "{svg}");
        assert!(svg.contains("etcd &lt;down&gt;"), "notes are escaped");
        // several labs: one row each
        let mut two = steps.clone();
        for s in two.iter_mut() {
            s.lab = "r1".into();
        }
        two.extend(steps.iter().cloned().map(|mut s| {
            s.lab = "r2".into();
            s
        }));
        let svg = timeline(&two, Duration::from_millis(10400));
        assert!(svg.contains(">lab r1<") && svg.contains(">lab r2<"), "{svg}");
        assert_eq!(svg.matches(r#"class="step""#).count(), 12);
        assert_eq!(tick(5.2), 1.0);
        assert_eq!(tick(0.3), 0.05);
    }

    #[test]
    fn the_topology_shows_segments_routers_hosts_and_etcd() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies");
        let t = Topology::load(&root.join("two-segments.yaml")).unwrap();
        let svg = topology(&t);
        assert_eq!(svg.matches(r#"class="segment""#).count(), 2);
        assert!(svg.contains("router gw"), "{svg}");
        for h in ["l1", "l2", "r1", "r2", "etcd"] {
            assert!(svg.contains(&format!(">{h}  ")), "{h} missing: {svg}");
        }
        let big = Topology::load_scaled(&root.join("flat-large.yaml"), Some(300)).unwrap();
        let svg = topology(&big);
        assert_eq!(svg.matches(r#"class="node""#).count(), CHIPS + 2, "ten hosts, the rest summed up, etcd");
        assert!(svg.contains("… 290 more (h11–h300)"), "{svg}");
    }
}
