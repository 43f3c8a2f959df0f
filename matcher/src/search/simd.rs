//! Everything the matcher does that depends on the CPU, and all its `unsafe`: the run-time
//! choice between the portable code and AVX2, the AVX2 code itself beside its portable twin,
//! and cache prefetches. The rest of the matcher calls the safe functions here.
//!
//! The build targets any x86-64, so AVX2 is detected at run time (the standard library caches
//! the answer). An [`Avx2`] value is the proof of it: only [`Avx2::detect`] makes one, so a
//! safe function that takes one may run code compiled for AVX2. The hot paths run so:
//!
//! - enrolment's edges, words and histogram ([`finger_codes`]), stage 1's swap hypotheses
//!   ([`swap_deltas`]) and stage 2 ([`stage2_score`]): the portable Rust code compiled a
//!   second time with AVX2 enabled, so its vectorised loops take eight lanes where SSE2 has
//!   four — the same operations on the same values, so the same bits (the swap hypotheses'
//!   dot product is hand-written, [`cross_avx2`]: the compiler left it scalar);
//! - stage 2's edge window ([`EdgeWindow`]) and the pattern scan ([`pattern_over`]):
//!   hand-written intrinsics beside the portable loops they replace, which give the same
//!   answers in the same order.
//!
//! The tests at the bottom check each AVX2 path against the portable one, bit for bit, where
//! the CPU running them has AVX2.

use super::edges::{Edge, Prepared, Scratch};
use super::enrol::finger_codes_portable;
use super::geometry::{Point, binary_angdiff};
use super::histogram::{Code, HIST};
use super::pairing::{EDGE_TURNS, GalleryEdges, ProbeEdge, Reading, Stage2Work, stage2_score_with};
use super::patterns::PatternTables;
use super::shard::Shard;
use super::swaps::{self, Deltas, SwapProbe};
use std::ops::Range;

#[cfg(target_arch = "x86_64")]
use super::{geometry::POSITIONS, patterns::PATTERN_BITS};

/// Proof that the CPU has AVX2 (see the module comment).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
pub(super) struct Avx2(());

#[cfg(target_arch = "x86_64")]
impl Avx2 {
    /// An [`Avx2`] if the CPU has AVX2.
    #[inline]
    pub(super) fn detect() -> Option<Avx2> {
        std::arch::is_x86_feature_detected!("avx2").then_some(Avx2(()))
    }
}

/// The portable code, for any CPU.
#[derive(Clone, Copy, Debug)]
pub(super) struct Portable;

/// Asks the cache for `v[i]`, without waiting for it: the index walk and stage 1's histogram
/// reads call this some items ahead of their reads. Does nothing where there is no prefetch
/// instruction.
#[inline]
pub(super) fn prefetch<T>(v: &[T], i: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = v.as_ptr().wrapping_add(i);
        // SAFETY: a prefetch is a hint that never faults and reads nothing into the program,
        // whatever the address; SSE is in every x86-64 target.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (v, i);
}

/// A gallery finger's stage-1 codes ([`finger_codes_portable`]: appends its edge words to
/// `words` and returns its histogram code), compiled for AVX2 where the CPU has it: most of a
/// bulk load's work.
pub(super) fn finger_codes(points: &[Point], scratch: &mut Scratch, words: &mut Vec<u16>) -> Code {
    #[cfg(target_arch = "x86_64")]
    if let Some(avx2) = Avx2::detect() {
        return finger_codes_avx2(avx2, points, scratch, words);
    }
    finger_codes_portable(points, scratch, words)
}

/// [`finger_codes_portable`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
pub(super) fn finger_codes_avx2(
    _: Avx2,
    points: &[Point],
    scratch: &mut Scratch,
    words: &mut Vec<u16>,
) -> Code {
    #[target_feature(enable = "avx2")]
    fn compiled(points: &[Point], scratch: &mut Scratch, words: &mut Vec<u16>) -> Code {
        finger_codes_portable(points, scratch, words)
    }
    // SAFETY: an `Avx2` exists only where the CPU has AVX2.
    unsafe { compiled(points, scratch, words) }
}

