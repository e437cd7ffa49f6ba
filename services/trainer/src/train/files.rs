//! A run folder's files: the JSON and CSV history, the checkpoint's state, the card of the best
//! model, and the plots.

use std::path::Path;

use reid_model::{Backend, ModelCard};
use serde::Serialize;

use super::EpochRecord;
use crate::config::RunConfig;
use crate::error::TrainError;
use crate::plot;

/// The card of the model a run exports for `record`'s epoch: servable as is, its figures kept.
pub(super) fn best_card(config: &RunConfig, run: &str, record: &EpochRecord) -> ModelCard {
    let m = &config.model;
    let mut metrics = serde_json::Map::new();
    for (k, v) in [
        ("rank1", record.rank1),
        ("rank5", record.rank5),
        ("mAP", record.map),
        ("mINP", record.minp),
        ("tar_at_far_1e3", record.tar_at_far_1e3),
        ("eer", record.eer),
    ] {
        metrics.insert(k.into(), serde_json::json!((v * 1e4).round() / 1e4));
    }
    metrics.insert("epoch".into(), record.epoch.into());
    ModelCard {
        id: config.name.clone(),
        version: format!("{run}-e{}", record.epoch),
        backend: Backend::Native,
        architecture: Some(m.architecture.clone()),
        weights: "model.safetensors".into(),
        input: m.input(),
        normalization: m.normalization(),
        embedding_dim: m.embedding_dim,
        match_threshold: config.training.match_threshold.unwrap_or(record.threshold).clamp(-1.0, 1.0) as f32,
        merge_threshold: config.training.merge_threshold.map(|t| t as f32),
        output: None,
        max_batch: None,
        flip: config.training.flip,
        metrics,
        source: format!("trained by reid-trainer, run {run}"),
    }
}

pub(super) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), TrainError> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(value).map_err(|e| TrainError::Config(e.to_string()))?;
    std::fs::write(&tmp, text).map_err(TrainError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(TrainError::io(path))
}

pub(super) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, TrainError> {
    let text = std::fs::read_to_string(path).map_err(TrainError::io(path))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))
}

pub(super) fn write_csv(path: &Path, history: &[EpochRecord]) -> Result<(), TrainError> {
    let mut out = String::from(
        "epoch,loss,active_fraction,seconds,rank1,rank5,rank10,mAP,mINP,tar_at_far_1e2,tar_at_far_1e3,eer,threshold\n",
    );
    for r in history {
        out.push_str(&format!(
            "{},{:.6},{:.6},{:.3},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6}\n",
            r.epoch,
            r.loss,
            r.active_fraction,
            r.seconds,
            r.rank1,
            r.rank5,
            r.rank10,
            r.map,
            r.minp,
            r.tar_at_far_1e2,
            r.tar_at_far_1e3,
            r.eer,
            r.threshold
        ));
    }
    std::fs::write(path, out).map_err(TrainError::io(path))
}

/// The plots of one run, from its history and the last evaluation's embeddings.
pub(super) fn run_plots(dir: &Path, history: &[EpochRecord], embeddings: &plot::Scatter) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(TrainError::io(dir))?;
    let per_epoch = |f: fn(&EpochRecord) -> f64| history.iter().map(|r| (f64::from(r.epoch), f(r))).collect();
    plot::lines(
        &dir.join("loss.png"),
        "training loss",
        "epoch",
        "loss",
        &[plot::Series { name: "loss", color: plot::palette(0), points: per_epoch(|r| r.loss) }],
        None,
    )?;
    plot::lines(
        &dir.join("active_triplets.png"),
        "active (non-zero loss) pairs or triplets",
        "epoch",
        "fraction",
        &[plot::Series { name: "active", color: plot::palette(1), points: per_epoch(|r| r.active_fraction) }],
        Some((0.0, 1.0)),
    )?;
    if let Some(last) = history.last() {
        let cmc = last.cmc.iter().enumerate().map(|(k, v)| ((k + 1) as f64, *v)).collect();
        plot::lines(
            &dir.join("cmc.png"),
            &format!("CMC, epoch {}", last.epoch),
            "rank",
            "match rate",
            &[plot::Series { name: "CMC", color: plot::palette(2), points: cmc }],
            Some((0.0, 1.0)),
        )?;
    }
    plot::scatter(&dir.join("embedding_pca.png"), "embedding space (PCA to 2-D)", embeddings)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_card_takes_the_recipes_threshold_over_the_held_out_one() {
        let record = EpochRecord {
            epoch: 3,
            loss: 0.1,
            active_fraction: 0.5,
            seconds: 1.0,
            rank1: 0.9,
            rank5: 0.95,
            rank10: 0.97,
            map: 0.8,
            minp: 0.5,
            tar_at_far_1e2: 0.9,
            tar_at_far_1e3: 0.8,
            eer: 0.05,
            threshold: 0.946,
            cmc: vec![0.9],
        };
        let mut config = RunConfig::parse("[dataset]\nkind = \"fashion_mnist\"").unwrap();
        assert!((best_card(&config, "r", &record).match_threshold - 0.946).abs() < 1e-6);
        assert_eq!(best_card(&config, "r", &record).merge_threshold, None);
        assert!(!best_card(&config, "r", &record).flip);
        config.training.match_threshold = Some(0.8);
        config.training.merge_threshold = Some(0.75);
        config.training.flip = true;
        let card = best_card(&config, "r", &record);
        assert!((card.match_threshold - 0.8).abs() < 1e-6);
        assert_eq!(card.merge_threshold, Some(0.75));
        assert!(card.flip, "the recipe's test-time flip reaches the card");
        config.training.match_threshold = Some(1.5);
        assert!(config.validate().is_err(), "not a cosine similarity");
    }
}
