//! A slow field office does not slow ingest or grow memory (issue: durability). Two runs in
//! one process, same load: bureaus submit as fast as they can (8 concurrent senders) to a
//! fresh gateway, (a) with no slow subscriber, (b) while the HOU field office reads one message
//! a second. Prints receipts/s of each and their ratio, the process's peak RSS in each run,
//! and checks that the slow office, once it speeds up, still gets every outcome in order.
//!
//! ```sh
//! cargo run --release -p interop-e2e --example slow_subscriber -- [BOOKINGS] [--json FILE]
//! ```

use interop_e2e::*;
use interop_proto::v1 as pb;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SENDERS: usize = 8;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

struct Run {
    receipts_per_s: f64,
    peak_rss_mib: f64,
    slow_read_during_ingest: usize,
    slow_total: usize,
}

async fn run(n: usize, slow: bool, tag: &'static str) -> Run {
    let gw = TestGateway::start().await;
    let peak = Arc::new(AtomicU64::new(rss_kib()));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let ingest_done = Arc::new(AtomicBool::new(false));
    let read = Arc::new(AtomicUsize::new(0));
    let slow_task = if slow {
        let (ingest_done, read) = (ingest_done.clone(), read.clone());
        let mut c = gw.office("HOU").await;
        Some(tokio::spawn(async move {
            let mut s = c
                .subscribe(pb::SubscribeRequest {
                    after_cursor: Some(0),
                    follow: true,
                })
                .await
                .expect("subscribe")
                .into_inner();
            let mut during = 0;
            let mut last = 0;
            while let Some(m) = s.message().await.expect("message") {
                assert_eq!(m.cursor, last + 1, "gap or reorder in the slow stream");
                last = m.cursor;
                if read.fetch_add(1, Ordering::Relaxed) + 1 == n {
                    break;
                }
                if !ingest_done.load(Ordering::Relaxed) {
                    during += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            during
        }))
    } else {
        None
    };
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut senders = vec![];
    for _ in 0..SENDERS {
        let next = next.clone();
        let bureau = gw.bureau("TX").await;
        senders.push(tokio::spawn(async move {
            let mut b = bureau;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let tcn = format!("TX-{tag}-{i:07}");
                b.submit(booking(&tcn, TX_RECEIVING, NOBODY))
                    .await
                    .expect("submit");
            }
        }));
    }
    for s in senders {
        s.await.expect("sender");
    }
    let receipts_per_s = n as f64 / started.elapsed().as_secs_f64();
    ingest_done.store(true, Ordering::Relaxed);
    let slow_read_during_ingest = match slow_task {
        Some(t) => tokio::time::timeout(Duration::from_secs(600), t)
            .await
            .expect("the slow office caught up")
            .expect("slow task"),
        None => 0,
    };
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    Run {
        receipts_per_s,
        peak_rss_mib: peak.load(Ordering::Relaxed) as f64 / 1024.0,
        slow_read_during_ingest,
        slow_total: read.load(Ordering::Relaxed),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args
        .iter()
        .find(|a| !a.starts_with("--") && a.parse::<usize>().is_ok())
        .map(|a| a.parse().unwrap())
        .unwrap_or(3000);
    let json = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1).cloned());
    let base = run(n, false, "BASE").await;
    let slow = run(n, true, "SLOW").await;
    let ratio = slow.receipts_per_s / base.receipts_per_s;
    println!(
        "slow subscriber: {n} bookings, {SENDERS} concurrent senders, in-process gateway over mTLS"
    );
    println!(
        "  {:<32} {:>12} {:>14}",
        "run", "receipts/s", "peak RSS MiB"
    );
    println!(
        "  {:<32} {:>12.0} {:>14.1}",
        "no slow subscriber", base.receipts_per_s, base.peak_rss_mib
    );
    println!(
        "  {:<32} {:>12.0} {:>14.1}",
        "HOU reading 1 message/s", slow.receipts_per_s, slow.peak_rss_mib
    );
    println!(
        "  ingest with the slow office = {:.2}x without; it read {} during ingest and {} of {n} in all, in order",
        ratio, slow.slow_read_during_ingest, slow.slow_total
    );
    assert_eq!(slow.slow_total, n, "the slow office missed outcomes");
    if let Some(path) = json {
        let body = format!(
            "{{\"bookings\":{n},\"senders\":{SENDERS},\"baseline_receipts_per_s\":{:.1},\"slow_receipts_per_s\":{:.1},\"ratio\":{ratio:.3},\"baseline_peak_rss_mib\":{:.1},\"slow_peak_rss_mib\":{:.1},\"slow_read_during_ingest\":{},\"slow_received\":{}}}\n",
            base.receipts_per_s,
            slow.receipts_per_s,
            base.peak_rss_mib,
            slow.peak_rss_mib,
            slow.slow_read_during_ingest,
            slow.slow_total
        );
        std::fs::write(&path, body).expect("write json");
        println!("  figures written to {path}");
    }
}
