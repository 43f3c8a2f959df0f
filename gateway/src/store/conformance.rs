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
            receipts_reveal_nothing_of_other_bureaus,
            completion_appends_exactly_once_in_order,
            acks_are_monotonic_and_bounded,
            reopen_keeps_receipts_and_lists_unfinished,
            append_once_appends_once,
            concurrent_accepts_all_land,
            compaction_removes_only_old_acknowledged_events,
            disclosures_are_append_only_ordered_and_filtered,
            expiry_removes_only_bureau_events_appended_before_the_cut_off,
            retention_works_in_bounded_steps,
            receipts_of_completed_submissions_expire_and_pending_ones_stay,
            usage_counts_what_is_kept_and_what_was_appended
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

/// A bureau's receipt ids are the same whatever other bureaus submit in between: they are
/// numbered per bureau, so they cannot tell one state another's volume.
pub async fn receipts_reveal_nothing_of_other_bureaus(open: Open, dir: &Path) {
    let s = open(dir).await;
    let from = |bureau: &str, tcn: &str| SubmissionKey {
        bureau: bureau.into(),
        tcn: tcn.into(),
    };
    let mut ids = Vec::new();
    for (i, tcn) in ["T-1", "T-2", "T-3"].into_iter().enumerate() {
        let Accepted::New(r) = s.accept(from("TX", tcn), vec![1], 1).await.unwrap() else {
            panic!("new");
        };
        ids.push(r.receipt_id);
        // Another state's submissions between this bureau's, more each time.
        for j in 0..=i * 5 {
            s.accept(from("CA", &format!("C-{i}-{j}")), vec![2], 1)
                .await
                .unwrap();
        }
    }
    assert_eq!(
        ids,
        [
            "RCPT-TX-0000000001",
            "RCPT-TX-0000000002",
            "RCPT-TX-0000000003"
        ]
    );
    let Accepted::New(ca) = s.accept(from("CA", "C-last"), vec![2], 1).await.unwrap() else {
        panic!("new");
    };
    assert_eq!(ca.receipt_id, "RCPT-CA-0000000019");
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
        s.once_record("d/T-1".into()).await.unwrap().as_deref(),
        Some(&b"first"[..])
    );
    assert_eq!(s.once_record("d/T-2".into()).await.unwrap(), None);
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
        // What this process would resume: the unfinished ones, in order, keys only (a store
        // whose replicas share the pending work hands them out through its feed instead).
        let mut keys: Vec<(String, i64)> = s
            .resumable()
            .await
            .unwrap()
            .into_iter()
            .map(|p| (p.key.tcn, p.accepted_at_ms))
            .collect();
        if let Some(mut feed) = s.work_feed() {
            assert!(keys.is_empty(), "shared work is not also resumed");
            while keys.len() < 2 {
                let p = tokio::time::timeout(std::time::Duration::from_secs(5), feed.take.recv())
                    .await
                    .expect("the feed hands out the unfinished submissions")
                    .expect("an open feed");
                keys.push((p.key.tcn, p.accepted_at_ms));
            }
        }
        assert_eq!(keys, [("T-1".to_string(), 1), ("T-3".to_string(), 3)]);
    }
    wait_released().await;
    let s = open(dir).await;
    let pending = s.unfinished().await.unwrap();
    let tcns: Vec<_> = pending.iter().map(|p| p.key.tcn.as_str()).collect();
    assert_eq!(tcns, ["T-1", "T-3"]);
    assert_eq!(pending[0].payload, b"a");
    assert_eq!(pending[0].receipt, first);
    // One pending submission, with its payload; none once completed, none never accepted.
    let one = s
        .pending(key("T-3"))
        .await
        .unwrap()
        .expect("T-3 is pending");
    assert_eq!((one.key, one.payload.as_slice()), (key("T-3"), &b"c"[..]));
    assert!(s.pending(key("T-2")).await.unwrap().is_none(), "completed");
    assert!(
        s.pending(key("T-9")).await.unwrap().is_none(),
        "never accepted"
    );
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

fn bureau(state: &str) -> StreamKey {
    StreamKey::Bureau(state.into())
}

/// Accepts and completes `tcn` with `events`.
async fn append(s: &DynStore, tcn: &str, events: Vec<(StreamKey, Vec<u8>)>) {
    s.accept(key(tcn), tcn.as_bytes().to_vec(), 0)
        .await
        .unwrap();
    let c = Completion {
        events,
        counters: vec![],
        summary: None,
    };
    assert!(s.complete(key(tcn), c).await.unwrap());
}

