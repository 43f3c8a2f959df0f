//! The durable log behind the gateway: receipts, pipeline progress and the ordered outbound
//! streams (one per field office, one per bureau) with their cursors.
//!
//! # Contract of [`Store`] (every backend must keep it)
//! - **Durability**: a method returns `Ok` only after its effect is on stable storage. A
//!   receipt handed to a bureau is therefore never lost.
//! - **Idempotency by TCN**: [`Store::accept`] of a `(bureau, tcn)` already held returns the
//!   original receipt marked duplicate if the payload is byte-identical, and
//!   [`StoreError::Conflict`] if it differs; it never records a second submission.
//!   [`Store::complete`] of a submission already completed is a no-op returning `false`, so a
//!   submission's results are appended to the streams exactly once.
//! - **Atomic completion**: the events of one completion, the counters it moves and the
//!   "completed" mark are committed together or not at all.
//! - **Ordering**: each stream's cursors start at 1 and increase by one per event, in commit
//!   order; [`Store::read`] returns events with a cursor greater than the one given, in order.
//! - **Acks never go backwards** and cannot pass the stream's head.
//! - **Retention**: [`Store::compact`] removes only events at or below an acknowledged cursor
//!   whose acknowledgement is older than the cut-off; heads, acks and later cursors are
//!   unchanged, and a stream never acknowledged (a bureau's) is never compacted.
//! - **Bureau streams expire by age**: [`Store::expire`] removes only events of bureau streams,
//!   and of those only events appended before the cut-off; a field office's events, heads and
//!   later cursors are unchanged, so a reader asking for an older cursor gets the stream from
//!   the first event kept. Append times are recorded by `expire` itself, as a stamp of each
//!   bureau stream's head at the call's own clock (at most one stamp per stream per thousandth
//!   of the period `now_ms - appended_before_ms`), never by the write path: an event's time is
//!   the first stamp that covers it, so an event is never removed before it is older than the
//!   cut-off, and may outlive it by up to one stamp interval and one call.
//! - **Bounded steps**: one [`Store::compact`] or [`Store::expire`] call removes at most
//!   [`COMPACT_LIMIT`] events and reads at most as many time rows, whatever the history; a
//!   caller repeats while a call removes the limit. What a call costs follows what it removes.
//! - **Recovery**: [`Store::unfinished`] lists every accepted, not yet completed submission in
//!   acceptance order.
//! - **Disclosure audit is append-only**: [`Store::record_disclosures`] appends records with
//!   sequence numbers from 1, increasing by one in commit order, durably; nothing (compaction
//!   and expiry included) ever changes or removes one, with the one exception below.
//!   [`Store::disclosures`] pages through them in sequence order, filtered by TCN and/or
//!   recipient.
//! - **Archive before pruning**: [`Store::archive_disclosures`] (stores with a local directory
//!   only; see [`Store::archive_dir`]) removes the oldest records delivered before the cut-off,
//!   and only once they are in a segment file of the archive ([`archive`]) that is written,
//!   synced and renamed into place. A pass that stopped between the two finds its segment and
//!   prunes through it without writing a second copy: each record is archived exactly once.
//!   Sequence numbers are never reused, and [`Store::disclosures`] pages over what is kept.
//! - **Live heads**: [`Store::watch_head`] lets subscribers sleep until a stream grows, so
//!   live delivery needs no per-subscriber buffer: a subscriber always reads from the log at
//!   its own cursor, and a slow one costs reads, never memory or ingest speed.
//!
//! - **Usage**: [`Store::usage`] reports the file's size, the archive's, and the rows that grow
//!   with history (events kept and appended per kind of stream, disclosures kept and archived),
//!   at a cost that follows the number of streams, not of rows.
//!
//! The embedded backend is [`RedbStore`] (the default); [`NatsStore`] keeps the same contract
//! on a NATS JetStream stream shared by several gateway replicas (`--store nats://...`), except
//! the audit archive: its replicas hold no data directory of their own, and its log keeps
//! every entry anyway (see its module documentation).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

