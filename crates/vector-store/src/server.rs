//! The server backend: a Qdrant server (or cluster) over gRPC through `qdrant-client`, with an
//! optional API key; an `https://` URL turns TLS on.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use qdrant_client::qdrant::{
    self, CountPointsBuilder, CreateAliasBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    DeletePointsBuilder, Distance, PointStruct, QueryPointsBuilder, ScrollPointsBuilder, SearchParamsBuilder,
    SetPayloadPointsBuilder, UpsertPointsBuilder, VectorParamsBuilder, point_id::PointIdOptions,
};
use qdrant_client::{Qdrant, QdrantError};
use tonic::Code;

use crate::error::{StoreError, StoreResult};
use crate::types::{
    CollectionSpec, CollectionStats, Condition, FieldType, Filter, Hit, INT8_QUANTILE, IndexParams, Payload, Point,
    PointId, Quantization, Record, SearchQuery,
};
use crate::{VectorStore, validate_name, validate_vector};

/// How to reach a Qdrant server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// gRPC URL, e.g. `http://qdrant:6334`; `https://` enables TLS with the system's roots.
    pub url: String,
    pub api_key: Option<String>,
    pub timeout: Duration,
    /// Copies of each shard in a Qdrant cluster (collections this store creates); the server's
    /// default (1) when unset. A cluster of 3 with 2 keeps serving when one node is lost.
    pub replication_factor: Option<u32>,
    /// Shards per collection; the server's default (one per node) when unset.
    pub shard_number: Option<u32>,
}

impl ServerOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            api_key: None,
            timeout: Duration::from_secs(10),
            replication_factor: None,
            shard_number: None,
        }
    }
}

/// A Qdrant server behind the [`VectorStore`] seam.
pub struct QdrantServerStore {
    client: Qdrant,
    /// Dimensions of the collections seen so far, to refuse a wrong vector before a round trip.
    dimensions: tokio::sync::RwLock<HashMap<String, usize>>,
    replication_factor: Option<u32>,
    shard_number: Option<u32>,
}

impl std::fmt::Debug for QdrantServerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantServerStore").finish_non_exhaustive()
    }
}

/// A client error as a store error, by the gRPC code the server answered.
fn failed(e: QdrantError) -> StoreError {
    let status = match &e {
        QdrantError::ResponseError { status } | QdrantError::ResourceExhaustedError { status, .. } => status,
        _ => return StoreError::Backend { backend: "qdrant", message: e.to_string() },
    };
    match status.code() {
        Code::NotFound => not_found(status.message()),
        Code::Unauthenticated | Code::PermissionDenied => {
            StoreError::Unauthorized(format!("Qdrant refused this client's API key: {}", status.message()))
        }
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted => {
            StoreError::Unavailable(status.message().to_owned())
        }
        _ => StoreError::Backend { backend: "qdrant", message: format!("{:?}: {}", status.code(), status.message()) },
    }
}

/// The collection a server's NOT_FOUND names (``Not found: Collection `X` doesn't exist!``), so
/// that the error says the name once; the server's message itself when it names none.
fn not_found(message: &str) -> StoreError {
    let named = message.split_once("ollection `").and_then(|(_, rest)| rest.split_once('`')).map(|(name, _)| name);
    match named {
        Some(name) => StoreError::CollectionNotFound(name.to_owned()),
        None => StoreError::Backend { backend: "qdrant", message: message.to_owned() },
    }
}

/// A reply reid cannot read (a point id that is not a UUID, a collection of another shape).
fn unreadable(message: impl Into<String>) -> StoreError {
    StoreError::Backend { backend: "qdrant", message: message.into() }
}

fn already_exists(e: &QdrantError) -> bool {
    matches!(e, QdrantError::ResponseError { status } if status.code() == Code::AlreadyExists)
}

impl QdrantServerStore {
    /// Connects, and checks that the server answers and accepts the API key. Qdrant exempts its
    /// health check from authentication, so the key is checked by listing the collections.
    pub async fn connect(options: &ServerOptions) -> StoreResult<Self> {
        let url = &options.url;
        let client = Qdrant::from_url(url)
            .api_key(options.api_key.clone())
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .skip_compatibility_check()
            .build()
            .map_err(failed)?;
        client.health_check().await.map_err(|e| StoreError::Unavailable(format!("Qdrant at {url}: {e}")))?;
        match client.list_collections().await.map_err(failed) {
            Ok(_) => {}
            Err(StoreError::Unauthorized(_)) => {
                return Err(StoreError::Unauthorized(match options.api_key {
                    Some(_) => format!("Qdrant rejected the API key at {url}"),
                    None => format!("Qdrant at {url} needs an API key; none was given"),
                }));
            }
            Err(e) => return Err(e),
        }
        Ok(Self {
            client,
            dimensions: Default::default(),
            replication_factor: options.replication_factor,
            shard_number: options.shard_number,
        })
    }

