//! The gRPC services, one file each. A handler is a plain struct over the shared
//! [`Gateway`] state, so tests can call it without a network. Each one is thin: it checks the
//! caller's role (the [`Principal`] set by [`crate::auth::principal::authenticate`]), hands
//! the request to the module that decides (`intake`, `rules`, `delivery`, `engines`), and
//! returns its answer. Every refusal is a [`GatewayError`], which becomes a gRPC status in one
//! place (`crate::error`).
//!
//! | service | file | callers |
//! |---|---|---|
//! | `SubmissionService` | [`submission`] | state bureaus |
//! | `FieldOfficeService` | [`field_office`] | ICE field offices |
//! | `LescService` | [`lesc`] | ICE's Law Enforcement Support Center |
//! | `ComplaintService` | [`complaints`] | CRCL's intake; reads also the admin and field offices (their area) |
//! | `AdminService` | [`admin`] | the admin (`ListRevoked`: matcher shards too) |
//! | `MatcherService` | [`matcher`] | the admin (`ListChanges`: shards too); at a shard process, gateways only |
//! | `CriminalHistoryService` | [`criminal_history`] | the admin |

pub mod admin;
pub mod complaints;
pub mod criminal_history;
pub mod field_office;
pub mod lesc;
pub mod matcher;
pub mod submission;

pub use admin::AdminApi;
pub use complaints::ComplaintApi;
pub use criminal_history::CriminalHistoryApi;
pub use field_office::FieldOfficeApi;
pub use lesc::LescApi;
pub use matcher::{MatcherApi, ShardedMatcherApi};
pub use submission::SubmissionApi;

use crate::auth::principal::{Principal, principal, serial};
use crate::delivery::{Disclosed, Recipient, Subscription};
use crate::error::GatewayError;
use crate::server::Gateway;
use crate::store::{DisclosureKind, StreamKey};
use tonic::{Request, Response, Status};

/// What every handler returns.
type Res<T> = Result<Response<T>, Status>;

/// The calling bureau's state, or PERMISSION_DENIED.
fn need_bureau<T>(req: &Request<T>) -> Result<String, GatewayError> {
    match principal(req)? {
        Principal::Bureau { state } => Ok(state),
        _ => Err(GatewayError::PermissionDenied(
            "this call needs a state bureau identity".into(),
        )),
    }
}

/// The calling field office's code, or PERMISSION_DENIED.
fn need_office<T>(req: &Request<T>) -> Result<String, GatewayError> {
    match principal(req)? {
        Principal::FieldOffice { office } => Ok(office),
        _ => Err(GatewayError::PermissionDenied(
            "this call needs a field office identity".into(),
        )),
    }
}

/// PERMISSION_DENIED unless the caller is ICE's Law Enforcement Support Center.
fn need_lesc<T>(req: &Request<T>) -> Result<(), GatewayError> {
    match principal(req)? {
        Principal::Lesc => Ok(()),
        _ => Err(GatewayError::PermissionDenied(
            "this call needs the LESC identity".into(),
        )),
    }
}

/// PERMISSION_DENIED unless the caller is the admin.
fn need_admin<T>(req: &Request<T>) -> Result<(), GatewayError> {
    match principal(req)? {
        Principal::Admin => Ok(()),
        _ => Err(GatewayError::PermissionDenied(
            "this call needs the admin identity".into(),
        )),
    }
}

/// PERMISSION_DENIED unless the caller is the admin or a matcher shard: for what shards follow
/// at their gateway (the revocation list, the gallery changes), and nothing else.
fn need_admin_or_shard<T>(req: &Request<T>) -> Result<(), GatewayError> {
    match principal(req)? {
        Principal::Admin | Principal::Matcher { .. } => Ok(()),
        _ => Err(GatewayError::PermissionDenied(
            "this call needs the admin identity or a matcher shard's".into(),
        )),
    }
}

/// PERMISSION_DENIED unless the caller is a gateway: all that a matcher shard process serves.
fn need_gateway<T>(req: &Request<T>) -> Result<(), GatewayError> {
    match principal(req)? {
        Principal::Gateway { .. } => Ok(()),
        other => Err(GatewayError::PermissionDenied(format!(
            "a matcher shard serves gateways only, not {}",
            other.spiffe_id()
        ))),
    }
}

