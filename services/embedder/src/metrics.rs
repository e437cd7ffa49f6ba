//! The embedder's Prometheus metrics.

use prometheus::{Histogram, IntCounter, IntCounterVec, Registry};
use reid_server::metrics::{Metrics, exponential_buckets};

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
        let m = Metrics::new("embedder");
        let batch_sizes = vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
        EmbedderMetrics {
            batch_size: m.histogram("batch_size", "Images per model batch", batch_sizes),
            queue_wait_seconds: m.histogram(
                "queue_wait_seconds",
                "Time a request waited before its batch ran",
                exponential_buckets(0.0005, 2.0, 14),
            ),
            inference_seconds: m.histogram(
                "inference_seconds",
                "Model time per batch",
                exponential_buckets(0.001, 2.0, 14),
            ),
            requests: m.counters("requests_total", "Embed requests by gRPC status code", &["code"]),
            images: m.counter("images_total", "Images embedded"),
            model_swaps: m.counter("model_swaps_total", "Models swapped in while serving"),
            registry: m.registry(),
        }
    }
}

impl Default for EmbedderMetrics {
    fn default() -> Self {
        Self::new()
    }
}
