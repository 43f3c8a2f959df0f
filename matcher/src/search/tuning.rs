//! The numbers a search's cost and accuracy hang on, set by measurement with `matcher-bench`
//! (BENCHMARKS.md keeps what was measured when): how many subjects each stage keeps, which
//! words stage 1 walks and the index keeps, and where the decision falls. The rules that turn
//! them into lengths for a gallery of a given size are here too, and [`Tuning`], the settings
//! a benchmark or a test may change on one matcher.

use super::stage1::FirstCode;

/// Subjects that reach the pairing stage per search: among those stage 1 kept, the best by
/// the fused score — this many, plus one per [`SHORTLIST_GROWTH`] identities in the gallery
/// (see [`shortlist_len`]) — with the best [`SHORTLIST_PER_CODE`] by each code alone. A
/// mate's fused rank grows with the gallery (more impostors to outscore it), while stage 2 is
/// most of a search in a small gallery: so a small fixed part, and a part that grows
/// (`matcher-bench`'s rank table, BENCHMARKS.md).
pub const SHORTLIST: usize = 5;
/// The fused shortlist grows by one per this many enrolled identities: 30 at 1,000,000, a
/// margin over the worst mate's fused rank measured there.
pub const SHORTLIST_GROWTH: usize = 40_000;
/// The guard for a probe one code misreads (see [`SHORTLIST`]).
pub const SHORTLIST_PER_CODE: usize = 3;
/// Subjects the word score keeps for the histogram code and the fused score in stage 1: this
/// many, or one in [`CASCADE_SHARE`] of the gallery if more. A mate's word rank grows with the
/// gallery; a fixed cascade of this length lost mates at 1,000,000 identities, the share keeps
/// them (BENCHMARKS.md).
pub const CASCADE: usize = 4096;
/// See [`CASCADE`]: 20,000 kept at 1,000,000.
pub const CASCADE_SHARE: usize = 50;
/// With [`FirstCode::Patterns`], stage 1 keeps [`CASCADE`] subjects, or one in this many if
/// more: 4,096 at 1,000,000. Ten agreeing classes put a mate near the top (BENCHMARKS.md); by
/// estimate, a mate with two fingers classified wrongly ranks about 1,500th at 1,000,000,
/// inside the cascade, and one with three may fall outside (1 in 460 of a poor card's).
pub const PATTERN_CASCADE_SHARE: usize = 250;
/// With [`FirstCode::Patterns`], the fused shortlist grows by one per this many identities:
/// 15 at 1,000,000, a margin over the worst mate's fused rank measured there (the pattern
/// code ranks mates better than the words, so it grows more slowly than [`SHORTLIST_GROWTH`]).
pub const PATTERN_SHORTLIST_GROWTH: usize = 100_000;
/// With [`FirstCode::Patterns`], every subject tied at the best pattern score is paired too,
/// up to this many (the best by the fused score first). A probe whose ten classes are common
/// leaves strangers with exactly its mate's pattern score, and among those the histogram code
/// alone decides the fused rank: in a 1,000,000-person world a clean booking's FBI mate (the
/// best score in the gallery, 3.50 against an impostor's 0.26) tied with seven strangers and
/// ranked ninth by the fused score, one place past the shortlist, and was never paired. Ties
/// at the top carry no information to break, so they are paired rather than guessed between;
/// mates share the top score with a median of one stranger, at the 99th percentile eight.
pub const PATTERN_TIES_MAX: usize = 16;
/// With [`FirstCode::Patterns`], the subjects stage 1 scores best under a swap hypothesis
/// (two adjacent fingers read in each other's place; see `swaps.rs`) that raises their fused
/// score are paired too, this many, under the hypothesis and straight. At 100,000 identities,
/// every probe poor, every kept subject scored: 1 found 14 of the 21 swapped mates missed
/// without, 2 found 17, 3 found 19.
pub const SWAP_SHORTLIST: usize = 3;
/// With [`FirstCode::Patterns`], how many of the subjects stage 1 kept have their swap
/// hypotheses scored: the best by the straight fused score (a swapped mate still stands out
/// on its other eight fingers). A trade of speed for poor prints: with every probe poor at
/// 1,000,000 identities, scoring these 512 took FNIR at FPIR 0.1% from 5.7% to 4.4% for 1.06–
/// 1.11× the search time, and scoring all 4,096 kept to 3.8% for 1.22× (the pattern codes'
/// cache misses more than the arithmetic); on the mix of real bookings the difference is a
/// few in 10,000 (BENCHMARKS.md "Mis-sequenced fingers").
pub const SWAP_SCORED: usize = 512;
/// With fewer fingers than this a probe's pattern classes narrow the gallery too little (each
/// agreeing finger leaves about a third of the strangers), and stage 1 ranks by words.
pub const PATTERN_MIN_FINGERS: usize = 7;

