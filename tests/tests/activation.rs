//! Advance notice before activation (seed 000: "Prior to the activation of new jurisdictions
//! within a state, ICE will provide advance notice to both the state and local governments"),
//! over real mutual TLS: an activation without its notice, or with one given too late, is
//! refused and changes nothing; a timely one reaches the state's bureau stream once, and the
//! activation takes effect for bookings on and after its date, not before.

use interop_e2e::*;
use interop_proto::v1 as pb;
use tonic::Code;

fn notices(log: &[pb::BureauResponse]) -> Vec<pb::ActivationNotice> {
    log.iter()
        .filter_map(|r| match &r.body {
            Some(pb::bureau_response::Body::ActivationNotice(n)) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_is_announced_in_advance_and_takes_effect_on_its_date() {
    let gw = TestGateway::start().await;
    let mut admin = gw.admin().await;
    let activate = |notice_on: &str| pb::SetPolicyRequest {
        jurisdiction_id: TX_NOT_ACTIVATED.into(),
        activated_on: Some("2011-07-01".into()),
        notice_on: notice_on.into(),
        ..Default::default()
    };

    // Without notice, too late, or a notice with no activation: refused, nothing changes.
    let before = (gw.counters().await, bureau_log(&gw, "TX").await.len());
    for (req, says) in [
        (activate(""), "required"),
        (activate("2011-06-15"), "at least 30 days"),
        (activate("15 May 2011"), "YYYY-MM-DD"),
        (
            pb::SetPolicyRequest {
                jurisdiction_id: TX_RECEIVING.into(),
                receives_results: Some(true),
                notice_on: "2011-05-01".into(),
                ..Default::default()
            },
            "only with a new activated_on",
        ),
    ] {
        let e = admin.set_policy(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{req:?}");
        assert!(
            e.message().starts_with("notice_on") && e.message().contains(says),
            "{}",
            e.message()
        );
    }
    assert_eq!(
        (gw.counters().await, bureau_log(&gw, "TX").await.len()),
        before
    );
    let p = admin
        .get_policy(pb::GetPolicyRequest {
            jurisdiction_id: TX_NOT_ACTIVATED.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(p.activated_on.is_empty(), "still not activated");

    // Thirty-one days ahead: the notice reaches the state's bureau, once however often asked.
    admin.set_policy(activate("2011-05-31")).await.unwrap();
    admin.set_policy(activate("2011-05-31")).await.unwrap();
    let got = notices(&bureau_log(&gw, "TX").await);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (
            got[0].jurisdiction_id.as_str(),
            got[0].notice_on.as_str(),
            got[0].activate_on.as_str()
        ),
        (TX_NOT_ACTIVATED, "2011-05-31", "2011-07-01")
    );
    assert!(notices(&bureau_log(&gw, "CA").await).is_empty());

    // In effect from its date: a booking of 1 June is not searched, one of 2 July is.
    let mut jail = gw.bureau("TX").await;
    let june = booking("TX-NOTICE-0601", TX_NOT_ACTIVATED, OVERSTAY_FELON);
    let mut july = booking("TX-NOTICE-0702", TX_NOT_ACTIVATED, OVERSTAY_FELON);
    july.booked_at = Some(prost_types::Timestamp {
        seconds: june.booked_at.unwrap().seconds + 31 * 86_400,
        nanos: 0,
    });
    jail.submit(june).await.unwrap();
    jail.submit(july).await.unwrap();
    wait_completed(&gw, "TX", "TX-NOTICE-0601").await;
    wait_completed(&gw, "TX", "TX-NOTICE-0702").await;
    let told: Vec<String> = office_log(&gw, "HOU", Some(0))
        .await
        .into_iter()
        .filter_map(|n| n.outcome.map(|o| o.tcn))
        .collect();
    assert_eq!(told, ["TX-NOTICE-0702"]);

    // Deactivating needs no notice.
    admin
        .set_policy(pb::SetPolicyRequest {
            jurisdiction_id: TX_NOT_ACTIVATED.into(),
            activated_on: Some(String::new()),
            ..Default::default()
        })
        .await
        .unwrap();
}
