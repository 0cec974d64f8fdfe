fn main() -> std::process::ExitCode {
    flannel_lab::lab::proc::prioritise_harness();
    flannel_lab::lab::install_signal_cleanup();
    flannel_lab::run::log::init();
    flannel_lab::cli::main()
}
