//! The synthetic world: geography and policy, a population, the FBI and IDENT galleries and
//! their records, and the ground truth — all from one seed.
//!
//! Every random choice comes from a ChaCha stream seeded from the world seed, consumed in a
//! fixed order, and everything is written from ordered collections, so the same seed and size
//! give byte-identical files. Fingerprints are derived per person from `(seed, person id)`;
//! enrolment captures use their own seed domain ([`ENROL_DOMAIN`]) so they never coincide
//! with a booking capture.
//!
//! Proportions (tunable constants below) are calibrated against the program's published
//! figures ([`crate::calibration`]): 3,181 jurisdictions, activated on the documents' schedule
//! ([`crate::activation`]), and a share of people in IDENT that makes the demo's bookings
//! match about 6.3% of their IDENT searches (692,788 matches of over 11,000,000 submissions
//! checked through the program by September 2011, seed 003). `generate` prints the table.

use crate::activation;
use crate::background::{self, Background};
use crate::bookings::mix;
use crate::calibration::Calibration;
use crate::geography::{self, DECLINING_STATES, FIELD_OFFICES, NOT_ELECTRONIC, STATES};
use crate::truth::{Person, TRUTH_FILE, Truth};
use chrono::NaiveDate;
use interop_gateway::world::*;
use interop_matcher::gallery::GalleryWriter;
use interop_matcher::synth::{self, CaptureModel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// Seed domain of enrolment captures (gallery templates).
pub const ENROL_DOMAIN: u64 = 0xE4_8011;
/// Format version written to `world.json`.
pub const WORLD_VERSION: u32 = 1;

/// Shares of the population with an FBI criminal record and with an IDENT (immigration)
/// encounter. A booking's IDENT search matches when IDENT holds the person, so the IDENT share
/// sets the matches per IDENT search: 0.063 makes the demo's world expect 6.3%, the
/// documents' rate (692,788 of over 11,000,000, seed 003; the calibration table prints the
/// world's expectation, and `calibration`'s test holds it). Exactly this share of the people
/// is in IDENT (rounded), so a world's expectation moves from seed to seed only by where they
/// live (about 0.2 points); a run's bookings draw people with replacement, so its own rate
/// varies around that by its Wilson interval (the report prints it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shares {
    pub criminal: f64,
    pub ident: f64,
    /// Jurisdictions planted with racial profiling, and as many decoys (strict traffic
    /// enforcement for all), for the profiling review ([`crate::profiling`]).
    pub profiling: usize,
}

impl Default for Shares {
    fn default() -> Self {
        Shares {
            criminal: 0.35,
            ident: 0.063,
            profiling: 3,
        }
    }
}
const SHARE_NOT_RECEIVING_JURISDICTIONS: f64 = 0.07;

/// What was generated.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateSummary {
    pub seed: u64,
    pub states: usize,
    pub jurisdictions: usize,
    pub field_offices: usize,
    pub people: usize,
    pub fbi_records: usize,
    pub ident_records: usize,
    /// People enrolled in each gallery beyond the world's own (never booked).
    pub background: Background,
    /// The world against the documents' figures.
    pub calibration: Calibration,
}

impl fmt::Display for GenerateSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "world (seed {})", self.seed)?;
        writeln!(f, "  {:<28} {:>8}", "states and territories", self.states)?;
        writeln!(f, "  {:<28} {:>8}", "jurisdictions", self.jurisdictions)?;
        writeln!(f, "  {:<28} {:>8}", "ICE field offices", self.field_offices)?;
        writeln!(f, "  {:<28} {:>8}", "people", self.people)?;
        writeln!(
            f,
            "  {:<28} {:>8}",
            "FBI records (gallery)", self.fbi_records
        )?;
        writeln!(
            f,
            "  {:<28} {:>8}",
            "IDENT records (gallery)", self.ident_records
        )?;
        for (what, n) in [
            ("FBI background (gallery)", self.background.fbi),
            ("IDENT background (gallery)", self.background.ident),
        ] {
            if n > 0 {
                writeln!(f, "  {what:<28} {n:>8}")?;
            }
        }
        write!(f, "{}", self.calibration)
    }
}

fn date(s: &str) -> NaiveDate {
    s.parse().expect("constant date")
}

