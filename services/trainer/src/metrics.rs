//! The trainer's Prometheus metrics (`reid_trainer_*`).

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Registry};
use reid_server::metrics::Metrics;

#[derive(Clone)]
pub(crate) struct TrainerMetrics {
    pub registry: Registry,
    /// Runs that ended, by final state: succeeded, failed, cancelled.
    pub runs_ended: IntCounterVec,
    /// Runs training now.
    pub runs_active: IntGauge,
    pub epochs: IntCounter,
    /// The last evaluated epoch's mAP on held-out identities, of any run.
    pub last_map: Gauge,
    pub published: IntCounter,
}

impl std::fmt::Debug for TrainerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TrainerMetrics")
    }
}

impl Default for TrainerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl TrainerMetrics {
    pub(crate) fn new() -> Self {
        let m = Metrics::new("trainer");
        TrainerMetrics {
            runs_ended: m.counters("runs_ended_total", "Runs that ended, by final state", &["state"]),
            runs_active: m.gauge("runs_active", "Runs training now"),
            epochs: m.counter("epochs_total", "Training epochs completed"),
            last_map: m.float_gauge("last_eval_map", "mAP of the last evaluated epoch"),
            published: m.counter("models_published_total", "Models published"),
            registry: m.registry(),
        }
    }
}
