//! Monthly interoperability statistics, as the program published them per state and per
//! jurisdiction: submissions, IDENT searches and matches, identifications of removable
//! people by criminal level (Level 1/2/3) or as non-criminal, and detainers issued.
//!
//! Every figure is a durable counter named `m/<YYYY-MM>/<jurisdiction>/<metric>`, added in the
//! same transaction that completes the submission (or issues the detainer), so the figures
//! survive restarts and count each booking exactly once. The month is the booking's month.
//! States and the nation are sums of their jurisdictions. Removals are those field offices
//! record (`FieldOfficeService.RecordRemoval`; in the demo, the simulator's offices).

use crate::error::GatewayError;
use crate::rules::policy::{Determination, Level, PolicyBook, Recommendation};
use crate::store::DynStore;
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
/// Identifications whose automated recommendation was a detainer: advice, counted apart from
/// what the offices decided (`detainers_issued`, `decided_no_action`, `decided_discretion`).
pub const DETAINERS_RECOMMENDED: &str = "detainers_recommended";
pub const DECIDED_NO_ACTION: &str = "decided_no_action";
pub const DECIDED_DISCRETION: &str = "decided_discretion";
/// LESC notices about people under detainers, by the booking's month and jurisdiction.
pub const LESC_NOTICES: &str = "lesc_notices";
pub const DETAINERS_LIFTED: &str = "detainers_lifted";
/// Removals recorded by field offices (the simulator plays their part).
pub const REMOVALS: &str = "removals";
/// Removals by the categories the documents report them in (see [`removal_category`]).
pub const REMOVED_LEVEL1: &str = "removed_level1";
pub const REMOVED_LEVEL2: &str = "removed_level2";
pub const REMOVED_LEVEL3: &str = "removed_level3";
pub const REMOVED_NON_CRIMINAL_PRIORITY: &str = "removed_non_criminal_priority";
pub const REMOVED_OUTSIDE_PRIORITIES: &str = "removed_outside_priorities";
/// Bookings whose every charge is a minor traffic offence (for the outlier review).
pub const MINOR_TRAFFIC_ONLY: &str = "minor_traffic_only";

/// `YYYY-MM` of a date.
pub fn month(d: NaiveDate) -> String {
    format!("{:04}-{:02}", d.year(), d.month())
}

/// Whether a string is a month `YYYY-MM`.
pub fn valid_month(m: &str) -> bool {
    NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d").is_ok() && m.len() == 7
}

/// The first quarter the review covers: fiscal year 2011's third (seed 001: "The data review
/// process initiated with data from the third quarter of fiscal year 2011 (April 1-June 30,
/// 2011)").
pub const FIRST_REVIEWED_QUARTER: (i32, u32) = (2011, 3);

/// The first month (year, month) of fiscal quarter `q` of fiscal year `fy`: the federal fiscal
/// year `fy` runs from October of `fy - 1` to September of `fy`, so Q1 is October–December of
/// the year before and Q3 is April–June.
pub fn fiscal_quarter_start(fy: i32, q: u32) -> (i32, u32) {
    if q == 1 {
        (fy - 1, 10)
    } else {
        (fy, 3 * q - 5)
    }
}

/// The months of a review period: a fiscal quarter `FYyyyyQn` (from FY2011Q3 on), or
/// `from..=to` (both `YYYY-MM`, at most 36 months). `Err` names the field at fault.
pub fn period(
    quarter: &str,
    from: &str,
    to: &str,
) -> Result<Vec<String>, (&'static str, &'static str)> {
    let (from, to) = if !quarter.is_empty() {
        let q = quarter.as_bytes();
        let ok = q.len() == 8
            && quarter.starts_with("FY")
            && q[6] == b'Q'
            && (b'1'..=b'4').contains(&q[7])
            && quarter[2..6].bytes().all(|b| b.is_ascii_digit());
        if !ok {
            return Err((
                "quarter",
                "must be a fiscal quarter FYyyyyQn with n 1..=4 (FY2012Q1 is October-December 2011)",
            ));
        }
        let fy: i32 = quarter[2..6].parse().expect("checked");
        let n = u32::from(q[7] - b'0');
        if (fy, n) < FIRST_REVIEWED_QUARTER {
            return Err((
                "quarter",
                "is before the review began: FY2011Q3 (April-June 2011) is the first",
            ));
        }
        let (y, m) = fiscal_quarter_start(fy, n);
        let first =
            NaiveDate::from_ymd_opt(y, m, 1).ok_or(("quarter", "is not a valid quarter"))?;
        (
            first,
            first
                .checked_add_months(chrono::Months::new(2))
                .ok_or(("quarter", "is not a valid quarter"))?,
        )
    } else {
        let parse = |m: &str, field| {
            if valid_month(m) {
                Ok(NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d").expect("valid"))
            } else {
                Err((field, "must be YYYY-MM"))
            }
        };
        (parse(from, "from_month")?, parse(to, "to_month")?)
    };
    let mut out = Vec::new();
    let mut d = from;
    while d <= to {
        out.push(month(d));
        if out.len() > 36 {
            return Err(("to_month", "the period is longer than 36 months"));
        }
        d = d
            .checked_add_months(chrono::Months::new(1))
            .expect("date in range");
    }
    if out.is_empty() {
        return Err(("to_month", "is before from_month"));
    }
    Ok(out)
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
        m.push(DETAINERS_RECOMMENDED);
    }
    m
}

