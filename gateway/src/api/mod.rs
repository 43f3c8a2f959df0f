//! The gRPC handlers. Each is a plain struct over the shared [`Gateway`] state, so tests can
//! call them without a network; the principal comes from the request extensions (set by
//! [`crate::auth::principal::authenticate`]) and every error goes through [`GatewayError`].

use crate::auth::principal::{Principal, principal};
use crate::convert;
use crate::delivery::{Disclosed, Recipient, Subscription};
use crate::engines::CriminalHistory;
use crate::error::GatewayError;
use crate::intake::validate;
use crate::pipeline::Job;
use crate::rules::policy::{JurisdictionPolicy, PolicyView, StatePolicy};
use crate::server::Gateway;
use crate::store::{
    Accepted, DisclosureFilter, DisclosureKind, ReceiptRecord, StreamKey, SubmissionKey,
};
use interop_matcher::Matcher;
use interop_proto::v1 as pb;
use prost::Message;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Submissions of one `SubmitStream` in flight at once (receipts still come back in order).
const STREAM_WINDOW: usize = 64;

type Res<T> = Result<Response<T>, Status>;

fn need_bureau<T>(req: &Request<T>) -> Result<String, Status> {
    match principal(req)? {
        Principal::Bureau { state } => Ok(state),
        _ => Err(Status::permission_denied(
            "this call needs a state bureau identity",
        )),
    }
}

fn need_office<T>(req: &Request<T>) -> Result<String, Status> {
    match principal(req)? {
        Principal::FieldOffice { office } => Ok(office),
        _ => Err(Status::permission_denied(
            "this call needs a field office identity",
        )),
    }
}

pub(crate) fn need_admin<T>(req: &Request<T>) -> Result<(), Status> {
    match principal(req)? {
        Principal::Admin => Ok(()),
        _ => Err(Status::permission_denied(
            "this call needs the admin identity",
        )),
    }
}

/// Full RPC names, as the disclosure audit records them.
pub mod rpc {
    pub const GET_STATUS: &str = "interop.v1.SubmissionService/GetStatus";
    pub const STREAM_RESPONSES: &str = "interop.v1.SubmissionService/StreamResponses";
    pub const SUBSCRIBE: &str = "interop.v1.FieldOfficeService/Subscribe";
    pub const ISSUE_DETAINER: &str = "interop.v1.FieldOfficeService/IssueDetainer";
    pub const RECORD_REMOVAL: &str = "interop.v1.FieldOfficeService/RecordRemoval";
}

