//! The two systems the pipeline consults, behind traits so the embedded default (in-process,
//! over the world's galleries) and a remote one (gRPC client; planned) are interchangeable:
//! - [`IdentSearch`]: DHS IDENT's 1:N biometric search, returning the immigration record of
//!   the person the prints belong to.
//! - [`CriminalHistory`]: the FBI criminal-history check (a stub of IAFIS/NGI), returning the
//!   rap sheet of the person the prints belong to.
//!
//! Both identify from the prints alone. Matching is CPU-bound: it runs on the blocking pool,
//! with at most one search per core in flight so searches do not thrash each other.

use crate::world::{self, CriminalRecord, ImmigrationRecord, Records};
use interop_matcher::{ExhaustiveMatcher, Matcher, SearchResult, Tenprint};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("matcher: {0}")]
    Matcher(String),
    #[error("backend unavailable: {0}")]
    Unavailable(String),
}

/// An IDENT hit: the matched person's FIN, score and immigration record.
#[derive(Clone, Debug, PartialEq)]
pub struct IdentHit {
    pub score: f32,
    pub record: ImmigrationRecord,
}

#[tonic::async_trait]
pub trait IdentSearch: Send + Sync + 'static {
    /// `Ok(None)` is a completed search with no hit; an incomplete search is an error.
    async fn search(&self, prints: Tenprint) -> Result<Option<IdentHit>, BackendError>;
}

#[tonic::async_trait]
pub trait CriminalHistory: Send + Sync + 'static {
    /// The rap sheet of the person, if the prints match one.
    async fn check(&self, prints: Tenprint) -> Result<Option<CriminalRecord>, BackendError>;
}

/// A gallery searched in-process, with the records of its subjects.
pub struct GalleryBackend<R> {
    matcher: Arc<dyn Matcher>,
    records: Arc<Records<R>>,
    permits: Arc<Semaphore>,
}

impl<R: Clone + Send + Sync + 'static> GalleryBackend<R> {
    pub fn new(matcher: Arc<dyn Matcher>, records: Records<R>) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        GalleryBackend {
            matcher,
            records: Arc::new(records),
            permits: Arc::new(Semaphore::new(cores)),
        }
    }

    /// Loads a gallery file and its records from a world directory and enrols them.
    pub fn load(dir: &Path, gallery: &str, records: &str, shards: usize) -> anyhow::Result<Self>
    where
        R: serde::de::DeserializeOwned,
    {
        let entries = interop_matcher::gallery::read_gallery(&dir.join(gallery))
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(gallery).display()))?;
        let recs: Records<R> = world::read_json(dir, records)?;
        let matcher = ExhaustiveMatcher::new(shards);
        for (subject, _) in &entries {
            anyhow::ensure!(
                recs.contains_key(subject),
                "{gallery}: subject {subject} has no record in {records}"
            );
        }
        // A bulk load: prepared on every core, then the last enrolments folded into the
        // compressed index.
        matcher
            .enroll_many(&entries)
            .map_err(|e| anyhow::anyhow!("{gallery}: {e}"))?;
        matcher.compact();
        Ok(Self::new(Arc::new(matcher), recs))
    }

    pub fn matcher(&self) -> Arc<dyn Matcher> {
        self.matcher.clone()
    }

    async fn identify(&self, prints: Tenprint) -> Result<Option<(f32, R)>, BackendError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| BackendError::Unavailable("shutting down".into()))?;
        let matcher = self.matcher.clone();
        let result: SearchResult = tokio::task::spawn_blocking(move || matcher.search(&prints, 1))
            .await
            .map_err(|e| BackendError::Unavailable(e.to_string()))?
            .map_err(|e| BackendError::Matcher(e.to_string()))?;
        Ok(result
            .hit
            .and_then(|c| self.records.get(&c.subject).map(|r| (c.score, r.clone()))))
    }
}

#[tonic::async_trait]
impl IdentSearch for GalleryBackend<ImmigrationRecord> {
    async fn search(&self, prints: Tenprint) -> Result<Option<IdentHit>, BackendError> {
        Ok(self
            .identify(prints)
            .await?
            .map(|(score, record)| IdentHit { score, record }))
    }
}

#[tonic::async_trait]
impl CriminalHistory for GalleryBackend<CriminalRecord> {
    async fn check(&self, prints: Tenprint) -> Result<Option<CriminalRecord>, BackendError> {
        Ok(self.identify(prints).await?.map(|(_, r)| r))
    }
}

/// The embedded default: both galleries of a world directory, loaded side by side.
pub struct InProcess {
    pub ident: Arc<GalleryBackend<ImmigrationRecord>>,
    pub criminal: Arc<GalleryBackend<CriminalRecord>>,
}

impl InProcess {
    pub fn load(dir: &Path, shards: usize) -> anyhow::Result<Self> {
        let (ident, criminal) = std::thread::scope(|s| {
            let i = s.spawn(|| {
                GalleryBackend::load(
                    dir,
                    world::IDENT_GALLERY_FILE,
                    world::IDENT_RECORDS_FILE,
                    shards,
                )
            });
            let c = s.spawn(|| {
                GalleryBackend::load(
                    dir,
                    world::FBI_GALLERY_FILE,
                    world::FBI_RECORDS_FILE,
                    shards,
                )
            });
            (
                i.join().expect("loader thread"),
                c.join().expect("loader thread"),
            )
        });
        Ok(InProcess {
            ident: Arc::new(ident?),
            criminal: Arc::new(criminal?),
        })
    }
}
