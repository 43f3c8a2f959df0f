//! The pipeline that takes a durably received submission to completion:
//! criminal-history check (always) and, when the jurisdiction is activated on the booking
//! date, the IDENT search — concurrently — then status determination, then one atomic
//! [`Store::complete`](crate::store::Store::complete) that appends the bureau's responses and,
//! for an identification (an IDENT hit), the field office's notification. A no-hit is
//! counted and disclosed to no one (DESIGN §3.2).
//!
//! Exactly once in effect: completion is idempotent by `(bureau, TCN)`, so a submission
//! processed again after a crash (recovery replays every unfinished one) appends nothing
//! twice. A backend failure is retried with backoff, never turned into "no match" (a missed
//! match reported as a no-hit would be a wrong answer to a field office).
//!
//! Workers take receipted submissions from the [`backlog`] (the store's pending submissions,
//! bureaus in turn); at most `concurrency` are in flight. Their in-process searches then wait
//! for a core bureau by bureau too ([`crate::engines::slots`]), so a flooding bureau's
//! submissions in flight do not stand between another bureau's and the CPU.

use crate::convert;
use crate::engines::{CriminalHistory, IdentSearch};
use crate::error::GatewayError;
use crate::intake::validate::ValidSubmission;
use crate::rules::policy::{self, PolicyBook};
use crate::rules::statistics;
use crate::store::{Completion, DynStore, StreamKey, SubmissionKey};
use interop_proto::v1 as pb;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::Instrument;

pub mod backlog;
pub use backlog::{Backlog, BacklogBudget, Entry};

/// One submission to process.
pub struct Job {
    pub key: SubmissionKey,
    /// When the receipt was given (ms since the epoch), for the notification latency.
    pub accepted_ms: i64,
    pub submission: pb::Submission,
    pub valid: ValidSubmission,
}

/// What the pipeline works with.
pub struct Core {
    pub store: DynStore,
    pub policy: Arc<PolicyBook>,
    pub ident: Arc<dyn IdentSearch>,
    pub criminal: Arc<dyn CriminalHistory>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Log time and the quarters the scheduled profiling review is to assess.
    pub assessor: Arc<crate::rules::assessment::Assessor>,
}

/// Counter names (also reported by `AdminService.GetCounters`).
pub mod counters {
    pub const COMPLETED: &str = "submissions_completed";
    pub const CRIMINAL_HISTORY_HITS: &str = "criminal_history_hits";
    pub const IDENT_SEARCHES: &str = "ident_searches";
    pub const IDENT_HITS: &str = "ident_hits";
    pub const NOT_ACTIVATED: &str = "not_activated_fbi_only";
    pub const OFFICE_NOTIFICATIONS: &str = "field_office_notifications";
    pub const IMMIGRATION_RESPONSES: &str = "immigration_responses_sent";
    pub const WITHHELD: &str = "immigration_responses_withheld";
    pub const DETAINERS: &str = "detainer_recommendations";
    pub const DETAINERS_ISSUED: &str = "detainers_issued";
    pub const REMOVALS: &str = "removals_recorded";
    /// Detainer copies the jails acknowledged giving to the person held.
    pub const DETAINER_COPIES_GIVEN: &str = "detainer_copies_given";
    /// The field offices' other decisions on identifications (detainers are
    /// `DETAINERS_ISSUED`).
    pub const DECIDED_NO_ACTION: &str = "decided_no_action";
    pub const DECIDED_DISCRETION: &str = "decided_discretion";
    /// LESC notices recorded (from jails and from the hotline), detainer reviews, and lifts.
    pub const LESC_NOTICES: &str = "lesc_notices";
    pub const DETAINER_REVIEWS: &str = "detainer_reviews";
    pub const DETAINERS_LIFTED: &str = "detainers_lifted";
    /// Detainers operative on conviction made operative by a reported conviction.
    pub const DETAINERS_MADE_OPERATIVE: &str = "detainers_made_operative";
    /// Advance notices of activation given to the states.
    pub const ACTIVATION_NOTICES: &str = "activation_notices";
}

/// Starts `concurrency` workers taking submissions from `backlog`. `halt` (set once the
/// server's grace period is over) drops whatever is still in flight: it stays pending in the
/// store and is resumed on the next start.
pub fn start(
    core: Arc<Core>,
    backlog: Arc<Backlog>,
    concurrency: usize,
    halt: watch::Receiver<bool>,
) {
    for _ in 0..concurrency.max(1) {
        let core = core.clone();
        let backlog = backlog.clone();
        let mut halted = halt.clone();
        let mut shutdown = halt.clone();
        tokio::spawn(async move {
            loop {
                let entry = tokio::select! {
                    e = backlog.take() => e,
                    _ = halted.wait_for(|h| *h) => return,
                };
                let span = tracing::info_span!("submission", bureau = %entry.key.bureau, tcn = %entry.key.tcn);
                let (key, bytes) = (entry.key.clone(), entry.bytes);
                // Its searches wait for a core in its bureau's lane (see `engines::slots`).
                let work = process(&core, entry, &mut shutdown).instrument(span);
                tokio::select! {
                    completed = crate::engines::slots::in_lane(&key.bureau, work) => {
                        backlog.done(&key, bytes, completed);
                    }
                    _ = halted.wait_for(|h| *h) => {
                        tracing::info!(%key, "halted; left pending for recovery");
                        return;
                    }
                }
            }
        });
    }
}

