//! One conformance suite run against every backend, with the stock models that `make setup`
//! builds under `models/`, plus the cross-backend and face checks.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use opencv::core::{Rect, Size, Vector};
use opencv::prelude::*;
use opencv::{imgcodecs, objdetect};
use reid_model::backend::LoadOptions;
use reid_model::preprocess::{DEFAULT_MAX_PIXELS, decode, prepare};
use reid_model::{EmbeddingModel, ImageInput, PixelFormat, load_model, preprocess};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model(name: &str) -> Box<dyn EmbeddingModel> {
    let path = repo().join("models").join(name);
    load_model(&path, LoadOptions::default())
        .unwrap_or_else(|e| panic!("{name}: {e} (run `make setup` to build the stock models)"))
}

/// Deterministic, distinct test images: colour gradients with a per-image pattern.
fn synthetic(i: usize, width: u32, height: u32) -> Vec<u8> {
    let mut px = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            let (x, y, i) = (x as usize, y as usize, i + 1);
            px.extend([((x * 7 * i + y) % 256) as u8, ((y * 3 + x * i) % 256) as u8, ((x * y * i / 16) % 256) as u8]);
        }
    }
    px
}

fn inputs(model: &dyn EmbeddingModel, n: usize) -> Vec<Vec<f32>> {
    let card = model.card();
    (0..n)
        .map(|i| {
            let pixels = synthetic(i, 96, 192);
            let input = ImageInput::Raw { width: 96, height: 192, format: PixelFormat::Rgb8, pixels: &pixels };
            preprocess(input, card.input, &card.normalization, DEFAULT_MAX_PIXELS).unwrap().data
        })
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn conformance(mut model: Box<dyn EmbeddingModel>, batch: usize) {
    let dim = model.card().embedding_dim as usize;
    let rows = inputs(model.as_ref(), batch);
    let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();

    let batched = model.embed(&refs).unwrap();
    assert_eq!(batched.len(), batch);
    for v in &batched {
        assert_eq!(v.len(), dim);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not unit length: {norm}");
    }
    // Distinct inputs give distinct embeddings.
    assert!(max_abs_diff(&batched[0], &batched[1]) > 1e-3);

    // Golden batch invariance: alone or inside the batch, the same vector.
    for (i, row) in refs.iter().enumerate().step_by(7) {
        let alone = model.embed(&[row]).unwrap();
        let diff = max_abs_diff(&alone[0], &batched[i]);
        assert!(diff < 1e-5, "row {i}: alone vs in batch of {batch} differ by {diff}");
    }

    assert!(model.embed(&[]).unwrap().is_empty());
    let short = vec![0.0f32; 3];
    assert!(model.embed(&[&short]).is_err(), "a row of the wrong size must be refused");
}

#[test]
fn native_backend_conforms() {
    conformance(model("mobilenetv2-imagenet"), 32);
}

#[test]
fn torchscript_backend_conforms() {
    conformance(model("mobilenetv2-imagenet-torchscript"), 32);
}

#[test]
fn onnx_backend_conforms() {
    conformance(model("mobilenetv2-imagenet-onnx"), 32);
}

#[test]
fn tensorflow_backend_conforms() {
    conformance(model("facenet"), 8);
}

/// CHW rows mirrored left to right.
fn mirrored(row: &[f32], width: usize) -> Vec<f32> {
    row.chunks(width).flat_map(|line| line.iter().rev().copied()).collect()
}

#[test]
fn a_card_with_flip_embeds_a_crop_and_its_mirror_image_alike() {
    // The stock ImageNet weights under a card that asks for test-time flipping.
    let stock = repo().join("models/mobilenetv2-imagenet");
    let mut card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(stock.join("model.json")).unwrap()).unwrap();
    card["flip"] = true.into();
    card["weights"] = stock.join("model.safetensors").to_string_lossy().into_owned().into();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.json"), card.to_string()).unwrap();
    let flipped = load_model(dir.path(), LoadOptions::default()).unwrap();
    assert!(flipped.card().flip);
    conformance(flipped, 8);

    let (mut plain, mut flipped) =
        (model("mobilenetv2-imagenet"), load_model(dir.path(), LoadOptions::default()).unwrap());
    let width = plain.card().input.width as usize;
    let rows = inputs(plain.as_ref(), 2);
    let mirror = mirrored(&rows[1], width);
    let unflipped = plain.embed(&[&rows[1], &mirror]).unwrap();
    assert!(max_abs_diff(&unflipped[0], &unflipped[1]) > 1e-3, "the network alone tells a crop from its mirror");
    let both = flipped.embed(&[&rows[1], &mirror, &rows[0]]).unwrap();
    assert!(max_abs_diff(&both[0], &both[1]) < 1e-5, "flipped, a crop and its mirror image are one embedding");
    // The mean of the two views: nearer each than they are to each other.
    let (mean, view) = (cosine(&both[0], &unflipped[0]), cosine(&unflipped[0], &unflipped[1]));
    assert!(mean > view, "{mean} vs {view}");
}

