//! The `interop-gateway` command line: serve the gateway, query it as admin, or manage its
//! development PKI. `src/main.rs` is a one-line wrapper around [`main`], so the end-to-end
//! crash test can build and `kill -9` the very same program.

use crate::auth::principal::Principal;
use crate::{engines as backends, pki, server, store, world};
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "interop-gateway",
    version,
    about = "The FBI/DHS interoperability gateway (synthetic emulation)"
)]
struct Cli {
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
        /// PKI directory (from `pki init`).
        #[arg(long, env = "INTEROP_PKI")]
        pki: PathBuf,
        /// World directory (from `state-bureau-sim generate`).
        #[arg(long, env = "INTEROP_WORLD")]
        world: PathBuf,
        /// Data directory for the embedded store.
        #[arg(long, env = "INTEROP_DATA")]
        data: Option<PathBuf>,
        /// The durable store: `embedded` (redb in --data, the default) or a NATS JetStream
        /// log shared by gateway replicas, `nats://HOST:PORT[/STREAM][?replicas=N]`
        /// (README "Beyond one machine").
        #[arg(long, env = "INTEROP_STORE", default_value = "embedded")]
        store: String,
        /// This gateway's name among replicas on a shared store; the same name after a
        /// restart resumes its unfinished work (default: a random one, whose work other
        /// replicas take over once it stops beating).
        #[arg(long, env = "INTEROP_REPLICA")]
        replica_id: Option<String>,
        /// Matcher shards per gallery.
        #[arg(long, default_value_t = 4)]
        shards: usize,
        /// Submissions processed concurrently.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
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
        /// Put IDENT's hit/no-hit threshold at this false-positive identification rate (e.g.
        /// 0.001), calibrated from the gallery at start: up to 1,000 enrolled prints searched
        /// as non-mated probes (the log says the threshold and whether the searches resolve
        /// the rate). Default: the matcher's fixed threshold (0.6), far above FPIR 0.1%.
        /// With --ident-shards, each shard process takes `interop-matcher serve --fpir`.
        #[arg(long, conflicts_with = "ident_shards")]
        ident_fpir: Option<f64>,
        /// Hours a field office's events are kept after it acknowledged them.
        #[arg(long, default_value_t = 168.0)]
        retention_hours: f64,
        #[command(flatten)]
        bounds: Bounds,
    },
    /// Administrative queries against a running gateway (as the admin identity).
    Admin {
        /// Gateway endpoint.
        #[arg(
            long,
            env = "INTEROP_TARGET",
            default_value = "https://127.0.0.1:50051"
        )]
        target: String,
        /// PKI directory holding ca.pem and clients/admin.pem.
        #[arg(long, env = "INTEROP_PKI")]
        pki: PathBuf,
        #[command(subcommand)]
        cmd: AdminCmd,
    },
    /// Development PKI.
    Pki {
        #[command(subcommand)]
        cmd: PkiCmd,
    },
}

