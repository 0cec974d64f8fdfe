//! Diagnostics for input files (topologies, cases, profiles): every problem names the
//! file, the key path and line:column, with a one-line hint; all problems of a file are
//! reported together.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Key path such as `segments[0].cidr`; empty for the whole document.
    pub path: String,
    pub message: String,
    pub hint: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.message)?;
        if !self.hint.is_empty() {
            write!(f, "\n  hint: {}", self.hint)?;
        }
        Ok(())
    }
}

/// One or more problems with one input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl From<Diagnostics> for crate::error::Error {
    fn from(d: Diagnostics) -> crate::error::Error {
        crate::error::Error::Input(d.to_string())
    }
}

/// A step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

pub fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

pub fn path_string(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if s.is_empty() => s.push_str(k),
            Seg::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Collects semantic problems found after parsing, locating each in the source text.
pub struct Collector<'a> {
    file: &'a Path,
    src: &'a Source,
    found: Vec<Diagnostic>,
}

impl<'a> Collector<'a> {
    /// Starts from what the parse of `src` already found.
    pub fn new(file: &'a Path, src: &'a Source) -> Self {
        Collector { file, src, found: src.earlier.clone() }
    }

    pub fn push(&mut self, path: &[Seg], message: impl Into<String>, hint: impl Into<String>) {
        let path = self.src.original(path);
        // once the parse had to cut a whole list item out (a required value it could not
        // read), what the rest names may have lived in that item ("no segment named `lan`"):
        // checks of meaning wait until the structure is fixed, so none is a false one
        if !self.src.removed.is_empty() {
            return;
        }
        let (line, column) = locate(self.src, &path);
        self.found.push(Diagnostic {
            file: self.file.to_path_buf(),
            line,
            column,
            path: path_string(&path),
            message: message.into(),
            hint: hint.into(),
        });
    }

    /// Every problem, in the file's order.
    pub fn finish(mut self) -> Result<(), Diagnostics> {
        if self.found.is_empty() {
            Ok(())
        } else {
            self.found.sort_by_key(|d| (d.line, d.column));
            Err(Diagnostics(self.found))
        }
    }
}

/// An input file's text, with what its parse already found: problems the structure had
/// (all of them: each was cut out of the tree and the parse went on) and how indexes of the
/// parsed value map back to the file's (a sequence item cut out shifts the ones after it).
#[derive(Debug, Clone, Default)]
pub struct Source {
    pub text: String,
    earlier: Vec<Diagnostic>,
    removed: Vec<(Vec<Seg>, usize)>,
}

impl Source {
    /// A text parsed without trouble.
    pub fn plain(text: &str) -> Source {
        Source { text: text.to_string(), ..Source::default() }
    }

    /// The file's path for a path into the parsed value.
    fn original(&self, path: &[Seg]) -> Vec<Seg> {
        let mut out: Vec<Seg> = Vec::new();
        for seg in path {
            match seg {
                Seg::Index(i) => {
                    let mut gone: Vec<usize> = self.removed.iter().filter(|(p, _)| *p == out).map(|(_, j)| *j).collect();
                    gone.sort_unstable();
                    let mut j = *i;
                    for g in gone {
                        if g <= j {
                            j += 1;
                        }
                    }
                    out.push(Seg::Index(j));
                }
                k => out.push(k.clone()),
            }
        }
        out
    }
}

impl std::ops::Deref for Source {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

/// Reads a file as UTF-8 text: a missing, unreadable, binary or empty file is one located
/// problem that says which (`kind` names what the file was read as: case, topology, …).
pub fn read_text(file: &Path, kind: &str) -> Result<String, Diagnostics> {
    let one = |line, column, message: String, hint: &str| {
        Diagnostics(vec![Diagnostic { file: file.to_path_buf(), line, column, path: String::new(), message, hint: hint.into() }])
    };
    let bytes = std::fs::read(file).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => one(
            1,
            1,
            format!("cannot read the {kind} file: it does not exist"),
            "check the path; it is resolved relative to the current directory (or the topologies/ or cases/ folder for names)",
        ),
        std::io::ErrorKind::PermissionDenied => {
            one(1, 1, format!("cannot read the {kind} file: permission denied"), "check the file's permissions")
        }
        std::io::ErrorKind::IsADirectory => one(1, 1, format!("a directory, not a {kind} file"), "name a .yaml file"),
        _ => one(1, 1, format!("cannot read the {kind} file: {e}"), "check the file"),
    })?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.as_bytes();
            let before = &bytes[..at];
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            let column = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
            let nul = bytes.contains(&0);
            return Err(one(
                line,
                column,
                format!("not UTF-8 text: byte 0x{:02x} at line {line}, column {column} is not valid UTF-8", bytes[at]),
                if nul {
                    "this looks like a binary file, not YAML: name the .yaml file"
                } else {
                    "save the file as UTF-8 (a Latin-1 or UTF-16 editor setting writes other bytes)"
                },
            ));
        }
    };
    let meaningful = text.lines().any(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#') && t != "---" && t != "..."
    });
    if !meaningful {
        return Err(one(
            1,
            1,
            format!("the {kind} file is empty"),
            &format!("write the {kind}: see docs/cases.md and docs/profiles.md for the formats"),
        ));
    }
    Ok(text)
}

