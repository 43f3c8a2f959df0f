//! Stage 1's edge words: each edge quantised by length, by both directions relative to the
//! edge and by its two minutiae's types, so invariant to rotation and translation, and found
//! by an inverted index ([`super::postings`]) rather than by alignment.
//!
//! A gallery finger keeps each of its words once ([`words`]); a probe finger's word set adds
//! the neighbouring bins in every dimension ([`probe_words`]), since a capture's jitter moves
//! values across bin boundaries. The [`Vocabulary`] counts, over every shard, how many prints
//! have each word, which weighs a probe's words by their rarity ([`weighted_keys`]) and drops
//! the commonest from the index for good. A subject's word score ([`Shard::word_scores`])
//! sums, over common finger positions, the weights of its finger's words the probe finger
//! has, over the square root of its word count.

use super::edges::{Edge, Prepared};
use super::enrol::Enrolled;
use super::geometry::POSITIONS;
use super::memory::vec_bytes;
use super::postings::PREFETCH_AHEAD;
use super::shard::Shard;
use super::simd::prefetch;
use super::stage1::Deadline;
use super::tuning::{DROP_MIN_PRINTS, DROP_SHARE, stop_above};
use rayon::prelude::*;
use std::f32::consts::PI;

/// Edge words: (length, direction of the edge, direction of the neighbour), quantised.
const WORD_LEN_STEP: f32 = 8.0;
const WORD_LEN_BINS: usize = 25;
const WORD_ANGLE_BINS: usize = 24;
/// Type classes of an edge: (from, to) × (ending, bifurcation). The direction of a neighbour
/// mostly repeats the from-minutia's (neighbouring ridges run parallel: 80% of edges fall in 4
/// of the 24 direction bins), so without the types the words act like a fraction of their
/// number and every list is long; the types split each list about four ways. A type flipped
/// between captures (12% per minutia in the capture model) loses that edge's word for the
/// mate, which scores by the rest.
const KINDS: usize = 4;
const WORDS: usize = WORD_LEN_BINS * WORD_ANGLE_BINS * WORD_ANGLE_BINS * KINDS;
// Words are kept as u16.
const _: () = assert!(WORDS <= 1 << 16);
const WORD_BLOCKS: usize = WORDS.div_ceil(64);

/// Keys of the index: one word space per slot.
pub(super) const KEYS: usize = POSITIONS * WORDS;

pub(super) fn key(slot: usize, word: u16) -> u32 {
    (slot * WORDS) as u32 + word as u32
}

/// Whether key `k`'s bit is set in `set` (a bit per key; an empty set has none).
#[inline]
pub(super) fn has_bit(set: &[u64], k: u32) -> bool {
    let k = k as usize;
    set.get(k / 64).is_some_and(|b| b & (1 << (k % 64)) != 0)
}

/// Word weights are inverse document frequencies in sixteenths, at most 255 (a `u16` counter
/// then holds a finger's weighted count: ~200 words × 255; it saturates rather than wraps).
const IDF_SCALE: f64 = 16.0;

/// Probe side of stage 1: every word each probe edge could quantise to under jitter (its own
/// bin and the nearest neighbouring bin in each dimension), as a bitset.
pub(super) struct ProbeWords {
    pub(super) bits: Vec<[u64; WORD_BLOCKS]>,
    pub(super) slots: Vec<usize>,
}

#[inline(always)]
fn word_bins(len: f32, alpha: f32, beta: f32) -> Option<([usize; 2], [usize; 2], [usize; 2])> {
    let fl = len / WORD_LEN_STEP;
    let l = fl as usize;
    if l >= WORD_LEN_BINS {
        return None;
    }
    let step = 2.0 * PI / WORD_ANGLE_BINS as f32;
    let fa = alpha / step;
    let fb = beta / step;
    let near = |f: f32, n: usize, wrap: bool| -> [usize; 2] {
        let b = (f as usize).min(n - 1);
        let frac = f - f.floor();
        let other = if frac < 0.5 {
            if b == 0 {
                if wrap { n - 1 } else { 0 }
            } else {
                b - 1
            }
        } else if b + 1 == n {
            if wrap { 0 } else { b }
        } else {
            b + 1
        };
        [b, other]
    };
    Some((
        near(fl, WORD_LEN_BINS, false),
        near(fa, WORD_ANGLE_BINS, true),
        near(fb, WORD_ANGLE_BINS, true),
    ))
}

