//! Re-identification as retrieval, scored as torchreid and FastReID score it.
//!
//! Each query ranks the gallery by distance, nearest first, after its *junk* is removed: gallery
//! items the protocol says must not count (on Market-1501, the same person on the same camera;
//! here, by [`nearby_frames`], the same person within a few frames of the query, who would be
//! found by appearance that has not changed yet). The *positives* of a query are the gallery
//! items left with its identity; a query with none is skipped and counted.
//!
//! - **Rank-k** (CMC): the share of queries whose first positive is among the k nearest.
//! - **mAP**: the mean over queries of average precision, `1/|P| * sum over positives at rank r
//!   of (positives within the first r) / r`.
//! - **mINP** (Ye et al., 2021): the mean over queries of `|P| / R`, R the rank of the last
//!   positive: how far down the list the hardest match of a person lies.
//!
//! Equal distances keep gallery order (a stable sort), so results never depend on chance.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Retrieval {
    /// Queries scored (with at least one positive left in the gallery).
    pub queries: usize,
    /// Queries without a positive after junk removal, not scored.
    pub skipped: usize,
    /// Gallery items.
    pub gallery: usize,
    pub rank1: f64,
    pub rank5: f64,
    pub rank10: f64,
    pub map: f64,
    pub minp: f64,
}

/// Scores a `queries x gallery` distance matrix. `junk(q, g)` removes gallery item `g` from
/// query `q`'s ranking.
pub fn evaluate_retrieval(
    distances: &[Vec<f64>],
    query_ids: &[i64],
    gallery_ids: &[i64],
    junk: impl Fn(usize, usize) -> bool,
) -> Retrieval {
    assert_eq!(distances.len(), query_ids.len(), "one row of distances per query");
    let (mut scored, mut skipped) = (0usize, 0usize);
    let (mut hits, mut ap, mut inp) = ([0usize; 3], 0.0, 0.0);
    for (q, row) in distances.iter().enumerate() {
        assert_eq!(row.len(), gallery_ids.len(), "one distance per gallery item");
        let mut order: Vec<usize> = (0..row.len()).filter(|&g| !junk(q, g)).collect();
        order.sort_by(|&a, &b| row[a].total_cmp(&row[b]));
        let positive: Vec<bool> = order.iter().map(|&g| gallery_ids[g] == query_ids[q]).collect();
        let total = positive.iter().filter(|p| **p).count();
        if total == 0 {
            skipped += 1;
            continue;
        }
        scored += 1;
        let first = positive.iter().position(|p| *p).unwrap_or(usize::MAX);
        for (hit, k) in hits.iter_mut().zip([1, 5, 10]) {
            *hit += usize::from(first < k);
        }
        let (mut found, mut precision_sum, mut last) = (0usize, 0.0, 0usize);
        for (rank, _) in positive.iter().enumerate().filter(|(_, p)| **p) {
            found += 1;
            precision_sum += found as f64 / (rank + 1) as f64;
            last = rank + 1;
        }
        ap += precision_sum / total as f64;
        inp += total as f64 / last as f64;
    }
    let mean = |x: f64| if scored == 0 { 0.0 } else { x / scored as f64 };
    Retrieval {
        queries: scored,
        skipped,
        gallery: gallery_ids.len(),
        rank1: mean(hits[0] as f64),
        rank5: mean(hits[1] as f64),
        rank10: mean(hits[2] as f64),
        map: mean(ap),
        minp: mean(inp),
    }
}

/// The cross-time protocol's junk: a gallery item of the query's own person within `within`
/// frames of it (the query itself included), given `(person, frame)` of queries and gallery.
pub fn nearby_frames<'a>(
    queries: &'a [(i64, u64)],
    gallery: &'a [(i64, u64)],
    within: u64,
) -> impl Fn(usize, usize) -> bool + 'a {
    move |q, g| {
        let ((qi, qf), (gi, gf)) = (queries[q], gallery[g]);
        qi == gi && qf.abs_diff(gf) <= within
    }
}

