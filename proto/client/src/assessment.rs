//! The quarterly assessment as DOJ receives it: one JSON document and one self-contained HTML
//! page (no script, no external resource), rendered from the stored assessment
//! (`AdminService.GetAssessment`). Figures only: counts by jurisdiction and race/ethnicity
//! group, never a person.

use interop_proto::v1 as pb;
use serde_json::{Value, json};
use std::fmt::Write as _;

fn test_json(f: &pb::OutlierFlag) -> Value {
    json!({
        "jurisdiction_id": f.jurisdiction_id, "state": f.state, "group": f.group,
        "measure": f.measure, "count": f.count, "trials": f.trials, "rate": f.rate,
        "arrest_rate": f.arrest_rate, "common_odds_ratio": f.common_odds_ratio,
        "expected_rate": f.expected_rate, "p_value": f.p_value,
        "power_at_double_odds": f.power_at_double_odds,
        "profiling_complaints": f.profiling_complaints,
    })
}

/// A review as JSON.
pub fn review_json(r: &pb::OutlierReview) -> Value {
    json!({
        "from_month": r.from_month, "to_month": r.to_month, "method": r.method,
        "tests": r.tests, "powered_tests": r.powered_tests,
        "false_discovery_rate": r.false_discovery_rate, "min_trials": r.min_trials,
        "identifications": r.identifications,
        "untested_no_group": r.untested_no_group,
        "untested_no_arrest_data": r.untested_no_arrest_data,
        "flags": r.flags.iter().map(test_json).collect::<Vec<_>>(),
        "tested": r.tested.iter().map(test_json).collect::<Vec<_>>(),
        "figures": r.figures.iter().map(|f| json!({
            "jurisdiction_id": f.jurisdiction_id, "group": f.group,
            "minor_traffic": f.minor_traffic, "identifications": f.identifications,
        })).collect::<Vec<_>>(),
        "complained_of": r.complained_of.iter().map(|c| json!({
            "jurisdiction_id": c.jurisdiction_id, "state": c.state,
            "profiling_complaints": c.profiling_complaints, "flagged": c.flagged,
        })).collect::<Vec<_>>(),
    })
}

