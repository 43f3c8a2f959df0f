//! The backlog: every receipted submission not yet completed, and the order the workers take
//! them in.
//!
//! **The durable log is the queue.** A submission enters the backlog when the store has
//! accepted it (its receipt) and leaves when its completion is committed; nothing in memory
//! bounds receipts. What is held here is an index of the store's pending submissions (key,
//! acceptance time, size) and, while [`BacklogBudget::memory_bytes`] allows, the submission as
//! intake already decoded and validated it. Past that, an entry holds its key only and the
//! worker reads the payload back from the store ([`crate::store::Store::pending`]), as
//! recovery does for everything found pending at start.
//!
//! **Fair pulling.** Each bureau has its own first-in-first-out line; workers take from the
//! bureaus in turn (round robin over the bureaus with work waiting). A bureau that floods
//! waits behind its own submissions, while a quiet bureau's next submission is at most one
//! turn away.
//!
//! **The budget.** Admission refuses (RESOURCE_EXHAUSTED, before anything is stored) only
//! past the budget, and then only the bureaus that hold more than their fair part of it:
//! - a bureau whose oldest waiting submission has waited longer than `max_age`;
//! - once the backlog holds `max_submissions` or `max_bytes`, a bureau holding at least an
//!   equal share of that limit among the bureaus with work in the backlog (so the backlog can
//!   pass the limit by at most what the bureaus under their share add: at most twice it).
//!
//! The refusal names the backlog, the bureau's part of it and the estimated time to drain it
//! at the current completion rate (also in `/metrics`).
//!
//! **Shared work** (a replicated store whose replicas share the pending work: see
//! [`crate::store::WorkFeed`]). A receipted submission is *parked* here: it counts against
//! this replica's budget until it completes, wherever it is processed, but is queued for this
//! replica's workers only when the store hands it out ([`Backlog::push`]; what intake kept
//! decoded is used then). The store hands out work only while [`Backlog::wait_room`] says
//! the workers have room, so what waits, waits in the log for whichever replica is free. The
//! budget is then per replica: what it receipted and no replica has completed yet.

use crate::intake::validate::ValidSubmission;
use crate::store::SubmissionKey;
use interop_proto::v1 as pb;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How much receipted, unfinished work the gateway takes on (README "Overload").
#[derive(Clone, Debug, PartialEq)]
pub struct BacklogBudget {
    /// Submissions receipted and not completed.
    pub max_submissions: usize,
    /// Their encoded bytes (as stored).
    pub max_bytes: u64,
    /// How long a bureau's oldest submission may have waited for a worker.
    pub max_age: Duration,
    /// Submissions kept decoded in memory, by encoded bytes; the rest are read back from the
    /// store when a worker takes them.
    pub memory_bytes: u64,
}

impl Default for BacklogBudget {
    fn default() -> Self {
        BacklogBudget {
            max_submissions: 100_000,
            max_bytes: 1 << 30,
            max_age: Duration::from_secs(600),
            memory_bytes: 64 << 20,
        }
    }
}

/// A submission as intake decoded and validated it.
pub struct Prepared {
    pub submission: pb::Submission,
    pub valid: ValidSubmission,
}

/// One receipted submission in the backlog.
pub struct Entry {
    pub key: SubmissionKey,
    /// When its receipt was given (ms since the epoch).
    pub accepted_ms: i64,
    /// Its encoded size, as stored.
    pub bytes: u64,
    /// The decoded submission, when it was kept in memory; `None`: read it from the store.
    pub prepared: Option<Box<Prepared>>,
}

/// What the backlog holds now, for `/metrics` and refusals.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// Waiting for a worker.
    pub waiting: usize,
    /// Shared work: receipted here, waiting in the shared log or taken by another replica.
    pub parked: usize,
    /// Taken by a worker, not yet completed.
    pub in_flight: usize,
    pub bytes: u64,
    /// How long the oldest waiting submission has waited.
    pub oldest_wait: Duration,
    /// Completions per second, recently (exponentially weighted over about [`RATE_WINDOW`]).
    pub completions_per_s: f64,
    /// Bureaus with work in the backlog.
    pub bureaus: usize,
}

