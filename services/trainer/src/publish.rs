//! Publishing a run's best model where embedders load it: `MODEL_DIR/NAME/` gets the weights under
//! a versioned file name, then the card, renamed into place last, so that an embedder watching
//! the folder never sees a card whose weights are not all there.

use std::path::{Path, PathBuf};

use reid_model::ModelCard;

use crate::error::TrainError;

/// Copies `run_dir/best` to `model_dir/name`; returns the published version and folder.
pub fn publish(run_dir: &Path, model_dir: &Path, name: &str) -> Result<(String, PathBuf), TrainError> {
    publish_with(run_dir, model_dir, name, false)
}

/// As [`publish`]; with `half`, floating-point weights are stored in f16 (half the size; the
/// embedder computes in f32 all the same), for models meant to be committed or shipped.
pub fn publish_with(run_dir: &Path, model_dir: &Path, name: &str, half: bool) -> Result<(String, PathBuf), TrainError> {
    if !reid_model::card::is_folder_name(name) {
        return Err(TrainError::InvalidModelName(name.to_owned()));
    }
    let run = run_dir.file_name().and_then(|n| n.to_str()).unwrap_or("run").to_owned();
    let best = run_dir.join("best");
    if !best.join("model.json").is_file() {
        return Err(TrainError::NotReady { run, what: "evaluated model" });
    }
    let (mut card, card_path) = ModelCard::load(&best)?;
    let weights = card.weights_path(&card_path);
    let target = model_dir.join(name);
    std::fs::create_dir_all(&target).map_err(TrainError::io(&target))?;
    let file = format!("{}.safetensors", card.version);
    if half {
        let tensors = tch::Tensor::read_safetensors(&weights)
            .map_err(|e| TrainError::Config(format!("{}: {e}", weights.display())))?;
        let halved: Vec<(String, tch::Tensor)> = tensors
            .into_iter()
            .map(|(n, t)| {
                let t = if t.f_is_floating_point().unwrap_or(false) { t.to_kind(tch::Kind::Half) } else { t };
                (n, t)
            })
            .collect();
        tch::Tensor::write_safetensors(&halved, target.join(&file))
            .map_err(|e| TrainError::Config(format!("writing {}: {e}", target.join(&file).display())))?;
    } else {
        std::fs::copy(&weights, target.join(&file)).map_err(TrainError::io(&weights))?;
    }
    card.weights = file.into();
    copy_training_record(run_dir, &target.join("training"))?;
    let tmp = target.join("model.json.tmp");
    let text = serde_json::to_string_pretty(&card).map_err(|e| TrainError::Config(e.to_string()))?;
    std::fs::write(&tmp, text).map_err(TrainError::io(&tmp))?;
    std::fs::rename(&tmp, target.join("model.json")).map_err(TrainError::io(&target))?;
    Ok((card.version, target))
}

/// The run's plots and per-epoch history go with the model, so that whoever serves it can see how
/// it was trained (`reid demo` shows them in its report).
fn copy_training_record(run_dir: &Path, to: &Path) -> Result<(), TrainError> {
    std::fs::create_dir_all(to).map_err(TrainError::io(to))?;
    let mut files: Vec<PathBuf> = vec![run_dir.join("history.csv"), run_dir.join("config.toml")];
    if let Ok(entries) = std::fs::read_dir(run_dir.join("plots")) {
        files.extend(
            entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "png")),
        );
    }
    for file in files.iter().filter(|f| f.is_file()) {
        let Some(name) = file.file_name() else { continue };
        std::fs::copy(file, to.join(name)).map_err(TrainError::io(file))?;
    }
    Ok(())
}
