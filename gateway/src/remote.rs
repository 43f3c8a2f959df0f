//! IDENT as separate matcher processes: `interop-matcher serve --shard i/N` serves one shard
//! of a gallery as `interop.v1.MatcherService`, and [`RemoteIdent`] is the gateway's
//! [`IdentSearch`] over them — the search is scattered to every shard with a deadline and the
//! answers gathered into one decision.
//!
//! A shard holds the subjects whose id is `i` modulo `N`. A shard may have replicas (the same
//! shard served by several processes); a search tries them in turn within the deadline,
//! starting at the next replica each search, so replicas share the load. If no
//! replica of some shard answers, the search is **incomplete** and is an error, never a
//! "no hit": the pipeline retries it with backoff and the submission waits (a missed match sent
//! to a field office as a no-hit would be a wrong answer).
//!
//! The gateway calls the shards with the admin identity of its PKI directory (the matcher
//! service is admin only); the immigration records of hits are read from the world directory,
//! so prints and records never travel together.
//!
//! The gateway serves `MatcherService` over the shards too ([`ShardedMatcherApi`]), so an
//! operator enrols and removes subjects at the gateway whether IDENT is in process or not: a
//! change goes to every replica of the shard that holds the id, and is done only when every
//! replica has it (see [`ShardedMatcherApi`]). The gateway records every change, and shard
//! processes started with `--gateway` read the record before they serve and then every few
//! seconds ([`follow_gallery`]), so a replica that restarted or was unreachable catches up.

use crate::backends::{BackendError, IdentHit, IdentSearch};
use crate::gallery::{Change as Recorded, GalleryLog};
use crate::pki::PkiDir;
use crate::world::{self, ImmigrationRecord, Records};
use interop_matcher::{IndexedMatcher, Matcher, Tenprint};
use interop_proto::client::{Client, ClientConfig, RetryPolicy, Role};
use interop_proto::v1 as pb;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

/// `i/N`: shard `i` of `N` (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl std::str::FromStr for Shard {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Shard> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| anyhow::anyhow!("shard {s:?}: expected i/N, e.g. 0/2"))?;
        let (index, count): (u64, u64) = (i.trim().parse()?, n.trim().parse()?);
        anyhow::ensure!(
            count >= 1 && index < count,
            "shard {s:?}: need 0 <= i < N (shards are numbered from 0)"
        );
        Ok(Shard { index, count })
    }
}

/// As it is parsed: `i/N`.
impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    pub fn holds(&self, subject: u64) -> bool {
        subject % self.count == self.index
    }
}

/// Loads the subjects of one shard of a world's gallery file (e.g. `ident-gallery.bin`) into
/// an in-memory matcher searched with `threads` threads.
pub fn load_shard(
    dir: &Path,
    gallery: &str,
    shard: Shard,
    threads: usize,
) -> anyhow::Result<Arc<dyn Matcher>> {
    let entries = interop_matcher::gallery::read_gallery(&dir.join(gallery))
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(gallery).display()))?;
    let matcher = IndexedMatcher::new(threads.max(1));
    let mine: Vec<_> = entries
        .into_iter()
        .filter(|(s, _)| shard.holds(*s))
        .collect();
    // A bulk load: prepared on every core, then the last enrolments folded into the
    // compressed index.
    matcher
        .enroll_many(&mine)
        .map_err(|e| anyhow::anyhow!("{gallery}: {e}"))?;
    matcher.compact();
    Ok(Arc::new(matcher))
}

/// Sets a shard's hit/no-hit threshold so that the whole gallery, searched across its
/// `shard.count` shards, has the false-positive identification rate `gallery_fpir`: the
/// gateway reports a hit when any shard does, and the shards hold disjoint impostors, so
/// each is calibrated for `gallery_fpir / count` (the rates add, to first order). The shard
/// calibrates from its own subjects (`searches` of them searched with themselves left out:
/// see [`Matcher::calibrate_threshold`]), which resolve the rate with at least
/// `count / gallery_fpir` searches.
pub fn calibrate_shard(
    matcher: &dyn Matcher,
    gallery_fpir: f64,
    shard: Shard,
    searches: usize,
) -> Result<interop_matcher::Calibration, interop_matcher::MatchError> {
    matcher.calibrate_threshold(gallery_fpir / shard.count as f64, searches)
}

