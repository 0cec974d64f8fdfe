//! Running the firewall binaries the agent shells out to (`iptables`, `nft`), as flanneld
//! does: one async call, a script on stdin when given, killed if the agent stops mid-call
//! so a teardown never races it.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("run `{0}`")]
    Spawn(&'static str, #[source] std::io::Error),
    #[error("`{tool} {args}` failed ({status}): {stderr}")]
    Failed { tool: &'static str, args: String, status: std::process::ExitStatus, stderr: String },
}

/// Runs `tool args…` with `stdin`; its stdout when it exits 0.
pub async fn run(tool: &'static str, args: &[&str], stdin: Option<&str>) -> Result<String, ToolError> {
    tracing::trace!(tool, ?args, stdin, "run");
    let mut cmd = Command::new(tool);
    cmd.kill_on_drop(true)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| ToolError::Spawn(tool, e))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).await.map_err(|e| ToolError::Spawn(tool, e))?;
    }
    let out = child.wait_with_output().await.map_err(|e| ToolError::Spawn(tool, e))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(ToolError::Failed { tool, args: args.join(" "), status: out.status, stderr });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
