//! Stage 1's first code for a probe of at least
//! [`PATTERN_MIN_FINGERS`](super::PATTERN_MIN_FINGERS) fingers: the fingers' pattern classes
//! (arch, tented arch, loops, whorl; see [`crate::pattern`] and
//! [`FirstCode::Patterns`](super::FirstCode::Patterns)). The ten classes of a mate agree and
//! few strangers' do, so a scan of four bytes a subject ranks the gallery as the
//! classification of tenprint cards once narrowed a file.
//!
//! A gallery finger keeps its class only if the classifier is sure of it, three bits a slot
//! in one word a subject ([`pack_patterns`]). A probe's classes become score tables
//! ([`PatternTables`]) in exact integer units, so the scores and the gallery's moments
//! ([`PatternCounts`]) are the same however the gallery is sharded. The scan itself, eight
//! subjects at a time with AVX2, is in [`super::simd`]; [`pattern_best`] selects the best
//! over every shard.

use super::geometry::POSITIONS;
use super::shard::Shard;
use super::simd::pattern_over;
use super::stage1::Deadline;
use crate::SubjectId;
use crate::template::FingerTemplate;
use rayon::prelude::*;

pub(super) const PATTERN_CLASSES: usize = crate::pattern::CLASSES;

/// A slot's pattern code when it has no finger or its class is uncertain.
const NO_PATTERN: u32 = PATTERN_CLASSES as u32;
/// Codes a slot can have: a class, or [`NO_PATTERN`].
const PATTERN_CODES: usize = PATTERN_CLASSES + 1;
/// A gallery finger's class is kept only if the classifier gives it at least this
/// probability (otherwise the slot counts as unknown, and neither agrees nor disagrees).
const PATTERN_SURE: f32 = 0.6;

/// Bits a slot's code takes in packed codes (see [`pack_patterns`]).
pub(super) const PATTERN_BITS: usize = 3;
const _: () = assert!(PATTERN_CODES <= 1 << PATTERN_BITS && POSITIONS * PATTERN_BITS <= 32);

/// Ten slots' pattern classes (0..5, see [`crate::pattern`]; `None`: no finger, or unsure) in
/// one word, [`PATTERN_BITS`] a slot, slot 0 lowest. Three bits a slot are the index an AVX2
/// lane permutation takes from eight table values, so a scan scores eight subjects at once
/// a slot at a time (see [`super::simd`]); without AVX2, a subject's score is three
/// table lookups (see [`PatternTables`]).
pub(super) fn pack_patterns(classes: &[Option<u8>; POSITIONS]) -> u32 {
    (classes.iter().enumerate()).fold(0, |v, (s, c)| {
        v | c.map_or(NO_PATTERN, u32::from) << (PATTERN_BITS * s)
    })
}

/// Slot `s`'s code in packed codes `v` (see [`pack_patterns`]).
pub(super) fn pattern_code(v: u32, s: usize) -> usize {
    (v >> (PATTERN_BITS * s)) as usize & ((1 << PATTERN_BITS) - 1)
}

/// Slot pairs (s, t), s < t: 45.
const SLOT_PAIRS: usize = POSITIONS * (POSITIONS - 1) / 2;

/// How many of a shard's entries have each code at each slot, and each pair of codes at each
/// pair of slots. A pattern score is a sum of one table value per slot, so the sum of every
/// entry's score is a sum over slots and codes, and the sum of squares one over pairs of them
/// ([`PatternCounts::moments`]): exact integers, in 2,000 multiplications instead of a pass
/// over the entries (where summing them had been a third of the pattern scan's work).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PatternCounts {
    single: [[i64; PATTERN_CODES]; POSITIONS],
    /// By slot pair (in the order s < t, s ascending, then t) and code pair (s's · 6 + t's).
    pairs: Box<[[i64; PATTERN_CODES * PATTERN_CODES]; SLOT_PAIRS]>,
}

impl Default for PatternCounts {
    fn default() -> Self {
        PatternCounts {
            single: [[0; PATTERN_CODES]; POSITIONS],
            pairs: Box::new([[0; PATTERN_CODES * PATTERN_CODES]; SLOT_PAIRS]),
        }
    }
}

