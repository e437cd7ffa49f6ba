//! The ingester from the command line: `reid cameras add|list|remove` against a running ingester,
//! and `reid tracklets export`, which runs the ingester's pipeline in this process on one source
//! and writes its tracklets in the trainer's layout.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use reid_ingester::{CameraSpec, IngesterConfig};
use reid_proto::v1 as pb;
use reid_proto::v1::ingester_service_client::IngesterServiceClient;
use serde_json::{Value, json};

use crate::client::connect;

#[derive(Debug, Subcommand)]
pub enum CamerasCommand {
    /// Adds a camera; prints its status as JSON.
    Add(AddArgs),
    /// Lists the cameras with their status, one JSON object per line.
    List(AddrArgs),
    /// Removes a camera (its open tracks are flushed first).
    Remove(RemoveArgs),
}

#[derive(Debug, Args)]
pub struct AddrArgs {
    #[arg(long, default_value = reid_proto::ports::INGESTER)]
    addr: String,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    #[arg(long, default_value = reid_proto::ports::INGESTER)]
    addr: String,
    #[arg(long)]
    id: String,
    /// Frames per second to process (0: every frame).
    #[arg(long, default_value_t = 0.0)]
    fps: f32,
    /// The camera's detector; the ingester's default when unset.
    #[arg(long, value_parser = detector_name())]
    detector: Option<String>,
    /// The part of the frame this camera sees: x,y,width,height as fractions (e.g. 0,0,0.6,1).
    #[arg(long, value_parser = numbers::<4>)]
    region: Option<[f32; 4]>,
    /// Resize factor after the region.
    #[arg(long, default_value_t = 1.0)]
    scale: f32,
    /// Per-channel gains B,G,R (e.g. 0.8,1,1.2 for a warmer picture).
    #[arg(long, value_parser = numbers::<3>)]
    gains: Option<[f32; 3]>,
    /// Added to every channel after the gains.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    brightness: f32,
    /// The camera clock's offset, added to every frame time (milliseconds, may be negative).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    time_offset_ms: i64,
    /// A video file, image folder, rtsp:// or http(s):// URL, device:N, or push.
    url: String,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    #[arg(long, default_value = reid_proto::ports::INGESTER)]
    addr: String,
    #[arg(long)]
    id: String,
}

/// `N` comma-separated numbers, e.g. `0,0,0.6,1`.
pub(crate) fn numbers<const N: usize>(s: &str) -> Result<[f32; N], String> {
    let values: Vec<f32> =
        s.split(',').map(|v| v.trim().parse::<f32>().map_err(|e| format!("{v:?}: {e}"))).collect::<Result<_, _>>()?;
    values.try_into().map_err(|v: Vec<f32>| format!("{N} comma-separated numbers expected, got {}", v.len()))
}

fn failed(what: &str) -> impl FnOnce(tonic::Status) -> anyhow::Error + '_ {
    move |s| anyhow::anyhow!("{what} failed: {:?}: {}", s.code(), s.message())
}

/// A camera's status as JSON.
pub fn status_json(s: &pb::CameraStatus) -> Value {
    let c = s.config.clone().unwrap_or_default();
    let state = pb::CameraState::try_from(s.state).unwrap_or(pb::CameraState::Unspecified);
    let dropped: serde_json::Map<String, Value> =
        s.frames_dropped.iter().map(|d| (d.reason.clone(), json!(d.count))).collect();
    json!({
        "id": c.camera_id, "url": c.url, "detector": c.detector, "target_fps": c.target_fps,
        "state": state.as_str_name().trim_start_matches("CAMERA_STATE_").to_ascii_lowercase(),
        "input_fps": s.input_fps, "processed_fps": s.processed_fps, "frames_processed": s.frames_processed,
        "frames_dropped": dropped, "tracklets_emitted": s.tracklets_emitted, "last_error": s.last_error,
        "reconnects": s.reconnects,
    })
}

