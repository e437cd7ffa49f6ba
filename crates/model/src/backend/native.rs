//! Native tch networks: an architecture from [`crate::nets`] with weights from safetensors.

use std::path::Path;

use tch::nn::{self, ModuleT};

use super::{EmbeddingModel, LoadOptions, embed_with_tch};
use crate::device::device_name;
use crate::{ModelCard, ModelError, nets};

pub struct NativeModel {
    card: ModelCard,
    // The var store owns the weights the network's layers refer to.
    _vs: nn::VarStore,
    net: Box<dyn ModuleT + Send>,
    device: tch::Device,
    half: bool,
}

impl NativeModel {
    pub fn load(card: ModelCard, weights: &Path, options: LoadOptions) -> Result<Self, ModelError> {
        let device = options.device.resolve()?;
        let architecture = card.architecture.clone().unwrap_or_default();
        let mut vs = nn::VarStore::new(device);
        let net = nets::build(&architecture, &vs.root(), card.input, i64::from(card.embedding_dim))?;
        vs.load(weights).map_err(|e| ModelError::Weights { path: weights.to_owned(), reason: e.to_string() })?;
        // Loading takes the stored precision (weights may ship in f16 to stay small); compute in
        // f32 unless half precision was asked for on a GPU.
        let half = options.fp16 && device.is_cuda();
        if half {
            vs.half();
        } else {
            vs.float();
        }
        Ok(NativeModel { card, _vs: vs, net, device, half })
    }
}

impl EmbeddingModel for NativeModel {
    fn card(&self) -> &ModelCard {
        &self.card
    }

    fn device(&self) -> String {
        device_name(self.device)
    }

    fn embed(&mut self, batch: &[&[f32]]) -> Result<Vec<Vec<f32>>, ModelError> {
        let net = &self.net;
        embed_with_tch(batch, &self.card, self.device, self.half, |xs| Ok(net.forward_t(xs, false)))
    }
}
