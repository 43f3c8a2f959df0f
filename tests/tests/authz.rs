//! The authorization matrix (least privilege): every role × every RPC of the gateway, over
//! real mutual TLS. A role outside a service's allowed cell gets PERMISSION_DENIED and changes
//! nothing; inside it, the call is not refused for who it is (it may still fail for what it
//! asks). Then the in-scope/out-of-scope cells: another state's or another area's booking is
//! indistinguishable from one that does not exist. Certificates from another CA, expired
//! ones, and none at all never get past the handshake.

use interop_e2e::*;
use interop_gateway::auth::principal::Principal;
use interop_gateway_cli::pki::{self, IdentityFiles};
use interop_proto::v1 as pb;
use pb::admin_service_client::AdminServiceClient;
use pb::complaint_service_client::ComplaintServiceClient;
use pb::criminal_history_service_client::CriminalHistoryServiceClient;
use pb::field_office_service_client::FieldOfficeServiceClient;
use pb::lesc_service_client::LescServiceClient;
use pb::matcher_service_client::MatcherServiceClient;
use pb::submission_service_client::SubmissionServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Service {
    Submission,
    FieldOffice,
    Lesc,
    Admin,
    Matcher,
    CriminalHistory,
    Complaint,
}

/// Every RPC of every service the gateway serves.
const RPCS: [(&str, Service); 34] = [
    ("Submit", Service::Submission),
    ("SubmitStream", Service::Submission),
    ("GetStatus", Service::Submission),
    ("StreamResponses", Service::Submission),
    ("NotifyLesc", Service::Submission),
    ("ReportConviction", Service::Submission),
    ("Subscribe", Service::FieldOffice),
    ("Ack", Service::FieldOffice),
    ("Decide", Service::FieldOffice),
    ("RecordRemoval", Service::FieldOffice),
    ("ReviewDetainer", Service::FieldOffice),
    ("RecordHotlineCall", Service::Lesc),
    ("GetPolicy", Service::Admin),
    ("SetPolicy", Service::Admin),
    ("SetStatePolicy", Service::Admin),
    ("ListJurisdictions", Service::Admin),
    ("ListFieldOffices", Service::Admin),
    ("GetCounters", Service::Admin),
    ("GetMonthlyStats", Service::Admin),
    ("QuarterlyReview", Service::Admin),
    ("GetAssessment", Service::Admin),
    ("ListAssessments", Service::Admin),
    ("ListDisclosures", Service::Admin),
    ("RevokeCertificate", Service::Admin),
    ("ListRevoked", Service::Admin),
    ("ReloadCertificates", Service::Admin),
    ("Search", Service::Matcher),
    ("Enroll", Service::Matcher),
    ("Remove", Service::Matcher),
    ("Check", Service::CriminalHistory),
    ("FileComplaint", Service::Complaint),
    ("AdvanceComplaint", Service::Complaint),
    ("GetComplaint", Service::Complaint),
    ("ListComplaints", Service::Complaint),
];

fn allowed(who: &Principal, rpc: &str, service: Service) -> bool {
    if service == Service::Complaint {
        // CRCL records and moves complaints; the admin reads them all; a field office reads
        // one about a booking in its area.
        return match who {
            Principal::Crcl => true,
            Principal::Admin => matches!(rpc, "GetComplaint" | "ListComplaints"),
            Principal::FieldOffice { .. } => rpc == "GetComplaint",
            _ => false,
        };
    }
    matches!(
        (who, service),
        (Principal::Bureau { .. }, Service::Submission)
            | (Principal::FieldOffice { .. }, Service::FieldOffice)
            | (Principal::Lesc, Service::Lesc)
            | (
                Principal::Admin,
                Service::Admin | Service::Matcher | Service::CriminalHistory
            )
    )
}

