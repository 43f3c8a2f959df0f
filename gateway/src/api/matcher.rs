//! `MatcherService` (admin only at a gateway: it exposes a whole gallery; shards may list
//! their gallery changes): over the gateway's in-process IDENT gallery ([`MatcherApi`]), over
//! the shard processes behind `--ident-shards` ([`ShardedMatcherApi`]), and as a shard process
//! serves it (`interop-matcher`, see [`MatcherApi::for_shard`]), to gateway identities only. Searches honour the caller's deadline; enrolments and removals
//! at a gateway are recorded in its store (see [`crate::engines::gallery_log`]).

use super::{Res, audit_admin_read, need_admin, need_admin_or_shard, need_gateway, recipient, rpc};
use crate::engines::gallery_log::{self, GalleryLog, change_gallery};
use crate::engines::remote::{Change, RemoteIdent};
use crate::engines::shard::Shard;
use crate::error::GatewayError;
use crate::intake::validate::search_fingers;
use crate::store::DisclosureKind;
use interop_matcher::Matcher;
use interop_proto::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response};

/// `MatcherService` over an in-process matcher (admin role: it exposes a whole gallery).
///
/// Searches run at most one per core at a time; the others wait their turn without using a
/// thread. A caller that gives up (its deadline passed) drops its call, and a search still
/// waiting is then never run: without this bound an overloaded shard started every queued
/// search at once, each took longer than its caller would wait, and every retry added work.
/// At a gateway that searches in process they run on its search threads, in a lane of their
/// own ([`ADMIN_LANE`]) beside the bureaus' (see [`crate::engines::slots`]), so the admin's
/// searches and the pipeline's share the cores rather than oversubscribe them. A shard
/// process runs its gateways' searches on search threads of its own, in the lane each names
/// ([`LANE_HEADER`]: the bureau), so it too takes them bureau by bureau.
pub struct MatcherApi {
    matcher: Arc<dyn Matcher>,
    running: Arc<tokio::sync::Semaphore>,
    /// The gateway's search threads, where it has them (see [`MatcherApi::on_slots`]).
    slots: Option<Arc<crate::engines::slots::SearchSlots>>,
    /// The ids this gallery may hold: a shard process holds only its own (see
    /// [`MatcherApi::for_shard`]).
    shard: Option<Shard>,
    /// Who may call: at a gateway the admin (and, for `ListChanges`, shards); at a shard
    /// process, gateways only (set by [`MatcherApi::for_shard`]).
    serves_gateways: bool,
    /// Where its enrolments and removals are noted (see [`crate::engines::gallery_log`]) and, at a
    /// gateway, the store that records them; a shard process has no store.
    log: Option<(
        Arc<crate::engines::gallery_log::GalleryLog>,
        Option<crate::store::DynStore>,
    )>,
    /// At a gateway, the FBI gallery, searched when a request asks for it (admin only): so a
    /// miss of the criminal-history check can be examined like one of IDENT's.
    fbi: Option<Arc<dyn Matcher>>,
    /// At a gateway, the store whose disclosure audit records each search and each listing of
    /// templates (kind `Gallery`); a shard process records nothing (its caller is its gateway).
    audit: Option<crate::store::DynStore>,
}

/// The search threads' lane of the admin's `MatcherService` searches at a gateway.
pub const ADMIN_LANE: &str = "(admin)";

/// The request header by which a gateway tells a shard process the lane of its search (the
/// bureau whose submission asks; see [`crate::engines::slots`]).
pub const LANE_HEADER: &str = "interop-lane";

/// Longest lane a shard takes from [`LANE_HEADER`] (a bureau's code is two letters).
const MAX_LANE: usize = 32;

/// Names `lane` in a search request to a shard process (see [`LANE_HEADER`]); a lane that
/// cannot be a header value is left out (the shard then uses the lane `""`).
pub fn name_lane<T>(call: &mut Request<T>, lane: &str) {
    if let Ok(v) = tonic::metadata::MetadataValue::try_from(lane) {
        call.metadata_mut().insert(LANE_HEADER, v);
    }
}

fn answer(res: &interop_matcher::SearchResult) -> pb::SearchResponse {
    pb::SearchResponse {
        hit: res.hit.is_some(),
        candidates: res
            .candidates
            .iter()
            .map(|c| pb::Candidate {
                subject_id: c.subject,
                score: c.score,
            })
            .collect(),
    }
}

