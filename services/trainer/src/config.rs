//! A training run's configuration: one TOML (or JSON) document.
//!
//! ```toml
//! name = "fmnist-triplet"
//! [dataset]
//! kind = "fashion_mnist"          # or mnist, idx, folders, market1501, tracklets
//! [model]
//! architecture = "small_cnn"      # or mobilenet_v2
//! embedding_dim = 10
//! [loss]
//! kind = "triplet"                # contrastive, triplet, soft_triplet
//! margin = 0.2
//! [miner]
//! kind = "batch_hard"             # random, batch_all, batch_hard, semi_hard
//! [sampler]
//! kind = "pk"                     # pk (P identities x K images) or pairs
//! p = 16
//! k = 4
//! [training]
//! epochs = 10
//! ```

use std::path::{Path, PathBuf};

use reid_model::{ColorOrder, DevicePreference, InputSpec, Normalization};
use serde::{Deserialize, Serialize};

use crate::adam::AdamConfig;
use crate::augment::Augment;
use crate::data::DatasetConfig;
use crate::error::TrainError;
use crate::loss::Distance;
pub use crate::loss::LossKind;
use crate::miner::Miner;
use crate::pseudo::PseudoLabels;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The model id written into the exported card.
    #[serde(default = "default_name")]
    pub name: String,
    pub dataset: DatasetConfig,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub loss: LossConfig,
    #[serde(default)]
    pub miner: MinerConfig,
    #[serde(default)]
    pub sampler: SamplerConfig,
    #[serde(default)]
    pub optimizer: AdamConfig,
    #[serde(default)]
    pub augment: Augment,
    /// Cluster a tracklets dataset's tracklets into pseudo-identities as training goes (off:
    /// each tracklet is its own identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pseudo_labels: Option<PseudoLabels>,
    #[serde(default)]
    pub training: TrainingConfig,
}

/// Most images in one P x K batch.
pub const MAX_BATCH: usize = 65_536;

/// A run's name becomes part of its folder: plain names only.
pub fn is_run_name(name: &str) -> bool {
    name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn default_name() -> String {
    "reid-model".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub architecture: String,
    pub embedding_dim: u32,
    pub width: u32,
    pub height: u32,
    pub color: ColorOrder,
    /// Default: mean 0.5 / std 0.5 per channel for grey images, ImageNet statistics for colour.
    pub normalization: Option<Normalization>,
    /// A model folder (or safetensors file) whose weights initialise the network, e.g.
    /// `models/mobilenetv2-imagenet`. Variables it lacks keep their random initialisation.
    pub init: Option<PathBuf>,
    /// Train and evaluate on L2-normalised embeddings, as the embedder serves them.
    pub normalize_embeddings: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            architecture: "small_cnn".into(),
            embedding_dim: 10,
            width: 28,
            height: 28,
            color: ColorOrder::Gray,
            normalization: None,
            init: None,
            normalize_embeddings: true,
        }
    }
}

impl ModelConfig {
    pub fn input(&self) -> InputSpec {
        InputSpec { width: self.width, height: self.height, color: self.color }
    }

    pub fn normalization(&self) -> Normalization {
        self.normalization.clone().unwrap_or_else(|| match self.color {
            ColorOrder::Gray => Normalization::MeanStd { mean: vec![0.5], std: vec![0.5] },
            ColorOrder::Rgb | ColorOrder::Bgr => {
                Normalization::MeanStd { mean: vec![0.485, 0.456, 0.406], std: vec![0.229, 0.224, 0.225] }
            }
        })
    }
}