impl PatternCounts {
    /// The counts of every entry in `patterns`.
    pub(super) fn of(patterns: &[u32]) -> PatternCounts {
        let mut c = PatternCounts::default();
        for &v in patterns {
            c.add(v, 1);
        }
        c
    }

    /// Counts an entry with packed codes `v` `n` more times (−1: one fewer).
    pub(super) fn add(&mut self, v: u32, n: i64) {
        let codes: [usize; POSITIONS] = std::array::from_fn(|s| pattern_code(v, s));
        let mut pair = 0;
        for s in 0..POSITIONS {
            self.single[s][codes[s]] += n;
            for t in s + 1..POSITIONS {
                self.pairs[pair][codes[s] * PATTERN_CODES + codes[t]] += n;
                pair += 1;
            }
        }
    }

    /// The sum and sum of squares, over the counted entries, of the score whose slot `s`
    /// adds `rows[s][code]`: Σ x = Σ_s Σ_c n_s(c)·r_s(c), and Σ x² = Σ_s Σ_c n_s(c)·r_s(c)²
    /// + 2 Σ_{s<t} Σ_{c,d} n_st(c, d)·r_s(c)·r_t(d).
    pub(super) fn moments(&self, rows: &[[i32; PATTERN_CODES]; POSITIONS]) -> (i64, i64) {
        let (mut sum, mut sq) = (0i64, 0i64);
        for (n, r) in self.single.iter().zip(rows) {
            for (&n, &r) in n.iter().zip(r) {
                sum += n * r as i64;
                sq += n * r as i64 * r as i64;
            }
        }
        let mut pair = 0;
        for s in 0..POSITIONS {
            for t in s + 1..POSITIONS {
                let mut cross = 0i64;
                for c in 0..PATTERN_CODES {
                    for d in 0..PATTERN_CODES {
                        cross += self.pairs[pair][c * PATTERN_CODES + d]
                            * rows[s][c] as i64
                            * rows[t][d] as i64;
                    }
                }
                sq += 2 * cross;
                pair += 1;
            }
        }
        (sum, sq)
    }
}

/// A gallery finger's pattern class, if the classifier is sure enough of it.
pub(super) fn gallery_pattern(f: &FingerTemplate) -> Option<u8> {
    if f.minutiae.is_empty() {
        return None;
    }
    let (c, p) = crate::pattern::classify(f);
    (p >= PATTERN_SURE).then_some(c)
}

/// The share of a class's probability [`PatternTables`] gives every class, whatever the
/// probe finger's probabilities: a gallery finger classified wrongly (about 1 in 1,000 at the
/// default capture quality) costs at most ln(1 / 0.02) ≈ 3.9, not everything.
const PATTERN_FLOOR: f32 = 0.02;

/// Pattern scores are whole multiples of 1 / `PATTERN_UNIT`: each slot's log-likelihood ratio is
/// rounded once, so a subject's score is an exact integer sum and the gallery's moments (see
/// [`stage1`](super::stage1::stage1)) are exact integers, the same however the gallery is
/// sharded and summed.
pub(super) const PATTERN_UNIT: f32 = 1024.0;

/// A probe's pattern scores, in units of 1 / [`PATTERN_UNIT`]: per slot, the score of each
/// code (`rows`; as eight lanes in `lanes`, for the AVX2 scan in [`super::simd`]), and for
/// the scalar scan the score of every combination of codes at slots 0..4, 4..7 and 7..10 (`groups`:
/// 4,096, 512 and 512 entries, 20 KB, which stay in the first-level cache), so a subject's
/// score is three lookups by its packed codes.
pub(super) struct PatternTables {
    groups: [Box<[i32]>; 3],
    pub(super) lanes: [[i32; 1 << PATTERN_BITS]; POSITIONS],
    /// Per slot, the score of each code (see [`PatternCounts::moments`]).
    pub(super) rows: [[i32; PATTERN_CODES]; POSITIONS],
}

