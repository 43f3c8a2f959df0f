//! `interop`: the command line for the people who use the gateway — bureaus submit and read
//! their responses, field offices watch their outcomes, administrators read and change
//! policy. Built on [`interop_client`], the same library the simulator and the tests
//! use.
//!
//! Exit codes: 0 done; 1 refused (by the gateway, or a booking file that is not valid);
//! 2 usage (bad flags, missing PKI files); 3 unavailable (no connection, the gateway
//! unavailable or shedding load after the retries, a deadline passed).

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use interop_client::booking_json::BookingJson;
use interop_client::{
    self as client, Client, ClientConfig, ClientError, CursorFile, Role, describe_status,
};
use interop_proto::v1 as pb;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::Code;

/// Prints a line to stdout. A reader that went away (`interop ... | head`) ends the program
/// quietly, as Unix tools do; nothing after that line is recorded as delivered.
macro_rules! outln {
    ($($t:tt)*) => { emit(format_args!($($t)*)) };
}

fn emit(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{args}").and_then(|_| out.flush()).is_err() {
        std::process::exit(0);
    }
}

#[derive(Parser)]
#[command(
    name = "interop",
    version,
    about = "Client for the interop gateway: submit bookings, read responses, watch a field \
             office's outcomes, administer policy",
    after_help = "Exit codes: 0 ok, 1 refused, 2 usage, 3 unavailable."
)]
struct Cli {
    /// Gateway endpoint.
    #[arg(long, global = true, env = "INTEROP_TARGET", default_value = client::DEFAULT_ENDPOINT)]
    target: String,
    /// PKI directory (ca.pem, clients/<role>.pem and -key.pem), as `interop-gateway pki init`
    /// writes it.
    #[arg(long, global = true, env = "INTEROP_PKI")]
    pki: Option<PathBuf>,
    /// Who you are: bureau/XX, field-office/XXX or admin (admin commands default to admin).
    #[arg(long = "as", global = true, env = "INTEROP_AS", value_name = "ROLE")]
    role: Option<String>,
    /// CA certificate (instead of --pki).
    #[arg(long, global = true, requires_all = ["cert", "key"], conflicts_with = "pki")]
    ca: Option<PathBuf>,
    /// Client certificate (with --ca).
    #[arg(long, global = true)]
    cert: Option<PathBuf>,
    /// Client key (with --ca).
    #[arg(long, global = true)]
    key: Option<PathBuf>,
    /// Name the gateway's certificate is checked against.
    #[arg(long, global = true, default_value = "localhost")]
    server_name: String,
    /// Deadline of each call in seconds (retries of an unavailable gateway come on top).
    #[arg(long, global = true, default_value_t = 30.0)]
    timeout: f64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Submit a booking (JSON), or many (--stream, JSON lines), and print the receipts.
    Submit {
        /// A booking as JSON, or with --stream a file of one booking per line ("-" = stdin).
        file: PathBuf,
        /// The file holds one booking per line: send them over one stream.
        #[arg(long)]
        stream: bool,
        /// With --stream: submissions sent and not yet answered, at most.
        #[arg(long, default_value_t = 64)]
        window: usize,
        /// Wait for the booking's responses and print them.
        #[arg(long, conflicts_with = "stream")]
        wait: bool,
        /// With --wait: seconds to wait.
        #[arg(long, default_value_t = 120)]
        wait_secs: u64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Where a submission stands.
    Status {
        tcn: String,
        #[arg(long)]
        json: bool,
    },
    /// Your bureau's responses: criminal history always, immigration where you receive it,
    /// detainers.
    Responses {
        /// Keep following new responses (resumes by itself after a disconnect).
        #[arg(long)]
        follow: bool,
        /// Start after this cursor (default: the state file's, else the start).
        #[arg(long)]
        after: Option<u64>,
        /// Keep the cursor here so the next run continues where this one stopped.
        #[arg(long)]
        state_file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// A field office's live view of every outcome in its area.
    Watch {
        /// The cursor is kept here; a restart continues exactly where it stopped (default
        /// interop-watch-<OFFICE>.cursor in the current directory).
        #[arg(long)]
        state_file: Option<PathBuf>,
        /// Acknowledge each outcome once it is printed and recorded.
        #[arg(long)]
        ack: bool,
        /// Print what is stored and stop instead of following.
        #[arg(long)]
        once: bool,
        /// Ignore the state file and start after this cursor.
        #[arg(long)]
        after: Option<u64>,
        /// One JSON object per line instead of aligned text.
        #[arg(long)]
        json: bool,
    },
    /// Administration (as admin).
    Admin {
        #[command(subcommand)]
        cmd: AdminCmd,
    },
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum AdminCmd {
    /// A jurisdiction's policy.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Set or lift a state's opt-out of receiving immigration responses.
    StateOptOut { state: String, opted_out: YesNo },
    /// Jurisdictions and their policies.
    Jurisdictions {
        /// Only this state's.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Field offices and the states they cover.
    Offices {
        #[arg(long)]
        json: bool,
    },
    /// Take a subject out of the gallery the target serves (the gateway: IDENT's, also
    /// behind --ident-shards, where every replica of its shard must answer; an
    /// `interop-matcher serve` process: its shard's). No later search finds it.
    RemoveSubject { subject_id: u64 },
    /// The gateway's counters, or with --month the monthly statistics.
    Stats {
        /// YYYY-MM: monthly statistics by month of booking.
        #[arg(long)]
        month: Option<String>,
        /// With --month: only this state's rows (and the nation's).
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    Get {
        jurisdiction: String,
        #[arg(long)]
        json: bool,
    },
    /// Change the given fields; the others stay as they are.
    Set {
        jurisdiction: String,
        /// YYYY-MM-DD, or "none" to deactivate.
        #[arg(long)]
        activated_on: Option<String>,
        #[arg(long)]
        receives_results: Option<YesNo>,
        #[arg(long)]
        can_receive_electronically: Option<YesNo>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum YesNo {
    Yes,
    No,
}

impl YesNo {
    fn get(self) -> bool {
        matches!(self, YesNo::Yes)
    }
}

/// How the command ended.
#[derive(Debug)]
pub struct Failure {
    pub exit: u8,
    pub message: String,
}

const REFUSED: u8 = 1;
const USAGE: u8 = 2;
const UNAVAILABLE: u8 = 3;

impl Failure {
    fn usage(m: impl Into<String>) -> Failure {
        Failure {
            exit: USAGE,
            message: m.into(),
        }
    }
    fn refused(m: impl Into<String>) -> Failure {
        Failure {
            exit: REFUSED,
            message: m.into(),
        }
    }
}

fn exit_for(code: Code) -> u8 {
    match code {
        Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded => UNAVAILABLE,
        _ => REFUSED,
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        let exit = match &e {
            ClientError::Config(_) | ClientError::State { .. } => USAGE,
            ClientError::Connect { .. } => UNAVAILABLE,
            ClientError::Rpc(s) => exit_for(s.code()),
        };
        Failure {
            exit,
            message: e.to_string(),
        }
    }
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Failure {
        Failure {
            exit: exit_for(s.code()),
            message: describe_status(&s),
        }
    }
}

type Outcome = Result<(), Failure>;

/// Runs `interop` with the process's arguments.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Cmd::Completions { shell } = cli.cmd {
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "interop",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(UNAVAILABLE);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.exit)
        }
    }
}

async fn run(cli: Cli) -> Outcome {
    let default_role = matches!(cli.cmd, Cmd::Admin { .. }).then_some(Role::Admin);
    let role = match (&cli.role, default_role) {
        (Some(r), _) => r.parse::<Role>()?,
        (None, Some(r)) => r,
        (None, None) => {
            return Err(Failure::usage(
                "say who you are with --as bureau/XX or --as field-office/XXX (or INTEROP_AS)",
            ));
        }
    };
    let config = match (&cli.pki, &cli.ca, &cli.cert, &cli.key) {
        (Some(dir), None, _, _) => ClientConfig::from_pki_dir(&cli.target, dir, &role)?,
        (None, Some(ca), Some(cert), Some(key)) => {
            ClientConfig::from_files(&cli.target, ca, Some((cert, key)))?
        }
        _ => {
            return Err(Failure::usage(
                "give --pki DIR (or INTEROP_PKI), or --ca, --cert and --key",
            ));
        }
    };
    if !(cli.timeout.is_finite() && cli.timeout > 0.0) {
        return Err(Failure::usage(
            "--timeout must be a positive number of seconds",
        ));
    }
    let client = config
        .server_name(cli.server_name)
        .call_timeout(Duration::from_secs_f64(cli.timeout))
        .connect()
        .await?;
    match cli.cmd {
        Cmd::Submit {
            file,
            stream: false,
            wait,
            wait_secs,
            json,
            ..
        } => {
            submit_one(
                &client,
                &file,
                wait.then(|| Duration::from_secs(wait_secs)),
                json,
            )
            .await
        }
        Cmd::Submit {
            file,
            stream: true,
            window,
            json,
            ..
        } => submit_stream(&client, &file, window, json).await,
        Cmd::Status { tcn, json } => {
            let st = client.status(&tcn).await?;
            let receipt = st.receipt.clone().unwrap_or_default();
            if json {
                print_json(&serde_json::json!({
                    "tcn": st.tcn,
                    "stage": short(st.stage().as_str_name(), "STAGE_"),
                    "receipt_id": receipt.receipt_id,
                    "accepted_at": time(receipt.accepted_at.as_ref()),
                }));
            } else {
                outln!(
                    "{}: {} (receipt {}, accepted {})",
                    st.tcn,
                    short(st.stage().as_str_name(), "STAGE_"),
                    receipt.receipt_id,
                    time(receipt.accepted_at.as_ref())
                );
            }
            Ok(())
        }
        Cmd::Responses {
            follow,
            after,
            state_file,
            json,
        } => responses(&client, &role, follow, after, state_file, json).await,
        Cmd::Watch {
            state_file,
            ack,
            once,
            after,
            json,
        } => watch(&client, &role, state_file, ack, once, after, json).await,
        Cmd::Admin { cmd } => admin(&client, cmd).await,
        Cmd::Completions { .. } => Ok(()),
    }
}

fn print_json(v: &serde_json::Value) {
    outln!("{v}");
}

/// `ENUM_PREFIX_SOME_NAME` → `some-name`.
fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
        .replace('_', "-")
}

fn time(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|d| d.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

fn read_booking(file: &Path) -> Result<pb::Submission, Failure> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))?;
    let base = file.parent().unwrap_or(Path::new("."));
    BookingJson::parse(&text)
        .and_then(|b| b.to_pb(base))
        .map_err(|e| Failure::refused(format!("{}: {e:#}", file.display())))
}