/// Calls `rpc` as the channel's principal with a request that would be in scope for it.
async fn call(ch: Channel, rpc: &str, state: &str) -> Result<(), Status> {
    let mut sub = SubmissionServiceClient::new(ch.clone());
    let mut office = FieldOfficeServiceClient::new(ch.clone());
    let mut lesc = LescServiceClient::new(ch.clone());
    let mut admin = AdminServiceClient::new(ch.clone());
    let mut matcher = MatcherServiceClient::new(ch.clone());
    let mut criminal = CriminalHistoryServiceClient::new(ch.clone());
    let mut complaints = ComplaintServiceClient::new(ch);
    let jurisdiction = if state == "CA" {
        CA_RECEIVING
    } else {
        TX_RECEIVING
    };
    let tcn = format!("{state}-AUTHZ-{}", rpc.len());
    let fingers = booking(&tcn, jurisdiction, NOBODY).fingers;
    match rpc {
        "Submit" => sub
            .submit(booking(&tcn, jurisdiction, NOBODY))
            .await
            .map(drop),
        "SubmitStream" => {
            let req = tokio_stream::iter([booking(&tcn, jurisdiction, NOBODY)]);
            let mut s = sub.submit_stream(req).await?.into_inner();
            s.message().await.map(drop)
        }
        "GetStatus" => sub.get_status(pb::GetStatusRequest { tcn }).await.map(drop),
        "StreamResponses" => {
            let mut s = sub
                .stream_responses(pb::StreamResponsesRequest {
                    after_cursor: 0,
                    follow: false,
                })
                .await?
                .into_inner();
            while s.message().await?.is_some() {}
            Ok(())
        }
        "Subscribe" => {
            let mut s = office
                .subscribe(pb::SubscribeRequest {
                    after_cursor: Some(0),
                    follow: false,
                })
                .await?
                .into_inner();
            while s.message().await?.is_some() {}
            Ok(())
        }
        "Ack" => office.ack(pb::AckRequest { cursor: 0 }).await.map(drop),
        "Decide" => office
            .decide(pb::DecideRequest {
                state: state.into(),
                tcn,
                action: pb::Action::Detainer as i32,
                reasons: vec![pb::Reason::CriminalPriority as i32],
                scheduled_release: Some(prost_types::Timestamp {
                    seconds: 1_307_000_000,
                    nanos: 0,
                }),
            })
            .await
            .map(drop),
        "ReviewDetainer" => office
            .review_detainer(pb::ReviewDetainerRequest {
                state: state.into(),
                tcn,
                lift: true,
                reasons: vec![pb::Reason::VictimOrWitness as i32],
            })
            .await
            .map(drop),
        "NotifyLesc" => sub
            .notify_lesc(pb::NotifyLescRequest {
                tcn,
                concerns: vec![pb::LescConcern::Witness as i32],
                noticed_at: Some(prost_types::Timestamp {
                    seconds: 1_307_000_000,
                    nanos: 0,
                }),
            })
            .await
            .map(drop),
        "ReportConviction" => sub
            .report_conviction(pb::ReportConvictionRequest {
                tcn,
                convicted_on: "2011-07-01".into(),
            })
            .await
            .map(drop),
        "RecordHotlineCall" => lesc
            .record_hotline_call(pb::RecordHotlineCallRequest {
                state: state.into(),
                tcn,
                concerns: vec![pb::LescConcern::CrimeVictim as i32],
                called_at: Some(prost_types::Timestamp {
                    seconds: 1_307_000_000,
                    nanos: 0,
                }),
            })
            .await
            .map(drop),
        "RecordRemoval" => office
            .record_removal(pb::RecordRemovalRequest {
                state: state.into(),
                tcn,
                removed_on: "2011-09-01".into(),
            })
            .await
            .map(drop),
        "GetPolicy" => admin
            .get_policy(pb::GetPolicyRequest {
                jurisdiction_id: CA_RECEIVING.into(),
            })
            .await
            .map(drop),
        // Writes that change nothing: the values the world already has.
        "SetPolicy" => admin
            .set_policy(pb::SetPolicyRequest {
                jurisdiction_id: CA_RECEIVING.into(),
                receives_results: Some(true),
                ..Default::default()
            })
            .await
            .map(drop),
        "SetStatePolicy" => admin
            .set_state_policy(pb::SetStatePolicyRequest {
                state: "CA".into(),
                declines_results: false,
            })
            .await
            .map(drop),
        "ListJurisdictions" => admin
            .list_jurisdictions(pb::ListJurisdictionsRequest::default())
            .await
            .map(drop),
        "ListFieldOffices" => admin
            .list_field_offices(pb::ListFieldOfficesRequest::default())
            .await
            .map(drop),
        "GetCounters" => admin
            .get_counters(pb::GetCountersRequest {})
            .await
            .map(drop),
        "GetMonthlyStats" => admin
            .get_monthly_stats(pb::GetMonthlyStatsRequest {
                month: "2011-06".into(),
                state: String::new(),
            })
            .await
            .map(drop),
        "QuarterlyReview" => admin
            .quarterly_review(pb::QuarterlyReviewRequest {
                quarter: "FY2011Q3".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "GetAssessment" => admin
            .get_assessment(pb::GetAssessmentRequest {
                quarter: "FY2011Q3".into(),
                revision: 0,
            })
            .await
            .map(drop),
        "ListAssessments" => admin
            .list_assessments(pb::ListAssessmentsRequest {})
            .await
            .map(drop),
        "ListDisclosures" => admin
            .list_disclosures(pb::ListDisclosuresRequest::default())
            .await
            .map(drop),
        // A serial no certificate of the test PKI has (rcgen's are 20 random bytes).
        "RevokeCertificate" => admin
            .revoke_certificate(pb::RevokeCertificateRequest {
                serial: "7e57".into(),
                reason: "authorization matrix".into(),
            })
            .await
            .map(drop),
        "ListRevoked" => admin
            .list_revoked(pb::ListRevokedRequest {})
            .await
            .map(drop),
        // Re-reads the same files: nothing changes.
        "ReloadCertificates" => admin
            .reload_certificates(pb::ReloadCertificatesRequest {})
            .await
            .map(drop),
        "Search" => matcher
            .search(pb::SearchRequest {
                fingers,
                max_candidates: 1,
                ..Default::default()
            })
            .await
            .map(drop),
        // A subject id far from the test galleries' people.
        "Enroll" => matcher
            .enroll(pb::EnrollRequest {
                subject_id: 9_000_000,
                fingers,
            })
            .await
            .map(drop),
        // The subject "Enroll" adds (as the admin; for everyone else both are refused).
        "Remove" => matcher
            .remove(pb::RemoveRequest {
                subject_id: 9_000_000,
            })
            .await
            .map(drop),
        "Check" => criminal
            .check(pb::CheckRequest { tcn, fingers })
            .await
            .map(drop),
        // About a booking never made: NOT_FOUND for CRCL, nothing recorded.
        "FileComplaint" => complaints
            .file_complaint(pb::FileComplaintRequest {
                intake_id: "AUTHZ-1".into(),
                complainant: pb::ComplainantKind::Person as i32,
                complainant_is_booked_person: true,
                state: state.into(),
                tcn,
                jurisdiction_id: String::new(),
                allegation: pb::Allegation::RacialOrEthnicProfiling as i32,
                channel: pb::ComplaintChannel::Crcl as i32,
                received_on: "2011-06-02".into(),
            })
            .await
            .map(drop),
        "AdvanceComplaint" => complaints
            .advance_complaint(pb::AdvanceComplaintRequest {
                complaint_id: "CRCL-AUTHZ-1".into(),
                stage: pb::ComplaintStage::UnderInvestigation as i32,
                on: "2011-06-03".into(),
                outcome: 0,
            })
            .await
            .map(drop),
        "GetComplaint" => complaints
            .get_complaint(pb::GetComplaintRequest {
                complaint_id: "CRCL-AUTHZ-1".into(),
            })
            .await
            .map(drop),
        "ListComplaints" => complaints
            .list_complaints(pb::ListComplaintsRequest::default())
            .await
            .map(drop),
        other => unreachable!("no RPC {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_reaches_only_its_own_services() {
    let gw = TestGateway::start().await;
    let roles = [
        (Principal::Bureau { state: "TX".into() }, "TX"),
        (Principal::Bureau { state: "CA".into() }, "CA"),
        (
            Principal::FieldOffice {
                office: "HOU".into(),
            },
            "TX",
        ),
        (
            Principal::FieldOffice {
                office: "LOS".into(),
            },
            "CA",
        ),
        (Principal::Lesc, "TX"),
        (Principal::Crcl, "TX"),
        (Principal::Admin, "TX"),
    ];
    let mut wrong = vec![];
    let mut cells = 0;
    for (who, state) in &roles {
        let ch = gw.channel(who.clone()).await;
        for (rpc, service) in RPCS {
            let before = gw.counters().await;
            let r = call(ch.clone(), rpc, state).await;
            cells += 1;
            // An accepted submission finishes in the background; let it, so its counters
            // do not move during the next (denied) cell.
            if r.is_ok() && matches!(rpc, "Submit" | "SubmitStream") {
                wait_completed(&gw, state, &format!("{state}-AUTHZ-{}", rpc.len())).await;
            }
            let denied = matches!(&r, Err(s) if s.code() == Code::PermissionDenied);
            match (allowed(who, rpc, service), denied) {
                (true, true) => wrong.push(format!("{who:?} {rpc}: denied, should be allowed")),
                (false, false) => wrong.push(format!("{who:?} {rpc}: {r:?}, should be denied")),
                (false, true) => {
                    let after = gw.counters().await;
                    if after != before {
                        wrong.push(format!("{who:?} {rpc}: denied but counters moved"));
                    }
                }
                (true, false) => {
                    if let Err(s) = &r {
                        assert_ne!(s.code(), Code::Unauthenticated, "{who:?} {rpc}");
                    }
                }
            }
        }
    }
    assert_eq!(cells, roles.len() * RPCS.len());
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Out-of-scope data: another state's TCN, another area's booking, another stream — each is
/// answered exactly as if it did not exist, and never shows up in the other's streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_scope_data_is_indistinguishable_from_absent() {
    let gw = TestGateway::start().await;
    let tcn = "TX-SCOPE-0001";
    gw.book("TX", tcn, TX_RECEIVING, OVERSTAY_FELON).await;

    // A bureau of another state: same answer for the real TCN and for one never used.
    let mut ca = gw.bureau("CA").await;
    let status = |tcn: &str| pb::GetStatusRequest { tcn: tcn.into() };
    let real = ca.get_status(status(tcn)).await.unwrap_err();
    let absent = ca.get_status(status("TX-SCOPE-9999")).await.unwrap_err();
    assert_eq!(real.code(), Code::NotFound);
    assert_eq!(real.code(), absent.code());
    assert_eq!(
        real.message().replace(tcn, "T"),
        absent.message().replace("TX-SCOPE-9999", "T")
    );
    assert!(bureau_log(&gw, "CA").await.is_empty());
    let e = ca
        .submit(booking("CA-SCOPE-0001", TX_RECEIVING, NOBODY))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "a TX agency's ORI");

    // A field office of another area: decision, review and removal answers match an absent
    // TCN.
    let mut los = gw.office("LOS").await;
    let detainer = |tcn: &str| pb::DecideRequest {
        state: "TX".into(),
        tcn: tcn.into(),
        action: pb::Action::Detainer as i32,
        reasons: vec![pb::Reason::CriminalPriority as i32],
        scheduled_release: Some(prost_types::Timestamp {
            seconds: 1_307_000_000,
            nanos: 0,
        }),
    };
    let real = los.decide(detainer(tcn)).await.unwrap_err();
    let absent = los.decide(detainer("TX-SCOPE-9999")).await.unwrap_err();
    assert_eq!(
        (real.code(), real.message()),
        (absent.code(), absent.message())
    );
    let review = |tcn: &str| pb::ReviewDetainerRequest {
        state: "TX".into(),
        tcn: tcn.into(),
        lift: true,
        reasons: vec![pb::Reason::VictimOrWitness as i32],
    };
    let real = los.review_detainer(review(tcn)).await.unwrap_err();
    let absent = los
        .review_detainer(review("TX-SCOPE-9999"))
        .await
        .unwrap_err();
    assert_eq!(
        (real.code(), real.message()),
        (absent.code(), absent.message())
    );
    let removal = |tcn: &str| pb::RecordRemovalRequest {
        state: "TX".into(),
        tcn: tcn.into(),
        removed_on: "2011-09-01".into(),
    };
    let real = los.record_removal(removal(tcn)).await.unwrap_err();
    let absent = los
        .record_removal(removal("TX-SCOPE-9999"))
        .await
        .unwrap_err();
    assert_eq!(
        (real.code(), real.message()),
        (absent.code(), absent.message())
    );
    assert!(office_log(&gw, "LOS", Some(0)).await.is_empty());
    // Acknowledging past its own (empty) stream is refused without revealing HOU's head.
    let e = los.ack(pb::AckRequest { cursor: 1 }).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange);
    assert_eq!(office_log(&gw, "HOU", Some(0)).await.len(), 1);
}

/// A certificate from another CA, an expired one from our CA, and none: the handshake fails,
/// so no RPC of any service is reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_expired_and_missing_certificates_reach_nothing() {
    let gw = TestGateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    let other_ca = pki::init(
        &dir.path().join("other"),
        &pki::InitOptions {
            states: &["TX".into()],
            offices: &[],
        },
    )
    .unwrap();
    let tx = Principal::Bureau { state: "TX".into() };
    let expired = IdentityFiles {
        cert: dir.path().join("expired.pem"),
        key: dir.path().join("expired-key.pem"),
    };
    let today = chrono::Utc::now().date_naive();
    pki::issue_client_valid(
        &gw.pki.ca_dir_beside(),
        &tx,
        &expired,
        today - chrono::Days::new(400),
        today - chrono::Days::new(35),
    )
    .unwrap();
    let foreign = other_ca.client(&tx);
    let identities: [(&str, Option<&IdentityFiles>); 3] = [
        ("another CA", Some(&foreign)),
        ("expired", Some(&expired)),
        ("none", None),
    ];
    for (what, files) in identities {
        let config = pki::client_config(&gw.endpoint, &gw.pki, files).unwrap();
        match config.retry(RetryPolicy::none()).connect().await {
            Err(_) => {}
            Ok(c) => {
                let ch = c.channel();
                // TLS 1.3 may report the client's rejection only on first use.
                for (rpc, _) in RPCS {
                    let r = call(ch.clone(), rpc, "TX").await;
                    assert!(
                        matches!(&r, Err(s) if matches!(s.code(), Code::Unavailable | Code::Unknown | Code::Unauthenticated | Code::Internal | Code::Cancelled)),
                        "{what}: {rpc} answered {r:?}"
                    );
                }
            }
        }
    }
    assert_eq!(gw.counters().await.get("submissions_accepted"), None);
}
