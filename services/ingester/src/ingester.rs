//! The ingester's domain core: the set of cameras (add, remove, list, push to), the outbox and the
//! delivery worker behind them, and an orderly shutdown that flushes open tracks and delivers what
//! it can before the deadline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Mutex, watch};

use crate::config::{CameraSpec, IngesterConfig};
use crate::delivery::deliver::{Downstream, Outbox};
use crate::detect;
use crate::error::{IngesterError, IngesterResult};
use crate::metrics::IngesterMetrics;
use crate::pipeline::camera::{Camera, CameraStatus, PipelineContext};
use crate::source::SourceSpec;

/// How long a removed or pushing camera may take to flush its open tracks.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Ingester {
    config: Arc<IngesterConfig>,
    ctx: PipelineContext,
    cameras: Mutex<BTreeMap<String, Arc<Camera>>>,
    stop_delivery: watch::Sender<bool>,
    delivery: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Removed cameras finishing their queued frames and open tracks: shutdown waits for them.
    stopping: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Ingester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingester").finish_non_exhaustive()
    }
}

/// Camera ids name folders and metric labels: keep them plain. The first character is a letter
/// or a digit, so that `.` and `..` (and hidden names) can never be one.
pub fn check_camera_id(id: &str) -> IngesterResult<()> {
    let ok = id.len() <= 64
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(IngesterError::invalid(format!(
            "camera id {:?}: 1 to 64 characters of letters, digits, '-', '_' and '.', starting with a letter or digit",
            reid_server::truncated(id, 64)
        )))
    }
}

impl Ingester {
    /// Starts the delivery worker (when there is somewhere to deliver to) and the configured
    /// cameras. `downstream` is `None` when neither an embedder nor an identity service is set.
    pub async fn start(
        config: IngesterConfig,
        downstream: Option<Arc<dyn Downstream>>,
        metrics: IngesterMetrics,
    ) -> anyhow::Result<Self> {
        config.validate()?;
        let config = Arc::new(config);
        let outbox = downstream.as_ref().map(|_| {
            let dropped = metrics.tracklets.with_label_values(&["dropped"]);
            Arc::new(Outbox::new(config.delivery.buffer_tracklets, dropped))
        });
        let (stop_delivery, stop_rx) = watch::channel(false);
        let delivery = match (&outbox, downstream) {
            (Some(outbox), Some(downstream)) => Some(tokio::spawn(crate::delivery::deliver::deliver(
                outbox.clone(),
                downstream,
                config.delivery.clone(),
                metrics.clone(),
                stop_rx,
            ))),
            _ => None,
        };
        let session = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        let ctx =
            PipelineContext { config: Arc::new(config.pipeline()), outbox, metrics, session: format!("{session:x}") };
        let ingester = Self {
            config: config.clone(),
            ctx,
            cameras: Mutex::new(BTreeMap::new()),
            stop_delivery,
            delivery: Mutex::new(delivery),
            stopping: Mutex::default(),
        };
        let mine = |spec: &CameraSpec| config.shard.is_none_or(|s| s.owns(&spec.id));
        if let Some(shard) = config.shard {
            let (owned, total) = (config.cameras.iter().filter(|c| mine(c)).count(), config.cameras.len());
            tracing::info!(index = shard.index, count = shard.count, owned, total, "camera shard");
        }
        for spec in config.cameras.iter().filter(|c| mine(c)).cloned() {
            let id = spec.id.clone();
            ingester.add(spec).await.map_err(|e| anyhow::anyhow!("camera {id} from the config: {e}"))?;
        }
        Ok(ingester)
    }

    pub fn config(&self) -> &IngesterConfig {
        &self.config
    }

    pub fn metrics(&self) -> &IngesterMetrics {
        &self.ctx.metrics
    }

    /// Tracklets waiting for delivery.
    pub fn outbox_len(&self) -> usize {
        self.ctx.outbox.as_ref().map_or(0, |o| o.len())
    }

    /// Tracklets the outbox dropped because it was full.
    pub fn outbox_dropped(&self) -> u64 {
        self.ctx.outbox.as_ref().map_or(0, |o| o.dropped())
    }

    /// Adds a camera named over the API: its source must pass the configured [`SourcePolicy`].
    ///
    /// [`SourcePolicy`]: crate::source::policy::SourcePolicy
    pub async fn add_requested(&self, spec: CameraSpec) -> IngesterResult<CameraStatus> {
        check_camera_id(&spec.id)?;
        self.config.sources.check(&spec.url).await?;
        self.add(spec).await
    }

