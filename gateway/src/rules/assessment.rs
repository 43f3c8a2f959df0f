//! The quarterly assessments shared with DOJ (seed 001: the review runs "four times a year",
//! outliers get "an in-depth analysis as the next quarter's data is analyzed", and the
//! assessments are shared "on a quarterly basis" with DOJ), run on schedule as time advances
//! in the log, not only when asked.
//!
//! - **Log time** is the latest booking date among the submissions this gateway completed
//!   since it started ([`Assessor::note`]).
//! - **A fiscal quarter closes** for review once log time is [`SETTLE_DAYS`] past its end
//!   (bookings arrive late; the documents give no delay, so this is an assumption). From
//!   FY2011Q3, the quarter the review began with.
//! - **Revisions.** A closed quarter is assessed once; a booking of it completed later (late
//!   data) marks it for a new revision, made once no late booking has arrived for a while or
//!   after the longest gap ([`Pacing`]), and a revision whose flags changed revises the next
//!   quarter too (its in-depth analysis follows them). Each revision is a
//!   write-once record `assessment/<FYyyyyQn>/<revision>`, counted by `assessment_rev/<FYyyyyQn>`
//!   in the same transaction, so replicas agree on the latest and none is ever rewritten.
//! - **Cost follows new work**: a pass reads the counters of the quarters marked since the
//!   last one, never the whole history.
//! - After a restart, log time starts again from the next completion; a quarter closed before
//!   it but never assessed is assessed then.

use crate::error::GatewayError;
use crate::rules::policy::PolicyBook;
use crate::rules::{review, statistics};
use crate::store::{Completion, DynStore, Once};
use chrono::{Datelike, NaiveDate};
use interop_proto::v1 as pb;
use prost::Message;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// Days after a quarter's end before it is reviewed (an assumption: the documents give none).
pub const SETTLE_DAYS: u64 = 30;

/// A federal fiscal quarter: (fiscal year, 1..=4).
pub type Quarter = (i32, u32);

/// The fiscal quarter a date falls in (October–December is Q1 of the next fiscal year).
pub fn quarter_of(d: NaiveDate) -> Quarter {
    let (y, m) = (d.year(), d.month());
    if m >= 10 {
        (y + 1, 1)
    } else {
        (y, m.div_ceil(3) + 1)
    }
}

/// `FYyyyyQn`.
pub fn name((fy, q): Quarter) -> String {
    format!("FY{fy:04}Q{q}")
}

/// The quarter a name gives (`FYyyyyQn`, from FY2011Q3), or the field's rule.
pub fn parse(s: &str) -> Result<Quarter, GatewayError> {
    let months = statistics::period(s, "", "").map_err(|(f, r)| GatewayError::invalid(f, r))?;
    let first = NaiveDate::parse_from_str(&format!("{}-01", months[0]), "%Y-%m-%d")
        .map_err(|_| GatewayError::invalid("quarter", "is not a valid quarter"))?;
    Ok(quarter_of(first))
}

fn next((fy, q): Quarter) -> Quarter {
    if q == 4 { (fy + 1, 1) } else { (fy, q + 1) }
}

fn previous((fy, q): Quarter) -> Quarter {
    if q == 1 { (fy - 1, 4) } else { (fy, q - 1) }
}

/// The last day of a quarter.
pub fn last_day(q: Quarter) -> NaiveDate {
    let (y, m) = statistics::fiscal_quarter_start(next(q).0, next(q).1);
    NaiveDate::from_ymd_opt(y, m, 1).expect("valid") - chrono::Days::new(1)
}

/// The first log date at which a quarter is reviewed.
pub fn due_on(q: Quarter) -> NaiveDate {
    last_day(q) + chrono::Days::new(SETTLE_DAYS)
}

fn months_of(q: Quarter) -> Vec<String> {
    statistics::period(&name(q), "", "").expect("a reviewed quarter")
}

