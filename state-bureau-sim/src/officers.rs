//! The simulated ICE side after the identifications: field officers decide on each one, the
//! jails hold people under detainers and give them the form, some of those people reach the
//! LESC (the jail's notice, or their own call to the hotline), the offices review those
//! detainers, and some people are removed. Every choice is deterministic from the TCN, so the
//! verdict can hold the gateway to what was asked.
//!
//! The officers' model (documented so a verdict can be read):
//! - **A recommended detainer is lodged**, with the reasons the identification gives: a
//!   criminal priority where the person has convictions, a non-criminal priority where one
//!   applies, the pending charges otherwise; except that one in twenty of those with neither a
//!   Level 1 or 2 conviction nor a non-criminal priority get **discretion** (humanitarian).
//! - **Where the recommendation is none** (citizens, lawful status below Level 1): **no
//!   action** (not removable), except that half of the lawful residents with a Level 2
//!   conviction get a detainer (criminal priority) — the officer's call against the advice,
//!   which the documents leave to officers (seed 000: the federal government "determines what
//!   immigration enforcement action, if any, is appropriate").
//! - **The LESC**: of the detainers, one in forty draws the jail's notice of a possible crime
//!   victim, one in forty the jail's notice of a witness, and one in forty a hotline call from
//!   the person (a crime victim) (seed 001: the form asks the jail to "notify the ICE LESC";
//!   the hotline is on the form).
//! - **A review** keeps the detainer of a Level 1 offender (public safety: "the exercise of
//!   discretion is inappropriate in cases involving threats to public safety", seed 000) and
//!   lifts the others (victim or witness).
//! - **Courts convict** about one in two of those held under a detainer operative only on
//!   conviction (arrested solely for a minor traffic offence), 30 days after booking; the
//!   bureau reports it and the detainer becomes operative.
//! - **Civil-rights complaints**: one in twenty people held under a detainer that stands
//!   complain of racial profiling through the Joint Intake Center, 10 days after booking; CRCL
//!   takes it 2 days later and then, by equal shares, keeps it under investigation (open),
//!   closes it not substantiated, notifies DOJ and closes it substantiated, or sees it
//!   withdrawn ([`complaint_path`]). The office reads the flag on its stream.
//! - **About one in three** people held under a detainer that stands (and, if operative only
//!   on conviction, was made operative) and within ICE's priorities are removed, one in forty
//!   of the rest ([`removed`]), 45 days after booking, except those whose
//!   complaint is still open (the removal is asked of one of them, and must be refused).

use crate::verify::{ComplaintSeen, DecisionSeen, Observations, ReviewSeen};
use interop_client::Client;
use interop_gateway::auth::principal::Principal;
use interop_gateway_cli::pki::{self, PkiDir};
use interop_proto::v1 as pb;
use pb::complaint_service_client::ComplaintServiceClient;
use pb::field_office_service_client::FieldOfficeServiceClient;
use pb::lesc_service_client::LescServiceClient;
use pb::submission_service_client::SubmissionServiceClient;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

/// A draw in `0..n` from the TCN, salted per choice so the choices are independent.
fn draw(tcn: &str, salt: u32, n: u32) -> u32 {
    let h = tcn.bytes().fold(2_166_136_261u32 ^ salt, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    });
    // FNV-1a's low bits are weak for short keys; fold the high half in.
    (h ^ (h >> 16)) % n
}

const SALT_DISCRETION: u32 = 0x0D15;
const SALT_AGAINST: u32 = 0xA6A1;
const SALT_LESC: u32 = 0x1E5C;
const SALT_REMOVAL: u32 = 0x4E30;
const SALT_COURT: u32 = 0xC0C7;
const SALT_COMPLAINT: u32 = 0xC8C1;
const SALT_COMPLAINT_PATH: u32 = 0xC8C2;

/// Whether the person held under `tcn`'s standing detainer complains to CRCL (about one in
/// twenty).
pub fn complains(tcn: &str) -> bool {
    draw(tcn, SALT_COMPLAINT, 20) == 0
}

