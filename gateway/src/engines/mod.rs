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
//! | [`slots`] | the cores the in-process galleries search on, handed out bureau by bureau |
//! | [`gallery_log`] | the IDENT gallery's enrolments and removals, recorded in the store |
//! | [`index`] | a world's gallery file made into a matcher: from its index snapshot, or built and saved as one |

pub mod gallery_log;
pub mod in_process;
pub mod index;
pub mod remote;
pub mod shard;
pub mod slots;

/// The attribute the engine traits are declared with, for implementations elsewhere.
pub use async_trait::async_trait;
pub use in_process::{DEFAULT_SEARCH_DEADLINE, DeadlineFit, GalleryBackend, InProcess};

use crate::world::{CriminalRecord, ImmigrationRecord};
use interop_matcher::Tenprint;
use std::sync::Arc;

/// The false-positive identification rate a gallery's hit/no-hit threshold is set for by
/// default (DESIGN.md §7: FNIR is judged at FPIR 0.1%).
pub const DEFAULT_FPIR: f64 = 0.001;
/// How many of a gallery's own prints are searched to calibrate it (fewer if it holds fewer):
/// 1,000 resolve FPIR 0.1%.
pub const CALIBRATION_SEARCHES: usize = 1_000;

/// How a gallery's hit/no-hit threshold is set when it is loaded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ThresholdRule {
    /// Calibrated from the gallery for this false-positive identification rate, with up to
    /// `searches` of its prints searched as non-mated probes (the default: [`DEFAULT_FPIR`],
    /// [`CALIBRATION_SEARCHES`]). A gallery too small to resolve the rate gets the matcher's
    /// extrapolation of its impostor tail (see [`interop_matcher::Calibration::resolved`]);
    /// one with fewer than two subjects keeps the fixed threshold.
    Calibrated { fpir: f64, searches: usize },
    /// A fixed score, e.g. the matcher's own [`interop_matcher::search::THRESHOLD`].
    Fixed(f32),
}

impl Default for ThresholdRule {
    fn default() -> Self {
        ThresholdRule::Calibrated {
            fpir: DEFAULT_FPIR,
            searches: CALIBRATION_SEARCHES,
        }
    }
}

impl ThresholdRule {
    /// The rule from the options: a fixed score if one is given, else calibration for `fpir`.
    pub fn from_options(fpir: f64, fixed: Option<f32>, searches: usize) -> ThresholdRule {
        match fixed {
            Some(t) => ThresholdRule::Fixed(t),
            None => ThresholdRule::Calibrated { fpir, searches },
        }
    }

    /// Sets `matcher`'s threshold by this rule and logs it, naming `gallery`. A calibration
    /// the gallery cannot make (fewer than two subjects) keeps the matcher's threshold, with a
    /// warning; a bad rate is an error (the options refuse one before this).
    pub fn apply(
        &self,
        matcher: &dyn interop_matcher::Matcher,
        gallery: &str,
    ) -> anyhow::Result<()> {
        match *self {
            ThresholdRule::Fixed(t) => {
                matcher.set_threshold(t);
                tracing::info!(
                    gallery,
                    threshold = t,
                    "hit/no-hit threshold fixed (--threshold)"
                );
            }
            ThresholdRule::Calibrated { fpir, searches } => {
                let started = std::time::Instant::now();
                match matcher.calibrate_threshold(fpir, searches) {
                    Ok(cal) => log_calibration(&cal, gallery, started.elapsed()),
                    Err(interop_matcher::MatchError::Calibration(why)) if matcher.len() < 2 => {
                        tracing::warn!(gallery, %why, threshold = matcher.threshold(), "hit/no-hit threshold not calibrated: the gallery is too small; the fixed threshold stays");
                    }
                    Err(e) => {
                        anyhow::bail!("calibrating {gallery}'s threshold for FPIR {fpir}: {e}")
                    }
                }
            }
        }
        Ok(())
    }
}

