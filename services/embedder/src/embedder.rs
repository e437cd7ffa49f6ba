//! The embedder's domain core: validate images, pre-process them for the served model, batch,
//! and manage which model is served (start-up load, `LoadModel`, and the model-card watcher).

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use reid_model::backend::LoadOptions;
use reid_model::preprocess::preprocess;
use reid_model::{ImageInput, ModelCard, ModelError, PixelFormat, load_model};
use reid_proto::v1 as pb;
use reid_server::Health;
use tokio::sync::{Mutex, oneshot};

use crate::batcher::{ActiveModel, BatchPolicy, Batcher, Embedded, Job, JobError};
use crate::config::EmbedderConfig;
use crate::error::EmbedderError;
use crate::metrics::EmbedderMetrics;

/// How often a request is pre-processed again when models swap under it.
const MAX_STALE_RETRIES: usize = 3;

pub struct Embedder {
    config: EmbedderConfig,
    batcher: Batcher,
    metrics: EmbedderMetrics,
    health: Health,
    /// Serialises model loads and remembers which model folder is served.
    current: Mutex<String>,
    /// The card version whose load last failed, so the watcher does not retry it every tick.
    failed_version: std::sync::Mutex<Option<String>>,
    thread: JoinHandle<()>,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder").field("config", &self.config).finish()
    }
}

impl Embedder {
    /// Starts the inference thread and loads the configured model. A model that cannot be loaded
    /// is logged, not fatal: the service answers FAILED_PRECONDITION and reports NOT_SERVING until
    /// a model arrives (through `LoadModel` or the watcher).
    pub async fn start(config: EmbedderConfig, health: Health) -> anyhow::Result<Arc<Embedder>> {
        config.validate().map_err(|e| anyhow::anyhow!("invalid embedder config: {e}"))?;
        if config.threads > 0 {
            reid_model::set_inference_threads(config.threads);
        }
        let metrics = EmbedderMetrics::new();
        let policy = BatchPolicy {
            max_batch: config.max_batch,
            max_delay: config.max_delay,
            queue_capacity: config.queue_capacity,
        };
        let (batcher, thread) = Batcher::spawn(policy, metrics.clone())?;
        let embedder = Arc::new(Embedder {
            current: Mutex::new(config.model.clone()),
            config,
            batcher,
            metrics,
            health,
            failed_version: std::sync::Mutex::new(None),
            thread,
        });
        embedder.health.set_all(false).await;
        let first = embedder.config.model.clone();
        if let Err(e) = embedder.load(&first).await {
            tracing::error!(error = %e, model = %first, "no model served until one can be loaded");
        }
        Ok(embedder)
    }

    pub fn metrics(&self) -> &EmbedderMetrics {
        &self.metrics
    }

    pub fn config(&self) -> &EmbedderConfig {
        &self.config
    }

    pub fn active(&self) -> Result<Arc<ActiveModel>, EmbedderError> {
        self.batcher
            .active()
            .ok_or_else(|| EmbedderError::NoModel(format!("model {:?} is not loaded", self.config.model)))
    }

    /// Embeds `images` with the served model; every vector comes from the one model returned.
    pub async fn embed(&self, images: Vec<pb::Image>) -> Result<Embedded, EmbedderError> {
        self.check_request(&images)?;
        let images = Arc::new(images);
        for _ in 0..MAX_STALE_RETRIES {
            let active = self.active()?;
            let preparing = self.batcher.preparing();
            let rows = {
                let (images, card, max_pixels) = (images.clone(), active.card.clone(), self.config.max_image_pixels);
                tokio::task::spawn_blocking(move || prepare_all(&images, &card, max_pixels))
                    .await
                    .map_err(|e| EmbedderError::Inference(format!("pre-processing task: {e}")))??
            };
            let (reply, result) = oneshot::channel();
            self.batcher.submit(Job { spec: active.card.input, rows, enqueued: Instant::now(), reply })?;
            drop(preparing);
            match result.await.map_err(|_| EmbedderError::ShuttingDown)? {
                Ok(embedded) => return Ok(embedded),
                Err(JobError::Stale) => continue,
                Err(JobError::Failed(e)) => return Err(e),
            }
        }
        Err(EmbedderError::Inference("the model changed during every attempt".into()))
    }

    fn check_request(&self, images: &[pb::Image]) -> Result<(), EmbedderError> {
        if images.is_empty() {
            return Err(EmbedderError::NoImages);
        }
        let limit = self.config.max_images_per_request;
        if images.len() > limit {
            return Err(EmbedderError::TooManyImages { got: images.len(), limit });
        }
        for (index, image) in images.iter().enumerate() {
            let bytes = match &image.data {
                Some(pb::image::Data::Encoded(b)) => b.len(),
                Some(pb::image::Data::Raw(r)) => r.pixels.len(),
                None => return Err(EmbedderError::InvalidImage { index, reason: "no data".into() }),
            };
            if bytes > self.config.max_image_bytes {
                let reason = format!("{bytes} bytes, the limit is {}", self.config.max_image_bytes);
                return Err(EmbedderError::ImageTooLarge { index, reason });
            }
        }
        Ok(())
    }

