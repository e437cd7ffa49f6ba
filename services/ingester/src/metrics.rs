//! The ingester's Prometheus metrics (`reid_ingester_*`).

use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge, Registry};
use reid_server::metrics::{Metrics, exponential_buckets};

#[derive(Clone)]
pub struct IngesterMetrics {
    pub registry: Registry,
    /// Frames by camera and outcome: `processed`, or the reason they were dropped.
    pub frames: IntCounterVec,
    pub detect_seconds: HistogramVec,
    /// Tracklets by outcome: `emitted`, `delivered`, `dropped` (outbox full), `rejected`.
    pub tracklets: IntCounterVec,
    pub outbox: IntGauge,
    pub embedded_crops: IntCounter,
    pub delivery_retries: IntCounter,
    pub reconnects: IntCounterVec,
}

impl std::fmt::Debug for IngesterMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IngesterMetrics")
    }
}

impl Default for IngesterMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl IngesterMetrics {
    pub fn new() -> Self {
        let m = Metrics::new("ingester");
        Self {
            frames: m.counters(
                "frames_total",
                "Frames by camera and outcome (processed, or the drop reason)",
                &["camera", "outcome"],
            ),
            detect_seconds: m.histograms(
                "detect_seconds",
                "Detector time per processed frame",
                exponential_buckets(0.001, 2.0, 14),
                &["detector"],
            ),
            tracklets: m.counters(
                "tracklets_total",
                "Tracklets by outcome: emitted, delivered, dropped, rejected",
                &["outcome"],
            ),
            outbox: m.gauge("outbox_tracklets", "Tracklets waiting for delivery"),
            embedded_crops: m.counter("embedded_crops_total", "Crops embedded"),
            delivery_retries: m.counter("delivery_retries_total", "Delivery attempts that failed and were retried"),
            reconnects: m.counters("reconnects_total", "Source reconnections", &["camera"]),
            registry: m.registry(),
        }
    }
}
