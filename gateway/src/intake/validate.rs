//! Validation of a submission, before anything is stored: every field, every limit, in one
//! place. A refused submission changes nothing (DESIGN.md §3.7).
//!
//! | field | rule |
//! |---|---|
//! | `tcn` | 8..=40 characters of `A-Z`, `0-9`, `-` |
//! | `ori` | 9 characters of `A-Z0-9`; first two = the bureau's state (else PERMISSION_DENIED); a known agency of `jurisdiction_id` |
//! | `jurisdiction_id` | a known jurisdiction of the bureau's state |
//! | `booked_at` | present, valid; not more than 5 minutes in the future; not before 1990-01-01 |
//! | `charges` | 1..=20; `code` 1..=32 printable ASCII; `class` specified |
//! | `biographics` | present; `name` 1..=100 characters, no control characters; `date_of_birth` YYYY-MM-DD, after 1900-01-01 and not after the booking; `place_of_birth` ≤ 64 characters, no control characters; `sex`, `race`, `ethnicity` known values (unspecified allowed) |
//! | `fingers` | 1..=10 records; `position` 1..=10 and unique; `image_width`/`image_height` 1..=2000; `resolution_ppi` 500 |
//! | `fingers[i].minutiae` | 1..=255; `x` < width, `y` < height; `angle_deg` 0..=359; `type` specified; `quality` 0..=100 |
//! | `missing_fingers` | `position` 1..=10, unique, not one of `fingers`; `reason` specified |
//! | whole message | at most [`MAX_MESSAGE_BYTES`] (set on the server, not tonic's default) |
//!
//! Permission checks that depend on who is calling (the ORI's state) come first, so a
//! bureau never learns anything about another state's agencies from a validation message.

use crate::convert;
use crate::error::{GatewayError, Violation};
use crate::rules::policy::PolicyBook;
use crate::world::Offense;
use chrono::{DateTime, NaiveDate, Utc};
use interop_matcher::Tenprint;
use interop_proto::v1 as pb;

pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
pub const TCN_LEN: std::ops::RangeInclusive<usize> = 8..=40;
pub const ORI_LEN: usize = 9;
pub const MAX_CHARGES: usize = 20;
pub const MAX_CHARGE_CODE: usize = 32;
pub const MAX_NAME: usize = 100;
pub const MAX_PLACE: usize = 64;
pub const MAX_IMAGE_SIDE: u32 = 2000;
pub const PPI: u32 = 500;
pub const MAX_MINUTIAE: usize = 255;
pub const MAX_FUTURE_SKEW_SECS: i64 = 300;
pub const EARLIEST_BOOKING: &str = "1990-01-01";

/// A submission that passed validation, with what the pipeline derives from it.
#[derive(Clone, Debug)]
pub struct ValidSubmission {
    pub booked_on: NaiveDate,
    pub charges: Vec<Offense>,
    pub prints: Tenprint,
    /// The person's race/ethnicity group for the profiling review (`None`: not recorded).
    pub group: Option<crate::world::Group>,
}

pub fn tcn_ok(tcn: &str) -> bool {
    TCN_LEN.contains(&tcn.len())
        && tcn
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
}

fn text_ok(s: &str) -> bool {
    !s.chars().any(|c| c.is_control())
}

