//! `state-bureau-sim soak`: hours at a steady open-loop rate against one gateway and one data
//! directory, verifying as it goes, with what a long-running gateway must keep flat reported
//! per window: receipt and notification latency, resident memory, open file descriptors, the
//! data directory's size and the store's writes per booking (DESIGN.md §3.9, "Flat over
//! time").
//!
//! Each window (default 5 minutes) is one verified run (`state-bureau-sim run`) under its own
//! run tag, so every window's answers are checked against the ground truth as any run's are,
//! and a later window is exactly the case that once stalled: a run after hours of history.
//! Between windows the driver settles, verifies and reads `/metrics` (a few seconds; the
//! offered load is open loop within each window).
//!
//! Without `--target` the soak starts its own gateway as a child process (this program's
//! `gateway serve`, the real command line) on a data directory under `--dir`, so the figures
//! are the gateway's own, not the driver's. With `--target` it drives a gateway running
//! elsewhere, and reads its figures from `--metrics` (its `/metrics` address) if given.
//!
//! The rate defaults to half the knee, measured first by an open-loop ramp against the same
//! gateway (as `run --ramp` finds it).

use crate::demo::{self, Arrival, DemoOptions, RunOptions};
use anyhow::Context;
use interop_gateway::auth::principal::Principal;
use interop_gateway_cli::pki;
use interop_proto::v1 as pb;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What `soak` is asked to do.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    /// A gateway running elsewhere; `None` starts one here (a child process).
    pub target: Option<String>,
    /// Its `/metrics` address (`host:port`), for its memory, descriptors and store figures.
    pub metrics: Option<String>,
    /// Where the world, the PKI, the child gateway's data and log, and each window's report
    /// live (kept afterwards).
    pub dir: PathBuf,
    /// With `--target`: its PKI and world.
    pub pki: Option<PathBuf>,
    pub world: Option<PathBuf>,
    pub seed: u64,
    pub identities: u64,
    pub duration: Duration,
    pub window: Duration,
    /// Bookings a second; `None` = half the knee, measured first.
    pub rate: Option<f64>,
    pub json: Option<PathBuf>,
    pub html: Option<PathBuf>,
}

/// One window's figures.
#[derive(Clone, Debug, Serialize)]
pub struct Window {
    pub index: usize,
    /// Minutes since the soak began, at the window's end.
    pub at_min: f64,
    pub bookings: usize,
    pub passed: bool,
    pub receipt_p50_ms: f64,
    pub receipt_p99_ms: f64,
    pub notification_p50_ms: f64,
    pub notification_p99_ms: f64,
    pub rss_bytes: Option<f64>,
    pub open_fds: Option<f64>,
    /// Bytes under the gateway's data directory (a child gateway) or its store file as its
    /// `/metrics` reports it.
    pub data_bytes: Option<f64>,
    /// Store writes (ops committed) per booking in this window, from `/metrics`.
    pub store_ops_per_booking: Option<f64>,
}

/// The soak's result.
#[derive(Clone, Debug, Serialize)]
pub struct Soak {
    pub rate_per_s: f64,
    pub knee_per_s: Option<f64>,
    pub window_secs: f64,
    pub windows: Vec<Window>,
    /// Last window's notification p99 over the first's (the target: at most 1.5).
    pub notification_p99_ratio: Option<f64>,
    /// Last window's resident memory over the first's.
    pub rss_ratio: Option<f64>,
    /// Data directory growth per booking over the soak (bytes).
    pub data_bytes_per_booking: Option<f64>,
    pub passed: bool,
}

/// Where the driver finds the gateway.
struct Target {
    endpoint: String,
    pki: PathBuf,
    world: PathBuf,
    metrics: Option<String>,
    data: Option<PathBuf>,
    /// The child gateway, killed when the soak ends.
    _child: Option<tokio::process::Child>,
}

