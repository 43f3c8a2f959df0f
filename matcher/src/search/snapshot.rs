//! Index snapshots: a built gallery saved as its flat arrays, so a gateway starts in the time
//! it takes to read them rather than the time it takes to enrol every print again (53 s for
//! 1,000,000 identities on two cores; reading back is a few seconds).
//!
//! A snapshot is only ever used for the gallery it was built from. Its header holds:
//! - a **key** the caller gives (the gateway: the gallery file's digest, the shard count, and
//!   which shard of it), compared byte for byte, so a changed gallery is rebuilt;
//! - a **format fingerprint**: a small fixed gallery ([`CANARY`] synthetic prints) enrolled by
//!   this build and serialised, hashed. Any change to how prints are enrolled or the index is
//!   encoded changes it, so a snapshot from another build of the matcher is rebuilt rather than
//!   searched with code that reads it differently, without anyone having to bump a version;
//! - the byte order of the machine that wrote it.
//!
//! Then each array, as its length and its bytes, and last a CRC-32 of everything before it,
//! checked before the snapshot is used; the arrays' lengths are also checked against each
//! other. A snapshot is written to a temporary file and renamed into place, so a reader sees
//! a whole one or none. What a snapshot does not hold is set again by its user: the decision
//! threshold (calibrated at start) and the tuning.

use super::IndexedMatcher;
use super::geometry::POSITIONS;
use super::patterns::PatternCounts;
use super::postings::Postings;
use super::shard::Shard;
use super::words::{KEYS, Vocabulary};
use crate::synth::{CaptureModel, capture, master_tenprint};
use crate::{MatchError, SubjectId};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::AtomicU32;
use std::sync::{Mutex, OnceLock, RwLock};
use zerocopy::{FromBytes, Immutable, IntoBytes};

const MAGIC: &[u8; 8] = b"IXINDEX\0";
const VERSION: u32 = 1;
/// Written in the machine's own byte order: another order reads as another number.
const BYTE_ORDER: u32 = 0x0102_0304;
/// Synthetic prints in the gallery whose serialisation is the format fingerprint.
const CANARY: u64 = 24;

/// Why a snapshot was not used (the caller builds the gallery instead, and says why).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("no snapshot")]
    Missing,
    /// Built from another gallery, by another build of the matcher, or on another machine.
    #[error("stale: {0}")]
    Stale(String),
    #[error("corrupt: {0}")]
    Corrupt(String),
    #[error("unreadable: {0}")]
    Io(#[from] std::io::Error),
}

/// A writer that keeps the CRC-32 of what passed through it.
struct Crc<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn put<T: IntoBytes + Immutable>(out: &mut impl Write, v: &[T]) -> std::io::Result<()> {
    out.write_all(&(v.len() as u64).to_le_bytes())?;
    out.write_all(v.as_bytes())
}

/// Reads a snapshot's arrays, keeping its CRC and refusing lengths past the file's end.
struct Source<R> {
    inner: R,
    crc: crc32fast::Hasher,
    left: u64,
}