/// How per-pair or per-triplet losses become the batch loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Reduction {
    /// Mean over every mined pair or triplet.
    #[default]
    Mean,
    /// Mean over those with non-zero loss: keeps the gradient from fading as triplets get easy.
    MeanNonzero,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    pub kind: LossKind,
    pub margin: f64,
    pub distance: Distance,
    pub reduction: Reduction,
    /// Weight of the cross-entropy (label smoothing) loss on a BNNeck classification head; 0 off.
    pub ce_weight: f64,
    pub label_smoothing: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            kind: LossKind::Triplet,
            margin: 0.2,
            distance: Distance::Euclidean,
            reduction: Reduction::Mean,
            ce_weight: 0.0,
            label_smoothing: 0.1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct MinerConfig {
    pub kind: Miner,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    /// P identities x K images per batch; the miner picks pairs or triplets inside.
    Pk,
    /// Labelled pairs for the contrastive loss.
    Pairs,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplerConfig {
    pub kind: SamplerKind,
    pub p: usize,
    pub k: usize,
    /// Repeat images of identities with fewer than K (otherwise they are an error).
    pub with_replacement: bool,
    pub pairs_per_batch: usize,
    pub positive_fraction: f64,
    /// Negatives drawn per negative pair; above 1, the nearest one under the current model is used
    /// (hard negatives).
    pub negative_candidates: usize,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            kind: SamplerKind::Pk,
            p: 16,
            k: 4,
            with_replacement: false,
            pairs_per_batch: 64,
            positive_fraction: 0.5,
            negative_candidates: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingConfig {
    pub epochs: u32,
    /// Batches per epoch; 0 takes what the sampler yields (P x K: each image about once).
    pub steps_per_epoch: usize,
    pub seed: u64,
    pub device: DevicePreference,
    /// libtorch intra-op threads (0: libtorch's default).
    pub threads: usize,
    /// Items whose pairs make the verification ROC (all pairs of a random subset).
    pub verification_items: usize,
    /// Which epoch `best/` (what is published) holds.
    pub keep: Keep,
    /// The open-set threshold the card gets, in place of the held-out one at FAR 1e-3: for
    /// tracklets, whose held-out measure counts each tracklet as its own identity (so two
    /// tracklets of one person are an impostor pair and push that threshold up), the operating
    /// point measured on labelled ground truth (`reid eval mtmc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_threshold: Option<f64>,
    /// The identity service's merge pass threshold measured for this model (`reid eval mtmc
    /// --replay merge=T`), written into the card; none when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_threshold: Option<f64>,
    /// Serve the model with test-time flip augmentation (the card's `flip`: each crop embedded
    /// with its mirror image, the two averaged), and evaluate it so. Training and the
    /// pseudo-labels' clustering are unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flip: bool,
}

/// The epoch a run keeps as its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// The epoch with the highest held-out mAP.
    #[default]
    BestMap,
    /// The last epoch. For pseudo-labelled tracklets: their held-out measure counts every
    /// tracklet as its own identity, so it falls as the model learns that two tracklets of one
    /// person are one person (what the pseudo-labels teach); the schedule decides instead.
    Last,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            epochs: 10,
            steps_per_epoch: 0,
            seed: 0,
            device: DevicePreference::Cpu,
            threads: 0,
            verification_items: 2000,
            keep: Keep::BestMap,
            match_threshold: None,
            merge_threshold: None,
            flip: false,
        }
    }
}

