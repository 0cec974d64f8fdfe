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
    src: &'a str,
    found: Vec<Diagnostic>,
}

impl<'a> Collector<'a> {
    pub fn new(file: &'a Path, src: &'a str) -> Self {
        Collector { file, src, found: Vec::new() }
    }

    pub fn push(&mut self, path: &[Seg], message: impl Into<String>, hint: impl Into<String>) {
        let (line, column) = locate(self.src, path);
        self.found.push(Diagnostic {
            file: self.file.to_path_buf(),
            line,
            column,
            path: path_string(path),
            message: message.into(),
            hint: hint.into(),
        });
    }

    pub fn finish(self) -> Result<(), Diagnostics> {
        if self.found.is_empty() {
            Ok(())
        } else {
            Err(Diagnostics(self.found))
        }
    }
}

/// Reads and deserializes a YAML file into its raw form. Syntax, type and unknown-key
/// errors come back with their location.
pub fn load_yaml<T: DeserializeOwned>(file: &Path) -> Result<(T, String), Diagnostics> {
    let src = std::fs::read_to_string(file).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            "check the path; it is resolved relative to the current directory (or the topologies/ or cases/ folder for names)"
        } else {
            "check the file's permissions"
        };
        Diagnostics(vec![Diagnostic {
            file: file.to_path_buf(),
            line: 1,
            column: 1,
            path: String::new(),
            message: format!("cannot read file: {e}"),
            hint: hint.into(),
        }])
    })?;
    let parsed = parse_yaml(file, &src)?;
    Ok((parsed, src))
}

pub fn parse_yaml<T: DeserializeOwned>(file: &Path, src: &str) -> Result<T, Diagnostics> {
    let de = yaml_serde::Deserializer::from_str(src);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let segs: Vec<Seg> = e
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                serde_path_to_error::Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let inner = e.into_inner();
        // Errors raised while converting a value carry the enclosing mapping's position;
        // the key path points at the value itself, so prefer it when it resolves.
        let (line, column) = locate_exact(src, &segs).or_else(|| inner.location().map(|l| (l.line(), l.column()))).unwrap_or((1, 1));
        let mut message = inner.to_string();
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        if let Some((head, rest)) = message.split_once(": ") {
            if !head.contains(' ') && !head.starts_with("unknown") {
                message = rest.to_string();
            }
        }
        let hint = hint_for(&message);
        Diagnostics(vec![Diagnostic { file: file.to_path_buf(), line, column, path: path_string(&segs), message, hint }])
    })
}

fn hint_for(message: &str) -> String {
    if message.starts_with("unknown field") {
        "remove the key or fix its spelling; the expected keys are listed above".into()
    } else if message.starts_with("missing field") {
        "add the key; see README.md for the file format".into()
    } else if message.starts_with("invalid type") {
        "the value has the wrong type for this key".into()
    } else if message.starts_with("unknown variant") {
        "use one of the listed names".into()
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
    let lines: Vec<&str> = src.lines().collect();
    let meaningful = |l: &str| {
        let t = l.trim_start();
        !t.is_empty() && !t.starts_with('#') && t != "---"
    };
    let indent = |l: &str| l.len() - l.trim_start().len();
    let (mut lo, mut hi) = (0usize, lines.len());
    let mut at = (1usize, 1usize);
    // `inline` holds (line index, column, text) of a value on the same line as its key.
    let mut inline: Option<(usize, usize, String)> = None;
    for seg in path {
        match seg {
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
                let Some((i, col)) = best else { return (at, false) };
                at = (i + 1, col + 1);
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
                                return ((i + 1, offset + pad + 1), true);
                            }
                            offset += item.len() + 1;
                        }
                    }
                    return (at, false);
                }
                let items: Vec<usize> = (lo..hi).filter(|&j| meaningful(lines[j]) && lines[j].trim_start().starts_with('-')).collect();
                let min = items.iter().map(|&j| indent(lines[j])).min();
                let items: Vec<usize> = items.into_iter().filter(|&j| Some(indent(lines[j])) == min).collect();
                let Some(&j) = items.get(*n) else { return (at, false) };
                let col = indent(lines[j]);
                at = (j + 1, col + 3);
                lo = j;
                hi = items.get(n + 1).copied().unwrap_or(hi);
                let t = lines[j].trim_start()[1..].trim_start();
                if !t.contains(':') {
                    inline = Some((j, col + 2, t.to_string()));
                }
            }
        }
    }
    (at, true)
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
