//! A test harness: the identity service in-process on 127.0.0.1:0 over real gRPC, the embedded
//! engine in a temporary folder, and a scripted embedder behind the embedder seam.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reid_identity::config::IdentityConfig;
use reid_identity::embedder::{EmbedderClient, ModelDescription};
use reid_identity::error::{IdentityError, IdentityResult};
use reid_identity::metrics::IdentityMetrics;
use reid_identity::model::ModelKey;
use reid_identity::{Identities, open_store};
use reid_proto::v1 as pb;
use reid_proto::v1::identity_service_client::IdentityServiceClient;
use reid_server::GrpcServer;
use tokio::net::TcpListener;
use tonic::transport::Channel;

pub const DIM: usize = 32;

/// A deterministic stand-in for the embedder. An "image" is the text `person:P:view:V`; its
/// embedding is person P's centre under the current model version plus view V's noise, so the
/// ground truth of every test is known. Anything else is a corrupt image, as the real embedder says.
pub struct ScriptedEmbedder {
    pub version: Mutex<String>,
    pub noise: f32,
    pub delay: Mutex<Duration>,
    pub calls: Mutex<usize>,
    /// What the model card says of the merge pass.
    pub merge_threshold: Mutex<Option<f32>>,
}

impl ScriptedEmbedder {
    pub fn new(version: &str) -> Arc<Self> {
        Self::with_noise(version, 0.35)
    }

    /// `noise` is the length of the view noise added to a unit centre: 0.35 puts a view at cosine
    /// ~0.94 to its centre, 1.0 at ~0.71.
    pub fn with_noise(version: &str, noise: f32) -> Arc<Self> {
        Arc::new(Self {
            version: Mutex::new(version.into()),
            noise,
            delay: Mutex::new(Duration::ZERO),
            calls: Mutex::new(0),
            merge_threshold: Mutex::new(None),
        })
    }

    pub fn key(&self) -> ModelKey {
        ModelKey { id: "scripted".into(), version: self.version.lock().unwrap().clone(), dimension: DIM }
    }

    pub fn switch_to(&self, version: &str) {
        *self.version.lock().unwrap() = version.into();
    }

    /// Person `p`'s embedding of view `v` under `version`, as the scripted model computes it.
    pub fn embedding(&self, version: &str, person: u64, view: u64) -> Vec<f32> {
        let centre = unit(seeded(hash(&[version, "person", &person.to_string()]), DIM));
        let noise = seeded(hash(&[version, "view", &person.to_string(), &view.to_string()]), DIM);
        let mut v: Vec<f32> =
            centre.iter().zip(&noise).map(|(c, n)| c + self.noise * n / (DIM as f32).sqrt()).collect();
        v = unit(v);
        v
    }
}

pub fn image(person: u64, view: u64) -> pb::Image {
    pb::Image { data: Some(pb::image::Data::Encoded(format!("person:{person}:view:{view}").into_bytes())) }
}

fn parse(image: &pb::Image) -> Option<(u64, u64)> {
    let Some(pb::image::Data::Encoded(bytes)) = &image.data else { return None };
    let text = std::str::from_utf8(bytes).ok()?;
    let mut parts = text.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("person"), Some(p), Some("view"), Some(v)) => Some((p.parse().ok()?, v.parse().ok()?)),
        _ => None,
    }
}

#[async_trait::async_trait]
impl EmbedderClient for ScriptedEmbedder {
    async fn embed(&self, images: Vec<pb::Image>) -> IdentityResult<(Vec<Vec<f32>>, ModelKey)> {
        let delay = *self.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        *self.calls.lock().unwrap() += 1;
        let key = self.key();
        let mut out = Vec::new();
        for (i, image) in images.iter().enumerate() {
            let (p, v) = parse(image).ok_or_else(|| {
                IdentityError::Embedder(tonic::Status::invalid_argument(format!("image {i}: cannot decode")))
            })?;
            out.push(self.embedding(&key.version, p, v));
        }
        Ok((out, key))
    }

    async fn model(&self) -> IdentityResult<ModelDescription> {
        Ok(ModelDescription {
            key: self.key(),
            match_threshold: 0.6,
            merge_threshold: *self.merge_threshold.lock().unwrap(),
        })
    }
}

