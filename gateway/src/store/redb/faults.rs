//! Fault injection for tests ([`IoFaults`]): redb's file backend with failures in front of
//! its writes, to show the store refusing what it cannot write and recovering by itself.

use super::unavailable;
use crate::store::StoreResult;
use ::redb::{Database, StorageBackend};
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// Opens the database at `path` with `faults` in front of its writes.
pub(super) fn open(path: &Path, faults: Arc<IoFaults>) -> StoreResult<Database> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(unavailable)?;
    let inner = ::redb::backends::FileBackend::new(file).map_err(unavailable)?;
    ::redb::Builder::new()
        .create_with_backend(FaultyFile { inner, faults })
        .map_err(unavailable)
}