    /// Adds a camera of the operator's (the config file, the CLI's `--camera`).
    pub async fn add(&self, mut spec: CameraSpec) -> IngesterResult<CameraStatus> {
        check_camera_id(&spec.id)?;
        if !spec.target_fps.is_finite() || spec.target_fps < 0.0 {
            return Err(IngesterError::invalid(format!("target_fps {} must be >= 0", spec.target_fps)));
        }
        let source = SourceSpec::parse(&spec.url)?;
        spec.view.validate().map_err(|e| IngesterError::invalid(e.to_string()))?;
        if spec.detector.is_empty() {
            spec.detector = self.config.default_detector.clone();
        }
        {
            let cameras = self.cameras.lock().await;
            if cameras.contains_key(&spec.id) {
                return Err(IngesterError::CameraExists(spec.id));
            }
            if cameras.len() >= self.config.max_cameras {
                return Err(IngesterError::TooManyCameras(self.config.max_cameras));
            }
        }
        // Loading a detector reads model files: off the async threads, and without holding the
        // camera table (listing and pushing go on meanwhile).
        let (name, detectors) = (spec.detector.clone(), self.config.detectors.clone());
        let detector = tokio::task::spawn_blocking(move || detect::build(&name, &detectors))
            .await
            .map_err(|e| IngesterError::invalid(format!("detector set-up panicked: {e}")))??;
        let mut cameras = self.cameras.lock().await;
        if cameras.contains_key(&spec.id) {
            return Err(IngesterError::CameraExists(spec.id));
        }
        if cameras.len() >= self.config.max_cameras {
            return Err(IngesterError::TooManyCameras(self.config.max_cameras));
        }
        tracing::info!(camera = %spec.id, url = %spec.url, detector = %spec.detector, "camera added");
        let camera = Arc::new(Camera::start(spec.clone(), source, detector, self.ctx.clone()));
        let status = camera.status();
        cameras.insert(spec.id, camera);
        Ok(status)
    }

    /// Removes a camera at once; it finishes its queued frames and flushes its open tracks in the
    /// background (shutdown waits for that).
    pub async fn remove(&self, id: &str) -> IngesterResult<()> {
        let camera = self.cameras.lock().await.remove(id).ok_or_else(|| IngesterError::UnknownCamera(id.into()))?;
        tracing::info!(camera = %id, "camera removed");
        let mut stopping = self.stopping.lock().await;
        stopping.retain(|task| !task.is_finished());
        stopping.push(tokio::task::spawn_blocking(move || camera.stop()));
        Ok(())
    }

    pub async fn list(&self) -> Vec<CameraStatus> {
        self.cameras.lock().await.values().map(|c| c.status()).collect()
    }

    pub async fn camera(&self, id: &str) -> IngesterResult<Arc<Camera>> {
        self.cameras.lock().await.get(id).cloned().ok_or_else(|| IngesterError::UnknownCamera(id.into()))
    }

    /// A push camera that no other client is pushing to; the guard releases it.
    pub async fn push_camera(&self, id: &str) -> IngesterResult<PushGuard> {
        check_camera_id(id)?;
        let camera = self.camera(id).await?;
        if camera.source != SourceSpec::Push {
            return Err(IngesterError::NotAPushCamera(id.into()));
        }
        if camera.pushing.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return Err(IngesterError::AlreadyPushing(id.into()));
        }
        Ok(PushGuard { camera })
    }

    /// Erases tracklets (camera id, track id): their exported folders and any still waiting for
    /// delivery. Returns (exports removed, pending removed).
    pub async fn forget_tracklets(&self, tracklets: Vec<(String, String)>) -> IngesterResult<(u64, u64)> {
        for (camera, track) in &tracklets {
            if camera.len() > 256 || track.len() > 256 {
                return Err(IngesterError::invalid("camera and track ids are at most 256 bytes"));
            }
        }
        let pending =
            self.ctx.outbox.as_ref().map_or(0, |o| {
                o.forget(|t| tracklets.iter().any(|(c, k)| *c == t.camera_id && *k == t.track_id)) as u64
            });
        let Some(root) = self.config.export_dir.clone() else { return Ok((0, pending)) };
        let removed = tokio::task::spawn_blocking(move || {
            tracklets.iter().try_fold(0, |n, (camera, track)| {
                crate::delivery::export::remove_tracklet(&root, camera, track).map(|removed| n + removed)
            })
        })
        .await
        .map_err(|e| IngesterError::invalid(format!("erasure task: {e}")))?
        .map_err(|e| IngesterError::Export(e.to_string()))?;
        tracing::info!(tracklets = removed, pending, "tracklets erased");
        Ok((removed, pending))
    }

    /// Stops every camera (flushing their tracks), then lets delivery drain within its deadline.
    pub async fn shutdown(&self) {
        let cameras: Vec<Arc<Camera>> = std::mem::take(&mut *self.cameras.lock().await).into_values().collect();
        let _ = tokio::task::spawn_blocking(move || {
            for camera in cameras {
                camera.stop();
            }
        })
        .await;
        for task in std::mem::take(&mut *self.stopping.lock().await) {
            let _ = task.await;
        }
        let _ = self.stop_delivery.send(true);
        if let Some(task) = self.delivery.lock().await.take() {
            let _ = task.await;
        }
    }
}

/// Held while a client pushes to a camera.
#[derive(Debug)]
pub struct PushGuard {
    pub camera: Arc<Camera>,
}

impl PushGuard {
    /// Ends the camera's open tracks and waits until their tracklets are out.
    pub async fn flush(&self) {
        let camera = self.camera.clone();
        let _ = tokio::task::spawn_blocking(move || camera.flush(FLUSH_TIMEOUT)).await;
    }
}

impl Drop for PushGuard {
    fn drop(&mut self) {
        self.camera.pushing.store(false, std::sync::atomic::Ordering::Release);
    }
}
