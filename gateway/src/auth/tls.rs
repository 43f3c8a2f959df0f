//! The server's TLS configuration: mutual TLS with rustls (through `tokio-rustls`, the stack
//! tonic uses), held here rather than by tonic so that the server certificate, its key and the
//! client CA bundle can be **re-read without a restart** ([`ServerTls::reload`], on SIGHUP or
//! `AdminService.ReloadCertificates`): each new connection takes the configuration current
//! when it arrives, open connections keep the one they were made with, and a reload that fails
//! (a missing file, a key that does not match its certificate) changes nothing and says why.
//! The listener that uses it is [`crate::server::listener`].

use anyhow::Context;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

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

/// The server TLS configuration, replaceable while serving.
pub struct ServerTls {
    files: TlsFiles,
    current: RwLock<(Arc<rustls::ServerConfig>, Loaded)>,
}

impl ServerTls {
    /// Reads the files and builds the configuration.
    pub fn load(files: TlsFiles) -> anyhow::Result<ServerTls> {
        let current = build(&files)?;
        Ok(ServerTls {
            files,
            current: RwLock::new(current),
        })
    }

    /// Re-reads the files; on success new connections use them. On failure the configuration
    /// in use is kept and the error names the file and the problem.
    pub fn reload(&self) -> anyhow::Result<Loaded> {
        let next = build(&self.files)?;
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

fn build(files: &TlsFiles) -> anyhow::Result<(Arc<rustls::ServerConfig>, Loaded)> {
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
