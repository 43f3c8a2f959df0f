//! Logs fit for long runs (issue 29), from the real gateway program: with
//! `--log-format json` every line is one JSON object; written to a file, no line carries a
//! terminal colour code; and at the default level nothing is logged per submission (a
//! gateway that logged each booking would write millions of lines a day), while the
//! submissions themselves are counted.

use interop_e2e::program::{self, Dirs, log_tail};
use interop_e2e::*;
use interop_gateway::auth::principal::Principal;
use interop_gateway_cli::pki;
use interop_proto::v1 as pb;
use pb::submission_service_client::SubmissionServiceClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_logs_json_without_colour_and_nothing_per_submission() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Dirs::new(dir.path());
    let bin = env!("CARGO_BIN_EXE_interop-gateway-under-test");
    let running = program::start(bin, &d, &["--log-format", "json"], "info").await;
    let who = Principal::Bureau { state: "TX".into() };
    let ch = pki::connect(&running.endpoint, &d.pki, &who).await.unwrap();
    let mut bureau = SubmissionServiceClient::new(ch);
    let tcns: Vec<String> = (0..20).map(|i| format!("TX-LOGS-{i:06}")).collect();
    for tcn in &tcns {
        bureau
            .submit(booking(tcn, TX_RECEIVING, OVERSTAY_FELON))
            .await
            .unwrap();
    }
    drop(running);

    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(log.lines().count() > 0, "the gateway logged nothing");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{}",
        log_tail(&d.log)
    );
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    let per_submission = log
        .lines()
        .filter(|l| tcns.iter().any(|t| l.contains(t)))
        .count();
    assert_eq!(
        per_submission, 0,
        "lines naming a submission at INFO:\n{log}"
    );
}
