//! Subnet leases in etcd, in flanneld's schema: keys `<prefix>/subnets/10.244.68.0-24`,
//! JSON values, one etcd lease (24 h) per subnet, taken with a put-if-absent transaction.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions, WatchStream};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::NetConf;
use crate::etcd_access::EtcdAccess;
use crate::ipnet::Ipv4Net;
use crate::subnet_choice::{choose_subnet, Choice, OutOfSubnets, Taken};

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

/// The JSON value of a lease, exactly as flanneld writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseAttrs {
    #[serde(rename = "PublicIP")]
    pub public_ip: Ipv4Addr,
    #[serde(rename = "PublicIPv6", default)]
    pub public_ipv6: Option<String>,
    #[serde(rename = "BackendType", default, skip_serializing_if = "Option::is_none")]
    pub backend_type: Option<String>,
    #[serde(rename = "BackendData", default, skip_serializing_if = "Option::is_none")]
    pub backend_data: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub subnet: Ipv4Net,
    pub attrs: LeaseAttrs,
}

/// A change to the set of leases.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseEvent {
    Added(Lease),
    Removed(Ipv4Net),
}

pub fn subnet_key(prefix: &str, subnet: &Ipv4Net) -> String {
    format!("{prefix}/subnets/{}-{}", subnet.addr(), subnet.prefix())
}

/// `<prefix>/subnets/10.244.68.0-24` → `10.244.68.0/24`; anything else → None.
pub fn parse_subnet_key(prefix: &str, key: &[u8]) -> Option<Ipv4Net> {
    let key = std::str::from_utf8(key).ok()?;
    let rest = key.strip_prefix(prefix)?.strip_prefix("/subnets/")?;
    let (addr, len) = rest.split_once('-')?;
    let net = Ipv4Net::new(addr.parse().ok()?, len.parse().ok()?)?;
    (net.addr().to_string() == addr).then_some(net)
}

/// Decodes one key/value under `<prefix>/subnets/`. A malformed entry written by someone
/// else is an error for that entry only: the caller logs and skips it.
pub fn decode(prefix: &str, key: &[u8], value: &[u8]) -> Result<Lease, String> {
    let subnet = parse_subnet_key(prefix, key).ok_or_else(|| format!("key `{}` is not a subnet key", String::from_utf8_lossy(key)))?;
    let attrs: LeaseAttrs =
        serde_json::from_slice(value).map_err(|e| format!("value of `{}` is not a lease: {e}", String::from_utf8_lossy(key)))?;
    Ok(Lease { subnet, attrs })
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

    /// Takes a subnet, chosen by [`choose_subnet`]: the one already registered for
    /// `attrs.public_ip`, else `previous` if free, else a random free one among the lowest.
    pub async fn acquire(&mut self, conf: &NetConf, attrs: &LeaseAttrs, previous: Option<Ipv4Net>) -> Result<OwnLease, LeaseError> {
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
                let Some(subnet) = parse_subnet_key(&self.prefix, kv.key()) else { continue };
                let public_ip = decode(&self.prefix, kv.key(), kv.value()).ok().map(|l| l.attrs.public_ip);
                taken.push(Taken { subnet, public_ip });
                revisions.insert(subnet, kv.mod_revision());
            }
            let (subnet, guard) = match choose_subnet(conf, attrs.public_ip, &taken, previous, &mut rand::rng())? {
                // a reused subnet is one of `taken`, so its revision is known
                Choice::Reuse(s) => (s, Compare::mod_revision(subnet_key(&self.prefix, &s), CompareOp::Equal, revisions[&s])),
                Choice::Claim(s) => (s, Compare::create_revision(subnet_key(&self.prefix, &s), CompareOp::Equal, 0)),
            };
            let lease_id = self.client.lease_grant(LEASE_TTL.as_secs() as i64, None).await.map_err(etcd("grant lease"))?.id();
            let key = subnet_key(&self.prefix, &subnet);
            let txn = Txn::new().when([guard]).and_then([TxnOp::put(key, value.clone(), Some(PutOptions::new().with_lease(lease_id)))]);
            let ok = self.client.txn(txn).await.map_err(etcd("put lease"))?.succeeded();
            if ok {
                return Ok(OwnLease { lease: Lease { subnet, attrs: attrs.clone() }, etcd_lease_id: lease_id });
            }
            let _ = self.client.lease_revoke(lease_id).await;
            tracing::debug!(%subnet, "subnet was taken concurrently, choosing again");
        }
        Err(LeaseError::Contention(ATTEMPTS))
    }

    /// Rewrites the value of our own lease (same key, same etcd lease), e.g. after the
    /// vxlan device had to be recreated with another MAC.
    pub async fn republish(&mut self, own: &OwnLease, attrs: &LeaseAttrs) -> Result<(), LeaseError> {
        let value = serde_json::to_vec(attrs).expect("lease attributes serialize");
        let key = subnet_key(&self.prefix, &own.lease.subnet);
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

    const P: &str = "/coreos.com/network";

    #[test]
    fn keys_round_trip() {
        let s: Ipv4Net = "10.244.68.0/24".parse().unwrap();
        let k = subnet_key(P, &s);
        assert_eq!(k, "/coreos.com/network/subnets/10.244.68.0-24");
        assert_eq!(parse_subnet_key(P, k.as_bytes()), Some(s));
        assert_eq!(parse_subnet_key(P, b"/coreos.com/network/subnets/10.244.68.1-24"), None);
        assert_eq!(parse_subnet_key(P, b"/coreos.com/network/subnets/junk"), None);
        assert_eq!(parse_subnet_key(P, b"/other/subnets/10.244.68.0-24"), None);
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
}
