//! Subnet leases in etcd, in flanneld's schema: JSON values, one etcd lease (24 h) per
//! key, taken with a put-if-absent transaction. A key names the lease's subnets:
//!
//! | network | key under `<prefix>/subnets/` |
//! |---|---|
//! | IPv4 only | `10.244.1.0-24` |
//! | dual-stack | `10.244.1.0-24&fd00:10:244:1::-64` |
//! | IPv6 only | `0.0.0.0-0&fd00:10:244:1::-64` |
//!
//! The IPv6 address is in its canonical compressed form (as flanneld and Rust print it).

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions, WatchStream};

use crate::config::NetConf;
use crate::etcd_access::EtcdAccess;
use crate::subnet_choice::{choose_subnets, Choice, OutOfSubnets, Previous, Taken};

pub mod types;
pub use types::*;

/// flanneld's lease lifetime; not configurable upstream.
pub const LEASE_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("etcd request `{op}` failed")]
    Etcd {
        op: &'static str,
        #[source]
        source: etcd_client::Error,
    },
    #[error(transparent)]
    OutOfSubnets(#[from] OutOfSubnets),
    #[error("could not take a subnet after {0} attempts: other agents kept taking the chosen ones")]
    Contention(u32),
}

fn etcd(op: &'static str) -> impl FnOnce(etcd_client::Error) -> LeaseError {
    move |source| LeaseError::Etcd { op, source }
}

/// The agent's own registration.
#[derive(Debug, Clone)]
pub struct OwnLease {
    pub lease: Lease,
    pub etcd_lease_id: i64,
}

pub struct Registry {
    client: Client,
    prefix: String,
    tls: bool,
    /// Every endpoint given, and the ones the client uses now (those that answered).
    endpoints: Vec<String>,
    using: Vec<String>,
    access: EtcdAccess,
}

impl Registry {
    /// Connects with options from [`crate::etcd_access::connect_options`].
    /// Connects to the endpoints that answer a status request within a second (all of
    /// them when none does): the client balances requests over its endpoints and keeps a
    /// dead one, so a stopped cluster member would fail every third request.
    pub async fn connect(endpoints: &[String], prefix: &str, access: &EtcdAccess) -> Result<Self, LeaseError> {
        let using = answering(endpoints, access).await;
        let client = Client::connect(&using, Some(access.options.clone())).await.map_err(etcd("connect"))?;
        Ok(Registry { client, prefix: prefix.to_string(), tls: access.tls(), endpoints: endpoints.to_vec(), using, access: access.clone() })
    }

    /// After a failed request: when several endpoints were given and the set that answers
    /// changed (a member stopped or came back), connect again to the ones that answer.
    pub async fn refresh(&mut self) {
        if self.endpoints.len() < 2 {
            return;
        }
        let now = answering(&self.endpoints, &self.access).await;
        if now != self.using {
            if let Ok(client) = Client::connect(&now, Some(self.access.options.clone())).await {
                tracing::info!(endpoints = ?now, "etcd endpoints that answer changed: reconnected");
                self.client = client;
                self.using = now;
            }
        }
    }

