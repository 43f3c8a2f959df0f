//! The verdict's checks on the ICE side can fail: a decision recorded other than asked (or
//! without the recommendation it followed), an LESC notice that never reached its office, and a
//! lift the jail never got each fail their check, naming the TCN; the same observations as
//! the gateway should have answered them pass.

use interop_proto::v1 as pb;
use state_bureau_sim::verify::{self, DecisionSeen, Observations, ReviewSeen};
use std::collections::HashMap;

fn failures(v: &verify::Verification, check: &str) -> usize {
    v.checks
        .iter()
        .find(|c| c.name == check)
        .map(|c| c.failures)
        .unwrap_or_else(|| panic!("no check named {check}"))
}

const TCN: &str = "TX-VERIFY-0001";

fn good() -> Observations {
    let detainer = pb::Detainer {
        detainer_id: format!("DET-TX-{TCN}"),
        tcn: TCN.into(),
        field_office: "HOU".into(),
        ..Default::default()
    };
    let decision = pb::Decision {
        tcn: TCN.into(),
        action: pb::Action::Detainer as i32,
        reasons: vec![pb::Reason::CriminalPriority as i32],
        recommendation: pb::Recommendation::None as i32,
        detainer: Some(detainer.clone()),
        ..Default::default()
    };
    let notice = format!("LESC-TX-{TCN}-J");
    Observations {
        decisions: vec![DecisionSeen {
            state: "TX".into(),
            asked: pb::Action::Detainer as i32,
            reasons: vec![pb::Reason::CriminalPriority as i32],
            recommendation: pb::Recommendation::None as i32,
            decision,
            repeat_same: true,
            other_refused: Some(true),
        }],
        lesc_sent: vec![("HOU".into(), notice.clone(), TCN.into())],
        lesc_received: vec![("HOU".into(), notice)],
        reviews: vec![ReviewSeen {
            state: "TX".into(),
            tcn: TCN.into(),
            lift: true,
            review: pb::DetainerReview {
                detainer_id: detainer.detainer_id.clone(),
                tcn: TCN.into(),
                lifted: true,
                ..Default::default()
            },
            repeat_same: true,
        }],
        lifts_received: vec![("TX".into(), TCN.into(), detainer.detainer_id)],
        removal_after_lift_refused: Some(true),
        ..Default::default()
    }
}

#[test]
fn the_ice_side_is_held_to_what_was_asked() {
    let v = verify::verify(&[], &good(), &HashMap::new());
    for check in [verify::DECISIONS, verify::LESC, verify::REVIEWS] {
        assert_eq!(failures(&v, check), 0, "{check}: {:?}", v.violations);
    }

    // A gateway that records the recommendation's action instead of the officer's.
    let mut o = good();
    o.decisions[0].decision.action = pb::Action::NoAction as i32;
    o.decisions[0].decision.detainer = None;
    let v = verify::verify(&[], &o, &HashMap::new());
    assert!(failures(&v, verify::DECISIONS) >= 1, "{:?}", v.violations);
    assert!(v.violations.iter().any(|l| l.starts_with(TCN)));
    assert!(!v.passed());

    // One that drops the recommendation it overrode, or takes a second decision.
    let mut o = good();
    o.decisions[0].decision.recommendation = pb::Recommendation::Detainer as i32;
    o.decisions[0].other_refused = Some(false);
    let v = verify::verify(&[], &o, &HashMap::new());
    assert_eq!(failures(&v, verify::DECISIONS), 2, "{:?}", v.violations);

    // One that loses an LESC notice, or delivers it twice.
    let mut o = good();
    o.lesc_received.clear();
    let v = verify::verify(&[], &o, &HashMap::new());
    assert_eq!(failures(&v, verify::LESC), 1, "{:?}", v.violations);
    let mut o = good();
    o.lesc_received.push(o.lesc_received[0].clone());
    let v = verify::verify(&[], &o, &HashMap::new());
    assert_eq!(failures(&v, verify::LESC), 1, "{:?}", v.violations);

    // One that never tells the jail of a lift, or removes a person whose detainer was lifted.
    let mut o = good();
    o.lifts_received.clear();
    o.removal_after_lift_refused = Some(false);
    let v = verify::verify(&[], &o, &HashMap::new());
    assert_eq!(failures(&v, verify::REVIEWS), 2, "{:?}", v.violations);
}

#[test]
fn an_activation_without_its_advance_notice_fails() {
    let made = (
        "TX".to_string(),
        "TX205".to_string(),
        "2008-10-27".to_string(),
    );
    let notice = |notice_on: &str| pb::ActivationNotice {
        jurisdiction_id: "TX205".into(),
        notice_on: notice_on.into(),
        activate_on: "2008-10-27".into(),
        ..Default::default()
    };
    let obs = |notices: Vec<pb::ActivationNotice>| Observations {
        activations: vec![made.clone()],
        activation_notices: notices.into_iter().map(|n| ("TX".to_string(), n)).collect(),
        ..Default::default()
    };
    let v = verify::verify(&[], &obs(vec![notice("2008-09-27")]), &HashMap::new());
    assert_eq!(
        failures(&v, verify::ACTIVATION_NOTICES),
        0,
        "{:?}",
        v.violations
    );
    // None, two, one a week ahead, one nobody made.
    for (notices, n) in [
        (vec![], 1),
        (vec![notice("2008-09-27"), notice("2008-09-27")], 1),
        (vec![notice("2008-10-20")], 1),
        (
            vec![
                notice("2008-09-27"),
                pb::ActivationNotice {
                    jurisdiction_id: "TX201".into(),
                    ..notice("2008-09-27")
                },
            ],
            1,
        ),
    ] {
        let v = verify::verify(&[], &obs(notices.clone()), &HashMap::new());
        assert_eq!(
            failures(&v, verify::ACTIVATION_NOTICES),
            n,
            "{notices:?}: {:?}",
            v.violations
        );
    }
}

