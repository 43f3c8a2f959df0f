//! `SubmissionService`, for state identification bureaus: `Submit` and `SubmitStream` hand
//! each booking to [`crate::intake`] and answer its receipt; `GetStatus` and
//! `StreamResponses` read back what the gateway holds for the bureau, each delivery recorded
//! in the disclosure audit first.

use super::{Res, audit_unary, limit_read, need_bureau, recipient, rpc, subscription};
use crate::delivery::Disclosed;
use crate::error::GatewayError;
use crate::intake::{self, validate};
use crate::server::Gateway;
use crate::store::{DisclosureKind, StreamKey, SubmissionKey};
use interop_proto::v1 as pb;
use prost::Message;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Submissions of one `SubmitStream` in flight at once (receipts still come back in order).
const STREAM_WINDOW: usize = 64;

pub struct SubmissionApi(pub Arc<Gateway>);

#[tonic::async_trait]
impl pb::submission_service_server::SubmissionService for SubmissionApi {
    async fn submit(&self, req: Request<pb::Submission>) -> Res<pb::Receipt> {
        let state = need_bureau(&req)?;
        Ok(Response::new(
            intake::submit(&self.0, &state, req.into_inner()).await?,
        ))
    }

    type SubmitStreamStream = ReceiverStream<Result<pb::SubmitStreamResponse, Status>>;

