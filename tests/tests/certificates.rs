//! Certificate lifecycle over real mutual TLS: revocation by serial (refused from the next
//! call on, health and reflection included, on old connections; new connections refused at
//! the handshake; open streams closed; durable across a restart) and
//! reloading the server certificate and client CA bundle without a restart.

use interop_e2e::*;
use interop_gateway::auth::principal::Principal;
use interop_gateway_cli::pki::{self, IdentityFiles, PkiDir};
use interop_proto::v1 as pb;
use pb::admin_service_client::AdminServiceClient;
use std::time::Duration;
use tonic::Code;

fn hou() -> Principal {
    Principal::FieldOffice {
        office: "HOU".into(),
    }
}

fn tx() -> Principal {
    Principal::Bureau { state: "TX".into() }
}

fn serial(pki: &PkiDir, who: &Principal) -> String {
    pki::serial_of_pem_file(&pki.client(who).cert).unwrap()
}

async fn revoke(gw: &TestGateway, serial: &str, reason: &str) -> pb::RevokedCertificate {
    gw.admin()
        .await
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: serial.into(),
            reason: reason.into(),
        })
        .await
        .expect("revoke")
        .into_inner()
}

/// The next item of a stream, within 10 s.
async fn next<T>(s: &mut tonic::Streaming<T>) -> Result<Option<T>, tonic::Status> {
    tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("the stream neither delivered nor closed within 10 s")
}

#[track_caller]
fn assert_revoked(r: Result<impl std::fmt::Debug, tonic::Status>, serial: &str) {
    match r {
        // A channel that had to reconnect meets the refusal at the handshake instead.
        Err(s) if format!("{s:?}").contains("received fatal alert: CertificateRevoked") => {}
        Err(s) => {
            assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
            assert!(
                s.message().contains("revoked") && s.message().contains(serial),
                "the message says what happened: {}",
                s.message()
            );
        }
        Ok(v) => panic!("a revoked certificate was answered {v:?}"),
    }
}

