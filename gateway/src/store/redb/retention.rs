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
            u.receipts_kept = txn.open_table(SUBMISSIONS)?.len()?;
            u.receipts_expired = txn
                .open_table(COUNTERS)?
                .get("receipts_expired")?
                .map_or(0, |v| v.value());
            u.disclosures_archived = txn
                .open_table(META)?
                .get(ARCHIVED_THROUGH)?
                .map_or(0, |v| v.value());
            u.file_bytes = match &path {
                Some(p) => Some(std::fs::metadata(p).map_err(unavailable)?.len()),
                None => None,
            };
            // An archive that cannot be listed leaves its two figures at 0, not the others out.
            match archive.map(|dir| segments::segments(&dir)).transpose() {
                Ok(held) => {
                    let held = held.unwrap_or_default();
                    u.archive_segments = held.len() as u64;
                    u.archive_bytes = held.iter().map(|s| s.bytes).sum();
                }
                Err(e) => tracing::warn!(error = %e, "the disclosure archive cannot be listed"),
            }
            Ok(u)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(at_ms: i64, tcn: &str, recipient: &str) -> Disclosure {
        Disclosure {
            at_ms,
            recipient: format!("spiffe://interop.local/{recipient}"),
            serial: "0a".into(),
            rpc: "interop.v1.FieldOfficeService/Subscribe".into(),
            state: "TX".into(),
            tcn: tcn.into(),
            kind: DisclosureKind::IdentOutcome,
            cursor: at_ms as u64,
        }
    }

    async fn open(dir: &Path) -> RedbStore {
        // A reopen may race the previous writer thread's exit.
        for _ in 0..100 {
            if let Ok(s) = RedbStore::open(dir) {
                return s;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("store did not reopen");
    }

    async fn kept(s: &RedbStore, filter: DisclosureFilter) -> Vec<u64> {
        let rows = s.disclosures(filter, 0, 1_000).await.unwrap();
        rows.into_iter().map(|(q, _)| q).collect()
    }

    /// Every line of every segment in `dir`, as (seq, tcn).
    fn archived(dir: &Path) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        for seg in segments::segments(dir).unwrap() {
            for line in std::fs::read_to_string(&seg.path).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                let seq = v["seq"].as_u64().unwrap();
                assert!(seg.first <= seq && seq <= seg.last, "{line} in {seg:?}");
                out.push((seq, v["tcn"].as_str().unwrap().to_string()));
            }
        }
        out
    }

    /// Records older than the cut-off go to a segment, then leave the store; the listing
    /// (filtered or not) pages over what is kept; numbering never reuses a sequence number,
    /// across a reopen too; /metrics' figures follow.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn old_records_are_archived_then_pruned_and_numbers_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).await;
        let records = vec![
            rec(1, "T-1", "bureau/TX"),
            rec(2, "T-1", "field-office/HOU"),
            rec(3, "T-2", "bureau/TX"),
            rec(4, "T-2", "field-office/HOU"),
            rec(5, "T-1", "bureau/TX"),
        ];
        s.record_disclosures(records).await.unwrap();
        assert!(
            s.archive_disclosures(1).await.unwrap().is_none(),
            "none due"
        );
        let a = s.archive_disclosures(4).await.unwrap().expect("1 to 3 due");
        assert_eq!((a.segment.first, a.segment.last, a.pruned), (1, 3, 3));
        assert!(a.written);
        let archive = s.archive_dir().unwrap();
        assert_eq!(a.segment.path.parent(), Some(archive.as_path()));
        let expected = [(1, "T-1"), (2, "T-1"), (3, "T-2")].map(|(q, t)| (q, t.to_string()));
        assert_eq!(archived(&archive), expected);
        assert_eq!(kept(&s, DisclosureFilter::default()).await, [4, 5]);
        let by_tcn = DisclosureFilter {
            tcn: "T-1".into(),
            ..Default::default()
        };
        assert_eq!(kept(&s, by_tcn).await, [5]);
        let by_recipient = DisclosureFilter {
            recipient: "spiffe://interop.local/field-office/HOU".into(),
            ..Default::default()
        };
        assert_eq!(kept(&s, by_recipient).await, [4]);
        assert!(s.archive_disclosures(4).await.unwrap().is_none());
        let u = s.usage().await.unwrap();
        assert_eq!((u.disclosures_kept, u.disclosures_archived), (2, 3));
        assert_eq!((u.archive_segments, u.archive_bytes), (1, a.segment.bytes));

        s.record_disclosures(vec![rec(6, "T-3", "bureau/TX")])
            .await
            .unwrap();
        drop(s);
        let s = open(dir.path()).await;
        s.record_disclosures(vec![rec(7, "T-4", "bureau/TX")])
            .await
            .unwrap();
        assert_eq!(kept(&s, DisclosureFilter::default()).await, [4, 5, 6, 7]);
        let b = s.archive_disclosures(i64::MAX).await.unwrap().unwrap();
        assert_eq!((b.segment.first, b.segment.last), (4, 7));
        assert!(kept(&s, DisclosureFilter::default()).await.is_empty());
        s.record_disclosures(vec![rec(8, "T-5", "bureau/TX")])
            .await
            .unwrap();
        assert_eq!(kept(&s, DisclosureFilter::default()).await, [8]);
        let seqs: Vec<u64> = archived(&archive).into_iter().map(|(q, _)| q).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7], "each record archived once");
    }

    /// An archive that cannot be written (here: `archive` is a file, not a directory) fails
    /// the pass, and not one record leaves the store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_is_pruned_when_the_archive_cannot_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).await;
        let records = (1..=3).map(|i| rec(i, "T-1", "bureau/TX")).collect();
        s.record_disclosures(records).await.unwrap();
        std::fs::write(s.archive_dir().unwrap(), b"not a directory").unwrap();
        match s.archive_disclosures(i64::MAX).await {
            Err(StoreError::Unavailable(m)) => assert!(m.contains("archiving"), "{m}"),
            other => panic!("an unwritable archive was answered {other:?}"),
        }
        assert_eq!(kept(&s, DisclosureFilter::default()).await, [1, 2, 3]);
        let u = s.usage().await.unwrap();
        assert_eq!((u.disclosures_kept, u.disclosures_archived), (3, 0));
    }

    /// A pass that stopped after its segment was durable — before pruning, or halfway through
    /// it — is finished by the next pass after a restart: it prunes through the segment it
    /// finds and writes no second copy; a half-written `.partial` file is removed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_pass_is_finished_after_a_restart_without_a_second_copy() {
        let dir = tempfile::tempdir().unwrap();
        let archive;
        {
            let s = open(dir.path()).await;
            let records = (1..=5)
                .map(|i| rec(i, &format!("T-{i}"), "bureau/TX"))
                .collect();
            s.record_disclosures(records).await.unwrap();
            archive = s.archive_dir().unwrap();
            // What the pass wrote before it stopped: the segment of 1 to 3, durable, and the
            // first of its records pruned; and a half-written later segment.
            let held = s
                .disclosures(DisclosureFilter::default(), 0, 3)
                .await
                .unwrap();
            segments::write_segment(&archive, &held).unwrap();
            std::fs::write(archive.join(".disclosures-4-5.jsonl.partial"), b"{\"seq\"").unwrap();
            let n = submit_op(&s.tx, Op::PruneDisclosures { through: 1 })
                .await
                .unwrap();
            assert_eq!(n.compacted().unwrap(), 1);
        }
        let s = open(dir.path()).await;
        let a = s.archive_disclosures(4).await.unwrap().unwrap();
        assert!(!a.written, "the segment already held is not written again");
        assert_eq!((a.segment.first, a.segment.last, a.pruned), (1, 3, 2));
        assert_eq!(kept(&s, DisclosureFilter::default()).await, [4, 5]);
        let a = s.archive_disclosures(i64::MAX).await.unwrap().unwrap();
        assert!(a.written);
        assert_eq!((a.segment.first, a.segment.last), (4, 5));
        let seqs: Vec<u64> = archived(&archive).into_iter().map(|(q, _)| q).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5], "each record archived exactly once");
        let files = std::fs::read_dir(&archive).unwrap().count();
        assert_eq!(files, 2, "two segments, no partial file left");
        assert_eq!(s.usage().await.unwrap().disclosures_archived, 5);
    }
}
