//! The `interop-gateway` command line: serve the gateway, or manage its development PKI.
//! Flags become a [`Launch`]; serving it is the library's
//! ([`interop_gateway::server::launch`]). The binary is a one-line wrapper around [`main`],
//! so the end-to-end crash test can build and `kill -9` the very same program. Queries and
//! changes as admin are `interop admin …` (the client's command line).

use crate::pki;
use anyhow::Context;
use clap::{Parser, Subcommand};
use interop_gateway::auth::pki::PkiDir;
use interop_gateway::auth::principal::Principal;
use interop_gateway::engines;
use interop_gateway::server::{self, launch::Launch};
use interop_gateway::world;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "interop-gateway",
    version,
    about = "The FBI/DHS interoperability gateway (synthetic emulation)"
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

// Parsed once per process; boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Serve gRPC over mutual TLS.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "INTEROP_LISTEN", default_value = "127.0.0.1:50051")]
        listen: SocketAddr,
        /// PKI directory (from `pki init`, or a host's from `pki issue`): ca.pem, and this
        /// gateway's own certificate and key (server.pem naming
        /// spiffe://interop.local/gateway/NAME, also what it calls shards as).
        #[arg(long, env = "INTEROP_PKI")]
        pki: PathBuf,
        /// Serve even though the PKI directory holds the CA's private key (ca-key.pem): a
        /// development setup only. Without it such a directory is refused.
        #[arg(long)]
        allow_ca_key: bool,
        /// World directory (from `state-bureau-sim generate`).
        #[arg(long, env = "INTEROP_WORLD")]
        world: PathBuf,
        /// Data directory: the embedded store's file, or, with a NATS --store, where this
        /// replica keeps its view of the log (restarted, it applies only what the log gained).
        #[arg(long, env = "INTEROP_DATA")]
        data: Option<PathBuf>,
        /// The durable store: `embedded` (redb in --data, the default) or a NATS JetStream
        /// log shared by gateway replicas, `tls://HOST:PORT[/STREAM][?replicas=N&ca=..&cert=..&key=..]`
        /// (`nats://` plaintext only with `insecure=true`)
        /// (README "Beyond one machine").
        #[arg(long, env = "INTEROP_STORE", default_value = "embedded")]
        store: String,
        /// The store's page cache in MiB (redb's read cache and write buffer; with a NATS
        /// store, the replica's in-memory view's). Resident memory grows by up to this much as
        /// the cache fills, then holds.
        #[arg(long, default_value_t = (interop_gateway::store::DEFAULT_CACHE_BYTES >> 20) as u64,
              value_parser = clap::value_parser!(u64).range(1..=65_536), allow_negative_numbers = true)]
        store_cache_mib: u64,
        /// This gateway's name among replicas on a shared store; the same name after a
        /// restart resumes its unfinished work (default: a random one, whose work other
        /// replicas take over once it stops beating).
        #[arg(long, env = "INTEROP_REPLICA")]
        replica_id: Option<String>,
        /// Matcher shards per gallery.
        #[arg(long, default_value_t = 4)]
        shards: usize,
        /// Submissions processed at once (default: four per core with the matcher in process,
        /// 64 with --ident-shards).
        #[arg(long)]
        concurrency: Option<usize>,
        /// Seconds in-flight calls may run after SIGINT/SIGTERM.
        #[arg(long, default_value_t = 5)]
        grace_secs: u64,
        /// Plain-HTTP address for Prometheus `/metrics` (keep it on loopback).
        #[arg(long, env = "INTEROP_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
        metrics_listen: SocketAddr,
        /// Do not serve metrics.
        #[arg(long)]
        no_metrics: bool,
        /// IDENT as matcher shard processes (`interop-matcher serve --shard i/N`) instead of
        /// in-process: shards in order, comma-separated, replicas of a shard separated by `|`,
        /// e.g. `https://127.0.0.1:7001,https://127.0.0.1:7002`.
        #[arg(long)]
        ident_shards: Option<String>,
        /// How long a matcher search may take. In-process: from when it is asked for, the
        /// wait for a core included; past it the search gives up and the submission is
        /// retried later. With --ident-shards: how long a shard may take to answer before the
        /// next replica is asked (sent to the shard as the call's deadline; the search is
        /// retried later if none answers).
        #[arg(long, alias = "shard-deadline-ms", default_value_t = 5_000,
              value_parser = clap::value_parser!(u64).range(1..))]
        search_deadline_ms: u64,
        /// How the galleries' hit/no-hit thresholds are set (with --ident-shards, the FBI
        /// gallery's here, and each IDENT shard process takes the same options).
        #[command(flatten)]
        threshold: ThresholdArgs,
        #[command(flatten)]
        retention: Retention,
        #[command(flatten)]
        bounds: Bounds,
    },
    /// The disclosure audit of a stopped gateway's data directory: export, or archive and prune.
    Audit {
        #[command(subcommand)]
        cmd: crate::audit::AuditCmd,
    },
    /// Development PKI.
    Pki {
        #[command(subcommand)]
        cmd: PkiCmd,
    },
}

