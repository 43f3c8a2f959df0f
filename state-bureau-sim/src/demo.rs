//! The main job, end to end on one machine: generate a world, issue a PKI, start the gateway
//! in-process on a loopback port over real mutual TLS, subscribe every field office and every
//! bureau's response stream, submit bookings from many bureaus concurrently (half over unary
//! `Submit`, half over `SubmitStream`), then check every answer against the ground truth and
//! print a summary. Nothing is mocked: the clients are real gRPC clients over TLS sockets.
//!
//! [`run_remote`] drives a gateway that runs elsewhere (`state-bureau-sim run`) with the same
//! driver and the same verification; its TCNs carry a run tag so runs never collide, it counts
//! only answers about its own bookings, and it compares counters and monthly statistics as
//! differences from before the run.

use crate::bookings::{self, Booking, WorldData};
use crate::verify::{self, Observations, Verification};
use anyhow::Context;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use interop_gateway::auth::principal::Principal;
use interop_gateway::{engines, server, store, world};
use interop_gateway_cli::pki;
use interop_gateway_cli::pki::PkiDir;
use interop_proto::v1 as pb;
use pb::field_office_service_client::FieldOfficeServiceClient;
use pb::submission_service_client::SubmissionServiceClient;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub seed: u64,
    pub identities: u64,
    pub bookings: usize,
    /// Keep world, PKI and data here instead of a temporary directory.
    pub dir: Option<PathBuf>,
    pub json: Option<PathBuf>,
    /// Also write a self-contained HTML report with charts here.
    pub html: Option<PathBuf>,
    pub shards: usize,
    /// How long to wait for all results after the last receipt.
    pub settle_timeout: Duration,
    /// Jurisdictions planted with a skewed (pretextual minor-traffic) arrest mix.
    pub plant_outliers: usize,
    /// How bookings arrive.
    pub arrival: Arrival,
    /// Policy changes made together mid-run, once `change_at` of the bookings are receipted.
    pub changes: Vec<crate::changes::PolicyChange>,
    pub change_at: f64,
    /// Unary, streaming or both (half the states each).
    pub submit: SubmitMode,
    /// Bureaus submit through the client library (retries, and the next gateway replica when
    /// one fails), unary only, instead of bare calls whose every refusal counts.
    pub failover: bool,
    /// Inserted into every TCN (`TX20110305-<tag>0000123`) so runs against one gateway never
    /// collide; empty for the demo's fresh gateway.
    pub run_tag: String,
    /// No progress bars and no printed report (the JSON and HTML are still written): for
    /// programs that run many runs, such as `soak`.
    pub quiet: bool,
}

/// Which RPC bureaus submit with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SubmitMode {
    Unary,
    Stream,
    Mixed,
}

/// How bookings arrive at the gateway.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arrival {
    /// Each bureau keeps this many submissions in flight (closed loop).
    Closed { per_bureau_inflight: usize },
    /// Open loop: a Poisson process at `rate` bookings a second over all bureaus, seeded.
    /// Latency is measured from each booking's intended send time, so a slow gateway cannot
    /// hide queueing by slowing the sender (no coordinated omission).
    Poisson { rate: f64 },
    /// Open loop in steps to find the knee: Poisson arrivals at `start` bookings a second,
    /// raised by `step` every `step_secs` seconds until `max`. The report gives offered vs
    /// achieved rate and latency per step.
    Steps {
        start: f64,
        step: f64,
        max: f64,
        step_secs: f64,
    },
}

impl Arrival {
    /// The steps of a step profile: (start offset, rate); empty for other arrivals.
    pub fn steps(&self) -> Vec<(Duration, f64)> {
        let Arrival::Steps {
            start,
            step,
            max,
            step_secs,
        } = *self
        else {
            return vec![];
        };
        let mut out = vec![];
        let mut rate = start;
        while rate <= max + 1e-9 && out.len() < 1000 {
            out.push((Duration::from_secs_f64(out.len() as f64 * step_secs), rate));
            if step <= 0.0 {
                break;
            }
            rate += step;
        }
        out
    }

    /// Bookings a step profile sends in all (the expected count of its Poisson arrivals).
    pub fn step_bookings(&self) -> Option<usize> {
        let Arrival::Steps { step_secs, .. } = *self else {
            return None;
        };
        Some(
            self.steps()
                .iter()
                .map(|(_, r)| r * step_secs)
                .sum::<f64>()
                .round()
                .max(1.0) as usize,
        )
    }

