//! `background`: MOG2 background subtraction for static cameras (moving blobs of person shape),
//! and the motion gate the whole-frame detectors use.

use opencv::core::{Mat, Point, Size, Vector};
use opencv::{imgproc, video};
use serde::Deserialize;

use super::{Detection, Detector, Target};
use crate::frame::BBox;

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
pub(super) struct Blob {
    pub x: i32,
    pub y: i32,
    pub width: i32,
    pub height: i32,
    pub fill: f32,
}

impl BackgroundDetector {
    /// Updates the background model with `frame`; returns the moving blobs of at least `min_area`.
    pub(super) fn foreground(&mut self, frame: &Mat, min_area: f64) -> opencv::Result<Vec<Blob>> {
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
