//! A JetStream replica's start-up against the length of the log it follows (DESIGN.md §3.9:
//! cost follows new work, not stored history): its view rebuilt from the log's start (in
//! memory, as a replica without a data directory does) beside its view resumed from its file
//! (`--data`), after the log gained the same few new entries.
//!
//! ```sh
//! cargo run --release -p interop-gateway --example view_resume -- --json target/view-resume.json
//! cargo run --release -p interop-gateway --example view_resume -- --sizes 2000,20000,200000
//! ```
//!
//! For each size N, a fresh `nats-server -js` (its files under `--dir`) and a log of N
//! submissions, each accepted and completed (entries of one or more writes, 32 writers at
//! once). A replica with a data directory connects (building its view file from the log:
//! timed, to compare a file's cost with memory's), stops, the
//! log gains `--new` more submissions from another replica, and then, `--trials` times each,
//! in turn: a replica without a data directory connects (rebuilds), and the replica with one
//! connects again (resumes; each time the log has gained the new submissions once more). Each
//! connect is timed until the view has caught up with the log and the replica is ready.
//!
//! Then the log is trimmed: the replica with a data directory stores a snapshot of its view
//! and trims the log behind it (timed; the snapshot's size and the stream's bytes before and
//! after are reported), and a new replica with an empty data directory connects, loading the
//! snapshot and following the log from there (timed, beside the rebuild it replaces). Every
//! submission here completes, so the bureau's work consumer is made with nothing to take (as
//! a gateway that finished the work would leave it): the trim then goes to the snapshot.
//!
//! Last, receipt retention: the older half of the submissions are forgotten (in the
//! retention pass's steps of `COMPACT_LIMIT`, through the log; timed), and the snapshot is
//! made again: its size beside the one holding every receipt.
//!
//! Needs `nats-server` (on PATH, in /usr/sbin, or `INTEROP_NATS_SERVER`).

