//! The main job, end to end on one machine: generate a world, issue a PKI, start the gateway
//! in-process on a loopback port over real mutual TLS, subscribe every field office and every
//! bureau's response stream, submit bookings from many bureaus concurrently (half over unary
//! `Submit`, half over `SubmitStream`), then check every answer against the ground truth and
//! print a summary. Nothing is mocked: the clients are real gRPC clients over TLS sockets.

use crate::bookings::{self, Booking, WorldData};
use crate::verify::{self, Observations, Verification};
use anyhow::Context;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use interop_gateway::pki::PkiDir;
use interop_gateway::principal::Principal;
use interop_gateway::{backends, client, pki, server, store, world};
use interop_proto::v1 as pb;
use pb::field_office_service_client::FieldOfficeServiceClient;
use pb::submission_service_client::SubmissionServiceClient;
use std::collections::BTreeMap;
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
    pub shards: usize,
    /// Submissions in flight per unary bureau.
    pub per_bureau_inflight: usize,
    /// How long to wait for all results after the last receipt.
    pub settle_timeout: Duration,
    /// Jurisdictions planted with a skewed (pretextual minor-traffic) arrest mix.
    pub plant_outliers: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            seed: 2011,
            identities: 5_000,
            bookings: 2_000,
            dir: None,
            json: None,
            shards: 4,
            per_bureau_inflight: 8,
            settle_timeout: Duration::from_secs(180),
            plant_outliers: 3,
        }
    }
}

/// Bookings are dated over 2011–2012, when most (not all) jurisdictions were activated.
pub fn booking_window() -> (chrono::NaiveDate, u32) {
    (
        chrono::NaiveDate::from_ymd_opt(2011, 1, 1).expect("date"),
        730,
    )
}

