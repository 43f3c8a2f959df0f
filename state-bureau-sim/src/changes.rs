//! Policy changes in the middle of a run — a state ending its agreement, a jurisdiction being
//! activated — and what every booking must then get.
//!
//! All changes are made together, as admin, once a given share of the bookings has been
//! receipted. The gateway applies policy when it processes a booking, so:
//! - a booking sent after the change was acknowledged must follow the new policy;
//! - a booking whose every result arrived before the change began must follow the old one;
//! - a booking in flight across the change may follow either — but one of them, wholly.
//!
//! The expectations under the new policy come from planning the same bookings over the world
//! with the change applied (the plan is deterministic in the seed; policy changes no draw).
//! At the end of the run the gateway's policy is put back as the world file says, so a shared
//! gateway stays in step with the world later runs read.

use crate::bookings::Booking;
use crate::verify::Observations;
use anyhow::{Context, bail};
use interop_client::Client;
use interop_gateway::world::WorldFile;
use interop_proto::v1 as pb;
use std::collections::HashMap;
use std::time::Instant;

/// The date a mid-run activation takes effect from: the program's first activation (Harris
/// County, Texas, 27 October 2008: [`crate::calibration::FIRST_ON`]), before every booking the
/// simulator dates.
pub const ACTIVATED_ON: &str = "2008-10-27";

/// The advance notice of an activation on `on` (YYYY-MM-DD): given the gateway's
/// advance-notice period before it; none for a deactivation ("").
fn notice_for(on: &str) -> String {
    on.parse::<chrono::NaiveDate>()
        .map(|d| {
            (d - chrono::Duration::days(interop_gateway::rules::policy::ADVANCE_NOTICE_DAYS))
                .to_string()
        })
        .unwrap_or_default()
}

#[derive(Clone, Debug, PartialEq)]
pub enum PolicyChange {
    /// The state ends its agreement: its bureaus stop receiving immigration responses (its
    /// field offices still get every outcome).
    Decline { state: String },
    /// The jurisdiction is activated: its bookings are searched in IDENT from then on.
    Activate { jurisdiction: String },
}

impl PolicyChange {
    /// Parses `decline:STATE` (`opt-out:STATE`, the old name, is read too) or
    /// `activate:JURISDICTION`.
    pub fn parse(s: &str) -> anyhow::Result<PolicyChange> {
        match s.split_once(':') {
            Some(("decline" | "opt-out", st)) if !st.is_empty() => Ok(PolicyChange::Decline {
                state: st.to_string(),
            }),
            Some(("activate", j)) if !j.is_empty() => Ok(PolicyChange::Activate {
                jurisdiction: j.to_string(),
            }),
            _ => bail!("--change {s:?}: expected decline:STATE or activate:JURISDICTION"),
        }
    }

    /// Checks the change makes a difference in this world. Every jurisdiction is activated by
    /// FY 2013 (seed 000), so one worth activating is one not yet activated when the booking
    /// window opens: its bookings before its own date are then searched too.
    pub fn check(&self, world: &WorldFile) -> anyhow::Result<()> {
        match self {
            PolicyChange::Decline { state } => {
                let st = world
                    .states
                    .iter()
                    .find(|s| &s.code == state)
                    .with_context(|| format!("--change decline:{state}: no such state"))?;
                anyhow::ensure!(
                    !st.declines_results,
                    "--change decline:{state}: the state declines results already"
                );
            }
            PolicyChange::Activate { jurisdiction } => {
                let j = world
                    .jurisdictions
                    .iter()
                    .find(|j| &j.id == jurisdiction)
                    .with_context(|| {
                        format!("--change activate:{jurisdiction}: no such jurisdiction")
                    })?;
                let (from, _) = crate::demo::booking_window();
                if let Some(d) = j.activated_on.filter(|d| *d <= from) {
                    bail!(
                        "--change activate:{jurisdiction}: activated already, on {d}, before \
                         the first booking date ({from})"
                    );
                }
            }
        }
        Ok(())
    }

