//! The embedded store's side of audit retention and of `/metrics`: archiving the oldest
//! disclosure records into `DATA/archive` before pruning them (the order and the crash rules
//! are [`crate::store::archive`]'s), and the figures that grow with history.

use super::writer::{ARCHIVED_THROUGH, BUREAU_PREFIX};
use super::*;
use crate::store::archive::{self as segments, SEGMENT_MAX};
use ::redb::ReadableTableMetadata;

impl RedbStore {
    /// One archive pass: the oldest records delivered before `before_ms` (at most
    /// [`SEGMENT_MAX`]; the scan stops at the first younger one) go to a durable segment, then
    /// are pruned in steps of [`COMPACT_LIMIT`]. If a segment holding the first record kept is
    /// already complete, a pass stopped after writing it: this one prunes through it and
    /// writes nothing.
    pub(super) async fn archive_before(&self, before_ms: i64) -> StoreResult<Option<Archived>> {
        let dir = self.archive_dir().ok_or_else(|| {
            StoreError::Unavailable(
                "a store held in memory has no directory to archive the audit to".into(),
            )
        })?;
        let _one_pass = self.archiving.lock().await;
        let due = self
            .blocking_read(move |db| {
                let txn = db.begin_read()?;
                let rows = txn.open_table(DISCLOSURES)?;
                let mut due = Vec::new();
                for row in rows.iter()?.take(SEGMENT_MAX) {
                    let (k, v) = row?;
                    let seq = k.value();
                    let d: Disclosure = decode(v.value(), || format!("disclosure {seq}"))?;
                    if d.at_ms >= before_ms {
                        break;
                    }
                    due.push((seq, d));
                }
                Ok(due)
            })
            .await?;
        let Some(&(first, _)) = due.first() else {
            return Ok(None);
        };
        let (segment, written) =
            tokio::task::spawn_blocking(move || match segments::prepare(&dir, first)? {
                Some(held) => Ok((held, false)),
                None => segments::write_segment(&dir, &due).map(|s| (s, true)),
            })
            .await
            .map_err(unavailable)?
            .map_err(|e| StoreError::Unavailable(format!("archiving the disclosure audit: {e}")))?;
        // Durable in the archive: now, and only now, the records may leave the store.
        let mut pruned = 0;
        loop {
            let op = Op::PruneDisclosures {
                through: segment.last,
            };
            let n = submit_op(&self.tx, op).await?.compacted()?;
            pruned += n;
            if n < COMPACT_LIMIT as u64 {
                break;
            }
        }
        tracing::info!(
            first = segment.first,
            last = segment.last,
            pruned,
            written,
            path = %segment.path.display(),
            "disclosure records archived and pruned"
        );
        Ok(Some(Archived {
            segment,
            pruned,
            written,
        }))
    }

    /// What the store holds: a read per stream (its head and its first event kept: streams
    /// are trimmed from the front, so the events between are all there), the tables' lengths
    /// (kept in redb's headers), the file's size and the archive's listing.
    pub(super) async fn usage_now(&self) -> StoreResult<StoreUsage> {
        let path = self.path.clone();
        let archive = self.archive_dir();
        self.blocking_read(move |db| {
            let txn = db.begin_read()?;
            let heads = txn.open_table(HEADS)?;
            let log = txn.open_table(LOG)?;
            let mut u = StoreUsage::default();
            for row in heads.iter()? {
                let (k, head) = row?;
                let (name, head) = (k.value(), head.value());
                let first = log
                    .range((name, 0)..=(name, u64::MAX))?
                    .next()
                    .transpose()?
                    .map(|(k, _)| k.value().1);
                let kept = first.map_or(0, |f| head.saturating_sub(f) + 1);
                if name.starts_with(BUREAU_PREFIX) {
                    u.bureau_events_kept += kept;
                    u.bureau_events_appended += head;
                } else {
                    u.office_events_kept += kept;
                    u.office_events_appended += head;
                }
            }
            u.disclosures_kept = txn.open_table(DISCLOSURES)?.len()?;
            u.disclosures_archived = txn
                .open_table(META)?
                .get(ARCHIVED_THROUGH)?
                .map_or(0, |v| v.value());
            u.file_bytes = match &path {
                Some(p) => Some(std::fs::metadata(p).map_err(unavailable)?.len()),
                None => None,
            };
            if let Some(dir) = archive {
                let held = segments::segments(&dir).map_err(unavailable)?;
                u.archive_segments = held.len() as u64;
                u.archive_bytes = held.iter().map(|s| s.bytes).sum();
            }
            Ok(u)
        })
        .await
    }
}
