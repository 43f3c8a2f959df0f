//! Connecting to a gateway as one of its users, over mutual TLS with a PKI directory.
//! Used by the simulator and the end-to-end tests (a fuller client library is planned).

use crate::pki::{IdentityFiles, PkiDir};
use crate::principal::Principal;
use anyhow::Context;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// TLS settings for a client: trust our CA, present `who`'s certificate (if any).
pub fn client_tls(pki: &PkiDir, who: Option<&IdentityFiles>) -> anyhow::Result<ClientTlsConfig> {
    let read =
        |p: &std::path::Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&pki.ca_cert())?))
        .domain_name("localhost");
    if let Some(files) = who {
        tls = tls.identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?));
    }
    Ok(tls)
}

/// Opens a channel to `endpoint` (e.g. `https://127.0.0.1:50051`) as `who`.
pub async fn connect(endpoint: &str, pki: &PkiDir, who: &Principal) -> anyhow::Result<Channel> {
    connect_with(endpoint, client_tls(pki, Some(&pki.client(who)))?).await
}

/// Opens a channel with explicit TLS settings.
pub async fn connect_with(endpoint: &str, tls: ClientTlsConfig) -> anyhow::Result<Channel> {
    Channel::from_shared(endpoint.to_string())
        .context("endpoint")?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("connecting to {endpoint}"))
}
