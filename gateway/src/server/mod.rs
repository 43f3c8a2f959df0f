//! Assembling and running the gateway: state ([`Gateway`]), recovery on start, and the TLS
//! gRPC server with every service, health and reflection.
//!
//! Shaped after mini-redis: [`Gateway::serve`] takes an already-bound listener and a shutdown
//! future, so tests bind port 0 and stop it cleanly. On shutdown, open streams are ended, the
//! server stops accepting, in-flight calls get [`ServeOptions::grace`] to finish, and what is
//! still running after that is dropped — safe, because anything receipted is in the durable
//! log and resumed on the next start.

use crate::auth::tls::{ServerTls, TlsFiles};
use crate::server::listener::ListenStats;
pub mod launch;
pub mod listener;
pub mod retention;
mod serve;

use crate::auth::pki::PkiDir;
use crate::engines::{CriminalHistory, IdentSearch};
use crate::error::GatewayError;
use crate::pipeline::{self, Core};
use crate::rules::policy::{JurisdictionPolicy, PolicyBook, StatePolicy};
use crate::store::DynStore;
use crate::world::WorldFile;
use interop_matcher::Matcher;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Tunables with defaults that work: every bound the gateway keeps, in one place (the README's
/// "Overload" section explains each and its flag).
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Submissions processed at once (the pipeline's workers). Default
    /// [`in_process_concurrency`]: with the matcher in this process, each submission in flight
    /// queues for the same cores, so more workers only lengthen every submission's time in
    /// flight (and a quiet bureau's behind a flood's). Matcher shards over the network want
    /// more, to cover the round trips (`serve` takes [`SHARDED_CONCURRENCY`] with
    /// `--ident-shards`).
    pub concurrency: usize,
    /// How much receipted, unfinished work is taken on: past it, the bureaus holding more
    /// than their share are refused with RESOURCE_EXHAUSTED before anything is stored (see
    /// [`crate::pipeline::backlog`]).
    pub backlog: pipeline::BacklogBudget,
    /// How long in-flight calls may run after shutdown begins.
    pub grace: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub max_streams_per_connection: u32,
    /// Open `Subscribe`/`StreamResponses` streams in all, and per identity; past either a new
    /// one is refused with RESOURCE_EXHAUSTED.
    pub max_subscriptions: usize,
    pub max_subscriptions_per_identity: usize,
    /// Reads that disclose case data (`GetStatus`, `GetResponseHead`, opening a result stream)
    /// per client identity per second, bursts of twice that; 0 = unlimited. See
    /// [`crate::auth::rate`].
    pub max_reads_per_identity: u32,
    /// Per-call timeout for unary calls (streams are exempt: they end on shutdown).
    pub request_timeout: Duration,
    /// How long a field office's events are kept after it acknowledged them; then they are
    /// compacted away. What it has not acknowledged is kept, however old.
    pub retention: Duration,
    /// How long a bureau's responses are kept after they were appended (bureaus acknowledge
    /// nothing, so age is the only rule); then they are removed. See
    /// [`crate::server::retention`].
    pub bureau_retention: Duration,
    /// Disclosure records older than this are archived to `DATA/archive` and then removed
    /// from the store; `None` (the default) keeps the whole audit in the store. Embedded store
    /// only. See [`crate::server::retention`].
    pub audit_retention: Option<Duration>,
    /// Open client connections (past their handshake) at once; past it a new connection is
    /// closed before TLS.
    pub max_connections: usize,
    /// TLS handshakes in progress at once, in all and from one source address; a new
    /// connection that finds either full closes the oldest handshake there (see
    /// [`listener`]).
    pub max_handshakes: usize,
    pub max_handshakes_per_address: usize,
    /// A connection that has not finished its TLS handshake by then is closed (slow-loris).
    pub tls_handshake_timeout: Duration,
    /// A connection with no call in flight for this long is closed; `None` keeps it.
    pub idle_timeout: Option<Duration>,
    /// HTTP/2 PING interval, and how long an unanswered PING may wait before the connection
    /// is closed as dead.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// How often the scheduled profiling review looks for quarters to assess (see
    /// [`crate::rules::assessment`]).
    pub assessment_interval: Duration,
    /// How often a closed quarter is revised for late bookings.
    pub assessment_pacing: crate::rules::assessment::Pacing,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            concurrency: in_process_concurrency(),
            backlog: Default::default(),
            grace: Duration::from_secs(5),
            max_streams_per_connection: 512,
            max_subscriptions: 4096,
            max_subscriptions_per_identity: 64,
            max_reads_per_identity: 100,
            request_timeout: Duration::from_secs(30),
            retention: Duration::from_secs(7 * 24 * 3600),
            bureau_retention: retention::BUREAU_RETENTION,
            audit_retention: None,
            max_connections: 1024,
            max_handshakes: 256,
            max_handshakes_per_address: 32,
            tls_handshake_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(300)),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            assessment_interval: Duration::from_secs(2),
            assessment_pacing: Default::default(),
        }
    }
}