impl Figures {
    /// Receipted and not completed.
    pub fn total(&self) -> usize {
        self.waiting + self.in_flight + self.parked
    }

    /// Held for this replica's workers: waiting or in flight.
    pub fn local(&self) -> usize {
        self.waiting + self.in_flight
    }

    /// How long the backlog takes to drain at the current completion rate; `None` when
    /// nothing has completed lately (and there is something to drain).
    pub fn drain(&self) -> Option<Duration> {
        if self.total() == 0 {
            return Some(Duration::ZERO);
        }
        (self.completions_per_s > 1e-3)
            .then(|| Duration::from_secs_f64(self.total() as f64 / self.completions_per_s))
    }
}

/// The time constant of the completion rate's moving average.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Bureau {
    waiting: VecDeque<Entry>,
    in_flight: usize,
    /// Shared work receipted here, by (acceptance time, TCN).
    parked: BTreeMap<(i64, String), Entry>,
    bytes: u64,
}

impl Bureau {
    fn held(&self) -> usize {
        self.waiting.len() + self.in_flight + self.parked.len()
    }

    /// When its oldest waiting submission (here or, parked, in the shared log) was receipted.
    fn oldest_ms(&self) -> Option<i64> {
        let here = self.waiting.front().map(|e| e.accepted_ms);
        let parked = self.parked.keys().next().map(|(t, _)| *t);
        here.into_iter().chain(parked).min()
    }
}

/// An exponentially weighted event rate: each event adds `1/τ`, and the sum decays by `e^-t/τ`.
struct Rate {
    per_s: f64,
    at: Instant,
}

impl Rate {
    fn at(&self, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.per_s * (-dt / RATE_WINDOW.as_secs_f64()).exp()
    }

    fn event(&mut self, now: Instant) {
        self.per_s = self.at(now) + 1.0 / RATE_WINDOW.as_secs_f64();
        self.at = now;
    }
}

struct Inner {
    bureaus: HashMap<String, Bureau>,
    /// Bureaus with submissions waiting, in the order they take their turns.
    turns: VecDeque<String>,
    /// Every key in the backlog (waiting, in flight or parked): a submission is never held
    /// twice.
    held: HashSet<SubmissionKey>,
    /// Parked keys' acceptance times (the key of their bureau's `parked`).
    parked: HashMap<SubmissionKey, i64>,
    waiting: usize,
    in_flight: usize,
    bytes: u64,
    /// Encoded bytes of the entries kept decoded.
    memory: u64,
    rate: Rate,
}

impl Inner {
    /// Takes `key`'s parked entry out of the parked work and its bytes out of the counts
    /// (its bureau stays, and so do `held` and `memory`); `None` if it is not parked.
    fn unpark(&mut self, key: &SubmissionKey) -> Option<Entry> {
        let at = self.parked.remove(key)?;
        let b = self
            .bureaus
            .get_mut(&key.bureau)
            .expect("a parked key's bureau");
        let entry = b
            .parked
            .remove(&(at, key.tcn.clone()))
            .expect("a parked entry");
        b.bytes -= entry.bytes;
        self.bytes -= entry.bytes;
        Some(entry)
    }
}

/// See the module documentation.
pub struct Backlog {
    inner: Mutex<Inner>,
    ready: Notify,
    /// A submission was taken: room for the store to hand out more (shared work).
    room: Notify,
    budget: BacklogBudget,
}