    fn describe(&self) -> String {
        match *self {
            Arrival::Closed {
                per_bureau_inflight,
            } => format!("closed loop, {per_bureau_inflight} in flight per bureau"),
            Arrival::Poisson { rate } => format!("open loop, Poisson at {rate}/s"),
            Arrival::Steps {
                start,
                step,
                max,
                step_secs,
            } => format!(
                "open loop in steps: {start}/s + {step}/s every {step_secs} s up to {max}/s"
            ),
        }
    }
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            seed: 2011,
            identities: 5_000,
            bookings: 2_000,
            dir: None,
            json: None,
            html: None,
            shards: 4,
            settle_timeout: Duration::from_secs(180),
            plant_outliers: 3,
            arrival: Arrival::Closed {
                per_bureau_inflight: 8,
            },
            run_tag: String::new(),
            changes: vec![],
            change_at: 0.5,
            submit: SubmitMode::Mixed,
            failover: false,
            quiet: false,
        }
    }
}

/// The seconds since 2026 in base 36 (5 or 6 characters of `0-9A-Z`): run tags from the clock
/// tell runs against one gateway apart.
pub fn clock_tag() -> String {
    let mut n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .saturating_sub(1_767_225_600);
    let mut digits = vec![];
    loop {
        digits.push(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

/// Bookings are dated over 2011–2012, when most (not all) jurisdictions were activated.
pub fn booking_window() -> (chrono::NaiveDate, u32) {
    (
        chrono::NaiveDate::from_ymd_opt(2011, 1, 1).expect("date"),
        730,
    )
}

/// Open loop: the most submissions one bureau has in flight before the driver itself waits
/// (a guard against a runaway, far above any useful rate).
const OPEN_LOOP_MAX_INFLIGHT: usize = 20_000;

fn bar(len: u64, what: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg:<22} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Runs the demo; returns the verification (its `passed()` decides the exit code).
pub async fn run(opts: DemoOptions) -> anyhow::Result<Verification> {
    let tmp;
    let dir: PathBuf = match &opts.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let world_dir = dir.join("world");
    let pki_dir = dir.join("pki");
    let data_dir = dir.join("data");
    let t0 = Instant::now();
    if !world_dir.join(world::WORLD_FILE).exists() {
        eprintln!(
            "generating a world: seed {}, {} identities",
            opts.seed, opts.identities
        );
        let (seed, n, wd) = (opts.seed, opts.identities, world_dir.clone());
        let summary =
            tokio::task::spawn_blocking(move || crate::generate::generate(seed, n, &wd)).await??;
        eprintln!("{summary}");
    }
    let data = Arc::new(WorldData::load(&world_dir)?);
    let pki = pki::init_for_world(&pki_dir, &data.world)?;
    let (from, days) = booking_window();
    let plan_data = data.clone();
    let (seed, count) = (opts.seed, opts.bookings);
    let planted = bookings::planted_jurisdictions(&data.world, opts.plant_outliers);
    let plan_planted = planted.clone();
    let plan = Arc::new(
        tokio::task::spawn_blocking(move || {
            bookings::plan(&plan_data, seed, count, from, days, &plan_planted)
        })
        .await?,
    );
    let setup_world = t0.elapsed();

    // The gateway, in-process, on a loopback port, over mutual TLS.
    let t1 = Instant::now();
    let Served {
        endpoint,
        stop: stop_tx,
        task: server_task,
    } = serve_in_process(&world_dir, &data_dir, &pki, &data.world, opts.shards, true).await?;
    let setup_gateway = t1.elapsed();
    eprintln!("gateway listening on {endpoint} (mutual TLS)");

    let v = drive_and_verify(
        &endpoint,
        &pki,
        &plan,
        &data,
        &opts,
        planted,
        setup_world,
        setup_gateway,
    )
    .await;
    let _ = stop_tx.send(());
    server_task.await??;
    v
}

/// A gateway served in this process: its endpoint, the sender that stops it, and its task.
pub struct Served {
    pub endpoint: String,
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Serves a fresh gateway over `world_dir`'s galleries (`shards` per gallery) with its store
/// in `data_dir`, on a loopback port over mutual TLS; with `matcher_service`, the IDENT
/// gallery is also served as `MatcherService`.
pub async fn serve_in_process(
    world_dir: &Path,
    data_dir: &Path,
    pki: &PkiDir,
    world: &world::WorldFile,
    shards: usize,
    matcher_service: bool,
) -> anyhow::Result<Served> {
    let wd = world_dir.to_path_buf();
    let backends =
        tokio::task::spawn_blocking(move || engines::InProcess::load(&wd, shards)).await??;
    let gw = server::Gateway::start(
        world.clone(),
        store::open_embedded(data_dir)?,
        backends.ident.clone(),
        backends.criminal.clone(),
        matcher_service.then(|| server::MatcherServing::InProcess(backends.ident.matcher())),
        server::ServeOptions::default(),
    )
    .await?;
    gw.serve_fbi_gallery(backends.criminal.matcher());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("https://{}", listener.local_addr()?);
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(gw.serve(listener, server::server_tls(pki)?, async {
        let _ = stop_rx.await;
    }));
    Ok(Served {
        endpoint,
        stop,
        task,
    })
}

/// Options of [`run_remote`].
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub target: String,
    pub pki: PathBuf,
    pub world: PathBuf,
    pub demo: DemoOptions,
}

/// Drives a gateway running elsewhere with the world in `opts.world` (the gateway must serve
/// the same world) and verifies every answer about this run's bookings.
pub async fn run_remote(opts: RunOptions) -> anyhow::Result<Verification> {
    let t0 = Instant::now();
    require_world(&opts.world)?;
    let data = Arc::new(WorldData::load(&opts.world)?);
    let pki = PkiDir(opts.pki.clone());
    anyhow::ensure!(
        pki.ca_cert().exists(),
        "{} holds no PKI (ca.pem); create one with `interop-gateway pki init --out {} --world {}`",
        opts.pki.display(),
        opts.pki.display(),
        opts.world.display()
    );
    let d = &opts.demo;
    let (from, days) = booking_window();
    let planted = bookings::planted_jurisdictions(&data.world, d.plant_outliers);
    let (plan_data, plan_planted, seed, count) =
        (data.clone(), planted.clone(), d.seed, d.bookings);
    let mut plan = tokio::task::spawn_blocking(move || {
        bookings::plan(&plan_data, seed, count, from, days, &plan_planted)
    })
    .await?;
    bookings::tag_tcns(&mut plan, &d.run_tag);
    let plan = Arc::new(plan);
    if !d.quiet {
        eprintln!(
            "run {}: {} bookings against {} ({})",
            d.run_tag.trim_end_matches('-'),
            plan.len(),
            opts.target,
            d.arrival.describe()
        );
    }
    // Fail early and clearly if the gateway is not there or does not trust us.
    let admin_ch = pki::connect(&opts.target, &pki, &Principal::Admin)
        .await
        .with_context(|| format!("connecting to {} as admin", opts.target))?;
    pb::admin_service_client::AdminServiceClient::new(admin_ch)
        .get_counters(pb::GetCountersRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{}: {:?}: {}", opts.target, s.code(), s.message()))?;
    drive_and_verify(
        &opts.target,
        &pki,
        &plan,
        &data,
        d,
        planted,
        t0.elapsed(),
        Duration::ZERO,
    )
    .await
}

/// National monthly rows of the given months.
async fn national_stats(
    admin: &mut pb::admin_service_client::AdminServiceClient<tonic::transport::Channel>,
    months: &[String],
) -> anyhow::Result<BTreeMap<String, pb::StatsRow>> {
    let mut out = BTreeMap::new();
    for month in months {
        let stats = admin
            .get_monthly_stats(pb::GetMonthlyStatsRequest {
                month: month.clone(),
                state: String::new(),
            })
            .await?
            .into_inner();
        out.insert(month.clone(), stats.national.unwrap_or_default());
    }
    Ok(out)
}

/// `after - before`, field by field.
fn stats_delta(after: &pb::StatsRow, before: &pb::StatsRow) -> pb::StatsRow {
    pb::StatsRow {
        submissions: after.submissions - before.submissions,
        ident_searches: after.ident_searches - before.ident_searches,
        matches: after.matches - before.matches,
        identified_level1: after.identified_level1 - before.identified_level1,
        identified_level2: after.identified_level2 - before.identified_level2,
        identified_level3: after.identified_level3 - before.identified_level3,
        identified_non_criminal: after.identified_non_criminal - before.identified_non_criminal,
        detainers_issued: after.detainers_issued - before.detainers_issued,
        minor_traffic_only_arrests: after.minor_traffic_only_arrests
            - before.minor_traffic_only_arrests,
        removals: after.removals - before.removals,
        ..after.clone()
    }
}

/// Drives `endpoint` with `plan`, queries the admin figures, verifies and reports. Counters
/// and monthly statistics are compared as differences from before the run.
#[allow(clippy::too_many_arguments)]
async fn drive_and_verify(
    endpoint: &str,
    pki: &PkiDir,
    plan: &Arc<Vec<Booking>>,
    data: &WorldData,
    opts: &DemoOptions,
    planted: std::collections::BTreeSet<String>,
    setup_world: Duration,
    setup_gateway: Duration,
) -> anyhow::Result<Verification> {
    let admin_ch = pki::connect(endpoint, pki, &Principal::Admin).await?;
    let mut admin = pb::admin_service_client::AdminServiceClient::new(admin_ch.clone());
    let months = verify::months(plan);
    let counters_before = admin
        .get_counters(pb::GetCountersRequest {})
        .await?
        .into_inner()
        .values;
    let stats_before = national_stats(&mut admin, &months).await?;

    // Mid-run policy changes: the same bookings planned over the changed world give what
    // each must get once the change is made.
    let changed_plan = if opts.changes.is_empty() {
        None
    } else {
        let mut world = data.world.clone();
        for c in &opts.changes {
            c.check(&world)?;
            c.apply(&mut world);
        }
        let changed = WorldData {
            world,
            truth: data.truth.clone(),
            fbi: data.fbi.clone(),
            ident: data.ident.clone(),
        };
        let (from, days) = booking_window();
        let mut p = bookings::plan(&changed, opts.seed, plan.len(), from, days, &planted);
        bookings::tag_tcns(&mut p, &opts.run_tag);
        anyhow::ensure!(
            p.iter()
                .zip(plan.iter())
                .all(|(a, b)| a.submission.tcn == b.submission.tcn),
            "the plan under the changed policy differs from the run's plan"
        );
        Some(Arc::new(p))
    };

    let mut obs = drive(endpoint, pki, plan, data, opts, changed_plan.as_ref()).await?;
    // Connect again: with gateway replicas, the one first used may be gone by now.
    let mut admin = pb::admin_service_client::AdminServiceClient::new(
        pki::connect(endpoint, pki, &Principal::Admin).await?,
    );
    if let Some(a) = obs.applied {
        // Put the gateway's policy back as the world has it.
        let admin = pki::connect_client(endpoint, pki, &Principal::Admin).await?;
        for c in &opts.changes {
            c.undo(&admin, &data.world).await?;
        }
        let (effective, split) = crate::changes::effective_plan(
            plan,
            changed_plan.as_deref().expect("a changed plan"),
            &obs,
            a,
        );
        obs.change_split = Some(split);
        obs.effective_plan = Some(effective);
    }

    // Admin counters, read over mTLS like any admin would.
    let mut counters = admin
        .get_counters(pb::GetCountersRequest {})
        .await?
        .into_inner()
        .values;
    for (k, v) in counters.iter_mut() {
        *v -= counters_before.get(k).copied().unwrap_or(0).min(*v);
    }
    // The national monthly statistics of every month the bookings fall in.
    for (month, after) in national_stats(&mut admin, &months).await? {
        let before = stats_before.get(&month).cloned().unwrap_or_default();
        obs.monthly.insert(month, stats_delta(&after, &before));
    }
    // The outlier review over the whole booking window: at demo volumes a single quarter has
    // too few bookings per jurisdiction for any test to have power.
    let review = admin
        .quarterly_review(pb::QuarterlyReviewRequest {
            quarter: String::new(),
            from_month: months.first().cloned().unwrap_or_default(),
            to_month: months.last().cloned().unwrap_or_default(),
        })
        .await?
        .into_inner();
    obs.review_tests = review.tests;
    obs.review_flags = review
        .flags
        .into_iter()
        .map(|f| (f.jurisdiction_id, f.measure))
        .collect();
    obs.planted = planted;

    let held_to = obs.effective_plan.take();
    let plan: &[Booking] = held_to.as_deref().unwrap_or(plan);
    let mut v = verify::verify(plan, &obs, &counters);
    mate_ranks(admin_ch, plan, &mut v).await;
    let mut report = verify::report(plan, &obs, &v, &counters, setup_world, setup_gateway);
    if let Some(split) = obs.change_split {
        let names: Vec<String> = opts.changes.iter().map(|c| c.to_string()).collect();
        let line = format!(
            "policy changes {} after {:.0}% of receipts: {} bookings held to the new policy, {} \
             to the old, {} in flight either way",
            names.join(", "),
            100.0 * opts.change_at,
            split.new,
            split.old,
            split.either
        );
        report.table = report.table.replacen(
            "ground-truth verification",
            &format!("{line}\nground-truth verification"),
            1,
        );
        report.json["policy_changes"] = serde_json::json!({
            "changes": names, "at_share_of_receipts": opts.change_at, "held": split,
        });
    }
    if !opts.quiet {
        println!("{}", report.table);
    }
    if let Some(path) = &opts.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report.json)?)
            .with_context(|| format!("writing {}", path.display()))?;
        if !opts.quiet {
            println!("report written to {}", path.display());
        }
    }
    if let Some(path) = &opts.html {
        let title = format!(
            "interop run: {} bookings, {}",
            plan.len(),
            opts.arrival.describe()
        );
        std::fs::write(path, crate::html::render(&title, &report.json))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("HTML report written to {}", path.display());
    }
    Ok(v)
}

enum Seen {
    Office(String, pb::FieldOfficeNotification),
    Bureau(String, pb::BureauResponse),
}

/// Submits every booking and collects every answer until all expected ones arrived (or the
/// settle timeout passed).
pub async fn drive(
    endpoint: &str,
    pki: &PkiDir,
    plan: &Arc<Vec<Booking>>,
    data: &WorldData,
    opts: &DemoOptions,
    changed_plan: Option<&Arc<Vec<Booking>>>,
) -> anyhow::Result<Observations> {
    let planned: std::collections::HashSet<String> =
        plan.iter().map(|b| b.submission.tcn.clone()).collect();

    let (seen_tx, seen_rx) = mpsc::channel::<(Seen, Instant)>(4096);
    let mut subscriptions = Vec::new();
    for office in data.world.field_offices.iter().map(|o| o.code.clone()) {
        let office_client = pki::connect_client(
            endpoint,
            pki,
            &Principal::FieldOffice {
                office: office.clone(),
            },
        )
        .await?;
        let tx = seen_tx.clone();
        // A fresh gateway: read from the start. A shared one: from the office's durable cursor.
        let from_start = opts.run_tag.is_empty();
        subscriptions.push(tokio::spawn(async move {
            // The library's subscription resumes by itself from its cursor if the connection
            // drops, so each outcome reaches the verifier once.
            let mut s = office_client.subscribe(from_start.then_some(0));
            let mut last_acked = 0;
            while let Some(n) = s.next().await? {
                let cursor = n.cursor;
                if tx
                    .send((Seen::Office(office.clone(), n), Instant::now()))
                    .await
                    .is_err()
                {
                    break;
                }
                // Acknowledge as we go, in steps, as a field office client would.
                if cursor >= last_acked + 16 {
                    office_client.ack(cursor).await?;
                    last_acked = cursor;
                }
            }
            anyhow::Ok(())
        }));
    }
    let mut states: Vec<String> = plan.iter().map(|b| b.state.clone()).collect();
    states.sort();
    states.dedup();
    let mut channels = BTreeMap::new();
    let mut bureau_clients = BTreeMap::new();
    let mut heads = BTreeMap::new();
    for st in &states {
        let bureau =
            pki::connect_client(endpoint, pki, &Principal::Bureau { state: st.clone() }).await?;
        let ch = bureau.channel();
        let bureau_for_submit = bureau.clone();
        let tx = seen_tx.clone();
        let state = st.clone();
        // A fresh gateway: read from the start. A shared one: only what comes after this
        // point, so a run never first reads every earlier run's answers (its cost would
        // grow with the history of the gateway, not with the run).
        let head = match opts.run_tag.is_empty() {
            true => 0,
            false => bureau.response_head().await?,
        };
        heads.insert(st.clone(), head);
        subscriptions.push(tokio::spawn(async move {
            let mut s = bureau.follow_responses(Some(head), true);
            while let Some(r) = s.next().await? {
                if tx
                    .send((Seen::Bureau(state.clone(), r), Instant::now()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            anyhow::Ok(())
        }));
        channels.insert(st.clone(), ch);
        bureau_clients.insert(st.clone(), bureau_for_submit);
    }
    drop(seen_tx);
    // Answers are collected from the moment the subscriptions open, while the bookings go
    // out: each is timestamped as it arrives and none waits behind the submissions. (They
    // used to be read only once every booking was sent, so a full channel held the
    // subscriptions back, and answers looked as late as the submission phase was long.)
    let results = bar(0, "results", opts.quiet);
    let collector = Collector::spawn(
        seen_rx,
        (!opts.run_tag.is_empty()).then(|| planned.clone()),
        results.clone(),
    );

    let sent_at: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; plan.len()]));
    let receipts: Arc<Mutex<Vec<verify::ReceiptSlot>>> =
        Arc::new(Mutex::new(vec![None; plan.len()]));
    let receipt_hist = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let receipt_at: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; plan.len()]));
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let progress = bar(plan.len() as u64, "receipts", opts.quiet);

    // Open loop: every booking's intended send time, from a seeded Poisson process (at the
    // rate of the step it falls in, for a step profile).
    let steps = opts.arrival.steps();
    let step_secs = match opts.arrival {
        Arrival::Steps { step_secs, .. } => step_secs,
        _ => 0.0,
    };
    let rate_at = |t: f64| -> f64 {
        match opts.arrival {
            Arrival::Poisson { rate } => rate,
            _ => steps
                .iter()
                .rev()
                .find(|(start, _)| start.as_secs_f64() <= t)
                .or(steps.last())
                .map(|(_, r)| *r)
                .unwrap_or(1.0),
        }
    };
    let schedule: Option<Arc<Vec<Duration>>> = match opts.arrival {
        Arrival::Closed { .. } => None,
        Arrival::Poisson { .. } | Arrival::Steps { .. } => {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed ^ 0x0A88_17A1);
            let mut t = 0.0f64;
            Some(Arc::new(
                (0..plan.len())
                    .map(|_| {
                        let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
                        t += -u.ln() / rate_at(t).max(1e-6);
                        Duration::from_secs_f64(t)
                    })
                    .collect(),
            ))
        }
    };
    let inflight = match opts.arrival {
        Arrival::Closed {
            per_bureau_inflight,
        } => per_bureau_inflight,
        // Open loop never waits for answers; this only bounds a runaway.
        Arrival::Poisson { .. } | Arrival::Steps { .. } => OPEN_LOOP_MAX_INFLIGHT,
    };

    // Mid-run policy changes, made as admin once their share of receipts is in.
    let change_task = match changed_plan {
        None => None,
        Some(_) => {
            let admin = pki::connect_client(endpoint, pki, &Principal::Admin).await?;
            let (progress, changes, n, at) = (
                progress.clone(),
                opts.changes.clone(),
                plan.len(),
                opts.change_at,
            );
            Some(tokio::spawn(async move {
                while (progress.position() as f64) < at * n as f64 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let started = Instant::now();
                for c in &changes {
                    c.make(&admin).await?;
                }
                let done = Instant::now();
                tracing::info!(?changes, "policy changed mid-run");
                anyhow::Ok(crate::changes::Applied { started, done })
            }))
        }
    };

    // Bureaus submit concurrently, each its own connection and identity.
    let t_submit = Instant::now();
    let mut senders = Vec::new();
    for (si, st) in states.iter().enumerate() {
        let idx: Vec<usize> = (0..plan.len()).filter(|i| &plan[*i].state == st).collect();
        let ch = channels[st].clone();
        let bureau = bureau_clients[st].clone();
        let failover = opts.failover;
        let (plan, sent_at, receipts, hist, progress, receipt_at, refused) = (
            plan.clone(),
            sent_at.clone(),
            receipts.clone(),
            receipt_hist.clone(),
            progress.clone(),
            receipt_at.clone(),
            refused.clone(),
        );
        let streaming = match opts.submit {
            _ if opts.failover => false,
            SubmitMode::Unary => false,
            SubmitMode::Stream => true,
            SubmitMode::Mixed => si % 2 == 1,
        };
        let schedule = schedule.clone();
        let intended = move |i: usize| schedule.as_ref().map(|s| t_submit + s[i]);
        senders.push(tokio::spawn(async move {
            let record = move |i: usize, r: Result<pb::Receipt, String>, start: Instant| {
                let now = Instant::now();
                let p99 = {
                    let mut h = hist.lock().expect("hist");
                    h.record(now.saturating_duration_since(start).as_micros() as u64)
                        .ok();
                    (h.len() % 64 == 0).then(|| h.value_at_quantile(0.99))
                };
                if r.is_err() {
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                receipts.lock().expect("receipts")[i] = Some(r);
                receipt_at.lock().expect("receipt times")[i] = Some(now);
                progress.inc(1);
                // Live figures: receipt p99 so far and refusals.
                if let Some(p99) = p99 {
                    progress.set_message(format!(
                        "receipts p99 {:.1} ms, {} refused",
                        p99 as f64 / 1000.0,
                        refused.load(std::sync::atomic::Ordering::Relaxed)
                    ));
                }
            };
            if streaming {
                let (tx, rx) = mpsc::channel(64);
                let mut c = SubmissionServiceClient::new(ch);
                let feed_plan = plan.clone();
                let feed_sent = sent_at.clone();
                let feed_idx = idx.clone();
                tokio::spawn(async move {
                    for i in feed_idx {
                        if let Some(at) = intended(i) {
                            tokio::time::sleep_until(at.into()).await;
                        }
                        feed_sent.lock().expect("sent")[i] =
                            Some(intended(i).unwrap_or_else(Instant::now));
                        if tx.send(feed_plan[i].submission.clone()).await.is_err() {
                            return;
                        }
                    }
                });
                let mut out = c
                    .submit_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await?
                    .into_inner();
                while let Some(r) = out.message().await? {
                    let i = idx[r.index as usize];
                    let start = sent_at.lock().expect("sent")[i].expect("sent before answered");
                    let res = match r.result {
                        Some(pb::submit_stream_response::Result::Receipt(rc)) => Ok(rc),
                        Some(pb::submit_stream_response::Result::Error(e)) => {
                            Err(format!("code {}: {}", e.code, e.message))
                        }
                        None => Err("empty answer".into()),
                    };
                    record(i, res, start);
                }
            } else {
                let sem = Arc::new(tokio::sync::Semaphore::new(inflight));
                let mut tasks = tokio::task::JoinSet::new();
                for i in idx {
                    let at = intended(i);
                    if let Some(at) = at {
                        tokio::time::sleep_until(at.into()).await;
                    }
                    let permit = sem.clone().acquire_owned().await?;
                    let mut c = SubmissionServiceClient::new(ch.clone());
                    let bureau = bureau.clone();
                    let sub = plan[i].submission.clone();
                    let sent_at = sent_at.clone();
                    let record = record.clone();
                    tasks.spawn(async move {
                        let start = at.unwrap_or_else(Instant::now);
                        sent_at.lock().expect("sent")[i] = Some(start);
                        let r = if failover {
                            bureau.submit(sub).await
                        } else {
                            c.submit(sub).await.map(|r| r.into_inner())
                        }
                        .map_err(|s| format!("{:?}: {}", s.code(), s.message()));
                        record(i, r, start);
                        drop(permit);
                    });
                }
                while tasks.join_next().await.is_some() {}
            }
            anyhow::Ok(())
        }));
    }
    for s in senders {
        s.await??;
    }
    progress.finish();
    let submit_elapsed = t_submit.elapsed();
    let applied = match change_task {
        Some(t) => Some(t.await??),
        None => None,
    };
    let (expected_office, expected_bureau) = crate::changes::expected_counts(
        plan,
        changed_plan.map(|p| p.as_slice()).unwrap_or(plan),
        &sent_at.lock().expect("sent"),
        applied,
    );

    // Repeats of already-receipted TCNs must return the original receipt, and change nothing.
    let mut repeats = Vec::new();
    for b in plan.iter().take(10) {
        let r = if opts.failover {
            bureau_clients[&b.state].submit(b.submission.clone()).await
        } else {
            let mut c = SubmissionServiceClient::new(channels[&b.state].clone());
            c.submit(b.submission.clone()).await.map(|r| r.into_inner())
        };
        repeats.push((
            b.submission.tcn.clone(),
            r.map_err(|s| s.message().to_string()),
        ));
    }

    // Collect results until everything expected has arrived, then a little longer to catch
    // anything extra (duplicates, leaks).
    results.set_length((expected_office + expected_bureau) as u64);
    let collected = collector
        .finish(expected_office, expected_bureau, opts.settle_timeout)
        .await?;
    let mut obs = Observations {
        office: collected.office,
        bureau: collected.bureau,
        ..Default::default()
    };
    results.finish();
    obs.completed_in = t_submit.elapsed();
    for s in subscriptions {
        s.abort();
    }
    obs.submit_elapsed = submit_elapsed;
    obs.sent_at = sent_at.lock().expect("sent").clone();
    obs.receipt_at = receipt_at.lock().expect("receipt times").clone();
    obs.t0 = Some(t_submit);
    obs.applied = applied;
    obs.steps = steps.clone();
    obs.step_secs = step_secs;
    obs.receipts = receipts.lock().expect("receipts").clone();
    obs.set_receipt_latency(receipt_hist.lock().expect("hist").clone());
    obs.repeats = repeats;

    // Field offices act on the recommendations: one detainer per recommending outcome, asked
    // for twice (the second must return the same detainer and deliver nothing new), with the
    // jail's scheduled release a day and a half after booking.
    let mut office_clients: BTreeMap<String, FieldOfficeServiceClient<tonic::transport::Channel>> =
        BTreeMap::new();
    for (office, n, _) in &obs.office {
        let Some(o) = &n.outcome else { continue };
        let recommended = [
            pb::Recommendation::Detainer as i32,
            pb::Recommendation::DetainerOnConviction as i32,
        ];
        if !recommended.contains(&o.recommendation) {
            continue;
        }
        if !office_clients.contains_key(office) {
            let ch = pki::connect(
                endpoint,
                pki,
                &Principal::FieldOffice {
                    office: office.clone(),
                },
            )
            .await?;
            office_clients.insert(office.clone(), FieldOfficeServiceClient::new(ch));
        }
        let c = office_clients.get_mut(office).expect("just inserted");
        let booked = o.booked_at.unwrap_or_default();
        let req = pb::IssueDetainerRequest {
            state: o.ori[..2].to_string(),
            tcn: o.tcn.clone(),
            scheduled_release: Some(prost_types::Timestamp {
                seconds: booked.seconds + 36 * 3600,
                nanos: 0,
            }),
        };
        let d = c.issue_detainer(req.clone()).await?.into_inner();
        let again = c.issue_detainer(req.clone()).await?.into_inner();
        anyhow::ensure!(
            again.detainer_id == d.detainer_id,
            "detainer for {} issued twice",
            o.tcn
        );
        // About a third of those held are later removed (deterministic from the TCN); the
        // office records it, twice, and the monthly statistics must count it once.
        if removed(&o.tcn) {
            let day = chrono::DateTime::from_timestamp(booked.seconds, 0)
                .unwrap_or_default()
                .date_naive()
                + chrono::Duration::days(45);
            let r = pb::RecordRemovalRequest {
                state: req.state.clone(),
                tcn: o.tcn.clone(),
                removed_on: day.to_string(),
            };
            c.record_removal(r.clone()).await?;
            c.record_removal(r).await?;
            obs.removals.push((req.state.clone(), o.tcn.clone()));
        }
        obs.detainers_issued
            .push((req.state, o.tcn.clone(), d.detainer_id));
    }
    for (state, bureau) in &bureau_clients {
        let mut s = bureau.follow_responses(Some(heads[state]), false);
        while let Some(r) = s.next().await? {
            if let Some(pb::bureau_response::Body::Detainer(d)) = r.body
                && planned.contains(&r.tcn)
            {
                obs.detainers_received
                    .push((state.clone(), r.tcn, d.detainer_id));
            }
        }
    }
    Ok(obs)
}

