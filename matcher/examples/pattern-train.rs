//! Trains the pattern-class network of `interop_matcher::pattern` on synthetic prints, prints
//! its accuracy on prints it never saw (per capture quality, with the confusion matrix), and
//! with `--write` writes its weights to `matcher/src/pattern_weights.rs`.
//!
//! ```sh
//! cargo run --release -p interop-matcher --example pattern-train -- --write
//! ```
//!
//! Deterministic: the same data (people 0..6,000 of seed 5, two captures each at a quality
//! drawn from 0.5..2.5 of the default), the same initial weights and the same order of
//! minibatches every run, summed in order on one thread, so the same weights.

// The gradients read as the formulas do, index by index.
#![allow(clippy::needless_range_loop)]

use interop_matcher::pattern::{
    CLASSES, FEATURES, HIDDEN, WEIGHTS, Weights, features, forward, index_of,
};
use interop_matcher::synth::{CaptureModel, capture, master_tenprint, mix};
use rayon::prelude::*;

const SEED: u64 = 5;
const PEOPLE: u64 = 6_000;
const EPOCHS: usize = 30;
const BATCH: usize = 256;

type Sample = ([f32; FEATURES], usize);

/// Every finger of `captures` captures of people `from..from + n`, at `quality(person,
/// capture)`.
fn samples(
    from: u64,
    n: u64,
    captures: u64,
    quality: impl Fn(u64, u64) -> f32 + Sync,
) -> Vec<Sample> {
    (from..from + n)
        .into_par_iter()
        .flat_map_iter(|p| {
            let m = master_tenprint(SEED, p);
            (0..captures)
                .flat_map(|c| {
                    let t = capture(
                        &m,
                        &CaptureModel::with_quality(quality(p, c)),
                        mix(p, c, 0x7A7),
                    );
                    t.fingers
                        .iter()
                        .zip(&m.fingers)
                        .map(|(f, mf)| (features(f), index_of(mf.class) as usize))
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// xorshift64: a fixed stream for the initial weights and the shuffles.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn train(data: &[Sample]) -> Weights {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut w: Weights = ([[0.0; FEATURES]; HIDDEN], [[0.0; HIDDEN + 1]; CLASSES]);
    for row in &mut w.0 {
        for v in row.iter_mut() {
            *v = (rng.unit() - 0.5) * 0.5;
        }
    }
    for row in &mut w.1 {
        for v in row.iter_mut() {
            *v = (rng.unit() - 0.5) * 0.5;
        }
    }
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut lr = 0.05f32;
    for epoch in 0..EPOCHS {
        for i in (1..order.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let mut loss = 0f64;
        for batch in order.chunks(BATCH) {
            let mut g1 = [[0f32; FEATURES]; HIDDEN];
            let mut g2 = [[0f32; HIDDEN + 1]; CLASSES];
            for &k in batch {
                let (x, y) = &data[k];
                let (hid, p) = forward(&w, x);
                loss -= (p[*y].max(1e-9) as f64).ln();
                let mut dz = p;
                dz[*y] -= 1.0;
                let mut dh = [0f32; HIDDEN];
                for c in 0..CLASSES {
                    for j in 0..=HIDDEN {
                        g2[c][j] += dz[c] * hid[j];
                    }
                    for j in 0..HIDDEN {
                        dh[j] += dz[c] * w.1[c][j];
                    }
                }
                for j in 0..HIDDEN {
                    if hid[j] > 0.0 {
                        for i in 0..FEATURES {
                            g1[j][i] += dh[j] * x[i];
                        }
                    }
                }
            }
            let s = lr / batch.len() as f32;
            for (row, g) in w.0.iter_mut().zip(&g1) {
                for (v, d) in row.iter_mut().zip(g) {
                    *v -= s * d;
                }
            }
            for (row, g) in w.1.iter_mut().zip(&g2) {
                for (v, d) in row.iter_mut().zip(g) {
                    *v -= s * d;
                }
            }
        }
        eprintln!("epoch {epoch:2}: mean loss {:.4}", loss / data.len() as f64);
        if epoch == EPOCHS * 2 / 3 {
            lr *= 0.3;
        }
    }
    w
}

fn report(w: &Weights, name: &str) {
    println!("{name}: accuracy on people never trained on (2,000 people, 20,000 fingers)");
    for q in [0.5f32, 1.0, 1.5, 2.0, 2.5] {
        let test = samples(50_000_000, 2_000, 1, |_, _| q);
        let mut conf = [[0usize; CLASSES]; CLASSES];
        for (x, y) in &test {
            let p = forward(w, x).1;
            let c = (0..CLASSES).fold(0, |b, i| if p[i] > p[b] { i } else { b });
            conf[*y][c] += 1;
        }
        let right: usize = (0..CLASSES).map(|i| conf[i][i]).sum();
        println!(
            "  quality {q:.1}: {:.2}% right; confusion, rows the true class (A, T, L, R, W): {conf:?}",
            100.0 * right as f64 / test.len() as f64
        );
    }
}

fn main() {
    let write = std::env::args().any(|a| a == "--write");
    let t0 = std::time::Instant::now();
    let data = samples(0, PEOPLE, 2, |p, c| {
        0.5 + 2.0 * ((mix(p, c, 0x0A11) >> 40) as f32 / (1u64 << 24) as f32)
    });
    eprintln!("{} training fingers in {:.1?}", data.len(), t0.elapsed());
    report(&WEIGHTS, "the weights in the source now");
    let w = train(&data);
    eprintln!("trained in {:.1?}", t0.elapsed());
    report(&w, "the weights just trained");
    if write {
        let row = |r: &[f32]| {
            let v: Vec<String> = r.iter().map(|x| format!("{x:?}")).collect();
            format!("        [{}],\n", v.join(", "))
        };
        let mut out = String::from(
            "// Written by `cargo run --release -p interop-matcher --example pattern-train -- --write`.\n/// The classifier's trained weights (see the module comment).\npub static WEIGHTS: Weights = (\n    [\n",
        );
        for r in &w.0 {
            out += &row(r);
        }
        out += "    ],\n    [\n";
        for r in &w.1 {
            out += &row(r);
        }
        out += "    ],\n);\n";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/pattern_weights.rs");
        std::fs::write(path, out).expect("write the weights");
        println!("wrote {path}");
    }
}
