//! A world's gallery file made into an in-memory matcher, for the gateway and for a shard
//! process: read back from its index snapshot when one was saved for this very gallery, built
//! otherwise (read in chunks, enrolled as it is read, so the file is never held whole) and
//! then saved as a snapshot for the next start.
//!
//! A snapshot lives beside the gallery file (`ident-gallery.index`, or
//! `ident-gallery.shard-0-of-2.index` for one shard of it), keyed by the gallery file's digest
//! (its count, length and CRC), the matcher's shard count and the shard of the file it holds:
//! a gallery generated again, or loaded another way, is built again and its snapshot replaced
//! (see [`interop_matcher::search::snapshot`]). A snapshot that cannot be saved (a read-only
//! world directory, a full disk) is a warning: the gallery is searched all the same and the
//! next start builds it again. Galleries in the format before digests (version 1) are always
//! built.

use super::shard::Shard;
use interop_matcher::gallery::GalleryReader;
use interop_matcher::search::SnapshotError;
use interop_matcher::{IndexedMatcher, Matcher, Tenprint};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Entries read from a gallery file at a time while it is built.
const CHUNK: usize = 4096;
/// How often a build reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// How a gallery was made ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Read back from its snapshot.
    Snapshot,
    /// Enrolled from the gallery file.
    Built,
}

/// A gallery ready to search.
pub struct Loaded {
    pub matcher: IndexedMatcher,
    /// The gallery file's first print (to time a search at start), if it has any.
    pub sample: Option<Tenprint>,
    pub origin: Origin,
}

/// Where the snapshot of `gallery` (or of one shard of it) lives in `dir`.
pub fn snapshot_path(dir: &Path, gallery: &str, shard: Option<Shard>) -> PathBuf {
    let stem = Path::new(gallery)
        .file_stem()
        .map_or_else(|| gallery.to_string(), |s| s.to_string_lossy().into_owned());
    match shard {
        None => dir.join(format!("{stem}.index")),
        Some(s) => dir.join(format!("{stem}.shard-{}-of-{}.index", s.index, s.count)),
    }
}

