//! Ground truth and tracker output synthesised from known boxes: every figure is worked out by
//! hand in the comments and must come out exactly.

#![allow(clippy::unwrap_used, clippy::float_cmp)]

use reid_eval::measures::Evaluation;
use reid_eval::{Box2, Sequence, evaluate_detection, evaluate_tracking};

const A: i64 = 1;
const B: i64 = 2;

fn a_at(f: u64) -> Box2 {
    Box2::new(10.0 * f as f64, 100.0, 40.0, 100.0)
}
fn b_at(f: u64) -> Box2 {
    Box2::new(400.0, 10.0 * f as f64, 40.0, 100.0)
}

/// Two people over ten frames.
/// - A is followed throughout, by track 10 in frames 1-5 and track 11 in 6-10: one ID switch.
/// - B is followed by track 20, lost in frames 4-5, found again, then in frame 8 boxed too far
///   to the side (IoU 1/4: a miss and a false positive), then found again: two fragmentations and
///   no switch.
/// - Track 30 is a false positive in frames 2 and 3, far from anyone.
fn scene() -> (Sequence, Sequence) {
    let (mut gt, mut hyp) = (Sequence::default(), Sequence::default());
    for f in 1..=10 {
        gt.push(f, A, a_at(f));
        gt.push(f, B, b_at(f));
        hyp.push(f, if f <= 5 { 10 } else { 11 }, a_at(f));
        match f {
            4 | 5 => {}
            8 => {
                let b = b_at(f);
                hyp.push(f, 20, Box2::new(b.x + 24.0, b.y, b.w, b.h));
            }
            _ => hyp.push(f, 20, b_at(f)),
        }
        if f == 2 || f == 3 {
            hyp.push(f, 30, Box2::new(700.0, 500.0, 40.0, 100.0));
        }
    }
    (gt, hyp)
}

#[test]
fn clear_mot_and_identity_figures_of_a_known_scene() {
    let (gt, hyp) = scene();
    let t = evaluate_tracking(&gt, &hyp, Evaluation::default());
    // 20 person-frames; predictions: A 10 + B 8 + the false track 2.
    assert_eq!((t.frames, t.gt, t.predictions, t.gt_ids, t.predicted_ids), (10, 20, 20, 2, 4));
    // Matches: A 10, B 7 (frames 4, 5 and 8 missed).
    assert_eq!((t.matches, t.misses, t.false_positives), (17, 3, 3));
    assert_eq!((t.id_switches, t.fragmentations), (1, 2));
    assert_eq!(t.mota, 1.0 - 7.0 / 20.0);
    assert_eq!(t.motp, 1.0);
    assert_eq!((t.precision, t.recall), (17.0 / 20.0, 17.0 / 20.0));
    // Identity: A shares 5 frames with track 10 (or 11), B 7 with track 20: IDTP 12.
    assert_eq!((t.idtp, t.idfp, t.idfn), (12, 8, 8));
    assert_eq!(t.idf1, 24.0 / 40.0);
    assert_eq!((t.idp, t.idr), (12.0 / 20.0, 12.0 / 20.0));
    // A matched 10/10: mostly tracked; B 7/10: partly.
    assert_eq!((t.mostly_tracked, t.partly_tracked, t.mostly_lost), (1, 1, 0));
}

#[test]
fn detection_figures_ignore_ids() {
    let (gt, hyp) = scene();
    let d = evaluate_detection(&gt, &hyp, Evaluation::default());
    assert_eq!((d.gt, d.detections, d.matches, d.false_positives, d.misses), (20, 20, 17, 3, 3));
    assert_eq!((d.precision, d.recall, d.f1), (0.85, 0.85, 0.85));
    assert_eq!(d.mean_iou, 1.0);
    // At IoU 0.2, frame 8's side box (IoU 0.25) is a hit.
    let loose = evaluate_detection(&gt, &hyp, Evaluation { iou: 0.2 });
    assert_eq!((loose.matches, loose.false_positives, loose.misses), (18, 2, 2));
    assert_eq!(loose.mean_iou, (17.0 + 0.25) / 18.0);
}

#[test]
fn predictions_in_ignore_regions_are_not_false_positives() {
    let (mut gt, hyp) = scene();
    // The false track of frame 2 stands where the ground truth says "do not score".
    gt.frames.get_mut(&2).unwrap().ignore.push(Box2::new(702.0, 502.0, 40.0, 100.0));
    let t = evaluate_tracking(&gt, &hyp, Evaluation::default());
    assert_eq!((t.predictions, t.false_positives, t.matches), (19, 2, 17));
    assert_eq!(t.mota, 1.0 - 6.0 / 20.0);
    assert_eq!(t.idf1, 24.0 / 39.0);
    let d = evaluate_detection(&gt, &hyp, Evaluation::default());
    assert_eq!((d.detections, d.false_positives), (19, 2));
    // A prediction on a scored person next to an ignore region stays scored.
    let mut near = scene().0;
    near.frames.get_mut(&1).unwrap().ignore.push(Box2::new(12.0, 100.0, 40.0, 100.0));
    let t = evaluate_tracking(&near, &hyp, Evaluation::default());
    assert_eq!(t.matches, 17);
}

#[test]
fn two_people_crossing_with_swapped_tracks_are_two_switches() {
    // A walks right, B walks left; they cross at frame 5 and the tracker swaps their tracks.
    let (mut gt, mut hyp) = (Sequence::default(), Sequence::default());
    for f in 1..=9u64 {
        let a = Box2::new(100.0 + 20.0 * f as f64, 100.0, 40.0, 100.0);
        let b = Box2::new(300.0 - 20.0 * f as f64, 100.0, 40.0, 100.0);
        gt.push(f, A, a);
        gt.push(f, B, b);
        let (ta, tb) = if f < 5 { (1, 2) } else { (2, 1) };
        hyp.push(f, ta, a);
        hyp.push(f, tb, b);
    }
    let t = evaluate_tracking(&gt, &hyp, Evaluation::default());
    // Frame 5: both boxes coincide, each person keeps last frame's track (continuation); the
    // swap is seen at frame 6.
    assert_eq!((t.matches, t.misses, t.false_positives), (18, 0, 0));
    assert_eq!(t.id_switches, 2);
    assert_eq!(t.mota, 1.0 - 2.0 / 18.0);
    // At frame 5 both tracks overlap both people, so A shares frames 1-5 with track 1 and 5-9
    // with track 2, and B the reverse; the best one-to-one pairing takes 5 + 5.
    assert_eq!(t.idtp, 10);
    assert_eq!(t.idf1, 20.0 / 36.0);
}

#[test]
fn empty_inputs_give_zeros_not_nan() {
    let empty = Sequence::default();
    let t = evaluate_tracking(&empty, &empty, Evaluation::default());
    assert_eq!((t.mota, t.idf1, t.motp, t.precision), (0.0, 0.0, 0.0, 0.0));
    let (gt, _) = scene();
    let t = evaluate_tracking(&gt, &empty, Evaluation::default());
    assert_eq!((t.misses, t.mota, t.recall, t.mostly_lost), (20, 0.0, 0.0, 2));
}
