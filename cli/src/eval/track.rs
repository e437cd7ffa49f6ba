//! `reid eval detect|track`: the ingester's detector and tracker scored against MOTChallenge
//! ground truth.
//!
//! The video is read frame by frame (frames numbered from 1, as MOTChallenge numbers them); each
//! frame goes through the detector the ingester would run and, for `track`, the ingester's
//! tracker. `--pred` scores an existing result file instead (another tracker's, or one written
//! earlier with `--write`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::Args;
use opencv::core::Mat;
use opencv::prelude::*;
use opencv::videoio;
use reid_eval::measures::Evaluation;
use reid_eval::{Box2, Sequence, evaluate_detection, evaluate_tracking};
use reid_ingester::IngesterConfig;
use reid_ingester::appearance::Appearance;
use reid_ingester::track::{Observed, Tracker};

use super::{read_sequence, roi};

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// MOTChallenge ground truth (`frame,id,left,top,width,height,conf,...`; `conf = 0` rows are
    /// regions to ignore).
    #[arg(long)]
    gt: PathBuf,
    /// The video the ground truth labels.
    #[arg(required_unless_present = "pred")]
    video: Option<PathBuf>,
    /// Score this MOTChallenge result file instead of running the detector and tracker.
    #[arg(long, conflicts_with = "video")]
    pred: Option<PathBuf>,
    /// The ingester's detector to run.
    #[arg(long, default_value = "ssd")]
    detector: String,
    /// TOML with any `IngesterConfig` field (`[detectors.*]`, `[tracker]`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the stock detector models are (`ssdlite-person`, `mtcnn`).
    #[arg(long, default_value = "models")]
    model_dir: PathBuf,
    /// Region of interest: an image the size of the video, non-zero where people count. Boxes
    /// whose foot point (bottom centre) falls outside are dropped from both sides.
    #[arg(long)]
    roi: Option<PathBuf>,
    /// IoU at which a prediction matches a ground-truth box.
    #[arg(long, default_value_t = 0.5)]
    iou: f64,
    /// Score only the frames the ground truth has rows for (ground truth labelled every Nth
    /// frame); the detector and tracker still see every frame.
    #[arg(long)]
    labelled_frames_only: bool,
    /// Stop after this frame.
    #[arg(long)]
    last_frame: Option<u64>,
    /// `track`: run the detector on every Nth frame only (1, 1+N, ...) and report the tracker's
    /// predicted boxes between, to see what detecting less often costs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    detect_every: u64,
    /// Write the predictions as a MOTChallenge file.
    #[arg(long)]
    write: Option<PathBuf>,
    /// Print the figures as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn evaluate(track: bool, args: &EvalArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        track || args.detect_every == 1,
        "--detect-every needs `reid eval track` (the tracker predicts between)"
    );
    let mut gt = read_sequence(&args.gt)?;
    anyhow::ensure!(!gt.frames.is_empty(), "{} has no rows", args.gt.display());
    let started = Instant::now();
    let (mut pred, frames_run) = match (&args.pred, &args.video) {
        (Some(path), _) => (read_sequence(path)?, 0),
        (None, Some(video)) => predict(track, args, video)?,
        (None, None) => anyhow::bail!("give a video or --pred"),
    };
    let seconds = started.elapsed().as_secs_f64();
    if let Some(path) = &args.write {
        std::fs::write(path, pred.to_mot()).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(last) = args.last_frame {
        gt = gt.between(1, last);
        pred = pred.between(1, last);
    }
    if args.labelled_frames_only {
        pred.frames.retain(|f, _| gt.frames.contains_key(f));
    }
    if let Some(mask) = &args.roi {
        let inside = roi(mask)?;
        gt.retain_inside(&inside);
        pred.retain_inside(&inside);
    }
    let e = Evaluation { iou: args.iou };
    let run = serde_json::json!({
        "detector": if args.pred.is_some() { serde_json::Value::Null } else { args.detector.clone().into() },
        "frames_run": frames_run,
        "seconds": seconds,
        "iou": args.iou,
    });
    if track {
        let t = evaluate_tracking(&gt, &pred, e);
        if args.json {
            println!("{}", serde_json::json!({ "run": run, "tracking": t }));
        } else {
            println!(
                "{} frames, {} ground-truth boxes of {} people, {} predicted boxes of {} tracks",
                t.frames, t.gt, t.gt_ids, t.predictions, t.predicted_ids
            );
            println!(
                "MOTA {:.1}  MOTP {:.3}  IDF1 {:.1}  IDP {:.1}  IDR {:.1}",
                100.0 * t.mota,
                t.motp,
                100.0 * t.idf1,
                100.0 * t.idp,
                100.0 * t.idr
            );
            println!(
                "precision {:.1}  recall {:.1}  FP {}  FN {}  ID switches {}  fragmentations {}  MT {} PT {} ML {}",
                100.0 * t.precision,
                100.0 * t.recall,
                t.false_positives,
                t.misses,
                t.id_switches,
                t.fragmentations,
                t.mostly_tracked,
                t.partly_tracked,
                t.mostly_lost
            );
        }
    } else {
        let d = evaluate_detection(&gt, &pred, e);
        if args.json {
            println!("{}", serde_json::json!({ "run": run, "detection": d }));
        } else {
            println!("{} frames, {} ground-truth boxes, {} detections", d.frames, d.gt, d.detections);
            println!(
                "precision {:.1}  recall {:.1}  F1 {:.1}  at IoU {}  (matches {}, FP {}, FN {}, mean IoU {:.3})",
                100.0 * d.precision,
                100.0 * d.recall,
                100.0 * d.f1,
                args.iou,
                d.matches,
                d.false_positives,
                d.misses,
                d.mean_iou
            );
        }
    }
    if frames_run > 0 && !args.json {
        println!("{frames_run} frames through {} in {seconds:.1} s", args.detector);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the detector (and the tracker) over the video: the predictions, and frames read.
fn predict(track: bool, args: &EvalArgs, video: &Path) -> anyhow::Result<(Sequence, u64)> {
    let mut config: IngesterConfig = crate::settings::read_toml(args.config.as_deref())?;
    config.detectors.models_under(&args.model_dir);
    let mut detector = reid_ingester::detect::build(&args.detector, &config.detectors)?;
    let mut tracker = Tracker::new(config.tracker.clone(), config.crops.clone(), "eval");
    let mut capture = videoio::VideoCapture::from_file(video, videoio::CAP_ANY)?;
    anyhow::ensure!(capture.is_opened()?, "cannot open {}", video.display());
    let last = args.last_frame.unwrap_or(u64::MAX);
    let mut out = Sequence::default();
    let mut image = Mat::default();
    let mut frame = 0u64;
    while frame < last && capture.read(&mut image)? && !image.empty() {
        frame += 1;
        if track && !(frame - 1).is_multiple_of(args.detect_every) {
            for (id, b) in tracker.predicted_boxes(frame) {
                out.push(frame, id as i64, Box2::new(b.x.into(), b.y.into(), b.w.into(), b.h.into()));
            }
            continue;
        }
        let detections = detector.detect(&image)?;
        if track {
            let observed = detections
                .into_iter()
                .map(|detection| {
                    let appearance =
                        config.tracker.uses_appearance().then(|| Appearance::of_box(&image, &detection.bbox)).flatten();
                    Observed { detection, crop: None, appearance, external_id: None }
                })
                .collect();
            // The video's own clock, as the ingester's file source gives it: the tracker holds
            // lost tracks for seconds, which must not depend on how fast this machine detects.
            let ms = capture.get(videoio::CAP_PROP_POS_MSEC).unwrap_or(0.0).max(0.0);
            tracker.update(frame, SystemTime::UNIX_EPOCH + Duration::from_secs_f64(ms / 1000.0), observed);
            for (id, b) in tracker.boxes(frame) {
                out.push(frame, id as i64, Box2::new(b.x.into(), b.y.into(), b.w.into(), b.h.into()));
            }
        } else {
            // Weak detections are only for the tracker: not what the detector found.
            for (i, d) in detections.iter().filter(|d| !d.weak).enumerate() {
                let b = d.bbox;
                out.push(frame, i as i64 + 1, Box2::new(b.x.into(), b.y.into(), b.w.into(), b.h.into()));
            }
        }
    }
    anyhow::ensure!(frame > 0, "{} has no frames", video.display());
    Ok((out, frame))
}
