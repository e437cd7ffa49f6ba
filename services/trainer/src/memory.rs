//! A memory of pseudo-identity centroids and the contrastive loss against it (cluster contrast:
//! Dai et al., 2021), the identity loss that pseudo-labels can carry.
//!
//! A classifier cannot follow pseudo-identities: they are re-clustered every few epochs and its
//! rows would then stand for other people. The memory is re-made at every clustering instead: row
//! `c` is the mean of the (L2-normalised, eval-mode) embeddings of the images in group `c`. A
//! batch's features `f` (normalised) are scored against every row, and each image is pulled to
//! its own group's centroid and pushed from all the others:
//!
//! `L = -log( exp(f . c_y / t) / sum_k exp(f . c_k / t) )`
//!
//! `t` the temperature. After each step, each group in the batch moves its centroid towards the
//! group's *hardest* image of the batch (the one least like the centroid) by `1 - momentum`, then
//! is normalised again: the memory follows the model as it learns, and the hard update keeps a
//! group's centroid from sitting where its easy, near-duplicate crops are.
//!
//! Unlike the triplet loss, which sees the P identities of a batch, every image here is compared
//! with every pseudo-identity at once, so no negative is ever left out because it was not sampled.

use reid_server::invalid::{Invalid, ensure};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::loss::normalise;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Weight of the memory loss, added to the metric loss.
    pub weight: f64,
    /// Softmax temperature `t`.
    pub temperature: f64,
    /// How much of its old value a centroid keeps at each update.
    pub momentum: f64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig { weight: 1.0, temperature: 0.05, momentum: 0.1 }
    }
}

impl MemoryConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        for (key, x) in
            [("pseudo_labels.memory.weight", self.weight), ("pseudo_labels.memory.temperature", self.temperature)]
        {
            ensure(x.is_finite() && x > 0.0, key, || format!("{x} must be positive"))?;
        }
        let m = self.momentum;
        ensure((0.0..1.0).contains(&m), "pseudo_labels.memory.momentum", || format!("{m} is not in [0, 1)"))
    }
}

/// The centroids `[groups, d]`, unit rows, outside autograd.
#[derive(Debug)]
pub(crate) struct ClusterMemory {
    pub centroids: Tensor,
    config: MemoryConfig,
}

impl ClusterMemory {
    /// Centroids of `embeddings` (`[n, d]`, unit rows) grouped by `labels` (`0..groups`).
    pub(crate) fn from_embeddings(embeddings: &Tensor, labels: &[i64], groups: i64, config: MemoryConfig) -> Self {
        let _guard = tch::no_grad_guard();
        let d = embeddings.size()[1];
        let index = Tensor::from_slice(labels).to_device(embeddings.device());
        let sums = Tensor::zeros([groups, d], (Kind::Float, embeddings.device())).index_add(
            0,
            &index,
            &embeddings.to_kind(Kind::Float),
        );
        ClusterMemory { centroids: normalise(&sums), config }
    }

    /// A memory with these centroids (a checkpoint's).
    pub(crate) fn with_centroids(centroids: Tensor, config: MemoryConfig) -> Self {
        ClusterMemory { centroids, config }
    }

    pub(crate) fn config(&self) -> MemoryConfig {
        self.config
    }

    /// The mean memory loss of a batch: `features` `[b, d]` (any length: normalised here), with
    /// gradient; `labels` each row's group.
    pub(crate) fn loss(&self, features: &Tensor, labels: &[i64]) -> Tensor {
        let logits = normalise(features).matmul(&self.centroids.tr()) / self.config.temperature;
        let targets = Tensor::from_slice(labels).to_device(features.device());
        logits.cross_entropy_for_logits(&targets)
    }

