//! The verdict's check that no-hits are never disclosed can fail: observations in which a
//! field office and a bureau were sent an outcome without an identification (what a gateway
//! that discloses no-hits would send) fail "no-hits disclosed", once per message, naming the
//! TCN; the same observations without them do not.

use interop_proto::v1 as pb;
use state_bureau_sim::bookings::{self, WorldData};
use state_bureau_sim::verify::{self, Observations};
use std::collections::HashMap;
use std::time::Instant;

fn failures(v: &verify::Verification, check: &str) -> usize {
    v.checks
        .iter()
        .find(|c| c.name == check)
        .map(|c| c.failures)
        .unwrap_or_else(|| panic!("no check named {check}"))
}

#[test]
fn a_disclosed_no_hit_fails_the_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let world = dir.path().join("world");
    state_bureau_sim::generate::generate(5, 1_200, &world).unwrap();
    let data = WorldData::load(&world).unwrap();
    let (from, days) = state_bureau_sim::demo::booking_window();
    let plan = bookings::plan(&data, 5, 200, from, days, &Default::default());
    let b = plan
        .iter()
        .find(|b| b.expected.searched && b.expected.fin.is_empty() && b.expected.bureau_receives)
        .expect("a searched booking of someone not in IDENT, in a receiving jurisdiction");
    let tcn = b.submission.tcn.clone();
    let no_hit = pb::IdentOutcome {
        tcn: tcn.clone(),
        jurisdiction_id: b.submission.jurisdiction_id.clone(),
        hit: false,
        ..Default::default()
    };

    let clean = verify::verify(&plan, &Observations::default(), &HashMap::new());
    assert_eq!(failures(&clean, verify::NO_HITS), 0);

    let obs = Observations {
        office: vec![(
            b.expected.field_office.clone(),
            pb::FieldOfficeNotification {
                cursor: 1,
                outcome: Some(no_hit.clone()),
                ..Default::default()
            },
            Instant::now(),
        )],
        bureau: vec![(
            b.state.clone(),
            pb::BureauResponse {
                cursor: 1,
                tcn: tcn.clone(),
                body: Some(pb::bureau_response::Body::Immigration(
                    pb::ImmigrationResponse {
                        outcome: Some(no_hit),
                    },
                )),
            },
            Instant::now(),
        )],
        ..Default::default()
    };
    let v = verify::verify(&plan, &obs, &HashMap::new());
    assert_eq!(failures(&v, verify::NO_HITS), 2, "{:?}", v.violations);
    assert!(!v.passed());
    assert!(
        v.violations
            .iter()
            .any(|l| l.starts_with(&tcn) && l.contains("without an identification")),
        "{:?}",
        v.violations
    );
}
