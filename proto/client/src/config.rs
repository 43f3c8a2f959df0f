//! Who the client is, where the gateway is, and the connection: [`Role`], [`ClientConfig`]
//! and the [`Client`] it connects.
//!
//! A role is named as the gateway's certificates name it (`bureau/TX`, `field-office/HOU`,
//! `admin`), so a PKI directory written by `interop-gateway pki init` is all a user needs.
//! The configuration is a plain value, adjusted with builder methods and checked when it
//! connects; the [`Client`] it makes is cheap to clone and shares one HTTP/2 connection per
//! gateway. Several gateway replicas may be given, comma-separated: the client uses one at a
//! time and moves to the next when a call or stream has to be retried (see [`crate::retry`]),
//! which is safe because every RPC of the contract is idempotent.

use crate::error::ClientError;
use crate::retry::RetryPolicy;
use interop_proto::v1::admin_service_client::AdminServiceClient;
use interop_proto::v1::field_office_service_client::FieldOfficeServiceClient;
use interop_proto::v1::matcher_service_client::MatcherServiceClient;
use interop_proto::v1::submission_service_client::SubmissionServiceClient;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Where a gateway listens by default (the gateway's own default address).
pub const DEFAULT_ENDPOINT: &str = "https://127.0.0.1:50051";

/// Largest message a client accepts (a bureau's biggest answer is far smaller; submissions
/// are capped by the gateway at 256 KiB).
const MAX_DECODE: usize = 4 * 1024 * 1024;

/// Who a client is, as the gateway's certificates name it: `bureau/TX`,
/// `field-office/HOU` or `admin`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Bureau(String),
    FieldOffice(String),
    /// ICE's Law Enforcement Support Center (the detainer form's hotline).
    Lesc,
    /// The DHS Office for Civil Rights and Civil Liberties' complaint intake.
    Crcl,
    Admin,
}

impl Role {
    /// File stem of this role's certificate in a PKI directory (`clients/<stem>.pem`).
    pub fn file_stem(&self) -> String {
        match self {
            Role::Bureau(s) => format!("bureau-{s}"),
            Role::FieldOffice(o) => format!("field-office-{o}"),
            Role::Admin => "admin".into(),
            Role::Lesc => "lesc".into(),
            Role::Crcl => "crcl".into(),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Bureau(s) => write!(f, "bureau/{s}"),
            Role::FieldOffice(o) => write!(f, "field-office/{o}"),
            Role::Admin => f.write_str("admin"),
            Role::Lesc => f.write_str("lesc"),
            Role::Crcl => f.write_str("crcl"),
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
            None if s == "lesc" => Ok(Role::Lesc),
            None if s == "crcl" => Ok(Role::Crcl),
            Some(("bureau", st)) if code_ok(st, 2..=2) => Ok(Role::Bureau(st.into())),
            Some(("field-office", o)) if code_ok(o, 3..=3) => Ok(Role::FieldOffice(o.into())),
            _ => Err(ClientError::Config(format!(
                "unknown role {s:?}: expected bureau/XX (a two-letter state), \
                 field-office/XXX (a three-letter office code), lesc, crcl or admin"
            ))),
        }
    }
}

/// How to reach a gateway and as whom. Build it with [`ClientConfig::from_pki_dir`] or
/// [`ClientConfig::from_files`], adjust it, then [`connect`](ClientConfig::connect).
#[derive(Clone)]
pub struct ClientConfig {
    endpoint: String,
    pub(crate) ca_pem: Vec<u8>,
    pub(crate) identity: Option<(Vec<u8>, Vec<u8>)>,
    pub(crate) server_name: String,
    pub(crate) call_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) follow_retry: RetryPolicy,
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

    /// Whether the (first) gateway refuses this identity's certificate at the TLS handshake:
    /// the `UNAUTHENTICATED` saying why (revoked, expired, another CA), or `None` when it
    /// accepts it or cannot be asked. One probe connection; see the `probe` module.
    pub async fn handshake_refusal(&self) -> Option<tonic::Status> {
        crate::probe::handshake_refusal(self, self.endpoint_at(0)?).await
    }

    /// The `i`th gateway address.
    pub(crate) fn endpoint_at(&self, i: usize) -> Option<&str> {
        self.endpoints().get(i).copied()
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
                Err(e) if let Some(refused) = crate::retry::refused_at_handshake(&e) => {
                    return Err(ClientError::Rpc(refused));
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
///
/// Its calls are grouped by what they are for: [`crate::submit`] (a bureau's bookings),
/// [`crate::follow`] (the cursor-ordered streams, and a field office's answers to them),
/// [`crate::admin`] (administration).
#[derive(Clone)]
pub struct Client {
    channels: Arc<[Channel]>,
    current: Arc<AtomicUsize>,
    pub(crate) cfg: Arc<ClientConfig>,
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

    /// The index of the gateway in use (taken before a call, so that a failure moves on from
    /// that one only).
    pub(crate) fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// Moves to the next gateway, if there is more than one.
    pub(crate) fn failover(&self) {
        self.failover_from(self.current());
    }

    /// Moves on from gateway `from` unless another caller already did (many calls failing at
    /// once move it once).
    pub(crate) fn failover_from(&self, from: usize) {
        let n = self.channels.len();
        if n > 1
            && self
                .current
                .compare_exchange(
                    from,
                    from.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
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

    /// The generated complaint stub on this connection (CRCL's intake; reads also the admin
    /// and field offices).
    pub fn complaint_service(
        &self,
    ) -> interop_proto::v1::complaint_service_client::ComplaintServiceClient<Channel> {
        interop_proto::v1::complaint_service_client::ComplaintServiceClient::new(self.channel())
            .max_decoding_message_size(MAX_DECODE)
    }

    /// The generated matcher stub on this connection (the gateway serves its IDENT gallery
    /// through it, a matcher shard process its shard).
    pub fn matcher_service(&self) -> MatcherServiceClient<Channel> {
        MatcherServiceClient::new(self.channel()).max_decoding_message_size(MAX_DECODE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
