//! The tracker: SORT-like association of detections across frames (IoU against a
//! constant-velocity prediction, greedy by overlap, gated by a colour histogram of what each box
//! holds), and for each track the few best crops by quality, so that a person is embedded a
//! handful of times rather than at every frame.

use std::time::SystemTime;

use opencv::core::Mat;
use opencv::prelude::*;
use opencv::{core, imgproc};

use crate::detect::{Detection, Target};
use crate::frame::BBox;
use crate::pipeline::appearance::Appearance;
use crate::pipeline::config::{CropConfig, TrackerConfig};

mod crossing;
mod reattach;

/// A crop cut from one frame for one detection.
#[derive(Debug)]
pub struct TrackedCrop {
    pub image: Mat,
    pub bbox: BBox,
    pub captured_at: SystemTime,
    /// The frame's sequence number in its camera.
    pub frame: u64,
    pub quality: f32,
}

/// A detection with, when it is large enough to be worth keeping, its crop.
#[derive(Debug)]
pub struct Observed {
    pub detection: Detection,
    pub crop: Option<TrackedCrop>,
    /// What the box holds, for telling side-by-side people apart (`None`: not known, matched on
    /// overlap alone).
    pub appearance: Option<Appearance>,
    /// An id the edge device gave this object (`PushDetections`); the tracker then trusts it
    /// instead of matching boxes.
    pub external_id: Option<String>,
}

/// A track that ended (or was cut at `max_tracklet_frames`): what becomes a tracklet.
#[derive(Debug)]
pub struct FinishedTrack {
    pub track_id: String,
    pub crops: Vec<TrackedCrop>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub hits: u32,
}

/// How good a crop is for re-identification, in [0, 1]: large, sharp, of the expected shape,
/// confidently detected and not cut by the frame border.
pub fn crop_quality(crop: &Mat, detection: &Detection, frame_w: i32, frame_h: i32, target: Target) -> f32 {
    let (ref_height, ideal_aspect) = match target {
        Target::Person => (160.0, 2.2),
        Target::Face => (96.0, 1.2),
    };
    let b = &detection.bbox;
    let size = (b.h / ref_height).min(1.0);
    let aspect = (b.h / b.w.max(1.0)) / ideal_aspect;
    let shape = (-1.5 * aspect.ln().abs()).exp();
    let border = if b.touches_border(frame_w, frame_h) { 0.6 } else { 1.0 };
    let sharp = sharpness(crop).unwrap_or(0.0);
    let sharp = sharp / (sharp + 100.0);
    (detection.score.clamp(0.0, 1.0).sqrt() * size * shape * sharp.sqrt() * border).clamp(0.0, 1.0)
}

/// Variance of the Laplacian: low for blurred or featureless crops.
fn sharpness(crop: &Mat) -> opencv::Result<f32> {
    let mut gray = Mat::default();
    imgproc::cvt_color_def(crop, &mut gray, imgproc::COLOR_BGR2GRAY)?;
    let mut lap = Mat::default();
    imgproc::laplacian_def(&gray, &mut lap, core::CV_32F)?;
    let mut mean = Mat::default();
    let mut std = Mat::default();
    core::mean_std_dev_def(&lap, &mut mean, &mut std)?;
    let s = *std.at::<f64>(0)?;
    Ok((s * s) as f32)
}

/// The best `k` crops of a track, at least `min_gap` frames apart.
#[derive(Debug, Default)]
pub struct BestCrops {
    crops: Vec<TrackedCrop>,
}

impl BestCrops {
    pub fn offer(&mut self, crop: TrackedCrop, k: usize, min_gap: u64) {
        if let Some(near) = self.crops.iter_mut().find(|c| c.frame.abs_diff(crop.frame) < min_gap) {
            if crop.quality > near.quality {
                *near = crop;
            }
            return;
        }
        if self.crops.len() < k {
            self.crops.push(crop);
        } else if let Some(worst) = self.crops.iter_mut().min_by(|a, b| a.quality.total_cmp(&b.quality))
            && crop.quality > worst.quality
        {
            *worst = crop;
        }
    }

    pub fn take(&mut self) -> Vec<TrackedCrop> {
        let mut crops = std::mem::take(&mut self.crops);
        crops.sort_by_key(|c| c.frame);
        crops
    }

