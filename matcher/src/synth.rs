//! Realistic synthetic fingerprints: deterministic "master" fingers per person and noisy
//! captures of them.
//!
//! Toy data makes any matcher look perfect, so the generator follows how real prints behave:
//! - a pattern class per finger in realistic proportions (arch 3.7%, tented arch 2.9%, left
//!   loop 33.8%, right loop 31.7%, whorl 27.9%), each with an orientation field built from its
//!   singular points (the zero-pole model of Sherlock and Monro: the ridge direction turns by
//!   half the angle around each core and back around each delta);
//! - 30–60 minutiae per finger, spaced at least a ridge-pair apart, placed inside an elliptic
//!   print area, with directions following the orientation field (ridge endings and
//!   bifurcations point along the ridge, either way);
//! - per capture: global rotation and translation, non-linear elastic distortion that grows
//!   away from the centre (skin stretches most at the edge of the contact area), positional
//!   and angular jitter, missed and spurious minutiae, a partially captured area, type
//!   confusion (an ending seen as a bifurcation) and quality variation.
//!
//! Everything is a pure function of the seeds: per-finger and per-capture seeds are mixed
//! from their coordinates, never drawn from a shared stream, so order never matters.

use crate::fmath;
use crate::template::{FingerTemplate, Minutia, MinutiaKind, Tenprint};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::f32::consts::PI;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PatternClass {
    Arch,
    TentedArch,
    LeftLoop,
    RightLoop,
    Whorl,
}

impl PatternClass {
    /// Draws a class with the proportions observed in large fingerprint collections.
    fn draw(u: f32) -> PatternClass {
        match u {
            u if u < 0.037 => PatternClass::Arch,
            u if u < 0.066 => PatternClass::TentedArch,
            u if u < 0.404 => PatternClass::LeftLoop,
            u if u < 0.721 => PatternClass::RightLoop,
            _ => PatternClass::Whorl,
        }
    }
}

/// One minutia of a master finger, at full precision.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MasterMinutia {
    pub x: f32,
    pub y: f32,
    /// Radians, counter-clockwise from the x axis, 0..2π.
    pub angle: f32,
    pub kind: MinutiaKind,
    pub quality: u8,
}

/// The "true" finger: what every capture is a noisy view of.
#[derive(Clone, Debug, PartialEq)]
pub struct MasterFinger {
    pub position: u8,
    pub class: PatternClass,
    pub width: u16,
    pub height: u16,
    pub cores: Vec<(f32, f32)>,
    pub deltas: Vec<(f32, f32)>,
    pub minutiae: Vec<MasterMinutia>,
}

/// The "true" ten fingers of one synthetic person.
#[derive(Clone, Debug, PartialEq)]
pub struct MasterTenprint {
    pub fingers: Vec<MasterFinger>,
    /// Positions of the fingers the person does not have (amputated): no capture holds them,
    /// and a booking records them as such (see [`crate::capture`]).
    pub amputated: Vec<u8>,
}

/// How a capture deviates from the master fingers. [`CaptureModel::default`] is the
/// realistic default; [`CaptureModel::with_quality`] scales every degradation.
#[derive(Clone, Debug, PartialEq)]
pub struct CaptureModel {
    /// Maximum global rotation, degrees (uniform in ±).
    pub rotation_deg: f32,
    /// Maximum global translation, pixels (uniform in ±, each axis).
    pub translation_px: f32,
    /// Elastic displacement at the edge of the print, pixels.
    pub distortion_px: f32,
    /// Standard deviation of positional jitter, pixels.
    pub jitter_px: f32,
    /// Standard deviation of angular jitter, degrees.
    pub jitter_deg: f32,
    /// Probability that a true minutia is not extracted.
    pub p_missing: f32,
    /// Mean number of spurious minutiae.
    pub spurious: f32,
    /// Probability that part of the print (a band at one edge) was not captured.
    pub p_partial: f32,
    /// Probability that an ending is read as a bifurcation or the reverse.
    pub p_type_flip: f32,
    /// The extractor's confidence in the capture: true minutiae's quality is scaled by it
    /// (a poor impression's minutiae are reported with lower quality).
    pub quality_scale: f32,
}

impl Default for CaptureModel {
    /// Calibrated so that single-finger comparisons land in the 1–10% EER band that published
    /// minutiae matchers show on real prints (see BENCHMARKS.md), not near zero.
    fn default() -> Self {
        CaptureModel {
            rotation_deg: 20.0,
            translation_px: 30.0,
            distortion_px: 11.0,
            jitter_px: 3.3,
            jitter_deg: 8.0,
            p_missing: 0.2,
            spurious: 4.0,
            p_partial: 0.4,
            p_type_flip: 0.12,
            quality_scale: 1.0,
        }
    }
}

