//! The officers' acts a field office records on an identification: a **decision** (a
//! detainer, no action, or prosecutorial discretion, with its reasons) and a **removal**. The
//! system recommends; ICE decides (seed 000: the federal government "determines what
//! immigration enforcement action, if any, is appropriate"): a decision may go either way
//! whatever the recommendation, and both are kept. Each act is appended once (by
//! `(state, TCN)`), with the monthly statistics it moves committed in the same transaction.
//!
//! All are open only to the field office covering the booking's jurisdiction, on an
//! identification; anything else is the same NOT_FOUND, so an office learns nothing about
//! bookings that are not its own.

use crate::convert;
use crate::error::GatewayError;
use crate::intake::validate;
use crate::pipeline::counters;
use crate::rules::{detainer, statistics};
use crate::server::Gateway;
use crate::store::{Completion, Once, StreamKey, SubmissionKey};
use interop_proto::v1 as pb;
use prost::Message;

/// The state and TCN of a request, checked.
pub(crate) fn check_booking_ids(state: &str, tcn: &str) -> Result<(), GatewayError> {
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
    Ok(())
}

/// The identification stored with the booking `(state, tcn)`, if it was one.
pub(crate) async fn stored_outcome(
    gw: &Gateway,
    state: &str,
    tcn: &str,
) -> Result<Option<pb::IdentOutcome>, GatewayError> {
    let key = SubmissionKey {
        bureau: state.to_string(),
        tcn: tcn.to_string(),
    };
    Ok(gw
        .core
        .store
        .submission(key)
        .await?
        .and_then(|s| s.summary)
        .and_then(|b| pb::IdentOutcome::decode(b.as_slice()).ok()))
}

/// The identification of `(state, tcn)` if it is in `office`'s area. Unknown bookings,
/// no-hits and out-of-area bookings all get the same NOT_FOUND, so an office learns nothing
/// about bookings that are not its own.
async fn identification(
    gw: &Gateway,
    office: &str,
    state: &str,
    tcn: &str,
) -> Result<pb::IdentOutcome, GatewayError> {
    check_booking_ids(state, tcn)?;
    stored_outcome(gw, state, tcn)
        .await?
        .filter(|o| {
            gw.core
                .policy
                .jurisdiction(&o.jurisdiction_id)
                .is_some_and(|j| j.field_office == office)
        })
        .ok_or_else(|| {
            GatewayError::NotFound(
                "tcn: no identification with this TCN in your area of responsibility".into(),
            )
        })
}

fn booked_at(outcome: &pb::IdentOutcome) -> Option<chrono::NaiveDateTime> {
    outcome
        .booked_at
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|t| t.naive_utc())
}

/// Whether a reason is one to enforce (a detainer, or keeping one) rather than one not to.
pub fn enforces(reason: pb::Reason) -> bool {
    matches!(
        reason,
        pb::Reason::CriminalPriority
            | pb::Reason::NonCriminalPriority
            | pb::Reason::PublicSafety
            | pb::Reason::NationalSecurity
            | pb::Reason::PendingCharges
    )
}

/// The reasons of a request: 1 to 4, distinct, known, and all of the kind the act needs (to
/// enforce, or not to). Discretion never rests on public safety or national security (seed
/// 000: "the exercise of discretion is inappropriate in cases involving threats to public
/// safety, national security and other agency priorities").
pub(crate) fn check_reasons(
    reasons: &[i32],
    to_enforce: bool,
) -> Result<Vec<pb::Reason>, GatewayError> {
    if !(1..=4).contains(&reasons.len()) {
        return Err(GatewayError::invalid("reasons", "must give 1 to 4 reasons"));
    }
    let mut out = Vec::with_capacity(reasons.len());
    for &r in reasons {
        let reason = pb::Reason::try_from(r)
            .ok()
            .filter(|r| *r != pb::Reason::Unspecified)
            .ok_or_else(|| GatewayError::invalid("reasons", "holds an unknown reason"))?;
        if out.contains(&reason) {
            return Err(GatewayError::invalid("reasons", "must be distinct"));
        }
        if enforces(reason) != to_enforce {
            return Err(GatewayError::invalid(
                "reasons",
                if to_enforce {
                    "an enforcement act needs enforcement reasons (criminal or non-criminal priority, public safety, national security, pending charges)"
                } else {
                    "not enforcing needs reasons not to (victim or witness, not removable, outside the priorities, minor traffic only, humanitarian, U.S. citizen)"
                },
            ));
        }
        out.push(reason);
    }
    Ok(out)
}