fn refusal(tcn: &str, s: &tonic::Status) -> Failure {
    let violations = client::field_violations(s);
    let code = client::code_name(s.code());
    let mut msg = if violations.is_empty() {
        format!("{tcn} refused: {code}: {}", s.message())
    } else {
        format!("{tcn} refused: {code}, {} problem(s):", violations.len())
    };
    for (field, why) in violations {
        msg.push_str(&format!("\n  {field}: {why}"));
    }
    Failure {
        exit: exit_for(s.code()),
        message: msg,
    }
}

fn receipt_json(r: &pb::Receipt) -> serde_json::Value {
    serde_json::json!({
        "tcn": r.tcn,
        "receipt_id": r.receipt_id,
        "accepted_at": time(r.accepted_at.as_ref()),
        "duplicate": r.duplicate,
    })
}

async fn submit_one(client: &Client, file: &Path, wait: Option<Duration>, json: bool) -> Outcome {
    let sub = read_booking(file)?;
    let tcn = sub.tcn.clone();
    let r = client.submit(sub).await.map_err(|s| refusal(&tcn, &s))?;
    if json {
        print_json(&receipt_json(&r));
    } else {
        outln!(
            "receipt {} for {} accepted {}{}",
            r.receipt_id,
            r.tcn,
            time(r.accepted_at.as_ref()),
            if r.duplicate {
                " (already received: the original receipt)"
            } else {
                ""
            }
        );
    }
    if let Some(d) = wait {
        for resp in client.wait_for_responses(&tcn, d).await? {
            print_response(&resp, json);
        }
    }
    Ok(())
}

