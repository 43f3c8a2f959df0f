//! Stage 1, a cascade over every subject that shortlists a few for pairing.
//!
//! The first code ranks every subject, per shard in parallel: the pattern classes
//! ([`super::patterns`]) for a probe of at least
//! [`PATTERN_MIN_FINGERS`](super::PATTERN_MIN_FINGERS) fingers, the edge words through the
//! inverted index ([`super::words`]) for one with fewer (see [`FirstCode`]). The best of them
//! ([`cascade_len`]) are kept, and only those have their second code, the histogram
//! ([`super::histogram`]), read. The two scores are fused (the sum of their z-scores; a poor
//! capture's histograms weigh half), and [`shortlist`] takes the best by the fused score, and
//! the best few by each code alone, on to stage 2 ([`super::pairing`]). For a tenprint probe,
//! the best kept are also scored under each swap hypothesis (two adjacent fingers read in
//! each other's place, [`super::swaps`]), and the best few by it go on to be paired under it.
//!
//! Every selection here breaks ties by subject id, never by where a subject sits, so the
//! answers do not depend on how the gallery is sharded.

use super::pairing::Reading;
use super::patterns::{PATTERN_UNIT, PatternTables, pattern_best};
use super::probe::ProbeCodes;
use super::shard::Shard;
use super::simd::{prefetch, swap_deltas};
use super::swaps::SwapProbe;
use super::tuning::{
    PATTERN_TIES_MAX, SHORTLIST_PER_CODE, Tuning, cascade_len, pattern_shortlist_len, shortlist_len,
};
use super::words::{Vocabulary, weighted_keys};
use crate::SubjectId;
use rayon::prelude::*;
use std::time::Instant;

/// The code stage 1 ranks every subject by, before the cascade keeps the best (see
/// [`CASCADE`](super::CASCADE)) for the histogram code and the fused score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstCode {
    /// [`FirstCode::Patterns`] for a probe with at least
    /// [`PATTERN_MIN_FINGERS`](super::PATTERN_MIN_FINGERS) fingers,
    /// [`FirstCode::Words`] for one with fewer (the default).
    Auto,
    /// The edge words, through the inverted index (each shard's posting lists).
    Words,
    /// The fingers' pattern classes (see [`crate::pattern`]): a subject scores, for each
    /// finger the probe and it both have, the log of how much likelier the probe's class
    /// probabilities make the gallery finger's class than its share of all fingers. Ten
    /// fingers' classes narrow a gallery as the classification of tenprint cards did: on
    /// synthetic prints, a mate's classes all agree and few strangers' do. A scan of four bytes a
    /// subject, eight scored at once, where the walk of the words reads ~46 postings.
    Patterns,
}

/// A search's deadline (`None`: none).
#[derive(Clone, Copy)]
pub(super) struct Deadline(pub(super) Option<Instant>);

impl Deadline {
    pub(super) fn passed(&self) -> bool {
        self.0.is_some_and(|d| Instant::now() >= d)
    }
}

/// The best `k` of `(shard, entry, score)` by score, ties to the lower subject id (`id` of
/// shard and entry; ids are unique, so the order is strict and does not depend on where a
/// subject sits: with ties to the lower entry, a print enrolled under many ids kept different
/// ids under different shardings): a linear-time selection under a strict total order, so
/// the same set a full sort would give (sorting was a third of the search time at 10,000
/// identities). Taking the best `k` of each shard's best `k` gives the same set too.
pub(super) fn best_k(
    v: Vec<(usize, usize, f32)>,
    k: usize,
    id: impl Fn(usize, usize) -> SubjectId,
) -> Vec<(usize, usize, f32)> {
    if v.len() <= k {
        return v;
    }
    // Each item's id read once, beside its score: reading it in the comparison (a lookup
    // through the shard, twice a comparison, with most comparisons between tied scores) had
    // been a tenth of a search at 300,000 identities.
    let mut w: Vec<(f32, SubjectId, usize, usize)> =
        v.into_iter().map(|(s, e, x)| (x, id(s, e), s, e)).collect();
    w.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    w.truncate(k);
    w.into_iter().map(|(x, _, s, e)| (s, e, x)).collect()
}

