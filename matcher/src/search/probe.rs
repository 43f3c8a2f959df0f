//! A probe prepared for both stages, once per search: its fingers with their edges (stage
//! 2's side of the pairing), their histogram codes, their pattern-class probabilities, and on
//! demand its edge words (stage 1's side).

use super::edges::{Prepared, Scratch, prepare};
use super::geometry::{POSITIONS, slot, used_points};
use super::histogram::{Code, histogram, quantise};
use super::patterns::PATTERN_CLASSES;
use super::stage1::FirstCode;
use super::tuning::PATTERN_MIN_FINGERS;
use super::words::{ProbeWords, probe_words};
use crate::{MatchError, Tenprint};

/// A probe prepared for both stages: its fingers (with a slot) and their stage-1 codes.
pub(super) struct ProbeCodes {
    pub(super) fingers: Vec<(usize, Prepared)>,
    pub(super) hists: Vec<(usize, Code)>,
    /// Per slot, the probabilities of its finger's pattern classes (the first finger listed).
    pub(super) patterns: [Option<[f32; PATTERN_CLASSES]>; POSITIONS],
}

impl ProbeCodes {
    pub(super) fn new(probe: &Tenprint) -> Result<ProbeCodes, MatchError> {
        let fingers: Vec<(usize, Prepared)> = probe
            .fingers
            .iter()
            .filter(|f| !f.minutiae.is_empty())
            .filter_map(|f| Some((slot(f.position)?, prepare(used_points(f)))))
            .collect();
        if fingers.is_empty() {
            return Err(MatchError::EmptyProbe);
        }
        let mut patterns = [None; POSITIONS];
        for f in probe.fingers.iter().filter(|f| !f.minutiae.is_empty()) {
            if let Some(s) = slot(f.position)
                && patterns[s].is_none()
            {
                patterns[s] = Some(crate::pattern::probabilities(f));
            }
        }
        Ok(ProbeCodes {
            patterns,
            hists: fingers
                .iter()
                .map(|(s, f)| (*s, quantise(&histogram(&f.points, &mut Scratch::default()))))
                .collect(),
            fingers,
        })
    }

    /// The probe's edge words (see [`probe_words`]), for stage 1 by words.
    pub(super) fn words(&self) -> ProbeWords {
        probe_words(&self.fingers)
    }

    /// Whether stage 1 ranks this probe by pattern classes under `first`.
    pub(super) fn ranks_by_patterns(&self, first: FirstCode) -> bool {
        match first {
            FirstCode::Words => false,
            FirstCode::Patterns => true,
            FirstCode::Auto => self.patterns.iter().flatten().count() >= PATTERN_MIN_FINGERS,
        }
    }
}
