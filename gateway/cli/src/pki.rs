//! A development PKI for mutual TLS (`interop-gateway pki`): one CA, a server certificate
//! for loopback, and client certificates carrying SPIFFE identities (see
//! [`interop_gateway::auth::principal`]), laid out as [`PkiDir`] says. Keys are generated at
//! run time with rcgen and written with owner-only permissions; none is ever committed.
//!
//! Also here: the NATS server configuration and `--store` value of a cluster's shared log
//! (the gateways' own store certificate), and connecting to a gateway as one of the PKI's
//! identities, for the simulator and the tests.

use anyhow::{Context, Result};
use interop_client::{Client, ClientConfig, Role};
pub use interop_gateway::auth::pki::{IdentityFiles, PkiDir};
use interop_gateway::auth::principal::Principal;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::path::Path;
use tonic::transport::Channel;

/// States and territories that get a bureau certificate by default.
pub const DEFAULT_STATES: &[&str] = &[
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL", "IN", "IA",
    "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM",
    "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA",
    "WV", "WI", "WY", "PR", "GU", "VI", "MP", "AS",
];

/// ICE ERO field offices that get a certificate by default.
pub const DEFAULT_OFFICES: &[&str] = &[
    "ATL", "BAL", "BOS", "BUF", "CHI", "DAL", "DEN", "DET", "ELP", "HOU", "LOS", "MIA", "NEW",
    "NOL", "NYC", "PHI", "PHO", "SLC", "SNA", "SND", "SFR", "SEA", "SPM", "WAS",
];

fn validity(params: &mut CertificateParams, days: i64) {
    let now = chrono::Utc::now().date_naive();
    let ymd = |d: chrono::NaiveDate| {
        use chrono::Datelike;
        rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
    };
    params.not_before = ymd(now - chrono::Days::new(1));
    params.not_after = ymd(now + chrono::Days::new(days as u64));
}

fn write_secret(path: &Path, pem: &str) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // `mode` applies only when the file is created: an overwritten key keeps whatever mode
    // it had, so set it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private", path.display()))?;
    }
    f.write_all(pem.as_bytes())?;
    Ok(())
}

fn write_pair(files: &IdentityFiles, cert_pem: &str, key: &KeyPair) -> Result<()> {
    if let Some(dir) = files.cert.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&files.cert, cert_pem)
        .with_context(|| format!("writing {}", files.cert.display()))?;
    write_secret(&files.key, &key.serialize_pem())
}

/// Loads the CA from a PKI directory, as an issuer.
fn load_issuer(dir: &PkiDir) -> Result<Issuer<'static, KeyPair>> {
    let key_pem = std::fs::read_to_string(dir.ca_key())
        .with_context(|| format!("reading {}", dir.ca_key().display()))?;
    let cert_pem = std::fs::read_to_string(dir.ca_cert())
        .with_context(|| format!("reading {}", dir.ca_cert().display()))?;
    let key = KeyPair::from_pem(&key_pem).context("parsing the CA key")?;
    Issuer::from_ca_cert_pem(&cert_pem, key).context("parsing the CA certificate")
}

/// The DNS name in the gateways' client certificate for the store's NATS server. The server
/// maps it to its only user (`verify_and_map`), so a bureau's or an office's certificate from
/// the same CA cannot open the log.
pub const STORE_CLIENT_NAME: &str = "gateway.store.interop.local";

/// Issues the gateways' certificate for the store's NATS server ([`PkiDir::store_client`])
/// unless it is there already; returns its files.
pub fn ensure_store_client(dir: &PkiDir) -> Result<IdentityFiles> {
    let files = dir.store_client();
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    let issuer = load_issuer(dir)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![STORE_CLIENT_NAME.to_string()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, STORE_CLIENT_NAME);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut params, 365);
    let cert = params.signed_by(&key, &issuer)?;
    write_pair(&files, &cert.pem(), &key)?;
    Ok(files)
}

/// A `nats-server` configuration for the shared store: JetStream in `store_dir`, listening on
/// `listen` with mutual TLS (the PKI's server certificate), admitting only the gateways'
/// store certificate.
pub fn nats_server_config(dir: &PkiDir, listen: &str, store_dir: &Path) -> String {
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    let server = dir.server();
    format!(
        "listen: {listen:?}\njetstream {{ store_dir: {} }}\ntls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify_and_map: true\n  timeout: 5\n}}\nauthorization {{\n  users = [ {{ user: {STORE_CLIENT_NAME:?} }} ]\n}}\n",
        q(store_dir),
        q(&server.cert),
        q(&server.key),
        q(&dir.ca_cert()),
    )
}

/// The `--store` value with which a gateway reaches the NATS server of
/// [`nats_server_config`] over mutual TLS.
pub fn nats_store_spec(dir: &PkiDir, addr: &str, stream: &str) -> Result<String> {
    let files = ensure_store_client(dir)?;
    Ok(format!(
        "tls://{addr}/{stream}?ca={}&cert={}&key={}",
        dir.ca_cert().display(),
        files.cert.display(),
        files.key.display()
    ))
}

/// Issues a client certificate for `principal`, signed by the CA in `ca_dir`, to the given
/// files.
pub fn issue_client(ca_dir: &PkiDir, principal: &Principal, out: &IdentityFiles) -> Result<()> {
    let issuer = load_issuer(ca_dir)?;
    let (pem, key) = client_cert(&issuer, principal)?;
    write_pair(out, &pem, &key)
}