    pub fn is_empty(&self) -> bool {
        self.crops.is_empty()
    }
}

/// How fast a track's appearance follows its latest detection.
const APPEARANCE_RATE: f32 = 0.2;

#[derive(Debug)]
struct Track {
    id: u64,
    segment: u32,
    external: Option<String>,
    bbox: BBox,
    /// Per-frame motion of the centre. The size is not extrapolated: a detector's box grows and
    /// shrinks by a fifth from one frame to the next as a person is partly hidden, and a size
    /// velocity carried through a few missed frames makes boxes no detection overlaps.
    velocity: (f32, f32),
    hits: u32,
    misses: u32,
    frames: u32,
    /// Where and when its first detection was: where a track that continues a lost one starts.
    first_frame: u64,
    first_box: BBox,
    last_frame: u64,
    /// The running appearance of the detections it took.
    appearance: Option<Appearance>,
    /// Overlapping another confirmed track (`crossing_iou`) at the last frame.
    crossing: bool,
    crops: BestCrops,
    start: SystemTime,
    end: SystemTime,
}

impl Track {
    fn predicted(&self, frame: u64) -> BBox {
        let dt = frame.saturating_sub(self.last_frame) as f32;
        let (vx, vy) = self.velocity;
        let (w, h) = (self.bbox.w, self.bbox.h);
        let (cx, cy) = self.bbox.center();
        BBox::new(cx + vx * dt - w / 2.0, cy + vy * dt - h / 2.0, w, h)
    }

    /// Confirmed (at least `min_hits` detections) and followed by this tracker, not by an edge
    /// device (edge ids are the device's own association): what re-attaching and the cuts where
    /// people cross act on.
    fn confirmed_here(&self, min_hits: u32) -> bool {
        self.hits >= min_hits && self.external.is_none()
    }

    fn update(&mut self, bbox: BBox, appearance: Option<&Appearance>, frame: u64, at: SystemTime) {
        let dt = frame.saturating_sub(self.last_frame).max(1) as f32;
        let (cx0, cy0) = self.bbox.center();
        let (cx1, cy1) = bbox.center();
        let measured = ((cx1 - cx0) / dt, (cy1 - cy0) / dt);
        // Alpha-beta smoothing of the motion: detections jitter by a few pixels each frame.
        let a = 0.5;
        let v = self.velocity;
        self.velocity = (a * measured.0 + (1.0 - a) * v.0, a * measured.1 + (1.0 - a) * v.1);
        self.bbox = bbox;
        Appearance::follow(&mut self.appearance, appearance, APPEARANCE_RATE);
        self.last_frame = frame;
        self.hits += 1;
        self.misses = 0;
        self.end = self.end.max(at);
    }
}

/// One camera's tracker. `session` keeps track ids unique across restarts of the ingester (the
/// identity service treats a repeated camera + track as a retry).
#[derive(Debug)]
pub struct Tracker {
    config: TrackerConfig,
    crops: CropConfig,
    session: String,
    tracks: Vec<Track>,
    /// Confirmed tracks that lost their person less than `reattach_secs` ago, oldest first.
    lost: Vec<Track>,
    next_id: u64,
}

impl Tracker {
    pub fn new(config: TrackerConfig, crops: CropConfig, session: impl Into<String>) -> Self {
        Self { config, crops, session: session.into(), tracks: Vec::new(), lost: Vec::new(), next_id: 1 }
    }

    pub fn active(&self) -> usize {
        self.tracks.len()
    }

    /// The confirmed tracks (at least `min_hits` detections) that a detection of `frame` joined,
    /// with their boxes: what a tracker reports for a frame in a MOTChallenge result.
    pub fn boxes(&self, frame: u64) -> Vec<(u64, BBox)> {
        self.tracks
            .iter()
            .filter(|t| t.last_frame == frame && t.hits >= self.config.min_hits)
            .map(|t| (t.id, t.bbox))
            .collect()
    }

    /// Between detections (a detector run on every Nth frame): the confirmed tracks the last
    /// detections joined, with their boxes moved on by their motion to `frame`.
    pub fn predicted_boxes(&self, frame: u64) -> Vec<(u64, BBox)> {
        self.tracks
            .iter()
            .filter(|t| t.misses == 0 && t.hits >= self.config.min_hits)
            .map(|t| (t.id, t.predicted(frame)))
            .collect()
    }

