//! Command-line flags (spelled as flanneld spells them) and the network configuration
//! read from `<prefix>/config`.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde_json::Value;

use crate::ipnet::Ipv4Net;

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
    #[error("flag `--{0}` is not supported by the reference agent: {1}")]
    Unsupported(String, &'static str),
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
    pub ifaces: Vec<String>,
    pub public_ip: Option<Ipv4Addr>,
    pub subnet_file: PathBuf,
    pub renew_margin_minutes: u64,
    pub ip_masq: bool,
    pub iptables_forward_rules: bool,
    pub healthz_ip: Ipv4Addr,
    pub healthz_port: u16,
}

impl Default for Flags {
    fn default() -> Self {
        Flags {
            etcd_endpoints: vec!["http://127.0.0.1:4001".into(), "http://127.0.0.1:2379".into()],
            etcd_prefix: "/coreos.com/network".into(),
            ifaces: Vec::new(),
            public_ip: None,
            subnet_file: PathBuf::from("/run/flannel/subnet.env"),
            renew_margin_minutes: 60,
            ip_masq: false,
            iptables_forward_rules: true,
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
  --iface=NAME|IP                  interface to use for inter-host traffic (repeatable; default: default-route interface)
  --public-ip=IP                   IP address other hosts reach this one at (default: the interface's address)
  --subnet-file=PATH               where to write the subnet environment (default /run/flannel/subnet.env)
  --subnet-lease-renew-margin=MIN  renew the lease this many minutes before it expires (default 60)
  --ip-masq=BOOL                   only false is supported
  --iptables-forward-rules=BOOL    accepted; this agent installs no iptables rules
  --healthz-ip=IP --healthz-port=N serve GET /healthz on this address (port 0: off, the default)
  --help, --version
";

pub enum Command {
    Run(Box<Flags>),
    Help,
    Version,
}

/// Parses arguments the way Go's `flag` package does: `-x=v`, `--x=v`, `-x v`; booleans
/// take no separate value (`--ip-masq` means true).
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, ConfigError> {
    let mut flags = Flags::default();
    let mut ifaces_given = false;
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
            "ip-masq" | "iptables-forward-rules" => {
                let v = match inline.as_deref() {
                    None => true,
                    Some(s) => parse_bool(&name, s)?,
                };
                if name == "ip-masq" {
                    if v {
                        return Err(ConfigError::Unsupported(name, "IP masquerading needs iptables, which the lab does not use"));
                    }
                    flags.ip_masq = v;
                } else {
                    flags.iptables_forward_rules = v;
                }
                continue;
            }
            _ => {}
        }
        let value = match inline {
            Some(v) => v,
            None => it.next().ok_or_else(|| ConfigError::MissingValue(name.clone()))?,
        };
        let bad = |expected| ConfigError::BadValue { flag: name.clone(), value: value.clone(), expected };
        match name.as_str() {
            "etcd-endpoints" => {
                flags.etcd_endpoints = value.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect();
                if flags.etcd_endpoints.is_empty() {
                    return Err(bad("a comma-separated list of URLs"));
                }
            }
            "etcd-prefix" => flags.etcd_prefix = value.trim_end_matches('/').to_string(),
            "etcd-cafile" | "etcd-certfile" | "etcd-keyfile" => {
                if !value.is_empty() {
                    return Err(ConfigError::Unsupported(name, "TLS to etcd is not built in"));
                }
            }
            "iface" => {
                if !ifaces_given {
                    flags.ifaces.clear();
                    ifaces_given = true;
                }
                flags.ifaces.push(value);
            }
            "public-ip" => flags.public_ip = Some(value.parse().map_err(|_| bad("an IPv4 address"))?),
            "subnet-file" => flags.subnet_file = PathBuf::from(value),
            "subnet-lease-renew-margin" => {
                flags.renew_margin_minutes = value.parse().map_err(|_| bad("a number of minutes"))?;
                if flags.renew_margin_minutes >= 24 * 60 {
                    return Err(bad("less than the 24 h lease (1440 minutes)"));
                }
            }
            "healthz-ip" => flags.healthz_ip = value.parse().map_err(|_| bad("an IPv4 address"))?,
            "healthz-port" => flags.healthz_port = value.parse().map_err(|_| bad("a port number"))?,
            _ => return Err(ConfigError::UnknownFlag(arg)),
        }
    }
    Ok(Command::Run(Box::new(flags)))
}

fn parse_bool(flag: &str, s: &str) -> Result<bool, ConfigError> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(ConfigError::BadValue { flag: flag.into(), value: s.into(), expected: "a boolean" }),
    }
}

