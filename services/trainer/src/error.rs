//! The trainer's errors and their one mapping to gRPC status codes.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid training config: {0}")]
    Config(String),
    #[error("dataset: {0}")]
    Dataset(String),
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error(transparent)]
    Model(#[from] reid_model::ModelError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("run {0:?} not found")]
    RunNotFound(String),
    #[error("run {run} has no {what} yet")]
    NotReady { run: String, what: &'static str },
    #[error("run was cancelled")]
    Cancelled,
    #[error("invalid model name {0:?}: a folder name under the model directory")]
    InvalidModelName(String),
    #[error("embedder {addr}: {message}")]
    Embedder { addr: String, message: String },
}

impl TrainError {
    pub fn io(path: impl Into<std::path::PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
        let path = path.into();
        move |source| TrainError::Io { path, source }
    }
}

impl From<TrainError> for Status {
    fn from(e: TrainError) -> Status {
        let code = match &e {
            TrainError::Config(_) | TrainError::Dataset(_) | TrainError::InvalidModelName(_) => Code::InvalidArgument,
            TrainError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => Code::InvalidArgument,
            TrainError::RunNotFound(_) => Code::NotFound,
            TrainError::NotReady { .. } => Code::FailedPrecondition,
            TrainError::Cancelled => Code::Cancelled,
            TrainError::Embedder { .. } => Code::Unavailable,
            TrainError::Io { .. } | TrainError::Model(_) | TrainError::Torch(_) => Code::Internal,
        };
        // Messages can quote what a caller sent: never all of it.
        Status::new(code, reid_server::truncated(&e.to_string(), 1024))
    }
}
