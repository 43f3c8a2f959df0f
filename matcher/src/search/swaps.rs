//! Mis-sequenced fingers: a booking that recorded two adjacent fingers of one hand in each
//! other's place (an ink card rolled out of order, a livescan operator's slip). Matched
//! position by position, such a mate loses both fingers in every code — two pattern classes
//! that may disagree, two histograms and two pairings against the wrong finger — and a poor
//! capture has too little left on its other eight to stay in the shortlist. Of the poor
//! captures' misses at 100,000 identities, half had two fingers swapped, 43% of the swapped
//! ones were missed, and all but one were lost in stage 1 (`matcher-bench --probe-band poor`,
//! BENCHMARKS.md).
//!
//! So for a tenprint probe, stage 1 also scores the best [`SWAP_SCORED`] kept subjects (by the
//! fused score) under each swap hypothesis: the probe's fingers at slots `a` and `a + 1`
//! compared with the subject's at `a + 1` and `a`. The fused score changes only by those two
//! slots' terms ([`SwapProbe::deltas_with`]: two pattern classes and one dot product of
//! histogram differences per hypothesis), so a hypothesis costs a few dozen operations on
//! codes just read. The best [`SWAP_SHORTLIST`] subjects by their best hypothesis, where it
//! beats the straight reading, are paired too, under it and straight (stage 2 keeps the
//! higher score; see `pairing::stage2_score`).
//!
//! [`SWAP_SCORED`]: super::tuning::SWAP_SCORED
//! [`SWAP_SHORTLIST`]: super::tuning::SWAP_SHORTLIST

use super::geometry::POSITIONS;
use super::histogram::{Code, HIST};
use super::patterns::{PatternTables, pattern_code};
use super::probe::ProbeCodes;
use super::shard::Shard;

/// The first slot of each pair of adjacent fingers of one hand: (1, 2) … (4, 5) of the
/// right hand and (6, 7) … (9, 10) of the left (ANSI/NIST-ITL positions, slot = position − 1).
pub(super) const SWAP_SLOTS: [usize; 8] = [0, 1, 2, 3, 5, 6, 7, 8];

/// The probe's side of the swap hypotheses: the pairs of adjacent slots at which it has both
/// fingers, with their histogram codes (the first finger listed at each slot, as the pattern
/// classes take it).
pub(super) struct SwapProbe {
    /// Per hypothesis: its first slot `a`, and the probe's code at `a` less its code at `a + 1`.
    pairs: Vec<(usize, [i16; HIST])>,
}

/// A subject's change of score under each of a probe's hypotheses, in [`SwapProbe`]'s order:
/// (pattern score, in units of 1 / `PATTERN_UNIT`; histogram score).
pub(super) type Deltas = [(i32, i32); SWAP_SLOTS.len()];

impl SwapProbe {
    pub(super) fn new(codes: &ProbeCodes) -> SwapProbe {
        let mut at: [Option<&Code>; POSITIONS] = [None; POSITIONS];
        for (s, c) in &codes.hists {
            at[*s].get_or_insert(c);
        }
        SwapProbe {
            pairs: SWAP_SLOTS
                .iter()
                .filter_map(|&a| {
                    let (pa, pb) = (at[a]?, at[a + 1]?);
                    Some((a, std::array::from_fn(|i| pa[i] as i16 - pb[i] as i16)))
                })
                .collect(),
        }
    }

    /// How many hypotheses the probe has.
    pub(super) fn len(&self) -> usize {
        self.pairs.len()
    }

    /// The first slot of hypothesis `k`.
    pub(super) fn slot(&self, k: usize) -> usize {
        self.pairs[k].0
    }

    /// Entry `e`'s change of pattern and histogram score under each hypothesis: what its two
    /// slots add read crosswise, less what they add read straight (an empty slot's code is
    /// zero, and adds nothing either way). For the histograms that is
    /// pa·hb + pb·ha − pa·ha − pb·hb = (pa − pb)·(hb − ha): one dot product, not four.
    /// The dot products by `cross` (the portable [`cross`] here, or the AVX2 one: see
    /// `simd::swap_deltas`).
    #[inline(always)]
    pub(super) fn deltas_with(
        &self,
        shard: &Shard,
        e: usize,
        tables: &PatternTables,
        cross: impl Fn(&[i16; HIST], &Code, &Code) -> i32,
    ) -> Deltas {
        let h = &shard.hists[e];
        let v = shard.patterns[e];
        let mut out = [(0, 0); SWAP_SLOTS.len()];
        for (o, (a, pd)) in out.iter_mut().zip(&self.pairs) {
            let a = *a;
            let b = a + 1;
            let (ga, gb) = (pattern_code(v, a), pattern_code(v, b));
            let (ra, rb) = (&tables.rows[a], &tables.rows[b]);
            let class = |row: &[i32], g: usize| row.get(g).copied().unwrap_or(0);
            let pattern = class(ra, gb) + class(rb, ga) - class(ra, ga) - class(rb, gb);
            let hist = cross(pd, &h[a], &h[b]);
            *o = (pattern, hist);
        }
        out
    }

    /// The best hypothesis for deltas `d` and the fused score's weights (1 / spread of each
    /// code, the pattern one per unit), as (hypothesis, gain in fused score), if one gains.
    pub(super) fn best(
        &self,
        d: &Deltas,
        pattern_weight: f32,
        hist_weight: f32,
    ) -> Option<(usize, f32)> {
        d[..self.len()]
            .iter()
            .map(|&(p, h)| p as f32 * pattern_weight + h as f32 * hist_weight)
            .enumerate()
            .filter(|(_, g)| *g > 0.0)
            .max_by(|x, y| x.1.total_cmp(&y.1).then(y.0.cmp(&x.0)))
    }
}