/// The backend named in the network config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConf {
    Vxlan { vni: u32, port: u16 },
    HostGw,
    Udp { port: u16 },
}

impl BackendConf {
    pub fn type_name(&self) -> &'static str {
        match self {
            BackendConf::Vxlan { .. } => "vxlan",
            BackendConf::HostGw => "host-gw",
            BackendConf::Udp { .. } => "udp",
        }
    }
}

/// `<prefix>/config`, with flannel's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConf {
    pub network: Ipv4Net,
    pub subnet_len: u8,
    pub subnet_min: Ipv4Net,
    pub subnet_max: Ipv4Net,
    pub backend: BackendConf,
}

/// Go's JSON decoder matches object keys case-insensitively; so does this.
fn field<'a>(obj: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v).filter(|v| !v.is_null())
}

impl NetConf {
    pub fn parse(text: &str) -> Result<NetConf, ConfigError> {
        let invalid = |m: String| ConfigError::Invalid(m);
        let v: Value = serde_json::from_str(text).map_err(ConfigError::Json)?;
        let obj = v.as_object().ok_or_else(|| invalid("expected a JSON object".into()))?;
        let str_field = |name: &str| -> Result<Option<&str>, ConfigError> {
            match field(obj, name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(other) => Err(invalid(format!("`{name}` must be a string, found {other}"))),
            }
        };
        let network: Ipv4Net = str_field("Network")?
            .ok_or_else(|| invalid("`Network` is missing (IPv6-only networks are not supported)".into()))?
            .parse()
            .map_err(|e| invalid(format!("`Network`: {e}")))?;
        let subnet_len = match field(obj, "SubnetLen") {
            None => {
                if network.prefix() <= 22 {
                    24
                } else {
                    network.prefix() + 2
                }
            }
            Some(v) => v.as_u64().filter(|n| *n <= 32).ok_or_else(|| invalid(format!("`SubnetLen` must be 0..32, found {v}")))? as u8,
        };
        if subnet_len <= network.prefix() || subnet_len > 30 {
            return Err(invalid(format!(
                "`SubnetLen` {subnet_len} must be longer than the network's /{} and at most 30",
                network.prefix()
            )));
        }
        let first = Ipv4Net::new(network.addr(), subnet_len).expect("valid prefix");
        let count = 1u64 << (subnet_len - network.prefix());
        let last = Ipv4Net::new(network.nth(((count - 1) << (32 - subnet_len)) as u32), subnet_len).expect("valid prefix");
        let bound = |name: &str, default: Ipv4Net| -> Result<Ipv4Net, ConfigError> {
            match str_field(name)? {
                None => Ok(default),
                Some(s) => {
                    let ip: Ipv4Addr = s.parse().map_err(|_| invalid(format!("`{name}`: `{s}` is not an IPv4 address")))?;
                    let net = Ipv4Net::new(ip, subnet_len).expect("valid prefix");
                    if net.addr() != ip || !network.contains(ip) {
                        return Err(invalid(format!("`{name}` {s} is not a /{subnet_len} subnet inside {network}")));
                    }
                    Ok(net)
                }
            }
        };
        let subnet_min = bound("SubnetMin", first.next().unwrap_or(first))?;
        let subnet_max = bound("SubnetMax", last)?;
        if subnet_min > subnet_max {
            return Err(invalid(format!("`SubnetMin` {subnet_min} is above `SubnetMax` {subnet_max}")));
        }
        let backend = parse_backend(field(obj, "Backend"))?;
        Ok(NetConf { network, subnet_len, subnet_min, subnet_max, backend })
    }

    /// Every subnet leases may be taken from, in order.
    pub fn subnets(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        std::iter::successors(Some(self.subnet_min), move |s| s.next().filter(|n| *n <= self.subnet_max))
    }
}

