//! `interop-matcher`: one shard of a world's gallery as its own process, serving
//! `interop.v1.MatcherService` over mutual TLS, for a gateway started with `--ident-shards`.
//! Flags become a [`ShardLaunch`]; running it is the library's
//! ([`interop_gateway::engines::shard::run`]).

use crate::gateway::{Bounds, ThresholdArgs};
use clap::{Parser, Subcommand, ValueEnum};
use interop_gateway::engines::shard::{self, Shard, ShardLaunch};
use interop_gateway::server::ServeOptions;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "interop-matcher",
    version,
    about = "A matcher shard as its own process"
)]
struct Cli {
    /// How log lines are written: text, or one JSON object per line.
    #[arg(
        long,
        global = true,
        env = "INTEROP_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    log_format: crate::logging::LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Gallery {
    /// DHS IDENT (immigration encounters).
    Ident,
    /// FBI criminal-history prints.
    Fbi,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve shard i of N of a gallery.
    Serve {
        #[arg(long, default_value = "127.0.0.1:7001")]
        listen: SocketAddr,
        /// This shard's PKI directory (from `interop-gateway pki issue --id
        /// spiffe://interop.local/matcher/NAME`): ca.pem and its own certificate and key
        /// (server.pem), with which it serves gateways (no one else) and follows --gateway.
        #[arg(long)]
        pki: PathBuf,
        /// Serve even though the PKI directory holds the CA's private key (ca-key.pem): a
        /// development setup only.
        #[arg(long)]
        allow_ca_key: bool,
        /// World directory holding the gallery files.
        #[arg(long)]
        world: PathBuf,
        #[arg(long, value_enum, default_value = "ident")]
        gallery: Gallery,
        /// This process's shard: i/N holds the subjects whose id is i modulo N.
        #[arg(long, default_value = "0/1")]
        shard: Shard,
        /// Threads per search.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// The gateway this shard follows (as itself), e.g. https://127.0.0.1:50051:
        /// its revocation list (a certificate revoked there is refused here too) and, for the
        /// IDENT gallery, the gallery changes recorded there (enrolments and removals made at
        /// the gateway, read before serving and then every interval, so this shard has the ones
        /// it missed while it was down or unreachable).
        #[arg(long, alias = "revocations-from")]
        gateway: Option<String>,
        /// How often to read the gateway's revocation list and gallery changes.
        #[arg(long, default_value_t = 10, alias = "revocations-every-secs")]
        follow_every_secs: u64,
        /// How the hit/no-hit threshold is set: give every shard the same options (a
        /// calibration's FPIR is the whole gallery's, all N shards together; this shard is
        /// calibrated for F / N from its own subjects).
        #[command(flatten)]
        threshold: ThresholdArgs,
        /// The listener's bounds, as the gateway's (the pipeline's have no effect here).
        #[command(flatten)]
        bounds: Bounds,
    },
}

/// Runs `interop-matcher` with the process's arguments.
pub fn main() -> std::process::ExitCode {
    main_from(std::env::args_os())
}

/// Runs `interop-matcher` with `args` (the first is the program's name).
pub fn main_from(
    args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> std::process::ExitCode {
    // Before anything uses rayon: its threads run the searches, at their priority.
    interop_gateway::engines::slots::search_pool();
    crate::run_cli(args, run)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    crate::logging::init(cli.log_format, "info");
    let Cmd::Serve {
        listen,
        pki,
        allow_ca_key,
        world,
        gallery,
        shard,
        threads,
        gateway,
        follow_every_secs,
        threshold,
        bounds,
    } = cli.cmd;
    let launch = ShardLaunch {
        listen,
        pki,
        allow_ca_key,
        world,
        gallery: match gallery {
            Gallery::Ident => shard::Gallery::Ident,
            Gallery::Fbi => shard::Gallery::Fbi,
        },
        shard,
        threads,
        gateway,
        follow_every: std::time::Duration::from_secs(follow_every_secs),
        threshold: threshold.rule(),
        options: bounds.apply(ServeOptions::default())?,
    };
    shard::run(launch, crate::shutdown_signal()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard calibrates for FPIR 0.1% of the gallery by default, takes the gateway's
    /// threshold options, and refuses bad ones naming them.
    #[test]
    fn a_shard_takes_the_gateways_threshold_options() {
        let args = ["m", "serve", "--pki", "p", "--world", "w", "--shard", "1/2"];
        let parse = |extra: &[&str]| Cli::try_parse_from(args.iter().chain(extra));
        let Cmd::Serve { threshold, .. } = parse(&[]).unwrap().cmd;
        assert_eq!(
            threshold.rule(),
            interop_gateway::engines::ThresholdRule::default()
        );
        let Cmd::Serve { threshold, .. } = parse(&["--threshold", "0.5"]).unwrap().cmd;
        assert_eq!(
            threshold.rule(),
            interop_gateway::engines::ThresholdRule::Fixed(0.5)
        );
        for bad in ["0", "1", "-0.1", "x"] {
            let e = parse(&[&format!("--fpir={bad}")]).err().expect("refused");
            assert!(e.to_string().contains("--fpir"), "{e}");
        }
    }
}
