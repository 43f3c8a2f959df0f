//! The embedded store on `redb`: a pure-Rust, ACID, copy-on-write B-tree file with MVCC
//! readers. Chosen over a home-made segment log because crash safety (checksummed commits,
//! fsync on commit) comes proven, and readers never block the writer.
//!
//! **Group commit.** All writes go through one writer thread. It takes the first waiting
//! request, drains up to [`MAX_BATCH`] more that are already queued, applies them all in one
//! write transaction and commits once (one fsync), then answers each. Under load many
//! submissions share one disk flush; at rest a lone submission is committed at once. Each op
//! is validated inside the batch; an op that is refused (conflict) does not abort the others.
//! If the commit fails, every op in the batch gets `Unavailable` and nothing is acknowledged.
//!
//! **I/O errors and a full disk.** After a failed write redb refuses everything until the
//! database is reopened. The writer therefore marks itself broken, and before its next batch
//! closes the database (readers meanwhile get `Unavailable`) and reopens it from the last good
//! commit; while the disk is still full the reopen or the commit fails again and that batch is
//! refused too. So the gateway answers `UNAVAILABLE` while it cannot write, never acknowledges
//! what it did not store, and accepts again by itself once space returns. [`IoFaults`] injects
//! such failures in tests.

use super::*;
use ::redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::PathBuf;
use std::sync::RwLock;

#[cfg(any(test, feature = "test-util"))]
mod faults;
mod retention;
mod snapshot;
mod writer;
#[cfg(any(test, feature = "test-util"))]
pub use faults::IoFaults;
use writer::Writer;

/// Most ops committed by one transaction; bounds the latency a batch adds to its first op.
const MAX_BATCH: usize = 512;
/// Depth of the queue in front of the writer; callers wait (backpressure) when it is full.
const QUEUE_DEPTH: usize = 4096;
/// redb's page cache (read cache and write buffer together) unless told otherwise
/// (`interop-gateway serve --store-cache-mib`). redb's own default is 1 GiB, which a gateway
/// fills over an hour of steady load and then holds: resident memory climbed by that much in
/// a soak although nothing else grew. The hot pages are the tails of the logs and the pending
/// table, far smaller than this.
pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;

/// "bureau/tcn" → postcard [`StoredSubmission`].
const SUBMISSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("submissions");
/// acceptance seq → "bureau/tcn", for submissions not yet completed.
const PENDING: TableDefinition<u64, &str> = TableDefinition::new("pending");
/// acceptance seq → "bureau/tcn", for every submission held: receipts are forgotten in
/// acceptance order (see `Store::expire_receipts`).
const RECEIVED: TableDefinition<u64, &str> = TableDefinition::new("received");
/// (stream, cursor) → encoded event.
const LOG: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("log");
/// stream → head cursor.
const HEADS: TableDefinition<&str, u64> = TableDefinition::new("heads");
/// stream → acknowledged cursor.
const ACKS: TableDefinition<&str, u64> = TableDefinition::new("acks");
/// counter name → value.
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// setting name → value (policy overrides).
const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");
/// once-key → record (see `Store::append_once`).
const ONCE: TableDefinition<&str, &[u8]> = TableDefinition::new("once");
/// (stream, acknowledged cursor) → when it was acknowledged (Unix ms), for retention.
const ACK_TIMES: TableDefinition<(&str, u64), i64> = TableDefinition::new("ack_times");
/// (bureau stream, cursor) → a time (Unix ms) by which every event up to that cursor had been
/// appended: the stamps `Store::expire` writes, for retention by age. A few per stream per
/// retention period, none on the write path.
const APPEND_STAMPS: TableDefinition<(&str, u64), i64> = TableDefinition::new("append_stamps");
/// disclosure seq → postcard [`Disclosure`]. Append-only: nothing rewrites a row, and only the
/// archive pass removes the oldest, once they are archived.
const DISCLOSURES: TableDefinition<u64, &[u8]> = TableDefinition::new("disclosures");
/// (tcn, seq) and (recipient, seq) → (), so a filtered listing reads only its own rows.
const DISCLOSURES_BY_TCN: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("disclosures_by_tcn");
const DISCLOSURES_BY_RECIPIENT: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("disclosures_by_recipient");
/// "bureau/tcn" → the replica processing it, for unfinished submissions of a replicated store.
const OWNERS: TableDefinition<&str, &str> = TableDefinition::new("owners");
/// replica → when it last said it was alive (Unix ms, its own clock).
const HEARTBEATS: TableDefinition<&str, i64> = TableDefinition::new("heartbeats");
/// "next_seq" → next acceptance seq; "next_receipt/BUREAU" → that bureau's next receipt
/// number; "next_disclosure" → next disclosure seq;
/// "disclosures_archived_through" → the last disclosure seq pruned after archiving.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// META keys of a replica's view (see [`Op::Checkpoint`]): the log it follows, and the last of
/// that log's entries it holds.
const VIEW_LOG: &str = "view_log";
const VIEW_APPLIED: &str = "view_applied";

