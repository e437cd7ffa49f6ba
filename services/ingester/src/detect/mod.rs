//! Detectors: a frame in, boxes of people (or faces) out, behind one trait so that a camera's
//! detector is a configuration choice.
//!
//! - `ssd`: a learned person detector, SSDLite-MobileNetV2 from TensorFlow's Object Detection API
//!   run by OpenCV's dnn module ([`ssd`]); the default for person cameras;
//! - `hog`: OpenCV's HOG + linear SVM people detector, with optional upscaling so that people
//!   shorter than its 128-pixel window are found;
//! - `background`: MOG2 background subtraction for static cameras: moving blobs of person shape;
//! - `haar-face`: the Haar frontal-face cascade from Debian's `opencv-data`;
//! - `mtcnn`: MTCNN faces with five landmarks ([`mtcnn`]), for aligned face crops;
//! - `onnx`: any YOLO-style ONNX detector through OpenCV's dnn module, with a configurable output
//!   layout, so that users can bring a better model.

use opencv::core::{Mat, Rect, Vector};
use opencv::dnn;
use serde::Deserialize;

use crate::error::{IngesterError, IngesterResult};
use crate::frame::BBox;

mod background;
mod haar;
mod hog;
pub mod mtcnn;
mod onnx;
pub mod ssd;

pub use background::{BackgroundConfig, BackgroundDetector, MotionGate};
pub use haar::{HaarConfig, HaarFaceDetector};
pub use hog::{HogConfig, HogDetector};
pub use onnx::{OnnxConfig, OnnxDetector, OutputLayout, parse_yolo};

/// One detected object.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub bbox: BBox,
    /// Detector confidence mapped to [0, 1].
    pub score: f32,
    /// Face landmarks (eyes, nose, mouth corners) when the detector gives them: the crop is then
    /// aligned on them.
    pub landmarks: Option<[(f32, f32); 5]>,
    /// Scored under the detector's threshold but above its weak one: not a detection on its own
    /// (no track starts from it, no crop is cut), only a way for a track already confirmed to
    /// follow its person through partial occlusion (ByteTrack's second association).
    pub weak: bool,
}

impl Detection {
    pub fn new(bbox: BBox, score: f32) -> Self {
        Self { bbox, score, landmarks: None, weak: false }
    }

    pub fn weak(bbox: BBox, score: f32) -> Self {
        Self { weak: true, ..Self::new(bbox, score) }
    }
}

/// What a detector finds: a face crop is embedded by a face model, a person crop by a re-ID model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Person,
    Face,
}

pub trait Detector: Send {
    /// Detections in `frame` (BGR8), in its pixel coordinates.
    fn detect(&mut self, frame: &Mat) -> opencv::Result<Vec<Detection>>;
    fn target(&self) -> Target;
}

/// Every detector's settings, in the `[detectors]` table of the ingester's config.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorsConfig {
    pub ssd: ssd::SsdConfig,
    pub hog: HogConfig,
    pub background: BackgroundConfig,
    pub haar_face: HaarConfig,
    pub mtcnn: mtcnn::MtcnnConfig,
    pub onnx: Option<OnnxConfig>,
}

impl DetectorsConfig {
    /// Points the stock models (`ssd`, `mtcnn`) at their folders under `dir`, the folder of
    /// model folders the embedder reads too, where they are still at their defaults (relative to
    /// the working directory); a path the config set stays.
    pub fn models_under(&mut self, dir: &std::path::Path) {
        let defaults = DetectorsConfig::default();
        if self.ssd.model == defaults.ssd.model {
            self.ssd.model = dir.join(ssd::STOCK_MODEL);
        }
        if self.mtcnn.model_dir == defaults.mtcnn.model_dir {
            self.mtcnn.model_dir = dir.join(mtcnn::STOCK_MODEL_DIR);
        }
    }
}

/// The names `detector` accepts.
pub const DETECTORS: [&str; 6] = ["ssd", "hog", "background", "haar-face", "mtcnn", "onnx"];

/// Builds the detector called `name`; unknown names are `UnsupportedDetector`, known ones whose
/// model cannot be loaded are `DetectorUnavailable`.
pub fn build(name: &str, config: &DetectorsConfig) -> IngesterResult<Box<dyn Detector>> {
    let unavailable = |reason: String| IngesterError::DetectorUnavailable { name: name.into(), reason };
    Ok(match name {
        "ssd" => Box::new(
            ssd::SsdDetector::with_background(config.ssd.clone(), config.background.clone()).map_err(unavailable)?,
        ),
        "hog" => Box::new(
            HogDetector::new(config.hog.clone(), config.background.clone()).map_err(|e| unavailable(e.message))?,
        ),
        "background" => {
            Box::new(BackgroundDetector::new(config.background.clone()).map_err(|e| unavailable(e.message))?)
        }
        "haar-face" => Box::new(HaarFaceDetector::new(&config.haar_face).map_err(unavailable)?),
        "mtcnn" => Box::new(mtcnn::MtcnnDetector::new(config.mtcnn.clone()).map_err(unavailable)?),
        "onnx" => {
            let c =
                config.onnx.clone().ok_or_else(|| unavailable("no [detectors.onnx] section names a model".into()))?;
            Box::new(OnnxDetector::new(c).map_err(unavailable)?)
        }
        other => return Err(IngesterError::UnsupportedDetector { name: other.into(), known: &DETECTORS }),
    })
}