impl MatcherApi {
    pub fn new(matcher: Arc<dyn Matcher>) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        MatcherApi {
            matcher,
            running: Arc::new(tokio::sync::Semaphore::new(cores)),
            slots: None,
            shard: None,
            serves_gateways: false,
            log: None,
            fbi: None,
            audit: None,
        }
    }

    /// PERMISSION_DENIED unless the caller may use this service: the admin at a gateway, a
    /// gateway at a shard process.
    fn need_caller<T>(&self, req: &Request<T>) -> Result<(), GatewayError> {
        if self.serves_gateways {
            need_gateway(req)
        } else {
            need_admin(req)
        }
    }

    /// The same service, recording each search and listing of templates in `store`'s
    /// disclosure audit.
    pub fn audited(self, store: crate::store::DynStore) -> Self {
        MatcherApi {
            audit: Some(store),
            ..self
        }
    }

    /// The same service, also searching the FBI gallery `fbi` when a request asks for it.
    pub fn with_fbi(self, fbi: Option<Arc<dyn Matcher>>) -> Self {
        MatcherApi { fbi, ..self }
    }

    /// The same service, its searches run on `slots` (the gateway's search threads, where it
    /// has them) in the lane [`ADMIN_LANE`].
    pub fn on_slots(self, slots: Option<Arc<crate::engines::slots::SearchSlots>>) -> Self {
        MatcherApi { slots, ..self }
    }

    /// A search of `r.fingers` in the gallery `r.gallery` names, within `deadline`.
    async fn search_in(
        &self,
        r: pb::SearchRequest,
        lane: Arc<str>,
        deadline: Option<std::time::Instant>,
    ) -> Result<pb::SearchResponse, GatewayError> {
        let m = match (r.gallery(), &self.shard, &self.fbi) {
            (pb::Gallery::Fbi, None, Some(fbi)) => fbi.clone(),
            (pb::Gallery::Fbi, None, None) => {
                return Err(GatewayError::FailedPrecondition(
                    "gallery: the FBI gallery is not searched here".into(),
                ));
            }
            // A shard process searches the gallery it holds.
            _ => self.matcher.clone(),
        };
        let probe = search_fingers(&r.fingers)?;
        let k = r.max_candidates.clamp(1, 100) as usize;
        if let Some(slots) = &self.slots {
            let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let search = slots.run(lane, started, move || m.search_before(&probe, k, deadline));
            // Not run at all if the caller's deadline passes while it waits for a thread.
            let res = match deadline {
                Some(d) => tokio::time::timeout_at(d.into(), search)
                    .await
                    .map_err(|_| {
                        GatewayError::DeadlineExceeded(
                            "no search thread free before the deadline".into(),
                        )
                    })?,
                None => search.await,
            }
            .map_err(|e| GatewayError::Unavailable(e.to_string()))??;
            return Ok(answer(&res));
        }
        let permit = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        let res = tokio::task::spawn_blocking(move || {
            let r = m.search_before(&probe, k, deadline);
            drop(permit);
            r
        })
        .await
        .map_err(|e| GatewayError::Internal(e.to_string()))??;
        Ok(answer(&res))
    }

    /// The service at a gateway: enrolments and removals go through `log`, recorded in
    /// `store` (see [`crate::engines::gallery_log`]), so they outlive a restart and reach its replicas.
    pub fn recorded(
        matcher: Arc<dyn Matcher>,
        log: Arc<crate::engines::gallery_log::GalleryLog>,
        store: crate::store::DynStore,
    ) -> Self {
        MatcherApi {
            log: Some((log, Some(store))),
            ..Self::new(matcher)
        }
    }

    /// The service of shard `shard`, to gateway identities only: an enrolment or removal of a subject another shard holds
    /// is refused with INVALID_ARGUMENT naming the shard that holds it, and changes nothing.
    /// Without this check a shard took any id, so a subject could be enrolled in two shards
    /// at once, and a removal sent to the shard that holds its id missed the copy elsewhere.
    /// Changes go through `log`, `matcher`'s, which notes them as made: one read later from
    /// the gateway's record (see [`crate::engines::shard::follow_gallery`]) is not made again.
    pub fn for_shard(
        matcher: Arc<dyn Matcher>,
        shard: Shard,
        log: Arc<crate::engines::gallery_log::GalleryLog>,
    ) -> Self {
        MatcherApi {
            shard: Some(shard),
            serves_gateways: true,
            log: Some((log, None)),
            // Its own search threads, taking the gateways' searches bureau by bureau.
            slots: Some(Arc::new(crate::engines::slots::SearchSlots::per_core())),
            ..Self::new(matcher)
        }
    }

    /// The search threads' lane of `req`: at a shard process the bureau its gateway names
    /// ([`LANE_HEADER`]; none: the lane `""`), at a gateway the admin's ([`ADMIN_LANE`]).
    fn lane_of<T>(&self, req: &Request<T>) -> Arc<str> {
        if !self.serves_gateways {
            return ADMIN_LANE.into();
        }
        req.metadata()
            .get(LANE_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|l| l.len() <= MAX_LANE)
            .unwrap_or("")
            .into()
    }

    fn check_holds(&self, subject: u64) -> Result<(), GatewayError> {
        match self.shard {
            Some(s) if !s.holds(subject) => Err(GatewayError::invalid(
                "subject_id",
                format!(
                    "subject {subject} belongs to shard {}, not this shard {s} (shard i of N holds the ids equal to i modulo N)",
                    Shard {
                        index: subject % s.count,
                        count: s.count
                    }
                ),
            )),
            _ => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl pb::matcher_service_server::MatcherService for MatcherApi {
    /// Honours the caller's deadline (its `grpc-timeout`): the search gives up when it passes
    /// (waiting for a core counts), rather than finish an answer no one waits for.
    async fn search(&self, req: Request<pb::SearchRequest>) -> Res<pb::SearchResponse> {
        self.need_caller(&req)?;
        let who = recipient(&req, rpc::SEARCH)?;
        let deadline = grpc_timeout(req.metadata()).map(|t| std::time::Instant::now() + t);
        let lane = self.lane_of(&req);
        let answer = self.search_in(req.into_inner(), lane, deadline).await?;
        audit_admin_read(self.audit.as_ref(), &who, DisclosureKind::Gallery, "").await?;
        Ok(Response::new(answer))
    }

    async fn enroll(&self, req: Request<pb::EnrollRequest>) -> Res<pb::EnrollResponse> {
        self.need_caller(&req)?;
        let r = req.into_inner();
        self.check_holds(r.subject_id)?;
        let print = search_fingers(&r.fingers)?;
        let size = match &self.log {
            Some((log, store)) => log.enroll(store.as_ref(), r.subject_id, print).await?,
            None => change_gallery(&self.matcher, move |m| m.enroll(r.subject_id, &print)).await?,
        };
        Ok(Response::new(pb::EnrollResponse {
            gallery_size: size as u64,
        }))
    }

    async fn remove(&self, req: Request<pb::RemoveRequest>) -> Res<pb::RemoveResponse> {
        self.need_caller(&req)?;
        let subject = req.into_inner().subject_id;
        self.check_holds(subject)?;
        let size = match &self.log {
            Some((log, store)) => log.remove(store.as_ref(), subject).await?,
            None => change_gallery(&self.matcher, move |m| m.remove(subject)).await?,
        };
        tracing::info!(
            subject,
            gallery_size = size,
            "subject removed from the gallery"
        );
        Ok(Response::new(pb::RemoveResponse {
            gallery_size: size as u64,
        }))
    }

    async fn list_changes(
        &self,
        req: Request<pb::ListChangesRequest>,
    ) -> Res<pb::ListChangesResponse> {
        if self.serves_gateways {
            need_gateway(&req)?;
        } else {
            need_admin_or_shard(&req)?;
        }
        match &self.log {
            Some((log, Some(_))) => {
                let who = recipient(&req, rpc::LIST_CHANGES)?;
                let answer = gallery_log::list_changes(log, req.get_ref())?;
                // Only a listing that carries templates discloses any (shards poll it).
                if !answer.changes.is_empty() {
                    let kind = DisclosureKind::Gallery;
                    audit_admin_read(self.audit.as_ref(), &who, kind, "").await?;
                }
                Ok(Response::new(answer))
            }
            _ => Err(GatewayError::FailedPrecondition(
                "no gallery changes are recorded here: a shard process reads them from its gateway"
                    .into(),
            )
            .into()),
        }
    }
}

/// The caller's deadline from its `grpc-timeout` header (up to 8 digits and a unit: H, M, S,
/// m, u or n), if it sent one that parses.
fn grpc_timeout(meta: &tonic::metadata::MetadataMap) -> Option<std::time::Duration> {
    use std::time::Duration;
    let v = meta.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
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
/// Changes are recorded in the gateway's store as well (see [`crate::engines::gallery_log`]): a removal
/// before it is sent, an enrolment once some replica has made it. The record is what lets a
/// search refuse a removed subject that a restarted replica has again, and what a replica
/// following the gateway (`interop-matcher serve --gateway`, see [`crate::engines::shard::follow_gallery`]) reads to
/// make the changes it missed, restarted or unreachable: a change that is not done when
/// answered is done by itself once the replica reaches the gateway again.
pub struct ShardedMatcherApi {
    pub ident: Arc<RemoteIdent>,
    pub log: Option<(Arc<GalleryLog>, crate::store::DynStore)>,
    /// The FBI gallery, in process (see [`MatcherApi::with_fbi`]).
    pub fbi: Option<MatcherApi>,
    /// The store whose disclosure audit records each search and listing of templates.
    pub audit: Option<crate::store::DynStore>,
}

impl ShardedMatcherApi {
    /// A search, not yet recorded.
    async fn search_unaudited(&self, req: Request<pb::SearchRequest>) -> Res<pb::SearchResponse> {
        need_admin(&req)?;
        if req.get_ref().gallery() == pb::Gallery::Fbi {
            let Some(fbi) = &self.fbi else {
                return Err(GatewayError::FailedPrecondition(
                    "gallery: the FBI gallery is not searched here".into(),
                )
                .into());
            };
            let deadline = grpc_timeout(req.metadata()).map(|t| std::time::Instant::now() + t);
            return Ok(Response::new(
                fbi.search_in(req.into_inner(), ADMIN_LANE.into(), deadline)
                    .await?,
            ));
        }
        let mut r = req.into_inner();
        search_fingers(&r.fingers)?;
        let k = r.max_candidates.clamp(1, 100) as usize;
        r.max_candidates = k as u32;
        // The shards take it in the admin's lane.
        let answers = crate::engines::slots::in_lane(ADMIN_LANE, self.ident.scatter(r))
            .await
            .map_err(|why| GatewayError::Unavailable(format!("search incomplete: {why}")))?;
        self.ident
            .refuse_removed(&answers)
            .await
            .map_err(|why| GatewayError::Unavailable(format!("search refused: {why}; retry it")))?;
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
        Ok(Response::new(pb::SearchResponse { hit, candidates }))
    }
}

#[tonic::async_trait]
impl pb::matcher_service_server::MatcherService for ShardedMatcherApi {
    async fn search(&self, req: Request<pb::SearchRequest>) -> Res<pb::SearchResponse> {
        need_admin(&req)?;
        let who = recipient(&req, rpc::SEARCH)?;
        let answer = self.search_unaudited(req).await?;
        audit_admin_read(self.audit.as_ref(), &who, DisclosureKind::Gallery, "").await?;
        Ok(answer)
    }

    async fn enroll(&self, req: Request<pb::EnrollRequest>) -> Res<pb::EnrollResponse> {
        need_admin(&req)?;
        let r = req.into_inner();
        let print = search_fingers(&r.fingers)?;
        let subject = r.subject_id;
        let (result, made) = self.ident.change(subject, Change::Enroll(r)).await;
        // Recorded once some replica made it, even if others could not be reached: replicas
        // following the gateway then make it too when they reach it.
        if made && let Some((log, store)) = &self.log {
            log.record_enrolment(store, subject, print).await?;
        }
        let gallery_size = result?;
        tracing::info!(subject, gallery_size, "subject enrolled in its IDENT shard");
        Ok(Response::new(pb::EnrollResponse { gallery_size }))
    }

    async fn remove(&self, req: Request<pb::RemoveRequest>) -> Res<pb::RemoveResponse> {
        need_admin(&req)?;
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
        Ok(Response::new(pb::RemoveResponse { gallery_size }))
    }

    async fn list_changes(
        &self,
        req: Request<pb::ListChangesRequest>,
    ) -> Res<pb::ListChangesResponse> {
        need_admin_or_shard(&req)?;
        let Some((log, _)) = &self.log else {
            return Err(GatewayError::FailedPrecondition(
                "this gateway records no gallery changes".into(),
            )
            .into());
        };
        let who = recipient(&req, rpc::LIST_CHANGES)?;
        let answer = gallery_log::list_changes(log, req.get_ref())?;
        // Only a listing that carries templates discloses any (shards poll it).
        if !answer.changes.is_empty() {
            audit_admin_read(self.audit.as_ref(), &who, DisclosureKind::Gallery, "").await?;
        }
        Ok(Response::new(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::slots::SearchSlots;
    use interop_matcher::synth::{CaptureModel, capture, master_tenprint};
    use std::time::Duration;

    /// At a gateway the admin's searches take their turn on the pipeline's search threads,
    /// in a lane of their own: while the only thread is busy the search waits (using no
    /// thread), runs once it is free, and is refused if its deadline passes first.
    /// A shard process takes each search in the lane its gateway names (the bureau), so it
    /// too takes searches bureau by bureau; a gateway's own `MatcherService` is the admin's.
    #[test]
    fn a_shard_takes_the_lane_its_gateway_names() {
        let m = Arc::new(interop_matcher::IndexedMatcher::new(1));
        let log = Arc::new(crate::engines::gallery_log::GalleryLog::for_shards());
        let shard = MatcherApi::for_shard(m.clone(), Shard { index: 0, count: 1 }, log);
        let at_gateway = MatcherApi::new(m);
        let named = |lane: &str| {
            let mut call = Request::new(());
            name_lane(&mut call, lane);
            call
        };
        assert_eq!(&*shard.lane_of(&named("TX")), "TX");
        assert_eq!(&*shard.lane_of(&Request::new(())), "", "no lane named");
        assert_eq!(&*shard.lane_of(&named(&"X".repeat(33))), "", "too long");
        assert!(
            named("bad\nlane").metadata().get(LANE_HEADER).is_none(),
            "not a header value: left out"
        );
        assert_eq!(&*at_gateway.lane_of(&named("TX")), ADMIN_LANE);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn admin_searches_take_their_turn_on_the_gateways_search_threads() {
        let m = Arc::new(interop_matcher::IndexedMatcher::new(1));
        let print = |p: u64, n: u64| capture(&master_tenprint(3, p), &CaptureModel::default(), n);
        for p in 1..=20 {
            m.enroll(p, &print(p, 0)).unwrap();
        }
        let slots = Arc::new(SearchSlots::new(1));
        let api = Arc::new(MatcherApi::new(m).on_slots(Some(slots.clone())));
        let probe = pb::SearchRequest {
            fingers: crate::convert::tenprint_to_pb(&print(7, 1)),
            max_candidates: 1,
            ..Default::default()
        };
        let request = move || probe.clone();
        // A bureau's search holding the only thread until released.
        let busy = |slots: &Arc<SearchSlots>| {
            let (release, wait) = std::sync::mpsc::channel::<()>();
            let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let slots = slots.clone();
            let job = async move {
                slots
                    .run("TX".into(), started, move || wait.recv().ok())
                    .await
            };
            (release, tokio::spawn(job))
        };
        /// Until `(waiting, running)` searches.
        async fn load(slots: &SearchSlots, n: (usize, usize)) {
            for _ in 0..500 {
                if slots.figures().queued_and_running() == n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("never {n:?} searches waiting and running");
        }

        let (release, job) = busy(&slots);
        load(&slots, (0, 1)).await;
        let search = tokio::spawn({
            let api = api.clone();
            let r = request();
            async move { api.search_in(r, ADMIN_LANE.into(), None).await }
        });
        load(&slots, (1, 1)).await;
        assert!(!search.is_finished(), "it waits for the busy thread");
        release.send(()).unwrap();
        job.await.unwrap().unwrap();
        let found = search.await.unwrap().unwrap();
        assert_eq!(found.candidates[0].subject_id, 7);
        // (A thread counts itself idle just after sending its answer.)
        load(&slots, (0, 0)).await;

        let (release, job) = busy(&slots);
        load(&slots, (0, 1)).await;
        let deadline = std::time::Instant::now() + Duration::from_millis(100);
        let e = api
            .search_in(request(), ADMIN_LANE.into(), Some(deadline))
            .await
            .unwrap_err();
        assert!(matches!(e, GatewayError::DeadlineExceeded(_)), "{e:?}");
        release.send(()).unwrap();
        job.await.unwrap().unwrap();
        // Nothing left behind (that a search whose caller left is skipped, not run, is
        // `engines::slots`' own test).
        load(&slots, (0, 0)).await;
    }

    #[test]
    fn grpc_timeouts_parse_as_the_protocol_writes_them() {
        let t = |v: &str| {
            let mut m = tonic::metadata::MetadataMap::new();
            m.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&m)
        };
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("2M"), Some(Duration::from_secs(120)));
        assert_eq!(t("5S"), Some(Duration::from_secs(5)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("5000000u"), Some(Duration::from_secs(5)));
        assert_eq!(t("3n"), Some(Duration::from_nanos(3)));
        for bad in ["S", "5", "5x", "-5S", "5.0S", "123456789S", "+5S"] {
            assert_eq!(t(bad), None, "{bad}");
        }
        assert_eq!(grpc_timeout(&tonic::metadata::MetadataMap::new()), None);
    }
}
