use flannel_agent::config::{parse_args, Command, USAGE};

fn main() {
    let flags = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(f)) => f,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return;
        }
        Ok(Command::Version) => {
            println!("flannel-agent {}", env!("CARGO_PKG_VERSION"));
            return;
        }
        Err(e) => {
            eprintln!("flannel-agent: {}", flannel_agent::error::chain(&e));
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("FLANNEL_AGENT_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    if let Err(e) = rt.block_on(flannel_agent::daemon::run(*flags)) {
        eprintln!("flannel-agent: error: {e:#}");
        std::process::exit(1);
    }
}