impl Backlog {
    pub fn new(budget: BacklogBudget) -> Self {
        Backlog {
            inner: Mutex::new(Inner {
                bureaus: HashMap::new(),
                turns: VecDeque::new(),
                held: HashSet::new(),
                parked: HashMap::new(),
                waiting: 0,
                in_flight: 0,
                bytes: 0,
                memory: 0,
                rate: Rate {
                    per_s: 0.0,
                    at: Instant::now(),
                },
            }),
            ready: Notify::new(),
            room: Notify::new(),
            budget,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("backlog")
    }

    /// Whether a new submission of `bytes` from `bureau` is within the budget; `Err` is the
    /// refusal to send (see the module documentation). A repeat of a submission still in the
    /// backlog is always let through: the store answers it with its receipt.
    pub fn admit(&self, key: &SubmissionKey, bytes: u64, now_ms: i64) -> Result<(), String> {
        let now = Instant::now();
        let inner = self.lock();
        if inner.held.contains(key) {
            return Ok(());
        }
        let b = &self.budget;
        let mine = inner.bureaus.get(&key.bureau);
        let (held, oldest) = mine.map_or((0, None), |m| (m.held(), m.oldest_ms()));
        let total = inner.waiting + inner.in_flight + inner.parked.len();
        let active = inner.bureaus.len() + usize::from(mine.is_none());
        let share = b.max_submissions.div_ceil(active).max(1);
        let over_count = total >= b.max_submissions && held >= share;
        let byte_share = b.max_bytes.div_ceil(active as u64).max(1);
        let mine_bytes = mine.map_or(0, |m| m.bytes);
        let over_bytes = inner.bytes + bytes > b.max_bytes && mine_bytes + bytes > byte_share;
        let waited = oldest.map_or(Duration::ZERO, |t| {
            Duration::from_millis((now_ms - t).max(0) as u64)
        });
        let over_age = waited > b.max_age;
        if !(over_count || over_bytes || over_age) {
            return Ok(());
        }
        let figures = self.figures_of(&inner, now, now_ms);
        let why = if over_age {
            format!(
                "bureau {}'s oldest submission has waited {} for processing (the limit is {})",
                key.bureau,
                human(waited),
                human(b.max_age)
            )
        } else if over_count {
            format!(
                "the backlog holds {total} submissions (the limit is {}) and bureau {} holds \
                 {held} of them (its share is {share})",
                b.max_submissions, key.bureau
            )
        } else {
            format!(
                "the backlog holds {} MiB (the limit is {} MiB) and bureau {} holds {} MiB of \
                 it (its share is {} MiB)",
                inner.bytes >> 20,
                b.max_bytes >> 20,
                key.bureau,
                mine_bytes >> 20,
                byte_share >> 20
            )
        };
        let drain = match figures.drain() {
            Some(d) => format!(
                "at {:.0} completions/s it drains in about {}",
                figures.completions_per_s,
                human(d)
            ),
            None => "nothing has completed in the last minute".to_string(),
        };
        Err(format!(
            "backlog past its budget: {why}; {drain}; retry with backoff"
        ))
    }

    /// Adds a receipted submission for the workers (intake after its receipt; recovery, and
    /// the store's feed of shared work). A key already in the backlog is ignored, unless it
    /// is parked here: then it is queued, with what intake kept of it. Returns whether it was
    /// queued.
    pub fn push(&self, mut entry: Entry) -> bool {
        {
            let mut guard = self.lock();
            let inner = &mut *guard;
            if let Some(parked) = inner.unpark(&entry.key) {
                // Still counted in `memory` (added to `bytes` again below).
                entry = parked;
            } else if !inner.held.insert(entry.key.clone()) {
                return false;
            } else {
                self.keep_prepared(inner, &mut entry);
            }
            inner.waiting += 1;
            inner.bytes += entry.bytes;
            let bureau = entry.key.bureau.clone();
            let b = inner.bureaus.entry(bureau.clone()).or_default();
            b.bytes += entry.bytes;
            b.waiting.push_back(entry);
            if b.waiting.len() == 1 {
                inner.turns.push_back(bureau);
            }
        }
        self.ready.notify_one();
        true
    }

    /// Shared work: counts a submission receipted here against the budget until it completes
    /// (at any replica: [`Backlog::done`] or [`Backlog::completed_elsewhere`]), without
    /// queueing it; the store's feed queues it if it hands it to this replica. A key already
    /// held is ignored; returns whether it was parked.
    pub fn park(&self, mut entry: Entry) -> bool {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if !inner.held.insert(entry.key.clone()) {
            return false;
        }
        self.keep_prepared(inner, &mut entry);
        inner.parked.insert(entry.key.clone(), entry.accepted_ms);
        inner.bytes += entry.bytes;
        let b = inner.bureaus.entry(entry.key.bureau.clone()).or_default();
        b.bytes += entry.bytes;
        b.parked
            .insert((entry.accepted_ms, entry.key.tcn.clone()), entry);
        true
    }

    /// Shared work: a submission parked here was completed by another replica.
    pub fn completed_elsewhere(&self, key: &SubmissionKey) {
        let mut inner = self.lock();
        let Some(entry) = inner.unpark(key) else {
            return;
        };
        inner.held.remove(key);
        if inner
            .bureaus
            .get(&key.bureau)
            .is_some_and(|b| b.held() == 0)
        {
            inner.bureaus.remove(&key.bureau);
        }
        if entry.prepared.is_some() {
            inner.memory -= entry.bytes;
        }
    }

    /// Shared work: up to `n` parked keys receipted before `before_ms`, oldest first (to
    /// check against the store: a completion can pass its own receipt's parking, see
    /// [`crate::server::Gateway`]'s work feed).
    pub fn parked_before(&self, before_ms: i64, n: usize) -> Vec<SubmissionKey> {
        let inner = self.lock();
        let mut keys: Vec<(i64, &SubmissionKey)> = inner
            .parked
            .iter()
            .filter(|(_, at)| **at < before_ms)
            .map(|(k, at)| (*at, k))
            .collect();
        keys.sort_by(|a, b| (a.0, &a.1.bureau, &a.1.tcn).cmp(&(b.0, &b.1.bureau, &b.1.tcn)));
        keys.into_iter().take(n).map(|(_, k)| k.clone()).collect()
    }

    /// Keeps `entry`'s decoded submission while the memory budget allows.
    fn keep_prepared(&self, inner: &mut Inner, entry: &mut Entry) {
        if entry.prepared.is_some() {
            if inner.memory + entry.bytes > self.budget.memory_bytes {
                entry.prepared = None;
            } else {
                inner.memory += entry.bytes;
            }
        }
    }

    /// Waits until fewer than `max` submissions wait for a worker (shared work: the store
    /// hands out more only then).
    pub async fn wait_room(&self, max: usize) {
        loop {
            let room = self.room.notified();
            if self.lock().waiting < max {
                return;
            }
            room.await;
        }
    }

    /// The next submission to process: the bureau whose turn it is gives its oldest. `None`
    /// when nothing waits.
    pub fn try_take(&self) -> Option<Entry> {
        let mut inner = self.lock();
        let bureau = inner.turns.pop_front()?;
        let b = inner.bureaus.get_mut(&bureau).expect("a bureau in turn");
        let entry = b.waiting.pop_front().expect("a bureau in turn has work");
        b.in_flight += 1;
        if !b.waiting.is_empty() {
            inner.turns.push_back(bureau);
        }
        inner.waiting -= 1;
        inner.in_flight += 1;
        if entry.prepared.is_some() {
            inner.memory -= entry.bytes;
        }
        drop(inner);
        self.room.notify_one();
        Some(entry)
    }

    /// Waits for the next submission (see [`Backlog::try_take`]).
    pub async fn take(&self) -> Entry {
        loop {
            let ready = self.ready.notified();
            if let Some(e) = self.try_take() {
                return e;
            }
            ready.await;
        }
    }

    /// A taken submission is done: completed, or found completed or unreadable (then it stays
    /// pending in the store for the next start). `completed` counts towards the rate.
    pub fn done(&self, key: &SubmissionKey, bytes: u64, completed: bool) {
        let mut inner = self.lock();
        if !inner.held.remove(key) {
            return;
        }
        inner.in_flight -= 1;
        inner.bytes -= bytes;
        if completed {
            inner.rate.event(Instant::now());
        }
        let b = inner
            .bureaus
            .get_mut(&key.bureau)
            .expect("a held key's bureau");
        b.in_flight -= 1;
        b.bytes -= bytes;
        if b.held() == 0 {
            inner.bureaus.remove(&key.bureau);
        }
    }

    /// What the backlog holds now.
    pub fn figures(&self) -> Figures {
        let inner = self.lock();
        self.figures_of(&inner, Instant::now(), crate::convert::now_ms())
    }

    fn figures_of(&self, inner: &Inner, now: Instant, now_ms: i64) -> Figures {
        let oldest = inner.bureaus.values().filter_map(Bureau::oldest_ms).min();
        Figures {
            waiting: inner.waiting,
            parked: inner.parked.len(),
            in_flight: inner.in_flight,
            bytes: inner.bytes,
            oldest_wait: oldest.map_or(Duration::ZERO, |t| {
                Duration::from_millis((now_ms - t).max(0) as u64)
            }),
            completions_per_s: inner.rate.at(now),
            bureaus: inner.bureaus.len(),
        }
    }
}

/// "2 h 5 min", "3 min 20 s", "4.2 s".
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(bureau: &str, n: usize) -> SubmissionKey {
        SubmissionKey {
            bureau: bureau.into(),
            tcn: format!("{bureau}-{n:06}"),
        }
    }

