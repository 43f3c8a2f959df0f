//! Ground-truth verification of everything the gateway answered, and the summary report.
//!
//! Every check counts failures; the run passes only if every count is zero. Each violation
//! is listed with its TCN (ids only: no biometric or biographic data).

use crate::bookings::Booking;
use hdrhistogram::Histogram;
use interop_gateway::convert;
use interop_proto::v1 as pb;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// A booking's receipt, or why it was refused; `None` if no answer came.
pub type ReceiptSlot = Option<Result<pb::Receipt, String>>;

/// What the clients saw.
#[derive(Default)]
pub struct Observations {
    /// (office, notification, arrival).
    pub office: Vec<(String, pb::FieldOfficeNotification, Instant)>,
    /// (bureau state, response, arrival).
    pub bureau: Vec<(String, pb::BureauResponse, Instant)>,
    pub sent_at: Vec<Option<Instant>>,
    /// When each booking's receipt (or refusal) came back.
    pub receipt_at: Vec<Option<Instant>>,
    /// When the first booking was due to be sent.
    pub t0: Option<Instant>,
    /// Step profile: each step's start offset and rate, and how long a step lasts.
    pub steps: Vec<(Duration, f64)>,
    pub step_secs: f64,
    /// When mid-run policy changes were made, and how the bookings were held to them.
    pub applied: Option<crate::changes::Applied>,
    pub change_split: Option<crate::changes::Split>,
    /// The plan with each booking's expectation under the policy it was held to.
    pub effective_plan: Option<Vec<Booking>>,
    pub receipts: Vec<ReceiptSlot>,
    pub receipt_latency: Option<Histogram<u64>>,
    /// Detainers the field offices issued: (state, tcn, detainer id).
    pub detainers_issued: Vec<(String, String, String)>,
    /// Detainers the bureaus' jails received: (state, tcn, detainer id).
    pub detainers_received: Vec<(String, String, String)>,
    /// Removals the field offices recorded: (state, tcn).
    pub removals: Vec<(String, String)>,
    /// Jurisdictions planted with skewed arrest mixes.
    pub planted: std::collections::BTreeSet<String>,
    /// The outlier review's flags: (jurisdiction, measure), and how many tests it ran.
    pub review_flags: Vec<(String, String)>,
    pub review_tests: u32,
    /// National monthly statistics as the gateway reports them, by month.
    pub monthly: BTreeMap<String, pb::StatsRow>,
    /// Re-submissions of already receipted TCNs.
    pub repeats: Vec<(String, Result<pb::Receipt, String>)>,
    pub submit_elapsed: Duration,
    pub completed_in: Duration,
}

impl Observations {
    pub fn set_receipt_latency(&mut self, h: Histogram<u64>) {
        self.receipt_latency = Some(h);
    }
}

#[derive(Clone, Debug)]
pub struct Check {
    pub name: &'static str,
    pub failures: usize,
}

#[derive(Clone, Debug, Default)]
pub struct Verification {
    pub checks: Vec<Check>,
    /// "TCN: what went wrong", at most [`MAX_LISTED`] of them.
    pub violations: Vec<String>,
}

pub const MAX_LISTED: usize = 50;

impl Verification {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.failures == 0)
    }
    fn fail(&mut self, check: &'static str, tcn: &str, what: String) {
        match self.checks.iter_mut().find(|c| c.name == check) {
            Some(c) => c.failures += 1,
            None => self.checks.push(Check {
                name: check,
                failures: 1,
            }),
        }
        if self.violations.len() < MAX_LISTED {
            self.violations.push(format!("{tcn}: {what}"));
        }
    }
}

pub const CHECKS: &[&str] = &[
    "submissions without a receipt",
    "repeated TCN not idempotent",
    "criminal-history responses wrong or missing",
    "false matches",
    "missed matches",
    "status or priority wrong",
    "searches of non-activated jurisdictions",
    "notifications lost or misrouted",
    "notifications duplicated",
    "opt-out leaks",
    "immigration responses lost or duplicated",
    "stream cursors out of order",
    "detainers not delivered exactly once",
    "monthly statistics differ from ground truth",
    "planted outliers missed by the review",
];

