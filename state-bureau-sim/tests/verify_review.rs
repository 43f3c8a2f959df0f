//! The verdict's checks on the profiling review can fail: figures counting identifications the
//! run never made, a closed quarter never assessed, a stored assessment behind its data or
//! flagging other than its method, and an in-depth analysis that does not follow the previous
//! quarter's flags each fail the review's check; the same observations as the gateway should
//! have made them pass.

use interop_proto::v1 as pb;
use state_bureau_sim::verify::review::{AssessmentSeen, FigureMap, REVIEW, WINDOW};
use state_bureau_sim::verify::{self, Observations};
use std::collections::HashMap;

fn failures(v: &verify::Verification) -> usize {
    v.checks
        .iter()
        .find(|c| c.name == REVIEW)
        .map(|c| c.failures)
        .expect("the review's check")
}

fn flag(j: &str) -> pb::OutlierFlag {
    pb::OutlierFlag {
        jurisdiction_id: j.into(),
        group: "hispanic".into(),
        ..Default::default()
    }
}

fn review(flags: &[&str], n: u64) -> pb::OutlierReview {
    pb::OutlierReview {
        flags: flags.iter().map(|j| flag(j)).collect(),
        figures: vec![pb::GroupFigures {
            jurisdiction_id: "TX201".into(),
            group: "hispanic".into(),
            minor_traffic: n,
            identifications: n,
        }],
        ..Default::default()
    }
}

fn stored(quarter: &str, r: pb::OutlierReview, in_depth: &[&str]) -> pb::QuarterlyAssessment {
    pb::QuarterlyAssessment {
        quarter: quarter.into(),
        revision: 1,
        review: Some(r),
        in_depth: in_depth
            .iter()
            .map(|j| pb::InDepth {
                jurisdiction_id: j.to_string(),
                group: "hispanic".into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn good() -> Observations {
    Observations {
        review_figures: Some(FigureMap::new()),
        assessments: vec![
            AssessmentSeen {
                quarter: "FY2011Q3".into(),
                stored: Some(stored("FY2011Q3", review(&["TX201"], 12), &[])),
                on_demand: review(&["TX201"], 12),
            },
            AssessmentSeen {
                quarter: "FY2011Q4".into(),
                stored: Some(stored("FY2011Q4", review(&[], 3), &["TX201"])),
                on_demand: review(&[], 3),
            },
        ],
        ..Default::default()
    }
}

fn judged(o: &Observations) -> verify::Verification {
    verify::verify(&[], o, &HashMap::new())
}

#[test]
fn the_review_is_held_to_the_runs_identifications_and_its_schedule() {
    let v = judged(&good());
    assert_eq!(failures(&v), 0, "{:?}", v.violations);

    // A gateway that counts an identification nobody made.
    let mut o = good();
    o.review_figures = Some(FigureMap::from([(
        (
            WINDOW.to_string(),
            "TX201".to_string(),
            "hispanic".to_string(),
        ),
        (1, 1),
    )]));
    assert_eq!(failures(&judged(&o)), 1);
    assert!(!judged(&o).passed());

    // A closed quarter never assessed.
    let mut o = good();
    o.assessments[0].stored = None;
    assert!(failures(&judged(&o)) >= 1);

    // A stored assessment behind its quarter's data.
    let mut o = good();
    o.assessments[1].on_demand = review(&[], 4);
    assert_eq!(failures(&judged(&o)), 1);

    // A stored assessment whose flags are not the method's on its figures.
    let mut o = good();
    o.assessments[0].stored = Some(stored("FY2011Q3", review(&[], 12), &[]));
    assert!(failures(&judged(&o)) >= 1);

    // An in-depth analysis that does not follow last quarter's flags.
    let mut o = good();
    o.assessments[1].stored = Some(stored("FY2011Q4", review(&[], 3), &[]));
    assert_eq!(failures(&judged(&o)), 1);
}