/// Keeps `revocations` in step with the gateway's revocation list: asks `gateway`
/// (`AdminService.ListRevoked`, as `admin`) every `every` and adds what is new. A shard refuses
/// a revoked certificate within one interval of its revocation at the gateway; while the
/// gateway cannot be reached, the list the shard has stays in force.
pub async fn follow_revocations(
    admin: Client,
    revocations: crate::revocation::Revocations,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let mut stub = pb::admin_service_client::AdminServiceClient::new(admin.channel());
        match stub.list_revoked(pb::ListRevokedRequest {}).await {
            Ok(list) => {
                for r in list.into_inner().revoked {
                    if revocations.get(&r.serial).is_none() {
                        tracing::warn!(serial = %r.serial, "certificate revoked at the gateway; refused here from now on");
                        revocations.insert(crate::revocation::Revoked {
                            serial: r.serial,
                            reason: r.reason,
                            revoked_at_ms: r
                                .revoked_at
                                .map_or(0, |t| t.seconds * 1000 + t.nanos as i64 / 1_000_000),
                        });
                    }
                }
            }
            Err(s) => {
                tracing::warn!(code = ?s.code(), "cannot read the gateway's revocation list; keeping the current one")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Brings shard `shard`'s gallery, through `log`, up to the changes recorded at the gateway
/// (`MatcherService.ListChanges`, every page) unless their version is still `known`: the
/// version now held and how many changes were made. A change already made here (received
/// directly, or read before) is not made again.
pub async fn pull_changes(
    gateway: &Client,
    log: &Arc<GalleryLog>,
    shard: Shard,
    known: u64,
) -> anyhow::Result<(u64, usize)> {
    let mut stub = pb::matcher_service_client::MatcherServiceClient::new(gateway.channel());
    let (mut after, mut version, mut made) = (None, None, 0);
    loop {
        let page = stub
            .list_changes(pb::ListChangesRequest {
                shard_index: shard.index,
                shard_count: shard.count,
                after_subject_id: after,
                known_version: known,
                page_size: 0,
            })
            .await
            .map_err(|s| anyhow::anyhow!("ListChanges: {:?}: {}", s.code(), s.message()))?
            .into_inner();
        if page.unchanged {
            return Ok((known, 0));
        }
        // A change made while the pages are read makes the next version differ from this
        // one: it is read next time.
        version.get_or_insert(page.version);
        let mut changes = Vec::with_capacity(page.changes.len());
        for c in page.changes {
            anyhow::ensure!(
                shard.holds(c.subject_id),
                "the gateway listed subject {} for shard {shard}, which does not hold it",
                c.subject_id
            );
            after = Some(c.subject_id);
            let change = if c.removed {
                Recorded::Removed
            } else {
                Recorded::Enrolled(crate::services::fingers_for_search(&c.fingers).map_err(
                    |e| anyhow::anyhow!("the gateway's print of subject {}: {e}", c.subject_id),
                )?)
            };
            changes.push((c.subject_id, change));
        }
        let l = log.clone();
        made += tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
            let mut n = 0;
            for (subject, change) in &changes {
                n += usize::from(
                    l.apply_from_gateway(*subject, change)
                        .map_err(|e| anyhow::anyhow!("subject {subject}: {e}"))?,
                );
            }
            Ok(n)
        })
        .await??;
        if !page.more {
            break;
        }
    }
    Ok((version.unwrap_or(known), made))
}

/// Keeps shard `shard`'s gallery, through `log`, in step with the gallery changes recorded at
/// `gateway` (as its admin): reads them every `every` (see [`pull_changes`]), starting from
/// `known` (the version a first read before serving got, or 0). A replica that restarted, or
/// could not be reached when an enrolment or removal was made at the gateway, has it within
/// an interval of reaching the gateway; while it cannot, it keeps what it has, and the
/// gateway still refuses its answers that name a removed subject.
pub async fn follow_gallery(
    gateway: Client,
    log: Arc<GalleryLog>,
    shard: Shard,
    mut known: u64,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // Failing since (a warning when it starts, and a line when it ends, not one per try).
    let mut failing: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match pull_changes(&gateway, &log, shard, known).await {
            Ok((version, made)) => {
                known = version;
                if let Some(since) = failing.take() {
                    tracing::info!(
                        after_s = since.elapsed().as_secs(),
                        "reading the gateway's gallery changes again"
                    );
                }
                if made > 0 {
                    tracing::info!(changes = made, shard = %shard, "gallery changes recorded at the gateway made here");
                }
            }
            Err(e) if failing.is_none() => {
                failing = Some(std::time::Instant::now());
                tracing::warn!(error = %e, "cannot read the gateway's gallery changes; keeping the gallery as it is and trying every interval")
            }
            Err(e) => {
                tracing::debug!(error = %e, "still cannot read the gateway's gallery changes")
            }
        }
    }
}

