//! Bounded CPU training runs on a Fashion-MNIST subset (Debian's `dataset-fashion-mnist`): the
//! loss falls and Recall@1 on held-out test images rises over the untrained network; a run killed
//! after an epoch resumes exactly; bad datasets are clear errors. (The open-set experiment, unseen
//! classes, is `reid experiment`'s job: docs/metric-learning.md.)

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use reid_trainer::{Event, TrainConfig, TrainError, train};

fn run_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("reid-train-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn config(extra: &str) -> TrainConfig {
    let text = format!(
        r#"
name = "test-model"
[dataset]
kind = "fashion_mnist"
train_per_class = 1200
eval_classes = [0, 1, 2, 3, 4]
eval_per_class = 60
[miner]
kind = "batch_all"
[sampler]
p = 5
k = 8
[training]
epochs = 3
seed = 7
threads = 2
verification_items = 300
{extra}
"#
    );
    TrainConfig::parse(&text).unwrap()
}

fn weights(dir: &std::path::Path) -> Vec<(String, tch::Tensor)> {
    let mut w = tch::Tensor::read_safetensors(dir.join("checkpoint/model.safetensors")).unwrap();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

#[test]
fn a_short_run_lowers_the_loss_and_raises_recall() {
    let dir = run_dir("short");
    let mut progress = 0;
    let outcome = train(
        &config(""),
        &dir,
        &mut |e| progress += matches!(e, Event::Progress { .. }) as usize,
        &AtomicBool::new(false),
    )
    .unwrap();
    let h = &outcome.history;
    assert_eq!(h.iter().map(|r| r.epoch).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    let (untrained, trained) = (&h[0], h.last().unwrap());
    println!("untrained: loss {:.4} R@1 {:.3} mAP {:.3}", untrained.loss, untrained.rank1, untrained.map);
    println!("trained:   loss {:.4} R@1 {:.3} mAP {:.3}", trained.loss, trained.rank1, trained.map);
    assert!(trained.loss < untrained.loss, "loss {} -> {}", untrained.loss, trained.loss);
    assert!(trained.rank1 > untrained.rank1 + 0.02, "R@1 {} -> {}", untrained.rank1, trained.rank1);
    assert!(trained.map > untrained.map, "mAP {} -> {}", untrained.map, trained.map);
    assert!(progress >= 3);

    // The best epoch is exported as a servable model whose card carries its figures.
    let best = outcome.best.unwrap();
    let mut model = reid_model::load_model(&dir.join("best"), Default::default()).unwrap();
    let card = model.card().clone();
    assert_eq!(card.version, format!("{}-e{}", dir.file_name().unwrap().to_str().unwrap(), best.epoch));
    assert!((card.metrics["mAP"].as_f64().unwrap() - best.map).abs() < 1e-3);
    assert!((-1.0..=1.0).contains(&card.match_threshold));
    let image = vec![0.0f32; 28 * 28];
    assert_eq!(model.embed(&[&image]).unwrap()[0].len(), 10);

    for file in [
        "history.json",
        "history.csv",
        "plots/loss.png",
        "plots/active_triplets.png",
        "plots/cmc.png",
        "plots/embedding_pca.png",
    ] {
        let len = std::fs::metadata(dir.join(file)).unwrap().len();
        assert!(len > 100, "{file} is {len} bytes");
    }
    assert_eq!(std::fs::read_to_string(dir.join("history.csv")).unwrap().lines().count(), 5);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_run_killed_after_epoch_one_resumes_at_epoch_two_as_if_never_stopped() {
    let config = config("");
    let whole = run_dir("whole");
    train(&config, &whole, &mut |_| {}, &AtomicBool::new(false)).unwrap();

    let killed = run_dir("killed");
    let cancel = AtomicBool::new(false);
    let err = train(
        &config,
        &killed,
        &mut |e| {
            if matches!(e, Event::Epoch(ref r) if r.epoch == 1) {
                cancel.store(true, Ordering::Relaxed);
            }
        },
        &cancel,
    )
    .unwrap_err();
    assert!(matches!(err, TrainError::Cancelled));
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(killed.join("checkpoint/state.json")).unwrap()).unwrap();
    assert_eq!(state["epochs_done"], 1);
    let steps_per_epoch = state["step"].as_i64().unwrap();
    assert_eq!(state["adam_step"], steps_per_epoch, "the optimiser's step count is checkpointed");

    let mut first_epoch = None;
    let outcome = train(
        &config,
        &killed,
        &mut |e| {
            if let Event::Progress { epoch, .. } = e {
                first_epoch.get_or_insert(epoch);
            }
        },
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(first_epoch, Some(2));
    assert_eq!(outcome.history.iter().map(|r| r.epoch).collect::<Vec<_>>(), vec![0, 1, 2, 3]);

    // Same data order, same optimiser moments: the same weights as the run never stopped.
    for ((name, a), (_, b)) in weights(&whole).iter().zip(weights(&killed).iter()) {
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{name} differs by {diff}");
    }
    std::fs::remove_dir_all(whole).unwrap();
    std::fs::remove_dir_all(killed).unwrap();
}

#[test]
fn contrastive_pairs_with_hard_negatives_train() {
    let dir = run_dir("pairs");
    let mut config = config("[loss]\nkind = \"contrastive\"\nmargin = 0.5\n");
    config.sampler.kind = reid_trainer::config::SamplerKind::Pairs;
    config.sampler.pairs_per_batch = 64;
    config.sampler.negative_candidates = 4;
    config.training.epochs = 2;
    let outcome = train(&config, &dir, &mut |_| {}, &AtomicBool::new(false)).unwrap();
    let h = &outcome.history;
    assert!(h.last().unwrap().loss < h[0].loss, "{} -> {}", h[0].loss, h.last().unwrap().loss);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_datasets_are_clear_errors() {
    let dir = run_dir("bad");
    let missing = TrainConfig::parse("[dataset]\nkind = \"folders\"\npath = \"/nonexistent/people\"\n").unwrap();
    let err = train(&missing, &dir, &mut |_| {}, &AtomicBool::new(false)).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/people is not a folder"), "{err}");

    let mut too_many_k = config("");
    too_many_k.sampler.k = 2000;
    too_many_k.miner.kind = reid_trainer::miner::Miner::BatchHard;
    let err = train(&too_many_k, &dir, &mut |_| {}, &AtomicBool::new(false)).unwrap_err();
    assert!(err.to_string().contains("K = 2000 images per identity, but identity 0 has 1200"), "{err}");

    let err = TrainConfig::parse(&config("").to_toml().replace("k = 8", "k = 200")).unwrap_err();
    assert!(err.to_string().contains("too many to enumerate"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
