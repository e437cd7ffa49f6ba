//! Network definitions, pure: a struct of layers built on an `nn::Path`, and `forward_t`. Weights
//! are loaded by the caller (safetensors through `VarStore::load`), so the trainer and the
//! embedder share these definitions and their parameter names.

mod mobilenet_v2;
mod small_cnn;

pub use mobilenet_v2::MobileNetV2;
pub use small_cnn::SmallCnn;

use tch::nn;

use crate::{InputSpec, ModelError};

/// The architectures a native model card can name.
pub const ARCHITECTURES: &[&str] = &["mobilenet_v2", "small_cnn"];

/// Builds the network `architecture` under `path`. It outputs un-normalised embeddings of
/// `embedding_dim` values for inputs of `input`.
pub fn build(
    architecture: &str,
    path: &nn::Path<'_>,
    input: InputSpec,
    embedding_dim: i64,
) -> Result<Box<dyn nn::ModuleT + Send>, ModelError> {
    match architecture {
        "mobilenet_v2" => {
            if input.channels() != 3 || embedding_dim != mobilenet_v2::FEATURE_DIM {
                return Err(ModelError::UnknownArchitecture(format!(
                    "mobilenet_v2 takes 3 channels and gives {} values",
                    mobilenet_v2::FEATURE_DIM
                )));
            }
            Ok(Box::new(MobileNetV2::new(path)))
        }
        "small_cnn" => Ok(Box::new(SmallCnn::new(path, input, embedding_dim)?)),
        other => Err(ModelError::UnknownArchitecture(other.to_owned())),
    }
}
