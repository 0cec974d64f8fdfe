//! The operator's own tools, run inside lab namespaces for fault steps only (`iptables`
//! for a host firewall, `nft` for underlay loss): checks read the kernel through netlink.

use crate::error::Error;
use crate::lab::netns::Netns;
use crate::lab::Node;
use crate::lab_err;

/// Runs an operator's tool (`iptables`, `nft`) inside a lab namespace, `stdin` fed to it;
/// its failure carries its stderr. Only fault steps use tools: checks read the kernel
/// through netlink.
pub fn run_tool(ns: &Netns, tool: &'static str, args: Vec<String>, stdin: Option<String>) -> Result<(), String> {
    let shown = format!("{tool} {}", args.join(" "));
    let out = ns
        .run(move || {
            use std::io::Write;
            let mut child = std::process::Command::new(tool)
                .args(&args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()?;
            child.stdin.take().expect("piped").write_all(stdin.unwrap_or_default().as_bytes())?;
            child.wait_with_output()
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("run `{tool}` (ci/setup.sh installs it): {e}"))?;
    if !out.status.success() {
        return Err(format!("`{shown}`: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// Random loss of a host's outgoing underlay frames: an nftables netdev table with an
/// egress chain on eth0 (`numgen random mod 100 < N drop`), or none when `percent` is 0.
pub fn set_loss(node: &Node, percent: u32) -> Result<(), Error> {
    const TABLE: &str = "flannel-lab-impair";
    let dev = crate::lab::UNDERLAY_IF;
    let mut script = format!("table netdev {TABLE}\ndelete table netdev {TABLE}\n");
    let rule = if percent >= 100 { "drop".to_string() } else { format!("numgen random mod 100 < {percent} drop") };
    if percent > 0 {
        script.push_str(&format!(
            "table netdev {TABLE} {{\n  chain egress {{ type filter hook egress device \"{dev}\" priority 0; {rule}; }}\n}}\n"
        ));
    }
    run_tool(&node.ns, "nft", vec!["-f".into(), "-".into()], Some(script)).map_err(|e| lab_err!("{}: {e}", node.name))?;
    Ok(())
}
