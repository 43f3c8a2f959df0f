//! The gallery through `interop.v1.MatcherService` (admin, mutual TLS): a subject enrolled is
//! found, removed is not found by any later search and its id is free again; refusals come
//! back as the status a caller can act on.

use interop_e2e::*;
use interop_gateway::convert::tenprint_to_pb;
use interop_gateway::principal::Principal;
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