async fn cursors(s: &DynStore, stream: StreamKey, after: u64) -> Vec<u64> {
    let read = s.read(stream, after, 100_000).await.unwrap();
    read.into_iter().map(|(c, _)| c).collect()
}

/// Bureau retention by age: `expire` removes a bureau's events only once a stamp older than
/// the cut-off covers them (stamps come from `expire` itself, at its own clock), never a
/// younger event, never a field office's (acknowledged or not), and never moves a cursor or a
/// head: a reader asking for an older cursor gets the stream from the first event kept, and new
/// events continue after the head, across a reopen.
pub async fn expiry_removes_only_bureau_events_appended_before_the_cut_off(open: Open, dir: &Path) {
    let (tx, ca) = (bureau("TX"), bureau("CA"));
    {
        let s = open(dir).await;
        let events = vec![
            (tx.clone(), vec![1]),
            (tx.clone(), vec![2]),
            (office(), vec![1]),
            (office(), vec![2]),
        ];
        append(&s, "T-1", events).await;
        // Not stamped yet: even a cut-off far ahead removes nothing; this call stamps TX's
        // head (2) with its own clock, 1,000.
        assert_eq!(s.expire(i64::MAX - 1, 1_000).await.unwrap(), 0);
        append(
            &s,
            "T-2",
            vec![(tx.clone(), vec![3]), (ca.clone(), vec![1])],
        )
        .await;
        // A stamp at the cut-off itself is not before it.
        assert_eq!(s.expire(1_000, 2_000).await.unwrap(), 0);
        assert_eq!(cursors(&s, tx.clone(), 0).await, [1, 2, 3]);
        // Events 1 and 2 were appended by 1,000; 3 only by 2,000, so it stays.
        assert_eq!(s.expire(1_001, 3_000).await.unwrap(), 2);
        assert_eq!(cursors(&s, tx.clone(), 0).await, [3]);
        assert_eq!(
            cursors(&s, tx.clone(), 1).await,
            [3],
            "older cursors read on"
        );
        assert_eq!(cursors(&s, ca.clone(), 0).await, [1]);
        assert_eq!(
            s.expire(1_001, 4_000).await.unwrap(),
            0,
            "nothing more is due"
        );
        // Field offices keep their rule: unacknowledged events are never removed by age.
        assert_eq!(s.expire(i64::MAX, i64::MAX).await.unwrap(), 2);
        assert_eq!(cursors(&s, office(), 0).await, [1, 2]);
        assert_eq!(s.acked(office()).await.unwrap(), 0);
        assert!(cursors(&s, tx.clone(), 0).await.is_empty());
    }
    wait_released().await;
    let s = open(dir).await;
    assert!(cursors(&s, tx.clone(), 0).await.is_empty());
    assert_eq!(*s.watch_head(&tx).borrow(), 3, "heads never change");
    assert_eq!(*s.watch_head(&ca).borrow(), 1);
    append(&s, "T-3", vec![(tx.clone(), vec![4])]).await;
    assert_eq!(
        cursors(&s, tx.clone(), 0).await,
        [4],
        "new events follow the head"
    );
    assert_eq!(cursors(&s, office(), 0).await, [1, 2]);
    // Acknowledged office events follow the acknowledgement rule, not expiry's.
    s.ack(office(), 2).await.unwrap();
    assert_eq!(s.expire(i64::MAX, i64::MAX).await.unwrap(), 0);
    assert_eq!(cursors(&s, office(), 0).await, [1, 2]);
}

/// One `compact` or `expire` call removes at most [`COMPACT_LIMIT`] events, and repeated calls
/// remove the rest, in order, leaving the heads alone.
pub async fn retention_works_in_bounded_steps(open: Open, dir: &Path) {
    let s = open(dir).await;
    let n = 2 * COMPACT_LIMIT + 5;
    let chunk = 5_000;
    for (i, start) in (0..n).step_by(chunk).enumerate() {
        let len = chunk.min(n - start);
        let events = (0..len)
            .flat_map(|_| [(office(), vec![7]), (bureau("TX"), vec![7])])
            .collect();
        append(&s, &format!("T-{i}"), events).await;
    }
    let n = n as u64;
    s.ack(office(), n).await.unwrap();
    assert_eq!(
        s.expire(0, 1_000).await.unwrap(),
        0,
        "stamps the bureau's head"
    );
    let limit = COMPACT_LIMIT as u64;
    for expected in [limit, limit, 5, 0] {
        assert_eq!(s.compact(i64::MAX).await.unwrap(), expected);
        assert_eq!(s.expire(1_001, 2_000).await.unwrap(), expected);
    }
    assert!(cursors(&s, office(), 0).await.is_empty());
    assert!(cursors(&s, bureau("TX"), 0).await.is_empty());
    assert_eq!(*s.watch_head(&office()).borrow(), n);
    assert_eq!(*s.watch_head(&bureau("TX")).borrow(), n);
    assert_eq!(s.acked(office()).await.unwrap(), n);
}

