//! The embedded default: a gallery searched in process ([`GalleryBackend`]), over the
//! world's gallery file and records, as IDENT and as the FBI stub ([`InProcess`] loads both).
//!
//! Matching is CPU-bound: it runs on the search threads both galleries share, which take
//! searches bureau by bureau ([`super::slots`]). A search has a deadline
//! ([`DEFAULT_SEARCH_DEADLINE`] unless set), counted from when it is asked for, so the wait
//! for a core counts too: a search past it gives up (it never answers "no hit" for a search it
//! did not finish) and the submission is retried later, like any engine failure.

use super::slots::{SearchSlots, current_lane};
use super::{BackendError, CriminalHistory, IdentHit, IdentSearch};
use crate::world::{self, CriminalRecord, ImmigrationRecord, Records};
use interop_matcher::{Matcher, SearchResult, Tenprint};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long an in-process search may take, waiting for a core included, unless set with
/// [`GalleryBackend::with_deadline`] (`interop-gateway serve --search-deadline-ms`). A search
/// of 1,000,000 identities takes about 0.1 s on two cores (BENCHMARKS.md).
pub const DEFAULT_SEARCH_DEADLINE: Duration = Duration::from_secs(5);

/// A gallery searched in-process, with the records of its subjects.
pub struct GalleryBackend<R> {
    matcher: Arc<dyn Matcher>,
    records: Arc<Records<R>>,
    /// Where a search waits for a core: shared with the other gallery (see [`InProcess`]).
    slots: Arc<SearchSlots>,
    deadline: Duration,
    /// One of the gallery's own prints (see [`GalleryBackend::deadline_fit`]), when loaded
    /// from a file.
    sample: Option<Tenprint>,
}

/// How long a search of a gallery took beside the search deadline (see
/// [`GalleryBackend::deadline_fit`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeadlineFit {
    pub search: Duration,
    pub deadline: Duration,
}

impl DeadlineFit {
    /// Whether a search leaves less than half the deadline: on a busier machine, or waiting
    /// for a core, searches would miss it, and a search that misses its deadline is retried
    /// (never answered as a no-hit), so submissions would wait until it is raised.
    pub fn too_tight(&self) -> bool {
        self.search * 2 > self.deadline
    }
}

impl<R: Clone + Send + Sync + 'static> GalleryBackend<R> {
    /// A backend with search threads of its own (see [`GalleryBackend::with_slots`]).
    pub fn new(matcher: Arc<dyn Matcher>, records: Records<R>) -> Self {
        GalleryBackend {
            matcher,
            records: Arc::new(records),
            slots: Arc::new(SearchSlots::per_core()),
            deadline: DEFAULT_SEARCH_DEADLINE,
            sample: None,
        }
    }

    /// Times a search of the gallery's own sample print, if it has one, and logs how it
    /// compares with the deadline: a warning naming the option if it leaves a search of
    /// `gallery` less than half of it (see [`DeadlineFit::too_tight`]).
    pub fn log_deadline_fit(&self, gallery: &str) -> Result<(), BackendError> {
        let Some(p) = &self.sample else {
            return Ok(());
        };
        let fit = self.deadline_fit(p)?;
        let (search_ms, deadline_ms) = (fit.search.as_millis(), fit.deadline.as_millis());
        if fit.too_tight() {
            tracing::warn!(
                gallery,
                search_ms,
                deadline_ms,
                "a search of the {gallery} gallery takes over half of --search-deadline-ms: \
                 searches that miss it are retried, so submissions may wait until it is raised"
            );
        } else {
            tracing::info!(
                gallery,
                search_ms,
                deadline_ms,
                "search time within the deadline"
            );
        }
        Ok(())
    }

    /// Times a search of `probe` (the median of three, no deadline) beside the search
    /// deadline: at start-up, so that a deadline no search can meet is seen at once rather
    /// than as submissions retried without end.
    pub fn deadline_fit(&self, probe: &Tenprint) -> Result<DeadlineFit, BackendError> {
        let mut times = Vec::with_capacity(3);
        for _ in 0..3 {
            let t = Instant::now();
            self.matcher
                .search(probe, 1)
                .map_err(|e| BackendError::Matcher(e.to_string()))?;
            times.push(t.elapsed());
        }
        times.sort_unstable();
        Ok(DeadlineFit {
            search: times[1],
            deadline: self.deadline,
        })
    }

    /// The same backend with searches given `deadline` instead of [`DEFAULT_SEARCH_DEADLINE`].
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The same backend with its searches run by `slots`, shared with other backends so that
    /// all of them together run as many searches at once as it has threads.
    pub fn with_slots(mut self, slots: Arc<SearchSlots>) -> Self {
        self.slots = slots;
        self
    }

    /// Loads a gallery file and its records from a world directory: the gallery from its
    /// index snapshot, or built and saved as one (see [`super::index`]), while the records are
    /// read beside it. Every subject must have a record.
    pub fn load(dir: &Path, gallery: &str, records: &str, shards: usize) -> anyhow::Result<Self>
    where
        R: serde::de::DeserializeOwned + Send,
    {
        let (loaded, recs) = std::thread::scope(|s| {
            let recs = s.spawn(|| world::read_json::<Records<R>>(dir, records));
            let loaded = super::index::load_gallery(dir, gallery, shards, None);
            (loaded, recs.join().expect("records reader"))
        });
        let (loaded, recs) = (loaded?, recs?);
        let mut missing = loaded
            .matcher
            .subjects()
            .into_iter()
            .filter(|s| !recs.contains_key(s));
        if let Some(subject) = missing.next() {
            anyhow::bail!(
                "{gallery}: subject {subject} has no record in {records} (and {} more)",
                missing.count()
            );
        }
        Ok(GalleryBackend {
            sample: loaded.sample,
            ..Self::new(Arc::new(loaded.matcher), recs)
        })
    }

    pub fn matcher(&self) -> Arc<dyn Matcher> {
        self.matcher.clone()
    }

    async fn identify(&self, prints: Tenprint) -> Result<Option<(f32, R)>, BackendError> {
        let deadline = Instant::now() + self.deadline;
        let matcher = self.matcher.clone();
        let started = Arc::new(AtomicBool::new(false));
        let search = self.slots.run(current_lane(), started.clone(), move || {
            matcher.search_before(&prints, 1, Some(deadline))
        });
        // The search itself stops at the deadline (the matcher checks it as it goes); this
        // stops the wait for a thread, and a search not started by then is skipped.
        let result: SearchResult = tokio::time::timeout_at(deadline.into(), search)
            .await
            .map_err(|_| {
                BackendError::Unavailable(if started.load(Ordering::Acquire) {
                    format!(
                        "the search ran past its deadline of {} ms",
                        self.deadline.as_millis()
                    )
                } else {
                    format!(
                        "no core free within the search deadline of {} ms",
                        self.deadline.as_millis()
                    )
                })
            })?
            .map_err(|e| BackendError::Unavailable(e.to_string()))?
            .map_err(|e| BackendError::Matcher(e.to_string()))?;
        Ok(result
            .hit
            .and_then(|c| self.records.get(&c.subject).map(|r| (c.score, r.clone()))))
    }
}