/// Calls the macro `$m` with each table above: creating them, and a snapshot's copy (see
/// `snapshot.rs`), then never miss one.
macro_rules! every_table {
    ($m:ident) => {
        $m!(SUBMISSIONS);
        $m!(PENDING);
        $m!(RECEIVED);
        $m!(LOG);
        $m!(HEADS);
        $m!(ACKS);
        $m!(COUNTERS);
        $m!(SETTINGS);
        $m!(META);
        $m!(ONCE);
        $m!(ACK_TIMES);
        $m!(APPEND_STAMPS);
        $m!(DISCLOSURES);
        $m!(DISCLOSURES_BY_TCN);
        $m!(DISCLOSURES_BY_RECIPIENT);
        $m!(OWNERS);
        $m!(HEARTBEATS);
    };
}
use every_table;

#[derive(Serialize, Deserialize)]
struct StoredSubmission {
    receipt: ReceiptRecord,
    completed: bool,
    /// SHA-256 of the encoded submission: repeats are compared by it, because the payload
    /// itself is dropped once processing completes.
    digest: Vec<u8>,
    // As bytes (see `Op::Accept`): the same postcard encoding as a sequence of u8.
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
    #[serde(with = "serde_bytes")]
    summary: Option<Vec<u8>>,
}

/// Fills the acceptance index that receipt retention reads (`RECEIVED`) for a store written
/// before it had one: once, at open, from the submissions held.
fn index_received(txn: &::redb::WriteTransaction) -> Result<(), ::redb::Error> {
    use ::redb::ReadableTableMetadata;
    let mut received = txn.open_table(RECEIVED)?;
    let subs = txn.open_table(SUBMISSIONS)?;
    if !received.is_empty()? || subs.is_empty()? {
        return Ok(());
    }
    let mut indexed = 0u64;
    for row in subs.iter()? {
        let (k, v) = row?;
        if let Ok(s) = decode::<StoredSubmission>(v.value(), || format!("submission {}", k.value()))
        {
            received.insert(s.receipt.seq, k.value())?;
            indexed += 1;
        }
    }
    tracing::info!(
        submissions = indexed,
        "receipts indexed by acceptance, for their retention"
    );
    Ok(())
}

pub(crate) fn digest(payload: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, payload)
        .as_ref()
        .to_vec()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn unavailable(e: impl fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// redb's errors, wherever a read meets one: the store is unavailable (it reopens itself
/// after a failed write; see the module documentation).
macro_rules! storage_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                unavailable(e)
            }
        }
    )*};
}
storage_errors!(
    ::redb::Error,
    ::redb::TransactionError,
    ::redb::TableError,
    ::redb::StorageError
);

/// A stored record that does not decode: logged (naming it, never its bytes) and reported to
/// the caller as [`StoreError::Corrupt`]. Never a panic: a bad row must not take the writer
/// thread, and every later write, with it.
fn corrupt(what: String, why: impl fmt::Display) -> StoreError {
    tracing::error!(record = %what, error = %why, "stored record cannot be read");
    StoreError::Corrupt(what)
}

