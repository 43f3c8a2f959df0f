//! Ground-truth verification of everything the gateway answered, and the summary report.
//!
//! Deterministic invariants are checked strictly: every check counts failures, and one
//! failure fails the run, each violation listed with its TCN (ids only: no biometric or
//! biographic data). The matchers' error rates and the profiling review are statistical: they
//! are judged by the criteria of [`crate::criteria`] (95% intervals against the targets, the
//! review's power), so a run fails on them only when it shows something wrong, never on one
//! unlucky search.

use crate::bookings::Booking;
use crate::criteria::{self, Planted, Rate};
use hdrhistogram::Histogram;
use interop_gateway::convert;
use interop_proto::v1 as pb;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

mod ice;
mod report;
pub mod review;
pub use ice::ice_side;
use ice::{check_activation_notices, check_decisions};
pub use report::{Report, report};

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
    /// Detainers whose form notice differs from the documents' (TCNs).
    pub detainer_notices_wrong: Vec<String>,
    /// Detainer copies the jails acknowledged, recorded once: (state, tcn, detainer id).
    pub detainer_copies: Vec<(String, String, String)>,
    /// Removals the field offices recorded: (state, tcn).
    pub removals: Vec<(String, String)>,
    /// The offices' decisions on identifications, as asked and as recorded.
    pub decisions: Vec<DecisionSeen>,
    /// LESC notices given (by jails and on the hotline): (office whose detainer it concerns,
    /// notice id — empty when a repeat answered differently, tcn).
    pub lesc_sent: Vec<(String, String, String)>,
    /// LESC notices the offices read on their streams: (office, notice id).
    pub lesc_received: Vec<(String, String)>,
    /// The offices' reviews of detainers after LESC notices.
    pub reviews: Vec<ReviewSeen>,
    /// Lifts the jails received: (state, tcn, detainer id).
    pub lifts_received: Vec<(String, String, String)>,
    /// Whether a removal asked under a lifted detainer was refused (asked once, if any was
    /// lifted).
    pub removal_after_lift_refused: Option<bool>,
    /// The activations the run made mid-run: (state, jurisdiction, activation date), and the
    /// advance notices the bureaus read after the run's start: (state, notice).
    pub activations: Vec<(String, String, String)>,
    /// Convictions the bureaus reported on detainers operative only on conviction: (state,
    /// tcn, detainer id made operative — empty when a repeat answered differently), and the
    /// operative notices the jails read: (state, tcn, detainer id).
    pub convictions: Vec<(String, String, String)>,
    pub operative_received: Vec<(String, String, String)>,
    /// Whether a removal asked before the conviction of a detainer operative only on
    /// conviction was refused (asked once, if any).
    pub removal_before_conviction_refused: Option<bool>,
    /// Civil-rights complaints the people held filed (`crate::officers`), as CRCL left them,
    /// and the flags the offices read: (office, complaint id).
    pub complaints: Vec<ComplaintSeen>,
    pub complaint_flags_received: Vec<(String, String)>,
    /// Whether a removal asked of a person with an open complaint was refused (asked once).
    pub removal_of_complainant_refused: Option<bool>,
    /// Organisations' complaints of profiling about the planted jurisdictions, and agencies'
    /// about the decoys: (jurisdiction, complaint id).
    pub org_complaints: Vec<(String, String)>,
    /// The review's jurisdictions complained of in the booking window, as differences from
    /// before the run: jurisdiction → (complaints of profiling, flagged). `None` where the run
    /// did not ask.
    pub review_complained: Option<BTreeMap<String, (u64, bool)>>,
    pub activation_notices: Vec<(String, pb::ActivationNotice)>,
    /// Jurisdictions planted with racial profiling whose bookings this run follows, the
    /// decoys, and the target group (ground truth).
    pub planted: std::collections::BTreeSet<String>,
    pub decoys: std::collections::BTreeSet<String>,
    pub target_group: String,
    /// The profiling review over the booking window: its flags (jurisdiction, group), how
    /// many tests it ran, and the whole review.
    pub review_flags: Vec<(String, String)>,
    pub review_tests: u32,
    pub review_window: Option<pb::OutlierReview>,
    /// What the review's figures grew by during the run, for the window and each quarter
    /// (`None` where the run did not ask).
    pub review_figures: Option<review::FigureMap>,
    /// Each quarter the schedule must have assessed, after the run.
    pub assessments: Vec<review::AssessmentSeen>,
    /// National monthly statistics as the gateway reports them, by month.
    pub monthly: BTreeMap<String, pb::StatsRow>,
    /// Submissions the gateway shed (RESOURCE_EXHAUSTED) that the bureaus retried.
    pub shed_and_retried: usize,
    /// Re-submissions of already receipted TCNs.
    pub repeats: Vec<(String, Result<pb::Receipt, String>)>,
    pub submit_elapsed: Duration,
    pub completed_in: Duration,
}

