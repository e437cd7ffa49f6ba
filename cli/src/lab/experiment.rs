//! `reid experiment metric-learning`: the seed's experiment, end to end, in one command.
//!
//! The small CNN compresses 28x28 Fashion-MNIST images into a 10-d embedding, trained on classes
//! 0-4 and evaluated on the unseen classes 5-9 (open set, as re-ID is), with the contrastive and
//! the triplet loss under random, semi-hard and batch-hard mining. Each configuration is also
//! trained by `bench/metric_learning_reference.py` (pytorch-metric-learning) with the same split,
//! loss, miner, batch and epochs, and the table, the curves and the measured ratios are written to
//! `docs/metric-learning.md` and `docs/img/`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::{Args, Subcommand};
use reid_trainer::config::LossKind;
use reid_trainer::miner::Miner;
use reid_trainer::plot::{self, Series};
use reid_trainer::train::EpochRecord;
use reid_trainer::{Event, RunConfig};

#[derive(Debug, Subcommand)]
pub enum ExperimentCommand {
    /// Contrastive vs triplet, random vs semi-hard vs batch-hard, against pytorch-metric-learning.
    MetricLearning(MetricLearningArgs),
}

#[derive(Debug, Args)]
pub struct MetricLearningArgs {
    #[arg(long, default_value_t = 5)]
    epochs: u32,
    #[arg(long, default_value_t = 5)]
    p: usize,
    #[arg(long, default_value_t = 8)]
    k: usize,
    #[arg(long, default_value_t = 0.2)]
    margin: f64,
    /// Where the markdown and the plots go.
    #[arg(long, default_value = "docs")]
    out: PathBuf,
    #[arg(long, default_value = "runs/experiment")]
    runs_dir: PathBuf,
    /// Python with torch and pytorch-metric-learning for the reference; empty skips it.
    #[arg(long, default_value = ".venv/bin/python")]
    python: String,
}

struct Row {
    loss: LossKind,
    miner: Miner,
    ours: Vec<EpochRecord>,
    reference: Vec<serde_json::Value>,
}

fn name(loss: LossKind, miner: Miner) -> String {
    let loss = match loss {
        LossKind::Contrastive => "contrastive",
        LossKind::Triplet => "triplet",
        LossKind::SoftTriplet => "soft triplet",
    };
    let miner = match miner {
        Miner::Random => "random",
        Miner::BatchAll => "batch-all",
        Miner::BatchHard => "batch-hard",
        Miner::SemiHard => "semi-hard",
    };
    format!("{loss}, {miner}")
}

fn snake(v: impl serde::Serialize) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

pub async fn run(cmd: ExperimentCommand) -> anyhow::Result<ExitCode> {
    let ExperimentCommand::MetricLearning(args) = cmd;
    tokio::task::spawn_blocking(move || metric_learning(&args)).await??;
    Ok(ExitCode::SUCCESS)
}

fn metric_learning(args: &MetricLearningArgs) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for loss in [LossKind::Contrastive, LossKind::Triplet] {
        for miner in [Miner::Random, Miner::SemiHard, Miner::BatchHard] {
            let label = name(loss, miner);
            eprintln!("== {label}: reid");
            let config = RunConfig::parse(&format!(
                "name = \"fmnist-{loss}-{miner}\"\n[dataset]\nkind = \"fashion_mnist\"\n[loss]\nkind = \"{loss}\"\nmargin = {margin}\n\
                 [miner]\nkind = \"{miner}\"\n[sampler]\np = {p}\nk = {k}\n[training]\nepochs = {epochs}\n",
                loss = snake(loss),
                miner = snake(miner),
                margin = args.margin,
                p = args.p,
                k = args.k,
                epochs = args.epochs,
            ))?;
            let dir = args.runs_dir.join(format!("{}-{}", snake(loss), snake(miner)));
            let _ = std::fs::remove_dir_all(&dir);
            let outcome = reid_trainer::train(&config, &dir, &mut |e| report(&e), &AtomicBool::new(false))?;
            let reference = if args.python.is_empty() { Vec::new() } else { reference(args, loss, miner)? };
            rows.push(Row { loss, miner, ours: outcome.history, reference });
        }
    }
    write_report(args, &rows)
}

fn report(e: &Event) {
    if let Event::Epoch(r) = e {
        eprintln!(
            "epoch {}: loss {:.4} active {:.3} R@1 {:.4} mAP {:.4} ({:.1}s)",
            r.epoch, r.loss, r.active_fraction, r.rank1, r.map, r.seconds
        );
    }
}