impl CaptureModel {
    /// Scales the degradations: 1.0 is the default, 0.5 a clean live scan, 2.0 a poor card.
    pub fn with_quality(factor: f32) -> CaptureModel {
        let d = CaptureModel::default();
        let f = factor.max(0.0);
        CaptureModel {
            rotation_deg: d.rotation_deg * f,
            translation_px: d.translation_px * f,
            distortion_px: d.distortion_px * f,
            jitter_px: d.jitter_px * f,
            jitter_deg: d.jitter_deg * f,
            p_missing: (d.p_missing * f).min(0.6),
            spurious: d.spurious * f,
            p_partial: (d.p_partial * f).min(1.0),
            p_type_flip: (d.p_type_flip * f).min(0.5),
            // 1 at the default and better; 0.85 for a poor card (2.0).
            quality_scale: (1.0 - 0.15 * (f - 1.0)).clamp(0.6, 1.0),
        }
    }
}

/// Mixes seed coordinates into one seed (splitmix64 finaliser).
pub fn mix(a: u64, b: u64, c: u64) -> u64 {
    let mut z = a
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(b.rotate_left(21) ^ 0xD1B5_4A32_D192_ED03)
        .wrapping_add(c.rotate_left(42))
        .wrapping_add(0x632B_E59B_D9B4_E019);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A standard normal draw, by the ziggurat method (`rand_distr`): one random number and a
/// table lookup almost always. Box–Muller (a logarithm, a square root and a cosine per draw,
/// ~2,500 draws per person) was a fifth of the generator's time; with it and the library
/// `atan2` of the orientation field replaced, a person's master prints and a capture take 89
/// instead of 140 µs on one core. The same distribution, other draws: every print changed.
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    rng.sample(rand_distr::StandardNormal)
}

fn wrap(a: f32) -> f32 {
    a.rem_euclid(2.0 * PI)
}

impl MasterFinger {
    /// Ridge orientation (0..π) at a point, from the singular points (zero-pole model).
    pub fn orientation(&self, x: f32, y: f32) -> f32 {
        let (cx, cy) = (self.width as f32 / 2.0, self.height as f32 / 2.0);
        let o = match self.class {
            PatternClass::Arch => {
                // Ridges run across, bulging upward near the centre.
                let dx = (x - cx) / (self.width as f32 / 2.0);
                let dy = (y - cy) / (self.height as f32 / 2.0);
                -0.7 * dx * (-(dy + 0.2).powi(2) * 2.0).exp()
            }
            _ => {
                let mut t = 0.0;
                for &(px, py) in &self.cores {
                    t += fmath::atan2(y - py, x - px) / 2.0;
                }
                for &(px, py) in &self.deltas {
                    t -= fmath::atan2(y - py, x - px) / 2.0;
                }
                t
            }
        };
        o.rem_euclid(PI)
    }
}

fn master_finger(seed: u64, person: u64, position: u8) -> MasterFinger {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, person, 0xF1_0000 + position as u64));
    let class = PatternClass::draw(rng.random());
    let width = rng.random_range(420..=520u16);
    let height = rng.random_range(480..=560u16);
    let (w, h) = (width as f32, height as f32);
    let (cx, cy) = (
        w / 2.0 + normal(&mut rng) * 12.0,
        h * 0.45 + normal(&mut rng) * 12.0,
    );
    let (cores, deltas) = match class {
        PatternClass::Arch => (vec![], vec![]),
        PatternClass::TentedArch => (vec![(cx, cy)], vec![(cx, cy + h * 0.25)]),
        PatternClass::LeftLoop => (vec![(cx, cy)], vec![(cx + w * 0.28, cy + h * 0.3)]),
        PatternClass::RightLoop => (vec![(cx, cy)], vec![(cx - w * 0.28, cy + h * 0.3)]),
        PatternClass::Whorl => (
            vec![(cx - 15.0, cy - 20.0), (cx + 15.0, cy + 20.0)],
            vec![(cx - w * 0.3, cy + h * 0.3), (cx + w * 0.3, cy + h * 0.3)],
        ),
    };
    let target = rng.random_range(30..=60usize);
    let mut finger = MasterFinger {
        position,
        class,
        width,
        height,
        cores,
        deltas,
        minutiae: Vec::with_capacity(target),
    };
    // Minutiae at least ~a ridge pair apart, inside the elliptic contact area.
    let min_d2 = 14.0f32 * 14.0;
    let (rx, ry) = (w * 0.42, h * 0.44);
    // The placed minutiae's coordinates as columns: the spacing test counts the ones too
    // close over all of them, branch-free, which vectorises (the same test, the same prints;
    // a search stopping at the first, a struct at a time, was a sixth of the generator).
    let (mut xs, mut ys): (Vec<f32>, Vec<f32>) =
        (Vec::with_capacity(target), Vec::with_capacity(target));
    let mut tries = 0;
    while finger.minutiae.len() < target && tries < 20_000 {
        tries += 1;
        let x = rng.random_range(0.0..w);
        let y = rng.random_range(0.0..h);
        let e = ((x - w / 2.0) / rx).powi(2) + ((y - h / 2.0) / ry).powi(2);
        if e > 1.0 {
            continue;
        }
        let close = xs.iter().zip(&ys).fold(0u32, |n, (&mx, &my)| {
            n + ((mx - x).powi(2) + (my - y).powi(2) < min_d2) as u32
        });
        if close > 0 {
            continue;
        }
        // Direction along the ridge flow, either way, with a little natural variation.
        let flip = if rng.random::<bool>() { PI } else { 0.0 };
        let angle = wrap(finger.orientation(x, y) + flip + normal(&mut rng) * 0.05);
        let kind = if rng.random::<f32>() < 0.55 {
            MinutiaKind::Ending
        } else {
            MinutiaKind::Bifurcation
        };
        // Quality drops toward the edge of the print.
        let quality = (95.0 - 40.0 * e + normal(&mut rng) * 5.0).clamp(20.0, 100.0) as u8;
        xs.push(x);
        ys.push(y);
        finger.minutiae.push(MasterMinutia {
            x,
            y,
            angle,
            kind,
            quality,
        });
    }
    finger
}

