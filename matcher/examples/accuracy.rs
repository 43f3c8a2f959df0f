//! Accuracy and speed of the exhaustive matcher on synthetic prints, against ground truth.
//!
//! `cargo run --release -p interop-matcher --example accuracy -- [GALLERY] [SEARCHES] [JSON]`
//!
//! Enrols GALLERY people (default 5000), runs SEARCHES mated searches (fresh captures of
//! enrolled people) and as many non-mated ones (people never enrolled), and prints the
//! single-finger genuine/impostor score distributions with an EER estimate, tenprint
//! FNIR/FPIR at the decision threshold, and search throughput and latency. Writes JSON.

use interop_matcher::exhaustive::{THRESHOLD, compare_fingers};
use interop_matcher::synth::{CaptureModel, capture, master_tenprint};
use interop_matcher::{ExhaustiveMatcher, Matcher};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let gallery: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5000);
    let searches: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    let json = args
        .get(3)
        .cloned()
        .unwrap_or_else(|| "matcher-accuracy.json".into());
    let seed = 77;
    let model = CaptureModel::default();

    // Single-finger 1:1: genuine = two captures of one finger; impostor = different people.
    let pairs = 2000u64;
    let mut genuine = Vec::new();
    let mut impostor = Vec::new();
    for i in 0..pairs {
        let m = master_tenprint(seed, 1_000_000 + i);
        let f = (i % 10) as usize;
        let a = capture(&m, &model, 2 * i).fingers[f].clone();
        let b = capture(&m, &model, 2 * i + 1).fingers[f].clone();
        genuine.push(compare_fingers(&a, &b));
        let o = capture(&master_tenprint(seed, 2_000_000 + i), &model, 3 * i).fingers[f].clone();
        impostor.push(compare_fingers(&a, &o));
    }
    let eer = eer(&genuine, &impostor);
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;

    let t = Instant::now();
    let m = ExhaustiveMatcher::new(4);
    for p in 1..=gallery {
        m.enroll(
            p,
            &capture(&master_tenprint(seed, p), &model, 0xE0_0000 + p),
        )
        .unwrap();
    }
    let build = t.elapsed().as_secs_f64();

    let mut lat = Vec::new();
    let (mut missed, mut wrong, mut false_hits) = (0, 0, 0);
    let (mut gen_scores, mut imp_best) = (Vec::new(), Vec::new());
    let t = Instant::now();
    for i in 0..searches {
        let p = 1 + (i * 7919) % gallery;
        let probe = capture(&master_tenprint(seed, p), &model, 0xB0_0000 + p);
        let s = Instant::now();
        let r = m.search(&probe, 5).unwrap();
        lat.push(s.elapsed().as_secs_f64() * 1e3);
        gen_scores.push(
            r.candidates
                .first()
                .map_or(0.0, |c| if c.subject == p { c.score } else { 0.0 }),
        );
        match r.hit {
            None => missed += 1,
            Some(c) if c.subject != p => wrong += 1,
            _ => {}
        }
        let outsider = capture(&master_tenprint(seed, 5_000_000 + i), &model, i);
        let s = Instant::now();
        let r = m.search(&outsider, 5).unwrap();
        lat.push(s.elapsed().as_secs_f64() * 1e3);
        imp_best.push(r.candidates.first().map_or(0.0, |c| c.score));
        if r.hit.is_some() {
            false_hits += 1;
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.total_cmp(b));
    let q = |x: f64| lat[((lat.len() as f64 - 1.0) * x) as usize];
    gen_scores.sort_by(|a, b| a.total_cmp(b));
    imp_best.sort_by(|a, b| a.total_cmp(b));
    let fnir = (missed + wrong) as f64 / searches as f64;
    let fpir = false_hits as f64 / searches as f64;
    println!("single finger, {pairs} genuine / {pairs} impostor pairs:");
    println!(
        "  genuine mean {:.3}  impostor mean {:.3}  EER {:.2}%",
        mean(&genuine),
        mean(&impostor),
        eer * 100.0
    );
    println!(
        "tenprint, gallery {gallery}, {searches} mated + {searches} non-mated searches, threshold {THRESHOLD}:"
    );
    println!(
        "  FNIR {:.3}% (missed {missed}, wrong subject {wrong})  FPIR {:.3}% ({false_hits})",
        fnir * 100.0,
        fpir * 100.0
    );
    println!(
        "  lowest genuine score {:.3}  highest impostor score {:.3}",
        gen_scores[0],
        imp_best[imp_best.len() - 1]
    );
    println!(
        "  build {build:.2} s; {:.1} searches/s; latency mean {:.2} ms p50 {:.2} p99 {:.2} max {:.2}",
        (2 * searches) as f64 / elapsed,
        lat.iter().sum::<f64>() / lat.len() as f64,
        q(0.5),
        q(0.99),
        q(1.0)
    );
    let out = serde_json::json!({
        "gallery": gallery, "searches_mated": searches, "searches_non_mated": searches,
        "single_finger": {"genuine_mean": mean(&genuine), "impostor_mean": mean(&impostor), "eer": eer},
        "tenprint": {"threshold": THRESHOLD, "fnir": fnir, "fpir": fpir, "lowest_genuine": gen_scores[0], "highest_impostor": imp_best[imp_best.len()-1]},
        "build_s": build, "searches_per_s": (2 * searches) as f64 / elapsed,
        "latency_ms": {"p50": q(0.5), "p99": q(0.99), "max": q(1.0)},
    });
    std::fs::write(&json, serde_json::to_vec_pretty(&out).unwrap()).unwrap();
    println!("wrote {json}");
}

/// Equal error rate: the threshold where false rejects equal false accepts.
fn eer(genuine: &[f32], impostor: &[f32]) -> f64 {
    let mut best = (f64::MAX, 0.0);
    for i in 0..=200 {
        let t = i as f32 / 200.0;
        let frr = genuine.iter().filter(|s| **s < t).count() as f64 / genuine.len() as f64;
        let far = impostor.iter().filter(|s| **s >= t).count() as f64 / impostor.len() as f64;
        if (frr - far).abs() < best.0 {
            best = ((frr - far).abs(), (frr + far) / 2.0);
        }
    }
    best.1
}
