//! The activation schedule: when the interoperability capability reaches each jurisdiction.
//!
//! Held to the documents' figures ([`crate::calibration`]): the first activation is Harris
//! County, Texas, on 27 October 2008; by 27 September 2011 exactly 1,595 jurisdictions in
//! exactly 44 states and territories are activated (`003`); every other one follows by
//! 22 January 2013, during FY 2013 (`000`), so none is left out. Who is early follows the
//! program's order of rollout: the southwest border states first, then the large counties.
//! Which states are among the 44, which jurisdictions are among the 1,595, and every date
//! are drawn from the world's random stream, so the same seed gives the same schedule.

use crate::calibration::{ACTIVATED_AS_OF, AS_OF, COMPLETE_BY, FIRST_JURISDICTION, FIRST_ON};
use crate::geography::{BORDER_STATES, DECLINING_STATES};
use chrono::NaiveDate;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;

/// A jurisdiction, as the schedule sees it.
pub struct Candidate<'a> {
    pub id: &'a str,
    pub state: &'a str,
    /// Among its state's largest tenth.
    pub large: bool,
}

/// Fisher–Yates, from the world's stream.
fn shuffle<T>(rng: &mut ChaCha8Rng, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.random_range(0..=i));
    }
}

/// Each candidate's activation date, in the order given. Panics if the geography cannot hold
/// the documents' figures (fewer than 44 states, or too few jurisdictions in them).
pub fn schedule(rng: &mut ChaCha8Rng, js: &[Candidate]) -> Vec<NaiveDate> {
    let as_of_day = (AS_OF - FIRST_ON).num_days() as u64;
    let last_day = (COMPLETE_BY - FIRST_ON).num_days() as u64;

    // The 44 states and territories active by 27 September 2011: the border states (where the
    // rollout began) and the states that ended their agreements in 2011 (they had activated
    // jurisdictions to end them for), then others drawn at random.
    let mut states: Vec<&str> = Vec::new();
    for j in js {
        if !states.contains(&j.state) {
            states.push(j.state);
        }
    }
    let forced = |s: &str| BORDER_STATES.contains(&s) || DECLINING_STATES.contains(&s);
    let mut others: Vec<&str> = states.iter().copied().filter(|s| !forced(s)).collect();
    shuffle(rng, &mut others);
    let mut early_states: BTreeSet<&str> = states.iter().copied().filter(|s| forced(s)).collect();
    let room = crate::calibration::STATES_AS_OF
        .checked_sub(early_states.len())
        .expect("no more forced states than the documents' 44");
    assert!(others.len() >= room, "too few states for the documents' 44");
    early_states.extend(others.into_iter().take(room));

    // The 1,595 jurisdictions active by then, all in those states: Harris County; the most
    // urgent of each state (so every one of the 44 has one); then the rest by urgency —
    // border states, then large counties, in a random order within each.
    let urgency: Vec<f64> = js
        .iter()
        .map(|j| {
            let u: f64 = rng.random();
            if j.id == FIRST_JURISDICTION {
                f64::INFINITY
            } else {
                u + 2.0 * BORDER_STATES.contains(&j.state) as u8 as f64 + j.large as u8 as f64
            }
        })
        .collect();
    let mut early = vec![false; js.len()];
    let mut picked = 0;
    for st in &early_states {
        let top = (0..js.len())
            .filter(|&i| js[i].state == *st)
            .max_by(|&a, &b| urgency[a].total_cmp(&urgency[b]))
            .expect("every state has a jurisdiction");
        early[top] = true;
        picked += 1;
    }
    let mut rest: Vec<usize> = (0..js.len())
        .filter(|&i| !early[i] && early_states.contains(js[i].state))
        .collect();
    rest.sort_by(|&a, &b| urgency[b].total_cmp(&urgency[a]).then(a.cmp(&b)));
    let room = ACTIVATED_AS_OF
        .checked_sub(picked)
        .expect("no more states than the documents' 1,595 jurisdictions");
    assert!(
        rest.len() >= room,
        "too few jurisdictions for the documents' 1,595"
    );
    for &i in rest.iter().take(room) {
        early[i] = true;
    }

    // Dates, as days after the first activation: the early ones by 27 September 2011 (border
    // states in the first year and a half, large counties from the start of 2009), the rest
    // after it and by 22 January 2013 — the last of them on that day.
    let mut days: Vec<u64> = js
        .iter()
        .zip(&early)
        .map(|(j, &e)| {
            let span = if j.id == FIRST_JURISDICTION {
                (0, 0)
            } else if !e {
                (as_of_day + 1, last_day)
            } else if BORDER_STATES.contains(&j.state) {
                (1, 500)
            } else if j.large {
                (60, as_of_day)
            } else {
                (250, as_of_day)
            };
            rng.random_range(span.0..=span.1)
        })
        .collect();
    if let Some(last) = (0..js.len()).max_by_key(|&i| (days[i], std::cmp::Reverse(i))) {
        days[last] = last_day;
    }
    days.into_iter()
        .map(|d| FIRST_ON + chrono::Days::new(d))
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::calibration::{self, Calibration};
    use crate::generate::geography;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn world(seed: u64) -> Vec<interop_gateway::world::Jurisdiction> {
        geography(&mut ChaCha8Rng::seed_from_u64(seed)).2
    }

    fn calibration(seed: u64) -> Calibration {
        let (states, field_offices, jurisdictions) =
            geography(&mut ChaCha8Rng::seed_from_u64(seed));
        let world = interop_gateway::world::WorldFile {
            meta: interop_gateway::world::WorldMeta {
                seed,
                identities: 0,
                version: 1,
            },
            states,
            field_offices,
            jurisdictions,
        };
        Calibration::of(&world, &[])
    }

    /// `003`: "As of September 27, 2011, Secure Communities was available in 1,595
    /// jurisdictions in 44 states and territories" — in every world, the demo's (2011) and
    /// seed 7's included.
    #[test]
    fn by_2011_09_27_exactly_1595_jurisdictions_in_44_states_and_territories() {
        for seed in [1, 7, 2011, 99] {
            let c = calibration(seed);
            assert_eq!(c.jurisdictions, 3_181, "seed {seed}");
            assert_eq!(c.activated_as_of, 1_595, "seed {seed}");
            assert_eq!(c.states_as_of, 44, "seed {seed}");
            // Harris County first, alone on its day.
            assert_eq!(
                c.first,
                Some(("TX201".to_string(), calibration::FIRST_ON)),
                "seed {seed}"
            );
            let js = world(seed);
            assert_eq!(
                js.iter()
                    .filter(|j| j.activated_on == Some(calibration::FIRST_ON))
                    .count(),
                1
            );
            // The rollout began on the southwest border: every border state has begun.
            for st in crate::geography::BORDER_STATES {
                assert!(
                    js.iter().any(|j| &j.state == st
                        && j.activated_on.is_some_and(|d| d <= calibration::AS_OF)),
                    "seed {seed}: {st}"
                );
            }
        }
    }

    /// `000`: "ICE will fully deploy Secure Communities for all jurisdictions during FY 2013":
    /// every jurisdiction is activated, from the first activation (27 October 2008) to
    /// 22 January 2013 — the last on that day, within FY 2013.
    #[test]
    fn every_jurisdiction_is_activated_from_october_2008_to_fy2013() {
        for seed in [1, 7, 2011] {
            let js = world(seed);
            for j in &js {
                let d = j
                    .activated_on
                    .unwrap_or_else(|| panic!("seed {seed}: {} never activated", j.id));
                assert!(
                    (calibration::FIRST_ON..=calibration::COMPLETE_BY).contains(&d),
                    "seed {seed}: {} on {d}",
                    j.id
                );
            }
            let last = calibration(seed).all_activated_by.unwrap();
            assert_eq!(last, calibration::COMPLETE_BY);
            let (fy_from, fy_to) = calibration::FY2013;
            assert!((fy_from..=fy_to).contains(&last));
        }
    }

    #[test]
    fn same_seed_same_schedule() {
        let dates = |seed| {
            world(seed)
                .into_iter()
                .map(|j| (j.id, j.activated_on))
                .collect::<Vec<_>>()
        };
        assert_eq!(dates(7), dates(7));
        assert_ne!(dates(7), dates(8));
    }
}
