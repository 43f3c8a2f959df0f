//! Connecting to a gateway as one of its users, through the client library
//! ([`interop_client`]): the simulator and the end-to-end tests name users by their
//! [`Principal`] and PKI directory; everything else (TLS, deadlines, retries, resuming
//! streams) is the library's.

use crate::pki::PkiDir;
use crate::principal::Principal;
use interop_client::{Client, ClientConfig, Role};
use tonic::transport::Channel;

/// The client library's name for a principal.
pub fn role(p: &Principal) -> Role {
    match p {
        Principal::Bureau { state } => Role::Bureau(state.clone()),
        Principal::FieldOffice { office } => Role::FieldOffice(office.clone()),
        Principal::Admin => Role::Admin,
    }
}

/// A client for `endpoint` (e.g. `https://127.0.0.1:50051`) as `who`, with the PKI
/// directory's certificates.
pub async fn connect_client(
    endpoint: &str,
    pki: &PkiDir,
    who: &Principal,
) -> anyhow::Result<Client> {
    Ok(ClientConfig::from_pki_dir(endpoint, &pki.0, &role(who))?
        .connect()
        .await?)
}

/// A channel to `endpoint` as `who`, for the generated stubs.
pub async fn connect(endpoint: &str, pki: &PkiDir, who: &Principal) -> anyhow::Result<Channel> {
    Ok(connect_client(endpoint, pki, who).await?.channel())
}

/// Client settings for `endpoint` that trust the PKI's CA and present `who`'s certificate
/// files (`None`: no client certificate), for tests of what the gateway refuses.
pub fn client_config(
    endpoint: &str,
    pki: &PkiDir,
    who: Option<&crate::pki::IdentityFiles>,
) -> anyhow::Result<ClientConfig> {
    Ok(ClientConfig::from_files(
        endpoint,
        &pki.ca_cert(),
        who.map(|f| (f.cert.as_path(), f.key.as_path())),
    )?)
}
