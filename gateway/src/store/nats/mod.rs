//! The store on NATS JetStream, for gateways that outgrow one machine: several gateway
//! replicas share one JetStream stream and each serves any bureau or field office.
//!
//! **A replicated log of writes.** Every write is an [`Op`] (the same ops the embedded writer
//! applies). A replica appends its writes to one JetStream stream (subject `interop.log` by
//! default) as entries, and every replica — the writer included — follows that stream with an
//! ordered consumer and applies each entry, in stream order, to its own materialised view: a
//! [`RedbStore`] (in memory, or in a file of its own: see [`view`]) running exactly the
//! embedded store's code. Because applying an op is deterministic (ops carry their own clock),
//! every replica's view is the same function of the same log, so:
//! - **Atomic completion**: one completion is one op inside one JetStream message; it is in
//!   the log whole or not at all. (JetStream has no multi-message transaction, so a stream per
//!   outbound queue could not give this.)
//! - **Idempotency by TCN across replicas**: two replicas accepting the same TCN at once both
//!   append; whichever entry the stream ordered first is the submission, the other applies as
//!   a duplicate (or a conflict) on every replica alike. JetStream's `Nats-Msg-Id` window is
//!   time-bounded, so it is used only against resends of one entry, never as the guarantee.
//! - **Cursors, heads, acks, counters and receipts** are assigned by applying the log, so
//!   they are the same on every replica; a field office can resume on any replica.
//! - **Durability** is JetStream's: a write is answered only after the server acknowledged the
//!   entry (stored on the stream's replicas, `?replicas=3` on a cluster) and this replica
//!   applied it. Note that a single `nats-server` syncs its files to disk on its own schedule
//!   (`sync_interval`), not on every message; run a JetStream cluster with 3 replicas for
//!   data that must survive a machine's loss.
//! - **Group commit**: a replica's writes that are queued together (at most [`MAX_BATCH`] ops
//!   or [`MAX_ENTRY_BYTES`]) go into one entry per bureau's accepts and one for the rest,
//!   published together: one round trip to the server for all of them.
//!
//! **The log is the queue, shared.** Accepts go into the log on subjects of their own, one
//! per bureau (the work subjects, `interop.log.STREAM.work.BUREAU`, where BUREAU is the
//! bureau's name, or `=` and its bytes in hex if it is not plain letters, digits, `_` and `-`),
//! and each has one
//! durable JetStream consumer (`interop-work-BUREAU`, [`WORK_CONSUMER`]) shared by every
//! replica. A replica takes work only while its workers have room, and takes it bureau by
//! bureau in turn, submission by submission: one pending submission of a bureau, then one of
//! the next bureau with work, pulling the next entry from a bureau's consumer when it has none
//! of that bureau's in hand ([`Store::work_feed`]). So a bureau that floods the log delays its
//! own work, not another's; whichever replica is free processes the next submission, whoever
//! receipted it; and what no replica has room for waits in the log.
//! An entry is acknowledged once every submission in it has completed (at any replica);
//! until then the replica holding it tells the server it is still working, every third of
//! [`STALE_AFTER`]. A replica that stops gives back what it held (a negative acknowledgement,
//! when it stops cleanly); one that dies leaves it unacknowledged, and the server hands it to
//! another replica after [`STALE_AFTER`]. A submission processed twice (a replica slow past
//! that limit) is still completed once: completion's exactly-once rule appends its results
//! once. Logs written before the work subjects existed (no work subject, or one for every
//! bureau) are upgraded when a replica connects: the subjects are added, the old consumer
//! removed, and the submissions they left unfinished are handed out again
//! ([`Op::Requeue`]). Upgrade every replica together: an earlier version refuses to start on
//! an upgraded log, and one still running would not take part in the new work.
//!
//! **Limits, written down.** One entry goes to one replica whole: a group commit of many of a
//! bureau's accepts is shared between replicas by entry, not by submission (within a replica
//! the bureaus still take turns by submission). A replica asks every bureau's consumer at least
//! once a second (work given back, or left by a replica that died, is announced by nothing new
//! in the log); a consumer that fails (deleted, or its fetch unanswered for 2 s) sits out until
//! then, and is looked up or made again, while the other bureaus keep their turns. A replica
//! with a data directory keeps its view in a file there and, restarted, applies only the
//! entries the log gained meanwhile (see [`view`]); one without rebuilds its view in memory by
//! replaying the stream from its start. (Compaction and bureau expiry are ops in the log like
//! any other, appended by each replica's retention task and applied alike by every view: they
//! trim the views' outbound events, not the log.)
//!
//! **The log trimmed behind a snapshot.** A replica with a data directory stores a snapshot of
//! its view every [`SNAPSHOT_ENTRIES`] entries (an object store bucket beside the log) and
//! removes the entries before it from the stream, sparing those a running replica or the
//! unfinished shared work still needs; a replica started on the trimmed log loads the snapshot
//! (see [`trim`]). So the server's disk follows what the system holds, not all it was sent.
//!
//! **Payloads sealed, then shredded.** A submission's payload goes into the log encrypted under
//! a key of its own, kept in a key-value bucket beside the log; when the submission completes
//! the key is purged, so the tenprint left in the log until it is trimmed can no longer be
//! read, as the embedded store erases a completed payload (see [`sealed`]).
//!
//! **No audit archive.** The disclosure audit is not archived or pruned on this store
//! ([`Store::archive_disclosures`] refuses, and a gateway asked for `--audit-retention-days`
//! on it does not start): every view keeps every disclosure record, and so does each snapshot
//! the log is trimmed behind, so the audit stays whole in each replica's view; and a segment
//! written by whichever replica pruned would scatter the evidence across machines. Export it with `interop admin disclosures` (CSV, every page).