impl<R: Read> Source<R> {
    fn bytes(&mut self, out: &mut [u8]) -> Result<(), SnapshotError> {
        if out.len() as u64 > self.left {
            return Err(SnapshotError::Corrupt("cut short".into()));
        }
        self.inner.read_exact(out)?;
        self.crc.update(out);
        self.left -= out.len() as u64;
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        let mut b = [0; 4];
        self.bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        let mut b = [0; 8];
        self.bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn vec<T: FromBytes + IntoBytes + Clone>(&mut self) -> Result<Vec<T>, SnapshotError> {
        let n = self.u64()?;
        let size = std::mem::size_of::<T>() as u64;
        if n.saturating_mul(size) > self.left {
            return Err(SnapshotError::Corrupt(format!(
                "an array of {n} items runs past the end"
            )));
        }
        let mut v = vec![T::new_zeroed(); n as usize];
        self.bytes(v.as_mut_bytes())?;
        Ok(v)
    }
}

impl IndexedMatcher {
    /// Writes the gallery as a snapshot to `path` under `key` (see the module comment):
    /// through a temporary file beside it, synced, then renamed. The gallery must be compacted
    /// ([`IndexedMatcher::compact`]). Returns the snapshot's size in bytes.
    pub fn save_snapshot(&self, path: &Path, key: &[u8]) -> Result<u64, MatchError> {
        let io = |e: std::io::Error| MatchError::Gallery(format!("{}: {e}", path.display()));
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let file = File::create(&tmp).map_err(io)?;
        let mut out = Crc {
            inner: BufWriter::with_capacity(1 << 20, file),
            crc: crc32fast::Hasher::new(),
        };
        let written = (|| {
            self.write_snapshot(&mut out, key, fingerprint())?;
            let crc = out.crc.clone().finalize();
            let mut file = out.inner.into_inner().map_err(|e| e.into_error())?;
            file.write_all(&crc.to_le_bytes())?;
            file.sync_all()?;
            let len = file.metadata()?.len();
            std::fs::rename(&tmp, path)?;
            Ok(len)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(|e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::InvalidInput {
                MatchError::Gallery(e.to_string())
            } else {
                io(e)
            }
        })
    }

    /// The header and the arrays (not the CRC).
    fn write_snapshot(&self, out: &mut impl Write, key: &[u8], fp: u64) -> std::io::Result<()> {
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(&BYTE_ORDER.to_ne_bytes())?;
        out.write_all(&fp.to_le_bytes())?;
        put(out, key)?;
        let v = self.vocabulary.read().expect("vocabulary lock");
        out.write_all(&v.prints.to_le_bytes())?;
        put(out, &v.df)?;
        put(out, &v.dropped)?;
        drop(v);
        out.write_all(&(self.shards.len() as u32).to_le_bytes())?;
        for s in &self.shards {
            let s = s.read().expect("shard lock");
            if s.removed_count != 0 || s.postings.tail_len != 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "a snapshot is of a compacted gallery: call compact() first",
                ));
            }
            put(out, &s.subjects)?;
            put(out, &s.starts)?;
            put(out, &s.counts)?;
            put(out, &s.minutiae)?;
            for column in &s.word_counts {
                put(out, column)?;
            }
            put(out, &s.hists)?;
            put(out, &s.patterns)?;
            put(out, &s.postings.offsets)?;
            put(out, &s.postings.counts)?;
            put(out, &s.postings.last)?;
            put(out, &s.postings.bytes)?;
        }
        Ok(())
    }

    /// Reads the snapshot at `path` if it was saved under `key` by a matcher enrolling and
    /// indexing as this one does, and is whole. The threshold and tuning are the defaults.
    pub fn load_snapshot(path: &Path, key: &[u8]) -> Result<IndexedMatcher, SnapshotError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SnapshotError::Missing);
            }
            Err(e) => return Err(e.into()),
        };
        let len = file.metadata()?.len();
        let mut src = Source {
            inner: BufReader::with_capacity(1 << 20, file),
            crc: crc32fast::Hasher::new(),
            left: len.saturating_sub(4),
        };
        let mut magic = [0; 8];
        src.bytes(&mut magic)?;
        if &magic != MAGIC {
            return Err(SnapshotError::Corrupt("not an index snapshot".into()));
        }
        let version = src.u32()?;
        let order = {
            let mut b = [0; 4];
            src.bytes(&mut b)?;
            u32::from_ne_bytes(b)
        };
        let fp = src.u64()?;
        let stored_key: Vec<u8> = src.vec()?;
        if version != VERSION || order != BYTE_ORDER {
            return Err(SnapshotError::Stale(format!(
                "written in format {version} on a machine of another byte order or by another build"
            )));
        }
        if fp != fingerprint() {
            return Err(SnapshotError::Stale(
                "written by a matcher that enrols or indexes prints differently".into(),
            ));
        }
        if stored_key != key {
            return Err(SnapshotError::Stale(
                "built from another gallery (or another sharding of it)".into(),
            ));
        }
        let m = Self::read_body(&mut src)?;
        let crc = src.crc.clone().finalize();
        let mut trailer = [0; 4];
        src.inner.read_exact(&mut trailer)?;
        if src.left != 0 || u32::from_le_bytes(trailer) != crc {
            return Err(SnapshotError::Corrupt(
                "its checksum does not match its contents".into(),
            ));
        }
        for s in &m.shards {
            let mut s = s.write().expect("shard lock");
            // As `compact` leaves them (see `crate::pages`).
            crate::pages::onto_huge_pages(&mut s.hists);
            crate::pages::onto_huge_pages(&mut s.subjects);
        }
        Ok(m)
    }

    fn read_body(src: &mut Source<impl Read>) -> Result<IndexedMatcher, SnapshotError> {
        let corrupt = |what: &str| SnapshotError::Corrupt(what.to_string());
        let prints = src.u64()?;
        let df: Vec<u32> = src.vec()?;
        let dropped: Vec<u64> = src.vec()?;
        if !(df.is_empty() || df.len() == KEYS) {
            return Err(corrupt("word frequencies of the wrong size"));
        }
        let n = src.u32()? as usize;
        if n == 0 || n > 4096 {
            return Err(corrupt("shard count out of range"));
        }
        let mut shards = Vec::with_capacity(n);
        let mut enrolled = std::collections::HashSet::new();
        for _ in 0..n {
            let subjects: Vec<SubjectId> = src.vec()?;
            let starts: Vec<u32> = src.vec()?;
            let counts: Vec<[u16; POSITIONS]> = src.vec()?;
            let minutiae: Vec<u32> = src.vec()?;
            let mut word_counts: [Vec<u16>; POSITIONS] = Default::default();
            for column in &mut word_counts {
                *column = src.vec()?;
            }
            let hists = src.vec()?;
            let patterns: Vec<u32> = src.vec()?;
            let postings = Postings::from_parts(src.vec()?, src.vec()?, src.vec()?, src.vec()?);
            let len = subjects.len();
            let fits = |e: usize| {
                starts[e] as usize + counts[e].iter().map(|&c| c as usize).sum::<usize>()
                    <= minutiae.len()
            };
            if [starts.len(), counts.len(), hists.len(), patterns.len()]
                .iter()
                .chain(word_counts.iter().map(Vec::len).collect::<Vec<_>>().iter())
                .any(|&l| l != len)
                || (len > 0 && !fits(len - 1))
                || !(postings.offsets.is_empty() || postings.offsets.len() == KEYS + 1)
                || postings
                    .offsets
                    .last()
                    .is_some_and(|&o| o as usize > postings.bytes.len())
            {
                return Err(corrupt("arrays of inconsistent lengths"));
            }
            enrolled.extend(subjects.iter().copied());
            shards.push(RwLock::new(Shard {
                pattern_counts: PatternCounts::of(&patterns),
                subjects,
                starts,
                counts,
                minutiae,
                word_counts,
                hists,
                patterns,
                postings,
                removed: Vec::new(),
                removed_count: 0,
            }));
        }
        Ok(IndexedMatcher {
            shards,
            enrolled: Mutex::new(enrolled),
            vocabulary: RwLock::new(Vocabulary {
                df,
                prints,
                dropped,
            }),
            threshold: AtomicU32::new(super::THRESHOLD.to_bits()),
            tuning: Default::default(),
        })
    }
}

