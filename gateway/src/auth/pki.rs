//! The layout of a PKI directory, where the gateway and a matcher shard find their
//! certificate, key and client CA bundle (and tools find the client identities):
//! `ca.pem`, `ca-key.pem`, `server.pem`, `server-key.pem`, and `clients/<stem>.pem` +
//! `clients/<stem>-key.pem` per identity (`bureau-TX`, `field-office-HOU`, `admin`).
//! Issuing a development PKI is the command line's (`interop-gateway pki`), not the
//! gateway's.

use crate::auth::principal::Principal;
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

impl PkiDir {
    pub fn ca_cert(&self) -> PathBuf {
        self.0.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.0.join("ca-key.pem")
    }
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
}
