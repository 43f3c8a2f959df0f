//! The synthetic world the gateway serves: states, county-level jurisdictions with their
//! interoperability policy, ICE field offices and their areas of responsibility, and the
//! records behind the two biometric galleries (FBI criminal history, DHS IDENT).
//!
//! `state-bureau-sim generate` writes a world directory; the gateway reads it. The ground
//! truth about the population (who each person really is) lives in a separate file the
//! gateway never opens, so nothing here can leak the answer into the pipeline.
//!
//! Files in a world directory:
//! - `world.json`: [`WorldFile`] — metadata, states, field offices, jurisdictions.
//! - `fbi-records.json`: [`CriminalRecord`]s, keyed by gallery subject id.
//! - `ident-records.json`: [`ImmigrationRecord`]s, keyed by gallery subject id.
//! - `fbi-gallery.bin`, `ident-gallery.bin`: enrolment templates (matcher gallery files).
//! - `truth.json`: the simulator's ground truth; its types are the simulator's
//!   (`state_bureau_sim::truth`), so nothing here can read it.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const WORLD_FILE: &str = "world.json";
pub const FBI_RECORDS_FILE: &str = "fbi-records.json";
pub const IDENT_RECORDS_FILE: &str = "ident-records.json";
pub const FBI_GALLERY_FILE: &str = "fbi-gallery.bin";
pub const IDENT_GALLERY_FILE: &str = "ident-gallery.bin";

/// Offence class of a charge or conviction (mirrors `interop.v1.OffenseClass`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Offense {
    AggravatedFelony,
    Felony,
    Misdemeanor,
    MinorTraffic,
    Dui,
    HitAndRun,
    RecklessDrivingInjury,
}

/// Immigration status on an IDENT record (mirrors `interop.v1.ImmigrationStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImmigrationStatus {
    UsCitizen,
    LawfulPermanentResident,
    LawfulStatus,
    VisaOverstay,
    UnlawfulEntry,
    PriorRemoval,
    Fugitive,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorldMeta {
    pub seed: u64,
    /// Size of the synthetic population.
    pub identities: u64,
    /// Format version of the world directory.
    pub version: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Two-letter postal code, also the first two letters of its agencies' ORIs.
    pub code: String,
    pub name: String,
    /// Relative population (people, for weighting bookings).
    pub population: u64,
    /// The state chose not to receive the identifications (a state that ended its agreement):
    /// none of its jurisdictions receive them. The documents insist this is not an opt-out of
    /// the program (seed 000). Worlds written before the rename say `opted_out`.
    #[serde(alias = "opted_out")]
    pub declines_results: bool,
    /// The state's systems can receive immigration responses electronically.
    pub can_receive_electronically: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldOffice {
    /// ICE ERO field-office code, e.g. "HOU"; also its client identity.
    pub code: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Jurisdiction {
    /// State code + three-digit county number, e.g. "TX201".
    pub id: String,
    pub name: String,
    pub state: String,
    /// The field office whose area of responsibility covers it.
    pub field_office: String,
    /// 9-character ORIs of the arresting agencies in it.
    pub agencies: Vec<String>,
    /// Relative population within its state.
    pub population: u64,
    /// When the interoperability capability was activated; `None` = not yet.
    pub activated_on: Option<NaiveDate>,
    /// The jurisdiction chose to receive immigration results itself.
    pub receives_results: bool,
    /// The jurisdiction's arrests in a year by race/ethnicity and offence class, as its
    /// agencies report them to the FBI's Uniform Crime Reporting program: the arrest-rate
    /// data the quarterly profiling review compares identifications against (seed 001).
    /// Absent from worlds generated before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrests: Option<ArrestData>,
}

/// Race/ethnicity as the review groups people: Hispanic (of any race, from the booking's
/// ethnicity code), else the booking's race code (NCIC: W, B, A, I).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    Hispanic,
    White,
    Black,
    AsianPacificIslander,
    AmericanIndian,
}

impl Group {
    pub const ALL: [Group; 5] = [
        Group::Hispanic,
        Group::White,
        Group::Black,
        Group::AsianPacificIslander,
        Group::AmericanIndian,
    ];

    /// The name used in counters, flags and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Hispanic => "hispanic",
            Group::White => "white",
            Group::Black => "black",
            Group::AsianPacificIslander => "asian_pacific_islander",
            Group::AmericanIndian => "american_indian",
        }
    }

    pub fn parse(s: &str) -> Option<Group> {
        Group::ALL.into_iter().find(|g| g.as_str() == s)
    }
}

/// One year of a jurisdiction's arrests (see [`Jurisdiction::arrests`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrestData {
    /// The reporting year.
    pub year: i32,
    pub groups: Vec<GroupArrests>,
}

/// Arrests of one race/ethnicity group by offence class: `serious` (felonies), `minor_traffic`
/// (arrests on minor traffic charges only), `other` (the rest: misdemeanours, DUI, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupArrests {
    pub group: Group,
    pub serious: u64,
    pub other: u64,
    pub minor_traffic: u64,
}

impl GroupArrests {
    pub fn total(&self) -> u64 {
        self.serious + self.other + self.minor_traffic
    }
}

/// `world.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorldFile {
    pub meta: WorldMeta,
    pub states: Vec<State>,
    pub field_offices: Vec<FieldOffice>,
    pub jurisdictions: Vec<Jurisdiction>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conviction {
    pub offense: Offense,
    pub convicted_on: NaiveDate,
}

/// An FBI rap sheet, attached to an FBI gallery subject.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CriminalRecord {
    pub fbi_number: String,
    pub prior_arrests: u32,
    pub convictions: Vec<Conviction>,
}

/// An IDENT record, attached to an IDENT gallery subject.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImmigrationRecord {
    /// Fingerprint identification number.
    pub fin: String,
    pub status: ImmigrationStatus,
    /// Last entry to the United States, if known (recent unlawful entrants).
    pub last_entry: Option<NaiveDate>,
    /// Who the record is of, as the federal database holds it (synthetic). Returned with an
    /// identification, never logged. Absent from worlds generated before it existed.
    #[serde(default)]
    pub biographics: Biographics,
}

/// Biographical information of an IDENT record (synthetic): what a receiving agency gets with
/// an identification, beside ICE's status determination (seed 001: "biographical information
/// from federal databases").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Biographics {
    pub name: String,
    pub date_of_birth: Option<NaiveDate>,
    /// `F` or `M`, as recorded.
    pub sex: String,
    pub place_of_birth: String,
}

/// `fbi-records.json` / `ident-records.json`: records by gallery subject id.
pub type Records<T> = BTreeMap<u64, T>;

/// Errors reading a world directory.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("world file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("world file {path}: {message}")]
    Format { path: PathBuf, message: String },
}

/// Reads and parses one JSON file of a world directory.
pub fn read_json<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> Result<T, WorldError> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(|source| WorldError::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| WorldError::Format {
        path,
        message: e.to_string(),
    })
}

/// Writes one JSON file of a world directory (pretty for world.json, compact otherwise);
/// deterministic: maps are ordered, so the same world gives the same bytes.
pub fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), WorldError> {
    let path = dir.join(name);
    let bytes = if name == WORLD_FILE {
        serde_json::to_vec_pretty(value)
    } else {
        serde_json::to_vec(value)
    }
    .map_err(|e| WorldError::Format {
        path: path.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&path, bytes).map_err(|source| WorldError::Io { path, source })
}