/// Decodes the stored record `what` names.
fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: impl FnOnce() -> String,
) -> StoreResult<T> {
    postcard::from_bytes(bytes).map_err(|e| corrupt(what(), e))
}

/// The `(bureau, tcn)` of a `bureau/tcn` submission key.
fn submission_key(k: &str) -> StoreResult<SubmissionKey> {
    let (bureau, tcn) = k
        .split_once('/')
        .ok_or_else(|| corrupt(format!("submission key {k:?}"), "no '/'"))?;
    Ok(SubmissionKey {
        bureau: bureau.to_string(),
        tcn: tcn.to_string(),
    })
}

/// How the writer commits. The gateway's store uses [`CommitMode::Group`], and a JetStream
/// replica's view of the log [`CommitMode::View`] (or `NoSync` in memory); `PerOp` and
/// `NoSync` also let the ingest benchmark show, in one run, what group commit buys and what
/// durability costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitMode {
    /// Many queued ops per transaction, one fsync per transaction (the default).
    Group,
    /// One op per transaction: one fsync per submission.
    PerOp,
    /// Group commit without fsync. **Not durable**: a receipt may be lost in a power cut.
    NoSync,
    /// A replica's view of a replicated log, in a file of its own. Each transaction is one
    /// log entry's ops and the [`Op::Checkpoint`] its follower sends behind them, so whatever
    /// commit the file holds, it says which entries it holds whole. Without fsync, but for a
    /// checkpoint marked durable: after a crash the file is as its last durable checkpoint
    /// left it (redb rolls back to its last durable commit), and the log is applied again
    /// from there. Only the follower may write to a view in this mode: the writer waits for
    /// each entry's checkpoint before it commits.
    View,
}

/// Where the database file is and how to open it.
#[derive(Clone)]
struct DbFile {
    /// `None`: in memory (a replica's view of a replicated log; see `store::nats`).
    path: Option<PathBuf>,
    /// redb's page cache, in bytes.
    cache_bytes: usize,
    /// Injected disk faults (tests only).
    #[cfg(any(test, feature = "test-util"))]
    faults: Option<Arc<IoFaults>>,
}

impl DbFile {
    fn open(&self) -> StoreResult<Database> {
        let Some(path) = &self.path else {
            return ::redb::Builder::new()
                .set_cache_size(self.cache_bytes)
                .create_with_backend(::redb::backends::InMemoryBackend::new())
                .map_err(unavailable);
        };
        #[cfg(any(test, feature = "test-util"))]
        if let Some(faults) = &self.faults {
            return faults::open(path, faults.clone());
        }
        let db = ::redb::Builder::new()
            .set_cache_size(self.cache_bytes)
            .create(path)
            .map_err(unavailable)?;
        private_file(path).map_err(unavailable)?;
        Ok(db)
    }
}

/// The open database, shared by the writer and the readers; `None` while the writer reopens
/// it after an I/O error.
type SharedDb = Arc<RwLock<Option<Arc<Database>>>>;

fn recovering() -> StoreError {
    StoreError::Unavailable("the store is recovering from a storage error".into())
}

pub struct RedbStore {
    db: SharedDb,
    tx: mpsc::Sender<WriteOp>,
    heads: Arc<dashmap::DashMap<String, watch::Sender<u64>>>,
    /// The database file; `None` in memory.
    path: Option<PathBuf>,
    /// One archive pass at a time (see [`crate::store::archive`]).
    archiving: tokio::sync::Mutex<()>,
    /// The writer's commits and the ops they carried.
    commits: Arc<std::sync::atomic::AtomicU64>,
    ops: Arc<std::sync::atomic::AtomicU64>,
}

impl RedbStore {
    /// Opens (or creates) `dir/interop.redb` and starts the writer thread (group commit), with
    /// a page cache of [`DEFAULT_CACHE_BYTES`].
    pub fn open(dir: &Path) -> StoreResult<Self> {
        Self::open_with(dir, CommitMode::Group, DEFAULT_CACHE_BYTES)
    }

