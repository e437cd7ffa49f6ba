//! Global re-grouping of tracklets into identities: average-linkage agglomerative clustering
//! under cannot-link constraints, as a pure function.
//!
//! Matching each tracklet to its single nearest identity as it arrives lets errors accumulate: a
//! look-alike joins an identity, the identity's gallery now holds two people, and it draws in
//! more of both ("chaining"). Re-grouping a window of tracklets at once decides on all their
//! similarities together instead: two groups merge only when their *average* pairwise similarity
//! is high enough, so one close pair cannot tie two people together, and never when any pair
//! across them must be different people (two tracklets seen at the same time on one camera; an
//! operator's REJECT).

use crate::overlap_ms;

/// One tracklet: its camera, time span and aggregated, L2-normalised embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracklet {
    pub camera: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub embedding: Vec<f32>,
}

/// Two tracklets of one camera that overlap in time are two people.
pub fn seen_together(a: &Tracklet, b: &Tracklet) -> bool {
    a.camera == b.camera && overlap_ms((a.start_ms, a.end_ms), (b.start_ms, b.end_ms)) > 0
}

/// Every pair's cosine similarity, for L2-normalised embeddings (their dot products).
pub fn cosine_similarities(embeddings: &[Vec<f32>]) -> Vec<Vec<f64>> {
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    embeddings.iter().map(|a| embeddings.iter().map(|b| dot(a, b)).collect()).collect()
}

/// Groups `tracklets`: the label of each (0, 1, ... in order of first appearance). Groups merge
/// while the best pair's average cosine similarity is at least `threshold` and no tracklet of
/// one `cannot_link`s any of the other.
pub fn regroup(tracklets: &[Tracklet], threshold: f64, cannot_link: impl Fn(usize, usize) -> bool) -> Vec<usize> {
    let embeddings: Vec<Vec<f32>> = tracklets.iter().map(|t| t.embedding.clone()).collect();
    regroup_by(&cosine_similarities(&embeddings), threshold, cannot_link)
}

/// [`regroup`] on any symmetric similarity matrix (e.g. one minus re-ranked distances).
pub fn regroup_by(similarity: &[Vec<f64>], threshold: f64, cannot_link: impl Fn(usize, usize) -> bool) -> Vec<usize> {
    let singletons: Vec<usize> = (0..similarity.len()).collect();
    regroup_from(similarity, &singletons, threshold, cannot_link)
}

/// [`regroup_by`] starting from the groups `initial` labels (e.g. the identities that matching
/// tracklets as they arrived made), which only merge: a group is never split, even where one of
/// its pairs `cannot_link` (that blocks its merges with others only).
pub fn regroup_from(
    similarity: &[Vec<f64>],
    initial: &[usize],
    threshold: f64,
    cannot_link: impl Fn(usize, usize) -> bool,
) -> Vec<usize> {
    let n = similarity.len();
    assert_eq!(initial.len(), n, "one initial label per tracklet");
    let mut groups = Groups::new(similarity, cannot_link);
    let mut first_of = std::collections::HashMap::new();
    for (i, label) in initial.iter().enumerate() {
        match first_of.get(label) {
            Some(&a) => groups.join(a, i),
            None => {
                first_of.insert(*label, i);
            }
        }
    }
    loop {
        let mut best: Option<(f64, usize, usize)> = None;
        for a in (0..n).filter(|&a| groups.alive[a]) {
            for b in (a + 1..n).filter(|&b| groups.alive[b] && !groups.blocked[a][b]) {
                let average = groups.sum[a][b] / (groups.size[a] * groups.size[b]) as f64;
                if average >= threshold && best.is_none_or(|(s, _, _)| average > s) {
                    best = Some((average, a, b));
                }
            }
        }
        let Some((_, a, b)) = best else { break };
        groups.join(a, b);
    }
    groups.labels()
}

/// Live groups, each kept at its first member: the sum of pairwise similarities to every other
/// group, its size, and whether any pair across is forbidden.
struct Groups {
    sum: Vec<Vec<f64>>,
    blocked: Vec<Vec<bool>>,
    size: Vec<usize>,
    alive: Vec<bool>,
    parent: Vec<usize>,
}

impl Groups {
    fn new(similarity: &[Vec<f64>], cannot_link: impl Fn(usize, usize) -> bool) -> Self {
        let n = similarity.len();
        let mut sum = vec![vec![0.0f64; n]; n];
        let mut blocked = vec![vec![false; n]; n];
        for i in 0..n {
            for j in i + 1..n {
                let s = similarity[i][j];
                let no = cannot_link(i, j);
                (sum[i][j], sum[j][i]) = (s, s);
                (blocked[i][j], blocked[j][i]) = (no, no);
            }
        }
        Self { sum, blocked, size: vec![1; n], alive: vec![true; n], parent: (0..n).collect() }
    }