/// Reads and deserializes a YAML file into its raw form (`kind`: what it is read as).
/// Syntax errors stop there; type errors, unknown keys and unknown names are all found
/// (each one cut out of the tree in turn), and come back in the [`Source`] when the rest
/// still parses, so checks after the parse add theirs to the same report.
pub fn load_yaml<T: DeserializeOwned>(file: &Path, kind: &str) -> Result<(T, Source), Diagnostics> {
    let text = read_text(file, kind)?;
    parse_source(file, text)
}

/// [`load_yaml`] on text already read.
pub fn parse_source<T: DeserializeOwned>(file: &Path, text: String) -> Result<(T, Source), Diagnostics> {
    // the usual case first: the file parses as it is
    let first = match deserialize_str::<T>(file, &text) {
        Ok(v) => return Ok((v, Source::plain(&text))),
        Err(d) => d,
    };
    // a syntax error leaves no tree to go on with
    let mut tree: yaml_serde::Value = match yaml_serde::from_str(&text) {
        Ok(v) => v,
        Err(_) => return Err(first),
    };
    let mut source = Source::plain(&text);
    let mut seen: Vec<Vec<Seg>> = Vec::new();
    for _ in 0..64 {
        let e = match serde_path_to_error::deserialize::<_, T>(tree.clone()) {
            Ok(v) => return Ok((v, source)),
            Err(e) => e,
        };
        let segs = segments(&e);
        let message = e.into_inner().to_string();
        let orig = source.original(&segs);
        // a missing key is reported unless it is one this loop cut out
        let missing_cut = message.starts_with("missing field") && seen.iter().any(|p| p.len() == orig.len() + 1 && p.starts_with(&orig));
        if !missing_cut {
            let (line, column) = if message.starts_with("unknown field") {
                locate_key(&text, &orig)
            } else {
                locate_exact(&text, &orig).unwrap_or_else(|| locate(&text, &orig))
            };
            let d = diagnostic(file, line, column, &orig, &message);
            source.earlier.push(d);
        }
        // a misspelt name with a near valid one: read it as that one and go on (so its
        // absence causes nothing more); the first time only
        if !seen.contains(&orig) {
            if let Some((_, word, valid)) = unknown_name(&message) {
                if let Some(n) = nearest(&word, valid.iter().map(String::as_str)) {
                    if rename(&mut tree, &segs, &word, n) {
                        seen.push(orig);
                        continue;
                    }
                }
            }
        }
        // cut the culprit out and go on; a required key that was cut takes its enclosing
        // list item with it (a step without its `within`); what cannot be cut ends the search
        let target: Option<usize> = if missing_cut {
            segs.iter().rposition(|g| matches!(g, Seg::Index(_))).map(|i| i + 1)
        } else if !segs.is_empty() && !message.starts_with("missing field") {
            Some(segs.len())
        } else {
            None
        };
        let cuttable = target.is_some_and(|n| {
            let (cur, at) = (&segs[..n], source.original(&segs[..n]));
            !seen.contains(&at) && cut(&mut tree, cur, &mut source, &at)
        });
        seen.push(orig);
        if !cuttable {
            break;
        }
    }
    Err(Diagnostics(source.earlier))
}

