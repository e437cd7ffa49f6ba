//! `hog`: OpenCV's HOG + linear SVM people detector, with optional upscaling so that people
//! shorter than its 128-pixel window are found, and an optional motion gate.

use opencv::core::{Mat, Rect, Size, Vector};
use opencv::prelude::*;
use opencv::{imgproc, objdetect};
use serde::Deserialize;

use super::{BackgroundConfig, BackgroundDetector, Detection, Detector, Target, nms};
use crate::frame::BBox;

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
