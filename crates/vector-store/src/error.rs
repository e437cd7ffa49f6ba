//! The store's one error type.

/// What can go wrong talking to a vector store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("collection {0:?} does not exist")]
    CollectionNotFound(String),
    /// The store refused this client's credentials (a wrong or missing API key).
    #[error("{0}")]
    Unauthorized(String),
    #[error("vector has {got} dimensions, the collection holds {expected}")]
    DimensionMismatch { expected: usize, got: usize },
    #[error("invalid vector: {0}")]
    InvalidVector(String),
    #[error("invalid name {0:?}: use letters, digits, '-' and '_'")]
    InvalidName(String),
    #[error("the store is unreachable: {0}")]
    Unavailable(String),
    #[error("{backend} error: {message}")]
    Backend { backend: &'static str, message: String },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}
