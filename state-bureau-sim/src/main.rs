//! `state-bureau-sim`: generate synthetic worlds and drive the gateway with them.

use clap::{Parser, Subcommand};
use state_bureau_sim::demo::{self, DemoOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "state-bureau-sim",
    version,
    about = "Synthetic world generator and end-to-end driver for the interop gateway"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a synthetic world (deterministic: same seed, same bytes).
    Generate {
        #[arg(long, default_value_t = 2011)]
        seed: u64,
        /// Size of the synthetic population.
        #[arg(long, default_value_t = 5_000)]
        identities: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the whole system end to end in one process over real mTLS and verify every answer.
    Demo {
        #[arg(long, default_value_t = 2011)]
        seed: u64,
        #[arg(long, default_value_t = 5_000)]
        identities: u64,
        /// Bookings to submit.
        #[arg(long, default_value_t = 2_000)]
        bookings: usize,
        /// Keep the world, PKI and data in this directory (default: a temporary one).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Matcher shards per gallery.
        #[arg(long, default_value_t = 4)]
        shards: usize,
        /// Plant skewed (pretextual minor-traffic) arrest mixes in this many of the most
        /// populous jurisdictions; the outlier review must flag them.
        #[arg(long, default_value_t = 3)]
        plant_outliers: usize,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = match Cli::parse().cmd {
        Cmd::Generate {
            seed,
            identities,
            out,
        } => {
            let t = std::time::Instant::now();
            state_bureau_sim::generate::generate(seed, identities, &out).map(|s| {
                println!("{s}");
                println!(
                    "world written to {} in {:.1} s",
                    out.display(),
                    t.elapsed().as_secs_f64()
                );
                true
            })
        }
        Cmd::Demo {
            seed,
            identities,
            bookings,
            dir,
            json,
            shards,
            plant_outliers,
        } => rt
            .block_on(demo::run(DemoOptions {
                seed,
                identities,
                bookings,
                dir,
                json,
                shards,
                plant_outliers,
                ..Default::default()
            }))
            .map(|v| v.passed()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
