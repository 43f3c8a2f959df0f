//! The log follower: applies every entry of the log, in stream order, to this replica's view,
//! and answers this replica's own writes once they are applied (see the module documentation
//! of [`super`]).

use super::view::Checkpoints;
use super::*;

/// What the log follower works with.
pub(super) struct Follow {
    pub(super) stream: stream::Stream,
    pub(super) view: mpsc::Sender<WriteOp>,
    /// The first entry the view has yet to apply (1, or one past its file's checkpoint).
    pub(super) from: u64,
    /// The view's checkpoints, when it is kept in a file (see [`super::view`]).
    pub(super) checkpoints: Option<Checkpoints>,
    pub(super) me: String,
    pub(super) waiters: Arc<Mutex<HashMap<u64, Replies>>>,
    pub(super) applied: watch::Sender<u64>,
    pub(super) settings: watch::Sender<u64>,
    /// Submissions this process accepted, when they complete (at any replica).
    pub(super) completed: mpsc::UnboundedSender<SubmissionKey>,
    pub(super) subjects: Subjects,
    /// Each lane of the shared work (a bureau's subject token) and its last entry applied.
    pub(super) lanes: watch::Sender<HashMap<String, u64>>,
}

/// Follows the log from `f.from`, applying each entry to the view in stream order (with a
/// checkpoint behind each entry's ops, for a view kept in a file) and answering this
/// replica's own writes; recreates its consumer after errors.
pub(super) async fn follow(f: Follow, mut stop: watch::Receiver<bool>) {
    let Follow {
        stream,
        view,
        from,
        mut checkpoints,
        me,
        waiters,
        applied,
        settings,
        completed,
        subjects,
        lanes,
    } = f;
    // What this process accepted and has not seen completed.
    let mut mine: HashSet<SubmissionKey> = HashSet::new();
    let mut next = from;
    loop {
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: next,
                },
                ..Default::default()
            })
            .await;
        let mut messages = match consumer {
            Ok(c) => match c.messages().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "log follower: no messages; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "log follower: no consumer; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        // Caught up with an empty log: say so, so `connect` can return.
        applied.send_if_modified(|a| {
            let caught = next - 1;
            if *a < caught {
                *a = caught;
                true
            } else {
                false
            }
        });
        loop {
            let msg = tokio::select! {
                // (The guard `wait_for` answers is let go of at once: it may not be held
                // across the checkpoint's awaits.)
                _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => {
                    // A clean stop leaves the view durable where it is: nothing to apply again.
                    if let Some(c) = &checkpoints
                        && next > from
                    {
                        let last = submit_op(&view, c.last(next - 1));
                        drop(tokio::time::timeout(Duration::from_secs(5), last).await);
                    }
                    return;
                }
                m = messages.next() => m,
            };
            let msg = match msg {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "log follower error; resuming at entry {next}");
                    break;
                }
                None => break,
            };
            let seq = match msg.info() {
                Ok(i) => i.stream_sequence,
                Err(e) => {
                    tracing::warn!(error = %e, "log entry without metadata; resuming");
                    break;
                }
            };
            if seq < next {
                continue; // redelivered after a recreate
            }
            if seq > next {
                // Entries this view lacks are gone from the stream (see `trim.rs`): applying
                // what follows would make a view unlike every other. Stop; a restart loads the
                // log's snapshot.
                tracing::error!(
                    expected = next,
                    delivered = seq,
                    "the log was trimmed past this replica's view; it stops following (writes fail) until restarted, when it loads the log's snapshot"
                );
                return;
            }
            let entry: Entry = match postcard::from_bytes(&msg.payload) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(seq, error = %e, "unreadable log entry skipped");
                    next = seq + 1;
                    applied.send_replace(seq);
                    continue;
                }
            };
            let mut answers = Vec::with_capacity(entry.ops.len());
            let mut keys = Vec::with_capacity(entry.ops.len());
            let mut setting = false;
            for bytes in &entry.ops {
                let op: Op = match postcard::from_bytes(bytes) {
                    Ok(op) => op,
                    Err(e) => {
                        tracing::error!(seq, error = %e, "unreadable op skipped");
                        answers.push(None);
                        keys.push(None);
                        continue;
                    }
                };
                setting |= matches!(op, Op::Setting { .. });
                keys.push(match &op {
                    Op::Accept { key, .. }
                    | Op::AcceptSealed { key, .. }
                    | Op::Complete { key, .. } => Some(key.clone()),
                    _ => None,
                });
                let Some(rx) = send(&view, op).await else {
                    return;
                };
                answers.push(Some(rx));
            }
            // The checkpoint right behind the entry's ops: the view commits them together.
            let mark = match &mut checkpoints {
                Some(c) => match send(&view, c.after(seq)).await {
                    Some(rx) => Some(rx),
                    None => return,
                },
                None => None,
            };
            let mut outcomes = Vec::with_capacity(answers.len());
            for a in answers {
                outcomes.push(match a {
                    Some(rx) => rx.await.unwrap_or(Err(StoreError::Closed)),
                    None => Err(StoreError::Unavailable("unreadable log entry".into())),
                });
            }
            if let Some(rx) = mark
                && let Err(e) = rx.await.unwrap_or(Err(StoreError::Closed))
            {
                // The view's file refused the entry's transaction whole (its writer reopens
                // the file): the entry is applied again, and only then answered.
                tracing::error!(seq, error = %e, "log entry not applied to the view's file; applying it again");
                tokio::time::sleep(Duration::from_millis(500)).await;
                break;
            }
            let ours = entry.origin == me;
            for (k, o) in keys.into_iter().zip(&outcomes) {
                match (k, o) {
                    (Some(k), Ok(Outcome::Accepted(Accepted::New(_)))) if ours => {
                        mine.insert(k);
                    }
                    (Some(k), Ok(Outcome::Completed(true))) if mine.remove(&k) => {
                        drop(completed.send(k));
                    }
                    _ => {}
                }
            }
            if ours && let Some(replies) = waiters.lock().expect("waiters").remove(&entry.batch) {
                for (r, o) in replies.into_iter().zip(outcomes) {
                    drop(r.send(o));
                }
            }
            next = seq + 1;
            applied.send_replace(seq);
            if let Some(lane) = subjects.lane_of(&msg.subject) {
                lanes.send_modify(|l| match l.get_mut(lane) {
                    Some(last) => *last = seq,
                    None => {
                        l.insert(lane.to_string(), seq);
                    }
                });
            }
            if setting {
                settings.send_modify(|v| *v += 1);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Queues `op` for the view's writer, without waiting for its answer (`None`: the writer is
/// gone).
async fn send(
    view: &mpsc::Sender<WriteOp>,
    op: Op,
) -> Option<oneshot::Receiver<StoreResult<Outcome>>> {
    let (reply, rx) = oneshot::channel();
    view.send(WriteOp { op, reply }).await.ok()?;
    Some(rx)
}
