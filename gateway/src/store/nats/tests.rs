//! The JetStream store against a real `nats-server` (skipped, loudly, without one): the
//! store contract's conformance suite, replicas sharing one log and its pending work, and
//! sealed payloads (the view kept in a file and the trimmed log: `view_tests.rs`).

use super::super::conformance::{self, Open};
use super::test_server::{NatsServer, start_server};
use super::*;
use std::path::Path;

/// Which server each conformance test's directory uses (the suite opens by directory).
static SERVERS: Mutex<Option<HashMap<PathBuf, String>>> = Mutex::new(None);

fn stream_for(dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    format!("T{:016x}", h.finish())
}

fn open() -> Open {
    |dir| {
        let dir = dir.to_path_buf();
        Box::pin(async move {
            let url = SERVERS
                .lock()
                .unwrap()
                .as_ref()
                .and_then(|m| m.get(&dir).cloned())
                .expect("a server registered for this directory");
            // A loopback server of the test's own: plaintext, asked for by name.
            let o =
                NatsOptions::parse(&format!("{url}/{}?insecure=true", stream_for(&dir))).unwrap();
            Arc::new(NatsStore::connect(o).await.unwrap()) as DynStore
        })
    }
}

macro_rules! conformance {
    ($($name:ident),*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(server) = start_server(stringify!($name)) else { return };
            let dir = tempfile::tempdir().unwrap();
            SERVERS
                .lock()
                .unwrap()
                .get_or_insert_with(HashMap::new)
                .insert(dir.path().to_path_buf(), server.url.clone());
            conformance::$name(open(), dir.path()).await;
        }
    )*};
}

conformance::each_case!(conformance);

pub(super) fn key(tcn: &str) -> SubmissionKey {
    SubmissionKey {
        bureau: "TX".into(),
        tcn: tcn.into(),
    }
}

pub(super) async fn replica(server: &NatsServer, name: &str, extra: &str) -> Arc<NatsStore> {
    let o = NatsOptions::parse(&format!(
        "{}/LOG?insecure=true&replica={name}{extra}",
        server.url
    ))
    .unwrap();
    Arc::new(NatsStore::connect(o).await.unwrap())
}

/// Waits (bounded) until `f` holds: another replica's write reaches this one's view after
/// a moment, not at once.
pub(super) async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..500 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not seen within 5 s");
}

use std::future::Future;

/// Two replicas on one log: a TCN is one submission whichever replica sees it, even when
/// both accept it at the same moment; one replica's completion, acks and settings are the
/// other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_log() {
    let Some(server) = start_server("replicas_share_one_log") else {
        return;
    };
    let a = replica(&server, "a", "").await;
    let b = replica(&server, "b", "").await;
    let Accepted::New(first) = a.accept(key("T-1"), b"one".to_vec(), 1).await.unwrap() else {
        panic!("first accept is new")
    };
    assert_eq!(
        b.accept(key("T-1"), b"one".to_vec(), 2).await.unwrap(),
        Accepted::Duplicate(first.clone())
    );
    assert!(matches!(
        b.accept(key("T-1"), b"two".to_vec(), 3).await,
        Err(StoreError::Conflict)
    ));

    // The same new TCN at both replicas at once: exactly one submission.
    for i in 0..20 {
        let k = key(&format!("RACE-{i}"));
        let (x, y) = tokio::join!(
            a.accept(k.clone(), b"p".to_vec(), 4),
            b.accept(k.clone(), b"p".to_vec(), 4)
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        match (&x, &y) {
            (Accepted::New(r), Accepted::Duplicate(d))
            | (Accepted::Duplicate(d), Accepted::New(r)) => assert_eq!(r, d),
            _ => panic!("one new and one duplicate expected, got {x:?} and {y:?}"),
        }
    }

    let office = StreamKey::Office("HOU".into());
    let mut head_b = b.watch_head(&office);
    let c = Completion {
        events: vec![
            (office.clone(), b"e1".to_vec()),
            (office.clone(), b"e2".to_vec()),
        ],
        counters: vec![("n".into(), 2)],
        summary: None,
    };
    assert!(a.complete(key("T-1"), c.clone()).await.unwrap());
    tokio::time::timeout(Duration::from_secs(5), head_b.wait_for(|h| *h == 2))
        .await
        .expect("the other replica's head moves")
        .unwrap();
    assert_eq!(
        b.read(office.clone(), 0, 10).await.unwrap(),
        vec![(1, b"e1".to_vec()), (2, b"e2".to_vec())]
    );
    assert!(
        !b.complete(key("T-1"), c).await.unwrap(),
        "completed once, at whichever replica"
    );
    assert_eq!(b.counters().await.unwrap().get("n"), Some(&2));

    assert_eq!(b.ack(office.clone(), 2).await.unwrap(), 2);
    eventually("an ack at the other replica", || {
        let a = a.clone();
        let office = office.clone();
        async move { a.acked(office).await.unwrap() == 2 }
    })
    .await;

    let mut changed = a.watch_settings().unwrap();
    b.put_setting("policy/x".into(), b"y".to_vec())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), changed.changed())
        .await
        .expect("a setting changed at the other replica is signalled")
        .unwrap();
    assert_eq!(
        a.settings()
            .await
            .unwrap()
            .get("policy/x")
            .map(|v| v.as_slice()),
        Some(&b"y"[..])
    );
}

