//! A replica's view of the log kept in a file of its own, so that a restart applies only what
//! the log gained meanwhile (DESIGN §3.9: cost follows new work, not stored history).
//!
//! A gateway given a data directory (`--data DIR` beside `--store nats://…`) keeps its view in
//! `DIR/view-STREAM.redb`; without one the view lives in memory and is rebuilt from the log's
//! start at every start, as before. The follower sends a checkpoint behind each entry's ops
//! ([`Op::Checkpoint`]), and the view's writer commits the two together
//! ([`CommitMode::View`](super::super::redb::CommitMode::View)), so the file always says which
//! entries it holds whole. Commits are not synced to disk, but for a durable checkpoint behind
//! the first entry applied after a start, then at least every [`DURABLE_EVERY`] or
//! [`DURABLE_ENTRIES`] entries, and one when the replica stops cleanly: a replica that crashed
//! applies again at most the entries since its last durable checkpoint (redb rolls the file
//! back to it).
//!
//! The file names the log it follows by the stream's name and creation time: a view of a log
//! since deleted and made again under the same name is discarded and rebuilt, as is one that
//! claims entries the log does not have.

use super::super::redb::RedbStore;
use super::trim::Trim;
use super::{NatsOptions, Op};
use async_nats::jetstream::stream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A durable checkpoint at least this often while entries are applied (one fsync a second at
/// most; a crash then applies again at most a second's entries).
pub(super) const DURABLE_EVERY: Duration = Duration::from_secs(1);
/// ... and at least every this many entries (a replay of a long log is resumable too).
pub(super) const DURABLE_ENTRIES: u64 = 10_000;

/// The log `info` describes, as a view's file records it: its stream's name and creation
/// time, digested.
pub(super) fn log_id(info: &stream::Info) -> u64 {
    let named = format!("{}\n{:?}", info.config.name, info.created);
    let d = ring::digest::digest(&ring::digest::SHA256, named.as_bytes());
    u64::from_le_bytes(
        d.as_ref()[..8]
            .try_into()
            .expect("a digest is longer than 8 bytes"),
    )
}

/// The view this replica applies the log to, the first entry it has yet to apply, and the
/// last entry of the log's snapshot it was loaded from (if it was): in memory from entry 1
/// without a data directory; else its file, from one past the file's checkpoint (a new file,
/// or one of another log, from entry 1); where the log was trimmed past that, the stored
/// snapshot (see [`super::trim`]).
pub(super) async fn open(
    o: &NatsOptions,
    info: &stream::Info,
    trim: &Trim,
) -> anyhow::Result<(RedbStore, u64, Option<u64>)> {
    let first = info.state.first_sequence;
    let Some(dir) = &o.view_dir else {
        anyhow::ensure!(
            first <= 1,
            "JetStream stream {} was trimmed (it starts at entry {first}): a replica without a \
             data directory cannot load the log's snapshot; start it with --data DIR",
            o.stream
        );
        return Ok((RedbStore::open_in_memory(o.view_cache_bytes)?, 1, None));
    };
    let path = file(dir, o);
    let (view, from) = open_file(&path, o, info).await?;
    if first <= from {
        return Ok((view, from, None));
    }
    // The log no longer has entries this view lacks: its snapshot replaces the view.
    drop(view);
    if trim.load(&path).await?.is_none() {
        anyhow::bail!(
            "JetStream stream {} starts at entry {first} and no snapshot of its view is stored: \
             no view can be built",
            o.stream
        );
    }
    // What the file holds is its own checkpoint's to say (a newer snapshot may have been
    // stored between the lookup and the download), and it is checked against the log as it
    // is now: the snapshot may hold entries appended since `info` was read.
    let (view, from) = open_file(&path, o, &trim.log_info().await?).await?;
    anyhow::ensure!(
        from > 1 && first <= from,
        "the log's snapshot holds entries through {}, but the log starts at entry {first}",
        from - 1
    );
    Ok((view, from, Some(from - 1)))
}

/// The file of this replica's view in `dir`.
fn file(dir: &Path, o: &NatsOptions) -> PathBuf {
    dir.join(format!("view-{}.redb", o.stream))
}

/// Removes this replica's view file, which the log was trimmed past as it started (its
/// writer thread may hold it a moment longer: a view opened after is another file).
pub(super) fn discard(o: &NatsOptions) -> anyhow::Result<()> {
    let Some(dir) = &o.view_dir else {
        return Ok(());
    };
    let path = file(dir, o);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(anyhow::anyhow!("removing {}: {e}", path.display()))
        }
        _ => Ok(()),
    }
}