mod follow;
mod sealed;
mod trim;
mod view;
mod work;

use super::redb::RedbStore;
use super::*;
use async_nats::jetstream::{self, consumer, stream};
use follow::{Follow, follow};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tokio_stream::StreamExt;
pub use trim::{SNAPSHOT_ENTRIES, Snapshot as LogSnapshot};
use work::{HANDED_AHEAD, HandOut, Taken, give_back, keep_taken, lane_token, release, work_lane};

/// Most ops in one log entry.
pub const MAX_BATCH: usize = 512;
/// Most bytes of ops in one log entry (the server's default message limit is 1 MiB; one
/// submission is at most 256 KiB).
pub const MAX_ENTRY_BYTES: usize = 768 * 1024;
/// How long work taken by a replica that stopped answering waits before the server hands it
/// to another (the work consumer's acknowledgement wait; `stale_ms` in the store spec).
pub const STALE_AFTER: Duration = Duration::from_secs(10);
/// The durable consumers of the work subjects, one per bureau (this, a dash and the lane),
/// each shared by every replica.
pub const WORK_CONSUMER: &str = "interop-work";
/// The one consumer of every bureau's work in logs from before the work was split by bureau.
const EARLIER_WORK_CONSUMER: &str = "interop-work";
/// Most keys in one [`Op::Requeue`].
const REQUEUE_CHUNK: usize = 1000;
/// How often each replica purges payload keys left behind (a purge that failed at completion,
/// an accept that never reached the log).
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Longest a write waits for the server's acknowledgement and its own application.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the log is and who this replica is.
#[derive(Clone, Debug)]
pub struct NatsOptions {
    /// Server address(es), e.g. `nats://127.0.0.1:4222` (comma-separated for a cluster).
    pub url: String,
    /// JetStream stream holding the log.
    pub stream: String,
    /// Stream replicas (1 on a single server; 3 on a JetStream cluster).
    pub replicas: usize,
    /// This gateway replica's name; stable across restarts means it resumes its own work.
    pub replica: String,
    /// TLS to the server: CA bundle, and our client certificate and key (mutual TLS).
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// How long work taken by a replica that stopped answering waits before others get it.
    pub stale_after: Duration,
    /// The page cache of this replica's view of the log.
    pub view_cache_bytes: usize,
    /// Where this replica keeps its view of the log (`view-STREAM.redb`), so a restart
    /// applies only what the log gained meanwhile; `None`: in memory, rebuilt from the log's
    /// start at every start (see `view.rs`).
    pub view_dir: Option<PathBuf>,
    /// Log entries between two snapshots of this replica's view, behind which the log is
    /// trimmed (`snapshot_entries=N`; 0: none; only a replica with `view_dir` makes them: see
    /// `trim.rs`).
    pub snapshot_entries: u64,
    /// Plaintext to the server was asked for by name (`insecure=true`); the connection warns.
    pub insecure: bool,
}

impl NatsOptions {
    /// Parses `nats://HOST:PORT[,HOST:PORT...][/STREAM][?replicas=N&replica=NAME&stale_ms=MS&snapshot_entries=N&ca=F&cert=F&key=F]`
    /// (`tls://` for TLS). The stream defaults to `INTEROP`, the replica name to a random one.
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        let (scheme, rest) = spec
            .split_once("://")
            .ok_or_else(|| anyhow::anyhow!("--store {spec:?}: expected nats://HOST:PORT"))?;
        anyhow::ensure!(
            scheme == "nats" || scheme == "tls",
            "--store {spec:?}: scheme must be nats:// or tls://"
        );
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (hosts, stream) = rest.split_once('/').unwrap_or((rest, ""));
        anyhow::ensure!(!hosts.is_empty(), "--store {spec:?}: no server address");
        let stream = if stream.is_empty() {
            "INTEROP".to_string()
        } else {
            stream.to_string()
        };
        anyhow::ensure!(
            stream
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "--store {spec:?}: stream name {stream:?} may hold only letters, digits, _ and -"
        );
        let url = hosts
            .split(',')
            .map(|h| format!("{scheme}://{h}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut o = NatsOptions {
            url,
            stream,
            replicas: 1,
            replica: random_replica_name(),
            ca: None,
            cert: None,
            key: None,
            stale_after: STALE_AFTER,
            view_cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
            view_dir: None,
            snapshot_entries: SNAPSHOT_ENTRIES,
            insecure: false,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--store {spec:?}: {pair:?} is not KEY=VALUE"))?;
            match k {
                "replicas" => {
                    o.replicas = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=5).contains(n))
                        .ok_or_else(|| anyhow::anyhow!("--store: replicas must be 1 to 5"))?
                }
                "replica" if !v.is_empty() => o.replica = v.to_string(),
                "stale_ms" => {
                    o.stale_after = v
                        .parse()
                        .ok()
                        .filter(|ms| *ms >= 100)
                        .map(Duration::from_millis)
                        .ok_or_else(|| anyhow::anyhow!("--store: stale_ms must be at least 100"))?
                }
                "snapshot_entries" => {
                    o.snapshot_entries = v.parse().map_err(|_| {
                        anyhow::anyhow!(
                            "--store: snapshot_entries must be a whole number of log entries (0: no snapshots), got {v:?}"
                        )
                    })?
                }
                "insecure" => {
                    o.insecure = v.parse().map_err(|_| {
                        anyhow::anyhow!("--store: insecure must be true or false, got {v:?}")
                    })?
                }
                "ca" => o.ca = Some(v.into()),
                "cert" => o.cert = Some(v.into()),
                "key" => o.key = Some(v.into()),
                _ => anyhow::bail!(
                    "--store {spec:?}: unknown option {k:?} (replicas, replica, stale_ms, snapshot_entries, ca, cert, key, insecure)"
                ),
            }
        }
        anyhow::ensure!(
            o.cert.is_some() == o.key.is_some(),
            "--store: cert and key go together"
        );
        // The log carries tenprints and biographics: in the clear only when asked for by name.
        anyhow::ensure!(
            o.encrypted() || o.insecure,
            "--store {spec:?}: a plaintext, unauthenticated link to the log, which carries \
             tenprints and biographics; use tls://HOST:PORT/STREAM?ca=CA.pem&cert=C.pem&key=K.pem \
             (mutual TLS), or add insecure=true to accept plaintext on a network you trust"
        );
        Ok(o)
    }

    /// Whether the link to the server is TLS.
    fn encrypted(&self) -> bool {
        self.url.starts_with("tls://") || self.ca.is_some()
    }

    fn subjects(&self) -> Subjects {
        let log = format!("interop.log.{}", self.stream);
        Subjects {
            work: format!("{log}.work"),
            log,
        }
    }
}