/// Takes what `feed` hands out until nothing more comes within `quiet`.
pub(super) async fn drain(feed: &mut WorkFeed, quiet: Duration) -> Vec<String> {
    let mut got = Vec::new();
    while let Ok(Some(p)) = tokio::time::timeout(quiet, feed.take.recv()).await {
        got.push(p.key.tcn);
    }
    got
}

/// A replica restarted under the same name writes again at once (its first entries must
/// not pass for the earlier run's, which had the same batch numbers), and what it held
/// unfinished when it stopped is handed out again with what it accepts after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_writes_and_its_unfinished_work_is_handed_out_again() {
    let Some(server) = start_server("a_restarted_replica_writes_and_its_work_is_handed_out") else {
        return;
    };
    let a = replica(&server, "a", "&stale_ms=1000").await;
    assert!(
        a.resumable().await.unwrap().is_empty(),
        "the shared work hands it out, not a resume list"
    );
    a.accept(key("BEFORE"), vec![1], 1).await.unwrap();
    let mut feed = a.work_feed().expect("the shared work's feed");
    assert!(a.work_feed().is_none(), "the feed is taken once");
    assert_eq!(
        drain(&mut feed, Duration::from_millis(500)).await,
        ["BEFORE"]
    );
    drop((feed, a)); // stops, giving back what it held
    let again = tokio::time::timeout(
        Duration::from_secs(10),
        replica(&server, "a", "&stale_ms=1000"),
    )
    .await
    .expect("the restarted replica's first write (a heartbeat) is confirmed");
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        again.accept(key("AFTER"), vec![2], 2),
    )
    .await
    .expect("a write after the restart is confirmed");
    assert!(matches!(r.unwrap(), Accepted::New(_)));
    let mut feed = again.work_feed().unwrap();
    // Given back when `a` stopped, or else handed out again after stale_ms.
    let mut got = drain(&mut feed, Duration::from_millis(2500)).await;
    got.sort();
    assert_eq!(got, ["AFTER", "BEFORE"]);
}