    /// `b` joins `a`.
    fn join(&mut self, a: usize, b: usize) {
        for k in 0..self.sum.len() {
            self.sum[a][k] += self.sum[b][k];
            self.sum[k][a] = self.sum[a][k];
            self.blocked[a][k] |= self.blocked[b][k];
            self.blocked[k][a] = self.blocked[a][k];
        }
        self.size[a] += self.size[b];
        self.alive[b] = false;
        self.parent[b] = a;
    }

    /// Each member's group, numbered 0, 1, ... in order of first appearance.
    fn labels(&self) -> Vec<usize> {
        crate::components(self.parent.len(), self.parent.iter().copied().enumerate())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(camera: &str, start_ms: i64, end_ms: i64, angle: f32) -> Tracklet {
        Tracklet { camera: camera.into(), start_ms, end_ms, embedding: vec![angle.cos(), angle.sin()] }
    }

    #[test]
    fn a_chain_of_close_pairs_does_not_tie_two_people_together() {
        // Person A around 0 rad, person B around 0.9 rad, and a tracklet half-way (0.45) that
        // is close to one of each. Nearest-match association would chain all of them; average
        // linkage keeps A and B apart and puts the in-between tracklet with one side.
        let tracklets = vec![
            t("west", 0, 10, 0.0),
            t("east", 0, 10, 0.05),
            t("west", 20, 30, 0.9),
            t("east", 20, 30, 0.85),
            t("west", 40, 50, 0.45),
        ];
        // cos(0.45) = 0.90: the in-between tracklet is that close to both sides.
        let labels = regroup(&tracklets, 0.89, |_, _| false);
        assert_eq!(labels[0], labels[1]);
        assert_eq!(labels[2], labels[3]);
        assert_ne!(labels[0], labels[2], "{labels:?}");
    }

    #[test]
    fn tracklets_seen_together_on_one_camera_are_never_grouped() {
        // Two people dressed alike (the same embedding) walk side by side on one camera, then one
        // of them is seen on the other camera.
        let tracklets = vec![t("west", 0, 100, 0.0), t("west", 50, 150, 0.0), t("east", 500, 600, 0.01)];
        let labels = regroup(&tracklets, 0.9, |i, j| seen_together(&tracklets[i], &tracklets[j]));
        assert_ne!(labels[0], labels[1]);
        assert!(labels[2] == labels[0] || labels[2] == labels[1], "{labels:?}");
        // Without the constraint all three are one.
        assert_eq!(regroup(&tracklets, 0.9, |_, _| false), vec![0, 0, 0]);
        // Below the threshold nothing merges; labels follow first appearance.
        assert_eq!(regroup(&tracklets, 1.1, |_, _| false), vec![0, 1, 2]);
        assert!(regroup(&[], 0.5, |_, _| false).is_empty());
    }

    #[test]
    fn starting_groups_only_merge_by_their_average() {
        // Given: {0, 1} (one person), {2} and {3} (each alone). 2 is close to 0 alone, 3 to both.
        let similarity = vec![
            vec![1.0, 0.8, 0.9, 0.85],
            vec![0.8, 1.0, 0.5, 0.85],
            vec![0.9, 0.5, 1.0, 0.2],
            vec![0.85, 0.85, 0.2, 1.0],
        ];
        // Averages with {0, 1}: 2 -> (0.9 + 0.5) / 2 = 0.7; 3 -> 0.85.
        assert_eq!(regroup_from(&similarity, &[7, 7, 8, 9], 0.8, |_, _| false), vec![0, 0, 1, 0]);
        // From singletons, 0 and 2 (0.9) pair first and 1 never joins them at 0.8.
        assert_eq!(regroup_by(&similarity, 0.8, |_, _| false), vec![0, 1, 0, 1]);
        // A given group is kept even where a pair inside it cannot link; it blocks merges only.
        let labels = regroup_from(&similarity, &[7, 7, 8, 9], 0.8, |i, j| (i, j) == (0, 1) || (i, j) == (1, 3));
        assert_eq!(labels, vec![0, 0, 1, 2]);
        // Nothing above the threshold: the given groups as they were, renumbered.
        assert_eq!(regroup_from(&similarity, &[5, 3, 5, 3], 0.99, |_, _| false), vec![0, 1, 0, 1]);
    }
}
