//! `reid train`: runs a training config in this process with a progress bar, or resumes a run.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::Args;
use reid_trainer::{Event, RunConfig};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Training config (TOML or JSON); see docs/metric-learning.md.
    #[arg(long, required_unless_present = "resume")]
    config: Option<PathBuf>,
    /// Folder for runs; each run gets RUNS/<run id>.
    #[arg(long, default_value = "runs")]
    runs_dir: PathBuf,
    /// Run id (default: the config's name and the time).
    #[arg(long)]
    run_id: Option<String>,
    /// Resume the run in this folder from its last checkpoint.
    #[arg(long, conflicts_with = "config")]
    resume: Option<PathBuf>,
    /// Run on the trainer service at this address instead of in this process.
    #[arg(long)]
    addr: Option<String>,
    /// After training, publish the best epoch as MODEL_DIR/NAME (where embedders load models).
    #[arg(long, conflicts_with = "addr")]
    publish: Option<String>,
    #[arg(long, default_value = "models")]
    model_dir: PathBuf,
    /// Publish the weights in f16 (half the size, same f32 inference).
    #[arg(long, requires = "publish")]
    half: bool,
}

pub async fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
    if let Some(addr) = &args.addr {
        return remote(addr, &args).await;
    }
    let (config, dir) = match (&args.config, &args.resume) {
        (_, Some(dir)) => (RunConfig::from_file(&dir.join("config.toml"))?, dir.clone()),
        (Some(path), None) => {
            let config = RunConfig::from_file(path)?;
            let id = args.run_id.clone().unwrap_or_else(|| reid_trainer::run_id(&config.name));
            (config, args.runs_dir.join(id))
        }
        (None, None) => anyhow::bail!("--config or --resume is required"),
    };
    println!("run folder {}", dir.display());
    let cancel = Arc::new(AtomicBool::new(false));
    let stop = cancel.clone();
    tokio::spawn(async move {
        reid_server::shutdown_signal().await;
        eprintln!("\nstopping after this step; resume with --resume");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let outcome = tokio::task::spawn_blocking(move || {
        let mut bar = ProgressBar::new(config.training.epochs);
        reid_trainer::train(&config, &dir, &mut |e| bar.show(&e), &cancel)
    })
    .await
    .context("training thread")??;
    if let Some(best) = outcome.best {
        println!(
            "best epoch {}: rank-1 {:.4}, mAP {:.4}, mINP {:.4}, TAR@FAR1e-3 {:.4}, threshold {:.3}; model in {}",
            best.epoch,
            best.rank1,
            best.map,
            best.minp,
            best.tar_at_far_1e3,
            best.threshold,
            outcome.dir.join("best").display()
        );
    }
    if let Some(name) = &args.publish {
        let (version, path) = reid_trainer::publish::publish_with(&outcome.dir, &args.model_dir, name, args.half)?;
        println!("published {} version {version}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// One status line, redrawn in place on a terminal and printed per epoch otherwise.
pub(crate) struct ProgressBar {
    epochs: u32,
    tty: bool,
}

impl ProgressBar {
    pub(crate) fn new(epochs: u32) -> Self {
        ProgressBar { epochs, tty: std::io::stderr().is_terminal() }
    }

    pub(crate) fn show(&mut self, event: &Event) {
        let mut err = std::io::stderr();
        match event {
            Event::Progress { epoch, step, loss, active_fraction } if self.tty => {
                let done = ((*epoch - 1) as usize * 30) / self.epochs.max(1) as usize;
                let _ = write!(
                    err,
                    "\r[{}{}] epoch {epoch}/{} step {step} loss {loss:.4} active {active_fraction:.3}   ",
                    "#".repeat(done),
                    ".".repeat(30 - done),
                    self.epochs
                );
                let _ = err.flush();
            }
            Event::Progress { .. } => {}
            Event::Epoch(r) => {
                let _ = writeln!(
                    err,
                    "{}epoch {:>3}/{}: loss {:.4} active {:.3} | rank-1 {:.4} rank-5 {:.4} mAP {:.4} mINP {:.4} | TAR@FAR1e-3 {:.4} EER {:.4} | {:.1}s",
                    if self.tty { "\r" } else { "" },
                    r.epoch,
                    self.epochs,
                    r.loss,
                    r.active_fraction,
                    r.rank1,
                    r.rank5,
                    r.map,
                    r.minp,
                    r.tar_at_far_1e3,
                    r.eer,
                    r.seconds
                );
            }
            Event::Message { text } => {
                let _ = writeln!(err, "{text}");
            }
        }
    }
}

/// StartRun (or resume) on a trainer service, then follow WatchRun until the run ends.
async fn remote(addr: &str, args: &TrainArgs) -> anyhow::Result<ExitCode> {
    use reid_proto::v1 as pb;
    use tokio_stream::StreamExt;

    let mut client = pb::trainer_service_client::TrainerServiceClient::new(crate::client::connect(addr).await?);
    let config = match (&args.config, &args.resume) {
        (_, Some(dir)) => pb::RunConfig {
            config: String::new(),
            resume_run_id: dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        },
        (Some(path), None) => pb::RunConfig {
            config: std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
            resume_run_id: String::new(),
        },
        (None, None) => anyhow::bail!("--config or --resume is required"),
    };
    let run_id = client
        .start_run(pb::StartRunRequest { config: Some(config) })
        .await
        .map_err(|s| anyhow::anyhow!("StartRun: {}", s.message()))?
        .into_inner()
        .run_id;
    println!("run {run_id} on {addr}");
    let mut events = client.watch_run(pb::WatchRunRequest { run_id: run_id.clone() }).await?.into_inner();
    let mut last = pb::RunState::Unspecified;
    while let Some(event) = events.next().await {
        let event = event?;
        last = pb::RunState::try_from(event.state).unwrap_or_default();
        match event.event {
            Some(pb::run_event::Event::Progress(p)) => {
                eprint!("\repoch {} step {} loss {:.4} active {:.3}   ", p.epoch, p.step, p.loss, p.active_fraction)
            }
            Some(pb::run_event::Event::Eval(m)) => eprintln!(
                "\repoch {:>3}: rank-1 {:.4} rank-5 {:.4} mAP {:.4} mINP {:.4} | TAR@FAR1e-3 {:.4} EER {:.4}",
                m.epoch, m.rank1, m.rank5, m.map, m.minp, m.tar_at_far_1e3, m.eer
            ),
            Some(pb::run_event::Event::Message(text)) => eprintln!("{text}"),
            None => {}
        }
    }
    println!("run {run_id}: {}", last.as_str_name());
    Ok(if last == pb::RunState::Succeeded { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
