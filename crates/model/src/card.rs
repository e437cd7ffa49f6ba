//! The model card: one JSON format that describes a model for every backend.
//!
//! ```json
//! {
//!   "id": "mobilenetv2-imagenet", "version": "2026-11-28.1",
//!   "backend": "native", "architecture": "mobilenet_v2", "weights": "model.safetensors",
//!   "input": { "width": 128, "height": 256, "channels": 3, "color": "rgb" },
//!   "normalization": { "kind": "mean_std", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225] },
//!   "embedding_dim": 1280, "match_threshold": 0.8
//! }
//! ```
//! Paths in a card are relative to the card's folder.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// The file name of a card inside a model folder.
pub const CARD_FILE: &str = "model.json";

/// Whether `name` is a single folder name (not empty, not `.` or `..`, no separator): the only
/// form in which a model or run may be named over the wire, so that no request reaches outside
/// the folder it is meant for.
pub fn is_folder_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A network defined in [`crate::nets`], weights in safetensors.
    Native,
    /// A TorchScript file (`torch.jit.trace`/`script`), e.g. exported from torchreid or FastReID.
    Torchscript,
    /// An ONNX graph run by OpenCV dnn.
    Onnx,
    /// A TensorFlow frozen graph (`.pb`) run by OpenCV dnn.
    Tensorflow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorOrder {
    Rgb,
    Bgr,
    Gray,
}

/// The tensor a model takes: `[N, channels, height, width]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSpec {
    pub width: u32,
    pub height: u32,
    pub color: ColorOrder,
}

impl InputSpec {
    pub fn channels(&self) -> usize {
        match self.color {
            ColorOrder::Gray => 1,
            ColorOrder::Rgb | ColorOrder::Bgr => 3,
        }
    }

    /// Number of floats in one pre-processed image.
    pub fn numel(&self) -> usize {
        self.channels() * self.width as usize * self.height as usize
    }
}

/// How pixel values become network inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Normalization {
    /// `(x / 255 - mean[c]) / std[c]`, per channel in the card's colour order.
    MeanStd { mean: Vec<f32>, std: Vec<f32> },
    /// Per-image standardisation ("prewhitening", FaceNet): `(x - mean(x)) / max(std(x), 1/sqrt(n))`.
    PerImage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub id: String,
    pub version: String,
    pub backend: Backend,
    /// For `native` models: which network of [`crate::nets`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// Weights file, relative to the card.
    pub weights: PathBuf,
    pub input: InputSpec,
    pub normalization: Normalization,
    pub embedding_dim: u32,
    /// Open-set decision threshold on cosine similarity: at or above it, two crops are the same
    /// identity. Calibrated by the trainer's evaluation.
    pub match_threshold: f32,
    /// The identity service's merge pass threshold (average cosine similarity between two
    /// identities' recent tracklets) measured for this model; the service uses it when its own
    /// `association.merge_threshold` is unset, and runs no merge pass when neither is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_threshold: Option<f32>,
    /// For OpenCV dnn graphs: the output layer to read (empty: the last one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The largest batch the exported graph accepts; some exports fix it (FaceNet's frozen graph
    /// takes one image at a time). Larger batches are run in chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<u32>,
    /// Embed each crop together with its mirror image and average the two (test-time flip
    /// augmentation); the thresholds above are measured with it. Embeddings made with and
    /// without it are not comparable, so turning it on or off is a new version.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flip: bool,
    /// Held-out evaluation figures written by the trainer (`rank1`, `mAP`, ...).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub metrics: serde_json::Map<String, serde_json::Value>,
    /// Where the weights come from and under which licence.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

