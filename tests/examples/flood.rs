//! A connection flood beside real clients (issue 27): what share of a bureau's submissions, each
//! on a new connection, are receipted, and how fast, while an attacker without a certificate
//! holds a thousand silent TCP sockets open and re-opens each one the moment the gateway closes
//! it. Before the handshake room of `server/listener.rs`, 1,100 such sockets held all 1,024
//! connection slots and 21 of 117 submissions got through in 30 s.
//!
//! One in-process gateway over mutual TLS, the gateway's default bounds, two phases of the same
//! length, the same clients:
//! 1. **quiet** — the bureaus alone: the baseline;
//! 2. **flood** — the same, with `--sockets` (1,100) silent sockets from the same address as
//!    the bureaus (loopback: the hardest case for a per-address bound).
//!
//! Each bureau loop connects afresh (no retries), submits one booking, records the outcome and
//! the time from connect to receipt, and waits `--pause-ms` before the next. Prints both
//! phases side by side (success share, p50/p99 latency, and the listener's counters) and writes
//! JSON.
//!
//! ```sh
//! cargo run --release -p interop-e2e --example flood -- [--seconds 15] [--sockets 1100] \
//!     [--bureaus 4] [--pause-ms 50] [--json target/flood.json]
//! ```

use interop_e2e::*;
use interop_gateway::auth::principal::Principal;
use interop_proto::v1 as pb;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn pct(sorted: &[f64], p: f64) -> f64 {
    percentile(sorted, p).unwrap_or(f64::NAN)
}

#[derive(Debug)]
struct PhaseReport {
    name: &'static str,
    attempts: usize,
    receipted: usize,
    /// The first failure's reason, if any failed.
    first_error: Option<String>,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Sockets the attacker opened during the phase.
    flood_connects: u64,
    handshakes_evicted: u64,
    handshake_timeouts: u64,
}

/// One bureau: fresh connection, one submission, until `stop`. Returns each attempt's time
/// to receipt (ms), or why it failed.
async fn bureau_loop(
    gw: Arc<TestGateway>,
    state: &'static str,
    tag: String,
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> Vec<Result<f64, String>> {
    let mut out = Vec::new();
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let tcn = format!("{state}-FLOOD-{tag}-{n:05}");
        let t = Instant::now();
        let attempt = async {
            let bureau = gw.pki.client(&Principal::Bureau {
                state: state.into(),
            });
            let client =
                interop_gateway_cli::pki::client_config(&gw.endpoint, &gw.pki, Some(&bureau))?
                    .retry(interop_client::RetryPolicy::none())
                    .connect()
                    .await?;
            pb::submission_service_client::SubmissionServiceClient::new(client.channel())
                .submit(booking(&tcn, TX_RECEIVING, NOBODY))
                .await?;
            anyhow::Ok(())
        };
        out.push(
            match tokio::time::timeout(Duration::from_secs(10), attempt).await {
                Ok(Ok(())) => Ok(t.elapsed().as_secs_f64() * 1e3),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err("no receipt within 10 s".into()),
            },
        );
        tokio::time::sleep(pause).await;
    }
    out
}

