//! Dynamic batching on a dedicated inference thread.
//!
//! Handlers pre-process their images on the blocking pool and send a [`Job`] through a bounded
//! channel. The inference thread, which owns the model (libtorch stays off the async runtime),
//! takes the first job, then keeps taking jobs until the batch holds `max_batch` images, or
//! `max_delay` has passed, or nobody else is about to submit; it runs one forward pass and hands
//! every job exactly its own rows back. A request is never split across batches, so the model
//! swap messages that travel on the same channel land between batches: every response comes from
//! exactly one model version.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use reid_model::{EmbeddingModel, InputSpec, ModelCard};
use tokio::sync::{oneshot, watch};

use crate::error::EmbedderError;
use crate::metrics::EmbedderMetrics;

/// The model being served, as handlers see it.
#[derive(Debug)]
pub struct ActiveModel {
    /// Folder name under the model directory.
    pub name: String,
    pub card: ModelCard,
    pub device: String,
}

/// Rows produced for one job, and the model that produced them.
#[derive(Debug)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub model: Arc<ActiveModel>,
}

#[derive(Debug)]
pub(crate) enum JobError {
    /// The job was pre-processed for another model's input; prepare it again and resubmit.
    Stale,
    Failed(EmbedderError),
}

pub(crate) struct Job {
    pub spec: InputSpec,
    pub rows: Vec<Vec<f32>>,
    pub enqueued: Instant,
    pub reply: oneshot::Sender<Result<Embedded, JobError>>,
}

enum Msg {
    Job(Job),
    Swap(String, Box<dyn EmbeddingModel>, oneshot::Sender<Arc<ActiveModel>>),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchPolicy {
    pub max_batch: usize,
    pub max_delay: Duration,
    pub queue_capacity: usize,
}

/// The handle handlers use; cheap to clone.
#[derive(Clone)]
pub(crate) struct Batcher {
    tx: SyncSender<Msg>,
    active: watch::Receiver<Option<Arc<ActiveModel>>>,
    /// Requests pre-processing now, about to submit: the thread waits for them, not longer.
    preparing: Arc<AtomicUsize>,
    queue_capacity: usize,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("preparing", &self.preparing).finish()
    }
}

/// Marks a request as pre-processing until dropped.
pub(crate) struct Preparing(Arc<AtomicUsize>);

impl Drop for Preparing {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Batcher {
    /// Starts the inference thread. It ends when every `Batcher` clone is dropped, after
    /// finishing the jobs already queued.
    pub(crate) fn spawn(policy: BatchPolicy, metrics: EmbedderMetrics) -> std::io::Result<(Batcher, JoinHandle<()>)> {
        let (tx, rx) = mpsc::sync_channel(policy.queue_capacity);
        let (active_tx, active) = watch::channel(None);
        let preparing = Arc::new(AtomicUsize::new(0));
        let worker = Worker { rx, policy, metrics, active_tx, preparing: preparing.clone(), model: None };
        let thread = std::thread::Builder::new().name("reid-inference".into()).spawn(move || worker.run())?;
        Ok((Batcher { tx, active, preparing, queue_capacity: policy.queue_capacity }, thread))
    }

    /// The model served now, if any.
    pub(crate) fn active(&self) -> Option<Arc<ActiveModel>> {
        self.active.borrow().clone()
    }

    pub(crate) fn preparing(&self) -> Preparing {
        self.preparing.fetch_add(1, Ordering::SeqCst);
        Preparing(self.preparing.clone())
    }

    /// Queues a job; fails at once when the queue is full rather than making callers wait.
    pub(crate) fn submit(&self, job: Job) -> Result<(), EmbedderError> {
        self.tx.try_send(Msg::Job(job)).map_err(|e| match e {
            TrySendError::Full(_) => EmbedderError::Overloaded(self.queue_capacity),
            TrySendError::Disconnected(_) => EmbedderError::ShuttingDown,
        })
    }

