//! The HTML report in a real browser: headless Chromium loads a report of made-up trials
//! (a failure with its timeline and topology, a known failure, a lab error, a pass), and
//! the page's own check says how many figures are shown and how many were laid out with a
//! size; a screenshot is kept in `target/report-test/`. A control shows that check failing
//! on a page with a figure that has no size. Without Chromium the trials are ignored with
//! the reason (`FLANNEL_LAB_REQUIRE=1`: they fail); `ci/setup.sh` installs it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use flannel_lab::input::case::Level;
use flannel_lab::input::topology::Topology;
use flannel_lab::report::html::{page, RunInfo};
use flannel_lab::run::{StepOutcome, StepRecord, TrialReport};
use libtest_mimic::{Arguments, Completion, Failed, Trial};

fn main() {
    let args = Arguments::from_args();
    let require = std::env::var("FLANNEL_LAB_REQUIRE").is_ok_and(|v| v == "1");
    let browser = chromium();
    let trials = vec![
        trial("html-report-renders-in-chromium", browser.clone(), require, renders),
        trial("html-report-check-catches-a-figure-without-size", browser, require, catches_blank_figure),
    ];
    libtest_mimic::run(&args, trials).exit();
}

fn trial(name: &str, browser: Result<PathBuf, String>, require: bool, f: fn(&Path) -> Result<(), String>) -> Trial {
    Trial::ignorable_test(name, move || match &browser {
        Ok(b) => f(b).map(|_| Completion::Completed).map_err(Failed::from),
        Err(why) if require => Err(Failed::from(format!("cannot run here, and FLANNEL_LAB_REQUIRE=1 forbids ignoring it: {why}"))),
        Err(why) => Ok(Completion::ignored_with(why.clone())),
    })
}

/// `FLANNEL_LAB_CHROMIUM`, else Debian's chromium.
fn chromium() -> Result<PathBuf, String> {
    let path = std::env::var_os("FLANNEL_LAB_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("no Chromium at {} (ci/setup.sh installs Debian's chromium; FLANNEL_LAB_CHROMIUM names another)", path.display()))
    }
}

fn out_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/report-test");
    std::fs::create_dir_all(&d).expect("create target/report-test");
    d
}