/// Asks the gateway (as admin, `MatcherService.Search`) where each listed matcher error's
/// mate ranks among the top candidates for the booking's prints, in the engine's gallery.
/// A gateway that serves no `MatcherService` leaves the ranks unknown (said in the listing).
async fn mate_ranks(admin: tonic::transport::Channel, plan: &[Booking], v: &mut Verification) {
    const CANDIDATES: u32 = 100;
    let mut m = pb::matcher_service_client::MatcherServiceClient::new(admin);
    let by_tcn: HashMap<&str, &Booking> = plan
        .iter()
        .map(|b| (b.submission.tcn.as_str(), b))
        .collect();
    for e in &mut v.errors {
        let (Some(mate), Some(b)) = (e.mate, by_tcn.get(e.tcn.as_str())) else {
            continue;
        };
        let gallery = match e.engine {
            verify::Engine::Fbi => pb::Gallery::Fbi,
            verify::Engine::Ident => pb::Gallery::Ident,
        };
        let req = pb::SearchRequest {
            fingers: b.submission.fingers.clone(),
            max_candidates: CANDIDATES,
            gallery: gallery as i32,
        };
        match m.search(req).await {
            Ok(r) => {
                let rank = r
                    .into_inner()
                    .candidates
                    .iter()
                    .position(|c| c.subject_id == mate)
                    .map(|i| i + 1);
                e.mate_rank = Some(rank);
            }
            Err(s) => {
                tracing::warn!(code = ?s.code(), "cannot ask the gateway where a mate ranks");
                return;
            }
        }
    }
}

