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
    #[error("`{0}` is not an executable file in any directory of PATH")]
    NotFound(&'static str),
}

/// Where `tool` is on PATH, without running it (a thousand agents starting together would
/// otherwise each run `--version` probes).
pub fn locate(tool: &'static str) -> Result<std::path::PathBuf, ToolError> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .ok_or(ToolError::NotFound(tool))
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
