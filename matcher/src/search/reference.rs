//! What the matcher's tests compare it with: the synthetic captures they enrol and search,
//! and the plain implementations, as first written, that every fast one must equal to the bit
//! (a reference model in the sense of the property tests: slow, obvious, and kept apart from
//! the code it checks).

use super::edges::prepare;
use super::edges::{Edge, NEIGHBOURS, Prepared};
use super::geometry::binary_angle;
use super::geometry::{Point, slot, used_points};
use super::pairing::{Align, EDGE_DIST, EDGE_TURNS, PAIR_ANGLE, PAIR_DIST};
use super::words::{FingerKeys, key, words};
use crate::Tenprint;
use crate::synth::{CaptureModel, capture, master_tenprint};
use std::f32::consts::PI;

/// The capture of person `p` the tests enrol.
pub(super) fn enrol_capture(p: u64) -> Tenprint {
    capture(
        &master_tenprint(11, p),
        &CaptureModel::default(),
        0xE0_0000 + p,
    )
}

/// Capture `n` of person `p`, another than the enrolled one: a mated probe (a stranger
/// where `p` is never enrolled).
pub(super) fn probe(p: u64, n: u64) -> Tenprint {
    capture(
        &master_tenprint(11, p),
        &CaptureModel::default(),
        0xB0_0000 + p * 100 + n,
    )
}

/// Smallest angle between two directions, 0..=π, for any two: the reference for
/// [`angdiff_near`](super::geometry::angdiff_near), which the matcher uses (every direction it
/// compares is near [0, 2π)).
pub(super) fn angdiff(a: f32, b: f32) -> f32 {
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

/// Edges as first written: every square distance computed and stably sorted.
pub(super) fn prepare_reference(points: Vec<Point>) -> Prepared {
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
pub(super) fn compare_reference(a: &Prepared, b: &Prepared) -> f32 {
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
pub(super) fn shortlist_score(probe: &[FingerKeys], print: &Tenprint) -> f32 {
    let mut s = 0.0;
    for fk in probe {
        let (sl, keys) = (&fk.slot, &fk.keys);
        if let Some(g) = print.fingers.iter().find(|g| slot(g.position) == Some(*sl)) {
            let words = words(&prepare(used_points(g)).edges);
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
