//! IDENT over matcher shard processes: [`RemoteIdent`] is the gateway's [`IdentSearch`] when
//! the gallery is served by `interop-matcher serve --shard i/N` processes (see
//! [`crate::engines::shard`]) — the search is scattered to every shard with a deadline and the
//! answers gathered into one decision.
//!
//! A shard may have replicas (the same shard served by several processes); a search tries
//! them in turn within the deadline, starting at the next replica each search, so replicas
//! share the load. If no replica of some shard answers, the search is **incomplete** and is an
//! error, never a "no hit": the pipeline retries it with backoff and the submission waits (a
//! missed match sent to a field office as a no-hit would be a wrong answer, DESIGN.md §8).
//!
//! The gateway calls the shards as itself: the workload identity of its PKI directory's
//! `server.pem` (`spiffe://interop.local/gateway/<replica>`), the only kind a shard serves;
//! the immigration records of hits are read from the world directory,
//! so prints and records never travel together. Enrolments and removals made at the gateway
//! go to every replica of the shard that holds the id (see
//! [`crate::api::ShardedMatcherApi`]).

use crate::auth::pki::PkiDir;
use crate::engines::gallery_log::GalleryLog;
use crate::engines::{BackendError, IdentHit, IdentSearch};
use crate::error::GatewayError;
use crate::world::{self, ImmigrationRecord, Records};
use interop_client::{Client, RetryPolicy};
use interop_matcher::Tenprint;
use interop_proto::v1 as pb;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// IDENT over matcher shard processes.
pub struct RemoteIdent {
    /// Per shard, its replicas.
    shards: Vec<Vec<Client>>,
    records: Arc<Records<ImmigrationRecord>>,
    deadline: Duration,
    /// Searches so far: each starts at the next replica of every shard, so replicas share
    /// the load (and each is the others' failover).
    turn: std::sync::atomic::AtomicUsize,
    /// The gateway's record of gallery changes (see [`crate::engines::gallery_log`]), once it has one.
    pub(crate) log: std::sync::OnceLock<Arc<GalleryLog>>,
}

impl RemoteIdent {
    /// `spec` lists the shards in order, comma-separated, each as one or more replica
    /// endpoints separated by `|`: `https://a:7001|https://b:7001,https://c:7002` is two
    /// shards, the first with two replicas. Records come from `world_dir`.
    pub fn new(
        spec: &str,
        pki: &PkiDir,
        world_dir: &Path,
        deadline: Duration,
    ) -> anyhow::Result<RemoteIdent> {
        // Checked here, not at the first search: a gateway whose certificate names no gateway
        // would have every search refused by its shards.
        let me = pki.workload_as("gateway")?;
        tracing::info!(identity = %me.spiffe_id(), "calling the IDENT shards as");
        let mut shards = vec![];
        for (i, part) in spec.split(',').enumerate() {
            let mut replicas = vec![];
            for url in part.split('|').map(str::trim).filter(|u| !u.is_empty()) {
                let c = crate::auth::pki::workload_client(pki, url)?
                    .retry(RetryPolicy::none())
                    .call_timeout(deadline)
                    .connect_lazy()?;
                replicas.push(c);
            }
            anyhow::ensure!(
                !replicas.is_empty(),
                "--ident-shards: shard {i} has no endpoint"
            );
            shards.push(replicas);
        }
        let records = world::read_json(world_dir, world::IDENT_RECORDS_FILE)?;
        Ok(RemoteIdent {
            shards,
            records: Arc::new(records),
            deadline,
            turn: Default::default(),
            log: Default::default(),
        })
    }

    /// Gives the searches the gateway's record of gallery changes: an answer naming a subject
    /// recorded as removed is refused, the removal sent again and the search retried.
    pub fn set_log(&self, log: Arc<GalleryLog>) {
        let _ = self.log.set(log);
    }

    /// From clients already made (tests).
    pub fn from_clients(
        shards: Vec<Vec<Client>>,
        records: Records<ImmigrationRecord>,
        deadline: Duration,
    ) -> RemoteIdent {
        RemoteIdent {
            shards,
            records: Arc::new(records),
            deadline,
            turn: Default::default(),
            log: Default::default(),
        }
    }
}

