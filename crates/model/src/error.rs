//! The errors of loading and running models.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model card {path}: {source}")]
    CardRead { path: PathBuf, source: std::io::Error },
    #[error("model card {path} is not valid: {reason}")]
    CardInvalid { path: PathBuf, reason: String },
    #[error("model weights {path} could not be loaded: {reason}")]
    Weights { path: PathBuf, reason: String },
    #[error("unknown architecture {0:?} (known: mobilenet_v2, small_cnn)")]
    UnknownArchitecture(String),
    #[error("image cannot be decoded: {0}")]
    Decode(String),
    #[error("image is empty (zero width or height)")]
    EmptyImage,
    #[error("raw image of {width}x{height} {format:?} needs {expected} bytes, got {actual}")]
    PixelCount { width: u32, height: u32, format: crate::PixelFormat, expected: usize, actual: usize },
    #[error("image of {width}x{height} exceeds the limit of {limit} pixels")]
    TooLarge { width: u32, height: u32, limit: u64 },
    #[error("input was prepared for {expected:?} but the model takes {actual:?}")]
    InputMismatch { expected: crate::InputSpec, actual: crate::InputSpec },
    #[error("device {0:?} is not available")]
    DeviceUnavailable(String),
    #[error("inference failed: {0}")]
    Inference(String),
}

impl From<opencv::Error> for ModelError {
    fn from(e: opencv::Error) -> Self {
        ModelError::Inference(format!("opencv: {e}"))
    }
}
