//! `flannel-lab pin`: several runs of one implementation (their `--json` files) turned into
//! the `known_failures` entries of its profile, each as precise as the findings allow: the
//! check, the host (or a pattern such as `h*` when the host varied), the step, and
//! `intermittent: true` where the failure did not happen in every run. Lab errors are never
//! pinned: they are listed as comments to look into.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// Per (check, step): the hosts with that finding in each failing run, and the first text.
type ByCheck = BTreeMap<(String, Option<u64>), (Vec<BTreeSet<String>>, String)>;

/// One trial's outcomes over the runs.
#[derive(Default)]
struct Seen {
    runs: usize,
    passed: usize,
    lab_errors: Vec<String>,
    /// (check, step) → per failing run, the hosts with that finding; and the first text.
    findings: ByCheck,
    failing_runs: usize,
}

/// The `known_failures:` YAML block for the failures seen in `runs` (parsed `--json` files).
pub fn known_failures(runs: &[Value]) -> String {
    let mut trials: BTreeMap<String, Seen> = BTreeMap::new();
    for run in runs {
        for t in run["trials"].as_array().into_iter().flatten() {
            let name = t["name"].as_str().unwrap_or_default();
            let case_backend: String = name.splitn(3, "::").take(2).collect::<Vec<_>>().join("::");
            let seen = trials.entry(case_backend).or_default();
            seen.runs += 1;
            match t["result"].as_str().unwrap_or_default() {
                "pass" | "fixed" => seen.passed += 1,
                "skip" => seen.runs -= 1,
                _ if t["lab_error"].as_bool() == Some(true) => seen.lab_errors.push(t["failure"].as_str().unwrap_or_default().to_string()),
                _ => {
                    seen.failing_runs += 1;
                    let step = t["failed_step"].as_u64();
                    let mut this: BTreeMap<(String, Option<u64>), (BTreeSet<String>, String)> = BTreeMap::new();
                    for f in t["findings"].as_array().into_iter().flatten() {
                        let check = f["check"].as_str().unwrap_or_default().to_string();
                        let e = this
                            .entry((check, step))
                            .or_insert_with(|| (BTreeSet::new(), f["what"].as_str().unwrap_or_default().to_string()));
                        e.0.insert(f["host"].as_str().unwrap_or_default().to_string());
                    }
                    for (k, (hosts, what)) in this {
                        let e = seen.findings.entry(k).or_insert_with(|| (Vec::new(), what));
                        e.0.push(hosts);
                    }
                }
            }
        }
    }
    let mut out = String::from("known_failures:\n");
    for (trial, seen) in &trials {
        for e in &seen.lab_errors {
            out.push_str(&format!("  # {trial}: a lab error in one run, never pinned: {}\n", first_line(e)));
        }
        if seen.findings.is_empty() {
            continue;
        }
        out.push_str(&format!("  # {trial}: failed in {} of {} runs\n", seen.failing_runs, seen.runs));
        for ((check, step), (per_run, what)) in &seen.findings {
            let hosts: BTreeSet<&String> = per_run.iter().flatten().collect();
            let intermittent = seen.passed > 0 || per_run.len() < seen.failing_runs || per_run.iter().any(|h| h != &per_run[0]);
            out.push_str(&format!("  #   [{check}] {}\n", clip(what, 110)));
            for host in host_patterns(&hosts) {
                let step = step.map(|s| format!(", step: {s}")).unwrap_or_default();
                let flaky = if intermittent { ", intermittent: true" } else { "" };
                out.push_str(&format!("  - {{trials: \"{trial}\", check: {check}, host: \"{host}\"{step}{flaky}, reason: \"EXPLAIN\"}}\n"));
            }
        }
    }
    out
}

/// One host when every run named the same, else one pattern per name prefix (`h*` for h1,
/// h3, h7); a name with no prefix to share stays itself.
fn host_patterns(hosts: &BTreeSet<&String>) -> Vec<String> {
    if hosts.len() == 1 {
        return hosts.iter().map(|h| h.to_string()).collect();
    }
    let mut prefixes: BTreeMap<String, usize> = BTreeMap::new();
    for h in hosts {
        let p: String = h.trim_end_matches(|c: char| c.is_ascii_digit()).to_string();
        *prefixes.entry(p).or_default() += 1;
    }
    let mut out = Vec::new();
    for h in hosts {
        let p = h.trim_end_matches(|c: char| c.is_ascii_digit());
        let pattern = if !p.is_empty() && prefixes[p] > 1 { format!("{p}*") } else { h.to_string() };
        if !out.contains(&pattern) {
            out.push(pattern);
        }
    }
    out
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

fn clip(s: &str, n: usize) -> String {
    let line = first_line(s);
    match line.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn trial(name: &str, result: &str, step: u64, findings: &[(&str, &str)]) -> Value {
        json!({"name": name, "result": result, "failed_step": step, "lab_error": false, "failure": null,
               "findings": findings.iter().map(|(c, h)| json!({"check": c, "host": h, "what": "1 of 2 routes"})).collect::<Vec<_>>()})
    }

    #[test]
    fn failures_are_pinned_as_precisely_as_the_runs_allow() {
        let runs = vec![
            json!({"trials": [trial("ping::vxlan::f", "FAIL", 2, &[("routes", "h3")]), trial("mtu::udp::f", "FAIL", 4, &[("df_probe", "h1")])]}),
            json!({"trials": [trial("ping::vxlan::f", "FAIL", 2, &[("routes", "h1")]), trial("mtu::udp::f", "FAIL", 4, &[("df_probe", "h1")])]}),
            json!({"trials": [trial("ping::vxlan::f", "pass", 0, &[]), trial("mtu::udp::f", "FAIL", 4, &[("df_probe", "h1")])]}),
        ];
        let y = known_failures(&runs);
        assert!(
            y.contains("  - {trials: \"mtu::udp\", check: df_probe, host: \"h1\", step: 4, reason: \"EXPLAIN\"}\n"),
            "a steady failure: {y}"
        );
        assert!(y.contains("  # ping::vxlan: failed in 2 of 3 runs\n  #   [routes] 1 of 2 routes\n"), "{y}");
        let race = "  - {trials: \"ping::vxlan\", check: routes, host: \"h*\", step: 2, intermittent: true, reason: \"EXPLAIN\"}\n";
        assert!(y.contains(race), "{y}");
    }

    #[test]
    fn hosts_of_two_segments_keep_their_prefixes() {
        let (l1, l2, r1, etcd) = ("l1".to_string(), "l2".to_string(), "r1".to_string(), "etcd".to_string());
        assert_eq!(host_patterns(&[&l1, &l2, &r1].into_iter().collect()), ["l*", "r1"]);
        assert_eq!(host_patterns(&[&etcd].into_iter().collect()), ["etcd"]);
    }
}
