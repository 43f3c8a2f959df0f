//! `interop`: see [`state_bureau_sim::interop_cli`].

fn main() -> std::process::ExitCode {
    state_bureau_sim::interop_cli::main()
}
