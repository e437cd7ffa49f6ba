//! Prometheus metrics: each service owns a `Registry` (so several services can share a process,
//! as `reid up` and the tests do) and serves it as text on `GET /metrics`.

use std::future::Future;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;

/// Renders `registry` in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut buf) {
        tracing::warn!(error = %e, "cannot encode metrics");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// Serves `GET /metrics` for `registry` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let body = render(&registry);
            async move { ([(CONTENT_TYPE, prometheus::TEXT_FORMAT)], body) }
        }),
    );
    tracing::info!(%addr, "serving metrics");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

/// Binds `addr` and serves `registry` there in the background until the task is aborted; the
/// bind error (address taken, bad address) is returned at once.
pub async fn spawn(addr: &str, registry: Registry) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("metrics listener {addr}: {e}"))?;
    Ok(tokio::spawn(async move {
        if let Err(e) = serve(listener, registry, std::future::pending()).await {
            tracing::warn!(error = %e, "metrics endpoint stopped");
        }
    }))
}
