//! Gallery files: the enrolment templates of a gallery, written by the world generator and
//! read by the gateway at start.
//!
//! A file is a header (magic, format version, count, and from version 2 the body's length and
//! CRC-32) and a body of postcard (compact serde) entries, one after another. Both ends
//! stream: [`GalleryWriter`] writes entries as they are made and the header last, and
//! [`GalleryReader`] hands them back in chunks, checking the count, the length and the CRC at
//! the end, so a gallery of millions never has to be held whole. The header's digest
//! ([`GalleryDigest`]) names the gallery's contents without reading them: what an index
//! snapshot built from it records, so a changed gallery is seen at once
//! ([`crate::search::snapshot`]).
//!
//! Version 1 (a postcard sequence after a 20-byte header, no digest) is still read.

use crate::{MatchError, SubjectId, Tenprint};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"IXGALLRY";
const VERSION: u32 = 2;
/// Magic, version, count, body length, CRC-32.
const HEADER: usize = 8 + 4 + 8 + 8 + 4;
const V1_HEADER: usize = 20;

/// What a version-2 gallery file's header says of its body: enough to tell two galleries apart
/// without reading them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GalleryDigest {
    pub count: u64,
    pub body_bytes: u64,
    pub crc32: u32,
}

impl GalleryDigest {
    /// The digest as bytes (for a snapshot's key).
    pub fn to_bytes(self) -> [u8; 20] {
        let mut b = [0; 20];
        b[..8].copy_from_slice(&self.count.to_le_bytes());
        b[8..16].copy_from_slice(&self.body_bytes.to_le_bytes());
        b[16..].copy_from_slice(&self.crc32.to_le_bytes());
        b
    }
}

fn err(path: &Path, what: impl std::fmt::Display) -> MatchError {
    MatchError::Gallery(format!("{}: {what}", path.display()))
}

/// Writes a gallery file entry by entry (see the module comment); the header is written by
/// [`GalleryWriter::finish`], so a file left unfinished is refused when read.
pub struct GalleryWriter {
    path: PathBuf,
    out: BufWriter<File>,
    count: u64,
    body_bytes: u64,
    crc: crc32fast::Hasher,
    buf: Vec<u8>,
}

impl GalleryWriter {
    pub fn create(path: &Path) -> Result<GalleryWriter, MatchError> {
        let mut out =
            BufWriter::with_capacity(1 << 20, File::create(path).map_err(|e| err(path, e))?);
        // A header of zeros until `finish`: magic and all, so an unfinished file is refused.
        out.write_all(&[0; HEADER]).map_err(|e| err(path, e))?;
        Ok(GalleryWriter {
            path: path.to_owned(),
            out,
            count: 0,
            body_bytes: 0,
            crc: crc32fast::Hasher::new(),
            buf: Vec::new(),
        })
    }

    pub fn push(&mut self, subject: SubjectId, print: &Tenprint) -> Result<(), MatchError> {
        self.buf.clear();
        let entry = postcard::to_extend(&(subject, print), std::mem::take(&mut self.buf))
            .map_err(|e| err(&self.path, e))?;
        self.crc.update(&entry);
        self.out.write_all(&entry).map_err(|e| err(&self.path, e))?;
        self.count += 1;
        self.body_bytes += entry.len() as u64;
        self.buf = entry;
        Ok(())
    }

    /// Writes the header and flushes the file to disk; returns the gallery's digest.
    pub fn finish(self) -> Result<GalleryDigest, MatchError> {
        let digest = GalleryDigest {
            count: self.count,
            body_bytes: self.body_bytes,
            crc32: self.crc.finalize(),
        };
        let path = self.path;
        let mut file = self.out.into_inner().map_err(|e| err(&path, e.error()))?;
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&digest.to_bytes());
        file.seek(SeekFrom::Start(0)).map_err(|e| err(&path, e))?;
        file.write_all(&header).map_err(|e| err(&path, e))?;
        file.sync_all().map_err(|e| err(&path, e))?;
        Ok(digest)
    }
}

/// Writes a whole gallery (subject id + enrolment capture) to a file.
pub fn write_gallery(
    path: &Path,
    entries: &[(SubjectId, Tenprint)],
) -> Result<GalleryDigest, MatchError> {
    let mut w = GalleryWriter::create(path)?;
    for (subject, print) in entries {
        w.push(*subject, print)?;
    }
    w.finish()
}

