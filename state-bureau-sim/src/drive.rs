//! Driving a gateway with a plan: every bureau submits its bookings (open loop at their
//! intended times, or closed loop), every field office and bureau stream is followed, and
//! every answer is collected with the moment it reached the driver; then the ICE side acts
//! on the identifications ([`crate::officers`]: decisions, detainers, LESC notices, reviews,
//! removals). What was seen goes to [`crate::verify`].
//!
//! Answers are collected from the moment the subscriptions open, in a task of their own, and
//! against a shared gateway each bureau is followed from where its stream stands when the
//! run starts: a run's cost follows its own bookings, not the gateway's history.

use crate::bookings::Booking;
use crate::bookings::WorldData;
use crate::demo::{Arrival, DemoOptions, OPEN_LOOP_MAX_INFLIGHT, SubmitMode, bar};
use crate::verify::Observations;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use interop_gateway::auth::principal::Principal;
use interop_gateway_cli::pki::{self, PkiDir};
use interop_proto::v1 as pb;
use pb::submission_service_client::SubmissionServiceClient;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

enum Seen {
    Office(String, Box<pb::FieldOfficeNotification>),
    Bureau(String, Box<pb::BureauResponse>),
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
                    .send((Seen::Office(office.clone(), Box::new(n)), Instant::now()))
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
                    .send((Seen::Bureau(state.clone(), Box::new(r)), Instant::now()))
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
    let receipts: Arc<Mutex<Vec<crate::verify::ReceiptSlot>>> =
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
                    let ch = ch.clone();
                    let bureau = bureau.clone();
                    let sub = plan[i].submission.clone();
                    let sent_at = sent_at.clone();
                    let record = record.clone();
                    tasks.spawn(async move {
                        let start = at.unwrap_or_else(Instant::now);
                        sent_at.lock().expect("sent")[i] = Some(start);
                        let r = submit_unary(failover, &bureau, &ch, sub)
                            .await
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
    // Bureaus retry what the gateway shed ("backlog past its budget ...; retry with backoff"): the
    // same TCN again (idempotent), with exponential backoff, for up to [`SHED_RETRY_FOR`];
    // only what is still refused then counts as refused. Latency stays from the first send.
    let shed: Vec<usize> = receipts
        .lock()
        .expect("receipts")
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r, Some(Err(e)) if is_shed(e)))
        .map(|(i, _)| i)
        .collect();
    let retried = shed.len();
    if retried > 0 {
        let mut tasks = tokio::task::JoinSet::new();
        let sem = Arc::new(tokio::sync::Semaphore::new(inflight.clamp(1, 64)));
        for i in shed {
            let permit = sem.clone().acquire_owned().await?;
            let ch = channels[&plan[i].state].clone();
            let bureau = bureau_clients[&plan[i].state].clone();
            let failover = opts.failover;
            let sub = plan[i].submission.clone();
            let (receipts, receipt_at, hist, sent_at) = (
                receipts.clone(),
                receipt_at.clone(),
                receipt_hist.clone(),
                sent_at.clone(),
            );
            tasks.spawn(async move {
                let first = Instant::now();
                let mut backoff = Duration::from_millis(50);
                let r = loop {
                    tokio::time::sleep(backoff).await;
                    match submit_unary(failover, &bureau, &ch, sub.clone()).await {
                        Ok(r) => break Ok(r),
                        Err(s)
                            if s.code() == tonic::Code::ResourceExhausted
                                && first.elapsed() < SHED_RETRY_FOR =>
                        {
                            backoff = (backoff * 2).min(Duration::from_secs(2));
                        }
                        Err(s) => break Err(format!("{:?}: {}", s.code(), s.message())),
                    }
                };
                let now = Instant::now();
                if r.is_ok()
                    && let Some(start) = sent_at.lock().expect("sent")[i]
                {
                    hist.lock()
                        .expect("hist")
                        .record(now.saturating_duration_since(start).as_micros() as u64)
                        .ok();
                }
                receipts.lock().expect("receipts")[i] = Some(r);
                receipt_at.lock().expect("receipt times")[i] = Some(now);
                drop(permit);
            });
        }
        while tasks.join_next().await.is_some() {}
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
        let r = submit_unary(
            opts.failover,
            &bureau_clients[&b.state],
            &channels[&b.state],
            b.submission.clone(),
        )
        .await;
        repeats.push((
            b.submission.tcn.clone(),
            r.map_err(|s| s.message().to_string()),
        ));
    }

