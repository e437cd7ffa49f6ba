//! The network being trained: a backbone from `reid_model::nets` (the very definition the
//! embedder serves) and, when cross-entropy is on, a BNNeck classification head (Luo et al.,
//! 2019: the triplet loss sees the features, the classifier sees them batch-normalised). Only the
//! backbone is exported.

use std::path::Path;

use reid_model::nets;
use tch::nn::{self, Module, ModuleT};
use tch::{Device, Tensor};

use crate::config::RunConfig;
use crate::error::TrainError;

const HEAD: &str = "head";

pub(crate) struct TrainModel {
    pub vs: nn::VarStore,
    net: Box<dyn ModuleT + Send>,
    head: Option<BnNeck>,
}

impl std::fmt::Debug for TrainModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainModel").field("head", &self.head.is_some()).finish()
    }
}

struct BnNeck {
    bn: nn::BatchNorm,
    classifier: nn::Linear,
}

impl TrainModel {
    pub(crate) fn new(config: &RunConfig, classes: usize, device: Device) -> Result<Self, TrainError> {
        let vs = nn::VarStore::new(device);
        let m = &config.model;
        let dim = i64::from(m.embedding_dim);
        let net = nets::build(&m.architecture, &vs.root(), m.input(), dim)?;
        let head = (config.loss.ce_weight > 0.0).then(|| {
            let p = vs.root() / HEAD;
            let bn = nn::batch_norm1d(&p / "bn", dim, Default::default());
            let no_bias = nn::LinearConfig { bias: false, ..Default::default() };
            BnNeck { bn, classifier: nn::linear(&p / "classifier", dim, classes as i64, no_bias) }
        });
        let mut model = TrainModel { vs, net, head };
        if let Some(init) = &m.init {
            model.init_from(init)?;
        }
        Ok(model)
    }

    /// Loads matching weights from a model folder (its card's weights) or a safetensors file.
    fn init_from(&mut self, init: &Path) -> Result<(), TrainError> {
        let weights = if init.is_dir() {
            let (card, card_path) = reid_model::ModelCard::load(init)?;
            card.weights_path(&card_path)
        } else {
            init.to_owned()
        };
        let missing = self
            .vs
            .load_partial(&weights)
            .map_err(|e| TrainError::Config(format!("model.init {}: {e}", weights.display())))?;
        let missing: Vec<&String> = missing.iter().filter(|n| !n.starts_with(HEAD)).collect();
        if !missing.is_empty() {
            tracing::warn!(count = missing.len(), first = %missing[0], "initial weights lack some backbone variables");
        }
        Ok(())
    }

    /// Raw embeddings `[n, d]`.
    pub(crate) fn embed(&self, xs: &Tensor, train: bool) -> Tensor {
        self.net.forward_t(xs, train)
    }

    /// Class logits of the BNNeck head, when there is one.
    pub(crate) fn logits(&self, features: &Tensor, train: bool) -> Option<Tensor> {
        self.head.as_ref().map(|h| h.classifier.forward(&h.bn.forward_t(features, train)))
    }

    pub(crate) fn trainable(&self) -> Vec<(String, Tensor)> {
        let mut vars: Vec<(String, Tensor)> =
            self.vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// Writes every variable (head included) for a checkpoint.
    pub(crate) fn save_all(&self, path: &Path) -> Result<(), TrainError> {
        Ok(self.vs.save(path)?)
    }

    pub(crate) fn load_all(&mut self, path: &Path) -> Result<(), TrainError> {
        Ok(self.vs.load(path)?)
    }

    /// Writes the backbone only, under the names the embedder's native backend loads.
    pub(crate) fn save_backbone(&self, path: &Path) -> Result<(), TrainError> {
        let mut vars: Vec<(String, Tensor)> =
            self.vs.variables().into_iter().filter(|(n, _)| !n.starts_with(HEAD)).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Tensor::write_safetensors(&vars, path)?)
    }
}
