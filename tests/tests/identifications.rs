//! Identifications only (DESIGN §3.2; seed 001: "where there is a positive match ... ICE
//! provides to the LEA ... ICE's initial status determination about the individual's alienage
//! and removability as well as biographical information about the individual contained in
//! federal databases"), over real mutual TLS:
//! - a no-hit is counted and disclosed to no one — no field-office notification, no bureau
//!   immigration response, no detainer on it (refused as for a TCN that does not exist);
//! - an identification reaches the field office and, where the jurisdiction receives results,
//!   the bureau, with the identified record's biographics beside the status determination.

use interop_e2e::*;
use interop_proto::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_hit_is_counted_and_disclosed_to_no_one() {
    let gw = TestGateway::start().await;
    let mut bureau = gw.bureau("TX").await;
    let (miss, hit) = ("TX-NOHIT-0001", "TX-NOHIT-0002");
    bureau
        .submit(booking(miss, TX_RECEIVING, NOBODY))
        .await
        .unwrap();
    bureau
        .submit(booking(hit, TX_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap();
    wait_completed(&gw, "TX", miss).await;
    wait_completed(&gw, "TX", hit).await;

    // Counted: two searches, one match.
    let c = gw.counters().await;
    assert_eq!(c.get("ident_searches"), Some(&2), "{c:?}");
    assert_eq!(c.get("ident_hits"), Some(&1), "{c:?}");

    // The office hears of the identification only.
    let notes = office_log(&gw, "HOU", Some(0)).await;
    let told: Vec<&str> = notes
        .iter()
        .filter_map(|n| n.outcome.as_ref())
        .map(|o| o.tcn.as_str())
        .collect();
    assert_eq!(told, [hit]);

    // The bureau: a criminal-history response for each, an immigration response for the
    // identification only.
    let log = bureau_log(&gw, "TX").await;
    let of =
        |tcn: &str| -> Vec<&pb::BureauResponse> { log.iter().filter(|r| r.tcn == tcn).collect() };
    assert!(matches!(
        of(miss).as_slice(),
        [pb::BureauResponse {
            body: Some(pb::bureau_response::Body::CriminalHistory(_)),
            ..
        }]
    ));
    let imm: Vec<&pb::IdentOutcome> = of(hit)
        .into_iter()
        .filter_map(|r| match &r.body {
            Some(pb::bureau_response::Body::Immigration(i)) => i.outcome.as_ref(),
            _ => None,
        })
        .collect();
    assert_eq!(imm.len(), 1);

    // The identification carries the record's biographics and ICE's determination.
    let o = imm[0];
    assert!(o.hit);
    assert_eq!(o.fin, fin(OVERSTAY_FELON));
    assert_eq!(o.status, pb::ImmigrationStatus::VisaOverstay as i32);
    let want = biographics(OVERSTAY_FELON);
    let got = o.biographics.as_ref().expect("biographics");
    assert_eq!(got.name, want.name);
    assert_eq!(
        got.date_of_birth,
        want.date_of_birth.unwrap().format("%Y-%m-%d").to_string()
    );
    assert_eq!(got.place_of_birth, want.place_of_birth);
    assert_eq!(got.sex, pb::Sex::Male as i32);
    assert_eq!(
        notes[0].outcome.as_ref().unwrap().biographics.as_ref(),
        Some(got),
        "the field office gets the same identification"
    );

    // A detainer on the no-hit is refused exactly as on a TCN that does not exist: the
    // refusal tells the office nothing of the booking.
    let mut hou = gw.office("HOU").await;
    let ask = |tcn: &str| pb::IssueDetainerRequest {
        state: "TX".into(),
        tcn: tcn.into(),
        scheduled_release: Some(prost_types::Timestamp {
            seconds: 1_307_120_400, // 2011-06-03 17:00 UTC
            nanos: 0,
        }),
    };
    let e_miss = hou.issue_detainer(ask(miss)).await.unwrap_err();
    let e_none = hou
        .issue_detainer(ask("TX-NEVER-SENT-01"))
        .await
        .unwrap_err();
    assert_eq!(e_miss.code(), tonic::Code::NotFound, "{e_miss:?}");
    assert_eq!(
        (e_miss.code(), e_miss.message()),
        (e_none.code(), e_none.message())
    );
}