async fn submit_stream(client: &Client, file: &Path, window: usize, json: bool) -> Outcome {
    let reader: Box<dyn BufRead + Send> = if file == Path::new("-") {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let f = std::fs::File::open(file)
            .map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))?;
        Box::new(std::io::BufReader::new(f))
    };
    // The progress bar's length: lines counted in fixed-size chunks, so a large file is never
    // held in memory (its bookings are parsed one at a time as they are sent).
    let total_hint = if file == Path::new("-") {
        None
    } else {
        count_lines(file).ok()
    };
    let base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    // Bookings are parsed as they are sent; a line that does not parse is reported by its
    // number and never sent. `lines_of[i]` is the line of the i-th booking sent.
    let lines_of = Arc::new(Mutex::new(Vec::<usize>::new()));
    let bad_lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let (lines, bad) = (lines_of.clone(), bad_lines.clone());
    let input = reader.lines().enumerate().filter_map(move |(i, line)| {
        let n = i + 1;
        let parsed = line.map_err(anyhow::Error::from).and_then(|l| {
            if l.trim().is_empty() {
                Ok(None)
            } else {
                BookingJson::parse(&l)
                    .and_then(|b| b.to_pb(&base))
                    .map(Some)
            }
        });
        match parsed {
            Ok(Some(s)) => {
                lines.lock().unwrap().push(n);
                Some(s)
            }
            Ok(None) => None,
            Err(e) => {
                bad.lock().unwrap().push(format!("line {n}: {e:#}"));
                None
            }
        }
    });
    let progress = indicatif::ProgressBar::with_draw_target(
        total_hint,
        indicatif::ProgressDrawTarget::stderr_with_hz(4),
    );
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {pos}/{len} submitted [{elapsed_precise}] {per_sec} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut answers = client.submit_many(input, window);
    let (mut receipted, mut duplicates, mut refused, mut unavailable) = (0u64, 0u64, 0u64, 0u64);
    let mut stream_error = None;
    while let Some(a) = answers.recv().await {
        let a = match a {
            Ok(a) => a,
            Err(s) => {
                stream_error = Some(s);
                break;
            }
        };
        progress.inc(1);
        let line = lines_of.lock().unwrap().get(a.index).copied().unwrap_or(0);
        match &a.result {
            Ok(r) => {
                receipted += 1;
                duplicates += r.duplicate as u64;
                if json {
                    print_json(&receipt_json(r));
                }
            }
            Err(s) => {
                if exit_for(s.code()) == UNAVAILABLE {
                    unavailable += 1;
                } else {
                    refused += 1;
                }
                if json {
                    print_json(&serde_json::json!({"tcn": a.tcn, "line": line,
                        "code": client::code_name(s.code()), "error": s.message()}));
                } else {
                    progress.suspend(|| {
                        eprintln!("line {line}: {} refused: {}", a.tcn, describe_status(s))
                    });
                }
            }
        }
    }
    progress.finish_and_clear();
    let bad = bad_lines.lock().unwrap().clone();
    for b in &bad {
        eprintln!("{b}");
    }
    let secs = started.elapsed().as_secs_f64();
    let sent = receipted + refused + unavailable;
    eprintln!(
        "{sent} submitted in {secs:.1} s ({:.0}/s): {receipted} receipted ({duplicates} already \
         received), {refused} refused, {unavailable} unavailable; {} lines not valid bookings",
        sent as f64 / secs.max(1e-9),
        bad.len()
    );
    if let Some(s) = stream_error {
        return Err(Failure::from(s));
    }
    if unavailable > 0 {
        return Err(Failure {
            exit: UNAVAILABLE,
            message: format!("{unavailable} submissions were not accepted: gateway unavailable"),
        });
    }
    if refused > 0 || !bad.is_empty() {
        return Err(Failure::refused(format!(
            "{} bookings refused or not valid",
            refused + bad.len() as u64
        )));
    }
    Ok(())
}