pub async fn cameras(cmd: CamerasCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CamerasCommand::Add(a) => {
            let view = pb::CameraView {
                region: a.region.map(Vec::from).unwrap_or_default(),
                scale: a.scale,
                gains: a.gains.map(Vec::from).unwrap_or_default(),
                brightness: a.brightness,
                time_offset_ms: a.time_offset_ms,
            };
            let camera = pb::CameraConfig {
                camera_id: a.id,
                url: a.url,
                target_fps: a.fps,
                detector: a.detector.unwrap_or_default(),
                view: Some(view),
            };
            let mut client = IngesterServiceClient::new(connect(&a.addr).await?);
            let r =
                client.add_camera(pb::AddCameraRequest { camera: Some(camera) }).await.map_err(failed("add camera"))?;
            println!("{}", status_json(&r.into_inner().status.unwrap_or_default()));
        }
        CamerasCommand::List(a) => {
            let mut client = IngesterServiceClient::new(connect(&a.addr).await?);
            let r = client.list_cameras(pb::ListCamerasRequest {}).await.map_err(failed("list cameras"))?;
            for s in r.into_inner().cameras {
                println!("{}", status_json(&s));
            }
        }
        CamerasCommand::Remove(a) => {
            let mut client = IngesterServiceClient::new(connect(&a.addr).await?);
            client
                .remove_camera(pb::RemoveCameraRequest { camera_id: a.id.clone() })
                .await
                .map_err(failed("remove camera"))?;
            println!("{}", json!({ "removed": a.id }));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum TrackletsCommand {
    /// Runs detection and tracking over a video, folder or stream in this process and writes every
    /// tracklet's crops as DIR/<camera>/<start>_<track>/*.jpg (the trainer's `tracklets` layout).
    /// Without a source, every camera of the `--config` file's `[[cameras]]` (with their views).
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// TOML file with any `IngesterConfig` field (detector and tracker settings).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The camera name the tracklets are filed under.
    #[arg(long, default_value = "cam0")]
    camera: String,
    /// The detector; the config's default when unset.
    #[arg(long, value_parser = detector_name())]
    detector: Option<String>,
    #[arg(long, default_value_t = 0.0)]
    fps: f32,
    /// Crops kept per tracklet (more makes better training data).
    #[arg(long)]
    crops_per_tracklet: Option<usize>,
    #[arg(long, default_value = "data/tracklets")]
    out: PathBuf,
    /// Stop after this long for live sources.
    #[arg(long)]
    max_seconds: Option<u64>,
    /// A video file, image folder or stream URL (unset: the config's cameras).
    source: Option<String>,
}

pub async fn tracklets(cmd: TrackletsCommand) -> anyhow::Result<ExitCode> {
    let TrackletsCommand::Export(args) = cmd;
    let mut config: IngesterConfig = crate::settings::read_toml(args.config.as_deref())?;
    config.export_dir = Some(args.out.clone());
    config.embedder_url = None;
    config.identity_url = None;
    if let Some(k) = args.crops_per_tracklet {
        config.crops.per_tracklet = k;
    }
    let specs: Vec<CameraSpec> = match &args.source {
        Some(source) => vec![CameraSpec {
            target_fps: args.fps,
            detector: args.detector.clone().unwrap_or_default(),
            ..CameraSpec::new(&args.camera, source)
        }],
        None if config.cameras.is_empty() => {
            anyhow::bail!("give a source, or a --config whose [[cameras]] name the sources")
        }
        None => std::mem::take(&mut config.cameras),
    };
    let started = Instant::now();
    let ingester = reid_ingester::start(config).await?;
    let mut cameras = Vec::new();
    for spec in specs {
        let id = spec.id.clone();
        ingester.add(spec).await?;
        cameras.push((id.clone(), ingester.camera(&id).await?));
    }
    let limit = Duration::from_secs(args.max_seconds.unwrap_or(u64::MAX / 4));
    let mut failed = false;
    let mut lines = Vec::new();
    for (id, camera) in cameras {
        let waiter = camera.clone();
        let state = tokio::task::spawn_blocking(move || waiter.wait_finished(limit)).await?;
        failed |= state == reid_ingester::camera::CameraState::Failed;
        let status = camera.status();
        lines.push(json!({
            "out": args.out, "camera": id, "state": format!("{state:?}").to_lowercase(),
            "frames_processed": status.frames_processed, "tracklets": status.tracklets_emitted,
            "frames_dropped": status.frames_dropped, "last_error": status.last_error,
        }));
    }
    ingester.shutdown().await;
    for mut line in lines {
        line["seconds"] = json!(started.elapsed().as_secs_f64());
        println!("{line}");
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The detector names the ingester knows, for `--detector`'s help and check.
pub fn detector_name() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(reid_ingester::detect::DETECTORS)
}
