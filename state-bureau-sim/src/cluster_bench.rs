//! `state-bureau-sim cluster bench`: the same verified closed-loop run against several cluster
//! shapes on this machine, beside the single-process baseline (embedded store, matcher in
//! process) in the same run: throughput, p99s, and the CPU seconds each process spent per
//! booking, from which `BENCHMARKS.md` models what more machines would reach.
//!
//! Honest labelling: every process of every shape shares this machine's cores with the driver,
//! so more processes cannot add capacity here; what the figures show is each shape's overhead
//! (CPU per booking, by role) and whether it still answers everything correctly.
//!
//! With `--fairness-rate R`, each shape then also measures the fairness figure of
//! `state-bureau-sim bench` (`crate::fairness`): the busiest bureau floods at 10 R while the
//! next sends R, alone and then beside the flood, the flood's submissions to the first gateway
//! and the quiet bureau's to the last, so on JetStream what the quiet bureau waits for is
//! whatever the shared log hands out before its work. `--exe` runs the gateways and matchers
//! from another build of this program (the driver and the figures stay this one's): an A/B of
//! two builds on one machine.

use crate::bookings::{self, WorldData};
use crate::cluster::{Cluster, ClusterOptions};
use crate::demo::{self, Arrival, DemoOptions, RunOptions};
use crate::fairness::{self, Fairness};
use interop_gateway_cli::pki;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub dir: PathBuf,
    pub identities: u64,
    pub bookings: usize,
    /// Submissions in flight per bureau (closed loop).
    pub concurrency: usize,
    /// `(gateways, matcher shards)` shapes on JetStream, after the embedded baseline.
    pub shapes: Vec<(usize, u64)>,
    /// The fairness phase's quiet rate (`None`: no fairness phase).
    pub fairness_rate: Option<f64>,
    /// Seconds of each fairness phase.
    pub fairness_seconds: f64,
    /// The program run as gateways and matchers (`None`: this one).
    pub exe: Option<PathBuf>,
    pub json: Option<PathBuf>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            dir: PathBuf::from("target/cluster-bench"),
            identities: 5_000,
            bookings: 600,
            concurrency: 2,
            shapes: vec![(1, 1), (1, 2), (1, 4), (2, 2), (2, 4)],
            fairness_rate: None,
            fairness_seconds: 8.0,
            exe: None,
            json: None,
        }
    }
}

/// One shape's figures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ShapeResult {
    pub shape: String,
    pub gateways: usize,
    pub shards: u64,
    pub passed: bool,
    pub receipts_per_s: f64,
    pub end_to_end_per_s: f64,
    pub receipt_p99_ms: f64,
    pub notification_p50_ms: f64,
    pub notification_p99_ms: f64,
    /// CPU milliseconds per booking, by role (gateways, matchers, nats summed over processes).
    pub cpu_ms_per_booking: BTreeMap<String, f64>,
    /// With `--fairness-rate`: the quiet bureau alone and beside the flood.
    pub fairness: Option<Fairness>,
}

fn role(name: &str) -> String {
    name.split('-').next().unwrap_or(name).to_string()
}

fn f(v: &serde_json::Value, path: &[&str]) -> f64 {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_f64()
        .unwrap_or(f64::NAN)
}