fn count_lines(file: &Path) -> std::io::Result<u64> {
    use std::io::Read;
    let mut f = std::fs::File::open(file)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        match f.read(&mut buf)? {
            0 => return Ok(n),
            k => n += buf[..k].iter().filter(|&&c| c == b'\n').count() as u64,
        }
    }
}

fn outcome_json(cursor: u64, o: &pb::IdentOutcome) -> serde_json::Value {
    serde_json::json!({
        "cursor": cursor,
        "tcn": o.tcn,
        "jurisdiction_id": o.jurisdiction_id,
        "ori": o.ori,
        "booked_at": time(o.booked_at.as_ref()),
        "determined_at": time(o.determined_at.as_ref()),
        "hit": o.hit,
        "fin": o.fin,
        "score": o.score,
        "status": short(o.status().as_str_name(), "IMMIGRATION_STATUS_"),
        "priority_level": short(o.priority_level().as_str_name(), "PRIORITY_LEVEL_"),
        "non_criminal_priorities": o.non_criminal_priorities().map(|p| short(p.as_str_name(), "NON_CRIMINAL_PRIORITY_")).collect::<Vec<_>>(),
        "recommendation": short(o.recommendation().as_str_name(), "RECOMMENDATION_"),
        "discretion": o.discretion,
        "fbi_number": o.fbi_number,
    })
}

