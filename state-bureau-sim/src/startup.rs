//! `state-bureau-sim startup`: how long a gateway takes to come up on a world, and how much
//! memory it holds once it serves, per enrolled identity.
//!
//! Each start is this program's `gateway serve` (the real command line) as a child process, on
//! a fresh data directory, timed from spawn to its first answered admin call. The first start
//! finds no index snapshot (any left in the world directory are removed first), so it builds
//! both galleries from their files and saves snapshots: that is the baseline. The starts after
//! it read the snapshots. Which it did is read from each start's own log, not assumed. Memory
//! is the child's resident set (`VmRSS`) when it first answers, and its peak (`VmHWM`), over
//! the identities enrolled in both galleries.

use anyhow::Context;
use interop_gateway::auth::principal::Principal;
use interop_gateway::world::{FBI_GALLERY_FILE, IDENT_GALLERY_FILE, WorldFile, read_json};
use interop_gateway_cli::pki;
use interop_matcher::gallery::GalleryReader;
use interop_proto::v1 as pb;
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What `startup` is asked to do.
#[derive(Clone, Debug)]
pub struct StartupOptions {
    /// The world the gateway serves (from `generate`).
    pub world: PathBuf,
    /// Holds the PKI, each start's data directory and log (kept afterwards).
    pub dir: PathBuf,
    /// How many starts, the first building the indexes.
    pub starts: usize,
}

/// One start of the gateway.
#[derive(Clone, Debug, Serialize)]
pub struct Start {
    /// `built` (both galleries built from their files), `snapshot` (both read from their
    /// snapshots), or `mixed`.
    pub galleries: String,
    pub ready_s: f64,
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
    pub rss_per_identity: f64,
    pub peak_per_identity: f64,
}

/// Every start, and the snapshot's start against the build's.
#[derive(Clone, Debug, Serialize)]
pub struct Startup {
    pub fbi_gallery: u64,
    pub ident_gallery: u64,
    pub snapshot_bytes: u64,
    pub starts: Vec<Start>,
    /// The first start's time over the median of the later ones.
    pub speedup: Option<f64>,
}

impl fmt::Display for Startup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "gateway start-up: FBI gallery {}, IDENT gallery {} ({} enrolled); snapshots {:.1} MiB",
            self.fbi_gallery,
            self.ident_gallery,
            self.fbi_gallery + self.ident_gallery,
            self.snapshot_bytes as f64 / (1 << 20) as f64
        )?;
        writeln!(
            f,
            "  {:>5} {:<9} {:>9} {:>10} {:>10} {:>12} {:>12}",
            "start", "galleries", "ready s", "RSS MiB", "peak MiB", "RSS B/id", "peak B/id"
        )?;
        for (i, s) in self.starts.iter().enumerate() {
            writeln!(
                f,
                "  {:>5} {:<9} {:>9.1} {:>10.0} {:>10.0} {:>12.0} {:>12.0}",
                i + 1,
                s.galleries,
                s.ready_s,
                s.rss_bytes as f64 / (1 << 20) as f64,
                s.peak_rss_bytes as f64 / (1 << 20) as f64,
                s.rss_per_identity,
                s.peak_per_identity
            )?;
        }
        if let Some(x) = self.speedup {
            writeln!(
                f,
                "  first start over the median of the later ones: {x:.1}x"
            )?;
        }
        Ok(())
    }
}

/// The gateway as a child process: this program's `gateway serve` on loopback, serving a world
/// from a data directory, logging JSON to a file.
pub(crate) struct Child {
    process: tokio::process::Child,
    pub pid: u32,
    pub endpoint: String,
}

impl Child {
    /// Starts it and waits (up to 10 minutes) for its first answered admin call.
    pub async fn spawn(
        world: &Path,
        pki: &pki::PkiDir,
        data: &Path,
        log: &Path,
    ) -> anyhow::Result<Child> {
        let port = crate::soak::free_port()?;
        let began = Instant::now();
        let mut process = tokio::process::Command::new(std::env::current_exe()?)
            .args(["gateway", "--log-format", "json", "serve"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--pki")
            .arg(&pki.0)
            .arg("--world")
            .arg(world)
            .arg("--data")
            .arg(data)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .kill_on_drop(true)
            .spawn()
            .context("starting the gateway")?;
        let pid = process.id().context("the gateway's pid")?;
        let endpoint = format!("https://127.0.0.1:{port}");
        loop {
            if let Ok(ch) = pki::connect(&endpoint, pki, &Principal::Admin).await
                && pb::admin_service_client::AdminServiceClient::new(ch)
                    .get_counters(pb::GetCountersRequest {})
                    .await
                    .is_ok()
            {
                break;
            }
            if let Some(status) = process.try_wait()? {
                anyhow::bail!("the gateway exited ({status}); see {}", log.display());
            }
            anyhow::ensure!(
                began.elapsed() < Duration::from_secs(600),
                "the gateway did not come up within 10 minutes (see {})",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Child {
            process,
            pid,
            endpoint,
        })
    }

    /// CPU time the process has used so far (user and system), from `/proc/PID/stat`.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        cpu_of(&format!("/proc/{}/stat", self.pid))
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.process.start_kill()?;
        self.process.wait().await?;
        Ok(())
    }
}

/// User and system CPU time from a `/proc/.../stat` file (fields 14 and 15, in clock ticks of
/// 1/100 s: Linux's `USER_HZ` on every architecture it supports).
pub(crate) fn cpu_of(stat: &str) -> anyhow::Result<Duration> {
    let text = std::fs::read_to_string(stat).with_context(|| stat.to_string())?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("a stat line without a command name")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .context("a short stat line")?
            .parse()
            .with_context(|| format!("{stat}: field {}", i + 3))
    };
    // After the name, field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
    Ok(Duration::from_millis(10 * (ticks(11)? + ticks(12)?)))
}

/// Index snapshots in a world directory (`*.index`).
fn snapshots(world: &Path) -> anyhow::Result<Vec<PathBuf>> {
    Ok(std::fs::read_dir(world)
        .with_context(|| world.display().to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "index"))
        .collect())
}