/// One decision a simulated office made (`crate::officers`) and what the gateway recorded.
#[derive(Clone, Debug)]
pub struct DecisionSeen {
    pub state: String,
    /// The action and reasons asked for, and the recommendation the identification carried.
    pub asked: i32,
    pub reasons: Vec<i32>,
    pub recommendation: i32,
    pub decision: pb::Decision,
    /// Asking again returned the same decision.
    pub repeat_same: bool,
    /// Asked of one decision per run: another action was refused afterwards.
    pub other_refused: Option<bool>,
}

/// One complaint a person held filed, as the gateway answered its last stage.
#[derive(Clone, Debug)]
pub struct ComplaintSeen {
    pub state: String,
    pub tcn: String,
    /// The office whose detainer holds the person.
    pub office: String,
    pub complaint: pb::Complaint,
    /// Every request asked twice answered the same.
    pub repeats_same: bool,
}

/// One detainer review a simulated office made after an LESC notice.
#[derive(Clone, Debug)]
pub struct ReviewSeen {
    pub state: String,
    pub tcn: String,
    pub lift: bool,
    pub review: pb::DetainerReview,
    pub repeat_same: bool,
}

impl Observations {
    /// Milliseconds from each reviewed detainer's first LESC notice to the office's decision.
    pub fn review_latency_ms(&self) -> Vec<i64> {
        let ms = |t: &Option<prost_types::Timestamp>| {
            t.map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
        };
        let mut v: Vec<i64> = self
            .reviews
            .iter()
            .map(|r| ms(&r.review.decided_at) - ms(&r.review.first_notice_at))
            .collect();
        v.sort_unstable();
        v
    }

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
    /// The deterministic checks.
    pub checks: Vec<Check>,
    /// "TCN: what went wrong", at most [`MAX_LISTED`] of them.
    pub violations: Vec<String>,
    /// Each engine's FNIR and FPIR, judged by their intervals.
    pub rates: Vec<Rate>,
    /// Every matcher error, for the listing (at most [`MAX_LISTED`]).
    pub errors: Vec<MatcherError>,
    /// Every planted outlier, with the power the run had to find it.
    pub planted: Vec<Planted>,
}

/// Which engine answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Engine {
    /// The FBI criminal-history check.
    Fbi,
    /// The DHS IDENT search.
    Ident,
}

/// One wrong answer of a matcher: a mate missed (or another subject hit instead), or a hit
/// for a person the gallery does not hold.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MatcherError {
    pub tcn: String,
    pub engine: Engine,
    /// What happened, e.g. "missed FBI123 (no hit)".
    pub what: String,
    /// How the booking's prints were taken (band, and what went wrong with single fingers).
    pub capture: String,
    /// The mate's gallery subject id, for a mated search.
    pub mate: Option<u64>,
    /// Where the mate ranked in the gateway's candidate list (1 = first), once asked:
    /// `Some(None)` = not within the candidates returned.
    pub mate_rank: Option<Option<usize>>,
}

