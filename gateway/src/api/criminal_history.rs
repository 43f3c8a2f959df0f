//! `CriminalHistoryService` (admin only): the FBI criminal-history check of a set of prints
//! against the in-process stub, so the engine can be queried on its own.

use super::{Res, need_admin};
use crate::convert;
use crate::engines::CriminalHistory;
use crate::error::GatewayError;
use crate::intake::validate::search_fingers;
use interop_proto::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response};

/// `CriminalHistoryService` over the in-process stub (admin role).
pub struct CriminalHistoryApi(pub Arc<dyn CriminalHistory>);

#[tonic::async_trait]
impl pb::criminal_history_service_server::CriminalHistoryService for CriminalHistoryApi {
    async fn check(&self, req: Request<pb::CheckRequest>) -> Res<pb::CriminalHistoryResponse> {
        need_admin(&req)?;
        let r = req.into_inner();
        let probe = search_fingers(&r.fingers)?;
        let rec = self
            .0
            .check(probe)
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        Ok(Response::new(convert::criminal_history_pb(
            &r.tcn,
            rec.as_ref(),
        )))
    }
}
