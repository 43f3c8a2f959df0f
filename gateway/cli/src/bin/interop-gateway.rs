//! `interop-gateway`: see [`interop_gateway_cli::gateway`].

fn main() -> std::process::ExitCode {
    interop_gateway_cli::gateway::main()
}