/// Entry `e`'s changes of score under the probe's swap hypotheses
/// ([`SwapProbe::deltas_with`]): with the AVX2 dot product where the CPU has it (the portable
/// one, a lane at a time, had been a fifth of a search), the same integers either way.
#[inline]
pub(super) fn swap_deltas(sw: &SwapProbe, shard: &Shard, e: usize, t: &PatternTables) -> Deltas {
    #[cfg(target_arch = "x86_64")]
    if let Some(avx2) = Avx2::detect() {
        return swap_deltas_avx2(avx2, sw, shard, e, t);
    }
    sw.deltas_with(shard, e, t, swaps::cross)
}

/// [`swap_deltas`] compiled for AVX2, with [`cross_avx2`].
#[cfg(target_arch = "x86_64")]
#[inline]
pub(super) fn swap_deltas_avx2(
    _: Avx2,
    sw: &SwapProbe,
    shard: &Shard,
    e: usize,
    t: &PatternTables,
) -> Deltas {
    #[target_feature(enable = "avx2")]
    fn compiled(sw: &SwapProbe, shard: &Shard, e: usize, t: &PatternTables) -> Deltas {
        // (A closure in a function compiled for AVX2 may call one.)
        sw.deltas_with(shard, e, t, |p, a, b| cross_avx2(p, a, b))
    }
    // SAFETY: an `Avx2` exists only where the CPU has AVX2.
    unsafe { compiled(sw, shard, e, t) }
}

/// [`swaps::cross`] in AVX2: both codes widened to 16-bit lanes, subtracted, and multiplied
/// with the probe's differences in two multiply-adds of 16-bit pairs into 32-bit sums (each
/// pair's sum at most 2 · 255², exact), then summed across lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn cross_avx2(pd: &[i16; HIST], ha: &Code, hb: &Code) -> i32 {
    use std::arch::x86_64::*;
    const _: () = assert!(HIST == 32);
    // SAFETY: each code is 32 bytes, and `pd` 32 `i16`s: one 32-byte read of each code and
    // two of `pd`.
    let (a, b, p_lo, p_hi) = unsafe {
        (
            _mm256_loadu_si256(ha.as_ptr() as *const __m256i),
            _mm256_loadu_si256(hb.as_ptr() as *const __m256i),
            _mm256_loadu_si256(pd.as_ptr() as *const __m256i),
            _mm256_loadu_si256(pd.as_ptr().add(16) as *const __m256i),
        )
    };
    let widen = |v: __m256i| {
        (
            _mm256_cvtepu8_epi16(_mm256_castsi256_si128(v)),
            _mm256_cvtepu8_epi16(_mm256_extracti128_si256::<1>(v)),
        )
    };
    let ((a_lo, a_hi), (b_lo, b_hi)) = (widen(a), widen(b));
    let sums = _mm256_add_epi32(
        _mm256_madd_epi16(p_lo, _mm256_sub_epi16(b_lo, a_lo)),
        _mm256_madd_epi16(p_hi, _mm256_sub_epi16(b_hi, a_hi)),
    );
    let x = _mm_add_epi32(
        _mm256_castsi256_si128(sums),
        _mm256_extracti128_si256::<1>(sums),
    );
    let x = _mm_add_epi32(x, _mm_shuffle_epi32::<0b01_00_11_10>(x));
    let x = _mm_add_epi32(x, _mm_shuffle_epi32::<0b10_11_00_01>(x));
    _mm_cvtsi128_si32(x)
}

/// Stage 2's score of entry `e` ([`stage2_score_with`]), compiled for AVX2 and with the AVX2
/// edge window where the CPU has it: most of a search at 1,000,000 identities.
pub(super) fn stage2_score(
    probe: &[(usize, Prepared)],
    shard: &Shard,
    e: usize,
    reading: Reading,
    w: &mut Stage2Work,
) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if let Some(avx2) = Avx2::detect() {
        return stage2_score_avx2(avx2, probe, shard, e, reading, w);
    }
    stage2_score_portable(probe, shard, e, reading, w)
}

/// [`stage2_score`] for any CPU.
pub(super) fn stage2_score_portable(
    probe: &[(usize, Prepared)],
    shard: &Shard,
    e: usize,
    reading: Reading,
    w: &mut Stage2Work,
) -> f32 {
    stage2_score_with(probe, shard, e, reading, w, Portable)
}

