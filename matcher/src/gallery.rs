//! Gallery files: the enrolment templates of a gallery, written by the world generator and
//! read by the gateway at start. A short header (magic, format version, count) guards
//! against reading the wrong file; the body is postcard (compact serde).

use crate::{MatchError, SubjectId, Tenprint};
use std::path::Path;

const MAGIC: &[u8; 8] = b"IXGALLRY";
const VERSION: u32 = 1;

/// Writes a gallery (subject id + enrolment capture) to a file.
pub fn write_gallery(path: &Path, entries: &[(SubjectId, Tenprint)]) -> Result<(), MatchError> {
    let body = postcard::to_allocvec(entries).map_err(|e| MatchError::Gallery(e.to_string()))?;
    let mut out = Vec::with_capacity(body.len() + 20);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    std::fs::write(path, out).map_err(|e| MatchError::Gallery(format!("{}: {e}", path.display())))
}

/// Reads a gallery file written by [`write_gallery`].
pub fn read_gallery(path: &Path) -> Result<Vec<(SubjectId, Tenprint)>, MatchError> {
    let bytes =
        std::fs::read(path).map_err(|e| MatchError::Gallery(format!("{}: {e}", path.display())))?;
    decode(&bytes)
}

fn decode(bytes: &[u8]) -> Result<Vec<(SubjectId, Tenprint)>, MatchError> {
    if bytes.len() < 20 || &bytes[..8] != MAGIC {
        return Err(MatchError::Gallery("not a gallery file (bad magic)".into()));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(MatchError::Gallery(format!(
            "format version {version}, expected {VERSION}"
        )));
    }
    let count = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let entries: Vec<(SubjectId, Tenprint)> = postcard::from_bytes(&bytes[20..])
        .map_err(|e| MatchError::Gallery(format!("corrupt body: {e}")))?;
    if entries.len() as u64 != count {
        return Err(MatchError::Gallery(format!(
            "header says {count} entries, body has {}",
            entries.len()
        )));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{CaptureModel, capture, master_tenprint};

    #[test]
    fn round_trip_and_corruption_is_reported() {
        let dir = std::env::temp_dir().join(format!("gallery-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("g.bin");
        let entries: Vec<_> = (1..=5u64)
            .map(|p| {
                (
                    p,
                    capture(&master_tenprint(1, p), &CaptureModel::default(), p),
                )
            })
            .collect();
        write_gallery(&path, &entries).unwrap();
        assert_eq!(read_gallery(&path).unwrap(), entries);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() / 2);
        assert!(matches!(decode(&bytes), Err(MatchError::Gallery(_))));
        assert!(matches!(
            decode(b"not a gallery at all"),
            Err(MatchError::Gallery(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
