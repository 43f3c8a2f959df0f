//! Race/ethnicity, policing patterns and arrest-rate data in the world, with planted
//! profiling as ground truth for the quarterly review (seed 001: the review compares "data for
//! aliens identified by the program to relevant arrest-rate data" for "indications of racial
//! profiling").
//!
//! - **Who is who.** Each person's race/ethnicity group is drawn from their own hash (so the
//!   rest of the world is as before): people with an IDENT record from [`ALIEN_MIX`], the
//!   others from their state's Hispanic share ([`hispanic_share`]) and [`NON_HISPANIC_MIX`].
//!   Approximations of the 2010 census and of DHS's removal statistics; assumptions.
//! - **Policing.** Everywhere, arrests follow one offence mix ([`BASE_SERIOUS`],
//!   [`BASE_MINOR_TRAFFIC`]) at one rate per person ([`ARRESTS_PER_PERSON`]). Two patterns
//!   are planted, from the most populous jurisdictions down:
//!   - **Profiling** (`planted`): people of the target group (Hispanic) are arrested
//!     [`PRETEXT_WEIGHT`] times as often, and a share [`PRETEXT_SHARE`] of their arrests are
//!     pretextual stops booked on minor traffic charges only.
//!   - **Decoys** (`decoys`): everyone is arrested on minor traffic charges only at share
//!     [`DECOY_SHARE`] (strict traffic enforcement, for all alike). A review against the
//!     nation's rate would flag them; one against the jurisdiction's arrest data must not.
//! - **Arrest-rate data.** Each jurisdiction's arrests of a year by group and offence class,
//!   as its agencies would report them (expected values, rounded): what the gateway reads.
//!   The planted sets are ground truth, in `truth.json` only.

use crate::bookings::mix;
use interop_gateway::world::{ArrestData, Group, GroupArrests, Jurisdiction};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Seed domain of the race/ethnicity draw.
const GROUP_DOMAIN: u64 = 0x0006_E00F;
/// Arrests per person a year (UCR 2010: about 13.1 million arrests of 309 million people).
pub const ARRESTS_PER_PERSON: f64 = 0.042;
/// Shares of arrests on serious (felony) and on minor-traffic-only charges, everywhere; the
/// rest are other (misdemeanours, DUI, ...). Close to the bookings' charge mix; the review
/// does not need them equal (its common odds ratio absorbs any nationwide difference).
pub const BASE_SERIOUS: f64 = 0.22;
pub const BASE_MINOR_TRAFFIC: f64 = 0.13;
/// Planted profiling: the target group's arrests multiply by this, and this share of them are
/// pretextual minor-traffic-only stops.
pub const PRETEXT_WEIGHT: u64 = 4;
pub const PRETEXT_SHARE: f64 = 0.6;
/// Decoys: this share of everyone's arrests are minor-traffic-only.
pub const DECOY_SHARE: f64 = 0.4;
/// The reporting year of the arrest data.
pub const ARREST_YEAR: i32 = 2011;

/// People with an IDENT record, by group (an approximation of DHS's removal statistics).
pub const ALIEN_MIX: [(Group, f64); 5] = [
    (Group::Hispanic, 0.75),
    (Group::AsianPacificIslander, 0.12),
    (Group::Black, 0.06),
    (Group::White, 0.06),
    (Group::AmericanIndian, 0.01),
];
/// Everyone else who is not Hispanic, by group (2010 census, approximate).
pub const NON_HISPANIC_MIX: [(Group, f64); 4] = [
    (Group::White, 0.75),
    (Group::Black, 0.15),
    (Group::AsianPacificIslander, 0.07),
    (Group::AmericanIndian, 0.03),
];

/// Hispanic share of a state's people without an IDENT record (2010 census, rounded; 0.08
/// elsewhere).
pub fn hispanic_share(state: &str) -> f64 {
    match state {
        "NM" => 0.46,
        "CA" | "TX" => 0.38,
        "AZ" => 0.30,
        "NV" => 0.27,
        "FL" => 0.23,
        "CO" => 0.21,
        "NJ" | "NY" | "IL" => 0.17,
        "PR" => 0.99,
        _ => 0.08,
    }
}

/// The planted policing patterns: ground truth, never shown to the gateway.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Profiling {
    /// Jurisdictions whose police profile `target` (pretextual minor-traffic arrests).
    pub planted: BTreeSet<String>,
    /// Jurisdictions that arrest everyone on minor traffic charges more (not profiling).
    pub decoys: BTreeSet<String>,
    pub target: Option<Group>,
}

impl Profiling {
    /// `k` planted and `k` decoys, from the most populous jurisdictions down (they get enough
    /// bookings for the review to have power); Hispanic is the target group.
    pub fn choose(jurisdictions: &[Jurisdiction], k: usize) -> Profiling {
        let mut js: Vec<&Jurisdiction> = jurisdictions.iter().collect();
        js.sort_by(|a, b| b.population.cmp(&a.population).then(a.id.cmp(&b.id)));
        let mut ids = js.into_iter().map(|j| j.id.clone());
        Profiling {
            planted: ids.by_ref().take(k).collect(),
            decoys: ids.take(k).collect(),
            target: (k > 0).then_some(Group::Hispanic),
        }
    }

