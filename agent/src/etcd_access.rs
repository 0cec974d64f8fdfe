//! How the agent reaches etcd: TLS (`--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`)
//! and user/password (`--etcd-username`, `--etcd-password`), turned into etcd-client's
//! [`ConnectOptions`]. PEM files are read and checked once at start, so a wrong path or a
//! file that holds no certificate stops the agent there, naming the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

use crate::config::Flags;

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("read {what} `{path}`")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} `{path}` is not usable: {why}")]
    Pem { what: &'static str, path: PathBuf, why: String },
    #[error("etcd endpoints mix https:// and http:// ({0}); TLS files apply to all of them")]
    MixedSchemes(String),
}

/// What a PEM file must contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemKind {
    /// One or more `CERTIFICATE` blocks.
    Certificates,
    /// One private key: `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` or `EC PRIVATE KEY`.
    PrivateKey,
}

const KEY_LABELS: &[&str] = &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"];

/// Checks that `text` holds well-formed PEM blocks of `kind`: matching BEGIN/END labels,
/// base64 bodies that decode to a DER SEQUENCE. Returns the number of blocks of that kind.
pub fn check_pem(text: &str, kind: PemKind) -> Result<usize, String> {
    let mut found = 0;
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) else { continue };
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        let mut closed = false;
        for l in lines.by_ref() {
            if l == end {
                closed = true;
                break;
            }
            if l.starts_with("-----") {
                return Err(format!("block `{label}` ends with `{l}`"));
            }
            if !l.contains(':') {
                body.push_str(l); // skip RFC 1421 headers such as Proc-Type
            }
        }
        if !closed {
            return Err(format!("block `{label}` has no `{end}` line"));
        }
        let der = base64_decode(&body).ok_or_else(|| format!("block `{label}` is not valid base64"))?;
        if der.first() != Some(&0x30) {
            return Err(format!("block `{label}` does not hold DER data"));
        }
        let wanted = match kind {
            PemKind::Certificates => label == "CERTIFICATE",
            PemKind::PrivateKey => KEY_LABELS.contains(&label),
        };
        if wanted {
            found += 1;
        } else if label == "ENCRYPTED PRIVATE KEY" {
            return Err("the private key is encrypted (etcd keys must be unencrypted, as for flanneld)".into());
        }
    }
    match (kind, found) {
        (PemKind::Certificates, 0) => Err("no `-----BEGIN CERTIFICATE-----` block".into()),
        (PemKind::PrivateKey, 0) => Err("no unencrypted private key block (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)".into()),
        (PemKind::PrivateKey, n) if n > 1 => Err(format!("{n} private keys; expected one")),
        (_, n) => Ok(n),
    }
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= val(*c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

fn read_pem(what: &'static str, path: &Path, kind: PemKind) -> Result<String, AccessError> {
    let text = std::fs::read_to_string(path).map_err(|source| AccessError::Read { what, path: path.into(), source })?;
    check_pem(&text, kind).map_err(|why| AccessError::Pem { what, path: path.into(), why })?;
    Ok(text)
}

/// Whether TLS applies: flanneld's etcd client speaks TLS to https:// endpoints and plain
/// HTTP to http:// ones whatever the TLS flags say; etcd-client refuses TLS options with an
/// http:// URL, so a mixed list is refused here. Endpoints without a scheme follow the flags.
pub fn use_tls(endpoints: &[String], tls_flags: bool) -> Result<bool, AccessError> {
    let https = endpoints.iter().filter(|e| e.starts_with("https://")).count();
    let http = endpoints.iter().filter(|e| e.starts_with("http://")).count();
    match (https, http) {
        (0, 0) => Ok(tls_flags),
        (_, 0) => Ok(true),
        (0, _) => Ok(false),
        _ if !tls_flags => Ok(false),
        _ => Err(AccessError::MixedSchemes(endpoints.join(","))),
    }
}

/// Connect options plus whether they speak TLS (for [`failure_hint`]).
#[derive(Debug, Clone)]
pub struct EtcdAccess {
    pub options: ConnectOptions,
    tls: bool,
}

impl EtcdAccess {
    pub fn tls(&self) -> bool {
        self.tls
    }
}

/// The connect options for `flags`: timeouts, keep-alive, TLS and user when given.
pub fn connect_options(flags: &Flags) -> Result<EtcdAccess, AccessError> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(15))
        // a ping every 5 s finds a dead connection (a stopped member); its answer may take a
        // while when the machine is loaded (a thousand agents on two cores took over 3 s)
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(10));
    let tls_flags = flags.etcd_cafile.is_some() || flags.etcd_certfile.is_some();
    // Read the files even when they end up unused, so a wrong path never goes unnoticed.
    let ca = flags.etcd_cafile.as_deref().map(|p| read_pem("etcd CA file", p, PemKind::Certificates)).transpose()?;
    let pair = match (&flags.etcd_certfile, &flags.etcd_keyfile) {
        (Some(c), Some(k)) => {
            Some((read_pem("etcd certificate file", c, PemKind::Certificates)?, read_pem("etcd key file", k, PemKind::PrivateKey)?))
        }
        _ => None,
    };
    let tls = use_tls(&flags.etcd_endpoints, tls_flags)?;
    if tls {
        let mut tls = TlsOptions::new();
        if let Some(ca) = ca {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = pair {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        opts = opts.with_tls(tls);
    } else if tls_flags {
        tracing::warn!(endpoints = ?flags.etcd_endpoints, "TLS files given but every etcd endpoint is http://: connecting without TLS");
    }
    if let Some(user) = &flags.etcd_username {
        opts = opts.with_user(user.clone(), flags.etcd_password.clone().unwrap_or_default());
    }
    Ok(EtcdAccess { options: opts, tls })
}

/// A hint for a failed etcd request. A server that refuses the client certificate (none
/// sent, or one from another CA) does so after the client considers the TLS handshake done
/// (TLS 1.3), so the client only sees the connection close; say what that usually means.
pub fn failure_hint(error_chain: &str, tls: bool) -> Option<&'static str> {
    let closed = ["connection closed", "broken pipe", "Canceled", "operation was canceled"].iter().any(|s| error_chain.contains(s));
    if !tls || !closed {
        return None;
    }
    Some("etcd closed the TLS connection right after the handshake: it probably refused this agent's client certificate (missing --etcd-certfile/--etcd-keyfile, or a certificate from a CA etcd does not trust)")
}

