//! The indexed two-stage matcher: a 1:N tenprint search of a sharded in-memory gallery, in
//! which an index and cheap codes narrow every enrolled subject down to a short list, and only
//! that list is paired minutia by minutia. (It does not pair every subject: `matcher-bench`'s
//! "exhaustive baseline", which does, is what it is measured against.)
//!
//! # A search, stage by stage
//!
//! 1. **The probe** is prepared once (`probe.rs`): each finger's minutiae (`geometry.rs`) and
//!    their edges to the three nearest neighbours (`edges.rs`), with lengths and directions
//!    relative to the edge, so nothing before the pairing needs an alignment.
//! 2. **Stage 1, the first code**, ranks every subject, per shard in parallel (`stage1.rs`). For
//!    a probe of at least [`PATTERN_MIN_FINGERS`] fingers it is the fingers' pattern classes
//!    (`patterns.rs`; see [`FirstCode`]): four bytes a subject, scanned eight at a time. For a
//!    probe with fewer, the edge words (`words.rs`): the probe's words weighted by their rarity
//!    in the gallery, walked through each shard's compressed inverted index (`postings.rs`).
//!    The best [`CASCADE`] (or a share of the gallery) are kept.
//! 3. **Stage 1, the second code**: only the kept subjects' pair-distance histograms
//!    (`histogram.rs`) are read. The two codes' z-scores are summed, and the best
//!    [`shortlist_len`] by the fused score, with the best [`SHORTLIST_PER_CODE`] by each code
//!    alone, go on. For a tenprint probe, the best [`SWAP_SCORED`] by the fused score are also
//!    scored under each swap hypothesis — two adjacent fingers of one hand recorded in each
//!    other's place, as mis-sequenced bookings have them (`swaps.rs`) — and the best
//!    [`SWAP_SHORTLIST`] by their best hypothesis go on too, to be paired under it.
//! 4. **Stage 2, pairing** (`pairing.rs`): for each shortlisted subject and common finger,
//!    matched edge pairs propose alignments, the one most pairs agree with is applied, and
//!    minutiae are paired greedily; a subject's score is the sum over its fingers (under a
//!    swap hypothesis, the higher of the straight and the crosswise readings). The best
//!    candidates are returned, the first a hit if it reaches the [`THRESHOLD`].
//!
//! How many subjects each stage keeps, and why, is in `tuning.rs`. Everything that depends on
//! the CPU — the hot loops compiled for AVX2 where it has it, the hand-written AVX2 code beside
//! its portable twin, prefetches, and every `unsafe` of the matcher — is in `simd.rs`.
//!
//! # The gallery
//!
//! Memory is what limits the gallery size (issue 4 aims at 3 KB per tenprint identity), so a
//! shard (`shard.rs`) keeps only what a search reads, in flat arrays rather than a structure per
//! subject: the minutiae packed in 32 bits each (stage 2 recomputes a shortlisted finger's
//! edges from them — a few dozen fingers per search, bit for bit the edges enrolment would have
//! kept), each finger's word count (stage 1's normaliser; the words themselves live only in the
//! index), the histograms, the pattern classes, and the index as delta-encoded, bit-packed
//! posting lists. [`IndexedMatcher::heap_bytes`] (`memory.rs`) says where it goes.
//!
//! The gallery keeps one finger per position 1..=10 (ANSI/NIST-ITL), the first one listed;
//! fingers at other positions are ignored on both sides (the gateway refuses them anyway).
//! Shards are independent vectors behind their own locks, scanned in parallel with rayon; the
//! shortlist is merged across shards with a top-k selection, and every selection breaks ties
//! by subject id, so the answers do not depend on the sharding.
//!
//! Enrolment (`enrol.rs`) appends an entry; a bulk load ([`IndexedMatcher::enroll_many`])
//! appends batches, each merged into the index at once. Removal ([`Matcher::remove`]) marks the
//! entry removed — searches never keep it — and zeroes its minutiae and codes; its postings stay
//! in the index, naming an entry no search keeps, until [`IndexedMatcher::compact`] drops the
//! removed entries (a subject enrolled again gets a new entry). Stage 1's word weights stop
//! counting a removed print at once. The decision threshold can be set from the gallery for a
//! target FPIR (`calibrate.rs`), and `ranks.rs` reports where a subject ranks in stage 1, for
//! the benchmark. A built gallery can be saved and read back whole (`snapshot.rs`), so a
//! gateway need not enrol a million prints again at each start.

