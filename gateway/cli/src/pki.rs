//! A development PKI for mutual TLS (`interop-gateway pki`): one CA, kept in a directory of
//! its own ([`CaDir`], `<dir>-ca`), and a serving directory laid out as [`PkiDir`] says: the
//! gateway's workload certificate (`spiffe://interop.local/gateway/0`, for loopback) and client
//! certificates carrying SPIFFE identities (see [`interop_gateway::auth::principal`]).
//! [`issue_bundle`] makes one host's directory: a matcher shard's, another gateway replica's,
//! one bureau's. Keys are generated at run time with rcgen and written with owner-only
//! permissions; none is ever committed.
//!
//! Also here: the NATS server configuration and `--store` value of a cluster's shared log
//! (the gateways' own store certificate), and connecting to a gateway as one of the PKI's
//! identities, for the simulator and the tests.

use anyhow::{Context, Result};
use interop_client::{Client, ClientConfig, Role};
pub use interop_gateway::auth::pki::{CaDir, IdentityFiles, PkiDir};
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

/// Loads the CA from its directory, as an issuer.
fn load_issuer(dir: &CaDir) -> Result<Issuer<'static, KeyPair>> {
    let key_pem = std::fs::read_to_string(dir.ca_key()).with_context(|| {
        format!(
            "reading {} (the CA's directory: `pki init --out DIR` writes it to DIR-ca)",
            dir.ca_key().display()
        )
    })?;
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
/// unless it is there already (`pki init` issues it), with the CA beside `dir`; returns its
/// files.
pub fn ensure_store_client(dir: &PkiDir) -> Result<IdentityFiles> {
    let files = dir.store_client();
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    let issuer = load_issuer(&dir.ca_dir_beside())?;
    issue_store_client(&issuer, &files)?;
    Ok(files)
}

fn issue_store_client(issuer: &Issuer<'_, KeyPair>, files: &IdentityFiles) -> Result<()> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![STORE_CLIENT_NAME.to_string()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, STORE_CLIENT_NAME);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut params, 365);
    let cert = params.signed_by(&key, issuer)?;
    write_pair(files, &cert.pem(), &key)
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
pub fn issue_client(ca_dir: &CaDir, principal: &Principal, out: &IdentityFiles) -> Result<()> {
    let issuer = load_issuer(ca_dir)?;
    let (pem, key) = client_cert(&issuer, principal)?;
    write_pair(out, &pem, &key)
}

/// Issues a client certificate valid only from `not_before` to `not_after` (for tests of
/// expired and not-yet-valid certificates).
pub fn issue_client_valid(
    ca_dir: &CaDir,
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

/// The host names and addresses a workload certificate is issued for when none are given:
/// loopback.
pub const LOOPBACK_HOSTS: &[&str] = &["localhost", "127.0.0.1", "::1"];

/// A workload certificate's parameters: `who`'s SPIFFE URI, the names and addresses in
/// `hosts` (what clients check when they connect to it), for serving and for calling the
/// other parts.
fn workload_params(who: &Principal, hosts: &[String]) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, who.file_stem());
    params.subject_alt_names = vec![SanType::URI(who.spiffe_id().try_into()?)];
    for h in hosts {
        params
            .subject_alt_names
            .push(match h.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(h.clone().try_into()?),
            });
    }
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut params, 365);
    Ok(params)
}

/// Issues `who`'s workload certificate for `hosts` (loopback if empty) to `files`.
fn issue_workload(
    issuer: &Issuer<'_, KeyPair>,
    who: &Principal,
    hosts: &[String],
    files: &IdentityFiles,
) -> Result<()> {
    let loopback: Vec<String> = LOOPBACK_HOSTS.iter().map(|h| h.to_string()).collect();
    let hosts = if hosts.is_empty() { &loopback } else { hosts };
    let key = KeyPair::generate()?;
    let cert = workload_params(who, hosts)?.signed_by(&key, issuer)?;
    write_pair(files, &cert.pem(), &key)
}

/// Writes one host's PKI directory `out`, issued by the CA in `ca`: `ca.pem`, and for a
/// workload (a gateway replica, a matcher shard) its own certificate and key as `server.pem`
/// and `server-key.pem`, valid for `hosts` (loopback if empty); for anyone else (a bureau, a
/// field office, the admin) `clients/<stem>.pem` and its key. It never holds the CA's key,
/// nor anyone else's.
pub fn issue_bundle(ca: &CaDir, who: &Principal, hosts: &[String], out: &Path) -> Result<PkiDir> {
    let issuer = load_issuer(ca)?;
    interop_gateway::store::private_dir(out)
        .with_context(|| format!("creating {}", out.display()))?;
    let dir = PkiDir(out.to_path_buf());
    std::fs::copy(ca.ca_cert(), dir.ca_cert())
        .with_context(|| format!("copying {}", ca.ca_cert().display()))?;
    if who.is_workload() {
        issue_workload(&issuer, who, hosts, &dir.server())?;
    } else {
        anyhow::ensure!(
            hosts.is_empty(),
            "--host is for workload identities (gateway, matcher); {} is a client",
            who.spiffe_id()
        );
        let (pem, key) = client_cert(&issuer, who)?;
        write_pair(&dir.client(who), &pem, &key)?;
    }
    Ok(dir)
}

