//! Starts an embedder in-process on 127.0.0.1:0 and connects a real gRPC client to it.

#![allow(clippy::unwrap_used)]
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reid_embedder::{Embedder, EmbedderConfig};
use reid_proto::v1 as pb;
use reid_proto::v1::embedder_service_client::EmbedderServiceClient;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn models() -> PathBuf {
    repo().join("models")
}

pub fn config(model: &str) -> EmbedderConfig {
    EmbedderConfig {
        model_dir: models(),
        model: model.into(),
        watch_interval: Duration::ZERO,
        ..EmbedderConfig::default()
    }
}

/// Serves folder `model` of `dir`, checking its card for new versions every 50 ms.
pub fn watched_config(dir: &ModelDir, model: &str) -> EmbedderConfig {
    EmbedderConfig {
        model_dir: dir.path.clone(),
        model: model.into(),
        watch_interval: Duration::from_millis(50),
        ..config("")
    }
}

/// Polls `check` every 50 ms for up to 5 s; true once it holds.
pub async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

pub struct Running {
    pub addr: String,
    pub channel: Channel,
    pub embedder: Option<Arc<Embedder>>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    pub fn client(&self) -> EmbedderServiceClient<Channel> {
        EmbedderServiceClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }

    /// Triggers graceful shutdown and waits for the server to finish.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.embedder.take();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.handle.take().expect("running").await?
    }
}

pub async fn start(config: EmbedderConfig) -> Running {
    let server = reid_server::GrpcServer::new(vec![reid_embedder::SERVICE_NAME]);
    let embedder = Embedder::start(config, server.health()).await.expect("embedder starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let addr = listener.local_addr().expect("local addr").to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(reid_embedder::serve(embedder.clone(), server, listener, async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}")).expect("url").connect().await.expect("connect");
    Running { addr, channel, embedder: Some(embedder), stop: Some(stop), handle: Some(handle) }
}

/// A distinct JPEG per `seed`, person-crop shaped.
pub fn jpeg(seed: u32) -> pb::Image {
    let (w, h) = (64u32, 128u32);
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            rgb.extend([
                ((x * (seed + 3) + y) % 256) as u8,
                ((y * 2 + seed * 40) % 256) as u8,
                ((x ^ y ^ seed) % 256) as u8,
            ]);
        }
    }
    encoded(reid_model::preprocess::encode_jpeg(w, h, &rgb).expect("encode"))
}

pub fn encoded(bytes: Vec<u8>) -> pb::Image {
    pb::Image { data: Some(pb::image::Data::Encoded(bytes)) }
}

pub fn raw(width: u32, height: u32, format: pb::PixelFormat, pixels: Vec<u8>) -> pb::Image {
    pb::Image { data: Some(pb::image::Data::Raw(pb::RawImage { width, height, format: format as i32, pixels })) }
}

pub fn request(images: Vec<pb::Image>) -> pb::EmbedRequest {
    pb::EmbedRequest { images, request_id: String::new() }
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// A throw-away model directory holding copies of stock model folders under new names.
pub struct ModelDir {
    pub path: PathBuf,
}

impl ModelDir {
    pub fn new(tag: &str) -> ModelDir {
        let path = std::env::temp_dir().join(format!("reid-models-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp model dir");
        ModelDir { path }
    }

    /// Copies stock model `from` to `name`, setting its card's version.
    pub fn add(&self, name: &str, from: &str, version: &str) {
        let src = models().join(from);
        let dst = self.path.join(name);
        std::fs::create_dir_all(&dst).expect("model folder");
        let mut card: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(src.join("model.json")).expect("stock card (run `make setup`)"),
        )
        .expect("card json");
        let weights = card["weights"].as_str().expect("weights").to_owned();
        link(&src.join(&weights), &dst.join(&weights));
        card["version"] = version.into();
        write_atomic(&dst.join("model.json"), &serde_json::to_string_pretty(&card).expect("json"));
    }
}

impl Drop for ModelDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn link(src: &Path, dst: &Path) {
    if !dst.exists() {
        std::os::unix::fs::symlink(src.canonicalize().expect("weights exist"), dst).expect("symlink weights");
    }
}

pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}
