//! The quarterly outlier review (Secure Communities task-force recommendation): for each
//! jurisdiction, is its share of *minor-traffic-only arrests* among its submissions, or of
//! *low-priority identifications* (Level 3 or non-criminal) among its identifications,
//! significantly higher than the rest of the nation's? A high share can mean pretextual
//! arrests (profiling) feeding the program.
//!
//! The stated test: for a jurisdiction with `x` events in `n` trials and the rest of the
//! nation's rate `p` (excluding the jurisdiction, so a large county does not dilute its own
//! baseline), the one-sided exact binomial p-value `P(X ≥ x | n, p)`. All tests of the review
//! (jurisdictions with at least [`MIN_TRIALS`] trials, both measures) are corrected together
//! with the Benjamini–Hochberg procedure at false-discovery rate [`FDR`]. Each flag carries the
//! figures behind it, including its state's rate for comparison.

use crate::error::GatewayError;
use crate::rules::policy::PolicyBook;
use crate::rules::statistics;
use crate::store::DynStore;
use interop_proto::v1 as pb;
use std::collections::BTreeMap;

/// False-discovery rate of the review.
pub const FDR: f64 = 0.05;
/// Jurisdictions with fewer trials are not tested (no power, only noise).
pub const MIN_TRIALS: u64 = 5;

pub const MEASURE_MINOR_TRAFFIC: &str = "minor_traffic_only_arrests";
pub const MEASURE_LOW_PRIORITY: &str = "low_priority_identifications";

/// ln(k!) for k = 0..=n.
fn ln_factorials(n: u64) -> Vec<f64> {
    let mut v = Vec::with_capacity(n as usize + 1);
    let mut acc = 0.0;
    v.push(0.0);
    for k in 1..=n {
        acc += (k as f64).ln();
        v.push(acc);
    }
    v
}

/// One-sided exact binomial tail `P(X ≥ x)` for `X ~ Binomial(n, p)`.
pub fn binomial_upper_tail(x: u64, n: u64, p: f64) -> f64 {
    if x == 0 {
        return 1.0;
    }
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let lf = ln_factorials(n);
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let mut total = 0.0;
    for k in x..=n {
        let ln_term = lf[n as usize] - lf[k as usize] - lf[(n - k) as usize]
            + k as f64 * lp
            + (n - k) as f64 * lq;
        total += ln_term.exp();
    }
    total.min(1.0)
}

/// Benjamini–Hochberg: which of `p_values` are discoveries at rate `q`.
pub fn benjamini_hochberg(p_values: &[f64], q: f64) -> Vec<bool> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|a, b| p_values[*a].total_cmp(&p_values[*b]));
    let mut cutoff = 0;
    for (rank, i) in order.iter().enumerate() {
        if p_values[*i] <= q * (rank + 1) as f64 / m as f64 {
            cutoff = rank + 1;
        }
    }
    let mut out = vec![false; m];
    for i in order.into_iter().take(cutoff) {
        out[i] = true;
    }
    out
}

/// Per-jurisdiction figures over the review period.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    pub submissions: u64,
    pub minor_traffic_only: u64,
    pub identifications: u64,
    pub low_priority: u64,
    /// Civil-rights complaints of profiling about the jurisdiction (by month received).
    pub profiling_complaints: u64,
}

/// `AdminService.QuarterlyReview`: the review of the months `r` names, over the durable
/// monthly counters.
pub async fn quarterly(
    store: &DynStore,
    policy: &PolicyBook,
    r: &pb::QuarterlyReviewRequest,
) -> Result<pb::OutlierReview, GatewayError> {
    let months = statistics::period(&r.quarter, &r.from_month, &r.to_month)
        .map_err(|(field, rule)| GatewayError::invalid(field, rule))?;
    let mut counters = BTreeMap::new();
    for m in &months {
        counters.extend(store.counters_with_prefix(format!("m/{m}/")).await?);
    }
    let mut out = review(policy, &statistics::review_figures(&counters));
    out.from_month = months.first().cloned().unwrap_or_default();
    out.to_month = months.last().cloned().unwrap_or_default();
    Ok(out)
}

