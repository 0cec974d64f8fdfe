//! Command-line flags (spelled as flanneld spells them) and the network configuration
//! read from `<prefix>/config`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use serde_json::Value;

use crate::ipnet::{IpNet, Ipv4Net, Ipv6Net};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown flag `{0}` (see --help)")]
    UnknownFlag(String),
    #[error("flag `--{0}` needs a value")]
    MissingValue(String),
    #[error("flag `--{flag}`: `{value}` is not {expected}")]
    BadValue { flag: String, value: String, expected: &'static str },
    #[error("unexpected argument `{0}`: flags take the form --name=value")]
    Positional(String),
    #[error("flag `--{0}`: {1}")]
    Conflict(String, &'static str),
    #[error("environment variable `{var}`")]
    Env {
        var: String,
        #[source]
        source: Box<ConfigError>,
    },
    #[error("network config is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("network config: {0}")]
    Invalid(String),
}

/// The flags of a running agent. Defaults are flanneld's.
#[derive(Debug, Clone, PartialEq)]
pub struct Flags {
    pub etcd_endpoints: Vec<String>,
    pub etcd_prefix: String,
    /// `--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`; an empty value is "not given".
    pub etcd_cafile: Option<PathBuf>,
    pub etcd_certfile: Option<PathBuf>,
    pub etcd_keyfile: Option<PathBuf>,
    pub etcd_username: Option<String>,
    pub etcd_password: Option<String>,
    pub ifaces: Vec<String>,
    pub public_ip: Option<Ipv4Addr>,
    /// `--public-ipv6`: used only when the network config enables IPv6.
    pub public_ipv6: Option<Ipv6Addr>,
    /// `--disable-ipv6` (lab control): ignore the network config's IPv6 settings, as an
    /// implementation from before dual-stack would.
    pub disable_ipv6: bool,
    pub subnet_file: PathBuf,
    pub renew_margin_minutes: u64,
    pub ip_masq: bool,
    pub iptables_forward_rules: bool,
    /// `--iptables-resync`: seconds between checks of the agent's iptables rules.
    pub iptables_resync_secs: u64,
    /// `--vxlan-source-filter`; None = not given (on, but a missing `nft` only warns).
    pub vxlan_source_filter: Option<bool>,
    pub healthz_ip: Ipv4Addr,
    pub healthz_port: u16,
}

impl Default for Flags {
    fn default() -> Self {
        Flags {
            etcd_endpoints: vec!["http://127.0.0.1:4001".into(), "http://127.0.0.1:2379".into()],
            etcd_prefix: "/coreos.com/network".into(),
            etcd_cafile: None,
            etcd_certfile: None,
            etcd_keyfile: None,
            etcd_username: None,
            etcd_password: None,
            ifaces: Vec::new(),
            public_ip: None,
            public_ipv6: None,
            disable_ipv6: false,
            subnet_file: PathBuf::from("/run/flannel/subnet.env"),
            renew_margin_minutes: 60,
            ip_masq: false,
            iptables_forward_rules: true,
            iptables_resync_secs: 5,
            vxlan_source_filter: None,
            healthz_ip: Ipv4Addr::UNSPECIFIED,
            healthz_port: 0,
        }
    }
}

pub const USAGE: &str = "\
usage: flannel-agent [flags]

flags (flanneld's names; -name and --name, =value or a separate value):
  --etcd-endpoints=URLS            comma-separated etcd client URLs (default http://127.0.0.1:4001,http://127.0.0.1:2379)
  --etcd-prefix=PATH               etcd prefix (default /coreos.com/network)
  --etcd-cafile=PEM                CA certificate(s) to verify etcd's server certificate (https:// endpoints)
  --etcd-certfile=PEM              client certificate for etcd (with --etcd-keyfile)
  --etcd-keyfile=PEM               private key of --etcd-certfile
  --etcd-username=NAME             etcd user (with --etcd-password)
  --etcd-password=SECRET           password of --etcd-username
  --iface=NAME|IP                  interface to use for inter-host traffic (repeatable; default: default-route interface)
  --public-ip=IP                   IP address other hosts reach this one at (default: the interface's address)
  --public-ipv6=IP                 IPv6 address other hosts reach this one at, when the network config enables
                                   IPv6 (default: the interface's first global-scope IPv6 address)
  --subnet-file=PATH               where to write the subnet environment (default /run/flannel/subnet.env)
  --subnet-lease-renew-margin=MIN  renew the lease this many minutes before it expires (default 60)
  --ip-masq=BOOL                   masquerade traffic leaving the network (nat chain FLANNEL-POSTRTG; IPv4 only;
                                   default false)
  --iptables-forward-rules=BOOL    accept forwarded traffic of the network (filter chain FLANNEL-FWD, with ip6tables
                                   too for an IPv6 network; default true)
  --iptables-resync=SECONDS        re-check the iptables rules this often (default 5)
  --vxlan-source-filter=BOOL       vxlan: accept VXLAN datagrams only from current peers
                                   (nftables tables `ip flannel-agent-vxlan`, `ip6 …` with IPv6; default true)
  --healthz-ip=IP --healthz-port=N serve GET /healthz on this address (port 0: off, the default)
  --disable-ipv6=BOOL              lab control: behave like an implementation from before dual-stack: ignore
                                   EnableIPv6/IPv6Network in the net-conf, publish IPv4 leases only (default false)
  --help, --version

An empty value means \"not given\". Every flag can also be set in the environment as
FLANNELD_<NAME> (FLANNELD_ETCD_CAFILE, FLANNELD_IP_MASQ, ...); the command line wins.
iptables rules and the vxlan source filter are removed when the agent exits on SIGTERM/SIGINT.
";

pub enum Command {
    Run(Box<Flags>),
    Help,
    Version,
}

/// Flags that take no separate value (`--ip-masq` alone means true).
const BOOL_FLAGS: &[&str] = &["ip-masq", "iptables-forward-rules", "vxlan-source-filter", "disable-ipv6"];
/// Every flag that can also come from the environment.
const VALUE_FLAGS: &[&str] = &[
    "etcd-endpoints",
    "etcd-prefix",
    "etcd-cafile",
    "etcd-certfile",
    "etcd-keyfile",
    "etcd-username",
    "etcd-password",
    "iface",
    "public-ip",
    "public-ipv6",
    "subnet-file",
    "subnet-lease-renew-margin",
    "iptables-resync",
    "healthz-ip",
    "healthz-port",
];

/// `etcd-cafile` → `FLANNELD_ETCD_CAFILE`, as flanneld names its environment variables.
pub fn env_name(flag: &str) -> String {
    format!("FLANNELD_{}", flag.to_ascii_uppercase().replace('-', "_"))
}

/// Parses the process's arguments, with `FLANNELD_*` environment variables as fallback.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, ConfigError> {
    parse_args_env(args, |k| std::env::var(k).ok())
}

/// Parses arguments the way Go's `flag` package does: `-x=v`, `--x=v`, `-x v`; booleans
/// take no separate value (`--ip-masq` means true). A flag not on the command line is
/// taken from `env(FLANNELD_<NAME>)` when that is set and not empty.
pub fn parse_args_env<I, E>(args: I, env: E) -> Result<Command, ConfigError>
where
    I: IntoIterator<Item = String>,
    E: Fn(&str) -> Option<String>,
{
    let mut given: Vec<(String, Option<String>)> = Vec::new();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            return Err(ConfigError::Positional(arg));
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (body.to_string(), None),
        };
        match name.as_str() {
            "help" | "h" => return Ok(Command::Help),
            "version" => return Ok(Command::Version),
            n if BOOL_FLAGS.contains(&n) => given.push((name, inline)),
            n if VALUE_FLAGS.contains(&n) => {
                let value = match inline {
                    Some(v) => v,
                    None => it.next().ok_or_else(|| ConfigError::MissingValue(name.clone()))?,
                };
                given.push((name, Some(value)));
            }
            _ => return Err(ConfigError::UnknownFlag(arg)),
        }
    }
    let mut flags = Flags::default();
    let mut ifaces_given = false;
    for name in BOOL_FLAGS.iter().chain(VALUE_FLAGS) {
        if given.iter().any(|(n, _)| n == name) {
            continue;
        }
        let var = env_name(name);
        if let Some(value) = env(&var).filter(|v| !v.is_empty()) {
            apply(&mut flags, &mut ifaces_given, name, Some(value)).map_err(|e| ConfigError::Env { var, source: Box::new(e) })?;
        }
    }
    for (name, value) in given {
        apply(&mut flags, &mut ifaces_given, &name, value)?;
    }
    match (&flags.etcd_certfile, &flags.etcd_keyfile) {
        (Some(_), None) => return Err(ConfigError::Conflict("etcd-certfile".into(), "needs --etcd-keyfile too")),
        (None, Some(_)) => return Err(ConfigError::Conflict("etcd-keyfile".into(), "needs --etcd-certfile too")),
        _ => {}
    }
    if flags.etcd_password.is_some() && flags.etcd_username.is_none() {
        return Err(ConfigError::Conflict("etcd-password".into(), "needs --etcd-username too"));
    }
    Ok(Command::Run(Box::new(flags)))
}

fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

/// Sets one flag. `value` is None only for a boolean given without `=`.
fn apply(flags: &mut Flags, ifaces_given: &mut bool, name: &str, value: Option<String>) -> Result<(), ConfigError> {
    if BOOL_FLAGS.contains(&name) {
        let v = match value.as_deref() {
            None => true,
            Some(s) => parse_bool(name, s)?,
        };
        match name {
            "ip-masq" => flags.ip_masq = v,
            "iptables-forward-rules" => flags.iptables_forward_rules = v,
            "disable-ipv6" => flags.disable_ipv6 = v,
            _ => flags.vxlan_source_filter = Some(v),
        }
        return Ok(());
    }
    let value = value.unwrap_or_default();
    let bad = |expected| ConfigError::BadValue { flag: name.to_string(), value: value.clone(), expected };
    match name {
        "etcd-endpoints" => {
            flags.etcd_endpoints = value.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect();
            if flags.etcd_endpoints.is_empty() {
                return Err(bad("a comma-separated list of URLs"));
            }
        }
        "etcd-prefix" => flags.etcd_prefix = value.trim_end_matches('/').to_string(),
        "etcd-cafile" => flags.etcd_cafile = non_empty(value).map(PathBuf::from),
        "etcd-certfile" => flags.etcd_certfile = non_empty(value).map(PathBuf::from),
        "etcd-keyfile" => flags.etcd_keyfile = non_empty(value).map(PathBuf::from),
        "etcd-username" => flags.etcd_username = non_empty(value),
        "etcd-password" => flags.etcd_password = non_empty(value),
        "iface" => {
            if !*ifaces_given {
                flags.ifaces.clear();
                *ifaces_given = true;
            }
            flags.ifaces.push(value);
        }
        "public-ip" => flags.public_ip = Some(value.parse().map_err(|_| bad("an IPv4 address"))?),
        "public-ipv6" => {
            flags.public_ipv6 = match value.as_str() {
                "" => None,
                v => Some(v.parse().map_err(|_| bad("an IPv6 address"))?),
            }
        }
        "subnet-file" => flags.subnet_file = PathBuf::from(value),
        "subnet-lease-renew-margin" => {
            flags.renew_margin_minutes = value.parse().map_err(|_| bad("a number of minutes"))?;
            if flags.renew_margin_minutes >= 24 * 60 {
                return Err(bad("less than the 24 h lease (1440 minutes)"));
            }
        }
        "iptables-resync" => {
            flags.iptables_resync_secs = value.parse().ok().filter(|s| *s > 0).ok_or_else(|| bad("a positive number of seconds"))?
        }
        "healthz-ip" => flags.healthz_ip = value.parse().map_err(|_| bad("an IPv4 address"))?,
        "healthz-port" => flags.healthz_port = value.parse().map_err(|_| bad("a port number"))?,
        _ => unreachable!("flag `{name}` is listed but not handled"),
    }
    Ok(())
}

fn parse_bool(flag: &str, s: &str) -> Result<bool, ConfigError> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(ConfigError::BadValue { flag: flag.into(), value: s.into(), expected: "a boolean" }),
    }
}

