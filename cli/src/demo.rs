//! `reid demo`: the whole pipeline on this machine. The four services start in this process on
//! loopback ports (as `reid up` runs them) on the embedded Qdrant engine; `vtest.avi`, a real
//! pedestrian video, plays as two cameras that see overlapping parts of the scene in different
//! colours, sizes and clocks; the identity service matches people across the two; a table of the
//! people seen on both cameras is printed and an HTML report is written.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::Args;
use opencv::prelude::*;
use reid_ingester::view::View;
use reid_proto::v1 as pb;
use reid_proto::v1::identity_service_client::IdentityServiceClient;
use reid_proto::v1::ingester_service_client::IngesterServiceClient;

use crate::client::connect;
use crate::serve::bind;
use crate::up::{Pipeline, PipelineConfig};

pub const VTEST: &str = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The video both cameras play.
    #[arg(long, default_value = VTEST)]
    video: PathBuf,
    /// Where the report goes (index.html, crops, views, training plots).
    #[arg(long, default_value = "report")]
    out: PathBuf,
    /// The demo's own storage; emptied at the start so that every run starts clean.
    #[arg(long, default_value = "data/demo")]
    data: PathBuf,
    #[arg(long, default_value = "models")]
    model_dir: PathBuf,
    /// Cosine threshold for matching a tracklet to an identity (see docs/demo.md for the choice).
    #[arg(long, default_value_t = DEFAULT_THRESHOLD)]
    threshold: f32,
    /// How much better than the runner-up identity the best must be for a match.
    #[arg(long, default_value_t = DEFAULT_MIN_MARGIN)]
    min_margin: f32,
    #[command(flatten)]
    merge: MergePass,
    #[command(flatten)]
    east: EastCamera,
    /// The model folder the embedder serves (under --model-dir).
    #[arg(long, default_value = reid_embedder::DEFAULT_MODEL)]
    model: String,
}

/// The cross-camera matching threshold of the demo (the model card's 0.917 is calibrated on pairs
/// from one view and splits people across two; docs/demo.md).
pub const DEFAULT_THRESHOLD: f32 = 0.8;
pub const DEFAULT_MIN_MARGIN: f32 = 0.0;

/// The identity service's merge pass as the demo runs it (docs/demo.md for the choice).
#[derive(Debug, Clone, Args)]
pub struct MergePass {
    /// Merge identities whose recent tracklets are on average at least this similar, on every
    /// upkeep tick and once more after the last delivery; `off` for none.
    #[arg(long, default_value = "0.75", value_parser = |text: &str| merge_threshold(text).map(Threshold))]
    merge_threshold: Threshold,
}

/// A threshold, or none (`off`).
#[derive(Debug, Clone, Copy)]
pub struct Threshold(pub Option<f32>);

/// Upkeep ticks of the identity service while the demo plays, when the merge pass is on.
const MERGE_TICK: Duration = Duration::from_secs(2);

pub fn merge_threshold(text: &str) -> Result<Option<f32>, String> {
    if text == "off" {
        return Ok(None);
    }
    match text.parse::<f32>() {
        Ok(t) if (-1.0..=1.0).contains(&t) => Ok(Some(t)),
        _ => Err(format!("{text:?} is neither a cosine similarity in [-1, 1] nor `off`")),
    }
}

impl MergePass {
    /// Sets the pass in the identity service's configuration, with short upkeep ticks.
    pub fn apply(&self, config: &mut PipelineConfig) {
        config.identity.association.merge_threshold = self.merge_threshold.0;
        if self.merge_threshold.0.is_some() {
            config.identity.retention.sweep_interval = MERGE_TICK;
        }
    }
}

/// How the east camera differs from the west one.
#[derive(Debug, Clone, Args)]
pub struct EastCamera {
    /// How much the east camera's clock is ahead of the west camera's, in seconds.
    #[arg(long, default_value_t = 60.0)]
    pub east_offset_s: f64,
    /// The east camera's resize factor.
    #[arg(long, default_value_t = 0.9)]
    pub east_scale: f32,
    /// The east camera's colour gains, B,G,R.
    #[arg(long, default_value = "1.1,1,0.9", value_parser = crate::ingester::numbers::<3>)]
    pub east_gains: [f32; 3],
    /// Added to the east camera's pixels after the gains.
    #[arg(long, default_value_t = 8.0, allow_negative_numbers = true)]
    pub east_brightness: f32,
}

