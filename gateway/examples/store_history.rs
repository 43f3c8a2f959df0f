//! Cost that follows new work, not history (DESIGN.md §3.9): the embedded store's operations
//! timed side by side on stores that differ only in how much history they hold, with the ratio
//! of each size to the first.
//!
//! ```sh
//! cargo run --release -p interop-gateway --example store_history -- --json target/store-history.json
//! cargo run --release -p interop-gateway --example store_history -- --sizes 10000,10000000
//! ```
//!
//! Each store is filled with N history events (one completion carries 1,000, spread over 8
//! field-office and 8 bureau streams; the seven other offices acknowledge their heads after
//! each, as followers do) and N disclosure records, plus the same fixed work in every store:
//! the retention windows measured below, at the front of the measured streams. Then, on one
//! office stream and one bureau stream, `--trials` times each:
//!
//! - **append**: accept + complete one submission (an office and a bureau event);
//! - **read 256 near head**: a batch of 256 from a cursor just behind the head;
//! - **record 256 disclosures**: one delivery batch's audit;
//! - **ack**: an office acknowledging one more event;
//! - **resume**: a follower's restart, its acknowledged cursor then a batch from it;
//!
//! and, `--windows` times each, the retention of one window of `--window` old items amid the
//! history: **compact** (acknowledged office events), **expire** (bureau events by age) and
//! **archive** (disclosure records written to a synced segment, then pruned).
//!
//! The store files go under `--dir` (default `target/store-history`, a real disk: commits are
//! fsync'd), removed after each size unless `--keep`.

use clap::Parser;
use hdrhistogram::Histogram;
use interop_gateway::store::{
    Completion, Disclosure, DisclosureKind, DynStore, RedbStore, StreamKey, SubmissionKey,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// History sizes, stored events (and as many disclosure records); ratios are to the first.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000u64, 1_000_000])]
    sizes: Vec<u64>,
    /// Samples of each per-operation measurement.
    #[arg(long, default_value_t = 200)]
    trials: usize,
    /// Retention windows measured (each removes `--window` items).
    #[arg(long, default_value_t = 20)]
    windows: usize,
    /// Items in one retention window.
    #[arg(long, default_value_t = 250)]
    window: usize,
    /// Where the store files go (must be a real disk).
    #[arg(long, default_value = "target/store-history")]
    dir: PathBuf,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep each store's directory (`--dir`/nN) after measuring, e.g. to profile it.
    #[arg(long)]
    keep: bool,
}

const OFFICES: usize = 8;
const BUREAUS: usize = 8;
const PER_COMPLETION: usize = 1_000;
const EVENT_BYTES: usize = 300;
/// `expire`'s clock in the measured calls: after every window's stamp.
const LATER: i64 = 1_000_000_000_000;

const OPS: [&str; 8] = [
    "append",
    "read 256 near head",
    "record 256 disclosures",
    "ack",
    "resume",
    "compact window",
    "expire window",
    "archive window",
];

fn office(i: usize) -> StreamKey {
    StreamKey::Office(format!("O{i}"))
}

fn bureau(i: usize) -> StreamKey {
    StreamKey::Bureau(format!("B{i}"))
}

fn now_ms() -> i64 {
    interop_gateway::convert::now_ms()
}

fn event(n: u64) -> Vec<u8> {
    (0..EVENT_BYTES)
        .map(|i| (n as usize * 31 + i * 7) as u8)
        .collect()
}

fn disclosure(n: u64, at_ms: i64) -> Disclosure {
    Disclosure {
        at_ms,
        recipient: format!("spiffe://interop.local/field-office/O{}", n % 16),
        serial: "5c2f09".into(),
        rpc: "interop.v1.FieldOfficeService/Subscribe".into(),
        state: "TX".into(),
        tcn: format!("TX2011{n:010}"),
        kind: DisclosureKind::IdentOutcome,
        cursor: n,
    }
}

/// The submission counter: every accept needs a fresh TCN.
struct Tcns(u64);

impl Tcns {
    async fn complete(
        &mut self,
        s: &DynStore,
        events: Vec<(StreamKey, Vec<u8>)>,
    ) -> anyhow::Result<()> {
        self.0 += 1;
        let key = SubmissionKey {
            bureau: "TX".into(),
            tcn: format!("TX-HIST-{:010}", self.0),
        };
        s.accept(key.clone(), self.0.to_le_bytes().to_vec(), 0)
            .await?;
        let c = Completion {
            events,
            counters: vec![("bench".into(), 1)],
            summary: None,
        };
        anyhow::ensure!(s.complete(key, c).await?, "completed once");
        Ok(())
    }
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64
}