/// The log's subjects: its own, for every op but accepts, and one per bureau for the
/// entries of that bureau's accepts (the shared work).
#[derive(Clone, Debug)]
struct Subjects {
    log: String,
    /// The work subjects' prefix; on its own, the one subject of every bureau's accepts in
    /// logs written before the work was split by bureau.
    work: String,
}

impl Subjects {
    /// The subject of `bureau`'s accepts.
    fn work(&self, bureau: &str) -> String {
        self.lane(&lane_token(bureau))
    }

    /// The work subject of the lane `token` (see [`lane_token`]).
    fn lane(&self, token: &str) -> String {
        format!("{}.{token}", self.work)
    }

    /// The stream's subjects.
    fn all(&self) -> Vec<String> {
        vec![self.log.clone(), format!("{}.>", self.work)]
    }

    /// The lane (a bureau's subject token) of an entry on `subject`, if it is work.
    fn lane_of<'a>(&self, subject: &'a str) -> Option<&'a str> {
        subject.strip_prefix(self.work.as_str())?.strip_prefix('.')
    }
}

/// One message of the log: a batch of encoded [`Op`]s from one replica.
#[derive(Serialize, Deserialize)]
struct Entry {
    /// The appending process: `replica#incarnation` (random per start).
    origin: String,
    batch: u64,
    ops: Vec<Vec<u8>>,
}

type Replies = Vec<oneshot::Sender<StoreResult<Outcome>>>;

/// Counts for `/metrics`.
#[derive(Default)]
struct Counts {
    appended: std::sync::atomic::AtomicU64,
    append_failures: std::sync::atomic::AtomicU64,
    handed_out: std::sync::atomic::AtomicU64,
    redelivered: std::sync::atomic::AtomicU64,
    /// Pending submissions in those entries, handed to this replica's pipeline.
    redelivered_submissions: std::sync::atomic::AtomicU64,
    /// Bureaus whose work this replica takes in turn (gauge).
    lanes: std::sync::atomic::AtomicU64,
    /// Submissions taken from the log, not yet handed to the pipeline (gauge).
    in_hand: std::sync::atomic::AtomicU64,
    shredded: std::sync::atomic::AtomicU64,
    shred_failures: std::sync::atomic::AtomicU64,
    /// The last entry this replica's view held from its file when it started (gauge).
    resumed: std::sync::atomic::AtomicU64,
    /// The last entry of the log's snapshot this replica's view was loaded from (gauge).
    loaded: std::sync::atomic::AtomicU64,
    /// Snapshots of the view this replica stored, the last entry of its newest, and the log's
    /// first entry after its last trim (see `trim.rs`).
    snapshots: std::sync::atomic::AtomicU64,
    snapshot_applied: std::sync::atomic::AtomicU64,
    first_kept: std::sync::atomic::AtomicU64,
}

