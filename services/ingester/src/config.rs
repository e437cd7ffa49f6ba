//! The ingester's configuration: one struct, filled from a TOML file, then `REID_INGESTER_*`
//! environment variables and flags (by the CLI); tests build it directly.

use std::path::PathBuf;
use std::time::Duration;

use reid_server::invalid::{Invalid, ensure, positive};
use serde::Deserialize;

use crate::detect::DetectorsConfig;

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
    pub sources: crate::source::policy::SourcePolicy,
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

/// One camera: where its frames come from and how they are processed.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CameraSpec {
    pub id: String,
    /// A video file, a folder of images, `rtsp://`, `http(s)://` (MJPEG or any stream FFmpeg
    /// reads), `device:N` for a local capture device, or `push` for a camera that pushes frames
    /// (`PushFrames`) or detections (`PushDetections`).
    pub url: String,
    /// Frames per second to process; 0 processes every frame.
    #[serde(default)]
    pub target_fps: f32,
    /// `ssd`, `hog`, `background`, `haar-face`, `mtcnn` or `onnx`; empty for `default_detector`.
    #[serde(default)]
    pub detector: String,
    /// The part of the source this camera sees, and how (region, scale, colour, clock offset).
    #[serde(default)]
    pub view: crate::pipeline::view::View,
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

impl CameraSpec {
    /// A camera on `url` with the defaults: every frame, the default detector, the whole view.
    pub fn new(id: impl Into<String>, url: impl Into<String>) -> Self {
        CameraSpec {
            id: id.into(),
            url: url.into(),
            target_fps: 0.0,
            detector: String::new(),
            view: crate::pipeline::view::View::default(),
        }
    }
}

/// The SORT-like tracker: IoU against a constant-velocity prediction.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerConfig {
    /// A detection joins a track when its box overlaps the track's predicted box by at least this.
    pub min_iou: f32,
    /// A weak detection ([`crate::detect::Detection::weak`]) joins a confirmed track left
    /// without one when it overlaps the track's predicted box by at least this.
    pub weak_min_iou: f32,
    /// Detections a track needs before it counts (filters one-frame false positives).
    pub min_hits: u32,
    /// Processed frames a track survives without a detection (occlusion) before it ends.
    pub max_misses: u32,
    /// A track longer than this is cut into consecutive tracklets, so that a person standing in
    /// view for an hour is still reported (0: never cut).
    pub max_tracklet_frames: u32,
}

/// Which crops of a track are kept and sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CropConfig {
    /// Best crops kept per tracklet (by size, sharpness, aspect, detector score).
    pub per_tracklet: usize,
    /// Kept crops are at least this many processed frames apart (different poses, not one moment).
    pub min_gap_frames: u64,
    /// Detections smaller than this (box height in pixels) are tracked but never kept as crops.
    pub min_height: u32,
    /// Context added around each box, as a fraction of its size.
    pub padding: f32,
    /// Crops larger than this many pixels are shrunk before they are encoded and sent (a person
    /// close to a 4K camera), so that no crop can exceed what the embedder takes.
    pub max_pixels: u64,
    /// Side of the aligned face crop cut on a detector's landmarks (FaceNet takes 160).
    pub face_size: i32,
    pub jpeg_quality: i32,
}

/// Getting tracklets to the embedder and the identity service.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Tracklets held while the embedder or identity service is slow or down; beyond it the
    /// oldest are dropped and counted (`buffer_full`).
    pub buffer_tracklets: usize,
    /// Most crops per embedder call; crops of every camera share a call.
    pub embed_batch: usize,
    /// How long a partial batch waits for more tracklets.
    #[serde(with = "reid_server::duration::millis")]
    pub batch_wait: Duration,
    /// Retry back-off bounds while a downstream service is unavailable.
    #[serde(with = "reid_server::duration::millis")]
    pub retry_initial: Duration,
    #[serde(with = "reid_server::duration::millis")]
    pub retry_max: Duration,
    /// On shutdown, how long buffered tracklets may take to be delivered.
    #[serde(with = "reid_server::duration::millis")]
    pub flush_timeout: Duration,
    /// Per-call deadline.
    #[serde(with = "reid_server::duration::millis")]
    pub call_timeout: Duration,
    /// Failed deliveries after which a tracklet is set aside (counted as `failed`); a downstream
    /// service that is unavailable does not count against its tracklets.
    pub max_attempts: u32,
}

/// Reconnecting a live source: exponential back-off with full jitter.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconnectConfig {
    #[serde(with = "reid_server::duration::millis")]
    pub initial: Duration,
    #[serde(with = "reid_server::duration::millis")]
    pub max: Duration,
    /// Give up after this many failed attempts in a row (0: never).
    pub max_attempts: u32,
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
            sources: crate::source::policy::SourcePolicy::default(),
            max_cameras: 64,
            cameras: Vec::new(),
            shard: None,
            metrics_listen: None,
            security: reid_server::Security::default(),
        }
    }
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self { min_iou: 0.2, weak_min_iou: 0.5, min_hits: 3, max_misses: 10, max_tracklet_frames: 600 }
    }
}

impl Default for CropConfig {
    fn default() -> Self {
        Self {
            per_tracklet: 4,
            min_gap_frames: 3,
            min_height: 48,
            padding: 0.05,
            max_pixels: 1 << 20,
            face_size: 160,
            jpeg_quality: 90,
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            buffer_tracklets: 1000,
            embed_batch: 32,
            batch_wait: Duration::from_millis(20),
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(5),
            flush_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(30),
            max_attempts: 5,
        }
    }
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self { initial: Duration::from_millis(500), max: Duration::from_secs(30), max_attempts: 0 }
    }
}

impl IngesterConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        self.security.validate().map_err(|e| e.within("security"))?;
        let min_iou = self.tracker.min_iou;
        ensure(min_iou > 0.0 && min_iou <= 1.0, "tracker.min_iou", || format!("{min_iou} must lie in (0, 1]"))?;
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
