//! Civil-rights complaints (issue 26), over real mutual TLS, along the documents' path (seeds
//! 000, 001): CRCL's intake records a complaint received by any channel; it moves from
//! received to CRCL, investigation, DOJ notification and closing, one stage at a time; a
//! complaint by the person held under a detainer flags it to the field office (which may then
//! review it) and keeps the person from removal while it is open; reads are scoped by role
//! and every answer is audited.

use interop_e2e::*;
use interop_gateway::auth::principal::Principal;
use interop_proto::v1 as pb;
use pb::complaint_service_client::ComplaintServiceClient;
use tonic::Code;
use tonic::transport::Channel;

fn release() -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: 1_307_120_400, // 2011-06-03 17:00 UTC
        nanos: 0,
    }
}

async fn as_(gw: &TestGateway, who: Principal) -> ComplaintServiceClient<Channel> {
    ComplaintServiceClient::new(gw.channel(who).await)
}

fn by_the_person(intake: &str, tcn: &str) -> pb::FileComplaintRequest {
    pb::FileComplaintRequest {
        intake_id: intake.into(),
        complainant: pb::ComplainantKind::Person as i32,
        complainant_is_booked_person: true,
        state: "TX".into(),
        tcn: tcn.into(),
        jurisdiction_id: String::new(),
        allegation: pb::Allegation::RacialOrEthnicProfiling as i32,
        channel: pb::ComplaintChannel::JointIntakeCenter as i32,
        received_on: "2011-06-10".into(),
    }
}

