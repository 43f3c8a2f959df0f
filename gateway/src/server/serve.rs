//! Serving a started [`Gateway`]: every gRPC service behind the authentication interceptor,
//! health and reflection, on the bounded mutual-TLS [`listener`]; and `/metrics` on its own
//! plain-HTTP listener.

use super::{Gateway, MatcherServing, listener};
use crate::api::{
    AdminApi, ComplaintApi, CriminalHistoryApi, FieldOfficeApi, LescApi, MatcherApi, SubmissionApi,
};
use crate::auth::principal::authenticate_with;
use crate::auth::tls::ServerTls;
use crate::intake::validate;
use crate::server::listener::CallTracker;
use interop_proto::v1 as pb;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;

impl Gateway {
    /// Serves gRPC over mutual TLS on `listener` until `shutdown` completes.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Arc<ServerTls>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tls.refuse_revoked(self.revocations.clone());
        let _ = self.tls.set(tls.clone());
        // Every call: the certificate's identity, refused if its serial has been revoked.
        let revocations = self.revocations.clone();
        let authenticate = move |req| authenticate_with(req, &|s: &str| revocations.reason(s));
        use pb::admin_service_server::AdminServiceServer;
        use pb::complaint_service_server::ComplaintServiceServer;
        use pb::criminal_history_service_server::CriminalHistoryServiceServer;
        use pb::field_office_service_server::FieldOfficeServiceServer;
        use pb::lesc_service_server::LescServiceServer;
        use pb::matcher_service_server::MatcherServiceServer;
        use pb::submission_service_server::SubmissionServiceServer;

        let max = validate::MAX_MESSAGE_BYTES;
        let submission = SubmissionServiceServer::new(SubmissionApi(self.clone()))
            .max_decoding_message_size(max);
        let office = FieldOfficeServiceServer::new(FieldOfficeApi(self.clone()))
            .max_decoding_message_size(max);
        let lesc = LescServiceServer::new(LescApi(self.clone())).max_decoding_message_size(max);
        let complaints =
            ComplaintServiceServer::new(ComplaintApi(self.clone())).max_decoding_message_size(max);
        let admin = AdminServiceServer::new(AdminApi(self.clone())).max_decoding_message_size(max);
        let criminal = CriminalHistoryServiceServer::new(CriminalHistoryApi {
            engine: self.core.criminal.clone(),
            audit: Some(self.core.store.clone()),
        })
        .max_decoding_message_size(max);

        let (health, health_svc) = tonic_health::server::health_reporter();
        health
            .set_serving::<SubmissionServiceServer<SubmissionApi>>()
            .await;
        health
            .set_serving::<FieldOfficeServiceServer<FieldOfficeApi>>()
            .await;
        health.set_serving::<LescServiceServer<LescApi>>().await;
        health
            .set_serving::<ComplaintServiceServer<ComplaintApi>>()
            .await;
        health.set_serving::<AdminServiceServer<AdminApi>>().await;
        health
            .set_serving::<CriminalHistoryServiceServer<CriminalHistoryApi>>()
            .await;
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(interop_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(interop_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        // Health and reflection too: a revoked certificate learns nothing, not even which
        // services are here.
        let calls = CallTracker::default();
        let mut router = listener::grpc_server(&self.options, calls.clone())
            .add_service(InterceptedService::new(submission, authenticate.clone()))
            .add_service(InterceptedService::new(office, authenticate.clone()))
            .add_service(InterceptedService::new(lesc, authenticate.clone()))
            .add_service(InterceptedService::new(complaints, authenticate.clone()))
            .add_service(InterceptedService::new(admin, authenticate.clone()))
            .add_service(InterceptedService::new(criminal, authenticate.clone()))
            .add_service(InterceptedService::new(health_svc, authenticate.clone()))
            .add_service(InterceptedService::new(reflection_v1, authenticate.clone()))
            .add_service(InterceptedService::new(
                reflection_v1alpha,
                authenticate.clone(),
            ));
        match &self.matcher {
            Some(MatcherServing::InProcess(m)) => {
                health
                    .set_serving::<MatcherServiceServer<MatcherApi>>()
                    .await;
                let api = match &self.gallery {
                    Some(log) => {
                        MatcherApi::recorded(m.clone(), log.clone(), self.core.store.clone())
                    }
                    None => MatcherApi::new(m.clone()),
                }
                .with_fbi(self.fbi_gallery.get().cloned())
                .on_slots(self.core.ident.search_slots())
                .audited(self.core.store.clone());
                let svc = MatcherServiceServer::new(api).max_decoding_message_size(max);
                router = router.add_service(InterceptedService::new(svc, authenticate));
            }
            Some(MatcherServing::Shards(r)) => {
                use crate::api::ShardedMatcherApi;
                health
                    .set_serving::<MatcherServiceServer<ShardedMatcherApi>>()
                    .await;
                let api =
                    ShardedMatcherApi {
                        ident: r.clone(),
                        log: self.gallery.clone().map(|g| (g, self.core.store.clone())),
                        fbi: self.fbi_gallery.get().cloned().map(|m| {
                            MatcherApi::new(m).on_slots(self.core.criminal.search_slots())
                        }),
                        audit: Some(self.core.store.clone()),
                    };
                let svc = MatcherServiceServer::new(api).max_decoding_message_size(max);
                router = router.add_service(InterceptedService::new(svc, authenticate));
            }
            None => {}
        }

        let addr = listener.local_addr()?;
        tracing::info!(%addr, "serving gRPC over mutual TLS");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown_tx = self.shutdown_tx.clone();
        let grace = self.options.grace;
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: ending streams, finishing in-flight calls");
            let _ = shutdown_tx.send(true);
            let _ = stop_tx.send(());
        });
        let options = self.options.clone();
        let stats = self.listen_stats.clone();
        let server = listener::serve(router, listener, tls, &options, calls, stats, async {
            let _ = stop_rx.await;
        });
        tokio::pin!(server);
        let mut stopping = self.shutdown.clone();
        tokio::select! {
            r = &mut server => r?,
            _ = async {
                let _ = stopping.wait_for(|s| *s).await;
                tokio::time::sleep(grace).await;
            } => tracing::warn!("grace period over; dropping in-flight calls"),
        }
        // Give the pipeline the same grace to finish, then drop what is left: it stays
        // pending in the store and is resumed on the next start.
        let deadline = tokio::time::Instant::now() + grace;
        while self.backlog.figures().local() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.halt_tx.send(true);
        Ok(())
    }
}

impl Gateway {
    /// Serves `/metrics` (Prometheus text) over plain HTTP on `listener` until `shutdown`.
    /// Bind it to loopback: the figures carry no case data, but nothing here authenticates.
    pub async fn serve_metrics(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let gw = self.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let gw = gw.clone();
                async move {
                    // The store's figures, unless it cannot answer now (then the rest still is).
                    let store = match gw.core.store.usage().await {
                        Ok(u) => crate::metrics::render_store(&u),
                        Err(e) => {
                            tracing::warn!(error = %e, "store figures left out of /metrics");
                            String::new()
                        }
                    };
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        gw.core.metrics.render(&gw.backlog.figures())
                            + &crate::metrics::render_search(
                                gw.core
                                    .ident
                                    .search_load()
                                    .or_else(|| gw.core.criminal.search_load()),
                            )
                            + &gw.listen_stats.render()
                            + &gw.core.store.render_metrics()
                            + &store
                            + &crate::metrics::process(),
                    )
                }
            }),
        );
        tracing::info!(addr = %listener.local_addr()?, "serving metrics over plain HTTP");
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }
}
