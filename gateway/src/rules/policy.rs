//! The program's rules: who is searched, who is told, and what a field office is advised.
//!
//! Two parts:
//! - [`PolicyBook`]: each jurisdiction's interoperability policy as it stands now (from the
//!   world, changed at run time by admins and persisted in the store). It answers the two
//!   questions the pipeline asks: *is this booking searched in IDENT?* (activated on the
//!   booking date — DESIGN.md §2: "Before activation: FBI check only") and *does the bureau
//!   get the immigration response?* (the jurisdiction receives results, its state can receive
//!   them electronically, and the state has not ended its agreement — "may choose not to
//!   receive"; the field office gets every result regardless).
//! - [`determine`]: status determination and priority after an IDENT search, per the civil
//!   immigration enforcement priorities memo (Level 1/2/3, non-criminal priorities) and the
//!   June 2011 minor-traffic-offender memo (detainer operative only on conviction).

use crate::world::{
    CriminalRecord, ImmigrationRecord, ImmigrationStatus, Jurisdiction, Offense, State, WorldFile,
};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

/// A jurisdiction's policy as it stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JurisdictionPolicy {
    pub activated_on: Option<NaiveDate>,
    pub receives_results: bool,
}

/// A state's policy as it stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatePolicy {
    /// The state chose not to receive the identifications. Stored by gateways before the
    /// rename as `opted_out`.
    #[serde(alias = "opted_out")]
    pub declines_results: bool,
    pub can_receive_electronically: bool,
}

/// What the pipeline needs to know about one jurisdiction for one booking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routing {
    pub jurisdiction: String,
    pub state: String,
    pub field_office: String,
    /// IDENT is searched for this booking.
    pub searched: bool,
    /// The bureau receives the immigration response.
    pub bureau_receives: bool,
}

/// Full view of a jurisdiction's policy, for admins.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyView {
    pub jurisdiction: Jurisdiction,
    pub policy: JurisdictionPolicy,
    pub state: StatePolicy,
}

impl PolicyView {
    pub fn effective_receives_results(&self) -> bool {
        self.policy.receives_results
            && self.state.can_receive_electronically
            && !self.state.declines_results
    }
}

/// The policy of every jurisdiction. Reads are far more frequent than changes; an RwLock
/// keeps the per-submission lookup cheap.
pub struct PolicyBook {
    jurisdictions: BTreeMap<String, Jurisdiction>,
    /// ORI → jurisdiction id.
    agencies: HashMap<String, String>,
    states: BTreeMap<String, State>,
    current: RwLock<(
        BTreeMap<String, JurisdictionPolicy>,
        BTreeMap<String, StatePolicy>,
    )>,
}

/// A policy change refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PolicyError {
    #[error("jurisdiction_id: unknown jurisdiction {0:?}")]
    UnknownJurisdiction(String),
    #[error("state: unknown state {0:?}")]
    UnknownState(String),
}

impl PolicyBook {
    pub fn new(world: &WorldFile) -> Self {
        let jurisdictions: BTreeMap<_, _> = world
            .jurisdictions
            .iter()
            .map(|j| (j.id.clone(), j.clone()))
            .collect();
        let agencies = world
            .jurisdictions
            .iter()
            .flat_map(|j| j.agencies.iter().map(|a| (a.clone(), j.id.clone())))
            .collect();
        let states: BTreeMap<_, _> = world
            .states
            .iter()
            .map(|s| (s.code.clone(), s.clone()))
            .collect();
        let jp = world
            .jurisdictions
            .iter()
            .map(|j| {
                (
                    j.id.clone(),
                    JurisdictionPolicy {
                        activated_on: j.activated_on,
                        receives_results: j.receives_results,
                    },
                )
            })
            .collect();
        let sp = world
            .states
            .iter()
            .map(|s| {
                (
                    s.code.clone(),
                    StatePolicy {
                        declines_results: s.declines_results,
                        can_receive_electronically: s.can_receive_electronically,
                    },
                )
            })
            .collect();
        PolicyBook {
            jurisdictions,
            agencies,
            states,
            current: RwLock::new((jp, sp)),
        }
    }

    pub fn jurisdiction(&self, id: &str) -> Option<&Jurisdiction> {
        self.jurisdictions.get(id)
    }

    /// The jurisdiction an agency belongs to.
    pub fn agency_jurisdiction(&self, ori: &str) -> Option<&str> {
        self.agencies.get(ori).map(|s| s.as_str())
    }

