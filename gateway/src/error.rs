//! The gateway's one error type, and the one place it becomes a gRPC status: no other module
//! builds a `tonic::Status`.
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

#[derive(Clone, Debug, thiserror::Error)]
pub enum GatewayError {
    /// Malformed, out-of-range or inconsistent input: every violation found.
    #[error("{}", summarize(.0))]
    Invalid(Vec<Violation>),
    /// No usable identity: no certificate identity, or a revoked certificate.
    #[error("{0}")]
    Unauthenticated(String),
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
    /// A stored record that cannot be read back (a corrupt or foreign record): nothing is
    /// answered from it, and the caller is told, never a panic.
    #[error("{0}")]
    DataLoss(String),
    #[error("{0}")]
    Internal(String),
    /// Another service's own refusal (a matcher shard's), passed on as it came.
    #[error("{}", .0.message())]
    Relayed(Status),
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
    /// The gRPC code this error becomes.
    pub fn code(&self) -> Code {
        match self {
            GatewayError::Invalid(_) => Code::InvalidArgument,
            GatewayError::Unauthenticated(_) => Code::Unauthenticated,
            GatewayError::PermissionDenied(_) => Code::PermissionDenied,
            GatewayError::NotFound(_) => Code::NotFound,
            GatewayError::AlreadyExists(_) => Code::AlreadyExists,
            GatewayError::OutOfRange(_) => Code::OutOfRange,
            GatewayError::FailedPrecondition(_) => Code::FailedPrecondition,
            GatewayError::Unavailable(_) => Code::Unavailable,
            GatewayError::ResourceExhausted(_) => Code::ResourceExhausted,
            GatewayError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            GatewayError::DataLoss(_) => Code::DataLoss,
            GatewayError::Internal(_) => Code::Internal,
            GatewayError::Relayed(s) => s.code(),
        }
    }

    /// The gRPC code name this error maps to (for metrics labels).
    pub fn code_name(&self) -> &'static str {
        interop_client::code_name(self.code())
    }

    pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        GatewayError::Invalid(vec![Violation::new(field, rule)])
    }

    /// The error a peer's answer with `code` means here, with `message`: how the gateway
    /// passes on what a matcher shard answered (ALREADY_EXISTS, NOT_FOUND, ...).
    pub fn with_code(code: Code, message: String) -> Self {
        match code {
            Code::InvalidArgument => GatewayError::invalid("request", message),
            Code::Unauthenticated => GatewayError::Unauthenticated(message),
            Code::PermissionDenied => GatewayError::PermissionDenied(message),
            Code::NotFound => GatewayError::NotFound(message),
            Code::AlreadyExists => GatewayError::AlreadyExists(message),
            Code::OutOfRange => GatewayError::OutOfRange(message),
            Code::FailedPrecondition => GatewayError::FailedPrecondition(message),
            Code::Unavailable => GatewayError::Unavailable(message),
            Code::ResourceExhausted => GatewayError::ResourceExhausted(message),
            Code::DeadlineExceeded => GatewayError::DeadlineExceeded(message),
            Code::DataLoss => GatewayError::DataLoss(message),
            _ => GatewayError::Internal(message),
        }
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
            StoreError::Corrupt(what) => GatewayError::DataLoss(format!(
                "a stored record cannot be read ({what}); nothing was answered from it"
            )),
        }
    }
}

/// What the matcher refused, as the status a caller can act on: a duplicate id
/// ALREADY_EXISTS, an id not enrolled NOT_FOUND, a search past its deadline
/// DEADLINE_EXCEEDED, a print it cannot use INVALID_ARGUMENT.
impl From<interop_matcher::MatchError> for GatewayError {
    fn from(e: interop_matcher::MatchError) -> Self {
        use interop_matcher::MatchError as E;
        match e {
            E::AlreadyEnrolled(_) => GatewayError::AlreadyExists(format!("subject_id: {e}")),
            E::NotEnrolled(_) => GatewayError::NotFound(format!("subject_id: {e}")),
            E::DeadlineExceeded => GatewayError::DeadlineExceeded(e.to_string()),
            E::EmptyProbe | E::Unsupported(_) | E::Gallery(_) | E::Calibration(_) => {
                GatewayError::invalid("fingers", e.to_string())
            }
        }
    }
}

