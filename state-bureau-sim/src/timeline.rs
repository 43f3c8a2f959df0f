//! What happened over time during a run, computed after it from what the clients saw:
//! offered load, receipts and field-office notifications per second, and receipt and
//! end-to-end latency percentiles of the bookings sent in each interval; and, for a step
//! profile, the same per step with the knee (the first step the gateway could not keep up
//! with).
//!
//! Latencies are measured from each booking's *intended* send time (open loop), so queueing
//! inside the driver or the gateway shows up rather than hiding (no coordinated omission).

use crate::bookings::Booking;
use crate::verify::Observations;
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One interval of the run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Interval {
    /// Seconds since the first send, at the interval's start.
    pub t: f64,
    /// Bookings meant to be sent in the interval, per second.
    pub offered_per_s: f64,
    /// Receipts that came back in the interval, per second.
    pub receipts_per_s: f64,
    /// Field-office notifications that arrived in the interval, per second.
    pub notifications_per_s: f64,
    /// Receipt latency of bookings sent in the interval (ms); 0 when none.
    pub receipt_p50_ms: f64,
    pub receipt_p99_ms: f64,
    /// Send → field-office notification of bookings sent in the interval (ms).
    pub e2e_p50_ms: f64,
    pub e2e_p99_ms: f64,
}

/// One step of a step profile.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Step {
    pub offered_per_s: f64,
    /// Bookings actually due in the step (Poisson arrivals vary around the offered rate).
    pub sent: usize,
    pub receipted: usize,
    pub receipts_per_s: f64,
    pub receipt_p50_ms: f64,
    pub receipt_p99_ms: f64,
    pub e2e_p50_ms: f64,
    pub e2e_p99_ms: f64,
    pub refused: usize,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Timeline {
    pub interval_secs: f64,
    pub intervals: Vec<Interval>,
    pub steps: Vec<Step>,
    /// Offered rate of the last step the gateway kept up with, when a step profile ran. A
    /// step is kept up with when nothing was refused, every booking due in it was receipted,
    /// and neither its receipt median nor its end-to-end median is more than 4x the first
    /// step's: a backlog that grows moves the whole distribution, the median with it. (The
    /// 99th percentile of a 5-second step is its third-slowest booking: one hiccup of the
    /// machine set the knee at 40/s on a gateway that kept up with 200/s, so it is reported,
    /// not judged.)
    pub knee_per_s: Option<f64>,
}

fn hist() -> Histogram<u64> {
    Histogram::new(3).expect("histogram")
}