/// A new connection as `who` fails at the TLS handshake (the server sends TLS's
/// `certificate_revoked` alert): connecting fails, or (TLS 1.3: the client's side of the
/// handshake can end before the server has judged its certificate) the first call finds the
/// connection closed. Either way no service answers, and the listener counts a failed handshake.
async fn assert_refused_at_handshake(gw: &TestGateway, who: &Principal) {
    use std::sync::atomic::Ordering;
    let failed = || {
        gw.gateway
            .listen_stats
            .handshake_failures
            .load(Ordering::Relaxed)
    };
    let before = failed();
    if let Ok(c) = pki::connect_client(&gw.endpoint, &gw.pki, who).await {
        let r = tonic_health::pb::health_client::HealthClient::new(c.channel())
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await;
        match r {
            Err(s) => assert!(
                s.code() != Code::Unauthenticated,
                "answered by a service, not refused at the handshake: {s:?}"
            ),
            Ok(r) => panic!("a revoked certificate connected and was answered {r:?}"),
        }
    }
    // Asked directly (what the client library does when a call's connection broke and the
    // alert was lost with it), the gateway's answer is the refusal, every time.
    for _ in 0..3 {
        let cfg = interop_client::ClientConfig::from_pki_dir(
            &gw.endpoint,
            &gw.pki.0,
            &pki::role(who).unwrap(),
        )
        .unwrap();
        let refused = cfg
            .handshake_refusal()
            .await
            .expect("the probe sees the refusal");
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
        assert!(
            refused.message().contains("revoked"),
            "{}",
            refused.message()
        );
    }
    // The server counts it once it has sent its alert, which the client may see first.
    for _ in 0..100 {
        if failed() > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the listener counted no failed handshake");
}

async fn listed(gw: &TestGateway) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = gw
        .admin()
        .await
        .list_revoked(pb::ListRevokedRequest {})
        .await
        .unwrap()
        .into_inner()
        .revoked
        .into_iter()
        .map(|r| (r.serial, r.reason))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_and_its_open_streams_are_closed() {
    let gw = TestGateway::start().await;
    let tcn = "TX-REVOKE-0001";
    let mut bureau = gw.bureau("TX").await;
    bureau
        .submit(booking(tcn, TX_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap();
    wait_completed(&gw, "TX", tcn).await;

    // Both hold a following stream, and have read what is there.
    let hou_conn = gw.channel(hou()).await;
    let mut office =
        pb::field_office_service_client::FieldOfficeServiceClient::new(hou_conn.clone());
    let mut notes = office
        .subscribe(pb::SubscribeRequest {
            after_cursor: Some(0),
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(next(&mut notes).await.unwrap().is_some());
    let mut responses = bureau
        .stream_responses(pb::StreamResponsesRequest {
            after_cursor: 0,
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(next(&mut responses).await.unwrap().is_some());

    let hou_serial = serial(&gw.pki, &hou());
    let r = revoke(&gw, &hou_serial.to_uppercase(), "key compromise").await;
    assert_eq!(r.serial, hou_serial, "serials are normalised");
    assert_eq!(r.reason, "key compromise");

    // The open stream is closed with the reason; the next call on the same connection is
    // refused, health and reflection too (a revoked certificate learns nothing of what is
    // served), and a new connection is refused at the handshake.
    assert_revoked(next(&mut notes).await, &hou_serial);
    assert_revoked(office.ack(pb::AckRequest { cursor: 1 }).await, &hou_serial);
    assert_revoked(
        tonic_health::pb::health_client::HealthClient::new(hou_conn.clone())
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await,
        &hou_serial,
    );
    let list = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    assert_revoked(
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
            hou_conn.clone(),
        )
        .server_reflection_info(tokio_stream::iter([list]))
        .await,
        &hou_serial,
    );
    assert_refused_at_handshake(&gw, &hou()).await;
    // The probe tells the accepted from the refused: the admin's certificate stands.
    let admin = interop_client::ClientConfig::from_pki_dir(
        &gw.endpoint,
        &gw.pki.0,
        &pki::role(&Principal::Admin).unwrap(),
    )
    .unwrap();
    assert!(admin.handshake_refusal().await.is_none());
    assert_eq!(
        gw.counters().await.get("submissions_accepted"),
        Some(&1),
        "nothing else moved"
    );

    // Others are unaffected: the bureau's stream still follows.
    let second = "TX-REVOKE-0002";
    bureau
        .submit(booking(second, TX_RECEIVING, OVERSTAY_FELON))
        .await
        .unwrap();
    // Its criminal-history and immigration responses (an identification).
    let mut seen_second = 0;
    while seen_second < 2 {
        match next(&mut responses).await.unwrap() {
            Some(r) if r.tcn == second => seen_second += 1,
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(seen_second, 2, "the unrevoked bureau still receives");

    // Revoking the bureau closes its stream too.
    let tx_serial = serial(&gw.pki, &tx());
    revoke(&gw, &tx_serial, "").await;
    assert_revoked(next(&mut responses).await, &tx_serial);
    assert_revoked(
        bureau
            .get_status(pb::GetStatusRequest { tcn: tcn.into() })
            .await,
        &tx_serial,
    );

    // Revoking again keeps the first record; bad serials and self-revocation are refused.
    let again = revoke(&gw, &hou_serial, "another reason").await;
    assert_eq!(again.reason, "key compromise");
    let mut admin = gw.admin().await;
    let e = admin
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: "not hex".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("serial"), "{}", e.message());
    let own = serial(&gw.pki, &Principal::Admin);
    let e = admin
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: own,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = AdminServiceClient::new(gw.channel(Principal::Bureau { state: "CA".into() }).await)
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: "01".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    let mut want = vec![
        (hou_serial.clone(), "key compromise".to_string()),
        (tx_serial.clone(), String::new()),
    ];
    want.sort();
    assert_eq!(listed(&gw).await, want);

    // Durable: still revoked after a restart; a newly issued certificate for the same office
    // (a new serial) works.
    let gw = gw.restart(None).await;
    assert_eq!(listed(&gw).await, want);
    assert_refused_at_handshake(&gw, &hou()).await;
    let dir = tempfile::tempdir().unwrap();
    let fresh = IdentityFiles {
        cert: dir.path().join("hou2.pem"),
        key: dir.path().join("hou2-key.pem"),
    };
    pki::issue_client(&gw.pki.ca_dir_beside(), &hou(), &fresh).unwrap();
    let ch = connect_as(&gw.endpoint, &gw.pki, &fresh).await.unwrap();
    let acked = pb::field_office_service_client::FieldOfficeServiceClient::new(ch)
        .ack(pb::AckRequest { cursor: 1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked.acked_cursor, 1);
}

/// A channel to `endpoint` trusting `trust`'s CA and presenting `who`, one attempt, no
/// retries.
async fn connect_as(
    endpoint: &str,
    trust: &PkiDir,
    who: &IdentityFiles,
) -> anyhow::Result<tonic::transport::Channel> {
    Ok(pki::client_config(endpoint, trust, Some(who))?
        .retry(interop_client::RetryPolicy::none())
        .connect()
        .await?
        .channel())
}

/// Whether a client trusting `trust`'s CA and presenting `who` gets an answer from the admin
/// service (any answer but a transport/TLS failure).
async fn reaches(gw: &TestGateway, trust: &PkiDir, who: &IdentityFiles) -> bool {
    reaches_at(&gw.endpoint, trust, who).await
}

async fn reaches_at(endpoint: &str, trust: &PkiDir, who: &IdentityFiles) -> bool {
    let Ok(ch) = connect_as(endpoint, trust, who).await else {
        return false;
    };
    AdminServiceClient::new(ch)
        .list_revoked(pb::ListRevokedRequest {})
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_without_a_restart() {
    let gw = TestGateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A CA rotation: a new CA with its own server and client certificates.
    let next = pki::init(
        &dir.path().join("next"),
        &pki::InitOptions {
            states: &[],
            offices: &[],
        },
    )
    .unwrap();
    let admin = Principal::Admin;
    let old_admin = gw.pki.client(&admin);
    let new_admin = next.client(&admin);
    assert!(reaches(&gw, &gw.pki, &old_admin).await);
    assert!(
        !reaches(&gw, &next, &new_admin).await,
        "before the reload the new CA's clients are strangers"
    );
    let mut before = gw.admin().await;

    // Install the new server identity and a bundle trusting both CAs, then reload.
    rotate(&gw.pki, &next);
    let loaded = before
        .reload_certificates(pb::ReloadCertificatesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        loaded.server_serial,
        pki::serial_of_pem_file(&next.server().cert).unwrap()
    );
    assert_eq!(loaded.client_cas, 2);

    // New connections: the new server certificate (a client trusting only the new CA
    // connects) and both CAs' clients are accepted.
    assert!(reaches(&gw, &next, &new_admin).await);
    assert!(reaches(&gw, &gw.pki, &old_admin).await);
    // The connection made before the reload carries on.
    before
        .list_revoked(pb::ListRevokedRequest {})
        .await
        .expect("open connections keep working");

    // A broken reload changes nothing and says which file is wrong.
    std::fs::write(gw.pki.server().key, "not a key").unwrap();
    let e = before
        .reload_certificates(pb::ReloadCertificatesRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("server-key.pem"), "{}", e.message());
    assert!(reaches(&gw, &next, &new_admin).await, "still serving");
}

/// Installs `next`'s server identity in `pki` and makes `pki`'s CA file a bundle of both CAs.
fn rotate(pki: &PkiDir, next: &PkiDir) {
    std::fs::copy(next.server().cert, pki.server().cert).unwrap();
    std::fs::copy(next.server().key, pki.server().key).unwrap();
    let bundle = [
        std::fs::read_to_string(pki.ca_cert()).unwrap(),
        std::fs::read_to_string(next.ca_cert()).unwrap(),
    ]
    .concat();
    std::fs::write(pki.ca_cert(), bundle).unwrap();
}

/// The real program re-reads its certificates on SIGHUP and keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_program_reloads_certificates_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki::init(
        &dir.path().join("pki"),
        &pki::InitOptions {
            states: &["TX".into()],
            offices: &[],
        },
    )
    .unwrap();
    let world = dir.path().join("world");
    write_world_dir(&world).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_interop-gateway-under-test"))
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--pki")
        .arg(&pki.0)
        .arg("--world")
        .arg(&world)
        .arg("--data")
        .arg(dir.path().join("data"))
        .args(["--shards", "1", "--no-metrics"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let endpoint = format!("https://127.0.0.1:{port}");
    let admin = pki.client(&Principal::Admin);
    let mut up = false;
    for _ in 0..600 {
        assert!(child.try_wait().unwrap().is_none(), "gateway exited");
        if reaches_at(&endpoint, &pki, &admin).await {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "gateway did not come up");

    let next = pki::init(
        &dir.path().join("next"),
        &pki::InitOptions {
            states: &[],
            offices: &[],
        },
    )
    .unwrap();
    let new_admin = next.client(&Principal::Admin);
    assert!(!reaches_at(&endpoint, &next, &new_admin).await);
    rotate(&pki, &next);
    let pid = child.id().unwrap().to_string();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(hup.success());
    let mut reloaded = false;
    for _ in 0..100 {
        if reaches_at(&endpoint, &next, &new_admin).await {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloaded, "new connections use the reloaded certificates");
    assert!(child.try_wait().unwrap().is_none(), "still running");
    assert!(
        reaches_at(&endpoint, &pki, &admin).await,
        "old CA still trusted"
    );
}

/// A bulk stream whose certificate is revoked mid-way answers what it read before and then
/// ends UNAUTHENTICATED: the next submission is not received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_bulk_stream_submits_nothing_more() {
    let gw = TestGateway::start().await;
    let (send, rx) = tokio::sync::mpsc::channel::<pb::Submission>(4);
    let mut answers = gw
        .bureau("TX")
        .await
        .submit_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    send.send(booking("TX-BULK-REV-0001", TX_RECEIVING, NOBODY))
        .await
        .unwrap();
    let first = next(&mut answers).await.unwrap().expect("an answer");
    assert!(matches!(
        first.result,
        Some(pb::submit_stream_response::Result::Receipt(_))
    ));
    let tx_serial = serial(&gw.pki, &tx());
    revoke(&gw, &tx_serial, "bulk revoked").await;
    send.send(booking("TX-BULK-REV-0002", TX_RECEIVING, NOBODY))
        .await
        .unwrap();
    assert_revoked(next(&mut answers).await, &tx_serial);
    let c = gw.counters().await;
    assert_eq!(
        c.get("submissions_accepted"),
        Some(&1),
        "the submission after the revocation was not received"
    );
}

/// The CA's key stays off serving hosts: `pki init` writes it to a directory of its own, `pki
/// issue` makes one host's directory holding only that host's key, and `serve` refuses a
/// directory that holds the CA's key (saying what to do) unless told it is a development
/// setup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_key_stays_off_serving_hosts() {
    let exe = env!("CARGO_BIN_EXE_interop-gateway-under-test");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    let run = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(exe)
            .args(args)
            .output()
            .expect("run the gateway program")
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    let r = run(&[&os("pki"), &os("init"), &os("--out"), out.as_os_str()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let pki = PkiDir(out.clone());
    let ca = pki.ca_dir_beside();
    assert!(!pki.ca_key().exists() && ca.ca_key().exists());
    assert_eq!(
        pki.workload().unwrap(),
        Some(Principal::Gateway { name: "0".into() })
    );

    // `pki issue --ca CA --id ID [--host H] --out OUT`.
    let issue = |ca: &std::path::Path, id: &str, host: Option<&str>, out: &std::path::Path| {
        let mut args = vec![
            os("pki"),
            os("issue"),
            os("--ca"),
            ca.as_os_str().into(),
            os("--id"),
            os(id),
            os("--out"),
            out.as_os_str().into(),
        ];
        if let Some(h) = host {
            args.extend([os("--host"), os(h)]);
        }
        run(&args.iter().map(|a| a.as_os_str()).collect::<Vec<_>>())
    };

    // One host's directory: a shard's own key, no one else's.
    let shard = dir.path().join("shard");
    let r = issue(
        &ca.0,
        "spiffe://interop.local/matcher/ident-0",
        Some("shard0.interop.internal"),
        &shard,
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let mut files: Vec<String> = std::fs::read_dir(&shard)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["ca.pem", "server-key.pem", "server.pem"]);
    // A bureau's: its client certificate; --host is for workloads, and is refused for it.
    let tx_id = "spiffe://interop.local/bureau/TX";
    let r = issue(&ca.0, tx_id, None, &dir.path().join("tx"));
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(PkiDir(dir.path().join("tx")).client(&tx()).key.exists());
    let r = issue(&ca.0, tx_id, Some("x"), &dir.path().join("tx2"));
    assert!(!r.status.success());
    // Issuing from a serving directory (no CA key there) fails, naming where the CA is.
    let r = issue(
        &out,
        "spiffe://interop.local/admin",
        None,
        &dir.path().join("adm"),
    );
    assert!(!r.status.success());
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("ca-key.pem"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );

    // A serving directory that holds the CA's key is refused before anything is served.
    std::fs::copy(ca.ca_key(), pki.ca_key()).unwrap();
    let world = dir.path().join("world");
    write_world_dir(&world).unwrap();
    let r = run(&[
        &os("serve"),
        &os("--listen"),
        &os("127.0.0.1:0"),
        &os("--pki"),
        out.as_os_str(),
        &os("--world"),
        world.as_os_str(),
        &os("--data"),
        dir.path().join("data").as_os_str(),
        &os("--no-metrics"),
    ]);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("holds the CA's private key") && err.contains("--allow-ca-key"),
        "{err}"
    );
    assert!(!dir.path().join("data").exists(), "a store was opened");
}