/// One shard's answer from the first replica that gives one within the deadline, trying
/// them in turn from replica `first`.
async fn ask_shard(
    replicas: Vec<Client>,
    first: usize,
    req: pb::SearchRequest,
    deadline: Duration,
    lane: Arc<str>,
) -> Result<pb::SearchResponse, String> {
    let mut why = String::new();
    let n = replicas.len();
    for r in (0..n).map(|k| (first + k) % n) {
        let c = &replicas[r];
        let mut stub = pb::matcher_service_client::MatcherServiceClient::new(c.channel());
        // The shard is told the deadline too (`grpc-timeout`), so it stops searching once
        // this side stops waiting.
        let mut call = tonic::Request::new(req.clone());
        call.set_timeout(deadline);
        // The bureau whose submission asks, so the shard takes searches bureau by bureau too.
        crate::api::matcher::name_lane(&mut call, &lane);
        match tokio::time::timeout(deadline, stub.search(call)).await {
            Ok(Ok(resp)) => return Ok(resp.into_inner()),
            Ok(Err(s)) => why = format!("replica {r}: {:?}: {}", s.code(), s.message()),
            Err(_) => why = format!("replica {r}: no answer within {} ms", deadline.as_millis()),
        }
    }
    Err(why)
}

impl RemoteIdent {
    /// Every shard's answer to `req`, each from the first replica that gives one within the
    /// deadline; or, if some shard gave none, which and why.
    pub(crate) async fn scatter(
        &self,
        req: pb::SearchRequest,
    ) -> Result<Vec<pb::SearchResponse>, String> {
        let mut asks = tokio::task::JoinSet::new();
        let turn = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let lane = crate::engines::slots::current_lane();
        for (i, replicas) in self.shards.iter().enumerate() {
            let (replicas, req, deadline) = (replicas.clone(), req.clone(), self.deadline);
            let first = turn % replicas.len();
            let lane = lane.clone();
            asks.spawn(async move { (i, ask_shard(replicas, first, req, deadline, lane).await) });
        }
        let (mut answers, mut missing) = (vec![], vec![]);
        while let Some(done) = asks.join_next().await {
            let (i, answer) = done.map_err(|e| e.to_string())?;
            match answer {
                Ok(resp) => answers.push(resp),
                Err(why) => missing.push(format!("shard {i}/{}: {why}", self.shards.len())),
            }
        }
        if missing.is_empty() {
            Ok(answers)
        } else {
            missing.sort();
            Err(missing.join("; "))
        }
    }

    /// Refuses shard answers whose hit is a subject the gateway recorded as removed: a
    /// replica restarted since the removal has it again (shards keep changes in memory only).
    /// The removal is sent to that shard again, and the search fails as incomplete, to be
    /// retried, so it is never answered from the removed subject.
    pub(crate) async fn refuse_removed(
        &self,
        answers: &[pb::SearchResponse],
    ) -> Result<(), String> {
        let Some(log) = self.log.get() else {
            return Ok(());
        };
        let back: Vec<u64> = answers
            .iter()
            .filter(|a| a.hit)
            .filter_map(|a| a.candidates.first())
            .map(|c| c.subject_id)
            .filter(|s| log.is_removed(*s))
            .collect();
        if back.is_empty() {
            return Ok(());
        }
        for &subject_id in &back {
            let (again, _) = self
                .change(subject_id, Change::Remove(pb::RemoveRequest { subject_id }))
                .await;
            tracing::warn!(
                subject = subject_id,
                done = again.is_ok()
                    || again
                        .as_ref()
                        .is_err_and(|e| e.code() == tonic::Code::NotFound),
                "a shard answered with a subject removed at the gateway; removal sent again"
            );
        }
        Err(format!(
            "a shard answered with subject(s) {back:?}, removed at the gateway (a replica restarted since?); the removal was sent again"
        ))
    }

