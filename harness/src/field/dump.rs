//! `flannel-lab dump`: a live lab written in the layout `diagnose` reads, with the real
//! tools an operator would run (`ip`, `bridge`, `etcdctl`, `iptables-save`) inside each
//! host's namespace, so the round trip lab → dump → diagnose exercises the parsers on real
//! output.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::Error;
use crate::lab_err;

/// What to dump: each host (name, namespace, subnet file), and where etcd answers.
#[derive(Debug, Clone)]
pub struct Target {
    pub hosts: Vec<(String, String, PathBuf)>,
    /// A namespace etcd's endpoints are reachable from.
    pub etcd_ns: String,
    pub endpoints: Vec<String>,
    pub prefix: String,
}

/// Runs `argv` inside `ns`; its stdout.
fn run_in(ns: &str, argv: &[&str]) -> Result<String, Error> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(argv)
        .output()
        .map_err(|e| lab_err!("run `ip netns exec {ns} {}`: {e}", argv.join(" ")))?;
    if !out.status.success() {
        return Err(lab_err!("`{}` in {ns} failed: {}", argv.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Writes `DIR/etcd.json` and `DIR/nodes/<host>/…` (plain `ip` output, or its `-j` JSON
/// form with `json`).
pub fn dump(t: &Target, dir: &Path, json: bool) -> Result<(), Error> {
    let write = |path: PathBuf, text: &str| std::fs::write(&path, text).map_err(|e| lab_err!("write {}: {e}", path.display()));
    std::fs::create_dir_all(dir).map_err(|e| lab_err!("create {}: {e}", dir.display()))?;
    let endpoints = format!("--endpoints={}", t.endpoints.join(","));
    let etcd = run_in(&t.etcd_ns, &["etcdctl", &endpoints, "get", "--prefix", &t.prefix, "-w", "json"])?;
    write(dir.join("etcd.json"), &etcd)?;
    for (name, ns, subnet_file) in &t.hosts {
        let d = dir.join("nodes").join(name);
        std::fs::create_dir_all(&d).map_err(|e| lab_err!("create {}: {e}", d.display()))?;
        let j: &[&str] = if json { &["-j"] } else { &[] };
        let cmd = |tool: &str, args: &[&str]| -> Vec<String> {
            let mut v = vec![tool.to_string()];
            v.extend(j.iter().map(|s| s.to_string()));
            v.extend(args.iter().map(|s| s.to_string()));
            v
        };
        for (file, argv) in [
            ("ip-link.txt", cmd("ip", &["-d", "link", "show"])),
            ("ip-route.txt", cmd("ip", &["route"])),
            ("ip6-route.txt", cmd("ip", &["-6", "route"])),
            ("ip-neigh.txt", cmd("ip", &["neigh"])),
            ("bridge-fdb.txt", cmd("bridge", &["fdb", "show"])),
        ] {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            write(d.join(file), &run_in(ns, &argv)?)?;
        }
        if let Ok(rules) = run_in(ns, &["iptables-save"]) {
            write(d.join("iptables-save.txt"), &rules)?;
        }
        if let Ok(env) = std::fs::read_to_string(subnet_file) {
            write(d.join("subnet.env"), &env)?;
        }
    }
    Ok(())
}
