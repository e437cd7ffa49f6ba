//! Batch samplers: P x K identity batches for triplet-style mining, and labelled pairs for the
//! Siamese (contrastive) loss.

use std::collections::BTreeMap;

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::error::TrainError;

/// Batches of P identities x K images each (torchreid's `RandomIdentitySampler`): every epoch,
/// each identity's images are shuffled and cut into groups of K, and batches take one group from
/// each of P different identities until fewer than P identities have groups left.
#[derive(Debug)]
pub(crate) struct PkSampler {
    by_pid: Vec<Vec<usize>>,
    p: usize,
    k: usize,
    with_replacement: bool,
    /// The label of each identity in `by_pid`, sorted.
    pids: Vec<i64>,
    /// For each identity (by position in `by_pid`), the identities to put in its batch as hard
    /// negatives.
    partners: Vec<Vec<usize>>,
}

impl PkSampler {
    /// `labels[i]` is the identity of item i. Without `with_replacement`, every identity needs at
    /// least K images; with it, smaller identities are topped up by repeating images.
    pub(crate) fn new(labels: &[i64], p: usize, k: usize, with_replacement: bool) -> Result<Self, TrainError> {
        if p < 2 || k < 2 {
            return Err(TrainError::Config(format!("P x K sampling needs P >= 2 and K >= 2, got {p} x {k}")));
        }
        let mut by_pid: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        for (i, pid) in labels.iter().enumerate() {
            by_pid.entry(*pid).or_default().push(i);
        }
        if by_pid.len() < p {
            return Err(TrainError::Dataset(format!(
                "P = {p} identities per batch, but the dataset has {}",
                by_pid.len()
            )));
        }
        let by_pid_keys: Vec<i64> = by_pid.keys().copied().collect();
        if !with_replacement && let Some((pid, items)) = by_pid.iter().find(|(_, items)| items.len() < k) {
            return Err(TrainError::Dataset(format!(
                "K = {k} images per identity, but identity {pid} has {}: lower K or allow sampling with replacement",
                items.len()
            )));
        }
        let partners = vec![Vec::new(); by_pid.len()];
        Ok(PkSampler { by_pid: by_pid.into_values().collect(), p, k, with_replacement, partners, pids: by_pid_keys })
    }

    /// Pairs of identities (labels) that must meet in one batch whenever both have images left:
    /// rejected matches, so that batch-hard and semi-hard mining see them as negatives.
    pub(crate) fn with_hard_negatives(mut self, pairs: &[(i64, i64)]) -> Self {
        let position = |pid: i64| self.pids.binary_search(&pid).ok();
        for &(a, b) in pairs {
            if let (Some(a), Some(b)) = (position(a), position(b))
                && a != b
            {
                self.partners[a].push(b);
                self.partners[b].push(a);
            }
        }
        self
    }

    /// The batches of one epoch, each `P * K` item indices grouped by identity.
    pub(crate) fn epoch(&self, rng: &mut StdRng) -> Vec<Vec<usize>> {
        let mut groups: Vec<Vec<Vec<usize>>> = self
            .by_pid
            .iter()
            .map(|items| {
                let mut items = items.clone();
                if self.with_replacement && items.len() < self.k {
                    while items.len() < self.k {
                        let pick = items[rng.gen_range(0..items.len())];
                        items.push(pick);
                    }
                }
                items.shuffle(rng);
                items.chunks_exact(self.k).map(<[usize]>::to_vec).collect()
            })
            .collect();
        let mut batches = Vec::new();
        loop {
            let mut available: Vec<usize> = (0..groups.len()).filter(|&i| !groups[i].is_empty()).collect();
            if available.len() < self.p {
                break;
            }
            available.shuffle(rng);
            // An identity with a hard-negative partner comes with it, or waits for a batch with
            // room for both; waiting ones fill what is left.
            let mut chosen: Vec<usize> = Vec::with_capacity(self.p);
            let mut waiting = Vec::new();
            for &pid in &available {
                if chosen.len() == self.p {
                    break;
                }
                if chosen.contains(&pid) {
                    continue;
                }
                match self.partners[pid].iter().find(|&&q| !groups[q].is_empty() && !chosen.contains(&q)) {
                    Some(&q) if chosen.len() + 2 <= self.p => chosen.extend([pid, q]),
                    Some(_) => waiting.push(pid),
                    None => chosen.push(pid),
                }
            }
            for pid in waiting {
                if chosen.len() < self.p && !chosen.contains(&pid) {
                    chosen.push(pid);
                }
            }
            let mut batch = Vec::with_capacity(self.p * self.k);
            for pid in chosen {
                batch.extend(groups[pid].pop().unwrap_or_default());
            }
            batches.push(batch);
        }
        batches
    }
}

