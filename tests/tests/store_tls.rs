//! The shared log of a cluster (NATS JetStream), reached as `state-bureau-sim cluster` sets it
//! up: over mutual TLS, and only with the gateways' own store certificate.

use interop_gateway::auth::principal::Principal;
use interop_gateway::store::{Accepted, NatsOptions, NatsStore, Store, SubmissionKey, test_server};
use interop_gateway_cli::pki;
use std::time::Duration;

/// With the cluster's configuration the log is reached over mutual TLS, and only with the
/// gateways' store certificate: a bureau's certificate from the same CA, or no TLS, is
/// refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_admits_only_the_gateways_certificate() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = pki::init_default(&pki_dir.path().join("pki")).unwrap();
    let mut addr = String::new();
    let Some(_server) = test_server::start_server_with(
        "the_log_admits_only_the_gateways_certificate",
        |port, store| {
            addr = format!("127.0.0.1:{port}");
            Some(pki::nats_server_config(&pki, &addr, store))
        },
    ) else {
        return;
    };
    let spec = pki::nats_store_spec(&pki, &addr, "LOG").unwrap();
    let store = NatsStore::connect(NatsOptions::parse(&spec).unwrap())
        .await
        .expect("the gateways' certificate is admitted");
    assert!(matches!(
        store
            .accept(
                SubmissionKey {
                    bureau: "TX".into(),
                    tcn: "TLS-1".into()
                },
                b"x".to_vec(),
                1
            )
            .await
            .unwrap(),
        Accepted::New(_)
    ));

    let bureau = pki.client(&Principal::Bureau { state: "TX".into() });
    let as_bureau = format!(
        "tls://{addr}/LOG?ca={}&cert={}&key={}",
        pki.ca_cert().display(),
        bureau.cert.display(),
        bureau.key.display()
    );
    let t = std::time::Instant::now();
    let refused = NatsStore::connect(NatsOptions::parse(&as_bureau).unwrap()).await;
    let e = refused
        .err()
        .expect("a bureau certificate must not open the log");
    assert!(
        e.to_string().contains("authorization"),
        "refused for the wrong reason: {e:#}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "a refusal is not retried"
    );

    let e = NatsOptions::parse(&format!("nats://{addr}/LOG"))
        .expect_err("plaintext refused unless asked for by name");
    assert!(e.to_string().contains("insecure=true"), "{e}");
    let plain = NatsStore::connect(
        NatsOptions::parse(&format!("nats://{addr}/LOG?insecure=true")).unwrap(),
    )
    .await;
    assert!(plain.is_err(), "a connection without TLS must be refused");
}
