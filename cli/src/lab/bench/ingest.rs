//! `reid bench ingest`: frames per second per CPU core for decode + detect + track on `vtest.avi`
//! with each detector, against decoding alone measured in the same run; ssd's detection alone one
//! frame per forward pass and several cameras' frames per pass; then the whole path with the
//! embedder and the identity service in this process.
//!
//! "Per core" is frames divided by the CPU seconds the process used (user + system, from
//! /proc/self/stat), so the figure does not depend on how many cores the machine lends.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use opencv::prelude::*;
use opencv::videoio;
use reid_ingester::{CameraSpec, IngesterConfig};

#[derive(Debug, Args)]
pub struct IngestBenchArgs {
    #[arg(long, default_value = "/usr/share/doc/opencv-doc/examples/data/vtest.avi")]
    video: PathBuf,
    #[arg(long, value_delimiter = ',', default_value = "ssd,hog,background,haar-face")]
    detectors: Vec<String>,
    /// Cameras playing the video at once, for the concurrent figure.
    #[arg(long, default_value_t = 4)]
    cameras: usize,
    /// Model folder the embedder serves for the end-to-end figure; empty skips it.
    #[arg(long, default_value = reid_embedder::DEFAULT_MODEL)]
    model: String,
    #[arg(long, default_value = "models")]
    model_dir: PathBuf,
    /// TOML with any `IngesterConfig` field (detector settings, e.g. `[detectors.hog] scale = 1.2`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Let OpenCV use every core inside one detector call (default: one thread, so that the
    /// per-core figure is what a camera costs when many share the machine).
    #[arg(long)]
    opencv_threads: Option<i32>,
}

/// CPU seconds this process has used so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th of them.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<f64>().ok()).sum();
    ticks / 100.0
}

struct Measured {
    frames: u64,
    wall: f64,
    cpu: f64,
    tracklets: u64,
}

impl Measured {
    fn print(&self, what: &str, reference: Option<f64>) {
        let per_core = self.frames as f64 / self.cpu.max(1e-9);
        let ratio = reference.map_or(String::new(), |r| format!("  {:.0}x the CPU of decoding alone", r / per_core));
        println!(
            "{what:<34} {:>5} frames  wall {:>6.1} fps  per core {:>6.1} fps  = {:>4.1} cameras x 10 fps/core  {:>4} tracklets{ratio}",
            self.frames,
            self.frames as f64 / self.wall,
            per_core,
            per_core / 10.0,
            self.tracklets,
        );
    }
}

fn decode_only(video: &std::path::Path) -> anyhow::Result<Measured> {
    let (wall0, cpu0) = (Instant::now(), cpu_seconds());
    let mut capture = videoio::VideoCapture::from_file(video, videoio::CAP_ANY)?;
    anyhow::ensure!(capture.is_opened()?, "cannot open {}", video.display());
    let mut frame = opencv::core::Mat::default();
    let mut frames = 0;
    while capture.read(&mut frame)? && !frame.empty() {
        frames += 1;
    }
    Ok(Measured { frames, wall: wall0.elapsed().as_secs_f64(), cpu: cpu_seconds() - cpu0, tracklets: 0 })
}

/// What one forward pass over several cameras' frames buys: the first 200 frames of the video
/// through ssd one at a time, then in batches of `batch` (as `batch` cameras' latest frames
/// would be), detection alone.
fn ssd_batching(config: &IngesterConfig, video: &std::path::Path, batch: usize) -> anyhow::Result<[Measured; 2]> {
    let mut ssd =
        reid_ingester::detect::ssd::SsdDetector::new(config.detectors.ssd.clone()).map_err(anyhow::Error::msg)?;
    let mut capture = videoio::VideoCapture::from_file(video, videoio::CAP_ANY)?;
    let mut frames = Vec::new();
    let mut frame = opencv::core::Mat::default();
    while frames.len() < 200 && capture.read(&mut frame)? && !frame.empty() {
        frames.push(frame.try_clone()?);
    }
    // Warm-up: the first forward allocates.
    ssd.detect_many(&frames[..1])?;
    let mut measure = |size: usize| -> anyhow::Result<Measured> {
        let (wall0, cpu0) = (Instant::now(), cpu_seconds());
        let mut found = 0;
        for chunk in frames.chunks(size) {
            found += ssd.detect_many(chunk)?.iter().map(Vec::len).sum::<usize>();
        }
        anyhow::ensure!(found > 0, "ssd found nobody in {}", video.display());
        let frames = frames.len() as u64;
        Ok(Measured { frames, wall: wall0.elapsed().as_secs_f64(), cpu: cpu_seconds() - cpu0, tracklets: 0 })
    };
    Ok([measure(1)?, measure(batch.max(1))?])
}

