//! TorchScript modules, e.g. exported from torchreid or FastReID with `torch.jit.trace`. The module
//! takes the `[N, C, H, W]` batch and returns `[N, D]` features (normalised here).

use std::path::Path;

use super::{EmbeddingModel, LoadOptions, embed_with_tch};
use crate::device::device_name;
use crate::{ModelCard, ModelError};

pub struct TorchScriptModel {
    card: ModelCard,
    module: tch::CModule,
    device: tch::Device,
    half: bool,
}

impl TorchScriptModel {
    pub fn load(card: ModelCard, weights: &Path, options: LoadOptions) -> Result<Self, ModelError> {
        let device = options.device.resolve()?;
        let mut module = tch::CModule::load_on_device(weights, device)
            .map_err(|e| ModelError::Weights { path: weights.to_owned(), reason: e.to_string() })?;
        module.set_eval();
        let half = options.fp16 && device.is_cuda();
        if half {
            module.to(device, tch::Kind::Half, false);
        }
        Ok(TorchScriptModel { card, module, device, half })
    }
}

impl EmbeddingModel for TorchScriptModel {
    fn card(&self) -> &ModelCard {
        &self.card
    }

    fn device(&self) -> String {
        device_name(self.device)
    }

    fn embed(&mut self, batch: &[&[f32]]) -> Result<Vec<Vec<f32>>, ModelError> {
        let module = &self.module;
        embed_with_tch(batch, &self.card, self.device, self.half, |xs| {
            module.forward_ts(&[xs]).map_err(|e| ModelError::Inference(e.to_string()))
        })
    }
}
