//! `reid eval` on the labelled frames of vtest.avi (tests/data/vtest-gt): the shipped ground
//! truth parses, its region mask applies, and the default detector finds most labelled people
//! where HOG, the detector it replaced, finds few.

#![allow(clippy::unwrap_used)]

mod common;

use common::{ok, repo};
use serde_json::Value;

const VTEST: &str = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";

fn detect(detector: &str, last_frame: &str) -> Value {
    let gt = repo().join("tests/data/vtest-gt");
    let models = repo().join("models");
    let mut out = ok(&[
        "eval",
        "detect",
        "--json",
        "--detector",
        detector,
        "--model-dir",
        models.to_str().unwrap(),
        "--gt",
        gt.join("gt.txt").to_str().unwrap(),
        "--roi",
        gt.join("roi.png").to_str().unwrap(),
        "--labelled-frames-only",
        "--last-frame",
        last_frame,
        VTEST,
    ]);
    assert_eq!(out.len(), 1, "one JSON object");
    out.remove(0)
}

#[test]
fn the_default_detector_finds_most_labelled_people_and_hog_few() {
    assert!(std::path::Path::new(VTEST).is_file(), "{VTEST} missing: run `make setup`");
    // Frames 40-320: fifteen labelled frames, 79 boxes in the region (ignore regions left out).
    let ssd = &detect("ssd", "320")["detection"];
    assert_eq!(ssd["frames"], 15, "{ssd}");
    assert_eq!(ssd["gt"], 79, "{ssd}");
    let (precision, recall) = (ssd["precision"].as_f64().unwrap(), ssd["recall"].as_f64().unwrap());
    assert!(precision >= 0.8 && recall >= 0.65, "ssd: {ssd}");
    let hog = &detect("hog", "320")["detection"];
    assert!(hog["recall"].as_f64().unwrap() < recall / 2.0, "hog: {hog}, ssd: {ssd}");
}