/// Serves `matcher`, shard `shard` of a gallery, as `interop.v1.MatcherService` (admin only,
/// mutual TLS) with health, on `listener` until `shutdown`, refusing certificates
/// `revocations` lists, and enrolments and removals of ids other shards hold. Changes are
/// made through `log` (the matcher's: see [`follow_gallery`]).
pub async fn serve_matcher(
    matcher: Arc<dyn Matcher>,
    shard: Shard,
    log: Arc<GalleryLog>,
    listener: tokio::net::TcpListener,
    tls: tonic::transport::ServerTlsConfig,
    revocations: crate::revocation::Revocations,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use pb::matcher_service_server::MatcherServiceServer;
    let (health, health_svc) = tonic_health::server::health_reporter();
    health
        .set_serving::<MatcherServiceServer<crate::services::MatcherApi>>()
        .await;
    let svc =
        MatcherServiceServer::new(crate::services::MatcherApi::for_shard(matcher, shard, log))
            .max_decoding_message_size(crate::validate::MAX_MESSAGE_BYTES);
    tracing::info!(addr = %listener.local_addr()?, "serving MatcherService over mutual TLS");
    tonic::transport::Server::builder()
        .tls_config(tls)?
        .add_service(health_svc)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            svc,
            move |req| crate::principal::authenticate_with(req, &|s: &str| revocations.reason(s)),
        ))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await?;
    Ok(())
}

