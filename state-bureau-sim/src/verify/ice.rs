//! The ICE side's checks: the offices' decisions, LESC notices and reviews, convictions,
//! complaints and activation notices, against what the simulated ICE side asked
//! (`crate::officers`), and its figures for the report.

use super::*;

/// The offices' decisions, the LESC notices and the reviews against what the simulated ICE
/// side asked (`crate::officers`).
pub(super) fn check_decisions(v: &mut Verification, obs: &Observations) {
    for d in &obs.decisions {
        let got = &d.decision;
        let tcn = got.tcn.as_str();
        if got.action != d.asked || got.reasons != d.reasons {
            v.fail(
                DECISIONS,
                tcn,
                format!(
                    "asked action {} reasons {:?}, recorded {} {:?}",
                    d.asked, d.reasons, got.action, got.reasons
                ),
            );
        }
        if got.recommendation != d.recommendation {
            v.fail(
                DECISIONS,
                tcn,
                format!(
                    "the decision kept recommendation {}, the identification said {}",
                    got.recommendation, d.recommendation
                ),
            );
        }
        if (got.action == pb::Action::Detainer as i32) != got.detainer.is_some() {
            v.fail(
                DECISIONS,
                tcn,
                "a detainer decision without a detainer, or a detainer without one".into(),
            );
        }
        if !d.repeat_same {
            v.fail(DECISIONS, tcn, "deciding again changed the decision".into());
        }
        if d.other_refused == Some(false) {
            v.fail(
                DECISIONS,
                tcn,
                "a second, different decision was not refused".into(),
            );
        }
    }
    let mut received: HashMap<(&str, &str), usize> = HashMap::new();
    for (office, id) in &obs.lesc_received {
        *received.entry((office.as_str(), id.as_str())).or_default() += 1;
    }
    for (office, id, tcn) in &obs.lesc_sent {
        if id.is_empty() {
            v.fail(LESC, tcn, "a repeated notice answered differently".into());
            continue;
        }
        let got = received
            .remove(&(office.as_str(), id.as_str()))
            .unwrap_or(0);
        if got != 1 {
            v.fail(
                LESC,
                tcn,
                format!("notice {id} reached {office} {got} times"),
            );
        }
    }
    for ((office, id), _) in received {
        v.fail(LESC, id, format!("{office} read notice {id} nobody gave"));
    }
    let mut lifts: HashMap<&str, usize> = HashMap::new();
    for (_, tcn, _) in &obs.lifts_received {
        *lifts.entry(tcn.as_str()).or_default() += 1;
    }
    for r in &obs.reviews {
        if r.review.lifted != r.lift || !r.repeat_same {
            v.fail(
                REVIEWS,
                &r.tcn,
                format!(
                    "asked lift={}, recorded lifted={} (repeat same: {})",
                    r.lift, r.review.lifted, r.repeat_same
                ),
            );
        }
        let got = lifts.remove(r.tcn.as_str()).unwrap_or(0);
        let want = usize::from(r.review.lifted);
        if got != want {
            v.fail(
                REVIEWS,
                &r.tcn,
                format!("the jail received {got} lift(s), expected {want}"),
            );
        }
    }
    for (tcn, n) in lifts {
        v.fail(
            REVIEWS,
            tcn,
            format!("the jail received {n} lift(s) nobody decided"),
        );
    }
    let mut operative: HashMap<&str, usize> = HashMap::new();
    for (_, tcn, _) in &obs.operative_received {
        *operative.entry(tcn.as_str()).or_default() += 1;
    }
    for (state, tcn, id) in &obs.convictions {
        let got = operative.remove(tcn.as_str()).unwrap_or(0);
        if id.is_empty() || got != 1 {
            v.fail(
                OPERATIVE,
                tcn,
                format!(
                    "the conviction reported by {state}: recorded {id:?}, the jail told {got} times"
                ),
            );
        }
    }
    for (tcn, n) in operative {
        v.fail(
            OPERATIVE,
            tcn,
            format!("the jail was told {n} times of a conviction nobody reported"),
        );
    }
    if obs.removal_before_conviction_refused == Some(false) {
        v.fail(
            OPERATIVE,
            "-",
            "a removal under a detainer operative only on conviction was recorded before the conviction".into(),
        );
    }
    check_complaints(v, obs);
    if obs.removal_after_lift_refused == Some(false) {
        v.fail(
            REVIEWS,
            "-",
            "a removal under a lifted detainer was recorded".into(),
        );
    }
}