impl EastCamera {
    /// The two cameras playing `video`: west sees the left 60% of the frame as it is, east the
    /// right 60% (the middle fifth is seen by both) resized, re-coloured and on another clock.
    pub fn cameras(&self, video: &Path) -> Vec<(String, String, View)> {
        let url = video.to_string_lossy().into_owned();
        vec![
            ("west".into(), url.clone(), View { region: Some([0.0, 0.0, 0.6, 1.0]), ..View::default() }),
            (
                "east".into(),
                url,
                View {
                    region: Some([0.4, 0.0, 0.6, 1.0]),
                    scale: self.east_scale,
                    gains: self.east_gains,
                    brightness: self.east_brightness,
                    time_offset_ms: (self.east_offset_s * 1000.0).round() as i64,
                },
            ),
        ]
    }

    fn describe(&self) -> String {
        format!(
            "cameras west (left 60%) and east (right 60%, scale {}, gains {:?}, brightness {:+}, clock +{} s)",
            self.east_scale, self.east_gains, self.east_brightness, self.east_offset_s
        )
    }
}

/// One identity and where it was seen.
#[derive(Debug, Clone)]
pub struct Seen {
    pub summary: pb::IdentitySummary,
    pub sightings: Vec<pb::Sighting>,
}

impl Seen {
    pub fn on(&self, camera: &str) -> Vec<&pb::Sighting> {
        self.sightings.iter().filter(|s| s.camera_id == camera).collect()
    }

    /// Seconds from `t0` to the start of its first sighting.
    fn first_seen(&self, t0: SystemTime) -> f64 {
        self.sightings.iter().map(|x| secs(x.start.as_ref(), t0)).fold(f64::INFINITY, f64::min)
    }
}

/// The identities seen on both cameras, in the order they were first seen, and the others.
fn split_by_cameras(seen: &[Seen], t0: SystemTime) -> (Vec<&Seen>, Vec<&Seen>) {
    let (mut both, one): (Vec<&Seen>, Vec<&Seen>) =
        seen.iter().partition(|s| !s.on("west").is_empty() && !s.on("east").is_empty());
    both.sort_by(|a, b| a.first_seen(t0).total_cmp(&b.first_seen(t0)));
    (both, one)
}

fn secs(t: Option<&prost_types::Timestamp>, t0: SystemTime) -> f64 {
    let Some(t) = t else { return 0.0 };
    let at = SystemTime::UNIX_EPOCH + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32);
    match at.duration_since(t0) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Every identity with its sightings.
pub async fn identities(client: &mut IdentityServiceClient<reid_server::Channel>) -> anyhow::Result<Vec<Seen>> {
    let mut all = Vec::new();
    for summary in crate::identity::list_all(client).await? {
        let sightings = client
            .sightings(pb::SightingsRequest { identity_id: summary.identity_id.clone(), ..Default::default() })
            .await
            .map_err(|s| anyhow::anyhow!("sightings of {}: {}", summary.identity_id, s.message()))?
            .into_inner()
            .sightings;
        all.push(Seen { summary, sightings });
    }
    Ok(all)
}

