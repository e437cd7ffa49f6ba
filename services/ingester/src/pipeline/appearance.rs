//! A cheap appearance cue for the tracker: colour histograms of a box's torso and legs.
//!
//! IoU alone cannot tell two people apart who walk side by side: when one of them is missed for
//! a frame, the other's box overlaps the missed one's prediction and the track swaps people
//! (docs/evaluation.md). What they wear usually differs, and a histogram of it costs a few
//! microseconds a box where an embedding would cost a network pass. DeepSORT gates its matches
//! on appearance the same way, with a re-ID network's features.

use opencv::core::{Mat, Rect};
use opencv::prelude::*;
use opencv::{Result, imgproc};

use crate::frame::BBox;

/// Bins of one stripe: 8 of brightness for greys, blacks and whites (saturation or value too low
/// for a hue to mean anything), 8 hues x 2 saturations for colours.
const GREYS: usize = 8;
const HUES: usize = 8;
const BINS: usize = GREYS + HUES * 2;
/// Below these (of 255) a pixel counts as grey.
const MIN_SATURATION: u8 = 50;
const MIN_VALUE: u8 = 50;
/// The stripes, as fractions of the box height: torso and legs, head and feet left out. Only the
/// middle 60% of the width is read, where the person is rather than the background.
const STRIPES: [(f32, f32); 2] = [(0.15, 0.5), (0.5, 0.9)];
const MIDDLE: (f32, f32) = (0.2, 0.8);

/// Normalised colour histograms of a box's torso and legs.
#[derive(Debug, Clone, PartialEq)]
pub struct Appearance {
    stripes: [[f32; BINS]; 2],
}

impl Appearance {
    /// The appearance of what `bbox` holds in a BGR `image`; `None` when the box is too small
    /// or off the image.
    pub fn of_box(image: &Mat, bbox: &BBox) -> Option<Appearance> {
        let (w, h) = (image.cols() as f32, image.rows() as f32);
        let x0 = (bbox.x + bbox.w * MIDDLE.0).max(0.0);
        let x1 = (bbox.x + bbox.w * MIDDLE.1).min(w);
        let (y0, y1) = (bbox.y.max(0.0), (bbox.y + bbox.h).min(h));
        if x1 - x0 < 4.0 || y1 - y0 < 8.0 {
            return None;
        }
        let rect = Rect::new(x0 as i32, y0 as i32, (x1 - x0) as i32, (y1 - y0) as i32);
        let roi = Mat::roi(image, rect).ok()?;
        // Stripe bounds relative to the box, then to the cut.
        let top = bbox.y;
        let rows: Vec<(f32, f32)> =
            STRIPES.iter().map(|(a, b)| (top + bbox.h * a - y0, top + bbox.h * b - y0)).collect();
        Self::histograms(&roi, &rows).ok().flatten()
    }

    /// The appearance of a whole crop (a box cut by an edge device).
    pub fn of_crop(crop: &Mat) -> Option<Appearance> {
        let bbox = BBox::new(0.0, 0.0, crop.cols() as f32, crop.rows() as f32);
        Self::of_box(crop, &bbox)
    }

    fn histograms(roi: &impl opencv::core::ToInputArray, rows: &[(f32, f32)]) -> Result<Option<Appearance>> {
        let mut hsv = Mat::default();
        imgproc::cvt_color_def(roi, &mut hsv, imgproc::COLOR_BGR2HSV)?;
        let (cols, height) = (hsv.cols() as usize, hsv.rows());
        let mut stripes = [[0f32; BINS]; 2];
        for (stripe, &(from, to)) in stripes.iter_mut().zip(rows) {
            let (from, to) = (from.max(0.0) as i32, (to as i32).min(height));
            for y in from..to {
                let row = hsv.at_row::<opencv::core::Vec3b>(y)?;
                for px in &row[..cols] {
                    stripe[bin(px[0], px[1], px[2])] += 1.0;
                }
            }
            let total: f32 = stripe.iter().sum();
            if total < 16.0 {
                return Ok(None);
            }
            stripe.iter_mut().for_each(|v| *v /= total);
        }
        Ok(Some(Appearance { stripes }))
    }

    /// Bhattacharyya coefficient of the two, averaged over the stripes: 1 for the same
    /// histograms, 0 for colours that share nothing.
    pub fn similarity(&self, other: &Appearance) -> f32 {
        let per_stripe = self
            .stripes
            .iter()
            .zip(&other.stripes)
            .map(|(a, b)| a.iter().zip(b).map(|(p, q)| (p * q).sqrt()).sum::<f32>());
        per_stripe.sum::<f32>() / self.stripes.len() as f32
    }

