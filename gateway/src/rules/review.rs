//! The quarterly profiling review (seed 001): "a statistician ... examines data for each
//! activated jurisdiction, compares data for aliens identified by the program to relevant
//! arrest-rate data, and identifies any indications of racial profiling". Here:
//!
//! - **The program's data**: per jurisdiction and race/ethnicity group (from the booking's
//!   NCIC race and ethnicity codes), the people identified in the period (`n`) and those of
//!   them arrested on minor traffic charges only (`x`), the arrests where an officer's
//!   discretion is widest and pretext the likeliest.
//! - **The arrest-rate data**: the jurisdiction's own reported arrests of a year
//!   ([`crate::world::ArrestData`]); the benchmark for group `g` is the minor-traffic share
//!   `q` of the jurisdiction's arrests of *everyone else*, so a jurisdiction that arrests
//!   everyone for minor traffic is not an outlier; only one that does so to one group is.
//! - **The nation's common odds ratio** `θ` for the group: identified people may be minor
//!   traffic arrests more (or less) often than others anywhere, profiling or not. It is the
//!   Mantel–Haenszel estimate over every other jurisdiction (`Σ x(1−q) / Σ (n−x)q`, with ½
//!   added to each sum so a nation of few identifications reads as θ = 1, not 0).
//! - **The test**: `x ~ Binomial(n, p)` with `p = θo/(1+θo)`, `o = q/(1−q)`: the one-sided exact
//!   p-value `P(X ≥ x)`. Pairs with fewer than [`MIN_TRIALS`] identifications are not tested.
//!   All tests of the review are corrected together with Benjamini–Hochberg at false-discovery
//!   rate [`FDR`]; a flag is a discovery with `x/n` above `p`.
//! - **Power**: each test reports its power to flag the group had its minor-traffic odds been
//!   doubled, at the threshold BH gives a single discovery (`FDR/m`), and the review counts the
//!   tests with at least 80%.

use crate::error::GatewayError;
use crate::rules::policy::PolicyBook;
use crate::rules::statistics;
use crate::store::DynStore;
use crate::world::Group;
use interop_proto::v1 as pb;
use std::collections::BTreeMap;

/// False-discovery rate of the review.
pub const FDR: f64 = 0.05;
/// Pairs (jurisdiction, group) with fewer identifications are not tested (no power, only
/// noise).
pub const MIN_TRIALS: u64 = 5;

pub const MEASURE: &str = "minor_traffic_identifications";

/// The method, as the review states it.
pub const METHOD: &str = "Per activated jurisdiction and race/ethnicity group: identified \
    people arrested on minor traffic charges only, of all identified, against the minor-traffic \
    share of the jurisdiction's reported arrests of everyone else, scaled by the nation's \
    Mantel-Haenszel common odds ratio for the group (other jurisdictions pooled); one-sided \
    exact binomial test; Benjamini-Hochberg across all tests at FDR 0.05; pairs with fewer than \
    5 identifications untested.";
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
    /// Identifications (all groups, recorded or not).
    pub identifications: u64,
    /// Per group: (arrested on minor traffic charges only, all) of the identified.
    pub by_group: BTreeMap<Group, (u64, u64)>,
    /// Civil-rights complaints of profiling about the jurisdiction (by month received).
    pub profiling_complaints: u64,
}

/// The minor-traffic share of a jurisdiction's arrests of everyone outside `g`, when its
/// arrest data give one strictly between 0 and 1.
pub fn arrest_rate(policy: &PolicyBook, jid: &str, g: Group) -> Option<f64> {
    let data = policy.jurisdiction(jid)?.arrests.as_ref()?;
    let (minor, all) = data
        .groups
        .iter()
        .filter(|a| a.group != g)
        .fold((0u64, 0u64), |s, a| {
            (s.0 + a.minor_traffic, s.1 + a.total())
        });
    let q = minor as f64 / all as f64;
    (all > 0 && q > 0.0 && q < 1.0).then_some(q)
}

/// What a review period's figures give the tests: each (jurisdiction, group) pair's arrest
/// rate, and the Mantel–Haenszel sums per group that the common odds ratio is made of.
pub struct Baseline {
    rates: BTreeMap<(String, Group), f64>,
    sums: BTreeMap<Group, (f64, f64)>,
}