/// Words listed for more than this share of the gallery's entries are stop words: stage 1
/// does not walk them. A trade between the postings a search walks and the word code's mate
/// ranks: a smaller share walks fewer postings but loses mates (`matcher-bench --stop-share`,
/// BENCHMARKS.md). It also sets what the index keeps (see [`DROP_SHARE`]).
pub(super) const STOP_WORD_SHARE: f64 = 0.02;
/// A word listed for at most this many entries is never a stop word: in a small gallery a
/// share is a handful of fingers (2% of 200 is 4), and every word would be one.
const STOP_MIN_DF: f64 = 20.0;

/// The document frequency above which a word is a stop word in a gallery of `n`.
pub(super) fn stop_above(n: usize, share: f64) -> f64 {
    (share * n as f64).max(STOP_MIN_DF)
}

/// A word is dropped from the index for good once the gallery has had [`DROP_MIN_PRINTS`]
/// prints enrolled and more than this share of them had it (see
/// [`Vocabulary`](super::words::Vocabulary)): 15% above [`STOP_WORD_SHARE`], so a word stage 1
/// would not walk. The margin matters: dropping at the stop share itself lost words whose
/// share touched it once and settled below, and a wider margin keeps lists no search walks
/// (BENCHMARKS.md).
///
/// The decision is the matcher's, over every shard, in enrolment order; each shard drops the
/// lists at its next merge, so the keys dropped do not depend on the shard count. (A share
/// over all prints moves less than a shard's would, which is why the margin can be this
/// narrow.)
pub(super) const DROP_SHARE: f64 = 1.15 * STOP_WORD_SHARE;
/// Below this many prints enrolled nothing is dropped: shares over a small gallery are noise
/// (a word 1.8% of prints have is 6.8 standard deviations below [`DROP_SHARE`] at this size).
pub(super) const DROP_MIN_PRINTS: u64 = 16_384;

/// Tenprint decision threshold on the fused score. With the calibrated capture model the
/// highest impostor score measured was 0.20 and the lowest genuine 1.20 (`matcher-bench`,
/// BENCHMARKS.md): 0.6 sits between the tails, a factor of three from each.
pub const THRESHOLD: f32 = 0.6;

/// A probe whose minutiae the extractor rated below this on average (over those it rated) is
/// a poor capture: the bands' means do not overlap (livescan 68–73, ink card 63–69, poor
/// 49–58, BENCHMARKS.md).
pub const POOR_PROBE_QUALITY: f32 = 60.0;
/// The histogram code's weight in the fused score for a poor probe (1 for others): its pair
/// histograms read a poor print badly (a poor mate's median rank by them at 1,000,000
/// identities is 233rd, by its pattern classes 2nd), so they mostly add noise to the pattern
/// classes' ranking.
pub const POOR_HIST_WEIGHT: f32 = 0.5;

/// Minutiae reported below this quality are left out, of probes and enrolled prints alike
/// (see `geometry::used`). Extractors report spurious minutiae — from creases, scars, a dry or
/// wet impression — with low quality, and on a poor print they are many: each lowers the
/// mate's finger score (paired² over both counts) and adds edges to stage 1's codes that
/// match nothing. At 100,000 identities, probes all in the poor band, leaving out those below
/// 35 took FNIR at FPIR 0.1% from 7.0% to 4.0% (`matcher-bench --probe-band poor`,
/// BENCHMARKS.md).
pub const MIN_MINUTIA_QUALITY: u8 = 35;
/// A finger keeps all its minutiae if fewer than this many reach [`MIN_MINUTIA_QUALITY`]: a
/// few reliable minutiae pair with anything.
pub const MIN_RELIABLE: usize = 8;