impl ModelCard {
    /// Reads and validates a card; `path` is the card file or the model folder holding it.
    pub fn load(path: &Path) -> Result<(ModelCard, PathBuf), ModelError> {
        let card_path = if path.is_dir() { path.join(CARD_FILE) } else { path.to_owned() };
        let text = std::fs::read_to_string(&card_path)
            .map_err(|source| ModelError::CardRead { path: card_path.clone(), source })?;
        let card: ModelCard = serde_json::from_str(&text)
            .map_err(|e| ModelError::CardInvalid { path: card_path.clone(), reason: e.to_string() })?;
        card.validate().map_err(|reason| ModelError::CardInvalid { path: card_path.clone(), reason })?;
        Ok((card, card_path))
    }

    /// The weights file, resolved against the folder of the card at `card_path`.
    pub fn weights_path(&self, card_path: &Path) -> PathBuf {
        card_path.parent().unwrap_or(Path::new(".")).join(&self.weights)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.id.is_empty() || self.version.is_empty() {
            return Err("id and version must be set".into());
        }
        if self.input.width == 0 || self.input.height == 0 {
            return Err("input width and height must be positive".into());
        }
        if self.embedding_dim == 0 {
            return Err("embedding_dim must be positive".into());
        }
        if !(-1.0..=1.0).contains(&self.match_threshold) {
            return Err("match_threshold is a cosine similarity in [-1, 1]".into());
        }
        if self.merge_threshold.is_some_and(|t| !(-1.0..=1.0).contains(&t)) {
            return Err("merge_threshold is a cosine similarity in [-1, 1]".into());
        }
        if let Normalization::MeanStd { mean, std } = &self.normalization {
            let c = self.input.channels();
            if mean.len() != c || std.len() != c {
                return Err(format!("normalization needs {c} mean and std values"));
            }
            if std.iter().any(|s| *s <= 0.0) {
                return Err("normalization std values must be positive".into());
            }
        }
        if self.max_batch == Some(0) {
            return Err("max_batch must be positive when set".into());
        }
        if self.backend == Backend::Native && self.architecture.is_none() {
            return Err("a native model names its architecture".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card_json() -> serde_json::Value {
        serde_json::json!({
            "id": "m", "version": "1", "backend": "native", "architecture": "small_cnn",
            "weights": "w.safetensors",
            "input": {"width": 28, "height": 28, "color": "gray"},
            "normalization": {"kind": "mean_std", "mean": [0.5], "std": [0.5]},
            "embedding_dim": 10, "match_threshold": 0.5
        })
    }

    #[test]
    fn parses_and_validates() {
        let card: ModelCard = serde_json::from_value(card_json()).unwrap();
        assert_eq!(card.input.numel(), 28 * 28);
        assert!(card.validate().is_ok());
        assert_eq!(card.weights_path(Path::new("models/m/model.json")), Path::new("models/m/w.safetensors"));
    }

    #[test]
    fn rejects_wrong_normalisation_arity_and_threshold() {
        let mut v = card_json();
        v["normalization"]["mean"] = serde_json::json!([0.5, 0.5, 0.5]);
        let card: ModelCard = serde_json::from_value(v).unwrap();
        assert!(card.validate().unwrap_err().contains("1 mean"));
        let mut v = card_json();
        v["match_threshold"] = serde_json::json!(3.0);
        let card: ModelCard = serde_json::from_value(v).unwrap();
        assert!(card.validate().is_err());
        let mut v = card_json();
        assert_eq!(serde_json::from_value::<ModelCard>(v.clone()).unwrap().merge_threshold, None, "optional");
        v["merge_threshold"] = serde_json::json!(1.5);
        let card: ModelCard = serde_json::from_value(v).unwrap();
        assert!(card.validate().unwrap_err().contains("merge_threshold"));
    }

    #[test]
    fn folder_names_cannot_escape() {
        assert!(is_folder_name("mobilenetv2-imagenet"));
        for bad in ["", ".", "..", "../models", "a/b", "a\\b", "/etc"] {
            assert!(!is_folder_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn missing_card_is_a_read_error() {
        let err = ModelCard::load(Path::new("/nonexistent/model.json")).unwrap_err();
        assert!(matches!(err, ModelError::CardRead { .. }));
    }
}