    /// The world as it is after the change.
    pub fn apply(&self, world: &mut WorldFile) {
        match self {
            PolicyChange::Decline { state } => {
                for s in world.states.iter_mut().filter(|s| &s.code == state) {
                    s.declines_results = true;
                }
            }
            PolicyChange::Activate { jurisdiction } => {
                for j in world
                    .jurisdictions
                    .iter_mut()
                    .filter(|j| &j.id == jurisdiction)
                {
                    j.activated_on = ACTIVATED_ON.parse().ok();
                }
            }
        }
    }

    /// Makes the change on the gateway (as admin).
    pub async fn make(&self, admin: &Client) -> Result<(), tonic::Status> {
        match self {
            PolicyChange::Decline { state } => admin.set_state_policy(state, true).await.map(drop),
            PolicyChange::Activate { jurisdiction } => admin
                .set_policy(pb::SetPolicyRequest {
                    jurisdiction_id: jurisdiction.clone(),
                    activated_on: Some(ACTIVATED_ON.into()),
                    notice_on: notice_for(ACTIVATED_ON),
                    ..Default::default()
                })
                .await
                .map(drop),
        }
    }

    /// Puts the gateway's policy back as `world` (before the change) has it.
    pub async fn undo(&self, admin: &Client, world: &WorldFile) -> Result<(), tonic::Status> {
        match self {
            PolicyChange::Decline { state } => {
                let was = world
                    .states
                    .iter()
                    .any(|s| &s.code == state && s.declines_results);
                admin.set_state_policy(state, was).await.map(drop)
            }
            PolicyChange::Activate { jurisdiction } => {
                let was = world
                    .jurisdictions
                    .iter()
                    .find(|j| &j.id == jurisdiction)
                    .and_then(|j| j.activated_on)
                    .map(|d| d.to_string())
                    .unwrap_or_default();
                admin
                    .set_policy(pb::SetPolicyRequest {
                        jurisdiction_id: jurisdiction.clone(),
                        notice_on: notice_for(&was),
                        activated_on: Some(was),
                        ..Default::default()
                    })
                    .await
                    .map(drop)
            }
        }
    }
}

impl std::fmt::Display for PolicyChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicyChange::Decline { state } => write!(f, "decline:{state}"),
            PolicyChange::Activate { jurisdiction } => write!(f, "activate:{jurisdiction}"),
        }
    }
}

/// When the changes were made: begun and acknowledged.
#[derive(Clone, Copy, Debug)]
pub struct Applied {
    pub started: Instant,
    pub done: Instant,
}

/// How many bookings were held to each policy.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Split {
    pub old: usize,
    pub new: usize,
    /// In flight across the change: either policy, as observed.
    pub either: usize,
    /// In flight, identified under neither policy (no-hits are disclosed to no one), and
    /// searched under one policy only: whether the gateway searched them cannot be seen, so
    /// the searches counted may differ from the plan by these (TCNs).
    pub unseen_search: std::collections::BTreeSet<String>,
}

/// What a booking's answers show under a plan's expectation: (the field office is told of an
/// identification, the bureau is told of it). No-hits are told to no one.
fn told(b: &Booking) -> (bool, bool) {
    let identified = b.expected.identified();
    (identified, identified && b.expected.bureau_receives)
}

/// Which policy a booking is held to, from its send time and when its results arrived.
enum Held {
    Old,
    New,
    Either,
}

fn held(
    i: usize,
    tcn: &str,
    obs: &Observations,
    last_result: &HashMap<&str, Instant>,
    a: Applied,
) -> Held {
    if obs
        .sent_at
        .get(i)
        .copied()
        .flatten()
        .is_some_and(|s| s >= a.done)
    {
        Held::New
    } else if last_result.get(tcn).is_some_and(|t| *t < a.started) {
        Held::Old
    } else {
        Held::Either
    }
}