/// The profiling review's counters live apart from the monthly statistics, under
/// `r/<YYYY-MM>/<jurisdiction>/<metric>`, so a review reads only them: as many as the
/// jurisdictions and groups with identifications, not every statistic of every jurisdiction.
pub fn review_key(month: &str, jurisdiction: &str, metric: &str) -> String {
    format!("r/{month}/{jurisdiction}/{metric}")
}

/// Identifications by race/ethnicity group (`idg_<group>`), those arrested on minor traffic
/// charges only (`idg_<group>_mt`), and identifications with no race/ethnicity recorded.
pub const GROUP_PREFIX: &str = "idg_";
pub const GROUP_MINOR_SUFFIX: &str = "_mt";
pub const GROUP_UNRECORDED: &str = "idg_unrecorded";

/// The review metrics one identification adds to (seed 001: "data for aliens identified by
/// the program"): its group's, or the unrecorded count.
pub fn group_metrics(group: Option<crate::world::Group>, minor_traffic_only: bool) -> Vec<String> {
    let Some(group) = group else {
        return vec![GROUP_UNRECORDED.to_string()];
    };
    let all = format!("{GROUP_PREFIX}{}", group.as_str());
    let mut m = vec![all.clone()];
    if minor_traffic_only {
        m.push(format!("{all}{GROUP_MINOR_SUFFIX}"));
    }
    m
}

/// The category a removal is reported in, as the documents report removals: convicted
/// people by the memo's level ("more than 166,000 immigrants convicted of crimes ... more than
/// 61,000 ... aggravated felony (level 1) offenses", seed 000); the rest by whether they fell
/// within ICE's non-criminal priorities, recent illegal entrants, repeat violators and
/// fugitives ("94 percent of all removals identified through Secure Communities fell within
/// these stated priorities", seed 001), or outside them (its footnote 4: entry without
/// inspection, overstays, visa violations, and convictions not in the records at the time).
/// The level and priorities are those of the identification: the records as they stood.
pub fn removal_category(outcome: &pb::IdentOutcome) -> &'static str {
    match pb::PriorityLevel::try_from(outcome.priority_level) {
        Ok(pb::PriorityLevel::PriorityLevel1) => REMOVED_LEVEL1,
        Ok(pb::PriorityLevel::PriorityLevel2) => REMOVED_LEVEL2,
        Ok(pb::PriorityLevel::PriorityLevel3) => REMOVED_LEVEL3,
        _ if outcome
            .non_criminal_priorities
            .iter()
            .any(|p| *p != pb::NonCriminalPriority::Unspecified as i32) =>
        {
            REMOVED_NON_CRIMINAL_PRIORITY
        }
        _ => REMOVED_OUTSIDE_PRIORITIES,
    }
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
        MINOR_TRAFFIC_ONLY => row.minor_traffic_only_arrests += n,
        REMOVALS => row.removals += n,
        DETAINERS_RECOMMENDED => row.detainers_recommended += n,
        DECIDED_NO_ACTION => row.decided_no_action += n,
        DECIDED_DISCRETION => row.decided_discretion += n,
        LESC_NOTICES => row.lesc_notices += n,
        DETAINERS_LIFTED => row.detainers_lifted += n,
        REMOVED_LEVEL1 => row.removed_level1 += n,
        REMOVED_LEVEL2 => row.removed_level2 += n,
        REMOVED_LEVEL3 => row.removed_level3 += n,
        REMOVED_NON_CRIMINAL_PRIORITY => row.removed_non_criminal_priority += n,
        REMOVED_OUTSIDE_PRIORITIES => row.removed_outside_priorities += n,
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
            target.minor_traffic_only_arrests += row.minor_traffic_only_arrests;
            target.removals += row.removals;
            target.detainers_recommended += row.detainers_recommended;
            target.decided_no_action += row.decided_no_action;
            target.decided_discretion += row.decided_discretion;
            target.lesc_notices += row.lesc_notices;
            target.detainers_lifted += row.detainers_lifted;
            target.removed_level1 += row.removed_level1;
            target.removed_level2 += row.removed_level2;
            target.removed_level3 += row.removed_level3;
            target.removed_non_criminal_priority += row.removed_non_criminal_priority;
            target.removed_outside_priorities += row.removed_outside_priorities;
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

/// `AdminService.GetMonthlyStats`: the table of `r.month` (every state, or `r.state` only),
/// from the durable counters.
pub async fn monthly(
    store: &DynStore,
    policy: &PolicyBook,
    r: &pb::GetMonthlyStatsRequest,
) -> Result<pb::MonthlyStats, GatewayError> {
    if !valid_month(&r.month) {
        return Err(GatewayError::invalid("month", "must be YYYY-MM"));
    }
    if !r.state.is_empty() && !policy.has_state(&r.state) {
        return Err(GatewayError::NotFound(format!(
            "state: unknown state {:?}",
            r.state
        )));
    }
    let counters = store
        .counters_with_prefix(format!("m/{}/", r.month))
        .await?;
    Ok(table(policy, &r.month, &counters, &r.state))
}

