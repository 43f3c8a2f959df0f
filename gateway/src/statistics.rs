//! Monthly interoperability statistics, as the program published them per state and per
//! jurisdiction: submissions, IDENT searches and matches, identifications of removable
//! people by criminal level (Level 1/2/3) or as non-criminal, and detainers issued.
//!
//! Every figure is a durable counter named `m/<YYYY-MM>/<jurisdiction>/<metric>`, added in the
//! same transaction that completes the submission (or issues the detainer), so the figures
//! survive restarts and count each booking exactly once. The month is the booking's month.
//! States and the nation are sums of their jurisdictions. Removals are not simulated, so they
//! are not reported.

use crate::policy::{Determination, Level, PolicyBook, Recommendation};
use chrono::{Datelike, NaiveDate};
use interop_proto::v1 as pb;
use std::collections::BTreeMap;

pub const SUBMISSIONS: &str = "submissions";
pub const IDENT_SEARCHES: &str = "ident_searches";
pub const MATCHES: &str = "matches";
pub const LEVEL1: &str = "id_level1";
pub const LEVEL2: &str = "id_level2";
pub const LEVEL3: &str = "id_level3";
pub const NON_CRIMINAL: &str = "id_non_criminal";
pub const DETAINERS_ISSUED: &str = "detainers_issued";

/// `YYYY-MM` of a date.
pub fn month(d: NaiveDate) -> String {
    format!("{:04}-{:02}", d.year(), d.month())
}

/// Whether a string is a month `YYYY-MM`.
pub fn valid_month(m: &str) -> bool {
    NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d").is_ok() && m.len() == 7
}

pub fn key(month: &str, jurisdiction: &str, metric: &str) -> String {
    format!("m/{month}/{jurisdiction}/{metric}")
}

/// The metrics one IDENT outcome adds to. An *identification* is a match of someone the
/// determination found removable (an enforcement recommendation was made), counted by
/// criminal level, or as non-criminal when they have no conviction.
pub fn outcome_metrics(hit: bool, d: &Determination) -> Vec<&'static str> {
    let mut m = vec![IDENT_SEARCHES];
    if hit {
        m.push(MATCHES);
    }
    if hit && d.recommendation != Recommendation::None {
        m.push(match d.level {
            Level::One => LEVEL1,
            Level::Two => LEVEL2,
            Level::Three => LEVEL3,
            Level::None => NON_CRIMINAL,
        });
    }
    m
}

fn add(row: &mut pb::StatsRow, metric: &str, n: u64) {
    match metric {
        SUBMISSIONS => row.submissions += n,
        IDENT_SEARCHES => row.ident_searches += n,
        MATCHES => row.matches += n,
        LEVEL1 => row.identified_level1 += n,
        LEVEL2 => row.identified_level2 += n,
        LEVEL3 => row.identified_level3 += n,
        NON_CRIMINAL => row.identified_non_criminal += n,
        DETAINERS_ISSUED => row.detainers_issued += n,
        _ => {}
    }
}

/// Builds the month's table from its counters (`m/<month>/...`): jurisdiction and state rows
/// for one state or all, and the national row.
pub fn table(
    policy: &PolicyBook,
    month: &str,
    counters: &BTreeMap<String, u64>,
    state: &str,
) -> pb::MonthlyStats {
    let prefix = format!("m/{month}/");
    let mut jurisdictions: BTreeMap<String, pb::StatsRow> = BTreeMap::new();
    for (k, n) in counters {
        let Some(rest) = k.strip_prefix(&prefix) else {
            continue;
        };
        let Some((jid, metric)) = rest.split_once('/') else {
            continue;
        };
        let Some(j) = policy.jurisdiction(jid) else {
            continue;
        };
        let row = jurisdictions
            .entry(jid.to_string())
            .or_insert_with(|| pb::StatsRow {
                state: j.state.clone(),
                jurisdiction_id: jid.to_string(),
                ..Default::default()
            });
        add(row, metric, *n);
    }
    let mut states: BTreeMap<String, pb::StatsRow> = BTreeMap::new();
    let mut national = pb::StatsRow::default();
    for row in jurisdictions.values() {
        let s = states
            .entry(row.state.clone())
            .or_insert_with(|| pb::StatsRow {
                state: row.state.clone(),
                ..Default::default()
            });
        for target in [s, &mut national] {
            target.submissions += row.submissions;
            target.ident_searches += row.ident_searches;
            target.matches += row.matches;
            target.identified_level1 += row.identified_level1;
            target.identified_level2 += row.identified_level2;
            target.identified_level3 += row.identified_level3;
            target.identified_non_criminal += row.identified_non_criminal;
            target.detainers_issued += row.detainers_issued;
        }
    }
    // The national row is always the whole country; the filter narrows the other rows.
    let keep = |r: &pb::StatsRow| state.is_empty() || r.state == state;
    pb::MonthlyStats {
        month: month.to_string(),
        jurisdictions: jurisdictions.into_values().filter(keep).collect(),
        states: states.into_values().filter(keep).collect(),
        national: Some(national),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::NonCriminal;

    fn det(level: Level, rec: Recommendation) -> Determination {
        Determination {
            status: None,
            level,
            non_criminal: vec![NonCriminal::Fugitive],
            recommendation: rec,
            discretion: false,
        }
    }

    #[test]
    fn identifications_are_removable_matches_by_level() {
        assert_eq!(
            outcome_metrics(false, &det(Level::One, Recommendation::None)),
            [IDENT_SEARCHES]
        );
        assert_eq!(
            outcome_metrics(true, &det(Level::One, Recommendation::None)),
            [IDENT_SEARCHES, MATCHES]
        );
        assert_eq!(
            outcome_metrics(true, &det(Level::Two, Recommendation::Detainer)),
            [IDENT_SEARCHES, MATCHES, LEVEL2]
        );
        assert_eq!(
            outcome_metrics(
                true,
                &det(Level::None, Recommendation::DetainerOnConviction)
            ),
            [IDENT_SEARCHES, MATCHES, NON_CRIMINAL]
        );
    }

    #[test]
    fn months() {
        assert_eq!(
            month(NaiveDate::from_ymd_opt(2011, 9, 30).unwrap()),
            "2011-09"
        );
        assert!(valid_month("2011-09"));
        for bad in ["2011-13", "2011-9", "201109", "", "2011-09-01"] {
            assert!(!valid_month(bad), "{bad}");
        }
    }
}
