//! The profiling review against the ground truth: its figures equal to the identifications
//! the run made (per period, jurisdiction and race/ethnicity group, as differences from
//! before the run), each closed quarter's stored assessment caught up with its data and
//! following the previous quarter's flags, and the planted profiling found where the run gave
//! the review the power and the evidence (statistical, [`crate::criteria`]).

use super::{Observations, Verification};
use crate::bookings::Booking;
use crate::criteria::{self, Planted};
use interop_gateway::intake::validate::group_of;
use interop_gateway::rules::{assessment, review};
use interop_proto::v1 as pb;
use std::collections::{BTreeMap, BTreeSet};

pub const REVIEW: &str = "profiling review or assessments wrong";

/// The label of the whole booking window among the review's periods.
pub const WINDOW: &str = "window";

/// Review figures by (period, jurisdiction, group): (minor traffic only, identifications).
pub type FigureMap = BTreeMap<(String, String, String), (u64, u64)>;

/// One closed quarter after the run: its latest stored assessment, and the review of its
/// data computed on demand at the same moment.
#[derive(Clone, Debug)]
pub struct AssessmentSeen {
    pub quarter: String,
    pub stored: Option<pb::QuarterlyAssessment>,
    pub on_demand: pb::OutlierReview,
}

/// A review's figures under a period label.
pub fn figure_map(period: &str, r: &pb::OutlierReview) -> FigureMap {
    r.figures
        .iter()
        .map(|f| {
            (
                (
                    period.to_string(),
                    f.jurisdiction_id.clone(),
                    f.group.clone(),
                ),
                (f.minor_traffic, f.identifications),
            )
        })
        .collect()
}

/// `after - before`, keeping what changed.
pub fn delta(after: &FigureMap, before: &FigureMap) -> FigureMap {
    after
        .iter()
        .filter_map(|(k, &(x, n))| {
            let (bx, bn) = before.get(k).copied().unwrap_or_default();
            (n > bn).then(|| (k.clone(), (x - bx.min(x), n - bn)))
        })
        .collect()
}

fn minor_traffic_only(b: &Booking) -> bool {
    !b.submission.charges.is_empty()
        && b.submission
            .charges
            .iter()
            .all(|c| c.class == pb::OffenseClass::MinorTraffic as i32)
}

fn booked_on(b: &Booking) -> Option<chrono::NaiveDate> {
    b.submission
        .booked_at
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|t| t.date_naive())
}

/// The fiscal quarters (from the first reviewed) the plan's bookings fall in, oldest first.
pub fn quarters(plan: &[Booking]) -> Vec<String> {
    let qs: BTreeSet<assessment::Quarter> = plan
        .iter()
        .filter_map(booked_on)
        .map(assessment::quarter_of)
        .filter(|q| *q >= interop_gateway::rules::statistics::FIRST_REVIEWED_QUARTER)
        .collect();
    qs.into_iter().map(assessment::name).collect()
}

/// The quarters the schedule must have assessed once the plan's bookings are in.
pub fn closed_quarters(plan: &[Booking]) -> Vec<String> {
    let Some(last) = plan.iter().filter_map(booked_on).max() else {
        return vec![];
    };
    quarters(plan)
        .into_iter()
        .filter(|q| assessment::parse(q).is_ok_and(|q| assessment::due_on(q) <= last))
        .collect()
}

/// What the review's figures must have grown by: the run's identifications (bookings whose
/// identification carried a recommendation, as the offices were told) by group.
pub fn expected_figures(plan: &[Booking], identified: &BTreeSet<&str>) -> FigureMap {
    let mut want = FigureMap::new();
    for b in plan {
        if !identified.contains(b.submission.tcn.as_str()) {
            continue;
        }
        let (Some(g), Some(day)) = (
            b.submission.biographics.as_ref().and_then(group_of),
            booked_on(b),
        ) else {
            continue;
        };
        let minor = minor_traffic_only(b) as u64;
        let q = assessment::quarter_of(day);
        let mut periods = vec![WINDOW.to_string()];
        if q >= interop_gateway::rules::statistics::FIRST_REVIEWED_QUARTER {
            periods.push(assessment::name(q));
        }
        for p in periods {
            let e = want
                .entry((
                    p,
                    b.submission.jurisdiction_id.clone(),
                    g.as_str().to_string(),
                ))
                .or_default();
            e.0 += minor;
            e.1 += 1;
        }
    }
    want
}

fn flag_keys(r: Option<&pb::OutlierReview>) -> Vec<(String, String)> {
    r.map(|r| {
        r.flags
            .iter()
            .map(|f| (f.jurisdiction_id.clone(), f.group.clone()))
            .collect()
    })
    .unwrap_or_default()
}

