//! Deadlines and retries: [`RetryPolicy`], the rules for which failures are worth repeating,
//! and [`Client::unary`], the one helper every unary call of this crate goes through.
//!
//! Every RPC of the contract is idempotent (a submission by its TCN, an acknowledgement
//! because cursors never go backwards, a detainer per booking, a revocation that keeps its
//! first record), so a call whose answer was lost may always be sent again. What is repeated
//! is what a later attempt can change: `UNAVAILABLE`, `RESOURCE_EXHAUSTED` (the gateway sheds
//! load before storing anything) and a connection that broke before any answer. A refusal is
//! the gateway's answer and is never repeated. Waits are "full jitter" exponential backoff, so
//! many clients turned away at once do not come back at once.
//!
//! The wrappers (`submit`, `get_policy`, `revoke_certificate`, ...) are one line each over
//! [`Client::unary`]: it takes the generated stub to use, the request, and the stub's method,
//! and owns the deadline, the retries and the move to the next gateway replica. Streams have
//! their own loops (they resume from a cursor or re-send what was unanswered), in
//! [`crate::follow`] and [`crate::submit`], with the same policy and the same rules.

use crate::config::Client;
use std::future::Future;
use std::time::Duration;
use tonic::{Code, Request, Response, Status};

/// How often and how patiently a call is retried while the gateway is unavailable or
/// shedding load: attempt `n` (from 1) waits a random time up to
/// `min(max_backoff, initial_backoff * 2^(n-1))` before the next.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(3),
        }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        }
    }

    /// The wait after the `attempt`-th failure: "full jitter" exponential backoff.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let cap = exp.min(self.max_backoff).as_micros() as u64;
        Duration::from_micros(cap / 2 + jitter(cap / 2 + 1))
    }
}

/// A cheap random number below `n` (timing jitter only; never used for anything secret).
fn jitter(n: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() % n.max(1)
}

/// Codes after which a repeat of the same (idempotent) call may succeed.
pub(crate) fn retryable(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::ResourceExhausted)
}

/// A call that failed because the connection broke (reset, closed) before any answer: tonic
/// reports it as `UNKNOWN`, or as `CANCELLED` when the request went out on a pooled connection
/// the gateway was closing as it shut down (hyper's "connection closed"), with the transport
/// error as its source either way; a `CANCELLED` the gateway itself sent has no such source.
/// Worth repeating.
fn connection_broke(s: &Status) -> bool {
    matches!(s.code(), Code::Unknown | Code::Cancelled)
        && std::error::Error::source(s).is_some_and(|e| e.is::<tonic::transport::Error>())
}

/// The TLS alert the gateway sent about this client's certificate, when that is why a call
/// failed (hyper reports it as a transport error: "received fatal alert: CertificateRevoked").
fn tls_alert(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut src = Some(e);
    while let Some(e) = src {
        let text = e.to_string();
        if let Some(i) = text.find("received fatal alert: ") {
            let alert = &text[i + "received fatal alert: ".len()..];
            return Some(
                alert
                    .chars()
                    .take_while(char::is_ascii_alphanumeric)
                    .collect(),
            );
        }
        src = e.source();
    }
    None
}

/// A call (or a connection) that failed because the gateway refused this client's
/// certificate at the TLS handshake, as the `UNAUTHENTICATED` it is, saying why (a revoked
/// certificate, one from another CA, an expired one), rather than an `UNKNOWN` "transport
/// error"; not worth repeating.
pub(crate) fn refused_at_handshake(e: &(dyn std::error::Error + 'static)) -> Option<Status> {
    let alert = tls_alert(e)?;
    let why = match alert.as_str() {
        "CertificateRevoked" => ": the certificate has been revoked",
        "CertificateExpired" => ": the certificate has expired",
        "UnknownCA" | "BadCertificate" => ": the gateway does not trust the certificate",
        _ => "",
    };
    Some(Status::unauthenticated(format!(
        "the gateway refused this client's certificate at the TLS handshake ({alert}){why}"
    )))
}

/// Codes after which a broken stream is worth re-opening from its cursor: the connection
/// dropped or the gateway restarted.
pub(crate) fn stream_retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::ResourceExhausted
            | Code::Unknown
            | Code::Cancelled
            | Code::Aborted
    )
}

