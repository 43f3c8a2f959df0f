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
use crate::verify::{self, Verification};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use interop_gateway::auth::principal::Principal;
use interop_gateway::{engines, server, store, world};
use interop_gateway_cli::pki;
use interop_gateway_cli::pki::PkiDir;
use interop_proto::v1 as pb;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Write each closed quarter's DOJ assessment here (`FYyyyyQn.json`, `FYyyyyQn.html`).
    pub doj: Option<PathBuf>,
    pub shards: usize,
    /// How long to wait for all results after the last receipt.
    pub settle_timeout: Duration,
    /// Bookings follow the world's planted profiling in up to this many jurisdictions (0: none).
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
            doj: None,
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

type AdminClient = pb::admin_service_client::AdminServiceClient<tonic::transport::Channel>;

/// The profiling review's figures for the window (`review`) and each quarter.
async fn review_figures(
    admin: &mut AdminClient,
    window: &pb::OutlierReview,
    quarters: &[String],
) -> anyhow::Result<crate::verify::review::FigureMap> {
    use crate::verify::review::{WINDOW, figure_map};
    let mut out = figure_map(WINDOW, window);
    for q in quarters {
        let r = admin
            .quarterly_review(pb::QuarterlyReviewRequest {
                quarter: q.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        out.extend(figure_map(q, &r));
    }
    Ok(out)
}

/// Each closed quarter's latest stored assessment beside its review on demand, once the
/// schedule has caught up with the run's bookings (at most [`ASSESSMENT_WAIT`]; what stands
/// then is judged).
async fn await_assessments(
    admin: &mut AdminClient,
    quarters: &[String],
) -> anyhow::Result<Vec<crate::verify::review::AssessmentSeen>> {
    let deadline = Instant::now() + ASSESSMENT_WAIT;
    loop {
        let mut seen = Vec::new();
        for q in quarters {
            let stored = match admin
                .get_assessment(pb::GetAssessmentRequest {
                    quarter: q.clone(),
                    revision: 0,
                })
                .await
            {
                Ok(a) => Some(a.into_inner()),
                Err(s) if s.code() == tonic::Code::NotFound => None,
                Err(s) => return Err(s.into()),
            };
            let on_demand = admin
                .quarterly_review(pb::QuarterlyReviewRequest {
                    quarter: q.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            seen.push(crate::verify::review::AssessmentSeen {
                quarter: q.clone(),
                stored,
                on_demand,
            });
        }
        let current = seen.iter().all(|a| {
            a.stored
                .as_ref()
                .and_then(|s| s.review.as_ref())
                .is_some_and(|r| r.figures == a.on_demand.figures)
        });
        if current || Instant::now() > deadline {
            return Ok(seen);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The DOJ export of every stored assessment: JSON and a self-contained HTML page each.
fn write_doj(
    dir: &std::path::Path,
    seen: &[crate::verify::review::AssessmentSeen],
) -> anyhow::Result<()> {
    use interop_client::assessment::{assessment_html, assessment_json};
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = 0;
    for a in seen {
        let Some(stored) = &a.stored else { continue };
        let path = dir.join(format!("{}.json", a.quarter));
        std::fs::write(&path, serde_json::to_vec_pretty(&assessment_json(stored))?)
            .with_context(|| format!("writing {}", path.display()))?;
        let path = dir.join(format!("{}.html", a.quarter));
        std::fs::write(&path, assessment_html(stored))
            .with_context(|| format!("writing {}", path.display()))?;
        written += 1;
    }
    eprintln!(
        "{written} quarterly assessment(s) for DOJ written to {}",
        dir.display()
    );
    Ok(())
}

/// How long the run waits for the scheduled assessments to catch up with its bookings.
const ASSESSMENT_WAIT: Duration = Duration::from_secs(30);

/// Open loop: the most submissions one bureau has in flight before the driver itself waits
/// (a guard against a runaway, far above any useful rate).
pub(crate) const OPEN_LOOP_MAX_INFLIGHT: usize = 20_000;

pub(crate) fn bar(len: u64, what: &str, quiet: bool) -> ProgressBar {
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
pub async fn run(mut opts: DemoOptions) -> anyhow::Result<Verification> {
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
    let planted = bookings::planted_jurisdictions(&data.truth, opts.plant_outliers);
    let plan_planted = planted.clone();
    let mut plan = tokio::task::spawn_blocking(move || {
        bookings::plan(&plan_data, seed, count, from, days, &plan_planted)
    })
    .await?;
    // A data directory with earlier runs in it: their TCNs are taken (the same TCN again is
    // the first booking's receipt, and the offices' decisions on it stand), so this run's
    // are tagged, as `run` does against a gateway with history.
    if opts.run_tag.is_empty() && std::fs::read_dir(&data_dir).is_ok_and(|mut d| d.next().is_some())
    {
        opts.run_tag = clock_tag();
        eprintln!(
            "{} holds earlier runs: this run's TCNs are tagged {}",
            data_dir.display(),
            opts.run_tag
        );
    }
    bookings::tag_tcns(&mut plan, &opts.run_tag);
    let plan = Arc::new(plan);
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
        server::ServeOptions {
            // A run of seconds: look for quarters to assess on its time scale, so the verdict
            // finds every closed quarter caught up soon after the last booking.
            assessment_interval: Duration::from_millis(500),
            ..Default::default()
        },
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
    let planted = bookings::planted_jurisdictions(&data.truth, d.plant_outliers);
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
        detainers_recommended: after.detainers_recommended - before.detainers_recommended,
        decided_no_action: after.decided_no_action - before.decided_no_action,
        decided_discretion: after.decided_discretion - before.decided_discretion,
        lesc_notices: after.lesc_notices - before.lesc_notices,
        detainers_lifted: after.detainers_lifted - before.detainers_lifted,
        removed_level1: after.removed_level1 - before.removed_level1,
        removed_level2: after.removed_level2 - before.removed_level2,
        removed_level3: after.removed_level3 - before.removed_level3,
        removed_non_criminal_priority: after.removed_non_criminal_priority
            - before.removed_non_criminal_priority,
        removed_outside_priorities: after.removed_outside_priorities
            - before.removed_outside_priorities,
        state: after.state.clone(),
        jurisdiction_id: after.jurisdiction_id.clone(),
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
    let window = pb::QuarterlyReviewRequest {
        quarter: String::new(),
        from_month: months.first().cloned().unwrap_or_default(),
        to_month: months.last().cloned().unwrap_or_default(),
    };
    let review_before = admin.quarterly_review(window.clone()).await?.into_inner();
    let complained_before = review_before.complained_of.clone();
    let quarters = crate::verify::review::quarters(plan);
    let figures_before = review_figures(&mut admin, &review_before, &quarters).await?;

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

    let mut obs =
        crate::drive::drive(endpoint, pki, plan, data, opts, changed_plan.as_ref()).await?;
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
    // Organisations complain to CRCL of profiling in each planted jurisdiction, and a public
    // agency (a public defender's office) in each decoy, in the window's first month: the
    // review lists them all, beside its flags.
    let decoys = if planted.is_empty() {
        Default::default()
    } else {
        data.truth.profiling.decoys.clone()
    };
    if !planted.is_empty()
        && let Some(mut crcl) = crate::officers::crcl_client(endpoint, pki).await?
    {
        let who = planted
            .iter()
            .map(|j| (j, "ORG", pb::ComplainantKind::Organisation))
            .chain(
                decoys
                    .iter()
                    .map(|j| (j, "AGY", pb::ComplainantKind::Agency)),
            );
        for (j, prefix, kind) in who {
            let c = crcl
                .file_complaint(pb::FileComplaintRequest {
                    intake_id: format!("{prefix}-{}{j}", opts.run_tag),
                    complainant: kind as i32,
                    jurisdiction_id: j.clone(),
                    allegation: pb::Allegation::RacialOrEthnicProfiling as i32,
                    channel: pb::ComplaintChannel::Crcl as i32,
                    received_on: format!("{}-15", window.from_month),
                    ..Default::default()
                })
                .await?
                .into_inner();
            obs.org_complaints.push((j.clone(), c.complaint_id));
        }
    }
    // The profiling review over the whole booking window: at demo volumes a single quarter has
    // too few bookings per jurisdiction for any test to have power.
    let review = admin.quarterly_review(window).await?.into_inner();
    let before: BTreeMap<&str, u64> = complained_before
        .iter()
        .map(|c| (c.jurisdiction_id.as_str(), c.profiling_complaints))
        .collect();
    obs.review_complained = Some(
        review
            .complained_of
            .iter()
            .filter_map(|c| {
                let n = c.profiling_complaints
                    - before.get(c.jurisdiction_id.as_str()).copied().unwrap_or(0);
                (n > 0).then(|| (c.jurisdiction_id.clone(), (n, c.flagged)))
            })
            .collect(),
    );
    obs.review_tests = review.tests;
    obs.review_flags = review
        .flags
        .iter()
        .map(|f| (f.jurisdiction_id.clone(), f.group.clone()))
        .collect();
    let figures_after = review_figures(&mut admin, &review, &quarters).await?;
    obs.review_figures = Some(crate::verify::review::delta(
        &figures_after,
        &figures_before,
    ));
    obs.review_window = Some(review);
    obs.assessments =
        await_assessments(&mut admin, &crate::verify::review::closed_quarters(plan)).await?;
    if let Some(dir) = &opts.doj {
        write_doj(dir, &obs.assessments)?;
    }
    if !planted.is_empty() {
        obs.decoys = decoys;
        obs.target_group = data
            .truth
            .profiling
            .target
            .map(|g| g.as_str().to_string())
            .unwrap_or_default();
    }
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

/// Asks the gateway (as admin, `MatcherService.Search`) where each listed matcher error's
/// mate ranks among the top candidates for the booking's prints, in the engine's gallery.
/// A gateway that serves no `MatcherService` leaves the ranks unknown (said in the listing).
///
/// Field offices hear of identifications only, so a booking they heard nothing of looks like
/// a miss from outside. Where the gateway's own matcher identifies the mate from the same
/// prints (a hit, the mate first), the identification was made and then lost: that fails
/// "notifications lost or misrouted", a deterministic check, not the matcher's rate.
async fn mate_ranks(admin: tonic::transport::Channel, plan: &[Booking], v: &mut Verification) {
    const CANDIDATES: u32 = 100;
    let mut m = pb::matcher_service_client::MatcherServiceClient::new(admin);
    let by_tcn: HashMap<&str, &Booking> = plan
        .iter()
        .map(|b| (b.submission.tcn.as_str(), b))
        .collect();
    let mut lost = Vec::new();
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
                let r = r.into_inner();
                let rank = r
                    .candidates
                    .iter()
                    .position(|c| c.subject_id == mate)
                    .map(|i| i + 1);
                e.mate_rank = Some(rank);
                if e.engine == verify::Engine::Ident
                    && e.what.ends_with("(no hit)")
                    && r.hit
                    && rank == Some(1)
                {
                    lost.push(e.tcn.clone());
                }
            }
            Err(s) => {
                tracing::warn!(code = ?s.code(), "cannot ask the gateway where a mate ranks");
                break;
            }
        }
    }
    for tcn in lost {
        v.fail(
            verify::LOST,
            &tcn,
            "the gateway's matcher identifies the mate from these prints, yet no identification reached the field office".into(),
        );
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