fn record_key(q: Quarter, revision: u32) -> String {
    format!("assessment/{}/{revision}", name(q))
}

fn revision_counter(q: Quarter) -> String {
    format!("assessment_rev/{}", name(q))
}

/// How often a closed quarter is revised for late bookings: once none has arrived for
/// `quiet`, or, while they keep arriving, once `max_gap` has passed since its last revision.
/// So a burst of late data makes one revision, not one per pass, and a gateway that runs for
/// days stores a bounded number per quarter.
#[derive(Clone, Copy, Debug)]
pub struct Pacing {
    pub quiet: Duration,
    pub max_gap: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            quiet: Duration::from_secs(1),
            max_gap: Duration::from_secs(600),
        }
    }
}

/// Log time and the quarters to assess, shared by the pipeline and the scheduled pass.
#[derive(Debug, Default)]
pub struct Assessor {
    pacing: Pacing,
    /// Days from the common era of the latest booking completed since start (0 = none).
    through: AtomicI32,
    /// Quarters with bookings completed since their last assessment, and when the latest was.
    dirty: Mutex<BTreeMap<Quarter, Instant>>,
    /// When this gateway last assessed each quarter.
    assessed_at: Mutex<BTreeMap<Quarter, Instant>>,
    /// One pass at a time.
    pass: tokio::sync::Mutex<()>,
}

impl Assessor {
    pub fn new(pacing: Pacing) -> Assessor {
        Assessor {
            pacing,
            ..Default::default()
        }
    }

    /// A booking of `booked_on` completed.
    pub fn note(&self, booked_on: NaiveDate) {
        self.through
            .fetch_max(booked_on.num_days_from_ce(), Ordering::Relaxed);
        let q = quarter_of(booked_on);
        if q >= statistics::FIRST_REVIEWED_QUARTER {
            self.dirty
                .lock()
                .expect("poisoned")
                .insert(q, Instant::now());
        }
    }

    /// Whether a quarter assessed before is to be revised now (see [`Pacing`]); takes its
    /// mark if so.
    fn revise_now(&self, q: Quarter, now: Instant) -> bool {
        let mut dirty = self.dirty.lock().expect("poisoned");
        let Some(&marked) = dirty.get(&q) else {
            return false;
        };
        let last = self.assessed_at.lock().expect("poisoned").get(&q).copied();
        let due = now.saturating_duration_since(marked) >= self.pacing.quiet
            || last.is_none_or(|t| now.saturating_duration_since(t) >= self.pacing.max_gap);
        if due {
            dirty.remove(&q);
        }
        due
    }

    /// Log time: the latest booking date seen since start.
    pub fn through(&self) -> Option<NaiveDate> {
        match self.through.load(Ordering::Relaxed) {
            0 => None,
            d => NaiveDate::from_num_days_from_ce_opt(d),
        }
    }

