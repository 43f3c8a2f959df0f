//! A replica's view of the log kept in a file, the snapshot of it the log is trimmed behind,
//! and a follower that meets a gap, against a real `nats-server` (skipped, loudly, without
//! one).

use super::test_server::{NatsServer, start_server};
use super::tests::{drain, eventually, key, of, replica};
use super::*;
use std::path::Path;
use std::sync::atomic::Ordering;

/// A replica of `name` on the stream `LOG` keeping its view in `dir`.
async fn replica_in(server: &NatsServer, name: &str, dir: &Path) -> Arc<NatsStore> {
    let mut o =
        NatsOptions::parse(&format!("{}/LOG?insecure=true&replica={name}", server.url)).unwrap();
    o.view_dir = Some(dir.to_path_buf());
    Arc::new(NatsStore::connect(o).await.unwrap())
}

/// The submissions a view holds unfinished, sorted.
async fn unfinished_keys(s: &NatsStore) -> Vec<String> {
    let mut v: Vec<String> = s
        .unfinished()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.key.to_string())
        .collect();
    v.sort();
    v
}

/// A replica with a data directory keeps its view of the log in a file: restarted, it applies
/// only the entries the log gained meanwhile (DESIGN §3.9), its view is the one a replica
/// building from the log's start has, and the work left in it is handed out (its bureau known
/// from the view, though nothing new arrived for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_data_directory_resumes_its_view_and_applies_only_what_is_new() {
    let Some(server) = start_server("a_replica_resumes_its_view") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = replica_in(&server, "a", dir.path()).await;
    assert_eq!(a.counts.resumed.load(Ordering::Relaxed), 0, "a new file");
    for i in 0..30 {
        a.accept(key(&format!("T-{i:02}")), vec![i], i as i64)
            .await
            .unwrap();
    }
    for i in 0..20 {
        assert!(
            a.complete(key(&format!("T-{i:02}")), Completion::default())
                .await
                .unwrap()
        );
    }
    let held = *a.applied.borrow();
    drop(a); // a clean stop: a durable checkpoint where the view is
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Meanwhile another replica (its view in memory) writes another bureau's work.
    let b = replica(&server, "b", "").await;
    for i in 0..5 {
        b.accept(of("CA", &format!("N-{i}")), vec![i], i as i64)
            .await
            .unwrap();
    }
    let last = *b.applied.borrow();
    let again = replica_in(&server, "a", dir.path()).await;
    assert_eq!(
        again.counts.resumed.load(Ordering::Relaxed),
        held,
        "resumed from its file where it stopped, not from the log's start"
    );
    assert!(*again.applied.borrow() >= last);
    let fresh = replica(&server, "c", "").await;
    eventually("the fresh view has caught up", || async {
        *fresh.applied.borrow() >= *again.applied.borrow()
    })
    .await;
    assert_eq!(unfinished_keys(&again).await, unfinished_keys(&fresh).await);
    assert_eq!(unfinished_keys(&again).await.len(), 15);
    assert!(
        again.pending(key("T-00")).await.unwrap().is_none(),
        "completed before the stop"
    );
    assert!(again.pending(key("T-29")).await.unwrap().is_some());
    // The work left in the view is handed out, both bureaus'.
    let mut feed = again.work_feed().unwrap();
    let got = drain(&mut feed, Duration::from_millis(1500)).await;
    assert_eq!(got.len(), 15, "{got:?}");
    assert!(
        got.iter().any(|t| t == "T-29") && got.iter().any(|t| t == "N-4"),
        "{got:?}"
    );
    let metrics = again.render_metrics();
    assert!(
        metrics.contains(&format!("interop_store_log_resumed_from {held}\n")),
        "{metrics}"
    );
}

