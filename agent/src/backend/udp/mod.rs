//! The udp backend, wire-compatible with flanneld's: TUN `flannel0` carries the whole
//! network; each packet read from it is sent as the bare inner IPv4 packet in one UDP
//! datagram (port 8285) to the peer whose subnet holds the destination. Peers live only in
//! this process ([`PeerTable`]); the kernel holds one route for the network.
//!
//! Unlike flanneld, a received datagram is accepted only when it comes from a current
//! peer's PublicIP and its inner source lies in that peer's subnet.
//!
//! The control side, [`UdpNetwork`], opens the TUN device, gives it its address and the
//! network's route, starts the data path ([`datapath`]) and keeps the peer
//! table current as leases change.

use std::fs::File;
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};

pub mod datapath;
pub mod offload;
pub mod packet;

use crate::ipnet::Ipv4Net;
use crate::lease::types::{Lease, LeaseAttrs, LeaseEvent};
use crate::netlink::{Kernel, NlError};
pub use packet::{Egress, PeerTable, Rejected};

/// flanneld's udp port.
pub const DEFAULT_PORT: u16 = 8285;
/// flanneld's name for the udp backend's TUN device.
pub const DEVICE: &str = "flannel0";
/// The udp backend's part of the net-conf: `Port` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `Port`; 0 or absent = 8285.
    pub port: u16,
}

impl Options {
    /// Reads the options; udp is IPv4 only, so `ipv6` (the net-conf enables IPv6) is an error.
    pub fn parse(section: &crate::config::BackendSection, ipv6: bool) -> Result<Options, crate::config::ConfigError> {
        section.only(&["Port"])?;
        let port = match section.number("Port", 0, 65535)? as u16 {
            0 => DEFAULT_PORT,
            p => p,
        };
        if ipv6 {
            return Err(crate::config::ConfigError::Invalid(
                "the udp backend is IPv4 only: it cannot serve `EnableIPv6` (use vxlan or host-gw)".into(),
            ));
        }
        Ok(Options { port })
    }
}

/// Outer IPv4 (20) + UDP (8).
pub const OVERHEAD: u32 = 28;
/// TUN queues (each with its pair of data-path threads): one per core, at most this many.
const MAX_QUEUES: usize = 4;

/// The MTU left for pods over an underlay of `underlay_mtu`; None when under IPv4's minimum.
pub fn overlay_mtu(underlay_mtu: u32) -> Option<u32> {
    underlay_mtu.checked_sub(OVERHEAD).filter(|m| *m >= crate::backend::peers::MIN_MTU)
}

/// udp leases carry no BackendType at all (as flanneld writes them).
pub fn lease_attrs(public_ip: Ipv4Addr) -> LeaseAttrs {
    LeaseAttrs { public_ip, public_ipv6: None, backend_type: None, backend_data: None, backend_v6_data: None }
}

#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    #[error("open TUN device `{DEVICE}`")]
    OpenTun(#[source] std::io::Error),
    #[error(transparent)]
    ConfigureTun(#[from] NlError),
    #[error("start the udp data path")]
    StartDataPath(#[source] std::io::Error),
}

/// The udp backend's control side: the TUN device and the peer table its data path reads.
pub struct UdpNetwork {
    kernel: Kernel,
    table: Arc<RwLock<PeerTable>>,
    /// Queues not yet handed to the data path (it starts once the subnet is known).
    tun: Option<Vec<File>>,
    port: u16,
    mtu: u32,
    network: Ipv4Net,
}

impl UdpNetwork {
    /// Opens [`DEVICE`] with one queue per core, at most `MAX_QUEUES` (see [`crate::tun::open`]).
    pub fn open(kernel: Kernel, network: Ipv4Net, subnet_len: u8, port: u16, mtu: u32) -> Result<Self, UdpError> {
        let queues = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(MAX_QUEUES);
        let (tun, offload) = crate::tun::open(DEVICE, queues).map_err(UdpError::OpenTun)?;
        tracing::info!(queues, offload, "TUN device `{DEVICE}` open");
        let table = Arc::new(RwLock::new(PeerTable::new(network, subnet_len)));
        Ok(UdpNetwork { kernel, table, tun: Some(tun), port, mtu, network })
    }

    /// Gives the device its MTU, the subnet's address and the route for the whole network
    /// (see [`Kernel::configure_tun`]), then starts the data path the first time.
    pub async fn set_local_subnet(&mut self, subnet: Ipv4Net) -> Result<(), UdpError> {
        self.table.write().expect("peer table lock").set_own(subnet);
        self.kernel.configure_tun(DEVICE, self.mtu, subnet.addr(), self.network).await?;
        // New TUN devices send IPv6 router solicitations; nothing here speaks IPv6.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{DEVICE}/disable_ipv6"), "1");
        if let Some(queues) = self.tun.take() {
            datapath::start(queues, self.port, subnet.addr(), self.table.clone()).map_err(UdpError::StartDataPath)?;
            tracing::info!(port = self.port, device = DEVICE, "udp data path running");
        }
        Ok(())
    }

    pub fn resync(&mut self, leases: &[Lease]) {
        self.table.write().expect("peer table lock").resync(leases);
    }

    pub fn handle(&mut self, ev: &LeaseEvent) {
        if self.table.write().expect("peer table lock").apply(ev) {
            tracing::info!(event = ?ev, "udp peer table updated");
        }
    }

    pub fn peer_count(&self) -> usize {
        self.table.read().expect("peer table lock").len()
    }
}
