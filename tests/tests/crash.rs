//! Nothing receipted is ever lost (DESIGN §3, invariants 1 and 4): the real gateway program
//! runs as a child process and is killed with SIGKILL at seeded random moments while two
//! bureaus submit and two field offices follow and acknowledge their streams; after each kill
//! it restarts on the same data directory. At the end, against the ground truth of the plan:
//!
//! - every receipt stands: resubmitting a receipted TCN returns the same receipt, marked
//!   duplicate (a receipt given for something not stored would come back as new);
//! - every booking was processed exactly once in effect: its field office's log holds its
//!   outcome exactly once, its bureau's log one criminal-history response and one immigration
//!   response only where the jurisdiction receives them, and the monthly statistics count it
//!   once;
//! - a field office never sees again what it acknowledged, and misses nothing;
//! - no leak to a jurisdiction that does not receive results, no search of a jurisdiction that is not activated.
//!
//! The normal suite runs [`DEFAULT_CYCLES`] kills. The long version, which prints the same
//! figures:
//!
//! ```sh
//! INTEROP_CRASH_CYCLES=20 INTEROP_CRASH_SEED=5 cargo test --release -p interop-e2e --test crash -- --nocapture
//! ```

use interop_e2e::program::{self, Dirs, Running, log_tail};
use interop_e2e::*;
use interop_gateway::auth::principal::Principal;
use interop_gateway_cli::pki::{self, PkiDir};
use interop_proto::v1 as pb;
use pb::admin_service_client::AdminServiceClient;
use pb::field_office_service_client::FieldOfficeServiceClient;
use pb::submission_service_client::SubmissionServiceClient;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::Channel;

const DEFAULT_CYCLES: usize = 3;
const BOOKINGS_PER_CYCLE: usize = 40;
const SENDERS_PER_BUREAU: usize = 3;
const JURISDICTIONS: [&str; 4] = [
    TX_RECEIVING,
    TX_NOT_RECEIVING,
    TX_NOT_ACTIVATED,
    CA_RECEIVING,
];

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone)]
struct Planned {
    state: String,
    jurisdiction: &'static str,
    person: u64,
    submission: pb::Submission,
}

impl Planned {
    fn searched(&self) -> bool {
        self.jurisdiction != TX_NOT_ACTIVATED
    }
    /// Searched and in IDENT: an identification (no-hits are disclosed to no one).
    fn identified(&self) -> bool {
        self.searched() && !matches!(self.person, NOBODY | FBI_ONLY)
    }
    fn office(&self) -> &'static str {
        if self.state == "TX" { "HOU" } else { "LOS" }
    }
    fn receives(&self) -> bool {
        matches!(self.jurisdiction, TX_RECEIVING | CA_RECEIVING)
    }
}

fn plan(seed: u64, n: usize) -> Vec<Planned> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let people = [OVERSTAY_FELON, CITIZEN, NOBODY, FBI_ONLY, 100, 117, 150];
    (0..n)
        .map(|i| {
            let jurisdiction = JURISDICTIONS[rng.random_range(0..JURISDICTIONS.len())];
            let person = people[rng.random_range(0..people.len())];
            let state = jurisdiction[..2].to_string();
            let tcn = format!("{state}-CRASH-{i:06}");
            Planned {
                state,
                jurisdiction,
                person,
                submission: booking(&tcn, jurisdiction, person),
            }
        })
        .collect()
}

/// What the clients saw, across every life of the gateway.
#[derive(Default)]
struct Ledger {
    /// TCN → receipt id, for every receipt a bureau got.
    receipts: BTreeMap<String, String>,
    /// Office → every (cursor, TCN) delivered, in order, repeats included.
    deliveries: BTreeMap<&'static str, Vec<(u64, String)>>,
    /// Office → the acknowledged cursor the gateway last confirmed.
    acked: BTreeMap<&'static str, u64>,
    /// Deliveries at or below a confirmed acknowledgement.
    redelivered_after_ack: Vec<String>,
}

async fn channel(r: &Running, pki: &PkiDir, who: Principal) -> Option<Channel> {
    pki::connect(&r.endpoint, pki, &who).await.ok()
}

