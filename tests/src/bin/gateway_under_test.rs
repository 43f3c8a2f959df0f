//! The `interop-gateway` program, built inside the test crate so the crash test can start
//! it as a child process and `kill -9` it (the same one line as `gateway/cli/src/bin/interop-gateway.rs`).

fn main() -> std::process::ExitCode {
    interop_gateway_cli::gateway::main()
}