impl Client {
    /// Runs one unary call with the deadline and the retry policy: `stub` makes the
    /// generated client on the gateway in use (e.g. [`Client::admin_service`]), `call` sends
    /// the request with it. Each attempt is a fresh stub, so a retry after a failure goes to
    /// the next gateway replica; the deadline is sent as `grpc-timeout` and enforced here too.
    ///
    /// Every wrapper of this crate is this call; it is public for the RPCs they do not wrap:
    ///
    /// ```no_run
    /// # async fn run(client: interop_client::Client) -> Result<(), tonic::Status> {
    /// use interop_client::Client;
    /// use interop_proto::v1 as pb;
    /// let answer = client
    ///     .unary(Client::matcher_service, pb::SearchRequest::default(), |mut s, r| async move {
    ///         s.search(r).await
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn unary<S, Req, Resp, Fut>(
        &self,
        stub: fn(&Client) -> S,
        req: Req,
        call: impl Fn(S, Request<Req>) -> Fut,
    ) -> Result<Resp, Status>
    where
        Req: Clone,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let timeout = self.cfg.call_timeout;
        let retry = self.cfg.retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let on = self.current();
            let mut r = Request::new(req.clone());
            r.set_timeout(timeout);
            let result = match tokio::time::timeout(timeout, call(stub(self), r)).await {
                Ok(r) => r.map(Response::into_inner),
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "no answer within {} ms",
                    timeout.as_millis()
                ))),
            };
            let result = result.map_err(|s| refused_at_handshake(&s).unwrap_or(s));
            match result {
                Err(s)
                    if (retryable(s.code()) || connection_broke(&s))
                        && attempt < retry.max_attempts =>
                {
                    tracing::debug!(attempt, code = ?s.code(), "call failed; retrying");
                    self.failover_from(on);
                    tokio::time::sleep(retry.delay(attempt)).await;
                }
                Err(s) if connection_broke(&s) => {
                    // The alert of a certificate refused at the handshake may have been lost
                    // with the connection: ask once, directly.
                    let url = self.cfg.endpoint_at(on).unwrap_or_default();
                    return Err(crate::probe::handshake_refusal(&self.cfg, url)
                        .await
                        .unwrap_or(s));
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_refused_at_the_handshake_reads_as_unauthenticated_saying_why() {
        let alert = |text: &str| {
            Status::from_error(Box::new(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                text.to_string(),
            )))
        };
        let s = refused_at_handshake(&alert("received fatal alert: CertificateRevoked"))
            .expect("a TLS alert");
        assert_eq!(s.code(), Code::Unauthenticated);
        assert!(s.message().contains("revoked"), "{}", s.message());
        let s = refused_at_handshake(&alert("received fatal alert: UnknownCA")).unwrap();
        assert!(s.message().contains("does not trust"), "{}", s.message());
        assert!(refused_at_handshake(&alert("connection reset by peer")).is_none());
        assert!(refused_at_handshake(&Status::unavailable("shedding")).is_none());
    }

    #[test]
    fn a_call_cut_by_the_transport_is_repeated_and_a_gateway_answer_is_not() {
        let transport = || {
            let e = tonic::transport::Endpoint::from_shared("not a uri\n").unwrap_err();
            std::sync::Arc::new(e) as std::sync::Arc<dyn std::error::Error + Send + Sync>
        };
        for code in [Code::Unknown, Code::Cancelled] {
            let mut s = Status::new(code, "connection closed");
            assert!(!connection_broke(&s), "{code:?} from the gateway");
            s.set_source(transport());
            assert!(connection_broke(&s), "{code:?} from the transport");
        }
        let mut refused = Status::invalid_argument("bad booking");
        refused.set_source(transport());
        assert!(!connection_broke(&refused));
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let r = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        for attempt in 1..10 {
            let cap = Duration::from_millis(100 * (1 << (attempt - 1))).min(Duration::from_secs(1));
            let d = r.delay(attempt);
            assert!(
                d >= cap / 2 && d <= cap,
                "attempt {attempt}: {d:?} vs cap {cap:?}"
            );
        }
    }
}
