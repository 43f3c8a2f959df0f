//! Why a call's connection broke, when the gateway may have refused this client's
//! certificate. In TLS 1.3 the client's side of the handshake ends before the gateway has
//! judged the client's certificate, so a refusal (`certificate_revoked`, an expired
//! certificate, another CA) arrives as an alert on a connection the client already uses. If
//! the call was still queued when the connection closed, hyper reports only "operation was
//! canceled" and the alert is lost: the user would see a `CANCELLED` they cannot act on. So,
//! before such an error is returned, one probe connection asks the question directly: it
//! handshakes as the same identity, sends what a gRPC client sends first (the HTTP/2 preface)
//! and reads the gateway's first answer, its HTTP/2 settings or the alert.

use crate::config::ClientConfig;
use anyhow::Context;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::Status;

/// The HTTP/2 connection preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// The rustls configuration the client's channels use, built from the same files.
fn rustls_config(
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c.context("CA certificate")?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder.with_client_auth_cert(
            CertificateDer::pem_slice_iter(cert).collect::<Result<Vec<_>, _>>()?,
            PrivateKeyDer::from_pem_slice(key)?,
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The gateway at `url` refuses this client's certificate at the handshake: the
/// `UNAUTHENTICATED` saying why ([`crate::retry::refused_at_handshake`]); `None` when it
/// accepts it, or when the probe cannot tell (unreachable, no answer in time).
pub(crate) async fn handshake_refusal(cfg: &ClientConfig, url: &str) -> Option<Status> {
    let uri: tonic::codegen::http::Uri = url.parse().ok()?;
    let host = uri
        .host()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let identity = cfg
        .identity
        .as_ref()
        .map(|(c, k)| (c.as_slice(), k.as_slice()));
    let tls = Arc::new(rustls_config(&cfg.ca_pem, identity).ok()?);
    let name = ServerName::try_from(cfg.server_name.clone()).ok()?;
    let probe = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        let mut s = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await?;
        s.write_all(H2_PREFACE).await?;
        s.flush().await?;
        let mut buf = [0u8; 64];
        s.read(&mut buf).await
    };
    match tokio::time::timeout(cfg.connect_timeout, probe).await {
        Ok(Err(e)) => crate::retry::refused_at_handshake(&e),
        _ => None,
    }
}