/// The best `k` entries of one shard by score (ties to the lower id in `ids`, the entries'
/// subjects), in no particular order: the same set as [`best_k`] over every entry, in about
/// one pass. A sample of every 16th score sets a bar that, by a wide margin, more than `k`
/// entries clear; only those are gathered and selected from. If fewer clear it (a bar set
/// too high), every entry is.
pub(super) fn best_of_shard(scores: &[f32], ids: &[SubjectId], k: usize) -> Vec<(usize, f32)> {
    let desc =
        |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(ids[a.0].cmp(&ids[b.0]));
    let select = |mut v: Vec<(usize, f32)>| {
        if v.len() > k && k > 0 {
            v.select_nth_unstable_by(k - 1, desc);
        }
        v.truncate(k);
        v
    };
    let mut sample: Vec<f32> = scores.iter().step_by(16).copied().collect();
    let j = (k / 16) * 2 + 16;
    if k > 0 && j < sample.len() {
        let (_, bar, _) = sample.select_nth_unstable_by(j, |a, b| b.total_cmp(a));
        let bar = *bar;
        let over: Vec<(usize, f32)> = scores
            .iter()
            .enumerate()
            .filter(|(_, x)| x.total_cmp(&bar).is_ge())
            .map(|(e, x)| (e, *x))
            .collect();
        if over.len() >= k {
            return select(over);
        }
    }
    select(scores.iter().copied().enumerate().collect())
}

impl Shard {
    /// The best `k` entries by `scores` (see [`best_of_shard`]), removed entries left out.
    pub(super) fn best_live(&self, scores: &[f32], k: usize) -> Vec<(usize, f32)> {
        if self.removed_count == 0 {
            return best_of_shard(scores, &self.subjects, k);
        }
        let mut masked = scores.to_vec();
        for (block, &bits) in self.removed.iter().enumerate() {
            let mut b = bits;
            while b != 0 {
                masked[block * 64 + b.trailing_zeros() as usize] = f32::NEG_INFINITY;
                b &= b - 1;
            }
        }
        let mut best = best_of_shard(&masked, &self.subjects, k);
        best.retain(|(_, x)| *x > f32::NEG_INFINITY);
        best
    }
}

/// A subject stage 1 kept: where it is and its scores.
#[derive(Clone, Copy, Debug)]
pub(super) struct Kept {
    pub(super) shard: usize,
    pub(super) entry: usize,
    pub(super) subject: SubjectId,
    pub(super) word: f32,
    pub(super) hist: f32,
    pub(super) fused: f32,
    /// With the pattern classes first, the best swap hypothesis that raises the fused score
    /// (see [`super::swaps`]): its first slot, and the fused score under it.
    pub(super) swap: Option<(usize, f32)>,
}

/// What stage 1 found for a probe: the subjects the first code kept (the best
/// [`cascade_len`]) with their histogram and fused scores.
pub(super) struct Stage1 {
    /// Entries in the gallery, removed ones included (the shortlist's length grows with it).
    pub(super) n: usize,
    pub(super) kept: Vec<Kept>,
    /// The first code was the pattern classes (`Kept::word` is their score).
    pub(super) patterns: bool,
    /// How many are paired under their best swap hypothesis (see
    /// [`SWAP_SHORTLIST`](super::tuning::SWAP_SHORTLIST)).
    pub(super) swaps: usize,
}