    pub fn has_state(&self, code: &str) -> bool {
        self.states.contains_key(code)
    }

    pub fn jurisdictions(&self) -> impl Iterator<Item = &Jurisdiction> {
        self.jurisdictions.values()
    }

    pub fn view(&self, id: &str) -> Option<PolicyView> {
        let j = self.jurisdictions.get(id)?;
        let cur = self.current.read().expect("policy lock");
        Some(PolicyView {
            jurisdiction: j.clone(),
            policy: cur.0[id].clone(),
            state: cur.1[&j.state].clone(),
        })
    }

    /// How a booking in `jurisdiction` on `booked_on` is handled under the policy now.
    pub fn route(&self, jurisdiction: &str, booked_on: NaiveDate) -> Option<Routing> {
        let v = self.view(jurisdiction)?;
        Some(Routing {
            searched: v.policy.activated_on.is_some_and(|d| booked_on >= d),
            bureau_receives: v.effective_receives_results(),
            jurisdiction: v.jurisdiction.id,
            state: v.jurisdiction.state,
            field_office: v.jurisdiction.field_office,
        })
    }

    /// Replaces one jurisdiction's policy.
    pub fn set_jurisdiction(&self, id: &str, p: JurisdictionPolicy) -> Result<(), PolicyError> {
        if !self.jurisdictions.contains_key(id) {
            return Err(PolicyError::UnknownJurisdiction(id.to_string()));
        }
        self.current
            .write()
            .expect("policy lock")
            .0
            .insert(id.to_string(), p);
        Ok(())
    }

    pub fn state_policy(&self, code: &str) -> Option<StatePolicy> {
        self.current
            .read()
            .expect("policy lock")
            .1
            .get(code)
            .cloned()
    }

    /// Replaces one state's policy.
    pub fn set_state(&self, code: &str, p: StatePolicy) -> Result<(), PolicyError> {
        if !self.states.contains_key(code) {
            return Err(PolicyError::UnknownState(code.to_string()));
        }
        self.current
            .write()
            .expect("policy lock")
            .1
            .insert(code.to_string(), p);
        Ok(())
    }
}

/// How many days before an activation ICE gives the state and local governments notice of it,
/// at least. **Assumption**: seed 000 promises "advance notice" ("Prior to the activation of
/// new jurisdictions within a state, ICE will provide advance notice to both the state and
/// local governments") but gives no period; thirty days is ours.
pub const ADVANCE_NOTICE_DAYS: i64 = 30;

/// Checks an activation's notice: given at least [`ADVANCE_NOTICE_DAYS`] before it.
pub fn check_notice(notice_on: NaiveDate, activate_on: NaiveDate) -> Result<(), String> {
    let days = (activate_on - notice_on).num_days();
    if days < ADVANCE_NOTICE_DAYS {
        return Err(format!(
            "must be at least {ADVANCE_NOTICE_DAYS} days before activated_on {activate_on} (it is {days}): the state and local governments get advance notice"
        ));
    }
    Ok(())
}

/// Criminal priority level from convictions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    None,
    Three,
    Two,
    One,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonCriminal {
    RecentUnlawfulEntrant,
    RepeatViolatorOrPriorRemoval,
    Fugitive,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recommendation {
    None,
    Detainer,
    DetainerOnConviction,
}

/// The outcome of status determination after an IDENT search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Determination {
    /// `None` when IDENT had no record.
    pub status: Option<ImmigrationStatus>,
    pub level: Level,
    pub non_criminal: Vec<NonCriminal>,
    pub recommendation: Recommendation,
}

/// How recent an unlawful entry must be to count as "recent" (the 2011 priorities memo's
/// recent border entrants; we use three years).
pub const RECENT_ENTRY_DAYS: i64 = 3 * 365;

