//! Probes: what the lab sends and reads to judge an implementation from outside. ICMP and
//! DF echoes, crafted udp datagrams and a listener ([`icmp`]), kernel state dumps
//! ([`dump`]), background traffic, underlay capture ([`capture`]) and what it shows
//! ([`frames`]), throughput.

pub mod capture;
mod dump;
mod echo;
pub mod frames;
mod icmp;
mod icmp6;
pub mod throughput;
pub mod traffic;

pub use dump::{dump_host, HostState, NeighbourQuery, StateFamily};
pub use echo::{ping_any, ping_with_retries, sweep_any};
pub use icmp::{echo_packet, inner_addresses, ping, saw_echo_request, send_udp, sweep, udp_sources, PingOutcome, UdpListener};
pub use icmp6::{ping6, sweep6};
