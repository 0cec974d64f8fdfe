//! One self-contained HTML page per run: it opens in a browser from a file, with no server
//! and nothing fetched. First screen: the counts and the failures grouped by root cause;
//! then pass rates per implementation × backend; then every trial, failures first, each
//! with its step timeline, its topology, its log and links to its artifact files.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::figures;
use super::text::{first_line, known_note, root_causes, summary};
use crate::input::case::Level;
use crate::report::result_word;
use crate::run::TrialReport;
use crate::scale::plot::esc;

/// What the page says about the run as a whole.
pub struct RunInfo {
    /// The implementation under test.
    pub implementation: String,
    /// UTC, `2026-12-06 14:03`.
    pub generated: String,
}

impl RunInfo {
    pub fn now(implementation: &str) -> RunInfo {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        RunInfo { implementation: implementation.to_string(), generated: utc(secs) }
    }
}

/// `YYYY-MM-DD HH:MM` (UTC) from seconds since the epoch (civil-from-days).
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (h, m) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}")
}

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d232a;background:#fafbfc}
header,section{max-width:1180px;margin:0 auto;padding:12px 24px}
header{border-bottom:1px solid #dde2e7;background:#fff}
h1{font-size:22px;margin:6px 0}h2{font-size:17px;margin:18px 0 8px}h4{margin:14px 0 6px;font-size:13px;color:#444}
.meta{color:#555;margin:0 0 8px}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;margin:2px 6px 2px 0;font-weight:600;font-size:13px}
.pass{background:#e3f4e8;color:#1f6b3a}.fail{background:#fbe3e1;color:#a32a20}.lab{background:#fdf0dc;color:#8a5a0b}
.known{background:#ecebf7;color:#4b3f8f}.skip{background:#eceff2;color:#50585f}.fixed{background:#dff1f7;color:#1b5e74}
details{background:#fff;border:1px solid #dde2e7;border-radius:6px;margin:6px 0;padding:6px 10px}
summary{cursor:pointer}summary code{font-size:12.5px}
.cause summary .n{display:inline-block;min-width:2.2em;font-weight:700;color:#a32a20}
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #dde2e7;padding:4px 10px;text-align:left}
.bar{height:6px;background:#fbe3e1;border-radius:3px;overflow:hidden;margin-top:3px}.bar i{display:block;height:6px;background:#3a9a5b}
pre{background:#f4f6f8;padding:8px;overflow-x:auto;font-size:12px;max-height:420px}
.trial summary .word{display:inline-block;width:4.5em;font-weight:700}
svg{max-width:100%;height:auto;display:block}
.legend span{display:inline-block;margin-right:14px;font-size:12px}.legend i{display:inline-block;width:12px;height:10px;margin-right:4px;vertical-align:middle}
"#;

/// Marks on the root element how many figures are shown and how many have a laid-out size:
/// the report's own check that it rendered (the browser test reads it).
const CHECK: &str = r#"
addEventListener('load',()=>{const shown=[...document.querySelectorAll('svg')].filter(s=>!s.closest('details:not([open])'));
const drawn=shown.filter(s=>{const b=s.getBBox();return b.width>0&&b.height>0});
document.documentElement.dataset.figures=shown.length;document.documentElement.dataset.drawn=drawn.length;});
"#;

fn class_of(r: &TrialReport) -> &'static str {
    match result_word(r) {
        "pass" => "pass",
        "FAIL" => "fail",
        "LAB" => "lab",
        "known" => "known",
        "fixed" => "fixed",
        _ => "skip",
    }
}

/// `CASE::BACKEND::IMPL` split; names without three parts keep what they have.
fn parts(name: &str) -> (&str, &str, &str) {
    let mut p = name.splitn(3, "::");
    (p.next().unwrap_or(""), p.next().unwrap_or(""), p.next().unwrap_or(""))
}

fn anchor(name: &str) -> String {
    format!("t-{}", name.replace("::", "--").replace(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_', "_"))
}

pub fn page(reports: &[TrialReport], info: &RunInfo) -> String {
    let mut s = String::with_capacity(64 * 1024 + reports.len() * 8 * 1024);
    let _ = write!(
        s,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>flannel-lab: {}</title><style>{STYLE}</style></head><body>",
        esc(&info.implementation)
    );
    header(&mut s, reports, info);
    causes(&mut s, reports);
    matrix(&mut s, reports);
    trials(&mut s, reports);
    let _ = writeln!(s, "<script>{CHECK}</script></body></html>");
    s
}

fn header(s: &mut String, reports: &[TrialReport], info: &RunInfo) {
    let total: f64 = reports.iter().map(|r| r.elapsed.as_secs_f64()).sum();
    let _ = write!(
        s,
        "<header><h1>flannel-lab report: <code>{}</code></h1><p class=\"meta\">{} trials · {:.0} s of trial time · generated {} UTC · flannel-lab {}</p><div>",
        esc(&info.implementation),
        reports.len(),
        total,
        esc(&info.generated),
        env!("CARGO_PKG_VERSION")
    );
    for (word, class) in [("pass", "pass"), ("FAIL", "fail"), ("LAB", "lab"), ("known", "known"), ("fixed", "fixed"), ("skip", "skip")] {
        let n = reports.iter().filter(|r| result_word(r) == word).count();
        if n > 0 || word == "pass" || word == "FAIL" {
            let what = match word {
                "pass" => "passed",
                "FAIL" => "failed",
                "LAB" => "lab errors",
                "known" => "known failures",
                "fixed" => "known failures fixed",
                _ => "skipped",
            };
            let _ = write!(s, "<span class=\"badge {class}\">{n} {what}</span>");
        }
    }
    let should = reports.iter().filter(|r| r.fails_run() && r.level == Level::Should).count();
    if should > 0 {
        let _ = write!(s, "<span class=\"badge skip\">{should} of the failures are should-level (hardening)</span>");
    }
    let _ = write!(s, "</div><p class=\"meta\">{}</p></header>", esc(&summary(reports)));
}

fn causes(s: &mut String, reports: &[TrialReport]) {
    s.push_str("<section id=\"causes\"><h2>Root causes</h2>");
    let groups = root_causes(reports);
    if groups.is_empty() {
        s.push_str("<p>No trial failed.</p></section>");
        return;
    }
    s.push_str("<p class=\"meta\">Failed trials grouped by the step, check and shape of their first finding, most common first.</p>");
    for (shape, trials) in &groups {
        let bugs = super::text::group_upstream(trials);
        let bugs = if bugs.is_empty() { String::new() } else { format!(" · the shape of {}", esc(&bugs.join(", "))) };
        let _ = write!(
            s,
            "<details class=\"cause\"><summary><span class=\"n\">{}</span> trial{} · <code>{}</code>{bugs}</summary><ul>",
            trials.len(),
            if trials.len() == 1 { "" } else { "s" },
            esc(shape)
        );
        for r in trials {
            let _ = write!(
                s,
                "<li><a href=\"#{}\">{}</a> <span class=\"badge {}\">{}</span> {}</li>",
                anchor(&r.name),
                esc(&r.name),
                class_of(r),
                result_word(r),
                esc(first_line(r.failure.as_deref().unwrap_or("")))
            );
        }
        s.push_str("</ul></details>");
    }
    s.push_str("</section>");
}

fn matrix(s: &mut String, reports: &[TrialReport]) {
    let (own, under_test): (Vec<&TrialReport>, Vec<&TrialReport>) = reports.iter().partition(|r| r.self_check);
    s.push_str("<section id=\"matrix\"><h2>By implementation and backend</h2><p class=\"meta\">Trials that did not fail the run (passes, known failures) of those that ran.</p>");
    if !under_test.is_empty() {
        s.push_str("<h3>The implementation under test</h3>");
        matrix_table(s, &under_test);
    }
    if !own.is_empty() {
        s.push_str("<h3>The lab's self-checks</h3><p class=\"meta\">Controls (on the reference agent) and mutants (the lab's own faulty agents, which pass when their case catches them): they judge the lab, not the implementation.</p>");
        matrix_table(s, &own);
    }
    s.push_str("</section>");
}

fn matrix_table(s: &mut String, reports: &[&TrialReport]) {
    // implementation → backend → (passed, counted)
    let mut cells: BTreeMap<&str, BTreeMap<&str, (usize, usize)>> = BTreeMap::new();
    let mut backends: Vec<&str> = Vec::new();
    for r in reports.iter().filter(|r| r.ignored.is_none()) {
        let (_, backend, imp) = parts(&r.name);
        if !backends.contains(&backend) {
            backends.push(backend);
        }
        let c = cells.entry(imp).or_default().entry(backend).or_default();
        c.1 += 1;
        if !r.fails_run() {
            c.0 += 1;
        }
    }
    backends.sort();
    s.push_str("<table><tr><th>implementation</th>");
    for b in &backends {
        let _ = write!(s, "<th>{}</th>", esc(b));
    }
    s.push_str("</tr>");
    for (imp, row) in &cells {
        let _ = write!(s, "<tr><td><code>{}</code></td>", esc(imp));
        for b in &backends {
            match row.get(b) {
                Some((ok, n)) => {
                    let pct = 100.0 * *ok as f64 / (*n).max(1) as f64;
                    let _ = write!(s, "<td>{ok} / {n}<div class=\"bar\"><i style=\"width:{pct:.0}%\"></i></div></td>");
                }
                None => s.push_str("<td>–</td>"),
            }
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
}

/// Failures first (lab errors, then findings), then known failures, fixed, passes, skips.
fn order(r: &TrialReport) -> u8 {
    match result_word(r) {
        "LAB" => 0,
        "FAIL" => 1,
        "known" => 2,
        "fixed" => 3,
        "pass" => 4,
        _ => 5,
    }
}

fn trials(s: &mut String, reports: &[TrialReport]) {
    let mut sorted: Vec<&TrialReport> = reports.iter().collect();
    sorted.sort_by_key(|r| order(r));
    let open_failures = reports.iter().filter(|r| r.fails_run()).count() <= 5;
    s.push_str("<section id=\"trials\"><h2>Trials</h2><p class=\"legend\"><span><i style=\"background:#b8bec6\"></i>setup</span><span><i style=\"background:#3a9a5b\"></i>step passed</span><span><i style=\"background:#7b5ea7\"></i>fault injected</span><span><i style=\"background:#d0473d\"></i>failed (finding)</span><span><i style=\"background:#e69b23\"></i>lab error</span><span><i style=\"background:#3b7dd8;opacity:.35\"></i>background traffic</span></p>");
    for r in sorted {
        let class = class_of(r);
        let open = if r.fails_run() && open_failures { " open" } else { "" };
        let detail = r.failure.as_deref().or(r.ignored.as_deref()).map(first_line).unwrap_or("");
        let _ = write!(
            s,
            "<details class=\"trial {class}\" id=\"{}\"{open}><summary><span class=\"word badge {class}\">{}</span> <code>{}</code> · {:.1} s · {}{}</summary>",
            anchor(&r.name),
            result_word(r),
            esc(&r.name),
            r.elapsed.as_secs_f64(),
            esc(detail),
            esc(&known_note(r))
        );
        if let Some(f) = &r.failure {
            let _ = write!(s, "<pre>{}</pre>", esc(f));
        }
        if !r.steps.is_empty() {
            let _ = write!(s, "<h4>Timeline</h4>{}", figures::timeline(&r.steps, r.elapsed));
        }
        if let Some(t) = &r.topology {
            let _ = write!(s, "<h4>Topology <code>{}</code></h4>{}", esc(&t.name), figures::topology(t));
        }
        if !r.wire.is_empty() {
            wire(s, &r.wire);
        }
        if !r.log.is_empty() {
            let keep = if r.passed { 40 } else { 400 };
            let from = r.log.len().saturating_sub(keep);
            let cut = if from > 0 { format!("(first {from} lines left out)\n") } else { String::new() };
            let _ = write!(s, "<h4>Log</h4><pre>{}{}</pre>", cut, esc(&r.log[from..].join("\n")));
        }
        if let Some(dir) = &r.artifacts {
            artifacts(s, dir);
        }
        s.push_str("</details>");
    }
    s.push_str("</section>");
}

/// Pod-traffic frames the capture showed per sender (rows) and receiver (columns).
fn wire(s: &mut String, counts: &crate::steps::wire_checks::WireCounts) {
    let mut names: Vec<&str> = counts.keys().flat_map(|(a, b)| [a.as_str(), b.as_str()]).collect();
    names.sort();
    names.dedup();
    s.push_str("<h4>On the wire: pod-traffic frames per sender (row) and receiver (column), from the underlay capture</h4><table class=\"wire\"><tr><th></th>");
    for n in &names {
        let _ = write!(s, "<th>{}</th>", esc(n));
    }
    s.push_str("</tr>");
    for a in &names {
        let _ = write!(s, "<tr><th>{}</th>", esc(a));
        for b in &names {
            match counts.get(&(a.to_string(), b.to_string())) {
                Some(n) => {
                    let _ = write!(s, "<td>{n}</td>");
                }
                None if a == b => s.push_str("<td>–</td>"),
                None => s.push_str("<td>0</td>"),
            }
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
}

/// Links to the files a failed trial kept (two levels deep).
fn artifacts(s: &mut String, dir: &Path) {
    let _ = write!(s, "<h4>Artifacts in <code>{}</code></h4><ul>", esc(&dir.display().to_string()));
    let mut files = Vec::new();
    let mut walk = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = walk.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.filter_map(|e| e.ok()) {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() && depth < 2 => walk.push((p, depth + 1)),
                Ok(t) if t.is_file() => files.push((p.clone(), e.metadata().map(|m| m.len()).unwrap_or(0))),
                _ => {}
            }
        }
    }
    files.sort();
    if files.is_empty() {
        s.push_str("<li>(no files: the directory is gone)</li>");
    }
    for (p, len) in files.iter().take(200) {
        let rel = p.strip_prefix(dir).unwrap_or(p).display().to_string();
        let _ = write!(s, "<li><a href=\"file://{}\">{}</a> ({} bytes)</li>", esc(&p.display().to_string()), esc(&rel), len);
    }
    s.push_str("</ul>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00");
        assert_eq!(utc(1_796_568_180), "2026-12-06 14:43");
    }

    #[test]
    fn anchors_are_safe() {
        assert_eq!(anchor("a-b::host-gw::my impl"), "t-a-b--host-gw--my_impl");
    }
}
