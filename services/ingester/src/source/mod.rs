//! Frame sources behind one seam: video files, streams (RTSP, HTTP(S), MJPEG) and capture devices
//! through OpenCV's `VideoCapture`, folders of images, and cameras that push their frames. Also the
//! bounded frame queue between a camera's reader and its detector, with its drop policy; and
//! [`policy`], what a camera added over the API may read and connect to.

pub mod policy;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, SystemTime};

use opencv::core::Mat;
use opencv::prelude::*;
use opencv::{imgcodecs, videoio};

use crate::error::{IngesterError, IngesterResult};
use crate::frame::Frame;

/// Where a camera's frames come from, parsed from its URL.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// A video file: read to its end, at the pace of processing (nothing is dropped).
    File(PathBuf),
    /// A network stream: live; reconnected when it drops.
    Stream(String),
    /// A local capture device (`device:N`): live.
    Device(i32),
    /// A folder of images, in file-name order.
    Folder(PathBuf),
    /// Frames or detections pushed over gRPC.
    Push,
}

const STREAM_SCHEMES: [&str; 5] = ["rtsp://", "rtsps://", "http://", "https://", "rtmp://"];
/// How long opening or reading a network stream may stall before it counts as disconnected.
const STREAM_TIMEOUT_MS: i32 = 10_000;
const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "bmp", "webp", "tif"];

impl SourceSpec {
    pub fn parse(url: &str) -> IngesterResult<Self> {
        let url = url.trim();
        if url.is_empty() {
            return Err(IngesterError::bad_url(url, "empty"));
        }
        if url == "push" {
            return Ok(SourceSpec::Push);
        }
        if let Some(n) = url.strip_prefix("device:") {
            return n
                .parse::<i32>()
                .ok()
                .filter(|n| *n >= 0)
                .map(SourceSpec::Device)
                .ok_or_else(|| IngesterError::bad_url(url, "device:N needs a device number"));
        }
        if STREAM_SCHEMES.iter().any(|s| url.starts_with(s)) {
            let rest = url.split_once("://").map(|(_, r)| r).unwrap_or("");
            if rest.is_empty() || rest.starts_with('/') {
                return Err(IngesterError::bad_url(url, "no host"));
            }
            return Ok(SourceSpec::Stream(url.into()));
        }
        if url.contains("://") {
            return Err(IngesterError::bad_url(
                url,
                "unsupported scheme (rtsp, http, https, rtmp, device:N, push, or a path)",
            ));
        }
        let path = PathBuf::from(url.strip_prefix("file:").unwrap_or(url));
        if path.is_dir() {
            return Ok(SourceSpec::Folder(path));
        }
        if path.is_file() {
            return Ok(SourceSpec::File(path));
        }
        Err(IngesterError::bad_url(url, "no such file or folder"))
    }

    /// Live sources lose frames when the detector falls behind; recorded ones wait for it.
    pub fn is_live(&self) -> bool {
        matches!(self, SourceSpec::Stream(_) | SourceSpec::Device(_) | SourceSpec::Push)
    }

    /// The pulling source for this spec (`None` for pushed cameras).
    pub fn open_source(&self) -> Option<Box<dyn FrameSource>> {
        match self {
            SourceSpec::File(p) => Some(Box::new(VideoSource::new(VideoTarget::Path(p.clone()), false))),
            SourceSpec::Stream(u) => Some(Box::new(VideoSource::new(VideoTarget::Url(u.clone()), true))),
            SourceSpec::Device(n) => Some(Box::new(VideoSource::new(VideoTarget::Device(*n), true))),
            SourceSpec::Folder(p) => Some(Box::new(FolderSource::new(p.clone()))),
            SourceSpec::Push => None,
        }
    }
}

