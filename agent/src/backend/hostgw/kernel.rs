//! The kernel side of host-gw: gateway routes (the trait, so the control logic is tested
//! against a fake) and their implementation over netlink.

use crate::ipnet::{IpNet, Ipv4Net};
use crate::netlink::*;

/// Gateway routes of one family (`N`: [`Ipv4Net`] or [`crate::ipnet::Ipv6Net`]).
#[allow(async_fn_in_trait)]
pub trait HostGwKernel<N: IpNet = Ipv4Net> {
    type Error: std::error::Error + Send + Sync + 'static;
    /// Whether the error means "this gateway is not on a directly connected network".
    fn is_unreachable_gateway(e: &Self::Error) -> bool;
    async fn add_route(&mut self, oif: u32, dst: N, gw: N::Addr) -> Result<(), Self::Error>;
    async fn del_route(&mut self, oif: u32, dst: N, gw: N::Addr) -> Result<(), Self::Error>;
    /// Routes through `oif` whose destination lies inside `network`.
    async fn routes_within(&mut self, oif: u32, network: N) -> Result<Vec<(N, N::Addr)>, Self::Error>;
}

impl<N: IpNet> HostGwKernel<N> for Kernel {
    type Error = NlError;

    fn is_unreachable_gateway(e: &NlError) -> bool {
        // "Network is unreachable", or "Nexthop has invalid gateway" on newer kernels; an
        // IPv6 gateway off every connected prefix is "No route to host"
        matches!(e.errno(), Some(libc::ENETUNREACH) | Some(libc::EINVAL) | Some(libc::EHOSTUNREACH))
    }

    /// `ip route replace DST via GW dev OIF`
    async fn add_route(&mut self, oif: u32, dst: N, gw: N::Addr) -> Result<(), NlError> {
        let msg = route_msg::<N>(oif, dst, gw, false, Op::Add);
        self.handle.route().add(msg).replace().execute().await.map_err(ctx(format!("add route to {dst} via {gw}")))
    }

    /// `ip route del DST via GW dev OIF`
    async fn del_route(&mut self, oif: u32, dst: N, gw: N::Addr) -> Result<(), NlError> {
        let msg = route_msg::<N>(oif, dst, gw, false, Op::Delete);
        gone_ok(self.handle.route().del(msg).execute().await.map_err(ctx(format!("delete route to {dst} via {gw}"))))
    }

    async fn routes_within(&mut self, oif: u32, network: N) -> Result<Vec<(N, N::Addr)>, NlError> {
        let out = self
            .main_routes::<N>()
            .await?
            .into_iter()
            .filter(|r| r.oif == Some(oif) && network.contains_net(&r.dst))
            .filter_map(|r| r.gateway.map(|g| (r.dst, g)))
            .collect();
        Ok(out)
    }
}