/// How each gallery's hit/no-hit threshold is set at start, for `serve` and the matcher
/// shards (README "Accuracy").
#[derive(clap::Args, Clone, Debug)]
pub struct ThresholdArgs {
    /// The false-positive identification rate each gallery's hit/no-hit threshold is set
    /// for, calibrated from the gallery at start: up to --calibration-searches of its own
    /// prints searched as non-mated probes (the log says the threshold and whether they
    /// resolve the rate). A gallery of fewer than 1 / F prints cannot: it takes the matcher's
    /// small-gallery threshold (0.25), or just above its highest impostor if that is higher.
    /// A shard of N takes F / N.
    #[arg(long, alias = "ident-fpir", default_value_t = engines::DEFAULT_FPIR,
          value_parser = fpir_in_range)]
    pub fpir: f64,
    /// How many of a gallery's prints to search to calibrate it (1 / F resolve the rate; a
    /// shard of N searches at least N / F).
    #[arg(long, default_value_t = engines::CALIBRATION_SEARCHES as u64,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub calibration_searches: u64,
    /// A fixed hit/no-hit score instead of a calibrated one. The matcher's own, 0.6, sits far
    /// above FPIR 0.1% and misses poor prints (BENCHMARKS.md).
    #[arg(long, conflicts_with_all = ["fpir", "calibration_searches"], value_parser = score_in_range)]
    pub threshold: Option<f32>,
}

impl ThresholdArgs {
    pub fn rule(&self) -> engines::ThresholdRule {
        engines::ThresholdRule::from_options(
            self.fpir,
            self.threshold,
            self.calibration_searches as usize,
        )
    }
}

/// A false-positive identification rate: a number above 0 and below 1.
fn fpir_in_range(s: &str) -> Result<f64, String> {
    let f: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if f > 0.0 && f < 1.0 {
        Ok(f)
    } else {
        Err(format!(
            "{f} is not a rate above 0 and below 1 (e.g. 0.001)"
        ))
    }
}

/// A fused score threshold: a finite number above 0.
fn score_in_range(s: &str) -> Result<f32, String> {
    let t: f32 = s.parse().map_err(|e| format!("{e}"))?;
    if t.is_finite() && t > 0.0 {
        Ok(t)
    } else {
        Err(format!(
            "{t} is not a score above 0 (the matcher's own is 0.6)"
        ))
    }
}

