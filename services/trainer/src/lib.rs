//! The trainer: deep metric learning for reid's embedding CNN.
//!
//! - [`loss`], [`miner`], [`sampler`]: the method (contrastive and triplet losses, batch-all,
//!   batch-hard and semi-hard mining, P x K and pair sampling);
//! - [`data`], [`augment`]: datasets in the layouts users have, and re-ID augmentations;
//! - [`eval`]: CMC, mAP, mINP, ROC, TAR at FAR, EER, the recommended threshold;
//! - [`train`]: runs with checkpoints, resume, the best model, history and [`plot`]s;
//! - [`service`]: the gRPC `TrainerService`, and [`run`], what `reid serve trainer` calls.

pub mod adam;
pub mod augment;
pub mod config;
pub mod data;
pub mod error;
pub mod eval;
pub mod loss;
pub mod metrics;
pub mod miner;
pub mod model;
pub mod plot;
pub mod pseudo;
pub mod publish;
pub mod runs;
pub mod sampler;
pub mod service;
pub mod train;

use std::future::Future;

use reid_proto::v1::trainer_service_server::TrainerServiceServer;
use reid_server::GrpcServer;
use tokio::net::TcpListener;

pub use config::TrainConfig;
pub use error::TrainError;
pub use service::TrainerConfig;
pub use train::{Event, RunOutcome, train};

/// The fully qualified gRPC name, as health checks ask for it.
pub const SERVICE_NAME: &str = "reid.v1.TrainerService";

/// Serves the trainer on `listener` until `shutdown` resolves. Runs in progress at shutdown keep
/// their last checkpoint and resume with `StartRun { resume_run_id }`.
pub async fn run(
    config: TrainerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.security.validate().map_err(anyhow::Error::msg)?;
    let server = GrpcServer::new(vec![SERVICE_NAME]).secured(&config.security);
    let metrics = metrics::TrainerMetrics::new();
    let endpoint = match &config.metrics_listen {
        Some(addr) => Some(reid_server::metrics::spawn(addr, metrics.registry.clone()).await?),
        None => None,
    };
    server.health().set_all(true).await;
    let grpc = TrainerServiceServer::new(service::TrainerGrpc::new(config, metrics));
    let result = server.serve(listener, tonic::service::Routes::new(grpc), shutdown).await;
    if let Some(endpoint) = endpoint {
        endpoint.abort();
    }
    result
}

/// `NAME-YYYYMMDD-HHMMSS` (UTC): a run's id and folder name.
pub fn run_id(name: &str) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{name}-{year:04}{month:02}{day:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}
