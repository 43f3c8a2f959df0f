//! `state-bureau-sim cost`: the gateway's CPU per booking beside the CPU its searches cost the
//! matcher alone, on the same galleries and the same bookings, in one run.
//!
//! 1. **The matcher alone** (the baseline): both galleries loaded in this process as the
//!    gateway loads them (from their index snapshots, with the gateway's shard count), then
//!    every planned booking's searches — the FBI gallery for each, IDENT for those whose
//!    jurisdiction is activated on the booking date — made two at a time (one per core, as
//!    `matcher-bench` makes them), timed by this process's CPU clock. Then the galleries are
//!    dropped.
//! 2. **The gateway**: this program's `gateway serve` as a child process on the same world and
//!    a fresh data directory, driven by a verified run of the same bookings (same seed and
//!    count, so the same people and captures) open loop at `--rate`; its CPU is read from
//!    `/proc` before and after the run.
//!
//! The ratio of the two CPU figures per booking is what the gateway adds to its searches:
//! TLS, validation, the durable log, policy, streams, and its scheduling. Issue 28 asks for at
//! most 1.3.

use crate::bookings::{self, WorldData};
use crate::demo::{self, Arrival, DemoOptions, RunOptions};
use crate::startup::{Child, cpu_of};
use interop_gateway::engines::index;
use interop_gateway::world::{FBI_GALLERY_FILE, IDENT_GALLERY_FILE};
use interop_matcher::{Matcher, Tenprint};
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What `cost` is asked to do.
#[derive(Clone, Debug)]
pub struct CostOptions {
    pub world: PathBuf,
    /// Holds the PKI, the gateway's data directory and log, and the run's report.
    pub dir: PathBuf,
    pub seed: u64,
    pub bookings: usize,
    /// Bookings a second offered to the gateway.
    pub rate: f64,
    /// Shards per gallery, as the gateway's `--shards` (its default: 4).
    pub shards: usize,
}

/// One side of the comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Side {
    pub wall_s: f64,
    pub cpu_s: f64,
    pub cpu_ms_per_booking: f64,
    pub cpu_ms_per_search: f64,
}

impl Side {
    fn of(wall: Duration, cpu: Duration, bookings: usize, searches: usize) -> Side {
        let cpu_s = cpu.as_secs_f64();
        Side {
            wall_s: wall.as_secs_f64(),
            cpu_s,
            cpu_ms_per_booking: 1e3 * cpu_s / bookings.max(1) as f64,
            cpu_ms_per_search: 1e3 * cpu_s / searches.max(1) as f64,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Cost {
    pub fbi_gallery: usize,
    pub ident_gallery: usize,
    pub bookings: usize,
    pub fbi_searches: usize,
    pub ident_searches: usize,
    pub matcher: Side,
    pub gateway: Side,
    pub rate: f64,
    /// Gateway CPU per booking over the matcher's.
    pub ratio: f64,
    pub verdict_passed: bool,
    pub notification_p99_ms: Option<f64>,
}

impl fmt::Display for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "CPU per booking: {} bookings ({} FBI + {} IDENT searches); galleries FBI {}, IDENT {}",
            self.bookings,
            self.fbi_searches,
            self.ident_searches,
            self.fbi_gallery,
            self.ident_gallery
        )?;
        writeln!(
            f,
            "  {:<34} {:>8} {:>8} {:>14} {:>13}",
            "", "wall s", "CPU s", "CPU ms/booking", "CPU ms/search"
        )?;
        for (what, s) in [
            ("matcher alone (two at a time)", &self.matcher),
            (
                &*format!("gateway at {}/s (verified run)", self.rate),
                &self.gateway,
            ),
        ] {
            writeln!(
                f,
                "  {:<34} {:>8.1} {:>8.1} {:>14.2} {:>13.2}",
                what, s.wall_s, s.cpu_s, s.cpu_ms_per_booking, s.cpu_ms_per_search
            )?;
        }
        writeln!(
            f,
            "  gateway over matcher: {:.2}x (issue 28: <= 1.3); run {}, notification p99 {}",
            self.ratio,
            if self.verdict_passed { "PASS" } else { "FAIL" },
            self.notification_p99_ms
                .map_or("-".into(), |p| format!("{p:.1} ms"))
        )
    }
}

