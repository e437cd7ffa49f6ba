//! `reid eval reid`: the ground truth's own crops, embedded by a running embedder (or a colour
//! histogram, the baseline a model has to beat), scored as retrieval with [`reid_eval::retrieval`].
//!
//! Every labelled box becomes a crop, cut as the ingester cuts them (its padding; boxes shorter
//! than the ingester keeps are left out). Two galleries:
//!
//! - **cross-time**: every crop queries all the others, except its own person within
//!   `--exclude-within` frames (found by appearance that has not changed yet, not re-identified);
//! - **second camera**: the same queries against the gallery cut from the frames as another
//!   camera would see them (resized, re-coloured, brighter or darker; an ingester `View`), with
//!   the same exclusion: the person has to be found across the change of camera and of time.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;
use clap::Args;
use opencv::core::{Mat, Vector};
use opencv::prelude::*;
use opencv::{imgproc, videoio};
use reid_cluster::{Rerank, rerank};
use reid_eval::retrieval::{Retrieval, cosine_distances, evaluate_retrieval, nearby_frames};
use reid_ingester::frame::{BBox, Frame, encode_jpeg};
use reid_ingester::view::View;
use reid_proto::v1 as pb;
use reid_proto::v1::embedder_service_client::EmbedderServiceClient;
use serde_json::json;

use crate::client::connect;

#[derive(Debug, Args)]
pub struct ReidArgs {
    /// MOTChallenge ground truth with identities.
    #[arg(long)]
    gt: PathBuf,
    /// The video the ground truth labels.
    video: PathBuf,
    /// The embedder to score (host:port or URL).
    #[arg(long, required_unless_present = "histogram")]
    addr: Option<String>,
    /// Score a colour histogram instead of an embedder (HSV hue-saturation histograms of three
    /// horizontal stripes): the baseline a learned model has to beat.
    #[arg(long, conflicts_with = "addr")]
    histogram: bool,
    /// Region of interest: people whose foot point falls outside are left out.
    #[arg(long)]
    roi: Option<PathBuf>,
    /// Leave out of a query's gallery its own person within this many frames.
    #[arg(long, default_value_t = 100)]
    exclude_within: u64,
    /// Boxes shorter than this (pixels) are left out, as the ingester keeps no smaller crop.
    #[arg(long, default_value_t = 48)]
    min_height: u32,
    /// Context added around each box, as a fraction of its size (the ingester's `crops.padding`).
    #[arg(long, default_value_t = 0.05)]
    padding: f32,
    /// The second camera's resize factor.
    #[arg(long, default_value_t = 0.5)]
    camera_scale: f32,
    /// The second camera's colour gains, B,G,R.
    #[arg(long, default_value = "1.25,1,0.8", value_parser = crate::ingester::numbers::<3>)]
    camera_gains: [f32; 3],
    /// Added to the second camera's pixels after the gains.
    #[arg(long, default_value_t = -12.0, allow_negative_numbers = true)]
    camera_brightness: f32,
    /// Only ground truth from this frame on (e.g. a held-out last part of the video).
    #[arg(long, default_value_t = 1)]
    first_frame: u64,
    /// Only ground truth up to this frame.
    #[arg(long)]
    last_frame: Option<u64>,
    /// k-reciprocal re-ranking of the distances (k1 20, k2 6, lambda 0.3), as torchreid and
    /// FastReID offer at query time; it sees the whole gallery, as a deployment's holds every crop.
    #[arg(long)]
    rerank: bool,
    /// Print the figures as one JSON object.
    #[arg(long)]
    json: bool,
}

/// One labelled box, cut as the query sees it and as the second camera does.
struct Crop {
    person: i64,
    frame: u64,
    query: Mat,
    other_camera: Mat,
}