/// Deterministic master prints of `person` in the world seeded with `seed`.
pub fn master_tenprint(seed: u64, person: u64) -> MasterTenprint {
    MasterTenprint {
        fingers: (1..=10).map(|p| master_finger(seed, person, p)).collect(),
        amputated: crate::capture::amputated(seed, person),
    }
}

pub(crate) fn capture_finger(
    f: &MasterFinger,
    model: &CaptureModel,
    rng: &mut ChaCha8Rng,
) -> FingerTemplate {
    let (w, h) = (f.width as f32, f.height as f32);
    let (cx, cy) = (w / 2.0, h / 2.0);
    let rot = (rng.random::<f32>() * 2.0 - 1.0) * model.rotation_deg.to_radians();
    let (tx, ty) = (
        (rng.random::<f32>() * 2.0 - 1.0) * model.translation_px,
        (rng.random::<f32>() * 2.0 - 1.0) * model.translation_px,
    );
    // Smooth elastic field: two low-frequency waves with random phase, scaled by the squared
    // distance from the centre.
    let (p1, p2, p3, p4) = (
        rng.random::<f32>() * 2.0 * PI,
        rng.random::<f32>() * 2.0 * PI,
        rng.random::<f32>() * 2.0 * PI,
        rng.random::<f32>() * 2.0 * PI,
    );
    let radius = (cx * cx + cy * cy).sqrt();
    // A band at one edge not captured (rolled too little, or pressed off-centre).
    let partial = (rng.random::<f32>() < model.p_partial).then(|| {
        let dir = rng.random::<f32>() * 2.0 * PI;
        let keep = rng.random_range(0.45..0.8f32) * radius;
        (dir.cos(), dir.sin(), keep)
    });
    let (c, s) = (rot.cos(), rot.sin());
    let mut out: Vec<Minutia> = Vec::with_capacity(f.minutiae.len() + 8);
    let place =
        |x: f32, y: f32, angle: f32, kind: MinutiaKind, quality: u8, out: &mut Vec<Minutia>| {
            let (dx, dy) = (x - cx, y - cy);
            if let Some((ux, uy, keep)) = partial
                && dx * ux + dy * uy > keep
            {
                return;
            }
            let r2 = (dx * dx + dy * dy) / (radius * radius);
            let ex = model.distortion_px * r2 * ((x / w) * PI * 2.0 + p1).sin()
                + model.distortion_px * r2 * ((y / h) * PI + p2).cos();
            let ey = model.distortion_px * r2 * ((y / h) * PI * 2.0 + p3).sin()
                + model.distortion_px * r2 * ((x / w) * PI + p4).cos();
            let (dx, dy) = (dx + ex, dy + ey);
            let nx = cx + c * dx - s * dy + tx;
            let ny = cy + s * dx + c * dy + ty;
            if nx < 0.0 || ny < 0.0 || nx >= w || ny >= h {
                return;
            }
            let a = wrap(angle + rot);
            let deg = (a.to_degrees().round() as u16) % 360;
            out.push(Minutia {
                x: nx as u16,
                y: ny as u16,
                angle_deg: deg,
                kind,
                quality,
            });
        };
    for m in &f.minutiae {
        if rng.random::<f32>() < model.p_missing {
            continue;
        }
        let x = m.x + normal(rng) * model.jitter_px;
        let y = m.y + normal(rng) * model.jitter_px;
        let a = m.angle + (normal(rng) * model.jitter_deg).to_radians();
        let kind = if rng.random::<f32>() < model.p_type_flip {
            match m.kind {
                MinutiaKind::Ending => MinutiaKind::Bifurcation,
                MinutiaKind::Bifurcation => MinutiaKind::Ending,
            }
        } else {
            m.kind
        };
        let q =
            ((m.quality as f32 + normal(rng) * 8.0) * model.quality_scale).clamp(1.0, 100.0) as u8;
        place(x, y, a, kind, q, &mut out);
    }
    // Spurious minutiae (scars, creases, noise), along the flow like real false detections.
    let n_spurious = (model.spurious * 2.0 * rng.random::<f32>()).round() as usize;
    for _ in 0..n_spurious {
        let x = rng.random_range(w * 0.1..w * 0.9);
        let y = rng.random_range(h * 0.1..h * 0.9);
        let a = f.orientation(x, y) + if rng.random::<bool>() { PI } else { 0.0 };
        let kind = if rng.random::<bool>() {
            MinutiaKind::Ending
        } else {
            MinutiaKind::Bifurcation
        };
        let q = rng.random_range(10..60u8);
        place(x, y, a, kind, q, &mut out);
    }
    out.sort_by_key(|m| (m.y, m.x, m.angle_deg));
    FingerTemplate {
        position: f.position,
        width: f.width,
        height: f.height,
        minutiae: out,
    }
}

