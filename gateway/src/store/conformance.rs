//! The [`Store`] contract as executable checks. Every backend runs this suite; a backend is
//! given by a function that opens a store on a directory (opening the same directory again
//! must see everything committed before).

use super::*;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;

/// Expands `$test!(case, case, ...)` with every case of the suite, so each backend's test
/// module runs all of them and a new case cannot be left out of one backend.
#[cfg(test)]
macro_rules! each_case {
    ($test:ident) => {
        $test!(
            accept_is_idempotent_by_tcn,
            completion_appends_exactly_once_in_order,
            acks_are_monotonic_and_bounded,
            reopen_keeps_receipts_and_lists_unfinished,
            append_once_appends_once,
            concurrent_accepts_all_land,
            compaction_removes_only_old_acknowledged_events,
            disclosures_are_append_only_ordered_and_filtered
        );
    };
}
#[cfg(test)]
pub(crate) use each_case;

/// Opens a store on a directory.
pub type Open = fn(&Path) -> Pin<Box<dyn Future<Output = DynStore> + Send>>;

fn key(tcn: &str) -> SubmissionKey {
    SubmissionKey {
        bureau: "TX".into(),
        tcn: tcn.into(),
    }
}

fn office() -> StreamKey {
    StreamKey::Office("HOU".into())
}

/// A repeat with the same payload returns the first receipt; other content is a conflict.
pub async fn accept_is_idempotent_by_tcn(open: Open, dir: &Path) {
    let s = open(dir).await;
    let Accepted::New(first) = s.accept(key("T-1"), b"one".to_vec(), 1).await.unwrap() else {
        panic!("first accept must be new");
    };
    assert_eq!(
        s.accept(key("T-1"), b"one".to_vec(), 2).await.unwrap(),
        Accepted::Duplicate(first.clone())
    );
    assert!(matches!(
        s.accept(key("T-1"), b"two".to_vec(), 3).await,
        Err(StoreError::Conflict)
    ));
    // The same TCN from another bureau is another submission.
    let other = SubmissionKey {
        bureau: "CA".into(),
        tcn: "T-1".into(),
    };
    assert!(matches!(
        s.accept(other, b"one".to_vec(), 4).await.unwrap(),
        Accepted::New(_)
    ));
    // Still a duplicate after completion, when the payload itself is gone.
    assert!(s.complete(key("T-1"), Completion::default()).await.unwrap());
    assert_eq!(
        s.accept(key("T-1"), b"one".to_vec(), 5).await.unwrap(),
        Accepted::Duplicate(first)
    );
}

