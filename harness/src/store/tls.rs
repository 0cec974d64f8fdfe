//! Certificates for an etcd that speaks TLS and asks clients for certificates: one CA per
//! run, a server certificate for etcd's addresses, a client certificate the agents and the
//! harness use, and a client certificate from a second CA etcd does not trust (what an
//! agent configured with the wrong CA presents). Generated fresh for every trial, written
//! under the trial's directory; nothing is checked in.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::error::Result;
use crate::lab_err;

/// Which client credentials an agent is started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Credentials {
    /// The run's CA, a client certificate it signed.
    #[default]
    Valid,
    /// The run's CA but no client certificate or key.
    None,
    /// A client certificate signed by a CA etcd does not trust.
    ForeignCa,
}

impl Credentials {
    pub fn name(&self) -> &'static str {
        match self {
            Credentials::Valid => "valid",
            Credentials::None => "none",
            Credentials::ForeignCa => "foreign_ca",
        }
    }
}

/// The files of a run's PKI (PEM).
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub foreign_cert: PathBuf,
    pub foreign_key: PathBuf,
}

/// The three placeholder values an agent gets: CA file, certificate file, key file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFiles {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

fn ca(name: &str) -> Result<(CertificateParams, KeyPair)> {
    let key = KeyPair::generate().map_err(|e| lab_err!("generate a key for {name}: {e}"))?;
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| lab_err!("certificate parameters for {name}: {e}"))?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok((p, key))
}

fn leaf(name: &str, sans: Vec<String>, usage: &[ExtendedKeyUsagePurpose], issuer: &Issuer<'_, KeyPair>) -> Result<(String, String)> {
    let key = KeyPair::generate().map_err(|e| lab_err!("generate a key for {name}: {e}"))?;
    let mut p = CertificateParams::new(sans).map_err(|e| lab_err!("certificate parameters for {name}: {e}"))?;
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    p.extended_key_usages = usage.to_vec();
    let cert = p.signed_by(&key, issuer).map_err(|e| lab_err!("sign the certificate for {name}: {e}"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| lab_err!("write {}: {e}", path.display()))
}

impl Pki {
    /// Generates the run's PKI under `dir` (created), the server certificate valid for
    /// `server_ips` and 127.0.0.1.
    pub fn generate(dir: &Path, server_ips: &[Ipv4Addr]) -> Result<Pki> {
        std::fs::create_dir_all(dir).map_err(|e| lab_err!("create {}: {e}", dir.display()))?;
        let (ca_params, ca_key) = ca("flannel-lab etcd CA")?;
        let ca_pem = ca_params.self_signed(&ca_key).map_err(|e| lab_err!("self-sign the lab CA: {e}"))?.pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let mut sans: Vec<String> = server_ips.iter().map(|ip| ip.to_string()).collect();
        sans.push("127.0.0.1".into());
        sans.push("localhost".into());
        // etcd's gateway connects to its own client port with the server certificate
        let both = [ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let (server_cert, server_key) = leaf("etcd", sans, &both, &issuer)?;
        let (client_cert, client_key) = leaf("flannel", Vec::new(), &[ExtendedKeyUsagePurpose::ClientAuth], &issuer)?;
        let (other_params, other_key) = ca("an unrelated CA")?;
        let other = Issuer::new(other_params, other_key);
        let (foreign_cert, foreign_key) = leaf("flannel", Vec::new(), &[ExtendedKeyUsagePurpose::ClientAuth], &other)?;
        let pki = Pki {
            dir: dir.to_path_buf(),
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
            foreign_cert: dir.join("foreign-client.pem"),
            foreign_key: dir.join("foreign-client-key.pem"),
        };
        for (path, text) in [
            (&pki.ca, &ca_pem),
            (&pki.server_cert, &server_cert),
            (&pki.server_key, &server_key),
            (&pki.client_cert, &client_cert),
            (&pki.client_key, &client_key),
            (&pki.foreign_cert, &foreign_cert),
            (&pki.foreign_key, &foreign_key),
        ] {
            write(path, text)?;
        }
        Ok(pki)
    }

    /// The files an agent with `creds` is given (an empty value: the flag is left empty).
    pub fn client_files(&self, creds: Credentials) -> ClientFiles {
        let s = |p: &PathBuf| p.display().to_string();
        match creds {
            Credentials::Valid => ClientFiles { ca: s(&self.ca), cert: s(&self.client_cert), key: s(&self.client_key) },
            Credentials::None => ClientFiles { ca: s(&self.ca), cert: String::new(), key: String::new() },
            Credentials::ForeignCa => ClientFiles { ca: s(&self.ca), cert: s(&self.foreign_cert), key: s(&self.foreign_key) },
        }
    }

    /// etcd's server flags, with the files as `base` (a directory inside a container, or
    /// the PKI's own directory) sees them.
    pub fn server_flags(&self, base: &Path) -> Vec<String> {
        let at = |p: &PathBuf| base.join(p.file_name().expect("a file")).display().to_string();
        vec![
            "--cert-file".into(),
            at(&self.server_cert),
            "--key-file".into(),
            at(&self.server_key),
            "--trusted-ca-file".into(),
            at(&self.ca),
            "--client-cert-auth".into(),
        ]
    }

    /// TLS options for the harness's own client.
    pub fn client_tls(&self) -> Result<etcd_client::TlsOptions> {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| lab_err!("read {}: {e}", p.display()));
        Ok(etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(&self.ca)?))
            .identity(etcd_client::Identity::from_pem(read(&self.client_cert)?, read(&self.client_key)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pki_files_are_pem_and_distinct_per_run() {
        let d = tempfile::tempdir().unwrap();
        let a = Pki::generate(&d.path().join("a"), &["192.168.99.254".parse().unwrap()]).unwrap();
        let b = Pki::generate(&d.path().join("b"), &[]).unwrap();
        for p in [&a.ca, &a.server_cert, &a.client_cert, &a.foreign_cert] {
            assert!(std::fs::read_to_string(p).unwrap().starts_with("-----BEGIN CERTIFICATE-----"), "{}", p.display());
        }
        assert!(std::fs::read_to_string(&a.client_key).unwrap().contains("PRIVATE KEY"));
        assert_ne!(std::fs::read(&a.ca).unwrap(), std::fs::read(&b.ca).unwrap(), "a CA per run");
        let none = a.client_files(Credentials::None);
        assert!(none.cert.is_empty() && none.key.is_empty() && !none.ca.is_empty());
        assert_eq!(a.client_files(Credentials::ForeignCa).cert, a.foreign_cert.display().to_string());
        let flags = a.server_flags(Path::new("/pki"));
        assert!(flags.contains(&"/pki/server.pem".to_string()) && flags.contains(&"--client-cert-auth".to_string()));
    }
}
