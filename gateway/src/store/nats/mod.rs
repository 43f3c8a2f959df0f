//! The store on NATS JetStream, for gateways that outgrow one machine: several gateway
//! replicas share one JetStream stream and each serves any bureau or field office.
//!
//! **A replicated log of writes.** Every write is an [`Op`] (the same ops the embedded writer
//! applies). A replica appends its writes to one JetStream stream (subject `interop.log` by
//! default) as entries, and every replica — the writer included — follows that stream with an
//! ordered consumer and applies each entry, in stream order, to its own materialised view: an
//! in-memory [`RedbStore`] running exactly the embedded store's code. Because applying an op is
//! deterministic (ops carry their own clock), every replica's view is the same function of the
//! same log, so:
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
//! - **Group commit**: a replica's writes that are queued together go into one entry (at most
//!   [`MAX_BATCH`] ops or [`MAX_ENTRY_BYTES`]), one round trip to the server for all of them.
//!
//! **Work done once.** An accepted submission is owned by the replica that accepted it; only
//! the owner processes it. Each replica appends a heartbeat every [`HEARTBEAT`]; when an
//! owner's last heartbeat is older than [`STALE_AFTER`], any other replica may append a
//! [`Op::Claim`] for its unfinished submissions, applied only if the owner is still the one
//! claimed from, so exactly one claimant wins each. If the old owner was only slow, not gone,
//! both may process it, and completion's exactly-once rule still appends its results once.
//!
//! **Limits, written down.** A replica's view lives in memory and is rebuilt by replaying the
//! stream from its start when the replica starts (no snapshots yet), so start-up time and
//! memory grow with the log; the stream itself is never trimmed (compaction and bureau expiry
//! are ops in the log like any other, appended by each replica's retention task and applied
//! alike by every view: they trim the views' outbound events, not the log).
//!
//! **Payloads sealed, then shredded.** A submission's payload goes into the log encrypted under
//! a key of its own, kept in a key-value bucket beside the log; when the submission completes
//! the key is purged, so the tenprint in the never-trimmed log can no longer be read, as the
//! embedded store erases a completed payload (see [`sealed`]).
//!
//! **No audit archive.** The disclosure audit is not archived or pruned on this store
//! ([`Store::archive_disclosures`] refuses, and a gateway asked for `--audit-retention-days`
//! on it does not start): the log keeps every disclosure op whatever a view prunes, so pruning
//! would bound no disk, and a segment written by whichever replica pruned would scatter the
//! evidence across machines. Export it with `interop admin disclosures` (CSV, every page).

mod sealed;

use super::redb::RedbStore;
use super::*;
use async_nats::jetstream::{self, consumer, stream};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tokio_stream::StreamExt;

/// Most ops in one log entry.
pub const MAX_BATCH: usize = 512;
/// Most bytes of ops in one log entry (the server's default message limit is 1 MiB; one
/// submission is at most 256 KiB).
pub const MAX_ENTRY_BYTES: usize = 768 * 1024;
/// How often a replica says it is alive (at most; a quarter of the staleness limit if less).
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long a replica may be silent before others take its unfinished work.
pub const STALE_AFTER: Duration = Duration::from_secs(10);
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
    /// How long a replica may be silent before others take its unfinished work.
    pub stale_after: Duration,
    /// The page cache of this replica's in-memory view of the log.
    pub view_cache_bytes: usize,
    /// Plaintext to the server was asked for by name (`insecure=true`); the connection warns.
    pub insecure: bool,
}