/// The decision recorded for `(state, tcn)`, if any.
pub(crate) async fn stored_decision(
    gw: &Gateway,
    state: &str,
    tcn: &str,
) -> Result<Option<pb::Decision>, GatewayError> {
    match gw.core.store.once_record(decision_key(state, tcn)).await? {
        Some(b) => pb::Decision::decode(b.as_slice())
            .map(Some)
            .map_err(|_| GatewayError::DataLoss(format!("stored decision on {tcn} is unreadable"))),
        None => legacy_decision(gw, state, tcn).await,
    }
}

/// Gateways before decisions existed kept a bare detainer under `detainer/<state>/<tcn>`: it
/// reads as a detainer decision without reasons.
async fn legacy_decision(
    gw: &Gateway,
    state: &str,
    tcn: &str,
) -> Result<Option<pb::Decision>, GatewayError> {
    let Some(b) = gw
        .core
        .store
        .once_record(format!("detainer/{state}/{tcn}"))
        .await?
    else {
        return Ok(None);
    };
    let d = pb::Detainer::decode(b.as_slice())
        .map_err(|_| GatewayError::DataLoss(format!("stored detainer of {tcn} is unreadable")))?;
    Ok(Some(pb::Decision {
        tcn: d.tcn.clone(),
        jurisdiction_id: d.jurisdiction_id.clone(),
        field_office: d.field_office.clone(),
        action: pb::Action::Detainer as i32,
        reasons: vec![],
        recommendation: if d.operative_on_conviction {
            pb::Recommendation::DetainerOnConviction
        } else {
            pb::Recommendation::Detainer
        } as i32,
        decided_at: d.issued_at,
        detainer: Some(d),
    }))
}

fn decision_key(state: &str, tcn: &str) -> String {
    format!("decision/{state}/{tcn}")
}

/// The detainer of `(state, tcn)`, for the jail or the LESC: NOT_FOUND when none was issued.
pub(crate) async fn issued_detainer(
    gw: &Gateway,
    state: &str,
    tcn: &str,
) -> Result<pb::Detainer, GatewayError> {
    stored_decision(gw, state, tcn)
        .await?
        .and_then(|d| d.detainer)
        .ok_or_else(|| {
            GatewayError::NotFound("tcn: no detainer was issued for this TCN of that state".into())
        })
}

/// Records a removal: see `FieldOfficeService.RecordRemoval`. The person must be held under
/// the office's detainer (decided, and not lifted).
pub async fn record_removal(
    gw: &Gateway,
    office: &str,
    r: pb::RecordRemovalRequest,
) -> Result<pb::Removal, GatewayError> {
    let removed_on: chrono::NaiveDate = r
        .removed_on
        .parse()
        .map_err(|_| GatewayError::invalid("removed_on", "must be a date YYYY-MM-DD"))?;
    let outcome = identification(gw, office, &r.state, &r.tcn).await?;
    let detained = stored_decision(gw, &r.state, &r.tcn)
        .await?
        .is_some_and(|d| d.action == pb::Action::Detainer as i32);
    if !detained {
        return Err(GatewayError::FailedPrecondition(
            "tcn: the office has not decided on a detainer for this booking".into(),
        ));
    }
    let open = crate::rules::complaints::open_by_booked_person(gw, &r.state, &r.tcn).await?;
    if open > 0 {
        return Err(GatewayError::FailedPrecondition(format!(
            "tcn: the person has {open} open civil-rights complaint(s): complainants are not \
             removed while CRCL investigates"
        )));
    }
    if crate::rules::lesc::stored_review(gw, &r.state, &r.tcn)
        .await?
        .is_some_and(|v| v.lifted)
    {
        return Err(GatewayError::FailedPrecondition(
            "tcn: the detainer for this booking was lifted".into(),
        ));
    }
    let on_conviction = stored_decision(gw, &r.state, &r.tcn)
        .await?
        .and_then(|d| d.detainer)
        .is_some_and(|d| d.operative_on_conviction);
    if on_conviction
        && gw
            .core
            .store
            .once_record(operative_key(&r.state, &r.tcn))
            .await?
            .is_none()
    {
        return Err(GatewayError::FailedPrecondition(
            "tcn: the detainer is operative only on conviction, and no conviction was reported"
                .into(),
        ));
    }
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
            (
                stat_key(&outcome, statistics::removal_category(&outcome)),
                1,
            ),
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
pub(crate) fn required_time(
    t: Option<prost_types::Timestamp>,
    field: &str,
) -> Result<chrono::DateTime<chrono::Utc>, GatewayError> {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.try_into().ok()?))
        .ok_or_else(|| GatewayError::invalid(field, "is required and must be a valid time"))
}