/// Runs the review over the period's figures.
pub fn review(policy: &PolicyBook, figures: &BTreeMap<String, Figures>) -> pb::OutlierReview {
    type Pick = fn(&Figures) -> (u64, u64);
    let measures: [(&str, Pick); 2] = [
        (MEASURE_MINOR_TRAFFIC, |f| {
            (f.minor_traffic_only, f.submissions)
        }),
        (MEASURE_LOW_PRIORITY, |f| {
            (f.low_priority, f.identifications)
        }),
    ];
    let mut tests: Vec<pb::OutlierFlag> = Vec::new();
    for (measure, pick) in measures {
        let (nat_x, nat_n) = figures
            .values()
            .map(pick)
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let mut by_state: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for (jid, f) in figures {
            if let Some(j) = policy.jurisdiction(jid) {
                let (x, n) = pick(f);
                let e = by_state.entry(j.state.as_str()).or_default();
                e.0 += x;
                e.1 += n;
            }
        }
        for (jid, f) in figures {
            let (x, n) = pick(f);
            let Some(j) = policy.jurisdiction(jid) else {
                continue;
            };
            if n < MIN_TRIALS || nat_n <= n {
                continue;
            }
            let rest_rate = (nat_x - x) as f64 / (nat_n - n) as f64;
            let (sx, sn) = by_state[j.state.as_str()];
            tests.push(pb::OutlierFlag {
                jurisdiction_id: jid.clone(),
                state: j.state.clone(),
                measure: measure.to_string(),
                count: x,
                trials: n,
                rate: x as f64 / n as f64,
                state_rate: if sn > 0 { sx as f64 / sn as f64 } else { 0.0 },
                national_rate: nat_x as f64 / nat_n as f64,
                rest_of_nation_rate: rest_rate,
                p_value: binomial_upper_tail(x, n, rest_rate),
                profiling_complaints: f.profiling_complaints,
            });
        }
    }
    let p: Vec<f64> = tests.iter().map(|t| t.p_value).collect();
    let significant = benjamini_hochberg(&p, FDR);
    let tested = tests.len() as u32;
    let mut flags: Vec<pb::OutlierFlag> = tests
        .into_iter()
        .zip(significant)
        .filter(|(t, s)| *s && t.rate > t.rest_of_nation_rate)
        .map(|(t, _)| t)
        .collect();
    flags.sort_by(|a, b| a.p_value.total_cmp(&b.p_value));
    // Complaints are read beside the statistics: the jurisdictions complained of, and
    // whether the test flagged them too.
    let mut complained_of: Vec<pb::ComplainedOf> = figures
        .iter()
        .filter(|(_, f)| f.profiling_complaints > 0)
        .map(|(jid, f)| pb::ComplainedOf {
            jurisdiction_id: jid.clone(),
            state: policy
                .jurisdiction(jid)
                .map(|j| j.state.clone())
                .unwrap_or_default(),
            profiling_complaints: f.profiling_complaints,
            flagged: flags.iter().any(|x| &x.jurisdiction_id == jid),
        })
        .collect();
    complained_of.sort_by(|a, b| {
        b.profiling_complaints
            .cmp(&a.profiling_complaints)
            .then_with(|| a.jurisdiction_id.cmp(&b.jurisdiction_id))
    });
    pb::OutlierReview {
        tests: tested,
        false_discovery_rate: FDR,
        min_trials: MIN_TRIALS,
        flags,
        complained_of,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_tail_hand_checked() {
        // P(X ≥ 1 | 2, 0.5) = 0.75; P(X ≥ 2 | 2, 0.5) = 0.25; P(X ≥ 5 | 6, 0.14) ≈ 3.0e-4.
        assert!((binomial_upper_tail(1, 2, 0.5) - 0.75).abs() < 1e-12);
        assert!((binomial_upper_tail(2, 2, 0.5) - 0.25).abs() < 1e-12);
        let p = binomial_upper_tail(5, 6, 0.14);
        assert!((p - (6.0 * 0.14f64.powi(5) * 0.86 + 0.14f64.powi(6))).abs() < 1e-12);
        assert_eq!(binomial_upper_tail(0, 10, 0.3), 1.0);
        assert!(binomial_upper_tail(400, 1000, 0.1) < 1e-100);
    }

    #[test]
    fn benjamini_hochberg_hand_checked() {
        // m = 5, q = 0.05: thresholds 0.01, 0.02, 0.03, 0.04, 0.05 by rank.
        let p = [0.001, 0.2, 0.025, 0.04, 0.011];
        // Sorted: 0.001 (≤0.01), 0.011 (≤0.02), 0.025 (≤0.03), 0.04 (≤0.04), 0.2 (>0.05).
        assert_eq!(
            benjamini_hochberg(&p, 0.05),
            [true, false, true, true, true]
        );
        assert_eq!(benjamini_hochberg(&[0.5, 0.9], 0.05), [false, false]);
    }
}
