//! The exhaustive sharded matcher: every search looks at every enrolled subject.
//!
//! Two stages:
//! 1. **Shortlist**, a cascade over every subject. Its first code, for a probe of at least
//!    [`PATTERN_MIN_FINGERS`] fingers, is the fingers' **pattern classes** (arch, tented arch,
//!    loops, whorl; see [`crate::pattern`] and [`FirstCode`]): four bytes a subject, scored
//!    eight at a time by lane permutations (or three table lookups each), where the ten classes
//!    of a mate agree and few strangers' do. The best
//!    ([`PATTERN_CASCADE_SHARE`]) go on to the histogram code and the fused score as below. A
//!    probe with fewer fingers is ranked first by its edge words. Each enrolled finger
//!    carries its "edge words": every minutia's edges to its three nearest neighbours, quantised by length and
//!    by both directions relative to the edge, with the types (ending, bifurcation) of the
//!    edge's two minutiae — invariant to rotation and translation, so no alignment is needed.
//!    The probe's edges are expanded to the neighbouring bins too (jitter moves values across
//!    bin boundaries). A subject's word score sums, over common finger positions, the weights
//!    of its finger's words the probe finger has, over the square root of its word count; a
//!    word's weight is its inverse document frequency in the gallery, and words more than
//!    `STOP_WORD_SHARE` of the fingers have (stop words) are not looked at — found through a
//!    per-shard inverted index. The best subjects by word score are kept (see [`CASCADE`]);
//!    only their second code, a histogram of pair distances, is read. The two scores are fused (the
//!    sum of their z-scores); the best [`SHORTLIST`] kept subjects by the fused score and the
//!    best [`SHORTLIST_PER_CODE`] by each code (merged across shards) go on.
//! 2. **Minutiae pairing.** For each shortlisted subject and each common finger: edges to the
//!    three nearest neighbours of every minutia (length, and both directions relative to the
//!    edge — again invariant) are matched between probe and gallery finger; each matched edge
//!    pair proposes an alignment; the alignment most other edge pairs agree with is applied to
//!    the whole probe finger, and minutiae are paired greedily within a distance and angle
//!    tolerance. Finger score = paired² / (n_probe · n_gallery); tenprint score = the sum.
//!
//! Memory is what limits the gallery size (issue 4 aims at 3 KB per tenprint identity), so a
//! shard keeps only what a search reads, in flat arrays rather than a structure per subject:
//! the minutiae packed in 32 bits each (stage 2 recomputes a shortlisted finger's edges from
//! them — a few dozen fingers per search, bit-for-bit the edges enrolment would have kept),
//! each finger's word count (stage 1's normaliser; the words themselves live only in the
//! index), the histograms, and the index as delta-encoded, bit-packed posting lists.
//!
//! The gallery keeps one finger per position 1..=10 (ANSI/NIST-ITL), the first one listed;
//! fingers at other positions are ignored on both sides (the gateway refuses them anyway).
//!
//! Shards are independent vectors behind their own locks, scanned in parallel with rayon;
//! the shortlist is merged across shards with a top-k selection.
//!
//! Enrolment appends an entry; a bulk load ([`ExhaustiveMatcher::enroll_many`]) appends
//! batches, each merged into the index at once. Removal ([`Matcher::remove`]) marks
//! the entry removed — searches never keep it — and zeroes its minutiae and histogram codes;
//! its postings stay in the index, naming an entry no search keeps, until
//! [`ExhaustiveMatcher::compact`] drops the removed entries (a subject enrolled again gets a
//! new entry). Stage 1's word weights stop counting a removed print at once.

use crate::{
    Calibration, Candidate, MatchError, Matcher, SearchResult, SubjectId, Tenprint,
    template::{FingerTemplate, Minutia, MinutiaKind},
};
use rayon::prelude::*;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::f32::consts::PI;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Instant;

const PATTERN_CLASSES: usize = crate::pattern::CLASSES;

/// Subjects that reach the pairing stage per search: among those stage 1 kept (see `stage1`),
/// the best by the fused score — this many, plus one per [`SHORTLIST_GROWTH`] identities in the
/// gallery (see [`shortlist_len`]) — with the best [`SHORTLIST_PER_CODE`] by each code alone.
/// Tuned with `matcher-bench`'s rank table (BENCHMARKS.md). With typed words and the cascade,
/// over 1,000 mated searches of 50,000 identities every mate ranked first by the fused score
/// (with the earlier stage 1, two ranked 13th and 19th), and first in 200 of 100,000; a mate's
/// rank grows with the gallery (more impostors to outscore it): among 1,000 mated searches of
/// 1,000,000 identities the worst ranked 21st (p99 1st), and FNIR at FPIR 0.1% was 0. Stage 2
/// is most of a search in a small gallery, so this was cut from 10 to 5.
pub const SHORTLIST: usize = 5;
/// The fused shortlist grows by one per this many enrolled identities: 30 at 1,000,000, where
/// the worst of 1,000 mates measured ranked 21st.
pub const SHORTLIST_GROWTH: usize = 40_000;
/// The guard for a probe one code misreads (see [`SHORTLIST`]).
pub const SHORTLIST_PER_CODE: usize = 3;
/// Subjects the word score keeps for the histogram code and the fused score (see `stage1`):
/// this many, or one in [`CASCADE_SHARE`] of the gallery if more. At 1,000,000 identities over
/// 100 mated searches the mate's word rank was at most 5,714 (p99 1,884; BENCHMARKS.md), and
/// a cascade of 4,096 lost that mate; at 300,000, at most 1,688.
pub const CASCADE: usize = 4096;
/// See [`CASCADE`]: 20,000 kept at 1,000,000.
pub const CASCADE_SHARE: usize = 50;
/// With [`FirstCode::Patterns`], stage 1 keeps [`CASCADE`] subjects, or one in this many if
/// more: 4,096 at 1,000,000, where over 1,000 mated searches the mate's pattern rank was at
/// most 35 (p99 15). By estimate, a mate with two fingers classified wrongly ranks about
/// 1,500th there (about 1 probe in 15,000 at the default capture quality, 1 in 35 of a poor
/// card's), and one with three may fall outside (1 in 460 of a poor card's). Measured with poor
/// cards as probes at 100,000 (500 mated searches): the mate's pattern rank was at most 11.
pub const PATTERN_CASCADE_SHARE: usize = 250;
/// With [`FirstCode::Patterns`], the fused shortlist grows by one per this many identities: 15
/// at 1,000,000, where the worst of 1,000 mates measured ranked 11th by the fused score (a
/// shortlist of 10 lost it; by words the worst ranked 22nd, and the shortlist is 30).
pub const PATTERN_SHORTLIST_GROWTH: usize = 100_000;
/// Words listed for more than this share of the gallery's entries are stop words: stage 1
/// does not walk them. With typed words, at 100,000 identities over 200 mated searches
/// (`matcher-bench`, BENCHMARKS.md): 0.07 walked 119 postings per identity per search and
/// the mate's word rank was at most 0; 0.02 walks 42 and the worst mate ranked 13th by words
/// (first fused); 0.01 walked 8.5 but the word code lost mates (word rank p99 370, max 1,824).
/// It also sets what the index keeps (see [`DROP_SHARE`]).
const STOP_WORD_SHARE: f64 = 0.02;
/// A word listed for at most this many entries is never a stop word: in a small gallery a
/// share is a handful of fingers (2% of 200 is 4), and every word would be one.
const STOP_MIN_DF: f64 = 20.0;

/// The document frequency above which a word is a stop word in a gallery of `n`.
fn stop_above(n: usize, share: f64) -> f64 {
    (share * n as f64).max(STOP_MIN_DF)
}

/// Word weights are inverse document frequencies in sixteenths, at most 255 (a `u16` counter
/// then holds a finger's weighted count: ~200 words × 255; it saturates rather than wraps).
const IDF_SCALE: f64 = 16.0;
/// Tenprint decision threshold on the fused score. With the calibrated capture model, over
/// 1,000 mated and 1,000 non-mated searches of a 2,000-identity gallery, the highest impostor
/// score was 0.20 and the lowest genuine 1.20 (see `examples/matcher-bench.rs` and BENCHMARKS.md);
/// 0.6 sits between the tails, a factor of three from each.
pub const THRESHOLD: f32 = 0.6;

/// Finger positions the gallery keeps: 1..=10.
const POSITIONS: usize = 10;
/// Largest minutia coordinate a gallery finger can hold (11 bits of the packed form; the
/// gateway accepts images up to 2,000 px).
pub const MAX_COORD: u16 = 2047;
/// Pair-distance histogram (the other stage-1 code): distance × direction difference, 32
/// bins (a multiple of 16 for the scan's lanes), 8 × 25 px × 4 angle bins. Wider bins absorb
/// more of a capture's jitter and distortion: 8 × 25 px × 6 had ranked mates better than the
/// earlier 10 × 20 px × 8 (`matcher-bench`, 50,000 identities, 1,000 mated searches: p99 52
/// against 173; BENCHMARKS.md). With the cascade, 4 angle bins instead of 6 took the gallery
/// under 3 KiB per identity at 1,000,000 (3,218 → 3,058 B) and lost nothing measured: at
/// 50,000 (1,000 mated searches) histogram rank p99 49, max 367 (6 bins: 52, 690), fused max
/// 1; at 1,000,000 (100) histogram p99 343 (254), fused max 19 (22), no mate lost. (Before the
/// cascade, 4 bins had lost one mate of 1,000 to a fused shortlist of 10.)
const DIST_BINS: usize = 8;
const DIST_STEP: f32 = 25.0;
const ANGLE_BINS: usize = 4;
const HIST: usize = DIST_BINS * ANGLE_BINS;
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
const NEIGHBOURS: usize = 3;
/// Pairing tolerances: position (pixels) and direction (radians).
const PAIR_DIST: f32 = 15.0;
const PAIR_ANGLE: f32 = 0.45;
/// Edge matching tolerances.
const EDGE_DIST: f32 = 8.0;
const EDGE_ANGLE: f32 = 0.35;
/// Binary-angle units (2^16 a turn) per radian: stage 2 compares edge directions as `u16`
/// binary angles (see [`binary_angle`]).
const BINARY_ANGLE: f32 = 65_536.0 / (2.0 * PI);
/// [`EDGE_ANGLE`] in binary-angle units: 3,651 (0.35004 rad).
const EDGE_TURNS: u16 = (EDGE_ANGLE * BINARY_ANGLE + 0.5) as u16;

/// A direction in [0, 2π) as a binary angle, 2^16 a turn, rounded (2π itself is 0).
#[inline(always)]
fn binary_angle(a: f32) -> u16 {
    (a * BINARY_ANGLE + 0.5) as u32 as u16
}

/// The angle between two binary angles, either way round: the wrapping difference, read as
/// signed, has the circular distance as its magnitude. Eight or sixteen lanes at a time where
/// [`angdiff_near`] on floats takes four or eight, with three operations for its dozen.
#[inline(always)]
fn binary_angdiff(a: u16, b: u16) -> u16 {
    (a.wrapping_sub(b) as i16).unsigned_abs()
}

