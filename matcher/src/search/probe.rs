//! A probe prepared for both stages, once per search: its fingers with their edges (stage
//! 2's side of the pairing), their histogram codes, their pattern-class probabilities, and on
//! demand its edge words (stage 1's side).

use super::edges::{Prepared, Scratch, prepare};
use super::geometry::{POSITIONS, slot, used_points};
use super::histogram::{Code, histogram, quantise};
use super::patterns::PATTERN_CLASSES;
use super::stage1::FirstCode;
use super::tuning::{PATTERN_MIN_FINGERS, POOR_HIST_WEIGHT, POOR_PROBE_QUALITY};
use super::words::{ProbeWords, probe_words};
use crate::{MatchError, Tenprint};

/// A probe prepared for both stages: its fingers (with a slot) and their stage-1 codes.
pub(super) struct ProbeCodes {
    pub(super) fingers: Vec<(usize, Prepared)>,
    pub(super) hists: Vec<(usize, Code)>,
    /// Per slot, the probabilities of its finger's pattern classes (the first finger listed).
    pub(super) patterns: [Option<[f32; PATTERN_CLASSES]>; POSITIONS],
    /// The mean quality the extractor gave the probe's minutiae (those it gave one: a
    /// template read back from the gallery has none), if any.
    pub(super) quality: Option<f32>,
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
        let (rated, sum) = probe
            .fingers
            .iter()
            .flat_map(|f| &f.minutiae)
            .filter(|m| m.quality > 0)
            .fold((0u32, 0u32), |(n, sum), m| (n + 1, sum + m.quality as u32));
        let quality = (rated > 0).then(|| sum as f32 / rated as f32);
        Ok(ProbeCodes {
            patterns,
            quality,
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

    /// The weight of the histogram code in stage 1's fused score for this probe: less for a
    /// probe the extractor rated poor (see [`POOR_PROBE_QUALITY`]).
    pub(super) fn hist_weight(&self) -> f32 {
        match self.quality {
            Some(q) if q < POOR_PROBE_QUALITY => POOR_HIST_WEIGHT,
            _ => 1.0,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{Band, booking_capture};
    use crate::search::tuning::{POOR_HIST_WEIGHT, POOR_PROBE_QUALITY};
    use crate::synth::master_tenprint;

    /// A poor capture's histogram code weighs less in the fused score; a livescan's, an ink
    /// card's and a template without qualities (a gallery print read back, as calibration
    /// searches one) weigh in full.
    #[test]
    fn a_poor_capture_weighs_its_histograms_less() {
        let master = master_tenprint(7, 42);
        let weight = |band| ProbeCodes::new(&booking_capture(&master, band, 3).print).unwrap();
        let poor = weight(Band::Poor);
        assert!(
            poor.quality.unwrap() < POOR_PROBE_QUALITY,
            "{:?}",
            poor.quality
        );
        assert_eq!(poor.hist_weight(), POOR_HIST_WEIGHT);
        for band in [Band::Livescan, Band::InkCard] {
            assert_eq!(weight(band).hist_weight(), 1.0, "{band:?}");
        }
        let mut unrated = booking_capture(&master, Band::Poor, 3).print;
        for f in &mut unrated.fingers {
            for m in &mut f.minutiae {
                m.quality = 0;
            }
        }
        let unrated = ProbeCodes::new(&unrated).unwrap();
        assert_eq!((unrated.quality, unrated.hist_weight()), (None, 1.0));
    }
}
