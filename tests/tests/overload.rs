//! Bounds under hostile or heavy use, over real sockets (the figures themselves are in the
//! `overload` benchmark example, never asserted on timing here beyond generous "it happened at
//! all" limits):
//! - a slow-loris TCP connection that never finishes the TLS handshake is closed after the
//!   handshake timeout, and sockets that never finish cannot keep a real client out (the
//!   oldest handshake makes way); open connections are bounded;
//! - connections not used for the idle timeout are closed, open streams that carry nothing
//!   included (a follower re-opens after its last cursor);
//! - receipts never wait for the pipeline; a backlog past its budget refuses with
//!   RESOURCE_EXHAUSTED and stores nothing, and then only bureaus over their share of it;
//! - bureaus take turns, so a quiet bureau's submission does not wait behind a flood.

use interop_e2e::*;
use interop_gateway::auth::principal::Principal;
use interop_gateway::pipeline::BacklogBudget;
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

/// One worker, a stalled IDENT, and a backlog budget of `max` submissions.
fn stalled_options(max: usize) -> ServeOptions {
    ServeOptions {
        concurrency: 1,
        backlog: BacklogBudget {
            max_submissions: max,
            ..Default::default()
        },
        ..TestGateway::default_options()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_do_not_wait_for_the_pipeline() {
    // The one worker is stuck on its first search; receipts still come, one durable append
    // each, and nothing is refused while the backlog is within its budget.
    let gw =
        TestGateway::start_with_options(stalled_options(1000), Some(Arc::new(StalledIdent))).await;
    let mut tx = gw.bureau("TX").await;
    for i in 0..200 {
        let r = tx
            .submit(booking(&format!("TX-NOWAIT-{i:04}"), TX_RECEIVING, NOBODY))
            .await
            .expect("admitted within the budget")
            .into_inner();
        assert!(!r.duplicate);
    }
    assert_eq!(gw.gateway.pipeline_depth(), (199, 1));
    let metrics = gw.scrape().await;
    assert!(metrics.contains("interop_pipeline_queued 199"), "{metrics}");
    assert!(metrics.contains("interop_backlog_bureaus 1"), "{metrics}");
    // Nothing completes, so the drain time is unknown.
    assert!(
        metrics.contains("interop_backlog_drain_seconds +Inf"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_past_its_budget_refuses_with_resource_exhausted_and_stores_nothing() {
    let gw =
        TestGateway::start_with_options(stalled_options(3), Some(Arc::new(StalledIdent))).await;
    let mut tx = gw.bureau("TX").await;
    for i in 0..3 {
        tx.submit(booking(&format!("TX-SHED-{i:04}"), TX_RECEIVING, NOBODY))
            .await
            .expect("within the budget");
    }
    let e = tx
        .submit(booking("TX-SHED-0003", TX_RECEIVING, NOBODY))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    for part in [
        "backlog past its budget",
        "the backlog holds 3 submissions (the limit is 3) and bureau TX holds 3",
        "nothing has completed in the last minute",
        "retry with backoff",
    ] {
        assert!(e.message().contains(part), "{part:?} in {}", e.message());
    }
    let status = tx
        .get_status(pb::GetStatusRequest {
            tcn: "TX-SHED-0003".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::NotFound,
        "a refused submission is not stored"
    );
    // A repeat of a held submission still gets its receipt.
    let again = tx
        .submit(booking("TX-SHED-0001", TX_RECEIVING, NOBODY))
        .await
        .expect("a repeat is answered")
        .into_inner();
    assert!(again.duplicate);
    assert!(gw.scrape().await.contains("interop_shed_total 1"));
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
async fn past_the_budget_a_flooding_bureau_is_refused_while_others_get_in() {
    let (open, gate) = tokio::sync::watch::channel(false);
    let gw =
        TestGateway::start_with_options(stalled_options(4), Some(Arc::new(GatedIdent(gate)))).await;
    let mut tx = gw.bureau("TX").await;
    for i in 0..4 {
        tx.submit(booking(&format!("TX-SHARE-{i:04}"), TX_RECEIVING, NOBODY))
            .await
            .expect("within the budget");
    }
    let e = tx
        .submit(booking("TX-SHARE-0004", TX_RECEIVING, NOBODY))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(
        e.message()
            .contains("bureau TX holds 4 of them (its share is 4)"),
        "{}",
        e.message()
    );
    // Another bureau holds nothing of the backlog: it still gets in, up to its share.
    let mut ca = gw.bureau("CA").await;
    for i in 0..2 {
        ca.submit(booking(&format!("CA-SHARE-{i:04}"), CA_RECEIVING, NOBODY))
            .await
            .expect("another bureau is admitted");
    }
    assert!(
        ca.submit(booking("CA-SHARE-0002", CA_RECEIVING, NOBODY))
            .await
            .is_err(),
        "at its share"
    );
    // Once TX's submissions are processed, it is admitted again.
    open.send(true).unwrap();
    for i in 0..4 {
        wait_completed(&gw, "TX", &format!("TX-SHARE-{i:04}")).await;
    }
    tx.submit(booking("TX-SHARE-0004", TX_RECEIVING, NOBODY))
        .await
        .expect("admitted once its backlog drained");
}

/// IDENT that answers one search per permit the test adds.
struct SteppedIdent(Arc<tokio::sync::Semaphore>);

#[interop_gateway::engines::async_trait]
impl interop_gateway::engines::IdentSearch for SteppedIdent {
    async fn search(
        &self,
        _prints: interop_matcher::Tenprint,
    ) -> Result<Option<interop_gateway::engines::IdentHit>, interop_gateway::engines::BackendError>
    {
        self.0.acquire().await.expect("open").forget();
        Ok(None)
    }
}

async fn completed(gw: &TestGateway, state: &str, tcn: &str) -> bool {
    gw.bureau(state)
        .await
        .get_status(pb::GetStatusRequest { tcn: tcn.into() })
        .await
        .unwrap()
        .into_inner()
        .stage
        == pb::Stage::Completed as i32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bureaus_take_turns_so_a_quiet_bureau_does_not_wait_behind_a_flood() {
    let steps = Arc::new(tokio::sync::Semaphore::new(0));
    let gw = TestGateway::start_with_options(
        ServeOptions {
            max_reads_per_identity: 0,
            // Nothing kept decoded: every submission is read back from the store.
            backlog: BacklogBudget {
                memory_bytes: 0,
                ..Default::default()
            },
            ..stalled_options(1000)
        },
        Some(Arc::new(SteppedIdent(steps.clone()))),
    )
    .await;
    // TX floods 30 submissions; then CA sends one.
    let mut tx = gw.bureau("TX").await;
    for i in 0..30 {
        tx.submit(booking(&format!("TX-FLOOD-{i:04}"), TX_RECEIVING, NOBODY))
            .await
            .unwrap();
    }
    gw.bureau("CA")
        .await
        .submit(booking("CA-QUIET-0001", CA_RECEIVING, NOBODY))
        .await
        .unwrap();
    // The worker took TX's first at once, and TX's turn came before CA had work; CA's is
    // next, not TX's 28 others.
    steps.add_permits(3);
    wait_completed(&gw, "CA", "CA-QUIET-0001").await;
    let tx_done = {
        let mut n = 0;
        for i in 0..30 {
            n += usize::from(completed(&gw, "TX", &format!("TX-FLOOD-{i:04}")).await);
        }
        n
    };
    assert_eq!(tx_done, 2, "CA's submission waited for {tx_done} of TX's");
    // The rest drain, in TX's own order.
    steps.add_permits(1000);
    wait_completed(&gw, "TX", "TX-FLOOD-0029").await;
    assert_eq!(gw.gateway.pipeline_depth(), (0, 0));
}