impl Counts {
    fn add(c: &std::sync::atomic::AtomicU64, n: u64) {
        c.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// See the module documentation.
pub struct NatsStore {
    view: Arc<RedbStore>,
    tx: mpsc::Sender<WriteOp>,
    replica: String,
    settings: watch::Receiver<u64>,
    /// The shared work, until the gateway takes its feed (and the handing out starts).
    feed: Mutex<Option<(WorkFeed, HandOut, watch::Receiver<bool>)>>,
    taken: Arc<Mutex<Taken>>,
    counts: Arc<Counts>,
    /// The keys of pending submissions' sealed payloads.
    keys: Arc<sealed::Keys>,
    /// The last log entry applied to the view.
    applied: watch::Receiver<u64>,
    /// Snapshots of the view, and the log trimmed behind them.
    trim: Arc<trim::Trim>,
    /// Stops the background tasks when the store is dropped.
    _stop: watch::Sender<bool>,
}

fn unavailable(e: impl fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The log was trimmed past this replica's view as it started: a trim decided from the
/// replicas' positions read just before it said where it stands.
#[derive(Debug, thiserror::Error)]
#[error("the log was trimmed past this replica's view as it started")]
struct TrimmedAsItStarted;

impl NatsStore {
    /// Connects, creates the stream if it is missing, replays the log into a fresh view and
    /// starts following it; returns once the view has caught up with the stream. A replica
    /// whose view the log was trimmed past as it started (see [`TrimmedAsItStarted`]) starts
    /// again from the newer snapshot, its view file discarded.
    pub async fn connect(o: NatsOptions) -> anyhow::Result<Self> {
        let mut tries = 0;
        loop {
            match Self::connect_once(o.clone()).await {
                Err(e) if e.is::<TrimmedAsItStarted>() && tries < 3 => {
                    tries += 1;
                    tracing::info!("{e}; it starts again from the newer snapshot");
                    view::discard(&o)?;
                }
                done => return done,
            }
        }
    }

    async fn connect_once(o: NatsOptions) -> anyhow::Result<Self> {
        if !o.encrypted() {
            tracing::warn!(
                url = %o.url,
                "the store's log is reached in plaintext, without authentication: tenprints and biographics cross the network in the clear"
            );
        }
        let options = || {
            let mut c = async_nats::ConnectOptions::new()
                .name(format!("interop-gateway {}", o.replica))
                .connection_timeout(Duration::from_secs(5));
            if o.encrypted() {
                c = c.require_tls(true);
            }
            if let Some(ca) = &o.ca {
                c = c.add_root_certificates(ca.clone());
            }
            if let (Some(cert), Some(key)) = (&o.cert, &o.key) {
                c = c.add_client_certificate(cert.clone(), key.clone());
            }
            c
        };
        // A server still starting is waited for (30 s, until one accepts TCP); a refusal once
        // connected (TLS, authorization) is an error at once.
        let hosts: Vec<String> = o
            .url
            .split(',')
            .map(|u| u.split_once("://").map_or(u, |(_, h)| h).to_string())
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut up = false;
            for h in &hosts {
                up |= tokio::net::TcpStream::connect(h.as_str()).await.is_ok();
            }
            if up {
                break;
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "NATS server at {} did not accept connections within 30 s",
                o.url
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let client = options()
            .connect(o.url.as_str())
            .await
            .map_err(|e| anyhow::anyhow!("NATS server at {}: {e}", o.url))?;
        let js = jetstream::new(client);
        let subjects = o.subjects();
        let stream = get_or_create_stream(
            &js,
            stream::Config {
                name: o.stream.clone(),
                subjects: subjects.all(),
                storage: stream::StorageType::File,
                num_replicas: o.replicas,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("JetStream stream {}: {e}", o.stream))?;
        let mut info = stream.cached_info().clone();
        // A log written before each bureau's accepts had a subject of their own gets them;
        // what it left unfinished is handed out again once the view has caught up.
        let earlier = [
            vec![subjects.log.clone()],
            vec![subjects.log.clone(), subjects.work.clone()],
        ];
        let upgraded = earlier.contains(&info.config.subjects);
        if upgraded {
            let mut config = info.config.clone();
            config.subjects = subjects.all();
            js.update_stream(config).await.map_err(|e| {
                anyhow::anyhow!(
                    "JetStream stream {}: adding the work subjects: {e}",
                    o.stream
                )
            })?;
            // The one consumer of every bureau's work, if the log had it: its entries are
            // handed out again, bureau by bureau.
            let _ = stream.delete_consumer(EARLIER_WORK_CONSUMER).await;
            tracing::info!(stream = %o.stream, "log upgraded: each bureau's accepts now go to a work subject of its own");
        } else if info.config.subjects != subjects.all() {
            anyhow::bail!(
                "JetStream stream {} exists with subjects {:?}, not {:?}",
                o.stream,
                info.config.subjects,
                subjects.all()
            );
        }
        let last = info.state.last_sequence;
        let trim = Arc::new(trim::Trim::open(&js, &o, stream.clone(), view::log_id(&info)).await?);
        // This replica's view: its file, resumed where it stopped, the log's snapshot where
        // the log was trimmed past that, or built from entry 1.
        let (view, from, loaded) = view::open(&o, &info, &trim).await?;
        // Its position holds back trimming from here on; a trim decided from the positions
        // read just before may still pass it (see `connect`).
        // (A bucket another replica made a moment ago may not take writes yet.)
        let mut tries = 0;
        while let Err(e) = trim.report(from - 1).await {
            tries += 1;
            anyhow::ensure!(tries < 10, e);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        info = stream.get_info().await?;
        if info.state.first_sequence > from {
            return Err(TrimmedAsItStarted.into());
        }
        let view = Arc::new(view);

        let keys = Arc::new(sealed::Keys::open_bucket(&js, &o.stream, o.replicas).await?);
        // This process's entries are told apart from an earlier run under the same replica
        // name (whose batch numbers, and JetStream message ids, also started at 1).
        let origin = format!("{}#{}", o.replica, random_hex(8));
        let (stop_tx, stop) = watch::channel(false);
        let waiters: Arc<Mutex<HashMap<u64, Replies>>> = Arc::default();
        let (applied_tx, mut applied) = watch::channel(0u64);
        let (settings_tx, settings) = watch::channel(0u64);
        let (completed_tx, completed) = mpsc::unbounded_channel();
        // A resumed view applies only new entries: the bureaus with work in it are its lanes
        // until the log shows theirs again.
        let mut known = HashMap::new();
        if from > 1 {
            for p in view.unfinished().await? {
                known.insert(lane_token(&p.key.bureau), 0);
            }
        }
        let (lanes_tx, lanes) = watch::channel(known);
        let counts: Arc<Counts> = Arc::default();
        let resumed = if loaded.is_some() { 0 } else { from - 1 };
        counts
            .resumed
            .store(resumed, std::sync::atomic::Ordering::Relaxed);
        counts
            .loaded
            .store(loaded.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
        let taken: Arc<Mutex<Taken>> = Arc::default();
        tokio::spawn(follow(
            Follow {
                stream: stream.clone(),
                view: view.writer(),
                from,
                checkpoints: o
                    .view_dir
                    .as_ref()
                    .map(|_| view::Checkpoints::new(view::log_id(&info), from)),
                me: origin.clone(),
                waiters: waiters.clone(),
                applied: applied_tx,
                settings: settings_tx,
                completed: completed_tx,
                subjects: subjects.clone(),
                lanes: lanes_tx,
            },
            stop.clone(),
        ));
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(propose(
            js,
            subjects.clone(),
            origin,
            rx,
            waiters,
            counts.clone(),
        ));
        // Catch up before serving: a replica must not answer from a view behind the log.
        let caught_up =
            tokio::time::timeout(Duration::from_secs(300), applied.wait_for(|a| *a >= last))
                .await
                .map_err(|_| {
                    anyhow::anyhow!("replaying the log ({last} entries) took over 5 minutes")
                })?
                .is_ok();
        if !caught_up {
            // It stopped at a gap, if the log no longer starts where it began.
            if stream.get_info().await?.state.first_sequence > from {
                return Err(TrimmedAsItStarted.into());
            }
            anyhow::bail!("log follower stopped");
        }
        // Handing out starts when the gateway takes the feed: a process that only reads or
        // writes the store (a tool, a test) takes no work from the replicas.
        let (take_tx, take) = mpsc::channel(HANDED_AHEAD);
        let hand_out = HandOut {
            stream,
            subjects,
            stale_after: o.stale_after,
            lanes,
            view: view.clone(),
            applied: applied.clone(),
            to: take_tx,
            taken: taken.clone(),
            counts: counts.clone(),
        };
        tracing::info!(stream = %o.stream, replica = %o.replica, entries = last, "JetStream store ready");
        let store = NatsStore {
            view,
            tx,
            replica: o.replica,
            settings,
            feed: Mutex::new(Some((WorkFeed { take, completed }, hand_out, stop.clone()))),
            taken,
            counts,
            keys,
            applied,
            trim,
            _stop: stop_tx,
        };
        store.heartbeat().await?;
        if upgraded {
            store.requeue_unfinished().await?;
        }
        store.start_upkeep(stop, o.stale_after);
        Ok(store)
    }

    /// A snapshot of this replica's view now, due or not, and the log trimmed behind it (see
    /// `trim.rs`; for tests and benchmarks: a gateway makes them on its own). Needs a data
    /// directory.
    pub async fn snapshot_now(&self) -> anyhow::Result<LogSnapshot> {
        self.trim.snapshot_now(&self.view, &self.counts).await
    }

    /// This replica's name.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// `pending` with their payloads opened (see [`sealed`]).
    async fn opened(&self, pending: Vec<Pending>) -> StoreResult<Vec<Pending>> {
        let mut out = Vec::with_capacity(pending.len());
        for mut p in pending {
            p.payload = self
                .keys
                .open(&p.key, std::mem::take(&mut p.payload))
                .await?;
            out.push(p);
        }
        Ok(out)
    }

    /// Purges `key`'s payload key (its submission completed). A failure is counted and left
    /// to the sweep: the completion stands.
    async fn shred(&self, key: &SubmissionKey) {
        match self.keys.shred(key).await {
            Ok(()) => Counts::add(&self.counts.shredded, 1),
            Err(e) => {
                Counts::add(&self.counts.shred_failures, 1);
                tracing::warn!(key = %key, error = %e, "payload key not purged; the sweep will");
            }
        }
    }

    async fn shred_if_completed(&self, key: &SubmissionKey) {
        if let Ok(Some(s)) = self.view.submission(key.clone()).await
            && s.completed
        {
            self.shred(key).await;
        }
    }

    async fn write(&self, op: Op) -> StoreResult<Outcome> {
        match tokio::time::timeout(WRITE_TIMEOUT, submit_op(&self.tx, op)).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(
                "the JetStream log did not confirm the write in time".into(),
            )),
        }
    }

    async fn heartbeat(&self) -> StoreResult<()> {
        self.write(Op::Heartbeat {
            replica: self.replica.clone(),
            at_ms: now_ms(),
        })
        .await?
        .done()
    }

    /// Hands out again every unfinished submission (a log upgraded from before the work
    /// subject: its accepts are not on it).
    async fn requeue_unfinished(&self) -> StoreResult<()> {
        let mut by_bureau: BTreeMap<String, Vec<SubmissionKey>> = BTreeMap::new();
        for p in self.view.unfinished().await? {
            by_bureau
                .entry(p.key.bureau.clone())
                .or_default()
                .push(p.key);
        }
        let n: usize = by_bureau.values().map(Vec::len).sum();
        // One bureau's keys to an op: each goes on that bureau's work subject.
        for keys in by_bureau.values() {
            for chunk in keys.chunks(REQUEUE_CHUNK) {
                let op = Op::Requeue {
                    keys: chunk.to_vec(),
                };
                self.write(op).await?.done()?;
            }
        }
        if n > 0 {
            tracing::info!(
                submissions = n,
                "unfinished submissions of the upgraded log handed out again as shared work"
            );
        }
        Ok(())
    }

    /// The replica's upkeep until the store is dropped: tells the server it is still working
    /// on the work entries it holds (acknowledging those whose submissions all completed,
    /// wherever), and purges payload keys left behind. When the store is dropped, gives back
    /// what it holds so other replicas take it at once.
    fn start_upkeep(&self, mut stop: watch::Receiver<bool>, stale_after: Duration) {
        let every = (stale_after / 3).max(Duration::from_millis(30));
        let (keys, view, counts) = (self.keys.clone(), self.view.clone(), self.counts.clone());
        let (taken, trim, applied) = (self.taken.clone(), self.trim.clone(), self.applied.clone());
        let mut last_sweep = std::time::Instant::now();
        let mut redelivered = 0;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(every) => {}
                }
                keep_taken(&taken, &view).await;
                let at = *applied.borrow();
                trim.upkeep(&view, at, &counts).await;
                // One line per pass, not per submission.
                let now = counts
                    .redelivered_submissions
                    .load(std::sync::atomic::Ordering::Relaxed);
                if now > redelivered {
                    tracing::info!(
                        submissions = now - redelivered,
                        "took over unfinished work another replica had taken (it stopped, or was slower than stale_ms)"
                    );
                    redelivered = now;
                }
                if last_sweep.elapsed() >= SWEEP_EVERY {
                    last_sweep = std::time::Instant::now();
                    match keys.sweep(&view).await {
                        Ok(0) => {}
                        Ok(n) => {
                            Counts::add(&counts.shredded, n);
                            tracing::info!(
                                keys = n,
                                "payload keys of completed submissions purged by the sweep"
                            );
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "payload key sweep failed; trying again next time")
                        }
                    }
                }
            }
            give_back(&taken).await;
            trim.leave().await;
        });
    }
}