    /// Like [`RedbStore::open`], committing as `mode` says, with a page cache of
    /// `cache_bytes`.
    pub fn open_with(dir: &Path, mode: CommitMode, cache_bytes: usize) -> StoreResult<Self> {
        let file = DbFile {
            path: Some(Self::file_in(dir)?),
            cache_bytes,
            #[cfg(any(test, feature = "test-util"))]
            faults: None,
        };
        Self::open_db(file, mode)
    }

    /// Like [`RedbStore::open`], with `faults` able to make the file's writes fail (tests).
    #[cfg(any(test, feature = "test-util"))]
    pub fn open_with_faults(dir: &Path, faults: Arc<IoFaults>) -> StoreResult<Self> {
        let file = DbFile {
            path: Some(Self::file_in(dir)?),
            cache_bytes: DEFAULT_CACHE_BYTES,
            faults: Some(faults),
        };
        Self::open_db(file, CommitMode::Group)
    }

    /// A store held in memory only, committing without sync: the materialised view a
    /// replica of a replicated log applies entries to (see `store::nats`). Not durable.
    pub(crate) fn open_in_memory(cache_bytes: usize) -> StoreResult<Self> {
        let file = DbFile {
            path: None,
            cache_bytes,
            #[cfg(any(test, feature = "test-util"))]
            faults: None,
        };
        Self::open_db(file, CommitMode::NoSync)
    }

    /// A replica's view of a replicated log kept in the file `path` (created if missing), so
    /// a restart applies only the entries after its last checkpoint (see [`CommitMode::View`]
    /// and `store::nats`). Not durable between checkpoints.
    pub(crate) fn open_view(path: &Path, cache_bytes: usize) -> StoreResult<Self> {
        if let Some(dir) = path.parent() {
            private_dir(dir).map_err(unavailable)?;
        }
        let file = DbFile {
            path: Some(path.to_path_buf()),
            cache_bytes,
            #[cfg(any(test, feature = "test-util"))]
            faults: None,
        };
        Self::open_db(file, CommitMode::View)
    }

    /// A view's last checkpoint: (the log it follows, the last entry it holds), if it has one.
    pub(crate) async fn checkpoint(&self) -> StoreResult<Option<(u64, u64)>> {
        self.blocking_read(|db| {
            let txn = db.begin_read()?;
            let meta = txn.open_table(META)?;
            let log = meta.get(VIEW_LOG)?.map(|v| v.value());
            let applied = meta.get(VIEW_APPLIED)?.map(|v| v.value());
            Ok(log.zip(applied))
        })
        .await
    }

    /// Where this store's writer takes its ops.
    pub(crate) fn writer(&self) -> mpsc::Sender<WriteOp> {
        self.tx.clone()
    }

    /// The database file in `dir`, which is created if missing.
    fn file_in(dir: &Path) -> StoreResult<PathBuf> {
        private_dir(dir).map_err(unavailable)?;
        Ok(dir.join("interop.redb"))
    }

    fn open_db(file: DbFile, mode: CommitMode) -> StoreResult<Self> {
        let db = Arc::new(file.open()?);
        // Create every table up front so readers never meet a missing one.
        let txn = db.begin_write().map_err(unavailable)?;
        {
            macro_rules! create {
                ($t:ident) => {
                    txn.open_table($t).map_err(unavailable)?;
                };
            }
            every_table!(create);
            index_received(&txn).map_err(unavailable)?;
        }
        txn.commit().map_err(unavailable)?;
        let heads = Arc::new(dashmap::DashMap::new());
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let db: SharedDb = Arc::new(RwLock::new(Some(db)));
        let path = file.path.clone();
        let (commits, ops) = (Arc::default(), Arc::default());
        let writer = Writer {
            db: db.clone(),
            file,
            broken: false,
            heads: heads.clone(),
            mode,
            commits: Arc::clone(&commits),
            ops: Arc::clone(&ops),
        };
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(unavailable)?;
        Ok(RedbStore {
            db,
            tx,
            heads,
            path,
            archiving: tokio::sync::Mutex::new(()),
            commits,
            ops,
        })
    }

