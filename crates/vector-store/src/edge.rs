//! The embedded backend: one `qdrant_edge::EdgeShard` per collection, each in its own folder under
//! the store's root, and the aliases in one JSON file replaced atomically.
//!
//! The engine's calls block (disk, CPU), so each runs on tokio's blocking pool. The engine has no
//! background optimiser: [`VectorStore::optimize`] builds the HNSW index of what was written since.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use qdrant_edge::{
    CountRequestBuilder, CreateIndex, Distance, EdgeConfigBuilder, EdgeShard, EdgeVectorParamsBuilder,
    FieldIndexOperations, HnswIndexConfig, JsonPath, NamedQuery, PayloadFieldSchema, PayloadOps, PayloadSchemaType,
    PointInsertOperations, PointOperations, PointStruct, QuantizationConfig, QueryEnum, QueryRequestBuilder,
    ScoringQuery, ScrollRequestBuilder, SearchParams, SetPayloadOp, UpdateOperation, VectorInternal,
    VectorStructInternal, WithPayloadInterface, WithVector,
};
use serde_json::json;

use crate::error::{StoreError, StoreResult};
use crate::types::{
    CollectionSpec, CollectionStats, Condition, FieldType, Filter, Hit, INT8_QUANTILE, IndexParams, Payload, Point,
    PointId, Quantization, Record, SearchQuery,
};
use crate::{VectorStore, validate_name, validate_vector};

const COLLECTIONS_DIR: &str = "collections";
const ALIASES_FILE: &str = "aliases.json";

/// Qdrant's in-process engine on local disk.
pub struct EdgeStore {
    root: PathBuf,
    shards: RwLock<HashMap<String, Collection>>,
    aliases: Mutex<BTreeMap<String, String>>,
    create_lock: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Collection {
    shard: Arc<EdgeShard>,
    dimension: usize,
}

impl std::fmt::Debug for EdgeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeStore").field("root", &self.root).finish_non_exhaustive()
    }
}