type OfficeSeen = Vec<(String, pb::FieldOfficeNotification, Instant)>;
type BureauSeen = Vec<(String, pb::BureauResponse, Instant)>;

/// What the subscriptions delivered about this run's bookings, each answer with the moment it
/// reached the driver.
#[derive(Default)]
struct Collected {
    office: OfficeSeen,
    bureau: BureauSeen,
}

/// Reads the subscriptions' answers as they arrive, from a task of its own.
struct Collector {
    counts: tokio::sync::watch::Receiver<(usize, usize)>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Collected>,
}

impl Collector {
    /// Starts collecting from `rx`. With `ours`, answers about other bookings (other runs'
    /// against a shared gateway) are skipped.
    fn spawn(
        mut rx: mpsc::Receiver<(Seen, Instant)>,
        ours: Option<std::collections::HashSet<String>>,
        results: ProgressBar,
    ) -> Collector {
        let (counts_tx, counts) = tokio::sync::watch::channel((0, 0));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut c = Collected::default();
            loop {
                let (seen, at) = tokio::select! {
                    m = rx.recv() => match m { Some(m) => m, None => break },
                    _ = &mut stopped => break,
                };
                let tcn = match &seen {
                    Seen::Office(_, n) => n.outcome.as_ref().map(|o| o.tcn.as_str()).unwrap_or(""),
                    Seen::Bureau(_, r) => r.tcn.as_str(),
                };
                if ours.as_ref().is_some_and(|p| !p.contains(tcn)) {
                    continue;
                }
                match seen {
                    Seen::Office(office, n) => c.office.push((office, n, at)),
                    Seen::Bureau(state, r) => c.bureau.push((state, r, at)),
                }
                results.inc(1);
                counts_tx.send_replace((c.office.len(), c.bureau.len()));
            }
            c
        });
        Collector { counts, stop, task }
    }

    /// Waits until `office` notifications and `bureau` responses have arrived (or `settle`
    /// has passed), then half a second more to catch anything extra (duplicates, leaks), and
    /// returns everything collected.
    async fn finish(
        mut self,
        office: usize,
        bureau: usize,
        settle: Duration,
    ) -> anyhow::Result<Collected> {
        let deadline = tokio::time::Instant::now() + settle;
        let all = self.counts.wait_for(|(o, b)| *o >= office && *b >= bureau);
        let arrived = matches!(tokio::time::timeout_at(deadline, all).await, Ok(Ok(_)));
        if arrived {
            let tail = (tokio::time::Instant::now() + Duration::from_millis(500)).min(deadline);
            tokio::time::sleep_until(tail).await;
        }
        let _ = self.stop.send(());
        Ok(self.task.await?)
    }
}

/// Checks that a directory holds a world; a helpful error otherwise.
pub fn require_world(dir: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        dir.join(world::WORLD_FILE).exists(),
        "{} holds no world; create one with `state-bureau-sim generate --out {}`",
        dir.display(),
        dir.display()
    );
    Ok(())
}

/// Whether the simulated office removes the person held under `tcn` (about one in three).
fn removed(tcn: &str) -> bool {
    let h = tcn
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    h % 3 == 0
}
