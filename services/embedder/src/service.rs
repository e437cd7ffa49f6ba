//! The gRPC handlers: validate, convert, call [`Embedder`], map the error. Nothing else.

use std::pin::Pin;
use std::sync::Arc;

use reid_proto::v1 as pb;
use reid_proto::v1::embedder_service_server::EmbedderService;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::batcher::ActiveModel;
use crate::embedder::Embedder;

#[derive(Debug, Clone)]
pub(crate) struct EmbedderGrpc {
    embedder: Arc<Embedder>,
}

impl EmbedderGrpc {
    pub(crate) fn new(embedder: Arc<Embedder>) -> Self {
        EmbedderGrpc { embedder }
    }

    async fn embed_one(&self, req: pb::EmbedRequest) -> Result<pb::EmbedResponse, Status> {
        let result = self.embedder.embed(req.images).await.map_err(Status::from);
        let code = result.as_ref().map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        self.embedder.metrics().requests.with_label_values(&[code_label(code)]).inc();
        let embedded = result?;
        Ok(pb::EmbedResponse {
            embeddings: embedded.vectors.into_iter().map(|values| pb::Embedding { values }).collect(),
            model: Some(model_ref(&embedded.model)),
            request_id: req.request_id,
        })
    }
}

fn code_label(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "ok",
        tonic::Code::InvalidArgument => "invalid_argument",
        tonic::Code::ResourceExhausted => "resource_exhausted",
        tonic::Code::FailedPrecondition => "failed_precondition",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::Internal => "internal",
        _ => "other",
    }
}

pub(crate) fn model_ref(model: &ActiveModel) -> pb::ModelRef {
    pb::ModelRef { id: model.card.id.clone(), version: model.card.version.clone(), dimension: model.card.embedding_dim }
}

fn model_info(model: &ActiveModel) -> pb::ModelInfo {
    let card = &model.card;
    pb::ModelInfo {
        r#ref: Some(model_ref(model)),
        backend: serde_json::to_value(card.backend)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        architecture: card.architecture.clone().unwrap_or_default(),
        input_width: card.input.width,
        input_height: card.input.height,
        match_threshold: card.match_threshold,
        merge_threshold: card.merge_threshold,
        device: model.device.clone(),
        card_json: serde_json::to_string(card).unwrap_or_default(),
    }
}

type EmbedStream = Pin<Box<dyn Stream<Item = Result<pb::EmbedResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl EmbedderService for EmbedderGrpc {
    async fn embed(&self, request: Request<pb::EmbedRequest>) -> Result<Response<pb::EmbedResponse>, Status> {
        self.embed_one(request.into_inner()).await.map(Response::new)
    }

    type EmbedStreamStream = EmbedStream;

    /// Answers each request in order; a bad request ends the stream with its status.
    async fn embed_stream(
        &self,
        request: Request<Streaming<pb::EmbedRequest>>,
    ) -> Result<Response<Self::EmbedStreamStream>, Status> {
        let mut incoming = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let this = self.clone();
        tokio::spawn(async move {
            while let Some(item) = incoming.next().await {
                let reply = match item {
                    Ok(req) => this.embed_one(req).await,
                    Err(status) => Err(status),
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn get_model(&self, _: Request<pb::GetModelRequest>) -> Result<Response<pb::GetModelResponse>, Status> {
        let active = self.embedder.active()?;
        Ok(Response::new(pb::GetModelResponse { model: Some(model_info(&active)) }))
    }

    async fn load_model(
        &self,
        request: Request<pb::LoadModelRequest>,
    ) -> Result<Response<pb::LoadModelResponse>, Status> {
        let name = request.into_inner().name;
        let previous_version = self.embedder.active().map(|a| a.card.version.clone()).unwrap_or_default();
        let active = self.embedder.load(&name).await?;
        Ok(Response::new(pb::LoadModelResponse { model: Some(model_info(&active)), previous_version }))
    }
}
