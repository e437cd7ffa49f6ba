//! `reid adapt`: the served model adapted to the deployment's own cameras without labels,
//! judged against the served model on the operators' feedback, and put in its place only when
//! it is better (`reid_trainer::adapt`, docs/training.md). Feedback about single tracklets
//! constrains the training instead (links between the exported tracklets).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::Args;
use reid_model::backend::LoadOptions;
use reid_proto::v1 as pb;
use reid_trainer::RunConfig;
use reid_trainer::adapt::{JudgedPairs, Judgement, judge, links_from_feedback, replaces};
use reid_trainer::data::links::{TrackletKey, write_links};
use reid_trainer::data::{DatasetConfig, FeedbackPair};
use serde_json::json;

#[derive(Debug, Args)]
pub struct AdaptArgs {
    /// The training recipe; its dataset must be `kind = "tracklets"` (the default model's).
    #[arg(long, default_value = "configs/person-vtest.toml")]
    config: PathBuf,
    /// The ingester's tracklet exports (its `export_dir`), in place of the recipe's dataset path.
    #[arg(long)]
    tracklets: Option<PathBuf>,
    /// The identity service's stored crops (`DATA/crops`): each judged identity's pictures.
    #[arg(long)]
    crops: PathBuf,
    /// The operators' feedback pairs, as `reid feedback` prints them: the judge.
    #[arg(long, required_unless_present = "identity", conflicts_with = "identity")]
    feedback: Option<PathBuf>,
    /// Read the feedback pairs from this identity service instead (`ListFeedback`), afresh each
    /// round.
    #[arg(long)]
    identity: Option<String>,
    /// Adapt again every this long (e.g. `24h`), until stopped; a round that cannot train (too
    /// little feedback) or fails is logged and the next one waits. Once when unset.
    #[arg(long)]
    every: Option<humantime::Duration>,
    /// Judged pairs needed of each kind (same person, different people) before anything trains.
    #[arg(long, default_value_t = 5)]
    min_pairs: usize,
    /// AUC the candidate must gain over the served model to replace it.
    #[arg(long, default_value_t = 0.0)]
    min_gain: f64,
    #[arg(long, default_value = "models")]
    model_dir: PathBuf,
    /// The served model's folder under --model-dir, replaced when the candidate wins; embedders
    /// watching the folder load it by themselves.
    #[arg(long, default_value = reid_embedder::DEFAULT_MODEL)]
    model: String,
    #[arg(long, default_value = "runs")]
    runs_dir: PathBuf,
    /// Publish the weights in f16.
    #[arg(long)]
    half: bool,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: AdaptArgs) -> anyhow::Result<ExitCode> {
    let Some(every) = args.every else { return once(&args).await };
    loop {
        if let Err(e) = once(&args).await {
            tracing::warn!(error = format!("{e:#}"), "this adaptation round did not publish");
        }
        eprintln!("next adaptation in {every}");
        tokio::select! {
            () = tokio::time::sleep(*every) => {}
            () = reid_server::shutdown_signal() => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// Each identity's tracklets, by camera and track.
type Sightings = BTreeMap<String, Vec<TrackletKey>>;

/// The feedback pairs, from the file or the identity service, and the tracklets the identities
/// that feedback about single tracklets names hold now (from the service only).
async fn feedback(args: &AdaptArgs) -> anyhow::Result<(Vec<FeedbackPair>, Sightings)> {
    match (&args.feedback, &args.identity) {
        (Some(path), _) => Ok((reid_trainer::data::read_feedback(path)?, Sightings::new())),
        (None, Some(addr)) => {
            let mut identity = crate::identity::client(addr).await?;
            let failed = |what: &str| {
                let what = what.to_owned();
                move |s: tonic::Status| anyhow::anyhow!("{what} from {addr}: {:?}: {}", s.code(), s.message())
            };
            let pairs = identity
                .list_feedback(pb::ListFeedbackRequest {})
                .await
                .map_err(failed("list feedback"))?
                .into_inner()
                .pairs;
            let pairs: Vec<FeedbackPair> = pairs
                .into_iter()
                .map(|p| FeedbackPair {
                    same: p.same,
                    a: p.identity_a,
                    b: p.identity_b,
                    camera: p.camera_id,
                    track: p.track_id,
                })
                .collect();
            let mut sightings = Sightings::new();
            for f in pairs.iter().filter(|f| f.names_a_tracklet()) {
                if sightings.contains_key(&f.a) {
                    continue;
                }
                let request = pb::SightingsRequest { identity_id: f.a.clone(), ..Default::default() };
                let held = match identity.sightings(request).await {
                    Ok(r) => r.into_inner().sightings,
                    // Forgotten since: nothing of it to keep apart.
                    Err(s) if s.code() == tonic::Code::NotFound => Vec::new(),
                    Err(s) => return Err(failed(&format!("sightings of {}", f.a))(s)),
                };
                let keys = held.into_iter().map(|s| TrackletKey::new(s.camera_id, s.track_id)).collect();
                sightings.insert(f.a.clone(), keys);
            }
            Ok((pairs, sightings))
        }
        (None, None) => anyhow::bail!("give --feedback FILE or --identity ADDR"),
    }
}

/// One adaptation: train, judge, publish if better.
async fn once(args: &AdaptArgs) -> anyhow::Result<ExitCode> {
    let (feedback, sightings) = feedback(args).await?;
    let judged = JudgedPairs::from_feedback(&args.crops, &feedback)?;
    let (same, different) = judged.counts();
    anyhow::ensure!(
        same >= args.min_pairs && different >= args.min_pairs,
        "{same} same-person and {different} different-people pairs can be judged (both identities' crops under {}); \
         --min-pairs {} of each are needed before a candidate is trained: record more feedback (reid feedback)",
        args.crops.display(),
        args.min_pairs
    );
    let mut config = RunConfig::from_file(&args.config)?;
    let dir = args.runs_dir.join(reid_trainer::fresh_run_id(&args.runs_dir, &config.name, |_| false));
    let links = links_from_feedback(&feedback, &sightings);
    let DatasetConfig::Tracklets { path, links: links_file, .. } = &mut config.dataset else {
        anyhow::bail!(
            "{}: adaptation trains on exported tracklets (dataset kind = \"tracklets\")",
            args.config.display()
        )
    };
    if let Some(tracklets) = &args.tracklets {
        *path = tracklets.clone();
    }
    if !links.is_empty() {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = dir.join("links.jsonl");
        write_links(&file, &links)?;
        *links_file = Some(file);
    }
    let (same_links, different_links) =
        (links.iter().filter(|l| l.same).count(), links.iter().filter(|l| !l.same).count());
    println!(
        "adapting on {} tracklets in {} ({same_links} same-person and {different_links} different-people links from feedback)",
        config.dataset.paths()[0].display(),
        dir.display()
    );
    let served_dir = args.model_dir.join(&args.model);
    let (candidate, served, run_dir) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut bar = crate::train::ProgressBar::new(config.training.epochs);
        let outcome = reid_trainer::train(&config, &dir, &mut |e| bar.show(&e), &AtomicBool::new(false))?;
        let score = |path: &std::path::Path| -> anyhow::Result<Judgement> {
            let mut model = reid_model::load_model(path, LoadOptions::default())?;
            Ok(judge(model.as_mut(), &judged)?)
        };
        let candidate = score(&outcome.dir.join("best")).context("judging the candidate")?;
        let served = if served_dir.join("model.json").is_file() {
            Some(score(&served_dir).context("judging the served model")?)
        } else {
            None
        };
        Ok((candidate, served, outcome.dir))
    })
    .await
    .map_err(|e| anyhow::anyhow!("adaptation thread: {e}"))??;
    let published = replaces(candidate, served, args.min_gain)
        .then(|| reid_trainer::publish::publish_with(&run_dir, &args.model_dir, &args.model, args.half))
        .transpose()?;
    if args.json {
        let judgement =
            |j: Judgement| json!({ "auc": j.auc, "same_mean": j.same_mean, "different_mean": j.different_mean });
        println!(
            "{}",
            json!({
                "run": run_dir, "pairs": { "same": same, "different": different },
                "links": { "same": same_links, "different": different_links },
                "candidate": judgement(candidate), "served": served.map(judgement),
                "published": published.as_ref().map(|(version, _)| version),
            })
        );
    } else {
        let served_text = served.map_or("no served model".to_owned(), |s| format!("served model AUC {:.4}", s.auc));
        println!(
            "judged on {same} same-person and {different} different-people pairs: candidate AUC {:.4}, {served_text}",
            candidate.auc
        );
        match &published {
            Some((version, path)) => println!("published {} version {version}", path.display()),
            None => println!("kept the served model; the candidate stays in {}", run_dir.display()),
        }
    }
    Ok(ExitCode::SUCCESS)
}
