//! Backends program the kernel for the local lease and for every peer lease, as flannel's
//! backend package does: set up once for the local subnet, then follow lease events.

pub mod hostgw;
pub mod names;
pub mod network;
pub mod peers;
pub mod udp;
pub mod vxlan;

pub use hostgw::{HostGwKernel, HostGwNetwork};
pub use vxlan::{Peer, VxlanDevice, VxlanKernel, VxlanNetwork};

pub use peers::{LOG_EACH_PEER_UP_TO, MIN_MTU};