fn check_complaints(v: &mut Verification, obs: &Observations) {
    let mut flags: HashMap<(&str, &str), usize> = HashMap::new();
    for (office, id) in &obs.complaint_flags_received {
        *flags.entry((office.as_str(), id.as_str())).or_default() += 1;
    }
    for c in &obs.complaints {
        // The ground truth: the path the simulator's CRCL followed.
        let received = c
            .complaint
            .steps
            .first()
            .map(|s| s.on.clone())
            .unwrap_or_default();
        let (path, outcome) = crate::officers::complaint_path(&c.tcn);
        let mut want = vec![(pb::ComplaintStage::Received as i32, received.clone())];
        if let Ok(r) = received.parse::<chrono::NaiveDate>() {
            want.extend(
                path.iter()
                    .map(|(s, d)| (*s as i32, (r + chrono::Days::new(*d)).to_string())),
            );
        }
        let got: Vec<(i32, String)> = c
            .complaint
            .steps
            .iter()
            .map(|s| (s.stage, s.on.clone()))
            .collect();
        let want_stage = want.last().map(|w| w.0).unwrap_or_default();
        if got != want
            || c.complaint.stage != want_stage
            || c.complaint.outcome != outcome as i32
            || !c.complaint.detainer_flagged
            || !c.repeats_same
        {
            v.fail(
                COMPLAINTS,
                &c.tcn,
                format!(
                    "complaint {}: stages {got:?} (stage {}, outcome {}, flagged {}, repeats same {}), expected {want:?} closing {:?}",
                    c.complaint.complaint_id,
                    c.complaint.stage,
                    c.complaint.outcome,
                    c.complaint.detainer_flagged,
                    c.repeats_same,
                    outcome
                ),
            );
        }
        let n = flags
            .remove(&(c.office.as_str(), c.complaint.complaint_id.as_str()))
            .unwrap_or(0);
        if n != 1 {
            v.fail(
                COMPLAINTS,
                &c.tcn,
                format!(
                    "{} read the flag of complaint {} {n} times",
                    c.office, c.complaint.complaint_id
                ),
            );
        }
    }
    for ((office, id), _) in flags {
        v.fail(
            COMPLAINTS,
            id,
            format!("{office} read a flag of a complaint nobody filed"),
        );
    }
    // The review lists the complaints of profiling received in the window: the
    // organisations', and the people's received within it (10 days after booking).
    if let Some(got) = &obs.review_complained {
        let mut want: BTreeMap<String, u64> = BTreeMap::new();
        for (j, _) in &obs.org_complaints {
            *want.entry(j.clone()).or_default() += 1;
        }
        for c in &obs.complaints {
            let month = c.complaint.steps.first().and_then(|s| s.on.get(..7));
            if month.is_some_and(|m| obs.monthly.contains_key(m)) {
                *want.entry(c.complaint.jurisdiction_id.clone()).or_default() += 1;
            }
        }
        let counts: BTreeMap<String, u64> = got.iter().map(|(j, (n, _))| (j.clone(), *n)).collect();
        if counts != want {
            v.fail(
                COMPLAINTS,
                "-",
                format!("the review lists complaints of profiling {counts:?}, expected {want:?}"),
            );
        }
        for (j, (_, flagged)) in got {
            let test_flagged = obs.review_flags.iter().any(|(f, _)| f == j);
            if *flagged != test_flagged {
                v.fail(
                    COMPLAINTS,
                    j,
                    format!(
                        "the review says flagged={flagged} beside complaints, its flags say {test_flagged}"
                    ),
                );
            }
        }
    }
    if obs.removal_of_complainant_refused == Some(false) {
        v.fail(
            COMPLAINTS,
            "-",
            "a person with an open civil-rights complaint was removed".into(),
        );
    }
}

