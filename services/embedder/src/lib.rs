//! The embedding worker: crops in, L2-normalised embeddings out, over gRPC.
//!
//! - [`embedder`]: the domain core (validation, pre-processing, model management);
//! - [`batcher`]: dynamic batching on the inference thread that owns the model;
//! - [`service`]: the thin tonic handlers;
//! - [`run`]: what `reid serve embedder` and the tests call.

#![warn(unreachable_pub)]

mod batcher;
mod config;
pub mod embedder;
mod error;
mod metrics;
mod service;

use std::future::Future;
use std::sync::Arc;

use reid_proto::v1::embedder_service_server::EmbedderServiceServer;
use reid_server::{Background, GrpcServer};
use tokio::net::TcpListener;

pub use config::{DEFAULT_MODEL, EmbedderConfig};
pub use embedder::Embedder;
pub use error::EmbedderError;

/// The fully qualified gRPC name, as health checks ask for it.
pub const SERVICE_NAME: &str = "reid.v1.EmbedderService";

/// Serves the embedder on `listener` until `shutdown` resolves, then finishes in-flight requests
/// and stops the inference thread.
pub async fn run(
    config: EmbedderConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let server = GrpcServer::new(vec![SERVICE_NAME]).secured(&config.security);
    let embedder = Embedder::start(config, server.health()).await?;
    serve(embedder, server, listener, shutdown).await
}

/// Serves an embedder that is already started (tests use it to reach the metrics).
pub async fn serve(
    embedder: Arc<Embedder>,
    server: GrpcServer,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut background = Background::new();
    let period = embedder.config().watch_interval;
    if !period.is_zero() {
        let watched = embedder.clone();
        background.every(period, move || {
            let embedder = watched.clone();
            async move { embedder.check_for_new_version().await }
        });
    }
    background.metrics(embedder.config().metrics_listen.as_deref(), embedder.metrics().registry.clone()).await?;
    let limit = embedder.config().max_message_bytes;
    let grpc = EmbedderServiceServer::new(service::EmbedderGrpc::new(embedder.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let result = server.serve(listener, tonic::service::Routes::new(grpc), shutdown).await;
    background.stop().await;
    // The server and watcher dropped their handles; this one goes last, with the thread.
    match Arc::try_unwrap(embedder) {
        Ok(embedder) => embedder.shutdown(),
        Err(_) => tracing::warn!("embedder still referenced at shutdown; not waiting for the inference thread"),
    }
    result
}