/// Replaces a submission's standard minutiae record (ISO/IEC 19794-2 or ANSI INCITS 378) by
/// the finger records it holds, which [`submission`] then checks like inline ones. A record
/// that does not decode is refused naming `minutiae_record` and the codec's rule.
pub fn expand_minutiae_record(mut sub: pb::Submission) -> Result<pb::Submission, GatewayError> {
    use interop_matcher::formats::{self, Format};
    let format = pb::MinutiaeRecordFormat::try_from(sub.minutiae_record_format);
    if sub.minutiae_record.is_empty() {
        return match format {
            Ok(pb::MinutiaeRecordFormat::Unspecified) => Ok(sub),
            _ => Err(GatewayError::invalid(
                "minutiae_record_format",
                "is set but no minutiae_record is given",
            )),
        };
    }
    if !sub.fingers.is_empty() {
        return Err(GatewayError::invalid(
            "minutiae_record",
            "give either fingers or minutiae_record, not both",
        ));
    }
    let format = match format {
        Ok(pb::MinutiaeRecordFormat::Iso1979422005) => Format::Iso19794_2,
        Ok(pb::MinutiaeRecordFormat::Ansi3782004) => Format::Ansi378,
        _ => {
            return Err(GatewayError::invalid(
                "minutiae_record_format",
                "must be ISO_19794_2_2005 or ANSI_378_2004 when a minutiae_record is given",
            ));
        }
    };
    let fingers = formats::decode(format, &sub.minutiae_record)
        .map_err(|e| GatewayError::invalid("minutiae_record", format!("{format} record: {e}")))?;
    sub.fingers = convert::tenprint_to_pb(&interop_matcher::Tenprint { fingers });
    sub.minutiae_record.clear();
    sub.minutiae_record_format = 0;
    Ok(sub)
}

