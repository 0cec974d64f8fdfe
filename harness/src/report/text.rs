//! Reports for people in text: a per-trial table for the terminal and Markdown, both ending
//! with the failures grouped by root cause.

use crate::input::case::Level;
use crate::run::TrialReport;

/// A fixed-width table, one row per trial.
pub fn table(reports: &[TrialReport]) -> String {
    let w = reports.iter().map(|r| r.name.len()).max().unwrap_or(5).max(5);
    let mut s = format!("{:<w$}  {:<6}  {:>8}  {}\n", "trial", "result", "seconds", "detail");
    for r in reports {
        if let Some(why) = &r.ignored {
            s.push_str(&format!("{:<w$}  {:<6}  {:>8.1}  {}\n", r.name, "skip", r.elapsed.as_secs_f64(), first_line(why)));
            continue;
        }
        let detail = match (&r.failure, &r.artifacts) {
            (Some(f), Some(a)) => format!("{}{}  [artifacts: {}]", level_tag(r), first_line(f), a.display()),
            (Some(f), None) => first_line(f).to_string(),
            (None, _) => r.log.iter().rev().find(|l| l.starts_with("     ")).map(|l| first_line(l.trim()).to_string()).unwrap_or_default(),
        };
        s.push_str(&format!("{:<w$}  {:<6}  {:>8.1}  {detail}{}\n", r.name, result_word(r), r.elapsed.as_secs_f64(), known_note(r)));
    }
    let skipped = reports.iter().filter(|r| r.ignored.is_some()).count();
    let lab = reports.iter().filter(|r| r.lab_error).count();
    if lab > 0 {
        s.push_str(&format!("{lab} trial(s) failed with a lab error (the lab could not do its job; see their logs)\n"));
    }
    s.push_str(&cause_summary(reports, false));
    s.push_str(&self_check_note(reports));
    s.push_str(&summary(reports));
    s.push_str(&format!(", {skipped} skipped\n"));
    s
}

/// `N passed, M failed (…should-level), K known failures (…), F fixed`: known failures are
/// counted apart and do not fail the run; a known failure that passed is "fixed".
pub(super) fn summary(reports: &[TrialReport]) -> String {
    let passed = reports.iter().filter(|r| r.passed).count();
    let failed = reports.iter().filter(|r| r.fails_run()).count();
    let known = reports.iter().filter(|r| r.is_known_failure()).count();
    let fixed = reports.iter().filter(|r| r.is_fixed()).count();
    let mut s = format!("{passed} passed, {failed} failed{}", should_note(reports));
    if known > 0 {
        s.push_str(&format!(", {known} known failure(s) (listed in the profile; not counted)"));
    }
    if fixed > 0 {
        s.push_str(&format!(", {fixed} known failure(s) fixed (they pass now: remove them from the profile, or allow with --allow-fixed)"));
    }
    s
}

/// `(known: REASON, LINK)` after a known failure's detail.
pub(super) fn known_note(r: &TrialReport) -> String {
    match &r.known {
        Some(k) if r.is_known_failure() || r.is_fixed() => {
            format!(" (known: {}{})", k.reason, k.link.as_deref().map(|l| format!(", {l}")).unwrap_or_default())
        }
        _ => String::new(),
    }
}

/// `[should] ` before the failure of a should-level case.
fn level_tag(r: &TrialReport) -> &'static str {
    match r.level {
        Level::Should => "[should] ",
        Level::Must => "",
    }
}

/// ` (N of them should-level)` when some failures are hardening, not flannel's contract.
fn should_note(reports: &[TrialReport]) -> String {
    let n = reports.iter().filter(|r| r.fails_run() && r.level == Level::Should).count();
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} of them should-level: hardening beyond flannel's contract)")
    }
}

pub(super) fn first_line(s: &str) -> &str {
    let line = s.lines().next().unwrap_or("");
    if line.len() > 160 {
        &line[..line.char_indices().take_while(|(i, _)| *i < 160).last().map(|(i, _)| i).unwrap_or(0)]
    } else {
        line
    }
}

/// The same report as Markdown: one row per case × backend × implementation.
pub fn markdown(reports: &[TrialReport]) -> String {
    let mut s = String::from("| case | backend | implementation | result | seconds | cause / detail |\n|---|---|---|---|---|---|\n");
    for r in reports {
        let mut parts = r.name.splitn(3, "::");
        let (case, backend, imp) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let detail = match (&r.failure, &r.artifacts) {
            (Some(f), Some(a)) => format!("{}{} (artifacts: `{}`)", level_tag(r), first_line(f), a.display()),
            (Some(f), None) => first_line(f).to_string(),
            (None, _) => r.log.iter().rev().find(|l| l.starts_with("     ")).map(|l| first_line(l.trim()).to_string()).unwrap_or_default(),
        };
        s.push_str(&format!(
            "| {case} | {backend} | {imp} | {} | {:.1} | {} |\n",
            if r.passed && !r.is_fixed() { "pass".to_string() } else { format!("**{}**", result_word(r)) },
            r.elapsed.as_secs_f64(),
            format!("{detail}{}", known_note(r)).replace('|', "\\|")
        ));
    }
    s.push_str(&cause_summary(reports, true));
    s.push_str(&format!("\n{}\n", summary(reports)));
    s
}

