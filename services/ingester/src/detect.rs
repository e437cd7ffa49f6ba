//! Detectors: a frame in, boxes of people (or faces) out, behind one trait so that a camera's
//! detector is a configuration choice.
//!
//! - `ssd`: a learned person detector, SSDLite-MobileNetV2 from TensorFlow's Object Detection API
//!   run by OpenCV's dnn module ([`crate::ssd`]); the default for person cameras;
//! - `hog`: OpenCV's HOG + linear SVM people detector, with optional upscaling so that people
//!   shorter than its 128-pixel window are found;
//! - `background`: MOG2 background subtraction for static cameras: moving blobs of person shape;
//! - `haar-face`: the Haar frontal-face cascade from Debian's `opencv-data`;
//! - `mtcnn`: MTCNN faces with five landmarks ([`crate::mtcnn`]), for aligned face crops;
//! - `onnx`: any YOLO-style ONNX detector through OpenCV's dnn module, with a configurable output
//!   layout, so that users can bring a better model.

use std::path::PathBuf;

use opencv::core::{Mat, Point, Rect, Scalar, Size, Vector};
use opencv::prelude::*;
use opencv::{dnn, imgproc, objdetect, video};
use serde::Deserialize;

use crate::error::{IngesterError, IngesterResult};
use crate::frame::BBox;

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
    pub ssd: crate::ssd::SsdConfig,
    pub hog: HogConfig,
    pub background: BackgroundConfig,
    pub haar_face: HaarConfig,
    pub mtcnn: crate::mtcnn::MtcnnConfig,
    pub onnx: Option<OnnxConfig>,
}

impl DetectorsConfig {
    /// Points the stock models (`ssd`, `mtcnn`) at their folders under `dir`, the folder of
    /// model folders the embedder reads too, where they are still at their defaults (relative to
    /// the working directory); a path the config set stays.
    pub fn models_under(&mut self, dir: &std::path::Path) {
        let defaults = DetectorsConfig::default();
        if self.ssd.model == defaults.ssd.model {
            self.ssd.model = dir.join(crate::ssd::STOCK_MODEL);
        }
        if self.mtcnn.model_dir == defaults.mtcnn.model_dir {
            self.mtcnn.model_dir = dir.join(crate::mtcnn::STOCK_MODEL_DIR);
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
            crate::ssd::SsdDetector::with_background(config.ssd.clone(), config.background.clone())
                .map_err(unavailable)?,
        ),
        "hog" => Box::new(
            HogDetector::new(config.hog.clone(), config.background.clone()).map_err(|e| unavailable(e.message))?,
        ),
        "background" => {
            Box::new(BackgroundDetector::new(config.background.clone()).map_err(|e| unavailable(e.message))?)
        }
        "haar-face" => Box::new(HaarFaceDetector::new(&config.haar_face).map_err(unavailable)?),
        "mtcnn" => Box::new(crate::mtcnn::MtcnnDetector::new(config.mtcnn.clone()).map_err(unavailable)?),
        "onnx" => {
            let c =
                config.onnx.clone().ok_or_else(|| unavailable("no [detectors.onnx] section names a model".into()))?;
            Box::new(OnnxDetector::new(c).map_err(unavailable)?)
        }
        other => return Err(IngesterError::UnsupportedDetector(other.into())),
    })
}

// --- HOG ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HogConfig {
    /// The frame is scaled by this before detection: 2.0 finds people down to 64 pixels tall, at
    /// four times the cost.
    pub upscale: f64,
    /// Pyramid step between scales.
    pub scale: f64,
    /// Window stride in pixels (8 is OpenCV's default; 4 finds more at 4x the cost).
    pub stride: i32,
    /// SVM margin a window needs.
    pub hit_threshold: f64,
    /// HOG boxes have about 1/8 of margin around the person on each side; this much is cut off.
    pub shrink: f32,
    /// For static cameras: run HOG only around what moved (MOG2 foreground, `[detectors.background]`
    /// settings), not over the whole frame. Much cheaper on scenes with few people; someone who
    /// stands still long enough to become background is no longer detected.
    pub motion_gate: bool,
    /// Smallest moving blob (pixels of area) that opens a region; fragments of a person count.
    pub motion_min_area: f64,
}