/// [`stage2_score`] compiled for AVX2, with the AVX2 edge window.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(super) fn stage2_score_avx2(
    avx2: Avx2,
    probe: &[(usize, Prepared)],
    shard: &Shard,
    e: usize,
    reading: Reading,
    w: &mut Stage2Work,
) -> f32 {
    #[target_feature(enable = "avx2")]
    fn compiled(
        avx2: Avx2,
        probe: &[(usize, Prepared)],
        shard: &Shard,
        e: usize,
        reading: Reading,
        w: &mut Stage2Work,
    ) -> f32 {
        stage2_score_with(probe, shard, e, reading, w, avx2)
    }
    // SAFETY: an `Avx2` exists only where the CPU has AVX2.
    unsafe { compiled(avx2, probe, shard, e, reading, w) }
}

/// One pairing of two fingers ([`compare_in`](super::pairing::compare_in)) compiled for AVX2
/// as stage 2 runs it: for the tests that check it against the reference.
#[cfg(all(test, target_arch = "x86_64"))]
pub(super) fn compare_avx2(avx2: Avx2, a: &Prepared, b: &Prepared) -> f32 {
    #[target_feature(enable = "avx2")]
    fn compiled(avx2: Avx2, a: &Prepared, b: &Prepared) -> f32 {
        use super::pairing::{CompareWork, compare_in};
        compare_in(a, b, &mut CompareWork::default(), avx2)
    }
    // SAFETY: an `Avx2` exists only where the CPU has AVX2.
    unsafe { compiled(avx2, a, b) }
}

/// How [`compare_in`](super::pairing::compare_in) finds, within a window of the gallery's
/// edges (those near a probe edge's length), the edges whose two directions both lie within
/// [`EDGE_TURNS`] of the probe edge's: in order, each appended to `pairs` as (probe minutia,
/// gallery minutia) until it holds 256. (Only this probe edge stops there: later probe edges
/// each add their first match — the rule the scores were calibrated with.)
pub(super) trait EdgeWindow: Copy {
    /// Readies `flags`, the window's working memory, for a gallery finger of `edges` edges.
    fn size_flags(self, flags: &mut Vec<u8>, edges: usize);
    /// Appends the matches of `probe` among `gallery`'s edges in `window`.
    fn matches(
        self,
        gallery: &GalleryEdges,
        flags: &mut [u8],
        window: Range<usize>,
        probe: ProbeEdge,
        pairs: &mut Vec<(usize, usize)>,
    );
}

impl EdgeWindow for Portable {
    /// A flag per gallery edge (1: it matches the probe edge), and 8 more, so eight flags can
    /// always be read at once.
    #[inline(always)]
    fn size_flags(self, flags: &mut Vec<u8>, edges: usize) {
        flags.clear();
        flags.resize(edges + 8, 0);
    }

