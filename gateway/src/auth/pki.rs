//! The layout of a PKI directory, where the gateway and a matcher shard find their
//! certificate, key and client CA bundle (and tools find the client identities):
//! `ca.pem`, `server.pem`, `server-key.pem`, and `clients/<stem>.pem` +
//! `clients/<stem>-key.pem` per identity (`bureau-TX`, `field-office-HOU`, `admin`).
//!
//! A serving directory's `server.pem` is the process's **workload identity**: its URI names
//! it (`spiffe://interop.local/gateway/<replica>` or `.../matcher/<shard>`), and it is used
//! both to serve and to call the other parts (a gateway calls its shards with it, a shard its
//! gateway). The CA's private key lives apart, in a [`CaDir`] (`pki init` writes it beside the
//! serving directory, as `<dir>-ca`): a process that serves never needs it, and
//! [`PkiDir::refuse_ca_key`] refuses to serve from a directory that holds it. Issuing
//! certificates is the command line's (`interop-gateway pki`), not the gateway's.

use crate::auth::principal::Principal;
use anyhow::Context;
use std::path::PathBuf;

/// Paths of one identity's certificate and key.
#[derive(Clone, Debug)]
pub struct IdentityFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Paths inside a PKI directory.
#[derive(Clone, Debug)]
pub struct PkiDir(pub PathBuf);

/// The CA's own directory: `ca.pem` and `ca-key.pem`. Keep it off every serving host.
#[derive(Clone, Debug)]
pub struct CaDir(pub PathBuf);

impl CaDir {
    pub fn ca_cert(&self) -> PathBuf {
        self.0.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.0.join(CA_KEY_FILE)
    }
}

/// The name of the CA's private key file, wherever it is.
pub const CA_KEY_FILE: &str = "ca-key.pem";

impl PkiDir {
    pub fn ca_cert(&self) -> PathBuf {
        self.0.join("ca.pem")
    }
    /// Where a CA key would be in this directory: a serving directory must not have one.
    pub fn ca_key(&self) -> PathBuf {
        self.0.join(CA_KEY_FILE)
    }
    /// The CA directory `pki init` writes beside this one: `<dir>-ca`.
    pub fn ca_dir_beside(&self) -> CaDir {
        let mut name = self.0.file_name().unwrap_or_default().to_os_string();
        name.push("-ca");
        CaDir(self.0.with_file_name(name))
    }
    /// The process's own certificate and key: its workload identity, to serve and to call.
    pub fn server(&self) -> IdentityFiles {
        IdentityFiles {
            cert: self.0.join("server.pem"),
            key: self.0.join("server-key.pem"),
        }
    }
    /// The gateways' certificate for the shared store's NATS server.
    pub fn store_client(&self) -> IdentityFiles {
        IdentityFiles {
            cert: self.0.join("clients").join("store-gateway.pem"),
            key: self.0.join("clients").join("store-gateway-key.pem"),
        }
    }

    pub fn client(&self, p: &Principal) -> IdentityFiles {
        let stem = p.file_stem();
        IdentityFiles {
            cert: self.0.join("clients").join(format!("{stem}.pem")),
            key: self.0.join("clients").join(format!("{stem}-key.pem")),
        }
    }

    /// The identity `server.pem` names (its SPIFFE URI), if it names one.
    pub fn workload(&self) -> anyhow::Result<Option<Principal>> {
        let path = self.server().cert;
        let pem = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let (_, block) = x509_parser::pem::parse_x509_pem(&pem)
            .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate: {e}", path.display()))?;
        Ok(Principal::from_cert_der(&block.contents))
    }

    /// The workload identity of `server.pem`, which must be a gateway's or a shard's
    /// (`want` says which, for the error): what a process calls the other parts as.
    pub fn workload_as(&self, want: &str) -> anyhow::Result<Principal> {
        match self.workload()? {
            Some(p @ Principal::Gateway { .. }) if want == "gateway" => Ok(p),
            Some(p @ Principal::Matcher { .. }) if want == "matcher" => Ok(p),
            other => anyhow::bail!(
                "{}: the certificate names {} rather than a {want} identity \
                 (spiffe://interop.local/{want}/NAME); issue this host's bundle with \
                 `interop-gateway pki issue --ca CA_DIR --id spiffe://interop.local/{want}/NAME --out DIR`",
                self.server().cert.display(),
                other.map_or("no interop identity".into(), |p| p.spiffe_id()),
            ),
        }
    }

    /// Refuses to serve from a directory holding the CA's private key (anyone who reads a
    /// serving host's files could then issue any identity, admin included), unless `allow`
    /// (a development setup, said so explicitly).
    pub fn refuse_ca_key(&self, allow: bool) -> anyhow::Result<()> {
        let key = self.ca_key();
        if !key.exists() {
            return Ok(());
        }
        if allow {
            tracing::warn!(dir = %self.0.display(), "serving from a directory that holds the CA's private key (--allow-ca-key): a development setup only");
            return Ok(());
        }
        anyhow::bail!(
            "{} holds the CA's private key ({}): a serving host must not (anyone reading its files \
             could issue any identity). Move it to a directory of its own (`pki init` now writes \
             it to {}), or pass --allow-ca-key for a development setup",
            self.0.display(),
            key.display(),
            self.ca_dir_beside().0.display()
        )
    }
}

/// A client of `endpoint` presenting this directory's own workload certificate (`server.pem`),
/// trusting its `ca.pem`.
pub fn workload_client(
    pki: &PkiDir,
    endpoint: &str,
) -> Result<interop_client::ClientConfig, interop_client::ClientError> {
    let me = pki.server();
    interop_client::ClientConfig::from_files(
        endpoint,
        &pki.ca_cert(),
        Some((me.cert.as_path(), me.key.as_path())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_directory_is_beside_and_a_ca_key_is_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let pki = PkiDir(dir.path().join("pki"));
        assert_eq!(pki.ca_dir_beside().0, dir.path().join("pki-ca"));
        std::fs::create_dir(&pki.0).unwrap();
        pki.refuse_ca_key(false).expect("no key, nothing to refuse");
        std::fs::write(pki.ca_key(), "key").unwrap();
        let e = pki.refuse_ca_key(false).unwrap_err().to_string();
        assert!(e.contains("pki-ca") && e.contains("--allow-ca-key"), "{e}");
        pki.refuse_ca_key(true)
            .expect("a development setup, said so");
    }
}