fn q(h: &Histogram<u64>, quantile: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// Builds the timeline. `steps` are the step profile's `(start offset, rate)` pairs, each
/// lasting until the next (the last until `step_secs` after its start).
pub fn build(
    plan: &[Booking],
    obs: &Observations,
    t0: Instant,
    steps: &[(Duration, f64)],
    step_secs: f64,
) -> Timeline {
    let tcn_index: HashMap<&str, usize> = plan
        .iter()
        .enumerate()
        .map(|(i, b)| (b.submission.tcn.as_str(), i))
        .collect();
    let secs = |at: Instant| at.saturating_duration_since(t0).as_secs_f64();
    // Each booking's first notification (an office gets exactly one per identification; a
    // no-hit is sent to no one, so only identified bookings have an end-to-end latency).
    let mut notified: Vec<Option<Instant>> = vec![None; plan.len()];
    for (_, n, at) in &obs.office {
        if let Some(i) = n
            .outcome
            .as_ref()
            .and_then(|o| tcn_index.get(o.tcn.as_str()))
        {
            notified[*i].get_or_insert(*at);
        }
    }
    let end = obs
        .office
        .iter()
        .map(|(_, _, at)| secs(*at))
        .chain(obs.receipt_at.iter().flatten().map(|at| secs(*at)))
        .chain(obs.sent_at.iter().flatten().map(|at| secs(*at)))
        .fold(0.0f64, f64::max);
    // About 120 intervals, never shorter than a quarter second.
    let width = ((end / 120.0).max(0.25) * 4.0).ceil() / 4.0;
    let n = (end / width).floor() as usize + 1;
    let mut offered = vec![0usize; n];
    let mut receipts = vec![0usize; n];
    let mut notes = vec![0usize; n];
    let mut r_lat: Vec<Histogram<u64>> = (0..n).map(|_| hist()).collect();
    let mut e_lat: Vec<Histogram<u64>> = (0..n).map(|_| hist()).collect();
    let bucket = |s: f64| ((s / width) as usize).min(n - 1);
    for (_, _, at) in &obs.office {
        notes[bucket(secs(*at))] += 1;
    }
    for (i, first_note) in notified.iter().enumerate() {
        let Some(sent) = obs.sent_at.get(i).copied().flatten() else {
            continue;
        };
        let b = bucket(secs(sent));
        offered[b] += 1;
        if let Some(r) = obs.receipt_at.get(i).copied().flatten() {
            receipts[bucket(secs(r))] += 1;
            r_lat[b]
                .record(r.saturating_duration_since(sent).as_micros() as u64)
                .ok();
        }
        if let Some(at) = first_note {
            e_lat[b]
                .record(at.saturating_duration_since(sent).as_micros() as u64)
                .ok();
        }
    }
    let intervals = (0..n)
        .map(|k| Interval {
            t: k as f64 * width,
            offered_per_s: offered[k] as f64 / width,
            receipts_per_s: receipts[k] as f64 / width,
            notifications_per_s: notes[k] as f64 / width,
            receipt_p50_ms: q(&r_lat[k], 0.5),
            receipt_p99_ms: q(&r_lat[k], 0.99),
            e2e_p50_ms: q(&e_lat[k], 0.5),
            e2e_p99_ms: q(&e_lat[k], 0.99),
        })
        .collect();

    // Steps: bookings by intended send time within each step.
    let mut out_steps = vec![];
    for (k, (start, rate)) in steps.iter().enumerate() {
        let from = start.as_secs_f64();
        let to = steps
            .get(k + 1)
            .map(|(s, _)| s.as_secs_f64())
            .unwrap_or(from + step_secs);
        let (mut r, mut e) = (hist(), hist());
        let (mut due, mut receipted, mut refused) = (0usize, 0usize, 0usize);
        for (i, first_note) in notified.iter().enumerate() {
            let Some(sent) = obs.sent_at.get(i).copied().flatten() else {
                continue;
            };
            let s = secs(sent);
            if s < from || s >= to {
                continue;
            }
            due += 1;
            match (&obs.receipts[i], obs.receipt_at.get(i).copied().flatten()) {
                (Some(Ok(_)), Some(at)) => {
                    receipted += 1;
                    r.record(at.saturating_duration_since(sent).as_micros() as u64)
                        .ok();
                }
                (Some(Err(_)), _) => refused += 1,
                _ => {}
            }
            if let Some(at) = first_note {
                e.record(at.saturating_duration_since(sent).as_micros() as u64)
                    .ok();
            }
        }
        // Receipted bookings of the step over the time they took to come back.
        let last_receipt = (0..plan.len())
            .filter(|&i| {
                obs.sent_at
                    .get(i)
                    .copied()
                    .flatten()
                    .is_some_and(|s| (from..to).contains(&secs(s)))
            })
            .filter_map(|i| obs.receipt_at.get(i).copied().flatten())
            .map(secs)
            .fold(to, f64::max);
        out_steps.push(Step {
            offered_per_s: *rate,
            sent: due,
            receipted,
            receipts_per_s: receipted as f64 / (last_receipt - from).max(1e-9),
            receipt_p50_ms: q(&r, 0.5),
            receipt_p99_ms: q(&r, 0.99),
            e2e_p50_ms: q(&e, 0.5),
            e2e_p99_ms: q(&e, 0.99),
            refused,
        });
    }
    let base = out_steps
        .first()
        .map(|s| (s.receipt_p50_ms, s.e2e_p50_ms))
        .unwrap_or_default();
    let knee_per_s = out_steps
        .iter()
        .take_while(|s| {
            s.refused == 0
                && s.receipted == s.sent
                && s.receipt_p50_ms <= 4.0 * base.0.max(1.0)
                && s.e2e_p50_ms <= 4.0 * base.1.max(1.0)
        })
        .last()
        .map(|s| s.offered_per_s);
    Timeline {
        interval_secs: width,
        intervals,
        steps: out_steps,
        knee_per_s: if steps.is_empty() { None } else { knee_per_s },
    }
}
