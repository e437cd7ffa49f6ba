//! Bounded CPU training runs on a Fashion-MNIST subset (Debian's `dataset-fashion-mnist`): the
//! loss falls and Recall@1 on held-out test images rises over the untrained network; a run killed
//! after an epoch resumes exactly; bad datasets are clear errors. (The open-set experiment, unseen
//! classes, is `reid experiment`'s job: docs/metric-learning.md.)

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use reid_trainer::{Event, RunConfig, TrainError, train};

fn run_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("reid-train-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn config(extra: &str) -> RunConfig {
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
    RunConfig::parse(&text).unwrap()
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
    let missing = RunConfig::parse("[dataset]\nkind = \"folders\"\npath = \"/nonexistent/people\"\n").unwrap();
    let err = train(&missing, &dir, &mut |_| {}, &AtomicBool::new(false)).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/people is not a folder"), "{err}");

    let mut too_many_k = config("");
    too_many_k.sampler.k = 2000;
    too_many_k.miner.kind = reid_trainer::miner::Miner::BatchHard;
    let err = train(&too_many_k, &dir, &mut |_| {}, &AtomicBool::new(false)).unwrap_err();
    assert!(err.to_string().contains("K = 2000 images per identity, but identity 0 has 1200"), "{err}");

    let err = RunConfig::parse(&config("").to_toml().replace("k = 8", "k = 200")).unwrap_err();
    assert!(err.to_string().contains("too many to enumerate"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// An exported-tracklets folder of `people` colour-coded people (top and bottom colours, noise),
/// each seen in `per_person` tracklets of 4 crops spread over time on camera `cam-a`, plus two
/// tracklets of different people at the very same time: the cannot-link case.
fn colour_tracklets(root: &std::path::Path, people: usize, per_person: usize) {
    use opencv::core::{Mat, Scalar, Vector};
    use opencv::prelude::*;
    let colours =
        [[200.0, 30.0, 30.0], [30.0, 200.0, 30.0], [30.0, 30.0, 200.0], [200.0, 200.0, 30.0], [30.0, 200.0, 200.0]];
    let mut n = 0u64;
    let mut write = |person: usize, start_ms: i64, track: &str| {
        let dir = root.join("cam-a").join(format!("{start_ms:013}_{track}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut crops = Vec::new();
        for i in 0..4 {
            let (top, bottom) = (colours[person % 5], colours[(person * 2 + 1) % 5]);
            let mut img = Mat::new_rows_cols_with_default(32, 16, opencv::core::CV_8UC3, Scalar::all(0.0)).unwrap();
            for y in 0..32 {
                for x in 0..16 {
                    n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let noise = ((n >> 33) % 40) as f64 - 20.0;
                    let c = if y < 16 { top } else { bottom };
                    let px = img.at_2d_mut::<opencv::core::Vec3b>(y, x).unwrap();
                    for ch in 0..3 {
                        px[ch] = (c[ch] + noise).clamp(0.0, 255.0) as u8;
                    }
                }
            }
            let mut png = Vector::<u8>::new();
            opencv::imgcodecs::imencode(".png", &img, &mut png, &Vector::new()).unwrap();
            let file = format!("{i}.png");
            std::fs::write(dir.join(&file), png.as_slice()).unwrap();
            crops.push(serde_json::json!({"file": file, "captured_at_ms": start_ms + 100 * i as i64}));
        }
        let meta = serde_json::json!({"start_ms": start_ms, "end_ms": start_ms + 300, "crops": crops});
        std::fs::write(dir.join("tracklet.json"), meta.to_string()).unwrap();
    };
    for t in 0..per_person {
        for p in 0..people {
            write(p, (t * people + p) as i64 * 1000, &format!("p{p}-{t}"));
        }
    }
    // Two people side by side in one frame, late in the training part of the time.
    let late = (per_person * people) as i64 * 1000;
    write(0, late, "side-0");
    write(1, late, "side-1");
    // The held-out part: later tracklets.
    for p in 0..people {
        write(p, late + 60_000 + p as i64 * 1000, &format!("held-{p}"));
    }
}

/// A small run on colour-coded tracklets in `data`, pseudo-labelled every epoch; `extra` adds
/// TOML (tables after `[training]`).
fn pseudo_config(data: &std::path::Path, extra: &str) -> RunConfig {
    let text = format!(
        r#"
name = "pseudo"
[dataset]
kind = "tracklets"
path = "{}"
eval_fraction = 0.2
[model]
architecture = "small_cnn"
embedding_dim = 16
width = 16
height = 32
color = "rgb"
[sampler]
p = 4
k = 2
with_replacement = true
[pseudo_labels]
every = 1
threshold = 0.9
[training]
epochs = 2
seed = 3
threads = 2
verification_items = 50
{extra}
"#,
        data.display()
    );
    RunConfig::parse(&text).unwrap()
}

#[test]
fn tracklets_are_clustered_into_pseudo_identities_that_never_join_people_seen_together() {
    let data = run_dir("pseudo-data");
    colour_tracklets(&data, 4, 3);
    let config = pseudo_config(&data, "");
    let dir = run_dir("pseudo");
    let mut messages = Vec::new();
    train(
        &config,
        &dir,
        &mut |e| {
            if let Event::Message { text } = e {
                messages.push(text)
            }
        },
        &AtomicBool::new(false),
    )
    .unwrap();
    let grouped: Vec<&String> = messages.iter().filter(|m| m.contains("pseudo-identities")).collect();
    assert_eq!(grouped.len(), 2, "re-clustered before each epoch: {messages:?}");
    assert!(grouped[0].starts_with("epoch 1: 14 tracklets in "), "{}", grouped[0]);
    // The checkpoint keeps the last clustering: a group per training tracklet, in time order.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("checkpoint/state.json")).unwrap()).unwrap();
    let groups: Vec<i64> = state["groups"].as_array().unwrap().iter().map(|g| g.as_i64().unwrap()).collect();
    assert_eq!(groups.len(), 14);
    let distinct: std::collections::BTreeSet<i64> = groups.iter().copied().collect();
    assert!(distinct.len() < 14, "colour-coded tracklets of one person group: {groups:?}");
    // Tracklets 12 and 13 are the two people seen side by side.
    assert_ne!(groups[12], groups[13], "{groups:?}");
    // Pure groups: a person's tracklets (p, p + 4, p + 8) are never grouped with another's.
    for i in 0..12 {
        for j in 0..12 {
            if groups[i] == groups[j] {
                assert_eq!(i % 4, j % 4, "tracklets {i} and {j} of different people grouped: {groups:?}");
            }
        }
    }

    let mut bad = config.clone();
    bad.dataset = reid_trainer::data::DatasetConfig::Folders { path: data.clone(), eval_fraction: 0.2, feedback: None };
    let err = train(&bad, &dir, &mut |_| {}, &AtomicBool::new(false)).unwrap_err();
    assert!(err.to_string().contains("must be kind = \"tracklets\""), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_dir_all(data).unwrap();
}

#[test]
fn the_cluster_memory_trains_and_a_run_resumed_between_clusterings_keeps_it() {
    let data = run_dir("memory-data");
    colour_tracklets(&data, 4, 3);
    // Clustered before epochs 1 and 3 only: epoch 2 of the resumed run trains against the memory
    // the checkpoint kept, moved by epoch 1's updates.
    let mut config = pseudo_config(&data, "[pseudo_labels.memory]\nweight = 1.0\ntemperature = 0.1\nmomentum = 0.2\n");
    config.pseudo_labels.as_mut().unwrap().every = 2;
    config.training.epochs = 3;
    let whole = run_dir("memory-whole");
    let outcome = train(&config, &whole, &mut |_| {}, &AtomicBool::new(false)).unwrap();
    let h = &outcome.history;
    assert!(h.last().unwrap().loss < h[1].loss, "loss {} -> {}", h[1].loss, h.last().unwrap().loss);
    // The memory loss is part of the loss: the same run without it reports less.
    let mut without = config.clone();
    without.pseudo_labels.as_mut().unwrap().memory = None;
    let plain = run_dir("memory-plain");
    let plain_outcome = train(&without, &plain, &mut |_| {}, &AtomicBool::new(false)).unwrap();
    assert!(plain_outcome.history[1].loss < h[1].loss, "{} vs {}", plain_outcome.history[1].loss, h[1].loss);
    let centroids = tch::Tensor::read_safetensors(whole.join("checkpoint/memory.safetensors")).unwrap();
    assert_eq!(centroids[0].0, "centroids");
    let norms = Vec::<f32>::try_from(centroids[0].1.norm_scalaropt_dim(2, [1i64].as_slice(), false)).unwrap();
    assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-4), "unit centroids: {norms:?}");

    let killed = run_dir("memory-killed");
    let cancel = AtomicBool::new(false);
    let stop = &mut |e: Event| {
        if matches!(e, Event::Epoch(ref r) if r.epoch == 1) {
            cancel.store(true, Ordering::Relaxed);
        }
    };
    assert!(matches!(train(&config, &killed, stop, &cancel), Err(TrainError::Cancelled)));
    train(&config, &killed, &mut |_| {}, &AtomicBool::new(false)).unwrap();
    for ((name, a), (_, b)) in weights(&whole).iter().zip(weights(&killed).iter()) {
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{name} differs by {diff}");
    }
    for dir in [whole, plain, killed, data] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}