    fn entry(bureau: &str, n: usize, accepted_ms: i64) -> Entry {
        Entry {
            key: key(bureau, n),
            accepted_ms,
            bytes: 1000,
            prepared: None,
        }
    }

    fn budget(max_submissions: usize) -> BacklogBudget {
        BacklogBudget {
            max_submissions,
            max_bytes: u64::MAX,
            max_age: Duration::from_secs(600),
            memory_bytes: 0,
        }
    }

    #[test]
    fn bureaus_take_turns_whatever_their_backlog() {
        let b = Backlog::new(budget(1000));
        // TX floods first: 100 waiting before CA and NY send one each.
        for i in 0..100 {
            assert!(b.push(entry("TX", i, 0)));
        }
        b.push(entry("CA", 0, 1));
        b.push(entry("NY", 0, 2));
        let order: Vec<String> = (0..5)
            .map(|_| b.try_take().unwrap().key.tcn)
            .collect::<Vec<_>>();
        assert_eq!(
            order,
            [
                "TX-000000",
                "CA-000000",
                "NY-000000",
                "TX-000001",
                "TX-000002"
            ]
        );
        // Within a bureau, first in, first out.
        assert_eq!(b.try_take().unwrap().key.tcn, "TX-000003");
    }

    #[test]
    fn a_key_is_held_once_and_leaves_when_done() {
        let b = Backlog::new(budget(1000));
        assert!(b.push(entry("TX", 1, 0)));
        assert!(!b.push(entry("TX", 1, 0)), "pushed twice");
        let e = b.try_take().unwrap();
        assert!(!b.push(entry("TX", 1, 0)), "in flight is still held");
        assert!(b.try_take().is_none());
        assert_eq!(b.figures().in_flight, 1);
        b.done(&e.key, e.bytes, true);
        let f = b.figures();
        assert_eq!((f.total(), f.bytes, f.bureaus), (0, 0, 0));
        assert!(f.completions_per_s > 0.0);
        // Done twice changes nothing.
        b.done(&e.key, e.bytes, true);
        assert_eq!(b.figures().total(), 0);
    }

