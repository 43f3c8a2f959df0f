//! The client library: how any Rust program talks to an interop gateway as one of its users.
//!
//! It connects over mutual TLS with a PKI directory or explicit PEM files, puts a deadline on
//! every call, retries with exponential backoff (and jitter) while the gateway answers
//! `UNAVAILABLE` or sheds load with `RESOURCE_EXHAUSTED`, and keeps idle connections alive
//! with HTTP/2 pings. Every RPC of the contract is idempotent (a submission by its TCN, an
//! acknowledgement because cursors never go backwards, a detainer per booking), so retrying
//! a call whose answer was lost is always safe.
//!
//! On top of the generated stubs it offers what users do all day:
//! - [`Client::submit`] one booking, [`Client::submit_many`] a bulk stream with a bounded
//!   window of unanswered submissions (flow control) that re-sends what a broken stream left
//!   unanswered;
//! - [`Client::wait_for_responses`] to follow one TCN to its answers;
//! - [`Client::follow_responses`] (bureau) and [`Client::subscribe`] (field office): streams
//!   that resume by themselves from the last cursor after a disconnect or a gateway restart,
//!   dropping anything at or below a cursor already seen, so the caller sees each result once;
//!   keep the cursor across runs with a [`CursorFile`];
//! - [`Client::ack`] and typed admin calls.
//!
//! ```no_run
//! use interop_proto::client::{ClientConfig, Role};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let office: Role = "field-office/HOU".parse()?;
//! let client = ClientConfig::from_pki_dir("https://127.0.0.1:50051", "pki", &office)?
//!     .connect()
//!     .await?;
//! let mut results = client.subscribe(None);
//! while let Some(n) = results.next().await? {
//!     let outcome = n.outcome.unwrap_or_default();
//!     println!("{} {} hit={}", n.cursor, outcome.tcn, outcome.hit);
//!     client.ack(n.cursor).await?;
//! }
//! # Ok(()) }
//! ```

use crate::v1 as pb;
use pb::admin_service_client::AdminServiceClient;
use pb::field_office_service_client::FieldOfficeServiceClient;
use pb::matcher_service_client::MatcherServiceClient;
use pb::submission_service_client::SubmissionServiceClient;
use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

/// Where a gateway listens by default (the gateway's own default address).
pub const DEFAULT_ENDPOINT: &str = "https://127.0.0.1:50051";

/// Largest message a client accepts (a bureau's biggest answer is far smaller; submissions
/// are capped by the gateway at 256 KiB).
const MAX_DECODE: usize = 4 * 1024 * 1024;

/// What can go wrong before or around a call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A PKI directory, certificate file or option is unusable.
    #[error("{0}")]
    Config(String),
    /// No connection could be made within the retry policy.
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    /// The gateway answered with an error.
    #[error("{}", describe_status(.0))]
    Rpc(#[from] Status),
    /// A cursor state file could not be read or written.
    #[error("cursor state file {path}: {reason}")]
    State { path: PathBuf, reason: String },
}

impl ClientError {
    /// The gateway's status, when the error is an answer from it.
    pub fn status(&self) -> Option<&Status> {
        match self {
            ClientError::Rpc(s) => Some(s),
            _ => None,
        }
    }

    /// True when trying again later may succeed (no connection, gateway unavailable or
    /// shedding, deadline passed).
    pub fn is_unavailable(&self) -> bool {
        match self {
            ClientError::Connect { .. } => true,
            ClientError::Rpc(s) => matches!(
                s.code(),
                Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded
            ),
            _ => false,
        }
    }
}

/// One sentence for a gateway error: the code, the message, and every field violation the
/// gateway attached (`google.rpc.BadRequest`), e.g.
/// `INVALID_ARGUMENT: submission refused: 2 problems [tcn: ...; fingers[0].position: ...]`.
pub fn describe_status(s: &Status) -> String {
    let mut out = format!("{}: {}", code_name(s.code()), s.message());
    let violations = field_violations(s);
    if !violations.is_empty() {
        let list: Vec<String> = violations
            .iter()
            .map(|(f, d)| format!("{f}: {d}"))
            .collect();
        out.push_str(&format!(" [{}]", list.join("; ")));
    }
    out
}

/// The `(field, description)` pairs of a refusal's `google.rpc.BadRequest` details.
pub fn field_violations(s: &Status) -> Vec<(String, String)> {
    use tonic_types::StatusExt;
    s.get_details_bad_request()
        .map(|b| {
            b.field_violations
                .into_iter()
                .map(|v| (v.field, v.description))
                .collect()
        })
        .unwrap_or_default()
}