/// A `/proc/PID/status` figure in bytes (`VmRSS`, `VmHWM`).
fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub async fn startup(o: StartupOptions) -> anyhow::Result<Startup> {
    anyhow::ensure!(
        o.starts >= 2,
        "--starts must be at least 2 (a build, then a snapshot)"
    );
    let count = |file: &str| -> anyhow::Result<u64> {
        Ok(GalleryReader::open(&o.world.join(file))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .count())
    };
    let (fbi, ident) = (count(FBI_GALLERY_FILE)?, count(IDENT_GALLERY_FILE)?);
    let identities = (fbi + ident).max(1) as f64;
    for old in snapshots(&o.world)? {
        std::fs::remove_file(&old).with_context(|| old.display().to_string())?;
    }
    std::fs::create_dir_all(&o.dir)?;
    let world: WorldFile = read_json(&o.world, interop_gateway::world::WORLD_FILE)?;
    let pki = pki::init_or_keep(&o.dir.join("pki"), &world)?;
    let mut starts = Vec::new();
    for n in 1..=o.starts {
        let data = o.dir.join(format!("data-{n}"));
        if data.exists() {
            std::fs::remove_dir_all(&data)?;
        }
        let log_path = o.dir.join(format!("gateway-{n}.log"));
        let began = Instant::now();
        let child = Child::spawn(&o.world, &pki, &data, &log_path).await?;
        let ready_s = began.elapsed().as_secs_f64();
        let rss = proc_status(child.pid, "VmRSS:").unwrap_or(0);
        let peak = proc_status(child.pid, "VmHWM:").unwrap_or(0);
        child.stop().await?;
        let log = std::fs::read_to_string(&log_path)?;
        let loaded = log
            .matches("gallery loaded from its index snapshot")
            .count();
        let built = log.matches("gallery built").count();
        let galleries = match (built, loaded) {
            (2, 0) => "built",
            (0, 2) => "snapshot",
            _ => "mixed",
        };
        let start = Start {
            galleries: galleries.into(),
            ready_s,
            rss_bytes: rss,
            peak_rss_bytes: peak,
            rss_per_identity: rss as f64 / identities,
            peak_per_identity: peak as f64 / identities,
        };
        eprintln!(
            "startup: start {n}: {galleries}, ready in {ready_s:.1} s, RSS {:.0} MiB",
            rss as f64 / (1 << 20) as f64
        );
        starts.push(start);
    }
    let mut later: Vec<f64> = starts[1..].iter().map(|s| s.ready_s).collect();
    later.sort_by(f64::total_cmp);
    let median = later[later.len() / 2];
    let snapshot_bytes = snapshots(&o.world)?
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    Ok(Startup {
        fbi_gallery: fbi,
        ident_gallery: ident,
        snapshot_bytes,
        speedup: (median > 0.0).then(|| starts[0].ready_s / median),
        starts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_from_proc_and_snapshots_are_found_by_name() {
        let me = std::process::id();
        let rss = proc_status(me, "VmRSS:").expect("VmRSS");
        let peak = proc_status(me, "VmHWM:").expect("VmHWM");
        assert!(rss > 1 << 20 && peak >= rss, "{rss} {peak}");
        assert_eq!(proc_status(me, "NoSuchField:"), None);
        let dir = tempfile::tempdir().unwrap();
        for f in ["a.index", "a.bin", "b.shard-0-of-2.index", "index"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let mut found: Vec<String> = snapshots(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        found.sort();
        assert_eq!(found, ["a.index", "b.shard-0-of-2.index"]);
    }

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces() {
        let dir = tempfile::tempdir().unwrap();
        let stat = dir.path().join("stat");
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime ...
        std::fs::write(
            &stat,
            "42 (a b) c) S 1 42 42 0 -1 4194304 10 0 0 0 250 75 0 0 20 0 3\n",
        )
        .unwrap();
        assert_eq!(
            cpu_of(stat.to_str().unwrap()).unwrap(),
            Duration::from_millis(3_250)
        );
        std::fs::write(&stat, "42 (x) S 1\n").unwrap();
        assert!(cpu_of(stat.to_str().unwrap()).is_err());
        assert!(cpu_of("/proc/self/stat").is_ok());
    }

    #[tokio::test]
    async fn fewer_than_two_starts_is_refused() {
        let e = startup(StartupOptions {
            world: "nowhere".into(),
            dir: "nowhere".into(),
            starts: 1,
        })
        .await
        .unwrap_err();
        assert!(e.to_string().contains("at least 2"), "{e}");
    }
}
