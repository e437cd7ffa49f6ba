//! `reid bench embed`: images/s through the gRPC embedder at several concurrencies, and, in the
//! same run, the same weights' raw throughput in PyTorch eager (bench/embed_reference.py).

mod identity;
mod ingest;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use reid_embedder::EmbedderConfig;
use reid_proto::v1 as pb;
use reid_proto::v1::embedder_service_client::EmbedderServiceClient;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Embedder throughput against raw PyTorch.
    Embed(EmbedBenchArgs),
    /// Identify latency and HNSW recall@1 at several gallery sizes.
    Identity(identity::IdentityBenchArgs),
    /// Ingester frames/s per core for each detector, and end to end.
    Ingest(ingest::IngestBenchArgs),
}

#[derive(Debug, Args)]
pub struct EmbedBenchArgs {
    #[arg(long, default_value = "models")]
    model_dir: PathBuf,
    #[arg(long, default_value = "mobilenetv2-imagenet")]
    model: String,
    /// Client concurrencies to measure, each sending one image per request.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    concurrency: Vec<usize>,
    /// Seconds measured per concurrency (after a warm-up).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    #[arg(long, default_value_t = 32)]
    max_batch: usize,
    /// Python with torch for the reference; empty skips it.
    #[arg(long, default_value = ".venv/bin/python")]
    python: String,
    /// Benchmark an embedder that is already running instead of starting one in-process.
    #[arg(long)]
    addr: Option<String>,
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Embed(args) => embed(args).await,
        BenchCommand::Identity(args) => identity::run(args).await,
        BenchCommand::Ingest(args) => ingest::run(args).await,
    }
}

async fn embed(args: EmbedBenchArgs) -> anyhow::Result<ExitCode> {
    let (addr, server) = match &args.addr {
        Some(addr) => (addr.clone(), None),
        None => {
            let config = EmbedderConfig {
                model_dir: args.model_dir.clone(),
                model: args.model.clone(),
                max_batch: args.max_batch,
                watch_interval: Duration::ZERO,
                ..EmbedderConfig::default()
            };
            let server = crate::serve::InProcessEmbedder::start(config).await?;
            (server.addr.clone(), Some(server))
        }
    };
    let channel = crate::client::connect(&addr).await?;
    let info = EmbedderServiceClient::new(channel.clone())
        .get_model(pb::GetModelRequest {})
        .await
        .context("the embedder has no model")?
        .into_inner()
        .model
        .unwrap_or_default();
    let image = pb::Image { data: Some(pb::image::Data::Encoded(crop_jpeg(info.input_width, info.input_height)?)) };
    println!(
        "model {} ({}), input {}x{}, device {}, max_batch {}",
        info.r#ref.as_ref().map(|r| r.id.as_str()).unwrap_or("?"),
        info.backend,
        info.input_width,
        info.input_height,
        info.device,
        args.max_batch
    );
    println!("{:>12} {:>12} {:>14}", "concurrency", "images/s", "mean latency");
    let mut results = Vec::new();
    for &c in &args.concurrency {
        let (rate, latency) = measure(&channel, &image, c, args.seconds).await?;
        println!("{c:>12} {rate:>12.1} {:>12.1}ms", latency.as_secs_f64() * 1e3);
        results.push((c, rate));
    }
    if let Some(server) = server {
        server.stop().await?;
    }
    if args.python.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let reference = python_reference(&args)?;
    let rate = reference["images_per_s"].as_f64().context("reference output lacks images_per_s")?;
    println!(
        "pytorch eager, batch {}, {} threads on {}: {rate:.1} images/s",
        args.max_batch, reference["threads"], reference["device"]
    );
    for (c, service) in &results {
        println!("ratio service/raw at concurrency {c}: {:.3}x", service / rate);
    }
    Ok(ExitCode::SUCCESS)
}

/// A person-crop-sized JPEG with some texture, so decoding costs what it does in real use.
fn crop_jpeg(width: u32, height: u32) -> anyhow::Result<Vec<u8>> {
    let mut rgb = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            rgb.extend([(x * 2 % 256) as u8, (y % 256) as u8, ((x ^ y) % 256) as u8]);
        }
    }
    Ok(reid_model::preprocess::encode_jpeg(width, height, &rgb)?)
}

async fn measure(
    channel: &reid_server::Channel,
    image: &pb::Image,
    concurrency: usize,
    seconds: f64,
) -> anyhow::Result<(f64, Duration)> {
    // Warm-up: let the batcher and libtorch settle.
    let warmup = Duration::from_secs_f64((seconds / 5.0).min(2.0));
    run_clients(channel, image, concurrency, warmup).await?;
    let started = Instant::now();
    let (images, latency_sum) = run_clients(channel, image, concurrency, Duration::from_secs_f64(seconds)).await?;
    let elapsed = started.elapsed().as_secs_f64();
    Ok((images as f64 / elapsed, latency_sum / images.max(1) as u32))
}

async fn run_clients(
    channel: &reid_server::Channel,
    image: &pb::Image,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<(u64, Duration)> {
    let done = Arc::new(AtomicBool::new(false));
    let images = Arc::new(AtomicU64::new(0));
    let latency_us = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut client = EmbedderServiceClient::new(channel.clone());
        let (done, images, latency_us, image) = (done.clone(), images.clone(), latency_us.clone(), image.clone());
        tasks.push(tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let t = Instant::now();
                client.embed(pb::EmbedRequest { images: vec![image.clone()], request_id: String::new() }).await?;
                latency_us.fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                images.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    tokio::time::sleep(duration).await;
    done.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?.map_err(|s| anyhow::anyhow!("embed failed during the benchmark: {s}"))?;
    }
    Ok((images.load(Ordering::Relaxed), Duration::from_micros(latency_us.load(Ordering::Relaxed))))
}

fn python_reference(args: &EmbedBenchArgs) -> anyhow::Result<serde_json::Value> {
    let out = std::process::Command::new(&args.python)
        .arg("bench/embed_reference.py")
        .arg("--model")
        .arg(args.model_dir.join(&args.model))
        // Both sides keep libtorch's default intra-op thread count (one per physical core).
        .args(["--batch", &args.max_batch.to_string()])
        .args(["--seconds", &args.seconds.to_string()])
        .output()
        .with_context(|| format!("running {} bench/embed_reference.py", args.python))?;
    if !out.status.success() {
        anyhow::bail!("reference failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim()).context("reference output")
}
