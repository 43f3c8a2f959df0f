//! Setting the decision threshold from the gallery itself, for a target false-positive
//! identification rate (FPIR): the gallery's own prints, searched with themselves left out,
//! are the non-mated searches an operator would otherwise have to supply.

use super::{IndexedMatcher, MIN_TAIL_SEARCHES, STRANGER_FLOOR, STRANGER_FLOOR_FPIR, THRESHOLD};
use crate::{Calibration, MatchError, Matcher, SubjectId, Tenprint};
use rayon::prelude::*;

impl IndexedMatcher {
    /// [`Matcher::calibrate_threshold`]: the threshold for `target_fpir` from `searches` of
    /// the gallery's own prints, each searched with itself left out (see the trait impl).
    ///
    /// The gateway calibrates every gallery it loads this way, for FPIR 0.1% unless told
    /// otherwise; the fixed [`THRESHOLD`](super::THRESHOLD) sits far above that point (0.21 at
    /// 100,000 and 1,000,000 identities in `matcher-bench`) and misses poor prints.
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
        // Just above the k-th best impostor score: a stranger's best score exceeds it with
        // probability k / (n + 1), so k = target · (n + 1) (just above the k + 1-th, as this
        // was, gave FPIR 0.2% where 0.1% was asked).
        let k = (target_fpir * (n + 1) as f64).floor() as usize;
        let resolved = k >= 1;
        let threshold = if resolved {
            impostors[k.min(n) - 1].next_up()
        } else {
            unresolved_threshold(&impostors, target_fpir)
        };
        // The gallery's own prints are cleaner probes than bookings: never below what
        // strangers of the booking mix reach (see [`STRANGER_FLOOR`]).
        let threshold = if target_fpir <= STRANGER_FLOOR_FPIR {
            threshold.max(STRANGER_FLOOR)
        } else {
            threshold
        };
        self.set_threshold(threshold);
        Ok(Calibration {
            target_fpir,
            threshold,
            searches: n,
            highest_impostor: impostors[0],
            resolved,
        })
    }
}

/// The threshold for `target_fpir` from impostor scores (best first) too few to hold a
/// `target_fpir` share of them: their tail extrapolated. The best tenth (at least 5) above the
/// next one, `u`, are fitted with an exponential tail (the maximum-likelihood rate of the
/// excesses over `u`), and the threshold is where that tail falls to `target_fpir`:
/// `u + ln(k / (n · target_fpir)) / rate`. Sums of finger scores have tails lighter than
/// exponential, so the fit errs high: the FPIR there is at most the target, to first order.
/// Never below the highest impostor seen (nor, for FPIR 0.1%, [`STRANGER_FLOOR`], as a
/// resolved calibration); with fewer than
/// [`MIN_TAIL_SEARCHES`] scores nothing is fitted and the fixed [`THRESHOLD`] stays (or the
/// highest impostor, if above).
fn unresolved_threshold(impostors: &[f32], target_fpir: f64) -> f32 {
    let n = impostors.len();
    let highest = impostors[0].next_up();
    if n < MIN_TAIL_SEARCHES {
        return highest.max(THRESHOLD);
    }
    let k = (n / 10).max(5);
    let u = impostors[k] as f64;
    let mean_excess = impostors[..k].iter().map(|&s| s as f64 - u).sum::<f64>() / k as f64;
    if mean_excess <= 0.0 {
        return highest;
    }
    let t = u + mean_excess * (k as f64 / (n as f64 * target_fpir)).ln();
    (t as f32).max(highest)
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
        // 200 searches at 2%: just above the 4th best of them (k = 0.02 · 201).
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
        // Unresolvable: the tail extrapolated, above the highest impostor seen and the
        // resolved 2% point, and said so; too few searches to fit keep the fixed threshold.
        let tight = m.calibrate_threshold(0.001, 50).unwrap();
        assert!(!tight.resolved);
        assert!(tight.threshold > tight.highest_impostor, "{tight:?}");
        assert!(tight.threshold >= STRANGER_FLOOR, "{tight:?}");
        assert!(tight.threshold < THRESHOLD, "{tight:?}");
        let few = m.calibrate_threshold(0.001, MIN_TAIL_SEARCHES - 1).unwrap();
        assert_eq!(few.threshold, THRESHOLD.max(few.highest_impostor.next_up()));
    }
}