    /// Both direction tests run branch-free over the whole window, writing a flag per edge;
    /// then the matches are read eight flags at a time: most windows have none or one, and a
    /// flag at a time had been a tenth of a comparison.
    #[inline(always)]
    fn matches(
        self,
        gallery: &GalleryEdges,
        flags: &mut [u8],
        window: Range<usize>,
        probe: ProbeEdge,
        pairs: &mut Vec<(usize, usize)>,
    ) {
        let (lo, hi) = (window.start, window.end);
        let (alpha, beta) = (gallery.alpha, gallery.beta);
        for ((flag, &al), &be) in flags[lo..hi]
            .iter_mut()
            .zip(&alpha[lo..hi])
            .zip(&beta[lo..hi])
        {
            *flag = ((binary_angdiff(probe.alpha, al) <= EDGE_TURNS)
                & (binary_angdiff(probe.beta, be) <= EDGE_TURNS)) as u8;
        }
        // Flags past `hi` are another probe edge's, so masked off.
        let mut k = lo;
        while k < hi {
            let mut w = u64::from_le_bytes(flags[k..k + 8].try_into().expect("eight flags"));
            if hi - k < 8 {
                w &= (1u64 << ((hi - k) * 8)) - 1;
            }
            // A flag is 0 or 1, so its byte's lowest bit is the flag: a bit every eighth.
            if push_matches(w, 8, k, probe.from, gallery.edges, pairs) {
                return;
            }
            k += 8;
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl EdgeWindow for Avx2 {
    /// The AVX2 window keeps no flags.
    #[inline(always)]
    fn size_flags(self, _: &mut Vec<u8>, _: usize) {}

    #[inline(always)]
    fn matches(
        self,
        gallery: &GalleryEdges,
        _: &mut [u8],
        window: Range<usize>,
        probe: ProbeEdge,
        pairs: &mut Vec<(usize, usize)>,
    ) {
        // SAFETY: an `Avx2` exists only where the CPU has AVX2.
        unsafe { window_avx2(gallery, window, probe, pairs) }
    }
}

/// The AVX2 [`EdgeWindow`]: sixteen edges a step, their matches read from a mask (two bits an
/// edge) rather than stored as flags and read back. The portable window had been a third of
/// stage 2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn window_avx2(
    gallery: &GalleryEdges,
    window: Range<usize>,
    probe: ProbeEdge,
    pairs: &mut Vec<(usize, usize)>,
) {
    use std::arch::x86_64::*;
    // Whole-vector reads reach up to 15 lanes past the window's end: the columns have 16 more
    // (see `GalleryEdges`), and these bounds are checked once here.
    let (alpha, beta) = (
        &gallery.alpha[..window.end + 16],
        &gallery.beta[..window.end + 16],
    );
    let pa = _mm256_set1_epi16(probe.alpha as i16);
    let pb = _mm256_set1_epi16(probe.beta as i16);
    let turns = _mm256_set1_epi16(EDGE_TURNS as i16);
    // |a − b| as `binary_angdiff` takes it, at most EDGE_TURNS (unsigned: the one difference
    // whose absolute value overflows, 0x8000, is half a turn).
    let within = |probe: __m256i, gallery: __m256i| {
        let d = _mm256_abs_epi16(_mm256_sub_epi16(probe, gallery));
        _mm256_cmpeq_epi16(_mm256_min_epu16(d, turns), d)
    };
    let mut k = window.start;
    while k < window.end {
        // SAFETY: lanes k..k + 16 lie within `alpha` and `beta`, which reach 16 lanes past
        // the window's end (sliced above), and k < window.end.
        let (al, be) = unsafe {
            (
                _mm256_loadu_si256(alpha.as_ptr().add(k) as *const __m256i),
                _mm256_loadu_si256(beta.as_ptr().add(k) as *const __m256i),
            )
        };
        let ok = _mm256_and_si256(within(pa, al), within(pb, be));
        let mut bits = _mm256_movemask_epi8(ok) as u32 & 0x5555_5555;
        if window.end - k < 16 {
            bits &= (1 << (2 * (window.end - k))) - 1;
        }
        if push_matches(bits as u64, 2, k, probe.from, gallery.edges, pairs) {
            return;
        }
        k += 16;
    }
}

/// Appends to `pairs` the gallery edges a window's match mask names, lowest first — bit
/// `stride · i` set for edge `k + i`, and no other bit — paired with probe minutia `from`,
/// until `pairs` holds 256; returns whether it does.
#[inline(always)]
fn push_matches(
    mut mask: u64,
    stride: u32,
    k: usize,
    from: u16,
    edges: &[Edge],
    pairs: &mut Vec<(usize, usize)>,
) -> bool {
    while mask != 0 {
        let j = k + (mask.trailing_zeros() / stride) as usize;
        pairs.push((from as usize, edges[j].from as usize));
        if pairs.len() >= 256 {
            return true;
        }
        mask &= mask - 1;
    }
    false
}

/// Every entry of `patterns` whose pattern score (see [`PatternTables`]) is at least `bar`,
/// as (entry, score), ascending: the scan of a shard's pattern pass. Eight entries at once
/// where the CPU has AVX2 ([`pattern_over_avx2`]); the same entries and scores either way.
pub(super) fn pattern_over(patterns: &[u32], t: &PatternTables, bar: i32) -> Vec<(u32, i32)> {
    let mut over = Vec::new();
    #[cfg(target_arch = "x86_64")]
    if let Some(avx2) = Avx2::detect() {
        pattern_over_avx2(avx2, patterns, t, bar, &mut over);
        return over;
    }
    pattern_over_portable(patterns, 0, t, bar, &mut over);
    over
}

/// [`pattern_over`] for any CPU, of the entries `patterns` numbered from `first`, appended to
/// `over`. Branch-free: each entry is written at the end of the list, which grows only if it
/// clears the bar (a branch taken for a tenth of the entries mispredicted often enough to
/// double the pass), a block of entries at a time.
pub(super) fn pattern_over_portable(
    patterns: &[u32],
    first: usize,
    t: &PatternTables,
    bar: i32,
    over: &mut Vec<(u32, i32)>,
) {
    const BLOCK: usize = 1024;
    let mut len = over.len();
    for (b, block) in patterns.chunks(BLOCK).enumerate() {
        if over.len() < len + BLOCK {
            over.resize(len + 2 * BLOCK, (0, 0));
        }
        let room = &mut over[len..len + BLOCK];
        let mut got = 0;
        for (i, &v) in block.iter().enumerate() {
            let x = t.score(v);
            room[got] = ((first + b * BLOCK + i) as u32, x);
            got += (x >= bar) as usize;
        }
        len += got;
    }
    over.truncate(len);
}

/// [`pattern_over`] with AVX2, eight entries at a time: each slot's scores are eight lanes,
/// and a lane permutation by the entries' codes (the low three bits of each lane, shifted
/// down a slot at a time) picks each entry's, summed over the ten slots. The entries at or
/// above the bar are packed to the front of the eight lanes by a permutation looked up by
/// their mask ([`LEFT_PACK`]) and all eight lanes written at the end of the list, which grows
/// by how many cleared: branch-free, as the scalar scan (a branch on whether any of eight
/// cleared mispredicted often enough to be 40% of the scan). The scalar scan's lookups and
/// gathering take several times as long.
#[cfg(target_arch = "x86_64")]
pub(super) fn pattern_over_avx2(
    _: Avx2,
    patterns: &[u32],
    t: &PatternTables,
    bar: i32,
    over: &mut Vec<(u32, i32)>,
) {
    // SAFETY: an `Avx2` exists only where the CPU has AVX2.
    unsafe { pattern_scan_avx2(patterns, t, bar, over) }
}

/// [`pattern_over_avx2`]'s scan, compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn pattern_scan_avx2(patterns: &[u32], t: &PatternTables, bar: i32, over: &mut Vec<(u32, i32)>) {
    use std::arch::x86_64::*;
    const BLOCK: usize = 1024;
    // Every load and store below reads or writes eight `i32`s or `u32`s.
    // SAFETY: each of `t.lanes` is an array of eight `i32`s.
    let lanes: [__m256i; POSITIONS] = std::array::from_fn(|s| unsafe {
        _mm256_loadu_si256(t.lanes[s].as_ptr() as *const __m256i)
    });
    let barv = _mm256_set1_epi32(bar);
    let eight = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let (mut entries, mut scores): (Vec<u32>, Vec<i32>) = (Vec::new(), Vec::new());
    let mut len = 0;
    let whole = patterns.len() / 8 * 8;
    for (b, block) in patterns[..whole].chunks(BLOCK).enumerate() {
        let room = len + block.len() + 8;
        entries.resize(room, 0);
        scores.resize(room, 0);
        for (c, codes) in block.chunks_exact(8).enumerate() {
            // SAFETY: `codes` is eight long (a `chunks_exact(8)` chunk).
            let mut v = unsafe { _mm256_loadu_si256(codes.as_ptr() as *const __m256i) };
            let mut x = _mm256_permutevar8x32_epi32(lanes[0], v);
            for row in &lanes[1..] {
                v = _mm256_srli_epi32::<{ PATTERN_BITS as i32 }>(v);
                x = _mm256_add_epi32(x, _mm256_permutevar8x32_epi32(*row, v));
            }
            let below = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(barv, x)));
            let clear = !below as usize & 0xFF;
            // SAFETY: a row of `LEFT_PACK` is eight `u32`s.
            let pack = unsafe { _mm256_loadu_si256(LEFT_PACK[clear].as_ptr() as *const __m256i) };
            let first = _mm256_set1_epi32((b * BLOCK + c * 8) as i32);
            let ids = _mm256_add_epi32(first, eight);
            // SAFETY: `scores` and `entries` have room for the block's entries and eight more
            // past where it started (see `room`), and `len` has grown by at most one an entry
            // of the block before this chunk, so eight from `len` are within them.
            unsafe {
                _mm256_storeu_si256(
                    scores.as_mut_ptr().add(len) as *mut __m256i,
                    _mm256_permutevar8x32_epi32(x, pack),
                );
                _mm256_storeu_si256(
                    entries.as_mut_ptr().add(len) as *mut __m256i,
                    _mm256_permutevar8x32_epi32(ids, pack),
                );
            }
            len += clear.count_ones() as usize;
        }
    }
    over.extend(
        entries[..len]
            .iter()
            .zip(&scores[..len])
            .map(|(&e, &x)| (e, x)),
    );
    pattern_over_portable(&patterns[whole..], whole, t, bar, over);
}

