//! The ingester's configuration: one struct, filled from a TOML file, then `REID_INGESTER_*`
//! environment variables and flags (by the CLI); tests build it directly. Each section's type
//! lives with the code it sets (`[tracker]`, `[crops]` and `[reconnect]` in `pipeline/config.rs`,
//! `[delivery]` in `delivery/config.rs`, ...): this file gathers them and checks them together, and no other module
//! reads it.

use std::path::PathBuf;

use reid_server::invalid::{Invalid, ensure, positive};
use serde::Deserialize;

pub use crate::pipeline::config::CameraSpec;

use crate::delivery::config::DeliveryConfig;
use crate::detect::DetectorsConfig;
use crate::pipeline::config::{CropConfig, PipelineConfig, ReconnectConfig, TrackerConfig};
use crate::source::policy::SourcePolicy;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngesterConfig {
    /// The embedder that turns crops into embeddings. Without one, tracklets are sent to the
    /// identity service as images and it embeds them.
    pub embedder_url: Option<String>,
    /// Where finished tracklets go (`Observe`). Without one, tracklets are only exported/counted.
    pub identity_url: Option<String>,
    /// Every tracklet is also written under this folder, one sub-folder per tracklet, in the layout
    /// the trainer's `folders` dataset reads.
    pub export_dir: Option<PathBuf>,
    /// The detector of cameras that do not name one.
    pub default_detector: String,
    pub detectors: DetectorsConfig,
    pub tracker: TrackerConfig,
    pub crops: CropConfig,
    pub delivery: DeliveryConfig,
    pub reconnect: ReconnectConfig,
    /// Frames waiting between a camera's reader and its detector. A live source that outruns the
    /// detector loses its oldest waiting frames (counted as `queue_full`); files and folders wait.
    pub frame_queue: usize,
    /// Largest decoded frame, in pixels (a 4K frame is 8.3 M).
    pub max_frame_pixels: u64,
    /// Largest gRPC message, in bytes.
    pub max_message_bytes: usize,
    /// Most detections in one `PushDetections` message (their crops together decode to at most
    /// `max_frame_pixels`).
    pub max_detections_per_message: usize,
    /// What cameras added over the API (`AddCamera`) may read and connect to; cameras listed here
    /// in `cameras` are trusted.
    pub sources: SourcePolicy,
    /// Cameras this ingester runs at most (each is a thread and a decoder): `AddCamera` beyond it
    /// is refused with RESOURCE_EXHAUSTED.
    pub max_cameras: usize,
    /// Cameras started with the service (of them, only this replica's shard when `shard` is set).
    pub cameras: Vec<CameraSpec>,
    /// Replicas sharing one camera list: this one starts only the cameras that hash to its index.
    pub shard: Option<Shard>,
    /// Serve Prometheus metrics (`GET /metrics`) on this address.
    pub metrics_listen: Option<String>,
    /// API key and TLS, for callers and for the services this one calls.
    pub security: reid_server::Security,
}

/// One replica's part of the camera list: cameras whose id hashes (FNV-1a) to `index` modulo
/// `count`. Stable across restarts and replicas, so every camera has exactly one owner.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub fn owns(&self, camera_id: &str) -> bool {
        let hash =
            camera_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        hash % u64::from(self.count.max(1)) == u64::from(self.index)
    }
}

impl Default for IngesterConfig {
    fn default() -> Self {
        Self {
            embedder_url: None,
            identity_url: None,
            export_dir: None,
            default_detector: "ssd".into(),
            detectors: DetectorsConfig::default(),
            tracker: TrackerConfig::default(),
            crops: CropConfig::default(),
            delivery: DeliveryConfig::default(),
            reconnect: ReconnectConfig::default(),
            frame_queue: 8,
            max_frame_pixels: 16 << 20,
            max_message_bytes: 64 << 20,
            max_detections_per_message: 64,
            sources: SourcePolicy::default(),
            max_cameras: 64,
            cameras: Vec::new(),
            shard: None,
            metrics_listen: None,
            security: reid_server::Security::default(),
        }
    }
}