/// Failed trials grouped by their root cause: the failing step's kind, the first finding's
/// check, and the shape of its message (addresses, MACs, numbers and names of hosts left
/// out), most common first.
pub fn root_causes(reports: &[TrialReport]) -> Vec<(String, Vec<&TrialReport>)> {
    let mut groups: Vec<(String, Vec<&TrialReport>)> = Vec::new();
    for r in reports.iter().filter(|r| !r.passed && r.ignored.is_none()) {
        let key = cause_shape(r.failure.as_deref().unwrap_or("no failure recorded"), r.lab_error);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
    groups
}

/// `step 2 `wait_converged` (…): [reachability] h2: not converged within 30s: 1 of 2 peers …`
/// → `` `wait_converged` [reachability] not converged within N s: N of N peers … ``.
fn cause_shape(failure: &str, lab_error: bool) -> String {
    let line = failure.lines().next().unwrap_or("");
    let step = line.split('`').nth(1).map(|k| format!("`{k}` ")).unwrap_or_default();
    // after the step's name: `[check] host: what`, or a lab error's text
    let after_step = line.splitn(3, '`').nth(2).unwrap_or(line);
    let (check, what) = match after_step.find('[').map(|i| &after_step[i + 1..]).and_then(|r| r.split_once("] ")) {
        // the host is where, not what
        Some((check, tail)) => (format!("[{check}] "), tail.split_once(": ").map(|(_, w)| w).unwrap_or(tail)),
        None => (
            if lab_error { "lab error: ".to_string() } else { String::new() },
            after_step.split_once(": ").map(|(_, w)| w).unwrap_or(after_step),
        ),
    };
    // which implementation the host runs (mixed clusters) is not the cause
    let what = what.strip_prefix("(runs ").and_then(|w| w.split_once(") ")).map(|(_, w)| w).unwrap_or(what);
    // a wait that ran out says so first; the cause is what follows
    let (waited, what) = match what.strip_prefix("not converged within ").and_then(|w| w.split_once(": ")) {
        Some((_, w)) => ("not converged: ", w),
        None => ("", what),
    };
    // the first clause is the cause; what follows names peers and addresses
    let first = what.split(['(', ';', ':']).next().unwrap_or(what).trim_end_matches([' ', ',']);
    let words: Vec<&str> = first
        .split(' ')
        .map(|w| {
            let numeric = w.chars().any(|c| c.is_ascii_digit()) && w.chars().all(|c| c.is_ascii_hexdigit() || ".:/-_s".contains(c));
            if numeric {
                "N"
            } else if is_device(w.trim_matches('`')) {
                // routes missing on flannel.1 (vxlan) and on eth0 (host-gw) are one cause
                "DEVICE"
            } else {
                w
            }
        })
        .collect();
    let shape: String = words.join(" ").chars().take(100).collect();
    format!("{step}{check}{waited}{shape}")
}

/// One line apart for the lab's self-checks (controls, mutants) when a run has both kinds,
/// so the implementation's own figures read on their own.
pub(super) fn self_check_note(reports: &[TrialReport]) -> String {
    let (own, under_test): (Vec<&TrialReport>, Vec<&TrialReport>) = reports.iter().partition(|r| r.self_check);
    if own.is_empty() || under_test.is_empty() {
        return String::new();
    }
    let count = |v: &[&TrialReport]| {
        (v.iter().filter(|r| !r.fails_run() && r.ignored.is_none()).count(), v.iter().filter(|r| r.fails_run()).count())
    };
    let (a, b) = count(&under_test);
    let (c, d) = count(&own);
    format!("the implementation under test: {a} passed, {b} failed; the lab's self-checks (controls, mutants): {c} passed, {d} failed\n")
}

/// The interfaces findings name: the overlay devices and the underlay.
fn is_device(w: &str) -> bool {
    let w = w.trim_end_matches([',', ';']);
    w == crate::lab::UNDERLAY_IF
        || w == "flannel0"
        || ["flannel.", "flannel-v6."]
            .iter()
            .any(|p| w.strip_prefix(p).is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())))
}

/// The upstream bugs the field-bug cases in a group reproduce: a failure of the same shape
/// elsewhere is probably the same bug.
pub fn group_upstream(trials: &[&TrialReport]) -> Vec<String> {
    let mut v: Vec<String> = trials.iter().filter_map(|r| r.upstream.clone()).collect();
    v.sort();
    v.dedup();
    v
}