#[inline(always)]
fn word(l: usize, a: usize, b: usize, k: u8) -> usize {
    ((l * WORD_ANGLE_BINS + a) * WORD_ANGLE_BINS + b) * KINDS + k as usize
}

pub(super) fn probe_words(probe: &[(usize, Prepared)]) -> ProbeWords {
    let mut bits = Vec::with_capacity(probe.len());
    for (_, f) in probe {
        let mut set = [0u64; WORD_BLOCKS];
        for e in &f.edges {
            if let Some((ls, as_, bs)) = word_bins(e.len, e.alpha, e.beta) {
                for l in ls {
                    for a in as_ {
                        for b in bs {
                            let w = word(l, a, b, e.kinds);
                            set[w / 64] |= 1 << (w % 64);
                        }
                    }
                }
            }
        }
        bits.push(set);
    }
    ProbeWords {
        bits,
        slots: probe.iter().map(|(s, _)| *s).collect(),
    }
}

/// A finger's edge words (the gallery side of stage 1), each once, in the order its edges
/// first give them.
pub(super) fn words(edges: &[Edge]) -> Vec<u16> {
    let mut words = Vec::with_capacity(edges.len());
    push_words(edges, &mut words);
    words
}

/// Appends [`words`] to `out`. Repeats are found with a bit per word on the stack (7.2 KB to
/// clear, a fifth of a microsecond): sorting and deduplicating took twice as long.
#[inline(always)]
pub(super) fn push_words(edges: &[Edge], out: &mut Vec<u16>) {
    let mut seen = [0u64; WORD_BLOCKS];
    for e in edges {
        if let Some((l, a, b)) = word_bins(e.len, e.alpha, e.beta) {
            let w = word(l[0], a[0], b[0], e.kinds);
            let (block, bit) = (w / 64, 1 << (w % 64));
            if seen[block] & bit == 0 {
                seen[block] |= bit;
                out.push(w as u16);
            }
        }
    }
}

/// What the gallery holds, over every shard: per index key, how many prints' fingers have
/// the word (stage 1's weights; a removal takes its print's words back), and the keys dropped
/// as stop words for good (see [`DROP_SHARE`]). Updated print by print in enrolment order,
/// one print at a time or in a bulk load alike, so the keys dropped do not depend on the
/// shard count.
#[derive(Default)]
pub(super) struct Vocabulary {
    /// Per key (allocated at the first print: 2.3 MB).
    pub(super) df: Vec<u32>,
    pub(super) prints: u64,
    /// A bit per key.
    pub(super) dropped: Vec<u64>,
}

impl Vocabulary {
    /// Takes back a removed print's words (by slot, see [`Shard::entry_words`]): frequencies
    /// and the print count are over the prints enrolled now. Drops stay (they are final).
    pub(super) fn forget(&mut self, words: &[(usize, Vec<u16>)]) {
        self.prints = self.prints.saturating_sub(1);
        for (s, words) in words {
            for &w in words {
                let k = key(*s, w) as usize;
                self.df[k] = self.df[k].saturating_sub(1);
            }
        }
    }

    /// Heap bytes the frequencies and drops hold (see [`super::GalleryBytes`]).
    pub(super) fn heap_bytes(&self) -> usize {
        vec_bytes(&self.df) + vec_bytes(&self.dropped)
    }

    pub(super) fn add(&mut self, print: &Enrolled) {
        self.add_many(std::slice::from_ref(print));
    }

    /// [`Vocabulary::add`] for each print in turn, slot by slot in parallel: a key's counts
    /// and drop depend only on its own slot's words and on how many prints came before, so
    /// the slots are independent (print by print, this ran on the bulk load's one staging
    /// thread while the other cores idled).
    pub(super) fn add_many(&mut self, prints: &[Enrolled]) {
        if self.df.is_empty() {
            self.df = vec![0; KEYS];
            self.dropped = vec![0; KEYS.div_ceil(64)];
        }
        let before = self.prints;
        self.prints += prints.len() as u64;
        const _: () = assert!(
            WORDS.is_multiple_of(64),
            "a slot's drop bits are whole u64s"
        );
        self.df
            .par_chunks_mut(WORDS)
            .zip(self.dropped.par_chunks_mut(WORDS / 64))
            .enumerate()
            .for_each(|(s, (df, dropped))| {
                for (print, n) in prints.iter().zip(before + 1..) {
                    let bar = DROP_SHARE * n as f64;
                    let counted = n >= DROP_MIN_PRINTS;
                    for &w in print.words_at(s) {
                        let w = w as usize;
                        df[w] += 1;
                        if counted && df[w] as f64 > bar {
                            dropped[w / 64] |= 1 << (w % 64);
                        }
                    }
                }
            });
    }
}

