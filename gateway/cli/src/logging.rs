//! Logs fit for long runs, for every program of ours that runs for hours (`interop-gateway`,
//! `interop-matcher`, `state-bureau-sim`): one line per event worth an operator's attention
//! (never one per submission at INFO: those are counters in `/metrics` and DEBUG lines), on
//! stderr, colour only when stderr is a terminal, and `--log-format json` for a log collector
//! (one JSON object per line). The level is `RUST_LOG`'s, or the program's default.

use std::io::IsTerminal;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, message, fields).
    Json,
}

/// Installs the global subscriber: `RUST_LOG`'s filter (else `default_level`), in `format`.
pub fn init(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_level.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}
