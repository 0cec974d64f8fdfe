//! Launching the implementation under test: one agent process per host, inside the host's
//! namespace, with flanneld's flags, its own subnet file and log.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::lab::Node;
use crate::proc::{Child, ProcError};

/// How to run an implementation on a host.
#[derive(Debug, Clone)]
pub enum Implementation {
    /// The bundled reference agent binary.
    Reference { bin: PathBuf },
}

impl Implementation {
    pub fn name(&self) -> &str {
        match self {
            Implementation::Reference { .. } => "reference",
        }
    }

    /// Finds the reference agent next to the running executable (`target/<profile>/`), or at
    /// `FLANNEL_LAB_AGENT`.
    pub fn reference() -> Result<Implementation, String> {
        if let Some(p) = std::env::var_os("FLANNEL_LAB_AGENT") {
            let bin = PathBuf::from(p);
            return if bin.is_file() {
                Ok(Implementation::Reference { bin })
            } else {
                Err(format!("FLANNEL_LAB_AGENT={} does not exist", bin.display()))
            };
        }
        let exe = std::env::current_exe().map_err(|e| format!("locate own executable: {e}"))?;
        let mut dir = exe.parent().map(Path::to_path_buf);
        // test binaries live in target/<profile>/deps
        while let Some(d) = dir {
            let cand = d.join("flannel-agent");
            if cand.is_file() {
                return Ok(Implementation::Reference { bin: cand });
            }
            if d.file_name().is_some_and(|n| n == "target") {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
        Err("flannel-agent binary not found next to this executable: run `cargo build -p flannel-agent` or set FLANNEL_LAB_AGENT".into())
    }

    fn command(&self, ctx: &LaunchContext) -> Command {
        match self {
            Implementation::Reference { bin } => {
                let mut c = Command::new(bin);
                c.arg(format!("--etcd-endpoints={}", ctx.endpoints))
                    .arg(format!("--etcd-prefix={}", ctx.prefix))
                    .arg(format!("--iface={}", ctx.iface))
                    .arg(format!("--public-ip={}", ctx.public_ip))
                    .arg(format!("--subnet-file={}", ctx.subnet_file.display()))
                    .arg("--ip-masq=false")
                    .env("FLANNEL_AGENT_LOG", "info");
                c
            }
        }
    }
}

/// What a launch needs to know about the host and the store.
pub struct LaunchContext {
    pub endpoints: String,
    pub prefix: String,
    pub iface: String,
    pub public_ip: std::net::Ipv4Addr,
    pub subnet_file: PathBuf,
}

/// One host's agent.
pub struct Agent {
    pub host: String,
    pub subnet_file: PathBuf,
    pub child: Child,
}

impl Agent {
    pub fn subnet_file_path(node: &Node) -> PathBuf {
        node.dir.join("subnet.env")
    }

    pub fn start(imp: &Implementation, node: &Node, endpoints: &str, prefix: &str) -> Result<Agent, ProcError> {
        let ctx = LaunchContext {
            endpoints: endpoints.to_string(),
            prefix: prefix.to_string(),
            iface: "eth0".into(),
            public_ip: node.addr,
            subnet_file: Self::subnet_file_path(node),
        };
        let child = Child::spawn(&format!("agent@{}", node.name), &node.ns, imp.command(&ctx), &node.dir.join("agent.log"))?;
        Ok(Agent { host: node.name.clone(), subnet_file: ctx.subnet_file, child })
    }

    pub fn stop(&mut self) {
        self.child.stop(Duration::from_secs(3));
    }
}