/// The review's figures per jurisdiction, summed over the months' counters.
pub fn review_figures(
    counters: &BTreeMap<String, u64>,
) -> BTreeMap<String, crate::rules::review::Figures> {
    let mut out: BTreeMap<String, crate::rules::review::Figures> = BTreeMap::new();
    for (k, n) in counters {
        let mut parts = k.splitn(4, '/');
        let (Some("r"), Some(_month), Some(jid), Some(metric)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let f = out.entry(jid.to_string()).or_default();
        match metric {
            GROUP_UNRECORDED => f.identifications += n,
            crate::rules::complaints::FILED_PROFILING => f.profiling_complaints += n,
            m => {
                let Some(g) = m.strip_prefix(GROUP_PREFIX) else {
                    continue;
                };
                let (g, minor) = match g.strip_suffix(GROUP_MINOR_SUFFIX) {
                    Some(g) => (g, true),
                    None => (g, false),
                };
                if let Some(g) = crate::world::Group::parse(g) {
                    let e = f.by_group.entry(g).or_default();
                    if minor {
                        e.0 += n;
                    } else {
                        e.1 += n;
                        f.identifications += n;
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::policy::NonCriminal;

    fn det(level: Level, rec: Recommendation) -> Determination {
        Determination {
            status: None,
            level,
            non_criminal: vec![NonCriminal::Fugitive],
            recommendation: rec,
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
            [IDENT_SEARCHES, MATCHES, LEVEL2, DETAINERS_RECOMMENDED]
        );
        assert_eq!(
            outcome_metrics(
                true,
                &det(Level::None, Recommendation::DetainerOnConviction)
            ),
            [IDENT_SEARCHES, MATCHES, NON_CRIMINAL, DETAINERS_RECOMMENDED]
        );
    }

    #[test]
    fn removals_are_reported_by_level_then_by_non_criminal_priority() {
        let outcome = |level: pb::PriorityLevel, nc: &[pb::NonCriminalPriority]| pb::IdentOutcome {
            priority_level: level as i32,
            non_criminal_priorities: nc.iter().map(|p| *p as i32).collect(),
            ..Default::default()
        };
        use pb::NonCriminalPriority as Nc;
        use pb::PriorityLevel as L;
        // A conviction level wins over any non-criminal priority.
        assert_eq!(
            removal_category(&outcome(L::PriorityLevel1, &[Nc::ImmigrationFugitive])),
            REMOVED_LEVEL1
        );
        assert_eq!(
            removal_category(&outcome(L::PriorityLevel2, &[])),
            REMOVED_LEVEL2
        );
        assert_eq!(
            removal_category(&outcome(L::PriorityLevel3, &[])),
            REMOVED_LEVEL3
        );
        assert_eq!(
            removal_category(&outcome(L::None, &[Nc::RecentUnlawfulEntrant])),
            REMOVED_NON_CRIMINAL_PRIORITY
        );
        // An overstay with no conviction and no priority: footnote 4's remainder.
        assert_eq!(
            removal_category(&outcome(L::None, &[])),
            REMOVED_OUTSIDE_PRIORITIES
        );
        assert_eq!(
            removal_category(&outcome(L::Unspecified, &[Nc::Unspecified])),
            REMOVED_OUTSIDE_PRIORITIES
        );
    }

    #[test]
    fn review_periods() {
        // Hand-computed fiscal quarters: FY2011 Q3 is April-June 2011 (seed 001), FY2012 Q1
        // October-December 2011, FY2011 Q4 July-September 2011, FY2013 Q2 January-March 2013.
        assert_eq!(
            period("FY2011Q3", "", "").unwrap(),
            ["2011-04", "2011-05", "2011-06"]
        );
        assert_eq!(
            period("FY2012Q1", "", "").unwrap(),
            ["2011-10", "2011-11", "2011-12"]
        );
        assert_eq!(
            period("FY2011Q4", "", "").unwrap(),
            ["2011-07", "2011-08", "2011-09"]
        );
        assert_eq!(
            period("FY2013Q2", "", "").unwrap(),
            ["2013-01", "2013-02", "2013-03"]
        );
        // Before the review began, a calendar quarter, and malformed ones are refused.
        for bad in [
            "FY2011Q2", "FY2010Q4", "2011Q3", "FY2011Q5", "FY11Q3", "fy2011q3",
        ] {
            assert_eq!(period(bad, "", "").unwrap_err().0, "quarter", "{bad}");
        }
        assert_eq!(period("", "2011-11", "2012-02").unwrap().len(), 4);
        assert_eq!(
            period("", "2011-13", "2012-01").unwrap_err().0,
            "from_month"
        );
        assert_eq!(period("", "2012-01", "2011-01").unwrap_err().0, "to_month");
        assert_eq!(period("", "2000-01", "2011-01").unwrap_err().0, "to_month");
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
