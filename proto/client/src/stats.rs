//! The monthly interoperability statistics table, as the program published it: per
//! jurisdiction, per state and national, the bookings of one month with their IDENT searches,
//! matches, identifications by level, detainers recommended and what the field offices
//! decided (detainers, no action, discretion), LESC notices, detainers lifted, and removals
//! (in all and by the categories the documents report them in).
//!
//! One renderer for every program that prints it (`interop admin stats` is the command line's
//! way to), so the columns, their names and their order are the same wherever the table
//! appears, in each of the three forms people ask for: an aligned table to read, CSV for a
//! spreadsheet, JSON for a script. `minor_traffic_only_arrests` is not a column: it feeds the
//! quarterly review's outlier test, not the published table.

use interop_proto::v1 as pb;
use std::fmt::Write;

/// How [`render_monthly_stats`] writes the figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsFormat {
    /// A title line, a header, then one aligned row per jurisdiction, state and the nation.
    Table,
    /// `month,kind,state,jurisdiction_id,` and the columns, one line per row.
    Csv,
    /// One pretty-printed document: `{"month": ..., "rows": [{"kind": ..., ...}]}`.
    Json,
}

/// The figures of a row, in the order of [`COLUMNS`].
const COLUMNS: [&str; 19] = [
    "submissions",
    "ident_searches",
    "matches",
    "level1",
    "level2",
    "level3",
    "non_criminal",
    "recommended",
    "detainers",
    "no_action",
    "discretion",
    "lesc_notices",
    "lifted",
    "removals",
    "removed_level1",
    "removed_level2",
    "removed_level3",
    "removed_non_criminal_priority",
    "removed_outside_priorities",
];

fn figures(r: &pb::StatsRow) -> [u64; 19] {
    [
        r.submissions,
        r.ident_searches,
        r.matches,
        r.identified_level1,
        r.identified_level2,
        r.identified_level3,
        r.identified_non_criminal,
        r.detainers_recommended,
        r.detainers_issued,
        r.decided_no_action,
        r.decided_discretion,
        r.lesc_notices,
        r.detainers_lifted,
        r.removals,
        r.removed_level1,
        r.removed_level2,
        r.removed_level3,
        r.removed_non_criminal_priority,
        r.removed_outside_priorities,
    ]
}