/// The canonical upper-case name of a gRPC code (`INVALID_ARGUMENT`).
pub fn code_name(c: Code) -> &'static str {
    match c {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Who a client is, as the gateway's certificates name it: `bureau/TX`,
/// `field-office/HOU` or `admin`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Bureau(String),
    FieldOffice(String),
    Admin,
}

impl Role {
    /// File stem of this role's certificate in a PKI directory (`clients/<stem>.pem`).
    pub fn file_stem(&self) -> String {
        match self {
            Role::Bureau(s) => format!("bureau-{s}"),
            Role::FieldOffice(o) => format!("field-office-{o}"),
            Role::Admin => "admin".into(),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Bureau(s) => write!(f, "bureau/{s}"),
            Role::FieldOffice(o) => write!(f, "field-office/{o}"),
            Role::Admin => f.write_str("admin"),
        }
    }
}

impl FromStr for Role {
    type Err = ClientError;
    fn from_str(s: &str) -> Result<Role, ClientError> {
        let code_ok = |c: &str, len: std::ops::RangeInclusive<usize>| {
            len.contains(&c.len()) && c.bytes().all(|b| b.is_ascii_uppercase())
        };
        match s.split_once('/') {
            None if s == "admin" => Ok(Role::Admin),
            Some(("bureau", st)) if code_ok(st, 2..=2) => Ok(Role::Bureau(st.into())),
            Some(("field-office", o)) if code_ok(o, 3..=3) => Ok(Role::FieldOffice(o.into())),
            _ => Err(ClientError::Config(format!(
                "unknown role {s:?}: expected bureau/XX (a two-letter state), \
                 field-office/XXX (a three-letter office code) or admin"
            ))),
        }
    }
}

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
fn retryable(code: Code) -> bool {
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

/// Codes after which a broken stream is worth re-opening from its cursor: the connection
/// dropped or the gateway restarted.
fn stream_retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::ResourceExhausted
            | Code::Unknown
            | Code::Cancelled
            | Code::Aborted
    )
}

