//! The matcher's benchmark: speed, memory and accuracy against ground truth, beside two
//! baselines in the same run.
//!
//! ```sh
//! cargo run --release -p interop-matcher --example matcher-bench -- --identities 20000
//! cargo run --release -p interop-matcher --example matcher-bench -- --quick
//! ```
//!
//! Flags: `--identities N` (gallery size, default 10,000), `--searches N` (mated and as many
//! non-mated, default 300), `--pairs N` (single-finger genuine and impostor pairs, default
//! 2,000), `--shards N` (gallery shards, default 4), `--quick` (1,000 / 100 / 500), `--out DIR`
//! (default `bench/results`), `--profile SECS` (after the build, only repeat the searches on
//! one thread for SECS and exit: for `perf record`, whose samples then show a search's cost;
//! `--profile-threads N` repeats them on N threads instead, for an A/B of the threaded rate),
//! `--stop-share X` (stage 1 walks only words listed for at most this share of the gallery,
//! instead of the matcher's default: to tune it), `--first auto|words|patterns` (stage 1's
//! first code, default auto: to compare them on one gallery), `--swap-shortlist K` (subjects
//! paired under their best swap hypothesis, default `SWAP_SHORTLIST`; the run also measures
//! none, side by side), `--probe-band B` (the search
//! probes' capture: `mix`, the default, draws each booking's band from the mix of real
//! bookings, `interop_matcher::capture`; `livescan`, `ink` or `poor` puts every probe in one
//! band), `--probe-quality Q` (a stress knob instead: every probe finger captured with the
//! plain model scaled by Q, 1 = the gallery's, 2 = a poor card, no missing or swapped
//! fingers). The gallery is always captured with the default model.
//!
//! Prints a table and writes `DIR/matcher-bench-<identities>.json`:
//! - the generator's time for the gallery's prints (master prints and a capture each, on every
//!   core), gallery build time, resident memory and bytes per identity;
//! - tenprint searches/s and p50/p99 latency with 1 and 2 threads, one search at a time (each
//!   search spread over the threads), and with 2 threads taking a search each at once, as a
//!   gateway under load runs them (`spawn_blocking` per request, one shared thread pool);
//! - FNIR at FPIR 0.1% and 1% (thresholds set from the non-mated searches' top scores; with
//!   fewer than 1,000 non-mated searches the 0.1% point is the highest score, and says so),
//!   and FNIR/FPIR at the matcher's fixed threshold; the threshold the matcher calibrates for
//!   FPIR 0.1% from its own gallery (`calibrate_threshold`, what the gateway ships), with
//!   FPIR and FNIR there on the probes above, which the calibration never saw; every rate
//!   with its 95% Wilson interval, and FNIR per capture band;
//! - single-finger 1:1 EER of our comparison and of NIST Bozorth3 (the `fprint-bozorth3` port,
//!   a dev-dependency only) on the same pairs, in each capture band (an enrolment finger
//!   against a booking's finger of the band, dry, wet and smudged ones included), with
//!   genuine/impostor histograms;
//! - the exhaustive baseline: every gallery finger paired with the probe (no shortlist), timed
//!   on a subsample of the gallery and extrapolated linearly — labelled as such;
//! - effective finger comparisons per second (gallery fingers × searches/s), beside NGI's
//!   announced 2.5 billion/s.
//!
//! A program, not a test: figures on shared machines are noisy; compare within one run.

use interop_matcher::capture::{Band, Mix, booking_capture};
use interop_matcher::search::{
    FirstCode, SHORTLIST_PER_CODE, SWAP_SHORTLIST, ShortlistRanks, THRESHOLD, compare_fingers,
    pattern_shortlist_len, shortlist_len,
};
use interop_matcher::stats::wilson;
use interop_matcher::synth::{CaptureModel, MasterTenprint, capture, master_tenprint};
use interop_matcher::template::FingerTemplate;
use interop_matcher::{IndexedMatcher, Matcher, Tenprint};
use rayon::prelude::*;
use std::time::Instant;

const SEED: u64 = 77;

struct Args {
    identities: u64,
    searches: u64,
    pairs: u64,
    out: String,
    shards: usize,
    profile_s: u64,
    profile_threads: usize,
    stop_share: Option<f64>,
    first: FirstCode,
    /// Subjects paired under their best swap hypothesis (`SWAP_SHORTLIST` by default).
    swaps: usize,
    /// Kept subjects whose swap hypotheses are scored (`SWAP_SCORED` by default).
    swap_scored: Option<usize>,
    /// The probes' capture: `None` the plain model at `probe_quality`, or a band mix.
    probe_mix: Option<Mix>,
    probe_label: String,
    probe_quality: f32,
}