/// The stages CRCL moves `tcn`'s complaint to after it was received, each with its day
/// counted from the day received, and the outcome it closes with (`Unspecified`: still
/// open).
pub fn complaint_path(tcn: &str) -> (Vec<(pb::ComplaintStage, u64)>, pb::ComplaintOutcome) {
    use pb::ComplaintOutcome as O;
    use pb::ComplaintStage as S;
    match draw(tcn, SALT_COMPLAINT_PATH, 4) {
        0 => (
            vec![(S::WithCrcl, 2), (S::UnderInvestigation, 10)],
            O::Unspecified,
        ),
        1 => (
            vec![
                (S::WithCrcl, 2),
                (S::UnderInvestigation, 10),
                (S::Closed, 60),
            ],
            O::NotSubstantiated,
        ),
        2 => (
            vec![
                (S::WithCrcl, 2),
                (S::UnderInvestigation, 10),
                (S::DojNotified, 40),
                (S::Closed, 90),
            ],
            O::Substantiated,
        ),
        _ => (vec![(S::WithCrcl, 2), (S::Closed, 5)], O::Withdrawn),
    }
}

/// CRCL's intake at `endpoint`, or `None` (said once on stderr) where the PKI predates the
/// `crcl` identity (`pki init` issues it): the run then files no complaints.
pub async fn crcl_client(
    endpoint: &str,
    pki: &PkiDir,
) -> anyhow::Result<Option<ComplaintServiceClient<tonic::transport::Channel>>> {
    if !pki.client(&Principal::Crcl).cert.exists() {
        eprintln!(
            "note: {} has no crcl certificate (made before complaints existed): no complaints are filed in this run",
            pki.0.display()
        );
        return Ok(None);
    }
    let ch = pki::connect(endpoint, pki, &Principal::Crcl).await?;
    Ok(Some(ComplaintServiceClient::new(ch)))
}

/// The day a complaint about `booked` is received (10 days after booking).
pub fn complaint_received(booked: &prost_types::Timestamp) -> chrono::NaiveDate {
    chrono::DateTime::from_timestamp(booked.seconds, 0)
        .unwrap_or_default()
        .date_naive()
        + chrono::Duration::days(10)
}

/// Whether the court convicts the person held under a detainer operative only on conviction
/// (about one in two), 30 days after booking.
pub fn convicted(tcn: &str) -> bool {
    draw(tcn, SALT_COURT, 2) == 0
}

/// What the office decides on an identification, and why.
pub fn decision(o: &pb::IdentOutcome) -> (pb::Action, Vec<pb::Reason>) {
    let rec = pb::Recommendation::try_from(o.recommendation).unwrap_or(pb::Recommendation::None);
    let level = pb::PriorityLevel::try_from(o.priority_level).unwrap_or(pb::PriorityLevel::None);
    let convicted = !matches!(
        level,
        pb::PriorityLevel::None | pb::PriorityLevel::Unspecified
    );
    let serious = matches!(
        level,
        pb::PriorityLevel::PriorityLevel1 | pb::PriorityLevel::PriorityLevel2
    );
    let non_criminal = !o.non_criminal_priorities.is_empty();
    if rec != pb::Recommendation::None {
        if !serious && !non_criminal && draw(&o.tcn, SALT_DISCRETION, 20) == 0 {
            return (pb::Action::Discretion, vec![pb::Reason::Humanitarian]);
        }
        let mut reasons = Vec::new();
        if convicted {
            reasons.push(pb::Reason::CriminalPriority);
        }
        if non_criminal {
            reasons.push(pb::Reason::NonCriminalPriority);
        }
        if reasons.is_empty() {
            reasons.push(pb::Reason::PendingCharges);
        }
        return (pb::Action::Detainer, reasons);
    }
    let lawful_resident = o.status == pb::ImmigrationStatus::LawfulPermanentResident as i32;
    if lawful_resident
        && level == pb::PriorityLevel::PriorityLevel2
        && draw(&o.tcn, SALT_AGAINST, 2) == 0
    {
        return (pb::Action::Detainer, vec![pb::Reason::CriminalPriority]);
    }
    (pb::Action::NoAction, vec![pb::Reason::NotRemovable])
}