/// Keeps `sockets` silent connections open, re-opening each as soon as it is closed, until
/// `stop`; counts connects.
fn flood(addr: String, sockets: usize, stop: Arc<AtomicBool>, connects: Arc<AtomicU64>) {
    use tokio::io::AsyncReadExt;
    for _ in 0..sockets {
        let (addr, stop, connects) = (addr.clone(), stop.clone(), connects.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 256];
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                connects.fetch_add(1, Ordering::Relaxed);
                // Silent: wait for the server to close it (or for the end of the phase).
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        _ => {}
                    }
                }
            }
        });
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: f64 = arg(&args, "--seconds", 15.0);
    let sockets: usize = arg(&args, "--sockets", 1100);
    let bureaus: usize = arg(&args, "--bureaus", 4);
    let pause = Duration::from_millis(arg(&args, "--pause-ms", 50));
    let json: String = arg(&args, "--json", "target/flood.json".to_string());

    let gw = Arc::new(TestGateway::start_with_options(TestGateway::default_options(), None).await);
    let addr = gw.endpoint.trim_start_matches("https://").to_string();
    let stats = gw.gateway.listen_stats.clone();
    let mut reports = Vec::new();
    for (name, flooding) in [("quiet", false), ("flood", true)] {
        let stop = Arc::new(AtomicBool::new(false));
        let connects = Arc::new(AtomicU64::new(0));
        let (evicted0, timeouts0) = (
            stats.handshake_evicted.load(Ordering::Relaxed),
            stats.handshake_timeouts.load(Ordering::Relaxed),
        );
        if flooding {
            flood(addr.clone(), sockets, stop.clone(), connects.clone());
            // Let it fill the room before the bureaus start.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let loops: Vec<_> = (0..bureaus)
            .map(|i| {
                tokio::spawn(bureau_loop(
                    gw.clone(),
                    "TX",
                    format!("{}{i}", name.to_uppercase()),
                    pause,
                    stop.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let mut results = Vec::new();
        for l in loops {
            results.extend(l.await.expect("bureau loop"));
        }
        let mut ok: Vec<f64> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .copied()
            .collect();
        let first_error = results.iter().find_map(|r| r.as_ref().err()).cloned();
        ok.sort_by(f64::total_cmp);
        let r = PhaseReport {
            name,
            attempts: results.len(),
            receipted: ok.len(),
            first_error,
            p50_ms: pct(&ok, 50.0),
            p99_ms: pct(&ok, 99.0),
            max_ms: ok.last().copied().unwrap_or(f64::NAN),
            flood_connects: connects.load(Ordering::Relaxed),
            handshakes_evicted: stats.handshake_evicted.load(Ordering::Relaxed) - evicted0,
            handshake_timeouts: stats.handshake_timeouts.load(Ordering::Relaxed) - timeouts0,
        };
        // The flood's sockets close as their tasks see `stop`.
        tokio::time::sleep(Duration::from_millis(500)).await;
        reports.push(r);
    }

    println!(
        "{:<6} {:>9} {:>10} {:>8} {:>9} {:>9} {:>9} {:>15} {:>9} {:>9}",
        "phase",
        "attempts",
        "receipted",
        "share",
        "p50 ms",
        "p99 ms",
        "max ms",
        "flood connects",
        "evicted",
        "timeouts"
    );
    for r in &reports {
        println!(
            "{:<6} {:>9} {:>10} {:>7.1}% {:>9.1} {:>9.1} {:>9.1} {:>15} {:>9} {:>9}",
            r.name,
            r.attempts,
            r.receipted,
            100.0 * r.receipted as f64 / r.attempts.max(1) as f64,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.flood_connects,
            r.handshakes_evicted,
            r.handshake_timeouts
        );
    }
    for r in &reports {
        if let Some(e) = &r.first_error {
            println!(
                "{}: {} failed, the first: {e}",
                r.name,
                r.attempts - r.receipted
            );
        }
    }
    let (q, f) = (&reports[0], &reports[1]);
    let share = |r: &PhaseReport| r.receipted as f64 / r.attempts.max(1) as f64;
    println!(
        "flood / quiet: success share {:.3}, p50 {:.2}x, p99 {:.2}x",
        share(f) / share(q).max(f64::MIN_POSITIVE),
        f.p50_ms / q.p50_ms,
        f.p99_ms / q.p99_ms
    );
    let phase = |r: &PhaseReport| {
        serde_json::json!({
            "phase": r.name, "attempts": r.attempts, "receipted": r.receipted,
            "success_share": share(r), "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "max_ms": r.max_ms,
            "flood_connects": r.flood_connects, "handshakes_evicted": r.handshakes_evicted,
            "handshake_timeouts": r.handshake_timeouts, "first_error": r.first_error,
        })
    };
    let out = serde_json::json!({
        "benchmark": "flood",
        "seconds": seconds, "sockets": sockets, "bureaus": bureaus,
        "pause_ms": pause.as_millis() as u64,
        "phases": reports.iter().map(phase).collect::<Vec<_>>(),
        "ratio": {
            "success_share": share(f) / share(q).max(f64::MIN_POSITIVE),
            "p50": f.p50_ms / q.p50_ms, "p99": f.p99_ms / q.p99_ms,
        },
    });
    if let Some(dir) = std::path::Path::new(&json).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&json, serde_json::to_string_pretty(&out).unwrap()).expect("write JSON");
    println!("wrote {json}");
}