/// Index of a finger position in the per-position arrays, if the gallery keeps it.
fn slot(position: u8) -> Option<usize> {
    (1..=POSITIONS as u8)
        .contains(&position)
        .then(|| position as usize - 1)
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Point {
    x: f32,
    y: f32,
    a: f32,
    /// 0 ending, 1 bifurcation (stage 1's words use it; pairing does not).
    k: u8,
}

/// A minutia as the matcher sees it. Directions are taken modulo 360°.
fn point(x: u16, y: u16, angle_deg: u16, k: u8) -> Point {
    Point {
        x: x as f32,
        y: y as f32,
        a: ((angle_deg % 360) as f32).to_radians(),
        k,
    }
}

fn kind_bit(k: MinutiaKind) -> u8 {
    match k {
        MinutiaKind::Ending => 0,
        MinutiaKind::Bifurcation => 1,
    }
}

fn points(f: &FingerTemplate) -> Vec<Point> {
    f.minutiae
        .iter()
        .map(|m| point(m.x, m.y, m.angle_deg, kind_bit(m.kind)))
        .collect()
}

/// A gallery minutia in 32 bits: x and y (11 bits each, up to [`MAX_COORD`]), the direction
/// in whole degrees (9 bits) and the type (1 bit). Quality is not used by the matcher.
fn pack(m: &Minutia) -> u32 {
    debug_assert!(m.x <= MAX_COORD && m.y <= MAX_COORD);
    m.x as u32
        | (m.y as u32) << 11
        | ((m.angle_deg % 360) as u32) << 22
        | (kind_bit(m.kind) as u32) << 31
}

/// The minutia [`pack`] packed (quality is not kept: 0).
fn unpack_minutia(p: u32) -> Minutia {
    Minutia {
        x: (p & 0x7FF) as u16,
        y: (p >> 11 & 0x7FF) as u16,
        angle_deg: (p >> 22 & 0x1FF) as u16,
        kind: if p >> 31 == 1 {
            MinutiaKind::Bifurcation
        } else {
            MinutiaKind::Ending
        },
        quality: 0,
    }
}

fn unpack(p: u32) -> Point {
    let m = unpack_minutia(p);
    point(m.x, m.y, m.angle_deg, kind_bit(m.kind))
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Edge {
    from: u16,
    /// The types of the from- and to-minutia, `from * 2 + to` (see [`KINDS`]).
    kinds: u8,
    len: f32,
    /// Direction of the edge relative to the from-minutia's direction.
    alpha: f32,
    /// Direction of the to-minutia relative to the from-minutia's.
    beta: f32,
}

/// A finger prepared for pairing (stage 2).
#[derive(Clone, Debug, Default, PartialEq)]
struct Prepared {
    points: Vec<Point>,
    /// Sorted by length.
    edges: Vec<Edge>,
}

/// Probe side of stage 1: every word each probe edge could quantise to under jitter (its own
/// bin and the nearest neighbouring bin in each dimension), as a bitset.
struct ProbeWords {
    bits: Vec<[u64; WORD_BLOCKS]>,
    slots: Vec<usize>,
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

fn probe_words(probe: &[(usize, Prepared)]) -> ProbeWords {
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

/// Smallest angle between two directions, 0..=π, for any two: the tests' reference for
/// [`angdiff_near`], which the matcher uses (every direction it compares is near [0, 2π)).
#[cfg(test)]
fn angdiff(a: f32, b: f32) -> f32 {
    const TAU: f32 = 2.0 * PI;
    let mut d = a - b;
    if d < 0.0 {
        d += TAU;
    }
    if !(0.0..TAU).contains(&d) {
        d = d.rem_euclid(TAU);
    }
    d.min(TAU - d)
}

/// Histogram codes are kept as bytes: each bin of the unit-length histogram × [`HIST_SCALE`],
/// rounded — a quarter of the memory and of the bytes a scan reads, for a cosine within 0.04
/// of the float one (each rounding error is at most ½, over [`HIST`] bins).
type Code = [u8; HIST];
/// By Cauchy–Schwarz two codes' dot product is at most (250 + ½·√32)² < 64,000, so a
/// tenprint's histogram score (ten fingers) is an exact integer in u32 and in f32.
const HIST_SCALE: f32 = 250.0;

#[inline(always)]
fn quantise(h: &[f32; HIST]) -> Code {
    h.map(|v| (v * HIST_SCALE).round().clamp(0.0, 255.0) as u8)
}

/// `x.rem_euclid(2π)` for x in (−2·2π, 2·2π) — every relative direction here (directions are
/// in [0, 2π), `atan2` in [−π, π]) — without the floating-point remainder call: within that
/// range the remainder is x, x − 2π or −(−x − 2π), each exact (Sterbenz), so the result is the
/// same to the bit (a property test checks it).
#[inline]
fn rem_tau(x: f32) -> f32 {
    const TAU: f32 = 2.0 * PI;
    debug_assert!(x.abs() < 2.0 * TAU);
    let r = if x >= TAU {
        x - TAU
    } else if x <= -TAU {
        -((-x) - TAU)
    } else {
        x
    };
    if r < 0.0 { r + TAU } else { r }
}

/// Working memory for a finger's edges and histogram: its coordinates as columns, so the
/// distance loops over them vectorise, a column of keys or bins beside them, and the edges'
/// columns. Enrolment keeps one per thread (see [`enrolled_fingers`]), so its fingers
/// allocate nothing here: at 1,000,000 identities, where the allocator works a fragmented
/// heap, fresh buffers per finger had made a bulk load take 79 s instead of 68.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    y: Vec<f32>,
    a: Vec<f32>,
    keys: Vec<u32>,
    /// Per edge: the neighbour's index and the square distance.
    near: Vec<(u32, f32)>,
    dy: Vec<f32>,
    dx: Vec<f32>,
    edges: Vec<Edge>,
}

impl Scratch {
    /// Loads `points` into the columns (and sizes the keys to match).
    #[inline(always)]
    fn load(&mut self, points: &[Point]) {
        for c in [&mut self.x, &mut self.y, &mut self.a] {
            c.clear();
        }
        for p in points {
            self.x.push(p.x);
            self.y.push(p.y);
            self.a.push(p.a);
        }
        self.keys.resize(points.len(), 0);
    }
}

/// Edges from every minutia to its three nearest neighbours, minutia by minutia, nearest
/// first (enrolment takes its words from them; [`prepare`] sorts them for pairing).
///
/// Neighbours are the nearest by square distance, ties to the lower index: what a stable sort
/// of every square distance would give (the test's reference does that). Coordinates are
/// whole pixels up to [`MAX_COORD`], so a square distance is an exact integer under 2^23, and
/// (square distance, index) packs into one integer that orders as the pair does: the three
/// nearest are the three smallest keys, found by three branch-free minimum passes over every
/// other minutia's key, which vectorise. An edge's direction, length and relative angles are
/// then computed as columns, which vectorise too. A 40-minutia finger's edges take 3.8 µs
/// (about 2.9 with AVX2, see [`finger_codes`]); they took 5.2 µs by a sweep in order of x
/// that stopped at the third nearest's distance (a quarter of the pairs looked at, one at a
/// time, with a branch each).
///
/// The edges go into `scratch.edges`, with `points` loaded into its columns (which
/// [`histogram_of_loaded`] then reads).
#[inline(always)]
fn neighbour_edges_into(points: &[Point], scratch: &mut Scratch) {
    let n = points.len();
    // Every minutia has the same number of neighbours: edge `r` of minutia `i` is at i·m + r.
    let m = NEIGHBOURS.min(n.saturating_sub(1));
    scratch.load(points);
    scratch.edges.clear();
    if m == 0 {
        return;
    }
    let Scratch {
        x,
        y,
        keys,
        near,
        dy,
        dx,
        edges,
        ..
    } = scratch;
    near.resize(n * m, (0, 0.0));
    if n <= KEY_INDEX_LIMIT {
        for i in 0..n {
            let (px, py) = (x[i], y[i]);
            for ((k, (&qx, &qy)), j) in keys.iter_mut().zip(x.iter().zip(y.iter())).zip(0u32..) {
                *k = exact_integer((px - qx).powi(2) + (py - qy).powi(2)) << KEY_INDEX_BITS | j;
            }
            keys[i] = u32::MAX;
            let mut floor = None;
            for r in 0..m {
                let key = smallest_above(keys, floor);
                near[i * m + r] = (key % KEY_INDEX_LIMIT as u32, (key >> KEY_INDEX_BITS) as f32);
                floor = Some(key);
            }
        }
    } else {
        // A finger this large is rare (the gateway's limit is far above real prints'): every
        // other minutia's (square distance, index), the smallest found by a partial sort.
        let mut keys = Vec::with_capacity(n);
        let by_key = |a: &(f32, u32), b: &(f32, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
        for (i, p) in points.iter().enumerate() {
            keys.clear();
            for (q, j) in points.iter().zip(0u32..) {
                if j as usize != i {
                    keys.push(((p.x - q.x).powi(2) + (p.y - q.y).powi(2), j));
                }
            }
            keys.select_nth_unstable_by(m - 1, by_key);
            keys[..m].sort_unstable_by(by_key);
            for (r, &(d2, j)) in keys[..m].iter().enumerate() {
                near[i * m + r] = (j, d2);
            }
        }
    }
    // Directions as a column, which vectorises (the polynomial's branches become selects).
    dy.resize(n * m, 0.0);
    dx.resize(n * m, 0.0);
    for (e, &(j, _)) in near.iter().enumerate() {
        let (p, q) = (points[e / m], points[j as usize]);
        (dy[e], dx[e]) = (q.y - p.y, q.x - p.x);
    }
    // Directions are quantised to 15° for the words and compared within 0.35 rad when paired,
    // so the polynomial's error (see `fmath`) only moves an edge on a bin boundary to the next
    // bin, the same way on both sides of a comparison, since every edge is computed here.
    for (y, &x) in dy.iter_mut().zip(dx.iter()) {
        *y = crate::fmath::atan2(*y, x);
    }
    for (e, (&(j, d2), &dir)) in near.iter().zip(dy.iter()).enumerate() {
        let (p, q) = (points[e / m], points[j as usize]);
        edges.push(Edge {
            from: (e / m) as u16,
            kinds: p.k * 2 + q.k,
            len: d2.sqrt(),
            alpha: rem_tau(dir - p.a),
            beta: rem_tau(q.a - p.a),
        });
    }
}

/// Fingers with at most this many minutiae find neighbours with 32-bit keys: a square
/// distance (under 2^23) above [`KEY_INDEX_BITS`] bits of index.
const KEY_INDEX_BITS: u32 = 8;
const KEY_INDEX_LIMIT: usize = 1 << KEY_INDEX_BITS;
const _: () = assert!((2 * (MAX_COORD as u64).pow(2)) << KEY_INDEX_BITS < u32::MAX as u64);

/// `d` as an integer, for an exact integer `d` in 0..2^23: added to 2^23, it is the mantissa
/// (branch-free, so the loop vectorises, where `as` checks for NaN and range).
#[inline(always)]
fn exact_integer(d: f32) -> u32 {
    debug_assert!(d.fract() == 0.0 && (0.0..8_388_608.0).contains(&d));
    (d + 8_388_608.0).to_bits() & 0x7F_FFFF
}

/// The smallest of `keys` above `floor` (all of them, for none). Subtracting `floor + 1`,
/// wrapping, puts every key at or below it past every key above it, so one plain minimum
/// finds it, which vectorises (a comparison against `floor` in the loop does not).
#[inline(always)]
fn smallest_above(keys: &[u32], floor: Option<u32>) -> u32 {
    let base = floor.map_or(0, |f| f.wrapping_add(1));
    keys.iter()
        .fold(u32::MAX, |a, &k| a.min(k.wrapping_sub(base)))
        .wrapping_add(base)
}

/// A finger prepared for pairing: its edges (see [`neighbour_edges_into`]) sorted by length.
fn prepare(points: Vec<Point>) -> Prepared {
    let mut out = Prepared {
        points,
        edges: Vec::new(),
    };
    prepare_edges(&mut out, &mut Scratch::default(), &mut Vec::new());
    out
}

/// [`prepare`] in place: `out`'s edges from its points, in working memory kept by the caller
/// (stage 2 prepares a few hundred gallery fingers a search, and fresh buffers for each had
/// been a twentieth of a search).
#[inline(always)]
fn prepare_edges(out: &mut Prepared, scratch: &mut Scratch, keys: &mut Vec<u64>) {
    neighbour_edges_into(&out.points, scratch);
    // Sorted by length, ties in minutia then neighbour order (what a stable sort gives), by a
    // cheap unstable sort of (length bits, index) integers: a non-negative float's bits order
    // as it does.
    keys.clear();
    keys.extend(
        (scratch.edges.iter().enumerate()).map(|(j, e)| (e.len.to_bits() as u64) << 32 | j as u64),
    );
    keys.sort_unstable();
    out.edges.clear();
    out.edges
        .extend(keys.iter().map(|&k| scratch.edges[k as u32 as usize]));
}

/// A finger's edge words (the gallery side of stage 1), each once, in the order its edges
/// first give them.
fn words(edges: &[Edge]) -> Vec<u16> {
    let mut words = Vec::with_capacity(edges.len());
    push_words(edges, &mut words);
    words
}

/// Appends [`words`] to `out`. Repeats are found with a bit per word on the stack (7.2 KB to
/// clear, a fifth of a microsecond): sorting and deduplicating took twice as long.
#[inline(always)]
fn push_words(edges: &[Edge], out: &mut Vec<u16>) {
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

/// Square distances at which a pair moves to the next distance bin: (25 px × k)², exact.
const DIST_EDGES: [f32; DIST_BINS] = {
    let mut e = [0f32; DIST_BINS];
    let mut k = 0;
    while k < DIST_BINS {
        e[k] = ((k + 1) as f32 * DIST_STEP) * ((k + 1) as f32 * DIST_STEP);
        k += 1;
    }
    e
};
/// Direction differences at which a pair moves to the next direction bin: π/4 × k.
const ANGLE_EDGES: [f32; ANGLE_BINS - 1] = {
    let mut e = [0f32; ANGLE_BINS - 1];
    let mut k = 0;
    while k < ANGLE_BINS - 1 {
        e[k] = PI * (k + 1) as f32 / ANGLE_BINS as f32;
        k += 1;
    }
    e
};

/// Normalised pair-distance histogram (stage 1's second code). Coordinates are whole pixels,
/// so a pair's square distance is exact and its bin is how many of [`DIST_EDGES`] it reaches
/// (and its direction bin how many of [`ANGLE_EDGES`]): per minutia, a branch-free pass that
/// vectorises writes the bin of its pair with every later minutia (past [`HIST`] for a pair
/// beyond the last distance bin), then a scalar pass counts them. Bins are integers: as
/// floats, each was converted (with a range check) when counted, and a finger took 2.9 µs
/// instead of 2.0.
#[inline(always)]
fn histogram(points: &[Point], scratch: &mut Scratch) -> [f32; HIST] {
    scratch.load(points);
    histogram_of_loaded(scratch)
}

/// [`histogram`] of the points loaded into `scratch`.
#[inline(always)]
fn histogram_of_loaded(scratch: &mut Scratch) -> [f32; HIST] {
    // A power of two at least HIST + ANGLE_BINS long, so a bin indexes it unchecked.
    let mut counts = [0u32; 64];
    const _: () = assert!(HIST + ANGLE_BINS <= 64);
    let n = scratch.x.len();
    let Scratch {
        x,
        y,
        a,
        keys: bins,
        ..
    } = scratch;
    for i in 0..n {
        let (px, py, pa) = (x[i], y[i], a[i]);
        let rest = i + 1..n;
        for (((bin, &qx), &qy), &qa) in bins[rest.clone()]
            .iter_mut()
            .zip(&x[rest.clone()])
            .zip(&y[rest.clone()])
            .zip(&a[rest.clone()])
        {
            let d2 = (px - qx).powi(2) + (py - qy).powi(2);
            let mut db = 0u32;
            for edge in DIST_EDGES {
                db += (d2 >= edge) as u32;
            }
            let da = angdiff_near(pa, qa);
            let mut ab = 0u32;
            for edge in ANGLE_EDGES {
                ab += (da >= edge) as u32;
            }
            *bin = db * ANGLE_BINS as u32 + ab;
        }
        for &bin in &bins[rest] {
            counts[bin as usize % counts.len()] += 1;
        }
    }
    let mut hist = [0f32; HIST];
    for (h, &c) in hist.iter_mut().zip(&counts) {
        *h = c as f32;
    }
    let norm = hist.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
    for v in &mut hist {
        *v /= norm;
    }
    hist
}

/// A rigid transform: rotate by `r` about the origin, then translate.
#[derive(Clone, Copy)]
struct Align {
    c: f32,
    s: f32,
    r: f32,
    tx: f32,
    ty: f32,
}

impl Align {
    fn from_pair(a: Point, b: Point) -> Align {
        let r = b.a - a.a;
        let (s, c) = r.sin_cos();
        Align {
            c,
            s,
            r,
            tx: b.x - (c * a.x - s * a.y),
            ty: b.y - (s * a.x + c * a.y),
        }
    }
    fn apply(&self, p: Point) -> Point {
        Point {
            x: self.c * p.x - self.s * p.y + self.tx,
            y: self.s * p.x + self.c * p.y + self.ty,
            a: p.a + self.r,
            k: p.k,
        }
    }
}

/// [`angdiff`] without branches, for differences within (−2·2π, 2·2π) — every one the
/// pairing stage takes: directions are in [0, 2π) and an alignment turns by less than 2π.
/// Each step is the one `angdiff` and `rem_euclid` take for such a difference (a remainder by
/// 2π of a value in [2π, 4π) is the exact subtraction), so the result is the same to the bit
/// (a property test checks it); the loops that use it compile to SIMD.
#[inline(always)]
fn angdiff_near(a: f32, b: f32) -> f32 {
    const TAU: f32 = 2.0 * PI;
    let mut d = a - b;
    d = if d < 0.0 { d + TAU } else { d };
    d = if d < 0.0 { d + TAU } else { d };
    d = if d >= TAU { d - TAU } else { d };
    d.min(TAU - d)
}

/// Minutiae as separate coordinate arrays, so the loops over them vectorise.
#[derive(Default)]
struct Columns {
    x: Vec<f32>,
    y: Vec<f32>,
    a: Vec<f32>,
}

impl Columns {
    fn push(&mut self, p: Point) {
        self.x.push(p.x);
        self.y.push(p.y);
        self.a.push(p.a);
    }

    fn clear(&mut self) {
        self.x.clear();
        self.y.clear();
        self.a.clear();
    }
}

/// How many of the points `from` land within the pairing tolerances of the points `to`
/// (pairwise, same index) under `t`: [`Align::apply`] and the pairing test, written out
/// with the same operations in the same order.
#[inline(always)]
fn agreeing(t: &Align, from: &Columns, to: &Columns) -> usize {
    // Every column cut to one length, so the loop has no bounds checks and vectorises (with
    // them it ran a lane at a time).
    let n = from.x.len().min(to.x.len());
    let (fx, fy, fa) = (&from.x[..n], &from.y[..n], &from.a[..n]);
    let (tx, ty, ta) = (&to.x[..n], &to.y[..n], &to.a[..n]);
    let mut votes = 0u32;
    for k in 0..n {
        let (x, y) = (fx[k], fy[k]);
        let px = t.c * x - t.s * y + t.tx;
        let py = t.s * x + t.c * y + t.ty;
        let pa = fa[k] + t.r;
        let (dx, dy) = (px - tx[k], py - ty[k]);
        let near = dx * dx + dy * dy <= PAIR_DIST * PAIR_DIST;
        let turned = angdiff_near(pa, ta[k]) <= PAIR_ANGLE;
        votes += (near & turned) as u32;
    }
    votes as usize
}

/// Minutiae of `a` paired with `b` under `t`, greedily, one-to-one: each probe minutia in
/// turn takes the nearest free gallery minutia within the tolerances (the first, on a tie).
///
/// Branch-free over the gallery minutiae, so it vectorises: a paired gallery minutia adds
/// infinity to its distances (a free one adds 0, which leaves them exact), and the nearest is
/// the least distance's bits (non-negative floats order as their bits do), then its first
/// index. A scalar pass that skipped out-of-tolerance and paired minutiae had been a sixth of
/// stage 2.
#[inline(always)]
fn paired(
    a: &Prepared,
    b: &Columns,
    t: &Align,
    taken: &mut Vec<f32>,
    dist: &mut Vec<u32>,
) -> usize {
    // Per gallery minutia: 0, or infinity once paired (only the first 512 are ever marked,
    // as the reference does).
    taken.clear();
    taken.resize(b.x.len(), 0.0);
    dist.clear();
    dist.resize(b.x.len(), 0);
    // Every column cut to one length, so the loop has no bounds checks (see [`agreeing`]).
    let nb = b.x.len();
    let (bx, by, ba) = (&b.x[..nb], &b.y[..nb], &b.a[..nb]);
    let mut n = 0;
    for p in &a.points {
        let p = t.apply(*p);
        let mut least = u32::MAX;
        let (taken, dist) = (&mut taken[..nb], &mut dist[..nb]);
        for j in 0..nb {
            let (dx, dy) = (p.x - bx[j], p.y - by[j]);
            let d2 = dx * dx + dy * dy;
            let ok = (d2 <= PAIR_DIST * PAIR_DIST) & (angdiff_near(p.a, ba[j]) <= PAIR_ANGLE);
            dist[j] = if ok { d2 + taken[j] } else { f32::INFINITY }.to_bits();
            least = least.min(dist[j]);
        }
        if least < f32::INFINITY.to_bits() {
            let j = dist
                .iter()
                .position(|&d| d == least)
                .expect("the least is there");
            if j < 512 {
                taken[j] = f32::INFINITY;
            }
            n += 1;
        }
    }
    n
}

/// Similarity of two fingers, 0..=1.
fn compare(a: &Prepared, b: &Prepared) -> f32 {
    compare_in::<false>(a, b, &mut CompareWork::default())
}

/// Working memory for [`compare_in`]: stage 2 keeps one per thread, so its comparisons
/// allocate nothing (fresh buffers, ~15 a comparison, had been a twentieth of a search).
#[derive(Default)]
struct CompareWork {
    alpha: Vec<u16>,
    beta: Vec<u16>,
    lens: Vec<f32>,
    ok: Vec<u8>,
    pairs: Vec<(usize, usize)>,
    from: Columns,
    to: Columns,
    gallery: Columns,
    taken: Vec<f32>,
    dist: Vec<u32>,
}

/// [`compare`] in working memory `w`, inlined where it is called (see [`stage2_score`]).
/// With `AVX2` (only where the CPU has it: see [`stage2_score_avx2`]) each probe edge's
/// window of gallery edges is matched by [`window_avx2`]; the same pairs in the same order.
#[inline(always)]
fn compare_in<const AVX2: bool>(a: &Prepared, b: &Prepared, w: &mut CompareWork) -> f32 {
    let CompareWork {
        alpha,
        beta,
        lens,
        ok,
        pairs,
        from,
        to,
        gallery,
        taken,
        dist,
    } = w;
    if a.points.is_empty() || b.points.is_empty() {
        return 0.0;
    }
    // Matched edge pairs (probe minutia, gallery minutia) → candidate alignments. Both edge
    // lists are sorted by length, so the window of gallery edges within EDGE_DIST of a probe
    // edge only moves forward; within it, both direction tests run branch-free over the
    // whole window on binary angles (see [`binary_angdiff`]; on floats they had been a third
    // of a comparison), then the matches are taken in order as before.
    // (With 16 lanes more, for [`window_avx2`]'s whole-vector reads.)
    alpha.clear();
    alpha.extend(b.edges.iter().map(|e| binary_angle(e.alpha)));
    alpha.resize(b.edges.len() + 16, 0);
    beta.clear();
    beta.extend(b.edges.iter().map(|e| binary_angle(e.beta)));
    beta.resize(b.edges.len() + 16, 0);
    // (With 8 infinite lengths more, which no window reaches: see below.)
    lens.clear();
    lens.extend(b.edges.iter().map(|e| e.len));
    lens.resize(b.edges.len() + 8, f32::INFINITY);
    // The portable window's flags: one per gallery edge (1: it matches the probe edge), and 8
    // more, so eight flags can always be read at once (the AVX2 window keeps none).
    if !AVX2 {
        ok.clear();
        ok.resize(b.edges.len() + 8, 0);
    }
    pairs.clear();
    let (mut lo, mut hi) = (0, 0);
    // The window's ends move by counting the lengths they pass (see [`passed`]); the
    // infinite lengths past the last edge stop both there.
    for ea in &a.edges {
        lo = passed(lens, lo, |l| l < ea.len - EDGE_DIST);
        hi = passed(lens, hi.max(lo), |l| l <= ea.len + EDGE_DIST);
        let (ea_alpha, ea_beta) = (binary_angle(ea.alpha), binary_angle(ea.beta));
        #[cfg(target_arch = "x86_64")]
        if AVX2 {
            // SAFETY: `AVX2` is set only by `stage2_score_avx2`, which runs only where the
            // CPU has AVX2; `alpha` and `beta` have 16 lanes past the last edge.
            unsafe {
                window_avx2(
                    alpha,
                    beta,
                    lo..hi,
                    (ea_alpha, ea_beta),
                    ea.from,
                    &b.edges,
                    pairs,
                )
            };
            continue;
        }
        for ((ok, &al), &be) in ok[lo..hi].iter_mut().zip(&alpha[lo..hi]).zip(&beta[lo..hi]) {
            *ok = ((binary_angdiff(ea_alpha, al) <= EDGE_TURNS)
                & (binary_angdiff(ea_beta, be) <= EDGE_TURNS)) as u8;
        }
        // The matches in order, eight flags at a time: most windows have none or one, and
        // a flag at a time had been a tenth of a comparison. Flags past `hi` are another
        // probe edge's, so masked off.
        let mut k = lo;
        'window: while k < hi {
            let mut w = u64::from_le_bytes(ok[k..k + 8].try_into().expect("eight flags"));
            if hi - k < 8 {
                w &= (1u64 << ((hi - k) * 8)) - 1;
            }
            while w != 0 {
                let j = k + (w.trailing_zeros() / 8) as usize;
                pairs.push((ea.from as usize, b.edges[j].from as usize));
                // (Only this probe edge's loop stops here: later probe edges each add their
                // first match — the rule the scores were calibrated with.)
                if pairs.len() >= 256 {
                    break 'window;
                }
                // A flag is 0 or 1, so its byte's lowest set bit is the flag.
                w &= w - 1;
            }
            k += 8;
        }
    }
    if pairs.is_empty() {
        return 0.0;
    }
    // The alignment most other pairs agree with (their minutiae land together), among the
    // alignments of the first 32 pairs: only those are ever applied, so only those are
    // computed.
    from.clear();
    to.clear();
    for &(i, j) in pairs.iter() {
        from.push(a.points[i]);
        to.push(b.points[j]);
    }
    let mut best: Option<(usize, Align)> = None;
    for &(i, j) in pairs.iter().take(32) {
        let t = Align::from_pair(a.points[i], b.points[j]);
        let votes = agreeing(&t, from, to);
        if votes > best.map_or(0, |(v, _)| v) {
            best = Some((votes, t));
        }
    }
    // With no alignment agreeing with any pair (not even its own), the first one pairs.
    let t = best.map_or_else(
        || Align::from_pair(a.points[pairs[0].0], b.points[pairs[0].1]),
        |(_, t)| t,
    );
    gallery.clear();
    for p in &b.points {
        gallery.push(*p);
    }
    let m = paired(a, gallery, &t, taken, dist) as f32;
    (m * m) / (a.points.len() as f32 * b.points.len() as f32)
}

/// Where an end of [`compare_in`]'s window moves from `from`: past every length `below`
/// holds for, in ascending `lens` (which go on at least 8 past any such length). Eight lengths
/// are counted at a time, branch-free: sorted, their count is how far the end moves, and only
/// a move of all eight looks further. (Stepping a length at a time, with a branch each, took
/// about as long in the stage-2 test; this is shorter in instructions, not measurably faster.)
#[inline(always)]
fn passed(lens: &[f32], from: usize, below: impl Fn(f32) -> bool) -> usize {
    let mut at = from;
    loop {
        let c: usize = lens[at..at + 8].iter().map(|&l| below(l) as usize).sum();
        at += c;
        if c < 8 {
            return at;
        }
    }
}

/// The gallery edges in `window` whose directions both lie within [`EDGE_TURNS`] of the
/// probe edge's `(alpha, beta)`, in order, paired with probe minutia `from` and appended to
/// `pairs` until it holds 256: [`compare_in`]'s window, sixteen edges a step, their matches
/// read from a mask (two bits an edge) rather than stored as flags and read back. The
/// portable window had been a third of stage 2.
///
/// # Safety
/// The CPU has AVX2, and `alpha` and `beta` have 16 lanes past `window.end`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn window_avx2(
    alpha: &[u16],
    beta: &[u16],
    window: std::ops::Range<usize>,
    (probe_alpha, probe_beta): (u16, u16),
    from: u16,
    edges: &[Edge],
    pairs: &mut Vec<(usize, usize)>,
) {
    use std::arch::x86_64::*;
    debug_assert!(window.end + 16 <= alpha.len().min(beta.len()));
    let pa = _mm256_set1_epi16(probe_alpha as i16);
    let pb = _mm256_set1_epi16(probe_beta as i16);
    let turns = _mm256_set1_epi16(EDGE_TURNS as i16);
    // |a − b| as `binary_angdiff` takes it, at most EDGE_TURNS (unsigned: the one difference
    // whose absolute value overflows, 0x8000, is half a turn).
    let within = |probe: __m256i, gallery: __m256i| {
        let d = _mm256_abs_epi16(_mm256_sub_epi16(probe, gallery));
        _mm256_cmpeq_epi16(_mm256_min_epu16(d, turns), d)
    };
    let mut k = window.start;
    while k < window.end {
        // SAFETY: lanes k..k + 16 lie within the padded columns (see above).
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
        while bits != 0 {
            let j = k + (bits.trailing_zeros() / 2) as usize;
            pairs.push((from as usize, edges[j].from as usize));
            if pairs.len() >= 256 {
                return;
            }
            bits &= bits - 1;
        }
        k += 16;
    }
}

/// Stage 2's score of entry `e` for the probe's fingers: the sum of [`compare`] over the
/// fingers both have (a gallery finger prepared once, however many probe fingers share its
/// slot). Most of a search at 1,000,000 identities, so where the CPU has AVX2 (detected at run
/// time and cached, as for [`finger_codes`]) the same code compiled for it runs: twice the
/// lanes in the vectorised loops, the same operations on the same values, so the same score
/// to the bit (a test checks it).
fn stage2_score(probe: &[(usize, Prepared)], shard: &Shard, e: usize) -> f32 {
    thread_local! {
        static WORK: RefCell<Stage2Work> = RefCell::default();
    }
    WORK.with_borrow_mut(|w| {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { stage2_score_avx2(probe, shard, e, w) };
        }
        stage2_score_portable(probe, shard, e, w)
    })
}

/// Stage 2's working memory: the gallery finger being compared and what preparing and
/// comparing it need. [`stage2_score`] keeps one per thread, so it allocates nothing once
/// the buffers have grown to a finger's size.
#[derive(Default)]
struct Stage2Work {
    gallery: Prepared,
    scratch: Scratch,
    keys: Vec<u64>,
    compare: CompareWork,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn stage2_score_avx2(
    probe: &[(usize, Prepared)],
    shard: &Shard,
    e: usize,
    w: &mut Stage2Work,
) -> f32 {
    stage2_score_with::<true>(probe, shard, e, w)
}

/// [`stage2_score`] for any x86-64 (or other) CPU.
fn stage2_score_portable(
    probe: &[(usize, Prepared)],
    shard: &Shard,
    e: usize,
    w: &mut Stage2Work,
) -> f32 {
    stage2_score_with::<false>(probe, shard, e, w)
}

/// [`stage2_score`], with [`compare_in`]'s AVX2 window or not.
#[inline(always)]
fn stage2_score_with<const AVX2: bool>(
    probe: &[(usize, Prepared)],
    shard: &Shard,
    e: usize,
    w: &mut Stage2Work,
) -> f32 {
    let mut score = 0.0;
    let mut slot = None;
    for (s, p) in probe {
        // A gallery finger is prepared once for consecutive probe fingers in its slot.
        if slot != Some(*s) {
            shard.finger_into(e, *s, &mut w.gallery, &mut w.scratch, &mut w.keys);
            slot = Some(*s);
        }
        score += compare_in::<AVX2>(p, &w.gallery, &mut w.compare);
    }
    score
}

/// 1:1 similarity of two finger templates (0..=1), for calibration and tests.
pub fn compare_fingers(a: &FingerTemplate, b: &FingerTemplate) -> f32 {
    compare(&prepare(points(a)), &prepare(points(b)))
}

/// The posting lists of one shard's index: `(slot, word)` → the entries (ascending) whose
/// finger in that slot has the word.
///
/// Lists are delta-encoded and bit-packed in blocks (see [`encode_list`]) in one contiguous
/// array with an offset and a count per key (a compressed-sparse-row layout: no allocation,
/// header or spare capacity per list).
/// Enrolments go to a small uncompressed tail first, folded into the array once it grows to a
/// fraction of it (or by [`ExhaustiveMatcher::compact`]), so enrolling stays amortised O(1).
#[derive(Default)]
struct Postings {
    /// `offsets[k]..offsets[k + 1]` are key `k`'s bytes in `bytes` (empty before the first
    /// fold).
    offsets: Vec<u32>,
    /// `counts[k]`: how many entries key `k`'s list in `bytes` names.
    counts: Vec<u32>,
    /// `last[k]`: the last entry key `k`'s list in `bytes` names (0 if none): a fold
    /// appends to a list from it without decoding the list.
    last: Vec<u32>,
    bytes: Vec<u8>,
    /// Later entries, per key, ascending.
    tail: HashMap<u32, Vec<u32>, BuildHasherDefault<KeyHasher>>,
    tail_len: usize,
}

/// A word is dropped from the index for good once the gallery has had [`DROP_MIN_PRINTS`]
/// prints enrolled and more than this share of them had it (see [`Vocabulary`]): 15% above
/// [`STOP_WORD_SHARE`], so a word stage 1 would not walk. The margin matters: dropping at the
/// stop share itself lost words whose share touched it once and settled below (at 50,000
/// identities, 11% fewer postings walked and the word code's mate rank p99 went from 116 to
/// 274). The lists dropped held 29% of the index's bytes (1,331 → 948 per identity at 50,000).
///
/// The decision is the matcher's, over every shard, in enrolment order; each shard drops the
/// lists at its next merge. (It was each shard's own, from its own share at a fold, so a word
/// near the threshold could be dropped under one shard count and not another; that needed a
/// margin of 25%.) A share over all prints moves less than a shard's, so the margin is
/// narrower: at 100,000 identities, 25% → 15% took the word index from 1,291 to 1,245 bytes per
/// identity with the same postings walked and every rank the same; 10% walked fewer (words a
/// search would have walked were gone).
const DROP_SHARE: f64 = 1.15 * STOP_WORD_SHARE;
/// Below this many prints enrolled nothing is dropped: shares over a small gallery are noise
/// (a word 1.8% of prints have is 6.8 standard deviations below [`DROP_SHARE`] at this size).
const DROP_MIN_PRINTS: u64 = 16_384;

/// Whether key `k`'s bit is set in `set` (a bit per key; an empty set has none).
#[inline]
fn has_bit(set: &[u64], k: u32) -> bool {
    let k = k as usize;
    set.get(k / 64).is_some_and(|b| b & (1 << (k % 64)) != 0)
}

/// What the gallery holds, over every shard: per index key, how many prints' fingers have
/// the word (stage 1's weights; a removal takes its print's words back), and the keys dropped
/// as stop words for good (see [`DROP_SHARE`]). Updated print by print in enrolment order,
/// one print at a time or in a bulk load alike, so the keys dropped do not depend on the
/// shard count.
#[derive(Default)]
struct Vocabulary {
    /// Per key (allocated at the first print: 2.3 MB).
    df: Vec<u32>,
    prints: u64,
    /// A bit per key.
    dropped: Vec<u64>,
}

impl Vocabulary {
    /// Takes back a removed print's words (by slot, see [`Shard::entry_words`]): frequencies
    /// and the print count are over the prints enrolled now. Drops stay (they are final).
    fn forget(&mut self, words: &[(usize, Vec<u16>)]) {
        self.prints = self.prints.saturating_sub(1);
        for (s, words) in words {
            for &w in words {
                let k = key(*s, w) as usize;
                self.df[k] = self.df[k].saturating_sub(1);
            }
        }
    }

    fn add(&mut self, print: &Enrolled) {
        self.add_many(std::slice::from_ref(print));
    }

    /// [`Vocabulary::add`] for each print in turn, slot by slot in parallel: a key's counts
    /// and drop depend only on its own slot's words and on how many prints came before, so
    /// the slots are independent. (Print by print on the bulk load's one staging thread, this
    /// was 3% of a load at 1,000,000 identities with the other core idle.)
    fn add_many(&mut self, prints: &[Enrolled]) {
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

/// Hashes index keys (small integers chosen by us, not by a client: no flooding to resist)
/// with one multiplication instead of SipHash, which was most of an enrolment's index cost.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(*b as u64);
        }
    }
    fn write_u32(&mut self, x: u32) {
        self.write_u64(x as u64);
    }
    fn write_u64(&mut self, x: u64) {
        let h = (self.0 ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }
}

/// The most postings a bulk load stages per shard before merging them into the index: 16M,
/// about 15,000 prints' worth and 60 MB staged per shard. A merge copies the index, so a
/// batch is not made smaller than a quarter of it below this (see [`Postings::batch_postings`]).
const BATCH_MAX_POSTINGS: usize = 1 << 24;

/// Sorts postings `key << 32 | entry` by key, stably: a key's entries stay in the order given
/// (ascending, as a batch appends them), so the result is the ascending order. Two counting
/// passes over 10 bits of the key each (keys are under 2^20), each a sequential read and
/// 1,024 sequential write streams: at 300,000 identities, a bulk load's sorting took 4.2 s of
/// CPU this way, 5.8 s with the standard unstable sort.
fn sort_by_key(v: &mut Vec<u64>) {
    const BITS: u32 = 10;
    const MASK: usize = (1 << BITS) - 1;
    const _: () = assert!(KEYS <= 1 << (2 * BITS));
    let mut out = vec![0u64; v.len()];
    for pass in 0..2 {
        let shift = 32 + pass * BITS;
        let mut starts = [0usize; 1 << BITS];
        for x in v.iter() {
            starts[(x >> shift) as usize & MASK] += 1;
        }
        let mut sum = 0;
        for c in starts.iter_mut() {
            (*c, sum) = (sum, sum + *c);
        }
        for &x in v.iter() {
            let b = (x >> shift) as usize & MASK;
            out[starts[b]] = x;
            starts[b] += 1;
        }
        std::mem::swap(v, &mut out);
    }
}

/// Keys of the index: one word space per slot.
const KEYS: usize = POSITIONS * WORDS;

fn key(slot: usize, word: u16) -> u32 {
    (slot * WORDS) as u32 + word as u32
}

/// Gaps per block of a posting list (see [`encode_list`]).
const BLOCK: usize = 32;

/// Appends the ascending `entries` to `out` as blocks of up to [`BLOCK`] gaps (an entry's
/// distance past the one before it, less one; the first's from 0): a byte with the block's
/// bit width `w` (the widest gap's significant bits, 0..=32), then every gap in `w` bits,
/// little-endian, padded to a whole byte. Any gap is decoded from its own position, with no
/// dependence on the one before it (a varint's start depends on every earlier varint), and a
/// block of gaps all under 2^w takes `w` bits each, against a varint's 8 or 16. Against the
/// varints at 100,000 identities: 3.2 → 2.2 ns per posting walked, 46 → 54 searches/s on one
/// thread, the index 1,301 → 1,282 B/identity with a count per key (the word weights now use
/// exact document frequencies; they used the bytes of a list).
fn encode_list(out: &mut Vec<u8>, entries: &[u32]) {
    encode_from(out, 0, entries)
}

/// [`encode_list`] continuing a list whose next entry is at least `next` (the last entry
/// before, plus one): what a fold appends to a list's last block.
fn encode_from(out: &mut Vec<u8>, mut next: u32, entries: &[u32]) {
    for block in entries.chunks(BLOCK) {
        let mut gaps = [0u32; BLOCK];
        for (g, &e) in gaps.iter_mut().zip(block) {
            *g = e - next;
            next = e + 1;
        }
        let w = 32 - gaps.iter().fold(0, |a, g| a | g).leading_zeros();
        out.push(w as u8);
        let (mut acc, mut bits) = (0u64, 0u32);
        for &g in &gaps[..block.len()] {
            acc |= (g as u64) << bits;
            bits += w;
            while bits >= 8 {
                out.push(acc as u8);
                acc >>= 8;
                bits -= 8;
            }
        }
        if bits > 0 {
            out.push(acc as u8);
        }
    }
}

/// Calls `f` with the `count` entries of the list at `bytes[lo..]` (see [`encode_list`];
/// `bytes` ends with [`PAD`] spare bytes), ascending.
#[inline]
fn decode(bytes: &[u8], lo: usize, count: usize, mut f: impl FnMut(usize)) {
    let (mut i, mut left, mut next) = (lo, count, 0usize);
    while left > 0 {
        let w = bytes[i] as usize;
        let n = left.min(BLOCK);
        let data = i + 1;
        let mask = (1u64 << w) - 1;
        for j in 0..n {
            let bit = j * w;
            let at = data + bit / 8;
            let word = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
            let e = next + ((word >> (bit % 8)) & mask) as usize;
            f(e);
            next = e + 1;
        }
        i = data + (n * w).div_ceil(8);
        left -= n;
    }
}

impl Postings {
    /// Adds `entry` to `key`'s list, unless the matcher has dropped the key (`dropped`, see
    /// [`Vocabulary`]).
    fn push(&mut self, key: u32, entry: u32, dropped: &[u64]) {
        if has_bit(dropped, key) {
            return;
        }
        self.tail.entry(key).or_default().push(entry);
        self.tail_len += 1;
    }

    /// Folds the tail into the array when it has grown to a quarter of it (at least 64k
    /// postings), so each posting is re-encoded a bounded number of times.
    fn maybe_fold(&mut self, dropped: &[u64]) {
        if self.tail_len >= (self.bytes.len() / 4).max(1 << 16) {
            self.fold(dropped);
        }
    }

    /// How many postings a bulk load stages for this shard before merging them (see
    /// [`ExhaustiveMatcher::enroll_many`]): as many as the tail takes before a fold, at most
    /// [`BATCH_MAX_POSTINGS`].
    fn batch_postings(&self) -> usize {
        (self.bytes.len() / 4).clamp(1 << 16, BATCH_MAX_POSTINGS)
    }

    /// Moves every tail posting into the array, dropping the lists of the keys in `dropped`
    /// (see [`Vocabulary`]).
    fn fold(&mut self, dropped: &[u64]) {
        if self.tail_len == 0 {
            return;
        }
        // The tail in key order, taken in one sequential pass over the table (a lookup per
        // key missed the cache).
        let mut tail: Vec<(u32, Vec<u32>)> = std::mem::take(&mut self.tail).into_iter().collect();
        tail.sort_unstable_by_key(|(k, _)| *k);
        let added = std::mem::take(&mut self.tail_len);
        self.merge(
            added,
            tail.iter().map(|(k, list)| (*k, list.as_slice())),
            dropped,
        );
    }

    /// Adds `postings`, each `key << 32 | entry`, ascending, every entry after those the index
    /// holds (the tail folded first): a bulk load's batch.
    fn extend_sorted(&mut self, postings: &[u64], dropped: &[u64]) {
        debug_assert!(self.tail_len == 0 && postings.is_sorted());
        if postings.is_empty() {
            return;
        }
        let flat: Vec<u32> = postings.iter().map(|p| *p as u32).collect();
        let mut at = 0;
        let runs = postings.chunk_by(|a, b| a >> 32 == b >> 32).map(|run| {
            let list = &flat[at..at + run.len()];
            at += run.len();
            ((run[0] >> 32) as u32, list)
        });
        self.merge(postings.len(), runs, dropped);
    }

    /// Appends to each key's list the entries `runs` gives it (keys ascending, each key once,
    /// entries ascending and after any the list has), and drops the lists of the keys in
    /// `dropped` (see [`Vocabulary`]).
    ///
    /// Only lists that grow are re-encoded, and of those only the last block: every block
    /// before it is full and stays as it is (see [`encode_list`]), and the last block's
    /// entries are recovered from its gaps and the list's last entry. The bytes of every other
    /// list are copied as they are, in runs. So a merge costs a copy of the array plus work in
    /// proportion to what is added, where decoding and re-encoding every list had made folds
    /// a third of a bulk load's time. The bytes are exactly a fresh encoding of every list (a
    /// test checks it).
    fn merge<'a>(
        &mut self,
        added: usize,
        runs: impl Iterator<Item = (u32, &'a [u32])>,
        dropped: &[u64],
    ) {
        if self.offsets.is_empty() {
            self.offsets = vec![0; KEYS + 1];
            self.counts = vec![0; KEYS];
            self.last = vec![0; KEYS];
            self.bytes = vec![0; PAD];
        }
        if self.last.is_empty() {
            // Given back by `release_spare` after a bulk load: read off the lists once.
            self.last = (0..KEYS)
                .map(|k| {
                    let mut last = 0;
                    let (lo, n) = (self.offsets[k] as usize, self.counts[k] as usize);
                    decode(&self.bytes, lo, n, |e| last = e as u32);
                    last
                })
                .collect();
        }
        let mut runs = runs.peekable();
        let old = std::mem::take(&mut self.bytes);
        let old_end = self.offsets[KEYS] as usize;
        let mut bytes = Vec::with_capacity(old.len() + added * 2);
        // `old[run..]` is not copied yet; it goes across as it is up to the next list that
        // changes.
        let mut run = 0usize;
        let mut list: Vec<u32> = Vec::new();
        for k in 0..KEYS {
            // `offsets[k]` is rewritten here; `offsets[k + 1]` is still the old one.
            let (lo, hi) = (self.offsets[k] as usize, self.offsets[k + 1] as usize);
            let tail = runs
                .next_if(|(key, _)| *key == k as u32)
                .map(|(_, list)| list)
                .filter(|_| !has_bit(dropped, k as u32));
            let n = self.counts[k] as usize;
            let total = n + tail.map_or(0, <[u32]>::len);
            // A dropped key's list goes at the first merge that has it; it stays empty.
            let drop = has_bit(dropped, k as u32) && n > 0;
            if tail.is_none() && !drop {
                self.offsets[k] =
                    u32::try_from(bytes.len() + (lo - run)).expect("a shard's index under 4 GiB");
                continue;
            }
            bytes.extend_from_slice(&old[run..lo]);
            run = hi;
            self.offsets[k] = u32::try_from(bytes.len()).expect("a shard's index under 4 GiB");
            if drop {
                (self.counts[k], self.last[k]) = (0, 0);
                continue;
            }
            let tail = tail.expect("a changed list that is not dropped has a tail");
            let last_before = self.last[k];
            (self.counts[k], self.last[k]) = (
                u32::try_from(total).expect("a list under 4G entries"),
                *tail.last().expect("a run is not empty"),
            );
            if n == 0 {
                encode_list(&mut bytes, tail);
                continue;
            }
            // The last block: `rem` gaps at `at`, after full blocks kept as they are.
            let (mut at, mut rem) = (lo, n);
            while rem > BLOCK {
                at += 1 + (BLOCK * old[at] as usize).div_ceil(8);
                rem -= BLOCK;
            }
            bytes.extend_from_slice(&old[lo..at]);
            list.clear();
            decode(&old, at, rem, |e| list.push(e as u32));
            // Decoded from 0; the block starts where its last entry says.
            let next = list.last().map_or(0, |&e| last_before - e);
            for e in &mut list {
                *e += next;
            }
            list.extend_from_slice(tail);
            encode_from(&mut bytes, next, &list);
        }
        bytes.extend_from_slice(&old[run..old_end]);
        self.offsets[KEYS] = u32::try_from(bytes.len()).expect("a shard's index under 4 GiB");
        bytes.extend_from_slice(&[0; PAD]);
        bytes.shrink_to_fit();
        self.bytes = bytes;
    }

    /// Rewrites every list with entry `e` as `renumber[e]`, leaving out those mapped to
    /// `u32::MAX` (the map keeps the order of those it keeps). The tail must be empty.
    fn renumber(&mut self, renumber: &[u32]) {
        if self.offsets.is_empty() {
            return;
        }
        let mut bytes = Vec::with_capacity(self.bytes.len());
        let mut list = Vec::new();
        for k in 0..KEYS {
            let (lo, n) = (self.offsets[k] as usize, self.counts[k] as usize);
            list.clear();
            decode(&self.bytes, lo, n, |e| {
                if renumber[e] != u32::MAX {
                    list.push(renumber[e]);
                }
            });
            self.offsets[k] = u32::try_from(bytes.len()).expect("a shard's index under 4 GiB");
            encode_list(&mut bytes, &list);
            self.counts[k] = list.len() as u32;
            if !self.last.is_empty() {
                self.last[k] = list.last().copied().unwrap_or(0);
            }
        }
        self.offsets[KEYS] = u32::try_from(bytes.len()).expect("a shard's index under 4 GiB");
        bytes.extend_from_slice(&[0; PAD]);
        bytes.shrink_to_fit();
        self.bytes = bytes;
    }

    /// Gives back what only enrolment uses: each list's last entry (4 bytes per key,
    /// 2.3 MB a shard), read off the lists again at the next fold.
    fn release_spare(&mut self) {
        self.last = Vec::new();
    }

    /// How many entries `key` lists, folded and in the tail.
    #[cfg(test)]
    fn len_hint(&self, key: u32) -> usize {
        let k = key as usize;
        let folded = self.counts.get(k).map_or(0, |c| *c as usize);
        let tail = if self.tail_len == 0 {
            0
        } else {
            self.tail.get(&key).map_or(0, Vec::len)
        };
        folded + tail
    }

    /// Asks the cache for `key`'s offset (`list == false`) or for the start of its list: the
    /// walk calls this some keys ahead, so that the lists of a probe's scattered keys, each
    /// likely a cache miss, load while the walk decodes earlier ones (at 30,000 identities,
    /// 61 → 74 searches/s on one thread, `matcher-bench --profile`). Does nothing where there
    /// is no prefetch instruction.
    #[inline]
    fn prefetch(&self, key: u32, list: bool) {
        let k = key as usize;
        if k + 1 < self.offsets.len() {
            if list {
                prefetch(&self.bytes, self.offsets[k] as usize);
            } else {
                prefetch(&self.offsets, k);
            }
        }
    }

    /// Adds each key's weight to `row[e]` (saturating) for every entry `e` it lists: the walk
    /// of stage 1. Lists further ahead are prefetched (see [`Postings::prefetch`]).
    fn walk(&self, keys: &[(u32, u16)], row: &mut [u16]) {
        for (i, &(k, w)) in keys.iter().enumerate() {
            if let Some(&(ahead, _)) = keys.get(i + PREFETCH_AHEAD) {
                self.prefetch(ahead, true);
            }
            if let Some(&(ahead, _)) = keys.get(i + 2 * PREFETCH_AHEAD) {
                self.prefetch(ahead, false);
            }
            self.for_each(k, |e| row[e] = row[e].saturating_add(w));
        }
    }

    /// Calls `f` with every entry listed under `key`, ascending.
    #[inline]
    fn for_each(&self, key: u32, mut f: impl FnMut(usize)) {
        let k = key as usize;
        if k + 1 < self.offsets.len() {
            decode(
                &self.bytes,
                self.offsets[k] as usize,
                self.counts[k] as usize,
                &mut f,
            );
        }
        if self.tail_len == 0 {
            return;
        }
        if let Some(list) = self.tail.get(&key) {
            for &e in list {
                f(e as usize);
            }
        }
    }
}

/// Asks the cache for `v[i]` (see [`Postings::prefetch`]). Does nothing where there is no
/// prefetch instruction.
#[inline]
fn prefetch<T>(v: &[T], i: usize) {
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

/// How many keys ahead of the walk a list's start is prefetched (its offset twice as far).
const PREFETCH_AHEAD: usize = 8;

/// Zero bytes after the last list: the decoder always reads eight bytes at once.
const PAD: usize = 8;

/// One shard of the gallery, entry-indexed flat arrays (see the module comment).
#[derive(Default)]
struct Shard {
    subjects: Vec<SubjectId>,
    /// Per entry: where its minutiae start in `minutiae`; its fingers follow slot by slot.
    starts: Vec<u32>,
    /// Per entry and slot: minutiae of that finger (0: no finger there).
    counts: Vec<[u16; POSITIONS]>,
    minutiae: Vec<u32>,
    /// Per slot, then entry: how many distinct edge words the finger has (slot-major: stage 1
    /// reads one slot's column per probe finger, contiguously).
    word_counts: [Vec<u16>; POSITIONS],
    /// Per entry and slot: the histogram code (zero where there is no finger).
    hists: Vec<[Code; POSITIONS]>,
    /// Per entry: its fingers' pattern classes, three bits a slot (see [`pack_patterns`]).
    patterns: Vec<u32>,
    /// How many entries have each code at each slot and each pair of codes at each pair of
    /// slots: the pattern scores' moments without a pass over the entries.
    pattern_counts: PatternCounts,
    postings: Postings,
    /// Entries removed from the gallery (a bit per entry; empty until the first removal):
    /// searches never keep them. See [`Matcher::remove`].
    removed: Vec<u64>,
    removed_count: usize,
}

/// What enrolment keeps of a print: its fingers' minutiae and words, slot after slot in one
/// array each, and per slot their counts and the histogram code. Two allocations a print, where
/// a vector per finger for each (allocated, then freed once the shard copied them) had made a
/// bulk load of 1,000,000 identities take 68 s instead of 54.
#[derive(Default)]
struct Enrolled {
    minutiae: Vec<u32>,
    words: Vec<u16>,
    /// Per slot: how many minutiae and distinct words the finger there has (0: no finger).
    counts: [u16; POSITIONS],
    word_counts: [u16; POSITIONS],
    hists: [Code; POSITIONS],
    /// Its fingers' pattern classes (see [`pack_patterns`]).
    patterns: u32,
}

impl Enrolled {
    /// The words of the finger at slot `s` (empty if there is none).
    fn words_at(&self, s: usize) -> &[u16] {
        let at: usize = self.word_counts[..s].iter().map(|&c| c as usize).sum();
        &self.words[at..at + self.word_counts[s] as usize]
    }
}

/// The fingers of a gallery print by slot: the first finger listed at each position 1..=10.
fn enrolled_fingers(print: &Tenprint) -> Result<Enrolled, MatchError> {
    thread_local! {
        static SCRATCH: RefCell<(Scratch, Vec<Point>)> = RefCell::default();
    }
    SCRATCH.with_borrow_mut(|(scratch, points)| enrolled_fingers_with(print, scratch, points))
}

fn enrolled_fingers_with(
    print: &Tenprint,
    scratch: &mut Scratch,
    points: &mut Vec<Point>,
) -> Result<Enrolled, MatchError> {
    // The finger taken at each slot, checked in the order listed.
    let mut at_slot: [Option<&FingerTemplate>; POSITIONS] = [None; POSITIONS];
    for (i, f) in print.fingers.iter().enumerate() {
        let Some(s) = slot(f.position) else { continue };
        if at_slot[s].is_some() {
            continue;
        }
        if f.minutiae.len() > u16::MAX as usize {
            return Err(MatchError::Unsupported(format!(
                "fingers[{i}].minutiae: {} exceeds the limit of {}",
                f.minutiae.len(),
                u16::MAX
            )));
        }
        if let Some((k, m)) = f
            .minutiae
            .iter()
            .enumerate()
            .find(|(_, m)| m.x > MAX_COORD || m.y > MAX_COORD)
        {
            return Err(MatchError::Unsupported(format!(
                "fingers[{i}].minutiae[{k}]: ({}, {}) is outside the matcher's {MAX_COORD} px",
                m.x, m.y
            )));
        }
        at_slot[s] = Some(f);
    }
    let n = at_slot.iter().flatten().map(|f| f.minutiae.len()).sum();
    let mut out = Enrolled {
        minutiae: Vec::with_capacity(n),
        // Three edges per minutia, at most a word each.
        words: Vec::with_capacity(NEIGHBOURS * n),
        patterns: pack_patterns(&at_slot.map(|f| f.and_then(gallery_pattern))),
        ..Enrolled::default()
    };
    for (s, f) in at_slot.into_iter().enumerate() {
        let Some(f) = f else { continue };
        let start = out.minutiae.len();
        out.minutiae.extend(f.minutiae.iter().map(pack));
        points.clear();
        points.extend(out.minutiae[start..].iter().map(|p| unpack(*p)));
        let words_before = out.words.len();
        out.hists[s] = finger_codes(points, scratch, &mut out.words);
        out.counts[s] = f.minutiae.len() as u16;
        // At most one per word: under 2^16.
        out.word_counts[s] = (out.words.len() - words_before) as u16;
    }
    Ok(out)
}

/// A slot's pattern code when it has no finger or its class is uncertain.
const NO_PATTERN: u32 = PATTERN_CLASSES as u32;
/// Codes a slot can have: a class, or [`NO_PATTERN`].
const PATTERN_CODES: usize = PATTERN_CLASSES + 1;
/// A gallery finger's class is kept only if the classifier gives it at least this
/// probability (otherwise the slot counts as unknown, and neither agrees nor disagrees).
const PATTERN_SURE: f32 = 0.6;

/// Bits a slot's code takes in packed codes (see [`pack_patterns`]).
const PATTERN_BITS: usize = 3;
const _: () = assert!(PATTERN_CODES <= 1 << PATTERN_BITS && POSITIONS * PATTERN_BITS <= 32);

/// Ten slots' pattern classes (0..5, see [`crate::pattern`]; `None`: no finger, or unsure) in
/// one word, [`PATTERN_BITS`] a slot, slot 0 lowest. Three bits a slot are the index an AVX2
/// lane permutation takes from eight table values, so a scan scores eight subjects at once
/// a slot at a time (see [`pattern_over_avx2`]); without AVX2, a subject's score is three
/// table lookups (see [`PatternTables`]).
fn pack_patterns(classes: &[Option<u8>; POSITIONS]) -> u32 {
    (classes.iter().enumerate()).fold(0, |v, (s, c)| {
        v | c.map_or(NO_PATTERN, u32::from) << (PATTERN_BITS * s)
    })
}

/// Slot `s`'s code in packed codes `v` (see [`pack_patterns`]).
fn pattern_code(v: u32, s: usize) -> usize {
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
struct PatternCounts {
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
    fn of(patterns: &[u32]) -> PatternCounts {
        let mut c = PatternCounts::default();
        for &v in patterns {
            c.add(v, 1);
        }
        c
    }

    /// Counts an entry with packed codes `v` `n` more times (−1: one fewer).
    fn add(&mut self, v: u32, n: i64) {
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
    fn moments(&self, rows: &[[i32; PATTERN_CODES]; POSITIONS]) -> (i64, i64) {
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
fn gallery_pattern(f: &FingerTemplate) -> Option<u8> {
    if f.minutiae.is_empty() {
        return None;
    }
    let (c, p) = crate::pattern::classify(f);
    (p >= PATTERN_SURE).then_some(c)
}

/// A gallery finger's stage-1 codes: its edge words and histogram code, most of a bulk
/// load's work. Where the CPU has AVX2 (detected at run time, and cached: the build targets
/// any x86-64), the same code compiled for it, eight lanes where SSE2 has four: the same
/// operations on the same values, so the same bits (a test checks it). 200,000 synthetic
/// fingers on one thread, three alternations: 7.7–8.4 µs per finger portable, 6.1–7.6 with
/// AVX2.
fn finger_codes(points: &[Point], scratch: &mut Scratch, words: &mut Vec<u16>) -> Code {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { finger_codes_avx2(points, scratch, words) };
    }
    finger_codes_portable(points, scratch, words)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn finger_codes_avx2(points: &[Point], scratch: &mut Scratch, words: &mut Vec<u16>) -> Code {
    finger_codes_portable(points, scratch, words)
}

/// [`finger_codes`]: appends the words to `words` and returns the histogram code.
#[inline(always)]
fn finger_codes_portable(points: &[Point], scratch: &mut Scratch, words: &mut Vec<u16>) -> Code {
    neighbour_edges_into(points, scratch);
    push_words(&scratch.edges, words);
    quantise(&histogram_of_loaded(scratch))
}

/// What enrolment keeps of a print, or why it refuses it.
fn admissible(print: &Tenprint) -> Result<Enrolled, MatchError> {
    let fingers = enrolled_fingers(print)?;
    if fingers.minutiae.is_empty() {
        return Err(MatchError::EmptyProbe);
    }
    Ok(fingers)
}

impl Shard {
    /// Enrols one print: its postings go to the index's tail (see [`Postings`]).
    /// `dropped`: the matcher's dropped keys (see [`Vocabulary`]).
    fn push(&mut self, subject: SubjectId, print: Enrolled, dropped: &[u64]) {
        self.append(subject, print, |postings, key, idx| {
            postings.push(key, idx, dropped)
        });
        self.postings.maybe_fold(dropped);
    }

    /// Enrols a batch of prints at once (the bulk load's step, see
    /// [`ExhaustiveMatcher::enroll_many`]): their postings are sorted and merged into the
    /// index directly, with no stop at the tail.
    /// `postings`: how many words the items' fingers have (the staging counted them).
    fn push_batch(&mut self, items: Vec<(SubjectId, Enrolled)>, postings: usize, dropped: &[u64]) {
        if items.is_empty() {
            return;
        }
        // Earlier enrolments in the tail come first in every list.
        self.postings.fold(dropped);
        let mut batch: Vec<u64> = Vec::with_capacity(postings);
        for (subject, print) in items {
            self.append(subject, print, |_, key, idx| {
                batch.push((key as u64) << 32 | idx as u64)
            });
        }
        sort_by_key(&mut batch);
        self.postings.extend_sorted(&batch, dropped);
    }

    /// Appends an entry's arrays and hands each of its postings `(key, entry)` to `posting`;
    /// returns the entry's index.
    fn append(
        &mut self,
        subject: SubjectId,
        print: Enrolled,
        mut posting: impl FnMut(&mut Postings, u32, u32),
    ) -> u32 {
        let idx = self.subjects.len() as u32;
        self.subjects.push(subject);
        self.starts
            .push(u32::try_from(self.minutiae.len()).expect("a shard under 4G minutiae"));
        self.minutiae.extend_from_slice(&print.minutiae);
        let mut words = print.words.iter();
        for (s, &n) in print.word_counts.iter().enumerate() {
            for &w in words.by_ref().take(n as usize) {
                posting(&mut self.postings, key(s, w), idx);
            }
        }
        self.counts.push(print.counts);
        for (column, wc) in self.word_counts.iter_mut().zip(print.word_counts) {
            column.push(wc);
        }
        self.hists.push(print.hists);
        self.patterns.push(print.patterns);
        self.pattern_counts.add(print.patterns, 1);
        idx
    }

    fn len(&self) -> usize {
        self.subjects.len()
    }

    /// Entry `e`'s enrolled print as the matcher keeps it, for searching with (quality and
    /// image size are not kept: 0).
    fn print(&self, e: usize) -> Tenprint {
        let mut at = self.starts[e] as usize;
        let mut fingers = Vec::new();
        for (s, &count) in self.counts[e].iter().enumerate() {
            let count = count as usize;
            if count > 0 {
                fingers.push(FingerTemplate {
                    position: s as u8 + 1,
                    width: 0,
                    height: 0,
                    minutiae: self.minutiae[at..at + count]
                        .iter()
                        .map(|&p| unpack_minutia(p))
                        .collect(),
                });
            }
            at += count;
        }
        Tenprint { fingers }
    }

    /// Entries not removed: the subjects this shard holds.
    fn live(&self) -> usize {
        self.len() - self.removed_count
    }

    fn is_removed(&self, e: usize) -> bool {
        self.removed
            .get(e / 64)
            .is_some_and(|b| b >> (e % 64) & 1 == 1)
    }

    /// The entry holding `subject`, if this shard holds it.
    fn find(&self, subject: SubjectId) -> Option<usize> {
        (0..self.len()).find(|&e| self.subjects[e] == subject && !self.is_removed(e))
    }

    /// Removes entry `e` from the gallery: searches no longer keep it, and its minutiae and
    /// histogram codes are overwritten with zeros (the template is gone; its postings stay in
    /// the index, a word's list naming an entry no search keeps, until [`Shard::purge`]).
    /// The words entry `e`'s fingers were enrolled with, by slot: recomputed from its minutiae
    /// (see [`Shard::finger`]; a finger's words do not depend on the order of its edges), as
    /// enrolment computed them from the same packed minutiae.
    fn entry_words(&self, e: usize) -> Vec<(usize, Vec<u16>)> {
        (0..POSITIONS)
            .filter(|&s| self.counts[e][s] > 0)
            .map(|s| (s, words(&self.finger(e, s).edges)))
            .collect()
    }

    fn remove(&mut self, e: usize) {
        if self.removed.len() <= e / 64 {
            self.removed.resize(e / 64 + 1, 0);
        }
        self.removed[e / 64] |= 1 << (e % 64);
        self.removed_count += 1;
        let start = self.starts[e] as usize;
        let n: usize = self.counts[e].iter().map(|c| *c as usize).sum();
        self.minutiae[start..start + n].fill(0);
        self.hists[e] = [[0; HIST]; POSITIONS];
        self.pattern_counts.add(self.patterns[e], -1);
        self.patterns[e] = pack_patterns(&[None; POSITIONS]);
        self.pattern_counts.add(self.patterns[e], 1);
    }

    /// Drops the removed entries: the others are renumbered in order and every array and
    /// posting list is rewritten without them (each list decoded and encoded afresh: a pass
    /// over the index, as a fold once was). Call with the tail folded.
    fn purge(&mut self) {
        if self.removed_count == 0 {
            return;
        }
        debug_assert_eq!(self.postings.tail_len, 0);
        // New index of each entry; u32::MAX for a removed one.
        let mut renumber = vec![u32::MAX; self.len()];
        let mut next = 0u32;
        for (e, new) in renumber.iter_mut().enumerate() {
            if !self.is_removed(e) {
                *new = next;
                next += 1;
            }
        }
        let keep = |e: &usize| renumber[*e] != u32::MAX;
        let old_starts = std::mem::take(&mut self.starts);
        let old_minutiae = std::mem::take(&mut self.minutiae);
        for e in (0..renumber.len()).filter(keep) {
            let start = old_starts[e] as usize;
            let n: usize = self.counts[e].iter().map(|c| *c as usize).sum();
            self.starts
                .push(u32::try_from(self.minutiae.len()).expect("a shard under 4G minutiae"));
            self.minutiae
                .extend_from_slice(&old_minutiae[start..start + n]);
        }
        fn filter<T>(v: &mut Vec<T>, renumber: &[u32]) {
            let mut e = 0;
            v.retain(|_| {
                e += 1;
                renumber[e - 1] != u32::MAX
            });
            v.shrink_to_fit();
        }
        filter(&mut self.subjects, &renumber);
        filter(&mut self.counts, &renumber);
        filter(&mut self.hists, &renumber);
        filter(&mut self.patterns, &renumber);
        self.pattern_counts = PatternCounts::of(&self.patterns);
        for column in &mut self.word_counts {
            filter(column, &renumber);
        }
        self.postings.renumber(&renumber);
        self.removed = Vec::new();
        self.removed_count = 0;
    }

    /// The best `k` entries by `scores` (see [`best_of_shard`]), removed entries left out.
    fn best_live(&self, scores: &[f32], k: usize) -> Vec<(usize, f32)> {
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

    /// Entry `e`'s finger in slot `s`, prepared for pairing (empty if it has none).
    fn finger(&self, e: usize, s: usize) -> Prepared {
        let mut out = Prepared::default();
        self.finger_into(e, s, &mut out, &mut Scratch::default(), &mut Vec::new());
        out
    }

    /// [`Shard::finger`] into `out`, in working memory kept by the caller, inlined where it
    /// is called (see [`stage2_score`]).
    #[inline(always)]
    fn finger_into(
        &self,
        e: usize,
        s: usize,
        out: &mut Prepared,
        scratch: &mut Scratch,
        keys: &mut Vec<u64>,
    ) {
        let start = self.starts[e] as usize
            + self.counts[e][..s]
                .iter()
                .map(|c| *c as usize)
                .sum::<usize>();
        let n = self.counts[e][s] as usize;
        out.points.clear();
        out.points
            .extend(self.minutiae[start..start + n].iter().map(|p| unpack(*p)));
        prepare_edges(out, scratch, keys);
    }

    /// [`shortlist_score`] of every entry, through the index: per entry and probe finger,
    /// the summed weights of the gallery finger's words among the probe's `keys` (see
    /// [`weighted_keys`]), then the same normalised sum in the same order — the same value as
    /// the scan.
    fn word_scores(&self, probe: &[FingerKeys], deadline: Deadline) -> Option<Vec<f32>> {
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

    /// Stage 1's second code for every entry (see [`Shard::histogram_score`]): the search reads
    /// only the kept entries'; the benchmark's ranks and the tests read all.
    fn histogram_scores(&self, probe: &[(usize, Code)]) -> Vec<u32> {
        (0..self.len())
            .map(|e| self.histogram_score(e, probe))
            .collect()
    }
}

/// A probe prepared for both stages: its fingers (with a slot) and their stage-1 codes.
struct ProbeCodes {
    fingers: Vec<(usize, Prepared)>,
    hists: Vec<(usize, Code)>,
    /// Per slot, the probabilities of its finger's pattern classes (the first finger listed).
    patterns: [Option<[f32; PATTERN_CLASSES]>; POSITIONS],
}

impl ProbeCodes {
    fn new(probe: &Tenprint) -> Result<ProbeCodes, MatchError> {
        let fingers: Vec<(usize, Prepared)> = probe
            .fingers
            .iter()
            .filter(|f| !f.minutiae.is_empty())
            .filter_map(|f| Some((slot(f.position)?, prepare(points(f)))))
            .collect();
        if fingers.is_empty() {
            return Err(MatchError::EmptyProbe);
        }
        let mut patterns = [None; POSITIONS];
        for f in probe.fingers.iter().filter(|f| !f.minutiae.is_empty()) {
            if let Some(s) = slot(f.position)
                && patterns[s].is_none()
            {
                patterns[s] = Some(crate::pattern::probabilities(f));
            }
        }
        Ok(ProbeCodes {
            patterns,
            hists: fingers
                .iter()
                .map(|(s, f)| (*s, quantise(&histogram(&f.points, &mut Scratch::default()))))
                .collect(),
            fingers,
        })
    }
}

impl Shard {
    /// Asks the cache for entry `e`'s histogram codes (see [`prefetch`]), every line of them.
    #[inline]
    fn prefetch_hists(&self, e: usize) {
        let bytes: &[u8] = self.hists.get(e).map_or(&[], |h| h.as_flattened());
        // Every 64th byte and the last: each line, however the codes are aligned.
        for i in (0..bytes.len())
            .step_by(64)
            .chain(bytes.len().checked_sub(1))
        {
            prefetch(bytes, i);
        }
    }

    /// Stage 1's histogram score of entry `e`: the dot products of its histogram codes with
    /// the probe's, summed over the probe's fingers (an entry without the finger has a zero
    /// code and adds 0). 32-bit lanes over all fingers, one horizontal sum: the same integer
    /// total as the per-finger dot products (nothing wraps: at most 10 × HIST × 255²).
    fn histogram_score(&self, e: usize, probe: &[(usize, Code)]) -> u32 {
        let h = &self.hists[e];
        let mut acc = [0u32; 16];
        for (s, p) in probe {
            for (cx, cy) in p.chunks_exact(16).zip(h[*s].chunks_exact(16)) {
                for k in 0..16 {
                    acc[k] += cx[k] as u32 * cy[k] as u32;
                }
            }
        }
        acc.iter().sum()
    }
}

/// Keeps the `k` best by score (ties: lower subject id first, for determinism).
fn top_k(mut v: Vec<Candidate>, k: usize) -> Vec<Candidate> {
    v.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.subject.cmp(&b.subject)));
    v.truncate(k);
    v
}

/// The best `k` of `(shard, entry, score)` by score, ties to the lower subject id (`id` of
/// shard and entry; ids are unique, so the order is strict and does not depend on where a
/// subject sits: with ties to the lower entry, a print enrolled under many ids kept different
/// ids under different shardings): a linear-time selection under a strict total order, so
/// the same set a full sort would give (sorting was a third of the search time at 10,000
/// identities). Taking the best `k` of each shard's best `k` gives the same set too.
fn best_k(
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

/// A search's deadline (`None`: none).
#[derive(Clone, Copy)]
struct Deadline(Option<Instant>);

impl Deadline {
    fn passed(&self) -> bool {
        self.0.is_some_and(|d| Instant::now() >= d)
    }
}

/// The best `k` entries of one shard by score (ties to the lower id in `ids`, the entries'
/// subjects), in no particular order: the same set as [`best_k`] over every entry, in about
/// one pass. A sample of every
/// 16th score sets a bar that, by a wide margin, more than `k` entries clear; only those are
/// gathered and selected from. If fewer clear it (a bar set too high), every entry is.
fn best_of_shard(scores: &[f32], ids: &[SubjectId], k: usize) -> Vec<(usize, f32)> {
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
fn weighted_keys(v: &Vocabulary, words: &ProbeWords, stop_share: f64) -> Vec<FingerKeys> {
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
struct FingerKeys {
    slot: usize,
    /// `(key, weight)`, ascending by key.
    keys: Vec<(u32, u16)>,
}

/// A subject stage 1 kept: where it is and its scores.
#[derive(Clone, Copy, Debug)]
struct Kept {
    shard: usize,
    entry: usize,
    subject: SubjectId,
    word: f32,
    hist: f32,
    fused: f32,
}

/// What stage 1 found for a probe: the subjects the first code kept (the best
/// [`cascade_len`]) with their histogram and fused scores.
struct Stage1 {
    /// Entries in the gallery, removed ones included (the shortlist's length grows with it).
    n: usize,
    kept: Vec<Kept>,
    /// The first code was the pattern classes (`Kept::word` is their score).
    patterns: bool,
}

/// Stage 1, a cascade. The first code, the pattern classes or the word index (see
/// [`FirstCode`]), scores every subject (per shard in parallel); the best [`cascade_len`] by it
/// are kept, and only those have their histogram codes read.
/// The fused score adds the two codes' z-scores: the first code's mean and standard deviation are
/// taken over the whole gallery, the histogram's over the kept subjects (nearly all of them
/// impostors, whose histogram scores do not depend on their first code's), so a mate that stands
/// out on both codes stands out further on their sum.
fn stage1<S: std::ops::Deref<Target = Shard> + Sync>(
    shards: &[S],
    codes: &ProbeCodes,
    tuning: Tuning,
    vocabulary: &Vocabulary,
    deadline: Deadline,
) -> Option<Stage1> {
    let n: usize = shards.iter().map(|s| s.len()).sum();
    let patterns = codes.ranks_by_patterns(tuning.first);
    let m = cascade_len(tuning.cascade, n, patterns);
    type Best = Vec<(usize, f32)>;
    // Each shard's best by the first code, and the first code's mean and 1 / spread over every
    // entry.
    let (best, (mw, iw)): (Vec<Best>, (f32, f32)) = if patterns {
        let tables = PatternTables::new(&codes.patterns);
        let (best, (sum, sq)) = pattern_best(shards, &tables, m, deadline)?;
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
    // kept are read in blocks on every thread (a tenth of a search at 1,000,000, alone).
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
                    }
                })
        })
        .collect();
    let moments = kept.iter().fold((0f64, 0f64), |(a, b), k| {
        (a + k.hist as f64, b + k.hist as f64 * k.hist as f64)
    });
    let (mh, ih) = mean_and_inverse_spread(kept.len(), moments);
    for k in &mut kept {
        k.fused = (k.word - mw) * iw + (k.hist - mh) * ih;
    }
    Some(Stage1 { n, kept, patterns })
}

/// Every entry's first-code score, per shard, as [`stage1`] scores it for `codes`: for the
/// ranks [`ExhaustiveMatcher::shortlist_ranks`] reports (a search keeps no such list).
fn first_code_scores(
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
/// waited four cycles on each addition, ~1.3 ms of a search over 1,000,000 scores.
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

/// How many subjects stage 1 keeps by its first code in a gallery of `n`: `fixed`, or by the
/// rule of [`CASCADE`] (of [`PATTERN_CASCADE_SHARE`] for the pattern classes).
fn cascade_len(fixed: Option<usize>, n: usize, patterns: bool) -> usize {
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

/// The subjects stage 2 pairs, as `(shard, entry)`, sorted, without repeats: among those stage 1
/// kept, the best [`shortlist_len`] by the fused score and the best [`SHORTLIST_PER_CODE`] by
/// each code.
fn shortlist(st: &Stage1) -> Vec<(usize, usize)> {
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
    short.sort_unstable();
    short.dedup();
    short
}

/// The exhaustive, sharded in-memory gallery.
pub struct ExhaustiveMatcher {
    shards: Vec<RwLock<Shard>>,
    enrolled: Mutex<HashSet<SubjectId>>,
    /// Lock order: never waited for while a shard lock is wanted. Enrolment takes it to write
    /// (after `enrolled`, holding no shard lock); a shard's holder may take it to read.
    vocabulary: RwLock<Vocabulary>,
    /// The decision threshold's bits ([`THRESHOLD`] unless set or calibrated).
    threshold: AtomicU32,
    tuning: Tuning,
}

/// The code stage 1 ranks every subject by, before the cascade keeps the best (see
/// [`CASCADE`]) for the histogram code and the fused score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstCode {
    /// [`FirstCode::Patterns`] for a probe with at least [`PATTERN_MIN_FINGERS`] fingers,
    /// [`FirstCode::Words`] for one with fewer (the default).
    Auto,
    /// The edge words, through the inverted index (see the module comment).
    Words,
    /// The fingers' pattern classes (see [`crate::pattern`]): a subject scores, for each
    /// finger the probe and it both have, the log of how much likelier the probe's class
    /// probabilities make the gallery finger's class than its share of all fingers. Ten
    /// fingers' classes narrow a gallery as the classification of tenprint cards did: on
    /// synthetic prints, a mate's classes all agree and few strangers' do. A scan of four bytes a
    /// subject, eight scored at once, where the walk of the words reads ~46 postings.
    Patterns,
}

/// With fewer fingers than this a probe's pattern classes narrow the gallery too little (each
/// agreeing finger leaves about a third of the strangers), and stage 1 ranks by words.
pub const PATTERN_MIN_FINGERS: usize = 7;

/// The share of a class's probability [`PatternTables`] gives every class, whatever the
/// probe finger's probabilities: a gallery finger classified wrongly (about 1 in 1,000 at the
/// default capture quality) costs at most ln(1 / 0.02) ≈ 3.9, not everything.
const PATTERN_FLOOR: f32 = 0.02;

/// Pattern scores are whole multiples of 1 / `PATTERN_UNIT`: each slot's log-likelihood ratio is
/// rounded once, so a subject's score is an exact integer sum and the gallery's moments (see
/// [`stage1`]) are exact integers, the same however the gallery is sharded and summed.
const PATTERN_UNIT: f32 = 1024.0;

/// A probe's pattern scores, in units of 1 / [`PATTERN_UNIT`]: per slot, the score of each
/// code (`rows`; as eight lanes in `lanes`, for [`pattern_over_avx2`]), and for the scalar
/// scan the score of every combination of codes at slots 0..4, 4..7 and 7..10 (`groups`:
/// 4,096, 512 and 512 entries, 20 KB, which stay in the first-level cache), so a subject's
/// score is three lookups by its packed codes.
struct PatternTables {
    groups: [Box<[i32]>; 3],
    lanes: [[i32; 1 << PATTERN_BITS]; POSITIONS],
    /// Per slot, the score of each code (see [`PatternCounts::moments`]).
    rows: [[i32; PATTERN_CODES]; POSITIONS],
}

/// The slots of each of [`PatternTables`]' groups.
const PATTERN_GROUPS: [std::ops::Range<usize>; 3] = [0..4, 4..7, 7..10];

impl PatternTables {
    fn new(probe: &[Option<[f32; PATTERN_CLASSES]>; POSITIONS]) -> PatternTables {
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
    fn score(&self, v: u32) -> i32 {
        let [a, b, c] = &self.groups;
        let bits = |slots: &std::ops::Range<usize>| {
            let len = PATTERN_BITS * slots.len();
            (v >> (PATTERN_BITS * slots.start)) as usize & ((1 << len) - 1)
        };
        a[bits(&PATTERN_GROUPS[0])] + b[bits(&PATTERN_GROUPS[1])] + c[bits(&PATTERN_GROUPS[2])]
    }
}

impl ProbeCodes {
    /// The probe's edge words (see [`probe_words`]), for stage 1 by words.
    fn words(&self) -> ProbeWords {
        probe_words(&self.fingers)
    }

    /// Whether stage 1 ranks this probe by pattern classes under `first`.
    fn ranks_by_patterns(&self, first: FirstCode) -> bool {
        match first {
            FirstCode::Words => false,
            FirstCode::Patterns => true,
            FirstCode::Auto => self.patterns.iter().flatten().count() >= PATTERN_MIN_FINGERS,
        }
    }
}

impl Shard {
    /// Every entry's pattern score for the probe of `t` (see [`FirstCode::Patterns`]), as
    /// [`Shard::pattern_best`] scores them: for the ranks a benchmark reports.
    fn pattern_scores(&self, t: &PatternTables) -> Vec<f32> {
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
    fn pattern_pass(&self, t: &PatternTables, bar: i32) -> (Vec<(u32, i32)>, (i64, i64)) {
        let mut over = pattern_over(&self.patterns, t, bar);
        if self.removed_count > 0 {
            over.retain(|&(e, _)| !self.is_removed(e as usize));
        }
        (over, self.pattern_counts.moments(&t.rows))
    }
}

/// Every entry of `patterns` whose score is at least `bar`, as (entry, score), ascending: the
/// scan of [`Shard::pattern_pass`]. Where the CPU has AVX2 (detected at run time and cached,
/// as for [`finger_codes`]) eight entries are scored at once (see [`pattern_over_avx2`]); the
/// same entries and scores either way (a test checks it).
fn pattern_over(patterns: &[u32], t: &PatternTables, bar: i32) -> Vec<(u32, i32)> {
    let mut over = Vec::new();
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        unsafe { pattern_over_avx2(patterns, t, bar, &mut over) };
        return over;
    }
    pattern_over_portable(patterns, 0, t, bar, &mut over);
    over
}

/// [`pattern_over`] for any CPU, of the entries `patterns` numbered from `first`, appended to
/// `over`. Branch-free: each entry is written at the end of the list, which grows only if it
/// clears the bar (a branch taken for a tenth of the entries mispredicted often enough to
/// double the pass), a block of entries at a time.
fn pattern_over_portable(
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
/// cleared, taken for one block in twelve, had been 40% of the scan). The scalar scan's
/// lookups and gathering had taken ~5 cycles an entry, a fifth of a search at 1,000,000
/// identities.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pattern_over_avx2(
    patterns: &[u32],
    t: &PatternTables,
    bar: i32,
    over: &mut Vec<(u32, i32)>,
) {
    use std::arch::x86_64::*;
    const BLOCK: usize = 1024;
    // SAFETY (every load and store below): each reads or writes eight `i32`s or `u32`s, of an
    // array of eight, of `codes` (eight long), or of `entries` and `scores` at `len`, which
    // have room for a block's entries and eight more past `len` (see `room`).
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
            let mut v = unsafe { _mm256_loadu_si256(codes.as_ptr() as *const __m256i) };
            let mut x = _mm256_permutevar8x32_epi32(lanes[0], v);
            for row in &lanes[1..] {
                v = _mm256_srli_epi32::<{ PATTERN_BITS as i32 }>(v);
                x = _mm256_add_epi32(x, _mm256_permutevar8x32_epi32(*row, v));
            }
            let below = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(barv, x)));
            let clear = !below as usize & 0xFF;
            let pack = unsafe { _mm256_loadu_si256(LEFT_PACK[clear].as_ptr() as *const __m256i) };
            let first = _mm256_set1_epi32((b * BLOCK + c * 8) as i32);
            let ids = _mm256_add_epi32(first, eight);
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

/// The best `k` live entries of the gallery by pattern score (ties to the lower subject id),
/// per shard, in no particular order, and the sum and sum of squares of every entry's score
/// (see [`Shard::pattern_pass`]). A bar from every 64th entry's score, over all shards, that by
/// a wide margin more than `k` entries clear (as [`best_of_shard`] sets one per shard): each
/// shard gathers only the entries at or above it, about 2·`k` in all, and the best `k` are
/// selected from those. If fewer clear it (a bar set too high), every entry is gathered. A bar
/// per shard had each shard gather 2·`k` for a selection of `k` over them all: reading their
/// ids and selecting had been a tenth of a search at 1,000,000 identities.
type PatternBest = (Vec<Vec<(usize, f32)>>, (i64, i64));
fn pattern_best<S: std::ops::Deref<Target = Shard> + Sync>(
    shards: &[S],
    t: &PatternTables,
    k: usize,
    deadline: Deadline,
) -> Option<PatternBest> {
    let mut sample: Vec<i32> = shards
        .par_iter()
        .flat_map_iter(|s| s.patterns.iter().step_by(64).map(|&v| t.score(v)))
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

/// Stage 1's settings a benchmark may change (see [`ExhaustiveMatcher::with_cascade`] and
/// [`ExhaustiveMatcher::with_stop_share`]).
#[derive(Clone, Copy, Debug)]
struct Tuning {
    /// A fixed cascade length instead of the rule.
    cascade: Option<usize>,
    /// See [`STOP_WORD_SHARE`].
    stop_share: f64,
    /// Stage 1's first code (see [`FirstCode`]).
    first: FirstCode,
}

impl ExhaustiveMatcher {
    pub fn new(shards: usize) -> Self {
        ExhaustiveMatcher {
            shards: (0..shards.max(1))
                .map(|_| RwLock::new(Shard::default()))
                .collect(),
            enrolled: Mutex::new(HashSet::new()),
            vocabulary: RwLock::new(Vocabulary::default()),
            threshold: AtomicU32::new(THRESHOLD.to_bits()),
            tuning: Tuning {
                cascade: None,
                stop_share: STOP_WORD_SHARE,
                first: FirstCode::Auto,
            },
        }
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

    /// Enrols the prints in order, exactly as [`Matcher::enroll`] one after another would
    /// (same gallery, same errors), but prepares them on all cores and fills the shards in
    /// parallel, in batches: the way to load a gallery. Stops at the first print refused and
    /// returns its error; those before it stay enrolled. Call [`ExhaustiveMatcher::compact`]
    /// after a bulk load.
    ///
    /// Each shard takes its prints in batches, each batch's postings sorted and merged into
    /// the compressed index at once (see `Postings::merge`) rather than one by one into the
    /// tail, whose per-posting table lookups and list growth had been two thirds of a bulk
    /// load. A batch grows with the index, as the tail does before a fold, up to
    /// `BATCH_MAX_POSTINGS`. Searches running meanwhile see the gallery as of the last batch
    /// each shard took: a print becomes searchable with its batch, every one by the time this
    /// returns.
    pub fn enroll_many(&self, prints: &[(SubjectId, Tenprint)]) -> Result<(), MatchError> {
        type Item = (SubjectId, Enrolled);
        let mut staged: Vec<(Vec<Item>, usize)> =
            (0..self.shards.len()).map(|_| (Vec::new(), 0)).collect();
        // Takes each shard's staged prints once they are `full` (or all, if not given).
        let commit = |staged: &mut Vec<(Vec<Item>, usize)>, full: bool| {
            self.shards.par_iter().zip(staged.par_iter_mut()).for_each(
                |(shard, (items, postings))| {
                    if items.is_empty() {
                        return;
                    }
                    if full {
                        let s = shard.read().expect("shard lock");
                        if *postings < s.postings.batch_postings() {
                            return;
                        }
                    }
                    let mut s = shard.write().expect("shard lock");
                    let v = self.vocabulary.read().expect("vocabulary lock");
                    s.push_batch(std::mem::take(items), *postings, &v.dropped);
                    *postings = 0;
                },
            );
        };
        // Chunks bound the prepared fingers held at once.
        for chunk in prints.chunks(1024) {
            let prepared: Vec<_> = chunk.par_iter().map(|(_, t)| admissible(t)).collect();
            let mut refused = None;
            {
                let mut enrolled = self.enrolled.lock().expect("enrolled set");
                let (mut subjects, mut accepted) = (Vec::new(), Vec::new());
                for ((subject, _), fingers) in chunk.iter().zip(prepared) {
                    match fingers {
                        Err(e) => refused = Some(e),
                        Ok(_) if !enrolled.insert(*subject) => {
                            refused = Some(MatchError::AlreadyEnrolled(*subject))
                        }
                        Ok(f) => {
                            subjects.push(*subject);
                            accepted.push(f);
                        }
                    }
                    if refused.is_some() {
                        break;
                    }
                }
                let mut vocabulary = self.vocabulary.write().expect("vocabulary lock");
                vocabulary.add_many(&accepted);
                for (subject, f) in subjects.into_iter().zip(accepted) {
                    let (items, postings) = &mut staged[(subject as usize) % self.shards.len()];
                    *postings += f.words.len();
                    items.push((subject, f));
                }
            }
            if let Some(e) = refused {
                commit(&mut staged, false);
                return Err(e);
            }
            commit(&mut staged, true);
        }
        commit(&mut staged, false);
        Ok(())
    }

    /// Folds every shard's recent enrolments into its compressed index (see `Postings`)
    /// and gives back the arrays' spare capacity: after a bulk load, this gives the smallest
    /// memory and the fastest searches. Searches give the same answers either way.
    ///
    /// Removed subjects' entries go too (see `Shard::purge`): their memory comes back, and
    /// the gallery is the one enrolling the others alone, in the same order, would give.
    ///
    /// On Linux the arrays stage 1 reads at random are then moved to huge pages where the
    /// kernel has them (see `crate::pages`: a copy, 0.06–0.44 s for 1,000,000 identities),
    /// and the memory the allocator holds free (a bulk load's staging buffers) is given back.
    pub fn compact(&self) {
        for s in &self.shards {
            let mut s = s.write().expect("shard lock");
            let v = self.vocabulary.read().expect("vocabulary lock");
            s.postings.fold(&v.dropped);
            s.purge();
            s.postings.release_spare();
            s.starts.shrink_to_fit();
            s.counts.shrink_to_fit();
            s.minutiae.shrink_to_fit();
            for column in &mut s.word_counts {
                column.shrink_to_fit();
            }
            s.patterns.shrink_to_fit();
            // What stage 1 reads at random over the whole shard, on huge pages (see
            // `crate::pages`): a search's ~4,096 kept subjects' histogram codes had each been
            // a page walk (their reads were a seventh of a search at 1,000,000 identities,
            // now a fourteenth). The ids its pattern pass gathers move too once a shard's
            // are large enough to hold two huge pages (over 524,288 entries; not at 1,000,000
            // in 4 shards, where they span 2 MB a shard).
            crate::pages::onto_huge_pages(&mut s.hists);
            crate::pages::onto_huge_pages(&mut s.subjects);
        }
        crate::pages::give_back_free_memory();
    }
}

/// Where a gallery's memory goes: heap bytes (allocated capacity) by part, summed over shards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GalleryBytes {
    /// Packed minutiae and the per-entry offsets and counts that locate them.
    pub minutiae: usize,
    /// Stage 1's histogram codes and pattern classes (4 bytes an entry).
    pub histograms: usize,
    /// The word index: posting lists, their offsets, the uncompressed tail, each finger's
    /// word count, and the gallery's word counts that decide which words are dropped
    /// (`Vocabulary`: 2.3 MB in all, once it has a print).
    pub index: usize,
    /// Subject ids and the set of enrolled ids.
    pub subjects: usize,
}

impl GalleryBytes {
    pub fn total(&self) -> usize {
        self.minutiae + self.histograms + self.index + self.subjects
    }
}

fn vec_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * std::mem::size_of::<T>()
}

impl ExhaustiveMatcher {
    /// Heap bytes held by the gallery, by part (allocator overhead and the process's other
    /// memory not included: the benchmark reports resident memory beside it).
    pub fn heap_bytes(&self) -> GalleryBytes {
        let mut b = GalleryBytes {
            subjects: self.enrolled.lock().expect("enrolled set").capacity()
                * (std::mem::size_of::<SubjectId>() + 1),
            ..GalleryBytes::default()
        };
        for s in &self.shards {
            let s = s.read().expect("shard lock");
            b.minutiae += vec_bytes(&s.minutiae) + vec_bytes(&s.starts) + vec_bytes(&s.counts);
            b.histograms += vec_bytes(&s.hists) + vec_bytes(&s.patterns);
            let p = &s.postings;
            b.index += s.word_counts.iter().map(vec_bytes).sum::<usize>()
                + vec_bytes(&p.offsets)
                + vec_bytes(&p.counts)
                + vec_bytes(&p.last)
                + vec_bytes(&p.bytes)
                + p.tail.capacity() * (std::mem::size_of::<(u32, Vec<u32>)>() + 1)
                + p.tail.values().map(vec_bytes).sum::<usize>();
            b.subjects += vec_bytes(&s.subjects);
        }
        let v = self.vocabulary.read().expect("vocabulary lock");
        b.index += vec_bytes(&v.df) + vec_bytes(&v.dropped);
        b
    }
}

impl ExhaustiveMatcher {
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
        let shards: Vec<_> = self
            .shards
            .iter()
            .map(|s| s.read().expect("shard lock"))
            .collect();
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
    /// [`ExhaustiveMatcher::cascade_len`]) and, among those kept, its fused rank is below
    /// [`shortlist_len`] or a code's rank below [`SHORTLIST_PER_CODE`]: this is how the
    /// benchmark measures the cascade and shortlist a gallery size needs.
    pub fn shortlist_ranks(
        &self,
        probe: &Tenprint,
        subject: SubjectId,
    ) -> Result<Option<ShortlistRanks>, MatchError> {
        let codes = ProbeCodes::new(probe)?;
        let shards: Vec<_> = self
            .shards
            .iter()
            .map(|s| s.read().expect("shard lock"))
            .collect();
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
        Ok(Some(ShortlistRanks {
            by_patterns: st.patterns,
            word,
            histogram,
            fused: among_kept(|k| k.fused),
            histogram_kept: among_kept(|k| k.hist),
        }))
    }
}

/// A subject's stage-1 ranks for a probe (0 = first): see [`ExhaustiveMatcher::shortlist_ranks`].
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
    }
}

impl Matcher for ExhaustiveMatcher {
    fn enroll(&self, subject: SubjectId, print: &Tenprint) -> Result<(), MatchError> {
        let fingers = admissible(print)?;
        if !self.enrolled.lock().expect("enrolled set").insert(subject) {
            return Err(MatchError::AlreadyEnrolled(subject));
        }
        self.vocabulary
            .write()
            .expect("vocabulary lock")
            .add(&fingers);
        let mut shard = self.shards[(subject as usize) % self.shards.len()]
            .write()
            .expect("shard lock");
        let v = self.vocabulary.read().expect("vocabulary lock");
        shard.push(subject, fingers, &v.dropped);
        Ok(())
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
        // Hold every shard's read lock for the whole search: one consistent gallery view.
        let shards: Vec<_> = self
            .shards
            .iter()
            .map(|s| s.read().expect("shard lock"))
            .collect();
        let v = self.vocabulary.read().expect("vocabulary lock");
        let st = stage1(&shards, &codes, self.tuning, &v, deadline)
            .ok_or(MatchError::DeadlineExceeded)?;
        drop(v);
        let short = shortlist(&st);
        // Stage 2 on the shortlist, in parallel.
        let scored: Vec<Candidate> = short
            .par_iter()
            .map(|&(si, ei)| {
                if deadline.passed() {
                    return None;
                }
                let shard = &shards[si];
                Some(Candidate {
                    subject: shard.subjects[ei],
                    score: stage2_score(probe, shard, ei),
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
    /// the read lock sees it either whole or gone. See `Shard::remove` for what is erased.
    fn remove(&self, subject: SubjectId) -> Result<(), MatchError> {
        let words = {
            let mut shard = self.shards[(subject as usize) % self.shards.len()]
                .write()
                .expect("shard lock");
            let e = shard
                .find(subject)
                .ok_or(MatchError::NotEnrolled(subject))?;
            let words = shard.entry_words(e);
            shard.remove(e);
            words
        };
        self.enrolled.lock().expect("enrolled set").remove(&subject);
        self.vocabulary
            .write()
            .expect("vocabulary lock")
            .forget(&words);
        Ok(())
    }

    /// Sets the decision threshold for a target false-positive identification rate, from the
    /// gallery itself, and says how: `searches` enrolled prints (spread evenly over the
    /// gallery) are searched as probes, each with itself left out — a non-mated search, as
    /// the gallery holds each person once — and the threshold is put just above the impostor
    /// score that at most `target_fpir` of them reach. A target the searches cannot resolve
    /// (fewer than 1 / `target_fpir`) puts it just above the highest impostor score seen, and
    /// says so. Costs `searches` searches; the threshold is unchanged on error.
    ///
    /// The default, [`THRESHOLD`], sits far above these points (FPIR 0.1% was 0.21 at
    /// 1,000,000 identities in `matcher-bench`): this is for an operator who wants the
    /// decision at a stated FPIR instead.
    fn calibrate_threshold(
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
            let shards: Vec<_> = self
                .shards
                .iter()
                .map(|s| s.read().expect("shard lock"))
                .collect();
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

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().expect("shard lock").live())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{CaptureModel, capture, master_tenprint};
    use proptest::prelude::*;
    use std::time::Duration;

    fn enrol_capture(p: u64) -> Tenprint {
        capture(
            &master_tenprint(11, p),
            &CaptureModel::default(),
            0xE0_0000 + p,
        )
    }

    fn probe(p: u64, n: u64) -> Tenprint {
        capture(
            &master_tenprint(11, p),
            &CaptureModel::default(),
            0xB0_0000 + p * 100 + n,
        )
    }

    #[test]
    fn identifies_mated_probes_and_rejects_strangers() {
        let m = ExhaustiveMatcher::new(3);
        for p in 1..=600 {
            m.enroll(p, &enrol_capture(p)).unwrap();
        }
        assert_eq!(m.len(), 600);
        for i in 0..60 {
            let p = 1 + (i * 37) % 600;
            let r = m.search(&probe(p, i), 3).unwrap();
            assert_eq!(
                r.hit.map(|c| c.subject),
                Some(p),
                "mated search {p} missed: {:?}",
                r.candidates
            );
            let stranger = m.search(&probe(10_000 + i, 0), 3).unwrap();
            assert_eq!(stranger.hit, None, "false hit: {:?}", stranger.candidates);
        }
    }

    /// Stage 1's word weights are over the prints the gallery holds: a removal takes its
    /// print's words back at once (before any compaction), as if it had never been enrolled.
    #[test]
    fn a_removal_takes_its_words_out_of_the_weights() {
        let removed = |p: u64| p.is_multiple_of(3);
        let m = ExhaustiveMatcher::new(2);
        let fresh = ExhaustiveMatcher::new(3);
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
    fn removed_subjects_are_not_found_and_can_be_enrolled_again() {
        let m = ExhaustiveMatcher::new(3);
        let prints: Vec<(SubjectId, Tenprint)> = (1..=400).map(|p| (p, enrol_capture(p))).collect();
        m.enroll_many(&prints).unwrap();
        m.compact();
        let found = |p: u64, n: u64| m.search(&probe(p, n), 5).unwrap();
        assert_eq!(found(77, 1).hit.map(|c| c.subject), Some(77));

        m.remove(77).unwrap();
        assert_eq!(m.len(), 399);
        for n in 1..4 {
            let r = found(77, n);
            assert!(r.candidates.iter().all(|c| c.subject != 77), "{r:?}");
            assert_eq!(r.hit, None, "{r:?}");
        }
        // Nothing else changed: the others are found as before.
        for p in [1, 76, 78, 400] {
            assert_eq!(found(p, 1).hit.map(|c| c.subject), Some(p));
        }
        assert_eq!(m.shortlist_ranks(&probe(77, 1), 77).unwrap(), None);
        // Removing it twice, or someone never enrolled, is a clear error.
        assert_eq!(m.remove(77), Err(MatchError::NotEnrolled(77)));
        assert_eq!(m.remove(9_999), Err(MatchError::NotEnrolled(9_999)));

        // The id is free again; a new enrolment (another capture) is found, the old one not.
        m.enroll(77, &probe(77, 50)).unwrap();
        assert_eq!(m.len(), 400);
        assert_eq!(found(77, 2).hit.map(|c| c.subject), Some(77));
        assert_eq!(
            m.enroll(77, &enrol_capture(77)),
            Err(MatchError::AlreadyEnrolled(77))
        );
        m.remove(77).unwrap();
        assert_eq!(found(77, 3).hit, None);
    }

    /// A search whose deadline passes gives up with `DeadlineExceeded` — whenever it passes,
    /// from before the search starts to midway — and otherwise answers exactly as without a
    /// deadline: never a partial answer, never a "no hit" for want of time.
    #[test]
    fn a_search_past_its_deadline_gives_up_and_decides_nothing() {
        use std::time::Duration;
        let m = ExhaustiveMatcher::new(3);
        let prints: Vec<(SubjectId, Tenprint)> =
            (1..=2000).map(|p| (p, enrol_capture(p))).collect();
        m.enroll_many(&prints).unwrap();
        let q = probe(5, 1);
        let want = m.search(&q, 3).unwrap();
        assert_eq!(want.hit.map(|c| c.subject), Some(5));
        let (mut gave_up, mut answered) = (0, 0);
        for micros in [
            0u64, 20, 50, 100, 200, 400, 800, 1_600, 3_200, 6_400, 60_000_000,
        ] {
            let deadline = Instant::now() + Duration::from_micros(micros);
            match m.search_before(&q, 3, Some(deadline)) {
                Err(MatchError::DeadlineExceeded) => gave_up += 1,
                Ok(r) => {
                    assert_eq!(r, want, "with {micros} µs");
                    answered += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(
            gave_up >= 1 && answered >= 1,
            "{gave_up} gave up, {answered} answered"
        );
        assert_eq!(
            m.search_before(&q, 3, Some(Instant::now())),
            Err(MatchError::DeadlineExceeded)
        );
        assert_eq!(m.search_before(&q, 3, None).unwrap(), want);
    }

    /// A threshold calibrated from the gallery for an FPIR holds on strangers the calibration
    /// never saw, still finds the mates, and a looser target gives a lower threshold. Bad
    /// targets are refused and change nothing.
    #[test]
    fn calibrated_threshold_holds_its_fpir_on_fresh_strangers() {
        let m = ExhaustiveMatcher::new(3);
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

    /// Compacting after removals drops the removed entries: the gallery is then the one the
    /// other prints alone would have given — arrays, index bytes and answers — with the
    /// memory back, and a removed id can be enrolled again.
    #[test]
    fn compact_drops_removed_subjects_as_if_never_enrolled() {
        let (purged, fresh) = (ExhaustiveMatcher::new(3), ExhaustiveMatcher::new(3));
        let prints: Vec<(SubjectId, Tenprint)> = (1..=600).map(|p| (p, enrol_capture(p))).collect();
        purged.enroll_many(&prints).unwrap();
        let gone = |p: u64| p.is_multiple_of(4);
        for p in (1..=600).filter(|p| gone(*p)) {
            purged.remove(p).unwrap();
        }
        let before = purged.heap_bytes();
        purged.compact();
        let after = purged.heap_bytes();
        assert!(after.minutiae < before.minutiae, "{before:?} {after:?}");
        assert!(after.index < before.index, "{before:?} {after:?}");
        let kept: Vec<(SubjectId, Tenprint)> =
            prints.iter().filter(|(p, _)| !gone(*p)).cloned().collect();
        fresh.enroll_many(&kept).unwrap();
        fresh.compact();
        for (a, b) in purged.shards.iter().zip(&fresh.shards) {
            let (a, b) = (a.read().unwrap(), b.read().unwrap());
            assert_eq!(a.subjects, b.subjects);
            assert_eq!(a.starts, b.starts);
            assert_eq!(a.minutiae, b.minutiae);
            assert_eq!(a.counts, b.counts);
            assert_eq!(a.hists, b.hists);
            assert_eq!(a.word_counts, b.word_counts);
            assert_eq!(a.removed_count, 0);
            let (pa, pb) = (&a.postings, &b.postings);
            assert!(pa.offsets == pb.offsets && pa.counts == pb.counts && pa.bytes == pb.bytes);
        }
        assert_eq!((purged.len(), fresh.len()), (450, 450));
        for p in [1, 4, 302, 599, 600] {
            assert_eq!(
                purged.search(&probe(p, 1), 5).unwrap(),
                fresh.search(&probe(p, 1), 5).unwrap()
            );
        }
        purged.enroll(4, &enrol_capture(4)).unwrap();
        assert_eq!(
            purged
                .search(&probe(4, 2), 1)
                .unwrap()
                .hit
                .map(|c| c.subject),
            Some(4)
        );
    }

    /// Removals while other threads search: a search that starts after a removal returned
    /// never names that subject, and the subjects not removed are still found.
    #[test]
    fn removal_while_searching_is_seen_by_every_later_search() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let m = ExhaustiveMatcher::new(4);
        let prints: Vec<(SubjectId, Tenprint)> = (1..=300).map(|p| (p, enrol_capture(p))).collect();
        m.enroll_many(&prints).unwrap();
        let gone: Mutex<HashSet<SubjectId>> = Mutex::new(HashSet::new());
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            for t in 0..2u64 {
                let (m, gone, done) = (&m, &gone, &done);
                scope.spawn(move || {
                    let mut i = 0u64;
                    while !done.load(Ordering::Acquire) && i < 400 {
                        let p = 1 + (i * 7 + t * 3) % 300;
                        let before = gone.lock().unwrap().clone();
                        let r = m.search(&probe(p, i % 5), 3).unwrap();
                        for c in &r.candidates {
                            assert!(
                                !before.contains(&c.subject),
                                "removed {} returned",
                                c.subject
                            );
                        }
                        if !before.contains(&p) && p % 2 == 1 {
                            // Odd subjects are never removed.
                            assert_eq!(r.hit.map(|c| c.subject), Some(p));
                        }
                        i += 1;
                    }
                });
            }
            for p in (2..=300).step_by(2) {
                m.remove(p).unwrap();
                gone.lock().unwrap().insert(p);
            }
            done.store(true, Ordering::Release);
        });
        assert_eq!(m.len(), 150);
        for p in [2, 100, 300] {
            let r = m.search(&probe(p, 0), 5).unwrap();
            assert!(r.candidates.iter().all(|c| c.subject % 2 == 1), "{r:?}");
        }
    }

    #[test]
    fn shortlist_ranks_place_the_mate_in_the_shortlist() {
        let m = ExhaustiveMatcher::new(3);
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

    #[test]
    fn the_cascade_pairs_only_subjects_the_word_score_kept() {
        let m = ExhaustiveMatcher::new(2).with_cascade(5);
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

    #[test]
    fn bulk_enrolment_is_sequential_enrolment() {
        let (one, many) = (ExhaustiveMatcher::new(3), ExhaustiveMatcher::new(3));
        // Enough prints for each shard to take several batches (see `Postings::batch_postings`).
        let mut prints: Vec<(SubjectId, Tenprint)> =
            (1..=1200).map(|p| (p, enrol_capture(p))).collect();
        prints.push((7, enrol_capture(8))); // a duplicate id: refused, in order
        prints.push((500, enrol_capture(500)));
        let mut first_error = None;
        for (p, t) in &prints {
            if let Err(e) = one.enroll(*p, t) {
                first_error = Some(e);
                break;
            }
        }
        assert_eq!(many.enroll_many(&prints).err(), first_error);
        assert_eq!(many.len(), 1200);
        for p in [1, 60, 1199] {
            let q = probe(p, 3);
            assert_eq!(one.search(&q, 5).unwrap(), many.search(&q, 5).unwrap());
            assert_eq!(
                one.shortlist_ranks(&q, p).unwrap(),
                many.shortlist_ranks(&q, p).unwrap()
            );
        }
    }

    proptest! {
        /// A posting list decodes to the entries encoded, whatever its gaps (0 to 31 bits:
        /// blocks of every width) and length (whole and partial blocks), between other lists
        /// in one array with the padding after it.
        #[test]
        fn posting_lists_decode_as_encoded(gaps in proptest::collection::vec(prop_oneof![0u32..2, 0u32..300, 0u32..70_000, 0u32..u32::MAX / 256], 0..150)) {
            let mut entries = vec![];
            let mut next = 0u32;
            for g in &gaps {
                let e = next.saturating_add(*g).min(u32::MAX - 1);
                entries.push(e);
                next = e + 1;
                if next == u32::MAX {
                    break;
                }
            }
            let mut bytes = vec![];
            encode_list(&mut bytes, &[3, 9, 4_000_000]); // a list before
            let lo = bytes.len();
            encode_list(&mut bytes, &entries);
            encode_list(&mut bytes, &[0]); // and after
            bytes.extend_from_slice(&[0; PAD]);
            let mut got = vec![];
            decode(&bytes, lo, entries.len(), |e| got.push(e as u32));
            prop_assert_eq!(got, entries);
        }

        /// Folding the tail in as it grows (each fold re-encoding only the last block of the
        /// lists it extends, some after the last entries were given back and read off the
        /// lists again), or merging sorted batches as a bulk load does, gives the same
        /// index, byte for byte, as one fold at the end: every list encoded afresh. Lists run
        /// to hundreds of entries, so most folds append to a partial block, some to a full one.
        #[test]
        fn folds_extend_lists_as_a_fresh_encoding_would(
            postings in proptest::collection::vec(proptest::collection::vec(0u32..40, 0..12), 1..400),
            folds in proptest::collection::vec(0usize..400, 0..12),
        ) {
            let (mut stepwise, mut batched, mut once) =
                (Postings::default(), Postings::default(), Postings::default());
            let mut batch = vec![];
            for (entry, keys) in postings.iter().enumerate() {
                let mut keys = keys.clone();
                keys.sort_unstable();
                keys.dedup();
                let e = entry as u32 * 7;
                for k in keys {
                    // Keys spread over the key space, some in the last slot.
                    let key = k * (KEYS as u32 / 40) + k % 3;
                    stepwise.push(key, e, &[]);
                    once.push(key, e, &[]);
                    batch.push((key as u64) << 32 | e as u64);
                }
                if folds.contains(&entry) {
                    stepwise.fold(&[]);
                    if entry % 2 == 0 {
                        // As `compact` does: the next fold reads the last entries off the lists.
                        stepwise.release_spare();
                    }
                    batch.sort_unstable();
                    batched.extend_sorted(&batch, &[]);
                    batch.clear();
                }
            }
            stepwise.fold(&[]);
            batch.sort_unstable();
            batched.extend_sorted(&batch, &[]);
            once.fold(&[]);
            for p in [&stepwise, &batched] {
                prop_assert!(p.offsets == once.offsets);
                prop_assert!(p.counts == once.counts);
                prop_assert!(p.last.is_empty() || p.last == once.last);
                prop_assert!(p.bytes == once.bytes);
            }
        }

        /// The radix sort of a batch's postings is the ascending order when each key's entries
        /// come in ascending (as a batch appends them).
        #[test]
        fn batch_sort_is_the_ascending_order(keys in proptest::collection::vec(0u32..KEYS as u32, 0..3000)) {
            let mut v: Vec<u64> = keys
                .iter()
                .enumerate()
                .map(|(e, k)| (*k as u64) << 32 | e as u64)
                .collect();
            let mut want = v.clone();
            want.sort_unstable();
            sort_by_key(&mut v);
            prop_assert_eq!(v, want);
        }

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
        let m = ExhaustiveMatcher::new(2);
        for p in 1..=40 {
            m.enroll(p, &enrol_capture(p)).unwrap();
        }
        let bulk: Vec<(SubjectId, Tenprint)> = (41..=80).map(|p| (p, enrol_capture(p))).collect();
        m.enroll_many(&bulk).unwrap();
        let check = |m: &ExhaustiveMatcher| {
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

    #[test]
    fn partial_probes_still_identify() {
        let m = ExhaustiveMatcher::new(2);
        for p in 1..=200 {
            m.enroll(p, &enrol_capture(p)).unwrap();
        }
        // Only four fingers captured (e.g. a damaged card).
        let mut t = probe(42, 1);
        t.fingers.truncate(4);
        assert_eq!(m.search(&t, 1).unwrap().hit.map(|c| c.subject), Some(42));
    }

    #[test]
    fn refuses_duplicates_and_empty_prints() {
        let m = ExhaustiveMatcher::new(2);
        m.enroll(1, &enrol_capture(1)).unwrap();
        assert_eq!(
            m.enroll(1, &enrol_capture(1)),
            Err(MatchError::AlreadyEnrolled(1))
        );
        assert_eq!(
            m.search(&Tenprint::default(), 1),
            Err(MatchError::EmptyProbe)
        );
        assert_eq!(
            m.enroll(2, &Tenprint::default()),
            Err(MatchError::EmptyProbe)
        );
    }

    #[test]
    fn postings_walked_do_not_depend_on_sharding() {
        let (one, many) = (ExhaustiveMatcher::new(1), ExhaustiveMatcher::new(3));
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

    /// A merge drops the lists of the keys it is given as dropped, for good (later postings
    /// under them are not kept either), and keeps the rest whole.
    #[test]
    fn merges_drop_the_lists_of_dropped_keys_for_good() {
        let fill = |postings: &mut Postings, entries: std::ops::Range<u32>, dropped: &[u64]| {
            for e in entries {
                if e % 5 == 0 {
                    postings.push(7, e, dropped);
                }
                if e % 50 == 0 {
                    postings.push(8, e, dropped);
                }
            }
        };
        let listed = |postings: &Postings, k: u32| {
            let mut v = vec![];
            postings.for_each(k, |e| v.push(e as u32));
            v
        };
        let mut dropped = vec![0u64; KEYS.div_ceil(64)];
        let mut p = Postings::default();
        fill(&mut p, 0..1000, &dropped);
        p.fold(&dropped);
        assert_eq!(listed(&p, 7).len(), 200);
        dropped[0] |= 1 << 7;
        fill(&mut p, 1000..1100, &dropped);
        // Postings under a dropped key are not kept; the others are.
        assert_eq!((p.len_hint(7), p.len_hint(8)), (200, 22));
        p.fold(&dropped);
        assert_eq!(listed(&p, 7), Vec::<u32>::new());
        assert_eq!(p.len_hint(7), 0);
        assert_eq!(
            listed(&p, 8),
            (0..1100).filter(|e| e % 50 == 0).collect::<Vec<u32>>()
        );
        fill(&mut p, 1100..1300, &dropped);
        p.fold(&dropped);
        assert_eq!(listed(&p, 7), Vec::<u32>::new());
        assert_eq!(
            listed(&p, 8),
            (0..1300).filter(|e| e % 50 == 0).collect::<Vec<u32>>()
        );
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
        let one = ExhaustiveMatcher::new(1);
        one.enroll_many(&prints).unwrap();
        let three = ExhaustiveMatcher::new(3);
        three.enroll_many(&prints).unwrap();
        // The last prints one at a time, as the gateway's Enroll does.
        let stepwise = ExhaustiveMatcher::new(3);
        let (bulk, single) = prints.split_at(prints.len() - 300);
        stepwise.enroll_many(bulk).unwrap();
        for (p, t) in single {
            stepwise.enroll(*p, t).unwrap();
        }
        let dropped = |m: &ExhaustiveMatcher| m.vocabulary.read().unwrap().dropped.clone();
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
        let m = ExhaustiveMatcher::new(2);
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
            let m = ExhaustiveMatcher::new(shards)
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

    #[test]
    fn finger_scores_separate_genuine_from_impostor() {
        let a = probe(5, 1).fingers[1].clone();
        let b = probe(5, 2).fingers[1].clone();
        let c = probe(6, 1).fingers[1].clone();
        assert!(compare_fingers(&a, &b) > 0.15);
        assert!(compare_fingers(&a, &c) < 0.1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8))]
        /// The sharded search ranks exactly as a single-shard scan of the same gallery.
        #[test]
        fn sharding_does_not_change_the_answer(shards in 2usize..6, people in 20u64..80, who in 0u64..100) {
            let one = ExhaustiveMatcher::new(1);
            let many = ExhaustiveMatcher::new(shards);
            for p in 1..=people {
                one.enroll(p, &enrol_capture(p)).unwrap();
                many.enroll(p, &enrol_capture(p)).unwrap();
            }
            let q = probe(1 + who % people, who);
            prop_assert_eq!(one.search(&q, 5).unwrap(), many.search(&q, 5).unwrap());
        }

        /// The two-stage search decides as pairing every enrolled subject would: the same
        /// hit (or none), mated probe or stranger, whatever the shard count. A shortlist that
        /// lost the mate, or a fused score that ranked it out, fails this.
        #[test]
        fn the_shortlist_decides_as_the_exhaustive_scan(shards in 1usize..5, people in 20u64..120, who in 0u64..200, stranger in proptest::bool::ANY) {
            let m = ExhaustiveMatcher::new(shards);
            for p in 1..=people {
                m.enroll(p, &enrol_capture(p)).unwrap();
            }
            let q = if stranger { probe(10_000 + who, 1) } else { probe(1 + who % people, who) };
            let codes = ProbeCodes::new(&q).unwrap();
            let mut best: Option<Candidate> = None;
            for shard in &m.shards {
                let shard = shard.read().unwrap();
                for e in 0..shard.len() {
                    let score: f32 = codes
                        .fingers
                        .iter()
                        .map(|(s, p)| compare(p, &shard.finger(e, *s)))
                        .fold(0.0, |a, b| a + b);
                    let c = Candidate { subject: shard.subjects[e], score };
                    if best.is_none_or(|b| top_k(vec![b, c], 1)[0] == c) {
                        best = Some(c);
                    }
                }
            }
            let scan_hit = best.filter(|c| c.score >= THRESHOLD);
            prop_assert_eq!(m.search(&q, 1).unwrap().hit, scan_hit);
        }

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
                .map(|f| (slot(f.position).unwrap(), prepare(points(f))))
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

        /// Stage 2 pairs exactly the finger enrolment saw: unpacking a gallery finger and
        /// recomputing its edges gives the template's own points and edges.
        #[test]
        fn packed_gallery_fingers_prepare_as_the_template(p in 1u64..10_000, f in 0usize..10) {
            let t = enrol_capture(p);
            let mut shard = Shard::default();
            shard.push(p, enrolled_fingers(&t).unwrap(), &[]);
            let finger = &t.fingers[f];
            let s = slot(finger.position).unwrap();
            prop_assert_eq!(shard.finger(0, s), prepare(points(finger)));
        }

        /// Delta-encoded posting lists give back exactly the entries pushed, in order.
        #[test]
        fn posting_lists_round_trip(gaps in proptest::collection::vec(0u32..100_000, 0..200), fold_after in 0usize..200) {
            let mut postings = Postings::default();
            let mut e = 0u32;
            let mut want = vec![];
            for (i, g) in gaps.iter().enumerate() {
                e += g;
                postings.push(7, e, &[]);
                want.push(e as usize);
                e += 1;
                if i == fold_after {
                    postings.fold(&[]);
                }
            }
            let mut got = vec![];
            postings.for_each(7, |x| got.push(x));
            prop_assert_eq!(&got, &want);
            postings.fold(&[]);
            got.clear();
            postings.for_each(7, |x| got.push(x));
            prop_assert_eq!(got, want);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// The byte histogram codes give every entry exactly the sum of per-finger code dot
        /// products, and each finger's scaled dot product stays within 0.04 of the float
        /// cosine it stands for.
        #[test]
        fn histogram_codes_score_as_the_float_cosine(people in 2u64..30, who in 0u64..1000, keep in 1usize..=10) {
            let mut shard = Shard::default();
            let mut prints = vec![];
            for p in 1..=people {
                let t = enrol_capture(p);
                shard.push(p, enrolled_fingers(&t).unwrap(), &[]);
                prints.push(t);
            }
            let mut q = probe(1 + who % people, who);
            q.fingers.truncate(keep);
            let codes: Vec<(usize, Code)> = q
                .fingers
                .iter()
                .map(|f| (slot(f.position).unwrap(), quantise(&histogram(&points(f), &mut Scratch::default()))))
                .collect();
            let scores = shard.histogram_scores(&codes);
            for (t, score) in prints.iter().zip(scores) {
                let mut want = 0u32;
                for f in &q.fingers {
                    let g = t.fingers.iter().find(|g| g.position == f.position).unwrap();
                    let (hp, hg) = (
                        histogram(&points(f), &mut Scratch::default()),
                        histogram(&points(g), &mut Scratch::default()),
                    );
                    let exact: u32 = quantise(&hp)
                        .iter()
                        .zip(quantise(&hg))
                        .map(|(a, b)| *a as u32 * b as u32)
                        .sum();
                    let cosine: f32 = hp.iter().zip(&hg).map(|(a, b)| a * b).sum();
                    prop_assert!((exact as f32 / (HIST_SCALE * HIST_SCALE) - cosine).abs() <= 0.04);
                    want += exact;
                }
                prop_assert_eq!(score, want);
            }
        }
    }

    /// Edges as first written: every square distance computed and stably sorted.
    fn prepare_reference(points: Vec<Point>) -> Prepared {
        let mut edges = Vec::new();
        for (i, p) in points.iter().enumerate() {
            let mut near: Vec<(f32, usize)> = Vec::new();
            for (j, q) in points.iter().enumerate() {
                if i != j {
                    near.push(((p.x - q.x).powi(2) + (p.y - q.y).powi(2), j));
                }
            }
            near.sort_by(|a, b| a.0.total_cmp(&b.0));
            for &(d2, j) in near.iter().take(NEIGHBOURS) {
                let d = d2.sqrt();
                let q = points[j];
                let dir = crate::fmath::atan2(q.y - p.y, q.x - p.x);
                edges.push(Edge {
                    from: i as u16,
                    kinds: p.k * 2 + q.k,
                    len: d,
                    alpha: (dir - p.a).rem_euclid(2.0 * PI),
                    beta: (q.a - p.a).rem_euclid(2.0 * PI),
                });
            }
        }
        edges.sort_by(|a, b| a.len.total_cmp(&b.len));
        Prepared { points, edges }
    }

    /// Where the CPU has AVX2, enrolment's edges, words and histogram codes compiled for it
    /// are the portable code's, bit for bit (elsewhere there is nothing to compare).
    #[test]
    fn avx2_finger_codes_are_the_portable_ones() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            for p in 0..300 {
                for f in probe(p, 3).fingers {
                    let pts = points(&f);
                    let (mut a, mut b) = (Scratch::default(), Scratch::default());
                    let (mut wa, mut wb) = (vec![], vec![]);
                    let ha = finger_codes_portable(&pts, &mut a, &mut wa);
                    // SAFETY: the CPU has AVX2, checked above.
                    let hb = unsafe { finger_codes_avx2(&pts, &mut b, &mut wb) };
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

    /// [`compare`] as stage 2 runs it where the CPU has AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn compare_avx2(a: &Prepared, b: &Prepared) -> f32 {
        compare_in::<true>(a, b, &mut CompareWork::default())
    }

    /// Stage 2 compiled for AVX2 scores mated and non-mated entries as the portable build
    /// does, to the bit (and prints the two builds' times, alternated, with `--nocapture`).
    #[test]
    fn avx2_stage2_scores_are_the_portable_ones() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            let m = ExhaustiveMatcher::new(1);
            for p in 1..=60 {
                m.enroll(p, &enrol_capture(p)).unwrap();
            }
            let shard = m.shards[0].read().unwrap();
            let probes: Vec<ProbeCodes> = (1..=20)
                .map(|p| ProbeCodes::new(&probe(p, 9)).unwrap())
                .collect();
            let (mut portable, mut avx2) = (Duration::ZERO, Duration::ZERO);
            let mut work = Stage2Work::default();
            for _ in 0..3 {
                let t = Instant::now();
                let mut a: Vec<u32> = Vec::new();
                for c in &probes {
                    for e in 0..60 {
                        a.push(stage2_score_portable(&c.fingers, &shard, e, &mut work).to_bits());
                    }
                }
                portable += t.elapsed();
                let t = Instant::now();
                // SAFETY: the CPU has AVX2, checked above.
                let mut b: Vec<u32> = Vec::new();
                for c in &probes {
                    for e in 0..60 {
                        let x = unsafe { stage2_score_avx2(&c.fingers, &shard, e, &mut work) };
                        b.push(x.to_bits());
                    }
                }
                avx2 += t.elapsed();
                assert_eq!(a, b);
                // Each probe's mate among the 60 scores far above the others.
                assert!(a.iter().any(|&x| f32::from_bits(x) > 2.0));
            }
            println!("stage 2, 3 x 1,200 entries: portable {portable:?}, AVX2 {avx2:?}");
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
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut got = Vec::new();
                // SAFETY: the CPU has AVX2, checked just above.
                unsafe { pattern_over_avx2(&patterns, &t, bar, &mut got) };
                prop_assert_eq!(got, want);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The vectorised pairing stage gives every finger pair, mated or not, exactly the
        /// score of the scalar one, and edges come out as the sort-based preparation's.
        #[test]
        fn pairing_is_exactly_the_scalar_reference(p in 1u64..5_000, q in 1u64..5_000, f in 0usize..10, seed in 0u64..1_000) {
            let a = &probe(p, seed).fingers[f];
            for b in [&probe(p, seed + 1).fingers[f], &probe(q, seed + 2).fingers[f]] {
                let (pa, pb) = (prepare(points(a)), prepare(points(b)));
                prop_assert_eq!(&pa, &prepare_reference(points(a)));
                prop_assert_eq!(&pb, &prepare_reference(points(b)));
                let want = compare_reference(&pa, &pb).to_bits();
                prop_assert_eq!(compare(&pa, &pb).to_bits(), want);
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2, checked just above.
                    prop_assert_eq!(unsafe { compare_avx2(&pa, &pb) }.to_bits(), want);
                }
            }
        }

        /// Neighbours are the reference's on any points: crowded ones (many equal distances,
        /// and equal points), ones spread to the packed range's corners (the largest square
        /// distances), and fingers past the 32-bit keys' limit.
        #[test]
        fn neighbours_are_the_references_with_ties_far_points_and_large_fingers(
            raw in prop::collection::vec((0u16..=MAX_COORD, 0u16..=MAX_COORD, 0u16..360, 0u8..2), 0..300),
            crowd in 0u16..4,
        ) {
            // crowd 0: anywhere in the packed range; else within 4^crowd px (ties are common).
            let span = if crowd == 0 { MAX_COORD + 1 } else { 4u16.pow(crowd as u32) };
            let points: Vec<Point> = raw
                .iter()
                .map(|&(x, y, a, k)| point(x % span, y % span, a, k))
                .collect();
            prop_assert_eq!(prepare(points.clone()), prepare_reference(points));
        }

        /// The remainder without a remainder call equals `rem_euclid` to the bit.
        #[test]
        fn relative_direction_remainder_is_exact(x in -(4.0 * PI)..(4.0 * PI)) {
            let x = if x.abs() < 4.0 * PI { x } else { 0.0 };
            prop_assert_eq!(rem_tau(x).to_bits(), x.rem_euclid(2.0 * PI).to_bits());
        }

        /// The branch-free angle difference equals `angdiff` to the bit over its domain.
        #[test]
        fn branch_free_angle_difference_is_exact(a in 0f32..(2.0 * PI), r in -(2.0 * PI)..(2.0 * PI), b in 0f32..=(2.0 * PI)) {
            prop_assert_eq!(angdiff_near(a + r, b).to_bits(), angdiff(a + r, b).to_bits());
            prop_assert_eq!(angdiff_near(a, b).to_bits(), angdiff(a, b).to_bits());
        }

        /// Binary angles differ as the directions do, within a unit (each is rounded by at
        /// most half of one), across the wrap at 2π; so the edge test at [`EDGE_TURNS`] is
        /// the float test at [`EDGE_ANGLE`] but for pairs within 0.0002 rad of the bound.
        #[test]
        fn binary_angle_difference_is_the_angle_difference(a in 0f32..(2.0 * PI), b in 0f32..(2.0 * PI)) {
            let d = binary_angdiff(binary_angle(a), binary_angle(b)) as f32 / BINARY_ANGLE;
            prop_assert!((d - angdiff(a, b)).abs() <= 1.0 / BINARY_ANGLE + 1e-6, "{d} against {}", angdiff(a, b));
            let (near, far) = (EDGE_ANGLE - 2e-4, EDGE_ANGLE + 2e-4);
            let within = binary_angdiff(binary_angle(a), binary_angle(b)) <= EDGE_TURNS;
            if angdiff(a, b) <= near {
                prop_assert!(within);
            }
            if angdiff(a, b) >= far {
                prop_assert!(!within);
            }
        }
    }

    #[test]
    fn relative_direction_remainder_is_exact_at_the_edges() {
        const TAU: f32 = 2.0 * PI;
        for x in [
            0.0,
            -0.0,
            1e-9,
            -1e-9,
            TAU,
            -TAU,
            TAU.next_down(),
            TAU.next_up(),
            -TAU.next_down(),
            -TAU.next_up(),
            PI,
            -PI,
            -3.0 * PI,
            (2.0 * TAU).next_down(),
            -(2.0 * TAU).next_down(),
        ] {
            assert_eq!(rem_tau(x).to_bits(), x.rem_euclid(TAU).to_bits(), "{x}");
        }
    }

    #[test]
    fn branch_free_angle_difference_is_exact_at_the_edges() {
        const TAU: f32 = 2.0 * PI;
        let edge = [
            0.0,
            1e-9,
            -1e-9,
            TAU,
            -TAU,
            TAU.next_down(),
            TAU.next_up(),
            -TAU.next_down(),
            -TAU.next_up(),
            PI,
            -PI,
            2.0 * TAU.next_down(),
            -(2.0 * TAU).next_down(),
        ];
        for d in edge {
            for b in [0.0, 1.0, TAU.next_down(), TAU] {
                let a = d + b;
                assert_eq!(
                    angdiff_near(a, b).to_bits(),
                    angdiff(a, b).to_bits(),
                    "{a} - {b}"
                );
            }
        }
    }

    // The pairing stage as first written (scalar, branching): the reference the
    // vectorised one must equal to the bit.
    fn close_reference(p: Point, q: Point) -> bool {
        (p.x - q.x).powi(2) + (p.y - q.y).powi(2) <= PAIR_DIST * PAIR_DIST
            && angdiff(p.a, q.a) <= PAIR_ANGLE
    }

    /// Minutiae of `a` paired with `b` under `t`, greedily, one-to-one.
    fn paired_reference(a: &Prepared, b: &Prepared, t: &Align) -> usize {
        let mut used = [false; 512];
        let mut n = 0;
        for p in &a.points {
            let p = t.apply(*p);
            let mut best: Option<(f32, usize)> = None;
            for (j, q) in b.points.iter().enumerate() {
                if j < used.len() && used[j] || !close_reference(p, *q) {
                    continue;
                }
                let d = (p.x - q.x).powi(2) + (p.y - q.y).powi(2);
                if best.is_none_or(|(bd, _)| d < bd) {
                    best = Some((d, j));
                }
            }
            if let Some((_, j)) = best {
                if j < used.len() {
                    used[j] = true;
                }
                n += 1;
            }
        }
        n
    }

    /// Similarity of two fingers, 0..=1.
    fn compare_reference(a: &Prepared, b: &Prepared) -> f32 {
        if a.points.is_empty() || b.points.is_empty() {
            return 0.0;
        }
        // Matched edge pairs → candidate alignments.
        let mut proposals: Vec<(Align, usize, usize)> = Vec::new();
        for ea in &a.edges {
            let lo = b.edges.partition_point(|e| e.len < ea.len - EDGE_DIST);
            for eb in &b.edges[lo..] {
                if eb.len > ea.len + EDGE_DIST {
                    break;
                }
                let within = |a: f32, b: f32| {
                    let d = (binary_angle(a) as i32 - binary_angle(b) as i32).rem_euclid(65_536);
                    d.min(65_536 - d) <= EDGE_TURNS as i32
                };
                if within(ea.alpha, eb.alpha) && within(ea.beta, eb.beta) {
                    let (i, j) = (ea.from as usize, eb.from as usize);
                    proposals.push((Align::from_pair(a.points[i], b.points[j]), i, j));
                    if proposals.len() >= 256 {
                        break;
                    }
                }
            }
        }
        if proposals.is_empty() {
            return 0.0;
        }
        // The alignment most other proposals agree with (their minutiae land together).
        let mut best = (0usize, 0usize);
        for (k, (t, _, _)) in proposals.iter().enumerate().take(32) {
            let votes = proposals
                .iter()
                .filter(|(_, i, j)| close_reference(t.apply(a.points[*i]), b.points[*j]))
                .count();
            if votes > best.0 {
                best = (votes, k);
            }
        }
        let m = paired_reference(a, b, &proposals[best.1].0) as f32;
        (m * m) / (a.points.len() as f32 * b.points.len() as f32)
    }

    /// Stage 1's word score by a scan of each gallery finger's own words: the reference the
    /// index is checked against.
    fn shortlist_score(probe: &[FingerKeys], print: &Tenprint) -> f32 {
        let mut s = 0.0;
        for fk in probe {
            let (sl, keys) = (&fk.slot, &fk.keys);
            if let Some(g) = print.fingers.iter().find(|g| slot(g.position) == Some(*sl)) {
                let words = words(&prepare(points(g)).edges);
                let common: u32 = words
                    .iter()
                    .filter_map(|w| keys.iter().find(|(k, _)| *k == key(*sl, *w)))
                    .map(|(_, weight)| *weight as u32)
                    .sum();
                s += common as f32 / (words.len().max(1) as f32).sqrt();
            }
        }
        s
    }

    #[test]
    fn refuses_minutiae_outside_the_packed_range() {
        let m = ExhaustiveMatcher::new(1);
        let mut t = enrol_capture(1);
        t.fingers[2].minutiae[4].x = MAX_COORD + 1;
        let err = m.enroll(1, &t).unwrap_err().to_string();
        assert!(err.contains("fingers[2].minutiae[4]"), "{err}");
        assert_eq!(m.len(), 0);
        // Refused without being marked enrolled: the corrected print can be enrolled.
        m.enroll(1, &enrol_capture(1)).unwrap();
    }
}