/// Non-maximum suppression of boxes by OpenCV's dnn module (the whole-frame detectors share it).
pub(crate) fn nms(detections: Vec<Detection>, min_score: f32, threshold: f32) -> opencv::Result<Vec<Detection>> {
    let boxes: Vector<Rect> = detections
        .iter()
        .map(|d| Rect::new(d.bbox.x as i32, d.bbox.y as i32, d.bbox.w as i32, d.bbox.h as i32))
        .collect();
    let scores: Vector<f32> = detections.iter().map(|d| d.score).collect();
    let mut keep = Vector::<i32>::new();
    dnn::nms_boxes_def(&boxes, &scores, min_score, threshold, &mut keep)?;
    Ok(keep.iter().filter_map(|i| detections.get(i as usize).cloned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_models_move_under_a_model_dir_unless_the_config_named_them() {
        let mut config = DetectorsConfig::default();
        config.mtcnn.model_dir = "/opt/faces".into();
        config.models_under(std::path::Path::new("/srv/models"));
        assert_eq!(config.ssd.model, std::path::Path::new("/srv/models/ssdlite-person/frozen_inference_graph.pb"));
        assert_eq!(config.mtcnn.model_dir, std::path::Path::new("/opt/faces"));
    }

    #[test]
    fn unknown_detectors_and_missing_models_are_errors() {
        let config = DetectorsConfig::default();
        assert!(matches!(build("yolo9000", &config), Err(IngesterError::UnsupportedDetector { .. })));
        let no_mtcnn = DetectorsConfig {
            mtcnn: mtcnn::MtcnnConfig { model_dir: "/nonexistent".into(), ..Default::default() },
            ..Default::default()
        };
        assert!(matches!(build("mtcnn", &no_mtcnn), Err(IngesterError::DetectorUnavailable { .. })));
        assert!(matches!(build("onnx", &config), Err(IngesterError::DetectorUnavailable { .. })));
        let config = DetectorsConfig {
            onnx: Some(OnnxConfig {
                model: "/nonexistent/model.onnx".into(),
                input_width: 640,
                input_height: 640,
                layout: OutputLayout::Yolov8,
                class_id: 0,
                score_threshold: 0.4,
                nms_threshold: 0.45,
                faces: false,
            }),
            ..Default::default()
        };
        assert!(matches!(build("onnx", &config), Err(IngesterError::DetectorUnavailable { .. })));
        for name in ["hog", "background", "haar-face"] {
            assert!(build(name, &DetectorsConfig::default()).is_ok(), "{name}");
        }
    }

    #[test]
    fn yolo_outputs_of_both_layouts_parse_to_the_same_boxes() {
        // Two candidates, two classes: the first is a person (class 0) at (100, 50) 20x40.
        // Yolov5 rows: cx, cy, w, h, obj, c0, c1.
        let v5 = [110.0, 70.0, 20.0, 40.0, 0.9, 0.8, 0.1, 300.0, 300.0, 10.0, 10.0, 0.9, 0.1, 0.9];
        let d5 = parse_yolo(&v5, &[1, 2, 7], OutputLayout::Yolov5, 0, 0.5).expect("parses");
        assert_eq!(d5.len(), 1);
        assert_eq!(d5[0].bbox, BBox::new(100.0, 50.0, 20.0, 40.0));
        assert!((d5[0].score - 0.72).abs() < 1e-6);
        // Yolov8 columns: the same candidates transposed, no objectness.
        let v8 = [110.0, 300.0, 70.0, 300.0, 20.0, 10.0, 40.0, 10.0, 0.8, 0.1, 0.1, 0.9];
        let d8 = parse_yolo(&v8, &[1, 6, 2], OutputLayout::Yolov8, 0, 0.5).expect("parses");
        assert_eq!(d8.len(), 1);
        assert_eq!(d8[0].bbox, BBox::new(100.0, 50.0, 20.0, 40.0));
        let class1 = parse_yolo(&v8, &[1, 6, 2], OutputLayout::Yolov8, 1, 0.5).expect("parses");
        assert_eq!(class1.len(), 1);
        assert_eq!(class1[0].bbox, BBox::new(295.0, 295.0, 10.0, 10.0));
        assert!(parse_yolo(&v8, &[1, 6, 2], OutputLayout::Yolov8, 2, 0.5).is_err());
        assert!(parse_yolo(&v8, &[1, 5, 2], OutputLayout::Yolov8, 0, 0.5).is_err());
    }
}
