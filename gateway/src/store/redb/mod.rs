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
use ::redb::{Database, ReadableDatabase, ReadableTable, StorageBackend, TableDefinition};
use std::collections::HashMap;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// Most ops committed by one transaction; bounds the latency a batch adds to its first op.
const MAX_BATCH: usize = 512;
/// Depth of the queue in front of the writer; callers wait (backpressure) when it is full.
const QUEUE_DEPTH: usize = 4096;

/// "bureau/tcn" → postcard [`StoredSubmission`].
const SUBMISSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("submissions");
/// acceptance seq → "bureau/tcn", for submissions not yet completed.
const PENDING: TableDefinition<u64, &str> = TableDefinition::new("pending");
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
/// Most events one compaction removes, so it never holds the writer long; the rest go next time.
const COMPACT_LIMIT: usize = 50_000;
/// disclosure seq → postcard [`Disclosure`]. Append-only: nothing removes or rewrites a row.
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
/// "next_seq" → next acceptance seq; "next_disclosure" → next disclosure seq.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

#[derive(Serialize, Deserialize)]
struct StoredSubmission {
    receipt: ReceiptRecord,
    completed: bool,
    /// SHA-256 of the encoded submission: repeats are compared by it, because the payload
    /// itself is dropped once processing completes.
    digest: Vec<u8>,
    payload: Vec<u8>,
    summary: Option<Vec<u8>>,
}

fn digest(payload: &[u8]) -> Vec<u8> {
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

/// How the writer commits. The gateway always uses [`CommitMode::Group`]; the other two exist
/// so the ingest benchmark can show, in one run, what group commit buys and what durability
/// costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitMode {
    /// Many queued ops per transaction, one fsync per transaction (the default).
    Group,
    /// One op per transaction: one fsync per submission.
    PerOp,
    /// Group commit without fsync. **Not durable**: a receipt may be lost in a power cut.
    NoSync,
}

/// Fault injection for tests: while failing, every write, resize and sync of the database
/// file fails with "No space left on device", as a full disk would. Reads still work.
#[derive(Debug, Default)]
pub struct IoFaults {
    failing: AtomicBool,
}

impl IoFaults {
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    fn check(&self) -> std::io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            Err(std::io::Error::from_raw_os_error(28)) // ENOSPC
        } else {
            Ok(())
        }
    }
}

/// redb's file backend with [`IoFaults`] in front of its writes.
#[derive(Debug)]
struct FaultyFile {
    inner: ::redb::backends::FileBackend,
    faults: Arc<IoFaults>,
}

impl StorageBackend for FaultyFile {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.faults.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.faults.check()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.faults.check()?;
        self.inner.write(offset, data)
    }
    fn close(&self) -> std::io::Result<()> {
        self.inner.close()
    }
    fn try_lock_range(&self, a: Bound<u64>, b: Bound<u64>) -> Result<bool, ::redb::BackendError> {
        self.inner.try_lock_range(a, b)
    }
    fn try_lock_shared_range(
        &self,
        a: Bound<u64>,
        b: Bound<u64>,
    ) -> Result<bool, ::redb::BackendError> {
        self.inner.try_lock_shared_range(a, b)
    }
    fn lock_range(&self, a: Bound<u64>, b: Bound<u64>) -> Result<(), ::redb::BackendError> {
        self.inner.lock_range(a, b)
    }
    fn lock_shared_range(&self, a: Bound<u64>, b: Bound<u64>) -> Result<(), ::redb::BackendError> {
        self.inner.lock_shared_range(a, b)
    }
    fn unlock_range(&self, a: Bound<u64>, b: Bound<u64>) -> Result<(), ::redb::BackendError> {
        self.inner.unlock_range(a, b)
    }
    fn query_lock_range(&self, a: Bound<u64>, b: Bound<u64>) -> Result<bool, ::redb::BackendError> {
        self.inner.query_lock_range(a, b)
    }
}

