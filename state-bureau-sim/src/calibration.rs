//! Calibration: the synthetic world against the figures the program's documents publish.
//!
//! A load test is only as realistic as its world, so the generator is held to the documents'
//! own figures (`../shared/seeds/`, by file name prefix): how many jurisdictions there are
//! (`001`), how far activation had reached by 27 September 2011 and when it was to be
//! complete (`003`, `000`), and how often a submission checked against IDENT matched (`003`).
//! [`Calibration::of`] measures a world against them; `generate` (and `demo`, when it
//! generates) prints the table, each figure beside the documents' and its source, and the
//! tests of this module and [`crate::activation`] hold them.

use crate::truth::Person;
use chrono::NaiveDate;
use interop_gateway::world::WorldFile;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// `001`: "providing information to each of the 3,181 jurisdictions".
pub const JURISDICTIONS: usize = crate::geography::JURISDICTIONS as usize;

/// `003`: "As of September 27, 2011, Secure Communities was available in 1,595 jurisdictions
/// in 44 states and territories."
pub const AS_OF: NaiveDate = date(2011, 9, 27);
/// Jurisdictions activated on or before [`AS_OF`] (`003`).
pub const ACTIVATED_AS_OF: usize = 1_595;
/// States and territories with an activated jurisdiction on [`AS_OF`] (`003`).
pub const STATES_AS_OF: usize = 44;

/// The first activation: Harris County, Texas (TX201), on 27 October 2008.
/// **Assumption**: the seeds give neither the place nor the date (`001` counts "Between
/// October 2008 and the end of fiscal year 2011"); both are the program's public history.
pub const FIRST_JURISDICTION: &str = "TX201";
/// See [`FIRST_JURISDICTION`].
pub const FIRST_ON: NaiveDate = date(2008, 10, 27);

/// Every jurisdiction is activated by this date. `000`: "ICE will fully deploy Secure
/// Communities for all jurisdictions during FY 2013" (1 October 2012 to 30 September 2013).
/// **Assumption**: the seeds give no day within FY 2013; 22 January 2013 is the day ICE
/// reported nationwide activation complete.
pub const COMPLETE_BY: NaiveDate = date(2013, 1, 22);
/// The first and last days of FY 2013 (`000`: "during FY 2013").
pub const FY2013: (NaiveDate, NaiveDate) = (date(2012, 10, 1), date(2013, 9, 30));

/// `003`: "as of September 30, 2011, over 11,000,000 fingerprint submissions have resulted in
/// 692,788 database matches" — submissions made through the program, so each was checked
/// against IDENT: the documents' rate is matches per IDENT search.
pub const DOCUMENTS_MATCHES: u64 = 692_788;
/// See [`DOCUMENTS_MATCHES`].
pub const DOCUMENTS_SUBMISSIONS: u64 = 11_000_000;

/// The documents' matches per IDENT search: 692,788 / 11,000,000 = 6.30% (an upper bound:
/// "over" 11,000,000 submissions).
pub fn documents_matches_per_ident_search() -> f64 {
    DOCUMENTS_MATCHES as f64 / DOCUMENTS_SUBMISSIONS as f64
}

const fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("constant date")
}

/// A world's figures, to set beside the documents'.
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    pub jurisdictions: usize,
    /// The earliest activation (the first such jurisdiction by id, if several share it).
    pub first: Option<(String, NaiveDate)>,
    /// Jurisdictions activated on or before [`AS_OF`], and their states and territories.
    pub activated_as_of: usize,
    pub states_as_of: usize,
    /// The last activation date, when every jurisdiction is activated (`None` if some never
    /// is).
    pub all_activated_by: Option<NaiveDate>,
    /// Expected IDENT matches per IDENT search of the demo's bookings (see
    /// [`expected_matches_per_ident_search`]).
    pub matches_per_ident_search: f64,
}

impl Calibration {
    /// Measures `world` and its population `people`.
    pub fn of(world: &WorldFile, people: &[Person]) -> Calibration {
        let js = &world.jurisdictions;
        let first = js
            .iter()
            .filter_map(|j| j.activated_on.map(|d| (d, j.id.clone())))
            .min()
            .map(|(d, id)| (id, d));
        let early: Vec<_> = js
            .iter()
            .filter(|j| j.activated_on.is_some_and(|d| d <= AS_OF))
            .collect();
        let states: BTreeSet<&str> = early.iter().map(|j| j.state.as_str()).collect();
        let all_activated_by = js
            .iter()
            .map(|j| j.activated_on)
            .collect::<Option<Vec<_>>>()
            .and_then(|ds| ds.into_iter().max());
        let (from, days) = crate::demo::booking_window();
        Calibration {
            jurisdictions: js.len(),
            first,
            activated_as_of: early.len(),
            states_as_of: states.len(),
            all_activated_by,
            matches_per_ident_search: expected_matches_per_ident_search(world, people, from, days),
        }
    }
}