/// Waits until every camera has finished its video and the ingester has delivered everything.
async fn wait_for_cameras(
    pipeline: &Pipeline,
    ingester: &mut IngesterServiceClient<reid_server::Channel>,
) -> anyhow::Result<Vec<pb::CameraStatus>> {
    let started = Instant::now();
    let mut last_print = Instant::now();
    loop {
        pipeline.check()?;
        let cameras = ingester
            .list_cameras(pb::ListCamerasRequest {})
            .await
            .map_err(|s| anyhow::anyhow!("listing cameras: {}", s.message()))?
            .into_inner()
            .cameras;
        let state = |c: &pb::CameraStatus| pb::CameraState::try_from(c.state).unwrap_or(pb::CameraState::Unspecified);
        if let Some(failed) = cameras.iter().find(|c| state(c) == pb::CameraState::Failed) {
            anyhow::bail!("camera failed: {}", failed.last_error);
        }
        let done = cameras.iter().all(|c| state(c) == pb::CameraState::Finished);
        if last_print.elapsed() > Duration::from_secs(5) || done {
            last_print = Instant::now();
            let parts: Vec<String> = cameras
                .iter()
                .map(|c| {
                    let id = c.config.as_ref().map_or("?", |c| c.camera_id.as_str());
                    format!("{id}: {} frames, {} tracklets", c.frames_processed, c.tracklets_emitted)
                })
                .collect();
            println!(
                "  {:>5.0} s  {}  (waiting for delivery: {})",
                started.elapsed().as_secs_f64(),
                parts.join("; "),
                pipeline.ingester.outbox_len()
            );
        }
        if done && pipeline.ingester.outbox_len() == 0 {
            return Ok(cameras);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What playing cameras through the pipeline gave.
pub struct Played {
    /// When the cameras were added.
    pub t0: SystemTime,
    pub statuses: Vec<pb::CameraStatus>,
    pub seen: Vec<Seen>,
    pub model: pb::ModelInfo,
}

/// Starts the four services in this process on loopback ports, adds `cameras` over gRPC as an
/// operator would, waits until they have played their videos and everything is delivered, and
/// stops the services.
pub async fn play(config: PipelineConfig, cameras: &[(String, String, View)]) -> anyhow::Result<Played> {
    let merging = config.identity.association.merge_threshold.is_some();
    let sweep = config.identity.retention.sweep_interval;
    let listeners = [
        bind("127.0.0.1:0").await?,
        bind("127.0.0.1:0").await?,
        bind("127.0.0.1:0").await?,
        bind("127.0.0.1:0").await?,
    ];
    let pipeline = Pipeline::start(config, listeners).await?;
    pipeline.wait_serving(Duration::from_secs(120)).await?;
    let a = pipeline.addrs.clone();
    println!(
        "reid is up in this process: embedder {}, identity {}, ingester {}, trainer {}",
        a.embedder, a.identity, a.ingester, a.trainer
    );
    let mut ingester = IngesterServiceClient::new(connect(&a.ingester).await?);
    let mut identity = crate::identity::client(&a.identity).await?;
    let t0 = SystemTime::now();
    for (id, url, view) in cameras {
        let camera = pb::CameraConfig {
            camera_id: id.clone(),
            url: url.clone(),
            view: Some(reid_ingester::service::view_to_proto(view)),
            ..Default::default()
        };
        ingester
            .add_camera(pb::AddCameraRequest { camera: Some(camera) })
            .await
            .map_err(|s| anyhow::anyhow!("adding camera {id}: {}", s.message()))?;
    }
    let statuses = wait_for_cameras(&pipeline, &mut ingester).await?;
    if merging {
        // Every tracklet is in: one more upkeep tick runs the merge pass over all of them.
        tokio::time::sleep(2 * sweep + Duration::from_millis(500)).await;
    }
    let seen = identities(&mut identity).await?;
    let model = pipeline_model(&a.embedder).await?;
    pipeline.stop().await?;
    Ok(Played { t0, statuses, seen, model })
}

/// A clean storage folder for one run, and the pipeline's configuration over it: the embedder
/// serving `model`, cameras allowed to open `video`'s folder, the command line's security.
pub fn fresh_config(data: &Path, model_dir: &Path, model: &str, video: &Path) -> anyhow::Result<PipelineConfig> {
    anyhow::ensure!(video.is_file(), "{} not found (run `make setup`: apt opencv-doc)", video.display());
    if data.exists() {
        std::fs::remove_dir_all(data).with_context(|| format!("emptying {}", data.display()))?;
    }
    std::fs::create_dir_all(data)?;
    let mut config = PipelineConfig::new(data, model_dir);
    config.embedder.model = model.to_owned();
    config.ingester.detectors.hog.motion_gate = true;
    config.ingester.sources.file_roots =
        vec![std::path::absolute(video)?.parent().map(Path::to_path_buf).unwrap_or_default()];
    config.security = crate::client::security();
    Ok(config)
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let mut config = fresh_config(&args.data, &args.model_dir, &args.model, &args.video)?;
    config.identity.association.threshold = Some(args.threshold);
    config.identity.association.min_margin = args.min_margin;
    config.identity.association.observe_min_margin = args.min_margin;
    args.merge.apply(&mut config);
    let cameras = args.east.cameras(&args.video);
    println!("playing {} as {}", args.video.display(), args.east.describe());
    let Played { t0, statuses, seen, model } = play(config, &cameras).await?;

    let (both, one) = split_by_cameras(&seen, t0);
    print_table(&seen, &both, t0);
    let report = Report {
        args: &args,
        t0,
        cameras: &cameras,
        statuses: &statuses,
        seen: &seen,
        both: &both,
        one: &one,
        model: &model,
    };
    let index = report.write()?;
    println!("\nreport: {}", index.display());
    Ok(ExitCode::SUCCESS)
}

async fn pipeline_model(embedder: &str) -> anyhow::Result<pb::ModelInfo> {
    let mut client = reid_proto::v1::embedder_service_client::EmbedderServiceClient::new(connect(embedder).await?);
    let reply = client.get_model(pb::GetModelRequest {}).await.map_err(|s| anyhow::anyhow!("{}", s.message()))?;
    Ok(reply.into_inner().model.unwrap_or_default())
}

fn span(sightings: &[&pb::Sighting], t0: SystemTime) -> String {
    let first = sightings.iter().map(|s| secs(s.start.as_ref(), t0)).fold(f64::INFINITY, f64::min);
    let last = sightings.iter().map(|s| secs(s.end.as_ref(), t0)).fold(f64::NEG_INFINITY, f64::max);
    format!("{first:6.1} - {last:6.1} s ({})", sightings.len())
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

fn print_table(seen: &[Seen], both: &[&Seen], t0: SystemTime) {
    let tracklets: usize = seen.iter().map(|s| s.sightings.len()).sum();
    println!("\n{} tracklets became {} identities; {} were seen on both cameras:\n", tracklets, seen.len(), both.len());
    println!("{:<10} {:<28} {:<28}", "identity", "west: first - last (tracklets)", "east: first - last (tracklets)");
    for s in both {
        println!(
            "{:<10} {:<28} {:<28}",
            short(&s.summary.identity_id),
            span(&s.on("west"), t0),
            span(&s.on("east"), t0)
        );
    }
    println!("(times in seconds since the cameras started, each by its own clock: east's runs ahead)");
}

struct Report<'a> {
    args: &'a DemoArgs,
    t0: SystemTime,
    cameras: &'a [(String, String, View)],
    statuses: &'a [pb::CameraStatus],
    seen: &'a [Seen],
    /// `seen`, split by [`split_by_cameras`].
    both: &'a [&'a Seen],
    one: &'a [&'a Seen],
    model: &'a pb::ModelInfo,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

impl Report<'_> {
    fn write(&self) -> anyhow::Result<PathBuf> {
        let out = &self.args.out;
        if out.exists() {
            std::fs::remove_dir_all(out).with_context(|| format!("emptying {}", out.display()))?;
        }
        for sub in ["crops", "views", "training"] {
            std::fs::create_dir_all(out.join(sub))?;
        }
        self.write_views()?;
        let plots = self.copy_training()?;
        let (both, one) = (self.both, self.one);
        let horizon =
            self.seen.iter().flat_map(|s| &s.sightings).map(|x| secs(x.end.as_ref(), self.t0)).fold(1.0, f64::max);

        let mut h = String::new();
        let r = self.model.r#ref.clone().unwrap_or_default();
        let tracklets: usize = self.seen.iter().map(|s| s.sightings.len()).sum();
        write!(
            h,
            "<!doctype html><html><head><meta charset=utf-8><title>reid demo</title><style>\
             body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}\
             .crops img{{height:96px;margin:2px;border:1px solid #ccc}} .cam{{display:inline-block;vertical-align:top;margin-right:1.5em}}\
             .id{{border-top:1px solid #ddd;padding:.6em 0}} table{{border-collapse:collapse}} td,th{{padding:2px 8px;text-align:left}}\
             .plots img{{width:48%;margin:1%}} .views img{{height:260px;margin-right:1em}} code{{background:#f4f4f4}}\
             </style></head><body>\n<h1>reid demo: one video, two cameras, people followed across them</h1>\n"
        )?;
        writeln!(
            h,
            "<p>What happened: the four reid services ran in one process on this machine. <code>{video}</code>, \
             a real recording of pedestrians (795 frames of 768x576 at 10 fps), was played as two cameras that each \
             see a part of the scene, in a different look and with a different clock (below). On each camera a HOG \
             person detector found people, a tracker followed them from frame to frame into <em>tracklets</em>, \
             and the best crops of each tracklet were embedded by the CNN <code>{model} {version}</code> \
             ({dim}-d, {backend} on {device}). The identity service, on Qdrant's embedded engine, gave each tracklet \
             the identity whose embeddings it resembled most (cosine similarity at least {threshold:.2}), or a new \
             identity. {tracklets} tracklets became {n} identities; <b>{both} were seen on both cameras</b>.</p>",
            video = esc(&self.args.video.display().to_string()),
            model = esc(&r.id),
            version = esc(&r.version),
            dim = r.dimension,
            backend = esc(&self.model.backend),
            device = esc(&self.model.device),
            threshold = self.args.threshold,
            n = self.seen.len(),
            both = both.len(),
        )?;
        h.push_str("<h2>The two cameras</h2><div class=views>");
        for (id, _, view) in self.cameras {
            let status = self.statuses.iter().find(|s| s.config.as_ref().is_some_and(|c| &c.camera_id == id));
            write!(
                h,
                "<div class=cam><img src=\"views/{id}.jpg\"><br><b>{id}</b>: region x {:.0}-{:.0}% of the frame, \
                 scale {}, gains B/G/R {:?}, brightness {:+}, clock {:+.0} s<br>{} frames, {} tracklets</div>",
                view.region.map_or(0.0, |r| r[0] * 100.0),
                view.region.map_or(100.0, |r| (r[0] + r[2]) * 100.0),
                view.scale,
                view.gains,
                view.brightness,
                view.time_offset_ms as f64 / 1000.0,
                status.map_or(0, |s| s.frames_processed),
                status.map_or(0, |s| s.tracklets_emitted),
            )?;
        }
        h.push_str(
            "</div>\n<h2>People seen on both cameras</h2>\n<p>Per identity: its best crop of every tracklet, \
                    per camera, and when it was seen (each bar a tracklet; time in seconds since the cameras \
                    started, by each camera's own clock). Judge the matches by the crops: where a row shows \
                    different people, the model took them for one. The default model is small and was trained \
                    on the first 70% of this same video without colour augmentation, so people dressed alike \
                    (dark coat, jeans) are merged and colour shifts cost matches; <code>docs/demo.md</code> \
                    has the figures and how to bring a better model.</p>\n",
        );
        for s in both {
            self.identity_html(&mut h, s, horizon)?;
        }
        write!(h, "<h2>Seen on one camera only ({})</h2>\n<details><summary>show</summary>", one.len())?;
        for s in one {
            self.identity_html(&mut h, s, horizon)?;
        }
        h.push_str("</details>\n<h2>How the model was trained</h2>\n");
        if plots.is_empty() {
            h.push_str("<p>The served model's folder has no training record.</p>");
        } else {
            write!(
                h,
                "<p>Plots of the training run that produced <code>{}</code> (in its model folder, <code>training/</code>; \
                 <code>make person-model</code> reproduces it): the triplet loss, the share of triplets still active \
                 under batch-hard mining, the CMC curve on held-out people and a PCA of their embeddings.</p><div class=plots>",
                esc(&r.id)
            )?;
            for p in &plots {
                write!(h, "<img src=\"training/{p}\" alt=\"{p}\">")?;
            }
            h.push_str("</div>");
        }
        h.push_str("\n</body></html>\n");
        let index = out.join("index.html");
        std::fs::write(&index, h).with_context(|| format!("writing {}", index.display()))?;
        Ok(index)
    }

    fn identity_html(&self, h: &mut String, s: &Seen, horizon: f64) -> anyhow::Result<()> {
        let id = &s.summary.identity_id;
        write!(h, "<div class=id><b>{}</b> ({} tracklets)<br>", esc(short(id)), s.sightings.len())?;
        for (camera, _, _) in self.cameras {
            let mine = s.on(camera);
            if mine.is_empty() {
                continue;
            }
            write!(h, "<div class=cam>{camera}<div class=crops>")?;
            for (i, sighting) in mine.iter().enumerate() {
                if let Some(name) = self.copy_crop(id, camera, i, &sighting.thumbnail) {
                    let t = secs(sighting.start.as_ref(), self.t0);
                    write!(
                        h,
                        "<img src=\"{name}\" title=\"{camera} at {t:.1} s, track {}\">",
                        esc(&sighting.track_id)
                    )?;
                }
            }
            h.push_str("</div></div>");
        }
        h.push_str(&self.timeline(s, horizon));
        h.push_str("</div>\n");
        Ok(())
    }

    /// An SVG with one row per camera and a bar per tracklet.
    fn timeline(&self, s: &Seen, horizon: f64) -> String {
        let (width, row, left) = (900.0, 18.0, 50.0);
        let x = |t: f64| left + (t.max(0.0) / horizon) * (width - left - 10.0);
        let mut svg = format!(
            "<svg width=\"{width}\" height=\"{}\" style=\"display:block\">",
            row * self.cameras.len() as f64 + 16.0
        );
        for (i, (camera, _, _)) in self.cameras.iter().enumerate() {
            let y = row * i as f64;
            let _ = write!(svg, "<text x=\"0\" y=\"{}\" font-size=\"12\">{camera}</text>", y + 13.0);
            let _ = write!(
                svg,
                "<line x1=\"{left}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#ddd\"/>",
                width - 10.0,
                y + 9.0,
                y + 9.0
            );
            for sighting in s.on(camera) {
                let (a, b) = (x(secs(sighting.start.as_ref(), self.t0)), x(secs(sighting.end.as_ref(), self.t0)));
                let color = if i == 0 { "#2b7bb9" } else { "#d9822b" };
                let _ = write!(
                    svg,
                    "<rect x=\"{a:.1}\" y=\"{}\" width=\"{:.1}\" height=\"12\" fill=\"{color}\"/>",
                    y + 3.0,
                    (b - a).max(2.0)
                );
            }
        }
        let y = row * self.cameras.len() as f64 + 12.0;
        for k in 0..=5 {
            let t = horizon * f64::from(k) / 5.0;
            let _ =
                write!(svg, "<text x=\"{:.1}\" y=\"{y}\" font-size=\"10\" fill=\"#666\">{t:.0} s</text>", x(t) - 8.0);
        }
        svg.push_str("</svg>");
        svg
    }

    /// Copies a stored thumbnail into the report; its path there.
    fn copy_crop(&self, identity: &str, camera: &str, i: usize, thumbnail: &str) -> Option<String> {
        if thumbnail.is_empty() {
            return None;
        }
        let from = self.args.data.join("identity").join("crops").join(thumbnail);
        let ext = from.extension().and_then(|e| e.to_str()).unwrap_or("jpg");
        let name = format!("crops/{}_{camera}_{i}.{ext}", short(identity));
        std::fs::copy(&from, self.args.out.join(&name)).ok()?;
        Some(name)
    }

    /// One frame of the video as each camera sees it.
    fn write_views(&self) -> anyhow::Result<()> {
        let mut capture = opencv::videoio::VideoCapture::from_file(&self.args.video, opencv::videoio::CAP_ANY)?;
        capture.set(opencv::videoio::CAP_PROP_POS_FRAMES, 120.0)?;
        let mut image = opencv::core::Mat::default();
        if !capture.read(&mut image)? || image.empty() {
            return Ok(());
        }
        for (id, _, view) in self.cameras {
            let frame =
                reid_ingester::frame::Frame { image: image.clone(), captured_at: SystemTime::now(), sequence: 0 };
            let seen = view.apply(frame, u64::MAX)?;
            opencv::imgcodecs::imwrite(
                self.args.out.join("views").join(format!("{id}.jpg")),
                &seen.image,
                &opencv::core::Vector::new(),
            )?;
        }
        Ok(())
    }

    /// The served model's training plots, copied into the report; their file names.
    fn copy_training(&self) -> anyhow::Result<Vec<String>> {
        let id = self.model.r#ref.as_ref().map(|r| r.id.clone()).unwrap_or_default();
        let dir = self.args.model_dir.join(&id).join("training");
        let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(Vec::new()) };
        let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "png") {
                names.insert(e.file_name().to_string_lossy().into_owned(), p);
            }
        }
        for (name, path) in &names {
            std::fs::copy(path, self.args.out.join("training").join(name))?;
        }
        Ok(names.into_keys().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_thresholds_are_cosine_similarities_or_off() {
        assert_eq!(merge_threshold("0.75"), Ok(Some(0.75)));
        assert_eq!(merge_threshold("off"), Ok(None));
        assert!(merge_threshold("1.5").unwrap_err().contains("nor `off`"));
        assert!(merge_threshold("none").is_err());
        let mut config = PipelineConfig::new(Path::new("data"), Path::new("models"));
        MergePass { merge_threshold: Threshold(Some(0.7)) }.apply(&mut config);
        assert_eq!(config.identity.association.merge_threshold, Some(0.7));
        assert_eq!(config.identity.retention.sweep_interval, MERGE_TICK);
    }
}