    async fn info(&self, collection: &str) -> StoreResult<qdrant::CollectionInfo> {
        let response = self.client.collection_info(collection).await.map_err(|e| match &e {
            QdrantError::ResponseError { status } if status.code() == Code::NotFound => {
                StoreError::CollectionNotFound(collection.into())
            }
            _ => failed(e),
        })?;
        response.result.ok_or_else(|| unreadable(format!("the server described collection {collection} with nothing")))
    }

    async fn dimension(&self, collection: &str) -> StoreResult<usize> {
        if let Some(d) = self.dimensions.read().await.get(collection) {
            return Ok(*d);
        }
        let dimension = self
            .info(collection)
            .await?
            .config
            .and_then(|c| c.params)
            .and_then(|p| p.vectors_config)
            .and_then(|v| match v.config {
                Some(qdrant::vectors_config::Config::Params(p)) => Some(p.size as usize),
                _ => None,
            })
            .ok_or_else(|| unreadable(format!("collection {collection} has no single unnamed vector")))?;
        self.dimensions.write().await.insert(collection.into(), dimension);
        Ok(dimension)
    }
}

fn to_filter(filter: &Filter) -> Option<qdrant::Filter> {
    if filter.is_empty() {
        return None;
    }
    let conditions = |cs: &[Condition]| cs.iter().map(to_condition).collect::<Vec<_>>();
    Some(qdrant::Filter {
        must: conditions(&filter.must),
        must_not: conditions(&filter.must_not),
        ..Default::default()
    })
}

fn to_condition(condition: &Condition) -> qdrant::Condition {
    match condition {
        Condition::KeywordIn { key, any } if any.len() == 1 => qdrant::Condition::matches(key, any[0].clone()),
        Condition::KeywordIn { key, any } => qdrant::Condition::matches(key, any.clone()),
        Condition::IntegerIs { key, value } => qdrant::Condition::matches(key, *value),
        Condition::BoolIs { key, value } => qdrant::Condition::matches(key, *value),
        Condition::IntegerRange { key, gte, lt } => qdrant::Condition::range(
            key,
            qdrant::Range { gte: gte.map(|v| v as f64), lt: lt.map(|v| v as f64), ..Default::default() },
        ),
    }
}

fn from_point_id(id: Option<qdrant::PointId>) -> StoreResult<PointId> {
    match id.and_then(|id| id.point_id_options) {
        Some(PointIdOptions::Uuid(s)) => s.parse().map_err(|e| unreadable(format!("point id {s}: {e}"))),
        other => Err(unreadable(format!("point id {other:?} is not a UUID; reid writes UUIDs"))),
    }
}

/// The collection's one unnamed dense vector.
fn dense(vectors: &qdrant::VectorsOutput) -> Option<Vec<f32>> {
    match vectors.get_vector()? {
        qdrant::vector_output::Vector::Dense(d) => Some(d.data),
        _ => None,
    }
}

fn from_payload(payload: HashMap<String, qdrant::Value>) -> Payload {
    serde_json::Map::from(qdrant_client::Payload::from(payload))
}

/// Every write waits until the server has applied it, so reads that follow see it.
const WAIT: bool = true;

/// The longest [`VectorStore::optimize`] waits for the server's optimiser.
const OPTIMIZE_WAIT: Duration = Duration::from_secs(30 * 60);