/// IDENT over matcher shard processes.
pub struct RemoteIdent {
    /// Per shard, its replicas.
    shards: Vec<Vec<Client>>,
    records: Arc<Records<ImmigrationRecord>>,
    deadline: Duration,
    /// Searches so far: each starts at the next replica of every shard, so replicas share
    /// the load (and each is the others' failover).
    turn: std::sync::atomic::AtomicUsize,
    /// The gateway's record of gallery changes (see [`crate::gallery`]), once it has one.
    log: std::sync::OnceLock<Arc<GalleryLog>>,
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
        let mut shards = vec![];
        for (i, part) in spec.split(',').enumerate() {
            let mut replicas = vec![];
            for url in part.split('|').map(str::trim).filter(|u| !u.is_empty()) {
                let c = ClientConfig::from_pki_dir(url, &pki.0, &Role::Admin)?
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
    async fn scatter(&self, req: pb::SearchRequest) -> Result<Vec<pb::SearchResponse>, String> {
        let mut asks = tokio::task::JoinSet::new();
        let turn = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for (i, replicas) in self.shards.iter().enumerate() {
            let (replicas, req, deadline) = (replicas.clone(), req.clone(), self.deadline);
            let first = turn % replicas.len();
            asks.spawn(async move { (i, ask_shard(replicas, first, req, deadline).await) });
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
    async fn refuse_removed(&self, answers: &[pb::SearchResponse]) -> Result<(), String> {
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
    async fn change(&self, subject: u64, change: Change) -> (Result<u64, Status>, bool) {
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
                Err(e) => return (Err(Status::internal(e.to_string())), false),
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
            (None, None) => Err(Status::new(
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
                    .map(|(r, e)| format!("replica {r}: {:?}: {}", e.code(), e.message()))
                    .collect();
                let total = self.shards[shard].len();
                // A removal is recorded before it is sent; an enrolment once a replica made it.
                let next = if reached || matches!(change, Change::Remove(_)) {
                    "It is recorded at the gateway: replicas following it (`interop-matcher serve --gateway`) make it once they reach it; or retry it"
                } else {
                    "Retry it"
                };
                Err(Status::unavailable(format!(
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
enum Change {
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
    async fn send(self, c: &Client, deadline: Duration) -> Result<u64, Status> {
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
            .unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(format!(
                    "no answer within {} ms",
                    deadline.as_millis()
                )))
            })
    }
}

#[tonic::async_trait]
impl IdentSearch for RemoteIdent {
    async fn search(&self, prints: Tenprint) -> Result<Option<IdentHit>, BackendError> {
        let req = pb::SearchRequest {
            fingers: crate::convert::tenprint_to_pb(&prints),
            max_candidates: 1,
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

/// `MatcherService` at a gateway whose IDENT gallery is in shard processes
/// (`interop-gateway serve --ident-shards`; admin only, as in process):
/// - **Search** goes to every shard, as a submission's does; the candidates are merged by
///   score, and it is a hit if any shard's is. If a shard gives no answer it is UNAVAILABLE.
/// - **Enroll** and **Remove** go to every replica of the shard that holds the id (`i` of `N`
///   holds the ids equal to `i` modulo `N`), at once. The answer's gallery size is that
///   shard's. A replica that already has the change (ALREADY_EXISTS for an enrolment,
///   NOT_FOUND for a removal) counts as done, so retrying a change that reached only some
///   replicas completes it; if every replica already had it, the answer is theirs, as one
///   gallery's would be. If a replica cannot be reached, the change is **not done** and the
///   answer is UNAVAILABLE, naming the replicas that do not have it: until they have it,
///   searches that reach one of them answer as before the change (for a removal, the subject
///   may still be found there), which is why the answer says so rather than succeed.
/// - **ListChanges** lists the changes recorded here, for the shards to follow.
///
/// Changes are recorded in the gateway's store as well (see [`crate::gallery`]): a removal
/// before it is sent, an enrolment once some replica has made it. The record is what lets a
/// search refuse a removed subject that a restarted replica has again, and what a replica
/// following the gateway (`interop-matcher serve --gateway`, see [`follow_gallery`]) reads to
/// make the changes it missed, restarted or unreachable: a change that is not done when
/// answered is done by itself once the replica reaches the gateway again.
pub struct ShardedMatcherApi {
    pub ident: Arc<RemoteIdent>,
    pub log: Option<(Arc<GalleryLog>, crate::store::DynStore)>,
}

#[tonic::async_trait]
impl pb::matcher_service_server::MatcherService for ShardedMatcherApi {
    async fn search(
        &self,
        req: tonic::Request<pb::SearchRequest>,
    ) -> Result<tonic::Response<pb::SearchResponse>, Status> {
        crate::services::need_admin(&req)?;
        let mut r = req.into_inner();
        crate::services::fingers_for_search(&r.fingers)?;
        let k = r.max_candidates.clamp(1, 100) as usize;
        r.max_candidates = k as u32;
        let answers = self
            .ident
            .scatter(r)
            .await
            .map_err(|why| Status::unavailable(format!("search incomplete: {why}")))?;
        self.ident
            .refuse_removed(&answers)
            .await
            .map_err(|why| Status::unavailable(format!("search refused: {why}; retry it")))?;
        let hit = answers.iter().any(|a| a.hit);
        // A removed subject below a shard's top (a restarted replica's) is not listed either.
        let removed = |c: &pb::Candidate| {
            self.ident
                .log
                .get()
                .is_some_and(|log| log.is_removed(c.subject_id))
        };
        let mut candidates: Vec<pb::Candidate> = answers
            .into_iter()
            .flat_map(|a| a.candidates)
            .filter(|c| !removed(c))
            .collect();
        candidates.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(a.subject_id.cmp(&b.subject_id))
        });
        candidates.truncate(k);
        Ok(tonic::Response::new(pb::SearchResponse { hit, candidates }))
    }

    async fn enroll(
        &self,
        req: tonic::Request<pb::EnrollRequest>,
    ) -> Result<tonic::Response<pb::EnrollResponse>, Status> {
        crate::services::need_admin(&req)?;
        let r = req.into_inner();
        let print = crate::services::fingers_for_search(&r.fingers)?;
        let subject = r.subject_id;
        let (result, made) = self.ident.change(subject, Change::Enroll(r)).await;
        // Recorded once some replica made it, even if others could not be reached: replicas
        // following the gateway then make it too when they reach it.
        if made && let Some((log, store)) = &self.log {
            log.record_enrolment(store, subject, print).await?;
        }
        let gallery_size = result?;
        tracing::info!(subject, gallery_size, "subject enrolled in its IDENT shard");
        Ok(tonic::Response::new(pb::EnrollResponse { gallery_size }))
    }

    async fn remove(
        &self,
        req: tonic::Request<pb::RemoveRequest>,
    ) -> Result<tonic::Response<pb::RemoveResponse>, Status> {
        crate::services::need_admin(&req)?;
        let r = req.into_inner();
        let subject = r.subject_id;
        if let Some((log, store)) = &self.log {
            log.record_removal(store, subject).await?;
        }
        let gallery_size = self.ident.change(subject, Change::Remove(r)).await.0?;
        tracing::info!(
            subject,
            gallery_size,
            "subject removed from its IDENT shard"
        );
        Ok(tonic::Response::new(pb::RemoveResponse { gallery_size }))
    }

    async fn list_changes(
        &self,
        req: tonic::Request<pb::ListChangesRequest>,
    ) -> Result<tonic::Response<pb::ListChangesResponse>, Status> {
        crate::services::need_admin(&req)?;
        let Some((log, _)) = &self.log else {
            return Err(Status::failed_precondition(
                "this gateway records no gallery changes",
            ));
        };
        Ok(tonic::Response::new(crate::gallery::list_changes(
            log,
            req.get_ref(),
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_partition_subjects() {
        let s: Shard = "1/3".parse().unwrap();
        assert!(s.holds(4) && !s.holds(5));
        assert_eq!(s.to_string(), "1/3");
        for bad in ["3/3", "1", "a/2", "0/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        // Every subject is in exactly one shard.
        let all: Vec<Shard> = (0..3).map(|i| Shard { index: i, count: 3 }).collect();
        for subject in 0..100 {
            assert_eq!(all.iter().filter(|s| s.holds(subject)).count(), 1);
        }
    }

    /// A shard of N is calibrated for the gallery's rate over N, and its hit decision then
    /// follows the threshold it reports.
    #[test]
    fn a_shard_is_calibrated_for_its_share_of_the_gallerys_fpir() {
        use interop_matcher::synth::{CaptureModel, capture, master_tenprint};
        let model = CaptureModel::default();
        let shard = Shard { index: 1, count: 4 };
        let m = IndexedMatcher::new(2);
        let prints: Vec<_> = (0..400u64)
            .filter(|p| shard.holds(*p))
            .map(|p| (p, capture(&master_tenprint(3, p), &model, p)))
            .collect();
        m.enroll_many(&prints).unwrap();
        let cal = calibrate_shard(&m, 0.2, shard, 100).unwrap();
        assert_eq!(cal.target_fpir, 0.05);
        assert_eq!(cal.searches, 100);
        assert!(cal.resolved, "100 searches resolve 5%");
        assert!(cal.threshold < interop_matcher::search::THRESHOLD);
        for stranger in 10_000..10_020u64 {
            let probe = capture(&master_tenprint(3, stranger), &model, 1);
            let r = m.search(&probe, 1).unwrap();
            let best = r.candidates[0].score;
            assert_eq!(r.hit.is_some(), best >= cal.threshold, "{best} {cal:?}");
        }
        // A rate that is not one is refused, and the threshold stays.
        assert!(calibrate_shard(&m, 0.0, shard, 100).is_err());
    }
}
