//! `haar-face`: the Haar frontal-face cascade from Debian's `opencv-data`.

use std::path::PathBuf;

use opencv::core::{Mat, Rect, Size, Vector};
use opencv::prelude::*;
use opencv::{imgproc, objdetect};
use serde::Deserialize;

use super::{Detection, Detector, Target};
use crate::frame::BBox;

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
