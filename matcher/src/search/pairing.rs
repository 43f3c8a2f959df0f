//! Stage 2, minutiae pairing, for each shortlisted subject and each finger position both
//! probe and gallery have: probe and gallery edges ([`super::edges`]) that match in length and
//! both relative directions each propose an alignment; the alignment most other matched pairs
//! agree with is applied to the whole probe finger, and minutiae are paired greedily within a
//! distance and direction tolerance. Finger score = paired² / (n_probe · n_gallery); a
//! subject's score is the sum over fingers.
//!
//! Most of a search's time in a large gallery is here, so the loops are written to vectorise,
//! and the whole stage runs compiled for AVX2 where the CPU has it (the dispatch and the
//! hand-written edge window are in [`super::simd`]). Every rewrite gives the score of the
//! plain reference (`compare_reference` in the tests) to the bit.

use super::edges::{Edge, Prepared, Scratch, prepare};
use super::geometry::{BINARY_ANGLE, Point, angdiff_near, binary_angle, used_points};
use super::shard::Shard;
use super::simd::{EdgeWindow, Portable};
use crate::template::FingerTemplate;
use std::cell::RefCell;

/// Pairing tolerances: position (pixels) and direction (radians).
pub(super) const PAIR_DIST: f32 = 15.0;
pub(super) const PAIR_ANGLE: f32 = 0.45;
/// Edge matching tolerances.
pub(super) const EDGE_DIST: f32 = 8.0;
const EDGE_ANGLE: f32 = 0.35;
/// [`EDGE_ANGLE`] in binary-angle units: 3,651 (0.35004 rad).
pub(super) const EDGE_TURNS: u16 = (EDGE_ANGLE * BINARY_ANGLE + 0.5) as u16;

/// A rigid transform: rotate by `r` about the origin, then translate.
#[derive(Clone, Copy)]
pub(super) struct Align {
    c: f32,
    s: f32,
    r: f32,
    tx: f32,
    ty: f32,
}

