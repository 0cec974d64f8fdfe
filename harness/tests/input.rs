//! Broken input files get one located, accurate message per mistake, all in one run, on
//! standard error, with exit status 2: `flannel-lab check` on the fixtures under
//! `harness/tests/bad-input/` (cases/, profiles/, topologies/: their folder says what
//! they are).

use std::path::{Path, PathBuf};
use std::process::Command;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad-input")
}

/// `check` on one fixture: (exit code, stdout, stderr).
fn check(rel: &str, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flannel-lab"))
        .arg("check")
        .args(extra)
        .arg(dir().join(rel))
        .env("NO_COLOR", "1")
        .output()
        .expect("run flannel-lab check");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
}

/// Each expected problem (`line:col: text`) in order, and no other problem.
fn expect(rel: &str, problems: &[(&str, &str)]) {
    let (code, stdout, stderr) = check(rel, &[]);
    assert_eq!(code, 2, "{rel}: exit status\nstdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.is_empty(), "{rel}: problems belong on standard error, stdout had: {stdout}");
    assert!(!stderr.contains('\x1b'), "{rel}: colour codes in output that is not a terminal: {stderr:?}");
    let found: Vec<&str> = stderr.lines().filter(|l| l.contains(".yaml:")).collect();
    assert_eq!(found.len(), problems.len(), "{rel}: {} problems expected, got:\n{stderr}", problems.len());
    for ((at, text), line) in problems.iter().zip(&found) {
        assert!(line.contains(&format!(".yaml:{at}: ")), "{rel}: expected at {at}: {line}");
        assert!(stderr.contains(text), "{rel}: expected `{text}` in:\n{stderr}");
    }
}

#[test]
fn a_misspelt_step_and_key_are_both_reported_with_the_nearest_names() {
    expect("cases/typo-step.yaml", &[("6:5", "unknown step kind `start_agent`"), ("8:19", "unknown key `from`")]);
    let (_, _, stderr) = check("cases/typo-step.yaml", &[]);
    assert!(stderr.contains("did you mean `start_agents`?"), "{stderr}");
    // nothing near `from`: the keys the step has, and no guess
    assert!(stderr.contains("use one of `cross_segment_fails`, `within`"), "{stderr}");
}

#[test]
fn an_unknown_key_does_not_hide_an_unknown_host() {
    expect("cases/key-and-host.yaml", &[("5:1", "unknown key `bogus`"), ("8:5", "no host `h9`")]);
}

#[test]
fn an_unknown_topology_is_reported_at_its_key_beside_everything_else() {
    expect(
        "cases/unknown-topology.yaml",
        &[
            ("4:11", "unknown topology `flatt`"),
            ("5:9", "host count 0 is out of range"),
            ("5:12", "host count 99999 is out of range"),
            ("6:12", "unknown backend `vxlna`"),
        ],
    );
    let (_, _, stderr) = check("cases/unknown-topology.yaml", &[]);
    assert!(stderr.contains("did you mean `flat`?") && stderr.contains("did you mean `vxlan`?"), "{stderr}");
}

#[test]
fn a_misspelt_check_and_a_bad_duration_are_both_reported() {
    expect("cases/bad-check.yaml", &[("8:30", "expected a string"), ("9:29", "unknown check `fbd`")]);
    let (_, _, stderr) = check("cases/bad-check.yaml", &[]);
    assert!(stderr.contains("did you mean `fdb`?"), "{stderr}");
}

#[test]
fn an_empty_file_says_it_is_empty_as_what_its_folder_holds() {
    expect("cases/empty.yaml", &[("1:1", "the case file is empty")]);
}

#[test]
fn a_file_that_is_not_utf8_names_the_first_bad_byte() {
    expect("cases/latin1.yaml", &[("2:17", "not UTF-8 text: byte 0xe9 at line 2, column 17")]);
    let (_, _, stderr) = check("cases/latin1.yaml", &[]);
    assert!(stderr.contains("save the file as UTF-8") && !stderr.contains("permissions"), "{stderr}");
}

#[test]
fn a_misspelt_profile_key_suggests_the_real_one() {
    expect("profiles/typo-key.yaml", &[("3:1", "unknown key `comand`")]);
    let (_, _, stderr) = check("profiles/typo-key.yaml", &[]);
    assert!(stderr.contains("did you mean `command`?"), "{stderr}");
}

#[test]
fn a_misspelt_topology_key_suggests_the_real_one() {
    expect("topologies/typo-key.yaml", &[("6:5", "unknown key `segmnt`")]);
    let (_, _, stderr) = check("topologies/typo-key.yaml", &[]);
    assert!(stderr.contains("did you mean `segment`?"), "{stderr}");
}

#[test]
fn kind_comes_from_usage_not_from_a_guess() {
    // an empty file read as a profile says so
    let (code, _, stderr) = check("cases/empty.yaml", &["--kind", "profile"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("the profile file is empty"), "{stderr}");
}

#[test]
fn valid_files_go_to_standard_output_and_exit_0() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("root").to_path_buf();
    let out = Command::new(env!("CARGO_BIN_EXE_flannel-lab"))
        .args(["check", "cases/ping.yaml", "topologies/flat.yaml", "harness/profiles/reference.yaml"])
        .current_dir(&root)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("valid case") && stdout.contains("valid topology") && stdout.contains("valid profile"), "{stdout}");
    assert!(out.stderr.is_empty());
}
