//! Civil-rights complaints connected to the program, along the path the documents give them
//! (seeds 000, 001): "individuals or organizations who believe civil rights violations
//! connected to Secure Communities have occurred can file a complaint with CRCL"; ICE refers
//! "complaints it receives directly or through the Joint Intake Center to CRCL to lead the
//! investigation"; the assessments are shared with the Department of Justice; and ICE acts "to
//! ensure witnesses and complainants are able to remain in the United States".
//!
//! Storage: the filing is a write-once record `complaint/<id>` (with, in the same
//! transaction, its entry in the `complaints` stream that `ListComplaints` reads, the flag on
//! the field office's stream, and its counters); each later stage is a write-once record
//! `complaint/<id>/<stage>`, so a stage is reached once, and a complaint is read back from at
//! most five records. A complaint by the person held under a standing detainer counts under
//! `complainant/<state>/<tcn>/filed` (and `/closed` when closed): while more were filed than
//! closed, `RecordRemoval` refuses, and the office may review the detainer as after an LESC
//! notice.

use crate::error::GatewayError;
use crate::rules::enforcement::{check_booking_ids, stored_decision, stored_outcome};
use crate::rules::{lesc, statistics};
use crate::server::Gateway;
use crate::store::{Completion, Once, StreamKey, SubmissionKey};
use chrono::NaiveDate;
use interop_proto::v1 as pb;
use pb::ComplaintStage as Stage;
use prost::Message;

/// Counters (totals) and monthly statistics metrics (by the month received and the
/// jurisdiction complained of).
pub const FILED: &str = "complaints_filed";
pub const FILED_PROFILING: &str = "complaints_profiling";
pub const CLOSED: &str = "complaints_closed";
pub const DOJ_NOTIFIED: &str = "complaints_doj_notified";

fn complaint_key(id: &str) -> String {
    format!("complaint/{id}")
}

fn step_key(id: &str, stage: Stage) -> String {
    format!("complaint/{id}/{}", stage as i32)
}

fn complainant_prefix(state: &str, tcn: &str) -> String {
    format!("complainant/{state}/{tcn}/")
}

/// The intake's reference: 1 to 48 of `A-Z`, `0-9` and `-`.
fn intake_id_ok(s: &str) -> bool {
    (1..=48).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
}

fn date(s: &str, field: &str) -> Result<NaiveDate, GatewayError> {
    s.parse()
        .map_err(|_| GatewayError::invalid(field, "must be a date YYYY-MM-DD"))
}

/// The stage a complaint may move to next from `at` (besides closing).
fn next_stage(at: Stage) -> Option<Stage> {
    match at {
        Stage::Received => Some(Stage::WithCrcl),
        Stage::WithCrcl => Some(Stage::UnderInvestigation),
        Stage::UnderInvestigation => Some(Stage::DojNotified),
        _ => None,
    }
}

/// Whether a complaint at `at` may move to `to`: the next stage, or closing once it is with
/// CRCL (investigated or not: a complaint may be withdrawn or found without merit first).
pub fn may_advance(at: Stage, to: Stage) -> bool {
    next_stage(at) == Some(to) || (to == Stage::Closed && at >= Stage::WithCrcl && at < to)
}

fn stage_name(s: Stage) -> &'static str {
    match s {
        Stage::Received => "received",
        Stage::WithCrcl => "with CRCL",
        Stage::UnderInvestigation => "under investigation",
        Stage::DojNotified => "DOJ notified",
        Stage::Closed => "closed",
        Stage::Unspecified => "unspecified",
    }
}

fn known<E: TryFrom<i32>>(v: i32, unspecified: i32) -> bool {
    v != unspecified && E::try_from(v).is_ok()
}

