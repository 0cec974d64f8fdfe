//! The agent binary's command line, run as a user would (also makes `cargo test` build
//! the binary the lab launches).

use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flannel-agent"))
}

#[test]
fn help_lists_flanneld_flags() {
    let out = agent().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in ["--etcd-endpoints", "--etcd-prefix", "--iface", "--public-ip", "--subnet-file", "--subnet-lease-renew-margin", "--ip-masq"]
    {
        assert!(text.contains(flag), "help lacks {flag}");
    }
}

#[test]
fn help_lists_the_ipv6_flags() {
    let out = agent().arg("--help").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("--public-ipv6=IP"), "{text}");
    assert!(text.contains("--disable-ipv6=BOOL") && text.contains("behave like an implementation from before dual-stack"), "{text}");
    let out = agent().arg("--public-ipv6=10.0.0.1").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("not an IPv6 address"));
}

#[test]
fn bad_flags_exit_2_with_a_message() {
    for (args, needle) in [
        (vec!["--no-such-flag=1"], "unknown flag"),
        (vec!["--public-ip=300.1.1.1"], "not an IPv4 address"),
        (vec!["--etcd-certfile=/tmp/c.pem"], "needs --etcd-keyfile too"),
        (vec!["--iptables-resync=0"], "positive number of seconds"),
        (vec!["--subnet-lease-renew-margin=2000"], "less than the 24 h lease"),
    ] {
        let out = agent().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