impl MatcherError {
    fn line(&self) -> String {
        let rank = match (self.mate, self.mate_rank) {
            (None, _) => String::new(),
            (Some(_), None) => ", mate's rank not asked".into(),
            (Some(_), Some(Some(r))) => format!(", mate ranked {r}"),
            (Some(_), Some(None)) => ", mate not among the top candidates".into(),
        };
        format!(
            "{}: {} (capture: {}{rank})",
            self.tcn, self.what, self.capture
        )
    }
}

pub const MAX_LISTED: usize = 50;

impl Verification {
    /// Every deterministic check is 0, no error rate's interval lies wholly above its target,
    /// and the review found every planted outlier it had the power to find.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.failures == 0)
            && self.rates.iter().all(Rate::passed)
            && !self.planted.iter().any(Planted::missed_with_power)
    }
    pub(crate) fn fail(&mut self, check: &'static str, tcn: &str, what: String) {
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

/// The deterministic checks, by name.
pub const RECEIPTS: &str = "submissions without a receipt";
pub const REPEATS: &str = "repeated TCN not idempotent";
pub const CRIMINAL_HISTORY: &str = "criminal-history responses lost or duplicated";
pub const STATUS: &str = "status or priority wrong";
pub const NOT_ACTIVATED: &str = "searches of non-activated jurisdictions";
pub const LOST: &str = "notifications lost or misrouted";
pub const DUPLICATED: &str = "notifications duplicated";
pub const LEAKS: &str = "leaks to jurisdictions not receiving";
/// An outcome without an identification reached someone: no-hits are counted, never
/// disclosed (DESIGN §3.2; seed 001, "where there is a positive match").
pub const NO_HITS: &str = "no-hits disclosed";
pub const IMMIGRATION: &str = "immigration responses lost or duplicated";
/// An identification must carry the identified record's biographics (seed 001).
pub const BIOGRAPHICS: &str = "identification biographics wrong";
pub const ORDER: &str = "stream cursors out of order";
pub const DETAINERS: &str = "detainers not delivered exactly once";
/// A detainer must carry the form's notice as the documents give it, and the jail's
/// acknowledgement that the person got a copy must be recorded once.
pub const DETAINER_NOTICES: &str = "detainer notices or copies wrong";
pub const MONTHLY: &str = "monthly statistics differ from the answers";
/// Each office's decision is recorded as made, beside the recommendation it overrides or
/// follows, once (seed 000: ICE "determines what immigration enforcement action, if any, is
/// appropriate").
pub const DECISIONS: &str = "decisions not recorded as made";
/// Each LESC notice reaches the office whose detainer it concerns, once (seed 001).
pub const LESC: &str = "LESC notices not delivered exactly once";
/// Each review is recorded as made; each lift reaches the jail once; a lifted detainer
/// removes no one.
pub const REVIEWS: &str = "detainer reviews or lifts wrong";
/// Each activation the run made reached its state's bureau as an advance notice, once, given
/// at least the advance-notice period before the activation (seed 000: "Prior to the
/// activation of new jurisdictions within a state, ICE will provide advance notice").
pub const ACTIVATION_NOTICES: &str = "activation notices missing or late";
/// A detainer operative only on conviction becomes operative when the conviction is reported,
/// and the jail is told once; before it, no one is removed under it (seed 001: "ICE will only
/// consider making a detainer operative upon conviction").
pub const OPERATIVE: &str = "detainers made operative wrong";
/// Each complaint stands where CRCL moved it, with its dates and outcome; the detainer of a
/// person who complains is flagged to its office once; an open complainant is not removed
/// (seed 000: "witnesses and complainants are able to remain in the United States").
pub const COMPLAINTS: &str = "complaints' path, flags or protection wrong";

pub const CHECKS: &[&str] = &[
    RECEIPTS,
    REPEATS,
    CRIMINAL_HISTORY,
    STATUS,
    NOT_ACTIVATED,
    LOST,
    DUPLICATED,
    LEAKS,
    NO_HITS,
    IMMIGRATION,
    BIOGRAPHICS,
    ORDER,
    DETAINERS,
    DETAINER_NOTICES,
    DECISIONS,
    LESC,
    REVIEWS,
    ACTIVATION_NOTICES,
    OPERATIVE,
    COMPLAINTS,
    review::REVIEW,
    MONTHLY,
];

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

/// Whether an outcome as sent is an identification (a hit naming a FIN).
fn identifies(o: &pb::IdentOutcome) -> bool {
    o.hit && !o.fin.is_empty()
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
        ..Default::default()
    };
    let by_tcn: HashMap<&str, &Booking> = plan
        .iter()
        .map(|b| (b.submission.tcn.as_str(), b))
        .collect();

    for (b, r) in plan.iter().zip(&obs.receipts) {
        match r {
            Some(Ok(_)) => {}
            Some(Err(e)) => v.fail(RECEIPTS, &b.submission.tcn, format!("refused: {e}")),
            None => v.fail(RECEIPTS, &b.submission.tcn, "no answer".into()),
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
            (r, _) => v.fail(REPEATS, tcn, format!("repeat answered {r:?}")),
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
                ORDER,
                &r.tcn,
                format!("bureau {state} cursor {} after {prev}", r.cursor),
            );
        }
        match &r.body {
            Some(pb::bureau_response::Body::CriminalHistory(c)) => {
                ch.entry(r.tcn.as_str()).or_default().push(c)
            }
            Some(pb::bureau_response::Body::Immigration(i)) => {
                *imm.entry(r.tcn.as_str()).or_default() += 1;
                if i.outcome.as_ref().is_none_or(|o| !identifies(o)) {
                    v.fail(
                        NO_HITS,
                        &r.tcn,
                        format!(
                            "bureau {state} got an immigration response without an identification"
                        ),
                    );
                }
            }
            // Detainers and lifts are checked from what the ICE side asked
            // (`Observations::detainers_*`, `reviews`).
            Some(pb::bureau_response::Body::Detainer(_))
            | Some(pb::bureau_response::Body::DetainerLifted(_))
            | Some(pb::bureau_response::Body::DetainerOperative(_))
            | None => {}
            // About no booking: checked from `Observations::activation_notices`.
            Some(pb::bureau_response::Body::ActivationNotice(_)) => continue,
        }
        if by_tcn.get(r.tcn.as_str()).is_none_or(|b| &b.state != state) {
            v.fail(
                LEAKS,
                &r.tcn,
                format!("bureau {state} got a response for a booking that is not its own"),
            );
        }
    }
    let mut fbi = Tally::default();
    // Bookings whose criminal-history search found the wrong person (or missed): their
    // priority level follows from the record found, so it is judged with the search's rate.
    let mut fbi_wrong: std::collections::HashSet<&str> = Default::default();
    for b in plan {
        let tcn = b.submission.tcn.as_str();
        match ch.get(tcn).map(|v| v.as_slice()) {
            // The criminal-history check is a 1:N search: who it found is judged as a rate.
            Some([c]) => {
                let right = fbi.judge(
                    b,
                    Engine::Fbi,
                    (!b.expected.fbi_number.is_empty())
                        .then_some((b.expected.fbi_number.as_str(), b.expected.fbi_subject)),
                    (c.identified || !c.fbi_number.is_empty()).then_some(c.fbi_number.as_str()),
                );
                if !right {
                    fbi_wrong.insert(tcn);
                }
            }
            other => v.fail(
                CRIMINAL_HISTORY,
                tcn,
                format!(
                    "expected one criminal-history response, got {}",
                    other.map_or(0, |cs| cs.len())
                ),
            ),
        }
        let got = imm.get(tcn).copied().unwrap_or(0);
        if !b.expected.bureau_receives && got > 0 {
            v.fail(LEAKS, tcn, format!("jurisdiction {} does not receive results, yet the bureau got {got} immigration response(s)", b.submission.jurisdiction_id));
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
                ORDER,
                tcn,
                format!("office {office} cursor {} after {prev}", n.cursor),
            );
        }
        if let Some(o) = &n.outcome {
            if !identifies(o) {
                v.fail(
                    NO_HITS,
                    tcn,
                    format!("office {office} was sent an outcome without an identification"),
                );
                continue;
            }
            notes
                .entry(o.tcn.as_str())
                .or_default()
                .push((office.as_str(), o));
        }
    }
    let mut ident = Tally::default();
    // Matches by month as the field offices were told them, for the monthly statistics.
    let mut told: BTreeMap<String, u64> = BTreeMap::new();
    // Of those, the identifications whose recommendation was a detainer.
    let mut recommended: BTreeMap<String, u64> = BTreeMap::new();
    // Their TCNs: the profiling review counts these.
    let mut identified: std::collections::BTreeSet<&str> = Default::default();
    for b in plan {
        let tcn = b.submission.tcn.as_str();
        let got = notes.get(tcn).map(|v| v.as_slice()).unwrap_or(&[]);
        // Told to the bureau as an identification (where its jurisdiction receives results).
        let bureau_told = imm.get(tcn).copied().unwrap_or(0);
        if !b.expected.searched {
            if !got.is_empty() || bureau_told > 0 {
                v.fail(
                    NOT_ACTIVATED,
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
            v.fail(DUPLICATED, tcn, format!("{} notifications", got.len()));
        }
        // Identifications only: a booking the office heard nothing of was a no-hit, as far as
        // anyone outside the gateway can tell. If the bureau was told of an identification the
        // office was not, it was lost; a mate missed is judged as the matcher's rate (and the
        // run asks the gateway's matcher whether it finds the mate: `demo::mate_ranks`).
        if b.expected.bureau_receives && bureau_told != got.len().min(1) {
            v.fail(
                IMMIGRATION,
                tcn,
                format!(
                    "{} identification(s) reached the field office, {bureau_told} immigration response(s) the bureau",
                    got.len()
                ),
            );
        }
        let Some((office, o)) = got.first() else {
            if bureau_told > 0 {
                v.fail(
                    LOST,
                    tcn,
                    format!(
                        "the bureau was told of an identification, {} was not",
                        b.expected.field_office
                    ),
                );
            }
            ident.judge(
                b,
                Engine::Ident,
                (!b.expected.fin.is_empty())
                    .then_some((b.expected.fin.as_str(), b.expected.ident_subject)),
                None,
            );
            continue;
        };
        if *office != b.expected.field_office {
            v.fail(
                LOST,
                tcn,
                format!("notified {office}, expected {}", b.expected.field_office),
            );
        }
        *told.entry(month_of(b)).or_default() += 1;
        if o.recommendation != pb::Recommendation::None as i32 {
            *recommended.entry(month_of(b)).or_default() += 1;
            identified.insert(tcn);
        }
        let right = ident.judge(
            b,
            Engine::Ident,
            (!b.expected.fin.is_empty())
                .then_some((b.expected.fin.as_str(), b.expected.ident_subject)),
            Some(o.fin.as_str()),
        );
        // The determination is checked wherever the matchers answered right: it follows
        // from the records, deterministically (the level from the rap sheet the FBI search
        // found).
        let want_status = convert::status_to_pb(b.expected.status) as i32;
        let want_level = convert::level_to_pb(b.expected.level) as i32;
        let want_bio = b
            .expected
            .biographics
            .as_ref()
            .map(interop_gateway::convert::biographics_pb);
        if right && o.biographics != want_bio {
            v.fail(
                BIOGRAPHICS,
                tcn,
                "the identification's biographics are not the identified record's".into(),
            );
        }
        let level_wrong = !fbi_wrong.contains(tcn) && o.priority_level != want_level;
        if right && (o.status != want_status || level_wrong) {
            v.fail(
                STATUS,
                tcn,
                format!(
                    "status/level {}/{} expected {want_status}/{want_level}",
                    o.status, o.priority_level
                ),
            );
        }
    }
    for tcn in &obs.detainer_notices_wrong {
        v.fail(
            DETAINER_NOTICES,
            tcn,
            "the detainer's form notice is not the documents'".into(),
        );
    }
    for d in &obs.detainers_received {
        if !obs.detainer_copies.contains(d) {
            v.fail(
                DETAINER_NOTICES,
                &d.1,
                format!("the jail's copy of detainer {} was not recorded once", d.2),
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
                DETAINERS,
                &d.1,
                format!("detainer {} reached the jail {got} times", d.2),
            );
        }
    }
    for (d, _) in received {
        v.fail(
            DETAINERS,
            &d.1,
            format!("jail of {} got detainer {} nobody issued", d.0, d.2),
        );
    }

    check_decisions(&mut v, obs);
    check_activation_notices(&mut v, obs);

    // Searches are counted by the gateway, never seen: a booking in flight across a policy
    // change and identified under neither policy may have been searched or not.
    let unseen = |month: Option<&str>| {
        obs.change_split.as_ref().map_or(0, |s| {
            plan.iter()
                .filter(|b| s.unseen_search.contains(&b.submission.tcn))
                .filter(|b| month.is_none_or(|m| month_of(b) == m))
                .count() as u64
        })
    };
    // Monthly statistics against what was answered: [submissions, searches, matches,
    // detainers, removals, ..., removals by category]. Submissions and searches are the ground truth's; matches are the
    // hits the field offices were told of (a matcher's miss is judged above, as a rate, and
    // the statistics must count what the program answered).
    let mut want: BTreeMap<String, [u64; 15]> = BTreeMap::new();
    for b in plan {
        let w = want.entry(month_of(b)).or_default();
        w[0] += 1;
        w[1] += b.expected.searched as u64;
    }
    for (month, hits) in told {
        want.entry(month).or_default()[2] += hits;
    }
    for (month, n) in recommended {
        want.entry(month).or_default()[5] += n;
    }
    for d in &obs.decisions {
        let slot = match pb::Action::try_from(d.decision.action) {
            Ok(pb::Action::NoAction) => 6,
            Ok(pb::Action::Discretion) => 7,
            _ => continue,
        };
        if let Some(b) = by_tcn.get(d.decision.tcn.as_str()) {
            want.entry(month_of(b)).or_default()[slot] += 1;
        }
    }
    for (_, id, tcn) in &obs.lesc_sent {
        if let Some(b) = by_tcn.get(tcn.as_str())
            && !id.is_empty()
        {
            want.entry(month_of(b)).or_default()[8] += 1;
        }
    }
    for r in obs.reviews.iter().filter(|r| r.review.lifted) {
        if let Some(b) = by_tcn.get(r.tcn.as_str()) {
            want.entry(month_of(b)).or_default()[9] += 1;
        }
    }
    for (_, tcn, _) in &obs.detainers_issued {
        if let Some(b) = by_tcn.get(tcn.as_str()) {
            want.entry(month_of(b)).or_default()[3] += 1;
        }
    }
    for (_, tcn) in &obs.removals {
        if let Some(b) = by_tcn.get(tcn.as_str()) {
            let w = want.entry(month_of(b)).or_default();
            w[4] += 1;
            // The documents' categories: convicted people by level (the ground truth's),
            // the rest within the non-criminal priorities the office was told of, or not.
            use interop_gateway::rules::policy::Level;
            let told_priority =
                notes
                    .get(tcn.as_str())
                    .and_then(|n| n.first())
                    .is_some_and(|(_, o)| {
                        o.non_criminal_priorities
                            .iter()
                            .any(|p| *p != pb::NonCriminalPriority::Unspecified as i32)
                    });
            w[match b.expected.level {
                Level::One => 10,
                Level::Two => 11,
                Level::Three => 12,
                Level::None if told_priority => 13,
                Level::None => 14,
            }] += 1;
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
                r.detainers_recommended,
                r.decided_no_action,
                r.decided_discretion,
                r.lesc_notices,
                r.detainers_lifted,
                r.removed_level1,
                r.removed_level2,
                r.removed_level3,
                r.removed_non_criminal_priority,
                r.removed_outside_priorities,
            ]
        });
        // The searches of this month's unseen in-flight bookings may go either way.
        let fits = got.as_ref().is_some_and(|g| {
            g[0] == w[0] && g[2..] == w[2..] && g[1].abs_diff(w[1]) <= unseen(Some(month))
        });
        if !fits {
            v.fail(
                MONTHLY,
                month,
                format!(
                    "national [submissions, searches, matches, detainers, removals, recommended, no action, discretion, LESC notices, lifted, removed L1, L2, L3, non-criminal priority, outside priorities] {got:?}, expected {w:?}"
                ),
            );
        }
    }

    let searched = plan.iter().filter(|b| b.expected.searched).count() as u64;
    let counted = counters.get("ident_searches").copied().unwrap_or(0);
    if counted.abs_diff(searched) > unseen(None) {
        v.fail(
            NOT_ACTIVATED,
            "-",
            format!(
                "gateway counted {counted} IDENT searches, {searched} expected (give or take {} in flight across a policy change)",
                unseen(None)
            ),
        );
    }

    // The statistical part.
    for (engine, t) in [("FBI", fbi), ("IDENT", ident)] {
        v.rates.push(Rate::new(
            format!("{engine} FNIR (mated, livescan and ink card)"),
            t.missed - t.missed_poor,
            t.mated - t.mated_poor,
            criteria::FNIR_TARGET,
        ));
        v.rates.push(Rate::new(
            format!("{engine} FNIR (mated, poor captures)"),
            t.missed_poor,
            t.mated_poor,
            criteria::POOR_FNIR_TARGET,
        ));
        v.rates.push(Rate::new(
            format!("{engine} FPIR (non-mated searches hit)"),
            t.false_hits,
            t.non_mated,
            criteria::FPIR_TARGET,
        ));
        v.errors.extend(t.errors);
    }
    v.errors.truncate(MAX_LISTED);
    review::check(&mut v, plan, obs, &identified);
    v.planted = review::planted_power(plan, obs, &identified);
    v
}

