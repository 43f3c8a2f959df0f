//! Planned bookings: who is booked where and when, for what, with a fresh capture of their
//! prints — and, from the ground truth, what every answer must be.
//!
//! The expected answers are computed here from the world's files and a small reference of
//! the program's rules, independently of the gateway's pipeline, so verification checks the
//! gateway rather than repeating it.

use crate::truth::{Person, Truth};
use chrono::{Datelike, NaiveDate, NaiveDateTime};
use interop_gateway::convert;
use interop_gateway::world::{
    self, CriminalRecord, ImmigrationRecord, ImmigrationStatus, Offense, Records, WorldFile,
};
use interop_matcher::{capture, synth};
use interop_proto::v1 as pb;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::Path;

/// Mixes seeds (splitmix64 finaliser) so every booking's randomness depends only on its own
/// coordinates, never on iteration order.
pub fn mix(a: u64, b: u64, c: u64) -> u64 {
    let mut z = a
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(b.rotate_left(21))
        .wrapping_add(c.rotate_left(42))
        .wrapping_add(0x632B_E59B_D9B4_E019);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Domain of booking capture seeds (distinct from the generator's enrolment captures).
const BOOKING_CAPTURE_DOMAIN: u64 = 0xB00C_1467;

/// Everything the simulator reads from a world directory.
pub struct WorldData {
    pub world: WorldFile,
    pub truth: Truth,
    pub fbi: Records<CriminalRecord>,
    pub ident: Records<ImmigrationRecord>,
}

impl WorldData {
    pub fn load(dir: &Path) -> anyhow::Result<WorldData> {
        Ok(WorldData {
            world: world::read_json(dir, world::WORLD_FILE)?,
            truth: world::read_json(dir, crate::truth::TRUTH_FILE)?,
            fbi: world::read_json(dir, world::FBI_RECORDS_FILE)?,
            ident: world::read_json(dir, world::IDENT_RECORDS_FILE)?,
        })
    }
}

/// What the gateway must answer for one booking.
#[derive(Clone, Debug, PartialEq)]
pub struct Expected {
    /// FBI number the criminal-history response must carry ("" = not identified).
    pub fbi_number: String,
    /// The person's subject id in the FBI gallery (where a mate would rank).
    pub fbi_subject: Option<u64>,
    /// IDENT is searched (jurisdiction activated on the booking date).
    pub searched: bool,
    /// FIN of the IDENT hit ("" = no hit).
    pub fin: String,
    /// The person's subject id in the IDENT gallery, when searched.
    pub ident_subject: Option<u64>,
    pub status: Option<ImmigrationStatus>,
    pub level: interop_gateway::rules::policy::Level,
    /// The field office that must be notified (when searched).
    pub field_office: String,
    /// The bureau must receive the immigration response (searched and receiving).
    pub bureau_receives: bool,
    /// The biographics of the IDENT record an identification returns.
    pub biographics: Option<interop_gateway::world::Biographics>,
}

impl Expected {
    /// IDENT holds the person and the jurisdiction is searched: an identification, the only
    /// outcome anyone is told of (no-hits are disclosed to no one).
    pub fn identified(&self) -> bool {
        !self.fin.is_empty()
    }
}

/// One booking to submit.
#[derive(Clone, Debug)]
pub struct Booking {
    pub state: String,
    pub person: u64,
    pub submission: pb::Submission,
    pub expected: Expected,
    /// The capture band of the prints (the verdict judges poor captures' misses apart).
    pub band: capture::Band,
    /// How the prints were taken: the capture band and what went wrong with single fingers
    /// ([`interop_matcher::capture::BookingCapture::describe`]).
    pub capture: String,
}

/// Reference priority level (civil enforcement priorities memo), written out independently
/// of the gateway's implementation.
fn reference_level(record: Option<&CriminalRecord>) -> interop_gateway::rules::policy::Level {
    use interop_gateway::rules::policy::Level;
    let Some(r) = record else { return Level::None };
    let (mut agg, mut fel, mut mis) = (0, 0, 0);
    for c in &r.convictions {
        match c.offense {
            Offense::AggravatedFelony => {
                agg += 1;
                fel += 1
            }
            Offense::Felony => fel += 1,
            // Every crime punishable by less than a year, minor traffic included (seed 001).
            _ => mis += 1,
        }
    }
    match () {
        _ if agg > 0 || fel >= 2 => Level::One,
        _ if fel == 1 || mis >= 3 => Level::Two,
        _ if !r.convictions.is_empty() => Level::Three,
        _ => Level::None,
    }
}

/// Charge mix of arrests (share of bookings whose charges are only minor traffic matters for
/// the "detainer on conviction" rule).
fn draw_charge(rng: &mut ChaCha8Rng) -> (Offense, &'static str) {
    let x: f64 = rng.random();
    match x {
        x if x < 0.02 => (Offense::AggravatedFelony, "13-1105"),
        x if x < 0.22 => (Offense::Felony, "13-1802"),
        x if x < 0.67 => (Offense::Misdemeanor, "13-1203"),
        x if x < 0.85 => (Offense::MinorTraffic, "28-3473"),
        x if x < 0.96 => (Offense::Dui, "28-1381"),
        x if x < 0.99 => (Offense::HitAndRun, "28-661"),
        _ => (Offense::RecklessDrivingInjury, "28-693"),
    }
}

/// Inserts `tag` after the date in every TCN (`TX20110305-0000123` → `TX20110305-R1-0000123`)
/// so repeated runs against one gateway never reuse a TCN. `tag` must be `A-Z0-9-` and keep
/// TCNs within 40 characters.
pub fn tag_tcns(plan: &mut [Booking], tag: &str) {
    if tag.is_empty() {
        return;
    }
    for b in plan {
        if let Some((head, tail)) = b.submission.tcn.split_once('-') {
            b.submission.tcn = format!("{head}-{tag}{tail}");
        }
    }
}

/// Up to `k` of the jurisdictions the world planted profiling in (`generate
/// --plant-profiling`): the bookings follow the world's policing there (and in its decoys).
pub fn planted_jurisdictions(truth: &Truth, k: usize) -> std::collections::BTreeSet<String> {
    truth.profiling.planted.iter().take(k).cloned().collect()
}

/// Plans `count` bookings over the world, deterministic in `seed`. Bookings are dated from
/// `from` over `days` days. People are drawn from the population (which the generator spread
/// by state population), with replacement: repeat bookings happen. Where `planted` is not
/// empty, the bookings follow the world's policing patterns ([`crate::profiling`]): in the
/// planted jurisdictions the target group is arrested more often, often on pretextual
/// minor-traffic-only charges; in the decoys everyone is, alike.
pub fn plan(
    data: &WorldData,
    seed: u64,
    count: usize,
    from: NaiveDate,
    days: u32,
    planted: &std::collections::BTreeSet<String>,
) -> Vec<Booking> {
    plan_iter(data, seed, from, days, planted)
        .take(count)
        .collect()
}

/// The bookings of [`plan`], one at a time and without end: booking `i` is the same whatever
/// the count, so a plan of `n` is the first `n` of a longer one.
pub fn plan_iter<'a>(
    data: &'a WorldData,
    seed: u64,
    from: NaiveDate,
    days: u32,
    planted: &'a std::collections::BTreeSet<String>,
) -> impl Iterator<Item = Booking> + 'a {
    let jurisdictions: BTreeMap<&str, &world::Jurisdiction> = data
        .world
        .jurisdictions
        .iter()
        .map(|j| (j.id.as_str(), j))
        .collect();
    let states: BTreeMap<&str, &world::State> = data
        .world
        .states
        .iter()
        .map(|s| (s.code.as_str(), s))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, 0xB00C, 0));
    let profiling = if planted.is_empty() {
        crate::profiling::Profiling::default()
    } else {
        crate::profiling::Profiling {
            planted: planted.clone(),
            ..data.truth.profiling.clone()
        }
    };
    // Booking weights, where a pattern makes some people arrested more often.
    let weight = |p: &Person| p.group.map_or(1, |g| profiling.weight(&p.jurisdiction, g));
    let cumulative: Option<Vec<u64>> = data.truth.people.iter().any(|p| weight(p) > 1).then(|| {
        data.truth
            .people
            .iter()
            .scan(0u64, |acc, p| {
                *acc += weight(p);
                Some(*acc)
            })
            .collect()
    });
    (0usize..).map(move |i| {
        let person: &Person = match &cumulative {
            None => &data.truth.people[rng.random_range(0..data.truth.people.len())],
            Some(cum) => {
                let x = rng.random_range(0..*cum.last().expect("people"));
                &data.truth.people[cum.partition_point(|&c| c <= x)]
            }
        };
        let j = jurisdictions[person.jurisdiction.as_str()];
        let st = states[j.state.as_str()];
        let day = from + chrono::Days::new(rng.random_range(0..days as u64));
        let secs = rng.random_range(0..86_400u32);
        let at: NaiveDateTime =
            day.and_hms_opt(0, 0, 0).expect("midnight") + chrono::Duration::seconds(secs as i64);
        let n_charges = 1 + (rng.random::<f64>() * rng.random::<f64>() * 3.0) as usize;
        let mut charges: Vec<pb::Charge> = (0..n_charges)
            .map(|_| {
                let (o, code) = draw_charge(&mut rng);
                pb::Charge {
                    code: code.to_string(),
                    class: convert::offense_to_pb(o) as i32,
                }
            })
            .collect();
        // Pretextual stops (or strict enforcement for all) booked as minor traffic only.
        let share = person
            .group
            .map_or(0.0, |g| profiling.pretext_share(&j.id, g));
        if share > 0.0 && rng.random::<f64>() < share {
            charges = vec![pb::Charge {
                code: "28-3473".into(),
                class: convert::offense_to_pb(Offense::MinorTraffic) as i32,
            }];
        }

        let agency = &j.agencies[rng.random_range(0..j.agencies.len())];
        let master = synth::master_tenprint(data.world.meta.seed, person.id);
        // Each agency takes prints its own way (mostly livescan, or mostly cards).
        let capture_seed = mix(
            data.world.meta.seed ^ BOOKING_CAPTURE_DOMAIN,
            person.id,
            i as u64,
        );
        let band = capture::Mix::for_agency(agency).draw(capture_seed);
        let capture = capture::booking_capture(&master, band, capture_seed);
        let tcn = format!(
            "{}{:04}{:02}{:02}-{:07}",
            j.state,
            day.year(),
            day.month(),
            day.day(),
            i
        );
        let submission = pb::Submission {
            tcn,
            ori: agency.clone(),
            jurisdiction_id: j.id.clone(),
            booked_at: Some(prost_types::Timestamp {
                seconds: at.and_utc().timestamp(),
                nanos: 0,
            }),
            charges,
            biographics: Some(pb::Biographics {
                name: person.name.clone(),
                date_of_birth: person.date_of_birth.to_string(),
                sex: if person.female {
                    pb::Sex::Female
                } else {
                    pb::Sex::Male
                } as i32,
                place_of_birth: person.place_of_birth.clone(),
                race: race_pb(person.group) as i32,
                ethnicity: match person.group {
                    None => pb::Ethnicity::Unspecified,
                    Some(world::Group::Hispanic) => pb::Ethnicity::Hispanic,
                    Some(_) => pb::Ethnicity::NotHispanic,
                } as i32,
            }),
            fingers: convert::tenprint_to_pb(&capture.print),
            missing_fingers: convert::missing_to_pb(&capture.missing),
            ..Default::default()
        };
        let fbi = person.fbi_subject.and_then(|s| data.fbi.get(&s));
        let searched = j.activated_on.is_some_and(|d| day >= d);
        let ident = if searched {
            person.ident_subject.and_then(|s| data.ident.get(&s))
        } else {
            None
        };
        let expected = Expected {
            fbi_number: fbi.map(|r| r.fbi_number.clone()).unwrap_or_default(),
            fbi_subject: fbi.and(person.fbi_subject),
            searched,
            fin: ident.map(|r| r.fin.clone()).unwrap_or_default(),
            ident_subject: ident.and(person.ident_subject),
            status: ident.map(|r| r.status),
            level: reference_level(fbi),
            field_office: j.field_office.clone(),
            bureau_receives: searched
                && j.receives_results
                && st.can_receive_electronically
                && !st.declines_results,
            biographics: ident.map(|r| r.biographics.clone()),
        };
        Booking {
            state: j.state.clone(),
            person: person.id,
            submission,
            expected,
            band,
            capture: capture.describe(),
        }
    })
}

