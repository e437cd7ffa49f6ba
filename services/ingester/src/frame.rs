//! Frames and boxes: what flows from a source through detection and tracking, and the checks that
//! turn a corrupt, truncated or empty pushed frame into a counted error instead of a crash.

use std::time::SystemTime;

use opencv::core::{Mat, Rect};
use opencv::imgproc;
use opencv::prelude::*;
use reid_proto::v1 as pb;
use reid_vision::{DecodeError, ImageInput, PixelFormat};

/// One decoded frame, BGR8.
#[derive(Debug)]
pub struct Frame {
    pub image: Mat,
    pub captured_at: SystemTime,
    pub sequence: u64,
}

/// An axis-aligned box in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl BBox {
    pub fn new(x: f32, y: f32, w: f32, h: f32) -> Self {
        Self { x, y, w, h }
    }

    pub fn area(&self) -> f32 {
        self.w.max(0.0) * self.h.max(0.0)
    }

    pub fn iou(&self, other: &BBox) -> f32 {
        let x0 = self.x.max(other.x);
        let y0 = self.y.max(other.y);
        let x1 = (self.x + self.w).min(other.x + other.w);
        let y1 = (self.y + self.h).min(other.y + other.h);
        let inter = (x1 - x0).max(0.0) * (y1 - y0).max(0.0);
        let union = self.area() + other.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }

    pub fn center(&self) -> (f32, f32) {
        (self.x + self.w / 2.0, self.y + self.h / 2.0)
    }

    /// The box grown by `pad` of its size on every side, clipped to a `width` x `height` frame;
    /// `None` when nothing of it lies inside.
    pub fn to_rect(&self, pad: f32, width: i32, height: i32) -> Option<Rect> {
        let (px, py) = (self.w * pad, self.h * pad);
        let x0 = ((self.x - px).floor() as i32).clamp(0, width);
        let y0 = ((self.y - py).floor() as i32).clamp(0, height);
        let x1 = ((self.x + self.w + px).ceil() as i32).clamp(0, width);
        let y1 = ((self.y + self.h + py).ceil() as i32).clamp(0, height);
        (x1 > x0 && y1 > y0).then(|| Rect::new(x0, y0, x1 - x0, y1 - y0))
    }

    /// True when the box touches the frame border (the person is probably cut off).
    pub fn touches_border(&self, width: i32, height: i32) -> bool {
        let m = 2.0;
        self.x <= m || self.y <= m || self.x + self.w >= width as f32 - m || self.y + self.h >= height as f32 - m
    }
}

impl From<&pb::BoundingBox> for BBox {
    fn from(b: &pb::BoundingBox) -> Self {
        BBox::new(b.x, b.y, b.width, b.height)
    }
}

impl From<BBox> for pb::BoundingBox {
    fn from(b: BBox) -> Self {
        pb::BoundingBox { x: b.x, y: b.y, width: b.w, height: b.h }
    }
}

/// Why a pushed image could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrameError {
    #[error("empty image")]
    Empty,
    #[error("undecodable image ({0})")]
    Corrupt(String),
    #[error("raw image: {0}")]
    WrongSize(String),
    #[error("{width}x{height} is larger than the limit of {limit} pixels")]
    TooLarge { width: u32, height: u32, limit: u64 },
}

impl FrameError {
    /// The drop reason counted in camera status and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::Empty => "empty",
            FrameError::Corrupt(_) => "corrupt",
            FrameError::WrongSize(_) => "wrong_size",
            FrameError::TooLarge { .. } => "too_large",
        }
    }
}

/// Decodes a wire image to BGR8 ([`reid_vision::decode`]). A truncated JPEG that OpenCV still
/// decodes partly is accepted (the visible part is real); anything it cannot decode is `Corrupt`.
pub fn decode(image: &pb::Image, max_pixels: u64) -> Result<Mat, FrameError> {
    let input = match &image.data {
        None => return Err(FrameError::Empty),
        Some(pb::image::Data::Encoded(bytes)) => ImageInput::Encoded(bytes),
        Some(pb::image::Data::Raw(raw)) => {
            let format = match pb::PixelFormat::try_from(raw.format).unwrap_or(pb::PixelFormat::Unspecified) {
                pb::PixelFormat::Rgb8 => PixelFormat::Rgb8,
                pb::PixelFormat::Bgr8 => PixelFormat::Bgr8,
                pb::PixelFormat::Gray8 => PixelFormat::Gray8,
                pb::PixelFormat::Unspecified => {
                    return Err(FrameError::WrongSize("pixel format unspecified".into()));
                }
            };
            ImageInput::Raw { width: raw.width, height: raw.height, format, pixels: &raw.pixels }
        }
    };
    reid_vision::decode(input, max_pixels).map_err(|e| match e {
        DecodeError::Empty => FrameError::Empty,
        DecodeError::Corrupt(why) => FrameError::Corrupt(why),
        wrong @ DecodeError::WrongSize { .. } => FrameError::WrongSize(wrong.to_string()),
        DecodeError::TooLarge { width, height, limit } => FrameError::TooLarge { width, height, limit },
    })
}

/// The pixels an encoded image declares in its header, refused over `max_pixels`.
pub fn header_pixels(bytes: &[u8], max_pixels: u64) -> Result<u64, FrameError> {
    match reid_vision::check_header(bytes, max_pixels) {
        Ok((w, h)) => Ok(u64::from(w) * u64::from(h)),
        Err(reid_vision::HeaderError::TooLarge { width, height, limit }) => {
            Err(FrameError::TooLarge { width, height, limit })
        }
        Err(unreadable) => Err(FrameError::Corrupt(unreadable.to_string())),
    }
}

