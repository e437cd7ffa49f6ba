//! `reid serve NAME`: configuration from a TOML file, then `REID_<SERVICE>__SECTION__KEY`
//! variables and `--set section.key=value` for any field ([`crate::settings`]), then the named
//! flags and their `REID_<SERVICE>_*` variables; a listener; and ctrl-c / SIGTERM for graceful
//! shutdown.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use reid_embedder::EmbedderConfig;
use reid_model::DevicePreference;
use tokio::net::TcpListener;

#[derive(Debug, Subcommand)]
pub enum ServeCommand {
    /// The embedding worker (default 127.0.0.1:50051).
    Embedder(EmbedderArgs),
    /// The trainer (default 127.0.0.1:50054).
    Trainer(TrainerArgs),
    /// The identity service (default 127.0.0.1:50052), on the embedded engine unless --qdrant-url.
    Identity(IdentityArgs),
    /// The camera ingester (default 127.0.0.1:50053).
    Ingester(IngesterArgs),
    /// The operators' web console (default http://127.0.0.1:8080), over the identity service and
    /// the ingester.
    Console(ConsoleArgs),
}

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// TOML file with any `ConsoleConfig` field; flags and environment override it.
    #[arg(long, env = "REID_CONSOLE_CONFIG")]
    config: Option<PathBuf>,
    /// Any configuration field, as in the file: `section.key=value` (repeatable). Environment
    /// variables `REID_CONSOLE__SECTION__KEY` do the same; named flags win over both.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    #[arg(long, env = "REID_CONSOLE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// The identity service (host:port or URL).
    #[arg(long, env = "REID_CONSOLE_IDENTITY")]
    identity: Option<String>,
    /// An ingester, for the cameras' health: every shard of a sharded one (repeatable;
    /// comma-separated in the environment).
    #[arg(long = "ingester", env = "REID_CONSOLE_INGESTERS", value_delimiter = ',')]
    ingesters: Vec<String>,
    /// The identity service's crops folder (`DATA/crops`), for the thumbnails.
    #[arg(long, env = "REID_CONSOLE_CROPS_DIR")]
    crops_dir: Option<PathBuf>,
}

impl ConsoleArgs {
    fn config(&self) -> anyhow::Result<reid_console::ConsoleConfig> {
        let mut config: reid_console::ConsoleConfig = crate::settings::read_config(
            self.config.as_deref(),
            "REID_CONSOLE",
            crate::settings::environment(),
            &self.set,
        )?;
        if let Some(v) = &self.identity {
            config.identity_url = reid_server::grpc_url(v);
        }
        if !self.ingesters.is_empty() {
            config.ingester_urls = self.ingesters.iter().map(|v| reid_server::grpc_url(v)).collect();
        }
        if let Some(v) = &self.crops_dir {
            config.crops_dir = Some(v.clone());
        }
        config.security = crate::client::security_over(std::mem::take(&mut config.security));
        config.validate()?;
        Ok(config)
    }
}

