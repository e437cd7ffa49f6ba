//! Triplet mining over a batch's distance matrix. As training goes on most triplets become easy
//! (zero loss) and a randomly sampled batch stops teaching anything; miners keep the informative
//! ones:
//!
//! - `random`: one random positive and one random negative per anchor (the baseline that stalls);
//! - `batch_all`: every valid triplet of the batch;
//! - `batch_hard`: per anchor, its farthest positive and nearest negative (Hermans et al., 2017);
//! - `semi_hard`: every triplet whose negative lies beyond the positive but within the margin,
//!   `0 < Dn - Dp <= m` (Schroff et al., 2015; pytorch-metric-learning's "semihard").

use std::collections::BTreeSet;

use rand::Rng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Miner {
    Random,
    BatchAll,
    #[default]
    BatchHard,
    SemiHard,
}

/// Triplets as parallel index lists into the batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Triplets {
    pub anchors: Vec<i64>,
    pub positives: Vec<i64>,
    pub negatives: Vec<i64>,
}

impl Triplets {
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    fn push(&mut self, a: usize, p: usize, n: usize) {
        self.anchors.push(a as i64);
        self.positives.push(p as i64);
        self.negatives.push(n as i64);
    }

    /// The distinct unordered pairs the triplets contain, for the contrastive loss: every
    /// anchor-positive pair as similar, every anchor-negative pair as dissimilar.
    pub fn pairs(&self) -> Pairs {
        let mut seen = BTreeSet::new();
        let mut pairs = Pairs::default();
        let all = self.anchors.iter().zip(&self.positives).map(|(a, b)| (*a, *b, true));
        let all = all.chain(self.anchors.iter().zip(&self.negatives).map(|(a, b)| (*a, *b, false)));
        for (a, b, similar) in all {
            if seen.insert((a.min(b), a.max(b))) {
                pairs.a.push(a);
                pairs.b.push(b);
                pairs.similar.push(if similar { 1.0 } else { 0.0 });
            }
        }
        pairs
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pairs {
    pub a: Vec<i64>,
    pub b: Vec<i64>,
    pub similar: Vec<f32>,
}

/// What a batch's mining gave the loss: triplets (P x K batches) or labelled pairs (the pair
/// sampler).
#[derive(Debug, Clone, PartialEq)]
pub enum Mined {
    Triplets(Triplets),
    Pairs(Pairs),
}

impl Mined {
    pub fn is_empty(&self) -> bool {
        match self {
            Mined::Triplets(t) => t.is_empty(),
            Mined::Pairs(p) => p.a.is_empty(),
        }
    }
}

/// Sampled pairs as positions in the batch `indices` (sorted, the images the batch embedded),
/// each pair's second image replaced by the hardest of its negative candidates: the one nearest
/// to the first image under `dist` (`n` x `n` over the batch), when nearer than the sampled one.
pub fn hardest_pairs(pairs: &[crate::sampler::Pair], indices: &[usize], dist: &[f32]) -> Pairs {
    let n = indices.len();
    assert_eq!(dist.len(), n * n, "distance matrix shape");
    let pos = |i: usize| indices.binary_search(&i).unwrap_or(0);
    let mut out = Pairs::default();
    for p in pairs {
        let (a, mut b) = (pos(p.a), pos(p.b));
        for c in p.candidates.iter().map(|&c| pos(c)) {
            if dist[a * n + c] < dist[a * n + b] {
                b = c;
            }
        }
        out.a.push(a as i64);
        out.b.push(b as i64);
        out.similar.push(if p.similar { 1.0 } else { 0.0 });
    }
    out
}

/// Mines triplets from `dist` (`n` x `n`, row-major) for the batch's `labels`.
pub fn mine(miner: Miner, dist: &[f32], labels: &[i64], margin: f32, rng: &mut StdRng) -> Triplets {
    let n = labels.len();
    assert_eq!(dist.len(), n * n, "distance matrix shape");
    let d = |i: usize, j: usize| dist[i * n + j];
    let mut out = Triplets::default();
    for a in 0..n {
        let positives: Vec<usize> = (0..n).filter(|&j| j != a && labels[j] == labels[a]).collect();
        let negatives: Vec<usize> = (0..n).filter(|&j| labels[j] != labels[a]).collect();
        if positives.is_empty() || negatives.is_empty() {
            continue;
        }
        match miner {
            Miner::Random => {
                let p = positives[rng.gen_range(0..positives.len())];
                let neg = negatives[rng.gen_range(0..negatives.len())];
                out.push(a, p, neg);
            }
            Miner::BatchAll => {
                for &p in &positives {
                    for &neg in &negatives {
                        out.push(a, p, neg);
                    }
                }
            }
            Miner::BatchHard => {
                // Ties go to the lowest index, so results are reproducible.
                let p = positives.iter().copied().reduce(|x, y| if d(a, y) > d(a, x) { y } else { x });
                let neg = negatives.iter().copied().reduce(|x, y| if d(a, y) < d(a, x) { y } else { x });
                if let (Some(p), Some(neg)) = (p, neg) {
                    out.push(a, p, neg);
                }
            }
            Miner::SemiHard => {
                for &p in &positives {
                    for &neg in &negatives {
                        let gap = d(a, neg) - d(a, p);
                        if gap > 0.0 && gap <= margin {
                            out.push(a, p, neg);
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    /// Four points on a line at 0, 1, 3, 3.5 with labels A A B B.
    fn line() -> (Vec<f32>, Vec<i64>) {
        let x = [0.0f32, 1.0, 3.0, 3.5];
        let dist = x.iter().flat_map(|a| x.iter().map(move |b| (a - b).abs())).collect();
        (dist, vec![0, 0, 1, 1])
    }

    fn as_tuples(t: &Triplets) -> Vec<(i64, i64, i64)> {
        (0..t.len()).map(|i| (t.anchors[i], t.positives[i], t.negatives[i])).collect()
    }

    #[test]
    fn batch_hard_takes_farthest_positive_and_nearest_negative() {
        let (dist, labels) = line();
        let t = mine(Miner::BatchHard, &dist, &labels, 0.5, &mut StdRng::seed_from_u64(0));
        // Anchor 0: positive 1 (only one), nearest negative 2 (d 3 < 3.5).
        // Anchor 1: positive 0, nearest negative 2 (d 2). Anchor 2: positive 3, nearest negative 1.
        // Anchor 3: positive 2, nearest negative 1 (d 2.5).
        assert_eq!(as_tuples(&t), vec![(0, 1, 2), (1, 0, 2), (2, 3, 1), (3, 2, 1)]);
    }

    #[test]
    fn batch_hard_with_several_positives_takes_the_farthest() {
        // Points 0, 1, 5 of class A and 2 of class B: anchor 0's farthest positive is index 2.
        let x = [0.0f32, 1.0, 5.0, 2.0];
        let dist: Vec<f32> = x.iter().flat_map(|a| x.iter().map(move |b| (a - b).abs())).collect();
        let t = mine(Miner::BatchHard, &dist, &[0, 0, 0, 1], 1.0, &mut StdRng::seed_from_u64(0));
        assert_eq!(as_tuples(&t)[0], (0, 2, 3));
    }

    #[test]
    fn batch_all_enumerates_every_valid_triplet() {
        let (dist, labels) = line();
        let t = mine(Miner::BatchAll, &dist, &labels, 0.5, &mut StdRng::seed_from_u64(0));
        // Each of 4 anchors has 1 positive and 2 negatives.
        assert_eq!(t.len(), 8);
        assert!(as_tuples(&t).contains(&(3, 2, 0)));
    }

    #[test]
    fn semi_hard_keeps_negatives_just_beyond_the_positive() {
        let (dist, labels) = line();
        // Gaps Dn - Dp: anchor 2 (Dp 0.5): n=1 -> 2 - 0.5 = 1.5, n=0 -> 2.5.
        // Anchor 3 (Dp 0.5): n=1 -> 2.0, n=0 -> 3.0. Anchor 1 (Dp 1): n=2 -> 1.0, n=3 -> 1.5.
        // Anchor 0 (Dp 1): n=2 -> 2.0, n=3 -> 2.5. With m = 1.5: (1,0,2), (1,0,3), (2,3,1).
        let t = mine(Miner::SemiHard, &dist, &labels, 1.5, &mut StdRng::seed_from_u64(0));
        assert_eq!(as_tuples(&t), vec![(1, 0, 2), (1, 0, 3), (2, 3, 1)]);
        // A zero gap is not semi-hard.
        let t = mine(
            Miner::SemiHard,
            &[0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0],
            &[0, 0, 1],
            1.0,
            &mut StdRng::seed_from_u64(0),
        );
        assert!(t.is_empty());
    }

    #[test]
    fn random_gives_one_valid_triplet_per_anchor() {
        let labels = [0, 0, 0, 1, 1, 2];
        let dist = vec![1.0f32; 36];
        let t = mine(Miner::Random, &dist, &labels, 1.0, &mut StdRng::seed_from_u64(4));
        // Anchor 5 has no positive.
        assert_eq!(t.len(), 5);
        for (a, p, n) in as_tuples(&t) {
            let (a, p, n) = (a as usize, p as usize, n as usize);
            assert!(a != p && labels[a] == labels[p] && labels[a] != labels[n]);
        }
    }

    #[test]
    fn a_pair_s_negative_is_its_hardest_candidate() {
        use crate::sampler::Pair;
        // Batch images 10, 20, 30, 40 on a line at 0, 1, 3, 3.5 (positions 0..3).
        let (dist, _) = line();
        let pair = |a, b, similar, candidates: Vec<usize>| Pair { a, b, similar, candidates };
        let pairs = [
            pair(10, 40, false, vec![30, 20]), // 20 (d 1) is nearer to 10 than 40 (d 3.5) and 30 (d 3)
            pair(40, 10, false, vec![20]),     // 20 (d 2.5) is nearer than 10 (d 3.5)
            pair(30, 40, true, vec![]),        // a positive keeps its partner
            pair(20, 30, false, vec![10]),     // 10 (d 1) vs 30 (d 2): 10
            pair(10, 20, false, vec![40]),     // 40 (d 3.5) is farther: the sampled one stays
        ];
        let p = hardest_pairs(&pairs, &[10, 20, 30, 40], &dist);
        assert_eq!(p.a, vec![0, 3, 2, 1, 0]);
        assert_eq!(p.b, vec![1, 1, 3, 0, 1]);
        assert_eq!(p.similar, vec![0.0, 0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn pairs_are_distinct_and_labelled() {
        let (dist, labels) = line();
        let t = mine(Miner::BatchAll, &dist, &labels, 0.5, &mut StdRng::seed_from_u64(0));
        let pairs = t.pairs();
        // 2 positive pairs {0,1}, {2,3} and 4 negative pairs.
        assert_eq!(pairs.similar.iter().filter(|s| **s == 1.0).count(), 2);
        assert_eq!(pairs.similar.len(), 6);
    }
}
