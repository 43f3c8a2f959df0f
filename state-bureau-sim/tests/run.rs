//! `state-bureau-sim run` against a gateway in this process, over real mutual TLS: a seeded
//! short open-loop run passes every check, and a gateway that leaks — one non-receiving
//! jurisdiction reconfigured to receive immigration responses, against the program's ground
//! truth — is caught by the verifier with that jurisdiction's TCNs. This proves the checks can
//! fail.

use interop_gateway::auth::principal::Principal;
use interop_gateway_cli::pki;
use interop_proto::v1 as pb;
use state_bureau_sim::bookings::{self, WorldData};
use state_bureau_sim::demo::{self, Arrival, DemoOptions, RunOptions};
use std::path::Path;

mod common;
use common::{SEED, serve, serve_with_ident};

const BOOKINGS: usize = 160;

fn options(dir: &Path, endpoint: &str, tag: &str) -> RunOptions {
    RunOptions {
        target: endpoint.into(),
        pki: dir.join("pki"),
        world: dir.join("world"),
        demo: DemoOptions {
            seed: SEED,
            bookings: BOOKINGS,
            arrival: Arrival::Poisson { rate: 400.0 },
            run_tag: format!("{tag}-"),
            plant_outliers: 0,
            settle_timeout: std::time::Duration::from_secs(60),
            ..Default::default()
        },
    }
}

