//! Test-time flip augmentation (FastReID's `TEST.FLIP`, torchreid's `flip` feature averaging): a
//! crop and its mirror image are embedded in one batch and their embeddings averaged. A person
//! walking left and the same person walking right are one person; the mean of both views moves
//! less with the pose than either does. Cards ask for it with `"flip": true`; it wraps any
//! backend, at twice the inference per crop.

use super::{EmbeddingModel, normalised_rows};
use crate::{ModelCard, ModelError};

pub(super) struct Flipped {
    inner: Box<dyn EmbeddingModel>,
}

impl Flipped {
    pub(super) fn new(inner: Box<dyn EmbeddingModel>) -> Self {
        Flipped { inner }
    }
}

impl EmbeddingModel for Flipped {
    fn card(&self) -> &ModelCard {
        self.inner.card()
    }

    fn device(&self) -> String {
        self.inner.device()
    }

    fn embed(&mut self, batch: &[&[f32]]) -> Result<Vec<Vec<f32>>, ModelError> {
        let width = self.inner.card().input.width as usize;
        let dim = self.inner.card().embedding_dim as usize;
        let mirrored: Vec<Vec<f32>> = batch.iter().map(|row| mirror(row, width)).collect();
        let both: Vec<&[f32]> = batch.iter().copied().chain(mirrored.iter().map(Vec::as_slice)).collect();
        let rows = self.inner.embed(&both)?;
        let (plain, flipped) = rows.split_at(batch.len().min(rows.len()));
        if flipped.len() != plain.len() {
            return Err(ModelError::Inference(format!("{} embeddings for {} images", rows.len(), both.len())));
        }
        let sum: Vec<f32> = plain.iter().zip(flipped).flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| x + y)).collect();
        normalised_rows(&sum, batch.len(), dim)
    }
}

/// A CHW image mirrored left to right: every row of `width` values reversed. A row whose length
/// is not a whole number of image rows is reversed piecewise all the same; the backend refuses its
/// size.
fn mirror(row: &[f32], width: usize) -> Vec<f32> {
    row.chunks(width.max(1)).flat_map(|line| line.iter().rev().copied()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Embeds a 1x2x3 image as (sum of its left column, middle, right column): a mirror image
    /// swaps the first and last values.
    struct Columns(ModelCard);

    impl EmbeddingModel for Columns {
        fn card(&self) -> &ModelCard {
            &self.0
        }

        fn device(&self) -> String {
            "cpu".into()
        }

        fn embed(&mut self, batch: &[&[f32]]) -> Result<Vec<Vec<f32>>, ModelError> {
            let flat: Vec<f32> =
                batch.iter().flat_map(|row| (0..3).map(move |c| row.iter().skip(c).step_by(3).sum::<f32>())).collect();
            normalised_rows(&flat, batch.len(), 3)
        }
    }

    fn columns() -> Box<dyn EmbeddingModel> {
        let card = serde_json::from_value(serde_json::json!({
            "id": "columns", "version": "1", "backend": "native", "architecture": "small_cnn",
            "weights": "w.safetensors", "input": {"width": 3, "height": 2, "color": "gray"},
            "normalization": {"kind": "mean_std", "mean": [0.0], "std": [1.0]},
            "embedding_dim": 3, "match_threshold": 0.5, "flip": true
        }))
        .unwrap();
        Box::new(Columns(card))
    }

    #[test]
    fn a_crop_and_its_mirror_image_embed_alike() {
        let mut flipped = Flipped::new(columns());
        let (image, mirror_image) = ([1.0, 0.0, 0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0, 0.0, 1.0]);
        let rows = flipped.embed(&[&image, &mirror_image]).unwrap();
        // Left column (1, 0, 0) plus its mirror (0, 0, 1), normalised.
        let half = std::f32::consts::FRAC_1_SQRT_2;
        for row in &rows {
            assert!(row.iter().zip([half, 0.0, half]).all(|(a, b)| (a - b).abs() < 1e-6), "{row:?}");
        }
        // Unflipped, the two are orthogonal.
        let plain = columns().embed(&[&image, &mirror_image]).unwrap();
        assert_eq!(plain[0].iter().zip(&plain[1]).map(|(a, b)| a * b).sum::<f32>(), 0.0);
        assert_eq!(flipped.card().id, "columns");
    }

    #[test]
    fn mirroring_reverses_each_image_row() {
        assert_eq!(mirror(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3), vec![3.0, 2.0, 1.0, 6.0, 5.0, 4.0]);
        assert_eq!(mirror(&[1.0, 2.0, 3.0, 4.0], 3), vec![3.0, 2.0, 1.0, 4.0], "a short last row");
        assert!(Flipped::new(columns()).embed(&[]).unwrap().is_empty());
    }
}
