//! The listener every server of ours runs on (the gateway's, and a matcher shard's), built
//! here instead of by tonic so that
//!
//! - **connections are bounded** ([`ListenOptions::max_connections`]): past the bound a
//!   connection is closed as it arrives, before any TLS work, so a flood costs an `accept` and
//!   a `close` each. Only connections past their handshake, which needs a certificate of our
//!   CA, count against it;
//! - **handshakes in progress have their own, smaller room**, in all
//!   ([`ListenOptions::max_handshakes`]) and per source address
//!   ([`ListenOptions::max_handshakes_per_address`]). When a new connection finds its room full,
//!   the **oldest silent** connection in it (one that has sent nothing yet), or failing that
//!   the oldest handshake, is closed to make way: sockets that never speak cannot keep a real
//!   client out (1,100 of them once held all 1,024 slots, and a bureau's connections waited and
//!   failed), because a real client sends its ClientHello at once. On Linux silent sockets do
//!   not even reach the room: the kernel hands a connection over only once it has spoken
//!   (`TCP_DEFER_ACCEPT`);
//! - **a handshake has a deadline** ([`ListenOptions::handshake_timeout`]): a slow-loris
//!   client that opens a socket and never finishes the handshake is closed when it expires.
//!   Handshakes run in their own tasks, so a slow one never delays the next accept;
//! - **an idle connection is closed** ([`ListenOptions::idle_timeout`]): one on which no call
//!   has started, sent a message or ended for that long. An open stream that carries nothing
//!   does not count as use (a Health `Watch` once kept a connection forever), nor do HTTP/2
//!   keep-alive pings; a quiet subscriber is closed like any idle client and re-opens after
//!   its last cursor (the client library's followers do so by themselves). The idle timeout
//!   is never shorter than a unary call's deadline, so a call still being answered is not cut;
//! - the TLS configuration can be reloaded ([`ServerTls`]).
//!
//! Connections come out as [`TlsConn`], which tonic serves like its own TLS streams: the peer
//! certificates reach `Request::peer_certs()` as usual. [`grpc_server`] is the tonic server
//! with the per-connection and per-call bounds, [`serve`] runs a router on this listener.

use crate::auth::tls::ServerTls;
use crate::server::ServeOptions;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, Router, TcpConnectInfo, TlsConnectInfo};

/// The tonic server every listener of ours serves, with the bounds of `o`: HTTP/2 keep-alive,
/// concurrent streams per connection, and the deadline of a unary call (or of a stream's
/// opening: the smaller of this and the client's `grpc-timeout`, which tonic honours). Each
/// call is counted on its connection, for the idle timeout.
pub fn grpc_server(o: &ServeOptions, calls: CallTracker) -> tonic::transport::Server<Tracking> {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(o.keepalive_interval))
        .http2_keepalive_timeout(Some(o.keepalive_timeout))
        .max_concurrent_streams(Some(o.max_streams_per_connection))
        .timeout(o.request_timeout)
        .layer(TrackCalls(calls))
}

/// The layers of [`grpc_server`].
pub type Tracking = tower::layer::util::Stack<TrackCalls, tower::layer::util::Identity>;

/// Serves `router` (made from [`grpc_server`] with `calls`) over mutual TLS on `listener`,
/// with the connection bounds of `o`, until `shutdown` completes.
pub async fn serve(
    router: Router<Tracking>,
    listener: TcpListener,
    tls: Arc<ServerTls>,
    o: &ServeOptions,
    calls: CallTracker,
    stats: Arc<ListenStats>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let incoming = incoming(
        listener,
        tls,
        ListenOptions {
            max_connections: o.max_connections,
            max_handshakes: o.max_handshakes,
            max_handshakes_per_address: o.max_handshakes_per_address,
            handshake_timeout: o.tls_handshake_timeout,
            idle_timeout: o.idle_timeout,
        },
        calls,
        stats,
    );
    router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// Bounds of the listener. See the module documentation.
#[derive(Clone, Debug)]
pub struct ListenOptions {
    /// Connections past their handshake.
    pub max_connections: usize,
    /// Handshakes in progress, in all and from one source address.
    pub max_handshakes: usize,
    pub max_handshakes_per_address: usize,
    pub handshake_timeout: Duration,
    /// `None`: idle connections are kept.
    pub idle_timeout: Option<Duration>,
}

/// Counters of the listener, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct ListenStats {
    pub accepted: AtomicU64,
    /// Closed at once because `max_connections` were open.
    pub refused_over_limit: AtomicU64,
    pub handshake_timeouts: AtomicU64,
    pub handshake_failures: AtomicU64,
    /// Closed mid-handshake to make room for a newer connection (see the module docs).
    pub handshake_evicted: AtomicU64,
    pub idle_closed: AtomicU64,
    pub open: AtomicUsize,
}