/// The job for a backlog entry: as intake prepared it, or read back from the store. `None`:
/// nothing to do (completed meanwhile), or the stored submission cannot be processed (logged;
/// it stays pending in the store).
async fn load(core: &Core, entry: &mut Entry) -> Result<Option<Job>, GatewayError> {
    if let Some(p) = entry.prepared.take() {
        return Ok(Some(Job {
            key: entry.key.clone(),
            accepted_ms: entry.accepted_ms,
            submission: p.submission,
            valid: p.valid,
        }));
    }
    let Some(p) = core.store.pending(entry.key.clone()).await? else {
        return Ok(None);
    };
    let Ok(submission) = pb::Submission::decode(p.payload.as_slice()) else {
        tracing::error!(key = %p.key, "stored submission is unreadable; left pending");
        return Ok(None);
    };
    // It passed validation when received; only the world could have changed.
    let now = chrono::DateTime::<chrono::Utc>::MAX_UTC;
    match crate::intake::validate::submission(&p.key.bureau, &core.policy, &submission, now) {
        Ok(valid) => Ok(Some(Job {
            key: p.key,
            accepted_ms: p.receipt.accepted_at_ms,
            submission,
            valid,
        })),
        Err(e) => {
            tracing::error!(key = %p.key, error = %e, "stored submission no longer valid; left pending");
            Ok(None)
        }
    }
}