impl NatsOptions {
    /// Parses `nats://HOST:PORT[,HOST:PORT...][/STREAM][?replicas=N&replica=NAME&stale_ms=MS&ca=F&cert=F&key=F]`
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
                "insecure" => {
                    o.insecure = v.parse().map_err(|_| {
                        anyhow::anyhow!("--store: insecure must be true or false, got {v:?}")
                    })?
                }
                "ca" => o.ca = Some(v.into()),
                "cert" => o.cert = Some(v.into()),
                "key" => o.key = Some(v.into()),
                _ => anyhow::bail!(
                    "--store {spec:?}: unknown option {k:?} (replicas, replica, stale_ms, ca, cert, key, insecure)"
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

    fn subject(&self) -> String {
        format!("interop.log.{}", self.stream)
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
    lost_accepts: std::sync::atomic::AtomicU64,
    taken_over: std::sync::atomic::AtomicU64,
    shredded: std::sync::atomic::AtomicU64,
    shred_failures: std::sync::atomic::AtomicU64,
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
    stale_after: Duration,
    settings: watch::Receiver<u64>,
    /// Submissions this replica accepted whose caller never heard (the append's answer was
    /// lost, e.g. the server went away after storing it): nobody queued them for processing,
    /// so [`Store::take_over`] hands them to the pipeline.
    lost: Arc<Mutex<Vec<SubmissionKey>>>,
    counts: Arc<Counts>,
    /// The keys of pending submissions' sealed payloads.
    keys: Arc<sealed::Keys>,
    /// The last log entry applied to the view.
    applied: watch::Receiver<u64>,
    /// Stops the background tasks when the store is dropped.
    _stop: watch::Sender<bool>,
}

fn unavailable(e: impl fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl NatsStore {
    /// Connects, creates the stream if it is missing, replays the log into a fresh view and
    /// starts following it; returns once the view has caught up with the stream.
    pub async fn connect(o: NatsOptions) -> anyhow::Result<Self> {
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
        let subject = o.subject();
        let stream = js
            .get_or_create_stream(stream::Config {
                name: o.stream.clone(),
                subjects: vec![subject.clone()],
                storage: stream::StorageType::File,
                num_replicas: o.replicas,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("JetStream stream {}: {e}", o.stream))?;
        let mut info = stream.cached_info().clone();
        if info.config.subjects != [subject.clone()] {
            anyhow::bail!(
                "JetStream stream {} exists with subjects {:?}, not {subject}",
                o.stream,
                info.config.subjects
            );
        }
        let last = info.state.last_sequence;
        if info.state.first_sequence > 1 && info.state.messages > 0 {
            info = stream.get_info().await?;
            anyhow::bail!(
                "JetStream stream {} starts at entry {}: its head was removed, so no view can be rebuilt",
                o.stream,
                info.state.first_sequence
            );
        }

        let keys = Arc::new(sealed::Keys::open_bucket(&js, &o.stream, o.replicas).await?);
        // This process's entries are told apart from an earlier run under the same replica
        // name (whose batch numbers, and JetStream message ids, also started at 1).
        let origin = format!("{}#{}", o.replica, random_hex(8));
        let view = Arc::new(RedbStore::open_in_memory(o.view_cache_bytes)?);
        let (stop_tx, stop) = watch::channel(false);
        let waiters: Arc<Mutex<HashMap<u64, Replies>>> = Arc::default();
        let (applied_tx, mut applied) = watch::channel(0u64);
        let (settings_tx, settings) = watch::channel(0u64);
        let lost: Arc<Mutex<Vec<SubmissionKey>>> = Arc::default();
        let counts: Arc<Counts> = Arc::default();
        tokio::spawn(follow(
            Follow {
                stream: stream.clone(),
                view: view.writer(),
                me: origin.clone(),
                waiters: waiters.clone(),
                applied: applied_tx,
                settings: settings_tx,
                lost: lost.clone(),
                counts: counts.clone(),
                live_after: last,
            },
            stop.clone(),
        ));
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(propose(js, subject, origin, rx, waiters, counts.clone()));
        // Catch up before serving: a replica must not answer from a view behind the log.
        tokio::time::timeout(Duration::from_secs(300), applied.wait_for(|a| *a >= last))
            .await
            .map_err(|_| anyhow::anyhow!("replaying the log ({last} entries) took over 5 minutes"))?
            .map_err(|_| anyhow::anyhow!("log follower stopped"))?;
        tracing::info!(stream = %o.stream, replica = %o.replica, entries = last, "JetStream store ready");
        let store = NatsStore {
            view,
            tx,
            replica: o.replica,
            stale_after: o.stale_after,
            settings,
            lost,
            counts,
            keys,
            applied,
            _stop: stop_tx,
        };
        store.heartbeat().await?;
        store.start_heartbeats(stop);
        Ok(store)
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

    fn start_heartbeats(&self, mut stop: watch::Receiver<bool>) {
        let every = HEARTBEAT.min(self.stale_after / 4);
        let tx = self.tx.clone();
        let replica = self.replica.clone();
        let (keys, view, counts) = (self.keys.clone(), self.view.clone(), self.counts.clone());
        let mut last_sweep = std::time::Instant::now();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(every) => {}
                }
                if last_sweep.elapsed() >= SWEEP_EVERY {
                    last_sweep = std::time::Instant::now();
                    let state = |k: SubmissionKey| {
                        let view = view.clone();
                        async move { Ok(view.submission(k).await?.map(|s| s.completed)) }
                    };
                    match keys.sweep(state).await {
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
                let op = Op::Heartbeat {
                    replica: replica.clone(),
                    at_ms: now_ms(),
                };
                if let Err(e) = submit_op(&tx, op).await {
                    tracing::warn!(error = %e, "heartbeat not written");
                }
            }
        });
    }
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

/// Appends this replica's writes to the log, in entries of up to [`MAX_BATCH`] ops.
async fn propose(
    js: jetstream::Context,
    subject: String,
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
        let mut ops = Vec::new();
        let mut replies = Vec::new();
        let mut bytes = 0usize;
        let mut next = Some(first);
        while let Some(w) = next.take() {
            let encoded = postcard::to_allocvec(&w.op).expect("serialisable op");
            if !ops.is_empty() && bytes + encoded.len() > MAX_ENTRY_BYTES {
                carry = Some(w);
                break;
            }
            bytes += encoded.len();
            ops.push(encoded);
            replies.push(w.reply);
            if ops.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
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
        let sent = async {
            js.publish_with_headers(subject.clone(), headers, payload.into())
                .await
                .map_err(unavailable)?
                .await
                .map_err(unavailable)
                .and_then(|ack| match ack.duplicate {
                    // Never resent, so a duplicate means an id clash: its callers would wait
                    // for an entry that is not coming.
                    true => Err(StoreError::Unavailable(format!(
                        "JetStream took entry {origin}-{batch_no} for a duplicate"
                    ))),
                    false => Ok(ack),
                })
        };
        let sent = sent.await;
        Counts::add(
            if sent.is_ok() {
                &counts.appended
            } else {
                &counts.append_failures
            },
            1,
        );
        if let Err(e) = sent {
            // The entry may or may not be in the log; if it is, applying it answers nobody
            // (its callers were told to retry, and every op is idempotent).
            tracing::warn!(error = %e, batch = batch_no, "log append failed; writes refused");
            if let Some(replies) = waiters.lock().expect("waiters").remove(&batch_no) {
                for r in replies {
                    drop(r.send(Err(StoreError::Unavailable(format!(
                        "JetStream append failed: {e}"
                    )))));
                }
            }
        }
    }
}

/// What the log follower works with.
struct Follow {
    stream: stream::Stream,
    view: mpsc::Sender<WriteOp>,
    me: String,
    waiters: Arc<Mutex<HashMap<u64, Replies>>>,
    applied: watch::Sender<u64>,
    settings: watch::Sender<u64>,
    lost: Arc<Mutex<Vec<SubmissionKey>>>,
    counts: Arc<Counts>,
    /// Entries up to here were written before this replica started (replayed, not lost).
    live_after: u64,
}

/// Follows the log from its start, applying each entry to the view in stream order and
/// answering this replica's own writes; recreates its consumer after errors.
async fn follow(f: Follow, mut stop: watch::Receiver<bool>) {
    let Follow {
        stream,
        view,
        me,
        waiters,
        applied,
        settings,
        lost,
        counts,
        live_after,
    } = f;
    let mut next = 1u64;
    loop {
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: next,
                },
                ..Default::default()
            })
            .await;
        let mut messages = match consumer {
            Ok(c) => match c.messages().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "log follower: no messages; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "log follower: no consumer; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        // Caught up with an empty log: say so, so `connect` can return.
        applied.send_if_modified(|a| {
            let caught = next - 1;
            if *a < caught {
                *a = caught;
                true
            } else {
                false
            }
        });
        loop {
            let msg = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                m = messages.next() => m,
            };
            let msg = match msg {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "log follower error; resuming at entry {next}");
                    break;
                }
                None => break,
            };
            let seq = match msg.info() {
                Ok(i) => i.stream_sequence,
                Err(e) => {
                    tracing::warn!(error = %e, "log entry without metadata; resuming");
                    break;
                }
            };
            if seq < next {
                continue; // redelivered after a recreate
            }
            let entry: Entry = match postcard::from_bytes(&msg.payload) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(seq, error = %e, "unreadable log entry skipped");
                    next = seq + 1;
                    applied.send_replace(seq);
                    continue;
                }
            };
            let mut answers = Vec::with_capacity(entry.ops.len());
            let mut accepts = Vec::with_capacity(entry.ops.len());
            let mut setting = false;
            for bytes in &entry.ops {
                let op: Op = match postcard::from_bytes(bytes) {
                    Ok(op) => op,
                    Err(e) => {
                        tracing::error!(seq, error = %e, "unreadable op skipped");
                        answers.push(None);
                        accepts.push(None);
                        continue;
                    }
                };
                setting |= matches!(op, Op::Setting { .. });
                accepts.push(match &op {
                    Op::Accept { key, .. } | Op::AcceptSealed { key, .. } => Some(key.clone()),
                    _ => None,
                });
                let (reply, rx) = oneshot::channel();
                if view.send(WriteOp { op, reply }).await.is_err() {
                    return;
                }
                answers.push(Some(rx));
            }
            let mut outcomes = Vec::with_capacity(answers.len());
            for a in answers {
                outcomes.push(match a {
                    Some(rx) => rx.await.unwrap_or(Err(StoreError::Closed)),
                    None => Err(StoreError::Unavailable("unreadable log entry".into())),
                });
            }
            if entry.origin == me {
                let replies = waiters.lock().expect("waiters").remove(&entry.batch);
                match replies {
                    Some(replies) => {
                        for (r, o) in replies.into_iter().zip(outcomes) {
                            drop(r.send(o));
                        }
                    }
                    // Appended, but its callers were told it failed: new submissions among
                    // them are ours to process, and nothing else will queue them.
                    None if seq > live_after => {
                        let mut l = lost.lock().expect("lost");
                        for (k, o) in accepts.into_iter().zip(outcomes) {
                            if let (Some(k), Ok(Outcome::Accepted(Accepted::New(_)))) = (k, o) {
                                tracing::warn!(key = %k, "accepted after its caller was refused; queued for processing");
                                Counts::add(&counts.lost_accepts, 1);
                                l.push(k);
                            }
                        }
                    }
                    None => {}
                }
            }
            next = seq + 1;
            applied.send_replace(seq);
            if setting {
                settings.send_modify(|v| *v += 1);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
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
                owner: self.replica.clone(),
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

    /// The view's figures; it is held in memory, so there is no file size, and the audit is
    /// not archived here (see the module documentation).
    async fn usage(&self) -> StoreResult<StoreUsage> {
        self.view.usage().await
    }

    fn watch_head(&self, stream: &StreamKey) -> watch::Receiver<u64> {
        self.view.watch_head(stream)
    }

    async fn resumable(&self) -> StoreResult<Vec<Pending>> {
        let mine = self
            .view
            .unfinished_owned()
            .await?
            .into_iter()
            .filter(|(_, owner, _)| owner == &self.replica || owner.is_empty())
            .map(|(p, _, _)| p)
            .collect();
        self.opened(mine).await
    }

    async fn take_over(&self) -> StoreResult<Vec<Pending>> {
        let stale_before = now_ms() - self.stale_after.as_millis() as i64;
        let lost: std::collections::HashSet<SubmissionKey> =
            self.lost.lock().expect("lost").drain(..).collect();
        let mut won = Vec::new();
        for (p, owner, beat) in self.view.unfinished_owned().await? {
            if owner == self.replica && lost.contains(&p.key) {
                won.push(p);
                continue;
            }
            if owner == self.replica || owner.is_empty() || beat.is_some_and(|b| b >= stale_before)
            {
                continue;
            }
            let claim = Op::Claim {
                key: p.key.clone(),
                from: owner.clone(),
                to: self.replica.clone(),
            };
            if self.write(claim).await?.claimed()? {
                Counts::add(&self.counts.taken_over, 1);
                tracing::debug!(key = %p.key, from = %owner, "took over a stopped replica's submission");
                won.push(p);
            }
        }
        if !won.is_empty() {
            tracing::info!(
                submissions = won.len(),
                "took over stopped replicas' unfinished submissions"
            );
        }
        self.opened(won).await
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
             # HELP interop_store_log_appends_total Log entries this replica appended, by outcome.\n\
             # TYPE interop_store_log_appends_total counter\n\
             interop_store_log_appends_total{{outcome=\"ok\"}} {}\n\
             interop_store_log_appends_total{{outcome=\"failed\"}} {}\n\
             # HELP interop_store_lost_accepts_total Submissions appended after their caller was refused, queued by this replica.\n\
             # TYPE interop_store_lost_accepts_total counter\n\
             interop_store_lost_accepts_total {}\n\
             # HELP interop_store_taken_over_total Submissions this replica took over from stopped replicas.\n\
             # TYPE interop_store_taken_over_total counter\n\
             interop_store_taken_over_total {}\n\
             # HELP interop_store_payload_keys_purged_total Payload keys of completed submissions purged (their sealed payloads in the log unreadable), and purges that failed (left to the sweep).\n\
             # TYPE interop_store_payload_keys_purged_total counter\n\
             interop_store_payload_keys_purged_total{{outcome=\"ok\"}} {}\n\
             interop_store_payload_keys_purged_total{{outcome=\"failed\"}} {}\n",
            *self.applied.borrow(),
            get(&c.appended),
            get(&c.append_failures),
            get(&c.lost_accepts),
            get(&c.taken_over),
            get(&c.shredded),
            get(&c.shred_failures),
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
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
                let o = NatsOptions::parse(&format!("{url}/{}?insecure=true", stream_for(&dir)))
                    .unwrap();
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

    fn key(tcn: &str) -> SubmissionKey {
        SubmissionKey {
            bureau: "TX".into(),
            tcn: tcn.into(),
        }
    }

    async fn replica(server: &NatsServer, name: &str, extra: &str) -> Arc<NatsStore> {
        let o = NatsOptions::parse(&format!(
            "{}/LOG?insecure=true&replica={name}{extra}",
            server.url
        ))
        .unwrap();
        Arc::new(NatsStore::connect(o).await.unwrap())
    }

    /// Waits (bounded) until `f` holds: another replica's write reaches this one's view after
    /// a moment, not at once.
    async fn eventually<F, Fut>(what: &str, mut f: F)
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

    /// A replica restarted under the same name writes again at once (its first entries must
    /// not pass for the earlier run's, which had the same batch numbers) and resumes its own
    /// unfinished submissions.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_restarted_under_its_name_writes_and_resumes() {
        let Some(server) = start_server("a_replica_restarted_under_its_name_writes_and_resumes")
        else {
            return;
        };
        let a = replica(&server, "a", "").await;
        a.accept(key("BEFORE"), vec![1], 1).await.unwrap();
        drop(a);
        let again = tokio::time::timeout(Duration::from_secs(10), replica(&server, "a", ""))
            .await
            .expect("the restarted replica's first write (a heartbeat) is confirmed");
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            again.accept(key("AFTER"), vec![2], 2),
        )
        .await
        .expect("a write after the restart is confirmed");
        assert!(matches!(r.unwrap(), Accepted::New(_)));
        let mine: Vec<String> = again
            .resumable()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.key.tcn)
            .collect();
        assert_eq!(mine, ["BEFORE", "AFTER"]);
    }

    /// A replica that stops beating loses its unfinished submissions to exactly one other
    /// replica; a live one's are never taken, and a restarted replica resumes its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_replicas_work_is_taken_over_once() {
        let Some(server) = start_server("a_stopped_replicas_work_is_taken_over_once") else {
            return;
        };
        let fast = "&stale_ms=300";
        let a = replica(&server, "a", fast).await;
        let b = replica(&server, "b", fast).await;
        let c = replica(&server, "c", fast).await;
        for i in 0..10 {
            a.accept(key(&format!("A-{i}")), vec![i], 1).await.unwrap();
        }
        b.accept(key("B-0"), vec![9], 1).await.unwrap();
        a.complete(key("A-0"), Completion::default()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(b.take_over().await.unwrap().is_empty(), "a is alive");
        assert_eq!(
            a.resumable().await.unwrap().len(),
            9,
            "a resumes its own unfinished ones"
        );

        drop(a); // stops its heartbeats
        tokio::time::sleep(Duration::from_millis(800)).await;
        let (won_b, won_c) = tokio::join!(b.take_over(), c.take_over());
        let (won_b, won_c) = (won_b.unwrap(), won_c.unwrap());
        let mut all: Vec<String> = won_b
            .iter()
            .chain(&won_c)
            .map(|p| p.key.tcn.clone())
            .collect();
        all.sort();
        let expected: Vec<String> = (1..10).map(|i| format!("A-{i}")).collect();
        assert_eq!(all, expected, "each unfinished submission of a, taken once");
        assert!(all.iter().all(|t| t != "B-0"), "b is alive: its work stays");
        let taken = |m: String| {
            m.lines()
                .find_map(|l| l.strip_prefix("interop_store_taken_over_total "))
                .and_then(|v| v.parse::<u64>().ok())
                .expect("the take-over counter")
        };
        assert_eq!(
            taken(b.render_metrics()) + taken(c.render_metrics()),
            9,
            "/metrics counts what was taken over"
        );
        assert!(b.render_metrics().contains("interop_store_log_applied "));
        eventually("claims visible everywhere", || {
            let c = c.clone();
            async move { c.take_over().await.unwrap().is_empty() }
        })
        .await;
        // The winners now resume them as their own.
        let owned = b.resumable().await.unwrap().len() + c.resumable().await.unwrap().len();
        assert_eq!(owned, 9 + 1);
    }

    /// Every entry of the stream `name` on `server`, raw.
    async fn raw_log(server: &NatsServer, name: &str) -> Vec<Vec<u8>> {
        let js = jetstream::new(async_nats::connect(server.url.as_str()).await.unwrap());
        let stream = js.get_stream(name).await.unwrap();
        let last = stream.get_info().await.unwrap().state.last_sequence;
        let mut out = vec![];
        for seq in 1..=last {
            if let Ok(m) = stream.get_raw_message(seq).await {
                out.push(m.payload.to_vec());
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
        let state = |k: SubmissionKey| {
            let view = a.view.clone();
            async move { Ok(view.submission(k).await?.map(|s| s.completed)) }
        };
        assert_eq!(a.keys.sweep(state).await.unwrap(), 0, "first seen");
        assert_eq!(a.keys.sweep(state).await.unwrap(), 1, "still an orphan");
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
            "nats://a:4222,b:4222/LOG?replicas=3&replica=gw1&stale_ms=500&insecure=true",
        )
        .unwrap();
        assert!(o.insecure);
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
        // A CA makes a nats:// link TLS.
        assert!(NatsOptions::parse("nats://x:1?ca=ca.pem").is_ok());
        for (spec, says) in [
            ("127.0.0.1:4222", "expected nats://"),
            ("http://x:1", "scheme"),
            ("nats:///LOG", "no server address"),
            ("nats://x:1/a.b", "stream name"),
            ("nats://x:1?replicas=9", "replicas must be 1 to 5"),
            ("nats://x:1?stale_ms=5", "stale_ms"),
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
}
