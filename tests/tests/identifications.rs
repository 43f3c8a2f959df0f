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
    let ask = |tcn: &str| {
        detain(
            "TX",
            tcn,
            prost_types::Timestamp {
                seconds: 1_307_120_400, // 2011-06-03 17:00 UTC
                nanos: 0,
            },
        )
    };
    let e_miss = hou.decide(ask(miss)).await.unwrap_err();
    let e_none = hou.decide(ask("TX-NEVER-SENT-01")).await.unwrap_err();
    assert_eq!(e_miss.code(), tonic::Code::NotFound, "{e_miss:?}");
    assert_eq!(
        (e_miss.code(), e_miss.message()),
        (e_none.code(), e_none.message())
    );
}

/// The detainer form as the documents give it (seeds 000, 001): its notice travels with the
/// detainer to the jail, and the jail's acknowledgement that the person got a copy is recorded
/// once; a TCN without a detainer, another state's detainer or a bad time is refused and
/// records nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detainer_carries_the_forms_notice_and_the_jail_acknowledges_the_copy() {
    let gw = TestGateway::start().await;
    let tcn = "TX-FORM-0001";
    gw.book("TX", tcn, TX_RECEIVING, OVERSTAY_FELON).await;
    let now = || prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp(),
        nanos: 0,
    };
    let d = gw
        .office("HOU")
        .await
        .decide(detain(
            "TX",
            tcn,
            prost_types::Timestamp {
                seconds: 1_307_120_400,
                nanos: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .detainer
        .expect("a detainer decision carries its detainer");

    // The notice, as the jail receives it.
    let log = bureau_log(&gw, "TX").await;
    let received = log
        .iter()
        .find_map(|r| match &r.body {
            Some(pb::bureau_response::Body::Detainer(d)) => Some(d.clone()),
            _ => None,
        })
        .expect("the jail got the detainer");
    let n = received.notice.expect("the form's notice");
    assert_eq!(n.form_revision, "2011-12");
    assert!(n.copy_to_person && n.weekends_and_holidays_excluded);
    assert_eq!(n.hold_hours, 48);
    assert_eq!(n.complaint_instruction_languages, 6);
    assert_eq!(n.joint_intake_center, "1-877-2INTAKE (877-246-8253)");
    assert_eq!(n.lesc_hotline, "(855) 448-6903");
    assert!(n.notify_lesc_if_victim_or_witness);

    // The jail acknowledges the copy; asked again, the first record stands.
    let mut jail = gw.bureau("TX").await;
    let ask = |tcn: &str, given_at| pb::AcknowledgeDetainerCopyRequest {
        tcn: tcn.into(),
        given_at,
    };
    let first = jail
        .acknowledge_detainer_copy(ask(tcn, Some(now())))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.detainer_id, d.detainer_id);
    let again = jail
        .acknowledge_detainer_copy(ask(tcn, Some(now())))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first, "recorded once");
    assert_eq!(gw.counters().await.get("detainer_copies_given"), Some(&1));

    // Refused, and nothing recorded: no detainer for the TCN, another state's bureau, no or a
    // future time.
    let e = jail
        .acknowledge_detainer_copy(ask("TX-FORM-0404", Some(now())))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let e = gw
        .bureau("CA")
        .await
        .acknowledge_detainer_copy(ask(tcn, Some(now())))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    for bad in [
        None,
        Some(prost_types::Timestamp {
            seconds: chrono::Utc::now().timestamp() + 86_400,
            nanos: 0,
        }),
    ] {
        let e = jail
            .acknowledge_detainer_copy(ask("TX-FORM-0001", bad))
            .await
            .unwrap_err();
        // Checked even once the acknowledgement is recorded.
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("given_at"), "{}", e.message());
    }
    assert_eq!(gw.counters().await.get("detainer_copies_given"), Some(&1));
}