/// Completion appends once, in order, atomically with its counters.
pub async fn completion_appends_exactly_once_in_order(open: Open, dir: &Path) {
    let s = open(dir).await;
    let mut head = s.watch_head(&office());
    for i in 0..3u8 {
        let k = key(&format!("T-{i}"));
        s.accept(k.clone(), vec![i], 0).await.unwrap();
        let c = Completion {
            events: vec![
                (office(), vec![i]),
                (StreamKey::Bureau("TX".into()), vec![i]),
            ],
            counters: vec![("things".into(), 1), ("m/2011-01/TX001/x".into(), 2)],
            summary: None,
        };
        assert!(s.complete(k.clone(), c.clone()).await.unwrap());
        assert!(
            !s.complete(k, c).await.unwrap(),
            "second completion must be a no-op"
        );
    }
    let log = s.read(office(), 0, 100).await.unwrap();
    assert_eq!(log, vec![(1, vec![0]), (2, vec![1]), (3, vec![2])]);
    assert_eq!(s.read(office(), 1, 1).await.unwrap(), vec![(2, vec![1])]);
    assert_eq!(
        s.read(StreamKey::Bureau("TX".into()), 0, 100)
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(s.counters().await.unwrap().get("things"), Some(&3));
    let monthly = s.counters_with_prefix("m/2011-01/".into()).await.unwrap();
    assert_eq!(
        monthly.into_iter().collect::<Vec<_>>(),
        [("m/2011-01/TX001/x".to_string(), 6)]
    );
    assert!(
        s.counters_with_prefix("m/2011-02/".into())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(*head.borrow_and_update(), 3);
    assert!(s.unfinished().await.unwrap().is_empty());
}

/// `append_once` appends and records once; later calls return the first record and append
/// nothing; completion keeps its summary.
pub async fn append_once_appends_once(open: Open, dir: &Path) {
    let s = open(dir).await;
    s.accept(key("T-1"), vec![1], 0).await.unwrap();
    let c = Completion {
        events: vec![],
        counters: vec![],
        summary: Some(b"outcome".to_vec()),
    };
    s.complete(key("T-1"), c).await.unwrap();
    assert_eq!(
        s.submission(key("T-1"))
            .await
            .unwrap()
            .unwrap()
            .summary
            .as_deref(),
        Some(&b"outcome"[..])
    );
    let event = || Completion {
        events: vec![(StreamKey::Bureau("TX".into()), b"detainer".to_vec())],
        counters: vec![("detainers".into(), 1)],
        summary: None,
    };
    assert_eq!(
        s.append_once("d/T-1".into(), b"first".to_vec(), event())
            .await
            .unwrap(),
        Once::Appended
    );
    assert_eq!(
        s.append_once("d/T-1".into(), b"second".to_vec(), event())
            .await
            .unwrap(),
        Once::Existing(b"first".to_vec())
    );
    assert_eq!(
        s.read(StreamKey::Bureau("TX".into()), 0, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(s.counters().await.unwrap().get("detainers"), Some(&1));
}

/// Acks are durable, never go backwards and never pass the head.
pub async fn acks_are_monotonic_and_bounded(open: Open, dir: &Path) {
    {
        let s = open(dir).await;
        s.accept(key("T-1"), vec![1], 0).await.unwrap();
        let c = Completion {
            events: vec![(office(), vec![1]), (office(), vec![2])],
            counters: vec![],
            summary: None,
        };
        s.complete(key("T-1"), c).await.unwrap();
        assert_eq!(s.ack(office(), 2).await.unwrap(), 2);
        assert_eq!(s.ack(office(), 1).await.unwrap(), 2);
        assert!(matches!(
            s.ack(office(), 3).await,
            Err(StoreError::AckBeyondHead { cursor: 3, head: 2 })
        ));
    }
    wait_released().await;
    let s = open(dir).await;
    assert_eq!(s.acked(office()).await.unwrap(), 2);
}

/// Everything acknowledged survives a reopen; unfinished work is listed in order.
pub async fn reopen_keeps_receipts_and_lists_unfinished(open: Open, dir: &Path) {
    let first;
    {
        let s = open(dir).await;
        let Accepted::New(r) = s.accept(key("T-1"), b"a".to_vec(), 1).await.unwrap() else {
            panic!()
        };
        first = r;
        s.accept(key("T-2"), b"b".to_vec(), 2).await.unwrap();
        s.accept(key("T-3"), b"c".to_vec(), 3).await.unwrap();
        s.complete(key("T-2"), Completion::default()).await.unwrap();
        s.put_setting("x".into(), b"y".to_vec()).await.unwrap();
    }
    wait_released().await;
    let s = open(dir).await;
    let pending = s.unfinished().await.unwrap();
    let tcns: Vec<_> = pending.iter().map(|p| p.key.tcn.as_str()).collect();
    assert_eq!(tcns, ["T-1", "T-3"]);
    assert_eq!(pending[0].payload, b"a");
    assert_eq!(pending[0].receipt, first);
    let st = s.submission(key("T-2")).await.unwrap().unwrap();
    assert!(st.completed);
    assert_eq!(
        s.accept(key("T-1"), b"a".to_vec(), 9).await.unwrap(),
        Accepted::Duplicate(first)
    );
    assert_eq!(
        s.settings().await.unwrap().get("x").map(|v| v.as_slice()),
        Some(&b"y"[..])
    );
}

/// Many concurrent accepts all get distinct receipts and are all durable.
pub async fn concurrent_accepts_all_land(open: Open, dir: &Path) {
    let n = 500;
    {
        let s = open(dir).await;
        let mut tasks = Vec::new();
        for i in 0..n {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.accept(key(&format!("T-{i}")), vec![i as u8], 0).await
            }));
        }
        let mut ids = std::collections::HashSet::new();
        for t in tasks {
            let Accepted::New(r) = t.await.unwrap().unwrap() else {
                panic!()
            };
            assert!(ids.insert(r.receipt_id));
        }
    }
    wait_released().await;
    let s = open(dir).await;
    assert_eq!(s.unfinished().await.unwrap().len(), n);
}

/// Lets a closed store release its files (its writer thread exits when the last handle goes).
async fn wait_released() {
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}

/// Retention: compaction removes only acknowledged events whose acknowledgement is older than
/// the cut-off; heads, acks, later events and unacknowledged streams are untouched, and it
/// survives a reopen.
pub async fn compaction_removes_only_old_acknowledged_events(open: Open, dir: &Path) {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let bureau = StreamKey::Bureau("TX".into());
    {
        let s = open(dir).await;
        s.accept(key("T-1"), vec![1], 0).await.unwrap();
        let c = Completion {
            events: (1..=4u8)
                .map(|i| (office(), vec![i]))
                .chain([(bureau.clone(), vec![9])])
                .collect(),
            counters: vec![],
            summary: None,
        };
        s.complete(key("T-1"), c).await.unwrap();
        s.ack(office(), 1).await.unwrap();
        s.ack(office(), 3).await.unwrap();
        // Acknowledged only now: a cut-off an hour ago removes nothing.
        assert_eq!(s.compact(now() - 3_600_000).await.unwrap(), 0);
        assert_eq!(s.read(office(), 0, 100).await.unwrap().len(), 4);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert_eq!(s.compact(now()).await.unwrap(), 3);
        assert_eq!(s.compact(now()).await.unwrap(), 0, "nothing left to remove");
    }
    wait_released().await;
    let s = open(dir).await;
    let left: Vec<u64> = s
        .read(office(), 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(left, [4], "only the unacknowledged event stays");
    assert_eq!(s.acked(office()).await.unwrap(), 3);
    assert_eq!(*s.watch_head(&office()).borrow(), 4);
    assert_eq!(s.read(bureau.clone(), 0, 100).await.unwrap().len(), 1);
    // New events continue after the head.
    s.accept(key("T-2"), vec![2], 0).await.unwrap();
    let c = Completion {
        events: vec![(office(), vec![5])],
        counters: vec![],
        summary: None,
    };
    s.complete(key("T-2"), c).await.unwrap();
    let after: Vec<u64> = s
        .read(office(), 3, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(after, [4, 5]);
}

/// The disclosure audit: records get sequence numbers from 1 in commit order, filters by TCN
/// and recipient (alone or together) page correctly, compaction never touches them, and they
/// survive a reopen.
pub async fn disclosures_are_append_only_ordered_and_filtered(open: Open, dir: &Path) {
    let rec = |recipient: &str, tcn: &str, kind: DisclosureKind, cursor: u64| Disclosure {
        at_ms: 1_000 + cursor as i64,
        recipient: recipient.into(),
        serial: "0a".into(),
        rpc: "interop.v1.FieldOfficeService/Subscribe".into(),
        state: "TX".into(),
        tcn: tcn.into(),
        kind,
        cursor,
    };
    let office = "spiffe://interop.local/field-office/HOU";
    let bureau = "spiffe://interop.local/bureau/TX";
    {
        let s = open(dir).await;
        assert!(
            s.disclosures(DisclosureFilter::default(), 0, 10)
                .await
                .unwrap()
                .is_empty()
        );
        s.record_disclosures(vec![
            rec(office, "T-1", DisclosureKind::IdentOutcome, 1),
            rec(bureau, "T-1", DisclosureKind::CriminalHistory, 1),
        ])
        .await
        .unwrap();
        s.record_disclosures(vec![]).await.unwrap();
        s.record_disclosures(vec![
            rec(office, "T-2", DisclosureKind::IdentOutcome, 2),
            rec(bureau, "T-2", DisclosureKind::Immigration, 2),
            rec(office, "T-1", DisclosureKind::IdentOutcome, 1),
        ])
        .await
        .unwrap();
        // Compaction is for stream events only.
        s.compact(i64::MAX).await.unwrap();
    }
    wait_released().await;
    let s = open(dir).await;
    let seqs = |v: Vec<(u64, Disclosure)>| v.into_iter().map(|(q, _)| q).collect::<Vec<_>>();
    let everything = s
        .disclosures(DisclosureFilter::default(), 0, 100)
        .await
        .unwrap();
    assert_eq!(seqs(everything.clone()), [1, 2, 3, 4, 5]);
    assert_eq!(
        everything[3].1,
        rec(bureau, "T-2", DisclosureKind::Immigration, 2)
    );
    let by_tcn = DisclosureFilter {
        tcn: "T-1".into(),
        ..Default::default()
    };
    assert_eq!(
        seqs(s.disclosures(by_tcn.clone(), 0, 100).await.unwrap()),
        [1, 2, 5]
    );
    // Paging: after the last seq of one page comes the next.
    assert_eq!(
        seqs(s.disclosures(by_tcn.clone(), 0, 2).await.unwrap()),
        [1, 2]
    );
    assert_eq!(seqs(s.disclosures(by_tcn, 2, 2).await.unwrap()), [5]);
    let by_recipient = DisclosureFilter {
        recipient: bureau.into(),
        ..Default::default()
    };
    assert_eq!(
        seqs(s.disclosures(by_recipient, 0, 100).await.unwrap()),
        [2, 4]
    );
    let both = DisclosureFilter {
        tcn: "T-1".into(),
        recipient: office.into(),
    };
    assert_eq!(seqs(s.disclosures(both, 1, 100).await.unwrap()), [5]);
    assert_eq!(
        seqs(
            s.disclosures(DisclosureFilter::default(), 3, 1)
                .await
                .unwrap()
        ),
        [4]
    );
    // Numbering continues after a reopen, without a gap or a reuse.
    s.record_disclosures(vec![rec(bureau, "T-3", DisclosureKind::Status, 0)])
        .await
        .unwrap();
    assert_eq!(
        seqs(
            s.disclosures(DisclosureFilter::default(), 5, 100)
                .await
                .unwrap()
        ),
        [6]
    );
}
