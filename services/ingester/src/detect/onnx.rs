//! `onnx`: any YOLO-style ONNX detector through OpenCV's dnn module, with a configurable output
//! layout, so that users can bring a better model.

use std::path::PathBuf;

use opencv::core::{Mat, Scalar, Size};
use opencv::dnn;
use opencv::prelude::*;
use serde::Deserialize;

use super::{Detection, Detector, Target, nms};
use crate::frame::BBox;

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
