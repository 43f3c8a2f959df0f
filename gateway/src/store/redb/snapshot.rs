//! A copy of a store's every table, as one read transaction sees them, into a new database
//! file: how a replica of a replicated log writes the snapshot of its view that lets the log
//! be trimmed (see `store::nats::trim`). The copy is made beside the live store, which keeps
//! serving and writing meanwhile (redb's readers see one commit whole), so a view's snapshot
//! holds whole log entries only, and the checkpoint saying which.

use super::*;
use ::redb::{Key, ReadTransaction, Value};

/// Rows copied per transaction of the new file (one transaction of a whole large view would
/// hold all its pages in memory until the commit). Fewer under test, so a small store spans
/// several.
const ROWS_PER_COMMIT: usize = if cfg!(test) { 100 } else { 20_000 };

/// Copies `def`'s rows from `from` into `to`, committing every [`ROWS_PER_COMMIT`] rows
/// without sync (the caller's last commit syncs). Returns the rows copied.
fn copy_table<K: Key + 'static, V: Value + 'static>(
    from: &ReadTransaction,
    to: &Database,
    def: TableDefinition<K, V>,
) -> Result<u64, ::redb::Error> {
    let source = from.open_table(def)?;
    let mut rows = 0u64;
    let mut iter = source.iter()?;
    loop {
        let mut txn = to.begin_write()?;
        txn.set_durability(::redb::Durability::None)?;
        let mut done = true;
        {
            let mut table = txn.open_table(def)?;
            for row in iter.by_ref() {
                let (k, v) = row?;
                table.insert(k.value(), v.value())?;
                rows += 1;
                if rows.is_multiple_of(ROWS_PER_COMMIT as u64) {
                    done = false;
                    break;
                }
            }
        }
        txn.commit()?;
        if done {
            return Ok(rows);
        }
    }
}

impl RedbStore {
    /// Writes a copy of every table to a new database file at `path` (replacing any file
    /// there), synced and compacted before it returns, and returns the view checkpoint the copy holds (see
    /// [`RedbStore::checkpoint`]) and its rows. The store keeps serving meanwhile.
    pub(crate) async fn snapshot_to(&self, path: &Path) -> StoreResult<(Option<(u64, u64)>, u64)> {
        let path = path.to_path_buf();
        self.blocking_read(move |db| {
            let read = db.begin_read()?;
            if path.exists() {
                std::fs::remove_file(&path).map_err(unavailable)?;
            }
            let to = ::redb::Builder::new().create(&path).map_err(unavailable)?;
            private_file(&path).map_err(unavailable)?;
            let copy = || -> Result<u64, ::redb::Error> {
                let mut rows = 0;
                macro_rules! copy {
                    ($t:ident) => {
                        rows += copy_table(&read, &to, $t)?;
                    };
                }
                every_table!(copy);
                Ok(rows)
            };
            let rows = copy().map_err(unavailable)?;
            // One synced commit makes every unsynced one before it durable.
            to.begin_write()?.commit().map_err(unavailable)?;
            // The copy's commits left free pages behind (a third of the file at 100,000
            // submissions): compacted, the snapshot stored and loaded is that much smaller, for
            // a few hundredths of a second.
            let mut to = to;
            to.compact().map_err(unavailable)?;
            let meta = read.open_table(META)?;
            let log = meta.get(VIEW_LOG)?.map(|v| v.value());
            let applied = meta.get(VIEW_APPLIED)?.map(|v| v.value());
            Ok((log.zip(applied), rows))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table's rows, as text, for comparing two stores.
    fn dump(db: &Database) -> Vec<String> {
        fn rows<K: Key + 'static, V: Value + 'static>(
            txn: &ReadTransaction,
            def: TableDefinition<K, V>,
            out: &mut Vec<String>,
        ) where
            for<'a> K::SelfType<'a>: std::fmt::Debug,
            for<'a> V::SelfType<'a>: std::fmt::Debug,
        {
            for row in txn.open_table(def).unwrap().iter().unwrap() {
                let (k, v) = row.unwrap();
                out.push(format!("{def}: {:?} = {:?}", k.value(), v.value()));
            }
        }
        let txn = db.begin_read().unwrap();
        let mut out = Vec::new();
        macro_rules! dump {
            ($t:ident) => {
                rows(&txn, $t, &mut out);
            };
        }
        every_table!(dump);
        out
    }

    /// A snapshot holds every row of every table, across several of the copy's commits, and
    /// opens as a store that answers as the original does.
    #[tokio::test]
    async fn a_snapshot_holds_every_row_and_opens_as_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        let n = ROWS_PER_COMMIT + 7; // more than one of the copy's commits
        for i in 0..n {
            let key = SubmissionKey {
                bureau: "TX".into(),
                tcn: format!("T-{i:06}"),
            };
            store
                .accept(key.clone(), vec![1, 2, 3], i as i64)
                .await
                .unwrap();
            if i % 3 == 0 {
                let completion = Completion {
                    events: vec![(StreamKey::Bureau("TX".into()), vec![i as u8])],
                    counters: vec![("completed".into(), 1)],
                    ..Default::default()
                };
                store.complete(key, completion).await.unwrap();
            }
        }
        let copy = dir.path().join("copy.redb");
        let (checkpoint, rows) = store.snapshot_to(&copy).await.unwrap();
        assert_eq!(checkpoint, None, "not a view: no checkpoint");
        let original = dump(&store.db().unwrap());
        assert!(rows as usize >= 2 * n, "{rows} rows");
        let opened = RedbStore::open_view(&copy, DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(dump(&opened.db().unwrap()), original);
        let last = SubmissionKey {
            bureau: "TX".into(),
            tcn: format!("T-{:06}", n - 1),
        };
        assert!(opened.pending(last).await.unwrap().is_some());
    }
}
