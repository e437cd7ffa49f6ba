//! The metric-learning losses, exactly as the method states them, on per-pair and per-triplet
//! distance tensors:
//!
//! - contrastive (Siamese): `L = 1/2 * [ y * D^2 + (1 - y) * max(m - D, 0)^2 ]`, y = 1 for a
//!   similar pair;
//! - triplet: `L = max(Dp - Dn + m, 0)`;
//! - soft-margin triplet: `L = ln(1 + exp(Dp - Dn))` (no margin to tune);
//! - cross-entropy with label smoothing, for the BNNeck classification head.
//!
//! `D` is a distance from [`Distance`]: the Euclidean distance (not squared, as in Hadsell et al.
//! and pytorch-metric-learning's `LpDistance`; `squared` switches to the squared distance, as in
//! FaceNet) or the cosine distance `1 - cos(a, b)`.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::miner::Mined;

/// `loss.kind`: which of the losses above a run trains with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    Contrastive,
    Triplet,
    SoftTriplet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Distance {
    #[default]
    Euclidean,
    SquaredEuclidean,
    Cosine,
}

/// Pairwise distances between the rows of `x` (`[n, d]` -> `[n, n]`), differentiable.
pub(crate) fn pairwise(x: &Tensor, distance: Distance) -> Tensor {
    match distance {
        Distance::Cosine => {
            let xn = normalise(x);
            1.0 - xn.matmul(&xn.tr())
        }
        Distance::Euclidean | Distance::SquaredEuclidean => {
            let sq = x.pow_tensor_scalar(2).sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
            let d2: Tensor = (&sq + sq.tr() - x.matmul(&x.tr()) * 2.0).clamp_min(0.0);
            if distance == Distance::SquaredEuclidean {
                d2
            } else {
                // The clamp keeps the gradient of sqrt finite on the diagonal.
                d2.clamp_min(1e-12).sqrt()
            }
        }
    }
}

/// The per-triplet (or per-pair) losses of `kind` over what was mined, on the batch's
/// differentiable distance matrix `dist`: the one place a loss kind is chosen. The contrastive
/// loss takes mined triplets' distinct pairs; the triplet losses need triplets, and `None` is
/// the answer for pairs (a configuration `RunConfig::validate` refuses).
pub(crate) fn per_item(kind: LossKind, dist: &Tensor, mined: &Mined, margin: f64) -> Option<Tensor> {
    let at = |a: &[i64], b: &[i64]| {
        let device = dist.device();
        dist.index(&[Some(Tensor::from_slice(a).to_device(device)), Some(Tensor::from_slice(b).to_device(device))])
    };
    let pairs = |a: &[i64], b: &[i64], similar: &[f32]| {
        contrastive(&at(a, b), &Tensor::from_slice(similar).to_device(dist.device()), margin)
    };
    Some(match (kind, mined) {
        (LossKind::Triplet, Mined::Triplets(t)) => {
            triplet(&at(&t.anchors, &t.positives), &at(&t.anchors, &t.negatives), margin)
        }
        (LossKind::SoftTriplet, Mined::Triplets(t)) => {
            soft_margin_triplet(&at(&t.anchors, &t.positives), &at(&t.anchors, &t.negatives))
        }
        (LossKind::Contrastive, Mined::Triplets(t)) => {
            let p = t.pairs();
            pairs(&p.a, &p.b, &p.similar)
        }
        (LossKind::Contrastive, Mined::Pairs(p)) => pairs(&p.a, &p.b, &p.similar),
        (LossKind::Triplet | LossKind::SoftTriplet, Mined::Pairs(_)) => return None,
    })
}

/// Row-wise L2 normalisation.
pub(crate) fn normalise(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2, [1i64].as_slice(), true).clamp_min(1e-12)
}

/// Per-pair contrastive loss; `similar` holds 1.0 for similar pairs and 0.0 otherwise.
pub(crate) fn contrastive(d: &Tensor, similar: &Tensor, margin: f64) -> Tensor {
    let pull = similar * d.pow_tensor_scalar(2);
    let push = (1.0 - similar) * (margin - d).clamp_min(0.0).pow_tensor_scalar(2);
    0.5 * (pull + push)
}

/// Per-triplet margin loss.
pub(crate) fn triplet(dp: &Tensor, dn: &Tensor, margin: f64) -> Tensor {
    (dp - dn + margin).clamp_min(0.0)
}

/// Per-triplet soft-margin loss, `softplus(Dp - Dn)`.
pub(crate) fn soft_margin_triplet(dp: &Tensor, dn: &Tensor) -> Tensor {
    (dp - dn).softplus()
}