/// One capture (booking or enrolment) of a master tenprint; deterministic in `capture_seed`.
/// Every finger the person has is captured with `model` (a booking's capture, with its
/// quality band and impression conditions, is [`crate::capture::booking_capture`]).
pub fn capture(master: &MasterTenprint, model: &CaptureModel, capture_seed: u64) -> Tenprint {
    Tenprint {
        fingers: master
            .fingers
            .iter()
            .filter(|f| !master.amputated.contains(&f.position))
            .map(|f| capture_finger(f, model, &mut finger_rng(capture_seed, f.position)))
            .collect(),
    }
}

/// The random stream of one finger of one capture.
pub(crate) fn finger_rng(capture_seed: u64, position: u8) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(capture_seed, position as u64, 0xCA97))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_capture_dependent() {
        assert_eq!(master_tenprint(1, 42), master_tenprint(1, 42));
        assert_ne!(master_tenprint(1, 42), master_tenprint(1, 43));
        assert_ne!(master_tenprint(1, 42), master_tenprint(2, 42));
        let m = master_tenprint(1, 42);
        let d = CaptureModel::default();
        assert_eq!(capture(&m, &d, 5), capture(&m, &d, 5));
        assert_ne!(capture(&m, &d, 5), capture(&m, &d, 6));
    }

    #[test]
    fn masters_have_30_to_60_minutiae_and_captures_stay_in_bounds() {
        for p in 0..200 {
            let m = master_tenprint(9, p);
            assert_eq!(m.fingers.len(), 10);
            for f in &m.fingers {
                assert!(
                    (30..=60).contains(&f.minutiae.len()),
                    "{}",
                    f.minutiae.len()
                );
            }
            for f in capture(&m, &CaptureModel::with_quality(2.0), p).fingers {
                assert!(!f.minutiae.is_empty());
                for x in &f.minutiae {
                    assert!(
                        x.x < f.width && x.y < f.height && x.angle_deg < 360 && x.quality <= 100
                    );
                }
            }
        }
    }

    #[test]
    fn class_proportions_are_realistic() {
        let mut counts = std::collections::HashMap::new();
        let n = 500;
        for p in 0..n {
            for f in master_tenprint(3, p).fingers {
                *counts.entry(f.class).or_insert(0usize) += 1;
            }
        }
        let share = |c| counts.get(&c).copied().unwrap_or(0) as f64 / (n * 10) as f64;
        assert!((share(PatternClass::LeftLoop) - 0.338).abs() < 0.04);
        assert!((share(PatternClass::RightLoop) - 0.317).abs() < 0.04);
        assert!((share(PatternClass::Whorl) - 0.279).abs() < 0.04);
        assert!(share(PatternClass::Arch) > 0.01 && share(PatternClass::Arch) < 0.07);
        assert!(share(PatternClass::TentedArch) > 0.01 && share(PatternClass::TentedArch) < 0.06);
    }

    #[test]
    fn minutia_directions_follow_the_orientation_field() {
        // Each master minutia's direction (mod π) lies close to the field at its position;
        // uniform random angles would miss by 45° on average.
        let mut total = 0.0;
        let mut n = 0;
        for p in 0..50 {
            for f in master_tenprint(4, p).fingers {
                for m in &f.minutiae {
                    let d = (m.angle.rem_euclid(PI) - f.orientation(m.x, m.y)).abs();
                    total += d.min(PI - d);
                    n += 1;
                }
            }
        }
        assert!((total / n as f32).to_degrees() < 8.0);
    }
}