/// The index keys stage 1 walks for each probe finger, with a weight: the word's inverse
/// document frequency over the gallery's prints, ln((N + 1) / (df + 1)) × [`IDF_SCALE`], so a
/// word that many fingers have says little and a rare one much; words listed for more than
/// `stop_share` of the gallery's prints are not walked at all (stop words), nor are those the
/// vocabulary has dropped. Frequencies, the print count and drops are the vocabulary's, over
/// every shard, so neither the weights nor the keys walked depend on the shard count, and a
/// removed print no longer counts (the index lists it until a compaction).
///
/// One frequency per key, read ahead, where summing each key's list lengths over the shards
/// had been a cache miss per key and shard.
pub(super) fn weighted_keys(
    v: &Vocabulary,
    words: &ProbeWords,
    stop_share: f64,
) -> Vec<FingerKeys> {
    let n = v.prints as usize;
    words
        .bits
        .iter()
        .zip(&words.slots)
        .map(|(bits, &s)| {
            // The probe finger's words, ascending.
            let mut words = Vec::new();
            for (block, &b) in bits.iter().enumerate() {
                let mut b = b;
                while b != 0 {
                    words.push(key(s, (block * 64 + b.trailing_zeros() as usize) as u16));
                    b &= b - 1;
                }
            }
            let mut keys = Vec::new();
            for (i, &k) in words.iter().enumerate() {
                if let Some(&ahead) = words.get(i + PREFETCH_AHEAD) {
                    prefetch(&v.df, ahead as usize);
                }
                if has_bit(&v.dropped, k) {
                    continue;
                }
                let df = v.df.get(k as usize).map_or(0, |d| *d as usize);
                if df == 0 || df as f64 > stop_above(n, stop_share) {
                    continue;
                }
                let idf = (((n + 1) as f64) / ((df + 1) as f64)).ln();
                keys.push((k, (idf * IDF_SCALE).clamp(1.0, 255.0) as u16));
            }
            FingerKeys { slot: s, keys }
        })
        .collect()
}

/// The index keys stage 1 walks for one probe finger (see [`weighted_keys`]).
pub(super) struct FingerKeys {
    pub(super) slot: usize,
    /// `(key, weight)`, ascending by key.
    pub(super) keys: Vec<(u32, u16)>,
}