/// `pd` · (`hb` − `ha`), exactly (each term is at most 255², 32 of them). The portable
/// build has no byte-to-word widening in SSE2 and runs this a lane at a time; the AVX2 one
/// (`simd::cross_avx2`) takes all 32 lanes in two multiply-adds.
#[inline(always)]
pub(super) fn cross(pd: &[i16; HIST], ha: &Code, hb: &Code) -> i32 {
    pd.iter()
        .zip(ha.iter().zip(hb))
        .map(|(d, (a, b))| *d as i32 * (*b as i32 - *a as i32))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Matcher;
    use crate::search::IndexedMatcher;
    use crate::search::enrol::enrolled_fingers;
    use crate::search::pairing::{Reading, stage2_score};
    use crate::search::reference::{enrol_capture, probe};
    use crate::{SubjectId, Tenprint};
    use proptest::prelude::*;

    /// `t` with the fingers at positions `slot + 1` and `slot + 2` recorded in each other's
    /// place, as a mis-sequenced booking has them.
    fn swapped(t: &Tenprint, slot: usize) -> Tenprint {
        let (a, b) = (slot as u8 + 1, slot as u8 + 2);
        let mut t = t.clone();
        for f in &mut t.fingers {
            f.position = match f.position {
                p if p == a => b,
                p if p == b => a,
                p => p,
            };
        }
        t.fingers.sort_by_key(|f| f.position);
        t
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// A hypothesis's deltas are exactly what reading the subject's two fingers crosswise
        /// changes: the straight scores of the probe with those fingers put back in place,
        /// less the straight scores of the probe as it came, in both codes.
        #[test]
        fn deltas_are_the_crosswise_reading(p in 1u64..5_000, q in 1u64..5_000, k in 0usize..8, seed in 0u64..1_000) {
            let mut shard = Shard::default();
            for (e, who) in [p, q].into_iter().enumerate() {
                shard.push(e as SubjectId, enrolled_fingers(&enrol_capture(who)).unwrap(), &[]);
            }
            let a = SWAP_SLOTS[k];
            let came = ProbeCodes::new(&swapped(&probe(p, seed), a)).unwrap();
            let sw = SwapProbe::new(&came);
            let h = (0..sw.len()).find(|&h| sw.slot(h) == a).expect("ten fingers: every pair");
            let back = ProbeCodes::new(&probe(p, seed)).unwrap();
            // The probe put back: its fingers at a and a + 1 are the came probe's at a + 1 and a.
            let (t_came, t_back) = (PatternTables::new(&came.patterns), PatternTables::new(&back.patterns));
            for e in 0..2 {
                let d = sw.deltas_with(&shard, e, &t_came, cross)[h];
                let v = shard.patterns[e];
                prop_assert_eq!(d.0, t_back.score(v) - t_came.score(v));
                let hist = |c: &ProbeCodes| shard.histogram_score(e, &c.hists) as i32;
                prop_assert_eq!(d.1, hist(&back) - hist(&came));
            }
        }
    }

    /// A booking with two fingers mis-sequenced: its mate is paired under the right hypothesis,
    /// and scores as the booking put back in order would (straight), well above its straight
    /// reading of the two fingers.
    #[test]
    fn a_mate_with_two_fingers_swapped_is_read_under_its_hypothesis() {
        let mut m = IndexedMatcher::new(2);
        for p in 1..=300 {
            m.enroll(p, &enrol_capture(p)).unwrap();
        }
        for (p, a) in [(17u64, 0usize), (123, 3), (250, 5), (299, 8)] {
            let put_back = probe(p, 7);
            let booking = swapped(&put_back, a);
            let best = |m: &IndexedMatcher, t: &Tenprint| {
                let r = m.search(t, 1).unwrap();
                assert_eq!(r.candidates[0].subject, p, "the mate is first");
                r.candidates[0].score
            };
            let with = best(&m, &booking);
            let in_order = best(&m, &put_back);
            m.set_swap_shortlist(0);
            let without = best(&m, &booking);
            m.set_swap_shortlist(crate::search::SWAP_SHORTLIST);
            assert!(
                (with - in_order).abs() < 1e-4,
                "{p}: {with} under the hypothesis, {in_order} in order"
            );
            assert!(
                with > without + 0.05,
                "{p}: {with} against {without} straight"
            );
            // Stage 2 alone: the crosswise reading is the put-back straight one.
            let shards = m.read_shards();
            let (si, ei) = (0..2)
                .find_map(|s| shards[s].find(p).map(|e| (s, e)))
                .unwrap();
            let codes = ProbeCodes::new(&booking).unwrap();
            let read = stage2_score(
                &codes.fingers,
                &shards[si],
                ei,
                Reading::Swapped { slot: a },
            );
            assert!((read - in_order).abs() < 1e-4, "{read} against {in_order}");
        }
    }

    /// A hypothesis never lowers a score, and one that does not win leaves it to the bit
    /// (the exhaustive scan's comparison in `search::tests` relies on it).
    #[test]
    fn a_hypothesis_never_lowers_a_score() {
        let m = IndexedMatcher::new(1);
        for p in 1..=40 {
            m.enroll(p, &enrol_capture(p)).unwrap();
        }
        let shard = &m.read_shards()[0];
        let codes = ProbeCodes::new(&probe(9, 3)).unwrap();
        for e in 0..40 {
            let straight = stage2_score(&codes.fingers, shard, e, Reading::Straight);
            for a in SWAP_SLOTS {
                let read = stage2_score(&codes.fingers, shard, e, Reading::Swapped { slot: a });
                assert!(read >= straight - 1e-5, "{e}, {a}: {read} < {straight}");
                if read <= straight {
                    assert_eq!(read.to_bits(), straight.to_bits(), "{e}, {a}");
                }
            }
        }
    }
}
