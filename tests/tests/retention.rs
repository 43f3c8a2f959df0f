//! Retention over real mutual TLS (DESIGN.md §3.9: retention bounds disk). A bureau's
//! responses expire by age while its cursors and head stand and its field office's
//! unacknowledged outcomes stay; the disclosure audit, when an operator asks for it, is
//! archived to `DATA/archive` before it is pruned, each record exactly once, and `/metrics`
//! shows what is kept and what went.

use interop_e2e::*;
use interop_gateway::auth::principal::Principal;
use interop_gateway::store::archive;
use std::time::Duration;

/// The figure `name` (with its labels, as written) on `/metrics`.
fn figure(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{metrics}"))
}

async fn until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within 15 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bureau_responses_expire_by_age_and_cursors_stand() {
    let options = interop_gateway::server::ServeOptions {
        bureau_retention: Duration::from_secs(2),
        ..TestGateway::default_options()
    };
    let gw = TestGateway::start_with_options(options, None).await;
    let mut b = gw.bureau("TX").await;
    let mut receipts = vec![];
    for t in ["TX-EXPIRE-0001", "TX-EXPIRE-0002"] {
        let r = b.submit(booking(t, TX_RECEIVING, OVERSTAY_FELON)).await;
        receipts.push(r.unwrap().into_inner().receipt_id);
        wait_completed(&gw, "TX", t).await;
    }
    let first = bureau_log(&gw, "TX").await;
    assert_eq!(first.len(), 4, "two responses a booking");
    let tx = gw.client(Principal::Bureau { state: "TX".into() }).await;
    let head = tx.response_head().await.unwrap();
    assert_eq!(head, 4);
    let gw = &gw;
    until("the bureau's responses expired", || async move {
        bureau_log(gw, "TX").await.is_empty()
    })
    .await;
    assert_eq!(tx.response_head().await.unwrap(), head, "the head stands");
    // The field office acknowledged nothing: its outcomes stay, however old.
    assert_eq!(office_log(gw, "HOU", Some(0)).await.len(), 2);
    let metrics = gw.scrape().await;
    assert_eq!(
        figure(&metrics, "interop_store_events_kept{kind=\"bureau\"}"),
        0
    );
    assert_eq!(
        figure(
            &metrics,
            "interop_store_events_appended_total{kind=\"bureau\"}"
        ),
        4
    );
    assert_eq!(
        figure(&metrics, "interop_store_events_kept{kind=\"field_office\"}"),
        2
    );
    assert!(figure(&metrics, "interop_store_file_bytes") > 0);

    // New responses continue after the head; an old cursor reads from the first one kept.
    b.submit(booking("TX-EXPIRE-0003", TX_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap();
    wait_completed(gw, "TX", "TX-EXPIRE-0003").await;
    let mut old = tx.follow_responses(Some(1), false);
    let mut cursors = vec![];
    while let Some(r) = old.next().await.unwrap() {
        cursors.push(r.cursor);
    }
    assert_eq!(cursors, [5, 6]);

    // A booking that is not an identification is forgotten with its responses: a resend of
    // its TCN is a new submission. The identifications are kept (a removal, a detainer's
    // review or a complaint names one by TCN, months later): a resend is still a repeat.
    let no_hit = b
        .submit(booking("TX-EXPIRE-0004", TX_RECEIVING, NOBODY))
        .await
        .unwrap()
        .into_inner();
    wait_completed(gw, "TX", "TX-EXPIRE-0004").await;
    until("the no-hit's receipt forgotten", || async move {
        figure(&gw.scrape().await, "interop_store_receipts_expired_total") == 1
    })
    .await;
    let again = b
        .submit(booking("TX-EXPIRE-0004", TX_RECEIVING, NOBODY))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.duplicate);
    assert_ne!(again.receipt_id, no_hit.receipt_id);
    let first = b
        .submit(booking("TX-EXPIRE-0001", TX_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap()
        .into_inner();
    assert!(first.duplicate);
    assert_eq!(first.receipt_id, receipts[0]);
}

/// Every disclosure record id in the archive segments of `data`, in file order.
fn archived(data: &std::path::Path) -> Vec<u64> {
    let mut seqs = vec![];
    for seg in archive::segments(&archive::dir_in(data)).unwrap() {
        for line in std::fs::read_to_string(&seg.path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            seqs.push(v["seq"].as_u64().unwrap());
        }
    }
    seqs
}

async fn listed(gw: &TestGateway) -> Vec<u64> {
    let all = list_disclosures(gw, "", "", 1000).await;
    all.iter().map(|d| d.seq).collect()
}

/// With audit retention on (here: no period at all), delivered records go to the archive and
/// then leave the store; what the listing shows and what the archive holds are, together,
/// every sequence number once, in order, across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_is_archived_before_it_is_pruned_each_record_once() {
    let options = interop_gateway::server::ServeOptions {
        audit_retention: Some(Duration::ZERO),
        ..TestGateway::default_options()
    };
    let gw = TestGateway::start_with_options(options.clone(), None).await;
    let mut b = gw.bureau("TX").await;
    b.submit(booking("TX-ARCHIVE-0001", TX_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap();
    wait_completed(&gw, "TX", "TX-ARCHIVE-0001").await;
    assert_eq!(bureau_log(&gw, "TX").await.len(), 2);
    assert_eq!(office_log(&gw, "HOU", Some(0)).await.len(), 1);
    let data = &gw.data.clone();
    until("the first records archived", || async move {
        archived(data).len() >= 3
    })
    .await;
    let g = &gw;
    until("archived records pruned", || async move {
        let kept = listed(g).await;
        let held = archived(data);
        kept.iter().all(|q| q > held.last().unwrap())
    })
    .await;
    let metrics = gw.scrape().await;
    assert!(figure(&metrics, "interop_store_disclosures_archived_total") >= 3);
    assert!(figure(&metrics, "interop_store_archive_segments") >= 1);
    assert!(figure(&metrics, "interop_store_archive_bytes") > 0);

    // More deliveries after a restart: numbering continues, nothing is archived twice.
    let gw = gw.restart_with_options(options).await;
    assert_eq!(
        bureau_log(&gw, "TX").await.len(),
        2,
        "re-read, so recorded again"
    );
    let g = &gw;
    until("the re-reads archived too", || async move {
        listed(g).await.is_empty()
    })
    .await;
    let held = archived(data);
    let expected: Vec<u64> = (1..=held.len() as u64).collect();
    assert_eq!(held, expected, "every record archived once, in order");
    assert!(held.len() >= 5);
}
