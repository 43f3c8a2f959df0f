//! The fairness figure of `state-bureau-sim bench`: a quiet bureau's latency alone, and again
//! while another bureau floods at ten times its rate (issue 28: "a quiet bureau's notification
//! p99 while another floods at 10× its rate stays within 2× of its p99 alone").
//!
//! Both bureaus send open loop (each booking at its due time, whatever happened to earlier
//! ones) to one in-process gateway. The quiet bureau's latency is from sending a booking to
//! its own response stream carrying that booking's criminal-history response: every booking
//! gets one, at completion, so it measures the whole way through the gateway. The flood's
//! refusals are counted, never retried. Both phases follow an unmeasured warm-up of
//! [`WARM_UP`] with both bureaus at the quiet rate: a gateway just started answers its first
//! bookings slower (gallery pages not yet read, connections new), and one 1,000,000-person
//! run's quiet bureau measured a p99 of 138.6 ms alone for 24–25 ms in the runs before it.

use crate::bookings::Booking;
use hdrhistogram::Histogram;
use interop_client::Client;
use interop_proto::v1 as pb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One phase's figures for the quiet bureau (and the flood's, when there is one).
#[derive(Clone, Debug, serde::Serialize)]
pub struct QuietPhase {
    pub name: String,
    pub sent: usize,
    pub answered: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub flood_sent: usize,
    pub flood_receipted: usize,
    pub flood_refused: usize,
}

/// How long both bureaus send at the quiet rate, unmeasured, before the quiet bureau is
/// measured alone (at most the phases' own length).
pub const WARM_UP: Duration = Duration::from_secs(3);

/// The figure: the quiet bureau alone, and beside the flood.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Fairness {
    pub quiet_state: String,
    pub flood_state: String,
    pub quiet_per_s: f64,
    pub flood_per_s: f64,
    pub seconds: f64,
    /// The unmeasured warm-up before the phases.
    pub warm_up_seconds: f64,
    pub alone: QuietPhase,
    pub with_flood: QuietPhase,
    /// `with_flood.p99 / alone.p99` (target ≤ 2).
    pub p99_ratio: f64,
}

/// The two states with the most bookings in `plan`: the flood's, then the quiet one's.
pub fn pick_states(plan: &[Booking]) -> anyhow::Result<(String, String)> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for b in plan {
        *counts.entry(&b.state).or_default() += 1;
    }
    let mut by: Vec<(&str, usize)> = counts.into_iter().collect();
    by.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    anyhow::ensure!(
        by.len() >= 2,
        "the fairness phase needs bookings from two states"
    );
    Ok((by[0].0.to_string(), by[1].0.to_string()))
}

/// Sends `plan`'s bookings open loop at `per_s` for `seconds`, TCNs made unique by `round`;
/// `sent` records when each was sent. Returns (sent, receipted, refused).
async fn open_loop(
    client: Client,
    plan: Arc<Vec<Booking>>,
    per_s: f64,
    seconds: f64,
    round: usize,
    sent: Option<Arc<Mutex<HashMap<String, Instant>>>>,
) -> (usize, usize, usize) {
    let total = (per_s * seconds).round() as usize;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / per_s);
        tokio::time::sleep_until(due.into()).await;
        let mut sub = plan[i % plan.len()].submission.clone();
        sub.tcn = crate::bench::unique_tcn(&sub.tcn, round + i / plan.len());
        if let Some(s) = &sent {
            s.lock()
                .expect("sent")
                .insert(sub.tcn.clone(), Instant::now());
        }
        let c = client.clone();
        tasks.spawn(async move { c.submit(sub).await.is_ok() });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        ok += usize::from(r.unwrap_or(false));
    }
    (total, ok, total - ok)
}

