//! The shared work: what a replica takes from the log's work consumer, hands to its
//! pipeline, reports progress on and acknowledges (see the module documentation of
//! [`super`], "The log is the queue, shared").

use super::*;

/// Submissions handed to the pipeline and not yet taken by it (the rest wait in the log).
pub(super) const HANDED_AHEAD: usize = 16;

/// Whether `op` goes into an entry on the work subject.
pub(super) fn is_work(op: &Op) -> bool {
    matches!(
        op,
        Op::Accept { .. } | Op::AcceptSealed { .. } | Op::Requeue { .. }
    )
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

/// Takes work entries from the shared consumer while the pipeline has room, and hands it the
/// submissions in them that are still pending.
pub(super) struct HandOut {
    pub(super) consumer: consumer::Consumer<consumer::pull::Config>,
    pub(super) view: Arc<RedbStore>,
    pub(super) applied: watch::Receiver<u64>,
    pub(super) to: mpsc::Sender<PendingKey>,
    pub(super) taken: Arc<Mutex<Taken>>,
    pub(super) counts: Arc<Counts>,
}

impl HandOut {
    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            // Room first: what this replica has no room for stays in the log for the others.
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                permit = self.to.reserve() => match permit {
                    Ok(p) => drop(p),
                    Err(_) => return,
                },
            }
            let fetched = self
                .consumer
                .fetch()
                .max_messages(1)
                .expires(Duration::from_secs(1))
                .messages()
                .await;
            let mut batch = match fetched {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "shared work: fetch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            loop {
                let msg = tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    m = batch.next() => m,
                };
                match msg {
                    Some(Ok(m)) => {
                        if !self.hand(m, &mut stop).await {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "shared work: fetch failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        break;
                    }
                    None => break,
                }
            }
        }
    }

    /// Hands out the pending submissions of one work entry; `false` once stopping.
    async fn hand(&mut self, msg: jetstream::Message, stop: &mut watch::Receiver<bool>) -> bool {
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
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return false,
            r = self.applied.wait_for(|a| *a >= seq) => if r.is_err() { return false },
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
            match self.view.pending(k).await {
                Ok(Some(p)) => open.push(PendingKey::of(&p)),
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
        let held = open.iter().map(|p| p.key.clone()).collect();
        self.taken.lock().expect("taken").hold(seq, msg, held);
        for p in open {
            Counts::add(&self.counts.handed_out, 1);
            if self.to.send(p).await.is_err() {
                return false;
            }
        }
        true
    }
}