/// The pixels a wire image will take once decoded, from its header or raw size, without decoding.
pub fn declared_pixels(image: &pb::Image, max_pixels: u64) -> Result<u64, FrameError> {
    match &image.data {
        None => Err(FrameError::Empty),
        Some(pb::image::Data::Encoded(bytes)) if bytes.is_empty() => Err(FrameError::Empty),
        Some(pb::image::Data::Encoded(bytes)) => header_pixels(bytes, max_pixels),
        Some(pb::image::Data::Raw(raw)) => {
            let pixels = u64::from(raw.width) * u64::from(raw.height);
            if pixels > max_pixels {
                return Err(FrameError::TooLarge { width: raw.width, height: raw.height, limit: max_pixels });
            }
            Ok(pixels)
        }
    }
}

pub use reid_vision::encode_jpeg;

/// Encodes a crop for delivery as JPEG at `quality`, shrunk first (keeping its aspect) when it has
/// more than `max_pixels` pixels.
pub fn encode_crop(image: &Mat, max_pixels: u64, quality: i32) -> opencv::Result<Vec<u8>> {
    let pixels = image.cols() as f64 * image.rows() as f64;
    if pixels <= max_pixels as f64 {
        return encode_jpeg(image, quality);
    }
    let f = (max_pixels as f64 / pixels).sqrt();
    let size = opencv::core::Size::new(
        ((image.cols() as f64 * f).floor() as i32).max(1),
        ((image.rows() as f64 * f).floor() as i32).max(1),
    );
    let mut small = Mat::default();
    imgproc::resize(image, &mut small, size, 0.0, 0.0, imgproc::INTER_AREA)?;
    encode_jpeg(&small, quality)
}

/// An encoded image for the wire.
pub fn encoded(bytes: Vec<u8>) -> pb::Image {
    pb::Image { data: Some(pb::image::Data::Encoded(bytes)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_boxes() {
        let a = BBox::new(0.0, 0.0, 10.0, 10.0);
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&BBox::new(20.0, 20.0, 5.0, 5.0)), 0.0);
        // Half overlap: 50 / (100 + 100 - 50).
        let b = BBox::new(5.0, 0.0, 10.0, 10.0);
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-6);
    }

    #[test]
    fn boxes_are_clipped_to_the_frame() {
        let b = BBox::new(-5.0, 90.0, 20.0, 20.0);
        assert_eq!(b.to_rect(0.0, 100, 100), Some(Rect::new(0, 90, 15, 10)));
        assert_eq!(BBox::new(200.0, 0.0, 5.0, 5.0).to_rect(0.0, 100, 100), None);
    }

    #[test]
    fn bad_pushed_images_are_typed_errors() {
        let max = 1 << 20;
        assert_eq!(decode(&pb::Image { data: None }, max).err(), Some(FrameError::Empty));
        assert_eq!(decode(&encoded(vec![]), max).err(), Some(FrameError::Empty));
        assert!(matches!(decode(&encoded(b"not a jpeg at all".to_vec()), max), Err(FrameError::Corrupt(_))));
        let raw = |w, h, n| pb::Image {
            data: Some(pb::image::Data::Raw(pb::RawImage {
                width: w,
                height: h,
                format: pb::PixelFormat::Rgb8 as i32,
                pixels: vec![7; n],
            })),
        };
        assert!(matches!(decode(&raw(4, 4, 47), max), Err(FrameError::WrongSize(_))));
        assert!(matches!(decode(&raw(4096, 4096, 3), max), Err(FrameError::TooLarge { .. })));
        let ok = decode(&raw(4, 2, 24), max).expect("a well-formed raw image decodes");
        assert_eq!((ok.cols(), ok.rows(), ok.channels()), (4, 2, 3));
        // A JPEG round trip, then the same bytes cut to a header only.
        let jpeg = encode_jpeg(&ok, 90).expect("encode");
        assert!(decode(&encoded(jpeg.clone()), max).is_ok());
        assert!(decode(&encoded(jpeg[..20].to_vec()), max).is_err());
        // The same JPEG with a header that declares 30000x30000: refused before decoding.
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("a baseline JPEG");
        let mut bomb = jpeg.clone();
        bomb[sof + 5..sof + 9].copy_from_slice(&[0x75, 0x30, 0x75, 0x30]);
        let started = std::time::Instant::now();
        assert_eq!(
            decode(&encoded(bomb.clone()), max).err(),
            Some(FrameError::TooLarge { width: 30_000, height: 30_000, limit: max })
        );
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        assert!(matches!(declared_pixels(&encoded(bomb), max), Err(FrameError::TooLarge { .. })));
        assert_eq!(declared_pixels(&encoded(jpeg), max), Ok(8));
    }

    #[test]
    fn large_crops_are_shrunk_under_the_limit_before_they_are_sent() {
        let big = Mat::new_rows_cols_with_default(2000, 1000, opencv::core::CV_8UC3, opencv::core::Scalar::all(90.0))
            .expect("a crop");
        let jpeg = encode_crop(&big, 20_000, 90).expect("encode");
        let pixels = declared_pixels(&encoded(jpeg), u64::MAX).expect("a JPEG");
        assert!(pixels <= 20_000 && pixels > 19_000, "{pixels}");
        let small = Mat::new_rows_cols_with_default(20, 10, opencv::core::CV_8UC3, opencv::core::Scalar::all(90.0))
            .expect("a crop");
        assert_eq!(declared_pixels(&encoded(encode_crop(&small, 20_000, 90).expect("encode")), u64::MAX), Ok(200));
    }
}