/// Runs the soak; `Ok(false)` when some window's verification failed.
pub async fn soak(o: SoakOptions) -> anyhow::Result<bool> {
    anyhow::ensure!(
        o.window >= Duration::from_secs(5) && o.duration >= o.window,
        "--window-mins must be at least 5 s and no longer than --hours"
    );
    std::fs::create_dir_all(o.dir.join("windows"))
        .with_context(|| format!("creating {}", o.dir.display()))?;
    let t = target(&o).await?;
    let started = Instant::now();
    let (rate, knee) = match o.rate {
        Some(r) => (r, None),
        None => {
            let knee = measure_knee(&o, &t).await?;
            ((knee / 2.0).max(1.0), Some(knee))
        }
    };
    eprintln!(
        "soak: {rate:.1} bookings/s for {:.1} h in windows of {:.0} s against {}",
        o.duration.as_secs_f64() / 3600.0,
        o.window.as_secs_f64(),
        t.endpoint
    );
    let per_window = ((rate * o.window.as_secs_f64()).round() as usize).max(1);
    let soak_start = Instant::now();
    let mut windows: Vec<Window> = Vec::new();
    let mut last_ops = scrape(&t)
        .await
        .and_then(|m| metric(&m, "interop_store_ops_total"));
    let mut i = 0;
    while soak_start.elapsed() + o.window <= o.duration + o.window / 2 {
        i += 1;
        let report = o.dir.join("windows").join(format!("window-{i:04}.json"));
        let tag = format!("K{i:04}{}", demo::clock_tag());
        let v = demo::run_remote(run_options(
            &o,
            &t,
            &tag,
            Arrival::Poisson { rate },
            per_window,
            &report,
        ))
        .await?;
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report)?)?;
        let lat = |what: &str, q: &str| json["latency"][what][q].as_f64().unwrap_or(f64::NAN);
        let m = scrape(&t).await;
        let ops = m
            .as_deref()
            .and_then(|m| metric(m, "interop_store_ops_total"));
        let w = Window {
            index: i,
            at_min: soak_start.elapsed().as_secs_f64() / 60.0,
            bookings: per_window,
            passed: v.passed(),
            receipt_p50_ms: lat("receipt", "p50_ms"),
            receipt_p99_ms: lat("receipt", "p99_ms"),
            notification_p50_ms: lat("field_office_notification", "p50_ms"),
            notification_p99_ms: lat("field_office_notification", "p99_ms"),
            rss_bytes: m
                .as_deref()
                .and_then(|m| metric(m, "process_resident_memory_bytes")),
            open_fds: m.as_deref().and_then(|m| metric(m, "process_open_fds")),
            data_bytes: match &t.data {
                Some(d) => Some(dir_bytes(d) as f64),
                None => m
                    .as_deref()
                    .and_then(|m| metric(m, "interop_store_file_bytes")),
            },
            store_ops_per_booking: match (ops, last_ops) {
                (Some(now), Some(before)) => Some((now - before) / per_window as f64),
                _ => None,
            },
        };
        last_ops = ops;
        eprintln!("{}", line(&w));
        windows.push(w);
    }
    let first = windows.first();
    let last = windows.last();
    let ratio = |f: fn(&Window) -> Option<f64>| match (first.and_then(f), last.and_then(f)) {
        (Some(a), Some(b)) if a > 0.0 => Some(b / a),
        _ => None,
    };
    let booked: usize = windows.iter().map(|w| w.bookings).sum();
    let result = Soak {
        rate_per_s: rate,
        knee_per_s: knee,
        window_secs: o.window.as_secs_f64(),
        notification_p99_ratio: ratio(|w| Some(w.notification_p99_ms)),
        rss_ratio: ratio(|w| w.rss_bytes),
        data_bytes_per_booking: match (
            first.and_then(|w| w.data_bytes),
            last.and_then(|w| w.data_bytes),
        ) {
            (Some(a), Some(b)) if booked > per_window => {
                Some((b - a) / (booked - per_window) as f64)
            }
            _ => None,
        },
        passed: windows.iter().all(|w| w.passed),
        windows,
    };
    println!("{}", summary(&result, started.elapsed()));
    if let Some(path) = &o.json {
        std::fs::write(path, serde_json::to_vec_pretty(&result)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    if let Some(path) = &o.html {
        let json = serde_json::to_value(&result)?;
        std::fs::write(path, crate::html::render_soak(&json))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("HTML report written to {}", path.display());
    }
    Ok(result.passed)
}

/// The options of one verified run of the soak.
fn run_options(
    o: &SoakOptions,
    t: &Target,
    tag: &str,
    arrival: Arrival,
    bookings: usize,
    report: &Path,
) -> RunOptions {
    RunOptions {
        target: t.endpoint.clone(),
        pki: t.pki.clone(),
        world: t.world.clone(),
        demo: DemoOptions {
            seed: o.seed,
            bookings,
            arrival,
            run_tag: format!("{tag}-"),
            plant_outliers: 0,
            settle_timeout: Duration::from_secs(120),
            json: Some(report.to_path_buf()),
            quiet: true,
            ..Default::default()
        },
    }
}

/// The knee of an open-loop ramp (20/s up to 200/s in steps of 20, 5 s each).
async fn measure_knee(o: &SoakOptions, t: &Target) -> anyhow::Result<f64> {
    let arrival = Arrival::Steps {
        start: 20.0,
        step: 20.0,
        max: 200.0,
        step_secs: 5.0,
    };
    let bookings = arrival.step_bookings().unwrap_or(0);
    let report = o.dir.join("windows").join("knee.json");
    let tag = format!("KNEE{}", demo::clock_tag());
    eprintln!("soak: measuring the knee (20/s to 200/s, 5 s a step)");
    demo::run_remote(run_options(o, t, &tag, arrival, bookings, &report)).await?;
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report)?)?;
    json["timeline"]["knee_per_s"]
        .as_f64()
        .context("the gateway did not keep up with even the first step (20/s); give --rate")
}

