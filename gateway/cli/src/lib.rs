//! The command lines of the gateway's two programs, and the development PKI they issue:
//!
//! - [`gateway`]: `interop-gateway serve` (flags → [`interop_gateway::server::launch::Launch`])
//!   and `interop-gateway pki init|issue`;
//! - [`audit`]: `interop-gateway audit export|archive`, the disclosure audit of a stopped
//!   gateway's data directory;
//! - [`matcher`]: `interop-matcher serve`, one matcher shard as its own process (flags →
//!   [`interop_gateway::engines::shard::ShardLaunch`]);
//! - [`pki`]: the development PKI (rcgen), the NATS configuration of a cluster's shared log,
//!   and connecting to a gateway as one of the PKI's identities.
//!
//! Both binaries are one line over [`gateway::main`] and [`matcher::main`]; the work is the
//! gateway library's. They are a library too so that another program can run the very same
//! command lines in process (`state-bureau-sim cluster` starts its gateways and shards so, and
//! the crash test builds the gateway's own `main` to `kill -9` it).

pub mod audit;
pub mod gateway;
pub mod logging;
pub mod matcher;
pub mod pki;

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Parses `args` (the first is the program's name) as `C` and runs `run` with it to an exit
/// code: the shape of both command lines' `main_from`.
fn run_cli<C: clap::Parser, F: std::future::Future<Output = anyhow::Result<()>>>(
    args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
    run: impl FnOnce(C) -> F,
) -> std::process::ExitCode {
    block_on_to_exit(run(C::parse_from(args)))
}

/// Runs `work` on a new multi-threaded runtime; an error is printed and exits 1 (both
/// command lines end so).
fn block_on_to_exit(
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> std::process::ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(work) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
