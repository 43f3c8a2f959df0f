//! Stage 1's second code: a finger's histogram of pair distances by direction difference,
//! normalised and kept as bytes ([`Code`]). It needs no alignment either, and it misreads
//! different probes than the words do, so the fused score of the two keeps mates either code
//! alone would rank out. Only the subjects the first code kept have theirs read
//! ([`Shard::histogram_score`]).

use super::edges::Scratch;
use super::geometry::{Point, angdiff_near};
use super::shard::Shard;
use super::simd::prefetch;
use std::f32::consts::PI;

/// Pair-distance histogram: distance × direction difference, 32 bins (a multiple of 16 for
/// the scan's lanes), 8 × 25 px × 4 angle bins. Wide bins absorb a capture's jitter and
/// distortion; four angle bins rather than six keep the gallery under 3 KiB an identity with
/// no mate lost behind the cascade (BENCHMARKS.md).
const DIST_BINS: usize = 8;
const DIST_STEP: f32 = 25.0;
const ANGLE_BINS: usize = 4;
pub(super) const HIST: usize = DIST_BINS * ANGLE_BINS;

/// Histogram codes are kept as bytes: each bin of the unit-length histogram × [`HIST_SCALE`],
/// rounded — a quarter of the memory and of the bytes a scan reads, for a cosine within 0.04
/// of the float one (each rounding error is at most ½, over [`HIST`] bins).
pub(super) type Code = [u8; HIST];
/// By Cauchy–Schwarz two codes' dot product is at most (250 + ½·√32)² < 64,000, so a
/// tenprint's histogram score (ten fingers) is an exact integer in u32 and in f32.
const HIST_SCALE: f32 = 250.0;

#[inline(always)]
pub(super) fn quantise(h: &[f32; HIST]) -> Code {
    h.map(|v| (v * HIST_SCALE).round().clamp(0.0, 255.0) as u8)
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
/// floats, each was converted (with a range check) when counted, a third slower.
#[inline(always)]
pub(super) fn histogram(points: &[Point], scratch: &mut Scratch) -> [f32; HIST] {
    scratch.load(points);
    histogram_of_loaded(scratch)
}

/// [`histogram`] of the points loaded into `scratch`.
#[inline(always)]
pub(super) fn histogram_of_loaded(scratch: &mut Scratch) -> [f32; HIST] {
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

impl Shard {
    /// Asks the cache for entry `e`'s histogram codes (see
    /// [`prefetch`]), every line of them.
    #[inline]
    pub(super) fn prefetch_hists(&self, e: usize) {
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
    pub(super) fn histogram_score(&self, e: usize, probe: &[(usize, Code)]) -> u32 {
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

    /// Stage 1's second code for every entry (see [`Shard::histogram_score`]): the search reads
    /// only the kept entries'; the benchmark's ranks and the tests read all.
    pub(super) fn histogram_scores(&self, probe: &[(usize, Code)]) -> Vec<u32> {
        (0..self.len())
            .map(|e| self.histogram_score(e, probe))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::enrol::enrolled_fingers;
    use crate::search::geometry::{slot, used_points};
    use crate::search::reference::{enrol_capture, probe};
    use proptest::prelude::*;

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
                .map(|f| (slot(f.position).unwrap(), quantise(&histogram(&used_points(f), &mut Scratch::default()))))
                .collect();
            let scores = shard.histogram_scores(&codes);
            for (t, score) in prints.iter().zip(scores) {
                let mut want = 0u32;
                for f in &q.fingers {
                    let g = t.fingers.iter().find(|g| g.position == f.position).unwrap();
                    let (hp, hg) = (
                        histogram(&used_points(f), &mut Scratch::default()),
                        histogram(&used_points(g), &mut Scratch::default()),
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
}
