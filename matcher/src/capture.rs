//! How real bookings' prints are taken: a capture-quality band per booking, varying by agency,
//! and what goes wrong with single fingers.
//!
//! [`crate::synth::capture`] takes every finger with one [`CaptureModel`]; a booking is not
//! that uniform. Jails take prints on livescan devices, on inked cards scanned later, and
//! sometimes badly (a struggling arrestee, an old card, a worn scanner); single fingers come
//! out dry, wet or smudged; a finger can be bandaged or missing; a card can have two fingers
//! rolled in each other's boxes. [`booking_capture`] draws all of that, deterministically from
//! its seed, and says what it drew, so a benchmark can report accuracy per band and a verdict
//! can tell a hard print from a bug.
//!
//! The program's documents say nothing about capture quality; every rate below is an
//! assumption of this model, stated here and in the README, chosen to be of the order
//! operational fingerprint studies report (most bookings on livescan by 2011, a minority of
//! cards, a few per cent of captures poor):
//!
//! | | livescan | ink card | poor |
//! |---|---|---|---|
//! | degradation factor ([`CaptureModel::with_quality`]) | 0.7 | 1.2 | 2.0 |
//! | a finger dry, wet or smudged | 4% | 10% | 30% |
//! | two fingers of a hand mis-sequenced | never (checked against the slaps) | 3% | 5% |
//!
//! - Agencies: three in four mostly on livescan (88% livescan, 9% cards, 3% poor), one in four
//!   mostly on cards (20%, 60%, 20%); over all agencies about 71% / 22% / 7% ([`Mix::DEFAULT`]).
//! - A finger unable to be printed at a booking (bandaged, injured): 0.3% of fingers.
//! - A finger amputated: 0.05% of a person's fingers, the same at every capture
//!   ([`amputated`]). Both are left out of the print and recorded as missing, with the reason,
//!   as booking systems do (ANSI/NIST-ITL's amputated-or-bandaged codes: `XX`, `UP`).

use crate::synth::{CaptureModel, MasterTenprint, capture_finger, finger_rng, mix};
use crate::template::Tenprint;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The capture-quality band of a booking's prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Band {
    Livescan,
    InkCard,
    Poor,
}

impl Band {
    pub const ALL: [Band; 3] = [Band::Livescan, Band::InkCard, Band::Poor];

    /// The degradation factor of [`CaptureModel::with_quality`] for the band's prints.
    pub fn factor(self) -> f32 {
        match self {
            Band::Livescan => 0.7,
            Band::InkCard => 1.2,
            Band::Poor => 2.0,
        }
    }

    /// The chance that one finger comes out dry, wet or smudged.
    fn p_condition(self) -> f32 {
        match self {
            Band::Livescan => 0.04,
            Band::InkCard => 0.10,
            Band::Poor => 0.30,
        }
    }

    /// The chance that two adjacent fingers of one hand are recorded at each other's
    /// positions. A livescan device checks each rolled finger against the slaps.
    fn p_missequenced(self) -> f32 {
        match self {
            Band::Livescan => 0.0,
            Band::InkCard => 0.03,
            Band::Poor => 0.05,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Band::Livescan => "livescan",
            Band::InkCard => "ink card",
            Band::Poor => "poor",
        }
    }
}

impl std::str::FromStr for Band {
    type Err = String;
    fn from_str(s: &str) -> Result<Band, String> {
        match s {
            "livescan" => Ok(Band::Livescan),
            "ink" | "ink-card" | "ink card" => Ok(Band::InkCard),
            "poor" => Ok(Band::Poor),
            _ => Err(format!(
                "capture band {s:?}: expected livescan, ink or poor"
            )),
        }
    }
}

/// The shares of an agency's bookings in each band (poor: the rest).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mix {
    pub livescan: f64,
    pub ink_card: f64,
}

/// Why a finger is not in a booking's print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Missing {
    /// The person does not have it (ANSI/NIST-ITL `XX`).
    Amputated,
    /// Bandaged or injured at the booking (`UP`, unable to print).
    UnableToPrint,
}

