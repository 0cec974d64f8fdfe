//! The code's layout: in both crates, no `use` runs back up the data flow, i.e. no import
//! cycle spans more than one file. A file imports another when it names a path into it
//! (`crate::a::b::…`, or `super::…` resolved from the file's own module); its unit tests
//! (`#[cfg(test)] mod tests` at the end) are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Module path (`lab::gc`; `` for lib.rs) → file, for every `.rs` file under `src`.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read src").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(src).expect("under src").with_extension("");
                let mut parts: Vec<String> = rel.iter().map(|s| s.to_string_lossy().to_string()).collect();
                if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                    parts.pop();
                }
                out.insert(parts.join("::"), p);
            }
        }
    }
    out
}

/// The longest module prefix of `path` (segments joined by `::`) that is a file.
fn file_of(mods: &BTreeMap<String, PathBuf>, path: &str) -> Option<String> {
    let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    while !segs.is_empty() {
        let k = segs.join("::");
        if mods.contains_key(&k) {
            return Some(k);
        }
        segs.pop();
    }
    None
}

/// Paths a file names after `crate::`, with `super::` resolved; `a::{b, c::d}` groups
/// expanded one level.
fn named_paths(text: &str, module: &str) -> Vec<String> {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    };
    // `super::` once or several times: that many segments off the file's own module
    let segs: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
    let mut resolved = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("super::") {
        resolved.push_str(&rest[..i]);
        let mut k = 0;
        let mut after = &rest[i..];
        while let Some(r) = after.strip_prefix("super::") {
            k += 1;
            after = r;
        }
        let up = &segs[..segs.len().saturating_sub(k)];
        resolved.push_str(&if up.is_empty() { "crate::".to_string() } else { format!("crate::{}::", up.join("::")) });
        rest = after;
    }
    resolved.push_str(rest);
    let mut out = Vec::new();
    let bytes = resolved.as_bytes();
    let mut from = 0;
    while let Some(i) = resolved[from..].find("crate::") {
        let start = from + i + "crate::".len();
        let ok_before =
            from + i == 0 || !(bytes[from + i - 1].is_ascii_alphanumeric() || bytes[from + i - 1] == b'_' || bytes[from + i - 1] == b'$');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_' || bytes[end] == b':') {
            end += 1;
        }
        if ok_before {
            let path = resolved[start..end].trim_end_matches(':').to_string();
            if resolved[end..].starts_with('{') {
                if let Some(close) = resolved[end..].find('}') {
                    for name in resolved[end + 1..end + close].split(',') {
                        let name = name.split_whitespace().next().unwrap_or("");
                        if !name.is_empty() && name != "self" {
                            out.push(format!("{path}::{name}"));
                        }
                    }
                }
            }
            out.push(path);
        }
        from = end.max(start);
    }
    out
}

/// Strongly connected sets of more than one file (Kosaraju).
fn cycles(src: &Path) -> Vec<BTreeSet<String>> {
    let mods = modules(src);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, p) in &mods {
        let text = std::fs::read_to_string(p).expect("read source");
        let e = edges.entry(m.clone()).or_default();
        for path in named_paths(&text, m) {
            if let Some(t) = file_of(&mods, &path) {
                if &t != m {
                    e.insert(t);
                }
            }
        }
    }
    // first pass: finishing order
    let names: Vec<String> = mods.keys().cloned().collect();
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for n in &names {
        if seen.contains(n) {
            continue;
        }
        let mut stack = vec![(n.clone(), false)];
        while let Some((v, done)) = stack.pop() {
            if done {
                order.push(v);
                continue;
            }
            if !seen.insert(v.clone()) {
                continue;
            }
            stack.push((v.clone(), true));
            for w in edges.get(&v).into_iter().flatten() {
                if !seen.contains(w) {
                    stack.push((w.clone(), false));
                }
            }
        }
    }
    // second pass on the reversed graph
    let mut rev: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, bs) in &edges {
        for b in bs {
            rev.entry(b.as_str()).or_default().push(a.as_str());
        }
    }
    let mut assigned = BTreeSet::new();
    let mut out = Vec::new();
    for v in order.iter().rev() {
        if assigned.contains(v.as_str()) {
            continue;
        }
        let mut comp = BTreeSet::new();
        let mut stack = vec![v.as_str()];
        while let Some(x) = stack.pop() {
            if !assigned.insert(x.to_string()) {
                continue;
            }
            comp.insert(x.to_string());
            for y in rev.get(x).into_iter().flatten() {
                if !assigned.contains(*y) {
                    stack.push(y);
                }
            }
        }
        if comp.len() > 1 {
            out.push(comp);
        }
    }
    out
}

#[test]
fn no_import_cycle_spans_files_in_the_harness() {
    let c = cycles(&root().join("harness/src"));
    assert!(c.is_empty(), "import cycles in harness/src: {c:?}");
}

#[test]
fn no_import_cycle_spans_files_in_the_agent() {
    let c = cycles(&root().join("agent/src"));
    assert!(c.is_empty(), "import cycles in agent/src: {c:?}");
}

/// The check itself: a cycle made on purpose is found, with exactly its files.
#[test]
fn a_cycle_is_found() {
    let dir = std::env::temp_dir().join(format!("flannel-lab-layout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("b")).expect("mkdir");
    std::fs::write(dir.join("lib.rs"), "pub mod a;\npub mod b;\npub mod c;\n").expect("write");
    std::fs::write(dir.join("a.rs"), "use crate::b::{inner, X};\n").expect("write");
    std::fs::write(dir.join("b/mod.rs"), "pub mod inner;\npub const X: u8 = 1;\n").expect("write");
    std::fs::write(dir.join("b/inner.rs"), "pub fn f() { super::super::a::g() }\n").expect("write");
    std::fs::write(dir.join("c.rs"), "use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::c;\n}\n").expect("write");
    let c = cycles(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let want: BTreeSet<String> = ["a", "b::inner"].iter().map(|s| s.to_string()).collect();
    assert_eq!(c, vec![want]);
}