/// What one read gave.
#[derive(Debug)]
pub enum Read {
    Frame(Frame),
    /// A frame that could not be decoded: counted under `reason` and skipped.
    Skipped(&'static str),
    /// The source is finished (end of a file or folder).
    End,
}

/// A pulling source. Errors mean the connection is lost: the camera reconnects with back-off.
pub trait FrameSource: Send {
    fn open(&mut self) -> Result<(), String>;
    fn read(&mut self) -> Result<Read, String>;
    /// Frames per second the source announces, when it does.
    fn nominal_fps(&self) -> Option<f64>;
}

#[derive(Debug, Clone)]
pub(crate) enum VideoTarget {
    Path(PathBuf),
    Url(String),
    Device(i32),
}

/// Anything OpenCV's `VideoCapture` opens (FFmpeg for files and network streams, V4L2 for devices).
pub(crate) struct VideoSource {
    target: VideoTarget,
    live: bool,
    capture: Option<videoio::VideoCapture>,
    /// Wall-clock time of the first frame of a recording: frame times are this plus the position
    /// in the file, so they keep the video's own timing whatever the processing speed.
    base: SystemTime,
    sequence: u64,
    fps: Option<f64>,
}

impl VideoSource {
    pub(crate) fn new(target: VideoTarget, live: bool) -> Self {
        Self { target, live, capture: None, base: SystemTime::now(), sequence: 0, fps: None }
    }
}

impl FrameSource for VideoSource {
    fn open(&mut self) -> Result<(), String> {
        let capture = match &self.target {
            VideoTarget::Path(p) => videoio::VideoCapture::from_file(p.to_string_lossy().as_ref(), videoio::CAP_ANY),
            // A stalled stream must not hang the reader: FFmpeg gives up after these and the camera
            // reconnects.
            VideoTarget::Url(u) => videoio::VideoCapture::from_file_with_params(
                u,
                videoio::CAP_FFMPEG,
                &opencv::core::Vector::from_slice(&[
                    videoio::CAP_PROP_OPEN_TIMEOUT_MSEC,
                    STREAM_TIMEOUT_MS,
                    videoio::CAP_PROP_READ_TIMEOUT_MSEC,
                    STREAM_TIMEOUT_MS,
                ]),
            ),
            VideoTarget::Device(n) => videoio::VideoCapture::new(*n, videoio::CAP_ANY),
        }
        .map_err(|e| e.message)?;
        if !capture.is_opened().unwrap_or(false) {
            return Err("cannot open".into());
        }
        self.fps = capture.get(videoio::CAP_PROP_FPS).ok().filter(|f| f.is_finite() && *f > 0.0 && *f < 1000.0);
        self.capture = Some(capture);
        Ok(())
    }

    fn read(&mut self) -> Result<Read, String> {
        let capture = self.capture.as_mut().ok_or("not open")?;
        let mut image = Mat::default();
        let ok = capture.read(&mut image).map_err(|e| e.message)?;
        if !ok || image.empty() {
            self.capture = None;
            return if self.live { Err("stream ended".into()) } else { Ok(Read::End) };
        }
        let captured_at = if self.live {
            SystemTime::now()
        } else {
            let ms = capture.get(videoio::CAP_PROP_POS_MSEC).unwrap_or(0.0).max(0.0);
            self.base + Duration::from_secs_f64(ms / 1000.0)
        };
        let sequence = self.sequence;
        self.sequence += 1;
        Ok(Read::Frame(Frame { image, captured_at, sequence }))
    }

    fn nominal_fps(&self) -> Option<f64> {
        self.fps
    }
}

/// A folder of images in file-name order; frame times are 10 per second from the start.
pub(crate) struct FolderSource {
    dir: PathBuf,
    files: VecDeque<PathBuf>,
    base: SystemTime,
    sequence: u64,
}

/// The frame interval assumed for image folders.
pub(crate) const FOLDER_FPS: f64 = 10.0;

impl FolderSource {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self { dir, files: VecDeque::new(), base: SystemTime::now(), sequence: 0 }
    }
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

impl FrameSource for FolderSource {
    fn open(&mut self) -> Result<(), String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(|e| format!("{}: {e}", self.dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_image(p))
            .collect();
        files.sort();
        // Reopening after an error resumes where the folder was left.
        self.files = files.into_iter().skip(self.sequence as usize).collect();
        Ok(())
    }

    fn read(&mut self) -> Result<Read, String> {
        let Some(path) = self.files.pop_front() else { return Ok(Read::End) };
        let sequence = self.sequence;
        self.sequence += 1;
        let image = imgcodecs::imread(&path, imgcodecs::IMREAD_COLOR).unwrap_or_default();
        if image.empty() {
            return Ok(Read::Skipped("corrupt"));
        }
        let captured_at = self.base + Duration::from_secs_f64(sequence as f64 / FOLDER_FPS);
        Ok(Read::Frame(Frame { image, captured_at, sequence }))
    }

    fn nominal_fps(&self) -> Option<f64> {
        Some(FOLDER_FPS)
    }
}

/// What `FrameQueue::push` did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// The queue was full: its oldest frame was dropped to make room.
    DroppedOldest,
    Closed,
}