impl Baseline {
    pub fn new(policy: &PolicyBook, figures: &BTreeMap<String, Figures>) -> Baseline {
        let mut rates = BTreeMap::new();
        let mut sums: BTreeMap<Group, (f64, f64)> = BTreeMap::new();
        for (jid, f) in figures {
            for (&g, &(x, n)) in &f.by_group {
                let Some(q) = arrest_rate(policy, jid, g) else {
                    continue;
                };
                rates.insert((jid.clone(), g), q);
                let e = sums.entry(g).or_default();
                e.0 += x as f64 * (1.0 - q);
                e.1 += (n - x) as f64 * q;
            }
        }
        Baseline { rates, sums }
    }

    /// The arrest rate of `(jid, g)`, the common odds ratio without the jurisdiction, and the
    /// test's expected rate; `None` without arrest data.
    pub fn expectation(&self, jid: &str, g: Group, x: u64, n: u64) -> Option<(f64, f64, f64)> {
        let q = *self.rates.get(&(jid.to_string(), g))?;
        let (a, b) = self.sums.get(&g).copied().unwrap_or_default();
        let (a, b) = (
            (a - x as f64 * (1.0 - q)).max(0.0),
            (b - (n - x) as f64 * q).max(0.0),
        );
        let theta = (a + 0.5) / (b + 0.5);
        let o = theta * q / (1.0 - q);
        Some((q, theta, o / (1.0 + o)))
    }
}

/// The probabilities `P(X = k)`, k = 0..=n, of `X ~ Binomial(n, p)` (0 < p < 1).
fn pmf(n: u64, p: f64) -> Vec<f64> {
    let lf = ln_factorials(n);
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    (0..=n)
        .map(|k| {
            (lf[n as usize] - lf[k as usize] - lf[(n - k) as usize]
                + k as f64 * lp
                + (n - k) as f64 * lq)
                .exp()
        })
        .collect()
}

/// The power of a one-sided exact binomial test of `n` trials at rate `p0` and level `alpha`
/// to reject when the true odds are twice `p0`'s. Linear in `n` (the review runs it for every
/// test of every scheduled pass).
pub fn power_at_double_odds(n: u64, p0: f64, alpha: f64) -> f64 {
    if n == 0 || !(p0 > 0.0 && p0 < 1.0) {
        return 0.0;
    }
    // The smallest count the test rejects: the upper tail under p0 at most alpha.
    let null = pmf(n, p0);
    let mut tail = 0.0;
    let mut c = None;
    for k in (0..=n as usize).rev() {
        tail += null[k];
        if tail > alpha {
            break;
        }
        c = Some(k);
    }
    let Some(c) = c else {
        return 0.0;
    };
    let o = 2.0 * p0 / (1.0 - p0);
    pmf(n, o / (1.0 + o))[c..].iter().sum::<f64>().min(1.0)
}

/// The figures of the months `months` from the review's durable counters
/// ([`statistics::review_key`]).
pub async fn figures_of(
    store: &DynStore,
    months: &[String],
) -> Result<BTreeMap<String, Figures>, GatewayError> {
    let mut counters = BTreeMap::new();
    for m in months {
        counters.extend(store.counters_with_prefix(format!("r/{m}/")).await?);
    }
    Ok(statistics::review_figures(&counters))
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
    let mut out = review(policy, &figures_of(store, &months).await?);
    out.from_month = months.first().cloned().unwrap_or_default();
    out.to_month = months.last().cloned().unwrap_or_default();
    Ok(out)
}