    fn db(&self) -> StoreResult<Arc<Database>> {
        self.db
            .read()
            .map_err(|_| recovering())?
            .clone()
            .ok_or_else(recovering)
    }

    /// The stored row of submission `key`, if any.
    async fn stored(&self, key: &SubmissionKey) -> StoreResult<Option<StoredSubmission>> {
        let k = key.to_string();
        self.blocking_read(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(SUBMISSIONS)?;
            t.get(k.as_str())?
                .map(|v| decode(v.value(), || format!("submission {k}")))
                .transpose()
        })
        .await
    }

    /// `f` of every unfinished submission, in acceptance order, one row at a time.
    async fn each_unfinished<T: Send + 'static>(
        &self,
        mut f: impl FnMut(SubmissionKey, StoredSubmission) -> T + Send + 'static,
    ) -> StoreResult<Vec<T>> {
        self.blocking_read(move |db| {
            let txn = db.begin_read()?;
            let pending = txn.open_table(PENDING)?;
            let subs = txn.open_table(SUBMISSIONS)?;
            let mut out = Vec::new();
            for row in pending.iter()? {
                let (_, k) = row?;
                let k = k.value().to_string();
                if let Some(v) = subs.get(k.as_str())? {
                    let s: StoredSubmission = decode(v.value(), || format!("submission {k}"))?;
                    out.push(f(submission_key(&k)?, s));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn blocking_read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let db = self.db()?;
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(unavailable)?
    }
}

#[async_trait::async_trait]
impl Store for RedbStore {
    /// The writer's commits (fsyncs, in group-commit mode) and the ops they carried: a soak
    /// divides their growth by its bookings to see the store's writes per booking stay flat.
    fn render_metrics(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        format!(
            "# HELP interop_store_commits_total Store transactions committed.\n# TYPE interop_store_commits_total counter\ninterop_store_commits_total {}\n# HELP interop_store_ops_total Store writes (ops) committed.\n# TYPE interop_store_ops_total counter\ninterop_store_ops_total {}\n",
            self.commits.load(Relaxed),
            self.ops.load(Relaxed)
        )
    }

    async fn accept(
        &self,
        key: SubmissionKey,
        payload: Vec<u8>,
        now_ms: i64,
    ) -> StoreResult<Accepted> {
        submit_op(
            &self.tx,
            Op::Accept {
                key,
                payload,
                now_ms,
                owner: String::new(),
            },
        )
        .await?
        .accepted()
    }

    async fn complete(&self, key: SubmissionKey, completion: Completion) -> StoreResult<bool> {
        submit_op(&self.tx, Op::Complete { key, completion })
            .await?
            .completed()
    }

    async fn append_once(
        &self,
        once_key: String,
        record: Vec<u8>,
        completion: Completion,
    ) -> StoreResult<Once> {
        submit_op(
            &self.tx,
            Op::Once {
                once_key,
                record,
                completion,
            },
        )
        .await?
        .once()
    }

    async fn once_record(&self, once_key: String) -> StoreResult<Option<Vec<u8>>> {
        self.blocking_read(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(ONCE)?;
            Ok(t.get(once_key.as_str())?.map(|v| v.value().to_vec()))
        })
        .await
    }

    async fn submission(&self, key: SubmissionKey) -> StoreResult<Option<SubmissionState>> {
        Ok(self.stored(&key).await?.map(|s| SubmissionState {
            receipt: s.receipt,
            completed: s.completed,
            summary: s.summary,
        }))
    }

    /// Row by row, keeping no payload: memory at start follows the number of pending
    /// submissions, not their size.
    async fn resumable(&self) -> StoreResult<Vec<PendingKey>> {
        self.each_unfinished(|key, s| PendingKey {
            key,
            accepted_at_ms: s.receipt.accepted_at_ms,
            bytes: s.payload.len() as u64,
        })
        .await
    }

    async fn pending(&self, key: SubmissionKey) -> StoreResult<Option<Pending>> {
        Ok(self
            .stored(&key)
            .await?
            .filter(|s| !s.completed)
            .map(|s| Pending {
                key,
                receipt: s.receipt,
                payload: s.payload,
            }))
    }

    async fn unfinished(&self) -> StoreResult<Vec<Pending>> {
        self.each_unfinished(|key, s| Pending {
            key,
            receipt: s.receipt,
            payload: s.payload,
        })
        .await
    }

    async fn read(
        &self,
        stream: StreamKey,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<(u64, Vec<u8>)>> {
        let s = stream.to_string();
        self.blocking_read(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(LOG)?;
            let mut out = Vec::new();
            for row in t.range((s.as_str(), after.saturating_add(1))..=(s.as_str(), u64::MAX))? {
                let (k, v) = row?;
                out.push((k.value().1, v.value().to_vec()));
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn ack(&self, stream: StreamKey, cursor: u64) -> StoreResult<u64> {
        let at_ms = now_ms();
        submit_op(
            &self.tx,
            Op::Ack {
                stream,
                cursor,
                at_ms,
            },
        )
        .await?
        .acked()
    }

    async fn compact(&self, acked_before_ms: i64) -> StoreResult<u64> {
        submit_op(&self.tx, Op::Compact { acked_before_ms })
            .await?
            .compacted()
    }

    async fn expire(&self, appended_before_ms: i64, now_ms: i64) -> StoreResult<u64> {
        let op = Op::Expire {
            appended_before_ms,
            now_ms,
        };
        submit_op(&self.tx, op).await?.compacted()
    }

    async fn expire_receipts(&self, accepted_before_ms: i64) -> StoreResult<u64> {
        let op = Op::ExpireReceipts { accepted_before_ms };
        submit_op(&self.tx, op).await?.compacted()
    }

    fn archive_dir(&self) -> Option<PathBuf> {
        let data = self.path.as_deref()?.parent()?;
        Some(crate::store::archive::dir_in(data))
    }

    async fn archive_disclosures(&self, before_ms: i64) -> StoreResult<Option<Archived>> {
        self.archive_before(before_ms).await
    }

    async fn usage(&self) -> StoreResult<StoreUsage> {
        self.usage_now().await
    }

    async fn record_disclosures(&self, records: Vec<Disclosure>) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        submit_op(&self.tx, Op::Disclose { records }).await?.done()
    }

    async fn disclosures(
        &self,
        filter: DisclosureFilter,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<(u64, Disclosure)>> {
        self.blocking_read(move |db| {
            let txn = db.begin_read()?;
            let rows = txn.open_table(DISCLOSURES)?;
            let by_seq = |seq: u64| -> StoreResult<Option<Disclosure>> {
                rows.get(seq)?
                    .map(|v| decode(v.value(), || format!("disclosure {seq}")))
                    .transpose()
            };
            let mut out = Vec::new();
            // Walk the narrowest index that applies; check the other filter on each row.
            let index = if !filter.tcn.is_empty() {
                Some((txn.open_table(DISCLOSURES_BY_TCN)?, filter.tcn.clone()))
            } else if !filter.recipient.is_empty() {
                Some((
                    txn.open_table(DISCLOSURES_BY_RECIPIENT)?,
                    filter.recipient.clone(),
                ))
            } else {
                None
            };
            match index {
                Some((t, k)) => {
                    let from = after.saturating_add(1);
                    for row in t.range((k.as_str(), from)..=(k.as_str(), u64::MAX))? {
                        let seq = row?.0.value().1;
                        if let Some(d) = by_seq(seq)?
                            && filter.matches(&d)
                        {
                            out.push((seq, d));
                            if out.len() >= limit {
                                break;
                            }
                        }
                    }
                }
                None => {
                    for row in rows.range(after.saturating_add(1)..)? {
                        let (k, v) = row?;
                        let seq = k.value();
                        let d: Disclosure = decode(v.value(), || format!("disclosure {seq}"))?;
                        out.push((seq, d));
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn acked(&self, stream: StreamKey) -> StoreResult<u64> {
        let s = stream.to_string();
        self.blocking_read(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(ACKS)?;
            Ok(t.get(s.as_str())?.map(|v| v.value()).unwrap_or(0))
        })
        .await
    }

    async fn counters(&self) -> StoreResult<BTreeMap<String, u64>> {
        self.blocking_read(|db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(COUNTERS)?;
            let mut out = BTreeMap::new();
            for row in t.iter()? {
                let (k, v) = row?;
                out.insert(k.value().to_string(), v.value());
            }
            Ok(out)
        })
        .await
    }

    async fn counters_with_prefix(&self, prefix: String) -> StoreResult<BTreeMap<String, u64>> {
        self.blocking_read(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(COUNTERS)?;
            let mut out = BTreeMap::new();
            for row in t.range(prefix.as_str()..)? {
                let (k, v) = row?;
                let k = k.value();
                if !k.starts_with(prefix.as_str()) {
                    break;
                }
                out.insert(k.to_string(), v.value());
            }
            Ok(out)
        })
        .await
    }

    async fn put_setting(&self, key: String, value: Vec<u8>) -> StoreResult<()> {
        submit_op(&self.tx, Op::Setting { key, value })
            .await?
            .done()
    }

    async fn settings(&self) -> StoreResult<BTreeMap<String, Vec<u8>>> {
        self.blocking_read(|db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(SETTINGS)?;
            let mut out = BTreeMap::new();
            for row in t.iter()? {
                let (k, v) = row?;
                out.insert(k.value().to_string(), v.value().to_vec());
            }
            Ok(out)
        })
        .await
    }

    fn watch_head(&self, stream: &StreamKey) -> watch::Receiver<u64> {
        let name = stream.to_string();
        if let Some(tx) = self.heads.get(&name) {
            return tx.subscribe();
        }
        let head = (|| -> Result<u64, ::redb::Error> {
            let Ok(db) = self.db() else { return Ok(0) };
            let txn = db.begin_read()?;
            let t = txn.open_table(HEADS)?;
            Ok(t.get(name.as_str())?.map(|v| v.value()).unwrap_or(0))
        })()
        .unwrap_or(0);
        // The writer may have created the entry meanwhile; `entry` keeps whichever is first,
        // and the writer only ever raises the value.
        let tx = self
            .heads
            .entry(name)
            .or_insert_with(|| watch::channel(head).0);
        tx.send_if_modified(|h| {
            if head > *h {
                *h = head;
                true
            } else {
                false
            }
        });
        tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance::{self, Open};
    use super::*;

    /// Rows written before payloads were serialised as bytes still read, and the new rows are
    /// the same bytes: postcard writes a sequence of u8 and a byte string alike.
    #[test]
    fn payloads_as_bytes_keep_the_stored_encoding() {
        #[derive(Serialize)]
        struct Before {
            receipt: ReceiptRecord,
            completed: bool,
            digest: Vec<u8>,
            payload: Vec<u8>,
            summary: Option<Vec<u8>>,
        }
        let receipt = ReceiptRecord {
            receipt_id: "R-1".into(),
            accepted_at_ms: 7,
            seq: 1,
        };
        let before = Before {
            receipt: receipt.clone(),
            completed: false,
            digest: vec![1; 32],
            payload: (0..=255).collect(),
            summary: Some(vec![9, 8, 7]),
        };
        let old = postcard::to_allocvec(&before).unwrap();
        let read: StoredSubmission = decode(&old, || "test".into()).unwrap();
        assert_eq!(read.payload, before.payload);
        assert_eq!(read.summary, before.summary);
        assert_eq!(read.receipt, receipt);
        assert_eq!(postcard::to_allocvec(&read).unwrap(), old);
    }

    #[cfg(unix)]
    #[test]
    fn the_data_directory_and_file_are_the_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        // A new directory, nested, and an existing one left readable by others.
        let fresh = dir.path().join("a/b/data");
        let existing = dir.path().join("old");
        std::fs::create_dir(&existing).unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o755)).unwrap();
        for d in [&fresh, &existing] {
            drop(RedbStore::open(d).unwrap());
            assert_eq!(mode(d), 0o700, "{}", d.display());
            assert_eq!(mode(&d.join("interop.redb")), 0o600, "{}", d.display());
        }
    }

    fn open() -> Open {
        |dir| {
            let dir = dir.to_path_buf();
            Box::pin(async move {
                // A reopen may race the previous writer thread's exit.
                for _ in 0..100 {
                    if let Ok(s) = RedbStore::open(&dir) {
                        return Arc::new(s) as DynStore;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                panic!("store did not reopen");
            })
        }
    }

    macro_rules! conformance {
        ($($name:ident),*) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let dir = tempfile::tempdir().unwrap();
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

    /// A store written before receipts were indexed by acceptance (no `received` rows) is
    /// indexed when it is opened, so its old receipts expire too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_from_before_the_acceptance_index_gets_one_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let s = open()(dir.path()).await;
        for (tcn, at) in [("T-1", 1_000), ("T-2", 1_100), ("T-3", 3_000)] {
            s.accept(key(tcn), vec![1], at).await.unwrap();
            assert!(s.complete(key(tcn), Completion::default()).await.unwrap());
        }
        drop(s);
        let path = dir.path().join("interop.redb");
        let db = (0..100)
            .find_map(|_| {
                // (The writer thread lets go of the file a moment after the store is dropped.)
                std::thread::sleep(std::time::Duration::from_millis(20));
                Database::create(&path).ok()
            })
            .expect("the file reopens");
        let txn = db.begin_write().unwrap();
        assert!(txn.delete_table(RECEIVED).unwrap());
        txn.commit().unwrap();
        drop(db);
        let s = open()(dir.path()).await;
        assert_eq!(s.expire_receipts(2_000).await.unwrap(), 2);
        assert!(s.submission(key("T-3")).await.unwrap().is_some());
    }

    /// A full disk: nothing is acknowledged while writes fail, what was stored stays, and the
    /// store accepts again by itself once space returns.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_disk_refuses_writes_and_recovers_when_space_returns() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(IoFaults::default());
        let store = RedbStore::open_with_faults(dir.path(), faults.clone()).unwrap();
        assert!(matches!(
            store.accept(key("TX-BEFORE-0001"), b"a".to_vec(), 1).await,
            Ok(Accepted::New(_))
        ));

        faults.set_failing(true);
        for tcn in ["TX-DURING-0001", "TX-DURING-0002"] {
            match store.accept(key(tcn), b"b".to_vec(), 2).await {
                Err(StoreError::Unavailable(m)) => assert!(!m.is_empty()),
                other => panic!("a write on a full disk was answered {other:?}"),
            }
        }
        let stream = StreamKey::Office("HOU".into());
        assert!(store.ack(stream.clone(), 0).await.is_err());

        faults.set_failing(false);
        assert!(matches!(
            store.accept(key("TX-AFTER-0001"), b"c".to_vec(), 3).await,
            Ok(Accepted::New(_))
        ));
        let held = |tcn: &'static str| {
            let store = &store;
            async move { store.submission(key(tcn)).await.unwrap().is_some() }
        };
        assert!(held("TX-BEFORE-0001").await);
        assert!(!held("TX-DURING-0001").await, "refused, so not stored");
        assert!(!held("TX-DURING-0002").await);
        assert!(held("TX-AFTER-0001").await);
        let pending: Vec<String> = store
            .unfinished()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.key.tcn)
            .collect();
        assert_eq!(pending, ["TX-BEFORE-0001", "TX-AFTER-0001"]);
        // Acceptance order continues without a gap or a reuse.
        let seq = |tcn: &'static str| {
            let store = &store;
            async move {
                store
                    .submission(key(tcn))
                    .await
                    .unwrap()
                    .unwrap()
                    .receipt
                    .seq
            }
        };
        assert_eq!(seq("TX-AFTER-0001").await, seq("TX-BEFORE-0001").await + 1);
    }
}