/// A bounded queue of frames (or pushed detections) between a reader and its detector. Live sources drop the oldest
/// frame when full (fresh frames matter more); recorded ones wait for room.
#[derive(Debug)]
pub(crate) struct FrameQueue<T> {
    state: Mutex<(VecDeque<T>, bool)>,
    ready: Condvar,
    room: Condvar,
    capacity: usize,
    drop_oldest: bool,
}

impl<T> FrameQueue<T> {
    pub(crate) fn new(capacity: usize, drop_oldest: bool) -> Self {
        Self {
            state: Mutex::new((VecDeque::new(), false)),
            ready: Condvar::new(),
            room: Condvar::new(),
            capacity: capacity.max(1),
            drop_oldest,
        }
    }

    pub(crate) fn push(&self, frame: T) -> Pushed {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !self.drop_oldest {
            while state.0.len() >= self.capacity && !state.1 {
                state = self.room.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        }
        if state.1 {
            return Pushed::Closed;
        }
        let mut outcome = Pushed::Queued;
        if state.0.len() >= self.capacity {
            state.0.pop_front();
            outcome = Pushed::DroppedOldest;
        }
        state.0.push_back(frame);
        self.ready.notify_one();
        outcome
    }

    /// The next frame; `None` once the queue is closed and empty.
    pub(crate) fn pop(&self) -> Option<T> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(frame) = state.0.pop_front() {
                self.room.notify_one();
                return Some(frame);
            }
            if state.1 {
                return None;
            }
            state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// No more frames will come; what is queued is still processed.
    pub(crate) fn close(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 = true;
        self.ready.notify_all();
        self.room.notify_all();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0.len()
    }
}

/// A stop flag that threads can sleep on (a back-off ends early when the camera is removed).
#[derive(Debug, Default)]
pub(crate) struct StopSignal {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl StopSignal {
    pub(crate) fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }

    pub(crate) fn is_stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps for `d` or until stopped; true when stopped.
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        let guard = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self.wake.wait_timeout_while(guard, d, |stopped| !*stopped).unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(sequence: u64) -> Frame {
        Frame { image: Mat::default(), captured_at: SystemTime::UNIX_EPOCH, sequence }
    }

    #[test]
    fn urls_parse_to_sources_or_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("clip.avi");
        std::fs::write(&file, b"x").expect("write");
        assert_eq!(SourceSpec::parse("push").ok(), Some(SourceSpec::Push));
        assert_eq!(SourceSpec::parse("device:0").ok(), Some(SourceSpec::Device(0)));
        assert_eq!(
            SourceSpec::parse("rtsp://cam.local:554/stream1").ok(),
            Some(SourceSpec::Stream("rtsp://cam.local:554/stream1".into()))
        );
        assert_eq!(
            SourceSpec::parse(dir.path().to_str().unwrap_or_default()).ok(),
            Some(SourceSpec::Folder(dir.path().into()))
        );
        assert_eq!(SourceSpec::parse(file.to_str().unwrap_or_default()).ok(), Some(SourceSpec::File(file.clone())));
        for bad in ["", "device:x", "device:-1", "rtsp://", "http:///path", "ftp://host/x", "/no/such/file.avi"] {
            assert!(matches!(SourceSpec::parse(bad), Err(IngesterError::BadUrl { .. })), "{bad:?}");
        }
        assert!(SourceSpec::parse("rtsp://h/x").is_ok_and(|s| s.is_live()));
        assert!(!SourceSpec::File(file).is_live());
    }

    #[test]
    fn a_live_queue_drops_its_oldest_frames() {
        let q = FrameQueue::new(2, true);
        assert_eq!(q.push(frame(1)), Pushed::Queued);
        assert_eq!(q.push(frame(2)), Pushed::Queued);
        assert_eq!(q.push(frame(3)), Pushed::DroppedOldest);
        q.close();
        assert_eq!(q.push(frame(4)), Pushed::Closed);
        assert_eq!(q.pop().map(|f: Frame| f.sequence), Some(2));
        assert_eq!(q.pop().map(|f| f.sequence), Some(3));
        assert!(q.pop().is_none());
    }

    #[test]
    fn a_recorded_queue_waits_for_room() {
        let q = std::sync::Arc::new(FrameQueue::new(1, false));
        q.push(frame(1));
        let pusher = {
            let q = q.clone();
            std::thread::spawn(move || q.push(frame(2)))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(q.len(), 1, "the second push waits");
        assert_eq!(q.pop().map(|f: Frame| f.sequence), Some(1));
        assert_eq!(pusher.join().ok(), Some(Pushed::Queued));
        assert_eq!(q.pop().map(|f| f.sequence), Some(2));
    }
}
