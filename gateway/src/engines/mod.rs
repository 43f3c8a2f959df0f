//! The two engines a booking is checked against, behind traits so the embedded default and a
//! remote one are interchangeable (DESIGN.md §4):
//! - [`IdentSearch`]: DHS IDENT's 1:N biometric search, returning the immigration record of
//!   the person the prints belong to;
//! - [`CriminalHistory`]: the FBI criminal-history check (a stub of IAFIS/NGI), returning the
//!   rap sheet of the person the prints belong to.
//!
//! Both identify from the prints alone, never from an id in the request.
//!
//! | module | what |
//! |---|---|
//! | [`in_process`] | both galleries in this process (the default) |
//! | [`remote`] | IDENT over matcher shard processes, scattered and gathered |
//! | [`shard`] | one shard as its own process (`interop-matcher serve`) |
//! | [`gallery_log`] | the IDENT gallery's enrolments and removals, recorded in the store |
//! | [`index`] | a world's gallery file made into a matcher: from its index snapshot, or built and saved as one |

pub mod gallery_log;
pub mod in_process;
pub mod index;
pub mod remote;
pub mod shard;

/// The attribute the engine traits are declared with, for implementations elsewhere.
pub use async_trait::async_trait;
pub use in_process::{DEFAULT_SEARCH_DEADLINE, DeadlineFit, GalleryBackend, InProcess};

use crate::world::{CriminalRecord, ImmigrationRecord};
use interop_matcher::Tenprint;

/// Logs a threshold calibration set by the option `flag` (see
/// [`interop_matcher::Matcher::calibrate_threshold`]), with a warning if its searches could not resolve the
/// target rate.
pub fn log_calibration(cal: &interop_matcher::Calibration, flag: &str) {
    tracing::info!(
        target_fpir = cal.target_fpir,
        threshold = cal.threshold,
        searches = cal.searches,
        resolved = cal.resolved,
        "hit/no-hit threshold calibrated from the gallery ({flag})"
    );
    if !cal.resolved {
        tracing::warn!(
            searches = cal.searches,
            "too few searches to resolve {flag}: the threshold is just above the highest impostor score"
        );
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("matcher: {0}")]
    Matcher(String),
    #[error("backend unavailable: {0}")]
    Unavailable(String),
}

/// An IDENT hit: the matched person's FIN, score and immigration record.
#[derive(Clone, Debug, PartialEq)]
pub struct IdentHit {
    pub score: f32,
    pub record: ImmigrationRecord,
}

#[async_trait::async_trait]
pub trait IdentSearch: Send + Sync + 'static {
    /// `Ok(None)` is a completed search with no hit; an incomplete search is an error.
    async fn search(&self, prints: Tenprint) -> Result<Option<IdentHit>, BackendError>;
}

#[async_trait::async_trait]
pub trait CriminalHistory: Send + Sync + 'static {
    /// The rap sheet of the person, if the prints match one.
    async fn check(&self, prints: Tenprint) -> Result<Option<CriminalRecord>, BackendError>;
}