/// One phase: the quiet bureau at `quiet_per_s` (and the flood at `flood_per_s` if > 0), then
/// up to `settle` for the quiet bureau's answers.
#[allow(clippy::too_many_arguments)]
async fn phase(
    name: &str,
    quiet: &Client,
    quiet_plan: &Arc<Vec<Booking>>,
    flood: &Client,
    flood_plan: &Arc<Vec<Booking>>,
    quiet_per_s: f64,
    flood_per_s: f64,
    seconds: f64,
    round: usize,
    settle: Duration,
) -> anyhow::Result<QuietPhase> {
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Histogram<u64>>> = Arc::new(Mutex::new(Histogram::new(3)?));
    let head = quiet.response_head().await?;
    let follower = {
        let mut f = quiet.follow_responses(Some(head), true);
        let (sent, latencies) = (sent.clone(), latencies.clone());
        tokio::spawn(async move {
            while let Ok(Some(r)) = f.next().await {
                if !matches!(r.body, Some(pb::bureau_response::Body::CriminalHistory(_))) {
                    continue;
                }
                let at = sent.lock().expect("sent").get(&r.tcn).copied();
                if let Some(at) = at {
                    let us = at.elapsed().as_micros() as u64;
                    latencies.lock().expect("latencies").record(us.max(1)).ok();
                }
            }
        })
    };
    let flood_task = (flood_per_s > 0.0).then(|| {
        tokio::spawn(open_loop(
            flood.clone(),
            flood_plan.clone(),
            flood_per_s,
            seconds,
            round,
            None,
        ))
    });
    let (quiet_sent, _, _) = open_loop(
        quiet.clone(),
        quiet_plan.clone(),
        quiet_per_s,
        seconds,
        round,
        Some(sent.clone()),
    )
    .await;
    let (flood_sent, flood_receipted, flood_refused) = match flood_task {
        Some(t) => t.await?,
        None => (0, 0, 0),
    };
    let deadline = Instant::now() + settle;
    while latencies.lock().expect("latencies").len() < quiet_sent as u64
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    follower.abort();
    let h = latencies.lock().expect("latencies").clone();
    let ms = |v: u64| v as f64 / 1000.0;
    Ok(QuietPhase {
        name: name.into(),
        sent: quiet_sent,
        answered: h.len() as usize,
        p50_ms: ms(h.value_at_quantile(0.5)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
        flood_sent,
        flood_receipted,
        flood_refused,
    })
}

/// Measures the figure against the gateway behind `clients` (one per state of `plan`).
pub async fn measure(
    clients: &HashMap<String, Client>,
    plan: &[Booking],
    quiet_per_s: f64,
    seconds: f64,
) -> anyhow::Result<Fairness> {
    let (flood_state, quiet_state) = pick_states(plan)?;
    let of = |state: &str| -> Arc<Vec<Booking>> {
        Arc::new(plan.iter().filter(|b| b.state == state).cloned().collect())
    };
    let (quiet_plan, flood_plan) = (of(&quiet_state), of(&flood_state));
    let (quiet, flood) = (&clients[&quiet_state], &clients[&flood_state]);
    let flood_per_s = 10.0 * quiet_per_s;
    let settle = Duration::from_secs(120);
    let warm_up_seconds = seconds.min(WARM_UP.as_secs_f64());
    phase(
        "warm-up",
        quiet,
        &quiet_plan,
        flood,
        &flood_plan,
        quiet_per_s,
        quiet_per_s,
        warm_up_seconds,
        3_000,
        settle,
    )
    .await?;
    let alone = phase(
        "quiet bureau alone",
        quiet,
        &quiet_plan,
        flood,
        &flood_plan,
        quiet_per_s,
        0.0,
        seconds,
        1_000,
        settle,
    )
    .await?;
    let with_flood = phase(
        "quiet bureau beside a 10x flood",
        quiet,
        &quiet_plan,
        flood,
        &flood_plan,
        quiet_per_s,
        flood_per_s,
        seconds,
        2_000,
        settle,
    )
    .await?;
    let p99_ratio = with_flood.p99_ms / alone.p99_ms.max(1e-9);
    Ok(Fairness {
        quiet_state,
        flood_state,
        quiet_per_s,
        flood_per_s,
        seconds,
        warm_up_seconds,
        alone,
        with_flood,
        p99_ratio,
    })
}