mod calibrate;
mod edges;
mod enrol;
mod geometry;
mod histogram;
mod memory;
mod pairing;
mod patterns;
mod postings;
mod probe;
mod ranks;
#[cfg(test)]
mod reference;
mod shard;
mod simd;
pub mod snapshot;
mod stage1;
mod swaps;
#[cfg(test)]
mod tests;
mod tuning;
mod words;

pub use geometry::MAX_COORD;
pub use memory::GalleryBytes;
pub use pairing::compare_fingers;
pub use ranks::ShortlistRanks;
pub use snapshot::SnapshotError;
pub use stage1::FirstCode;
pub use tuning::{
    CASCADE, CASCADE_SHARE, MIN_TAIL_SEARCHES, PATTERN_CASCADE_SHARE, PATTERN_MIN_FINGERS,
    PATTERN_SHORTLIST_GROWTH, SHORTLIST, SHORTLIST_GROWTH, SHORTLIST_PER_CODE, STRANGER_FLOOR,
    STRANGER_FLOOR_FPIR, SWAP_SCORED, SWAP_SHORTLIST, THRESHOLD, pattern_shortlist_len,
    shortlist_len,
};

use crate::{Calibration, Candidate, MatchError, Matcher, SearchResult, SubjectId, Tenprint};
use pairing::stage2_score;
use probe::ProbeCodes;
use rayon::prelude::*;
use shard::Shard;
use stage1::{Deadline, shortlist, stage1};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::time::Instant;
use tuning::{Tuning, cascade_len};
use words::Vocabulary;

/// The indexed two-stage matcher over a sharded in-memory gallery (see the module comment).
pub struct IndexedMatcher {
    shards: Vec<RwLock<Shard>>,
    enrolled: Mutex<HashSet<SubjectId>>,
    /// Lock order: never waited for while a shard lock is wanted. Enrolment takes it to write
    /// (after `enrolled`, holding no shard lock); a shard's holder may take it to read.
    vocabulary: RwLock<Vocabulary>,
    /// The decision threshold's bits ([`THRESHOLD`] unless set or calibrated).
    threshold: AtomicU32,
    tuning: Tuning,
}

impl IndexedMatcher {
    pub fn new(shards: usize) -> Self {
        IndexedMatcher {
            shards: (0..shards.max(1))
                .map(|_| RwLock::new(Shard::default()))
                .collect(),
            enrolled: Mutex::new(HashSet::new()),
            vocabulary: RwLock::new(Vocabulary::default()),
            threshold: AtomicU32::new(THRESHOLD.to_bits()),
            tuning: Tuning::default(),
        }
    }

    /// The subjects enrolled, in no particular order.
    pub fn subjects(&self) -> Vec<SubjectId> {
        let enrolled = self.enrolled.lock().expect("enrolled lock");
        enrolled.iter().copied().collect()
    }

    /// The same matcher keeping `k` subjects (at least 1) by word score for the histogram code
    /// and the fused score, instead of [`CASCADE`]: for tests and the benchmark, to see what
    /// the cascade costs and loses.
    pub fn with_cascade(mut self, k: usize) -> Self {
        self.tuning.cascade = Some(k.max(1));
        self
    }

    /// The same matcher walking only words listed for at most `share` of the gallery, instead
    /// of `STOP_WORD_SHARE` (the index keeps lists up to `DROP_SHARE` whatever this is):
    /// for the benchmark, to see what a more selective walk costs in ranks.
    pub fn with_stop_share(mut self, share: f64) -> Self {
        self.tuning.stop_share = share.clamp(0.0, 1.0);
        self
    }

    /// The same matcher ranking every subject first by `first` (see [`FirstCode`]): for the
    /// benchmark and tests, to compare the codes on one gallery.
    pub fn with_first_code(mut self, first: FirstCode) -> Self {
        self.tuning.first = first;
        self
    }

    /// Sets how many subjects are paired under their best swap hypothesis (see
    /// [`SWAP_SHORTLIST`]; 0: none, and no hypothesis is scored), on a matcher already loaded:
    /// for the benchmark, to measure what the hypotheses cost and find on one gallery.
    pub fn set_swap_shortlist(&mut self, k: usize) {
        self.tuning.swaps = k;
    }

    /// Sets how many kept subjects have their swap hypotheses scored (see [`SWAP_SCORED`]):
    /// for the benchmark.
    pub fn set_swap_scored(&mut self, k: usize) {
        self.tuning.swap_scored = k;
    }

    /// Sets stage 1's first code of a matcher already loaded (see [`FirstCode`]).
    pub fn set_first_code(&mut self, first: FirstCode) {
        self.tuning.first = first;
    }