/// Who tells the LESC about the person held under the detainer of `tcn`, and what.
pub fn lesc_notices(tcn: &str) -> Vec<(pb::LescSource, pb::LescConcern)> {
    match draw(tcn, SALT_LESC, 40) {
        0 => vec![(pb::LescSource::Jail, pb::LescConcern::CrimeVictim)],
        1 => vec![(pb::LescSource::Jail, pb::LescConcern::Witness)],
        2 => vec![(pb::LescSource::Hotline, pb::LescConcern::CrimeVictim)],
        _ => vec![],
    }
}

/// The office's review of a detainer after an LESC notice: lift it, and why.
pub fn review(o: &pb::IdentOutcome) -> (bool, Vec<pb::Reason>) {
    if o.priority_level == pb::PriorityLevel::PriorityLevel1 as i32 {
        (false, vec![pb::Reason::PublicSafety])
    } else {
        (true, vec![pb::Reason::VictimOrWitness])
    }
}

/// Whether the person held under the standing detainer of identification `o` is removed:
/// about one in three of those within ICE's priorities (a conviction, or a non-criminal
/// priority), one in forty of the rest, so that removals fall within the priorities about as
/// often as the documents report (seed 001: "Through fiscal year 2011, 94 percent of all
/// removals identified through Secure Communities fell within these stated priorities").
pub fn removed(o: &pb::IdentOutcome) -> bool {
    let convicted = !matches!(
        pb::PriorityLevel::try_from(o.priority_level),
        Ok(pb::PriorityLevel::None | pb::PriorityLevel::Unspecified) | Err(_)
    );
    let priority = convicted || !o.non_criminal_priorities.is_empty();
    draw(&o.tcn, SALT_REMOVAL, if priority { 3 } else { 40 }) == 0
}