    /// Feeds one processed frame's detections; returns the tracks that ended with it.
    pub fn update(&mut self, frame: u64, at: SystemTime, observed: Vec<Observed>) -> Vec<FinishedTrack> {
        let mut matched_track = vec![false; self.tracks.len()];
        let mut assignment: Vec<Option<usize>> = vec![None; observed.len()];

        // Edge ids first: they are the edge device's own association.
        for (d, o) in observed.iter().enumerate() {
            if let Some(ext) = &o.external_id
                && let Some(t) = self.tracks.iter().position(|t| t.external.as_deref() == Some(ext.as_str()))
                && !matched_track[t]
            {
                matched_track[t] = true;
                assignment[d] = Some(t);
            }
        }
        // Then IoU against each track's predicted box, best overlaps first; confirmed tracks
        // choose first (SORT's matching cascade), so that a fresh duplicate track on the same
        // person, whose box is newer, does not take the detection from the track that has
        // followed that person for seconds.
        let confirmed = |t: &Track| t.hits >= self.config.min_hits;
        let strong = |o: &Observed| !o.detection.weak;
        for tier in [true, false] {
            let pairs = self.overlaps(frame, &observed, &assignment, &matched_track, self.config.min_iou, |t, o| {
                confirmed(t) == tier && strong(o)
            });
            greedy(pairs, &mut matched_track, &mut assignment);
        }
        // Weak detections go only to the confirmed tracks still unmatched, at a stricter overlap
        // (ByteTrack's second association); the rest of them are dropped.
        let pairs = self.overlaps(frame, &observed, &assignment, &matched_track, self.config.weak_min_iou, |t, o| {
            confirmed(t) && !strong(o)
        });
        greedy(pairs, &mut matched_track, &mut assignment);

        for track in self.tracks.iter_mut() {
            track.frames += 1;
        }
        let mut finished = self.cut_where_crossing(frame, &observed, &assignment);
        let (k, gap) = (self.crops.per_tracklet, self.crops.min_gap_frames);
        for (o, slot) in observed.into_iter().zip(assignment) {
            let t = match slot {
                Some(t) => t,
                None if o.detection.weak => continue,
                None => {
                    self.tracks.push(Track {
                        id: self.next_id,
                        segment: 1,
                        external: o.external_id.clone(),
                        bbox: o.detection.bbox,
                        velocity: (0.0, 0.0),
                        hits: 0,
                        misses: 0,
                        frames: 1,
                        first_frame: frame,
                        first_box: o.detection.bbox,
                        last_frame: frame,
                        appearance: None,
                        crossing: false,
                        crops: BestCrops::default(),
                        start: at,
                        end: at,
                    });
                    self.next_id += 1;
                    matched_track.push(true);
                    self.tracks.len() - 1
                }
            };
            let track = &mut self.tracks[t];
            // Weak detections are often half a person: they carry the track, not its look.
            let look = if o.detection.weak { None } else { o.appearance.as_ref() };
            track.update(o.detection.bbox, look, frame, at);
            if let Some(crop) = o.crop
                && !track.crossing
            {
                track.crops.offer(crop, k, gap);
            }
        }
        let mut i = 0;
        while i < self.tracks.len() {
            if !matched_track[i] {
                self.tracks[i].misses += 1;
            }
            let track = &mut self.tracks[i];
            if track.misses > self.config.max_misses {
                let track = self.tracks.remove(i);
                matched_track.remove(i);
                if self.config.reattaches() && track.confirmed_here(self.config.min_hits) {
                    self.lost.push(track);
                } else {
                    finished.extend(self.finish(track));
                }
                continue;
            }
            if self.config.max_tracklet_frames > 0 && track.frames >= self.config.max_tracklet_frames {
                let segment = self.cut(i);
                finished.extend(segment);
            }
            i += 1;
        }
        if self.config.reattaches() {
            self.reattach(frame);
            finished.extend(self.expire(at));
        }
        finished
    }