#[derive(Debug, Args)]
pub struct IngesterArgs {
    /// TOML file with any `IngesterConfig` field (cameras, detectors, tracker); flags and
    /// environment override it.
    #[arg(long, env = "REID_INGESTER_CONFIG")]
    config: Option<PathBuf>,
    /// Any configuration field, as in the file: `section.key=value` (repeatable). Environment
    /// variables `REID_INGESTER__SECTION__KEY` do the same; named flags win over both.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    #[arg(long, env = "REID_INGESTER_LISTEN", default_value = reid_proto::ports::INGESTER)]
    listen: String,
    /// The embedder (host:port or URL); without one the identity service embeds the crops.
    #[arg(long, env = "REID_INGESTER_EMBEDDER")]
    embedder: Option<String>,
    /// The identity service that tracklets are sent to.
    #[arg(long, env = "REID_INGESTER_IDENTITY")]
    identity: Option<String>,
    /// Also write every tracklet's crops under this folder (the trainer's `tracklets` layout).
    #[arg(long, env = "REID_INGESTER_EXPORT_DIR")]
    export_dir: Option<PathBuf>,
    /// The detector of cameras that do not name one (ssd when unset).
    #[arg(long, env = "REID_INGESTER_DETECTOR", value_parser = crate::ingester::detector_name())]
    detector: Option<String>,
    /// A camera to start with, as ID=URL (repeatable).
    #[arg(long = "camera", value_parser = parse_camera)]
    cameras: Vec<reid_ingester::CameraSpec>,
    /// Serve Prometheus metrics on this address (GET /metrics).
    #[arg(long, env = "REID_INGESTER_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// A folder whose videos and image folders AddCamera may name (repeatable; comma-separated in
    /// the environment). Without one, cameras added over the API cannot read local files.
    #[arg(long = "file-root", env = "REID_INGESTER_FILE_ROOTS", value_delimiter = ',')]
    file_roots: Vec<PathBuf>,
    /// A loopback, link-local or private host (name, address or CIDR range) AddCamera may stream
    /// from (repeatable; comma-separated). Public hosts need none.
    #[arg(long = "stream-host", env = "REID_INGESTER_STREAM_HOSTS", value_delimiter = ',')]
    stream_hosts: Vec<String>,
    /// Folder of model folders: the stock detectors' models are read from it (`ssdlite-person/`,
    /// `mtcnn/`) instead of `models/` under the working directory.
    #[arg(long, env = "REID_INGESTER_MODEL_DIR")]
    model_dir: Option<PathBuf>,
    /// This replica's shard of the configured cameras: its index (0-based) ...
    #[arg(long, env = "REID_INGESTER_SHARD_INDEX", requires = "shard_count")]
    shard_index: Option<u32>,
    /// ... and the number of replicas sharing the camera list.
    #[arg(long, env = "REID_INGESTER_SHARD_COUNT", requires = "shard_index")]
    shard_count: Option<u32>,
}

pub(crate) fn parse_camera(s: &str) -> Result<reid_ingester::CameraSpec, String> {
    let (id, url) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected ID=URL"))?;
    Ok(reid_ingester::CameraSpec::new(id, url))
}

impl IngesterArgs {
    fn config(&self) -> anyhow::Result<reid_ingester::IngesterConfig> {
        let mut config: reid_ingester::IngesterConfig = crate::settings::read_config(
            self.config.as_deref(),
            "REID_INGESTER",
            crate::settings::environment(),
            &self.set,
        )?;
        if let Some(v) = &self.embedder {
            config.embedder_url = Some(reid_server::grpc_url(v));
        }
        if let Some(v) = &self.identity {
            config.identity_url = Some(reid_server::grpc_url(v));
        }
        if let Some(v) = &self.export_dir {
            config.export_dir = Some(v.clone());
        }
        if let Some(v) = &self.detector {
            config.default_detector = v.clone();
        }
        if let Some(v) = &self.metrics_listen {
            config.metrics_listen = Some(v.clone());
        }
        if let Some(dir) = &self.model_dir {
            config.detectors.models_under(dir);
        }
        config.cameras.extend(self.cameras.iter().cloned());
        config.sources.file_roots.extend(self.file_roots.iter().cloned());
        config.sources.stream_hosts.extend(self.stream_hosts.iter().cloned());
        if let (Some(index), Some(count)) = (self.shard_index, self.shard_count) {
            config.shard = Some(reid_ingester::Shard { index, count });
        }
        config.security = crate::client::security_over(std::mem::take(&mut config.security));
        config.validate()?;
        Ok(config)
    }
}