/// `Backend` of the network config: its type and its options, uninterpreted. Each backend
/// reads its own options (`backend::BackendConf::from_conf`), as flanneld's backends
/// unmarshal their own part of the config; this module knows no backend's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSection {
    /// `Type`, lower-cased; `udp` when not given, as flanneld's code falls back.
    pub type_name: String,
    options: serde_json::Map<String, Value>,
}

impl BackendSection {
    fn parse(v: Option<&Value>) -> Result<BackendSection, ConfigError> {
        let invalid = |m: String| ConfigError::Invalid(m);
        let options = match v {
            None => serde_json::Map::new(),
            Some(Value::Object(o)) => o.clone(),
            Some(other) => return Err(invalid(format!("`Backend` must be an object, found {other}"))),
        };
        let type_name = match field(&options, "Type") {
            None => "udp".to_string(),
            Some(Value::String(s)) => s.to_ascii_lowercase(),
            Some(other) => return Err(invalid(format!("`Backend.Type` must be a string, found {other}"))),
        };
        Ok(BackendSection { type_name, options })
    }

    /// Rejects a key that is not in `known` (`Type` is always known), in any case.
    pub fn only(&self, known: &[&str]) -> Result<(), ConfigError> {
        for k in self.options.keys() {
            if !k.eq_ignore_ascii_case("Type") && !known.iter().any(|n| n.eq_ignore_ascii_case(k)) {
                return Err(ConfigError::Invalid(format!("`Backend.{k}` is not an option of the {} backend", self.type_name)));
            }
        }
        Ok(())
    }

