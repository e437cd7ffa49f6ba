//! The camera ingester: camera feeds in, tracklets out.
//!
//! - [`source`]: where frames come from (files, streams, devices, folders, pushes), the bounded
//!   frame queue, and [`policy`]: what cameras added over the API may read and connect to;
//! - [`detect`]: the detectors behind one trait (one file each; [`detect::ssd`]: the learned
//!   person detector; [`detect::mtcnn`]: faces with landmarks, and alignment);
//! - [`frame`]: frames and boxes, decoded and checked, that every other module passes on;
//! - [`pipeline`]: a camera's [`view`], the [`track`]er and its best crops, and the [`camera`]'s
//!   reader and processing threads, with its status;
//! - [`delivery`]: the outbox and the worker that embeds and observes tracklets ([`deliver`]),
//!   and tracklets as training data ([`export`]);
//! - [`ingester`]: the domain core; [`service`]: the thin tonic handlers;
//! - [`run`]: what `reid serve ingester` and the tests call.

#![warn(unreachable_pub)]

mod config;
mod delivery;
pub mod detect;
mod error;
pub mod frame;
pub mod ingester;
mod metrics;
mod pipeline;
pub mod service;
mod source;

pub use delivery::{deliver, export};
pub use pipeline::{appearance, camera, track, view};
pub use source::policy;

use std::future::Future;
use std::sync::Arc;

use reid_proto::v1::ingester_service_server::IngesterServiceServer;
use reid_server::{Background, GrpcServer};
use tokio::net::TcpListener;

pub use config::{CameraSpec, IngesterConfig, Shard};
pub use error::IngesterError;
pub use ingester::Ingester;
pub use policy::SourcePolicy;

/// The fully qualified gRPC name, as health checks ask for it.
pub const SERVICE_NAME: &str = "reid.v1.IngesterService";

/// Starts the ingester from its config: delivery to the configured services, configured cameras.
pub async fn start(config: IngesterConfig) -> anyhow::Result<Arc<Ingester>> {
    let downstream: Option<Arc<dyn deliver::Downstream>> =
        if config.embedder_url.is_some() || config.identity_url.is_some() {
            Some(Arc::new(deliver::GrpcDownstream::new(
                config.embedder_url.as_deref(),
                config.identity_url.as_deref(),
                &config.delivery,
                config.max_message_bytes,
                &config.security,
            )?))
        } else {
            None
        };
    Ok(Arc::new(Ingester::start(config, downstream, metrics::IngesterMetrics::new()).await?))
}

/// Serves the ingester on `listener` until `shutdown` resolves, then stops the cameras (their open
/// tracks are flushed) and delivers what it can within `delivery.flush_timeout`.
pub async fn run(
    config: IngesterConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let server = GrpcServer::new(vec![SERVICE_NAME]).secured(&config.security);
    let ingester = start(config).await?;
    serve(ingester, server, listener, shutdown).await
}

/// Serves an ingester that is already started (tests use it to reach the domain and the metrics).
pub async fn serve(
    ingester: Arc<Ingester>,
    server: GrpcServer,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut background = Background::new();
    background.metrics(ingester.config().metrics_listen.as_deref(), ingester.metrics().registry.clone()).await?;
    server.health().set_all(true).await;
    let limit = ingester.config().max_message_bytes;
    let grpc = IngesterServiceServer::new(service::IngesterGrpc::new(ingester.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let result = server.serve(listener, tonic::service::Routes::new(grpc), shutdown).await;
    ingester.shutdown().await;
    background.stop().await;
    result
}