impl Default for HogConfig {
    fn default() -> Self {
        Self {
            upscale: 1.0,
            scale: 1.05,
            stride: 8,
            hit_threshold: 0.0,
            shrink: 0.1,
            motion_gate: false,
            motion_min_area: 100.0,
        }
    }
}

pub struct HogDetector {
    hog: objdetect::HOGDescriptor,
    config: HogConfig,
    motion: Option<BackgroundDetector>,
}

impl HogDetector {
    pub fn new(config: HogConfig, background: BackgroundConfig) -> opencv::Result<Self> {
        let mut hog = objdetect::HOGDescriptor::default()?;
        hog.set_svm_detector(objdetect::HOGDescriptor::get_default_people_detector()?);
        let motion = if config.motion_gate { Some(BackgroundDetector::new(background)?) } else { None };
        Ok(Self { hog, config, motion })
    }
}

impl Detector for HogDetector {
    fn detect(&mut self, frame: &Mat) -> opencv::Result<Vec<Detection>> {
        let Some(motion) = self.motion.as_mut() else { return self.detect_in(frame, 0, 0) };
        let (w, h) = (frame.cols(), frame.rows());
        // Each moving region, grown to hold a whole person around it and at least one HOG window.
        let mut regions: Vec<Rect> = Vec::new();
        for r in motion.foreground(frame, self.config.motion_min_area)? {
            let (cx, cy) = (r.x + r.width / 2, r.y + r.height / 2);
            let rw = (r.width * 2).max(r.height) + 64;
            let rh = r.height * 2 + 96;
            let grown = Rect::new(cx - rw / 2, cy - rh / 2, rw, rh) & Rect::new(0, 0, w, h);
            if grown.width >= 64 && grown.height >= 128 {
                regions.push(grown);
            }
        }
        // Overlapping regions are searched once, as their union.
        let mut merged: Vec<Rect> = Vec::new();
        for r in regions {
            match merged.iter_mut().find(|m| (**m & r).area() > 0) {
                Some(m) => *m |= r,
                None => merged.push(r),
            }
        }
        let mut found = Vec::new();
        for r in merged {
            let roi = Mat::roi(frame, r)?.try_clone()?;
            found.extend(self.detect_in(&roi, r.x, r.y)?);
        }
        nms(found, 0.0, 0.45)
    }

    fn target(&self) -> Target {
        Target::Person
    }
}

impl HogDetector {
    /// HOG over `frame` (a region of the frame at `ox`, `oy`), boxes in frame coordinates.
    fn detect_in(&mut self, frame: &Mat, ox: i32, oy: i32) -> opencv::Result<Vec<Detection>> {
        let c = &self.config;
        let scaled;
        let input = if (c.upscale - 1.0).abs() > 1e-3 {
            let mut m = Mat::default();
            imgproc::resize(frame, &mut m, Size::default(), c.upscale, c.upscale, imgproc::INTER_LINEAR)?;
            scaled = m;
            &scaled
        } else {
            frame
        };
        let mut rects = Vector::<Rect>::new();
        let mut weights = Vector::<f64>::new();
        self.hog.detect_multi_scale_weights(
            input,
            &mut rects,
            &mut weights,
            c.hit_threshold,
            Size::new(c.stride, c.stride),
            Size::new(0, 0),
            c.scale,
            2.0,
            false,
        )?;
        let k = 1.0 / c.upscale as f32;
        Ok(rects
            .iter()
            .zip(weights.iter())
            .map(|(r, w)| {
                let (dx, dy) = (r.width as f32 * c.shrink / 2.0, r.height as f32 * c.shrink / 2.0);
                let bbox = BBox::new(
                    (r.x as f32 + dx) * k + ox as f32,
                    (r.y as f32 + dy) * k + oy as f32,
                    (r.width as f32 - 2.0 * dx) * k,
                    (r.height as f32 - 2.0 * dy) * k,
                );
                // The SVM margin, squashed: 0 at the decision boundary, ~0.9 at a margin of 1.
                Detection::new(bbox, (1.0 - (-2.3 * w.max(0.0)).exp()) as f32)
            })
            .collect())
    }
}

// --- Background subtraction -----------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackgroundConfig {
    /// Frames of history in the MOG2 model.
    pub history: i32,
    pub var_threshold: f64,
    /// Smallest blob, in pixels of area.
    pub min_area: f64,
    /// Blobs whose height / width lies outside this range are not people.
    pub min_aspect: f32,
    pub max_aspect: f32,
    /// Frames before the model is trusted (the first frames are all foreground).
    pub warmup_frames: u32,
}