/// Stage 1, a cascade. The first code, the pattern classes or the word index (see
/// [`FirstCode`]), scores every subject (per shard in parallel); the best [`cascade_len`] by it
/// are kept, and only those have their histogram codes read.
/// The fused score adds the two codes' z-scores: the first code's mean and standard deviation are
/// taken over the whole gallery, the histogram's over the kept subjects (nearly all of them
/// impostors, whose histogram scores do not depend on their first code's), so a mate that stands
/// out on both codes stands out further on their sum.
pub(super) fn stage1<S: std::ops::Deref<Target = Shard> + Sync>(
    shards: &[S],
    codes: &ProbeCodes,
    tuning: Tuning,
    vocabulary: &Vocabulary,
    deadline: Deadline,
) -> Option<Stage1> {
    let n: usize = shards.iter().map(|s| s.len()).sum();
    let patterns = codes.ranks_by_patterns(tuning.first);
    let m = cascade_len(tuning.cascade, n, patterns);
    // A tenprint probe's tables, and its swap hypotheses (see [`super::swaps`]).
    let tables = patterns.then(|| PatternTables::new(&codes.patterns));
    let swaps = (patterns && tuning.swaps > 0).then(|| SwapProbe::new(codes));
    type Best = Vec<(usize, f32)>;
    // Each shard's best by the first code, and the first code's mean and 1 / spread over every
    // entry.
    let (best, (mw, iw)): (Vec<Best>, (f32, f32)) = if let Some(tables) = &tables {
        let (best, (sum, sq)) = pattern_best(shards, tables, m, deadline)?;
        let u = PATTERN_UNIT as f64;
        (
            best,
            mean_and_inverse_spread(n, (sum as f64 / u, sq as f64 / (u * u))),
        )
    } else {
        // The probe's words only here: a probe ranked by its classes never needs them.
        let keys = weighted_keys(vocabulary, &codes.words(), tuning.stop_share);
        let (best, moments): (Vec<Best>, Vec<(f64, f64)>) = shards
            .par_iter()
            .map(|s| {
                let w = s.word_scores(&keys, deadline)?;
                Some((s.best_live(&w, m), sum_and_squares(&w)))
            })
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .unzip();
        let moments = moments
            .iter()
            .fold((0.0, 0.0), |x, y| (x.0 + y.0, x.1 + y.1));
        (best, mean_and_inverse_spread(n, moments))
    };
    let chosen = best_k(
        best.into_iter()
            .enumerate()
            .flat_map(|(si, b)| b.into_iter().map(move |(e, x)| (si, e, x)))
            .collect(),
        m,
        |s, e| shards[s].subjects[e],
    );
    // The kept entries' histogram codes are scattered over the gallery (320 bytes each, a
    // cache miss per line): each is asked for a few entries ahead of its reading, and the
    // kept are read in blocks on every thread (reading them had been a tenth of a search at
    // 1,000,000, alone).
    const AHEAD: usize = 8;
    let mut kept: Vec<Kept> = chosen
        .par_chunks(512)
        .flat_map_iter(|block| {
            for &(shard, entry, _) in block.iter().take(AHEAD) {
                shards[shard].prefetch_hists(entry);
            }
            block
                .iter()
                .enumerate()
                .map(move |(i, &(shard, entry, word))| {
                    if let Some(&(s, e, _)) = block.get(i + AHEAD) {
                        shards[s].prefetch_hists(e);
                    }
                    Kept {
                        shard,
                        entry,
                        subject: shards[shard].subjects[entry],
                        word,
                        hist: shards[shard].histogram_score(entry, &codes.hists) as f32,
                        fused: 0.0,
                        swap: None,
                    }
                })
        })
        .collect();
    let moments = kept.iter().fold((0f64, 0f64), |(a, b), k| {
        (a + k.hist as f64, b + k.hist as f64 * k.hist as f64)
    });
    let (mh, ih) = mean_and_inverse_spread(kept.len(), moments);
    let ih = ih * codes.hist_weight();
    for k in &mut kept {
        k.fused = (k.word - mw) * iw + (k.hist - mh) * ih;
    }
    if let (Some(sw), Some(t)) = (&swaps, &tables) {
        let k = tuning.swap_scored;
        score_swaps(shards, &mut kept, k, sw, t, (iw / PATTERN_UNIT, ih));
    }
    Some(Stage1 {
        n,
        kept,
        patterns,
        swaps: tuning.swaps,
    })
}