#[cfg(test)]
mod tests {
    use super::*;

    // A syntactically valid DER SEQUENCE; check_pem does not parse certificates.
    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMAMCAQE=\n-----END PRIVATE KEY-----\n";

    #[test]
    fn pem_blocks_are_checked() {
        assert_eq!(check_pem(CERT, PemKind::Certificates), Ok(1));
        assert_eq!(check_pem(&format!("{CERT}{CERT}"), PemKind::Certificates), Ok(2));
        assert_eq!(check_pem(KEY, PemKind::PrivateKey), Ok(1));
        assert_eq!(check_pem(&KEY.replace("PRIVATE KEY", "EC PRIVATE KEY"), PemKind::PrivateKey), Ok(1));
        assert!(check_pem(KEY, PemKind::Certificates).unwrap_err().contains("no `-----BEGIN CERTIFICATE"));
        assert!(check_pem(CERT, PemKind::PrivateKey).is_err());
        assert!(check_pem("hello", PemKind::Certificates).is_err());
        assert!(check_pem("-----BEGIN CERTIFICATE-----\nMAMCAQE=\n", PemKind::Certificates).unwrap_err().contains("no `-----END"));
        assert!(check_pem("-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n", PemKind::Certificates)
            .unwrap_err()
            .contains("base64"));
        assert!(check_pem("-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n", PemKind::Certificates)
            .unwrap_err()
            .contains("DER"));
        let enc = KEY.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY");
        assert!(check_pem(&enc, PemKind::PrivateKey).unwrap_err().contains("encrypted"));
    }

    #[test]
    fn base64_round_numbers() {
        assert_eq!(base64_decode("aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(base64_decode("aGVsbA=="), Some(b"hell".to_vec()));
        assert_eq!(base64_decode("aGVs"), Some(b"hel".to_vec()));
        assert_eq!(base64_decode("a"), None);
    }

    #[test]
    fn tls_follows_the_endpoint_scheme() {
        let e = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
        assert!(use_tls(&e("https://10.0.0.1:2379"), false).unwrap());
        assert!(!use_tls(&e("http://10.0.0.1:2379"), true).unwrap());
        assert!(use_tls(&e("10.0.0.1:2379"), true).unwrap());
        assert!(!use_tls(&e("10.0.0.1:2379"), false).unwrap());
        assert!(use_tls(&e("https://a:2379,http://b:2379"), true).is_err());
    }

    #[test]
    fn missing_and_bad_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a pem").unwrap();
        let flags = Flags {
            etcd_endpoints: vec!["https://127.0.0.1:2379".into()],
            etcd_cafile: Some(dir.path().join("nope.pem")),
            ..Flags::default()
        };
        let err = connect_options(&flags).unwrap_err();
        assert!(err.to_string().contains("nope.pem"), "{err}");
        let flags = Flags { etcd_cafile: Some(junk.clone()), ..flags };
        let err = connect_options(&flags).unwrap_err();
        assert!(err.to_string().contains("junk.pem") && err.to_string().contains("etcd CA file"), "{err}");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, CERT).unwrap();
        let flags = Flags { etcd_cafile: Some(ca), etcd_certfile: Some(junk.clone()), etcd_keyfile: Some(junk), ..flags };
        assert!(connect_options(&flags).unwrap_err().to_string().contains("etcd certificate file"));
    }

    #[test]
    fn hints_at_a_refused_client_certificate() {
        let closed = "etcd request `get config` failed: grpc request error: operation was canceled, source: hyper::Error(Canceled, \"connection closed\")";
        assert!(failure_hint(closed, true).unwrap().contains("client certificate"));
        assert_eq!(failure_hint(closed, false), None);
        assert_eq!(failure_hint("invalid peer certificate: UnknownIssuer", true), None);
    }

    #[test]
    fn chain_joins_causes() {
        let inner = std::io::Error::other("certificate unknown");
        let outer = AccessError::Read { what: "x", path: "/p".into(), source: inner };
        assert_eq!(crate::error::chain(&outer), "read x `/p`: certificate unknown");
    }
}