/// The pending work is shared: each replica takes only what it has room for, the rest waits
/// in the log for the others, nothing is handed to two live replicas, what a replica held
/// when it stopped goes to another, and a completed submission is never handed out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pending_work_is_shared_and_a_stopped_replicas_goes_to_the_others() {
    let Some(server) = start_server("the_pending_work_is_shared") else {
        return;
    };
    let fast = "&stale_ms=600";
    let a = replica(&server, "a", fast).await;
    let b = replica(&server, "b", fast).await;
    let c = replica(&server, "c", fast).await;
    let n = 3 * HANDED_AHEAD;
    for i in 0..n {
        a.accept(key(&format!("A-{i:02}")), vec![i as u8], 1)
            .await
            .unwrap();
    }
    a.complete(key("A-00"), Completion::default())
        .await
        .unwrap();
    // (A view behind the log could still hand it out: processing it again would complete
    // nothing, by completion's exactly-once rule.)
    for r in [&b, &c] {
        eventually("the completion in every view", || {
            let r = r.clone();
            async move {
                r.submission(key("A-00"))
                    .await
                    .unwrap()
                    .is_some_and(|s| s.completed)
            }
        })
        .await;
    }
    // b and c take what they have room for; neither takes what the other holds.
    let (mut fb, mut fc) = (b.work_feed().unwrap(), c.work_feed().unwrap());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut at_b = Vec::new();
    while let Ok(p) = fb.take.try_recv() {
        at_b.push(p.key.tcn);
    }
    let mut at_c = Vec::new();
    while let Ok(p) = fc.take.try_recv() {
        at_c.push(p.key.tcn);
    }
    assert!(
        (1..=HANDED_AHEAD + 1).contains(&at_b.len())
            && (1..=HANDED_AHEAD + 1).contains(&at_c.len()),
        "each replica takes what it has room for: b {}, c {}",
        at_b.len(),
        at_c.len()
    );
    assert!(
        at_b.iter().all(|t| !at_c.contains(t)),
        "no submission at two live replicas"
    );
    assert!(
        !at_b.contains(&"A-00".to_string()) && !at_c.contains(&"A-00".to_string()),
        "a completed submission is not handed out"
    );
    for t in &at_b {
        b.complete(key(t), Completion::default()).await.unwrap();
    }
    // b stops holding what it took after those; c, draining, gets all the rest once.
    let held_by_b = drain(&mut fb, Duration::from_millis(300)).await;
    assert!(!held_by_b.is_empty(), "b took more once it had room");
    drop((fb, b));
    let mut rest = at_c.clone();
    loop {
        let got = drain(&mut fc, Duration::from_millis(1500)).await;
        if got.is_empty() {
            break;
        }
        for t in &got {
            c.complete(key(t), Completion::default()).await.unwrap();
        }
        rest.extend(got);
    }
    for t in &at_c {
        c.complete(key(t), Completion::default()).await.unwrap();
    }
    let mut all: Vec<String> = at_b.iter().chain(&rest).cloned().collect();
    all.sort();
    all.dedup();
    let expected: Vec<String> = (1..n).map(|i| format!("A-{i:02}")).collect();
    assert_eq!(all, expected, "every pending submission handed out");
    for t in &held_by_b {
        assert!(
            rest.contains(t),
            "{t}, held by b when it stopped, went to c"
        );
    }
    assert!(
        at_b.iter().all(|t| !rest.contains(t)),
        "what b completed is not handed out again"
    );
    let count = |m: &str, name: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics"))
    };
    let m = c.render_metrics();
    assert_eq!(
        count(&m, "interop_store_work_handed_out_total "),
        rest.len() as u64
    );
    assert!(count(&m, "interop_store_work_redelivered_total ") >= 1);
    eventually("c acknowledges what it finished", || {
        let c = c.clone();
        async move { count(&c.render_metrics(), "interop_store_work_held ") == 0 }
    })
    .await;
}

/// A log written before accepts had a subject of their own: the first replica to connect
/// adds the work subjects and hands out again what the log left unfinished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_from_before_the_work_subject_is_upgraded_and_its_work_handed_out() {
    upgraded_from("a_log_from_before_the_work_subject", &["interop.log.LOG"]).await;
}

/// A log from when every bureau's accepts shared one work subject and one consumer: the
/// same, bureau by bureau, and the old consumer is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_with_one_work_subject_for_every_bureau_is_upgraded() {
    upgraded_from(
        "a_log_with_one_work_subject",
        &["interop.log.LOG", "interop.log.LOG.work"],
    )
    .await;
}

