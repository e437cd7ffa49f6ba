//! The embedder seam: images in, embeddings and the model that made them out. The service uses the
//! gRPC client ([`GrpcEmbedder`]); tests may put any other implementation behind it.

use async_trait::async_trait;
use reid_proto::v1::embedder_service_client::EmbedderServiceClient;
use reid_proto::v1::{EmbedRequest, GetModelRequest, Image};
use reid_server::{Channel, Security};

use crate::error::{IdentityError, IdentityResult};
use crate::model::ModelKey;

/// What the service needs to know of the model that embedded something.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelDescription {
    pub key: ModelKey,
    /// The card's calibrated cosine threshold.
    pub match_threshold: f32,
}

#[async_trait]
pub trait EmbedderClient: Send + Sync + 'static {
    /// Embeds the images in one request, so that every embedding comes from the same model.
    async fn embed(&self, images: Vec<Image>) -> IdentityResult<(Vec<Vec<f32>>, ModelKey)>;
    /// The model served now.
    async fn model(&self) -> IdentityResult<ModelDescription>;
}

/// Tries per call while the embedder chosen is unavailable (another replica may answer); the
/// last wait is 0.4 s, so a caller learns within about 0.75 s that no embedder is up.
const ATTEMPTS: u32 = 5;

/// The embedder service over gRPC (connects lazily, so the identity service starts without it).
#[derive(Debug, Clone)]
pub struct GrpcEmbedder {
    client: EmbedderServiceClient<Channel>,
}

impl GrpcEmbedder {
    /// `url` may name several embedders (a list, or `dns:///` for all addresses of a name):
    /// calls are balanced over them (`reid_server::client`).
    /// Every call has a deadline of `timeout`.
    pub fn new(
        url: &str,
        max_message_bytes: usize,
        security: &Security,
        timeout: std::time::Duration,
    ) -> IdentityResult<Self> {
        let channel = security
            .connect_lazy(url, move |e| e.connect_timeout(std::time::Duration::from_secs(5)).timeout(timeout))
            .map_err(|e| IdentityError::invalid(format!("embedder url {url:?}: {e:#}")))?;
        let client = EmbedderServiceClient::new(channel)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        Ok(Self { client })
    }
}

#[async_trait]
impl EmbedderClient for GrpcEmbedder {
    async fn embed(&self, images: Vec<Image>) -> IdentityResult<(Vec<Vec<f32>>, ModelKey)> {
        let expected = images.len();
        let response = reid_server::client::retry_unavailable(ATTEMPTS, || {
            let (mut client, images) = (self.client.clone(), images.clone());
            async move { client.embed(EmbedRequest { images, request_id: String::new() }).await }
        })
        .await
        .map_err(IdentityError::Embedder)?
        .into_inner();
        let model =
            response.model.ok_or_else(|| IdentityError::Embedder(tonic::Status::internal("no model in reply")))?;
        if response.embeddings.len() != expected {
            return Err(IdentityError::Embedder(tonic::Status::internal(format!(
                "asked for {expected} embeddings, got {}",
                response.embeddings.len()
            ))));
        }
        Ok((response.embeddings.into_iter().map(|e| e.values).collect(), ModelKey::from(&model)))
    }

    async fn model(&self) -> IdentityResult<ModelDescription> {
        let response = reid_server::client::retry_unavailable(ATTEMPTS, || {
            let mut client = self.client.clone();
            async move { client.get_model(GetModelRequest {}).await }
        })
        .await
        .map_err(IdentityError::Embedder)?;
        let info = response.into_inner().model.unwrap_or_default();
        let key = info.r#ref.as_ref().map(ModelKey::from).unwrap_or_default();
        Ok(ModelDescription { key, match_threshold: info.match_threshold })
    }
}
