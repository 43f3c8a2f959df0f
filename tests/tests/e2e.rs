//! End-to-end tests over real sockets and mutual TLS: each one a behaviour a bureau, a field
//! office or an administrator would notice, and each invariant of DESIGN.md §3 that the
//! interoperability path owns.

use interop_e2e::*;
use interop_gateway::auth::principal::Principal;
use interop_proto::v1 as pb;
use tonic::Code;

fn immigration_bodies(log: &[pb::BureauResponse], tcn: &str) -> usize {
    log.iter()
        .filter(|r| {
            r.tcn == tcn && matches!(r.body, Some(pb::bureau_response::Body::Immigration(_)))
        })
        .count()
}

fn criminal_history<'a>(
    log: &'a [pb::BureauResponse],
    tcn: &str,
) -> Vec<&'a pb::CriminalHistoryResponse> {
    log.iter()
        .filter(|r| r.tcn == tcn)
        .filter_map(|r| match &r.body {
            Some(pb::bureau_response::Body::CriminalHistory(c)) => Some(c),
            _ => None,
        })
        .collect()
}

/// Invariant 2 and the happy path: identified, status and priority determined, the field
/// office and the bureau both told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activated_receiving_jurisdiction_reaches_office_and_bureau() {
    let gw = TestGateway::start().await;
    let tcn = "TX-HAPPY-0001";
    let receipt = gw
        .bureau("TX")
        .await
        .submit(booking(tcn, TX_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(receipt.tcn, tcn);
    assert!(!receipt.duplicate);
    assert!(!receipt.receipt_id.is_empty());
    wait_completed(&gw, "TX", tcn).await;

    let notes = office_log(&gw, "HOU", Some(0)).await;
    assert_eq!(notes.len(), 1);
    let o = notes[0].outcome.as_ref().unwrap();
    assert_eq!(o.tcn, tcn);
    assert!(o.hit, "the prints of an enrolled person must hit");
    assert_eq!(o.fin, fin(OVERSTAY_FELON));
    assert_eq!(o.fbi_number, fbi_number(OVERSTAY_FELON));
    assert_eq!(o.status, pb::ImmigrationStatus::VisaOverstay as i32);
    assert_eq!(
        o.priority_level,
        pb::PriorityLevel::PriorityLevel2 as i32,
        "one felony is Level 2"
    );
    assert_eq!(o.recommendation, pb::Recommendation::Detainer as i32);

    let log = bureau_log(&gw, "TX").await;
    let ch = criminal_history(&log, tcn);
    assert_eq!(ch.len(), 1);
    assert!(ch[0].identified);
    assert_eq!(ch[0].fbi_number, fbi_number(OVERSTAY_FELON));
    assert_eq!(immigration_bodies(&log, tcn), 1);
    // Another office hears nothing of it.
    assert!(office_log(&gw, "LOS", Some(0)).await.is_empty());
}

/// Invariants 2 and 3: a non-receiving jurisdiction's booking reaches the field office and never
/// the bureau — checked on every message the bureau can read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_receiving_jurisdiction_reaches_office_never_bureau() {
    let gw = TestGateway::start().await;
    let tcn = "TX-OPTOUT-0001";
    let mut bureau = gw.bureau("TX").await;
    bureau
        .submit(booking(tcn, TX_NOT_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap();
    wait_completed(&gw, "TX", tcn).await;

    let notes = office_log(&gw, "HOU", Some(0)).await;
    assert_eq!(notes.len(), 1, "the field office always gets the outcome");
    assert_eq!(notes[0].outcome.as_ref().unwrap().fin, fin(OVERSTAY_FELON));

    let log = bureau_log(&gw, "TX").await;
    assert_eq!(immigration_bodies(&log, tcn), 0);
    assert_eq!(
        criminal_history(&log, tcn).len(),
        1,
        "criminal history is unaffected"
    );
    let secret = fin(OVERSTAY_FELON);
    for r in &log {
        let text = format!("{r:?}");
        assert!(
            !text.contains(&secret),
            "bureau message carries the FIN: {text}"
        );
        assert!(
            !text.contains("VisaOverstay") && !text.contains("Detainer"),
            "bureau message carries the determination"
        );
    }
    let status = bureau
        .get_status(pb::GetStatusRequest { tcn: tcn.into() })
        .await
        .unwrap()
        .into_inner();
    assert!(!format!("{status:?}").contains(&secret));
    let c = gw.counters().await;
    assert_eq!(c.get("immigration_responses_withheld"), Some(&1));
    assert_eq!(c.get("immigration_responses_sent"), None);
}

/// Invariant 4: before activation, prints never reach the IDENT matcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_activated_jurisdiction_is_never_searched() {
    let gw = TestGateway::start().await;
    let tcn = "TX-NOTACT-0001";
    gw.book("TX", tcn, TX_NOT_ACTIVATED, OVERSTAY_FELON).await;
    assert_eq!(gw.ident_searches(), 0, "the IDENT matcher was called");
    assert!(office_log(&gw, "HOU", Some(0)).await.is_empty());
    let log = bureau_log(&gw, "TX").await;
    assert_eq!(
        criminal_history(&log, tcn).len(),
        1,
        "the FBI check still happens"
    );
    assert_eq!(immigration_bodies(&log, tcn), 0);
    assert_eq!(gw.counters().await.get("ident_searches"), None);
    // Control: the same person in an activated jurisdiction is searched.
    gw.book("TX", "TX-NOTACT-0002", TX_RECEIVING, OVERSTAY_FELON)
        .await;
    assert_eq!(gw.ident_searches(), 1);
    // It waited for a core in its bureau's lane (see `engines::slots`).
    assert_eq!(gw.ident_lanes(), ["TX"]);
}

/// Invariant 1: a repeated TCN returns the same receipt and is processed once; the same TCN
/// with other content is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_tcn_returns_the_same_receipt_and_is_processed_once() {
    let gw = TestGateway::start().await;
    let tcn = "TX-REPEAT-0001";
    let sub = booking(tcn, TX_RECEIVING, CITIZEN);
    let mut b = gw.bureau("TX").await;
    let first = b.submit(sub.clone()).await.unwrap().into_inner();
    let second = b.submit(sub.clone()).await.unwrap().into_inner();
    assert_eq!(first.receipt_id, second.receipt_id);
    assert!(second.duplicate);
    wait_completed(&gw, "TX", tcn).await;
    let third = b.submit(sub.clone()).await.unwrap().into_inner();
    assert_eq!(
        third.receipt_id, first.receipt_id,
        "still the same after completion"
    );

    let mut other = sub.clone();
    other.charges[0].code = "99-9999".into();
    let err = b.submit(other).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains("tcn"), "{}", err.message());

    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(office_log(&gw, "HOU", Some(0)).await.len(), 1);
    assert_eq!(criminal_history(&bureau_log(&gw, "TX").await, tcn).len(), 1);
    assert_eq!(gw.ident_searches(), 1);
    assert_eq!(gw.counters().await.get("submissions_accepted"), Some(&1));
}