use clap::Parser;
use interop_gateway::store::{
    Completion, NatsOptions, NatsStore, Store, SubmissionKey, nats_server_binary,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Log sizes, in submissions (each is two entries); ratios are to the first.
    #[arg(long, value_delimiter = ',', default_values_t = [2_000u64, 20_000, 100_000])]
    sizes: Vec<u64>,
    /// Submissions the log gains between the view's stop and each resume.
    #[arg(long, default_value_t = 200)]
    new: u64,
    /// Connects timed of each kind, per size (the median is reported).
    #[arg(long, default_value_t = 3)]
    trials: usize,
    /// Where each size's nats-server keeps its files and the replica its view.
    #[arg(long, default_value = "target/view-resume")]
    dir: PathBuf,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A `nats-server -js` on a free loopback port; killed when dropped.
struct Server {
    child: std::process::Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(dir: &Path) -> anyhow::Result<Server> {
    let bin = nats_server_binary()
        .ok_or_else(|| anyhow::anyhow!("no nats-server (PATH, /usr/sbin, INTEROP_NATS_SERVER)"))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = std::process::Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let server = Server {
        child,
        url: format!("nats://127.0.0.1:{port}"),
    };
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(server);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    anyhow::bail!("nats-server did not listen on {port}")
}

async fn replica(url: &str, name: &str, view: Option<&Path>) -> anyhow::Result<NatsStore> {
    let mut o = NatsOptions::parse(&format!("{url}/LOG?insecure=true&replica={name}"))?;
    o.view_dir = view.map(Path::to_path_buf);
    NatsStore::connect(o).await
}

/// Accepts and completes submissions `from..to`, 32 at a time.
async fn fill(store: Arc<NatsStore>, from: u64, to: u64) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..32u64 {
        let store = store.clone();
        tasks.spawn(async move {
            let mut i = from + lane;
            while i < to {
                let key = SubmissionKey {
                    bureau: "TX".into(),
                    tcn: format!("T{i:09}"),
                };
                store.accept(key.clone(), vec![7; 64], i as i64).await?;
                store.complete(key, Completion::default()).await?;
                i += 32;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

/// Seconds until a replica has connected (its view caught up with the log), and the replica.
async fn timed(url: &str, name: &str, view: Option<&Path>) -> anyhow::Result<(f64, NatsStore)> {
    let t = Instant::now();
    let r = replica(url, name, view).await?;
    Ok((t.elapsed().as_secs_f64(), r))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        !args.sizes.is_empty() && args.trials > 0,
        "--sizes and --trials"
    );
    println!(
        "{:>10} {:>10} {:>12} {:>12} {:>12} {:>15}",
        "log subs", "entries", "file build s", "rebuild s", "resume s", "rebuild/resume"
    );
    let mut rows = Vec::new();
    let mut trims = Vec::new();
    for &n in &args.sizes {
        let dir = args.dir.join(format!("n{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let server = start_server(&dir.join("js"))?;
        let writer = Arc::new(replica(&server.url, "writer", None).await?);
        fill(writer.clone(), 0, n).await?;
        let view_dir = dir.join("data");
        // The file's first build, from the log's start: what a file costs beside memory.
        let (built, r) = timed(&server.url, "resumer", Some(&view_dir)).await?;
        drop(r);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (mut rebuild, mut resume) = (Vec::new(), Vec::new());
        let mut next = n;
        for _ in 0..args.trials {
            fill(writer.clone(), next, next + args.new).await?;
            next += args.new;
            let (s, r) = timed(&server.url, "rebuilder", None).await?;
            rebuild.push(s);
            drop(r);
            let (s, r) = timed(&server.url, "resumer", Some(&view_dir)).await?;
            resume.push(s);
            drop(r);
            // Let the stopped replica's last checkpoint land before the next connect.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let entries = writer.render_metrics();
        let entries: u64 = entries
            .lines()
            .find_map(|l| l.strip_prefix("interop_store_log_applied "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let (rb, rs) = (median(rebuild.clone()), median(resume.clone()));
        println!(
            "{n:>10} {entries:>10} {built:>12.3} {rb:>12.3} {rs:>12.3} {:>15.1}",
            rb / rs
        );
        trims.push(trim(&server.url, &dir, &view_dir, n, rb).await?);
        rows.push(serde_json::json!({
            "submissions": n, "entries": entries, "new_submissions": args.new,
            "file_build_s": built, "rebuild_s": rebuild, "resume_s": resume,
            "rebuild_median_s": rb, "resume_median_s": rs,
        }));
        drop(writer);
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let first = rows[0]["resume_median_s"].as_f64().unwrap_or(1.0);
    for r in &rows {
        println!(
            "resume at {} submissions over resume at {}: {:.2}x",
            r["submissions"],
            args.sizes[0],
            r["resume_median_s"].as_f64().unwrap_or(0.0) / first
        );
    }
    println!(
        "\n{:>10} {:>11} {:>12} {:>11} {:>14} {:>13} {:>12} {:>15}",
        "log subs",
        "snapshot s",
        "snapshot MB",
        "first kept",
        "log MB before",
        "log MB after",
        "new from it s",
        "rebuild/new"
    );
    let f = |t: &serde_json::Value, k: &str| t[k].as_f64().unwrap_or(0.0);
    for t in &trims {
        println!(
            "{:>10} {:>11.3} {:>12.2} {:>11} {:>14.2} {:>13.2} {:>12.3} {:>15.1}",
            t["submissions"].as_u64().unwrap_or(0),
            f(t, "snapshot_s"),
            f(t, "snapshot_bytes") / 1e6,
            t["first_kept"].as_u64().unwrap_or(0),
            f(t, "log_bytes_before") / 1e6,
            f(t, "log_bytes_after") / 1e6,
            f(t, "from_snapshot_s"),
            f(t, "rebuild_median_s") / f(t, "from_snapshot_s").max(1e-9),
        );
    }
    println!(
        "\n{:>10} {:>18} {:>10} {:>12} {:>18} {:>12}",
        "log subs",
        "receipts forgotten",
        "expire s",
        "snapshot MB",
        "MB after expiry",
        "after/before"
    );
    for t in &trims {
        println!(
            "{:>10} {:>18} {:>10.3} {:>12.2} {:>18.2} {:>12.2}",
            t["submissions"].as_u64().unwrap_or(0),
            t["receipts_forgotten"].as_u64().unwrap_or(0),
            f(t, "expire_s"),
            f(t, "snapshot_bytes") / 1e6,
            f(t, "snapshot_after_expiry_bytes") / 1e6,
            f(t, "snapshot_after_expiry_bytes") / f(t, "snapshot_bytes").max(1.0),
        );
    }
    if let Some(path) = &args.json {
        let rows = serde_json::json!({ "resume": rows, "trim": trims });
        std::fs::write(path, serde_json::to_vec_pretty(&rows)?)?;
        println!("JSON written to {}", path.display());
    }
    Ok(())
}

/// The log's bytes on the server.
async fn log_bytes(url: &str) -> anyhow::Result<u64> {
    let js = async_nats::jetstream::new(async_nats::connect(url).await?);
    let mut stream = js.get_stream("LOG").await?;
    Ok(stream.info().await?.state.bytes)
}

/// The snapshot and trim of one size's log (see the module documentation), beside `rebuild_s`.
async fn trim(
    url: &str,
    dir: &Path,
    view_dir: &Path,
    n: u64,
    rebuild_s: f64,
) -> anyhow::Result<serde_json::Value> {
    use async_nats::jetstream::consumer;
    let js = async_nats::jetstream::new(async_nats::connect(url).await?);
    let stream = js.get_stream("LOG").await?;
    stream
        .get_or_create_consumer(
            "interop-work-TX",
            consumer::pull::Config {
                durable_name: Some("interop-work-TX".into()),
                filter_subject: "interop.log.LOG.work.TX".into(),
                deliver_policy: consumer::DeliverPolicy::New,
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await?;
    let before = log_bytes(url).await?;
    let snapshotter = replica(url, "resumer", Some(view_dir)).await?;
    let s = snapshotter.snapshot_now().await?;
    let after = log_bytes(url).await?;
    let (from_snapshot, r) = timed(url, "newcomer", Some(&dir.join("new"))).await?;
    drop(r);
    // Receipt retention: the older half of the submissions (accepted at ms 0..n/2) forgotten,
    // in the retention pass's steps, through the log; then a snapshot of what is left.
    let t = Instant::now();
    let mut forgotten = 0;
    loop {
        let step = snapshotter.expire_receipts((n / 2) as i64).await?;
        forgotten += step;
        if step < interop_gateway::store::COMPACT_LIMIT as u64 {
            break;
        }
    }
    let expire_s = t.elapsed().as_secs_f64();
    let held = snapshotter.snapshot_now().await?;
    drop(snapshotter);
    Ok(serde_json::json!({
        "submissions": n, "snapshot_s": s.seconds, "snapshot_bytes": s.bytes,
        "snapshot_applied": s.applied, "first_kept": s.first_kept,
        "log_bytes_before": before, "log_bytes_after": after,
        "from_snapshot_s": from_snapshot, "rebuild_median_s": rebuild_s,
        "receipts_forgotten": forgotten, "expire_s": expire_s,
        "snapshot_after_expiry_bytes": held.bytes, "snapshot_after_expiry_s": held.seconds,
    }))
}
