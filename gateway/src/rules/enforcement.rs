//! The officers' acts a field office records on an identification: a **detainer** and a
//! **removal**. The system recommends; ICE decides (DESIGN.md §2): these are separate,
//! recorded acts, each appended once (by `(state, TCN)`), with the monthly statistics they
//! move committed in the same transaction.
//!
//! Both are open only to the field office covering the booking's jurisdiction, on an outcome
//! that recommended enforcement; anything else is the same NOT_FOUND, so an office learns
//! nothing about bookings that are not its own.

use crate::convert;
use crate::error::GatewayError;
use crate::intake::validate;
use crate::pipeline::counters;
use crate::rules::{detainer, statistics};
use crate::server::Gateway;
use crate::store::{Completion, Once, StreamKey, SubmissionKey};
use interop_proto::v1 as pb;
use prost::Message;

/// The IDENT outcome of `(state, tcn)` if it is in `office`'s area and recommended
/// enforcement. Unknown, undetermined and out-of-area bookings all get the same NOT_FOUND, so
/// an office learns nothing about bookings that are not its own.
async fn enforceable_outcome(
    gw: &Gateway,
    office: &str,
    state: &str,
    tcn: &str,
) -> Result<pb::IdentOutcome, GatewayError> {
    let state_ok = state.len() == 2 && state.bytes().all(|b| b.is_ascii_uppercase());
    if !state_ok {
        return Err(GatewayError::invalid(
            "state",
            "must be a two-letter state code",
        ));
    }
    if !validate::tcn_ok(tcn) {
        return Err(GatewayError::invalid(
            "tcn",
            "must be 8 to 40 characters of A-Z, 0-9 and '-'",
        ));
    }
    let not_found = || {
        GatewayError::NotFound(
            "tcn: no identification with this TCN in your area of responsibility".into(),
        )
    };
    let key = SubmissionKey {
        bureau: state.to_string(),
        tcn: tcn.to_string(),
    };
    let stored = gw.core.store.submission(key).await?.ok_or_else(not_found)?;
    let outcome = stored
        .summary
        .as_deref()
        .and_then(|b| pb::IdentOutcome::decode(b).ok())
        .ok_or_else(not_found)?;
    let covered = gw
        .core
        .policy
        .jurisdiction(&outcome.jurisdiction_id)
        .is_some_and(|j| j.field_office == office);
    if !covered {
        return Err(not_found());
    }
    let recommendation =
        pb::Recommendation::try_from(outcome.recommendation).unwrap_or(pb::Recommendation::None);
    if !matches!(
        recommendation,
        pb::Recommendation::Detainer | pb::Recommendation::DetainerOnConviction
    ) {
        return Err(GatewayError::FailedPrecondition(
            "tcn: the outcome carries no enforcement recommendation (no hit, lawful status, or discretion)".into(),
        ));
    }
    Ok(outcome)
}

fn booked_at(outcome: &pb::IdentOutcome) -> Option<chrono::NaiveDateTime> {
    outcome
        .booked_at
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|t| t.naive_utc())
}

/// Records a removal: see `FieldOfficeService.RecordRemoval`.
pub async fn record_removal(
    gw: &Gateway,
    office: &str,
    r: pb::RecordRemovalRequest,
) -> Result<pb::Removal, GatewayError> {
    let removed_on: chrono::NaiveDate = r
        .removed_on
        .parse()
        .map_err(|_| GatewayError::invalid("removed_on", "must be a date YYYY-MM-DD"))?;
    let outcome = enforceable_outcome(gw, office, &r.state, &r.tcn).await?;
    if booked_at(&outcome).is_some_and(|b| removed_on < b.date()) {
        return Err(GatewayError::invalid("removed_on", "is before the booking"));
    }
    let removal = pb::Removal {
        tcn: r.tcn.clone(),
        jurisdiction_id: outcome.jurisdiction_id.clone(),
        removed_on: removed_on.to_string(),
    };
    let completion = Completion {
        events: vec![],
        counters: vec![
            (counters::REMOVALS.to_string(), 1),
            (stat_key(&outcome, statistics::REMOVALS), 1),
        ],
        summary: None,
    };
    match gw
        .core
        .store
        .append_once(
            format!("removal/{}/{}", r.state, r.tcn),
            removal.encode_to_vec(),
            completion,
        )
        .await?
    {
        Once::Appended => Ok(removal),
        Once::Existing(bytes) => pb::Removal::decode(bytes.as_slice()).map_err(|_| {
            GatewayError::DataLoss(format!("stored removal of {} is unreadable", r.tcn))
        }),
    }
}

/// The time a request's `field` gives, or INVALID_ARGUMENT naming it.
fn required_time(
    t: Option<prost_types::Timestamp>,
    field: &str,
) -> Result<chrono::DateTime<chrono::Utc>, GatewayError> {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.try_into().ok()?))
        .ok_or_else(|| GatewayError::invalid(field, "is required and must be a valid time"))
}

