//! `reid train`: runs a training config in this process with a progress bar, or resumes a run.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::Args;
use reid_trainer::{Event, TrainConfig};

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
}

pub async fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let (config, dir) = match (&args.config, &args.resume) {
        (_, Some(dir)) => (TrainConfig::from_file(&dir.join("config.toml"))?, dir.clone()),
        (Some(path), None) => {
            let config = TrainConfig::from_file(path)?;
            let id = args.run_id.clone().unwrap_or_else(|| run_id(&config.name));
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
    Ok(ExitCode::SUCCESS)
}

/// `NAME-YYYYMMDD-HHMMSS` in UTC.
pub fn run_id(name: &str) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{name}-{year:04}{month:02}{day:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// One status line, redrawn in place on a terminal and printed per epoch otherwise.
struct ProgressBar {
    epochs: u32,
    tty: bool,
}

impl ProgressBar {
    fn new(epochs: u32) -> Self {
        ProgressBar { epochs, tty: std::io::stderr().is_terminal() }
    }

    fn show(&mut self, event: &Event) {
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
