//! Overload: the gateway offered three times what it can process. Prints, per phase, the
//! offered and admitted rates, how many were shed (RESOURCE_EXHAUSTED/UNAVAILABLE) and how fast,
//! the p50/p99 receipt latency and p99 receipt→field-office-notification latency of admitted
//! submissions, the pipeline's queue, and the process's peak RSS; then checks that every
//! receipted submission reached its field office exactly once (nothing admitted is lost), and
//! writes JSON.
//!
//! Phases, one in-process gateway over mutual TLS (clients in the same process):
//! 1. **calibrate** — offer far more than can be processed (`--calibrate-rate`, 1000/s) for
//!    4 s; capacity C is the rate at which submissions complete (reach the field office)
//!    meanwhile, i.e. while the gateway is also busy refusing;
//! 2. **baseline** — open-loop arrivals at 0.5·C: the latencies of a gateway at ease;
//! 3. **3× capacity** — open-loop arrivals at 3·C;
//! 4. **recovery** — 0.5·C again, right after: how long until nothing is shed, the queue is
//!    empty and latency is back to the baseline's.
//!
//! The bottleneck is the real one: both 1:N searches (FBI and IDENT, exhaustive over the test
//! galleries) are CPU work, so processing saturates at tens of submissions a second while the
//! load generator (same process, same cores) needs little. `--ident-ms N` adds a fixed IDENT
//! service time with `--ident-parallel` slots, to model a remote matcher of known capacity.
//! The backlog budget and the workers are kept small (`--backlog-max` 72, `--workers` 8) as a
//! deployment with a latency target would set them: admitted work then waits at most about
//! backlog / capacity seconds. (The default budget, 100,000, is sized for the program's
//! volume: a backlog that drains in minutes, with receipts never waiting for it.)
//!
//! ```sh
//! cargo run --release -p interop-e2e --example overload -- [--seconds 10] [--backlog-max 72] \
//!     [--workers 8] [--calibrate-rate 1000] [--ident-ms 0] [--ident-parallel 4] [--json target/overload.json]
//! ```

use interop_e2e::*;
use interop_gateway::engines::{BackendError, IdentHit, IdentSearch};
use interop_gateway::server::ServeOptions;
use interop_matcher::Tenprint;
use interop_proto::v1 as pb;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::Code;

/// IDENT with a fixed service time and parallelism: a matcher of known capacity.
struct ThrottledIdent {
    inner: Arc<dyn IdentSearch>,
    slots: tokio::sync::Semaphore,
    service: Duration,
}

#[tonic::async_trait]
impl IdentSearch for ThrottledIdent {
    async fn search(&self, prints: Tenprint) -> Result<Option<IdentHit>, BackendError> {
        let _slot = self.slots.acquire().await.expect("semaphore");
        tokio::time::sleep(self.service).await;
        self.inner.search(prints).await
    }
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    percentile(sorted, p).unwrap_or(0.0)
}

#[derive(Default)]
struct Outcomes {
    /// Receipt latency (ms) of admitted submissions, by phase.
    admitted: Vec<f64>,
    /// Time to refusal (ms) of shed submissions.
    shed: Vec<f64>,
    other_errors: u64,
    /// Seconds since phase start of each shed (for recovery).
    shed_at: Vec<f64>,
}

/// Shared between the senders and the field-office reader.
struct Ledger {
    /// TCN → (phase, when submitted).
    submitted: Mutex<HashMap<String, (usize, Instant)>>,
    /// TCN → notifications received.
    notified: Mutex<HashMap<String, u32>>,
    /// Per phase: receipt→notification latency (ms) of admitted submissions.
    e2e: Mutex<Vec<Vec<f64>>>,
    /// Per phase: notifications received during the phase.
    completed_in_phase: Vec<AtomicU64>,
    phase: AtomicU64,
}

struct Phase {
    name: &'static str,
    rate: f64,
    seconds: f64,
}