/// Runs every shape in turn and prints a table; writes JSON if asked.
pub fn run(o: &BenchOptions) -> anyhow::Result<Vec<ShapeResult>> {
    let rt = tokio::runtime::Runtime::new()?;
    let mut shapes: Vec<(String, ClusterOptions)> = vec![(
        "embedded, 1 gateway, matcher in process (baseline)".into(),
        ClusterOptions {
            dir: o.dir.clone(),
            identities: o.identities,
            embedded: true,
            exe: o.exe.clone(),
            ..Default::default()
        },
    )];
    for (g, s) in &o.shapes {
        shapes.push((
            format!("JetStream, {g} gateway(s), {s} matcher shard process(es)"),
            ClusterOptions {
                dir: o.dir.clone(),
                identities: o.identities,
                gateways: *g,
                shards: *s,
                shard_replicas: 1,
                exe: o.exe.clone(),
                ..Default::default()
            },
        ));
    }
    let mut results = Vec::new();
    for (i, (label, co)) in shapes.iter().enumerate() {
        eprintln!("[{}/{}] {label}", i + 1, shapes.len());
        let cluster = Cluster::up(co)?;
        let before: BTreeMap<String, f64> = cluster.cpu_seconds().into_iter().collect();
        let report = o.dir.join(format!("run-{i}.json"));
        let t = Instant::now();
        let v = rt.block_on(demo::run_remote(RunOptions {
            target: cluster.targets.clone(),
            pki: cluster.pki.clone(),
            world: cluster.world.clone(),
            demo: DemoOptions {
                bookings: o.bookings,
                arrival: Arrival::Closed {
                    per_bureau_inflight: o.concurrency,
                },
                plant_outliers: 0,
                run_tag: format!("CB{i}-"),
                json: Some(report.clone()),
                ..Default::default()
            },
        }))?;
        let mut cpu: BTreeMap<String, f64> = BTreeMap::new();
        for (name, after) in cluster.cpu_seconds() {
            let used = after - before.get(&name).copied().unwrap_or(0.0);
            *cpu.entry(role(&name)).or_default() += used * 1000.0 / o.bookings as f64;
        }
        let fairness = match o.fairness_rate {
            Some(rate) => {
                eprintln!(
                    "    fairness: a quiet bureau at {rate:.1}/s alone, then beside a flood at {:.0}/s",
                    10.0 * rate
                );
                Some(rt.block_on(measure_fairness(&cluster, rate, o.fairness_seconds))?)
            }
            None => None,
        };
        drop(cluster);
        let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&report)?)?;
        let r = ShapeResult {
            shape: label.clone(),
            gateways: if co.embedded { 1 } else { co.gateways },
            shards: if co.embedded { 0 } else { co.shards },
            passed: v.passed(),
            receipts_per_s: f(&j, &["receipt_throughput_per_s"]),
            end_to_end_per_s: f(&j, &["end_to_end_throughput_per_s"]),
            receipt_p99_ms: f(&j, &["latency", "receipt", "p99_ms"]),
            notification_p50_ms: f(&j, &["latency", "field_office_notification", "p50_ms"]),
            notification_p99_ms: f(&j, &["latency", "field_office_notification", "p99_ms"]),
            cpu_ms_per_booking: cpu,
            fairness,
        };
        eprintln!(
            "    {:.1} s, {} — end to end {:.1}/s",
            t.elapsed().as_secs_f64(),
            if r.passed { "PASS" } else { "FAIL" },
            r.end_to_end_per_s
        );
        results.push(r);
    }
    print_table(&results, o);
    if let Some(path) = &o.json {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let base = results
            .first()
            .map(|r| r.end_to_end_per_s)
            .unwrap_or(f64::NAN);
        let out = serde_json::json!({
            "identities": o.identities,
            "bookings": o.bookings,
            "per_bureau_inflight": o.concurrency,
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "shapes": results,
            "end_to_end_ratio_to_baseline": results
                .iter()
                .map(|r| r.end_to_end_per_s / base)
                .collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&out)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(results)
}

/// The fairness figure against `cluster`: the flood's bookings to its first gateway, the quiet
/// bureau's to its last (the same one on a single gateway).
async fn measure_fairness(cluster: &Cluster, rate: f64, seconds: f64) -> anyhow::Result<Fairness> {
    let data = Arc::new(WorldData::load(&cluster.world)?);
    let pki = pki::init_or_keep(&cluster.pki, &data.world)?;
    let (from, days) = demo::booking_window();
    let pd = data.clone();
    let plan = tokio::task::spawn_blocking(move || {
        bookings::plan(&pd, 2011, 2_000, from, days, &Default::default())
    })
    .await?;
    let (flood_state, quiet_state) = fairness::pick_states(&plan)?;
    // A client for each of the two bureaus only, each at its gateway.
    let of = |state: &str| -> Vec<_> {
        plan.iter()
            .filter(|b| b.state == state)
            .take(1)
            .cloned()
            .collect()
    };
    let targets: Vec<&str> = cluster.targets.split(',').collect();
    let (first, last) = (targets[0], targets[targets.len() - 1]);
    let mut clients = crate::bench::clients_for(last, &pki, &of(&quiet_state)).await?;
    clients.extend(crate::bench::clients_for(first, &pki, &of(&flood_state)).await?);
    fairness::measure(&clients, &plan, rate, seconds).await
}

fn print_table(results: &[ShapeResult], o: &BenchOptions) {
    println!(
        "\ncluster bench: {} identities, {} bookings per shape, closed loop ({} in flight per bureau), {} cores shared by every process and the driver",
        o.identities,
        o.bookings,
        o.concurrency,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "{:<58} {:>6} {:>10} {:>8} {:>9} {:>9} {:>9}  cpu ms/booking",
        "shape", "checks", "e2e/s", "ratio", "rcpt p99", "note p50", "note p99"
    );
    let base = results
        .first()
        .map(|r| r.end_to_end_per_s)
        .unwrap_or(f64::NAN);
    for r in results {
        let cpu = r
            .cpu_ms_per_booking
            .iter()
            .map(|(k, v)| format!("{k} {v:.1}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "{:<58} {:>6} {:>10.1} {:>8.2} {:>9.1} {:>9.1} {:>9.1}  {cpu}",
            r.shape,
            if r.passed { "PASS" } else { "FAIL" },
            r.end_to_end_per_s,
            r.end_to_end_per_s / base,
            r.receipt_p99_ms,
            r.notification_p50_ms,
            r.notification_p99_ms
        );
    }
    if results.iter().any(|r| r.fairness.is_some()) {
        println!(
            "\nfairness: the quiet bureau's notification p99 alone, then beside a flood at ten times its rate (flood to the first gateway, quiet to the last)"
        );
        println!(
            "{:<58} {:>8} {:>10} {:>10} {:>8} {:>14}",
            "shape", "quiet/s", "alone p99", "flood p99", "ratio", "flood refused"
        );
        for r in results {
            if let Some(f) = &r.fairness {
                println!(
                    "{:<58} {:>8.1} {:>10.1} {:>10.1} {:>8.2} {:>14}",
                    r.shape,
                    f.quiet_per_s,
                    f.alone.p99_ms,
                    f.with_flood.p99_ms,
                    f.p99_ratio,
                    f.with_flood.flood_refused
                );
            }
        }
    }
}
