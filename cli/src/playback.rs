//! A video played as two cameras through the whole pipeline in this process: the four services
//! on loopback ports (as `reid up` runs them) on the embedded Qdrant engine, the two cameras'
//! views, waiting until every tracklet is delivered, and the identities read back. What
//! `reid demo` shows and `reid eval mtmc` scores.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::Args;
use reid_ingester::view::View;
use reid_proto::v1 as pb;
use reid_proto::v1::identity_service_client::IdentityServiceClient;
use reid_proto::v1::ingester_service_client::IngesterServiceClient;

use crate::client::connect;
use crate::serve::bind;
use crate::up::{Pipeline, PipelineConfig};

pub const VTEST: &str = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";

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
        // `off` is off even when the model card names a threshold.
        config.identity.association.merge_pass = self.merge_threshold.0.is_some();
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

    pub fn describe(&self) -> String {
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
    pub fn first_seen(&self, t0: SystemTime) -> f64 {
        self.sightings.iter().map(|x| secs(x.start.as_ref(), t0)).fold(f64::INFINITY, f64::min)
    }
}

/// Seconds from `t0` to `t` (negative before it; 0 when unset).
pub fn secs(t: Option<&prost_types::Timestamp>, t0: SystemTime) -> f64 {
    let Some(t) = t else { return 0.0 };
    let at = SystemTime::UNIX_EPOCH + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32);
    match at.duration_since(t0) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Every identity with its sightings, as one consistent reading: the merge pass can fold a listed
/// identity into another before its sightings are asked for, and then the reading starts again.
pub async fn identities(client: &mut IdentityServiceClient<reid_server::Channel>) -> anyhow::Result<Vec<Seen>> {
    for _ in 0..10 {
        if let Some(all) = read_identities(client).await? {
            return Ok(all);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("identities kept being merged away while they were read")
}

/// One reading; `None` when a listed identity was gone by the time its sightings were asked for.
async fn read_identities(
    client: &mut IdentityServiceClient<reid_server::Channel>,
) -> anyhow::Result<Option<Vec<Seen>>> {
    let mut all = Vec::new();
    for summary in crate::identity::list_all(client).await? {
        let request = pb::SightingsRequest { identity_id: summary.identity_id.clone(), ..Default::default() };
        let sightings = match client.sightings(request).await {
            Ok(reply) => reply.into_inner().sightings,
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
            Err(s) => anyhow::bail!("sightings of {}: {}", summary.identity_id, s.message()),
        };
        all.push(Seen { summary, sightings });
    }
    Ok(Some(all))
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

/// The ingester's settings from a TOML file (any `IngesterConfig` field: `[tracker]`,
/// `[detectors.*]`, `[crops]`) in place of the defaults `config` was made with; its detectors'
/// models still come from `model_dir` and the video's folder stays readable.
pub fn ingester_from_file(config: &mut PipelineConfig, file: &Path, model_dir: &Path) -> anyhow::Result<()> {
    let mut ingester: reid_ingester::IngesterConfig = crate::settings::read_toml(Some(file))?;
    ingester.detectors.models_under(model_dir);
    ingester.sources.file_roots = std::mem::take(&mut config.ingester.sources.file_roots);
    config.ingester = ingester;
    Ok(())
}

/// The match threshold `given` on the command line, else the one on the card of `model` under
/// `model_dir`, which the embedder serving it tells the identity service. The evaluations pass it
/// on themselves: their replays observe embeddings into identity services that have no embedder
/// to ask.
pub fn match_threshold(given: Option<f32>, model_dir: &Path, model: &str) -> anyhow::Result<f32> {
    match given {
        Some(t) => Ok(t),
        None => Ok(reid_model::ModelCard::load(&model_dir.join(model))?.0.match_threshold),
    }
}

pub async fn pipeline_model(embedder: &str) -> anyhow::Result<pb::ModelInfo> {
    let mut client = reid_proto::v1::embedder_service_client::EmbedderServiceClient::new(connect(embedder).await?);
    let reply = client.get_model(pb::GetModelRequest {}).await.map_err(|s| anyhow::anyhow!("{}", s.message()))?;
    Ok(reply.into_inner().model.unwrap_or_default())
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

    #[test]
    fn an_ingester_file_replaces_the_defaults_but_not_the_models_or_the_video_folder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ingester.toml");
        std::fs::write(&file, "[tracker]\nmin_appearance = 0.0\nmax_misses = 4\n").unwrap();
        let mut config = PipelineConfig::new(Path::new("data"), Path::new("my-models"));
        config.ingester.sources.file_roots = vec!["/videos".into()];
        ingester_from_file(&mut config, &file, Path::new("my-models")).unwrap();
        assert_eq!((config.ingester.tracker.min_appearance, config.ingester.tracker.max_misses), (0.0, 4));
        assert_eq!(config.ingester.sources.file_roots, [std::path::PathBuf::from("/videos")]);
        let mut expected = reid_ingester::IngesterConfig::default();
        expected.detectors.models_under(Path::new("my-models"));
        assert_eq!(format!("{:?}", config.ingester.detectors), format!("{:?}", expected.detectors));
        std::fs::write(&file, "[tracker]\nno_such_field = 1\n").unwrap();
        assert!(ingester_from_file(&mut config, &file, Path::new("my-models")).is_err(), "unknown fields are refused");
    }
}