/// Runs headless Chromium on a local file; nothing is fetched from the network.
fn headless(browser: &Path, extra: &[&str], file: &Path) -> Result<String, String> {
    let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync", "--virtual-time-budget=3000"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", file.display()))
        .output()
        .map_err(|e| format!("run {}: {e}", browser.display()))?;
    if !out.status.success() {
        return Err(format!("{} exited {}: {}", browser.display(), out.status, String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The page's own rendering check, read from the DOM Chromium dumps: (shown, drawn).
fn rendered(dom: &str) -> Result<(usize, usize), String> {
    let attr = |name: &str| -> Result<usize, String> {
        let key = format!("{name}=\"");
        let at = dom.find(&key).ok_or_else(|| format!("the page's check did not run: no {name} on the root element"))?;
        dom[at + key.len()..].split('"').next().and_then(|v| v.parse().ok()).ok_or_else(|| format!("{name} is not a number"))
    };
    Ok((attr("data-figures")?, attr("data-drawn")?))
}

fn step(n: usize, kind: &'static str, ms: (u64, u64), outcome: StepOutcome, notes: &[&str]) -> StepRecord {
    StepRecord {
        lab: String::new(),
        n,
        kind,
        start: Duration::from_millis(ms.0),
        end: Duration::from_millis(ms.1),
        outcome,
        notes: notes.iter().map(|s| s.to_string()).collect(),
    }
}

fn report(name: &str, passed: bool, failure: Option<&str>) -> TrialReport {
    TrialReport {
        name: name.into(),
        passed,
        log: vec!["lab built".into(), "ok   step 1 `start_agents` (12 ms)".into()],
        failure: failure.map(str::to_string),
        lab_error: false,
        artifacts: None,
        ignored: None,
        elapsed: Duration::from_millis(4200),
        level: Level::Must,
        known: None,
        allow_fixed: false,
        upstream: None,
        self_check: false,
        findings: Vec::new(),
        failed_step: None,
        steps: Vec::new(),
        topology: None,
        wire: Default::default(),
    }
}

/// A run's worth of made-up trials: three failures of one cause (one shown with its
/// timeline and topology), a known failure, a lab error and a pass.
fn reports() -> Vec<TrialReport> {
    let topologies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies");
    let cause = "step 2 `wait_converged`: [fdb] h2: not converged within 30s: 1 of 2 FDB entries on flannel.1 (found 1); missing: 02:57:aa dst 192.168.10.1";
    let mut failed = report("failover-etcd-outage::vxlan::flanneld", false, Some(cause));
    failed.steps = vec![
        step(0, "setup", (0, 300), StepOutcome::Passed, &[]),
        step(1, "start_agents", (300, 330), StepOutcome::Passed, &[]),
        step(
            2,
            "wait_converged",
            (330, 700),
            StepOutcome::Passed,
            &["converged 370 ms after agents started (360 ms waiting, data plane included)"],
        ),
        step(3, "start_traffic", (700, 710), StepOutcome::Passed, &[]),
        step(4, "restart_etcd", (710, 3000), StepOutcome::Passed, &["etcd stopped for 2s"]),
        step(
            5,
            "stop_traffic",
            (3000, 3100),
            StepOutcome::Passed,
            &["traffic l1-p1 -> r1-p1 every 10ms: 230 sent, 0 lost, longest gap 0 ms"],
        ),
        step(6, "wait_converged", (3100, 4200), StepOutcome::Failed, &[]),
    ];
    failed.topology = Some(Topology::load(&topologies.join("two-segments.yaml")).expect("bundled topology"));
    failed.wire = [(("l1", "l2"), 4), (("l2", "l1"), 4), (("l1", "r1"), 2)]
        .into_iter()
        .map(|((a, b), n)| ((a.to_string(), b.to_string()), n))
        .collect();
    let mut known = report("counts::udp::flanneld", false, Some(&cause.replace("h2", "h3")));
    known.known = Some(flannel_lab::input::profile::KnownFailure {
        trials: "counts::*".into(),
        check: flannel_lab::contract::Check::Fdb,
        host: "h3".into(),
        step: Some(2),
        reason: "peers missed on a simultaneous start".into(),
        link: Some("https://github.com/flannel-io/flannel/pull/1726".into()),
        intermittent: true,
    });
    let mut lab = report("mtu::host-gw::flanneld", false, Some("setting up: start etcd: etcd did not answer within 30s"));
    lab.lab_error = true;
    vec![failed, report("ping::vxlan::flanneld", false, Some(cause)), known, lab, report("mtu::vxlan::flanneld", true, None)]
}

fn renders(browser: &Path) -> Result<(), String> {
    let dir = out_dir();
    let html = dir.join("report.html");
    std::fs::write(&html, page(&reports(), &RunInfo::now("flanneld"))).map_err(|e| e.to_string())?;
    let dom = headless(browser, &["--dump-dom"], &html)?;
    let (shown, drawn) = rendered(&dom)?;
    // the failure's timeline and topology are open (few failures): both must be laid out
    if shown < 2 || drawn != shown {
        return Err(format!("{drawn} of {shown} figures shown have a size (expected the timeline and topology of the open failure)"));
    }
    for text in [
        "Root causes",
        "3</span> trials",
        "[fdb] not converged: N of N FDB entries on DEVICE",
        "router gw",
        "converged after 360 ms",
        "1 known failures",
    ] {
        if !dom.contains(text) {
            return Err(format!("the rendered page lacks `{text}`"));
        }
    }
    let png = dir.join("report.png");
    let _ = std::fs::remove_file(&png);
    headless(browser, &[&format!("--screenshot={}", png.display()), "--window-size=1280,1600", "--hide-scrollbars"], &html)?;
    let size = std::fs::metadata(&png).map(|m| m.len()).map_err(|e| format!("no screenshot at {}: {e}", png.display()))?;
    // a blank 1280×1600 page compresses to a few KiB; this one holds text and two figures
    if size < 40_000 {
        return Err(format!("the screenshot {} is {size} bytes: the page looks empty", png.display()));
    }
    println!("rendered {drawn} figures; screenshot {} ({size} bytes)", png.display());
    Ok(())
}

/// The control: a page whose one open figure has no size must be reported as not drawn.
fn catches_blank_figure(browser: &Path) -> Result<(), String> {
    let html = out_dir().join("blank-figure.html");
    let text = page(&reports(), &RunInfo::now("flanneld"));
    let broken = text.replacen("<svg class=\"timeline\"", "<svg width=\"0\" height=\"0\"></svg><svg class=\"timeline\"", 1);
    if broken == text {
        return Err("the control found no timeline to put a blank figure before".into());
    }
    std::fs::write(&html, broken).map_err(|e| e.to_string())?;
    let (shown, drawn) = rendered(&headless(browser, &["--dump-dom"], &html)?)?;
    if drawn + 1 != shown {
        return Err(format!("with one blank figure the check saw {drawn} drawn of {shown} shown: it cannot tell a figure without size"));
    }
    println!("the check saw {drawn} drawn of {shown} shown, as it should");
    Ok(())
}
