//! The search slots: one scheduler for the CPU the in-process galleries search on, shared by
//! both (issue 28: "one scheduler for CPU work").
//!
//! A search is CPU-bound and spreads its stages over every core (they run on rayon), so the
//! searches of both galleries run on a few threads of their own ([`SearchSlots`],
//! [`SEARCHES_PER_CORE`] per core), each taking the next search as soon as it finishes one.
//! (Before, each gallery ran one search per core on tokio's blocking pool, two per core in
//! all, the rest waiting first come first served.)
//!
//! **Fair by bureau.** Waiting searches are kept in a queue per *lane* — the bureau whose
//! submission asked for them ([`in_lane`]) — and a free thread takes from the lanes in turn,
//! the oldest waiting search of each. A bureau flooding the gateway past what it can search
//! fills its own queue; another bureau's search waits for a thread to free, not behind every
//! search the flood has in flight. (The backlog already takes submissions bureau by bureau:
//! this is the same rule where the CPU is handed out.) It matters where searches are long: at
//! 1,000,000 identities, a quiet bureau's p99 beside a flood at twice the knee was 95 ms
//! with the lanes and 152 ms with one queue (24–25 ms alone; BENCHMARKS.md).
//!
//! A search whose caller stopped waiting (its deadline passed; see [`super::in_process`]) is
//! skipped when its turn comes.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use tokio::sync::oneshot;

tokio::task_local! {
    /// The lane of the searches this task asks for (see [`in_lane`]).
    static LANE: Arc<str>;
}

/// Search threads per core. A search's own steps (preparing the probe, selecting each
/// stage's list) run on its thread while rayon's threads wait, and its stages on rayon's while
/// it waits; two searches per core overlap the one's serial steps with the other's stages, and
/// keep the searches' share of the cores beside tokio's workers (intake, delivery). With one
/// per core the knee of `state-bureau-sim bench`'s steps (5,000 people) fell from 300 to 240
/// bookings a second in three runs of four (BENCHMARKS.md).
pub const SEARCHES_PER_CORE: usize = 2;

/// How far below intake's the searches' scheduling priority is: a Linux nice increment for
/// the search threads and rayon's (see [`search_pool`]), `INTEROP_SEARCH_NICE` (0 to 19) if
/// set, else [`SEARCH_NICE`]. Lowered, receipts win the cores from searches while both want
/// them: in `state-bureau-sim bench` (4 interleaved runs each, 2026-12-07) nice 4 raised
/// durable ingest from 0.25 to 0.29 of the echo's rate (all bureaus; one bureau 0.315 to
/// 0.35), with the same knee but slower searches past it (the p99 at 360/s, past the knee,
/// 324 against 179 ms, medians); nice 10 lowered the knee from 360 to 300. So it is off by
/// default, for an operator who would rather give receipts first in a burst.
pub fn search_nice() -> i32 {
    std::env::var("INTEROP_SEARCH_NICE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| (0..=19).contains(n))
        .unwrap_or(SEARCH_NICE)
}

/// See [`search_nice`].
pub const SEARCH_NICE: i32 = 0;

/// Lowers the calling thread's scheduling priority by `nice` (Linux: per thread; the nice
/// value goes up by `nice`, at most to 19). Best effort.
pub fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice > 0 {
        // SAFETY: plain system calls on the calling thread's own id.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            let now = libc::getpriority(libc::PRIO_PROCESS, tid);
            libc::setpriority(libc::PRIO_PROCESS, tid, (now + nice).min(19));
        }
    }
}

/// Builds rayon's global pool (where a search's stages run) with its threads at the searches'
/// priority ([`search_nice`]). Call at the start of a process that serves searches, before
/// anything uses rayon; `false` if it was built already.
pub fn search_pool() -> bool {
    let nice = search_nice();
    rayon::ThreadPoolBuilder::new()
        .start_handler(move |_| lower_priority(nice))
        .build_global()
        .is_ok()
}

/// Runs `work` with the searches it asks for queued in `lane` (the pipeline passes the
/// submitting bureau). Searches asked for outside any lane share the lane `""`.
pub async fn in_lane<F: Future>(lane: &str, work: F) -> F::Output {
    LANE.scope(Arc::from(lane), work).await
}

/// The lane of the current task (see [`in_lane`]).
pub fn current_lane() -> Arc<str> {
    LANE.try_with(Arc::clone).unwrap_or_else(|_| Arc::from(""))
}

