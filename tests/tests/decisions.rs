//! Officers decide, and victims and witnesses reach ICE through the LESC (issue 25), over real
//! mutual TLS:
//! - the automated recommendation only advises: a field office may decide a detainer, no
//!   action or discretion whatever it says (seed 000: the federal government "determines what
//!   immigration enforcement action, if any, is appropriate"); both are kept, audited and
//!   counted apart; discretion never rests on public safety (seed 000);
//! - the booking carries no victim flag; the jail's notice to the LESC and the person's call
//!   to its hotline (seed 001) reach the office that issued the detainer, which keeps or lifts
//!   it; a lift reaches the jail, and a lifted detainer removes no one.

use interop_e2e::*;
use interop_gateway::auth::principal::Principal;
use interop_proto::v1 as pb;
use tonic::Code;

fn now() -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp(),
        nanos: 0,
    }
}

fn release() -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: 1_307_120_400, // 2011-06-03 17:00 UTC
        nanos: 0,
    }
}

async fn june(gw: &TestGateway) -> pb::StatsRow {
    gw.admin()
        .await
        .get_monthly_stats(pb::GetMonthlyStatsRequest {
            month: "2011-06".into(),
            state: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .national
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn officers_decide_whatever_the_recommendation_and_both_are_kept() {
    let gw = TestGateway::start().await;
    let felon = "TX-DECIDE-0001"; // recommended: a detainer
    let citizen = "TX-DECIDE-0002"; // recommended: nothing
    let mut b = gw.bureau("TX").await;
    b.submit(booking(felon, TX_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap();
    b.submit(booking(citizen, TX_RECEIVING, CITIZEN))
        .await
        .unwrap();
    wait_completed(&gw, "TX", felon).await;
    wait_completed(&gw, "TX", citizen).await;
    let mut hou = gw.office("HOU").await;

    // Bad decisions are refused, naming the field, and record nothing.
    let discretion = |reasons: Vec<pb::Reason>| pb::DecideRequest {
        state: "TX".into(),
        tcn: felon.into(),
        action: pb::Action::Discretion as i32,
        reasons: reasons.into_iter().map(|r| r as i32).collect(),
        scheduled_release: None,
    };
    let before = gw.counters().await;
    let bad = [
        (discretion(vec![pb::Reason::PublicSafety]), "reasons"),
        (discretion(vec![]), "reasons"),
        (
            discretion(vec![pb::Reason::Humanitarian, pb::Reason::Humanitarian]),
            "reasons",
        ),
        (
            pb::DecideRequest {
                action: pb::Action::Unspecified as i32,
                ..discretion(vec![pb::Reason::Humanitarian])
            },
            "action",
        ),
        (
            pb::DecideRequest {
                scheduled_release: Some(release()),
                ..discretion(vec![pb::Reason::Humanitarian])
            },
            "scheduled_release",
        ),
        (
            pb::DecideRequest {
                scheduled_release: None,
                ..detain("TX", felon, release())
            },
            "scheduled_release",
        ),
    ];
    for (req, field) in bad {
        let e = hou.decide(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{req:?}");
        assert!(e.message().starts_with(field), "{}", e.message());
    }
    assert_eq!(gw.counters().await, before, "refusals record nothing");

    // Against the recommendation, both ways.
    let d = hou
        .decide(discretion(vec![pb::Reason::Humanitarian]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.action, pb::Action::Discretion as i32);
    assert_eq!(d.recommendation, pb::Recommendation::Detainer as i32);
    assert_eq!(d.reasons, [pb::Reason::Humanitarian as i32]);
    assert!(d.detainer.is_none());
    let c = hou
        .decide(detain("TX", citizen, release()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.action, pb::Action::Detainer as i32);
    assert_eq!(c.recommendation, pb::Recommendation::None as i32);
    assert!(c.detainer.is_some());

    // One decision per booking: the same again returns it; another is refused, naming it.
    let again = hou
        .decide(discretion(vec![pb::Reason::Humanitarian]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, d);
    let e = hou
        .decide(detain("TX", felon, release()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("ACTION_DISCRETION"), "{}", e.message());

    // Only the detainer reaches the jail.
    let jail: Vec<String> = bureau_log(&gw, "TX")
        .await
        .into_iter()
        .filter(|r| matches!(r.body, Some(pb::bureau_response::Body::Detainer(_))))
        .map(|r| r.tcn)
        .collect();
    assert_eq!(jail, [citizen]);

    // Recommendation and decision are counted apart.
    let row = june(&gw).await;
    assert_eq!(row.detainers_recommended, 1);
    assert_eq!(row.detainers_issued, 1);
    assert_eq!(row.decided_discretion, 1);
    assert_eq!(row.decided_no_action, 0);

    // Audited: the office received its decisions.
    let audit = list_disclosures(&gw, felon, "", 10).await;
    assert!(
        audit
            .iter()
            .any(|a| a.kind() == pb::DisclosureKind::Decision
                && a.rpc == "interop.v1.FieldOfficeService/Decide"),
        "{audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_lesc_notice_reaches_the_office_and_a_lift_reaches_the_jail() {
    let gw = TestGateway::start().await;
    let held = "TX-LESC-0001";
    let other = "TX-LESC-0002";
    let mut jail = gw.bureau("TX").await;
    jail.submit(booking(held, TX_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap();
    jail.submit(booking(other, TX_NOT_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap();
    wait_completed(&gw, "TX", held).await;
    wait_completed(&gw, "TX", other).await;
    let notify = |tcn: &str, concerns: Vec<pb::LescConcern>| pb::NotifyLescRequest {
        tcn: tcn.into(),
        concerns: concerns.into_iter().map(|c| c as i32).collect(),
        noticed_at: Some(now()),
    };

    // No detainer yet: nothing to notify about.
    let e = jail
        .notify_lesc(notify(held, vec![pb::LescConcern::CrimeVictim]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let mut hou = gw.office("HOU").await;
    hou.decide(detain("TX", held, release())).await.unwrap();
    hou.decide(detain("TX", other, release())).await.unwrap();
    let office_before = office_log(&gw, "HOU", Some(0)).await.len();

    // Bad notices record nothing.
    let before = gw.counters().await;
    for req in [
        notify(held, vec![]),
        notify(
            held,
            vec![pb::LescConcern::Witness, pb::LescConcern::Witness],
        ),
        notify(held, vec![pb::LescConcern::Unspecified]),
        pb::NotifyLescRequest {
            noticed_at: None,
            ..notify(held, vec![pb::LescConcern::Witness])
        },
    ] {
        let e = jail.notify_lesc(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    }
    assert_eq!(gw.counters().await, before);

    // A review needs a notice first.
    let lift = |tcn: &str| pb::ReviewDetainerRequest {
        state: "TX".into(),
        tcn: tcn.into(),
        lift: true,
        reasons: vec![pb::Reason::VictimOrWitness as i32],
    };
    let e = hou.review_detainer(lift(held)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    // The jail's notice and the person's call, each recorded once.
    let n = jail
        .notify_lesc(notify(held, vec![pb::LescConcern::CrimeVictim]))
        .await
        .unwrap()
        .into_inner();
    let again = jail
        .notify_lesc(notify(held, vec![pb::LescConcern::CrimeVictim]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, n);
    assert_eq!(n.source, pb::LescSource::Jail as i32);
    let mut lesc =
        pb::lesc_service_client::LescServiceClient::new(gw.channel(Principal::Lesc).await);
    let call = lesc
        .record_hotline_call(pb::RecordHotlineCallRequest {
            state: "TX".into(),
            tcn: held.into(),
            concerns: vec![pb::LescConcern::Witness as i32],
            called_at: Some(now()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(call.notice_id, n.notice_id);
    let notices: Vec<pb::LescNotice> = office_log(&gw, "HOU", Some(0))
        .await
        .into_iter()
        .skip(office_before)
        .filter_map(|n| n.lesc_notice)
        .collect();
    assert_eq!(notices, [n.clone(), call]);

    // Keeping needs an enforcement reason; lifting, a reason not to.
    let keep_for_victim = pb::ReviewDetainerRequest {
        lift: false,
        ..lift(held)
    };
    let e = hou.review_detainer(keep_for_victim).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let r = hou.review_detainer(lift(held)).await.unwrap().into_inner();
    assert!(r.lifted);
    assert_eq!(r.first_notice_at, n.recorded_at);
    assert_eq!(
        hou.review_detainer(lift(held)).await.unwrap().into_inner(),
        r
    );
    let keep = pb::ReviewDetainerRequest {
        lift: false,
        reasons: vec![pb::Reason::PublicSafety as i32],
        ..lift(held)
    };
    let e = hou.review_detainer(keep).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    // The lift reaches the jail once; the person held is not removed.
    let lifts: Vec<pb::DetainerLifted> = bureau_log(&gw, "TX")
        .await
        .into_iter()
        .filter_map(|r| match r.body {
            Some(pb::bureau_response::Body::DetainerLifted(l)) => Some(l),
            _ => None,
        })
        .collect();
    assert_eq!(lifts.len(), 1);
    assert_eq!(lifts[0].detainer_id, r.detainer_id);
    let e = hou
        .record_removal(pb::RecordRemovalRequest {
            state: "TX".into(),
            tcn: held.into(),
            removed_on: "2011-07-15".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    let row = june(&gw).await;
    assert_eq!(row.lesc_notices, 2);
    assert_eq!(row.detainers_lifted, 1);
    // Another area's office: the same answer as for a detainer that does not exist.
    let e = gw
        .office("LOS")
        .await
        .review_detainer(lift(other))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

/// A data directory written before decisions existed holds a bare detainer under
/// `detainer/<state>/<tcn>`: it still reads as the office's detainer decision (the same again
/// returns it, another action is refused), and the jail can still acknowledge its copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detainer_stored_before_decisions_reads_as_a_detainer_decision() {
    use prost::Message;
    let gw = TestGateway::start().await;
    let tcn = "TX-LEGACY-0001";
    gw.book("TX", tcn, TX_RECEIVING, OVERSTAY_FELON).await;
    let old = pb::Detainer {
        detainer_id: format!("DET-TX-{tcn}"),
        tcn: tcn.into(),
        jurisdiction_id: TX_RECEIVING.into(),
        field_office: "HOU".into(),
        issued_at: Some(now()),
        ..Default::default()
    };
    gw.gateway
        .core
        .store
        .append_once(
            format!("detainer/TX/{tcn}"),
            old.encode_to_vec(),
            interop_gateway::store::Completion {
                events: vec![],
                counters: vec![],
                summary: None,
            },
        )
        .await
        .unwrap();
    let mut hou = gw.office("HOU").await;
    let d = hou
        .decide(detain("TX", tcn, release()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.action, pb::Action::Detainer as i32);
    assert_eq!(d.detainer, Some(old.clone()));
    let other = pb::DecideRequest {
        action: pb::Action::NoAction as i32,
        reasons: vec![pb::Reason::NotRemovable as i32],
        scheduled_release: None,
        ..detain("TX", tcn, release())
    };
    let e = hou.decide(other).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let copy = gw
        .bureau("TX")
        .await
        .acknowledge_detainer_copy(pb::AcknowledgeDetainerCopyRequest {
            tcn: tcn.into(),
            given_at: Some(now()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(copy.detainer_id, old.detainer_id);
}

/// Arrested solely for a minor traffic offence with no prior conviction: the detainer is
/// operative only on conviction (seed 001: "ICE will only consider making a detainer operative
/// upon conviction"). No one is removed under it until the bureau reports the conviction; then
/// it is operative, and the jail is told once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detainer_operative_on_conviction_waits_for_the_conviction() {
    let gw = TestGateway::start().await;
    let tcn = "TX-TRAFFIC-0001";
    let felon = "TX-TRAFFIC-0002";
    let mut jail = gw.bureau("TX").await;
    let mut traffic = booking(tcn, TX_RECEIVING, OVERSTAY_NO_RECORD);
    traffic.charges = vec![pb::Charge {
        code: "28-3473".into(),
        class: pb::OffenseClass::MinorTraffic as i32,
    }];
    jail.submit(traffic).await.unwrap();
    jail.submit(booking(felon, TX_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap();
    wait_completed(&gw, "TX", tcn).await;
    wait_completed(&gw, "TX", felon).await;
    let mut hou = gw.office("HOU").await;
    let pending = pb::DecideRequest {
        reasons: vec![pb::Reason::PendingCharges as i32],
        ..detain("TX", tcn, release())
    };
    let d = hou.decide(pending).await.unwrap().into_inner();
    assert_eq!(
        d.recommendation,
        pb::Recommendation::DetainerOnConviction as i32
    );
    assert!(d.detainer.as_ref().unwrap().operative_on_conviction);
    hou.decide(detain("TX", felon, release())).await.unwrap();
    let removal = pb::RecordRemovalRequest {
        state: "TX".into(),
        tcn: tcn.into(),
        removed_on: "2011-08-01".into(),
    };
    let e = hou.record_removal(removal.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    let report = |tcn: &str, on: &str| pb::ReportConvictionRequest {
        tcn: tcn.into(),
        convicted_on: on.into(),
    };
    for bad in ["July 1", "2011-05-01"] {
        let e = jail.report_conviction(report(tcn, bad)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}");
        assert!(e.message().starts_with("convicted_on"), "{}", e.message());
    }
    let e = jail
        .report_conviction(report(felon, "2011-07-01"))
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::NotFound,
        "an ordinary detainer is operative already"
    );
    let o = jail
        .report_conviction(report(tcn, "2011-07-01"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        jail.report_conviction(report(tcn, "2011-07-01"))
            .await
            .unwrap()
            .into_inner(),
        o
    );
    let operative = bureau_log(&gw, "TX")
        .await
        .into_iter()
        .filter(|r| {
            matches!(
                r.body,
                Some(pb::bureau_response::Body::DetainerOperative(_))
            )
        })
        .count();
    assert_eq!(operative, 1);
    hou.record_removal(removal).await.unwrap();
}