#[async_trait]
impl VectorStore for QdrantServerStore {
    fn backend(&self) -> &'static str {
        "qdrant"
    }

    async fn ensure_collection(&self, spec: &CollectionSpec) -> StoreResult<bool> {
        validate_name(&spec.name)?;
        if self.client.collection_exists(&spec.name).await.map_err(failed)? {
            let existing = self.dimension(&spec.name).await?;
            if existing != spec.dimension {
                return Err(StoreError::DimensionMismatch { expected: existing, got: spec.dimension });
            }
            return Ok(false);
        }
        let params = &spec.index_params;
        let mut create = CreateCollectionBuilder::new(&spec.name)
            .vectors_config(VectorParamsBuilder::new(spec.dimension as u64, Distance::Cosine))
            .hnsw_config(qdrant::HnswConfigDiff {
                m: params.m.map(|m| m as u64),
                ef_construct: params.ef_construct.map(|ef| ef as u64),
                ..Default::default()
            });
        if let Some(Quantization::Int8) = params.quantization {
            create = create.quantization_config(qdrant::ScalarQuantization {
                r#type: qdrant::QuantizationType::Int8 as i32,
                quantile: Some(INT8_QUANTILE),
                ..Default::default()
            });
        }
        if let Some(n) = self.replication_factor {
            create = create.replication_factor(n);
        }
        if let Some(n) = self.shard_number {
            create = create.shard_number(n);
        }
        if let Err(e) = self.client.create_collection(create).await {
            // Another replica created it between our check and our create.
            if already_exists(&e) {
                return Ok(false);
            }
            return Err(failed(e));
        }
        for (field, kind) in &spec.indexes {
            let kind = match kind {
                FieldType::Keyword => qdrant::FieldType::Keyword,
                FieldType::Integer => qdrant::FieldType::Integer,
                FieldType::Bool => qdrant::FieldType::Bool,
            };
            let index = CreateFieldIndexCollectionBuilder::new(&spec.name, field, kind).wait(WAIT);
            self.client.create_field_index(index).await.map_err(failed)?;
        }
        self.dimensions.write().await.insert(spec.name.clone(), spec.dimension);
        Ok(true)
    }

    async fn list_collections(&self) -> StoreResult<Vec<String>> {
        let response = self.client.list_collections().await.map_err(failed)?;
        let mut names: Vec<String> = response.collections.into_iter().map(|c| c.name).collect();
        names.sort();
        Ok(names)
    }

    async fn delete_collection(&self, name: &str) -> StoreResult<()> {
        validate_name(name)?;
        self.dimensions.write().await.remove(name);
        if self.client.collection_exists(name).await.map_err(failed)? {
            self.client.delete_collection(name).await.map_err(failed)?;
        }
        Ok(())
    }

    async fn upsert(&self, collection: &str, points: Vec<Point>) -> StoreResult<()> {
        let dimension = self.dimension(collection).await?;
        for p in &points {
            validate_vector(&p.vector, dimension)?;
        }
        if points.is_empty() {
            return Ok(());
        }
        let points: Vec<PointStruct> = points
            .into_iter()
            .map(|p| PointStruct::new(p.id.to_string(), p.vector, qdrant_client::Payload::from(p.payload)))
            .collect();
        self.client.upsert_points(UpsertPointsBuilder::new(collection, points).wait(WAIT)).await.map_err(failed)?;
        Ok(())
    }

    async fn search(&self, collection: &str, query: &SearchQuery) -> StoreResult<Vec<Hit>> {
        validate_vector(&query.vector, self.dimension(collection).await?)?;
        let mut params = SearchParamsBuilder::default().exact(query.exact);
        if let Some(ef) = query.hnsw_ef {
            params = params.hnsw_ef(ef as u64);
        }
        let mut request = QueryPointsBuilder::new(collection)
            .query(qdrant::Query::new_nearest(query.vector.clone()))
            .limit(query.limit as u64)
            .params(params)
            .with_payload(true)
            .with_vectors(query.with_vectors);
        if let Some(filter) = to_filter(&query.filter) {
            request = request.filter(filter);
        }
        let response = self.client.query(request).await.map_err(failed)?;
        response
            .result
            .into_iter()
            .map(|p| {
                let vector = p.vectors.as_ref().and_then(dense);
                Ok(Hit { id: from_point_id(p.id)?, score: p.score, payload: from_payload(p.payload), vector })
            })
            .collect()
    }

    async fn scroll_page(
        &self,
        collection: &str,
        filter: &Filter,
        limit: usize,
        offset: Option<PointId>,
        with_vectors: bool,
    ) -> StoreResult<(Vec<Record>, Option<PointId>)> {
        let mut request = ScrollPointsBuilder::new(collection)
            .limit(limit.max(1) as u32)
            .with_payload(true)
            .with_vectors(with_vectors);
        if let Some(filter) = to_filter(filter) {
            request = request.filter(filter);
        }
        if let Some(offset) = offset {
            request = request.offset(qdrant::PointId::from(offset.to_string()));
        }
        let response = self.client.scroll(request).await.map_err(failed)?;
        let records = response
            .result
            .into_iter()
            .map(|p| {
                let vector = p.vectors.as_ref().and_then(dense);
                Ok(Record { id: from_point_id(p.id)?, payload: from_payload(p.payload), vector })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let next = response.next_page_offset.map(|id| from_point_id(Some(id))).transpose()?;
        Ok((records, next))
    }

    async fn count(&self, collection: &str, filter: &Filter) -> StoreResult<u64> {
        let mut request = CountPointsBuilder::new(collection).exact(true);
        if let Some(filter) = to_filter(filter) {
            request = request.filter(filter);
        }
        let response = self.client.count(request).await.map_err(failed)?;
        Ok(response.result.map(|r| r.count).unwrap_or(0))
    }

    async fn delete(&self, collection: &str, filter: &Filter) -> StoreResult<()> {
        let filter = to_filter(filter).unwrap_or_default();
        self.client
            .delete_points(DeletePointsBuilder::new(collection).points(filter).wait(WAIT))
            .await
            .map_err(failed)?;
        Ok(())
    }

    async fn set_payload(&self, collection: &str, filter: &Filter, payload: Payload) -> StoreResult<()> {
        let filter = to_filter(filter).unwrap_or_default();
        let request = SetPayloadPointsBuilder::new(collection, qdrant_client::Payload::from(payload))
            .points_selector(filter)
            .wait(WAIT);
        self.client.set_payload(request).await.map_err(failed)?;
        Ok(())
    }

    async fn set_alias(&self, alias: &str, collection: &str) -> StoreResult<()> {
        validate_name(alias)?;
        // Qdrant's create-alias replaces an existing alias of that name in one step.
        self.client.create_alias(CreateAliasBuilder::new(collection, alias)).await.map_err(failed)?;
        Ok(())
    }

    async fn resolve_alias(&self, alias: &str) -> StoreResult<Option<String>> {
        let response = self.client.list_aliases().await.map_err(failed)?;
        Ok(response.aliases.into_iter().find(|a| a.alias_name == alias).map(|a| a.collection_name))
    }

    async fn stats(&self, collection: &str) -> StoreResult<CollectionStats> {
        let info = self.info(collection).await?;
        let config = info.config.unwrap_or_default();
        let hnsw = config.hnsw_config.unwrap_or_default();
        let quantization = match config.quantization_config.and_then(|q| q.quantization) {
            Some(qdrant::quantization_config::Quantization::Scalar(_)) => Some(Quantization::Int8),
            _ => None,
        };
        Ok(CollectionStats {
            points: info.points_count.unwrap_or_default(),
            indexed_vectors: info.indexed_vectors_count.unwrap_or_default(),
            segments: info.segments_count,
            index_params: IndexParams {
                m: hnsw.m.map(|m| m as usize),
                ef_construct: hnsw.ef_construct.map(|ef| ef as usize),
                quantization,
            },
        })
    }

    /// The server indexes in the background: this waits until its optimiser has nothing left to
    /// do for the collection (status green), nudging it once when optimisations are pending
    /// (grey), for at most [`OPTIMIZE_WAIT`].
    async fn optimize(&self, collection: &str) -> StoreResult<()> {
        let started = std::time::Instant::now();
        let mut nudged = false;
        loop {
            let info = self.info(collection).await?;
            match qdrant::CollectionStatus::try_from(info.status) {
                Ok(qdrant::CollectionStatus::Green) => return Ok(()),
                Ok(qdrant::CollectionStatus::Red) => {
                    let error = info.optimizer_status.map(|s| s.error).unwrap_or_default();
                    return Err(unreadable(format!("collection {collection} is red: the optimiser failed: {error}")));
                }
                Ok(qdrant::CollectionStatus::Grey) if !nudged => {
                    // Qdrant's documented way to start pending optimisations: an empty update.
                    let update = qdrant::UpdateCollection {
                        collection_name: collection.to_owned(),
                        optimizers_config: Some(qdrant::OptimizersConfigDiff::default()),
                        ..Default::default()
                    };
                    self.client.update_collection(update).await.map_err(failed)?;
                    nudged = true;
                }
                _ => {}
            }
            if started.elapsed() > OPTIMIZE_WAIT {
                return Err(StoreError::Unavailable(format!(
                    "the server's optimiser did not finish indexing {collection} within {} s",
                    OPTIMIZE_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(code: Code, message: &str) -> StoreError {
        failed(QdrantError::ResponseError { status: tonic::Status::new(code, message) })
    }

    #[test]
    fn a_missing_collection_is_named_once() {
        let e = answered(Code::NotFound, "Not found: Collection `reid_catalog` doesn't exist!");
        assert!(matches!(&e, StoreError::CollectionNotFound(name) if name == "reid_catalog"), "{e:?}");
        assert_eq!(e.to_string(), r#"collection "reid_catalog" does not exist"#);
        // A NOT_FOUND that names no collection keeps the server's words.
        let e = answered(Code::NotFound, "Not found: No point with id 7 found");
        assert!(matches!(&e, StoreError::Backend { message, .. } if message.contains("No point with id 7")), "{e:?}");
    }

    #[test]
    fn refused_credentials_are_their_own_error() {
        for code in [Code::Unauthenticated, Code::PermissionDenied] {
            let e = answered(code, "Invalid api-key");
            assert!(matches!(&e, StoreError::Unauthorized(m) if m.contains("Invalid api-key")), "{code:?}: {e:?}");
        }
        assert!(matches!(answered(Code::Unavailable, "down"), StoreError::Unavailable(_)));
    }
}