/// Reads a gallery file in chunks (see the module comment).
pub struct GalleryReader {
    path: PathBuf,
    input: BufReader<File>,
    /// Version 2's digest (none for version 1).
    digest: Option<GalleryDigest>,
    count: u64,
    /// A version-1 body, decoded whole when opened.
    v1: Option<std::vec::IntoIter<(SubjectId, Tenprint)>>,
    read: u64,
    body_read: u64,
    crc: crc32fast::Hasher,
    /// Bytes read and not yet decoded.
    pending: Vec<u8>,
    eof: bool,
}

impl GalleryReader {
    /// Opens a gallery file and reads its header.
    pub fn open(path: &Path) -> Result<GalleryReader, MatchError> {
        let mut input =
            BufReader::with_capacity(1 << 20, File::open(path).map_err(|e| err(path, e))?);
        let mut head = [0u8; V1_HEADER];
        input
            .read_exact(&mut head)
            .map_err(|_| err(path, "not a gallery file (too short)"))?;
        if &head[..8] != MAGIC {
            return Err(err(
                path,
                "not a gallery file (bad magic): an unfinished or foreign file",
            ));
        }
        let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
        let count = u64::from_le_bytes(head[12..20].try_into().expect("8 bytes"));
        let (digest, v1) = match version {
            1 => {
                let mut body = Vec::new();
                input.read_to_end(&mut body).map_err(|e| err(path, e))?;
                let entries: Vec<(SubjectId, Tenprint)> = postcard::from_bytes(&body)
                    .map_err(|e| err(path, format!("corrupt body: {e}")))?;
                (None, Some(entries.into_iter()))
            }
            VERSION => {
                let mut rest = [0u8; HEADER - V1_HEADER];
                input
                    .read_exact(&mut rest)
                    .map_err(|_| err(path, "header cut short"))?;
                let digest = GalleryDigest {
                    count,
                    body_bytes: u64::from_le_bytes(rest[..8].try_into().expect("8 bytes")),
                    crc32: u32::from_le_bytes(rest[8..].try_into().expect("4 bytes")),
                };
                (Some(digest), None)
            }
            v => {
                return Err(err(
                    path,
                    format!("format version {v}: this build reads versions 1 and {VERSION}"),
                ));
            }
        };
        Ok(GalleryReader {
            path: path.to_owned(),
            input,
            digest,
            count,
            v1,
            read: 0,
            body_read: 0,
            crc: crc32fast::Hasher::new(),
            pending: Vec::new(),
            eof: false,
        })
    }

    /// How many entries the header says the file holds.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The header's digest (version 2; none for version 1).
    pub fn digest(&self) -> Option<GalleryDigest> {
        self.digest
    }

    /// The next up to `n` entries; empty once all are read, after the file has been checked
    /// whole (count, length, CRC).
    pub fn next_chunk(&mut self, n: usize) -> Result<Vec<(SubjectId, Tenprint)>, MatchError> {
        let n = n.max(1);
        if let Some(v1) = &mut self.v1 {
            let chunk: Vec<_> = v1.by_ref().take(n).collect();
            self.read += chunk.len() as u64;
            if chunk.is_empty() && self.read != self.count {
                return Err(err(
                    &self.path,
                    format!("header says {} entries, body has {}", self.count, self.read),
                ));
            }
            return Ok(chunk);
        }
        let mut chunk =
            Vec::with_capacity(n.min((self.count - self.read.min(self.count)) as usize));
        let mut at = 0;
        while chunk.len() < n && self.read < self.count {
            match postcard::take_from_bytes::<(SubjectId, Tenprint)>(&self.pending[at..]) {
                Ok((entry, rest)) => {
                    at = self.pending.len() - rest.len();
                    self.read += 1;
                    chunk.push(entry);
                }
                Err(postcard::Error::DeserializeUnexpectedEnd) if !self.eof => {
                    self.pending.drain(..at);
                    at = 0;
                    self.fill()?;
                }
                Err(e) => {
                    return Err(err(
                        &self.path,
                        format!("corrupt entry {} of {}: {e}", self.read + 1, self.count),
                    ));
                }
            }
        }
        self.pending.drain(..at);
        if self.read == self.count && chunk.len() < n {
            self.check_end()?;
        }
        Ok(chunk)
    }