/// Reads the name `word` at `path` as `to`: a key of the mapping there (or of the one
/// holding the key `path` ends in), or the string there. False when nothing was renamed.
fn rename(tree: &mut yaml_serde::Value, path: &[Seg], word: &str, to: &str) -> bool {
    let mut node = tree;
    for (i, seg) in path.iter().enumerate() {
        // a path ending in the unknown key itself: rename it in the mapping holding it
        if i + 1 == path.len() && matches!(seg, Seg::Key(k) if k == word) {
            break;
        }
        let next = match seg {
            Seg::Key(k) => node.as_mapping_mut().and_then(|m| m.get_mut(k.as_str())),
            Seg::Index(i) => node.as_sequence_mut().and_then(|s| s.get_mut(*i)),
        };
        let Some(n) = next else { return false };
        node = n;
    }
    if let Some(m) = node.as_mapping_mut() {
        if m.contains_key(to) {
            return false;
        }
        if let Some(v) = m.shift_remove(word) {
            m.insert(yaml_serde::Value::String(to.to_string()), v);
            return true;
        }
        return false;
    }
    if node.as_str() == Some(word) {
        *node = yaml_serde::Value::String(to.to_string());
        return true;
    }
    false
}

/// Removes the value at `path` (a key, or a sequence item, recorded so later paths map back).
fn cut(tree: &mut yaml_serde::Value, path: &[Seg], source: &mut Source, orig: &[Seg]) -> bool {
    let Some((last, parent)) = path.split_last() else { return false };
    let mut node = tree;
    for seg in parent {
        let next = match seg {
            Seg::Key(k) => node.as_mapping_mut().and_then(|m| m.get_mut(k.as_str())),
            Seg::Index(i) => node.as_sequence_mut().and_then(|s| s.get_mut(*i)),
        };
        let Some(n) = next else { return false };
        node = n;
    }
    match last {
        Seg::Key(k) => node.as_mapping_mut().and_then(|m| m.shift_remove(k.as_str())).is_some(),
        Seg::Index(i) => match node.as_sequence_mut() {
            Some(s) if *i < s.len() => {
                s.remove(*i);
                let at = orig.len() - 1;
                if let Seg::Index(j) = orig[at] {
                    source.removed.push((orig[..at].to_vec(), j));
                }
                true
            }
            _ => false,
        },
    }
}

fn segments<E>(e: &serde_path_to_error::Error<E>) -> Vec<Seg> {
    e.path()
        .iter()
        .filter_map(|s| match s {
            serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
            serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
            serde_path_to_error::Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
            serde_path_to_error::Segment::Unknown => None,
        })
        .collect()
}

fn deserialize_str<T: DeserializeOwned>(file: &Path, src: &str) -> Result<T, Diagnostics> {
    let de = yaml_serde::Deserializer::from_str(src);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let segs = segments(&e);
        let inner = e.into_inner();
        // Errors raised while converting a value carry the enclosing mapping's position;
        // the key path points at the value itself, so prefer it when it resolves.
        let (line, column) = locate_exact(src, &segs).or_else(|| inner.location().map(|l| (l.line(), l.column()))).unwrap_or((1, 1));
        Diagnostics(vec![diagnostic(file, line, column, &segs, &inner.to_string())])
    })
}

/// Parses YAML text into `T`, every structural problem reported (see [`load_yaml`]).
pub fn parse_yaml<T: DeserializeOwned>(file: &Path, src: &str) -> Result<T, Diagnostics> {
    let (v, source) = parse_source(file, src.to_string())?;
    if source.earlier.is_empty() {
        Ok(v)
    } else {
        Err(Diagnostics(source.earlier))
    }
}

