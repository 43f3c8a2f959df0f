//! The biometric engine: minutiae templates, a realistic synthetic fingerprint generator,
//! and a sharded in-memory 1:N tenprint matcher behind the [`Matcher`] trait.
//!
//! Identification is from the features of a capture only; nothing here ever sees a person
//! id other than the gallery's own subject ids.

pub mod capture;
mod fmath;
pub mod gallery;
mod pages;
pub mod pattern;
pub mod search;
pub mod stats;
pub mod synth;

/// The templates and the standard-record codec live in `interop-minutiae`, which the client
/// uses without the matcher; they keep their paths here.
pub use interop_minutiae::{formats, template};

pub use search::IndexedMatcher;
pub use template::{FingerTemplate, Minutia, MinutiaKind, Tenprint};

/// Gallery-local subject id (IDENT's FIN or the FBI number are mapped to it by the caller).
pub type SubjectId = u64;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MatchError {
    #[error("probe has no usable finger")]
    EmptyProbe,
    #[error("subject {0} is already enrolled")]
    AlreadyEnrolled(SubjectId),
    #[error("subject {0} is not enrolled")]
    NotEnrolled(SubjectId),
    /// A template the matcher cannot hold (the message names the field and the limit).
    #[error("template not supported: {0}")]
    Unsupported(String),
    #[error("gallery file: {0}")]
    Gallery(String),
    /// The search's deadline passed before it finished; nothing was decided.
    #[error("the search's deadline passed before it finished")]
    DeadlineExceeded,
    /// A threshold calibration that cannot be made (the message says why).
    #[error("calibration: {0}")]
    Calibration(String),
}

/// One ranked candidate of a 1:N search.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub subject: SubjectId,
    /// Fused tenprint score; higher is more similar.
    pub score: f32,
}

/// Result of a 1:N search: candidates best first, and the decision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SearchResult {
    pub candidates: Vec<Candidate>,
    /// The best candidate if its score reaches the matcher's decision threshold.
    pub hit: Option<Candidate>,
}

/// A decision threshold set from the gallery (see [`Matcher::calibrate_threshold`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Calibration {
    pub target_fpir: f64,
    pub threshold: f32,
    /// Non-mated searches the threshold was set from.
    pub searches: usize,
    pub highest_impostor: f32,
    /// Whether the searches resolve the target (at least 1 / `target_fpir` of them); if not,
    /// the threshold is extrapolated from the tail of the impostor scores seen (see
    /// `search/calibrate.rs`), never below the highest of them.
    pub resolved: bool,
}

/// A 1:N tenprint matcher over an in-memory gallery. Methods are synchronous and CPU-bound:
/// async callers run them on a blocking pool.
pub trait Matcher: Send + Sync {
    /// Adds a subject to the gallery.
    fn enroll(&self, subject: SubjectId, print: &Tenprint) -> Result<(), MatchError>;
    /// Takes a subject out of the gallery: no search that starts after this returns finds
    /// it, and its id may be enrolled again.
    fn remove(&self, subject: SubjectId) -> Result<(), MatchError>;
    /// Searches the gallery for the person whose prints these are.
    fn search(&self, probe: &Tenprint, max_candidates: usize) -> Result<SearchResult, MatchError> {
        self.search_before(probe, max_candidates, None)
    }
    /// [`Matcher::search`] that gives up with [`MatchError::DeadlineExceeded`] once
    /// `deadline` passes (every shard checks it as it goes), rather than finish an answer no
    /// one waits for. A search that gives up decides nothing: never a "no hit".
    fn search_before(
        &self,
        probe: &Tenprint,
        max_candidates: usize,
        deadline: Option<std::time::Instant>,
    ) -> Result<SearchResult, MatchError>;
    /// Sets the hit/no-hit threshold for a target false-positive identification rate (FPIR)
    /// from the gallery itself, searching `searches` enrolled prints as non-mated probes (see
    /// the implementation for how), and says how well the searches resolve it.
    fn calibrate_threshold(
        &self,
        target_fpir: f64,
        searches: usize,
    ) -> Result<Calibration, MatchError>;
    /// The score at which a search's best candidate is a hit.
    fn threshold(&self) -> f32;
    /// Sets the hit/no-hit threshold (searches that start afterwards use it).
    fn set_threshold(&self, threshold: f32);
    /// Number of enrolled subjects.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
