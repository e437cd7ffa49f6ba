//! The measures, defined as py-motmetrics and TrackEval define them.
//!
//! Boxes match when their IoU is at least the threshold (0.5 unless told otherwise).
//!
//! - **Detection** ignores ids: in each frame ground truth and detections are matched one to one
//!   (most matches, then the highest total IoU); precision is matches over detections, recall
//!   matches over ground-truth boxes.
//! - **CLEAR MOT** (Bernardin and Stiefelhagen, 2008): frame by frame, a person keeps the track
//!   they were last matched to while it still overlaps enough; the others are matched afresh.
//!   (This is py-motmetrics' rule, checked figure for figure by `tests/python/motmetrics_check.py`;
//!   TrackEval keeps only last frame's pairs, so on crowded scenes its switch count can differ by
//!   a few.) An *ID switch* is a person matched to a track other than the one they were last
//!   matched to; a *fragmentation* is a person lost and later found again. MOTA is
//!   `1 - (misses + false positives + switches) / ground-truth boxes`; MOTP the mean IoU of the
//!   matches. A person is *mostly tracked* when matched in at least 80% of their frames,
//!   *mostly lost* under 20%.
//! - **Identity** (Ristani et al., 2016): each person is paired with at most one track over the
//!   whole sequence, the pairing that shares the most matched frames; IDF1 is
//!   `2 IDTP / (ground-truth boxes + tracker boxes)`.
//!
//! Ground-truth rows with `conf = 0` are regions to ignore: a detection matched to one (in the
//! same one-to-one matching as the scored boxes) is removed before scoring, neither a hit nor a
//! false positive.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use crate::assign::assign;
use crate::mot::{Box2, Frames, Sequence};

/// Settings of an evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Evaluation {
    /// IoU at which two boxes match.
    pub iou: f64,
}