/// Scores the swap hypotheses (see [`super::swaps`]) of the best `scored` of `kept` by the
/// fused score (ties to the lower subject id; see
/// [`SWAP_SCORED`](super::tuning::SWAP_SCORED)), with the fused score's weights (the pattern
/// code's per unit, the histogram's): each gets its best hypothesis that raises its fused
/// score, if one does.
fn score_swaps<S: std::ops::Deref<Target = Shard> + Sync>(
    shards: &[S],
    kept: &mut [Kept],
    scored: usize,
    sw: &SwapProbe,
    tables: &PatternTables,
    (pattern_weight, hist_weight): (f32, f32),
) {
    let order = |a: &Kept, b: &Kept| b.fused.total_cmp(&a.fused).then(a.subject.cmp(&b.subject));
    let k = scored.min(kept.len());
    if k == 0 {
        return;
    }
    if kept.len() > k {
        kept.select_nth_unstable_by(k - 1, order);
    }
    const AHEAD: usize = 8;
    let ask = |c: &Kept| {
        shards[c.shard].prefetch_hists(c.entry);
        prefetch(&shards[c.shard].patterns, c.entry);
    };
    kept[..k].iter().take(AHEAD).for_each(ask);
    for i in 0..k {
        if i + AHEAD < k {
            ask(&kept[i + AHEAD]);
        }
        let c = &mut kept[i];
        let d = swap_deltas(sw, &shards[c.shard], c.entry, tables);
        c.swap = sw
            .best(&d, pattern_weight, hist_weight)
            .map(|(h, gain)| (sw.slot(h), c.fused + gain));
    }
}

/// Every entry's first-code score, per shard, as [`stage1`] scores it for `codes`: for the
/// ranks [`IndexedMatcher::shortlist_ranks`](super::IndexedMatcher::shortlist_ranks) reports
/// (a search keeps no such list).
pub(super) fn first_code_scores(
    shards: &[impl std::ops::Deref<Target = Shard>],
    codes: &ProbeCodes,
    tuning: Tuning,
    vocabulary: &Vocabulary,
) -> Vec<Vec<f32>> {
    if codes.ranks_by_patterns(tuning.first) {
        let tables = PatternTables::new(&codes.patterns);
        shards.iter().map(|s| s.pattern_scores(&tables)).collect()
    } else {
        let keys = weighted_keys(vocabulary, &codes.words(), tuning.stop_share);
        shards
            .iter()
            .map(|s| {
                s.word_scores(&keys, Deadline(None))
                    .expect("no deadline to pass")
            })
            .collect()
    }
}

/// The sum and the sum of squares of `w`, in `f64`, four lanes at a time: one running sum
/// waits four cycles on each addition, a millisecond of a search over a million scores.
fn sum_and_squares(w: &[f32]) -> (f64, f64) {
    let (mut a, mut b) = ([0f64; 4], [0f64; 4]);
    let chunks = w.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..4 {
            let x = c[k] as f64;
            a[k] += x;
            b[k] += x * x;
        }
    }
    for &x in rest {
        a[0] += x as f64;
        b[0] += x as f64 * x as f64;
    }
    ((a[0] + a[1]) + (a[2] + a[3]), (b[0] + b[1]) + (b[2] + b[3]))
}

/// Mean and 1 / standard deviation from a count, sum and sum of squares; a population with no
/// spread (one subject, or scores all equal) is left unscaled.
fn mean_and_inverse_spread(n: usize, (sum, sq): (f64, f64)) -> (f32, f32) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let mean = sum / n as f64;
    let var = sq / n as f64 - mean * mean;
    let inv = if var > 1e-12 { 1.0 / var.sqrt() } else { 1.0 };
    (mean as f32, inv as f32)
}

/// A subject stage 2 pairs: where it is, and how ([`Reading`]: straight, or under a swap
/// hypothesis too; see [`super::swaps`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Short {
    pub(super) shard: usize,
    pub(super) entry: usize,
    pub(super) reading: Reading,
}

