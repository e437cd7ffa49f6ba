//! Detectors on real frames of `vtest.avi` (apt `opencv-doc`).

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use opencv::prelude::*;
use opencv::videoio;
use reid_ingester::detect::{DetectorsConfig, HogConfig, build};

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
