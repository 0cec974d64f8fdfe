//! The documentation cannot go stale: every `flannel-lab` command it shows parses with
//! today's CLI (and those that need no lab run, for real), every file and directory it
//! names exists, every case it filters or opens is in the suite, and every environment
//! variable the code reads is in docs/environment.md.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// README.md, agent/README.md and every page under docs/.
fn pages() -> Vec<(PathBuf, String)> {
    let r = root();
    let mut files = vec![r.join("README.md"), r.join("agent/README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(r.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files.into_iter().map(|f| (f.clone(), std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))).collect()
}

/// The commands a page shows: lines of an indented or fenced block, and inline code
/// spans, that start with `flannel-lab` (or `./target/*/flannel-lab`, or after `$ `).
/// Synopsis lines (with `[`, `|`, `…` or upper-case placeholders) are left out.
fn commands(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fenced = false;
    let mut joined: Vec<(usize, String, bool)> = Vec::new();
    // lines of code blocks (fenced, or indented by four spaces) joined at a trailing `\`
    let mut carry: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let code = fenced || line.starts_with("    ");
        let (start, mut l) = match carry.take() {
            Some((s, prev)) => (s, format!("{prev} {}", line.trim())),
            None => (n, line.to_string()),
        };
        if code && l.trim_end().ends_with('\\') {
            l = l.trim_end().trim_end_matches('\\').to_string();
            carry = Some((start, l));
            continue;
        }
        joined.push((start, l, code));
    }
    for (n, line, code) in joined {
        // (text, whether it is an invocation rather than a mention in prose)
        let mut candidates: Vec<(String, bool)> = Vec::new();
        if code {
            candidates.push((line.trim_start().trim_start_matches("$ ").to_string(), true));
        }
        candidates.extend(line.split('`').skip(1).step_by(2).map(|c| (c.to_string(), false)));
        for (c, invocation) in candidates {
            // a comment, or a description after two spaces (synopsis tables)
            let c = c.split("  ").next().unwrap_or("").split(" # ").next().unwrap_or("").trim().to_string();
            let words: Vec<&str> = c.split_whitespace().collect();
            // leading VAR=value assignments
            let start = words
                .iter()
                .position(|w| !(w.contains('=') && w.chars().next().is_some_and(|ch| ch.is_ascii_uppercase())))
                .unwrap_or(words.len());
            let Some(first) = words.get(start) else { continue };
            if !(*first == "flannel-lab" || (first.starts_with("./target/") && first.ends_with("/flannel-lab"))) {
                continue;
            }
            let rest = &words[start..];
            let synopsis = rest.iter().any(|w| {
                w.contains('[')
                    || w.contains('|')
                    || w.contains('…')
                    || w.contains("...")
                    || (w.chars().filter(|c| c.is_ascii_uppercase()).count() > 1
                        && !w.starts_with("--")
                        && !w.contains('/')
                        && !w.contains('.'))
            });
            if synopsis || rest.len() < 2 || rest.iter().any(|w| w.starts_with('>')) {
                continue;
            }
            out.push((n + 1, rest.join(" "), invocation));
        }
    }
    out.dedup();
    out.into_iter().filter(|(_, c, inv)| *inv || c.split_whitespace().count() > 2).map(|(n, c, _)| (n, c)).collect()
}

#[test]
fn every_command_shown_parses() {
    let mut bad = Vec::new();
    let mut seen = 0;
    for (file, text) in pages() {
        for (line, cmd) in commands(&text) {
            seen += 1;
            let mut argv: Vec<&str> = cmd.split_whitespace().collect();
            argv[0] = "flannel-lab";
            // `-- CMD…` after exec is free text; the rest is the CLI's
            if let Err(e) = flannel_lab::cli::parse(&argv) {
                let first = e.lines().next().unwrap_or("").to_string();
                if !first.contains("Usage") && !e.starts_with("Usage") && !is_help(&argv) {
                    bad.push(format!("{}:{line}: `{cmd}`: {first}", file.display()));
                }
            }
        }
    }
    assert!(seen >= 20, "only {seen} commands found in the docs: the scanner is broken");
    assert!(bad.is_empty(), "commands in the docs that today's CLI refuses:\n{}", bad.join("\n"));
}

fn is_help(argv: &[&str]) -> bool {
    argv.iter().any(|a| *a == "--help" || *a == "-h" || *a == "--version" || *a == "help")
}

/// Paths a page names in code spans: cases/, topologies/, harness/, agent/, ci/, docs/ and
/// .ci/ (globs and placeholders left out).
#[test]
fn every_path_named_exists() {
    let r = root();
    let prefixes = ["cases/", "topologies/", "harness/", "agent/", "ci/", "docs/", ".ci/", "../"];
    let mut bad = Vec::new();
    for (file, text) in pages() {
        let dir = file.parent().expect("page dir").to_path_buf();
        for (n, line) in text.lines().enumerate() {
            // code spans and markdown links
            let mut names: Vec<String> =
                line.split('`').skip(1).step_by(2).flat_map(|s| s.split_whitespace().map(str::to_string).collect::<Vec<_>>()).collect();
            names.extend(line.split("](").skip(1).filter_map(|s| s.split(')').next()).map(str::to_string));
            for name in names {
                let name = name.trim_matches(|c: char| c == ',' || c == ';' || c == ':' || c == '(' || c == ')' || c == '"' || c == '\'');
                // URLs, patterns, placeholders and made-up examples (`my-flannel.yaml`)
                if name.contains("://")
                    || name.contains('<')
                    || name.contains('*')
                    || name.contains('{')
                    || name.contains('…')
                    || name.contains("NAME")
                    || name.contains("my-")
                {
                    continue;
                }
                let link = line.contains(&format!("]({name})"));
                let in_repo = prefixes.iter().any(|p| name.starts_with(p));
                if !(in_repo || link) || name.starts_with("../shared") || name.starts_with("#") {
                    continue;
                }
                // links are relative to the page; code spans to the repository root
                let base = if link { &dir } else { &r };
                let path = name.split('#').next().unwrap_or(name).split(':').next().unwrap_or(name);
                if !base.join(path).exists() && !r.join(path).exists() {
                    bad.push(format!("{}:{}: `{name}` does not exist", file.display(), n + 1));
                }
            }
        }
    }
    assert!(bad.is_empty(), "paths in the docs that do not exist:\n{}", bad.join("\n"));
}

/// `--filter X`, `--case X` and `CASE::BACKEND::IMPL` names a page shows match the suite.
#[test]
fn every_case_named_exists() {
    let r = root();
    let cases: Vec<String> = std::fs::read_dir(r.join("cases"))
        .expect("cases/")
        .filter_map(|e| e.ok()?.path().file_stem().map(|s| s.to_string_lossy().to_string()))
        .collect();
    let mut bad = Vec::new();
    for (file, text) in pages() {
        for (line, cmd) in commands(&text) {
            let words: Vec<&str> = cmd.split_whitespace().collect();
            for pair in words.windows(2) {
                let (flag, value) = (pair[0], pair[1]);
                let ok = match flag {
                    "--filter" => cases.iter().any(|c| c.contains(value) || value.starts_with(&format!("{c}::"))),
                    "--case" => cases.iter().any(|c| c == value) || Path::new(value).exists() || r.join(value).exists(),
                    _ => true,
                };
                if !ok {
                    bad.push(format!("{}:{line}: `{flag} {value}` matches no case", file.display()));
                }
            }
        }
    }
    assert!(bad.is_empty(), "case names in the docs that are not in cases/:\n{}", bad.join("\n"));
}

/// Commands that need no lab (no root, no namespaces) are run for real: `check` on the
/// files the docs show, `list`, `help`, `diagnose` on the fixtures, `explore --dry-run`.
#[test]
fn commands_that_need_no_lab_run() {
    let bin = env!("CARGO_BIN_EXE_flannel-lab");
    let mut ran = 0;
    let mut bad = Vec::new();
    for (file, text) in pages() {
        for (line, cmd) in commands(&text) {
            let words: Vec<&str> = cmd.split_whitespace().collect();
            let dry_explore = words.get(1) == Some(&"explore") && words.contains(&"--dry-run");
            if !(matches!(words.get(1).copied(), Some("check") | Some("list") | Some("help") | Some("diagnose")) || dry_explore)
                || words.iter().any(|w| w.starts_with("--impl"))
            {
                continue;
            }
            let out = Command::new(bin).args(&words[1..]).current_dir(root()).output().expect("run flannel-lab");
            ran += 1;
            // diagnose exits 1 when it has findings: that is its job done
            let done = out.status.success() || (words[1] == "diagnose" && out.status.code() == Some(1));
            if !done {
                bad.push(format!(
                    "{}:{line}: `{cmd}` exited {}: {}",
                    file.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .chain(String::from_utf8_lossy(&out.stdout).lines())
                        .take(3)
                        .collect::<Vec<_>>()
                        .join(" / ")
                ));
            }
        }
    }
    assert!(ran >= 1, "no runnable command found in the docs");
    assert!(bad.is_empty(), "commands in the docs that fail:\n{}", bad.join("\n"));
}

/// Every `FLANNEL_LAB_*` variable (and `FLANNELD`, `FLANNEL_AGENT_LOG`) named in the code is
/// in docs/environment.md's table.
#[test]
fn every_environment_variable_is_documented() {
    let r = root();
    let table = std::fs::read_to_string(r.join("docs/environment.md")).expect("docs/environment.md");
    let mut missing = std::collections::BTreeSet::new();
    let mut stack = vec![r.join("harness/src"), r.join("harness/tests"), r.join("agent/src"), r.join("ci")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if !p.extension().is_some_and(|x| x == "rs" || x == "sh") || p.ends_with("docs.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            for (i, _) in text.match_indices("FLANNEL") {
                let name: String = text[i..].chars().take_while(|c| c.is_ascii_uppercase() || *c == '_' || c.is_ascii_digit()).collect();
                let name = name.trim_end_matches('_').to_string();
                let documented = name == "FLANNEL"
                    || name.starts_with("FLANNEL_NETWORK")
                    || name.starts_with("FLANNEL_SUBNET")
                    || name.starts_with("FLANNEL_MTU")
                    || name.starts_with("FLANNEL_IPMASQ")
                    || name.starts_with("FLANNEL_IPV6")
                    || name.starts_with("FLANNELD_")
                    || table.contains(&format!("`{name}`"));
                if !documented {
                    missing.insert(name);
                }
            }
        }
    }
    assert!(missing.is_empty(), "environment variables read by the code but not in docs/environment.md: {missing:?}");
}
