//! The disclosure audit's archive: records pruned from the store live on as segment files of
//! JSON lines, `DATA/archive/disclosures-<first>-<last>.jsonl` (sequence numbers zero-padded
//! to 12 digits so a listing sorts in order), one record a line, in sequence order.
//!
//! An audit is evidence, so a record leaves the store only once its segment is durable: the
//! segment is written under a hidden `.partial` name, synced, renamed into place and the
//! directory synced, and only then are its records pruned ([`crate::store::Store::archive_disclosures`]).
//! A pass that stops between the two (a crash, a full disk) leaves a complete segment and its
//! records still in the store; the next pass finds the segment holding the first record kept
//! ([`prepare`]) and prunes through it instead of writing a second copy, and removes any
//! `.partial` file left behind. So each record is archived exactly once.
//!
//! The line format is the record as the store keeps it plus its sequence number and an RFC 3339
//! time, e.g. `{"seq":1,"disclosed_at":"2011-06-01T10:00:00.500+00:00","at_ms":...,
//! "recipient":"spiffe://interop.local/bureau/TX","serial":"0a","rpc":"...","state":"TX",
//! "tcn":"...","kind":"IdentOutcome","cursor":1}`; `interop-gateway audit export` writes the
//! records still held in the same format. Ids only, as in the store.

use super::Disclosure;
use serde::Serialize;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Most records in one segment (about 25 MB of JSON); a larger backlog makes several.
pub const SEGMENT_MAX: usize = 100_000;

const PREFIX: &str = "disclosures-";
const SUFFIX: &str = ".jsonl";
const PARTIAL: &str = ".partial";

/// The archive directory of a data directory.
pub fn dir_in(data: &Path) -> PathBuf {
    data.join("archive")
}

/// One complete segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Sequence numbers of its first and last records (every one between is in it).
    pub first: u64,
    pub last: u64,
    pub path: PathBuf,
    pub bytes: u64,
}

/// The file name of the segment holding `first..=last`.
pub fn segment_name(first: u64, last: u64) -> String {
    format!("{PREFIX}{first:012}-{last:012}{SUFFIX}")
}

fn parse_name(name: &str) -> Option<(u64, u64)> {
    let (first, last) = name
        .strip_prefix(PREFIX)?
        .strip_suffix(SUFFIX)?
        .split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()?))
}

#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    disclosed_at: String,
    #[serde(flatten)]
    record: &'a Disclosure,
}

/// One record as a line of the archive (without the newline).
pub fn json_line(seq: u64, d: &Disclosure) -> String {
    let disclosed_at = chrono::DateTime::from_timestamp_millis(d.at_ms)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    let line = Line {
        seq,
        disclosed_at,
        record: d,
    };
    serde_json::to_string(&line).expect("a disclosure serialises")
}

/// Syncs a directory, so the entries created or renamed in it survive a power cut.
fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `records` (consecutive sequence numbers, in order) as one segment in `dir`: written
/// under a hidden name, synced, renamed into place, the directory synced. Only when this
/// returns are the records durable in the archive.
pub fn write_segment(dir: &Path, records: &[(u64, Disclosure)]) -> io::Result<Segment> {
    let (Some((first, _)), Some((last, _))) = (records.first(), records.last()) else {
        return Err(io::Error::other("an archive segment needs records"));
    };
    let (first, last) = (*first, *last);
    if !dir.is_dir() {
        super::private_dir(dir)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
    }
    let name = segment_name(first, last);
    let partial = dir.join(format!(".{name}{PARTIAL}"));
    let file = std::fs::File::create(&partial)?;
    super::private_file(&partial)?;
    let mut out = io::BufWriter::new(file);
    for (seq, d) in records {
        out.write_all(json_line(*seq, d).as_bytes())?;
        out.write_all(b"\n")?;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let bytes = file.metadata()?.len();
    drop(file);
    let path = dir.join(name);
    std::fs::rename(&partial, &path)?;
    sync_dir(dir)?;
    Ok(Segment {
        first,
        last,
        path,
        bytes,
    })
}

/// Every complete segment in `dir`, in sequence order (none if `dir` does not exist).
pub fn segments(dir: &Path) -> io::Result<Vec<Segment>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some((first, last)) = name.to_str().and_then(parse_name) else {
            continue;
        };
        out.push(Segment {
            first,
            last,
            path: entry.path(),
            bytes: entry.metadata()?.len(),
        });
    }
    out.sort_by_key(|s| s.first);
    Ok(out)
}

/// Before a pass archives from sequence number `first`: removes the `.partial` files a
/// stopped pass left, and returns the complete segment holding `first`, if a pass wrote it
/// but stopped before pruning all of it.
pub fn prepare(dir: &Path, first: u64) -> io::Result<Option<Segment>> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&format!(".{PREFIX}")) && name.ends_with(PARTIAL) {
                std::fs::remove_file(entry.path())?;
            }
        }
    }
    Ok(segments(dir)?
        .into_iter()
        .find(|s| s.first <= first && first <= s.last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DisclosureKind;

    fn rec(tcn: &str) -> Disclosure {
        Disclosure {
            at_ms: 1_307_000_000_500,
            recipient: "spiffe://interop.local/bureau/TX".into(),
            serial: "0a".into(),
            rpc: "interop.v1.SubmissionService/StreamResponses".into(),
            state: "TX".into(),
            tcn: tcn.into(),
            kind: DisclosureKind::Immigration,
            cursor: 3,
        }
    }

    #[test]
    fn a_segment_is_json_lines_named_by_its_range_and_found_by_any_record_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir_in(dir.path());
        std::fs::create_dir_all(&archive).unwrap();
        std::fs::write(archive.join(".disclosures-x.jsonl.partial"), b"half").unwrap();
        let seg = write_segment(&archive, &[(7, rec("T-7")), (8, rec("T-8"))]).unwrap();
        assert_eq!((seg.first, seg.last), (7, 8));
        assert!(
            seg.path
                .ends_with("disclosures-000000000007-000000000008.jsonl")
        );
        let text = std::fs::read_to_string(&seg.path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["seq"], 7);
        assert_eq!(lines[1]["tcn"], "T-8");
        assert_eq!(lines[0]["kind"], "Immigration");
        assert_eq!(lines[0]["disclosed_at"], "2011-06-02T07:33:20.500+00:00");
        assert_eq!(seg.bytes, text.len() as u64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&seg.path).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o777,
                0o600,
                "an archived segment is the owner's only"
            );
        }
        assert_eq!(prepare(&archive, 8).unwrap(), Some(seg.clone()));
        assert_eq!(prepare(&archive, 9).unwrap(), None);
        assert_eq!(segments(&archive).unwrap(), [seg]);
        let left: Vec<_> = std::fs::read_dir(&archive).unwrap().collect();
        assert_eq!(
            left.len(),
            1,
            "the partial file a stopped pass left is removed"
        );
        assert!(segments(&dir.path().join("none")).unwrap().is_empty());
    }
}