/// The format fingerprint of this build (see the module comment): computed once, in a few
/// milliseconds.
fn fingerprint() -> u64 {
    static FP: OnceLock<u64> = OnceLock::new();
    *FP.get_or_init(|| {
        let m = IndexedMatcher::new(2);
        let model = CaptureModel::default();
        let prints: Vec<_> = (1..=CANARY)
            .map(|p| (p, capture(&master_tenprint(0xCA_4A27, p), &model, p)))
            .collect();
        m.enroll_many(&prints).expect("the canary gallery enrols");
        m.compact();
        let mut out = Crc {
            inner: std::io::sink(),
            crc: crc32fast::Hasher::new(),
        };
        m.write_snapshot(&mut out, &[], 0)
            .expect("writing to a sink");
        u64::from(out.crc.finalize()) << 32 | CANARY
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Matcher;

    fn gallery(n: u64, shards: usize) -> (IndexedMatcher, Vec<(SubjectId, crate::Tenprint)>) {
        let model = CaptureModel::default();
        let prints: Vec<_> = (1..=n)
            .map(|p| (p, capture(&master_tenprint(7, p), &model, p)))
            .collect();
        let m = IndexedMatcher::new(shards);
        m.enroll_many(&prints).unwrap();
        m.compact();
        (m, prints)
    }

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("snapshot-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_loaded_snapshot_searches_as_the_gallery_it_was_saved_from() {
        let (m, _) = gallery(300, 3);
        let d = dir("round-trip");
        let path = d.join("g.index");
        let bytes = m.save_snapshot(&path, b"key").unwrap();
        assert_eq!(bytes, std::fs::metadata(&path).unwrap().len());
        let back = IndexedMatcher::load_snapshot(&path, b"key").unwrap();
        assert_eq!(back.len(), 300);
        assert_eq!(back.heap_bytes().minutiae, m.heap_bytes().minutiae);
        let model = CaptureModel::default();
        for p in [1u64, 77, 150, 299] {
            // A fresh capture of an enrolled person, and of someone not enrolled.
            for probe in [
                capture(&master_tenprint(7, p), &model, 9_000 + p),
                capture(&master_tenprint(8, p), &model, p),
            ] {
                assert_eq!(
                    back.search(&probe, 5).unwrap(),
                    m.search(&probe, 5).unwrap(),
                    "person {p}"
                );
            }
        }
        // It goes on as a gallery: enrol, remove, compact, save again.
        let extra = capture(&master_tenprint(7, 400), &model, 400);
        back.enroll(400, &extra).unwrap();
        assert!(matches!(
            back.enroll(5, &extra),
            Err(MatchError::AlreadyEnrolled(5))
        ));
        back.remove(5).unwrap();
        back.compact();
        assert_eq!(back.len(), 300);
        back.save_snapshot(&path, b"key").unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_stale_corrupt_or_missing_snapshot_is_refused_with_its_reason() {
        let (m, _) = gallery(60, 2);
        let d = dir("refused");
        let path = d.join("g.index");
        assert!(matches!(
            IndexedMatcher::load_snapshot(&path, b"k").err(),
            Some(SnapshotError::Missing)
        ));
        m.save_snapshot(&path, b"k").unwrap();
        assert!(matches!(
            IndexedMatcher::load_snapshot(&path, b"other gallery").err(),
            Some(SnapshotError::Stale(_))
        ));
        let good = std::fs::read(&path).unwrap();
        let refused = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            match IndexedMatcher::load_snapshot(&path, b"k") {
                Ok(_) => panic!("a damaged snapshot was loaded"),
                Err(e) => e,
            }
        };
        // A flipped bit in the body, the checksum itself, a file cut short, one grown.
        for at in [good.len() / 2, good.len() - 1] {
            let mut b = good.clone();
            b[at] ^= 0x10;
            assert!(
                matches!(refused(&b), SnapshotError::Corrupt(_)),
                "byte {at}"
            );
        }
        assert!(matches!(
            refused(&good[..good.len() - 100]),
            SnapshotError::Corrupt(_) | SnapshotError::Io(_)
        ));
        let mut grown = good.clone();
        grown.extend_from_slice(&[0; 8]);
        assert!(matches!(refused(&grown), SnapshotError::Corrupt(_)));
        // Another build's format fingerprint.
        let mut b = good.clone();
        b[16] ^= 0x01;
        assert!(matches!(refused(&b), SnapshotError::Stale(_)));
        assert!(matches!(
            refused(b"nothing"),
            SnapshotError::Corrupt(_) | SnapshotError::Io(_)
        ));
        // Nothing half-written is left beside it.
        std::fs::write(&path, &good).unwrap();
        assert!(IndexedMatcher::load_snapshot(&path, b"k").is_ok());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn only_a_compacted_gallery_is_saved() {
        let (m, prints) = gallery(40, 2);
        m.remove(prints[0].0).unwrap();
        let d = dir("compact");
        let err = m.save_snapshot(&d.join("g.index"), b"k").unwrap_err();
        assert!(err.to_string().contains("compact"), "{err}");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "no file left");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
