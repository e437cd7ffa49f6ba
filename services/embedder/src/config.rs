//! The embedder's configuration: one struct, filled from a TOML file, then `REID_EMBEDDER_*`
//! environment variables and flags (by the CLI); tests build it directly.

use std::path::PathBuf;
use std::time::Duration;

use reid_model::DevicePreference;
use reid_server::invalid::{Invalid, ensure, positive};
use serde::Deserialize;

/// reid's default person model, committed under `models/`: MobileNetV2 fine-tuned on the
/// tracklets the ingester cuts from vtest.avi (`make person-model`; card and figures in
/// docs/models.md).
pub const DEFAULT_MODEL: &str = "person-vtest";

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedderConfig {
    /// Folder of model folders, each holding a `model.json` card.
    pub model_dir: PathBuf,
    /// The model folder (under `model_dir`) served at start.
    pub model: String,
    pub device: DevicePreference,
    /// Half precision on GPU.
    pub fp16: bool,
    /// Most images in one model batch.
    pub max_batch: usize,
    /// Longest a request waits for others to fill its batch.
    #[serde(with = "reid_server::duration::millis")]
    pub max_delay: Duration,
    /// Requests waiting for the model beyond which new ones get RESOURCE_EXHAUSTED.
    pub queue_capacity: usize,
    /// Most images in one request.
    pub max_images_per_request: usize,
    /// Largest encoded or raw image, in bytes.
    pub max_image_bytes: usize,
    /// Largest decoded image, in pixels.
    pub max_image_pixels: u64,
    /// Largest gRPC message, in bytes.
    pub max_message_bytes: usize,
    /// How often the served model's card is checked for a new version (0 disables watching).
    #[serde(with = "reid_server::duration::millis")]
    pub watch_interval: Duration,
    /// libtorch intra-op threads (0: libtorch's default, one per core).
    pub threads: usize,
    /// Serve Prometheus metrics (`GET /metrics`) on this address.
    pub metrics_listen: Option<String>,
    /// API key and TLS, for callers and for the services this one calls.
    pub security: reid_server::Security,
}

impl Default for EmbedderConfig {
    fn default() -> Self {
        EmbedderConfig {
            model_dir: PathBuf::from("models"),
            model: DEFAULT_MODEL.to_owned(),
            device: DevicePreference::Auto,
            fp16: false,
            max_batch: 32,
            max_delay: Duration::from_millis(5),
            queue_capacity: 1024,
            max_images_per_request: 256,
            max_image_bytes: 8 << 20,
            max_image_pixels: reid_model::preprocess::DEFAULT_MAX_PIXELS,
            max_message_bytes: 64 << 20,
            watch_interval: Duration::from_secs(2),
            threads: 0,
            metrics_listen: None,
            security: reid_server::Security::default(),
        }
    }
}

impl EmbedderConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        self.security.validate().map_err(|e| e.within("security"))?;
        positive(&[
            ("max_batch", self.max_batch as u64),
            ("queue_capacity", self.queue_capacity as u64),
            ("max_images_per_request", self.max_images_per_request as u64),
        ])?;
        ensure(self.max_image_bytes <= self.max_message_bytes, "max_image_bytes", || {
            format!("{} cannot exceed max_message_bytes ({})", self.max_image_bytes, self.max_message_bytes)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults() {
        let c: EmbedderConfig = toml::from_str("max_batch = 8\nmax_delay = 20\nmodel = \"facenet\"").unwrap();
        assert_eq!(c.max_batch, 8);
        assert_eq!(c.max_delay, Duration::from_millis(20));
        assert_eq!(c.model, "facenet");
        assert_eq!(c.queue_capacity, EmbedderConfig::default().queue_capacity);
        assert!(toml::from_str::<EmbedderConfig>("max_btch = 8").is_err(), "typos are errors");
        assert!(c.validate().is_ok());
        assert_eq!(EmbedderConfig { queue_capacity: 0, ..c.clone() }.validate().unwrap_err().key, "queue_capacity");
        let big = EmbedderConfig { max_image_bytes: c.max_message_bytes + 1, ..c };
        assert_eq!(big.validate().unwrap_err().key, "max_image_bytes");
    }
}
