//! Who is calling, resolved once from the client certificate (mutual TLS) and never from a
//! request field.
//!
//! Identities are SPIFFE-style URI SANs in the `interop.local` trust domain:
//! `spiffe://interop.local/bureau/<STATE>`, `spiffe://interop.local/field-office/<OFFICE>`,
//! `spiffe://interop.local/lesc` and `spiffe://interop.local/admin` name people and agencies; our own parts have workload
//! identities, `spiffe://interop.local/gateway/<replica>` and
//! `spiffe://interop.local/matcher/<shard>`, each with its own certificate and key (a gateway
//! calls shards as itself; a shard serves only gateways, and reads the gateway's revocations
//! and gallery changes as itself). The [`authenticate`] interceptor turns the verified
//! peer certificate into a [`Principal`] stored in the request's extensions; handlers read it
//! with [`principal`] and never look at certificates themselves.

use crate::error::GatewayError;
use tonic::{Request, Status};

pub const TRUST_DOMAIN: &str = "interop.local";

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Principal {
    /// A state identification bureau: submits for its own state's agencies only.
    Bureau { state: String },
    /// An ICE field office: reads its own area of responsibility only.
    FieldOffice { office: String },
    /// ICE's Law Enforcement Support Center: records calls to the hotline on the detainer form.
    Lesc,
    /// The DHS Office for Civil Rights and Civil Liberties' complaint intake: records and
    /// moves civil-rights complaints (`ComplaintService`).
    Crcl,
    /// Administrators: policy and statistics. A person's role, never a process's.
    Admin,
    /// A gateway replica (workload identity): what matcher shards serve.
    Gateway { name: String },
    /// A matcher shard process (workload identity): at a gateway it may read the revocation
    /// list and its shard's gallery changes, nothing else.
    Matcher { name: String },
}

/// A workload's name: 1 to 40 of `a-z`, `0-9` and `-`, starting with a letter or digit.
pub fn workload_name_ok(s: &str) -> bool {
    (1..=40).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

impl Principal {
    /// Parses a SPIFFE id; `None` for anything outside our trust domain or shape.
    pub fn from_spiffe(uri: &str) -> Option<Principal> {
        let path = uri.strip_prefix("spiffe://")?.strip_prefix(TRUST_DOMAIN)?;
        let parts: Vec<&str> = path.split('/').collect();
        let upper = |s: &str, n: std::ops::RangeInclusive<usize>| {
            n.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_uppercase())
        };
        match parts.as_slice() {
            ["", "admin"] => Some(Principal::Admin),
            ["", "lesc"] => Some(Principal::Lesc),
            ["", "crcl"] => Some(Principal::Crcl),
            ["", "bureau", st] if upper(st, 2..=2) => Some(Principal::Bureau {
                state: st.to_string(),
            }),
            ["", "field-office", o] if upper(o, 3..=3) => Some(Principal::FieldOffice {
                office: o.to_string(),
            }),
            ["", "gateway", n] if workload_name_ok(n) => Some(Principal::Gateway {
                name: n.to_string(),
            }),
            ["", "matcher", n] if workload_name_ok(n) => Some(Principal::Matcher {
                name: n.to_string(),
            }),
            _ => None,
        }
    }

    pub fn spiffe_id(&self) -> String {
        match self {
            Principal::Bureau { state } => format!("spiffe://{TRUST_DOMAIN}/bureau/{state}"),
            Principal::FieldOffice { office } => {
                format!("spiffe://{TRUST_DOMAIN}/field-office/{office}")
            }
            Principal::Admin => format!("spiffe://{TRUST_DOMAIN}/admin"),
            Principal::Lesc => format!("spiffe://{TRUST_DOMAIN}/lesc"),
            Principal::Crcl => format!("spiffe://{TRUST_DOMAIN}/crcl"),
            Principal::Gateway { name } => format!("spiffe://{TRUST_DOMAIN}/gateway/{name}"),
            Principal::Matcher { name } => format!("spiffe://{TRUST_DOMAIN}/matcher/{name}"),
        }
    }

    /// Whether this is one of our own processes (a gateway or a shard) rather than a person
    /// or an agency.
    pub fn is_workload(&self) -> bool {
        matches!(self, Principal::Gateway { .. } | Principal::Matcher { .. })
    }

    /// Short file-name form used by the dev PKI: `bureau-TX`, `field-office-HOU`, `admin`.
    pub fn file_stem(&self) -> String {
        match self {
            Principal::Bureau { state } => format!("bureau-{state}"),
            Principal::FieldOffice { office } => format!("field-office-{office}"),
            Principal::Admin => "admin".into(),
            Principal::Lesc => "lesc".into(),
            Principal::Crcl => "crcl".into(),
            Principal::Gateway { name } => format!("gateway-{name}"),
            Principal::Matcher { name } => format!("matcher-{name}"),
        }
    }

    /// The principal named by a DER certificate's URI SANs (exactly one must parse).
    pub fn from_cert_der(der: &[u8]) -> Option<Principal> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        Self::from_cert(&cert)
    }

    fn from_cert(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<Principal> {
        let san = cert.subject_alternative_name().ok()??;
        let mut found = san.value.general_names.iter().filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Principal::from_spiffe(u),
            _ => None,
        });
        let first = found.next()?;
        // Two identities in one certificate is ambiguous: refuse rather than pick one.
        found.next().is_none().then_some(first)
    }
}