/// Cosine distances (1 - cosine similarity) of every query to every gallery vector.
pub fn cosine_distances(queries: &[Vec<f32>], gallery: &[Vec<f32>]) -> Vec<Vec<f64>> {
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt().max(1e-12);
    let gallery_norms: Vec<f64> = gallery.iter().map(|g| norm(g)).collect();
    queries
        .iter()
        .map(|q| {
            let nq = norm(q);
            gallery
                .iter()
                .zip(&gallery_norms)
                .map(|(g, ng)| {
                    let dot: f64 = q.iter().zip(g).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
                    1.0 - dot / (nq * ng)
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn ranks_average_precision_and_inp_come_out_exact() {
        // Query 0 (person 1) ranks the gallery [a(1) b(2) c(1) d(2) e(1)] in that order:
        // positives at ranks 1, 3, 5. AP = (1/1 + 2/3 + 3/5) / 3; INP = 3/5.
        // Query 1 (person 2) ranks it [a(1) c(1) e(1) b(2) d(2)]: positives at 4, 5.
        // AP = (1/4 + 2/5) / 2; INP = 2/5; first hit at rank 4 (a Rank-5 hit, not Rank-1).
        let gallery_ids = [1, 2, 1, 2, 1];
        let distances = vec![vec![0.1, 0.2, 0.3, 0.4, 0.5], vec![0.1, 0.4, 0.2, 0.5, 0.3]];
        let r = evaluate_retrieval(&distances, &[1, 2], &gallery_ids, |_, _| false);
        assert_eq!((r.queries, r.skipped, r.gallery), (2, 0, 5));
        assert!(close(r.rank1, 0.5) && close(r.rank5, 1.0) && close(r.rank10, 1.0), "{r:?}");
        let ap = ((1.0 + 2.0 / 3.0 + 3.0 / 5.0) / 3.0 + (1.0 / 4.0 + 2.0 / 5.0) / 2.0) / 2.0;
        assert!(close(r.map, ap), "{r:?}");
        assert!(close(r.minp, (3.0 / 5.0 + 2.0 / 5.0) / 2.0), "{r:?}");
    }

    #[test]
    fn junk_is_removed_before_ranking_and_queries_without_positives_are_skipped() {
        // Removing query 0's nearest item (its own person) moves its first hit to rank 2 of 4.
        let distances = vec![vec![0.1, 0.2, 0.3, 0.4, 0.5], vec![0.1, 0.2, 0.3, 0.4, 0.5]];
        let r = evaluate_retrieval(&distances, &[1, 3], &[1, 2, 1, 2, 1], |q, g| q == 0 && g == 0);
        assert_eq!((r.queries, r.skipped), (1, 1), "person 3 is not in the gallery");
        assert!(close(r.rank1, 0.0) && close(r.rank5, 1.0));
        assert!(close(r.map, (1.0 / 2.0 + 2.0 / 4.0) / 2.0) && close(r.minp, 2.0 / 4.0), "{r:?}");
    }

    #[test]
    fn the_cross_time_protocol_drops_the_same_person_nearby_only() {
        let items = [(1, 100), (1, 120), (1, 200), (2, 110)];
        let junk = nearby_frames(&items, &items, 20);
        assert!(junk(0, 0), "the query itself");
        assert!(junk(0, 1) && junk(1, 0), "same person 20 frames apart");
        assert!(!junk(0, 2), "same person 100 frames later is the one to find");
        assert!(!junk(0, 3), "another person nearby stays a negative");
    }

    #[test]
    fn cosine_distances_ignore_length() {
        let d = cosine_distances(&[vec![1.0, 0.0]], &[vec![3.0, 0.0], vec![0.0, 2.0], vec![-1.0, 0.0]]);
        assert!(close(d[0][0], 0.0) && close(d[0][1], 1.0) && close(d[0][2], 2.0), "{d:?}");
    }
}