impl ListenStats {
    /// The Prometheus text of these counters (see [`crate::metrics`]).
    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = format!(
            "# HELP interop_connections_open Client connections past their TLS handshake.\n# TYPE interop_connections_open gauge\ninterop_connections_open {}\n",
            self.open.load(Ordering::Relaxed)
        );
        out.push_str("# HELP interop_connections_total TCP connections by fate.\n# TYPE interop_connections_total counter\n");
        for (outcome, c) in [
            ("accepted", &self.accepted),
            ("refused_over_limit", &self.refused_over_limit),
            ("handshake_timeout", &self.handshake_timeouts),
            ("handshake_failed", &self.handshake_failures),
            ("handshake_evicted", &self.handshake_evicted),
            ("idle_closed", &self.idle_closed),
        ] {
            out.push_str(&format!(
                "interop_connections_total{{outcome=\"{outcome}\"}} {}\n",
                get(c)
            ));
        }
        out
    }
}

/// The last use of each connection, by peer address: a call starting, a message of its
/// answer sent, a call ending (see [`TrackCalls`], the layer that notes them), so the idle
/// timer of a connection knows when it was last used.
#[derive(Clone, Default)]
pub struct CallTracker {
    // Sharded: every call looks its connection up once.
    conns: Arc<dashmap::DashMap<SocketAddr, Arc<Activity>>>,
}

#[derive(Debug)]
struct Activity {
    /// Milliseconds since `epoch` of the last use.
    last_ms: AtomicU64,
    epoch: Instant,
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    /// How long since the connection was last used.
    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }
}

/// One call on a connection: notes its uses, and its end when dropped.
pub struct CallGuard(Option<Arc<Activity>>);

impl CallGuard {
    /// A message of the call's answer was sent.
    fn used(&self) {
        if let Some(a) = &self.0 {
            a.touch();
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.used();
    }
}

impl CallTracker {
    /// A call from `peer` starts; it ends when the guard is dropped.
    pub fn begin(&self, peer: Option<SocketAddr>) -> CallGuard {
        let g = CallGuard(peer.and_then(|p| self.conns.get(&p).map(|a| a.clone())));
        g.used();
        g
    }