    /// The option `name` (any case), None when absent or null.
    pub fn get(&self, name: &str) -> Option<&Value> {
        field(&self.options, name)
    }

    /// A whole number 0..=`max`, `default` when absent.
    pub fn number(&self, name: &str, default: u64, max: u64) -> Result<u64, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .filter(|n| *n <= max)
                .ok_or_else(|| ConfigError::Invalid(format!("`Backend.{name}` must be 0..{max}, found {v}"))),
        }
    }

    /// true or false, false when absent.
    pub fn flag(&self, name: &str) -> Result<bool, ConfigError> {
        match self.get(name) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(ConfigError::Invalid(format!("`Backend.{name}` must be true or false, found {other}"))),
        }
    }
}

/// One family's address pool from `<prefix>/config`: the network and the subnets leases
/// are taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool<N: IpNet> {
    pub network: N,
    pub subnet_len: u8,
    pub subnet_min: N,
    pub subnet_max: N,
}

impl<N: IpNet> Pool<N> {
    /// Every subnet leases may be taken from, in order.
    pub fn subnets(&self) -> impl Iterator<Item = N> + '_ {
        std::iter::successors(Some(self.subnet_min), move |s| s.next().filter(|n| *n <= self.subnet_max))
    }

    /// A /`SubnetLen` inside the network: what an existing lease of this host may keep.
    pub fn fits(&self, s: &N) -> bool {
        self.network.contains_net(s) && s.prefix() == self.subnet_len
    }

    /// A /`SubnetLen` between `SubnetMin` and `SubnetMax`: what may be claimed.
    pub fn in_range(&self, s: &N) -> bool {
        s.prefix() == self.subnet_len && *s >= self.subnet_min && *s <= self.subnet_max
    }
}

