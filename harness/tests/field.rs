//! `diagnose` on fixtures of each input format, with the findings it must print, and the
//! round trip: `up` a lab, break one thing in it behind its agent's back, `dump` it with
//! the real tools, and `diagnose` must name exactly that. The fixtures under
//! `fixtures/field/` are real `dump` output of lab clusters (plain and `-j` forms, vxlan and
//! dual stack), edited where a fault is wanted, and hand-written Kubernetes objects. The
//! round trip needs root: without it, it is ignored with the reason (failed with
//! `FLANNEL_LAB_REQUIRE=1`, as in CI).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flannel_lab::contract::{Check, Finding};
use flannel_lab::field;
use libtest_mimic::{Arguments, Failed, Trial};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/field")
}

fn main() {
    let args = Arguments::from_args();
    let unavailable = flannel_lab::suite::lab_unavailable();
    let require = std::env::var("FLANNEL_LAB_REQUIRE").is_ok_and(|v| v == "1");
    let mut trials = vec![
        Trial::test("field::clean_dumps_have_no_findings", clean_dumps_have_no_findings),
        Trial::test("field::a_missing_fdb_entry_and_a_stale_neighbour", a_missing_fdb_entry_and_a_stale_neighbour),
        Trial::test("field::junk_keys_malformed_and_departed_leases", junk_keys_malformed_and_departed_leases),
        Trial::test("field::kube_subnet_manager_cluster", kube_subnet_manager_cluster),
        Trial::test("field::partial_input_is_located_and_the_rest_judged", partial_input_is_located_and_the_rest_judged),
        Trial::test("field::import_writes_a_case_that_loads", import_writes_a_case_that_loads),
    ];
    for (name, f) in [
        ("field::round_trip_through_a_lab", round_trip_through_a_lab as fn() -> Result<(), Failed>),
        ("field::imported_cases_pass_on_the_reference", imported_cases_pass_on_the_reference),
    ] {
        trials.push(match (&unavailable, require) {
            (Some(why), true) => {
                let why = why.clone();
                Trial::test(name, move || Err(format!("the lab cannot run here (FLANNEL_LAB_REQUIRE=1): {why}").into()))
            }
            (Some(why), false) => Trial::test(name, || Ok(())).with_ignored_flag(true).with_kind(why.clone()),
            (None, _) => Trial::test(name, f),
        });
    }
    libtest_mimic::run(&args, trials).exit();
}

