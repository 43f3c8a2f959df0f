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
//! only: a restarted replica has its world gallery again. The gateway records those changes
//! too and lists them to the shards (`MatcherService.ListChanges`): a shard following the
//! gateway (`interop-matcher serve --gateway`) applies them before it serves and then every
//! few seconds (see [`crate::engines::shard::follow_gallery`]), so a replica that restarted, or could
//! not be reached when a change was made, catches up by itself. Until it has, a removed
//! subject is still never identified: the gateway keeps the set of subjects removed and
//! refuses a shard's answer that names one (see [`crate::engines::remote::RemoteIdent`]), sending the
//! removal again; the search is retried.

use crate::engines::shard::Shard;
use crate::error::GatewayError;
use crate::store::DynStore;
use interop_matcher::{MatchError, Matcher, Tenprint};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, RwLock};

/// Settings holding gallery changes: the prefix, then the subject id.
pub const SETTING_PREFIX: &str = "ident/subject/";

/// The last change made to a subject's place in the gallery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
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
    /// Per subject, its last change recorded in the store (written here or applied from it)
    /// and that change's hash: what [`GalleryLog::list`] gives the shards.
    recorded: RwLock<BTreeMap<u64, (u64, Arc<Change>)>>,
}

/// One page of a shard's recorded changes (see [`GalleryLog::list`]).
pub struct Listing {
    /// A digest of every change of the shard's subjects: it differs once any changes.
    pub version: u64,
    /// The changes are still those of the version the caller knew: none are listed.
    pub unchanged: bool,
    pub changes: Vec<(u64, Arc<Change>)>,
    /// Another page follows, after the last subject of this one.
    pub more: bool,
}

/// The most changes in one page of [`GalleryLog::list`]: a tenprint is a few KB in a
/// message, and some prints are large (up to 10 fingers of 255 minutiae).
pub const MAX_PAGE: usize = 32;

