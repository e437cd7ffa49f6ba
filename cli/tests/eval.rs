//! `reid eval` on the labelled frames of vtest.avi (tests/data/vtest-gt): the shipped ground
//! truth parses, its region mask applies, and the default detector finds most labelled people
//! where HOG, the detector it replaced, finds few; the served model re-identifies the labelled
//! crops better than a colour histogram; the whole pipeline's identities are scored, and so is
//! association alone on tracklets cut from the ground truth.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{KEY, ok, reid, repo};
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
    // Frames 40-320: 29 labelled frames, 152 boxes in the region (ignore regions left out).
    let ssd = &detect("ssd", "320")["detection"];
    assert_eq!(ssd["frames"], 29, "{ssd}");
    assert_eq!(ssd["gt"], 152, "{ssd}");
    let (precision, recall) = (ssd["precision"].as_f64().unwrap(), ssd["recall"].as_f64().unwrap());
    assert!(precision >= 0.8 && recall >= 0.65, "ssd: {ssd}");
    let hog = &detect("hog", "320")["detection"];
    assert!(hog["recall"].as_f64().unwrap() < recall / 2.0, "hog: {hog}, ssd: {ssd}");
}

fn gt_args() -> Vec<String> {
    let gt = repo().join("tests/data/vtest-gt");
    let (truth, mask) = (gt.join("gt.txt"), gt.join("roi.png"));
    ["--gt", truth.to_str().unwrap(), "--roi", mask.to_str().unwrap()].map(String::from).to_vec()
}

/// `reid eval reid ARGS` on the ground truth, as one JSON object.
fn eval_reid(scorer: &[&str]) -> Value {
    let mut args = vec!["eval", "reid", "--json"];
    args.extend(scorer);
    let gt = gt_args();
    args.extend(gt.iter().map(String::as_str));
    args.push(VTEST);
    ok(&args).remove(0)
}

struct Embedder(Child);