/// The month's statistics as text: its jurisdictions' rows, its states', then the nation's
/// (`kind` is `jurisdiction`, `state` or `national`), ending with a newline.
pub fn render_monthly_stats(s: &pb::MonthlyStats, format: StatsFormat) -> String {
    let national = s.national.clone().unwrap_or_default();
    let rows = s
        .jurisdictions
        .iter()
        .map(|r| ("jurisdiction", r))
        .chain(s.states.iter().map(|r| ("state", r)))
        .chain(std::iter::once(("national", &national)));
    let mut out = String::new();
    match format {
        StatsFormat::Json => {
            let rows: Vec<serde_json::Value> = rows
                .map(|(kind, r)| {
                    let mut m = serde_json::Map::new();
                    m.insert("kind".into(), kind.into());
                    m.insert("state".into(), r.state.clone().into());
                    m.insert("jurisdiction_id".into(), r.jurisdiction_id.clone().into());
                    for (h, v) in COLUMNS.iter().zip(figures(r)) {
                        m.insert(h.to_string(), v.into());
                    }
                    serde_json::Value::Object(m)
                })
                .collect();
            let doc = serde_json::json!({ "month": s.month, "rows": rows });
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&doc).unwrap_or_default()
            );
        }
        StatsFormat::Csv => {
            let _ = writeln!(
                out,
                "month,kind,state,jurisdiction_id,{}",
                COLUMNS.join(",")
            );
            for (kind, r) in rows {
                let v: Vec<String> = figures(r).iter().map(|x| x.to_string()).collect();
                let _ = writeln!(
                    out,
                    "{},{kind},{},{},{}",
                    s.month,
                    r.state,
                    r.jurisdiction_id,
                    v.join(",")
                );
            }
        }
        StatsFormat::Table => {
            let _ = writeln!(out, "interoperability statistics, bookings of {}", s.month);
            let _ = write!(out, "{:<13} {:<6} {:<8}", "", "state", "juris.");
            // Each column as wide as its name, and room for ten digits.
            let width = |h: &str| h.len().max(10);
            for h in COLUMNS {
                let _ = write!(out, " {h:>w$}", w = width(h));
            }
            let _ = writeln!(out);
            for (kind, r) in rows {
                let _ = write!(out, "{kind:<13} {:<6} {:<8}", r.state, r.jurisdiction_id);
                for (h, v) in COLUMNS.iter().zip(figures(r)) {
                    let _ = write!(out, " {v:>w$}", w = width(h));
                }
                let _ = writeln!(out);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn june() -> pb::MonthlyStats {
        let row = |state: &str, j: &str, base: u64| pb::StatsRow {
            state: state.into(),
            jurisdiction_id: j.into(),
            submissions: base,
            ident_searches: base - 1,
            matches: 2,
            identified_level1: 1,
            identified_level2: 0,
            identified_level3: 0,
            identified_non_criminal: 1,
            detainers_issued: 1,
            removals: 3,
            removed_level1: 2,
            removed_outside_priorities: 1,
            minor_traffic_only_arrests: 9,
            detainers_recommended: 2,
            ..Default::default()
        };
        pb::MonthlyStats {
            month: "2011-06".into(),
            jurisdictions: vec![row("TX", "TX201", 5)],
            states: vec![row("TX", "", 5)],
            national: Some(row("", "", 7)),
        }
    }

    #[test]
    fn every_form_has_every_row_and_the_same_columns() {
        let s = june();
        let csv = render_monthly_stats(&s, StatsFormat::Csv);
        assert_eq!(
            csv,
            "month,kind,state,jurisdiction_id,submissions,ident_searches,matches,level1,level2,\
             level3,non_criminal,recommended,detainers,no_action,discretion,lesc_notices,lifted,\
             removals,removed_level1,removed_level2,removed_level3,removed_non_criminal_priority,\
             removed_outside_priorities\n\
             2011-06,jurisdiction,TX,TX201,5,4,2,1,0,0,1,2,1,0,0,0,0,3,2,0,0,0,1\n\
             2011-06,state,TX,,5,4,2,1,0,0,1,2,1,0,0,0,0,3,2,0,0,0,1\n\
             2011-06,national,,,7,6,2,1,0,0,1,2,1,0,0,0,0,3,2,0,0,0,1\n"
        );

        let table = render_monthly_stats(&s, StatsFormat::Table);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "interoperability statistics, bookings of 2011-06");
        assert_eq!(lines.len(), 5, "{table}");
        let header: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(header[..2], ["state", "juris."]);
        assert_eq!(header[2..], COLUMNS);
        // Aligned: every line as wide as the header.
        assert!(
            lines[2..].iter().all(|l| l.len() == lines[1].len()),
            "{table}"
        );
        assert_eq!(
            lines[4].split_whitespace().collect::<Vec<_>>(),
            [
                "national", "7", "6", "2", "1", "0", "0", "1", "2", "1", "0", "0", "0", "0", "3",
                "2", "0", "0", "0", "1"
            ]
        );

        let json: serde_json::Value =
            serde_json::from_str(&render_monthly_stats(&s, StatsFormat::Json)).unwrap();
        assert_eq!(json["month"], "2011-06");
        let rows = json["rows"].as_array().unwrap();
        let kinds: Vec<&str> = rows.iter().map(|r| r["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["jurisdiction", "state", "national"]);
        assert_eq!(rows[0]["jurisdiction_id"], "TX201");
        assert_eq!(rows[2]["submissions"], 7);
        assert_eq!(rows[2]["non_criminal"], 1);
        assert_eq!(rows[2]["removed_outside_priorities"], 1);
    }

    #[test]
    fn a_month_with_nothing_still_has_its_national_row() {
        let empty = pb::MonthlyStats {
            month: "1999-01".into(),
            ..Default::default()
        };
        let csv = render_monthly_stats(&empty, StatsFormat::Csv);
        assert_eq!(
            csv.lines().nth(1),
            Some("1999-01,national,,,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0")
        );
    }
}