    /// Hands a loaded model to the inference thread; resolves once it serves.
    pub(crate) async fn swap(
        &self,
        name: String,
        model: Box<dyn EmbeddingModel>,
    ) -> Result<Arc<ActiveModel>, EmbedderError> {
        let (reply, done) = oneshot::channel();
        let tx = self.tx.clone();
        // `send` may block while the queue is full: keep that off the runtime.
        tokio::task::spawn_blocking(move || tx.send(Msg::Swap(name, model, reply)))
            .await
            .map_err(|_| EmbedderError::ShuttingDown)?
            .map_err(|_| EmbedderError::ShuttingDown)?;
        done.await.map_err(|_| EmbedderError::ShuttingDown)
    }
}

struct Worker {
    rx: Receiver<Msg>,
    policy: BatchPolicy,
    metrics: EmbedderMetrics,
    active_tx: watch::Sender<Option<Arc<ActiveModel>>>,
    preparing: Arc<AtomicUsize>,
    model: Option<(Box<dyn EmbeddingModel>, Arc<ActiveModel>)>,
}

impl Worker {
    fn run(mut self) {
        let mut carried: Option<Msg> = None;
        loop {
            let msg = match carried.take() {
                Some(msg) => msg,
                None => match self.rx.recv() {
                    Ok(msg) => msg,
                    Err(_) => break,
                },
            };
            let first = match msg {
                Msg::Swap(name, model, reply) => {
                    self.swap(name, model, reply);
                    continue;
                }
                Msg::Job(job) => job,
            };
            let (jobs, next) = self.collect(first);
            carried = next;
            self.run_batch(jobs);
        }
        tracing::debug!("inference thread finished");
    }

    /// Gathers jobs after `first` into one batch; returns the message that did not fit.
    fn collect(&self, first: Job) -> (Vec<Job>, Option<Msg>) {
        let deadline = Instant::now() + self.policy.max_delay;
        let mut rows = first.rows.len();
        let mut jobs = vec![first];
        while rows < self.policy.max_batch {
            let msg = match self.rx.try_recv() {
                Ok(msg) => msg,
                Err(_) => {
                    // Nothing queued: wait only if someone is about to submit.
                    let now = Instant::now();
                    if self.preparing.load(Ordering::SeqCst) == 0 || now >= deadline {
                        break;
                    }
                    match self.rx.recv_timeout((deadline - now).min(Duration::from_micros(200))) {
                        Ok(msg) => msg,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            match msg {
                Msg::Job(job) if rows + job.rows.len() <= self.policy.max_batch => {
                    rows += job.rows.len();
                    jobs.push(job);
                }
                other => return (jobs, Some(other)),
            }
        }
        (jobs, None)
    }

    fn swap(&mut self, name: String, model: Box<dyn EmbeddingModel>, reply: oneshot::Sender<Arc<ActiveModel>>) {
        let active = Arc::new(ActiveModel { name, card: model.card().clone(), device: model.device() });
        tracing::info!(model = %active.card.id, version = %active.card.version, device = %active.device, "model swapped in");
        self.model = Some((model, active.clone()));
        self.active_tx.send_replace(Some(active.clone()));
        self.metrics.model_swaps.inc();
        let _ = reply.send(active);
    }

    fn run_batch(&mut self, jobs: Vec<Job>) {
        let Some((model, active)) = self.model.as_mut() else {
            for job in jobs {
                let _ = job.reply.send(Err(JobError::Failed(EmbedderError::NoModel("none loaded yet".into()))));
            }
            return;
        };
        let start = Instant::now();
        let (ready, stale): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| j.spec == active.card.input);
        for job in stale {
            let _ = job.reply.send(Err(JobError::Stale));
        }
        if ready.is_empty() {
            return;
        }
        for job in &ready {
            self.metrics.queue_wait_seconds.observe(start.duration_since(job.enqueued).as_secs_f64());
        }
        let rows: Vec<&[f32]> = ready.iter().flat_map(|j| j.rows.iter().map(Vec::as_slice)).collect();
        self.metrics.batch_size.observe(rows.len() as f64);
        let result = model.embed(&rows);
        self.metrics.inference_seconds.observe(start.elapsed().as_secs_f64());
        match result {
            Ok(vectors) if vectors.len() != rows.len() => {
                let e = EmbedderError::Inference(format!("model returned {} rows for {}", vectors.len(), rows.len()));
                for job in ready {
                    let _ = job.reply.send(Err(JobError::Failed(EmbedderError::Inference(e.to_string()))));
                }
            }
            Ok(mut vectors) => {
                self.metrics.images.inc_by(vectors.len() as u64);
                // Hand rows back from the end so each job gets a contiguous split.
                for job in ready.into_iter().rev() {
                    let mine = vectors.split_off(vectors.len() - job.rows.len());
                    let _ = job.reply.send(Ok(Embedded { vectors: mine, model: active.clone() }));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batch = rows.len(), "inference failed");
                for job in ready {
                    let _ = job.reply.send(Err(JobError::Failed(EmbedderError::Inference(e.to_string()))));
                }
            }
        }
    }
}
