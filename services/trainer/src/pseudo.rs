//! Pseudo-identities for unlabelled tracklets: the deployment's own footage, clustered by the
//! model being trained (the cluster-based unsupervised re-ID recipe: embed, cluster, train on
//! the clusters, re-cluster as the model improves).
//!
//! Each exported tracklet starts as its own identity; a tracklet of one person seen again later
//! is then a *negative* for the triplet loss, which teaches the model to tell a person from
//! themselves. Grouping tracklets that the current model finds alike (average linkage, so one
//! close pair cannot tie two people together) turns those into positives, across time and
//! cameras. Two tracklets of one camera that overlap in time are never grouped: they are two
//! people in one frame. What people said ([`Links`]) constrains the groups too: tracklets linked
//! as one person start in one group, and tracklets linked as two people are never grouped.

use reid_cluster::{Rerank, cosine_similarities, overlap_ms, regroup_from, reranked_similarities};
use reid_server::invalid::{Invalid, ensure};
use serde::{Deserialize, Serialize};

use crate::data::Span;
use crate::data::links::Links;
use crate::memory::MemoryConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PseudoLabels {
    /// Re-cluster before every this many epochs (1: every epoch; the first epoch always).
    pub every: u32,
    /// Two groups merge while their average similarity is at least this: cosine similarity of
    /// the tracklets' mean embeddings, or with `rerank`, one minus their k-reciprocal distance.
    pub threshold: f64,
    /// Cluster on k-reciprocal re-ranked distances (k1 20, k2 6, lambda 0.3) instead of cosine.
    pub rerank: bool,
    /// `[pseudo_labels.memory]`: an identity loss on the groups, against a memory of their
    /// centroids made anew at each clustering ([`crate::memory`]).
    pub memory: Option<MemoryConfig>,
}

impl Default for PseudoLabels {
    fn default() -> Self {
        PseudoLabels { every: 2, threshold: 0.6, rerank: false, memory: None }
    }
}

impl PseudoLabels {
    /// Keys are named as the recipe writes them (`pseudo_labels.every`).
    pub fn validate(&self) -> Result<(), Invalid> {
        ensure(self.every > 0, "pseudo_labels.every", || "must be at least 1".into())?;
        let t = self.threshold;
        ensure((-1.0..=1.0).contains(&t), "pseudo_labels.threshold", || format!("{t} is not in [-1, 1]"))?;
        self.memory.as_ref().map_or(Ok(()), MemoryConfig::validate)
    }

    /// Whether the labels are re-made before `epoch` (from 1).
    pub fn due(&self, epoch: u32) -> bool {
        epoch >= 1 && (epoch - 1).is_multiple_of(self.every)
    }

    /// Groups tracklets given each one's L2-normalised mean embedding (`embeddings[t]`), span and
    /// links: a group label per tracklet, 0, 1, ... in order of first appearance.
    pub fn group(&self, embeddings: &[Vec<f32>], spans: &[Span], links: &Links) -> Vec<i64> {
        let similarity = if self.rerank {
            reranked_similarities(embeddings, Rerank::default())
        } else {
            cosine_similarities(embeddings)
        };
        let apart = |i: usize, j: usize| {
            let (a, b) = (spans[i], spans[j]);
            (a.camera == b.camera && overlap_ms((a.start_ms, a.end_ms), (b.start_ms, b.end_ms)) > 0)
                || links.different.contains(&(i, j))
        };
        let linked = links.components(embeddings.len());
        regroup_from(&similarity, &linked, self.threshold, apart).into_iter().map(|g| g as i64).collect()
    }
}