/// One engine's answers, as a matcher's error rates count them.
#[derive(Default)]
struct Tally {
    mated: u64,
    missed: u64,
    /// Of `mated` and `missed`, the poor captures'.
    mated_poor: u64,
    missed_poor: u64,
    non_mated: u64,
    false_hits: u64,
    errors: Vec<MatcherError>,
}

impl Tally {
    /// Counts one answer: `mate` is who the gallery holds for the booking's person (its
    /// identifier and subject id), `found` whom the engine identified. Whether it was right.
    fn judge(
        &mut self,
        b: &Booking,
        engine: Engine,
        mate: Option<(&str, Option<u64>)>,
        found: Option<&str>,
    ) -> bool {
        let what = match (mate, found) {
            (Some((want, _)), Some(got)) if got == want => None,
            (None, None) => None,
            (Some((want, _)), None) => Some(format!("missed {want} (no hit)")),
            (Some((want, _)), Some(got)) => Some(format!("hit {got} instead of {want}")),
            (None, Some(got)) => Some(format!("hit {got}, who is not in the gallery")),
        };
        match mate {
            Some(_) => {
                self.mated += 1;
                self.missed += what.is_some() as u64;
                if b.band == interop_matcher::capture::Band::Poor {
                    self.mated_poor += 1;
                    self.missed_poor += what.is_some() as u64;
                }
            }
            None => {
                self.non_mated += 1;
                self.false_hits += what.is_some() as u64;
            }
        }
        let Some(what) = what else { return true };
        if self.errors.len() < MAX_LISTED {
            self.errors.push(MatcherError {
                tcn: b.submission.tcn.clone(),
                engine,
                what,
                capture: b.capture.clone(),
                mate: mate.and_then(|(_, s)| s),
                mate_rank: None,
            });
        }
        false
    }
}
