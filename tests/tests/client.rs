//! The client library against a real gateway over mTLS, through a restart on the same port:
//! a field office's subscription and a bureau's response stream resume by themselves and
//! deliver each result exactly once; a bulk stream re-sends what was unanswered; a unary
//! submission retries until the gateway is back; and a refusal is never retried.

use interop_client::RetryPolicy;
use interop_e2e::*;
use interop_gateway::auth::principal::Principal;
use interop_proto::v1 as pb;
use std::collections::BTreeMap;
use std::time::Duration;
use tonic::Code;

fn tx() -> Principal {
    Principal::Bureau { state: "TX".into() }
}

fn hou() -> Principal {
    Principal::FieldOffice {
        office: "HOU".into(),
    }
}

/// A client patient enough to outlast a gateway restart on a slow machine (20 attempts, up
/// to 1 s apart).
async fn patient(gw: &TestGateway, who: Principal) -> Client {
    interop_gateway_cli::pki::client_config(&gw.endpoint, &gw.pki, Some(&gw.pki.client(&who)))
        .unwrap()
        .retry(RetryPolicy {
            max_attempts: 20,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        })
        .connect()
        .await
        .unwrap()
}

async fn submit_all(client: &Client, tcns: &[String]) {
    let subs: Vec<pb::Submission> = tcns
        .iter()
        .map(|t| booking(t, TX_RECEIVING, OVERSTAY_FELON))
        .collect();
    let mut answers = client.submit_many(subs, 4);
    let mut n = 0;
    while let Some(a) = answers.recv().await {
        let a = a.expect("the stream");
        assert!(a.result.is_ok(), "{}: {:?}", a.tcn, a.result);
        n += 1;
    }
    assert_eq!(n, tcns.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_resume_by_themselves_across_a_gateway_restart() {
    let gw = TestGateway::start().await;
    let office = gw.client(hou()).await;
    let bureau = patient(&gw, tx()).await;
    let (tx_seen, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let mut sub = office.subscribe(Some(0));
    let follow_office = tokio::spawn(async move {
        while let Some(n) = sub.next().await.expect("subscription") {
            let _ = tx_seen.send(("office", n.cursor, n.outcome.unwrap_or_default().tcn));
        }
    });
    let (tx_resp, mut responses) = tokio::sync::mpsc::unbounded_channel();
    let mut stream = bureau.follow_responses(None, true);
    let follow_bureau = tokio::spawn(async move {
        while let Some(r) = stream.next().await.expect("responses") {
            let _ = tx_resp.send((r.cursor, r.tcn));
        }
    });

    let first: Vec<String> = (0..6).map(|i| format!("TX-CLIENT-A-{i:04}")).collect();
    submit_all(&bureau, &first).await;
    let mut got = vec![];
    while got.len() < first.len() {
        let m = tokio::time::timeout(Duration::from_secs(30), seen.recv())
            .await
            .expect("outcomes before the restart")
            .unwrap();
        got.push(m);
    }

    let gw = gw.restart_on_same_port().await;
    // The same clients, not new ones: their channels reconnect to the restarted gateway.
    let second: Vec<String> = (0..6).map(|i| format!("TX-CLIENT-B-{i:04}")).collect();
    submit_all(&bureau, &second).await;
    while got.len() < first.len() + second.len() {
        let m = tokio::time::timeout(Duration::from_secs(60), seen.recv())
            .await
            .expect("outcomes after the restart")
            .unwrap();
        got.push(m);
    }
    // Nothing more arrives: no re-delivery of what was seen before the restart.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(seen.try_recv().is_err(), "an outcome was delivered twice");
    let mut per_tcn = BTreeMap::<String, usize>::new();
    let mut last = 0;
    for (_, cursor, tcn) in &got {
        assert!(*cursor > last, "cursors go forward");
        last = *cursor;
        *per_tcn.entry(tcn.clone()).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = first
        .iter()
        .chain(&second)
        .map(|t| (t.clone(), 1))
        .collect();
    assert_eq!(per_tcn, expected);

    // The bureau stream: criminal history and immigration response per booking, once each.
    let mut resp = vec![];
    while resp.len() < 2 * expected.len() {
        let r = tokio::time::timeout(Duration::from_secs(30), responses.recv())
            .await
            .expect("bureau responses")
            .unwrap();
        resp.push(r);
    }
    let cursors: std::collections::BTreeSet<u64> = resp.iter().map(|r| r.0).collect();
    assert_eq!(cursors.len(), resp.len(), "a bureau response came twice");
    assert_eq!(bureau_log(&gw, "TX").await.len(), resp.len());

    follow_office.abort();
    follow_bureau.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_waits_out_an_outage_and_a_refusal_is_not_retried() {
    let mut gw = TestGateway::start().await;
    let bureau = patient(&gw, tx()).await;
    gw.shutdown().await;
    // The gateway is down: the submission retries (UNAVAILABLE) until it is back.
    let c = bureau.clone();
    let pending = tokio::spawn(async move {
        c.submit(booking("TX-OUTAGE-0001", TX_RECEIVING, NOBODY))
            .await
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    if pending.is_finished() {
        panic!("gave up while the gateway was down: {:?}", pending.await);
    }
    let gw = gw.restart_on_same_port().await;
    let receipt = pending
        .await
        .unwrap()
        .expect("submitted once the gateway was back");
    assert_eq!(receipt.tcn, "TX-OUTAGE-0001");
    assert_eq!(gw.counters().await.get("submissions_accepted"), Some(&1));

    // A refusal comes back at once, with its field violations, and is not repeated.
    let mut bad = booking("TX-OUTAGE-0002", TX_RECEIVING, NOBODY);
    bad.ori = "bad".into();
    let e = bureau.submit(bad).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let violations = interop_client::field_violations(&e);
    assert!(violations.iter().any(|(f, _)| f == "ori"), "{violations:?}");

    // With retries off, an outage is reported as UNAVAILABLE.
    let mut gw = gw;
    gw.shutdown().await;
    let impatient =
        interop_gateway_cli::pki::client_config(&gw.endpoint, &gw.pki, Some(&gw.pki.client(&tx())))
            .unwrap()
            .retry(RetryPolicy::none())
            .connect_lazy()
            .unwrap();
    let e = impatient
        .submit(booking("TX-OUTAGE-0003", TX_RECEIVING, NOBODY))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_stream_broken_by_a_restart_re_sends_what_was_unanswered() {
    let gw = TestGateway::start().await;
    let bureau = patient(&gw, tx()).await;
    let tcns: Vec<String> = (0..40).map(|i| format!("TX-BULK-{i:04}")).collect();
    let subs: Vec<pb::Submission> = tcns
        .iter()
        .map(|t| booking(t, TX_RECEIVING, NOBODY))
        .collect();
    let mut answers = bureau.submit_many(subs, 2);
    let mut receipts = BTreeMap::<String, pb::Receipt>::new();
    let mut gw = Some(gw);
    let mut restarted = None;
    while let Some(a) = answers.recv().await {
        let a = a.expect("the stream is re-opened, not given up");
        let r = a.result.expect("receipted");
        assert!(
            receipts.insert(a.tcn.clone(), r).is_none(),
            "{} answered twice",
            a.tcn
        );
        if receipts.len() == 5
            && let Some(g) = gw.take()
        {
            restarted = Some(g.restart_on_same_port().await);
        }
    }
    let gw = restarted.expect("restarted mid-stream");
    assert_eq!(receipts.len(), tcns.len(), "every booking got its receipt");
    // Stored once each, whatever was sent twice.
    assert_eq!(
        gw.counters().await.get("submissions_accepted"),
        Some(&(tcns.len() as u64))
    );
    for t in &tcns {
        wait_completed(&gw, "TX", t).await;
    }
    let crim = bureau_log(&gw, "TX")
        .await
        .into_iter()
        .filter(|r| matches!(r.body, Some(pb::bureau_response::Body::CriminalHistory(_))))
        .count();
    assert_eq!(
        crim,
        tcns.len(),
        "one criminal-history response per booking"
    );
}
