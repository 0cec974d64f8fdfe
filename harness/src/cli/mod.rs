//! The `flannel-lab` command line (clap): run the conformance suite; hold a lab open to
//! work in (`up`, `status`, `exec`, `down`); validate input files; measure throughput and
//! cost curves; clean up after killed runs.
//!
//! | command | module |
//! |---|---|
//! | run, list, check | [`run`] (progress: [`progress`]) |
//! | matrix, pin | [`compare`] |
//! | up | [`up`] |
//! | status, exec, down | [`live`] |
//! | bench, scale, gc | [`measure`] |
//! | explore | [`explore`] |
//! | diagnose, import, dump | [`field`] |

mod compare;
mod explore;
mod field;
mod live;
mod measure;
mod progress;
mod run;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::agents::Implementation;
use crate::contract::Backend;
use crate::error::Result;

#[derive(Parser, Debug)]
#[command(
    name = "flannel-lab",
    version,
    about = "A conformance lab for flannel-style pod networking, on one Linux machine",
    long_about = "A conformance lab for flannel-style pod networking, on one Linux machine.\n\n\
        Hosts are network namespaces on simulated L2 segments, etcd is real, and one flannel \
        agent runs per host. Cases (cases/*.yaml) say what to do to the cluster and what must \
        hold; the lab judges any implementation described by a launch profile. Needs root.",
    after_help = "Examples:\n  \
        flannel-lab run --filter vxlan --html report.html\n  \
        flannel-lab up flat --hosts 4 --backend host-gw\n  \
        flannel-lab status\n  \
        flannel-lab exec h1 -- ip route\n  \
        flannel-lab down\n  \
        flannel-lab explore --budget 10m\n\n\
        See `flannel-lab help <command>` for each command's options and examples.\n\n\
        Environment:\n  \
        FLANNEL_LAB_IMPL      implementation when --impl is not given (default: reference)\n  \
        FLANNEL_LAB_WORKDIR   work files and artifacts (default: /tmp/flannel-lab)\n  \
        FLANNEL_LAB_STORE     where etcd runs for cases that do not say: process, docker, auto\n  \
        FLANNEL_LAB_AGENT     the reference agent binary (default: built from agent/)\n  \
        FLANNELD              the upstream flanneld binary `{flanneld}` names (default: flanneld on PATH)\n  \
        RUST_LOG              the harness's own log level on stderr (default: warn)\n\n\
        Exit status:\n  \
        0  conformant: every trial ran and passed (or the command did its job)\n  \
        1  a finding: the implementation is wrong somewhere (or a known failure passes now)\n  \
        2  usage: a bad flag, an invalid case/topology/profile, no trial matches\n  \
        3  the lab could not judge: not root, a lab error, trials skipped",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Run(run::RunArgs),
    List(run::ListArgs),
    Check(run::CheckArgs),
    Pin(compare::PinArgs),
    Matrix(compare::MatrixArgs),
    Up(up::UpArgs),
    Status(live::StatusArgs),
    Exec(live::ExecArgs),
    Down(live::DownArgs),
    Gc(measure::GcArgs),
    Bench(measure::BenchArgs),
    Scale(measure::ScaleArgs),
    Explore(explore::ExploreArgs),
    Diagnose(field::DiagnoseArgs),
    Import(field::ImportArgs),
    Dump(field::DumpArgs),
    Completions(CompletionsArgs),
}

/// Print a shell completion script
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    flannel-lab completions bash > /etc/bash_completion.d/flannel-lab\n  \
    flannel-lab completions zsh > \"${fpath[1]}/_flannel-lab\"\n  \
    flannel-lab completions fish > ~/.config/fish/completions/flannel-lab.fish")]
struct CompletionsArgs {
    /// The shell to complete for
    shell: clap_complete::Shell,
}

/// `--impl`, shared by the commands that start agents.
#[derive(Args, Debug, Clone, Default)]
struct ImplArg {
    /// The implementation: a profile name under harness/profiles/ or a profile file
    /// [default: $FLANNEL_LAB_IMPL, else reference]
    #[arg(long = "impl", value_name = "PROFILE")]
    imp: Option<String>,
}

impl ImplArg {
    /// The profile named, else `FLANNEL_LAB_IMPL`, else the reference agent's.
    fn load(&self, build_reference: bool) -> Result<Implementation> {
        match &self.imp {
            Some(p) => Implementation::load(p, build_reference),
            None => Implementation::from_env(build_reference),
        }
    }
}