/// The matcher's share: every booking's searches, two at a time, on this process's CPU clock.
fn matcher_alone(
    o: &CostOptions,
    probes: &[(Tenprint, bool)],
) -> anyhow::Result<(Duration, Duration, usize, usize)> {
    let load = |file: &str| {
        index::load_gallery(&o.world, file, o.shards, None).map(|l| Box::new(l.matcher))
    };
    let (fbi, ident) = std::thread::scope(|s| {
        let i = s.spawn(|| load(IDENT_GALLERY_FILE));
        (load(FBI_GALLERY_FILE), i.join().expect("loader"))
    });
    let (fbi, ident) = (fbi?, ident?);
    let sizes = (fbi.len(), ident.len());
    let next = AtomicUsize::new(0);
    let cpu0 = cpu_of("/proc/self/stat")?;
    let began = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((probe, searched)) = probes.get(i) else {
                            return Ok(());
                        };
                        fbi.search(probe, 1)?;
                        if *searched {
                            ident.search(probe, 1)?;
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("search worker")?;
        }
        Ok(())
    })?;
    let wall = began.elapsed();
    let cpu = cpu_of("/proc/self/stat")? - cpu0;
    Ok((wall, cpu, sizes.0, sizes.1))
}

pub async fn cost(o: CostOptions) -> anyhow::Result<Cost> {
    anyhow::ensure!(o.bookings >= 1, "--bookings must be at least 1");
    anyhow::ensure!(
        o.rate.is_finite() && o.rate > 0.0,
        "--rate must be positive"
    );
    anyhow::ensure!(o.shards >= 1, "--shards must be at least 1");
    std::fs::create_dir_all(&o.dir)?;
    let data = WorldData::load(&o.world)?;
    let (from, days) = demo::booking_window();
    let plan = bookings::plan(&data, o.seed, o.bookings, from, days, &Default::default());
    let probes: Vec<(Tenprint, bool)> = plan
        .iter()
        .map(|b| {
            (
                interop_gateway::convert::tenprint_from_pb(&b.submission.fingers),
                b.expected.searched,
            )
        })
        .collect();
    let (fbi_searches, ident_searches) = (probes.len(), probes.iter().filter(|(_, s)| *s).count());
    let pki = interop_gateway_cli::pki::init_or_keep(&o.dir.join("pki"), &data.world)?;
    drop((plan, data));
    eprintln!("cost: the matcher alone, {} bookings", probes.len());
    let (o2, p2) = (o.clone(), probes);
    let (m_wall, m_cpu, fbi_n, ident_n) =
        tokio::task::spawn_blocking(move || matcher_alone(&o2, &p2)).await??;
    let searches = fbi_searches + ident_searches;
    let matcher = Side::of(m_wall, m_cpu, o.bookings, searches);

    let data_dir = o.dir.join("data");
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)?;
    }
    eprintln!("cost: starting the gateway");
    let child = Child::spawn(&o.world, &pki, &data_dir, &o.dir.join("gateway.log")).await?;
    let report = o.dir.join("run.json");
    let cpu0 = child.cpu()?;
    let began = Instant::now();
    let verification = demo::run_remote(RunOptions {
        target: child.endpoint.clone(),
        pki: pki.0.clone(),
        world: o.world.clone(),
        demo: DemoOptions {
            seed: o.seed,
            bookings: o.bookings,
            arrival: Arrival::Poisson { rate: o.rate },
            run_tag: format!("COST{}-", demo::clock_tag()),
            plant_outliers: 0,
            settle_timeout: Duration::from_secs(120),
            json: Some(report.clone()),
            quiet: true,
            ..Default::default()
        },
    })
    .await?;
    let g_wall = began.elapsed();
    let g_cpu = child.cpu()? - cpu0;
    child.stop().await?;
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report)?)?;
    let gateway = Side::of(g_wall, g_cpu, o.bookings, searches);
    Ok(Cost {
        fbi_gallery: fbi_n,
        ident_gallery: ident_n,
        bookings: o.bookings,
        fbi_searches,
        ident_searches,
        ratio: gateway.cpu_ms_per_booking / matcher.cpu_ms_per_booking.max(1e-9),
        matcher,
        gateway,
        rate: o.rate,
        verdict_passed: verification.passed(),
        notification_p99_ms: json["latency"]["field_office_notification"]["p99_ms"].as_f64(),
    })
}