fn digest(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// The digest of `change` as recorded (its setting's bytes).
fn digest_of(change: &Change) -> u64 {
    digest(&encode(change))
}

/// How a change is written (after this tag: a byte no JSON text starts with, then the form's
/// version): `postcard`, a print in ~8 bytes a minutia. Every replica reads every gallery
/// setting whenever any setting changes, so their size matters: a print of 401 minutiae is
/// 2,982 bytes so, and was 26,412 as JSON (each minutia's field names spelled out).
const COMPACT: [u8; 2] = [0xFF, 1];

/// A change as its setting's bytes: a tag (0xFF, then the form's version, 1), then `postcard`.
pub fn encode(change: &Change) -> Vec<u8> {
    let mut out = COMPACT.to_vec();
    out.extend(postcard::to_stdvec(change).expect("a change serialises"));
    out
}

/// A change from its setting's bytes: the compact form, or JSON (what gateways before it
/// wrote, read as they wrote it).
pub fn decode(bytes: &[u8]) -> Result<Change, String> {
    match bytes {
        [0xFF, 1, rest @ ..] => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        [0xFF, v, ..] => Err(format!(
            "written in form {v}, which this gateway does not know (it reads form 1 and JSON): a newer gateway wrote it"
        )),
        _ => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
    }
}

impl GalleryLog {
    pub fn new(matcher: Arc<dyn Matcher>) -> GalleryLog {
        GalleryLog {
            matcher: Some(matcher),
            removed: Default::default(),
            applied: Mutex::default(),
            recorded: RwLock::default(),
        }
    }

    /// The log of a gateway whose gallery is in shard processes: it keeps the record and the
    /// subjects removed, and changes no gallery itself.
    pub fn for_shards() -> GalleryLog {
        GalleryLog {
            matcher: None,
            removed: Default::default(),
            applied: Mutex::default(),
            recorded: RwLock::default(),
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
            let change = decode(v).map_err(|e| anyhow::anyhow!("setting {k}: {e}"))?;
            self.make(subject, &change)
                .map_err(|e| anyhow::anyhow!("applying setting {k}: {e}"))?;
            self.applied.lock().expect("applied").insert(subject, d);
            self.recorded
                .write()
                .expect("recorded")
                .insert(subject, (d, Arc::new(change)));
            n += 1;
        }
        Ok(n)
    }

    /// At a shard process: makes `change` of `subject`, read from the gateway's record, unless
    /// it is the change last made here (received directly, or read before). Whether it made it.
    pub fn apply_from_gateway(&self, subject: u64, change: &Change) -> Result<bool, MatchError> {
        let d = digest_of(change);
        if self.applied.lock().expect("applied").get(&subject) == Some(&d) {
            return Ok(false);
        }
        self.make(subject, change)?;
        self.applied.lock().expect("applied").insert(subject, d);
        Ok(true)
    }

    /// The recorded changes of the subjects `shard` holds, in id order: a page of at most
    /// `limit` (1..=[`MAX_PAGE`]) after the subject `after`; none, `unchanged`, if their version
    /// is still `known`.
    pub fn list(&self, shard: Shard, after: Option<u64>, limit: usize, known: u64) -> Listing {
        let recorded = self.recorded.read().expect("recorded");
        let mine = || recorded.iter().filter(|(s, _)| shard.holds(**s));
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for (s, (d, _)) in mine() {
            (s, d).hash(&mut h);
        }
        let version = h.finish();
        if version == known {
            return Listing {
                version,
                unchanged: true,
                changes: vec![],
                more: false,
            };
        }
        let limit = limit.clamp(1, MAX_PAGE);
        let mut changes: Vec<(u64, Arc<Change>)> = mine()
            .filter(|(s, _)| after.is_none_or(|a| **s > a))
            .take(limit + 1)
            .map(|(s, (_, c))| (*s, c.clone()))
            .collect();
        let more = changes.len() > limit;
        changes.truncate(limit);
        Listing {
            version,
            unchanged: false,
            changes,
            more,
        }
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

    /// Records `change` in `store` (at a gateway), or only notes it as made here (at a shard
    /// process, which has no store: `None`).
    async fn record(
        &self,
        store: Option<&DynStore>,
        subject: u64,
        change: Change,
    ) -> Result<(), GatewayError> {
        let bytes = encode(&change);
        let d = digest(&bytes);
        // Marked applied before it is written: a replicated store tells this gateway of its
        // own write too, and applying it here again would race the change being made.
        let before = self.applied.lock().expect("applied").insert(subject, d);
        let Some(store) = store else {
            self.note(subject, &change);
            return Ok(());
        };
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
        self.note(subject, &change);
        self.recorded
            .write()
            .expect("recorded")
            .insert(subject, (d, Arc::new(change)));
        Ok(())
    }

    /// Removes `subject`, recorded first: the gallery's size after. NOT_FOUND if it was not
    /// enrolled (the record, that it is not, stands).
    pub async fn remove(
        &self,
        store: Option<&DynStore>,
        subject: u64,
    ) -> Result<usize, GatewayError> {
        self.record(store, subject, Change::Removed).await?;
        change_gallery(self.in_process()?, move |m| m.remove(subject)).await
    }

    fn in_process(&self) -> Result<&Arc<dyn Matcher>, GatewayError> {
        self.matcher
            .as_ref()
            .ok_or_else(|| GatewayError::Internal("no in-process gallery".into()))
    }

    /// Records the removal of `subject` from the shards (before it is sent to them).
    pub async fn record_removal(&self, store: &DynStore, subject: u64) -> Result<(), GatewayError> {
        self.record(Some(store), subject, Change::Removed).await
    }

    /// Records the enrolment of `subject` in the shards (once they have it).
    pub async fn record_enrolment(
        &self,
        store: &DynStore,
        subject: u64,
        print: Tenprint,
    ) -> Result<(), GatewayError> {
        self.record(Some(store), subject, Change::Enrolled(print))
            .await
    }

    /// Enrols `subject`, then records it; if the record cannot be written the enrolment is
    /// taken back and the call fails. The gallery's size after.
    pub async fn enroll(
        &self,
        store: Option<&DynStore>,
        subject: u64,
        print: Tenprint,
    ) -> Result<usize, GatewayError> {
        let m = self.in_process()?;
        let p = print.clone();
        let size = change_gallery(m, move |m| m.enroll(subject, &p)).await?;
        if let Err(e) = self.record(store, subject, Change::Enrolled(print)).await {
            let _ = m.remove(subject);
            return Err(e);
        }
        Ok(size)
    }
}

/// `MatcherService.ListChanges` at a gateway: a page of `log`'s recorded changes for the
/// request's shard. INVALID_ARGUMENT for a shard that cannot be (count 0, or index not below
/// count).
pub fn list_changes(
    log: &GalleryLog,
    r: &interop_proto::v1::ListChangesRequest,
) -> Result<interop_proto::v1::ListChangesResponse, GatewayError> {
    use interop_proto::v1 as pb;
    if r.shard_count == 0 || r.shard_index >= r.shard_count {
        return Err(GatewayError::invalid(
            "shard_index",
            format!(
                "shard {}/{} does not exist: shard_count must be at least 1 and shard_index below it",
                r.shard_index, r.shard_count
            ),
        ));
    }
    let shard = Shard {
        index: r.shard_index,
        count: r.shard_count,
    };
    let page = match r.page_size {
        0 => MAX_PAGE,
        n => n as usize,
    };
    let l = log.list(shard, r.after_subject_id, page, r.known_version);
    Ok(pb::ListChangesResponse {
        version: l.version,
        unchanged: l.unchanged,
        more: l.more,
        changes: l
            .changes
            .iter()
            .map(|(subject_id, c)| pb::SubjectChange {
                subject_id: *subject_id,
                removed: matches!(**c, Change::Removed),
                fingers: match &**c {
                    Change::Removed => vec![],
                    Change::Enrolled(t) => crate::convert::tenprint_to_pb(t),
                },
            })
            .collect(),
    })
}

/// Makes a change to `matcher`'s gallery on a blocking thread: the gallery's size after it.
pub async fn change_gallery(
    matcher: &Arc<dyn Matcher>,
    change: impl FnOnce(&dyn Matcher) -> Result<(), interop_matcher::MatchError> + Send + 'static,
) -> Result<usize, GatewayError> {
    let m = matcher.clone();
    tokio::task::spawn_blocking(move || change(&*m).map(|_| m.len()))
        .await
        .map_err(|e| GatewayError::Internal(e.to_string()))?
        .map_err(GatewayError::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use interop_matcher::IndexedMatcher;
    use interop_matcher::synth::{CaptureModel, capture, master_tenprint};

    fn print(person: u64, n: u64) -> Tenprint {
        capture(&master_tenprint(3, person), &CaptureModel::default(), n)
    }

    fn setting(subject: u64, change: &Change) -> (String, Vec<u8>) {
        (format!("{SETTING_PREFIX}{subject}"), encode(change))
    }

    /// Recorded changes are made over whatever the gallery holds (an enrolment replaces the
    /// id's print; removing an id it lacks is no error), each once: applying the same
    /// settings again changes nothing. Other settings are not its business.
    #[test]
    fn recorded_changes_are_applied_over_the_gallery_once() {
        let m = Arc::new(IndexedMatcher::new(2));
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

    /// Changes are written compactly, and settings written as JSON by gateways before are
    /// read as they were meant; a form this gateway does not know is refused with a clear
    /// error, and so is damage.
    #[test]
    fn changes_are_written_compactly_and_json_ones_still_read() {
        let p = print(8, 2);
        let minutiae: usize = p.fingers.iter().map(|f| f.minutiae.len()).sum();
        let (compact, json) = (
            encode(&Change::Enrolled(p.clone())),
            serde_json::to_vec(&Change::Enrolled(p.clone())).unwrap(),
        );
        assert!(
            compact.len() <= 9 * minutiae + 100 && json.len() > 5 * compact.len(),
            "{minutiae} minutiae: {} bytes compact, {} as JSON",
            compact.len(),
            json.len()
        );
        assert_eq!(decode(&compact).unwrap(), Change::Enrolled(p.clone()));
        assert_eq!(decode(&json).unwrap(), Change::Enrolled(p));
        assert_eq!(decode(b"\"Removed\"").unwrap(), Change::Removed);
        assert_eq!(decode(&encode(&Change::Removed)).unwrap(), Change::Removed);

        let m = Arc::new(IndexedMatcher::new(1));
        m.enroll(3, &print(3, 0)).unwrap();
        let log = GalleryLog::new(m.clone());
        let old: BTreeMap<String, Vec<u8>> =
            [(format!("{SETTING_PREFIX}3"), b"\"Removed\"".to_vec())].into();
        assert_eq!(log.apply(&old).unwrap(), 1);
        assert_eq!(m.len(), 0, "a JSON removal was not applied");

        let newer = decode(&[0xFF, 2, 0]).unwrap_err();
        assert!(
            newer.contains("form 2") && newer.contains("newer gateway"),
            "{newer}"
        );
        let mut cut = encode(&Change::Enrolled(print(8, 2)));
        cut.truncate(cut.len() / 2);
        assert!(decode(&cut).is_err());
    }

    /// The gateway lists a shard's recorded changes, and only that shard's, in id order and in
    /// pages, under a version that stays while they do and moves when one changes; a shard
    /// that makes a listed change it already made directly does not make it again, and one it
    /// lacks it makes once.
    #[tokio::test]
    async fn changes_are_listed_per_shard_in_pages_and_made_once_at_a_shard() {
        use interop_proto::v1 as pb;
        let gateway = GalleryLog::for_shards();
        let mut settings: BTreeMap<String, Vec<u8>> =
            (1..=70).map(|s| setting(s, &Change::Removed)).collect();
        settings.insert(
            setting(40, &Change::Removed).0,
            encode(&Change::Enrolled(print(40, 1))),
        );
        assert_eq!(gateway.apply(&settings).unwrap(), 70);
        let even = Shard { index: 0, count: 2 };
        let ask = |after: Option<u64>, known: u64| pb::ListChangesRequest {
            shard_index: 0,
            shard_count: 2,
            after_subject_id: after,
            known_version: known,
            page_size: 0,
        };

        let first = list_changes(&gateway, &ask(None, 0)).unwrap();
        assert!(!first.unchanged && first.more);
        assert_eq!(first.changes.len(), MAX_PAGE);
        let ids: Vec<u64> = first.changes.iter().map(|c| c.subject_id).collect();
        assert_eq!(ids, (1..=32).map(|i| 2 * i).collect::<Vec<_>>());
        let rest = list_changes(&gateway, &ask(Some(64), 0)).unwrap();
        assert!(!rest.more);
        assert_eq!(rest.version, first.version);
        let ids: Vec<u64> = rest.changes.iter().map(|c| c.subject_id).collect();
        assert_eq!(ids, [66, 68, 70]);
        let forty = &first.changes[19];
        assert_eq!(forty.subject_id, 40);
        assert!(!forty.removed && forty.fingers.len() == 10);
        assert!(first.changes[0].removed && first.changes[0].fingers.is_empty());

        // Nothing changed: nothing listed. The other shard's version is its own.
        let same = list_changes(&gateway, &ask(None, first.version)).unwrap();
        assert!(same.unchanged && same.changes.is_empty());
        assert_ne!(
            gateway
                .list(Shard { index: 1, count: 2 }, None, 5, 0)
                .version,
            first.version
        );
        // A change of the other shard's does not move this one's version; one of its own does.
        settings.insert(setting(71, &Change::Removed).0, encode(&Change::Removed));
        gateway.apply(&settings).unwrap();
        assert!(gateway.list(even, None, 5, first.version).unchanged);
        settings.insert(setting(72, &Change::Removed).0, encode(&Change::Removed));
        gateway.apply(&settings).unwrap();
        assert!(!gateway.list(even, None, 5, first.version).unchanged);

        for bad in [(0, 0), (2, 2), (5, 3)] {
            let mut r = ask(None, 0);
            (r.shard_index, r.shard_count) = bad;
            let e = list_changes(&gateway, &r).expect_err("refused");
            assert!(e.to_string().contains("does not exist"), "{e}");
        }

        // At a shard: subject 40 was enrolled directly (as the gateway sent it), subject 2
        // never reached it. The listed print, as the shard decodes it, is the same change.
        let m = Arc::new(IndexedMatcher::new(1));
        m.enroll(2, &print(2, 0)).unwrap();
        let shard = GalleryLog::new(m.clone());
        shard.enroll(None, 40, print(40, 1)).await.unwrap();
        let decode = |c: &pb::SubjectChange| {
            if c.removed {
                Change::Removed
            } else {
                Change::Enrolled(crate::intake::validate::search_fingers(&c.fingers).unwrap())
            }
        };
        assert_eq!(decode(forty), Change::Enrolled(print(40, 1)));
        assert!(!shard.apply_from_gateway(40, &decode(forty)).unwrap());
        assert!(
            shard
                .apply_from_gateway(2, &decode(&first.changes[0]))
                .unwrap()
        );
        assert!(
            !shard
                .apply_from_gateway(2, &decode(&first.changes[0]))
                .unwrap()
        );
        assert_eq!(m.len(), 1, "subject 2 removed, 40 enrolled once");
        assert_eq!(
            m.search(&print(40, 7), 1).unwrap().candidates[0].subject,
            40
        );
    }
}