/// Per-tracklet means of per-image embeddings `[n, d]` (row-major), L2-normalised.
pub(crate) fn tracklet_means(embeddings: &[f32], dim: usize, tracklet_of: &[i64], tracklets: usize) -> Vec<Vec<f32>> {
    let mut sums = vec![vec![0f32; dim]; tracklets];
    for (row, &t) in embeddings.chunks(dim).zip(tracklet_of) {
        for (s, x) in sums[t as usize].iter_mut().zip(row) {
            *s += x;
        }
    }
    for s in &mut sums {
        let norm = s.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        s.iter_mut().for_each(|x| *x /= norm);
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(camera: i64, start_ms: i64, end_ms: i64) -> Span {
        Span { camera, start_ms, end_ms }
    }

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn tracklets_of_one_person_group_and_people_seen_together_never_do() {
        // Person A at 0-2 s and again at 10-12 s on camera 0 and at 5-6 s on camera 1; person B,
        // dressed almost alike, at 1-3 s on camera 0 (beside A's first tracklet) and at 20 s.
        let embeddings = vec![
            unit(&[1.0, 0.1, 0.0]),
            unit(&[1.0, 0.0, 0.1]),
            unit(&[1.0, 0.05, 0.05]),
            unit(&[1.0, 0.3, 0.0]),
            unit(&[1.0, 0.3, 0.02]),
        ];
        let spans = [
            span(0, 0, 2000),
            span(0, 10_000, 12_000),
            span(1, 5000, 6000),
            span(0, 1000, 3000),
            span(0, 20_000, 21_000),
        ];
        let labels =
            PseudoLabels { threshold: 0.9, ..Default::default() }.group(&embeddings, &spans, &Links::default());
        assert_eq!(labels, vec![0, 0, 0, 1, 1]);
        let reranked = PseudoLabels { threshold: 0.0, rerank: true, ..Default::default() }.group(
            &embeddings,
            &spans,
            &Links::default(),
        );
        assert_eq!(reranked, vec![0, 0, 0, 1, 1], "whatever the similarity, never across a cannot-link");
        // Were A's first and B's first tracklets not seen together, the look-alikes would merge.
        let mut apart = spans;
        apart[0] = span(0, 0, 500);
        let merged =
            PseudoLabels { threshold: 0.9, ..Default::default() }.group(&embeddings, &apart, &Links::default());
        assert_eq!(merged, vec![0; 5]);
        // A high threshold keeps every tracklet its own identity.
        let alone =
            PseudoLabels { threshold: 0.99999, ..Default::default() }.group(&embeddings, &spans, &Links::default());
        assert_eq!(alone, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn links_people_gave_hold_whatever_the_model_thinks() {
        // Two look-alikes on two cameras at different times: the model groups them at 0.9.
        let embeddings = vec![unit(&[1.0, 0.1, 0.0]), unit(&[1.0, 0.0, 0.1]), unit(&[0.0, 1.0, 0.0])];
        let spans = [span(0, 0, 1000), span(1, 5000, 6000), span(0, 9000, 9500)];
        let labels =
            |links: &Links| PseudoLabels { threshold: 0.9, ..Default::default() }.group(&embeddings, &spans, links);
        assert_eq!(labels(&Links::default()), vec![0, 0, 1]);
        // Someone said the first two are two people: they stay apart.
        let different = Links { different: [(0, 1), (1, 0)].into(), ..Links::default() };
        assert_eq!(labels(&different), vec![0, 1, 2]);
        // Someone said the first and the third are one person, though they look nothing alike:
        // they start as one group, which the second joins only where its average similarity to
        // both reaches the threshold, and never when it is linked as different to either.
        let same = Links { same: vec![(0, 2)], ..Links::default() };
        assert_eq!(labels(&same), vec![0, 1, 0], "average linkage over the group: 0.5 < 0.9");
        let both = Links { same: vec![(0, 2)], different: [(1, 2), (2, 1)].into() };
        assert_eq!(labels(&both), vec![0, 1, 0]);
        let low =
            |links: &Links| PseudoLabels { threshold: 0.4, ..Default::default() }.group(&embeddings, &spans, links);
        assert_eq!(low(&same), vec![0, 0, 0], "at 0.4 the second joins the linked pair");
        assert_eq!(low(&both), vec![0, 1, 0], "a different link to any member keeps it out");
    }

    #[test]
    fn means_are_per_tracklet_and_unit_length() {
        let rows = [3.0, 0.0, 1.0, 0.0, 0.0, 2.0];
        let means = tracklet_means(&rows, 2, &[0, 0, 1], 2);
        assert_eq!(means, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
    }

    #[test]
    fn schedule_and_bounds() {
        let every_two = PseudoLabels { every: 2, ..Default::default() };
        assert_eq!((1..=5).map(|e| every_two.due(e)).collect::<Vec<_>>(), [true, false, true, false, true]);
        assert_eq!(PseudoLabels { every: 0, ..Default::default() }.validate().unwrap_err().key, "pseudo_labels.every");
        let far = PseudoLabels { threshold: 1.5, ..Default::default() };
        assert_eq!(far.validate().unwrap_err().key, "pseudo_labels.threshold");
        assert!(PseudoLabels::default().validate().is_ok());
    }
}