    /// Sends a change of `subject` to every replica of the shard that holds it, at once, and
    /// gives the shard's gallery size after it, and whether some replica made the change now
    /// (not only had it: replicas that all had an enrolment may have it from the world's
    /// gallery, which is no change to record). See [`ShardedMatcherApi`] for what counts as
    /// done.
    pub(crate) async fn change(
        &self,
        subject: u64,
        change: Change,
    ) -> (Result<u64, GatewayError>, bool) {
        let n = self.shards.len();
        let shard = (subject % n as u64) as usize;
        let mut calls = tokio::task::JoinSet::new();
        for (r, c) in self.shards[shard].iter().enumerate() {
            let (c, change, deadline) = (c.clone(), change.clone(), self.deadline);
            calls.spawn(async move { (r, change.send(&c, deadline).await) });
        }
        let mut results = vec![];
        while let Some(done) = calls.join_next().await {
            match done {
                Ok(r) => results.push(r),
                Err(e) => return (Err(GatewayError::Internal(e.to_string())), false),
            }
        }
        results.sort_by_key(|(r, _)| *r);
        let already = change.already();
        let (mut size, mut had, mut failed) = (None, 0, vec![]);
        for (r, res) in results {
            match res {
                Ok(s) => size = Some(size.map_or(s, |m: u64| m.max(s))),
                Err(e) if e.code() == already => had += 1,
                Err(e) => failed.push((r, e)),
            }
        }
        let what = change.name();
        let reached = size.is_some();
        let result = match (size, failed.first()) {
            (Some(s), None) => Ok(s),
            // Every replica had it already: as one gallery answers (ALREADY_EXISTS for an
            // enrolment, NOT_FOUND for a removal).
            (None, None) => Err(GatewayError::with_code(
                already,
                format!(
                    "{what} of subject {subject}: every replica of shard {shard}/{n} answered {already:?}"
                ),
            )),
            // Every replica refused the request itself (a print it cannot use): its answer.
            (None, Some((_, first)))
                if had == 0
                    && !retryable(first.code())
                    && failed.iter().all(|(_, e)| e.code() == first.code()) =>
            {
                Err(first.clone())
            }
            _ => {
                let why: Vec<String> = failed
                    .iter()
                    .map(|(r, e)| format!("replica {r}: {:?}: {e}", e.code()))
                    .collect();
                let total = self.shards[shard].len();
                // A removal is recorded before it is sent; an enrolment once a replica made it.
                let next = if reached || matches!(change, Change::Remove(_)) {
                    "It is recorded at the gateway: replicas following it (`interop-matcher serve --gateway`) make it once they reach it; or retry it"
                } else {
                    "Retry it"
                };
                Err(GatewayError::Unavailable(format!(
                    "{what} of subject {subject} is not done: {} of {total} replicas of shard {shard}/{n} have it ({}); until they do, a search may still answer as before on the others. {next}, a replica that already has it counting as done",
                    total - failed.len(),
                    why.join("; ")
                )))
            }
        };
        (result, reached)
    }
}

/// A status that says the call may succeed if tried again (the replica or the network, not
/// the request).
fn retryable(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Unavailable
            | DeadlineExceeded
            | Cancelled
            | Unknown
            | Internal
            | ResourceExhausted
            | Aborted
    )
}

/// An enrolment or removal on its way to a shard's replicas.
#[derive(Clone)]
pub(crate) enum Change {
    Enroll(pb::EnrollRequest),
    Remove(pb::RemoveRequest),
}

impl Change {
    fn name(&self) -> &'static str {
        match self {
            Change::Enroll(_) => "the enrolment",
            Change::Remove(_) => "the removal",
        }
    }

    /// What a replica that already has the change answers: it counts as done.
    fn already(&self) -> tonic::Code {
        match self {
            Change::Enroll(_) => tonic::Code::AlreadyExists,
            Change::Remove(_) => tonic::Code::NotFound,
        }
    }

    /// The replica's gallery size after the change.
    async fn send(self, c: &Client, deadline: Duration) -> Result<u64, GatewayError> {
        let mut stub = pb::matcher_service_client::MatcherServiceClient::new(c.channel());
        let call = async move {
            match self {
                Change::Enroll(r) => {
                    let mut call = tonic::Request::new(r);
                    call.set_timeout(deadline);
                    stub.enroll(call).await.map(|r| r.into_inner().gallery_size)
                }
                Change::Remove(r) => {
                    let mut call = tonic::Request::new(r);
                    call.set_timeout(deadline);
                    stub.remove(call).await.map(|r| r.into_inner().gallery_size)
                }
            }
        };
        tokio::time::timeout(deadline, call)
            .await
            .map(|answer| answer.map_err(GatewayError::Relayed))
            .unwrap_or_else(|_| {
                Err(GatewayError::DeadlineExceeded(format!(
                    "no answer within {} ms",
                    deadline.as_millis()
                )))
            })
    }
}

#[async_trait::async_trait]
impl IdentSearch for RemoteIdent {
    async fn search(&self, prints: Tenprint) -> Result<Option<IdentHit>, BackendError> {
        let req = pb::SearchRequest {
            fingers: crate::convert::tenprint_to_pb(&prints),
            max_candidates: 1,
            gallery: pb::Gallery::Ident as i32,
        };
        let answers = self.scatter(req).await.map_err(|why| {
            BackendError::Unavailable(format!(
                "IDENT search incomplete ({why}); it will be retried"
            ))
        })?;
        self.refuse_removed(&answers).await.map_err(|why| {
            BackendError::Unavailable(format!("IDENT search refused ({why}); it will be retried"))
        })?;
        let best = answers
            .into_iter()
            .filter(|a| a.hit)
            .filter_map(|a| a.candidates.into_iter().next())
            .fold(None::<pb::Candidate>, |best, c| match best {
                Some(b) if b.score >= c.score => Some(b),
                _ => Some(c),
            });
        Ok(best.and_then(|c| {
            self.records.get(&c.subject_id).map(|r| IdentHit {
                score: c.score,
                record: r.clone(),
            })
        }))
    }
}