/// Full RPC names, as the disclosure audit records them.
pub mod rpc {
    pub const GET_STATUS: &str = "interop.v1.SubmissionService/GetStatus";
    pub const STREAM_RESPONSES: &str = "interop.v1.SubmissionService/StreamResponses";
    pub const SUBSCRIBE: &str = "interop.v1.FieldOfficeService/Subscribe";
    pub const DECIDE: &str = "interop.v1.FieldOfficeService/Decide";
    pub const REVIEW_DETAINER: &str = "interop.v1.FieldOfficeService/ReviewDetainer";
    pub const NOTIFY_LESC: &str = "interop.v1.SubmissionService/NotifyLesc";
    pub const REPORT_CONVICTION: &str = "interop.v1.SubmissionService/ReportConviction";
    pub const RECORD_HOTLINE_CALL: &str = "interop.v1.LescService/RecordHotlineCall";
    pub const RECORD_REMOVAL: &str = "interop.v1.FieldOfficeService/RecordRemoval";
    pub const FILE_COMPLAINT: &str = "interop.v1.ComplaintService/FileComplaint";
    pub const ADVANCE_COMPLAINT: &str = "interop.v1.ComplaintService/AdvanceComplaint";
    pub const GET_COMPLAINT: &str = "interop.v1.ComplaintService/GetComplaint";
    pub const LIST_COMPLAINTS: &str = "interop.v1.ComplaintService/ListComplaints";
    pub const SEARCH: &str = "interop.v1.MatcherService/Search";
    pub const LIST_CHANGES: &str = "interop.v1.MatcherService/ListChanges";
    pub const CHECK: &str = "interop.v1.CriminalHistoryService/Check";
}

/// Records an admin's read of a gallery or a rap sheet in `store` before the answer leaves
/// (ids only: who, when, through which RPC, and the TCN the request named, if any); `None`
/// (a shard process, whose only caller is its gateway) records nothing. An answer whose record
/// cannot be written is not given.
async fn audit_admin_read(
    store: Option<&crate::store::DynStore>,
    who: &Recipient,
    kind: DisclosureKind,
    tcn: &str,
) -> Result<(), GatewayError> {
    let Some(store) = store else {
        return Ok(());
    };
    let d = who.disclosure(
        Disclosed {
            state: String::new(),
            tcn: tcn.to_string(),
            kind,
        },
        0,
    );
    store.record_disclosures(vec![d]).await?;
    Ok(())
}

/// Takes one of the caller's reads of case data (`what`: the RPC), or refuses with
/// RESOURCE_EXHAUSTED: see [`crate::auth::rate`].
fn limit_read<T>(gw: &Gateway, req: &Request<T>, what: &str) -> Result<(), GatewayError> {
    gw.read_rate.admit(&principal(req)?.spiffe_id(), what)
}

/// The caller as a recipient of results through `rpc`.
fn recipient<T>(req: &Request<T>, rpc: &'static str) -> Result<Recipient, GatewayError> {
    Ok(Recipient {
        principal: principal(req)?,
        serial: serial(req),
        rpc,
    })
}

/// Records one unary disclosure before the answer leaves: an answer whose audit record
/// cannot be written is not given.
async fn audit_unary(
    gw: &Gateway,
    who: &Recipient,
    state: &str,
    tcn: &str,
    kind: DisclosureKind,
) -> Result<(), GatewayError> {
    let d = who.disclosure(
        Disclosed {
            state: state.to_string(),
            tcn: tcn.to_string(),
            kind,
        },
        0,
    );
    gw.core.store.record_disclosures(vec![d]).await?;
    Ok(())
}

/// A stream of `stream` for `recipient` from cursor `after`, if the subscription bounds
/// admit one more (RESOURCE_EXHAUSTED otherwise).
fn subscription(
    gw: &Gateway,
    stream: StreamKey,
    after: u64,
    follow: bool,
    recipient: Recipient,
) -> Result<Subscription, GatewayError> {
    let slot = gw
        .subscription_limits
        .admit(&recipient.principal.spiffe_id())?;
    Ok(Subscription {
        store: gw.core.store.clone(),
        stream,
        after,
        follow,
        shutdown: gw.shutdown.clone(),
        recipient,
        revocations: gw.revocations.clone(),
        slot,
    })
}