fn args() -> Args {
    let mut a = Args {
        shards: 4,
        profile_s: 0,
        profile_threads: 1,
        stop_share: None,
        first: FirstCode::Auto,
        swaps: SWAP_SHORTLIST,
        swap_scored: None,
        probe_mix: Some(Mix::DEFAULT),
        probe_label: "the mix of real bookings".into(),
        probe_quality: 1.0,
        identities: 10_000,
        searches: 300,
        pairs: 2_000,
        out: "bench/results".into(),
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let num = |i: usize| -> u64 {
            v.get(i + 1)
                .and_then(|s| s.replace('_', "").parse().ok())
                .unwrap_or_else(|| {
                    eprintln!("{} needs a number", v[i]);
                    std::process::exit(2)
                })
        };
        match v[i].as_str() {
            "--identities" => a.identities = num(i).max(1),
            "--searches" => a.searches = num(i).max(1),
            "--pairs" => a.pairs = num(i).max(1),
            "--shards" => a.shards = num(i).clamp(1, 256) as usize,
            "--profile" => a.profile_s = num(i),
            "--profile-threads" => a.profile_threads = num(i).clamp(1, 256) as usize,
            "--stop-share" => {
                a.stop_share = Some(
                    v.get(i + 1)
                        .and_then(|s| s.parse().ok())
                        .filter(|x: &f64| (0.0..=1.0).contains(x))
                        .unwrap_or_else(|| {
                            eprintln!("--stop-share needs a share between 0 and 1");
                            std::process::exit(2)
                        }),
                )
            }
            "--swap-shortlist" => a.swaps = num(i) as usize,
            "--swap-scored" => a.swap_scored = Some(num(i) as usize),
            "--first" => {
                a.first = match v.get(i + 1).map(String::as_str) {
                    Some("auto") => FirstCode::Auto,
                    Some("words") => FirstCode::Words,
                    Some("patterns") => FirstCode::Patterns,
                    _ => {
                        eprintln!("--first needs auto, words or patterns");
                        std::process::exit(2)
                    }
                }
            }
            "--probe-quality" => {
                a.probe_quality = v
                    .get(i + 1)
                    .and_then(|s| s.parse().ok())
                    .filter(|q: &f32| (0.0..=5.0).contains(q))
                    .unwrap_or_else(|| {
                        eprintln!("--probe-quality needs a factor between 0 and 5 (1 = default)");
                        std::process::exit(2)
                    });
                a.probe_mix = None;
                a.probe_label = format!("plain capture quality {}", a.probe_quality);
            }
            "--probe-band" => {
                let v = v.get(i + 1).map(String::as_str).unwrap_or("");
                if v == "mix" {
                    a.probe_mix = Some(Mix::DEFAULT);
                    a.probe_label = "the mix of real bookings".into();
                } else {
                    let band: Band = v.parse().unwrap_or_else(|e| {
                        eprintln!("--probe-band: {e} (or mix)");
                        std::process::exit(2)
                    });
                    a.probe_mix = Some(Mix::only(band));
                    a.probe_label = format!("{} only", band.name());
                }
            }
            "--out" => {
                a.out = v.get(i + 1).cloned().unwrap_or(a.out);
            }
            "--quick" => {
                (a.identities, a.searches, a.pairs) = (1_000, 100, 500);
                i += 1;
                continue;
            }
            other => {
                eprintln!("unknown flag {other}; see the doc comment of matcher-bench.rs");
                std::process::exit(2)
            }
        }
        i += 2;
    }
    a
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn enrolment(p: u64, model: &CaptureModel) -> Tenprint {
    capture(&master_tenprint(SEED, p), model, 0xE0_0000 + p)
}

/// A search probe of `master`: a booking's capture from the mix (its band, and whether two
/// fingers were swapped) or the plain model at the stress factor (no band, no swap).
fn probe_capture(a: &Args, master: &MasterTenprint, seed: u64) -> (Option<Band>, bool, Tenprint) {
    match a.probe_mix {
        Some(mix) => {
            let c = booking_capture(master, mix.draw(seed), seed);
            (Some(c.band), c.swapped.is_some(), c.print)
        }
        None => (
            None,
            false,
            capture(master, &CaptureModel::with_quality(a.probe_quality), seed),
        ),
    }
}

/// FNIR at the smallest threshold with at most `fpir` of the non-mated searches' top scores
/// (`non_top`, ascending) at or above it, over the mated searches' mate scores: (threshold,
/// FNIR, whether the FPIR is unresolved — no non-mated search may reach it).
fn fnir_at(non_top: &[f64], mated_top: &[f64], fpir: f64) -> (f64, f64, bool) {
    let allowed = (fpir * non_top.len() as f64).floor() as usize;
    let t = if allowed == 0 {
        non_top.last().copied().unwrap_or(0.0) + 1e-6
    } else {
        non_top[non_top.len() - allowed]
    };
    let fnir = mated_top.iter().filter(|s| **s < t).count() as f64 / mated_top.len() as f64;
    (t, fnir, allowed == 0)
}

/// Each mated search's score for its mate (0 if the mate is not the top candidate).
fn mate_tops(m: &IndexedMatcher, mated: &[Mated]) -> Vec<f64> {
    mated
        .iter()
        .map(|(p, _, probe)| {
            let r = m.search(probe, 1).expect("search");
            r.candidates
                .first()
                .filter(|c| c.subject == *p)
                .map_or(0.0, |c| c.score as f64)
        })
        .collect()
}

/// Each non-mated search's top score, ascending.
fn non_tops(m: &IndexedMatcher, non_mated: &[(Option<Band>, Tenprint)]) -> Vec<f64> {
    let mut v: Vec<f64> = non_mated
        .iter()
        .map(|(_, probe)| {
            m.search(probe, 1)
                .expect("search")
                .candidates
                .first()
                .map_or(0.0, |c| c.score as f64)
        })
        .collect();
    v.sort_by(|x, y| x.total_cmp(y));
    v
}

/// A rate and its 95% interval, in per cent: "0.300% [0.10, 0.87]".
fn pct(k: u64, n: u64) -> String {
    let (lo, hi) = wilson(k, n);
    format!(
        "{:.3}% [{:.2}, {:.2}]",
        100.0 * k as f64 / n.max(1) as f64,
        100.0 * lo,
        100.0 * hi
    )
}

fn rate_json(k: u64, n: u64) -> serde_json::Value {
    let (lo, hi) = wilson(k, n);
    serde_json::json!({"errors": k, "trials": n, "rate": k as f64 / n.max(1) as f64, "ci95": [lo, hi]})
}

fn bozorth(f: &FingerTemplate) -> Vec<fprint_bozorth3::Minutia> {
    f.minutiae
        .iter()
        .map(|m| fprint_bozorth3::Minutia {
            x: m.x as i32,
            y: m.y as i32,
            theta: m.angle_deg as i32 % 360,
        })
        .collect()
}

/// Equal error rate over `steps` thresholds spanning the scores.
fn eer(genuine: &[f64], impostor: &[f64]) -> f64 {
    let hi = genuine
        .iter()
        .chain(impostor)
        .copied()
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let mut best = (f64::MAX, 0.0);
    for i in 0..=1000 {
        let t = hi * i as f64 / 1000.0;
        let frr = genuine.iter().filter(|s| **s < t).count() as f64 / genuine.len() as f64;
        let far = impostor.iter().filter(|s| **s >= t).count() as f64 / impostor.len() as f64;
        if (frr - far).abs() < best.0 {
            best = ((frr - far).abs(), (frr + far) / 2.0);
        }
    }
    best.1
}

fn histogram(v: &[f64], hi: f64) -> Vec<usize> {
    let mut h = vec![0; 20];
    for x in v {
        h[((x / hi.max(1e-9)) * 19.999).clamp(0.0, 19.0) as usize] += 1;
    }
    h
}

/// Single-finger comparisons of one band: ours and Bozorth3's scores, and their EERs.
struct SingleFinger {
    band: Option<Band>,
    g_ours: Vec<f64>,
    i_ours: Vec<f64>,
    g_boz: Vec<f64>,
    i_boz: Vec<f64>,
    eer_ours: f64,
    eer_boz: f64,
    hi_ours: f64,
    hi_boz: f64,
}

/// `a.pairs` genuine and impostor pairs: an enrolment finger (default model) against a
/// booking's finger of the same person, or of another, in `band` (or the plain stress model).
/// A pair whose second finger is missing from the booking is drawn again from the next person.
fn single_finger(a: &Args, band: Option<Band>) -> SingleFinger {
    let model = CaptureModel::default();
    let second = |master: &MasterTenprint, seed: u64, position: u8| {
        let print = match band {
            Some(b) => {
                let c = booking_capture(master, b, seed);
                // The finger truly at `position`, wherever a swap recorded it.
                let label = match c.swapped {
                    Some((x, y)) if position == x => y,
                    Some((x, y)) if position == y => x,
                    _ => position,
                };
                return c.print.fingers.into_iter().find(|f| f.position == label);
            }
            None => capture(master, &CaptureModel::with_quality(a.probe_quality), seed),
        };
        print.fingers.into_iter().find(|f| f.position == position)
    };
    let pairs: Vec<(f64, f64, f64, f64)> = (0..a.pairs)
        .into_par_iter()
        .map(|i| {
            let position = (i % 10) as u8 + 1;
            (0..)
                .find_map(|k: u64| {
                    let j = i + k * 1_000_003;
                    let master = master_tenprint(SEED, 1_000_000 + j);
                    let x = capture(&master, &model, 2 * j)
                        .fingers
                        .into_iter()
                        .find(|f| f.position == position)?;
                    let y = second(&master, 2 * j + 1, position)?;
                    let o = second(&master_tenprint(SEED, 2_000_000 + j), 3 * j, position)?;
                    let (bx, by, bo) = (bozorth(&x), bozorth(&y), bozorth(&o));
                    Some((
                        compare_fingers(&x, &y) as f64,
                        compare_fingers(&x, &o) as f64,
                        fprint_bozorth3::match_score(&bx, &by) as f64,
                        fprint_bozorth3::match_score(&bx, &bo) as f64,
                    ))
                })
                .expect("a printable finger")
        })
        .collect();
    let g_ours: Vec<f64> = pairs.iter().map(|p| p.0).collect();
    let i_ours: Vec<f64> = pairs.iter().map(|p| p.1).collect();
    let g_boz: Vec<f64> = pairs.iter().map(|p| p.2).collect();
    let i_boz: Vec<f64> = pairs.iter().map(|p| p.3).collect();
    let hi = |v: &[f64], w: &[f64]| v.iter().chain(w).copied().fold(0.0, f64::max);
    SingleFinger {
        band,
        eer_ours: eer(&g_ours, &i_ours),
        eer_boz: eer(&g_boz, &i_boz),
        hi_ours: hi(&g_ours, &i_ours),
        hi_boz: hi(&g_boz, &i_boz),
        g_ours,
        i_ours,
        g_boz,
        i_boz,
    }
}

/// A mated search: the person, the probe's capture band, the probe.
type Mated = (u64, Option<Band>, Tenprint);

struct Speed {
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// The probes searched one after another on the current pool (each search spread over its
/// threads): searches/s and latency percentiles.
fn timed_searches(m: &IndexedMatcher, probes: &[Tenprint]) -> Speed {
    timed_streams(m, probes, 1)
}

/// What pairing `with` subjects under a swap hypothesis costs against none: the probes in
/// `rounds` blocks, each searched one after another under both settings, the order
/// alternating from block to block, on the current pool. Returns the median and the range of
/// the blocks' time ratios (with / without), and the mean ms a search under each: on a shared,
/// noisy machine a ratio within each block is steadier than two rates measured apart.
fn swap_cost(
    m: &mut IndexedMatcher,
    probes: &[Tenprint],
    with: usize,
    rounds: usize,
) -> (f64, f64, f64, f64, f64) {
    let (mut ratios, mut total) = (vec![], [0f64; 2]);
    for (r, block) in probes
        .chunks(probes.len().div_ceil(rounds).max(1))
        .enumerate()
    {
        let mut secs = [0f64; 2];
        for i in [r % 2, 1 - r % 2] {
            m.set_swap_shortlist(if i == 0 { with } else { 0 });
            let t = Instant::now();
            for p in block {
                std::hint::black_box(m.search(p, 5).expect("search"));
            }
            secs[i] = t.elapsed().as_secs_f64();
        }
        ratios.push(secs[0] / secs[1]);
        total[0] += secs[0];
        total[1] += secs[1];
    }
    m.set_swap_shortlist(with);
    ratios.sort_by(|a, b| a.total_cmp(b));
    let n = probes.len() as f64;
    (
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
        1e3 * total[0] / n,
        1e3 * total[1] / n,
    )
}

/// The probes split between `streams` threads of the current pool, each searching its share
/// one after another while the others do theirs: the searches/s of the whole, the latency of
/// each search.
fn timed_streams(m: &IndexedMatcher, probes: &[Tenprint], streams: usize) -> Speed {
    let t = Instant::now();
    let mut lat: Vec<f64> = probes
        .par_chunks(probes.len().div_ceil(streams).max(1))
        .flat_map_iter(|share| {
            share.iter().map(|p| {
                let s = Instant::now();
                let _ = m.search(p, 5).expect("search");
                s.elapsed().as_secs_f64() * 1e3
            })
        })
        .collect();
    let secs = t.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.total_cmp(b));
    let q = |x: f64| lat[((lat.len() as f64 - 1.0) * x) as usize];
    Speed {
        per_s: probes.len() as f64 / secs,
        p50_ms: q(0.5),
        p99_ms: q(0.99),
    }
}

fn main() {
    let a = args();
    let model = CaptureModel::default();

    // Gallery build: captures are made first (on every core, timed on their own: the
    // generator's speed), so the build time is enrolment alone.
    let t = Instant::now();
    let prints: Vec<(u64, Tenprint)> = (1..=a.identities)
        .into_par_iter()
        .map(|p| (p, enrolment(p, &model)))
        .collect();
    let generation_s = t.elapsed().as_secs_f64();
    let rss0 = rss_bytes();
    let t = Instant::now();
    let mut m = IndexedMatcher::new(a.shards);
    if let Some(share) = a.stop_share {
        m = m.with_stop_share(share);
    }
    m.set_first_code(a.first);
    m.set_swap_shortlist(a.swaps);
    if let Some(k) = a.swap_scored {
        m.set_swap_scored(k);
    }
    // Bulk load: prints prepared on every core, as the gateway loads a gallery file.
    m.enroll_many(&prints).expect("enrol");
    // Fold the last enrolments into the compressed index, as a bulk load would.
    let c = Instant::now();
    m.compact();
    let compact_s = c.elapsed().as_secs_f64();
    let build_s = t.elapsed().as_secs_f64();
    let gallery_bytes = rss_bytes().saturating_sub(rss0);
    let heap = m.heap_bytes();
    let fingers: usize = prints.iter().map(|(_, t)| t.fingers.len()).sum();
    let sample: Vec<(u64, Tenprint)> = prints.iter().take(1000).cloned().collect();
    drop(prints);

    // Mated (fresh captures of enrolled people) and non-mated (never enrolled) probes, each
    // with its capture band.
    let (mated, mated_swapped): (Vec<Mated>, Vec<bool>) = (0..a.searches)
        .into_par_iter()
        .map(|i| {
            let p = 1 + (i * 7919) % a.identities;
            let (band, swapped, print) =
                probe_capture(&a, &master_tenprint(SEED, p), 0xB0_0000 + p);
            ((p, band, print), swapped)
        })
        .unzip();
    let non_mated: Vec<(Option<Band>, Tenprint)> = (0..a.searches)
        .into_par_iter()
        .map(|i| {
            let (band, _, print) = probe_capture(&a, &master_tenprint(SEED, 50_000_000 + i), i);
            (band, print)
        })
        .collect();
    let all: Vec<Tenprint> = mated
        .iter()
        .map(|(_, _, t)| t.clone())
        .chain(non_mated.iter().map(|(_, t)| t.clone()))
        .collect();

    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("thread pool")
    };
    if a.profile_s > 0 {
        // Only searches, on one thread (or `--profile-threads`), for a profiler (`perf record
        // -p`, once this line is printed): nothing else runs.
        eprintln!(
            "generation {generation_s:.2} s, build {build_s:.2} s (compaction {compact_s:.2} s), heap {} bytes/identity",
            heap.total() / a.identities as usize
        );
        eprintln!("profiling: searches only, pid {}", std::process::id());
        let t = Instant::now();
        let mut n = 0u64;
        pool(a.profile_threads).install(|| {
            while t.elapsed().as_secs() < a.profile_s {
                for p in &all {
                    std::hint::black_box(m.search(p, 5).expect("search"));
                    n += 1;
                }
            }
        });
        println!(
            "profile: {n} searches in {:.1} s ({:.1}/s)",
            t.elapsed().as_secs_f64(),
            n as f64 / t.elapsed().as_secs_f64()
        );
        return;
    }

    // Speed with 1 and 2 threads.
    let one = pool(1).install(|| timed_searches(&m, &all));
    let two = pool(2).install(|| timed_searches(&m, &all));
    let two_at_once = pool(2).install(|| timed_streams(&m, &all, 2));

    // Accuracy: the right subject's top score for mated searches, the top score for
    // non-mated ones.
    let mut mated_top: Vec<f64> = vec![];
    let (mut missed, mut wrong) = (0, 0);
    for (p, _, probe) in &mated {
        let r = m.search(probe, 1).expect("search");
        let top = r.candidates.first();
        mated_top.push(
            top.filter(|c| c.subject == *p)
                .map_or(0.0, |c| c.score as f64),
        );
        match r.hit {
            None => missed += 1,
            Some(c) if c.subject != *p => wrong += 1,
            _ => {}
        }
    }
    // Where the mate ranks in each stage-1 list: a search finds it only if one of the two
    // ranks is below the shortlist size, so this is the shortlist the gallery size needs.
    let ranks: Vec<ShortlistRanks> = mated
        .iter()
        .map(|(p, _, probe)| {
            m.shortlist_ranks(probe, *p)
                .expect("ranks")
                .expect("mate enrolled")
        })
        .collect();
    // Postings stage 1 walks per search (the part that grows with the gallery).
    // Postings walked by the probes ranked by words (each probe's code decided once).
    let (by_patterns, walked) = mated
        .iter()
        .fold((0, vec![]), |(n, mut walked), (_, _, probe)| {
            match m.first_code_for(probe).expect("code") {
                FirstCode::Words => {
                    walked.push(m.stage1_postings(probe).expect("postings"));
                    (n, walked)
                }
                _ => (n + 1, walked),
            }
        });
    let walked_mean = walked.iter().sum::<usize>() as f64 / walked.len().max(1) as f64;
    let rank_stats = |f: &dyn Fn(&ShortlistRanks) -> usize| {
        let mut v: Vec<usize> = ranks.iter().map(f).collect();
        v.sort_unstable();
        let q = |x: f64| v[((v.len() as f64 - 1.0) * x) as usize];
        (q(0.5), q(0.99), *v.last().unwrap_or(&0))
    };
    // A mate the word score did not keep ranks last by the fused score (usize::MAX).
    let by_words = rank_stats(&|r| r.word);
    let by_hist = rank_stats(&|r| r.histogram);
    let by_either = rank_stats(&|r| r.word.min(r.histogram));
    let by_fused = rank_stats(&|r| r.fused.unwrap_or(usize::MAX));
    let not_kept = ranks.iter().filter(|r| r.fused.is_none()).count();
    // Mates a shortlist of k by the fused score would lose, with and without the per-code
    // guard the search adds.
    let beyond: Vec<(usize, usize, usize)> = [1usize, 2, 3, 5, 10, 15, 20, 30, 40]
        .iter()
        .map(|&k| {
            let lost = |guard: usize| {
                ranks
                    .iter()
                    .filter(|r| {
                        r.fused.is_none_or(|f| f >= k)
                            && r.word >= guard
                            && r.histogram_kept.is_none_or(|h| h >= guard)
                    })
                    .count()
            };
            (k, lost(0), lost(SHORTLIST_PER_CODE))
        })
        .collect();
    let non_top = non_tops(&m, &non_mated);
    let false_hits = non_top.iter().filter(|s| **s >= THRESHOLD as f64).count();
    let (t1, fnir1, floor1) = fnir_at(&non_top, &mated_top, 0.001);
    let (t2, fnir2, floor2) = fnir_at(&non_top, &mated_top, 0.01);
    // The matcher's own operating point for FPIR 0.1%, set from enrolled prints searched with
    // themselves left out, then checked on the probes above, which it never saw.
    let t = Instant::now();
    let cal = m
        .calibrate_threshold(0.001, (a.identities as usize).min(1000))
        .expect("calibrate");
    let cal_s = t.elapsed().as_secs_f64();
    // Strangers hit and mates missed at it, counted (the rates follow).
    let cal_false = non_top
        .iter()
        .filter(|s| **s >= cal.threshold as f64)
        .count() as u64;
    let cal_missed = mated_top
        .iter()
        .filter(|s| **s < cal.threshold as f64)
        .count() as u64;
    let cal_fpir = cal_false as f64 / non_top.len() as f64;
    let cal_fnir = cal_missed as f64 / mated_top.len() as f64;
    m.set_threshold(THRESHOLD);
    // The same gallery and probes with no swap hypothesis scored (`swaps.rs`): what the
    // hypotheses cost and what they find, side by side.
    let (cost, cost_lo, cost_hi, ms_with, ms_without) =
        pool(1).install(|| swap_cost(&mut m, &all, a.swaps, 20));
    m.set_swap_shortlist(0);
    let plain_mated = mate_tops(&m, &mated);
    let plain_non = non_tops(&m, &non_mated);
    m.set_swap_shortlist(a.swaps);
    let (plain_t1, plain_fnir1, _) = fnir_at(&plain_non, &plain_mated, 0.001);
    let swapped_missed = |tops: &[f64], t: f64| {
        (0..tops.len())
            .filter(|&i| mated_swapped[i] && tops[i] < t)
            .count()
    };
    let (plain_swapped_missed, swapped_missed_t1) = (
        swapped_missed(&plain_mated, plain_t1),
        swapped_missed(&mated_top, t1),
    );
    // FNIR by capture band, at the FPIR 0.1% point and at the calibrated threshold.
    let bands: Vec<(Option<Band>, u64, u64, u64)> = {
        let mut seen: Vec<Option<Band>> = mated.iter().map(|(_, b, _)| *b).collect();
        seen.sort_unstable();
        seen.dedup();
        seen.into_iter()
            .map(|band| {
                let tops: Vec<f64> = mated
                    .iter()
                    .zip(&mated_top)
                    .filter(|((_, b, _), _)| *b == band)
                    .map(|(_, s)| *s)
                    .collect();
                let below = |t: f64| tops.iter().filter(|s| **s < t).count() as u64;
                (
                    band,
                    tops.len() as u64,
                    below(t1),
                    below(cal.threshold as f64),
                )
            })
            .collect()
    };
    let band_name = |b: Option<Band>| b.map_or("plain", Band::name);

    // Single finger, ours and Bozorth3 on the same pairs, per capture band of the second
    // finger (the first is an enrolment at the default model).
    let t = Instant::now();
    let pair_bands: Vec<Option<Band>> = match a.probe_mix {
        Some(_) => Band::ALL.iter().copied().map(Some).collect(),
        None => vec![None],
    };
    let single: Vec<SingleFinger> = pair_bands
        .iter()
        .map(|&band| single_finger(&a, band))
        .collect();
    let pairs_s = t.elapsed().as_secs_f64();

    // Exhaustive baseline: pair every finger of a gallery subsample with the probe.
    let base_probes = 5.min(mated.len());
    let t = Instant::now();
    for (_, _, probe) in mated.iter().take(base_probes) {
        for (_, g) in &sample {
            for (pf, gf) in probe.fingers.iter().zip(&g.fingers) {
                std::hint::black_box(compare_fingers(pf, gf));
            }
        }
    }
    let per_subject_s = t.elapsed().as_secs_f64() / (base_probes * sample.len()).max(1) as f64;
    let baseline_search_ms = per_subject_s * a.identities as f64 * 1e3;

    let effective = fingers as f64 * two.per_s;
    let n = a.identities;
    println!(
        "== matcher-bench: {n} identities in {} shards, {} mated + {} non-mated searches (probes: {}) ==",
        a.shards, a.searches, a.searches, a.probe_label
    );
    println!(
        "  generation (master prints + a capture, all cores) {generation_s:>7.2} s  ({:.0} identities/s)",
        a.identities as f64 / generation_s
    );
    println!(
        "  gallery build                  {build_s:>10.2} s  (of which compaction {compact_s:.2} s)"
    );
    println!(
        "  gallery memory                 {:>10.1} MiB  ({:.0} bytes/identity)",
        gallery_bytes as f64 / 1048576.0,
        gallery_bytes as f64 / n as f64
    );
    println!(
        "    of which heap, bytes/identity: minutiae {:.0}, histograms {:.0}, word index {:.0}, subject ids {:.0} (total {:.0})",
        heap.minutiae as f64 / n as f64,
        heap.histograms as f64 / n as f64,
        heap.index as f64 / n as f64,
        heap.subjects as f64 / n as f64,
        heap.total() as f64 / n as f64
    );
    for (name, s) in [
        ("1 thread", &one),
        ("2 threads", &two),
        ("2 threads, 2 at once", &two_at_once),
    ] {
        println!(
            "  searches, {name:<20} {:>10.1} /s   p50 {:>8.2} ms  p99 {:>8.2} ms",
            s.per_s, s.p50_ms, s.p99_ms
        );
    }
    println!(
        "  exhaustive baseline (no shortlist; {} subjects x {base_probes} probes, extrapolated)  {:>10.1} ms/search",
        sample.len(),
        baseline_search_ms
    );
    println!(
        "  effective finger comparisons   {effective:>10.3e} /s  (NGI 2011: 2.5e9 /s over a data centre)"
    );
    println!(
        "  tenprint at the fixed threshold {THRESHOLD}: FNIR {} (missed {missed}, wrong {wrong})  FPIR {}",
        pct(missed + wrong, a.searches),
        pct(false_hits as u64, a.searches)
    );
    for (fpir, t, fnir, floor) in [(0.1, t1, fnir1, floor1), (1.0, t2, fnir2, floor2)] {
        println!(
            "  FNIR at FPIR {fpir}%:             {:>9.3}%  (threshold {t:.3}{})",
            100.0 * fnir,
            if floor {
                "; fewer non-mated searches than this FPIR resolves: above the highest impostor"
            } else {
                ""
            }
        );
    }
    println!(
        "  self-calibrated for FPIR 0.1% (shipped; {} enrolled prints as probes, {cal_s:.1} s): threshold {:.3}{}; on the probes above FPIR {}, FNIR {}",
        cal.searches,
        cal.threshold,
        if cal.resolved {
            ""
        } else {
            " (not resolved: extrapolated from the impostor tail)"
        },
        pct(cal_false, non_top.len() as u64),
        pct(cal_missed, mated_top.len() as u64)
    );
    println!(
        "  swap hypotheses (pairing the best {} under two adjacent fingers swapped), against none on the same gallery: a search on one thread {ms_with:.2} ms against {ms_without:.2} ms, {cost:.2}x (median of 20 interleaved blocks, range {cost_lo:.2}-{cost_hi:.2}); FNIR at FPIR 0.1% {:.3}% against {:.3}%; swapped probes missed there {swapped_missed_t1} against {plain_swapped_missed} of {}",
        a.swaps,
        100.0 * fnir1,
        100.0 * plain_fnir1,
        mated_swapped.iter().filter(|s| **s).count()
    );
    for (band, n, at_t1, at_cal) in &bands {
        println!(
            "    band {:<9} {n:>6} mated: FNIR at FPIR 0.1% {}   at the calibrated threshold {}",
            band_name(*band),
            pct(*at_t1, *n),
            pct(*at_cal, *n)
        );
    }
    println!(
        "  stage 1's first code ({:?}): pattern classes for {by_patterns} of {} mated probes; words for the others, walking {walked_mean:.0} postings a search ({:.1} per identity)",
        a.first,
        mated.len(),
        walked_mean / a.identities as f64
    );
    for (name, (p50, p99, max)) in [
        ("first code", by_words),
        ("histogram code", by_hist),
        ("either code", by_either),
        ("fused score", by_fused),
    ] {
        let show = |x: usize| {
            if x == usize::MAX {
                "out".to_string()
            } else {
                x.to_string()
            }
        };
        println!(
            "  mate's stage-1 rank by {name:<23} p50 {:>5}  p99 {:>5}  max {:>5}",
            show(p50),
            show(p99),
            show(max)
        );
    }
    // The lengths for the code the mated probes were ranked by (all the same here).
    let code = if by_patterns > 0 {
        FirstCode::Patterns
    } else {
        FirstCode::Words
    };
    let short_len = if code == FirstCode::Patterns {
        pattern_shortlist_len(a.identities as usize)
    } else {
        shortlist_len(a.identities as usize)
    };
    println!(
        "  mates the first code did not keep (cascade of {}): {not_kept}",
        m.cascade_len_for(code)
    );
    println!(
        "  mates a fused shortlist of k would lose (alone/with the guard of {SHORTLIST_PER_CODE} per code): {}  (now {})",
        beyond
            .iter()
            .map(|(k, n, g)| format!("k={k}: {n}/{g}"))
            .collect::<Vec<_>>()
            .join(", "),
        short_len
    );
    // The mates missed at the shipped threshold: which were lost before pairing (stage 1 did
    // not shortlist them), and which had two fingers swapped.
    let lost_in_stage1 = |r: &ShortlistRanks| !r.shortlisted(a.identities as usize);
    let misses: Vec<usize> = (0..mated.len())
        .filter(|&i| mated_top[i] < cal.threshold as f64)
        .collect();
    let miss_stage1 = misses
        .iter()
        .filter(|&&i| lost_in_stage1(&ranks[i]))
        .count();
    let miss_swapped = misses.iter().filter(|&&i| mated_swapped[i]).count();
    let swapped_all = mated_swapped.iter().filter(|s| **s).count();
    let swapped_missed_stage1 = misses
        .iter()
        .filter(|&&i| mated_swapped[i] && lost_in_stage1(&ranks[i]))
        .count();
    // Of the swapped mates lost in stage 1: no hypothesis scored for them (not among the best
    // `SWAP_SCORED` by the fused score, or none raised it), or their rank under it.
    let swap_ranks: Vec<String> = misses
        .iter()
        .filter(|&&i| mated_swapped[i] && lost_in_stage1(&ranks[i]))
        .map(|&i| ranks[i].swapped.map_or("-".to_string(), |r| r.to_string()))
        .collect();
    println!(
        "  mates missed at the calibrated threshold: {}; lost in stage 1 {miss_stage1}; with two fingers swapped {miss_swapped} ({swapped_missed_stage1} of them in stage 1, their rank by the best hypothesis: {}; -: none scored), of {swapped_all} swapped probes",
        misses.len(),
        swap_ranks.join(" ")
    );
    for sf in &single {
        println!(
            "  single finger, {:<9} {} pairs: EER ours {:.2}%   Bozorth3 {:.2}%",
            band_name(sf.band),
            a.pairs,
            100.0 * sf.eer_ours,
            100.0 * sf.eer_boz,
        );
    }
    println!("    ({pairs_s:.1} s for all pairs, both matchers)");
    let json = serde_json::json!({
        "identities": n,
        "shards": a.shards,
        "searches_mated": a.searches,
        "searches_non_mated": a.searches,
        "build_s": build_s,
        "compact_s": compact_s,
        "generation_s": generation_s,
        "gallery_bytes": gallery_bytes,
        "bytes_per_identity": gallery_bytes as f64 / n as f64,
        "heap_bytes_per_identity": {
            "minutiae": heap.minutiae as f64 / n as f64,
            "histograms": heap.histograms as f64 / n as f64,
            "word_index": heap.index as f64 / n as f64,
            "subject_ids": heap.subjects as f64 / n as f64,
            "total": heap.total() as f64 / n as f64,
        },
        "speed": {
            "threads_1": {"per_s": one.per_s, "p50_ms": one.p50_ms, "p99_ms": one.p99_ms},
            "threads_2": {"per_s": two.per_s, "p50_ms": two.p50_ms, "p99_ms": two.p99_ms},
            "threads_2_two_at_once": {"per_s": two_at_once.per_s, "p50_ms": two_at_once.p50_ms, "p99_ms": two_at_once.p99_ms},
        },
        "exhaustive_baseline": {
            "label": "every gallery finger paired with the probe, timed on a subsample and extrapolated linearly",
            "subsample_subjects": sample.len(),
            "probes": base_probes,
            "ms_per_search": baseline_search_ms,
        },
        "effective_finger_comparisons_per_s": effective,
        "tenprint": {
            "threshold": THRESHOLD,
            "fnir": (missed + wrong) as f64 / a.searches as f64,
            "fpir": false_hits as f64 / a.searches as f64,
            "fnir_ci95": wilson(missed + wrong, a.searches),
            "fpir_ci95": wilson(false_hits as u64, a.searches),
            "fnir_at_fpir_0_1pct": {"fnir": fnir1, "threshold": t1, "under_resolved": floor1},
            "fnir_at_fpir_1pct": {"fnir": fnir2, "threshold": t2, "under_resolved": floor2},
            "self_calibrated_fpir_0_1pct": {
                "threshold": cal.threshold,
                "searches": cal.searches,
                "resolved": cal.resolved,
                "highest_impostor": cal.highest_impostor,
                "seconds": cal_s,
                "fpir_on_probes": cal_fpir,
                "fnir_on_probes": cal_fnir,
            },
            "by_band": bands.iter().map(|(band, n, at_t1, at_cal)| serde_json::json!({
                "band": band_name(*band),
                "mated": n,
                "fnir_at_fpir_0_1pct": rate_json(*at_t1, *n),
                "fnir_at_calibrated": rate_json(*at_cal, *n),
            })).collect::<Vec<_>>(),
        },
        "shortlist": {
            "size_fused": short_len,
            "size_per_code": SHORTLIST_PER_CODE,
            "first_code": format!("{:?}", a.first),
            "probes": a.probe_label,
            "mated_probes_ranked_by_patterns": by_patterns,
            "postings_walked_per_search_by_words": walked_mean,
            "mate_rank_first_code": {"p50": by_words.0, "p99": by_words.1, "max": by_words.2},
            "mate_rank_histogram": {"p50": by_hist.0, "p99": by_hist.1, "max": by_hist.2},
            "mate_rank_either": {"p50": by_either.0, "p99": by_either.1, "max": by_either.2},
            "mate_rank_fused": {"p50": by_fused.0, "p99": by_fused.1, "max": by_fused.2},
            "cascade": m.cascade_len_for(code),
            "mates_not_kept_by_cascade": not_kept,
            "missed_at_calibrated": {"missed": misses.len(), "lost_in_stage1": miss_stage1, "swapped": miss_swapped, "swapped_lost_in_stage1": swapped_missed_stage1, "swapped_probes": swapped_all},
            "swap_hypotheses": {"swap_shortlist": a.swaps, "ms_per_search_one_thread": ms_with, "ms_per_search_one_thread_without": ms_without, "cost_ratio_median": cost, "cost_ratio_range": [cost_lo, cost_hi], "fnir_at_fpir_0_1": fnir1, "fnir_at_fpir_0_1_without": plain_fnir1, "swapped_missed": swapped_missed_t1, "swapped_missed_without": plain_swapped_missed},
            "mates_lost_at_k": beyond.iter().map(|(k, n, g)| serde_json::json!({"k": k, "lost": n, "lost_with_guard": g})).collect::<Vec<_>>(),
        },
        "single_finger": single.iter().map(|sf| serde_json::json!({
            "band": band_name(sf.band),
            "pairs": a.pairs,
            "eer_ours": sf.eer_ours,
            "eer_bozorth3": sf.eer_boz,
            "ours_histogram": {"max": sf.hi_ours, "genuine": histogram(&sf.g_ours, sf.hi_ours), "impostor": histogram(&sf.i_ours, sf.hi_ours)},
            "bozorth3_histogram": {"max": sf.hi_boz, "genuine": histogram(&sf.g_boz, sf.hi_boz), "impostor": histogram(&sf.i_boz, sf.hi_boz)},
        })).collect::<Vec<_>>(),
    });
    std::fs::create_dir_all(&a.out).expect("output directory");
    let path = format!("{}/matcher-bench-{n}.json", a.out);
    std::fs::write(&path, serde_json::to_vec_pretty(&json).expect("json")).expect("write");
    println!("written to {path}");
}