#[async_trait::async_trait]
impl IdentSearch for GalleryBackend<ImmigrationRecord> {
    async fn search(&self, prints: Tenprint) -> Result<Option<IdentHit>, BackendError> {
        Ok(self
            .identify(prints)
            .await?
            .map(|(score, record)| IdentHit { score, record }))
    }

    fn search_slots(&self) -> Option<Arc<SearchSlots>> {
        Some(self.slots.clone())
    }
}

#[async_trait::async_trait]
impl CriminalHistory for GalleryBackend<CriminalRecord> {
    async fn check(&self, prints: Tenprint) -> Result<Option<CriminalRecord>, BackendError> {
        Ok(self.identify(prints).await?.map(|(_, r)| r))
    }

    fn search_slots(&self) -> Option<Arc<SearchSlots>> {
        Some(self.slots.clone())
    }
}

/// The embedded default: both galleries of a world directory, loaded side by side.
pub struct InProcess {
    pub ident: Arc<GalleryBackend<ImmigrationRecord>>,
    pub criminal: Arc<GalleryBackend<CriminalRecord>>,
}

impl InProcess {
    /// Both galleries, searched with [`DEFAULT_SEARCH_DEADLINE`], their thresholds
    /// calibrated for the default FPIR ([`super::ThresholdRule::default`]).
    pub fn load(dir: &Path, shards: usize) -> anyhow::Result<Self> {
        Self::load_with(
            dir,
            shards,
            DEFAULT_SEARCH_DEADLINE,
            super::ThresholdRule::default(),
        )
    }

