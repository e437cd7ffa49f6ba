//! The embedder seam: images in, embeddings and the model that made them out. The service uses the
//! gRPC client ([`GrpcEmbedder`]); tests may put any other implementation behind it.

use async_trait::async_trait;
use reid_proto::v1::Image;
use reid_server::Security;

use crate::error::{IdentityError, IdentityResult};
use crate::model::ModelKey;

/// What the service needs to know of the model that embedded something.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelDescription {
    pub key: ModelKey,
    /// The card's calibrated cosine threshold.
    pub match_threshold: f32,
    /// The card's merge pass threshold, if it has one.
    pub merge_threshold: Option<f32>,
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

/// The embedder service over gRPC ([`reid_server::client::Embedder`]; it connects lazily, so the
/// identity service starts without it).
#[derive(Debug, Clone)]
pub struct GrpcEmbedder {
    client: reid_server::client::Embedder,
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
        let client = reid_server::client::Embedder::connect_lazy(url, security, timeout, max_message_bytes)
            .map_err(|e| IdentityError::invalid(format!("embedder url {url:?}: {e:#}")))?
            .retrying_unavailable(ATTEMPTS);
        Ok(Self { client })
    }
}

#[async_trait]
impl EmbedderClient for GrpcEmbedder {
    async fn embed(&self, images: Vec<Image>) -> IdentityResult<(Vec<Vec<f32>>, ModelKey)> {
        let (embeddings, model) = self.client.embed(images).await.map_err(IdentityError::Embedder)?;
        Ok((embeddings, ModelKey::from(&model)))
    }

    async fn model(&self) -> IdentityResult<ModelDescription> {
        let info = self.client.model().await.map_err(IdentityError::Embedder)?;
        let key = info.r#ref.as_ref().map(ModelKey::from).unwrap_or_default();
        Ok(ModelDescription { key, match_threshold: info.match_threshold, merge_threshold: info.merge_threshold })
    }
}