impl Default for Evaluation {
    fn default() -> Self {
        Self { iou: 0.5 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    pub frames: usize,
    pub gt: usize,
    pub detections: usize,
    pub matches: usize,
    pub false_positives: usize,
    pub misses: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Mean IoU of the matches.
    pub mean_iou: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tracking {
    pub frames: usize,
    pub gt: usize,
    pub predictions: usize,
    pub gt_ids: usize,
    pub predicted_ids: usize,
    pub matches: usize,
    pub false_positives: usize,
    pub misses: usize,
    pub id_switches: usize,
    pub fragmentations: usize,
    pub mota: f64,
    /// Mean IoU of the matches.
    pub motp: f64,
    pub precision: f64,
    pub recall: f64,
    pub idtp: usize,
    pub idfp: usize,
    pub idfn: usize,
    pub idf1: f64,
    pub idp: f64,
    pub idr: f64,
    pub mostly_tracked: usize,
    pub partly_tracked: usize,
    pub mostly_lost: usize,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// IoU of each pair that matches, `None` otherwise.
fn overlaps(gt: &[Box2], hyp: &[Box2], threshold: f64) -> Vec<Vec<Option<f64>>> {
    gt.iter()
        .map(|g| {
            hyp.iter()
                .map(|h| {
                    let iou = g.iou(h);
                    (iou >= threshold).then_some(iou)
                })
                .collect()
        })
        .collect()
}

/// One frame's predictions without those matched to an ignore region.
fn scored(gt: &Frames, hyp: &Frames, threshold: f64) -> Vec<(i64, Box2)> {
    if gt.ignore.is_empty() {
        return hyp.boxes.clone();
    }
    let targets: Vec<Box2> = gt.boxes.iter().map(|(_, b)| *b).chain(gt.ignore.iter().copied()).collect();
    let preds: Vec<Box2> = hyp.boxes.iter().map(|(_, b)| *b).collect();
    let cost = costs(&overlaps(&preds, &targets, threshold));
    let matched = assign(&cost);
    hyp.boxes
        .iter()
        .zip(matched)
        .filter(|(_, target)| !target.is_some_and(|t| t >= gt.boxes.len()))
        .map(|(p, _)| *p)
        .collect()
}

/// Matching costs from overlaps: the distance `1 - IoU`.
fn costs(iou: &[Vec<Option<f64>>]) -> Vec<Vec<Option<f64>>> {
    iou.iter().map(|row| row.iter().map(|o| o.map(|v| 1.0 - v)).collect()).collect()
}

fn frame_numbers(gt: &Sequence, hyp: &Sequence) -> BTreeSet<u64> {
    gt.frames.keys().chain(hyp.frames.keys()).copied().collect()
}

pub fn evaluate_detection(gt: &Sequence, hyp: &Sequence, e: Evaluation) -> Detection {
    let empty = Frames::default();
    let (mut n_gt, mut n_det, mut matches, mut iou_sum) = (0, 0, 0, 0.0);
    let frames = frame_numbers(gt, hyp);
    for f in &frames {
        let g = gt.frames.get(f).unwrap_or(&empty);
        let h = scored(g, hyp.frames.get(f).unwrap_or(&empty), e.iou);
        let gb: Vec<Box2> = g.boxes.iter().map(|(_, b)| *b).collect();
        let hb: Vec<Box2> = h.iter().map(|(_, b)| *b).collect();
        let iou = overlaps(&gb, &hb, e.iou);
        for (i, j) in assign(&costs(&iou)).into_iter().enumerate() {
            if let Some(j) = j {
                matches += 1;
                iou_sum += iou[i][j].unwrap_or(0.0);
            }
        }
        n_gt += gb.len();
        n_det += hb.len();
    }
    let precision = ratio(matches, n_det);
    let recall = ratio(matches, n_gt);
    Detection {
        frames: frames.len(),
        gt: n_gt,
        detections: n_det,
        matches,
        false_positives: n_det - matches,
        misses: n_gt - matches,
        precision,
        recall,
        f1: ratio(2 * matches, n_det + n_gt),
        mean_iou: if matches == 0 { 0.0 } else { iou_sum / matches as f64 },
    }
}

pub fn evaluate_tracking(gt: &Sequence, hyp: &Sequence, e: Evaluation) -> Tracking {
    let empty = Frames::default();
    // The track each person was last matched to.
    let mut last: HashMap<i64, i64> = HashMap::new();
    // Per person, matched or not in each frame they appear in, in order.
    let mut history: HashMap<i64, Vec<bool>> = HashMap::new();
    // Frames in which a person and a track overlap enough (for the identity measures).
    let mut shared: HashMap<(i64, i64), usize> = HashMap::new();
    let (mut n_gt, mut n_hyp, mut matches, mut switches, mut iou_sum) = (0, 0, 0, 0, 0.0);
    let mut hyp_ids: BTreeSet<i64> = BTreeSet::new();

    for f in frame_numbers(gt, hyp) {
        let g = gt.frames.get(&f).unwrap_or(&empty);
        let h = scored(g, hyp.frames.get(&f).unwrap_or(&empty), e.iou);
        let gb: Vec<Box2> = g.boxes.iter().map(|(_, b)| *b).collect();
        let hb: Vec<Box2> = h.iter().map(|(_, b)| *b).collect();
        let iou = overlaps(&gb, &hb, e.iou);
        n_gt += gb.len();
        n_hyp += hb.len();
        hyp_ids.extend(h.iter().map(|(id, _)| *id));
        for (i, row) in iou.iter().enumerate() {
            for (j, o) in row.iter().enumerate() {
                if o.is_some() {
                    *shared.entry((g.boxes[i].0, h[j].0)).or_default() += 1;
                }
            }
        }

        let mut gt_of: Vec<Option<usize>> = vec![None; gb.len()];
        let mut taken = vec![false; hb.len()];
        // Continued tracks: a person keeps the track they were last matched to while it still
        // overlaps enough, people taken in id order (py-motmetrics' rule).
        let mut order: Vec<usize> = (0..gb.len()).collect();
        order.sort_by_key(|&i| g.boxes[i].0);
        for i in order {
            let Some(&track) = last.get(&g.boxes[i].0) else { continue };
            if let Some(j) = h.iter().position(|(id, _)| *id == track)
                && !taken[j]
                && iou[i][j].is_some()
            {
                gt_of[i] = Some(j);
                taken[j] = true;
            }
        }
        // The rest, matched afresh.
        let rest: Vec<Vec<Option<f64>>> = iou
            .iter()
            .enumerate()
            .map(|(i, row)| {
                row.iter()
                    .enumerate()
                    .map(|(j, o)| if gt_of[i].is_some() || taken[j] { None } else { o.map(|v| 1.0 - v) })
                    .collect()
            })
            .collect();
        for (i, j) in assign(&rest).into_iter().enumerate() {
            if let Some(j) = j {
                let (person, track) = (g.boxes[i].0, h[j].0);
                if last.get(&person).is_some_and(|t| *t != track) {
                    switches += 1;
                }
                gt_of[i] = Some(j);
            }
        }
        for (i, j) in gt_of.iter().enumerate() {
            let person = g.boxes[i].0;
            history.entry(person).or_default().push(j.is_some());
            if let Some(j) = *j {
                matches += 1;
                iou_sum += iou[i][j].unwrap_or(0.0);
                last.insert(person, h[j].0);
            }
        }
    }

    let mut fragmentations = 0;
    let (mut mostly_tracked, mut partly_tracked, mut mostly_lost) = (0, 0, 0);
    for seen in history.values() {
        let hit = seen.iter().filter(|m| **m).count();
        let r = ratio(hit, seen.len());
        if r >= 0.8 {
            mostly_tracked += 1;
        } else if r < 0.2 {
            mostly_lost += 1;
        } else {
            partly_tracked += 1;
        }
        if let (Some(first), Some(last)) = (seen.iter().position(|m| *m), seen.iter().rposition(|m| *m)) {
            fragmentations += seen[first..=last].windows(2).filter(|w| w[0] && !w[1]).count();
        }
    }

    // Identity: the one-to-one pairing of people and tracks that shares the most frames.
    let people: Vec<i64> = {
        let mut v: Vec<i64> = history.keys().copied().collect();
        v.sort_unstable();
        v
    };
    let tracks: Vec<i64> = hyp_ids.iter().copied().collect();
    let cost: Vec<Vec<Option<f64>>> = people
        .iter()
        .map(|p| tracks.iter().map(|t| Some(-(shared.get(&(*p, *t)).copied().unwrap_or(0) as f64))).collect())
        .collect();
    let idtp: usize = assign(&cost)
        .into_iter()
        .enumerate()
        .filter_map(|(i, j)| j.and_then(|j| shared.get(&(people[i], tracks[j])).copied()))
        .sum();

    let false_positives = n_hyp - matches;
    let misses = n_gt - matches;
    Tracking {
        frames: frame_numbers(gt, hyp).len(),
        gt: n_gt,
        predictions: n_hyp,
        gt_ids: people.len(),
        predicted_ids: tracks.len(),
        matches,
        false_positives,
        misses,
        id_switches: switches,
        fragmentations,
        mota: if n_gt == 0 { 0.0 } else { 1.0 - (misses + false_positives + switches) as f64 / n_gt as f64 },
        motp: if matches == 0 { 0.0 } else { iou_sum / matches as f64 },
        precision: ratio(matches, n_hyp),
        recall: ratio(matches, n_gt),
        idtp,
        idfp: n_hyp - idtp,
        idfn: n_gt - idtp,
        idf1: ratio(2 * idtp, n_gt + n_hyp),
        idp: ratio(idtp, n_hyp),
        idr: ratio(idtp, n_gt),
        mostly_tracked,
        partly_tracked,
        mostly_lost,
    }
}