    /// The (score, track, detection) pairs still unassigned that `eligible` accepts, that overlap
    /// by at least `min_iou`, the track's box predicted to `frame`, and whose appearances are at
    /// least `min_appearance` alike (when both are known). The score is the overlap, times the
    /// appearance similarity when the gate is on.
    fn overlaps(
        &self,
        frame: u64,
        observed: &[Observed],
        assignment: &[Option<usize>],
        matched_track: &[bool],
        min_iou: f32,
        eligible: impl Fn(&Track, &Observed) -> bool,
    ) -> Vec<(f32, usize, usize)> {
        let mut pairs = Vec::new();
        for (d, o) in observed.iter().enumerate() {
            if assignment[d].is_some() || o.external_id.is_some() {
                continue;
            }
            for (t, track) in self.tracks.iter().enumerate() {
                if matched_track[t] || track.external.is_some() || !eligible(track, o) {
                    continue;
                }
                let iou = track.predicted(frame).iou(&o.detection.bbox);
                if iou < min_iou {
                    continue;
                }
                let alike = match (&track.appearance, &o.appearance) {
                    (Some(a), Some(b)) if self.config.min_appearance > 0.0 => a.similarity(b),
                    _ => 1.0,
                };
                if alike >= self.config.min_appearance {
                    pairs.push((iou * alike, t, d));
                }
            }
        }
        pairs
    }

    /// Ends every track (end of stream, camera removed, shutdown).
    pub fn flush(&mut self) -> Vec<FinishedTrack> {
        let mut tracks = std::mem::take(&mut self.lost);
        tracks.append(&mut self.tracks);
        tracks.into_iter().filter_map(|t| self.finish(t)).collect()
    }

    fn track_id(&self, track: &Track) -> String {
        let base = match &track.external {
            Some(ext) => format!("{}-edge-{ext}", self.session),
            None => format!("{}-{}", self.session, track.id),
        };
        if track.segment > 1 { format!("{base}.{}", track.segment) } else { base }
    }

    fn finish(&self, mut track: Track) -> Option<FinishedTrack> {
        // Short-lived tracks are mostly false detections; edge-tracked objects are trusted.
        let confirmed = track.hits >= self.config.min_hits || track.external.is_some();
        if !confirmed || track.crops.is_empty() {
            return None;
        }
        Some(FinishedTrack {
            track_id: self.track_id(&track),
            crops: track.crops.take(),
            start: track.start,
            end: track.end,
            hits: track.hits,
        })
    }

    /// Emits what track `i` has so far as one tracklet and goes on with a new segment.
    fn cut(&mut self, i: usize) -> Option<FinishedTrack> {
        let id = self.track_id(&self.tracks[i]);
        let min_hits = self.config.min_hits;
        let track = &mut self.tracks[i];
        let out = (track.hits >= min_hits && !track.crops.is_empty()).then(|| FinishedTrack {
            track_id: id,
            crops: track.crops.take(),
            start: track.start,
            end: track.end,
            hits: track.hits,
        });
        track.segment += 1;
        track.frames = 0;
        track.start = track.end;
        out
    }
}

