//! The shared work: what a replica takes from the log's work consumer, hands to its
//! pipeline, reports progress on and acknowledges (see the module documentation of
//! [`super`], "The log is the queue, shared").

use super::*;
use std::collections::VecDeque;

/// Submissions handed to the pipeline and not yet taken by it (the rest wait in the log).
pub(super) const HANDED_AHEAD: usize = 16;

/// How often a replica asks again every bureau's consumer, whatever the log showed: work
/// given back by a replica that stopped, or left by one that died, is announced by nothing
/// new in the log.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Longest a fetch from one bureau's consumer is waited for (it asks the server not to wait,
/// so an answer takes a round trip).
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);

/// The bureau whose work `op` is (its accepts go into entries on that bureau's work subject),
/// or `None` for an op of the log's own subject.
pub(super) fn work_lane(op: &Op) -> Option<&str> {
    match op {
        Op::Accept { key, .. } | Op::AcceptSealed { key, .. } => Some(&key.bureau),
        Op::Requeue { keys } => keys.first().map(|k| k.bureau.as_str()),
        _ => None,
    }
}

/// `bureau` as one token of a subject and part of a consumer's name: itself when it is
/// letters, digits, `_` and `-` (every bureau the project's own tools name), else `=` and its
/// bytes in hex (no plain name starts with `=`, so two bureaus never share a lane).
pub(super) fn lane_token(bureau: &str) -> String {
    let plain = !bureau.is_empty()
        && bureau
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        bureau.to_string()
    } else {
        let hex: String = bureau.bytes().map(|b| format!("{b:02x}")).collect();
        format!("={hex}")
    }
}

/// Work entries this replica took from the consumer and has not acknowledged, with the
/// submissions in each still open.
#[derive(Default)]
pub(super) struct Taken {
    entries: HashMap<u64, (jetstream::Message, HashSet<SubmissionKey>)>,
    /// Which entries hold a key (a resend's accept, or a requeue, puts a key in several).
    by_key: HashMap<SubmissionKey, Vec<u64>>,
}

impl Taken {
    /// Work entries held.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn hold(&mut self, seq: u64, msg: jetstream::Message, keys: HashSet<SubmissionKey>) {
        for k in &keys {
            self.by_key.entry(k.clone()).or_default().push(seq);
        }
        self.entries.insert(seq, (msg, keys));
    }

    /// `key` needs no more work: the entries left with nothing open, to acknowledge.
    pub(super) fn release(&mut self, key: &SubmissionKey) -> Vec<jetstream::Message> {
        let mut done = Vec::new();
        for seq in self.by_key.remove(key).unwrap_or_default() {
            let Some((_, open)) = self.entries.get_mut(&seq) else {
                continue;
            };
            open.remove(key);
            if open.is_empty() {
                done.extend(self.entries.remove(&seq).map(|(m, _)| m));
            }
        }
        done
    }
}

/// Acknowledges finished work entries (a failure is only logged: the server hands the entry
/// out again, and the one who takes it finds nothing pending in it).
async fn ack_all(msgs: Vec<jetstream::Message>) {
    for m in msgs {
        if let Err(e) = m.ack().await {
            tracing::warn!(error = %e, "work entry not acknowledged; it will be handed out again");
        }
    }
}

/// Gives back every work entry held (the store is closing), so other replicas take them at
/// once.
pub(super) async fn give_back(taken: &Mutex<Taken>) {
    let held: Vec<jetstream::Message> = {
        let mut t = taken.lock().expect("taken");
        t.by_key.clear();
        t.entries.drain().map(|(_, (m, _))| m).collect()
    };
    for m in held {
        // Confirmed by the server (a plain publish could be lost as the connection closes);
        // unanswered, the server hands it out after `stale_after`.
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            m.double_ack_with(jetstream::AckKind::Nak(None)),
        )
        .await;
    }
}

/// `key` completed: acknowledges the held entries it was the last open submission of.
pub(super) async fn release(taken: &Mutex<Taken>, key: &SubmissionKey) {
    let finished = taken.lock().expect("taken").release(key);
    ack_all(finished).await;
}

/// Acknowledges the held work entries whose submissions all completed (at any replica) or
/// are gone, and tells the server this replica is still working on the rest.
pub(super) async fn keep_taken(taken: &Mutex<Taken>, view: &RedbStore) {
    let open: Vec<SubmissionKey> = taken
        .lock()
        .expect("taken")
        .by_key
        .keys()
        .cloned()
        .collect();
    let mut finished = Vec::new();
    for k in open {
        // Completed, or never accepted (a resend refused as a conflict); a failed read keeps it.
        match view.submission(k.clone()).await {
            Ok(Some(s)) if !s.completed => {}
            Ok(_) => finished.push(k),
            Err(_) => {}
        }
    }
    let (done, working): (Vec<_>, Vec<_>) = {
        let mut t = taken.lock().expect("taken");
        let done: Vec<_> = finished.iter().flat_map(|k| t.release(k)).collect();
        let working: Vec<_> = t.entries.values().map(|(m, _)| m.clone()).collect();
        (done, working)
    };
    ack_all(done).await;
    for m in working {
        if let Err(e) = m.ack_with(jetstream::AckKind::Progress).await {
            tracing::warn!(error = %e, "work entry's progress not reported");
        }
    }
}

