//! Property tests for hostile input (the `proptest` equivalent of a fuzz target, run in the
//! normal suite): random submissions, valid or not — a valid booking with any number of
//! random field mutations, strings of any Unicode — never panic the validator or the server,
//! and a refused one changes nothing. Longer sessions: `PROPTEST_CASES=20000 cargo test
//! --release -p interop-e2e --test fuzz`.

use interop_e2e::*;
use interop_gateway::intake::validate;
use interop_gateway::rules::policy::PolicyBook;
use interop_proto::v1 as pb;
use proptest::prelude::*;
use tonic::Code;

#[derive(Clone, Debug)]
enum Mutation {
    Tcn(String),
    Ori(String),
    Jurisdiction(String),
    Seconds(i64),
    Nanos(i32),
    ChargeCode(usize, String),
    ChargeClass(usize, i32),
    Charges(usize),
    Name(String),
    DateOfBirth(String),
    Place(String),
    Sex(i32),
    Position(usize, u32),
    Size(usize, u32, u32),
    Ppi(usize, u32),
    Minutia(usize, usize, u32, u32, u32, u32, i32),
    Minutiae(usize, usize),
    Fingers(usize),
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Z0-9-]{0,44}",
        "[A-Z]{2}[0-9]{7}",
        any::<String>(),
        "\\PC{0,120}",
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let i = 0usize..12;
    prop_oneof![
        text().prop_map(Mutation::Tcn),
        text().prop_map(Mutation::Ori),
        text().prop_map(Mutation::Jurisdiction),
        any::<i64>().prop_map(Mutation::Seconds),
        any::<i32>().prop_map(Mutation::Nanos),
        (i.clone(), text()).prop_map(|(i, s)| Mutation::ChargeCode(i, s)),
        (i.clone(), -2i32..12).prop_map(|(i, c)| Mutation::ChargeClass(i, c)),
        (0usize..25).prop_map(Mutation::Charges),
        text().prop_map(Mutation::Name),
        text().prop_map(Mutation::DateOfBirth),
        text().prop_map(Mutation::Place),
        (-2i32..6).prop_map(Mutation::Sex),
        (i.clone(), 0u32..13).prop_map(|(i, p)| Mutation::Position(i, p)),
        (i.clone(), 0u32..2100, 0u32..2100).prop_map(|(i, w, h)| Mutation::Size(i, w, h)),
        (i.clone(), prop_oneof![Just(500u32), any::<u32>()]).prop_map(|(i, p)| Mutation::Ppi(i, p)),
        (
            i.clone(),
            0usize..300,
            0u32..2100,
            0u32..2100,
            0u32..400,
            0u32..120,
            -1i32..4
        )
            .prop_map(|(i, k, x, y, a, q, t)| Mutation::Minutia(i, k, x, y, a, q, t)),
        (i.clone(), 0usize..300).prop_map(|(i, n)| Mutation::Minutiae(i, n)),
        (0usize..13).prop_map(Mutation::Fingers),
    ]
}