/// Issues a detainer: see `FieldOfficeService.IssueDetainer`.
pub async fn issue_detainer(
    gw: &Gateway,
    office: &str,
    r: pb::IssueDetainerRequest,
) -> Result<pb::Detainer, GatewayError> {
    let release = required_time(r.scheduled_release, "scheduled_release")?.naive_utc();
    let outcome = enforceable_outcome(gw, office, &r.state, &r.tcn).await?;
    if booked_at(&outcome)
        .is_some_and(|b| release < b || release > b + chrono::Duration::days(5 * 366))
    {
        return Err(GatewayError::invalid(
            "scheduled_release",
            "must be after the booking and within five years of it",
        ));
    }
    let recommendation =
        pb::Recommendation::try_from(outcome.recommendation).unwrap_or(pb::Recommendation::None);
    let hold = detainer::hold_until(release);
    let ts = |t: chrono::NaiveDateTime| convert::timestamp_ms(t.and_utc().timestamp_millis());
    let detainer = pb::Detainer {
        detainer_id: format!("DET-{}-{}", r.state, r.tcn),
        tcn: r.tcn.clone(),
        jurisdiction_id: outcome.jurisdiction_id.clone(),
        field_office: office.to_string(),
        scheduled_release: Some(ts(release)),
        hold_until: Some(ts(hold)),
        operative_on_conviction: recommendation == pb::Recommendation::DetainerOnConviction,
        issued_at: Some(convert::timestamp_ms(convert::now_ms())),
        notice: Some(detainer::notice()),
    };
    let event = pb::BureauResponse {
        cursor: 0,
        tcn: r.tcn.clone(),
        body: Some(pb::bureau_response::Body::Detainer(detainer.clone())),
    };
    let completion = Completion {
        events: vec![(StreamKey::Bureau(r.state.clone()), event.encode_to_vec())],
        counters: vec![
            (counters::DETAINERS_ISSUED.to_string(), 1),
            (stat_key(&outcome, statistics::DETAINERS_ISSUED), 1),
        ],
        summary: None,
    };
    match gw
        .core
        .store
        .append_once(
            format!("detainer/{}/{}", r.state, r.tcn),
            detainer.encode_to_vec(),
            completion,
        )
        .await?
    {
        Once::Appended => {
            tracing::debug!(office, tcn = %r.tcn, "detainer issued");
            gw.core
                .metrics
                .inc("interop_detainers_total", crate::metrics::office(office));
            Ok(detainer)
        }
        Once::Existing(bytes) => pb::Detainer::decode(bytes.as_slice()).map_err(|_| {
            GatewayError::DataLoss(format!("stored detainer of {} is unreadable", r.tcn))
        }),
    }
}

/// Monthly statistics count a detainer or removal in the month and jurisdiction of its
/// booking.
fn stat_key(outcome: &pb::IdentOutcome, metric: &str) -> String {
    let booked = booked_at(outcome).map(|t| t.date()).unwrap_or_default();
    statistics::key(&statistics::month(booked), &outcome.jurisdiction_id, metric)
}

/// Records the jail's acknowledgement that the person held under the detainer of `tcn` (a
/// booking of `state`) was given a copy of the form: see
/// `SubmissionService.AcknowledgeDetainerCopy`. Once per detainer; a repeat returns the first
/// record.
pub async fn acknowledge_copy(
    gw: &Gateway,
    state: &str,
    r: pb::AcknowledgeDetainerCopyRequest,
) -> Result<pb::DetainerCopyGiven, GatewayError> {
    if !validate::tcn_ok(&r.tcn) {
        return Err(GatewayError::invalid(
            "tcn",
            "must be 8 to 40 characters of A-Z, 0-9 and '-'",
        ));
    }
    let given_ms = required_time(r.given_at, "given_at")?.timestamp_millis();
    let stored = gw
        .core
        .store
        .once_record(format!("detainer/{state}/{}", r.tcn))
        .await?
        .ok_or_else(|| {
            GatewayError::NotFound("tcn: no detainer was issued for this TCN of your state".into())
        })?;
    let d = pb::Detainer::decode(stored.as_slice()).map_err(|_| {
        GatewayError::DataLoss(format!("stored detainer of {} is unreadable", r.tcn))
    })?;
    // A copy is given after the detainer is issued (a minute's clock skew allowed), and not in
    // the future.
    let issued_ms = d
        .issued_at
        .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
    let now = convert::now_ms();
    if given_ms < issued_ms - 60_000 || given_ms > now + 60_000 {
        return Err(GatewayError::invalid(
            "given_at",
            "must be after the detainer was issued and not in the future",
        ));
    }
    let given = pb::DetainerCopyGiven {
        detainer_id: d.detainer_id.clone(),
        tcn: r.tcn.clone(),
        given_at: Some(convert::timestamp_ms(given_ms)),
        recorded_at: Some(convert::timestamp_ms(now)),
    };
    let completion = Completion {
        events: vec![],
        counters: vec![(counters::DETAINER_COPIES_GIVEN.to_string(), 1)],
        summary: None,
    };
    match gw
        .core
        .store
        .append_once(
            format!("detainer-copy/{state}/{}", r.tcn),
            given.encode_to_vec(),
            completion,
        )
        .await?
    {
        Once::Appended => Ok(given),
        Once::Existing(bytes) => pb::DetainerCopyGiven::decode(bytes.as_slice()).map_err(|_| {
            GatewayError::DataLoss(format!(
                "stored acknowledgement of {}'s detainer copy is unreadable",
                r.tcn
            ))
        }),
    }
}
