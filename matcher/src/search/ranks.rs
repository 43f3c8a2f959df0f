//! What a benchmark asks of stage 1 beside a search's answer: which code ranks a probe
//! first, how many postings its walk reads, and where a given subject ranks by each code and
//! by the fused score (a search keeps none of this). `matcher-bench` sizes the cascade and
//! the shortlist from these ranks.

use super::IndexedMatcher;
use super::probe::ProbeCodes;
use super::stage1::{Deadline, FirstCode, Kept, first_code_scores, stage1};
#[cfg(doc)]
use super::tuning::SWAP_SHORTLIST;
use super::tuning::{PATTERN_TIES_MAX, SHORTLIST_PER_CODE, pattern_shortlist_len, shortlist_len};
use super::words::weighted_keys;
use crate::{MatchError, SubjectId, Tenprint};

impl IndexedMatcher {
    /// The code stage 1 ranks `probe` by first, [`FirstCode::Words`] or
    /// [`FirstCode::Patterns`] (see [`FirstCode::Auto`]).
    pub fn first_code_for(&self, probe: &Tenprint) -> Result<FirstCode, MatchError> {
        Ok(
            if ProbeCodes::new(probe)?.ranks_by_patterns(self.tuning.first) {
                FirstCode::Patterns
            } else {
                FirstCode::Words
            },
        )
    }

    /// How many postings stage 1's word index walks for `probe` (summed over shards) when it
    /// ranks by words: the part of such a search's cost that grows with the gallery. A
    /// diagnostic for the benchmark.
    pub fn stage1_postings(&self, probe: &Tenprint) -> Result<usize, MatchError> {
        let codes = ProbeCodes::new(probe)?;
        let shards = self.read_shards();
        let mut n = 0;
        let v = self.vocabulary.read().expect("vocabulary lock");
        for fk in weighted_keys(&v, &codes.words(), self.tuning.stop_share) {
            for s in &shards {
                for &(k, _) in &fk.keys {
                    s.postings.for_each(k, |_| n += 1);
                }
            }
        }
        Ok(n)
    }

    /// Where `subject` ranks (0 = first) in stage 1 for `probe`; `None` if not enrolled. The
    /// search pairs a subject only if the word score keeps it (word rank below
    /// [`IndexedMatcher::cascade_len`]) and, among those kept, its fused rank is below
    /// [`shortlist_len`] or a code's rank below [`SHORTLIST_PER_CODE`]: this is how the
    /// benchmark measures the cascade and shortlist a gallery size needs.
    pub fn shortlist_ranks(
        &self,
        probe: &Tenprint,
        subject: SubjectId,
    ) -> Result<Option<ShortlistRanks>, MatchError> {
        let codes = ProbeCodes::new(probe)?;
        let shards = self.read_shards();
        let v = self.vocabulary.read().expect("vocabulary lock");
        let st = stage1(&shards, &codes, self.tuning, &v, Deadline(None))
            .expect("a search without a deadline finishes");
        let Some((si, ei)) = shards
            .iter()
            .enumerate()
            .find_map(|(si, s)| s.find(subject).map(|ei| (si, ei)))
        else {
            return Ok(None);
        };
        // How many of `scores` (shard, entry, score) rank above the subject's `target`.
        let above = |target: f32, scores: &mut dyn Iterator<Item = (usize, usize, f32)>| {
            scores
                .filter(|&(sj, ej, x)| x.total_cmp(&target).then((si, ei).cmp(&(sj, ej))).is_gt())
                .count()
        };
        let first = first_code_scores(&shards, &codes, self.tuning, &v);
        let word = above(
            first[si][ei],
            &mut first
                .iter()
                .enumerate()
                .flat_map(|(sj, w)| w.iter().enumerate().map(move |(ej, x)| (sj, ej, *x))),
        );
        let hists: Vec<Vec<u32>> = shards
            .iter()
            .map(|s| s.histogram_scores(&codes.hists))
            .collect();
        let histogram = above(
            hists[si][ei] as f32,
            &mut hists
                .iter()
                .enumerate()
                .flat_map(|(sj, h)| h.iter().enumerate().map(move |(ej, x)| (sj, ej, *x as f32))),
        );
        let me = st.kept.iter().find(|k| (k.shard, k.entry) == (si, ei));
        let among_kept = |f: fn(&Kept) -> f32| {
            me.map(|me| above(f(me), &mut st.kept.iter().map(|k| (k.shard, k.entry, f(k)))))
        };
        // Among the subjects tied at the best pattern score, by the fused score (the order
        // `stage1::shortlist` pairs them in).
        let tied_at_top = me.filter(|_| st.patterns).and_then(|me| {
            let top = st.kept.iter().map(|k| k.word).max_by(f32::total_cmp)?;
            (me.word == top).then(|| {
                st.kept
                    .iter()
                    .filter(|k| k.word == top)
                    .filter(|k| {
                        k.fused
                            .total_cmp(&me.fused)
                            .then(me.subject.cmp(&k.subject))
                            .is_gt()
                    })
                    .count()
            })
        });
        // Among the subjects a swap hypothesis raises, by the fused score under their best.
        let swapped = me.and_then(|me| {
            let (_, mine) = me.swap?;
            Some(
                st.kept
                    .iter()
                    .filter_map(|k| Some((k, k.swap?.1)))
                    .filter(|(k, x)| x.total_cmp(&mine).then(me.subject.cmp(&k.subject)).is_gt())
                    .count(),
            )
        });
        Ok(Some(ShortlistRanks {
            by_patterns: st.patterns,
            swapped,
            swap_shortlist: st.swaps,
            tied_at_top,
            word,
            histogram,
            fused: among_kept(|k| k.fused),
            histogram_kept: among_kept(|k| k.hist),
        }))
    }
}