/// Where the database file is and how to open it.
#[derive(Clone)]
struct DbFile {
    /// `None`: in memory (a replica's view of a replicated log; see `store::nats`).
    path: Option<PathBuf>,
    faults: Option<Arc<IoFaults>>,
}

impl DbFile {
    fn open(&self) -> StoreResult<Database> {
        let Some(path) = &self.path else {
            return ::redb::Builder::new()
                .create_with_backend(::redb::backends::InMemoryBackend::new())
                .map_err(unavailable);
        };
        match &self.faults {
            None => Database::create(path).map_err(unavailable),
            Some(faults) => {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(path)
                    .map_err(unavailable)?;
                let inner = ::redb::backends::FileBackend::new(file).map_err(unavailable)?;
                ::redb::Builder::new()
                    .create_with_backend(FaultyFile {
                        inner,
                        faults: faults.clone(),
                    })
                    .map_err(unavailable)
            }
        }
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
}

impl RedbStore {
    /// Opens (or creates) `dir/interop.redb` and starts the writer thread (group commit).
    pub fn open(dir: &Path) -> StoreResult<Self> {
        Self::open_with(dir, CommitMode::Group)
    }

    /// Like [`RedbStore::open`], committing as `mode` says.
    pub fn open_with(dir: &Path, mode: CommitMode) -> StoreResult<Self> {
        Self::open_file(dir, mode, None)
    }

    /// Like [`RedbStore::open`], with `faults` able to make the file's writes fail (tests).
    pub fn open_with_faults(dir: &Path, faults: Arc<IoFaults>) -> StoreResult<Self> {
        Self::open_file(dir, CommitMode::Group, Some(faults))
    }

    /// A store held in memory only, committing without sync: the materialised view a
    /// replica of a replicated log applies entries to (see `store::nats`). Not durable.
    pub(crate) fn open_in_memory() -> StoreResult<Self> {
        Self::open_db(
            DbFile {
                path: None,
                faults: None,
            },
            CommitMode::NoSync,
        )
    }

    /// Where this store's writer takes its ops.
    pub(crate) fn writer(&self) -> mpsc::Sender<WriteOp> {
        self.tx.clone()
    }

    fn open_file(dir: &Path, mode: CommitMode, faults: Option<Arc<IoFaults>>) -> StoreResult<Self> {
        std::fs::create_dir_all(dir).map_err(unavailable)?;
        let file = DbFile {
            path: Some(dir.join("interop.redb")),
            faults,
        };
        Self::open_db(file, mode)
    }

    fn open_db(file: DbFile, mode: CommitMode) -> StoreResult<Self> {
        let db = Arc::new(file.open()?);
        // Create every table up front so readers never meet a missing one.
        let txn = db.begin_write().map_err(unavailable)?;
        {
            txn.open_table(SUBMISSIONS).map_err(unavailable)?;
            txn.open_table(PENDING).map_err(unavailable)?;
            txn.open_table(LOG).map_err(unavailable)?;
            txn.open_table(HEADS).map_err(unavailable)?;
            txn.open_table(ACKS).map_err(unavailable)?;
            txn.open_table(COUNTERS).map_err(unavailable)?;
            txn.open_table(SETTINGS).map_err(unavailable)?;
            txn.open_table(META).map_err(unavailable)?;
            txn.open_table(ONCE).map_err(unavailable)?;
            txn.open_table(ACK_TIMES).map_err(unavailable)?;
            txn.open_table(DISCLOSURES).map_err(unavailable)?;
            txn.open_table(DISCLOSURES_BY_TCN).map_err(unavailable)?;
            txn.open_table(DISCLOSURES_BY_RECIPIENT)
                .map_err(unavailable)?;
            txn.open_table(OWNERS).map_err(unavailable)?;
            txn.open_table(HEARTBEATS).map_err(unavailable)?;
        }
        txn.commit().map_err(unavailable)?;
        let heads = Arc::new(dashmap::DashMap::new());
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let db: SharedDb = Arc::new(RwLock::new(Some(db)));
        let writer = Writer {
            db: db.clone(),
            file,
            broken: false,
            heads: heads.clone(),
            mode,
        };
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(unavailable)?;
        Ok(RedbStore { db, tx, heads })
    }