/// Invariant 5: resuming from the acknowledged cursor delivers the rest once, in order —
/// also across a restart on the same data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_office_resumes_from_its_cursor() {
    let gw = TestGateway::start().await;
    let mut b = gw.bureau("TX").await;
    let tcns: Vec<String> = (0..5).map(|i| format!("TX-RESUME-{i:04}")).collect();
    for t in &tcns {
        b.submit(booking(t, TX_RECEIVING, OVERSTAY_FELON))
            .await
            .unwrap();
    }
    for t in &tcns {
        wait_completed(&gw, "TX", t).await;
    }
    let all = office_log(&gw, "HOU", Some(0)).await;
    assert_eq!(all.len(), 5);
    let cursors: Vec<u64> = all.iter().map(|n| n.cursor).collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "{cursors:?}");

    let mut office = gw.office("HOU").await;
    let acked = office
        .ack(pb::AckRequest { cursor: cursors[1] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked.acked_cursor, cursors[1]);
    // An ack never goes backwards, and cannot pass the head.
    assert_eq!(
        office
            .ack(pb::AckRequest { cursor: cursors[0] })
            .await
            .unwrap()
            .into_inner()
            .acked_cursor,
        cursors[1]
    );
    assert_eq!(
        office
            .ack(pb::AckRequest { cursor: 999 })
            .await
            .unwrap_err()
            .code(),
        Code::OutOfRange
    );

    let rest = office_log(&gw, "HOU", None).await;
    assert_eq!(
        rest.iter().map(|n| n.cursor).collect::<Vec<_>>(),
        cursors[2..].to_vec()
    );

    // A live subscriber gets later outcomes as they happen.
    let mut live = office
        .subscribe(pb::SubscribeRequest {
            after_cursor: None,
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    for c in &cursors[2..] {
        assert_eq!(live.message().await.unwrap().unwrap().cursor, *c);
    }
    b.submit(booking("TX-RESUME-LIVE", TX_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap();
    let n = tokio::time::timeout(std::time::Duration::from_secs(30), live.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(n.outcome.unwrap().tcn, "TX-RESUME-LIVE");
    drop(live);

    let gw = gw.restart(None).await;
    let after_restart = office_log(&gw, "HOU", None).await;
    assert_eq!(
        after_restart.len(),
        4,
        "cursors 3, 4, 5 and the live one, acked ones never again"
    );
    assert_eq!(after_restart[0].cursor, cursors[2]);
}

/// Invariant 1 through a restart: a receipted submission whose processing never finished is
/// resumed on the next start and completed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_submissions_are_resumed_after_restart() {
    let stalled = TestGateway::start_with(Some(std::sync::Arc::new(StalledIdent))).await;
    let tcn = "TX-RECOVER-0001";
    let receipt = stalled
        .bureau("TX")
        .await
        .submit(booking(tcn, TX_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let st = stalled
        .bureau("TX")
        .await
        .get_status(pb::GetStatusRequest { tcn: tcn.into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        st.stage,
        pb::Stage::Received as i32,
        "IDENT is stalled, so not completed"
    );

    let gw = stalled.restart(None).await;
    wait_completed(&gw, "TX", tcn).await;
    let st = gw
        .bureau("TX")
        .await
        .get_status(pb::GetStatusRequest { tcn: tcn.into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.receipt.unwrap().receipt_id, receipt.receipt_id);
    let notes = office_log(&gw, "HOU", Some(0)).await;
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].outcome.as_ref().unwrap().fin, fin(OVERSTAY_FELON));
    assert_eq!(criminal_history(&bureau_log(&gw, "TX").await, tcn).len(), 1);
}

/// Invariant 6: identity from the certificate; the wrong role is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_role_is_permission_denied() {
    let gw = TestGateway::start().await;
    // A field office cannot submit.
    let mut as_office = pb::submission_service_client::SubmissionServiceClient::new(
        gw.channel(Principal::FieldOffice {
            office: "HOU".into(),
        })
        .await,
    );
    let e = as_office
        .submit(booking("TX-ROLE-0001", TX_RECEIVING, NOBODY))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // A bureau cannot subscribe to a field office's stream, nor call admin.
    let mut as_bureau = pb::field_office_service_client::FieldOfficeServiceClient::new(
        gw.channel(Principal::Bureau { state: "TX".into() }).await,
    );
    assert_eq!(
        as_bureau
            .subscribe(pb::SubscribeRequest::default())
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let mut admin_as_bureau = pb::admin_service_client::AdminServiceClient::new(
        gw.channel(Principal::Bureau { state: "TX".into() }).await,
    );
    assert_eq!(
        admin_as_bureau
            .get_counters(pb::GetCountersRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    // A bureau submits only for its own state's agencies.
    let e = gw
        .bureau("CA")
        .await
        .submit(booking("CA-ROLE-0001", TX_RECEIVING, NOBODY))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("ori"), "{}", e.message());
    // Another bureau's TCN is simply not there.
    gw.bureau("TX")
        .await
        .submit(booking("TX-ROLE-0002", TX_RECEIVING, NOBODY))
        .await
        .unwrap();
    let e = gw
        .bureau("CA")
        .await
        .get_status(pb::GetStatusRequest {
            tcn: "TX-ROLE-0002".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(gw.counters().await.get("submissions_accepted"), Some(&1));
}

/// Invariant 6: no client certificate, or one from another CA → the handshake fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_trusted_client_certificate_are_refused() {
    let gw = TestGateway::start().await;
    let config = interop_gateway_cli::pki::client_config(&gw.endpoint, &gw.pki, None).unwrap();
    let no_cert = async {
        let ch = config.retry(RetryPolicy::none()).connect().await?.channel();
        pb::submission_service_client::SubmissionServiceClient::new(ch)
            .submit(booking("TX-NOCERT-0001", TX_RECEIVING, NOBODY))
            .await
            .map_err(anyhow::Error::from)
    };
    assert!(
        no_cert.await.is_err(),
        "a call without a client certificate succeeded"
    );

    let other = tempfile::tempdir().unwrap();
    let other_pki = interop_gateway_cli::pki::init(
        &other.path().join("pki"),
        &interop_gateway_cli::pki::InitOptions {
            states: &["TX".into()],
            offices: &[],
        },
    )
    .unwrap();
    // Trust the real server, but present a bureau certificate from another CA.
    let config = interop_gateway_cli::pki::client_config(
        &gw.endpoint,
        &gw.pki,
        Some(&other_pki.client(&Principal::Bureau { state: "TX".into() })),
    )
    .unwrap();
    let foreign = async {
        let ch = config.retry(RetryPolicy::none()).connect().await?.channel();
        pb::submission_service_client::SubmissionServiceClient::new(ch)
            .submit(booking("TX-NOCERT-0002", TX_RECEIVING, NOBODY))
            .await
            .map_err(anyhow::Error::from)
    };
    assert!(
        foreign.await.is_err(),
        "a certificate from another CA was accepted"
    );
    assert_eq!(gw.counters().await.get("submissions_accepted"), None);
}

/// Bytes that are not the message a method takes: INVALID_ARGUMENT saying so (not INTERNAL,
/// which a client cannot tell from a fault of ours), and nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_protobuf_are_invalid_argument() {
    use interop_proto::codec::StrictCodec;
    use prost::bytes::BufMut;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    /// Sends its bytes as they are; reads a `Receipt`.
    #[derive(Default)]
    struct Raw;
    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }
    struct ReceiptDecoder(<StrictCodec<pb::Submission, pb::Receipt> as Codec>::Decoder);
    impl Decoder for ReceiptDecoder {
        type Item = pb::Receipt;
        type Error = tonic::Status;
        fn decode(&mut self, b: &mut DecodeBuf<'_>) -> Result<Option<pb::Receipt>, tonic::Status> {
            self.0.decode(b)
        }
    }
    #[derive(Default)]
    struct RawCodec;
    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = pb::Receipt;
        type Encoder = Raw;
        type Decoder = ReceiptDecoder;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> ReceiptDecoder {
            ReceiptDecoder(StrictCodec::<pb::Submission, pb::Receipt>::default().decoder())
        }
    }

    let gw = TestGateway::start().await;
    let ch = gw.channel(Principal::Bureau { state: "TX".into() }).await;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/interop.v1.SubmissionService/Submit",
    );
    // A truncated varint, a field with wire type 7 (there is none), a length past the end.
    for garbage in [vec![0x08, 0xff], vec![0x0f, 0x01], vec![0x0a, 0x7f, 0x01]] {
        let mut grpc = tonic::client::Grpc::new(ch.clone());
        grpc.ready().await.unwrap();
        let e = grpc
            .unary(tonic::Request::new(garbage.clone()), path.clone(), RawCodec)
            .await
            .expect_err("garbage was accepted");
        assert_eq!(e.code(), Code::InvalidArgument, "{garbage:02x?}: {e:?}");
        assert!(
            e.message().starts_with("malformed protobuf message"),
            "{garbage:02x?}: {}",
            e.message()
        );
    }
    assert_eq!(gw.counters().await.get("submissions_accepted"), None);
}

/// Invariant 7: malformed submissions → INVALID_ARGUMENT naming the field; nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_submissions_are_refused_and_change_nothing() {
    let gw = TestGateway::start().await;
    let mut b = gw.bureau("TX").await;
    let good = booking("TX-BAD-00001", TX_RECEIVING, OVERSTAY_FELON);
    type Mutate = fn(&mut pb::Submission);
    let cases: Vec<(&str, Mutate)> = vec![
        ("tcn", |s| s.tcn = "short".into()),
        ("tcn", |s| s.tcn = "lower-case-tcn".into()),
        ("ori", |s| s.ori = "TX20".into()),
        ("ori", |s| s.ori = "TX9990100".into()),
        ("jurisdiction_id", |s| s.jurisdiction_id = "TX999".into()),
        ("booked_at", |s| s.booked_at = None),
        ("booked_at", |s| {
            s.booked_at = Some(prost_types::Timestamp {
                seconds: 4_102_444_800,
                nanos: 0,
            })
        }),
        ("booked_at", |s| {
            s.booked_at = Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            })
        }),
        ("charges", |s| s.charges.clear()),
        ("charges[0].class", |s| s.charges[0].class = 0),
        ("charges[0].code", |s| s.charges[0].code = String::new()),
        ("biographics", |s| s.biographics = None),
        ("biographics.date_of_birth", |s| {
            s.biographics.as_mut().unwrap().date_of_birth = "03/02/1980".into()
        }),
        ("fingers", |s| s.fingers.clear()),
        ("fingers[1].position", |s| {
            s.fingers[1].position = s.fingers[0].position
        }),
        ("fingers[0].position", |s| s.fingers[0].position = 11),
        ("fingers[0].minutiae", |s| s.fingers[0].minutiae.clear()),
        ("fingers[0].minutiae[0]", |s| {
            s.fingers[0].minutiae[0].x = 5000
        }),
        ("fingers[0].minutiae[0].angle_deg", |s| {
            s.fingers[0].minutiae[0].angle_deg = 360
        }),
        ("fingers[0].minutiae[0].quality", |s| {
            s.fingers[0].minutiae[0].quality = 101
        }),
        ("fingers[0].minutiae[0].type", |s| {
            s.fingers[0].minutiae[0].r#type = 0
        }),
        ("fingers[0].resolution_ppi", |s| {
            s.fingers[0].resolution_ppi = 1000
        }),
        ("tcn", |s| s.tcn = String::new()),
        ("tcn", |s| s.tcn = "TX-".repeat(14)),
        ("tcn", |s| s.tcn = "TX-BAD-0000\u{e9}".into()),
        ("tcn", |s| s.tcn = "TX BAD 00001".into()),
        ("ori", |s| s.ori = "tx2010100".into()),
        ("ori", |s| s.ori = String::new()),
        ("jurisdiction_id", |s| s.jurisdiction_id = String::new()),
        // Another state's jurisdiction looks exactly like an unknown one.
        ("jurisdiction_id", |s| {
            s.jurisdiction_id = CA_RECEIVING.into()
        }),
        ("booked_at.nanos", |s| {
            s.booked_at.as_mut().unwrap().nanos = -1
        }),
        ("booked_at", |s| {
            s.booked_at = Some(prost_types::Timestamp {
                seconds: i64::MAX,
                nanos: 0,
            })
        }),
        ("charges", |s| s.charges = vec![s.charges[0].clone(); 21]),
        ("charges[0].code", |s| s.charges[0].code = "X".repeat(33)),
        ("charges[0].code", |s| {
            s.charges[0].code = "13-\u{7}1203".into()
        }),
        ("charges[0].class", |s| s.charges[0].class = 99),
        ("biographics.name", |s| {
            s.biographics.as_mut().unwrap().name = String::new()
        }),
        ("biographics.name", |s| {
            s.biographics.as_mut().unwrap().name = "N".repeat(101)
        }),
        ("biographics.name", |s| {
            s.biographics.as_mut().unwrap().name = "Synthetic\nPerson".into()
        }),
        ("biographics.date_of_birth", |s| {
            s.biographics.as_mut().unwrap().date_of_birth = "1850-01-01".into()
        }),
        ("biographics.date_of_birth", |s| {
            s.biographics.as_mut().unwrap().date_of_birth = "2011-06-02".into()
        }),
        ("biographics.place_of_birth", |s| {
            s.biographics.as_mut().unwrap().place_of_birth = "P".repeat(65)
        }),
        ("biographics.sex", |s| {
            s.biographics.as_mut().unwrap().sex = 42
        }),
        ("fingers", |s| {
            let f = s.fingers[0].clone();
            s.fingers.extend(std::iter::repeat_n(f, 10));
        }),
        ("fingers[0].position", |s| s.fingers[0].position = 0),
        ("missing_fingers[0].position", |s| {
            s.missing_fingers = vec![pb::MissingFinger {
                position: s.fingers[0].position,
                reason: pb::MissingReason::Amputated as i32,
            }]
        }),
        ("missing_fingers[0].position", |s| {
            s.missing_fingers = vec![pb::MissingFinger {
                position: 11,
                reason: pb::MissingReason::UnableToPrint as i32,
            }]
        }),
        ("missing_fingers[1].position", |s| {
            let gone = s.fingers.pop().unwrap().position;
            let m = pb::MissingFinger {
                position: gone,
                reason: pb::MissingReason::Amputated as i32,
            };
            s.missing_fingers = vec![m, m];
        }),
        ("missing_fingers[0].reason", |s| {
            let gone = s.fingers.pop().unwrap().position;
            s.missing_fingers = vec![pb::MissingFinger {
                position: gone,
                reason: 0,
            }];
        }),
        ("fingers[0].image_width", |s| s.fingers[0].image_width = 0),
        ("fingers[0].image_width", |s| {
            s.fingers[0].image_height = 2001
        }),
        ("fingers[0].minutiae", |s| {
            let m = s.fingers[0].minutiae[0];
            s.fingers[0].minutiae = vec![m; 256];
        }),
        ("fingers[0].minutiae[0]", |s| {
            s.fingers[0].minutiae[0].y = s.fingers[0].image_height
        }),
        ("fingers[0].minutiae[0].type", |s| {
            s.fingers[0].minutiae[0].r#type = 7
        }),
    ];
    assert!(cases.len() >= 40, "{} cases", cases.len());
    for (field, mutate) in cases {
        let mut bad = good.clone();
        mutate(&mut bad);
        let e = b.submit(bad).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {}", e.message());
        assert!(
            e.message().contains(field),
            "message {:?} does not name {field}",
            e.message()
        );
    }
    let e = b
        .get_status(pb::GetStatusRequest {
            tcn: good.tcn.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::NotFound,
        "a refused submission left a record"
    );
    assert!(
        gw.counters().await.is_empty(),
        "a refused submission moved a counter"
    );
    assert!(bureau_log(&gw, "TX").await.is_empty());
    assert_eq!(gw.ident_searches(), 0);

    // Every problem at once, as google.rpc.BadRequest field violations.
    let mut many = good.clone();
    many.tcn = "x".into();
    many.charges.clear();
    many.fingers[0].minutiae[0].angle_deg = 400;
    let e = b.submit(many).await.unwrap_err();
    use tonic_types::StatusExt;
    let fields: Vec<String> = e
        .get_details_bad_request()
        .expect("BadRequest details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    for f in ["tcn", "charges", "fingers[0].minutiae[0].angle_deg"] {
        assert!(fields.iter().any(|x| x == f), "{f} not in {fields:?}");
    }

    // Wrong in thousands of ways (every minutia of ten fingers out of range four ways): the
    // refusal lists the first violations and counts the rest, in a trailer a stock client
    // accepts (once 656 KB, which a grpcio client answered with RESOURCE_EXHAUSTED).
    let mut flood = good.clone();
    for f in &mut flood.fingers {
        let mut m = f.minutiae[0];
        (m.x, m.y, m.angle_deg, m.quality) = (60_000, 60_000, 400, 101);
        f.minutiae = vec![m; 255];
    }
    let e = b.submit(flood).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    let listed = e.get_details_bad_request().expect("BadRequest details");
    let v = &listed.field_violations;
    assert!(v.len() <= 101, "{} listed", v.len());
    let rest = &v.last().unwrap().description;
    assert!(rest.contains("more violations not listed"), "{rest}");
    assert!(e.details().len() < 8 * 1024, "{} bytes", e.details().len());

    // Over the message size cap: refused before decoding, nothing stored.
    let mut huge = good.clone();
    huge.biographics.as_mut().unwrap().place_of_birth = "P".repeat(300 * 1024);
    let e = b.submit(huge).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{}", e.message());

    // The good one still goes through; its TCN reused with other content is refused.
    b.submit(good.clone()).await.unwrap();
    let mut reused = good;
    reused.charges[0].code = "13-9999".into();
    let e = b.submit(reused).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert!(e.message().contains("tcn"), "{}", e.message());
    assert_eq!(gw.counters().await.get("submissions_accepted"), Some(&1));
}

/// Stock tools work: health reports SERVING, reflection lists the services.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection() {
    let gw = TestGateway::start().await;
    let ch = gw.channel(Principal::Admin).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    for svc in [
        "",
        "interop.v1.SubmissionService",
        "interop.v1.FieldOfficeService",
        "interop.v1.AdminService",
        "interop.v1.CriminalHistoryService",
    ] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: svc.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{svc}"
        );
    }
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut refl = ServerReflectionClient::new(ch);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        resp.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "interop.v1.SubmissionService",
        "interop.v1.FieldOfficeService",
        "interop.v1.AdminService",
        "interop.v1.MatcherService",
        "interop.v1.CriminalHistoryService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
}

