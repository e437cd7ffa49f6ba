//! The identity service's Prometheus metrics.

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

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
}

impl std::fmt::Debug for IdentityMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityMetrics")
    }
}

impl IdentityMetrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("reid_identity".into()), None).expect("valid prefix");
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "Requests by method and gRPC status code"),
            &["method", "code"],
        )
        .expect("valid counter");
        let request_seconds = HistogramVec::new(
            HistogramOpts::new("request_seconds", "Request latency by method")
                .buckets(prometheus::exponential_buckets(0.0005, 2.0, 16).expect("valid buckets")),
            &["method"],
        )
        .expect("valid histogram");
        let identify_decisions =
            IntCounterVec::new(Opts::new("identify_decisions_total", "Identify answers by decision"), &["decision"])
                .expect("valid counter");
        let observations = IntCounterVec::new(
            Opts::new("observations_total", "Tracklets associated, to a new or an existing identity"),
            &["identity"],
        )
        .expect("valid counter");
        let enrolled_images = IntCounter::new("enrolled_images_total", "Images enrolled").expect("valid counter");
        let forgotten = IntCounter::new("forgotten_total", "Identities erased").expect("valid counter");
        let expired_sightings = IntCounter::new("expired_sightings_total", "Anonymous sightings removed by the TTL")
            .expect("valid counter");
        let migrations = IntCounter::new("gallery_migrations_total", "Galleries re-embedded for a new model version")
            .expect("valid counter");
        let replica_merges = IntCounter::new(
            "replica_merges_total",
            "Identities that concurrent Observes on two replicas started for one person, merged",
        )
        .expect("valid counter");
        let identity_merges = IntCounter::new(
            "identity_merges_total",
            "Identities the merge pass found to be one person with another, merged",
        )
        .expect("valid counter");
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_seconds.clone()),
            Box::new(identify_decisions.clone()),
            Box::new(observations.clone()),
            Box::new(enrolled_images.clone()),
            Box::new(forgotten.clone()),
            Box::new(expired_sightings.clone()),
            Box::new(migrations.clone()),
            Box::new(replica_merges.clone()),
            Box::new(identity_merges.clone()),
        ] {
            registry.register(m).expect("metrics registered once");
        }
        Self {
            registry,
            requests,
            request_seconds,
            identify_decisions,
            observations,
            enrolled_images,
            forgotten,
            expired_sightings,
            migrations,
            replica_merges,
            identity_merges,
        }
    }
}

impl Default for IdentityMetrics {
    fn default() -> Self {
        Self::new()
    }
}
