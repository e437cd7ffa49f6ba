//! `reid up`: the four services in one process, each on its own port, on the embedded Qdrant
//! engine under `--data`, serving the shipped default model. No config file is needed; the
//! services' own config files can be given for anything beyond the flags.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use reid_embedder::EmbedderConfig;
use reid_identity::IdentityConfig;
use reid_ingester::{CameraSpec, IngesterConfig};
use reid_server::{GrpcServer, Security};
use reid_trainer::TrainerConfig;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::serve::bind;
use crate::settings::read_toml;

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Everything the services store: `identity/` (the embedded engine and crops), `runs/`.
    #[arg(long, env = "REID_DATA", default_value = "data")]
    pub data: PathBuf,
    /// Folder of model folders (the embedder serves from it, the trainer publishes into it).
    #[arg(long, env = "REID_MODEL_DIR", default_value = "models")]
    pub model_dir: PathBuf,
    /// The host the four services listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// The embedder's port; the identity service, ingester and trainer take the next three.
    #[arg(long, default_value_t = 50051)]
    pub port: u16,
    /// Listen on a host other than loopback without an API key (anyone who can reach the host can
    /// then identify, enroll and forget people).
    #[arg(long)]
    pub allow_unauthenticated: bool,
    /// Serve Prometheus metrics of each service on the four ports after the gRPC ones (--port + 4
    /// to + 7). Metrics carry no key: they listen on --metrics-host.
    #[arg(long)]
    pub metrics: bool,
    #[arg(long, default_value = "127.0.0.1")]
    pub metrics_host: String,
    /// The web console's port on --host (0: any free one, logged); `--no-console` for none.
    #[arg(long, default_value_t = 8080)]
    pub console_port: u16,
    #[arg(long)]
    pub no_console: bool,
    /// A folder whose videos and image folders cameras added over the API may read (repeatable).
    #[arg(long = "file-root")]
    pub file_roots: Vec<PathBuf>,
    /// A camera to start with, as ID=URL (repeatable); more with `reid cameras add`.
    #[arg(long = "camera", value_parser = crate::serve::parse_camera)]
    pub cameras: Vec<CameraSpec>,
    /// Cosine threshold for a match; the model card's calibrated one when unset.
    #[arg(long)]
    pub threshold: Option<f32>,
    /// The identity service's vectors on a Qdrant server (the embedded engine under --data when
    /// unset).
    #[command(flatten)]
    pub qdrant: crate::serve::QdrantArgs,
    /// Config files of the services (any of their fields), under the flags above.
    #[arg(long)]
    pub embedder_config: Option<PathBuf>,
    #[arg(long)]
    pub identity_config: Option<PathBuf>,
    #[arg(long)]
    pub ingester_config: Option<PathBuf>,
}

/// Where the four services of a [`Pipeline`] listen, as host:port.
#[derive(Debug, Clone)]
pub struct Addrs {
    pub embedder: String,
    pub identity: String,
    pub ingester: String,
    pub trainer: String,
}

/// The four services' configurations before their addresses are known.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub embedder: EmbedderConfig,
    pub identity: IdentityConfig,
    pub ingester: IngesterConfig,
    pub trainer: TrainerConfig,
    pub security: Security,
}

impl PipelineConfig {
    /// The defaults of `reid up`: state under `data`, models under `model_dir`.
    pub fn new(data: &Path, model_dir: &Path) -> Self {
        // The detectors' stock models live in the same folder as the embedder's.
        let mut ingester = IngesterConfig::default();
        ingester.detectors.models_under(model_dir);
        PipelineConfig {
            embedder: EmbedderConfig { model_dir: model_dir.to_path_buf(), ..EmbedderConfig::default() },
            identity: IdentityConfig { data_dir: data.join("identity"), ..IdentityConfig::default() },
            ingester,
            trainer: TrainerConfig {
                runs_dir: data.join("runs"),
                model_dir: model_dir.to_path_buf(),
                ..TrainerConfig::default()
            },
            security: Security::default(),
        }
    }
}