struct Run {
    n: u64,
    fill_s: f64,
    file_bytes: u64,
    events_kept: u64,
    disclosures_kept: u64,
    hists: BTreeMap<&'static str, Histogram<u64>>,
}

async fn run(n: u64, args: &Args) -> anyhow::Result<Run> {
    let dir = args.dir.join(format!("n{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    let s: DynStore = Arc::new(RedbStore::open(&dir)?);
    let mut tcns = Tcns(0);
    let (o, b) = (office(0), bureau(0));
    let (windows, w) = (args.windows, args.window);
    let started = Instant::now();

    // The windows first, at the front of the measured streams, with what marks them old: an
    // acknowledgement each (cut-offs between them recorded), an append stamp each (at the
    // clock values 1, 2, ...), and disclosure records delivered at 1, 2, ...
    let mut ack_cutoffs = Vec::new();
    for i in 0..windows {
        let events = (0..w).map(|k| (o.clone(), event(k as u64))).collect();
        tcns.complete(&s, events).await?;
        s.ack(o.clone(), ((i + 1) * w) as u64).await?;
        ack_cutoffs.push(now_ms() + 1);
        tokio::time::sleep(Duration::from_millis(3)).await;
        let events = (0..w).map(|k| (b.clone(), event(k as u64))).collect();
        tcns.complete(&s, events).await?;
        s.expire(0, i as i64 + 1).await?;
        let records = (0..w as u64).map(|k| disclosure(k, i as i64 + 1)).collect();
        s.record_disclosures(records).await?;
    }
    tokio::time::sleep(Duration::from_millis(3)).await;

    // The history: N events over 16 streams, the other offices acknowledging as they go, and
    // N disclosure records delivered now.
    let mut appended = 0u64;
    while appended < n {
        let len = PER_COMPLETION.min((n - appended) as usize);
        let events = (0..len)
            .map(|k| {
                let j = appended as usize + k;
                let stream = match j % (OFFICES + BUREAUS) {
                    x if x < OFFICES => office(x),
                    x => bureau(x - OFFICES),
                };
                (stream, event(j as u64))
            })
            .collect();
        tcns.complete(&s, events).await?;
        let acks = (1..OFFICES).map(|i| {
            let s = s.clone();
            async move {
                let head = *s.watch_head(&office(i)).borrow();
                s.ack(office(i), head).await
            }
        });
        for r in all_at_once(acks).await {
            r?;
        }
        let at = now_ms();
        let records = (0..len as u64)
            .map(|k| disclosure(appended + k, at))
            .collect();
        s.record_disclosures(records).await?;
        appended += len as u64;
    }
    let fill_s = started.elapsed().as_secs_f64();
    let before = s.usage().await?;

    let mut hists: BTreeMap<&'static str, Histogram<u64>> = OPS
        .iter()
        .map(|op| (*op, Histogram::new(3).expect("histogram")))
        .collect();
    let mut record = |op: &'static str, t: Instant| {
        let us = t.elapsed().as_micros().max(1) as u64;
        hists.get_mut(op).expect("listed").record(us)
    };

    for i in 0..args.trials as u64 {
        let events = vec![(o.clone(), event(i)), (b.clone(), event(i))];
        let t = Instant::now();
        tcns.complete(&s, events).await?;
        record("append", t)?;
    }

    let head = *s.watch_head(&o).borrow();
    for i in 0..args.trials as u64 {
        let t = Instant::now();
        let got = s.read(o.clone(), head - 256 - i % 64, 256).await?;
        record("read 256 near head", t)?;
        anyhow::ensure!(got.len() == 256, "a full batch");
    }

    for i in 0..args.trials as u64 {
        let at = now_ms();
        let records = (0..256).map(|k| disclosure(i * 256 + k, at)).collect();
        let t = Instant::now();
        s.record_disclosures(records).await?;
        record("record 256 disclosures", t)?;
    }

    let first_ack = head - args.trials as u64 - 1;
    for i in 0..args.trials as u64 {
        let t = Instant::now();
        s.ack(o.clone(), first_ack + i).await?;
        record("ack", t)?;
    }

    for _ in 0..args.trials {
        let t = Instant::now();
        let acked = s.acked(o.clone()).await?;
        let got = s.read(o.clone(), acked, 256).await?;
        record("resume", t)?;
        anyhow::ensure!(!got.is_empty(), "something after the acknowledged cursor");
    }

    for (i, cutoff) in ack_cutoffs.iter().enumerate() {
        let t = Instant::now();
        let removed = s.compact(*cutoff).await?;
        record("compact window", t)?;
        anyhow::ensure!(removed == w as u64, "compact window {i}: {removed} removed");
        let before = i as i64 + 2;
        let t = Instant::now();
        let removed = s.expire(before, LATER).await?;
        record("expire window", t)?;
        anyhow::ensure!(removed == w as u64, "expire window {i}: {removed} removed");
        let t = Instant::now();
        let a = s.archive_disclosures(before).await?;
        record("archive window", t)?;
        let pruned = a.map_or(0, |a| a.pruned);
        anyhow::ensure!(pruned == w as u64, "archive window {i}: {pruned} pruned");
    }

    drop(s);
    tokio::time::sleep(Duration::from_millis(200)).await;
    match args.keep {
        // The writer thread closes the file after the last handle goes: give a large file
        // time to close cleanly, or the next open repairs it (walks every page).
        true => tokio::time::sleep(Duration::from_secs(5)).await,
        false => {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    Ok(Run {
        n,
        fill_s,
        file_bytes: before.file_bytes.unwrap_or(0),
        events_kept: before.office_events_kept + before.bureau_events_kept,
        disclosures_kept: before.disclosures_kept,
        hists,
    })
}

/// Runs the futures at once (so the writer commits them together), answers in order.
async fn all_at_once<F>(fs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(!args.sizes.is_empty(), "--sizes: at least one");
    anyhow::ensure!(args.trials >= 1 && args.windows >= 1 && args.window >= 1);
    let mut runs = Vec::new();
    for &n in &args.sizes {
        println!("filling a store with {n} history events and {n} disclosure records ...");
        let r = run(n, &args).await?;
        println!(
            "  filled in {:.1} s: {} events and {} disclosure records kept, file {:.1} MB",
            r.fill_s,
            r.events_kept,
            r.disclosures_kept,
            r.file_bytes as f64 / 1e6
        );
        runs.push(r);
    }
    let base = &runs[0];
    print!("\n  {:<24}", "operation (µs)");
    for r in &runs {
        print!(
            " {:>11} {:>11}",
            format!("p50 {}", short(r.n)),
            format!("p99 {}", short(r.n))
        );
    }
    for r in &runs[1..] {
        print!(
            " {:>13} {:>13}",
            format!("p50 {}/{}", short(r.n), short(base.n)),
            "p99 ratio"
        );
    }
    println!();
    for op in OPS {
        print!("  {op:<24}");
        for r in &runs {
            let h = &r.hists[op];
            print!(" {:>11.0} {:>11.0}", us(h, 0.5), us(h, 0.99));
        }
        for r in &runs[1..] {
            let (h, b) = (&r.hists[op], &base.hists[op]);
            print!(
                " {:>13.2} {:>13.2}",
                us(h, 0.5) / us(b, 0.5),
                us(h, 0.99) / us(b, 0.99)
            );
        }
        println!();
    }
    println!(
        "  ({} trials each; retention: {} windows of {} items)",
        args.trials, args.windows, args.window
    );
    if let Some(path) = &args.json {
        let sizes: Vec<serde_json::Value> = runs
            .iter()
            .map(|r| {
                let ops: serde_json::Map<String, serde_json::Value> = OPS
                    .iter()
                    .map(|op| {
                        let (h, b) = (&r.hists[*op], &base.hists[*op]);
                        let v = serde_json::json!({
                            "p50_us": us(h, 0.5),
                            "p99_us": us(h, 0.99),
                            "max_us": h.max(),
                            "samples": h.len(),
                            "p50_ratio_to_first": us(h, 0.5) / us(b, 0.5),
                            "p99_ratio_to_first": us(h, 0.99) / us(b, 0.99),
                        });
                        (op.to_string(), v)
                    })
                    .collect();
                serde_json::json!({
                    "history_events": r.n,
                    "fill_seconds": r.fill_s,
                    "file_bytes": r.file_bytes,
                    "events_kept": r.events_kept,
                    "disclosures_kept": r.disclosures_kept,
                    "operations": ops,
                })
            })
            .collect();
        let json = serde_json::json!({
            "trials": args.trials,
            "windows": args.windows,
            "window": args.window,
            "event_bytes": EVENT_BYTES,
            "sizes": sizes,
        });
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
        println!("  figures written to {}", path.display());
    }
    Ok(())
}

fn short(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}