const WATCH_HEADER: &str = "DETERMINED             TCN                       JURIS.   STATUS                 LEVEL  RECOMMENDATION          DISCRETION";

fn outcome_line(o: &pb::IdentOutcome) -> String {
    let status = if o.hit {
        short(o.status().as_str_name(), "IMMIGRATION_STATUS_")
    } else {
        "no-hit".into()
    };
    let level = match o.priority_level() {
        pb::PriorityLevel::Unspecified => "-".to_string(),
        l => short(l.as_str_name(), "PRIORITY_LEVEL_"),
    };
    format!(
        "{:<22} {:<25} {:<8} {:<22} {:<6} {:<23} {}",
        time(o.determined_at.as_ref()),
        o.tcn,
        o.jurisdiction_id,
        status,
        level,
        short(o.recommendation().as_str_name(), "RECOMMENDATION_"),
        if o.discretion { "yes" } else { "-" }
    )
}

fn print_response(r: &pb::BureauResponse, json: bool) {
    use pb::bureau_response::Body;
    match (&r.body, json) {
        (Some(Body::CriminalHistory(c)), false) => outln!(
            "{:>8}  {}  criminal history: {}{}",
            r.cursor,
            r.tcn,
            if c.identified {
                "identified "
            } else {
                "not identified"
            },
            if c.identified {
                format!(
                    "FBI {} ({} prior arrests, {} convictions)",
                    c.fbi_number,
                    c.prior_arrests,
                    c.convictions.len()
                )
            } else {
                String::new()
            }
        ),
        (Some(Body::Immigration(i)), false) => {
            let o = i.outcome.clone().unwrap_or_default();
            outln!(
                "{:>8}  {}  immigration: {} {} {}",
                r.cursor,
                r.tcn,
                if o.hit { "hit" } else { "no hit" },
                short(o.status().as_str_name(), "IMMIGRATION_STATUS_"),
                short(o.recommendation().as_str_name(), "RECOMMENDATION_")
            )
        }
        (Some(Body::Detainer(d)), false) => outln!(
            "{:>8}  {}  detainer {} from {}: hold until {}{}",
            r.cursor,
            r.tcn,
            d.detainer_id,
            d.field_office,
            time(d.hold_until.as_ref()),
            if d.operative_on_conviction {
                " (operative on conviction)"
            } else {
                ""
            }
        ),
        (None, false) => outln!("{:>8}  {}  (empty response)", r.cursor, r.tcn),
        (body, true) => {
            let body = match body {
                Some(Body::CriminalHistory(c)) => serde_json::json!({"criminal_history": {
                    "identified": c.identified, "fbi_number": c.fbi_number,
                    "prior_arrests": c.prior_arrests, "convictions": c.convictions.len()}}),
                Some(Body::Immigration(i)) => serde_json::json!({"immigration":
                    outcome_json(r.cursor, &i.outcome.clone().unwrap_or_default())}),
                Some(Body::Detainer(d)) => serde_json::json!({"detainer": {
                    "detainer_id": d.detainer_id, "field_office": d.field_office,
                    "hold_until": time(d.hold_until.as_ref()),
                    "operative_on_conviction": d.operative_on_conviction}}),
                None => serde_json::json!({}),
            };
            print_json(&serde_json::json!({"cursor": r.cursor, "tcn": r.tcn, "body": body}));
        }
    }
}