/// The overload bounds of `serve` (README "Overload"); defaults from [`server::ServeOptions`].
#[derive(clap::Args)]
struct Bounds {
    /// Receipted submissions waiting for a worker; past it submissions are refused with
    /// RESOURCE_EXHAUSTED after --admission-wait-ms.
    #[arg(long, env = "INTEROP_QUEUE_DEPTH", default_value_t = 8192)]
    queue_depth: usize,
    /// How long a submission waits for room in a full queue before it is refused.
    #[arg(long, default_value_t = 250)]
    admission_wait_ms: u64,
    /// Receipted submissions one bureau may have waiting for processing; past it its new
    /// submissions are refused (RESOURCE_EXHAUSTED) while other bureaus' get in. 0 = a quarter
    /// of the queue depth plus the concurrency.
    #[arg(long, default_value_t = 0)]
    max_queued_per_bureau: usize,
    /// Open client connections at once; further connections are closed before TLS.
    #[arg(long, env = "INTEROP_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// Concurrent HTTP/2 streams (calls) per connection.
    #[arg(long, default_value_t = 512)]
    max_streams_per_connection: u32,
    /// Open Subscribe/StreamResponses streams in all, and per client identity.
    #[arg(long, default_value_t = 4096)]
    max_subscriptions: usize,
    #[arg(long, default_value_t = 64)]
    max_subscriptions_per_identity: usize,
    /// Deadline of a unary call (or of opening a stream) when the client sets no shorter
    /// grpc-timeout.
    #[arg(long, default_value_t = 30)]
    request_timeout_secs: u64,
    /// A connection that has not completed its TLS handshake by then is closed (slow-loris).
    #[arg(long, default_value_t = 10)]
    tls_handshake_timeout_secs: u64,
    /// A connection with no call in flight for this long is closed; 0 keeps idle connections.
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
    fn apply(&self, o: server::ServeOptions) -> anyhow::Result<server::ServeOptions> {
        anyhow::ensure!(self.queue_depth > 0, "--queue-depth must be at least 1");
        anyhow::ensure!(
            self.max_connections > 0,
            "--max-connections must be at least 1"
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
        let s = Duration::from_secs;
        Ok(server::ServeOptions {
            queue_depth: self.queue_depth,
            admission_wait: Duration::from_millis(self.admission_wait_ms),
            max_queued_per_bureau: self.max_queued_per_bureau,
            max_connections: self.max_connections,
            max_streams_per_connection: self.max_streams_per_connection,
            max_subscriptions: self.max_subscriptions,
            max_subscriptions_per_identity: self.max_subscriptions_per_identity,
            request_timeout: s(self.request_timeout_secs),
            tls_handshake_timeout: s(self.tls_handshake_timeout_secs),
            idle_timeout: (self.idle_timeout_secs > 0).then(|| s(self.idle_timeout_secs)),
            keepalive_interval: s(self.keepalive_interval_secs),
            keepalive_timeout: s(self.keepalive_timeout_secs),
            ..o
        })
    }
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Monthly interoperability statistics, per jurisdiction, state and nation.
    Stats {
        /// YYYY-MM (month of booking).
        #[arg(long)]
        month: String,
        /// Only this state.
        #[arg(long, default_value = "")]
        state: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The disclosure audit: who received which TCN's result, when, through which RPC
    /// (all pages, oldest first; CSV).
    Disclosures {
        #[arg(long, default_value = "")]
        tcn: String,
        /// SPIFFE id, e.g. spiffe://interop.local/bureau/TX.
        #[arg(long, default_value = "")]
        recipient: String,
    },
    /// Revokes a client certificate by serial number (hex).
    Revoke {
        #[arg(long)]
        serial: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Lists revoked certificates.
    Revoked,
    /// Makes the gateway re-read its certificate, key and client CA bundle (as SIGHUP does).
    Reload,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Subcommand)]
enum PkiCmd {
    /// Create a CA, a loopback server certificate and client certificates for every state
    /// bureau, every field office and an admin.
    Init {
        #[arg(long)]
        out: PathBuf,
        /// Take the states and field offices from this world instead of the built-in lists.
        #[arg(long)]
        world: Option<PathBuf>,
    },
    /// Issue one more client certificate: writes PREFIX.pem and PREFIX-key.pem.
    Issue {
        /// PKI directory holding ca.pem and ca-key.pem.
        #[arg(long)]
        ca: PathBuf,
        /// SPIFFE id, e.g. spiffe://interop.local/bureau/TX.
        #[arg(long)]
        id: String,
        #[arg(long)]
        out: PathBuf,
    },
}

async fn shutdown_signal() {
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

/// Runs the command line with the process's arguments.
pub fn main() -> std::process::ExitCode {
    main_from(std::env::args_os())
}

/// Runs the command line with `args` (the first is the program's name), e.g. from another
/// program that embeds the gateway (`state-bureau-sim cluster up` starts its gateways so).
pub fn main_from(
    args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> std::process::ExitCode {
    let cli = Cli::parse_from(args);
    block_on_to_exit(run(cli))
}

/// Runs `work` on a new multi-threaded runtime; an error is printed and exits 1 (both
/// command lines, `interop-gateway` and `interop-matcher`, end so).
pub(crate) fn block_on_to_exit(
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match cli.cmd {
        Cmd::Serve {
            listen,
            pki,
            world,
            data,
            shards,
            concurrency,
            grace_secs,
            metrics_listen,
            no_metrics,
            retention_hours,
            bounds,
            ident_shards,
            search_deadline_ms,
            ident_fpir,
            store,
            replica_id,
        } => {
            anyhow::ensure!(
                retention_hours.is_finite() && retention_hours >= 0.0,
                "--retention-hours must be a non-negative number"
            );
            let world_file: world::WorldFile = world::read_json(&world, world::WORLD_FILE)?;
            let tls = server::server_tls(&pki::PkiDir(pki.clone()))?;
            let store = match (store.as_str(), data) {
                ("embedded", None) => anyhow::bail!("--data is required with the embedded store"),
                ("embedded", Some(data)) => {
                    store::open_embedded(&data).context("opening the data directory")?
                }
                (spec, data) => {
                    let dir = data.unwrap_or_default();
                    store::open_spec(spec, &dir, replica_id)
                        .await
                        .context("opening the store")?
                }
            };
            let deadline = Duration::from_millis(search_deadline_ms);
            tracing::info!(world = %world.display(), "loading galleries");
            let dir = world.clone();
            let (ident, criminal, matcher): (
                Arc<dyn backends::IdentSearch>,
                Arc<dyn backends::CriminalHistory>,
                _,
            ) = match ident_shards {
                None => {
                    let b = tokio::task::spawn_blocking(move || {
                        let b = backends::InProcess::load_with_deadline(&dir, shards, deadline)?;
                        b.ident.log_deadline_fit("IDENT")?;
                        b.criminal.log_deadline_fit("FBI")?;
                        anyhow::Ok(b)
                    })
                    .await??;
                    let m = b.ident.matcher();
                    if let Some(fpir) = ident_fpir {
                        let cal = {
                            let m = m.clone();
                            tokio::task::spawn_blocking(move || m.calibrate_threshold(fpir, 1000))
                                .await?
                                .map_err(|e| anyhow::anyhow!("--ident-fpir: {e}"))?
                        };
                        backends::log_calibration(&cal, "--ident-fpir");
                    }
                    (
                        b.ident,
                        b.criminal,
                        Some(server::MatcherServing::InProcess(m)),
                    )
                }
                Some(spec) => {
                    let remote = Arc::new(crate::engines::remote::RemoteIdent::new(
                        &spec,
                        &pki::PkiDir(pki.clone()),
                        &world,
                        deadline,
                    )?);
                    tracing::info!(shards = %spec, "IDENT searches go to matcher shard processes");
                    let criminal = tokio::task::spawn_blocking(move || {
                        let b = backends::GalleryBackend::<world::CriminalRecord>::load(
                            &dir,
                            world::FBI_GALLERY_FILE,
                            world::FBI_RECORDS_FILE,
                            shards,
                        )?
                        .with_deadline(deadline);
                        b.log_deadline_fit("FBI")?;
                        anyhow::Ok(b)
                    })
                    .await??;
                    (
                        remote.clone(),
                        Arc::new(criminal),
                        Some(server::MatcherServing::Shards(remote)),
                    )
                }
            };
            let gw = server::Gateway::start(
                world_file,
                store,
                ident,
                criminal,
                matcher,
                bounds.apply(server::ServeOptions {
                    concurrency,
                    grace: Duration::from_secs(grace_secs),
                    retention: Duration::from_secs_f64(retention_hours * 3600.0),
                    ..Default::default()
                })?,
            )
            .await?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            // One signal, two servers.
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                shutdown_signal().await;
                let _ = stop_tx.send(true);
            });
            let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            // SIGHUP re-reads the server certificate, key and client CA bundle.
            #[cfg(unix)]
            {
                let gw = Arc::clone(&gw);
                let mut hup =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                        .context("installing the SIGHUP handler")?;
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        // Success and failure are both logged by reload_tls.
                        let _ = gw.reload_tls();
                    }
                });
            }
            if !no_metrics {
                let ml = tokio::net::TcpListener::bind(metrics_listen)
                    .await
                    .with_context(|| format!("binding --metrics-listen {metrics_listen}"))?;
                tokio::spawn(Arc::clone(&gw).serve_metrics(ml, stopped(stop_rx.clone())));
            }
            Arc::clone(&gw).serve(listener, tls, stopped(stop_rx)).await
        }
        Cmd::Admin { target, pki, cmd } => {
            use interop_proto::v1 as pb;
            let ch = crate::client::connect(&target, &pki::PkiDir(pki), &Principal::Admin).await?;
            let mut admin = pb::admin_service_client::AdminServiceClient::new(ch);
            let refused = |s: tonic::Status| anyhow::anyhow!("{:?}: {}", s.code(), s.message());
            match cmd {
                AdminCmd::Stats {
                    month,
                    state,
                    format,
                } => {
                    let stats = admin
                        .get_monthly_stats(pb::GetMonthlyStatsRequest { month, state })
                        .await
                        .map_err(refused)?
                        .into_inner();
                    print!("{}", render_stats(&stats, format));
                }
                AdminCmd::Disclosures { tcn, recipient } => {
                    println!(
                        "seq,disclosed_at,recipient,certificate_serial,rpc,state,tcn,kind,cursor"
                    );
                    let mut page_token = String::new();
                    loop {
                        let page = admin
                            .list_disclosures(pb::ListDisclosuresRequest {
                                tcn: tcn.clone(),
                                recipient: recipient.clone(),
                                page_size: 1000,
                                page_token,
                            })
                            .await
                            .map_err(refused)?
                            .into_inner();
                        for d in &page.disclosures {
                            let at = d
                                .disclosed_at
                                .and_then(|t| {
                                    chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32)
                                })
                                .map(|t| t.to_rfc3339())
                                .unwrap_or_default();
                            println!(
                                "{},{at},{},{},{},{},{},{},{}",
                                d.seq,
                                d.recipient,
                                d.certificate_serial,
                                d.rpc,
                                d.state,
                                d.tcn,
                                d.kind().as_str_name(),
                                d.cursor
                            );
                        }
                        if page.next_page_token.is_empty() {
                            break;
                        }
                        page_token = page.next_page_token;
                    }
                }
                AdminCmd::Revoke { serial, reason } => {
                    let r = admin
                        .revoke_certificate(pb::RevokeCertificateRequest { serial, reason })
                        .await
                        .map_err(refused)?
                        .into_inner();
                    println!("revoked {} ({})", r.serial, r.reason);
                }
                AdminCmd::Revoked => {
                    let list = admin
                        .list_revoked(pb::ListRevokedRequest {})
                        .await
                        .map_err(refused)?
                        .into_inner();
                    for r in list.revoked {
                        let at = r
                            .revoked_at
                            .and_then(|t| {
                                chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32)
                            })
                            .map(|t| t.to_rfc3339())
                            .unwrap_or_default();
                        println!("{}\t{at}\t{}", r.serial, r.reason);
                    }
                }
                AdminCmd::Reload => {
                    let r = admin
                        .reload_certificates(pb::ReloadCertificatesRequest {})
                        .await
                        .map_err(refused)?
                        .into_inner();
                    println!(
                        "reloaded: server certificate serial {}, {} client CA certificate(s)",
                        r.server_serial, r.client_cas
                    );
                }
            }
            Ok(())
        }
        Cmd::Pki {
            cmd: PkiCmd::Init { out, world },
        } => {
            let dir = match world {
                Some(w) => {
                    let wf: world::WorldFile = world::read_json(&w, world::WORLD_FILE)?;
                    pki::init_for_world(&out, &wf)?
                }
                None => pki::init_default(&out)?,
            };
            println!(
                "wrote a CA, a server certificate and client certificates to {}",
                dir.0.display()
            );
            Ok(())
        }
        Cmd::Pki {
            cmd: PkiCmd::Issue { ca, id, out },
        } => {
            let p = Principal::from_spiffe(&id).with_context(|| {
                format!("--id {id:?} is not an interop identity (spiffe://interop.local/bureau/XX, /field-office/XXX or /admin)")
            })?;
            let files = pki::IdentityFiles {
                cert: PathBuf::from(format!("{}.pem", out.display())),
                key: PathBuf::from(format!("{}-key.pem", out.display())),
            };
            pki::issue_client(&pki::PkiDir(ca), &p, &files)?;
            println!("wrote {} and {}", files.cert.display(), files.key.display());
            Ok(())
        }
    }
}