pub async fn run(args: ReidArgs) -> anyhow::Result<ExitCode> {
    let camera = View {
        scale: args.camera_scale,
        gains: args.camera_gains,
        brightness: args.camera_brightness,
        ..View::default()
    };
    camera.validate().map_err(|e| anyhow::anyhow!("the second camera: {e}"))?;
    let crops = {
        let (gt, video, first, last) = (args.gt.clone(), args.video.clone(), args.first_frame, args.last_frame);
        let (roi, cut) = (args.roi.clone(), Cut { padding: args.padding, min_height: args.min_height, camera });
        tokio::task::spawn_blocking(move || {
            let gt = super::ground_truth(&gt, roi.as_deref())?.between(first, last.unwrap_or(u64::MAX));
            cut.crops(&gt, &video)
        })
        .await??
    };
    anyhow::ensure!(crops.len() >= 2, "fewer than two labelled boxes to score");
    let (scorer, queries, gallery) = match &args.addr {
        Some(addr) => {
            let mut embedder = Embedder::connect(addr).await?;
            let queries = embedder.embed(crops.iter().map(|c| &c.query)).await?;
            let gallery = embedder.embed(crops.iter().map(|c| &c.other_camera)).await?;
            (json!({ "embedder": addr, "model": embedder.model }), queries, gallery)
        }
        None => {
            let queries = crops.iter().map(|c| histogram(&c.query)).collect::<opencv::Result<Vec<_>>>()?;
            let gallery = crops.iter().map(|c| histogram(&c.other_camera)).collect::<opencv::Result<Vec<_>>>()?;
            (json!({ "histogram": "HSV 16x8, 3 stripes" }), queries, gallery)
        }
    };
    let items: Vec<(i64, u64)> = crops.iter().map(|c| (c.person, c.frame)).collect();
    let ids: Vec<i64> = items.iter().map(|(p, _)| *p).collect();
    let junk = nearby_frames(&items, &items, args.exclude_within);
    let (cross, second) = if args.rerank {
        let n = queries.len();
        let both: Vec<Vec<f32>> = queries.iter().chain(&gallery).cloned().collect();
        let settings = Rerank::default();
        (
            rerank(&cosine_distances(&queries, &queries), 0..n, 0..n, settings),
            rerank(&cosine_distances(&both, &both), 0..n, n..2 * n, settings),
        )
    } else {
        (cosine_distances(&queries, &queries), cosine_distances(&queries, &gallery))
    };
    let cross_time = evaluate_retrieval(&cross, &ids, &ids, &junk);
    let second_camera = evaluate_retrieval(&second, &ids, &ids, &junk);
    let mut people = ids.clone();
    people.sort_unstable();
    people.dedup();
    if args.json {
        let run = json!({
            "crops": crops.len(), "people": people.len(), "exclude_within": args.exclude_within, "rerank": args.rerank,
            "scorer": scorer,
            "camera": { "scale": args.camera_scale, "gains": args.camera_gains, "brightness": args.camera_brightness },
        });
        println!("{}", json!({ "run": run, "cross_time": cross_time, "second_camera": second_camera }));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} crops of {} people; a query's own person within {} frames left out; scored: {scorer}{}",
        crops.len(),
        people.len(),
        args.exclude_within,
        if args.rerank { ", re-ranked" } else { "" }
    );
    print_line("cross-time", &cross_time);
    print_line("second camera", &second_camera);
    Ok(ExitCode::SUCCESS)
}

fn print_line(name: &str, r: &Retrieval) {
    println!(
        "{name:<14} Rank-1 {:.1}  Rank-5 {:.1}  mAP {:.1}  mINP {:.1}  ({} queries, {} without a match left)",
        100.0 * r.rank1,
        100.0 * r.rank5,
        100.0 * r.map,
        100.0 * r.minp,
        r.queries,
        r.skipped
    );
}

/// How crops are cut.
struct Cut {
    padding: f32,
    min_height: u32,
    camera: View,
}

impl Cut {
    /// Every scored ground-truth box of `gt` at least `min_height` tall, cut from `video`.
    fn crops(&self, gt: &reid_eval::Sequence, video: &std::path::Path) -> anyhow::Result<Vec<Crop>> {
        let mut capture = videoio::VideoCapture::from_file(video, videoio::CAP_ANY)?;
        anyhow::ensure!(capture.is_opened()?, "cannot open {}", video.display());
        let last = gt.frames.keys().next_back().copied().unwrap_or(0);
        let (mut image, mut frame, mut crops) = (Mat::default(), 0u64, Vec::new());
        while frame < last && capture.read(&mut image)? && !image.empty() {
            frame += 1;
            let Some(labelled) = gt.frames.get(&frame) else { continue };
            let seen = Frame { image: image.try_clone()?, captured_at: SystemTime::UNIX_EPOCH, sequence: frame };
            let other = self.camera.apply(seen, u64::MAX).context("the second camera's view")?.image;
            let s = self.camera.scale;
            for (person, b) in &labelled.boxes {
                let b = BBox::new(b.x as f32, b.y as f32, b.w as f32, b.h as f32);
                if b.h < self.min_height as f32 {
                    continue;
                }
                let scaled = BBox::new(b.x * s, b.y * s, b.w * s, b.h * s);
                let (Some(query), Some(other_camera)) = (self.cut(&image, b)?, self.cut(&other, scaled)?) else {
                    continue;
                };
                crops.push(Crop { person: *person, frame, query, other_camera });
            }
        }
        Ok(crops)
    }

