//! `state-bureau-sim bench`: the gateway side by side with a baseline, in one run on one
//! machine, driven by the same load generator.
//!
//! 1. **Echo**: a bare tonic server implementing `SubmissionService.Submit` by answering a
//!    receipt at once — the same contract, message sizes and mutual-TLS setup, no work, no
//!    disk. Its rate is what the transport and the driver allow: the driver's own ceiling.
//! 2. **Gateway, durable ingest**: the real gateway in this process (embedded store, group
//!    commit, pipeline running behind) under the same closed loop. Reported as a ratio to the
//!    echo's rate and latency.
//! 3. **One bureau**: both again with only the busiest state's bookings, from its one
//!    client (a fresh gateway).
//! 4. **Gateway, end to end**: a fresh gateway under an open-loop step profile with every
//!    field office subscribed and every answer verified against ground truth (the `run`
//!    machinery): submission → field-office notification p99 per step and the knee; the p99 at
//!    the step nearest half the knee is the headline figure.
//! 5. **Fairness** ([`crate::fairness`]): a quiet bureau's latency alone and beside a bureau
//!    flooding at ten times its rate, on a fresh gateway.
//!
//! Also measured: how fast the simulator plans bookings (captures included), so the driver
//! is never mistaken for the bottleneck. Figures print as a table and go to JSON.

use crate::bookings::{self, Booking, WorldData};
use crate::demo::{self, Arrival, DemoOptions, RunOptions};
use hdrhistogram::Histogram;
use interop_client::Client;
use interop_gateway::auth::principal::Principal;
use interop_gateway_cli::pki;
use interop_proto::v1 as pb;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub seed: u64,
    pub identities: u64,
    /// Seconds of each closed-loop phase.
    pub seconds: f64,
    /// Submissions in flight in the closed loop (over all bureaus).
    pub concurrency: usize,
    /// Step profile of the end-to-end phase: up to this rate, in 6 steps.
    pub e2e_max_rate: f64,
    pub e2e_step_secs: f64,
    /// The fairness phase's quiet rate; `None`: a fifth of the knee.
    pub quiet_rate: Option<f64>,
    /// A world directory to use instead of generating one of `identities` (e.g. a
    /// 1,000,000-person world with its index snapshots).
    pub world: Option<PathBuf>,
    pub json: Option<PathBuf>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            seed: 2011,
            identities: 5_000,
            seconds: 8.0,
            concurrency: 64,
            e2e_max_rate: 360.0,
            e2e_step_secs: 4.0,
            quiet_rate: None,
            world: None,
            json: None,
        }
    }
}

/// The baseline: receipts at once, no store, no pipeline.
struct Echo {
    n: AtomicUsize,
}