/// Admin policy changes take effect for later bookings and survive a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_policy_changes_apply_and_persist() {
    let gw = TestGateway::start().await;
    let mut admin = gw.admin().await;
    let p = admin
        .set_policy(pb::SetPolicyRequest {
            jurisdiction_id: TX_RECEIVING.into(),
            receives_results: Some(false),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!p.effective_receives_results);
    let e = admin
        .set_policy(pb::SetPolicyRequest {
            jurisdiction_id: "ZZ999".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = admin
        .set_policy(pb::SetPolicyRequest {
            jurisdiction_id: TX_RECEIVING.into(),
            activated_on: Some("June 1".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("activated_on"));

    gw.book("TX", "TX-POLICY-0001", TX_RECEIVING, OVERSTAY_FELON)
        .await;
    assert_eq!(
        immigration_bodies(&bureau_log(&gw, "TX").await, "TX-POLICY-0001"),
        0
    );
    assert_eq!(office_log(&gw, "HOU", Some(0)).await.len(), 1);

    let gw = gw.restart(None).await;
    let p = gw
        .admin()
        .await
        .get_policy(pb::GetPolicyRequest {
            jurisdiction_id: TX_RECEIVING.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!p.receives_results, "policy change lost on restart");
    let offices = gw
        .admin()
        .await
        .list_field_offices(pb::ListFieldOfficesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(offices.field_offices.len(), 2);
}

/// Bulk senders: SubmitStream answers one receipt per submission, in order, errors inline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_stream_answers_each_in_order() {
    let gw = TestGateway::start().await;
    let mut subs: Vec<pb::Submission> = (0..6)
        .map(|i| booking(&format!("TX-STREAM-{i:04}"), TX_RECEIVING, NOBODY))
        .collect();
    subs[3].tcn = "bad".into();
    let mut out = gw
        .bureau("TX")
        .await
        .submit_stream(tokio_stream::iter(subs.clone()))
        .await
        .unwrap()
        .into_inner();
    let mut answers = vec![];
    while let Some(a) = out.message().await.unwrap() {
        answers.push(a);
    }
    assert_eq!(answers.len(), 6);
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a.index, i as u64);
        match &a.result {
            Some(pb::submit_stream_response::Result::Receipt(r)) => assert_eq!(r.tcn, subs[i].tcn),
            Some(pb::submit_stream_response::Result::Error(e)) => {
                assert_eq!(i, 3);
                assert_eq!(e.code, Code::InvalidArgument as i32);
                assert!(e.message.contains("tcn"));
            }
            None => panic!("empty answer"),
        }
    }
}

/// Invariant 5: a subscriber that never reads does not slow ingest or processing — every
/// submission completes while it sits there — and it still gets everything, in order, once it
/// reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_does_not_hold_back_ingest() {
    let gw = TestGateway::start().await;
    let mut office = gw.office("HOU").await;
    let mut stalled = office
        .subscribe(pb::SubscribeRequest {
            after_cursor: Some(0),
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    let n = 120;
    let mut b = gw.bureau("TX").await;
    let subs: Vec<pb::Submission> = (0..n)
        .map(|i| booking(&format!("TX-STALL-{i:04}"), TX_RECEIVING, OVERSTAY_FELON))
        .collect();
    let mut out = b
        .submit_stream(tokio_stream::iter(subs.clone()))
        .await
        .unwrap()
        .into_inner();
    while let Some(a) = out.message().await.unwrap() {
        assert!(matches!(
            a.result,
            Some(pb::submit_stream_response::Result::Receipt(_))
        ));
    }
    for s in &subs {
        wait_completed(&gw, "TX", &s.tcn).await;
    }
    // Now read: all of them, in order, none twice.
    let mut cursors = vec![];
    while cursors.len() < n {
        let m = tokio::time::timeout(std::time::Duration::from_secs(30), stalled.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        cursors.push(m.cursor);
    }
    assert_eq!(cursors, (1..=n as u64).collect::<Vec<_>>());
}

fn at(s: &str) -> prost_types::Timestamp {
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
    prost_types::Timestamp {
        seconds: t.and_utc().timestamp(),
        nanos: 0,
    }
}

/// Detainers: issued by the covering field office only, once per booking, held 48 business
/// hours past release, delivered to the jail even where the jurisdiction chose not to receive
/// immigration responses — which it still never gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_office_issues_a_detainer_delivered_to_the_jail() {
    let gw = TestGateway::start().await;
    let tcn = "TX-DETAIN-0001";
    gw.bureau("TX")
        .await
        .submit(booking(tcn, TX_NOT_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap();
    gw.bureau("TX")
        .await
        .submit(booking("TX-DETAIN-0002", TX_RECEIVING, CITIZEN))
        .await
        .unwrap();
    wait_completed(&gw, "TX", tcn).await;
    wait_completed(&gw, "TX", "TX-DETAIN-0002").await;

    // Friday 17:00 release → Tuesday 17:00 (the weekend does not count).
    let req = detain("TX", tcn, at("2011-06-03 17:00"));
    let mut hou = gw.office("HOU").await;
    let decision = hou.decide(req.clone()).await.unwrap().into_inner();
    assert_eq!(decision.action, pb::Action::Detainer as i32);
    assert_eq!(decision.recommendation, pb::Recommendation::Detainer as i32);
    let d = decision.detainer.clone().unwrap();
    assert_eq!(d.hold_until, Some(at("2011-06-07 17:00")));
    assert_eq!(d.jurisdiction_id, TX_NOT_RECEIVING);
    assert!(!d.operative_on_conviction);
    let again = hou.decide(req.clone()).await.unwrap().into_inner();
    assert_eq!(again, decision, "a booking has one decision");

    let log = bureau_log(&gw, "TX").await;
    let detainers = log
        .iter()
        .filter(|r| matches!(r.body, Some(pb::bureau_response::Body::Detainer(_))))
        .count();
    assert_eq!(detainers, 1);
    assert_eq!(
        immigration_bodies(&log, tcn),
        0,
        "not receiving: still no immigration response"
    );
    assert!(
        !format!("{log:?}").contains(&fin(OVERSTAY_FELON)),
        "the detainer carries no identification"
    );

    // Another office, a bureau, a bad release time.
    let e = gw
        .office("LOS")
        .await
        .decide(req.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let mut as_bureau = pb::field_office_service_client::FieldOfficeServiceClient::new(
        gw.channel(Principal::Bureau { state: "TX".into() }).await,
    );
    assert_eq!(
        as_bureau.decide(req.clone()).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let early = pb::DecideRequest {
        scheduled_release: Some(at("2001-01-01 00:00")),
        tcn: "TX-DETAIN-0002".into(),
        ..req
    };
    let e = hou.decide(early).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("scheduled_release"));
    assert_eq!(gw.counters().await.get("detainers_issued"), Some(&1));
}

/// Monthly statistics come from the durable log: they equal what happened, exactly, across a
/// restart; bad months are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monthly_statistics_survive_a_restart_and_count_exactly() {
    let gw = TestGateway::start().await;
    let mut b = gw.bureau("TX").await;
    b.submit(booking("TX-STATS-0001", TX_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap(); // hit, Level 2
    b.submit(booking("TX-STATS-0002", TX_NOT_RECEIVING, CITIZEN))
        .await
        .unwrap(); // hit, not removable
    b.submit(booking("TX-STATS-0003", TX_NOT_ACTIVATED, OVERSTAY_FELON))
        .await
        .unwrap(); // not searched
    for t in ["TX-STATS-0001", "TX-STATS-0002", "TX-STATS-0003"] {
        wait_completed(&gw, "TX", t).await;
    }
    gw.office("HOU")
        .await
        .decide(detain("TX", "TX-STATS-0001", at("2011-06-02 09:00")))
        .await
        .unwrap();
    // A removal: once per booking (a repeat returns the first), never for a booking the office
    // did not decide to detain, never dated before the booking, never sent to the jail.
    let mut hou = gw.office("HOU").await;
    let removal = |tcn: &str, on: &str| pb::RecordRemovalRequest {
        state: "TX".into(),
        tcn: tcn.into(),
        removed_on: on.into(),
    };
    let r = hou
        .record_removal(removal("TX-STATS-0001", "2011-08-15"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.jurisdiction_id, TX_RECEIVING);
    let again = hou
        .record_removal(removal("TX-STATS-0001", "2011-09-01"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.removed_on, "2011-08-15", "one removal per booking");
    let e = hou
        .record_removal(removal("TX-STATS-0002", "2011-08-15"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    for bad in ["15/08/2011", "2011-05-01"] {
        let e = hou
            .record_removal(removal("TX-STATS-0001", bad))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}");
        assert!(e.message().contains("removed_on"), "{}", e.message());
    }
    assert_eq!(
        gw.office("LOS")
            .await
            .record_removal(removal("TX-STATS-0001", "2011-08-15"))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let jail_log = format!("{:?}", bureau_log(&gw, "TX").await);
    assert!(
        !jail_log.contains("2011-08-15"),
        "nothing about removals reaches the jail"
    );
    let gw = gw.restart(None).await;
    gw.bureau("CA")
        .await
        .submit(booking("CA-STATS-0001", CA_RECEIVING, FBI_ONLY))
        .await
        .unwrap(); // no hit
    wait_completed(&gw, "CA", "CA-STATS-0001").await;

    let mut admin = gw.admin().await;
    let june = admin
        .get_monthly_stats(pb::GetMonthlyStatsRequest {
            month: "2011-06".into(),
            state: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let row = |id: &str| {
        june.jurisdictions
            .iter()
            .find(|r| r.jurisdiction_id == id)
            .cloned()
            .unwrap_or_default()
    };
    let cols = |r: pb::StatsRow| {
        [
            r.submissions,
            r.ident_searches,
            r.matches,
            r.identified_level1,
            r.identified_level2,
            r.identified_level3,
            r.identified_non_criminal,
            r.detainers_issued,
            r.removals,
            // The removed person was identified at Level 2: reported in that category.
            r.removed_level2,
            r.removed_level1
                + r.removed_level3
                + r.removed_non_criminal_priority
                + r.removed_outside_priorities,
        ]
    };
    assert_eq!(cols(row(TX_RECEIVING)), [1, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0]);
    assert_eq!(
        cols(row(TX_NOT_RECEIVING)),
        [1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(
        cols(row(TX_NOT_ACTIVATED)),
        [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(cols(row(CA_RECEIVING)), [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        cols(june.national.clone().unwrap()),
        [4, 3, 2, 0, 1, 0, 0, 1, 1, 1, 0]
    );
    let tx = june
        .states
        .iter()
        .find(|r| r.state == "TX")
        .unwrap()
        .clone();
    assert_eq!(cols(tx), [3, 2, 2, 0, 1, 0, 0, 1, 1, 1, 0]);

    let ca_only = admin
        .get_monthly_stats(pb::GetMonthlyStatsRequest {
            month: "2011-06".into(),
            state: "CA".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ca_only.jurisdictions.len(), 1);
    assert_eq!(ca_only.states.len(), 1);
    assert_eq!(
        ca_only.national.unwrap().submissions,
        4,
        "national stays national"
    );
    let july = admin
        .get_monthly_stats(pb::GetMonthlyStatsRequest {
            month: "2011-07".into(),
            state: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(july.jurisdictions.is_empty());
    let e = admin
        .get_monthly_stats(pb::GetMonthlyStatsRequest {
            month: "June".into(),
            state: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("month"));
    let e = admin
        .get_monthly_stats(pb::GetMonthlyStatsRequest {
            month: "2011-06".into(),
            state: "ZZ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Monthly figures are not mixed into the plain counters.
    assert!(gw.counters().await.keys().all(|k| !k.contains('/')));
}

/// The metrics endpoint is scraped and parsed: per-state and per-office counters, stage
/// histograms, gauges — and no TCN, FIN or name anywhere in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_reports_stages_without_case_data() {
    let gw = TestGateway::start().await;
    let mut b = gw.bureau("TX").await;
    b.submit(booking("TX-METRIC-0001", TX_NOT_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap();
    b.submit(booking("TX-METRIC-0001", TX_NOT_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap();
    let _ = b
        .submit(booking("bad", TX_RECEIVING, NOBODY))
        .await
        .unwrap_err();
    wait_completed(&gw, "TX", "TX-METRIC-0001").await;
    let _live = gw
        .office("HOU")
        .await
        .subscribe(pb::SubscribeRequest {
            after_cursor: Some(0),
            follow: true,
        })
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let text = gw.scrape().await;
    let mut samples = std::collections::HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.insert(name.to_string(), v);
    }
    let get = |k: &str| {
        samples
            .get(k)
            .copied()
            .unwrap_or_else(|| panic!("{k} missing from\n{text}"))
    };
    assert_eq!(get("interop_receipts_total{state=\"TX\"}"), 1.0);
    assert_eq!(get("interop_duplicates_total{state=\"TX\"}"), 1.0);
    assert_eq!(
        get("interop_refused_total{state=\"TX\",code=\"INVALID_ARGUMENT\"}"),
        1.0
    );
    assert_eq!(get("interop_completed_total{state=\"TX\"}"), 1.0);
    assert_eq!(get("interop_notifications_total{office=\"HOU\"}"), 1.0);
    assert_eq!(get("interop_withheld_total{state=\"TX\"}"), 1.0);
    for stage in [
        "receipt",
        "criminal_history",
        "ident_search",
        "notification",
    ] {
        assert_eq!(
            get(&format!("interop_stage_seconds_count{{stage=\"{stage}\"}}")),
            1.0,
            "{stage}"
        );
        assert_eq!(
            get(&format!(
                "interop_stage_seconds_bucket{{stage=\"{stage}\",le=\"+Inf\"}}"
            )),
            1.0
        );
    }
    assert_eq!(
        get("interop_subscriptions_active{kind=\"field_office\"}"),
        1.0
    );
    assert_eq!(get("interop_pipeline_queued"), 0.0);
    // The search threads both galleries share: idle once the booking is done.
    assert_eq!(get("interop_search_waiting"), 0.0);
    assert_eq!(get("interop_search_running"), 0.0);
    assert!(get("interop_search_threads") >= 2.0, "{text}");
    // The process's own figures, for a soak to watch over hours (Linux).
    #[cfg(target_os = "linux")]
    {
        assert!(get("process_resident_memory_bytes") > 1e6, "{text}");
        assert!(get("process_open_fds") > 3.0, "{text}");
    }
    // The store's writes, for a soak's writes per booking.
    assert!(get("interop_store_ops_total") >= 2.0, "{text}");
    assert!(get("interop_store_commits_total") >= 1.0, "{text}");
    for secret in [
        "TX-METRIC",
        &fin(OVERSTAY_FELON),
        &fbi_number(OVERSTAY_FELON),
        "Synthetic",
    ] {
        assert!(!text.contains(secret), "metrics carry {secret}");
    }
}

/// A full disk (issue: durability): the gateway refuses with UNAVAILABLE and a clear message,
/// never gives a receipt for what it did not store, keeps what it had, and accepts again by
/// itself once space returns — the refused booking can then be resubmitted as new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_unavailable_never_acknowledged_and_recovers() {
    let (gw, faults) = TestGateway::start_with_faults().await;
    let mut b = gw.bureau("TX").await;
    b.submit(booking("TX-DISK-0001", TX_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap();
    wait_completed(&gw, "TX", "TX-DISK-0001").await;
    let before = gw.counters().await;

    faults.set_failing(true);
    let e = b
        .submit(booking("TX-DISK-0002", TX_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(
        e.message().contains("durable store") && e.message().contains("not accepted"),
        "{}",
        e.message()
    );
    faults.set_failing(false);

    // Nothing of the refused booking was kept, and the first one is intact.
    let e = b
        .get_status(pb::GetStatusRequest {
            tcn: "TX-DISK-0002".into(),
        })
        .await;
    // The first read after the failure may still meet the store reopening; both answers say
    // "not held", never "held".
    if let Ok(s) = e {
        panic!("refused booking is held: {:?}", s.into_inner());
    }
    let r = b
        .submit(booking("TX-DISK-0002", TX_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.duplicate, "the refused booking was never stored");
    wait_completed(&gw, "TX", "TX-DISK-0002").await;
    let after = gw.counters().await;
    assert_eq!(
        after.get("submissions_completed").copied().unwrap_or(0),
        before.get("submissions_completed").copied().unwrap_or(0) + 1
    );
    let log = office_log(&gw, "HOU", Some(0)).await;
    let tcns: Vec<&str> = log
        .iter()
        .map(|n| n.outcome.as_ref().unwrap().tcn.as_str())
        .collect();
    assert_eq!(tcns, ["TX-DISK-0001", "TX-DISK-0002"]);
}

/// Retention: once a field office has acknowledged outcomes and the retention period has
/// passed, they are compacted away; what it has not acknowledged stays, and resuming from its
/// durable cursor still delivers exactly the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_outcomes_are_compacted_after_retention() {
    let gw = TestGateway::start_with_retention(std::time::Duration::ZERO).await;
    let mut b = gw.bureau("TX").await;
    for t in ["TX-RETAIN-0001", "TX-RETAIN-0002", "TX-RETAIN-0003"] {
        b.submit(booking(t, TX_RECEIVING, OVERSTAY_FELON))
            .await
            .unwrap();
        wait_completed(&gw, "TX", t).await;
    }
    let mut hou = gw.office("HOU").await;
    hou.ack(pb::AckRequest { cursor: 2 }).await.unwrap();
    // Compaction runs every second with a zero retention.
    let mut left = vec![];
    for _ in 0..100 {
        left = office_log(&gw, "HOU", Some(0)).await;
        if left.len() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let cursors: Vec<u64> = left.iter().map(|n| n.cursor).collect();
    assert_eq!(cursors, [3], "only the unacknowledged outcome stays");
    let resumed = office_log(&gw, "HOU", None).await;
    assert_eq!(
        resumed
            .iter()
            .map(|n| n.outcome.as_ref().unwrap().tcn.as_str())
            .collect::<Vec<_>>(),
        ["TX-RETAIN-0003"]
    );
    // Bureau responses have no acknowledgement and are kept.
    assert_eq!(bureau_log(&gw, "TX").await.len(), 6);
}

/// Standard templates: the same booking sent as an ISO/IEC 19794-2 or an ANSI INCITS 378
/// minutiae record instead of inline minutiae is identified the same way; a damaged record,
/// or one given together with inline fingers, is refused naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_carry_iso_or_ansi_minutiae_records() {
    use interop_matcher::formats::{self, Format};
    let gw = TestGateway::start().await;
    let mut b = gw.bureau("TX").await;
    let record = |tcn: &str, format: Format| {
        let mut s = booking(tcn, TX_RECEIVING, OVERSTAY_FELON);
        let mut prints = capture(OVERSTAY_FELON, tcn.len() as u64);
        // One record states one image size for all its fingers.
        let w = prints.fingers.iter().map(|f| f.width).max().unwrap();
        let h = prints.fingers.iter().map(|f| f.height).max().unwrap();
        for f in &mut prints.fingers {
            (f.width, f.height) = (w, h);
        }
        s.fingers.clear();
        s.minutiae_record = formats::encode(format, &prints.fingers).unwrap();
        s.minutiae_record_format = match format {
            Format::Iso19794_2 => pb::MinutiaeRecordFormat::Iso1979422005,
            Format::Ansi378 => pb::MinutiaeRecordFormat::Ansi3782004,
        } as i32;
        s
    };
    for (tcn, format) in [
        ("TX-ISO-000001", Format::Iso19794_2),
        ("TX-ANSI-00001", Format::Ansi378),
    ] {
        b.submit(record(tcn, format)).await.unwrap();
        wait_completed(&gw, "TX", tcn).await;
    }
    let log = office_log(&gw, "HOU", Some(0)).await;
    assert_eq!(log.len(), 2);
    for n in &log {
        let o = n.outcome.as_ref().unwrap();
        assert!(o.hit, "{}: the record's prints must hit", o.tcn);
        assert_eq!(o.fin, fin(OVERSTAY_FELON));
    }

    let mut damaged = record("TX-ISO-000002", Format::Iso19794_2);
    damaged.minutiae_record[0] = b'X';
    let mut both = record("TX-ISO-000003", Format::Iso19794_2);
    both.fingers = booking("TX-ISO-000003", TX_RECEIVING, NOBODY).fingers;
    let mut unnamed = record("TX-ISO-000004", Format::Iso19794_2);
    unnamed.minutiae_record_format = 0;
    for (bad, field) in [
        (damaged, "minutiae_record"),
        (both, "minutiae_record"),
        (unnamed, "minutiae_record_format"),
    ] {
        let e = b.submit(bad).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(field), "{}", e.message());
    }
    assert_eq!(gw.counters().await.get("submissions_accepted"), Some(&2));
}