/// The root-cause summary that ends the table and the Markdown report.
fn cause_summary(reports: &[TrialReport], markdown: bool) -> String {
    let groups = root_causes(reports);
    if groups.is_empty() {
        return String::new();
    }
    let mut s =
        String::from(if markdown { "\n### Root causes\n\n" } else { "root causes (failed trials grouped by their first finding):\n" });
    for (shape, trials) in &groups {
        let names: Vec<&str> = trials.iter().take(3).map(|r| r.name.as_str()).collect();
        let more = if trials.len() > 3 { format!(", +{} more", trials.len() - 3) } else { String::new() };
        let bugs = group_upstream(trials);
        let bugs = if bugs.is_empty() { String::new() } else { format!(" [the shape of {}]", bugs.join(", ")) };
        let line = format!("{:>4} × {shape}  ({}{more}){bugs}", trials.len(), names.join(", "));
        if markdown {
            s.push_str(&format!("- {}\n", line.trim_start().replace('|', "\\|")));
        } else {
            s.push_str(&format!("  {line}\n"));
        }
    }
    s
}

/// The result column: pass, FAIL (a finding), LAB (the lab failed: never a pass), skip;
/// `known` (a known failure that failed) and `fixed` (one that passed).
pub fn result_word(r: &TrialReport) -> &'static str {
    if r.is_known_failure() {
        return "known";
    }
    if r.is_fixed() {
        return "fixed";
    }
    match (r.ignored.is_some(), r.passed, r.lab_error) {
        (true, _, _) => "skip",
        (_, true, _) => "pass",
        (_, false, true) => "LAB",
        (_, false, false) => "FAIL",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::input::profile::KnownFailure;

    fn report(name: &str, passed: bool, lab_error: bool, known: bool) -> TrialReport {
        TrialReport {
            name: name.into(),
            passed,
            log: Vec::new(),
            failure: (!passed).then(|| "step 2 `wait_converged`: [lease] h1: …".to_string()),
            lab_error,
            artifacts: None,
            ignored: None,
            elapsed: Duration::from_secs(1),
            level: Level::Must,
            known: known.then(|| KnownFailure {
                trials: "x::*".into(),
                check: crate::contract::Check::Routes,
                host: "h1".into(),
                step: None,
                reason: "upstream #1726".into(),
                link: None,
                intermittent: false,
            }),
            allow_fixed: true,
            upstream: None,
            self_check: false,
            findings: Vec::new(),
            failed_step: None,
            steps: Vec::new(),
            topology: None,
            wire: Default::default(),
        }
    }

    #[test]
    fn known_failures_are_counted_apart_and_never_hide_lab_errors() {
        let known = report("x::vxlan::f", false, false, true);
        let fixed = report("x::udp::f", true, false, true);
        let lab = report("x::host-gw::f", false, true, true);
        assert!(known.is_known_failure() && !known.fails_run());
        assert_eq!(result_word(&known), "known");
        assert!(fixed.is_fixed() && !fixed.fails_run());
        assert_eq!(result_word(&fixed), "fixed");
        assert!(lab.fails_run(), "a lab error is never excused");
        assert_eq!(result_word(&lab), "LAB");
        let t = table(&[known, fixed, report("y::vxlan::f", false, false, false)]);
        assert!(t.contains("1 passed, 1 failed, 1 known failure(s)"), "{t}");
        assert!(t.contains("1 known failure(s) fixed"), "{t}");
        assert!(t.contains("(known: upstream #1726)"), "{t}");
    }

    #[test]
    fn failures_are_grouped_by_root_cause() {
        let fail = |name: &str, f: &str| TrialReport { failure: Some(f.into()), ..report(name, false, false, false) };
        let reports = vec![
            fail("a::vxlan::f", "step 2 `wait_converged` (at 3 hosts, repeat 1): [reachability] h2: not converged within 30s: 1 of 2 peers do not answer over the overlay: h1 (10.244.3.1): Timeout"),
            fail("b::vxlan::f", "step 4 `wait_converged` (at 8 hosts, repeat 1): [reachability] h7: not converged within 20s: 3 of 7 peers do not answer over the overlay: h1 (10.244.9.1): Timeout, …"),
            fail("c::udp::f", "step 3 `expect_ping`: [ping] h1: 2 of 6 pod pings did not behave as expected; h1-p1 -> h2-p1 (10.244.1.2): Timeout"),
            fail("e::udp::f", "step 3 `expect_ping`: [ping] h2: (runs flanneld) 1 of 6 pod pings did not behave as expected; h2-p1 -> h1-p1 (10.244.1.2): Timeout"),
            report("d::vxlan::f", true, false, false),
        ];
        let groups = root_causes(&reports);
        assert_eq!(groups.len(), 2, "{:?}", groups.iter().map(|g| &g.0).collect::<Vec<_>>());
        let size = |k: &str| groups.iter().find(|g| g.0 == k).map(|g| g.1.len());
        assert_eq!(size("`wait_converged` [reachability] not converged: N of N peers do not answer over the overlay"), Some(2));
        // the implementation a host runs (mixed clusters) is not part of the cause
        assert_eq!(size("`expect_ping` [ping] N of N pod pings did not behave as expected"), Some(2));
        let t = table(&reports);
        assert!(t.contains("   2 × `wait_converged` [reachability]"), "{t}");
        assert!(markdown(&reports).contains("### Root causes"));
    }
}
