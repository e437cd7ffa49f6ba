//! k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
//! Encoding", CVPR 2017), the query-time step torchreid and FastReID offer.
//!
//! Two items are k-reciprocal neighbours when each is among the other's k nearest; a person's
//! other pictures tend to be, a look-alike tends not to be. Each item is encoded as a weighted set
//! of its k-reciprocal neighbours (expanded by the neighbours' own sets where they overlap by at
//! least two thirds, weights `exp(-distance)`, averaged over its `k2` nearest items), and the final
//! distance mixes the Jaccard distance of those sets with the original one:
//! `(1 - lambda) * jaccard + lambda * original`, each item's original distances scaled by
//! its largest first, as the paper's code does.

use std::ops::Range;

/// Settings; the paper's are k1 = 20, k2 = 6, lambda = 0.3.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rerank {
    pub k1: usize,
    pub k2: usize,
    pub lambda: f64,
}

impl Default for Rerank {
    fn default() -> Self {
        Self { k1: 20, k2: 6, lambda: 0.3 }
    }
}

/// The indices of row `i` of `d` sorted by distance (stable: ties keep index order).
fn ranked(d: &[Vec<f64>], i: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..d.len()).collect();
    order.sort_by(|&a, &b| d[i][a].total_cmp(&d[i][b]));
    order
}

/// The k-reciprocal neighbours of `i` (itself included).
fn reciprocal(rank: &[Vec<usize>], i: usize, k: usize) -> Vec<usize> {
    let k = (k + 1).min(rank.len());
    rank[i][..k].iter().copied().filter(|&j| rank[j][..k].contains(&i)).collect()
}

/// Re-ranks `all`, the square distance matrix over every item (queries and gallery together),
/// and returns the distances of the items in `queries` (rows) to those in `gallery` (columns).
/// The two ranges may be the same (a set searched against itself) or disjoint.
pub fn rerank(all: &[Vec<f64>], queries: Range<usize>, gallery: Range<usize>, r: Rerank) -> Vec<Vec<f64>> {
    let n = all.len();
    assert!(all.iter().all(|row| row.len() == n), "a square matrix over queries and gallery");
    assert!(queries.end <= n && gallery.end <= n);
    // Each item's distances scaled by its largest (the paper's code divides by column maxima and
    // transposes: row i by the largest distance to item i), which keeps every row's order.
    let largest: Vec<f64> = (0..n).map(|i| all.iter().map(|row| row[i]).fold(0.0, f64::max).max(1e-12)).collect();
    let original: Vec<Vec<f64>> =
        all.iter().zip(&largest).map(|(row, m)| row.iter().map(|d| d / m).collect()).collect();
    let rank: Vec<Vec<usize>> = (0..n).map(|i| ranked(&original, i)).collect();

    let mut v = vec![vec![0.0f64; n]; n];
    for i in 0..n {
        let base = reciprocal(&rank, i, r.k1);
        let mut expanded = base.clone();
        for &c in &base {
            let candidate = reciprocal(&rank, c, (r.k1 as f64 / 2.0).round() as usize);
            let shared = candidate.iter().filter(|x| base.contains(x)).count();
            if 3 * shared > 2 * candidate.len() {
                expanded.extend(candidate);
            }
        }
        expanded.sort_unstable();
        expanded.dedup();
        let weights: Vec<f64> = expanded.iter().map(|&j| (-original[i][j]).exp()).collect();
        let total: f64 = weights.iter().sum();
        for (&j, w) in expanded.iter().zip(&weights) {
            v[i][j] = w / total;
        }
    }
    if r.k2 > 1 {
        v = (0..n)
            .map(|i| {
                let near = &rank[i][..r.k2.min(n)];
                (0..n).map(|j| near.iter().map(|&m| v[m][j]).sum::<f64>() / near.len() as f64).collect()
            })
            .collect();
    }
    queries
        .map(|i| {
            gallery
                .clone()
                .map(|j| {
                    let common: f64 = (0..n).map(|k| v[i][k].min(v[j][k])).sum();
                    let jaccard = 1.0 - common / (2.0 - common);
                    (1.0 - r.lambda) * jaccard + r.lambda * original[i][j]
                })
                .collect()
        })
        .collect()
}