pub mod archive;
#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
mod nats;
mod redb;
#[cfg(any(test, feature = "test-util"))]
pub use nats::test_server::{self, nats_server_for_test};
pub use nats::{LogSnapshot, NatsOptions, NatsStore, SNAPSHOT_ENTRIES, nats_server_binary};
#[cfg(any(test, feature = "test-util"))]
pub use redb::IoFaults;
pub use redb::{CommitMode, DEFAULT_CACHE_BYTES, RedbStore};

/// An outbound stream: a field office's notifications or a bureau's responses.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum StreamKey {
    /// ICE field office, by code.
    Office(String),
    /// State identification bureau, by state code.
    Bureau(String),
    /// Civil-rights complaints, in the order they were filed (never acknowledged or expired:
    /// the index `ListComplaints` reads).
    Complaints,
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamKey::Office(c) => write!(f, "office/{c}"),
            StreamKey::Bureau(s) => write!(f, "bureau/{s}"),
            StreamKey::Complaints => f.write_str("complaints"),
        }
    }
}

/// A submission's identity in the store: TCNs are unique per bureau.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SubmissionKey {
    pub bureau: String,
    pub tcn: String,
}

impl fmt::Display for SubmissionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.bureau, self.tcn)
    }
}

/// What the store keeps of a receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptRecord {
    pub receipt_id: String,
    pub accepted_at_ms: i64,
    /// Acceptance order, from 1.
    pub seq: u64,
}

/// Result of [`Store::accept`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accepted {
    New(ReceiptRecord),
    Duplicate(ReceiptRecord),
}

/// A submission's stored state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmissionState {
    pub receipt: ReceiptRecord,
    pub completed: bool,
    /// What the completion chose to keep (the IDENT outcome, no biometrics), if any.
    pub summary: Option<Vec<u8>>,
}

/// Everything one finished submission produces, committed atomically.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Completion {
    /// Encoded events, appended in this order.
    pub events: Vec<(StreamKey, Vec<u8>)>,
    /// Counters to add to.
    pub counters: Vec<(String, u64)>,
    /// Kept with the submission once its payload is dropped (see [`SubmissionState::summary`]).
    pub summary: Option<Vec<u8>>,
}

/// Result of [`Store::append_once`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Once {
    /// The events were appended; this record is now held under the key.
    Appended,
    /// The key was already used: nothing appended; the record held under it.
    Existing(Vec<u8>),
}

/// What kind of result a disclosure delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DisclosureKind {
    /// The FBI criminal-history response (to the submitting bureau).
    CriminalHistory,
    /// The automated immigration response (to a bureau whose jurisdiction receives them).
    Immigration,
    /// A detainer (to the jail's bureau, and to the field office that issued it).
    Detainer,
    /// An IDENT outcome (to the covering field office).
    IdentOutcome,
    /// A submission's processing stage (GetStatus).
    Status,
    /// A recorded removal (to the field office that recorded it).
    Removal,
    /// A gallery read by the admin: a `MatcherService.Search`'s candidates, or the enrolled
    /// templates a `ListChanges` lists (the RPC says which).
    Gallery,
    /// A rap sheet read by the admin (`CriminalHistoryService.Check`).
    RapSheet,
    /// A field office's decision on an identification (to the office that made it).
    Decision,
    /// An LESC notice (to the office whose detainer it concerns, and to whoever gave it).
    LescNotice,
    /// A detainer review (to the office that made it; a lift also to the jail).
    DetainerReview,
    /// A civil-rights complaint (to CRCL, the admin, or the field office of its booking).
    Complaint,
    /// A complaint's flag on a detainer (to the office that issued it).
    ComplaintFlag,
}

/// One delivery of a result: who received which submission's result, when, through which RPC.
/// Ids only — never a payload, a FIN, a name or a determination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disclosure {
    /// When it was handed to the connection (Unix ms).
    pub at_ms: i64,
    /// The recipient's SPIFFE id, from its client certificate.
    pub recipient: String,
    /// The certificate serial (hex) the recipient presented; empty if unknown.
    pub serial: String,
    /// Full RPC name, e.g. `interop.v1.SubmissionService/StreamResponses`.
    pub rpc: String,
    /// The submitting bureau's state (TCNs are unique per bureau).
    pub state: String,
    pub tcn: String,
    pub kind: DisclosureKind,
    /// The stream cursor it was delivered at; 0 for unary answers.
    pub cursor: u64,
}

