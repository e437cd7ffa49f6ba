//! A camera's view of its source: the region it sees, a resize, a colour change and a clock
//! offset, applied to each frame before detection. It crops a wide stream to its area of
//! interest, corrects a camera whose clock is off, and lets one recording play several cameras
//! (`reid demo` plays `vtest.avi` as two).

use std::time::Duration;

use opencv::core::{Mat, Rect, Scalar, Size};
use opencv::imgproc;
use opencv::prelude::*;
use reid_server::invalid::{Invalid, ensure};
use serde::Deserialize;

use crate::frame::{BBox, Frame};

/// Why a frame could not be seen through a view.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("the view makes {width}x{height}, over the limit of {limit} pixels")]
    TooLarge { width: u32, height: u32, limit: u64 },
    #[error("opencv: {0}")]
    OpenCv(#[from] opencv::Error),
}

/// The identity view changes nothing.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct View {
    /// `[x, y, width, height]` as fractions of the frame; unset: the whole frame.
    pub region: Option<[f32; 4]>,
    /// Resize factor applied after the region.
    pub scale: f32,
    /// Per-channel gains in B, G, R order (a different white balance or exposure).
    pub gains: [f32; 3],
    /// Added to every channel after the gains (-255..255).
    pub brightness: f32,
    /// Added to every frame time, in milliseconds (may be negative): the camera's clock offset.
    pub time_offset_ms: i64,
}

impl Default for View {
    fn default() -> Self {
        View { region: None, scale: 1.0, gains: [1.0; 3], brightness: 0.0, time_offset_ms: 0 }
    }
}

impl View {
    pub fn is_identity(&self) -> bool {
        self == &View::default()
    }

    /// Keys are named as a camera's TOML writes them (`view.scale`).
    pub fn validate(&self) -> Result<(), Invalid> {
        if let Some([x, y, w, h]) = self.region {
            let inside = |v: f32| (0.0..=1.0).contains(&v);
            let fits = inside(x) && inside(y) && w > 0.0 && h > 0.0 && x + w <= 1.0 + 1e-6 && y + h <= 1.0 + 1e-6;
            ensure(fits, "view.region", || format!("{:?} must lie inside the frame, in fractions", [x, y, w, h]))?;
        }
        let scale = self.scale;
        ensure((0.05..=8.0).contains(&scale), "view.scale", || format!("{scale} must lie in [0.05, 8]"))?;
        // A view may enlarge its region, but never past the source frame's own pixel count: the
        // source's frame-size limit then bounds what the view makes too.
        let factor = self.pixel_factor();
        ensure(factor <= 1.0 + 1e-6, "view.scale", || {
            format!("{scale} makes {factor:.2}x the pixels of the source frame; at most 1x (scale a smaller region)")
        })?;
        ensure(self.gains.iter().all(|g| (0.0..=8.0).contains(g)), "view.gains", || {
            format!("{:?} must lie in [0, 8]", self.gains)
        })?;
        let brightness = self.brightness;
        ensure((-255.0..=255.0).contains(&brightness), "view.brightness", || {
            format!("{brightness} must lie in [-255, 255]")
        })
    }

    /// The view's pixels over the source frame's: region area times scale squared.
    pub fn pixel_factor(&self) -> f64 {
        let area = self.region.map_or(1.0, |[_, _, w, h]| f64::from(w) * f64::from(h));
        area * f64::from(self.scale).powi(2)
    }

    /// The pixels of a `cols` x `rows` source frame the region keeps; `None`: all of them.
    fn region_rect(&self, cols: i32, rows: i32) -> Option<Rect> {
        let [x, y, w, h] = self.region?;
        let (fc, fr) = (cols as f32, rows as f32);
        let (width, height) = (((w * fc).round() as i32).clamp(1, cols), ((h * fr).round() as i32).clamp(1, rows));
        let (left, top) = ((x * fc).round() as i32, (y * fr).round() as i32);
        Some(Rect::new(left.min(cols - width), top.min(rows - height), width, height))
    }

