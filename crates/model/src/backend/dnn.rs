//! ONNX and TensorFlow frozen graphs through OpenCV's dnn module: the formats re-ID and face
//! libraries export most (FaceNet's `graph_final.pb`, torchreid's ONNX exports).

use std::path::Path;

use opencv::core::{Mat, Scalar};
use opencv::dnn;
use opencv::prelude::*;

use super::{EmbeddingModel, normalised_rows, stack};
use crate::{Backend, ModelCard, ModelError};

pub struct OpenCvDnnModel {
    card: ModelCard,
    net: dnn::Net,
}

impl OpenCvDnnModel {
    pub fn load(card: ModelCard, weights: &Path) -> Result<Self, ModelError> {
        let weights_err = |e: opencv::Error| ModelError::Weights { path: weights.to_owned(), reason: e.message };
        let net = match card.backend {
            Backend::Onnx => dnn::read_net_from_onnx(weights).map_err(weights_err)?,
            _ => {
                let path = weights.to_str().ok_or_else(|| ModelError::Weights {
                    path: weights.to_owned(),
                    reason: "path is not UTF-8".into(),
                })?;
                dnn::read_net_from_tensorflow(path, "").map_err(weights_err)?
            }
        };
        if net.empty().map_err(weights_err)? {
            return Err(ModelError::Weights {
                path: weights.to_owned(),
                reason: "OpenCV read an empty network".into(),
            });
        }
        Ok(OpenCvDnnModel { card, net })
    }
}

impl EmbeddingModel for OpenCvDnnModel {
    fn card(&self) -> &ModelCard {
        &self.card
    }

    fn device(&self) -> String {
        "cpu".to_owned()
    }

    fn embed(&mut self, batch: &[&[f32]]) -> Result<Vec<Vec<f32>>, ModelError> {
        let chunk = self.card.max_batch.map_or(batch.len(), |m| m as usize).max(1);
        let mut rows = Vec::with_capacity(batch.len());
        for part in batch.chunks(chunk) {
            rows.extend(self.forward(part)?);
        }
        Ok(rows)
    }
}

impl OpenCvDnnModel {
    fn forward(&mut self, batch: &[&[f32]]) -> Result<Vec<Vec<f32>>, ModelError> {
        let flat = stack(batch, &self.card)?;
        let input = self.card.input;
        let shape = [batch.len() as i32, input.channels() as i32, input.height as i32, input.width as i32];
        let blob = Mat::new_nd_with_data(&shape, &flat)?;
        self.net.set_input(&blob, "", 1.0, Scalar::default())?;
        let out: Mat = self.net.forward_single(self.card.output.as_deref().unwrap_or(""))?;
        let out = if out.is_continuous() { out } else { out.try_clone()? };
        normalised_rows(out.data_typed::<f32>()?, batch.len(), self.card.embedding_dim as usize)
    }
}
