//! Administration, as the admin identity: jurisdictions' policies and states' choices not to receive results, the
//! field offices, counters and monthly statistics, the disclosure audit, client certificate
//! revocation and reloading, and the IDENT gallery's subjects.
//!
//! Each call is a typed wrapper over [`Client::unary`] (deadline and retries), taking and
//! returning the contract's messages, or the plain values inside them where the message is
//! only a wrapper. The gateway checks the caller's identity; a non-admin gets
//! `PERMISSION_DENIED`. What a person reads of the answers is the command line's business,
//! except the monthly statistics table, which more than one program prints
//! ([`crate::stats`]).

use crate::config::Client;
use interop_proto::v1 as pb;
use std::collections::BTreeMap;
use tonic::Status;

impl Client {
    /// A jurisdiction's policy.
    pub async fn get_policy(
        &self,
        jurisdiction_id: &str,
    ) -> Result<pb::JurisdictionPolicy, Status> {
        let req = pb::GetPolicyRequest {
            jurisdiction_id: jurisdiction_id.into(),
        };
        self.unary(Client::admin_service, req, |mut s, r| async move {
            s.get_policy(r).await
        })
        .await
    }

    /// Changes the given fields of a jurisdiction's policy.
    pub async fn set_policy(
        &self,
        req: pb::SetPolicyRequest,
    ) -> Result<pb::JurisdictionPolicy, Status> {
        self.unary(Client::admin_service, req, |mut s, r| async move {
            s.set_policy(r).await
        })
        .await
    }

    /// Sets or lifts a state's choice not to receive the identifications.
    pub async fn set_state_policy(
        &self,
        state: &str,
        declines_results: bool,
    ) -> Result<pb::StatePolicy, Status> {
        let req = pb::SetStatePolicyRequest {
            state: state.into(),
            declines_results,
        };
        self.unary(Client::admin_service, req, |mut s, r| async move {
            s.set_state_policy(r).await
        })
        .await
    }

    /// Every jurisdiction's policy, or one state's (`state` = two-letter code).
    pub async fn list_jurisdictions(
        &self,
        state: Option<&str>,
    ) -> Result<Vec<pb::JurisdictionPolicy>, Status> {
        let req = pb::ListJurisdictionsRequest {
            state: state.unwrap_or_default().into(),
        };
        self.unary(Client::admin_service, req, |mut s, r| async move {
            s.list_jurisdictions(r).await
        })
        .await
        .map(|l| l.jurisdictions)
    }

    /// The field offices and the states they cover.
    pub async fn list_field_offices(&self) -> Result<Vec<pb::FieldOffice>, Status> {
        let req = pb::ListFieldOfficesRequest {};
        self.unary(Client::admin_service, req, |mut s, r| async move {
            s.list_field_offices(r).await
        })
        .await
        .map(|l| l.field_offices)
    }

    /// The gateway's counters by name.
    pub async fn counters(&self) -> Result<BTreeMap<String, u64>, Status> {
        let req = pb::GetCountersRequest {};
        self.unary(Client::admin_service, req, |mut s, r| async move {
            s.get_counters(r).await
        })
        .await
        .map(|c| c.values.into_iter().collect())
    }

    /// Monthly statistics (render them with [`crate::stats::render_monthly_stats`]).
    pub async fn monthly_stats(
        &self,
        req: pb::GetMonthlyStatsRequest,
    ) -> Result<pb::MonthlyStats, Status> {
        self.unary(Client::admin_service, req, |mut s, r| async move {
            s.get_monthly_stats(r).await
        })
        .await
    }

    /// The profiling review of a fiscal quarter (`FYyyyyQn`) or a span of months.
    pub async fn quarterly_review(
        &self,
        req: pb::QuarterlyReviewRequest,
    ) -> Result<pb::OutlierReview, Status> {
        self.unary(Client::admin_service, req, |mut s, r| async move {
            s.quarterly_review(r).await
        })
        .await
    }

    /// A stored quarterly assessment (the latest revision unless one is named).
    pub async fn get_assessment(
        &self,
        req: pb::GetAssessmentRequest,
    ) -> Result<pb::QuarterlyAssessment, Status> {
        self.unary(Client::admin_service, req, |mut s, r| async move {
            s.get_assessment(r).await
        })
        .await
    }

    /// The quarters assessed so far.
    pub async fn list_assessments(&self) -> Result<pb::ListAssessmentsResponse, Status> {
        self.unary(
            Client::admin_service,
            pb::ListAssessmentsRequest {},
            |mut s, r| async move { s.list_assessments(r).await },
        )
        .await
    }

    /// Civil-rights complaints filed after `after_cursor`, in filing order (CRCL and the
    /// admin).
    pub async fn list_complaints(
        &self,
        req: pb::ListComplaintsRequest,
    ) -> Result<pb::ListComplaintsResponse, Status> {
        self.unary(Client::complaint_service, req, |mut s, r| async move {
            s.list_complaints(r).await
        })
        .await
    }

    /// One page of the disclosure audit, oldest first; pass the answer's
    /// `next_page_token` back for the next (empty when there is none).
    pub async fn list_disclosures(
        &self,
        req: pb::ListDisclosuresRequest,
    ) -> Result<pb::ListDisclosuresResponse, Status> {
        self.unary(Client::admin_service, req, |mut s, r| async move {
            s.list_disclosures(r).await
        })
        .await
    }

    /// Revokes a client certificate by its serial (hex; colons and case ignored). Revoking
    /// again keeps the first record, so a retry is harmless.
    pub async fn revoke_certificate(
        &self,
        serial: &str,
        reason: &str,
    ) -> Result<pb::RevokedCertificate, Status> {
        let req = pb::RevokeCertificateRequest {
            serial: serial.into(),
            reason: reason.into(),
        };
        self.unary(Client::admin_service, req, |mut s, r| async move {
            s.revoke_certificate(r).await
        })
        .await
    }

    /// The revoked client certificates.
    pub async fn list_revoked(&self) -> Result<Vec<pb::RevokedCertificate>, Status> {
        let req = pb::ListRevokedRequest {};
        self.unary(Client::admin_service, req, |mut s, r| async move {
            s.list_revoked(r).await
        })
        .await
        .map(|l| l.revoked)
    }

    /// Makes the gateway re-read its certificate, key and client CA bundle (as SIGHUP does).
    pub async fn reload_certificates(&self) -> Result<pb::ReloadCertificatesResponse, Status> {
        let req = pb::ReloadCertificatesRequest {};
        self.unary(Client::admin_service, req, |mut s, r| async move {
            s.reload_certificates(r).await
        })
        .await
    }

    /// Takes a subject out of the gateway's IDENT gallery (in process or behind
    /// `--ident-shards`): the gallery size after.
    pub async fn remove_subject(&self, subject_id: u64) -> Result<u64, Status> {
        let req = pb::RemoveRequest { subject_id };
        self.unary(Client::matcher_service, req, |mut s, r| async move {
            s.remove(r).await
        })
        .await
        .map(|r| r.gallery_size)
    }
}