/// Imports a fixture into a fresh folder: the case file and its folder.
fn import(fixture: &str, max_hosts: Option<usize>) -> Result<(PathBuf, PathBuf), Failed> {
    let inp = field::load(&fixtures().join(fixture));
    let f = field::diagnose(&inp);
    let name = format!("field-{fixture}");
    let out = field::import::import(&inp, &name, max_hosts, &f).map_err(|e| format!("import {fixture}: {e}"))?;
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("flannel-lab-import-{fixture}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("topologies"))?;
    std::fs::write(dir.join("topologies").join(format!("{name}.yaml")), out.topology)?;
    let case = dir.join(format!("{name}.yaml"));
    std::fs::write(&case, out.case)?;
    Ok((case, dir))
}

fn import_writes_a_case_that_loads() -> Result<(), Failed> {
    let topologies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies");
    let (file, dir) = import("junk-key", None)?;
    let case = flannel_lab::steps::Case::load(&file, &topologies).map_err(|e| format!("the imported case does not load: {e}"))?;
    let t = case.topology(None).map_err(|e| format!("{e}"))?;
    let steps: Vec<&str> = case.steps.iter().map(|s| flannel_lab::input::case::StepSyntax::name(s)).collect();
    let _ = std::fs::remove_dir_all(&dir);
    // every key as it was (3 leases, a malformed value, a junk key), then the agents
    if t.hosts.len() != 2 || steps.iter().filter(|s| **s == "put_key").count() != 5 || steps[5] != "start_agents" {
        return Err(format!("imported: {} hosts, steps {steps:?}", t.hosts.len()).into());
    }
    if !case.description.contains("lease 10.244.36.0/24 of a departed node (192.168.99.3) kept as it was") {
        return Err(format!("the description does not say what moved:\n{}", case.description).into());
    }
    // scaled down: two nodes of the three, the departed lease still there
    let (file, dir) = import("vxlan-plain", Some(2))?;
    let case = flannel_lab::steps::Case::load(&file, &topologies).map_err(|e| format!("{e}"))?;
    let hosts = case.topology(None).map_err(|e| format!("{e}"))?.hosts.len();
    let _ = std::fs::remove_dir_all(&dir);
    let puts = case.steps.iter().filter(|s| flannel_lab::input::case::StepSyntax::name(*s) == "put_key").count();
    if hosts != 2 || puts != 2 || !case.description.contains("--max-hosts 2") {
        return Err(format!("--max-hosts 2: {puts} leases kept\n{}", case.description).into());
    }
    Ok(())
}

/// The imported clean dumps (vxlan, dual stack) and the junk-key one pass on the reference.
fn imported_cases_pass_on_the_reference() -> Result<(), Failed> {
    let topologies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies");
    let imp = flannel_lab::agents::Implementation::load("reference", true).map_err(|e| format!("{e}"))?;
    for fixture in ["vxlan-plain", "dual-stack", "junk-key"] {
        let (file, dir) = import(fixture, None)?;
        let case = flannel_lab::steps::Case::load(&file, &topologies).map_err(|e| format!("{e}"))?;
        let spec =
            flannel_lab::run::TrialSpec { backend: case.backends[0], case, imp: imp.clone(), verdict: flannel_lab::run::Verdict::Pass };
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let r = rt.block_on(flannel_lab::run::run_trial(&spec, &flannel_lab::suite::workdir()));
        rt.shutdown_background();
        let _ = std::fs::remove_dir_all(&dir);
        if !r.passed {
            return Err(format!("{fixture}: the imported case failed on the reference: {}", r.failure.unwrap_or_default()).into());
        }
    }
    Ok(())
}

fn judge(dir: &Path) -> (field::Input, Vec<Finding>) {
    let inp = field::load(dir);
    let f = field::diagnose(&inp);
    (inp, f)
}

/// Exactly these findings (check, subject, a piece of the text), in any order.
fn expect(dir: &Path, found: &[Finding], want: &[(Check, &str, &str)]) -> Result<(), Failed> {
    let show = || found.iter().map(|f| format!("  {f}")).collect::<Vec<_>>().join("\n");
    if found.len() != want.len() {
        return Err(format!("{}: {} findings, expected {}:\n{}", dir.display(), found.len(), want.len(), show()).into());
    }
    for (c, h, text) in want {
        if !found.iter().any(|f| f.check == *c && f.host == *h && f.what.contains(text)) {
            return Err(format!("{}: no [{c}] {h} finding with `{text}`:\n{}", dir.display(), show()).into());
        }
    }
    Ok(())
}

fn clean_dumps_have_no_findings() -> Result<(), Failed> {
    for name in ["vxlan-plain", "vxlan-json", "dual-stack"] {
        let dir = fixtures().join(name);
        let (inp, f) = judge(&dir);
        if inp.nodes.iter().filter(|n| n.state.is_some()).count() != 3 || inp.leases.len() != 3 {
            return Err(
                format!("{name}: read {} nodes with state and {} leases, expected 3 and 3", inp.nodes.len(), inp.leases.len()).into()
            );
        }
        if !inp.problems.is_empty() {
            return Err(format!("{name}: input not understood: {:?}", inp.problems).into());
        }
        expect(&dir, &f, &[])?;
    }
    // the dual-stack dump is judged in both families
    let (inp, _) = judge(&fixtures().join("dual-stack"));
    if inp.conf.as_ref().and_then(|c| c.ipv6).is_none() || inp.nodes.iter().any(|n| n.public_ip6.is_none()) {
        return Err("dual-stack: the IPv6 half was not read".into());
    }
    Ok(())
}

fn a_missing_fdb_entry_and_a_stale_neighbour() -> Result<(), Failed> {
    let dir = fixtures().join("broken");
    let (_, f) = judge(&dir);
    expect(
        &dir,
        &f,
        &[
            (Check::Fdb, "h2", "missing: ba:ca:9e:a0:39:b9 dst 192.168.99.3"),
            (Check::Neighbours, "h1", "unexpected: 10.244.36.0 lladdr 02:00:00:00:00:99"),
        ],
    )
}

fn junk_keys_malformed_and_departed_leases() -> Result<(), Failed> {
    let dir = fixtures().join("junk-key");
    let (_, f) = judge(&dir);
    expect(
        &dir,
        &f,
        &[
            (Check::Lease, "etcd", "etcd.txt:9: /coreos.com/network/subnets/10.244.200.0-24): value"),
            (Check::Lease, "etcd", "etcd.txt:11: /coreos.com/network/subnets/garbage)"),
            (Check::Lease, "etcd", "lease 10.244.36.0/24 has PublicIP 192.168.99.3, which no node holds"),
        ],
    )
}

fn kube_subnet_manager_cluster() -> Result<(), Failed> {
    let dir = fixtures().join("kube");
    let (inp, f) = judge(&dir);
    if !inp.kube || inp.conf.is_none() {
        return Err("the leases were not read from node annotations, or the ConfigMap's net-conf not at all".into());
    }
    expect(
        &dir,
        &f,
        &[
            (Check::Lease, "n3", "lease 10.244.3.0/24 has no BackendData.VtepMAC"),
            (Check::Lease, "n4", "node n4 has no podCIDR"),
            (Check::Lease, "n4", "no lease with PublicIP 10.0.0.14"),
            (Check::Lease, "n5", "subnet 10.244.2.0/24 is leased twice: nodes.json: node n2 and nodes.json: node n5"),
        ],
    )
}

fn partial_input_is_located_and_the_rest_judged() -> Result<(), Failed> {
    let tmp = std::env::temp_dir().join(format!("flannel-lab-field-partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    copy_dir(&fixtures().join("broken"), &tmp)?;
    let route = tmp.join("nodes/h1/ip-route.txt");
    let mut text = std::fs::read_to_string(&route)?;
    text.insert_str(0, "this is not a route\n");
    std::fs::write(&route, text)?;
    std::fs::write(tmp.join("nodes/h3/bridge-fdb.txt"), [0xff, 0xfe, 0x00])?;
    let (inp, f) = judge(&tmp);
    let problems: Vec<String> = inp.problems.iter().map(|p| p.to_string()).collect();
    let _ = std::fs::remove_dir_all(&tmp);
    let want = [format!("{}:1: not a route: `this is not a route`", route.display()), "nodes/h3/bridge-fdb.txt: not UTF-8 text".into()];
    for w in &want {
        if !problems.iter().any(|p| p.contains(w.as_str())) {
            return Err(format!("no problem `{w}` in {problems:?}").into());
        }
    }
    // h3's FDB is unreadable: its entries count as missing; the two faults are still named
    expect(
        &tmp,
        &f,
        &[
            (Check::Fdb, "h2", "missing: ba:ca:9e:a0:39:b9"),
            (Check::Neighbours, "h1", "unexpected: 10.244.36.0 lladdr 02:00:00:00:00:99"),
            (Check::Fdb, "h3", "0 of 2 FDB entries"),
        ],
    )
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()))?;
        } else {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

fn cli(args: &[&str]) -> Result<std::process::Output, Failed> {
    Command::new(env!("CARGO_BIN_EXE_flannel-lab"))
        .args(args)
        .output()
        .map_err(|e| format!("run flannel-lab {}: {e}", args.join(" ")).into())
}

/// Stops the held lab however the test ends.
struct Held(std::process::Child, Option<String>);

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(run) = &self.1 {
            let _ = Command::new(env!("CARGO_BIN_EXE_flannel-lab")).args(["down", run]).output();
        }
        let _ = self.0.wait();
    }
}

