//! Running a model: the [`EmbeddingModel`] trait and its three backends, and test-time flipping
//! over any of them.
//!
//! A backend takes a batch of pre-processed images and returns one L2-normalised row per image.
//! Backends are `Send` but used from one thread at a time: the embedder keeps its model on a
//! dedicated inference thread, off the async runtime.

mod dnn;
mod flip;
mod native;
mod torchscript;

use std::path::Path;

pub use dnn::OpenCvDnnModel;
pub use native::NativeModel;
pub use torchscript::TorchScriptModel;

use crate::{Backend, DevicePreference, ModelCard, ModelError};

pub trait EmbeddingModel: Send {
    fn card(&self) -> &ModelCard;

    /// `cpu` or `cuda:N`.
    fn device(&self) -> String;

    /// Embeds `batch` (each row `card().input.numel()` floats, CHW) into L2-normalised vectors of
    /// `card().embedding_dim` values, one per row, in order.
    fn embed(&mut self, batch: &[&[f32]]) -> Result<Vec<Vec<f32>>, ModelError>;
}

/// How to place a model.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    pub device: DevicePreference,
    /// Run in half precision when the model lands on a GPU (ignored on CPU).
    pub fp16: bool,
}

/// Loads the model described by the card at `path` (a card file or the folder holding
/// `model.json`).
pub fn load_model(path: &Path, options: LoadOptions) -> Result<Box<dyn EmbeddingModel>, ModelError> {
    let (card, card_path) = ModelCard::load(path)?;
    let weights = card.weights_path(&card_path);
    if !weights.is_file() {
        return Err(ModelError::Weights { path: weights, reason: "file not found".into() });
    }
    let flip = card.flip;
    let model: Box<dyn EmbeddingModel> = match card.backend {
        Backend::Native => Box::new(NativeModel::load(card, &weights, options)?),
        Backend::Torchscript => Box::new(TorchScriptModel::load(card, &weights, options)?),
        Backend::Onnx | Backend::Tensorflow => Box::new(OpenCvDnnModel::load(card, &weights)?),
    };
    Ok(if flip { Box::new(flip::Flipped::new(model)) } else { model })
}

/// Splits a flat `[n, dim]` output into L2-normalised rows, refusing wrong sizes and NaNs.
pub(crate) fn normalised_rows(flat: &[f32], n: usize, dim: usize) -> Result<Vec<Vec<f32>>, ModelError> {
    if flat.len() != n * dim {
        return Err(ModelError::Inference(format!(
            "model produced {} values for {n} images, expected {n} x {dim}",
            flat.len()
        )));
    }
    flat.chunks_exact(dim)
        .map(|row| {
            let norm = row.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
            if !norm.is_finite() {
                return Err(ModelError::Inference("model produced a non-finite embedding".into()));
            }
            // A zero vector stays zero rather than becoming NaN.
            let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
            Ok(row.iter().map(|v| (f64::from(*v) * scale) as f32).collect())
        })
        .collect()
}

/// Concatenates a batch into one `[n, c, h, w]` buffer, checking every row's length.
pub(crate) fn stack(batch: &[&[f32]], card: &ModelCard) -> Result<Vec<f32>, ModelError> {
    let numel = card.input.numel();
    let mut flat = Vec::with_capacity(numel * batch.len());
    for row in batch {
        if row.len() != numel {
            return Err(ModelError::Inference(format!("input row has {} values, the model takes {numel}", row.len())));
        }
        flat.extend_from_slice(row);
    }
    Ok(flat)
}

/// Runs libtorch code that may panic (tch's infallible wrappers unwrap C++ exceptions) and turns
/// a panic into an error, so that one bad batch never takes the inference thread down.
fn guarded<T>(f: impl FnOnce() -> Result<T, ModelError>) -> Result<T, ModelError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("panic");
        Err(ModelError::Inference(msg.to_owned()))
    })
}

/// Turns a float tensor of `[n, dim]` into rows.
fn tensor_rows(out: &tch::Tensor, n: usize, dim: usize) -> Result<Vec<Vec<f32>>, ModelError> {
    let out = out
        .f_to_kind(tch::Kind::Float)
        .and_then(|t| t.f_to_device(tch::Device::Cpu))
        .and_then(|t| t.f_contiguous())
        .and_then(|t| t.f_view([-1i64].as_slice()))
        .map_err(|e| ModelError::Inference(e.to_string()))?;
    let flat = Vec::<f32>::try_from(&out).map_err(|e| ModelError::Inference(e.to_string()))?;
    normalised_rows(&flat, n, dim)
}

/// The embed path shared by the libtorch backends: stack the batch into a tensor on `device`,
/// run `forward` without gradients, normalise the rows, and turn any libtorch panic into an error.
pub(crate) fn embed_with_tch(
    batch: &[&[f32]],
    card: &ModelCard,
    device: tch::Device,
    half: bool,
    forward: impl FnOnce(&tch::Tensor) -> Result<tch::Tensor, ModelError>,
) -> Result<Vec<Vec<f32>>, ModelError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    guarded(|| {
        let xs = input_tensor(batch, card, device, half)?;
        let out = tch::no_grad(|| forward(&xs))?;
        tensor_rows(&out, batch.len(), card.embedding_dim as usize)
    })
}

/// The input batch as a tensor on `device`, in half precision when `half`.
fn input_tensor(
    batch: &[&[f32]],
    card: &ModelCard,
    device: tch::Device,
    half: bool,
) -> Result<tch::Tensor, ModelError> {
    let flat = stack(batch, card)?;
    let shape =
        [batch.len() as i64, card.input.channels() as i64, i64::from(card.input.height), i64::from(card.input.width)];
    let kind = if half { tch::Kind::Half } else { tch::Kind::Float };
    tch::Tensor::f_from_slice(&flat)
        .and_then(|t| t.f_view(shape.as_slice()))
        .and_then(|t| t.f_to_device(device))
        .and_then(|t| t.f_to_kind(kind))
        .map_err(|e| ModelError::Inference(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_unit_length_and_sizes_checked() {
        let rows = normalised_rows(&[3.0, 4.0, 0.0, 0.0], 2, 2).unwrap();
        assert_eq!(rows, vec![vec![0.6, 0.8], vec![0.0, 0.0]]);
        assert!(normalised_rows(&[1.0, 2.0, 3.0], 2, 2).is_err());
        assert!(normalised_rows(&[f32::NAN, 1.0], 1, 2).is_err());
    }
}
