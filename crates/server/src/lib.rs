//! What every reid gRPC server shares: the standard `grpc.health.v1` and reflection services,
//! graceful shutdown that flips health to NOT_SERVING before draining in-flight calls, the
//! Prometheus `/metrics` endpoint, and the ctrl-c / SIGTERM future that `main` passes to `run`.

pub mod background;
pub mod client;
pub mod connections;
pub mod duration;
pub mod invalid;
pub mod metrics;
pub mod paths;
pub mod security;

pub use background::Background;
pub use connections::ConnectionLimits;
pub use invalid::Invalid;
pub use security::{Channel, Role, Security, truncated};

use std::future::Future;

use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// A gRPC server under construction: its health reporter is handed to the service so that the
/// service can say when it is able to serve (an embedder without a model is not).
pub struct GrpcServer {
    health: HealthReporter,
    /// Fully qualified gRPC service names, e.g. `reid.v1.EmbedderService`.
    services: Vec<&'static str>,
    security: Security,
}

impl std::fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServer").field("services", &self.services).finish()
    }
}

impl GrpcServer {
    pub fn new(services: Vec<&'static str>) -> Self {
        GrpcServer { health: HealthReporter::new(), services, security: Security::default() }
    }

    /// Requires the API key and speaks TLS as `security` says.
    pub fn secured(mut self, security: &Security) -> Self {
        self.security = security.clone();
        self
    }

    pub fn health(&self) -> Health {
        Health { reporter: self.health.clone(), services: self.services.clone() }
    }

    /// Serves `routes` plus health and reflection on `listener` until `shutdown` resolves, then
    /// reports NOT_SERVING and finishes the calls in flight.
    pub async fn serve(
        self,
        listener: TcpListener,
        routes: Routes,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        // Reflection advertises only what this server serves (the contract holds all four
        // services), in v1 and, for older grpcurl and grpcui, v1alpha.
        let reflection = || {
            self.services.iter().chain(&["grpc.health.v1.Health"]).fold(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(reid_proto::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
                |builder, name| builder.with_service_name(*name),
            )
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        let health_service = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(self.health.clone()),
        );
        let health = self.health();
        let addr = listener.local_addr()?;
        let tls = self.security.server_tls()?;
        tracing::info!(
            %addr,
            services = ?self.services,
            tls = tls.is_some(),
            mutual_tls = self.security.tls_client_ca.is_some(),
            api_key = self.security.api_key.is_some(),
            "serving grpc"
        );
        let drain = async move {
            shutdown.await;
            tracing::info!(%addr, "shutting down: finishing calls in flight");
            health.set_all(false).await;
        };
        let limits = self.security.connections.clone();
        let mut builder = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout))
            .max_concurrent_streams(Some(limits.max_concurrent_streams));
        if let Some(tls) = tls {
            builder = builder.tls_config(tls)?;
        }
        builder
            .layer(self.security.require_key())
            .add_routes(routes)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .serve_with_incoming_shutdown(ReceiverStream::new(connections::accept(listener, limits)), drain)
            .await?;
        Ok(())
    }
}

/// The service's handle on its health status.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    services: Vec<&'static str>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").field("services", &self.services).finish()
    }
}

impl Health {
    /// Sets every service of this server, and the server as a whole (""), to SERVING or not.
    pub async fn set_all(&self, serving: bool) {
        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        for name in self.services.iter().copied().chain([""]) {
            self.reporter.set_service_status(name, status).await;
        }
    }
}

/// The URL a client dials for `addr`: `host:port` becomes `http://host:port`; a URL is kept.
pub fn grpc_url(addr: &str) -> String {
    if addr.contains("://") { addr.to_owned() } else { format!("http://{addr}") }
}

/// `shutdown`, which also turns the returned flag true when it resolves: pass the future to the
/// server, and the flag to what streams and must learn that the server is stopping
/// ([`until_true`]).
pub fn announced(
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (impl Future<Output = ()> + Send + 'static, tokio::sync::watch::Receiver<bool>) {
    let (flag, closing) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        flag.send_replace(true);
    };
    (shutdown, closing)
}

/// Resolves once `flag` is true (or its sender is gone): how a stream that never ends by itself
/// (an event stream) learns that its server is shutting down.
pub async fn until_true(flag: &mut tokio::sync::watch::Receiver<bool>) {
    while !*flag.borrow_and_update() {
        if flag.changed().await.is_err() {
            return;
        }
    }
}

/// Resolves on ctrl-c or SIGTERM: what `main` passes to a service's `run`.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