/// Threads that run searches, taking them from the lanes in turn (see the module comment).
/// Dropping it lets the threads finish what is queued and exit.
pub struct SearchSlots {
    shared: Arc<Shared>,
    threads: usize,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Queue {
    /// Per lane with a search waiting: its searches, oldest first.
    waiting: HashMap<Arc<str>, VecDeque<Job>>,
    /// The lanes with a search waiting, in the order they are served.
    turn: VecDeque<Arc<str>>,
    /// Searches running now.
    running: usize,
    closed: bool,
}

impl Queue {
    /// The next search in turn: the oldest of the lane at the front, which then goes to the
    /// back if it has more.
    fn next(&mut self) -> Option<Job> {
        let lane = self.turn.pop_front()?;
        let queue = self.waiting.get_mut(&lane).expect("a lane in turn waits");
        let job = queue.pop_front().expect("a lane in turn waits");
        if queue.is_empty() {
            self.waiting.remove(&lane);
        } else {
            self.turn.push_back(lane);
        }
        Some(job)
    }
}

/// The search threads' figures at one moment (see [`SearchSlots::figures`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchLoad {
    pub waiting: usize,
    pub running: usize,
    pub threads: usize,
}

impl SearchLoad {
    /// (waiting, running).
    pub fn queued_and_running(&self) -> (usize, usize) {
        (self.waiting, self.running)
    }
}

/// Why a search gave no answer.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotRun {
    /// The slots were shut down.
    #[error("the search threads were shut down")]
    Closed,
    /// The search panicked (its thread goes on to the next).
    #[error("the search panicked")]
    Panicked,
}

impl SearchSlots {
    /// `threads` searches at once (at least one).
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
        });
        let nice = search_nice();
        for i in 0..threads {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("search-{i}"))
                .spawn(move || {
                    lower_priority(nice);
                    shared.serve()
                })
                .expect("a search thread");
        }
        SearchSlots { shared, threads }
    }

    /// [`SEARCHES_PER_CORE`] threads per core of this machine.
    pub fn per_core() -> Self {
        Self::new(SEARCHES_PER_CORE * std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    /// Searches waiting for a thread now (skipped ones included until their turn comes),
    /// searches running, and threads: what `/metrics` shows.
    pub fn figures(&self) -> SearchLoad {
        let q = self.shared.queue.lock().expect("slots lock");
        SearchLoad {
            waiting: q.waiting.values().map(VecDeque::len).sum(),
            running: q.running,
            threads: self.threads,
        }
    }

    /// Runs `search` on a search thread when its turn in `lane` comes, and returns what it
    /// returned. `started` is set as it starts. Cancel-safe: dropping the future before then
    /// skips the search.
    pub async fn run<T: Send + 'static>(
        &self,
        lane: Arc<str>,
        started: Arc<AtomicBool>,
        search: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, NotRun> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            if tx.is_closed() {
                return; // nobody waits for it any more
            }
            started.store(true, Ordering::Release);
            let _ = tx.send(search());
        });
        {
            let mut q = self.shared.queue.lock().expect("slots lock");
            if q.closed {
                return Err(NotRun::Closed);
            }
            let Queue { waiting, turn, .. } = &mut *q;
            let queue = waiting.entry(lane.clone()).or_default();
            if queue.is_empty() {
                turn.push_back(lane);
            }
            queue.push_back(job);
        }
        self.shared.ready.notify_one();
        // The job drops its sender unanswered only if the search panicked.
        rx.await.map_err(|_| NotRun::Panicked)
    }
}

impl Shared {
    /// A search thread: the next search in turn, until closed and drained.
    fn serve(&self) {
        let mut q = self.queue.lock().expect("slots lock");
        loop {
            if let Some(job) = q.next() {
                q.running += 1;
                drop(q);
                // A search that panics loses its answer (its caller is told), not the thread.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                q = self.queue.lock().expect("slots lock");
                q.running -= 1;
            } else if q.closed {
                return;
            } else {
                q = self.ready.wait(q).expect("slots lock");
            }
        }
    }
}

impl Drop for SearchSlots {
    fn drop(&mut self) {
        self.shared.queue.lock().expect("slots lock").closed = true;
        self.shared.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// The searches' priority is lowered on their own thread only, by the increment asked.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_lowers_its_own_priority_only() {
        let nice = || unsafe {
            libc::getpriority(
                libc::PRIO_PROCESS,
                libc::syscall(libc::SYS_gettid) as libc::id_t,
            )
        };
        let mine = nice();
        let (before, after) = std::thread::spawn(move || {
            let before = nice();
            lower_priority(3);
            (before, nice())
        })
        .join()
        .unwrap();
        assert_eq!(after, (before + 3).min(19));
        assert_eq!(nice(), mine, "the caller's thread is untouched");
    }

