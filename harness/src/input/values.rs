//! Values written the house way in every input file, a leaf that cases and profiles both
//! use: durations (`30s`), sizes (`64MiB`), and enums written as a single-key mapping.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A number followed by a unit (`250ms`, `64MiB`): the number and the unit.
fn number_and_unit(s: &str) -> Option<(u64, &str)> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    Some((n.parse().ok()?, unit))
}

/// Reads a string through `parse`, or says what it should look like.
fn deserialize_with<'de, D: Deserializer<'de>, T>(d: D, parse: fn(&str) -> Option<T>, like: &str) -> Result<T, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not {like}")))
}

/// A duration written as `250ms`, `30s` or `2m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_with(d, parse_duration, "a duration like 500ms, 30s, 2m or 24h").map(Dur)
    }
}

pub fn parse_duration(s: &str) -> Option<Duration> {
    let (n, unit) = number_and_unit(s)?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n * 60)),
        "h" => Some(Duration::from_secs(n * 3600)),
        _ => None,
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A size written as `512KiB`, `64MiB` or `2GiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_with(d, parse_size, "a size like 512KiB, 64MiB or 2GiB").map(Size)
    }
}

pub fn parse_size(s: &str) -> Option<u64> {
    let (n, unit) = number_and_unit(s)?;
    let shift = match unit {
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift).filter(|b| *b > 0)
}

/// Reads an enum written as a single-key mapping (`- wait_converged: {within: 30s}`):
/// the style of the case files, without YAML tags.
macro_rules! single_key_enum {
    ($ty:ident, $what:literal, { $($name:literal => $variant:ident($arg:ty)),* $(,)? }) => {
        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> ::serde::de::Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        write!(f, "a mapping with one key naming the {}", $what)
                    }
                    fn visit_map<A: ::serde::de::MapAccess<'de>>(self, mut map: A) -> Result<$ty, A::Error> {
                        const NAMES: &[&str] = &[$($name),*];
                        let Some(k) = map.next_key::<String>()? else {
                            return Err(::serde::de::Error::custom(format!("empty mapping: name the {}", $what)));
                        };
                        let v = match k.as_str() {
                            $($name => $ty::$variant(map.next_value::<$arg>()?),)*
                            other => return Err(::serde::de::Error::unknown_variant(other, NAMES)),
                        };
                        if let Some(extra) = map.next_key::<String>()? {
                            return Err(::serde::de::Error::custom(format!("one {} per list item; `{extra}` needs its own `- ` item", $what)));
                        }
                        Ok(v)
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}

pub(crate) use single_key_enum;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("64MB"), None, "units are binary and explicit");
        assert_eq!(parse_size("0MiB"), None);
        assert_eq!(parse_size("MiB"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_duration("2d"), None);
        assert_eq!(parse_duration("s"), None);
    }
}