/// Plays the video on `cameras` cameras of one ingester and waits for all to finish.
async fn ingest(
    config: IngesterConfig,
    video: &std::path::Path,
    detector: &str,
    cameras: usize,
) -> anyhow::Result<Measured> {
    let ingester = reid_ingester::start(config).await?;
    let (wall0, cpu0) = (Instant::now(), cpu_seconds());
    for i in 0..cameras {
        let spec =
            CameraSpec { detector: detector.into(), ..CameraSpec::new(format!("cam{i}"), video.to_string_lossy()) };
        ingester.add(spec).await?;
    }
    let mut frames = 0;
    let mut tracklets = 0;
    for i in 0..cameras {
        let camera = ingester.camera(&format!("cam{i}")).await?;
        let waiter = camera.clone();
        tokio::task::spawn_blocking(move || waiter.wait_finished(Duration::from_secs(3600))).await?;
        let s = camera.status();
        frames += s.frames_processed;
        tracklets += s.tracklets_emitted;
    }
    // Delivery (when configured) is part of the cost.
    let deadline = Instant::now() + Duration::from_secs(600);
    while ingester.outbox_len() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let measured = Measured { frames, wall: wall0.elapsed().as_secs_f64(), cpu: cpu_seconds() - cpu0, tracklets };
    ingester.shutdown().await;
    Ok(measured)
}

pub async fn run(args: IngestBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.video.is_file(), "{} not found (apt install opencv-doc)", args.video.display());
    let threads = args.opencv_threads.unwrap_or(1);
    opencv::core::set_num_threads(threads).context("setting OpenCV's thread count")?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{} on {cores} cores, OpenCV threads per call: {threads}", args.video.display());

    let mut base: IngesterConfig = crate::settings::read_toml(args.config.as_deref())?;
    base.detectors.models_under(&args.model_dir);
    let decode = decode_only(&args.video)?;
    let reference = decode.frames as f64 / decode.cpu.max(1e-9);
    decode.print("decode only (reference)", None);
    for detector in &args.detectors {
        let one = ingest(base.clone(), &args.video, detector, 1).await?;
        one.print(&format!("decode+detect+track {detector}"), Some(reference));
        if args.cameras > 1 {
            let many = ingest(base.clone(), &args.video, detector, args.cameras).await?;
            many.print(&format!("  {} cameras at once", args.cameras), Some(reference));
        }
    }

    if args.detectors.iter().any(|d| d == "ssd") {
        let mut gated = base.clone();
        gated.detectors.ssd.motion_gate = true;
        let measured = ingest(gated, &args.video, "ssd", 1).await?;
        measured.print("  ssd with its motion gate", Some(reference));
    }
    if args.detectors.iter().any(|d| d == "ssd") && args.cameras > 1 {
        let [single, batched] = ssd_batching(&base, &args.video, args.cameras)?;
        single.print("ssd detection alone, 1 per forward", Some(reference));
        batched.print(&format!("  {} frames per forward", args.cameras), Some(reference));
    }

    if !args.model.is_empty() {
        let embedder = crate::serve::InProcessEmbedder::start(reid_embedder::EmbedderConfig {
            model_dir: args.model_dir.clone(),
            model: args.model.clone(),
            watch_interval: Duration::ZERO,
            ..Default::default()
        })
        .await?;
        let data = tempfile::tempdir()?;
        let listener = crate::serve::bind("127.0.0.1:0").await?;
        let identity_addr = listener.local_addr()?.to_string();
        let identity_config = reid_identity::IdentityConfig {
            data_dir: data.path().to_path_buf(),
            embedder_url: Some(reid_server::grpc_url(&embedder.addr)),
            ..Default::default()
        };
        let (stop_identity, identity_stopped) = tokio::sync::oneshot::channel::<()>();
        let identity = tokio::spawn(reid_identity::run(identity_config, listener, async {
            let _ = identity_stopped.await;
        }));
        let config = IngesterConfig {
            embedder_url: Some(reid_server::grpc_url(&embedder.addr)),
            identity_url: Some(reid_server::grpc_url(&identity_addr)),
            ..base
        };
        let detector = args.detectors.first().cloned().unwrap_or_else(|| "hog".into());
        let e2e = ingest(config, &args.video, &detector, 1).await?;
        e2e.print(&format!("end to end {detector} + {} + identity", args.model), Some(reference));
        let _ = stop_identity.send(());
        identity.await??;
        embedder.stop().await?;
    }
    Ok(ExitCode::SUCCESS)
}