/// The assessment as JSON.
pub fn assessment_json(a: &pb::QuarterlyAssessment) -> Value {
    json!({
        "quarter": a.quarter,
        "revision": a.revision,
        "data_through": a.data_through,
        "computed_at": a.computed_at.map(|t| t.seconds),
        "review": a.review.as_ref().map(review_json),
        "in_depth": a.in_depth.iter().map(|d| json!({
            "jurisdiction_id": d.jurisdiction_id, "group": d.group,
            "previous_p_value": d.previous_p_value, "previous_rate": d.previous_rate,
            "count": d.count, "trials": d.trials, "expected_rate": d.expected_rate,
            "p_value": d.p_value, "persists": d.persists,
            "profiling_complaints": d.profiling_complaints,
        })).collect::<Vec<_>>(),
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn table(out: &mut String, rows: &[pb::OutlierFlag]) {
    out.push_str(
        "<table><tr><th>Jurisdiction</th><th>State</th><th>Group</th><th>Minor traffic / identified</th>\
         <th>Rate</th><th>Arrest data (others)</th><th>Common OR</th><th>Expected</th><th>p</th>\
         <th>Power (2× odds)</th><th>Complaints</th></tr>",
    );
    for f in rows {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{:.1}%</td><td>{:.1}%</td>\
             <td>{:.2}</td><td>{:.1}%</td><td>{:.2e}</td><td>{:.2}</td><td>{}</td></tr>",
            esc(&f.jurisdiction_id),
            esc(&f.state),
            esc(&f.group),
            f.count,
            f.trials,
            100.0 * f.rate,
            100.0 * f.arrest_rate,
            f.common_odds_ratio,
            100.0 * f.expected_rate,
            f.p_value,
            f.power_at_double_odds,
            f.profiling_complaints
        );
    }
    out.push_str("</table>");
}

/// The assessment as one self-contained HTML page.
pub fn assessment_html(a: &pb::QuarterlyAssessment) -> String {
    let r = a.review.clone().unwrap_or_default();
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Profiling review {q}</title>\
         <style>body{{font-family:sans-serif;margin:2em;max-width:72em}}table{{border-collapse:collapse;margin:1em 0}}\
         td,th{{border:1px solid #999;padding:.2em .5em;text-align:right}}td:nth-child(-n+3),th{{text-align:left}}\
         .flag{{color:#a00}}</style></head><body>\
         <h1>Quarterly profiling review, {q}</h1>\
         <p>Months {from} to {to}; revision {rev}, data through {through}. Shared with the Department of Justice \
         (synthetic data).</p><h2>Method</h2><p>{method}</p>\
         <p>{ids} identifications; {tests} tests ({powered} with at least 80% power to flag doubled odds); \
         untested: {nogroup} without race/ethnicity, {nodata} without arrest-rate data.</p>",
        q = esc(&a.quarter),
        from = esc(&r.from_month),
        to = esc(&r.to_month),
        rev = a.revision,
        through = esc(&a.data_through),
        method = esc(&r.method),
        ids = r.identifications,
        tests = r.tests,
        powered = r.powered_tests,
        nogroup = r.untested_no_group,
        nodata = r.untested_no_arrest_data,
    );
    let _ = write!(
        out,
        "<h2 class=\"flag\">Flagged ({}) at false-discovery rate {}</h2>",
        r.flags.len(),
        r.false_discovery_rate
    );
    if r.flags.is_empty() {
        out.push_str("<p>None.</p>");
    } else {
        table(&mut out, &r.flags);
    }
    out.push_str("<h2>In-depth analysis of last quarter's outliers</h2>");
    if a.in_depth.is_empty() {
        out.push_str("<p>No outliers last quarter.</p>");
    } else {
        out.push_str(
            "<table><tr><th>Jurisdiction</th><th>Group</th><th>Last quarter p</th><th>This quarter</th>\
             <th>Expected</th><th>p</th><th>Persists</th><th>Complaints</th></tr>",
        );
        for d in &a.in_depth {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{:.2e}</td><td>{} / {}</td><td>{:.1}%</td><td>{:.2e}</td>\
                 <td>{}</td><td>{}</td></tr>",
                esc(&d.jurisdiction_id),
                esc(&d.group),
                d.previous_p_value,
                d.count,
                d.trials,
                100.0 * d.expected_rate,
                d.p_value,
                if d.persists { "yes" } else { "no" },
                d.profiling_complaints
            );
        }
        out.push_str("</table>");
    }
    out.push_str("<h2>Complaints of profiling received</h2>");
    if r.complained_of.is_empty() {
        out.push_str("<p>None.</p>");
    } else {
        out.push_str("<table><tr><th>Jurisdiction</th><th>State</th><th>Complaints</th><th>Flagged</th></tr>");
        for c in &r.complained_of {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.jurisdiction_id),
                esc(&c.state),
                c.profiling_complaints,
                if c.flagged { "yes" } else { "no" }
            );
        }
        out.push_str("</table>");
    }
    let _ = write!(out, "<h2>Every test ({})</h2>", r.tested.len());
    table(&mut out, &r.tested);
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_escapes_what_it_shows() {
        let a = pb::QuarterlyAssessment {
            quarter: "FY2011Q3".into(),
            revision: 2,
            data_through: "2011-08-01".into(),
            review: Some(pb::OutlierReview {
                flags: vec![pb::OutlierFlag {
                    jurisdiction_id: "CA<037>".into(),
                    group: "hispanic".into(),
                    count: 9,
                    trials: 12,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let html = assessment_html(&a);
        assert!(html.contains("CA&lt;037&gt;") && !html.contains("CA<037>"));
        assert!(!html.contains("<script") && !html.contains("http"));
        assert!(html.contains("9 / 12"));
        let j = assessment_json(&a);
        assert_eq!(j["review"]["flags"][0]["trials"], 12);
        assert_eq!(j["revision"], 2);
    }
}