/// A matcher shard's own PKI directory beside the development PKI `pki` (`<pki>-matcher-NAME`),
/// for loopback: what `interop-matcher serve --pki` takes.
pub fn shard_bundle(pki: &PkiDir, name: &str) -> Result<PkiDir> {
    let mut dir = pki.0.file_name().unwrap_or_default().to_os_string();
    dir.push(format!("-matcher-{name}"));
    issue_bundle(
        &pki.ca_dir_beside(),
        &Principal::Matcher { name: name.into() },
        &[],
        &pki.0.with_file_name(dir),
    )
}

/// The name of the development gateway's workload identity (`spiffe://interop.local/gateway/0`).
pub const DEV_GATEWAY: &str = "0";

/// What `pki init` issues client certificates for.
pub struct InitOptions<'a> {
    pub states: &'a [String],
    pub offices: &'a [String],
}

/// Creates a CA in `<out>-ca` (its key goes nowhere else) and, in `out`, the gateway's
/// workload certificate for loopback, the store client's, and client certificates for every
/// given state bureau and field office plus one admin.
pub fn init(out: &Path, opts: &InitOptions<'_>) -> Result<PkiDir> {
    init_with_ca(out, &PkiDir(out.to_path_buf()).ca_dir_beside(), opts)
}

/// [`init`] with the CA written to `ca_dir`.
pub fn init_with_ca(out: &Path, ca_dir: &CaDir, opts: &InitOptions<'_>) -> Result<PkiDir> {
    // They hold private keys: the owner's only.
    interop_gateway::store::private_dir(out)
        .with_context(|| format!("creating {}", out.display()))?;
    interop_gateway::store::private_dir(&ca_dir.0)
        .with_context(|| format!("creating {}", ca_dir.0.display()))?;
    let dir = PkiDir(out.to_path_buf());
    anyhow::ensure!(
        ca_dir.0 != dir.0,
        "the CA's directory must not be the serving directory {}",
        dir.0.display()
    );

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "interop development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca, 3650);
    let ca_cert = ca.self_signed(&ca_key)?;
    std::fs::write(ca_dir.ca_cert(), ca_cert.pem())?;
    write_secret(&ca_dir.ca_key(), &ca_key.serialize_pem())?;
    std::fs::write(dir.ca_cert(), ca_cert.pem())?;
    // A directory written by an older `pki init` held the CA key beside the server's.
    if dir.ca_key().exists() {
        std::fs::remove_file(dir.ca_key())?;
    }
    let issuer = Issuer::new(ca, ca_key);

    let gateway = Principal::Gateway {
        name: DEV_GATEWAY.into(),
    };
    issue_workload(&issuer, &gateway, &[], &dir.server())?;
    issue_store_client(&issuer, &dir.store_client())?;

    let mut principals = vec![Principal::Admin, Principal::Lesc, Principal::Crcl];
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

/// The development PKI in `out` if one is there in the current layout (its CA apart, in
/// `<out>-ca`), or a new one for `world` (a directory written before the CA had its own, which
/// a gateway would refuse to serve from, is written again).
pub fn init_or_keep(out: &Path, world: &interop_gateway::world::WorldFile) -> Result<PkiDir> {
    let kept = PkiDir(out.to_path_buf());
    if kept.ca_cert().exists() && !kept.ca_key().exists() && kept.ca_dir_beside().ca_key().exists()
    {
        return Ok(kept);
    }
    init_for_world(out, world)
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

/// The client library's name for a principal; workloads have none (they call as their own
/// `server.pem`: see [`interop_gateway::auth::pki::workload_client`]).
pub fn role(p: &Principal) -> Result<Role> {
    Ok(match p {
        Principal::Bureau { state } => Role::Bureau(state.clone()),
        Principal::FieldOffice { office } => Role::FieldOffice(office.clone()),
        Principal::Admin => Role::Admin,
        Principal::Lesc => Role::Lesc,
        Principal::Crcl => Role::Crcl,
        Principal::Gateway { .. } | Principal::Matcher { .. } => anyhow::bail!(
            "{} is a workload identity: it calls with its own server.pem, not a client role",
            p.spiffe_id()
        ),
    })
}

/// A client for `endpoint` (e.g. `https://127.0.0.1:50051`) as `who`, with the PKI
/// directory's certificates.
pub async fn connect_client(endpoint: &str, pki: &PkiDir, who: &Principal) -> Result<Client> {
    Ok(ClientConfig::from_pki_dir(endpoint, &pki.0, &role(who)?)?
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