#[tonic::async_trait]
impl pb::submission_service_server::SubmissionService for Echo {
    async fn submit(
        &self,
        req: tonic::Request<pb::Submission>,
    ) -> Result<tonic::Response<pb::Receipt>, tonic::Status> {
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(pb::Receipt {
            tcn: req.into_inner().tcn,
            receipt_id: format!("ECHO-{n}"),
            accepted_at: Some(interop_gateway::convert::timestamp_ms(
                interop_gateway::convert::now_ms(),
            )),
            duplicate: false,
        }))
    }

    type SubmitStreamStream =
        tokio_stream::wrappers::ReceiverStream<Result<pb::SubmitStreamResponse, tonic::Status>>;

    async fn submit_stream(
        &self,
        _: tonic::Request<tonic::Streaming<pb::Submission>>,
    ) -> Result<tonic::Response<Self::SubmitStreamStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("echo baseline: Submit only"))
    }

    async fn get_status(
        &self,
        _: tonic::Request<pb::GetStatusRequest>,
    ) -> Result<tonic::Response<pb::SubmissionStatus>, tonic::Status> {
        Err(tonic::Status::unimplemented("echo baseline: Submit only"))
    }

    type StreamResponsesStream =
        tokio_stream::wrappers::ReceiverStream<Result<pb::BureauResponse, tonic::Status>>;

    async fn stream_responses(
        &self,
        _: tonic::Request<pb::StreamResponsesRequest>,
    ) -> Result<tonic::Response<Self::StreamResponsesStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("echo baseline: Submit only"))
    }

    async fn get_response_head(
        &self,
        _: tonic::Request<pb::GetResponseHeadRequest>,
    ) -> Result<tonic::Response<pb::ResponseHead>, tonic::Status> {
        Err(tonic::Status::unimplemented("echo baseline: Submit only"))
    }

    async fn acknowledge_detainer_copy(
        &self,
        _: tonic::Request<pb::AcknowledgeDetainerCopyRequest>,
    ) -> Result<tonic::Response<pb::DetainerCopyGiven>, tonic::Status> {
        Err(tonic::Status::unimplemented("echo baseline: Submit only"))
    }

    async fn report_conviction(
        &self,
        _: tonic::Request<pb::ReportConvictionRequest>,
    ) -> Result<tonic::Response<pb::DetainerOperative>, tonic::Status> {
        Err(tonic::Status::unimplemented("echo baseline: Submit only"))
    }

    async fn notify_lesc(
        &self,
        _: tonic::Request<pb::NotifyLescRequest>,
    ) -> Result<tonic::Response<pb::LescNotice>, tonic::Status> {
        Err(tonic::Status::unimplemented("echo baseline: Submit only"))
    }
}

/// What one closed-loop phase measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Phase {
    pub name: String,
    pub requests: usize,
    pub errors: usize,
    pub seconds: f64,
    pub per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// A closed loop of `concurrency` unary submissions for `seconds`, bookings taken in turn
