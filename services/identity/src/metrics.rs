//! The identity service's Prometheus metrics.

use prometheus::{HistogramVec, IntCounter, IntCounterVec, Registry};
use reid_server::metrics::{Metrics, exponential_buckets};

#[derive(Clone)]
pub struct IdentityMetrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub identify_decisions: IntCounterVec,
    pub observations: IntCounterVec,
    pub enrolled_images: IntCounter,
    pub forgotten: IntCounter,
    pub expired_sightings: IntCounter,
    pub migrations: IntCounter,
    pub replica_merges: IntCounter,
    pub identity_merges: IntCounter,
    pub events: IntCounterVec,
    pub webhook_deliveries: IntCounterVec,
}

impl std::fmt::Debug for IdentityMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityMetrics")
    }
}

impl IdentityMetrics {
    pub fn new() -> Self {
        let m = Metrics::new("identity");
        Self {
            requests: m.counters("requests_total", "Requests by method and gRPC status code", &["method", "code"]),
            request_seconds: m.histograms(
                "request_seconds",
                "Request latency by method",
                exponential_buckets(0.0005, 2.0, 16),
                &["method"],
            ),
            identify_decisions: m.counters("identify_decisions_total", "Identify answers by decision", &["decision"]),
            observations: m.counters(
                "observations_total",
                "Tracklets associated, to a new or an existing identity",
                &["identity"],
            ),
            enrolled_images: m.counter("enrolled_images_total", "Images enrolled"),
            forgotten: m.counter("forgotten_total", "Identities erased"),
            expired_sightings: m.counter("expired_sightings_total", "Anonymous sightings removed by the TTL"),
            migrations: m.counter("gallery_migrations_total", "Galleries re-embedded for a new model version"),
            replica_merges: m.counter(
                "replica_merges_total",
                "Identities that concurrent Observes on two replicas started for one person, merged",
            ),
            identity_merges: m.counter(
                "identity_merges_total",
                "Identities the merge pass found to be one person with another, merged",
            ),
            events: m.counters("events_total", "Identity events published (Watch, webhook), by kind", &["kind"]),
            webhook_deliveries: m.counters(
                "webhook_deliveries_total",
                "Webhook POSTs by outcome: delivered, retried (a failed attempt), dropped (attempts exhausted)",
                &["outcome"],
            ),
            registry: m.registry(),
        }
    }
}

impl Default for IdentityMetrics {
    fn default() -> Self {
        Self::new()
    }
}