/// The keys naming one family's pool, and its defaults.
struct PoolKeys {
    network: &'static str,
    len: &'static str,
    min: &'static str,
    max: &'static str,
    /// The subnet length when the network leaves room for it (two bits at least).
    default_len: u8,
    /// The longest subnet a host can use (network address, gateway, pods).
    max_len: u8,
}

const IPV4_KEYS: PoolKeys =
    PoolKeys { network: "Network", len: "SubnetLen", min: "SubnetMin", max: "SubnetMax", default_len: 24, max_len: 30 };
const IPV6_KEYS: PoolKeys =
    PoolKeys { network: "IPv6Network", len: "IPv6SubnetLen", min: "IPv6SubnetMin", max: "IPv6SubnetMax", default_len: 64, max_len: 126 };

/// `<prefix>/config`, with flannel's defaults filled in. At least one family is enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConf {
    /// `Network` and its subnets; None when `EnableIPv4` is false.
    pub ipv4: Option<Pool<Ipv4Net>>,
    /// `IPv6Network` and its subnets; None unless `EnableIPv6` is true.
    pub ipv6: Option<Pool<Ipv6Net>>,
    pub backend: BackendSection,
}

/// Go's JSON decoder matches object keys case-insensitively; so does this.
fn field<'a>(obj: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v).filter(|v| !v.is_null())
}

fn str_field<'a>(obj: &'a serde_json::Map<String, Value>, name: &str) -> Result<Option<&'a str>, ConfigError> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ConfigError::Invalid(format!("`{name}` must be a string, found {other}"))),
    }
}

fn bool_field(obj: &serde_json::Map<String, Value>, name: &str, default: bool) -> Result<bool, ConfigError> {
    match field(obj, name) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ConfigError::Invalid(format!("`{name}` must be true or false, found {other}"))),
    }
}