    fn cut(&self, image: &Mat, b: BBox) -> opencv::Result<Option<Mat>> {
        match b.to_rect(self.padding, image.cols(), image.rows()) {
            Some(rect) => Ok(Some(Mat::roi(image, rect)?.try_clone()?)),
            None => Ok(None),
        }
    }
}

/// A colour histogram embedding: hue x saturation (16 x 8 bins) of the top, middle and bottom
/// third of the crop (head and shoulders, torso, legs), each normalised to unit length.
fn histogram(crop: &Mat) -> opencv::Result<Vec<f32>> {
    let mut hsv = Mat::default();
    imgproc::cvt_color_def(crop, &mut hsv, imgproc::COLOR_BGR2HSV)?;
    let rows = hsv.rows();
    let mut out = Vec::with_capacity(3 * 128);
    for stripe in 0..3 {
        let (top, bottom) = (rows * stripe / 3, (rows * (stripe + 1) / 3).max(rows * stripe / 3 + 1));
        let part = Mat::roi(&hsv, opencv::core::Rect::new(0, top, hsv.cols(), (bottom - top).min(rows - top)))?;
        let mut hist = Mat::default();
        imgproc::calc_hist(
            &Vector::<Mat>::from_iter([part.try_clone()?]),
            &Vector::from_slice(&[0, 1]),
            &opencv::core::no_array(),
            &mut hist,
            &Vector::from_slice(&[16, 8]),
            &Vector::from_slice(&[0.0, 180.0, 0.0, 256.0]),
            false,
        )?;
        let values: Vec<f32> = hist.data_typed::<f32>()?.to_vec();
        let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        out.extend(values.iter().map(|v| v / norm));
    }
    Ok(out)
}

/// A running embedder.
pub(super) struct Embedder {
    client: EmbedderServiceClient<reid_server::Channel>,
    pub(super) model: serde_json::Value,
    r#ref: pb::ModelRef,
}

impl Embedder {
    pub(super) async fn connect(addr: &str) -> anyhow::Result<Self> {
        let mut client = EmbedderServiceClient::new(connect(addr).await?).max_decoding_message_size(256 << 20);
        let info = client
            .get_model(pb::GetModelRequest {})
            .await
            .map_err(|s| anyhow::anyhow!("the embedder at {addr}: {:?}: {}", s.code(), s.message()))?
            .into_inner()
            .model
            .unwrap_or_default();
        let r = info.r#ref.unwrap_or_default();
        let model = json!({ "id": r.id, "version": r.version, "dimension": r.dimension });
        Ok(Self { client, model, r#ref: r })
    }

    /// The model it serves, as the identity service keys its gallery.
    pub(super) fn key(&self) -> reid_identity::model::ModelKey {
        reid_identity::model::ModelKey::from(&self.r#ref)
    }

    /// The crops' embeddings, in order.
    pub(super) async fn embed<'a>(&mut self, crops: impl Iterator<Item = &'a Mat>) -> anyhow::Result<Vec<Vec<f32>>> {
        let encoded = crops.map(|m| encode_jpeg(m, 95)).collect::<opencv::Result<Vec<_>>>()?;
        self.embed_encoded(encoded).await
    }

    /// Encoded images' embeddings, in order, sent 32 to a request.
    pub(super) async fn embed_encoded(&mut self, images: Vec<Vec<u8>>) -> anyhow::Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(32) {
            let images =
                chunk.iter().map(|bytes| pb::Image { data: Some(pb::image::Data::Encoded(bytes.clone())) }).collect();
            let reply = self
                .client
                .embed(pb::EmbedRequest { images, request_id: String::new() })
                .await
                .map_err(|s| anyhow::anyhow!("embed: {:?}: {}", s.code(), s.message()))?
                .into_inner();
            anyhow::ensure!(reply.embeddings.len() == chunk.len(), "the embedder returned a wrong number of rows");
            out.extend(reply.embeddings.into_iter().map(|e| e.values));
        }
        Ok(out)
    }
}
