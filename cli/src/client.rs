//! Client verbs: `reid health` and `reid embed`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use reid_proto::v1 as pb;
use reid_proto::v1::embedder_service_client::EmbedderServiceClient;
use tonic::transport::Channel;
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

/// Connects to `addr` (`host:port` or a URL), with a message limit that fits big batches.
pub async fn connect(addr: &str) -> anyhow::Result<Channel> {
    let url = reid_server::grpc_url(addr);
    Channel::from_shared(url.clone())
        .with_context(|| format!("invalid address {addr}"))?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))
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
