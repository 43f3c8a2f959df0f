//! The server's TLS configuration: mutual TLS with rustls (through `tokio-rustls`, the stack
//! tonic uses), held here rather than by tonic so that the server certificate, its key and the
//! client CA bundle can be **re-read without a restart** ([`ServerTls::reload`], on SIGHUP or
//! `AdminService.ReloadCertificates`): each new connection takes the configuration current
//! when it arrives, open connections keep the one they were made with, and a reload that fails
//! (a missing file, a key that does not match its certificate) changes nothing and says why.
//! The listener that uses it is [`crate::server::listener`].
//!
//! **Revoked certificates are refused at the handshake** (once the server is given its
//! revocation list, [`ServerTls::refuse_revoked`]): the client gets TLS's own
//! `certificate_revoked` alert, and no call, health check or reflection reaches a service. Each
//! call is checked again, and open streams end, when a certificate is revoked later
//! ([`crate::auth::revocation`]).

use crate::auth::revocation::Revocations;
use anyhow::Context;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};
use tokio_rustls::rustls;
use tokio_rustls::rustls::DistinguishedName;
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};

/// Where the server's TLS material is read from (and re-read on reload).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// One or more CA certificates (PEM) that client certificates must chain to. During a CA
    /// rotation it holds the old and the new CA.
    pub client_ca: PathBuf,
}

/// What a (re)load put in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// Canonical serial of the server certificate.
    pub server_serial: String,
    /// Certificates in the client CA bundle.
    pub client_cas: usize,
}

/// The revocation list the handshake consults, once the server has given it one.
type RevokedAt = Arc<OnceLock<Revocations>>;

/// The server TLS configuration, replaceable while serving.
pub struct ServerTls {
    files: TlsFiles,
    revoked: RevokedAt,
    current: RwLock<(Arc<rustls::ServerConfig>, Loaded)>,
}

impl ServerTls {
    /// Reads the files and builds the configuration.
    pub fn load(files: TlsFiles) -> anyhow::Result<ServerTls> {
        let revoked = RevokedAt::default();
        let current = build(&files, &revoked)?;
        Ok(ServerTls {
            files,
            revoked,
            current: RwLock::new(current),
        })
    }

    /// From now on, handshakes with a client certificate that `revocations` lists fail with
    /// the `certificate_revoked` alert. The first list given is kept (a server has one).
    pub fn refuse_revoked(&self, revocations: Revocations) {
        let _ = self.revoked.set(revocations);
    }

    /// Re-reads the files; on success new connections use them. On failure the configuration
    /// in use is kept and the error names the file and the problem.
    pub fn reload(&self) -> anyhow::Result<Loaded> {
        let next = build(&self.files, &self.revoked)?;
        let loaded = next.1.clone();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
        tracing::info!(
            server_serial = %loaded.server_serial,
            client_cas = loaded.client_cas,
            "TLS certificates reloaded"
        );
        Ok(loaded)
    }

    pub fn loaded(&self) -> Loaded {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    pub(crate) fn config(&self) -> Arc<rustls::ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }
}

fn read(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// The CA's verifier, then the revocation list: a certificate that chains to the CA but whose
/// serial is revoked fails the handshake with `certificate_revoked`.
#[derive(Debug)]
struct RefuseRevoked {
    chain: Arc<dyn ClientCertVerifier>,
    revoked: RevokedAt,
}

impl ClientCertVerifier for RefuseRevoked {
    fn offer_client_auth(&self) -> bool {
        self.chain.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.chain.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .chain
            .verify_client_cert(end_entity, intermediates, now)?;
        if let Some(list) = self.revoked.get()
            && let Some(serial) = crate::auth::principal::serial_of_der(end_entity)
            && list.is_revoked(&serial)
        {
            tracing::info!(serial, "TLS handshake refused: client certificate revoked");
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

fn build(
    files: &TlsFiles,
    revoked: &RevokedAt,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, Loaded)> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(&files.cert)?)
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not a PEM certificate chain", files.cert.display()))?;
    let first = certs
        .first()
        .with_context(|| format!("{}: holds no certificate", files.cert.display()))?;
    let server_serial = crate::auth::principal::serial_of_der(first)
        .with_context(|| format!("{}: unreadable certificate", files.cert.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?)
        .with_context(|| format!("{}: not a PEM private key", files.key.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let cas: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read(&files.client_ca)?)
            .collect::<Result<_, _>>()
            .with_context(|| format!("{}: not PEM certificates", files.client_ca.display()))?;
    for ca in cas {
        roots
            .add(ca)
            .with_context(|| format!("{}: unusable CA certificate", files.client_ca.display()))?;
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "{}: holds no CA certificate",
        files.client_ca.display()
    );
    let client_cas = roots.len();
    // ring, named explicitly: the process-default provider is ambiguous as soon as anything in
    // the tree enables a second one.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .context("building the client certificate verifier")?;
    let verifier = Arc::new(RefuseRevoked {
        chain: verifier,
        revoked: revoked.clone(),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "{} and {} do not form a usable identity",
                files.cert.display(),
                files.key.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((
        Arc::new(config),
        Loaded {
            server_serial,
            client_cas,
        },
    ))
}