    /// Loads model folder `name` and swaps it in; in-flight requests finish on the old model.
    pub async fn load(&self, name: &str) -> Result<Arc<ActiveModel>, EmbedderError> {
        let path = self.model_path(name)?;
        let mut current = self.current.lock().await;
        self.load_locked(&mut current, name, path).await
    }

    /// Loads while holding the `current` lock, so that `LoadModel` and the watcher never
    /// interleave (the watcher must not bring back a folder that `LoadModel` just replaced).
    async fn load_locked(
        &self,
        current: &mut String,
        name: &str,
        path: PathBuf,
    ) -> Result<Arc<ActiveModel>, EmbedderError> {
        let options = LoadOptions { device: self.config.device, fp16: self.config.fp16 };
        let model = tokio::task::spawn_blocking(move || load_model(&path, options))
            .await
            .map_err(|e| EmbedderError::Inference(format!("model loading task: {e}")))?
            .map_err(|source| match source {
                ModelError::CardRead { .. } => EmbedderError::ModelNotFound(name.to_owned()),
                source => EmbedderError::ModelLoad { name: name.to_owned(), source },
            })?;
        let active = self.batcher.swap(name.to_owned(), model).await?;
        *current = name.to_owned();
        self.health.set_all(true).await;
        Ok(active)
    }

    fn model_path(&self, name: &str) -> Result<PathBuf, EmbedderError> {
        if !reid_model::card::is_folder_name(name) {
            return Err(EmbedderError::InvalidModelName(name.to_owned()));
        }
        Ok(self.config.model_dir.join(name))
    }

    /// One watcher tick: reload the served model folder if its card names a new version (or if
    /// nothing is served yet and the card has appeared).
    pub async fn check_for_new_version(&self) {
        let mut current = self.current.lock().await;
        let name = current.clone();
        let Ok(path) = self.model_path(&name) else { return };
        let Ok((card, _)) = ModelCard::load(&path) else { return };
        let served = self.batcher.active().map(|a| a.card.version.clone());
        if served.as_deref() == Some(card.version.as_str()) {
            return;
        }
        if self.failed_version.lock().map(|f| f.as_deref() == Some(card.version.as_str())).unwrap_or(false) {
            return;
        }
        tracing::info!(model = %name, version = %card.version, "new model version on disk");
        if let Err(e) = self.load_locked(&mut current, &name, path).await {
            tracing::warn!(error = %e, model = %name, version = %card.version, "cannot load new model version");
            if let Ok(mut failed) = self.failed_version.lock() {
                *failed = Some(card.version);
            }
        }
    }

    /// Stops the inference thread after it finishes the queued jobs. Call once the server has
    /// stopped and no other handle on the embedder remains.
    pub fn shutdown(self) {
        let Embedder { batcher, thread, .. } = self;
        // The thread ends when the last Batcher handle is gone.
        drop(batcher);
        let _ = thread.join();
    }
}

/// Pre-processes every image of a request for `card`, naming the first bad one.
fn prepare_all(images: &[pb::Image], card: &ModelCard, max_pixels: u64) -> Result<Vec<Vec<f32>>, EmbedderError> {
    images
        .iter()
        .enumerate()
        .map(|(index, image)| {
            let input = image_input(index, image)?;
            preprocess(input, card.input, &card.normalization, max_pixels).map(|p| p.data).map_err(|e| match e {
                e @ ModelError::TooLarge { .. } => EmbedderError::ImageTooLarge { index, reason: e.to_string() },
                e => EmbedderError::InvalidImage { index, reason: e.to_string() },
            })
        })
        .collect()
}

fn image_input(index: usize, image: &pb::Image) -> Result<ImageInput<'_>, EmbedderError> {
    match &image.data {
        Some(pb::image::Data::Encoded(bytes)) => Ok(ImageInput::Encoded(bytes)),
        Some(pb::image::Data::Raw(raw)) => {
            let format = match pb::PixelFormat::try_from(raw.format) {
                Ok(pb::PixelFormat::Rgb8) => PixelFormat::Rgb8,
                Ok(pb::PixelFormat::Bgr8) => PixelFormat::Bgr8,
                Ok(pb::PixelFormat::Gray8) => PixelFormat::Gray8,
                _ => {
                    return Err(EmbedderError::InvalidImage { index, reason: "raw image needs a pixel format".into() });
                }
            };
            Ok(ImageInput::Raw { width: raw.width, height: raw.height, format, pixels: &raw.pixels })
        }
        None => Err(EmbedderError::InvalidImage { index, reason: "no data".into() }),
    }
}
