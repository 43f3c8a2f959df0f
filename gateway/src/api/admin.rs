//! `AdminService`, for the admin: jurisdiction and state policy (read, changed, persisted
//! before it applies), the field offices, counters and the monthly statistics, the quarterly
//! review, the disclosure audit, and client-certificate revocation and reload.

use super::{Res, need_admin, need_admin_or_shard};
use crate::auth::principal::{Principal, normalize_serial, serial};
use crate::convert;
use crate::error::{GatewayError, Violation};
use crate::intake::validate;
use crate::rules::policy::{self, JurisdictionPolicy, PolicyView, StatePolicy};
use crate::rules::{assessment, review, statistics};
use crate::server::Gateway;
use crate::store::DisclosureFilter;
use interop_proto::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response};

pub struct AdminApi(pub Arc<Gateway>);

/// Disclosures per `ListDisclosures` page unless the caller asks for another size.
const DEFAULT_DISCLOSURE_PAGE: usize = 100;
/// The most one page holds, whatever the caller asks.
const MAX_DISCLOSURE_PAGE: usize = 1000;

/// Longest revocation reason kept.
const MAX_REVOCATION_REASON: usize = 200;

impl AdminApi {
    fn view(&self, id: &str) -> Result<PolicyView, GatewayError> {
        self.0.core.policy.view(id).ok_or_else(|| {
            GatewayError::NotFound(format!("jurisdiction_id: unknown jurisdiction {id:?}"))
        })
    }

    /// Appends the advance notice of `v`'s activation on `on` to its state's bureau stream. A
    /// retried change finds its date in force and gives no second notice; only a crash between
    /// the notice and the policy write can give one twice (at least once, never lost).
    async fn give_notice(
        &self,
        v: &PolicyView,
        notice_on: chrono::NaiveDate,
        on: chrono::NaiveDate,
    ) -> Result<(), GatewayError> {
        use crate::store::{Completion, StreamKey};
        use prost::Message;
        let notice = pb::ActivationNotice {
            jurisdiction_id: v.jurisdiction.id.clone(),
            jurisdiction_name: v.jurisdiction.name.clone(),
            notice_on: notice_on.to_string(),
            activate_on: on.to_string(),
        };
        let event = pb::BureauResponse {
            cursor: 0,
            tcn: String::new(),
            body: Some(pb::bureau_response::Body::ActivationNotice(notice.clone())),
        };
        let completion = Completion {
            events: vec![(
                StreamKey::Bureau(v.jurisdiction.state.clone()),
                event.encode_to_vec(),
            )],
            counters: vec![(crate::pipeline::counters::ACTIVATION_NOTICES.into(), 1)],
            summary: None,
        };
        self.0
            .core
            .store
            .append_once(
                format!(
                    "activation-notice/{}/{on}/{}",
                    v.jurisdiction.id,
                    convert::now_ms()
                ),
                notice.encode_to_vec(),
                completion,
            )
            .await?;
        tracing::info!(jurisdiction = %v.jurisdiction.id, %on, %notice_on, "activation notice given");
        Ok(())
    }
}

