//! One camera: a reader thread that pulls frames from its source (reconnecting with back-off when
//! a live source drops), a bounded queue, and a processing thread that samples, detects, tracks and
//! emits finished tracklets. Cameras share nothing but the outbox, so a slow or broken camera never
//! holds up another.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use opencv::core::Mat;
use opencv::prelude::*;

use crate::delivery::deliver::{EncodedCrop, Outbox, Tracklet, backoff};
use crate::detect::{Detection, Detector, Target};
use crate::frame::{Frame, encode_crop};
use crate::metrics::IngesterMetrics;
use crate::pipeline::appearance::Appearance;
use crate::pipeline::config::{CameraSpec, CropConfig, PipelineConfig, ReconnectConfig};
use crate::pipeline::track::{FinishedTrack, Observed, TrackedCrop, Tracker, crop_quality};
use crate::pipeline::view::ViewError;
use crate::source::{FrameQueue, FrameSource, Pushed, Read, SourceSpec, StopSignal};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CameraState {
    Connecting = 1,
    Running = 2,
    Reconnecting = 3,
    Finished = 4,
    Failed = 5,
}

impl CameraState {
    fn from_u8(v: u8) -> Self {
        match v {
            2 => Self::Running,
            3 => Self::Reconnecting,
            4 => Self::Finished,
            5 => Self::Failed,
            _ => Self::Connecting,
        }
    }
}

/// Frames per second over the last couple of seconds.
#[derive(Debug)]
struct Rate {
    since: Instant,
    count: u64,
    fps: f32,
}

impl Rate {
    const WINDOW: Duration = Duration::from_secs(2);

    fn new() -> Self {
        Self { since: Instant::now(), count: 0, fps: 0.0 }
    }

    fn tick(&mut self) {
        self.count += 1;
        let elapsed = self.since.elapsed();
        if elapsed >= Self::WINDOW {
            self.fps = (self.count as f64 / elapsed.as_secs_f64()) as f32;
            self.count = 0;
            self.since = Instant::now();
        }
    }

    fn current(&self) -> f32 {
        // A source that stopped sending reads 0, not its last rate.
        if self.since.elapsed() > 2 * Self::WINDOW { 0.0 } else { self.fps }
    }
}

/// What `ListCameras` reports of a camera.
#[derive(Debug)]
pub struct CameraStats {
    state: AtomicU8,
    frames_processed: AtomicU64,
    drops: Mutex<BTreeMap<&'static str, u64>>,
    tracklets: AtomicU64,
    reconnects: AtomicU32,
    /// The reader reached the end of a file or folder.
    source_ended: AtomicBool,
    last_error: Mutex<String>,
    input_rate: Mutex<Rate>,
    processed_rate: Mutex<Rate>,
}

/// What a camera has done so far, counted: what a push stream reports as the difference of two.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub frames_processed: u64,
    /// Frames the full queue of a live camera dropped for newer ones.
    pub frames_dropped: u64,
    pub tracklets: u64,
}

impl Counts {
    /// What was done between `before` and these counts.
    pub fn since(self, before: Counts) -> Counts {
        Counts {
            frames_processed: self.frames_processed.saturating_sub(before.frames_processed),
            frames_dropped: self.frames_dropped.saturating_sub(before.frames_dropped),
            tracklets: self.tracklets.saturating_sub(before.tracklets),
        }
    }
}