/// The overload bounds of `serve` (README "Overload"); defaults from [`server::ServeOptions`].
#[derive(clap::Args)]
pub struct Bounds {
    /// The backlog's budget: receipted submissions not yet completed. Past it, a bureau holding
    /// at least an equal share of it is refused (RESOURCE_EXHAUSTED, nothing stored) while the
    /// others still get in.
    #[arg(long, env = "INTEROP_BACKLOG_MAX", default_value_t = 100_000)]
    backlog_max: usize,
    /// The same budget in MiB of stored submissions.
    #[arg(long, default_value_t = 1024)]
    backlog_max_mib: u64,
    /// A bureau whose oldest submission has waited this long for processing is refused until
    /// it has been taken.
    #[arg(long, default_value_t = 600)]
    backlog_max_age_secs: u64,
    /// MiB of receipted submissions kept decoded in memory; the rest are read back from the
    /// store when a worker takes them.
    #[arg(long, default_value_t = 64)]
    backlog_memory_mib: u64,
    /// Open client connections (past their TLS handshake) at once; further connections are
    /// closed before TLS.
    #[arg(long, env = "INTEROP_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// TLS handshakes in progress at once; a new connection that finds them all taken closes
    /// the oldest (sockets that never speak cannot keep real clients out).
    #[arg(long, default_value_t = 256)]
    max_handshakes: usize,
    /// The same, from one source address.
    #[arg(long, default_value_t = 32)]
    max_handshakes_per_address: usize,
    /// Concurrent HTTP/2 streams (calls) per connection.
    #[arg(long, default_value_t = 512)]
    max_streams_per_connection: u32,
    /// Open Subscribe/StreamResponses streams in all, and per client identity.
    #[arg(long, default_value_t = 4096)]
    max_subscriptions: usize,
    #[arg(long, default_value_t = 64)]
    max_subscriptions_per_identity: usize,
    /// Reads that disclose case data (GetStatus, GetResponseHead, opening a result stream) per
    /// client identity per second, in bursts of twice that; past it RESOURCE_EXHAUSTED. 0 =
    /// unlimited.
    #[arg(long, default_value_t = 100)]
    max_reads_per_identity: u32,
    /// Deadline of a unary call (or of opening a stream) when the client sets no shorter
    /// grpc-timeout.
    #[arg(long, default_value_t = 30)]
    request_timeout_secs: u64,
    /// A connection that has not completed its TLS handshake by then is closed (slow-loris).
    #[arg(long, default_value_t = 5)]
    tls_handshake_timeout_secs: u64,
    /// A connection not used for this long is closed: no call started, no message sent, no
    /// call ended (an open stream that carries nothing is no use; followers re-open after
    /// their last cursor). 0 keeps idle connections; else at least --request-timeout-secs.
    #[arg(long, default_value_t = 300)]
    idle_timeout_secs: u64,
    /// HTTP/2 PING interval, and how long an unanswered PING may wait before the connection
    /// is closed as dead.
    #[arg(long, default_value_t = 30)]
    keepalive_interval_secs: u64,
    #[arg(long, default_value_t = 10)]
    keepalive_timeout_secs: u64,
}

impl Bounds {
    pub fn apply(&self, o: server::ServeOptions) -> anyhow::Result<server::ServeOptions> {
        anyhow::ensure!(self.backlog_max > 0, "--backlog-max must be at least 1");
        anyhow::ensure!(
            self.backlog_max_mib > 0,
            "--backlog-max-mib must be at least 1"
        );
        anyhow::ensure!(
            self.max_connections > 0,
            "--max-connections must be at least 1"
        );
        anyhow::ensure!(
            self.max_handshakes > 0 && self.max_handshakes_per_address > 0,
            "--max-handshakes and --max-handshakes-per-address must be at least 1"
        );
        anyhow::ensure!(
            self.max_streams_per_connection > 0,
            "--max-streams-per-connection must be at least 1"
        );
        anyhow::ensure!(
            self.max_subscriptions > 0 && self.max_subscriptions_per_identity > 0,
            "--max-subscriptions and --max-subscriptions-per-identity must be at least 1"
        );
        for (flag, v) in [
            ("--backlog-max-age-secs", self.backlog_max_age_secs),
            ("--request-timeout-secs", self.request_timeout_secs),
            (
                "--tls-handshake-timeout-secs",
                self.tls_handshake_timeout_secs,
            ),
            ("--keepalive-interval-secs", self.keepalive_interval_secs),
            ("--keepalive-timeout-secs", self.keepalive_timeout_secs),
        ] {
            anyhow::ensure!(v > 0, "{flag} must be at least 1");
        }
        // A unary call sends nothing until it answers: an idle timeout shorter than its
        // deadline would close connections with calls still being answered.
        anyhow::ensure!(
            self.idle_timeout_secs == 0 || self.idle_timeout_secs >= self.request_timeout_secs,
            "--idle-timeout-secs ({}) must be 0 or at least --request-timeout-secs ({}): a call \
             still being answered would count as idle",
            self.idle_timeout_secs,
            self.request_timeout_secs
        );
        let s = Duration::from_secs;
        Ok(server::ServeOptions {
            backlog: interop_gateway::pipeline::BacklogBudget {
                max_submissions: self.backlog_max,
                max_bytes: self.backlog_max_mib << 20,
                max_age: s(self.backlog_max_age_secs),
                memory_bytes: self.backlog_memory_mib << 20,
            },
            max_connections: self.max_connections,
            max_handshakes: self.max_handshakes,
            max_handshakes_per_address: self.max_handshakes_per_address,
            max_streams_per_connection: self.max_streams_per_connection,
            max_subscriptions: self.max_subscriptions,
            max_subscriptions_per_identity: self.max_subscriptions_per_identity,
            max_reads_per_identity: self.max_reads_per_identity,
            request_timeout: s(self.request_timeout_secs),
            tls_handshake_timeout: s(self.tls_handshake_timeout_secs),
            idle_timeout: (self.idle_timeout_secs > 0).then(|| s(self.idle_timeout_secs)),
            keepalive_interval: s(self.keepalive_interval_secs),
            keepalive_timeout: s(self.keepalive_timeout_secs),
            ..o
        })
    }
}