/// Where the identity service keeps its vectors: a Qdrant server instead of the embedded engine.
/// `reid serve identity` and `reid up` take the same flags and environment.
#[derive(Debug, Args)]
pub struct QdrantArgs {
    /// A Qdrant server's gRPC URL (http://host:6334; https:// for TLS) instead of the embedded engine.
    #[arg(long, env = "REID_QDRANT_URL")]
    qdrant_url: Option<String>,
    #[arg(long, env = "REID_QDRANT_API_KEY", hide_env_values = true)]
    qdrant_api_key: Option<String>,
    /// Read the Qdrant API key from this file, when --qdrant-api-key is unset.
    #[arg(long, env = "REID_QDRANT_API_KEY_FILE")]
    qdrant_api_key_file: Option<PathBuf>,
    /// Copies of each shard in a Qdrant cluster, for the collections this service creates.
    #[arg(long, env = "REID_QDRANT_REPLICATION_FACTOR")]
    qdrant_replication_factor: Option<u32>,
    /// Prefix of the collections and aliases the identity service owns (default `reid`): keeps
    /// deployments sharing one Qdrant server apart.
    #[arg(long, env = "REID_IDENTITY_NAMESPACE")]
    namespace: Option<String>,
}

impl QdrantArgs {
    /// Sets what was given over `config` (a config file's values, or the defaults).
    pub fn apply(&self, config: &mut reid_identity::IdentityConfig) -> anyhow::Result<()> {
        if let Some(v) = &self.qdrant_url {
            config.qdrant_url = Some(v.clone());
        }
        if let Some(v) = &self.qdrant_api_key {
            config.qdrant_api_key = Some(v.clone());
        } else if let Some(path) = &self.qdrant_api_key_file {
            config.qdrant_api_key = Some(crate::client::read_key(path)?);
        }
        if let Some(v) = self.qdrant_replication_factor {
            config.qdrant_replication_factor = Some(v);
        }
        if let Some(v) = &self.namespace {
            config.namespace = v.clone();
        }
        Ok(())
    }
}

#[derive(Debug, Args)]
pub struct IdentityArgs {
    /// TOML file with any `IdentityConfig` field; flags and environment override it.
    #[arg(long, env = "REID_IDENTITY_CONFIG")]
    config: Option<PathBuf>,
    /// Any configuration field, as in the file: `section.key=value` (repeatable). Environment
    /// variables `REID_IDENTITY__SECTION__KEY` do the same; named flags win over both.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    #[arg(long, env = "REID_IDENTITY_LISTEN", default_value = reid_proto::ports::IDENTITY)]
    listen: String,
    /// Local state: the embedded engine's files and the stored crops.
    #[arg(long, env = "REID_IDENTITY_DATA")]
    data: Option<PathBuf>,
    #[command(flatten)]
    qdrant: QdrantArgs,
    /// The embedder that embeds images (host:port or URL); without one only embeddings are accepted.
    #[arg(long, env = "REID_IDENTITY_EMBEDDER")]
    embedder: Option<String>,
    /// The ingester whose tracklet exports Forget erases too.
    #[arg(long, env = "REID_IDENTITY_INGESTER")]
    ingester: Option<String>,
    /// Cosine threshold for a match; the model card's calibrated one when unset.
    #[arg(long, env = "REID_IDENTITY_THRESHOLD")]
    threshold: Option<f32>,
    /// Identify: minimum margin of the best identity over the runner-up.
    #[arg(long, env = "REID_IDENTITY_MIN_MARGIN")]
    min_margin: Option<f32>,
    /// Observe: minimum margin of the best identity over the runner-up (0 by default).
    #[arg(long, env = "REID_IDENTITY_OBSERVE_MIN_MARGIN")]
    observe_min_margin: Option<f32>,
    /// Anonymous sightings are deleted after this many seconds (0 keeps them).
    #[arg(long, env = "REID_IDENTITY_ANONYMOUS_TTL_SECS")]
    anonymous_ttl_secs: Option<u64>,
    /// Serve Prometheus metrics on this address (GET /metrics).
    #[arg(long, env = "REID_IDENTITY_METRICS_LISTEN")]
    metrics_listen: Option<String>,
}