/// Records a field office's decision: see `FieldOfficeService.Decide`.
pub async fn decide(
    gw: &Gateway,
    office: &str,
    r: pb::DecideRequest,
) -> Result<pb::Decision, GatewayError> {
    let action = pb::Action::try_from(r.action)
        .ok()
        .filter(|a| *a != pb::Action::Unspecified)
        .ok_or_else(|| {
            GatewayError::invalid("action", "must be a detainer, no action or discretion")
        })?;
    let to_detain = action == pb::Action::Detainer;
    let reasons = check_reasons(&r.reasons, to_detain)?;
    let release = if to_detain {
        Some(required_time(r.scheduled_release, "scheduled_release")?.naive_utc())
    } else if r.scheduled_release.is_some() {
        return Err(GatewayError::invalid(
            "scheduled_release",
            "is for a detainer only",
        ));
    } else {
        None
    };
    let outcome = identification(gw, office, &r.state, &r.tcn).await?;
    if let (Some(release), Some(booked)) = (release, booked_at(&outcome))
        && (release < booked || release > booked + chrono::Duration::days(5 * 366))
    {
        return Err(GatewayError::invalid(
            "scheduled_release",
            "must be after the booking and within five years of it",
        ));
    }
    // A booking decided before decisions existed holds a bare detainer.
    if let Some(existing) = legacy_decision(gw, &r.state, &r.tcn).await? {
        return same_action(existing, action);
    }
    let recommendation =
        pb::Recommendation::try_from(outcome.recommendation).unwrap_or(pb::Recommendation::None);
    let now = convert::now_ms();
    let ts = |t: chrono::NaiveDateTime| convert::timestamp_ms(t.and_utc().timestamp_millis());
    let detainer = release.map(|release| pb::Detainer {
        detainer_id: format!("DET-{}-{}", r.state, r.tcn),
        tcn: r.tcn.clone(),
        jurisdiction_id: outcome.jurisdiction_id.clone(),
        field_office: office.to_string(),
        scheduled_release: Some(ts(release)),
        hold_until: Some(ts(detainer::hold_until(release))),
        operative_on_conviction: recommendation == pb::Recommendation::DetainerOnConviction,
        issued_at: Some(convert::timestamp_ms(now)),
        notice: Some(detainer::notice()),
    });
    let decision = pb::Decision {
        tcn: r.tcn.clone(),
        jurisdiction_id: outcome.jurisdiction_id.clone(),
        field_office: office.to_string(),
        action: action as i32,
        reasons: reasons.iter().map(|r| *r as i32).collect(),
        recommendation: recommendation as i32,
        decided_at: Some(convert::timestamp_ms(now)),
        detainer: detainer.clone(),
    };
    let (total, stat) = match action {
        pb::Action::Detainer => (counters::DETAINERS_ISSUED, statistics::DETAINERS_ISSUED),
        pb::Action::NoAction => (counters::DECIDED_NO_ACTION, statistics::DECIDED_NO_ACTION),
        _ => (counters::DECIDED_DISCRETION, statistics::DECIDED_DISCRETION),
    };
    let events = detainer
        .map(|d| {
            let event = pb::BureauResponse {
                cursor: 0,
                tcn: r.tcn.clone(),
                body: Some(pb::bureau_response::Body::Detainer(d)),
            };
            vec![(StreamKey::Bureau(r.state.clone()), event.encode_to_vec())]
        })
        .unwrap_or_default();
    let completion = Completion {
        events,
        counters: vec![(total.to_string(), 1), (stat_key(&outcome, stat), 1)],
        summary: None,
    };
    match gw
        .core
        .store
        .append_once(
            decision_key(&r.state, &r.tcn),
            decision.encode_to_vec(),
            completion,
        )
        .await?
    {
        Once::Appended => {
            tracing::debug!(office, tcn = %r.tcn, action = ?action, "decision recorded");
            if to_detain {
                gw.core
                    .metrics
                    .inc("interop_detainers_total", crate::metrics::office(office));
            }
            Ok(decision)
        }
        Once::Existing(bytes) => {
            let existing = pb::Decision::decode(bytes.as_slice()).map_err(|_| {
                GatewayError::DataLoss(format!("stored decision on {} is unreadable", r.tcn))
            })?;
            same_action(existing, action)
        }
    }
}