    /// Assesses every closed quarter that has no assessment yet or new bookings since its
    /// last, oldest first. Returns the assessments written.
    pub async fn pass(
        &self,
        store: &DynStore,
        policy: &PolicyBook,
    ) -> Result<Vec<pb::QuarterlyAssessment>, GatewayError> {
        let _one = self.pass.lock().await;
        let Some(through) = self.through() else {
            return Ok(vec![]);
        };
        let mut done = Vec::new();
        let mut q = statistics::FIRST_REVIEWED_QUARTER;
        // The marked quarters, and those never assessed, up to the last closed one.
        let assessed = store
            .counters_with_prefix("assessment_rev/".to_string())
            .await?;
        let mut carry = false;
        while due_on(q) <= through {
            let rev = assessed.get(&revision_counter(q)).copied().unwrap_or(0) as u32;
            let never = rev == 0;
            if never || carry || self.revise_now(q, Instant::now()) {
                if never {
                    self.dirty.lock().expect("poisoned").remove(&q);
                }
                let before = if rev > 0 {
                    load(store, q, rev).await?.and_then(|a| a.review)
                } else {
                    None
                };
                let a = self.assess(store, policy, q, rev + 1, through).await?;
                let flags = |r: &Option<pb::OutlierReview>| {
                    r.as_ref()
                        .map(|r| {
                            r.flags
                                .iter()
                                .map(|f| (f.jurisdiction_id.clone(), f.group.clone()))
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default()
                };
                carry = flags(&before) != flags(&a.review);
                self.assessed_at
                    .lock()
                    .expect("poisoned")
                    .insert(q, Instant::now());
                done.push(a);
            } else {
                carry = false;
            }
            q = next(q);
        }
        Ok(done)
    }

    async fn assess(
        &self,
        store: &DynStore,
        policy: &PolicyBook,
        q: Quarter,
        revision: u32,
        through: NaiveDate,
    ) -> Result<pb::QuarterlyAssessment, GatewayError> {
        let months = months_of(q);
        let figures = review::figures_of(store, &months).await?;
        let mut r = review::review(policy, &figures);
        r.from_month = months.first().cloned().unwrap_or_default();
        r.to_month = months.last().cloned().unwrap_or_default();
        let in_depth = match latest(store, previous(q)).await?.and_then(|a| a.review) {
            Some(prev) => review::in_depth(policy, &prev, &figures),
            None => vec![],
        };
        let a = pb::QuarterlyAssessment {
            quarter: name(q),
            revision,
            data_through: through.to_string(),
            computed_at: Some(crate::convert::timestamp_ms(crate::convert::now_ms())),
            review: Some(r),
            in_depth,
        };
        let completion = Completion {
            counters: vec![(revision_counter(q), 1)],
            ..Default::default()
        };
        match store
            .append_once(record_key(q, revision), a.encode_to_vec(), completion)
            .await?
        {
            Once::Appended => {
                tracing::info!(
                    quarter = %a.quarter,
                    revision,
                    flags = a.review.as_ref().map_or(0, |r| r.flags.len()),
                    "quarterly assessment stored"
                );
                Ok(a)
            }
            // Another replica wrote this revision first: it stands.
            Once::Existing(bytes) => decode(&bytes, q, revision),
        }
    }
}

fn decode(
    bytes: &[u8],
    q: Quarter,
    revision: u32,
) -> Result<pb::QuarterlyAssessment, GatewayError> {
    pb::QuarterlyAssessment::decode(bytes).map_err(|_| {
        GatewayError::Internal(format!(
            "stored assessment {} revision {revision} is unreadable",
            name(q)
        ))
    })
}

async fn load(
    store: &DynStore,
    q: Quarter,
    revision: u32,
) -> Result<Option<pb::QuarterlyAssessment>, GatewayError> {
    match store.once_record(record_key(q, revision)).await? {
        Some(b) => decode(&b, q, revision).map(Some),
        None => Ok(None),
    }
}

/// The latest revision of a quarter's assessment, if it was assessed.
pub async fn latest(
    store: &DynStore,
    q: Quarter,
) -> Result<Option<pb::QuarterlyAssessment>, GatewayError> {
    let rev = store
        .counters_with_prefix(revision_counter(q))
        .await?
        .get(&revision_counter(q))
        .copied()
        .unwrap_or(0) as u32;
    if rev == 0 {
        return Ok(None);
    }
    load(store, q, rev).await
}

/// `AdminService.GetAssessment`.
pub async fn get(
    store: &DynStore,
    assessor: &Assessor,
    r: &pb::GetAssessmentRequest,
) -> Result<pb::QuarterlyAssessment, GatewayError> {
    let q = parse(&r.quarter)?;
    let found = if r.revision == 0 {
        latest(store, q).await?
    } else {
        load(store, q, r.revision).await?
    };
    found.ok_or_else(|| {
        let seen = assessor.through().map_or(
            "no booking completed since the gateway started".to_string(),
            |d| format!("the latest booking completed since start is dated {d}"),
        );
        GatewayError::NotFound(if r.revision == 0 {
            format!(
                "quarter: {} is assessed once the log holds a booking dated {} or later (the \
                 quarter's end and {SETTLE_DAYS} days); {seen}",
                name(q),
                due_on(q)
            )
        } else {
            format!("revision: {} has no revision {}", name(q), r.revision)
        })
    })
}

/// `AdminService.ListAssessments`.
pub async fn list(store: &DynStore) -> Result<pb::ListAssessmentsResponse, GatewayError> {
    let mut out = Vec::new();
    for (key, rev) in store
        .counters_with_prefix("assessment_rev/".to_string())
        .await?
    {
        let q = parse(key.trim_start_matches("assessment_rev/"))?;
        if let Some(a) = load(store, q, rev as u32).await? {
            let r = a.review.unwrap_or_default();
            out.push(pb::AssessmentSummary {
                quarter: a.quarter,
                revision: a.revision,
                data_through: a.data_through,
                tests: r.tests,
                flags: r.flags.len() as u32,
            });
        }
    }
    Ok(pb::ListAssessmentsResponse { assessments: out })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn fiscal_quarters_hand_checked() {
        // Seed 001: FY2011 Q3 is 1 April - 30 June 2011; FY2012 Q1 is October-December 2011.
        assert_eq!(quarter_of(d("2011-04-01")), (2011, 3));
        assert_eq!(quarter_of(d("2011-06-30")), (2011, 3));
        assert_eq!(quarter_of(d("2011-07-01")), (2011, 4));
        assert_eq!(quarter_of(d("2011-10-01")), (2012, 1));
        assert_eq!(quarter_of(d("2011-12-31")), (2012, 1));
        assert_eq!(quarter_of(d("2012-01-01")), (2012, 2));
        assert_eq!(last_day((2011, 3)), d("2011-06-30"));
        assert_eq!(last_day((2012, 1)), d("2011-12-31"));
        assert_eq!(due_on((2011, 3)), d("2011-07-30"));
        assert_eq!(name((2012, 1)), "FY2012Q1");
        assert_eq!(parse("FY2012Q1").unwrap(), (2012, 1));
        assert!(parse("FY2011Q2").is_err());
        assert!(parse("2011Q3").is_err());
    }

    #[test]
    fn log_time_marks_quarters_from_the_first_reviewed() {
        let a = Assessor::default();
        assert_eq!(a.through(), None);
        a.note(d("2011-03-31"));
        a.note(d("2011-08-02"));
        a.note(d("2011-05-01"));
        assert_eq!(a.through(), Some(d("2011-08-02")));
        let dirty: Vec<Quarter> = a.dirty.lock().unwrap().keys().copied().collect();
        assert_eq!(dirty, [(2011, 3), (2011, 4)]);
    }

    #[test]
    fn late_data_revises_a_quarter_once_quiet_or_after_the_longest_gap() {
        let a = Assessor::new(Pacing {
            quiet: Duration::from_secs(5),
            max_gap: Duration::from_secs(60),
        });
        let q = (2011, 3);
        let t0 = Instant::now();
        a.assessed_at.lock().unwrap().insert(q, t0);
        a.note(d("2011-05-01"));
        // Bookings still arriving: not yet.
        assert!(!a.revise_now(q, t0 + Duration::from_secs(1)));
        // Quiet for 5 s: now, once.
        assert!(a.revise_now(q, t0 + Duration::from_secs(6)));
        assert!(!a.revise_now(q, t0 + Duration::from_secs(7)));
        // Arriving without a pause: by the longest gap.
        a.note(d("2011-05-02"));
        let marked = a.dirty.lock().unwrap()[&q];
        a.dirty
            .lock()
            .unwrap()
            .insert(q, marked + Duration::from_secs(100));
        assert!(!a.revise_now(q, t0 + Duration::from_secs(59)));
        assert!(a.revise_now(q, t0 + Duration::from_secs(61)));
    }
}