/// Bureau senders: take bookings off the queue and submit them until it is empty or the
/// gateway is gone. A booking without a receipt stays pending for the next life.
fn spawn_bureau(
    ch: Channel,
    queue: Arc<Mutex<VecDeque<Planned>>>,
    ledger: Arc<Mutex<Ledger>>,
    seed: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut c = SubmissionServiceClient::new(ch);
        loop {
            let Some(p) = queue.lock().expect("queue").pop_front() else {
                return;
            };
            match c.submit(p.submission.clone()).await {
                Ok(r) => {
                    let r = r.into_inner();
                    ledger
                        .lock()
                        .expect("ledger")
                        .receipts
                        .insert(r.tcn, r.receipt_id);
                }
                Err(_) => return,
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..30))).await;
        }
    })
}

/// A field office following its stream from its durable cursor, acknowledging as it goes.
fn spawn_office(
    ch: Channel,
    office: &'static str,
    ledger: Arc<Mutex<Ledger>>,
    follow: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut c = FieldOfficeServiceClient::new(ch);
        let Ok(stream) = c
            .subscribe(pb::SubscribeRequest {
                after_cursor: None,
                follow,
            })
            .await
        else {
            return;
        };
        let mut stream = stream.into_inner();
        while let Ok(Some(n)) = stream.message().await {
            let tcn = n.outcome.map(|o| o.tcn).unwrap_or_default();
            {
                let mut l = ledger.lock().expect("ledger");
                let acked = l.acked.get(office).copied().unwrap_or(0);
                if n.cursor <= acked {
                    l.redelivered_after_ack
                        .push(format!("{office} cursor {} ({tcn})", n.cursor));
                }
                l.deliveries
                    .entry(office)
                    .or_default()
                    .push((n.cursor, tcn));
            }
            match c.ack(pb::AckRequest { cursor: n.cursor }).await {
                Ok(r) => {
                    let mut l = ledger.lock().expect("ledger");
                    let a = l.acked.entry(office).or_default();
                    assert!(
                        r.get_ref().acked_cursor >= *a,
                        "{office}: acknowledged cursor went backwards"
                    );
                    *a = r.get_ref().acked_cursor;
                }
                Err(_) => return,
            }
        }
    })
}