/// Loads the gallery file `gallery` of `dir` (the subjects `shard` holds, or all) into a
/// matcher of `threads` shards: from its snapshot if there is a current one, otherwise built
/// and then saved as one. Says which, why and how long it took in the log.
pub fn load_gallery(
    dir: &Path,
    gallery: &str,
    threads: usize,
    shard: Option<Shard>,
) -> anyhow::Result<Loaded> {
    let path = dir.join(gallery);
    let mut reader = GalleryReader::open(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let snapshot = snapshot_path(dir, gallery, shard);
    let threads = threads.max(1);
    let key = reader.digest().map(|d| {
        let mut key = d.to_bytes().to_vec();
        key.extend_from_slice(&(threads as u64).to_le_bytes());
        let (i, n) = shard.map_or((0, 1), |s| (s.index, s.count));
        key.extend_from_slice(&i.to_le_bytes());
        key.extend_from_slice(&n.to_le_bytes());
        key
    });
    let started = Instant::now();
    let file = snapshot.display().to_string();
    if let Some(key) = &key {
        match IndexedMatcher::load_snapshot(&snapshot, key) {
            Ok(matcher) => {
                tracing::info!(
                    gallery,
                    subjects = matcher.len(),
                    ms = started.elapsed().as_millis() as u64,
                    snapshot = %file,
                    "gallery loaded from its index snapshot"
                );
                let sample = first_print(&mut reader)?;
                return Ok(Loaded {
                    matcher,
                    sample,
                    origin: Origin::Snapshot,
                });
            }
            Err(SnapshotError::Missing) => {
                tracing::info!(gallery, snapshot = %file, "no index snapshot yet: building the gallery")
            }
            Err(e @ SnapshotError::Stale(_)) => {
                tracing::info!(gallery, snapshot = %file, reason = %e, "index snapshot not for this gallery: building it again")
            }
            Err(e) => {
                tracing::warn!(gallery, snapshot = %file, reason = %e, "index snapshot unusable: building the gallery again")
            }
        }
    }
    let (matcher, sample) = build(&mut reader, gallery, threads, shard)?;
    let built_ms = started.elapsed().as_millis() as u64;
    match &key {
        Some(key) => {
            let saving = Instant::now();
            match matcher.save_snapshot(&snapshot, key) {
                Ok(bytes) => tracing::info!(
                    gallery,
                    subjects = matcher.len(),
                    built_ms,
                    saved_ms = saving.elapsed().as_millis() as u64,
                    bytes,
                    snapshot = %file,
                    "gallery built; index snapshot saved for the next start"
                ),
                Err(e) => tracing::warn!(
                    gallery,
                    subjects = matcher.len(),
                    built_ms,
                    snapshot = %file,
                    error = %e,
                    "gallery built, but its index snapshot could not be saved: the next start builds it again"
                ),
            }
        }
        None => tracing::info!(
            gallery,
            subjects = matcher.len(),
            built_ms,
            "gallery built (a gallery file of format 1 has no digest to key a snapshot by: \
             generate the world again to start from one)"
        ),
    }
    Ok(Loaded {
        matcher,
        sample,
        origin: Origin::Built,
    })
}

/// Enrols the entries `reader` yields (those `shard` holds), logging progress; returns the
/// matcher and the file's first print, kept as it went by (a file of format 1 is decoded
/// whole when opened, so it is not opened again for it).
fn build(
    reader: &mut GalleryReader,
    gallery: &str,
    threads: usize,
    shard: Option<Shard>,
) -> anyhow::Result<(IndexedMatcher, Option<Tenprint>)> {
    let matcher = IndexedMatcher::new(threads);
    let total = reader.count();
    let (mut read, mut said) = (0u64, Instant::now());
    let mut sample = None;
    let chunks = std::iter::from_fn(|| {
        if said.elapsed() >= PROGRESS_EVERY {
            tracing::info!(gallery, read, of = total, "building the gallery");
            said = Instant::now();
        }
        match reader.next_chunk(CHUNK) {
            Ok(chunk) if chunk.is_empty() => None,
            Ok(mut chunk) => {
                if read == 0 {
                    sample = chunk.first().map(|(_, t)| t.clone());
                }
                read += chunk.len() as u64;
                if let Some(s) = shard {
                    chunk.retain(|(subject, _)| s.holds(*subject));
                }
                Some(Ok(chunk))
            }
            Err(e) => Some(Err(e)),
        }
    });
    // A bulk load: prepared on every core, then the last enrolments folded into the
    // compressed index.
    matcher
        .enroll_stream(chunks)
        .map_err(|e| anyhow::anyhow!("{gallery}: {e}"))?;
    matcher.compact();
    Ok((matcher, sample))
}

fn first_print(reader: &mut GalleryReader) -> anyhow::Result<Option<Tenprint>> {
    Ok(reader
        .next_chunk(1)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_iter()
        .next()
        .map(|(_, t)| t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use interop_matcher::gallery::write_gallery;
    use interop_matcher::synth::{CaptureModel, capture, master_tenprint};

    fn gallery(seed: u64, n: u64) -> Vec<(u64, Tenprint)> {
        let model = CaptureModel::default();
        (1..=n)
            .map(|p| (p, capture(&master_tenprint(seed, p), &model, p)))
            .collect()
    }

    fn sorted(m: &IndexedMatcher) -> Vec<u64> {
        let mut s = m.subjects();
        s.sort_unstable();
        s
    }

    #[test]
    fn a_gallery_is_built_once_then_read_from_its_snapshot_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = "g.bin";
        write_gallery(&dir.path().join(file), &gallery(3, 120)).unwrap();
        let first = load_gallery(dir.path(), file, 2, None).unwrap();
        assert_eq!(first.origin, Origin::Built);
        let snap = snapshot_path(dir.path(), file, None);
        assert!(snap.exists(), "a snapshot is saved after a build");
        let again = load_gallery(dir.path(), file, 2, None).unwrap();
        assert_eq!(again.origin, Origin::Snapshot);
        assert_eq!(sorted(&again.matcher), (1..=120).collect::<Vec<_>>());
        assert_eq!(again.sample, first.sample);
        let probe = capture(&master_tenprint(3, 17), &CaptureModel::default(), 9_017);
        assert_eq!(
            again.matcher.search(&probe, 3).unwrap(),
            first.matcher.search(&probe, 3).unwrap()
        );
        // Another sharding of the same file is another snapshot's business.
        assert_eq!(
            load_gallery(dir.path(), file, 3, None).unwrap().origin,
            Origin::Built
        );
        // A gallery generated again is built again, and its snapshot replaced.
        write_gallery(&dir.path().join(file), &gallery(4, 90)).unwrap();
        let changed = load_gallery(dir.path(), file, 3, None).unwrap();
        assert_eq!(changed.origin, Origin::Built);
        assert_eq!(changed.matcher.len(), 90);
        assert_eq!(
            load_gallery(dir.path(), file, 3, None).unwrap().origin,
            Origin::Snapshot
        );
        // A damaged snapshot is built over, never searched.
        let mut bytes = std::fs::read(&snap).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(&snap, &bytes).unwrap();
        let repaired = load_gallery(dir.path(), file, 3, None).unwrap();
        assert_eq!(repaired.origin, Origin::Built);
        assert_eq!(repaired.matcher.len(), 90);
        assert_eq!(
            load_gallery(dir.path(), file, 3, None).unwrap().origin,
            Origin::Snapshot
        );
    }

    #[test]
    fn a_shard_loads_and_snapshots_only_its_own_subjects() {
        let dir = tempfile::tempdir().unwrap();
        let file = "g.bin";
        write_gallery(&dir.path().join(file), &gallery(5, 50)).unwrap();
        let shard = Shard { index: 1, count: 3 };
        for origin in [Origin::Built, Origin::Snapshot] {
            let loaded = load_gallery(dir.path(), file, 2, Some(shard)).unwrap();
            assert_eq!(loaded.origin, origin);
            let mine: Vec<u64> = (1..=50).filter(|s| s % 3 == 1).collect();
            assert_eq!(sorted(&loaded.matcher), mine);
        }
        assert!(snapshot_path(dir.path(), file, Some(shard)).exists());
        assert!(!snapshot_path(dir.path(), file, None).exists());
    }

    #[test]
    fn a_snapshot_that_cannot_be_saved_is_a_warning_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let file = "g.bin";
        write_gallery(&dir.path().join(file), &gallery(6, 30)).unwrap();
        // A directory where the snapshot would go: the save fails, the load does not.
        std::fs::create_dir(snapshot_path(dir.path(), file, None)).unwrap();
        for _ in 0..2 {
            let loaded = load_gallery(dir.path(), file, 2, None).unwrap();
            assert_eq!(loaded.origin, Origin::Built);
            assert_eq!(loaded.matcher.len(), 30);
        }
    }
}