fn ts(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

/// The ICE side of a run, after every answer was collected: decisions on every identification
/// the offices were told of, the jails' detainers and copies, LESC notices, reviews, lifts and
/// removals, each asked twice (the repeat must change nothing). What was asked and answered
/// goes to `obs`.
pub async fn act(
    endpoint: &str,
    pki: &PkiDir,
    obs: &mut Observations,
    bureaus: &BTreeMap<String, Client>,
    heads: &BTreeMap<String, u64>,
    planned: &HashSet<String>,
    settle: Duration,
) -> anyhow::Result<()> {
    let mut offices: BTreeMap<String, Client> = BTreeMap::new();
    // TCN → (the office told, the identification).
    let mut outcomes: HashMap<String, (String, pb::IdentOutcome)> = HashMap::new();
    let mut last_cursor: BTreeMap<String, u64> = BTreeMap::new();
    let told: Vec<(String, pb::IdentOutcome)> = obs
        .office
        .iter()
        .filter_map(|(office, n, _)| Some((office.clone(), n.outcome.clone()?)))
        .collect();
    for (office, n, _) in &obs.office {
        let c = last_cursor.entry(office.clone()).or_default();
        *c = (*c).max(n.cursor);
    }
    for (office, o) in told {
        if !offices.contains_key(&office) {
            let who = Principal::FieldOffice {
                office: office.clone(),
            };
            offices.insert(
                office.clone(),
                pki::connect_client(endpoint, pki, &who).await?,
            );
        }
        let mut c = FieldOfficeServiceClient::new(offices[&office].channel());
        let state = o.ori[..2].to_string();
        let (action, reasons) = decision(&o);
        let booked = o.booked_at.unwrap_or_default();
        let req = pb::DecideRequest {
            state: state.clone(),
            tcn: o.tcn.clone(),
            action: action as i32,
            reasons: reasons.iter().map(|r| *r as i32).collect(),
            scheduled_release: (action == pb::Action::Detainer).then_some(prost_types::Timestamp {
                seconds: booked.seconds + 36 * 3600,
                nanos: 0,
            }),
        };
        let first = c.decide(req.clone()).await?.into_inner();
        let again = c.decide(req.clone()).await?.into_inner();
        // Once decided, another action is refused (asked of the first identification only).
        let other_refused = if obs.decisions.is_empty() {
            let other = pb::DecideRequest {
                action: if action == pb::Action::NoAction {
                    pb::Action::Discretion
                } else {
                    pb::Action::NoAction
                } as i32,
                reasons: vec![pb::Reason::OutsidePriorities as i32],
                scheduled_release: None,
                ..req.clone()
            };
            let refused = c.decide(other).await;
            Some(refused.is_err_and(|s| s.code() == tonic::Code::FailedPrecondition))
        } else {
            None
        };
        if let Some(d) = &first.detainer {
            obs.detainers_issued
                .push((state.clone(), o.tcn.clone(), d.detainer_id.clone()));
        }
        obs.decisions.push(DecisionSeen {
            state,
            asked: action as i32,
            reasons: req.reasons,
            recommendation: o.recommendation,
            repeat_same: first == again,
            other_refused,
            decision: first,
        });
        outcomes.insert(o.tcn.clone(), (office, o));
    }

    // The jails: each detainer with the form's notice, and the copy given to the person (and
    // the bureaus read the activation notices of the run).
    let mut held: Vec<(String, pb::Detainer)> = Vec::new();
    for (state, bureau) in bureaus {
        let mut s = bureau.follow_responses(Some(heads[state]), false);
        while let Some(r) = s.next().await? {
            let d = match r.body {
                Some(pb::bureau_response::Body::Detainer(d)) => d,
                Some(pb::bureau_response::Body::ActivationNotice(n)) => {
                    obs.activation_notices.push((state.clone(), n));
                    continue;
                }
                _ => continue,
            };
            if !planned.contains(&r.tcn) {
                continue;
            }
            if d.notice.as_ref() != Some(&interop_gateway::rules::detainer::notice()) {
                obs.detainer_notices_wrong.push(r.tcn.clone());
            }
            let mut jail = SubmissionServiceClient::new(bureau.channel());
            let ack = pb::AcknowledgeDetainerCopyRequest {
                tcn: r.tcn.clone(),
                given_at: Some(ts(chrono::Utc::now())),
            };
            let first = jail
                .acknowledge_detainer_copy(ack.clone())
                .await?
                .into_inner();
            let again = jail.acknowledge_detainer_copy(ack).await?.into_inner();
            if first == again && first.detainer_id == d.detainer_id {
                obs.detainer_copies
                    .push((state.clone(), r.tcn.clone(), first.detainer_id));
            }
            obs.detainers_received
                .push((state.clone(), r.tcn.clone(), d.detainer_id.clone()));
            held.push((state.clone(), d));
        }
    }

    // The LESC hears of some of them: from the jail, or from the person on the hotline.
    let mut lesc: Option<LescServiceClient<tonic::transport::Channel>> = None;
    for (state, d) in &held {
        for (source, concern) in lesc_notices(&d.tcn) {
            let at = Some(ts(chrono::Utc::now()));
            let notice = match source {
                pb::LescSource::Jail => {
                    let mut jail = SubmissionServiceClient::new(bureaus[state].channel());
                    let req = pb::NotifyLescRequest {
                        tcn: d.tcn.clone(),
                        concerns: vec![concern as i32],
                        noticed_at: at,
                    };
                    let first = jail.notify_lesc(req.clone()).await?.into_inner();
                    let again = jail.notify_lesc(req).await?.into_inner();
                    (first == again).then_some(first)
                }
                _ => {
                    if lesc.is_none() {
                        let ch = pki::connect(endpoint, pki, &Principal::Lesc).await?;
                        lesc = Some(LescServiceClient::new(ch));
                    }
                    let c = lesc.as_mut().expect("just connected");
                    let req = pb::RecordHotlineCallRequest {
                        state: state.clone(),
                        tcn: d.tcn.clone(),
                        concerns: vec![concern as i32],
                        called_at: at,
                    };
                    let first = c.record_hotline_call(req.clone()).await?.into_inner();
                    let again = c.record_hotline_call(req).await?.into_inner();
                    (first == again).then_some(first)
                }
            };
            obs.lesc_sent.push((
                d.field_office.clone(),
                notice.map(|n| n.notice_id).unwrap_or_default(),
                d.tcn.clone(),
            ));
        }
    }

    // Each office reads the notices about its detainers from its stream, and reviews them.
    let deadline = Instant::now() + settle;
    let mut expected: BTreeMap<&str, usize> = BTreeMap::new();
    for (office, _, _) in &obs.lesc_sent {
        *expected.entry(office.as_str()).or_default() += 1;
    }
    for (office, want) in expected {
        let client = &offices[office];
        let mut got: Vec<pb::LescNotice> = Vec::new();
        loop {
            got.clear();
            let mut s = client.subscription(last_cursor.get(office).copied(), false);
            while let Some(n) = s.next().await? {
                if let Some(notice) = n.lesc_notice
                    && planned.contains(&notice.tcn)
                {
                    got.push(notice);
                }
            }
            if got.len() >= want || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut c = FieldOfficeServiceClient::new(client.channel());
        let mut reviewed = HashSet::new();
        for notice in got {
            obs.lesc_received
                .push((office.to_string(), notice.notice_id.clone()));
            if !reviewed.insert(notice.tcn.clone()) {
                continue;
            }
            let Some((_, o)) = outcomes.get(&notice.tcn) else {
                continue;
            };
            let (lift, reasons) = review(o);
            let req = pb::ReviewDetainerRequest {
                state: notice.state.clone(),
                tcn: notice.tcn.clone(),
                lift,
                reasons: reasons.iter().map(|r| *r as i32).collect(),
            };
            let first = c.review_detainer(req.clone()).await?.into_inner();
            let again = c.review_detainer(req).await?.into_inner();
            obs.reviews.push(ReviewSeen {
                state: notice.state.clone(),
                tcn: notice.tcn.clone(),
                lift,
                repeat_same: first == again,
                review: first,
            });
        }
    }

    // The courts convict some of those held under a detainer operative only on conviction;
    // the bureau reports it (twice: recorded once).
    let lifted_now: HashSet<String> = obs
        .reviews
        .iter()
        .filter(|r| r.review.lifted)
        .map(|r| r.tcn.clone())
        .collect();
    for (state, d) in &held {
        if !d.operative_on_conviction || lifted_now.contains(&d.tcn) || !convicted(&d.tcn) {
            continue;
        }
        let Some((_, o)) = outcomes.get(&d.tcn) else {
            continue;
        };
        let day = chrono::DateTime::from_timestamp(o.booked_at.unwrap_or_default().seconds, 0)
            .unwrap_or_default()
            .date_naive()
            + chrono::Duration::days(30);
        let mut jail = SubmissionServiceClient::new(bureaus[state].channel());
        let req = pb::ReportConvictionRequest {
            tcn: d.tcn.clone(),
            convicted_on: day.to_string(),
        };
        let first = jail.report_conviction(req.clone()).await?.into_inner();
        let again = jail.report_conviction(req).await?.into_inner();
        obs.convictions.push((
            state.clone(),
            d.tcn.clone(),
            if first == again && first.detainer_id == d.detainer_id {
                first.detainer_id
            } else {
                String::new()
            },
        ));
    }

    // The jails learn of the lifts and of the detainers made operative.
    let lifts = obs.reviews.iter().filter(|r| r.review.lifted).count();
    loop {
        obs.lifts_received.clear();
        obs.operative_received.clear();
        for (state, bureau) in bureaus {
            let mut s = bureau.follow_responses(Some(heads[state]), false);
            while let Some(r) = s.next().await? {
                if !planned.contains(&r.tcn) {
                    continue;
                }
                match r.body {
                    Some(pb::bureau_response::Body::DetainerLifted(l)) => obs
                        .lifts_received
                        .push((state.clone(), r.tcn.clone(), l.detainer_id)),
                    Some(pb::bureau_response::Body::DetainerOperative(o)) => obs
                        .operative_received
                        .push((state.clone(), r.tcn.clone(), o.detainer_id)),
                    _ => {}
                }
            }
        }
        let all = obs.lifts_received.len() >= lifts
            && obs.operative_received.len() >= obs.convictions.len();
        if all || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Complaints: some of those whose detainer stands complain; CRCL moves each along its
    // path (every request twice: the repeat changes nothing).
    let complainants: Vec<&(String, pb::Detainer)> = held
        .iter()
        .filter(|(_, d)| !lifted_now.contains(&d.tcn) && complains(&d.tcn))
        .collect();
    let mut crcl = if complainants.is_empty() {
        None
    } else {
        crcl_client(endpoint, pki).await?
    };
    let mut open_complaint: HashSet<String> = HashSet::new();
    for (state, d) in complainants {
        let Some((office, o)) = outcomes.get(&d.tcn) else {
            continue;
        };
        let Some(c) = crcl.as_mut() else { break };
        let received = complaint_received(&o.booked_at.unwrap_or_default());
        let filing = pb::FileComplaintRequest {
            intake_id: format!("JIC-{}", d.tcn),
            complainant: pb::ComplainantKind::Person as i32,
            complainant_is_booked_person: true,
            state: state.clone(),
            tcn: d.tcn.clone(),
            jurisdiction_id: String::new(),
            allegation: pb::Allegation::RacialOrEthnicProfiling as i32,
            channel: pb::ComplaintChannel::JointIntakeCenter as i32,
            received_on: received.to_string(),
        };
        let first = c.file_complaint(filing.clone()).await?.into_inner();
        let mut repeats_same = c.file_complaint(filing).await?.into_inner() == first;
        let (path, outcome) = complaint_path(&d.tcn);
        let mut last = first;
        for (stage, day) in &path {
            let req = pb::AdvanceComplaintRequest {
                complaint_id: last.complaint_id.clone(),
                stage: *stage as i32,
                on: (received + chrono::Days::new(*day)).to_string(),
                outcome: if *stage == pb::ComplaintStage::Closed {
                    outcome as i32
                } else {
                    0
                },
            };
            last = c.advance_complaint(req.clone()).await?.into_inner();
            repeats_same &= c.advance_complaint(req).await?.into_inner() == last;
        }
        if outcome == pb::ComplaintOutcome::Unspecified {
            open_complaint.insert(d.tcn.clone());
        }
        obs.complaints.push(ComplaintSeen {
            state: state.clone(),
            tcn: d.tcn.clone(),
            office: office.clone(),
            complaint: last,
            repeats_same,
        });
    }
    // Each office reads the flags of its detainers' complaints.
    let mut want_flags: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &obs.complaints {
        *want_flags.entry(c.office.as_str()).or_default() += 1;
    }
    for (office, want) in want_flags {
        loop {
            let mut got = Vec::new();
            let mut s = offices[office].subscription(last_cursor.get(office).copied(), false);
            while let Some(n) = s.next().await? {
                if let Some(f) = n.complaint_flag
                    && planned.contains(&f.tcn)
                {
                    got.push((office.to_string(), f.complaint_id));
                }
            }
            if got.len() >= want || Instant::now() > deadline {
                obs.complaint_flags_received.extend(got);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Removals: about a third of those whose detainer stands, recorded twice (counted once);
    // a lifted detainer's removal must be refused, and so must an open complainant's.
    let lifted: HashSet<&str> = obs
        .reviews
        .iter()
        .filter(|r| r.review.lifted)
        .map(|r| r.tcn.as_str())
        .collect();
    let detained: Vec<(String, String, String)> = obs.detainers_issued.clone();
    let made_operative: HashSet<String> =
        obs.convictions.iter().map(|(_, t, _)| t.clone()).collect();
    let on_conviction: HashSet<&str> = held
        .iter()
        .filter(|(_, d)| d.operative_on_conviction)
        .map(|(_, d)| d.tcn.as_str())
        .collect();
    let mut asked_lifted = false;
    let mut asked_complainant = false;
    let mut asked_unconvicted = false;
    for (state, tcn, _) in detained {
        let Some((office, o)) = outcomes.get(&tcn) else {
            continue;
        };
        let mut c = FieldOfficeServiceClient::new(offices[office].channel());
        let day = chrono::DateTime::from_timestamp(o.booked_at.unwrap_or_default().seconds, 0)
            .unwrap_or_default()
            .date_naive()
            + chrono::Duration::days(45);
        let r = pb::RecordRemovalRequest {
            state: state.clone(),
            tcn: tcn.clone(),
            removed_on: day.to_string(),
        };
        if lifted.contains(tcn.as_str()) {
            if !asked_lifted {
                asked_lifted = true;
                let refused = c.record_removal(r).await;
                obs.removal_after_lift_refused =
                    Some(refused.is_err_and(|s| s.code() == tonic::Code::FailedPrecondition));
            }
            continue;
        }
        if on_conviction.contains(tcn.as_str()) && !made_operative.contains(&tcn) {
            if !asked_unconvicted {
                asked_unconvicted = true;
                let refused = c.record_removal(r).await;
                obs.removal_before_conviction_refused =
                    Some(refused.is_err_and(|s| s.code() == tonic::Code::FailedPrecondition));
            }
            continue;
        }
        if open_complaint.contains(&tcn) {
            if !asked_complainant {
                asked_complainant = true;
                let refused = c.record_removal(r).await;
                obs.removal_of_complainant_refused =
                    Some(refused.is_err_and(|s| s.code() == tonic::Code::FailedPrecondition));
            }
            continue;
        }
        if removed(o) {
            c.record_removal(r.clone()).await?;
            c.record_removal(r).await?;
            obs.removals.push((state, tcn));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(
        tcn: &str,
        status: pb::ImmigrationStatus,
        level: pb::PriorityLevel,
        non_criminal: &[pb::NonCriminalPriority],
        rec: pb::Recommendation,
    ) -> pb::IdentOutcome {
        pb::IdentOutcome {
            tcn: tcn.into(),
            status: status as i32,
            priority_level: level as i32,
            non_criminal_priorities: non_criminal.iter().map(|p| *p as i32).collect(),
            recommendation: rec as i32,
            ..Default::default()
        }
    }

    /// The first TCN of `TX-OFF-0000`.. for which `draw(tcn, salt, n) == want` holds (or not).
    fn tcn_where(salt: u32, n: u32, want: bool) -> String {
        (0..10_000)
            .map(|i| format!("TX-OFF-{i:04}"))
            .find(|t| (draw(t, salt, n) == 0) == want)
            .expect("a TCN")
    }

    #[test]
    fn officers_follow_the_advice_with_the_reasons_it_gives() {
        use pb::{ImmigrationStatus as S, PriorityLevel as L, Recommendation as R};
        let plain = tcn_where(SALT_DISCRETION, 20, false);
        let felon = outcome(&plain, S::VisaOverstay, L::PriorityLevel2, &[], R::Detainer);
        assert_eq!(
            decision(&felon),
            (pb::Action::Detainer, vec![pb::Reason::CriminalPriority])
        );
        let fugitive = outcome(
            &plain,
            S::Fugitive,
            L::PriorityLevel3,
            &[pb::NonCriminalPriority::ImmigrationFugitive],
            R::Detainer,
        );
        assert_eq!(
            decision(&fugitive).1,
            [
                pb::Reason::CriminalPriority,
                pb::Reason::NonCriminalPriority
            ]
        );
        let traffic = outcome(
            &plain,
            S::VisaOverstay,
            L::None,
            &[],
            R::DetainerOnConviction,
        );
        assert_eq!(
            decision(&traffic),
            (pb::Action::Detainer, vec![pb::Reason::PendingCharges])
        );
        let citizen = outcome(&plain, S::UsCitizen, L::PriorityLevel1, &[], R::None);
        assert_eq!(
            decision(&citizen),
            (pb::Action::NoAction, vec![pb::Reason::NotRemovable])
        );
    }

    #[test]
    fn some_officers_decide_against_the_advice() {
        use pb::{ImmigrationStatus as S, PriorityLevel as L, Recommendation as R};
        // Discretion: only where there is neither a Level 1/2 conviction nor another priority.
        let lucky = tcn_where(SALT_DISCRETION, 20, true);
        let minor = outcome(&lucky, S::VisaOverstay, L::PriorityLevel3, &[], R::Detainer);
        assert_eq!(
            decision(&minor),
            (pb::Action::Discretion, vec![pb::Reason::Humanitarian])
        );
        let serious = outcome(&lucky, S::VisaOverstay, L::PriorityLevel2, &[], R::Detainer);
        assert_eq!(decision(&serious).0, pb::Action::Detainer);
        // A detainer against "none": a lawful resident with a Level 2 conviction, half the time.
        let against = tcn_where(SALT_AGAINST, 2, true);
        let lpr = outcome(
            &against,
            S::LawfulPermanentResident,
            L::PriorityLevel2,
            &[],
            R::None,
        );
        assert_eq!(
            decision(&lpr),
            (pb::Action::Detainer, vec![pb::Reason::CriminalPriority])
        );
        let lpr3 = outcome(
            &against,
            S::LawfulPermanentResident,
            L::PriorityLevel3,
            &[],
            R::None,
        );
        assert_eq!(decision(&lpr3).0, pb::Action::NoAction);
        let not = tcn_where(SALT_AGAINST, 2, false);
        let lpr = outcome(
            &not,
            S::LawfulPermanentResident,
            L::PriorityLevel2,
            &[],
            R::None,
        );
        assert_eq!(decision(&lpr).0, pb::Action::NoAction);
        // Every decision's reasons are of the kind the gateway accepts for its action.
        for o in [&felon_like(&lucky), &lpr, &minor] {
            let (action, reasons) = decision(o);
            let enforce = action == pb::Action::Detainer;
            assert!(
                reasons
                    .iter()
                    .all(|r| interop_gateway::rules::enforcement::enforces(*r) == enforce)
            );
        }
    }

    fn felon_like(tcn: &str) -> pb::IdentOutcome {
        outcome(
            tcn,
            pb::ImmigrationStatus::PriorRemoval,
            pb::PriorityLevel::PriorityLevel1,
            &[pb::NonCriminalPriority::RepeatViolatorOrPriorRemoval],
            pb::Recommendation::Detainer,
        )
    }

    #[test]
    fn reviews_keep_level_one_and_lift_the_rest() {
        let l1 = felon_like("TX-OFF-0001");
        assert_eq!(review(&l1), (false, vec![pb::Reason::PublicSafety]));
        let mut l3 = l1.clone();
        l3.priority_level = pb::PriorityLevel::PriorityLevel3 as i32;
        assert_eq!(review(&l3), (true, vec![pb::Reason::VictimOrWitness]));
    }

    #[test]
    fn about_three_in_forty_detainers_reach_the_lesc() {
        let n = 40_000;
        let reached = (0..n)
            .filter(|i| !lesc_notices(&format!("TX-{i:08}")).is_empty())
            .count();
        // 3/40 = 7.5%; the hash spreads TCNs evenly (within a percentage point).
        assert!((2_600..3_400).contains(&reached), "{reached}");
    }

    #[test]
    fn removals_fall_within_the_priorities_about_as_the_documents_report() {
        let n = 40_000;
        let count = |level, nc: &[pb::NonCriminalPriority]| {
            (0..n)
                .filter(|i| {
                    removed(&outcome(
                        &format!("TX-{i:08}"),
                        pb::ImmigrationStatus::VisaOverstay,
                        level,
                        nc,
                        pb::Recommendation::Detainer,
                    ))
                })
                .count()
        };
        // A third of those within the priorities, a fortieth of the rest (within a point).
        let l3 = count(pb::PriorityLevel::PriorityLevel3, &[]);
        let fugitive = count(
            pb::PriorityLevel::None,
            &[pb::NonCriminalPriority::ImmigrationFugitive],
        );
        let other = count(pb::PriorityLevel::None, &[]);
        assert!((12_900..13_800).contains(&l3), "{l3}");
        assert!((12_900..13_800).contains(&fugitive), "{fugitive}");
        assert!((600..1_400).contains(&other), "{other}");
    }
}