/// What a finger's impression suffered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Condition {
    /// Too little contact: broken ridges, minutiae lost, a smaller area.
    Dry,
    /// Ridges run together: false bifurcations, minutiae lost.
    Wet,
    /// The finger slid during the roll: strong distortion and jitter.
    Smudged,
}

impl Mix {
    /// Over all agencies (three in four mostly livescan, one in four mostly cards).
    pub const DEFAULT: Mix = Mix {
        livescan: 0.75 * 0.88 + 0.25 * 0.20,
        ink_card: 0.75 * 0.09 + 0.25 * 0.60,
    };
    const LIVESCAN_AGENCY: Mix = Mix {
        livescan: 0.88,
        ink_card: 0.09,
    };
    const CARD_AGENCY: Mix = Mix {
        livescan: 0.20,
        ink_card: 0.60,
    };

    /// Every booking in one band.
    pub fn only(band: Band) -> Mix {
        match band {
            Band::Livescan => Mix {
                livescan: 1.0,
                ink_card: 0.0,
            },
            Band::InkCard => Mix {
                livescan: 0.0,
                ink_card: 1.0,
            },
            Band::Poor => Mix {
                livescan: 0.0,
                ink_card: 0.0,
            },
        }
    }

    /// The mix of the agency named `ori` (one in four agencies books mostly on cards); the
    /// same agency gets the same mix in every world.
    pub fn for_agency(ori: &str) -> Mix {
        let h = ori
            .bytes()
            .fold(0xA6E7_u64, |h, b| mix(h, b as u64, 0x0A61));
        if h % 4 == 0 {
            Mix::CARD_AGENCY
        } else {
            Mix::LIVESCAN_AGENCY
        }
    }

    /// The band of the capture seeded `capture_seed`.
    pub fn draw(&self, capture_seed: u64) -> Band {
        let u = ChaCha8Rng::seed_from_u64(mix(capture_seed, 0xBA4D, 0)).random::<f64>();
        if u < self.livescan {
            Band::Livescan
        } else if u < self.livescan + self.ink_card {
            Band::InkCard
        } else {
            Band::Poor
        }
    }
}

/// The chance that a finger of a person is amputated.
const P_AMPUTATED: f64 = 0.0005;
/// The chance that a finger cannot be printed at a booking.
const P_UNABLE_TO_PRINT: f32 = 0.003;

/// The positions of the fingers person `person` of the world seeded `seed` does not have,
/// from their own seed (the master prints do not change with it).
pub fn amputated(seed: u64, person: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, person, 0xA4B7));
    (1..=10u8)
        .filter(|_| rng.random::<f64>() < P_AMPUTATED)
        .collect()
}

/// One booking's capture and what the model drew for it.
#[derive(Clone, Debug, PartialEq)]
pub struct BookingCapture {
    pub print: Tenprint,
    pub band: Band,
    /// Fingers not in the print, by position, and why.
    pub missing: Vec<(u8, Missing)>,
    /// Fingers whose impression suffered, by (true) position.
    pub conditions: Vec<(u8, Condition)>,
    /// Two positions whose prints were recorded at each other's place.
    pub swapped: Option<(u8, u8)>,
}

impl BookingCapture {
    /// What was drawn, for a person reading a matcher error: "poor; finger 3 smudged;
    /// fingers 2 and 3 swapped; finger 7 amputated".
    pub fn describe(&self) -> String {
        let mut parts = vec![self.band.name().to_string()];
        for (p, c) in &self.conditions {
            parts.push(format!("finger {p} {}", format!("{c:?}").to_lowercase()));
        }
        if let Some((a, b)) = self.swapped {
            parts.push(format!("fingers {a} and {b} swapped"));
        }
        for (p, m) in &self.missing {
            let why = match m {
                Missing::Amputated => "amputated",
                Missing::UnableToPrint => "unable to print",
            };
            parts.push(format!("finger {p} {why}"));
        }
        parts.join("; ")
    }
}