/// The subjects stage 2 pairs, sorted by place, each once: among those stage 1 kept, the best
/// [`shortlist_len`] by the fused score, the best [`SHORTLIST_PER_CODE`] by each code, and the
/// best `st.swaps` ([`SWAP_SHORTLIST`](super::tuning::SWAP_SHORTLIST)) by their best swap
/// hypothesis (paired under it too).
pub(super) fn shortlist(st: &Stage1) -> Vec<Short> {
    let n = st.n;
    // Ties to the lower subject id, not the lower entry: the same subjects however the
    // gallery is sharded (a print enrolled under several ids ties on every code).
    let by = |f: fn(&Kept) -> f32, k: usize| {
        let mut v: Vec<(f32, SubjectId, usize, usize)> = st
            .kept
            .iter()
            .map(|c| (f(c), c.subject, c.shard, c.entry))
            .collect();
        if v.len() > k && k > 0 {
            v.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        }
        v.truncate(k);
        v.into_iter().map(|(_, _, s, e)| (s, e))
    };
    let len = if st.patterns {
        pattern_shortlist_len(n)
    } else {
        shortlist_len(n)
    };
    let mut short: Vec<(usize, usize)> = [
        by(|c| c.fused, len),
        by(|c| c.word, SHORTLIST_PER_CODE),
        by(|c| c.hist, SHORTLIST_PER_CODE),
    ]
    .into_iter()
    .flatten()
    .collect();
    if st.patterns {
        short.extend(tied_at_top(st));
    }
    short.sort_unstable();
    short.dedup();
    let mut out: Vec<Short> = short
        .into_iter()
        .map(|(shard, entry)| Short {
            shard,
            entry,
            reading: Reading::Straight,
        })
        .collect();
    // Those listed under a swap hypothesis are read under it too (a few, among a few dozen).
    for (shard, entry, slot) in best_swapped(st) {
        let reading = Reading::Swapped { slot };
        match out
            .iter_mut()
            .find(|s| (s.shard, s.entry) == (shard, entry))
        {
            Some(s) => s.reading = reading,
            None => out.push(Short {
                shard,
                entry,
                reading,
            }),
        }
    }
    out.sort_unstable_by_key(|s| (s.shard, s.entry));
    out
}

/// The best `st.swaps` subjects by the fused score under their best swap hypothesis, among
/// those one raises (ties to the lower subject id), as (shard, entry, the hypothesis's slot).
fn best_swapped(st: &Stage1) -> impl Iterator<Item = (usize, usize, usize)> {
    let mut v: Vec<(f32, SubjectId, (usize, usize, usize))> = st
        .kept
        .iter()
        .filter_map(|c| {
            let (slot, score) = c.swap?;
            Some((score, c.subject, (c.shard, c.entry, slot)))
        })
        .collect();
    let k = st.swaps;
    if v.len() > k && k > 0 {
        v.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    }
    v.truncate(k);
    v.into_iter().map(|(_, _, at)| at)
}