/// Similarities of L2-normalised `embeddings` among themselves after re-ranking: one minus the
/// re-ranked cosine distance, averaged over the two directions (re-ranking is not exactly
/// symmetric), for grouping by [`crate::regroup_by`]. Re-ranked similarities run lower than
/// cosine ones, and so do the thresholds used with them.
pub fn reranked_similarities(embeddings: &[Vec<f32>], r: Rerank) -> Vec<Vec<f64>> {
    let n = embeddings.len();
    let distance: Vec<Vec<f64>> =
        crate::cosine_similarities(embeddings).iter().map(|row| row.iter().map(|s| 1.0 - s).collect()).collect();
    let reranked = rerank(&distance, 0..n, 0..n, r);
    (0..n).map(|i| (0..n).map(|j| 1.0 - (reranked[i][j] + reranked[j][i]) / 2.0).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Average precision of one ranking: `same[g]` tells whether gallery item g is the query's
    /// person; returns it with the person of the nearest item.
    fn ranked(distances: &[f64], same: &[bool]) -> (f64, bool) {
        let mut order: Vec<usize> = (0..distances.len()).collect();
        order.sort_by(|&a, &b| distances[a].total_cmp(&distances[b]));
        let (mut hits, mut sum) = (0.0, 0.0);
        for (rank, &g) in order.iter().enumerate() {
            if same[g] {
                hits += 1.0;
                sum += hits / (rank + 1) as f64;
            }
        }
        (sum / hits, same[order[0]])
    }

    /// Points on a line: the distance matrix of `xs`.
    fn line(xs: &[f64]) -> Vec<Vec<f64>> {
        xs.iter().map(|a| xs.iter().map(|b| (a - b).abs()).collect()).collect()
    }

    #[test]
    fn lambda_one_keeps_the_original_order() {
        let d = line(&[0.0, 0.3, 1.0, 2.5, 2.6]);
        let r = rerank(&d, 0..2, 2..5, Rerank { k1: 2, k2: 1, lambda: 1.0 });
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].len(), 3);
        for (q, row) in r.iter().enumerate() {
            // Each query's distances scaled by its largest: 2.6 from 0.0, 2.3 from 0.3.
            let largest = [2.6, 2.3][q];
            for (g, value) in row.iter().enumerate() {
                assert!((value - d[q][g + 2] / largest).abs() < 1e-12, "{r:?}");
            }
        }
    }

    #[test]
    fn a_chain_of_one_persons_pictures_outranks_a_closer_look_alike() {
        // Person 1 drifts along a chain 0.25 .. 3.0 in steps of 0.55; person 2 sits tight at
        // 3.5 .. 3.8. The query (person 1, at 3.0) is nearer to person 2's first picture (0.5)
        // than to its own next one (0.55), but that picture's nearest are all person 2: they are
        // not k-reciprocal neighbours, while the query and its own next picture are.
        let people = [1, 1, 1, 1, 1, 1, 2, 2, 2, 2];
        let xs = [3.0, 0.25, 0.8, 1.35, 1.9, 2.45, 3.5, 3.6, 3.7, 3.8];
        let d = line(&xs);
        let same: Vec<bool> = people[1..].iter().map(|&p| p == people[0]).collect();
        let (ap_before, first_before) = ranked(&d[0][1..], &same);
        assert!(!first_before, "the look-alike is nearest");
        let reranked = rerank(&d, 0..1, 1..10, Rerank { k1: 3, k2: 1, lambda: 0.3 });
        let (ap_after, first_after) = ranked(&reranked[0], &same);
        assert!(first_after, "{reranked:?}");
        assert!(ap_after > ap_before, "{ap_after} vs {ap_before}");
        // The same chain as unit vectors, 0.2 rad a step: re-ranked similarities are symmetric
        // and put the query's own next picture above the closer look-alike.
        let unit: Vec<Vec<f32>> = xs.iter().map(|&x| vec![(0.2 * x as f32).cos(), (0.2 * x as f32).sin()]).collect();
        let s = reranked_similarities(&unit, Rerank { k1: 3, k2: 1, lambda: 0.3 });
        assert!((0..10).all(|i| (0..10).all(|j| (s[i][j] - s[j][i]).abs() < 1e-12)));
        assert!(s[0][5] > s[0][6], "{} vs {}", s[0][5], s[0][6]);
        // A set searched against itself: every item is at distance 0 from itself.
        let square = rerank(&d, 0..10, 0..10, Rerank { k1: 3, k2: 2, lambda: 0.3 });
        assert!((0..10).all(|i| square[i][i].abs() < 1e-12), "{square:?}");
    }
}
