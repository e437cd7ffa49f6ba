//! The identity service's errors and their one mapping to gRPC status codes.

use reid_vector_store::StoreError;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    #[error("identity {0:?} not found")]
    IdentityNotFound(String),
    #[error("unknown model {id:?} version {version:?}: no gallery was built with it")]
    UnknownModel { id: String, version: String },
    #[error("embedding {index} has {got} dimensions, model {model} produces {expected}")]
    WrongDimension { index: usize, got: usize, expected: usize, model: String },
    #[error("no embedder is configured, so images cannot be embedded; send embeddings")]
    NoEmbedder,
    #[error("embedder: {0}")]
    Embedder(Status),
    #[error("the gallery of model version {version} is still being re-embedded ({done}/{total} crops)")]
    Migrating { version: String, done: usize, total: usize },
    #[error("vector store: {0}")]
    Store(#[from] StoreError),
    #[error("crop store: {context}: {source}")]
    Crops { context: String, source: std::io::Error },
}

pub type IdentityResult<T> = Result<T, IdentityError>;

impl IdentityError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument(message.into())
    }

    pub(crate) fn crops(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Crops { context, source }
    }
}

impl From<IdentityError> for Status {
    fn from(e: IdentityError) -> Status {
        let code = match &e {
            IdentityError::InvalidArgument(_) | IdentityError::WrongDimension { .. } => Code::InvalidArgument,
            IdentityError::IdentityNotFound(_) | IdentityError::UnknownModel { .. } => Code::NotFound,
            IdentityError::NoEmbedder => Code::FailedPrecondition,
            // The embedder's own verdict (a corrupt image is INVALID_ARGUMENT there too) passes
            // through; a failure for now is UNAVAILABLE to our caller, who may retry, except
            // RESOURCE_EXHAUSTED, which asks them to slow down.
            IdentityError::Embedder(status) => match status.code() {
                Code::ResourceExhausted => Code::ResourceExhausted,
                code if reid_server::client::is_transient(code) => Code::Unavailable,
                code => code,
            },
            IdentityError::Migrating { .. } => Code::Unavailable,
            // A key the store refuses is this deployment's fault, not the caller's, and is fixed
            // without the caller changing anything (a rotated key put back in place).
            IdentityError::Store(StoreError::Unavailable(_) | StoreError::Unauthorized(_)) => Code::Unavailable,
            IdentityError::Store(StoreError::DimensionMismatch { .. } | StoreError::InvalidVector(_)) => {
                Code::InvalidArgument
            }
            IdentityError::Store(_) | IdentityError::Crops { .. } => Code::Internal,
        };
        // Messages can quote what a caller sent: never all of it.
        Status::new(code, reid_server::truncated(&e.to_string(), 1024))
    }
}