/// A view file of another log of the same name (the stream deleted and made again) is
/// discarded, and the view built from the new log's start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_file_of_another_log_is_discarded_and_rebuilt() {
    let Some(server) = start_server("a_view_file_of_another_log") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = replica_in(&server, "a", dir.path()).await;
    a.accept(key("OLD"), vec![1], 1).await.unwrap();
    drop(a);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let js = jetstream::new(async_nats::connect(server.url.as_str()).await.unwrap());
    js.delete_stream("LOG").await.unwrap();
    let b = replica(&server, "b", "").await; // makes the stream again
    b.accept(key("NEW"), vec![2], 2).await.unwrap();
    let again = replica_in(&server, "a", dir.path()).await;
    assert_eq!(again.counts.resumed.load(Ordering::Relaxed), 0, "rebuilt");
    assert!(
        again.pending(key("OLD")).await.unwrap().is_none(),
        "nothing of the old log"
    );
    assert!(again.pending(key("NEW")).await.unwrap().is_some());
}

/// A view's file commits whole log entries only: an entry's ops wait for its checkpoint, and
/// land with it, so whatever commit the file holds after a crash says which entries it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_file_commits_an_entrys_ops_together_with_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("view-LOG.redb");
    let view = RedbStore::open_view(&path, 1 << 20).unwrap();
    let send = |op: Op| {
        let (reply, rx) = oneshot::channel();
        view.writer().try_send(WriteOp { op, reply }).unwrap();
        rx
    };
    let accept = |tcn: &str| Op::Accept {
        key: key(tcn),
        payload: vec![1],
        now_ms: 1,
        owner: String::new(),
    };
    let first = send(accept("E1-A"));
    let second = send(accept("E1-B"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        view.pending(key("E1-A")).await.unwrap().is_none(),
        "not committed without its checkpoint"
    );
    assert_eq!(view.checkpoint().await.unwrap(), None);
    let mark = send(Op::Checkpoint {
        log: 7,
        applied: 1,
        durable: false,
    });
    for rx in [first, second, mark] {
        rx.await.unwrap().unwrap();
    }
    assert!(view.pending(key("E1-B")).await.unwrap().is_some());
    assert_eq!(view.checkpoint().await.unwrap(), Some((7, 1)));
    let _half = send(accept("E2-A"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(view); // the second entry's checkpoint never came
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reopened = RedbStore::open_view(&path, 1 << 20).unwrap();
    assert_eq!(reopened.checkpoint().await.unwrap(), Some((7, 1)));
    assert!(reopened.pending(key("E1-A")).await.unwrap().is_some());
    assert!(
        reopened.pending(key("E2-A")).await.unwrap().is_none(),
        "half an entry never lands"
    );
}

/// The log's first entry now.
async fn first_entry(server: &NatsServer) -> u64 {
    let js = jetstream::new(async_nats::connect(server.url.as_str()).await.unwrap());
    let mut stream = js.get_stream("LOG").await.unwrap();
    stream.info().await.unwrap().state.first_sequence
}

/// The log is trimmed behind a snapshot of a replica's view (DESIGN §3.9: retention bounds
/// the server's disk too), but never past what is still needed: a running replica's position
/// (here one that stopped reporting, until it is gone) and the shared work not yet finished,
/// which a replica started afterwards still gets handed. A replica started on the trimmed log
/// loads the snapshot, holds what a replica that saw the whole log holds, and follows what
/// comes after; one without a data directory says why it cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_trimmed_behind_a_snapshot_but_never_past_unfinished_work() {
    let Some(server) = start_server("the_log_is_trimmed_behind_a_snapshot") else {
        return;
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Work entries held are renewed every 100 ms, their consumer's wait 300 ms.
    let replica = |name: &str, dir: &Path| {
        let mut o = NatsOptions::parse(&format!(
            "{}/LOG?insecure=true&replica={name}&stale_ms=300",
            server.url
        ))
        .unwrap();
        o.view_dir = Some(dir.to_path_buf());
        async move { Arc::new(NatsStore::connect(o).await.unwrap()) }
    };
    let a = replica("a", dir_a.path()).await;
    let mut feed = a.work_feed().unwrap();
    for i in 0..20 {
        a.accept(key(&format!("T-{i:02}")), vec![i], i as i64)
            .await
            .unwrap();
    }
    assert_eq!(drain(&mut feed, Duration::from_millis(800)).await.len(), 20);
    for i in 0..15 {
        assert!(
            a.complete(key(&format!("T-{i:02}")), Completion::default())
                .await
                .unwrap()
        );
    }
    // The finished work's entries are acknowledged by the replica's upkeep.
    let js = jetstream::new(async_nats::connect(server.url.as_str()).await.unwrap());
    let stream = js.get_stream("LOG").await.unwrap();
    eventually("the finished work acknowledged", || async {
        let c = stream.consumer_info("interop-work-TX").await.unwrap();
        c.num_ack_pending == 5
    })
    .await;
    // A replica that stopped reporting at entry 3 holds back the trim while its position
    // lasts, the lowest of every replica's; a removed one holds back nothing.
    let positions = js.get_key_value("LOG_APPLIED").await.unwrap();
    positions.put("ghost", "3".into()).await.unwrap();
    positions.put("ghost-b", "5".into()).await.unwrap();
    positions.put("gone", "1".into()).await.unwrap();
    positions.purge("gone").await.unwrap();
    let held = a.snapshot_now().await.unwrap();
    assert_eq!(held.applied, *a.applied.borrow());
    assert_eq!(held.first_kept, 4, "{held:?}");
    assert_eq!(first_entry(&server).await, 4);
    positions.purge("ghost").await.unwrap();
    assert_eq!(a.snapshot_now().await.unwrap().first_kept, 6);
    positions.purge("ghost-b").await.unwrap();
    let trimmed = a.snapshot_now().await.unwrap();
    let first = first_entry(&server).await;
    assert_eq!(first, trimmed.first_kept);
    assert!(first > 4, "trimmed behind the snapshot: {trimmed:?}");
    // Not past the unfinished work: its entries are still in the log.
    let c = stream.consumer_info("interop-work-TX").await.unwrap();
    assert!(first <= c.ack_floor.stream_sequence + 1, "{c:?}");
    assert!(
        a.render_metrics()
            .contains(&format!("interop_store_log_first_entry {first}\n"))
    );

    // A replica without a data directory cannot start on the trimmed log, and says why.
    let o = NatsOptions::parse(&format!("{}/LOG?insecure=true&replica=m", server.url)).unwrap();
    let e = NatsStore::connect(o)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("--data"), "{e}");

    // A new replica with a data directory starts from the snapshot and what followed it.
    a.accept(of("CA", "N-1"), vec![9], 99).await.unwrap();
    let b = replica("b", dir_b.path()).await;
    assert_eq!(
        b.counts.loaded.load(Ordering::Relaxed),
        trimmed.applied,
        "loaded the snapshot"
    );
    eventually("b has caught up with a", || async {
        *b.applied.borrow() >= *a.applied.borrow()
    })
    .await;
    assert_eq!(unfinished_keys(&b).await, unfinished_keys(&a).await);
    assert!(b.pending(key("T-00")).await.unwrap().is_none());
    assert!(b.pending(of("CA", "N-1")).await.unwrap().is_some());
    // It follows the log from there.
    a.complete(key("T-15"), Completion::default())
        .await
        .unwrap();
    eventually("b applies what follows", || async {
        b.pending(key("T-15")).await.unwrap().is_none()
    })
    .await;
    // The unfinished work a held, given back when it stops, is handed to b.
    drop(feed);
    drop(a);
    let mut feed = b.work_feed().unwrap();
    let mut got = drain(&mut feed, Duration::from_millis(2000)).await;
    got.sort();
    assert_eq!(got, ["N-1", "T-16", "T-17", "T-18", "T-19"]);

    // b stops with its file; away longer than its position lasts (forgotten here, as is a's), the log
    // moves on and is trimmed past its file. Restarted, it loads the snapshot over its file.
    let held = *b.applied.borrow();
    drop(feed);
    drop(b);
    let dir_c = tempfile::tempdir().unwrap();
    let c = replica("c", dir_c.path()).await;
    let mut feed = c.work_feed().unwrap();
    for k in ["T-16", "T-17", "T-18", "T-19"]
        .map(key)
        .into_iter()
        .chain([of("CA", "N-1")])
    {
        c.complete(k, Completion::default()).await.unwrap();
    }
    // (What c took before it completed them is acknowledged by its upkeep.)
    drain(&mut feed, Duration::from_millis(800)).await;
    for gone in ["a", "b"] {
        positions.purge(gone).await.unwrap();
    }
    eventually("every work entry acknowledged", || async {
        let tx = stream.consumer_info("interop-work-TX").await.unwrap();
        let ca = stream.consumer_info("interop-work-CA").await.unwrap();
        tx.num_ack_pending + ca.num_ack_pending == 0
    })
    .await;
    let trimmed = c.snapshot_now().await.unwrap();
    assert!(trimmed.first_kept > held + 1, "{trimmed:?}, b held {held}");
    let b = replica("b", dir_b.path()).await;
    assert_eq!(b.counts.loaded.load(Ordering::Relaxed), trimmed.applied);
    assert_eq!(b.counts.resumed.load(Ordering::Relaxed), 0);
    assert!(unfinished_keys(&b).await.is_empty());
    assert!(b.pending(of("CA", "N-1")).await.unwrap().is_none());
}

/// A follower that finds entries missing before the next one it is handed (the log trimmed
/// past its view) stops there: it applies nothing after the gap, so no view unlike the others
/// is built, and its replica's writes fail until it is restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_stops_at_a_gap_rather_than_apply_past_it() {
    let Some(server) = start_server("a_follower_stops_at_a_gap") else {
        return;
    };
    let w = replica(&server, "w", "").await;
    for i in 0..10 {
        w.accept(key(&format!("G-{i}")), vec![i], i as i64)
            .await
            .unwrap();
    }
    let js = jetstream::new(async_nats::connect(server.url.as_str()).await.unwrap());
    let stream = js.get_stream("LOG").await.unwrap();
    stream.purge().sequence(6).await.unwrap();
    // A view that holds entries 1 and 2 only follows from entry 3.
    let view = RedbStore::open_in_memory(1 << 20).unwrap();
    let (applied_tx, applied) = watch::channel(2u64);
    let (settings, _) = watch::channel(0u64);
    let (completed, _) = mpsc::unbounded_channel();
    let (lanes, _) = watch::channel(HashMap::new());
    let (_stop, stop) = watch::channel(false);
    let follower = tokio::spawn(follow(
        Follow {
            stream,
            view: view.writer(),
            from: 3,
            checkpoints: None,
            me: "test#0".into(),
            waiters: Arc::default(),
            applied: applied_tx,
            settings,
            completed,
            subjects: NatsOptions::parse(&format!("{}/LOG?insecure=true", server.url))
                .unwrap()
                .subjects(),
            lanes,
        },
        stop,
    ));
    tokio::time::timeout(Duration::from_secs(5), follower)
        .await
        .expect("the follower stopped at the gap")
        .unwrap();
    assert_eq!(*applied.borrow(), 2, "nothing applied past the gap");
    assert!(view.unfinished().await.unwrap().is_empty());
}