/// Logs a threshold calibration of `gallery` (see
/// [`interop_matcher::Matcher::calibrate_threshold`]), with a warning if its searches could
/// not resolve the target rate.
fn log_calibration(cal: &interop_matcher::Calibration, gallery: &str, took: std::time::Duration) {
    tracing::info!(
        gallery,
        target_fpir = cal.target_fpir,
        threshold = cal.threshold,
        searches = cal.searches,
        resolved = cal.resolved,
        highest_impostor = cal.highest_impostor,
        ms = took.as_millis() as u64,
        "hit/no-hit threshold calibrated from the gallery"
    );
    if !cal.resolved {
        tracing::warn!(
            gallery,
            searches = cal.searches,
            threshold = cal.threshold,
            "too few prints in the gallery to resolve the target FPIR: the threshold is extrapolated from the tail of its impostor scores"
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

    /// Its searches waiting and running on this process's search threads, where it has them
    /// (see [`slots`]), for `/metrics`.
    fn search_load(&self) -> Option<slots::SearchLoad> {
        self.search_slots().map(|s| s.figures())
    }

    /// This process's search threads, where it searches in process: other searches of the
    /// process (the admin's `MatcherService`) take their turn on them too.
    fn search_slots(&self) -> Option<Arc<slots::SearchSlots>> {
        None
    }
}

#[async_trait::async_trait]
pub trait CriminalHistory: Send + Sync + 'static {
    /// The rap sheet of the person, if the prints match one.
    async fn check(&self, prints: Tenprint) -> Result<Option<CriminalRecord>, BackendError>;

    /// See [`IdentSearch::search_load`].
    fn search_load(&self) -> Option<slots::SearchLoad> {
        self.search_slots().map(|s| s.figures())
    }

    /// See [`IdentSearch::search_slots`].
    fn search_slots(&self) -> Option<Arc<slots::SearchSlots>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use interop_matcher::IndexedMatcher;
    use interop_matcher::search::THRESHOLD;
    use interop_matcher::synth::{CaptureModel, capture, master_tenprint};

    fn gallery(people: u64) -> IndexedMatcher {
        let m = IndexedMatcher::new(2);
        let prints: Vec<_> = (1..=people)
            .map(|p| {
                (
                    p,
                    capture(&master_tenprint(4, p), &CaptureModel::default(), p),
                )
            })
            .collect();
        m.enroll_many(&prints).unwrap();
        m
    }

    /// The default calibrates; a gallery too small to resolve the rate gets the matcher's
    /// small-gallery threshold; one of a single print keeps the fixed threshold and still
    /// starts; a fixed rule sets its score; a bad rate fails and changes nothing.
    #[test]
    fn threshold_rules_hold_for_galleries_of_any_size() {
        let one = gallery(1);
        ThresholdRule::default().apply(&one, "IDENT").unwrap();
        assert_eq!(one.threshold(), THRESHOLD);

        let small = gallery(40);
        ThresholdRule::default().apply(&small, "IDENT").unwrap();
        let extrapolated = small.threshold();
        assert!(extrapolated < THRESHOLD, "{extrapolated}");

        let resolved = gallery(300);
        let rule = ThresholdRule::Calibrated {
            fpir: 0.01,
            searches: 300,
        };
        rule.apply(&resolved, "FBI").unwrap();
        let t = resolved.threshold();
        assert!(
            t < extrapolated,
            "a 1% point below the 0.1% one: {t} {extrapolated}"
        );

        let bad = ThresholdRule::Calibrated {
            fpir: 1.5,
            searches: 300,
        };
        let e = bad.apply(&resolved, "FBI").unwrap_err().to_string();
        assert!(e.contains("FBI") && e.contains("1.5"), "{e}");
        assert_eq!(resolved.threshold(), t);

        ThresholdRule::Fixed(0.42).apply(&resolved, "FBI").unwrap();
        assert_eq!(resolved.threshold(), 0.42);
    }
}