/// One family's pool, its network given as `network`.
fn parse_pool<N: IpNet>(obj: &serde_json::Map<String, Value>, keys: &PoolKeys, network: &str) -> Result<Pool<N>, ConfigError> {
    let invalid = |m: String| ConfigError::Invalid(m);
    let network: N = network.parse().map_err(|e| invalid(format!("`{}`: {e}", keys.network)))?;
    let subnet_len = match field(obj, keys.len) {
        None => {
            if network.prefix() <= keys.default_len - 2 {
                keys.default_len
            } else {
                network.prefix() + 2
            }
        }
        Some(v) => v
            .as_u64()
            .filter(|n| *n <= N::BITS as u64)
            .ok_or_else(|| invalid(format!("`{}` must be 0..{}, found {v}", keys.len, N::BITS)))? as u8,
    };
    if subnet_len <= network.prefix() || subnet_len > keys.max_len {
        return Err(invalid(format!(
            "`{}` {subnet_len} must be longer than the network's /{} and at most {}",
            keys.len,
            network.prefix(),
            keys.max_len
        )));
    }
    let first = N::new(network.addr(), subnet_len).expect("valid prefix");
    let host_bits = N::BITS - subnet_len;
    let count_bits = subnet_len - network.prefix();
    let last_bits = N::bits(network.addr()) | (((1u128 << count_bits) - 1) << host_bits);
    let last = N::new(N::from_bits(last_bits), subnet_len).expect("valid prefix");
    let bound = |name: &str, default: N| -> Result<N, ConfigError> {
        match str_field(obj, name)? {
            None => Ok(default),
            Some(s) => {
                let ip: N::Addr = s.parse().map_err(|_| invalid(format!("`{name}`: `{s}` is not an {} address", N::FAMILY)))?;
                let net = N::new(ip, subnet_len).expect("valid prefix");
                if net.addr() != ip || !network.contains(ip) {
                    return Err(invalid(format!("`{name}` {s} is not a /{subnet_len} subnet inside {network}")));
                }
                Ok(net)
            }
        }
    };
    let subnet_min = bound(keys.min, first.next().unwrap_or(first))?;
    let subnet_max = bound(keys.max, last)?;
    if subnet_min > subnet_max {
        return Err(invalid(format!("`{}` {subnet_min} is above `{}` {subnet_max}", keys.min, keys.max)));
    }
    Ok(Pool { network, subnet_len, subnet_min, subnet_max })
}

impl NetConf {
    pub fn parse(text: &str) -> Result<NetConf, ConfigError> {
        Self::parse_with(text, false)
    }

    /// Parses the config; with `ignore_ipv6` (`--disable-ipv6`) `EnableIPv6` and the
    /// `IPv6*` keys are not read at all, as by an implementation from before dual-stack.
    pub fn parse_with(text: &str, ignore_ipv6: bool) -> Result<NetConf, ConfigError> {
        let invalid = |m: String| ConfigError::Invalid(m);
        let v: Value = serde_json::from_str(text).map_err(ConfigError::Json)?;
        let obj = v.as_object().ok_or_else(|| invalid("expected a JSON object".into()))?;
        let enable_ipv4 = bool_field(obj, "EnableIPv4", true)?;
        let enable_ipv6 = !ignore_ipv6 && bool_field(obj, "EnableIPv6", false)?;
        if !enable_ipv4 && !enable_ipv6 {
            let why = if ignore_ipv6 { "IPv6 settings are ignored (--disable-ipv6)" } else { "`EnableIPv6` is not true" };
            return Err(invalid(format!("neither IPv4 nor IPv6 is enabled: `EnableIPv4` is false and {why}")));
        }
        let ipv4 = match enable_ipv4 {
            false => None,
            true => {
                let network = str_field(obj, "Network")?
                    .ok_or_else(|| invalid("`Network` is missing (an IPv6-only network sets `EnableIPv4` to false)".into()))?;
                Some(parse_pool::<Ipv4Net>(obj, &IPV4_KEYS, network)?)
            }
        };
        let ipv6 = match enable_ipv6 {
            false => None,
            true => {
                let network =
                    str_field(obj, "IPv6Network")?.ok_or_else(|| invalid("`EnableIPv6` is true but `IPv6Network` is missing".into()))?;
                Some(parse_pool::<Ipv6Net>(obj, &IPV6_KEYS, network)?)
            }
        };
        let backend = BackendSection::parse(field(obj, "Backend"))?;
        Ok(NetConf { ipv4, ipv6, backend })
    }