    fn register(&self, peer: SocketAddr) -> Arc<Activity> {
        let a = Arc::new(Activity {
            last_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        self.conns.insert(peer, a.clone());
        a
    }

    /// Forgets a closed connection — only if the entry is still its own: a new connection
    /// from the same address may have registered before the old one was dropped.
    fn forget(&self, peer: SocketAddr, mine: &Arc<Activity>) {
        self.conns.remove_if(&peer, |_, a| Arc::ptr_eq(a, mine));
    }
}

/// One accepted, handshaken connection. Holds its connection slot until dropped.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    _slot: tokio::sync::OwnedSemaphorePermit,
    peer: SocketAddr,
    calls: CallTracker,
    activity: Arc<Activity>,
    idle: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
    stats: Arc<ListenStats>,
}

impl Drop for TlsConn {
    fn drop(&mut self) {
        self.calls.forget(self.peer, &self.activity);
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl TlsConn {
    /// `Err` once the connection has not been used for the idle timeout. Polled on every
    /// read, with a timer so an otherwise silent connection is woken to check.
    fn check_idle(&mut self, cx: &mut TaskContext<'_>) -> std::io::Result<()> {
        let Some((limit, sleep)) = &mut self.idle else {
            return Ok(());
        };
        while sleep.as_mut().poll(cx).is_ready() {
            match self.activity.idle_for() {
                idle if idle >= *limit => {
                    self.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(peer = %self.peer, "idle connection closed");
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connection idle past the idle timeout",
                    ));
                }
                idle => {
                    let at = tokio::time::Instant::now() + (*limit - idle);
                    sleep.as_mut().reset(at);
                }
            }
        }
        Ok(())
    }
}

impl Connected for TlsConn {
    type ConnectInfo = TlsConnectInfo<TcpConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.check_idle(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// One handshake in progress.
struct InProgress {
    ip: IpAddr,
    /// Closes it when it is evicted.
    evict: Arc<Notify>,
    /// Whether the client has sent anything yet.
    spoke: bool,
}

/// Handshakes in progress, oldest first, in all and by source address.
struct Handshaking {
    max: usize,
    max_per_address: usize,
    next: u64,
    all: BTreeMap<u64, InProgress>,
    by_address: HashMap<IpAddr, std::collections::BTreeSet<u64>>,
}

impl Handshaking {
    fn new(o: &ListenOptions) -> Self {
        Handshaking {
            max: o.max_handshakes.max(1),
            max_per_address: o.max_handshakes_per_address.max(1),
            next: 0,
            all: BTreeMap::new(),
            by_address: HashMap::new(),
        }
    }

    /// Makes room for a handshake from `ip`, evicting one of that address's (if it has its
    /// fill) or else of all (if the room is full): the oldest silent one, or failing that the
    /// oldest. Returns the new handshake's id and eviction notice, and how many were evicted.
    fn begin(&mut self, ip: IpAddr) -> (u64, Arc<Notify>, u64) {
        let mut evicted = 0;
        let here = self.by_address.get(&ip);
        let victim = if here.is_some_and(|ids| ids.len() >= self.max_per_address) {
            here.and_then(|ids| self.pick(ids.iter().copied()))
        } else if self.all.len() >= self.max {
            self.pick(self.all.keys().copied())
        } else {
            None
        };
        if let Some(id) = victim
            && let Some(gone) = self.end(id)
        {
            gone.evict.notify_one();
            evicted += 1;
        }
        let id = self.next;
        self.next += 1;
        let evict = Arc::new(Notify::new());
        self.all.insert(
            id,
            InProgress {
                ip,
                evict: evict.clone(),
                spoke: false,
            },
        );
        self.by_address.entry(ip).or_default().insert(id);
        (id, evict, evicted)
    }

    /// The oldest silent handshake of `ids` (oldest first), or else the oldest.
    fn pick(&self, mut ids: impl Iterator<Item = u64> + Clone) -> Option<u64> {
        let silent = ids
            .clone()
            .find(|id| self.all.get(id).is_some_and(|h| !h.spoke));
        silent.or_else(|| ids.next())
    }

    /// Handshake `id`'s client has sent its first bytes.
    fn spoke(&mut self, id: u64) {
        if let Some(h) = self.all.get_mut(&id) {
            h.spoke = true;
        }
    }

    /// Forgets handshake `id` (done, failed, timed out or evicted).
    fn end(&mut self, id: u64) -> Option<InProgress> {
        let gone = self.all.remove(&id)?;
        if let Some(ids) = self.by_address.get_mut(&gone.ip) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_address.remove(&gone.ip);
            }
        }
        Some(gone)
    }
}

/// Asks the kernel to hand over a connection only once its client has sent something (Linux's
/// `TCP_DEFER_ACCEPT`, up to `wait`): a socket that never speaks then waits in the kernel's
/// queue, never in the handshake room, while a real client, whose ClientHello follows its
/// connect at once, is accepted with it. Elsewhere, or if the option is refused, the room's
/// eviction of silent sockets is the defence.
fn defer_accept(listener: &TcpListener, wait: Duration) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let secs = wait.as_secs().clamp(1, 60) as libc::c_int;
        // SAFETY: a valid, open socket descriptor, an int option and its size.
        let rc = unsafe {
            libc::setsockopt(
                listener.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&secs as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "TCP_DEFER_ACCEPT refused; silent sockets reach the handshake room");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (listener, wait);
}

/// Accepts TCP connections on `listener`, handshakes each in its own task under the deadline
/// and the handshake room's bounds, and yields the ones that complete while fewer than
/// `max_connections` are open. Stops when the returned stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    opts: ListenOptions,
    calls: CallTracker,
    stats: Arc<ListenStats>,
) -> ReceiverStream<Result<TlsConn, std::io::Error>> {
    defer_accept(&listener, opts.handshake_timeout);
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(opts.max_connections));
    let handshaking = Arc::new(Mutex::new(Handshaking::new(&opts)));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            if slots.available_permits() == 0 {
                stats.refused_over_limit.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, "connection refused: max_connections open");
                drop(tcp);
                continue;
            }
            stats.accepted.fetch_add(1, Ordering::Relaxed);
            let (id, evicted_notice, evicted) = handshaking
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .begin(peer.ip());
            stats
                .handshake_evicted
                .fetch_add(evicted, Ordering::Relaxed);
            let _ = tcp.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
            let (tx, calls, stats, opts) = (tx.clone(), calls.clone(), stats.clone(), opts.clone());
            let (slots, handshaking) = (slots.clone(), handshaking.clone());
            tokio::spawn(async move {
                // Pinned here, not moved into the timeout: on a timeout the half-done handshake
                // (and its socket) lives until the end of this task, so the counter is updated
                // before the peer sees the connection close.
                let deadline = tokio::time::Instant::now() + opts.handshake_timeout;
                // Silent until its first bytes arrive (or it closes): the first to make way.
                let spoke = tokio::select! {
                    r = tokio::time::timeout_at(deadline, tcp.readable()) => r.is_ok(),
                    _ = evicted_notice.notified() => {
                        tracing::debug!(%peer, "silent connection closed to make room for a newer one");
                        return;
                    }
                };
                // Past the deadline without a byte: the handshake below times out at once.
                if spoke {
                    handshaking
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .spoke(id);
                }
                let accept = acceptor.accept(tcp).into_fallible();
                tokio::pin!(accept);
                let outcome = tokio::select! {
                    r = tokio::time::timeout_at(deadline, accept.as_mut()) => Some(r),
                    _ = evicted_notice.notified() => None,
                };
                handshaking
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .end(id);
                let Some(outcome) = outcome else {
                    tracing::debug!(%peer, "handshake closed to make room for a newer connection");
                    return;
                };
                match outcome {
                    Ok(Ok(inner)) => {
                        let Ok(slot) = slots.try_acquire_owned() else {
                            stats.refused_over_limit.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, "connection refused: max_connections open");
                            return;
                        };
                        stats.open.fetch_add(1, Ordering::Relaxed);
                        let activity = calls.register(peer);
                        activity.touch();
                        let idle = opts
                            .idle_timeout
                            .map(|d| (d, Box::pin(tokio::time::sleep(d))));
                        let conn = TlsConn {
                            inner,
                            _slot: slot,
                            peer,
                            calls,
                            activity,
                            idle,
                            stats,
                        };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err((e, tcp))) => {
                        stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        linger_close(tcp).await;
                    }
                    Err(_) => {
                        stats.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, "TLS handshake timed out; connection closed");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// How long a connection whose handshake failed is read from before it is closed.
const LINGER: Duration = Duration::from_secs(1);

/// Closes a connection whose handshake failed so that the peer reads the alert sent to it
/// (e.g. `certificate_revoked`). In TLS 1.3 a client sends its first request right after its
/// certificate; closing with those bytes unread makes the kernel reset the connection, and a
/// reset discards the alert at the client before it is read: a refused certificate would look
/// like a dropped connection (CANCELLED) instead of the UNAUTHENTICATED it is. So: FIN after
/// the alert, then read and discard what the peer still sends until it closes, for at most
/// [`LINGER`] and 64 KiB.
async fn linger_close(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let mut buf = [0u8; 4096];
    let mut left = 64 * 1024usize;
    let _ = tokio::time::timeout(LINGER, async {
        while left > 0 {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// A tower layer that notes each call's uses of its connection (by peer address): its start,
/// each frame of its answer, its end, for the idle timeout.
#[derive(Clone)]
pub struct TrackCalls(pub CallTracker);

impl<S> tower::Layer<S> for TrackCalls {
    type Service = Tracked<S>;
    fn layer(&self, inner: S) -> Tracked<S> {
        Tracked {
            inner,
            calls: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    calls: CallTracker,
}

impl<S, B, RB> tower::Service<http::Request<B>> for Tracked<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<GuardedBody<RB>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let peer = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|i| i.get_ref().remote_addr());
        let guard = self.calls.begin(peer);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|inner| GuardedBody {
                inner,
                _guard: guard,
            }))
        })
    }
}

/// A response body that notes each frame it sends, and its end, as uses of its connection.
pub struct GuardedBody<B> {
    inner: B,
    _guard: CallGuard,
}

impl<B: http_body::Body + Unpin> http_body::Body for GuardedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &frame {
            self._guard.used();
        }
        frame
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call's start, its answer's messages and its end are uses; a call that stays open
    /// carrying nothing is not (the connection ages as if it had none).
    #[test]
    fn an_open_call_that_carries_nothing_does_not_keep_a_connection_in_use() {
        let calls = CallTracker::default();
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let first = calls.register(peer);
        std::thread::sleep(Duration::from_millis(30));
        assert!(first.idle_for() >= Duration::from_millis(30));
        let call = calls.begin(Some(peer));
        assert!(
            first.idle_for() < Duration::from_millis(30),
            "a start is a use"
        );
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            first.idle_for() >= Duration::from_millis(30),
            "an open call that sends nothing"
        );
        call.used();
        assert!(
            first.idle_for() < Duration::from_millis(30),
            "a message is a use"
        );
        std::thread::sleep(Duration::from_millis(30));
        drop(call);
        assert!(
            first.idle_for() < Duration::from_millis(30),
            "an end is a use"
        );
        // Calls from an unknown peer are not counted anywhere.
        assert!(calls.begin(None).0.is_none());
    }

    #[test]
    fn a_late_drop_of_an_old_connection_keeps_the_new_ones_entry() {
        let calls = CallTracker::default();
        let peer: SocketAddr = "127.0.0.1:4001".parse().unwrap();
        let old = calls.register(peer);
        let new = calls.register(peer);
        calls.forget(peer, &old);
        std::thread::sleep(Duration::from_millis(30));
        let g = calls.begin(Some(peer));
        assert!(
            new.idle_for() < Duration::from_millis(30),
            "the new connection's call is counted"
        );
        drop(g);
        calls.forget(peer, &new);
        assert!(calls.begin(Some(peer)).0.is_none());
    }
}
