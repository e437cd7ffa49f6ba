//! Evaluation: re-ID retrieval (CMC, mAP, mINP), verification (ROC, TAR at FAR, EER, the
//! recommended open-set threshold) and class-level Recall@K. Pure functions over distance or
//! similarity matrices, so that they can be checked against small hand-computed examples.

use serde::Serialize;

/// Who an embedding belongs to and where it was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label {
    pub pid: i64,
    pub camid: i64,
}

/// Which gallery items a query is ranked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Market-1501 / DukeMTMC: gallery items of the query's identity seen by the query's camera
    /// are removed (they are too easy), as are junk items (pid -1).
    ReId,
    /// Class-level retrieval: query and gallery are the same set; only the query itself is removed.
    LeaveOneOut,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Retrieval {
    /// `cmc[k]`: fraction of queries whose first correct match is within the top k + 1.
    pub cmc: Vec<f64>,
    pub map: f64,
    /// Mean inverse negative penalty (Ye et al., 2021): how far down the hardest match lies.
    pub minp: f64,
    /// Queries with at least one valid match (the others are skipped, as in the standard code).
    pub queries: usize,
}

impl Retrieval {
    pub(crate) fn rank(&self, k: usize) -> f64 {
        self.cmc.get(k - 1).or(self.cmc.last()).copied().unwrap_or(0.0)
    }
}

