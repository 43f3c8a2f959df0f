//! The `interop` command line as its users run it: spawned processes against a gateway
//! served by this test over real mutual TLS, with bookings written as
//! `state-bureau-sim bookings` writes them. A bureau submits a JSON booking and sees its
//! receipt and responses; a refused booking prints every violation, exits 1 and changes
//! nothing; a field office's watcher is killed (`kill -9` while idle, SIGTERM while results
//! stream in) and restarted, and across its runs shows each outcome exactly once, matching
//! what the gateway holds for that office; an administrator reads the statistics and the
//! disclosure audit, revokes a certificate and reloads the gateway's.

use interop_gateway::auth::principal::Principal;
use interop_gateway::world::{self, WorldFile};
use interop_gateway_cli::pki::{self, PkiDir};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// The simulator's test gateway (a fresh world, PKI and gateway in this process), shared with
// its own tests rather than copied.
#[path = "../../../state-bureau-sim/tests/common/mod.rs"]
mod common;
use common::serve;

fn interop(dir: &Path, endpoint: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_interop"));
    c.env("INTEROP_TARGET", endpoint)
        .env("INTEROP_PKI", dir.join("pki"))
        .env_remove("INTEROP_AS")
        .current_dir(dir);
    c
}

fn run(mut c: Command) -> Output {
    let out = c.output().expect("interop runs");
    eprintln!(
        "--- {:?}\n{}{}",
        c.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A gateway served by this test over a fresh world in a temporary directory: the directory,
/// the gateway, its world, and the state and role (`bureau/XX`) of the bureau the test plays,
/// the most populous state's (it gets the most bookings).
async fn start() -> (tempfile::TempDir, common::Served, WorldFile, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path()).await;
    let w: WorldFile = world::read_json(&dir.path().join("world"), world::WORLD_FILE).unwrap();
    let mut pop = BTreeMap::<&str, u64>::new();
    for j in &w.jurisdictions {
        *pop.entry(j.state.as_str()).or_default() += j.population;
    }
    let state = pop
        .into_iter()
        .max_by_key(|(_, p)| *p)
        .map(|(s, _)| s.to_string())
        .expect("a state");
    let bureau = format!("bureau/{state}");
    (dir, s, w, state, bureau)
}

/// Writes `count` planned bookings of `state` as JSON lines, as `state-bureau-sim bookings
/// --world DIR --seed SEED --count COUNT --state STATE --run-tag TAG` does.
fn write_bookings(dir: &Path, state: &str, seed: u64, tag: &str, count: usize) -> Vec<String> {
    let file = dir.join(format!("{tag}.jsonl"));
    let tag = format!("{tag}-");
    state_bureau_sim::bookings::write_planned(
        &dir.join("world"),
        seed,
        count,
        Some(state),
        Some(&tag),
        &file,
    )
    .unwrap();
    std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn field<'a>(line: &'a serde_json::Value, name: &str) -> &'a str {
    line[name].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bureau_submits_a_json_booking_and_a_refused_one_lists_every_violation() {
    let (dir, s, w, state, bureau) = start().await;
    let d = dir.path();
    let lines = write_bookings(d, &state, 7, "ONE", 1);
    std::fs::write(d.join("booking.json"), &lines[0]).unwrap();
    let tcn = field(&serde_json::from_str(&lines[0]).unwrap(), "tcn").to_string();

    let mut c = interop(d, &s.endpoint);
    c.args(["--as", &bureau, "submit", "booking.json", "--wait"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("receipt RCPT-"), "{text}");
    assert!(text.contains(&tcn), "{text}");
    assert!(text.contains("criminal history:"), "{text}");

    // Again: the same receipt, marked as the original.
    let mut c = interop(d, &s.endpoint);
    c.args(["--as", &bureau, "submit", "booking.json", "--json"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0));
    let receipt: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(receipt["duplicate"], true);
    assert_eq!(field(&receipt, "tcn"), tcn);

    let mut c = interop(d, &s.endpoint);
    c.args(["--as", &bureau, "status", &tcn]);
    let out = run(c);
    assert!(String::from_utf8_lossy(&out.stdout).contains("completed"));

    // Three things wrong at once: every one is listed, the exit code is 1, nothing changed.
    let admin = pki::connect_client(&s.endpoint, &PkiDir(d.join("pki")), &Principal::Admin)
        .await
        .unwrap();
    let before = admin.counters().await.unwrap();
    let mut bad: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    bad["tcn"] = "BAD-TCN-0001".into();
    bad["ori"] = "xx".into();
    bad["fingers"][0]["position"] = 11.into();
    bad["biographics"]["name"] = "".into();
    std::fs::write(d.join("bad.json"), bad.to_string()).unwrap();
    let mut c = interop(d, &s.endpoint);
    c.args(["--as", &bureau, "submit", "bad.json"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("BAD-TCN-0001 refused: INVALID_ARGUMENT"),
        "{err}"
    );
    for f in ["ori:", "fingers[0].position:", "biographics.name:"] {
        assert!(err.contains(&format!("\n  {f}")), "{f} missing from: {err}");
    }
    assert_eq!(
        admin.counters().await.unwrap(),
        before,
        "a refusal changed the counters"
    );

    // A booking file that is not valid JSON for a booking: refused before sending.
    std::fs::write(d.join("typo.json"), lines[0].replace("\"ori\"", "\"orri\"")).unwrap();
    let mut c = interop(d, &s.endpoint);
    c.args(["--as", &bureau, "submit", "typo.json"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `orri`"));

    // Usage and reachability errors have their own codes.
    let mut c = interop(d, &s.endpoint);
    c.args(["submit", "booking.json"]);
    assert_eq!(run(c).status.code(), Some(2), "no --as");
    let mut c = interop(d, "https://127.0.0.1:1");
    c.args(["--as", &bureau, "--timeout", "1", "status", &tcn]);
    assert_eq!(run(c).status.code(), Some(3), "nothing listening");

    // Admin reads policy as text and JSON.
    let j = &w.jurisdictions[0].id;
    let mut c = interop(d, &s.endpoint);
    c.args(["admin", "policy", "get", j, "--json"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0));
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(field(&p, "jurisdiction_id"), j);
    // A bureau is not an admin.
    let mut c = interop(d, &s.endpoint);
    c.args(["--as", &bureau, "admin", "jurisdictions"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PERMISSION_DENIED"));

    // Admin takes an IDENT subject out of the gallery; a second time it is not there.
    let gallery =
        interop_matcher::gallery::read_gallery(&d.join("world").join(world::IDENT_GALLERY_FILE))
            .unwrap();
    let subject = gallery[0].0.to_string();
    let remove = || {
        let mut c = interop(d, &s.endpoint);
        c.args(["admin", "remove-subject", &subject]);
        run(c)
    };
    let out = remove();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let want = format!(
        "subject {subject} removed; {} left in the gallery that held it",
        gallery.len() - 1
    );
    assert_eq!(text.trim(), want);
    let out = remove();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NOT_FOUND") && err.contains("not enrolled"),
        "{err}"
    );

    let _ = s.stop.send(());
    s.task.await.unwrap().unwrap();
}

/// A running `interop watch --json` whose stdout lines are collected as they come.
struct Watcher {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Watcher {
    fn start(mut c: Command) -> Watcher {
        let mut child = c.stdout(Stdio::piped()).spawn().expect("watch starts");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(vec![]));
        let l = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                match line {
                    Ok(line) => l.lock().unwrap().push(line),
                    Err(_) => break,
                }
            }
        });
        Watcher {
            child,
            lines,
            reader,
        }
    }

    fn count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    async fn wait_for(&self, n: usize, what: &str) {
        for _ in 0..600 {
            if self.count() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what}: the watcher printed {} of {n} lines", self.count());
    }

    fn finish(mut self, signal: Option<&str>) -> (Option<i32>, Vec<String>) {
        if let Some(sig) = signal {
            let ok = Command::new("kill")
                .args([sig, &self.child.id().to_string()])
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let status = self.child.wait().unwrap();
        self.reader.join().unwrap();
        let lines = self.lines.lock().unwrap().clone();
        (status.code(), lines)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_watcher_shows_each_outcome_exactly_once() {
    let (dir, s, _, state, bureau) = start().await;
    let d = dir.path();
    let pki = PkiDir(d.join("pki"));
    // Watch the office with the most identifications among batch A's bookings, with enough of
    // them (at least 5) to kill the watcher part-way, and enough in batch B (at least 3) that
    // run 2 stops part-way through them and run 3 has the rest: the counts grow until the
    // world's identification rate gives them, so the test does not rest on one seed's luck.
    let world = state_bureau_sim::bookings::WorldData::load(&d.join("world")).unwrap();
    let identified = |seed: u64, tag: &str, count: usize| {
        let plan =
            state_bureau_sim::bookings::planned(&world, seed, count, Some(&state), Some(tag))
                .unwrap();
        let mut per_office = BTreeMap::<String, usize>::new();
        for b in plan.iter().filter(|b| b.expected.identified()) {
            *per_office
                .entry(b.expected.field_office.clone())
                .or_default() += 1;
        }
        per_office
    };
    let enough = |seed: u64, tag: &str, least: usize, office: Option<&str>| {
        (50..=800)
            .step_by(50)
            .find_map(|count| {
                let per_office = identified(seed, tag, count);
                let (o, n) = match office {
                    Some(o) => (o.to_string(), per_office.get(o).copied().unwrap_or(0)),
                    None => per_office.into_iter().max_by_key(|(_, n)| *n)?,
                };
                (n >= least).then_some((o, count))
            })
            .unwrap_or_else(|| panic!("fewer than {least} identifications in 800 bookings"))
    };
    let (office, count_a) = enough(1, "A-", 5, None);
    let (_, count_b) = enough(2, "B-", 3, Some(&office));
    let a = write_bookings(d, &state, 1, "A", count_a);
    let b = write_bookings(d, &state, 2, "B", count_b);
    let watch = |extra: &[&str]| {
        let mut c = interop(d, &s.endpoint);
        c.args(["--as", &format!("field-office/{office}"), "watch", "--json"])
            .args(["--state-file", "office.cursor"])
            .args(extra);
        c
    };
    let office_client = pki::connect_client(
        &s.endpoint,
        &pki,
        &Principal::FieldOffice {
            office: office.clone(),
        },
    )
    .await
    .unwrap();
    // What the gateway holds for the office: the oracle the watcher's output must equal.
    let held = || async {
        let mut all = office_client.subscription(Some(0), false);
        let mut tcns = vec![];
        while let Some(n) = all.next().await.unwrap() {
            tcns.push(n.outcome.unwrap_or_default().tcn);
        }
        tcns
    };
    let bureau_client = pki::connect_client(
        &s.endpoint,
        &pki,
        &Principal::Bureau {
            state: state.clone(),
        },
    )
    .await
    .unwrap();
    let all_done = |lines: Vec<String>| {
        let c = bureau_client.clone();
        async move {
            for l in lines {
                let v: serde_json::Value = serde_json::from_str(&l).unwrap();
                let tcn = field(&v, "tcn").to_string();
                for _ in 0..600 {
                    let st = c.status(&tcn).await.unwrap();
                    if st.stage() == interop_proto::v1::Stage::Completed {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    };
    let submit = |file: &str| {
        let mut c = interop(d, &s.endpoint);
        c.args(["--as", &bureau, "submit", "--stream", file, "--window", "8"]);
        c
    };

    // Run 1: watch while batch A goes in; once it has shown all of A, kill -9 it (idle).
    let w1 = Watcher::start(watch(&[]));
    assert_eq!(run(submit("A.jsonl")).status.code(), Some(0));
    all_done(a.clone()).await;
    let after_a = held().await.len();
    assert!(
        after_a >= 5,
        "too few outcomes for {office} to test with: {after_a}"
    );
    w1.wait_for(after_a, "run 1").await;
    let (_, run1) = w1.finish(Some("-KILL"));

    // Run 2: restart on the state file; batch B streams in; SIGTERM it part-way.
    let w2 = Watcher::start(watch(&[]));
    let sub = submit("B.jsonl").spawn().unwrap();
    w2.wait_for(1, "run 2").await;
    let (code2, run2) = w2.finish(Some("-TERM"));
    assert_eq!(code2, Some(0), "SIGTERM is a clean stop");
    assert_eq!(sub.wait_with_output().unwrap().status.code(), Some(0));
    all_done(b.clone()).await;

    // Run 3: the rest, acknowledging as it goes, then stop at the end of what is stored.
    let (code3, run3) = Watcher::start(watch(&["--once", "--ack"])).finish(None);
    assert_eq!(code3, Some(0));

    let mut seen = BTreeMap::<String, usize>::new();
    let mut last_cursor = 0;
    for l in run1.iter().chain(&run2).chain(&run3) {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let cursor = v["cursor"].as_u64().unwrap();
        assert!(cursor > last_cursor, "cursor went backwards at {l}");
        last_cursor = cursor;
        *seen.entry(field(&v, "tcn").to_string()).or_default() += 1;
    }
    let held = held().await;
    let mut expected = BTreeMap::<String, usize>::new();
    for t in &held {
        *expected.entry(t.clone()).or_default() += 1;
    }
    assert_eq!(
        seen,
        expected,
        "runs printed {} + {} + {} lines; the gateway holds {}",
        run1.len(),
        run2.len(),
        run3.len(),
        held.len()
    );
    assert!(held.len() > after_a, "batch B reached the office");
    let state_file = std::fs::read_to_string(d.join("office.cursor")).unwrap();
    assert_eq!(
        state_file.trim(),
        format!("field-office/{office} {last_cursor}")
    );
    assert_eq!(
        office_client.ack(0).await.unwrap(),
        last_cursor,
        "--ack acknowledged all"
    );

    let _ = s.stop.send(());
    s.task.await.unwrap().unwrap();
}

/// Everything `interop-gateway admin` did, done with `interop admin`: the monthly statistics
/// in its three forms, the disclosure audit as CSV, revoking a certificate (refused from its
/// next call on, listed), and reloading the gateway's certificates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_reads_the_statistics_and_the_audit_and_revokes_and_reloads() {
    let (dir, s, w, state, bureau) = start().await;
    let d = dir.path();
    let pki = PkiDir(d.join("pki"));
    let lines = write_bookings(d, &state, 3, "ADM", 1);
    std::fs::write(d.join("booking.json"), &lines[0]).unwrap();
    let booking: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let tcn = field(&booking, "tcn").to_string();
    let jurisdiction = field(&booking, "jurisdiction_id").to_string();
    let month = field(&booking, "booked_at")[..7].to_string();
    let mut c = interop(d, &s.endpoint);
    c.args(["--as", &bureau, "submit", "booking.json", "--wait"]);
    assert_eq!(run(c).status.code(), Some(0));
    let admin = |args: &[&str]| {
        let mut c = interop(d, &s.endpoint);
        c.arg("admin").args(args);
        let out = run(c);
        assert_eq!(out.status.code(), Some(0), "admin {args:?}");
        String::from_utf8(out.stdout).unwrap()
    };

    // The month's statistics count the one booking, in every form.
    let csv = admin(&[
        "stats", "--month", &month, "--state", &state, "--format", "csv",
    ]);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "month,kind,state,jurisdiction_id,submissions,ident_searches,matches,level1,level2,\
         level3,non_criminal,recommended,detainers,no_action,discretion,lesc_notices,lifted,\
         removals,removed_level1,removed_level2,removed_level3,removed_non_criminal_priority,\
         removed_outside_priorities"
    );
    let row = |prefix: String| {
        let r = rows.iter().find(|r| r.starts_with(&prefix));
        r.unwrap_or_else(|| panic!("no row {prefix} in {csv}"))
            .to_string()
    };
    for prefix in [
        format!("{month},jurisdiction,{state},{jurisdiction},1,"),
        format!("{month},state,{state},,1,"),
        format!("{month},national,,,1,"),
    ] {
        row(prefix);
    }
    let table = admin(&["stats", "--month", &month]);
    assert!(
        table.starts_with(&format!(
            "interoperability statistics, bookings of {month}\n"
        )),
        "{table}"
    );
    assert!(table.lines().any(|l| l.starts_with("national")), "{table}");
    let doc: serde_json::Value =
        serde_json::from_str(&admin(&["stats", "--month", &month, "--json"])).unwrap();
    assert_eq!(doc["month"], month.as_str());
    let national = doc["rows"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (national["kind"].clone(), national["submissions"].clone()),
        ("national".into(), 1.into())
    );

    // The profiling review of a fiscal quarter (FY2011Q3 is April-June 2011), and the
    // complaints (none yet); a calendar quarter is refused, saying what is expected.
    let review = admin(&["review", "--quarter", "FY2011Q3"]);
    assert!(
        review.starts_with("profiling review 2011-04..2011-06: "),
        "{review}"
    );
    // The closed quarters are assessed soon after the booking completes (log time is its
    // date); the booking's own quarter is not, and says when it will be.
    use interop_gateway::rules::assessment;
    let booked_on =
        chrono::NaiveDate::parse_from_str(&field(&booking, "booked_at")[..10], "%Y-%m-%d").unwrap();
    let mut listed = String::new();
    for _ in 0..100 {
        listed = admin(&["assessment"]);
        if !listed.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let through = format!("data through {booked_on}");
    assert!(
        listed.starts_with("FY2011Q3 revision 1") && listed.lines().all(|l| l.contains(&through)),
        "{listed}"
    );
    let open = assessment::quarter_of(booked_on);
    let mut c = interop(d, &s.endpoint);
    c.args([
        "admin",
        "assessment",
        &assessment::name(open),
        "--html",
        "/nonexistent/x.html",
    ]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let due = assessment::due_on(open).to_string();
    assert!(err.contains("NOT_FOUND") && err.contains(&due), "{err}");
    let mut c = interop(d, &s.endpoint);
    c.args(["admin", "review", "--quarter", "2011Q3"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("FYyyyyQn"),
        "{err}"
    );
    assert_eq!(admin(&["complaints"]), "");

    // The audit names the bureau, by its SPIFFE id and certificate serial, as a recipient of
    // its booking's results.
    let audit = admin(&["disclosures", "--tcn", &tcn]);
    assert!(
        audit.starts_with(
            "seq,disclosed_at,recipient,certificate_serial,rpc,state,tcn,kind,cursor\n"
        ),
        "{audit}"
    );
    let serial_of = |st: &str| {
        pki::serial_of_pem_file(&pki.client(&Principal::Bureau { state: st.into() }).cert).unwrap()
    };
    let own = format!(
        "spiffe://interop.local/bureau/{state},{}",
        serial_of(&state)
    );
    assert!(
        audit
            .lines()
            .skip(1)
            .any(|l| l.contains(&own) && l.contains(&tcn)),
        "{own} missing from: {audit}"
    );

    // Revoking another state's bureau: listed, and refused from its next call on, while this
    // bureau carries on. Only an admin may revoke.
    let other = w
        .states
        .iter()
        .map(|st| st.code.clone())
        .find(|st| {
            *st != state
                && pki
                    .client(&Principal::Bureau { state: st.clone() })
                    .cert
                    .exists()
        })
        .expect("another bureau");
    let serial = serial_of(&other);
    let mut c = interop(d, &s.endpoint);
    c.args(["--as", &bureau, "admin", "revoke", "--serial", &serial]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PERMISSION_DENIED"));
    let out = admin(&["revoke", "--serial", &serial, "--reason", "lost laptop"]);
    assert!(out.contains(&serial), "{out}");
    let out = admin(&["revoked"]);
    assert!(
        out.contains(&serial) && out.contains("lost laptop"),
        "{out}"
    );
    let mut c = interop(d, &s.endpoint);
    c.args(["--as", &format!("bureau/{other}"), "status", &tcn]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("UNAUTHENTICATED") && err.contains("revoked"),
        "{err}"
    );
    let mut c = interop(d, &s.endpoint);
    c.args(["--as", &bureau, "status", &tcn]);
    assert_eq!(run(c).status.code(), Some(0));

    // Reloading: the gateway re-reads its files and says what it presents and trusts.
    let out = admin(&["reload"]);
    let server = pki::serial_of_pem_file(&pki.server().cert).unwrap();
    assert!(
        out.contains(&server) && out.contains("1 client CA"),
        "{out}"
    );

    let _ = s.stop.send(());
    s.task.await.unwrap().unwrap();
}