/// Workers for a gateway that searches in process: four per core (the FBI check and the IDENT
/// search of one submission run at once, and a completion waits for its commit).
pub fn in_process_concurrency() -> usize {
    4 * std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Workers for a gateway whose IDENT search goes to matcher shard processes.
pub const SHARDED_CONCURRENCY: usize = 64;

/// The running gateway's shared state.
pub struct Gateway {
    pub core: Arc<Core>,
    pub world: Arc<WorldFile>,
    /// Receipted submissions not yet completed, and the order the workers take them in.
    pub backlog: Arc<pipeline::Backlog>,
    pub shutdown: watch::Receiver<bool>,
    shutdown_tx: watch::Sender<bool>,
    /// Set after the grace period: the pipeline drops in-flight work.
    halt_tx: watch::Sender<bool>,
    pub(crate) admin_lock: tokio::sync::Mutex<()>,
    /// Revoked client certificates, checked on every call and by open streams.
    pub revocations: crate::auth::revocation::Revocations,
    pub(crate) subscription_limits: crate::delivery::SubscriptionLimits,
    pub(crate) read_rate: crate::auth::rate::ReadRate,
    matcher: Option<MatcherServing>,
    /// The IDENT gallery's recorded changes (see [`crate::engines::gallery_log`]).
    gallery: Option<Arc<crate::engines::gallery_log::GalleryLog>>,
    /// The FBI gallery, searched by `MatcherService.Search` when asked (see
    /// [`Gateway::serve_fbi_gallery`]).
    fbi_gallery: std::sync::OnceLock<Arc<dyn Matcher>>,
    options: ServeOptions,
    /// The TLS configuration being served, once [`Gateway::serve`] runs (for reloads).
    tls: std::sync::OnceLock<Arc<ServerTls>>,
    /// Connection counters of the listener.
    pub listen_stats: Arc<ListenStats>,
    /// The store's replicas share the pending work: intake parks what it receipts, and the
    /// store's feed queues what this replica is to process (see [`pipeline::Backlog::park`]).
    pub(crate) shared_work: bool,
}

/// Shared work: how often the oldest parked submissions are checked against the store, and
/// how many at most (see [`Gateway::start_work_feed`]).
const PARKED_SWEEP_EVERY: Duration = Duration::from_secs(10);
const PARKED_SWEEP_MAX: usize = 1_000;

/// Applies persisted policy overrides and revocations (at start, and when a replica changed
/// them). Applying one again is harmless.
async fn apply_settings(
    store: &DynStore,
    policy: &PolicyBook,
    revocations: &crate::auth::revocation::Revocations,
    gallery: Option<&crate::engines::gallery_log::GalleryLog>,
) -> anyhow::Result<()> {
    let settings = store.settings().await?;
    if let Some(g) = gallery {
        let n = g.apply(&settings)?;
        if n > 0 {
            tracing::info!(changes = n, "recorded IDENT gallery changes applied");
        }
    }
    for (k, v) in settings {
        if k.starts_with(crate::engines::gallery_log::SETTING_PREFIX) {
            continue;
        }
        if k.starts_with(crate::auth::revocation::SETTING_PREFIX) {
            revocations.insert(serde_json::from_slice(&v)?);
            continue;
        }
        if let Some(id) = k.strip_prefix(JURISDICTION_SETTING) {
            let p: JurisdictionPolicy = serde_json::from_slice(&v)?;
            policy.set_jurisdiction(id, p)?;
        } else if let Some(code) = k.strip_prefix(STATE_SETTING) {
            let p: StatePolicy = serde_json::from_slice(&v)?;
            policy.set_state(code, p)?;
        }
    }
    Ok(())
}

const JURISDICTION_SETTING: &str = "policy/jurisdiction/";
const STATE_SETTING: &str = "policy/state/";

/// What the gateway serves as `MatcherService` (admin only): its in-process IDENT gallery, or
/// the shard processes behind `--ident-shards` (see [`crate::api::ShardedMatcherApi`]).
pub enum MatcherServing {
    InProcess(Arc<dyn Matcher>),
    Shards(Arc<crate::engines::remote::RemoteIdent>),
}

impl Gateway {
    /// Builds the gateway over a store and the two backends, applies persisted policy
    /// changes, starts the pipeline and resumes every unfinished submission.
    pub async fn start(
        world: WorldFile,
        store: DynStore,
        ident: Arc<dyn IdentSearch>,
        criminal: Arc<dyn CriminalHistory>,
        matcher: Option<MatcherServing>,
        options: ServeOptions,
    ) -> anyhow::Result<Arc<Gateway>> {
        let policy = Arc::new(PolicyBook::new(&world));
        let revocations = crate::auth::revocation::Revocations::default();
        let gallery = match &matcher {
            Some(MatcherServing::InProcess(m)) => Some(Arc::new(
                crate::engines::gallery_log::GalleryLog::new(m.clone()),
            )),
            Some(MatcherServing::Shards(r)) => {
                let log = Arc::new(crate::engines::gallery_log::GalleryLog::for_shards());
                r.set_log(log.clone());
                Some(log)
            }
            None => None,
        };
        if options.audit_retention.is_some() && store.archive_dir().is_none() {
            anyhow::bail!(
                "--audit-retention-days: this store does not archive the disclosure audit (only \
                 the embedded store does; see README \"Disclosure audit\"); export it with \
                 `interop admin disclosures` instead"
            );
        }
        apply_settings(&store, &policy, &revocations, gallery.as_deref()).await?;
        let core = Arc::new(Core {
            store: store.clone(),
            policy,
            ident,
            criminal,
            metrics: Arc::new(crate::metrics::Metrics::default()),
            assessor: Arc::new(crate::rules::assessment::Assessor::new(
                options.assessment_pacing,
            )),
        });
        let (shutdown_tx, shutdown) = watch::channel(false);
        let (halt_tx, halt) = watch::channel(false);
        let backlog = Arc::new(pipeline::Backlog::new(options.backlog.clone()));
        let feed = store.work_feed();
        pipeline::start(core.clone(), backlog.clone(), options.concurrency, halt);
        let gw = Arc::new(Gateway {
            core,
            world: Arc::new(world),
            backlog,
            shutdown,
            shutdown_tx,
            halt_tx,
            admin_lock: tokio::sync::Mutex::new(()),
            revocations,
            subscription_limits: crate::delivery::SubscriptionLimits::new(
                options.max_subscriptions,
                options.max_subscriptions_per_identity,
            ),
            read_rate: crate::auth::rate::ReadRate::new(options.max_reads_per_identity),
            matcher,
            gallery,
            fbi_gallery: std::sync::OnceLock::new(),
            options,
            tls: std::sync::OnceLock::new(),
            listen_stats: Arc::default(),
            shared_work: feed.is_some(),
        });
        gw.recover().await?;
        if let Some(feed) = feed {
            gw.start_work_feed(feed);
        }
        gw.start_retention();
        gw.start_assessments();
        gw.start_replica_tasks();
        Ok(gw)
    }

    /// Runs `tick` every `period` (the first after one period) until shutdown: the
    /// gateway's periodic work (retention, assessments, take-over sweeps).
    pub(super) fn every<F, Fut>(&self, period: Duration, mut tick: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(period) => {}
                }
                tick().await;
            }
        });
    }

    /// Runs the scheduled profiling review every [`ServeOptions::assessment_interval`] until
    /// shutdown.
    fn start_assessments(self: &Arc<Self>) {
        let core = self.core.clone();
        self.every(self.options.assessment_interval, move || {
            let core = core.clone();
            async move {
                if let Err(e) = core.assessor.pass(&core.store, &core.policy).await {
                    tracing::warn!(error = %e, "quarterly assessment pass failed; will retry");
                }
            }
        });
    }

    /// With a replicated store: reloads policy and revocations whenever a setting changes (at
    /// any replica). Nothing to do for the embedded store.
    fn start_replica_tasks(self: &Arc<Self>) {
        let Some(mut settings) = self.core.store.watch_settings() else {
            return;
        };
        let gw = self.clone();
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.wait_for(|s| *s) => return,
                    changed = settings.changed() => if changed.is_err() { return },
                }
                let gallery = gw.gallery.as_deref();
                match apply_settings(&gw.core.store, &gw.core.policy, &gw.revocations, gallery)
                    .await
                {
                    Ok(()) => tracing::info!("settings changed at a replica; policy reloaded"),
                    Err(e) => tracing::error!(error = %e, "reloading settings failed"),
                }
            }
        });
    }

    /// With a store whose replicas share the pending work: queues what the store hands this
    /// replica while the workers have room (twice their number waiting), and stops counting
    /// what it receipted once another replica completed it. Stops taking at shutdown: what is
    /// left goes back to the other replicas when the store closes.
    fn start_work_feed(self: &Arc<Self>, feed: crate::store::WorkFeed) {
        let crate::store::WorkFeed {
            mut take,
            mut completed,
        } = feed;
        let room = self.options.concurrency.max(1) * 2;
        let backlog = self.backlog.clone();
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.wait_for(|s| *s) => return,
                    _ = backlog.wait_room(room) => {}
                }
                let p = tokio::select! {
                    _ = shutdown.wait_for(|s| *s) => return,
                    p = take.recv() => match p {
                        Some(p) => p,
                        None => return,
                    },
                };
                backlog.push(pipeline::Entry {
                    bytes: p.bytes,
                    key: p.key,
                    accepted_ms: p.accepted_at_ms,
                    prepared: None,
                });
            }
        });
        let backlog = self.backlog.clone();
        tokio::spawn(async move {
            while let Some(key) = completed.recv().await {
                backlog.completed_elsewhere(&key);
            }
        });
        // A submission can be handed out, processed and completed (anywhere) before intake,
        // which receipted it, has parked it; then its completion came first and nothing would
        // unpark it. The oldest parked keys are checked against the store now and then.
        let gw = self.clone();
        self.every(PARKED_SWEEP_EVERY, move || {
            let gw = gw.clone();
            async move {
                let before = crate::convert::now_ms() - PARKED_SWEEP_EVERY.as_millis() as i64;
                for key in gw.backlog.parked_before(before, PARKED_SWEEP_MAX) {
                    if let Ok(Some(s)) = gw.core.store.submission(key.clone()).await
                        && s.completed
                    {
                        gw.backlog.completed_elsewhere(&key);
                    }
                }
            }
        });
    }

    /// Re-queues every receipted submission whose processing had not finished (none with a
    /// store whose replicas share the pending work: its feed hands them out).
    async fn recover(self: &Arc<Self>) -> anyhow::Result<()> {
        let pending = self.core.store.resumable().await?;
        if pending.is_empty() {
            return Ok(());
        }
        tracing::info!(count = pending.len(), "resuming unfinished submissions");
        self.enqueue(pending);
        Ok(())
    }

    /// Puts stored pending submissions in the backlog (their payloads are read back when a
    /// worker takes them).
    fn enqueue(&self, pending: Vec<crate::store::PendingKey>) {
        for p in pending {
            self.backlog.push(pipeline::Entry {
                bytes: p.bytes,
                key: p.key,
                accepted_ms: p.accepted_at_ms,
                prepared: None,
            });
        }
    }

    pub(crate) async fn persist_jurisdiction(
        &self,
        id: &str,
        p: &JurisdictionPolicy,
    ) -> Result<(), GatewayError> {
        if self.core.policy.view(id).is_none() {
            return Err(GatewayError::NotFound(format!(
                "jurisdiction_id: unknown jurisdiction {id:?}"
            )));
        }
        self.persist(format!("{JURISDICTION_SETTING}{id}"), p, || {
            self.core.policy.set_jurisdiction(id, p.clone())
        })
        .await
    }

    pub(crate) async fn persist_state(
        &self,
        code: &str,
        p: &StatePolicy,
    ) -> Result<(), GatewayError> {
        if self.core.policy.state_policy(code).is_none() {
            return Err(GatewayError::NotFound(format!(
                "state: unknown state {code:?}"
            )));
        }
        self.persist(format!("{STATE_SETTING}{code}"), p, || {
            self.core.policy.set_state(code, p.clone())
        })
        .await
    }

    /// Writes a policy setting, then applies it (checked first by the caller): a change is
    /// visible only once it is durable.
    async fn persist<T: serde::Serialize>(
        &self,
        key: String,
        value: &T,
        apply: impl FnOnce() -> Result<(), crate::rules::policy::PolicyError>,
    ) -> Result<(), GatewayError> {
        let bytes = serde_json::to_vec(value).map_err(|e| GatewayError::Internal(e.to_string()))?;
        self.core.store.put_setting(key, bytes).await?;
        apply().map_err(|e| GatewayError::NotFound(e.to_string()))
    }

    /// Revokes the client certificate `serial` for `reason`: durable first, then in force, so
    /// a revocation never disappears on restart. Revoking again keeps the first record, which
    /// is returned.
    pub(crate) async fn revoke(
        &self,
        serial: String,
        reason: String,
    ) -> Result<crate::auth::revocation::Revoked, GatewayError> {
        use crate::auth::revocation::{Revoked, SETTING_PREFIX};
        let _guard = self.admin_lock.lock().await;
        if let Some(held) = self.revocations.get(&serial) {
            return Ok(held);
        }
        let rec = Revoked {
            serial: serial.clone(),
            reason,
            revoked_at_ms: crate::convert::now_ms(),
        };
        let bytes = serde_json::to_vec(&rec).map_err(|e| GatewayError::Internal(e.to_string()))?;
        self.core
            .store
            .put_setting(format!("{SETTING_PREFIX}{serial}"), bytes)
            .await?;
        tracing::warn!(%serial, "client certificate revoked");
        Ok(self.revocations.insert(rec))
    }

    /// Re-reads the served certificate, key and client CA bundle (SIGHUP,
    /// `AdminService.ReloadCertificates`). A failed reload keeps what is served.
    pub fn reload_tls(&self) -> Result<crate::auth::tls::Loaded, GatewayError> {
        let tls = self.tls.get().ok_or_else(|| {
            GatewayError::FailedPrecondition("the gateway is not serving TLS yet".into())
        })?;
        tls.reload().map_err(|e| {
            tracing::warn!(error = %format!("{e:#}"), "TLS reload failed; keeping the current certificates");
            GatewayError::FailedPrecondition(format!(
                "certificates not reloaded, the current ones stay in use: {e:#}"
            ))
        })
    }

    /// Lets `MatcherService.Search` (admin only, and only where the gateway serves
    /// `MatcherService`) search the FBI gallery `m` too, when a request asks for it. Call before
    /// [`Gateway::serve`]; a second call is ignored.
    pub fn serve_fbi_gallery(&self, m: Arc<dyn Matcher>) {
        let _ = self.fbi_gallery.set(m);
    }

    /// Submissions waiting for a worker, and being processed.
    pub fn pipeline_depth(&self) -> (usize, usize) {
        let f = self.backlog.figures();
        (f.waiting, f.in_flight)
    }

    /// The bounds this gateway runs with.
    pub fn options(&self) -> &ServeOptions {
        &self.options
    }

    /// What TLS material is served now, once serving.
    pub fn tls_loaded(&self) -> Option<crate::auth::tls::Loaded> {
        self.tls.get().map(|t| t.loaded())
    }
}

/// Server TLS from a PKI directory: our certificate, and client certificates required and
/// verified against the CA bundle `ca.pem`. Reloadable: see [`ServerTls::reload`].
pub fn server_tls(pki: &PkiDir) -> anyhow::Result<Arc<ServerTls>> {
    server_tls_files(pki)
}

fn server_tls_files(pki: &PkiDir) -> anyhow::Result<Arc<ServerTls>> {
    let files = pki.server();
    Ok(Arc::new(ServerTls::load(TlsFiles {
        cert: files.cert,
        key: files.key,
        client_ca: pki.ca_cert(),
    })?))
}
