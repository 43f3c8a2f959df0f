//! Setting the decision threshold from the gallery itself, for a target false-positive
//! identification rate (FPIR): the gallery's own prints, searched with themselves left out,
//! are the non-mated searches an operator would otherwise have to supply.

use super::IndexedMatcher;
use crate::{Calibration, MatchError, Matcher, SubjectId, Tenprint};
use rayon::prelude::*;

impl IndexedMatcher {
    /// [`Matcher::calibrate_threshold`]: the threshold for `target_fpir` from `searches` of
    /// the gallery's own prints, each searched with itself left out (see the trait impl).
    ///
    /// The default, [`THRESHOLD`](super::THRESHOLD), sits far above these points (FPIR 0.1%
    /// was 0.21 at 1,000,000 identities in `matcher-bench`): this is for an operator who wants
    /// the decision at a stated FPIR instead.
    pub(super) fn calibrate(
        &self,
        target_fpir: f64,
        searches: usize,
    ) -> Result<Calibration, MatchError> {
        if !(target_fpir > 0.0 && target_fpir < 1.0) {
            return Err(MatchError::Calibration(format!(
                "target FPIR {target_fpir}: must be above 0 and below 1"
            )));
        }
        let probes: Vec<(SubjectId, Tenprint)> = {
            let shards = self.read_shards();
            let live: usize = shards.iter().map(|s| s.live()).sum();
            if live < 2 {
                return Err(MatchError::Calibration(format!(
                    "needs at least 2 enrolled subjects, the gallery has {live}"
                )));
            }
            let want = searches.clamp(1, live);
            let entries = shards.iter().flat_map(|s| {
                (0..s.len())
                    .filter(|&e| !s.is_removed(e))
                    .map(move |e| (s.subjects[e], s, e))
            });
            // `want` of the live entries, evenly spaced.
            let mut probes = Vec::with_capacity(want);
            for (i, (subject, s, e)) in entries.enumerate() {
                if probes.len() < want && i == probes.len() * live / want {
                    probes.push((subject, s.print(e)));
                }
            }
            probes
        };
        let mut impostors: Vec<f32> = probes
            .par_iter()
            .map(|(subject, print)| {
                self.search(print, 2).map(|r| {
                    r.candidates
                        .iter()
                        .find(|c| c.subject != *subject)
                        .map_or(0.0, |c| c.score)
                })
            })
            .collect::<Result<_, _>>()?;
        impostors.sort_by(|a, b| b.total_cmp(a));
        let n = impostors.len();
        // At most `allowed` impostors reach a threshold just above the one ranked there.
        let allowed = ((target_fpir * n as f64).floor() as usize).min(n - 1);
        let threshold = impostors[allowed].next_up();
        self.set_threshold(threshold);
        Ok(Calibration {
            target_fpir,
            threshold,
            searches: n,
            highest_impostor: impostors[0],
            resolved: n as f64 * target_fpir >= 1.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::THRESHOLD;
    use crate::search::reference::{enrol_capture, probe};

    /// A threshold calibrated from the gallery for an FPIR holds on strangers the calibration
    /// never saw, still finds the mates, and a looser target gives a lower threshold. Bad
    /// targets are refused and change nothing.
    #[test]
    fn calibrated_threshold_holds_its_fpir_on_fresh_strangers() {
        let m = IndexedMatcher::new(3);
        m.enroll(1, &enrol_capture(1)).unwrap();
        assert!(matches!(
            m.calibrate_threshold(0.01, 100),
            Err(MatchError::Calibration(e)) if e.contains("at least 2")
        ));
        let prints: Vec<(SubjectId, Tenprint)> = (2..=500).map(|p| (p, enrol_capture(p))).collect();
        m.enroll_many(&prints).unwrap();
        for bad in [0.0, 1.0, -0.1, f64::NAN] {
            assert!(matches!(
                m.calibrate_threshold(bad, 100),
                Err(MatchError::Calibration(_))
            ));
            assert_eq!(m.threshold(), THRESHOLD);
        }
        let loose = m.calibrate_threshold(0.2, 200).unwrap();
        let c = m.calibrate_threshold(0.02, 200).unwrap();
        assert_eq!((c.searches, c.resolved), (200, true), "{c:?}");
        assert!(loose.threshold < c.threshold, "{loose:?} {c:?}");
        assert!(c.threshold <= c.highest_impostor.next_up(), "{c:?}");
        assert!(c.threshold < THRESHOLD, "the default sits above: {c:?}");
        assert_eq!(m.threshold(), c.threshold);
        // 200 strangers: about 2% reach it (4 expected); far more would mean it does not hold.
        let false_hits = (0..200)
            .filter(|&i| m.search(&probe(20_000 + i, 0), 1).unwrap().hit.is_some())
            .count();
        assert!(
            false_hits <= 12,
            "{false_hits} of 200 strangers hit at {c:?}"
        );
        for p in [1, 250, 500] {
            assert_eq!(
                m.search(&probe(p, 1), 1).unwrap().hit.map(|c| c.subject),
                Some(p)
            );
        }
        // Unresolvable: just above the highest impostor seen, and said so.
        let tight = m.calibrate_threshold(0.001, 50).unwrap();
        assert!(!tight.resolved);
        assert_eq!(tight.threshold, tight.highest_impostor.next_up());
    }
}
