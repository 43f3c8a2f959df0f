//! Conversions between the wire contract (`interop.v1`) and the domain types of the world,
//! the policy and the matcher. Kept in one place so each enum mapping exists once.

use crate::rules::policy::{Determination, Level, NonCriminal, PolicyView, Recommendation};
use crate::store::DisclosureKind;
use crate::world::{ImmigrationStatus, Offense};
use interop_matcher::{FingerTemplate, Minutia, MinutiaKind, Tenprint};
use interop_proto::v1 as pb;

pub fn offense_from_pb(c: pb::OffenseClass) -> Option<Offense> {
    use pb::OffenseClass as O;
    Some(match c {
        O::Unspecified => return None,
        O::AggravatedFelony => Offense::AggravatedFelony,
        O::Felony => Offense::Felony,
        O::Misdemeanor => Offense::Misdemeanor,
        O::MinorTraffic => Offense::MinorTraffic,
        O::Dui => Offense::Dui,
        O::HitAndRun => Offense::HitAndRun,
        O::RecklessDrivingInjury => Offense::RecklessDrivingInjury,
    })
}

pub fn offense_to_pb(o: Offense) -> pb::OffenseClass {
    use pb::OffenseClass as O;
    match o {
        Offense::AggravatedFelony => O::AggravatedFelony,
        Offense::Felony => O::Felony,
        Offense::Misdemeanor => O::Misdemeanor,
        Offense::MinorTraffic => O::MinorTraffic,
        Offense::Dui => O::Dui,
        Offense::HitAndRun => O::HitAndRun,
        Offense::RecklessDrivingInjury => O::RecklessDrivingInjury,
    }
}

pub fn status_to_pb(s: Option<ImmigrationStatus>) -> pb::ImmigrationStatus {
    use pb::ImmigrationStatus as I;
    match s {
        None => I::NoRecord,
        Some(ImmigrationStatus::UsCitizen) => I::UsCitizen,
        Some(ImmigrationStatus::LawfulPermanentResident) => I::LawfulPermanentResident,
        Some(ImmigrationStatus::LawfulStatus) => I::LawfulStatus,
        Some(ImmigrationStatus::VisaOverstay) => I::VisaOverstay,
        Some(ImmigrationStatus::UnlawfulEntry) => I::UnlawfulEntry,
        Some(ImmigrationStatus::PriorRemoval) => I::PriorRemoval,
        Some(ImmigrationStatus::Fugitive) => I::Fugitive,
    }
}

pub fn level_to_pb(l: Level) -> pb::PriorityLevel {
    match l {
        Level::None => pb::PriorityLevel::None,
        Level::Three => pb::PriorityLevel::PriorityLevel3,
        Level::Two => pb::PriorityLevel::PriorityLevel2,
        Level::One => pb::PriorityLevel::PriorityLevel1,
    }
}

pub fn level_from_pb(l: pb::PriorityLevel) -> Level {
    match l {
        pb::PriorityLevel::PriorityLevel1 => Level::One,
        pb::PriorityLevel::PriorityLevel2 => Level::Two,
        pb::PriorityLevel::PriorityLevel3 => Level::Three,
        _ => Level::None,
    }
}

pub fn non_criminal_to_pb(n: NonCriminal) -> pb::NonCriminalPriority {
    match n {
        NonCriminal::RecentUnlawfulEntrant => pb::NonCriminalPriority::RecentUnlawfulEntrant,
        NonCriminal::RepeatViolatorOrPriorRemoval => {
            pb::NonCriminalPriority::RepeatViolatorOrPriorRemoval
        }
        NonCriminal::Fugitive => pb::NonCriminalPriority::ImmigrationFugitive,
    }
}

pub fn recommendation_to_pb(r: Recommendation) -> pb::Recommendation {
    match r {
        Recommendation::None => pb::Recommendation::None,
        Recommendation::Detainer => pb::Recommendation::Detainer,
        Recommendation::DetainerOnConviction => pb::Recommendation::DetainerOnConviction,
    }
}

/// Fills the determination part of an outcome.
pub fn apply_determination(out: &mut pb::IdentOutcome, d: &Determination) {
    out.status = status_to_pb(d.status) as i32;
    out.priority_level = level_to_pb(d.level) as i32;
    out.non_criminal_priorities = d
        .non_criminal
        .iter()
        .map(|n| non_criminal_to_pb(*n) as i32)
        .collect();
    out.recommendation = recommendation_to_pb(d.recommendation) as i32;
}

/// A validated finger record as a matcher template (validation guarantees the ranges).
pub fn finger_from_pb(f: &pb::FingerRecord) -> FingerTemplate {
    FingerTemplate {
        position: f.position as u8,
        width: f.image_width as u16,
        height: f.image_height as u16,
        minutiae: f
            .minutiae
            .iter()
            .map(|m| Minutia {
                x: m.x as u16,
                y: m.y as u16,
                angle_deg: m.angle_deg as u16,
                kind: if m.r#type == pb::MinutiaType::Bifurcation as i32 {
                    MinutiaKind::Bifurcation
                } else {
                    MinutiaKind::Ending
                },
                quality: m.quality as u8,
            })
            .collect(),
    }
}