/// The NCIC race code a booking records for a group (Hispanic people mostly as white, as
/// arrest records do).
fn race_pb(g: Option<world::Group>) -> pb::Race {
    match g {
        None => pb::Race::Unspecified,
        Some(world::Group::Hispanic | world::Group::White) => pb::Race::White,
        Some(world::Group::Black) => pb::Race::Black,
        Some(world::Group::AsianPacificIslander) => pb::Race::AsianPacificIslander,
        Some(world::Group::AmericanIndian) => pb::Race::AmericanIndianAlaskaNative,
    }
}

/// The bookings [`write_planned`] writes, with what each must be answered, from a loaded
/// world.
pub fn planned(
    data: &WorldData,
    seed: u64,
    count: usize,
    state: Option<&str>,
    tag: Option<&str>,
) -> anyhow::Result<Vec<Booking>> {
    if let Some(st) = state
        && !data.world.states.iter().any(|s| s.code == st)
    {
        anyhow::bail!("state {st:?} is not in this world");
    }
    let (from, days) = crate::demo::booking_window();
    // The national plan's first `count` bookings of the state (looking at most 64 times as
    // far, for a state with few people).
    let none = Default::default();
    let mut bookings: Vec<Booking> = plan_iter(data, seed, from, days, &none)
        .take(count.saturating_mul(if state.is_some() { 64 } else { 1 }))
        .filter(|b| state.is_none_or(|st| b.state == st))
        .take(count)
        .collect();
    if let Some(t) = tag {
        tag_tcns(&mut bookings, t);
    }
    Ok(bookings)
}