fn round_trip_through_a_lab() -> Result<(), Failed> {
    let child = Command::new(env!("CARGO_BIN_EXE_flannel-lab"))
        .args(["up", "flat", "--hosts", "3", "--pods", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start `flannel-lab up`: {e}"))?;
    let pid = child.id();
    let mut held = Held(child, None);
    // the lab this `up` holds, once every step passed
    let t0 = Instant::now();
    let lab = loop {
        let out = cli(&["status", "--json"])?;
        let labs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let mine = labs.as_array().and_then(|a| a.iter().find(|l| l["pid"] == pid)).cloned();
        if let Some(l) = mine {
            held.1 = l["run"].as_str().map(str::to_string);
            if l["state"].as_str().is_some_and(|s| s.starts_with("held")) {
                break l;
            }
        }
        if t0.elapsed() > Duration::from_secs(90) {
            return Err("`flannel-lab up flat --hosts 3` did not hold a converged lab within 90 s".into());
        }
        // polling another process's state file: nothing to wait on but time
        std::thread::sleep(Duration::from_millis(500));
    };
    let run = held.1.clone().expect("run id");
    let host = |name: &str| lab["hosts"].as_array().and_then(|h| h.iter().find(|x| x["name"] == name)).cloned().unwrap_or_default();
    let (h2, h3) = (host("h2"), host("h3"));
    let ns = h2["netns"].as_str().ok_or("h2's namespace")?.to_string();
    let tmp = std::env::temp_dir().join(format!("flannel-lab-field-rt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    // the untouched lab: no finding
    let out = cli(&["dump", &run, tmp.join("clean").to_str().unwrap()])?;
    if !out.status.success() {
        return Err(format!("dump failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let (_, f) = judge(&tmp.join("clean"));
    expect(&tmp.join("clean"), &f, &[])?;
    // freeze h2's agent (it would repair it) and delete its FDB entry for h3
    let agent = h2["agent_pid"].as_u64().ok_or("h2's agent pid")? as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent), nix::sys::signal::Signal::SIGSTOP)?;
    let h3_ip = h3["addr"].as_str().ok_or("h3's address")?.to_string();
    let fdb = Command::new("ip").args(["netns", "exec", &ns, "bridge", "fdb", "show", "dev", "flannel.1"]).output()?;
    let line = String::from_utf8_lossy(&fdb.stdout).lines().find(|l| l.contains(&format!("dst {h3_ip} "))).map(str::to_string);
    let mac = line.as_deref().and_then(|l| l.split_whitespace().next()).ok_or("h2 has no FDB entry for h3")?.to_string();
    let del = Command::new("ip")
        .args(["netns", "exec", &ns, "bridge", "fdb", "del", &mac, "dev", "flannel.1", "dst", &h3_ip, "self"])
        .status()?;
    let dumped = cli(&["dump", &run, tmp.join("broken").to_str().unwrap(), "--json"]);
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent), nix::sys::signal::Signal::SIGCONT);
    if !del.success() || !dumped?.status.success() {
        return Err("deleting the FDB entry or dumping the lab failed".into());
    }
    let (_, f) = judge(&tmp.join("broken"));
    let r = expect(&tmp.join("broken"), &f, &[(Check::Fdb, "h2", &format!("missing: {mac} dst {h3_ip}"))]);
    let _ = std::fs::remove_dir_all(&tmp);
    drop(held);
    r
}