/// Removals as the gateway's monthly statistics report them, by the documents' categories,
/// and the share within ICE's priorities (every category but the last).
pub(super) fn removals_by_category(obs: &Observations) -> serde_json::Value {
    let sum = |f: fn(&pb::StatsRow) -> u64| obs.monthly.values().map(f).sum::<u64>();
    let (l1, l2, l3, nc, other) = (
        sum(|r| r.removed_level1),
        sum(|r| r.removed_level2),
        sum(|r| r.removed_level3),
        sum(|r| r.removed_non_criminal_priority),
        sum(|r| r.removed_outside_priorities),
    );
    let all = l1 + l2 + l3 + nc + other;
    serde_json::json!({
        "level1": l1,
        "level2": l2,
        "level3": l3,
        "non_criminal_priority": nc,
        "outside_priorities": other,
        "within_priorities": (all - other) as f64 / all.max(1) as f64,
    })
}

/// What the ICE side decided and heard, for the report: decisions by action (and how many went
/// against the recommendation), LESC notices, reviews, lifts, and the time from a detainer's
/// first LESC notice to the office's review.
pub fn ice_side(obs: &Observations) -> serde_json::Value {
    let action = |a: pb::Action| {
        obs.decisions
            .iter()
            .filter(|d| d.decision.action == a as i32)
            .count()
    };
    let against = obs
        .decisions
        .iter()
        .filter(|d| {
            let detains = d.decision.action == pb::Action::Detainer as i32;
            let advised = d.decision.recommendation != pb::Recommendation::None as i32;
            detains != advised
        })
        .count();
    let latency = obs.review_latency_ms();
    let at = |q: f64| {
        latency
            .get(((latency.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    serde_json::json!({
        "decided_detainer": action(pb::Action::Detainer),
        "decided_no_action": action(pb::Action::NoAction),
        "decided_discretion": action(pb::Action::Discretion),
        "against_recommendation": against,
        "lesc_notices": obs.lesc_sent.len(),
        "reviews": obs.reviews.len(),
        "lifted": obs.reviews.iter().filter(|r| r.review.lifted).count(),
        "review_latency_ms": {"p50": at(0.5), "max": latency.last().copied().unwrap_or(0)},
        "complaints": {
            "filed": obs.complaints.len(),
            "open": obs.complaints.iter().filter(|c| c.complaint.stage != pb::ComplaintStage::Closed as i32).count(),
            "doj_notified": obs.complaints.iter().filter(|c| c.complaint.steps.iter().any(|s| s.stage == pb::ComplaintStage::DojNotified as i32)).count(),
            "closed": obs.complaints.iter().filter(|c| c.complaint.stage == pb::ComplaintStage::Closed as i32).count(),
        },
    })
}

/// Every activation made in the run was announced to its state's bureau once, in advance;
/// no other notice came.
pub(super) fn check_activation_notices(v: &mut Verification, obs: &Observations) {
    let mut got: HashMap<(&str, &str, &str), Vec<&pb::ActivationNotice>> = HashMap::new();
    for (state, n) in &obs.activation_notices {
        got.entry((
            state.as_str(),
            n.jurisdiction_id.as_str(),
            n.activate_on.as_str(),
        ))
        .or_default()
        .push(n);
    }
    for (state, j, on) in &obs.activations {
        let notices = got
            .remove(&(state.as_str(), j.as_str(), on.as_str()))
            .unwrap_or_default();
        let [n] = notices.as_slice() else {
            v.fail(
                ACTIVATION_NOTICES,
                j,
                format!(
                    "bureau {state} got {} notices of the activation on {on}",
                    notices.len()
                ),
            );
            continue;
        };
        let early = match (n.notice_on.parse(), on.parse()) {
            (Ok(notice), Ok(on)) => {
                interop_gateway::rules::policy::check_notice(notice, on).is_ok()
            }
            _ => false,
        };
        if !early {
            v.fail(
                ACTIVATION_NOTICES,
                j,
                format!(
                    "notice given {} for the activation on {on}: not in advance",
                    n.notice_on
                ),
            );
        }
    }
    for ((state, j, on), _) in got {
        v.fail(
            ACTIVATION_NOTICES,
            j,
            format!("bureau {state} got a notice of an activation on {on} nobody made"),
        );
    }
}