impl Default for BackgroundConfig {
    fn default() -> Self {
        Self { history: 300, var_threshold: 16.0, min_area: 800.0, min_aspect: 1.2, max_aspect: 5.0, warmup_frames: 10 }
    }
}

pub struct BackgroundDetector {
    model: opencv::core::Ptr<video::BackgroundSubtractorMOG2>,
    kernel: Mat,
    config: BackgroundConfig,
    seen: u32,
}

impl BackgroundDetector {
    pub fn new(config: BackgroundConfig) -> opencv::Result<Self> {
        Ok(Self {
            model: video::create_background_subtractor_mog2(config.history, config.var_threshold, true)?,
            kernel: imgproc::get_structuring_element_def(imgproc::MORPH_ELLIPSE, Size::new(5, 5))?,
            config,
            seen: 0,
        })
    }
}

impl Detector for BackgroundDetector {
    fn detect(&mut self, frame: &Mat) -> opencv::Result<Vec<Detection>> {
        let mut out = Vec::new();
        for r in self.foreground(frame, self.config.min_area)? {
            let aspect = r.height as f32 / r.width.max(1) as f32;
            if aspect < self.config.min_aspect || aspect > self.config.max_aspect {
                continue;
            }
            let bbox = BBox::new(r.x as f32, r.y as f32, r.width as f32, r.height as f32);
            out.push(Detection::new(bbox, (r.fill / 0.6).min(1.0)));
        }
        Ok(out)
    }

    fn target(&self) -> Target {
        Target::Person
    }
}

/// A foreground blob: its bounding box and how much of the box it fills.
struct Blob {
    x: i32,
    y: i32,
    width: i32,
    height: i32,
    fill: f32,
}

impl BackgroundDetector {
    /// Updates the background model with `frame`; returns the moving blobs of at least `min_area`.
    fn foreground(&mut self, frame: &Mat, min_area: f64) -> opencv::Result<Vec<Blob>> {
        let mut mask = Mat::default();
        opencv::prelude::BackgroundSubtractorTrait::apply(&mut self.model, frame, &mut mask, -1.0)?;
        self.seen += 1;
        if self.seen <= self.config.warmup_frames {
            return Ok(Vec::new());
        }
        // Shadows are marked 127 by MOG2: keep only the certain foreground, then close the holes.
        let mut fg = Mat::default();
        imgproc::threshold(&mask, &mut fg, 200.0, 255.0, imgproc::THRESH_BINARY)?;
        let mut opened = Mat::default();
        imgproc::morphology_ex_def(&fg, &mut opened, imgproc::MORPH_OPEN, &self.kernel)?;
        let mut closed = Mat::default();
        imgproc::morphology_ex(
            &opened,
            &mut closed,
            imgproc::MORPH_CLOSE,
            &self.kernel,
            Point::new(-1, -1),
            3,
            opencv::core::BORDER_CONSTANT,
            imgproc::morphology_default_border_value()?,
        )?;
        let mut contours = Vector::<Vector<Point>>::new();
        imgproc::find_contours_def(&closed, &mut contours, imgproc::RETR_EXTERNAL, imgproc::CHAIN_APPROX_SIMPLE)?;
        let mut out = Vec::new();
        for contour in contours.iter() {
            let area = imgproc::contour_area_def(&contour)?;
            if area < min_area {
                continue;
            }
            let r = imgproc::bounding_rect(&contour)?;
            // How much of the box the blob fills: a person fills about half of theirs.
            let fill = (area / f64::from(r.width * r.height).max(1.0)) as f32;
            out.push(Blob { x: r.x, y: r.y, width: r.width, height: r.height, fill });
        }
        Ok(out)
    }
}

/// A frame-level motion gate for a whole-frame detector (ssd): the detector runs only when
/// something moved (a MOG2 foreground blob of at least `min_area` pixels); on a frame where nothing
/// did, the people are where the detector last saw them and its last boxes are returned. It runs
/// anyway every `refresh_frames` frames and while the background model warms up. Cameras that
/// watch an empty corridor most of the day then cost little more than decoding.
pub struct MotionGate {
    motion: BackgroundDetector,
    min_area: f64,
    refresh_frames: u32,
    since_run: u32,
    last: Vec<Detection>,
    skipped: u64,
}