/// The view in the file `path`, and the first entry it has yet to apply (a file of another
/// log, or one claiming entries the log does not have, is discarded).
async fn open_file(
    path: &Path,
    o: &NatsOptions,
    info: &stream::Info,
) -> anyhow::Result<(RedbStore, u64)> {
    let (log, last) = (log_id(info), info.state.last_sequence);
    let open = || {
        RedbStore::open_view(path, o.view_cache_bytes)
            .map_err(|e| anyhow::anyhow!("the log's view in {}: {e}", path.display()))
    };
    let view = open()?;
    match view.checkpoint().await? {
        None => Ok((view, 1)),
        Some((l, applied)) if l == log && applied <= last => {
            tracing::info!(file = %path.display(), applied, of = last, "the log's view resumed from its file");
            Ok((view, applied + 1))
        }
        Some((l, applied)) => {
            let why = if l == log {
                "it holds entries the log does not have"
            } else {
                "it follows another log of that name (the stream was made again)"
            };
            tracing::warn!(file = %path.display(), applied, of = last, why, "the log's view file discarded; rebuilt from the log");
            // The writer thread lets go of the file once the store is dropped; removing it
            // meanwhile is safe (the new file is another).
            drop(view);
            std::fs::remove_file(path)
                .map_err(|e| anyhow::anyhow!("removing {}: {e}", path.display()))?;
            Ok((open()?, 1))
        }
    }
}

/// The checkpoints a follower sends behind each entry (see the module documentation).
pub(super) struct Checkpoints {
    log: u64,
    /// The last durable checkpoint's entry, and when it was made (`None`: none yet since the
    /// start, so the first is durable).
    durable: (u64, Option<Instant>),
}

impl Checkpoints {
    /// For the log `log`, in a view holding every entry before `from`.
    pub(super) fn new(log: u64, from: u64) -> Self {
        Checkpoints {
            log,
            durable: (from.saturating_sub(1), None),
        }
    }

    /// The checkpoint behind entry `seq`'s ops: durable if it is the first since the start,
    /// or the last durable one is [`DURABLE_EVERY`] old or [`DURABLE_ENTRIES`] behind.
    pub(super) fn after(&mut self, seq: u64) -> Op {
        let durable = seq >= self.durable.0 + DURABLE_ENTRIES
            || self.durable.1.is_none_or(|t| t.elapsed() >= DURABLE_EVERY);
        if durable {
            self.durable = (seq, Some(Instant::now()));
        }
        Op::Checkpoint {
            log: self.log,
            applied: seq,
            durable,
        }
    }

    /// The durable checkpoint a replica stopping cleanly leaves, holding every entry through
    /// `seq`.
    pub(super) fn last(&self, seq: u64) -> Op {
        Op::Checkpoint {
            log: self.log,
            applied: seq,
            durable: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn durable(op: Op) -> bool {
        matches!(op, Op::Checkpoint { durable: true, .. })
    }

    /// The first checkpoint after a start is synced (a crash right after it resumes there),
    /// then one every [`DURABLE_ENTRIES`] entries or [`DURABLE_EVERY`], and the one at a stop.
    #[test]
    fn checkpoints_are_synced_first_then_by_count_or_time_and_at_a_stop() {
        let mut c = Checkpoints::new(9, 101);
        assert!(durable(c.after(101)), "the first since the start");
        assert!(!durable(c.after(102)));
        assert!(!durable(c.after(101 + DURABLE_ENTRIES - 1)));
        assert!(durable(c.after(101 + DURABLE_ENTRIES)));
        assert!(!durable(c.after(102 + DURABLE_ENTRIES)));
        std::thread::sleep(DURABLE_EVERY);
        assert!(durable(c.after(103 + DURABLE_ENTRIES)));
        assert!(durable(c.last(104 + DURABLE_ENTRIES)));
        assert!(
            matches!(c.after(105 + DURABLE_ENTRIES), Op::Checkpoint { log: 9, applied, durable: false } if applied == 105 + DURABLE_ENTRIES)
        );
    }
}