pub fn tenprint_from_pb(fingers: &[pb::FingerRecord]) -> Tenprint {
    Tenprint {
        fingers: fingers.iter().map(finger_from_pb).collect(),
    }
}

pub fn finger_to_pb(f: &FingerTemplate) -> pb::FingerRecord {
    pb::FingerRecord {
        position: f.position as u32,
        image_width: f.width as u32,
        image_height: f.height as u32,
        resolution_ppi: 500,
        minutiae: f
            .minutiae
            .iter()
            .map(|m| pb::Minutia {
                x: m.x as u32,
                y: m.y as u32,
                angle_deg: m.angle_deg as u32,
                r#type: match m.kind {
                    MinutiaKind::Ending => pb::MinutiaType::RidgeEnding,
                    MinutiaKind::Bifurcation => pb::MinutiaType::Bifurcation,
                } as i32,
                quality: m.quality as u32,
            })
            .collect(),
    }
}

pub fn tenprint_to_pb(t: &Tenprint) -> Vec<pb::FingerRecord> {
    t.fingers.iter().map(finger_to_pb).collect()
}

/// A booking's missing fingers as the submission records them.
pub fn missing_to_pb(
    missing: &[(u8, interop_matcher::capture::Missing)],
) -> Vec<pb::MissingFinger> {
    use interop_matcher::capture::Missing;
    missing
        .iter()
        .map(|(p, m)| pb::MissingFinger {
            position: *p as u32,
            reason: match m {
                Missing::Amputated => pb::MissingReason::Amputated,
                Missing::UnableToPrint => pb::MissingReason::UnableToPrint,
            } as i32,
        })
        .collect()
}

pub fn timestamp_ms(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The FBI criminal-history response for a booking.
pub fn criminal_history_pb(
    tcn: &str,
    record: Option<&crate::world::CriminalRecord>,
) -> pb::CriminalHistoryResponse {
    pb::CriminalHistoryResponse {
        tcn: tcn.to_string(),
        identified: record.is_some(),
        fbi_number: record.map(|r| r.fbi_number.clone()).unwrap_or_default(),
        prior_arrests: record.map_or(0, |r| r.prior_arrests),
        convictions: record
            .map(|r| {
                r.convictions
                    .iter()
                    .map(|c| pb::Conviction {
                        class: offense_to_pb(c.offense) as i32,
                        convicted_on: c.convicted_on.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

pub fn revoked_pb(r: &crate::auth::revocation::Revoked) -> pb::RevokedCertificate {
    pb::RevokedCertificate {
        serial: r.serial.clone(),
        reason: r.reason.clone(),
        revoked_at: Some(timestamp_ms(r.revoked_at_ms)),
    }
}

pub fn disclosure_kind_pb(k: DisclosureKind) -> pb::DisclosureKind {
    match k {
        DisclosureKind::CriminalHistory => pb::DisclosureKind::CriminalHistory,
        DisclosureKind::Immigration => pb::DisclosureKind::Immigration,
        DisclosureKind::Detainer => pb::DisclosureKind::Detainer,
        DisclosureKind::IdentOutcome => pb::DisclosureKind::IdentOutcome,
        DisclosureKind::Status => pb::DisclosureKind::Status,
        DisclosureKind::Removal => pb::DisclosureKind::Removal,
        DisclosureKind::Gallery => pb::DisclosureKind::Gallery,
        DisclosureKind::RapSheet => pb::DisclosureKind::RapSheet,
        DisclosureKind::Decision => pb::DisclosureKind::Decision,
        DisclosureKind::LescNotice => pb::DisclosureKind::LescNotice,
        DisclosureKind::DetainerReview => pb::DisclosureKind::DetainerReview,
        DisclosureKind::Complaint => pb::DisclosureKind::Complaint,
        DisclosureKind::ComplaintFlag => pb::DisclosureKind::ComplaintFlag,
    }
}

pub fn policy_pb(v: &PolicyView) -> pb::JurisdictionPolicy {
    pb::JurisdictionPolicy {
        jurisdiction_id: v.jurisdiction.id.clone(),
        name: v.jurisdiction.name.clone(),
        state: v.jurisdiction.state.clone(),
        field_office: v.jurisdiction.field_office.clone(),
        activated_on: v
            .policy
            .activated_on
            .map(|d| d.to_string())
            .unwrap_or_default(),
        receives_results: v.policy.receives_results,
        can_receive_electronically: v.state.can_receive_electronically,
        state_declines_results: v.state.declines_results,
        effective_receives_results: v.effective_receives_results(),
    }
}

/// An IDENT record's biographics, as the contract carries them.
pub fn biographics_pb(b: &crate::world::Biographics) -> pb::Biographics {
    pb::Biographics {
        name: b.name.clone(),
        date_of_birth: b
            .date_of_birth
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default(),
        sex: match b.sex.as_str() {
            "F" => pb::Sex::Female,
            "M" => pb::Sex::Male,
            _ => pb::Sex::Unknown,
        } as i32,
        place_of_birth: b.place_of_birth.clone(),
        // The federal record's biographics carry no race or ethnicity here.
        ..Default::default()
    }
}
