//! `reid demo`: the whole pipeline on this machine. The four services start in this process on
//! loopback ports (as `reid up` runs them) on the embedded Qdrant engine; `vtest.avi`, a real
//! pedestrian video, plays as two cameras that see overlapping parts of the scene in different
//! colours, sizes and clocks; the identity service matches people across the two; a table of the
//! people seen on both cameras is printed and an HTML report is written.

mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Args;
use reid_proto::v1 as pb;

use crate::playback::{DEFAULT_MIN_MARGIN, EastCamera, MergePass, Played, Seen, VTEST, fresh_config, play, secs};
use report::Report;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The video both cameras play.
    #[arg(long, default_value = VTEST)]
    video: PathBuf,
    /// Where the report goes (index.html, crops, views, training plots).
    #[arg(long, default_value = "report")]
    out: PathBuf,
    /// The demo's own storage; emptied at the start so that every run starts clean.
    #[arg(long, default_value = "data/demo")]
    data: PathBuf,
    #[arg(long, default_value = "models")]
    model_dir: PathBuf,
    /// Cosine threshold for matching a tracklet to an identity (the model card's
    /// `match_threshold` when unset; docs/demo.md).
    #[arg(long)]
    threshold: Option<f32>,
    /// How much better than the runner-up identity the best must be for a match.
    #[arg(long, default_value_t = DEFAULT_MIN_MARGIN)]
    min_margin: f32,
    #[command(flatten)]
    merge: MergePass,
    #[command(flatten)]
    east: EastCamera,
    /// The model folder the embedder serves (under --model-dir).
    #[arg(long, default_value = reid_embedder::DEFAULT_MODEL)]
    model: String,
}

/// The identities seen on both cameras, in the order they were first seen, and the others.
fn split_by_cameras(seen: &[Seen], t0: SystemTime) -> (Vec<&Seen>, Vec<&Seen>) {
    let (mut both, one): (Vec<&Seen>, Vec<&Seen>) =
        seen.iter().partition(|s| !s.on("west").is_empty() && !s.on("east").is_empty());
    both.sort_by(|a, b| a.first_seen(t0).total_cmp(&b.first_seen(t0)));
    (both, one)
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let mut config = fresh_config(&args.data, &args.model_dir, &args.model, &args.video)?;
    config.identity.association.threshold = args.threshold;
    config.identity.association.min_margin = args.min_margin;
    config.identity.association.observe_min_margin = args.min_margin;
    args.merge.apply(&mut config);
    let cameras = args.east.cameras(&args.video);
    println!("playing {} as {}", args.video.display(), args.east.describe());
    let Played { t0, statuses, seen, model } = play(config, &cameras).await?;

    let (both, one) = split_by_cameras(&seen, t0);
    print_table(&seen, &both, t0);
    let report = Report {
        args: &args,
        t0,
        cameras: &cameras,
        statuses: &statuses,
        seen: &seen,
        both: &both,
        one: &one,
        model: &model,
    };
    let index = report.write()?;
    println!("\nreport: {}", index.display());
    Ok(ExitCode::SUCCESS)
}

fn span(sightings: &[&pb::Sighting], t0: SystemTime) -> String {
    let first = sightings.iter().map(|s| secs(s.start.as_ref(), t0)).fold(f64::INFINITY, f64::min);
    let last = sightings.iter().map(|s| secs(s.end.as_ref(), t0)).fold(f64::NEG_INFINITY, f64::max);
    format!("{first:6.1} - {last:6.1} s ({})", sightings.len())
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

fn print_table(seen: &[Seen], both: &[&Seen], t0: SystemTime) {
    let tracklets: usize = seen.iter().map(|s| s.sightings.len()).sum();
    println!("\n{} tracklets became {} identities; {} were seen on both cameras:\n", tracklets, seen.len(), both.len());
    println!("{:<10} {:<28} {:<28}", "identity", "west: first - last (tracklets)", "east: first - last (tracklets)");
    for s in both {
        println!(
            "{:<10} {:<28} {:<28}",
            short(&s.summary.identity_id),
            span(&s.on("west"), t0),
            span(&s.on("east"), t0)
        );
    }
    println!("(times in seconds since the cameras started, each by its own clock: east's runs ahead)");
}