impl EdgeStore {
    /// Opens (or creates) a store under `root`, loading every collection found there.
    pub fn open(root: impl Into<PathBuf>) -> StoreResult<Self> {
        let root = root.into();
        let collections = root.join(COLLECTIONS_DIR);
        std::fs::create_dir_all(&collections).map_err(StoreError::io(format!("creating {}", collections.display())))?;
        let mut shards = HashMap::new();
        for entry in
            std::fs::read_dir(&collections).map_err(StoreError::io(format!("reading {}", collections.display())))?
        {
            let entry = entry.map_err(StoreError::io(format!("reading {}", collections.display())))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            if validate_name(&name).is_err() || !entry.path().is_dir() {
                continue;
            }
            let shard = EdgeShard::load(&entry.path(), None).map_err(engine)?;
            let dimension = dimension_of(&shard);
            shards.insert(name, Collection { shard: Arc::new(shard), dimension });
        }
        let aliases = match std::fs::read(root.join(ALIASES_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::Backend { backend: "edge", message: format!("{ALIASES_FILE}: {e}") })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(StoreError::io(format!("reading {ALIASES_FILE}"))(e)),
        };
        Ok(Self { root, shards: RwLock::new(shards), aliases: Mutex::new(aliases), create_lock: Default::default() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn collection(&self, name: &str) -> StoreResult<Collection> {
        self.shards
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::CollectionNotFound(name.into()))
    }

    fn write_aliases(&self, aliases: &BTreeMap<String, String>) -> StoreResult<()> {
        let path = self.root.join(ALIASES_FILE);
        let tmp = self.root.join(format!("{ALIASES_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(aliases).unwrap_or_default();
        write_synced(&tmp, &bytes).map_err(StoreError::io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(StoreError::io(format!("renaming {}", path.display())))
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn engine(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend { backend: "edge", message: e.to_string() }
}

/// The engine's HNSW settings with ours applied over its defaults.
fn hnsw_config(params: &IndexParams) -> HnswIndexConfig {
    let default = HnswIndexConfig::default();
    HnswIndexConfig {
        m: params.m.unwrap_or(default.m),
        ef_construct: params.ef_construct.unwrap_or(default.ef_construct),
        ..default
    }
}

/// Written in Qdrant's documented JSON form, as the server takes it.
fn quantization_config(q: Quantization) -> StoreResult<QuantizationConfig> {
    let value = match q {
        Quantization::Int8 => json!({ "scalar": { "type": "int8", "quantile": INT8_QUANTILE } }),
    };
    serde_json::from_value(value).map_err(|e| engine(format!("quantization: {e}")))
}

/// What a loaded shard was created with, in our terms.
fn index_params_of(shard: &EdgeShard) -> IndexParams {
    let config = shard.config();
    let hnsw = config.hnsw_config();
    let quantization = match &config.quantization_config {
        Some(QuantizationConfig::Scalar(_)) => Some(Quantization::Int8),
        _ => None,
    };
    IndexParams { m: Some(hnsw.m), ef_construct: Some(hnsw.ef_construct), quantization }
}

fn dimension_of(shard: &EdgeShard) -> usize {
    shard.config().vectors.values().next().map(|v| v.size).unwrap_or(0)
}

/// Runs one engine call on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> StoreResult<T> + Send + 'static) -> StoreResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| engine(format!("engine task failed: {e}")))?
}

/// Our filter in Qdrant's documented JSON filter language, which the engine deserialises.
fn to_engine_filter(filter: &Filter) -> StoreResult<Option<qdrant_edge::Filter>> {
    if filter.is_empty() {
        return Ok(None);
    }
    let conditions = |cs: &[Condition]| cs.iter().map(condition_json).collect::<Vec<_>>();
    let value = json!({ "must": conditions(&filter.must), "must_not": conditions(&filter.must_not) });
    serde_json::from_value(value).map(Some).map_err(|e| engine(format!("filter: {e}")))
}

fn condition_json(condition: &Condition) -> serde_json::Value {
    match condition {
        Condition::KeywordIn { key, any } if any.len() == 1 => json!({ "key": key, "match": { "value": any[0] } }),
        Condition::KeywordIn { key, any } => json!({ "key": key, "match": { "any": any } }),
        Condition::IntegerIs { key, value } => json!({ "key": key, "match": { "value": value } }),
        Condition::BoolIs { key, value } => json!({ "key": key, "match": { "value": value } }),
        Condition::IntegerRange { key, gte, lt } => json!({ "key": key, "range": { "gte": gte, "lt": lt } }),
    }
}

fn point_id(id: &qdrant_edge::PointId) -> StoreResult<PointId> {
    match id {
        qdrant_edge::PointId::Uuid(u) => Ok(*u),
        qdrant_edge::PointId::NumId(n) => Err(engine(format!("point {n} has a numeric id; reid writes UUIDs"))),
    }
}

/// The collection's one dense vector, named or not.
fn dense(vector: VectorStructInternal) -> Option<Vec<f32>> {
    match vector {
        VectorStructInternal::Single(v) => Some(v),
        VectorStructInternal::Named(mut named) => match named.remove("")? {
            VectorInternal::Dense(v) => Some(v),
            _ => None,
        },
        VectorStructInternal::MultiDense(_) => None,
    }
}

fn payload_of(payload: Option<qdrant_edge::Payload>) -> Payload {
    payload.map(|p| p.0).unwrap_or_default()
}

#[async_trait]
impl VectorStore for EdgeStore {
    fn backend(&self) -> &'static str {
        "edge"
    }

    async fn ensure_collection(&self, spec: &CollectionSpec) -> StoreResult<bool> {
        validate_name(&spec.name)?;
        // Held across check and create, so two creators never open the same folder twice.
        let _creating = self.create_lock.lock().await;
        if let Ok(existing) = self.collection(&spec.name) {
            if existing.dimension != spec.dimension {
                return Err(StoreError::DimensionMismatch { expected: existing.dimension, got: spec.dimension });
            }
            return Ok(false);
        }
        let path = self.root.join(COLLECTIONS_DIR).join(&spec.name);
        let name = spec.name.clone();
        let spec = spec.clone();
        let shard = blocking(move || {
            std::fs::create_dir_all(&path).map_err(StoreError::io(format!("creating {}", path.display())))?;
            let mut config = EdgeConfigBuilder::new()
                .vector("", EdgeVectorParamsBuilder::new(spec.dimension, Distance::Cosine).build())
                .hnsw_config(hnsw_config(&spec.index_params));
            if let Some(q) = spec.index_params.quantization {
                config = config.quantization_config(quantization_config(q)?);
            }
            let config = config.build();
            let shard = EdgeShard::new(&path, config).map_err(engine)?;
            for (field, kind) in &spec.indexes {
                let schema = match kind {
                    FieldType::Keyword => PayloadSchemaType::Keyword,
                    FieldType::Integer => PayloadSchemaType::Integer,
                    FieldType::Bool => PayloadSchemaType::Bool,
                };
                let field_name =
                    JsonPath::try_from(field.as_str()).map_err(|()| StoreError::InvalidName(field.clone()))?;
                let op = FieldIndexOperations::CreateIndex(CreateIndex {
                    field_name,
                    field_schema: Some(PayloadFieldSchema::FieldType(schema)),
                });
                shard.update(UpdateOperation::FieldIndexOperation(op)).map_err(engine)?;
            }
            shard.flush().map_err(engine)?;
            Ok(Collection { dimension: spec.dimension, shard: Arc::new(shard) })
        })
        .await?;
        self.shards.write().unwrap_or_else(|e| e.into_inner()).insert(name, shard);
        Ok(true)
    }

    async fn list_collections(&self) -> StoreResult<Vec<String>> {
        let mut names: Vec<String> = self.shards.read().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        names.sort();
        Ok(names)
    }

    async fn delete_collection(&self, name: &str) -> StoreResult<()> {
        validate_name(name)?;
        let removed = self.shards.write().unwrap_or_else(|e| e.into_inner()).remove(name);
        let path = self.root.join(COLLECTIONS_DIR).join(name);
        blocking(move || {
            drop(removed);
            // A call that took the shard before it left the map (an index build) may still be
            // writing into its folder: try again while it finishes.
            let mut attempt = 0;
            loop {
                match std::fs::remove_dir_all(&path) {
                    Ok(()) => return Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty && attempt < 20 => {
                        attempt += 1;
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                    Err(e) => return Err(StoreError::io(format!("removing {}", path.display()))(e)),
                }
            }
        })
        .await
    }

    async fn upsert(&self, collection: &str, points: Vec<Point>) -> StoreResult<()> {
        let c = self.collection(collection)?;
        for p in &points {
            validate_vector(&p.vector, c.dimension)?;
        }
        if points.is_empty() {
            return Ok(());
        }
        blocking(move || {
            let points = points
                .into_iter()
                .map(|p| {
                    PointStruct::new(qdrant_edge::PointId::Uuid(p.id), p.vector, serde_json::Value::Object(p.payload))
                        .into()
                })
                .collect();
            let op = PointOperations::UpsertPoints(PointInsertOperations::PointsList(points));
            c.shard.update(UpdateOperation::PointOperation(op)).map_err(engine)?;
            c.shard.flush().map_err(engine)
        })
        .await
    }

    async fn search(&self, collection: &str, query: &SearchQuery) -> StoreResult<Vec<Hit>> {
        let c = self.collection(collection)?;
        validate_vector(&query.vector, c.dimension)?;
        let filter = to_engine_filter(&query.filter)?;
        let params = SearchParams { exact: query.exact, hnsw_ef: query.hnsw_ef, ..Default::default() };
        let mut request = QueryRequestBuilder::new(query.limit)
            .query(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery::default_dense(query.vector.clone()))))
            .params(params)
            .with_payload(WithPayloadInterface::Bool(true))
            .with_vector(WithVector::Bool(query.with_vectors));
        if let Some(filter) = filter {
            request = request.filter(filter);
        }
        let request = request.build();
        let found = blocking(move || c.shard.query(request).map_err(engine)).await?;
        found
            .into_iter()
            .map(|p| {
                let vector = p.vector.and_then(dense);
                Ok(Hit { id: point_id(&p.id)?, score: p.score, payload: payload_of(p.payload), vector })
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
        let c = self.collection(collection)?;
        let mut request = ScrollRequestBuilder::new()
            .limit(limit.max(1))
            .with_payload(WithPayloadInterface::Bool(true))
            .with_vector(WithVector::Bool(with_vectors));
        if let Some(filter) = to_engine_filter(filter)? {
            request = request.filter(filter);
        }
        if let Some(offset) = offset {
            request = request.offset(qdrant_edge::PointId::Uuid(offset));
        }
        let request = request.build();
        let (records, next) = blocking(move || c.shard.scroll(request).map_err(engine)).await?;
        let records = records
            .into_iter()
            .map(|r| {
                Ok(Record { id: point_id(&r.id)?, vector: r.vector.and_then(dense), payload: payload_of(r.payload) })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((records, next.as_ref().map(point_id).transpose()?))
    }

    async fn count(&self, collection: &str, filter: &Filter) -> StoreResult<u64> {
        let c = self.collection(collection)?;
        let mut request = CountRequestBuilder::new().exact(true);
        if let Some(filter) = to_engine_filter(filter)? {
            request = request.filter(filter);
        }
        let request = request.build();
        let n = blocking(move || c.shard.count(request).map_err(engine)).await?;
        Ok(n as u64)
    }

    async fn delete(&self, collection: &str, filter: &Filter) -> StoreResult<()> {
        let c = self.collection(collection)?;
        // An empty filter deletes everything, which is what the caller asked for.
        let filter = to_engine_filter(filter)?.unwrap_or_default();
        blocking(move || {
            let op = PointOperations::DeletePointsByFilter(filter);
            c.shard.update(UpdateOperation::PointOperation(op)).map_err(engine)?;
            c.shard.flush().map_err(engine)
        })
        .await
    }

    async fn set_payload(&self, collection: &str, filter: &Filter, payload: Payload) -> StoreResult<()> {
        let c = self.collection(collection)?;
        let filter = to_engine_filter(filter)?.unwrap_or_default();
        blocking(move || {
            let op =
                SetPayloadOp { payload: qdrant_edge::Payload(payload), points: None, filter: Some(filter), key: None };
            c.shard.update(UpdateOperation::PayloadOperation(PayloadOps::SetPayload(op))).map_err(engine)?;
            c.shard.flush().map_err(engine)
        })
        .await
    }

    async fn set_alias(&self, alias: &str, collection: &str) -> StoreResult<()> {
        validate_name(alias)?;
        self.collection(collection)?;
        let mut aliases = self.aliases.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = aliases.clone();
        next.insert(alias.into(), collection.into());
        self.write_aliases(&next)?;
        *aliases = next;
        Ok(())
    }

    async fn resolve_alias(&self, alias: &str) -> StoreResult<Option<String>> {
        Ok(self.aliases.lock().unwrap_or_else(|e| e.into_inner()).get(alias).cloned())
    }

    async fn stats(&self, collection: &str) -> StoreResult<CollectionStats> {
        let c = self.collection(collection)?;
        let index_params = index_params_of(&c.shard);
        let info = blocking(move || c.shard.info().map_err(engine)).await?;
        Ok(CollectionStats {
            points: info.points_count as u64,
            indexed_vectors: info.indexed_vectors_count as u64,
            segments: info.segments_count as u64,
            index_params,
        })
    }

    async fn optimize(&self, collection: &str) -> StoreResult<()> {
        let c = self.collection(collection)?;
        blocking(move || {
            c.shard.optimize().map_err(engine)?;
            c.shard.flush().map_err(engine)
        })
        .await
    }
}
