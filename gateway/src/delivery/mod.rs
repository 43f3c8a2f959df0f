//! Delivery of an outbound stream (a field office's notifications, a bureau's responses)
//! from a cursor.
//!
//! Every subscriber reads from the durable log at its own cursor, in batches, and sleeps on
//! the stream's head when caught up. There is no per-subscriber queue to grow: a slow or dead
//! subscriber holds at most one batch plus the small channel in front of its connection, and
//! costs the writer nothing (DESIGN.md §3.5, STYLE habit 6). The stream ends when the client
//! goes away, when `follow` is false and the log is drained, at shutdown, or when the
//! recipient's certificate is revoked (then with UNAUTHENTICATED).
//!
//! **Disclosure audit.** Disclosures (who gets which TCN's result, at which cursor) are
//! committed to the store *before* their messages are handed to the connection, so the audit
//! never under-reports a delivery; if it cannot be written, nothing is delivered. To keep it
//! from over-reporting much (a client that cancels after one message once left a row for each
//! of a batch of up to 256, and could write thousands of rows a second that way), messages go
//! to the connection in chunks, each recorded and handed over only once the connection has
//! taken the previous one: the first chunk is one message, and each next one twice the last,
//! up to the connection's channel. A row is written only for a message handed to the
//! connection, and a client that stops reading stops the chunks within its flow-control
//! window; a catch-up of thousands of messages still costs one audit write per 64.

use crate::auth::principal::Principal;
use crate::auth::revocation::Revocations;
use crate::error::GatewayError;
use crate::store::{Disclosure, DisclosureKind, DynStore, StreamKey};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// Events read from the log per batch.
const BATCH: usize = 256;
/// Messages buffered in front of a subscriber's connection.
const CHANNEL: usize = 64;

/// What one stored event discloses: the submission it belongs to and the kind of result.
/// On a bureau stream `state` may be left empty: it is the stream's own state.
#[derive(Clone, Debug)]
pub struct Disclosed {
    pub state: String,
    pub tcn: String,
    pub kind: DisclosureKind,
}

/// Turns stored events into messages, by cursor, with what each discloses (if anything). An
/// event that does not decode is DATA_LOSS, delivered in its place, and ends the stream.
pub type Decode<T> = fn(u64, &[u8]) -> Result<(T, Option<Disclosed>), GatewayError>;

/// Who receives a delivery, through which RPC: for the audit and for revocation.
#[derive(Clone, Debug)]
pub struct Recipient {
    pub principal: Principal,
    /// Canonical serial of the certificate the call came with.
    pub serial: String,
    /// Full RPC name.
    pub rpc: &'static str,
}

impl Recipient {
    /// The audit record of delivering `what` at `cursor` (0 for a unary answer), now.
    pub fn disclosure(&self, what: Disclosed, cursor: u64) -> Disclosure {
        Disclosure {
            at_ms: crate::convert::now_ms(),
            recipient: self.principal.spiffe_id(),
            serial: self.serial.clone(),
            rpc: self.rpc.to_string(),
            state: what.state,
            tcn: what.tcn,
            kind: what.kind,
            cursor,
        }
    }
}

/// Bounds on open subscriptions (`Subscribe` and `StreamResponses` streams), in all and per
/// identity, so one client's reconnect loop or stream flood cannot hold every stream slot (or
/// the memory behind them: each holds a task, one batch and a channel of messages).
#[derive(Clone)]
pub struct SubscriptionLimits {
    total: Arc<tokio::sync::Semaphore>,
    max_total: usize,
    per_identity: usize,
    open: Arc<dashmap::DashMap<String, usize>>,
}

/// One admitted subscription's slot; freed when the stream's task ends.
pub struct SubscriptionSlot {
    _total: tokio::sync::OwnedSemaphorePermit,
    who: String,
    open: Arc<dashmap::DashMap<String, usize>>,
}

