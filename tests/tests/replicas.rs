//! Two gateways on one JetStream log share its pending work (issue 28: "replicas share the
//! pending work; a replica that dies leaves its unacknowledged work to the others"), over
//! real sockets and mutual TLS, against a real `nats-server` (skipped, loudly, without one,
//! unless `INTEROP_REQUIRE_NATS` is set).

use interop_e2e::*;
use interop_gateway::server::ServeOptions;
use interop_gateway::store::{DynStore, NatsOptions, NatsStore, test_server};
use interop_proto::v1 as pb;
use std::sync::Arc;
use std::time::Duration;

async fn replica(url: &str, name: &str) -> DynStore {
    let spec = format!("{url}/LOG?insecure=true&replica={name}&stale_ms=1000");
    Arc::new(
        NatsStore::connect(NatsOptions::parse(&spec).unwrap())
            .await
            .unwrap(),
    )
}

/// The figure `name` (unlabelled, or summed over its labels) in `/metrics` text.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Bookings sent to gateway `a` only, whose IDENT never answers: `a` takes only what its one
/// worker has room for, and `b` processes the rest; when `a` stops, what it held goes to `b`.
/// Every booking completes, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_on_one_log_share_its_work_and_a_stopped_ones_goes_to_the_other() {
    let Some(server) = test_server::start_server("gateways_on_one_log_share_its_work") else {
        return;
    };
    let options = ServeOptions {
        concurrency: 1,
        ..TestGateway::default_options()
    };
    let mut a = TestGateway::start_on_store(
        replica(&server.url, "a").await,
        options.clone(),
        Some(Arc::new(StalledIdent)),
    )
    .await;
    let b = TestGateway::start_on_store(replica(&server.url, "b").await, options, None).await;
    let n = 40;
    let tcns: Vec<String> = (0..n).map(|i| format!("TX-SHARED-{i:04}")).collect();
    let mut bureau = a.bureau("TX").await;
    for t in &tcns {
        bureau
            .submit(booking(t, TX_RECEIVING, CITIZEN))
            .await
            .unwrap();
    }

    // b completes what a had no room for; a holds the rest, stuck on its IDENT.
    let completed_at_b = || async { metric(&b.scrape().await, "interop_completed_total") };
    for _ in 0..600 {
        if completed_at_b().await >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (at_a, at_b) = (a.scrape().await, b.scrape().await);
    let held_by_a = metric(&at_a, "interop_store_work_handed_out_total");
    assert!(held_by_a >= 1, "a took work while it had room:\n{at_a}");
    assert!(
        completed_at_b().await >= 20,
        "b completed what a had no room for:\n{at_b}"
    );
    assert_eq!(
        metric(&at_a, "interop_completed_total"),
        0,
        "a's IDENT never answers"
    );
    assert!(
        metric(&at_a, "interop_backlog_parked") >= 1,
        "a counts what it receipted and b is processing:\n{at_a}"
    );

    // a stops: what it held goes to b.
    a.shutdown().await;
    drop(a);
    for t in &tcns {
        wait_completed(&b, "TX", t).await;
    }
    assert_eq!(completed_at_b().await, n, "each completed once, all at b");
    let log = bureau_log(&b, "TX").await;
    for t in &tcns {
        let answers = log
            .iter()
            .filter(|r| &r.tcn == t)
            .filter(|r| matches!(r.body, Some(pb::bureau_response::Body::CriminalHistory(_))))
            .count();
        assert_eq!(answers, 1, "{t}: one criminal-history response");
    }
    assert!(
        metric(&b.scrape().await, "interop_store_work_handed_out_total") >= n - held_by_a,
        "b was handed the rest"
    );
}
