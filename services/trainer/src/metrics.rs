//! The trainer's Prometheus metrics (`reid_trainer_*`).

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct TrainerMetrics {
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
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("reid_trainer".into()), None).expect("valid prefix");
        let runs_ended =
            IntCounterVec::new(Opts::new("runs_ended_total", "Runs that ended, by final state"), &["state"])
                .expect("valid counter");
        let runs_active = IntGauge::new("runs_active", "Runs training now").expect("valid gauge");
        let epochs = IntCounter::new("epochs_total", "Training epochs completed").expect("valid counter");
        let last_map = Gauge::new("last_eval_map", "mAP of the last evaluated epoch").expect("valid gauge");
        let published = IntCounter::new("models_published_total", "Models published").expect("valid counter");
        for c in [
            Box::new(runs_ended.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(runs_active.clone()),
            Box::new(epochs.clone()),
            Box::new(last_map.clone()),
            Box::new(published.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        TrainerMetrics { registry, runs_ended, runs_active, epochs, last_map, published }
    }
}