/// Issues a client certificate valid only from `not_before` to `not_after` (for tests of
/// expired and not-yet-valid certificates).
pub fn issue_client_valid(
    ca_dir: &PkiDir,
    principal: &Principal,
    out: &IdentityFiles,
    not_before: chrono::NaiveDate,
    not_after: chrono::NaiveDate,
) -> Result<()> {
    use chrono::Datelike;
    let issuer = load_issuer(ca_dir)?;
    let ymd = |d: chrono::NaiveDate| rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8);
    let key = KeyPair::generate()?;
    let mut params = client_params(principal)?;
    params.not_before = ymd(not_before);
    params.not_after = ymd(not_after);
    let cert = params.signed_by(&key, &issuer)?;
    write_pair(out, &cert.pem(), &key)
}

fn client_params(principal: &Principal) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, principal.file_stem());
    params.subject_alt_names = vec![SanType::URI(principal.spiffe_id().try_into()?)];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

fn client_cert(issuer: &Issuer<'_, KeyPair>, principal: &Principal) -> Result<(String, KeyPair)> {
    let key = KeyPair::generate()?;
    let mut params = client_params(principal)?;
    validity(&mut params, 365);
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key))
}

/// What `pki init` issues client certificates for.
pub struct InitOptions<'a> {
    pub states: &'a [String],
    pub offices: &'a [String],
}

/// Creates a CA, a loopback server certificate and client certificates for every given
/// state bureau and field office plus one admin, in `out`.
pub fn init(out: &Path, opts: &InitOptions<'_>) -> Result<PkiDir> {
    // It holds private keys: the owner's only.
    interop_gateway::store::private_dir(out)
        .with_context(|| format!("creating {}", out.display()))?;
    let dir = PkiDir(out.to_path_buf());

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "interop development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca, 3650);
    let ca_cert = ca.self_signed(&ca_key)?;
    std::fs::write(dir.ca_cert(), ca_cert.pem())?;
    write_secret(&dir.ca_key(), &ca_key.serialize_pem())?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec!["localhost".to_string()])?;
    server
        .distinguished_name
        .push(DnType::CommonName, "interop gateway");
    server
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    server
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut server, 365);
    let cert = server.signed_by(&key, &issuer)?;
    write_pair(&dir.server(), &cert.pem(), &key)?;

    let mut principals = vec![Principal::Admin];
    principals.extend(
        opts.states
            .iter()
            .map(|s| Principal::Bureau { state: s.clone() }),
    );
    principals.extend(
        opts.offices
            .iter()
            .map(|o| Principal::FieldOffice { office: o.clone() }),
    );
    for p in &principals {
        let (pem, key) = client_cert(&issuer, p)?;
        write_pair(&dir.client(p), &pem, &key)?;
    }
    Ok(dir)
}

/// `init` with a world's states and field offices: a bureau certificate per state, one per
/// field office, and the admin.
pub fn init_for_world(out: &Path, world: &interop_gateway::world::WorldFile) -> Result<PkiDir> {
    let states: Vec<String> = world.states.iter().map(|s| s.code.clone()).collect();
    let offices: Vec<String> = world.field_offices.iter().map(|o| o.code.clone()).collect();
    init(
        out,
        &InitOptions {
            states: &states,
            offices: &offices,
        },
    )
}

/// `init` with the default lists of states and field offices.
pub fn init_default(out: &Path) -> Result<PkiDir> {
    let states: Vec<String> = DEFAULT_STATES.iter().map(|s| s.to_string()).collect();
    let offices: Vec<String> = DEFAULT_OFFICES.iter().map(|s| s.to_string()).collect();
    init(
        out,
        &InitOptions {
            states: &states,
            offices: &offices,
        },
    )
}

/// The canonical serial number (see [`interop_gateway::auth::principal::normalize_serial`]) of the first
/// certificate in a PEM file: what `AdminService.RevokeCertificate` takes.
pub fn serial_of_pem_file(path: &Path) -> Result<String> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate: {e}", path.display()))?;
    interop_gateway::auth::principal::serial_of_der(&block.contents)
        .with_context(|| format!("{}: unreadable certificate", path.display()))
}

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
pub async fn connect_client(endpoint: &str, pki: &PkiDir, who: &Principal) -> Result<Client> {
    Ok(ClientConfig::from_pki_dir(endpoint, &pki.0, &role(who))?
        .connect()
        .await?)
}

/// A channel to `endpoint` as `who`, for the generated stubs.
pub async fn connect(endpoint: &str, pki: &PkiDir, who: &Principal) -> Result<Channel> {
    Ok(connect_client(endpoint, pki, who).await?.channel())
}

/// Client settings for `endpoint` that trust the PKI's CA and present `who`'s certificate
/// files (`None`: no client certificate), for tests of what the gateway refuses.
pub fn client_config(
    endpoint: &str,
    pki: &PkiDir,
    who: Option<&IdentityFiles>,
) -> Result<ClientConfig> {
    Ok(ClientConfig::from_files(
        endpoint,
        &pki.ca_cert(),
        who.map(|f| (f.cert.as_path(), f.key.as_path())),
    )?)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_key_written_over_a_readable_file_becomes_private() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("bureau.key");
        std::fs::write(&key, "old").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_secret(&key, "new").unwrap();
        assert_eq!(mode(&key), 0o600);
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "new");
    }

    #[test]
    fn pki_init_makes_its_directory_private_even_when_it_existed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("pki");
        std::fs::create_dir(&out).unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
        init(
            &out,
            &InitOptions {
                states: &["TX".to_string()],
                offices: &[],
            },
        )
        .unwrap();
        assert_eq!(mode(&out), 0o700);
    }
}
