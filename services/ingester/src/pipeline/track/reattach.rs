//! Re-attaching (`tracker.reattach_secs`): a track that lost its person is continued by a new
//! track that starts near where it was lost and looks like it, so that a person hidden for a
//! moment is one tracklet instead of two (docs/ingester.md, "Tracking and crops").

use std::time::SystemTime;

use super::{APPEARANCE_RATE, FinishedTrack, Track, Tracker};
use crate::pipeline::appearance::Appearance;
use crate::pipeline::config::CropConfig;

impl Track {
    /// Takes over `fresh`, a track that continues this one after it was lost: its crops, its
    /// detections and where it is now.
    pub(super) fn absorb(&mut self, mut fresh: Track, crops: &CropConfig) {
        for crop in fresh.crops.take() {
            self.crops.offer(crop, crops.per_tracklet, crops.min_gap_frames);
        }
        Appearance::follow(&mut self.appearance, fresh.appearance.as_ref(), APPEARANCE_RATE);
        self.bbox = fresh.bbox;
        self.velocity = fresh.velocity;
        self.hits += fresh.hits;
        self.misses = 0;
        self.frames += fresh.frames;
        self.last_frame = fresh.last_frame;
        self.end = self.end.max(fresh.end);
    }
}

impl Tracker {
    /// Reports the held tracks lost more than `reattach_secs` before `at`: they can no longer be
    /// continued.
    pub(super) fn expire(&mut self, at: SystemTime) -> Vec<FinishedTrack> {
        let held = self.config.reattach_secs;
        let (expired, lost): (Vec<Track>, Vec<Track>) = std::mem::take(&mut self.lost)
            .into_iter()
            .partition(|t| at.duration_since(t.end).is_ok_and(|gap| gap.as_secs_f32() > held));
        self.lost = lost;
        expired.into_iter().filter_map(|t| self.finish(t)).collect()
    }

