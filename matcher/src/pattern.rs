//! A finger's pattern class (arch, tented arch, left loop, right loop, whorl) read from its
//! minutiae: the classification the FBI's tenprint files were organised by long before
//! automated matching (a person's ten classes narrow a search to a small share of the file),
//! and the first code of a tenprint search here (see [`crate::search`]).
//!
//! Minutiae point along the ridges, so their directions sample the ridge flow, and the flow is
//! what a class is. The features are the flow's doubled-angle vectors (a direction and its
//! reverse are the same ridge) averaged over a 5 × 5 grid of 100-pixel cells, and whether each cell
//! has a minutia; a small network (one hidden layer of [`HIDDEN`] rectified units) gives the
//! five classes' probabilities. Its weights ([`WEIGHTS`]) were trained on synthetic prints by
//! `cargo run --release -p interop-matcher --example pattern-train` (deterministic: the same
//! weights every run), captured at qualities from 0.5 to 2.5 of the default; the program prints
//! the accuracy it reaches on prints it never saw.
//!
//! Classification costs well under a microsecond a finger: angles are whole degrees, so the
//! doubled-angle vectors come from a table.

use crate::template::FingerTemplate;

/// Cells per side of the grid the flow is averaged over.
pub const GRID: usize = 5;
/// A cell's side, in pixels at 500 ppi: the grid covers the first 500 × 500 pixels of the
/// image (a rolled finger is ~420–560 px), the last cells taking whatever lies beyond. Fixed,
/// not the template's image size: a print kept in a gallery has lost it.
pub const CELL_PX: usize = 100;
/// Features: per cell the mean doubled-angle cosine and sine and whether it has a minutia;
/// then a constant 1.
pub const FEATURES: usize = GRID * GRID * 3 + 1;
/// Hidden units.
pub const HIDDEN: usize = 8;
/// Classes, in the order arch, tented arch, left loop, right loop, whorl.
pub const CLASSES: usize = 5;
/// The classes' shares of the fingers of the synthetic population (see [`crate::synth`]), the
/// prior a class's evidence is weighed against.
pub const PRIOR: [f32; CLASSES] = [0.037, 0.029, 0.338, 0.317, 0.279];

/// The network's weights: `HIDDEN` rows of `FEATURES` for the hidden layer, then `CLASSES`
/// rows of `HIDDEN + 1` (the last a bias) for the output.
pub type Weights = ([[f32; FEATURES]; HIDDEN], [[f32; HIDDEN + 1]; CLASSES]);

include!("pattern_weights.rs");

/// `(cos 2θ, sin 2θ)` for each whole degree θ.
fn doubled_table() -> &'static [(f32, f32)] {
    static TABLE: std::sync::OnceLock<Vec<(f32, f32)>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..360)
            .map(|d| {
                let a = (d as f32).to_radians() * 2.0;
                (a.cos(), a.sin())
            })
            .collect()
    })
}

/// The classifier's features of a finger.
pub fn features(f: &FingerTemplate) -> [f32; FEATURES] {
    let mut acc = [[0f32; 3]; GRID * GRID];
    let doubled = doubled_table();
    for m in &f.minutiae {
        let cx = (m.x as usize / CELL_PX).min(GRID - 1);
        let cy = (m.y as usize / CELL_PX).min(GRID - 1);
        let (c, s) = doubled[m.angle_deg as usize % 360];
        let a = &mut acc[cy * GRID + cx];
        a[0] += c;
        a[1] += s;
        a[2] += 1.0;
    }
    let mut out = [0f32; FEATURES];
    for (i, a) in acc.iter().enumerate() {
        if a[2] > 0.0 {
            out[3 * i] = a[0] / a[2];
            out[3 * i + 1] = a[1] / a[2];
            out[3 * i + 2] = 1.0;
        }
    }
    out[FEATURES - 1] = 1.0;
    out
}

/// The hidden layer's activations (and a constant 1) and the classes' probabilities, under
/// `w`.
pub fn forward(w: &Weights, x: &[f32; FEATURES]) -> ([f32; HIDDEN + 1], [f32; CLASSES]) {
    let mut hid = [1f32; HIDDEN + 1];
    for (h, row) in hid.iter_mut().zip(&w.0) {
        *h = dot(row, x).max(0.0);
    }
    let mut z = [0f32; CLASSES];
    for (zc, row) in z.iter_mut().zip(&w.1) {
        *zc = dot(row, &hid);
    }
    let top = z.iter().copied().fold(f32::MIN, f32::max);
    let mut sum = 0.0;
    for v in &mut z {
        *v = (*v - top).exp();
        sum += *v;
    }
    for v in &mut z {
        *v /= sum;
    }
    (hid, z)
}

/// `a · b` in eight lanes, then across them: the additions of one sum in a row would wait on
/// each other (this made classifying a finger 575 → 350 ns).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut acc = [0f32; 8];
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// The index of a synthetic finger's class in [`CLASSES`]' order (for training and tests).
pub fn index_of(c: crate::synth::PatternClass) -> u8 {
    use crate::synth::PatternClass::*;
    match c {
        Arch => 0,
        TentedArch => 1,
        LeftLoop => 2,
        RightLoop => 3,
        Whorl => 4,
    }
}

/// The probabilities of the five classes for finger `f`.
pub fn probabilities(f: &FingerTemplate) -> [f32; CLASSES] {
    forward(&WEIGHTS, &features(f)).1
}

/// The most probable class of finger `f` (0..5, in the order of [`CLASSES`]) and its
/// probability.
pub fn classify(f: &FingerTemplate) -> (u8, f32) {
    let p = probabilities(f);
    let (c, q) = p
        .iter()
        .enumerate()
        .fold((0, f32::MIN), |b, (i, &q)| if q > b.1 { (i, q) } else { b });
    (c as u8, q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{CaptureModel, capture, master_tenprint};

    /// The share of fingers of 300 people (never trained on) classified right at `quality`.
    fn accuracy(quality: f32) -> f64 {
        let (mut right, mut all) = (0, 0);
        for p in 0..300 {
            let m = master_tenprint(99, 70_000_000 + p);
            let t = capture(&m, &CaptureModel::with_quality(quality), p);
            for (f, mf) in t.fingers.iter().zip(&m.fingers) {
                right += usize::from(classify(f).0 == index_of(mf.class));
                all += 1;
            }
        }
        right as f64 / all as f64
    }

    /// The trained weights classify what they should: nearly every finger at the default
    /// capture quality, most of a poor card's (the training program prints the full table).
    #[test]
    fn fingers_are_classified_by_their_ridge_flow() {
        let (default, poor) = (accuracy(1.0), accuracy(2.0));
        assert!(default >= 0.995, "default quality: {default}");
        assert!(poor >= 0.9, "quality 2.0: {poor}");
    }

    /// The class does not depend on the image size a template states (a print kept in a
    /// gallery has none), and a finger without minutiae is no error.
    #[test]
    fn the_image_size_stated_does_not_matter() {
        let m = master_tenprint(99, 5);
        let f = capture(&m, &CaptureModel::default(), 1).fingers[3].clone();
        let mut bare = f.clone();
        (bare.width, bare.height) = (0, 0);
        assert_eq!(probabilities(&bare), probabilities(&f));
        let empty = FingerTemplate {
            minutiae: vec![],
            ..f
        };
        let p = probabilities(&empty);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{p:?}");
    }
}