/// What `serve` keeps and for how long (README "Durability and crash recovery", "Disclosure
/// audit"; [`server::retention`]).
#[derive(clap::Args)]
pub struct Retention {
    /// Hours a field office's events are kept after it acknowledged them (what it has not
    /// acknowledged is kept, however old).
    #[arg(long, default_value_t = 168.0)]
    retention_hours: f64,
    /// Hours a bureau's responses are kept after they were appended (bureaus acknowledge
    /// nothing, so age is the rule; above 0, so a bureau has time to read them). Default 30
    /// days.
    #[arg(long, default_value_t = 720.0)]
    bureau_retention_hours: f64,
    /// Archive disclosure records older than this many days to DATA/archive, then remove them
    /// from the store (embedded store only; at least 1). Default: keep the whole audit.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    audit_retention_days: Option<u32>,
}

impl Retention {
    pub fn apply(&self, o: server::ServeOptions) -> anyhow::Result<server::ServeOptions> {
        let day = Duration::from_secs(24 * 3600);
        Ok(server::ServeOptions {
            retention: hours("--retention-hours", self.retention_hours, true)?,
            bureau_retention: hours(
                "--bureau-retention-hours",
                self.bureau_retention_hours,
                false,
            )?,
            audit_retention: self.audit_retention_days.map(|d| day * d),
            ..o
        })
    }
}

/// Longest retention period a flag takes: a century, far past any use and well inside what a
/// `Duration` holds.
const MAX_RETENTION_HOURS: f64 = 100.0 * 365.25 * 24.0;

/// A retention flag's hours as a period, or an error naming the flag: a number from 0 (or
/// above 0 where `zero_ok` is false) to a century.
fn hours(flag: &str, h: f64, zero_ok: bool) -> anyhow::Result<Duration> {
    let low_ok = if zero_ok { h >= 0.0 } else { h > 0.0 };
    anyhow::ensure!(
        h.is_finite() && low_ok && h <= MAX_RETENTION_HOURS,
        "{flag} must be a number of hours {} {MAX_RETENTION_HOURS} (a century), got {h}",
        if zero_ok {
            "from 0 to"
        } else {
            "above 0, up to"
        }
    );
    Ok(Duration::from_secs_f64(h * 3600.0))
}

