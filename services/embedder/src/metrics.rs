//! The embedder's Prometheus metrics.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct EmbedderMetrics {
    pub registry: Registry,
    pub batch_size: Histogram,
    pub queue_wait_seconds: Histogram,
    pub inference_seconds: Histogram,
    pub requests: IntCounterVec,
    pub images: IntCounter,
    pub model_swaps: IntCounter,
}

impl std::fmt::Debug for EmbedderMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmbedderMetrics")
    }
}

impl EmbedderMetrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("reid_embedder".into()), None).expect("valid prefix");
        let batch_size = Histogram::with_opts(
            HistogramOpts::new("batch_size", "Images per model batch")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )
        .expect("valid histogram");
        let queue_wait_seconds = Histogram::with_opts(
            HistogramOpts::new("queue_wait_seconds", "Time a request waited before its batch ran")
                .buckets(prometheus::exponential_buckets(0.0005, 2.0, 14).expect("valid buckets")),
        )
        .expect("valid histogram");
        let inference_seconds = Histogram::with_opts(
            HistogramOpts::new("inference_seconds", "Model time per batch")
                .buckets(prometheus::exponential_buckets(0.001, 2.0, 14).expect("valid buckets")),
        )
        .expect("valid histogram");
        let requests = IntCounterVec::new(Opts::new("requests_total", "Embed requests by gRPC status code"), &["code"])
            .expect("valid counter");
        let images = IntCounter::new("images_total", "Images embedded").expect("valid counter");
        let model_swaps =
            IntCounter::new("model_swaps_total", "Models swapped in while serving").expect("valid counter");
        for m in [
            Box::new(batch_size.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(queue_wait_seconds.clone()),
            Box::new(inference_seconds.clone()),
            Box::new(requests.clone()),
            Box::new(images.clone()),
            Box::new(model_swaps.clone()),
        ] {
            registry.register(m).expect("metrics registered once");
        }
        EmbedderMetrics { registry, batch_size, queue_wait_seconds, inference_seconds, requests, images, model_swaps }
    }
}

impl Default for EmbedderMetrics {
    fn default() -> Self {
        Self::new()
    }
}
