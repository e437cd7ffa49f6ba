//! The embedder's errors and their one mapping to gRPC status codes.

use reid_model::ModelError;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum EmbedderError {
    #[error("request has no images")]
    NoImages,
    #[error("request has {got} images, the limit is {limit}")]
    TooManyImages { got: usize, limit: usize },
    #[error("image {index}: {reason}")]
    InvalidImage { index: usize, reason: String },
    #[error("image {index} is too large: {reason}")]
    ImageTooLarge { index: usize, reason: String },
    #[error("no model is loaded: {0}")]
    NoModel(String),
    #[error("model {0:?} not found")]
    ModelNotFound(String),
    #[error("invalid model name {0:?}: a folder name under the model directory")]
    InvalidModelName(String),
    #[error("model {name:?} cannot be loaded: {source}")]
    ModelLoad { name: String, source: ModelError },
    #[error("embedder is overloaded: {0} requests queued")]
    Overloaded(usize),
    #[error("embedder is shutting down")]
    ShuttingDown,
    #[error("inference failed: {0}")]
    Inference(String),
}

impl From<EmbedderError> for Status {
    fn from(e: EmbedderError) -> Status {
        let code = match &e {
            EmbedderError::NoImages
            | EmbedderError::TooManyImages { .. }
            | EmbedderError::InvalidImage { .. }
            // An image over the size limit is the request's fault, and sending it again cannot
            // help: not RESOURCE_EXHAUSTED, which callers retry.
            | EmbedderError::ImageTooLarge { .. }
            | EmbedderError::InvalidModelName(_) => Code::InvalidArgument,
            EmbedderError::Overloaded(_) => Code::ResourceExhausted,
            EmbedderError::NoModel(_) | EmbedderError::ModelLoad { .. } => Code::FailedPrecondition,
            EmbedderError::ModelNotFound(_) => Code::NotFound,
            EmbedderError::ShuttingDown => Code::Unavailable,
            EmbedderError::Inference(_) => Code::Internal,
        };
        // Messages can quote what a caller sent: never all of it.
        Status::new(code, reid_server::truncated(&e.to_string(), 1024))
    }
}