/// The expected share of IDENT searches that match, for bookings planned as
/// [`crate::bookings::plan_iter`] plans them: a person drawn uniformly from `people`, booked
/// on a day drawn uniformly from `days` days from `from`, searched if their jurisdiction is
/// activated by then, a match if IDENT holds them. So each person weighs as the share of the
/// window their jurisdiction is activated, and the rate is the IDENT holders' share of that
/// weight. (A matcher's rare errors are left out: they are judged as rates elsewhere.)
pub fn expected_matches_per_ident_search(
    world: &WorldFile,
    people: &[Person],
    from: NaiveDate,
    days: u32,
) -> f64 {
    let to = from + chrono::Days::new(days as u64);
    let searched_days: BTreeMap<&str, f64> = world
        .jurisdictions
        .iter()
        .map(|j| {
            let n = match j.activated_on {
                None => 0,
                Some(d) if d >= to => 0,
                Some(d) => (to - d.max(from)).num_days(),
            };
            (j.id.as_str(), n as f64)
        })
        .collect();
    let (mut hits, mut searches) = (0.0, 0.0);
    for p in people {
        let w = searched_days
            .get(p.jurisdiction.as_str())
            .copied()
            .unwrap_or(0.0);
        searches += w;
        if p.ident_subject.is_some() {
            hits += w;
        }
    }
    if searches > 0.0 { hits / searches } else { 0.0 }
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for Calibration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |f: &mut fmt::Formatter<'_>, what: &str, ours: String, docs: &str, src: &str| {
            writeln!(f, "  {what:<34} {ours:>17}   {docs:<34} {src}")
        };
        writeln!(f, "calibration against the program's documents")?;
        row(f, "figure", "this world".into(), "documents", "source")?;
        row(
            f,
            "jurisdictions",
            thousands(self.jurisdictions),
            &thousands(JURISDICTIONS),
            "seed 001",
        )?;
        row(
            f,
            "first activation",
            self.first
                .as_ref()
                .map(|(id, d)| format!("{id} {d}"))
                .unwrap_or_else(|| "none".into()),
            &format!("{FIRST_JURISDICTION} {FIRST_ON} (Harris County)"),
            "assumption (not in the seeds)",
        )?;
        row(
            f,
            &format!("activated by {AS_OF}"),
            thousands(self.activated_as_of),
            &thousands(ACTIVATED_AS_OF),
            "seed 003",
        )?;
        row(
            f,
            "  in states and territories",
            self.states_as_of.to_string(),
            &STATES_AS_OF.to_string(),
            "seed 003",
        )?;
        row(
            f,
            "every jurisdiction activated by",
            self.all_activated_by
                .map(|d| d.to_string())
                .unwrap_or_else(|| "never (some)".into()),
            &format!("during FY 2013 (by {})", FY2013.1),
            "seed 000; the day 2013-01-22 an assumption",
        )?;
        write!(
            f,
            "  {:<34} {:>17}   {:<34} seed 003",
            "expected matches per IDENT search",
            format!("{:.2}%", 100.0 * self.matches_per_ident_search),
            format!(
                "{:.1}% ({} of over {})",
                100.0 * documents_matches_per_ident_search(),
                thousands(DOCUMENTS_MATCHES as usize),
                thousands(DOCUMENTS_SUBMISSIONS as usize)
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::DemoOptions;

    /// The demo's world (its seed and size) expects the documents' rate of matches per IDENT
    /// search: 692,788 of 11,000,000 = 6.30% (`003`), within ±0.5 points. The world holds
    /// exactly the IDENT share of its people, so its expectation moves only with where they
    /// live, whose activation weighs them (about 0.2 points from seed to seed); a demo run's
    /// own 2,000 bookings then vary around it by their Wilson interval (the report's).
    #[test]
    fn the_demo_world_expects_the_documents_match_rate_per_ident_search() {
        let d = tempfile::tempdir().unwrap();
        let o = DemoOptions::default();
        let summary = crate::generate::generate(o.seed, o.identities, d.path()).unwrap();
        let rate = summary.calibration.matches_per_ident_search;
        let docs = documents_matches_per_ident_search();
        assert!((docs - 0.063).abs() < 0.0005, "{docs}");
        assert!(
            (docs - 0.005..=docs + 0.005).contains(&rate),
            "expected {:.2}% matches per IDENT search, the documents {:.2}%",
            100.0 * rate,
            100.0 * docs
        );
        // And it is the matches per IDENT search the demo's plan expects.
        let data = crate::bookings::WorldData::load(d.path()).unwrap();
        assert_eq!(
            Calibration::of(&data.world, &data.truth.people),
            summary.calibration
        );
    }

    #[test]
    fn the_expectation_weighs_people_by_their_activated_days() {
        use interop_gateway::world::{Jurisdiction, WorldMeta};
        let j = |id: &str, on: Option<&str>| Jurisdiction {
            id: id.into(),
            name: id.into(),
            state: "TX".into(),
            field_office: "HOU".into(),
            agencies: vec![],
            population: 1,
            activated_on: on.map(|d| d.parse().unwrap()),
            receives_results: true,
            arrests: None,
        };
        let world = WorldFile {
            meta: WorldMeta {
                seed: 0,
                identities: 0,
                version: 1,
            },
            states: vec![],
            field_offices: vec![],
            // A: the whole window; B: its second half; C: never.
            jurisdictions: vec![
                j("A", Some("2000-01-01")),
                j("B", Some("2011-01-06")),
                j("C", None),
            ],
        };
        let p = |id: u64, jur: &str, ident: bool| Person {
            id,
            state: "TX".into(),
            jurisdiction: jur.into(),
            fbi_subject: None,
            ident_subject: ident.then_some(id),
            name: String::new(),
            date_of_birth: date(1980, 1, 1),
            female: false,
            place_of_birth: String::new(),
            group: None,
        };
        let people = [p(1, "A", false), p(2, "B", true), p(3, "C", true)];
        // Ten days from 2011-01-01: A searched 10 days, B 5, C none → 5 / 15.
        let r = expected_matches_per_ident_search(&world, &people, date(2011, 1, 1), 10);
        assert!((r - 1.0 / 3.0).abs() < 1e-12, "{r}");
    }
}
