//! Delivery of an outbound stream (a field office's notifications, a bureau's responses)
//! from a cursor.
//!
//! Every subscriber reads from the durable log at its own cursor, in batches, and sleeps on
//! the stream's head when caught up. There is no per-subscriber queue to grow: a slow or dead
//! subscriber holds at most one batch plus the small channel in front of its connection, and
//! costs the writer nothing (DESIGN.md §3.5, STYLE habit 6). The stream ends when the client
//! goes away, when `follow` is false and the log is drained, or at shutdown.

use crate::store::{DynStore, StreamKey};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// Events read from the log per batch.
const BATCH: usize = 256;
/// Messages buffered in front of a subscriber's connection.
const CHANNEL: usize = 64;

/// Turns stored events into messages, by cursor.
pub type Decode<T> = fn(u64, &[u8]) -> Result<T, Status>;

/// Starts delivering `stream` after `after`.
pub fn follow<T: Send + 'static>(
    guard: crate::metrics::SubscriptionGuard,
    store: DynStore,
    stream: StreamKey,
    after: u64,
    follow: bool,
    mut shutdown: watch::Receiver<bool>,
    decode: Decode<T>,
) -> ReceiverStream<Result<T, Status>> {
    let (tx, rx) = mpsc::channel(CHANNEL);
    tokio::spawn(async move {
        // Counted as active until this task ends.
        let _guard = guard;
        let mut head = store.watch_head(&stream);
        let mut cursor = after;
        loop {
            let batch = match store.read(stream.clone(), cursor, BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx
                        .send(Err(crate::error::GatewayError::from(e).into()))
                        .await;
                    return;
                }
            };
            if batch.is_empty() {
                if !follow {
                    return;
                }
                tokio::select! {
                    r = head.wait_for(|h| *h > cursor) => if r.is_err() { return },
                    _ = tx.closed() => return,
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                continue;
            }
            for (c, bytes) in batch {
                let msg = decode(c, &bytes);
                if tx.send(msg).await.is_err() {
                    return;
                }
                cursor = c;
            }
        }
    });
    ReceiverStream::new(rx)
}
