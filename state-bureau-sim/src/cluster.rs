//! A local cluster in one command (`state-bureau-sim cluster up`): `nats-server` with
//! JetStream, N gateway replicas sharing its log (`--store tls://...`, mutual TLS with a
//! certificate only gateways hold), and M matcher shards with R replicas each
//! (`interop-matcher serve --shard i/M`), all on loopback, each its own process.
//! `state-bureau-sim run --target <the gateways, comma-separated>` drives it.
//!
//! The gateways and matchers are this same executable (`state-bureau-sim gateway ...` and
//! `state-bureau-sim matcher ...` run the `interop-gateway` and `interop-matcher` command
//! lines), so the cluster needs nothing built beside it. Each process logs to
//! `DIR/logs/NAME.log`.

use crate::bookings::WorldData;
use anyhow::Context;
use interop_gateway::auth::principal::Principal;
use interop_gateway_cli::pki;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to start.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Holds `world/`, `pki/`, `nats/` (JetStream's files) and `logs/`; a world and PKI
    /// already there are reused.
    pub dir: PathBuf,
    /// Gateway replicas.
    pub gateways: usize,
    /// Matcher shards (IDENT split by subject id modulo this).
    pub shards: u64,
    /// Processes per shard (the gateway tries them in turn).
    pub shard_replicas: usize,
    /// World to generate when `dir/world` is missing.
    pub seed: u64,
    pub identities: u64,
    /// First port: NATS gets it, gateways the next N, matchers the ones after (0: free ports).
    pub base_port: u16,
    /// How long a silent gateway's unfinished work waits before another replica takes it.
    pub stale_ms: u64,
    /// Log entries between two snapshots of a gateway's view, behind which the log is trimmed
    /// (`None`: the store's default).
    pub snapshot_entries: Option<u64>,
    /// Matcher threads per search.
    pub matcher_threads: usize,
    /// The program to run as gateways and matchers (default: this one; tests name the built
    /// `state-bureau-sim`).
    pub exe: Option<PathBuf>,
    /// The single-machine baseline instead: one gateway on the embedded store with its
    /// matcher in process (no nats-server, no matcher processes; `gateways`, `shards` and
    /// `shard_replicas` are ignored).
    pub embedded: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            dir: PathBuf::from("cluster"),
            gateways: 2,
            shards: 2,
            shard_replicas: 2,
            seed: 2011,
            identities: 5_000,
            base_port: 0,
            stale_ms: 10_000,
            snapshot_entries: None,
            matcher_threads: 1,
            exe: None,
            embedded: false,
        }
    }
}

/// One process of the cluster.
pub struct Proc {
    pub name: String,
    pub addr: String,
    child: Child,
    /// How it was started, to start it again.
    program: std::ffi::OsString,
    args: Vec<std::ffi::OsString>,
    log: PathBuf,
}

fn start(
    name: &str,
    addr: String,
    log: PathBuf,
    program: std::ffi::OsString,
    args: Vec<std::ffi::OsString>,
) -> anyhow::Result<Proc> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    let child = Command::new(&program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Proc {
        name: name.to_string(),
        addr,
        child,
        program,
        args,
        log,
    })
}

/// A running cluster; dropping it stops every process.
pub struct Cluster {
    pub procs: Vec<Proc>,
    /// The gateways' endpoints, comma-separated (what `run --target` takes).
    pub targets: String,
    pub nats_url: String,
    pub pki: PathBuf,
    pub world: PathBuf,
}

pub use interop_gateway::store::nats_server_binary;

/// `EXE ROLE serve --listen ADDR --pki PKI --world WORLD`, for a gateway or a matcher.
fn serve_command(exe: &Path, role: &str, addr: &str, pki: &Path, world: &Path) -> Command {
    let mut c = Command::new(exe);
    c.args([role, "serve", "--listen", addr])
        .arg("--pki")
        .arg(pki)
        .arg("--world")
        .arg(world);
    c
}

