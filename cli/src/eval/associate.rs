//! `reid eval associate`: association alone. The ground truth's own people, cut into tracklets as
//! the two cameras of `reid eval mtmc` see them, are embedded by the model, observed into a fresh
//! identity service in the order they end ([`replay`]), and scored as `mtmc` scores. Detection
//! and tracking are perfect here, so what `mtmc` loses beyond these figures is the tracker's and
//! the detector's, and what these lose is the comparison's.
//!
//! A camera sees a labelled person when at least `--min-inside` of the box's width lies inside
//! its region. One camera's consecutive sightings of a person are one tracklet until the person
//! goes unlabelled for more than `--max-gap` frames (occluded, out of the region, an ignore
//! region) or the tracklet reaches `--max-tracklet-frames` (the tracker's `max_tracklet_frames`).
//! Its crops are up to `--per-tracklet` of its labelled boxes at least `--min-height` tall in the
//! camera's pixels, spread evenly over it, cut through the camera's view with the ingester's
//! padding; a tracklet without one is not delivered, as the ingester would not deliver it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;
use clap::Args;
use opencv::core::Mat;
use opencv::prelude::*;
use opencv::videoio;
use reid_eval::mtmc::{Tracklet, evaluate_mtmc};
use reid_eval::{Box2, Sequence};
use reid_identity::config::AssociationConfig;
use reid_identity::identities::TrackletCrop;
use reid_ingester::frame::{BBox, Frame};
use reid_ingester::view::View;
use serde_json::json;

use super::replay::{Delivery, Variant, centre_per_camera, replay};
use crate::playback::{EastCamera, Threshold};

