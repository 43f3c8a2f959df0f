//! The population's ground truth (`truth.json` in a world directory): who each synthetic
//! person really is. Only the simulator reads it, to plan bookings and check every answer;
//! the gateway never opens it, and its types live here so the gateway cannot.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// The ground-truth file of a world directory.
pub const TRUTH_FILE: &str = "truth.json";

/// One synthetic person, as the simulator knows them (`truth.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Person {
    /// Person id; with the world seed it determines the person's fingers.
    pub id: u64,
    pub state: String,
    pub jurisdiction: String,
    /// FBI gallery subject id, if the person has a criminal record.
    pub fbi_subject: Option<u64>,
    /// IDENT gallery subject id, if the person had prior immigration contact.
    pub ident_subject: Option<u64>,
    /// Synthetic biographics (never logged by the gateway).
    pub name: String,
    pub date_of_birth: NaiveDate,
    pub female: bool,
    pub place_of_birth: String,
    /// Race/ethnicity group (recorded on bookings as NCIC race and ethnicity codes). Absent
    /// from worlds generated before it existed: then none is recorded.
    #[serde(default)]
    pub group: Option<interop_gateway::world::Group>,
}

/// `truth.json`: the simulator's ground truth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    pub people: Vec<Person>,
    /// The planted policing patterns the profiling review must find (or not).
    #[serde(default)]
    pub profiling: crate::profiling::Profiling,
}