#[derive(Subcommand)]
enum PkiCmd {
    /// Create a development PKI: a CA in its own directory (OUT-ca, or --ca-out), and in OUT
    /// the gateway's loopback certificate (spiffe://interop.local/gateway/0) and client
    /// certificates for every state bureau, every field office and an admin.
    Init {
        #[arg(long)]
        out: PathBuf,
        /// Where the CA (ca.pem, ca-key.pem) goes: never a serving directory. Default: OUT-ca.
        #[arg(long)]
        ca_out: Option<PathBuf>,
        /// Take the states and field offices from this world instead of the built-in lists.
        #[arg(long)]
        world: Option<PathBuf>,
    },
    /// Issue one host's PKI directory: ca.pem and the identity's certificate and key. A
    /// gateway replica or a matcher shard gets server.pem (serving and calling as itself, for
    /// the --host names); a bureau, a field office or the admin gets clients/STEM.pem.
    Issue {
        /// The CA's directory (ca.pem and ca-key.pem; `pki init --out DIR` writes DIR-ca).
        #[arg(long)]
        ca: PathBuf,
        /// SPIFFE id, e.g. spiffe://interop.local/matcher/ident-0,
        /// spiffe://interop.local/gateway/east-1 or spiffe://interop.local/bureau/TX.
        #[arg(long)]
        id: String,
        /// The host's directory to write (created owner-only).
        #[arg(long)]
        out: PathBuf,
        /// A DNS name or IP address the workload serves on (repeatable; default: loopback).
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
}

/// Runs the command line with the process's arguments.
pub fn main() -> std::process::ExitCode {
    main_from(std::env::args_os())
}

/// Runs the command line with `args` (the first is the program's name), e.g. from another
/// program that embeds the gateway (`state-bureau-sim cluster up` starts its gateways so).
pub fn main_from(
    args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> std::process::ExitCode {
    // Before anything uses rayon: its threads run the searches, at their priority.
    interop_gateway::engines::slots::search_pool();
    crate::run_cli(args, run)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    crate::logging::init(cli.log_format, "info");
    match cli.cmd {
        Cmd::Serve {
            listen,
            pki,
            allow_ca_key,
            world,
            data,
            shards,
            concurrency,
            grace_secs,
            metrics_listen,
            no_metrics,
            retention,
            bounds,
            ident_shards,
            search_deadline_ms,
            threshold,
            store,
            store_cache_mib,
            replica_id,
        } => {
            let concurrency = match (concurrency, &ident_shards) {
                (Some(n), _) => n.max(1),
                (None, Some(_)) => server::SHARDED_CONCURRENCY,
                (None, None) => server::in_process_concurrency(),
            };
            let launch = Launch {
                listen,
                pki,
                allow_ca_key,
                world,
                data,
                store,
                replica_id,
                store_cache_bytes: (store_cache_mib as usize) << 20,
                shards,
                metrics_listen: (!no_metrics).then_some(metrics_listen),
                ident_shards,
                search_deadline: Duration::from_millis(search_deadline_ms),
                threshold: threshold.rule(),
                options: bounds.apply(retention.apply(server::ServeOptions {
                    concurrency,
                    grace: Duration::from_secs(grace_secs),
                    ..Default::default()
                })?)?,
            };
            server::launch::run(launch, crate::shutdown_signal()).await
        }
        Cmd::Audit { cmd } => crate::audit::run(cmd).await,
        Cmd::Pki {
            cmd: PkiCmd::Init { out, ca_out, world },
        } => {
            let (states, offices): (Vec<String>, Vec<String>) = match world {
                Some(w) => {
                    let wf: world::WorldFile = world::read_json(&w, world::WORLD_FILE)?;
                    (
                        wf.states.iter().map(|s| s.code.clone()).collect(),
                        wf.field_offices.iter().map(|o| o.code.clone()).collect(),
                    )
                }
                None => (
                    pki::DEFAULT_STATES.iter().map(|s| s.to_string()).collect(),
                    pki::DEFAULT_OFFICES.iter().map(|s| s.to_string()).collect(),
                ),
            };
            let ca = ca_out.map_or_else(|| PkiDir(out.clone()).ca_dir_beside(), pki::CaDir);
            let opts = pki::InitOptions {
                states: &states,
                offices: &offices,
            };
            let dir = pki::init_with_ca(&out, &ca, &opts)?;
            println!(
                "wrote the CA to {} (keep it off serving hosts), and the gateway's certificate \
                 and client certificates to {}",
                ca.0.display(),
                dir.0.display()
            );
            Ok(())
        }
        Cmd::Pki {
            cmd: PkiCmd::Issue { ca, id, out, hosts },
        } => {
            let p = Principal::from_spiffe(&id).with_context(|| {
                format!("--id {id:?} is not an interop identity (spiffe://interop.local/bureau/XX, /field-office/XXX, /admin, /gateway/NAME or /matcher/NAME)")
            })?;
            let dir = pki::issue_bundle(&pki::CaDir(ca), &p, &hosts, &out)?;
            println!("wrote {}'s directory {}", p.spiffe_id(), dir.0.display());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_flags_default_to_the_serve_options_defaults() {
        let cli = Cli::try_parse_from([
            "interop-gateway",
            "serve",
            "--pki",
            "p",
            "--world",
            "w",
            "--data",
            "d",
        ])
        .unwrap();
        let Cmd::Serve { bounds, .. } = cli.cmd else {
            panic!("parsed as another command")
        };
        let d = server::ServeOptions::default();
        let o = bounds.apply(d.clone()).unwrap();
        assert_eq!(format!("{o:?}"), format!("{d:?}"));
    }

    #[test]
    fn search_deadline_takes_its_old_name_and_refuses_zero() {
        let args = ["g", "serve", "--pki", "p", "--world", "w", "--data", "d"];
        let deadline = |extra: &[&str]| {
            let cli = Cli::try_parse_from(args.iter().chain(extra))?;
            let Cmd::Serve {
                search_deadline_ms, ..
            } = cli.cmd
            else {
                panic!("parsed as another command")
            };
            Ok::<_, clap::Error>(search_deadline_ms)
        };
        assert_eq!(deadline(&[]).unwrap(), 5_000);
        assert_eq!(deadline(&["--search-deadline-ms", "250"]).unwrap(), 250);
        assert_eq!(deadline(&["--shard-deadline-ms", "300"]).unwrap(), 300);
        let e = deadline(&["--search-deadline-ms", "0"]).unwrap_err();
        assert!(e.to_string().contains("--search-deadline-ms"), "{e}");
    }

    /// Calibration for FPIR 0.1% is the default; `--ident-fpir` is still read as `--fpir`;
    /// a fixed threshold replaces calibration and cannot be given with it; bad values are
    /// refused naming the option.
    #[test]
    fn thresholds_are_calibrated_unless_fixed() {
        let rule = |extra: &[&str]| -> Result<engines::ThresholdRule, clap::Error> {
            let args = ["g", "serve", "--pki", "p", "--world", "w", "--data", "d"];
            let Cmd::Serve { threshold, .. } = Cli::try_parse_from(args.iter().chain(extra))?.cmd
            else {
                panic!("parsed as another command")
            };
            Ok(threshold.rule())
        };
        assert_eq!(rule(&[]).unwrap(), engines::ThresholdRule::default());
        assert_eq!(
            rule(&["--ident-fpir", "0.01"]).unwrap(),
            engines::ThresholdRule::Calibrated {
                fpir: 0.01,
                searches: 1_000
            }
        );
        assert_eq!(
            rule(&["--threshold", "0.6"]).unwrap(),
            engines::ThresholdRule::Fixed(0.6)
        );
        for (bad, names) in [
            (&["--threshold", "0.6", "--fpir", "0.01"][..], "--fpir"),
            (&["--fpir", "1.5"], "--fpir"),
            (&["--threshold=-1"], "--threshold"),
            (&["--calibration-searches", "0"], "--calibration-searches"),
        ] {
            let e = rule(bad).expect_err("refused");
            assert!(e.to_string().contains(names), "{bad:?}: {e}");
        }
    }

    fn retention(extra: &[&str]) -> anyhow::Result<server::ServeOptions> {
        let mut args = vec!["g", "serve", "--pki", "p", "--world", "w", "--data", "d"];
        args.extend_from_slice(extra);
        let Cmd::Serve { retention, .. } = Cli::try_parse_from(args)?.cmd else {
            panic!("parsed as another command")
        };
        retention.apply(server::ServeOptions::default())
    }

    #[test]
    fn retention_flags_default_to_the_serve_options_defaults() {
        let d = server::ServeOptions::default();
        let o = retention(&[]).unwrap();
        assert_eq!(format!("{o:?}"), format!("{d:?}"));
        assert_eq!(o.bureau_retention, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(
            o.audit_retention, None,
            "the audit is kept whole unless asked"
        );
    }

    #[test]
    fn retention_flags_apply_and_bad_values_are_refused_by_name() {
        let o = retention(&[
            "--retention-hours",
            "0",
            "--bureau-retention-hours",
            "1.5",
            "--audit-retention-days",
            "365",
        ])
        .unwrap();
        assert_eq!(o.retention, Duration::ZERO);
        assert_eq!(o.bureau_retention, Duration::from_secs(5400));
        assert_eq!(
            o.audit_retention,
            Some(Duration::from_secs(365 * 24 * 3600))
        );
        for (flag, value) in [
            ("--retention-hours", "-1"),
            ("--retention-hours", "NaN"),
            ("--retention-hours", "1e300"),
            ("--bureau-retention-hours", "0"),
            ("--bureau-retention-hours", "inf"),
            ("--bureau-retention-hours", "-5"),
            ("--bureau-retention-hours", "a week"),
            ("--audit-retention-days", "0"),
            ("--audit-retention-days", "-1"),
            ("--audit-retention-days", "1.5"),
        ] {
            let arg = format!("{flag}={value}");
            let e = retention(&[&arg]).expect_err(value).to_string();
            assert!(e.contains(flag), "{flag} {value}: {e}");
        }
    }

    #[test]
    fn the_store_cache_defaults_to_the_stores_and_refuses_zero_by_name() {
        let cache = |extra: &[&str]| {
            let mut args = vec!["g", "serve", "--pki", "p", "--world", "w", "--data", "d"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).map(|c| match c.cmd {
                Cmd::Serve {
                    store_cache_mib, ..
                } => store_cache_mib,
                _ => panic!("parsed as another command"),
            })
        };
        assert_eq!(
            cache(&[]).unwrap() << 20,
            interop_gateway::store::DEFAULT_CACHE_BYTES as u64
        );
        assert_eq!(cache(&["--store-cache-mib", "64"]).unwrap(), 64);
        for bad in ["0", "-1", "65537", "lots"] {
            let e = cache(&["--store-cache-mib", bad])
                .expect_err(bad)
                .to_string();
            assert!(e.contains("--store-cache-mib"), "{bad}: {e}");
        }
    }

    #[test]
    fn audit_commands_parse_and_refuse_a_directory_without_a_store() {
        let cli = Cli::try_parse_from([
            "g",
            "audit",
            "archive",
            "--data",
            "d",
            "--older-than-days",
            "0",
        ])
        .unwrap();
        assert!(matches!(cli.cmd, Cmd::Audit { .. }));
        let e = Cli::try_parse_from(["g", "audit", "archive", "--data", "d"])
            .err()
            .expect("--older-than-days is required");
        assert!(e.to_string().contains("--older-than-days"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        let cmd = crate::audit::AuditCmd::Export {
            data: empty.path().to_path_buf(),
            tcn: String::new(),
            recipient: String::new(),
        };
        let rt = tokio::runtime::Runtime::new().unwrap();
        let e = rt.block_on(crate::audit::run(cmd)).unwrap_err().to_string();
        assert!(e.contains("no store here"), "{e}");
        assert!(
            std::fs::read_dir(empty.path()).unwrap().next().is_none(),
            "nothing created"
        );
    }

    #[test]
    fn bound_flags_apply_and_zero_is_refused_by_name() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["g", "serve", "--pki", "p", "--world", "w", "--data", "d"];
            args.extend_from_slice(extra);
            let Cmd::Serve { bounds, .. } = Cli::try_parse_from(args).unwrap().cmd else {
                panic!()
            };
            bounds.apply(server::ServeOptions::default())
        };
        let o = parse(&["--max-connections", "7", "--idle-timeout-secs", "0"]).unwrap();
        assert_eq!(o.max_connections, 7);
        assert_eq!(o.idle_timeout, None);
        let e = parse(&["--tls-handshake-timeout-secs", "0"]).unwrap_err();
        assert!(
            e.to_string().contains("--tls-handshake-timeout-secs"),
            "{e}"
        );
        let e = parse(&["--idle-timeout-secs", "10", "--request-timeout-secs", "30"]).unwrap_err();
        assert!(e.to_string().contains("--idle-timeout-secs (10)"), "{e}");
        let o = parse(&["--idle-timeout-secs", "30", "--request-timeout-secs", "30"]).unwrap();
        assert_eq!(o.idle_timeout, Some(Duration::from_secs(30)));
    }
}