/// Processes a backlog entry until it completes, retrying failures (reading it back from the
/// store included); returns whether this call completed it. Returns early only at shutdown:
/// the submission stays pending in the store and is resumed on the next start.
async fn process(core: &Core, mut entry: Entry, shutdown: &mut watch::Receiver<bool>) -> bool {
    let mut backoff = Duration::from_millis(50);
    let mut job = None;
    loop {
        match step(core, &mut entry, &mut job).await {
            Ok(completed) => return completed,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "processing failed; will retry");
                if *shutdown.borrow() {
                    return false;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// One try: the job (loaded once, then kept across tries), then an attempt. `Ok(false)`:
/// nothing to do (see [`load`]).
async fn step(core: &Core, entry: &mut Entry, job: &mut Option<Job>) -> Result<bool, GatewayError> {
    if job.is_none() {
        match load(core, entry).await? {
            Some(j) => *job = Some(j),
            None => return Ok(false),
        }
    }
    let done = attempt(core, job.as_ref().expect("loaded")).await?;
    tracing::debug!(appended = done, "completed");
    Ok(true)
}

fn bureau_event(tcn: &str, body: pb::bureau_response::Body) -> Vec<u8> {
    pb::BureauResponse {
        cursor: 0, // assigned by the log; filled in on delivery
        tcn: tcn.to_string(),
        body: Some(body),
    }
    .encode_to_vec()
}

/// One attempt. Returns whether this attempt appended the results (false: already done).
async fn attempt(core: &Core, job: &Job) -> Result<bool, GatewayError> {
    let sub = &job.submission;
    let routing = core
        .policy
        .route(&sub.jurisdiction_id, job.valid.booked_on)
        .ok_or_else(|| GatewayError::Internal("jurisdiction vanished from the world".into()))?;
    let prints = job.valid.prints.clone();

    // Invariant 4: the IDENT search happens only when the jurisdiction is activated on the
    // booking date; otherwise the prints never reach the matcher.
    let criminal_prints = prints.clone();
    let criminal = async {
        let t = std::time::Instant::now();
        let r = core.criminal.check(criminal_prints).await;
        core.metrics.observe("criminal_history", t.elapsed());
        r
    };
    let ident = async {
        if routing.searched {
            let t = std::time::Instant::now();
            let r = core.ident.search(prints).await.map(Some);
            core.metrics.observe("ident_search", t.elapsed());
            r
        } else {
            Ok(None)
        }
    };
    let (criminal, ident) = tokio::join!(criminal, ident);
    let searched = ident.as_ref().is_ok_and(|i| i.is_some());
    let identified = ident
        .as_ref()
        .is_ok_and(|i| i.as_ref().is_some_and(|h| h.is_some()));
    let record = criminal.map_err(|e| GatewayError::Unavailable(e.to_string()))?;
    let ident = ident.map_err(|e| GatewayError::Unavailable(e.to_string()))?;

    let mut completion = Completion::default();
    let month = statistics::month(job.valid.booked_on);
    let jurisdiction = sub.jurisdiction_id.as_str();
    // Every counter this completion moves, by one; committed with the results.
    let mut moved: Vec<String> = vec![statistics::key(
        &month,
        jurisdiction,
        statistics::SUBMISSIONS,
    )];
    let mut count = |name: &str| moved.push(name.to_string());
    count(counters::COMPLETED);
    let charges = &job.valid.charges;
    let minor_traffic_only = !charges.is_empty()
        && charges
            .iter()
            .all(|c| *c == crate::world::Offense::MinorTraffic);
    if minor_traffic_only {
        count(&statistics::key(
            &month,
            jurisdiction,
            statistics::MINOR_TRAFFIC_ONLY,
        ));
    }
    if record.is_some() {
        count(counters::CRIMINAL_HISTORY_HITS);
    }
    let bureau = StreamKey::Bureau(job.key.bureau.clone());

    // The criminal-history response always goes back to the bureau.
    let ch = convert::criminal_history_pb(&sub.tcn, record.as_ref());
    let mut events = vec![(
        bureau.clone(),
        bureau_event(&sub.tcn, pb::bureau_response::Body::CriminalHistory(ch)),
    )];

    match ident {
        None => count(counters::NOT_ACTIVATED),
        Some(hit) => {
            count(counters::IDENT_SEARCHES);
            if hit.is_some() {
                count(counters::IDENT_HITS);
            }
            let det = policy::determine(
                hit.as_ref().map(|h| &h.record),
                record.as_ref(),
                &job.valid.charges,
                job.valid.booked_on,
            );
            for metric in statistics::outcome_metrics(hit.is_some(), &det) {
                count(&statistics::key(&month, jurisdiction, metric));
            }
            // The profiling review's figures: identifications by race/ethnicity group.
            if hit.is_some() && det.recommendation != policy::Recommendation::None {
                for metric in statistics::group_metrics(job.valid.group, minor_traffic_only) {
                    count(&statistics::review_key(&month, jurisdiction, &metric));
                }
            }
            if det.recommendation != policy::Recommendation::None {
                count(counters::DETAINERS);
            }
            // Identifications only (DESIGN §3.2; seed 001: "where there is a positive
            // match" the agency gets ICE's determination): a no-hit is counted above and
            // disclosed to no one — no field office, no bureau, no stored outcome.
            if let Some(hit) = &hit {
                let mut outcome = pb::IdentOutcome {
                    tcn: sub.tcn.clone(),
                    jurisdiction_id: sub.jurisdiction_id.clone(),
                    ori: sub.ori.clone(),
                    booked_at: sub.booked_at,
                    hit: true,
                    fin: hit.record.fin.clone(),
                    score: hit.score,
                    fbi_number: record
                        .as_ref()
                        .map(|r| r.fbi_number.clone())
                        .unwrap_or_default(),
                    determined_at: Some(convert::timestamp_ms(convert::now_ms())),
                    biographics: Some(convert::biographics_pb(&hit.record.biographics)),
                    ..Default::default()
                };
                convert::apply_determination(&mut outcome, &det);
                // Invariant 2: the field office covering the jurisdiction always gets the
                // identification.
                count(counters::OFFICE_NOTIFICATIONS);
                // Kept with the submission (no biometrics) so a field office can act on it later.
                completion.summary = Some(outcome.encode_to_vec());
                events.push((
                    StreamKey::Office(routing.field_office.clone()),
                    outcome.encode_to_vec(),
                ));
                // Invariant 3: the bureau gets it only where its jurisdiction receives results.
                if routing.bureau_receives {
                    count(counters::IMMIGRATION_RESPONSES);
                    events.push((
                        bureau,
                        bureau_event(
                            &sub.tcn,
                            pb::bureau_response::Body::Immigration(pb::ImmigrationResponse {
                                outcome: Some(outcome),
                            }),
                        ),
                    ));
                } else {
                    count(counters::WITHHELD);
                }
            }
        }
    }
    completion.events = events;
    completion.counters = moved.into_iter().map(|n| (n, 1)).collect();
    let appended = core.store.complete(job.key.clone(), completion).await?;
    core.assessor.note(job.valid.booked_on);
    if appended {
        use crate::metrics::{office, state};
        let m = &core.metrics;
        m.inc("interop_completed_total", state(&job.key.bureau));
        if searched {
            m.inc(
                "interop_ident_searches_total",
                office(&routing.field_office),
            );
        }
        if identified {
            m.inc("interop_notifications_total", office(&routing.field_office));
            let since = (convert::now_ms() - job.accepted_ms).max(0) as u64;
            m.observe("notification", std::time::Duration::from_millis(since));
            if !routing.bureau_receives {
                m.inc("interop_withheld_total", state(&job.key.bureau));
            }
        }
    }
    Ok(appended)
}
