//! TODO(helper): gallery files.
use crate::{MatchError, SubjectId, Tenprint};
use std::path::Path;

/// Writes a gallery (subject id + enrollment capture) to a file.
pub fn write_gallery(_path: &Path, _entries: &[(SubjectId, Tenprint)]) -> Result<(), MatchError> {
    todo!()
}
/// Reads a gallery file written by [`write_gallery`].
pub fn read_gallery(_path: &Path) -> Result<Vec<(SubjectId, Tenprint)>, MatchError> {
    todo!()
}