/// Resolves where a follower starts: an explicit cursor, else the state file's.
fn start_cursor(
    state_file: Option<PathBuf>,
    role: &Role,
    after: Option<u64>,
) -> Result<(Option<CursorFile>, Option<u64>), Failure> {
    match state_file {
        Some(path) => {
            let (f, saved) = CursorFile::open(path, role)?;
            Ok((Some(f), after.or(saved)))
        }
        None => Ok((None, after)),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn responses(
    client: &Client,
    role: &Role,
    follow: bool,
    after: Option<u64>,
    state_file: Option<PathBuf>,
    json: bool,
) -> Outcome {
    if !matches!(role, Role::Bureau(_)) {
        return Err(Failure::usage("responses is for bureaus: --as bureau/XX"));
    }
    let (state, start) = start_cursor(state_file, role, after)?;
    let mut f = client.follow_responses(start, follow);
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        let next = tokio::select! {
            n = f.next() => n?,
            _ = &mut stop => break,
        };
        let Some(r) = next else { break };
        print_response(&r, json);
        if let Some(s) = &state {
            s.save(r.cursor)?;
        }
    }
    Ok(())
}

async fn watch(
    client: &Client,
    role: &Role,
    state_file: Option<PathBuf>,
    ack: bool,
    once: bool,
    after: Option<u64>,
    json: bool,
) -> Outcome {
    let Role::FieldOffice(office) = role else {
        return Err(Failure::usage(
            "watch is for field offices: --as field-office/XXX",
        ));
    };
    let path =
        state_file.unwrap_or_else(|| PathBuf::from(format!("interop-watch-{office}.cursor")));
    let (state, start) = start_cursor(Some(path), role, after)?;
    let state = state.expect("a state file was given");
    let mut f = client.subscription(start, !once);
    if !json {
        outln!("{WATCH_HEADER}");
    }
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        // Stopping between messages is clean: what was printed is recorded, the rest comes
        // on the next run.
        let next = tokio::select! {
            n = f.next() => n?,
            _ = &mut stop => break,
        };
        let Some(n) = next else { break };
        let o = n.outcome.clone().unwrap_or_default();
        let line = if json {
            outcome_json(n.cursor, &o).to_string()
        } else {
            outcome_line(&o)
        };
        outln!("{line}");
        state.save(n.cursor)?;
        if ack {
            client.ack(n.cursor).await?;
        }
    }
    Ok(())
}

