//! Prometheus metrics: each service owns a `Registry` (so several services can share a process,
//! as `reid up` and the tests do) and serves it as text on `GET /metrics`.

use std::future::Future;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use tokio::net::TcpListener;

/// Makes a service's metrics, each registered as it is made, in a registry of the service's own
/// whose prefix names it (`reid_<service>_*`). Names, help texts, labels and buckets are
/// constants of the code: an invalid one, or a name used twice, is a bug that panics the first
/// time the service's metrics are built (every test of the service builds them), never later.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// A registry for `service`: its metrics are named `reid_<service>_<name>`.
    pub fn new(service: &str) -> Self {
        let registry = Registry::new_custom(Some(format!("reid_{service}")), None).expect("a valid metric prefix");
        Metrics { registry }
    }

    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    fn register<C: Collector + Clone + 'static>(&self, made: prometheus::Result<C>) -> C {
        let metric = made.expect("a valid metric");
        self.registry.register(Box::new(metric.clone())).expect("each metric registered once");
        metric
    }

    pub fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help))
    }

    pub fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels))
    }

    pub fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help))
    }

    pub fn float_gauge(&self, name: &str, help: &str) -> Gauge {
        self.register(Gauge::new(name, help))
    }

    pub fn histogram(&self, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
        self.register(Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)))
    }

    pub fn histograms(&self, name: &str, help: &str, buckets: Vec<f64>, labels: &[&str]) -> HistogramVec {
        self.register(HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels))
    }
}

/// `count` histogram buckets from `start`, each `factor` times the one before.
pub fn exponential_buckets(start: f64, factor: f64, count: usize) -> Vec<f64> {
    (0..count)
        .scan(start, |b, _| {
            let this = *b;
            *b *= factor;
            Some(this)
        })
        .collect()
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_registered_under_the_service_prefix() {
        let m = Metrics::new("test");
        m.counter("things_total", "Things").inc_by(3);
        m.counters("calls_total", "Calls by code", &["code"]).with_label_values(&["OK"]).inc();
        m.histogram("seconds", "Time", exponential_buckets(0.5, 2.0, 3)).observe(1.5);
        let text = render(&m.registry());
        assert!(text.contains("reid_test_things_total 3"), "{text}");
        assert!(text.contains("reid_test_calls_total{code=\"OK\"} 1"), "{text}");
        assert!(text.contains("reid_test_seconds_bucket{le=\"2\"} 1"), "{text}");
        assert_eq!(exponential_buckets(0.001, 2.0, 3), vec![0.001, 0.002, 0.004]);
    }

    #[test]
    #[should_panic(expected = "each metric registered once")]
    fn a_name_used_twice_is_caught_when_the_metrics_are_built() {
        let m = Metrics::new("test");
        m.counter("twice_total", "One");
        m.counter("twice_total", "Two");
    }
}