impl IdentityArgs {
    fn config(&self) -> anyhow::Result<reid_identity::IdentityConfig> {
        let mut config: reid_identity::IdentityConfig = crate::settings::read_config(
            self.config.as_deref(),
            "REID_IDENTITY",
            crate::settings::environment(),
            &self.set,
        )?;
        if let Some(v) = &self.data {
            config.data_dir = v.clone();
        }
        self.qdrant.apply(&mut config)?;
        if let Some(v) = &self.embedder {
            config.embedder_url = Some(reid_server::grpc_url(v));
        }
        if let Some(v) = &self.ingester {
            config.ingester_url = Some(reid_server::grpc_url(v));
        }
        if let Some(v) = self.threshold {
            config.association.threshold = Some(v);
        }
        if let Some(v) = self.min_margin {
            config.association.min_margin = v;
        }
        if let Some(v) = self.observe_min_margin {
            config.association.observe_min_margin = v;
        }
        if let Some(v) = self.anonymous_ttl_secs {
            config.retention.anonymous_ttl = std::time::Duration::from_secs(v);
        }
        if let Some(v) = &self.metrics_listen {
            config.metrics_listen = Some(v.clone());
        }
        config.security = crate::client::security_over(std::mem::take(&mut config.security));
        config.validate()?;
        Ok(config)
    }
}

#[derive(Debug, Args)]
pub struct TrainerArgs {
    /// TOML file with any `TrainerConfig` field; flags and environment override it.
    #[arg(long, env = "REID_TRAINER_CONFIG")]
    config: Option<PathBuf>,
    /// Any configuration field, as in the file: `section.key=value` (repeatable). Environment
    /// variables `REID_TRAINER__SECTION__KEY` do the same; named flags win over both.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    #[arg(long, env = "REID_TRAINER_LISTEN", default_value = reid_proto::ports::TRAINER)]
    listen: String,
    /// Where runs keep their folders.
    #[arg(long, env = "REID_TRAINER_RUNS_DIR")]
    runs_dir: Option<PathBuf>,
    /// Where PublishModel writes models (the embedders' model directory).
    #[arg(long, env = "REID_TRAINER_MODEL_DIR")]
    model_dir: Option<PathBuf>,
    #[arg(long, env = "REID_TRAINER_MAX_CONCURRENT_RUNS")]
    max_concurrent_runs: Option<usize>,
    /// Serve Prometheus metrics on this address (GET /metrics).
    #[arg(long, env = "REID_TRAINER_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// A folder runs may read datasets from (repeatable; comma-separated in the environment).
    #[arg(long = "data-root", env = "REID_TRAINER_DATA_ROOTS", value_delimiter = ',')]
    data_roots: Vec<PathBuf>,
    /// An embedder PublishModel may tell to load a model (repeatable; comma-separated).
    #[arg(long = "embedder", env = "REID_TRAINER_EMBEDDERS", value_delimiter = ',')]
    embedders: Vec<String>,
}

impl TrainerArgs {
    fn config(&self) -> anyhow::Result<reid_trainer::TrainerConfig> {
        let mut config: reid_trainer::TrainerConfig = crate::settings::read_config(
            self.config.as_deref(),
            "REID_TRAINER",
            crate::settings::environment(),
            &self.set,
        )?;
        if let Some(v) = &self.runs_dir {
            config.runs_dir = v.clone();
        }
        if let Some(v) = &self.model_dir {
            config.model_dir = v.clone();
        }
        if let Some(v) = self.max_concurrent_runs {
            config.max_concurrent_runs = v;
        }
        if let Some(v) = &self.metrics_listen {
            config.metrics_listen = Some(v.clone());
        }
        if !self.data_roots.is_empty() {
            config.data_roots.clone_from(&self.data_roots);
        }
        if !self.embedders.is_empty() {
            config.embedders.clone_from(&self.embedders);
        }
        config.security = crate::client::security_over(std::mem::take(&mut config.security));
        config.security.validate().map_err(|e| e.within("security"))?;
        Ok(config)
    }
}