/// Most field violations listed in an INVALID_ARGUMENT's `google.rpc.BadRequest` details.
pub const MAX_LISTED_VIOLATIONS: usize = 100;
/// Most bytes of field paths and rules listed there. The details travel base64-encoded in the
/// `grpc-status-details-bin` trailer, where stock clients allow 8–16 KB of metadata: a
/// submission wrong in ten thousand ways once made a 656 KB trailer, and a grpcio client saw
/// RESOURCE_EXHAUSTED instead of the refusal.
pub const MAX_LISTED_VIOLATION_BYTES: usize = 6 * 1024;

/// The violations listed in a refusal's details: the first ones, up to
/// [`MAX_LISTED_VIOLATIONS`] and [`MAX_LISTED_VIOLATION_BYTES`], then one entry on `request`
/// counting the rest, so a client always learns how many there were.
fn listed(violations: &[Violation]) -> ErrorDetails {
    let mut details = ErrorDetails::new();
    let mut bytes = 0;
    let mut shown = 0;
    for v in violations {
        bytes += v.field.len() + v.rule.len();
        if shown == MAX_LISTED_VIOLATIONS || bytes > MAX_LISTED_VIOLATION_BYTES {
            break;
        }
        details.add_bad_request_violation(v.field.clone(), v.rule.clone());
        shown += 1;
    }
    if shown < violations.len() {
        details.add_bad_request_violation(
            "request",
            format!(
                "{} more violations not listed ({} in all)",
                violations.len() - shown,
                violations.len()
            ),
        );
    }
    details
}

impl From<GatewayError> for Status {
    fn from(e: GatewayError) -> Status {
        let msg = e.to_string();
        match e {
            GatewayError::Invalid(violations) => {
                Status::with_error_details(Code::InvalidArgument, msg, listed(&violations))
            }
            GatewayError::Relayed(status) => status,
            other => Status::new(other.code(), msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_violations_is_listed_in_part_with_a_count_of_the_rest() {
        let many: Vec<Violation> = (0..10_200)
            .map(|i| {
                Violation::new(
                    format!("fingers[{}].minutiae[{}].angle_deg", i % 10, i / 40),
                    "must be 0..=359",
                )
            })
            .collect();
        let s = Status::from(GatewayError::Invalid(many));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("and 10195 more"), "{}", s.message());
        let listed = s.get_details_bad_request().expect("BadRequest details");
        let v = &listed.field_violations;
        assert!(v.len() <= MAX_LISTED_VIOLATIONS + 1, "{} listed", v.len());
        let last = v.last().unwrap();
        assert_eq!(last.field, "request");
        assert!(
            last.description.contains(&format!(
                "{} more violations not listed (10200 in all)",
                10_200 - (v.len() - 1)
            )),
            "{}",
            last.description
        );
        // What goes on the wire, base64 in the trailer, stays well under a 16 KB limit.
        assert!(
            s.details().len() * 4 / 3 < 10 * 1024,
            "{} bytes",
            s.details().len()
        );
    }

    #[test]
    fn a_few_violations_are_all_listed_without_a_count() {
        let few = vec![Violation::new("tcn", "empty"), Violation::new("ori", "bad")];
        let s = Status::from(GatewayError::Invalid(few));
        let v = s.get_details_bad_request().unwrap().field_violations;
        assert_eq!(
            v.iter().map(|v| v.field.as_str()).collect::<Vec<_>>(),
            ["tcn", "ori"]
        );
    }
}
