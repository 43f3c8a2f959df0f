//! Bounds under hostile or heavy use, over real sockets (the figures themselves are in the
//! `overload` benchmark example, never asserted on timing here beyond generous "it happened at
//! all" limits):
//! - a slow-loris TCP connection that never finishes the TLS handshake is closed after the
//!   handshake timeout, and sockets that never finish cannot keep a real client out (the
//!   oldest handshake makes way); open connections are bounded;
//! - connections not used for the idle timeout are closed, open streams that carry nothing
//!   included (a follower re-opens after its last cursor);
//! - a full pipeline refuses with RESOURCE_EXHAUSTED, stores nothing, and a call past its
//!   `grpc-timeout` is abandoned by the server (and stores nothing either).

use interop_e2e::*;
use interop_gateway::auth::principal::Principal;
use interop_gateway::server::ServeOptions;
use interop_proto::v1 as pb;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

fn addr(gw: &TestGateway) -> String {
    gw.endpoint.trim_start_matches("https://").to_string()
}

/// Whether the server closes `s` (EOF or reset) within `limit`.
async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(limit, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A TLS alert is fine; keep reading until the close.
            Ok(Ok(_)) => continue,
        }
    }
}

/// One attempt, no retries (the client library would otherwise wait the bound out).
async fn admin_answers(gw: &TestGateway) -> bool {
    let admin = gw.pki.client(&Principal::Admin);
    let connected =
        match interop_gateway_cli::pki::client_config(&gw.endpoint, &gw.pki, Some(&admin)) {
            Ok(c) => c
                .retry(interop_client::RetryPolicy::none())
                .connect()
                .await
                .ok(),
            Err(_) => None,
        };
    match connected {
        None => false,
        Some(c) => pb::admin_service_client::AdminServiceClient::new(c.channel())
            .list_revoked(pb::ListRevokedRequest {})
            .await
            .is_ok(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_loris_handshake_is_closed_after_the_timeout_and_cannot_keep_others_out() {
    let gw = TestGateway::start_with_options(
        ServeOptions {
            tls_handshake_timeout: Duration::from_millis(500),
            max_handshakes_per_address: 1,
            ..TestGateway::default_options()
        },
        None,
    )
    .await;
    let stats = gw.gateway.listen_stats.clone();
    // One sends the first bytes of a ClientHello record and stops, filling its address's room
    // for handshakes; one sends nothing (on Linux the kernel holds it until it speaks or the
    // deferral ends: TCP_DEFER_ACCEPT).
    let mut partial = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut silent = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A real client from the same address gets in: the oldest handshake makes way.
    assert!(
        admin_answers(&gw).await,
        "sockets that never finish a handshake kept a real client out"
    );
    assert!(stats.handshake_evicted.load(Ordering::Relaxed) >= 1);
    assert!(
        closed_within(&mut partial, Duration::from_secs(2)).await,
        "the oldest handshake is closed to make way"
    );

    let started = Instant::now();
    assert!(
        closed_within(&mut silent, Duration::from_secs(10)).await,
        "a handshake that never finishes must be closed"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "closed by the handshake timeout, not by anything slower"
    );
    let metrics = gw.scrape().await;
    for outcome in ["handshake_timeout", "handshake_evicted"] {
        assert!(
            metrics.contains(&format!(
                "interop_connections_total{{outcome=\"{outcome}\"}}"
            )),
            "{outcome} in {metrics}"
        );
    }
}

/// Issue 27's flood: many more silent sockets than there is room for handshakes, from the
/// bureau's own address; the bureau still connects and is receipted, promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_silent_sockets_cannot_keep_a_bureau_out() {
    let gw = TestGateway::start_with_options(
        ServeOptions {
            max_handshakes: 64,
            max_handshakes_per_address: 16,
            ..TestGateway::default_options()
        },
        None,
    )
    .await;
    let mut flood = Vec::new();
    for _ in 0..300 {
        flood.push(tokio::net::TcpStream::connect(addr(&gw)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let receipt = gw
        .bureau("TX")
        .await
        .submit(booking("TX-FLOOD-0001", TX_RECEIVING, NOBODY))
        .await
        .expect("the bureau was kept out by silent sockets");
    assert!(!receipt.into_inner().receipt_id.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the bureau waited {:?} (the handshake timeout is what a full room once cost)",
        started.elapsed()
    );
    drop(flood);
}

/// Reads that disclose case data are rate-limited per identity: a bureau's loop of status
/// checks is refused past its burst, naming the limit, while another bureau reads on; the
/// audit holds a row only for each status that was answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_case_data_are_rate_limited_per_identity() {
    let gw = TestGateway::start_with_options(
        ServeOptions {
            max_reads_per_identity: 5,
            ..TestGateway::default_options()
        },
        None,
    )
    .await;
    let tcn = "TX-READRATE-0001";
    let mut tx = gw.bureau("TX").await;
    tx.submit(booking(tcn, TX_RECEIVING, NOBODY)).await.unwrap();
    let (mut answered, mut refused) = (0, 0);
    for _ in 0..40 {
        match tx
            .get_status(pb::GetStatusRequest { tcn: tcn.into() })
            .await
        {
            Ok(_) => answered += 1,
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                assert!(
                    s.message().contains("read rate limit of 5 calls a second")
                        && s.message().contains("retry in"),
                    "{}",
                    s.message()
                );
                refused += 1;
            }
        }
    }
    // A burst of 10, and what refilled while the loop ran (well under a second).
    assert!((10..20).contains(&answered), "{answered} answered");
    assert_eq!(answered + refused, 40);
    // Another identity reads on.
    let e = gw
        .bureau("CA")
        .await
        .get_status(pb::GetStatusRequest {
            tcn: "CA-UNKNOWN-0001".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::NotFound,
        "another bureau is not limited: {e:?}"
    );
    // One audit row per answered status, none for a refused one.
    let rows = gw
        .admin()
        .await
        .list_disclosures(pb::ListDisclosuresRequest {
            tcn: tcn.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .disclosures
        .into_iter()
        .filter(|d| d.rpc.ends_with("/GetStatus"))
        .count();
    assert_eq!(rows, answered);
}

/// Connections past their handshake are bounded too: with one held open, another is closed
/// before TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_are_bounded() {
    let gw = TestGateway::start_with_options(
        ServeOptions {
            max_connections: 1,
            ..TestGateway::default_options()
        },
        None,
    )
    .await;
    let stats = gw.gateway.listen_stats.clone();
    let mut held = gw.admin().await;
    held.list_revoked(pb::ListRevokedRequest {}).await.unwrap();
    assert!(
        !admin_answers(&gw).await,
        "a second connection must be refused while one is open"
    );
    assert!(stats.refused_over_limit.load(Ordering::Relaxed) >= 1);
    drop(held);
}

/// A connection not used for the idle timeout is closed, and an open stream that carries
/// nothing is no use: a Health `Watch` (one message, then silence) no longer keeps its
/// connection forever. A quiet subscriber is closed like any idle client, and the client
/// library's follower re-opens after its last cursor and delivers what comes next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_streams_that_carry_nothing_are_closed() {
    let gw = TestGateway::start_with_options(
        ServeOptions {
            idle_timeout: Some(Duration::from_millis(300)),
            ..TestGateway::default_options()
        },
        None,
    )
    .await;
    let stats = gw.gateway.listen_stats.clone();
    let mut watch = tonic_health::pb::health_client::HealthClient::new(
        gw.channel(Principal::Bureau { state: "TX".into() }).await,
    )
    .watch(tonic_health::pb::HealthCheckRequest::default())
    .await
    .unwrap()
    .into_inner();
    watch.message().await.unwrap().expect("the first status");
    let office = gw
        .client(Principal::FieldOffice {
            office: "HOU".into(),
        })
        .await;
    let mut notes = office.subscribe(Some(0));
    let mut admin = gw.admin().await;
    admin.list_revoked(pb::ListRevokedRequest {}).await.unwrap();

    // The watch carries nothing more: its connection is closed, and the stream ends.
    let ended = tokio::time::timeout(Duration::from_secs(10), watch.message()).await;
    assert!(
        matches!(ended, Ok(Err(_)) | Ok(Ok(None))),
        "the silent watch kept its connection: {ended:?}"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        stats.idle_closed.load(Ordering::Relaxed) >= 3,
        "the watch's, the quiet subscriber's and the admin's connections: {}",
        stats.idle_closed.load(Ordering::Relaxed)
    );

    // The follower re-opens after its last cursor: the next identification arrives once.
    let tcn = "TX-IDLE-0001";
    gw.bureau("TX")
        .await
        .submit(booking(tcn, TX_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), notes.next())
        .await
        .expect("the follower delivers after its connection was closed")
        .unwrap()
        .expect("a notification");
    assert_eq!(n.outcome.unwrap().tcn, tcn);

    // A client whose idle connection was closed simply connects again.
    let mut ok = false;
    for _ in 0..3 {
        if admin.list_revoked(pb::ListRevokedRequest {}).await.is_ok() {
            ok = true;
            break;
        }
    }
    assert!(ok, "the channel reconnects after an idle close");
}

/// A stalled IDENT keeps the one worker busy, so the queue (depth 1) fills.
fn stalled_options(admission_wait: Duration) -> ServeOptions {
    ServeOptions {
        concurrency: 1,
        queue_depth: 1,
        admission_wait,
        // The pipeline's own bound is under test here, not a bureau's share.
        max_queued_per_bureau: 100,
        ..TestGateway::default_options()
    }
}

/// Submits until one is refused; returns the refusal, the TCN and how long that call took.
async fn fill_until_refused(
    gw: &TestGateway,
    prefix: &str,
    timeout: Option<Duration>,
) -> (tonic::Status, String, Duration) {
    let mut tx = gw.bureau("TX").await;
    for i in 0..20 {
        let tcn = format!("{prefix}-{i:04}");
        let mut req = tonic::Request::new(booking(&tcn, TX_RECEIVING, NOBODY));
        if let Some(t) = timeout {
            req.set_timeout(t);
        }
        let started = Instant::now();
        if let Err(e) = tx.submit(req).await {
            return (e, tcn, started.elapsed());
        }
    }
    panic!("20 submissions were all admitted with one worker and a queue of one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pipeline_sheds_with_resource_exhausted_and_stores_nothing() {
    let gw = TestGateway::start_with_options(
        stalled_options(Duration::from_millis(50)),
        Some(Arc::new(StalledIdent)),
    )
    .await;
    let (e, tcn, _) = fill_until_refused(&gw, "TX-SHED", None).await;
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("pipeline is full"), "{}", e.message());
    let status = gw
        .bureau("TX")
        .await
        .get_status(pb::GetStatusRequest { tcn })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::NotFound,
        "a shed submission is not stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_grpc_timeout_is_abandoned_and_stores_nothing() {
    // Without the deadline, a call that finds the queue full would wait 5 s for room.
    let gw = TestGateway::start_with_options(
        stalled_options(Duration::from_secs(5)),
        Some(Arc::new(StalledIdent)),
    )
    .await;
    let (e, tcn, took) =
        fill_until_refused(&gw, "TX-DEADLINE", Some(Duration::from_millis(300))).await;
    // tonic's server-side deadline (our client sets no local one, only the header) answers
    // CANCELLED "Timeout expired"; the call never reached RESOURCE_EXHAUSTED.
    assert_eq!(e.code(), Code::Cancelled, "{e:?}");
    assert_eq!(e.message(), "Timeout expired");
    assert!(
        took < Duration::from_secs(4),
        "answered at its deadline, not after the 5 s admission wait ({took:?})"
    );
    // The server dropped the call: nothing was stored, then or later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = gw
        .bureau("TX")
        .await
        .get_status(pb::GetStatusRequest { tcn })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

async fn follow_office(
    gw: &TestGateway,
    office: &str,
) -> Result<tonic::Streaming<pb::FieldOfficeNotification>, tonic::Status> {
    gw.office(office)
        .await
        .subscribe(pb::SubscribeRequest {
            after_cursor: Some(0),
            follow: true,
        })
        .await
        .map(|r| r.into_inner())
}

async fn follow_bureau(
    gw: &TestGateway,
    state: &str,
) -> Result<tonic::Streaming<pb::BureauResponse>, tonic::Status> {
    gw.bureau(state)
        .await
        .stream_responses(pb::StreamResponsesRequest {
            after_cursor: 0,
            follow: true,
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_are_bounded_in_all_and_per_identity() {
    let gw = TestGateway::start_with_options(
        ServeOptions {
            max_subscriptions: 3,
            max_subscriptions_per_identity: 2,
            ..TestGateway::default_options()
        },
        None,
    )
    .await;
    let first = follow_office(&gw, "HOU").await.unwrap();
    let _second = follow_office(&gw, "HOU").await.unwrap();
    let e = follow_office(&gw, "HOU").await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("per identity"), "{}", e.message());
    // Another identity still gets one, up to the total.
    let _los = follow_office(&gw, "LOS").await.unwrap();
    let e = follow_bureau(&gw, "TX").await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("limit"), "{}", e.message());
    // Closing a stream frees its slot.
    drop(first);
    let mut admitted = false;
    for _ in 0..100 {
        if follow_bureau(&gw, "TX").await.is_ok() {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted, "a closed stream's slot is given back");
}

/// IDENT that waits until the gate opens.
struct GatedIdent(tokio::sync::watch::Receiver<bool>);

#[interop_gateway::engines::async_trait]
impl interop_gateway::engines::IdentSearch for GatedIdent {
    async fn search(
        &self,
        _prints: interop_matcher::Tenprint,
    ) -> Result<Option<interop_gateway::engines::IdentHit>, interop_gateway::engines::BackendError>
    {
        let mut gate = self.0.clone();
        let _ = gate.wait_for(|open| *open).await;
        Ok(None)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bureau_cannot_take_the_whole_pipeline() {
    let (open, gate) = tokio::sync::watch::channel(false);
    let gw = TestGateway::start_with_options(
        ServeOptions {
            concurrency: 1,
            queue_depth: 16,
            max_queued_per_bureau: 2,
            ..TestGateway::default_options()
        },
        Some(Arc::new(GatedIdent(gate))),
    )
    .await;
    let mut tx = gw.bureau("TX").await;
    for i in 0..2 {
        tx.submit(booking(&format!("TX-SHARE-{i:04}"), TX_RECEIVING, NOBODY))
            .await
            .expect("within the share");
    }
    let e = tx
        .submit(booking("TX-SHARE-0002", TX_RECEIVING, NOBODY))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(
        e.message()
            .contains("bureau TX already has 2 submissions waiting"),
        "{}",
        e.message()
    );
    let not_stored = tx
        .get_status(pb::GetStatusRequest {
            tcn: "TX-SHARE-0002".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(not_stored.code(), Code::NotFound);
    // Another bureau still gets in while TX is at its share.
    gw.bureau("CA")
        .await
        .submit(booking("CA-SHARE-0001", CA_RECEIVING, NOBODY))
        .await
        .expect("another bureau is admitted");
    // Once TX's submissions are processed, its share is free again.
    open.send(true).unwrap();
    for i in 0..2 {
        wait_completed(&gw, "TX", &format!("TX-SHARE-{i:04}")).await;
    }
    let mut admitted = false;
    for _ in 0..100 {
        if tx
            .submit(booking("TX-SHARE-0002", TX_RECEIVING, NOBODY))
            .await
            .is_ok()
        {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admitted, "the share was not given back");
}