    #[test]
    fn past_the_budget_only_bureaus_over_their_share_are_refused() {
        let b = Backlog::new(budget(10));
        for i in 0..10 {
            b.admit(&key("TX", i), 1000, 0).expect("under the budget");
            b.push(entry("TX", i, 0));
        }
        let e = b.admit(&key("TX", 10), 1000, 0).unwrap_err();
        assert!(
            e.contains("the backlog holds 10 submissions (the limit is 10) and bureau TX holds 10"),
            "{e}"
        );
        assert!(e.contains("nothing has completed"), "{e}");
        // A quiet bureau is under its share (half of 10 with two bureaus).
        for i in 0..5 {
            b.admit(&key("CA", i), 1000, 0)
                .expect("a quiet bureau gets in");
            b.push(entry("CA", i, 0));
        }
        assert!(b.admit(&key("CA", 5), 1000, 0).is_err(), "at its share");
        // A repeat of a held submission is let through (the store answers its receipt).
        b.admit(&key("TX", 3), 1000, 0).expect("a repeat");
        // Work done makes room; the refusal then gives a drain estimate.
        for _ in 0..6 {
            let e = b.try_take().unwrap();
            b.done(&e.key, e.bytes, true);
        }
        let f = b.figures();
        assert_eq!(f.total(), 9);
        b.admit(&key("TX", 10), 1000, 0).expect("room again");
        for i in 10..13 {
            b.push(entry("TX", i, 0));
        }
        let e = b.admit(&key("TX", 13), 1000, 0).unwrap_err();
        assert!(e.contains("completions/s it drains in about"), "{e}");
    }

