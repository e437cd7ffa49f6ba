//! Cutting tracks where people cross (`tracker.crossing_iou`): where two tracks overlap, IoU and
//! colour do not say who is who when they part, so each is cut where they meet and keeps no crops
//! until they part; a swap then leaves two people in two tracklets, not one (docs/ingester.md,
//! "Tracking and crops").

use super::{FinishedTrack, Observed, Tracker};
use crate::frame::BBox;

impl Tracker {
    /// Marks the tracks crossing another at `frame`, and cuts those that just began to: what each
    /// had before is returned as a tracklet.
    pub(super) fn cut_where_crossing(
        &mut self,
        frame: u64,
        observed: &[Observed],
        assignment: &[Option<usize>],
    ) -> Vec<FinishedTrack> {
        let mut finished = Vec::new();
        for (t, now) in self.crossings(frame, observed, assignment).into_iter().enumerate() {
            if now && !self.tracks[t].crossing {
                finished.extend(self.cut(t));
            }
            self.tracks[t].crossing = now;
        }
        finished
    }

    /// For each track, whether it is crossing another at `frame` (`crossing_iou`): both confirmed,
    /// not edge-tracked, their boxes (the detection a track took, else its predicted box)
    /// overlapping by at least `crossing_iou`. All false when the option is off.
    fn crossings(&self, frame: u64, observed: &[Observed], assignment: &[Option<usize>]) -> Vec<bool> {
        let mut crossing = vec![false; self.tracks.len()];
        if self.config.crossing_iou <= 0.0 {
            return crossing;
        }
        let mut boxes: Vec<Option<BBox>> =
            self.tracks.iter().map(|t| t.confirmed_here(self.config.min_hits).then(|| t.predicted(frame))).collect();
        for (o, slot) in observed.iter().zip(assignment) {
            if let Some(t) = *slot
                && let Some(b) = boxes[t].as_mut()
            {
                *b = o.detection.bbox;
            }
        }
        for i in 0..boxes.len() {
            for j in i + 1..boxes.len() {
                if let (Some(a), Some(b)) = (&boxes[i], &boxes[j])
                    && a.iou(b) >= self.config.crossing_iou
                {
                    crossing[i] = true;
                    crossing[j] = true;
                }
            }
        }
        crossing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::track::tests::{at, seen, tracker};

    /// A walks right, B walks left, 10 px per frame; they pass each other around frame 10, their
    /// boxes overlapping on frames 9-11, and on 9 and 10 the detector sees only A (occlusion; B's
    /// track coasts on its predicted box). The tracklets reported while they walk, and the tracker.
    fn two_people_cross(crossing_iou: f32) -> (Vec<FinishedTrack>, Tracker) {
        let mut t = tracker();
        t.config.crossing_iou = crossing_iou;
        let mut ended = Vec::new();
        for f in 0..20u64 {
            let a = seen(100.0 + 10.0 * f as f32, 50.0, f, 0.5);
            let b = seen(300.0 - 10.0 * f as f32, 60.0, f, 0.5);
            let frame = if (9..=10).contains(&f) { vec![a] } else { vec![a, b] };
            ended.extend(t.update(f, at(f), frame));
        }
        (ended, t)
    }

    #[test]
    fn two_people_crossing_keep_their_tracks() {
        let (ended, mut t) = two_people_cross(0.0);
        assert!(ended.is_empty(), "no track ends while both are in view");
        let finished = t.flush();
        assert_eq!(finished.len(), 2, "one track each, not split at the crossing: {finished:?}");
        let mut first_x: Vec<f32> = finished.iter().map(|f| f.crops[0].bbox.x).collect();
        first_x.sort_by(f32::total_cmp);
        // Each track's earliest kept crop lies on its own side of the crossing.
        assert!(first_x[0] < 200.0 && first_x[1] > 200.0, "{first_x:?}");
        assert!(finished.iter().all(|f| f.hits >= 17));
    }

    #[test]
    fn crossing_tracks_are_cut_where_they_meet_and_keep_no_crops_until_they_part() {
        let pieces = |crossing_iou: f32| {
            let (mut ended, mut t) = two_people_cross(crossing_iou);
            ended.extend(t.flush());
            let mut pieces: Vec<(String, Vec<u64>)> =
                ended.iter().map(|f| (f.track_id.clone(), f.crops.iter().map(|c| c.frame).collect())).collect();
            pieces.sort();
            pieces
        };
        let cut = pieces(0.1);
        let ids: Vec<&str> = cut.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, vec!["s-1", "s-1.2", "s-2", "s-2.2"], "{cut:?}");
        for (id, frames) in &cut {
            let before = !id.contains('.');
            assert!(
                frames.iter().all(|&f| if before { f < 9 } else { f >= 12 }),
                "{id}: crops only before they meet or after they part: {frames:?}"
            );
        }
        // At an overlap they never reach (0.82 at most), each keeps one tracklet.
        assert_eq!(pieces(0.9).len(), 2);
    }
}