/// Criminal priority level from prior convictions (civil enforcement priorities memo,
/// March 2011, as seed 001 quotes it): Level 1 — "aggravated felonies ... or two or more crimes
/// each punishable by more than one year"; Level 2 — "any felony or three or more crimes each
/// punishable by less than one year, commonly referred to as 'misdemeanors'"; Level 3 — "crimes
/// punishable by less than one year". Every conviction for a crime punishable by less than a
/// year counts toward Level 2's three: DUI, hit-and-run, reckless driving causing injury, and
/// minor criminal traffic offences too (the memo asks for particular discretion with those,
/// which is the officer's, not a lower count; they were once left out here, issue 25).
pub fn priority_level(convictions: &[Offense]) -> Level {
    let aggravated = convictions
        .iter()
        .filter(|o| **o == Offense::AggravatedFelony)
        .count();
    let felonies = convictions
        .iter()
        .filter(|o| matches!(o, Offense::AggravatedFelony | Offense::Felony))
        .count();
    let misdemeanors = convictions
        .iter()
        .filter(|o| {
            matches!(
                o,
                Offense::Misdemeanor
                    | Offense::MinorTraffic
                    | Offense::Dui
                    | Offense::HitAndRun
                    | Offense::RecklessDrivingInjury
            )
        })
        .count();
    if aggravated >= 1 || felonies >= 2 {
        Level::One
    } else if felonies == 1 || misdemeanors >= 3 {
        Level::Two
    } else if !convictions.is_empty() {
        Level::Three
    } else {
        Level::None
    }
}

/// Whether a status can lead to removal given the criminal level. Citizens never; lawful
/// permanent residents and others in lawful status only after an aggravated felony or two
/// felonies (Level 1); the unlawfully present, the previously removed and fugitives always.
fn removable(status: ImmigrationStatus, level: Level) -> bool {
    match status {
        ImmigrationStatus::UsCitizen => false,
        ImmigrationStatus::LawfulPermanentResident | ImmigrationStatus::LawfulStatus => {
            level == Level::One
        }
        ImmigrationStatus::VisaOverstay
        | ImmigrationStatus::UnlawfulEntry
        | ImmigrationStatus::PriorRemoval
        | ImmigrationStatus::Fugitive => true,
    }
}

