//! `interop-matcher`: see [`interop_gateway_cli::matcher`].

fn main() -> std::process::ExitCode {
    interop_gateway_cli::matcher::main()
}
