//! Backends program the kernel for the local lease and for every peer lease, as flannel's
//! backend package does: set up once for the local subnet, then follow lease events.

pub mod hostgw;
pub mod udp;
pub mod udp_datapath;
pub mod udp_offload;
pub mod vxlan;
pub mod vxlan_plan;

pub use hostgw::{HostGwKernel, HostGwNetwork};
pub use vxlan::{Peer, VxlanDevice, VxlanKernel, VxlanNetwork};

/// The smallest MTU every IPv4 host must accept (RFC 791); an overlay below it is refused.
pub const MIN_MTU: u32 = 576;