async fn admin(client: &Client, cmd: AdminCmd) -> Outcome {
    match cmd {
        AdminCmd::Policy {
            cmd: PolicyCmd::Get { jurisdiction, json },
        } => print_policy(&client.get_policy(&jurisdiction).await?, json),
        AdminCmd::Policy {
            cmd:
                PolicyCmd::Set {
                    jurisdiction,
                    activated_on,
                    receives_results,
                    can_receive_electronically,
                    json,
                },
        } => {
            if activated_on.is_none()
                && receives_results.is_none()
                && can_receive_electronically.is_none()
            {
                return Err(Failure::usage(
                    "nothing to change: give --activated-on, --receives-results or \
                     --can-receive-electronically",
                ));
            }
            let p = client
                .set_policy(pb::SetPolicyRequest {
                    jurisdiction_id: jurisdiction,
                    activated_on: activated_on.map(|d| if d == "none" { String::new() } else { d }),
                    receives_results: receives_results.map(YesNo::get),
                    can_receive_electronically: can_receive_electronically.map(YesNo::get),
                })
                .await?;
            print_policy(&p, json);
        }
        AdminCmd::StateOptOut { state, opted_out } => {
            let p = client.set_state_policy(&state, opted_out.get()).await?;
            outln!(
                "{}: {}",
                p.state,
                if p.opted_out {
                    "opted out (its bureaus receive no immigration responses)"
                } else {
                    "not opted out"
                }
            );
        }
        AdminCmd::Jurisdictions { state, json } => {
            for p in client.list_jurisdictions(state.as_deref()).await? {
                if json {
                    print_json(&policy_json(&p));
                } else {
                    outln!("{}", policy_line(&p));
                }
            }
        }
        AdminCmd::RemoveSubject { subject_id } => {
            let size = client.remove_subject(subject_id).await?;
            // Behind `--ident-shards` the size is the shard's that held the subject.
            outln!("subject {subject_id} removed; {size} left in the gallery that held it");
        }
        AdminCmd::Offices { json } => {
            for o in client.list_field_offices().await? {
                if json {
                    print_json(&serde_json::json!({"code": o.code, "name": o.name,
                        "states": o.states, "jurisdictions": o.jurisdictions}));
                } else {
                    outln!(
                        "{:<4} {:<28} {:>4} jurisdictions  {}",
                        o.code,
                        o.name,
                        o.jurisdictions,
                        o.states.join(" ")
                    );
                }
            }
        }
        AdminCmd::Stats {
            month: None, json, ..
        } => {
            let c = client.counters().await?;
            if json {
                print_json(&serde_json::to_value(&c).unwrap_or_default());
            } else {
                for (k, v) in c {
                    outln!("{k:<40} {v:>12}");
                }
            }
        }
        AdminCmd::Stats {
            month: Some(month),
            state,
            json,
        } => {
            let m = client
                .monthly_stats(pb::GetMonthlyStatsRequest {
                    month,
                    state: state.unwrap_or_default(),
                })
                .await?;
            let rows = m
                .jurisdictions
                .iter()
                .chain(m.states.iter())
                .chain(m.national.iter());
            if !json {
                outln!(
                    "{:<8} {:>11} {:>9} {:>7} {:>6} {:>6} {:>6} {:>6} {:>9} {:>8}",
                    "ROW",
                    "SUBMISSIONS",
                    "SEARCHES",
                    "MATCHES",
                    "L1",
                    "L2",
                    "L3",
                    "NONCR",
                    "DETAINERS",
                    "REMOVALS"
                );
            }
            for r in rows {
                let name = if !r.jurisdiction_id.is_empty() {
                    r.jurisdiction_id.clone()
                } else if !r.state.is_empty() {
                    r.state.clone()
                } else {
                    "NATION".into()
                };
                if json {
                    print_json(
                        &serde_json::json!({"row": name, "submissions": r.submissions,
                        "ident_searches": r.ident_searches, "matches": r.matches,
                        "identified_level1": r.identified_level1,
                        "identified_level2": r.identified_level2,
                        "identified_level3": r.identified_level3,
                        "identified_non_criminal": r.identified_non_criminal,
                        "detainers_issued": r.detainers_issued,
                        "minor_traffic_only_arrests": r.minor_traffic_only_arrests,
                        "removals": r.removals}),
                    );
                } else {
                    outln!(
                        "{:<8} {:>11} {:>9} {:>7} {:>6} {:>6} {:>6} {:>6} {:>9} {:>8}",
                        name,
                        r.submissions,
                        r.ident_searches,
                        r.matches,
                        r.identified_level1,
                        r.identified_level2,
                        r.identified_level3,
                        r.identified_non_criminal,
                        r.detainers_issued,
                        r.removals
                    );
                }
            }
        }
    }
    Ok(())
}

fn policy_json(p: &pb::JurisdictionPolicy) -> serde_json::Value {
    serde_json::json!({
        "jurisdiction_id": p.jurisdiction_id, "name": p.name, "state": p.state,
        "field_office": p.field_office, "activated_on": p.activated_on,
        "receives_results": p.receives_results,
        "can_receive_electronically": p.can_receive_electronically,
        "state_opted_out": p.state_opted_out,
        "effective_receives_results": p.effective_receives_results,
    })
}

fn policy_line(p: &pb::JurisdictionPolicy) -> String {
    let yn = |b: bool| if b { "yes" } else { "no" };
    format!(
        "{:<8} {:<30} {:<4} activated {:<10}  receives results {:<3} (electronic {:<3}, state \
         opted out {:<3}) => bureau gets immigration responses: {}",
        p.jurisdiction_id,
        p.name,
        p.field_office,
        if p.activated_on.is_empty() {
            "never"
        } else {
            &p.activated_on
        },
        yn(p.receives_results),
        yn(p.can_receive_electronically),
        yn(p.state_opted_out),
        yn(p.effective_receives_results)
    )
}

fn print_policy(p: &pb::JurisdictionPolicy, json: bool) {
    if json {
        print_json(&policy_json(p));
    } else {
        outln!("{}", policy_line(p));
    }
}
