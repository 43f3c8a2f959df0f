//! Bookings as JSON, the way people and scripts write them for `interop submit`, and the
//! way `state-bureau-sim bookings` exports them from a world (the simulator writes them with
//! [`BookingJson::from_pb`], which is why this is library code and not the command line's).
//!
//! ```json
//! {"tcn": "TX-20261125-000001", "ori": "TX2010000", "jurisdiction_id": "TX201",
//!  "booked_at": "2026-11-25T10:30:00Z",
//!  "charges": [{"code": "49.04", "class": "dui"}],
//!  "biographics": {"name": "…", "date_of_birth": "1990-04-01", "sex": "male",
//!                  "place_of_birth": "…", "race": "white", "ethnicity": "hispanic"},
//!  "fingers": [{"position": 1, "width": 500, "height": 600,
//!               "minutiae": [{"x": 120, "y": 200, "angle": 45, "kind": "ending",
//!                             "quality": 80}]}]}
//! ```
//!
//! Instead of `fingers`, `template_files` lists ISO/IEC 19794-2:2005 or ANSI INCITS
//! 378-2004 finger minutiae records (the format is detected), e.g. one file per finger;
//! relative paths are read from the JSON file's directory. One file is sent as it is (the
//! gateway decodes and checks it); several are decoded here, their finger views merged and
//! sent as one record in the first file's format. Unknown fields are refused, so a typo is
//! an error rather than a silently missing field. The gateway checks everything else; this
//! module only turns text into the wire message.

