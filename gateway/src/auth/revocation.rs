//! Client-certificate revocation by serial number.
//!
//! The list lives in memory for the per-call check (a read lock and a map lookup in the
//! authentication interceptor) and in the store's settings (`revoked/<serial>`), written
//! before it is applied, so a revocation survives a restart. Open streams watch
//! [`Revocations::watch`] and close themselves when their certificate's serial is listed.
//!
//! Why serials and not a CRL file: the gateway's own CA issues every client certificate, so
//! the admin who revokes knows the serial (`openssl x509 -serial`, or the `certificate_serial`
//! of the disclosure audit), and one RPC is enough. A revocation is permanent; a replacement
//! certificate for the same identity has a new serial and is unaffected.

use crate::error::GatewayError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// Settings key prefix of persisted revocations.
pub const SETTING_PREFIX: &str = "revoked/";

/// One revoked certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// Canonical serial (see [`crate::auth::principal::normalize_serial`]).
    pub serial: String,
    pub reason: String,
    pub revoked_at_ms: i64,
}

/// The shared revocation list. Cloning shares it.
#[derive(Clone)]
pub struct Revocations {
    list: Arc<RwLock<BTreeMap<String, Revoked>>>,
    /// Bumped on every new revocation, so streams wake and check their own serial.
    version: Arc<watch::Sender<u64>>,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("revoked", &self.list.read().map(|l| l.len()).unwrap_or(0))
            .finish()
    }
}

impl Default for Revocations {
    fn default() -> Self {
        Revocations {
            list: Arc::default(),
            version: Arc::new(watch::channel(0).0),
        }
    }
}

impl Revocations {
    /// Whether `serial` is revoked. An empty serial (none known) never is.
    pub fn is_revoked(&self, serial: &str) -> bool {
        !serial.is_empty() && self.list.read().is_ok_and(|l| l.contains_key(serial))
    }

    /// The reason `serial` was revoked, if it is.
    pub fn reason(&self, serial: &str) -> Option<String> {
        if serial.is_empty() {
            return None;
        }
        let l = self.list.read().ok()?;
        l.get(serial).map(|r| {
            if r.reason.is_empty() {
                "revoked by an administrator".to_string()
            } else {
                r.reason.clone()
            }
        })
    }

    /// Adds a revocation; returns the one now held (the first, if it was already revoked).
    pub fn insert(&self, r: Revoked) -> Revoked {
        let held = {
            let mut l = self.list.write().unwrap_or_else(|e| e.into_inner());
            l.entry(r.serial.clone()).or_insert(r).clone()
        };
        self.version.send_modify(|v| *v += 1);
        held
    }

    pub fn get(&self, serial: &str) -> Option<Revoked> {
        self.list.read().ok()?.get(serial).cloned()
    }

    /// Every revocation, by serial.
    pub fn list(&self) -> Vec<Revoked> {
        self.list
            .read()
            .map(|l| l.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The refusal of `serial` if it is revoked: see [`refusal`].
    pub fn refusal(&self, serial: &str, stream: bool) -> Option<GatewayError> {
        self.reason(serial).map(|why| refusal(serial, &why, stream))
    }

    /// Changes whenever a certificate is revoked.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

/// The refusal of a certificate revoked for `why`: UNAUTHENTICATED naming its serial, and,
/// for a stream it ends, saying so.
pub fn refusal(serial: &str, why: &str, stream: bool) -> GatewayError {
    let closed = if stream { "; stream closed" } else { "" };
    GatewayError::Unauthenticated(format!(
        "client certificate serial {serial} has been revoked: {why}{closed}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoking_is_permanent_and_first_reason_wins() {
        let r = Revocations::default();
        let mut w = r.watch();
        assert!(!r.is_revoked("a1"));
        assert!(!r.is_revoked(""));
        let first = Revoked {
            serial: "a1".into(),
            reason: "key compromise".into(),
            revoked_at_ms: 1,
        };
        assert_eq!(r.insert(first.clone()), first);
        assert!(w.has_changed().unwrap());
        w.borrow_and_update();
        let again = Revoked {
            reason: "other".into(),
            revoked_at_ms: 2,
            ..first.clone()
        };
        assert_eq!(r.insert(again), first);
        assert!(r.is_revoked("a1"));
        assert_eq!(r.reason("a1").as_deref(), Some("key compromise"));
        assert_eq!(r.list(), vec![first]);
    }
}
