//! Durable ingest, side by side in one run: receipts per second and receipt latency of the
//! embedded store with group commit (what the gateway uses), with one fsync per submission,
//! and with no fsync at all (not durable: the ceiling). Many concurrent bureaus each submit a
//! realistic encoded tenprint booking and wait for its durable receipt.
//!
//! ```sh
//! cargo run --release -p interop-gateway --example ingest_bench -- --json target/ingest.json
//! ```
//!
//! The store files go under `--dir` (default `target/ingest-bench`, on the same disk as the
//! build), never a tmpfs, so the fsync cost is real.
//!
//! With `--nats nats://HOST:PORT` (a running `nats-server -js`) the same load also goes to the
//! replicated JetStream store, once through one gateway replica and once split over two
//! replicas that both apply the whole log.

use clap::Parser;
use hdrhistogram::Histogram;
use interop_gateway::convert;
use interop_gateway::store::{
    CommitMode, DEFAULT_CACHE_BYTES, DynStore, NatsOptions, NatsStore, RedbStore, SubmissionKey,
};
use interop_matcher::synth;
use interop_proto::v1 as pb;
use prost::Message;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// Submissions per mode (group commit and no sync).
    #[arg(long, default_value_t = 5000)]
    submissions: usize,
    /// Submissions with one fsync each (slow by design, so fewer).
    #[arg(long, default_value_t = 1000)]
    per_op_submissions: usize,
    /// Concurrent submitters.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Where the store files go (must be a real disk).
    #[arg(long, default_value = "target/ingest-bench")]
    dir: PathBuf,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A running `nats-server -js` (e.g. nats://127.0.0.1:4222): also measure the JetStream
    /// store.
    #[arg(long)]
    nats: Option<String>,
}

struct Figures {
    mode: &'static str,
    submissions: usize,
    per_s: f64,
    hist: Histogram<u64>,
}

async fn run(
    mode: CommitMode,
    name: &'static str,
    n: usize,
    args: &Args,
    payload: &[u8],
) -> anyhow::Result<Figures> {
    let dir = args.dir.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let store: DynStore = Arc::new(RedbStore::open_with(&dir, mode, DEFAULT_CACHE_BYTES)?);
    let f = load(vec![store], name, n, args, payload).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(f)
}

/// `n` accepts from `args.concurrency` submitters, spread over `stores` (replicas of one
/// store, or just one).
async fn load(
    stores: Vec<DynStore>,
    name: &'static str,
    n: usize,
    args: &Args,
    payload: &[u8],
) -> anyhow::Result<Figures> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = vec![];
    for c in 0..args.concurrency {
        let store = stores[c % stores.len()].clone();
        let (next, payload) = (next.clone(), payload.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(h);
                }
                let key = SubmissionKey {
                    bureau: "TX".into(),
                    tcn: format!("TX-BENCH-{i:08}"),
                };
                let t = Instant::now();
                store.accept(key, payload.clone(), 0).await?;
                h.record(t.elapsed().as_micros() as u64)?;
            }
        }));
    }
    let mut hist = Histogram::<u64>::new(3)?;
    for t in tasks {
        hist.add(t.await??)?;
    }
    let per_s = n as f64 / started.elapsed().as_secs_f64();
    Ok(Figures {
        mode: name,
        submissions: n,
        per_s,
        hist,
    })
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let prints = synth::capture(
        &synth::master_tenprint(1, 1),
        &synth::CaptureModel::default(),
        1,
    );
    let payload = pb::Submission {
        tcn: "TX-BENCH-00000000".into(),
        ori: "TX2010100".into(),
        jurisdiction_id: "TX201".into(),
        fingers: convert::tenprint_to_pb(&prints),
        ..Default::default()
    }
    .encode_to_vec();
    println!(
        "durable ingest: {} concurrent submitters, {} byte submissions, store under {}",
        args.concurrency,
        payload.len(),
        args.dir.display()
    );
    let mut all = vec![
        run(
            CommitMode::Group,
            "group_commit",
            args.submissions,
            &args,
            &payload,
        )
        .await?,
        run(
            CommitMode::PerOp,
            "sync_per_submission",
            args.per_op_submissions,
            &args,
            &payload,
        )
        .await?,
        run(
            CommitMode::NoSync,
            "no_sync",
            args.submissions,
            &args,
            &payload,
        )
        .await?,
    ];
    if let Some(url) = &args.nats {
        // A fresh stream per run, so nothing earlier is replayed.
        let stream = format!("INGEST{}", std::process::id());
        let open = |replica: &str| {
            // A benchmark against a server of one's own: plaintext is what is asked for.
            let insecure = if url.starts_with("nats://") {
                "&insecure=true"
            } else {
                ""
            };
            let spec = format!("{url}/{stream}?replica={replica}{insecure}");
            async move {
                anyhow::Ok(
                    Arc::new(NatsStore::connect(NatsOptions::parse(&spec)?).await?) as DynStore,
                )
            }
        };
        let one = open("bench-a").await?;
        all.push(
            load(
                vec![one.clone()],
                "jetstream_1_replica",
                args.submissions,
                &args,
                &payload,
            )
            .await?,
        );
        let two = open("bench-b").await?;
        all.push(
            load(
                vec![one, two],
                "jetstream_2_replicas",
                args.submissions,
                &args,
                &payload,
            )
            .await?,
        );
    }
    println!(
        "  {:<22} {:>11} {:>12} {:>9} {:>9} {:>9}",
        "mode", "submissions", "receipts/s", "p50 ms", "p99 ms", "max ms"
    );
    for f in &all {
        println!(
            "  {:<22} {:>11} {:>12.0} {:>9.2} {:>9.2} {:>9.2}",
            f.mode,
            f.submissions,
            f.per_s,
            ms(&f.hist, 0.5),
            ms(&f.hist, 0.99),
            f.hist.max() as f64 / 1000.0
        );
    }
    let (group, per_op, none) = (&all[0], &all[1], &all[2]);
    println!(
        "  group commit = {:.1}x one sync per submission, {:.2}x no sync",
        group.per_s / per_op.per_s,
        group.per_s / none.per_s
    );
    if let Some(path) = &args.json {
        let modes: serde_json::Map<String, serde_json::Value> = all
            .iter()
            .map(|f| {
                (
                    f.mode.to_string(),
                    serde_json::json!({
                        "submissions": f.submissions,
                        "receipts_per_s": f.per_s,
                        "p50_ms": ms(&f.hist, 0.5),
                        "p99_ms": ms(&f.hist, 0.99),
                        "max_ms": f.hist.max() as f64 / 1000.0,
                    }),
                )
            })
            .collect();
        let json = serde_json::json!({
            "concurrency": args.concurrency,
            "payload_bytes": payload.len(),
            "modes": modes,
            "group_vs_sync_per_submission": group.per_s / per_op.per_s,
            "group_vs_no_sync": group.per_s / none.per_s,
        });
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
        println!("  figures written to {}", path.display());
    }
    Ok(())
}