/// A snapshot of a camera's status.
#[derive(Debug, Clone)]
pub struct CameraStatus {
    pub spec: CameraSpec,
    pub state: CameraState,
    pub input_fps: f32,
    pub processed_fps: f32,
    pub frames_processed: u64,
    pub frames_dropped: BTreeMap<&'static str, u64>,
    pub tracklets_emitted: u64,
    pub last_error: String,
    pub reconnects: u32,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl CameraStats {
    fn new() -> Self {
        Self {
            state: AtomicU8::new(CameraState::Connecting as u8),
            frames_processed: AtomicU64::new(0),
            drops: Mutex::new(BTreeMap::new()),
            tracklets: AtomicU64::new(0),
            reconnects: AtomicU32::new(0),
            source_ended: AtomicBool::new(false),
            last_error: Mutex::new(String::new()),
            input_rate: Mutex::new(Rate::new()),
            processed_rate: Mutex::new(Rate::new()),
        }
    }

    pub fn state(&self) -> CameraState {
        CameraState::from_u8(self.state.load(Ordering::Relaxed))
    }

    fn set_state(&self, s: CameraState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    pub fn dropped(&self, reason: &str) -> u64 {
        lock(&self.drops).get(reason).copied().unwrap_or(0)
    }

    pub fn counts(&self) -> Counts {
        Counts {
            frames_processed: self.frames_processed.load(Ordering::Relaxed),
            frames_dropped: self.dropped("queue_full"),
            tracklets: self.tracklets.load(Ordering::Relaxed),
        }
    }

    fn error(&self, e: impl Into<String>) {
        *lock(&self.last_error) = e.into();
    }

    fn frame_in(&self) {
        lock(&self.input_rate).tick();
    }
}

/// What every camera's threads share.
#[derive(Debug, Clone)]
pub struct PipelineContext {
    pub config: Arc<PipelineConfig>,
    pub outbox: Option<Arc<Outbox>>,
    pub metrics: IngesterMetrics,
    /// Prefix of this process's track ids.
    pub session: String,
}

/// Work for a camera's processing thread.
#[derive(Debug)]
pub enum Work {
    Frame(Frame),
    /// Crops cut at the edge (`PushDetections`): no detector runs.
    Detections {
        captured_at: SystemTime,
        items: Vec<(Detection, Mat, Option<String>)>,
    },
    /// End every open track now (a pushing client went away); the sender hears when it is done.
    Flush(Option<std::sync::mpsc::Sender<()>>),
}

/// A running camera.
pub struct Camera {
    pub spec: CameraSpec,
    pub source: SourceSpec,
    pub stats: Arc<CameraStats>,
    stop: Arc<StopSignal>,
    queue: Arc<FrameQueue<Work>>,
    processor: Mutex<Option<JoinHandle<()>>>,
    /// A client is pushing to this camera now.
    pub pushing: AtomicBool,
    metrics: IngesterMetrics,
}

impl std::fmt::Debug for Camera {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Camera").field("spec", &self.spec).finish()
    }
}

impl Camera {
    /// Starts the camera's threads.
    pub fn start(spec: CameraSpec, source: SourceSpec, detector: Box<dyn Detector>, ctx: PipelineContext) -> Self {
        let stats = Arc::new(CameraStats::new());
        let stop = Arc::new(StopSignal::default());
        let queue = Arc::new(FrameQueue::new(ctx.config.frame_queue, source.is_live()));
        if let Some(mut reader) = source.open_source() {
            let read = ReadLoop {
                camera: spec.id.clone(),
                live: source.is_live(),
                reconnect: ctx.config.reconnect.clone(),
                stats: stats.clone(),
                stop: stop.clone(),
                queue: queue.clone(),
                metrics: ctx.metrics.clone(),
            };
            let failed = stats.clone();
            let spawned = std::thread::Builder::new().name(format!("cam-{}-read", spec.id)).spawn(move || {
                read.run(reader.as_mut());
                read.queue.close();
            });
            if let Err(e) = spawned {
                failed.error(format!("cannot start reader thread: {e}"));
                failed.set_state(CameraState::Failed);
            }
        } else {
            stats.set_state(CameraState::Running);
        }
        let processor = {
            let (stats, queue, spec) = (stats.clone(), queue.clone(), spec.clone());
            let ctx = ctx.clone();
            std::thread::Builder::new()
                .name(format!("cam-{}-proc", spec.id))
                .spawn(move || process_loop(&spec, detector, &ctx, &stats, &queue))
        };
        let processor = match processor {
            Ok(handle) => Some(handle),
            Err(e) => {
                stats.error(format!("cannot start processing thread: {e}"));
                stats.set_state(CameraState::Failed);
                stop.stop();
                queue.close();
                None
            }
        };
        Self {
            spec,
            source,
            stats,
            stop,
            queue,
            processor: Mutex::new(processor),
            pushing: AtomicBool::new(false),
            metrics: ctx.metrics,
        }
    }

    /// Queues pushed work; counts what the live queue had to drop for it.
    pub fn push(&self, work: Work) -> bool {
        if matches!(work, Work::Frame(_)) {
            self.stats.frame_in();
        }
        match self.queue.push(work) {
            Pushed::Queued => true,
            Pushed::DroppedOldest => {
                count_drop(&self.spec.id, &self.stats, &self.metrics, "queue_full");
                true
            }
            Pushed::Closed => false,
        }
    }