impl MotionGate {
    pub fn new(background: BackgroundConfig, min_area: f64, refresh_frames: u32) -> opencv::Result<Self> {
        Ok(Self {
            motion: BackgroundDetector::new(background)?,
            min_area,
            refresh_frames: refresh_frames.max(1),
            since_run: 0,
            last: Vec::new(),
            skipped: 0,
        })
    }

    /// `detector`'s boxes for `frame`, or the last ones when nothing moved.
    pub fn detect(
        &mut self,
        frame: &Mat,
        detector: impl FnOnce(&Mat) -> opencv::Result<Vec<Detection>>,
    ) -> opencv::Result<Vec<Detection>> {
        let moved = !self.motion.foreground(frame, self.min_area)?.is_empty();
        let warming = self.motion.seen <= self.motion.config.warmup_frames;
        self.since_run += 1;
        if moved || warming || self.since_run >= self.refresh_frames {
            self.last = detector(frame)?;
            self.since_run = 0;
        } else {
            self.skipped += 1;
        }
        Ok(self.last.clone())
    }

    /// Frames on which the detector did not run.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

// --- Haar faces -----------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HaarConfig {
    pub cascade: PathBuf,
    pub min_size: i32,
    pub min_neighbors: i32,
}

impl Default for HaarConfig {
    fn default() -> Self {
        Self {
            cascade: PathBuf::from("/usr/share/opencv4/haarcascades/haarcascade_frontalface_default.xml"),
            min_size: 40,
            min_neighbors: 5,
        }
    }
}

pub struct HaarFaceDetector {
    cascade: objdetect::CascadeClassifier,
    min_size: i32,
    min_neighbors: i32,
}

impl HaarFaceDetector {
    pub fn new(config: &HaarConfig) -> Result<Self, String> {
        if !config.cascade.is_file() {
            return Err(format!("no cascade at {} (apt install opencv-data)", config.cascade.display()));
        }
        let path = config.cascade.to_string_lossy().into_owned();
        let cascade = objdetect::CascadeClassifier::new(&path).map_err(|e| e.message)?;
        if cascade.empty().unwrap_or(true) {
            return Err(format!("{path} is not a cascade OpenCV can read"));
        }
        Ok(Self { cascade, min_size: config.min_size, min_neighbors: config.min_neighbors })
    }
}

impl Detector for HaarFaceDetector {
    fn detect(&mut self, frame: &Mat) -> opencv::Result<Vec<Detection>> {
        let mut gray = Mat::default();
        imgproc::cvt_color_def(frame, &mut gray, imgproc::COLOR_BGR2GRAY)?;
        let mut eq = Mat::default();
        imgproc::equalize_hist(&gray, &mut eq)?;
        let mut faces = Vector::<Rect>::new();
        self.cascade.detect_multi_scale(
            &eq,
            &mut faces,
            1.1,
            self.min_neighbors,
            0,
            Size::new(self.min_size, self.min_size),
            Size::default(),
        )?;
        Ok(faces
            .iter()
            .map(|r| Detection::new(BBox::new(r.x as f32, r.y as f32, r.width as f32, r.height as f32), 1.0))
            .collect())
    }

    fn target(&self) -> Target {
        Target::Face
    }
}

// --- ONNX (YOLO-style) ----------------------------------------------------------------------------

/// How the model's single output tensor is laid out.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OutputLayout {
    /// `[1, N, 5 + C]`: cx, cy, w, h, objectness, class scores (YOLOv5/v7).
    Yolov5,
    /// `[1, 4 + C, N]`: cx, cy, w, h, class scores, no objectness (YOLOv8/v11).
    Yolov8,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxConfig {
    pub model: PathBuf,
    #[serde(default = "default_onnx_size")]
    pub input_width: i32,
    #[serde(default = "default_onnx_size")]
    pub input_height: i32,
    #[serde(default = "default_layout")]
    pub layout: OutputLayout,
    /// The class kept (0 is "person" in COCO).
    #[serde(default)]
    pub class_id: usize,
    #[serde(default = "default_score")]
    pub score_threshold: f32,
    #[serde(default = "default_nms")]
    pub nms_threshold: f32,
    #[serde(default)]
    pub faces: bool,
}

