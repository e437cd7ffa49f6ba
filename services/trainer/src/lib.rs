//! The trainer: deep metric learning for reid's embedding CNN.
//!
//! - [`loss`], [`miner`], [`sampler`]: the method (contrastive and triplet losses, batch-all,
//!   batch-hard and semi-hard mining, P x K and pair sampling);
//! - [`pseudo`], [`memory`]: pseudo-identities for unlabelled tracklets, and the cluster
//!   memory that gives them an identity loss;
//! - [`data`], [`augment`]: datasets in the layouts users have, and re-ID augmentations;
//! - [`eval`]: CMC, mAP, mINP, ROC, TAR at FAR, EER, the recommended threshold;
//! - [`adapt`]: judging an adapted candidate against the served model on operators' feedback;
//! - [`train`]: runs with checkpoints, resume, the best model, history and [`plot`]s;
//! - [`service`]: the gRPC `TrainerService`, and [`run`], what `reid serve trainer` calls.

#![warn(unreachable_pub)]

mod adam;
pub mod adapt;
mod augment;
pub mod config;
pub mod data;
mod error;
mod eval;
mod loss;
mod memory;
mod metrics;
pub mod miner;
mod model;
pub mod plot;
mod pseudo;
pub mod publish;
mod runs;
mod sampler;
mod service;
pub mod train;

use std::future::Future;

use reid_proto::v1::trainer_service_server::TrainerServiceServer;
use reid_server::{Background, GrpcServer};
use tokio::net::TcpListener;

pub use config::RunConfig;
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
    config.security.validate().map_err(|e| e.within("security"))?;
    let server = GrpcServer::new(vec![SERVICE_NAME]).secured(&config.security);
    let metrics = metrics::TrainerMetrics::new();
    let mut background = Background::new();
    background.metrics(config.metrics_listen.as_deref(), metrics.registry.clone()).await?;
    server.health().set_all(true).await;
    let grpc = TrainerServiceServer::new(service::TrainerGrpc::new(config, metrics));
    let result = server.serve(listener, tonic::service::Routes::new(grpc), shutdown).await;
    background.stop().await;
    result
}

/// `NAME-YYYYMMDD-HHMMSS` (UTC): a run's id and folder name.
pub fn run_id(name: &str) -> String {
    run_id_at(name, std::time::SystemTime::now())
}

/// A run id of `name` whose folder under `runs_dir` does not exist yet and that `taken` does not
/// claim: [`run_id`], with `-2`, `-3`, ... when runs of that name start in the same second.
pub fn fresh_run_id(runs_dir: &std::path::Path, name: &str, taken: impl Fn(&str) -> bool) -> String {
    let stem = run_id(name);
    let mut id = stem.clone();
    let mut n = 1;
    while runs_dir.join(&id).exists() || taken(&id) {
        n += 1;
        id = format!("{stem}-{n}");
    }
    id
}

fn run_id_at(name: &str, at: std::time::SystemTime) -> String {
    // RFC 3339 (`2026-12-06T06:27:45Z`) without its separators.
    let digits: String =
        humantime::format_rfc3339_seconds(at).to_string().chars().filter(char::is_ascii_digit).collect();
    format!("{name}-{}-{}", &digits[..8], &digits[8..14])
}

#[cfg(test)]
mod tests {
    #[test]
    fn run_ids_carry_the_utc_date_and_time() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_538_465);
        // python: datetime.fromtimestamp(1796538465, UTC) -> 2026-12-06 06:27:45
        assert_eq!(super::run_id_at("person", at), "person-20261206-062745");
    }
}
