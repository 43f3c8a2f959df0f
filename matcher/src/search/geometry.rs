//! Minutiae as the matcher holds and reads them: the finger positions it keeps, a gallery
//! minutia packed in 32 bits, the floating-point [`Point`] every stage computes with, and the
//! angle arithmetic the stages share (directions as floats in [0, 2π), and as 16-bit binary
//! angles where stage 2 compares many at once).
//!
//! The angle functions here are branch-free rewrites of the obvious ones, chosen so the loops
//! that call them vectorise; each equals its reference to the bit over the domain the matcher
//! gives it (the tests check it), so the rewrite never moves a score.

use crate::template::{FingerTemplate, Minutia, MinutiaKind};
use std::f32::consts::PI;

/// Finger positions the gallery keeps: 1..=10.
pub(super) const POSITIONS: usize = 10;
/// Largest minutia coordinate a gallery finger can hold (11 bits of the packed form; the
/// gateway accepts images up to 2,000 px).
pub const MAX_COORD: u16 = 2047;

/// Binary-angle units (2^16 a turn) per radian: stage 2 compares edge directions as `u16`
/// binary angles (see [`binary_angle`]).
pub(super) const BINARY_ANGLE: f32 = 65_536.0 / (2.0 * PI);

/// A direction in [0, 2π) as a binary angle, 2^16 a turn, rounded (2π itself is 0).
#[inline(always)]
pub(super) fn binary_angle(a: f32) -> u16 {
    (a * BINARY_ANGLE + 0.5) as u32 as u16
}

/// The angle between two binary angles, either way round: the wrapping difference, read as
/// signed, has the circular distance as its magnitude. Eight or sixteen lanes at a time where
/// [`angdiff_near`] on floats takes four or eight, with three operations for its dozen.
#[inline(always)]
pub(super) fn binary_angdiff(a: u16, b: u16) -> u16 {
    (a.wrapping_sub(b) as i16).unsigned_abs()
}

/// Index of a finger position in the per-position arrays, if the gallery keeps it.
pub(super) fn slot(position: u8) -> Option<usize> {
    (1..=POSITIONS as u8)
        .contains(&position)
        .then(|| position as usize - 1)
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Point {
    pub(super) x: f32,
    pub(super) y: f32,
    pub(super) a: f32,
    /// 0 ending, 1 bifurcation (stage 1's words use it; pairing does not).
    pub(super) k: u8,
}

/// A minutia as the matcher sees it. Directions are taken modulo 360°.
pub(super) fn point(x: u16, y: u16, angle_deg: u16, k: u8) -> Point {
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

fn as_point(m: &Minutia) -> Point {
    point(m.x, m.y, m.angle_deg, kind_bit(m.kind))
}

/// All of a finger's minutiae as points (a search uses [`used_points`]).
#[cfg(test)]
pub(super) fn points(f: &FingerTemplate) -> Vec<Point> {
    f.minutiae.iter().map(as_point).collect()
}

/// Which of finger `f`'s minutiae the matcher uses, on both sides (a probe's and an
/// enrolled print's alike, so a gallery print searched as a probe in calibration is the print
/// a booking's would be): those reported at [`MIN_MINUTIA_QUALITY`] or better, and those of
/// unknown quality (0, as ISO/IEC 19794-2 has it); all of them if fewer than [`MIN_RELIABLE`]
/// are.
///
/// [`MIN_MINUTIA_QUALITY`]: super::tuning::MIN_MINUTIA_QUALITY
/// [`MIN_RELIABLE`]: super::tuning::MIN_RELIABLE
pub(super) fn used(f: &FingerTemplate) -> impl Fn(&&Minutia) -> bool + use<> {
    use super::tuning::{MIN_MINUTIA_QUALITY, MIN_RELIABLE};
    let reliable = |m: &&Minutia| m.quality == 0 || m.quality >= MIN_MINUTIA_QUALITY;
    let all = f.minutiae.iter().filter(reliable).count() < MIN_RELIABLE;
    move |m| all || reliable(m)
}

/// A finger's [`used`] minutiae as points.
pub(super) fn used_points(f: &FingerTemplate) -> Vec<Point> {
    f.minutiae.iter().filter(used(f)).map(as_point).collect()
}

/// A gallery minutia in 32 bits: x and y (11 bits each, up to [`MAX_COORD`]), the direction
/// in whole degrees (9 bits) and the type (1 bit). Quality is not used by the matcher.
pub(super) fn pack(m: &Minutia) -> u32 {
    debug_assert!(m.x <= MAX_COORD && m.y <= MAX_COORD);
    m.x as u32
        | (m.y as u32) << 11
        | ((m.angle_deg % 360) as u32) << 22
        | (kind_bit(m.kind) as u32) << 31
}

/// The minutia [`pack`] packed (quality is not kept: 0).
pub(super) fn unpack_minutia(p: u32) -> Minutia {
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

pub(super) fn unpack(p: u32) -> Point {
    let m = unpack_minutia(p);
    point(m.x, m.y, m.angle_deg, kind_bit(m.kind))
}

/// `x.rem_euclid(2π)` for x in (−2·2π, 2·2π) — every relative direction here (directions are
/// in [0, 2π), `atan2` in [−π, π]) — without the floating-point remainder call: within that
/// range the remainder is x, x − 2π or −(−x − 2π), each exact (Sterbenz), so the result is the
/// same to the bit (a property test checks it).
#[inline]
pub(super) fn rem_tau(x: f32) -> f32 {
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

/// The smallest angle between two directions, 0..=π, without branches, for differences within
/// (−2·2π, 2·2π) — every one the matcher takes: directions are in [0, 2π) and an alignment
/// turns by less than 2π. Each step is the one the reference (`angdiff` in the tests) and
/// `rem_euclid` take for such a difference (a remainder by 2π of a value in [2π, 4π) is the
/// exact subtraction), so the result is the same to the bit (a property test checks it); the
/// loops that use it compile to SIMD.
#[inline(always)]
pub(super) fn angdiff_near(a: f32, b: f32) -> f32 {
    const TAU: f32 = 2.0 * PI;
    let mut d = a - b;
    d = if d < 0.0 { d + TAU } else { d };
    d = if d < 0.0 { d + TAU } else { d };
    d = if d >= TAU { d - TAU } else { d };
    d.min(TAU - d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::reference::angdiff;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
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
    }

    /// Differences at the turns where a remainder or a branch changes: 0 and ±0, ±π, ±2π and
    /// their neighbouring floats, and the ends of the domain (±2·2π, exclusive).
    const AT_THE_EDGES: [f32; 15] = {
        const TAU: f32 = 2.0 * PI;
        [
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
        ]
    };

    #[test]
    fn relative_direction_remainder_is_exact_at_the_edges() {
        for x in AT_THE_EDGES {
            assert_eq!(
                rem_tau(x).to_bits(),
                x.rem_euclid(2.0 * PI).to_bits(),
                "{x}"
            );
        }
    }

    #[test]
    fn branch_free_angle_difference_is_exact_at_the_edges() {
        const TAU: f32 = 2.0 * PI;
        for d in AT_THE_EDGES {
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
}