impl IngesterConfig {
    /// What a camera's threads take of it.
    pub(crate) fn pipeline(&self) -> PipelineConfig {
        PipelineConfig {
            tracker: self.tracker.clone(),
            crops: self.crops.clone(),
            reconnect: self.reconnect.clone(),
            frame_queue: self.frame_queue,
            max_frame_pixels: self.max_frame_pixels,
            export_dir: self.export_dir.clone(),
        }
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        self.security.validate().map_err(|e| e.within("security"))?;
        let min_iou = self.tracker.min_iou;
        ensure(min_iou > 0.0 && min_iou <= 1.0, "tracker.min_iou", || format!("{min_iou} must lie in (0, 1]"))?;
        for (key, value) in [
            ("tracker.reattach_secs", self.tracker.reattach_secs),
            ("tracker.reattach_speed", self.tracker.reattach_speed),
        ] {
            ensure(value.is_finite() && value >= 0.0, key, || format!("{value} must be a number, 0 or more"))?;
        }
        positive(&[
            ("crops.per_tracklet", self.crops.per_tracklet as u64),
            ("crops.max_pixels", self.crops.max_pixels),
            ("delivery.buffer_tracklets", self.delivery.buffer_tracklets as u64),
            ("delivery.embed_batch", self.delivery.embed_batch as u64),
            ("delivery.max_attempts", u64::from(self.delivery.max_attempts)),
            ("max_cameras", self.max_cameras as u64),
            ("max_detections_per_message", self.max_detections_per_message as u64),
            ("frame_queue", self.frame_queue as u64),
        ])?;
        if let Some(s) = self.shard {
            ensure(s.count > 0 && s.index < s.count, "shard.index", || {
                format!("{} must be below the shard count {}", s.index, s.count)
            })?;
        }
        let quality = self.crops.jpeg_quality;
        ensure((0..=100).contains(&quality), "crops.jpeg_quality", || format!("{quality} must lie in [0, 100]"))?;
        ensure(!self.reconnect.initial.is_zero(), "reconnect.initial", || "must be positive".into())?;
        ensure(self.reconnect.max >= self.reconnect.initial, "reconnect.max", || {
            "must be at least reconnect.initial".into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_settings_out_of_range_are_refused_by_name() {
        let with = |f: fn(&mut IngesterConfig)| {
            let mut config = IngesterConfig::default();
            f(&mut config);
            config.validate().map_err(|e| e.key)
        };
        assert!(with(|_| {}).is_ok());
        assert_eq!(with(|c| c.tracker.min_iou = 0.0).unwrap_err(), "tracker.min_iou");
        assert_eq!(with(|c| c.tracker.reattach_secs = -1.0).unwrap_err(), "tracker.reattach_secs");
        assert_eq!(with(|c| c.tracker.reattach_speed = f32::NAN).unwrap_err(), "tracker.reattach_speed");
        assert!(with(|c| c.tracker.reattach_secs = 2.0).is_ok());
    }
}

#[cfg(test)]
mod shard_tests {
    use super::Shard;

    #[test]
    fn every_camera_has_exactly_one_shard_and_the_load_is_spread() {
        let ids: Vec<String> = (0..300).map(|i| format!("cam-{i:03}")).collect();
        let shards: Vec<Shard> = (0..3).map(|index| Shard { index, count: 3 }).collect();
        let mut per_shard = [0usize; 3];
        for id in &ids {
            let owners: Vec<usize> = (0..3).filter(|&i| shards[i].owns(id)).collect();
            assert_eq!(owners.len(), 1, "{id} owned by {owners:?}");
            per_shard[owners[0]] += 1;
        }
        assert!(per_shard.iter().all(|&n| n > 70), "uneven: {per_shard:?}");
        assert!(Shard { index: 0, count: 1 }.owns("anything"));
    }
}
