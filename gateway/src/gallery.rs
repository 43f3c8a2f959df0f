//! Changes made to the in-process IDENT gallery through `MatcherService` (enrolments and
//! removals), kept in the gateway's durable store so they outlive a restart and reach every
//! replica of the gateway.
//!
//! The gallery itself is loaded from the world's gallery file at start. Before, a change made
//! through `MatcherService` lived only in that gateway's memory: after a restart a removed
//! subject was back in the gallery and identified again, and other replicas of a replicated
//! gateway never removed it at all. Now each change is a setting (`ident/subject/<id>`: the
//! last change of that id, as JSON), applied over the loaded gallery at start, before any
//! search runs, and again whenever a replica changes the settings.
//!
//! A removal is written to the store **before** the subject leaves the gallery: if the write
//! fails, nothing changed; once it is written, no restart brings the subject back. An
//! enrolment is made first (the matcher decides whether it is acceptable) and then written;
//! if the write fails it is taken back out and the call fails.
//!
//! Behind `--ident-shards` the gallery is in the shard processes, which keep changes in memory
//! only: a restarted replica has a removed subject again. The gateway records those changes
//! too, keeps the set of subjects removed, and refuses a shard's answer that names one (see
//! [`crate::remote::RemoteIdent`]): it sends the removal again and the search is retried.

use crate::error::GatewayError;
use crate::services::change_gallery;
use crate::store::DynStore;
use interop_matcher::{MatchError, Matcher, Tenprint};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

/// Settings holding gallery changes: the prefix, then the subject id.
pub const SETTING_PREFIX: &str = "ident/subject/";

/// The last change made to a subject's place in the gallery.
#[derive(Debug, Serialize, Deserialize)]
enum Change {
    Removed,
    /// Enrolled with this print (replacing any print the id had).
    Enrolled(Tenprint),
}

/// The IDENT gallery's changes recorded in the store, made to the in-process gallery if there
/// is one, and the subjects removed.
pub struct GalleryLog {
    /// The in-process gallery (none behind `--ident-shards`).
    matcher: Option<Arc<dyn Matcher>>,
    /// The subjects whose last recorded change is a removal.
    removed: std::sync::RwLock<std::collections::HashSet<u64>>,
    /// Per subject: a hash of the setting last applied here, so a setting is applied once,
    /// not again each time any setting changes.
    applied: Mutex<HashMap<u64, u64>>,
}

