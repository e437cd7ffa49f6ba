//! The identity service: who is this, across cameras.
//!
//! - [`identities`]: the domain core (identify, enroll, observe, sightings, forget, feedback,
//!   retention, gallery re-embedding on model change);
//! - [`association`]: the matching rules as pure functions;
//! - [`catalog`], [`crops`], [`model`]: what is stored besides the vectors, and where;
//! - [`personal`]: names and external ids sealed per identity, so that erasure is complete;
//! - [`embedder`]: the seam to the embedder service;
//! - [`events`], [`webhook`]: what happens to identities, streamed by `Watch` and POSTed;
//! - [`service`]: the thin tonic handlers;
//! - [`run`]: what `reid serve identity` and the tests call.

#![warn(unreachable_pub)]

pub mod association;
pub mod catalog;
pub mod config;
mod crops;
pub mod embedder;
pub mod error;
pub mod events;
pub mod identities;
pub mod metrics;
pub mod model;
mod payload;
mod personal;
mod service;
pub mod webhook;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use reid_proto::v1::identity_service_server::IdentityServiceServer;
use reid_server::{Background, GrpcServer};
use reid_vector_store::{EdgeStore, QdrantServerStore, ServerOptions, VectorStore};
use tokio::net::TcpListener;

pub use config::IdentityConfig;
pub use error::IdentityError;
pub use identities::Identities;

/// The fully qualified gRPC name, as health checks ask for it.
pub const SERVICE_NAME: &str = "reid.v1.IdentityService";

/// Opens the configured vector store: a Qdrant server when `qdrant_url` is set, else the
/// embedded engine under `data_dir/qdrant`.
pub async fn open_store(config: &IdentityConfig) -> anyhow::Result<Arc<dyn VectorStore>> {
    Ok(match &config.qdrant_url {
        Some(url) => {
            let mut options = ServerOptions::new(url.clone());
            options.api_key = config.qdrant_api_key.clone();
            options.replication_factor = config.qdrant_replication_factor;
            Arc::new(QdrantServerStore::connect(&options).await.context("connecting to the Qdrant server")?)
        }
        None => {
            let path = config.data_dir.join("qdrant");
            Arc::new(EdgeStore::open(&path).with_context(|| format!("embedded qdrant under {}", path.display()))?)
        }
    })
}

/// Serves the identity service on `listener` until `shutdown` resolves.
pub async fn run(
    config: IdentityConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let store = open_store(&config).await?;
    let embedder = match &config.embedder_url {
        Some(url) => Some(Arc::new(embedder::GrpcEmbedder::new(
            url,
            config.max_message_bytes,
            &config.security,
            config.embedder_timeout,
        )?) as Arc<dyn embedder::EmbedderClient>),
        None => None,
    };
    let server = GrpcServer::new(vec![SERVICE_NAME]).secured(&config.security);
    let identities = Identities::open(config, store, embedder, metrics::IdentityMetrics::new()).await?;
    serve(Arc::new(identities), server, listener, shutdown).await
}

/// Serves identities that are already open (tests use it to reach the domain and the metrics).
pub async fn serve(
    identities: Arc<Identities>,
    server: GrpcServer,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut background = Background::new();
    background.spawn(identities.clone().maintain());
    if let Some(hook) = identities.config().events.webhook.clone() {
        background.spawn(webhook::deliver(hook, identities.events().clone(), identities.metrics().clone()));
    }
    let follower = identities.clone();
    background.every(identities::FOLLOW_INTERVAL, move || {
        let follower = follower.clone();
        async move {
            match follower.follow_embedder().await {
                Ok(Some(model)) => tracing::info!(%model, "followed the embedder to a new model"),
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "embedder model check failed; will retry"),
            }
        }
    });
    background.metrics(identities.config().metrics_listen.as_deref(), identities.metrics().registry.clone()).await?;
    server.health().set_all(true).await;
    let limit = identities.config().max_message_bytes;
    // Event streams never end by themselves: they are told when the server stops.
    let (shutdown, closing) = reid_server::announced(shutdown);
    let grpc = IdentityServiceServer::new(service::IdentityGrpc::new(identities.clone(), closing))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let result = server.serve(listener, tonic::service::Routes::new(grpc), shutdown).await;
    background.stop().await;
    result
}