impl Align {
    pub(super) fn from_pair(a: Point, b: Point) -> Align {
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
    pub(super) fn apply(&self, p: Point) -> Point {
        Point {
            x: self.c * p.x - self.s * p.y + self.tx,
            y: self.s * p.x + self.c * p.y + self.ty,
            a: p.a + self.r,
            k: p.k,
        }
    }
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
pub(super) fn compare(a: &Prepared, b: &Prepared) -> f32 {
    compare_in(a, b, &mut CompareWork::default(), Portable)
}

/// Working memory for [`compare_in`]: stage 2 keeps one per thread, so its comparisons
/// allocate nothing (fresh buffers, ~15 a comparison, had been a twentieth of a search).
#[derive(Default)]
pub(super) struct CompareWork {
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

/// The gallery finger's side of [`compare_in`]'s edge windows: its edges sorted by length,
/// and their two relative directions as binary angles, each with 16 lanes past the last edge
/// (so a window can read 16 at once from any edge).
pub(super) struct GalleryEdges<'a> {
    pub(super) alpha: &'a [u16],
    pub(super) beta: &'a [u16],
    pub(super) edges: &'a [Edge],
}

/// The probe edge a window is matched against: its two relative directions as binary angles
/// and the minutia it starts from.
#[derive(Clone, Copy)]
pub(super) struct ProbeEdge {
    pub(super) alpha: u16,
    pub(super) beta: u16,
    pub(super) from: u16,
}

/// [`compare`] in working memory `w`, inlined where it is called (see [`stage2_score`]).
/// Each probe edge's window of gallery edges is matched by `window` ([`Portable`], or the
/// AVX2 window where the CPU has it: see [`super::simd`]); the same pairs in the same order.
#[inline(always)]
pub(super) fn compare_in<W: EdgeWindow>(
    a: &Prepared,
    b: &Prepared,
    w: &mut CompareWork,
    window: W,
) -> f32 {
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
    // (With 16 lanes more, for the AVX2 window's whole-vector reads.)
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
    window.size_flags(ok, b.edges.len());
    pairs.clear();
    let gallery_edges = GalleryEdges {
        alpha,
        beta,
        edges: &b.edges,
    };
    let (mut lo, mut hi) = (0, 0);
    // The window's ends move by counting the lengths they pass (see [`passed`]); the
    // infinite lengths past the last edge stop both there.
    for ea in &a.edges {
        lo = passed(lens, lo, |l| l < ea.len - EDGE_DIST);
        hi = passed(lens, hi.max(lo), |l| l <= ea.len + EDGE_DIST);
        let probe = ProbeEdge {
            alpha: binary_angle(ea.alpha),
            beta: binary_angle(ea.beta),
            from: ea.from,
        };
        window.matches(&gallery_edges, ok, lo..hi, probe, pairs);
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

/// How stage 2 reads a subject's fingers against the probe's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reading {
    /// Position by position.
    Straight,
    /// Also with the fingers at slots `slot` and `slot + 1` read crosswise (see
    /// [`super::swaps`]); the higher sum is the score.
    Swapped { slot: usize },
}

/// Stage 2's score of entry `e` for the probe's fingers: the sum of [`compare`] over the
/// fingers both have (a gallery finger prepared once, however many probe fingers share its
/// slot), read as `reading` says. (A subject listed for its swap hypothesis alone is paired
/// whole however its two fingers read crosswise: dropping those whose crosswise reading did
/// not score higher saved a fifth of the hypotheses' cost and lost two poor mates in 1,000,
/// whose straight reading alone would have been a hit.) Most of a search at 1,000,000
/// identities, so where the CPU has AVX2 the same code runs compiled for it (see
/// [`super::simd::stage2_score`]): twice the lanes in the vectorised loops, the same
/// operations on the same values, so the same score to the bit (a test checks it).
pub(super) fn stage2_score(
    probe: &[(usize, Prepared)],
    shard: &Shard,
    e: usize,
    reading: Reading,
) -> f32 {
    thread_local! {
        static WORK: RefCell<Stage2Work> = RefCell::default();
    }
    WORK.with_borrow_mut(|w| super::simd::stage2_score(probe, shard, e, reading, w))
}

/// Stage 2's working memory: the gallery finger being compared and what preparing and
/// comparing it need. [`stage2_score`] keeps one per thread, so it allocates nothing once
/// the buffers have grown to a finger's size.
#[derive(Default)]
pub(super) struct Stage2Work {
    gallery: Prepared,
    scratch: Scratch,
    keys: Vec<u64>,
    compare: CompareWork,
}

/// [`stage2_score`] in working memory `w`, with `window` as [`compare_in`]'s edge window.
#[inline(always)]
pub(super) fn stage2_score_with<W: EdgeWindow>(
    probe: &[(usize, Prepared)],
    shard: &Shard,
    e: usize,
    reading: Reading,
    w: &mut Stage2Work,
    window: W,
) -> f32 {
    let Reading::Swapped { slot: a } = reading else {
        return sum_over(probe, shard, e, w, window, |_| true, |s| s, |_| false).0;
    };
    let pair = |s| s == a || s == a + 1;
    let other = |s| if s == a { a + 1 } else { a };
    // The straight reading summed as [`Reading::Straight`] sums it (so a hypothesis that does
    // not win leaves the score to the bit), with what its two slots add.
    let (straight, pair_straight) = sum_over(probe, shard, e, w, window, |_| true, |s| s, pair);
    let crosswise = sum_over(probe, shard, e, w, window, pair, other, |_| false).0;
    if crosswise > pair_straight {
        straight - pair_straight + crosswise
    } else {
        straight
    }
}

/// The sum of [`compare_in`] over the probe's fingers whose slot `keep` accepts, each against
/// the gallery's finger at `to(slot)`, a gallery finger prepared once for consecutive probe
/// fingers in its slot; and the part of it from the slots `part` accepts. A function inlined
/// where it is called rather than a closure, so it is compiled with its caller's target
/// features (a closure is not inlined, and ran stage 2 without AVX2, a quarter slower).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn sum_over<W: EdgeWindow>(
    probe: &[(usize, Prepared)],
    shard: &Shard,
    e: usize,
    w: &mut Stage2Work,
    window: W,
    keep: impl Fn(usize) -> bool,
    to: impl Fn(usize) -> usize,
    part: impl Fn(usize) -> bool,
) -> (f32, f32) {
    let (mut score, mut of_part) = (0.0, 0.0);
    let mut prepared = None;
    for (s, p) in probe.iter().filter(|(s, _)| keep(*s)) {
        if prepared != Some(to(*s)) {
            shard.finger_into(e, to(*s), &mut w.gallery, &mut w.scratch, &mut w.keys);
            prepared = Some(to(*s));
        }
        let x = compare_in(p, &w.gallery, &mut w.compare, window);
        score += x;
        if part(*s) {
            of_part += x;
        }
    }
    (score, of_part)
}

/// 1:1 similarity of two finger templates (0..=1), of the minutiae a search uses (see
/// `geometry::used`), for calibration and tests.
pub fn compare_fingers(a: &FingerTemplate, b: &FingerTemplate) -> f32 {
    compare(&prepare(used_points(a)), &prepare(used_points(b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::geometry::{binary_angdiff, points};
    use crate::search::reference::{angdiff, compare_reference, prepare_reference, probe};
    #[cfg(target_arch = "x86_64")]
    use crate::search::simd::{Avx2, compare_avx2};
    use proptest::prelude::*;
    use std::f32::consts::PI;

    #[test]
    fn finger_scores_separate_genuine_from_impostor() {
        let a = probe(5, 1).fingers[1].clone();
        let b = probe(5, 2).fingers[1].clone();
        let c = probe(6, 1).fingers[1].clone();
        assert!(compare_fingers(&a, &b) > 0.15);
        assert!(compare_fingers(&a, &c) < 0.1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The vectorised pairing stage gives every finger pair, mated or not, exactly the
        /// score of the scalar one, and edges come out as the sort-based preparation's.
        #[test]
        fn pairing_is_exactly_the_scalar_reference(p in 1u64..5_000, q in 1u64..5_000, f in 0usize..10, seed in 0u64..1_000) {
            // (An amputee's print has fewer than ten fingers.)
            let nth = |t: &crate::Tenprint| t.fingers[f % t.fingers.len()].clone();
            let a = &nth(&probe(p, seed));
            for b in [&nth(&probe(p, seed + 1)), &nth(&probe(q, seed + 2))] {
                let (pa, pb) = (prepare(points(a)), prepare(points(b)));
                prop_assert_eq!(&pa, &prepare_reference(points(a)));
                prop_assert_eq!(&pb, &prepare_reference(points(b)));
                let want = compare_reference(&pa, &pb).to_bits();
                prop_assert_eq!(compare(&pa, &pb).to_bits(), want);
                #[cfg(target_arch = "x86_64")]
                if let Some(avx2) = Avx2::detect() {
                    prop_assert_eq!(compare_avx2(avx2, &pa, &pb).to_bits(), want);
                }
            }
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
}