/// Draws from cumulative weights.
fn pick(rng: &mut ChaCha8Rng, cumulative: &[u64]) -> usize {
    let total = *cumulative.last().expect("non-empty");
    let x = rng.random_range(0..total);
    cumulative.partition_point(|c| *c <= x)
}

fn cumulative(weights: impl Iterator<Item = u64>) -> Vec<u64> {
    let mut acc = 0;
    weights
        .map(|w| {
            acc += w.max(1);
            acc
        })
        .collect()
}

/// `k` distinct numbers of `1..=n`, at random (Floyd's algorithm: `k` draws, whatever `n`).
fn random_subset(rng: &mut ChaCha8Rng, n: u64, k: u64) -> std::collections::BTreeSet<u64> {
    let mut set = std::collections::BTreeSet::new();
    for j in n - k.min(n) + 1..=n {
        let t = rng.random_range(1..=j);
        if !set.insert(t) {
            set.insert(j);
        }
    }
    set
}

/// States, field offices and jurisdictions with their policy.
pub fn geography(rng: &mut ChaCha8Rng) -> (Vec<State>, Vec<FieldOffice>, Vec<Jurisdiction>) {
    let states: Vec<State> = STATES
        .iter()
        .map(|(code, name, pop, _)| State {
            code: code.to_string(),
            name: name.to_string(),
            population: pop * 1000,
            declines_results: DECLINING_STATES.contains(code),
            can_receive_electronically: !NOT_ELECTRONIC.contains(code),
        })
        .collect();
    let offices = FIELD_OFFICES
        .iter()
        .map(|(code, name, _)| FieldOffice {
            code: code.to_string(),
            name: name.to_string(),
        })
        .collect();
    let mut jurisdictions = Vec::new();
    let mut large = Vec::new();
    for ((code, _, pop, _), n) in STATES.iter().zip(geography::jurisdiction_counts()) {
        let n = n as usize;
        // County sizes are very unequal: Zipf-like weights over a shuffled order.
        let mut ranks: Vec<usize> = (1..=n).collect();
        for i in (1..n).rev() {
            ranks.swap(i, rng.random_range(0..=i));
        }
        let weights: Vec<f64> = ranks.iter().map(|r| 1.0 / *r as f64).collect();
        let total: f64 = weights.iter().sum();
        for (i, w) in weights.iter().enumerate() {
            let fips = 2 * i as u32 + 1;
            let id = format!("{code}{fips:03}");
            let population = ((*pop as f64) * 1000.0 * w / total).round().max(100.0) as u64;
            large.push(ranks[i] <= (n / 10).max(1));
            let receives_results = rng.random::<f64>() >= SHARE_NOT_RECEIVING_JURISDICTIONS;
            let n_agencies = rng.random_range(1..=3u32);
            let agencies = (1..=n_agencies).map(|a| format!("{id}{a:02}00")).collect();
            jurisdictions.push(Jurisdiction {
                id,
                name: format!("{code} county {fips:03}"),
                state: code.to_string(),
                field_office: geography::field_office(code, fips).to_string(),
                agencies,
                population,
                activated_on: None,
                receives_results,
                arrests: None,
            });
        }
    }
    // Activation dates, on the documents' schedule (every jurisdiction by FY 2013).
    let candidates: Vec<activation::Candidate> = jurisdictions
        .iter()
        .zip(&large)
        .map(|(j, &large)| activation::Candidate {
            id: &j.id,
            state: &j.state,
            large,
        })
        .collect();
    let dates = activation::schedule(rng, &candidates);
    for (j, d) in jurisdictions.iter_mut().zip(dates) {
        j.activated_on = Some(d);
    }
    (states, offices, jurisdictions)
}

fn conviction_class(rng: &mut ChaCha8Rng) -> Offense {
    let x: f64 = rng.random();
    match x {
        x if x < 0.03 => Offense::AggravatedFelony,
        x if x < 0.23 => Offense::Felony,
        x if x < 0.78 => Offense::Misdemeanor,
        x if x < 0.90 => Offense::MinorTraffic,
        x if x < 0.97 => Offense::Dui,
        x if x < 0.99 => Offense::HitAndRun,
        _ => Offense::RecklessDrivingInjury,
    }
}