/// The serial number of the client certificate a call came with: lowercase hex without
/// leading zeros (how [`normalize_serial`] writes any serial), so it compares with the
/// revocation list.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CertSerial(pub String);

/// A certificate serial as typed by a person (`0A:1b:...`, `0x0a1b`) in canonical form, or
/// `None` if it is not hex (or longer than the 20 bytes RFC 5280 allows).
pub fn normalize_serial(s: &str) -> Option<String> {
    let s = s.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    if hex.is_empty() || hex.len() > 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let trimmed = hex.trim_start_matches('0').to_ascii_lowercase();
    Some(if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed
    })
}

/// The canonical serial of a DER certificate.
pub fn serial_of_der(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    serial_of(&cert)
}

fn serial_of(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    let hex: String = cert
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    normalize_serial(&hex)
}

/// Interceptor: resolves the peer certificate to a [`Principal`] or refuses the call.
/// TLS has already verified the chain against our CA; this only reads the identity.
#[allow(clippy::result_large_err)]
pub fn authenticate(req: Request<()>) -> Result<Request<()>, Status> {
    authenticate_with(req, &|_| None)
}

/// Like [`authenticate`], also refusing a certificate whose serial `revoked` reports, with
/// the reason it gives.
#[allow(clippy::result_large_err)]
pub fn authenticate_with(
    mut req: Request<()>,
    revoked: &dyn Fn(&str) -> Option<String>,
) -> Result<Request<()>, Status> {
    // One parse per call for both the identity and the serial.
    let certs = req.peer_certs();
    let parsed = certs
        .as_ref()
        .and_then(|c| c.first())
        .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
        .map(|(_, cert)| (Principal::from_cert(&cert), serial_of(&cert)));
    let (principal, serial) = match parsed {
        Some((Some(p), serial)) => (p, serial.unwrap_or_default()),
        _ => {
            return Err(GatewayError::Unauthenticated(
                "client certificate carries no interop identity".into(),
            )
            .into());
        }
    };
    if let Some(why) = revoked(&serial) {
        return Err(crate::auth::revocation::refusal(&serial, &why, false).into());
    }
    req.extensions_mut().insert(principal);
    req.extensions_mut().insert(CertSerial(serial));
    Ok(req)
}

/// The serial of the caller's certificate, as set by [`authenticate`] (empty if unknown).
pub fn serial<T>(req: &Request<T>) -> String {
    req.extensions()
        .get::<CertSerial>()
        .map(|s| s.0.clone())
        .unwrap_or_default()
}

/// The caller's principal, as set by [`authenticate`].
pub fn principal<T>(req: &Request<T>) -> Result<Principal, GatewayError> {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| GatewayError::Unauthenticated("no authenticated identity".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_roles_and_refuses_the_rest() {
        assert_eq!(
            Principal::from_spiffe("spiffe://interop.local/bureau/TX"),
            Some(Principal::Bureau { state: "TX".into() })
        );
        assert_eq!(
            Principal::from_spiffe("spiffe://interop.local/field-office/HOU"),
            Some(Principal::FieldOffice {
                office: "HOU".into()
            })
        );
        assert_eq!(
            Principal::from_spiffe("spiffe://interop.local/admin"),
            Some(Principal::Admin)
        );
        assert_eq!(
            Principal::from_spiffe("spiffe://interop.local/lesc"),
            Some(Principal::Lesc)
        );
        assert_eq!(
            Principal::from_spiffe("spiffe://interop.local/crcl"),
            Some(Principal::Crcl)
        );
        for bad in [
            "spiffe://other.local/admin",
            "spiffe://interop.local/bureau/tx",
            "spiffe://interop.local/bureau/TEX",
            "spiffe://interop.local/bureau/TX/extra",
            "spiffe://interop.local/field-office/HO",
            "spiffe://interop.local/admin/x",
            "spiffe://interop.local/lesc/x",
            "spiffe://interop.local/crcl/x",
            "https://interop.local/admin",
            "spiffe://interop.localhost/admin",
            "spiffe://interop.local/gateway/",
            "spiffe://interop.local/gateway/Main",
            "spiffe://interop.local/gateway/-a",
            "spiffe://interop.local/matcher/ident_0",
            "spiffe://interop.local/matcher/ident-0/x",
            &format!("spiffe://interop.local/matcher/{}", "a".repeat(41)),
        ] {
            assert_eq!(Principal::from_spiffe(bad), None, "{bad}");
        }
    }

    #[test]
    fn serials_are_normalised() {
        assert_eq!(normalize_serial("0A:1B:ff").as_deref(), Some("a1bff"));
        assert_eq!(normalize_serial("0x00").as_deref(), Some("0"));
        assert_eq!(normalize_serial(" 7f ").as_deref(), Some("7f"));
        for bad in ["", "xyz", "0x", ":", &"a".repeat(41)] {
            assert_eq!(normalize_serial(bad), None, "{bad}");
        }
    }

    #[test]
    fn spiffe_ids_round_trip() {
        for p in [
            Principal::Admin,
            Principal::Lesc,
            Principal::Crcl,
            Principal::Bureau { state: "CA".into() },
            Principal::FieldOffice {
                office: "SFR".into(),
            },
            Principal::Gateway { name: "0".into() },
            Principal::Matcher {
                name: "ident-1".into(),
            },
        ] {
            assert_eq!(Principal::from_spiffe(&p.spiffe_id()), Some(p));
        }
    }
}