impl Drop for SubscriptionSlot {
    fn drop(&mut self) {
        self.open.remove_if_mut(&self.who, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

impl SubscriptionLimits {
    pub fn new(max_total: usize, per_identity: usize) -> Self {
        SubscriptionLimits {
            total: Arc::new(tokio::sync::Semaphore::new(max_total)),
            max_total,
            per_identity,
            open: Arc::default(),
        }
    }

    /// A slot for one more stream of `who` (a SPIFFE id), or RESOURCE_EXHAUSTED naming the
    /// bound that was reached.
    pub fn admit(&self, who: &str) -> Result<SubscriptionSlot, GatewayError> {
        let total = self.total.clone().try_acquire_owned().map_err(|_| {
            GatewayError::ResourceExhausted(format!(
                "the gateway has {} streams open, its limit; retry with backoff",
                self.max_total
            ))
        })?;
        let mut n = self.open.entry(who.to_string()).or_insert(0);
        if *n >= self.per_identity {
            return Err(GatewayError::ResourceExhausted(format!(
                "your identity already has {} streams open, the limit per identity; close one first",
                self.per_identity
            )));
        }
        *n += 1;
        drop(n);
        Ok(SubscriptionSlot {
            _total: total,
            who: who.to_string(),
            open: self.open.clone(),
        })
    }
}

/// One subscription: which stream, from where, for whom.
pub struct Subscription {
    pub store: DynStore,
    pub stream: StreamKey,
    pub after: u64,
    pub follow: bool,
    pub shutdown: watch::Receiver<bool>,
    pub recipient: Recipient,
    pub revocations: Revocations,
    /// Held until the stream ends.
    pub slot: SubscriptionSlot,
}

/// Starts delivering `sub.stream` after `sub.after`.
pub fn follow<T: Send + 'static>(
    guard: crate::metrics::SubscriptionGuard,
    sub: Subscription,
    decode: Decode<T>,
) -> ReceiverStream<Result<T, Status>> {
    let (tx, rx) = mpsc::channel(CHANNEL);
    tokio::spawn(async move {
        // Counted as active until this task ends.
        let _guard = guard;
        let Subscription {
            store,
            stream,
            after,
            follow,
            mut shutdown,
            recipient,
            revocations,
            slot,
        } = sub;
        let _slot = slot;
        let mut revoked = revocations.watch();
        let refuse = |tx: &mpsc::Sender<Result<T, Status>>| {
            let why = revocations.reason(&recipient.serial).unwrap_or_default();
            let status = crate::auth::revocation::refusal(&recipient.serial, &why, true).into();
            let tx = tx.clone();
            async move {
                let _ = tx.send(Err(status)).await;
            }
        };
        let mut head = store.watch_head(&stream);
        let mut cursor = after;
        // Messages recorded and handed over at once (see "Disclosure audit" above).
        let mut chunk_len = 1;
        loop {
            if revocations.is_revoked(&recipient.serial) {
                refuse(&tx).await;
                return;
            }
            let batch = match store.read(stream.clone(), cursor, BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx.send(Err(GatewayError::from(e).into())).await;
                    return;
                }
            };
            if batch.is_empty() {
                if !follow {
                    return;
                }
                tokio::select! {
                    r = head.wait_for(|h| *h > cursor) => if r.is_err() { return },
                    _ = revoked.changed() => {}
                    _ = tx.closed() => return,
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                continue;
            }
            // Messages up to the first event that does not decode; that one ends the stream
            // with DATA_LOSS after them, rather than skip an event the subscriber is owed.
            let mut out = std::collections::VecDeque::with_capacity(batch.len());
            let mut unreadable = None;
            for (c, bytes) in batch {
                match decode(c, &bytes) {
                    Ok((m, d)) => {
                        let d = d.map(|mut d| {
                            if let StreamKey::Bureau(state) = &stream {
                                d.state = state.clone();
                            }
                            d
                        });
                        out.push_back((c, m, d));
                    }
                    Err(e) => {
                        tracing::error!(%stream, cursor = c, error = %e, "stored event unreadable; stream ended");
                        unreadable = Some(e);
                        break;
                    }
                }
            }
            while !out.is_empty() {
                // The whole channel free: the client has taken everything handed over so far.
                let Ok(permits) = tx.reserve_many(CHANNEL).await else {
                    return;
                };
                let mut chunk: Vec<_> = out.drain(..chunk_len.min(out.len())).collect();
                let audit = chunk
                    .iter_mut()
                    .filter_map(|(c, _, d)| d.take().map(|d| recipient.disclosure(d, *c)))
                    .collect();
                if revocations.is_revoked(&recipient.serial) {
                    drop(permits);
                    refuse(&tx).await;
                    return;
                }
                if let Err(e) = store.record_disclosures(audit).await {
                    drop(permits);
                    let _ = tx.send(Err(GatewayError::from(e).into())).await;
                    return;
                }
                for ((c, msg, _), permit) in chunk.into_iter().zip(permits) {
                    permit.send(Ok(msg));
                    cursor = c;
                }
                chunk_len = (chunk_len * 2).min(CHANNEL);
            }
            if let Some(e) = unreadable {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}