/// A calibration whose searches cannot resolve its target FPIR (a gallery of fewer than
/// 1 / FPIR prints) extrapolates the tail of the impostor scores it has (see `calibrate.rs`),
/// if it has at least this many; with fewer it keeps [`THRESHOLD`].
pub const MIN_TAIL_SEARCHES: usize = 20;
/// A calibration for FPIR 0.1% or less never sets the threshold below this score, resolved or
/// not. A stranger's best score hardly depends on the gallery's size (stage 2 pairs a short
/// list whatever the size), but a calibration's searches are the gallery's own clean
/// enrolments, not bookings: with the swap hypotheses (each non-mated booking read two ways
/// at its best candidates) the FPIR 0.1% point of booking-mix strangers measured 0.247
/// against a gallery of 300, 0.227 at 1,000, 0.224 at 3,000, 0.222 at 10,000, 0.23 at 100,000
/// and 0.26 at 1,000,000 (`matcher-bench`, 3,000 strangers at the small sizes), while the
/// self-calibration put 0.212 at 1,000 and 0.214 at 10,000 (FPIR 0.4% on the strangers) and
/// the extrapolation of a 315-print gallery's tail fell to the old floor of 0.22, where the
/// demo's strangers hit at 0.27%.
pub const STRANGER_FLOOR: f32 = 0.25;
/// The FPIR [`STRANGER_FLOOR`] was measured for: a looser target is not floored.
pub const STRANGER_FLOOR_FPIR: f64 = 0.001;

/// Stage 1's settings a benchmark may change (see [`IndexedMatcher::with_cascade`] and
/// [`IndexedMatcher::with_stop_share`]).
///
/// [`IndexedMatcher::with_cascade`]: super::IndexedMatcher::with_cascade
/// [`IndexedMatcher::with_stop_share`]: super::IndexedMatcher::with_stop_share
#[derive(Clone, Copy, Debug)]
pub(super) struct Tuning {
    /// A fixed cascade length instead of the rule.
    pub(super) cascade: Option<usize>,
    /// See [`STOP_WORD_SHARE`].
    pub(super) stop_share: f64,
    /// Stage 1's first code (see [`FirstCode`]).
    pub(super) first: FirstCode,
    /// See [`SWAP_SHORTLIST`]; 0 scores no swap hypothesis.
    pub(super) swaps: usize,
    /// See [`SWAP_SCORED`].
    pub(super) swap_scored: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            cascade: None,
            stop_share: STOP_WORD_SHARE,
            first: FirstCode::Auto,
            swaps: SWAP_SHORTLIST,
            swap_scored: SWAP_SCORED,
        }
    }
}

/// How many subjects stage 1 keeps by its first code in a gallery of `n`: `fixed`, or by the
/// rule of [`CASCADE`] (of [`PATTERN_CASCADE_SHARE`] for the pattern classes).
pub(super) fn cascade_len(fixed: Option<usize>, n: usize, patterns: bool) -> usize {
    let share = if patterns {
        PATTERN_CASCADE_SHARE
    } else {
        CASCADE_SHARE
    };
    fixed.unwrap_or(CASCADE.max(n / share)).min(n).max(1)
}

/// How many subjects the fused score shortlists in a gallery of `n` (see [`SHORTLIST`]) when
/// the first code is the words.
pub fn shortlist_len(n: usize) -> usize {
    SHORTLIST + n / SHORTLIST_GROWTH
}

/// How many subjects the fused score shortlists in a gallery of `n` when the first code is
/// the pattern classes (see [`PATTERN_SHORTLIST_GROWTH`]).
pub fn pattern_shortlist_len(n: usize) -> usize {
    SHORTLIST + n / PATTERN_SHORTLIST_GROWTH
}
