//! `FieldOfficeService`, for ICE field offices: `Subscribe` delivers the identifications of
//! the office's area of responsibility and the LESC notices about its detainers from a cursor
//! (each delivery audited first), `Ack` moves its durable cursor, and `Decide`,
//! `RecordRemoval` and `ReviewDetainer` record the officers' acts (checked in
//! [`crate::rules::enforcement`] and [`crate::rules::lesc`]).

use super::{Res, audit_unary, limit_read, need_office, recipient, rpc, subscription};
use crate::delivery::Disclosed;
use crate::error::GatewayError;
use crate::rules::{enforcement, lesc};
use crate::server::Gateway;
use crate::store::{DisclosureKind, StreamKey};
use interop_proto::v1 as pb;
use prost::Message;
use std::sync::Arc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

pub struct FieldOfficeApi(pub Arc<Gateway>);

#[tonic::async_trait]
impl pb::field_office_service_server::FieldOfficeService for FieldOfficeApi {
    type SubscribeStream = ReceiverStream<Result<pb::FieldOfficeNotification, Status>>;

    async fn subscribe(&self, req: Request<pb::SubscribeRequest>) -> Res<Self::SubscribeStream> {
        let office = need_office(&req)?;
        limit_read(&self.0, &req, "Subscribe")?;
        let who = recipient(&req, rpc::SUBSCRIBE)?;
        let r = req.into_inner();
        let key = StreamKey::Office(office);
        let after = match r.after_cursor {
            Some(c) => c,
            None => self
                .0
                .core
                .store
                .acked(key.clone())
                .await
                .map_err(GatewayError::from)?,
        };
        let sub = subscription(&self.0, key, after, r.follow, who)?;
        Ok(Response::new(crate::delivery::follow(
            self.0.core.metrics.subscription("field_office"),
            sub,
            |cursor, bytes| {
                let unreadable = || {
                    GatewayError::DataLoss(format!(
                        "stored notification at cursor {cursor} is unreadable"
                    ))
                };
                // An LESC notice or a complaint flag is stored as an OfficeLogEntry (fields
                // 100, 101), an identification as a bare IdentOutcome, which has neither.
                let entry = pb::OfficeLogEntry::decode(bytes).map_err(|_| unreadable())?;
                if let Some(flag) = entry.complaint_flag {
                    let disclosed = Disclosed {
                        state: flag.state.clone(),
                        tcn: flag.tcn.clone(),
                        kind: DisclosureKind::ComplaintFlag,
                    };
                    let n = pb::FieldOfficeNotification {
                        cursor,
                        complaint_flag: Some(flag),
                        ..Default::default()
                    };
                    return Ok((n, Some(disclosed)));
                }
                if let Some(notice) = entry.lesc_notice {
                    let disclosed = Disclosed {
                        state: notice.state.clone(),
                        tcn: notice.tcn.clone(),
                        kind: DisclosureKind::LescNotice,
                    };
                    let n = pb::FieldOfficeNotification {
                        cursor,
                        lesc_notice: Some(notice),
                        ..Default::default()
                    };
                    return Ok((n, Some(disclosed)));
                }
                let outcome = pb::IdentOutcome::decode(bytes).map_err(|_| unreadable())?;
                let disclosed = Disclosed {
                    state: outcome.ori.get(..2).unwrap_or_default().to_string(),
                    tcn: outcome.tcn.clone(),
                    kind: DisclosureKind::IdentOutcome,
                };
                Ok((
                    pb::FieldOfficeNotification {
                        cursor,
                        outcome: Some(outcome),
                        ..Default::default()
                    },
                    Some(disclosed),
                ))
            },
        )))
    }

    async fn ack(&self, req: Request<pb::AckRequest>) -> Res<pb::AckResponse> {
        let office = need_office(&req)?;
        let cursor = req.into_inner().cursor;
        let acked = self
            .0
            .core
            .store
            .ack(StreamKey::Office(office), cursor)
            .await
            .map_err(GatewayError::from)?;
        Ok(Response::new(pb::AckResponse {
            acked_cursor: acked,
        }))
    }

    async fn record_removal(&self, req: Request<pb::RecordRemovalRequest>) -> Res<pb::Removal> {
        let office = need_office(&req)?;
        let who = recipient(&req, rpc::RECORD_REMOVAL)?;
        let r = req.into_inner();
        let state = r.state.clone();
        let removal = enforcement::record_removal(&self.0, &office, r).await?;
        audit_unary(&self.0, &who, &state, &removal.tcn, DisclosureKind::Removal).await?;
        Ok(Response::new(removal))
    }

    async fn decide(&self, req: Request<pb::DecideRequest>) -> Res<pb::Decision> {
        let office = need_office(&req)?;
        let who = recipient(&req, rpc::DECIDE)?;
        let r = req.into_inner();
        let state = r.state.clone();
        let decision = enforcement::decide(&self.0, &office, r).await?;
        audit_unary(
            &self.0,
            &who,
            &state,
            &decision.tcn,
            DisclosureKind::Decision,
        )
        .await?;
        Ok(Response::new(decision))
    }

    async fn review_detainer(
        &self,
        req: Request<pb::ReviewDetainerRequest>,
    ) -> Res<pb::DetainerReview> {
        let office = need_office(&req)?;
        let who = recipient(&req, rpc::REVIEW_DETAINER)?;
        let r = req.into_inner();
        let state = r.state.clone();
        let review = lesc::review(&self.0, &office, r).await?;
        audit_unary(
            &self.0,
            &who,
            &state,
            &review.tcn,
            DisclosureKind::DetainerReview,
        )
        .await?;
        Ok(Response::new(review))
    }
}