/// The subjects tied at the best pattern score, the best [`PATTERN_TIES_MAX`] of them by the
/// fused score (ties to the lower subject id).
fn tied_at_top(st: &Stage1) -> Vec<(usize, usize)> {
    let Some(top) = st.kept.iter().map(|c| c.word).max_by(f32::total_cmp) else {
        return vec![];
    };
    let mut tied: Vec<&Kept> = st.kept.iter().filter(|c| c.word == top).collect();
    tied.sort_by(|a, b| b.fused.total_cmp(&a.fused).then(a.subject.cmp(&b.subject)));
    tied.into_iter()
        .take(PATTERN_TIES_MAX)
        .map(|c| (c.shard, c.entry))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Matcher;
    use crate::search::IndexedMatcher;
    use crate::search::reference::{enrol_capture, probe};
    use crate::search::tuning::SWAP_SHORTLIST;
    use proptest::prelude::*;

    proptest! {
        /// The sampled per-shard selection keeps the same set as the selection over all, with
        /// many ties (scores in 20 steps) and galleries large enough for the sample to set a bar.
        #[test]
        fn one_pass_selection_is_the_selection(scores in proptest::collection::vec(0u8..20, 0..3000), k in 1usize..200) {
            let scores: Vec<f32> = scores.into_iter().map(|x| x as f32 / 4.0).collect();
            let ids: Vec<SubjectId> = (0..scores.len() as u64).map(|e| e * 7 % 3001).collect();
            let mut want: Vec<(usize, f32)> = best_k(
                scores.iter().enumerate().map(|(e, x)| (0, e, *x)).collect(),
                k,
                |_, e| ids[e],
            )
            .into_iter()
            .map(|(_, e, x)| (e, x))
            .collect();
            want.sort_by_key(|w| w.0);
            let mut got = best_of_shard(&scores, &ids, k);
            got.sort_by_key(|g| g.0);
            prop_assert_eq!(got, want);
        }
    }

    /// The 1,000,000-person world's FBI miss in small: the mate ties seven strangers at the
    /// best pattern score and ranks ninth by the fused score (the histogram breaks the tie
    /// against it); the shortlist of eight still pairs it, with every other tied subject.
    #[test]
    fn every_subject_tied_at_the_best_pattern_score_is_paired() {
        let kept = |subject: u64, word: f32, fused: f32| Kept {
            shard: 0,
            entry: subject as usize,
            subject,
            word,
            hist: 0.0,
            fused,
            swap: None,
        };
        let n = 350_147;
        let mut kept_list: Vec<Kept> = (0..8)
            .map(|s| kept(s, 11.685, 6.1 + s as f32 * 0.01))
            .collect();
        // The mate: tied at the top pattern score, ninth by the fused score.
        kept_list.push(kept(64_574, 11.685, 6.0127));
        // Strangers with nine classes of ten and strong histograms: above the mate, fused.
        kept_list.extend((100..110).map(|s| kept(s, 10.9, 6.03)));
        // A long tail below.
        kept_list.extend((1000..3000).map(|s| kept(s, 5.0, 0.0)));
        let st = Stage1 {
            n,
            kept: kept_list,
            patterns: true,
            swaps: SWAP_SHORTLIST,
        };
        assert_eq!(pattern_shortlist_len(n), 8);
        let short: Vec<(usize, usize)> =
            shortlist(&st).iter().map(|s| (s.shard, s.entry)).collect();
        assert!(short.contains(&(0, 64_574)), "the mate is paired");
        for s in 0..8 {
            assert!(short.contains(&(0, s)));
        }
        // The ties add what the fused shortlist lacked, nothing more: 9 tied, the fused eight
        // (some of them the nine-class strangers), the per-code guards.
        assert!(
            short.len() <= 8 + 9 + 2 * SHORTLIST_PER_CODE,
            "{}",
            short.len()
        );
        // Ties are capped: a probe of very common classes does not pair thousands.
        let st = Stage1 {
            n,
            kept: (0..5000).map(|s| kept(s, 3.0, (s % 97) as f32)).collect(),
            patterns: true,
            swaps: SWAP_SHORTLIST,
        };
        assert!(shortlist(&st).len() <= 8 + PATTERN_TIES_MAX + 2 * SHORTLIST_PER_CODE);
        // The word path is as it was.
        let st = Stage1 {
            n,
            kept: (0..5000).map(|s| kept(s, 3.0, (s % 97) as f32)).collect(),
            patterns: false,
            swaps: SWAP_SHORTLIST,
        };
        assert!(shortlist(&st).len() <= shortlist_len(n) + 2 * SHORTLIST_PER_CODE);
    }

    #[test]
    fn the_cascade_pairs_only_subjects_the_word_score_kept() {
        let m = IndexedMatcher::new(2).with_cascade(5);
        for p in 1..=150 {
            m.enroll(p, &enrol_capture(p)).unwrap();
        }
        assert_eq!(m.cascade_len(), 5);
        let q = probe(77, 5);
        let mate = m.shortlist_ranks(&q, 77).unwrap().unwrap();
        assert!(mate.word < 5 && mate.fused.is_some(), "{mate:?}");
        let found = m.search(&q, 150).unwrap();
        assert_eq!(found.hit.map(|c| c.subject), Some(77));
        // Only kept subjects are paired, so only they can be candidates.
        assert!(found.candidates.len() <= 5);
        for c in &found.candidates {
            let r = m.shortlist_ranks(&q, c.subject).unwrap().unwrap();
            assert!(r.word < 5 && r.fused.is_some(), "{}: {r:?}", c.subject);
        }
        // Those not kept have no fused rank.
        let dropped = (1..=150)
            .map(|p| m.shortlist_ranks(&q, p).unwrap().unwrap())
            .filter(|r| r.word >= 5)
            .inspect(|r| assert!(r.fused.is_none() && r.histogram_kept.is_none(), "{r:?}"))
            .count();
        assert_eq!(dropped, 145);
    }
}
