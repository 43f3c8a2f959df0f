//! Victims, witnesses and U.S. citizens held under a detainer, as the documents route them:
//! not by a flag on the booking (seed 000: the program "does not require or permit any change
//! to law enforcement agencies' customary booking process"), but through ICE's Law
//! Enforcement Support Center. The detainer form asks the jail to notify the LESC "if the
//! individual may be the victim of a crime" or is needed as a witness, and gives the person
//! the LESC hotline (seed 001). Each notice reaches the field office that issued the
//! detainer, on its stream; the office reviews the detainer — keep it or lift it, with its
//! reasons (seed 000: officers "exercise appropriate discretion to ensure that victims of and
//! witnesses to crimes are not penalized by removal") — and a lift reaches the jail.
//!
//! A notice is recorded once per detainer and source (the jail's, the hotline's); a review
//! once per detainer, after at least one notice. A notice that comes after the review still
//! reaches the office; the review stands.

use crate::convert;
use crate::error::GatewayError;
use crate::pipeline::counters;
use crate::rules::enforcement::{
    check_booking_ids, check_reasons, issued_detainer, required_time, stat_key, stored_outcome,
};
use crate::rules::statistics;
use crate::server::Gateway;
use crate::store::{Completion, Once, StreamKey};
use interop_proto::v1 as pb;
use prost::Message;

fn notice_key(state: &str, tcn: &str, source: pb::LescSource) -> String {
    let from = match source {
        pb::LescSource::Jail => "jail",
        _ => "hotline",
    };
    format!("lesc/{state}/{tcn}/{from}")
}

fn review_key(state: &str, tcn: &str) -> String {
    format!("review/{state}/{tcn}")
}

/// Records a notice to the LESC about the person held under the detainer of `(state, tcn)`:
/// `SubmissionService.NotifyLesc` (the jail) and `LescService.RecordHotlineCall` (the person).
pub async fn notify(
    gw: &Gateway,
    source: pb::LescSource,
    state: &str,
    tcn: &str,
    concerns: &[i32],
    noticed_at: Option<prost_types::Timestamp>,
    field: &str,
) -> Result<pb::LescNotice, GatewayError> {
    check_booking_ids(state, tcn)?;
    if !(1..=3).contains(&concerns.len()) {
        return Err(GatewayError::invalid(
            "concerns",
            "must give 1 to 3 concerns",
        ));
    }
    let mut seen = Vec::new();
    for &c in concerns {
        let ok = pb::LescConcern::try_from(c).is_ok_and(|c| c != pb::LescConcern::Unspecified);
        if !ok || seen.contains(&c) {
            return Err(GatewayError::invalid(
                "concerns",
                "must be distinct known concerns (crime victim, witness, U.S. citizen)",
            ));
        }
        seen.push(c);
    }
    let noticed_ms = required_time(noticed_at, field)?.timestamp_millis();
    let detainer = issued_detainer(gw, state, tcn).await?;
    let issued_ms = detainer
        .issued_at
        .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
    let now = convert::now_ms();
    if noticed_ms < issued_ms - 60_000 || noticed_ms > now + 60_000 {
        return Err(GatewayError::invalid(
            field,
            "must be after the detainer was issued and not in the future",
        ));
    }
    let outcome = stored_outcome(gw, state, tcn).await?.ok_or_else(|| {
        GatewayError::DataLoss(format!(
            "the identification behind {tcn}'s detainer is gone"
        ))
    })?;
    let notice = pb::LescNotice {
        notice_id: format!(
            "LESC-{state}-{tcn}-{}",
            if source == pb::LescSource::Jail {
                "J"
            } else {
                "H"
            }
        ),
        detainer_id: detainer.detainer_id.clone(),
        state: state.to_string(),
        tcn: tcn.to_string(),
        source: source as i32,
        concerns: concerns.to_vec(),
        noticed_at: Some(convert::timestamp_ms(noticed_ms)),
        recorded_at: Some(convert::timestamp_ms(now)),
    };
    let entry = pb::OfficeLogEntry {
        lesc_notice: Some(notice.clone()),
        ..Default::default()
    };
    let completion = Completion {
        events: vec![(
            StreamKey::Office(detainer.field_office.clone()),
            entry.encode_to_vec(),
        )],
        counters: vec![
            (counters::LESC_NOTICES.to_string(), 1),
            (stat_key(&outcome, statistics::LESC_NOTICES), 1),
        ],
        summary: None,
    };
    match gw
        .core
        .store
        .append_once(
            notice_key(state, tcn, source),
            notice.encode_to_vec(),
            completion,
        )
        .await?
    {
        Once::Appended => {
            tracing::debug!(tcn, source = ?source, "LESC notice recorded");
            Ok(notice)
        }
        Once::Existing(bytes) => decode_notice(&bytes, tcn),
    }
}

fn decode_notice(bytes: &[u8], tcn: &str) -> Result<pb::LescNotice, GatewayError> {
    pb::LescNotice::decode(bytes)
        .map_err(|_| GatewayError::DataLoss(format!("stored LESC notice on {tcn} is unreadable")))
}