/// Precision and recall of the review's minor-traffic flags against the planted set.
pub fn review_quality(obs: &Observations) -> (f64, f64) {
    let flagged: std::collections::BTreeSet<&str> = obs
        .review_flags
        .iter()
        .filter(|(_, m)| m == "minor_traffic_only_arrests")
        .map(|(j, _)| j.as_str())
        .collect();
    let hits = flagged.iter().filter(|j| obs.planted.contains(**j)).count() as f64;
    let precision = if flagged.is_empty() {
        1.0
    } else {
        hits / flagged.len() as f64
    };
    let recall = if obs.planted.is_empty() {
        1.0
    } else {
        hits / obs.planted.len() as f64
    };
    (precision, recall)
}

/// The booking months of a plan, `YYYY-MM`.
pub fn months(plan: &[Booking]) -> Vec<String> {
    let mut m: Vec<String> = plan.iter().map(month_of).collect();
    m.sort();
    m.dedup();
    m
}

fn month_of(b: &Booking) -> String {
    b.submission
        .booked_at
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|t| t.format("%Y-%m").to_string())
        .unwrap_or_default()
}

/// Checks every observation against the plan's expected answers.
pub fn verify(
    plan: &[Booking],
    obs: &Observations,
    counters: &HashMap<String, u64>,
) -> Verification {
    let mut v = Verification {
        checks: CHECKS
            .iter()
            .map(|n| Check {
                name: n,
                failures: 0,
            })
            .collect(),
        violations: vec![],
    };
    let by_tcn: HashMap<&str, &Booking> = plan
        .iter()
        .map(|b| (b.submission.tcn.as_str(), b))
        .collect();

    for (b, r) in plan.iter().zip(&obs.receipts) {
        match r {
            Some(Ok(_)) => {}
            Some(Err(e)) => v.fail(CHECKS[0], &b.submission.tcn, format!("refused: {e}")),
            None => v.fail(CHECKS[0], &b.submission.tcn, "no answer".into()),
        }
    }
    for (tcn, r) in &obs.repeats {
        let first = plan
            .iter()
            .position(|b| &b.submission.tcn == tcn)
            .and_then(|i| obs.receipts[i].as_ref())
            .and_then(|r| r.as_ref().ok());
        match (r, first) {
            (Ok(again), Some(first)) if again.duplicate && again.receipt_id == first.receipt_id => {
            }
            (r, _) => v.fail(CHECKS[1], tcn, format!("repeat answered {r:?}")),
        }
    }

    // Bureau side.
    let mut ch: HashMap<&str, Vec<&pb::CriminalHistoryResponse>> = HashMap::new();
    let mut imm: HashMap<&str, usize> = HashMap::new();
    let mut last_cursor: BTreeMap<String, u64> = BTreeMap::new();
    for (state, r, _) in &obs.bureau {
        let key = format!("bureau/{state}");
        let prev = last_cursor.insert(key, r.cursor).unwrap_or(0);
        if r.cursor <= prev {
            v.fail(
                CHECKS[11],
                &r.tcn,
                format!("bureau {state} cursor {} after {prev}", r.cursor),
            );
        }
        match &r.body {
            Some(pb::bureau_response::Body::CriminalHistory(c)) => {
                ch.entry(r.tcn.as_str()).or_default().push(c)
            }
            Some(pb::bureau_response::Body::Immigration(_)) => {
                *imm.entry(r.tcn.as_str()).or_default() += 1
            }
            // Detainers are checked from `Observations::detainers_*`.
            Some(pb::bureau_response::Body::Detainer(_)) | None => {}
        }
        if by_tcn.get(r.tcn.as_str()).is_none_or(|b| &b.state != state) {
            v.fail(
                CHECKS[9],
                &r.tcn,
                format!("bureau {state} got a response for a booking that is not its own"),
            );
        }
    }
    for b in plan {
        let tcn = b.submission.tcn.as_str();
        match ch.get(tcn).map(|v| v.as_slice()) {
            Some([c])
                if c.fbi_number == b.expected.fbi_number
                    && c.identified == expect_identified(&b.expected.fbi_number) => {}
            other => v.fail(
                CHECKS[2],
                tcn,
                format!(
                    "expected FBI number {:?}, got {:?}",
                    b.expected.fbi_number,
                    other.map(|cs| cs.iter().map(|c| c.fbi_number.clone()).collect::<Vec<_>>())
                ),
            ),
        }
        let got = imm.get(tcn).copied().unwrap_or(0);
        if !b.expected.bureau_receives && got > 0 {
            v.fail(CHECKS[9], tcn, format!("jurisdiction {} does not receive results, yet the bureau got {got} immigration response(s)", b.submission.jurisdiction_id));
        }
        if b.expected.bureau_receives && got != 1 {
            v.fail(
                CHECKS[10],
                tcn,
                format!("expected 1 immigration response, got {got}"),
            );
        }
    }

    // Field-office side.
    let mut notes: HashMap<&str, Vec<(&str, &pb::IdentOutcome)>> = HashMap::new();
    for (office, n, _) in &obs.office {
        let key = format!("office/{office}");
        let prev = last_cursor.insert(key, n.cursor).unwrap_or(0);
        let tcn = n.outcome.as_ref().map(|o| o.tcn.as_str()).unwrap_or("?");
        if n.cursor <= prev {
            v.fail(
                CHECKS[11],
                tcn,
                format!("office {office} cursor {} after {prev}", n.cursor),
            );
        }
        if let Some(o) = &n.outcome {
            notes
                .entry(o.tcn.as_str())
                .or_default()
                .push((office.as_str(), o));
        }
    }
    for b in plan {
        let tcn = b.submission.tcn.as_str();
        let got = notes.get(tcn).map(|v| v.as_slice()).unwrap_or(&[]);
        if !b.expected.searched {
            if !got.is_empty() {
                v.fail(
                    CHECKS[6],
                    tcn,
                    format!(
                        "jurisdiction {} not activated on the booking date, yet searched",
                        b.submission.jurisdiction_id
                    ),
                );
            }
            continue;
        }
        if got.len() > 1 {
            v.fail(CHECKS[8], tcn, format!("{} notifications", got.len()));
        }
        let Some((office, o)) = got.first() else {
            v.fail(
                CHECKS[7],
                tcn,
                format!("no notification reached {}", b.expected.field_office),
            );
            continue;
        };
        if *office != b.expected.field_office {
            v.fail(
                CHECKS[7],
                tcn,
                format!("notified {office}, expected {}", b.expected.field_office),
            );
        }
        match (o.hit, b.expected.fin.is_empty()) {
            (true, true) => v.fail(
                CHECKS[3],
                tcn,
                format!("hit on {} for a person with no IDENT record", o.fin),
            ),
            (true, false) if o.fin != b.expected.fin => v.fail(
                CHECKS[3],
                tcn,
                format!("hit on {}, expected {}", o.fin, b.expected.fin),
            ),
            (false, false) => v.fail(
                CHECKS[4],
                tcn,
                format!("expected a hit on {}", b.expected.fin),
            ),
            _ => {}
        }
        let want_status = convert::status_to_pb(b.expected.status) as i32;
        let want_level = convert::level_to_pb(b.expected.level) as i32;
        if o.hit == expect_identified(&b.expected.fin)
            && (o.status != want_status || o.priority_level != want_level)
        {
            v.fail(
                CHECKS[5],
                tcn,
                format!(
                    "status/level {}/{} expected {want_status}/{want_level}",
                    o.status, o.priority_level
                ),
            );
        }
    }
    let mut received: HashMap<&(String, String, String), usize> = HashMap::new();
    for d in &obs.detainers_received {
        *received.entry(d).or_default() += 1;
    }
    for d in &obs.detainers_issued {
        let got = received.remove(d).unwrap_or(0);
        if got != 1 {
            v.fail(
                CHECKS[12],
                &d.1,
                format!("detainer {} reached the jail {got} times", d.2),
            );
        }
    }
    for (d, _) in received {
        v.fail(
            CHECKS[12],
            &d.1,
            format!("jail of {} got detainer {} nobody issued", d.0, d.2),
        );
    }

    // Monthly statistics against the ground truth:
    // [submissions, searches, matches, detainers, removals].
    let mut want: BTreeMap<String, [u64; 5]> = BTreeMap::new();
    for b in plan {
        let w = want.entry(month_of(b)).or_default();
        w[0] += 1;
        w[1] += b.expected.searched as u64;
        w[2] += !b.expected.fin.is_empty() as u64;
    }
    for (_, tcn, _) in &obs.detainers_issued {
        if let Some(b) = by_tcn.get(tcn.as_str()) {
            want.entry(month_of(b)).or_default()[3] += 1;
        }
    }
    for (_, tcn) in &obs.removals {
        if let Some(b) = by_tcn.get(tcn.as_str()) {
            want.entry(month_of(b)).or_default()[4] += 1;
        }
    }
    for (month, w) in &want {
        let got = obs.monthly.get(month).map(|r| {
            [
                r.submissions,
                r.ident_searches,
                r.matches,
                r.detainers_issued,
                r.removals,
            ]
        });
        if got.as_ref() != Some(w) {
            v.fail(
                CHECKS[13],
                month,
                format!(
                    "national [submissions, searches, matches, detainers, removals] {got:?}, expected {w:?}"
                ),
            );
        }
    }

    for j in &obs.planted {
        let found = obs
            .review_flags
            .iter()
            .any(|(f, m)| f == j && m == "minor_traffic_only_arrests");
        if !found {
            v.fail(
                CHECKS[14],
                j,
                "planted skewed arrest mix not flagged".into(),
            );
        }
    }

    let searched = plan.iter().filter(|b| b.expected.searched).count() as u64;
    let counted = counters.get("ident_searches").copied().unwrap_or(0);
    if counted != searched {
        v.fail(
            CHECKS[6],
            "-",
            format!("gateway counted {counted} IDENT searches, {searched} expected"),
        );
    }
    v
}

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
    // Per state: (submissions, IDENT matches).
    let mut per_state: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for b in plan {
        per_state.entry(b.state.as_str()).or_default().0 += 1;
    }
    let mut matches = 0;
    for (office, n, at) in &obs.office {
        *per_office.entry(office.as_str()).or_default() += 1;
        if let Some(o) = &n.outcome {
            matches += o.hit as usize;
            if o.hit
                && let Some(i) = tcn_index.get(o.tcn.as_str())
            {
                per_state.entry(plan[*i].state.as_str()).or_default().1 += 1;
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
    let searches = obs.office.len();
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
    let _ = writeln!(t, "  {:<34} {:>10}", "receipts", receipts);
    let _ = writeln!(t, "  {:<34} {:>10}", "criminal-history hits", ch_hits);
    let _ = writeln!(t, "  {:<34} {:>10}", "IDENT searches", searches);
    let _ = writeln!(
        t,
        "  {:<34} {:>10}",
        "not activated (FBI check only)",
        n.saturating_sub(searches)
    );
    let _ = writeln!(
        t,
        "  {:<34} {:>10}  ({:.2}% of submissions; program reported ~6.3%)",
        "IDENT matches",
        matches,
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
        "responses withheld by opt-out", withheld
    );
    let _ = writeln!(
        t,
        "  {:<34} {:>10} / {}",
        "detainers issued / removals",
        obs.detainers_issued.len(),
        obs.removals.len()
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
    let (precision, recall) = review_quality(obs);
    let _ = writeln!(
        t,
        "  {:<34} {:>10}  ({} tests; {} planted; precision {:.2}, recall {:.2})",
        "outlier review flags",
        obs.review_flags.len(),
        obs.review_tests,
        obs.planted.len(),
        precision,
        recall
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
    let _ = writeln!(t, "result: {}", if v.passed() { "PASS" } else { "FAIL" });

    let json = serde_json::json!({
        "submissions": n,
        "receipts": receipts,
        "criminal_history_hits": ch_hits,
        "ident_searches": searches,
        "ident_matches": matches,
        "match_rate": matches as f64 / n.max(1) as f64,
        "immigration_responses_sent": sent_imm,
        "immigration_responses_withheld": withheld,
        "detainers_issued": obs.detainers_issued.len(),
        "removals": obs.removals.len(),
        "outlier_review": {
            "tests": obs.review_tests,
            "planted": obs.planted,
            "flags": obs.review_flags,
            "precision": precision,
            "recall": recall,
        },
        "notifications_per_office": per_office,
        "per_state": per_state
            .iter()
            .map(|(st, (subs, m))| (*st, serde_json::json!({
                "submissions": subs,
                "matches": m,
                "match_rate": *m as f64 / (*subs).max(1) as f64,
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

/// An expected identifier that is non-empty means "identified".
fn expect_identified(id: &str) -> bool {
    !id.is_empty()
}