impl Shard {
    /// The word score of every entry, through the index: per entry and probe finger,
    /// the summed weights of the gallery finger's words among the probe's `keys` (see
    /// [`weighted_keys`]), then the same normalised sum in the same order — the same value as
    /// a scan of each print's own words (`shortlist_score` in the tests).
    pub(super) fn word_scores(&self, probe: &[FingerKeys], deadline: Deadline) -> Option<Vec<f32>> {
        let len = self.len();
        let mut scores = vec![0f32; len];
        let mut row = vec![0u16; len];
        for fk in probe {
            if deadline.passed() {
                return None;
            }
            let keys = &fk.keys;
            row.fill(0);
            self.postings.walk(keys, &mut row);
            // An entry without this finger has no words and a count of 0: it adds 0.
            for ((score, &count), &wc) in
                scores.iter_mut().zip(&row).zip(&self.word_counts[fk.slot])
            {
                *score += count as f32 / (wc.max(1) as f32).sqrt();
            }
        }
        Some(scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Matcher;
    use crate::search::IndexedMatcher;
    use crate::search::edges::prepare;
    use crate::search::enrol::enrolled_fingers;
    use crate::search::geometry::{slot, used_points};
    use crate::search::probe::ProbeCodes;
    use crate::search::reference::{enrol_capture, probe, shortlist_score};
    use crate::search::tuning::STOP_WORD_SHARE;
    use proptest::prelude::*;

    /// Stage 1's word weights are over the prints the gallery holds: a removal takes its
    /// print's words back at once (before any compaction), as if it had never been enrolled.
    #[test]
    fn a_removal_takes_its_words_out_of_the_weights() {
        let removed = |p: u64| p.is_multiple_of(3);
        let m = IndexedMatcher::new(2);
        let fresh = IndexedMatcher::new(3);
        for p in 1..=300 {
            m.enroll(p, &enrol_capture(p)).unwrap();
            if !removed(p) {
                fresh.enroll(p, &enrol_capture(p)).unwrap();
            }
        }
        for p in (1..=300).filter(|p| removed(*p)) {
            m.remove(p).unwrap();
        }
        let (a, b) = (
            m.vocabulary.read().unwrap(),
            fresh.vocabulary.read().unwrap(),
        );
        assert_eq!(a.prints, 200);
        assert_eq!(a.prints, b.prints);
        assert!(
            a.df == b.df,
            "word frequencies differ from a gallery without the removed"
        );
        let words = ProbeCodes::new(&probe(7, 1)).unwrap().words();
        let keys = |v: &Vocabulary| -> Vec<(u32, u16)> {
            weighted_keys(v, &words, STOP_WORD_SHARE)
                .into_iter()
                .flat_map(|fk| fk.keys)
                .collect()
        };
        assert_eq!(keys(&a), keys(&b));
    }

    #[test]
    fn postings_walked_do_not_depend_on_sharding() {
        let (one, many) = (IndexedMatcher::new(1), IndexedMatcher::new(3));
        for p in 1..=30 {
            one.enroll(p, &enrol_capture(p)).unwrap();
            many.enroll(p, &enrol_capture(p)).unwrap();
        }
        let q = probe(7, 3);
        let walked = one.stage1_postings(&q).unwrap();
        assert!(walked > 0);
        assert_eq!(many.stage1_postings(&q).unwrap(), walked);
        many.compact();
        assert_eq!(many.stage1_postings(&q).unwrap(), walked);
    }

    /// The vocabulary drops a word once more than [`DROP_SHARE`] of the prints enrolled had it,
    /// and not before [`DROP_MIN_PRINTS`] prints.
    #[test]
    fn words_are_dropped_over_a_share_of_a_large_enough_gallery() {
        let print = |words: Vec<u16>| -> Enrolled {
            let mut word_counts = [0; POSITIONS];
            word_counts[2] = words.len() as u16;
            Enrolled {
                words,
                word_counts,
                ..Enrolled::default()
            }
        };
        let mut v = Vocabulary::default();
        let (common, rare) = (key(2, 7), key(2, 8));
        for p in 0..DROP_MIN_PRINTS + 100 {
            let mut words = vec![];
            if p % 5 == 0 {
                words.push(7); // 20%: above the share
            }
            if p % 50 == 0 {
                words.push(8); // 2%: below it
            }
            v.add(&print(words));
            if p + 1 < DROP_MIN_PRINTS {
                assert!(!has_bit(&v.dropped, common), "dropped at {p}");
            }
        }
        assert!(has_bit(&v.dropped, common) && !has_bit(&v.dropped, rare));
        assert_eq!(v.prints, DROP_MIN_PRINTS + 100);
    }

    /// Past [`DROP_MIN_PRINTS`], where words are dropped from the index: one shard or three,
    /// a bulk load or one print at a time, the same words are dropped and every search walks
    /// the same postings and gives the same candidates. (Each shard had decided from its own
    /// share before, so a word near the threshold could be dropped under one shard count and
    /// not another.)
    #[test]
    fn dropped_words_and_answers_do_not_depend_on_sharding_in_a_large_gallery() {
        let people = DROP_MIN_PRINTS + 2_000;
        let prints: Vec<_> = (1..=people)
            .into_par_iter()
            .map(|p| (p, enrol_capture(p)))
            .collect();
        let one = IndexedMatcher::new(1);
        one.enroll_many(&prints).unwrap();
        let three = IndexedMatcher::new(3);
        three.enroll_many(&prints).unwrap();
        // The last prints one at a time, as the gateway's Enroll does.
        let stepwise = IndexedMatcher::new(3);
        let (bulk, single) = prints.split_at(prints.len() - 300);
        stepwise.enroll_many(bulk).unwrap();
        for (p, t) in single {
            stepwise.enroll(*p, t).unwrap();
        }
        let dropped = |m: &IndexedMatcher| m.vocabulary.read().unwrap().dropped.clone();
        let d = dropped(&one);
        assert!(
            d.iter().any(|b| *b != 0),
            "nothing dropped: the test shows nothing"
        );
        assert_eq!(dropped(&three), d);
        assert_eq!(dropped(&stepwise), d);
        for m in [&one, &three, &stepwise] {
            m.compact();
        }
        for who in [3, 5_000, 12_345, people] {
            let q = probe(who, 1);
            let walked = one.stage1_postings(&q).unwrap();
            let answer = one.search(&q, 5).unwrap();
            assert_eq!(answer.hit.map(|c| c.subject), Some(who));
            for m in [&three, &stepwise] {
                assert_eq!(m.stage1_postings(&q).unwrap(), walked);
                assert_eq!(m.search(&q, 5).unwrap(), answer);
            }
        }
    }

    /// Stage 1 weighs a probe word by how rare it is in the gallery and does not walk the
    /// words more than [`STOP_WORD_SHARE`] of the gallery's fingers have.
    #[test]
    fn common_words_weigh_less_and_stop_words_are_not_walked() {
        // Large enough for some words to pass the stop threshold (over 20 fingers).
        const PEOPLE: u64 = 1_500;
        let m = IndexedMatcher::new(2);
        let prints: Vec<_> = (1..=PEOPLE).map(|p| (p, enrol_capture(p))).collect();
        m.enroll_many(&prints).unwrap();
        let shards: Vec<_> = m.shards.iter().map(|s| s.read().unwrap()).collect();
        let codes = ProbeCodes::new(&probe(9, 1)).unwrap();
        let probe_words = codes.words();
        let keys = weighted_keys(&m.vocabulary.read().unwrap(), &probe_words, STOP_WORD_SHARE);
        // The lists' lengths, not the vocabulary the weights read: the two agree.
        let df = |k: u32| -> usize { shards.iter().map(|s| s.postings.len_hint(k)).sum() };
        let (mut stopped, mut walked) = (0, 0);
        for ((bits, &sl), fk) in probe_words.bits.iter().zip(&probe_words.slots).zip(&keys) {
            let kept = &fk.keys;
            assert_eq!(sl, fk.slot);
            for w in 0..WORDS {
                if bits[w / 64] & (1 << (w % 64)) == 0 {
                    continue;
                }
                let k = key(sl, w as u16);
                let listed = kept.iter().any(|(x, _)| *x == k);
                if df(k) as f64 > stop_above(PEOPLE as usize, STOP_WORD_SHARE) {
                    assert!(!listed, "stop word {k} walked");
                    stopped += 1;
                } else if df(k) > 0 {
                    assert!(listed, "word {k} not walked");
                    walked += 1;
                }
            }
            // Rarer words never weigh less.
            let mut by_df: Vec<(usize, u16)> = kept.iter().map(|(k, w)| (df(*k), *w)).collect();
            by_df.sort_unstable();
            assert!(by_df.windows(2).all(|p| p[0].1 >= p[1].1), "{by_df:?}");
            assert!(by_df.first().unwrap().1 > by_df.last().unwrap().1);
        }
        assert!(
            stopped > 0 && walked > 0,
            "stopped {stopped}, walked {walked}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8))]
        /// The inverted index gives every entry exactly the word score of a scan of the
        /// print's own words, whatever fingers the probe and the gallery have (partial prints,
        /// a repeated position), whether the postings are still in the uncompressed tail,
        /// folded into the delta-encoded array, or split between the two.
        #[test]
        fn the_word_index_scores_exactly_as_the_scan(
            people in 5u64..40,
            who in 0u64..1000,
            keep in 1usize..=10,
            repeat in proptest::bool::ANY,
            fold_at in 0u64..45,
        ) {
            let mut shard = Shard::default();
            let mut v = Vocabulary::default();
            let mut prints = vec![];
            for p in 1..=people {
                let mut t = enrol_capture(p);
                if repeat && p % 3 == 0 {
                    // A gallery print listing one position twice: stage 1 uses the first.
                    let mut dup = t.fingers[0].clone();
                    dup.minutiae.truncate(dup.minutiae.len() / 2);
                    t.fingers.push(dup);
                }
                shard.push(p, enrolled_fingers(&t).unwrap(), &[]);
                v.add(&enrolled_fingers(&t).unwrap());
                prints.push(t);
                if p == fold_at {
                    shard.postings.fold(&[]);
                }
            }
            let mut q = probe(1 + who % people, who);
            q.fingers.truncate(keep);
            let prepared: Vec<(usize, Prepared)> = q
                .fingers
                .iter()
                .map(|f| (slot(f.position).unwrap(), prepare(used_points(f))))
                .collect();
            let keys = weighted_keys(&v, &probe_words(&prepared), STOP_WORD_SHARE);
            let indexed = shard.word_scores(&keys, Deadline(None)).unwrap();
            for (t, score) in prints.iter().zip(&indexed) {
                prop_assert_eq!(*score, shortlist_score(&keys, t));
            }
            // Folding moves postings but keeps every list's entries: the same scores (the
            // weights come from the lists as they were).
            shard.postings.fold(&[]);
            prop_assert_eq!(shard.word_scores(&keys, Deadline(None)).unwrap(), indexed);
        }
    }
}