/// The review of `(state, tcn)`'s detainer, if one was recorded.
pub(crate) async fn stored_review(
    gw: &Gateway,
    state: &str,
    tcn: &str,
) -> Result<Option<pb::DetainerReview>, GatewayError> {
    let Some(b) = gw.core.store.once_record(review_key(state, tcn)).await? else {
        return Ok(None);
    };
    pb::DetainerReview::decode(b.as_slice())
        .map(Some)
        .map_err(|_| GatewayError::DataLoss(format!("stored review of {tcn} is unreadable")))
}

/// Reviews a detainer after LESC notices: `FieldOfficeService.ReviewDetainer`.
pub async fn review(
    gw: &Gateway,
    office: &str,
    r: pb::ReviewDetainerRequest,
) -> Result<pb::DetainerReview, GatewayError> {
    check_booking_ids(&r.state, &r.tcn)?;
    let reasons = check_reasons(&r.reasons, !r.lift)?;
    let not_found =
        || GatewayError::NotFound("tcn: no detainer of your office with this TCN".into());
    let detainer = issued_detainer(gw, &r.state, &r.tcn)
        .await
        .map_err(|e| match e {
            GatewayError::NotFound(_) => not_found(),
            e => e,
        })?;
    if detainer.field_office != office {
        return Err(not_found());
    }
    let mut first_notice: Option<prost_types::Timestamp> = None;
    for source in [pb::LescSource::Jail, pb::LescSource::Hotline] {
        if let Some(b) = gw
            .core
            .store
            .once_record(notice_key(&r.state, &r.tcn, source))
            .await?
        {
            let at = decode_notice(&b, &r.tcn)?.recorded_at;
            if first_notice.is_none() || at.map(|t| t.seconds) < first_notice.map(|t| t.seconds) {
                first_notice = at;
            }
        }
    }
    // A civil-rights complaint by the person is as much a reason to review (seed 000: ICE
    // acts "to ensure witnesses and complainants are able to remain in the United States");
    // the notice-to-review time is measured from LESC notices only.
    let by_complaint = first_notice.is_none()
        && crate::rules::complaints::filed_by_booked_person(gw, &r.state, &r.tcn).await?;
    let first_notice = match first_notice {
        Some(t) => t,
        None if by_complaint => convert::timestamp_ms(convert::now_ms()),
        None => {
            return Err(GatewayError::FailedPrecondition(
                "tcn: no LESC notice or complaint about this person has been received".into(),
            ));
        }
    };
    let outcome = stored_outcome(gw, &r.state, &r.tcn).await?.ok_or_else(|| {
        GatewayError::DataLoss(format!(
            "the identification behind {}'s detainer is gone",
            r.tcn
        ))
    })?;
    let now = convert::now_ms();
    let review = pb::DetainerReview {
        detainer_id: detainer.detainer_id.clone(),
        tcn: r.tcn.clone(),
        lifted: r.lift,
        reasons: reasons.iter().map(|r| *r as i32).collect(),
        first_notice_at: Some(first_notice),
        decided_at: Some(convert::timestamp_ms(now)),
    };
    let mut completion = Completion {
        events: vec![],
        counters: vec![(counters::DETAINER_REVIEWS.to_string(), 1)],
        summary: None,
    };
    if r.lift {
        let lifted = pb::BureauResponse {
            cursor: 0,
            tcn: r.tcn.clone(),
            body: Some(pb::bureau_response::Body::DetainerLifted(
                pb::DetainerLifted {
                    detainer_id: detainer.detainer_id.clone(),
                    tcn: r.tcn.clone(),
                    lifted_at: review.decided_at,
                },
            )),
        };
        completion
            .events
            .push((StreamKey::Bureau(r.state.clone()), lifted.encode_to_vec()));
        completion
            .counters
            .push((counters::DETAINERS_LIFTED.to_string(), 1));
        completion
            .counters
            .push((stat_key(&outcome, statistics::DETAINERS_LIFTED), 1));
    }
    match gw
        .core
        .store
        .append_once(
            review_key(&r.state, &r.tcn),
            review.encode_to_vec(),
            completion,
        )
        .await?
    {
        Once::Appended if by_complaint => Ok(review),
        Once::Appended => {
            let waited =
                now - (first_notice.seconds * 1000 + i64::from(first_notice.nanos) / 1_000_000);
            gw.core.metrics.observe(
                "lesc_review",
                std::time::Duration::from_millis(waited.max(0) as u64),
            );
            Ok(review)
        }
        Once::Existing(bytes) => {
            let existing = pb::DetainerReview::decode(bytes.as_slice()).map_err(|_| {
                GatewayError::DataLoss(format!("stored review of {} is unreadable", r.tcn))
            })?;
            if existing.lifted == r.lift {
                Ok(existing)
            } else {
                Err(GatewayError::FailedPrecondition(format!(
                    "lift: this detainer was already reviewed and {}",
                    if existing.lifted { "lifted" } else { "kept" }
                )))
            }
        }
    }
}
