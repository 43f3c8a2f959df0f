//! What can go wrong around a call, and how a gateway's refusal reads.
//!
//! One error type for the crate, [`ClientError`]: a configuration the client cannot use, a
//! connection it cannot make, the gateway's answer, or a cursor file it cannot keep. The
//! gateway's answers stay [`tonic::Status`] inside it (and in every call's result) because a
//! caller decides by the gRPC code, and a refused booking carries its field violations as
//! `google.rpc.BadRequest` details; [`describe_status`] and [`field_violations`] turn those
//! into the sentences a person reads.

use std::path::PathBuf;
use tonic::{Code, Status};

/// What can go wrong before or around a call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A PKI directory, certificate file or option is unusable.
    #[error("{0}")]
    Config(String),
    /// No connection could be made within the retry policy.
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    /// The gateway answered with an error.
    #[error("{}", describe_status(.0))]
    Rpc(#[from] Status),
    /// A cursor state file could not be read or written.
    #[error("cursor state file {path}: {reason}")]
    State { path: PathBuf, reason: String },
}

impl ClientError {
    /// The gateway's status, when the error is an answer from it.
    pub fn status(&self) -> Option<&Status> {
        match self {
            ClientError::Rpc(s) => Some(s),
            _ => None,
        }
    }

    /// True when trying again later may succeed (no connection, gateway unavailable or
    /// shedding, deadline passed).
    pub fn is_unavailable(&self) -> bool {
        match self {
            ClientError::Connect { .. } => true,
            ClientError::Rpc(s) => matches!(
                s.code(),
                Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded
            ),
            _ => false,
        }
    }
}

/// One sentence for a gateway error: the code, the message, and every field violation the
/// gateway attached (`google.rpc.BadRequest`), e.g.
/// `INVALID_ARGUMENT: submission refused: 2 problems [tcn: ...; fingers[0].position: ...]`.
pub fn describe_status(s: &Status) -> String {
    let mut out = format!("{}: {}", code_name(s.code()), s.message());
    let violations = field_violations(s);
    if !violations.is_empty() {
        let list: Vec<String> = violations
            .iter()
            .map(|(f, d)| format!("{f}: {d}"))
            .collect();
        out.push_str(&format!(" [{}]", list.join("; ")));
    }
    out
}

/// The `(field, description)` pairs of a refusal's `google.rpc.BadRequest` details.
pub fn field_violations(s: &Status) -> Vec<(String, String)> {
    use tonic_types::StatusExt;
    s.get_details_bad_request()
        .map(|b| {
            b.field_violations
                .into_iter()
                .map(|v| (v.field, v.description))
                .collect()
        })
        .unwrap_or_default()
}

/// The canonical upper-case name of a gRPC code (`INVALID_ARGUMENT`).
pub fn code_name(c: Code) -> &'static str {
    match c {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
