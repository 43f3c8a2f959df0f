//! The log trimmed behind a snapshot of the view, so the server's disk follows what the
//! system holds, not everything it was ever sent (DESIGN §3.9: retention bounds disk).
//!
//! **Snapshots.** A replica that keeps its view in a file (`--data`) writes a copy of it,
//! every [`SNAPSHOT_ENTRIES`] log entries it applies (`snapshot_entries=N` in the store spec;
//! 0: never), into a JetStream object store bucket beside the log (`<STREAM>_VIEW`, object
//! `view`): every table as one read transaction of the view sees them, so whole entries and
//! the checkpoint saying which (see `RedbStore::snapshot_to`). The view keeps serving while
//! the copy is made. A snapshot older than the one stored is not uploaded.
//!
//! **Trimming.** Then the entries the snapshot holds are removed from the stream, but never
//! one that is still needed:
//! - by a running replica: each says which entries its view holds (`<STREAM>_APPLIED`, a
//!   key-value bucket: replica → last entry applied), at its start, before it follows the log,
//!   and then every third of `stale_ms`; a position not renewed for [`POSITION_TTL`] expires
//!   (a replica stopped that long loads the snapshot when it starts again);
//! - by the shared work: no entry at or after the first one a bureau's work consumer has not
//!   acknowledged (its ack floor), and nothing at all while a bureau's work subject holds
//!   entries and has no consumer yet (its first entry would be unknown to the consumer made
//!   later).
//!
//! **Starting on a trimmed log.** A replica whose view (none, or its file) lacks entries the
//! stream no longer has loads the stored snapshot into its file and follows the log from the
//! entry after it. A replica without `--data` cannot (its view would be in memory) and says
//! so. A snapshot replaced by a newer one while it downloads is given up for the newer (its
//! chunks are removed with it). A trim decided from the positions read just before a
//! starting replica said where it stands can still pass its view: it then starts again, from
//! the newer snapshot (`NatsStore::connect`). If the log is trimmed past a running replica's
//! view (its position expired while it was cut off from the server), its follower stops at
//! the gap with an error rather than apply a log with entries missing: restarted, it loads
//! the snapshot.
//!
//! The disclosure audit is not trimmed away: the views keep every disclosure record (this
//! store never prunes them), and so does every snapshot.

use super::super::redb::RedbStore;
use super::{Counts, NatsOptions, Subjects, WORK_CONSUMER, lane_token};
use async_nats::jetstream::{self, kv, object_store, stream};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;

/// Entries applied between two snapshots of a replica's view, by default.
pub const SNAPSHOT_ENTRIES: u64 = 100_000;
/// How long a replica's position holds back trimming after it was last renewed.
pub(super) const POSITION_TTL: Duration = Duration::from_secs(600);
/// Loads of the snapshot tried before giving up, each one replaced by a newer one meanwhile.
const LOAD_TRIES: usize = 5;
/// A load that reads nothing for this long looks whether the snapshot was replaced...
const LOAD_LOOK_AFTER: Duration = Duration::from_millis(500);
/// ...and gives up after this long without a byte.
const LOAD_STALL: Duration = Duration::from_secs(60);
/// Most a snapshot may take (a million submissions' took 2 s) before it is given up...
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);
/// ...and a position's renewal, or a sweep of unnamed chunks.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a chunk of a snapshot no object names waits before it is removed (see
/// `Trim::sweep_orphans`); a snapshot is named within seconds of its first chunk.
const ORPHAN_AGE: Duration = if cfg!(test) {
    Duration::from_millis(300)
} else {
    Duration::from_secs(600)
};
/// The snapshot's object in the bucket.
const OBJECT: &str = "view";
/// Its metadata: the log it is of (see `view::log_id`) and the last entry it holds.
const META_LOG: &str = "log";
const META_APPLIED: &str = "applied";

/// The buckets beside the log, and what this replica knows of them.
pub(super) struct Trim {
    stream: stream::Stream,
    subjects: Subjects,
    objects: object_store::ObjectStore,
    positions: kv::Store,
    /// This replica's key in `positions`.
    me: String,
    /// The log's id (see `view::log_id`).
    log: u64,
    /// Entries between this replica's snapshots (0: none).
    every: u64,
    /// Where this replica writes its snapshot before uploading it (`None`: it makes none, its
    /// view being in memory).
    scratch: Option<PathBuf>,
    /// The last entry held by the newest snapshot this replica knows of.
    last: AtomicU64,
    /// Entries past `every` this replica waits before its snapshot (see `maybe_snapshot`).
    stagger: u64,
    /// A snapshot is being made, and its step (for the warning if it does not finish).
    busy: AtomicBool,
    step: std::sync::Mutex<&'static str>,
    /// The stream of the snapshot's object store, and the chunks in it that no object names,
    /// each with when this replica first saw it so (see `sweep_orphans`).
    chunks: stream::Stream,
    chunk_prefix: String,
    unnamed: std::sync::Mutex<(Instant, HashMap<String, Instant>)>,
}