    /// Moves each batch group's centroid towards its hardest image of the batch (`features`
    /// detached here).
    pub(crate) fn update(&mut self, features: &Tensor, labels: &[i64]) {
        let _guard = tch::no_grad_guard();
        let f = normalise(&features.detach().to_kind(Kind::Float));
        let mut seen: Vec<i64> = labels.to_vec();
        seen.sort_unstable();
        seen.dedup();
        for group in seen {
            let rows: Vec<i64> = (0..labels.len() as i64).filter(|&i| labels[i as usize] == group).collect();
            let mine = f.index_select(0, &Tensor::from_slice(&rows).to_device(f.device()));
            let centroid = self.centroids.get(group);
            let hardest = mine.matmul(&centroid).argmin(0, false).int64_value(&[]);
            let moved = &centroid * self.config.momentum + mine.get(hardest) * (1.0 - self.config.momentum);
            let moved = &moved / moved.norm().clamp_min(1e-12);
            let mut row = self.centroids.get(group);
            row.copy_(&moved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(v: &[f32], d: i64) -> Tensor {
        Tensor::from_slice(v).view([-1, d])
    }

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
    }

    fn close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn centroids_are_the_normalised_means_of_their_groups() {
        // Group 0: (1, 0) and (0, 1) -> (1, 1)/sqrt 2; group 1: (-1, 0) alone.
        let e = rows(&[1.0, 0.0, -1.0, 0.0, 0.0, 1.0], 2);
        let memory = ClusterMemory::from_embeddings(&e, &[0, 1, 0], 2, MemoryConfig::default());
        let h = std::f32::consts::FRAC_1_SQRT_2;
        close(&values(&memory.centroids), &[h, h, -1.0, 0.0]);
    }

    #[test]
    fn the_loss_is_cross_entropy_of_similarities_over_the_temperature() {
        // Centroids (1, 0) and (0, 1), t = 0.5; the feature (3, 4) normalises to (0.6, 0.8):
        // logits (1.2, 1.6). Label 0: -log(e^1.2 / (e^1.2 + e^1.6)) = ln(1 + e^0.4) = 0.9130153;
        // label 1: ln(1 + e^-0.4) = 0.5130153. The batch loss is their mean.
        let config = MemoryConfig { temperature: 0.5, ..Default::default() };
        let memory = ClusterMemory::with_centroids(rows(&[1.0, 0.0, 0.0, 1.0], 2), config);
        let f = rows(&[3.0, 4.0], 2);
        close(&values(&memory.loss(&f, &[0])), &[0.913_015_3]);
        close(&values(&memory.loss(&f, &[1])), &[0.513_015_3]);
        let two = rows(&[3.0, 4.0, 3.0, 4.0], 2);
        close(&values(&memory.loss(&two, &[0, 1])), &[(0.913_015_3 + 0.513_015_3) / 2.0]);
    }

    #[test]
    fn the_loss_pulls_a_feature_towards_its_centroid() {
        let memory = ClusterMemory::with_centroids(rows(&[1.0, 0.0, 0.0, 1.0], 2), MemoryConfig::default());
        let f = rows(&[0.6, 0.8], 2).set_requires_grad(true);
        memory.loss(&f, &[0]).backward();
        let g = values(&f.grad());
        // Gradient descent moves the feature towards (1, 0): the gradient's x is negative.
        assert!(g[0] < 0.0 && g[1] > 0.0, "{g:?}");
    }

    #[test]
    fn an_update_moves_only_the_batch_groups_towards_their_hardest_image() {
        // Group 0 at (1, 0); its batch images (0.8, 0.6) (cos 0.8) and (0, 1) (cos 0, the hardest).
        // Momentum 0.5: (1, 0) * 0.5 + (0, 1) * 0.5 -> (1, 1)/sqrt 2. Group 1 is not in the batch.
        let config = MemoryConfig { momentum: 0.5, ..Default::default() };
        let mut memory = ClusterMemory::with_centroids(rows(&[1.0, 0.0, 0.0, -1.0], 2), config);
        memory.update(&rows(&[0.8, 0.6, 0.0, 2.0], 2), &[0, 0]);
        let h = std::f32::consts::FRAC_1_SQRT_2;
        close(&values(&memory.centroids), &[h, h, 0.0, -1.0]);
    }

    #[test]
    fn bounds() {
        assert!(MemoryConfig::default().validate().is_ok());
        let key = |m: MemoryConfig| m.validate().unwrap_err().key;
        assert_eq!(key(MemoryConfig { temperature: 0.0, ..Default::default() }), "pseudo_labels.memory.temperature");
        assert_eq!(key(MemoryConfig { weight: -1.0, ..Default::default() }), "pseudo_labels.memory.weight");
        assert_eq!(key(MemoryConfig { momentum: 1.0, ..Default::default() }), "pseudo_labels.memory.momentum");
    }
}
