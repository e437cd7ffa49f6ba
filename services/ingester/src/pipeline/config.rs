//! The pipeline's settings: what a camera is ([`CameraSpec`]), and how its frames are tracked,
//! cropped and re-read ([`PipelineConfig`]). `crate::config` gathers them into the service's
//! file; the pipeline never reads that file's type.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::pipeline::view::View;

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
    pub view: View,
}

impl CameraSpec {
    /// A camera on `url` with the defaults: every frame, the default detector, the whole view.
    pub fn new(id: impl Into<String>, url: impl Into<String>) -> Self {
        CameraSpec { id: id.into(), url: url.into(), target_fps: 0.0, detector: String::new(), view: View::default() }
    }
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

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self { initial: Duration::from_millis(500), max: Duration::from_secs(30), max_attempts: 0 }
    }
}

/// What a camera's threads need of the service's settings (`crate::config` makes it).
#[derive(Debug, Clone, Default)]
pub struct PipelineConfig {
    pub tracker: TrackerConfig,
    pub crops: CropConfig,
    pub reconnect: ReconnectConfig,
    /// Frames waiting between a camera's reader and its processing thread.
    pub frame_queue: usize,
    /// Largest decoded frame, in pixels.
    pub max_frame_pixels: u64,
    /// Every tracklet is also written under this folder.
    pub export_dir: Option<PathBuf>,
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
    /// A detection joins a track only when the colour histograms of their torso and legs are at
    /// least this alike (Bhattacharyya coefficient, 0-1; 0: overlap alone decides), so that a
    /// track does not swap between two people walking side by side.
    pub min_appearance: f32,
    /// Re-attaching: a confirmed track that lost its person (coasting on its motion, or past
    /// `max_misses`) is continued by a new track that starts within this many seconds (of the
    /// camera's clock) near where it was lost and looking like it, so that a person hidden behind
    /// another or a post stays one tracklet; a lost track is reported only after this long. 0 (the
    /// default) turns it off: on vtest.avi's crowd of dark jackets a new track there is someone
    /// else about as often as the same person, and a wrong join costs association more than a
    /// right one gains (docs/evaluation.md, "Re-attaching lost tracks in the tracker").
    pub reattach_secs: f32,
    /// A new track continues a held one only when their colour histograms are at least this alike.
    pub reattach_appearance: f32,
    /// How far a new track may start from where a held one was lost, in box heights: half a
    /// height, plus this many per second of the gap, from anywhere between the lost box and where
    /// its motion would have carried it.
    pub reattach_speed: f32,
    /// Two confirmed tracks whose boxes (the predicted one of a track left without a detection)
    /// overlap by at least this IoU are crossing, where a tracker swaps people: each is cut where
    /// the crossing starts (what it has so far is reported as one tracklet) and keeps no crops
    /// until the two part, so that a swap puts the two people in two tracklets rather than one,
    /// and the identity service joins the pieces. 0 turns it off. On vtest.avi 0.3 makes twice
    /// the tracklets, 99% pure instead of 93%, and association more precise and complete
    /// (docs/evaluation.md, "Tracks cut where people cross").
    pub crossing_iou: f32,
}

impl TrackerConfig {
    /// Whether detections need their [`crate::appearance::Appearance`] (the gate or re-attaching
    /// is on).
    pub fn uses_appearance(&self) -> bool {
        self.min_appearance > 0.0 || self.reattaches()
    }

    /// Whether lost tracks are held for re-attaching.
    pub fn reattaches(&self) -> bool {
        self.reattach_secs > 0.0
    }
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            min_iou: 0.2,
            weak_min_iou: 0.5,
            min_hits: 3,
            max_misses: 10,
            max_tracklet_frames: 600,
            min_appearance: 0.7,
            reattach_secs: 0.0,
            reattach_appearance: 0.9,
            reattach_speed: 0.25,
            crossing_iou: 0.3,
        }
    }
}

/// Which crops of a track are kept and sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CropConfig {
    /// Best crops kept per tracklet (by size, sharpness, aspect, detector score). Six rather
    /// than four: enough for the identity service to outvote a crop of someone else
    /// (`association.crop_agreement`; docs/evaluation.md, "Crops that disagree with their tracklet").
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

impl Default for CropConfig {
    fn default() -> Self {
        Self {
            per_tracklet: 6,
            min_gap_frames: 3,
            min_height: 48,
            padding: 0.05,
            max_pixels: 1 << 20,
            face_size: 160,
            jpeg_quality: 90,
        }
    }
}