#[test]
fn a_conviction_that_makes_nothing_operative_fails() {
    let conviction = ("TX".to_string(), TCN.to_string(), format!("DET-TX-{TCN}"));
    let obs = |received: usize, refused: Option<bool>| Observations {
        convictions: vec![conviction.clone()],
        operative_received: vec![conviction.clone(); received],
        removal_before_conviction_refused: refused,
        ..Default::default()
    };
    let v = verify::verify(&[], &obs(1, Some(true)), &HashMap::new());
    assert_eq!(failures(&v, verify::OPERATIVE), 0, "{:?}", v.violations);
    for (received, refused, n) in [(0, Some(true), 1), (2, Some(true), 1), (1, Some(false), 1)] {
        let v = verify::verify(&[], &obs(received, refused), &HashMap::new());
        assert_eq!(
            failures(&v, verify::OPERATIVE),
            n,
            "{received} {refused:?}: {:?}",
            v.violations
        );
    }
}

#[test]
fn complaints_are_held_to_crcls_path_their_flags_and_the_complainants_protection() {
    use state_bureau_sim::officers::complaint_path;
    use state_bureau_sim::verify::ComplaintSeen;
    // A complaint as CRCL moved it along the simulator's path for TCN.
    let (path, outcome) = complaint_path(TCN);
    let mut steps = vec![pb::ComplaintStep {
        stage: pb::ComplaintStage::Received as i32,
        on: "2011-06-10".into(),
    }];
    let received: chrono::NaiveDate = "2011-06-10".parse().unwrap();
    for (stage, day) in &path {
        steps.push(pb::ComplaintStep {
            stage: *stage as i32,
            on: (received + chrono::Days::new(*day)).to_string(),
        });
    }
    let id = format!("CRCL-JIC-{TCN}");
    let seen = ComplaintSeen {
        state: "TX".into(),
        tcn: TCN.into(),
        office: "HOU".into(),
        complaint: pb::Complaint {
            complaint_id: id.clone(),
            stage: steps.last().unwrap().stage,
            steps,
            outcome: outcome as i32,
            detainer_flagged: true,
            ..Default::default()
        },
        repeats_same: true,
    };
    let ok = || Observations {
        complaints: vec![seen.clone()],
        complaint_flags_received: vec![("HOU".into(), id.clone())],
        removal_of_complainant_refused: Some(true),
        ..Default::default()
    };
    let v = verify::verify(&[], &ok(), &HashMap::new());
    assert_eq!(failures(&v, verify::COMPLAINTS), 0, "{:?}", v.violations);

    // A gateway that loses a stage, drops the flag, or removes an open complainant fails,
    // naming the TCN where there is one.
    let mut lost_stage = ok();
    lost_stage.complaints[0].complaint.steps.pop();
    let mut no_flag = ok();
    no_flag.complaint_flags_received.clear();
    let mut removed = ok();
    removed.removal_of_complainant_refused = Some(false);
    for (name, o) in [
        ("lost stage", lost_stage),
        ("no flag", no_flag),
        ("removed", removed),
    ] {
        let v = verify::verify(&[], &o, &HashMap::new());
        assert!(
            failures(&v, verify::COMPLAINTS) >= 1,
            "{name}: {:?}",
            v.violations
        );
        assert!(!v.passed(), "{name}");
    }
}

#[test]
fn the_review_must_list_the_complaints_of_profiling_received_in_the_window() {
    let obs = |listed: &[(&str, u64, bool)], flags: &[&str]| Observations {
        org_complaints: vec![("TX201".into(), "CRCL-ORG-TX201".into())],
        review_complained: Some(
            listed
                .iter()
                .map(|(j, n, f)| (j.to_string(), (*n, *f)))
                .collect(),
        ),
        review_flags: flags
            .iter()
            .map(|j| (j.to_string(), "minor_traffic_only_arrests".into()))
            .collect(),
        ..Default::default()
    };
    let ok = verify::verify(
        &[],
        &obs(&[("TX201", 1, true)], &["TX201"]),
        &HashMap::new(),
    );
    assert_eq!(failures(&ok, verify::COMPLAINTS), 0, "{:?}", ok.violations);
    // A complaint the review does not count, one it counts twice, or a "flagged" that its own
    // flags contradict: each fails.
    for (listed, flags) in [
        (vec![], vec!["TX201"]),
        (vec![("TX201", 2, true)], vec!["TX201"]),
        (vec![("TX201", 1, false)], vec!["TX201"]),
    ] {
        let v = verify::verify(&[], &obs(&listed, &flags), &HashMap::new());
        assert!(
            failures(&v, verify::COMPLAINTS) >= 1,
            "{listed:?}: {:?}",
            v.violations
        );
    }
}