/// One bureau's shared work, as this replica sees it.
struct Lane {
    token: String,
    /// Its durable consumer, once looked up (or created).
    consumer: Option<consumer::Consumer<consumer::pull::Config>>,
    /// The last of its entries the view applied that this replica knows of.
    seen: u64,
    /// Whether its consumer may have an entry for this replica.
    more: bool,
    /// Submissions of the entries taken, not yet handed to the pipeline.
    in_hand: VecDeque<SubmissionKey>,
}

/// Takes work from the shared consumers while the pipeline has room, bureau by bureau in
/// turn, and hands it the submissions that are still pending: one of a bureau's, then one of
/// the next bureau's, so a bureau that floods the log delays its own work, not others'.
pub(super) struct HandOut {
    pub(super) stream: stream::Stream,
    pub(super) subjects: Subjects,
    pub(super) stale_after: Duration,
    /// Every lane the log has work on, and its last entry applied (from the follower).
    pub(super) lanes: watch::Receiver<HashMap<String, u64>>,
    pub(super) view: Arc<RedbStore>,
    pub(super) applied: watch::Receiver<u64>,
    pub(super) to: mpsc::Sender<PendingKey>,
    pub(super) taken: Arc<Mutex<Taken>>,
    pub(super) counts: Arc<Counts>,
}

