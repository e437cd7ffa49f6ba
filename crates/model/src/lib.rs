//! Embedding models for reid.
//!
//! A model is described by a [`ModelCard`] (JSON beside its weights) and served by one of the
//! [`backend`]s: native tch networks loaded from safetensors, TorchScript files exported from
//! PyTorch re-ID libraries, or ONNX / TensorFlow graphs run by OpenCV's dnn module. Every backend
//! consumes the tensors made by the one [`preprocess`] function, which the trainer uses too, and
//! every backend's output is L2-normalised here, not by the network.

pub mod backend;
pub mod card;
pub mod device;
pub mod error;
pub mod nets;
pub mod preprocess;

pub use backend::{EmbeddingModel, load_model};
pub use card::{Backend, ColorOrder, InputSpec, ModelCard, Normalization};
pub use device::DevicePreference;
pub use error::ModelError;
pub use preprocess::{ImageInput, PixelFormat, Preprocessed, preprocess};

/// Sets how many threads libtorch and OpenCV use for one forward pass.
pub fn set_inference_threads(n: usize) {
    let n = i32::try_from(n).unwrap_or(i32::MAX);
    tch::set_num_threads(n);
    if let Err(e) = opencv::core::set_num_threads(n) {
        tracing::warn!(error = %e, "cannot set OpenCV threads");
    }
}
