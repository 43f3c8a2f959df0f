//! The client library: how any Rust program talks to an interop gateway as one of its users
//! (a state bureau, an ICE field office, the administrator).
//!
//! It connects over mutual TLS with a PKI directory or explicit PEM files, puts a deadline on
//! every call, retries with exponential backoff (and jitter) while the gateway answers
//! `UNAVAILABLE` or sheds load with `RESOURCE_EXHAUSTED`, and keeps idle connections alive
//! with HTTP/2 pings. Every RPC of the contract is idempotent (a submission by its TCN, an
//! acknowledgement because cursors never go backwards, a detainer per booking), so retrying
//! a call whose answer was lost is always safe.
//!
//! # Layout
//!
//! - [`config`]: [`Role`], [`ClientConfig`] and connecting; the [`Client`] it makes, the
//!   generated stubs on its connection, moving between gateway replicas.
//! - [`retry`]: [`RetryPolicy`], which failures are repeated, and [`Client::unary`], the one
//!   call helper (deadline, retries, failover) under every unary wrapper below.
//! - [`submit`]: a bureau's bookings. [`Client::submit`] one, [`Client::submit_many`] a bulk
//!   stream with a bounded window of unanswered submissions (flow control) that re-sends what
//!   a broken stream left unanswered; [`Client::status`], [`Client::wait_for_responses`].
//! - [`follow`]: [`Client::follow_responses`] (bureau) and [`Client::subscribe`] (field
//!   office), streams that resume by themselves from the last cursor after a disconnect or a
//!   gateway restart, so the caller sees each result once; [`CursorFile`] keeps the cursor
//!   across runs; [`Client::ack`] and [`Client::decide`].
//! - [`admin`]: typed admin calls (policy, statistics, the disclosure audit, revocation,
//!   reloading certificates, gallery subjects).
//! - [`error`]: [`ClientError`], and a refusal as a person reads it ([`describe_status`]).
//! - [`stats`]: the monthly statistics table, as text, CSV or JSON.
//! - [`booking_json`]: bookings as JSON files, as people write them and the simulator
//!   exports them.
//!
//! The `interop` command line (`src/bin/interop/`) is built on this library, as are the
//! simulator and the end-to-end tests; it is not part of the library.
//!
//! ```no_run
//! use interop_client::{ClientConfig, Role};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let office: Role = "field-office/HOU".parse()?;
//! let client = ClientConfig::from_pki_dir("https://127.0.0.1:50051", "pki", &office)?
//!     .connect()
//!     .await?;
//! let mut results = client.subscribe(None);
//! while let Some(n) = results.next().await? {
//!     let outcome = n.outcome.unwrap_or_default();
//!     println!("{} {} hit={}", n.cursor, outcome.tcn, outcome.hit);
//!     client.ack(n.cursor).await?;
//! }
//! # Ok(()) }
//! ```

pub mod admin;
pub mod assessment;
pub mod booking_json;
pub mod config;
pub mod error;
pub mod follow;
mod probe;
pub mod retry;
pub mod stats;
pub mod submit;

pub use config::{Client, ClientConfig, DEFAULT_ENDPOINT, Role};
pub use error::{ClientError, code_name, describe_status, field_violations};
pub use follow::{CursorFile, Cursored, Follower};
pub use retry::RetryPolicy;
pub use submit::Submitted;
