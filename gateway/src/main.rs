//! `interop-gateway`: see [`interop_gateway::cli`].

fn main() -> std::process::ExitCode {
    interop_gateway::cli::main()
}