/// Records a complaint: `ComplaintService.FileComplaint`.
pub async fn file(
    gw: &Gateway,
    r: pb::FileComplaintRequest,
) -> Result<pb::Complaint, GatewayError> {
    if !intake_id_ok(&r.intake_id) {
        return Err(GatewayError::invalid(
            "intake_id",
            "must be 1 to 48 characters of A-Z, 0-9 and '-'",
        ));
    }
    if !known::<pb::ComplainantKind>(r.complainant, 0) {
        return Err(GatewayError::invalid(
            "complainant",
            "must be a person, an organisation or an agency",
        ));
    }
    if !known::<pb::Allegation>(r.allegation, 0) {
        return Err(GatewayError::invalid(
            "allegation",
            "must be a known allegation",
        ));
    }
    if !known::<pb::ComplaintChannel>(r.channel, 0) {
        return Err(GatewayError::invalid("channel", "must be a known channel"));
    }
    let received_on = date(&r.received_on, "received_on")?;
    if received_on > chrono::Utc::now().date_naive() + chrono::Days::new(1) {
        return Err(GatewayError::invalid("received_on", "is in the future"));
    }
    let about_booking = !r.state.is_empty() || !r.tcn.is_empty();
    if r.complainant_is_booked_person
        && (!about_booking || r.complainant != pb::ComplainantKind::Person as i32)
    {
        return Err(GatewayError::invalid(
            "complainant_is_booked_person",
            "needs a complaint by a person about a booking",
        ));
    }
    // What it is about: the booking's jurisdiction, or the one named.
    let mut detainer: Option<pb::Detainer> = None;
    let jurisdiction_id = if about_booking {
        check_booking_ids(&r.state, &r.tcn)?;
        let key = SubmissionKey {
            bureau: r.state.clone(),
            tcn: r.tcn.clone(),
        };
        if gw.core.store.submission(key).await?.is_none() {
            return Err(GatewayError::NotFound(
                "tcn: no booking with this TCN from that state".into(),
            ));
        }
        match stored_outcome(gw, &r.state, &r.tcn).await? {
            Some(o) => {
                if !r.jurisdiction_id.is_empty() && r.jurisdiction_id != o.jurisdiction_id {
                    return Err(GatewayError::invalid(
                        "jurisdiction_id",
                        "is not the booking's jurisdiction (leave it empty)",
                    ));
                }
                detainer = stored_decision(gw, &r.state, &r.tcn)
                    .await?
                    .and_then(|d| d.detainer);
                o.jurisdiction_id
            }
            // A booking that was no identification: its jurisdiction must be named.
            None if r.jurisdiction_id.is_empty() => {
                return Err(GatewayError::invalid(
                    "jurisdiction_id",
                    "is required for a booking that was not identified",
                ));
            }
            None => r.jurisdiction_id.clone(),
        }
    } else if r.jurisdiction_id.is_empty() {
        return Err(GatewayError::invalid(
            "jurisdiction_id",
            "a complaint is about a booking (state and tcn) or a jurisdiction",
        ));
    } else {
        r.jurisdiction_id.clone()
    };
    let Some(j) = gw.core.policy.jurisdiction(&jurisdiction_id) else {
        return Err(GatewayError::NotFound(format!(
            "jurisdiction_id: unknown jurisdiction {jurisdiction_id:?}"
        )));
    };
    if about_booking && j.state != r.state {
        return Err(GatewayError::invalid(
            "jurisdiction_id",
            "is not in the booking's state",
        ));
    }
    let field_office = j.field_office.clone();
    // The person's standing detainer (not lifted) is flagged to its office.
    let flagged = match &detainer {
        Some(_) if r.complainant_is_booked_person => !lesc::stored_review(gw, &r.state, &r.tcn)
            .await?
            .is_some_and(|v| v.lifted),
        _ => false,
    };
    let id = format!("CRCL-{}", r.intake_id);
    let first = if r.channel == pb::ComplaintChannel::Crcl as i32 {
        Stage::WithCrcl
    } else {
        Stage::Received
    };
    let complaint = pb::Complaint {
        complaint_id: id.clone(),
        filing: Some(r.clone()),
        jurisdiction_id: jurisdiction_id.clone(),
        field_office: field_office.clone(),
        stage: first as i32,
        steps: vec![pb::ComplaintStep {
            stage: first as i32,
            on: received_on.to_string(),
        }],
        outcome: pb::ComplaintOutcome::Unspecified as i32,
        detainer_flagged: flagged,
    };
    let month = statistics::month(received_on);
    let mut counters = vec![
        (FILED.to_string(), 1),
        (statistics::key(&month, &jurisdiction_id, FILED), 1),
    ];
    if r.allegation == pb::Allegation::RacialOrEthnicProfiling as i32 {
        counters.push((
            statistics::key(&month, &jurisdiction_id, FILED_PROFILING),
            1,
        ));
        // And where the profiling review reads (statistics::review_key).
        counters.push((
            statistics::review_key(&month, &jurisdiction_id, FILED_PROFILING),
            1,
        ));
    }
    if r.complainant_is_booked_person {
        counters.push((format!("{}filed", complainant_prefix(&r.state, &r.tcn)), 1));
    }
    let mut events = vec![(StreamKey::Complaints, id.clone().into_bytes())];
    if let (true, Some(d)) = (flagged, &detainer) {
        let flag = pb::ComplaintFlag {
            complaint_id: id.clone(),
            state: r.state.clone(),
            tcn: r.tcn.clone(),
            detainer_id: d.detainer_id.clone(),
            allegation: r.allegation,
            received_on: received_on.to_string(),
        };
        let entry = pb::OfficeLogEntry {
            lesc_notice: None,
            complaint_flag: Some(flag),
        };
        events.push((
            StreamKey::Office(d.field_office.clone()),
            entry.encode_to_vec(),
        ));
    }
    let completion = Completion {
        events,
        counters,
        summary: None,
    };
    match gw
        .core
        .store
        .append_once(complaint_key(&id), complaint.encode_to_vec(), completion)
        .await?
    {
        Once::Appended => {
            tracing::info!(complaint = %id, jurisdiction = %jurisdiction_id, flagged, "complaint filed");
            Ok(complaint)
        }
        Once::Existing(bytes) => {
            let stored = decode(&bytes, &id)?;
            if stored.filing.as_ref() != Some(&r) {
                return Err(GatewayError::AlreadyExists(format!(
                    "intake_id: {id} was filed already, as a different complaint"
                )));
            }
            current(gw, &id).await
        }
    }
}

