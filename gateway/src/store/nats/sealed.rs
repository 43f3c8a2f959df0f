//! Payloads sealed for the log, and shredded when their submission completes.
//!
//! JetStream's log keeps an entry until it is trimmed behind a snapshot (see `trim.rs`), so a
//! tenprint appended in the clear would stay readable there long after its submission
//! completed, while the embedded
//! store erases a payload once its submission completes (issue 27). So a payload goes into the
//! log **sealed**: encrypted (ChaCha20-Poly1305, `ring`, the crate TLS already uses) under a
//! key of its own, bound to its submission key as associated data. The key lives in a
//! JetStream key-value bucket beside the log (`<STREAM>_KEYS`, one entry per pending
//! submission), where every replica can read it — a replica taking over a stopped one's work
//! opens its payloads — and when the submission completes the key is **purged**: the
//! ciphertext stays in the log, and nobody can open it any more (crypto-shredding). A key whose
//! purge failed is purged by the next sweep (every minute, on every replica), as is one whose
//! accept never reached the log.
//!
//! Duplicates are still told from conflicts by content: the op carries the SHA-256 of the
//! payload in the clear ([`super::Op::AcceptSealed`]), which the view compares, as the
//! embedded store compares its own digest.
//!
//! A payload reads back in the clear only from [`Keys::open`]; a log written before payloads
//! were sealed holds them in the clear, and they read as they are.

use super::super::redb::RedbStore;
use super::super::{Store, StoreError, StoreResult, SubmissionKey};
use async_nats::jetstream::{self, kv};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use tokio_stream::StreamExt;

/// What a sealed payload starts with. A payload in the clear is an encoded protobuf message,
/// which cannot start with a zero byte (field number 0 does not exist).
const MAGIC: &[u8] = b"\0interop-sealed1";

const KEY_LEN: usize = 32;

/// The payload keys of one log.
pub(super) struct Keys {
    kv: kv::Store,
    /// Keys this process made or read, until their submission completes.
    cache: Mutex<HashMap<SubmissionKey, [u8; KEY_LEN]>>,
    rng: SystemRandom,
    /// Keys found without a submission at the last sweep: purged if still so at the next.
    orphans: Mutex<HashSet<String>>,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("payload keys: {what}: {e}"))
}

/// The bucket entry of `key`: its text in hex (KV keys allow few characters; TCNs may hold
/// others).
fn entry_name(key: &SubmissionKey) -> String {
    let text = key.to_string();
    let mut name = String::with_capacity(1 + 2 * text.len());
    name.push('s');
    for b in text.bytes() {
        name.push_str(&format!("{b:02x}"));
    }
    name
}

/// The submission key an entry is named for, if it is one of ours.
fn key_of(name: &str) -> Option<SubmissionKey> {
    let hex = name.strip_prefix('s')?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    let (bureau, tcn) = text.split_once('/')?;
    Some(SubmissionKey {
        bureau: bureau.into(),
        tcn: tcn.into(),
    })
}

/// Whether `payload` was sealed by [`Keys::seal`].
pub(super) fn is_sealed(payload: &[u8]) -> bool {
    payload.starts_with(MAGIC)
}

impl Keys {
    /// The bucket of `stream`'s payload keys, created if missing.
    pub(super) async fn open_bucket(
        js: &jetstream::Context,
        stream: &str,
        replicas: usize,
    ) -> anyhow::Result<Keys> {
        let kv = super::key_value_bucket(
            js,
            &format!("{stream}_KEYS"),
            "interop: keys of pending submissions' sealed payloads",
            replicas,
            std::time::Duration::ZERO,
        )
        .await?;
        Ok(Keys {
            kv,
            cache: Mutex::default(),
            rng: SystemRandom::new(),
            orphans: Mutex::default(),
        })
    }

    /// The key of `key`'s payload: this process's, the bucket's, or a new one written there
    /// first (two replicas accepting the same TCN at once share the first one written).
    async fn key_for(&self, key: &SubmissionKey) -> StoreResult<[u8; KEY_LEN]> {
        if let Some(k) = self.cache.lock().expect("keys").get(key) {
            return Ok(*k);
        }
        let mut fresh = [0u8; KEY_LEN];
        self.rng
            .fill(&mut fresh)
            .map_err(|_| unavailable("random", "no randomness"))?;
        let name = entry_name(key);
        let k = match self.kv.create(&name, fresh.to_vec().into()).await {
            Ok(_) => fresh,
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => self
                .read(key)
                .await?
                .ok_or_else(|| unavailable("create", "the key vanished while it was being made"))?,
            Err(e) => return Err(unavailable("create", e)),
        };
        self.cache.lock().expect("keys").insert(key.clone(), k);
        Ok(k)
    }