async fn wait_all_completed(r: &Running, d: &Dirs, plan: &[Planned]) {
    for state in ["TX", "CA"] {
        let ch = channel(
            r,
            &d.pki,
            Principal::Bureau {
                state: state.into(),
            },
        )
        .await
        .expect("connect");
        let mut c = SubmissionServiceClient::new(ch);
        for p in plan.iter().filter(|p| p.state == state) {
            let mut done = false;
            for _ in 0..1200 {
                let s = c
                    .get_status(pb::GetStatusRequest {
                        tcn: p.submission.tcn.clone(),
                    })
                    .await
                    .expect("status")
                    .into_inner();
                if s.stage == pb::Stage::Completed as i32 {
                    done = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            assert!(done, "{} never completed", p.submission.tcn);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_and_duplicates_nothing() {
    let cycles = env_or("INTEROP_CRASH_CYCLES", DEFAULT_CYCLES as u64) as usize;
    let seed = env_or("INTEROP_CRASH_SEED", 11);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Dirs::new(dir.path());
    let plan = plan(seed, cycles * BOOKINGS_PER_CYCLE);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xC4A5);
    let started = std::time::Instant::now();

    for cycle in 0..=cycles {
        let last = cycle == cycles;
        let running = program::start(
            env!("CARGO_BIN_EXE_interop-gateway-under-test"),
            &d,
            &[],
            "debug",
        )
        .await;
        // This life's work: the next batch, plus whatever earlier lives did not receipt.
        let offered = if last {
            plan.len()
        } else {
            (cycle + 1) * BOOKINGS_PER_CYCLE
        };
        let receipted: BTreeSet<String> = ledger
            .lock()
            .expect("ledger")
            .receipts
            .keys()
            .cloned()
            .collect();
        let mut tasks = vec![];
        for state in ["TX", "CA"] {
            let queue: VecDeque<Planned> = plan[..offered]
                .iter()
                .filter(|p| p.state == state && !receipted.contains(&p.submission.tcn))
                .cloned()
                .collect();
            let queue = Arc::new(Mutex::new(queue));
            for k in 0..SENDERS_PER_BUREAU {
                let who = Principal::Bureau {
                    state: state.into(),
                };
                if let Some(ch) = channel(&running, &d.pki, who).await {
                    tasks.push(spawn_bureau(
                        ch,
                        queue.clone(),
                        ledger.clone(),
                        seed ^ (cycle * 16 + k) as u64,
                    ));
                }
            }
        }
        for office in ["HOU", "LOS"] {
            let who = Principal::FieldOffice {
                office: office.into(),
            };
            if let Some(ch) = channel(&running, &d.pki, who).await {
                tasks.push(spawn_office(ch, office, ledger.clone(), !last));
            }
        }
        if last {
            // The final life is not killed: let everything finish and drain.
            let offices = tasks.split_off(tasks.len() - 2);
            for t in tasks {
                t.await.expect("bureau task");
            }
            wait_all_completed(&running, &d, &plan).await;
            for t in offices {
                t.abort();
            }
            for office in ["HOU", "LOS"] {
                let who = Principal::FieldOffice {
                    office: office.into(),
                };
                let ch = channel(&running, &d.pki, who).await.expect("connect");
                spawn_office(ch, office, ledger.clone(), false)
                    .await
                    .expect("office drain");
            }
            verify(&running, &d, &plan, &ledger, cycles, started.elapsed()).await;
            let mut child = running.child;
            child.start_kill().expect("kill");
            let _ = child.wait().await;
        } else {
            let delay = Duration::from_millis(rng.random_range(20..700));
            tokio::time::sleep(delay).await;
            let mut child = running.child;
            child.start_kill().expect("kill -9");
            let _ = child.wait().await;
            for t in tasks {
                t.abort();
                let _ = t.await;
            }
        }
    }
}

async fn verify(
    r: &Running,
    d: &Dirs,
    plan: &[Planned],
    ledger: &Mutex<Ledger>,
    cycles: usize,
    elapsed: Duration,
) {
    let mut problems: Vec<String> = vec![];
    let (receipts, deliveries, redelivered) = {
        let l = ledger.lock().expect("ledger");
        (
            l.receipts.clone(),
            l.deliveries.clone(),
            l.redelivered_after_ack.clone(),
        )
    };
    let mut lost = 0usize;
    let mut duplicates = 0usize;

    // Every receipt stands: resubmitting returns the same receipt, as a duplicate.
    for state in ["TX", "CA"] {
        let ch = channel(
            r,
            &d.pki,
            Principal::Bureau {
                state: state.into(),
            },
        )
        .await
        .expect("connect");
        let mut c = SubmissionServiceClient::new(ch);
        for p in plan.iter().filter(|p| p.state == state) {
            let tcn = &p.submission.tcn;
            let again = c
                .submit(p.submission.clone())
                .await
                .expect("resubmit")
                .into_inner();
            match receipts.get(tcn) {
                None => problems.push(format!("{tcn}: never receipted")),
                Some(id) if *id != again.receipt_id || !again.duplicate => {
                    lost += 1;
                    problems.push(format!("{tcn}: receipt {id} did not stand"));
                }
                Some(_) => {}
            }
        }
    }

    // Each office's log holds each outcome of its area exactly once; every cursor in it was
    // delivered to the office at least once.
    for office in ["HOU", "LOS"] {
        let full = office_log_at(r, d, office).await;
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        for n in &full {
            let tcn = n.outcome.as_ref().map(|o| o.tcn.as_str()).unwrap_or("");
            *count.entry(tcn).or_default() += 1;
        }
        for p in plan.iter().filter(|p| p.office() == office) {
            let want = usize::from(p.identified());
            let got = count.remove(p.submission.tcn.as_str()).unwrap_or(0);
            lost += want.saturating_sub(got);
            duplicates += got.saturating_sub(want);
            if got != want {
                problems.push(format!(
                    "{office}: {} outcome {got} times, expected {want}",
                    p.submission.tcn
                ));
            }
        }
        for (tcn, n) in count {
            problems.push(format!("{office}: unexpected outcome {tcn} ({n}×)"));
        }
        let seen: BTreeMap<u64, &str> = deliveries
            .get(office)
            .map(|v| v.iter().map(|(c, t)| (*c, t.as_str())).collect())
            .unwrap_or_default();
        for n in &full {
            let tcn = n.outcome.as_ref().map(|o| o.tcn.as_str()).unwrap_or("");
            match seen.get(&n.cursor) {
                None => problems.push(format!("{office}: cursor {} never delivered", n.cursor)),
                Some(t) if *t != tcn => problems.push(format!(
                    "{office}: cursor {} delivered as {t}, stored as {tcn}",
                    n.cursor
                )),
                Some(_) => {}
            }
        }
    }
    problems.extend(
        redelivered
            .iter()
            .map(|s| format!("delivered again after ack: {s}")),
    );

    // Bureaus: one criminal-history response each; immigration only where received.
    for state in ["TX", "CA"] {
        let ch = channel(
            r,
            &d.pki,
            Principal::Bureau {
                state: state.into(),
            },
        )
        .await
        .expect("connect");
        let log = read_bureau_log(ch).await;
        for p in plan.iter().filter(|p| p.state == state) {
            let tcn = &p.submission.tcn;
            let of = |imm: bool| {
                log.iter()
                    .filter(|r| &r.tcn == tcn)
                    .filter(|r| match r.body {
                        Some(pb::bureau_response::Body::CriminalHistory(_)) => !imm,
                        Some(pb::bureau_response::Body::Immigration(_)) => imm,
                        _ => false,
                    })
                    .count()
            };
            let (ch, imm) = (of(false), of(true));
            let want_imm = usize::from(p.identified() && p.receives());
            if ch != 1 {
                duplicates += ch.saturating_sub(1);
                problems.push(format!("{tcn}: {ch} criminal-history responses"));
            }
            if imm != want_imm {
                duplicates += imm.saturating_sub(1);
                problems.push(format!(
                    "{tcn}: {imm} immigration responses, expected {want_imm}{}",
                    if !p.receives() {
                        " (a leak: the jurisdiction does not receive)"
                    } else {
                        ""
                    }
                ));
            }
        }
    }

    // Monthly statistics: each booking counted once; no search where not activated.
    let admin = channel(r, &d.pki, Principal::Admin).await.expect("connect");
    let june = AdminServiceClient::new(admin)
        .get_monthly_stats(pb::GetMonthlyStatsRequest {
            month: "2011-06".into(),
            state: String::new(),
        })
        .await
        .expect("stats")
        .into_inner();
    for j in JURISDICTIONS {
        let planned = plan.iter().filter(|p| p.jurisdiction == j).count() as u64;
        let searched = if j == TX_NOT_ACTIVATED { 0 } else { planned };
        let row = june
            .jurisdictions
            .iter()
            .find(|r| r.jurisdiction_id == j)
            .cloned()
            .unwrap_or_default();
        if (row.submissions, row.ident_searches) != (planned, searched) {
            problems.push(format!(
                "{j}: statistics count {} submissions / {} searches, expected {planned} / {searched}",
                row.submissions, row.ident_searches
            ));
        }
    }

    // The gateway's own log, at debug level, over all its lives: ids and counts only, never
    // a name, a date of birth, a place of birth or a FIN.
    let log = std::fs::read_to_string(&d.log).unwrap_or_default();
    assert!(
        log.contains("TX-CRASH-"),
        "the log should name TCNs (ids are fine)"
    );
    let b = plan[0].submission.biographics.clone().unwrap_or_default();
    for secret in [
        b.name.as_str(),
        b.date_of_birth.as_str(),
        b.place_of_birth.as_str(),
        &fin(OVERSTAY_FELON),
    ] {
        if log.contains(secret) {
            problems.push(format!("the gateway log contains {secret:?}"));
        }
    }

    let delivered: usize = deliveries.values().map(Vec::len).sum();
    println!(
        "crash test: {cycles} kill -9 cycles, {} bookings, {} receipts, {delivered} office deliveries \
         ({} redelivered after ack), lost = {lost}, duplicates = {duplicates}, {:.1} s",
        plan.len(),
        receipts.len(),
        redelivered.len(),
        elapsed.as_secs_f64()
    );
    assert!(
        problems.is_empty(),
        "{} problems:\n{}\n--- gateway log tail ---\n{}",
        problems.len(),
        problems.join("\n"),
        log_tail(&d.log)
    );
}

async fn office_log_at(r: &Running, d: &Dirs, office: &str) -> Vec<pb::FieldOfficeNotification> {
    let who = Principal::FieldOffice {
        office: office.into(),
    };
    let ch = channel(r, &d.pki, who).await.expect("connect");
    let mut s = FieldOfficeServiceClient::new(ch)
        .subscribe(pb::SubscribeRequest {
            after_cursor: Some(0),
            follow: false,
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut out = vec![];
    while let Some(n) = s.message().await.expect("message") {
        out.push(n);
    }
    out
}

async fn read_bureau_log(ch: Channel) -> Vec<pb::BureauResponse> {
    let mut s = SubmissionServiceClient::new(ch)
        .stream_responses(pb::StreamResponsesRequest {
            after_cursor: 0,
            follow: false,
        })
        .await
        .expect("stream")
        .into_inner();
    let mut out = vec![];
    while let Some(r) = s.message().await.expect("message") {
        out.push(r);
    }
    out
}