/// Which disclosures [`Store::disclosures`] returns: empty fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DisclosureFilter {
    pub tcn: String,
    pub recipient: String,
}

impl DisclosureFilter {
    pub fn matches(&self, d: &Disclosure) -> bool {
        (self.tcn.is_empty() || self.tcn == d.tcn)
            && (self.recipient.is_empty() || self.recipient == d.recipient)
    }
}

/// An accepted submission waiting for (or in) processing.
#[derive(Clone, Debug)]
pub struct Pending {
    pub key: SubmissionKey,
    pub receipt: ReceiptRecord,
    pub payload: Vec<u8>,
}

/// A pending submission without its payload: what the pipeline's backlog indexes (the payload
/// is read with [`Store::pending`] when a worker takes it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingKey {
    pub key: SubmissionKey,
    pub accepted_at_ms: i64,
    /// The stored payload's size.
    pub bytes: u64,
}

impl PendingKey {
    pub fn of(p: &Pending) -> Self {
        PendingKey {
            key: p.key.clone(),
            accepted_at_ms: p.receipt.accepted_at_ms,
            bytes: p.payload.len() as u64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The TCN is held with a different payload.
    #[error("transaction control number already used for a different submission")]
    Conflict,
    #[error("acknowledged cursor {cursor} is beyond the stream head {head}")]
    AckBeyondHead { cursor: u64, head: u64 },
    /// Storage failed; nothing was acknowledged.
    #[error("durable store unavailable: {0}")]
    Unavailable(String),
    #[error("durable store is shutting down")]
    Closed,
    /// A stored record that does not decode (`what` names the table and key, never its
    /// contents). Reported to the caller and logged; the store itself carries on.
    #[error("stored record cannot be read: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Most events one [`Store::compact`] or [`Store::expire`] call removes (and most disclosure
/// records one pruning step removes), so a retention step never holds the writer long: the
/// rest go in the next call.
pub const COMPACT_LIMIT: usize = 10_000;

/// A segment of the disclosure audit moved to the archive by [`Store::archive_disclosures`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archived {
    /// The segment file and the sequence numbers it holds.
    pub segment: archive::Segment,
    /// Records removed from the store by this call.
    pub pruned: u64,
    /// `false`: the segment was already complete (a pass stopped between writing and
    /// pruning); this call only pruned through it.
    pub written: bool,
}

/// What the store holds, for `/metrics`: the figures that grow with history, so an operator
/// sees retention bound them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreUsage {
    /// Size of the database file; `None` for a store held in memory.
    pub file_bytes: Option<u64>,
    /// Segments of the disclosure archive, and their bytes.
    pub archive_segments: u64,
    pub archive_bytes: u64,
    /// Events held, per kind of stream.
    pub office_events_kept: u64,
    pub bureau_events_kept: u64,
    /// Events ever appended (the sum of heads), per kind of stream.
    pub office_events_appended: u64,
    pub bureau_events_appended: u64,
    /// Disclosure records held, and moved to the archive.
    pub disclosures_kept: u64,
    pub disclosures_archived: u64,
    /// Submissions held (pending or completed, until their receipts expire), and ever
    /// forgotten by receipt retention.
    pub receipts_kept: u64,
    pub receipts_expired: u64,
}

/// The durable log. See the module documentation for the contract.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    async fn accept(
        &self,
        key: SubmissionKey,
        payload: Vec<u8>,
        now_ms: i64,
    ) -> StoreResult<Accepted>;
    async fn complete(&self, key: SubmissionKey, completion: Completion) -> StoreResult<bool>;
    /// Appends `events` and stores `record` under `once_key`, atomically, unless the key is
    /// already held — then nothing changes and the held record is returned. (Detainers: one
    /// per submission, however often a field office asks.)
    async fn append_once(
        &self,
        once_key: String,
        record: Vec<u8>,
        completion: Completion,
    ) -> StoreResult<Once>;
    /// The record [`Store::append_once`] holds under `once_key`, if any.
    async fn once_record(&self, once_key: String) -> StoreResult<Option<Vec<u8>>>;
    async fn submission(&self, key: SubmissionKey) -> StoreResult<Option<SubmissionState>>;
    async fn unfinished(&self) -> StoreResult<Vec<Pending>>;
    /// The accepted, not yet completed submission `key`, with its payload; `None` if it is
    /// completed or was never accepted.
    async fn pending(&self, key: SubmissionKey) -> StoreResult<Option<Pending>>;
    async fn read(
        &self,
        stream: StreamKey,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<(u64, Vec<u8>)>>;
    async fn ack(&self, stream: StreamKey, cursor: u64) -> StoreResult<u64>;
    async fn acked(&self, stream: StreamKey) -> StoreResult<u64>;
    async fn counters(&self) -> StoreResult<BTreeMap<String, u64>>;
    /// The counters whose names start with `prefix`.
    async fn counters_with_prefix(&self, prefix: String) -> StoreResult<BTreeMap<String, u64>>;
    async fn put_setting(&self, key: String, value: Vec<u8>) -> StoreResult<()>;
    async fn settings(&self) -> StoreResult<BTreeMap<String, Vec<u8>>>;
    /// Appends disclosure records, durably and in order (append-only: see the contract).
    async fn record_disclosures(&self, records: Vec<Disclosure>) -> StoreResult<()>;
    /// Up to `limit` disclosures matching `filter` with a sequence number above `after`, in
    /// sequence order.
    async fn disclosures(
        &self,
        filter: DisclosureFilter,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<(u64, Disclosure)>>;
    /// Removes events acknowledged before `acked_before_ms` (Unix ms); returns how many (at
    /// most [`COMPACT_LIMIT`]).
    async fn compact(&self, acked_before_ms: i64) -> StoreResult<u64>;
    /// Removes bureau-stream events appended before `appended_before_ms`, then stamps each
    /// bureau stream's head with `now_ms` (see the contract); returns how many it removed (at
    /// most [`COMPACT_LIMIT`]).
    async fn expire(&self, appended_before_ms: i64, now_ms: i64) -> StoreResult<u64>;
    /// Forgets completed submissions without an identification (no summary) accepted before
    /// `accepted_before_ms` (Unix ms), oldest first: their receipts and digests. A repeat of
    /// such a TCN is then a new submission. A pending submission, or one that is an
    /// identification (enforcement and complaints name it by TCN, months later), is never
    /// forgotten. Returns how many it forgot (at most [`COMPACT_LIMIT`], reading at most as
    /// many rows: flat over history).
    async fn expire_receipts(&self, accepted_before_ms: i64) -> StoreResult<u64>;
    /// Where [`Store::archive_disclosures`] writes its segments; `None` for a store that does
    /// not archive the audit.
    fn archive_dir(&self) -> Option<PathBuf> {
        None
    }
    /// Moves the oldest disclosure records delivered before `before_ms` (Unix ms), at most
    /// [`archive::SEGMENT_MAX`], to one archive segment, then removes them; `None` when none is
    /// due. Refused by stores without an [`Store::archive_dir`].
    async fn archive_disclosures(&self, before_ms: i64) -> StoreResult<Option<Archived>> {
        let _ = before_ms;
        Err(StoreError::Unavailable(
            "this store does not archive the disclosure audit (the embedded store does)".into(),
        ))
    }
    /// Disk and row figures for `/metrics`.
    async fn usage(&self) -> StoreResult<StoreUsage>;
    /// The current head cursor of a stream, updated after each commit.
    fn watch_head(&self, stream: &StreamKey) -> watch::Receiver<u64>;

    /// What this process resumes when it starts, in acceptance order, without payloads: every
    /// unfinished submission for a store only it writes; nothing for a store whose replicas
    /// share the pending work (its [`Store::work_feed`] hands it out).
    async fn resumable(&self) -> StoreResult<Vec<PendingKey>> {
        Ok(self
            .unfinished()
            .await?
            .iter()
            .map(PendingKey::of)
            .collect())
    }

    /// Replicated stores: a counter bumped whenever a setting changes (possibly at another
    /// replica), so policy and revocations can be reloaded. `None` when only this process
    /// writes settings.
    fn watch_settings(&self) -> Option<watch::Receiver<u64>> {
        None
    }

    /// Prometheus text for the backend's own figures (empty for the embedded store).
    fn render_metrics(&self) -> String {
        String::new()
    }

    /// Replicated stores whose replicas share the pending work: the feed of submissions this
    /// replica is handed to process, whichever replica receipted them (see [`WorkFeed`]).
    /// Taken once; `None` when this process processes what it receipts (the embedded store),
    /// or when it was taken already.
    fn work_feed(&self) -> Option<WorkFeed> {
        None
    }
}

/// Shared pending work (JetStream: a durable consumer of the log's accepts, shared by every
/// replica). A replica takes from `take` only while it has room, so what it does not take
/// stays in the log for the others; a replica that stops leaves what it took and did not
/// complete to the others.
pub struct WorkFeed {
    /// Submissions handed to this replica to process (pending when handed out).
    pub take: mpsc::Receiver<PendingKey>,
    /// Submissions this replica receipted that were completed (by any replica), so it stops
    /// counting them against its backlog budget.
    pub completed: mpsc::UnboundedReceiver<SubmissionKey>,
}

/// Shared handle.
pub type DynStore = Arc<dyn Store>;

/// One write as it is committed. The embedded writer applies it directly; the JetStream
/// backend first appends it to the shared log and every replica applies it in log order. So
/// applying one must be deterministic: it carries its own clock, never reads one.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Op {
    Accept {
        key: SubmissionKey,
        // As bytes, not a sequence of u8: the same postcard encoding, written and read in one
        // copy rather than byte by byte.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
        now_ms: i64,
        /// The replica meant to process it, in logs written before the shared work (empty
        /// since, and for the embedded store).
        owner: String,
    },
    Complete {
        key: SubmissionKey,
        completion: Completion,
    },
    Once {
        once_key: String,
        record: Vec<u8>,
        completion: Completion,
    },
    Ack {
        stream: StreamKey,
        cursor: u64,
        at_ms: i64,
    },
    Setting {
        key: String,
        value: Vec<u8>,
    },
    Compact {
        acked_before_ms: i64,
    },
    Disclose {
        records: Vec<Disclosure>,
    },
    /// A replica started (replicated stores only; older logs beat every 2 s).
    Heartbeat {
        replica: String,
        at_ms: i64,
    },
    /// Moves an unfinished submission from a replica that stopped beating to another; applied
    /// only if `from` still owns it. Written only by versions before the shared work (kept so
    /// their logs still decode and replay alike).
    Claim {
        key: SubmissionKey,
        from: String,
        to: String,
    },
    // New ops go last: a replicated log written by an earlier version still decodes.
    /// Bureau retention by age (see [`Store::expire`]).
    Expire {
        appended_before_ms: i64,
        now_ms: i64,
    },
    /// Removes up to [`COMPACT_LIMIT`] of the oldest disclosure records, none above
    /// `through`; only ever sent once they are archived.
    PruneDisclosures {
        through: u64,
    },
    /// An accept whose payload is sealed for the shared log (JetStream: see
    /// `nats::sealed`): `digest` is the SHA-256 of the payload in the clear, by which a resend
    /// is told from a conflict. Last, so logs written before it still decode.
    AcceptSealed {
        key: SubmissionKey,
        #[serde(with = "serde_bytes")]
        sealed: Vec<u8>,
        digest: Vec<u8>,
        now_ms: i64,
        owner: String,
    },
    /// Hands out again, as shared work, submissions accepted before the log had a work
    /// subject (JetStream: a log written by an earlier version); changes nothing in a view.
    Requeue {
        keys: Vec<SubmissionKey>,
    },
    /// A replica's view of a replicated log records that it holds every entry through
    /// `applied` of the log `log` identifies (JetStream: see `nats`), in the same commit as
    /// the entry's ops; `durable`: synced to disk with everything before it. Never in a log:
    /// only a view's own file holds it.
    Checkpoint {
        log: u64,
        applied: u64,
        durable: bool,
    },
    /// Receipt retention (see [`Store::expire_receipts`]).
    ExpireReceipts {
        accepted_before_ms: i64,
    },
}