    /// `key`'s payload key from the bucket; `None` once shredded.
    async fn read(&self, key: &SubmissionKey) -> StoreResult<Option<[u8; KEY_LEN]>> {
        let v = self
            .kv
            .get(entry_name(key))
            .await
            .map_err(|e| unavailable("read", e))?;
        Ok(v.and_then(|b| <[u8; KEY_LEN]>::try_from(b.as_ref()).ok()))
    }

    /// `payload`, sealed under `key`'s payload key for the log.
    pub(super) async fn seal(&self, key: &SubmissionKey, payload: &[u8]) -> StoreResult<Vec<u8>> {
        let k = self.key_for(key).await?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| unavailable("random", "no randomness"))?;
        let sealing = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &k).expect("key size"));
        let mut body = payload.to_vec();
        sealing
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.to_string().as_bytes()),
                &mut body,
            )
            .map_err(|_| unavailable("seal", "encryption failed"))?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// `payload` as it was accepted: opened if sealed (an error if its key was shredded or
    /// it does not open), as it is otherwise.
    pub(super) async fn open(&self, key: &SubmissionKey, payload: Vec<u8>) -> StoreResult<Vec<u8>> {
        if !is_sealed(&payload) {
            return Ok(payload);
        }
        let cached = self.cache.lock().expect("keys").get(key).copied();
        let k = match cached {
            Some(k) => k,
            None => {
                let k = self.read(key).await?.ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "the payload of {key} was shredded, yet it is still pending"
                    ))
                })?;
                self.cache.lock().expect("keys").insert(key.clone(), k);
                k
            }
        };
        let rest = &payload[MAGIC.len()..];
        if rest.len() < NONCE_LEN {
            return Err(StoreError::Corrupt(format!("sealed payload of {key}")));
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let opening = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &k).expect("key size"));
        let mut body = body.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).expect("nonce size");
        let clear = opening
            .open_in_place(nonce, Aad::from(key.to_string().as_bytes()), &mut body)
            .map_err(|_| {
                StoreError::Corrupt(format!("the sealed payload of {key} does not open"))
            })?;
        Ok(clear.to_vec())
    }

    /// Purges `key`'s payload key: its payload in the log can no longer be opened.
    pub(super) async fn shred(&self, key: &SubmissionKey) -> StoreResult<()> {
        self.cache.lock().expect("keys").remove(key);
        self.kv
            .purge(entry_name(key))
            .await
            .map_err(|e| unavailable("purge", e))
    }

    /// Purges the keys of submissions `view` holds as completed (a purge that failed at
    /// completion), and of submissions it does not hold at all at two sweeps in a row (an
    /// accept that never reached the log). Returns how many it purged.
    pub(super) async fn sweep(&self, view: &RedbStore) -> StoreResult<u64> {
        let mut names = self.kv.keys().await.map_err(|e| unavailable("list", e))?;
        let mut purged = 0;
        let mut orphans = HashSet::new();
        while let Some(name) = names.next().await {
            let name = name.map_err(|e| unavailable("list", e))?;
            let Some(key) = key_of(&name) else { continue };
            let shred = match view.submission(key.clone()).await? {
                Some(s) => s.completed,
                None => {
                    let again = self.orphans.lock().expect("orphans").contains(&name);
                    orphans.insert(name.clone());
                    again
                }
            };
            if shred {
                self.shred(&key).await?;
                purged += 1;
            }
        }
        *self.orphans.lock().expect("orphans") = orphans;
        Ok(purged)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The bucket entry of `key`, for the store's tests.
    pub(in crate::store::nats) fn entry(key: &SubmissionKey) -> String {
        entry_name(key)
    }

    #[test]
    fn entry_names_round_trip_and_a_clear_payload_is_not_sealed() {
        let key = SubmissionKey {
            bureau: "TX".into(),
            tcn: "TX-2011 0001/é".into(),
        };
        let name = entry_name(&key);
        assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{name}: a valid KV key"
        );
        assert_eq!(key_of(&name), Some(key));
        assert_eq!(key_of("other"), None);
        use prost::Message;
        let clear = interop_proto::v1::Submission {
            tcn: "TX-1".into(),
            ..Default::default()
        }
        .encode_to_vec();
        assert!(!is_sealed(&clear));
    }
}