/// One problem from a parse error's text: the position suffix dropped, names said plainly,
/// and the nearest valid name suggested for a misspelt one.
fn diagnostic(file: &Path, line: usize, column: usize, segs: &[Seg], raw: &str) -> Diagnostic {
    let mut message = raw.to_string();
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    if let Some((head, rest)) = message.split_once(": ") {
        if !head.contains(' ') && !head.starts_with("unknown") {
            message = rest.to_string();
        }
    }
    let (message, hint) = match unknown_name(&message) {
        Some((what, word, valid)) => {
            let what = match (what, segs) {
                ("variant", [.., Seg::Key(k), Seg::Index(_)]) if k == "steps" => "step kind",
                ("variant", [.., Seg::Key(k), Seg::Key(_)]) if k == "step" => "step kind",
                ("variant", [.., Seg::Key(k)]) if k == "check" => "check",
                ("variant", _) => "name",
                _ => "key",
            };
            let refs: Vec<&str> = valid.iter().map(String::as_str).collect();
            let hint = match nearest(&word, refs.iter().copied()) {
                Some(n) => {
                    let rest: Vec<String> = refs.iter().filter(|r| **r != n).map(|r| format!("`{r}`")).collect();
                    format!("did you mean `{n}`? (the others: {})", rest.join(", "))
                }
                None => format!("use one of {}", refs.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ")),
            };
            (format!("unknown {what} `{word}`"), hint)
        }
        None => {
            let hint = hint_for(&message);
            (message, hint)
        }
    };
    Diagnostic { file: file.to_path_buf(), line, column, path: path_string(segs), message, hint }
}

/// `unknown field `x`, expected one of `a`, `b`` (or `expected `a` or `b``, or `there are
/// no fields`): ("field" | "variant", "x", [a, b]).
fn unknown_name(message: &str) -> Option<(&'static str, String, Vec<String>)> {
    let what = if message.starts_with("unknown field") {
        "field"
    } else if message.starts_with("unknown variant") {
        "variant"
    } else {
        return None;
    };
    let ticks: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    let (word, valid) = ticks.split_first()?;
    Some((what, word.to_string(), valid.iter().map(|s| s.to_string()).collect()))
}

/// The valid name nearest to `word`, when it is close enough to be a slip of the keyboard:
/// at most one edit per three letters (a swap of two neighbours is one), or a high
/// Jaro-Winkler similarity (which favours a shared beginning: `start_agent`).
pub fn nearest<'a>(word: &str, valid: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let most = (word.chars().count() / 3).max(1);
    valid
        .into_iter()
        .map(|v| (strsim::osa_distance(word, v), strsim::jaro_winkler(word, v), v))
        .filter(|(d, jw, _)| *d <= most || *jw >= 0.9)
        .min_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)))
        .map(|(_, _, v)| v)
}

fn hint_for(message: &str) -> String {
    if message.starts_with("missing field") {
        "add the key; docs/cases.md and docs/profiles.md describe the formats".into()
    } else if message.starts_with("invalid type") {
        "the value has the wrong type for this key".into()
    } else if message.contains("did not find expected") || message.contains("while parsing") || message.contains("mapping values") {
        "YAML syntax: check indentation and `key: value` pairs".into()
    } else {
        "fix the value".into()
    }
}

/// Finds the 1-based line and column of a key path in block-style YAML (the style this
/// project's files use). Falls back to the closest enclosing key it can find.
pub fn locate(src: &str, path: &[Seg]) -> (usize, usize) {
    locate_inner(src, path).0
}

/// Like [`locate`], but only when every step of the path was found.
pub fn locate_exact(src: &str, path: &[Seg]) -> Option<(usize, usize)> {
    let (at, complete) = locate_inner(src, path);
    (complete && !path.is_empty()).then_some(at)
}

fn locate_inner(src: &str, path: &[Seg]) -> ((usize, usize), bool) {
    let (value, _, complete) = locate_both(src, path);
    (value, complete)
}

/// The key's position for a path ending in a key (the value's otherwise).
pub fn locate_key(src: &str, path: &[Seg]) -> (usize, usize) {
    locate_both(src, path).1
}