    // Collect results until everything expected has arrived, then a little longer to catch
    // anything extra (duplicates, leaks).
    results.set_length((expected_office + expected_bureau) as u64);
    // Every receipted booking completes with one criminal-history response.
    let receipted = receipts
        .lock()
        .expect("receipts")
        .iter()
        .filter(|r| matches!(r, Some(Ok(_))))
        .count();
    let collected = collector
        .finish(
            receipted,
            expected_office,
            expected_bureau,
            opts.settle_timeout,
        )
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
    obs.shed_and_retried = retried;
    // The activations made, whose advance notices the bureaus must have read (those of the
    // states that took part; another state's bureau is not followed).
    if obs.applied.is_some() {
        for c in &opts.changes {
            if let crate::changes::PolicyChange::Activate { jurisdiction } = c
                && let Some(j) = data
                    .world
                    .jurisdictions
                    .iter()
                    .find(|j| &j.id == jurisdiction)
                && bureau_clients.contains_key(&j.state)
            {
                obs.activations.push((
                    j.state.clone(),
                    j.id.clone(),
                    crate::changes::ACTIVATED_ON.into(),
                ));
            }
        }
    }

    crate::officers::act(
        endpoint,
        pki,
        &mut obs,
        &bureau_clients,
        &heads,
        &planned,
        opts.settle_timeout,
    )
    .await?;
    Ok(obs)
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
    /// (office notifications, bureau responses, criminal-history responses) so far.
    counts: tokio::sync::watch::Receiver<(usize, usize, usize)>,
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
        let (counts_tx, counts) = tokio::sync::watch::channel((0, 0, 0));
        let mut criminal_history = 0;
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
                // Activation notices are about no booking: read after the run
                // (`crate::officers`), never counted among the answers awaited.
                if let Seen::Bureau(_, r) = &seen
                    && matches!(r.body, Some(pb::bureau_response::Body::ActivationNotice(_)))
                {
                    continue;
                }
                match seen {
                    Seen::Office(office, n) => c.office.push((office, *n, at)),
                    Seen::Bureau(state, r) => {
                        criminal_history += usize::from(matches!(
                            r.body,
                            Some(pb::bureau_response::Body::CriminalHistory(_))
                        ));
                        c.bureau.push((state, *r, at))
                    }
                }
                results.inc(1);
                counts_tx.send_replace((c.office.len(), c.bureau.len(), criminal_history));
            }
            c
        });
        Collector { counts, stop, task }
    }

    /// Waits until `completions` criminal-history responses have arrived — every booking's
    /// completion carries one, appended atomically with its identification, if any — and the
    /// `office` notifications and `bureau` responses the ground truth expects (at most two
    /// seconds more: a matcher's miss is never sent), or until `settle` has passed; then half
    /// a second more to catch anything extra (duplicates, leaks), and returns everything
    /// collected.
    async fn finish(
        mut self,
        completions: usize,
        office: usize,
        bureau: usize,
        settle: Duration,
    ) -> anyhow::Result<Collected> {
        let deadline = tokio::time::Instant::now() + settle;
        let done = self.counts.wait_for(|(_, _, ch)| *ch >= completions);
        let arrived = matches!(tokio::time::timeout_at(deadline, done).await, Ok(Ok(_)));
        if arrived {
            let more = (tokio::time::Instant::now() + Duration::from_secs(2)).min(deadline);
            let all = self
                .counts
                .wait_for(|(o, b, _)| *o >= office && *b >= bureau);
            let _ = tokio::time::timeout_at(more, all).await;
            let tail = (tokio::time::Instant::now() + Duration::from_millis(500)).min(deadline);
            tokio::time::sleep_until(tail).await;
        }
        let _ = self.stop.send(());
        Ok(self.task.await?)
    }
}

/// One unary submission as a bureau: through the client library, which fails over between
/// gateway replicas, when `failover`; else straight on the bureau's channel.
async fn submit_unary(
    failover: bool,
    bureau: &interop_client::Client,
    ch: &tonic::transport::Channel,
    sub: pb::Submission,
) -> Result<pb::Receipt, tonic::Status> {
    if failover {
        bureau.submit(sub).await
    } else {
        SubmissionServiceClient::new(ch.clone())
            .submit(sub)
            .await
            .map(|r| r.into_inner())
    }
}

/// How long a bureau keeps retrying a submission the gateway shed.
const SHED_RETRY_FOR: Duration = Duration::from_secs(60);

/// A refusal that asks the caller to come back (RESOURCE_EXHAUSTED), as the unary path and
/// the stream path write it.
fn is_shed(e: &str) -> bool {
    e.starts_with("ResourceExhausted")
        || e.starts_with(&format!("code {}:", tonic::Code::ResourceExhausted as i32))
}