fn immigration_status(rng: &mut ChaCha8Rng) -> ImmigrationStatus {
    let x: f64 = rng.random();
    match x {
        x if x < 0.10 => ImmigrationStatus::UsCitizen,
        x if x < 0.40 => ImmigrationStatus::LawfulPermanentResident,
        x if x < 0.55 => ImmigrationStatus::LawfulStatus,
        x if x < 0.70 => ImmigrationStatus::VisaOverstay,
        x if x < 0.90 => ImmigrationStatus::UnlawfulEntry,
        x if x < 0.97 => ImmigrationStatus::PriorRemoval,
        _ => ImmigrationStatus::Fugitive,
    }
}

/// A criminal record for FBI subject `subject`: arrests, and convictions for some of them.
pub(crate) fn criminal_record(rng: &mut ChaCha8Rng, subject: u64) -> CriminalRecord {
    let prior_arrests = rng.random_range(1..=10u32);
    let n = rng.random_range(0..=prior_arrests.min(6));
    let convictions = (0..n)
        .map(|_| Conviction {
            offense: conviction_class(rng),
            convicted_on: date("1995-01-01") + chrono::Days::new(rng.random_range(0..5_800)),
        })
        .collect();
    CriminalRecord {
        fbi_number: format!("FBI{:09}", 100_000_000 + subject * 13),
        prior_arrests,
        convictions,
    }
}

/// An IDENT record for subject `subject` with this status and biography; a recent entry date
/// for those whose status comes from one.
pub(crate) fn immigration_record(
    rng: &mut ChaCha8Rng,
    subject: u64,
    status: ImmigrationStatus,
    biographics: Biographics,
) -> ImmigrationRecord {
    let last_entry = matches!(
        status,
        ImmigrationStatus::UnlawfulEntry
            | ImmigrationStatus::VisaOverstay
            | ImmigrationStatus::PriorRemoval
    )
    .then(|| date("2000-01-01") + chrono::Days::new(rng.random_range(0..4_200)));
    ImmigrationRecord {
        fin: format!("FIN{:010}", 1_000_000_000 + subject * 17),
        status,
        last_entry,
        biographics,
    }
}

/// A person's name, date of birth, sex (true: female) and place of birth.
pub(crate) fn biography(rng: &mut ChaCha8Rng) -> (String, NaiveDate, bool, String) {
    let dob = date("1950-01-01") + chrono::Days::new(rng.random_range(0..16_800));
    let female = rng.random::<f64>() < 0.25;
    let name = format!(
        "{} {}",
        geography::FIRST_NAMES[rng.random_range(0..geography::FIRST_NAMES.len())],
        geography::LAST_NAMES[rng.random_range(0..geography::LAST_NAMES.len())]
    );
    let place_of_birth = geography::PLACES_OF_BIRTH
        [rng.random_range(0..geography::PLACES_OF_BIRTH.len())]
    .to_string();
    (name, dob, female, place_of_birth)
}

/// Writes a world of `identities` people seeded with `seed` into `out`, with the default
/// [`Shares`].
pub fn generate(seed: u64, identities: u64, out: &Path) -> anyhow::Result<GenerateSummary> {
    generate_with(
        seed,
        identities,
        Shares::default(),
        Background::default(),
        out,
    )
}

