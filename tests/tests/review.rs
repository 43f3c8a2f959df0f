//! The profiling review end to end: identifications by race/ethnicity against each
//! jurisdiction's arrest-rate data, the quarterly assessment run on schedule as log time
//! advances, its revisions on late data, and the in-depth analysis of last quarter's flags.

use interop_e2e::*;
use interop_gateway::auth::principal::Principal;
use interop_proto::v1 as pb;
use std::time::Duration;
use tonic::Code;

fn minor(mut s: pb::Submission) -> pb::Submission {
    s.charges = vec![pb::Charge {
        code: "28-3473".into(),
        class: pb::OffenseClass::MinorTraffic as i32,
    }];
    s
}

fn dated(mut s: pb::Submission, day: &str) -> pb::Submission {
    let t = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .unwrap()
        .and_hms_opt(12, 0, 0)
        .unwrap()
        .and_utc();
    s.booked_at = Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    });
    s
}

/// Submits `subs` (all identifications of the Hispanic test person) and waits for each.
async fn submit_all(gw: &TestGateway, subs: Vec<(&'static str, pb::Submission)>) {
    for st in ["TX", "CA"] {
        let batch: Vec<pb::Submission> = subs
            .iter()
            .filter(|(s, _)| *s == st)
            .map(|(_, b)| b.clone())
            .collect();
        let mut out = gw
            .bureau(st)
            .await
            .submit_stream(tokio_stream::iter(batch))
            .await
            .unwrap()
            .into_inner();
        while out.message().await.unwrap().is_some() {}
    }
    for (st, s) in &subs {
        wait_completed(gw, st, &s.tcn).await;
    }
}

/// Twelve identifications in each of three jurisdictions in June 2011: TX201 all on minor
/// traffic charges (its arrest data: a tenth for everyone), TX203 seven of twelve (its arrest
/// data: six tenths for everyone, strict enforcement), CA037 one of twelve.
fn june() -> Vec<(&'static str, pb::Submission)> {
    let mut subs = Vec::new();
    for i in 0..12 {
        subs.push((
            "TX",
            minor(booking(
                &format!("TX-PLANT-{i:04}"),
                TX_RECEIVING,
                OVERSTAY_FELON,
            )),
        ));
        let strict = booking(
            &format!("TX-STRICT-{i:04}"),
            TX_NOT_RECEIVING,
            OVERSTAY_FELON,
        );
        subs.push(("TX", if i < 7 { minor(strict) } else { strict }));
        let ca = booking(&format!("CA-NORM-{i:04}"), CA_RECEIVING, OVERSTAY_FELON);
        subs.push(("CA", if i < 1 { minor(ca) } else { ca }));
    }
    subs
}

/// The review flags the group arrested for minor traffic far beyond its jurisdiction's arrest
/// data, not the jurisdiction that arrests everyone so (which the nation's rate would flag),
/// and its figures are the identifications, by group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_review_compares_identifications_with_arrest_rate_data() {
    let gw = TestGateway::start().await;
    submit_all(&gw, june()).await;
    // Complaints of profiling: two about the planted county in June (the quarter), one about
    // a California county in July (the next); the review lists them beside its flags.
    let mut crcl = pb::complaint_service_client::ComplaintServiceClient::new(
        gw.channel(Principal::Crcl).await,
    );
    for (intake, jurisdiction, on) in [
        ("ORG-1", TX_RECEIVING, "2011-06-20"),
        ("ORG-2", TX_RECEIVING, "2011-06-21"),
        ("ORG-3", CA_RECEIVING, "2011-07-02"),
    ] {
        crcl.file_complaint(pb::FileComplaintRequest {
            intake_id: intake.into(),
            complainant: pb::ComplainantKind::Organisation as i32,
            jurisdiction_id: jurisdiction.into(),
            allegation: pb::Allegation::RacialOrEthnicProfiling as i32,
            channel: pb::ComplaintChannel::Crcl as i32,
            received_on: on.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let mut admin = gw.admin().await;
    let review = admin
        .quarterly_review(pb::QuarterlyReviewRequest {
            quarter: "FY2011Q3".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (review.from_month.as_str(), review.to_month.as_str()),
        ("2011-04", "2011-06")
    );
    assert_eq!(review.identifications, 36);
    assert_eq!(review.tests, 3, "one group in each of three jurisdictions");
    assert!(review.method.contains("Mantel-Haenszel"));
    let figures: Vec<(String, String, u64, u64)> = review
        .figures
        .iter()
        .map(|f| {
            (
                f.jurisdiction_id.clone(),
                f.group.clone(),
                f.minor_traffic,
                f.identifications,
            )
        })
        .collect();
    assert_eq!(
        figures,
        [
            (CA_RECEIVING.into(), "hispanic".into(), 1, 12),
            (TX_RECEIVING.into(), "hispanic".into(), 12, 12),
            (TX_NOT_RECEIVING.into(), "hispanic".into(), 7, 12),
        ]
    );
    assert_eq!(review.flags.len(), 1, "{:?}", review.flags);
    let f = &review.flags[0];
    assert_eq!(
        (f.jurisdiction_id.as_str(), f.group.as_str()),
        (TX_RECEIVING, "hispanic")
    );
    assert_eq!((f.count, f.trials), (12, 12));
    // Hand-computed: others' arrest rate 0.1; the common odds ratio without TX201 pools
    // TX203 (x 7, n 12, q 0.6) and CA037 (1, 12, 0.1): (7·0.4 + 1·0.9 + ½) / (5·0.6 + 11·0.1 + ½).
    assert!((f.arrest_rate - 0.1).abs() < 1e-12);
    let theta = (7.0 * 0.4 + 0.9 + 0.5) / (5.0 * 0.6 + 11.0 * 0.1 + 0.5);
    assert!(
        (f.common_odds_ratio - theta).abs() < 1e-9,
        "{}",
        f.common_odds_ratio
    );
    let o = theta * 0.1 / 0.9;
    assert!((f.expected_rate - o / (1.0 + o)).abs() < 1e-9);
    assert!((f.p_value - (o / (1.0 + o)).powi(12)).abs() < 1e-15);
    assert_eq!(f.profiling_complaints, 2);
    // The strict county's 58% is above the nation's identifications, not its own arrests.
    let strict = review
        .tested
        .iter()
        .find(|t| t.jurisdiction_id == TX_NOT_RECEIVING)
        .unwrap();
    assert!((strict.arrest_rate - 0.6).abs() < 1e-12 && strict.p_value > 0.5);
    let complained = |r: &pb::OutlierReview| -> Vec<(String, u64, bool)> {
        r.complained_of
            .iter()
            .map(|c| (c.jurisdiction_id.clone(), c.profiling_complaints, c.flagged))
            .collect()
    };
    assert_eq!(
        complained(&review),
        [(TX_RECEIVING.to_string(), 2, true)],
        "July's is the next quarter's"
    );
    let q4 = admin
        .quarterly_review(pb::QuarterlyReviewRequest {
            quarter: "FY2011Q4".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(q4.flags.is_empty() && q4.tests == 0);
    assert_eq!(complained(&q4), [(CA_RECEIVING.to_string(), 1, false)]);
    // A malformed quarter, a calendar one, and one before the review began are refused.
    for bad in ["2011-Q3", "2011Q3", "FY2011Q2"] {
        let e = admin
            .quarterly_review(pb::QuarterlyReviewRequest {
                quarter: bad.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}");
        assert!(e.message().starts_with("quarter"), "{bad}: {}", e.message());
    }
}

/// Polls the latest assessment of `quarter` until `done` holds (at most 10 s).
async fn assessment_until(
    gw: &TestGateway,
    quarter: &str,
    done: impl Fn(&pb::QuarterlyAssessment) -> bool,
) -> pb::QuarterlyAssessment {
    let mut admin = gw.admin().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = admin
            .get_assessment(pb::GetAssessmentRequest {
                quarter: quarter.into(),
                revision: 0,
            })
            .await;
        if let Ok(a) = &got
            && done(a.get_ref())
        {
            return a.get_ref().clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{quarter} never reached the expected state: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The schedule assesses a quarter once log time is 30 days past its end, revises it when a
/// late booking of it arrives, and follows its flags up in the next quarter's in-depth
/// analysis; the stored assessments survive a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarters_are_assessed_on_schedule_revised_and_followed_up() {
    let gw = TestGateway::start().await;
    submit_all(&gw, june()).await;
    let mut admin = gw.admin().await;
    // Log time is June: FY2011Q3 is not due until 2011-07-30.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let e = admin
        .get_assessment(pb::GetAssessmentRequest {
            quarter: "FY2011Q3".into(),
            revision: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(
        e.message().contains("2011-07-30") && e.message().contains("2011-06-01"),
        "{}",
        e.message()
    );
    // A booking of 2011-07-30 moves log time past the due date.
    let july = dated(
        booking("CA-JULY-0001", CA_RECEIVING, OVERSTAY_FELON),
        "2011-07-30",
    );
    submit_all(&gw, vec![("CA", july)]).await;
    let first = assessment_until(&gw, "FY2011Q3", |_| true).await;
    assert_eq!(
        (first.revision, first.data_through.as_str()),
        (1, "2011-07-30")
    );
    let r = first.review.as_ref().unwrap();
    assert_eq!(r.flags.len(), 1);
    assert_eq!(r.flags[0].jurisdiction_id, TX_RECEIVING);
    assert!(first.in_depth.is_empty(), "FY2011Q3 is the first quarter");
    // A late June booking: a new revision with it, the first kept.
    let late = dated(
        minor(booking("TX-LATE-0001", TX_RECEIVING, OVERSTAY_FELON)),
        "2011-06-30",
    );
    submit_all(&gw, vec![("TX", late)]).await;
    let second = assessment_until(&gw, "FY2011Q3", |a| a.revision == 2).await;
    assert_eq!(second.review.as_ref().unwrap().identifications, 37);
    let kept = admin
        .get_assessment(pb::GetAssessmentRequest {
            quarter: "FY2011Q3".into(),
            revision: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept, first, "a revision is never rewritten");
    // FY2011Q4 (July-September) closes on 2011-10-30: its in-depth analysis follows TX201's
    // Hispanic identifications, none this quarter.
    let october = dated(
        booking("CA-OCT-0001", CA_RECEIVING, OVERSTAY_FELON),
        "2011-10-30",
    );
    submit_all(&gw, vec![("CA", october)]).await;
    let q4 = assessment_until(&gw, "FY2011Q4", |_| true).await;
    assert_eq!(q4.in_depth.len(), 1);
    let d = &q4.in_depth[0];
    assert_eq!(
        (
            d.jurisdiction_id.as_str(),
            d.group.as_str(),
            d.trials,
            d.persists
        ),
        (TX_RECEIVING, "hispanic", 0, false)
    );
    let listed: Vec<(String, u32)> = admin
        .list_assessments(pb::ListAssessmentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .assessments
        .into_iter()
        .map(|a| (a.quarter, a.revision))
        .collect();
    assert_eq!(
        listed,
        [("FY2011Q3".to_string(), 2), ("FY2011Q4".to_string(), 1)]
    );
    // Stored, not recomputed: the same after a restart.
    let gw = gw.restart(None).await;
    let again = assessment_until(&gw, "FY2011Q3", |_| true).await;
    assert_eq!(again, second);
}