fn failures(v: &state_bureau_sim::verify::Verification, check: &str) -> usize {
    v.checks
        .iter()
        .find(|c| c.name == check)
        .map(|c| c.failures)
        .unwrap_or_else(|| panic!("no check named {check}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_open_loop_run_passes_and_a_second_run_does_not_collide() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path()).await;
    let v = demo::run_remote(options(dir.path(), &s.endpoint, "A"))
        .await
        .unwrap();
    assert!(v.passed(), "{:?}", v.violations);
    // The same seed again under another tag: new TCNs, counted as differences; this time in
    // two steps (200/s then 400/s, a quarter second each), with the JSON and HTML reports.
    let mut o = options(dir.path(), &s.endpoint, "B");
    o.demo.arrival = Arrival::Steps {
        start: 200.0,
        step: 200.0,
        max: 400.0,
        step_secs: 0.25,
    };
    o.demo.bookings = o.demo.arrival.step_bookings().unwrap();
    o.demo.json = Some(dir.path().join("b.json"));
    o.demo.html = Some(dir.path().join("b.html"));
    let v = demo::run_remote(o.clone()).await.unwrap();
    assert!(v.passed(), "{:?}", v.violations);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("b.json")).unwrap()).unwrap();
    let steps = report["timeline"]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    let due: u64 = steps.iter().map(|s| s["sent"].as_u64().unwrap()).sum();
    assert!(
        due as usize <= o.demo.bookings && due > 0,
        "{due} of {}",
        o.demo.bookings
    );
    assert!(
        !report["timeline"]["intervals"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let html = std::fs::read_to_string(dir.path().join("b.html")).unwrap();
    assert!(html.contains("Step profile") && html.contains("<svg") && html.contains("PASS"));
    let _ = s.stop.send(());
    s.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_leaks_to_a_non_receiving_jurisdiction_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path()).await;
    // The non-receiving jurisdiction this run identifies people in most often.
    let data = WorldData::load(&dir.path().join("world")).unwrap();
    let (from, days) = demo::booking_window();
    // Only identifications are sent at all: enough bookings that a non-receiving
    // jurisdiction has several.
    const LEAK_BOOKINGS: usize = 600;
    let plan = bookings::plan(&data, SEED, LEAK_BOOKINGS, from, days, &Default::default());
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for b in plan.iter().filter(|b| {
        b.expected.searched && !b.expected.bureau_receives && !b.expected.fin.is_empty()
    }) {
        *counts
            .entry(b.submission.jurisdiction_id.as_str())
            .or_default() += 1;
    }
    let (victim, n) = counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .expect("the plan identifies someone in a jurisdiction that does not receive results");
    let pki = pki::PkiDir(dir.path().join("pki"));
    let ch = pki::connect(&s.endpoint, &pki, &Principal::Admin)
        .await
        .unwrap();
    let p = pb::admin_service_client::AdminServiceClient::new(ch)
        .set_policy(pb::SetPolicyRequest {
            jurisdiction_id: victim.into(),
            receives_results: Some(true),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    if p.state_declines_results || !p.can_receive_electronically {
        // The state-level choice still withholds: flip it too, so the gateway truly leaks.
        let ch = pki::connect(&s.endpoint, &pki, &Principal::Admin)
            .await
            .unwrap();
        let mut admin = pb::admin_service_client::AdminServiceClient::new(ch);
        admin
            .set_state_policy(pb::SetStatePolicyRequest {
                state: p.state.clone(),
                declines_results: false,
            })
            .await
            .unwrap();
        admin
            .set_policy(pb::SetPolicyRequest {
                jurisdiction_id: victim.into(),
                can_receive_electronically: Some(true),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut o = options(dir.path(), &s.endpoint, "LEAK");
    o.demo.bookings = LEAK_BOOKINGS;
    let v = demo::run_remote(o).await.unwrap();
    assert!(!v.passed(), "the leak went unnoticed");
    assert!(
        failures(&v, "leaks to jurisdictions not receiving") >= n,
        "expected at least {n} leaks in {victim}: {:?}",
        v.violations
    );
    assert!(
        v.violations.iter().any(|m| m.contains(victim)),
        "{:?}",
        v.violations
    );
    let _ = s.stop.send(());
    s.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mid_run_policy_changes_are_checked_from_the_moment_of_change_and_undone() {
    use state_bureau_sim::changes::PolicyChange;
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path()).await;
    let data = WorldData::load(&dir.path().join("world")).unwrap();
    // The state this run books most in, opting out; the busiest jurisdiction not yet activated
    // at any of the run's booking dates (every one is by January 2013), activated.
    let (from, days) = demo::booking_window();
    let plan = bookings::plan(&data, SEED, BOOKINGS, from, days, &Default::default());
    let mut per_state = std::collections::BTreeMap::<&str, usize>::new();
    for b in plan.iter().filter(|b| b.expected.bureau_receives) {
        *per_state.entry(b.state.as_str()).or_default() += 1;
    }
    let state = per_state.into_iter().max_by_key(|(_, n)| *n).unwrap().0;
    let jurisdiction = data
        .world
        .jurisdictions
        .iter()
        .filter(|j| {
            j.activated_on
                .is_none_or(|d| d >= from + chrono::Days::new(days as u64))
        })
        .max_by_key(|j| j.population)
        .unwrap()
        .id
        .clone();
    // Every run must pass. Whether some bookings fall wholly before the change and some
    // wholly after it depends on how far processing lags sending, which a loaded machine
    // stretches (then everything is "in flight" across it); such a run proves too little, so
    // it is run again with fresh TCNs, up to three times.
    let mut held = serde_json::Value::Null;
    for attempt in 1..=3 {
        let mut o = options(dir.path(), &s.endpoint, &format!("CHG{attempt}"));
        o.demo.arrival = Arrival::Poisson { rate: 150.0 };
        o.demo.changes = vec![
            PolicyChange::Decline {
                state: state.to_string(),
            },
            PolicyChange::Activate {
                jurisdiction: jurisdiction.clone(),
            },
        ];
        o.demo.json = Some(dir.path().join("chg.json"));
        let v = demo::run_remote(o).await.unwrap();
        assert!(v.passed(), "{:?}", v.violations);
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("chg.json")).unwrap()).unwrap();
        held = report["policy_changes"]["held"].clone();
        // The activation was announced to the state's bureau in advance, once (verified).
        assert_eq!(report["activation_notices"], 1, "{report}");
        if held["new"].as_u64().unwrap() > 0 && held["old"].as_u64().unwrap() > 0 {
            break;
        }
        eprintln!("attempt {attempt}: every booking straddled the change ({held}); again");
    }
    assert!(held["new"].as_u64().unwrap() > 0, "{held}");
    assert!(held["old"].as_u64().unwrap() > 0, "{held}");

    // Undone: the gateway's policy is the world's again.
    let admin = pki::connect_client(
        &s.endpoint,
        &pki::PkiDir(dir.path().join("pki")),
        &Principal::Admin,
    )
    .await
    .unwrap();
    let was = data
        .world
        .jurisdictions
        .iter()
        .find(|j| j.id == jurisdiction)
        .and_then(|j| j.activated_on)
        .unwrap();
    assert_eq!(
        admin.get_policy(&jurisdiction).await.unwrap().activated_on,
        was.to_string()
    );
    let any_in_state = data
        .world
        .jurisdictions
        .iter()
        .find(|j| j.state == state)
        .unwrap();
    assert!(
        !admin
            .get_policy(&any_in_state.id)
            .await
            .unwrap()
            .state_declines_results
    );

    // A change that makes no difference is refused before anything is sent: activating a
    // jurisdiction active at every booking date.
    let mut o = options(dir.path(), &s.endpoint, "CHG2");
    o.demo.changes = vec![PolicyChange::Activate {
        jurisdiction: data
            .world
            .jurisdictions
            .iter()
            .find(|j| j.activated_on.is_some_and(|d| d <= from))
            .unwrap()
            .id
            .clone(),
    }];
    let e = demo::run_remote(o).await.unwrap_err().to_string();
    assert!(e.contains("activated already"), "{e}");
    let _ = s.stop.send(());
    s.task.await.unwrap().unwrap();
}

/// Runs against one gateway keep seeing answers live however much the gateway answered
/// before (issue 29): after a first run leaves more responses in the bureaus' logs than the
/// driver buffers (4,096), a second, slow open-loop run still sees every field-office
/// notification within a generous liveness bound. The driver used to read each bureau's
/// whole retained log first, and to read nothing until every booking was sent, so behind a
/// full buffer its notifications looked as late as the run was long, and every run was worse
/// than the one before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_after_a_long_history_still_sees_notifications_live() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path()).await;
    let mut history = options(dir.path(), &s.endpoint, "HIST");
    history.demo.bookings = 4_500;
    history.demo.arrival = Arrival::Closed {
        per_bureau_inflight: 16,
    };
    history.demo.settle_timeout = std::time::Duration::from_secs(600);
    let v = demo::run_remote(history).await.unwrap();
    assert!(v.passed(), "{:?}", v.violations);

    // Eight seconds at 25 bookings a second: a driver that waits for the submissions to end
    // sees its notifications seconds late.
    let mut live = options(dir.path(), &s.endpoint, "LIVE");
    live.demo.bookings = 200;
    live.demo.arrival = Arrival::Poisson { rate: 25.0 };
    live.demo.json = Some(dir.path().join("live.json"));
    let v = demo::run_remote(live).await.unwrap();
    assert!(v.passed(), "{:?}", v.violations);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("live.json")).unwrap()).unwrap();
    let notification = &report["latency"]["field_office_notification"];
    assert!(
        notification["count"].as_u64().unwrap() > 0,
        "{notification}"
    );
    let p99 = notification["p99_ms"].as_f64().unwrap();
    assert!(
        p99 < 3_000.0,
        "field-office notification p99 {p99} ms after a long history: not live"
    );
    let _ = s.stop.send(());
    s.task.await.unwrap().unwrap();
}

/// IDENT that never finds anyone (a broken matcher, not an unlucky one).
struct Blind;

#[interop_gateway::engines::async_trait]
impl interop_gateway::engines::IdentSearch for Blind {
    async fn search(
        &self,
        _: interop_matcher::Tenprint,
    ) -> Result<Option<interop_gateway::engines::IdentHit>, interop_gateway::engines::BackendError>
    {
        Ok(None)
    }
}

/// IDENT that never completes a search: every searched booking stays unfinished, so its
/// answers never leave the gateway (a gateway that drops them, as its users see it).
struct Dropping;

#[interop_gateway::engines::async_trait]
impl interop_gateway::engines::IdentSearch for Dropping {
    async fn search(
        &self,
        _: interop_matcher::Tenprint,
    ) -> Result<Option<interop_gateway::engines::IdentHit>, interop_gateway::engines::BackendError>
    {
        Err(interop_gateway::engines::BackendError::Unavailable(
            "the test drops every search".into(),
        ))
    }
}

/// A statistical criterion still fails a broken matcher: a gateway whose IDENT finds no one
/// misses every mate, and the run fails on IDENT's FNIR (its interval lies wholly above the
/// target) with the misses listed. Field offices hear of identifications only, so from outside
/// a miss looks like a lost identification; here the gateway's `MatcherService` still runs the
/// real matcher, finds the listed mates first, and the run says so as lost identifications
/// (only the pipeline's engine is blind). Every other deterministic check passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blind_matcher_fails_by_its_error_rate() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve_with_ident(dir.path(), |_| std::sync::Arc::new(Blind)).await;
    let v = demo::run_remote(options(dir.path(), &s.endpoint, "BLIND"))
        .await
        .unwrap();
    assert!(!v.passed(), "a blind matcher passed");
    assert!(
        v.checks
            .iter()
            .all(|c| c.failures == 0 || c.name == "notifications lost or misrouted"),
        "{:?}",
        v.checks
    );
    assert!(failures(&v, "notifications lost or misrouted") > 0);
    let fnir = v
        .rates
        .iter()
        .find(|r| r.name.starts_with("IDENT FNIR"))
        .unwrap();
    assert!(fnir.trials > 0 && fnir.errors == fnir.trials, "{fnir:?}");
    assert!(!fnir.passed(), "{fnir:?}");
    assert!(
        v.errors
            .iter()
            .any(|e| e.what.contains("no hit") && e.mate_rank.is_some()),
        "misses listed with the mate's rank: {:?}",
        v.errors
    );
    let _ = s.stop.send(());
    s.task.await.unwrap().unwrap();
}

