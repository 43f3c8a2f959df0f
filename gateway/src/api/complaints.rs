//! `ComplaintService`: civil-rights complaints, recorded and moved along by CRCL's intake
//! (checked in [`crate::rules::complaints`]). Reads: CRCL and the admin every complaint; a
//! field office one about a booking in its area (any other is NOT_FOUND to it). Every answer
//! that carries a complaint is recorded in the disclosure audit first, one record per
//! complaint (its booking's state and TCN, or its jurisdiction's state and its id).

use super::{Res, recipient, rpc};
use crate::auth::principal::{Principal, principal};
use crate::delivery::{Disclosed, Recipient};
use crate::error::GatewayError;
use crate::rules::complaints;
use crate::server::Gateway;
use crate::store::DisclosureKind;
use interop_proto::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response};

pub struct ComplaintApi(pub Arc<Gateway>);

fn need_crcl<T>(req: &Request<T>) -> Result<(), GatewayError> {
    match principal(req)? {
        Principal::Crcl => Ok(()),
        _ => Err(GatewayError::PermissionDenied(
            "this call needs the CRCL identity".into(),
        )),
    }
}

/// Records that `who` was given `complaints`, before the answer leaves.
async fn audit(
    gw: &Gateway,
    who: &Recipient,
    complaints: &[&pb::Complaint],
) -> Result<(), GatewayError> {
    let records = complaints
        .iter()
        .map(|c| {
            let f = c.filing.clone().unwrap_or_default();
            let (state, tcn) = if f.tcn.is_empty() {
                let state = gw
                    .core
                    .policy
                    .jurisdiction(&c.jurisdiction_id)
                    .map(|j| j.state.clone())
                    .unwrap_or_default();
                (state, c.complaint_id.clone())
            } else {
                (f.state, f.tcn)
            };
            who.disclosure(
                Disclosed {
                    state,
                    tcn,
                    kind: DisclosureKind::Complaint,
                },
                0,
            )
        })
        .collect();
    gw.core.store.record_disclosures(records).await?;
    Ok(())
}

#[tonic::async_trait]
impl pb::complaint_service_server::ComplaintService for ComplaintApi {
    async fn file_complaint(&self, req: Request<pb::FileComplaintRequest>) -> Res<pb::Complaint> {
        need_crcl(&req)?;
        let who = recipient(&req, rpc::FILE_COMPLAINT)?;
        let c = complaints::file(&self.0, req.into_inner()).await?;
        audit(&self.0, &who, &[&c]).await?;
        Ok(Response::new(c))
    }

    async fn advance_complaint(
        &self,
        req: Request<pb::AdvanceComplaintRequest>,
    ) -> Res<pb::Complaint> {
        need_crcl(&req)?;
        let who = recipient(&req, rpc::ADVANCE_COMPLAINT)?;
        let c = complaints::advance(&self.0, req.into_inner()).await?;
        audit(&self.0, &who, &[&c]).await?;
        Ok(Response::new(c))
    }

    async fn get_complaint(&self, req: Request<pb::GetComplaintRequest>) -> Res<pb::Complaint> {
        let office = match principal(&req)? {
            Principal::Crcl | Principal::Admin => None,
            Principal::FieldOffice { office } => Some(office),
            _ => {
                return Err(GatewayError::PermissionDenied(
                    "this call needs the CRCL, admin or a field office identity".into(),
                )
                .into());
            }
        };
        let who = recipient(&req, rpc::GET_COMPLAINT)?;
        let id = req.into_inner().complaint_id;
        let c = complaints::current(&self.0, &id).await?;
        // An office sees the complaints about bookings in its area, and learns nothing of
        // the others (not even that they exist).
        let booking = c.filing.as_ref().is_some_and(|f| !f.tcn.is_empty());
        if let Some(office) = office
            && (!booking || c.field_office != office)
        {
            return Err(
                GatewayError::NotFound(format!("complaint_id: no complaint {id:?}")).into(),
            );
        }
        audit(&self.0, &who, &[&c]).await?;
        Ok(Response::new(c))
    }

    async fn list_complaints(
        &self,
        req: Request<pb::ListComplaintsRequest>,
    ) -> Res<pb::ListComplaintsResponse> {
        match principal(&req)? {
            Principal::Crcl | Principal::Admin => {}
            _ => {
                return Err(GatewayError::PermissionDenied(
                    "this call needs the CRCL or admin identity".into(),
                )
                .into());
            }
        }
        let who = recipient(&req, rpc::LIST_COMPLAINTS)?;
        let r = req.into_inner();
        let listed = complaints::list(&self.0, r.after_cursor, r.limit).await?;
        let all: Vec<&pb::Complaint> = listed.iter().filter_map(|l| l.complaint.as_ref()).collect();
        audit(&self.0, &who, &all).await?;
        Ok(Response::new(pb::ListComplaintsResponse {
            complaints: listed,
        }))
    }
}