/// For each mask of eight lanes, the lanes it sets, in order, then zeros: the permutation
/// that packs a vector's chosen lanes to its front (see [`pattern_over_avx2`]).
#[cfg(target_arch = "x86_64")]
static LEFT_PACK: [[u32; 8]; 256] = {
    let mut table = [[0u32; 8]; 256];
    let mut mask = 0;
    while mask < 256 {
        let (mut lane, mut k) = (0, 0);
        while lane < 8 {
            if mask >> lane & 1 == 1 {
                table[mask][k] = lane as u32;
                k += 1;
            }
            lane += 1;
        }
        mask += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Matcher;
    use crate::search::IndexedMatcher;
    use crate::search::geometry::{POSITIONS, points};
    use crate::search::patterns::{PATTERN_CLASSES, pattern_code};
    use crate::search::probe::ProbeCodes;
    use crate::search::reference::{enrol_capture, probe};
    use proptest::prelude::*;
    use std::time::{Duration, Instant};

    /// Where the CPU has AVX2, enrolment's edges, words and histogram codes compiled for it
    /// are the portable code's, bit for bit (elsewhere there is nothing to compare).
    #[test]
    fn avx2_finger_codes_are_the_portable_ones() {
        #[cfg(target_arch = "x86_64")]
        if let Some(avx2) = Avx2::detect() {
            for p in 0..300 {
                for f in probe(p, 3).fingers {
                    let pts = points(&f);
                    let (mut a, mut b) = (Scratch::default(), Scratch::default());
                    let (mut wa, mut wb) = (vec![], vec![]);
                    let ha = finger_codes_portable(&pts, &mut a, &mut wa);
                    let hb = finger_codes_avx2(avx2, &pts, &mut b, &mut wb);
                    assert_eq!((ha, &wa), (hb, &wb));
                    let bits = |s: &Scratch| -> Vec<[u32; 4]> {
                        s.edges
                            .iter()
                            .map(|e| {
                                [
                                    e.from as u32 | (e.kinds as u32) << 16,
                                    e.len.to_bits(),
                                    e.alpha.to_bits(),
                                    e.beta.to_bits(),
                                ]
                            })
                            .collect()
                    };
                    assert_eq!(bits(&a), bits(&b));
                }
            }
        }
    }

    /// The swap hypotheses' deltas with the AVX2 dot product are the portable ones, exactly.
    #[test]
    fn avx2_swap_deltas_are_the_portable_ones() {
        #[cfg(target_arch = "x86_64")]
        if let Some(avx2) = Avx2::detect() {
            let m = IndexedMatcher::new(1);
            for p in 1..=40 {
                m.enroll(p, &enrol_capture(p)).unwrap();
            }
            let shard = m.shards[0].read().unwrap();
            for p in 1..=10 {
                let codes = ProbeCodes::new(&probe(p, 4)).unwrap();
                let (sw, t) = (SwapProbe::new(&codes), PatternTables::new(&codes.patterns));
                for e in 0..40 {
                    assert_eq!(
                        swap_deltas_avx2(avx2, &sw, &shard, e, &t),
                        sw.deltas_with(&shard, e, &t, swaps::cross)
                    );
                }
            }
        }
    }

    /// Stage 2 compiled for AVX2 scores mated and non-mated entries as the portable build
    /// does, to the bit (and prints the two builds' times, alternated, with `--nocapture`).
    #[test]
    fn avx2_stage2_scores_are_the_portable_ones() {
        // Straight, and under swap hypotheses of each hand.
        const SWAPS: [Reading; 5] = [
            Reading::Straight,
            Reading::Swapped { slot: 0 },
            Reading::Swapped { slot: 3 },
            Reading::Swapped { slot: 6 },
            Reading::Swapped { slot: 8 },
        ];
        #[cfg(target_arch = "x86_64")]
        if let Some(avx2) = Avx2::detect() {
            let m = IndexedMatcher::new(1);
            for p in 1..=60 {
                m.enroll(p, &enrol_capture(p)).unwrap();
            }
            let shard = m.shards[0].read().unwrap();
            let probes: Vec<ProbeCodes> = (1..=20)
                .map(|p| ProbeCodes::new(&probe(p, 9)).unwrap())
                .collect();
            let (mut portable, mut compiled) = (Duration::ZERO, Duration::ZERO);
            let mut work = Stage2Work::default();
            for _ in 0..3 {
                let t = Instant::now();
                let mut a: Vec<u32> = Vec::new();
                for c in &probes {
                    for e in 0..60 {
                        let swap = SWAPS[e % SWAPS.len()];
                        let x = stage2_score_portable(&c.fingers, &shard, e, swap, &mut work);
                        a.push(x.to_bits());
                    }
                }
                portable += t.elapsed();
                let t = Instant::now();
                let mut b: Vec<u32> = Vec::new();
                for c in &probes {
                    for e in 0..60 {
                        let swap = SWAPS[e % SWAPS.len()];
                        let x = stage2_score_avx2(avx2, &c.fingers, &shard, e, swap, &mut work);
                        b.push(x.to_bits());
                    }
                }
                compiled += t.elapsed();
                assert_eq!(a, b);
                // Each probe's mate among the 60 scores far above the others.
                assert!(a.iter().any(|&x| f32::from_bits(x) > 2.0));
            }
            println!("stage 2, 3 x 1,200 entries: portable {portable:?}, AVX2 {compiled:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// The AVX2 pattern scan gathers the same entries with the same scores as the portable
        /// loop, in the same order, and both score each entry as its slots' codes add up: any
        /// codes (the unused ones and bits included), any length (several of the AVX2 scan's
        /// blocks, and a remainder past its eights), any bar.
        #[test]
        fn avx2_pattern_scan_is_the_portable_one(
            patterns in proptest::collection::vec(any::<u32>(), 0..2_500),
            probe_class in proptest::collection::vec(proptest::option::of(0usize..PATTERN_CLASSES), POSITIONS),
            bar in prop_oneof![Just(i32::MIN), -30_000i32..30_000],
        ) {
            let probe: [Option<[f32; PATTERN_CLASSES]>; POSITIONS] = std::array::from_fn(|s| {
                probe_class[s].map(|c| std::array::from_fn(|x| if x == c { 0.9 } else { 0.025 }))
            });
            let t = PatternTables::new(&probe);
            let mut want = Vec::new();
            pattern_over_portable(&patterns, 0, &t, bar, &mut want);
            let by_slot: Vec<(u32, i32)> = patterns
                .iter()
                .enumerate()
                .map(|(e, &v)| {
                    let x = (0..POSITIONS).map(|s| t.rows[s].get(pattern_code(v, s)).copied().unwrap_or(0)).sum();
                    (e as u32, x)
                })
                .filter(|&(_, x)| x >= bar)
                .collect();
            prop_assert_eq!(&want, &by_slot);
            #[cfg(target_arch = "x86_64")]
            if let Some(avx2) = Avx2::detect() {
                let mut got = Vec::new();
                pattern_over_avx2(avx2, &patterns, &t, bar, &mut got);
                prop_assert_eq!(got, want);
            }
        }
    }
}
