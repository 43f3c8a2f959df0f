//! One shard of a gallery as its own process (`interop-matcher serve --shard i/N`): it loads
//! the subjects whose id is `i` modulo `N`, serves `interop.v1.MatcherService` on the same
//! bounded mutual-TLS listener as the gateway ([`crate::server::listener`]) to gateway
//! identities only, and, with `--gateway`, follows the gateway as itself (the matcher
//! identity its `server.pem` names): its revocation list, and (an IDENT shard)
//! the gallery changes recorded there, so a replica that restarted or was unreachable catches
//! up by itself ([`follow_gallery`]).

use crate::auth::revocation::Revocations;
use crate::auth::tls::ServerTls;
use crate::engines::gallery_log::{Change as Recorded, GalleryLog};
use crate::server::ServeOptions;
use crate::server::listener::{self, CallTracker, ListenStats};
use interop_client::Client;
use interop_matcher::Matcher;
use interop_proto::v1 as pb;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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
/// an in-memory matcher searched with `threads` threads: from the shard's index snapshot, or
/// built and saved as one (see [`crate::engines::index`]).
pub fn load_shard(
    dir: &Path,
    gallery: &str,
    shard: Shard,
    threads: usize,
) -> anyhow::Result<Arc<dyn Matcher>> {
    let loaded = crate::engines::index::load_gallery(dir, gallery, threads, Some(shard))?;
    Ok(Arc::new(loaded.matcher))
}

/// A shard's threshold rule from the gallery's: the whole gallery, searched across its
/// `shard.count` shards, is to have the false-positive identification rate `gallery_fpir`.
/// The gateway reports a hit when any shard does, and the shards hold disjoint impostors, so
/// each is calibrated for `gallery_fpir / count` (the rates add, to first order), from its own
/// subjects (see [`Matcher::calibrate_threshold`]), searching at least the
/// `count / gallery_fpir` that resolve it. A fixed threshold is the same on every shard.
pub fn shard_rule(
    gallery: crate::engines::ThresholdRule,
    shard: Shard,
) -> crate::engines::ThresholdRule {
    match gallery {
        crate::engines::ThresholdRule::Calibrated { fpir, searches } => {
            let fpir = fpir / shard.count as f64;
            crate::engines::ThresholdRule::Calibrated {
                fpir,
                searches: searches.max((1.0 / fpir).ceil() as usize),
            }
        }
        fixed => fixed,
    }
}