    #[test]
    fn a_bureau_whose_oldest_waits_too_long_is_refused_alone() {
        let b = Backlog::new(BacklogBudget {
            max_age: Duration::from_secs(60),
            ..budget(1000)
        });
        b.push(entry("TX", 0, 0));
        let now_ms = 61_000;
        let e = b.admit(&key("TX", 1), 1000, now_ms).unwrap_err();
        assert!(
            e.contains("bureau TX's oldest submission has waited 1 min 1 s"),
            "{e}"
        );
        b.admit(&key("CA", 0), 1000, now_ms)
            .expect("another bureau's work is not old");
        // Once taken, TX's oldest waiting is gone.
        let _ = b.try_take().unwrap();
        b.admit(&key("TX", 1), 1000, now_ms).expect("nothing waits");
    }

    #[test]
    fn the_byte_budget_refuses_the_bureau_that_holds_the_bytes() {
        let b = Backlog::new(BacklogBudget {
            max_bytes: 5000,
            ..budget(1000)
        });
        for i in 0..5 {
            b.admit(&key("TX", i), 1000, 0).unwrap();
            b.push(entry("TX", i, 0));
        }
        let e = b.admit(&key("TX", 5), 1000, 0).unwrap_err();
        assert!(e.contains("MiB"), "{e}");
        b.admit(&key("CA", 0), 1000, 0).expect("under its share");
    }

    #[test]
    fn decoded_submissions_are_kept_only_within_the_memory_budget() {
        let b = Backlog::new(BacklogBudget {
            memory_bytes: 1500,
            ..budget(1000)
        });
        for i in 0..2 {
            b.push(Entry {
                prepared: decoded(),
                ..entry("TX", i, 0)
            });
        }
        assert!(b.try_take().unwrap().prepared.is_some());
        assert!(
            b.try_take().unwrap().prepared.is_none(),
            "past the memory budget only the key is held"
        );
        // Taking frees memory for the next.
        b.push(Entry {
            prepared: decoded(),
            ..entry("TX", 2, 0)
        });
        assert!(b.try_take().unwrap().prepared.is_some());
    }

    fn decoded() -> Option<Box<Prepared>> {
        Some(Box::new(Prepared {
            submission: pb::Submission::default(),
            valid: ValidSubmission {
                booked_on: chrono::NaiveDate::from_ymd_opt(2011, 1, 1).unwrap(),
                charges: vec![],
                prints: Default::default(),
                group: None,
            },
        }))
    }

