//! A finger's edges: from every minutia to its three nearest neighbours, with the edge's
//! length and both directions relative to the edge (so invariant to rotation and
//! translation). Both stages start here: enrolment and the probe quantise edges into stage 1's
//! words ([`super::words`]), and stage 2 pairs probe and gallery edges sorted by length
//! ([`Prepared`], see [`super::pairing`]).
//!
//! Stage 2 recomputes a shortlisted gallery finger's edges from its packed minutiae, so this
//! code must give, bit for bit, the edges enrolment computed: every edge is computed here, by
//! the same operations, on both sides.

use super::geometry::{MAX_COORD, Point, rem_tau};

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Edge {
    pub(super) from: u16,
    /// The types of the from- and to-minutia, `from * 2 + to` (see [`super::words`]).
    pub(super) kinds: u8,
    pub(super) len: f32,
    /// Direction of the edge relative to the from-minutia's direction.
    pub(super) alpha: f32,
    /// Direction of the to-minutia relative to the from-minutia's.
    pub(super) beta: f32,
}

/// A finger prepared for pairing (stage 2).
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Prepared {
    pub(super) points: Vec<Point>,
    /// Sorted by length.
    pub(super) edges: Vec<Edge>,
}

/// Neighbours per minutia that edges go to.
pub(super) const NEIGHBOURS: usize = 3;

/// Working memory for a finger's edges and histogram: its coordinates as columns, so the
/// distance loops over them vectorise, a column of keys or bins beside them, and the edges'
/// columns. Enrolment keeps one per thread (see `enrolled_fingers`), so its fingers
/// allocate nothing here: at a million identities the allocator works a fragmented heap, and
/// fresh buffers per finger made a bulk load markedly slower.
#[derive(Default)]
pub(super) struct Scratch {
    pub(super) x: Vec<f32>,
    pub(super) y: Vec<f32>,
    pub(super) a: Vec<f32>,
    pub(super) keys: Vec<u32>,
    /// Per edge: the neighbour's index and the square distance.
    near: Vec<(u32, f32)>,
    dy: Vec<f32>,
    dx: Vec<f32>,
    pub(super) edges: Vec<Edge>,
}

impl Scratch {
    /// Loads `points` into the columns (and sizes the keys to match).
    #[inline(always)]
    pub(super) fn load(&mut self, points: &[Point]) {
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
/// then computed as columns, which vectorise too (and twice as wide where enrolment runs
/// them compiled for AVX2, see [`super::simd`]). A sweep in order of x that stopped at the
/// third nearest's distance looked at a quarter of the pairs, but one at a time with a branch
/// each, and was slower.
///
/// The edges go into `scratch.edges`, with `points` loaded into its columns (which
/// [`super::histogram::histogram_of_loaded`] then reads).
#[inline(always)]
pub(super) fn neighbour_edges_into(points: &[Point], scratch: &mut Scratch) {
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
pub(super) fn prepare(points: Vec<Point>) -> Prepared {
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
pub(super) fn prepare_edges(out: &mut Prepared, scratch: &mut Scratch, keys: &mut Vec<u64>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::geometry::point;
    use crate::search::reference::prepare_reference;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
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
    }
}
