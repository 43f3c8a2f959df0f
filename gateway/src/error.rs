//! The gateway's one error type, and the one place it becomes a gRPC status.
//!
//! Messages name the field and the rule, never a payload value that could carry biometric
//! or biographic data, and never another bureau's or jurisdiction's data.

use crate::store::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// One refused field: the path in the request and the rule it broke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub rule: String,
}

impl Violation {
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Violation {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Malformed, out-of-range or inconsistent input: every violation found.
    #[error("{}", summarize(.0))]
    Invalid(Vec<Violation>),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    Internal(String),
}

fn summarize(v: &[Violation]) -> String {
    let mut parts: Vec<String> = v
        .iter()
        .take(5)
        .map(|v| format!("{}: {}", v.field, v.rule))
        .collect();
    if v.len() > 5 {
        parts.push(format!("and {} more", v.len() - 5));
    }
    parts.join("; ")
}

impl GatewayError {
    /// The gRPC code name this error maps to (for metrics labels).
    pub fn code_name(&self) -> &'static str {
        match self {
            GatewayError::Invalid(_) => "INVALID_ARGUMENT",
            GatewayError::PermissionDenied(_) => "PERMISSION_DENIED",
            GatewayError::NotFound(_) => "NOT_FOUND",
            GatewayError::AlreadyExists(_) => "ALREADY_EXISTS",
            GatewayError::OutOfRange(_) => "OUT_OF_RANGE",
            GatewayError::FailedPrecondition(_) => "FAILED_PRECONDITION",
            GatewayError::Unavailable(_) => "UNAVAILABLE",
            GatewayError::ResourceExhausted(_) => "RESOURCE_EXHAUSTED",
            GatewayError::DeadlineExceeded(_) => "DEADLINE_EXCEEDED",
            GatewayError::Internal(_) => "INTERNAL",
        }
    }

    pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        GatewayError::Invalid(vec![Violation::new(field, rule)])
    }
}

impl From<StoreError> for GatewayError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => {
                GatewayError::AlreadyExists("tcn: already used for a different submission".into())
            }
            StoreError::AckBeyondHead { cursor, head } => GatewayError::OutOfRange(format!(
                "cursor: {cursor} is beyond the last delivered cursor {head}"
            )),
            StoreError::Unavailable(m) => {
                GatewayError::Unavailable(format!("durable store unavailable, not accepted: {m}"))
            }
            StoreError::Closed => GatewayError::Unavailable("gateway is shutting down".into()),
        }
    }
}

impl From<GatewayError> for Status {
    fn from(e: GatewayError) -> Status {
        let msg = e.to_string();
        match e {
            GatewayError::Invalid(violations) => {
                let mut details = ErrorDetails::new();
                for v in &violations {
                    details.add_bad_request_violation(v.field.clone(), v.rule.clone());
                }
                Status::with_error_details(Code::InvalidArgument, msg, details)
            }
            GatewayError::PermissionDenied(_) => Status::permission_denied(msg),
            GatewayError::NotFound(_) => Status::not_found(msg),
            GatewayError::AlreadyExists(_) => Status::already_exists(msg),
            GatewayError::OutOfRange(_) => Status::out_of_range(msg),
            GatewayError::FailedPrecondition(_) => Status::failed_precondition(msg),
            GatewayError::Unavailable(_) => Status::unavailable(msg),
            GatewayError::ResourceExhausted(_) => Status::resource_exhausted(msg),
            GatewayError::DeadlineExceeded(_) => Status::deadline_exceeded(msg),
            GatewayError::Internal(_) => Status::internal(msg),
        }
    }
}
