//! The single writer thread of the embedded store: group commit (many queued ops in one
//! transaction, one fsync), each op validated inside the batch, and the reopen after a storage
//! error (see the module documentation of [`super`]).

use super::*;
use std::collections::HashMap;

/// The single writer: owns all write transactions.
pub(super) struct Writer {
    pub(super) db: SharedDb,
    pub(super) file: DbFile,
    /// A write failed: reopen the database before the next batch.
    pub(super) broken: bool,
    pub(super) heads: Arc<dashmap::DashMap<String, watch::Sender<u64>>>,
    pub(super) mode: CommitMode,
    /// Transactions committed, and the ops they carried (for `/metrics`).
    pub(super) commits: Arc<std::sync::atomic::AtomicU64>,
    pub(super) ops: Arc<std::sync::atomic::AtomicU64>,
}

/// Whether a view's batch ends with its entry's checkpoint (see [`CommitMode::View`]).
fn ends_an_entry(batch: &[WriteOp]) -> bool {
    matches!(batch.last(), Some(w) if matches!(w.op, Op::Checkpoint { .. }))
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

    pub(super) fn run(mut self, mut rx: mpsc::Receiver<WriteOp>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            match self.mode {
                CommitMode::View => {
                    // A view commits whole log entries: every op through the entry's
                    // checkpoint, which its follower sends right behind them (see
                    // [`CommitMode::View`]).
                    while !ends_an_entry(&batch) {
                        match rx.blocking_recv() {
                            Some(op) => batch.push(op),
                            None => break,
                        }
                    }
                    if !ends_an_entry(&batch) {
                        // Closed mid-entry: half an entry is never committed.
                        batch
                            .into_iter()
                            .map(Self::refuse)
                            .for_each(|a| send_answer(a, None));
                        return;
                    }
                }
                mode => {
                    let max_batch = if mode == CommitMode::PerOp {
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
                    self.commits
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.ops
                        .fetch_add(answers.len() as u64, std::sync::atomic::Ordering::Relaxed);
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
        // A view commits without sync but for its checkpoints (see [`CommitMode::View`]).
        let unsynced = match self.mode {
            CommitMode::NoSync => true,
            CommitMode::View => !batch
                .iter()
                .any(|w| matches!(w.op, Op::Checkpoint { durable: true, .. })),
            CommitMode::Group | CommitMode::PerOp => false,
        };
        if unsynced && let Err(e) = txn.set_durability(::redb::Durability::None) {
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
    received: ::redb::Table<'t, u64, &'static str>,
    log: ::redb::Table<'t, (&'static str, u64), &'static [u8]>,
    heads: ::redb::Table<'t, &'static str, u64>,
    acks: ::redb::Table<'t, &'static str, u64>,
    counters: ::redb::Table<'t, &'static str, u64>,
    settings: ::redb::Table<'t, &'static str, &'static [u8]>,
    once: ::redb::Table<'t, &'static str, &'static [u8]>,
    meta: ::redb::Table<'t, &'static str, u64>,
    ack_times: ::redb::Table<'t, (&'static str, u64), i64>,
    append_stamps: ::redb::Table<'t, (&'static str, u64), i64>,
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
            received: txn.open_table(RECEIVED)?,
            log: txn.open_table(LOG)?,
            heads: txn.open_table(HEADS)?,
            acks: txn.open_table(ACKS)?,
            counters: txn.open_table(COUNTERS)?,
            settings: txn.open_table(SETTINGS)?,
            once: txn.open_table(ONCE)?,
            meta: txn.open_table(META)?,
            ack_times: txn.open_table(ACK_TIMES)?,
            append_stamps: txn.open_table(APPEND_STAMPS)?,
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
            } => {
                let digest = digest(&payload);
                self.accept(&key, payload, digest, now_ms, &owner)?
                    .map(Outcome::Accepted)
            }
            Op::AcceptSealed {
                key,
                sealed,
                digest,
                now_ms,
                owner,
            } => self
                .accept(&key, sealed, digest, now_ms, &owner)?
                .map(Outcome::Accepted),
            Op::Complete { key, completion } => self
                .complete(&key, completion, new_heads)?
                .map(Outcome::Completed),
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
            Op::Expire {
                appended_before_ms,
                now_ms,
            } => Ok(Outcome::Compacted(self.expire(appended_before_ms, now_ms)?)),
            Op::ExpireReceipts { accepted_before_ms } => Ok(Outcome::Compacted(
                self.expire_receipts(accepted_before_ms)?,
            )),
            Op::PruneDisclosures { through } => {
                Ok(Outcome::Compacted(self.prune_disclosures(through)?))
            }
            Op::Requeue { .. } => Ok(Outcome::Done),
            Op::Checkpoint { log, applied, .. } => {
                self.meta.insert(VIEW_LOG, log)?;
                self.meta.insert(VIEW_APPLIED, applied)?;
                Ok(Outcome::Done)
            }
        })
    }

    /// The inner result is the caller's answer (a conflict refuses only this op); the outer
    /// one is a storage failure that fails the whole batch.
    /// Accepts `payload` (stored as given: sealed, on the shared log) under `key`, unless the
    /// key is held: then a duplicate if `digest` (of the payload in the clear) is the one held,
    /// a conflict if not.
    fn accept(
        &mut self,
        key: &SubmissionKey,
        payload: Vec<u8>,
        digest: Vec<u8>,
        now_ms: i64,
        owner: &str,
    ) -> Result<StoreResult<Accepted>, ::redb::Error> {
        let k = key.to_string();
        if let Some(v) = self.subs.get(k.as_str())? {
            let s: StoredSubmission = match decode(v.value(), || format!("submission {k}")) {
                Ok(s) => s,
                // Refuses this op only: the rest of the batch commits.
                Err(e) => return Ok(Err(e)),
            };
            return Ok(if s.digest == digest {
                Ok(Accepted::Duplicate(s.receipt))
            } else {
                Err(StoreError::Conflict)
            });
        }
        let seq = self.meta.get("next_seq")?.map(|v| v.value()).unwrap_or(1);
        self.meta.insert("next_seq", seq + 1)?;
        // Receipts are numbered per bureau: a bureau learns its own volume from them, never
        // another's (numbered by the global `seq` they were a side channel, issue 27).
        let counter = format!("next_receipt/{}", key.bureau);
        let n = self
            .meta
            .get(counter.as_str())?
            .map(|v| v.value())
            .unwrap_or(1);
        self.meta.insert(counter.as_str(), n + 1)?;
        let receipt = ReceiptRecord {
            receipt_id: format!("RCPT-{}-{n:010}", key.bureau),
            accepted_at_ms: now_ms,
            seq,
        };
        let stored = StoredSubmission {
            receipt: receipt.clone(),
            completed: false,
            digest,
            payload,
            summary: None,
        };
        let bytes = postcard::to_allocvec(&stored).expect("serialisable record");
        self.subs.insert(k.as_str(), bytes.as_slice())?;
        self.pending.insert(seq, k.as_str())?;
        self.received.insert(seq, k.as_str())?;
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
    ) -> Result<StoreResult<bool>, ::redb::Error> {
        let k = key.to_string();
        let mut stored: StoredSubmission = match self.subs.get(k.as_str())? {
            Some(v) => match decode(v.value(), || format!("submission {k}")) {
                Ok(s) => s,
                // Refuses this op only: the submission stays pending, its processing is
                // retried and logged each time, and the rest of the batch commits.
                Err(e) => return Ok(Err(e)),
            },
            None => return Ok(Ok(false)),
        };
        if stored.completed {
            return Ok(Ok(false));
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
        Ok(Ok(true))
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
        let streams = stream_names(&self.heads, "")?;
        trim(
            &mut self.log,
            &mut self.ack_times,
            &streams,
            acked_before_ms,
        )
    }

    /// Bureau retention by age (see [`Store::expire`]): removes the events of bureau streams
    /// covered by a stamp older than `appended_before_ms`, then stamps each bureau stream whose
    /// head moved with `now_ms` — at most once per thousandth of the period, so a stream keeps
    /// about a thousand stamps however often this runs. Stamping after trimming means a call
    /// never removes what it has just stamped.
    fn expire(&mut self, appended_before_ms: i64, now_ms: i64) -> Result<u64, ::redb::Error> {
        let streams = stream_names(&self.heads, BUREAU_PREFIX)?;
        let removed = trim(
            &mut self.log,
            &mut self.append_stamps,
            &streams,
            appended_before_ms,
        )?;
        let granule = now_ms.saturating_sub(appended_before_ms).max(0) / STAMPS_PER_PERIOD;
        for (s, head) in &streams {
            let s = s.as_str();
            let last = self
                .append_stamps
                .range((s, 0)..=(s, u64::MAX))?
                .next_back()
                .transpose()?
                .map(|(k, at)| (k.value().1, at.value()));
            // A clock that went back waits until it passes the last stamp (the difference is
            // negative): stamps never go back, so a stamp never understates an event's age.
            let due = match last {
                None => *head > 0,
                Some((cursor, at)) => *head > cursor && now_ms.saturating_sub(at) >= granule,
            };
            if due {
                self.append_stamps.insert((s, *head), now_ms)?;
            }
        }
        Ok(removed)
    }

    /// Receipt retention (see [`Store::expire_receipts`]): reads the oldest acceptances, at
    /// most [`COMPACT_LIMIT`], stops at the first accepted at or after `accepted_before_ms`,
    /// and forgets the completed ones without an identification; a pending one, or an
    /// identification, stays (read again by the next call).
    fn expire_receipts(&mut self, accepted_before_ms: i64) -> Result<u64, ::redb::Error> {
        let mut forget = Vec::new();
        for row in self.received.iter()?.take(COMPACT_LIMIT) {
            let (seq, k) = row?;
            let (seq, k) = (seq.value(), k.value().to_string());
            let Some(v) = self.subs.get(k.as_str())? else {
                forget.push((seq, k));
                continue;
            };
            // An unreadable record is kept (and logged where it is read).
            let Ok(s) = decode::<StoredSubmission>(v.value(), || format!("submission {k}")) else {
                continue;
            };
            drop(v);
            if s.receipt.accepted_at_ms >= accepted_before_ms {
                break;
            }
            if s.completed && s.summary.is_none() {
                forget.push((seq, k));
            }
        }
        let mut forgotten = 0;
        for (seq, k) in forget {
            self.received.remove(seq)?;
            forgotten += u64::from(self.subs.remove(k.as_str())?.is_some());
        }
        if forgotten > 0 {
            self.add_counter("receipts_expired", forgotten)?;
        }
        Ok(forgotten)
    }

    /// Removes up to [`COMPACT_LIMIT`] of the oldest disclosure records (none above
    /// `through`) and their index rows; the archive pass sends this only once they are in a
    /// durable segment. Sequence numbers are not reused: `next_disclosure` is untouched.
    fn prune_disclosures(&mut self, through: u64) -> Result<u64, ::redb::Error> {
        let mut rows = Vec::new();
        for row in self.disclosures.range(..=through)?.take(COMPACT_LIMIT) {
            let (k, v) = row?;
            let seq = k.value();
            // An unreadable row's index rows cannot be named; the listing skips index rows
            // whose record is gone, so the row still goes.
            let d: Option<Disclosure> = decode(v.value(), || format!("disclosure {seq}")).ok();
            rows.push((seq, d));
        }
        for (seq, d) in &rows {
            self.disclosures.remove(*seq)?;
            if let Some(d) = d {
                self.disclosures_by_tcn.remove((d.tcn.as_str(), *seq))?;
                self.disclosures_by_recipient
                    .remove((d.recipient.as_str(), *seq))?;
            }
        }
        if let Some((last, _)) = rows.last() {
            let before = self
                .meta
                .get(ARCHIVED_THROUGH)?
                .map(|v| v.value())
                .unwrap_or(0);
            self.meta.insert(ARCHIVED_THROUGH, before.max(*last))?;
        }
        Ok(rows.len() as u64)
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

/// Bureau streams' names in the store's tables (see `StreamKey`'s `Display`).
pub(super) const BUREAU_PREFIX: &str = "bureau/";
/// Stamps per stream per retention period (see `Tables::expire`).
const STAMPS_PER_PERIOD: i64 = 1_000;
/// META key: the last disclosure seq pruned after archiving.
pub(super) const ARCHIVED_THROUGH: &str = "disclosures_archived_through";

/// The streams whose names start with `prefix`, with their heads: a few hundred rows at most
/// (one per field office and bureau), never one per event.
fn stream_names(
    heads: &::redb::Table<'_, &'static str, u64>,
    prefix: &str,
) -> Result<Vec<(String, u64)>, ::redb::Error> {
    let mut out = Vec::new();
    for row in heads.range(prefix..)? {
        let (k, v) = row?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.push((k.value().to_string(), v.value()));
    }
    Ok(out)
}

/// Retention's one step, for acknowledgements and append stamps alike: per stream, removes the
/// events at or below the highest cursor whose time in `times` is before `before_ms`, and the
/// time rows below the first event left. At most [`COMPACT_LIMIT`] events removed and as many
/// time rows read in all; each call makes progress, the rest go in the next.
///
/// Flat over history: a stream's time rows are read from its oldest and the scan stops at the
/// first that is not old enough (times rise with cursors; a clock that went back only stops
/// it early), so a call reads what it removes plus one row a stream — never the events or
/// acknowledgements still within the period, however many.
fn trim(
    log: &mut ::redb::Table<'_, (&'static str, u64), &'static [u8]>,
    times: &mut ::redb::Table<'_, (&'static str, u64), i64>,
    streams: &[(String, u64)],
    before_ms: i64,
) -> Result<u64, ::redb::Error> {
    let (mut events_left, mut rows_left) = (COMPACT_LIMIT, COMPACT_LIMIT);
    let mut removed = 0u64;
    for (s, _) in streams {
        if events_left == 0 || rows_left == 0 {
            break;
        }
        let s = s.as_str();
        let mut old = Vec::new();
        for row in times.range((s, 0)..=(s, u64::MAX))?.take(rows_left) {
            let (k, at) = row?;
            if at.value() >= before_ms {
                break;
            }
            old.push(k.value().1);
        }
        rows_left = rows_left.saturating_sub(old.len().max(1));
        let Some(&upto) = old.last() else {
            continue;
        };
        let events: Vec<u64> = log
            .range((s, 0)..=(s, upto))?
            .take(events_left)
            .map(|r| r.map(|(k, _)| k.value().1))
            .collect::<Result<_, _>>()?;
        for c in &events {
            log.remove((s, *c))?;
        }
        events_left -= events.len();
        removed += events.len() as u64;
        // A time row is spent once every event at or below it is gone; the newest old row
        // stays, so the next call finds this stream's cut at once.
        let first_left = log
            .range((s, 0)..=(s, upto))?
            .next()
            .transpose()?
            .map_or(upto, |(k, _)| k.value().1.min(upto));
        for c in old.into_iter().filter(|c| *c < first_left) {
            times.remove((s, c))?;
        }
    }
    Ok(removed)
}
