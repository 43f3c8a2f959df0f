//! `interop`: the command line for the people who use the gateway — bureaus submit and read
//! their responses, field offices watch their outcomes, administrators read and change
//! policy, read the statistics and the disclosure audit, and revoke and reload certificates.
//! Built on [`interop_client`], the same library the simulator and the tests use; this
//! binary only parses flags and prints answers.
//!
//! - `main.rs`: the flags, the connection, exit codes and the output helpers;
//! - `submit.rs`: `submit` (one booking, or a file of them over one stream) and `status`;
//! - `follow.rs`: `responses` (a bureau's) and `watch` (a field office's), resumable from a
//!   state file;
//! - `admin.rs`: `admin ...`, every administrative command (all that `interop-gateway admin`
//!   did, with the same output, and more).
//!
//! Exit codes: 0 done; 1 refused (by the gateway, or a booking file that is not valid);
//! 2 usage (bad flags, missing PKI files); 3 unavailable (no connection, the gateway
//! unavailable or shedding load after the retries, a deadline passed).

use clap::{CommandFactory, Parser, Subcommand};
use interop_client::{ClientConfig, ClientError, Role, describe_status};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tonic::Code;

/// Prints a line to stdout. A reader that went away (`interop ... | head`) ends the program
/// quietly, as Unix tools do; nothing after that line is recorded as delivered.
macro_rules! outln {
    ($($t:tt)*) => { $crate::emit(format_args!($($t)*)) };
}

mod admin;
mod follow;
mod submit;

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
             office's outcomes, administer the gateway",
    after_help = "Exit codes: 0 ok, 1 refused, 2 usage, 3 unavailable."
)]
struct Cli {
    /// Gateway endpoint.
    #[arg(long, global = true, env = "INTEROP_TARGET", default_value = interop_client::DEFAULT_ENDPOINT)]
    target: String,
    /// PKI directory (ca.pem, clients/ROLE.pem and -key.pem), as `interop-gateway pki init`
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
        /// interop-watch-OFFICE.cursor in the current directory).
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
        cmd: admin::AdminCmd,
    },
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
}

/// How the command ended.
#[derive(Debug)]
struct Failure {
    exit: u8,
    message: String,
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

fn main() -> ExitCode {
    // Warnings only by default, and colour only on a terminal.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
            let wait = wait.then(|| Duration::from_secs(wait_secs));
            submit::submit_one(&client, &file, wait, json).await
        }
        Cmd::Submit {
            file,
            stream: true,
            window,
            json,
            ..
        } => submit::submit_stream(&client, &file, window, json).await,
        Cmd::Status { tcn, json } => submit::status(&client, &tcn, json).await,
        Cmd::Responses {
            follow,
            after,
            state_file,
            json,
        } => follow::responses(&client, &role, follow, after, state_file, json).await,
        Cmd::Watch {
            state_file,
            ack,
            once,
            after,
            json,
        } => follow::watch(&client, &role, state_file, ack, once, after, json).await,
        Cmd::Admin { cmd } => admin::admin(&client, cmd).await,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn stats_takes_a_format_or_json_but_not_both() {
        let parse =
            |args: &[&str]| Cli::try_parse_from(["interop", "admin", "stats"].iter().chain(args));
        assert!(parse(&["--month", "2011-06", "--format", "csv"]).is_ok());
        assert!(parse(&["--month", "2011-06", "--json"]).is_ok());
        let e = parse(&["--json", "--format", "csv"])
            .err()
            .expect("refused");
        assert!(e.to_string().contains("--format"), "{e}");
    }
}