struct Running {
    name: &'static str,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// The four services running in this process, each a real gRPC server on its own listener.
pub struct Pipeline {
    pub addrs: Addrs,
    pub ingester: Arc<reid_ingester::Ingester>,
    /// In stopping order: the ingester first (it flushes into the others), the embedder last.
    running: Vec<Running>,
}

fn spawn<F>(name: &'static str, serve: impl FnOnce(oneshot::Receiver<()>) -> F) -> Running
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let (stop, stopped) = oneshot::channel();
    Running { name, stop, task: tokio::spawn(serve(stopped)) }
}

/// Resolves when the stop signal is sent (or its sender dropped).
async fn when(stopped: oneshot::Receiver<()>) {
    let _ = stopped.await;
}

impl Pipeline {
    /// Starts the services on `listeners` (embedder, identity, ingester, trainer), wired together.
    pub async fn start(mut config: PipelineConfig, listeners: [TcpListener; 4]) -> anyhow::Result<Pipeline> {
        let [embedder_l, identity_l, ingester_l, trainer_l] = listeners;
        let tls = config.security.tls_cert.is_some();
        // With TLS the certificate names the host, so the services call each other by name.
        let url = |l: &TcpListener| -> anyhow::Result<String> {
            let port = l.local_addr()?.port();
            Ok(if tls { format!("https://localhost:{port}") } else { format!("http://127.0.0.1:{port}") })
        };
        let addrs = Addrs {
            embedder: embedder_l.local_addr()?.to_string(),
            identity: identity_l.local_addr()?.to_string(),
            ingester: ingester_l.local_addr()?.to_string(),
            trainer: trainer_l.local_addr()?.to_string(),
        };
        let (embedder_url, identity_url) = (url(&embedder_l)?, url(&identity_l)?);
        for security in [
            &mut config.embedder.security,
            &mut config.identity.security,
            &mut config.ingester.security,
            &mut config.trainer.security,
        ] {
            *security = config.security.clone();
        }
        config.identity.embedder_url = Some(embedder_url.clone());
        // The trainer publishes to this embedder, and reads what the ingester exports.
        config.trainer.embedders = vec![embedder_url.clone()];
        config.ingester.embedder_url = Some(embedder_url);
        config.ingester.identity_url = Some(identity_url);
        // Forget erases the ingester's exports of the person's tracklets too.
        config.identity.ingester_url = Some(url(&ingester_l)?);
        config.identity.validate()?;
        config.ingester.validate()?;

        let embedder = spawn("embedder", |s| reid_embedder::run(config.embedder, embedder_l, when(s)));
        let trainer = spawn("trainer", |s| reid_trainer::run(config.trainer, trainer_l, when(s)));
        let identity = spawn("identity", |s| reid_identity::run(config.identity, identity_l, when(s)));
        let server = GrpcServer::new(vec![reid_ingester::SERVICE_NAME]).secured(&config.ingester.security);
        let ingester = reid_ingester::start(config.ingester).await?;
        let served = ingester.clone();
        let ingest = spawn("ingester", |s| reid_ingester::serve(served, server, ingester_l, when(s)));
        Ok(Pipeline { addrs, ingester, running: vec![ingest, identity, trainer, embedder] })
    }

    /// Fails when a service stopped on its own (a port taken, a model missing).
    pub fn check(&self) -> anyhow::Result<()> {
        match self.running.iter().find(|r| r.task.is_finished()) {
            Some(r) => anyhow::bail!("the {} service stopped; see the log above", r.name),
            None => Ok(()),
        }
    }