    /// Joins a track that lost its person (coasting on its motion, or held in `lost`) and a
    /// confirmed track that started after it, near where it was lost and looking like it: the
    /// older one takes the younger one over, the best-scoring pairs first, so that a person
    /// hidden for a moment is one tracklet instead of two.
    pub(super) fn reattach(&mut self, frame: u64) {
        let min_hits = self.config.min_hits;
        let missing = self.tracks.iter().filter(|t| t.misses > 0).chain(&self.lost);
        let mut pairs = Vec::new();
        for older in missing.filter(|t| t.confirmed_here(min_hits)) {
            for fresh in &self.tracks {
                if !fresh.confirmed_here(min_hits) || fresh.last_frame != frame {
                    continue;
                }
                if let Some(score) = self.continues(older, fresh) {
                    pairs.push((score, older.id, fresh.id));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut used = Vec::new();
        for (_, older, fresh) in pairs {
            if used.contains(&older) || used.contains(&fresh) {
                continue;
            }
            used.extend([older, fresh]);
            let Some(f) = self.tracks.iter().position(|t| t.id == fresh) else { continue };
            let fresh = self.tracks.remove(f);
            let mut older = match self.tracks.iter().position(|t| t.id == older) {
                Some(o) => self.tracks.remove(o),
                None => match self.lost.iter().position(|t| t.id == older) {
                    Some(l) => self.lost.remove(l),
                    None => continue,
                },
            };
            older.absorb(fresh, &self.crops);
            self.tracks.push(older);
        }
    }

    /// How well `fresh` continues `lost` (higher is better), or `None` when it cannot: it must
    /// start after `lost` ended, within `reattach_secs`, near where `lost` was lost or where its
    /// motion would have carried it (`reattach_speed`), at a like size, and look alike
    /// (`reattach_appearance`).
    fn continues(&self, lost: &Track, fresh: &Track) -> Option<f32> {
        let gap = fresh.start.duration_since(lost.end).ok()?.as_secs_f32();
        if gap > self.config.reattach_secs || fresh.first_frame <= lost.last_frame {
            return None;
        }
        let ratio = fresh.bbox.h / lost.bbox.h.max(1.0);
        if !(2.0 / 3.0..=1.5).contains(&ratio) {
            return None;
        }
        let alike = lost.appearance.as_ref()?.similarity(fresh.appearance.as_ref()?);
        if alike < self.config.reattach_appearance {
            return None;
        }
        let frames = (fresh.first_frame - lost.last_frame) as f32;
        let from = lost.bbox.center();
        let to = (from.0 + lost.velocity.0 * frames, from.1 + lost.velocity.1 * frames);
        let distance = distance_to_segment(fresh.first_box.center(), from, to);
        let height = (lost.bbox.h + fresh.bbox.h) / 2.0;
        let reach = height * (0.5 + self.config.reattach_speed * gap);
        (distance <= reach).then(|| alike * (1.0 - 0.5 * distance / reach))
    }
}

/// The distance from `p` to the segment from `a` to `b`.
fn distance_to_segment(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let length2 = dx * dx + dy * dy;
    let s = if length2 > 0.0 { (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / length2).clamp(0.0, 1.0) } else { 0.0 };
    let (x, y) = (a.0 + s * dx, a.1 + s * dy);
    ((p.0 - x).powi(2) + (p.1 - y).powi(2)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::track::Observed;
    use crate::pipeline::track::tests::{at, seen, tracker, tracker_with};

    /// The test tracker, holding lost tracks for 2 s (20 frames) to re-attach them.
    fn reattaching() -> Tracker {
        let mut t = tracker_with(0.0);
        t.config.reattach_secs = 2.0;
        t.config.reattach_appearance = 0.8;
        t.config.reattach_speed = 0.5;
        t
    }

    /// A person in `look` at `x` on frame `f` (boxes 100 px tall; crops get better with time).
    fn wearing(look: &Appearance, x: f32, f: u64) -> Observed {
        Observed { appearance: Some(look.clone()), ..seen(x, 50.0, f, 0.01 * f as f32) }
    }

    /// Walks a person in `look` right at 5 px per frame over `frames`; the tracklets that ended.
    fn walk(t: &mut Tracker, look: &Appearance, frames: std::ops::Range<u64>) -> Vec<FinishedTrack> {
        frames.flat_map(|f| t.update(f, at(f), vec![wearing(look, 100.0 + 5.0 * f as f32, f)])).collect()
    }

    /// Nobody detected over `frames`; the tracklets that ended.
    fn nobody(t: &mut Tracker, frames: std::ops::Range<u64>) -> Vec<FinishedTrack> {
        frames.flat_map(|f| t.update(f, at(f), vec![])).collect()
    }

    #[test]
    fn a_person_hidden_for_a_moment_comes_back_as_the_same_tracklet() {
        use crate::pipeline::appearance::tests::look;
        let red = look([30.0, 30.0, 200.0]);
        // Seen for 6 frames, hidden for 8 (past max_misses 2, under the 2 s held), seen for 6.
        let run = |mut t: Tracker| {
            let mut ended = walk(&mut t, &red, 0..6);
            ended.extend(nobody(&mut t, 6..14));
            ended.extend(walk(&mut t, &red, 14..20));
            ended.extend(t.flush());
            ended
        };
        let apart = run(tracker());
        assert_eq!(apart.iter().map(|f| f.hits).collect::<Vec<_>>(), vec![6, 6], "without re-attaching: two");
        let one = run(reattaching());
        assert_eq!(one.len(), 1, "{one:?}");
        assert_eq!((one[0].hits, one[0].start, one[0].end), (12, at(0), at(19)));
        assert_eq!(one[0].track_id, "s-1");
        let frames: Vec<u64> = one[0].crops.iter().map(|c| c.frame).collect();
        assert!(frames.first() < Some(&6) && frames.last() >= Some(&14), "crops from both parts: {frames:?}");
    }

    #[test]
    fn a_track_still_coasting_is_continued_by_the_new_track_of_its_person() {
        use crate::pipeline::appearance::tests::look;
        let red = look([30.0, 30.0, 200.0]);
        let mut t = reattaching();
        t.config.max_misses = 10;
        assert!(walk(&mut t, &red, 0..6).is_empty());
        assert!(nobody(&mut t, 6..8).is_empty());
        // Back 40 px past where their motion would have taken them: no overlap with the coasting
        // track's prediction, so a new track starts; once confirmed (frame 10) it continues the
        // coasting one.
        for f in 8..15u64 {
            assert!(t.update(f, at(f), vec![wearing(&red, 140.0 + 5.0 * f as f32, f)]).is_empty());
        }
        assert_eq!(t.active(), 1, "one track left");
        let done = t.flush();
        assert_eq!(done.iter().map(|f| (f.track_id.as_str(), f.hits)).collect::<Vec<_>>(), vec![("s-1", 13)]);
    }

    #[test]
    fn a_new_track_unlike_or_far_from_the_lost_one_starts_a_tracklet_of_its_own() {
        use crate::pipeline::appearance::tests::look;
        let (red, blue) = (look([30.0, 30.0, 200.0]), look([200.0, 60.0, 30.0]));
        let lost_then = |comes_back: &dyn Fn(&mut Tracker, u64) -> Vec<FinishedTrack>| {
            let mut t = reattaching();
            let mut ended = walk(&mut t, &red, 0..6);
            ended.extend(nobody(&mut t, 6..14));
            for f in 14..20 {
                ended.extend(comes_back(&mut t, f));
            }
            ended.extend(t.flush());
            ended.iter().map(|f| f.hits).collect::<Vec<_>>()
        };
        // Someone in blue where the person in red would be.
        let other = lost_then(&|t, f| t.update(f, at(f), vec![wearing(&blue, 100.0 + 5.0 * f as f32, f)]));
        assert_eq!(other, vec![6, 6]);
        // Someone in red, 400 px (four heights) from where the person in red was lost, 0.9 s later.
        let far = lost_then(&|t, f| t.update(f, at(f), vec![wearing(&red, 525.0 + 5.0 * f as f32, f)]));
        assert_eq!(far, vec![6, 6]);
        // The same person in red, where their motion carried them: one tracklet.
        let same = lost_then(&|t, f| t.update(f, at(f), vec![wearing(&red, 100.0 + 5.0 * f as f32, f)]));
        assert_eq!(same, vec![12]);
    }

    #[test]
    fn a_lost_track_is_reported_once_it_has_been_held_long_enough() {
        use crate::pipeline::appearance::tests::look;
        let red = look([30.0, 30.0, 200.0]);
        let mut t = reattaching();
        assert!(walk(&mut t, &red, 0..6).is_empty());
        // Lost after frame 8 (max_misses 2); held until 2 s after its last detection (frame 5).
        assert!(nobody(&mut t, 6..26).is_empty(), "held up to 2 s");
        let ended = nobody(&mut t, 26..27);
        assert_eq!(ended.iter().map(|f| (f.hits, f.end)).collect::<Vec<_>>(), vec![(6, at(5))]);
        assert_eq!(t.active(), 0);
        // Held tracks are reported at the end of the stream too.
        assert!(walk(&mut t, &red, 30..36).is_empty());
        assert!(nobody(&mut t, 36..40).is_empty());
        assert_eq!(t.flush().len(), 1);
    }

    #[test]
    fn distance_to_segment_measures_to_the_nearest_point() {
        assert_eq!(distance_to_segment((5.0, 3.0), (0.0, 0.0), (10.0, 0.0)), 3.0);
        assert_eq!(distance_to_segment((13.0, 4.0), (0.0, 0.0), (10.0, 0.0)), 5.0);
        assert_eq!(distance_to_segment((3.0, 4.0), (0.0, 0.0), (0.0, 0.0)), 5.0);
    }
}