    fn db(&self) -> StoreResult<Arc<Database>> {
        self.db
            .read()
            .map_err(|_| recovering())?
            .clone()
            .ok_or_else(recovering)
    }

    /// Every unfinished submission in acceptance order, with the replica that owns it and
    /// when that replica last beat (replicated stores; empty owner for the embedded one).
    pub(crate) async fn unfinished_owned(
        &self,
    ) -> StoreResult<Vec<(Pending, String, Option<i64>)>> {
        self.blocking_read(|db| {
            let txn = db.begin_read()?;
            let pending = txn.open_table(PENDING)?;
            let subs = txn.open_table(SUBMISSIONS)?;
            let owners = txn.open_table(OWNERS)?;
            let beats = txn.open_table(HEARTBEATS)?;
            let mut out = Vec::new();
            for row in pending.iter()? {
                let (_, k) = row?;
                let k = k.value().to_string();
                let Some(v) = subs.get(k.as_str())? else {
                    continue;
                };
                let s: StoredSubmission = postcard::from_bytes(v.value()).expect("stored record");
                let (bureau, tcn) = k.split_once('/').expect("bureau/tcn key");
                let owner = owners
                    .get(k.as_str())?
                    .map(|v| v.value().to_string())
                    .unwrap_or_default();
                let beat = beats.get(owner.as_str())?.map(|v| v.value());
                out.push((
                    Pending {
                        key: SubmissionKey {
                            bureau: bureau.to_string(),
                            tcn: tcn.to_string(),
                        },
                        receipt: s.receipt,
                        payload: s.payload,
                    },
                    owner,
                    beat,
                ));
            }
            Ok(out)
        })
        .await
    }

    async fn blocking_read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, ::redb::Error> + Send + 'static,
    ) -> StoreResult<T> {
        let db = self.db()?;
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)
    }
}

#[tonic::async_trait]
impl Store for RedbStore {
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

