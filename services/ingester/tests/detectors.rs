//! Detectors on real frames of `vtest.avi` (apt `opencv-doc`).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Instant;

use opencv::prelude::*;
use opencv::videoio;
use reid_ingester::detect::ssd::{SsdConfig, SsdDetector};
use reid_ingester::detect::{Detector, DetectorsConfig, HogConfig, build};

const VTEST: &str = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";

#[test]
fn motion_gated_hog_finds_most_of_what_full_hog_finds() {
    let mut full = build("hog", &DetectorsConfig::default()).unwrap();
    let gated_config =
        DetectorsConfig { hog: HogConfig { motion_gate: true, ..Default::default() }, ..Default::default() };
    let mut gated = build("hog", &gated_config).unwrap();
    let mut capture = videoio::VideoCapture::from_file(VTEST, videoio::CAP_ANY).unwrap();
    let mut frame = Mat::default();
    let (mut full_boxes, mut found, mut gated_boxes) = (0, 0, 0);
    let (mut full_time, mut gated_time) = (0.0, 0.0);
    for i in 0..80 {
        assert!(capture.read(&mut frame).unwrap(), "vtest.avi ended early");
        let t = Instant::now();
        let g = gated.detect(&frame).unwrap();
        // The background model needs its first frames: compare from frame 30 on.
        if i < 30 {
            continue;
        }
        gated_time += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let f = full.detect(&frame).unwrap();
        full_time += t.elapsed().as_secs_f64();
        full_boxes += f.len();
        gated_boxes += g.len();
        found += f.iter().filter(|d| g.iter().any(|e| e.bbox.iou(&d.bbox) >= 0.3)).count();
    }
    let recall = found as f64 / full_boxes as f64;
    println!(
        "full HOG {full_boxes} boxes in {full_time:.2} s; gated {gated_boxes} boxes, {found} of full's found ({recall:.2}); gated in {gated_time:.2} s"
    );
    assert!(full_boxes >= 100, "people are walking in vtest.avi: {full_boxes}");
    assert!(recall >= 0.7, "the gate keeps most people: {recall:.2}");
    // What it saves is measured by `reid bench ingest --config` (a benchmark, not a test).
}

/// The learned detector, loaded from the frozen graph set-up extracts, on frames of vtest.avi:
/// it finds people where HOG finds few, and its boxes have a person's shape.
#[test]
fn ssd_finds_the_people_of_vtest() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/ssdlite-person/frozen_inference_graph.pb");
    let config = DetectorsConfig { ssd: SsdConfig { model, ..Default::default() }, ..Default::default() };
    let mut ssd = build("ssd", &config).unwrap();
    let mut hog = build("hog", &DetectorsConfig::default()).unwrap();
    let mut capture = videoio::VideoCapture::from_file(VTEST, videoio::CAP_ANY).unwrap();
    let mut frame = Mat::default();
    let (mut ssd_boxes, mut hog_boxes, mut ssd_time) = (0usize, 0usize, 0.0);
    let mut frames = 0;
    for i in 0..200 {
        assert!(capture.read(&mut frame).unwrap(), "vtest.avi ended early");
        if i % 20 != 0 {
            continue;
        }
        frames += 1;
        let t = Instant::now();
        let found = ssd.detect(&frame).unwrap();
        ssd_time += t.elapsed().as_secs_f64();
        for d in &found {
            let b = d.bbox;
            assert!(b.x >= 0.0 && b.y >= 0.0 && b.x + b.w <= 768.5 && b.y + b.h <= 576.5, "{b:?} inside the frame");
            assert!(b.h > b.w, "a standing person is taller than wide: {b:?}");
            assert!(b.h < 300.0, "people in vtest.avi are under 300 px tall: {b:?}");
        }
        ssd_boxes += found.len();
        hog_boxes += hog.detect(&frame).unwrap().len();
    }
    println!(
        "{frames} frames: ssd {ssd_boxes} boxes ({:.0} ms/frame), hog {hog_boxes}",
        1000.0 * ssd_time / frames as f64
    );
    // Four to ten people walk in each of these frames; precision and recall against labelled
    // boxes are `reid eval detect`'s (docs/evaluation.md).
    assert!(ssd_boxes >= 4 * frames, "{ssd_boxes} boxes in {frames} frames");
    assert!(2 * ssd_boxes > 3 * hog_boxes, "ssd {ssd_boxes} vs hog {hog_boxes}");
}

/// Several cameras' frames in one forward pass find what each frame finds alone.
#[test]
fn ssd_on_a_batch_of_frames_finds_what_it_finds_on_each() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/ssdlite-person/frozen_inference_graph.pb");
    let mut ssd = SsdDetector::new(SsdConfig { model, ..Default::default() }).unwrap();
    let mut capture = videoio::VideoCapture::from_file(VTEST, videoio::CAP_ANY).unwrap();
    let mut frames = Vec::new();
    let mut frame = Mat::default();
    for i in 0..120 {
        assert!(capture.read(&mut frame).unwrap(), "vtest.avi ended early");
        if i % 40 == 0 {
            frames.push(frame.try_clone().unwrap());
        }
    }
    // A camera of another size in the same batch.
    let mut small = Mat::default();
    opencv::imgproc::resize(&frames[0], &mut small, opencv::core::Size::new(384, 288), 0.0, 0.0, 1).unwrap();
    frames.push(small);
    let alone: Vec<_> = frames.iter().map(|f| ssd.detect(f).unwrap()).collect();
    let together = ssd.detect_many(&frames).unwrap();
    assert_eq!(together.len(), frames.len());
    for (a, t) in alone.iter().zip(&together) {
        assert!(a.len() >= 2, "people in every frame: {a:?}");
        assert_eq!(a.len(), t.len(), "{a:?} vs {t:?}");
        for (x, y) in a.iter().zip(t) {
            assert!(x.bbox.iou(&y.bbox) > 0.98 && (x.score - y.score).abs() < 1e-3, "{x:?} vs {y:?}");
        }
    }
    assert_eq!(together[3].len(), together[0].len(), "the half-size copy of frame 0");
    assert!(ssd.detect_many(&[]).unwrap().is_empty());
}

/// The motion gate spares the network on a still scene and keeps its boxes; on vtest.avi, where
/// people always walk, it runs the network on every frame.
#[test]
fn motion_gated_ssd_runs_only_when_something_moves() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/ssdlite-person/frozen_inference_graph.pb");
    let config = SsdConfig { model, motion_gate: true, ..Default::default() };
    let mut plain = SsdDetector::new(SsdConfig { motion_gate: false, ..config.clone() }).unwrap();
    let mut still = SsdDetector::new(config.clone()).unwrap();
    let mut walking = SsdDetector::new(config).unwrap();
    let mut capture = videoio::VideoCapture::from_file(VTEST, videoio::CAP_ANY).unwrap();
    let mut frame = Mat::default();
    let mut first = Mat::default();
    for i in 0..60 {
        assert!(capture.read(&mut frame).unwrap(), "vtest.avi ended early");
        if i == 0 {
            first = frame.try_clone().unwrap();
        }
        walking.detect(&frame).unwrap();
    }
    assert!(walking.frames_skipped() <= 3, "people walk in every frame: {} skipped", walking.frames_skipped());
    let expected = plain.detect(&first).unwrap();
    for _ in 0..60 {
        let found = still.detect(&first).unwrap();
        assert_eq!(found.len(), expected.len());
    }
    // 10 warm-up frames, then one run every 25 frames: 48 of 60 skipped.
    assert_eq!(still.frames_skipped(), 48);
}
