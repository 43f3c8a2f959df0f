//! Intake: how a booking gets in. A submission is validated ([`validate`]: every field, every
//! limit, before anything is stored), admitted (within the backlog's budget: see
//! [`crate::pipeline::backlog`]; refused fast with RESOURCE_EXHAUSTED past it), durably
//! accepted by the store (the receipt: a repeat of a held TCN gets the same receipt, DESIGN.md
//! §3.1), and added to the backlog the workers take from. Admission never waits for the
//! pipeline: a receipt costs validation and one durable append. Nothing is stored for a
//! refused submission (§3.7).

pub mod validate;

use crate::convert;
use crate::error::GatewayError;
use crate::pipeline::backlog::{Entry, Prepared};
use crate::server::Gateway;
use crate::store::{Accepted, ReceiptRecord, SubmissionKey};
use interop_proto::v1 as pb;
use prost::Message;

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
    let key = SubmissionKey {
        bureau: state.to_string(),
        tcn: sub.tcn.clone(),
    };
    let payload = sub.encode_to_vec();
    let bytes = payload.len() as u64;
    // Within the backlog's budget, or refused before anything is stored.
    gw.backlog
        .admit(&key, bytes, convert::now_ms())
        .map_err(GatewayError::ResourceExhausted)?;
    match gw
        .core
        .store
        .accept(key.clone(), payload, convert::now_ms())
        .await?
    {
        Accepted::New(r) => {
            tracing::debug!(bureau = %state, tcn = %sub.tcn, receipt = %r.receipt_id, fingers = sub.fingers.len(), "accepted");
            let out = receipt(&sub.tcn, &r, false);
            let entry = Entry {
                key,
                accepted_ms: r.accepted_at_ms,
                bytes,
                prepared: Some(Box::new(Prepared {
                    submission: sub,
                    valid,
                })),
            };
            // Shared work: whichever replica is free processes it; counted here until done.
            if gw.shared_work {
                gw.backlog.park(entry);
            } else {
                gw.backlog.push(entry);
            }
            Ok(out)
        }
        Accepted::Duplicate(r) => {
            tracing::debug!(bureau = %state, tcn = %sub.tcn, receipt = %r.receipt_id, "repeat of a received submission");
            Ok(receipt(&sub.tcn, &r, true))
        }
    }
}