/// How to reach a gateway and as whom. Build it with [`ClientConfig::from_pki_dir`] or
/// [`ClientConfig::from_files`], adjust it, then [`connect`](ClientConfig::connect).
#[derive(Clone)]
pub struct ClientConfig {
    endpoint: String,
    ca_pem: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    server_name: String,
    call_timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
    follow_retry: RetryPolicy,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoint", &self.endpoint)
            .field("identity", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .field("call_timeout", &self.call_timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

fn read_file(p: &Path, what: &str) -> Result<Vec<u8>, ClientError> {
    std::fs::read(p)
        .map_err(|e| ClientError::Config(format!("cannot read {what} {}: {e}", p.display())))
}

impl ClientConfig {
    /// From PEM bytes: the CA that signed the gateway's certificate, and this client's
    /// certificate chain and key (`None` connects without a client certificate, which the
    /// gateway refuses for every RPC; useful only to test that).
    pub fn from_pem(
        endpoint: impl Into<String>,
        ca_pem: Vec<u8>,
        identity: Option<(Vec<u8>, Vec<u8>)>,
    ) -> ClientConfig {
        ClientConfig {
            endpoint: endpoint.into(),
            ca_pem,
            identity,
            server_name: "localhost".into(),
            call_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            follow_retry: RetryPolicy {
                max_attempts: u32::MAX,
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
            },
        }
    }

    /// From explicit files: the CA certificate, and this client's certificate and key.
    pub fn from_files(
        endpoint: impl Into<String>,
        ca: &Path,
        identity: Option<(&Path, &Path)>,
    ) -> Result<ClientConfig, ClientError> {
        let ca_pem = read_file(ca, "CA certificate")?;
        let identity = match identity {
            Some((cert, key)) => Some((
                read_file(cert, "client certificate")?,
                read_file(key, "client key")?,
            )),
            None => None,
        };
        Ok(ClientConfig::from_pem(endpoint, ca_pem, identity))
    }

    /// From a PKI directory laid out as `gateway pki init` writes it: `ca.pem` and
    /// `clients/<stem>.pem` + `clients/<stem>-key.pem` for `role`.
    pub fn from_pki_dir(
        endpoint: impl Into<String>,
        dir: impl AsRef<Path>,
        role: &Role,
    ) -> Result<ClientConfig, ClientError> {
        let dir = dir.as_ref();
        let stem = role.file_stem();
        let clients = dir.join("clients");
        let cert = clients.join(format!("{stem}.pem"));
        if !cert.exists() {
            return Err(ClientError::Config(format!(
                "no certificate for {role} in {} (expected {})",
                dir.display(),
                cert.display()
            )));
        }
        ClientConfig::from_files(
            endpoint,
            &dir.join("ca.pem"),
            Some((&cert, &clients.join(format!("{stem}-key.pem")))),
        )
    }

    /// The name the gateway's certificate is checked against (default `localhost`).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = name.into();
        self
    }

    /// Deadline of each unary call attempt, sent as `grpc-timeout` and enforced locally
    /// (default 30 s).
    pub fn call_timeout(mut self, d: Duration) -> Self {
        self.call_timeout = d;
        self
    }

    /// How long one connection attempt may take (default 5 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Retries of connections and unary calls (default: 6 attempts, 100 ms to 3 s).
    pub fn retry(mut self, r: RetryPolicy) -> Self {
        self.retry = r;
        self
    }

    /// Retries of a broken subscription or response stream (default: forever, up to 5 s
    /// apart, so a follower rides out a gateway restart).
    pub fn follow_retry(mut self, r: RetryPolicy) -> Self {
        self.follow_retry = r;
        self
    }

    pub fn endpoint_url(&self) -> &str {
        &self.endpoint
    }

    /// The gateway addresses, in order (`endpoint` may list several, comma-separated).
    fn endpoints(&self) -> Vec<&str> {
        self.endpoint
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect()
    }

    fn endpoint(&self, url: &str) -> Result<Endpoint, ClientError> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name(self.server_name.clone());
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Endpoint::from_shared(url.to_string())
            .map_err(|e| ClientError::Config(format!("bad endpoint {url:?}: {e}")))?
            .tls_config(tls)
            .map_err(|e| ClientError::Config(format!("TLS settings: {e}")))
            .map(|e| {
                e.connect_timeout(self.connect_timeout)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .keep_alive_timeout(Duration::from_secs(10))
                    .keep_alive_while_idle(true)
            })
    }

    fn all_endpoints(&self) -> Result<Vec<Endpoint>, ClientError> {
        let urls = self.endpoints();
        if urls.is_empty() {
            return Err(ClientError::Config("no gateway endpoint given".into()));
        }
        urls.into_iter().map(|u| self.endpoint(u)).collect()
    }

    /// Connects now (to the first gateway that answers, trying each in turn), retrying
    /// refused or timed-out connections with backoff.
    pub async fn connect(self) -> Result<Client, ClientError> {
        let endpoints = self.all_endpoints()?;
        // Clients of several replicas start at different ones, spreading the load.
        let offset = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as usize)
            .unwrap_or(0);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let i = (offset + attempt as usize - 1) % endpoints.len();
            match endpoints[i].connect().await {
                Ok(channel) => {
                    // The others connect when first used.
                    let channels = endpoints
                        .iter()
                        .enumerate()
                        .map(|(j, e)| {
                            if j == i {
                                channel.clone()
                            } else {
                                e.connect_lazy()
                            }
                        })
                        .collect();
                    return Ok(Client::new(channels, i, self));
                }
                Err(e) if attempt < self.retry.max_attempts => {
                    tracing::debug!(attempt, error = %e, "connect failed; retrying");
                    tokio::time::sleep(self.retry.delay(attempt)).await;
                }
                Err(e) => {
                    use std::error::Error;
                    let mut reason = e.to_string();
                    let mut src = e.source();
                    while let Some(s) = src {
                        reason.push_str(&format!(": {s}"));
                        src = s.source();
                    }
                    return Err(ClientError::Connect {
                        endpoint: self.endpoint.clone(),
                        reason,
                    });
                }
            }
        }
    }

    /// A client that connects on its first call (and reconnects by itself after).
    pub fn connect_lazy(self) -> Result<Client, ClientError> {
        let channels = self
            .all_endpoints()?
            .iter()
            .map(Endpoint::connect_lazy)
            .collect();
        Ok(Client::new(channels, 0, self))
    }
}

/// A connection to a gateway as one user. Cheap to clone; clones share the connection.
///
/// Given several gateway replicas (`https://a:50051,https://b:50051`), it uses one at a time
/// and moves to the next whenever a call or stream has to be retried, so a client rides out a
/// replica's loss (every call is idempotent, and followers resume from their cursor).
#[derive(Clone)]
pub struct Client {
    channels: Arc<[Channel]>,
    current: Arc<std::sync::atomic::AtomicUsize>,
    cfg: Arc<ClientConfig>,
}