/// The gateway to drive: the one `--target` names, or a child process started here.
async fn target(o: &SoakOptions) -> anyhow::Result<Target> {
    if let Some(endpoint) = &o.target {
        let (Some(pki), Some(world)) = (&o.pki, &o.world) else {
            anyhow::bail!("--target needs --pki and --world");
        };
        return Ok(Target {
            endpoint: endpoint.clone(),
            pki: pki.clone(),
            world: world.clone(),
            metrics: o.metrics.clone(),
            data: None,
            _child: None,
        });
    }
    let (world, pki_dir, data) = (o.dir.join("world"), o.dir.join("pki"), o.dir.join("data"));
    if !world.join(interop_gateway::world::WORLD_FILE).exists() {
        eprintln!("soak: generating a world of {} identities", o.identities);
        let (seed, n, w) = (o.seed, o.identities, world.clone());
        tokio::task::spawn_blocking(move || crate::generate::generate(seed, n, &w)).await??;
    }
    let data_world = crate::bookings::WorldData::load(&world)?;
    let pki = pki::init_or_keep(&pki_dir, &data_world.world)?;
    let port = free_port()?;
    let metrics = format!("127.0.0.1:{}", free_port()?);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(o.dir.join("gateway.log"))?;
    let child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["gateway", "--log-format", "json", "serve"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen", &metrics])
        .arg("--pki")
        .arg(&pki.0)
        .arg("--world")
        .arg(&world)
        .arg("--data")
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .context("starting the gateway")?;
    let endpoint = format!("https://127.0.0.1:{port}");
    eprintln!(
        "soak: gateway pid {} on {endpoint}, data in {}, log in {}",
        child.id().unwrap_or(0),
        data.display(),
        o.dir.join("gateway.log").display()
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(ch) = pki::connect(&endpoint, &pki, &Principal::Admin).await
            && pb::admin_service_client::AdminServiceClient::new(ch)
                .get_counters(pb::GetCountersRequest {})
                .await
                .is_ok()
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the gateway did not come up within 5 minutes (see {})",
            o.dir.join("gateway.log").display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(Target {
        endpoint,
        pki: pki.0,
        world,
        metrics: Some(metrics),
        data: Some(data),
        _child: Some(child),
    })
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The gateway's `/metrics` text, if it has an address and answers.
async fn scrape(t: &Target) -> Option<String> {
    let addr = t.metrics.as_ref()?;
    let get = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: metrics\r\n\r\n")
            .await?;
        let mut body = String::new();
        s.read_to_string(&mut body).await?;
        std::io::Result::Ok(body)
    };
    tokio::time::timeout(Duration::from_secs(10), get)
        .await
        .ok()?
        .ok()
}

/// The value of an unlabelled metric `name`, or the sum over its labels.
fn metric(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn mib(b: Option<f64>) -> String {
    b.map_or("-".into(), |b| format!("{:.1} MiB", b / (1 << 20) as f64))
}

fn line(w: &Window) -> String {
    format!(
        "window {:>3} at {:>6.1} min: {} bookings {}  receipt p50/p99 {:.1}/{:.1} ms  notification p50/p99 {:.1}/{:.1} ms  RSS {}  fds {}  data {}  store writes/booking {}",
        w.index,
        w.at_min,
        w.bookings,
        if w.passed { "PASS" } else { "FAIL" },
        w.receipt_p50_ms,
        w.receipt_p99_ms,
        w.notification_p50_ms,
        w.notification_p99_ms,
        mib(w.rss_bytes),
        w.open_fds.map_or("-".into(), |f| format!("{f:.0}")),
        mib(w.data_bytes),
        w.store_ops_per_booking
            .map_or("-".into(), |o| format!("{o:.2}")),
    )
}

fn summary(s: &Soak, took: Duration) -> String {
    let f = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.2}x"));
    format!(
        "\n== soak: {} windows of {:.0} s at {:.1} bookings/s ({}; {:.1} min in all) ==\n  notification p99, last window over the first: {} (target <= 1.5x)\n  resident memory, last over first: {}\n  data directory growth: {}\nresult: {}",
        s.windows.len(),
        s.window_secs,
        s.rate_per_s,
        s.knee_per_s.map_or("rate given".into(), |k| format!(
            "half the knee of {k:.0}/s"
        )),
        took.as_secs_f64() / 60.0,
        f(s.notification_p99_ratio),
        f(s.rss_ratio),
        s.data_bytes_per_booking
            .map_or("-".into(), |b| format!("{b:.0} bytes per booking")),
        if s.passed {
            "PASS (every window verified)"
        } else {
            "FAIL (a window's verification failed)"
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_by_name_and_summed_over_labels() {
        let text = "# HELP x\nprocess_open_fds 12\nprocess_open_fds_extra 3\ninterop_store_ops_total{kind=\"a\"} 4\ninterop_store_ops_total{kind=\"b\"} 6\n";
        assert_eq!(metric(text, "process_open_fds"), Some(12.0));
        assert_eq!(metric(text, "interop_store_ops_total"), Some(10.0));
        assert_eq!(metric(text, "process_resident_memory_bytes"), None);
    }
}
