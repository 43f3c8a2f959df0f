//! The `interop-gateway` program, built inside the test crate so the crash test can start
//! it as a child process and `kill -9` it (the same one line as `gateway/src/main.rs`).

fn main() -> std::process::ExitCode {
    interop_gateway::cli::main()
}