/// A subject's stage-1 ranks for a probe (0 = first): see [`IndexedMatcher::shortlist_ranks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShortlistRanks {
    /// Stage 1's first code was the pattern classes (`word` is then the rank by them).
    pub by_patterns: bool,
    /// By the first code (the word score, or the pattern classes), over the whole gallery.
    pub word: usize,
    /// By the histogram score over the whole gallery (a diagnostic: the search reads the
    /// histograms of kept subjects only).
    pub histogram: usize,
    /// By the fused score among the subjects the word score kept; `None` if it was not kept.
    pub fused: Option<usize>,
    /// By the histogram score among the kept subjects.
    pub histogram_kept: Option<usize>,
    /// With the pattern classes first, by the fused score among the subjects tied at the best
    /// pattern score, if the subject is one of them (see `PATTERN_TIES_MAX`).
    pub tied_at_top: Option<usize>,
    /// With the pattern classes first, by the fused score under the best swap hypothesis
    /// (`swaps.rs`), among the subjects one raises, if one raises the subject's.
    pub swapped: Option<usize>,
    /// How many the search pairs under their best swap hypothesis ([`SWAP_SHORTLIST`] unless
    /// the benchmark set another).
    pub swap_shortlist: usize,
}

impl ShortlistRanks {
    /// Whether the search pairs the subject in a gallery of `n`.
    pub fn shortlisted(&self, n: usize) -> bool {
        let len = if self.by_patterns {
            pattern_shortlist_len(n)
        } else {
            shortlist_len(n)
        };
        self.fused.is_some_and(|f| f < len)
            || self.word < SHORTLIST_PER_CODE
            || self.histogram_kept.is_some_and(|h| h < SHORTLIST_PER_CODE)
            || self.tied_at_top.is_some_and(|t| t < PATTERN_TIES_MAX)
            || self.swapped.is_some_and(|t| t < self.swap_shortlist)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Matcher;
    use crate::search::reference::{enrol_capture, probe};

    #[test]
    fn shortlist_ranks_place_the_mate_in_the_shortlist() {
        let m = IndexedMatcher::new(3);
        for p in 1..=150 {
            m.enroll(p, &enrol_capture(p)).unwrap();
        }
        for p in [3, 77, 150] {
            let q = probe(p, 5);
            let r = m.shortlist_ranks(&q, p).unwrap().unwrap();
            assert!(r.shortlisted(m.len()), "ranks {r:?}");
            // Every subject is kept in a gallery smaller than the cascade.
            assert!(
                r.fused.is_some() && r.histogram_kept.is_some(),
                "ranks {r:?}"
            );
            assert_eq!(m.search(&q, 1).unwrap().hit.map(|c| c.subject), Some(p));
        }
        assert_eq!(m.shortlist_ranks(&probe(3, 5), 9_999).unwrap(), None);
    }
}
