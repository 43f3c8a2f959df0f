//! `state-bureau-sim`: generate synthetic worlds and drive the gateway with them.

use clap::{Parser, Subcommand};
use state_bureau_sim::demo::{self, Arrival, DemoOptions, RunOptions};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of glibc's allocator: a gateway receipting every bureau at once allocates
/// and frees many small buffers on every thread (HTTP/2 frames, decoded submissions, store
/// batches), and glibc's malloc and free were a tenth of the CPU under ingest. With it the
/// gateway gave 3,447 and 3,628 durable receipts/s against 2,512 and 2,743 (`bench`, two
/// interleaved runs each; BENCHMARKS.md "Allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "state-bureau-sim",
    version,
    about = "Synthetic world generator and end-to-end driver for the interop gateway"
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
    log_format: interop_gateway_cli::logging::LogFormat,
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
        /// Share of people with an FBI criminal record.
        #[arg(long, default_value_t = 0.35)]
        share_criminal: f64,
        /// Share of people with an IDENT encounter (sets the matches per IDENT search; the
        /// default makes the demo's world expect the documents' 6.3%, seed 003).
        #[arg(long, default_value_t = 0.063)]
        share_ident: f64,
        /// Plant racial profiling (pretextual minor-traffic arrests of Hispanic people) in
        /// this many of the most populous jurisdictions, and as many decoys after them (strict
        /// traffic enforcement for everyone): the ground truth of the profiling review.
        #[arg(long, default_value_t = 3)]
        plant_profiling: usize,
        /// People enrolled in the FBI gallery beyond the world's own: arrested elsewhere,
        /// never booked here (templates and records only, written as a stream).
        #[arg(long, default_value_t = 0)]
        fbi_background: u64,
        /// People enrolled in IDENT beyond the world's own (visa applicants, border crossers:
        /// mostly in lawful status; never booked).
        #[arg(long, default_value_t = 0)]
        ident_background: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write planned bookings from a world as JSON lines, for `interop submit --stream`
    /// (one file per state: a bureau submits only its own state's bookings).
    Bookings {
        /// World directory (from `generate`).
        #[arg(long)]
        world: PathBuf,
        #[arg(long, default_value_t = 2011)]
        seed: u64,
        /// Bookings to write.
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Only this state's bookings (two-letter code).
        #[arg(long)]
        state: Option<String>,
        /// Tag inserted into every TCN so files written for one gateway never collide.
        #[arg(long)]
        run_tag: Option<String>,
        /// Output file ("-" = stdout).
        #[arg(long, default_value = "-")]
        out: PathBuf,
    },
    /// Benchmark the gateway beside a bare tonic echo server (same mTLS, same messages, same
    /// driver): durable ingest as a ratio to the echo's rate, then end-to-end latency under
    /// verified open-loop steps.
    Bench {
        #[arg(long, default_value_t = 2011)]
        seed: u64,
        #[arg(long, default_value_t = 5_000)]
        identities: u64,
        /// Seconds of each closed-loop phase.
        #[arg(long, default_value_t = 8.0)]
        seconds: f64,
        /// Submissions in flight in the closed loops.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// End-to-end phase: six steps up to this many bookings a second (past the knee of
        /// the default world on two cores, so the knee is found).
        #[arg(long, default_value_t = 360.0)]
        e2e_max_rate: f64,
        /// Seconds per end-to-end step.
        #[arg(long, default_value_t = 4.0)]
        e2e_step_secs: f64,
        /// Fairness phase: the quiet bureau's bookings a second (the flood sends ten times
        /// that); by default a fifth of the knee the end-to-end phase found. Fix it to compare
        /// two builds at the same load.
        #[arg(long)]
        quiet_rate: Option<f64>,
        /// Use this world directory (from `generate`) instead of generating one of
        /// `--identities`: e.g. a 1,000,000-person world, whose galleries load from their
        /// index snapshots.
        #[arg(long)]
        world: Option<PathBuf>,
        /// Also write the figures as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
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
        /// Also write a self-contained HTML report with charts here.
        #[arg(long)]
        html: Option<PathBuf>,
        /// Write each closed quarter's DOJ assessment (JSON and HTML) into this directory.
        #[arg(long)]
        doj: Option<PathBuf>,
        /// Matcher shards per gallery.
        #[arg(long, default_value_t = 4)]
        shards: usize,
        /// Bookings follow the world's planted racial profiling (`generate --plant-profiling`)
        /// in up to this many jurisdictions, and its decoys; the profiling review must flag
        /// the planted ones where the run gives it the power. 0: bookings without them.
        #[arg(long, default_value_t = 3)]
        plant_outliers: usize,
    },
    /// A local cluster: nats-server, gateway replicas and matcher shard processes.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// Drive a running gateway (another process or machine) with this world's bookings and
    /// verify every answer about them against the ground truth.
    Run {
        /// Gateway endpoint; several replicas comma-separated (each client uses one and moves
        /// to the next when it fails).
        #[arg(long, default_value = "https://127.0.0.1:50051")]
        target: String,
        /// Bureaus submit through the client library (retries, and the next gateway when one
        /// fails) instead of bare calls whose every refusal counts; for runs that kill
        /// gateways on purpose. Unary submissions only.
        #[arg(long)]
        failover: bool,
        /// PKI directory with ca.pem and a client certificate per state, office and admin.
        #[arg(long)]
        pki: PathBuf,
        /// World directory the gateway serves (from `generate`), with its ground truth.
        #[arg(long)]
        world: PathBuf,
        #[arg(long, default_value_t = 2011)]
        seed: u64,
        /// Bookings to submit (default 2000; with --rate and --duration, rate × duration).
        #[arg(long)]
        bookings: Option<usize>,
        /// Open loop: Poisson arrivals at this many bookings a second over all bureaus.
        #[arg(long)]
        rate: Option<f64>,
        /// Open loop in steps to find the knee: START:STEP:MAX:SECS, e.g. 50:50:400:5 offers
        /// 50/s, then 100/s, ... up to 400/s, 5 s each (the bookings follow from the profile).
        #[arg(long, conflicts_with_all = ["rate", "bookings"])]
        ramp: Option<String>,
        /// With --rate: run this many seconds.
        #[arg(long, requires = "rate")]
        duration: Option<f64>,
        /// Closed loop (without --rate): submissions in flight per bureau.
        #[arg(long, default_value_t = 8, conflicts_with = "rate")]
        concurrency: usize,
        /// Tag inserted into every TCN so runs never collide (default: from the clock).
        #[arg(long)]
        run_tag: Option<String>,
        /// Seconds to wait for all answers after the last receipt.
        #[arg(long, default_value_t = 180)]
        settle_secs: u64,
        /// Bookings follow the world's planted profiling in up to this many jurisdictions (the
        /// review then runs over everything the gateway holds for those months).
        #[arg(long, default_value_t = 0)]
        plant_outliers: usize,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also write a self-contained HTML report with charts here.
        #[arg(long)]
        html: Option<PathBuf>,
        /// Write each closed quarter's DOJ assessment (JSON and HTML) into this directory.
        #[arg(long)]
        doj: Option<PathBuf>,
        /// How bureaus submit: unary (Submit), stream (SubmitStream) or mixed (half the states
        /// each).
        #[arg(long, value_enum, default_value = "mixed")]
        submit: state_bureau_sim::demo::SubmitMode,
        /// Change policy mid-run: decline:STATE (the state ends its agreement and chooses not to
        /// receive the identifications; opt-out:STATE is read too) or
        /// activate:JURISDICTION; repeatable. Every booking is checked against the policy in
        /// force when it was processed; the policy is put back at the end.
        #[arg(long = "change", value_name = "CHANGE")]
        changes: Vec<String>,
        /// Share of the bookings receipted before the changes are made.
        #[arg(long, default_value_t = 0.5)]
        change_at: f64,
    },
    /// Hours at a steady open-loop rate against one gateway and data directory, every window
    /// verified, with latency, memory, descriptors, disk and store writes per window (a
    /// gateway started here as a child process unless --target is given).
    Soak {
        /// Holds the world, PKI, the child gateway's data and log, and each window's report.
        #[arg(long, default_value = "soak")]
        dir: PathBuf,
        /// Drive a gateway running elsewhere instead (with --pki and --world).
        #[arg(long, requires_all = ["pki", "world"])]
        target: Option<String>,
        /// With --target: its /metrics address (host:port), for its memory and store figures.
        #[arg(long, requires = "target")]
        metrics: Option<String>,
        #[arg(long)]
        pki: Option<PathBuf>,
        #[arg(long)]
        world: Option<PathBuf>,
        #[arg(long, default_value_t = 2011)]
        seed: u64,
        /// Size of the world generated when --dir holds none.
        #[arg(long, default_value_t = 5_000)]
        identities: u64,
        /// How long to soak.
        #[arg(long, default_value_t = 1.0)]
        hours: f64,
        /// Minutes per window (one verified run each).
        #[arg(long, default_value_t = 5.0)]
        window_mins: f64,
        /// Bookings a second (default: half the knee, measured first by a ramp).
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// The gateway's CPU per booking beside its searches' CPU in the matcher alone: the same
    /// galleries and bookings, in one run.
    Cost {
        /// World directory (from `generate`), with its index snapshots (`startup` makes them).
        #[arg(long)]
        world: PathBuf,
        /// Holds the PKI, the gateway's data directory and log, and the run's report.
        #[arg(long, default_value = "cost")]
        dir: PathBuf,
        #[arg(long, default_value_t = 2011)]
        seed: u64,
        #[arg(long, default_value_t = 1_600)]
        bookings: usize,
        /// Bookings a second offered to the gateway (open loop).
        #[arg(long, default_value_t = 40.0)]
        rate: f64,
        /// Shards per gallery, as the gateway's --shards.
        #[arg(long, default_value_t = 4)]
        shards: usize,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Time the gateway's start-up on a world and measure its memory once it serves: a first
    /// start that builds the galleries' indexes (and saves their snapshots), then starts that
    /// read the snapshots.
    Startup {
        /// World directory (from `generate`); its index snapshots are removed first.
        #[arg(long)]
        world: PathBuf,
        /// Holds the PKI, each start's data directory and log.
        #[arg(long, default_value = "startup")]
        dir: PathBuf,
        /// Starts in all, the first building the indexes.
        #[arg(long, default_value_t = 3)]
        starts: usize,
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Start nats-server, gateway replicas on its JetStream log, and matcher shard processes
    /// on loopback; print how to drive them; stop them all on Ctrl-C.
    Up {
        /// Holds the world, PKI, JetStream files and each process's log.
        #[arg(long, default_value = "cluster")]
        dir: PathBuf,
        #[arg(long, default_value_t = 2)]
        gateways: usize,
        /// Matcher shards (IDENT split by subject id).
        #[arg(long, default_value_t = 2)]
        shards: u64,
        /// Processes per shard (failover).
        #[arg(long, default_value_t = 2)]
        shard_replicas: usize,
        /// World generated when DIR/world is missing.
        #[arg(long, default_value_t = 2011)]
        seed: u64,
        #[arg(long, default_value_t = 5_000)]
        identities: u64,
        /// NATS listens here, gateways on the next ports, matchers after them.
        #[arg(long, default_value_t = 4222)]
        base_port: u16,
        /// How long a silent gateway's unfinished work waits before another takes it over.
        #[arg(long, default_value_t = 10_000)]
        stale_ms: u64,
        /// Log entries between two snapshots of a gateway's view, behind which the log is
        /// trimmed (0: never; default: the store's, 100,000).
        #[arg(long)]
        snapshot_entries: Option<u64>,
    },
    /// The same verified closed-loop run against several cluster shapes on this machine,
    /// beside the single-process baseline: throughput, p99s and CPU per booking by role.
    Bench {
        #[arg(long, default_value = "target/cluster-bench")]
        dir: PathBuf,
        #[arg(long, default_value_t = 5_000)]
        identities: u64,
        /// Bookings per shape.
        #[arg(long, default_value_t = 600)]
        bookings: usize,
        /// Submissions in flight per bureau.
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
        /// Shapes on JetStream as GATEWAYSxSHARDS, comma-separated.
        #[arg(long, default_value = "1x1,1x2,1x4,2x2,2x4")]
        shapes: String,
        /// Also measure each shape's fairness: a quiet bureau at this rate alone, then beside
        /// a bureau flooding at ten times it.
        #[arg(long)]
        fairness_rate: Option<f64>,
        /// Seconds of each fairness phase.
        #[arg(long, default_value_t = 8.0)]
        fairness_seconds: f64,
        /// Run the gateways and matchers from this build of state-bureau-sim instead of this
        /// one (an A/B of two builds; the driver stays this one).
        #[arg(long)]
        exe: Option<PathBuf>,
        #[arg(long, default_value = "bench/results/cluster-bench.json")]
        json: PathBuf,
    },
}

/// Parses `START:STEP:MAX:SECS`.
fn parse_ramp(s: &str) -> anyhow::Result<Arrival> {
    let parts: Vec<f64> = s
        .split(':')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("--ramp {s:?}: expected START:STEP:MAX:SECS, all numbers"))?;
    let [start, step, max, step_secs] = parts[..] else {
        anyhow::bail!("--ramp {s:?}: expected four numbers START:STEP:MAX:SECS");
    };
    anyhow::ensure!(
        start > 0.0 && step >= 0.0 && max >= start && step_secs > 0.0,
        "--ramp {s:?}: START and SECS must be positive, STEP not negative, MAX at least START"
    );
    let a = Arrival::Steps {
        start,
        step,
        max,
        step_secs,
    };
    anyhow::ensure!(
        a.step_bookings().unwrap_or(0) <= 2_000_000,
        "--ramp {s:?}: more than 2,000,000 bookings"
    );
    Ok(a)
}

/// A run tag from the clock: `R` and the seconds since 2026 in base 36, then `-`.
/// Prints a benchmark's table and, if asked, writes its JSON.
fn print_and_write<T: std::fmt::Display + serde::Serialize>(
    figures: &T,
    json: Option<PathBuf>,
) -> anyhow::Result<()> {
    println!("{figures}");
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_vec_pretty(figures)?)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        println!("JSON written to {}", path.display());
    }
    Ok(())
}

