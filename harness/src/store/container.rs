//! etcd in a Docker container, started through testcontainers. No registry is reachable,
//! so the image is built here from Debian's etcd binary (a minimal root filesystem:
//! the binary and the libraries `ldd` names), tagged by etcd version and reused. The
//! container runs with no network of its own; the lab moves a veth into its namespace
//! (found through the PID bollard's inspect reports), so agents reach it on the underlay
//! at the topology's etcd address, and a partition can cut it off.

use std::path::{Path, PathBuf};
use std::process::Command;

use bollard::query_parameters::{CreateImageOptionsBuilder, InspectContainerOptions};
use bollard::Docker;
use futures::StreamExt;
use testcontainers::core::{AccessMode, Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use crate::error::Result;
use crate::input::names::RunId;
use crate::lab::docker::RUN_LABEL;
use crate::lab_err;

pub const IMAGE: &str = "flannel-lab/etcd";
/// The installed etcd's version, e.g. `3.4.23`.
pub fn etcd_version(bin: &Path) -> Result<String> {
    let out = Command::new(bin).arg("--version").output().map_err(|e| lab_err!("run {} --version: {e}", bin.display()))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("etcd Version: ").map(|v| v.trim().to_string()))
        .ok_or_else(|| lab_err!("{} --version printed no version", bin.display()))
}

/// Shared libraries a binary loads, from `ldd` (a one-off at image build time).
fn libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(bin).output().map_err(|e| lab_err!("run ldd: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')).map(PathBuf::from))
        .collect())
}