    async fn submission(&self, key: SubmissionKey) -> StoreResult<Option<SubmissionState>> {
        let k = key.to_string();
        self.blocking_read(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(SUBMISSIONS)?;
            Ok(t.get(k.as_str())?.map(|v| {
                let s: StoredSubmission = postcard::from_bytes(v.value()).expect("stored record");
                SubmissionState {
                    receipt: s.receipt,
                    completed: s.completed,
                    summary: s.summary,
                }
            }))
        })
        .await
    }

    async fn unfinished(&self) -> StoreResult<Vec<Pending>> {
        self.blocking_read(|db| {
            let txn = db.begin_read()?;
            let pending = txn.open_table(PENDING)?;
            let subs = txn.open_table(SUBMISSIONS)?;
            let mut out = Vec::new();
            for row in pending.iter()? {
                let (_, k) = row?;
                let k = k.value().to_string();
                if let Some(v) = subs.get(k.as_str())? {
                    let s: StoredSubmission =
                        postcard::from_bytes(v.value()).expect("stored record");
                    let (bureau, tcn) = k.split_once('/').expect("bureau/tcn key");
                    out.push(Pending {
                        key: SubmissionKey {
                            bureau: bureau.to_string(),
                            tcn: tcn.to_string(),
                        },
                        receipt: s.receipt,
                        payload: s.payload,
                    });
                }
            }
            Ok(out)
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
            let decode = |seq: u64| -> Result<Option<Disclosure>, ::redb::Error> {
                Ok(rows
                    .get(seq)?
                    .map(|v| postcard::from_bytes(v.value()).expect("stored disclosure")))
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
                        if let Some(d) = decode(seq)?
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
                        let d: Disclosure =
                            postcard::from_bytes(v.value()).expect("stored disclosure");
                        out.push((k.value(), d));
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

/// The single writer: owns all write transactions.
struct Writer {
    db: SharedDb,
    file: DbFile,
    /// A write failed: reopen the database before the next batch.
    broken: bool,
    heads: Arc<dashmap::DashMap<String, watch::Sender<u64>>>,
    mode: CommitMode,
}

/// An op's answer, held until the batch is durable.
type Answer = (oneshot::Sender<StoreResult<Outcome>>, StoreResult<Outcome>);

fn send_answer((tx, r): Answer, failed: Option<&StoreError>) {
    let r = match failed {
        Some(e) => Err(StoreError::Unavailable(e.to_string())),
        None => r,
    };
    // A caller that went away no longer needs its answer; ignoring the send error is right.
    drop(tx.send(r));
}

impl Writer {
    /// Closes and reopens the database after a storage error (redb refuses everything after
    /// one). Readers get `Unavailable` meanwhile.
    fn reopen(&mut self) -> StoreResult<()> {
        let old = self.db.write().map_err(|_| recovering())?.take();
        if let Some(old) = old {
            // Readers hold clones only for the length of one read.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while Arc::strong_count(&old) > 1 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            drop(old);
        }
        let db = self.file.open()?;
        *self.db.write().map_err(|_| recovering())? = Some(Arc::new(db));
        self.broken = false;
        tracing::warn!("store reopened after a storage error; accepting again");
        Ok(())
    }

    fn run(mut self, mut rx: mpsc::Receiver<WriteOp>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            let max_batch = if self.mode == CommitMode::PerOp {
                1
            } else {
                MAX_BATCH
            };
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let mut new_heads: HashMap<String, u64> = HashMap::new();
            let result = match self.broken {
                true => match self.reopen() {
                    Ok(()) => self.apply(batch, &mut new_heads),
                    Err(e) => Err((batch.into_iter().map(Self::refuse).collect(), e)),
                },
                false => self.apply(batch, &mut new_heads),
            };
            match result {
                Ok(answers) => {
                    // Durable: publish the new heads first, then answer, so a caller that
                    // reads right after its answer sees its events.
                    for (stream, head) in new_heads {
                        let tx = self
                            .heads
                            .entry(stream)
                            .or_insert_with(|| watch::channel(0).0);
                        tx.send_if_modified(|h| {
                            if head > *h {
                                *h = head;
                                true
                            } else {
                                false
                            }
                        });
                    }
                    for a in answers {
                        send_answer(a, None);
                    }
                }
                Err((answers, e)) => {
                    self.broken = true;
                    tracing::error!(error = %e, ops = answers.len(), "store commit failed; batch refused");
                    for a in answers {
                        send_answer(a, Some(&e));
                    }
                }
            }
        }
    }

    /// Applies a batch in one transaction. On failure, returns the answers to be failed.
    #[allow(clippy::type_complexity)]
    fn apply(
        &self,
        batch: Vec<WriteOp>,
        new_heads: &mut HashMap<String, u64>,
    ) -> Result<Vec<Answer>, (Vec<Answer>, StoreError)> {
        let mut answers = Vec::with_capacity(batch.len());
        let db = match self.db.read().ok().and_then(|d| d.clone()) {
            Some(db) => db,
            None => return Err((batch.into_iter().map(Self::refuse).collect(), recovering())),
        };
        let mut txn = match db.begin_write() {
            Ok(t) => t,
            Err(e) => {
                let answers = batch.into_iter().map(Self::refuse).collect();
                return Err((answers, unavailable(e)));
            }
        };
        if self.mode == CommitMode::NoSync
            && let Err(e) = txn.set_durability(::redb::Durability::None)
        {
            let answers = batch.into_iter().map(Self::refuse).collect();
            return Err((answers, unavailable(e)));
        }
        let mut failure: Option<StoreError> = None;
        {
            let mut tables = match Tables::open(&txn) {
                Ok(t) => Some(t),
                Err(e) => {
                    failure = Some(unavailable(e));
                    None
                }
            };
            for op in batch {
                match tables.as_mut() {
                    Some(t) if failure.is_none() => match t.apply(op, new_heads) {
                        Ok(a) => answers.push(a),
                        Err((a, e)) => {
                            answers.push(a);
                            failure = Some(e);
                        }
                    },
                    _ => answers.push(Self::refuse(op)),
                }
            }
        }
        if let Some(e) = failure {
            drop(txn.abort());
            return Err((answers, e));
        }
        match txn.commit() {
            Ok(()) => Ok(answers),
            Err(e) => Err((answers, unavailable(e))),
        }
    }

    fn refuse(op: WriteOp) -> Answer {
        (op.reply, Err(StoreError::Unavailable("not applied".into())))
    }
}

struct Tables<'t> {
    subs: ::redb::Table<'t, &'static str, &'static [u8]>,
    pending: ::redb::Table<'t, u64, &'static str>,
    log: ::redb::Table<'t, (&'static str, u64), &'static [u8]>,
    heads: ::redb::Table<'t, &'static str, u64>,
    acks: ::redb::Table<'t, &'static str, u64>,
    counters: ::redb::Table<'t, &'static str, u64>,
    settings: ::redb::Table<'t, &'static str, &'static [u8]>,
    once: ::redb::Table<'t, &'static str, &'static [u8]>,
    meta: ::redb::Table<'t, &'static str, u64>,
    ack_times: ::redb::Table<'t, (&'static str, u64), i64>,
    disclosures: ::redb::Table<'t, u64, &'static [u8]>,
    disclosures_by_tcn: ::redb::Table<'t, (&'static str, u64), ()>,
    disclosures_by_recipient: ::redb::Table<'t, (&'static str, u64), ()>,
    owners: ::redb::Table<'t, &'static str, &'static str>,
    heartbeats: ::redb::Table<'t, &'static str, i64>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t ::redb::WriteTransaction) -> Result<Self, ::redb::Error> {
        Ok(Tables {
            subs: txn.open_table(SUBMISSIONS)?,
            pending: txn.open_table(PENDING)?,
            log: txn.open_table(LOG)?,
            heads: txn.open_table(HEADS)?,
            acks: txn.open_table(ACKS)?,
            counters: txn.open_table(COUNTERS)?,
            settings: txn.open_table(SETTINGS)?,
            once: txn.open_table(ONCE)?,
            meta: txn.open_table(META)?,
            ack_times: txn.open_table(ACK_TIMES)?,
            disclosures: txn.open_table(DISCLOSURES)?,
            disclosures_by_tcn: txn.open_table(DISCLOSURES_BY_TCN)?,
            disclosures_by_recipient: txn.open_table(DISCLOSURES_BY_RECIPIENT)?,
            owners: txn.open_table(OWNERS)?,
            heartbeats: txn.open_table(HEARTBEATS)?,
        })
    }

    fn apply(
        &mut self,
        op: WriteOp,
        new_heads: &mut HashMap<String, u64>,
    ) -> Result<Answer, (Answer, StoreError)> {
        let WriteOp { op, reply } = op;
        match self.apply_op(op, new_heads) {
            Ok(r) => Ok((reply, r)),
            Err(e) => Err(((reply, Err(unavailable(&e))), unavailable(e))),
        }
    }

    /// Applies one op. The inner result is the caller's answer (a conflict refuses only this
    /// op); the outer one is a storage failure that fails the whole batch.
    fn apply_op(
        &mut self,
        op: Op,
        new_heads: &mut HashMap<String, u64>,
    ) -> Result<StoreResult<Outcome>, ::redb::Error> {
        Ok(match op {
            Op::Accept {
                key,
                payload,
                now_ms,
                owner,
            } => self
                .accept(&key, payload, now_ms, &owner)?
                .map(Outcome::Accepted),
            Op::Complete { key, completion } => Ok(Outcome::Completed(
                self.complete(&key, completion, new_heads)?,
            )),
            Op::Once {
                once_key,
                record,
                completion,
            } => Ok(Outcome::Once(
                self.once(&once_key, record, completion, new_heads)?,
            )),
            Op::Ack {
                stream,
                cursor,
                at_ms,
            } => self
                .ack(&stream.to_string(), cursor, at_ms)?
                .map(Outcome::Acked),
            Op::Compact { acked_before_ms } => {
                Ok(Outcome::Compacted(self.compact(acked_before_ms)?))
            }
            Op::Disclose { records } => {
                self.disclose(records)?;
                Ok(Outcome::Done)
            }
            Op::Setting { key, value } => {
                self.settings.insert(key.as_str(), value.as_slice())?;
                Ok(Outcome::Done)
            }
            Op::Heartbeat { replica, at_ms } => {
                self.heartbeats.insert(replica.as_str(), at_ms)?;
                Ok(Outcome::Done)
            }
            Op::Claim { key, from, to } => Ok(Outcome::Claimed(self.claim(&key, &from, &to)?)),
        })
    }

    /// The inner result is the caller's answer (a conflict refuses only this op); the outer
    /// one is a storage failure that fails the whole batch.
    fn accept(
        &mut self,
        key: &SubmissionKey,
        payload: Vec<u8>,
        now_ms: i64,
        owner: &str,
    ) -> Result<StoreResult<Accepted>, ::redb::Error> {
        let k = key.to_string();
        if let Some(v) = self.subs.get(k.as_str())? {
            let s: StoredSubmission = postcard::from_bytes(v.value()).expect("stored record");
            return Ok(if s.digest == digest(&payload) {
                Ok(Accepted::Duplicate(s.receipt))
            } else {
                Err(StoreError::Conflict)
            });
        }
        let seq = self.meta.get("next_seq")?.map(|v| v.value()).unwrap_or(1);
        self.meta.insert("next_seq", seq + 1)?;
        let receipt = ReceiptRecord {
            receipt_id: format!("RCPT-{seq:010}"),
            accepted_at_ms: now_ms,
            seq,
        };
        let stored = StoredSubmission {
            receipt: receipt.clone(),
            completed: false,
            digest: digest(&payload),
            payload,
            summary: None,
        };
        let bytes = postcard::to_allocvec(&stored).expect("serialisable record");
        self.subs.insert(k.as_str(), bytes.as_slice())?;
        self.pending.insert(seq, k.as_str())?;
        if !owner.is_empty() {
            self.owners.insert(k.as_str(), owner)?;
        }
        self.add_counter("submissions_accepted", 1)?;
        Ok(Ok(Accepted::New(receipt)))
    }

    fn complete(
        &mut self,
        key: &SubmissionKey,
        completion: Completion,
        new_heads: &mut HashMap<String, u64>,
    ) -> Result<bool, ::redb::Error> {
        let k = key.to_string();
        let mut stored: StoredSubmission = match self.subs.get(k.as_str())? {
            Some(v) => postcard::from_bytes(v.value()).expect("stored record"),
            None => return Ok(false),
        };
        if stored.completed {
            return Ok(false);
        }
        stored.summary = completion.summary.clone();
        self.append(completion, new_heads)?;
        stored.completed = true;
        // The payload (prints, biographics) is no longer needed once the results exist.
        stored.payload.clear();
        let bytes = postcard::to_allocvec(&stored).expect("serialisable record");
        self.subs.insert(k.as_str(), bytes.as_slice())?;
        self.pending.remove(stored.receipt.seq)?;
        self.owners.remove(k.as_str())?;
        Ok(true)
    }

    fn claim(&mut self, key: &SubmissionKey, from: &str, to: &str) -> Result<bool, ::redb::Error> {
        let k = key.to_string();
        let held = self.owners.get(k.as_str())?.map(|v| v.value() == from);
        if held != Some(true) {
            return Ok(false);
        }
        self.owners.insert(k.as_str(), to)?;
        Ok(true)
    }

    fn once(
        &mut self,
        once_key: &str,
        record: Vec<u8>,
        completion: Completion,
        new_heads: &mut HashMap<String, u64>,
    ) -> Result<Once, ::redb::Error> {
        if let Some(v) = self.once.get(once_key)? {
            return Ok(Once::Existing(v.value().to_vec()));
        }
        self.once.insert(once_key, record.as_slice())?;
        self.append(completion, new_heads)?;
        Ok(Once::Appended)
    }

    /// Appends a completion's events and counters (inside the caller's transaction).
    fn append(
        &mut self,
        completion: Completion,
        new_heads: &mut HashMap<String, u64>,
    ) -> Result<(), ::redb::Error> {
        for (stream, event) in completion.events {
            let name = stream.to_string();
            let head = match new_heads.get(&name) {
                Some(h) => *h,
                None => self
                    .heads
                    .get(name.as_str())?
                    .map(|v| v.value())
                    .unwrap_or(0),
            } + 1;
            self.log.insert((name.as_str(), head), event.as_slice())?;
            self.heads.insert(name.as_str(), head)?;
            new_heads.insert(name, head);
        }
        for (name, n) in completion.counters {
            self.add_counter(&name, n)?;
        }
        Ok(())
    }

    fn ack(
        &mut self,
        stream: &str,
        cursor: u64,
        at_ms: i64,
    ) -> Result<StoreResult<u64>, ::redb::Error> {
        let head = self.heads.get(stream)?.map(|v| v.value()).unwrap_or(0);
        if cursor > head {
            return Ok(Err(StoreError::AckBeyondHead { cursor, head }));
        }
        let current = self.acks.get(stream)?.map(|v| v.value()).unwrap_or(0);
        if cursor > current {
            self.acks.insert(stream, cursor)?;
            self.ack_times.insert((stream, cursor), at_ms)?;
        }
        Ok(Ok(current.max(cursor)))
    }

    /// Removes, per stream, the events at or below the highest cursor acknowledged before
    /// `acked_before_ms`, with the acknowledgement times that are no longer needed.
    fn compact(&mut self, acked_before_ms: i64) -> Result<u64, ::redb::Error> {
        let mut cut: BTreeMap<String, u64> = BTreeMap::new();
        for row in self.ack_times.iter()? {
            let (k, at) = row?;
            let (stream, cursor) = k.value();
            if at.value() < acked_before_ms {
                let c = cut.entry(stream.to_string()).or_default();
                *c = (*c).max(cursor);
            }
        }
        let mut removed = 0usize;
        for (stream, upto) in &cut {
            let s = stream.as_str();
            let limit = COMPACT_LIMIT.saturating_sub(removed);
            if limit == 0 {
                break;
            }
            let events: Vec<u64> = self
                .log
                .range((s, 0)..=(s, *upto))?
                .take(limit)
                .map(|r| r.map(|(k, _)| k.value().1))
                .collect::<Result<_, _>>()?;
            for c in &events {
                self.log.remove((s, *c))?;
            }
            removed += events.len();
            if self.log.range((s, 0)..=(s, *upto))?.next().is_none() {
                let times: Vec<u64> = self
                    .ack_times
                    .range((s, 0)..=(s, *upto))?
                    .map(|r| r.map(|(k, _)| k.value().1))
                    .collect::<Result<_, _>>()?;
                for c in times.into_iter().filter(|c| c < upto) {
                    self.ack_times.remove((s, c))?;
                }
            }
        }
        Ok(removed as u64)
    }

    /// Appends disclosure records with the next sequence numbers, and their index rows.
    fn disclose(&mut self, records: Vec<Disclosure>) -> Result<(), ::redb::Error> {
        let mut seq = self
            .meta
            .get("next_disclosure")?
            .map(|v| v.value())
            .unwrap_or(1);
        for d in records {
            let bytes = postcard::to_allocvec(&d).expect("serialisable disclosure");
            self.disclosures.insert(seq, bytes.as_slice())?;
            self.disclosures_by_tcn.insert((d.tcn.as_str(), seq), ())?;
            self.disclosures_by_recipient
                .insert((d.recipient.as_str(), seq), ())?;
            seq += 1;
        }
        self.meta.insert("next_disclosure", seq)?;
        Ok(())
    }

    fn add_counter(&mut self, name: &str, n: u64) -> Result<(), ::redb::Error> {
        let v = self.counters.get(name)?.map(|v| v.value()).unwrap_or(0);
        self.counters.insert(name, v + n)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance::{self, Open};
    use super::*;

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