fn render_stats(s: &interop_proto::v1::MonthlyStats, format: Format) -> String {
    use std::fmt::Write;
    let national = s.national.clone().unwrap_or_default();
    let rows = s
        .jurisdictions
        .iter()
        .map(|r| ("jurisdiction", r))
        .chain(s.states.iter().map(|r| ("state", r)))
        .chain(std::iter::once(("national", &national)));
    let cols = |r: &interop_proto::v1::StatsRow| {
        [
            r.submissions,
            r.ident_searches,
            r.matches,
            r.identified_level1,
            r.identified_level2,
            r.identified_level3,
            r.identified_non_criminal,
            r.detainers_issued,
            r.removals,
        ]
    };
    const HEAD: [&str; 9] = [
        "submissions",
        "ident_searches",
        "matches",
        "level1",
        "level2",
        "level3",
        "non_criminal",
        "detainers",
        "removals",
    ];
    let mut out = String::new();
    match format {
        Format::Json => {
            let rows: Vec<serde_json::Value> = rows
                .map(|(kind, r)| {
                    let mut m = serde_json::Map::new();
                    m.insert("kind".into(), kind.into());
                    m.insert("state".into(), r.state.clone().into());
                    m.insert("jurisdiction_id".into(), r.jurisdiction_id.clone().into());
                    for (h, v) in HEAD.iter().zip(cols(r)) {
                        m.insert(h.to_string(), v.into());
                    }
                    serde_json::Value::Object(m)
                })
                .collect();
            let doc = serde_json::json!({ "month": s.month, "rows": rows });
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&doc).unwrap_or_default()
            );
        }
        Format::Csv => {
            let _ = writeln!(out, "month,kind,state,jurisdiction_id,{}", HEAD.join(","));
            for (kind, r) in rows {
                let v: Vec<String> = cols(r).iter().map(|x| x.to_string()).collect();
                let _ = writeln!(
                    out,
                    "{},{kind},{},{},{}",
                    s.month,
                    r.state,
                    r.jurisdiction_id,
                    v.join(",")
                );
            }
        }
        Format::Table => {
            let _ = writeln!(out, "interoperability statistics, bookings of {}", s.month);
            let _ = write!(out, "{:<13} {:<6} {:<8}", "", "state", "juris.");
            for h in HEAD {
                let _ = write!(out, " {h:>14}");
            }
            let _ = writeln!(out);
            for (kind, r) in rows {
                let _ = write!(out, "{kind:<13} {:<6} {:<8}", r.state, r.jurisdiction_id);
                for v in cols(r) {
                    let _ = write!(out, " {v:>14}");
                }
                let _ = writeln!(out);
            }
        }
    }
    out
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

    #[test]
    fn ident_fpir_is_for_the_in_process_matcher_only() {
        let args = ["g", "serve", "--pki", "p", "--world", "w", "--data", "d"];
        let cli = Cli::try_parse_from(args.iter().chain(&["--ident-fpir", "0.001"])).unwrap();
        let Cmd::Serve { ident_fpir, .. } = cli.cmd else {
            panic!("parsed as another command")
        };
        assert_eq!(ident_fpir, Some(0.001));
        let both = args.iter().chain(&[
            "--ident-fpir",
            "0.001",
            "--ident-shards",
            "https://127.0.0.1:7001",
        ]);
        let e = Cli::try_parse_from(both).err().expect("refused");
        assert!(e.to_string().contains("--ident-shards"), "{e}");
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
    }
}