fn default_onnx_size() -> i32 {
    640
}
fn default_layout() -> OutputLayout {
    OutputLayout::Yolov8
}
fn default_score() -> f32 {
    0.4
}
fn default_nms() -> f32 {
    0.45
}

pub struct OnnxDetector {
    net: dnn::Net,
    config: OnnxConfig,
}

impl OnnxDetector {
    pub fn new(config: OnnxConfig) -> Result<Self, String> {
        if !config.model.is_file() {
            return Err(format!("no model at {}", config.model.display()));
        }
        let net =
            dnn::read_net_from_onnx(&config.model).map_err(|e| format!("{}: {}", config.model.display(), e.message))?;
        Ok(Self { net, config })
    }
}

impl Detector for OnnxDetector {
    fn detect(&mut self, frame: &Mat) -> opencv::Result<Vec<Detection>> {
        let c = &self.config;
        let blob = dnn::blob_from_image(
            frame,
            1.0 / 255.0,
            Size::new(c.input_width, c.input_height),
            Scalar::default(),
            true,
            false,
            opencv::core::CV_32F,
        )?;
        self.net.set_input_def(&blob)?;
        let out = self.net.forward_single_def()?;
        let dims = out.mat_size();
        let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
        let data = out.data_typed::<f32>()?;
        let sx = frame.cols() as f32 / c.input_width as f32;
        let sy = frame.rows() as f32 / c.input_height as f32;
        let candidates = parse_yolo(data, &shape, c.layout, c.class_id, c.score_threshold)
            .map_err(|m| opencv::Error::new(opencv::core::StsBadArg, m))?;
        let scaled: Vec<Detection> = candidates
            .into_iter()
            .map(|d| Detection::new(BBox::new(d.bbox.x * sx, d.bbox.y * sy, d.bbox.w * sx, d.bbox.h * sy), d.score))
            .collect();
        nms(scaled, c.score_threshold, c.nms_threshold)
    }

    fn target(&self) -> Target {
        if self.config.faces { Target::Face } else { Target::Person }
    }
}

/// Boxes of class `class_id` scoring at least `min_score`, from a YOLO output tensor of `shape`
/// (batch 1), in the model's input coordinates.
pub fn parse_yolo(
    data: &[f32],
    shape: &[usize],
    layout: OutputLayout,
    class_id: usize,
    min_score: f32,
) -> Result<Vec<Detection>, String> {
    let (rows, cols) = match shape {
        [1, a, b] => (*a, *b),
        [a, b] => (*a, *b),
        other => return Err(format!("expected a [1, N, K] output, got {other:?}")),
    };
    if data.len() != rows * cols {
        return Err(format!("output holds {} values, shape {shape:?} says {}", data.len(), rows * cols));
    }
    // Candidates x attributes, whichever way the buffer stores them.
    let (n, k) = match layout {
        OutputLayout::Yolov5 => (rows, cols),
        OutputLayout::Yolov8 => (cols, rows),
    };
    let at = |i: usize, j: usize| match layout {
        OutputLayout::Yolov5 => data[i * cols + j],
        OutputLayout::Yolov8 => data[j * cols + i],
    };
    let first_class = if layout == OutputLayout::Yolov5 { 5 } else { 4 };
    if class_id + first_class >= k {
        return Err(format!(
            "class {class_id} is out of range: the model has {} classes",
            k.saturating_sub(first_class)
        ));
    }
    let mut out = Vec::new();
    for i in 0..n {
        let class_score = at(i, first_class + class_id);
        let score = if layout == OutputLayout::Yolov5 { at(i, 4) * class_score } else { class_score };
        if score < min_score {
            continue;
        }
        let (cx, cy, w, h) = (at(i, 0), at(i, 1), at(i, 2), at(i, 3));
        out.push(Detection::new(BBox::new(cx - w / 2.0, cy - h / 2.0, w, h), score));
    }
    Ok(out)
}

fn nms(detections: Vec<Detection>, min_score: f32, threshold: f32) -> opencv::Result<Vec<Detection>> {
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
        assert!(matches!(build("yolo9000", &config), Err(IngesterError::UnsupportedDetector(_))));
        let no_mtcnn = DetectorsConfig {
            mtcnn: crate::mtcnn::MtcnnConfig { model_dir: "/nonexistent".into(), ..Default::default() },
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