/// The plan with each booking's expectation under the policy it is held to; in-flight ones
/// take whichever policy their observed results fit (the old one if neither, so the checks
/// report it).
pub fn effective_plan(
    old: &[Booking],
    new: &[Booking],
    obs: &Observations,
    a: Applied,
) -> (Vec<Booking>, Split) {
    let mut last_result: HashMap<&str, Instant> = HashMap::new();
    let mut notified: HashMap<&str, ()> = HashMap::new();
    let mut bureau_imm: HashMap<&str, ()> = HashMap::new();
    for (_, n, at) in &obs.office {
        if let Some(o) = &n.outcome {
            let t = last_result.entry(o.tcn.as_str()).or_insert(*at);
            *t = (*t).max(*at);
            notified.insert(o.tcn.as_str(), ());
        }
    }
    for (_, r, at) in &obs.bureau {
        let t = last_result.entry(r.tcn.as_str()).or_insert(*at);
        *t = (*t).max(*at);
        if matches!(r.body, Some(pb::bureau_response::Body::Immigration(_))) {
            bureau_imm.insert(r.tcn.as_str(), ());
        }
    }
    let mut split = Split::default();
    let plan = old
        .iter()
        .zip(new)
        .enumerate()
        .map(|(i, (o, n))| {
            let tcn = o.submission.tcn.as_str();
            let chosen = match held(i, tcn, obs, &last_result, a) {
                Held::New => {
                    split.new += 1;
                    n
                }
                Held::Old => {
                    split.old += 1;
                    o
                }
                Held::Either => {
                    split.either += 1;
                    let seen = (notified.contains_key(tcn), bureau_imm.contains_key(tcn));
                    if told(n) == seen
                        && told(o) == seen
                        && n.expected.searched != o.expected.searched
                    {
                        split.unseen_search.insert(tcn.to_string());
                    }
                    if told(n) == seen { n } else { o }
                }
            };
            chosen.clone()
        })
        .collect();
    (plan, split)
}