/// The slots of each of [`PatternTables`]' groups.
const PATTERN_GROUPS: [std::ops::Range<usize>; 3] = [0..4, 4..7, 7..10];

impl PatternTables {
    pub(super) fn new(probe: &[Option<[f32; PATTERN_CLASSES]>; POSITIONS]) -> PatternTables {
        let prior = crate::pattern::PRIOR;
        // Per slot, the score of each code: 0 for no finger on either side.
        let t: [[i32; PATTERN_CODES]; POSITIONS] = probe.map(|p| {
            let mut row = [0i32; PATTERN_CODES];
            if let Some(p) = p {
                for c in 0..PATTERN_CLASSES {
                    let x = ((1.0 - PATTERN_FLOOR) * p[c] / prior[c] + PATTERN_FLOOR).ln();
                    row[c] = (x * PATTERN_UNIT).round() as i32;
                }
            }
            row
        });
        // Codes past the last (never packed) score 0.
        let lanes = t.map(|row| std::array::from_fn(|c| row.get(c).copied().unwrap_or(0)));
        // Slot by slot: the table of a group's first slots from that of one slot fewer.
        let group = |slots: std::ops::Range<usize>| {
            let mut v = vec![0i32];
            for row in &lanes[slots] {
                let mut next = vec![0i32; v.len() << PATTERN_BITS];
                for (c, &x) in row.iter().enumerate() {
                    for (i, &y) in v.iter().enumerate() {
                        next[i + c * v.len()] = y + x;
                    }
                }
                v = next;
            }
            v.into_boxed_slice()
        };
        PatternTables {
            groups: PATTERN_GROUPS.map(group),
            lanes,
            rows: t,
        }
    }

    /// The score of a subject with packed codes `v`, in units of 1 / [`PATTERN_UNIT`].
    #[inline(always)]
    pub(super) fn score(&self, v: u32) -> i32 {
        let [a, b, c] = &self.groups;
        let bits = |slots: &std::ops::Range<usize>| {
            let len = PATTERN_BITS * slots.len();
            (v >> (PATTERN_BITS * slots.start)) as usize & ((1 << len) - 1)
        };
        a[bits(&PATTERN_GROUPS[0])] + b[bits(&PATTERN_GROUPS[1])] + c[bits(&PATTERN_GROUPS[2])]
    }
}

impl Shard {
    /// Every entry's pattern score for the probe of `t` (see
    /// [`FirstCode::Patterns`](super::FirstCode::Patterns)), as [`pattern_best`] scores them:
    /// for the ranks a benchmark reports.
    pub(super) fn pattern_scores(&self, t: &PatternTables) -> Vec<f32> {
        self.patterns
            .iter()
            .map(|&v| t.score(v) as f32 / PATTERN_UNIT)
            .collect()
    }

    /// Every live entry whose pattern score is at least `bar`, as (entry, score), and the
    /// sum and sum of squares of every entry's score (removed entries included, as the word
    /// scores' moments include them; from the shard's [`PatternCounts`]), in units of
    /// 1 / [`PATTERN_UNIT`]: one pass that keeps no other score. Branch-free: each entry is
    /// written at the end of the list, which grows only if it clears the bar (a branch taken
    /// for a tenth of the entries mispredicted often enough to double the pass), a block of
    /// entries at a time.
    pub(super) fn pattern_pass(
        &self,
        t: &PatternTables,
        bar: i32,
    ) -> (Vec<(u32, i32)>, (i64, i64)) {
        let mut over = pattern_over(&self.patterns, t, bar);
        if self.removed_count > 0 {
            over.retain(|&(e, _)| !self.is_removed(e as usize));
        }
        (over, self.pattern_counts.moments(&t.rows))
    }
}