/// The stream `config` names, created if it is missing. Two replicas starting at once can
/// both find it missing; the one whose creation loses the race (a server may answer it as
/// "subjects overlap" rather than as the same stream) finds it made by the other.
async fn get_or_create_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> anyhow::Result<stream::Stream> {
    let name = config.name.clone();
    match js.get_or_create_stream(config).await {
        Ok(s) => Ok(s),
        Err(e) => {
            tokio::time::sleep(Duration::from_millis(200)).await;
            js.get_stream(&name).await.map_err(|_| anyhow::anyhow!(e))
        }
    }
}

/// The key-value bucket `bucket`, made if missing as `create_key_value` would make it, but
/// directly: that call first asks for the account's limits in a form older servers (Debian's
/// 2.9) do not answer in. `max_age` zero: entries kept until purged.
async fn key_value_bucket(
    js: &jetstream::Context,
    bucket: &str,
    description: &str,
    replicas: usize,
    max_age: Duration,
) -> anyhow::Result<jetstream::kv::Store> {
    get_or_create_stream(
        js,
        stream::Config {
            name: format!("KV_{bucket}"),
            description: Some(description.into()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age,
            storage: stream::StorageType::File,
            num_replicas: replicas.max(1),
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("JetStream key-value bucket {bucket}: {e}"))?;
    js.get_key_value(bucket)
        .await
        .map_err(|e| anyhow::anyhow!("JetStream key-value bucket {bucket}: {e}"))
}

/// `nats-server` from `INTEROP_NATS_SERVER`, the PATH or Debian's /usr/sbin (where the
/// `nats-server` package puts it, often outside a user's PATH).
pub fn nats_server_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("INTEROP_NATS_SERVER") {
        return Some(p.into());
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/usr/local/bin", "/usr/bin"])
        .map(|d| std::path::Path::new(d).join("nats-server"))
        .find(|p| p.is_file())
}

#[cfg(any(test, feature = "test-util"))]
pub mod test_server;

/// `n` random bytes as hex (zeros if the system RNG fails; callers add the process id or a
/// name, so that still tells processes apart on a host).
fn random_hex(n: usize) -> String {
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; n];
    ring::rand::SystemRandom::new().fill(&mut b).ok();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn random_replica_name() -> String {
    format!("gw-{}-{}", std::process::id(), random_hex(6))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Appends this replica's writes to the log. The writes queued together (at most
/// [`MAX_BATCH`] ops or [`MAX_ENTRY_BYTES`]) are split by where they go: each bureau's
/// accepts in one entry on that bureau's work subject, everything else in one entry on the
/// log's own subject. The entries are published together, then their acknowledgements
/// awaited: one round trip for them all.
async fn propose(
    js: jetstream::Context,
    subjects: Subjects,
    origin: String,
    mut rx: mpsc::Receiver<WriteOp>,
    waiters: Arc<Mutex<HashMap<u64, Replies>>>,
    counts: Arc<Counts>,
) {
    let mut batch_no = 0u64;
    let mut carry: Option<WriteOp> = None;
    loop {
        let first = match carry.take() {
            Some(op) => op,
            None => match rx.recv().await {
                Some(op) => op,
                None => return,
            },
        };
        // (lane, ops, replies), in the order each lane first appeared.
        let mut entries: Vec<(Option<String>, Vec<Vec<u8>>, Replies)> = Vec::new();
        let (mut n, mut bytes) = (0usize, 0usize);
        let mut next = Some(first);
        while let Some(w) = next.take() {
            let encoded = postcard::to_allocvec(&w.op).expect("serialisable op");
            if n > 0 && bytes + encoded.len() > MAX_ENTRY_BYTES {
                carry = Some(w);
                break;
            }
            let lane = work_lane(&w.op).map(str::to_string);
            let at = match entries.iter().position(|(l, _, _)| *l == lane) {
                Some(i) => i,
                None => {
                    entries.push((lane, Vec::new(), Vec::new()));
                    entries.len() - 1
                }
            };
            bytes += encoded.len();
            n += 1;
            entries[at].1.push(encoded);
            entries[at].2.push(w.reply);
            if n < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        let mut sent = Vec::with_capacity(entries.len());
        for (lane, ops, replies) in entries {
            batch_no += 1;
            let entry = Entry {
                origin: origin.clone(),
                batch: batch_no,
                ops,
            };
            let payload = postcard::to_allocvec(&entry).expect("serialisable entry");
            waiters.lock().expect("waiters").insert(batch_no, replies);
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("{origin}-{batch_no}").as_str());
            let subject = match &lane {
                Some(bureau) => subjects.work(bureau),
                None => subjects.log.clone(),
            };
            let published = js
                .publish_with_headers(subject, headers, payload.into())
                .await
                .map_err(unavailable);
            sent.push((batch_no, published));
        }
        for (batch, published) in sent {
            let acked = match published {
                Ok(ack) => ack
                    .await
                    .map_err(unavailable)
                    .and_then(|ack| match ack.duplicate {
                        // Never resent, so a duplicate means an id clash: its callers would wait
                        // for an entry that is not coming.
                        true => Err(StoreError::Unavailable(format!(
                            "JetStream took entry {origin}-{batch} for a duplicate"
                        ))),
                        false => Ok(ack),
                    }),
                Err(e) => Err(e),
            };
            Counts::add(
                if acked.is_ok() {
                    &counts.appended
                } else {
                    &counts.append_failures
                },
                1,
            );
            if let Err(e) = acked {
                // The entry may or may not be in the log; if it is, applying it answers
                // nobody (its callers were told to retry, and every op is idempotent).
                tracing::warn!(error = %e, batch, "log append failed; writes refused");
                if let Some(replies) = waiters.lock().expect("waiters").remove(&batch) {
                    for r in replies {
                        drop(r.send(Err(StoreError::Unavailable(format!(
                            "JetStream append failed: {e}"
                        )))));
                    }
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Store for NatsStore {
    async fn accept(
        &self,
        key: SubmissionKey,
        payload: Vec<u8>,
        now_ms: i64,
    ) -> StoreResult<Accepted> {
        let digest = super::redb::digest(&payload);
        let sealed = self.keys.seal(&key, &payload).await?;
        drop(payload);
        let answer = self
            .write(Op::AcceptSealed {
                key: key.clone(),
                sealed,
                digest,
                now_ms,
                // Whichever replica takes it from the shared work processes it.
                owner: String::new(),
            })
            .await
            .and_then(Outcome::accepted);
        // A resend of a completed submission made a key of its own: nothing will need it.
        if !matches!(answer, Ok(Accepted::New(_))) {
            self.shred_if_completed(&key).await;
        }
        answer
    }

    async fn complete(&self, key: SubmissionKey, completion: Completion) -> StoreResult<bool> {
        if let Some(s) = self.view.submission(key.clone()).await?
            && s.completed
        {
            self.shred(&key).await;
            release(&self.taken, &key).await;
            return Ok(false);
        }
        let done = self
            .write(Op::Complete {
                key: key.clone(),
                completion,
            })
            .await?
            .completed()?;
        self.shred(&key).await;
        release(&self.taken, &key).await;
        Ok(done)
    }

    async fn append_once(
        &self,
        once_key: String,
        record: Vec<u8>,
        completion: Completion,
    ) -> StoreResult<Once> {
        self.write(Op::Once {
            once_key,
            record,
            completion,
        })
        .await?
        .once()
    }

    async fn once_record(&self, once_key: String) -> StoreResult<Option<Vec<u8>>> {
        self.view.once_record(once_key).await
    }

    async fn submission(&self, key: SubmissionKey) -> StoreResult<Option<SubmissionState>> {
        self.view.submission(key).await
    }

    async fn unfinished(&self) -> StoreResult<Vec<Pending>> {
        let pending = self.view.unfinished().await?;
        self.opened(pending).await
    }

    async fn pending(&self, key: SubmissionKey) -> StoreResult<Option<Pending>> {
        match self.view.pending(key).await? {
            Some(p) => Ok(self.opened(vec![p]).await?.pop()),
            None => Ok(None),
        }
    }

    async fn read(
        &self,
        stream: StreamKey,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<(u64, Vec<u8>)>> {
        self.view.read(stream, after, limit).await
    }

    async fn ack(&self, stream: StreamKey, cursor: u64) -> StoreResult<u64> {
        self.write(Op::Ack {
            stream,
            cursor,
            at_ms: now_ms(),
        })
        .await?
        .acked()
    }

    async fn acked(&self, stream: StreamKey) -> StoreResult<u64> {
        self.view.acked(stream).await
    }

    async fn counters(&self) -> StoreResult<BTreeMap<String, u64>> {
        self.view.counters().await
    }

    async fn counters_with_prefix(&self, prefix: String) -> StoreResult<BTreeMap<String, u64>> {
        self.view.counters_with_prefix(prefix).await
    }

    async fn put_setting(&self, key: String, value: Vec<u8>) -> StoreResult<()> {
        self.write(Op::Setting { key, value }).await?.done()
    }

    async fn settings(&self) -> StoreResult<BTreeMap<String, Vec<u8>>> {
        self.view.settings().await
    }

    async fn record_disclosures(&self, records: Vec<Disclosure>) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.write(Op::Disclose { records }).await?.done()
    }

    async fn disclosures(
        &self,
        filter: DisclosureFilter,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<(u64, Disclosure)>> {
        self.view.disclosures(filter, after, limit).await
    }

    async fn compact(&self, acked_before_ms: i64) -> StoreResult<u64> {
        self.write(Op::Compact { acked_before_ms })
            .await?
            .compacted()
    }

    async fn expire(&self, appended_before_ms: i64, now_ms: i64) -> StoreResult<u64> {
        let op = Op::Expire {
            appended_before_ms,
            now_ms,
        };
        self.write(op).await?.compacted()
    }

    async fn expire_receipts(&self, accepted_before_ms: i64) -> StoreResult<u64> {
        let op = Op::ExpireReceipts { accepted_before_ms };
        self.write(op).await?.compacted()
    }

    /// The view's figures (with its file's size when it is kept in one; none in memory); the
    /// audit is not archived here (see the module documentation).
    async fn usage(&self) -> StoreResult<StoreUsage> {
        self.view.usage().await
    }

    fn watch_head(&self, stream: &StreamKey) -> watch::Receiver<u64> {
        self.view.watch_head(stream)
    }

    /// Nothing: every unfinished submission is handed out through the shared work (see
    /// [`Store::work_feed`]), to whichever replica has room.
    async fn resumable(&self) -> StoreResult<Vec<PendingKey>> {
        Ok(Vec::new())
    }

    fn work_feed(&self) -> Option<WorkFeed> {
        let (feed, hand_out, stop) = self.feed.lock().expect("feed").take()?;
        tokio::spawn(hand_out.run(stop));
        Some(feed)
    }

    fn watch_settings(&self) -> Option<watch::Receiver<u64>> {
        Some(self.settings.clone())
    }

    fn render_metrics(&self) -> String {
        let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let c = &self.counts;
        format!(
            "# HELP interop_store_log_applied Last JetStream log entry applied to this replica's view.\n\
             # TYPE interop_store_log_applied gauge\n\
             interop_store_log_applied {}\n\
             # HELP interop_store_log_resumed_from Last log entry this replica's view held from its file when it started (0: built from the log's start).\n\
             # TYPE interop_store_log_resumed_from gauge\n\
             interop_store_log_resumed_from {}\n\
             # HELP interop_store_log_appends_total Log entries this replica appended, by outcome.\n\
             # TYPE interop_store_log_appends_total counter\n\
             interop_store_log_appends_total{{outcome=\"ok\"}} {}\n\
             interop_store_log_appends_total{{outcome=\"failed\"}} {}\n\
             # HELP interop_store_work_handed_out_total Submissions the shared work handed to this replica's pipeline.\n\
             # TYPE interop_store_work_handed_out_total counter\n\
             interop_store_work_handed_out_total {}\n\
             # HELP interop_store_work_redelivered_total Work entries this replica took that another replica had taken and not finished (it stopped, or was slower than stale_ms).\n\
             # TYPE interop_store_work_redelivered_total counter\n\
             interop_store_work_redelivered_total {}\n\
             # HELP interop_store_work_held Work entries this replica holds, not yet finished.\n\
             # TYPE interop_store_work_held gauge\n\
             interop_store_work_held {}\n\
             # HELP interop_store_work_lanes Bureaus whose shared work this replica takes in turn (a durable consumer each).\n\
             # TYPE interop_store_work_lanes gauge\n\
             interop_store_work_lanes {}\n\
             # HELP interop_store_work_in_hand Submissions this replica took from the log and has not yet handed to its pipeline (no other replica takes them meanwhile).\n\
             # TYPE interop_store_work_in_hand gauge\n\
             interop_store_work_in_hand {}\n\
             # HELP interop_store_payload_keys_purged_total Payload keys of completed submissions purged (their sealed payloads in the log unreadable), and purges that failed (left to the sweep).\n\
             # TYPE interop_store_payload_keys_purged_total counter\n\
             interop_store_payload_keys_purged_total{{outcome=\"ok\"}} {}\n\
             interop_store_payload_keys_purged_total{{outcome=\"failed\"}} {}\n\
             # HELP interop_store_log_loaded_snapshot Last log entry of the snapshot this replica's view was loaded from when it started (0: none).\n\
             # TYPE interop_store_log_loaded_snapshot gauge\n\
             interop_store_log_loaded_snapshot {}\n\
             # HELP interop_store_log_snapshots_total Snapshots of its view this replica stored (the log is trimmed behind them).\n\
             # TYPE interop_store_log_snapshots_total counter\n\
             interop_store_log_snapshots_total {}\n\
             # HELP interop_store_log_snapshot_entry Last log entry held by the newest snapshot this replica stored.\n\
             # TYPE interop_store_log_snapshot_entry gauge\n\
             interop_store_log_snapshot_entry {}\n\
             # HELP interop_store_log_first_entry The log's first entry after this replica last trimmed it (0: not yet).\n\
             # TYPE interop_store_log_first_entry gauge\n\
             interop_store_log_first_entry {}\n",
            *self.applied.borrow(),
            get(&c.resumed),
            get(&c.appended),
            get(&c.append_failures),
            get(&c.handed_out),
            get(&c.redelivered),
            self.taken.lock().expect("taken").len(),
            get(&c.lanes),
            get(&c.in_hand),
            get(&c.shredded),
            get(&c.shred_failures),
            get(&c.loaded),
            get(&c.snapshots),
            get(&c.snapshot_applied),
            get(&c.first_kept),
        )
    }
}

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod view_tests;
