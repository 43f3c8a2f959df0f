//! `interop-matcher`: see [`interop_gateway::matcher_cli`].

fn main() -> std::process::ExitCode {
    interop_gateway::matcher_cli::main()
}