/// Keeps `revocations` in step with the gateway's revocation list: asks `gateway`
/// (`AdminService.ListRevoked`, as the shard) every `every` and adds what is new. A shard refuses
/// a revoked certificate within one interval of its revocation at the gateway; while the
/// gateway cannot be reached, the list the shard has stays in force.
pub async fn follow_revocations(
    gateway: Client,
    revocations: crate::auth::revocation::Revocations,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let mut stub = pb::admin_service_client::AdminServiceClient::new(gateway.channel());
        match stub.list_revoked(pb::ListRevokedRequest {}).await {
            Ok(list) => {
                for r in list.into_inner().revoked {
                    if revocations.get(&r.serial).is_none() {
                        tracing::warn!(serial = %r.serial, "certificate revoked at the gateway; refused here from now on");
                        revocations.insert(crate::auth::revocation::Revoked {
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
                Recorded::Enrolled(crate::intake::validate::search_fingers(&c.fingers).map_err(
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
/// `gateway` (as the shard): reads them every `every` (see [`pull_changes`]), starting from
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

/// Serves `matcher`, shard `shard` of a gallery, as `interop.v1.MatcherService` (gateway
/// identities only, mutual TLS: any other is refused PERMISSION_DENIED, health included), on `listener` with the bounds of `options` until `shutdown`,
/// refusing certificates `revocations` lists, and enrolments and removals of ids other shards
/// hold. Changes are made through `log` (the matcher's: see [`follow_gallery`]).
#[allow(clippy::too_many_arguments)]
pub async fn serve_matcher(
    matcher: Arc<dyn Matcher>,
    shard: Shard,
    log: Arc<GalleryLog>,
    listener: tokio::net::TcpListener,
    tls: Arc<ServerTls>,
    options: ServeOptions,
    revocations: Revocations,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use pb::matcher_service_server::MatcherServiceServer;
    let (health, health_svc) = tonic_health::server::health_reporter();
    health
        .set_serving::<MatcherServiceServer<crate::api::MatcherApi>>()
        .await;
    let svc = MatcherServiceServer::new(crate::api::MatcherApi::for_shard(matcher, shard, log))
        .max_decoding_message_size(crate::intake::validate::MAX_MESSAGE_BYTES);
    tls.refuse_revoked(revocations.clone());
    let refused = revocations;
    let authenticate = move |req| {
        let req = crate::auth::principal::authenticate_with(req, &|s: &str| refused.reason(s))?;
        match crate::auth::principal::principal(&req) {
            Ok(crate::auth::principal::Principal::Gateway { .. }) => Ok(req),
            Ok(other) => Err(crate::error::GatewayError::PermissionDenied(format!(
                "a matcher shard serves gateways only, not {}",
                other.spiffe_id()
            ))
            .into()),
            Err(e) => Err(e.into()),
        }
    };
    tracing::info!(addr = %listener.local_addr()?, "serving MatcherService over mutual TLS");
    let calls = CallTracker::default();
    let router = listener::grpc_server(&options, calls.clone())
        .add_service(tonic::service::interceptor::InterceptedService::new(
            health_svc,
            authenticate.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            svc,
            authenticate,
        ));
    let stats = Arc::new(ListenStats::default());
    listener::serve(router, listener, tls, &options, calls, stats, shutdown).await
}

/// Which gallery a shard process serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gallery {
    /// DHS IDENT (immigration encounters).
    Ident,
    /// FBI criminal-history prints.
    Fbi,
}

/// Everything a shard process is started with (the flags of `interop-matcher serve`).
#[derive(Clone, Debug)]
pub struct ShardLaunch {
    pub listen: std::net::SocketAddr,
    /// This shard's PKI directory: `ca.pem`, and its own certificate and key (`server.pem`,
    /// naming `spiffe://interop.local/matcher/<shard>`), no CA key.
    pub pki: std::path::PathBuf,
    /// Serve even though the PKI directory holds the CA's key (a development setup).
    pub allow_ca_key: bool,
    /// World directory holding the gallery files.
    pub world: std::path::PathBuf,
    pub gallery: Gallery,
    pub shard: Shard,
    /// Threads per search.
    pub threads: usize,
    /// The gateway to follow (revocations, and for IDENT the gallery changes), as this shard.
    pub gateway: Option<String>,
    pub follow_every: Duration,
    /// How this shard's threshold is set; a calibration's FPIR is the whole gallery's (this
    /// shard takes its share: F / N).
    pub threshold: crate::engines::ThresholdRule,
    /// Connection, stream and call bounds (the gateway's listener's).
    pub options: ServeOptions,
}

/// Runs the shard process `l` describes until `shutdown` completes.
pub async fn run(
    l: ShardLaunch,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let file = match l.gallery {
        Gallery::Ident => crate::world::IDENT_GALLERY_FILE,
        Gallery::Fbi => crate::world::FBI_GALLERY_FILE,
    };
    let pki = crate::auth::pki::PkiDir(l.pki.clone());
    pki.refuse_ca_key(l.allow_ca_key)?;
    let tls = crate::server::server_tls(&pki)?;
    let (dir, shard, threads) = (l.world.clone(), l.shard, l.threads);
    let matcher =
        tokio::task::spawn_blocking(move || load_shard(&dir, file, shard, threads)).await??;
    tracing::info!(shard = %shard, subjects = matcher.len(), "shard loaded");
    let rule = shard_rule(l.threshold, shard);
    if let crate::engines::ThresholdRule::Calibrated { fpir, .. } = rule {
        tracing::info!(
            shard_fpir = fpir,
            shards = shard.count,
            "calibrating for this shard's share of the gallery's FPIR"
        );
    }
    let m = matcher.clone();
    tokio::task::spawn_blocking(move || rule.apply(m.as_ref(), &format!("shard {shard}")))
        .await??;
    let log = Arc::new(GalleryLog::new(matcher.clone()));
    let listener = tokio::net::TcpListener::bind(l.listen)
        .await
        .with_context(|| format!("binding {}", l.listen))?;
    let revocations = Revocations::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    match &l.gateway {
        Some(gateway) => {
            let every = l.follow_every.max(Duration::from_secs(1));
            let me = pki.workload_as("matcher")?;
            tracing::info!(identity = %me.spiffe_id(), "following the gateway as");
            let gateway_client = crate::auth::pki::workload_client(&pki, gateway)?
                .call_timeout(every.max(Duration::from_secs(10)))
                // Each interval is the next try: a start before the gateway's is not held up.
                .retry(interop_client::RetryPolicy::none())
                .connect_lazy()?;
            tokio::spawn(follow_revocations(
                gateway_client.clone(),
                revocations.clone(),
                every,
                stop_rx.clone(),
            ));
            // The gateway records the IDENT gallery's changes only: an FBI shard follows its
            // revocations, never those changes (they would be another gallery's ids).
            if l.gallery == Gallery::Ident {
                // The changes made at the gateway while this shard was down, before it serves.
                // If the gateway cannot be reached, serve what the world's gallery holds and
                // keep trying: the gateway refuses answers naming a subject it removed.
                let known = match pull_changes(&gateway_client, &log, shard, 0).await {
                    Ok((version, made)) => {
                        tracing::info!(
                            changes = made,
                            "gallery changes recorded at the gateway made before serving"
                        );
                        version
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the gateway's gallery changes before serving; serving the world's gallery and trying again every interval");
                        0
                    }
                };
                tokio::spawn(follow_gallery(
                    gateway_client,
                    log.clone(),
                    shard,
                    known,
                    every,
                    stop_rx,
                ));
            }
        }
        None => tracing::warn!(
            "no --gateway: certificates revoked at the gateway are not refused here, and enrolments and removals made at the gateway while this shard was down or unreachable are not made here"
        ),
    }
    let r = serve_matcher(
        matcher,
        shard,
        log,
        listener,
        tls,
        l.options,
        revocations,
        shutdown,
    )
    .await;
    let _ = stop_tx.send(true);
    r
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
        let m = interop_matcher::IndexedMatcher::new(2);
        let prints: Vec<_> = (0..400u64)
            .filter(|p| shard.holds(*p))
            .map(|p| (p, capture(&master_tenprint(3, p), &model, p)))
            .collect();
        m.enroll_many(&prints).unwrap();
        let rule = shard_rule(
            crate::engines::ThresholdRule::Calibrated {
                fpir: 0.2,
                searches: 100,
            },
            shard,
        );
        assert_eq!(
            shard_rule(crate::engines::ThresholdRule::Fixed(0.4), shard),
            crate::engines::ThresholdRule::Fixed(0.4)
        );
        rule.apply(&m, "shard").unwrap();
        let cal = m.calibrate_threshold(0.05, 100).unwrap();
        assert_eq!(
            m.threshold(),
            cal.threshold,
            "the rule calibrated for 0.2 / 4"
        );
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
        let bad = crate::engines::ThresholdRule::Calibrated {
            fpir: 0.0,
            searches: 100,
        };
        assert!(bad.apply(&m, "shard").is_err());
        assert_eq!(m.threshold(), cal.threshold);
    }
}