fn bar(len: u64, what: &str) -> ProgressBar {
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
    let states: Vec<String> = data.world.states.iter().map(|s| s.code.clone()).collect();
    let offices: Vec<String> = data
        .world
        .field_offices
        .iter()
        .map(|o| o.code.clone())
        .collect();
    let pki = pki::init(
        &pki_dir,
        &pki::InitOptions {
            states: &states,
            offices: &offices,
        },
    )?;
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
    let (wd, shards) = (world_dir.clone(), opts.shards);
    let backends =
        tokio::task::spawn_blocking(move || backends::InProcess::load(&wd, shards)).await??;
    let store = store::open_embedded(&data_dir)?;
    let gw = server::Gateway::start(
        data.world.clone(),
        store,
        backends.ident.clone(),
        backends.criminal.clone(),
        Some(backends.ident.matcher()),
        server::ServeOptions::default(),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("https://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_task = tokio::spawn(
        gw.clone()
            .serve(listener, server::server_tls(&pki)?, async {
                let _ = stop_rx.await;
            }),
    );
    let setup_gateway = t1.elapsed();
    eprintln!("gateway listening on {endpoint} (mutual TLS)");

    let mut obs = drive(&endpoint, &pki, &plan, &data, &opts).await?;

    // Admin counters, read over mTLS like any admin would.
    let admin_ch = client::connect(&endpoint, &pki, &Principal::Admin).await?;
    let mut admin = pb::admin_service_client::AdminServiceClient::new(admin_ch);
    let counters = admin
        .get_counters(pb::GetCountersRequest {})
        .await?
        .into_inner()
        .values;
    // The national monthly statistics of every month the bookings fall in.
    for month in verify::months(&plan) {
        let stats = admin
            .get_monthly_stats(pb::GetMonthlyStatsRequest {
                month: month.clone(),
                state: String::new(),
            })
            .await?
            .into_inner();
        obs.monthly
            .insert(month, stats.national.unwrap_or_default());
    }
    // The outlier review over the whole booking window: at demo volumes a single quarter has
    // too few bookings per jurisdiction for any test to have power.
    let months = verify::months(&plan);
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
    let _ = stop_tx.send(());
    server_task.await??;

    let v = verify::verify(&plan, &obs, &counters);
    let report = verify::report(&plan, &obs, &v, &counters, setup_world, setup_gateway);
    println!("{}", report.table);
    if let Some(path) = &opts.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report.json)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("report written to {}", path.display());
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
) -> anyhow::Result<Observations> {
    let expected_office: usize = plan.iter().filter(|b| b.expected.searched).count();
    let expected_bureau: usize =
        plan.len() + plan.iter().filter(|b| b.expected.bureau_receives).count();

    let (seen_tx, mut seen_rx) = mpsc::channel::<(Seen, Instant)>(4096);
    let mut subscriptions = Vec::new();
    for office in data.world.field_offices.iter().map(|o| o.code.clone()) {
        let ch = client::connect(
            endpoint,
            pki,
            &Principal::FieldOffice {
                office: office.clone(),
            },
        )
        .await?;
        let tx = seen_tx.clone();
        subscriptions.push(tokio::spawn(async move {
            let mut c = FieldOfficeServiceClient::new(ch);
            let mut s = c
                .subscribe(pb::SubscribeRequest {
                    after_cursor: Some(0),
                    follow: true,
                })
                .await?
                .into_inner();
            let mut last_acked = 0;
            while let Some(n) = s.message().await? {
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
                    c.ack(pb::AckRequest { cursor }).await?;
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
    for st in &states {
        let ch = client::connect(endpoint, pki, &Principal::Bureau { state: st.clone() }).await?;
        let tx = seen_tx.clone();
        let state = st.clone();
        let c2 = ch.clone();
        subscriptions.push(tokio::spawn(async move {
            let mut s = SubmissionServiceClient::new(c2)
                .stream_responses(pb::StreamResponsesRequest {
                    after_cursor: 0,
                    follow: true,
                })
                .await?
                .into_inner();
            while let Some(r) = s.message().await? {
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
    }
    drop(seen_tx);

    let sent_at: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; plan.len()]));
    let receipts: Arc<Mutex<Vec<verify::ReceiptSlot>>> =
        Arc::new(Mutex::new(vec![None; plan.len()]));
    let receipt_hist = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let progress = bar(plan.len() as u64, "receipts");

    // Bureaus submit concurrently, each its own connection and identity.
    let t_submit = Instant::now();
    let mut senders = Vec::new();
    for (si, st) in states.iter().enumerate() {
        let idx: Vec<usize> = (0..plan.len()).filter(|i| &plan[*i].state == st).collect();
        let ch = channels[st].clone();
        let (plan, sent_at, receipts, hist, progress) = (
            plan.clone(),
            sent_at.clone(),
            receipts.clone(),
            receipt_hist.clone(),
            progress.clone(),
        );
        let streaming = si % 2 == 1;
        let inflight = opts.per_bureau_inflight;
        senders.push(tokio::spawn(async move {
            let record = move |i: usize, r: Result<pb::Receipt, String>, start: Instant| {
                hist.lock()
                    .expect("hist")
                    .record(start.elapsed().as_micros() as u64)
                    .ok();
                receipts.lock().expect("receipts")[i] = Some(r);
                progress.inc(1);
            };
            if streaming {
                let (tx, rx) = mpsc::channel(64);
                let mut c = SubmissionServiceClient::new(ch);
                let feed_plan = plan.clone();
                let feed_sent = sent_at.clone();
                let feed_idx = idx.clone();
                tokio::spawn(async move {
                    for i in feed_idx {
                        feed_sent.lock().expect("sent")[i] = Some(Instant::now());
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
                    let permit = sem.clone().acquire_owned().await?;
                    let mut c = SubmissionServiceClient::new(ch.clone());
                    let sub = plan[i].submission.clone();
                    let sent_at = sent_at.clone();
                    let record = record.clone();
                    tasks.spawn(async move {
                        let start = Instant::now();
                        sent_at.lock().expect("sent")[i] = Some(start);
                        let r = c
                            .submit(sub)
                            .await
                            .map(|r| r.into_inner())
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

    // Repeats of already-receipted TCNs must return the original receipt, and change nothing.
    let mut repeats = Vec::new();
    for b in plan.iter().take(10) {
        let mut c = SubmissionServiceClient::new(channels[&b.state].clone());
        let r = c.submit(b.submission.clone()).await.map(|r| r.into_inner());
        repeats.push((
            b.submission.tcn.clone(),
            r.map_err(|s| s.message().to_string()),
        ));
    }

    // Collect results until everything expected has arrived, then a little longer to catch
    // anything extra (duplicates, leaks).
    let results = bar((expected_office + expected_bureau) as u64, "results");
    let mut obs = Observations::default();
    let deadline = tokio::time::Instant::now() + opts.settle_timeout;
    let mut tail: Option<tokio::time::Instant> = None;
    loop {
        let until = tail.unwrap_or(deadline).min(deadline);
        match tokio::time::timeout_at(until, seen_rx.recv()).await {
            Ok(Some((seen, at))) => {
                match seen {
                    Seen::Office(office, n) => obs.office.push((office, n, at)),
                    Seen::Bureau(state, r) => obs.bureau.push((state, r, at)),
                }
                results.inc(1);
                if tail.is_none()
                    && obs.office.len() >= expected_office
                    && obs.bureau.len() >= expected_bureau
                {
                    tail = Some(tokio::time::Instant::now() + Duration::from_millis(500));
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    results.finish();
    obs.completed_in = t_submit.elapsed();
    for s in subscriptions {
        s.abort();
    }
    obs.submit_elapsed = submit_elapsed;
    obs.sent_at = sent_at.lock().expect("sent").clone();
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
            let ch = client::connect(
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
    for (state, ch) in &channels {
        let mut s = SubmissionServiceClient::new(ch.clone())
            .stream_responses(pb::StreamResponsesRequest {
                after_cursor: 0,
                follow: false,
            })
            .await?
            .into_inner();
        while let Some(r) = s.message().await? {
            if let Some(pb::bureau_response::Body::Detainer(d)) = r.body {
                obs.detainers_received
                    .push((state.clone(), r.tcn, d.detainer_id));
            }
        }
    }
    Ok(obs)
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