/// What one snapshot did (its log line says the same).
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The last entry the snapshot holds.
    pub applied: u64,
    /// The stream's first entry after the trim (0: not trimmed, a bureau's work having no
    /// consumer yet).
    pub first_kept: u64,
    /// The snapshot's size, and the seconds it took to write, store and trim behind.
    pub bytes: u64,
    pub seconds: f64,
}

async fn objects_bucket(
    js: &jetstream::Context,
    o: &NatsOptions,
) -> anyhow::Result<object_store::ObjectStore> {
    let bucket = format!("{}_VIEW", o.stream);
    if let Ok(b) = js.get_object_store(&bucket).await {
        return Ok(b);
    }
    let made = js
        .create_object_store(object_store::Config {
            bucket: bucket.clone(),
            description: Some(
                "interop: the snapshot of the log's view it is trimmed behind".into(),
            ),
            storage: stream::StorageType::File,
            num_replicas: o.replicas.max(1),
            ..Default::default()
        })
        .await;
    match made {
        Ok(b) => Ok(b),
        // Made meanwhile by another replica.
        Err(e) => js
            .get_object_store(&bucket)
            .await
            .map_err(|_| anyhow::anyhow!("JetStream object store {bucket}: {e}")),
    }
}

impl Trim {
    pub(super) async fn open(
        js: &jetstream::Context,
        o: &NatsOptions,
        stream: stream::Stream,
        log: u64,
    ) -> anyhow::Result<Trim> {
        let objects = objects_bucket(js, o).await?;
        let chunks = js.get_stream(format!("OBJ_{}_VIEW", o.stream)).await?;
        let me = lane_token(&o.replica);
        // Replicas reach an entry at about the same moment: each waits up to a quarter of
        // `every` more, its own share (from its name), so one stores and the others see it.
        let stagger = me.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        }) % (o.snapshot_entries / 4 + 1);
        let last = stored(&objects, log)
            .await
            .map_or(0, |(_, applied)| applied);
        Ok(Trim {
            stream,
            subjects: o.subjects(),
            objects,
            positions: super::key_value_bucket(
                js,
                &format!("{}_APPLIED", o.stream),
                "interop: the last log entry each replica's view holds (trimming spares them)",
                o.replicas,
                POSITION_TTL,
            )
            .await?,
            me,
            log,
            every: o.snapshot_entries,
            scratch: o
                .view_dir
                .as_ref()
                .map(|d| d.join(format!("view-{}.snapshot.redb", o.stream))),
            last: AtomicU64::new(last),
            stagger,
            busy: AtomicBool::new(false),
            step: std::sync::Mutex::new("none yet"),
            chunks,
            chunk_prefix: format!("$O.{}_VIEW.C.", o.stream),
            unnamed: std::sync::Mutex::new((Instant::now(), HashMap::new())),
        })
    }

    /// The replica's upkeep pass: renews its position (its view holds every entry through
    /// `applied`) and, if one is due, makes a snapshot in a task of its own (a large view's
    /// copy takes a while; the upkeep's other work may not wait for it).
    pub(super) async fn upkeep(
        self: &Arc<Self>,
        view: &Arc<RedbStore>,
        applied: u64,
        counts: &Arc<Counts>,
    ) {
        match tokio::time::timeout(STEP_TIMEOUT, self.report(applied)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "this replica's position not renewed; trying again next time")
            }
            Err(_) => tracing::warn!(
                "this replica's position not renewed: the server did not answer; trying again next time"
            ),
        }
        if self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let (me, view, counts) = (self.clone(), view.clone(), counts.clone());
        tokio::spawn(async move {
            // No step may hold the next snapshots back for ever: each is bounded, and the
            // warning names the one that did not finish.
            match tokio::time::timeout(SNAPSHOT_TIMEOUT, me.maybe_snapshot(&view, applied, &counts))
                .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "snapshot of the log's view failed; trying again later")
                }
                Err(_) => tracing::warn!(
                    step = *me.step.lock().expect("step"),
                    minutes = SNAPSHOT_TIMEOUT.as_secs() / 60,
                    "snapshot of the log's view did not finish; given up, trying again later"
                ),
            }
            if me.scratch.is_some() {
                match tokio::time::timeout(STEP_TIMEOUT, me.sweep_orphans()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "sweep of unnamed snapshot chunks failed; trying again later")
                    }
                    Err(_) => tracing::warn!(
                        "sweep of unnamed snapshot chunks did not finish; trying again later"
                    ),
                }
            }
            me.busy.store(false, Ordering::Release);
        });
    }

    /// Says that this replica's view holds every entry through `applied` (and needs the
    /// ones after it).
    pub(super) async fn report(&self, applied: u64) -> anyhow::Result<()> {
        self.positions
            .put(&self.me, applied.to_string().into())
            .await
            .map_err(|e| anyhow::anyhow!("reporting this replica's position: {e}"))?;
        Ok(())
    }

    /// The stored snapshot, downloaded to `path` (replacing what is there); returns the last
    /// entry it holds, or `None` if none of this log is stored. A snapshot replaced by a newer
    /// one while it downloads (its chunks are removed with it) is given up for the newer.
    pub(super) async fn load(&self, path: &Path) -> anyhow::Result<Option<u64>> {
        let loading = path.with_extension("loading");
        for _ in 0..LOAD_TRIES {
            if stored(&self.objects, self.log).await.is_none() {
                return Ok(None);
            }
            let Some((bytes, applied)) = self.download(&loading).await? else {
                tracing::info!(
                    "the log's snapshot was replaced by a newer one while it loaded; loading that"
                );
                continue;
            };
            crate::store::private_file(&loading)?;
            tokio::fs::rename(&loading, path).await?;
            tracing::info!(
                applied,
                bytes,
                "the log's snapshot loaded as this replica's view"
            );
            return Ok(Some(applied));
        }
        anyhow::bail!("the log's snapshot was replaced {LOAD_TRIES} times while it loaded")
    }

    /// Downloads the stored snapshot to `to`: its size and the last entry it holds, or `None`
    /// if it was replaced meanwhile. (A read of a replaced snapshot would wait for ever for
    /// chunks that are gone, so a read that waits is a cue to look.)
    async fn download(&self, to: &Path) -> anyhow::Result<Option<(u64, u64)>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut object = self
            .objects
            .get(OBJECT)
            .await
            .map_err(|e| anyhow::anyhow!("the log's snapshot: {e}"))?;
        let info = object.info().clone();
        let applied = info
            .metadata
            .get(META_APPLIED)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("the log's snapshot does not say what it holds"))?;
        let mut file = tokio::fs::File::create(to).await?;
        let mut buf = vec![0; 256 << 10];
        let mut waited = Duration::ZERO;
        loop {
            match tokio::time::timeout(LOAD_LOOK_AFTER, object.read(&mut buf)).await {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => {
                    file.write_all(&buf[..n]).await?;
                    waited = Duration::ZERO;
                }
                Ok(Err(e)) => anyhow::bail!("reading the log's snapshot: {e}"),
                Err(_) => {
                    let now = self.objects.info(OBJECT).await.ok();
                    if now.is_none_or(|i| i.deleted || i.nuid != info.nuid) {
                        return Ok(None);
                    }
                    waited += LOAD_LOOK_AFTER;
                    anyhow::ensure!(
                        waited < LOAD_STALL,
                        "the log's snapshot: nothing read for {} s",
                        LOAD_STALL.as_secs()
                    );
                }
            }
        }
        file.sync_all().await?;
        Ok(Some((info.size as u64, applied)))
    }

    /// Once `applied` is [`SNAPSHOT_ENTRIES`] (or as set) past the newest snapshot: writes
    /// `view`'s, stores it, and trims the log behind it (see the module documentation).
    /// `None`: not due, or this replica makes none.
    pub(super) async fn maybe_snapshot(
        &self,
        view: &RedbStore,
        applied: u64,
        counts: &Counts,
    ) -> anyhow::Result<Option<Snapshot>> {
        let Some(scratch) = &self.scratch else {
            return Ok(None);
        };
        let due = |last: u64| self.every > 0 && applied >= last + self.every + self.stagger;
        if !due(self.last.load(Ordering::Relaxed)) {
            return Ok(None);
        }
        // Another replica's snapshot since counts too.
        let newest = stored(&self.objects, self.log)
            .await
            .map_or(0, |(_, applied)| applied);
        if !due(self.last.fetch_max(newest, Ordering::Relaxed).max(newest)) {
            return Ok(None);
        }
        self.snapshot(view, scratch, counts).await.map(Some)
    }

    /// The log's stream as it is now.
    pub(super) async fn log_info(&self) -> anyhow::Result<stream::Info> {
        Ok(self.stream.get_info().await?)
    }

    /// A snapshot now, due or not.
    pub(super) async fn snapshot_now(
        &self,
        view: &RedbStore,
        counts: &Counts,
    ) -> anyhow::Result<Snapshot> {
        let Some(scratch) = &self.scratch else {
            anyhow::bail!("a replica without a data directory makes no snapshot");
        };
        self.snapshot(view, scratch, counts).await
    }

    /// A replica without a data directory that stops forgets its position (it cannot resume
    /// from it); one with a file keeps it, to resume without loading the snapshot.
    pub(super) async fn leave(&self) {
        if self.scratch.is_none() {
            let forget = self.positions.purge(&self.me);
            drop(tokio::time::timeout(Duration::from_secs(1), forget).await);
        }
    }

    async fn snapshot(
        &self,
        view: &RedbStore,
        scratch: &Path,
        counts: &Counts,
    ) -> anyhow::Result<Snapshot> {
        let began = std::time::Instant::now();
        let step = |name: &'static str| *self.step.lock().expect("step") = name;
        step("copying the view");
        let (checkpoint, rows) = view.snapshot_to(scratch).await?;
        step("reading the stored snapshot's description");
        let applied = match checkpoint {
            Some((log, applied)) if log == self.log => applied,
            _ => anyhow::bail!("the view holds no checkpoint of this log to snapshot"),
        };
        // Another replica's may be newer: it stands.
        let newest = stored(&self.objects, self.log)
            .await
            .map_or(0, |(_, applied)| applied);
        let bytes = std::fs::metadata(scratch).map(|m| m.len()).unwrap_or(0);
        if newest < applied {
            step("storing the snapshot");
            let mut file = tokio::fs::File::open(scratch).await?;
            let meta = object_store::ObjectMetadata {
                name: OBJECT.into(),
                description: Some(format!("the log's view through entry {applied}")),
                metadata: HashMap::from([
                    (META_LOG.to_string(), self.log.to_string()),
                    (META_APPLIED.to_string(), applied.to_string()),
                ]),
                ..Default::default()
            };
            self.objects
                .put(meta, &mut file)
                .await
                .map_err(|e| anyhow::anyhow!("storing the log's snapshot: {e}"))?;
            Counts::add(&counts.snapshots, 1);
            counts.snapshot_applied.store(applied, Ordering::Relaxed);
        }
        drop(std::fs::remove_file(scratch));
        let held = newest.max(applied);
        self.last.fetch_max(held, Ordering::Relaxed);
        step("trimming the log (positions, the work's ack floors, the purge)");
        let first_kept = self.trim(held, counts).await?;
        step("done");
        tracing::info!(
            applied,
            rows,
            bytes,
            first_kept,
            ms = began.elapsed().as_millis() as u64,
            "snapshot of the log's view stored; the log trimmed behind it"
        );
        Ok(Snapshot {
            applied,
            first_kept,
            bytes,
            seconds: began.elapsed().as_secs_f64(),
        })
    }

    /// Removes the entries before the first one still needed, no later than `held + 1` (the
    /// snapshot holds every entry through `held`); returns the stream's first entry after.
    async fn trim(&self, held: u64, counts: &Counts) -> anyhow::Result<u64> {
        let Some(floor) = self.floor(held + 1).await? else {
            return Ok(0);
        };
        let first = self.stream.get_info().await?.state.first_sequence;
        if floor > first {
            self.stream
                .purge()
                .sequence(floor)
                .await
                .map_err(|e| anyhow::anyhow!("trimming the log before entry {floor}: {e}"))?;
            counts.first_kept.store(floor, Ordering::Relaxed);
            return Ok(floor);
        }
        counts.first_kept.store(first, Ordering::Relaxed);
        Ok(first)
    }

    /// The first entry still needed, at most `ceiling`: by a running replica's view, or by the
    /// shared work (`None`: a bureau's work has no consumer yet, so nothing is trimmed).
    async fn floor(&self, ceiling: u64) -> anyhow::Result<Option<u64>> {
        let mut floor = ceiling;
        for p in self.positions().await? {
            floor = floor.min(p + 1);
        }
        let stream = &self.stream;
        // Each bureau's work subject: `<work>.<lane>`.
        let lanes = subjects_under(stream, &format!("{}.", self.subjects.work)).await?;
        // Every consumer's state in one listing (a page per 256), not one request a bureau:
        // a server slow to answer made 50 lanes' requests take minutes.
        let mut consumers = HashMap::new();
        let mut listed = stream.consumers();
        while let Some(c) = listed.next().await {
            let c = c.map_err(|e| anyhow::anyhow!("the log's consumers: {e}"))?;
            consumers.insert(c.name.clone(), c);
        }
        for lane in lanes {
            let Some(info) = consumers.get(&format!("{WORK_CONSUMER}-{lane}")) else {
                tracing::debug!(
                    lane,
                    "a bureau's work has no consumer yet; the log is not trimmed this time"
                );
                return Ok(None);
            };
            if info.num_ack_pending > 0 || info.num_pending > 0 {
                floor = floor.min(info.ack_floor.stream_sequence + 1);
            }
        }
        Ok(Some(floor))
    }

    /// Removes the chunks of snapshots no object names, once this replica has seen them so
    /// for [`ORPHAN_AGE`] (at most once a minute). Two replicas storing at once leave them:
    /// the object store purges the chunks of the snapshot each one replaced, not those of the
    /// other's, which the later one's name replaced. A snapshot being stored is named within
    /// seconds of its first chunk, so it is never taken for one. Returns the snapshots removed.
    pub(super) async fn sweep_orphans(&self) -> anyhow::Result<usize> {
        {
            let mut unnamed = self.unnamed.lock().expect("unnamed chunks");
            if unnamed.0.elapsed() < ORPHAN_AGE.min(Duration::from_secs(60)) {
                return Ok(0);
            }
            unnamed.0 = Instant::now();
        }
        let named = self.objects.info(OBJECT).await.ok().map(|i| i.nuid);
        let prefix = &self.chunk_prefix;
        let mut seen = subjects_under(&self.chunks, prefix).await?;
        seen.retain(|nuid| Some(nuid) != named.as_ref());
        let due: Vec<String> = {
            let mut unnamed = self.unnamed.lock().expect("unnamed chunks");
            let now = Instant::now();
            unnamed.1.retain(|nuid, _| seen.contains(nuid));
            for nuid in seen {
                unnamed.1.entry(nuid).or_insert(now);
            }
            unnamed
                .1
                .iter()
                .filter(|(_, since)| now.duration_since(**since) >= ORPHAN_AGE)
                .map(|(nuid, _)| nuid.clone())
                .collect()
        };
        for nuid in &due {
            self.chunks
                .purge()
                .filter(format!("{prefix}{nuid}"))
                .await
                .map_err(|e| anyhow::anyhow!("removing unnamed snapshot chunks: {e}"))?;
            self.unnamed.lock().expect("unnamed chunks").1.remove(nuid);
        }
        if !due.is_empty() {
            tracing::info!(
                snapshots = due.len(),
                "chunks of snapshots no object names removed"
            );
        }
        Ok(due.len())
    }

    /// Every running replica's position. The keys are the subjects the bucket's stream holds,
    /// as the server counts them (rather than a listing consumer's, whose end is judged from
    /// a pending count taken when it was made); a key whose last entry removed it has none.
    async fn positions(&self) -> anyhow::Result<Vec<u64>> {
        let kv = &self.positions;
        let keys = subjects_under(&kv.stream, &kv.prefix)
            .await
            .map_err(|e| anyhow::anyhow!("replicas' positions: {e}"))?;
        let mut positions = Vec::with_capacity(keys.len());
        for key in keys {
            let value = kv
                .get(key.as_str())
                .await
                .map_err(|e| anyhow::anyhow!("replica {key}'s position: {e}"))?;
            if let Some(p) = value.and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok()) {
                positions.push(p);
            }
        }
        Ok(positions)
    }
}

/// The subjects `stream` holds under `prefix` (which ends in a dot), as the server counts
/// them, without the prefix.
async fn subjects_under(stream: &stream::Stream, prefix: &str) -> anyhow::Result<Vec<String>> {
    let mut listed = stream.info_with_subjects(format!("{prefix}>")).await?;
    let mut tails = Vec::new();
    while let Some(s) = listed.next().await {
        if let Some(tail) = s?.0.strip_prefix(prefix) {
            tails.push(tail.to_string());
        }
    }
    Ok(tails)
}

/// The stored snapshot of the log `log`, and the last entry it holds (from its metadata), if
/// there is one.
async fn stored(
    objects: &object_store::ObjectStore,
    log: u64,
) -> Option<(object_store::ObjectInfo, u64)> {
    let info = objects.info(OBJECT).await.ok().filter(|i| !i.deleted)?;
    let m = &info.metadata;
    if m.get(META_LOG)?.parse::<u64>().ok()? != log {
        return None;
    }
    let applied = m.get(META_APPLIED)?.parse().ok()?;
    Some((info, applied))
}