    /// A booking weight: how many times as often the person is arrested.
    pub fn weight(&self, jurisdiction: &str, group: Group) -> u64 {
        if self.planted.contains(jurisdiction) && self.target == Some(group) {
            PRETEXT_WEIGHT
        } else {
            1
        }
    }

    /// The share of a person's arrests that are minor-traffic-only stops on top of the
    /// ordinary mix (0 outside the planted patterns).
    pub fn pretext_share(&self, jurisdiction: &str, group: Group) -> f64 {
        if self.planted.contains(jurisdiction) && self.target == Some(group) {
            PRETEXT_SHARE
        } else if self.decoys.contains(jurisdiction) {
            DECOY_SHARE
        } else {
            0.0
        }
    }
}

fn draw<const N: usize>(mix: &[(Group, f64); N], u: f64) -> Group {
    let mut acc = 0.0;
    for (g, p) in mix {
        acc += p;
        if u < acc {
            return *g;
        }
    }
    mix[N - 1].0
}

/// A person's race/ethnicity group, from their own hash.
pub fn group_of(seed: u64, person: u64, in_ident: bool, state: &str) -> Group {
    let u = (mix(seed ^ GROUP_DOMAIN, person, 0) >> 11) as f64 / (1u64 << 53) as f64;
    if in_ident {
        return draw(&ALIEN_MIX, u);
    }
    let h = hispanic_share(state);
    if u < h {
        Group::Hispanic
    } else {
        draw(&NON_HISPANIC_MIX, (u - h) / (1.0 - h))
    }
}

/// Each jurisdiction's arrest-rate data under `profiling`, for a world whose share of people
/// in IDENT is `ident_share`.
pub fn arrest_data(j: &Jurisdiction, profiling: &Profiling, ident_share: f64) -> ArrestData {
    let h = hispanic_share(&j.state);
    let groups = Group::ALL
        .iter()
        .map(|&g| {
            let citizen = if g == Group::Hispanic {
                h
            } else {
                (1.0 - h)
                    * NON_HISPANIC_MIX
                        .iter()
                        .find(|(x, _)| *x == g)
                        .map_or(0.0, |x| x.1)
            };
            let alien = ALIEN_MIX.iter().find(|(x, _)| *x == g).map_or(0.0, |x| x.1);
            let people =
                j.population as f64 * ((1.0 - ident_share) * citizen + ident_share * alien);
            let arrests = people * ARRESTS_PER_PERSON * profiling.weight(&j.id, g) as f64;
            let s = profiling.pretext_share(&j.id, g);
            let minor = s + (1.0 - s) * BASE_MINOR_TRAFFIC;
            let serious = (1.0 - s) * BASE_SERIOUS;
            let r = |share: f64| (arrests * share).round() as u64;
            GroupArrests {
                group: g,
                serious: r(serious),
                other: r(1.0 - minor - serious),
                minor_traffic: r(minor),
            }
        })
        .collect();
    ArrestData {
        year: ARREST_YEAR,
        groups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(id: &str, state: &str, population: u64) -> Jurisdiction {
        Jurisdiction {
            id: id.into(),
            name: id.into(),
            state: state.into(),
            field_office: "HOU".into(),
            agencies: vec![],
            population,
            activated_on: None,
            receives_results: true,
            arrests: None,
        }
    }

    #[test]
    fn groups_follow_their_mixes() {
        let n = 40_000;
        let hisp = |ident: bool, st: &str| {
            (0..n)
                .filter(|&p| group_of(7, p, ident, st) == Group::Hispanic)
                .count() as f64
                / n as f64
        };
        assert!((hisp(true, "MN") - 0.75).abs() < 0.01);
        assert!((hisp(false, "TX") - 0.38).abs() < 0.01);
        assert!((hisp(false, "MN") - 0.08).abs() < 0.01);
    }

    #[test]
    fn planted_profiling_shows_in_the_target_groups_arrest_data_only() {
        let js = vec![
            j("TX201", "TX", 4_000_000),
            j("CA037", "CA", 9_000_000),
            j("MN001", "MN", 1_000),
        ];
        let p = Profiling::choose(&js, 1);
        assert_eq!(p.planted, BTreeSet::from(["CA037".to_string()]));
        assert_eq!(p.decoys, BTreeSet::from(["TX201".to_string()]));
        let share = |d: &ArrestData, g: Group| {
            let a = d.groups.iter().find(|a| a.group == g).unwrap();
            a.minor_traffic as f64 / a.total() as f64
        };
        let ca = arrest_data(&js[1], &p, 0.063);
        assert!((share(&ca, Group::Hispanic) - (0.6 + 0.4 * 0.13)).abs() < 0.001);
        assert!((share(&ca, Group::White) - 0.13).abs() < 0.001);
        let tx = arrest_data(&js[0], &p, 0.063);
        for g in Group::ALL {
            assert!((share(&tx, g) - (0.4 + 0.6 * 0.13)).abs() < 0.01, "{g:?}");
        }
        // Four times the arrests per Hispanic person where they are profiled.
        let per = |d: &ArrestData| {
            d.groups
                .iter()
                .find(|a| a.group == Group::Hispanic)
                .unwrap()
                .total() as f64
        };
        let ca_plain = arrest_data(&js[1], &Profiling::default(), 0.063);
        assert!((per(&ca) / per(&ca_plain) - 4.0).abs() < 0.001);
    }
}
