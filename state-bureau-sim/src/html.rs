//! A self-contained HTML report of a run: the summary, the ground-truth checks, and charts
//! drawn as inline SVG (throughput and latency percentiles over time, per-field-office
//! notifications, matches per IDENT search per state, the step profile). No script, no
//! stylesheet or font from the network: it opens in a browser on an air-gapped machine.
//!
//! It is rendered from the JSON report, so both always say the same thing.

use serde_json::Value;
use std::fmt::Write;

const W: f64 = 860.0;
const H: f64 = 260.0;
const PAD_L: f64 = 60.0;
const PAD_R: f64 = 150.0;
const PAD_T: f64 = 28.0;
const PAD_B: f64 = 36.0;
const COLOURS: [&str; 5] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" upper bound for an axis.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

/// A line chart of `series` (name, points (x, y)).
fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> String {
    let xmax = nice_max(
        series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
            .fold(0.0, f64::max),
    );
    let ymax = nice_max(
        series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
            .fold(0.0, f64::max),
    );
    let (pw, ph) = (W - PAD_L - PAD_R, H - PAD_T - PAD_B);
    let sx = |x: f64| PAD_L + x / xmax * pw;
    let sy = |y: f64| PAD_T + ph - y / ymax * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img"><title>{t}</title><text x="{PAD_L}" y="18" class="t">{t}</text>"#,
        t = esc(title)
    );
    for k in 0..=4 {
        let y = ymax * k as f64 / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{PAD_L}" x2="{x2}" y1="{py}" y2="{py}" stroke="#ddd"/><text x="{tx}" y="{ty}" class="a" text-anchor="end">{y}</text>"##,
            x2 = PAD_L + pw,
            py = sy(y),
            tx = PAD_L - 6.0,
            ty = sy(y) + 4.0,
            y = fmt_num(y)
        );
        let x = xmax * k as f64 / 4.0;
        let _ = write!(
            s,
            r#"<text x="{px}" y="{py}" class="a" text-anchor="middle">{x}</text>"#,
            px = sx(x),
            py = PAD_T + ph + 16.0,
            x = fmt_num(x)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{x}" y="{y}" class="a" text-anchor="middle">{xl}</text><text x="12" y="{ym}" class="a" transform="rotate(-90 12 {ym})" text-anchor="middle">{yl}</text>"#,
        x = PAD_L + pw / 2.0,
        y = H - 4.0,
        xl = esc(x_label),
        ym = PAD_T + ph / 2.0,
        yl = esc(y_label)
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        let d: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="1.6" points="{}"/><rect x="{lx}" y="{ly}" width="12" height="3" fill="{c}"/><text x="{tx}" y="{ty}" class="a">{n}</text>"#,
            d.join(" "),
            lx = W - PAD_R + 12.0,
            ly = PAD_T + 10.0 + 18.0 * i as f64,
            tx = W - PAD_R + 30.0,
            ty = PAD_T + 14.0 + 18.0 * i as f64,
            n = esc(name)
        );
    }
    s.push_str("</svg>");
    s
}