/// Parses a command line as `main` would, without running it: `Err` holds clap's message.
/// The docs test feeds it every command the documentation shows.
pub fn parse(argv: &[&str]) -> std::result::Result<(), String> {
    Cli::try_parse_from(argv).map(|_| ()).map_err(|e| e.to_string())
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print and succeed; a usage error exits 2 with a hint
            let _ = e.print();
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    let result = match cli.command {
        Command::Run(a) => run::run(a),
        Command::List(a) => run::list(a),
        Command::Check(a) => run::check(a),
        Command::Pin(a) => compare::pin(a),
        Command::Matrix(a) => compare::matrix(a),
        Command::Up(a) => up::up(a),
        Command::Status(a) => live::status(a),
        Command::Exec(a) => live::exec(a),
        Command::Down(a) => live::down(a),
        Command::Gc(_) => measure::gc(),
        Command::Bench(a) => measure::bench(a),
        Command::Scale(a) => measure::scale(a),
        Command::Explore(a) => explore::explore(a),
        Command::Diagnose(a) => field::diagnose(a),
        Command::Import(a) => field::import(a),
        Command::Dump(a) => field::dump(a),
        Command::Completions(a) => {
            clap_complete::generate(a.shell, &mut Cli::command(), "flannel-lab", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flannel-lab: {e}");
            exit_code_of(&e)
        }
    }
}

/// Exit codes, the same for every command: 0 conformant (or done), 1 a finding about the
/// implementation, 2 usage (a bad flag, an invalid input file, nothing to run), 3 the lab
/// could not do its job (not root, setup, etcd, a lab error in a trial, trials skipped).
pub const EXIT_FINDING: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_LAB: u8 = 3;

fn exit_code_of(e: &crate::error::Error) -> ExitCode {
    match e {
        crate::error::Error::Input(_) | crate::error::Error::Usage(_) => ExitCode::from(EXIT_USAGE),
        _ => ExitCode::from(EXIT_LAB),
    }
}

fn parse_backend(s: &str) -> std::result::Result<Backend, String> {
    Backend::parse(s).ok_or_else(|| format!("unknown backend `{s}` ({})", Backend::known()))
}

fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    crate::input::case::parse_duration(s).ok_or_else(|| format!("`{s}` is not a duration like 500ms, 30s or 2m"))
}

/// A topology named like in case files (`flat`) or given as a path.
fn topology_path(name: &str) -> PathBuf {
    if name.ends_with(".yaml") || name.contains('/') {
        PathBuf::from(name)
    } else {
        crate::input::repo_root().join("topologies").join(format!("{name}.yaml"))
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| crate::lab_err!("tokio runtime: {e}"))
}

/// Fails with the reason when lab trials cannot run here.
fn need_lab() -> Result<()> {
    match crate::suite::lab_unavailable() {
        Some(why) => Err(why.into()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> std::result::Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("flannel-lab").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_and_version_work_everywhere_and_mistakes_get_suggestions() {
        for sub in ["run", "list", "check", "up", "status", "exec", "down", "gc", "bench", "scale", "completions"] {
            let e = parse(&[sub, "--help"]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{sub}");
            let help = e.to_string();
            assert!(help.contains("Usage: flannel-lab"), "{sub}: {help}");
            assert!(help.contains("Examples:") || sub == "gc", "{sub} has no examples: {help}");
        }
        let e = parse(&["--version"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayVersion);
        let e = parse(&["run", "--filtr", "vxlan"]).unwrap_err();
        assert!(e.to_string().contains("--filter"), "{e}");
        let e = parse(&["upp"]).unwrap_err();
        assert!(e.to_string().contains("'up'"), "{e}");
        let e = parse(&["up", "flat", "--backend", "geneve"]).unwrap_err();
        assert!(e.to_string().contains("unknown backend `geneve`"), "{e}");
    }

    #[test]
    fn exec_takes_the_command_after_the_target() {
        let Cli { command: Command::Exec(a) } = parse(&["exec", "h1", "--", "ip", "-br", "addr"]).unwrap() else { panic!() };
        assert_eq!(a.target, "h1");
        assert_eq!(a.command, vec!["ip", "-br", "addr"]);
        let Cli { command: Command::Up(a) } = parse(&["up", "--case", "ping", "--backend", "udp"]).unwrap() else { panic!() };
        assert_eq!((a.topology, a.case.as_deref(), a.backend), (None, Some("ping"), Some(Backend::Udp)));
    }

    #[test]
    fn completions_are_generated() {
        let mut out = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut Cli::command(), "flannel-lab", &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("flannel-lab") && text.contains("--start-spread"), "{text}");
    }
}