/// One labelled pair for the contrastive loss. For a negative pair, `candidates` holds other
/// items of other identities: with hard negatives on, the trainer swaps `b` for the candidate
/// nearest to `a` under the current model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub a: usize,
    pub b: usize,
    pub similar: bool,
    pub candidates: Vec<usize>,
}

/// Pairs with a controllable fraction of positives, and optional hard-negative candidates.
#[derive(Debug)]
pub(crate) struct PairSampler {
    by_pid: Vec<Vec<usize>>,
    positive_fraction: f64,
    negative_candidates: usize,
}

impl PairSampler {
    pub(crate) fn new(labels: &[i64], positive_fraction: f64, negative_candidates: usize) -> Result<Self, TrainError> {
        if !(0.0..=1.0).contains(&positive_fraction) {
            return Err(TrainError::Config(format!("positive_fraction {positive_fraction} is not in [0, 1]")));
        }
        let mut by_pid: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        for (i, pid) in labels.iter().enumerate() {
            by_pid.entry(*pid).or_default().push(i);
        }
        if by_pid.len() < 2 {
            return Err(TrainError::Dataset("pairs need at least two identities".into()));
        }
        if !by_pid.values().any(|items| items.len() >= 2) {
            return Err(TrainError::Dataset("positive pairs need an identity with two images".into()));
        }
        Ok(PairSampler { by_pid: by_pid.into_values().collect(), positive_fraction, negative_candidates })
    }