/// Replicas started while another trims the log again and again (a snapshot after every
/// submission) all start, each with a view that follows the log to its end. Each failed here
/// before its fix: a download of a snapshot replaced meanwhile waited for ever for its removed
/// chunks; a snapshot newer than the log as the replica first read it was taken for one
/// holding entries the log lacks, and discarded; a trim decided from the positions read just
/// before a replica said where it stood passed its view, and its follower stopped at the gap
/// (it now starts again, from the newer snapshot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_start_while_the_log_is_trimmed_again_and_again() {
    let Some(server) = start_server("replicas_start_while_the_log_is_trimmed") else {
        return;
    };
    let dirs: Vec<_> = (0..6).map(|_| tempfile::tempdir().unwrap()).collect();
    let replica = |name: &str, dir: &Path| {
        let mut o = NatsOptions::parse(&format!(
            "{}/LOG?insecure=true&replica={name}&stale_ms=300",
            server.url
        ))
        .unwrap();
        o.view_dir = Some(dir.to_path_buf());
        NatsStore::connect(o)
    };
    let a = Arc::new(replica("a", dirs[0].path()).await.unwrap());
    let mut feed = a.work_feed().unwrap();
    let (stop, stopped) = watch::channel(false);
    // Submissions accepted, taken and completed one by one, a snapshot and a trim behind each.
    let writer = {
        let a = a.clone();
        tokio::spawn(async move {
            let (mut trims, mut first) = (0, 0);
            for i in 0.. {
                if *stopped.borrow() {
                    return trims;
                }
                let k = key(&format!("S-{i}"));
                a.accept(k.clone(), vec![1], i).await.unwrap();
                let taken = tokio::time::timeout(Duration::from_secs(5), feed.take.recv());
                assert_eq!(taken.await.unwrap().unwrap().key, k);
                assert!(a.complete(k, Completion::default()).await.unwrap());
                let s = a.snapshot_now().await.unwrap();
                if s.first_kept > first {
                    (trims, first) = (trims + 1, s.first_kept);
                }
            }
            unreachable!()
        })
    };
    let mut started = Vec::new();
    for (n, dir) in dirs[1..].iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let b = replica(&format!("b{n}"), dir.path())
            .await
            .unwrap_or_else(|e| panic!("replica b{n} did not start on the log being trimmed: {e}"));
        started.push(b);
    }
    stop.send_replace(true);
    let trims = writer.await.unwrap();
    assert!(trims > 0, "the log was never trimmed");
    assert!(
        started
            .iter()
            .any(|b| b.counts.loaded.load(Ordering::Relaxed) > 0),
        "no replica started from a snapshot"
    );
    let end = *a.applied.borrow();
    for (n, b) in started.iter().enumerate() {
        let mut applied = b.applied.clone();
        tokio::time::timeout(Duration::from_secs(10), applied.wait_for(|at| *at >= end))
            .await
            .unwrap_or_else(|_| panic!("replica b{n} stopped short of the log's end"))
            .unwrap();
    }
}