/// Mean cross-entropy with label smoothing `epsilon`: the target puts `1 - epsilon` on the true
/// class and spreads `epsilon` uniformly over all classes (Szegedy et al.; the BoT re-ID baseline).
pub(crate) fn cross_entropy_smoothed(logits: &Tensor, targets: &Tensor, epsilon: f64) -> Tensor {
    let classes = logits.size()[1];
    let log_probs = logits.log_softmax(1, Kind::Float);
    let one_hot = Tensor::zeros_like(&log_probs).scatter_value(1, &targets.unsqueeze(1), 1.0);
    let smoothed = one_hot * (1.0 - epsilon) + epsilon / classes as f64;
    -(smoothed * log_probs).sum_dim_intlist([1i64].as_slice(), false, Kind::Float).mean(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_slice(v)
    }

    fn close(a: &Tensor, want: &[f32]) {
        let got = Vec::<f32>::try_from(a.flatten(0, -1)).unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn contrastive_similar_branch_is_half_d_squared() {
        // y = 1: L = D^2 / 2, whatever the margin.
        close(&contrastive(&t(&[0.0, 0.5, 3.0]), &t(&[1.0, 1.0, 1.0]), 1.0), &[0.0, 0.125, 4.5]);
    }

    #[test]
    fn contrastive_dissimilar_branch_inside_and_outside_the_margin() {
        // y = 0, m = 2: D = 0.5 < m -> (2 - 0.5)^2 / 2 = 1.125; D = 2 -> 0; D = 3 > m -> 0.
        close(&contrastive(&t(&[0.5, 2.0, 3.0]), &t(&[0.0, 0.0, 0.0]), 2.0), &[1.125, 0.0, 0.0]);
    }

    #[test]
    fn triplet_is_the_hinge_on_dp_minus_dn_plus_margin() {
        // m = 0.2: (1 - 0.5 + 0.2) = 0.7; (0.5 - 1 + 0.2) < 0 -> 0; (0.5 - 0.6 + 0.2) = 0.1.
        close(&triplet(&t(&[1.0, 0.5, 0.5]), &t(&[0.5, 1.0, 0.6]), 0.2), &[0.7, 0.0, 0.1]);
        // Soft margin: ln(1 + e^(0.5)) = 0.974077, ln(1 + e^(-0.5)) = 0.474077.
        close(&soft_margin_triplet(&t(&[1.0, 0.5]), &t(&[0.5, 1.0])), &[0.974_077, 0.474_077]);
    }

    #[test]
    fn pairwise_distances_match_pytorch() {
        // torch.cdist(x, x) and 1 - cosine similarity for
        // x = [[0, 0], [3, 4], [1, 0]]:
        //   cdist = [[0, 5, 1], [5, 0, 4.4721360], [1, 4.4721360, 0]]
        let x = Tensor::from_slice(&[0.0f32, 0.0, 3.0, 4.0, 1.0, 0.0]).view([3, 2]);
        close(&pairwise(&x, Distance::Euclidean), &[0.0, 5.0, 1.0, 5.0, 0.0, 4.472_136, 1.0, 4.472_136, 0.0]);
        close(&pairwise(&x, Distance::SquaredEuclidean), &[0.0, 25.0, 1.0, 25.0, 0.0, 20.0, 1.0, 20.0, 0.0]);
        // Rows 1 and 2: cos = 3/5 -> 0.4.
        let y = Tensor::from_slice(&[3.0f32, 4.0, 1.0, 0.0]).view([2, 2]);
        close(&pairwise(&y, Distance::Cosine), &[0.0, 0.4, 0.4, 0.0]);
    }

    #[test]
    fn euclidean_gradient_is_finite_on_the_diagonal() {
        let x = Tensor::from_slice(&[1.0f32, 2.0, 1.0, 2.0]).view([2, 2]).set_requires_grad(true);
        pairwise(&x, Distance::Euclidean).sum(Kind::Float).backward();
        let g = Vec::<f32>::try_from(x.grad().flatten(0, -1)).unwrap();
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
    }

    #[test]
    fn label_smoothed_cross_entropy_matches_pytorch() {
        // torch.nn.functional.cross_entropy(torch.tensor([[2., 1., 0.]]), torch.tensor([0]),
        //                                   label_smoothing=0.1) = 0.5076059
        // and without smoothing 0.4076059.
        let logits = Tensor::from_slice(&[2.0f32, 1.0, 0.0]).view([1, 3]);
        let target = Tensor::from_slice(&[0i64]);
        close(&cross_entropy_smoothed(&logits, &target, 0.1), &[0.507_606]);
        close(&cross_entropy_smoothed(&logits, &target, 0.0), &[0.407_606]);
    }
}
