//! A polynomial `atan2` for `f32`, within 2.5e-6 rad of the exact value (a test checks the
//! bound over the directions used): the library call was a sixth of an enrolment (the edges'
//! directions) and a quarter of the generator's time (the orientation field). Besides speed,
//! it gives the same bits on every platform, where C libraries' `atan2f` may differ: basic
//! arithmetic, which Rust rounds the same everywhere.

use std::f32::consts::{FRAC_PI_2, PI};

/// `y.atan2(x)` to within 2.5e-6 rad: a minimax polynomial for atan on [0, 1] and the
/// octant's symmetry. `atan2(0, 0)` is 0.
#[inline]
pub(crate) fn atan2(y: f32, x: f32) -> f32 {
    let (ax, ay) = (x.abs(), y.abs());
    let (hi, lo) = (ax.max(ay), ax.min(ay));
    let t = if hi > 0.0 { lo / hi } else { 0.0 };
    let s = t * t;
    let mut r = -0.011_721_2_f32;
    r = r * s + 0.052_653_32;
    r = r * s - 0.116_432_87;
    r = r * s + 0.193_543_46;
    r = r * s - 0.332_623_47;
    r = r * s + 0.999_977_26;
    r *= t;
    if ay > ax {
        r = FRAC_PI_2 - r;
    }
    if x < 0.0 {
        r = PI - r;
    }
    if y < 0.0 { -r } else { r }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI as PI64;

    /// Within the bound of the exact direction over every direction an edge can take
    /// (whole-pixel offsets up to the packed range), and over fractional offsets, as the
    /// generator's are.
    #[test]
    fn atan2_is_within_its_bound() {
        // As directions: a zero of either sign is one direction, ±π another.
        let err = |y: f32, x: f32| {
            let d = (atan2(y, x) as f64 - (y as f64).atan2(x as f64)).abs();
            d.min(2.0 * PI64 - d)
        };
        let mut worst = 0f64;
        for y in (-2047..=2047).step_by(13) {
            for x in (-2047..=2047).step_by(11) {
                worst = worst.max(err(y as f32, x as f32));
            }
        }
        for t in 0..3600 {
            let a = t as f64 / 3600.0 * 2.0 * PI64;
            let (y, x) = (
                (a.sin() * 100.0).round() as f32,
                (a.cos() * 100.0).round() as f32,
            );
            worst = worst.max(err(y, x));
            worst = worst.max(err(a.sin() as f32 * 37.3, a.cos() as f32 * 37.3));
        }
        assert!(worst < 2.5e-6, "worst error {worst:e} rad");
        assert_eq!(atan2(0.0, 0.0), 0.0);
    }
}