/// Runs the review over the period's figures.
pub fn review(policy: &PolicyBook, figures: &BTreeMap<String, Figures>) -> pb::OutlierReview {
    let base = Baseline::new(policy, figures);
    let mut tests: Vec<pb::OutlierFlag> = Vec::new();
    let (mut identifications, mut no_group, mut no_data) = (0, 0, 0);
    for (jid, f) in figures {
        identifications += f.identifications;
        let grouped: u64 = f.by_group.values().map(|v| v.1).sum();
        no_group += f.identifications.saturating_sub(grouped);
        let Some(j) = policy.jurisdiction(jid) else {
            no_data += grouped;
            continue;
        };
        for (&g, &(x, n)) in &f.by_group {
            let Some((q, theta, p)) = base.expectation(jid, g, x, n) else {
                no_data += n;
                continue;
            };
            if n < MIN_TRIALS {
                continue;
            }
            tests.push(pb::OutlierFlag {
                jurisdiction_id: jid.clone(),
                state: j.state.clone(),
                measure: MEASURE.to_string(),
                group: g.as_str().to_string(),
                count: x,
                trials: n,
                rate: x as f64 / n as f64,
                arrest_rate: q,
                common_odds_ratio: theta,
                expected_rate: p,
                p_value: binomial_upper_tail(x, n, p),
                profiling_complaints: f.profiling_complaints,
                ..Default::default()
            });
        }
    }
    let m = tests.len();
    let alpha_one = FDR / m.max(1) as f64;
    for t in &mut tests {
        t.power_at_double_odds = power_at_double_odds(t.trials, t.expected_rate, alpha_one);
    }
    let p: Vec<f64> = tests.iter().map(|t| t.p_value).collect();
    let significant = benjamini_hochberg(&p, FDR);
    let order = |a: &pb::OutlierFlag, b: &pb::OutlierFlag| {
        a.p_value
            .total_cmp(&b.p_value)
            .then_with(|| a.jurisdiction_id.cmp(&b.jurisdiction_id))
            .then_with(|| a.group.cmp(&b.group))
    };
    let mut flags: Vec<pb::OutlierFlag> = tests
        .iter()
        .zip(significant)
        .filter(|(t, s)| *s && t.rate > t.expected_rate)
        .map(|(t, _)| t.clone())
        .collect();
    flags.sort_by(order);
    tests.sort_by(order);
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
        tests: m as u32,
        false_discovery_rate: FDR,
        min_trials: MIN_TRIALS,
        method: METHOD.to_string(),
        powered_tests: tests
            .iter()
            .filter(|t| t.power_at_double_odds >= 0.8)
            .count() as u32,
        identifications,
        untested_no_group: no_group,
        untested_no_arrest_data: no_data,
        flags,
        tested: tests,
        figures: figures
            .iter()
            .flat_map(|(jid, f)| {
                f.by_group.iter().map(|(g, &(x, n))| pb::GroupFigures {
                    jurisdiction_id: jid.clone(),
                    group: g.as_str().to_string(),
                    minor_traffic: x,
                    identifications: n,
                })
            })
            .collect(),
        complained_of,
        ..Default::default()
    }
}

