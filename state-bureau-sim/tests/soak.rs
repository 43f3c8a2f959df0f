//! `state-bureau-sim soak` as a user runs it: the real program starts its own gateway as a
//! child process on a fresh directory, drives two short verified windows at a given rate, and
//! reports each window's latency, the gateway's memory, descriptors and data directory, in
//! JSON and HTML.

use std::process::Command;

#[test]
fn a_short_soak_verifies_each_window_and_reports_the_gateways_figures() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("soak.json");
    let html = dir.path().join("soak.html");
    let out = Command::new(env!("CARGO_BIN_EXE_state-bureau-sim"))
        .arg("soak")
        .arg("--dir")
        .arg(dir.path().join("soak"))
        .args(["--identities", "1200", "--rate", "20"])
        // Two windows of 6 s of arrivals each: 18 s in all, so that the second starts even
        // when the first, with its settling and verification, takes half as long again.
        .args(["--hours", "0.005", "--window-mins", "0.1"])
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "soak failed:\n{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let windows = report["windows"].as_array().unwrap();
    assert!(windows.len() >= 2, "{report}");
    for w in windows {
        assert_eq!(w["passed"], true, "{w}");
        assert!(w["notification_p99_ms"].as_f64().unwrap() > 0.0, "{w}");
        for figure in [
            "rss_bytes",
            "open_fds",
            "data_bytes",
            "store_ops_per_booking",
        ] {
            assert!(w[figure].as_f64().unwrap() > 0.0, "{figure}: {w}");
        }
    }
    assert!(
        report["notification_p99_ratio"].as_f64().is_some(),
        "{report}"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg") && page.contains("PASS"));
    // The gateway's own log, as JSON lines, beside the reports.
    let log = std::fs::read_to_string(dir.path().join("soak/gateway.log")).unwrap();
    assert!(log.lines().all(|l| l.starts_with('{')), "{log}");
}