fn digest(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

impl GalleryLog {
    pub fn new(matcher: Arc<dyn Matcher>) -> GalleryLog {
        GalleryLog {
            matcher: Some(matcher),
            removed: Default::default(),
            applied: Mutex::default(),
        }
    }

    /// The log of a gateway whose gallery is in shard processes: it keeps the record and the
    /// subjects removed, and changes no gallery itself.
    pub fn for_shards() -> GalleryLog {
        GalleryLog {
            matcher: None,
            removed: Default::default(),
            applied: Mutex::default(),
        }
    }

    /// Whether the last recorded change of `subject` removed it.
    pub fn is_removed(&self, subject: u64) -> bool {
        self.removed.read().expect("removed").contains(&subject)
    }

    fn note(&self, subject: u64, change: &Change) {
        let mut removed = self.removed.write().expect("removed");
        match change {
            Change::Removed => removed.insert(subject),
            Change::Enrolled(_) => removed.remove(&subject),
        };
    }

    /// Applies every recorded change not applied here yet, in id order (at start, before any
    /// search; and when a replica changed the settings). Returns how many it applied.
    pub fn apply(&self, settings: &BTreeMap<String, Vec<u8>>) -> anyhow::Result<usize> {
        let mut n = 0;
        for (k, v) in settings.range(SETTING_PREFIX.to_string()..) {
            let Some(id) = k.strip_prefix(SETTING_PREFIX) else {
                break;
            };
            let subject: u64 = id
                .parse()
                .map_err(|e| anyhow::anyhow!("setting {k}: {e}"))?;
            let d = digest(v);
            if self.applied.lock().expect("applied").get(&subject) == Some(&d) {
                continue;
            }
            let change: Change =
                serde_json::from_slice(v).map_err(|e| anyhow::anyhow!("setting {k}: {e}"))?;
            self.make(subject, &change)
                .map_err(|e| anyhow::anyhow!("applying setting {k}: {e}"))?;
            self.applied.lock().expect("applied").insert(subject, d);
            n += 1;
        }
        Ok(n)
    }

    /// Makes `change` in the gallery, whatever the gallery holds now: removing an id it does
    /// not hold is no error, and an enrolment replaces any print the id has.
    fn make(&self, subject: u64, change: &Change) -> Result<(), MatchError> {
        self.note(subject, change);
        let Some(m) = &self.matcher else {
            return Ok(());
        };
        match m.remove(subject) {
            Ok(()) | Err(MatchError::NotEnrolled(_)) => {}
            Err(e) => return Err(e),
        }
        match change {
            Change::Removed => Ok(()),
            Change::Enrolled(print) => m.enroll(subject, print),
        }
    }

    async fn record(
        &self,
        store: &DynStore,
        subject: u64,
        change: &Change,
    ) -> Result<(), GatewayError> {
        let bytes =
            serde_json::to_vec(change).map_err(|e| GatewayError::Internal(e.to_string()))?;
        // Marked applied before it is written: a replicated store tells this gateway of its
        // own write too, and applying it here again would race the change being made.
        let before = self
            .applied
            .lock()
            .expect("applied")
            .insert(subject, digest(&bytes));
        let written = store
            .put_setting(format!("{SETTING_PREFIX}{subject}"), bytes)
            .await;
        if let Err(e) = written {
            let mut applied = self.applied.lock().expect("applied");
            match before {
                Some(d) => applied.insert(subject, d),
                None => applied.remove(&subject),
            };
            return Err(e.into());
        }
        self.note(subject, change);
        Ok(())
    }

    /// Removes `subject`, recorded first: the gallery's size after. NOT_FOUND if it was not
    /// enrolled (the record, that it is not, stands).
    pub async fn remove(&self, store: &DynStore, subject: u64) -> Result<usize, GatewayError> {
        self.record(store, subject, &Change::Removed).await?;
        change_gallery(self.in_process()?, move |m| m.remove(subject)).await
    }

    fn in_process(&self) -> Result<&Arc<dyn Matcher>, GatewayError> {
        self.matcher
            .as_ref()
            .ok_or_else(|| GatewayError::Internal("no in-process gallery".into()))
    }

    /// Records the removal of `subject` from the shards (before it is sent to them).
    pub async fn record_removal(&self, store: &DynStore, subject: u64) -> Result<(), GatewayError> {
        self.record(store, subject, &Change::Removed).await
    }

    /// Records the enrolment of `subject` in the shards (once they have it).
    pub async fn record_enrolment(
        &self,
        store: &DynStore,
        subject: u64,
        print: Tenprint,
    ) -> Result<(), GatewayError> {
        self.record(store, subject, &Change::Enrolled(print)).await
    }

    /// Enrols `subject`, then records it; if the record cannot be written the enrolment is
    /// taken back and the call fails. The gallery's size after.
    pub async fn enroll(
        &self,
        store: &DynStore,
        subject: u64,
        print: Tenprint,
    ) -> Result<usize, GatewayError> {
        let m = self.in_process()?;
        let p = print.clone();
        let size = change_gallery(m, move |m| m.enroll(subject, &p)).await?;
        if let Err(e) = self.record(store, subject, &Change::Enrolled(print)).await {
            let _ = m.remove(subject);
            return Err(e);
        }
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use interop_matcher::ExhaustiveMatcher;
    use interop_matcher::synth::{CaptureModel, capture, master_tenprint};

    fn print(person: u64, n: u64) -> Tenprint {
        capture(&master_tenprint(3, person), &CaptureModel::default(), n)
    }

    fn setting(subject: u64, change: &Change) -> (String, Vec<u8>) {
        (
            format!("{SETTING_PREFIX}{subject}"),
            serde_json::to_vec(change).unwrap(),
        )
    }

    /// Recorded changes are made over whatever the gallery holds (an enrolment replaces the
    /// id's print; removing an id it lacks is no error), each once: applying the same
    /// settings again changes nothing. Other settings are not its business.
    #[test]
    fn recorded_changes_are_applied_over_the_gallery_once() {
        let m = Arc::new(ExhaustiveMatcher::new(2));
        for p in 1..=20 {
            m.enroll(p, &print(p, 0)).unwrap();
        }
        let log = GalleryLog::new(m.clone());
        let settings: BTreeMap<String, Vec<u8>> = [
            setting(5, &Change::Enrolled(print(500, 0))),
            setting(6, &Change::Removed),
            setting(99, &Change::Removed),
            ("policy/state/TX".to_string(), b"{}".to_vec()),
        ]
        .into_iter()
        .collect();
        assert_eq!(log.apply(&settings).unwrap(), 3);
        assert_eq!(m.len(), 19);
        let top = |p: u64| m.search(&print(p, 7), 1).unwrap().candidates[0].subject;
        assert_eq!(top(500), 5, "the recorded print replaced the old one");
        assert_ne!(top(6), 6, "a removed subject was found");
        assert_eq!(log.apply(&settings).unwrap(), 0);
        assert_eq!(m.len(), 19);

        let bad: BTreeMap<String, Vec<u8>> =
            [(format!("{SETTING_PREFIX}x"), b"\"Removed\"".to_vec())].into();
        let e = log.apply(&bad).unwrap_err().to_string();
        assert!(e.contains("ident/subject/x"), "{e}");
    }
}