/// Waits until something listens on `addr`, or the process exits, or `within` passes.
fn wait_listening(p: &mut Proc, within: Duration, log: &Path) -> anyhow::Result<()> {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if std::net::TcpStream::connect(&p.addr).is_ok() {
            return Ok(());
        }
        if let Some(status) = p.child.try_wait()? {
            // Its last words, so the reason survives the log's directory.
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            anyhow::bail!(
                "{} exited ({status}) before listening on {}; see {}; it ended with:\n{}",
                p.name,
                p.addr,
                log.display(),
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!(
        "{} did not listen on {} within {:?}; see {}",
        p.name,
        p.addr,
        within,
        log.display()
    )
}

impl Cluster {
    /// Starts everything and returns once every process listens.
    pub fn up(o: &ClusterOptions) -> anyhow::Result<Cluster> {
        anyhow::ensure!(o.gateways >= 1, "--gateways must be at least 1");
        anyhow::ensure!(o.shards >= 1, "--shards must be at least 1");
        anyhow::ensure!(o.shard_replicas >= 1, "--shard-replicas must be at least 1");
        let nats = match o.embedded {
            true => PathBuf::new(),
            false => nats_server_binary().ok_or_else(|| {
                anyhow::anyhow!(
                    "nats-server not found: install it (Debian: apt-get install nats-server) or set INTEROP_NATS_SERVER"
                )
            })?,
        };
        let exe = match &o.exe {
            Some(e) => e.clone(),
            None => std::env::current_exe().context("finding this program")?,
        };
        let logs = o.dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let world = o.dir.join("world");
        if !world.join(interop_gateway::world::WORLD_FILE).exists() {
            eprintln!(
                "generating a world of {} identities in {}",
                o.identities,
                world.display()
            );
            crate::generate::generate(o.seed, o.identities, &world)?;
        }
        let data = WorldData::load(&world)?;
        let pki_dir = o.dir.join("pki");
        let pki = pki::init_or_keep(&pki_dir, &data.world)?;
        let mut next = o.base_port;
        let mut port = || -> anyhow::Result<u16> {
            if o.base_port == 0 {
                return crate::soak::free_port();
            }
            let p = next;
            next = next.checked_add(1).context("ports past 65535")?;
            Ok(p)
        };
        let nats_port = port()?;
        let gateway_count = if o.embedded { 1 } else { o.gateways };
        let gateway_ports: Vec<u16> = (0..gateway_count)
            .map(|_| port())
            .collect::<Result<_, _>>()?;
        let targets = gateway_ports
            .iter()
            .map(|p| format!("https://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            procs: Vec::new(),
            targets: targets.clone(),
            nats_url: format!("tls://127.0.0.1:{nats_port}"),
            pki: pki_dir.clone(),
            world: world.clone(),
        };
        let spawn = |name: &str, addr: String, cmd: &mut Command| -> anyhow::Result<Proc> {
            let log = logs.join(format!("{name}.log"));
            std::fs::File::create(&log)?;
            let program = cmd.get_program().to_os_string();
            let args = cmd.get_args().map(|a| a.to_os_string()).collect();
            start(name, addr, log, program, args)
        };

        if o.embedded {
            let port = gateway_ports[0];
            let data = o.dir.join("data");
            // A fresh store each time: the baseline starts as empty as the JetStream one.
            if data.exists() {
                std::fs::remove_dir_all(&data)?;
            }
            let addr = format!("127.0.0.1:{port}");
            let mut p = spawn(
                "gateway-0",
                addr.clone(),
                serve_command(&exe, "gateway", &addr, &pki.0, &world)
                    .args(["--store", "embedded", "--data"])
                    .arg(&data)
                    .arg("--no-metrics"),
            )?;
            let log = logs.join("gateway-0.log");
            wait_listening(&mut p, Duration::from_secs(120), &log)?;
            cluster.procs.push(p);
            cluster.nats_url.clear();
            return Ok(cluster);
        }
        let nats_dir = o.dir.join("nats");
        // A fresh log each time `up` starts (the world and PKI are kept).
        if nats_dir.exists() {
            std::fs::remove_dir_all(&nats_dir)?;
        }
        // Mutual TLS with the PKI's server certificate; only the gateways' store certificate
        // is admitted (a bureau's from the same CA is not).
        let nats_addr = format!("127.0.0.1:{nats_port}");
        let conf = o.dir.join("nats.conf");
        std::fs::write(&conf, pki::nats_server_config(&pki, &nats_addr, &nats_dir))?;
        let mut p = spawn(
            "nats",
            nats_addr.clone(),
            Command::new(&nats).arg("-c").arg(&conf),
        )?;
        wait_listening(&mut p, Duration::from_secs(20), &logs.join("nats.log"))?;
        cluster.procs.push(p);

        let mut shard_spec = Vec::new();
        let mut matchers = Vec::new();
        for shard in 0..o.shards {
            let mut replicas = Vec::new();
            for r in 0..o.shard_replicas {
                let port = port()?;
                let name = format!("matcher-{shard}-{r}");
                let addr = format!("127.0.0.1:{port}");
                // Each process its own directory and key; a shard's replicas share its name.
                let own = pki::issue_bundle(
                    &pki.ca_dir_beside(),
                    &Principal::Matcher {
                        name: format!("ident-{shard}"),
                    },
                    &[],
                    &o.dir.join(format!("pki-{name}")),
                )?;
                let p = spawn(
                    &name,
                    addr.clone(),
                    serve_command(&exe, "matcher", &addr, &own.0, &world)
                        .args(["--shard", &format!("{shard}/{}", o.shards)])
                        .args(["--threads", &o.matcher_threads.to_string()])
                        .args(["--gateway", &targets]),
                )?;
                replicas.push(format!("https://127.0.0.1:{port}"));
                matchers.push(p);
            }
            shard_spec.push(replicas.join("|"));
        }
        for mut p in matchers {
            let log = logs.join(format!("{}.log", p.name));
            wait_listening(&mut p, Duration::from_secs(120), &log)?;
            cluster.procs.push(p);
        }

        let mut store = format!(
            "{}&stale_ms={}",
            pki::nats_store_spec(&pki, &nats_addr, "INTEROP")?,
            o.stale_ms
        );
        if let Some(n) = o.snapshot_entries {
            store.push_str(&format!("&snapshot_entries={n}"));
        }
        let mut gateways = Vec::new();
        for (i, port) in gateway_ports.iter().enumerate() {
            let name = format!("gateway-{i}");
            let addr = format!("127.0.0.1:{port}");
            // Each replica its own identity (spiffe://interop.local/gateway/<i>) and key.
            let own = pki::issue_bundle(
                &pki.ca_dir_beside(),
                &Principal::Gateway {
                    name: i.to_string(),
                },
                &[],
                &o.dir.join(format!("pki-{name}")),
            )?;
            // Each replica's view of the log in a file of its own, as a deployment keeps it
            // (a restart after a kill resumes it); fresh with the fresh log.
            let data = o.dir.join(format!("data-{name}"));
            if data.exists() {
                std::fs::remove_dir_all(&data)?;
            }
            let p = spawn(
                &name,
                addr.clone(),
                serve_command(&exe, "gateway", &addr, &own.0, &world)
                    .args(["--store", &store, "--replica-id", &name])
                    .arg("--data")
                    .arg(&data)
                    .args(["--ident-shards", &shard_spec.join(",")])
                    .arg("--no-metrics"),
            )?;
            gateways.push(p);
        }
        for mut p in gateways {
            let log = logs.join(format!("{}.log", p.name));
            wait_listening(&mut p, Duration::from_secs(120), &log)?;
            cluster.procs.push(p);
        }
        Ok(cluster)
    }

    /// Kills one process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let p = self
            .procs
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| anyhow::anyhow!("no process {name:?} in the cluster"))?;
        p.child.kill()?;
        p.child.wait()?;
        Ok(())
    }

    /// CPU seconds (user + system) each running process has used so far, from /proc.
    pub fn cpu_seconds(&self) -> Vec<(String, f64)> {
        self.procs
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    process_cpu_seconds(p.child.id()).unwrap_or(0.0),
                )
            })
            .collect()
    }

    /// Starts a killed process again, as it was started (its log continues), and waits until
    /// it listens.
    pub fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self
            .procs
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| anyhow::anyhow!("no process {name:?} in the cluster"))?;
        let old = &mut self.procs[i];
        anyhow::ensure!(old.child.try_wait()?.is_some(), "{name} is still running");
        let mut p = start(
            &old.name,
            old.addr.clone(),
            old.log.clone(),
            old.program.clone(),
            old.args.clone(),
        )?;
        let log = p.log.clone();
        wait_listening(&mut p, Duration::from_secs(120), &log)?;
        self.procs[i] = p;
        Ok(())
    }

    /// Stops every process: SIGTERM, then SIGKILL for any still running after 5 s.
    pub fn down(&mut self) {
        for p in self.procs.iter().rev() {
            // Best effort: a process that already exited has nothing to stop.
            Command::new("kill")
                .args(["-TERM", &p.child.id().to_string()])
                .stderr(Stdio::null())
                .status()
                .ok();
        }
        let until = Instant::now() + Duration::from_secs(5);
        for p in self.procs.iter_mut().rev() {
            while Instant::now() < until && matches!(p.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            p.child.kill().ok();
            p.child.wait().ok();
        }
        self.procs.clear();
    }
}

/// utime + stime of a process from `/proc/PID/stat`, at the usual 100 ticks a second.
fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.down();
    }
}