    /// Whether the connection to etcd uses TLS.
    pub fn tls(&self) -> bool {
        self.tls
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Reads `<prefix>/config`; None while it does not exist.
    pub async fn config(&mut self) -> Result<Option<String>, LeaseError> {
        let key = format!("{}/config", self.prefix);
        let resp = self.client.get(key, None).await.map_err(etcd("get config"))?;
        Ok(resp.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    /// Every lease plus the revision the list was taken at. Malformed entries are returned
    /// separately so the caller can log them.
    pub async fn snapshot(&mut self) -> Result<(Vec<Lease>, Vec<String>, i64), LeaseError> {
        let resp = self
            .client
            .get(format!("{}/subnets/", self.prefix), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(etcd("list leases"))?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        for kv in resp.kvs() {
            match decode(&self.prefix, kv.key(), kv.value()) {
                Ok(l) => good.push(l),
                Err(e) => bad.push(e),
            }
        }
        Ok((good, bad, rev))
    }

    /// Watches every lease change after `revision`.
    pub async fn watch(&mut self, after_revision: i64) -> Result<WatchStream, LeaseError> {
        let opts = WatchOptions::new().with_prefix().with_start_revision(after_revision + 1);
        self.client.watch(format!("{}/subnets/", self.prefix), Some(opts)).await.map_err(etcd("watch leases"))
    }

    /// Takes subnets, chosen by [`choose_subnets`]: the ones already registered for
    /// this host's public addresses, else `previous` if free, else random free ones among
    /// the lowest. A lease of this host with other families than now enabled is replaced
    /// (old key deleted, new key put) in one transaction.
    pub async fn acquire(&mut self, conf: &NetConf, attrs: &LeaseAttrs, previous: Previous) -> Result<OwnLease, LeaseError> {
        const ATTEMPTS: u32 = 10;
        let value = serde_json::to_vec(attrs).expect("lease attributes serialize");
        for _ in 0..ATTEMPTS {
            let resp = self
                .client
                .get(format!("{}/subnets/", self.prefix), Some(GetOptions::new().with_prefix()))
                .await
                .map_err(etcd("list leases"))?;
            let mut taken = Vec::new();
            let mut revisions = BTreeMap::new();
            for kv in resp.kvs() {
                let Some(subnets) = parse_subnet_key(&self.prefix, kv.key()) else { continue };
                let (public_ip, public_ipv6) = match decode(&self.prefix, kv.key(), kv.value()) {
                    Ok(l) => (Some(l.attrs.public_ip), l.attrs.public_ipv6),
                    Err(_) => (None, None),
                };
                taken.push(Taken { subnets, public_ip, public_ipv6 });
                revisions.insert(subnets, kv.mod_revision());
            }
            let choice = choose_subnets(conf, attrs.public_ip, attrs.public_ipv6, &taken, previous, &mut rand::rng())?;
            let key = |s: &Subnets| subnet_key(&self.prefix, s);
            // a reused or replaced lease is one of `taken`, so its revision is known
            let (subnets, guards, delete) = match choice {
                Choice::Reuse(s) => (s, vec![Compare::mod_revision(key(&s), CompareOp::Equal, revisions[&s])], None),
                Choice::Claim(s) => (s, vec![Compare::create_revision(key(&s), CompareOp::Equal, 0)], None),
                Choice::Replace { old, new } => (
                    new,
                    vec![
                        Compare::mod_revision(key(&old), CompareOp::Equal, revisions[&old]),
                        Compare::create_revision(key(&new), CompareOp::Equal, 0),
                    ],
                    Some(old),
                ),
            };
            let lease_id = self.client.lease_grant(LEASE_TTL.as_secs() as i64, None).await.map_err(etcd("grant lease"))?.id();
            let mut ops = Vec::new();
            if let Some(old) = delete {
                tracing::info!(old = %old, new = %subnets, "replacing this host's lease, whose families differ from the network config's");
                ops.push(TxnOp::delete(key(&old), None));
            }
            ops.push(TxnOp::put(key(&subnets), value.clone(), Some(PutOptions::new().with_lease(lease_id))));
            let txn = Txn::new().when(guards).and_then(ops);
            let ok = self.client.txn(txn).await.map_err(etcd("put lease"))?.succeeded();
            if ok {
                return Ok(OwnLease { lease: Lease { subnets, attrs: attrs.clone() }, etcd_lease_id: lease_id });
            }
            let _ = self.client.lease_revoke(lease_id).await;
            tracing::debug!(%subnets, "subnet was taken concurrently, choosing again");
        }
        Err(LeaseError::Contention(ATTEMPTS))
    }

    /// Rewrites the value of our own lease (same key, same etcd lease), e.g. after the
    /// vxlan device had to be recreated with another MAC.
    pub async fn republish(&mut self, own: &OwnLease, attrs: &LeaseAttrs) -> Result<(), LeaseError> {
        let value = serde_json::to_vec(attrs).expect("lease attributes serialize");
        let key = subnet_key(&self.prefix, &own.lease.subnets);
        self.client.put(key, value, Some(PutOptions::new().with_lease(own.etcd_lease_id))).await.map_err(etcd("update lease"))?;
        Ok(())
    }

    /// Extends the etcd lease to a full TTL again. Returns false when etcd no longer
    /// knows the lease (it expired or was revoked).
    pub async fn renew(&mut self, lease_id: i64) -> Result<bool, LeaseError> {
        let (mut keeper, mut stream) = self.client.lease_keep_alive(lease_id).await.map_err(etcd("renew lease"))?;
        keeper.keep_alive().await.map_err(etcd("renew lease"))?;
        let resp = stream.message().await.map_err(etcd("renew lease"))?;
        Ok(resp.is_some_and(|r| r.ttl() > 0))
    }
}

/// Turns one watch event into a lease event. `Err` carries a log line for a malformed entry.
pub fn event_from_watch(prefix: &str, ev: &etcd_client::Event) -> Option<Result<LeaseEvent, String>> {
    let kv = ev.kv()?;
    match ev.event_type() {
        EventType::Put => Some(decode(prefix, kv.key(), kv.value()).map(LeaseEvent::Added)),
        EventType::Delete => Some(
            parse_subnet_key(prefix, kv.key())
                .map(LeaseEvent::Removed)
                .ok_or_else(|| format!("deleted key `{}` is not a subnet key", String::from_utf8_lossy(kv.key()))),
        ),
    }
}

/// The endpoints (of several) that answer a status request within a second, in the order
/// given; every endpoint when there is one, or when none answers.
async fn answering(endpoints: &[String], access: &EtcdAccess) -> Vec<String> {
    if endpoints.len() < 2 {
        return endpoints.to_vec();
    }
    let probes = endpoints.iter().map(|ep| async move {
        let opts = access.options.clone().with_connect_timeout(Duration::from_secs(1)).with_timeout(Duration::from_secs(1));
        let ok = match Client::connect([ep.as_str()], Some(opts)).await {
            Ok(mut c) => tokio::time::timeout(Duration::from_secs(1), c.status()).await.is_ok_and(|r| r.is_ok()),
            Err(_) => false,
        };
        ok.then(|| ep.clone())
    });
    let up: Vec<String> = futures::future::join_all(probes).await.into_iter().flatten().collect();
    if up.is_empty() {
        endpoints.to_vec()
    } else {
        up
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipnet::{Ipv4Net, Ipv6Net};
    use std::net::Ipv4Addr;

    const P: &str = "/coreos.com/network";

    #[test]
    fn keys_round_trip() {
        let s: Ipv4Net = "10.244.68.0/24".parse().unwrap();
        let k = subnet_key(P, &Subnets::v4(s));
        assert_eq!(k, "/coreos.com/network/subnets/10.244.68.0-24");
        assert_eq!(parse_subnet_key(P, k.as_bytes()), Some(Subnets::v4(s)));
        assert_eq!(parse_subnet_key(P, b"/coreos.com/network/subnets/10.244.68.1-24"), None);
        assert_eq!(parse_subnet_key(P, b"/coreos.com/network/subnets/junk"), None);
        assert_eq!(parse_subnet_key(P, b"/other/subnets/10.244.68.0-24"), None);
    }

    fn v6(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    #[test]
    fn dual_stack_and_ipv6_only_keys_round_trip() {
        let dual = Subnets { v4: Some("10.244.1.0/24".parse().unwrap()), v6: Some(v6("fd00:10:244:1::/64")) };
        let k = subnet_key(P, &dual);
        assert_eq!(k, "/coreos.com/network/subnets/10.244.1.0-24&fd00:10:244:1::-64");
        assert_eq!(parse_subnet_key(P, k.as_bytes()), Some(dual));
        let only6 = Subnets { v4: None, v6: Some(v6("fd00:10:244:1::/64")) };
        let k = subnet_key(P, &only6);
        assert_eq!(k, "/coreos.com/network/subnets/0.0.0.0-0&fd00:10:244:1::-64");
        assert_eq!(parse_subnet_key(P, k.as_bytes()), Some(only6));
        // the compressed form is the one written, also for addresses with zeros in the middle
        let mid = Subnets { v4: None, v6: Some(v6("fd00:0:0:1::/64")) };
        assert_eq!(subnet_key(P, &mid), "/coreos.com/network/subnets/0.0.0.0-0&fd00:0:0:1::-64");
        assert_eq!(
            subnet_key(P, &Subnets { v4: None, v6: Some(v6("2001:db8::/48")) }),
            "/coreos.com/network/subnets/0.0.0.0-0&2001:db8::-48"
        );
    }

    #[test]
    fn malformed_ipv6_parts_are_not_keys() {
        for junk in [
            "0.0.0.0-0",                              // no subnet at all
            "10.244.1.0-24&",                         // empty IPv6 part
            "10.244.1.0-24&fd00:10:244:1::",          // no length
            "10.244.1.0-24&fd00:10:244:1::-",         // empty length
            "10.244.1.0-24&fd00:10:244:1::1-64",      // host bits
            "10.244.1.0-24&fd00:10:244:1::-129",      // too long
            "10.244.1.0-24&FD00:10:244:1::-64",       // not the canonical form
            "10.244.1.0-24&fd00:10:244:1:0:0:0:0-64", // not compressed
            "10.244.1.0-24&fd00:10:244:1::-+64",      // sign
            "10.244.1.0-24&::ffff:10.0.0.0-120",      // dotted
            "10.244.1.0-24&fd00:10:244:1::-64&x",     // trailing junk
            "10.244.1.0-24&10.244.2.0-24",            // IPv4 twice
            "10.244.1.1-24&fd00:10:244:1::-64",       // IPv4 host bits
        ] {
            let key = format!("{P}/subnets/{junk}");
            assert_eq!(parse_subnet_key(P, key.as_bytes()), None, "{junk}");
            let err = decode(P, key.as_bytes(), br#"{"PublicIP":"192.168.1.2","PublicIPv6":"fd00:1::2"}"#).unwrap_err();
            assert!(err.contains("is not a subnet key"), "{err}");
        }
    }

    #[test]
    fn value_matches_flanneld() {
        let v =
            r#"{"PublicIP":"192.168.99.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"2e:74:64:fe:4b:db"}}"#;
        let l = decode(P, b"/coreos.com/network/subnets/10.244.68.0-24", v.as_bytes()).unwrap();
        assert_eq!(l.attrs.public_ip, "192.168.99.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!(l.attrs.backend_type.as_deref(), Some("vxlan"));
        assert_eq!(serde_json::to_string(&l.attrs).unwrap(), v);
        // udp leases carry no BackendType at all
        let udp = decode(P, b"/coreos.com/network/subnets/10.244.3.0-24", br#"{"PublicIP":"192.168.99.3"}"#).unwrap();
        assert_eq!(udp.attrs.backend_type, None);
        assert!(decode(P, b"/coreos.com/network/subnets/10.244.3.0-24", b"{junk").is_err());
    }

    #[test]
    fn dual_stack_and_ipv6_only_values_match_flanneld() {
        let v = r#"{"PublicIP":"192.168.1.2","PublicIPv6":"fd00:1::2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"2e:74:64:fe:4b:db"},"BackendV6Data":{"VNI":1,"VtepMAC":"2e:74:64:fe:4b:dc"}}"#;
        let l = decode(P, b"/coreos.com/network/subnets/10.244.1.0-24&fd00:10:244:1::-64", v.as_bytes()).unwrap();
        assert_eq!(l.attrs.public_ipv6, Some("fd00:1::2".parse().unwrap()));
        assert_eq!(serde_json::to_string(&l.attrs).unwrap(), v);
        let p6 = Ipv6Net::part(&l).unwrap();
        assert_eq!((p6.subnet, p6.public_ip), (v6("fd00:10:244:1::/64"), Some("fd00:1::2".parse().unwrap())));
        assert_eq!(p6.backend_data.unwrap()["VtepMAC"], "2e:74:64:fe:4b:dc");
        let p4 = Ipv4Net::part(&l).unwrap();
        assert_eq!(p4.backend_data.unwrap()["VtepMAC"], "2e:74:64:fe:4b:db");
        let only6 = r#"{"PublicIP":"0.0.0.0","PublicIPv6":"fd00:1::2","BackendType":"host-gw"}"#;
        let l = decode(P, b"/coreos.com/network/subnets/0.0.0.0-0&fd00:10:244:1::-64", only6.as_bytes()).unwrap();
        assert_eq!(Ipv4Net::part(&l), None, "no IPv4 half");
        assert_eq!(serde_json::to_string(&l.attrs).unwrap(), only6);
        // an IPv4-only lease has no IPv6 half, whatever its value says
        let l = decode(P, b"/coreos.com/network/subnets/10.244.1.0-24", v.as_bytes()).unwrap();
        assert_eq!(Ipv6Net::part(&l), None);
    }

    #[test]
    fn malformed_ipv6_values_are_errors() {
        let key = b"/coreos.com/network/subnets/10.244.1.0-24&fd00:10:244:1::-64";
        let err = decode(P, key, br#"{"PublicIP":"192.168.1.2","PublicIPv6":"not-an-address"}"#).unwrap_err();
        assert!(err.contains("is not a lease"), "{err}");
        let err = decode(P, key, br#"{"PublicIP":"192.168.1.2","PublicIPv6":null}"#).unwrap_err();
        assert!(err.contains("no `PublicIPv6`"), "{err}");
    }
}
