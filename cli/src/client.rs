//! Client verbs: `reid health` and `reid embed`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use reid_proto::v1 as pb;
use reid_proto::v1::embedder_service_client::EmbedderServiceClient;
use reid_server::{Channel, Security};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[derive(Debug, Args)]
pub struct HealthArgs {
    #[arg(long, default_value = reid_proto::ports::EMBEDDER)]
    addr: String,
    /// A service name (e.g. reid.v1.EmbedderService); empty asks about the server as a whole.
    #[arg(long, default_value = "")]
    service: String,
}

#[derive(Debug, Args)]
pub struct EmbedArgs {
    #[arg(long, default_value = reid_proto::ports::EMBEDDER)]
    addr: String,
    /// Image files (JPEG, PNG, BMP, WebP).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// API key and TLS for every connection this process makes, from the global flags and
/// `REID_API_KEY` / `REID_TLS_*`; services take the same settings for their own listeners.
#[derive(Debug, Clone, Args)]
pub struct SecurityArgs {
    /// Sent with every call; services started by this command require it from their callers.
    #[arg(long, global = true, env = "REID_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Read the API key from this file (a Docker or Kubernetes secret), when --api-key is unset.
    #[arg(long, global = true, env = "REID_API_KEY_FILE")]
    api_key_file: Option<PathBuf>,
    /// Trust this CA (PEM) for https:// addresses, beside the system roots.
    #[arg(long, global = true, env = "REID_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    #[arg(long, global = true, env = "REID_TLS_CLIENT_CERT")]
    tls_client_cert: Option<PathBuf>,
    #[arg(long, global = true, env = "REID_TLS_CLIENT_KEY")]
    tls_client_key: Option<PathBuf>,
    /// `reid serve`/`reid up`: serve TLS with this certificate chain and key (PEM).
    #[arg(long, global = true, env = "REID_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    #[arg(long, global = true, env = "REID_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// `reid serve`/`reid up`: require client certificates signed by this CA (mutual TLS).
    #[arg(long, global = true, env = "REID_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
}

impl SecurityArgs {
    /// The key given (surrounding whitespace trimmed: `$(...)` under a TTY keeps a `\r`), or read
    /// from the key file.
    fn key(&self) -> anyhow::Result<Option<String>> {
        match (&self.api_key, &self.api_key_file) {
            (Some(key), _) => Ok(Some(key.trim().to_owned())),
            (None, Some(path)) => read_key(path).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// Settings given here, over those of a config file.
    pub fn over(&self, mut base: Security) -> Security {
        let set = |field: &mut Option<PathBuf>, v: &Option<PathBuf>| {
            if v.is_some() {
                field.clone_from(v);
            }
        };
        if self.api_key.is_some() {
            base.api_key.clone_from(&self.api_key);
        }
        set(&mut base.tls_ca, &self.tls_ca);
        set(&mut base.tls_client_cert, &self.tls_client_cert);
        set(&mut base.tls_client_key, &self.tls_client_key);
        set(&mut base.tls_cert, &self.tls_cert);
        set(&mut base.tls_key, &self.tls_key);
        set(&mut base.tls_client_ca, &self.tls_client_ca);
        base
    }
}

/// A key from a file: its first line, trimmed; an empty file is an error, not "no key".
pub fn read_key(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the key file {}", path.display()))?;
    let key = text.lines().next().unwrap_or_default().trim().to_owned();
    anyhow::ensure!(!key.is_empty(), "the key file {} is empty", path.display());
    Ok(key)
}

static SECURITY: std::sync::OnceLock<SecurityArgs> = std::sync::OnceLock::new();

/// Records the command line's security settings, once (`main`); the key file is read here.
pub fn set_security(args: &SecurityArgs) -> anyhow::Result<()> {
    let args = SecurityArgs { api_key: args.key()?, ..args.clone() };
    args.over(Security::default()).validate()?;
    let _ = SECURITY.set(args);
    Ok(())
}

/// The command line's settings over `base` (a service's config file).
pub fn security_over(base: Security) -> Security {
    match SECURITY.get() {
        Some(args) => args.over(base),
        None => base,
    }
}

/// The command line's security settings.
pub fn security() -> Security {
    security_over(Security::default())
}

/// Connects to `addr` (`host:port` or a URL; `https://` for TLS), carrying the API key.
pub async fn connect(addr: &str) -> anyhow::Result<Channel> {
    let security = security();
    let channel = security.endpoint(addr)?.connect().await.with_context(|| format!("cannot connect to {addr}"))?;
    Ok(security.channel(channel))
}

/// True when the server at `addr` answers SERVING for the server as a whole.
pub async fn is_serving(addr: &str) -> bool {
    let Ok(channel) = connect(addr).await else { return false };
    HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
}

pub async fn health(args: HealthArgs) -> anyhow::Result<ExitCode> {
    let channel = connect(&args.addr).await?;
    let response = HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest { service: args.service.clone() })
        .await
        .with_context(|| format!("health check of {}", args.addr))?;
    let status = ServingStatus::try_from(response.into_inner().status).unwrap_or(ServingStatus::Unknown);
    println!("{}", status.as_str_name());
    Ok(if status == ServingStatus::Serving { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub async fn embed(args: EmbedArgs) -> anyhow::Result<ExitCode> {
    let mut images = Vec::with_capacity(args.images.len());
    for path in &args.images {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        images.push(pb::Image { data: Some(pb::image::Data::Encoded(bytes)) });
    }
    let mut client = EmbedderServiceClient::new(connect(&args.addr).await?).max_decoding_message_size(256 << 20);
    let response = client
        .embed(pb::EmbedRequest { images, request_id: String::new() })
        .await
        .map_err(|s| anyhow::anyhow!("embed failed: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    let model = response.model.unwrap_or_default();
    for (path, embedding) in args.images.iter().zip(response.embeddings) {
        let line = serde_json::json!({
            "path": path,
            "model": model.id,
            "version": model.version,
            "dimension": model.dimension,
            "vector": embedding.values,
        });
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