impl RunConfig {
    /// Reads TOML (or JSON when the text starts with `{`).
    pub fn parse(text: &str) -> Result<RunConfig, TrainError> {
        let config: RunConfig = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| TrainError::Config(e.to_string()))?
        } else {
            toml::from_str(text).map_err(|e| TrainError::Config(e.to_string()))?
        };
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<RunConfig, TrainError> {
        let text = std::fs::read_to_string(path).map_err(TrainError::io(path))?;
        Self::parse(&text).map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))
    }

    /// Every path the run reads: the dataset's, and the weights it starts from.
    pub fn paths(&self) -> Vec<&Path> {
        let mut paths = self.dataset.paths();
        paths.extend(self.model.init.as_deref());
        paths
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.training.epochs == 0 {
            return bad("training.epochs must be at least 1".into());
        }
        for (key, t) in
            [("match_threshold", self.training.match_threshold), ("merge_threshold", self.training.merge_threshold)]
        {
            if let Some(t) = t.filter(|t| !(-1.0..=1.0).contains(t)) {
                return bad(format!("training.{key} {t} is not a cosine similarity in [-1, 1]"));
            }
        }
        if self.loss.kind != LossKind::SoftTriplet && self.loss.margin <= 0.0 {
            return bad(format!("loss.margin must be positive, got {}", self.loss.margin));
        }
        if self.sampler.kind == SamplerKind::Pairs && self.loss.kind != LossKind::Contrastive {
            return bad("the pairs sampler feeds the contrastive loss only".into());
        }
        if self.sampler.kind == SamplerKind::Pairs
            && (self.sampler.pairs_per_batch == 0 || self.sampler.negative_candidates == 0)
        {
            return bad("sampler.pairs_per_batch and negative_candidates must be positive".into());
        }
        if let Some(pseudo) = &self.pseudo_labels {
            pseudo.validate().map_err(|e| TrainError::Config(e.to_string()))?;
            if !matches!(self.dataset, DatasetConfig::Tracklets { .. }) {
                return bad("pseudo_labels cluster tracklets: the dataset must be kind = \"tracklets\"".into());
            }
            if self.loss.ce_weight > 0.0 {
                return bad("pseudo_labels change the identities between epochs: a classifier (loss.ce_weight) cannot follow them".into());
            }
        }
        if !is_run_name(&self.name) {
            return bad(format!(
                "name {:?}: 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit (it names the run's folder)",
                reid_server::truncated(&self.name, 64)
            ));
        }
        let (p, k) = (self.sampler.p, self.sampler.k);
        if self.sampler.kind == SamplerKind::Pk && p.checked_mul(k).is_none_or(|n| n > MAX_BATCH) {
            return bad(format!("a {p} x {k} batch is larger than {MAX_BATCH} images"));
        }
        let every_triplet = matches!(self.miner.kind, Miner::BatchAll | Miner::SemiHard);
        // anchors (p k) x positives (k - 1) x negatives ((p - 1) k), in u128: no overflow for any p, k.
        let triplets = |p: usize, k: usize| {
            let (p, k) = (p as u128, k as u128);
            p * k * k.saturating_sub(1) * p.saturating_sub(1) * k
        };
        if self.sampler.kind == SamplerKind::Pk && every_triplet && triplets(p, k) > 5_000_000 {
            return bad(format!(
                "a {p} x {k} batch has {} triplets, too many to enumerate: use a smaller batch or the batch_hard miner",
                triplets(p, k)
            ));
        }
        if !(0.0..1.0).contains(&self.loss.label_smoothing) || self.loss.ce_weight < 0.0 {
            return bad("loss.label_smoothing must be in [0, 1) and ce_weight non-negative".into());
        }
        if self.optimizer.lr <= 0.0 {
            return bad("optimizer.lr must be positive".into());
        }
        if !reid_model::nets::ARCHITECTURES.contains(&self.model.architecture.as_str()) {
            return bad(format!(
                "unknown architecture {:?} (known: {})",
                self.model.architecture,
                reid_model::nets::ARCHITECTURES.join(", ")
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_toml_takes_defaults() {
        let c = RunConfig::parse("[dataset]\nkind = \"fashion_mnist\"\n").unwrap();
        assert_eq!(c.model.embedding_dim, 10);
        assert_eq!(c.miner.kind, Miner::BatchHard);
        assert_eq!(c.sampler.p * c.sampler.k, 64);
        let DatasetConfig::FashionMnist { classes, .. } = &c.dataset else { panic!() };
        assert_eq!(classes.eval_classes, vec![5, 6, 7, 8, 9]);
        // Round trip.
        assert_eq!(RunConfig::parse(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn bad_configs_are_clear_errors() {
        for (text, needle) in [
            ("[dataset]\nkind = \"fashion_mnist\"\n[training]\nepochs = 0\n", "epochs"),
            ("[dataset]\nkind = \"fashion_mnist\"\n[loss]\nmargin = -1.0\n", "margin"),
            ("[dataset]\nkind = \"fashion_mnist\"\n[sampler]\nkind = \"pairs\"\n", "contrastive"),
            ("[dataset]\nkind = \"fashion_mnist\"\n[model]\narchitecture = \"resnet9000\"\n", "resnet9000"),
            ("[dataset]\nkind = \"imagenet\"\n", "imagenet"),
            ("[dataset]\nkind = \"fashion_mnist\"\n[loss]\nmargn = 1.0\n", "margn"),
            ("name = \"../../x\"\n[dataset]\nkind = \"fashion_mnist\"\n", "name"),
            ("name = \"/tmp/x\"\n[dataset]\nkind = \"fashion_mnist\"\n", "name"),
            ("name = \"..\"\n[dataset]\nkind = \"fashion_mnist\"\n", "name"),
            // P x K products that overflowed the triplet count before.
            ("[dataset]\nkind = \"fashion_mnist\"\n[sampler]\np = 4294967296\nk = 4294967296\n", "larger than"),
            (
                "[dataset]\nkind = \"fashion_mnist\"\n[sampler]\np = 64\nk = 64\n[miner]\nkind = \"batch_all\"\n",
                "triplets",
            ),
        ] {
            let err = RunConfig::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