    /// Shared work: a parked submission counts against the budget (and its bureau's age)
    /// until it completes at any replica, is queued only when handed out, keeps what intake
    /// decoded when it is, and is never held twice.
    #[test]
    fn parked_work_counts_until_done_anywhere_and_is_queued_only_when_handed_out() {
        let b = Backlog::new(BacklogBudget {
            max_age: Duration::from_secs(60),
            memory_bytes: 10_000,
            ..budget(3)
        });
        for i in 0..3 {
            assert!(b.park(Entry {
                prepared: decoded(),
                ..entry("TX", i, 1_000 * i as i64)
            }));
        }
        assert!(!b.park(entry("TX", 0, 0)), "held once");
        assert!(b.try_take().is_none(), "parked work is not queued");
        let f = b.figures();
        assert_eq!(
            (f.waiting, f.in_flight, f.parked, f.total(), f.local()),
            (0, 0, 3, 3, 0)
        );
        assert_eq!(f.bytes, 3000);
        assert!(
            b.admit(&key("TX", 9), 1000, 0).is_err(),
            "the budget counts parked work"
        );
        let e = b.admit(&key("TX", 9), 1000, 61_000).unwrap_err();
        assert!(e.contains("oldest submission has waited"), "{e}");

        // Handed out here: queued with what intake decoded.
        assert!(b.push(entry("TX", 1, 1_000)));
        let taken = b.try_take().expect("queued once handed out");
        assert_eq!(taken.key, key("TX", 1));
        assert!(taken.prepared.is_some(), "intake's decoding is used");
        assert!(
            !b.push(entry("TX", 1, 1_000)),
            "in flight: not queued twice"
        );
        b.done(&key("TX", 1), taken.bytes, true);

        // Completed by another replica: no longer counted.
        b.completed_elsewhere(&key("TX", 0));
        b.completed_elsewhere(&key("TX", 0));
        let f = b.figures();
        assert_eq!((f.parked, f.total(), f.bytes), (1, 1, 1000));
        // TX-2, receipted at 2 s, is its oldest now.
        b.admit(&key("TX", 9), 1000, 61_000)
            .expect("TX-2 has waited 59 s");
        let e = b.admit(&key("TX", 9), 1000, 62_500).unwrap_err();
        assert!(e.contains("1 min 0 s"), "{e}");
        b.completed_elsewhere(&key("TX", 2));
        let f = b.figures();
        assert_eq!((f.total(), f.bytes, f.bureaus), (0, 0, 0));
        // The parked keys a sweep checks: the old ones, oldest first.
        b.park(entry("TX", 7, 500));
        b.park(entry("TX", 8, 100));
        b.park(entry("TX", 9, 900));
        assert_eq!(b.parked_before(600, 10), [key("TX", 8), key("TX", 7)]);
        assert_eq!(b.parked_before(600, 1), [key("TX", 8)]);
        for i in 7..10 {
            b.completed_elsewhere(&key("TX", i));
        }
        // Work receipted elsewhere is queued as it comes.
        assert!(b.push(entry("CA", 0, 5)));
        assert_eq!(b.try_take().unwrap().key, key("CA", 0));
    }

    /// The store hands out more only while fewer than the limit wait for a worker.
    #[tokio::test]
    async fn room_opens_when_a_worker_takes() {
        let b = std::sync::Arc::new(Backlog::new(budget(10)));
        b.push(entry("TX", 0, 0));
        b.push(entry("TX", 1, 0));
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.wait_room(2).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "two wait: no room under 2");
        b.try_take().unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("room once one is taken")
            .unwrap();
    }

    #[tokio::test]
    async fn a_waiting_worker_is_woken_by_a_push() {
        let b = std::sync::Arc::new(Backlog::new(budget(10)));
        let worker = tokio::spawn({
            let b = b.clone();
            async move { b.take().await.key }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        b.push(entry("TX", 7, 0));
        let got = tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(got, key("TX", 7));
    }
}