#[tonic::async_trait]
impl pb::admin_service_server::AdminService for AdminApi {
    async fn get_policy(&self, req: Request<pb::GetPolicyRequest>) -> Res<pb::JurisdictionPolicy> {
        need_admin(&req)?;
        Ok(Response::new(convert::policy_pb(
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
        // A new activation date needs its advance notice, which goes out before the policy
        // changes (seed 000: "Prior to the activation ... ICE will provide advance notice").
        // A new date needs its notice; repeating the date in force (with or without its
        // notice) is a retry and gives none.
        let new_date = activated_on.filter(|d| Some(*d) != cur.policy.activated_on);
        let notice_on = || -> Result<chrono::NaiveDate, GatewayError> {
            r.notice_on
                .parse()
                .map_err(|_| GatewayError::invalid("notice_on", "must be a date YYYY-MM-DD"))
        };
        match (new_date, activated_on, r.notice_on.as_str()) {
            (None, _, "") => {}
            (None, Some(on), _) if r.activated_on.is_some() => {
                policy::check_notice(notice_on()?, on)
                    .map_err(|why| GatewayError::invalid("notice_on", why))?;
            }
            (None, _, _) => {
                return Err(GatewayError::invalid(
                    "notice_on",
                    "is given only with a new activated_on date",
                )
                .into());
            }
            (Some(_), _, "") => {
                return Err(GatewayError::invalid(
                    "notice_on",
                    "is required with a new activated_on date: the state and local governments get advance notice",
                )
                .into());
            }
            (Some(on), _, _) => {
                let notice_on = notice_on()?;
                policy::check_notice(notice_on, on)
                    .map_err(|why| GatewayError::invalid("notice_on", why))?;
                self.give_notice(&cur, notice_on, on).await?;
            }
        }
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
        Ok(Response::new(convert::policy_pb(
            &self.view(&r.jurisdiction_id)?,
        )))
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
            declines_results: r.declines_results,
            ..cur
        };
        self.0.persist_state(&r.state, &new).await?;
        tracing::info!(state = %r.state, declines_results = r.declines_results, "state policy changed");
        Ok(Response::new(pb::StatePolicy {
            state: r.state,
            declines_results: new.declines_results,
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
            .map(|v| convert::policy_pb(&v))
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
        let review = review::quarterly(&self.0.core.store, &self.0.core.policy, &r).await?;
        Ok(Response::new(review))
    }

    async fn get_assessment(
        &self,
        req: Request<pb::GetAssessmentRequest>,
    ) -> Res<pb::QuarterlyAssessment> {
        need_admin(&req)?;
        let core = &self.0.core;
        let a = assessment::get(&core.store, &core.assessor, &req.into_inner()).await?;
        Ok(Response::new(a))
    }

    async fn list_assessments(
        &self,
        req: Request<pb::ListAssessmentsRequest>,
    ) -> Res<pb::ListAssessmentsResponse> {
        need_admin(&req)?;
        Ok(Response::new(assessment::list(&self.0.core.store).await?))
    }

    async fn list_disclosures(
        &self,
        req: Request<pb::ListDisclosuresRequest>,
    ) -> Res<pb::ListDisclosuresResponse> {
        need_admin(&req)?;
        let r = req.into_inner();
        let mut violations = vec![];
        if !r.tcn.is_empty() && !validate::tcn_ok(&r.tcn) {
            violations.push(Violation::new(
                "tcn",
                "must be empty or 8 to 40 characters of A-Z, 0-9 and '-'",
            ));
        }
        if !r.recipient.is_empty() && Principal::from_spiffe(&r.recipient).is_none() {
            violations.push(Violation::new(
                "recipient",
                "must be empty or a SPIFFE id such as spiffe://interop.local/bureau/TX",
            ));
        }
        let after = match r.page_token.as_str() {
            "" => Some(0),
            t => t.parse::<u64>().ok(),
        };
        if after.is_none() {
            violations.push(Violation::new(
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
                kind: convert::disclosure_kind_pb(d.kind) as i32,
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
        let own = serial(&req);
        let r = req.into_inner();
        let serial = normalize_serial(&r.serial).ok_or_else(|| {
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
        let held = self.0.revoke(serial, r.reason).await?;
        Ok(Response::new(convert::revoked_pb(&held)))
    }

    async fn list_revoked(
        &self,
        req: Request<pb::ListRevokedRequest>,
    ) -> Res<pb::ListRevokedResponse> {
        // Shards follow it, as themselves.
        need_admin_or_shard(&req)?;
        let revoked = self
            .0
            .revocations
            .list()
            .iter()
            .map(convert::revoked_pb)
            .collect();
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
        let stats = statistics::monthly(&self.0.core.store, &self.0.core.policy, &r).await?;
        Ok(Response::new(stats))
    }
}