fn decode(bytes: &[u8], id: &str) -> Result<pb::Complaint, GatewayError> {
    pb::Complaint::decode(bytes)
        .map_err(|_| GatewayError::DataLoss(format!("stored complaint {id} is unreadable")))
}

/// A complaint as it stands: its filing and every stage it reached. NOT_FOUND if none.
pub async fn current(gw: &Gateway, id: &str) -> Result<pb::Complaint, GatewayError> {
    let Some(bytes) = gw.core.store.once_record(complaint_key(id)).await? else {
        return Err(GatewayError::NotFound(format!(
            "complaint_id: no complaint {id:?}"
        )));
    };
    let mut c = decode(&bytes, id)?;
    let mut at = Stage::try_from(c.stage).unwrap_or(Stage::Received);
    for stage in [
        Stage::WithCrcl,
        Stage::UnderInvestigation,
        Stage::DojNotified,
        Stage::Closed,
    ] {
        if stage <= at {
            continue;
        }
        let Some(b) = gw.core.store.once_record(step_key(id, stage)).await? else {
            continue;
        };
        let step = pb::AdvanceComplaintRequest::decode(b.as_slice()).map_err(|_| {
            GatewayError::DataLoss(format!("stored stage of complaint {id} is unreadable"))
        })?;
        c.steps.push(pb::ComplaintStep {
            stage: step.stage,
            on: step.on,
        });
        c.outcome = step.outcome;
        c.stage = stage as i32;
        at = stage;
    }
    Ok(c)
}

/// Moves a complaint on: `ComplaintService.AdvanceComplaint`.
pub async fn advance(
    gw: &Gateway,
    r: pb::AdvanceComplaintRequest,
) -> Result<pb::Complaint, GatewayError> {
    let to = Stage::try_from(r.stage)
        .ok()
        .filter(|s| *s > Stage::Received)
        .ok_or_else(|| {
            GatewayError::invalid(
                "stage",
                "must be with CRCL, under investigation, DOJ notified or closed",
            )
        })?;
    let closing = to == Stage::Closed;
    let outcome_known = known::<pb::ComplaintOutcome>(r.outcome, 0);
    if closing != outcome_known {
        return Err(GatewayError::invalid(
            "outcome",
            "is required to close a complaint, and only then",
        ));
    }
    let on = date(&r.on, "on")?;
    let c = current(gw, &r.complaint_id).await?;
    let at = Stage::try_from(c.stage).unwrap_or(Stage::Received);
    let same = |c: &pb::Complaint| {
        c.steps
            .last()
            .is_some_and(|s| s.stage == r.stage && s.on == on.to_string())
            && (!closing || c.outcome == r.outcome)
    };
    if at == to {
        return if same(&c) {
            Ok(c)
        } else {
            Err(GatewayError::FailedPrecondition(format!(
                "stage: the complaint is {} already, on another date or with another outcome",
                stage_name(at)
            )))
        };
    }
    if !may_advance(at, to) {
        return Err(GatewayError::FailedPrecondition(format!(
            "stage: the complaint is {}; it moves next to {}{}",
            stage_name(at),
            next_stage(at).map_or("nothing", stage_name),
            if at >= Stage::WithCrcl && at < Stage::Closed {
                " or closed"
            } else {
                ""
            }
        )));
    }
    let last_on = c.steps.last().map(|s| s.on.clone()).unwrap_or_default();
    if on.to_string() < last_on {
        return Err(GatewayError::invalid(
            "on",
            "is before the complaint's last stage",
        ));
    }
    let filing = c.filing.clone().unwrap_or_default();
    let month = c
        .steps
        .first()
        .and_then(|s| s.on.parse().ok())
        .map(statistics::month)
        .unwrap_or_default();
    let mut counters = Vec::new();
    if closing {
        counters.push((CLOSED.to_string(), 1));
        if filing.complainant_is_booked_person {
            counters.push((
                format!("{}closed", complainant_prefix(&filing.state, &filing.tcn)),
                1,
            ));
        }
    }
    if to == Stage::DojNotified {
        counters.push((DOJ_NOTIFIED.to_string(), 1));
        counters.push((statistics::key(&month, &c.jurisdiction_id, DOJ_NOTIFIED), 1));
    }
    let record = pb::AdvanceComplaintRequest {
        complaint_id: r.complaint_id.clone(),
        stage: r.stage,
        on: on.to_string(),
        outcome: r.outcome,
    };
    let completion = Completion {
        events: vec![],
        counters,
        summary: None,
    };
    gw.core
        .store
        .append_once(
            step_key(&r.complaint_id, to),
            record.encode_to_vec(),
            completion,
        )
        .await?;
    // Appended, or another call reached the stage first: either way, as it stands now.
    let now = current(gw, &r.complaint_id).await?;
    if same(&now) {
        Ok(now)
    } else {
        Err(GatewayError::FailedPrecondition(format!(
            "stage: the complaint reached {} concurrently, on another date or with another outcome",
            stage_name(to)
        )))
    }
}

