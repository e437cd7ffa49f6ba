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
pub mod miner;
pub mod model;
pub mod plot;
pub mod sampler;
pub mod train;

pub use config::TrainConfig;
pub use error::TrainError;
pub use train::{Event, RunOutcome, train};
