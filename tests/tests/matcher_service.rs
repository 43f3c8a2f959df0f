//! The gallery through `interop.v1.MatcherService` (admin, mutual TLS): a subject enrolled is
//! found, removed is not found by any later search and its id is free again; refusals come
//! back as the status a caller can act on.

use interop_e2e::*;
use interop_gateway::auth::principal::Principal;
use interop_gateway::convert::tenprint_to_pb;
use interop_proto::v1 as pb;
use pb::matcher_service_client::MatcherServiceClient;
use tonic::Code;

const SUBJECT: u64 = 9_100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrol_search_remove_over_the_service() {
    let gw = TestGateway::start().await;
    let mut m = MatcherServiceClient::new(gw.channel(Principal::Admin).await);
    let enrol = |n: u64| pb::EnrollRequest {
        subject_id: SUBJECT,
        fingers: tenprint_to_pb(&capture(NOBODY, n)),
    };
    let search = |n: u64| pb::SearchRequest {
        fingers: tenprint_to_pb(&capture(NOBODY, n)),
        max_candidates: 5,
        ..Default::default()
    };
    // NOBODY is in no gallery: no hit.
    let before = m.search(search(1)).await.unwrap().into_inner();
    assert!(!before.hit, "{before:?}");

    let size = m
        .enroll(enrol(100))
        .await
        .unwrap()
        .into_inner()
        .gallery_size;
    let found = m.search(search(2)).await.unwrap().into_inner();
    assert!(found.hit, "{found:?}");
    assert_eq!(found.candidates[0].subject_id, SUBJECT);

    // A second enrolment under the same id: ALREADY_EXISTS, and the gallery is unchanged.
    let dup = m.enroll(enrol(101)).await.unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists, "{dup:?}");

    let removed = m
        .remove(pb::RemoveRequest {
            subject_id: SUBJECT,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.gallery_size, size - 1);
    for n in 3..6 {
        let r = m.search(search(n)).await.unwrap().into_inner();
        assert!(!r.hit, "{r:?}");
        assert!(
            r.candidates.iter().all(|c| c.subject_id != SUBJECT),
            "{r:?}"
        );
    }
    let again = m
        .remove(pb::RemoveRequest {
            subject_id: SUBJECT,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound, "{again:?}");
    assert!(
        again.message().contains("not enrolled"),
        "{}",
        again.message()
    );

    // The id is free again.
    let size_again = m
        .enroll(enrol(102))
        .await
        .unwrap()
        .into_inner()
        .gallery_size;
    assert_eq!(size_again, size);
    assert!(m.search(search(7)).await.unwrap().into_inner().hit);
}

/// Gallery changes made at the gateway outlive a restart: the gallery is loaded again from
/// the world's file, and the recorded changes are applied over it before any search. A
/// subject removed stays removed (a booking of that person is no longer identified), and one
/// enrolled is still found. (Before they were recorded, the restart brought the removed
/// subject back and lost the enrolment.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gallery_changes_outlive_a_restart() {
    let gw = TestGateway::start().await;
    let mut m = MatcherServiceClient::new(gw.channel(Principal::Admin).await);
    // The person in IDENT is subject 1.
    m.remove(pb::RemoveRequest {
        subject_id: OVERSTAY_FELON,
    })
    .await
    .unwrap();
    m.enroll(pb::EnrollRequest {
        subject_id: SUBJECT,
        fingers: tenprint_to_pb(&capture(NOBODY, 100)),
    })
    .await
    .unwrap();

    let gw = gw.restart(None).await;
    let mut m = MatcherServiceClient::new(gw.channel(Principal::Admin).await);
    let gone = m
        .remove(pb::RemoveRequest {
            subject_id: OVERSTAY_FELON,
        })
        .await
        .unwrap_err();
    assert_eq!(
        gone.code(),
        Code::NotFound,
        "removed subject back: {gone:?}"
    );
    let found = m
        .search(pb::SearchRequest {
            fingers: tenprint_to_pb(&capture(NOBODY, 2)),
            max_candidates: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(found.hit, "the enrolment was lost: {found:?}");
    assert_eq!(found.candidates[0].subject_id, SUBJECT);

    let mut bureau = gw.bureau("TX").await;
    bureau
        .submit(booking("TX-GALLERY-0001", TX_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap();
    wait_completed(&gw, "TX", "TX-GALLERY-0001").await;
    // Identifications only: a no-hit reaches no one.
    let outcome = office_log(&gw, "HOU", Some(0))
        .await
        .into_iter()
        .filter_map(|n| n.outcome)
        .find(|o| o.tcn == "TX-GALLERY-0001");
    assert!(
        outcome.is_none(),
        "a removed subject was identified after a restart: {outcome:?}"
    );
}

/// The admin searches the FBI gallery too when it asks for it (to see where a
/// criminal-history miss's mate ranks), and IDENT by default; a bureau may not search either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_searches_either_gallery() {
    let gw = TestGateway::start().await;
    let mut m = MatcherServiceClient::new(gw.channel(Principal::Admin).await);
    let search = |person: u64, gallery: pb::Gallery| pb::SearchRequest {
        fingers: tenprint_to_pb(&capture(person, 7)),
        max_candidates: 3,
        gallery: gallery as i32,
    };
    // FBI_ONLY has a criminal record and no IDENT encounter.
    let fbi = m
        .search(search(FBI_ONLY, pb::Gallery::Fbi))
        .await
        .unwrap()
        .into_inner();
    assert!(fbi.hit, "{fbi:?}");
    for gallery in [pb::Gallery::Unspecified, pb::Gallery::Ident] {
        let ident = m
            .search(search(FBI_ONLY, gallery))
            .await
            .unwrap()
            .into_inner();
        assert!(!ident.hit, "{gallery:?}: {ident:?}");
    }
    let mut bureau =
        MatcherServiceClient::new(gw.channel(Principal::Bureau { state: "TX".into() }).await);
    let refused = bureau
        .search(search(FBI_ONLY, pb::Gallery::Fbi))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
}