/// How many complaints the person booked under `(state, tcn)` filed, and how many of those
/// were closed.
async fn by_booked_person(
    gw: &Gateway,
    state: &str,
    tcn: &str,
) -> Result<(u64, u64), GatewayError> {
    let prefix = complainant_prefix(state, tcn);
    let c = gw.core.store.counters_with_prefix(prefix.clone()).await?;
    let n = |k: &str| c.get(&format!("{prefix}{k}")).copied().unwrap_or(0);
    Ok((n("filed"), n("closed")))
}

/// Complaints filed by the person booked under `(state, tcn)` that are still open.
pub async fn open_by_booked_person(
    gw: &Gateway,
    state: &str,
    tcn: &str,
) -> Result<u64, GatewayError> {
    let (filed, closed) = by_booked_person(gw, state, tcn).await?;
    Ok(filed.saturating_sub(closed))
}

/// Whether the person booked under `(state, tcn)` ever filed a complaint (a reason to review
/// their detainer, like an LESC notice).
pub async fn filed_by_booked_person(
    gw: &Gateway,
    state: &str,
    tcn: &str,
) -> Result<bool, GatewayError> {
    Ok(by_booked_person(gw, state, tcn).await?.0 > 0)
}

/// Up to `limit` complaints filed after `after`, in filing order.
pub async fn list(
    gw: &Gateway,
    after: u64,
    limit: u32,
) -> Result<Vec<pb::ListedComplaint>, GatewayError> {
    let limit = match limit {
        0 => 100,
        1..=1000 => limit as usize,
        _ => {
            return Err(GatewayError::invalid("limit", "must be 0 to 1000"));
        }
    };
    let events = gw
        .core
        .store
        .read(StreamKey::Complaints, after, limit)
        .await?;
    let mut out = Vec::with_capacity(events.len());
    for (cursor, bytes) in events {
        let id = String::from_utf8(bytes).map_err(|_| {
            GatewayError::DataLoss(format!("complaint index entry {cursor} is unreadable"))
        })?;
        out.push(pb::ListedComplaint {
            cursor,
            complaint: Some(current(gw, &id).await?),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complaint_moves_forward_one_stage_at_a_time_and_closes_once_with_crcl() {
        use Stage::*;
        assert!(may_advance(Received, WithCrcl));
        assert!(may_advance(WithCrcl, UnderInvestigation));
        assert!(may_advance(UnderInvestigation, DojNotified));
        for at in [WithCrcl, UnderInvestigation, DojNotified] {
            assert!(may_advance(at, Closed), "{at:?}");
        }
        // Not before CRCL has it, never backwards, never skipping, never after closing.
        assert!(!may_advance(Received, Closed));
        assert!(!may_advance(Received, UnderInvestigation));
        assert!(!may_advance(WithCrcl, DojNotified));
        assert!(!may_advance(DojNotified, UnderInvestigation));
        assert!(!may_advance(Closed, Closed));
        assert!(!may_advance(Closed, WithCrcl));
    }

    #[test]
    fn intake_ids() {
        assert!(intake_id_ok("JIC-2011-0001"));
        // A prefix and the longest TCN (40) fit.
        assert!(intake_id_ok(&format!("JIC-{}", "T".repeat(40))));
        for bad in ["", "jic-1", "A B", &"A".repeat(49), "A/B"] {
            assert!(!intake_id_ok(bad), "{bad}");
        }
    }
}
