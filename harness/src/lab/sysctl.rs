//! Machine-wide kernel limits a large lab outgrows, raised for the lab's lifetime and put
//! back when the last lab of this process is gone.
//!
//! The kernel keeps one neighbour table per address family for all namespaces together:
//! every ARP/NDP entry of every simulated host counts against
//! `net.ipv{4,6}.neigh.default.gc_thresh3` (1024 by default), settable only from the root
//! namespace. N hosts reaching each other over one segment hold about N² dynamic entries
//! (underlay ARP for vxlan and udp, the next hop for host-gw), so past about 30 hosts the table
//! overflows and packets are dropped ("neighbour table overflow").
//!
//! Frames a bridge floods (ARP requests on a segment of a thousand ports) are queued on the
//! CPU's backlog, one copy per port, before the receiving namespaces process them: past
//! `net.core.netdev_max_backlog` (1000) they are dropped, echo requests and replies among
//! them. A 1000-host lab dropped half of all packets so.

use std::path::Path;
use std::sync::Mutex;

use crate::error::Error;
use crate::lab_err;

const THRESHOLDS: [&str; 4] = [
    "/proc/sys/net/ipv4/neigh/default/gc_thresh2",
    "/proc/sys/net/ipv4/neigh/default/gc_thresh3",
    "/proc/sys/net/ipv6/neigh/default/gc_thresh2",
    "/proc/sys/net/ipv6/neigh/default/gc_thresh3",
];

/// The values found before this process first raised them.
static ORIGINAL: Mutex<Vec<(&'static str, u64)>> = Mutex::new(Vec::new());

fn read(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Dynamic neighbour entries a lab of `nodes` namespaces on the underlay may hold at once:
/// each reaching every other, plus its pods and the lab's probes, twice over (entries
/// linger in FAILED and STALE states; at exactly N² a 250-host host-gw lab still
/// overflowed).
pub fn neighbours_needed(nodes: u64) -> u64 {
    2 * nodes * (nodes + 8)
}

const BACKLOG: &str = "/proc/sys/net/core/netdev_max_backlog";

/// The backlog a lab of `nodes` namespaces on one segment needs: a flooded frame is queued
/// once per port, several floods at a time.
pub fn backlog_needed(nodes: u64) -> u64 {
    16 * nodes
}

/// Makes room for a lab of `nodes` namespaces: the neighbour-table thresholds and the
/// backlog, each raised when below what the lab needs; says what it raised. Never lowers
/// one (another lab, or the machine's owner, may rely on it).
pub fn ensure_room(nodes: u64) -> Result<Option<String>, Error> {
    let entries = neighbours_needed(nodes);
    let wanted = THRESHOLDS.iter().map(|p| (*p, entries)).chain([(BACKLOG, backlog_needed(nodes))]);
    let mut original = ORIGINAL.lock().expect("sysctl registry");
    let mut raised = Vec::new();
    for (path, need) in wanted {
        if !Path::new(path).exists() {
            continue;
        }
        let Some(now) = read(path) else { continue };
        if now >= need {
            continue;
        }
        std::fs::write(path, need.to_string()).map_err(|e| lab_err!("raise {path} from {now} to {need}: {e}"))?;
        if !original.iter().any(|(p, _)| *p == path) {
            original.push((path, now));
        }
        raised.push(format!("{} {now} → {need}", path.trim_start_matches("/proc/sys/").replace('/', ".")));
    }
    Ok((!raised.is_empty()).then(|| format!("raised the kernel's shared limits for this lab: {}", raised.join(", "))))
}

/// A lab holds descriptors per namespace (the namespace, a netlink socket, agents' log
/// files): at a thousand hosts more than the usual soft limit of 1024. Lifts this
/// process's soft open-file limit to its hard limit (a per-process limit, gone with it).
pub fn raise_open_files() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// Puts back every threshold this process raised (call when its last lab is gone).
pub fn restore() {
    let Ok(mut original) = ORIGINAL.lock() else { return };
    for (path, value) in original.drain(..) {
        if let Err(e) = std::fs::write(path, value.to_string()) {
            tracing::warn!("could not put {path} back to {value}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_grows_with_the_square_of_the_hosts() {
        assert!(neighbours_needed(18) < 1024, "small labs leave the machine's defaults alone");
        assert!(neighbours_needed(1001) > 1_000_000);
        assert!(backlog_needed(20) < 1000, "nor the backlog");
        assert!(backlog_needed(1001) >= 16_000);
    }
}