/// The same weights through another backend give the same embeddings.
fn agree_with_native(other: &str, tolerance: f32) {
    let mut native = model("mobilenetv2-imagenet");
    let mut other_model = model(other);
    let rows = inputs(native.as_ref(), 4);
    let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
    let a = native.embed(&refs).unwrap();
    let b = other_model.embed(&refs).unwrap();
    for (x, y) in a.iter().zip(&b) {
        let diff = max_abs_diff(x, y);
        assert!(diff < tolerance, "native and {other} differ by {diff}");
    }
}

#[test]
fn torchscript_and_native_agree_on_the_same_weights() {
    agree_with_native("mobilenetv2-imagenet-torchscript", 1e-5);
}

#[test]
fn onnx_through_opencv_and_native_agree_on_the_same_weights() {
    // OpenCV's convolution kernels sum in another order than libtorch's.
    agree_with_native("mobilenetv2-imagenet-onnx", 1e-4);
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The largest face found by OpenCV's Haar cascade, with FaceNet's customary margin.
fn face_crop(path: &std::path::Path) -> opencv::core::Mat {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e} (run `make setup`)", path.display()));
    let image = decode(ImageInput::Encoded(&bytes), DEFAULT_MAX_PIXELS).unwrap();
    let cascade = "/usr/share/opencv4/haarcascades/haarcascade_frontalface_default.xml";
    let mut detector = objdetect::CascadeClassifier::new(cascade).unwrap();
    let mut faces = Vector::<Rect>::new();
    detector.detect_multi_scale(&image, &mut faces, 1.1, 5, 0, Size::new(40, 40), Size::default()).unwrap();
    let face = faces.iter().max_by_key(|r| r.area()).unwrap_or_else(|| panic!("no face in {}", path.display()));
    let margin = face.width / 5;
    let x = (face.x - margin).max(0);
    let y = (face.y - margin).max(0);
    let roi = Rect::new(
        x,
        y,
        (face.width + 2 * margin).min(image.cols() - x),
        (face.height + 2 * margin).min(image.rows() - y),
    );
    opencv::core::Mat::roi(&image, roi).unwrap().try_clone().unwrap()
}

#[test]
fn facenet_tells_obama_from_biden() {
    let mut facenet = model("facenet");
    let dir = repo().join(".cache/data/face_recognition/test_images");
    let names = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"];
    let card = facenet.card().clone();
    let rows: Vec<Vec<f32>> = names
        .iter()
        .map(|n| prepare(&face_crop(&dir.join(n)), card.input, &card.normalization).unwrap().data)
        .collect();
    let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
    let e = facenet.embed(&refs).unwrap();
    let biden = &e[3];
    let same: Vec<f32> = [(0, 1), (0, 2), (1, 2)].iter().map(|(i, j)| cosine(&e[*i], &e[*j])).collect();
    let other: Vec<f32> = (0..3).map(|i| cosine(&e[i], biden)).collect();
    let weakest_same = same.iter().copied().fold(f32::INFINITY, f32::min);
    let strongest_other = other.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    println!("obama-obama cosines {same:?}, obama-biden cosines {other:?}");
    assert!(weakest_same > strongest_other, "obama pairs {same:?} must all beat obama-biden {other:?}");
    // And the card's threshold separates them.
    assert!(weakest_same >= card.match_threshold && strongest_other < card.match_threshold);
}

#[test]
fn missing_and_corrupt_models_are_clear_errors() {
    let err = load_model(&repo().join("models/no-such-model"), LoadOptions::default()).err().unwrap();
    assert!(err.to_string().contains("no-such-model"), "{err}");

    let dir = std::env::temp_dir().join(format!("reid-corrupt-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let card = std::fs::read_to_string(repo().join("models/mobilenetv2-imagenet/model.json")).unwrap();
    std::fs::write(dir.join("model.json"), card).unwrap();
    std::fs::write(dir.join("model.safetensors"), b"not safetensors").unwrap();
    let err = load_model(&dir, LoadOptions::default()).err().unwrap();
    assert!(matches!(err, reid_model::ModelError::Weights { .. }), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
    let _ = imgcodecs::IMREAD_COLOR;
}