    /// Counts a frame that was refused before it reached the queue (undecodable, too large...).
    pub fn refuse(&self, reason: &'static str, error: &str) {
        self.stats.frame_in();
        self.stats.error(error);
        count_drop(&self.spec.id, &self.stats, &self.metrics, reason);
    }

    pub fn status(&self) -> CameraStatus {
        let s = &self.stats;
        CameraStatus {
            spec: self.spec.clone(),
            state: s.state(),
            input_fps: lock(&s.input_rate).current(),
            processed_fps: lock(&s.processed_rate).current(),
            frames_processed: s.frames_processed.load(Ordering::Relaxed),
            frames_dropped: lock(&s.drops).clone(),
            tracklets_emitted: s.tracklets.load(Ordering::Relaxed),
            last_error: lock(&s.last_error).clone(),
            reconnects: s.reconnects.load(Ordering::Relaxed),
        }
    }

    /// Stops reading, processes what is queued, ends every open track (its tracklets go out) and
    /// waits for the processing thread. A reader blocked inside a stalled stream is left to time out.
    pub fn stop(&self) {
        self.stop.stop();
        self.queue.close();
        if let Some(p) = lock(&self.processor).take() {
            let _ = p.join();
        }
    }

    /// Ends the open tracks once everything queued before is processed, and waits (at most
    /// `timeout`) until their tracklets are out.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (tx, rx) = std::sync::mpsc::channel();
        self.queue.push(Work::Flush(Some(tx))) == Pushed::Queued && rx.recv_timeout(timeout).is_ok()
    }