/// Writes a world with the given shares of criminal and immigration records, and galleries
/// with `background` people enrolled beyond the world's own ([`crate::background`]).
pub fn generate_with(
    seed: u64,
    identities: u64,
    shares: Shares,
    background: Background,
    out: &Path,
) -> anyhow::Result<GenerateSummary> {
    anyhow::ensure!(identities >= 1, "--identities must be at least 1");
    for (name, v) in [
        ("--share-criminal", shares.criminal),
        ("--share-ident", shares.ident),
    ] {
        anyhow::ensure!((0.0..=1.0).contains(&v), "{name} must be between 0 and 1");
    }
    std::fs::create_dir_all(out)?;
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, 0x3011, 0));
    let (states, field_offices, mut jurisdictions) = geography(&mut rng);
    let profiling = crate::profiling::Profiling::choose(&jurisdictions, shares.profiling);
    for j in &mut jurisdictions {
        j.arrests = Some(crate::profiling::arrest_data(j, &profiling, shares.ident));
    }

    // People spread by state population, then by county population within the state.
    let state_cum = cumulative(states.iter().map(|s| s.population));
    let mut by_state: BTreeMap<&str, (Vec<&Jurisdiction>, Vec<u64>)> = BTreeMap::new();
    for j in &jurisdictions {
        let e = by_state.entry(j.state.as_str()).or_default();
        e.0.push(j);
    }
    for (js, cum) in by_state.values_mut() {
        *cum = cumulative(js.iter().map(|j| j.population));
    }

    // Exactly the IDENT share of the people (rounded), chosen at random: drawn person by
    // person, a world of 5,000 would miss the share by ±0.7 points (two standard deviations)
    // from seed to seed, and the matches per IDENT search with it.
    let in_ident = random_subset(
        &mut rng,
        identities,
        (shares.ident * identities as f64).round() as u64,
    );
    let mut people = Vec::with_capacity(identities as usize);
    let mut fbi_records: Records<CriminalRecord> = BTreeMap::new();
    let mut ident_records: Records<ImmigrationRecord> = BTreeMap::new();
    let model = CaptureModel::default();
    // Templates go to the gallery files as they are made: a million of them do not fit.
    let mut fbi_gallery = GalleryWriter::create(&out.join(FBI_GALLERY_FILE))?;
    let mut ident_gallery = GalleryWriter::create(&out.join(IDENT_GALLERY_FILE))?;
    for id in 1..=identities {
        let st = &states[pick(&mut rng, &state_cum)];
        let (js, cum) = &by_state[st.code.as_str()];
        let j = js[pick(&mut rng, cum)];
        let (name, dob, female, place_of_birth) = biography(&mut rng);

        let fbi_subject = (rng.random::<f64>() < shares.criminal).then(|| {
            let subject = fbi_records.len() as u64 + 1;
            fbi_records.insert(subject, criminal_record(&mut rng, subject));
            subject
        });
        let ident_subject = in_ident.contains(&id).then(|| {
            let subject = ident_records.len() as u64 + 1;
            let status = immigration_status(&mut rng);
            // The person's own biography, as recorded at the immigration contact (no draw
            // from the generator: the rest of the world is as before).
            let biographics = Biographics {
                name: name.clone(),
                date_of_birth: Some(dob),
                sex: if female { "F" } else { "M" }.into(),
                place_of_birth: place_of_birth.clone(),
            };
            ident_records.insert(
                subject,
                immigration_record(&mut rng, subject, status, biographics),
            );
            subject
        });
        if fbi_subject.is_some() || ident_subject.is_some() {
            let master = synth::master_tenprint(seed, id);
            if let Some(s) = fbi_subject {
                fbi_gallery.push(
                    s,
                    &synth::capture(&master, &model, mix(seed ^ ENROL_DOMAIN, id, 1)),
                )?;
            }
            if let Some(s) = ident_subject {
                ident_gallery.push(
                    s,
                    &synth::capture(&master, &model, mix(seed ^ ENROL_DOMAIN, id, 2)),
                )?;
            }
        }
        people.push(Person {
            id,
            state: st.code.clone(),
            jurisdiction: j.id.clone(),
            fbi_subject,
            ident_subject,
            name,
            date_of_birth: dob,
            female,
            place_of_birth,
            group: Some(crate::profiling::group_of(
                seed,
                id,
                ident_subject.is_some(),
                &st.code,
            )),
        });
    }

    let world = WorldFile {
        meta: WorldMeta {
            seed,
            identities,
            version: WORLD_VERSION,
        },
        states,
        field_offices,
        jurisdictions,
    };
    let summary = GenerateSummary {
        seed,
        states: world.states.len(),
        jurisdictions: world.jurisdictions.len(),
        field_offices: world.field_offices.len(),
        people: people.len(),
        fbi_records: fbi_records.len(),
        ident_records: ident_records.len(),
        background,
        calibration: Calibration::of(&world, &people),
    };
    write_json(out, WORLD_FILE, &world)?;
    write_json(out, TRUTH_FILE, &Truth { people, profiling })?;
    let extra = background.fbi + background.ident;
    let bar = crate::demo::bar(extra, "background", extra == 0);
    background::write(
        seed,
        background::FBI_DOMAIN,
        fbi_gallery,
        &fbi_records,
        &out.join(FBI_RECORDS_FILE),
        background.fbi,
        // Drawn as a world person's record is.
        criminal_record,
        &|n| bar.set_position(n),
    )?;
    background::write(
        seed,
        background::IDENT_DOMAIN,
        ident_gallery,
        &ident_records,
        &out.join(IDENT_RECORDS_FILE),
        background.ident,
        background::immigration_record,
        &|n| bar.set_position(background.fbi + n),
    )?;
    bar.finish_and_clear();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn same_seed_same_bytes_other_seed_other_world() {
        let (a, b, c) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        generate(5, 300, a.path()).unwrap();
        generate(5, 300, b.path()).unwrap();
        generate(6, 300, c.path()).unwrap();
        for f in [
            WORLD_FILE,
            FBI_RECORDS_FILE,
            IDENT_RECORDS_FILE,
            TRUTH_FILE,
            FBI_GALLERY_FILE,
            IDENT_GALLERY_FILE,
        ] {
            let x = std::fs::read(a.path().join(f)).unwrap();
            assert_eq!(
                x,
                std::fs::read(b.path().join(f)).unwrap(),
                "{f} differs for the same seed"
            );
        }
        assert_ne!(
            std::fs::read(a.path().join(TRUTH_FILE)).unwrap(),
            std::fs::read(c.path().join(TRUTH_FILE)).unwrap()
        );
    }

    #[test]
    fn geography_is_complete_and_consistent() {
        let (states, offices, js) = geography(&mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(js.len(), 3181, "the documents' jurisdictions (seed 001)");
        assert_eq!(offices.len(), 24);
        let codes: BTreeSet<_> = offices.iter().map(|o| o.code.as_str()).collect();
        for o in &offices {
            assert!(
                js.iter().any(|j| j.field_office == o.code),
                "{} covers nothing",
                o.code
            );
        }
        let ids: BTreeSet<_> = js.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids.len(), js.len(), "jurisdiction ids are unique");
        for j in &js {
            assert!(codes.contains(j.field_office.as_str()));
            assert!(states.iter().any(|s| s.code == j.state));
            assert!(!j.agencies.is_empty());
            for a in &j.agencies {
                assert_eq!(a.len(), 9);
                assert!(a.starts_with(&j.id) && a.starts_with(&j.state));
            }
        }
        // Every jurisdiction is activated by FY 2013 (seed 000; `activation`'s tests).
        assert!(js.iter().all(|j| j.activated_on.is_some()));
        let opted = js.iter().filter(|j| !j.receives_results).count() as f64 / js.len() as f64;
        assert!((0.03..0.12).contains(&opted), "{opted}");
        assert_eq!(
            js.iter().find(|j| j.id == "TX201").unwrap().field_office,
            "HOU"
        );
        assert_eq!(
            js.iter().find(|j| j.id == "CA073").unwrap().field_office,
            "SND"
        );
        assert_eq!(
            js.iter().find(|j| j.id == "NY047").unwrap().field_office,
            "NYC"
        );
    }

    #[test]
    fn population_and_records_are_consistent() {
        let d = tempfile::tempdir().unwrap();
        let s = generate(9, 2000, d.path()).unwrap();
        let truth: Truth = read_json(d.path(), TRUTH_FILE).unwrap();
        let fbi: Records<CriminalRecord> = read_json(d.path(), FBI_RECORDS_FILE).unwrap();
        let ident: Records<ImmigrationRecord> = read_json(d.path(), IDENT_RECORDS_FILE).unwrap();
        assert_eq!(truth.people.len(), 2000);
        let fbi_share = s.fbi_records as f64 / 2000.0;
        let ident_share = s.ident_records as f64 / 2000.0;
        assert!((0.30..0.40).contains(&fbi_share), "{fbi_share}");
        assert_eq!(s.ident_records, 126, "0.063 of 2,000, exactly");
        assert!((0.06..0.07).contains(&ident_share), "{ident_share}");
        for p in &truth.people {
            if let Some(f) = p.fbi_subject {
                assert!(fbi.contains_key(&f));
            }
            if let Some(i) = p.ident_subject {
                assert!(ident.contains_key(&i));
            }
        }
        let g = interop_matcher::gallery::read_gallery(&d.path().join(IDENT_GALLERY_FILE)).unwrap();
        assert_eq!(g.len(), ident.len());
        assert!(g.iter().all(|(s, _)| ident.contains_key(s)));
    }
}