/// The best `k` live entries of the gallery by pattern score (ties to the lower subject id),
/// per shard, in no particular order, and the sum and sum of squares of every entry's score
/// (see [`Shard::pattern_pass`]). A bar from every 64th entry's score, over all shards, that by
/// a wide margin more than `k` entries clear (as
/// [`best_of_shard`](super::stage1::best_of_shard) sets one per shard): each shard gathers only
/// the entries at or above it, about 2·`k` in all, and the best `k` are selected from those.
/// If fewer clear it (a bar set too high), every entry is gathered. (A bar per shard had each
/// shard gather 2·`k` for a selection of `k` over them all, and reading their ids and
/// selecting had been a tenth of a search at 1,000,000 identities.)
pub(super) type PatternBest = (Vec<Vec<(usize, f32)>>, (i64, i64));

/// About one entry in 64, for the bar: the first 64 of every 4,096 (runs of whole cache lines,
/// which the prefetcher follows; every 64th entry alone was a cache miss each, 1.5 ms of a
/// search at 1,000,000 identities), or every 64th in a shard smaller than that. Entries are in
/// enrolment order, which says nothing of their score, so a run is as fair a sample as a
/// stride.
fn sample_of(patterns: &[u32]) -> impl Iterator<Item = &u32> {
    const RUN: usize = 64;
    const EVERY: usize = RUN * 64;
    let (runs, strided) = if patterns.len() >= EVERY {
        (patterns, &patterns[..0])
    } else {
        (&patterns[..0], patterns)
    };
    runs.chunks(EVERY)
        .flat_map(|c| &c[..RUN.min(c.len())])
        .chain(strided.iter().step_by(RUN))
}
pub(super) fn pattern_best<S: std::ops::Deref<Target = Shard> + Sync>(
    shards: &[S],
    t: &PatternTables,
    k: usize,
    deadline: Deadline,
) -> Option<PatternBest> {
    let mut sample: Vec<i32> = shards
        .par_iter()
        .flat_map_iter(|s| sample_of(&s.patterns).map(|&v| t.score(v)))
        .collect();
    let j = (k / 64) * 2 + 16;
    let bar = if k > 0 && j < sample.len() {
        *sample.select_nth_unstable_by(j, |a, b| b.cmp(a)).1
    } else {
        i32::MIN
    };
    let pass = |bar: i32| {
        shards
            .par_iter()
            .map(|s| (!deadline.passed()).then(|| s.pattern_pass(t, bar)))
            .collect::<Option<Vec<_>>>()
    };
    let mut passes = pass(bar)?;
    if bar != i32::MIN && passes.iter().map(|(o, _)| o.len()).sum::<usize>() < k {
        passes = pass(i32::MIN)?;
    }
    let moments = passes
        .iter()
        .fold((0i64, 0i64), |x, (_, y)| (x.0 + y.0, x.1 + y.1));
    let mut over: Vec<(i32, SubjectId, u32, u32)> = passes
        .iter()
        .enumerate()
        .flat_map(|(si, (o, _))| {
            let ids = &shards[si].subjects;
            o.iter()
                .map(move |&(e, x)| (x, ids[e as usize], si as u32, e))
        })
        .collect();
    if over.len() > k && k > 0 {
        over.select_nth_unstable_by(k - 1, |a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    }
    over.truncate(k);
    let mut best = vec![Vec::new(); shards.len()];
    for (x, _, si, e) in over {
        best[si as usize].push((e as usize, x as f32 / PATTERN_UNIT));
    }
    Some((best, moments))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bars_sample_is_about_one_entry_in_64_at_every_size() {
        for n in [
            0usize, 1, 63, 64, 1_000, 4_095, 4_096, 4_097, 10_000, 250_000,
        ] {
            let v: Vec<u32> = (0..n as u32).collect();
            let got: Vec<u32> = super::sample_of(&v).copied().collect();
            let want = n.div_ceil(64);
            assert!(
                got.len() >= want && got.len() <= want + 64,
                "{n}: {} sampled",
                got.len()
            );
            let mut dedup = got.clone();
            dedup.dedup();
            assert_eq!(dedup.len(), got.len(), "{n}: an entry sampled twice");
        }
    }

    use super::*;
    use crate::search::IndexedMatcher;
    use crate::search::probe::ProbeCodes;
    use crate::search::reference::{enrol_capture, probe};
    use crate::search::stage1::FirstCode;
    use crate::{Matcher, Tenprint};
    use proptest::prelude::*;

    proptest! {
        /// The one-pass pattern selection keeps the best live entries a full sort of the whole
        /// gallery would (score, then lower id), and its moments are every entry's, removed
        /// ones included: from one to a few hundred distinct codes (many ties, some at the
        /// bar), removals, one to three shards, galleries both smaller and larger than the
        /// sample that sets the bar.
        #[test]
        fn pattern_selection_is_the_sorted_selection(
            distinct in 1u32..400,
            codes in proptest::collection::vec(0u32..400, 0..5000),
            removed in proptest::collection::vec(any::<bool>(), 0..5000),
            k in 1usize..300,
            count in 1usize..4,
            probe_class in proptest::collection::vec(proptest::option::of(0usize..PATTERN_CLASSES), POSITIONS),
        ) {
            // Packed codes from a few class combinations, unsure slots among them.
            let patterns: Vec<u32> = codes
                .iter()
                .map(|&c| {
                    // Base-6 digits of the code, 6 standing for an unsure slot.
                    let c = (c % distinct) as usize;
                    let classes: [Option<u8>; POSITIONS] = std::array::from_fn(|s| {
                        let x = c / 6usize.pow(s as u32 % 4) % 6;
                        (x < PATTERN_CLASSES).then_some(x as u8)
                    });
                    pack_patterns(&classes)
                })
                .collect();
            // Entry i of the whole goes to shard i % count, at entry i / count there.
            let ids: Vec<SubjectId> = (0..patterns.len() as u64).map(|i| i * 7919 % 10007).collect();
            let mut shards: Vec<Shard> = (0..count).map(|_| Shard::default()).collect();
            for (i, (&v, &id)) in patterns.iter().zip(&ids).enumerate() {
                let s = &mut shards[i % count];
                s.patterns.push(v);
                s.subjects.push(id);
            }
            for s in &mut shards {
                s.removed = vec![0; s.len().div_ceil(64)];
                s.pattern_counts = PatternCounts::of(&s.patterns);
            }
            for (i, _) in removed.iter().enumerate().filter(|(i, r)| **r && *i < patterns.len()) {
                let (s, e) = (&mut shards[i % count], i / count);
                s.removed[e / 64] |= 1 << (e % 64);
                s.removed_count += 1;
            }
            let probe: [Option<[f32; PATTERN_CLASSES]>; POSITIONS] = std::array::from_fn(|s| {
                probe_class[s].map(|c| std::array::from_fn(|x| if x == c { 0.9 } else { 0.025 }))
            });
            let t = PatternTables::new(&probe);
            let refs: Vec<&Shard> = shards.iter().collect();
            let (got, (sum, sq)) = pattern_best(&refs, &t, k, Deadline(None)).unwrap();
            let mut got: Vec<(SubjectId, f32)> = got
                .iter()
                .enumerate()
                .flat_map(|(si, b)| {
                    let ids = &refs[si].subjects;
                    b.iter().map(move |&(e, x)| (ids[e], x))
                })
                .collect();
            let all: Vec<i32> = patterns.iter().map(|&v| t.score(v)).collect();
            prop_assert_eq!(sum, all.iter().map(|&x| x as i64).sum::<i64>());
            prop_assert_eq!(sq, all.iter().map(|&x| x as i64 * x as i64).sum::<i64>());
            let mut want: Vec<(i32, SubjectId)> = (0..patterns.len())
                .filter(|&i| !shards[i % count].is_removed(i / count))
                .map(|i| (all[i], ids[i]))
                .collect();
            want.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            want.truncate(k);
            let mut want: Vec<(SubjectId, f32)> =
                want.into_iter().map(|(x, id)| (id, x as f32 / PATTERN_UNIT)).collect();
            want.sort_by_key(|w| w.0);
            got.sort_by_key(|g| g.0);
            prop_assert_eq!(got, want);
        }
    }

    /// The class counts the pattern moments come from stay those of the entries through
    /// enrolment one at a time and in bulk, removal and compaction, and give the moments a
    /// pass over the entries gives.
    #[test]
    fn pattern_counts_follow_enrolment_removal_and_compaction() {
        let m = IndexedMatcher::new(2);
        for p in 1..=40 {
            m.enroll(p, &enrol_capture(p)).unwrap();
        }
        let bulk: Vec<(SubjectId, Tenprint)> = (41..=80).map(|p| (p, enrol_capture(p))).collect();
        m.enroll_many(&bulk).unwrap();
        let check = |m: &IndexedMatcher| {
            let t = PatternTables::new(&ProbeCodes::new(&probe(7, 1)).unwrap().patterns);
            for s in &m.shards {
                let s = s.read().unwrap();
                assert_eq!(s.pattern_counts, PatternCounts::of(&s.patterns));
                let x: Vec<i64> = s.patterns.iter().map(|&v| t.score(v) as i64).collect();
                let want = (x.iter().sum(), x.iter().map(|x| x * x).sum());
                assert_eq!(s.pattern_counts.moments(&t.rows), want);
            }
        };
        check(&m);
        for p in [3, 4, 50, 77] {
            m.remove(p).unwrap();
        }
        check(&m);
        m.compact();
        check(&m);
        assert_eq!(m.len(), 76);
    }

    /// Stage 1 by pattern classes keeps every mate of a gallery larger than the cascade and
    /// finds it; a probe with too few fingers for its classes to narrow the gallery is ranked by
    /// words instead. Subjects tied on every code are told apart by their ids: with a hundred
    /// copies of one print, which ones the cascade and the shortlist keep, so the answer, is the
    /// same however the gallery is sharded (ties went to the lower entry of the lower shard, so
    /// one shard answered ids 1, 2, 3… and three 3, 6, 9…). A removed entry's classes are erased.
    #[test]
    fn pattern_classes_keep_mates_and_the_same_subjects_however_sharded() {
        let mut prints: Vec<(SubjectId, Tenprint)> =
            (1..=100).map(|id| (id, enrol_capture(7))).collect();
        prints.extend((101..=900).map(|p| (p, enrol_capture(p))));
        let load = |shards: usize, first: FirstCode| {
            let m = IndexedMatcher::new(shards)
                .with_cascade(20)
                .with_first_code(first);
            m.enroll_many(&prints).unwrap();
            m.compact();
            m
        };
        let (one, three) = (load(1, FirstCode::Patterns), load(3, FirstCode::Patterns));
        let copies = one.search(&probe(7, 1), 5).unwrap();
        assert!(
            copies.candidates.iter().all(|c| c.subject <= 100),
            "{copies:?}"
        );
        assert_eq!(three.search(&probe(7, 1), 5).unwrap(), copies);

        let auto = load(3, FirstCode::Auto);
        let words = load(3, FirstCode::Words);
        for p in (101..=900).step_by(53) {
            let q = probe(p, 1);
            assert_eq!(auto.first_code_for(&q).unwrap(), FirstCode::Patterns);
            let ranks = auto.shortlist_ranks(&q, p).unwrap().unwrap();
            assert!(ranks.fused.is_some(), "mate {p} not kept: {ranks:?}");
            let found = auto.search(&q, 5).unwrap();
            assert_eq!(found.hit.map(|c| c.subject), Some(p));
            assert_eq!(one.search(&q, 5).unwrap(), found);
            // Three fingers: ranked by words, as a matcher of words alone ranks it.
            let mut few = q.clone();
            few.fingers.truncate(3);
            assert_eq!(auto.first_code_for(&few).unwrap(), FirstCode::Words);
            assert_eq!(
                auto.search(&few, 5).unwrap(),
                words.search(&few, 5).unwrap()
            );
        }

        let e = auto.shards[500 % 3].read().unwrap().find(500).unwrap();
        assert_ne!(
            auto.shards[500 % 3].read().unwrap().patterns[e],
            pack_patterns(&[None; POSITIONS])
        );
        auto.remove(500).unwrap();
        assert_eq!(
            auto.shards[500 % 3].read().unwrap().patterns[e],
            pack_patterns(&[None; POSITIONS])
        );
    }
}
