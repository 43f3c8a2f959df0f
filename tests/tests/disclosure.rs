//! The disclosure audit over real mutual TLS: every result delivered to anyone is recorded
//! (who, which TCN, when, through which RPC), readable only by the admin role, append-only
//! across a restart, and carrying ids only. A non-receiving jurisdiction's complaint can be
//! answered from it: its bureau never appears as a recipient of an immigration result, while
//! its field office does.

use interop_e2e::*;
use interop_gateway::auth::principal::Principal;
use interop_gateway_cli::pki;
use interop_proto::v1 as pb;
use pb::admin_service_client::AdminServiceClient;
use tonic::Code;

const TX_BUREAU: &str = "spiffe://interop.local/bureau/TX";
const HOU_OFFICE: &str = "spiffe://interop.local/field-office/HOU";
const STREAM_RESPONSES: &str = "interop.v1.SubmissionService/StreamResponses";
const SUBSCRIBE: &str = "interop.v1.FieldOfficeService/Subscribe";

async fn list(gw: &TestGateway, tcn: &str, recipient: &str) -> Vec<pb::Disclosure> {
    list_disclosures(gw, tcn, recipient, 3).await
}

fn kinds(d: &[pb::Disclosure], recipient: &str) -> Vec<(pb::DisclosureKind, String)> {
    d.iter()
        .filter(|d| d.recipient == recipient)
        .map(|d| (d.kind(), d.rpc.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_receiving_bureau_never_receives_immigration_results_and_the_audit_shows_it() {
    let gw = TestGateway::start().await;
    let declines_results = "TX-AUDIT-0001";
    let receiving = "TX-AUDIT-0002";
    let mut tx = gw.bureau("TX").await;
    tx.submit(booking(declines_results, TX_NOT_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap();
    tx.submit(booking(receiving, TX_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap();
    wait_completed(&gw, "TX", declines_results).await;
    wait_completed(&gw, "TX", receiving).await;
    // Nothing is delivered yet but status answers: no stream disclosure so far.
    assert!(
        list(&gw, declines_results, "")
            .await
            .iter()
            .all(|d| d.kind() == pb::DisclosureKind::Status)
    );

    let office = office_log(&gw, "HOU", Some(0)).await;
    assert_eq!(office.len(), 2);
    gw.office("HOU")
        .await
        .decide(detain(
            "TX",
            declines_results,
            prost_types::Timestamp {
                seconds: 1_307_000_000,
                nanos: 0,
            },
        ))
        .await
        .unwrap();
    let bureau = bureau_log(&gw, "TX").await;

    // The non-receiving jurisdiction's booking: the office got the outcome (stream) and its detainer (unary);
    // the bureau got criminal history, status and the detainer — never an immigration result.
    let audit = list(&gw, declines_results, "").await;
    let office_got = kinds(&audit, HOU_OFFICE);
    assert!(office_got.contains(&(pb::DisclosureKind::IdentOutcome, SUBSCRIBE.into())));
    assert!(office_got.contains(&(
        pb::DisclosureKind::Decision,
        "interop.v1.FieldOfficeService/Decide".into()
    )));
    let bureau_got = kinds(&audit, TX_BUREAU);
    assert!(bureau_got.contains(&(pb::DisclosureKind::CriminalHistory, STREAM_RESPONSES.into())));
    assert!(bureau_got.contains(&(pb::DisclosureKind::Detainer, STREAM_RESPONSES.into())));
    assert!(bureau_got.contains(&(
        pb::DisclosureKind::Status,
        "interop.v1.SubmissionService/GetStatus".into()
    )));
    for d in &audit {
        assert_eq!((d.state.as_str(), d.tcn.as_str()), ("TX", declines_results));
        if d.kind() == pb::DisclosureKind::Immigration {
            panic!(
                "non-receiving booking disclosed as immigration result to {}",
                d.recipient
            );
        }
        assert!(
            [TX_BUREAU, HOU_OFFICE].contains(&d.recipient.as_str()),
            "nobody else: {}",
            d.recipient
        );
    }

    // The control: the receiving jurisdiction's bureau does get (and is recorded getting) it,
    // at the cursor of the message it read.
    let audit = list(&gw, receiving, TX_BUREAU).await;
    let immigration: Vec<_> = audit
        .iter()
        .filter(|d| d.kind() == pb::DisclosureKind::Immigration)
        .collect();
    assert_eq!(immigration.len(), 1, "{audit:?}");
    let delivered = bureau
        .iter()
        .find(|r| {
            r.tcn == receiving && matches!(r.body, Some(pb::bureau_response::Body::Immigration(_)))
        })
        .expect("immigration response delivered");
    assert_eq!(immigration[0].cursor, delivered.cursor);
    assert_eq!(immigration[0].rpc, STREAM_RESPONSES);
    let tx_serial = pki::serial_of_pem_file(
        &gw.pki
            .client(&Principal::Bureau { state: "TX".into() })
            .cert,
    )
    .unwrap();
    assert_eq!(immigration[0].certificate_serial, tx_serial);

    // By recipient only: every immigration result the TX bureau ever got is the receiving one.
    let to_bureau = list(&gw, "", TX_BUREAU).await;
    assert!(to_bureau.iter().all(|d| d.recipient == TX_BUREAU));
    let immigration_tcns: Vec<_> = to_bureau
        .iter()
        .filter(|d| d.kind() == pb::DisclosureKind::Immigration)
        .map(|d| d.tcn.as_str())
        .collect();
    assert_eq!(immigration_tcns, [receiving]);
    // Pages are in order, without gaps or repeats.
    let seqs: Vec<u64> = to_bureau.iter().map(|d| d.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // Ids only: no FIN, name, date of birth or determination in the audit.
    let everything = format!("{:?}", list(&gw, "", "").await);
    for secret in [
        fin(OVERSTAY_FELON).as_str(),
        "Synthetic Person",
        "1980-02-03",
        "VisaOverstay",
    ] {
        assert!(!everything.contains(secret), "audit carries {secret}");
    }

    // Reading the stream again is another disclosure; the audit only grows, and survives a
    // restart.
    let before = list(&gw, "", "").await;
    office_log(&gw, "HOU", Some(0)).await;
    let after = list(&gw, "", "").await;
    assert_eq!(after.len(), before.len() + 2);
    assert_eq!(&after[..before.len()], &before[..]);
    let gw = gw.restart(None).await;
    assert_eq!(list(&gw, "", "").await, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_admin_reads_the_audit_and_bad_filters_are_named() {
    let gw = TestGateway::start().await;
    let req = || pb::ListDisclosuresRequest::default();
    for who in [
        Principal::Bureau { state: "TX".into() },
        Principal::FieldOffice {
            office: "HOU".into(),
        },
    ] {
        let e = AdminServiceClient::new(gw.channel(who.clone()).await)
            .list_disclosures(req())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{who:?}");
        assert!(e.message().contains("admin"), "{}", e.message());
    }
    let mut admin = gw.admin().await;
    for (field, bad) in [
        (
            "page_token",
            pb::ListDisclosuresRequest {
                page_token: "not-a-token".into(),
                ..req()
            },
        ),
        (
            "recipient",
            pb::ListDisclosuresRequest {
                recipient: "bureau/TX".into(),
                ..req()
            },
        ),
        (
            "tcn",
            pb::ListDisclosuresRequest {
                tcn: "lower case".into(),
                ..req()
            },
        ),
    ] {
        let e = admin.list_disclosures(bad).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}");
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }
    let empty = admin.list_disclosures(req()).await.unwrap().into_inner();
    assert!(empty.disclosures.is_empty());
    assert!(empty.next_page_token.is_empty());
}

/// A client that reads one message and goes away leaves a few audit rows, not one for each
/// message of the batch the gateway had read for it (once up to 256 a call: 200 calls wrote
/// 7,400 rows in a third of a second). Rows follow what was handed to the connection, which
/// the gateway hands over in chunks of 1, 2, 4, ... as the connection takes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cancelled_after_one_message_records_only_what_was_handed_over() {
    use tokio_stream::StreamExt;
    let gw = TestGateway::start().await;
    let mut tx = gw.bureau("TX").await;
    let tcns: Vec<String> = (0..30).map(|i| format!("TX-AMPL-{i:04}")).collect();
    for tcn in &tcns {
        tx.submit(booking(tcn, TX_RECEIVING, OVERSTAY_FELON))
            .await
            .unwrap();
    }
    for tcn in &tcns {
        wait_completed(&gw, "TX", tcn).await;
    }
    let stored = bureau_log(&gw, "TX").await.len();
    assert!(stored >= 60, "{stored} responses stored");
    let before = list_disclosures(&gw, "", TX_BUREAU, 1000).await.len();
    assert!(
        before >= stored / 2,
        "a full read is recorded: {before} rows"
    );

    let calls = 10;
    for _ in 0..calls {
        let mut s = tx
            .stream_responses(pb::StreamResponsesRequest {
                after_cursor: 0,
                follow: true,
            })
            .await
            .unwrap()
            .into_inner();
        let first = s.next().await.expect("a message").unwrap();
        assert_eq!(first.cursor, 1);
        drop(s);
    }
    // Let the gateway notice each cancellation.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let rows = list_disclosures(&gw, "", TX_BUREAU, 1000).await.len() - before;
    // One row is the message read; chunks of 2, 4 and 8 may have gone to the connection
    // before the cancellation reached the gateway. Before: every stored message, each call.
    assert!(
        rows >= calls && rows <= 15 * calls,
        "{rows} rows for {calls} calls that each read one message of {stored}"
    );
}

/// The admin's reads of a gallery and of rap sheets are recorded too (issue 27): a search's
/// candidates and a criminal-history check each leave one row naming the admin and the RPC,
/// before the answer leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admins_gallery_searches_and_rap_sheet_checks_are_recorded() {
    const ADMIN: &str = "spiffe://interop.local/admin";
    let gw = TestGateway::start().await;
    let admin = gw.channel(Principal::Admin).await;
    let fingers = interop_gateway::convert::tenprint_to_pb(&capture(OVERSTAY_FELON, 1));
    pb::matcher_service_client::MatcherServiceClient::new(admin.clone())
        .search(pb::SearchRequest {
            fingers: fingers.clone(),
            max_candidates: 5,
            ..Default::default()
        })
        .await
        .expect("search");
    pb::criminal_history_service_client::CriminalHistoryServiceClient::new(admin)
        .check(pb::CheckRequest {
            tcn: "TX-ADMINREAD-0001".into(),
            fingers,
        })
        .await
        .expect("check");
    let rows = list(&gw, "", ADMIN).await;
    let seen: Vec<(pb::DisclosureKind, &str, &str)> = rows
        .iter()
        .map(|d| (d.kind(), d.rpc.as_str(), d.tcn.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                pb::DisclosureKind::Gallery,
                "interop.v1.MatcherService/Search",
                ""
            ),
            (
                pb::DisclosureKind::RapSheet,
                "interop.v1.CriminalHistoryService/Check",
                "TX-ADMINREAD-0001"
            ),
        ]
    );
    assert!(rows.iter().all(|d| !d.certificate_serial.is_empty()));
}
