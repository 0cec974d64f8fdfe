//! What every backend shares about peers: which subnet a lease event is about, the
//! smallest MTU, and how peer changes are logged.

use crate::lease::types::{Family, LeaseEvent};

/// The subnet of family `N` a lease event is about; None when the lease has nothing of
/// this family, or is this host's own (`own`).
pub fn event_subnet<N: Family>(ev: &LeaseEvent, own: Option<N>) -> Option<N> {
    let subnet = match ev {
        LeaseEvent::Added(l) => N::subnet_of(&l.subnets),
        LeaseEvent::Removed(s) => N::subnet_of(s),
    };
    subnet.filter(|s| Some(*s) != own)
}

/// The smallest MTU every IPv4 host must accept (RFC 791); an overlay below it is refused.
pub const MIN_MTU: u32 = 576;

/// Up to this many peers each peer change is logged at info; beyond, at debug, and the
/// daemon logs one line per watch response (a thousand hosts would write a million lines).
pub const LOG_EACH_PEER_UP_TO: usize = 64;

/// Logs a per-peer change at info while there are few peers, else at debug.
macro_rules! peer_log {
    ($peers:expr, $($arg:tt)+) => {
        if $peers <= $crate::backend::peers::LOG_EACH_PEER_UP_TO {
            tracing::info!($($arg)+)
        } else {
            tracing::debug!($($arg)+)
        }
    };
}
pub(crate) use peer_log;