fn apply(s: &mut pb::Submission, m: &Mutation) {
    match m.clone() {
        Mutation::Tcn(t) => s.tcn = t,
        Mutation::Ori(t) => s.ori = t,
        Mutation::Jurisdiction(t) => s.jurisdiction_id = t,
        Mutation::Seconds(x) => s.booked_at.get_or_insert_default().seconds = x,
        Mutation::Nanos(x) => s.booked_at.get_or_insert_default().nanos = x,
        Mutation::ChargeCode(i, t) => {
            if let Some(c) = s.charges.get_mut(i) {
                c.code = t
            }
        }
        Mutation::ChargeClass(i, c) => {
            if let Some(ch) = s.charges.get_mut(i) {
                ch.class = c
            }
        }
        Mutation::Charges(n) => {
            let c = s.charges.first().cloned().unwrap_or_default();
            s.charges = vec![c; n];
        }
        Mutation::Name(t) => s.biographics.get_or_insert_default().name = t,
        Mutation::DateOfBirth(t) => s.biographics.get_or_insert_default().date_of_birth = t,
        Mutation::Place(t) => s.biographics.get_or_insert_default().place_of_birth = t,
        Mutation::Sex(x) => s.biographics.get_or_insert_default().sex = x,
        Mutation::Position(i, p) => {
            if let Some(f) = s.fingers.get_mut(i) {
                f.position = p
            }
        }
        Mutation::Size(i, w, h) => {
            if let Some(f) = s.fingers.get_mut(i) {
                (f.image_width, f.image_height) = (w, h)
            }
        }
        Mutation::Ppi(i, p) => {
            if let Some(f) = s.fingers.get_mut(i) {
                f.resolution_ppi = p
            }
        }
        Mutation::Minutia(i, k, x, y, a, q, t) => {
            if let Some(m) = s.fingers.get_mut(i).and_then(|f| f.minutiae.get_mut(k)) {
                (m.x, m.y, m.angle_deg, m.quality, m.r#type) = (x, y, a, q, t);
            }
        }
        Mutation::Minutiae(i, n) => {
            if let Some(f) = s.fingers.get_mut(i) {
                let m = f.minutiae.first().copied().unwrap_or_default();
                f.minutiae.resize(n, m);
            }
        }
        Mutation::Fingers(n) => {
            let f = s.fingers.first().cloned().unwrap_or_default();
            s.fingers.resize(n, f);
        }
    }
}

fn submission(n: u64, muts: &[Mutation]) -> pb::Submission {
    let mut s = booking(&format!("TX-FUZZ-{n:08}"), TX_RECEIVING, NOBODY);
    for m in muts {
        apply(&mut s, m);
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The validator never panics; a refusal names at least one field, each with a rule.
    #[test]
    fn the_validator_never_panics(muts in prop::collection::vec(mutation(), 0..6)) {
        let policy = PolicyBook::new(&world());
        let sub = submission(1, &muts);
        if let Err(e) = validate::submission("TX", &policy, &sub, chrono::Utc::now()) {
            let status: tonic::Status = e.into();
            prop_assert!(!status.message().is_empty());
            prop_assert!(matches!(
                status.code(),
                Code::InvalidArgument | Code::PermissionDenied
            ), "{:?}", status);
        }
    }
}

/// Over mutual TLS against one gateway: random submissions never take the server down, and
/// every refused one leaves no record, no counter, no stream entry.
#[test]
fn random_submissions_never_panic_the_server_and_refusals_change_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let gw = rt.block_on(TestGateway::start());
    let b = rt.block_on(gw.bureau("TX"));
    let cases: u32 = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(|n: u32| n.min(2000))
        .unwrap_or(96);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases));
    let n = std::cell::Cell::new(0u64);
    let (accepted, refused) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    runner
        .run(&prop::collection::vec(mutation(), 0..4), |muts| {
            n.set(n.get() + 1);
            let sub = submission(n.get(), &muts);
            let mut b = b.clone();
            rt.block_on(async {
                let before = gw.counters().await;
                let tx_log = bureau_log(&gw, "TX").await.len();
                match b.submit(sub.clone()).await {
                    Ok(r) => {
                        accepted.set(accepted.get() + 1);
                        wait_completed(&gw, "TX", &r.into_inner().tcn).await;
                    }
                    Err(e) => {
                        refused.set(refused.get() + 1);
                        prop_assert!(
                            matches!(
                                e.code(),
                                Code::InvalidArgument
                                    | Code::PermissionDenied
                                    | Code::AlreadyExists
                                    | Code::OutOfRange
                            ),
                            "{e:?}"
                        );
                        prop_assert_eq!(gw.counters().await, before, "a refusal moved a counter");
                        prop_assert_eq!(bureau_log(&gw, "TX").await.len(), tx_log);
                        if validate::tcn_ok(&sub.tcn) && e.code() != Code::AlreadyExists {
                            let st = b
                                .get_status(pb::GetStatusRequest {
                                    tcn: sub.tcn.clone(),
                                })
                                .await;
                            prop_assert_eq!(
                                st.map_err(|s| s.code()).err(),
                                Some(Code::NotFound),
                                "a refused submission left a record"
                            );
                        }
                    }
                }
                Ok(())
            })
        })
        .unwrap();
    // Still serving.
    let counters = rt.block_on(gw.counters());
    let (accepted, refused) = (accepted.get(), refused.get());
    println!("fuzz over mTLS: {accepted} accepted, {refused} refused, counters {counters:?}");
    assert!(refused > 0, "the generator never produced bad input");
}