fn reference(args: &MetricLearningArgs, loss: LossKind, miner: Miner) -> anyhow::Result<Vec<serde_json::Value>> {
    eprintln!("== {}: pytorch-metric-learning", name(loss, miner));
    let out = std::process::Command::new(&args.python)
        .args(["-W", "ignore", "bench/metric_learning_reference.py", "--loss", &snake(loss), "--miner", &snake(miner)])
        .args(["--epochs", &args.epochs.to_string(), "--p", &args.p.to_string(), "--k", &args.k.to_string()])
        .args(["--margin", &args.margin.to_string()])
        .output()
        .with_context(|| format!("running {}", args.python))?;
    if !out.status.success() {
        anyhow::bail!(
            "reference failed (is pytorch-metric-learning installed? `make experiment` installs it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    for l in &lines {
        eprintln!("{l}");
    }
    Ok(lines)
}

fn mean_seconds(records: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = records.collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn write_report(args: &MetricLearningArgs, rows: &[Row]) -> anyhow::Result<()> {
    let img = args.out.join("img");
    std::fs::create_dir_all(&img)?;
    let epochs = |r: &[EpochRecord], f: fn(&EpochRecord) -> f64| -> Vec<(f64, f64)> {
        r.iter().filter(|e| e.epoch > 0).map(|e| (f64::from(e.epoch), f(e))).collect()
    };
    let labels: Vec<String> = rows.iter().map(|r| name(r.loss, r.miner)).collect();
    let series = |f: fn(&EpochRecord) -> f64| -> Vec<Series<'_>> {
        rows.iter()
            .zip(&labels)
            .enumerate()
            .map(|(i, (r, l))| Series { name: l, color: plot::palette(i), points: epochs(&r.ours, f) })
            .collect()
    };
    plot::lines(
        &img.join("active-triplets.png"),
        "active (non-zero loss) pairs or triplets per epoch",
        "epoch",
        "fraction",
        &series(|e| e.active_fraction),
        Some((0.0, 1.0)),
    )?;
    plot::lines(
        &img.join("recall-at-1.png"),
        "Recall@1 on unseen classes 5-9",
        "epoch",
        "R@1",
        &series(|e| e.rank1),
        Some((0.0, 1.0)),
    )?;
    plot::lines(&img.join("loss.png"), "training loss", "epoch", "loss", &series(|e| e.loss), None)?;
    if let Some(best) = rows.iter().max_by(|a, b| last(&a.ours).map.total_cmp(&last(&b.ours).map)) {
        let run = args.runs_dir.join(format!("{}-{}", snake(best.loss), snake(best.miner)));
        std::fs::copy(run.join("plots/embedding_pca.png"), img.join("embedding-pca.png"))?;
    }

    let mut md = String::new();
    writeln!(md, "# Metric learning: the seed's experiment\n")?;
    writeln!(
        md,
        "Produced by `make experiment` (`reid experiment metric-learning --epochs {}`); every figure below is measured by that command on this project's machines (2 CPU cores, no GPU).\n",
        args.epochs
    )?;
    writeln!(
        md,
        "**Setup.** The small CNN (`small_cnn`: two 5x5 conv + max-pool stages, two linear layers) compresses 28x28 Fashion-MNIST images into a 10-d embedding, L2-normalised. It trains on classes 0-4 (T-shirt, trouser, pullover, dress, coat; 30,000 images) and is evaluated on the unseen classes 5-9 (sandal, shirt, sneaker, bag, ankle boot; the 5,000 test images): an open-set split, like re-ID, where test identities are never seen in training. Batches of P = {} classes x K = {} images, margin m = {}, Euclidean distance on unit vectors, Adam with lr 1e-3, {} epochs, seed 0. Metrics: leave-one-out Recall@1 and mAP over the 5,000 evaluation images, cosine distance.\n",
        args.p, args.k, args.margin, args.epochs
    )?;
    writeln!(
        md,
        "**Reference.** `bench/metric_learning_reference.py` trains the same network with pytorch-metric-learning 2.9.0 (its `MPerClassSampler`, `LpDistance`, `TripletMarginMiner(type_of_triplets=\"semihard\")`, `BatchHardMiner`, and `TripletMarginLoss` with a mean reducer; the contrastive loss is written out, since PML's `ContrastiveLoss` is a different, unsquared hinge), with the same split, loss, miner, batch, epochs and evaluation.\n"
    )?;
    let untrained = rows.first().and_then(|r| r.ours.first());
    if let Some(u) = untrained {
        writeln!(
            md,
            "The untrained network already scores Recall@1 {:.4} and mAP {:.4}: random convolutional features separate these classes well.\n",
            u.rank1, u.map
        )?;
    }
    writeln!(
        md,
        "| loss, miner | R@1 (reid) | mAP (reid) | s/epoch (reid) | R@1 (PML) | mAP (PML) | s/epoch (PML) | epoch time reid/PML | active at last epoch |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|")?;
    for (row, label) in rows.iter().zip(&labels) {
        let ours = last(&row.ours);
        let ours_s = mean_seconds(row.ours.iter().filter(|e| e.epoch > 0).map(|e| e.seconds));
        let reference = row.reference.iter().rev().find(|l| l["epoch"].as_u64().is_some_and(|e| e > 0));
        let ref_s = mean_seconds(row.reference.iter().filter_map(|l| l["seconds"].as_f64()));
        let (rr1, rmap) = reference.map_or((f64::NAN, f64::NAN), |l| {
            (l["rank1"].as_f64().unwrap_or(f64::NAN), l["mAP"].as_f64().unwrap_or(f64::NAN))
        });
        writeln!(
            md,
            "| {label} | {:.4} | {:.4} | {ours_s:.1} | {rr1:.4} | {rmap:.4} | {ref_s:.1} | {:.2}x | {:.3} |",
            ours.rank1,
            ours.map,
            ours_s / ref_s,
            ours.active_fraction
        )?;
    }
    writeln!(
        md,
        "\nFigures are those of the last epoch. `s/epoch` is training time only (no evaluation), averaged over epochs.\n"
    )?;
    writeln!(
        md,
        "![active triplets](img/active-triplets.png)\n\n![Recall@1](img/recall-at-1.png)\n\n![loss](img/loss.png)\n\n![embedding](img/embedding-pca.png)\n"
    )?;
    let path = args.out.join("metric-learning.md");
    let notes_path = args.out.join("metric-learning-notes.md");
    if let Ok(notes) = std::fs::read_to_string(&notes_path) {
        md.push_str(&notes);
    }
    std::fs::write(&path, md)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn last(records: &[EpochRecord]) -> &EpochRecord {
    records.last().expect("a run has at least its epoch-0 record")
}