/// The deterministic checks of the review.
pub fn check(
    v: &mut Verification,
    plan: &[Booking],
    obs: &Observations,
    identified: &BTreeSet<&str>,
) {
    if let Some(got) = &obs.review_figures {
        let want = expected_figures(plan, identified);
        for k in want.keys().chain(got.keys()).collect::<BTreeSet<_>>() {
            let (w, g) = (want.get(k), got.get(k));
            if w != g {
                v.fail(
                    REVIEW,
                    &k.1,
                    format!(
                        "{} group {}: the review counts (minor traffic, identified) {g:?}, the run identified {w:?}",
                        k.0, k.2
                    ),
                );
            }
        }
    }
    let mut previous: Option<&pb::QuarterlyAssessment> = None;
    for a in &obs.assessments {
        let Some(stored) = &a.stored else {
            v.fail(REVIEW, &a.quarter, "closed quarter never assessed".into());
            previous = None;
            continue;
        };
        let r = stored.review.as_ref();
        if r.map(|r| &r.figures) != Some(&a.on_demand.figures) {
            v.fail(
                REVIEW,
                &a.quarter,
                format!(
                    "stored assessment (revision {}) is not caught up with the quarter's data",
                    stored.revision
                ),
            );
        } else if flag_keys(r) != flag_keys(Some(&a.on_demand)) {
            v.fail(
                REVIEW,
                &a.quarter,
                "stored assessment's flags differ from the method on its figures".into(),
            );
        }
        if let Some(p) = previous {
            let followed: Vec<(String, String)> = stored
                .in_depth
                .iter()
                .map(|d| (d.jurisdiction_id.clone(), d.group.clone()))
                .collect();
            if followed != flag_keys(p.review.as_ref()) {
                v.fail(
                    REVIEW,
                    &a.quarter,
                    format!(
                        "in-depth analysis follows {followed:?}, the previous quarter flagged {:?}",
                        flag_keys(p.review.as_ref())
                    ),
                );
            }
        }
        previous = Some(stored);
    }
}

/// Precision and recall of the review's flags (by jurisdiction) against the planted set:
/// decoys flagged count against precision.
pub fn quality(obs: &Observations) -> (f64, f64) {
    let flagged: BTreeSet<&str> = obs.review_flags.iter().map(|(j, _)| j.as_str()).collect();
    let hits = flagged.iter().filter(|j| obs.planted.contains(**j)).count() as f64;
    let precision = if flagged.is_empty() {
        1.0
    } else {
        hits / flagged.len() as f64
    };
    let recall = if obs.planted.is_empty() {
        1.0
    } else {
        hits / obs.planted.len() as f64
    };
    (precision, recall)
}

/// The power this run gave the review to flag each planted jurisdiction's target group, from
/// the run's own identifications there (against a gateway with history the review counts
/// earlier runs' too; they are not this run's to judge).
pub fn planted_power(
    plan: &[Booking],
    obs: &Observations,
    identified: &BTreeSet<&str>,
) -> Vec<Planted> {
    let Some(window) = &obs.review_window else {
        return vec![];
    };
    // Benjamini–Hochberg's threshold for its first discovery, FDR/m: a p-value at most that
    // is flagged whatever the other tests say, so a planted test that meets it and is not
    // flagged is a bug, never chance. (Power is stated at the same threshold: conservative.)
    let alpha = review::FDR / f64::from(window.tests.max(1));
    obs.planted
        .iter()
        .map(|j| {
            let here: Vec<&Booking> = plan
                .iter()
                .filter(|b| &b.submission.jurisdiction_id == j)
                .filter(|b| identified.contains(b.submission.tcn.as_str()))
                .filter(|b| {
                    b.submission
                        .biographics
                        .as_ref()
                        .and_then(group_of)
                        .is_some_and(|g| g.as_str() == obs.target_group)
                })
                .collect();
            let n = here.len() as u64;
            let x = here.iter().filter(|b| minor_traffic_only(b)).count() as u64;
            let test = window
                .tested
                .iter()
                .find(|t| &t.jurisdiction_id == j && t.group == obs.target_group);
            let p0 = test.map_or(0.0, |t| t.expected_rate);
            // Pretextual stops at this share, the rest drawn as everywhere else.
            let s = crate::profiling::PRETEXT_SHARE;
            let p1 = s + (1.0 - s) * p0;
            let p_value = review::binomial_upper_tail(x, n, p0);
            Planted {
                jurisdiction: j.clone(),
                identifications: n,
                minor_traffic_only: x,
                power: if test.is_some() {
                    criteria::review_power(n, p0, p1, alpha)
                } else {
                    0.0
                },
                p_value,
                significant: test.is_some() && p_value <= alpha,
                flagged: obs
                    .review_flags
                    .iter()
                    .any(|(f, g)| f == j && *g == obs.target_group),
            }
        })
        .collect()
}
