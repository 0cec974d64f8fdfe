//! The release matrix (`flannel-lab matrix`): one row per CASE::BACKEND, one column per
//! implementation, each cell the trial's verdict and its first finding; rows where the
//! implementations differ come first. Text, Markdown and a self-contained HTML page.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::text::result_word;
use crate::run::TrialReport;

/// One cell: the verdict word and the first finding (check and host), or the lab error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub result: &'static str,
    pub first: String,
}

/// Rows (CASE::BACKEND → implementation → cell) and the implementations in order.
pub struct Matrix {
    pub implementations: Vec<String>,
    pub rows: Vec<(String, BTreeMap<String, Cell>)>,
}

impl Matrix {
    /// From a run's reports (trial names `CASE::BACKEND::IMPL`), implementations in the
    /// order given; rows where the cells differ first, then by name.
    pub fn new(reports: &[TrialReport], implementations: &[String]) -> Matrix {
        let mut rows: BTreeMap<String, BTreeMap<String, Cell>> = BTreeMap::new();
        for r in reports {
            let mut parts = r.name.splitn(3, "::");
            let (case, backend, imp) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let first = match (&r.ignored, r.findings.first(), &r.failure) {
                (Some(why), _, _) => first_line(why).to_string(),
                (None, Some(f), _) => format!("[{}] {}", f.check, f.host),
                (None, None, Some(f)) => first_line(f).chars().take(60).collect(),
                (None, None, None) => String::new(),
            };
            rows.entry(format!("{case}::{backend}")).or_default().insert(imp.to_string(), Cell { result: result_word(r), first });
        }
        let mut rows: Vec<(String, BTreeMap<String, Cell>)> = rows.into_iter().collect();
        let differs = |cells: &BTreeMap<String, Cell>| {
            let words: Vec<Option<&str>> = implementations.iter().map(|i| cells.get(i).map(|c| c.result)).collect();
            words.windows(2).any(|w| w[0] != w[1])
        };
        rows.sort_by_key(|(_, cells)| !differs(cells));
        Matrix { implementations: implementations.to_vec(), rows }
    }

    fn cell_text(&self, cells: &BTreeMap<String, Cell>, imp: &str) -> String {
        match cells.get(imp) {
            Some(c) if c.first.is_empty() => c.result.to_string(),
            Some(c) => format!("{} {}", c.result, c.first),
            None => "–".into(),
        }
    }

    /// A plain table for a terminal.
    pub fn text(&self) -> String {
        let w = self.rows.iter().map(|(n, _)| n.len()).max().unwrap_or(5).max(5);
        let widths: Vec<usize> = self
            .implementations
            .iter()
            .map(|i| self.rows.iter().map(|(_, c)| self.cell_text(c, i).chars().count()).max().unwrap_or(0).max(i.len()).min(48))
            .collect();
        let mut s = format!("{:<w$}", "trial");
        for (i, cw) in self.implementations.iter().zip(&widths) {
            let _ = write!(s, "  {i:<cw$}");
        }
        s.push('\n');
        for (name, cells) in &self.rows {
            let _ = write!(s, "{name:<w$}");
            for (i, cw) in self.implementations.iter().zip(&widths) {
                let t: String = self.cell_text(cells, i).chars().take(*cw).collect();
                let _ = write!(s, "  {t:<cw$}");
            }
            s.push('\n');
        }
        s.push_str(&self.tally());
        s
    }

    /// `N rows differ between the implementations; per implementation: passed/failed`.
    fn tally(&self) -> String {
        let differ = self
            .rows
            .iter()
            .filter(|(_, c)| self.implementations.windows(2).any(|w| c.get(&w[0]).map(|x| x.result) != c.get(&w[1]).map(|x| x.result)))
            .count();
        let mut s = format!("{differ} of {} rows differ between the implementations", self.rows.len());
        for i in &self.implementations {
            let pass = self.rows.iter().filter(|(_, c)| c.get(i).is_some_and(|x| x.result == "pass")).count();
            let _ = write!(s, "; {i}: {pass} passed");
        }
        s.push('\n');
        s
    }

    pub fn markdown(&self) -> String {
        let mut s = String::from("| trial |");
        for i in &self.implementations {
            let _ = write!(s, " {i} |");
        }
        s.push_str("\n|---|");
        s.push_str(&"---|".repeat(self.implementations.len()));
        s.push('\n');
        for (name, cells) in &self.rows {
            let _ = write!(s, "| {name} |");
            for i in &self.implementations {
                let _ = write!(s, " {} |", self.cell_text(cells, i).replace('|', "\\|"));
            }
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&self.tally());
        s
    }

    pub fn html(&self) -> String {
        let esc = |t: &str| t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        let mut s = String::from(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>flannel-lab matrix</title><style>\
             body{font:14px system-ui,sans-serif;margin:2em;color:#1d2329}table{border-collapse:collapse}\
             td,th{border:1px solid #d5dae0;padding:4px 8px;text-align:left;vertical-align:top}\
             .pass{background:#e3f4e8}.FAIL{background:#fbe3e1}.LAB{background:#fdf0d9}.known,.fixed,.skip{background:#eef0f3}\
             </style></head><body><h1>flannel-lab matrix</h1>",
        );
        let _ = write!(s, "<p>{}</p><table><tr><th>trial</th>", esc(self.tally().trim()));
        for i in &self.implementations {
            let _ = write!(s, "<th>{}</th>", esc(i));
        }
        s.push_str("</tr>");
        for (name, cells) in &self.rows {
            let _ = write!(s, "<tr><td><code>{}</code></td>", esc(name));
            for i in &self.implementations {
                let class = cells.get(i).map(|c| c.result).unwrap_or("skip");
                let _ = write!(s, "<td class=\"{class}\">{}</td>", esc(&self.cell_text(cells, i)));
            }
            s.push_str("</tr>");
        }
        s.push_str("</table></body></html>\n");
        s
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{Check, Finding};

    fn report(name: &str, passed: bool, finding: Option<(Check, &str)>) -> TrialReport {
        let mut r = TrialReport::lab_failure(name.into(), "x".into());
        r.lab_error = false;
        r.passed = passed;
        r.failure = (!passed).then(|| "step 2 `wait_converged`: …".to_string());
        r.findings = finding.into_iter().map(|(c, h)| Finding::new(c, h, "1 of 2 routes")).collect();
        r
    }

    #[test]
    fn rows_that_differ_come_first_with_each_cells_first_finding() {
        let reports = vec![
            report("ping::vxlan::a", true, None),
            report("ping::vxlan::b", true, None),
            report("wire::vxlan::a", true, None),
            report("wire::vxlan::b", false, Some((Check::Routes, "h3"))),
        ];
        let m = Matrix::new(&reports, &["a".into(), "b".into()]);
        assert_eq!(m.rows[0].0, "wire::vxlan", "the row that differs first");
        let t = m.text();
        assert!(t.contains("FAIL [routes] h3"), "{t}");
        assert!(t.contains("1 of 2 rows differ between the implementations; a: 2 passed; b: 1 passed"), "{t}");
        assert!(m.markdown().starts_with("| trial | a | b |\n|---|---|---|\n| wire::vxlan | pass | FAIL [routes] h3 |"));
        assert!(m.html().contains("<td class=\"FAIL\">FAIL [routes] h3</td>"));
    }
}
