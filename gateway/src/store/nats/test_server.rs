//! A real `nats-server` for tests (the `test-util` feature): found on the machine, or the
//! test says loudly that it is skipped (with `INTEROP_REQUIRE_NATS` set, as CI sets it, a
//! missing binary fails instead), started on a free loopback port, killed when dropped.

use super::nats_server_binary;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// For tests that need a real server: its binary, or `None` after saying loudly that `test`
/// is skipped. With `INTEROP_REQUIRE_NATS` set (CI sets it) a missing binary fails instead.
pub fn nats_server_for_test(test: &str) -> Option<PathBuf> {
    let bin = nats_server_binary();
    if bin.is_none() {
        if std::env::var("INTEROP_REQUIRE_NATS").is_ok() {
            panic!("{test}: nats-server not found and INTEROP_REQUIRE_NATS is set");
        }
        eprintln!(
            "\n*** SKIPPED {test}: nats-server not found (apt-get install nats-server, or set INTEROP_NATS_SERVER) ***\n"
        );
    }
    bin
}

/// A `nats-server -js` of the test's own, on a free loopback port; killed when dropped.
pub struct NatsServer {
    child: std::process::Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Starts a server, or says loudly why not: with `INTEROP_REQUIRE_NATS=1` (CI sets it) a
/// missing binary fails the test instead of skipping it.
pub fn start_server(test: &str) -> Option<NatsServer> {
    start_server_with(test, |_, _| None)
}

/// Like [`start_server`], with a configuration file from `config(port, store_dir)`.
pub fn start_server_with(
    test: &str,
    config: impl FnOnce(u16, &Path) -> Option<String>,
) -> Option<NatsServer> {
    let bin = nats_server_for_test(test)?;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = std::process::Command::new(bin);
    match config(port, &dir.path().join("js")) {
        Some(conf) => {
            let file = dir.path().join("nats.conf");
            std::fs::write(&file, conf).unwrap();
            cmd.arg("-c").arg(file);
        }
        None => {
            cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
                .arg(dir.path());
        }
    }
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nats-server starts");
    let server = NatsServer {
        child,
        url: format!("nats://127.0.0.1:{port}"),
        _dir: dir,
    };
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(server);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{test}: nats-server did not listen on {port}");
}