#[derive(Debug, Args)]
pub struct EmbedderArgs {
    /// TOML file with any `EmbedderConfig` field; flags and environment override it.
    #[arg(long, env = "REID_EMBEDDER_CONFIG")]
    config: Option<PathBuf>,
    /// Any configuration field, as in the file: `section.key=value` (repeatable). Environment
    /// variables `REID_EMBEDDER__SECTION__KEY` do the same; named flags win over both.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    #[arg(long, env = "REID_EMBEDDER_LISTEN", default_value = reid_proto::ports::EMBEDDER)]
    listen: String,
    /// Serve Prometheus metrics on this address (GET /metrics).
    #[arg(long, env = "REID_EMBEDDER_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Folder of model folders.
    #[arg(long, env = "REID_EMBEDDER_MODEL_DIR")]
    model_dir: Option<PathBuf>,
    /// Model folder to serve.
    #[arg(long, env = "REID_EMBEDDER_MODEL")]
    model: Option<String>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, env = "REID_EMBEDDER_DEVICE")]
    device: Option<DevicePreference>,
    /// Half precision on GPU.
    #[arg(long, env = "REID_EMBEDDER_FP16")]
    fp16: Option<bool>,
    #[arg(long, env = "REID_EMBEDDER_MAX_BATCH")]
    max_batch: Option<usize>,
    #[arg(long, env = "REID_EMBEDDER_MAX_DELAY_MS")]
    max_delay_ms: Option<u64>,
    #[arg(long, env = "REID_EMBEDDER_THREADS")]
    threads: Option<usize>,
}

impl EmbedderArgs {
    fn config(&self) -> anyhow::Result<EmbedderConfig> {
        let mut config: EmbedderConfig = crate::settings::read_config(
            self.config.as_deref(),
            "REID_EMBEDDER",
            crate::settings::environment(),
            &self.set,
        )?;
        if let Some(v) = &self.model_dir {
            config.model_dir = v.clone();
        }
        if let Some(v) = &self.model {
            config.model = v.clone();
        }
        if let Some(v) = self.device {
            config.device = v;
        }
        if let Some(v) = self.fp16 {
            config.fp16 = v;
        }
        if let Some(v) = self.max_batch {
            config.max_batch = v;
        }
        if let Some(v) = self.max_delay_ms {
            config.max_delay = std::time::Duration::from_millis(v);
        }
        if let Some(v) = &self.metrics_listen {
            config.metrics_listen = Some(v.clone());
        }
        if let Some(v) = self.threads {
            config.threads = v;
        }
        config.security = crate::client::security_over(std::mem::take(&mut config.security));
        config.validate()?;
        Ok(config)
    }
}

pub async fn run(cmd: ServeCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ServeCommand::Embedder(args) => {
            let config = args.config()?;
            let listener = bind(&args.listen).await?;
            reid_embedder::run(config, listener, reid_server::shutdown_signal()).await?;
        }
        ServeCommand::Trainer(args) => {
            let config = args.config()?;
            let listener = bind(&args.listen).await?;
            reid_trainer::run(config, listener, reid_server::shutdown_signal()).await?;
        }
        ServeCommand::Identity(args) => {
            let config = args.config()?;
            let listener = bind(&args.listen).await?;
            reid_identity::run(config, listener, reid_server::shutdown_signal()).await?;
        }
        ServeCommand::Ingester(args) => {
            let config = args.config()?;
            let listener = bind(&args.listen).await?;
            reid_ingester::run(config, listener, reid_server::shutdown_signal()).await?;
        }
        ServeCommand::Console(args) => {
            let config = args.config()?;
            let listener = bind(&args.listen).await?;
            reid_console::run(config, listener, reid_server::shutdown_signal()).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))
}

/// An embedder served from this process on a loopback port, for the demo and the benchmark.
pub struct InProcessEmbedder {
    pub addr: String,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcessEmbedder {
    pub async fn start(config: EmbedderConfig) -> anyhow::Result<Self> {
        let listener = bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(reid_embedder::run(config, listener, async {
            let _ = stopped.await;
        }));
        Ok(InProcessEmbedder { addr, stop, handle })
    }

    /// Shuts it down gracefully and waits until it has.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.handle.await?
    }
}