    /// Waits until the reader is done with its source (a finished file), at most `timeout`.
    pub fn wait_finished(&self, timeout: Duration) -> CameraState {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.stats.state();
            let drained = lock(&self.processor).as_ref().is_none_or(|p| p.is_finished());
            if (matches!(state, CameraState::Finished | CameraState::Failed) && drained) || Instant::now() >= deadline {
                return state;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn count_drop(camera: &str, stats: &CameraStats, metrics: &IngesterMetrics, reason: &'static str) {
    *lock(&stats.drops).entry(reason).or_insert(0) += 1;
    metrics.frames.with_label_values(&[camera, reason]).inc();
}

/// A camera's reader thread: what it reads from and feeds, and how it reconnects.
struct ReadLoop {
    camera: String,
    live: bool,
    reconnect: ReconnectConfig,
    stats: Arc<CameraStats>,
    stop: Arc<StopSignal>,
    queue: Arc<FrameQueue<Work>>,
    metrics: IngesterMetrics,
}

impl ReadLoop {
    /// Opens `source` (again after a failure, with back-off, for live sources) and queues its
    /// frames until the source ends, fails for good or the camera stops.
    fn run(&self, source: &mut dyn FrameSource) {
        let ReadLoop { camera: id, live, reconnect, stats, stop, queue, metrics } = self;
        let (id, live) = (id.as_str(), *live);
        let mut failures: u32 = 0;
        'connect: while !stop.is_stopped() {
            if let Err(e) = source.open() {
                failures += 1;
                stats.error(format!("open: {e}"));
                tracing::warn!(camera = %id, error = %e, attempt = failures, "cannot open source");
                if !live || (reconnect.max_attempts > 0 && failures >= reconnect.max_attempts) {
                    stats.set_state(CameraState::Failed);
                    return;
                }
                stats.set_state(if stats.reconnects.load(Ordering::Relaxed) > 0 || failures > 1 {
                    CameraState::Reconnecting
                } else {
                    CameraState::Connecting
                });
                if stop.sleep(backoff(reconnect.initial, reconnect.max, failures)) {
                    return;
                }
                continue;
            }
            if failures > 0 || stats.state() == CameraState::Reconnecting {
                tracing::info!(camera = %id, "source reconnected");
            }
            stats.set_state(CameraState::Running);
            loop {
                if stop.is_stopped() {
                    return;
                }
                match source.read() {
                    Ok(Read::Frame(frame)) => {
                        stats.frame_in();
                        match queue.push(Work::Frame(frame)) {
                            Pushed::Queued => {}
                            Pushed::DroppedOldest => count_drop(id, stats, metrics, "queue_full"),
                            Pushed::Closed => return,
                        }
                    }
                    Ok(Read::Skipped(reason)) => {
                        stats.frame_in();
                        count_drop(id, stats, metrics, reason);
                    }
                    Ok(Read::End) => {
                        // Finished once the processing thread has drained the queue and flushed.
                        stats.source_ended.store(true, Ordering::Release);
                        return;
                    }
                    Err(e) => {
                        stats.error(format!("read: {e}"));
                        stats.reconnects.fetch_add(1, Ordering::Relaxed);
                        metrics.reconnects.with_label_values(&[id]).inc();
                        stats.set_state(CameraState::Reconnecting);
                        tracing::warn!(camera = %id, error = %e, "source lost; reconnecting");
                        failures = 1;
                        if stop.sleep(backoff(reconnect.initial, reconnect.max, failures)) {
                            return;
                        }
                        continue 'connect;
                    }
                }
            }
        }
    }
}

/// Keeps frames at a target rate, by their capture times.
#[derive(Debug)]
struct Sampler {
    period: Option<Duration>,
    next: Option<SystemTime>,
}

impl Sampler {
    fn new(target_fps: f32) -> Self {
        let period = (target_fps > 0.0).then(|| Duration::from_secs_f64(1.0 / f64::from(target_fps)));
        Self { period, next: None }
    }

    fn take(&mut self, at: SystemTime) -> bool {
        let Some(period) = self.period else { return true };
        match self.next {
            Some(next) if at < next => false,
            Some(next) => {
                // Stay on the grid unless the source jumped ahead (a reconnect, a stall).
                let behind = at.duration_since(next).unwrap_or_default();
                self.next = Some(if behind < period { next + period } else { at + period });
                true
            }
            None => {
                self.next = Some(at + period);
                true
            }
        }
    }
}

fn process_loop(
    spec: &CameraSpec,
    mut detector: Box<dyn Detector>,
    ctx: &PipelineContext,
    stats: &CameraStats,
    queue: &FrameQueue<Work>,
) {
    let config = &ctx.config;
    let mut tracker = Tracker::new(config.tracker.clone(), config.crops.clone(), ctx.session.clone());
    let mut sampler = Sampler::new(spec.target_fps);
    let target = detector.target();
    let mut pushed_sequence = 0u64;
    while let Some(work) = queue.pop() {
        let finished = match work {
            Work::Frame(frame) if !sampler.take(frame.captured_at) => Vec::new(),
            Work::Frame(frame) => {
                let frame = match spec.view.apply(frame, config.max_frame_pixels) {
                    Ok(frame) => frame,
                    Err(e) => {
                        stats.error(format!("view: {e}"));
                        let reason = if matches!(e, ViewError::TooLarge { .. }) { "too_large" } else { "view" };
                        count_drop(&spec.id, stats, &ctx.metrics, reason);
                        continue;
                    }
                };
                let started = Instant::now();
                let detected = detector.detect(&frame.image);
                ctx.metrics
                    .detect_seconds
                    .with_label_values(&[&spec.detector])
                    .observe(started.elapsed().as_secs_f64());
                match detected {
                    Ok(detections) => {
                        let observed =
                            cut_crops(&frame, detections, &config.crops, target, config.tracker.uses_appearance());
                        stats.frames_processed.fetch_add(1, Ordering::Relaxed);
                        lock(&stats.processed_rate).tick();
                        ctx.metrics.frames.with_label_values(&[&spec.id, "processed"]).inc();
                        tracker.update(frame.sequence, frame.captured_at, observed)
                    }
                    Err(e) => {
                        stats.error(format!("detector: {}", e.message));
                        count_drop(&spec.id, stats, &ctx.metrics, "detector_error");
                        Vec::new()
                    }
                }
            }
            Work::Detections { captured_at, items } => {
                pushed_sequence += 1;
                let observed = items
                    .into_iter()
                    .map(|(detection, crop, external_id)| {
                        let quality = crop_quality(&crop, &detection, i32::MAX, i32::MAX, target);
                        let appearance = config.tracker.uses_appearance().then(|| Appearance::of_crop(&crop)).flatten();
                        let crop = (detection.bbox.h >= config.crops.min_height as f32).then(|| TrackedCrop {
                            image: crop,
                            bbox: detection.bbox,
                            captured_at,
                            frame: pushed_sequence,
                            quality,
                        });
                        Observed { detection, crop, appearance, external_id }
                    })
                    .collect();
                tracker.update(pushed_sequence, captured_at, observed)
            }
            Work::Flush(done) => {
                emit(spec, tracker.flush(), ctx, stats);
                if let Some(done) = done {
                    let _ = done.send(());
                }
                Vec::new()
            }
        };
        emit(spec, finished, ctx, stats);
    }
    let rest = tracker.flush();
    emit(spec, rest, ctx, stats);
    if stats.source_ended.load(Ordering::Acquire) {
        stats.set_state(CameraState::Finished);
    }
}

/// Each detection with its crop, when it is large enough to keep, and its appearance when the
/// tracker `describe`s people by it.
fn cut_crops(
    frame: &Frame,
    detections: Vec<Detection>,
    crops: &CropConfig,
    target: Target,
    describe: bool,
) -> Vec<Observed> {
    let (w, h) = (frame.image.cols(), frame.image.rows());
    detections
        .into_iter()
        .map(|detection| {
            let cut = || match &detection.landmarks {
                Some(points) => crate::detect::mtcnn::align(&frame.image, points, crops.face_size).ok(),
                None => detection
                    .bbox
                    .to_rect(crops.padding, w, h)
                    .and_then(|rect| Mat::roi(&frame.image, rect).and_then(|m| m.try_clone()).ok()),
            };
            let keep = detection.bbox.h >= crops.min_height as f32 && !detection.weak;
            let crop = keep.then(cut).flatten().map(|image| {
                let quality = crop_quality(&image, &detection, w, h, target);
                TrackedCrop {
                    image,
                    bbox: detection.bbox,
                    captured_at: frame.captured_at,
                    frame: frame.sequence,
                    quality,
                }
            });
            let appearance = describe.then(|| Appearance::of_box(&frame.image, &detection.bbox)).flatten();
            Observed { detection, crop, appearance, external_id: None }
        })
        .collect()
}

fn emit(spec: &CameraSpec, finished: Vec<FinishedTrack>, ctx: &PipelineContext, stats: &CameraStats) {
    for track in finished {
        let crops: Vec<EncodedCrop> = track
            .crops
            .iter()
            .filter_map(|c| match encode_crop(&c.image, ctx.config.crops.max_pixels, ctx.config.crops.jpeg_quality) {
                Ok(jpeg) => Some(EncodedCrop {
                    jpeg,
                    bbox: c.bbox,
                    captured_at: c.captured_at,
                    frame: c.frame,
                    quality: c.quality,
                }),
                Err(e) => {
                    tracing::warn!(camera = %spec.id, error = %e.message, "cannot encode a crop");
                    None
                }
            })
            .collect();
        if crops.is_empty() {
            continue;
        }
        let tracklet = Tracklet {
            camera_id: spec.id.clone(),
            track_id: track.track_id,
            crops,
            start: track.start,
            end: track.end,
        };
        stats.tracklets.fetch_add(1, Ordering::Relaxed);
        ctx.metrics.tracklets.with_label_values(&["emitted"]).inc();
        if let Some(dir) = &ctx.config.export_dir
            && let Err(e) = crate::delivery::export::write_tracklet(dir, &tracklet)
        {
            tracing::warn!(camera = %spec.id, error = %e, "cannot export a tracklet");
        }
        if let Some(outbox) = &ctx.outbox
            && let Some(lost) = outbox.submit(tracklet)
        {
            tracing::warn!(camera = %lost.camera_id, track = %lost.track_id, "outbox full: dropped the oldest tracklet");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_keeps_the_target_rate() {
        let mut s = Sampler::new(10.0);
        let t0 = SystemTime::UNIX_EPOCH;
        // A 25 fps source for two seconds.
        let kept = (0..50).filter(|i| s.take(t0 + Duration::from_millis(40 * i))).count();
        assert!((19..=21).contains(&kept), "{kept} of 50 frames kept at 10 fps");
        let mut all = Sampler::new(0.0);
        assert!((0..5).all(|i| all.take(t0 + Duration::from_millis(i))));
    }
}
