//! `LescService`, for ICE's Law Enforcement Support Center: `RecordHotlineCall` records a
//! person's call to the hotline printed on the detainer form (checked and routed in
//! [`crate::rules::lesc`]).

use super::{Res, audit_unary, need_lesc, recipient, rpc};
use crate::server::Gateway;
use crate::store::DisclosureKind;
use interop_proto::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response};

pub struct LescApi(pub Arc<Gateway>);

#[tonic::async_trait]
impl pb::lesc_service_server::LescService for LescApi {
    async fn record_hotline_call(
        &self,
        req: Request<pb::RecordHotlineCallRequest>,
    ) -> Res<pb::LescNotice> {
        need_lesc(&req)?;
        let who = recipient(&req, rpc::RECORD_HOTLINE_CALL)?;
        let r = req.into_inner();
        let notice = crate::rules::lesc::notify(
            &self.0,
            pb::LescSource::Hotline,
            &r.state,
            &r.tcn,
            &r.concerns,
            r.called_at,
            "called_at",
        )
        .await?;
        audit_unary(&self.0, &who, &r.state, &r.tcn, DisclosureKind::LescNotice).await?;
        Ok(Response::new(notice))
    }
}