/// What applying an [`Op`] answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Accepted(Accepted),
    Completed(bool),
    Once(Once),
    Acked(u64),
    Done,
    Compacted(u64),
    Claimed(bool),
}

fn unexpected(o: Outcome) -> StoreError {
    StoreError::Unavailable(format!("internal: unexpected store outcome {o:?}"))
}

impl Outcome {
    pub(crate) fn accepted(self) -> StoreResult<Accepted> {
        match self {
            Outcome::Accepted(a) => Ok(a),
            o => Err(unexpected(o)),
        }
    }
    pub(crate) fn completed(self) -> StoreResult<bool> {
        match self {
            Outcome::Completed(b) => Ok(b),
            o => Err(unexpected(o)),
        }
    }
    pub(crate) fn once(self) -> StoreResult<Once> {
        match self {
            Outcome::Once(o) => Ok(o),
            o => Err(unexpected(o)),
        }
    }
    pub(crate) fn acked(self) -> StoreResult<u64> {
        match self {
            Outcome::Acked(c) => Ok(c),
            o => Err(unexpected(o)),
        }
    }
    pub(crate) fn done(self) -> StoreResult<()> {
        match self {
            Outcome::Done => Ok(()),
            o => Err(unexpected(o)),
        }
    }
    pub(crate) fn compacted(self) -> StoreResult<u64> {
        match self {
            Outcome::Compacted(n) => Ok(n),
            o => Err(unexpected(o)),
        }
    }
}