/// (the value's position, the last key's position, whether every step was found).
fn locate_both(src: &str, path: &[Seg]) -> ((usize, usize), (usize, usize), bool) {
    let lines: Vec<&str> = src.lines().collect();
    let meaningful = |l: &str| {
        let t = l.trim_start();
        !t.is_empty() && !t.starts_with('#') && t != "---"
    };
    let indent = |l: &str| l.len() - l.trim_start().len();
    let (mut lo, mut hi) = (0usize, lines.len());
    let mut at = (1usize, 1usize);
    let mut key_at = at;
    // `inline` holds (line index, column, text) of a value on the same line as its key.
    let mut inline: Option<(usize, usize, String)> = None;
    for seg in path {
        match seg {
            Seg::Key(k) if inline.as_ref().is_some_and(|(_, _, t)| t.starts_with('{')) => {
                // a key inside a flow mapping on one line: `{within: 30s, host: h2}`
                let (i, vcol, text) = inline.take().expect("checked");
                let Some((kcol, value)) = flow_key(&text, k) else { return (at, key_at, false) };
                at = (i + 1, vcol + kcol + 1);
                key_at = at;
                let vstart = text.len() - value.len();
                inline = Some((i, vcol + vstart, value.to_string()));
                at = (i + 1, vcol + vstart + 1);
            }
            Seg::Key(k) => {
                inline = None;
                let mut best: Option<(usize, usize)> = None; // (line, col of key)
                for (i, l) in lines.iter().enumerate().take(hi).skip(lo) {
                    if !meaningful(l) {
                        continue;
                    }
                    let mut col = indent(l);
                    let mut t = l.trim_start();
                    while let Some(rest) = t.strip_prefix("- ") {
                        col += 2 + (rest.len() - rest.trim_start().len());
                        t = rest.trim_start();
                    }
                    if t.strip_prefix(k.as_str()).is_some_and(|r| r.starts_with(':')) && best.is_none_or(|(_, c)| col < c) {
                        best = Some((i, col));
                    }
                }
                let Some((i, col)) = best else { return (at, key_at, false) };
                at = (i + 1, col + 1);
                key_at = at;
                let after = &lines[i][col + k.len() + 1..];
                let value = after.trim_start();
                if !value.is_empty() && !value.starts_with('#') {
                    let vcol = lines[i].len() - after.len() + (after.len() - value.len());
                    inline = Some((i, vcol, value.to_string()));
                }
                lo = i + 1;
                hi = (lo..lines.len()).find(|&j| meaningful(lines[j]) && indent(lines[j]) <= col).unwrap_or(lines.len());
                if let Some((i, vcol, _)) = &inline {
                    at = (i + 1, vcol + 1);
                }
            }
            Seg::Index(n) => {
                if let Some((i, vcol, text)) = inline.take() {
                    // flow sequence on one line: `[a, b, c]`
                    if let Some(body) = text.strip_prefix('[') {
                        let mut offset = vcol + 1;
                        for (j, item) in body.trim_end_matches(']').split(',').enumerate() {
                            if j == *n {
                                let pad = item.len() - item.trim_start().len();
                                return ((i + 1, offset + pad + 1), key_at, true);
                            }
                            offset += item.len() + 1;
                        }
                    }
                    return (at, key_at, false);
                }
                let items: Vec<usize> = (lo..hi).filter(|&j| meaningful(lines[j]) && lines[j].trim_start().starts_with('-')).collect();
                let min = items.iter().map(|&j| indent(lines[j])).min();
                let items: Vec<usize> = items.into_iter().filter(|&j| Some(indent(lines[j])) == min).collect();
                let Some(&j) = items.get(*n) else { return (at, key_at, false) };
                let col = indent(lines[j]);
                at = (j + 1, col + 3);
                key_at = at;
                lo = j;
                hi = items.get(n + 1).copied().unwrap_or(hi);
                let t = lines[j].trim_start()[1..].trim_start();
                if !t.contains(':') {
                    inline = Some((j, col + 2, t.to_string()));
                }
            }
        }
    }
    (at, key_at, true)
}

/// In a one-line flow mapping `{a: 1, b: {c: 2}}`, the column (0-based, in `text`) of key
/// `k` at the outer level and the text from its value on.
fn flow_key<'t>(text: &'t str, k: &str) -> Option<(usize, &'t str)> {
    let b = text.as_bytes();
    let mut depth = 0i32;
    let mut prev = b'{';
    for (i, &ch) in b.iter().enumerate() {
        match ch {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth -= 1,
            _ => {}
        }
        let at_key = depth == 1 && (prev == b'{' || prev == b',') && !ch.is_ascii_whitespace() && ch != b'{';
        if at_key && text[i..].starts_with(k) && text[i + k.len()..].starts_with(':') {
            return Some((i, text[i + k.len() + 1..].trim_start()));
        }
        if !ch.is_ascii_whitespace() {
            prev = ch;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "\
segments:
  - name: lan
    cidr: 10.0.0.0/24
  - name: wan
    cidr: 10.0.1.0/24   # comment
hosts:
  - segment: lan
    names: [a, b, a]
";

    #[test]
    fn locates_keys_items_and_flow_elements() {
        assert_eq!(locate(SRC, &[key("segments")]), (1, 1));
        assert_eq!(locate(SRC, &[key("segments"), Seg::Index(1), key("cidr")]), (5, 11));
        assert_eq!(locate(SRC, &[key("segments"), Seg::Index(0), key("name")]), (2, 11));
        assert_eq!(locate(SRC, &[key("hosts"), Seg::Index(0), key("names"), Seg::Index(2)]), (8, 19));
        assert_eq!(locate(SRC, &[key("nope")]), (1, 1));
    }

    #[test]
    fn path_strings() {
        assert_eq!(path_string(&[key("hosts"), Seg::Index(0), key("names")]), "hosts[0].names");
    }
}
