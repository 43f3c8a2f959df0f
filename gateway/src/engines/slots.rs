//! The search slots: one scheduler for the CPU the in-process galleries search on, shared by
//! both (issue 28: "one scheduler for CPU work").
//!
//! A search is CPU-bound and spreads itself over every core (the matcher's stages run on
//! rayon), so running more searches at once than there are cores only interleaves them: each
//! takes longer, none finishes sooner, and a submission's results wait for the slowest of its
//! two. So at most one search per core runs, over both galleries together (each gallery had
//! its own allowance, so up to twice that ran), and the rest wait here for a slot.
//!
//! **Fair by bureau.** Waiting searches are kept in a queue per *lane* — the bureau whose
//! submission asked for them ([`in_lane`]) — and a freed slot goes to the lanes in turn, the
//! oldest waiting search of each. A bureau flooding the gateway past what it can search fills
//! its own queue; another bureau's search waits for one slot to free, not behind every search
//! the flood has in flight. (The backlog already takes submissions bureau by bureau: this is
//! the same rule where the CPU is handed out.)
//!
//! A waiter that gives up (its search deadline passed while it waited; see
//! [`super::in_process`]) takes no slot: a freed slot passes over it to the next.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

tokio::task_local! {
    /// The lane of the searches this task asks for (see [`in_lane`]).
    static LANE: Arc<str>;
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

/// A number of slots, handed to lanes in turn (see the module comment).
pub struct SearchSlots {
    state: Arc<Mutex<State>>,
    total: usize,
}

struct State {
    free: usize,
    /// Per lane with someone waiting: its waiters, oldest first.
    waiting: HashMap<Arc<str>, VecDeque<oneshot::Sender<Slot>>>,
    /// The lanes with someone waiting, in the order they get the next slots.
    turn: VecDeque<Arc<str>>,
}

/// A held slot; dropping it hands the slot to the next waiter in turn, or frees it.
pub struct Slot {
    /// `None` once disarmed (a slot that found no taker and was handed on).
    state: Option<Arc<Mutex<State>>>,
}

impl SearchSlots {
    /// `total` slots (at least one).
    pub fn new(total: usize) -> Self {
        let total = total.max(1);
        SearchSlots {
            state: Arc::new(Mutex::new(State {
                free: total,
                waiting: HashMap::new(),
                turn: VecDeque::new(),
            })),
            total,
        }
    }

    /// One slot per core of this machine.
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Slots free now (for tests and metrics).
    pub fn free(&self) -> usize {
        self.state.lock().expect("slots lock").free
    }

    /// Searches waiting for a slot now, those that gave up included until a freed slot
    /// passes over them.
    pub fn waiting(&self) -> usize {
        let s = self.state.lock().expect("slots lock");
        s.waiting.values().map(VecDeque::len).sum()
    }

    /// A slot for a search in `lane`: at once if one is free, else when the lanes' turn and
    /// this lane's queue come to it. Cancel-safe: dropping the future gives up the place.
    pub async fn acquire(&self, lane: Arc<str>) -> Slot {
        let rx = {
            let mut s = self.state.lock().expect("slots lock");
            // A free slot means nobody waits: a freed slot goes to a waiter first.
            if s.free > 0 {
                s.free -= 1;
                return Slot {
                    state: Some(self.state.clone()),
                };
            }
            let (tx, rx) = oneshot::channel();
            let State { waiting, turn, .. } = &mut *s;
            let queue = waiting.entry(lane.clone()).or_default();
            if queue.is_empty() {
                turn.push_back(lane);
            }
            queue.push_back(tx);
            rx
        };
        // The sender is only ever dropped after sending, or with the slots themselves, which
        // outlive every search that holds them.
        rx.await
            .expect("search slots dropped while a search waited")
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        let mut s = state.lock().expect("slots lock");
        let State {
            free,
            waiting,
            turn,
        } = &mut *s;
        while let Some(lane) = turn.pop_front() {
            let queue = waiting.get_mut(&lane).expect("a lane in turn has waiters");
            let tx = queue.pop_front().expect("a lane in turn has waiters");
            if queue.is_empty() {
                waiting.remove(&lane);
            } else {
                turn.push_back(lane);
            }
            let handed = Slot {
                state: Some(state.clone()),
            };
            match tx.send(handed) {
                Ok(()) => return,
                // It gave up waiting: the slot passes on, without this one's drop handing it.
                Err(mut unclaimed) => unclaimed.state = None,
            }
        }
        *free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Waits until `n` searches are queued.
    async fn queued(slots: &SearchSlots, n: usize) {
        for _ in 0..1000 {
            if slots.waiting() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("{} queued, not {n}", slots.waiting());
    }

    #[tokio::test]
    async fn no_more_than_the_slots_are_held_at_once() {
        let slots = Arc::new(SearchSlots::new(2));
        let a = slots.acquire("CA".into()).await;
        let _b = slots.acquire("CA".into()).await;
        assert_eq!(slots.free(), 0);
        let s = slots.clone();
        let third = tokio::spawn(async move { s.acquire("TX".into()).await });
        queued(&slots, 1).await;
        assert!(!third.is_finished(), "a third slot was handed out");
        drop(a);
        let c = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("the freed slot went to the waiter")
            .unwrap();
        assert_eq!((slots.free(), slots.waiting()), (0, 0));
        drop(c);
        assert_eq!(slots.free(), 1);
    }

    /// A bureau with many searches waiting does not keep another's behind all of them: the
    /// slots go to the lanes in turn, each lane's oldest first.
    #[tokio::test]
    async fn freed_slots_go_to_the_lanes_in_turn() {
        let slots = Arc::new(SearchSlots::new(1));
        let held = slots.acquire("CA".into()).await;
        let (tx, mut order) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for (i, lane) in ["CA", "CA", "CA", "TX", "CA", "NY"].into_iter().enumerate() {
            let (s, tx) = (slots.clone(), tx.clone());
            tasks.push(tokio::spawn(async move {
                let slot = s.acquire(lane.into()).await;
                tx.send(format!("{lane}{i}")).unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
                drop(slot);
            }));
            // Queued in this order.
            queued(&slots, i + 1).await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        drop(tx);
        let mut got = Vec::new();
        while let Some(x) = order.recv().await {
            got.push(x);
        }
        assert_eq!(got, ["CA0", "TX3", "NY5", "CA1", "CA2", "CA4"]);
        assert_eq!(slots.free(), 1);
    }

    /// A search that gave up waiting (its deadline passed) takes no slot: the freed slot goes
    /// to the next in turn, and with nobody left it is free again.
    #[tokio::test]
    async fn a_waiter_that_gave_up_takes_no_slot() {
        let slots = Arc::new(SearchSlots::new(1));
        let held = slots.acquire("CA".into()).await;
        let gave_up =
            tokio::time::timeout(Duration::from_millis(20), slots.acquire("TX".into())).await;
        assert!(gave_up.is_err(), "no slot was free");
        let s = slots.clone();
        let next = tokio::spawn(async move { s.acquire("NY".into()).await });
        queued(&slots, 2).await;
        drop(held);
        let slot = tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("the slot passed over the one that gave up")
            .unwrap();
        assert_eq!((slots.free(), slots.waiting()), (0, 0));
        drop(slot);
        assert_eq!(slots.free(), 1);

        // Nobody left but one that gave up: the slot is free again.
        let held = slots.acquire("CA".into()).await;
        let _ = tokio::time::timeout(Duration::from_millis(5), slots.acquire("TX".into())).await;
        drop(held);
        assert_eq!((slots.free(), slots.waiting()), (1, 0));
    }

    #[tokio::test]
    async fn a_task_in_a_lane_names_it() {
        assert_eq!(&*current_lane(), "");
        assert_eq!(&*in_lane("TX", async { current_lane() }).await, "TX");
    }
}