    /// A box in this view's pixels back in the pixels of the `cols` x `rows` source frame.
    pub fn to_source(&self, b: BBox, cols: i32, rows: i32) -> BBox {
        let (left, top) = self.region_rect(cols, rows).map_or((0.0, 0.0), |r| (r.x as f32, r.y as f32));
        let s = self.scale;
        BBox::new(left + b.x / s, top + b.y / s, b.w / s, b.h / s)
    }

    /// A box in the pixels of the `cols` x `rows` source frame in this view's pixels: the inverse
    /// of [`View::to_source`] (ground truth labelled on the source, cut as the camera sees it).
    pub fn from_source(&self, b: BBox, cols: i32, rows: i32) -> BBox {
        let (left, top) = self.region_rect(cols, rows).map_or((0.0, 0.0), |r| (r.x as f32, r.y as f32));
        let s = self.scale;
        BBox::new((b.x - left) * s, (b.y - top) * s, b.w * s, b.h * s)
    }

    /// The share of a source box's width that lies inside this view's region (1 without one):
    /// how much of a person walking out of the camera's side it still sees.
    pub fn share_inside(&self, b: BBox, cols: i32, rows: i32) -> f32 {
        let Some(r) = self.region_rect(cols, rows) else { return 1.0 };
        if b.w <= 0.0 {
            return 0.0;
        }
        let inside = (b.x + b.w).min((r.x + r.width) as f32) - b.x.max(r.x as f32);
        (inside / b.w).clamp(0.0, 1.0)
    }