/// A ustar archive of `files` (host path → path in the archive) plus empty directories.
pub fn tar(files: &[(PathBuf, String)], dirs: &[&str]) -> Result<Vec<u8>> {
    fn header(name: &str, size: u64, mode: u32, kind: u8) -> Result<[u8; 512]> {
        let mut h = [0u8; 512];
        if name.len() > 99 {
            return Err(lab_err!("path `{name}` too long for ustar"));
        }
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(format!("{mode:07o}").as_bytes());
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| *b as u32).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        Ok(h)
    }
    let mut out = Vec::new();
    for d in dirs {
        out.extend_from_slice(&header(&format!("{}/", d.trim_matches('/')), 0, 0o1777, b'5')?);
    }
    for (src, dst) in files {
        let data = std::fs::read(src).map_err(|e| lab_err!("read {}: {e}", src.display()))?;
        out.extend_from_slice(&header(dst.trim_start_matches('/'), data.len() as u64, 0o755, b'0')?);
        out.extend_from_slice(&data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    Ok(out)
}

/// Builds `flannel-lab/etcd:<version>` from the host's etcd binary unless it exists.
pub async fn ensure_image(docker: &Docker, bin: &Path) -> Result<String> {
    let version = etcd_version(bin)?;
    let reference = format!("{IMAGE}:{version}");
    if docker.inspect_image(&reference).await.is_ok() {
        return Ok(reference);
    }
    let mut files = vec![(bin.to_path_buf(), "usr/bin/etcd".to_string())];
    for lib in libraries(bin)? {
        files.push((lib.clone(), lib.display().to_string()));
    }
    let archive = tar(&files, &["tmp", "var", "var/lib", "var/lib/etcd"])?;
    let opts = CreateImageOptionsBuilder::new()
        .from_src("-")
        .repo(IMAGE)
        .tag(&version)
        .changes(vec![r#"ENTRYPOINT ["/usr/bin/etcd"]"#.to_string()])
        .build();
    let mut stream = docker.create_image(Some(opts), Some(bollard::body_full(bytes::Bytes::from(archive))), None);
    while let Some(r) = stream.next().await {
        r.map_err(|e| lab_err!("import etcd image {reference}: {e}"))?;
    }
    tracing::info!(image = reference, "built etcd image from the host's etcd binary");
    Ok(reference)
}

/// A running etcd container.
pub struct EtcdContainer {
    pub docker: Docker,
    pub name: String,
    container: Option<ContainerAsync<GenericImage>>,
}

impl EtcdContainer {
    /// Starts a container named `name` (no network) running etcd with `args`; `mount`
    /// (host directory, container directory) is bound read-only when given.
    pub async fn start(
        docker: &Docker,
        image: &str,
        name: &str,
        run: RunId,
        args: Vec<String>,
        mount: Option<(PathBuf, String)>,
    ) -> Result<EtcdContainer> {
        let (repo, tag) = image.split_once(':').unwrap_or((image, "latest"));
        let mut req = GenericImage::new(repo, tag)
            .with_wait_for(WaitFor::Nothing)
            .with_cmd(args)
            .with_network("none")
            .with_container_name(name)
            .with_label(RUN_LABEL, run.to_string());
        if let Some((host, inside)) = mount {
            req = req.with_mount(Mount::bind_mount(host.display().to_string(), inside).with_access_mode(AccessMode::ReadOnly));
        }
        let container = req.start().await.map_err(|e| lab_err!("start container {name}: {e}"))?;
        Ok(EtcdContainer { docker: docker.clone(), name: name.to_string(), container: Some(container) })
    }

    /// The PID of the container's init process (its network namespace is /proc/PID/ns/net).
    pub async fn pid(&self) -> Result<i64> {
        let info = self
            .docker
            .inspect_container(&self.name, None::<InspectContainerOptions>)
            .await
            .map_err(|e| lab_err!("inspect {}: {e}", self.name))?;
        match info.state.and_then(|s| s.pid) {
            Some(p) if p > 0 => Ok(p),
            _ => Err(lab_err!("container {} is not running", self.name)),
        }
    }

    pub async fn stop(&self) -> Result<()> {
        let c = self.container.as_ref().ok_or("container already removed")?;
        c.stop_with_timeout(Some(3)).await.map_err(|e| lab_err!("stop {}: {e}", self.name))
    }

    pub async fn start_again(&self) -> Result<()> {
        let c = self.container.as_ref().ok_or("container already removed")?;
        c.start().await.map_err(|e| lab_err!("start {}: {e}", self.name))
    }

    pub async fn pause(&self) -> Result<()> {
        let c = self.container.as_ref().ok_or("container already removed")?;
        c.pause().await.map_err(|e| lab_err!("pause {}: {e}", self.name))
    }

    pub async fn unpause(&self) -> Result<()> {
        let c = self.container.as_ref().ok_or("container already removed")?;
        c.unpause().await.map_err(|e| lab_err!("unpause {}: {e}", self.name))
    }

    /// What etcd wrote to stdout and stderr so far.
    pub async fn log(&self) -> Result<String> {
        let c = self.container.as_ref().ok_or("container already removed")?;
        let out = c.stdout_to_vec().await.map_err(|e| lab_err!("read the log of {}: {e}", self.name))?;
        let err = c.stderr_to_vec().await.map_err(|e| lab_err!("read the log of {}: {e}", self.name))?;
        Ok(format!("{}{}", String::from_utf8_lossy(&out), String::from_utf8_lossy(&err)))
    }

    /// Removes the container (and its data).
    pub async fn remove(&mut self) -> Result<()> {
        match self.container.take() {
            Some(c) => c.rm().await.map_err(|e| lab_err!("remove {}: {e}", self.name)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_headers_are_ustar_with_valid_checksums() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, b"hello").unwrap();
        let t = tar(&[(f, "usr/bin/x".into())], &["tmp"]).unwrap();
        assert_eq!(t.len() % 512, 0);
        for h in [&t[..512], &t[512..1024]] {
            assert_eq!(&h[257..262], b"ustar");
            let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
            let mut copy = h.to_vec();
            copy[148..156].copy_from_slice(b"        ");
            assert_eq!(stored, copy.iter().map(|b| *b as u32).sum::<u32>());
        }
        assert_eq!(&t[..4], b"tmp/");
        assert_eq!(&t[512..521], b"usr/bin/x");
        assert_eq!(&t[1024..1029], b"hello");
    }
}