    /// Both galleries, each search given `deadline`, each gallery's hit/no-hit threshold set
    /// by `threshold` once it is loaded.
    pub fn load_with(
        dir: &Path,
        shards: usize,
        deadline: Duration,
        threshold: super::ThresholdRule,
    ) -> anyhow::Result<Self> {
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
        let (ident, criminal) = (ident?, criminal?);
        // One after the other: each calibration's searches spread over every core.
        threshold.apply(ident.matcher().as_ref(), "IDENT")?;
        threshold.apply(criminal.matcher().as_ref(), "FBI")?;
        // One set of search threads for both galleries (see [`super::slots`]).
        let slots = Arc::new(SearchSlots::per_core());
        Ok(InProcess {
            ident: Arc::new(ident.with_deadline(deadline).with_slots(slots.clone())),
            criminal: Arc::new(criminal.with_deadline(deadline).with_slots(slots)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use interop_matcher::synth::{CaptureModel, capture, master_tenprint};
    use std::collections::BTreeMap;

    /// A gallery of `n` people whose record is their own id, and a fresh capture of person 3.
    fn gallery(n: u64) -> (GalleryBackend<u64>, Tenprint) {
        let model = CaptureModel::default();
        let matcher = interop_matcher::IndexedMatcher::new(2);
        let mut records = BTreeMap::new();
        for p in 1..=n {
            matcher
                .enroll(p, &capture(&master_tenprint(5, p), &model, p))
                .expect("enrol");
            records.insert(p, p);
        }
        let probe = capture(&master_tenprint(5, 3), &model, 1_000 + 3);
        (GalleryBackend::new(Arc::new(matcher), records), probe)
    }

    #[tokio::test]
    async fn a_search_within_its_deadline_identifies() {
        let (b, probe) = gallery(40);
        let b = b.with_deadline(Duration::from_secs(60));
        let (_, record) = b.identify(probe).await.unwrap().expect("a hit");
        assert_eq!(record, 3);
    }

    /// A search past its deadline fails — so the pipeline retries it — and is never a no-hit.
    #[tokio::test]
    async fn a_search_past_its_deadline_is_an_error_not_a_no_hit() {
        let (b, probe) = gallery(40);
        let b = b.with_deadline(Duration::ZERO);
        let e = b.identify(probe).await.unwrap_err();
        assert!(e.to_string().contains("deadline"), "{e}");
    }

    /// A deadline under twice a search's time is reported as too tight, one well over it not.
    #[test]
    fn a_deadline_a_search_cannot_meet_is_seen_at_start_up() {
        let (b, probe) = gallery(40);
        let fit = b.deadline_fit(&probe).unwrap();
        assert!(!fit.too_tight(), "{fit:?}");
        assert_eq!(fit.deadline, DEFAULT_SEARCH_DEADLINE);
        let b = b.with_deadline(Duration::ZERO);
        let fit = b.deadline_fit(&probe).unwrap();
        assert!(fit.too_tight(), "{fit:?}");
        // A search slower than half the deadline: too tight, though it would still finish.
        let fit = DeadlineFit {
            search: Duration::from_millis(60),
            deadline: Duration::from_millis(100),
        };
        assert!(fit.too_tight());
    }

    /// The wait for a core counts: with every core busy — here with the other gallery's
    /// search, as both share their slots — a search gives up at its deadline; once the core
    /// is free it runs.
    #[tokio::test]
    async fn waiting_for_a_core_counts_against_the_deadline() {
        let slots = Arc::new(SearchSlots::new(1));
        let (b, probe) = gallery(10);
        let b = b
            .with_deadline(Duration::from_millis(50))
            .with_slots(slots.clone());
        let (release, held) = std::sync::mpsc::channel::<()>();
        let s = slots.clone();
        let other_gallery = tokio::spawn(async move {
            s.run("CA".into(), Default::default(), move || held.recv())
                .await
                .unwrap()
        });
        while slots.figures().queued_and_running() != (0, 1) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let e = b.identify(probe.clone()).await.unwrap_err();
        assert!(e.to_string().contains("no core free"), "{e}");
        release.send(()).unwrap();
        other_gallery.await.unwrap().unwrap();
        let (_, record) = b.identify(probe).await.unwrap().expect("a hit");
        assert_eq!(record, 3);
        // Nothing left queued: the search that gave up was skipped. (Its thread counts itself
        // idle just after sending the last answer, so that part is waited for.)
        assert_eq!(
            slots.figures().waiting,
            0,
            "the search that gave up was skipped"
        );
        for _ in 0..2000 {
            if slots.figures().running == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(slots.figures().queued_and_running(), (0, 0));
    }

    /// A gallery whose subjects are not all in the records is refused at load, naming one.
    #[test]
    fn a_subject_without_a_record_is_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let model = CaptureModel::default();
        let prints: Vec<(u64, Tenprint)> = (1..=12)
            .map(|p| (p, capture(&master_tenprint(8, p), &model, p)))
            .collect();
        interop_matcher::gallery::write_gallery(&dir.path().join("g.bin"), &prints).unwrap();
        let mut records: BTreeMap<u64, u64> = (1..=12).map(|p| (p, p)).collect();
        world::write_json(dir.path(), "r.json", &records).unwrap();
        let loaded = GalleryBackend::<u64>::load(dir.path(), "g.bin", "r.json", 2).unwrap();
        assert_eq!(loaded.matcher().len(), 12);
        records.remove(&7);
        records.remove(&9);
        world::write_json(dir.path(), "r.json", &records).unwrap();
        let e = GalleryBackend::<u64>::load(dir.path(), "g.bin", "r.json", 2)
            .err()
            .expect("a gallery with unrecorded subjects is refused")
            .to_string();
        assert!(
            e.contains("g.bin: subject") && e.contains("has no record in r.json (and 1 more)"),
            "{e}"
        );
    }
}