/// Plans bookings over a world (as the demo does, deterministic in `seed`) and writes
/// `count` of them as JSON lines, the `interop submit` format
/// ([`interop_client::booking_json`]), to `out` ("-" = stdout): only `state`'s when given,
/// with `tag` inserted into every TCN when given. Returns how many were written.
pub fn write_planned(
    world: &Path,
    seed: u64,
    count: usize,
    state: Option<&str>,
    tag: Option<&str>,
    out: &Path,
) -> anyhow::Result<usize> {
    use anyhow::Context;
    use interop_client::booking_json::BookingJson;
    use std::io::Write;
    crate::demo::require_world(world)?;
    let bookings = planned(&WorldData::load(world)?, seed, count, state, tag)?;
    let mut w: Box<dyn Write> = if out == Path::new("-") {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
        ))
    };
    for b in &bookings {
        serde_json::to_writer(&mut w, &BookingJson::from_pb(&b.submission)?)?;
        writeln!(w)?;
    }
    w.flush()?;
    Ok(bookings.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Invariant 8: the same seed gives the same bookings and the same expected answers;
    /// another seed gives others.
    #[test]
    fn plans_are_deterministic() {
        let d = tempfile::tempdir().unwrap();
        crate::generate::generate(3, 400, d.path()).unwrap();
        let data = WorldData::load(d.path()).unwrap();
        let day = NaiveDate::from_ymd_opt(2011, 1, 1).unwrap();
        let none = Default::default();
        let a = plan(&data, 1, 50, day, 365, &none);
        let b = plan(&data, 1, 50, day, 365, &none);
        let c = plan(&data, 2, 50, day, 365, &none);
        let key = |p: &[Booking]| {
            p.iter()
                .map(|b| (b.submission.clone(), b.expected.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(key(&a), key(&b));
        assert_ne!(key(&a), key(&c));
        // TCNs are unique and valid.
        let tcns: std::collections::HashSet<_> =
            a.iter().map(|b| b.submission.tcn.clone()).collect();
        assert_eq!(tcns.len(), a.len());
        assert!(
            a.iter()
                .all(|b| interop_gateway::intake::validate::tcn_ok(&b.submission.tcn))
        );
    }
}
