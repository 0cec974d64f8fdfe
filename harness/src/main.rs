fn main() -> std::process::ExitCode {
    flannel_lab::lab::install_signal_cleanup();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    flannel_lab::cli::main()
}