/// Assigns detections to tracks, the largest overlaps first.
fn greedy(mut pairs: Vec<(f32, usize, usize)>, matched_track: &mut [bool], assignment: &mut [Option<usize>]) {
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, t, d) in pairs {
        if !matched_track[t] && assignment[d].is_none() {
            matched_track[t] = true;
            assignment[d] = Some(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn crop(frame: u64, quality: f32) -> TrackedCrop {
        TrackedCrop {
            image: Mat::default(),
            bbox: BBox::default(),
            captured_at: SystemTime::UNIX_EPOCH,
            frame,
            quality,
        }
    }

    pub(super) fn seen(x: f32, y: f32, frame: u64, quality: f32) -> Observed {
        let bbox = BBox::new(x, y, 40.0, 100.0);
        Observed {
            detection: Detection::new(bbox, 0.9),
            crop: Some(TrackedCrop { bbox, ..crop(frame, quality) }),
            appearance: None,
            external_id: None,
        }
    }

    pub(super) fn at(frame: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(frame * 100)
    }

    pub(super) fn tracker() -> Tracker {
        tracker_with(0.0)
    }

    pub(super) fn tracker_with(min_appearance: f32) -> Tracker {
        let config = TrackerConfig {
            min_iou: 0.3,
            weak_min_iou: 0.5,
            min_hits: 3,
            max_misses: 2,
            max_tracklet_frames: 0,
            min_appearance,
            // Matching alone: one track per person, not cut where people cross.
            crossing_iou: 0.0,
            ..TrackerConfig::default()
        };
        Tracker::new(config, CropConfig { per_tracklet: 3, min_gap_frames: 2, ..CropConfig::default() }, "s")
    }

    #[test]
    fn the_appearance_gate_keeps_a_track_off_the_person_beside_it() {
        use crate::pipeline::appearance::tests::look;
        let (red, blue) = (look([30.0, 30.0, 200.0]), look([200.0, 60.0, 30.0]));
        let dressed = |x: f32, f: u64, appearance: &Appearance| Observed {
            appearance: Some(appearance.clone()),
            ..seen(x, 50.0, f, 0.5)
        };
        // The person in red walks alone for four frames; then, hidden for a frame, the person in
        // blue beside them (15 px on) is the only box near their track.
        let run = |min_appearance: f32| {
            let mut t = tracker_with(min_appearance);
            for f in 0..4u64 {
                t.update(f, at(f), vec![dressed(100.0 + 5.0 * f as f32, f, &red)]);
            }
            let red_track = t.boxes(3)[0].0;
            t.update(4, at(4), vec![dressed(135.0, 4, &blue)]);
            (red_track, t.tracks.iter().find(|tr| tr.last_frame == 4).map(|tr| tr.id))
        };
        let (red_track, took_blue) = run(0.0);
        assert_eq!(took_blue, Some(red_track), "on overlap alone the red track swaps to the person in blue");
        let (red_track, took_blue) = run(0.5);
        assert_ne!(took_blue, Some(red_track), "gated by appearance the person in blue starts a track of their own");
    }

    #[test]
    fn best_crops_keeps_the_best_spread_out_crops() {
        let mut best = BestCrops::default();
        for (frame, q) in [(0, 0.5), (1, 0.9), (4, 0.2), (8, 0.3), (12, 0.8)] {
            best.offer(crop(frame, q), 3, 2);
        }
        // Frame 1 replaced its neighbour 0; frame 12 replaced the worst (frame 4).
        let kept: Vec<(u64, f32)> = best.take().iter().map(|c| (c.frame, c.quality)).collect();
        assert_eq!(kept, vec![(1, 0.9), (8, 0.3), (12, 0.8)]);
    }

    #[test]
    fn between_detections_confirmed_tracks_move_on_by_their_motion() {
        let mut t = tracker();
        // Detected on every second frame, walking 10 px per frame to the right.
        for f in (0..8u64).step_by(2) {
            t.update(f, at(f), vec![seen(100.0 + 10.0 * f as f32, 50.0, f, 0.5)]);
        }
        let predicted = t.predicted_boxes(7);
        assert_eq!(predicted.len(), 1);
        let (x, y) = (predicted[0].1.x, predicted[0].1.y);
        // Seen at x 160 on frame 6; one frame on, about 10 px further.
        assert!((x - 170.0).abs() < 2.0 && (y - 50.0).abs() < 1.0, "{:?}", predicted[0].1);
        // Once it is missed, it is no longer reported between detections.
        t.update(8, at(8), vec![]);
        assert!(t.predicted_boxes(9).is_empty());
        // An unconfirmed track (fewer than min_hits detections) is never reported.
        let mut fresh = tracker();
        fresh.update(0, at(0), vec![seen(0.0, 0.0, 0, 0.5)]);
        assert!(fresh.predicted_boxes(1).is_empty());
    }

    #[test]
    fn tracks_end_after_misses_and_one_frame_blips_are_dropped() {
        let mut t = tracker();
        for f in 0..5u64 {
            assert!(t.update(f, at(f), vec![seen(100.0 + 5.0 * f as f32, 50.0, f, 0.5)]).is_empty());
        }
        // A one-frame false detection far away.
        assert!(t.update(5, at(5), vec![seen(600.0, 300.0, 5, 0.5)]).is_empty());
        let mut ended = Vec::new();
        for f in 6..10u64 {
            ended.extend(t.update(f, at(f), vec![]));
        }
        assert_eq!(ended.len(), 1, "the person's track ends; the blip is discarded");
        assert_eq!(ended[0].hits, 5);
        assert_eq!(ended[0].start, at(0));
        assert_eq!(ended[0].end, at(4));
        assert!(ended[0].track_id.starts_with("s-"));
        assert_eq!(t.active(), 0);
    }

    #[test]
    fn weak_detections_carry_confirmed_tracks_and_start_none() {
        let weak = |x: f32, f: u64| {
            let mut o = seen(x, 50.0, f, 0.5);
            o.detection.weak = true;
            o
        };
        let mut t = tracker();
        for f in 0..4u64 {
            t.update(f, at(f), vec![seen(100.0 + 5.0 * f as f32, 50.0, f, 0.5)]);
        }
        // Half hidden for four frames (past max_misses 2): only weak boxes, on the track and elsewhere.
        for f in 4..8u64 {
            assert!(t.update(f, at(f), vec![weak(100.0 + 5.0 * f as f32, f), weak(500.0, f)]).is_empty());
        }
        assert_eq!(t.active(), 1, "no track started from a weak detection");
        for f in 8..10u64 {
            t.update(f, at(f), vec![seen(100.0 + 5.0 * f as f32, 50.0, f, 0.5)]);
        }
        let done = t.flush();
        assert_eq!(done.len(), 1, "one track through the occlusion: {done:?}");
        assert_eq!(done[0].hits, 10);
        // Weak boxes alone never confirm a track.
        let mut fresh = tracker();
        for f in 0..5u64 {
            fresh.update(f, at(f), vec![weak(100.0, f)]);
        }
        assert!(fresh.flush().is_empty());
    }

    #[test]
    fn a_confirmed_track_keeps_its_person_against_a_duplicate_box() {
        let mut t = tracker();
        for f in 0..5u64 {
            t.update(f, at(f), vec![seen(100.0 + 10.0 * f as f32, 50.0, f, 0.5)]);
        }
        // The detector puts a second, offset box on the person (a duplicate NMS kept) for two
        // frames; then only the offset one is seen, which overlaps the duplicate more.
        for f in 5..7u64 {
            let x = 100.0 + 10.0 * f as f32;
            t.update(f, at(f), vec![seen(x, 50.0, f, 0.5), seen(x + 14.0, 50.0, f, 0.5)]);
        }
        for f in 7..12u64 {
            t.update(f, at(f), vec![seen(114.0 + 10.0 * f as f32, 50.0, f, 0.5)]);
        }
        let done = t.flush();
        let long: Vec<u32> = done.iter().map(|d| d.hits).filter(|h| *h >= 3).collect();
        assert_eq!(long, vec![12], "the confirmed track takes the box; the duplicate dies: {done:?}");
    }

    #[test]
    fn long_tracks_are_cut_into_tracklets() {
        let mut t = Tracker::new(
            TrackerConfig {
                min_iou: 0.3,
                weak_min_iou: 0.5,
                min_hits: 2,
                max_misses: 2,
                max_tracklet_frames: 10,
                min_appearance: 0.0,
                ..TrackerConfig::default()
            },
            CropConfig { per_tracklet: 2, min_gap_frames: 1, ..CropConfig::default() },
            "s",
        );
        let mut ended = Vec::new();
        for f in 0..25u64 {
            ended.extend(t.update(f, at(f), vec![seen(100.0, 50.0, f, 0.5)]));
        }
        ended.extend(t.flush());
        let ids: Vec<&str> = ended.iter().map(|f| f.track_id.as_str()).collect();
        assert_eq!(ids, vec!["s-1", "s-1.2", "s-1.3"]);
    }

    #[test]
    fn edge_track_ids_are_trusted() {
        let mut t = tracker();
        for f in 0..3u64 {
            // The same edge id jumps across the frame: IoU alone would start new tracks.
            let mut o = seen(100.0 + 200.0 * f as f32, 50.0, f, 0.5);
            o.external_id = Some("7".into());
            t.update(f, at(f), vec![o]);
        }
        let done = t.flush();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].track_id, "s-edge-7");
        assert_eq!(done[0].hits, 3);
    }
}