/// An earlier version's log on `subjects`, with its accepts on the last of them.
async fn upgraded_from(name: &str, subjects: &[&str]) {
    let Some(server) = start_server(name) else {
        return;
    };
    let js = jetstream::new(async_nats::connect(server.url.as_str()).await.unwrap());
    let old = js
        .create_stream(stream::Config {
            name: "LOG".into(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    if subjects.len() > 1 {
        old.create_consumer(consumer::pull::Config {
            durable_name: Some("interop-work".into()),
            filter_subject: subjects[1].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    // An accept as an earlier version appended it: sealed, owned, on the log's subject.
    let keys = sealed::Keys::open_bucket(&js, "LOG", 1).await.unwrap();
    let mut ops = Vec::new();
    for tcn in ["OLD-1", "OLD-2"] {
        let op = Op::AcceptSealed {
            key: key(tcn),
            sealed: keys.seal(&key(tcn), b"old").await.unwrap(),
            digest: super::super::redb::digest(b"old"),
            now_ms: 1,
            owner: "gone".into(),
        };
        ops.push(postcard::to_allocvec(&op).unwrap());
    }
    let entry = Entry {
        origin: "gone#1".into(),
        batch: 1,
        ops,
    };
    js.publish(
        subjects.last().unwrap().to_string(),
        postcard::to_allocvec(&entry).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let a = replica(&server, "a", "").await;
    a.complete(key("OLD-2"), Completion::default())
        .await
        .unwrap();
    let mut feed = a.work_feed().unwrap();
    assert_eq!(
        drain(&mut feed, Duration::from_millis(1000)).await,
        ["OLD-1"]
    );
    let p = a
        .pending(key("OLD-1"))
        .await
        .unwrap()
        .expect("still pending");
    assert_eq!(p.payload, b"old", "its sealed payload opens");
    let info = js
        .get_stream("LOG")
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(
        info.config.subjects,
        ["interop.log.LOG", "interop.log.LOG.work.>"]
    );
    let consumers = work_consumers(&js.get_stream("LOG").await.unwrap()).await;
    assert_eq!(
        consumers,
        ["interop-work-TX"],
        "one consumer a bureau, the old one gone"
    );
}

/// The durable work consumers of `stream` (the followers' are ephemeral, named at random).
async fn work_consumers(stream: &stream::Stream) -> Vec<String> {
    let mut names: Vec<String> = stream
        .consumer_names()
        .filter_map(|n| n.ok().filter(|n| n.starts_with("interop-work")))
        .collect()
        .await;
    names.sort();
    names
}

pub(super) fn of(bureau: &str, tcn: &str) -> SubmissionKey {
    SubmissionKey {
        bureau: bureau.into(),
        tcn: tcn.into(),
    }
}

/// Each bureau's work has a consumer of its own, and a replica takes them in turn,
/// submission by submission: a bureau whose backlog fills the log (one submission an entry,
/// and a burst group-committed into a few) delays its own work, not another's. Every
/// submission is still handed out once, a bureau's name that cannot be a subject's token
/// included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bureau_flooding_the_log_delays_its_own_work_not_anothers() {
    let Some(server) = start_server("a_bureau_flooding_the_log") else {
        return;
    };
    let a = replica(&server, "a", "").await;
    let singles = 2 * HANDED_AHEAD;
    for i in 0..singles {
        a.accept(of("CA", &format!("CA-{i:03}")), vec![1], 1)
            .await
            .unwrap();
    }
    let burst: Vec<_> = (singles..singles + 100)
        .map(|i| {
            let a = a.clone();
            tokio::spawn(async move { a.accept(of("CA", &format!("CA-{i:03}")), vec![1], 1).await })
        })
        .collect();
    for t in burst {
        assert!(matches!(t.await.unwrap().unwrap(), Accepted::New(_)));
    }
    a.accept(of("TX", "TX-1"), vec![2], 2).await.unwrap();
    a.accept(of("New York.1 *", "NY-1"), vec![3], 3)
        .await
        .unwrap();
    let mut feed = a.work_feed().unwrap();
    let mut first = Vec::new();
    for _ in 0..3 {
        let p = tokio::time::timeout(Duration::from_secs(5), feed.take.recv())
            .await
            .expect("work handed out")
            .expect("the feed");
        first.push(p.key.tcn);
    }
    assert!(
        first.contains(&"TX-1".to_string()) && first.contains(&"NY-1".to_string()),
        "each quiet bureau's submission among the first three handed out, behind {} of the \
         flood's: {first:?}",
        singles + 100
    );
    let mut all = first;
    all.extend(drain(&mut feed, Duration::from_millis(1500)).await);
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "nothing handed out twice");
    assert_eq!(all.len(), singles + 100 + 2, "everything handed out");
    // An idle replica hands out new work as the log shows it, not at its next poll.
    let t = std::time::Instant::now();
    a.accept(of("TX", "TX-2"), vec![4], 4).await.unwrap();
    let p = tokio::time::timeout(Duration::from_millis(400), feed.take.recv())
        .await
        .expect("new work handed out at once, not at the next poll")
        .unwrap();
    assert_eq!(p.key.tcn, "TX-2", "after {:?}", t.elapsed());
    // Group commit split the burst by bureau: every entry on a bureau's work subject holds
    // that bureau's accepts and nothing else, and no accept went anywhere else.
    let mut accepts = 0;
    for (subject, payload) in raw_entries(&server, "LOG").await {
        let entry: Entry = postcard::from_bytes(&payload).unwrap();
        for op in entry
            .ops
            .iter()
            .map(|b| postcard::from_bytes::<Op>(b).unwrap())
        {
            match (&op, subject.strip_prefix("interop.log.LOG.work.")) {
                (Op::AcceptSealed { key, .. }, Some(lane)) => {
                    assert_eq!(lane, work::lane_token(&key.bureau), "{key} on {subject}");
                    accepts += 1;
                }
                (Op::AcceptSealed { key, .. }, None) => panic!("{key}'s accept on {subject}"),
                (_, Some(_)) => panic!("only accepts on a work subject, not on {subject}"),
                _ => {}
            }
        }
    }
    assert_eq!(accepts, singles + 100 + 3);
    let m = a.render_metrics();
    let gauge = |name: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    assert_eq!(gauge("interop_store_work_lanes ").as_deref(), Some("3"));
    assert_eq!(gauge("interop_store_work_in_hand ").as_deref(), Some("0"));
    let js = jetstream::new(async_nats::connect(server.url.as_str()).await.unwrap());
    assert_eq!(
        work_consumers(&js.get_stream("LOG").await.unwrap()).await,
        [
            "interop-work-=4e657720596f726b2e31202a",
            "interop-work-CA",
            "interop-work-TX"
        ]
    );
}

/// Replicas started at once on a fresh server all connect: those that lose the race to
/// create the log's stream or the payload keys' bucket find them made by another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_at_once_on_a_fresh_server_all_connect() {
    for round in 0..12 {
        let Some(server) = start_server(&format!("replicas_starting_at_once_{round}")) else {
            return;
        };
        let starts: Vec<_> = (0..8)
            .map(|i| {
                let o =
                    NatsOptions::parse(&format!("{}/LOG?insecure=true&replica=r{i}", server.url))
                        .unwrap();
                tokio::spawn(NatsStore::connect(o))
            })
            .collect();
        for (i, s) in starts.into_iter().enumerate() {
            if let Err(e) = s.await.unwrap() {
                panic!("round {round}: replica {i} did not connect: {e:#}");
            }
        }
    }
}

/// A bureau's consumer deleted from under a replica (an operator's slip): the other bureaus'
/// work goes on being handed out, and the lost one is made again and its work handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_consumer_stalls_no_other_bureau_and_is_made_again() {
    let Some(server) = start_server("a_deleted_consumer") else {
        return;
    };
    let a = replica(&server, "a", "").await;
    for b in ["CA", "TX"] {
        a.accept(of(b, &format!("{b}-1")), vec![1], 1)
            .await
            .unwrap();
    }
    let mut feed = a.work_feed().unwrap();
    let mut got = drain(&mut feed, Duration::from_millis(500)).await;
    got.sort();
    assert_eq!(got, ["CA-1", "TX-1"]);
    for t in &got {
        let b = &t[..2];
        a.complete(of(b, t), Completion::default()).await.unwrap();
    }
    let js = jetstream::new(async_nats::connect(server.url.as_str()).await.unwrap());
    let stream = js.get_stream("LOG").await.unwrap();
    assert!(
        stream
            .delete_consumer("interop-work-CA")
            .await
            .unwrap()
            .success
    );
    // Several of each, so each lane's turn comes round while the other is failing.
    for i in 2..6 {
        for b in ["CA", "TX"] {
            a.accept(of(b, &format!("{b}-{i}")), vec![1], 1)
                .await
                .unwrap();
        }
    }
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while got.len() < 8 && std::time::Instant::now() < deadline {
        if let Ok(Some(p)) =
            tokio::time::timeout(Duration::from_millis(200), feed.take.recv()).await
        {
            got.push(p.key.tcn);
        }
    }
    got.sort();
    assert_eq!(
        got,
        [
            "CA-2", "CA-3", "CA-4", "CA-5", "TX-2", "TX-3", "TX-4", "TX-5"
        ],
        "every bureau's new work, the deleted consumer's made again"
    );
}

#[test]
fn a_bureaus_lane_is_its_name_or_its_bytes_in_hex() {
    assert_eq!(work::lane_token("CA"), "CA");
    assert_eq!(work::lane_token("ny_state-2"), "ny_state-2");
    assert_eq!(work::lane_token("a.b"), "=612e62");
    assert_eq!(
        work::lane_token("=61"),
        "=3d3631",
        "no plain name collides with a hex one"
    );
    assert_eq!(work::lane_token(""), "=");
}

/// Every entry of the stream `name` on `server`, raw.
async fn raw_log(server: &NatsServer, name: &str) -> Vec<Vec<u8>> {
    raw_entries(server, name)
        .await
        .into_iter()
        .map(|(_, payload)| payload)
        .collect()
}

/// Every entry of the stream `name` on `server`, with its subject.
async fn raw_entries(server: &NatsServer, name: &str) -> Vec<(String, Vec<u8>)> {
    let js = jetstream::new(async_nats::connect(server.url.as_str()).await.unwrap());
    let stream = js.get_stream(name).await.unwrap();
    let last = stream.get_info().await.unwrap().state.last_sequence;
    let mut out = vec![];
    for seq in 1..=last {
        if let Ok(m) = stream.get_raw_message(seq).await {
            out.push((m.subject.to_string(), m.payload.to_vec()));
        }
    }
    out
}

/// A payload goes into the log sealed, opens for any replica while it is pending, and can
/// no longer be opened once its submission completes (its key is purged; the ciphertext
/// stays in the never-trimmed log). Resends are still told from conflicts by content, also
/// after completion and by a replica that replayed the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_are_sealed_in_the_log_and_shredded_on_completion() {
    let Some(server) = start_server("payloads_are_sealed_in_the_log_and_shredded") else {
        return;
    };
    let a = replica(&server, "a", "").await;
    let b = replica(&server, "b", "").await;
    let print = b"TENPRINT minutiae of a person 0123456789".to_vec();
    let k = key("T-SEAL");
    assert!(matches!(
        a.accept(k.clone(), print.clone(), 1).await.unwrap(),
        Accepted::New(_)
    ));
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(
        !raw_log(&server, "LOG")
            .await
            .iter()
            .any(|e| contains(e, &print)),
        "the payload is in the log in the clear"
    );
    // Pending: the accepting replica opens it, and so does another (from the bucket).
    let pending = |s: Arc<NatsStore>| async move { s.unfinished().await.unwrap() };
    assert_eq!(pending(a.clone()).await[0].payload, print);
    eventually("b sees the accept", || {
        let b = b.clone();
        async move { !b.unfinished().await.unwrap().is_empty() }
    })
    .await;
    assert_eq!(pending(b.clone()).await[0].payload, print);
    let sealed_entry = sealed::tests::entry(&k);
    let js = jetstream::new(async_nats::connect(server.url.as_str()).await.unwrap());
    let bucket = js.get_key_value("LOG_KEYS").await.unwrap();
    assert!(bucket.get(&sealed_entry).await.unwrap().is_some());

    // Completed: the key is gone, so the ciphertext in the log opens for nobody.
    assert!(a.complete(k.clone(), Completion::default()).await.unwrap());
    assert!(
        bucket.get(&sealed_entry).await.unwrap().is_none(),
        "key kept"
    );
    assert!(
        a.render_metrics()
            .contains("interop_store_payload_keys_purged_total{outcome=\"ok\"} 1")
    );
    // A resend is a duplicate, another payload a conflict; neither leaves a key behind.
    assert!(matches!(
        a.accept(k.clone(), print.clone(), 2).await.unwrap(),
        Accepted::Duplicate(_)
    ));
    assert!(matches!(
        a.accept(k.clone(), b"other".to_vec(), 2).await,
        Err(StoreError::Conflict)
    ));
    assert!(
        bucket.get(&sealed_entry).await.unwrap().is_none(),
        "resend's key kept"
    );
    // A replica started now replays the log to the same answers.
    let c = replica(&server, "c", "").await;
    assert!(c.submission(k.clone()).await.unwrap().unwrap().completed);
    assert!(matches!(
        c.accept(k, print, 3).await.unwrap(),
        Accepted::Duplicate(_)
    ));
}

/// A key whose accept never reached the log is purged by the sweep (seen without a
/// submission twice in a row); a pending submission's key is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_purges_keys_nothing_needs() {
    let Some(server) = start_server("the_sweep_purges_keys_nothing_needs") else {
        return;
    };
    let a = replica(&server, "a", "").await;
    a.accept(key("T-PENDING"), b"p".to_vec(), 1).await.unwrap();
    a.keys.seal(&key("T-ORPHAN"), b"o").await.unwrap();
    assert_eq!(a.keys.sweep(&a.view).await.unwrap(), 0, "first seen");
    assert_eq!(a.keys.sweep(&a.view).await.unwrap(), 1, "still an orphan");
    let js = jetstream::new(async_nats::connect(server.url.as_str()).await.unwrap());
    let bucket = js.get_key_value("LOG_KEYS").await.unwrap();
    assert!(
        bucket
            .get(sealed::tests::entry(&key("T-ORPHAN")))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        bucket
            .get(sealed::tests::entry(&key("T-PENDING")))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(a.unfinished().await.unwrap()[0].payload, b"p");
}

/// `--store` values: what parses, and a clear error for what does not.
#[test]
fn store_specs_parse_or_say_what_is_wrong() {
    let o = NatsOptions::parse(
        "nats://a:4222,b:4222/LOG?replicas=3&replica=gw1&stale_ms=500&snapshot_entries=0&insecure=true",
    )
    .unwrap();
    assert!(o.insecure);
    assert_eq!(o.snapshot_entries, 0);
    assert_eq!(o.url, "nats://a:4222,nats://b:4222");
    assert_eq!(
        (o.stream.as_str(), o.replicas, o.replica.as_str()),
        ("LOG", 3, "gw1")
    );
    assert_eq!(o.stale_after, Duration::from_millis(500));
    let d = NatsOptions::parse("tls://127.0.0.1:4222").unwrap();
    assert_eq!((d.stream.as_str(), d.replicas), ("INTEROP", 1));
    assert!(d.replica.starts_with("gw-"), "a random replica name");
    assert!(!d.insecure);
    assert_eq!(d.snapshot_entries, SNAPSHOT_ENTRIES);
    // A CA makes a nats:// link TLS.
    assert!(NatsOptions::parse("nats://x:1?ca=ca.pem").is_ok());
    for (spec, says) in [
        ("127.0.0.1:4222", "expected nats://"),
        ("http://x:1", "scheme"),
        ("nats:///LOG", "no server address"),
        ("nats://x:1/a.b", "stream name"),
        ("nats://x:1?replicas=9", "replicas must be 1 to 5"),
        ("nats://x:1?stale_ms=5", "stale_ms"),
        (
            "nats://x:1?snapshot_entries=-1",
            "snapshot_entries must be a whole number",
        ),
        ("nats://x:1?cert=c.pem", "cert and key go together"),
        ("nats://x:1?colour=red", "unknown option"),
        ("nats://x:1?replicas", "KEY=VALUE"),
        ("nats://x:1", "plaintext"),
        ("nats://x:1?insecure=false", "insecure=true"),
        ("nats://x:1?insecure=yes", "insecure must be true or false"),
    ] {
        let e = NatsOptions::parse(spec).expect_err(spec).to_string();
        assert!(e.contains(says), "{spec}: {e}");
    }
}
