//! `reid eval`: the pipeline scored against MOTChallenge ground truth, with the measures of
//! [`reid_eval`] (docs/evaluation.md).
//!
//! - `detect`, `track`: the ingester's detector and tracker over a video;
//! - `reid`: the ground truth's own crops embedded by a running embedder, as retrieval;
//! - `mtmc`: the whole pipeline on cameras cut from one video, its identities scored;
//! - `replay`: a run's delivered tracklets observed again under other association settings;
//! - `associate`: association alone, on tracklets cut from the ground truth.
//!
//! Videos are read frame by frame; frames are numbered from 1, as MOTChallenge numbers them.

mod associate;
mod mtmc;
mod reid;
mod replay;
mod track;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use opencv::prelude::*;
use opencv::{imgcodecs, videoio};
use reid_eval::Sequence;

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Detection precision, recall and F1 at an IoU (ids ignored).
    Detect(track::EvalArgs),
    /// Tracking: MOTA, MOTP, IDF1, ID switches, fragmentation, mostly tracked and lost.
    Track(track::EvalArgs),
    /// Re-identification of the ground truth's crops by an embedder: Rank-1, mAP, mINP, across
    /// time and against a gallery seen as by a second camera.
    Reid(reid::ReidArgs),
    /// The whole pipeline on two cameras cut from the video: tracklet purity, people covered,
    /// identities made, pairwise precision and recall of "same person".
    Mtmc(mtmc::MtmcArgs),
    /// Association alone: the ground truth's people cut into tracklets as the two cameras of
    /// `mtmc` see them (perfect detection and tracking), embedded, associated and scored as
    /// `mtmc` scores.
    Associate(associate::AssociateArgs),
}

pub async fn run(cmd: EvalCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        EvalCommand::Detect(args) => tokio::task::spawn_blocking(move || track::evaluate(false, &args)).await?,
        EvalCommand::Track(args) => tokio::task::spawn_blocking(move || track::evaluate(true, &args)).await?,
        EvalCommand::Reid(args) => reid::run(args).await,
        EvalCommand::Mtmc(args) => mtmc::run(args).await,
        EvalCommand::Associate(args) => associate::run(args).await,
    }
}

/// How `mtmc` and `associate` report their identities.
#[derive(Debug, Args)]
struct Report {
    /// Score only what was seen from this frame on (e.g. the model's held-out last part of the
    /// video); tracklets are matched to identities over the whole video either way.
    #[arg(long, default_value_t = 1)]
    first_frame: u64,
    /// Print the figures as one JSON object.
    #[arg(long)]
    json: bool,
    /// Also print what each identity holds: its tracklets with their ground-truth person, camera,
    /// frames and purity (identities of two people are where precision goes).
    #[arg(long)]
    explain: bool,
}

fn read_sequence(path: &Path) -> anyhow::Result<Sequence> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Sequence::parse(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The foot-point test of a region-of-interest mask.
fn roi(path: &Path) -> anyhow::Result<impl Fn(f64, f64) -> bool> {
    let mask = imgcodecs::imread(path, imgcodecs::IMREAD_GRAYSCALE)?;
    anyhow::ensure!(!mask.empty(), "{} is not an image", path.display());
    Ok(move |x: f64, y: f64| {
        let (c, r) = (x.floor() as i32, y.floor().min(f64::from(mask.rows() - 1)) as i32);
        c >= 0 && r >= 0 && c < mask.cols() && r < mask.rows() && mask.at_2d::<u8>(r, c).is_ok_and(|v| *v > 0)
    })
}

/// The ground truth in `path`, without the people whose foot point lies outside `roi`.
fn ground_truth(path: &Path, roi_mask: Option<&Path>) -> anyhow::Result<Sequence> {
    let mut gt = read_sequence(path)?;
    anyhow::ensure!(!gt.frames.is_empty(), "{} has no rows", path.display());
    if let Some(mask) = roi_mask {
        gt.retain_inside(roi(mask)?);
    }
    Ok(gt)
}

/// The width and height of `video`'s frames.
fn frame_size(video: &Path) -> anyhow::Result<(i32, i32)> {
    let capture = videoio::VideoCapture::from_file(video, videoio::CAP_ANY)?;
    anyhow::ensure!(capture.is_opened()?, "cannot open {}", video.display());
    let (w, h) = (capture.get(videoio::CAP_PROP_FRAME_WIDTH)?, capture.get(videoio::CAP_PROP_FRAME_HEIGHT)?);
    anyhow::ensure!(w >= 1.0 && h >= 1.0, "{} reports no frame size", video.display());
    Ok((w as i32, h as i32))
}

/// An embedder serving `model` from `model_dir` in this process, and a client of it.
async fn local_embedder(
    model_dir: &Path,
    model: &str,
) -> anyhow::Result<(crate::serve::InProcessEmbedder, reid::Embedder)> {
    let embedder = crate::serve::InProcessEmbedder::start(reid_embedder::EmbedderConfig {
        model_dir: model_dir.to_path_buf(),
        model: model.to_owned(),
        watch_interval: std::time::Duration::ZERO,
        ..Default::default()
    })
    .await?;
    let client = reid::Embedder::connect(&embedder.addr).await?;
    Ok((embedder, client))
}
