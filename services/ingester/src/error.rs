//! The ingester's errors and their one mapping to gRPC status codes.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum IngesterError {
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    #[error("camera {0:?} not found")]
    UnknownCamera(String),
    #[error("camera {0:?} already exists")]
    CameraExists(String),
    #[error("camera {0:?} reads from its source and does not take pushed frames (add it with url \"push\")")]
    NotAPushCamera(String),
    #[error("camera {0:?} already has a client pushing to it")]
    AlreadyPushing(String),
    #[error("bad camera url {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// A detector name the registry does not know, with the names it does.
    #[error("unsupported detector {name:?}: expected one of {}", known.join(", "))]
    UnsupportedDetector { name: String, known: &'static [&'static str] },
    #[error("detector {name}: {reason}")]
    DetectorUnavailable { name: String, reason: String },
    #[error("this ingester runs its limit of {0} cameras (max_cameras)")]
    TooManyCameras(usize),
    #[error("tracklet export: {0}")]
    Export(String),
    #[error("the ingester is shutting down")]
    ShuttingDown,
    #[error("opencv: {0}")]
    OpenCv(#[from] opencv::Error),
}

pub(crate) type IngesterResult<T> = Result<T, IngesterError>;

impl IngesterError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument(message.into())
    }

    pub(crate) fn bad_url(url: &str, reason: impl Into<String>) -> Self {
        Self::BadUrl { url: reid_server::truncated(url, 256).into_owned(), reason: reason.into() }
    }
}

impl From<IngesterError> for Status {
    fn from(e: IngesterError) -> Status {
        let code = match &e {
            IngesterError::InvalidArgument(_)
            | IngesterError::BadUrl { .. }
            | IngesterError::UnsupportedDetector { .. } => Code::InvalidArgument,
            IngesterError::UnknownCamera(_) => Code::NotFound,
            IngesterError::CameraExists(_) | IngesterError::AlreadyPushing(_) => Code::AlreadyExists,
            IngesterError::NotAPushCamera(_) | IngesterError::DetectorUnavailable { .. } => Code::FailedPrecondition,
            IngesterError::ShuttingDown => Code::Unavailable,
            IngesterError::TooManyCameras(_) => Code::ResourceExhausted,
            IngesterError::OpenCv(_) | IngesterError::Export(_) => Code::Internal,
        };
        // Messages can quote what a caller sent: never all of it.
        Status::new(code, reid_server::truncated(&e.to_string(), 1024))
    }
}