use anyhow::{Context, bail};
use interop_minutiae::formats::{self, Format};
use interop_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookingJson {
    pub tcn: String,
    pub ori: String,
    pub jurisdiction_id: String,
    /// RFC 3339, e.g. `2026-11-25T10:30:00Z`.
    pub booked_at: String,
    pub charges: Vec<ChargeJson>,
    pub biographics: BiographicsJson,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fingers: Vec<FingerJson>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub template_files: Vec<PathBuf>,
    /// Fingers the booking could not print: `{"position": 7, "reason": "amputated"}` (or
    /// `"unable_to_print"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_fingers: Vec<MissingFingerJson>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MissingFingerJson {
    pub position: u32,
    pub reason: MissingReasonJson,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingReasonJson {
    Amputated,
    UnableToPrint,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargeJson {
    pub code: String,
    pub class: OffenseJson,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OffenseJson {
    AggravatedFelony,
    Felony,
    Misdemeanor,
    MinorTraffic,
    Dui,
    HitAndRun,
    RecklessDrivingInjury,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BiographicsJson {
    pub name: String,
    /// YYYY-MM-DD.
    pub date_of_birth: String,
    pub sex: SexJson,
    #[serde(default)]
    pub place_of_birth: String,
    /// NCIC race code, as a word; absent = not recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub race: Option<RaceJson>,
    /// NCIC ethnicity code, as a word; absent = not recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ethnicity: Option<EthnicityJson>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RaceJson {
    White,
    Black,
    AsianPacificIslander,
    AmericanIndianAlaskaNative,
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EthnicityJson {
    Hispanic,
    NotHispanic,
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SexJson {
    Male,
    Female,
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FingerJson {
    /// 1..=10 (ANSI/NIST-ITL finger position).
    pub position: u32,
    pub width: u32,
    pub height: u32,
    #[serde(default = "default_ppi")]
    pub ppi: u32,
    pub minutiae: Vec<MinutiaJson>,
}

fn default_ppi() -> u32 {
    500
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinutiaJson {
    pub x: u32,
    pub y: u32,
    /// Whole degrees counter-clockwise from the x axis.
    pub angle: u32,
    pub kind: MinutiaKindJson,
    #[serde(default)]
    pub quality: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MinutiaKindJson {
    Ending,
    Bifurcation,
}

impl OffenseJson {
    fn to_pb(self) -> pb::OffenseClass {
        use pb::OffenseClass as C;
        match self {
            OffenseJson::AggravatedFelony => C::AggravatedFelony,
            OffenseJson::Felony => C::Felony,
            OffenseJson::Misdemeanor => C::Misdemeanor,
            OffenseJson::MinorTraffic => C::MinorTraffic,
            OffenseJson::Dui => C::Dui,
            OffenseJson::HitAndRun => C::HitAndRun,
            OffenseJson::RecklessDrivingInjury => C::RecklessDrivingInjury,
        }
    }

    fn from_pb(c: pb::OffenseClass) -> Option<OffenseJson> {
        use pb::OffenseClass as C;
        Some(match c {
            C::AggravatedFelony => OffenseJson::AggravatedFelony,
            C::Felony => OffenseJson::Felony,
            C::Misdemeanor => OffenseJson::Misdemeanor,
            C::MinorTraffic => OffenseJson::MinorTraffic,
            C::Dui => OffenseJson::Dui,
            C::HitAndRun => OffenseJson::HitAndRun,
            C::RecklessDrivingInjury => OffenseJson::RecklessDrivingInjury,
            C::Unspecified => return None,
        })
    }
}

impl BookingJson {
    /// Parses one booking; errors name the line and column of the problem.
    pub fn parse(text: &str) -> anyhow::Result<BookingJson> {
        Ok(serde_json::from_str(text)?)
    }

    /// The wire message. `base` is where relative template paths are read from.
    pub fn to_pb(&self, base: &Path) -> anyhow::Result<pb::Submission> {
        let booked_at = chrono::DateTime::parse_from_rfc3339(&self.booked_at)
            .with_context(|| {
                format!(
                    "booked_at {:?} is not an RFC 3339 time such as 2026-11-25T10:30:00Z",
                    self.booked_at
                )
            })?
            .with_timezone(&chrono::Utc);
        let (record, format) = match self.template_files.as_slice() {
            [] => (vec![], pb::MinutiaeRecordFormat::Unspecified),
            files => {
                if !self.fingers.is_empty() {
                    bail!("give fingers or template_files, not both");
                }
                merge_templates(base, files)?
            }
        };
        let sex = match self.biographics.sex {
            SexJson::Male => pb::Sex::Male,
            SexJson::Female => pb::Sex::Female,
            SexJson::Unknown => pb::Sex::Unknown,
        };
        Ok(pb::Submission {
            tcn: self.tcn.clone(),
            ori: self.ori.clone(),
            jurisdiction_id: self.jurisdiction_id.clone(),
            booked_at: Some(prost_types::Timestamp {
                seconds: booked_at.timestamp(),
                nanos: booked_at.timestamp_subsec_nanos() as i32,
            }),
            charges: self
                .charges
                .iter()
                .map(|c| pb::Charge {
                    code: c.code.clone(),
                    class: c.class.to_pb() as i32,
                })
                .collect(),
            biographics: Some(pb::Biographics {
                name: self.biographics.name.clone(),
                date_of_birth: self.biographics.date_of_birth.clone(),
                sex: sex as i32,
                place_of_birth: self.biographics.place_of_birth.clone(),
                race: match self.biographics.race {
                    None => pb::Race::Unspecified,
                    Some(RaceJson::White) => pb::Race::White,
                    Some(RaceJson::Black) => pb::Race::Black,
                    Some(RaceJson::AsianPacificIslander) => pb::Race::AsianPacificIslander,
                    Some(RaceJson::AmericanIndianAlaskaNative) => {
                        pb::Race::AmericanIndianAlaskaNative
                    }
                    Some(RaceJson::Unknown) => pb::Race::Unknown,
                } as i32,
                ethnicity: match self.biographics.ethnicity {
                    None => pb::Ethnicity::Unspecified,
                    Some(EthnicityJson::Hispanic) => pb::Ethnicity::Hispanic,
                    Some(EthnicityJson::NotHispanic) => pb::Ethnicity::NotHispanic,
                    Some(EthnicityJson::Unknown) => pb::Ethnicity::Unknown,
                } as i32,
            }),
            fingers: self
                .fingers
                .iter()
                .map(|f| pb::FingerRecord {
                    position: f.position,
                    image_width: f.width,
                    image_height: f.height,
                    resolution_ppi: f.ppi,
                    minutiae: f
                        .minutiae
                        .iter()
                        .map(|m| pb::Minutia {
                            x: m.x,
                            y: m.y,
                            angle_deg: m.angle,
                            r#type: match m.kind {
                                MinutiaKindJson::Ending => pb::MinutiaType::RidgeEnding,
                                MinutiaKindJson::Bifurcation => pb::MinutiaType::Bifurcation,
                            } as i32,
                            quality: m.quality,
                        })
                        .collect(),
                })
                .collect(),
            minutiae_record: record,
            minutiae_record_format: format as i32,
            missing_fingers: self
                .missing_fingers
                .iter()
                .map(|m| pb::MissingFinger {
                    position: m.position,
                    reason: match m.reason {
                        MissingReasonJson::Amputated => pb::MissingReason::Amputated,
                        MissingReasonJson::UnableToPrint => pb::MissingReason::UnableToPrint,
                    } as i32,
                })
                .collect(),
        })
    }

    /// The JSON form of a wire submission with inline fingers (what the simulator plans).
    pub fn from_pb(s: &pb::Submission) -> anyhow::Result<BookingJson> {
        let at = s.booked_at.unwrap_or_default();
        let booked_at = chrono::DateTime::from_timestamp(at.seconds, at.nanos.max(0) as u32)
            .context("booked_at out of range")?
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let bio = s.biographics.clone().unwrap_or_default();
        let sex = match bio.sex() {
            pb::Sex::Male => SexJson::Male,
            pb::Sex::Female => SexJson::Female,
            _ => SexJson::Unknown,
        };
        Ok(BookingJson {
            tcn: s.tcn.clone(),
            ori: s.ori.clone(),
            jurisdiction_id: s.jurisdiction_id.clone(),
            booked_at,
            charges: s
                .charges
                .iter()
                .map(|c| {
                    OffenseJson::from_pb(c.class())
                        .map(|class| ChargeJson {
                            code: c.code.clone(),
                            class,
                        })
                        .context("charge without an offence class")
                })
                .collect::<anyhow::Result<_>>()?,
            biographics: BiographicsJson {
                name: bio.name.clone(),
                date_of_birth: bio.date_of_birth.clone(),
                sex,
                place_of_birth: bio.place_of_birth.clone(),
                race: match bio.race() {
                    pb::Race::Unspecified => None,
                    pb::Race::White => Some(RaceJson::White),
                    pb::Race::Black => Some(RaceJson::Black),
                    pb::Race::AsianPacificIslander => Some(RaceJson::AsianPacificIslander),
                    pb::Race::AmericanIndianAlaskaNative => {
                        Some(RaceJson::AmericanIndianAlaskaNative)
                    }
                    pb::Race::Unknown => Some(RaceJson::Unknown),
                },
                ethnicity: match bio.ethnicity() {
                    pb::Ethnicity::Unspecified => None,
                    pb::Ethnicity::Hispanic => Some(EthnicityJson::Hispanic),
                    pb::Ethnicity::NotHispanic => Some(EthnicityJson::NotHispanic),
                    pb::Ethnicity::Unknown => Some(EthnicityJson::Unknown),
                },
            },
            fingers: s
                .fingers
                .iter()
                .map(|f| FingerJson {
                    position: f.position,
                    width: f.image_width,
                    height: f.image_height,
                    ppi: f.resolution_ppi,
                    minutiae: f
                        .minutiae
                        .iter()
                        .map(|m| MinutiaJson {
                            x: m.x,
                            y: m.y,
                            angle: m.angle_deg,
                            kind: if m.r#type() == pb::MinutiaType::Bifurcation {
                                MinutiaKindJson::Bifurcation
                            } else {
                                MinutiaKindJson::Ending
                            },
                            quality: m.quality,
                        })
                        .collect(),
                })
                .collect(),
            template_files: vec![],
            missing_fingers: s
                .missing_fingers
                .iter()
                .map(|m| {
                    let reason = match m.reason() {
                        pb::MissingReason::Amputated => MissingReasonJson::Amputated,
                        pb::MissingReason::UnableToPrint => MissingReasonJson::UnableToPrint,
                        pb::MissingReason::Unspecified => {
                            bail!("missing finger {} without a reason", m.position)
                        }
                    };
                    Ok(MissingFingerJson {
                        position: m.position,
                        reason,
                    })
                })
                .collect::<anyhow::Result<_>>()?,
        })
    }
}

/// Reads template files: one is sent as it is, several are merged into one record.
fn merge_templates(
    base: &Path,
    files: &[PathBuf],
) -> anyhow::Result<(Vec<u8>, pb::MinutiaeRecordFormat)> {
    let wire = |f: Format| match f {
        Format::Iso19794_2 => pb::MinutiaeRecordFormat::Iso1979422005,
        Format::Ansi378 => pb::MinutiaeRecordFormat::Ansi3782004,
    };
    let mut first = None;
    let mut fingers = vec![];
    let mut only = vec![];
    for f in files {
        let path = base.join(f);
        let bytes = std::fs::read(&path)
            .with_context(|| format!("reading template file {}", path.display()))?;
        let format = formats::detect(&bytes).with_context(|| {
            format!(
                "template file {} is neither an ISO/IEC 19794-2 nor an ANSI 378 record",
                path.display()
            )
        })?;
        let views = formats::decode(format, &bytes)
            .with_context(|| format!("template file {} ({format})", path.display()))?;
        first.get_or_insert(format);
        fingers.extend(views);
        only = bytes;
    }
    let format = first.context("no template files")?;
    if files.len() == 1 {
        return Ok((only, wire(format)));
    }
    let merged = formats::encode(format, &fingers).context("merging the template files")?;
    Ok((merged, wire(format)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> &'static str {
        r#"{"tcn":"TX-0000000001","ori":"TX2010000","jurisdiction_id":"TX201",
            "booked_at":"2026-11-25T10:30:00Z",
            "charges":[{"code":"49.04","class":"dui"}],
            "biographics":{"name":"A B","date_of_birth":"1990-04-01","sex":"male"},
            "fingers":[{"position":1,"width":500,"height":600,
              "minutiae":[{"x":1,"y":2,"angle":45,"kind":"bifurcation","quality":80}]}]}"#
    }

    #[test]
    fn json_round_trips_through_the_wire_message() {
        let b = BookingJson::parse(sample()).unwrap();
        let pb = b.to_pb(Path::new(".")).unwrap();
        assert_eq!(pb.charges[0].class(), pb::OffenseClass::Dui);
        assert_eq!(pb.fingers[0].resolution_ppi, 500);
        assert_eq!(
            pb.fingers[0].minutiae[0].r#type(),
            pb::MinutiaType::Bifurcation
        );
        assert_eq!(BookingJson::from_pb(&pb).unwrap(), BookingJson { ..b });
    }

    /// Missing fingers travel both ways with their reason; an unknown reason is refused,
    /// naming it.
    #[test]
    fn missing_fingers_round_trip_with_their_reason() {
        let text = sample().replace(
            "\"fingers\":",
            "\"missing_fingers\":[{\"position\":7,\"reason\":\"amputated\"},{\"position\":9,\"reason\":\"unable_to_print\"}],\"fingers\":",
        );
        let b = BookingJson::parse(&text).unwrap();
        let pb = b.to_pb(Path::new(".")).unwrap();
        assert_eq!(pb.missing_fingers.len(), 2);
        assert_eq!(pb.missing_fingers[0].position, 7);
        assert_eq!(pb.missing_fingers[0].reason(), pb::MissingReason::Amputated);
        assert_eq!(
            pb.missing_fingers[1].reason(),
            pb::MissingReason::UnableToPrint
        );
        assert_eq!(BookingJson::from_pb(&pb).unwrap(), b);
        let bad = text.replace("\"amputated\"", "\"lost\"");
        let e = BookingJson::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("lost") && e.contains("line"), "{e}");
    }

    #[test]
    fn typos_and_bad_values_are_errors_that_say_where() {
        let typo = sample().replace("\"ori\"", "\"orri\"");
        let e = BookingJson::parse(&typo).unwrap_err().to_string();
        assert!(e.contains("unknown field `orri`"), "{e}");
        // The booking carries no victim or witness flag (seed 000: no change to the customary
        // booking process; victims reach ICE through LESC notices): a file that still sets
        // it is refused, naming the field, rather than silently ignored.
        let flag = sample().replace("\"ori\"", "\"victim_or_witness\": true, \"ori\"");
        let e = BookingJson::parse(&flag).unwrap_err().to_string();
        assert!(e.contains("unknown field `victim_or_witness`"), "{e}");
        let class = sample().replace("\"dui\"", "\"jaywalking\"");
        let e = BookingJson::parse(&class).unwrap_err().to_string();
        assert!(e.contains("jaywalking") && e.contains("line"), "{e}");
        let time = sample().replace("2026-11-25T10:30:00Z", "yesterday");
        let e = BookingJson::parse(&time)
            .unwrap()
            .to_pb(Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.contains("booked_at"), "{e}");
    }

    #[test]
    fn per_finger_template_files_are_merged_into_one_record() {
        use interop_minutiae::template::{FingerTemplate, Minutia, MinutiaKind};
        let dir = tempfile::tempdir().unwrap();
        let finger = |position| FingerTemplate {
            position,
            width: 400,
            height: 500,
            minutiae: vec![Minutia {
                x: 10,
                y: 20,
                angle_deg: 90,
                kind: MinutiaKind::Ending,
                quality: 60,
            }],
        };
        for p in 1..=2u8 {
            let rec = formats::encode(Format::Ansi378, &[finger(p)]).unwrap();
            std::fs::write(dir.path().join(format!("f{p}.ansi")), rec).unwrap();
        }
        let mut b = BookingJson::parse(sample()).unwrap();
        b.fingers.clear();
        b.template_files = vec!["f1.ansi".into(), "f2.ansi".into()];
        let pb = b.to_pb(dir.path()).unwrap();
        assert_eq!(
            pb.minutiae_record_format(),
            pb::MinutiaeRecordFormat::Ansi3782004
        );
        let views = formats::decode(Format::Ansi378, &pb.minutiae_record).unwrap();
        assert_eq!(views.iter().map(|v| v.position).collect::<Vec<_>>(), [1, 2]);

        std::fs::write(dir.path().join("junk.iso"), b"not a record").unwrap();
        b.template_files = vec!["junk.iso".into()];
        let e = format!("{:#}", b.to_pb(dir.path()).unwrap_err());
        assert!(e.contains("junk.iso"), "{e}");
    }
}