    async fn submit_stream(
        &self,
        req: Request<Streaming<pb::Submission>>,
    ) -> Res<Self::SubmitStreamStream> {
        let state = need_bureau(&req)?;
        let serial = crate::auth::principal::serial(&req);
        let mut inbound = req.into_inner();
        let gw = self.0.clone();
        let revocations = gw.revocations.clone();
        let (out_tx, out_rx) = mpsc::channel(STREAM_WINDOW);
        // Submissions are processed concurrently (so they share group commits) while their
        // answers are sent in request order: handles queue up in a bounded channel, and so
        // does the end of the stream, so an error or a shutdown never overtakes answers owed.
        enum Next {
            Answer(tokio::task::JoinHandle<pb::SubmitStreamResponse>),
            End(Status),
        }
        let (h_tx, mut h_rx) = mpsc::channel::<Next>(STREAM_WINDOW);
        let mut shutdown = gw.shutdown.clone();
        tokio::spawn(async move {
            let mut index = 0u64;
            loop {
                let msg = tokio::select! {
                    m = inbound.message() => m,
                    // Stop reading at shutdown: what was read is answered, then the stream
                    // ends UNAVAILABLE so the client re-sends the rest to the next gateway.
                    _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                        let end = GatewayError::Unavailable(
                            "the gateway is shutting down: submissions after the last answer \
                             were not received; send them again"
                                .into(),
                        );
                        let _ = h_tx.send(Next::End(end.into())).await;
                        return;
                    }
                };
                // A certificate revoked mid-stream submits nothing more: what was read before
                // is answered, then the stream ends UNAUTHENTICATED.
                if let Some(refusal) = revocations.refusal(&serial, true) {
                    let _ = h_tx.send(Next::End(refusal.into())).await;
                    return;
                }
                match msg {
                    Ok(Some(sub)) => {
                        let gw = gw.clone();
                        let state = state.clone();
                        let i = index;
                        let h = tokio::spawn(async move {
                            let tcn = sub.tcn.clone();
                            let result = match intake::submit(&gw, &state, sub).await {
                                Ok(r) => pb::submit_stream_response::Result::Receipt(r),
                                Err(e) => {
                                    let s: Status = e.into();
                                    pb::submit_stream_response::Result::Error(pb::SubmitError {
                                        tcn,
                                        code: s.code() as i32,
                                        message: s.message().to_string(),
                                    })
                                }
                            };
                            pb::SubmitStreamResponse {
                                index: i,
                                result: Some(result),
                            }
                        });
                        if h_tx.send(Next::Answer(h)).await.is_err() {
                            return;
                        }
                        index += 1;
                    }
                    Ok(None) => return,
                    Err(status) => {
                        let _ = h_tx.send(Next::End(status)).await;
                        return;
                    }
                }
            }
        });
        tokio::spawn(async move {
            while let Some(next) = h_rx.recv().await {
                let item = match next {
                    Next::Answer(h) => match h.await {
                        Ok(r) => Ok(r),
                        Err(_) => return,
                    },
                    Next::End(status) => Err(status),
                };
                let end = item.is_err();
                if out_tx.send(item).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }

    async fn get_status(&self, req: Request<pb::GetStatusRequest>) -> Res<pb::SubmissionStatus> {
        let state = need_bureau(&req)?;
        limit_read(&self.0, &req, "GetStatus")?;
        let who = recipient(&req, rpc::GET_STATUS)?;
        let tcn = req.into_inner().tcn;
        if !validate::tcn_ok(&tcn) {
            return Err(GatewayError::invalid(
                "tcn",
                "must be 8 to 40 characters of A-Z, 0-9 and '-'",
            )
            .into());
        }
        let key = SubmissionKey {
            bureau: state.clone(),
            tcn: tcn.clone(),
        };
        // TCNs are scoped to the calling bureau, so another bureau's TCN is simply absent.
        let s = self
            .0
            .core
            .store
            .submission(key)
            .await
            .map_err(GatewayError::from)?
            .ok_or_else(|| {
                GatewayError::NotFound("tcn: no submission with this TCN from your bureau".into())
            })?;
        audit_unary(&self.0, &who, &state, &tcn, DisclosureKind::Status).await?;
        Ok(Response::new(pb::SubmissionStatus {
            receipt: Some(intake::receipt(&tcn, &s.receipt, false)),
            tcn,
            stage: if s.completed {
                pb::Stage::Completed
            } else {
                pb::Stage::Received
            } as i32,
        }))
    }

    async fn acknowledge_detainer_copy(
        &self,
        req: Request<pb::AcknowledgeDetainerCopyRequest>,
    ) -> Res<pb::DetainerCopyGiven> {
        let state = need_bureau(&req)?;
        let given =
            crate::rules::enforcement::acknowledge_copy(&self.0, &state, req.into_inner()).await?;
        tracing::debug!(tcn = %given.tcn, "detainer copy acknowledged");
        Ok(Response::new(given))
    }

    async fn get_response_head(
        &self,
        req: Request<pb::GetResponseHeadRequest>,
    ) -> Res<pb::ResponseHead> {
        let state = need_bureau(&req)?;
        limit_read(&self.0, &req, "GetResponseHead")?;
        let cursor = *self
            .0
            .core
            .store
            .watch_head(&StreamKey::Bureau(state))
            .borrow();
        Ok(Response::new(pb::ResponseHead { cursor }))
    }

    async fn notify_lesc(&self, req: Request<pb::NotifyLescRequest>) -> Res<pb::LescNotice> {
        let state = need_bureau(&req)?;
        let who = recipient(&req, rpc::NOTIFY_LESC)?;
        let r = req.into_inner();
        let notice = crate::rules::lesc::notify(
            &self.0,
            pb::LescSource::Jail,
            &state,
            &r.tcn,
            &r.concerns,
            r.noticed_at,
            "noticed_at",
        )
        .await?;
        audit_unary(&self.0, &who, &state, &r.tcn, DisclosureKind::LescNotice).await?;
        Ok(Response::new(notice))
    }

    async fn report_conviction(
        &self,
        req: Request<pb::ReportConvictionRequest>,
    ) -> Res<pb::DetainerOperative> {
        let state = need_bureau(&req)?;
        let who = recipient(&req, rpc::REPORT_CONVICTION)?;
        let r = req.into_inner();
        let tcn = r.tcn.clone();
        let operative = crate::rules::enforcement::report_conviction(&self.0, &state, r).await?;
        audit_unary(&self.0, &who, &state, &tcn, DisclosureKind::Detainer).await?;
        Ok(Response::new(operative))
    }

    type StreamResponsesStream = ReceiverStream<Result<pb::BureauResponse, Status>>;

    async fn stream_responses(
        &self,
        req: Request<pb::StreamResponsesRequest>,
    ) -> Res<Self::StreamResponsesStream> {
        let state = need_bureau(&req)?;
        limit_read(&self.0, &req, "StreamResponses")?;
        let who = recipient(&req, rpc::STREAM_RESPONSES)?;
        let r = req.into_inner();
        let sub = subscription(
            &self.0,
            StreamKey::Bureau(state),
            r.after_cursor,
            r.follow,
            who,
        )?;
        Ok(Response::new(crate::delivery::follow(
            self.0.core.metrics.subscription("bureau"),
            sub,
            |cursor, bytes| {
                let mut m = pb::BureauResponse::decode(bytes).map_err(|_| {
                    GatewayError::DataLoss(format!(
                        "stored response at cursor {cursor} is unreadable"
                    ))
                })?;
                m.cursor = cursor;
                use pb::bureau_response::Body;
                let kind = match &m.body {
                    Some(Body::CriminalHistory(_)) => Some(DisclosureKind::CriminalHistory),
                    Some(Body::Immigration(_)) => Some(DisclosureKind::Immigration),
                    Some(Body::Detainer(_)) => Some(DisclosureKind::Detainer),
                    Some(Body::DetainerLifted(_)) => Some(DisclosureKind::DetainerReview),
                    Some(Body::DetainerOperative(_)) => Some(DisclosureKind::Detainer),
                    // Policy, not case data: nothing of a submission is disclosed.
                    Some(Body::ActivationNotice(_)) => None,
                    None => None,
                };
                // The state is filled in by `follow`: a bureau stream holds only that
                // bureau's own submissions.
                let disclosed = kind.map(|kind| Disclosed {
                    state: String::new(),
                    tcn: m.tcn.clone(),
                    kind,
                });
                Ok((m, disclosed))
            },
        )))
    }
}
