//! The runs a trainer service knows: started here (queued, running, finished) or found on disk
//! from an earlier process. Each run keeps its events so that `WatchRun` can replay them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use reid_proto::v1 as pb;
use tokio::sync::{Semaphore, broadcast};

use crate::config::RunConfig;
use crate::error::TrainError;
use crate::metrics::TrainerMetrics;
use crate::train::{EpochRecord, Event};

/// One run and what is known of it.
pub(crate) struct RunHandle {
    pub id: String,
    pub dir: PathBuf,
    pub config: RunConfig,
    pub cancel: AtomicBool,
    started_at: SystemTime,
    inner: Mutex<RunInner>,
}

struct RunInner {
    state: pb::RunState,
    events: Vec<pb::RunEvent>,
    sender: broadcast::Sender<pb::RunEvent>,
    epochs_done: u32,
    best: Option<EpochRecord>,
    error: String,
}

impl std::fmt::Debug for RunHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunHandle").field("id", &self.id).finish()
    }
}

pub(crate) fn is_terminal(state: pb::RunState) -> bool {
    matches!(state, pb::RunState::Succeeded | pb::RunState::Failed | pb::RunState::Cancelled)
}

impl RunHandle {
    fn new(id: String, dir: PathBuf, config: RunConfig) -> Arc<RunHandle> {
        let (sender, _) = broadcast::channel(1024);
        Arc::new(RunHandle {
            id,
            dir,
            config,
            cancel: AtomicBool::new(false),
            started_at: SystemTime::now(),
            inner: Mutex::new(RunInner {
                state: pb::RunState::Queued,
                events: Vec::new(),
                sender,
                epochs_done: 0,
                best: None,
                error: String::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RunInner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn state(&self) -> pb::RunState {
        self.lock().state
    }

    /// Records and broadcasts one event.
    fn emit(&self, state: pb::RunState, event: pb::run_event::Event) {
        let mut inner = self.lock();
        inner.state = state;
        let e = pb::RunEvent {
            run_id: self.id.clone(),
            at: Some(SystemTime::now().into()),
            state: state as i32,
            event: Some(event),
        };
        inner.events.push(e.clone());
        let _ = inner.sender.send(e);
    }

    /// Turns a training event into a run event.
    pub(crate) fn record(&self, event: &Event) {
        let proto = match event {
            Event::Progress { epoch, step, loss, active_fraction } => {
                pb::run_event::Event::Progress(pb::TrainProgress {
                    epoch: *epoch,
                    step: *step,
                    loss: *loss as f32,
                    active_fraction: *active_fraction as f32,
                })
            }
            Event::Epoch(r) => {
                let mut inner = self.lock();
                inner.epochs_done = inner.epochs_done.max(r.epoch);
                if r.epoch > 0 && inner.best.as_ref().is_none_or(|b| r.map > b.map) {
                    inner.best = Some(r.clone());
                }
                drop(inner);
                pb::run_event::Event::Eval(eval_metrics(r))
            }
            Event::Message { text } => pb::run_event::Event::Message(text.clone()),
        };
        self.emit(pb::RunState::Running, proto);
    }

    pub(crate) fn start(&self) {
        self.emit(pb::RunState::Running, pb::run_event::Event::Message("started".into()));
    }

    pub(crate) fn finish(&self, result: Result<(), TrainError>) {
        match result {
            Ok(()) => self.emit(pb::RunState::Succeeded, pb::run_event::Event::Message("finished".into())),
            Err(TrainError::Cancelled) => {
                self.emit(pb::RunState::Cancelled, pb::run_event::Event::Message("cancelled".into()))
            }
            Err(e) => {
                self.lock().error = e.to_string();
                self.emit(pb::RunState::Failed, pb::run_event::Event::Message(e.to_string()));
            }
        }
    }

    /// The events so far and a receiver for the rest, taken atomically.
    pub(crate) fn watch(&self) -> (Vec<pb::RunEvent>, broadcast::Receiver<pb::RunEvent>, pb::RunState) {
        let inner = self.lock();
        (inner.events.clone(), inner.sender.subscribe(), inner.state)
    }

    pub(crate) fn summary(&self) -> pb::RunSummary {
        let inner = self.lock();
        pb::RunSummary {
            run_id: self.id.clone(),
            state: inner.state as i32,
            started_at: Some(self.started_at.into()),
            epochs_done: inner.epochs_done,
            best: inner.best.as_ref().map(eval_metrics),
            error: inner.error.clone(),
        }
    }
}

pub(crate) fn eval_metrics(r: &EpochRecord) -> pb::EvalMetrics {
    pb::EvalMetrics {
        epoch: r.epoch,
        rank1: r.rank1 as f32,
        rank5: r.rank5 as f32,
        rank10: r.rank10 as f32,
        map: r.map as f32,
        minp: r.minp as f32,
        recall_at_1: r.rank1 as f32,
        tar_at_far_1e2: r.tar_at_far_1e2 as f32,
        tar_at_far_1e3: r.tar_at_far_1e3 as f32,
        eer: r.eer as f32,
        threshold: r.threshold as f32,
    }
}

/// All runs, and the gate that lets `max_concurrent` of them train at once.
pub(crate) struct Runs {
    runs_dir: PathBuf,
    runs: Mutex<BTreeMap<String, Arc<RunHandle>>>,
    gate: Arc<Semaphore>,
    metrics: TrainerMetrics,
}

impl std::fmt::Debug for Runs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runs").field("runs_dir", &self.runs_dir).finish()
    }
}

impl Runs {
    pub(crate) fn new(runs_dir: PathBuf, max_concurrent: usize, metrics: TrainerMetrics) -> Runs {
        Runs {
            runs_dir,
            runs: Mutex::new(BTreeMap::new()),
            gate: Arc::new(Semaphore::new(max_concurrent.max(1))),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<RunHandle>>> {
        self.runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a new run under a fresh id, `NAME-YYYYMMDD-HHMMSS` (with `-2`, `-3`, ... when
    /// runs of that name start in the same second). Returns the id.
    pub(crate) fn start_new(&self, config: RunConfig) -> Result<String, TrainError> {
        let mut runs = self.lock();
        // Chosen and registered under one lock, so two starts in one second get two folders.
        let id = crate::fresh_run_id(&self.runs_dir, &config.name, |id| runs.contains_key(id));
        self.launch(&mut runs, id.clone(), config)?;
        Ok(id)
    }

    /// Publishes run `id`'s best epoch as `model_dir/name` ([`crate::publish::publish`], off the
    /// async threads); returns the published version and folder.
    pub(crate) async fn publish(
        &self,
        id: &str,
        model_dir: &Path,
        name: &str,
    ) -> Result<(String, PathBuf), TrainError> {
        if !reid_model::card::is_folder_name(id) {
            return Err(TrainError::RunNotFound(id.to_owned()));
        }
        let run_dir = self.runs_dir.join(id);
        if !run_dir.is_dir() {
            return Err(TrainError::RunNotFound(id.to_owned()));
        }
        let (model_dir, name, dir) = (model_dir.to_owned(), name.to_owned(), run_dir.clone());
        tokio::task::spawn_blocking(move || crate::publish::publish(&run_dir, &model_dir, &name))
            .await
            .map_err(|e| TrainError::io(dir)(std::io::Error::other(e)))?
    }

    /// Resumes the run in `runs_dir/<id>` from its last checkpoint, with the config it was
    /// started with.
    pub(crate) fn resume(&self, id: &str) -> Result<(), TrainError> {
        if !reid_model::card::is_folder_name(id) {
            return Err(TrainError::RunNotFound(id.to_owned()));
        }
        let file = self.runs_dir.join(id).join("config.toml");
        if !file.is_file() {
            return Err(TrainError::RunNotFound(id.to_owned()));
        }
        let config = RunConfig::from_file(&file)?;
        self.launch(&mut self.lock(), id.to_owned(), config)
    }

    /// Registers a run and starts it once the gate lets it.
    fn launch(
        &self,
        runs: &mut BTreeMap<String, Arc<RunHandle>>,
        id: String,
        config: RunConfig,
    ) -> Result<(), TrainError> {
        if runs.get(&id).is_some_and(|r| !is_terminal(r.state())) {
            return Err(TrainError::Config(format!("run {id} is already active")));
        }
        let handle = RunHandle::new(id.clone(), self.runs_dir.join(&id), config);
        runs.insert(id, handle.clone());
        let (gate, run, metrics) = (self.gate.clone(), handle.clone(), self.metrics.clone());
        tokio::spawn(async move {
            let Ok(_permit) = gate.acquire_owned().await else { return };
            if run.cancel.load(Ordering::Relaxed) {
                run.finish(Err(TrainError::Cancelled));
                return;
            }
            run.start();
            metrics.runs_active.inc();
            let (job, m) = (run.clone(), metrics.clone());
            let result = tokio::task::spawn_blocking(move || {
                let mut on_event = |e: Event| {
                    if let Event::Epoch(r) = &e
                        && r.epoch > 0
                    {
                        m.epochs.inc();
                        m.last_map.set(r.map);
                    }
                    job.record(&e);
                };
                crate::train::train(&job.config, &job.dir, &mut on_event, &job.cancel).map(|_| ())
            })
            .await
            .unwrap_or_else(|e| Err(TrainError::Config(format!("training thread: {e}"))));
            metrics.runs_active.dec();
            run.finish(result);
            let state = run.state().as_str_name().trim_start_matches("RUN_STATE_").to_ascii_lowercase();
            metrics.runs_ended.with_label_values(&[state.as_str()]).inc();
        });
        Ok(())
    }

    pub(crate) fn get(&self, id: &str) -> Result<Arc<RunHandle>, TrainError> {
        self.lock().get(id).cloned().ok_or_else(|| TrainError::RunNotFound(id.to_owned()))
    }

    pub(crate) fn list(&self) -> Vec<pb::RunSummary> {
        let runs = self.lock();
        let mut out: Vec<pb::RunSummary> = runs.values().map(|r| r.summary()).collect();
        // Runs of earlier processes, from their folders.
        if let Ok(entries) = std::fs::read_dir(&self.runs_dir) {
            for entry in entries.flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                if runs.contains_key(&id) || !entry.path().join("checkpoint/state.json").is_file() {
                    continue;
                }
                out.push(on_disk_summary(&id, &entry.path()));
            }
        }
        out.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        out
    }
}

/// What a run folder left by another process says: finished when all its epochs are done.
fn on_disk_summary(id: &str, dir: &Path) -> pb::RunSummary {
    let state: serde_json::Value = std::fs::read_to_string(dir.join("checkpoint/state.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let history: Vec<EpochRecord> = std::fs::read_to_string(dir.join("history.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let epochs_done = state["epochs_done"].as_u64().unwrap_or(0) as u32;
    let planned = RunConfig::from_file(&dir.join("config.toml")).map(|c| c.training.epochs).unwrap_or(u32::MAX);
    let best_epoch = state["best_epoch"].as_u64().map(|e| e as u32);
    pb::RunSummary {
        run_id: id.to_owned(),
        state: if epochs_done >= planned { pb::RunState::Succeeded } else { pb::RunState::Cancelled } as i32,
        started_at: None,
        epochs_done,
        best: history.iter().find(|r| Some(r.epoch) == best_epoch).map(eval_metrics),
        error: String::new(),
    }
}