    /// `n` pairs; exactly `round(n * positive_fraction)` of them similar, in random order.
    pub(crate) fn sample(&self, n: usize, rng: &mut StdRng) -> Vec<Pair> {
        let positives = (n as f64 * self.positive_fraction).round() as usize;
        let multi: Vec<&Vec<usize>> = self.by_pid.iter().filter(|items| items.len() >= 2).collect();
        let mut pairs = Vec::with_capacity(n);
        for i in 0..n {
            if i < positives {
                let items = multi[rng.gen_range(0..multi.len())];
                let mut two = items.choose_multiple(rng, 2);
                let (a, b) = (*two.next().unwrap_or(&items[0]), *two.next().unwrap_or(&items[1]));
                pairs.push(Pair { a, b, similar: true, candidates: Vec::new() });
            } else {
                let pa = rng.gen_range(0..self.by_pid.len());
                let a = *self.by_pid[pa].choose(rng).unwrap_or(&self.by_pid[pa][0]);
                let mut other = || {
                    let mut pb = rng.gen_range(0..self.by_pid.len() - 1);
                    if pb >= pa {
                        pb += 1;
                    }
                    *self.by_pid[pb].choose(rng).unwrap_or(&self.by_pid[pb][0])
                };
                let b = other();
                let candidates = (1..self.negative_candidates).map(|_| other()).collect();
                pairs.push(Pair { a, b, similar: false, candidates });
            }
        }
        pairs.shuffle(rng);
        pairs
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rand::SeedableRng;

    use super::*;

    fn labels() -> Vec<i64> {
        // 6 identities with 4, 5, 6, 7, 8, 9 images.
        (0..6).flat_map(|pid| std::iter::repeat_n(pid, 4 + pid as usize)).collect()
    }

    #[test]
    fn every_batch_has_exactly_p_identities_of_k_images() {
        let labels = labels();
        let sampler = PkSampler::new(&labels, 3, 4, false).unwrap();
        let batches = sampler.epoch(&mut StdRng::seed_from_u64(1));
        assert!(!batches.is_empty());
        let mut seen = BTreeSet::new();
        for batch in &batches {
            assert_eq!(batch.len(), 12);
            let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
            for &i in batch {
                *counts.entry(labels[i]).or_default() += 1;
                assert!(seen.insert(i), "item {i} twice in one epoch");
            }
            assert_eq!(counts.len(), 3, "{counts:?}");
            assert!(counts.values().all(|c| *c == 4), "{counts:?}");
        }
    }

    #[test]
    fn hard_negative_partners_share_batches() {
        // 12 identities of 4 images; 3 and 9 were confused and rejected.
        let labels: Vec<i64> = (0..48).map(|i| i / 4).collect();
        let plain = PkSampler::new(&labels, 3, 2, false).unwrap();
        let paired = PkSampler::new(&labels, 3, 2, false).unwrap().with_hard_negatives(&[(3, 9), (5, 404)]);
        let meets = |batches: &[Vec<usize>]| {
            batches.iter().filter(|b| b.iter().any(|&i| labels[i] == 3) && b.iter().any(|&i| labels[i] == 9)).count()
        };
        let (mut plain_meetings, mut paired_meetings, mut with_3) = (0, 0, 0);
        for seed in 0..20 {
            plain_meetings += meets(&plain.epoch(&mut StdRng::seed_from_u64(seed)));
            let batches = paired.epoch(&mut StdRng::seed_from_u64(seed));
            paired_meetings += meets(&batches);
            with_3 += batches.iter().filter(|b| b.iter().any(|&i| labels[i] == 3)).count();
            for b in &batches {
                assert_eq!(b.len(), 6);
                let ids: BTreeSet<i64> = b.iter().map(|&i| labels[i]).collect();
                assert_eq!(ids.len(), 3, "still P distinct identities");
            }
        }
        // Identity 3 has two groups of K per epoch, and 9 is in both of its batches.
        assert_eq!(paired_meetings, with_3, "every batch with 3 has 9");
        assert!(paired_meetings > 3 * plain_meetings.max(1), "{paired_meetings} vs {plain_meetings} by chance");
    }

    #[test]
    fn bad_p_and_k_are_clear_errors() {
        let labels = labels();
        let err = PkSampler::new(&labels, 3, 5, false).unwrap_err().to_string();
        assert!(err.contains("identity 0 has 4"), "{err}");
        assert!(PkSampler::new(&labels, 3, 5, true).is_ok());
        let err = PkSampler::new(&labels, 7, 2, false).unwrap_err().to_string();
        assert!(err.contains("has 6"), "{err}");
        let one = vec![0i64; 10];
        assert!(PkSampler::new(&one, 2, 2, false).is_err(), "one identity cannot make a batch");
        assert!(PairSampler::new(&one, 0.5, 1).is_err());
    }

    #[test]
    fn with_replacement_small_identities_are_topped_up() {
        let labels = [0, 0, 1, 1, 1, 1, 2, 2, 2, 2];
        let sampler = PkSampler::new(&labels, 3, 4, true).unwrap();
        let batches = sampler.epoch(&mut StdRng::seed_from_u64(2));
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].iter().filter(|&&i| labels[i] == 0).count(), 4);
    }

    #[test]
    fn pairs_have_the_asked_positive_fraction_and_valid_labels() {
        let labels = labels();
        let sampler = PairSampler::new(&labels, 0.25, 3).unwrap();
        let pairs = sampler.sample(200, &mut StdRng::seed_from_u64(3));
        assert_eq!(pairs.len(), 200);
        assert_eq!(pairs.iter().filter(|p| p.similar).count(), 50);
        for p in &pairs {
            assert_eq!(labels[p.a] == labels[p.b], p.similar);
            if p.similar {
                assert_ne!(p.a, p.b);
            } else {
                assert_eq!(p.candidates.len(), 2);
                assert!(p.candidates.iter().all(|&c| labels[c] != labels[p.a]));
            }
        }
    }
}