/// Ranks each query's gallery by `dist` (`queries.len()` x `gallery.len()`, row-major, smaller is
/// closer; ties keep gallery order) and computes CMC up to `max_rank`, mAP and mINP.
pub(crate) fn retrieval(
    dist: &[f32],
    queries: &[Label],
    gallery: &[Label],
    max_rank: usize,
    protocol: Protocol,
) -> Retrieval {
    assert_eq!(dist.len(), queries.len() * gallery.len(), "distance matrix shape");
    let mut cmc = vec![0f64; max_rank];
    let (mut ap_sum, mut inp_sum, mut valid) = (0f64, 0f64, 0usize);
    let mut order: Vec<usize> = Vec::with_capacity(gallery.len());
    for (qi, q) in queries.iter().enumerate() {
        let row = &dist[qi * gallery.len()..(qi + 1) * gallery.len()];
        order.clear();
        order.extend((0..gallery.len()).filter(|&gi| {
            let g = gallery[gi];
            match protocol {
                Protocol::ReId => g.pid >= 0 && !(g.pid == q.pid && g.camid == q.camid),
                Protocol::LeaveOneOut => gi != qi,
            }
        }));
        order.sort_by(|&a, &b| row[a].total_cmp(&row[b]).then(a.cmp(&b)));
        let matches: Vec<bool> = order.iter().map(|&gi| gallery[gi].pid == q.pid).collect();
        let relevant = matches.iter().filter(|m| **m).count();
        if relevant == 0 {
            continue;
        }
        valid += 1;
        let first = matches.iter().position(|m| *m).unwrap_or(usize::MAX);
        for c in cmc.iter_mut().skip(first) {
            *c += 1.0;
        }
        let mut hits = 0usize;
        let mut precision_sum = 0f64;
        let mut last_hit = 0usize;
        for (rank, hit) in matches.iter().enumerate() {
            if *hit {
                hits += 1;
                precision_sum += hits as f64 / (rank + 1) as f64;
                last_hit = rank + 1;
            }
        }
        ap_sum += precision_sum / relevant as f64;
        inp_sum += relevant as f64 / last_hit as f64;
    }
    let n = valid.max(1) as f64;
    Retrieval { cmc: cmc.into_iter().map(|c| c / n).collect(), map: ap_sum / n, minp: inp_sum / n, queries: valid }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct OperatingPoint {
    pub far: f64,
    pub tar: f64,
    /// Similarity at or above which a pair is accepted.
    pub threshold: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Verification {
    /// TAR at FAR 1e-2 and 1e-3.
    pub at_far_1e2: OperatingPoint,
    pub at_far_1e3: OperatingPoint,
    pub eer: f64,
    pub eer_threshold: f64,
    pub genuine_pairs: usize,
    pub impostor_pairs: usize,
}

/// Verification over pairs with `scores` (higher is more similar) and `same` labels.
pub(crate) fn verification(scores: &[f32], same: &[bool]) -> Verification {
    assert_eq!(scores.len(), same.len());
    let genuine = same.iter().filter(|s| **s).count();
    let impostor = same.len() - genuine;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    // Sweep the threshold down through every distinct score: (far, tar, threshold) after each.
    let mut roc = Vec::with_capacity(order.len() + 1);
    roc.push((0.0, 0.0, f64::INFINITY));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut i = 0;
    while i < order.len() {
        let t = scores[order[i]];
        while i < order.len() && scores[order[i]] == t {
            if same[order[i]] {
                tp += 1
            } else {
                fp += 1
            }
            i += 1;
        }
        roc.push((fp as f64 / impostor.max(1) as f64, tp as f64 / genuine.max(1) as f64, f64::from(t)));
    }
    let at = |target: f64| {
        let (far, tar, threshold) =
            roc.iter().copied().rfind(|(far, _, _)| *far <= target).unwrap_or((0.0, 0.0, f64::INFINITY));
        OperatingPoint { far, tar, threshold }
    };
    // EER: the first point where the false rejection rate falls to or below the acceptance rate.
    let (eer, eer_threshold) = roc
        .iter()
        .find(|(far, tar, _)| 1.0 - tar <= *far)
        .map(|(far, tar, t)| ((far + 1.0 - tar) / 2.0, *t))
        .unwrap_or((1.0, f64::NEG_INFINITY));
    Verification {
        at_far_1e2: at(1e-2),
        at_far_1e3: at(1e-3),
        eer,
        eer_threshold,
        genuine_pairs: genuine,
        impostor_pairs: impostor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pid: i64, camid: i64) -> Label {
        Label { pid, camid }
    }

    #[test]
    fn cmc_map_minp_by_hand() {
        // One query (pid 1, cam 0); gallery ranked by distance: [A(2), B(1), C(3), D(1)].
        // Matches at ranks 2 and 4: AP = (1/2 + 2/4) / 2 = 0.5; INP = 2 / 4 = 0.5; rank-1 miss.
        let q = [l(1, 0)];
        let g = [l(2, 1), l(1, 1), l(3, 1), l(1, 2)];
        let r = retrieval(&[0.1, 0.2, 0.3, 0.4], &q, &g, 4, Protocol::ReId);
        assert_eq!(r.cmc, vec![0.0, 1.0, 1.0, 1.0]);
        assert!((r.map - 0.5).abs() < 1e-12);
        assert!((r.minp - 0.5).abs() < 1e-12);
        assert_eq!(r.queries, 1);
    }

    #[test]
    fn same_identity_same_camera_gallery_items_are_excluded() {
        // The nearest item is the same person on the same camera: excluded. Of what remains, the
        // distractor (0.2) ranks before the cross-camera match (0.3): first match at rank 2.
        let q = [l(7, 3)];
        let g = [l(7, 3), l(5, 1), l(7, 4)];
        let r = retrieval(&[0.0, 0.2, 0.3], &q, &g, 3, Protocol::ReId);
        assert_eq!(r.cmc, vec![0.0, 1.0, 1.0]);
        assert!((r.map - 0.5).abs() < 1e-12);
        // A query whose only match is on its own camera has no valid match and is skipped.
        let r = retrieval(&[0.0, 0.2], &q, &g[..2], 2, Protocol::ReId);
        assert_eq!(r.queries, 0);
    }

    #[test]
    fn junk_items_are_ignored_and_averages_are_over_queries() {
        // Two queries: the first matches at rank 1 (AP 1), the second at ranks 1 and 3
        // (AP (1 + 2/3)/2 = 5/6, INP 2/3). Junk (pid -1) at the top of query 2 is dropped.
        let q = [l(1, 0), l(2, 0)];
        let g = [l(1, 1), l(-1, 1), l(2, 1), l(3, 1), l(2, 2)];
        #[rustfmt::skip]
        let d = [
            0.1, 0.5, 0.6, 0.7, 0.8,
            0.9, 0.0, 0.1, 0.2, 0.3,
        ];
        let r = retrieval(&d, &q, &g, 3, Protocol::ReId);
        assert_eq!(r.queries, 2);
        assert_eq!(r.cmc, vec![1.0, 1.0, 1.0]);
        assert!((r.map - (1.0 + 5.0 / 6.0) / 2.0).abs() < 1e-12);
        assert!((r.minp - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn leave_one_out_removes_only_the_query() {
        // Three items, classes [0, 0, 1]. Item 0's nearest other is item 2 (wrong), then item 1.
        let labels = [l(0, 0), l(0, 0), l(1, 0)];
        #[rustfmt::skip]
        let d = [
            0.0, 0.5, 0.2,
            0.5, 0.0, 0.9,
            0.2, 0.9, 0.0,
        ];
        let r = retrieval(&d, &labels, &labels, 2, Protocol::LeaveOneOut);
        // Queries 0 and 1 have a match (item 2 has none and is skipped): recall@1 = 1/2.
        assert_eq!(r.queries, 2);
        assert_eq!(r.cmc, vec![0.5, 1.0]);
        assert!((r.map - (0.5 + 1.0) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn verification_by_hand() {
        // Scores of 4 genuine and 6 impostor pairs.
        let scores = [0.9, 0.8, 0.7, 0.3, 0.75, 0.6, 0.5, 0.4, 0.2, 0.1];
        let same = [true, true, true, true, false, false, false, false, false, false];
        let v = verification(&scores, &same);
        // At FAR 0 (<= 1e-2): accept >= 0.8 -> TAR 2/4.
        assert_eq!(v.at_far_1e2, OperatingPoint { far: 0.0, tar: 0.5, threshold: 0.8_f32 as f64 });
        // Sweeping down: after 0.7, FAR 1/6 < FRR 1/4; after 0.6, FAR 2/6 >= FRR 1/4. The EER is
        // taken there: threshold 0.6, EER = (2/6 + 1/4) / 2.
        assert!((v.eer_threshold - 0.6f32 as f64).abs() < 1e-9, "{v:?}");
        assert!((v.eer - (2.0 / 6.0 + 0.25) / 2.0).abs() < 1e-9, "{v:?}");
        assert_eq!((v.genuine_pairs, v.impostor_pairs), (4, 6));
    }
}