/// from `plan` with a fresh TCN each time (`<tcn>-<n>` in base 36), each sent by its state's
/// client.
async fn closed_loop(
    name: &str,
    clients: &HashMap<String, Client>,
    plan: &Arc<Vec<Booking>>,
    concurrency: usize,
    seconds: f64,
) -> anyhow::Result<Phase> {
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (next, errors, plan, clients) =
            (next.clone(), errors.clone(), plan.clone(), clients.clone());
        tasks.spawn(async move {
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            while Instant::now() < until {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let b = &plan[n % plan.len()];
                let mut sub = b.submission.clone();
                sub.tcn = unique_tcn(&sub.tcn, n / plan.len());
                let t = Instant::now();
                match clients[&b.state].submit(sub).await {
                    Ok(_) => {
                        h.record(t.elapsed().as_micros() as u64).ok();
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            h
        });
    }
    let mut all = Histogram::<u64>::new(3)?;
    while let Some(h) = tasks.join_next().await {
        all.add(h?)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let ms = |v: u64| v as f64 / 1000.0;
    Ok(Phase {
        name: name.into(),
        requests: all.len() as usize,
        errors: errors.load(Ordering::Relaxed),
        seconds: secs,
        per_s: all.len() as f64 / secs,
        p50_ms: ms(all.value_at_quantile(0.5)),
        p99_ms: ms(all.value_at_quantile(0.99)),
        p999_ms: ms(all.value_at_quantile(0.999)),
        max_ms: ms(all.max()),
    })
}

/// `TX20110305-0000123` on round 0; `TX20110305-0000123-R5` on round 5 (within 40 chars).
pub(crate) fn unique_tcn(tcn: &str, round: usize) -> String {
    if round == 0 {
        return tcn.to_string();
    }
    let mut n = round;
    let mut digits = vec![];
    while n > 0 {
        digits.push(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[n % 36]);
        n /= 36;
    }
    digits.reverse();
    format!("{tcn}-R{}", String::from_utf8_lossy(&digits))
}

pub(crate) async fn clients_for(
    endpoint: &str,
    pki: &pki::PkiDir,
    plan: &[Booking],
) -> anyhow::Result<HashMap<String, Client>> {
    let mut out = HashMap::new();
    for b in plan {
        if !out.contains_key(&b.state) {
            // No retries: a shed or failed call counts as an error, not as a slow success.
            let who = Principal::Bureau {
                state: b.state.clone(),
            };
            let c = pki::client_config(endpoint, pki, Some(&pki.client(&who)))?
                .retry(interop_client::RetryPolicy::none())
                .connect()
                .await?;
            out.insert(b.state.clone(), c);
        }
    }
    Ok(out)
}

/// Where one bench run keeps its world, PKI and gateways' data.
struct Place<'a> {
    dir: &'a std::path::Path,
    world_dir: &'a std::path::Path,
    pki: &'a pki::PkiDir,
    data: &'a WorldData,
}

impl Place<'_> {
    /// A fresh in-process gateway with its own data directory `name`.
    async fn gateway(&self, name: &str) -> anyhow::Result<demo::Served> {
        let data_dir = self.dir.join(name);
        demo::serve_in_process(
            self.world_dir,
            &data_dir,
            self.pki,
            &self.data.world,
            4,
            false,
        )
        .await
    }

    /// A closed loop of `plan` against a fresh gateway `name`, stopped afterwards.
    async fn ingest(
        &self,
        name: &str,
        label: &str,
        plan: &Arc<Vec<Booking>>,
        opts: &BenchOptions,
    ) -> anyhow::Result<Phase> {
        let served = self.gateway(name).await?;
        let clients = clients_for(&served.endpoint, self.pki, plan).await?;
        eprintln!("{label}: {} s closed loop", opts.seconds);
        let phase = closed_loop(label, &clients, plan, opts.concurrency, opts.seconds).await;
        drop(clients);
        stop(served).await;
        phase
    }
}

/// Stops a gateway and waits for it.
async fn stop(served: demo::Served) {
    let _ = served.stop.send(());
    let _ = served.task.await;
}

pub async fn run(opts: BenchOptions) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let world_dir = opts.world.clone().unwrap_or_else(|| dir.join("world"));
    let (seed, n, wd) = (opts.seed, opts.identities, world_dir.clone());
    if opts.world.is_none() {
        tokio::task::spawn_blocking(move || crate::generate::generate(seed, n, &wd)).await??;
    }
    let data = Arc::new(WorldData::load(&world_dir)?);
    let pki = pki::init_for_world(&dir.join("pki"), &data.world)?;

    // The simulator's own planning rate (bookings with fresh captures and expectations).
    let (from, days) = demo::booking_window();
    let t = Instant::now();
    let pd = data.clone();
    let plan = Arc::new(
        tokio::task::spawn_blocking(move || {
            bookings::plan(&pd, seed, 2_000, from, days, &Default::default())
        })
        .await?,
    );
    let plan_per_s = plan.len() as f64 / t.elapsed().as_secs_f64();
    eprintln!("planned {} bookings at {plan_per_s:.0}/s", plan.len());

    // 1. Echo baseline.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let echo_endpoint = format!("https://{}", listener.local_addr()?);
    let (echo_stop, echo_rx) = tokio::sync::oneshot::channel::<()>();
    let echo_task = tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tonic_server_tls(&pki)?)?
            .add_service(
                pb::submission_service_server::SubmissionServiceServer::new(Echo {
                    n: AtomicUsize::new(0),
                })
                .max_decoding_message_size(interop_gateway::intake::validate::MAX_MESSAGE_BYTES),
            )
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = echo_rx.await;
                },
            ),
    );
    let echo_clients = clients_for(&echo_endpoint, &pki, &plan).await?;
    eprintln!("echo baseline: {} s closed loop", opts.seconds);
    let echo = closed_loop(
        "echo, all bureaus",
        &echo_clients,
        &plan,
        opts.concurrency,
        opts.seconds,
    )
    .await?;
    // One bureau alone: the busiest state's bookings, from its one client.
    let (one_state, _) = crate::fairness::pick_states(&plan)?;
    let one_plan: Arc<Vec<Booking>> = Arc::new(
        plan.iter()
            .filter(|b| b.state == one_state)
            .cloned()
            .collect(),
    );
    let echo_one = closed_loop(
        &format!("echo, one bureau ({one_state})"),
        &echo_clients,
        &one_plan,
        opts.concurrency,
        opts.seconds,
    )
    .await?;
    drop(echo_clients);
    let _ = echo_stop.send(());
    let _ = echo_task.await;

    // 2. The gateway's durable ingest, same loop; then one bureau, on a fresh gateway (the
    // first one's backlog would be in its way).
    let place = Place {
        dir,
        world_dir: &world_dir,
        pki: &pki,
        data: &data,
    };
    let ingest = place
        .ingest("data-ingest", "gateway, all bureaus", &plan, &opts)
        .await?;
    let ingest_one = place
        .ingest(
            "data-ingest-one",
            &format!("gateway, one bureau ({one_state})"),
            &one_plan,
            &opts,
        )
        .await?;

    // 3. End to end on a fresh gateway: open-loop steps, every answer verified.
    let served = place.gateway("data-e2e").await?;
    let step = opts.e2e_max_rate / 6.0;
    let arrival = Arrival::Steps {
        start: step,
        step,
        max: opts.e2e_max_rate,
        step_secs: opts.e2e_step_secs,
    };
    let e2e_json = dir.join("e2e.json");
    eprintln!("gateway end to end: open-loop steps, verified");
    let v = demo::run_remote(RunOptions {
        target: served.endpoint.clone(),
        pki: dir.join("pki"),
        world: world_dir.clone(),
        demo: DemoOptions {
            seed: opts.seed + 1,
            bookings: arrival.step_bookings().unwrap_or(1),
            arrival,
            run_tag: "BENCH-".into(),
            plant_outliers: 0,
            json: Some(e2e_json.clone()),
            ..Default::default()
        },
    })
    .await?;
    stop(served).await;
    let e2e: serde_json::Value = serde_json::from_slice(&std::fs::read(&e2e_json)?)?;
    let knee = e2e["timeline"]["knee_per_s"].as_f64();

    // 4. Fairness, on a fresh gateway: a quiet bureau at a fifth of the knee (or as asked),
    // alone and beside a bureau flooding at ten times that (twice what the gateway can
    // process).
    let served = place.gateway("data-fairness").await?;
    let quiet_per_s = opts
        .quiet_rate
        .unwrap_or_else(|| (knee.unwrap_or(opts.e2e_max_rate) / 5.0).max(1.0));
    eprintln!(
        "fairness: a quiet bureau at {quiet_per_s:.1}/s alone, then beside a flood at {:.0}/s",
        10.0 * quiet_per_s
    );
    let gw_clients = clients_for(&served.endpoint, &pki, &plan).await?;
    let fairness = crate::fairness::measure(&gw_clients, &plan, quiet_per_s, opts.seconds).await?;
    drop(gw_clients);
    stop(served).await;
    let steps = e2e["timeline"]["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let half = knee.map(|k| k / 2.0);
    let at_half = half.and_then(|h| {
        steps
            .iter()
            .min_by(|a, b| {
                let d =
                    |s: &serde_json::Value| (s["offered_per_s"].as_f64().unwrap_or(0.0) - h).abs();
                d(a).total_cmp(&d(b))
            })
            .cloned()
    });

    let ratio = ingest.per_s / echo.per_s.max(1e-9);
    let ratio_one = ingest_one.per_s / echo_one.per_s.max(1e-9);
    let mut t = String::new();
    use std::fmt::Write;
    let _ = writeln!(
        t,
        "\n== interop bench: the gateway beside a bare echo server (same mTLS, same messages, same driver) =="
    );
    let _ = writeln!(
        t,
        "  {:<28} {:>10} {:>8} {:>10} {:>9} {:>9} {:>9}",
        "phase", "requests", "errors", "per s", "p50 ms", "p99 ms", "p99.9 ms"
    );
    for p in [&echo, &ingest, &echo_one, &ingest_one] {
        let _ = writeln!(
            t,
            "  {:<28} {:>10} {:>8} {:>10.0} {:>9.2} {:>9.2} {:>9.2}",
            p.name, p.requests, p.errors, p.per_s, p.p50_ms, p.p99_ms, p.p999_ms
        );
    }
    let _ = writeln!(
        t,
        "  durable ingest / echo rate, all bureaus: {:.2}; one bureau: {:.2} (target >= 0.50); p99 ratio {:.1}x, {:.1}x",
        ratio,
        ratio_one,
        ingest.p99_ms / echo.p99_ms.max(1e-9),
        ingest_one.p99_ms / echo_one.p99_ms.max(1e-9)
    );
    let _ = writeln!(
        t,
        "  simulator: plans {plan_per_s:.0} bookings/s (captures included); the echo phase is the driver's send ceiling"
    );
    let _ = writeln!(
        t,
        "end to end (submission -> field-office notification), open-loop steps, verified: {}",
        if v.passed() { "PASS" } else { "FAIL" }
    );
    for s in &steps {
        let _ = writeln!(
            t,
            "  offered {:>7.1}/s  receipts {:>7.1}/s  e2e p99 {:>10.2} ms",
            s["offered_per_s"].as_f64().unwrap_or(0.0),
            s["receipts_per_s"].as_f64().unwrap_or(0.0),
            s["e2e_p99_ms"].as_f64().unwrap_or(0.0)
        );
    }
    match (knee, &at_half) {
        (Some(k), Some(s)) => {
            let _ = writeln!(
                t,
                "  knee {k:.1}/s; at about half of it ({:.1}/s) e2e p99 is {:.2} ms (target <= 25 ms)",
                s["offered_per_s"].as_f64().unwrap_or(0.0),
                s["e2e_p99_ms"].as_f64().unwrap_or(0.0)
            );
        }
        _ => {
            let _ = writeln!(
                t,
                "  no knee found: the gateway did not keep up with the first step"
            );
        }
    }
    let f = &fairness;
    let _ = writeln!(
        t,
        "fairness: quiet bureau {} at {:.1}/s, flooding bureau {} at {:.0}/s, open loop, {:.0} s each after {:.0} s of warm-up (both at the quiet rate, unmeasured)",
        f.quiet_state, f.quiet_per_s, f.flood_state, f.flood_per_s, f.seconds, f.warm_up_seconds
    );
    for p in [&f.alone, &f.with_flood] {
        let _ = writeln!(
            t,
            "  {:<34} sent {:>5}  answered {:>5}  p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
            p.name, p.sent, p.answered, p.p50_ms, p.p99_ms, p.max_ms
        );
    }
    let _ = writeln!(
        t,
        "  the flood: {} sent, {} receipted, {} refused; quiet p99 beside it / alone: {:.2} (target <= 2)",
        f.with_flood.flood_sent,
        f.with_flood.flood_receipted,
        f.with_flood.flood_refused,
        f.p99_ratio
    );
    println!("{t}");
    let json = serde_json::json!({
        "identities": opts.identities,
        "concurrency": opts.concurrency,
        "echo": echo,
        "gateway_ingest": ingest,
        "ingest_to_echo_rate": ratio,
        "echo_one_bureau": echo_one,
        "gateway_ingest_one_bureau": ingest_one,
        "ingest_to_echo_rate_one_bureau": ratio_one,
        "fairness": fairness,
        "simulator_plan_per_s": plan_per_s,
        "e2e_steps": steps,
        "e2e_knee_per_s": knee,
        "e2e_at_half_knee": at_half,
        "e2e_verified": v.passed(),
    });
    if let Some(path) = &opts.json {
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)?;
        println!("written to {}", path.display());
    }
    anyhow::ensure!(
        v.passed(),
        "the end-to-end phase failed verification: {:?}",
        v.violations
    );
    Ok(())
}

/// The gateway's identity and client CA as tonic's own TLS configuration, for the bare tonic
/// echo baseline, which must stay a bare tonic server (tonic's listener, not ours).
fn tonic_server_tls(pki: &pki::PkiDir) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
    use anyhow::Context;
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let files = pki.server();
    let read =
        |p: &std::path::Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?))
        .client_ca_root(Certificate::from_pem(read(&pki.ca_cert())?)))
}