/// What the settle loop waits for: results certain under either policy (in-flight bookings
/// count only what both policies give; a short tail catches the rest).
pub fn expected_counts(
    old: &[Booking],
    new: &[Booking],
    sent_at: &[Option<Instant>],
    a: Option<Applied>,
) -> (usize, usize) {
    let (mut office, mut bureau) = (0, 0);
    for (i, (o, n)) in old.iter().zip(new).enumerate() {
        let after = a.is_some_and(|a| {
            sent_at
                .get(i)
                .copied()
                .flatten()
                .is_some_and(|s| s >= a.done)
        });
        let (searched, receives) = if after {
            (n.expected.searched, n.expected.bureau_receives)
        } else {
            (
                o.expected.searched && n.expected.searched,
                o.expected.bureau_receives && n.expected.bureau_receives,
            )
        };
        // Identifications as the ground truth has them under the policy (a matcher's miss is
        // never sent: the settle loop waits for completions, not for these).
        let identified = searched && n.expected.identified() && (after || o.expected.identified());
        office += identified as usize;
        bureau += 1 + (receives && identified) as usize;
    }
    (office, bureau)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::bookings::Expected;
    use std::time::Duration;

    fn booking(tcn: &str, searched: bool, receives: bool) -> Booking {
        Booking {
            state: "TX".into(),
            person: 1,
            submission: pb::Submission {
                tcn: tcn.into(),
                ..Default::default()
            },
            band: interop_matcher::capture::Band::Livescan,
            capture: "livescan".into(),
            expected: Expected {
                fbi_number: String::new(),
                fbi_subject: None,
                searched,
                // Everyone searched is identified here (their results can be seen).
                fin: if searched {
                    "FIN1".into()
                } else {
                    String::new()
                },
                ident_subject: None,
                status: None,
                level: interop_gateway::rules::policy::Level::None,
                field_office: "HOU".into(),
                bureau_receives: receives,
                biographics: None,
            },
        }
    }

    fn note(tcn: &str, at: Instant) -> (String, pb::FieldOfficeNotification, Instant) {
        let outcome = pb::IdentOutcome {
            tcn: tcn.into(),
            ..Default::default()
        };
        (
            "HOU".into(),
            pb::FieldOfficeNotification {
                cursor: 1,
                outcome: Some(outcome),
                ..Default::default()
            },
            at,
        )
    }

    /// An activation: the old policy does not search, the new one does.
    #[test]
    fn each_booking_is_held_to_the_policy_in_force_when_it_was_processed() {
        let t = Instant::now();
        let at = |ms: u64| t + Duration::from_millis(ms);
        let a = Applied {
            started: at(100),
            done: at(110),
        };
        let tcns = ["BEFORE", "AFTER", "FLIGHT-NEW", "FLIGHT-NEITHER"];
        let old: Vec<Booking> = tcns.iter().map(|t| booking(t, false, false)).collect();
        let new: Vec<Booking> = tcns.iter().map(|t| booking(t, true, true)).collect();
        let crim = |tcn: &str, ms| {
            (
                "TX".to_string(),
                pb::BureauResponse {
                    cursor: 1,
                    tcn: tcn.into(),
                    body: Some(pb::bureau_response::Body::CriminalHistory(
                        Default::default(),
                    )),
                },
                at(ms),
            )
        };
        let imm = |tcn: &str, ms| {
            (
                "TX".to_string(),
                pb::BureauResponse {
                    cursor: 2,
                    tcn: tcn.into(),
                    body: Some(pb::bureau_response::Body::Immigration(Default::default())),
                },
                at(ms),
            )
        };
        let obs = Observations {
            sent_at: vec![Some(at(0)), Some(at(120)), Some(at(50)), Some(at(60))],
            // FLIGHT-NEW was searched and its bureau answered after the change; FLIGHT-NEITHER
            // got a notification but no bureau immigration response: it fits no policy.
            office: vec![
                note("AFTER", at(130)),
                note("FLIGHT-NEW", at(105)),
                note("FLIGHT-NEITHER", at(106)),
            ],
            bureau: vec![
                crim("BEFORE", 40),
                crim("AFTER", 125),
                imm("AFTER", 131),
                crim("FLIGHT-NEW", 104),
                imm("FLIGHT-NEW", 106),
                crim("FLIGHT-NEITHER", 104),
            ],
            ..Default::default()
        };
        let (plan, split) = effective_plan(&old, &new, &obs, a);
        assert_eq!((split.old, split.new, split.either), (1, 1, 2));
        let searched: Vec<bool> = plan.iter().map(|b| b.expected.searched).collect();
        // BEFORE old, AFTER new, FLIGHT-NEW as observed (new), FLIGHT-NEITHER old (so the
        // checks report its unexpected notification).
        assert_eq!(searched, [false, true, true, false]);

        // The settle loop waits for what is certain: only AFTER is searched for sure.
        let (office, bureau) = expected_counts(&old, &new, &obs.sent_at, Some(a));
        assert_eq!((office, bureau), (1, 4 + 1));
    }

    #[test]
    fn a_mid_run_activation_dates_from_the_first_activation() {
        assert_eq!(ACTIVATED_ON, crate::calibration::FIRST_ON.to_string());
    }

    /// An activation is refused where the jurisdiction is active at every booking date, and
    /// allowed where it is not yet active when the window opens.
    #[test]
    fn an_activation_must_make_a_difference_to_the_window() {
        use rand::SeedableRng;
        let (states, field_offices, jurisdictions) =
            crate::generate::geography(&mut rand_chacha::ChaCha8Rng::seed_from_u64(7));
        let world = WorldFile {
            meta: interop_gateway::world::WorldMeta {
                seed: 7,
                identities: 0,
                version: 1,
            },
            states,
            field_offices,
            jurisdictions,
        };
        let (from, _) = crate::demo::booking_window();
        let activate = |on: &dyn Fn(chrono::NaiveDate) -> bool| {
            let j = world
                .jurisdictions
                .iter()
                .find(|j| j.activated_on.is_some_and(on))
                .unwrap();
            PolicyChange::Activate {
                jurisdiction: j.id.clone(),
            }
            .check(&world)
        };
        let e = activate(&|d| d <= from).unwrap_err().to_string();
        assert!(e.contains("activated already"), "{e}");
        activate(&|d| d > from).unwrap();
        assert!(
            PolicyChange::Activate {
                jurisdiction: "NOWHERE".into()
            }
            .check(&world)
            .is_err()
        );
    }

    #[test]
    fn changes_parse_and_print_back() {
        for s in ["decline:CA", "activate:TX205"] {
            assert_eq!(PolicyChange::parse(s).unwrap().to_string(), s);
        }
        for bad in ["decline:", "opt-out:", "activate", "deactivate:TX1", ""] {
            assert!(PolicyChange::parse(bad).is_err(), "{bad}");
        }
    }
}
