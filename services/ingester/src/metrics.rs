//! The ingester's Prometheus metrics (`reid_ingester_*`).

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

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
        let registry = Registry::new_custom(Some("reid_ingester".into()), None).expect("valid prefix");
        let frames = IntCounterVec::new(
            Opts::new("frames_total", "Frames by camera and outcome (processed, or the drop reason)"),
            &["camera", "outcome"],
        )
        .expect("valid counter");
        let detect_seconds = HistogramVec::new(
            HistogramOpts::new("detect_seconds", "Detector time per processed frame")
                .buckets(prometheus::exponential_buckets(0.001, 2.0, 14).expect("valid buckets")),
            &["detector"],
        )
        .expect("valid histogram");
        let tracklets = IntCounterVec::new(
            Opts::new("tracklets_total", "Tracklets by outcome: emitted, delivered, dropped, rejected"),
            &["outcome"],
        )
        .expect("valid counter");
        let outbox = IntGauge::new("outbox_tracklets", "Tracklets waiting for delivery").expect("valid gauge");
        let embedded_crops = IntCounter::new("embedded_crops_total", "Crops embedded").expect("valid counter");
        let delivery_retries =
            IntCounter::new("delivery_retries_total", "Delivery attempts that failed and were retried")
                .expect("valid counter");
        let reconnects = IntCounterVec::new(Opts::new("reconnects_total", "Source reconnections"), &["camera"])
            .expect("valid counter");
        for c in [
            Box::new(frames.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(detect_seconds.clone()),
            Box::new(tracklets.clone()),
            Box::new(outbox.clone()),
            Box::new(embedded_crops.clone()),
            Box::new(delivery_retries.clone()),
            Box::new(reconnects.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Self { registry, frames, detect_seconds, tracklets, outbox, embedded_crops, delivery_retries, reconnects }
    }
}