    /// The IPv4 pool, for code that only runs with IPv4 enabled (the udp backend).
    pub fn require_ipv4(&self) -> Result<&Pool<Ipv4Net>, ConfigError> {
        self.ipv4.as_ref().ok_or_else(|| ConfigError::Invalid(format!("the {} backend needs `EnableIPv4`", self.backend.type_name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn flags_in_go_style() {
        let Command::Run(f) = parse_args(args(
            "-etcd-endpoints=http://10.0.0.1:2379 --iface eth1 --public-ip=10.0.0.2 --subnet-file /x/s.env --ip-masq=false --iptables-forward-rules",
        ))
        .unwrap() else {
            panic!("expected run")
        };
        assert_eq!(f.etcd_endpoints, vec!["http://10.0.0.1:2379"]);
        assert_eq!(f.ifaces, vec!["eth1"]);
        assert_eq!(f.public_ip, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(f.subnet_file, PathBuf::from("/x/s.env"));
        assert!(!f.ip_masq && f.iptables_forward_rules);
        assert_eq!(f.etcd_prefix, "/coreos.com/network");
    }

    #[test]
    fn flag_errors_are_named() {
        assert!(matches!(parse_args(args("--bogus=1")), Err(ConfigError::UnknownFlag(_))));
        assert!(matches!(parse_args(args("--iface")), Err(ConfigError::MissingValue(_))));
        assert!(matches!(parse_args(args("--public-ip=nope")), Err(ConfigError::BadValue { .. })));
        assert!(matches!(parse_args(args("--ip-masq=maybe")), Err(ConfigError::BadValue { .. })));
        assert!(matches!(parse_args(args("--iptables-resync=0")), Err(ConfigError::BadValue { .. })));
        assert!(matches!(parse_args(args("--etcd-certfile=/c.pem")), Err(ConfigError::Conflict(..))));
        assert!(matches!(parse_args(args("--etcd-password=x")), Err(ConfigError::Conflict(..))));
        assert!(matches!(parse_args(args("eth0")), Err(ConfigError::Positional(_))));
    }

    fn run(args: Vec<String>, env: &[(&str, &str)]) -> Result<Flags, ConfigError> {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        match parse_args_env(args, |k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))? {
            Command::Run(f) => Ok(*f),
            _ => panic!("expected run"),
        }
    }

    #[test]
    fn tls_auth_and_firewall_flags() {
        let f = run(
            args("--etcd-cafile=/ca.pem --etcd-certfile /c.pem --etcd-keyfile=/k.pem --etcd-username=flannel --etcd-password=s3cret --ip-masq --iptables-resync=9 --vxlan-source-filter=false"),
            &[],
        )
        .unwrap();
        assert_eq!(f.etcd_cafile, Some(PathBuf::from("/ca.pem")));
        assert_eq!(f.etcd_certfile, Some(PathBuf::from("/c.pem")));
        assert_eq!(f.etcd_keyfile, Some(PathBuf::from("/k.pem")));
        assert_eq!((f.etcd_username.as_deref(), f.etcd_password.as_deref()), (Some("flannel"), Some("s3cret")));
        assert!(f.ip_masq && f.iptables_forward_rules);
        assert_eq!(f.iptables_resync_secs, 9);
        assert_eq!(f.vxlan_source_filter, Some(false));
        // profiles expand unset placeholders to "": that is "not given"
        let f = run(args("--etcd-cafile= --etcd-certfile= --etcd-keyfile= --etcd-username="), &[]).unwrap();
        assert_eq!((f.etcd_cafile, f.etcd_certfile, f.etcd_keyfile, f.etcd_username), (None, None, None, None));
        assert_eq!(f.vxlan_source_filter, None);
        assert_eq!(f.iptables_resync_secs, 5);
    }

    #[test]
    fn environment_fills_in_and_command_line_wins() {
        assert_eq!(env_name("etcd-cafile"), "FLANNELD_ETCD_CAFILE");
        assert_eq!(env_name("ip-masq"), "FLANNELD_IP_MASQ");
        let env = [
            ("FLANNELD_ETCD_CAFILE", "/env/ca.pem"),
            ("FLANNELD_IP_MASQ", "true"),
            ("FLANNELD_ETCD_PREFIX", "/env/prefix"),
            ("FLANNELD_IFACE", "eth9"),
            ("FLANNELD_PUBLIC_IP", ""),
        ];
        let f = run(args("--etcd-prefix=/cli --iface eth1"), &env).unwrap();
        assert_eq!(f.etcd_cafile, Some(PathBuf::from("/env/ca.pem")));
        assert!(f.ip_masq);
        assert_eq!(f.etcd_prefix, "/cli");
        assert_eq!(f.ifaces, vec!["eth1"]);
        assert_eq!(f.public_ip, None, "an empty variable is not set");
        let f = run(args("--ip-masq=false"), &env).unwrap();
        assert!(!f.ip_masq);
        let err = run(vec![], &[("FLANNELD_IPTABLES_RESYNC", "soon")]).unwrap_err();
        assert!(matches!(&err, ConfigError::Env { var, .. } if var == "FLANNELD_IPTABLES_RESYNC"), "{err:?}");
    }

    #[test]
    fn netconf_defaults_follow_flannel() {
        let c = NetConf::parse(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
        let v4 = c.ipv4.unwrap();
        assert_eq!(v4.subnet_len, 24);
        assert_eq!(v4.subnet_min.to_string(), "10.244.1.0/24");
        assert_eq!(v4.subnet_max.to_string(), "10.244.255.0/24");
        assert_eq!(c.backend.type_name, "vxlan");
        assert_eq!(v4.subnets().count(), 255);
        assert_eq!(c.ipv6, None, "IPv6 is off unless enabled");
        let small = NetConf::parse(r#"{"network":"10.5.0.0/28","backend":{"type":"VXLAN","vni":7}}"#).unwrap();
        assert_eq!(small.ipv4.unwrap().subnet_len, 30);
        assert_eq!(small.ipv4.unwrap().subnets().count(), 3);
        assert_eq!(small.backend.type_name, "vxlan", "keys and the type in any case");
        let udp = NetConf::parse(r#"{"Network":"10.244.0.0/16"}"#).unwrap();
        assert_eq!(udp.backend.type_name, "udp", "no Backend: udp, as flanneld's code does");
        // the options are the backend's to read (backend::BackendConf::from_conf)
        assert!(NetConf::parse(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"geneve","Bogus":1}}"#).is_ok());
    }

    #[test]
    fn netconf_rejections() {
        for bad in [
            "not json",
            r#"{"Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"10.244.0.1/16","Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"10.244.0.0/16","SubnetLen":16,"Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.9.0","SubnetMax":"10.244.3.0","Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"10.244.0.0/16","Backend":"vxlan"}"#,
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":7}}"#,
        ] {
            assert!(NetConf::parse(bad).is_err(), "accepted {bad}");
        }
    }

    const DUAL: &str = r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}"#;

    #[test]
    fn ipv6_defaults_follow_flannel() {
        let c = NetConf::parse(DUAL).unwrap();
        assert_eq!(c.ipv4.unwrap().network.to_string(), "10.244.0.0/16");
        let v6 = c.ipv6.unwrap();
        assert_eq!(v6.network.to_string(), "fd00:10:244::/56");
        assert_eq!(v6.subnet_len, 64);
        assert_eq!(v6.subnet_min.to_string(), "fd00:10:244:1::/64", "the second subnet");
        assert_eq!(v6.subnet_max.to_string(), "fd00:10:244:ff::/64", "the last subnet");
        assert_eq!(v6.subnets().count(), 255);
        // keys in any case, explicit length and bounds
        let c = NetConf::parse(
            r#"{"network":"10.244.0.0/16","enableipv6":true,"ipv6network":"fd00:10:244::/56","ipv6subnetlen":60,
                "IPV6SUBNETMIN":"fd00:10:244:20::","IPv6SubnetMax":"fd00:10:244:40::","Backend":{"Type":"host-gw"}}"#,
        )
        .unwrap();
        let v6 = c.ipv6.unwrap();
        assert_eq!(
            (v6.subnet_len, v6.subnet_min.to_string(), v6.subnet_max.to_string()),
            (60, "fd00:10:244:20::/60".into(), "fd00:10:244:40::/60".into())
        );
        assert_eq!(v6.subnets().count(), 3);
        // a network narrower than /62 gets subnets two bits longer, as IPv4's rule for /22
        let narrow =
            NetConf::parse(r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/64","Backend":{"Type":"vxlan"}}"#)
                .unwrap();
        assert_eq!(narrow.ipv6.unwrap().subnet_len, 66);
    }

    #[test]
    fn ipv6_only_needs_no_network() {
        let c = NetConf::parse(r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}"#)
            .unwrap();
        assert_eq!(c.ipv4, None);
        assert!(c.ipv6.is_some());
        assert!(c.require_ipv4().is_err());
        // a Network given anyway is ignored when IPv4 is off
        let c = NetConf::parse(
            r#"{"EnableIPv4":false,"Network":"junk","EnableIPv6":true,"IPv6Network":"fd00::/56","Backend":{"Type":"host-gw"}}"#,
        )
        .unwrap();
        assert_eq!(c.ipv4, None);
        // so is an IPv6Network without EnableIPv6
        let c = NetConf::parse(r#"{"Network":"10.244.0.0/16","IPv6Network":"junk","Backend":{"Type":"vxlan"}}"#).unwrap();
        assert_eq!(c.ipv6, None);
    }

    #[test]
    fn disable_ipv6_reads_the_config_as_ipv4_only() {
        let c = NetConf::parse_with(DUAL, true).unwrap();
        assert_eq!(c.ipv6, None);
        assert_eq!(c.ipv4, NetConf::parse(DUAL).unwrap().ipv4);
        // an IPv6 setting the old implementation would not know cannot break it
        let c = NetConf::parse_with(r#"{"Network":"10.244.0.0/16","EnableIPv6":"yes","IPv6Network":7,"Backend":{"Type":"udp"}}"#, true)
            .unwrap();
        assert_eq!(c.backend.type_name, "udp");
        let err = NetConf::parse_with(r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/56"}"#, true).unwrap_err().to_string();
        assert!(err.contains("neither IPv4 nor IPv6 is enabled") && err.contains("--disable-ipv6"), "{err}");
    }

    #[test]
    fn ipv6_errors_say_what_is_wrong() {
        let err = |text: &str| NetConf::parse(text).unwrap_err().to_string();
        let e = err(r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"Backend":{"Type":"vxlan"}}"#);
        assert_eq!(e, "network config: `EnableIPv6` is true but `IPv6Network` is missing");
        let e = err(r#"{"EnableIPv4":false,"Backend":{"Type":"vxlan"}}"#);
        assert_eq!(e, "network config: neither IPv4 nor IPv6 is enabled: `EnableIPv4` is false and `EnableIPv6` is not true");
        let e = err(r#"{"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}"#);
        assert!(e.contains("`Network` is missing"), "IPv4 stays on by default: {e}");
        let e = err(r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::1/56","Backend":{"Type":"vxlan"}}"#);
        assert!(e.contains("`IPv6Network`") && e.contains("host bits"), "{e}");
        for bad in [
            r#"{"Network":"10.244.0.0/16","EnableIPv6":"true","IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}"#,
            r#"{"EnableIPv4":0,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"10.245.0.0/16","Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","IPv6SubnetLen":56,"Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","IPv6SubnetLen":127,"Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","IPv6SubnetMin":"fd00:10:245::","Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","IPv6SubnetMin":"fd00:10:244:1::1","Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","IPv6SubnetMin":"fd00:10:244:9::","IPv6SubnetMax":"fd00:10:244:3::","Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","IPv6SubnetMax":"10.244.3.0","Backend":{"Type":"vxlan"}}"#,
        ] {
            assert!(NetConf::parse(bad).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn ipv6_flags() {
        let f = run(args("--public-ipv6=fd00:1::2 --disable-ipv6"), &[]).unwrap();
        assert_eq!(f.public_ipv6, Some("fd00:1::2".parse().unwrap()));
        assert!(f.disable_ipv6);
        let f = run(vec![], &[("FLANNELD_PUBLIC_IPV6", "fd00:1::3"), ("FLANNELD_DISABLE_IPV6", "false")]).unwrap();
        assert_eq!(f.public_ipv6, Some("fd00:1::3".parse().unwrap()));
        assert!(!f.disable_ipv6);
        let f = run(args("--public-ipv6="), &[]).unwrap();
        assert_eq!(f.public_ipv6, None, "an empty value is not given");
        assert!(matches!(run(args("--public-ipv6=192.168.1.2"), &[]), Err(ConfigError::BadValue { .. })));
    }
}