/// A horizontal bar chart of (label, value, note).
fn bar_chart(title: &str, bars: &[(String, f64, String)]) -> String {
    let row = 16.0;
    let h = PAD_T + row * bars.len() as f64 + 10.0;
    let vmax = nice_max(bars.iter().map(|b| b.1).fold(0.0, f64::max));
    let (x0, pw) = (70.0, W - 70.0 - 170.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg viewBox="0 0 {W} {h}" width="{W}" height="{h}" role="img"><title>{t}</title><text x="{x0}" y="18" class="t">{t}</text>"#,
        t = esc(title)
    );
    for (i, (label, v, note)) in bars.iter().enumerate() {
        let y = PAD_T + row * i as f64;
        let _ = write!(
            s,
            r##"<text x="{lx}" y="{ty}" class="a" text-anchor="end">{l}</text><rect x="{x0}" y="{y}" width="{bw:.1}" height="{bh}" fill="#1f77b4"/><text x="{nx:.1}" y="{ty}" class="a">{n}</text>"##,
            lx = x0 - 6.0,
            ty = y + 11.0,
            l = esc(label),
            bw = v / vmax * pw,
            bh = row - 4.0,
            nx = x0 + v / vmax * pw + 6.0,
            n = esc(note)
        );
    }
    s.push_str("</svg>");
    s
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// Renders the report page from the JSON report.
pub fn render(title: &str, report: &Value) -> String {
    let mut b = String::new();
    let passed = report["passed"].as_bool().unwrap_or(false);
    let _ = write!(
        b,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{t}</title><style>
body{{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:900px}}
h1{{font-size:20px}} h2{{font-size:16px;margin-top:28px}}
table{{border-collapse:collapse}} td,th{{padding:2px 10px;border-bottom:1px solid #eee;text-align:right}}
td:first-child,th:first-child{{text-align:left}}
.pass{{color:#2ca02c;font-weight:bold}} .fail{{color:#d62728;font-weight:bold}}
svg .t{{font:bold 13px system-ui,sans-serif}} svg .a{{font:11px system-ui,sans-serif;fill:#444}}
</style></head><body><h1>{t}</h1><p>Result: <span class="{c}">{r}</span> — all data synthetic.</p>"#,
        t = esc(title),
        c = if passed { "pass" } else { "fail" },
        r = if passed { "PASS" } else { "FAIL" }
    );

    b.push_str("<h2>Summary</h2><table>");
    for (k, label) in [
        ("submissions", "submissions"),
        ("receipts", "receipts"),
        ("criminal_history_hits", "criminal-history hits"),
        ("ident_searches", "IDENT searches"),
        ("ident_matches", "IDENT matches"),
        (
            "immigration_responses_sent",
            "immigration responses to bureaus",
        ),
        (
            "immigration_responses_withheld",
            "withheld (not received by choice)",
        ),
        ("detainers_issued", "detainers issued"),
        ("receipt_throughput_per_s", "receipt throughput /s"),
        ("end_to_end_throughput_per_s", "end-to-end throughput /s"),
    ] {
        let _ = write!(
            b,
            "<tr><td>{label}</td><td>{}</td></tr>",
            fmt_num(num(&report[k]))
        );
    }
    let ci = &report["matches_per_ident_search_95"];
    let _ = write!(
        b,
        "<tr><td>matches per IDENT search</td><td>{:.2}% [{:.2}, {:.2}] (documents: {:.1}%, seed 003)</td></tr>\
         <tr><td>matches per submission</td><td>{:.2}% (FBI-only submissions included)</td></tr></table>",
        100.0 * num(&report["matches_per_ident_search"]),
        100.0 * num(&ci[0]),
        100.0 * num(&ci[1]),
        100.0 * crate::calibration::documents_matches_per_ident_search(),
        100.0 * num(&report["matches_per_submission"])
    );

    b.push_str("<h2>Latency (ms, from intended send time)</h2><table><tr><th></th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>");
    for (k, label) in [
        ("receipt", "receipt"),
        ("criminal_history_response", "criminal-history response"),
        ("field_office_notification", "field-office notification"),
    ] {
        let l = &report["latency"][k];
        let _ = write!(b, "<tr><td>{label}</td>");
        for q in ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"] {
            let _ = write!(b, "<td>{:.2}</td>", num(&l[q]));
        }
        b.push_str("</tr>");
    }
    b.push_str("</table>");

    let tl = &report["timeline"];
    let intervals = tl["intervals"].as_array().cloned().unwrap_or_default();
    let series = |k: &str| -> Vec<(f64, f64)> {
        intervals
            .iter()
            .map(|i| (num(&i["t"]), num(&i[k])))
            .collect()
    };
    if !intervals.is_empty() {
        let _ = write!(
            b,
            "<h2>Over time ({} s intervals)</h2>",
            fmt_num(num(&tl["interval_secs"]))
        );
        b.push_str(&line_chart(
            "Throughput",
            "seconds since the first send",
            "per second",
            &[
                ("offered", series("offered_per_s")),
                ("receipts", series("receipts_per_s")),
                ("notifications", series("notifications_per_s")),
            ],
        ));
        b.push_str(&line_chart(
            "Latency of the bookings sent in each interval",
            "seconds since the first send",
            "ms",
            &[
                ("receipt p50", series("receipt_p50_ms")),
                ("receipt p99", series("receipt_p99_ms")),
                ("end-to-end p50", series("e2e_p50_ms")),
                ("end-to-end p99", series("e2e_p99_ms")),
            ],
        ));
    }
    if let Some(steps) = tl["steps"].as_array().filter(|s| !s.is_empty()) {
        b.push_str("<h2>Step profile</h2><table><tr><th>offered /s</th><th>receipts /s</th><th>receipt p99 ms</th><th>end-to-end p99 ms</th><th>refused</th></tr>");
        for s in steps {
            let _ = write!(
                b,
                "<tr><td>{:.1}</td><td>{:.1}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td></tr>",
                num(&s["offered_per_s"]),
                num(&s["receipts_per_s"]),
                num(&s["receipt_p99_ms"]),
                num(&s["e2e_p99_ms"]),
                s["refused"]
            );
        }
        b.push_str("</table>");
        match tl["knee_per_s"].as_f64() {
            Some(k) => {
                let _ = write!(b, "<p>Knee: kept up with every step up to {k:.1}/s.</p>");
            }
            None => b.push_str("<p>Knee: did not keep up even with the first step.</p>"),
        }
        let pts = |k: &str| -> Vec<(f64, f64)> {
            steps
                .iter()
                .map(|s| (num(&s["offered_per_s"]), num(&s[k])))
                .collect()
        };
        b.push_str(&line_chart(
            "Achieved vs offered",
            "offered per second",
            "per second",
            &[
                ("offered", pts("offered_per_s")),
                ("receipts", pts("receipts_per_s")),
            ],
        ));
    }

    if let Some(per_office) = report["notifications_per_office"].as_object() {
        let bars: Vec<(String, f64, String)> = per_office
            .iter()
            .map(|(o, n)| (o.clone(), num(n), n.to_string()))
            .collect();
        b.push_str("<h2>Field offices</h2>");
        b.push_str(&bar_chart("Notifications per field office", &bars));
    }
    if let Some(per_state) = report["per_state"].as_object() {
        let bars: Vec<(String, f64, String)> = per_state
            .iter()
            .map(|(st, v)| {
                let rate = 100.0 * num(&v["matches_per_ident_search"]);
                (
                    st.clone(),
                    rate,
                    format!("{rate:.1}% of {} IDENT searches", v["ident_searches"]),
                )
            })
            .collect();
        b.push_str("<h2>States</h2>");
        b.push_str(&bar_chart(
            "IDENT matches per IDENT search, per state (%)",
            &bars,
        ));
    }

    b.push_str("<h2>Ground-truth verification (all must be 0)</h2><table>");
    if let Some(checks) = report["verification"].as_object() {
        for (name, n) in checks {
            let cls = if num(n) == 0.0 { "pass" } else { "fail" };
            let _ = write!(
                b,
                r#"<tr><td>{}</td><td class="{cls}">{n}</td></tr>"#,
                esc(name)
            );
        }
    }
    b.push_str("</table>");
    if let Some(rates) = report["matcher_rates"].as_array().filter(|r| !r.is_empty()) {
        b.push_str(
            "<h2>Matcher error rates</h2><p>A rate fails only if its whole 95% interval lies above the target.</p><table><tr><th>rate</th><th>errors</th><th>trials</th><th>95% interval</th><th>target</th></tr>",
        );
        for r in rates {
            let (low, high, target) = (num(&r["low"]), num(&r["high"]), num(&r["target"]));
            let cls = if low <= target { "pass" } else { "fail" };
            let _ = write!(
                b,
                r#"<tr><td>{}</td><td class="{cls}">{}</td><td>{}</td><td>{:.3}% – {:.3}%</td><td>≤ {:.2}%</td></tr>"#,
                esc(r["name"].as_str().unwrap_or_default()),
                r["errors"],
                r["trials"],
                100.0 * low,
                100.0 * high,
                100.0 * target
            );
        }
        b.push_str("</table>");
    }
    if let Some(v) = report["violations"].as_array().filter(|v| !v.is_empty()) {
        b.push_str("<h2>Violations</h2><ul>");
        for line in v {
            let _ = write!(b, "<li>{}</li>", esc(line.as_str().unwrap_or_default()));
        }
        b.push_str("</ul>");
    }
    b.push_str("</body></html>\n");
    b
}

/// The report of a soak (`state-bureau-sim soak`): latency, memory, descriptors, disk and
/// store writes per window, over time, and the windows' table.
pub fn render_soak(soak: &Value) -> String {
    let windows = soak["windows"].as_array().cloned().unwrap_or_default();
    let passed = soak["passed"].as_bool().unwrap_or(false);
    let series = |key: &str, scale: f64| -> Vec<(f64, f64)> {
        windows
            .iter()
            .filter(|w| w[key].is_number())
            .map(|w| (num(&w["at_min"]), num(&w[key]) * scale))
            .collect()
    };
    let mut b = String::new();
    let title = format!(
        "interop soak: {} windows at {} bookings/s",
        windows.len(),
        fmt_num(num(&soak["rate_per_s"]))
    );
    let _ = write!(
        b,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{t}</title><style>
body{{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:900px}}
h1{{font-size:20px}} h2{{font-size:16px;margin-top:28px}}
table{{border-collapse:collapse}} td,th{{padding:2px 10px;border-bottom:1px solid #eee;text-align:right}}
.pass{{color:#2ca02c;font-weight:bold}} .fail{{color:#d62728;font-weight:bold}}
svg .t{{font:bold 13px system-ui,sans-serif}} svg .a{{font:11px system-ui,sans-serif;fill:#444}}
</style></head><body><h1>{t}</h1><p>Result: <span class="{c}">{r}</span> — every window verified against the ground truth; all data synthetic.</p>"#,
        t = esc(&title),
        c = if passed { "pass" } else { "fail" },
        r = if passed { "PASS" } else { "FAIL" }
    );
    b.push_str(&line_chart(
        "Latency per window (ms)",
        "minutes",
        "ms",
        &[
            ("notification p99", series("notification_p99_ms", 1.0)),
            ("notification p50", series("notification_p50_ms", 1.0)),
            ("receipt p99", series("receipt_p99_ms", 1.0)),
        ],
    ));
    let mib = 1.0 / (1u64 << 20) as f64;
    b.push_str(&line_chart(
        "Gateway memory and data (MiB)",
        "minutes",
        "MiB",
        &[
            ("resident memory", series("rss_bytes", mib)),
            ("data directory", series("data_bytes", mib)),
        ],
    ));
    b.push_str(&line_chart(
        "Open file descriptors and store writes per booking",
        "minutes",
        "",
        &[
            ("open fds", series("open_fds", 1.0)),
            (
                "store writes per booking",
                series("store_ops_per_booking", 1.0),
            ),
        ],
    ));
    b.push_str("<h2>Windows</h2><table><tr><th>window</th><th>minutes</th><th>bookings</th><th>verified</th><th>receipt p99 ms</th><th>notification p50 ms</th><th>notification p99 ms</th><th>RSS MiB</th><th>fds</th><th>data MiB</th></tr>");
    for w in &windows {
        let ok = w["passed"].as_bool().unwrap_or(false);
        let _ = write!(
            b,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td class="{}">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            w["index"],
            fmt_num(num(&w["at_min"])),
            w["bookings"],
            if ok { "pass" } else { "fail" },
            if ok { "PASS" } else { "FAIL" },
            fmt_num(num(&w["receipt_p99_ms"])),
            fmt_num(num(&w["notification_p50_ms"])),
            fmt_num(num(&w["notification_p99_ms"])),
            fmt_num(num(&w["rss_bytes"]) * mib),
            fmt_num(num(&w["open_fds"])),
            fmt_num(num(&w["data_bytes"]) * mib),
        );
    }
    b.push_str("</table></body></html>\n");
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_escapes_what_it_shows() {
        let report = serde_json::json!({
            "passed": false,
            "submissions": 3,
            "matches_per_ident_search": 0.0625,
            "matches_per_ident_search_95": [0.05, 0.075],
            "matches_per_submission": 0.05,
            "latency": {"receipt": {"p50_ms": 1.5}},
            "timeline": {"interval_secs": 1.0, "intervals": [
                {"t": 0.0, "offered_per_s": 2.0, "receipts_per_s": 2.0},
                {"t": 1.0, "offered_per_s": 1.0, "receipts_per_s": 1.0}],
              "steps": [{"offered_per_s": 10.0, "receipts_per_s": 9.9, "refused": 0}],
              "knee_per_s": 10.0},
            "notifications_per_office": {"HOU": 2},
            "per_state": {"TX": {"submissions": 3, "ident_searches": 2, "matches": 1,
                                  "matches_per_ident_search": 0.5, "matches_per_submission": 0.333}},
            "verification": {"leaks to jurisdictions not receiving": 1},
            "violations": ["TX201 <script>"],
        });
        let page = render("run <1>", &report);
        assert!(page.starts_with("<!doctype html>"));
        assert!(page.contains("<svg") && page.contains("polyline"));
        assert!(page.contains("Knee: kept up with every step up to 10.0/s"));
        assert!(page.contains("TX201 &lt;script&gt;") && !page.contains("<script"));
        assert!(page.contains("run &lt;1&gt;"));
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "nothing from the network"
        );
        assert!(page.contains(r#"class="fail">1"#));
        assert!(page.contains("6.25% [5.00, 7.50] (documents: 6.3%, seed 003)"));
        assert!(page.contains("50.0% of 2 IDENT searches"));
    }
}