    /// Waits until the slots have (queued, running) searches.
    async fn until(slots: &SearchSlots, load: (usize, usize)) {
        for _ in 0..2000 {
            if slots.figures().queued_and_running() == load {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("{:?}, not {load:?} queued and running", slots.figures());
    }

    /// A search that holds its thread until `release` is sent to; returns once it runs, as the
    /// `running`th.
    async fn holding(
        slots: &Arc<SearchSlots>,
        lane: &str,
        running: usize,
    ) -> (mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
        let (release, held) = mpsc::channel::<()>();
        let s = slots.clone();
        let lane: Arc<str> = lane.into();
        let task = tokio::spawn(async move {
            s.run(lane, Default::default(), move || {
                let _ = held.recv();
            })
            .await
            .unwrap();
        });
        until(slots, (0, running)).await;
        (release, task)
    }

    #[tokio::test]
    async fn no_more_searches_run_at_once_than_there_are_threads() {
        let slots = Arc::new(SearchSlots::new(2));
        let (r1, t1) = holding(&slots, "CA", 1).await;
        let (r2, t2) = holding(&slots, "CA", 2).await;
        let started = Arc::new(AtomicBool::new(false));
        let s = slots.clone();
        let st = started.clone();
        let third = tokio::spawn(async move { s.run("TX".into(), st, || 7).await });
        until(&slots, (1, 2)).await;
        assert!(!started.load(Ordering::Acquire), "a third search ran");
        r1.send(()).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("the freed thread took the waiting search")
            .unwrap();
        assert_eq!(got, Ok(7));
        assert!(started.load(Ordering::Acquire));
        r2.send(()).unwrap();
        t1.await.unwrap();
        t2.await.unwrap();
    }

    /// A bureau with many searches waiting does not keep another's behind all of them: a free
    /// thread takes from the lanes in turn, each lane's oldest first.
    #[tokio::test]
    async fn searches_run_lane_by_lane_in_turn() {
        let slots = Arc::new(SearchSlots::new(1));
        let (release, held) = holding(&slots, "CA", 1).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, lane) in ["CA", "CA", "CA", "TX", "CA", "NY"].into_iter().enumerate() {
            let (s, order) = (slots.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                s.run(lane.into(), Default::default(), move || {
                    order.lock().unwrap().push(format!("{lane}{i}"))
                })
                .await
                .unwrap();
            }));
            // Queued in this order.
            until(&slots, (i + 1, 1)).await;
        }
        release.send(()).unwrap();
        held.await.unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        let got = order.lock().unwrap().clone();
        assert_eq!(got, ["CA0", "TX3", "NY5", "CA1", "CA2", "CA4"]);
    }

    /// A search whose caller stopped waiting (its deadline passed) is skipped: it never runs,
    /// and the thread goes on to the next.
    #[tokio::test]
    async fn a_search_nobody_waits_for_is_skipped() {
        let slots = Arc::new(SearchSlots::new(1));
        let (release, held) = holding(&slots, "CA", 1).await;
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        let gave_up = tokio::time::timeout(
            Duration::from_millis(20),
            slots.run("TX".into(), Default::default(), move || {
                r.store(true, Ordering::Release)
            }),
        )
        .await;
        assert!(gave_up.is_err(), "the thread was busy");
        let s = slots.clone();
        let next = tokio::spawn(async move { s.run("NY".into(), Default::default(), || 1).await });
        until(&slots, (2, 1)).await;
        release.send(()).unwrap();
        held.await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("the next search ran")
            .unwrap();
        assert_eq!(got, Ok(1));
        assert!(
            !ran.load(Ordering::Acquire),
            "a search nobody waited for ran"
        );
        assert_eq!(slots.figures().waiting, 0);
        // (The thread counts itself idle just after sending the last answer.)
        until(&slots, (0, 0)).await;
    }

    /// A search that panics is answered as such, and its thread goes on to the next.
    #[tokio::test]
    async fn a_search_that_panics_loses_its_answer_not_the_thread() {
        let slots = SearchSlots::new(1);
        let got = slots
            .run("CA".into(), Default::default(), || -> u8 {
                panic!("a bug")
            })
            .await;
        assert_eq!(got, Err(NotRun::Panicked));
        assert_eq!(
            slots.run("CA".into(), Default::default(), || 2).await,
            Ok(2)
        );
    }

    #[tokio::test]
    async fn a_task_in_a_lane_names_it() {
        assert_eq!(&*current_lane(), "");
        assert_eq!(&*in_lane("TX", async { current_lane() }).await, "TX");
    }
}
