//! The one pre-processing path, shared by serving and training: decode, colour order, resize,
//! normalise, and lay out as CHW floats.

use opencv::core::{Mat, Size};
use opencv::imgproc;
use opencv::prelude::*;

use crate::ModelError;
use crate::card::{ColorOrder, InputSpec, Normalization};

/// Decoded images larger than this many pixels are refused (about 8K x 4K).
pub const DEFAULT_MAX_PIXELS: u64 = 33_177_600;

pub use reid_vision::{ImageInput, PixelFormat};

/// One image ready for a model: `spec.numel()` floats in CHW order.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessed {
    pub spec: InputSpec,
    pub data: Vec<f32>,
}

/// Decodes `input` to an 8-bit BGR Mat, checking its size ([`reid_vision::decode`]).
pub fn decode(input: ImageInput<'_>, max_pixels: u64) -> Result<Mat, ModelError> {
    let encoded = matches!(input, ImageInput::Encoded(_));
    reid_vision::decode(input, max_pixels).map_err(|e| match e {
        reid_vision::DecodeError::Empty if encoded => ModelError::Decode("no bytes".into()),
        reid_vision::DecodeError::Empty => ModelError::EmptyImage,
        reid_vision::DecodeError::Corrupt(why) => ModelError::Decode(why),
        reid_vision::DecodeError::WrongSize { width, height, format, expected, actual } => {
            ModelError::PixelCount { width, height, format, expected, actual }
        }
        reid_vision::DecodeError::TooLarge { width, height, limit } => ModelError::TooLarge { width, height, limit },
    })
}

/// Turns a decoded BGR Mat into the model's input tensor data.
pub fn prepare(bgr: &Mat, spec: InputSpec, norm: &Normalization) -> Result<Preprocessed, ModelError> {
    let mut converted = Mat::default();
    let code = match spec.color {
        ColorOrder::Rgb => Some(imgproc::COLOR_BGR2RGB),
        ColorOrder::Gray => Some(imgproc::COLOR_BGR2GRAY),
        ColorOrder::Bgr => None,
    };
    let src = match code {
        Some(code) => {
            imgproc::cvt_color(bgr, &mut converted, code, 0)?;
            &converted
        }
        None => bgr,
    };
    let mut resized = Mat::default();
    let size = Size::new(spec.width as i32, spec.height as i32);
    let interpolation =
        if src.cols() > size.width && src.rows() > size.height { imgproc::INTER_AREA } else { imgproc::INTER_LINEAR };
    imgproc::resize(src, &mut resized, size, 0.0, 0.0, interpolation)?;
    let pixels = resized.data_bytes()?;
    let channels = spec.channels();
    let plane = spec.width as usize * spec.height as usize;
    debug_assert_eq!(pixels.len(), plane * channels);

    let mut data = vec![0f32; plane * channels];
    for (i, px) in pixels.chunks_exact(channels).enumerate() {
        for (c, v) in px.iter().enumerate() {
            data[c * plane + i] = f32::from(*v);
        }
    }
    normalise(&mut data, channels, norm);
    Ok(Preprocessed { spec, data })
}

fn normalise(data: &mut [f32], channels: usize, norm: &Normalization) {
    match norm {
        Normalization::MeanStd { mean, std } => {
            let plane = data.len() / channels;
            for (c, chunk) in data.chunks_exact_mut(plane).enumerate() {
                let (m, s) = (mean[c], std[c]);
                for v in chunk {
                    *v = (*v / 255.0 - m) / s;
                }
            }
        }
        Normalization::PerImage => {
            let n = data.len() as f64;
            let mean = data.iter().map(|v| f64::from(*v)).sum::<f64>() / n;
            let var = data.iter().map(|v| (f64::from(*v) - mean).powi(2)).sum::<f64>() / n;
            let std = var.sqrt().max(1.0 / n.sqrt());
            for v in data {
                *v = ((f64::from(*v) - mean) / std) as f32;
            }
        }
    }
}

/// Decode and prepare in one step: what serving and training both call.
pub fn preprocess(
    input: ImageInput<'_>,
    spec: InputSpec,
    norm: &Normalization,
    max_pixels: u64,
) -> Result<Preprocessed, ModelError> {
    let bgr = decode(input, max_pixels)?;
    prepare(&bgr, spec, norm)
}

/// Encodes raw RGB pixels as JPEG (quality 90): for tests, benchmarks and the demo.
pub fn encode_jpeg(width: u32, height: u32, rgb: &[u8]) -> Result<Vec<u8>, ModelError> {
    let bgr = decode(ImageInput::Raw { width, height, format: PixelFormat::Rgb8, pixels: rgb }, u64::MAX)?;
    Ok(reid_vision::encode_jpeg(&bgr, 90)?)
}

#[cfg(test)]
mod tests {
    use opencv::imgcodecs;

    use super::*;

    const RGB: InputSpec = InputSpec { width: 2, height: 1, color: ColorOrder::Rgb };

    fn identity_norm(c: usize) -> Normalization {
        Normalization::MeanStd { mean: vec![0.0; c], std: vec![1.0; c] }
    }