/// Checks `sub` from the bureau of `state` at time `now`.
pub fn submission(
    state: &str,
    policy: &PolicyBook,
    sub: &pb::Submission,
    now: DateTime<Utc>,
) -> Result<ValidSubmission, GatewayError> {
    let mut v: Vec<Violation> = Vec::new();
    let mut bad = |f: &str, r: String| v.push(Violation::new(f, r));

    if !tcn_ok(&sub.tcn) {
        bad(
            "tcn",
            format!(
                "must be 8 to 40 characters of A-Z, 0-9 and '-' (got {} characters)",
                sub.tcn.len()
            ),
        );
    }

    // Who may submit for this agency comes first (least privilege).
    let ori_shape = sub.ori.len() == ORI_LEN
        && sub
            .ori
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if !ori_shape {
        bad("ori", "must be 9 characters of A-Z and 0-9".into());
    } else if &sub.ori[..2] != state {
        return Err(GatewayError::PermissionDenied(format!(
            "ori: the agency is not in your state ({state}); a bureau submits only for its own state's agencies"
        )));
    }
    match policy.jurisdiction(&sub.jurisdiction_id) {
        Some(j) if j.state == state => {
            if ori_shape && policy.agency_jurisdiction(&sub.ori) != Some(j.id.as_str()) {
                bad(
                    "ori",
                    format!("is not a known agency of jurisdiction {}", j.id),
                );
            }
        }
        // Unknown and other-state jurisdictions get the same answer: nothing is revealed.
        _ => bad(
            "jurisdiction_id",
            format!("is not a known jurisdiction of {state}"),
        ),
    }

    let earliest: NaiveDate = EARLIEST_BOOKING.parse().expect("constant date");
    let booked_at = match &sub.booked_at {
        None => {
            bad("booked_at", "is required".into());
            None
        }
        Some(ts) if !(0..1_000_000_000).contains(&ts.nanos) => {
            bad("booked_at.nanos", "must be 0..=999999999".into());
            None
        }
        Some(ts) => match DateTime::<Utc>::from_timestamp(ts.seconds, ts.nanos as u32) {
            None => {
                bad("booked_at", "is not a valid time".into());
                None
            }
            Some(t) if (t - now).num_seconds() > MAX_FUTURE_SKEW_SECS => {
                bad("booked_at", "is in the future".into());
                None
            }
            Some(t) if t.date_naive() < earliest => {
                bad("booked_at", format!("is before {EARLIEST_BOOKING}"));
                None
            }
            Some(t) => Some(t),
        },
    };

    let mut charges = Vec::new();
    if sub.charges.is_empty() || sub.charges.len() > MAX_CHARGES {
        bad(
            "charges",
            format!(
                "must have 1 to {MAX_CHARGES} charges (got {})",
                sub.charges.len()
            ),
        );
    }
    for (i, c) in sub.charges.iter().enumerate().take(MAX_CHARGES) {
        if c.code.is_empty()
            || c.code.len() > MAX_CHARGE_CODE
            || !c.code.bytes().all(|b| (0x20..0x7f).contains(&b))
        {
            bad(
                &format!("charges[{i}].code"),
                format!("must be 1 to {MAX_CHARGE_CODE} printable ASCII characters"),
            );
        }
        match pb::OffenseClass::try_from(c.class)
            .ok()
            .and_then(convert::offense_from_pb)
        {
            Some(o) => charges.push(o),
            None => bad(
                &format!("charges[{i}].class"),
                "must be a specified offense class".into(),
            ),
        }
    }

    match &sub.biographics {
        None => bad("biographics", "is required".into()),
        Some(b) => {
            let n = b.name.chars().count();
            if n == 0 || n > MAX_NAME || !text_ok(&b.name) {
                bad(
                    "biographics.name",
                    format!("must be 1 to {MAX_NAME} characters without control characters"),
                );
            }
            match b.date_of_birth.parse::<NaiveDate>() {
                Err(_) => bad(
                    "biographics.date_of_birth",
                    "must be a date YYYY-MM-DD".into(),
                ),
                Ok(d) => {
                    let before_booking = booked_at.is_none_or(|t| d <= t.date_naive());
                    if d < NaiveDate::from_ymd_opt(1900, 1, 1).expect("date") || !before_booking {
                        bad(
                            "biographics.date_of_birth",
                            "must be after 1900-01-01 and not after the booking".into(),
                        );
                    }
                }
            }
            if b.place_of_birth.chars().count() > MAX_PLACE || !text_ok(&b.place_of_birth) {
                bad(
                    "biographics.place_of_birth",
                    format!("must be at most {MAX_PLACE} characters without control characters"),
                );
            }
            if pb::Sex::try_from(b.sex).is_err() {
                bad("biographics.sex", "is not a known value".into());
            }
            if pb::Race::try_from(b.race).is_err() {
                bad("biographics.race", "is not a known value".into());
            }
            if pb::Ethnicity::try_from(b.ethnicity).is_err() {
                bad("biographics.ethnicity", "is not a known value".into());
            }
        }
    }

    if sub.fingers.is_empty() || sub.fingers.len() > 10 {
        bad(
            "fingers",
            format!(
                "must have 1 to 10 finger records (got {})",
                sub.fingers.len()
            ),
        );
    }
    let mut seen = [false; 11];
    for (i, f) in sub.fingers.iter().enumerate().take(10) {
        // Field names are written only for a violation: a valid booking's ~400 minutiae cost
        // no formatting.
        let p = || format!("fingers[{i}]");
        if !(1..=10).contains(&f.position) {
            bad(
                &format!("{}.position", p()),
                format!("must be 1..=10 (got {})", f.position),
            );
        } else if std::mem::replace(&mut seen[f.position as usize], true) {
            bad(
                &format!("{}.position", p()),
                format!("finger {} appears twice", f.position),
            );
        }
        let sides_ok = (1..=MAX_IMAGE_SIDE).contains(&f.image_width)
            && (1..=MAX_IMAGE_SIDE).contains(&f.image_height);
        if !sides_ok {
            bad(
                &format!("{}.image_width", p()),
                format!("image width and height must be 1..={MAX_IMAGE_SIDE} pixels"),
            );
        }
        if f.resolution_ppi != PPI {
            bad(&format!("{}.resolution_ppi", p()), format!("must be {PPI}"));
        }
        if f.minutiae.is_empty() || f.minutiae.len() > MAX_MINUTIAE {
            bad(
                &format!("{}.minutiae", p()),
                format!("{} minutiae; must be 1 to {MAX_MINUTIAE}", f.minutiae.len()),
            );
            continue;
        }
        for (k, m) in f.minutiae.iter().enumerate() {
            let q = || format!("{}.minutiae[{k}]", p());
            if sides_ok && (m.x >= f.image_width || m.y >= f.image_height) {
                bad(
                    &q(),
                    format!(
                        "position is outside the {}x{} image",
                        f.image_width, f.image_height
                    ),
                );
            }
            if m.angle_deg > 359 {
                bad(
                    &format!("{}.angle_deg", q()),
                    format!("{} is outside 0..=359", m.angle_deg),
                );
            }
            let t = pb::MinutiaType::try_from(m.r#type);
            if !matches!(
                t,
                Ok(pb::MinutiaType::RidgeEnding | pb::MinutiaType::Bifurcation)
            ) {
                bad(
                    &format!("{}.type", q()),
                    "must be RIDGE_ENDING or BIFURCATION".into(),
                );
            }
            if m.quality > 100 {
                bad(
                    &format!("{}.quality", q()),
                    format!("{} is outside 0..=100", m.quality),
                );
            }
        }
    }

    let mut missing = [false; 11];
    for (i, m) in sub.missing_fingers.iter().enumerate() {
        let p = || format!("missing_fingers[{i}].position");
        if !(1..=10).contains(&m.position) {
            bad(&p(), format!("must be 1..=10 (got {})", m.position));
        } else if seen[m.position as usize] {
            bad(
                &p(),
                format!(
                    "finger {} is recorded missing and printed in fingers",
                    m.position
                ),
            );
        } else if std::mem::replace(&mut missing[m.position as usize], true) {
            bad(
                &p(),
                format!("finger {} is recorded missing twice", m.position),
            );
        }
        if !matches!(
            pb::MissingReason::try_from(m.reason),
            Ok(pb::MissingReason::Amputated | pb::MissingReason::UnableToPrint)
        ) {
            bad(
                &format!("missing_fingers[{i}].reason"),
                "must be AMPUTATED or UNABLE_TO_PRINT".into(),
            );
        }
    }

    if !v.is_empty() {
        return Err(GatewayError::Invalid(v));
    }
    let booked_on = booked_at.expect("checked above").date_naive();
    Ok(ValidSubmission {
        booked_on,
        charges,
        prints: convert::tenprint_from_pb(&sub.fingers),
        group: sub.biographics.as_ref().and_then(group_of),
    })
}

/// The review's race/ethnicity group of a booking's biographics: Hispanic by ethnicity,
/// else by race; `None` where neither is recorded.
pub fn group_of(b: &pb::Biographics) -> Option<crate::world::Group> {
    use crate::world::Group;
    if b.ethnicity == pb::Ethnicity::Hispanic as i32 {
        return Some(Group::Hispanic);
    }
    match pb::Race::try_from(b.race).ok()? {
        pb::Race::White => Some(Group::White),
        pb::Race::Black => Some(Group::Black),
        pb::Race::AsianPacificIslander => Some(Group::AsianPacificIslander),
        pb::Race::AmericanIndianAlaskaNative => Some(Group::AmericanIndian),
        pb::Race::Unspecified | pb::Race::Unknown => None,
    }
}
/// The fingers of a matcher request (`Search`, `Enroll`, `Check`), checked against the same
/// limits as a submission's, as the template the matcher takes.
pub fn search_fingers(
    fingers: &[pb::FingerRecord],
) -> Result<interop_matcher::Tenprint, GatewayError> {
    if fingers.is_empty() || fingers.len() > 10 {
        return Err(GatewayError::invalid(
            "fingers",
            "must have 1 to 10 finger records",
        ));
    }
    for (i, f) in fingers.iter().enumerate() {
        if !(1..=10).contains(&f.position)
            || f.image_width > MAX_IMAGE_SIDE
            || f.image_height > MAX_IMAGE_SIDE
            || f.minutiae.len() > MAX_MINUTIAE
            || f.minutiae.iter().any(|m| {
                m.x >= f.image_width
                    || m.y >= f.image_height
                    || m.angle_deg > 359
                    || m.quality > 100
            })
        {
            return Err(GatewayError::invalid(
                format!("fingers[{i}]"),
                "position 1..=10, image up to 2000 px, up to 255 minutiae inside the image, angle 0..=359, quality 0..=100",
            ));
        }
    }
    Ok(crate::convert::tenprint_from_pb(fingers))
}
