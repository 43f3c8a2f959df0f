//! Finger minutiae templates and the standard records that carry them.
//!
//! - [`template`]: a finger's minutiae as the matcher keeps them and as ISO/IEC 19794-2 and
//!   ANSI INCITS 378 records hold them (positions in pixels at 500 ppi, whole-degree angles).
//! - [`formats`]: those two records, detected, decoded and encoded.
//!
//! Its own small crate (serde and thiserror only) because more than the matcher reads and
//! writes these records: the gateway's validation decodes a submitted record into finger
//! records, and the `interop` command line reads template files into a submission. The
//! matcher (`interop-matcher`, which re-exports both modules under its own name) enrols and
//! searches the templates; a client that only sends a record has no business compiling a
//! 1:N matcher.

pub mod formats;
pub mod template;

pub use template::{FingerTemplate, Minutia, MinutiaKind, Tenprint};