fn hash(parts: &[&str]) -> u64 {
    // FNV-1a: stable across runs and platforms.
    parts.join("/").bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3))
}

/// `n` standard-normal-ish values from a seed (sum of uniforms; good enough for geometry).
fn seeded(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed | 1;
    let mut uniform = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f32 / (1u64 << 53) as f32
    };
    (0..n).map(|_| (0..12).map(|_| uniform()).sum::<f32>() - 6.0).collect()
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

pub struct Service {
    pub client: IdentityServiceClient<Channel>,
    pub identities: Arc<Identities>,
    pub embedder: Arc<ScriptedEmbedder>,
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub fn config(dir: &std::path::Path) -> IdentityConfig {
    let mut c = IdentityConfig { data_dir: dir.to_path_buf(), ..Default::default() };
    c.retention.sweep_interval = Duration::from_millis(50);
    c
}

impl Service {
    pub async fn start(config: IdentityConfig, embedder: Arc<ScriptedEmbedder>) -> Self {
        let store = open_store(&config).await.unwrap();
        let identities = Arc::new(
            Identities::open(config, store, Some(embedder.clone() as Arc<dyn EmbedderClient>), IdentityMetrics::new())
                .await
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(reid_identity::serve(
            identities.clone(),
            GrpcServer::new(vec![reid_identity::SERVICE_NAME]),
            listener,
            async move {
                let _ = stopped.await;
            },
        ));
        let client = IdentityServiceClient::connect(format!("http://{addr}")).await.unwrap();
        Self { client, identities, embedder, addr, stop: Some(stop), task: Some(task) }
    }

    /// Stops the server and waits for it, so that its store can be reopened.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub fn client(&self) -> IdentityServiceClient<Channel> {
        self.client.clone()
    }
}

/// Opens the embedded store a stopped service used. A store call the service had started on a
/// blocking thread (an index build on an upkeep tick) may still hold a collection's write-ahead
/// log for a moment after the service stopped: wait for it, up to ten seconds.
pub async fn reopen_store(path: &std::path::Path) -> reid_vector_store::EdgeStore {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match reid_vector_store::EdgeStore::open(path) {
            Ok(store) => return store,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "store still held; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{} stayed held for 10 s: {e}", path.display()),
        }
    }
}

pub fn ts(ms: i64) -> prost_types::Timestamp {
    reid_proto::time::timestamp(ms)
}

/// A tracklet of `views` crops of `person` on `camera`, starting at `start_ms`, one crop a second.
pub fn tracklet(
    camera: &str,
    track: &str,
    person: u64,
    views: std::ops::Range<u64>,
    start_ms: i64,
) -> pb::ObserveRequest {
    let crops = views
        .enumerate()
        .map(|(i, v)| pb::TrackletCrop {
            image: Some(image(person, v)),
            r#box: Some(pb::BoundingBox { x: 10.0, y: 20.0, width: 64.0, height: 128.0 }),
            captured_at: Some(ts(start_ms + 1000 * i as i64)),
            quality: 0.5 + 0.1 * i as f32,
            embedding: None,
        })
        .collect();
    pb::ObserveRequest { camera_id: camera.into(), track_id: track.into(), crops, model: None }
}

pub fn embedding_probe(values: Vec<f32>, model: &ModelKey) -> pb::Probe {
    pb::Probe {
        query: Some(pb::probe::Query::Embedding(pb::EmbeddingWithModel {
            embedding: Some(pb::Embedding { values }),
            model: Some(model.to_proto()),
        })),
    }
}

pub fn image_probe(person: u64, view: u64) -> pb::Probe {
    pb::Probe { query: Some(pb::probe::Query::Image(image(person, view))) }
}

/// Vectors stored in every gallery whose payload matches the filter.
pub async fn stored(identities: &Identities, filter: &reid_vector_store::Filter) -> u64 {
    let mut n = 0;
    for g in identities.galleries() {
        n += identities.store().count(&g.collection, filter).await.unwrap();
    }
    n
}
