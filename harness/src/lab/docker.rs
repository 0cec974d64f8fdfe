//! The Docker engine as the lab sees it: whether one answers, and removing every container
//! a run started (each carries the run id in a label), like its namespaces.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;

use crate::error::Result;
use crate::input::names::RunId;
use crate::lab_err;

/// Every container the lab starts carries this label, with the run id as value.
pub const RUN_LABEL: &str = "flannel-lab.run";

/// Connects to the local Docker engine and checks that it answers.
pub async fn engine() -> Result<Docker> {
    let docker = Docker::connect_with_local_defaults().map_err(|e| lab_err!("no Docker engine: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(3), docker.ping()).await {
        Ok(Ok(_)) => Ok(docker),
        Ok(Err(e)) => Err(lab_err!("Docker engine does not answer: {e}")),
        Err(_) => Err("Docker engine does not answer within 3 s".into()),
    }
}

/// Removes every container labelled with `run` (or, with `None`, of any run `is_live` says
/// has ended).
/// Used by `gc` and by teardown after a signal. Blocking: runs its own small runtime.
pub fn remove_run_containers(run: Option<RunId>, is_live: fn(RunId) -> bool) -> Result<Vec<String>> {
    if !Path::new("/var/run/docker.sock").exists() && std::env::var_os("DOCKER_HOST").is_none() {
        return Ok(Vec::new());
    }
    // on a thread of its own: callers may be inside a tokio runtime
    std::thread::spawn(move || remove_blocking(run, is_live)).join().map_err(|_| "container cleanup panicked".to_string())?
}

fn remove_blocking(run: Option<RunId>, is_live: fn(RunId) -> bool) -> Result<Vec<String>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let Ok(docker) = engine().await else { return Ok(Vec::new()) };
        let label = match run {
            Some(id) => format!("{RUN_LABEL}={id}"),
            None => RUN_LABEL.to_string(),
        };
        let filters: HashMap<&str, Vec<String>> = HashMap::from([("label", vec![label])]);
        let list = docker
            .list_containers(Some(ListContainersOptionsBuilder::new().all(true).filters(&filters).build()))
            .await
            .map_err(|e| lab_err!("list containers: {e}"))?;
        let mut removed = Vec::new();
        for c in list {
            let Some(id) = c.id else { continue };
            let live = c.labels.as_ref().and_then(|l| l.get(RUN_LABEL)).and_then(|v| v.parse::<RunId>().ok()).is_some_and(is_live);
            if run.is_none() && live {
                continue;
            }
            docker
                .remove_container(&id, Some(RemoveContainerOptionsBuilder::new().force(true).v(true).build()))
                .await
                .map_err(|e| lab_err!("remove container {id}: {e}"))?;
            removed.push(c.names.and_then(|n| n.first().cloned()).unwrap_or(id));
        }
        Ok(removed)
    })
}