    /// Reads up to 1 MiB more of the body.
    fn fill(&mut self) -> Result<(), MatchError> {
        let before = self.pending.len();
        self.pending.resize(before + (1 << 20), 0);
        let got = self
            .input
            .read(&mut self.pending[before..])
            .map_err(|e| err(&self.path, e))?;
        self.pending.truncate(before + got);
        self.crc.update(&self.pending[before..]);
        self.body_read += got as u64;
        self.eof = got == 0;
        Ok(())
    }

    /// Once every entry is decoded: nothing follows them, and the body is the one the header
    /// describes.
    fn check_end(&mut self) -> Result<(), MatchError> {
        while !self.eof {
            self.fill()?;
        }
        let digest = self.digest.expect("version 2");
        let found = GalleryDigest {
            count: self.read,
            body_bytes: self.body_read,
            crc32: self.crc.clone().finalize(),
        };
        if !self.pending.is_empty() || found != digest {
            return Err(err(
                &self.path,
                format!(
                    "the body is not the one the header describes ({} bytes, CRC {:08x}; \
                     header: {} bytes, CRC {:08x}): corrupt or cut short",
                    found.body_bytes, found.crc32, digest.body_bytes, digest.crc32
                ),
            ));
        }
        Ok(())
    }
}

/// Reads a whole gallery file (for small galleries and tests; see [`GalleryReader`]).
pub fn read_gallery(path: &Path) -> Result<Vec<(SubjectId, Tenprint)>, MatchError> {
    let mut r = GalleryReader::open(path)?;
    let mut all = Vec::new();
    loop {
        let chunk = r.next_chunk(4096)?;
        if chunk.is_empty() {
            return Ok(all);
        }
        all.extend(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{CaptureModel, capture, master_tenprint};

    fn entries(n: u64) -> Vec<(SubjectId, Tenprint)> {
        (1..=n)
            .map(|p| {
                (
                    p,
                    capture(&master_tenprint(1, p), &CaptureModel::default(), p),
                )
            })
            .collect()
    }

    #[test]
    fn round_trip_in_chunks_and_the_digest_names_the_contents() {
        let dir = tempfile_dir("round-trip");
        let path = dir.join("g.bin");
        let all = entries(7);
        let digest = write_gallery(&path, &all).unwrap();
        assert_eq!(read_gallery(&path).unwrap(), all);
        let mut r = GalleryReader::open(&path).unwrap();
        assert_eq!((r.count(), r.digest()), (7, Some(digest)));
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        loop {
            let c = r.next_chunk(3).unwrap();
            if c.is_empty() {
                break;
            }
            sizes.push(c.len());
            got.extend(c);
        }
        assert_eq!((got, sizes), (all.clone(), vec![3, 3, 1]));
        // Another gallery has another digest.
        let other = write_gallery(&dir.join("h.bin"), &all[..6]).unwrap();
        assert_ne!(other, digest);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_cut_or_unfinished_file_is_refused_with_its_reason() {
        let dir = tempfile_dir("corrupt");
        let path = dir.join("g.bin");
        write_gallery(&path, &entries(5)).unwrap();
        let good = std::fs::read(&path).unwrap();
        let refused = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            match read_gallery(&path) {
                Err(MatchError::Gallery(m)) => m,
                other => panic!("expected a refusal, got {other:?}"),
            }
        };
        assert!(refused(&good[..good.len() / 2]).contains("corrupt"));
        let mut flipped = good.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x01;
        let m = refused(&flipped);
        assert!(m.contains("corrupt"), "{m}");
        let mut extra = good.clone();
        extra.push(0);
        assert!(refused(&extra).contains("not the one the header describes"));
        assert!(refused(b"not a gallery at all").contains("bad magic"));
        // A writer that never finished leaves a header of zeros.
        let mut w = GalleryWriter::create(&path).unwrap();
        w.push(1, &entries(1)[0].1).unwrap();
        drop(w);
        assert!(
            read_gallery(&path)
                .unwrap_err()
                .to_string()
                .contains("bad magic")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn version_1_files_are_still_read() {
        let dir = tempfile_dir("v1");
        let path = dir.join("g.bin");
        let all = entries(4);
        let body = postcard::to_allocvec(&all).unwrap();
        let mut v1 = b"IXGALLRY".to_vec();
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&4u64.to_le_bytes());
        v1.extend_from_slice(&body);
        std::fs::write(&path, v1).unwrap();
        let r = GalleryReader::open(&path).unwrap();
        assert_eq!(r.digest(), None);
        assert_eq!(read_gallery(&path).unwrap(), all);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gallery-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
