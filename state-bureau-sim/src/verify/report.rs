//! The verdict as people and scripts read it: the printed summary and the JSON report, from
//! the plan, what was observed and the verification.

use super::ice::removals_by_category;
use super::*;

/// The printed table and the JSON report.
pub struct Report {
    pub table: String,
    pub json: serde_json::Value,
}

fn pct(h: &Histogram<u64>) -> serde_json::Value {
    let ms = |v: u64| v as f64 / 1000.0;
    serde_json::json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
    })
}

fn pct_line(name: &str, h: &Histogram<u64>) -> String {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "  {name:<34} p50 {:>8.2}  p90 {:>8.2}  p99 {:>8.2}  p99.9 {:>8.2}  max {:>8.2} ms\n",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0
    )
}

pub fn report(
    plan: &[Booking],
    obs: &Observations,
    v: &Verification,
    counters: &HashMap<String, u64>,
    setup_world: Duration,
    setup_gateway: Duration,
) -> Report {
    let tcn_index: HashMap<&str, usize> = plan
        .iter()
        .enumerate()
        .map(|(i, b)| (b.submission.tcn.as_str(), i))
        .collect();
    let mut ch_lat = Histogram::<u64>::new(3).expect("histogram");
    let mut note_lat = Histogram::<u64>::new(3).expect("histogram");
    let since_sent = |tcn: &str, at: &Instant| {
        tcn_index
            .get(tcn)
            .and_then(|i| obs.sent_at[*i])
            .map(|s| at.saturating_duration_since(s).as_micros() as u64)
    };
    let mut ch_hits = 0;
    for (_, r, at) in &obs.bureau {
        if let Some(pb::bureau_response::Body::CriminalHistory(c)) = &r.body {
            ch_hits += c.identified as usize;
            if let Some(us) = since_sent(&r.tcn, at) {
                ch_lat.record(us).ok();
            }
        }
    }
    let mut per_office: BTreeMap<&str, usize> = BTreeMap::new();
    // Per state: (submissions, IDENT searches as planned, IDENT matches).
    let mut per_state: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for b in plan {
        let e = per_state.entry(b.state.as_str()).or_default();
        e.0 += 1;
        e.1 += b.expected.searched as usize;
    }
    let mut matches = 0;
    for (office, n, at) in &obs.office {
        *per_office.entry(office.as_str()).or_default() += 1;
        if let Some(o) = &n.outcome {
            matches += o.hit as usize;
            if o.hit
                && let Some(i) = tcn_index.get(o.tcn.as_str())
            {
                per_state.entry(plan[*i].state.as_str()).or_default().2 += 1;
            }
            if let Some(us) = since_sent(&o.tcn, at) {
                note_lat.record(us).ok();
            }
        }
    }
    let n = plan.len();
    let receipts = obs
        .receipts
        .iter()
        .filter(|r| matches!(r, Some(Ok(_))))
        .count();
    // Counted by the gateway: field offices hear of identifications only.
    let searches = counters.get("ident_searches").copied().unwrap_or(0) as usize;
    let withheld = counters
        .get("immigration_responses_withheld")
        .copied()
        .unwrap_or(0);
    let sent_imm = counters
        .get("immigration_responses_sent")
        .copied()
        .unwrap_or(0);
    let ingest_rate = n as f64 / obs.submit_elapsed.as_secs_f64().max(1e-9);
    let completion_rate = n as f64 / obs.completed_in.as_secs_f64().max(1e-9);
    let empty = Histogram::<u64>::new(3).expect("histogram");
    let receipt_lat = obs.receipt_latency.as_ref().unwrap_or(&empty);

    let mut t = String::new();
    let _ = writeln!(t, "\n== interop: summary ==");
    let _ = writeln!(t, "  {:<34} {:>10}", "submissions", n);
    if obs.shed_and_retried > 0 {
        let _ = writeln!(
            t,
            "  {:<34} {:>10}  ({} shed by the gateway and sent again with backoff)",
            "receipts", receipts, obs.shed_and_retried
        );
    } else {
        let _ = writeln!(t, "  {:<34} {:>10}", "receipts", receipts);
    }
    let _ = writeln!(t, "  {:<34} {:>10}", "criminal-history hits", ch_hits);
    let _ = writeln!(t, "  {:<34} {:>10}", "IDENT searches", searches);
    let _ = writeln!(
        t,
        "  {:<34} {:>10}",
        "not activated (FBI check only)",
        n.saturating_sub(searches)
    );
    let _ = writeln!(t, "  {:<34} {:>10}", "IDENT matches", matches);
    // The documents' rate counts submissions made through the program, each checked against
    // IDENT (seed 003): per IDENT search, not per submission.
    let per_search = matches as f64 / searches.max(1) as f64;
    let (low, high) = criteria::wilson(matches as u64, searches as u64);
    let _ = writeln!(
        t,
        "  {:<34} {:>9.2}%  [{:.2}, {:.2}] (documents: {:.1}%, seed 003)",
        "matches per IDENT search",
        100.0 * per_search,
        100.0 * low,
        100.0 * high,
        100.0 * crate::calibration::documents_matches_per_ident_search()
    );
    let _ = writeln!(
        t,
        "  {:<34} {:>9.2}%  (FBI-only submissions included)",
        "matches per submission",
        100.0 * matches as f64 / n.max(1) as f64
    );
    let _ = writeln!(
        t,
        "  {:<34} {:>10}",
        "immigration responses to bureaus", sent_imm
    );
    let _ = writeln!(
        t,
        "  {:<34} {:>10}",
        "withheld (not received by choice)", withheld
    );
    let _ = writeln!(
        t,
        "  {:<34} {:>10} / {}",
        "detainers issued / removals",
        obs.detainers_issued.len(),
        obs.removals.len()
    );
    let ice = ice_side(obs);
    let num = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let rm = removals_by_category(obs);
    let _ = writeln!(
        t,
        "  {:<34} {:>10} / {} / {} / {}",
        "complaints filed/open/DOJ/closed",
        num(&ice["complaints"]["filed"]),
        num(&ice["complaints"]["open"]),
        num(&ice["complaints"]["doj_notified"]),
        num(&ice["complaints"]["closed"])
    );
    let _ = writeln!(
        t,
        "  {:<34} {:>10} / {} / {} / {} / {}  ({:.0}% within priorities; documents: 94% through FY2011, seed 001)",
        "removed L1/L2/L3/nc. prio/other",
        num(&rm["level1"]),
        num(&rm["level2"]),
        num(&rm["level3"]),
        num(&rm["non_criminal_priority"]),
        num(&rm["outside_priorities"]),
        rm["within_priorities"].as_f64().unwrap_or(0.0) * 100.0
    );
    let _ = writeln!(
        t,
        "  {:<34} {:>10} / {} / {}  ({} against the recommendation)",
        "decisions: detain / none / discr.",
        num(&ice["decided_detainer"]),
        num(&ice["decided_no_action"]),
        num(&ice["decided_discretion"]),
        num(&ice["against_recommendation"])
    );
    let _ = writeln!(
        t,
        "  {:<34} {:>10} / {} / {}  (notice to review p50 {} ms, max {} ms)",
        "LESC notices / reviews / lifted",
        num(&ice["lesc_notices"]),
        num(&ice["reviews"]),
        num(&ice["lifted"]),
        num(&ice["review_latency_ms"]["p50"]),
        num(&ice["review_latency_ms"]["max"])
    );
    let _ = writeln!(
        t,
        "  {:<34} {:>10.1} /s  ({:.2} s for all receipts)",
        "receipt throughput",
        ingest_rate,
        obs.submit_elapsed.as_secs_f64()
    );
    let _ = writeln!(
        t,
        "  {:<34} {:>10.1} /s  ({:.2} s until every result arrived)",
        "end-to-end throughput",
        completion_rate,
        obs.completed_in.as_secs_f64()
    );
    let _ = writeln!(
        t,
        "  {:<34} {:>10.2} s / {:.2} s",
        "setup: world+plan / gateway load",
        setup_world.as_secs_f64(),
        setup_gateway.as_secs_f64()
    );
    let (precision, recall) = super::review::quality(obs);
    let decoys_flagged = obs
        .review_flags
        .iter()
        .filter(|(j, _)| obs.decoys.contains(j))
        .count();
    // Recall means something only where a planted jurisdiction was tested at all (enough
    // identifications of its target group); say so rather than print a bare 0.
    let tested_planted = obs.review_window.as_ref().map_or(0, |w| {
        obs.planted
            .iter()
            .filter(|j| {
                w.tested
                    .iter()
                    .any(|t| &t.jurisdiction_id == *j && t.group == obs.target_group)
            })
            .count()
    });
    let recall_text = if !obs.planted.is_empty() && tested_planted == 0 {
        format!(
            "recall n/a: no planted jurisdiction had {} identifications of the group to test",
            interop_gateway::rules::review::MIN_TRIALS
        )
    } else {
        format!("recall {recall:.2}")
    };
    let _ = writeln!(
        t,
        "  {:<34} {:>10}  ({} tests, {} powered; {} planted, {} tested, {} decoys flagged; precision {:.2}, {})",
        "profiling review flags",
        obs.review_flags.len(),
        obs.review_tests,
        obs.review_window.as_ref().map_or(0, |r| r.powered_tests),
        obs.planted.len(),
        tested_planted,
        decoys_flagged,
        precision,
        recall_text
    );
    let assessed: Vec<String> = obs
        .assessments
        .iter()
        .map(|a| match &a.stored {
            Some(s) => format!(
                "{} r{} {} flag(s)",
                a.quarter,
                s.revision,
                s.review.as_ref().map_or(0, |r| r.flags.len())
            ),
            None => format!("{} missing", a.quarter),
        })
        .collect();
    let _ = writeln!(
        t,
        "  {:<34} {:>10}  ({})",
        "quarterly assessments (DOJ)",
        obs.assessments.len(),
        assessed.join("; ")
    );
    let _ = writeln!(t, "latency (from send):");
    t.push_str(&pct_line("receipt", receipt_lat));
    t.push_str(&pct_line("criminal-history response", &ch_lat));
    t.push_str(&pct_line("field-office notification", &note_lat));
    let timeline = obs
        .t0
        .map(|t0| crate::timeline::build(plan, obs, t0, &obs.steps, obs.step_secs))
        .unwrap_or_default();
    if !timeline.steps.is_empty() {
        let _ = writeln!(
            t,
            "step profile (offered vs achieved; latency of the bookings sent in the step):"
        );
        let _ = writeln!(
            t,
            "  {:>10} {:>6} {:>12} {:>14} {:>12} {:>8}",
            "offered/s", "sent", "receipts/s", "receipt p99 ms", "e2e p99 ms", "refused"
        );
        for st in &timeline.steps {
            let _ = writeln!(
                t,
                "  {:>10.1} {:>6} {:>12.1} {:>14.2} {:>12.2} {:>8}",
                st.offered_per_s,
                st.sent,
                st.receipts_per_s,
                st.receipt_p99_ms,
                st.e2e_p99_ms,
                st.refused
            );
        }
        match timeline.knee_per_s {
            Some(k) => {
                let _ = writeln!(t, "  knee: kept up with every step up to {k:.1}/s");
            }
            None => {
                let _ = writeln!(t, "  knee: did not keep up even with the first step");
            }
        }
    }
    let _ = writeln!(t, "notifications per field office:");
    let mut line = String::new();
    for (i, (o, c)) in per_office.iter().enumerate() {
        let _ = write!(line, "  {o} {c:>5}");
        if i % 6 == 5 {
            let _ = writeln!(t, "{line}");
            line.clear();
        }
    }
    if !line.is_empty() {
        let _ = writeln!(t, "{line}");
    }
    let _ = writeln!(t, "ground-truth verification (all must be 0):");
    for c in &v.checks {
        let mark = if c.failures == 0 { "ok  " } else { "FAIL" };
        let _ = writeln!(t, "  [{mark}] {:<44} {:>6}", c.name, c.failures);
    }
    for line in &v.violations {
        let _ = writeln!(t, "    - {line}");
    }
    let _ = writeln!(
        t,
        "matcher error rates (fail only if the whole 95% interval lies above the target):"
    );
    for r in &v.rates {
        let mark = if r.passed() { "ok  " } else { "FAIL" };
        let _ = writeln!(
            t,
            "  [{mark}] {:<38} {:>5} / {:<6} = {:>7.3}%  95% [{:.3}%, {:.3}%]  target <= {:.2}%",
            r.name,
            r.errors,
            r.trials,
            100.0 * r.rate(),
            100.0 * r.low,
            100.0 * r.high,
            100.0 * r.target
        );
    }
    for e in &v.errors {
        let _ = writeln!(t, "    - {}", e.line());
    }
    if !v.planted.is_empty() {
        let _ = writeln!(
            t,
            "profiling review: planted profiling of {} people (a miss fails only with power >= {:.2} and significant evidence):",
            obs.target_group,
            crate::criteria::MIN_POWER
        );
        for p in &v.planted {
            let mark = if p.missed_with_power() {
                "FAIL"
            } else {
                "ok  "
            };
            let _ = writeln!(
                t,
                "  [{mark}] {:<10} identified {:>6} ({} minor-traffic-only, p = {:.2e}{})  power {:.2}  {}",
                p.jurisdiction,
                p.identifications,
                p.minor_traffic_only,
                p.p_value,
                if p.significant { ", significant" } else { "" },
                p.power,
                if p.flagged { "flagged" } else { "not flagged" }
            );
        }
    }
    let _ = writeln!(t, "result: {}", if v.passed() { "PASS" } else { "FAIL" });

    let json = serde_json::json!({
        "submissions": n,
        "receipts": receipts,
        "shed_and_retried": obs.shed_and_retried,
        "criminal_history_hits": ch_hits,
        "ident_searches": searches,
        "ident_matches": matches,
        "matches_per_ident_search": per_search,
        "matches_per_ident_search_95": [low, high],
        "matches_per_submission": matches as f64 / n.max(1) as f64,
        "immigration_responses_sent": sent_imm,
        "immigration_responses_withheld": withheld,
        "detainers_issued": obs.detainers_issued.len(),
        "removals": obs.removals.len(),
        "removals_by_category": removals_by_category(obs),
        "ice_side": ice_side(obs),
        "activation_notices": obs.activation_notices.len(),
        "profiling_review": {
            "tests": obs.review_tests,
            "decoys": obs.decoys,
            "decoys_flagged": decoys_flagged,
            "planted_tested": tested_planted,
            "target_group": obs.target_group,
            "assessments": obs.assessments.iter().map(|a| serde_json::json!({
                "quarter": a.quarter,
                "revision": a.stored.as_ref().map(|s| s.revision),
                "flags": a.stored.as_ref().and_then(|s| s.review.as_ref()).map(|r| r.flags.iter().map(|f| (f.jurisdiction_id.clone(), f.group.clone())).collect::<Vec<_>>()),
                "in_depth": a.stored.as_ref().map(|s| s.in_depth.iter().map(|d| serde_json::json!({"jurisdiction": d.jurisdiction_id, "group": d.group, "persists": d.persists})).collect::<Vec<_>>()),
            })).collect::<Vec<_>>(),
            "planted": v.planted,
            "min_power": crate::criteria::MIN_POWER,
            "flags": obs.review_flags,
            "precision": precision,
            "recall": recall,
        },
        "matcher_rates": v.rates,
        "matcher_errors": v.errors,
        "notifications_per_office": per_office,
        "per_state": per_state
            .iter()
            .map(|(st, (subs, searched, m))| (*st, serde_json::json!({
                "submissions": subs,
                "ident_searches": searched,
                "matches": m,
                "matches_per_ident_search": *m as f64 / (*searched).max(1) as f64,
                "matches_per_submission": *m as f64 / (*subs).max(1) as f64,
            })))
            .collect::<BTreeMap<_, _>>(),
        "timeline": timeline,
        "receipt_throughput_per_s": ingest_rate,
        "end_to_end_throughput_per_s": completion_rate,
        "latency": {
            "receipt": pct(receipt_lat),
            "criminal_history_response": pct(&ch_lat),
            "field_office_notification": pct(&note_lat),
        },
        "verification": v.checks.iter().map(|c| (c.name, c.failures)).collect::<BTreeMap<_, _>>(),
        "violations": v.violations,
        "passed": v.passed(),
        "counters": counters.iter().collect::<BTreeMap<_, _>>(),
    });
    Report { table: t, json }
}