    #[test]
    fn raw_rgb_lays_out_chw_in_rgb_order() {
        // Two pixels: pure red, pure blue. Same size: no resampling.
        let pixels = [255, 0, 0, 0, 0, 255];
        let input = ImageInput::Raw { width: 2, height: 1, format: PixelFormat::Rgb8, pixels: &pixels };
        let out = preprocess(input, RGB, &identity_norm(3), DEFAULT_MAX_PIXELS).unwrap();
        // R plane, G plane, B plane.
        assert_eq!(out.data, vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn bgr_input_and_bgr_model_keep_order() {
        let pixels = [255, 0, 0, 0, 0, 255]; // BGR: blue, then red
        let input = ImageInput::Raw { width: 2, height: 1, format: PixelFormat::Bgr8, pixels: &pixels };
        let spec = InputSpec { color: ColorOrder::Bgr, ..RGB };
        let out = preprocess(input, spec, &identity_norm(3), DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(out.data, vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn mean_std_matches_hand_computation() {
        let pixels = [51, 102, 153, 51, 102, 153];
        let input = ImageInput::Raw { width: 2, height: 1, format: PixelFormat::Rgb8, pixels: &pixels };
        let norm = Normalization::MeanStd { mean: vec![0.1, 0.2, 0.3], std: vec![0.5, 0.5, 0.5] };
        let out = preprocess(input, RGB, &norm, DEFAULT_MAX_PIXELS).unwrap();
        // (51/255 - 0.1)/0.5 = 0.2, (102/255 - 0.2)/0.5 = 0.4, (153/255 - 0.3)/0.5 = 0.6
        for (got, want) in out.data.iter().zip([0.2, 0.2, 0.4, 0.4, 0.6, 0.6]) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn per_image_standardises() {
        let pixels = [0, 0, 0, 255, 255, 255];
        let input = ImageInput::Raw { width: 2, height: 1, format: PixelFormat::Rgb8, pixels: &pixels };
        let out = preprocess(input, RGB, &Normalization::PerImage, DEFAULT_MAX_PIXELS).unwrap();
        // Mean 127.5, std 127.5: every value becomes -1 or +1.
        assert_eq!(out.data, vec![-1.0, 1.0, -1.0, 1.0, -1.0, 1.0]);
    }

    #[test]
    fn gray_model_gets_one_channel() {
        let pixels = [51, 102];
        let input = ImageInput::Raw { width: 2, height: 1, format: PixelFormat::Gray8, pixels: &pixels };
        let spec = InputSpec { color: ColorOrder::Gray, ..RGB };
        let out = preprocess(input, spec, &identity_norm(1), DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(out.data, vec![0.2, 0.4]);
    }

    #[test]
    fn encoded_png_round_trips() {
        let pixels = [255u8, 0, 0, 0, 0, 255];
        let flat = Mat::new_rows_cols_with_data(1, 6, &pixels).unwrap();
        let bgr = flat.reshape(3, 1).unwrap();
        let mut png = opencv::core::Vector::<u8>::new();
        imgcodecs::imencode(".png", &bgr, &mut png, &opencv::core::Vector::new()).unwrap();
        let out = preprocess(ImageInput::Encoded(png.as_slice()), RGB, &identity_norm(3), DEFAULT_MAX_PIXELS).unwrap();
        // The Mat was BGR (blue, red), so in RGB order: R plane [0, 255], B plane [255, 0].
        assert_eq!(out.data, vec![0.0, 1.0, 0.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let corrupt = [0xFFu8, 0xD8, 0xFF, 0xE0, 1, 2, 3];
        assert!(matches!(
            preprocess(ImageInput::Encoded(&corrupt), RGB, &Normalization::PerImage, DEFAULT_MAX_PIXELS),
            Err(ModelError::Decode(_))
        ));
        assert!(matches!(
            preprocess(ImageInput::Encoded(&[]), RGB, &Normalization::PerImage, DEFAULT_MAX_PIXELS),
            Err(ModelError::Decode(_))
        ));
        let zero = ImageInput::Raw { width: 0, height: 4, format: PixelFormat::Rgb8, pixels: &[] };
        assert!(matches!(
            preprocess(zero, RGB, &Normalization::PerImage, DEFAULT_MAX_PIXELS),
            Err(ModelError::EmptyImage)
        ));
        let short = ImageInput::Raw { width: 2, height: 2, format: PixelFormat::Rgb8, pixels: &[0; 11] };
        assert!(matches!(
            preprocess(short, RGB, &Normalization::PerImage, DEFAULT_MAX_PIXELS),
            Err(ModelError::PixelCount { expected: 12, actual: 11, .. })
        ));
        let big = ImageInput::Raw { width: 100, height: 100, format: PixelFormat::Gray8, pixels: &[0; 10_000] };
        assert!(matches!(preprocess(big, RGB, &Normalization::PerImage, 9_999), Err(ModelError::TooLarge { .. })));
        // 629 bytes that declare 30000x30000: refused from the header, before any decoding.
        let bomb = bomb_jpeg(30_000, 30_000);
        let started = std::time::Instant::now();
        assert!(matches!(
            preprocess(ImageInput::Encoded(&bomb), RGB, &Normalization::PerImage, DEFAULT_MAX_PIXELS),
            Err(ModelError::TooLarge { width: 30_000, height: 30_000, .. })
        ));
        assert!(started.elapsed() < std::time::Duration::from_millis(100), "the bomb was decoded");
    }

    /// A real JPEG of 16x16 whose header is rewritten to declare `width x height`.
    pub(crate) fn bomb_jpeg(width: u16, height: u16) -> Vec<u8> {
        let jpeg = encode_jpeg(16, 16, &[90u8; 16 * 16 * 3]).unwrap();
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        let mut bomb = jpeg.clone();
        bomb[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
        bomb[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
        bomb
    }
}
