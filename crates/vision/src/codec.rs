//! Decoding and encoding, the one implementation every service uses: an image as it arrives
//! (encoded bytes, or raw pixels in a stated format) to an 8-bit BGR `Mat`, size-checked before
//! and after, and a BGR `Mat` to JPEG.

use opencv::core::{Mat, Vector};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc};

use crate::{DECODES, HeaderError, check_header, check_pixels};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    Rgb8,
    Bgr8,
    Gray8,
}

impl PixelFormat {
    pub fn channels(self) -> usize {
        match self {
            PixelFormat::Rgb8 | PixelFormat::Bgr8 => 3,
            PixelFormat::Gray8 => 1,
        }
    }
}

/// An image as it arrives: encoded bytes, or raw pixels.
#[derive(Debug, Clone, Copy)]
pub enum ImageInput<'a> {
    Encoded(&'a [u8]),
    Raw { width: u32, height: u32, format: PixelFormat, pixels: &'a [u8] },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No bytes, or a raw image of no width or height.
    #[error("empty image")]
    Empty,
    /// Bytes no decoder understands, or a decoder's failure.
    #[error("{0}")]
    Corrupt(String),
    #[error("raw image of {width}x{height} {format:?} needs {expected} bytes, got {actual}")]
    WrongSize { width: u32, height: u32, format: PixelFormat, expected: usize, actual: usize },
    #[error("{width}x{height} is larger than the limit of {limit} pixels")]
    TooLarge { width: u32, height: u32, limit: u64 },
}

impl From<opencv::Error> for DecodeError {
    fn from(e: opencv::Error) -> Self {
        DecodeError::Corrupt(e.message)
    }
}

/// Decodes `input` to 8-bit BGR. An encoded image's header is checked against `max_pixels`
/// before the decoder allocates what it declares, and the decode takes one of the process's
/// [`DECODES`] slots. A truncated JPEG that OpenCV still decodes partly is accepted (the visible
/// part is real).
pub fn decode(input: ImageInput<'_>, max_pixels: u64) -> Result<Mat, DecodeError> {
    let too_large = |width, height| DecodeError::TooLarge { width, height, limit: max_pixels };
    let mat = match input {
        ImageInput::Encoded([]) => return Err(DecodeError::Empty),
        ImageInput::Encoded(bytes) => {
            check_header(bytes, max_pixels).map_err(|e| match e {
                HeaderError::TooLarge { width, height, .. } => too_large(width, height),
                unreadable => DecodeError::Corrupt(unreadable.to_string()),
            })?;
            let buf = Vector::<u8>::from_slice(bytes);
            // OpenCV reports most corrupt data as an empty Mat, some as an error.
            let mat = DECODES.run(|| imgcodecs::imdecode(&buf, imgcodecs::IMREAD_COLOR))?;
            if mat.empty() || mat.cols() == 0 || mat.rows() == 0 {
                return Err(DecodeError::Corrupt(format!("not a supported image ({}) or corrupt", crate::SUPPORTED)));
            }
            mat
        }
        ImageInput::Raw { width, height, format, pixels } => {
            if width == 0 || height == 0 {
                return Err(DecodeError::Empty);
            }
            check_pixels(width, height, max_pixels).map_err(|_| too_large(width, height))?;
            let expected = width as usize * height as usize * format.channels();
            if pixels.len() != expected {
                return Err(DecodeError::WrongSize { width, height, format, expected, actual: pixels.len() });
            }
            let flat =
                Mat::new_rows_cols_with_data(height as i32, (width as usize * format.channels()) as i32, pixels)?;
            let shaped = flat.reshape(format.channels() as i32, height as i32)?;
            let mut bgr = Mat::default();
            match format {
                PixelFormat::Bgr8 => shaped.copy_to(&mut bgr)?,
                PixelFormat::Rgb8 => imgproc::cvt_color_def(&shaped, &mut bgr, imgproc::COLOR_RGB2BGR)?,
                PixelFormat::Gray8 => imgproc::cvt_color_def(&shaped, &mut bgr, imgproc::COLOR_GRAY2BGR)?,
            }
            bgr
        }
    };
    let (width, height) = (mat.cols() as u32, mat.rows() as u32);
    check_pixels(width, height, max_pixels).map_err(|_| too_large(width, height))?;
    Ok(mat)
}

/// Encodes a BGR image as JPEG at `quality` (0-100).
pub fn encode_jpeg(bgr: &Mat, quality: i32) -> opencv::Result<Vec<u8>> {
    let mut buf = Vector::<u8>::new();
    let params = Vector::<i32>::from_slice(&[imgcodecs::IMWRITE_JPEG_QUALITY, quality]);
    imgcodecs::imencode(".jpg", bgr, &mut buf, &params)?;
    Ok(buf.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(width: u32, height: u32, format: PixelFormat, pixels: &[u8]) -> ImageInput<'_> {
        ImageInput::Raw { width, height, format, pixels }
    }

    #[test]
    fn raw_pixels_come_out_bgr_and_encoded_ones_round_trip() {
        // One red pixel and one grey pixel, as RGB.
        let bgr = decode(raw(2, 1, PixelFormat::Rgb8, &[255, 0, 0, 9, 9, 9]), 100).unwrap();
        assert_eq!(bgr.data_bytes().unwrap(), &[0, 0, 255, 9, 9, 9]);
        let gray = decode(raw(1, 1, PixelFormat::Gray8, &[7]), 100).unwrap();
        assert_eq!(gray.data_bytes().unwrap(), &[7, 7, 7]);
        let jpeg = encode_jpeg(&decode(raw(8, 8, PixelFormat::Bgr8, &[200; 192]), 100).unwrap(), 95).unwrap();
        let back = decode(ImageInput::Encoded(&jpeg), 100).unwrap();
        assert_eq!((back.cols(), back.rows()), (8, 8));
        assert!(back.data_bytes().unwrap().iter().all(|&v| v.abs_diff(200) <= 2));
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        assert_eq!(decode(ImageInput::Encoded(&[]), 100).unwrap_err(), DecodeError::Empty);
        assert_eq!(decode(raw(0, 4, PixelFormat::Rgb8, &[]), 100).unwrap_err(), DecodeError::Empty);
        let short = decode(raw(2, 2, PixelFormat::Rgb8, &[0; 11]), 100).unwrap_err();
        assert_eq!(short.to_string(), "raw image of 2x2 Rgb8 needs 12 bytes, got 11");
        assert!(matches!(decode(raw(20, 20, PixelFormat::Gray8, &[0; 400]), 100), Err(DecodeError::TooLarge { .. })));
        assert!(matches!(decode(ImageInput::Encoded(b"not an image"), 100), Err(DecodeError::Corrupt(_))));
        let jpeg = encode_jpeg(&decode(raw(20, 20, PixelFormat::Gray8, &[0; 400]), 1000).unwrap(), 90).unwrap();
        let big = decode(ImageInput::Encoded(&jpeg), 100).unwrap_err();
        assert_eq!(big, DecodeError::TooLarge { width: 20, height: 20, limit: 100 });
    }
}