/// Receipt retention forgets the completed submissions accepted before the cut-off: a resend
/// of one is then a new submission, with a new receipt. A later one is still answered with
/// its receipt; a pending one, and an identification (one with a summary), are kept however
/// old. Reopened, the store holds the same.
pub async fn receipts_of_completed_submissions_expire_and_pending_ones_stay(
    open: Open,
    dir: &Path,
) {
    let first;
    {
        let s = open(dir).await;
        let accept = |tcn: &str, at: i64| s.accept(key(tcn), tcn.as_bytes().to_vec(), at);
        let Accepted::New(r) = accept("OLD-1", 1_000).await.unwrap() else {
            panic!("new")
        };
        first = r;
        accept("STUCK", 1_100).await.unwrap();
        accept("OLD-2", 1_200).await.unwrap();
        accept("IDENTIFIED", 1_300).await.unwrap();
        accept("LATER", 3_000).await.unwrap();
        for tcn in ["OLD-1", "OLD-2", "IDENTIFIED", "LATER"] {
            let c = Completion {
                summary: (tcn == "IDENTIFIED").then(|| b"outcome".to_vec()),
                ..Default::default()
            };
            assert!(s.complete(key(tcn), c).await.unwrap());
        }
        assert_eq!(s.expire_receipts(1_000).await.unwrap(), 0, "none before");
        assert_eq!(s.expire_receipts(2_000).await.unwrap(), 2);
        assert_eq!(s.expire_receipts(2_000).await.unwrap(), 0, "none left");
        for tcn in ["OLD-1", "OLD-2"] {
            assert!(s.submission(key(tcn)).await.unwrap().is_none(), "{tcn}");
        }
        assert!(s.pending(key("STUCK")).await.unwrap().is_some());
        for tcn in ["IDENTIFIED", "LATER"] {
            assert!(s.submission(key(tcn)).await.unwrap().is_some(), "{tcn}");
        }
        assert!(matches!(
            accept("LATER", 4_000).await.unwrap(),
            Accepted::Duplicate(_)
        ));
    }
    let s = open(dir).await;
    let Accepted::New(again) = s
        .accept(key("OLD-1"), b"OLD-1".to_vec(), 5_000)
        .await
        .unwrap()
    else {
        panic!("a forgotten TCN is a new submission");
    };
    assert_ne!(again.receipt_id, first.receipt_id);
    assert!(again.seq > first.seq);
    let u = s.usage().await.unwrap();
    assert_eq!((u.receipts_kept, u.receipts_expired), (4, 2));
}

/// `usage` counts the events each kind of stream holds and has ever had, and the disclosure
/// records held, so `/metrics` shows retention bounding them.
pub async fn usage_counts_what_is_kept_and_what_was_appended(open: Open, dir: &Path) {
    let s = open(dir).await;
    let empty = s.usage().await.unwrap();
    assert_eq!(
        (
            empty.office_events_kept,
            empty.bureau_events_appended,
            empty.disclosures_kept
        ),
        (0, 0, 0)
    );
    let events = vec![
        (office(), vec![1]),
        (office(), vec![2]),
        (StreamKey::Office("NYC".into()), vec![3]),
        (bureau("TX"), vec![1]),
    ];
    append(&s, "T-1", events).await;
    s.ack(office(), 1).await.unwrap();
    assert_eq!(s.compact(i64::MAX).await.unwrap(), 1);
    let d = Disclosure {
        at_ms: 1,
        recipient: "spiffe://interop.local/bureau/TX".into(),
        serial: String::new(),
        rpc: "interop.v1.SubmissionService/GetStatus".into(),
        state: "TX".into(),
        tcn: "T-1".into(),
        kind: DisclosureKind::Status,
        cursor: 0,
    };
    s.record_disclosures(vec![d.clone(), d]).await.unwrap();
    let u = s.usage().await.unwrap();
    assert_eq!((u.office_events_kept, u.office_events_appended), (2, 3));
    assert_eq!((u.bureau_events_kept, u.bureau_events_appended), (1, 1));
    assert_eq!((u.disclosures_kept, u.disclosures_archived), (2, 0));
    if s.archive_dir().is_none() {
        assert_eq!(u.file_bytes, None, "a store in memory has no file");
    } else {
        assert!(u.file_bytes.unwrap() > 0);
    }
}