/// Chunks of a snapshot that no object names (two replicas storing at once leave the
/// earlier one's behind) are removed by a replica's upkeep once it has seen them so for a
/// while; the stored snapshot's chunks stay whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_no_snapshot_names_are_swept() {
    let Some(server) = start_server("chunks_no_snapshot_names_are_swept") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut o = NatsOptions::parse(&format!(
        "{}/LOG?insecure=true&replica=a&stale_ms=300",
        server.url
    ))
    .unwrap();
    o.view_dir = Some(dir.path().to_path_buf());
    let a = NatsStore::connect(o).await.unwrap();
    for i in 0..5 {
        let k = key(&format!("O-{i}"));
        a.accept(k.clone(), vec![i], i as i64).await.unwrap();
    }
    a.snapshot_now().await.unwrap();
    let js = jetstream::new(async_nats::connect(server.url.as_str()).await.unwrap());
    let bucket = js.get_object_store("LOG_VIEW").await.unwrap();
    bucket
        .put(
            "stray",
            &mut &b"chunks of a snapshot replaced by another's"[..],
        )
        .await
        .unwrap();
    let chunks = js.get_stream("OBJ_LOG_VIEW").await.unwrap();
    let count = || async {
        let mut listed = chunks.info_with_subjects("$O.LOG_VIEW.C.>").await.unwrap();
        let mut n = 0;
        while let Some(s) = listed.next().await {
            s.unwrap();
            n += 1;
        }
        n
    };
    assert_eq!(count().await, 2);
    eventually("the unnamed chunks removed", || async {
        count().await == 1
    })
    .await;
    // The snapshot's own are whole.
    let mut view = bucket.get("view").await.unwrap();
    let mut bytes = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut view, &mut bytes)
        .await
        .unwrap();
    assert_eq!(bytes.len(), view.info().size);
}