/// A write waiting for the writer, with where to send its answer.
pub(crate) struct WriteOp {
    pub op: Op,
    pub reply: oneshot::Sender<StoreResult<Outcome>>,
}

/// Sends one op to a writer and waits for its answer.
pub(crate) async fn submit_op(tx: &mpsc::Sender<WriteOp>, op: Op) -> StoreResult<Outcome> {
    let (reply, rx) = oneshot::channel();
    tx.send(WriteOp { op, reply })
        .await
        .map_err(|_| StoreError::Closed)?;
    rx.await.map_err(|_| StoreError::Closed)?
}

/// Creates `dir` (and any missing parents) readable by its owner only, and makes an existing
/// `dir` so: a data directory holds tenprints, biographics and the disclosure audit, which
/// other users of the host must not read, whatever the umask.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        b.mode(0o700);
        b.create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    b.create(dir)
}

/// Makes the file at `path` readable and writable by its owner only (a store file, an archive
/// segment), whatever mode it was created or left with.
pub fn private_file(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

/// Opens the embedded default store in `dir` (page cache [`DEFAULT_CACHE_BYTES`]).
pub fn open_embedded(dir: &Path) -> StoreResult<DynStore> {
    Ok(Arc::new(RedbStore::open(dir)?))
}

/// Opens the store a `--store` value names: `embedded` (in `dir`) or `tls://HOST:PORT...`
/// (see [`NatsOptions::parse`]), with `cache_bytes` of page cache (the embedded file's, or a
/// NATS replica's view's, kept in `dir` if it is not empty).
pub async fn open_spec(
    spec: &str,
    dir: &Path,
    replica: Option<String>,
    cache_bytes: usize,
) -> anyhow::Result<DynStore> {
    if spec == "embedded" {
        return Ok(Arc::new(RedbStore::open_with(
            dir,
            CommitMode::Group,
            cache_bytes,
        )?));
    }
    if spec.starts_with("nats://") || spec.starts_with("tls://") {
        let mut options = NatsOptions::parse(spec)?;
        if let Some(r) = replica {
            options.replica = r;
        }
        options.view_cache_bytes = cache_bytes;
        // With a data directory, the replica keeps its view of the log there.
        if !dir.as_os_str().is_empty() {
            options.view_dir = Some(dir.to_path_buf());
        }
        return Ok(Arc::new(NatsStore::connect(options).await?));
    }
    anyhow::bail!(
        "--store: expected `embedded` or `tls://HOST:PORT[/STREAM][?replicas=N&ca=..&cert=..&key=..]`, got {spec:?}"
    )
}
