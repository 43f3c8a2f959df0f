//! IDENT as two matcher shard processes' worth of servers (`interop-matcher serve` runs the
//! same code), over mutual TLS on loopback: the gateway scatters each search to both shards
//! and gathers the answer — the same identifications as in-process; and when the shard holding
//! the person is down, the submission waits (no outcome, never a "no hit") and completes with
//! the hit once the shard is back.

use interop_e2e::*;
use interop_gateway::auth::revocation::Revocations;
use interop_gateway::engines::gallery_log::GalleryLog;
use interop_gateway::engines::remote::RemoteIdent;
use interop_gateway::engines::shard::{self, Shard};
use interop_gateway::server;
use interop_gateway::world;
use interop_gateway_cli::pki;
use interop_proto::v1 as pb;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

struct ShardServer {
    addr: SocketAddr,
    /// The shard's gallery changes, for a follower of the gateway's.
    log: Arc<GalleryLog>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn serve_shard(
    dir: &std::path::Path,
    pki: &pki::PkiDir,
    index: u64,
    at: Option<SocketAddr>,
    revocations: Revocations,
) -> ShardServer {
    let m =
        shard::load_shard(dir, world::IDENT_GALLERY_FILE, Shard { index, count: 2 }, 1).unwrap();
    let mut listener = None;
    for _ in 0..100 {
        match tokio::net::TcpListener::bind(at.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()))
            .await
        {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let listener = listener.expect("bind the shard's port");
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let log = Arc::new(GalleryLog::new(m.clone()));
    // The shard's own identity and key, beside the PKI: never the gateway's.
    let own = pki::shard_bundle(pki, &format!("ident-{index}")).unwrap();
    let task = tokio::spawn(shard::serve_matcher(
        m,
        Shard { index, count: 2 },
        log.clone(),
        listener,
        server::server_tls(&own).unwrap(),
        server::ServeOptions::default(),
        revocations,
        async {
            let _ = rx.await;
        },
    ));
    ShardServer {
        addr,
        log,
        stop,
        task,
    }
}

/// A world directory and its PKI, in a fresh temporary directory.
fn world_and_pki() -> (Arc<tempfile::TempDir>, std::path::PathBuf, pki::PkiDir) {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let world_dir = dir.path().join("world");
    write_world_dir(&world_dir).unwrap();
    let pki = pki::init_for_world(&dir.path().join("pki"), &world()).unwrap();
    (dir, world_dir, pki)
}

type MatcherClient = pb::matcher_service_client::MatcherServiceClient<tonic::transport::Channel>;

/// A `MatcherService` client to the shard at `addr` as the PKI's gateway (`server.pem`, the
/// only kind of caller a shard serves).
async fn shard_admin(addr: SocketAddr, pki: &pki::PkiDir) -> MatcherClient {
    let c = interop_gateway::auth::pki::workload_client(pki, &format!("https://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    MatcherClient::new(c.channel())
}

/// A client of `gw` as matcher shard `name`, with its own certificate: how a shard follows its
/// gateway.
async fn as_shard(gw: &TestGateway, name: &str) -> interop_client::Client {
    let own = pki::shard_bundle(&gw.pki, name).unwrap();
    interop_gateway::auth::pki::workload_client(&own, &gw.endpoint)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Enrols a capture of [`NOBODY`] as `subject_id`.
fn enrol(subject_id: u64) -> pb::EnrollRequest {
    pb::EnrollRequest {
        subject_id,
        fingers: interop_gateway::convert::tenprint_to_pb(&capture(NOBODY, subject_id)),
    }
}

/// Shard 0 served by two replicas and shard 1 by one, and a gateway in front of them
/// (`--ident-shards`): the world directory, the PKI, the shard servers (0a, 0b, 1) and the
/// gateway.
async fn two_shards_and_a_gateway() -> (
    std::path::PathBuf,
    pki::PkiDir,
    [ShardServer; 3],
    TestGateway,
) {
    let (dir, world_dir, pki) = world_and_pki();
    let s0a = serve_shard(&world_dir, &pki, 0, None, Revocations::default()).await;
    let s0b = serve_shard(&world_dir, &pki, 0, None, Revocations::default()).await;
    let s1 = serve_shard(&world_dir, &pki, 1, None, Revocations::default()).await;
    let spec = format!(
        "https://{}|https://{},https://{}",
        s0a.addr, s0b.addr, s1.addr
    );
    let ident = RemoteIdent::new(&spec, &pki, &world_dir, Duration::from_millis(1500)).unwrap();
    let gw = TestGateway::start_with_ident_shards(dir, pki.clone(), Arc::new(ident)).await;
    (world_dir, pki, [s0a, s0b, s1], gw)
}

async fn office_outcome(gw: &TestGateway, tcn: &str) -> Option<pb::IdentOutcome> {
    office_log(gw, "HOU", Some(0))
        .await
        .into_iter()
        .filter_map(|n| n.outcome)
        .find(|o| o.tcn == tcn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_scatter_to_shards_and_wait_for_a_missing_one() {
    let (dir, world_dir, pki) = world_and_pki();
    let s0 = serve_shard(&world_dir, &pki, 0, None, Revocations::default()).await;
    let s1 = serve_shard(&world_dir, &pki, 1, None, Revocations::default()).await;
    let spec = format!("https://{},https://{}", s0.addr, s1.addr);
    let ident = RemoteIdent::new(&spec, &pki, &world_dir, Duration::from_millis(1500)).unwrap();
    let gw = TestGateway::start_in(dir.clone(), pki.clone(), Some(Arc::new(ident))).await;
    let mut bureau = gw.bureau("TX").await;

    // The person in IDENT (subject 1, shard 1/2) is identified; nobody is not.
    for (tcn, person) in [("TX-SHARD-0001", OVERSTAY_FELON), ("TX-SHARD-0002", NOBODY)] {
        bureau
            .submit(booking(tcn, TX_RECEIVING, person))
            .await
            .unwrap();
        wait_completed(&gw, "TX", tcn).await;
    }
    let hit = office_outcome(&gw, "TX-SHARD-0001").await.expect("outcome");
    assert!(hit.hit);
    assert_eq!(hit.fin, fin(OVERSTAY_FELON));
    // Identifications only: a booking of someone IDENT does not hold reaches no office.
    assert!(office_outcome(&gw, "TX-SHARD-0002").await.is_none());

    // The shard holding the person goes down: the search is incomplete, so the submission
    // waits — no outcome at all, never a no-hit — until the shard is back.
    let addr1 = s1.addr;
    let _ = s1.stop.send(());
    let _ = s1.task.await;
    bureau
        .submit(booking("TX-SHARD-0003", TX_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let st = bureau
        .get_status(pb::GetStatusRequest {
            tcn: "TX-SHARD-0003".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.stage(), pb::Stage::Received, "completed without shard 1");
    assert!(
        office_outcome(&gw, "TX-SHARD-0003").await.is_none(),
        "an outcome without shard 1"
    );

    let s1 = serve_shard(&world_dir, &pki, 1, Some(addr1), Revocations::default()).await;
    wait_completed(&gw, "TX", "TX-SHARD-0003").await;
    let late = office_outcome(&gw, "TX-SHARD-0003").await.expect("outcome");
    assert!(late.hit, "identified once the shard was back");
    assert_eq!(late.fin, fin(OVERSTAY_FELON));

    for s in [s0, s1] {
        let _ = s.stop.send(());
        let _ = s.task.await;
    }
}

/// A shard following the gateway's revocation list refuses a certificate revoked there, while
/// other certificates of the same role keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_refuses_certificates_revoked_at_the_gateway() {
    use interop_gateway::auth::principal::Principal;
    use interop_gateway_cli::pki::IdentityFiles;
    let gw = TestGateway::start().await;
    let world_dir = tempfile::tempdir().unwrap();
    write_world_dir(world_dir.path()).unwrap();
    // A second gateway's certificate (another replica): the one that will be revoked.
    let spare = pki::issue_bundle(
        &gw.pki.ca_dir_beside(),
        &Principal::Gateway {
            name: "spare".into(),
        },
        &[],
        &world_dir.path().join("gateway-spare"),
    )
    .unwrap()
    .server();
    let serial = pki::serial_of_pem_file(&spare.cert).unwrap();

    let revocations = Revocations::default();
    let (stop_follow, stop_rx) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn(shard::follow_revocations(
        as_shard(&gw, "ident-0").await,
        revocations.clone(),
        Duration::from_millis(100),
        stop_rx,
    ));
    let shard = serve_shard(world_dir.path(), &gw.pki, 0, None, revocations).await;
    let search = |files: IdentityFiles| {
        let endpoint = format!("https://{}", shard.addr);
        let pki = gw.pki.clone();
        async move {
            let c = match interop_gateway_cli::pki::client_config(&endpoint, &pki, Some(&files))
                .unwrap()
                .connect()
                .await
            {
                Ok(c) => c,
                Err(e) => return Err(e.status().cloned().expect("refused, not unreachable")),
            };
            let req = pb::SearchRequest {
                fingers: interop_gateway::convert::tenprint_to_pb(&capture(NOBODY, 1)),
                max_candidates: 1,
                ..Default::default()
            };
            c.unary(
                interop_client::Client::matcher_service,
                req,
                |mut s, r| async move { s.search(r).await },
            )
            .await
        }
    };
    search(spare.clone()).await.expect("not revoked yet");

    let mut admin = gw.admin().await;
    admin
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: serial.clone(),
            reason: "laptop lost".into(),
        })
        .await
        .unwrap();
    let mut refused = None;
    for _ in 0..100 {
        if let Err(e) = search(spare.clone()).await {
            refused = Some(e);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Refused on a new connection at the handshake (TLS's certificate_revoked alert): the
    // client library reads it as UNAUTHENTICATED saying so.
    let e = refused.expect("the shard kept answering a revoked certificate");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("revoked"), "{}", e.message());
    // The other gateway's certificate still works.
    search(gw.pki.server())
        .await
        .expect("an unrevoked certificate is served");

    let _ = stop_follow.send(true);
    let _ = follower.await;
    let _ = shard.stop.send(());
    let _ = shard.task.await;
}

/// A shard holds only its own ids (i modulo N): an enrolment or removal of another shard's id
/// is refused, naming the shard that holds it, and changes nothing; its own ids go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_refuses_ids_another_shard_holds() {
    let (_dir, world_dir, pki) = world_and_pki();
    let shard = serve_shard(&world_dir, &pki, 0, None, Revocations::default()).await;
    let mut m = shard_admin(shard.addr, &pki).await;
    let size = |r: tonic::Response<pb::EnrollResponse>| r.into_inner().gallery_size;

    let first = size(m.enroll(enrol(8_000_000)).await.unwrap());
    let e = m.enroll(enrol(8_000_001)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("shard 1/2"), "{}", e.message());
    let e = m
        .remove(pb::RemoveRequest {
            subject_id: 8_000_003,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("shard 1/2"), "{}", e.message());
    // Nothing was added by the refusal: the next enrolment of its own makes one more.
    assert_eq!(size(m.enroll(enrol(8_000_002)).await.unwrap()), first + 1);
    let left = m
        .remove(pb::RemoveRequest {
            subject_id: 8_000_000,
        })
        .await
        .unwrap()
        .into_inner()
        .gallery_size;
    assert_eq!(left, first);

    let _ = shard.stop.send(());
    let _ = shard.task.await;
}

/// With `--ident-shards` the gateway serves `MatcherService` over the shards: an enrolment or
/// removal at the gateway reaches every replica of the shard that holds the id; one that
/// cannot reach a replica is UNAVAILABLE (not done), and retried once the replica is back it
/// completes, the replica that already had it counting as done. A search at the gateway
/// merges the shards' candidates, and a removal there is honoured by submissions, even after
/// the shard restarts with the subject back in its gallery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_enrols_and_removes_on_every_replica_of_the_shard() {
    use interop_gateway::auth::principal::Principal;
    let (world_dir, pki, [s0a, s0b, s1], gw) = two_shards_and_a_gateway().await;
    let mut m =
        pb::matcher_service_client::MatcherServiceClient::new(gw.channel(Principal::Admin).await);
    let direct = |addr: SocketAddr| shard_admin(addr, &pki);
    let probe = || pb::SearchRequest {
        fingers: interop_gateway::convert::tenprint_to_pb(&capture(NOBODY, 77)),
        max_candidates: 3,
        ..Default::default()
    };

    // An enrolment at the gateway of a shard-0 id reaches both replicas.
    m.enroll(enrol(8_000_000)).await.unwrap();
    for addr in [s0a.addr, s0b.addr] {
        let found = direct(addr)
            .await
            .search(probe())
            .await
            .unwrap()
            .into_inner();
        assert!(found.hit, "replica {addr} did not get the enrolment");
        assert_eq!(found.candidates[0].subject_id, 8_000_000);
    }
    let e = m.enroll(enrol(8_000_000)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    // A search at the gateway merges every shard's candidates.
    let found = m.search(probe()).await.unwrap().into_inner();
    assert!(found.hit);
    assert_eq!(found.candidates[0].subject_id, 8_000_000);
    assert!(found.candidates.len() <= 3);
    // A print the matcher cannot use is refused at the gateway, before any shard sees it.
    let e = m
        .enroll(pb::EnrollRequest {
            subject_id: 8_000_004,
            fingers: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    // A removal at the gateway is honoured by submissions: the person in IDENT (subject 1,
    // shard 1) is no longer identified. Removing again: NOT_FOUND, as one gallery answers.
    m.remove(pb::RemoveRequest { subject_id: 1 }).await.unwrap();
    let e = m
        .remove(pb::RemoveRequest { subject_id: 1 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let mut bureau = gw.bureau("TX").await;
    bureau
        .submit(booking("TX-SHARD-0101", TX_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap();
    wait_completed(&gw, "TX", "TX-SHARD-0101").await;
    let outcome = office_outcome(&gw, "TX-SHARD-0101").await;
    assert!(outcome.is_none(), "a removed subject was identified");

    // Shard 1 restarts: it loads the world's gallery again, subject 1 included (shards keep
    // changes in memory only). The gateway refuses its answer naming the removed subject,
    // sends the removal again, and the retried search does not identify the person.
    let addr1 = s1.addr;
    let _ = s1.stop.send(());
    let _ = s1.task.await;
    let s1 = serve_shard(&world_dir, &pki, 1, Some(addr1), Revocations::default()).await;
    bureau
        .submit(booking("TX-SHARD-0102", TX_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap();
    wait_completed(&gw, "TX", "TX-SHARD-0102").await;
    let outcome = office_outcome(&gw, "TX-SHARD-0102").await;
    assert!(
        outcome.is_none(),
        "a removed subject was identified by a restarted shard"
    );
    let e = direct(addr1)
        .await
        .remove(pb::RemoveRequest { subject_id: 1 })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        tonic::Code::NotFound,
        "removal not sent again: {e:?}"
    );

    // One replica of shard 0 down: the enrolment is not done, and says which replica lacks it.
    let addr0b = s0b.addr;
    let _ = s0b.stop.send(());
    let _ = s0b.task.await;
    let e = m.enroll(enrol(8_000_002)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("1 of 2 replicas") && e.message().contains("replica 1"),
        "{}",
        e.message()
    );
    // The replica is back: the retry completes it (replica 0 already had it, which counts).
    let s0b = serve_shard(&world_dir, &pki, 0, Some(addr0b), Revocations::default()).await;
    let mut done = None;
    for _ in 0..50 {
        match m.enroll(enrol(8_000_002)).await {
            Ok(r) => {
                done = Some(r.into_inner());
                break;
            }
            Err(e) if e.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(done.is_some(), "the retried enrolment never completed");
    let found = direct(addr0b)
        .await
        .search(probe())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.candidates[0].subject_id, 8_000_002);

    for s in [s0a, s0b, s1] {
        let _ = s.stop.send(());
        let _ = s.task.await;
    }
}

/// A replica that was down while enrolments and a removal were made at the gateway restarts
/// with only the world's gallery (shards keep changes in memory). Reading the gateway's record
/// (`ListChanges`) before it serves, as `interop-matcher serve --gateway` does, it makes
/// exactly the changes it missed; following the gateway afterwards, it makes the ones it misses
/// later, with no retry by the operator. A shard itself records nothing to list, and an
/// enrolment no replica made is not recorded (the answer says to retry it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_makes_the_changes_it_missed_from_the_gateways_record() {
    use interop_gateway::auth::principal::Principal;
    let (world_dir, pki, [s0a, s0b, s1], gw) = two_shards_and_a_gateway().await;
    let mut m =
        pb::matcher_service_client::MatcherServiceClient::new(gw.channel(Principal::Admin).await);
    let shard0 = Shard { index: 0, count: 2 };
    // Replicas follow the gateway as themselves.
    let admin = as_shard(&gw, "ident-0").await;
    // What replica `addr` answers for a capture of `person`: its best candidate if a hit.
    let top = |addr: SocketAddr, person: u64| {
        let pki = pki.clone();
        async move {
            let r = shard_admin(addr, &pki)
                .await
                .search(pb::SearchRequest {
                    fingers: interop_gateway::convert::tenprint_to_pb(&capture(person, 91)),
                    max_candidates: 1,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            r.hit.then(|| r.candidates[0].subject_id)
        }
    };
    assert_eq!(top(s0b.addr, CITIZEN).await, Some(CITIZEN), "subject 2");

    // Replica b is down: an enrolment and a removal at the gateway reach only replica a.
    let addr0b = s0b.addr;
    let _ = s0b.stop.send(());
    let _ = s0b.task.await;
    let e = m.enroll(enrol(8_000_010)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("recorded at the gateway"),
        "{}",
        e.message()
    );
    let e = m
        .remove(pb::RemoveRequest {
            subject_id: CITIZEN,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");

    // It restarts with the world's gallery: subject 2, not 8,000,010. Read before serving,
    // the record gives it both changes, and only those (the world's other subjects stay).
    let s0b = serve_shard(&world_dir, &pki, 0, Some(addr0b), Revocations::default()).await;
    let before = s0b.log.is_removed(CITIZEN);
    let (version, made) = shard::pull_changes(&admin, &s0b.log, shard0, 0)
        .await
        .unwrap();
    assert!(!before);
    assert_eq!(made, 2);
    assert_eq!(top(addr0b, NOBODY).await, Some(8_000_010));
    assert_eq!(top(addr0b, CITIZEN).await, None, "the removal was not made");
    assert_eq!(
        shard::pull_changes(&admin, &s0b.log, shard0, version)
            .await
            .unwrap(),
        (version, 0),
        "the same record read again"
    );
    // Both replicas have the enrolment now: retried at the gateway, every replica had it.
    let e = m.enroll(enrol(8_000_010)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");

    // Down again, and another enrolment missed; restarted, it follows the gateway (from no
    // record read) and makes all three changes by itself.
    let _ = s0b.stop.send(());
    let _ = s0b.task.await;
    let e = m.enroll(enrol(8_000_012)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    let s0b = serve_shard(&world_dir, &pki, 0, Some(addr0b), Revocations::default()).await;
    let (stop_follow, stop_rx) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn(shard::follow_gallery(
        admin.clone(),
        s0b.log.clone(),
        shard0,
        0,
        Duration::from_millis(100),
        stop_rx,
    ));
    let mut caught_up = false;
    for _ in 0..100 {
        let mut best_two: Vec<u64> = shard_admin(addr0b, &pki)
            .await
            .search(pb::SearchRequest {
                fingers: interop_gateway::convert::tenprint_to_pb(&capture(NOBODY, 92)),
                max_candidates: 2,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .candidates
            .iter()
            .map(|c| c.subject_id)
            .collect();
        best_two.sort();
        if best_two == [8_000_010, 8_000_012] && s0b.log.is_removed(CITIZEN) {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        caught_up,
        "the restarted replica did not make the changes it missed"
    );
    assert_eq!(top(addr0b, CITIZEN).await, None);

    // A shard process lists nothing: the record is the gateway's.
    let e = shard_admin(s0a.addr, &pki)
        .await
        .list_changes(pb::ListChangesRequest {
            shard_index: 0,
            shard_count: 2,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");

    let _ = stop_follow.send(true);
    let _ = follower.await;
    // With every replica of shard 0 down, an enrolment reaches none: it is not recorded (the
    // answer says to retry, not that replicas will take it), and nothing is listed for it.
    for s in [s0a, s0b] {
        let _ = s.stop.send(());
        let _ = s.task.await;
    }
    let e = m.enroll(enrol(8_000_014)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("0 of 2 replicas") && !e.message().contains("recorded"),
        "{}",
        e.message()
    );
    let listed = m
        .list_changes(pb::ListChangesRequest {
            shard_index: 0,
            shard_count: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<u64> = listed.changes.iter().map(|c| c.subject_id).collect();
    assert_eq!(ids, [CITIZEN, 8_000_010, 8_000_012]);
    let _ = s1.stop.send(());
    let _ = s1.task.await;
}

/// Workload identities hold only their own rights (least privilege between our parts): a shard
/// serves gateways and no one else (the admin, a bureau, another shard: PERMISSION_DENIED,
/// health included); at the gateway a shard may read the revocation list and the gallery
/// changes and nothing more, and a gateway's certificate opens nothing at another gateway.
/// The CA's key is in no serving directory, and a shard's directory holds its own key only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identities_hold_only_their_own_rights() {
    use interop_gateway::auth::principal::Principal;
    let (_world_dir, pki, [s0a, s0b, s1], gw) = two_shards_and_a_gateway().await;
    let shard_dir = pki::shard_bundle(&pki, "ident-1").unwrap();
    let at = |addr: SocketAddr, files: pki::IdentityFiles| {
        let pki = pki.clone();
        async move {
            pki::client_config(&format!("https://{addr}"), &pki, Some(&files))
                .unwrap()
                .connect()
                .await
                .unwrap()
                .channel()
        }
    };
    let probe = pb::SearchRequest {
        fingers: interop_gateway::convert::tenprint_to_pb(&capture(NOBODY, 5)),
        max_candidates: 1,
        ..Default::default()
    };
    let denied = |r: Result<(), tonic::Status>, who: &str, what: &str| match r {
        Err(e) if e.code() == tonic::Code::PermissionDenied => {}
        other => panic!("{who} {what}: {other:?}"),
    };

    // At a shard: the gateway is served; nobody else is, health included.
    let ch = at(s1.addr, pki.server()).await;
    MatcherClient::new(ch.clone())
        .search(probe.clone())
        .await
        .expect("the gateway's search");
    tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("the gateway's health check");
    for (who, files) in [
        ("admin", pki.client(&Principal::Admin)),
        (
            "bureau TX",
            pki.client(&Principal::Bureau { state: "TX".into() }),
        ),
        ("shard ident-1", shard_dir.server()),
    ] {
        let ch = at(s1.addr, files).await;
        let r = MatcherClient::new(ch.clone()).search(probe.clone()).await;
        denied(r.map(drop), who, "searching a shard");
        let r = MatcherClient::new(ch.clone())
            .enroll(enrol(8_000_021))
            .await;
        denied(r.map(drop), who, "enrolling at a shard");
        let r = tonic_health::pb::health_client::HealthClient::new(ch)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await;
        denied(r.map(drop), who, "a shard's health");
    }

    // At the gateway, as a shard: the revocation list and its gallery changes, nothing else.
    let gw_addr: SocketAddr = gw.endpoint.trim_start_matches("https://").parse().unwrap();
    let ch = at(gw_addr, shard_dir.server()).await;
    let mut admin = pb::admin_service_client::AdminServiceClient::new(ch.clone());
    admin
        .list_revoked(pb::ListRevokedRequest {})
        .await
        .expect("a shard reads the revocation list");
    let mut matcher = MatcherClient::new(ch.clone());
    matcher
        .list_changes(pb::ListChangesRequest {
            shard_index: 1,
            shard_count: 2,
            ..Default::default()
        })
        .await
        .expect("a shard reads its gallery changes");
    let r = admin
        .get_policy(pb::GetPolicyRequest {
            jurisdiction_id: TX_RECEIVING.into(),
        })
        .await;
    denied(r.map(drop), "a shard", "reading a policy");
    denied(
        matcher.search(probe.clone()).await.map(drop),
        "a shard",
        "searching the gateway",
    );
    denied(
        matcher.enroll(enrol(8_000_021)).await.map(drop),
        "a shard",
        "enrolling at the gateway",
    );
    let r = pb::submission_service_client::SubmissionServiceClient::new(ch)
        .submit(booking("TX-WORKLOAD-1", TX_RECEIVING, NOBODY))
        .await;
    denied(r.map(drop), "a shard", "submitting");

    // A gateway's certificate opens nothing at a gateway.
    let ch = at(gw_addr, pki.server()).await;
    let r = pb::admin_service_client::AdminServiceClient::new(ch.clone())
        .list_revoked(pb::ListRevokedRequest {})
        .await;
    denied(r.map(drop), "a gateway", "reading the revocation list");
    let r = MatcherClient::new(ch).search(probe).await;
    denied(r.map(drop), "a gateway", "searching another gateway");

    // Keys: the CA's only in its own directory; a shard's directory holds its own key only.
    assert!(
        !pki.ca_key().exists(),
        "the CA key is in the serving directory"
    );
    assert!(pki.ca_dir_beside().ca_key().exists());
    let mut files: Vec<String> = std::fs::read_dir(&shard_dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["ca.pem", "server-key.pem", "server.pem"]);
    assert_eq!(
        shard_dir.workload().unwrap(),
        Some(Principal::Matcher {
            name: "ident-1".into()
        })
    );

    for s in [s0a, s0b, s1] {
        let _ = s.stop.send(());
        let _ = s.task.await;
    }
}