/// The outcome of one submission of a bulk stream.
#[derive(Clone, Debug)]
pub struct Submitted {
    /// Position in the caller's sequence, from 0.
    pub index: usize,
    pub tcn: String,
    /// The receipt, or the gateway's refusal (a refusal never retried: `UNAVAILABLE` and
    /// `RESOURCE_EXHAUSTED` are retried within the policy before they are reported).
    pub result: Result<pb::Receipt, Status>,
}

impl Client {
    fn new(channels: Vec<Channel>, first: usize, cfg: ClientConfig) -> Client {
        Client {
            channels: channels.into(),
            current: Arc::new(first.into()),
            cfg: Arc::new(cfg),
        }
    }

    /// The underlying channel (to the gateway in use), for generated clients of services this
    /// type does not wrap.
    pub fn channel(&self) -> Channel {
        self.channels[self.current() % self.channels.len()].clone()
    }

    fn current(&self) -> usize {
        self.current.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Moves to the next gateway, if there is more than one.
    fn failover(&self) {
        self.failover_from(self.current());
    }

    /// Moves on from gateway `from` unless another caller already did (many calls failing at
    /// once move it once).
    fn failover_from(&self, from: usize) {
        let n = self.channels.len();
        if n > 1
            && self
                .current
                .compare_exchange(
                    from,
                    from.wrapping_add(1),
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                )
                .is_ok()
        {
            tracing::info!(
                endpoint = self.cfg.endpoints()[from.wrapping_add(1) % n],
                "moving to the next gateway"
            );
        }
    }

    /// The generated bureau-side stub on this connection.
    pub fn submission_service(&self) -> SubmissionServiceClient<Channel> {
        SubmissionServiceClient::new(self.channel()).max_decoding_message_size(MAX_DECODE)
    }

    /// The generated field-office stub on this connection.
    pub fn field_office_service(&self) -> FieldOfficeServiceClient<Channel> {
        FieldOfficeServiceClient::new(self.channel()).max_decoding_message_size(MAX_DECODE)
    }

    /// The generated admin stub on this connection.
    pub fn admin_service(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel()).max_decoding_message_size(MAX_DECODE)
    }

    pub fn matcher_service(&self) -> MatcherServiceClient<Channel> {
        MatcherServiceClient::new(self.channel()).max_decoding_message_size(MAX_DECODE)
    }