    /// Moves towards `latest` by `rate` (a track's running appearance: light and pose change).
    pub fn blend(&mut self, latest: &Appearance, rate: f32) {
        for (mine, theirs) in self.stripes.iter_mut().zip(&latest.stripes) {
            for (m, t) in mine.iter_mut().zip(theirs) {
                *m = (1.0 - rate) * *m + rate * t;
            }
        }
    }

    /// A running appearance moved towards `latest` by `rate`, or started from it; kept as it is
    /// when nothing new was seen.
    pub fn follow(running: &mut Option<Appearance>, latest: Option<&Appearance>, rate: f32) {
        match (running, latest) {
            (Some(running), Some(latest)) => running.blend(latest, rate),
            (running @ None, Some(latest)) => *running = Some(latest.clone()),
            (_, None) => {}
        }
    }
}

/// The bin of one pixel of OpenCV's 8-bit HSV (hue 0-179).
fn bin(h: u8, s: u8, v: u8) -> usize {
    if s < MIN_SATURATION || v < MIN_VALUE {
        (v as usize * GREYS / 256).min(GREYS - 1)
    } else {
        let hue = (h as usize * HUES / 180).min(HUES - 1);
        GREYS + hue * 2 + usize::from(s >= 160)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use opencv::core::{CV_8UC3, Scalar};

    use super::*;

    /// A grey frame with a person at x 10-50: `top` above y 60, `legs` below (BGR).
    fn person(top: [f64; 3], legs: [f64; 3]) -> Mat {
        let mut image = Mat::new_rows_cols_with_default(120, 80, CV_8UC3, Scalar::all(128.0)).unwrap();
        let paint = |image: &mut Mat, y: i32, h: i32, c: [f64; 3]| {
            let mut roi = Mat::roi_mut(image, Rect::new(10, y, 40, h)).unwrap();
            roi.set_to_def(&Scalar::new(c[0], c[1], c[2], 0.0)).unwrap();
        };
        paint(&mut image, 10, 50, top);
        paint(&mut image, 60, 50, legs);
        image
    }

    /// A person dressed in one colour, as the tracker's tests need one.
    pub(crate) fn look(bgr: [f64; 3]) -> Appearance {
        Appearance::of_box(&person(bgr, bgr), &BOX).unwrap()
    }

    const BOX: BBox = BBox { x: 10.0, y: 10.0, w: 40.0, h: 100.0 };
    const RED: [f64; 3] = [30.0, 30.0, 200.0];
    const BLUE: [f64; 3] = [200.0, 60.0, 30.0];
    const DARK: [f64; 3] = [25.0, 25.0, 25.0];

    #[test]
    fn one_look_is_similar_to_itself_and_not_to_other_clothes() {
        let red_top = Appearance::of_box(&person(RED, DARK), &BOX).unwrap();
        let same = Appearance::of_box(&person(RED, DARK), &BBox { x: 12.0, ..BOX }).unwrap();
        let blue_top = Appearance::of_box(&person(BLUE, DARK), &BOX).unwrap();
        let all_other = Appearance::of_box(&person(BLUE, [220.0, 220.0, 220.0]), &BOX).unwrap();
        assert!(red_top.similarity(&same) > 0.99, "{}", red_top.similarity(&same));
        // The legs still agree: half the score.
        assert!((red_top.similarity(&blue_top) - 0.5).abs() < 0.05, "{}", red_top.similarity(&blue_top));
        assert!(red_top.similarity(&all_other) < 0.05, "{}", red_top.similarity(&all_other));
    }

    #[test]
    fn blending_moves_towards_the_latest_look() {
        let red = Appearance::of_box(&person(RED, DARK), &BOX).unwrap();
        let blue = Appearance::of_box(&person(BLUE, DARK), &BOX).unwrap();
        let mut running = red.clone();
        running.blend(&blue, 0.5);
        assert!(running.similarity(&blue) > red.similarity(&blue));
        assert!(running.similarity(&red) < 1.0);
    }

    #[test]
    fn boxes_too_small_or_off_the_frame_have_none() {
        let image = person(RED, DARK);
        assert_eq!(Appearance::of_box(&image, &BBox::new(10.0, 10.0, 4.0, 100.0)), None);
        assert_eq!(Appearance::of_box(&image, &BBox::new(200.0, 10.0, 40.0, 100.0)), None);
        assert!(Appearance::of_crop(&image).is_some());
    }
}
