//! Intake: how a booking gets in. A submission is validated ([`validate`]: every field, every
//! limit, before anything is stored), admitted (its bureau's share of the pipeline, then room
//! in the pipeline's queue, both refused fast with RESOURCE_EXHAUSTED), durably accepted by
//! the store (the receipt: a repeat of a held TCN gets the same receipt, DESIGN.md §3.1), and
//! handed to the pipeline. Nothing is stored for a refused submission (§3.7).

pub mod validate;

use crate::convert;
use crate::error::GatewayError;
use crate::pipeline::Job;
use crate::server::Gateway;
use crate::store::{Accepted, ReceiptRecord, SubmissionKey};
use interop_proto::v1 as pb;
use prost::Message;
use std::sync::Arc;

/// The receipt of a stored submission, as the bureau gets it.
pub fn receipt(tcn: &str, r: &ReceiptRecord, duplicate: bool) -> pb::Receipt {
    pb::Receipt {
        tcn: tcn.to_string(),
        receipt_id: r.receipt_id.clone(),
        accepted_at: Some(convert::timestamp_ms(r.accepted_at_ms)),
        duplicate,
    }
}

/// Validate → admit → durable accept → hand to the pipeline: a booking's way in, for both
/// `Submit` and `SubmitStream`. Counts receipts, repeats and refusals in the metrics.
pub async fn submit(
    gw: &Gateway,
    state: &str,
    sub: pb::Submission,
) -> Result<pb::Receipt, GatewayError> {
    let started = std::time::Instant::now();
    let result = admit(gw, state, sub).await;
    let m = &gw.core.metrics;
    match &result {
        Ok(r) if r.duplicate => m.inc("interop_duplicates_total", crate::metrics::state(state)),
        Ok(_) => {
            m.inc("interop_receipts_total", crate::metrics::state(state));
            m.observe("receipt", started.elapsed());
        }
        Err(e) => {
            if matches!(e, GatewayError::ResourceExhausted(_)) {
                m.inc("interop_shed_total", String::new());
            }
            m.inc(
                "interop_refused_total",
                format!(
                    "{},code=\"{}\"",
                    crate::metrics::state(state),
                    e.code_name()
                ),
            );
        }
    }
    result
}

async fn admit(
    gw: &Gateway,
    state: &str,
    sub: pb::Submission,
) -> Result<pb::Receipt, GatewayError> {
    let sub = validate::expand_minutiae_record(sub)?;
    let valid = validate::submission(state, &gw.core.policy, &sub, chrono::Utc::now())?;
    // Admission control before anything is stored: a bureau past its share, or a full
    // pipeline, is refused fast.
    let share = gw.per_bureau_share();
    let Some(slot) = gw.bureau_shares.take(state, share) else {
        return Err(GatewayError::ResourceExhausted(format!(
            "bureau {state} already has {share} submissions waiting for processing (its share \
             of the pipeline); retry with backoff"
        )));
    };
    let permit = match tokio::time::timeout(gw.options().admission_wait, gw.jobs.reserve()).await {
        Ok(Ok(p)) => p,
        Ok(Err(_)) => return Err(GatewayError::Unavailable("gateway is shutting down".into())),
        Err(_) => {
            return Err(GatewayError::ResourceExhausted(
                "the pipeline is full; retry with backoff".into(),
            ));
        }
    };
    let key = SubmissionKey {
        bureau: state.to_string(),
        tcn: sub.tcn.clone(),
    };
    let payload = sub.encode_to_vec();
    match gw
        .core
        .store
        .accept(key.clone(), payload, convert::now_ms())
        .await?
    {
        Accepted::New(r) => {
            tracing::debug!(bureau = %state, tcn = %sub.tcn, receipt = %r.receipt_id, fingers = sub.fingers.len(), "accepted");
            let out = receipt(&sub.tcn, &r, false);
            permit.send(Job {
                slot: Some(slot),
                accepted_ms: r.accepted_at_ms,
                key,
                submission: sub,
                valid,
            });
            Ok(out)
        }
        Accepted::Duplicate(r) => {
            tracing::debug!(bureau = %state, tcn = %sub.tcn, receipt = %r.receipt_id, "repeat of a received submission");
            Ok(receipt(&sub.tcn, &r, true))
        }
    }
}

/// Each bureau's receipted submissions not yet processed (queued or in flight), so one bureau
/// cannot fill the whole queue: past its share, its new submissions are refused before they
/// are stored while other bureaus' still get in.
#[derive(Default)]
pub struct BureauShares {
    waiting: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// A bureau's place in the pipeline, given back when its job is done (or dropped at a halt).
pub struct BureauSlot {
    shares: Arc<BureauShares>,
    bureau: String,
}

impl BureauShares {
    /// Takes a place for `bureau` unless it already has `max` submissions waiting.
    pub fn take(self: &Arc<Self>, bureau: &str, max: usize) -> Option<BureauSlot> {
        let mut w = self.waiting.lock().expect("bureau shares");
        let n = w.entry(bureau.to_string()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(BureauSlot {
            shares: self.clone(),
            bureau: bureau.to_string(),
        })
    }

    /// Submissions `bureau` has waiting.
    pub fn waiting(&self, bureau: &str) -> usize {
        self.waiting
            .lock()
            .expect("bureau shares")
            .get(bureau)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for BureauSlot {
    fn drop(&mut self) {
        let mut w = self.shares.waiting.lock().expect("bureau shares");
        if let Some(n) = w.get_mut(&self.bureau) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                w.remove(&self.bureau);
            }
        }
    }
}