    /// Runs one unary call with the deadline and the retry policy.
    async fn unary<Req, Resp, F, Fut>(&self, req: Req, mut call: F) -> Result<Resp, Status>
    where
        Req: Clone,
        F: FnMut(Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let timeout = self.cfg.call_timeout;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let on = self.current();
            let mut r = Request::new(req.clone());
            r.set_timeout(timeout);
            let result = match tokio::time::timeout(timeout, call(r)).await {
                Ok(r) => r.map(tonic::Response::into_inner),
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "no answer within {} ms",
                    timeout.as_millis()
                ))),
            };
            match result {
                Err(s)
                    if (retryable(s.code()) || connection_broke(&s))
                        && attempt < self.cfg.retry.max_attempts =>
                {
                    tracing::debug!(attempt, code = ?s.code(), "call failed; retrying");
                    self.failover_from(on);
                    tokio::time::sleep(self.cfg.retry.delay(attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// Submits one booking and returns its receipt once the gateway holds it durably.
    /// Safe to repeat: the same TCN with the same content returns the original receipt.
    pub async fn submit(&self, s: pb::Submission) -> Result<pb::Receipt, Status> {
        let this = self.clone();
        self.unary(s, |r| {
            let mut svc = this.submission_service();
            async move { svc.submit(r).await }
        })
        .await
    }

    /// Where a submission stands (only the bureau that sent it can read it).
    pub async fn status(&self, tcn: &str) -> Result<pb::SubmissionStatus, Status> {
        let this = self.clone();
        self.unary(pb::GetStatusRequest { tcn: tcn.into() }, |r| {
            let mut svc = this.submission_service();
            async move { svc.get_status(r).await }
        })
        .await
    }

    /// Submits many bookings over one `SubmitStream`, at most `window` unanswered at a time,
    /// and yields one [`Submitted`] per booking as the answers come (in the order sent, except
    /// that shed ones come again after their retry). If the stream breaks, it is re-opened and
    /// the unanswered submissions are sent again (harmless: they are idempotent by TCN). The
    /// channel ends after the last answer, or after an `Err` when the gateway cannot be
    /// reached within the retry policy or refuses the stream itself.
    pub fn submit_many<I>(
        &self,
        subs: I,
        window: usize,
    ) -> mpsc::Receiver<Result<Submitted, Status>>
    where
        I: IntoIterator<Item = pb::Submission>,
        I::IntoIter: Send + 'static,
    {
        let window = window.max(1);
        let (tx, rx) = mpsc::channel(window);
        let this = self.clone();
        let input = subs.into_iter();
        tokio::spawn(async move {
            if let Err(e) = this.drive_submit_many(input, window, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        rx
    }

    async fn drive_submit_many(
        &self,
        mut input: impl Iterator<Item = pb::Submission>,
        window: usize,
        out: &mpsc::Sender<Result<Submitted, Status>>,
    ) -> Result<(), Status> {
        struct Item {
            index: usize,
            sub: pb::Submission,
            tries: u32,
        }
        let retry = self.cfg.retry;
        let mut next_index = 0usize;
        let mut input_done = false;
        // Sent on the current stream and not yet answered, in the order sent.
        let mut inflight: VecDeque<Item> = VecDeque::new();
        // Shed by the gateway, to be sent again when due.
        let mut later: VecDeque<(Instant, Item)> = VecDeque::new();
        let mut stream_failures = 0u32;
        loop {
            // (Re)open the stream; what was unanswered goes first.
            let (req_tx, req_rx) = mpsc::channel::<pb::Submission>(window);
            for it in &inflight {
                let _ = req_tx.try_send(it.sub.clone());
            }
            let mut svc = self.submission_service();
            let opened = svc
                .submit_stream(tokio_stream::wrappers::ReceiverStream::new(req_rx))
                .await;
            let mut inbound = match opened {
                Ok(r) => r.into_inner(),
                Err(s)
                    if stream_retryable(s.code()) && stream_failures + 1 < retry.max_attempts =>
                {
                    stream_failures += 1;
                    self.failover();
                    tokio::time::sleep(retry.delay(stream_failures)).await;
                    continue;
                }
                Err(s) => return Err(s),
            };
            loop {
                // Send while the window allows and something is ready.
                while inflight.len() < window {
                    let due = later.front().is_some_and(|(t, _)| *t <= Instant::now());
                    let item = if due {
                        later.pop_front().map(|(_, it)| it)
                    } else if !input_done {
                        match input.next() {
                            Some(sub) => {
                                next_index += 1;
                                Some(Item {
                                    index: next_index - 1,
                                    sub,
                                    tries: 0,
                                })
                            }
                            None => {
                                input_done = true;
                                None
                            }
                        }
                    } else {
                        None
                    };
                    let Some(it) = item else { break };
                    // Never blocks: the channel holds at most `window` and so does inflight.
                    if req_tx.send(it.sub.clone()).await.is_err() {
                        inflight.push_back(it);
                        break;
                    }
                    inflight.push_back(it);
                }
                if input_done && inflight.is_empty() && later.is_empty() {
                    return Ok(());
                }
                let wake = later.front().map(|(t, _)| *t);
                let msg = tokio::select! {
                    m = inbound.message() => m,
                    _ = async {
                        match wake {
                            Some(t) if inflight.len() < window => tokio::time::sleep_until(t).await,
                            _ => std::future::pending().await,
                        }
                    } => continue,
                };
                match msg {
                    Ok(Some(resp)) => {
                        stream_failures = 0;
                        let Some(mut it) = inflight.pop_front() else {
                            return Err(Status::internal("gateway answered more than was sent"));
                        };
                        let result = match resp.result {
                            Some(pb::submit_stream_response::Result::Receipt(r)) => Ok(r),
                            Some(pb::submit_stream_response::Result::Error(e)) => {
                                Err(Status::new(Code::from(e.code), e.message))
                            }
                            None => Err(Status::internal("empty answer in the submit stream")),
                        };
                        match result {
                            Err(s) if retryable(s.code()) && it.tries + 1 < retry.max_attempts => {
                                it.tries += 1;
                                later.push_back((Instant::now() + retry.delay(it.tries), it));
                            }
                            result => {
                                let done = Submitted {
                                    index: it.index,
                                    tcn: it.sub.tcn,
                                    result,
                                };
                                if out.send(Ok(done)).await.is_err() {
                                    return Ok(()); // the caller stopped listening
                                }
                            }
                        }
                    }
                    other => {
                        // Ended or broke with submissions unanswered: re-open and re-send.
                        let s = match other {
                            Err(s) => s,
                            _ => Status::unavailable("submit stream ended early"),
                        };
                        if !stream_retryable(s.code()) || stream_failures + 1 >= retry.max_attempts
                        {
                            return Err(s);
                        }
                        stream_failures += 1;
                        tracing::debug!(unanswered = inflight.len(), code = ?s.code(), "submit stream broke; re-opening");
                        self.failover();
                        tokio::time::sleep(retry.delay(stream_failures)).await;
                        break;
                    }
                }
            }
        }
    }

    /// Waits until the gateway has produced every response for `tcn` (its stage is
    /// COMPLETED), then returns this bureau's responses about it in cursor order: the
    /// criminal-history response, and the immigration response where the jurisdiction
    /// receives results. Reads the bureau's retained response log from its start (there is
    /// no index by TCN on the wire), so it suits interactive use, not bulk.
    pub async fn wait_for_responses(
        &self,
        tcn: &str,
        timeout: Duration,
    ) -> Result<Vec<pb::BureauResponse>, Status> {
        let deadline = Instant::now() + timeout;
        let mut poll = Duration::from_millis(20);
        loop {
            let st = self.status(tcn).await?;
            if st.stage() == pb::Stage::Completed {
                break;
            }
            if Instant::now() + poll > deadline {
                return Err(Status::deadline_exceeded(format!(
                    "{tcn} was still being processed after {} s",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(Duration::from_secs(1));
        }
        let mut all = self.follow_responses(None, false);
        let mut out = vec![];
        while let Some(r) = all.next().await? {
            if r.tcn == tcn {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// This bureau's response stream after `after_cursor` (`None` = from the start of the
    /// retained log). With `follow`, it stays open for new responses and re-opens itself after
    /// a disconnect; without, it ends at the end of what is stored.
    pub fn follow_responses(
        &self,
        after_cursor: Option<u64>,
        follow: bool,
    ) -> Follower<pb::BureauResponse> {
        let this = self.clone();
        Follower::new(
            after_cursor,
            follow,
            self.clone(),
            Box::new(move |after| {
                let mut svc = this.submission_service();
                Box::pin(async move {
                    svc.stream_responses(pb::StreamResponsesRequest {
                        after_cursor: after.unwrap_or(0),
                        follow,
                    })
                    .await
                    .map(tonic::Response::into_inner)
                })
            }),
        )
    }

    /// This field office's outcomes after `after_cursor` (`None` = after the office's last
    /// acknowledged cursor), following live and re-opening itself after a disconnect or a
    /// gateway restart from the last cursor it delivered.
    pub fn subscribe(&self, after_cursor: Option<u64>) -> Follower<pb::FieldOfficeNotification> {
        self.subscription(after_cursor, true)
    }

    /// Like [`subscribe`](Client::subscribe); without `follow` it ends at the end of what is
    /// stored.
    pub fn subscription(
        &self,
        after_cursor: Option<u64>,
        follow: bool,
    ) -> Follower<pb::FieldOfficeNotification> {
        let this = self.clone();
        Follower::new(
            after_cursor,
            follow,
            self.clone(),
            Box::new(move |after| {
                let mut svc = this.field_office_service();
                Box::pin(async move {
                    svc.subscribe(pb::SubscribeRequest {
                        after_cursor: after,
                        follow,
                    })
                    .await
                    .map(tonic::Response::into_inner)
                })
            }),
        )
    }

    /// Acknowledges a field office's outcomes up to and including `cursor`; returns the
    /// office's acknowledged cursor (which never goes backwards).
    pub async fn ack(&self, cursor: u64) -> Result<u64, Status> {
        let this = self.clone();
        self.unary(pb::AckRequest { cursor }, |r| {
            let mut svc = this.field_office_service();
            async move { svc.ack(r).await }
        })
        .await
        .map(|a| a.acked_cursor)
    }

    /// Issues (or returns the existing) detainer for a booking in the office's area.
    pub async fn issue_detainer(
        &self,
        req: pb::IssueDetainerRequest,
    ) -> Result<pb::Detainer, Status> {
        let this = self.clone();
        self.unary(req, |r| {
            let mut svc = this.field_office_service();
            async move { svc.issue_detainer(r).await }
        })
        .await
    }

    /// A jurisdiction's policy (admin).
    pub async fn get_policy(
        &self,
        jurisdiction_id: &str,
    ) -> Result<pb::JurisdictionPolicy, Status> {
        let this = self.clone();
        self.unary(
            pb::GetPolicyRequest {
                jurisdiction_id: jurisdiction_id.into(),
            },
            |r| {
                let mut svc = this.admin_service();
                async move { svc.get_policy(r).await }
            },
        )
        .await
    }

    /// Changes the given fields of a jurisdiction's policy (admin).
    pub async fn set_policy(
        &self,
        req: pb::SetPolicyRequest,
    ) -> Result<pb::JurisdictionPolicy, Status> {
        let this = self.clone();
        self.unary(req, |r| {
            let mut svc = this.admin_service();
            async move { svc.set_policy(r).await }
        })
        .await
    }

    /// Sets or lifts a state's opt-out (admin).
    pub async fn set_state_policy(
        &self,
        state: &str,
        opted_out: bool,
    ) -> Result<pb::StatePolicy, Status> {
        let this = self.clone();
        self.unary(
            pb::SetStatePolicyRequest {
                state: state.into(),
                opted_out,
            },
            |r| {
                let mut svc = this.admin_service();
                async move { svc.set_state_policy(r).await }
            },
        )
        .await
    }

    /// Every jurisdiction's policy, or one state's (`state` = two-letter code) (admin).
    pub async fn list_jurisdictions(
        &self,
        state: Option<&str>,
    ) -> Result<Vec<pb::JurisdictionPolicy>, Status> {
        let this = self.clone();
        let req = pb::ListJurisdictionsRequest {
            state: state.unwrap_or_default().into(),
        };
        self.unary(req, |r| {
            let mut svc = this.admin_service();
            async move { svc.list_jurisdictions(r).await }
        })
        .await
        .map(|l| l.jurisdictions)
    }

    /// The field offices and the states they cover (admin).
    pub async fn list_field_offices(&self) -> Result<Vec<pb::FieldOffice>, Status> {
        let this = self.clone();
        self.unary(pb::ListFieldOfficesRequest {}, |r| {
            let mut svc = this.admin_service();
            async move { svc.list_field_offices(r).await }
        })
        .await
        .map(|l| l.field_offices)
    }

    /// The gateway's counters by name (admin).
    pub async fn counters(&self) -> Result<std::collections::BTreeMap<String, u64>, Status> {
        let this = self.clone();
        self.unary(pb::GetCountersRequest {}, |r| {
            let mut svc = this.admin_service();
            async move { svc.get_counters(r).await }
        })
        .await
        .map(|c| c.values.into_iter().collect())
    }

    /// Takes a subject out of the served matcher's gallery (admin; the gateway serves its
    /// IDENT gallery, an `interop-matcher serve` process its shard): the gallery size after.
    pub async fn remove_subject(&self, subject_id: u64) -> Result<u64, Status> {
        let this = self.clone();
        self.unary(pb::RemoveRequest { subject_id }, |r| {
            let mut svc = this.matcher_service();
            async move { svc.remove(r).await }
        })
        .await
        .map(|r| r.gallery_size)
    }

    /// Monthly statistics (admin).
    pub async fn monthly_stats(
        &self,
        req: pb::GetMonthlyStatsRequest,
    ) -> Result<pb::MonthlyStats, Status> {
        let this = self.clone();
        self.unary(req, |r| {
            let mut svc = this.admin_service();
            async move { svc.get_monthly_stats(r).await }
        })
        .await
    }
}

/// A message of a cursor-ordered stream.
pub trait Cursored {
    fn cursor(&self) -> u64;
}

impl Cursored for pb::BureauResponse {
    fn cursor(&self) -> u64 {
        self.cursor
    }
}

impl Cursored for pb::FieldOfficeNotification {
    fn cursor(&self) -> u64 {
        self.cursor
    }
}

type OpenStream<T> = Box<
    dyn FnMut(
            Option<u64>,
        ) -> Pin<Box<dyn Future<Output = Result<tonic::Streaming<T>, Status>> + Send>>
        + Send,
>;

/// A cursor-ordered stream (bureau responses or field-office outcomes) that re-opens
/// itself from the last cursor it delivered when the connection breaks or the gateway
/// restarts, and drops anything at or below that cursor, so each message reaches the caller
/// once. Gives up only on a refusal (e.g. `PERMISSION_DENIED`) or when the follow retry
/// policy is spent.
pub struct Follower<T> {
    open: OpenStream<T>,
    stream: Option<tonic::Streaming<T>>,
    last: Option<u64>,
    follow: bool,
    retry: RetryPolicy,
    /// For moving to another gateway when the stream breaks.
    client: Client,
    failures: u32,
}

impl<T: Cursored> Follower<T> {
    fn new(after: Option<u64>, follow: bool, client: Client, open: OpenStream<T>) -> Self {
        Follower {
            open,
            stream: None,
            last: after,
            follow,
            retry: client.cfg.follow_retry,
            client,
            failures: 0,
        }
    }

    /// The last cursor delivered (or the starting cursor, before the first message).
    pub fn cursor(&self) -> Option<u64> {
        self.last
    }

    async fn backoff(&mut self, s: Status) -> Result<(), Status> {
        self.stream = None;
        self.failures += 1;
        if !stream_retryable(s.code()) || self.failures >= self.retry.max_attempts {
            return Err(s);
        }
        tracing::info!(failures = self.failures, code = ?s.code(), "stream interrupted; re-opening from its cursor");
        self.client.failover();
        tokio::time::sleep(self.retry.delay(self.failures)).await;
        Ok(())
    }

    /// The next message; `None` when a non-following stream has delivered everything.
    pub async fn next(&mut self) -> Result<Option<T>, Status> {
        loop {
            let stream = match &mut self.stream {
                Some(s) => s,
                None => match (self.open)(self.last).await {
                    Ok(s) => self.stream.insert(s),
                    Err(s) => {
                        self.backoff(s).await?;
                        continue;
                    }
                },
            };
            match stream.message().await {
                Ok(Some(m)) => {
                    self.failures = 0;
                    let c = m.cursor();
                    if self.last.is_some_and(|l| c <= l) {
                        continue; // seen before a reconnect
                    }
                    self.last = Some(c);
                    return Ok(Some(m));
                }
                Ok(None) if !self.follow => {
                    self.stream = None;
                    return Ok(None);
                }
                // A following stream only ends when the gateway shuts down: wait and resume.
                Ok(None) => self.backoff(Status::unavailable("stream ended")).await?,
                Err(s) => self.backoff(s).await?,
            }
        }
    }
}

/// A cursor kept in a small file so a follower continues exactly where it stopped across
/// runs. The file names the role it belongs to (`field-office/HOU 1234`), so one office's
/// state is never used for another; saving writes a temporary file, syncs it and renames it
/// over the old one, so a crash leaves either the old cursor or the new one.
#[derive(Debug)]
pub struct CursorFile {
    path: PathBuf,
    role: Role,
}

impl CursorFile {
    /// Opens (without creating) the state file for `role`; returns it with the cursor it
    /// holds, `None` if the file does not exist yet.
    pub fn open(
        path: impl Into<PathBuf>,
        role: &Role,
    ) -> Result<(CursorFile, Option<u64>), ClientError> {
        let path = path.into();
        let err = |reason: String| ClientError::State {
            path: path.clone(),
            reason,
        };
        let cursor = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mut parts = text.split_whitespace();
                let (who, n) = (parts.next(), parts.next());
                match (who, n.map(str::parse::<u64>), parts.next()) {
                    (Some(w), Some(Ok(n)), None) if w == role.to_string() => Some(n),
                    (Some(w), Some(Ok(_)), None) => {
                        return Err(err(format!("it belongs to {w}, not {role}")));
                    }
                    _ => return Err(err("not a cursor file (expected `ROLE CURSOR`)".into())),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(err(e.to_string())),
        };
        Ok((
            CursorFile {
                path,
                role: role.clone(),
            },
            cursor,
        ))
    }

    /// Durably records `cursor`.
    pub fn save(&self, cursor: u64) -> Result<(), ClientError> {
        use std::io::Write;
        let err = |e: std::io::Error| ClientError::State {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        writeln!(f, "{} {cursor}", self.role).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn roles_parse_and_print_back() {
        for s in ["bureau/TX", "field-office/HOU", "admin"] {
            assert_eq!(s.parse::<Role>().unwrap().to_string(), s);
        }
        assert_eq!(
            "field-office/HOU".parse::<Role>().unwrap().file_stem(),
            "field-office-HOU"
        );
        for bad in [
            "bureau/tx",
            "bureau/TEX",
            "office/HOU",
            "field-office/HO",
            "",
            "root",
        ] {
            let e = bad.parse::<Role>().unwrap_err().to_string();
            assert!(e.contains("unknown role"), "{bad}: {e}");
        }
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

    #[test]
    fn cursor_file_round_trips_and_refuses_another_role() {
        let dir = std::env::temp_dir().join(format!("interop-cursor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hou.cursor");
        let _ = std::fs::remove_file(&path);
        let hou: Role = "field-office/HOU".parse().unwrap();
        let (f, c) = CursorFile::open(&path, &hou).unwrap();
        assert_eq!(c, None);
        f.save(41).unwrap();
        f.save(42).unwrap();
        assert_eq!(CursorFile::open(&path, &hou).unwrap().1, Some(42));
        let atl: Role = "field-office/ATL".parse().unwrap();
        let e = CursorFile::open(&path, &atl).unwrap_err().to_string();
        assert!(e.contains("belongs to field-office/HOU"), "{e}");
        std::fs::write(&path, "garbage").unwrap();
        assert!(CursorFile::open(&path, &hou).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