    /// How many subjects stage 1 keeps by word score in the gallery as it is now (see
    /// [`CASCADE`]).
    pub fn cascade_len(&self) -> usize {
        cascade_len(self.tuning.cascade, self.len(), false)
    }

    /// How many subjects stage 1 keeps by its first code `first` (words or patterns) in the
    /// gallery as it is now.
    pub fn cascade_len_for(&self, first: FirstCode) -> usize {
        cascade_len(
            self.tuning.cascade,
            self.len(),
            first == FirstCode::Patterns,
        )
    }

    /// The fused score at which a search's best candidate is a hit.
    pub fn threshold(&self) -> f32 {
        f32::from_bits(self.threshold.load(Ordering::Relaxed))
    }

    /// Sets the decision threshold (searches that start afterwards use it).
    pub fn set_threshold(&self, threshold: f32) {
        self.threshold.store(threshold.to_bits(), Ordering::Relaxed);
    }

    /// Every shard's read lock, held together: one consistent view of the gallery for as long
    /// as the guards live.
    fn read_shards(&self) -> Vec<RwLockReadGuard<'_, Shard>> {
        self.shards
            .iter()
            .map(|s| s.read().expect("shard lock"))
            .collect()
    }
}

/// Keeps the `k` best by score (ties: lower subject id first, for determinism).
fn top_k(mut v: Vec<Candidate>, k: usize) -> Vec<Candidate> {
    v.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.subject.cmp(&b.subject)));
    v.truncate(k);
    v
}

impl Matcher for IndexedMatcher {
    /// See [`IndexedMatcher::enroll_many`] to load many prints.
    fn enroll(&self, subject: SubjectId, print: &Tenprint) -> Result<(), MatchError> {
        self.enroll_one(subject, print)
    }

    /// The deadline is checked before each probe finger's walk in every shard (at 1,000,000
    /// identities in 4 shards, about every 2–3 ms of a search), and before each shortlisted
    /// subject is paired.
    fn search_before(
        &self,
        probe: &Tenprint,
        max_candidates: usize,
        deadline: Option<Instant>,
    ) -> Result<SearchResult, MatchError> {
        let deadline = Deadline(deadline);
        let codes = ProbeCodes::new(probe)?;
        let probe = &codes.fingers;
        if deadline.passed() {
            return Err(MatchError::DeadlineExceeded);
        }
        // Every shard's read lock for the whole search: one consistent gallery view.
        let shards = self.read_shards();
        let v = self.vocabulary.read().expect("vocabulary lock");
        let st = stage1(&shards, &codes, self.tuning, &v, deadline)
            .ok_or(MatchError::DeadlineExceeded)?;
        drop(v);
        let short = shortlist(&st);
        // Stage 2 on the shortlist, in parallel.
        let scored: Vec<Candidate> = short
            .par_iter()
            .map(|s| {
                if deadline.passed() {
                    return None;
                }
                let shard = &shards[s.shard];
                Some(Candidate {
                    subject: shard.subjects[s.entry],
                    score: stage2_score(probe, shard, s.entry, s.reading),
                })
            })
            .collect::<Option<_>>()
            .ok_or(MatchError::DeadlineExceeded)?;
        let candidates = top_k(scored, max_candidates.max(1));
        let hit = candidates
            .first()
            .copied()
            .filter(|c| c.score >= self.threshold());
        Ok(SearchResult { candidates, hit })
    }

    /// Marks the subject's entry removed in its shard (found by a scan of the shard's ids:
    /// about 50 µs per 250,000 entries), under the shard's write lock, so a search holding
    /// the read lock sees it either whole or gone.
    fn remove(&self, subject: SubjectId) -> Result<(), MatchError> {
        self.remove_subject(subject)
    }

    /// `searches` enrolled prints (spread evenly over the gallery) are searched as probes,
    /// each with itself left out — a non-mated search, as the gallery holds each person once
    /// — and the threshold is put just above the impostor score that at most `target_fpir` of
    /// them reach. A target the searches cannot resolve (fewer than 1 / `target_fpir`: a
    /// gallery of fewer prints) puts it where the tail of their impostor scores, extrapolated,
    /// falls to the target (never below the highest seen), and says so. Costs `searches` searches; the
    /// threshold is unchanged on error.
    fn calibrate_threshold(
        &self,
        target_fpir: f64,
        searches: usize,
    ) -> Result<Calibration, MatchError> {
        self.calibrate(target_fpir, searches)
    }

    fn threshold(&self) -> f32 {
        IndexedMatcher::threshold(self)
    }

    fn set_threshold(&self, threshold: f32) {
        IndexedMatcher::set_threshold(self, threshold)
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().expect("shard lock").live())
            .sum()
    }
}