impl HandOut {
    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut lanes: Vec<Lane> = Vec::new();
        let mut turn = 0usize;
        let mut polled = tokio::time::Instant::now();
        // Whether the log may have shown new lanes or entries (a change seen by `changed`
        // is no longer `has_changed`).
        let mut look = true;
        loop {
            // Room first: what this replica has no room for stays in the log for the others.
            let permit = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                permit = self.to.reserve() => match permit {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            if look || self.lanes.has_changed().unwrap_or(false) {
                learn_lanes(&mut self.lanes, &mut lanes);
                look = false;
                self.counts
                    .lanes
                    .store(lanes.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            if polled.elapsed() >= POLL_EVERY {
                polled = tokio::time::Instant::now();
                lanes.iter_mut().for_each(|l| l.more = true);
            }
            let Some(at) = (0..lanes.len())
                .map(|i| (turn + i) % lanes.len())
                .find(|&i| !lanes[i].in_hand.is_empty() || lanes[i].more)
            else {
                // Nothing to take: wait for new work in the log, or the next poll.
                drop(permit);
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = self.lanes.changed() => look = true,
                    _ = tokio::time::sleep_until(polled + POLL_EVERY) => {}
                }
                continue;
            };
            let lane = &mut lanes[at];
            if lane.in_hand.is_empty() && !self.take_entry(lane, &mut stop).await {
                return;
            }
            let Some(key) = lane.in_hand.pop_front() else {
                continue; // its consumer had nothing for this replica: the next lane's turn
            };
            self.counts
                .in_hand
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            turn = at + 1;
            match self.view.pending(key.clone()).await {
                Ok(Some(p)) => {
                    Counts::add(&self.counts.handed_out, 1);
                    permit.send(PendingKey::of(&p));
                }
                // Completed since it was taken (at another replica, or by a resend's
                // conflict): nothing to do, and its entry may be finished.
                Ok(None) => release(&self.taken, &key).await,
                Err(e) => {
                    // Held, so its entry is given back or redelivered rather than lost.
                    tracing::error!(key = %key, error = %e, "shared work: the view failed; submission left to be handed out again");
                }
            }
        }
    }

    /// Takes one entry from `lane`'s consumer into its hand (or marks the lane empty);
    /// `false` once stopping.
    async fn take_entry(&self, lane: &mut Lane, stop: &mut watch::Receiver<bool>) -> bool {
        if lane.consumer.is_none() {
            let name = format!("{WORK_CONSUMER}-{}", lane.token);
            let made = self
                .stream
                .get_or_create_consumer(
                    &name,
                    consumer::pull::Config {
                        durable_name: Some(name.clone()),
                        description: Some(
                            "one bureau's submissions to process, shared by the gateway replicas"
                                .into(),
                        ),
                        filter_subject: self.subjects.lane(&lane.token),
                        deliver_policy: consumer::DeliverPolicy::All,
                        ack_policy: consumer::AckPolicy::Explicit,
                        ack_wait: self.stale_after,
                        ..Default::default()
                    },
                )
                .await;
            match made {
                Ok(c) => lane.consumer = Some(c),
                Err(e) => {
                    tracing::warn!(consumer = %name, error = %e, "shared work: no consumer; retrying at the next poll");
                    return failed(lane, stop).await;
                }
            }
        }
        let consumer = lane.consumer.as_ref().expect("looked up above");
        // No wait: an empty lane answers at once, and the next lane has its turn.
        let mut batch = match consumer.fetch().max_messages(1).messages().await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(lane = %lane.token, error = %e, "shared work: fetch failed; retrying at the next poll");
                return failed(lane, stop).await;
            }
        };
        // A fetch that asks nothing to wait answers at once; one that does not (its consumer
        // deleted under it: the request then goes unanswered) would stall every lane.
        let msg = tokio::select! {
            _ = stop.wait_for(|s| *s) => return false,
            m = tokio::time::timeout(FETCH_TIMEOUT, batch.next()) => m,
        };
        let Ok(msg) = msg else {
            tracing::warn!(lane = %lane.token, "shared work: the fetch went unanswered; retrying at the next poll");
            return failed(lane, stop).await;
        };
        match msg {
            Some(Ok(m)) => self.hold(lane, m, stop).await,
            Some(Err(e)) => {
                tracing::warn!(lane = %lane.token, error = %e, "shared work: fetch failed; retrying at the next poll");
                failed(lane, stop).await
            }
            None => {
                lane.more = false;
                true
            }
        }
    }

    /// Holds one work entry and puts its pending submissions in `lane`'s hand; `false` once
    /// stopping.
    async fn hold(
        &self,
        lane: &mut Lane,
        msg: jetstream::Message,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let (seq, delivered) = match msg.info() {
            Ok(i) => (i.stream_sequence, i.delivered),
            Err(e) => {
                tracing::warn!(error = %e, "shared work: an entry without metadata; skipped");
                return true;
            }
        };
        let redelivered = delivered > 1;
        if redelivered {
            Counts::add(&self.counts.redelivered, 1);
        }
        // The view must hold the entry before it can say what in it is still pending.
        let mut applied = self.applied.clone();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return false,
            r = applied.wait_for(|a| *a >= seq) => if r.is_err() { return false },
        }
        let keys: Vec<SubmissionKey> = match postcard::from_bytes::<Entry>(&msg.payload) {
            Ok(entry) => entry
                .ops
                .iter()
                .filter_map(|b| postcard::from_bytes::<Op>(b).ok())
                .flat_map(|op| match op {
                    Op::Accept { key, .. } | Op::AcceptSealed { key, .. } => vec![key],
                    Op::Requeue { keys } => keys,
                    _ => Vec::new(),
                })
                .collect(),
            Err(e) => {
                tracing::error!(seq, error = %e, "shared work: unreadable entry; nothing in it can be processed");
                Vec::new()
            }
        };
        let mut open = Vec::new();
        let mut seen = HashSet::new();
        for k in keys {
            if !seen.insert(k.clone()) {
                continue;
            }
            match self.view.pending(k.clone()).await {
                Ok(Some(_)) => open.push(k),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(seq, error = %e, "shared work: the view failed; entry left to be handed out again");
                    return true;
                }
            }
        }
        if open.is_empty() {
            ack_all(vec![msg]).await;
            return true;
        }
        if redelivered {
            Counts::add(&self.counts.redelivered_submissions, open.len() as u64);
        }
        self.taken
            .lock()
            .expect("taken")
            .hold(seq, msg, open.iter().cloned().collect());
        Counts::add(&self.counts.in_hand, open.len() as u64);
        lane.in_hand.extend(open);
        true
    }
}

/// Adds the lanes the log has newly shown, and marks those with new entries.
fn learn_lanes(log: &mut watch::Receiver<HashMap<String, u64>>, lanes: &mut Vec<Lane>) {
    let known = log.borrow_and_update();
    for (token, &seq) in known.iter() {
        match lanes.iter_mut().find(|l| &l.token == token) {
            Some(l) if l.seen < seq => {
                l.seen = seq;
                l.more = true;
            }
            Some(_) => {}
            None => lanes.push(Lane {
                token: token.clone(),
                consumer: None,
                seen: seq,
                more: true,
                in_hand: VecDeque::new(),
            }),
        }
    }
}

/// After `lane`'s consumer failed: the lane waits for the next poll (the other lanes keep
/// their turns meanwhile), and its consumer is looked up again then (an operator may have
/// deleted it). Waits a moment, so a server that is down is not asked in a tight loop;
/// `false` once stopping.
async fn failed(lane: &mut Lane, stop: &mut watch::Receiver<bool>) -> bool {
    lane.more = false;
    lane.consumer = None;
    tokio::select! {
        _ = stop.wait_for(|s| *s) => false,
        _ = tokio::time::sleep(Duration::from_millis(100)) => true,
    }
}