/// The capture model of one finger in `band` with `condition`.
fn finger_model(band: Band, condition: Option<Condition>) -> CaptureModel {
    let mut m = CaptureModel::with_quality(band.factor());
    if condition.is_some() {
        m.quality_scale *= 0.85;
    }
    match condition {
        None => {}
        Some(Condition::Dry) => {
            m.p_missing = (m.p_missing + 0.15).min(0.7);
            m.spurious *= 1.5;
            m.p_partial = m.p_partial.max(0.7);
        }
        Some(Condition::Wet) => {
            m.p_missing = (m.p_missing + 0.10).min(0.7);
            m.p_type_flip = (m.p_type_flip + 0.15).min(0.5);
            m.spurious *= 1.5;
        }
        Some(Condition::Smudged) => {
            m.distortion_px *= 2.0;
            m.jitter_px *= 1.6;
            m.jitter_deg *= 1.5;
        }
    }
    m
}

/// A booking's capture of `master` in `band`, deterministic in `capture_seed`: each finger
/// the person has, unless it cannot be printed, taken with the band's model or, if it came
/// out dry, wet or smudged, a worse one; then perhaps two adjacent fingers of one hand
/// swapped. A finger's minutiae come from the same random stream as in
/// [`crate::synth::capture`], so a clean finger in a band is that capture at the band's
/// factor.
pub fn booking_capture(master: &MasterTenprint, band: Band, capture_seed: u64) -> BookingCapture {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(capture_seed, 0xB0_0C1E, 0));
    let mut missing = vec![];
    let mut conditions = vec![];
    let mut fingers = Vec::with_capacity(master.fingers.len());
    for f in &master.fingers {
        // Every draw is made for every finger, so one finger's fate never shifts another's.
        let (u_unable, u_condition, which) = (
            rng.random::<f32>(),
            rng.random::<f32>(),
            rng.random_range(0..3u8),
        );
        if master.amputated.contains(&f.position) {
            missing.push((f.position, Missing::Amputated));
            continue;
        }
        if u_unable < P_UNABLE_TO_PRINT {
            missing.push((f.position, Missing::UnableToPrint));
            continue;
        }
        let condition = (u_condition < band.p_condition()).then_some(match which {
            0 => Condition::Dry,
            1 => Condition::Wet,
            _ => Condition::Smudged,
        });
        if let Some(c) = condition {
            conditions.push((f.position, c));
        }
        let model = finger_model(band, condition);
        fingers.push(capture_finger(
            f,
            &model,
            &mut finger_rng(capture_seed, f.position),
        ));
    }
    // Two adjacent fingers of one hand (1–5 right, 6–10 left), both captured.
    let (u_swap, first) = (rng.random::<f32>(), rng.random_range(0..8u8));
    let mut swapped = None;
    if u_swap < band.p_missequenced() {
        // Pairs (1,2) (2,3) (3,4) (4,5) (6,7) (7,8) (8,9) (9,10).
        let a = if first < 4 { first + 1 } else { first + 2 };
        let (ia, ib) = (
            fingers.iter().position(|f| f.position == a),
            fingers.iter().position(|f| f.position == a + 1),
        );
        if let (Some(ia), Some(ib)) = (ia, ib) {
            fingers[ia].position = a + 1;
            fingers[ib].position = a;
            fingers.swap(ia, ib);
            swapped = Some((a, a + 1));
        }
    }
    BookingCapture {
        print: Tenprint { fingers },
        band,
        missing,
        conditions,
        swapped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{capture, master_tenprint};

    /// Over many captures the bands, conditions, missing fingers and swaps come out at the
    /// stated rates, and everything is a function of the seeds.
    #[test]
    fn the_mix_draws_its_stated_rates() {
        let n = 20_000u64;
        let mut bands = std::collections::HashMap::new();
        for s in 0..n {
            *bands.entry(Mix::DEFAULT.draw(s)).or_insert(0u64) += 1;
        }
        let share = |b| bands[&b] as f64 / n as f64;
        assert!((share(Band::Livescan) - 0.71).abs() < 0.015, "{bands:?}");
        assert!((share(Band::InkCard) - 0.2175).abs() < 0.015, "{bands:?}");
        assert!((share(Band::Poor) - 0.0725).abs() < 0.01, "{bands:?}");
        assert_eq!(Mix::only(Band::Poor).draw(3), Band::Poor);
        assert_eq!(Mix::only(Band::InkCard).draw(3), Band::InkCard);

        let (mut conditions, mut swaps, mut unable) = (0, 0, 0);
        let people = 600u64;
        for p in 0..people {
            let m = master_tenprint(5, p);
            let c = booking_capture(&m, Band::Poor, p);
            assert_eq!(c, booking_capture(&m, Band::Poor, p));
            conditions += c.conditions.len();
            swaps += c.swapped.is_some() as usize;
            unable += c
                .missing
                .iter()
                .filter(|(_, r)| *r == Missing::UnableToPrint)
                .count();
            assert_eq!(
                c.print.fingers.len() + c.missing.len(),
                10,
                "every finger is in the print or recorded missing"
            );
        }
        let fingers = (people * 10) as f64;
        assert!(
            (conditions as f64 / fingers - 0.30).abs() < 0.03,
            "{conditions}"
        );
        assert!(
            (1..=80).contains(&swaps),
            "{swaps} of {people} swapped at 5%"
        );
        assert!(unable <= 50, "{unable} of {fingers} unprintable at 0.3%");
    }

    /// A clean finger in a band is the plain capture at the band's factor; a swap exchanges
    /// two adjacent positions of one hand and nothing else.
    #[test]
    fn a_clean_finger_is_the_plain_capture_and_a_swap_only_relabels() {
        let mut seen_swap = false;
        for p in 0..400u64 {
            let m = master_tenprint(8, p);
            let c = booking_capture(&m, Band::InkCard, 1_000 + p);
            let plain = capture(&m, &CaptureModel::with_quality(1.2), 1_000 + p);
            for f in &c.print.fingers {
                let truth = match c.swapped {
                    Some((a, b)) if f.position == a => b,
                    Some((a, b)) if f.position == b => a,
                    _ => f.position,
                };
                if c.conditions.iter().any(|(q, _)| *q == truth) {
                    continue;
                }
                let same = plain.fingers.iter().find(|g| g.position == truth).unwrap();
                assert_eq!(f.minutiae, same.minutiae, "person {p} finger {truth}");
            }
            if let Some((a, b)) = c.swapped {
                seen_swap = true;
                assert_eq!(b, a + 1);
                assert!(a != 5, "never across hands");
            }
            let positions: Vec<u8> = c.print.fingers.iter().map(|f| f.position).collect();
            let mut sorted = positions.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(positions, sorted, "positions unique and in order");
        }
        assert!(seen_swap);
    }

    /// An amputated finger is missing from every capture of the person, enrolments included,
    /// and recorded as amputated at a booking.
    #[test]
    fn an_amputated_finger_is_missing_everywhere() {
        let p = (0..100_000u64)
            .find(|&p| !amputated(2, p).is_empty())
            .expect("an amputee among 100,000 people");
        let m = master_tenprint(2, p);
        let gone = m.amputated[0];
        assert!(
            !capture(&m, &CaptureModel::default(), 1)
                .fingers
                .iter()
                .any(|f| f.position == gone)
        );
        let c = booking_capture(&m, Band::Livescan, 9);
        assert!(c.missing.contains(&(gone, Missing::Amputated)));
        assert!(!c.print.fingers.iter().any(|f| f.position == gone));
    }

    #[test]
    fn agencies_keep_their_mix_and_bands_parse() {
        assert_eq!(Mix::for_agency("TX0010000"), Mix::for_agency("TX0010000"));
        let cards = (0..400)
            .filter(|i| Mix::for_agency(&format!("TX{i:07}")) == Mix::CARD_AGENCY)
            .count();
        assert!(
            (60..=140).contains(&cards),
            "{cards} of 400 agencies on cards"
        );
        assert_eq!("poor".parse::<Band>(), Ok(Band::Poor));
        assert!("smudgy".parse::<Band>().unwrap_err().contains("livescan"));
    }
}
