//! The interoperability gateway: a mutual-TLS gRPC server that takes tenprint bookings from
//! state identification bureaus, checks them against the FBI criminal-history service and,
//! once a jurisdiction is activated, DHS IDENT, and delivers every identification to the ICE
//! field office covering the jurisdiction — and to the bureau only where its jurisdiction
//! receives results. The programs (`interop-gateway`, `interop-matcher`) are thin command
//! lines over this library (`gateway/cli`).
//!
//! # Layout: one booking through the folders
//!
//! 1. **[`auth`]** — the connection arrives on the bounded listener
//!    ([`server::listener`]); the TLS handshake verifies the client certificate against our CA
//!    ([`auth::tls`]), and every call's certificate becomes a [`auth::principal::Principal`]
//!    (bureau, field office or admin), refused if revoked ([`auth::revocation`]).
//! 2. **[`api`]** — `SubmissionService.Submit` ([`api::submission`]) checks the caller is a
//!    bureau and hands the booking on. One file per service; handlers only check roles and
//!    translate, and every refusal is an [`error::GatewayError`], which becomes a gRPC status
//!    in one place ([`error`]).
//! 3. **[`intake`]** — the booking is validated field by field ([`intake::validate`]),
//!    admitted (within the backlog's budget; it never waits for the pipeline), and durably
//!    accepted: the store's receipt is the bureau's answer.
//! 4. **[`store`]** — the durable log ([`store::Store`]; embedded [`store::RedbStore`], or
//!    [`store::NatsStore`] shared by replicas): receipts, pending work, the outbound streams
//!    and their cursors, counters, settings, the disclosure audit.
//! 5. **[`pipeline`]** — a worker takes the next receipted booking from the
//!    [`pipeline::backlog`] (the store's pending submissions, bureaus in turn) and consults the **[`engines`]** at once: the
//!    FBI check always, the IDENT search only if the jurisdiction is activated on the booking
//!    date (in process, or scattered to matcher shard processes).
//! 6. **[`rules`]** — the program's rules decide what the answers mean: routing and status
//!    determination ([`rules::policy`]), the monthly statistics and the quarterly review, and
//!    later the officers' acts on an identification ([`rules::enforcement`]: detainers with
//!    their hold time, removals).
//! 7. **[`store`] again** — one atomic completion appends the field office's notification
//!    and the bureau's responses, and moves the counters, exactly once.
//! 8. **[`delivery`]** — each subscriber (`FieldOfficeService.Subscribe`,
//!    `SubmissionService.StreamResponses`) reads its stream from the log at its own cursor,
//!    every delivery recorded in the disclosure audit before it leaves.
//!
//! [`server`] assembles it all ([`server::Gateway`]), recovers unfinished work at start, and
//! serves; [`server::launch`] runs a gateway from its settings. [`world`] is the synthetic
//! world the gateway serves (jurisdictions, field offices, gallery records — never the ground
//! truth), [`convert`] maps the wire contract to the domain, [`metrics`] is `/metrics`.

pub mod api;
pub mod auth;
pub mod convert;
pub mod delivery;
pub mod engines;
pub mod error;
pub mod intake;
pub mod metrics;
pub mod pipeline;
pub mod rules;
pub mod server;
pub mod store;
pub mod world;