fn step(id: &str, stage: pb::ComplaintStage, on: &str) -> pb::AdvanceComplaintRequest {
    pb::AdvanceComplaintRequest {
        complaint_id: id.into(),
        stage: stage as i32,
        on: on.into(),
        outcome: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complaint_by_a_detained_person_is_flagged_investigated_and_keeps_them_here() {
    let gw = TestGateway::start().await;
    let held = "TX-CRCL-0001";
    gw.book("TX", held, TX_RECEIVING, OVERSTAY_FELON).await;
    let mut hou = gw.office("HOU").await;
    hou.decide(detain("TX", held, release())).await.unwrap();
    let mut crcl = as_(&gw, Principal::Crcl).await;

    // Bad filings are refused, naming the field, and record nothing.
    let before = gw.counters().await;
    let good = by_the_person("JIC-0001", held);
    let bad = [
        (
            pb::FileComplaintRequest {
                intake_id: "jic 1".into(),
                ..good.clone()
            },
            Code::InvalidArgument,
            "intake_id",
        ),
        (
            pb::FileComplaintRequest {
                allegation: 0,
                ..good.clone()
            },
            Code::InvalidArgument,
            "allegation",
        ),
        (
            pb::FileComplaintRequest {
                received_on: "2011-13-01".into(),
                ..good.clone()
            },
            Code::InvalidArgument,
            "received_on",
        ),
        (
            pb::FileComplaintRequest {
                complainant: pb::ComplainantKind::Organisation as i32,
                ..good.clone()
            },
            Code::InvalidArgument,
            "complainant_is_booked_person",
        ),
        (
            pb::FileComplaintRequest {
                tcn: "TX-NEVER-BOOKED".into(),
                ..good.clone()
            },
            Code::NotFound,
            "tcn",
        ),
        (
            pb::FileComplaintRequest {
                state: String::new(),
                tcn: String::new(),
                complainant_is_booked_person: false,
                jurisdiction_id: "XX999".into(),
                ..good.clone()
            },
            Code::NotFound,
            "jurisdiction_id",
        ),
    ];
    for (req, code, field) in bad {
        let e = crcl.file_complaint(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), code, "{req:?}: {e:?}");
        assert!(e.message().starts_with(field), "{}", e.message());
    }
    assert_eq!(gw.counters().await, before, "refusals record nothing");
    // Only CRCL files.
    let e = as_(&gw, Principal::Admin)
        .await
        .file_complaint(good.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // Filed: received (through the Joint Intake Center, ICE refers it), the detainer flagged.
    let c = crcl
        .file_complaint(good.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.complaint_id, "CRCL-JIC-0001");
    assert_eq!(c.stage, pb::ComplaintStage::Received as i32);
    assert_eq!(c.jurisdiction_id, TX_RECEIVING);
    assert_eq!(c.field_office, "HOU");
    assert!(c.detainer_flagged);
    // Filing again returns it; another complaint under the same intake id is refused.
    assert_eq!(
        crcl.file_complaint(good.clone())
            .await
            .unwrap()
            .into_inner(),
        c
    );
    let e = crcl
        .file_complaint(pb::FileComplaintRequest {
            received_on: "2011-06-11".into(),
            ..good.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);

    // The office is told, once.
    let flags: Vec<pb::ComplaintFlag> = office_log(&gw, "HOU", Some(0))
        .await
        .into_iter()
        .filter_map(|n| n.complaint_flag)
        .collect();
    assert_eq!(flags.len(), 1, "{flags:?}");
    assert_eq!(flags[0].complaint_id, c.complaint_id);
    assert_eq!(flags[0].tcn, held);

    // While it is open, the complainant is not removed.
    let removal = pb::RecordRemovalRequest {
        state: "TX".into(),
        tcn: held.into(),
        removed_on: "2011-07-15".into(),
    };
    let e = hou.record_removal(removal.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("complaint"), "{}", e.message());

    // The stages, one at a time; skipping, going back and closing without an outcome fail.
    use pb::ComplaintStage as S;
    let id = c.complaint_id.clone();
    for (req, code) in [
        (
            step(&id, S::UnderInvestigation, "2011-06-12"),
            Code::FailedPrecondition,
        ),
        (step(&id, S::Closed, "2011-06-12"), Code::InvalidArgument),
        (step(&id, S::Received, "2011-06-12"), Code::InvalidArgument),
        (step(&id, S::WithCrcl, "2011-06-01"), Code::InvalidArgument),
    ] {
        let e = crcl.advance_complaint(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), code, "{req:?}: {e:?}");
    }
    let c = crcl
        .advance_complaint(step(&id, S::WithCrcl, "2011-06-12"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.stage, S::WithCrcl as i32);
    // The same again changes nothing; another date for it is refused.
    assert_eq!(
        crcl.advance_complaint(step(&id, S::WithCrcl, "2011-06-12"))
            .await
            .unwrap()
            .into_inner(),
        c
    );
    let e = crcl
        .advance_complaint(step(&id, S::WithCrcl, "2011-06-13"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    crcl.advance_complaint(step(&id, S::UnderInvestigation, "2011-06-20"))
        .await
        .unwrap();
    crcl.advance_complaint(step(&id, S::DojNotified, "2011-07-01"))
        .await
        .unwrap();
    let e = crcl
        .advance_complaint(step(&id, S::UnderInvestigation, "2011-07-02"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("DOJ notified"), "{}", e.message());

    // The office reviews the flagged detainer (no LESC notice needed) and keeps it.
    let review = hou
        .review_detainer(pb::ReviewDetainerRequest {
            state: "TX".into(),
            tcn: held.into(),
            lift: false,
            reasons: vec![pb::Reason::PublicSafety as i32],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!review.lifted);

    // Closed: the person may then be removed.
    let closed = crcl
        .advance_complaint(pb::AdvanceComplaintRequest {
            outcome: pb::ComplaintOutcome::NotSubstantiated as i32,
            ..step(&id, S::Closed, "2011-08-01")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(closed.stage, S::Closed as i32);
    assert_eq!(
        closed.outcome,
        pb::ComplaintOutcome::NotSubstantiated as i32
    );
    let stages: Vec<(i32, String)> = closed
        .steps
        .iter()
        .map(|s| (s.stage, s.on.clone()))
        .collect();
    assert_eq!(
        stages,
        [
            (S::Received as i32, "2011-06-10".to_string()),
            (S::WithCrcl as i32, "2011-06-12".to_string()),
            (S::UnderInvestigation as i32, "2011-06-20".to_string()),
            (S::DojNotified as i32, "2011-07-01".to_string()),
            (S::Closed as i32, "2011-08-01".to_string()),
        ]
    );
    hou.record_removal(removal).await.unwrap();

    // It survives a restart, as it stands.
    let gw = gw.restart(None).await;
    let mut admin = as_(&gw, Principal::Admin).await;
    let read = admin
        .get_complaint(pb::GetComplaintRequest {
            complaint_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read, closed);
    let counters = gw.counters().await;
    assert_eq!(counters.get("complaints_filed"), Some(&1));
    assert_eq!(counters.get("complaints_closed"), Some(&1));
    assert_eq!(counters.get("complaints_doj_notified"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complaints_are_read_in_scope_listed_in_order_and_every_read_is_audited() {
    let gw = TestGateway::start().await;
    let tcn = "TX-CRCL-0002";
    gw.book("TX", tcn, TX_RECEIVING, OVERSTAY_FELON).await;
    let mut crcl = as_(&gw, Principal::Crcl).await;
    // An organisation's complaint about a jurisdiction, filed with CRCL directly: with CRCL
    // from the start, no detainer flagged.
    let about_county = crcl
        .file_complaint(pb::FileComplaintRequest {
            intake_id: "CRCL-WEB-1".into(),
            complainant: pb::ComplainantKind::Organisation as i32,
            complainant_is_booked_person: false,
            state: String::new(),
            tcn: String::new(),
            jurisdiction_id: CA_RECEIVING.into(),
            allegation: pb::Allegation::RacialOrEthnicProfiling as i32,
            channel: pb::ComplaintChannel::Crcl as i32,
            received_on: "2011-06-02".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(about_county.stage, pb::ComplaintStage::WithCrcl as i32);
    assert!(!about_county.detainer_flagged);
    // The person's own complaint about a booking with no detainer: nothing to flag.
    let about_booking = crcl
        .file_complaint(by_the_person("HOTLINE-7", tcn))
        .await
        .unwrap()
        .into_inner();
    assert!(!about_booking.detainer_flagged);

    // Listed in filing order, by CRCL and the admin, in pages.
    let list = |after, limit| pb::ListComplaintsRequest {
        after_cursor: after,
        limit,
    };
    let page = crcl
        .list_complaints(list(0, 1))
        .await
        .unwrap()
        .into_inner()
        .complaints;
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].complaint.as_ref().unwrap(), &about_county);
    let rest = as_(&gw, Principal::Admin)
        .await
        .list_complaints(list(page[0].cursor, 0))
        .await
        .unwrap()
        .into_inner()
        .complaints;
    let ids: Vec<&str> = rest
        .iter()
        .map(|l| l.complaint.as_ref().unwrap().complaint_id.as_str())
        .collect();
    assert_eq!(ids, ["CRCL-HOTLINE-7"]);
    let e = crcl.list_complaints(list(0, 1001)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // A field office reads the complaint about a booking in its area, and nothing else: the
    // jurisdiction complaint and another office's reads are NOT_FOUND, as an unknown id.
    let mut hou = as_(
        &gw,
        Principal::FieldOffice {
            office: "HOU".into(),
        },
    )
    .await;
    let get = |id: &str| pb::GetComplaintRequest {
        complaint_id: id.into(),
    };
    assert_eq!(
        hou.get_complaint(get("CRCL-HOTLINE-7"))
            .await
            .unwrap()
            .into_inner(),
        about_booking
    );
    for id in ["CRCL-CRCL-WEB-1", "CRCL-NOPE"] {
        let e = hou.get_complaint(get(id)).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{id}");
    }
    let mut los = as_(
        &gw,
        Principal::FieldOffice {
            office: "LOS".into(),
        },
    )
    .await;
    let e = los.get_complaint(get("CRCL-HOTLINE-7")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Bureaus and the LESC read none.
    for who in [Principal::Bureau { state: "TX".into() }, Principal::Lesc] {
        let e = as_(&gw, who.clone())
            .await
            .get_complaint(get("CRCL-HOTLINE-7"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{who:?}");
        let e = as_(&gw, who.clone())
            .await
            .list_complaints(list(0, 0))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{who:?}");
    }

    // Every answer carrying the booking's complaint is in the audit: CRCL's filing, its list,
    // the admin's list, the office's read.
    let audit = list_disclosures(&gw, tcn, "", 100).await;
    let complaint_reads: Vec<(&str, &str)> = audit
        .iter()
        .filter(|d| d.kind == pb::DisclosureKind::Complaint as i32)
        .map(|d| (d.recipient.as_str(), d.rpc.as_str()))
        .collect();
    assert_eq!(
        complaint_reads,
        [
            (
                "spiffe://interop.local/crcl",
                "interop.v1.ComplaintService/FileComplaint"
            ),
            (
                "spiffe://interop.local/admin",
                "interop.v1.ComplaintService/ListComplaints"
            ),
            (
                "spiffe://interop.local/field-office/HOU",
                "interop.v1.ComplaintService/GetComplaint"
            ),
        ]
    );
}
