//! A gateway from its settings, as `interop-gateway serve` runs one: open the store, load the
//! engines (both galleries in process, or the FBI gallery here and IDENT in shard processes),
//! calibrate IDENT's threshold if asked, start the [`Gateway`], and serve it with `/metrics`
//! beside it until the shutdown signal. SIGHUP re-reads the TLS certificates.
//!
//! The command line only turns flags into a [`Launch`]; everything here is library code, so a
//! program that embeds the gateway (the simulator's `cluster`) runs the same thing.

use super::{Gateway, MatcherServing, ServeOptions, server_tls};
use crate::auth::pki::PkiDir;
use crate::engines::remote::RemoteIdent;
use crate::engines::{self, CriminalHistory, GalleryBackend, IdentSearch, InProcess};
use crate::store::{self, DynStore};
use crate::world::{self, CriminalRecord, WorldFile};
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Everything a gateway process is started with (the flags of `interop-gateway serve`).
#[derive(Clone, Debug)]
pub struct Launch {
    pub listen: SocketAddr,
    /// PKI directory (the gateway's own certificate and key, the client CA bundle; no CA key).
    pub pki: PathBuf,
    /// Serve even though the PKI directory holds the CA's key (a development setup).
    pub allow_ca_key: bool,
    /// World directory (from `state-bureau-sim generate`).
    pub world: PathBuf,
    /// Data directory of the embedded store (required with it).
    pub data: Option<PathBuf>,
    /// `embedded`, or a NATS JetStream log shared by replicas (`nats://…`, `tls://…`).
    pub store: String,
    /// This gateway's name among replicas of a shared store.
    pub replica_id: Option<String>,
    /// The store's page cache, in bytes (see `--store-cache-mib`).
    pub store_cache_bytes: usize,
    /// Matcher shards per in-process gallery.
    pub shards: usize,
    /// Where to serve `/metrics` (plain HTTP); `None` serves none.
    pub metrics_listen: Option<SocketAddr>,
    /// IDENT as shard processes: shards comma-separated, replicas of one `|`-separated.
    pub ident_shards: Option<String>,
    /// How long a matcher search may take (see `--search-deadline-ms`).
    pub search_deadline: Duration,
    /// How the in-process galleries' hit/no-hit thresholds are set at start (IDENT's shard
    /// processes set their own).
    pub threshold: engines::ThresholdRule,
    pub options: ServeOptions,
}

/// Runs the gateway `l` describes until `shutdown` completes.
pub async fn run(
    l: Launch,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let world_file: WorldFile = world::read_json(&l.world, world::WORLD_FILE)?;
    let pki = PkiDir(l.pki.clone());
    pki.refuse_ca_key(l.allow_ca_key)?;
    let tls = server_tls(&pki)?;
    let store = open_store(&l).await?;
    tracing::info!(world = %l.world.display(), "loading galleries");
    let (ident, criminal, matcher, fbi) = load_engines(&l, &pki).await?;
    let gw = Gateway::start(
        world_file,
        store,
        ident,
        criminal,
        matcher,
        l.options.clone(),
    )
    .await?;
    gw.serve_fbi_gallery(fbi);
    let listener = tokio::net::TcpListener::bind(l.listen)
        .await
        .with_context(|| format!("binding {}", l.listen))?;
    // One signal, two servers.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // SIGHUP re-reads the server certificate, key and client CA bundle.
    #[cfg(unix)]
    {
        let gw = Arc::clone(&gw);
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                // Success and failure are both logged by reload_tls.
                let _ = gw.reload_tls();
            }
        });
    }
    if let Some(addr) = l.metrics_listen {
        let ml = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding --metrics-listen {addr}"))?;
        tokio::spawn(Arc::clone(&gw).serve_metrics(ml, stopped(stop_rx.clone())));
    }
    gw.serve(listener, tls, stopped(stop_rx)).await
}

async fn open_store(l: &Launch) -> anyhow::Result<DynStore> {
    match (l.store.as_str(), &l.data) {
        ("embedded", None) => anyhow::bail!("--data is required with the embedded store"),
        ("embedded", Some(data)) => store::open_spec("embedded", data, None, l.store_cache_bytes)
            .await
            .context("opening the data directory"),
        (spec, data) => {
            let dir = data.clone().unwrap_or_default();
            store::open_spec(spec, &dir, l.replica_id.clone(), l.store_cache_bytes)
                .await
                .context("opening the store")
        }
    }
}

/// IDENT, the FBI check, what `MatcherService` serves, and the FBI gallery's matcher.
type Engines = (
    Arc<dyn IdentSearch>,
    Arc<dyn CriminalHistory>,
    Option<MatcherServing>,
    Arc<dyn interop_matcher::Matcher>,
);

/// Both galleries in process, or IDENT over shard processes and the FBI gallery in process.
async fn load_engines(l: &Launch, pki: &PkiDir) -> anyhow::Result<Engines> {
    let (dir, shards, deadline, rule) = (l.world.clone(), l.shards, l.search_deadline, l.threshold);
    match &l.ident_shards {
        None => {
            let b = tokio::task::spawn_blocking(move || {
                let b = InProcess::load_with(&dir, shards, deadline, rule)?;
                b.ident.log_deadline_fit("IDENT")?;
                b.criminal.log_deadline_fit("FBI")?;
                anyhow::Ok(b)
            })
            .await??;
            let (m, fbi) = (b.ident.matcher(), b.criminal.matcher());
            Ok((b.ident, b.criminal, Some(MatcherServing::InProcess(m)), fbi))
        }
        Some(spec) => {
            let remote = Arc::new(RemoteIdent::new(spec, pki, &l.world, deadline)?);
            tracing::info!(shards = %spec, "IDENT searches go to matcher shard processes");
            let criminal = tokio::task::spawn_blocking(move || {
                let b = GalleryBackend::<CriminalRecord>::load(
                    &dir,
                    world::FBI_GALLERY_FILE,
                    world::FBI_RECORDS_FILE,
                    shards,
                )?
                .with_deadline(deadline);
                b.log_deadline_fit("FBI")?;
                anyhow::Ok(b)
            })
            .await??;
            let fbi = criminal.matcher();
            let m = fbi.clone();
            tokio::task::spawn_blocking(move || rule.apply(m.as_ref(), "FBI")).await??;
            Ok((
                remote.clone(),
                Arc::new(criminal),
                Some(MatcherServing::Shards(remote)),
                fbi,
            ))
        }
    }
}