/// A repeated decision returns the first when it decides the same action; deciding another is
/// refused, naming what was decided.
fn same_action(existing: pb::Decision, action: pb::Action) -> Result<pb::Decision, GatewayError> {
    if existing.action == action as i32 {
        Ok(existing)
    } else {
        let was = pb::Action::try_from(existing.action)
            .map(|a| a.as_str_name())
            .unwrap_or("an unknown action");
        Err(GatewayError::FailedPrecondition(format!(
            "action: this booking was already decided: {was}"
        )))
    }
}

fn operative_key(state: &str, tcn: &str) -> String {
    format!("operative/{state}/{tcn}")
}

/// Records a conviction on the booking `(state, tcn)`: see
/// `SubmissionService.ReportConviction`. A detainer operative only on conviction becomes
/// operative, and the jail is told.
pub async fn report_conviction(
    gw: &Gateway,
    state: &str,
    r: pb::ReportConvictionRequest,
) -> Result<pb::DetainerOperative, GatewayError> {
    check_booking_ids(state, &r.tcn)?;
    let convicted_on: chrono::NaiveDate = r
        .convicted_on
        .parse()
        .map_err(|_| GatewayError::invalid("convicted_on", "must be a date YYYY-MM-DD"))?;
    let d = issued_detainer(gw, state, &r.tcn)
        .await
        .ok()
        .filter(|d| d.operative_on_conviction)
        .ok_or_else(|| {
            GatewayError::NotFound(
                "tcn: no detainer operative on conviction was issued for this TCN".into(),
            )
        })?;
    let outcome = stored_outcome(gw, state, &r.tcn).await?.ok_or_else(|| {
        GatewayError::DataLoss(format!(
            "the identification behind {}'s detainer is gone",
            r.tcn
        ))
    })?;
    if booked_at(&outcome).is_some_and(|b| convicted_on < b.date()) {
        return Err(GatewayError::invalid(
            "convicted_on",
            "is before the booking",
        ));
    }
    if crate::rules::lesc::stored_review(gw, state, &r.tcn)
        .await?
        .is_some_and(|v| v.lifted)
    {
        return Err(GatewayError::FailedPrecondition(
            "tcn: the detainer for this booking was lifted".into(),
        ));
    }
    let operative = pb::DetainerOperative {
        detainer_id: d.detainer_id.clone(),
        tcn: r.tcn.clone(),
        convicted_on: convicted_on.to_string(),
        recorded_at: Some(convert::timestamp_ms(convert::now_ms())),
    };
    let event = pb::BureauResponse {
        cursor: 0,
        tcn: r.tcn.clone(),
        body: Some(pb::bureau_response::Body::DetainerOperative(
            operative.clone(),
        )),
    };
    let completion = Completion {
        events: vec![(StreamKey::Bureau(state.to_string()), event.encode_to_vec())],
        counters: vec![(counters::DETAINERS_MADE_OPERATIVE.to_string(), 1)],
        summary: None,
    };
    match gw
        .core
        .store
        .append_once(
            operative_key(state, &r.tcn),
            operative.encode_to_vec(),
            completion,
        )
        .await?
    {
        Once::Appended => Ok(operative),
        Once::Existing(bytes) => pb::DetainerOperative::decode(bytes.as_slice()).map_err(|_| {
            GatewayError::DataLoss(format!("stored conviction of {} is unreadable", r.tcn))
        }),
    }
}

/// Monthly statistics count a detainer or removal in the month and jurisdiction of its
/// booking.
pub(crate) fn stat_key(outcome: &pb::IdentOutcome, metric: &str) -> String {
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
    let d = issued_detainer(gw, state, &r.tcn).await?;
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
