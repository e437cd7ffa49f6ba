//! The webhook: every identity event POSTed as JSON to an HTTP endpoint, for systems that do not
//! speak gRPC (docs/identity.md, "Events").
//!
//! One event at a time, in order: an event is retried with backoff until the endpoint answers
//! 2xx or `max_attempts` fail, then dropped (logged, counted) and the next one goes. With a
//! secret, each request carries `x-reid-signature: sha256=HEX`, the HMAC-SHA256 of its body.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use http::Uri;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use sha2::Sha256;

use crate::config::WebhookConfig;
use crate::events::{Event, EventFilter, EventLog, Missed, Start, Watcher};
use crate::metrics::IdentityMetrics;

/// The header with the body's signature.
pub const SIGNATURE_HEADER: &str = "x-reid-signature";
/// The header with the event's cursor: a receiver that sees one twice (a retry whose answer was
/// lost) can drop it.
pub const EVENT_HEADER: &str = "x-reid-event";

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// `sha256=HEX` of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts a key of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Posts the events published from the call on (the task may start later) until it is stopped.
pub fn deliver(
    config: WebhookConfig,
    log: Arc<EventLog>,
    metrics: IdentityMetrics,
) -> impl Future<Output = ()> + Send + 'static {
    let watcher = log.watch(Start::Now);
    async move {
        match watcher {
            Ok(watcher) => follow(config, log, watcher, metrics).await,
            Err(e) => tracing::error!(error = %e, "webhook cannot read the event log"),
        }
    }
}

async fn follow(config: WebhookConfig, log: Arc<EventLog>, mut watcher: Watcher, metrics: IdentityMetrics) {
    let filter =
        EventFilter { identities: Vec::new(), enrolled_only: config.enrolled_only, cameras: config.cameras.clone() };
    loop {
        let events = match watcher.next().await {
            Ok(events) => events,
            Err(missed @ Missed::TooOld(..)) => {
                // The endpoint was down longer than the log holds: say so, and go on from now.
                tracing::error!(error = %missed, "webhook fell behind; events were not delivered");
                metrics.webhook_deliveries.with_label_values(&["dropped"]).inc();
                match log.watch(Start::Now) {
                    Ok(w) => watcher = w,
                    Err(e) => return tracing::error!(error = %e, "webhook cannot read the event log"),
                }
                continue;
            }
            Err(e) => return tracing::error!(error = %e, "webhook cannot read the event log"),
        };
        for event in events.iter().filter(|e| filter.matches(&e.kind)) {
            send(&config, event, &metrics).await;
        }
    }
}

/// One event, retried until accepted or out of attempts.
async fn send(config: &WebhookConfig, event: &Event, metrics: &IdentityMetrics) {
    let body = match serde_json::to_vec(event) {
        Ok(body) => body,
        Err(e) => return tracing::error!(error = %e, "an event that cannot be written as JSON"),
    };
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=config.max_attempts {
        match tokio::time::timeout(config.timeout, post(config, event, &body)).await {
            Ok(Ok(status)) if status.is_success() => {
                metrics.webhook_deliveries.with_label_values(&["delivered"]).inc();
                return;
            }
            Ok(Ok(status)) => tracing::warn!(%status, attempt, cursor = %event.cursor, "webhook refused an event"),
            Ok(Err(e)) => tracing::warn!(error = %e, attempt, cursor = %event.cursor, "webhook unreachable"),
            Err(_) => tracing::warn!(attempt, cursor = %event.cursor, "webhook timed out"),
        }
        if attempt < config.max_attempts {
            metrics.webhook_deliveries.with_label_values(&["retried"]).inc();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
    tracing::error!(cursor = %event.cursor, attempts = config.max_attempts, "webhook event dropped");
    metrics.webhook_deliveries.with_label_values(&["dropped"]).inc();
}

/// One HTTP/1.1 POST of `body`; the endpoint's status.
async fn post(config: &WebhookConfig, event: &Event, body: &[u8]) -> anyhow::Result<http::StatusCode> {
    let uri: Uri = config.url.parse()?;
    let host = uri.host().ok_or_else(|| anyhow::anyhow!("the webhook url has no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port)).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let authority = uri.authority().map_or(host.to_owned(), |a| a.to_string());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = http::Request::post(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(EVENT_HEADER, event.cursor.to_string());
    if let Some(secret) = &config.secret {
        request = request.header(SIGNATURE_HEADER, signature(secret.as_bytes(), body));
    }
    let response = sender.send_request(request.body(Full::new(hyper::body::Bytes::copy_from_slice(body)))?).await;
    connection.abort();
    Ok(response?.status())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        let s = signature(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(s, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