#[derive(Debug, Args)]
pub struct AssociateArgs {
    /// MOTChallenge ground truth with identities.
    #[arg(long)]
    gt: PathBuf,
    /// The video the ground truth labels.
    video: PathBuf,
    /// Region of interest: people whose foot point falls outside are left out.
    #[arg(long)]
    roi: Option<PathBuf>,
    #[arg(long, default_value = "models")]
    model_dir: PathBuf,
    /// The model folder that embeds the crops (under --model-dir).
    #[arg(long, default_value = reid_embedder::DEFAULT_MODEL)]
    model: String,
    #[command(flatten)]
    east: EastCamera,
    /// Cosine threshold for a match (the model card's `match_threshold` when unset).
    #[arg(long)]
    threshold: Option<f32>,
    #[arg(long, default_value_t = crate::playback::DEFAULT_MIN_MARGIN)]
    min_margin: f32,
    /// The merge pass once after the last tracklet, as the demo's does (`off` for none).
    #[arg(long, default_value = "0.75", value_parser = |t: &str| crate::playback::merge_threshold(t).map(Threshold))]
    merge_threshold: Threshold,
    /// Also observe the same tracklets with these association settings (as `mtmc --replay`).
    #[arg(long, value_parser = Variant::parse)]
    replay: Vec<Variant>,
    /// Share of a box's width inside a camera's region for that camera to see the person.
    #[arg(long, default_value_t = 0.75)]
    min_inside: f32,
    /// Frames a person may go unlabelled before their tracklet on a camera ends.
    #[arg(long, default_value_t = 20)]
    max_gap: u64,
    /// A tracklet longer than this many frames is cut (the tracker's `max_tracklet_frames`).
    #[arg(long, default_value_t = 600)]
    max_tracklet_frames: u64,
    /// Crops per tracklet (the ingester's `crops.per_tracklet`).
    #[arg(long, default_value_t = 6)]
    per_tracklet: usize,
    /// Boxes shorter than this in the camera's pixels give no crop (the ingester's `crops.min_height`).
    #[arg(long, default_value_t = 48)]
    min_height: u32,
    /// Context added around each box, as a fraction of its size (the ingester's `crops.padding`).
    #[arg(long, default_value_t = 0.05)]
    padding: f32,
    /// Whose boxes the crops are cut on: the ground truth's (`labels`), or the detections of the
    /// ingester's default detector on the camera's view that match them best (`detector`; IoU at
    /// least 0.5, a labelled box without one gives no crop): tracking perfect, boxes as detected.
    #[arg(long, value_enum, default_value_t = Boxes::Labels)]
    boxes: Boxes,
    #[command(flatten)]
    report: super::Report,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Boxes {
    Labels,
    Detector,
}

/// One crop of a tracklet: its frame, its box in the camera's pixels, and the image cut on it.
struct Cut {
    frame: u64,
    bbox: BBox,
    image: Mat,
}

/// How labelled boxes become tracklets.
#[derive(Debug, Clone, Copy)]
struct Rules {
    min_inside: f32,
    max_gap: u64,
    max_frames: u64,
    per_tracklet: usize,
    min_height: f32,
}

/// One camera's run of sightings of one labelled person.
#[derive(Debug, Clone, PartialEq)]
struct Run {
    camera: usize,
    person: i64,
    /// Its labelled boxes, in the source frame's pixels.
    boxes: Vec<(u64, Box2)>,
    /// The frames whose boxes give its crops.
    crops: Vec<u64>,
}

fn bbox(b: &Box2) -> BBox {
    BBox::new(b.x as f32, b.y as f32, b.w as f32, b.h as f32)
}

/// The tracklets the cameras `views` would deliver of the people labelled in `gt` (frames of
/// `cols` x `rows`), in the order they start.
fn runs(gt: &Sequence, views: &[View], cols: i32, rows: i32, rules: Rules) -> Vec<Run> {
    let mut open: BTreeMap<(usize, i64), Run> = BTreeMap::new();
    let mut done = Vec::new();
    for (&frame, labelled) in &gt.frames {
        for (camera, view) in views.iter().enumerate() {
            for (person, b) in &labelled.boxes {
                if view.share_inside(bbox(b), cols, rows) < rules.min_inside {
                    continue;
                }
                let key = (camera, *person);
                let ends = open.get(&key).is_some_and(|r| {
                    let (first, last) = (r.boxes[0].0, r.boxes[r.boxes.len() - 1].0);
                    frame - last > rules.max_gap || frame - first >= rules.max_frames
                });
                if ends && let Some(run) = open.remove(&key) {
                    done.push(run);
                }
                open.entry(key)
                    .or_insert_with(|| Run { camera, person: *person, boxes: Vec::new(), crops: Vec::new() })
                    .boxes
                    .push((frame, *b));
            }
        }
    }
    done.extend(open.into_values());
    done.sort_by_key(|r| (r.boxes[0].0, r.camera, r.person));
    for run in &mut done {
        let view = &views[run.camera];
        let tall: Vec<u64> = run
            .boxes
            .iter()
            .filter(|(_, b)| view.from_source(bbox(b), cols, rows).h >= rules.min_height)
            .map(|(f, _)| *f)
            .collect();
        run.crops = spread(&tall, rules.per_tracklet);
    }
    done.retain(|r| !r.crops.is_empty());
    done
}

/// Up to `k` of `items`, evenly spread, first and last included.
fn spread(items: &[u64], k: usize) -> Vec<u64> {
    if items.len() <= k {
        return items.to_vec();
    }
    if k == 1 {
        return vec![items[items.len() / 2]];
    }
    (0..k).map(|i| items[(i * (items.len() - 1) + (k - 1) / 2) / (k - 1)]).collect()
}

/// Each run's crops, cut from `video` as its camera sees the frame, on the labelled box or on the
/// detection that matches it (`detector`); and the video's frame rate.
fn cut_crops(
    video: &std::path::Path,
    views: &[View],
    runs: &[Run],
    padding: f32,
    mut detector: Option<Box<dyn reid_ingester::detect::Detector>>,
) -> anyhow::Result<(Vec<Vec<Cut>>, f64)> {
    let mut capture = videoio::VideoCapture::from_file(video, videoio::CAP_ANY)?;
    anyhow::ensure!(capture.is_opened()?, "cannot open {}", video.display());
    let fps = capture.get(videoio::CAP_PROP_FPS)?;
    let fps = if fps > 0.0 { fps } else { 25.0 };
    // frame -> the (run, box) wanted from it.
    let mut wanted: BTreeMap<u64, Vec<(usize, Box2)>> = BTreeMap::new();
    for (i, run) in runs.iter().enumerate() {
        for (frame, b) in run.boxes.iter().filter(|(f, _)| run.crops.contains(f)) {
            wanted.entry(*frame).or_default().push((i, *b));
        }
    }
    let last = wanted.keys().next_back().copied().unwrap_or(0);
    let mut crops: Vec<Vec<Cut>> = runs.iter().map(|_| Vec::new()).collect();
    let (mut image, mut frame) = (Mat::default(), 0u64);
    while frame < last && capture.read(&mut image)? && !image.empty() {
        frame += 1;
        let Some(here) = wanted.get(&frame) else { continue };
        let (cols, rows) = (image.cols(), image.rows());
        for (camera, view) in views.iter().enumerate() {
            let boxes: Vec<&(usize, Box2)> = here.iter().filter(|(i, _)| runs[*i].camera == camera).collect();
            if boxes.is_empty() {
                continue;
            }
            let seen = Frame { image: image.try_clone()?, captured_at: SystemTime::UNIX_EPOCH, sequence: frame };
            let seen = view.apply(seen, u64::MAX).context("a camera's view")?.image;
            let detections = match detector.as_mut() {
                Some(d) => Some(d.detect(&seen)?.into_iter().filter(|d| !d.weak).map(|d| d.bbox).collect::<Vec<_>>()),
                None => None,
            };
            for &&(i, b) in &boxes {
                let labelled = view.from_source(bbox(&b), cols, rows);
                let cut_on = match &detections {
                    None => Some(labelled),
                    Some(found) => found
                        .iter()
                        .map(|d| (d, d.iou(&labelled)))
                        .filter(|(_, iou)| *iou >= 0.5)
                        .max_by(|a, b| a.1.total_cmp(&b.1))
                        .map(|(d, _)| *d),
                };
                let Some(cut_on) = cut_on else { continue };
                let rect = cut_on
                    .to_rect(padding, seen.cols(), seen.rows())
                    .with_context(|| format!("frame {frame}: a box outside its camera's view"))?;
                crops[i].push(Cut { frame, bbox: cut_on, image: Mat::roi(&seen, rect)?.try_clone()? });
            }
        }
    }
    anyhow::ensure!(frame >= last, "{} ends at frame {frame}, before the ground truth does", video.display());
    Ok((crops, fps))
}

pub async fn run(args: AssociateArgs) -> anyhow::Result<ExitCode> {
    let gt = super::ground_truth(&args.gt, args.roi.as_deref())?;
    let cameras = args.east.cameras(&args.video);
    let views: Vec<View> = cameras.iter().map(|(_, _, v)| v.clone()).collect();
    let (cols, rows) = super::frame_size(&args.video)?;
    let rules = Rules {
        min_inside: args.min_inside,
        max_gap: args.max_gap,
        max_frames: args.max_tracklet_frames.max(1),
        per_tracklet: args.per_tracklet.max(1),
        min_height: args.min_height as f32,
    };
    let runs = runs(&gt, &views, cols, rows, rules);
    anyhow::ensure!(!runs.is_empty(), "no labelled person gives a tracklet");
    let detector = match args.boxes {
        Boxes::Labels => None,
        Boxes::Detector => {
            let mut config = reid_ingester::IngesterConfig::default();
            config.detectors.models_under(&args.model_dir);
            Some(reid_ingester::detect::build(&config.default_detector, &config.detectors)?)
        }
    };
    let (crops, fps) = {
        let (video, views, cut_runs, padding) = (args.video.clone(), views.clone(), runs.clone(), args.padding);
        tokio::task::spawn_blocking(move || cut_crops(&video, &views, &cut_runs, padding, detector)).await??
    };
    // A tracklet left without a crop is not delivered.
    let (runs, crops): (Vec<Run>, Vec<Vec<Cut>>) = runs.into_iter().zip(crops).filter(|(_, c)| !c.is_empty()).unzip();
    anyhow::ensure!(!runs.is_empty(), "no tracklet has a crop");
    let (embedder, mut client) = super::local_embedder(&args.model_dir, &args.model).await?;
    let mut embeddings = Vec::with_capacity(runs.len());
    for run_crops in &crops {
        embeddings.push(client.embed(run_crops.iter().map(|c| &c.image)).await?);
    }
    embedder.stop().await?;
    let model = client.key();

    // The scene's clock starts now; each camera stamps its crops with its own clock.
    let start_ms = reid_identity::identities::now_ms();
    let at = |frame: u64| start_ms + ((frame - 1) as f64 * 1000.0 / fps).round() as i64;
    let deliveries: Vec<Delivery> = runs
        .iter()
        .zip(crops.iter().zip(&embeddings))
        .enumerate()
        .map(|(i, (run, (cuts, embedded)))| {
            let (id, _, view) = &cameras[run.camera];
            let crops = cuts
                .iter()
                .zip(embedded)
                .map(|(cut, e)| TrackletCrop {
                    image: None,
                    embedding: Some(e.clone()),
                    quality: 1.0,
                    bbox: Some([cut.bbox.x, cut.bbox.y, cut.bbox.w, cut.bbox.h]),
                    at_ms: Some(at(cut.frame) + view.time_offset_ms),
                })
                .collect();
            let last = run.boxes[run.boxes.len() - 1].0;
            Delivery { camera: id.clone(), track: format!("gt-{}-{i}", run.person), ended_ms: at(last), crops }
        })
        .collect();

    let threshold = crate::playback::match_threshold(args.threshold, &args.model_dir, &args.model)?;
    let association = AssociationConfig {
        threshold: Some(threshold),
        min_margin: args.min_margin,
        observe_min_margin: args.min_margin,
        merge_threshold: args.merge_threshold.0,
        merge_pass: args.merge_threshold.0.is_some(),
        ..AssociationConfig::default()
    };
    let scored = gt.between(args.report.first_frame, u64::MAX);
    let score = |given: &[String]| {
        let tracklets: Vec<Tracklet> = runs
            .iter()
            .zip(&deliveries)
            .zip(given)
            .map(|((run, d), identity)| Tracklet {
                camera: d.camera.clone(),
                track: d.track.clone(),
                identity: identity.clone(),
                boxes: run.boxes.iter().filter(|(f, _)| *f >= args.report.first_frame).copied().collect(),
            })
            .filter(|t| !t.boxes.is_empty())
            .collect();
        evaluate_mtmc(&scored, &tracklets, 0.5)
    };
    let mut results = Vec::new();
    let centred = args.replay.iter().any(|v| v.centre).then(|| centre_per_camera(&deliveries));
    for variant in std::iter::once(&Variant::default()).chain(&args.replay) {
        let input = centred.as_ref().filter(|_| variant.centre).unwrap_or(&deliveries);
        let given = replay(variant.apply(&association), &model, input).await?;
        let made = given.iter().collect::<std::collections::BTreeSet<_>>().len();
        results.push((score(&given), made, variant.to_string()));
    }

    if args.report.json {
        let run = json!({
            "model": client.model, "tracklets": runs.len(), "threshold": threshold,
            "merge_threshold": args.merge_threshold.0, "first_frame": args.report.first_frame,
            "boxes": if args.boxes == Boxes::Detector { "detector" } else { "labels" },
        });
        let results: Vec<_> = results
            .into_iter()
            .map(|(m, made, settings)| json!({ "settings": settings, "identities_made": made, "mtmc": m }))
            .collect();
        println!("{}", json!({ "run": run, "associated": results }));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} ground-truth tracklets on {}, crops cut on {}; association as the demo's{}",
        runs.len(),
        args.east.describe(),
        if args.boxes == Boxes::Detector { "the matching detections" } else { "the labelled boxes" },
        if args.report.first_frame > 1 {
            format!(", scored from frame {}", args.report.first_frame)
        } else {
            String::new()
        }
    );
    for (m, made, settings) in results {
        if !settings.is_empty() {
            println!("\nwith {settings}: {made} identities");
        }
        super::mtmc::print_figures(&m, made, 0, args.report.explain);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gt(rows: &[(u64, i64, f64)]) -> Sequence {
        let mut s = Sequence::default();
        for &(frame, id, x) in rows {
            s.push(frame, id, Box2::new(x, 10.0, 20.0, 60.0));
        }
        s
    }

    const RULES: Rules = Rules { min_inside: 0.75, max_gap: 20, max_frames: 600, per_tracklet: 2, min_height: 48.0 };

    #[test]
    fn a_person_is_one_tracklet_per_camera_until_a_gap() {
        // Two cameras over a 200-pixel-wide frame: the left 60% and the right 60%.
        let left = View { region: Some([0.0, 0.0, 0.6, 1.0]), ..View::default() };
        let right = View { region: Some([0.4, 0.0, 0.6, 1.0]), scale: 0.5, ..View::default() };
        // Person 1 walks from x 10 to x 150 (both cameras see x 80-100); person 2 stands at 10,
        // unlabelled between frames 30 and 60.
        let seq = gt(&[(10, 1, 10.0), (20, 1, 85.0), (30, 1, 150.0), (10, 2, 10.0), (20, 2, 10.0), (60, 2, 10.0)]);
        let runs = runs(&seq, &[left.clone(), right.clone()], 200, 100, RULES);
        let got: Vec<(usize, i64, Vec<u64>)> =
            runs.iter().map(|r| (r.camera, r.person, r.boxes.iter().map(|(f, _)| *f).collect())).collect();
        // The right camera sees person 1 at frames 20 and 30, but at scale 0.5 its boxes are 30
        // pixels tall: no crop, no tracklet.
        assert_eq!(got, vec![(0, 1, vec![10, 20]), (0, 2, vec![10, 20]), (0, 2, vec![60])]);
        let tall = Rules { min_height: 30.0, ..RULES };
        let runs = super::runs(&seq, &[left, right], 200, 100, tall);
        let on_right: Vec<Vec<u64>> = runs.iter().filter(|r| r.camera == 1).map(|r| r.crops.clone()).collect();
        assert_eq!(on_right, vec![vec![20, 30]]);
    }

    #[test]
    fn long_tracklets_are_cut_and_crops_spread() {
        let seq = gt(&(1..=10).map(|i| (i * 10, 1, 10.0)).collect::<Vec<_>>());
        let rules = Rules { max_frames: 50, per_tracklet: 3, ..RULES };
        let runs = runs(&seq, &[View::default()], 200, 100, rules);
        let frames: Vec<Vec<u64>> = runs.iter().map(|r| r.boxes.iter().map(|(f, _)| *f).collect()).collect();
        assert_eq!(frames, vec![vec![10, 20, 30, 40, 50], vec![60, 70, 80, 90, 100]]);
        assert_eq!(runs[0].crops, vec![10, 30, 50]);
        assert_eq!(spread(&[1, 2, 3, 4, 5, 6, 7], 4), vec![1, 3, 5, 7]);
        assert_eq!(spread(&[1, 2, 3], 4), vec![1, 2, 3]);
        assert_eq!(spread(&[1, 2, 3], 1), vec![2]);
    }
}