/// Status determination and priority for one booking.
///
/// - `ident`: the IDENT record of the hit, if any.
/// - `record`: the FBI rap sheet, if the prints matched one.
/// - `charges`: the arrest charges of this booking.
pub fn determine(
    ident: Option<&ImmigrationRecord>,
    record: Option<&CriminalRecord>,
    charges: &[Offense],
    booked_on: NaiveDate,
) -> Determination {
    let convictions: Vec<Offense> = record
        .map(|r| r.convictions.iter().map(|c| c.offense).collect())
        .unwrap_or_default();
    let level = priority_level(&convictions);
    let Some(ident) = ident else {
        return Determination {
            status: None,
            level,
            non_criminal: vec![],
            recommendation: Recommendation::None,
        };
    };
    let mut non_criminal = Vec::new();
    match ident.status {
        ImmigrationStatus::UnlawfulEntry
            if ident
                .last_entry
                .is_some_and(|d| (booked_on - d).num_days() <= RECENT_ENTRY_DAYS) =>
        {
            non_criminal.push(NonCriminal::RecentUnlawfulEntrant)
        }
        ImmigrationStatus::PriorRemoval => {
            non_criminal.push(NonCriminal::RepeatViolatorOrPriorRemoval)
        }
        ImmigrationStatus::Fugitive => non_criminal.push(NonCriminal::Fugitive),
        _ => {}
    }
    let recommendation = if !removable(ident.status, level) {
        Recommendation::None
    } else if !charges.is_empty()
        && charges.iter().all(|c| *c == Offense::MinorTraffic)
        && convictions.iter().all(|c| *c == Offense::MinorTraffic)
        && level <= Level::Three
        && non_criminal.is_empty()
    {
        // Arrested solely for a minor traffic offence, "not previously ... convicted of other
        // crimes" (prior minor traffic convictions are not other crimes), and "not within any
        // other ICE priority category" (no non-criminal priority; not Level 1 or 2, which three
        // minor traffic convictions reach): the detainer becomes operative only on conviction
        // (June 2011 memo, as seed 001 quotes it).
        Recommendation::DetainerOnConviction
    } else {
        Recommendation::Detainer
    };
    Determination {
        status: Some(ident.status),
        level,
        non_criminal,
        recommendation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::Conviction;
    use Offense::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn priority_levels_follow_the_memo() {
        let cases: &[(&[Offense], Level)] = &[
            (&[], Level::None),
            (&[MinorTraffic], Level::Three),
            (&[Misdemeanor], Level::Three),
            (&[Misdemeanor, Misdemeanor], Level::Three),
            (&[Misdemeanor, Dui, HitAndRun], Level::Two),
            // Three crimes each punishable by less than a year, minor traffic ones included.
            (&[Misdemeanor, MinorTraffic, MinorTraffic], Level::Two),
            (&[MinorTraffic, MinorTraffic, MinorTraffic], Level::Two),
            (&[MinorTraffic, MinorTraffic], Level::Three),
            (&[Felony], Level::Two),
            (&[Felony, Misdemeanor], Level::Two),
            (&[Felony, Felony], Level::One),
            (&[AggravatedFelony], Level::One),
            (
                &[RecklessDrivingInjury, Misdemeanor, Misdemeanor],
                Level::Two,
            ),
        ];
        for (convictions, want) in cases {
            assert_eq!(priority_level(convictions), *want, "{convictions:?}");
        }
    }

    fn ident(status: ImmigrationStatus, last_entry: Option<&str>) -> ImmigrationRecord {
        ImmigrationRecord {
            fin: "FIN0000000001".into(),
            status,
            last_entry: last_entry.map(d),
            biographics: Default::default(),
        }
    }

    fn rap(c: &[Offense]) -> CriminalRecord {
        CriminalRecord {
            fbi_number: "FBI000000001".into(),
            prior_arrests: c.len() as u32,
            convictions: c
                .iter()
                .map(|o| Conviction {
                    offense: *o,
                    convicted_on: d("2005-01-01"),
                })
                .collect(),
        }
    }

    #[test]
    fn no_hit_means_no_recommendation() {
        let out = determine(
            None,
            Some(&rap(&[Felony, Felony])),
            &[Felony],
            d("2011-05-01"),
        );
        assert_eq!(out.status, None);
        assert_eq!(out.recommendation, Recommendation::None);
        assert_eq!(out.level, Level::One);
    }

    #[test]
    fn citizens_and_lawful_residents_without_level_one_get_nothing() {
        let day = d("2011-05-01");
        let c = determine(
            Some(&ident(ImmigrationStatus::UsCitizen, None)),
            Some(&rap(&[AggravatedFelony])),
            &[Felony],
            day,
        );
        assert_eq!(c.recommendation, Recommendation::None);
        let l = determine(
            Some(&ident(ImmigrationStatus::LawfulPermanentResident, None)),
            Some(&rap(&[Felony])),
            &[Felony],
            day,
        );
        assert_eq!(l.recommendation, Recommendation::None);
        let l1 = determine(
            Some(&ident(ImmigrationStatus::LawfulPermanentResident, None)),
            Some(&rap(&[AggravatedFelony])),
            &[Felony],
            day,
        );
        assert_eq!(l1.recommendation, Recommendation::Detainer);
    }

    #[test]
    fn minor_traffic_only_detainer_operative_on_conviction() {
        let day = d("2011-05-01");
        let overstay = ident(ImmigrationStatus::VisaOverstay, None);
        let m = determine(Some(&overstay), None, &[MinorTraffic], day);
        assert_eq!(m.recommendation, Recommendation::DetainerOnConviction);
        // DUI is never minor.
        let dui = determine(Some(&overstay), None, &[Dui], day);
        assert_eq!(dui.recommendation, Recommendation::Detainer);
        // A prior conviction of another crime removes the exception ...
        let prior = determine(
            Some(&overstay),
            Some(&rap(&[Misdemeanor])),
            &[MinorTraffic],
            day,
        );
        assert_eq!(prior.recommendation, Recommendation::Detainer);
        // ... a prior minor traffic conviction does not (it is no "other crime") ...
        let traffic = determine(
            Some(&overstay),
            Some(&rap(&[MinorTraffic, MinorTraffic])),
            &[MinorTraffic],
            day,
        );
        assert_eq!(traffic.recommendation, Recommendation::DetainerOnConviction);
        // ... unless there are three, which make Level 2: another priority category.
        let three = determine(
            Some(&overstay),
            Some(&rap(&[MinorTraffic, MinorTraffic, MinorTraffic])),
            &[MinorTraffic],
            day,
        );
        assert_eq!(three.level, Level::Two);
        assert_eq!(three.recommendation, Recommendation::Detainer);
        // So does another priority.
        let fugitive = determine(
            Some(&ident(ImmigrationStatus::Fugitive, None)),
            None,
            &[MinorTraffic],
            day,
        );
        assert_eq!(fugitive.recommendation, Recommendation::Detainer);
        assert_eq!(fugitive.non_criminal, vec![NonCriminal::Fugitive]);
    }

    #[test]
    fn recent_unlawful_entry_is_a_priority_only_when_recent() {
        let recent = determine(
            Some(&ident(ImmigrationStatus::UnlawfulEntry, Some("2010-01-01"))),
            None,
            &[Misdemeanor],
            d("2011-05-01"),
        );
        assert_eq!(
            recent.non_criminal,
            vec![NonCriminal::RecentUnlawfulEntrant]
        );
        let old = determine(
            Some(&ident(ImmigrationStatus::UnlawfulEntry, Some("2001-01-01"))),
            None,
            &[Misdemeanor],
            d("2011-05-01"),
        );
        assert!(old.non_criminal.is_empty());
        assert_eq!(old.recommendation, Recommendation::Detainer);
    }

    fn book() -> PolicyBook {
        let j = |id: &str, state: &str, act: Option<&str>, rr: bool| Jurisdiction {
            id: id.into(),
            name: id.into(),
            state: state.into(),
            field_office: "HOU".into(),
            agencies: vec![format!("{id}0100")],
            population: 1,
            activated_on: act.map(d),
            receives_results: rr,
            arrests: None,
        };
        let s = |code: &str, declines_results: bool, elec: bool| State {
            code: code.into(),
            name: code.into(),
            population: 1,
            declines_results,
            can_receive_electronically: elec,
        };
        PolicyBook::new(&WorldFile {
            meta: crate::world::WorldMeta {
                seed: 1,
                identities: 0,
                version: 1,
            },
            states: vec![
                s("TX", false, true),
                s("IL", true, true),
                s("GU", false, false),
            ],
            field_offices: vec![],
            jurisdictions: vec![
                j("TX001", "TX", Some("2010-01-01"), true),
                j("TX003", "TX", Some("2010-01-01"), false),
                j("TX005", "TX", None, true),
                j("IL001", "IL", Some("2010-01-01"), true),
                j("GU001", "GU", Some("2010-01-01"), true),
            ],
        })
    }

    /// A state policy stored before the rename (`opted_out`) still reads, as the new field.
    #[test]
    fn a_state_policy_stored_under_the_old_name_still_reads() {
        let old: StatePolicy =
            serde_json::from_str(r#"{"opted_out":true,"can_receive_electronically":true}"#)
                .unwrap();
        assert!(old.declines_results && old.can_receive_electronically);
        let now = serde_json::to_string(&old).unwrap();
        assert!(
            now.contains("declines_results") && !now.contains("opted_out"),
            "{now}"
        );
    }

    #[test]
    fn routing_table() {
        let b = book();
        let r = |j: &str, day: &str| {
            let r = b.route(j, d(day)).unwrap();
            (r.searched, r.bureau_receives)
        };
        assert_eq!(r("TX001", "2011-01-01"), (true, true));
        assert_eq!(
            r("TX001", "2010-01-01"),
            (true, true),
            "activation day itself is searched"
        );
        assert_eq!(
            r("TX001", "2009-12-31"),
            (false, true),
            "before activation: FBI only"
        );
        assert_eq!(
            r("TX003", "2011-01-01"),
            (true, false),
            "jurisdiction does not receive results"
        );
        assert_eq!(r("TX005", "2011-01-01"), (false, true), "never activated");
        assert_eq!(
            r("IL001", "2011-01-01"),
            (true, false),
            "a state that declines overrides"
        );
        assert_eq!(
            r("GU001", "2011-01-01"),
            (true, false),
            "cannot receive electronically"
        );
        assert!(b.route("XX001", d("2011-01-01")).is_none());
    }

    #[test]
    fn policy_changes_take_effect_and_unknown_ids_are_refused() {
        let b = book();
        b.set_state(
            "IL",
            StatePolicy {
                declines_results: false,
                can_receive_electronically: true,
            },
        )
        .unwrap();
        assert!(b.route("IL001", d("2011-01-01")).unwrap().bureau_receives);
        b.set_jurisdiction(
            "TX005",
            JurisdictionPolicy {
                activated_on: Some(d("2011-06-01")),
                receives_results: true,
            },
        )
        .unwrap();
        assert!(!b.route("TX005", d("2011-05-31")).unwrap().searched);
        assert!(b.route("TX005", d("2011-06-01")).unwrap().searched);
        assert_eq!(
            b.set_jurisdiction(
                "ZZ001",
                JurisdictionPolicy {
                    activated_on: None,
                    receives_results: true
                }
            ),
            Err(PolicyError::UnknownJurisdiction("ZZ001".into()))
        );
        assert_eq!(
            b.set_state(
                "ZZ",
                StatePolicy {
                    declines_results: true,
                    can_receive_electronically: true
                }
            ),
            Err(PolicyError::UnknownState("ZZ".into()))
        );
    }
}