fn parse_backend(v: Option<&Value>) -> Result<BackendConf, ConfigError> {
    let invalid = |m: String| ConfigError::Invalid(m);
    let empty = serde_json::Map::new();
    let obj = match v {
        None => &empty,
        Some(Value::Object(o)) => o,
        Some(other) => return Err(invalid(format!("`Backend` must be an object, found {other}"))),
    };
    // flanneld's code falls back to udp when no type is given.
    let ty = match field(obj, "Type") {
        None => "udp".to_string(),
        Some(Value::String(s)) => s.to_ascii_lowercase(),
        Some(other) => return Err(invalid(format!("`Backend.Type` must be a string, found {other}"))),
    };
    let known: &[&str] = match ty.as_str() {
        "vxlan" => &["Type", "VNI", "Port", "GBP", "Learning", "DirectRouting", "MTU", "MacPrefix"],
        "host-gw" => &["Type"],
        "udp" => &["Type", "Port"],
        other => return Err(invalid(format!("unknown backend type `{other}` (known: vxlan, host-gw, udp)"))),
    };
    for k in obj.keys() {
        if !known.iter().any(|n| n.eq_ignore_ascii_case(k)) {
            return Err(invalid(format!("`Backend.{k}` is not an option of the {ty} backend")));
        }
    }
    let num = |name: &str, default: u64, max: u64| -> Result<u64, ConfigError> {
        match field(obj, name) {
            None => Ok(default),
            Some(v) => v.as_u64().filter(|n| *n <= max).ok_or_else(|| invalid(format!("`Backend.{name}` must be 0..{max}, found {v}"))),
        }
    };
    if ty == "host-gw" {
        return Ok(BackendConf::HostGw);
    }
    if ty == "udp" {
        let port = match num("Port", 0, 65535)? as u16 {
            0 => crate::backend::udp::DEFAULT_PORT,
            p => p,
        };
        return Ok(BackendConf::Udp { port });
    }
    for unsupported in ["GBP", "Learning", "DirectRouting", "MTU", "MacPrefix"] {
        match field(obj, unsupported) {
            None | Some(Value::Bool(false)) => {}
            Some(_) => return Err(invalid(format!("`Backend.{unsupported}` is not supported by this version of the reference agent"))),
        }
    }
    let vni = num("VNI", 1, (1 << 24) - 1)? as u32;
    let mut port = num("Port", 0, 65535)? as u16;
    if port == 0 {
        port = crate::backend::vxlan::DEFAULT_PORT;
    }
    Ok(BackendConf::Vxlan { vni, port })
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
        assert!(matches!(parse_args(args("--ip-masq")), Err(ConfigError::Unsupported(..))));
        assert!(matches!(parse_args(args("eth0")), Err(ConfigError::Positional(_))));
    }

    #[test]
    fn netconf_defaults_follow_flannel() {
        let c = NetConf::parse(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
        assert_eq!(c.subnet_len, 24);
        assert_eq!(c.subnet_min.to_string(), "10.244.1.0/24");
        assert_eq!(c.subnet_max.to_string(), "10.244.255.0/24");
        assert_eq!(c.backend, BackendConf::Vxlan { vni: 1, port: 8472 });
        assert_eq!(c.subnets().count(), 255);
        let small = NetConf::parse(r#"{"network":"10.5.0.0/28","backend":{"type":"VXLAN","vni":7}}"#).unwrap();
        assert_eq!(small.subnet_len, 30);
        assert_eq!(small.subnets().count(), 3);
        assert_eq!(small.backend, BackendConf::Vxlan { vni: 7, port: 8472 });
        let udp = NetConf::parse(r#"{"Network":"10.244.0.0/16"}"#).unwrap();
        assert_eq!(udp.backend, BackendConf::Udp { port: 8285 }, "no Backend: udp, as flanneld's code does");
        let udp = NetConf::parse(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":9000}}"#).unwrap();
        assert_eq!(udp.backend, BackendConf::Udp { port: 9000 });
        let hostgw = NetConf::parse(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#).unwrap();
        assert_eq!(hostgw.backend, BackendConf::HostGw);
    }

    #[test]
    fn netconf_rejections() {
        for bad in [
            "not json",
            r#"{"Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"10.244.0.1/16","Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"geneve"}}"#,
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}"#,
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","Bogus":1}}"#,
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw","VNI":1}}"#,
            r#"{"Network":"10.244.0.0/16","SubnetLen":16,"Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.9.0","SubnetMax":"10.244.3.0","Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"udp","VNI":1}}"#,
        ] {
            assert!(NetConf::parse(bad).is_err(), "accepted {bad}");
        }
    }
}
