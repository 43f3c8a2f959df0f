//! `CriminalHistoryService` (admin only): the FBI criminal-history check of a set of prints
//! against the in-process stub, so the engine can be queried on its own. Each answer is
//! recorded in the disclosure audit first (kind `RapSheet`).

use super::{Res, audit_admin_read, need_admin, recipient, rpc};
use crate::convert;
use crate::engines::CriminalHistory;
use crate::error::GatewayError;
use crate::intake::validate::search_fingers;
use interop_proto::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response};

/// `CriminalHistoryService` over the in-process stub (admin role), its answers recorded in
/// `audit`'s disclosure audit.
pub struct CriminalHistoryApi {
    pub engine: Arc<dyn CriminalHistory>,
    pub audit: Option<crate::store::DynStore>,
}

#[tonic::async_trait]
impl pb::criminal_history_service_server::CriminalHistoryService for CriminalHistoryApi {
    async fn check(&self, req: Request<pb::CheckRequest>) -> Res<pb::CriminalHistoryResponse> {
        need_admin(&req)?;
        let who = recipient(&req, rpc::CHECK)?;
        let r = req.into_inner();
        let probe = search_fingers(&r.fingers)?;
        let rec = self
            .engine
            .check(probe)
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        let kind = crate::store::DisclosureKind::RapSheet;
        audit_admin_read(self.audit.as_ref(), &who, kind, &r.tcn).await?;
        Ok(Response::new(convert::criminal_history_pb(
            &r.tcn,
            rec.as_ref(),
        )))
    }
}