struct PhaseReport {
    name: &'static str,
    offered: u64,
    offered_rate: f64,
    admitted: u64,
    admitted_rate: f64,
    shed: u64,
    other_errors: u64,
    completed_rate: f64,
    receipt_p50_ms: f64,
    receipt_p99_ms: f64,
    shed_p99_ms: f64,
    e2e_p50_ms: f64,
    e2e_p99_ms: f64,
    /// Seconds into the phase of the last shed submission (recovery: when shedding stopped).
    last_shed_s: f64,
    /// Seconds into the phase when the pipeline's queue, having held work, was first empty
    /// again; `None`: it never emptied (or never held work).
    queue_empty_s: Option<f64>,
    queue_at_end: usize,
    peak_rss_mib: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: f64 = arg(&args, "--seconds", 10.0);
    let backlog_max: usize = arg(&args, "--backlog-max", 72);
    let calibrate_rate: f64 = arg(&args, "--calibrate-rate", 1000.0);
    let ident_ms: u64 = arg(&args, "--ident-ms", 0);
    let ident_parallel: usize = arg(&args, "--ident-parallel", 4);
    let workers: usize = arg(&args, "--workers", 8);
    let json: Option<String> = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1).cloned());

    let (ident_backend, _) = galleries();
    let ident: Arc<dyn IdentSearch> = if ident_ms == 0 {
        Arc::new(ident_backend)
    } else {
        Arc::new(ThrottledIdent {
            inner: Arc::new(ident_backend),
            slots: tokio::sync::Semaphore::new(ident_parallel),
            service: Duration::from_millis(ident_ms),
        })
    };
    let options = ServeOptions {
        concurrency: workers,
        // One bureau sends everything here: its share is the whole budget.
        backlog: interop_gateway::pipeline::BacklogBudget {
            max_submissions: backlog_max,
            ..Default::default()
        },
        ..TestGateway::default_options()
    };
    let concurrency = options.concurrency;
    let gw = Arc::new(TestGateway::start_with_options(options, Some(ident)).await);

    let phases_plan = |capacity: f64| {
        vec![
            Phase {
                name: "baseline (0.5x)",
                rate: 0.5 * capacity,
                seconds,
            },
            Phase {
                name: "3x capacity",
                rate: 3.0 * capacity,
                seconds,
            },
            Phase {
                name: "recovery (0.5x)",
                rate: 0.5 * capacity,
                seconds,
            },
        ]
    };

    let ledger = Arc::new(Ledger {
        submitted: Mutex::default(),
        notified: Mutex::default(),
        e2e: Mutex::new(vec![vec![]; 4]),
        completed_in_phase: (0..4).map(|_| AtomicU64::new(0)).collect(),
        phase: AtomicU64::new(0),
    });
    // The field office follows everything (all bookings are in its area).
    {
        let ledger = ledger.clone();
        let mut office = gw.office("HOU").await;
        tokio::spawn(async move {
            let mut s = office
                .subscribe(pb::SubscribeRequest {
                    after_cursor: Some(0),
                    follow: true,
                })
                .await
                .expect("subscribe")
                .into_inner();
            while let Ok(Some(n)) = s.message().await {
                let tcn = n.outcome.map(|o| o.tcn).unwrap_or_default();
                let now = Instant::now();
                *ledger
                    .notified
                    .lock()
                    .unwrap()
                    .entry(tcn.clone())
                    .or_default() += 1;
                let phase = ledger.phase.load(Ordering::Relaxed) as usize;
                ledger.completed_in_phase[phase].fetch_add(1, Ordering::Relaxed);
                if let Some((p, at)) = ledger.submitted.lock().unwrap().get(&tcn).copied() {
                    ledger.e2e.lock().unwrap()[p].push((now - at).as_secs_f64() * 1e3);
                }
            }
        });
    }

    // Peak RSS sampler.
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib("VmRSS:"), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }

    // A few channels, each multiplexing many calls; one template booking, new TCN each.
    let mut clients = vec![];
    for _ in 0..4 {
        clients.push(gw.bureau("TX").await);
    }
    // An identification: since no-hits are disclosed to no one (RULES.md), only an IDENT hit
    // reaches the field office this example follows.
    let template = booking("TX-OVERLOAD-TEMPLATE", TX_RECEIVING, OVERSTAY_FELON);
    let seq = Arc::new(AtomicU64::new(0));

    let run_phase = |index: usize, phase: Phase| {
        let (clients, template, ledger, seq, gw, peak) = (
            clients.clone(),
            template.clone(),
            ledger.clone(),
            seq.clone(),
            gw.clone(),
            peak.clone(),
        );
        async move {
            ledger.phase.store(index as u64, Ordering::Relaxed);
            peak.store(rss_kib("VmRSS:"), Ordering::Relaxed);
            let outcomes = Arc::new(Mutex::new(Outcomes::default()));
            let started = Instant::now();
            let done = Arc::new(AtomicBool::new(false));
            let queue_empty = {
                let (gw, done) = (gw.clone(), done.clone());
                // When the queue, once it held work during the phase, was first empty again.
                tokio::spawn(async move {
                    let mut held_work = false;
                    while !done.load(Ordering::Relaxed) {
                        let queued = gw.gateway.pipeline_depth().0;
                        if queued > 0 {
                            held_work = true;
                        } else if held_work {
                            return Some(started.elapsed().as_secs_f64());
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    None
                })
            };
            let total = (phase.rate * phase.seconds).round() as u64;
            let mut tasks = Vec::with_capacity(total as usize);
            for i in 0..total {
                // Open loop: the i-th arrival at i / rate, whatever happened to earlier ones.
                let due = started + Duration::from_secs_f64(i as f64 / phase.rate);
                tokio::time::sleep_until(due.into()).await;
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let tcn = format!("TX-OVL-{n:010}");
                let mut sub = template.clone();
                sub.tcn = tcn.clone();
                let mut client = clients[(n % clients.len() as u64) as usize].clone();
                let (ledger, outcomes) = (ledger.clone(), outcomes.clone());
                tasks.push(tokio::spawn(async move {
                    let at = Instant::now();
                    ledger
                        .submitted
                        .lock()
                        .unwrap()
                        .insert(tcn.clone(), (index, at));
                    let r = client.submit(sub).await;
                    let ms = at.elapsed().as_secs_f64() * 1e3;
                    let mut o = outcomes.lock().unwrap();
                    match r {
                        Ok(_) => o.admitted.push(ms),
                        Err(e)
                            if matches!(e.code(), Code::ResourceExhausted | Code::Unavailable) =>
                        {
                            ledger.submitted.lock().unwrap().remove(&tcn);
                            o.shed.push(ms);
                            o.shed_at.push((at - started).as_secs_f64());
                        }
                        Err(e) => {
                            ledger.submitted.lock().unwrap().remove(&tcn);
                            eprintln!("unexpected refusal: {:?} {}", e.code(), e.message());
                            o.other_errors += 1;
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            let elapsed = started.elapsed().as_secs_f64();
            done.store(true, Ordering::Relaxed);
            let queue_empty_s = queue_empty.await.unwrap_or(None);
            let completed = ledger.completed_in_phase[index].load(Ordering::Relaxed);
            let o = std::mem::take(&mut *outcomes.lock().unwrap());
            let mut admitted = o.admitted.clone();
            admitted.sort_by(f64::total_cmp);
            let mut shed = o.shed.clone();
            shed.sort_by(f64::total_cmp);
            PhaseReport {
                name: phase.name,
                offered: total,
                offered_rate: total as f64 / elapsed,
                admitted: admitted.len() as u64,
                admitted_rate: admitted.len() as f64 / elapsed,
                shed: shed.len() as u64,
                other_errors: o.other_errors,
                completed_rate: completed as f64 / elapsed,
                receipt_p50_ms: pct(&admitted, 50.0),
                receipt_p99_ms: pct(&admitted, 99.0),
                shed_p99_ms: pct(&shed, 99.0),
                e2e_p50_ms: 0.0,
                e2e_p99_ms: 0.0,
                last_shed_s: o.shed_at.iter().copied().fold(0.0, f64::max),
                queue_empty_s,
                queue_at_end: gw.gateway.pipeline_depth().0,
                peak_rss_mib: peak.load(Ordering::Relaxed) as f64 / 1024.0,
            }
        }
    };

    // 1. Calibrate: offer far more than can be processed, so the pipeline has work from the
    // first moment; capacity = the rate submissions complete at meanwhile.
    let calibrate = run_phase(
        0,
        Phase {
            name: "calibrate",
            rate: calibrate_rate,
            seconds: 4.0,
        },
    )
    .await;
    let capacity = calibrate.completed_rate.max(1.0);
    // Let the calibration backlog drain before measuring.
    while gw.gateway.pipeline_depth() != (0, 0) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut reports = vec![calibrate];
    for (i, p) in phases_plan(capacity).into_iter().enumerate() {
        reports.push(run_phase(i + 1, p).await);
    }
    // Drain, then check nothing admitted was lost or delivered twice.
    let drain_started = Instant::now();
    while gw.gateway.pipeline_depth() != (0, 0) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admitted_total: u64 = reports.iter().map(|r| r.admitted).sum();
    let mut lost = 0u64;
    let mut duplicated = 0u64;
    for _ in 0..200 {
        {
            let submitted = ledger.submitted.lock().unwrap();
            let notified = ledger.notified.lock().unwrap();
            lost = submitted
                .keys()
                .filter(|t| !notified.contains_key(*t))
                .count() as u64;
            duplicated = notified.values().filter(|n| **n > 1).count() as u64;
        }
        if lost == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain_s = drain_started.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    {
        let e2e = ledger.e2e.lock().unwrap();
        for (i, r) in reports.iter_mut().enumerate() {
            let mut v = e2e[i].clone();
            v.sort_by(f64::total_cmp);
            r.e2e_p50_ms = pct(&v, 50.0);
            r.e2e_p99_ms = pct(&v, 99.0);
        }
    }
    let hwm_mib = rss_kib("VmHWM:") as f64 / 1024.0;

    let stand_in = if ident_ms == 0 {
        "real exhaustive searches".to_string()
    } else {
        format!("IDENT stand-in {ident_ms} ms x {ident_parallel}")
    };
    println!(
        "overload: in-process gateway over mTLS, {stand_in}; backlog budget {backlog_max}, \
         {concurrency} workers"
    );
    println!(
        "capacity (completion rate while saturated): {capacity:.0} submissions/s; backlog / capacity = {:.1} s",
        backlog_max as f64 / capacity
    );
    println!(
        "  {:<16} {:>8} {:>9} {:>9} {:>6} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>8}",
        "phase",
        "offered/s",
        "admit/s",
        "done/s",
        "shed",
        "other",
        "rcpt p50",
        "rcpt p99",
        "shed p99",
        "e2e p50",
        "e2e p99",
        "last shed",
        "q empty",
        "queue",
        "RSS MiB"
    );
    for r in &reports {
        println!(
            "  {:<16} {:>8.0} {:>9.0} {:>9.0} {:>6} {:>7} {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>7.0}ms {:>7.0}ms {:>8.1}s {:>9} {:>6} {:>8.1}",
            r.name,
            r.offered_rate,
            r.admitted_rate,
            r.completed_rate,
            r.shed,
            r.other_errors,
            r.receipt_p50_ms,
            r.receipt_p99_ms,
            r.shed_p99_ms,
            r.e2e_p50_ms,
            r.e2e_p99_ms,
            r.last_shed_s,
            r.queue_empty_s
                .map(|s| format!("{s:.1}s"))
                .unwrap_or_else(|| "never".into()),
            r.queue_at_end,
            r.peak_rss_mib
        );
    }
    let (base, over, rec) = (&reports[1], &reports[2], &reports[3]);
    println!(
        "at 3x: completes {:.2}x capacity, sheds {:.0}% of offered, receipt p99 {:.2}x and e2e p99 {:.1}x the baseline's; recovery: e2e p50 {:.2}x the baseline's",
        over.completed_rate / capacity,
        100.0 * over.shed as f64 / over.offered.max(1) as f64,
        over.receipt_p99_ms / base.receipt_p99_ms.max(0.001),
        over.e2e_p99_ms / base.e2e_p99_ms.max(0.001),
        rec.e2e_p50_ms / base.e2e_p50_ms.max(0.001),
    );
    println!(
        "admitted {admitted_total}; lost {lost}; delivered twice {duplicated}; drained in {drain_s:.1} s; peak RSS (VmHWM) {hwm_mib:.1} MiB"
    );
    if let Some(path) = json {
        let phases: Vec<String> = reports
            .iter()
            .map(|r| {
                format!(
                    "{{\"phase\":\"{}\",\"offered\":{},\"offered_per_s\":{:.1},\"admitted\":{},\"admitted_per_s\":{:.1},\"completed_per_s\":{:.1},\"shed\":{},\"other_errors\":{},\"receipt_p50_ms\":{:.2},\"receipt_p99_ms\":{:.2},\"shed_p99_ms\":{:.2},\"e2e_p50_ms\":{:.1},\"e2e_p99_ms\":{:.1},\"last_shed_s\":{:.2},\"queue_empty_s\":{},\"queue_at_end\":{},\"peak_rss_mib\":{:.1}}}",
                    r.name,
                    r.offered,
                    r.offered_rate,
                    r.admitted,
                    r.admitted_rate,
                    r.completed_rate,
                    r.shed,
                    r.other_errors,
                    r.receipt_p50_ms,
                    r.receipt_p99_ms,
                    r.shed_p99_ms,
                    r.e2e_p50_ms,
                    r.e2e_p99_ms,
                    r.last_shed_s,
                    r.queue_empty_s
                        .map(|s| format!("{s:.2}"))
                        .unwrap_or_else(|| "null".into()),
                    r.queue_at_end,
                    r.peak_rss_mib
                )
            })
            .collect();
        let body = format!(
            "{{\"ident_ms\":{ident_ms},\"ident_parallel\":{ident_parallel},\"backlog_max\":{backlog_max},\"workers\":{concurrency},\"capacity_per_s\":{capacity:.1},\"phases\":[{}],\"admitted\":{admitted_total},\"lost\":{lost},\"delivered_twice\":{duplicated},\"drain_s\":{drain_s:.2},\"peak_rss_hwm_mib\":{hwm_mib:.1}}}\n",
            phases.join(",")
        );
        std::fs::write(&path, body).expect("write json");
        println!("figures written to {path}");
    }
    assert_eq!(
        lost, 0,
        "a receipted submission never reached its field office"
    );
    assert_eq!(duplicated, 0, "an outcome was delivered twice");
}