/// The caller as a recipient of results through `rpc`.
#[allow(clippy::result_large_err)]
fn recipient<T>(req: &Request<T>, rpc: &'static str) -> Result<Recipient, Status> {
    Ok(Recipient {
        principal: principal(req)?,
        serial: crate::auth::principal::serial(req),
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

fn receipt(tcn: &str, r: &ReceiptRecord, duplicate: bool) -> pb::Receipt {
    pb::Receipt {
        tcn: tcn.to_string(),
        receipt_id: r.receipt_id.clone(),
        accepted_at: Some(convert::timestamp_ms(r.accepted_at_ms)),
        duplicate,
    }
}

/// Validate → admit → durable accept → hand to the pipeline. Shared by both submit calls.
pub async fn submit_one(
    gw: &Gateway,
    state: &str,
    sub: pb::Submission,
) -> Result<pb::Receipt, GatewayError> {
    let started = std::time::Instant::now();
    let result = admit(gw, state, sub).await;
    let m = &gw.core.metrics;
    match &result {
        Ok(r) if r.duplicate => m.inc("interop_duplicates_total", crate::metrics::state(state)),
        Ok(_) => {
            m.inc("interop_receipts_total", crate::metrics::state(state));
            m.observe("receipt", started.elapsed());
        }
        Err(e) => {
            if matches!(e, GatewayError::ResourceExhausted(_)) {
                m.inc("interop_shed_total", String::new());
            }
            m.inc(
                "interop_refused_total",
                format!(
                    "{},code=\"{}\"",
                    crate::metrics::state(state),
                    e.code_name()
                ),
            );
        }
    }
    result
}

async fn admit(
    gw: &Gateway,
    state: &str,
    sub: pb::Submission,
) -> Result<pb::Receipt, GatewayError> {
    let sub = validate::expand_minutiae_record(sub)?;
    let valid = validate::submission(state, &gw.core.policy, &sub, chrono::Utc::now())?;
    // Admission control before anything is stored: a bureau past its share, or a full
    // pipeline, is refused fast.
    let share = gw.per_bureau_share();
    let Some(slot) = gw.bureau_shares.take(state, share) else {
        return Err(GatewayError::ResourceExhausted(format!(
            "bureau {state} already has {share} submissions waiting for processing (its share \
             of the pipeline); retry with backoff"
        )));
    };
    let permit = match tokio::time::timeout(gw.options().admission_wait, gw.jobs.reserve()).await {
        Ok(Ok(p)) => p,
        Ok(Err(_)) => return Err(GatewayError::Unavailable("gateway is shutting down".into())),
        Err(_) => {
            return Err(GatewayError::ResourceExhausted(
                "the pipeline is full; retry with backoff".into(),
            ));
        }
    };
    let key = SubmissionKey {
        bureau: state.to_string(),
        tcn: sub.tcn.clone(),
    };
    let payload = sub.encode_to_vec();
    match gw
        .core
        .store
        .accept(key.clone(), payload, convert::now_ms())
        .await?
    {
        Accepted::New(r) => {
            tracing::info!(bureau = %state, tcn = %sub.tcn, receipt = %r.receipt_id, fingers = sub.fingers.len(), "accepted");
            let out = receipt(&sub.tcn, &r, false);
            permit.send(Job {
                slot: Some(slot),
                accepted_ms: r.accepted_at_ms,
                key,
                submission: sub,
                valid,
            });
            Ok(out)
        }
        Accepted::Duplicate(r) => {
            tracing::info!(bureau = %state, tcn = %sub.tcn, receipt = %r.receipt_id, "repeat of a received submission");
            Ok(receipt(&sub.tcn, &r, true))
        }
    }
}

pub struct SubmissionApi(pub Arc<Gateway>);

#[tonic::async_trait]
impl pb::submission_service_server::SubmissionService for SubmissionApi {
    async fn submit(&self, req: Request<pb::Submission>) -> Res<pb::Receipt> {
        let state = need_bureau(&req)?;
        Ok(Response::new(
            submit_one(&self.0, &state, req.into_inner()).await?,
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
                        let _ = h_tx
                            .send(Next::End(Status::unavailable(
                                "the gateway is shutting down: submissions after the last \
                                 answer were not received; send them again",
                            )))
                            .await;
                        return;
                    }
                };
                // A certificate revoked mid-stream submits nothing more: what was read before
                // is answered, then the stream ends UNAUTHENTICATED.
                if let Some(why) = revocations.reason(&serial) {
                    let msg = format!(
                        "client certificate serial {serial} has been revoked: {why}; stream closed"
                    );
                    let _ = h_tx.send(Next::End(Status::unauthenticated(msg))).await;
                    return;
                }
                match msg {
                    Ok(Some(sub)) => {
                        let gw = gw.clone();
                        let state = state.clone();
                        let i = index;
                        let h = tokio::spawn(async move {
                            let tcn = sub.tcn.clone();
                            let result = match submit_one(&gw, &state, sub).await {
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
            receipt: Some(receipt(&tcn, &s.receipt, false)),
            tcn,
            stage: if s.completed {
                pb::Stage::Completed
            } else {
                pb::Stage::Received
            } as i32,
        }))
    }

    type StreamResponsesStream = ReceiverStream<Result<pb::BureauResponse, Status>>;

    async fn stream_responses(
        &self,
        req: Request<pb::StreamResponsesRequest>,
    ) -> Res<Self::StreamResponsesStream> {
        let state = need_bureau(&req)?;
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
                let mut m = pb::BureauResponse::decode(bytes)
                    .map_err(|_| Status::internal("stored response is unreadable"))?;
                m.cursor = cursor;
                use pb::bureau_response::Body;
                let kind = match &m.body {
                    Some(Body::CriminalHistory(_)) => Some(DisclosureKind::CriminalHistory),
                    Some(Body::Immigration(_)) => Some(DisclosureKind::Immigration),
                    Some(Body::Detainer(_)) => Some(DisclosureKind::Detainer),
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

pub struct FieldOfficeApi(pub Arc<Gateway>);

#[tonic::async_trait]
impl pb::field_office_service_server::FieldOfficeService for FieldOfficeApi {
    type SubscribeStream = ReceiverStream<Result<pb::FieldOfficeNotification, Status>>;

    async fn subscribe(&self, req: Request<pb::SubscribeRequest>) -> Res<Self::SubscribeStream> {
        let office = need_office(&req)?;
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
                let outcome = pb::IdentOutcome::decode(bytes)
                    .map_err(|_| Status::internal("stored notification is unreadable"))?;
                let disclosed = Disclosed {
                    state: outcome.ori.get(..2).unwrap_or_default().to_string(),
                    tcn: outcome.tcn.clone(),
                    kind: DisclosureKind::IdentOutcome,
                };
                Ok((
                    pb::FieldOfficeNotification {
                        cursor,
                        outcome: Some(outcome),
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
        let removal = record_removal(&self.0, &office, r).await?;
        audit_unary(&self.0, &who, &state, &removal.tcn, DisclosureKind::Removal).await?;
        Ok(Response::new(removal))
    }

    async fn issue_detainer(&self, req: Request<pb::IssueDetainerRequest>) -> Res<pb::Detainer> {
        let office = need_office(&req)?;
        let who = recipient(&req, rpc::ISSUE_DETAINER)?;
        let r = req.into_inner();
        let state = r.state.clone();
        let detainer = issue_detainer(&self.0, &office, r).await?;
        audit_unary(
            &self.0,
            &who,
            &state,
            &detainer.tcn,
            DisclosureKind::Detainer,
        )
        .await?;
        Ok(Response::new(detainer))
    }
}

pub struct AdminApi(pub Arc<Gateway>);

/// Disclosures per `ListDisclosures` page unless the caller asks for another size.
const DEFAULT_DISCLOSURE_PAGE: usize = 100;
/// The most one page holds, whatever the caller asks.
const MAX_DISCLOSURE_PAGE: usize = 1000;

/// Longest revocation reason kept.
const MAX_REVOCATION_REASON: usize = 200;

fn revoked_pb(r: &crate::auth::revocation::Revoked) -> pb::RevokedCertificate {
    pb::RevokedCertificate {
        serial: r.serial.clone(),
        reason: r.reason.clone(),
        revoked_at: Some(convert::timestamp_ms(r.revoked_at_ms)),
    }
}

fn disclosure_kind_pb(k: DisclosureKind) -> pb::DisclosureKind {
    match k {
        DisclosureKind::CriminalHistory => pb::DisclosureKind::CriminalHistory,
        DisclosureKind::Immigration => pb::DisclosureKind::Immigration,
        DisclosureKind::Detainer => pb::DisclosureKind::Detainer,
        DisclosureKind::IdentOutcome => pb::DisclosureKind::IdentOutcome,
        DisclosureKind::Status => pb::DisclosureKind::Status,
        DisclosureKind::Removal => pb::DisclosureKind::Removal,
    }
}

fn policy_pb(v: &PolicyView) -> pb::JurisdictionPolicy {
    pb::JurisdictionPolicy {
        jurisdiction_id: v.jurisdiction.id.clone(),
        name: v.jurisdiction.name.clone(),
        state: v.jurisdiction.state.clone(),
        field_office: v.jurisdiction.field_office.clone(),
        activated_on: v
            .policy
            .activated_on
            .map(|d| d.to_string())
            .unwrap_or_default(),
        receives_results: v.policy.receives_results,
        can_receive_electronically: v.state.can_receive_electronically,
        state_opted_out: v.state.opted_out,
        effective_receives_results: v.effective_receives_results(),
    }
}

impl AdminApi {
    fn view(&self, id: &str) -> Result<PolicyView, GatewayError> {
        self.0.core.policy.view(id).ok_or_else(|| {
            GatewayError::NotFound(format!("jurisdiction_id: unknown jurisdiction {id:?}"))
        })
    }
}

#[tonic::async_trait]
impl pb::admin_service_server::AdminService for AdminApi {
    async fn get_policy(&self, req: Request<pb::GetPolicyRequest>) -> Res<pb::JurisdictionPolicy> {
        need_admin(&req)?;
        Ok(Response::new(policy_pb(
            &self.view(&req.into_inner().jurisdiction_id)?,
        )))
    }

    async fn set_policy(&self, req: Request<pb::SetPolicyRequest>) -> Res<pb::JurisdictionPolicy> {
        need_admin(&req)?;
        let r = req.into_inner();
        let _guard = self.0.admin_lock.lock().await;
        let cur = self.view(&r.jurisdiction_id)?;
        let activated_on = match r.activated_on.as_deref() {
            None => cur.policy.activated_on,
            Some("") => None,
            Some(s) => Some(s.parse().map_err(|_| {
                GatewayError::invalid(
                    "activated_on",
                    "must be a date YYYY-MM-DD, or empty to deactivate",
                )
            })?),
        };
        let new = JurisdictionPolicy {
            activated_on,
            receives_results: r.receives_results.unwrap_or(cur.policy.receives_results),
        };
        // If the state allows it, the jurisdiction's electronic capability is the state's.
        if let Some(elec) = r.can_receive_electronically {
            let sp = StatePolicy {
                can_receive_electronically: elec,
                ..cur.state.clone()
            };
            self.0.persist_state(&cur.jurisdiction.state, &sp).await?;
        }
        self.0
            .persist_jurisdiction(&r.jurisdiction_id, &new)
            .await?;
        tracing::info!(jurisdiction = %r.jurisdiction_id, "policy changed");
        Ok(Response::new(policy_pb(&self.view(&r.jurisdiction_id)?)))
    }

    async fn set_state_policy(
        &self,
        req: Request<pb::SetStatePolicyRequest>,
    ) -> Res<pb::StatePolicy> {
        need_admin(&req)?;
        let r = req.into_inner();
        let _guard = self.0.admin_lock.lock().await;
        let cur =
            self.0.core.policy.state_policy(&r.state).ok_or_else(|| {
                GatewayError::NotFound(format!("state: unknown state {:?}", r.state))
            })?;
        let new = StatePolicy {
            opted_out: r.opted_out,
            ..cur
        };
        self.0.persist_state(&r.state, &new).await?;
        tracing::info!(state = %r.state, opted_out = r.opted_out, "state policy changed");
        Ok(Response::new(pb::StatePolicy {
            state: r.state,
            opted_out: new.opted_out,
        }))
    }

    async fn list_jurisdictions(
        &self,
        req: Request<pb::ListJurisdictionsRequest>,
    ) -> Res<pb::ListJurisdictionsResponse> {
        need_admin(&req)?;
        let state = req.into_inner().state;
        let policy = &self.0.core.policy;
        let jurisdictions = policy
            .jurisdictions()
            .filter(|j| state.is_empty() || j.state == state)
            .filter_map(|j| policy.view(&j.id))
            .map(|v| policy_pb(&v))
            .collect();
        Ok(Response::new(pb::ListJurisdictionsResponse {
            jurisdictions,
        }))
    }

    async fn list_field_offices(
        &self,
        req: Request<pb::ListFieldOfficesRequest>,
    ) -> Res<pb::ListFieldOfficesResponse> {
        need_admin(&req)?;
        let field_offices = self
            .0
            .world
            .field_offices
            .iter()
            .map(|o| {
                let covered: Vec<_> = self
                    .0
                    .world
                    .jurisdictions
                    .iter()
                    .filter(|j| j.field_office == o.code)
                    .collect();
                let mut states: Vec<String> = covered.iter().map(|j| j.state.clone()).collect();
                states.sort();
                states.dedup();
                pb::FieldOffice {
                    code: o.code.clone(),
                    name: o.name.clone(),
                    states,
                    jurisdictions: covered.len() as u32,
                }
            })
            .collect();
        Ok(Response::new(pb::ListFieldOfficesResponse {
            field_offices,
        }))
    }

    async fn get_counters(&self, req: Request<pb::GetCountersRequest>) -> Res<pb::Counters> {
        need_admin(&req)?;
        let values = self
            .0
            .core
            .store
            .counters()
            .await
            .map_err(GatewayError::from)?
            .into_iter()
            // Monthly statistics live under `m/...`: GetMonthlyStats reports them.
            .filter(|(k, _)| !k.contains('/'))
            .collect();
        Ok(Response::new(pb::Counters { values }))
    }

    async fn quarterly_review(
        &self,
        req: Request<pb::QuarterlyReviewRequest>,
    ) -> Res<pb::OutlierReview> {
        need_admin(&req)?;
        let r = req.into_inner();
        let months = crate::rules::statistics::period(&r.quarter, &r.from_month, &r.to_month)
            .map_err(|(field, rule)| GatewayError::invalid(field, rule))?;
        let mut counters = std::collections::BTreeMap::new();
        for m in &months {
            counters.extend(
                self.0
                    .core
                    .store
                    .counters_with_prefix(format!("m/{m}/"))
                    .await
                    .map_err(GatewayError::from)?,
            );
        }
        let figures = crate::rules::statistics::review_figures(&counters);
        let mut review = crate::rules::review::review(&self.0.core.policy, &figures);
        review.from_month = months.first().cloned().unwrap_or_default();
        review.to_month = months.last().cloned().unwrap_or_default();
        Ok(Response::new(review))
    }

    async fn list_disclosures(
        &self,
        req: Request<pb::ListDisclosuresRequest>,
    ) -> Res<pb::ListDisclosuresResponse> {
        need_admin(&req)?;
        let r = req.into_inner();
        let mut violations = vec![];
        if !r.tcn.is_empty() && !validate::tcn_ok(&r.tcn) {
            violations.push(crate::error::Violation::new(
                "tcn",
                "must be empty or 8 to 40 characters of A-Z, 0-9 and '-'",
            ));
        }
        if !r.recipient.is_empty() && Principal::from_spiffe(&r.recipient).is_none() {
            violations.push(crate::error::Violation::new(
                "recipient",
                "must be empty or a SPIFFE id such as spiffe://interop.local/bureau/TX",
            ));
        }
        let after = match r.page_token.as_str() {
            "" => Some(0),
            t => t.parse::<u64>().ok(),
        };
        if after.is_none() {
            violations.push(crate::error::Violation::new(
                "page_token",
                "must be empty or a next_page_token from a previous response",
            ));
        }
        if !violations.is_empty() {
            return Err(GatewayError::Invalid(violations).into());
        }
        // AIP-158: an absent page size gets the default, a too large one is coerced.
        let size = match r.page_size {
            0 => DEFAULT_DISCLOSURE_PAGE,
            n => (n as usize).min(MAX_DISCLOSURE_PAGE),
        };
        let filter = DisclosureFilter {
            tcn: r.tcn,
            recipient: r.recipient,
        };
        let mut rows = self
            .0
            .core
            .store
            .disclosures(filter, after.unwrap_or(0), size + 1)
            .await
            .map_err(GatewayError::from)?;
        let more = rows.len() > size;
        rows.truncate(size);
        let next_page_token = match (more, rows.last()) {
            (true, Some((seq, _))) => seq.to_string(),
            _ => String::new(),
        };
        let disclosures = rows
            .into_iter()
            .map(|(seq, d)| pb::Disclosure {
                seq,
                disclosed_at: Some(convert::timestamp_ms(d.at_ms)),
                recipient: d.recipient,
                certificate_serial: d.serial,
                rpc: d.rpc,
                state: d.state,
                tcn: d.tcn,
                kind: disclosure_kind_pb(d.kind) as i32,
                cursor: d.cursor,
            })
            .collect();
        Ok(Response::new(pb::ListDisclosuresResponse {
            disclosures,
            next_page_token,
        }))
    }

    async fn revoke_certificate(
        &self,
        req: Request<pb::RevokeCertificateRequest>,
    ) -> Res<pb::RevokedCertificate> {
        need_admin(&req)?;
        let own = crate::auth::principal::serial(&req);
        let r = req.into_inner();
        let serial = crate::auth::principal::normalize_serial(&r.serial).ok_or_else(|| {
            GatewayError::invalid(
                "serial",
                "must be the certificate's serial number in hex (up to 20 bytes; colons allowed)",
            )
        })?;
        if r.reason.chars().count() > MAX_REVOCATION_REASON
            || r.reason.chars().any(|c| c.is_control())
        {
            return Err(GatewayError::invalid(
                "reason",
                "must be at most 200 characters, without control characters",
            )
            .into());
        }
        // An administrator cannot lock out the certificate it is calling with: that would
        // leave nobody able to undo a mistake without a restart.
        if serial == own {
            return Err(GatewayError::FailedPrecondition(
                "serial: is the certificate this call came with; revoke it from another admin certificate".into(),
            )
            .into());
        }
        let _guard = self.0.admin_lock.lock().await;
        let held = match self.0.revocations.get(&serial) {
            Some(held) => held,
            None => {
                let rec = crate::auth::revocation::Revoked {
                    serial: serial.clone(),
                    reason: r.reason,
                    revoked_at_ms: convert::now_ms(),
                };
                // Durable first, then in force: a revocation never disappears on restart.
                let bytes =
                    serde_json::to_vec(&rec).map_err(|e| GatewayError::Internal(e.to_string()))?;
                self.0
                    .core
                    .store
                    .put_setting(
                        format!("{}{serial}", crate::auth::revocation::SETTING_PREFIX),
                        bytes,
                    )
                    .await
                    .map_err(GatewayError::from)?;
                tracing::warn!(%serial, "client certificate revoked");
                self.0.revocations.insert(rec)
            }
        };
        Ok(Response::new(revoked_pb(&held)))
    }

    async fn list_revoked(
        &self,
        req: Request<pb::ListRevokedRequest>,
    ) -> Res<pb::ListRevokedResponse> {
        need_admin(&req)?;
        let revoked = self.0.revocations.list().iter().map(revoked_pb).collect();
        Ok(Response::new(pb::ListRevokedResponse { revoked }))
    }

    async fn reload_certificates(
        &self,
        req: Request<pb::ReloadCertificatesRequest>,
    ) -> Res<pb::ReloadCertificatesResponse> {
        need_admin(&req)?;
        let loaded = self.0.reload_tls()?;
        Ok(Response::new(pb::ReloadCertificatesResponse {
            server_serial: loaded.server_serial,
            client_cas: loaded.client_cas as u32,
        }))
    }

    async fn get_monthly_stats(
        &self,
        req: Request<pb::GetMonthlyStatsRequest>,
    ) -> Res<pb::MonthlyStats> {
        need_admin(&req)?;
        let r = req.into_inner();
        if !crate::rules::statistics::valid_month(&r.month) {
            return Err(GatewayError::invalid("month", "must be YYYY-MM").into());
        }
        if !r.state.is_empty() && !self.0.core.policy.has_state(&r.state) {
            return Err(
                GatewayError::NotFound(format!("state: unknown state {:?}", r.state)).into(),
            );
        }
        let counters = self
            .0
            .core
            .store
            .counters_with_prefix(format!("m/{}/", r.month))
            .await
            .map_err(GatewayError::from)?;
        Ok(Response::new(crate::rules::statistics::table(
            &self.0.core.policy,
            &r.month,
            &counters,
            &r.state,
        )))
    }
}

pub(crate) fn fingers_for_search(
    fingers: &[pb::FingerRecord],
) -> Result<interop_matcher::Tenprint, GatewayError> {
    if fingers.is_empty() || fingers.len() > 10 {
        return Err(GatewayError::invalid(
            "fingers",
            "must have 1 to 10 finger records",
        ));
    }
    for (i, f) in fingers.iter().enumerate() {
        if !(1..=10).contains(&f.position)
            || f.image_width > validate::MAX_IMAGE_SIDE
            || f.image_height > validate::MAX_IMAGE_SIDE
            || f.minutiae.len() > validate::MAX_MINUTIAE
            || f.minutiae.iter().any(|m| {
                m.x >= f.image_width
                    || m.y >= f.image_height
                    || m.angle_deg > 359
                    || m.quality > 100
            })
        {
            return Err(GatewayError::invalid(
                format!("fingers[{i}]"),
                "position 1..=10, image up to 2000 px, up to 255 minutiae inside the image, angle 0..=359, quality 0..=100",
            ));
        }
    }
    Ok(convert::tenprint_from_pb(fingers))
}

/// `MatcherService` over an in-process matcher (admin role: it exposes a whole gallery).
///
/// Searches run at most one per core at a time; the others wait their turn without using a
/// thread. A caller that gives up (its deadline passed) drops its call, and a search still
/// waiting is then never run: without this bound an overloaded shard started every queued
/// search at once, each took longer than its caller would wait, and every retry added work.
pub struct MatcherApi {
    matcher: Arc<dyn Matcher>,
    running: Arc<tokio::sync::Semaphore>,
    /// The ids this gallery may hold: a shard process holds only its own (see
    /// [`MatcherApi::for_shard`]).
    shard: Option<crate::engines::remote::Shard>,
    /// Where its enrolments and removals are noted (see [`crate::engines::gallery_log`]) and, at a
    /// gateway, the store that records them; a shard process has no store.
    log: Option<(
        Arc<crate::engines::gallery_log::GalleryLog>,
        Option<crate::store::DynStore>,
    )>,
}

impl MatcherApi {
    pub fn new(matcher: Arc<dyn Matcher>) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        MatcherApi {
            matcher,
            running: Arc::new(tokio::sync::Semaphore::new(cores)),
            shard: None,
            log: None,
        }
    }

    /// The service at a gateway: enrolments and removals go through `log`, recorded in
    /// `store` (see [`crate::engines::gallery_log`]), so they outlive a restart and reach its replicas.
    pub fn recorded(
        matcher: Arc<dyn Matcher>,
        log: Arc<crate::engines::gallery_log::GalleryLog>,
        store: crate::store::DynStore,
    ) -> Self {
        MatcherApi {
            log: Some((log, Some(store))),
            ..Self::new(matcher)
        }
    }

    /// The service of shard `shard`: an enrolment or removal of a subject another shard holds
    /// is refused with INVALID_ARGUMENT naming the shard that holds it, and changes nothing.
    /// Without this check a shard took any id, so a subject could be enrolled in two shards
    /// at once, and a removal sent to the shard that holds its id missed the copy elsewhere.
    /// Changes go through `log`, `matcher`'s, which notes them as made: one read later from
    /// the gateway's record (see [`crate::engines::remote::follow_gallery`]) is not made again.
    pub fn for_shard(
        matcher: Arc<dyn Matcher>,
        shard: crate::engines::remote::Shard,
        log: Arc<crate::engines::gallery_log::GalleryLog>,
    ) -> Self {
        MatcherApi {
            shard: Some(shard),
            log: Some((log, None)),
            ..Self::new(matcher)
        }
    }

    fn check_holds(&self, subject: u64) -> Result<(), GatewayError> {
        match self.shard {
            Some(s) if !s.holds(subject) => Err(GatewayError::invalid(
                "subject_id",
                format!(
                    "subject {subject} belongs to shard {}, not this shard {s} (shard i of N holds the ids equal to i modulo N)",
                    crate::engines::remote::Shard {
                        index: subject % s.count,
                        count: s.count
                    }
                ),
            )),
            _ => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl pb::matcher_service_server::MatcherService for MatcherApi {
    /// Honours the caller's deadline (its `grpc-timeout`): the search gives up when it passes
    /// (waiting for a core counts), rather than finish an answer no one waits for.
    async fn search(&self, req: Request<pb::SearchRequest>) -> Res<pb::SearchResponse> {
        need_admin(&req)?;
        let deadline = grpc_timeout(req.metadata()).map(|t| std::time::Instant::now() + t);
        let r = req.into_inner();
        let probe = fingers_for_search(&r.fingers)?;
        let k = r.max_candidates.clamp(1, 100) as usize;
        let m = self.matcher.clone();
        let permit = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        let res = tokio::task::spawn_blocking(move || {
            let r = m.search_before(&probe, k, deadline);
            drop(permit);
            r
        })
        .await
        .map_err(|e| GatewayError::Internal(e.to_string()))?
        .map_err(matcher_error)?;
        Ok(Response::new(pb::SearchResponse {
            hit: res.hit.is_some(),
            candidates: res
                .candidates
                .iter()
                .map(|c| pb::Candidate {
                    subject_id: c.subject,
                    score: c.score,
                })
                .collect(),
        }))
    }

    async fn enroll(&self, req: Request<pb::EnrollRequest>) -> Res<pb::EnrollResponse> {
        need_admin(&req)?;
        let r = req.into_inner();
        self.check_holds(r.subject_id)?;
        let print = fingers_for_search(&r.fingers)?;
        let size = match &self.log {
            Some((log, store)) => log.enroll(store.as_ref(), r.subject_id, print).await?,
            None => change_gallery(&self.matcher, move |m| m.enroll(r.subject_id, &print)).await?,
        };
        Ok(Response::new(pb::EnrollResponse {
            gallery_size: size as u64,
        }))
    }

    async fn remove(&self, req: Request<pb::RemoveRequest>) -> Res<pb::RemoveResponse> {
        need_admin(&req)?;
        let subject = req.into_inner().subject_id;
        self.check_holds(subject)?;
        let size = match &self.log {
            Some((log, store)) => log.remove(store.as_ref(), subject).await?,
            None => change_gallery(&self.matcher, move |m| m.remove(subject)).await?,
        };
        tracing::info!(
            subject,
            gallery_size = size,
            "subject removed from the gallery"
        );
        Ok(Response::new(pb::RemoveResponse {
            gallery_size: size as u64,
        }))
    }

    async fn list_changes(
        &self,
        req: Request<pb::ListChangesRequest>,
    ) -> Res<pb::ListChangesResponse> {
        need_admin(&req)?;
        match &self.log {
            Some((log, Some(_))) => Ok(Response::new(crate::engines::gallery_log::list_changes(
                log,
                req.get_ref(),
            )?)),
            _ => Err(GatewayError::FailedPrecondition(
                "no gallery changes are recorded here: a shard process reads them from its gateway"
                    .into(),
            )
            .into()),
        }
    }
}

/// Makes a change to `matcher`'s gallery on a blocking thread: the gallery's size after it.
pub(crate) async fn change_gallery(
    matcher: &Arc<dyn Matcher>,
    change: impl FnOnce(&dyn Matcher) -> Result<(), interop_matcher::MatchError> + Send + 'static,
) -> Result<usize, GatewayError> {
    let m = matcher.clone();
    tokio::task::spawn_blocking(move || change(&*m).map(|_| m.len()))
        .await
        .map_err(|e| GatewayError::Internal(e.to_string()))?
        .map_err(matcher_error)
}

/// The caller's deadline from its `grpc-timeout` header (up to 8 digits and a unit: H, M, S,
/// m, u or n), if it sent one that parses.
fn grpc_timeout(meta: &tonic::metadata::MetadataMap) -> Option<std::time::Duration> {
    use std::time::Duration;
    let v = meta.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// What the matcher refused, as the status a caller can act on: a duplicate id
/// ALREADY_EXISTS, an id not enrolled NOT_FOUND, a search past its deadline
/// DEADLINE_EXCEEDED, a print it cannot use INVALID_ARGUMENT (every enrolment refusal was
/// ALREADY_EXISTS before).
fn matcher_error(e: interop_matcher::MatchError) -> GatewayError {
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

/// `CriminalHistoryService` over the in-process stub (admin role).
pub struct CriminalHistoryApi(pub Arc<dyn CriminalHistory>);

#[tonic::async_trait]
impl pb::criminal_history_service_server::CriminalHistoryService for CriminalHistoryApi {
    async fn check(&self, req: Request<pb::CheckRequest>) -> Res<pb::CriminalHistoryResponse> {
        need_admin(&req)?;
        let r = req.into_inner();
        let probe = fingers_for_search(&r.fingers)?;
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

/// Issues a detainer: see `FieldOfficeService.IssueDetainer`.
/// The IDENT outcome of `(state, tcn)` if it is in `office`'s area and recommended
/// enforcement. Unknown, undetermined and out-of-area bookings all get the same NOT_FOUND, so
/// an office learns nothing about bookings that are not its own.
async fn enforceable_outcome(
    gw: &Gateway,
    office: &str,
    state: &str,
    tcn: &str,
) -> Result<pb::IdentOutcome, GatewayError> {
    let state_ok = state.len() == 2 && state.bytes().all(|b| b.is_ascii_uppercase());
    if !state_ok {
        return Err(GatewayError::invalid(
            "state",
            "must be a two-letter state code",
        ));
    }
    if !validate::tcn_ok(tcn) {
        return Err(GatewayError::invalid(
            "tcn",
            "must be 8 to 40 characters of A-Z, 0-9 and '-'",
        ));
    }
    let not_found = || {
        GatewayError::NotFound(
            "tcn: no IDENT outcome with this TCN in your area of responsibility".into(),
        )
    };
    let key = SubmissionKey {
        bureau: state.to_string(),
        tcn: tcn.to_string(),
    };
    let stored = gw.core.store.submission(key).await?.ok_or_else(not_found)?;
    let outcome = stored
        .summary
        .as_deref()
        .and_then(|b| pb::IdentOutcome::decode(b).ok())
        .ok_or_else(not_found)?;
    let covered = gw
        .core
        .policy
        .jurisdiction(&outcome.jurisdiction_id)
        .is_some_and(|j| j.field_office == office);
    if !covered {
        return Err(not_found());
    }
    let recommendation =
        pb::Recommendation::try_from(outcome.recommendation).unwrap_or(pb::Recommendation::None);
    if !matches!(
        recommendation,
        pb::Recommendation::Detainer | pb::Recommendation::DetainerOnConviction
    ) {
        return Err(GatewayError::FailedPrecondition(
            "tcn: the outcome carries no enforcement recommendation (no hit, lawful status, or discretion)".into(),
        ));
    }
    Ok(outcome)
}

fn booked_at(outcome: &pb::IdentOutcome) -> Option<chrono::NaiveDateTime> {
    outcome
        .booked_at
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|t| t.naive_utc())
}

/// Records a removal: see `FieldOfficeService.RecordRemoval`.
pub async fn record_removal(
    gw: &Gateway,
    office: &str,
    r: pb::RecordRemovalRequest,
) -> Result<pb::Removal, GatewayError> {
    let removed_on: chrono::NaiveDate = r
        .removed_on
        .parse()
        .map_err(|_| GatewayError::invalid("removed_on", "must be a date YYYY-MM-DD"))?;
    let outcome = enforceable_outcome(gw, office, &r.state, &r.tcn).await?;
    if booked_at(&outcome).is_some_and(|b| removed_on < b.date()) {
        return Err(GatewayError::invalid("removed_on", "is before the booking"));
    }
    let removal = pb::Removal {
        tcn: r.tcn.clone(),
        jurisdiction_id: outcome.jurisdiction_id.clone(),
        removed_on: removed_on.to_string(),
    };
    let completion = crate::store::Completion {
        events: vec![],
        counters: vec![
            (crate::pipeline::counters::REMOVALS.to_string(), 1),
            (stat_key(&outcome, crate::rules::statistics::REMOVALS), 1),
        ],
        summary: None,
    };
    match gw
        .core
        .store
        .append_once(
            format!("removal/{}/{}", r.state, r.tcn),
            removal.encode_to_vec(),
            completion,
        )
        .await?
    {
        crate::store::Once::Appended => Ok(removal),
        crate::store::Once::Existing(bytes) => pb::Removal::decode(bytes.as_slice())
            .map_err(|_| GatewayError::Internal("stored removal is unreadable".into())),
    }
}

/// Issues a detainer: see `FieldOfficeService.IssueDetainer`.
pub async fn issue_detainer(
    gw: &Gateway,
    office: &str,
    r: pb::IssueDetainerRequest,
) -> Result<pb::Detainer, GatewayError> {
    let release = r
        .scheduled_release
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.try_into().ok()?))
        .ok_or_else(|| {
            GatewayError::invalid("scheduled_release", "is required and must be a valid time")
        })?
        .naive_utc();
    let outcome = enforceable_outcome(gw, office, &r.state, &r.tcn).await?;
    if booked_at(&outcome)
        .is_some_and(|b| release < b || release > b + chrono::Duration::days(5 * 366))
    {
        return Err(GatewayError::invalid(
            "scheduled_release",
            "must be after the booking and within five years of it",
        ));
    }
    let recommendation =
        pb::Recommendation::try_from(outcome.recommendation).unwrap_or(pb::Recommendation::None);
    let hold = crate::rules::detainer::hold_until(release);
    let ts = |t: chrono::NaiveDateTime| convert::timestamp_ms(t.and_utc().timestamp_millis());
    let detainer = pb::Detainer {
        detainer_id: format!("DET-{}-{}", r.state, r.tcn),
        tcn: r.tcn.clone(),
        jurisdiction_id: outcome.jurisdiction_id.clone(),
        field_office: office.to_string(),
        scheduled_release: Some(ts(release)),
        hold_until: Some(ts(hold)),
        operative_on_conviction: recommendation == pb::Recommendation::DetainerOnConviction,
        issued_at: Some(convert::timestamp_ms(convert::now_ms())),
    };
    let event = pb::BureauResponse {
        cursor: 0,
        tcn: r.tcn.clone(),
        body: Some(pb::bureau_response::Body::Detainer(detainer.clone())),
    };
    let completion = crate::store::Completion {
        events: vec![(StreamKey::Bureau(r.state.clone()), event.encode_to_vec())],
        counters: vec![
            (crate::pipeline::counters::DETAINERS_ISSUED.to_string(), 1),
            (
                stat_key(&outcome, crate::rules::statistics::DETAINERS_ISSUED),
                1,
            ),
        ],
        summary: None,
    };
    match gw
        .core
        .store
        .append_once(
            format!("detainer/{}/{}", r.state, r.tcn),
            detainer.encode_to_vec(),
            completion,
        )
        .await?
    {
        crate::store::Once::Appended => {
            tracing::info!(office, tcn = %r.tcn, "detainer issued");
            gw.core
                .metrics
                .inc("interop_detainers_total", crate::metrics::office(office));
            Ok(detainer)
        }
        crate::store::Once::Existing(bytes) => pb::Detainer::decode(bytes.as_slice())
            .map_err(|_| GatewayError::Internal("stored detainer is unreadable".into())),
    }
}

/// Monthly statistics count a detainer or removal in the month and jurisdiction of its
/// booking.
fn stat_key(outcome: &pb::IdentOutcome, metric: &str) -> String {
    let booked = booked_at(outcome).map(|t| t.date()).unwrap_or_default();
    crate::rules::statistics::key(
        &crate::rules::statistics::month(booked),
        &outcome.jurisdiction_id,
        metric,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn grpc_timeouts_parse_as_the_protocol_writes_them() {
        let t = |v: &str| {
            let mut m = tonic::metadata::MetadataMap::new();
            m.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&m)
        };
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("2M"), Some(Duration::from_secs(120)));
        assert_eq!(t("5S"), Some(Duration::from_secs(5)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("5000000u"), Some(Duration::from_secs(5)));
        assert_eq!(t("3n"), Some(Duration::from_nanos(3)));
        for bad in ["S", "5", "5x", "-5S", "5.0S", "123456789S", "+5S"] {
            assert_eq!(t(bad), None, "{bad}");
        }
        assert_eq!(grpc_timeout(&tonic::metadata::MetadataMap::new()), None);
    }
}