fn clock_tag() -> String {
    format!("R{}-", demo::clock_tag())
}

fn check_tag(tag: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        !tag.is_empty()
            && tag.len() <= 12
            && tag
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()),
        "--run-tag must be 1 to 12 characters of A-Z and 0-9"
    );
    Ok(format!("{tag}-"))
}

fn main() -> ExitCode {
    // The cluster's gateways and matchers are this program (see `cluster`): hand over to
    // their command lines before anything else is set up.
    let verb = std::env::args_os().nth(1);
    let rest = || std::env::args_os().skip(2);
    match verb.as_ref().and_then(|v| v.to_str()) {
        Some("gateway") => {
            return interop_gateway_cli::gateway::main_from(
                std::iter::once("interop-gateway".into()).chain(rest()),
            );
        }
        Some("matcher") => {
            return interop_gateway_cli::matcher::main_from(
                std::iter::once("interop-matcher".into()).chain(rest()),
            );
        }
        _ => {}
    }
    let cli = Cli::parse();
    interop_gateway_cli::logging::init(cli.log_format, "warn");
    interop_gateway::engines::slots::search_pool();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = match cli.cmd {
        Cmd::Generate {
            seed,
            identities,
            share_criminal,
            share_ident,
            plant_profiling,
            fbi_background,
            ident_background,
            out,
        } => {
            let t = std::time::Instant::now();
            let shares = state_bureau_sim::generate::Shares {
                criminal: share_criminal,
                ident: share_ident,
                profiling: plant_profiling,
            };
            state_bureau_sim::generate::generate_with(
                seed,
                identities,
                shares,
                state_bureau_sim::background::Background {
                    fbi: fbi_background,
                    ident: ident_background,
                },
                &out,
            )
            .map(|s| {
                println!("{s}");
                println!(
                    "world written to {} in {:.1} s",
                    out.display(),
                    t.elapsed().as_secs_f64()
                );
                true
            })
        }
        Cmd::Bookings {
            world,
            seed,
            count,
            state,
            run_tag,
            out,
        } => (|| {
            let tag = run_tag.as_deref().map(check_tag).transpose()?;
            let n = state_bureau_sim::bookings::write_planned(
                &world,
                seed,
                count,
                state.as_deref(),
                tag.as_deref(),
                &out,
            )?;
            eprintln!("{n} bookings written");
            Ok(true)
        })(),
        Cmd::Bench {
            seed,
            identities,
            seconds,
            concurrency,
            e2e_max_rate,
            e2e_step_secs,
            quiet_rate,
            world,
            json,
        } => (|| {
            anyhow::ensure!(
                seconds > 0.0 && e2e_step_secs > 0.0,
                "durations must be positive"
            );
            anyhow::ensure!(concurrency > 0, "--concurrency must be at least 1");
            anyhow::ensure!(e2e_max_rate > 0.0, "--e2e-max-rate must be positive");
            anyhow::ensure!(
                quiet_rate.is_none_or(|r| r > 0.0),
                "--quiet-rate must be positive"
            );
            rt.block_on(state_bureau_sim::bench::run(
                state_bureau_sim::bench::BenchOptions {
                    seed,
                    identities,
                    seconds,
                    concurrency,
                    e2e_max_rate,
                    e2e_step_secs,
                    quiet_rate,
                    world,
                    json,
                },
            ))
            .map(|()| true)
        })(),
        Cmd::Demo {
            seed,
            identities,
            bookings,
            dir,
            json,
            html,
            doj,
            shards,
            plant_outliers,
        } => rt
            .block_on(demo::run(DemoOptions {
                seed,
                identities,
                bookings,
                dir,
                json,
                html,
                doj,
                shards,
                plant_outliers,
                ..Default::default()
            }))
            .map(|v| v.passed()),
        Cmd::Cluster {
            cmd:
                ClusterCmd::Up {
                    dir,
                    gateways,
                    shards,
                    shard_replicas,
                    seed,
                    identities,
                    base_port,
                    stale_ms,
                    snapshot_entries,
                },
        } => (|| {
            let o = state_bureau_sim::cluster::ClusterOptions {
                dir,
                gateways,
                shards,
                shard_replicas,
                seed,
                identities,
                base_port,
                stale_ms,
                snapshot_entries,
                ..Default::default()
            };
            let mut cluster = state_bureau_sim::cluster::Cluster::up(&o)?;
            println!("cluster up:");
            for p in &cluster.procs {
                println!(
                    "  {:<12} {}  (log: {}/logs/{}.log)",
                    p.name,
                    p.addr,
                    o.dir.display(),
                    p.name
                );
            }
            println!("\ndrive it (every answer verified):");
            println!(
                "  cargo run --release -p state-bureau-sim -- run --target {} --pki {} --world {} --rate 20 --duration 30",
                cluster.targets,
                cluster.pki.display(),
                cluster.world.display()
            );
            println!("\nCtrl-C (or SIGTERM) stops every process.");
            rt.block_on(async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                anyhow::Ok(())
            })?;
            cluster.down();
            Ok(true)
        })(),
        Cmd::Cluster {
            cmd:
                ClusterCmd::Bench {
                    dir,
                    identities,
                    bookings,
                    concurrency,
                    shapes,
                    fairness_rate,
                    fairness_seconds,
                    exe,
                    json,
                },
        } => (|| {
            let shapes = shapes
                .split(',')
                .map(|s| {
                    let (g, m) = s
                        .trim()
                        .split_once('x')
                        .ok_or_else(|| anyhow::anyhow!("--shapes: {s:?} is not GATEWAYSxSHARDS"))?;
                    anyhow::Ok((g.parse::<usize>()?, m.parse::<u64>()?))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            anyhow::ensure!(
                bookings > 0 && concurrency > 0,
                "--bookings and --concurrency must be at least 1"
            );
            anyhow::ensure!(
                fairness_rate.is_none_or(|r| r > 0.0) && fairness_seconds > 0.0,
                "--fairness-rate and --fairness-seconds must be positive"
            );
            if let Some(exe) = &exe {
                anyhow::ensure!(exe.is_file(), "--exe {}: no such program", exe.display());
            }
            let results = state_bureau_sim::cluster_bench::run(
                &state_bureau_sim::cluster_bench::BenchOptions {
                    dir,
                    identities,
                    bookings,
                    concurrency,
                    shapes,
                    fairness_rate,
                    fairness_seconds,
                    exe,
                    json: Some(json),
                },
            )?;
            Ok(results.iter().all(|r| r.passed))
        })(),
        Cmd::Cost {
            world,
            dir,
            seed,
            bookings,
            rate,
            shards,
            json,
        } => rt
            .block_on(state_bureau_sim::cost::cost(
                state_bureau_sim::cost::CostOptions {
                    world,
                    dir,
                    seed,
                    bookings,
                    rate,
                    shards,
                },
            ))
            .and_then(|c| {
                print_and_write(&c, json)?;
                Ok(c.verdict_passed)
            }),
        Cmd::Startup {
            world,
            dir,
            starts,
            json,
        } => rt
            .block_on(state_bureau_sim::startup::startup(
                state_bureau_sim::startup::StartupOptions { world, dir, starts },
            ))
            .and_then(|s| {
                print_and_write(&s, json)?;
                Ok(true)
            }),
        Cmd::Soak {
            dir,
            target,
            metrics,
            pki,
            world,
            seed,
            identities,
            hours,
            window_mins,
            rate,
            json,
            html,
        } => (|| {
            anyhow::ensure!(
                hours.is_finite() && hours > 0.0 && window_mins.is_finite() && window_mins > 0.0,
                "--hours and --window-mins must be positive numbers"
            );
            if let Some(r) = rate {
                anyhow::ensure!(r.is_finite() && r > 0.0, "--rate must be a positive number");
            }
            rt.block_on(state_bureau_sim::soak::soak(
                state_bureau_sim::soak::SoakOptions {
                    target,
                    metrics,
                    dir,
                    pki,
                    world,
                    seed,
                    identities,
                    duration: std::time::Duration::from_secs_f64(hours * 3600.0),
                    window: std::time::Duration::from_secs_f64(window_mins * 60.0),
                    rate,
                    json,
                    html,
                },
            ))
        })(),
        Cmd::Run {
            target,
            failover,
            pki,
            world,
            seed,
            bookings,
            rate,
            ramp,
            duration,
            concurrency,
            run_tag,
            settle_secs,
            plant_outliers,
            json,
            html,
            doj,
            changes,
            change_at,
            submit,
        } => (|| {
            let run_tag = match run_tag {
                Some(t) => check_tag(&t)?,
                None => clock_tag(),
            };
            if let Some(r) = rate {
                anyhow::ensure!(r.is_finite() && r > 0.0, "--rate must be a positive number");
            }
            let ramp = ramp.as_deref().map(parse_ramp).transpose()?;
            let changes = changes
                .iter()
                .map(|c| state_bureau_sim::changes::PolicyChange::parse(c))
                .collect::<anyhow::Result<Vec<_>>>()?;
            anyhow::ensure!(
                (0.0..=1.0).contains(&change_at),
                "--change-at must be between 0 and 1"
            );
            let bookings = match (bookings, rate, duration) {
                _ if ramp.is_some() => ramp.and_then(|r| r.step_bookings()).unwrap_or(1),
                (Some(n), _, _) => n,
                (None, Some(r), Some(d)) => (r * d).round().max(1.0) as usize,
                _ => 2_000,
            };
            anyhow::ensure!(bookings > 0, "--bookings must be at least 1");
            anyhow::ensure!(concurrency > 0, "--concurrency must be at least 1");
            let arrival = match (ramp, rate) {
                (Some(r), _) => r,
                (None, Some(rate)) => Arrival::Poisson { rate },
                (None, None) => Arrival::Closed {
                    per_bureau_inflight: concurrency,
                },
            };
            rt.block_on(demo::run_remote(RunOptions {
                target,
                pki,
                world,
                demo: DemoOptions {
                    seed,
                    bookings,
                    json,
                    html,
                    doj,
                    plant_outliers,
                    arrival,
                    changes,
                    change_at,
                    submit,
                    failover,
                    run_tag,
                    settle_timeout: std::time::Duration::from_secs(settle_secs),
                    ..Default::default()
                },
            }))
        })()
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