/// The in-depth analysis of `previous` quarter's flags with this quarter's `figures`
/// (seed 001: outliers "will receive an in-depth analysis as the next quarter's data is
/// analyzed"): each pair's figures now, at the expected rate of this quarter's baseline,
/// whatever their count; the indication persists at p ≤ 0.05/k (k outliers followed up).
pub fn in_depth(
    policy: &PolicyBook,
    previous: &pb::OutlierReview,
    figures: &BTreeMap<String, Figures>,
) -> Vec<pb::InDepth> {
    let base = Baseline::new(policy, figures);
    let alpha = 0.05 / previous.flags.len().max(1) as f64;
    previous
        .flags
        .iter()
        .map(|f| {
            let now = figures.get(&f.jurisdiction_id);
            let (x, n) = Group::parse(&f.group)
                .and_then(|g| now.and_then(|s| s.by_group.get(&g)).copied())
                .unwrap_or_default();
            let expected = Group::parse(&f.group)
                .and_then(|g| base.expectation(&f.jurisdiction_id, g, x, n))
                .map(|e| e.2)
                .unwrap_or(f.expected_rate);
            let p_value = binomial_upper_tail(x, n, expected);
            pb::InDepth {
                jurisdiction_id: f.jurisdiction_id.clone(),
                group: f.group.clone(),
                previous_p_value: f.p_value,
                previous_rate: f.rate,
                count: x,
                trials: n,
                expected_rate: expected,
                p_value,
                persists: n > 0 && p_value <= alpha && x as f64 / n as f64 > expected,
                profiling_complaints: now.map(|s| s.profiling_complaints).unwrap_or(0),
            }
        })
        .collect()
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

    fn book(minor: [u64; 3]) -> PolicyBook {
        use crate::world::*;
        let j = |id: &str, m: u64| Jurisdiction {
            id: id.into(),
            name: id.into(),
            state: "TX".into(),
            field_office: "HOU".into(),
            agencies: vec![],
            population: 1000,
            activated_on: None,
            receives_results: true,
            arrests: Some(ArrestData {
                year: 2011,
                groups: Group::ALL
                    .iter()
                    .map(|&group| GroupArrests {
                        group,
                        serious: 200,
                        other: 800 - m,
                        minor_traffic: m,
                    })
                    .collect(),
            }),
        };
        PolicyBook::new(&WorldFile {
            meta: WorldMeta {
                seed: 1,
                identities: 1,
                version: 1,
            },
            states: vec![],
            field_offices: vec![],
            jurisdictions: vec![j("A", minor[0]), j("B", minor[1]), j("C", minor[2])],
        })
    }

    fn figures(rows: &[(&str, u64, u64)]) -> BTreeMap<String, Figures> {
        rows.iter()
            .map(|&(j, x, n)| {
                (
                    j.to_string(),
                    Figures {
                        identifications: n,
                        by_group: BTreeMap::from([(Group::Hispanic, (x, n))]),
                        profiling_complaints: 0,
                    },
                )
            })
            .collect()
    }

    /// With identified people no different from the arrest data anywhere, nothing is
    /// flagged; a jurisdiction whose group is arrested for minor traffic far more than its
    /// arrest data say is, and one that arrests everyone so is not.
    #[test]
    fn flags_follow_the_arrest_data_not_the_nation() {
        let policy = book([100, 600, 100]);
        let calm = review(
            &policy,
            &figures(&[("A", 10, 100), ("B", 60, 100), ("C", 10, 100)]),
        );
        assert_eq!((calm.tests, calm.flags.len()), (3, 0));
        let skewed = review(
            &policy,
            &figures(&[("A", 60, 100), ("B", 60, 100), ("C", 10, 100)]),
        );
        let flagged: Vec<&str> = skewed
            .flags
            .iter()
            .map(|f| f.jurisdiction_id.as_str())
            .collect();
        assert_eq!(flagged, ["A"], "B arrests everyone on minor traffic alike");
        // Arrest rate of the others, and the odds ratio pooled without A (B and C at θ = 1).
        let a = &skewed.flags[0];
        assert!((a.arrest_rate - 0.1).abs() < 1e-12);
        let theta = (60.0 * 0.4 + 10.0 * 0.9 + 0.5) / (40.0 * 0.6 + 90.0 * 0.1 + 0.5);
        assert!((a.common_odds_ratio - theta).abs() < 1e-12);
        assert!(skewed.powered_tests >= 1);
        // Too few identifications: untested; no arrest data: counted apart.
        let few = review(&policy, &figures(&[("A", 4, 4), ("Z", 3, 3)]));
        assert_eq!((few.tests, few.untested_no_arrest_data), (0, 3));
    }

    #[test]
    fn in_depth_follows_last_quarters_flags_with_this_quarters_data() {
        let policy = book([100, 600, 100]);
        let last = review(
            &policy,
            &figures(&[("A", 60, 100), ("B", 60, 100), ("C", 10, 100)]),
        );
        let still = in_depth(
            &policy,
            &last,
            &figures(&[("A", 30, 50), ("B", 30, 50), ("C", 5, 50)]),
        );
        assert_eq!(still.len(), 1);
        assert!(still[0].persists && still[0].trials == 50);
        let gone = in_depth(
            &policy,
            &last,
            &figures(&[("A", 5, 50), ("B", 30, 50), ("C", 5, 50)]),
        );
        assert!(!gone[0].persists);
        let none = in_depth(&policy, &last, &BTreeMap::new());
        assert_eq!((none[0].trials, none[0].persists), (0, false));
    }

    #[test]
    fn power_at_double_odds_is_a_probability_that_grows_with_n() {
        let small = power_at_double_odds(10, 0.1, 0.01);
        let large = power_at_double_odds(500, 0.1, 0.01);
        assert!((0.0..=1.0).contains(&small) && small < 0.3, "{small}");
        assert!(large > 0.99, "{large}");
        assert_eq!(power_at_double_odds(0, 0.1, 0.01), 0.0);
        // Hand-checked: n = 10, p0 = 0.1, alpha = 0.01: P(X ≥ 4 | 0.1) = 0.0128 > 0.01 and
        // P(X ≥ 5 | 0.1) = 0.00163, so the test rejects at 5; doubled odds give p1 = 2/11.
        let p1: f64 = 2.0 / 11.0;
        let want = binomial_upper_tail(5, 10, p1);
        assert!((power_at_double_odds(10, 0.1, 0.01) - want).abs() < 1e-12);
        assert!(binomial_upper_tail(4, 10, 0.1) > 0.01 && binomial_upper_tail(5, 10, 0.1) <= 0.01);
    }
}