    /// Waits until every service answers SERVING (the embedder once its model is loaded).
    pub async fn wait_serving(&self, limit: std::time::Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        for addr in [&self.addrs.embedder, &self.addrs.identity, &self.addrs.ingester, &self.addrs.trainer] {
            loop {
                self.check()?;
                if crate::client::is_serving(addr).await {
                    break;
                }
                anyhow::ensure!(tokio::time::Instant::now() < deadline, "{addr} is not serving after {limit:?}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Stops the services in order and waits for each; the first error is returned.
    pub async fn stop(self) -> anyhow::Result<()> {
        let mut first = Ok(());
        for r in self.running {
            let _ = r.stop.send(());
            let result = r.task.await.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(e) = result {
                tracing::error!(service = r.name, error = %e, "stopped with an error");
                if first.is_ok() {
                    first = Err(e.context(format!("the {} service", r.name)));
                }
            }
        }
        first
    }
}

/// A host other than loopback without a key would let anyone on the network identify, enroll and
/// forget people: refused unless the operator says so.
fn check_exposure(host: &str, keyed: bool, allow_unauthenticated: bool) -> anyhow::Result<()> {
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback || keyed {
        return Ok(());
    }
    anyhow::ensure!(
        allow_unauthenticated,
        "--host {host} reaches beyond this machine and no API key is set: give --api-key (or REID_API_KEY), \
         or --allow-unauthenticated to serve without one"
    );
    tracing::warn!(%host, "serving without an API key on a host other than loopback");
    Ok(())
}

/// The services' configurations from the flags and the config files they name.
fn pipeline_config(args: &UpArgs) -> anyhow::Result<PipelineConfig> {
    let mut config = PipelineConfig::new(&args.data, &args.model_dir);
    if let Some(path) = &args.embedder_config {
        config.embedder = EmbedderConfig { model_dir: args.model_dir.clone(), ..read_toml(Some(path))? };
    }
    if let Some(path) = &args.identity_config {
        config.identity = IdentityConfig { data_dir: args.data.join("identity"), ..read_toml(Some(path))? };
    }
    if let Some(path) = &args.ingester_config {
        config.ingester = read_toml(Some(path))?;
        // The file's own model paths stay; the stock ones follow --model-dir as without a file.
        config.ingester.detectors.models_under(&args.model_dir);
    }
    config.identity.association.threshold = args.threshold.or(config.identity.association.threshold);
    args.qdrant.apply(&mut config.identity)?;
    config.ingester.cameras.extend(args.cameras.iter().cloned());
    Ok(config)
}

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let mut config = pipeline_config(&args)?;
    config.security = crate::client::security();
    check_exposure(&args.host, config.security.api_key.is_some(), args.allow_unauthenticated)?;
    let ports = if args.metrics { 8 } else { 4 };
    anyhow::ensure!(
        u32::from(args.port) + ports - 1 <= u32::from(u16::MAX),
        "--port {} leaves no room for the next {} ports",
        args.port,
        ports - 1
    );
    if args.metrics {
        let at = |offset: u16| Some(format!("{}:{}", args.metrics_host, args.port + offset));
        config.embedder.metrics_listen = at(4);
        config.identity.metrics_listen = at(5);
        config.ingester.metrics_listen = at(6);
        config.trainer.metrics_listen = at(7);
    }
    config.ingester.sources.file_roots.extend(args.file_roots.iter().cloned());
    config.trainer.data_roots.push(args.data.clone());
    std::fs::create_dir_all(&args.data).with_context(|| format!("creating {}", args.data.display()))?;
    let addr = |offset: u16| format!("{}:{}", args.host, args.port + offset);
    let listeners = [bind(&addr(0)).await?, bind(&addr(1)).await?, bind(&addr(2)).await?, bind(&addr(3)).await?];
    let vectors = match &config.identity.qdrant_url {
        Some(url) => format!("vectors on the Qdrant server {url}"),
        None => "vectors in the embedded engine".to_owned(),
    };
    let console_listener = match args.no_console {
        true => None,
        false => Some(bind(&format!("{}:{}", args.host, args.console_port)).await?),
    };
    let console_config = reid_console::ConsoleConfig {
        crops_dir: Some(config.identity.data_dir.join("crops")),
        security: config.security.clone(),
        ..reid_console::ConsoleConfig::default()
    };
    let pipeline = Pipeline::start(config, listeners).await?;
    pipeline.wait_serving(std::time::Duration::from_secs(120)).await?;
    let a = &pipeline.addrs;
    let (console_stop, console_task, console_at) = match console_listener {
        Some(listener) => {
            let at = format!("http://{}", listener.local_addr()?);
            let url = |addr: &str| match console_config.security.tls_cert {
                Some(_) => format!("https://localhost:{}", addr.rsplit(':').next().unwrap_or_default()),
                None => format!("http://{addr}"),
            };
            let console_config = reid_console::ConsoleConfig {
                identity_url: url(&a.identity),
                ingester_urls: vec![url(&a.ingester)],
                ..console_config
            };
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(reid_console::run(console_config, listener, async move {
                let _ = stopped.await;
            }));
            (Some(stop), Some(task), format!(", console {at}"))
        }
        None => (None, None, String::new()),
    };
    eprintln!(
        "reid is up: embedder {}, identity {}, ingester {}, trainer {}{console_at}; data in {}, {vectors}. ctrl-c stops it.",
        a.embedder,
        a.identity,
        a.ingester,
        a.trainer,
        args.data.display()
    );
    tokio::select! {
        () = reid_server::shutdown_signal() => {}
        () = async {
            while pipeline.check().is_ok() {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        } => {}
    }
    if let (Some(stop), Some(task)) = (console_stop, console_task) {
        let _ = stop.send(());
        task.await??;
    }
    pipeline.stop().await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        up: UpArgs,
    }

    #[test]
    fn an_ingester_config_file_keeps_the_stock_models_under_the_model_dir() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ingester.toml");
        std::fs::write(&file, "[detectors.hog]\nmotion_gate = true\n").unwrap();
        let cli =
            Cli::try_parse_from(["up", "--model-dir", "/srv/models", "--ingester-config", file.to_str().unwrap()])
                .unwrap();
        let config = pipeline_config(&cli.up).unwrap();
        assert!(config.ingester.detectors.hog.motion_gate, "the file was read");
        assert_eq!(
            config.ingester.detectors.ssd.model,
            Path::new("/srv/models/ssdlite-person/frozen_inference_graph.pb")
        );
        assert_eq!(config.ingester.detectors.mtcnn.model_dir, Path::new("/srv/models/mtcnn"));
    }

    #[test]
    fn qdrant_flags_override_the_identity_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let (file, key) = (dir.path().join("identity.toml"), dir.path().join("qdrant.key"));
        std::fs::write(&file, "qdrant_url = \"http://file:6334\"\nnamespace = \"from_file\"\n").unwrap();
        std::fs::write(&key, "s3cret\n").unwrap();
        let args = ["up", "--identity-config", file.to_str().unwrap()];
        let config = pipeline_config(&Cli::try_parse_from(args).unwrap().up).unwrap();
        assert_eq!(config.identity.qdrant_url.as_deref(), Some("http://file:6334"));
        assert_eq!(config.identity.namespace, "from_file");
        let flags = ["--qdrant-url", "http://qdrant:6334", "--qdrant-api-key-file", key.to_str().unwrap()];
        let cli = Cli::try_parse_from(args.iter().copied().chain(flags)).unwrap();
        let config = pipeline_config(&cli.up).unwrap();
        assert_eq!(config.identity.qdrant_url.as_deref(), Some("http://qdrant:6334"));
        assert_eq!(config.identity.qdrant_api_key.as_deref(), Some("s3cret"));
        assert_eq!(config.identity.namespace, "from_file");
    }
}