    /// The frame as this camera sees it; a frame the view would make larger than `max_pixels`
    /// is refused before it is resized.
    pub fn apply(&self, frame: Frame, max_pixels: u64) -> Result<Frame, ViewError> {
        if self.is_identity() {
            return Ok(frame);
        }
        let Frame { mut image, captured_at, sequence } = frame;
        if let Some(rect) = self.region_rect(image.cols(), image.rows()) {
            image = Mat::roi(&image, rect)?.try_clone()?;
        }
        if (self.scale - 1.0).abs() > f32::EPSILON {
            let mut resized = Mat::default();
            let (width, height) = (
                ((f64::from(image.cols()) * f64::from(self.scale)).round() as u32).max(1),
                ((f64::from(image.rows()) * f64::from(self.scale)).round() as u32).max(1),
            );
            if u64::from(width) * u64::from(height) > max_pixels {
                return Err(ViewError::TooLarge { width, height, limit: max_pixels });
            }
            let size = Size::new(width as i32, height as i32);
            let interpolation = if self.scale < 1.0 { imgproc::INTER_AREA } else { imgproc::INTER_LINEAR };
            imgproc::resize(&image, &mut resized, size, 0.0, 0.0, interpolation)?;
            image = resized;
        }
        if self.gains != [1.0; 3] || self.brightness != 0.0 {
            let [b, g, r] = self.gains.map(f64::from);
            let mut scaled = Mat::default();
            opencv::core::multiply(&image, &Scalar::new(b, g, r, 1.0), &mut scaled, 1.0, -1)?;
            let mut shifted = Mat::default();
            let v = f64::from(self.brightness);
            opencv::core::add(&scaled, &Scalar::new(v, v, v, 0.0), &mut shifted, &opencv::core::no_array(), -1)?;
            image = shifted;
        }
        let offset = Duration::from_millis(self.time_offset_ms.unsigned_abs());
        let captured_at = if self.time_offset_ms >= 0 {
            captured_at + offset
        } else {
            captured_at.checked_sub(offset).unwrap_or(captured_at)
        };
        Ok(Frame { image, captured_at, sequence })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::SystemTime;

    use opencv::core::{CV_8UC3, Vec3b};

    use super::*;

    fn frame() -> Frame {
        let mut image = Mat::new_rows_cols_with_default(100, 200, CV_8UC3, Scalar::new(100., 100., 100., 0.)).unwrap();
        // A marker pixel in the right half.
        *image.at_2d_mut::<Vec3b>(50, 150).unwrap() = Vec3b::from([10, 20, 30]);
        Frame { image, captured_at: SystemTime::UNIX_EPOCH + Duration::from_secs(100), sequence: 7 }
    }

    #[test]
    fn a_view_cuts_scales_recolours_and_shifts_the_clock() {
        let view = View {
            region: Some([0.5, 0.0, 0.5, 1.0]),
            scale: 0.5,
            gains: [1.0, 1.0, 2.0],
            brightness: -10.0,
            time_offset_ms: 1500,
        };
        let seen = view.apply(frame(), u64::MAX).unwrap();
        assert_eq!((seen.image.cols(), seen.image.rows()), (50, 50));
        let grey = *seen.image.at_2d::<Vec3b>(0, 0).unwrap();
        assert_eq!(grey.0, [90, 90, 190]);
        assert_eq!(seen.captured_at, SystemTime::UNIX_EPOCH + Duration::from_millis(101_500));
        assert_eq!(seen.sequence, 7);
        let back = View { time_offset_ms: -2000, ..View::default() }.apply(frame(), u64::MAX).unwrap();
        assert_eq!(back.captured_at, SystemTime::UNIX_EPOCH + Duration::from_secs(98));
    }

    #[test]
    fn boxes_map_back_to_the_source_frame() {
        let view = View { region: Some([0.5, 0.0, 0.5, 1.0]), scale: 0.5, ..View::default() };
        // The marker at (150, 50) of the source is at (0.5 * (150 - 100), 0.5 * 50) in the view.
        let seen = BBox::new(25.0, 25.0, 5.0, 10.0);
        assert_eq!(view.to_source(seen, 200, 100), BBox::new(150.0, 50.0, 10.0, 20.0));
        assert_eq!(View::default().to_source(seen, 200, 100), seen);
        assert_eq!(view.from_source(BBox::new(150.0, 50.0, 10.0, 20.0), 200, 100), seen);
        assert_eq!(View::default().from_source(seen, 200, 100), seen);
    }

    #[test]
    fn a_view_sees_the_part_of_a_box_inside_its_region() {
        let right_half = View { region: Some([0.5, 0.0, 0.5, 1.0]), ..View::default() };
        assert_eq!(right_half.share_inside(BBox::new(120.0, 10.0, 20.0, 40.0), 200, 100), 1.0);
        assert_eq!(right_half.share_inside(BBox::new(90.0, 10.0, 20.0, 40.0), 200, 100), 0.5);
        assert_eq!(right_half.share_inside(BBox::new(10.0, 10.0, 20.0, 40.0), 200, 100), 0.0);
        assert_eq!(View::default().share_inside(BBox::new(10.0, 10.0, 20.0, 40.0), 200, 100), 1.0);
    }

    #[test]
    fn the_region_is_the_part_of_the_frame_it_names() {
        let view = View { region: Some([0.5, 0.0, 0.5, 1.0]), ..View::default() };
        let seen = view.apply(frame(), u64::MAX).unwrap();
        assert_eq!(seen.image.at_2d::<Vec3b>(50, 50).unwrap().0, [10, 20, 30]);
        let outside = View { region: Some([0.6, 0.0, 0.5, 1.0]), ..View::default() };
        assert_eq!(outside.validate().unwrap_err().key, "view.region");
        assert_eq!(View { scale: 0.0, ..View::default() }.validate().unwrap_err().key, "view.scale");
        assert_eq!(View { gains: [1.0, 9.0, 1.0], ..View::default() }.validate().unwrap_err().key, "view.gains");
        // Enlarging is allowed up to the source's own pixel count, not beyond.
        assert!(View { scale: 8.0, ..View::default() }.validate().is_err());
        assert!(View { region: Some([0.0, 0.0, 0.25, 0.25]), scale: 4.0, ..View::default() }.validate().is_ok());
        assert!(View { region: Some([0.0, 0.0, 0.5, 0.5]), scale: 4.0, ..View::default() }.validate().is_err());
        // Applied, the frame limit holds too: 200x100 at scale 2 of a quarter region is 100x50 -> 200x100.
        let quarter = View { region: Some([0.0, 0.0, 0.5, 0.5]), scale: 2.0, ..View::default() };
        assert!(matches!(quarter.apply(frame(), 19_999), Err(ViewError::TooLarge { width: 200, height: 100, .. })));
        assert!(quarter.apply(frame(), 20_000).is_ok());
        assert!(View::default().validate().is_ok());
    }
}