/// Deterministic invariants stay strict: a gateway whose searched bookings never finish
/// delivers no answers for them, and the run fails on lost notifications and criminal-history
/// responses, however the statistics look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_drops_answers_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve_with_ident(dir.path(), |_| std::sync::Arc::new(Dropping)).await;
    let mut o = options(dir.path(), &s.endpoint, "DROP");
    o.demo.settle_timeout = std::time::Duration::from_secs(5);
    let v = demo::run_remote(o).await.unwrap();
    assert!(!v.passed(), "dropped answers went unnoticed");
    assert!(
        failures(&v, "notifications lost or misrouted") > 0,
        "{:?}",
        v.checks
    );
    assert!(
        failures(&v, "criminal-history responses lost or duplicated") > 0,
        "{:?}",
        v.checks
    );
    let _ = s.stop.send(());
    s.task.await.unwrap().unwrap();
}

/// `demo --dir` twice on one directory: the second run finds the first's data, tags its TCNs
/// (else they would be the first run's bookings again, whose receipts and the offices'
/// decisions stand), and passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_demo_on_one_directory_passes() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || DemoOptions {
        seed: SEED,
        identities: 1_500,
        bookings: 200,
        dir: Some(dir.path().to_path_buf()),
        shards: 2,
        quiet: true,
        settle_timeout: std::time::Duration::from_secs(60),
        ..Default::default()
    };
    for run in 1..=2 {
        let v = demo::run(opts()).await.unwrap();
        assert!(v.passed(), "run {run}: {:?}", v.violations);
    }
}