impl Drop for Embedder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn embedder(addr: &str) -> Embedder {
    let child = Command::new(env!("CARGO_BIN_EXE_reid"))
        .args(["serve", "embedder", "--listen", addr, "--model-dir"])
        .arg(repo().join("models"))
        .env("REID_API_KEY", KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let embedder = Embedder(child);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !reid(&["health", "--addr", addr]).status.success() {
        assert!(Instant::now() < deadline, "the embedder at {addr} is not serving");
        std::thread::sleep(Duration::from_millis(200));
    }
    embedder
}

#[test]
fn the_served_model_re_identifies_labelled_crops_better_than_a_colour_histogram() {
    assert!(std::path::Path::new(VTEST).is_file(), "{VTEST} missing: run `make setup`");
    let histogram = eval_reid(&["--histogram"]);
    // Every labelled box in the region is at least 48 px tall: 329 crops of 12 people.
    assert_eq!((histogram["run"]["crops"].as_u64(), histogram["run"]["people"].as_u64()), (Some(329), Some(12)));
    let rank1 = |v: &Value, setting: &str| v[setting]["rank1"].as_f64().unwrap();
    let map = |v: &Value, setting: &str| v[setting]["map"].as_f64().unwrap();
    // A colour histogram suffers most from a camera with another white balance.
    assert!(rank1(&histogram, "second_camera") < rank1(&histogram, "cross_time"), "{histogram}");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let _embedder = embedder(&addr);
    let model = eval_reid(&["--addr", &addr]);
    assert_eq!(model["run"]["scorer"]["model"]["id"], "person-vtest", "{model}");
    for setting in ["cross_time", "second_camera"] {
        assert_eq!(model[setting]["queries"], histogram[setting]["queries"], "the same protocol");
        assert!(rank1(&model, setting) >= rank1(&histogram, setting) + 0.15, "{setting}: {model} vs {histogram}");
        assert!(map(&model, setting) > map(&histogram, setting), "{setting}: {model} vs {histogram}");
    }
}

#[test]
fn the_whole_pipeline_is_scored_on_two_cameras_cut_from_the_video() {
    assert!(std::path::Path::new(VTEST).is_file(), "{VTEST} missing: run `make setup`");
    let data = tempfile::tempdir().unwrap();
    let models = repo().join("models");
    let mut args = vec!["eval", "mtmc", "--json", "--regroup", "0.6,2", "--data", data.path().to_str().unwrap()];
    args.extend(["--model-dir", models.to_str().unwrap()]);
    let gt = gt_args();
    args.extend(gt.iter().map(String::as_str));
    args.push(VTEST);
    let out = reid(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let m = &json["mtmc"];
    assert_eq!(m["cameras"], 2, "{m}");
    // Tracklets follow one person (boxes mapped back through each camera's view onto the labels).
    assert!(m["matched_tracklets"].as_u64().unwrap() >= 40, "{m}");
    assert!(m["purity"].as_f64().unwrap() >= 0.9, "{m}");
    assert!(m["people_covered"].as_u64().unwrap() >= 8, "{m}");
    let (all, cross) = (&m["all"], &m["cross_camera"]);
    assert!(cross["pairs"].as_u64().unwrap() > 0 && cross["pairs"].as_u64() < all["pairs"].as_u64(), "{m}");
    assert!(all["both"].as_u64() <= all["same_identity"].as_u64(), "{m}");
    assert!(cross["precision"].as_f64().unwrap() > 0.0, "some people are followed across cameras: {m}");
    // The same tracklets re-grouped at once: scored on the same boxes; at a similarity no pair
    // reaches, every tracklet is its own group and no pair is predicted the same.
    let regrouped = json["regrouped"].as_array().unwrap();
    assert_eq!(regrouped.len(), 2);
    for r in regrouped {
        assert_eq!(r["mtmc"]["matched_boxes"], m["matched_boxes"], "{r}");
    }
    assert!(regrouped[0]["groups"].as_u64().unwrap() < m["tracklets"].as_u64().unwrap(), "{}", regrouped[0]);
    assert_eq!(regrouped[1]["groups"], m["tracklets"]);
    assert_eq!(regrouped[1]["mtmc"]["all"]["same_identity"], 0);
}

#[test]
fn association_alone_is_scored_on_tracklets_cut_from_the_ground_truth() {
    assert!(std::path::Path::new(VTEST).is_file(), "{VTEST} missing: run `make setup`");
    let models = repo().join("models");
    let mut args = vec!["eval", "associate", "--json", "--model-dir", models.to_str().unwrap()];
    args.extend(["--replay", "threshold=0.999,merge=off"]);
    let gt = gt_args();
    args.extend(gt.iter().map(String::as_str));
    args.push(VTEST);
    let json = ok(&args).pop().unwrap();
    let associated = json["associated"].as_array().unwrap();
    assert_eq!(associated.len(), 2, "the demo's settings and the one replayed: {json}");
    let m = &associated[0]["mtmc"];
    // Every labelled person is cut into tracklets on both cameras, each of one person.
    assert_eq!((&m["cameras"], &m["people_covered"], &m["people"]), (&2.into(), &12.into(), &12.into()), "{m}");
    assert_eq!(m["matched_tracklets"], json["run"]["tracklets"], "{m}");
    assert_eq!(m["purity"], 1.0, "{m}");
    // With detection and tracking perfect, the shipped model's association is mostly right
    // (measured 0.894 / 0.863 with six crops a tracklet and those that disagree left out;
    // docs/evaluation.md).
    let all = &m["all"];
    assert!(all["precision"].as_f64().unwrap() >= 0.8 && all["recall"].as_f64().unwrap() >= 0.75, "{m}");
    // At a similarity no two tracklets reach, with no merge pass, nothing is put together.
    let apart = &associated[1];
    assert_eq!(apart["settings"], "threshold=0.999,merge=off");
    assert_eq!(apart["identities_made"], json["run"]["tracklets"], "{apart}");
    assert_eq!(apart["mtmc"]["all"]["same_identity"], 0, "{apart}");
}
