//! The gRPC `TrainerService`: thin handlers over [`Runs`].

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use reid_proto::v1 as pb;
use reid_proto::v1::embedder_service_client::EmbedderServiceClient;
use reid_proto::v1::trainer_service_server::TrainerService;
use serde::Deserialize;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::config::RunConfig;
use crate::error::TrainError;
use crate::metrics::TrainerMetrics;
use crate::runs::{Runs, is_terminal};

/// The trainer service's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainerConfig {
    /// Where runs keep their folders.
    pub runs_dir: PathBuf,
    /// Where `PublishModel` writes models (the embedders' model directory).
    pub model_dir: PathBuf,
    /// Runs that train at once; later ones wait, QUEUED.
    pub max_concurrent_runs: usize,
    /// Folders `StartRun` may read datasets and initial weights from (and `model_dir`): a run
    /// config naming any other path is refused before anything is read.
    pub data_roots: Vec<PathBuf>,
    /// The embedders `PublishModel` may tell to load a model: a request names some of them, or
    /// none for all. The deployment's key is only ever sent to these.
    pub embedders: Vec<String>,
    /// Deadline of each `LoadModel` call when publishing.
    #[serde(with = "reid_server::duration::millis")]
    pub notify_timeout: std::time::Duration,
    /// Serve Prometheus metrics (`GET /metrics`) on this address.
    pub metrics_listen: Option<String>,
    /// API key and TLS, for callers and for the embedders this one calls.
    pub security: reid_server::Security,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig {
            runs_dir: PathBuf::from("runs"),
            model_dir: PathBuf::from("models"),
            max_concurrent_runs: 1,
            data_roots: vec![PathBuf::from("/usr/share/datasets")],
            embedders: Vec::new(),
            notify_timeout: std::time::Duration::from_secs(60),
            metrics_listen: None,
            security: reid_server::Security::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct TrainerGrpc {
    runs: Arc<Runs>,
    config: TrainerConfig,
    metrics: TrainerMetrics,
}

impl TrainerGrpc {
    pub(crate) fn new(config: TrainerConfig, metrics: TrainerMetrics) -> Self {
        let runs = Runs::new(config.runs_dir.clone(), config.max_concurrent_runs, metrics.clone());
        TrainerGrpc { runs: Arc::new(runs), config, metrics }
    }

    /// A run started over the API reads only below the configured roots.
    fn check_paths(&self, config: &RunConfig) -> Result<(), TrainError> {
        let roots: Vec<PathBuf> =
            self.config.data_roots.iter().chain(std::iter::once(&self.config.model_dir)).cloned().collect();
        match config.paths().into_iter().find(|p| !reid_server::paths::is_confined(p, &roots)) {
            None => Ok(()),
            Some(p) => Err(TrainError::Config(format!(
                "{} is outside the trainer's data_roots and model_dir",
                reid_server::truncated(&p.display().to_string(), 256)
            ))),
        }
    }

    fn start(&self, req: pb::StartRunRequest) -> Result<String, TrainError> {
        let spec = req.config.ok_or_else(|| TrainError::Config("config is required".into()))?;
        if !spec.resume_run_id.is_empty() {
            self.runs.resume(&spec.resume_run_id)?;
            return Ok(spec.resume_run_id);
        }
        let config = RunConfig::parse(&spec.config)?;
        self.check_paths(&config)?;
        self.runs.start_new(config)
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RunEvent, Status>> + Send>>;

#[tonic::async_trait]
impl TrainerService for TrainerGrpc {
    async fn start_run(&self, request: Request<pb::StartRunRequest>) -> Result<Response<pb::StartRunResponse>, Status> {
        let run_id = self.start(request.into_inner())?;
        Ok(Response::new(pb::StartRunResponse { run_id }))
    }

    type WatchRunStream = EventStream;

    /// Replays the run's events, then follows it until it ends.
    async fn watch_run(&self, request: Request<pb::WatchRunRequest>) -> Result<Response<Self::WatchRunStream>, Status> {
        let run = self.runs.get(&request.into_inner().run_id)?;
        let (past, mut live, state) = run.watch();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            for e in past {
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            if is_terminal(state) {
                return;
            }
            loop {
                match live.recv().await {
                    Ok(e) => {
                        let end = is_terminal(pb::RunState::try_from(e.state).unwrap_or_default());
                        if tx.send(Ok(e)).await.is_err() || end {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let note = format!("{n} events skipped (slow watcher)");
                        let e = pb::RunEvent {
                            run_id: run.id.clone(),
                            at: None,
                            state: run.state() as i32,
                            event: Some(pb::run_event::Event::Message(note)),
                        };
                        if tx.send(Ok(e)).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn list_runs(&self, _: Request<pb::ListRunsRequest>) -> Result<Response<pb::ListRunsResponse>, Status> {
        Ok(Response::new(pb::ListRunsResponse { runs: self.runs.list() }))
    }

    async fn cancel_run(
        &self,
        request: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::CancelRunResponse>, Status> {
        let run = self.runs.get(&request.into_inner().run_id)?;
        run.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(Response::new(pb::CancelRunResponse { state: run.state() as i32 }))
    }

    async fn publish_model(
        &self,
        request: Request<pb::PublishModelRequest>,
    ) -> Result<Response<pb::PublishModelResponse>, Status> {
        let req = request.into_inner();
        let targets = if req.embedder_addrs.is_empty() {
            self.config.embedders.clone()
        } else if let Some(other) = req.embedder_addrs.iter().find(|a| !self.config.embedders.contains(a)) {
            return Err(TrainError::Config(format!(
                "embedder {:?} is not one of the trainer's configured embedders",
                reid_server::truncated(other, 128)
            ))
            .into());
        } else {
            req.embedder_addrs.clone()
        };
        let (version, path) = self.runs.publish(&req.run_id, &self.config.model_dir, &req.name).await?;
        let mut response = pb::PublishModelResponse { version, path: path.display().to_string(), ..Default::default() };
        // Only configured embedders are told (they get the deployment's key); one that cannot be
        // reached does not undo the publication: the reply says which ones loaded it.
        for addr in targets {
            match load_on_embedder(&addr, &req.name, &self.config).await {
                Ok(()) => response.notified.push(addr),
                Err(e) => {
                    tracing::warn!(embedder = %addr, error = %e, "published, but the embedder was not told");
                    response.failed.push(pb::NotifyFailure { embedder_addr: addr, message: e.to_string() });
                }
            }
        }
        self.metrics.published.inc();
        Ok(Response::new(response))
    }
}

/// Asks the embedder at `addr` to serve model folder `name`, within the configured deadline.
async fn load_on_embedder(addr: &str, name: &str, config: &TrainerConfig) -> Result<(), TrainError> {
    let err = |message: String| TrainError::Embedder { addr: addr.to_owned(), message };
    let security = &config.security;
    let endpoint = security
        .endpoint(addr)
        .map_err(|e| err(format!("{e:#}")))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(config.notify_timeout);
    let channel = endpoint.connect().await.map_err(|e| err(e.to_string()))?;
    let mut client = EmbedderServiceClient::new(security.channel(channel));
    client.load_model(pb::LoadModelRequest { name: name.to_owned() }).await.map_err(|s| err(s.message().to_owned()))?;
    Ok(())
}
