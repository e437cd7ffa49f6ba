//! The values that cross the seam: points, hits, filters, collection specs.

use crate::error::{StoreError, StoreResult};

/// Point ids are UUIDs, so callers can derive them from content (UUID v5) and retry writes safely.
pub type PointId = uuid::Uuid;

/// A point's payload: a JSON object.
pub type Payload = serde_json::Map<String, serde_json::Value>;

/// A vector with its id and payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub id: PointId,
    pub vector: Vec<f32>,
    pub payload: Payload,
}

/// A point found by a search, with its cosine similarity to the query, and its (normalised)
/// vector when the query asked for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: PointId,
    pub score: f32,
    pub payload: Payload,
    pub vector: Option<Vec<f32>>,
}

/// A point read back by a scroll: its payload, and its vector when asked for
/// ([`crate::VectorStore::scroll_page`] `with_vectors`; cosine collections keep vectors
/// L2-normalised).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: PointId,
    pub payload: Payload,
    pub vector: Option<Vec<f32>>,
}

/// What a collection holds, and how much of it the search index covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CollectionStats {
    pub points: u64,
    /// Vectors in an HNSW index; the rest are searched exhaustively. A segment smaller than the
    /// backend's indexing threshold (about 10,000 vectors of 512 dimensions) stays unindexed: it is
    /// searched exhaustively, which is as fast at that size.
    pub indexed_vectors: u64,
    pub segments: u64,
    /// The index parameters the collection was created with.
    pub index_params: IndexParams,
}

/// The type of an indexed payload field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Keyword,
    Integer,
    Bool,
}

/// How a collection's vectors are indexed; `None` leaves a choice to the backend's default
/// (HNSW `m` 16, `ef_construct` 100, no quantization, on both backends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexParams {
    /// HNSW edges per node: more is better recall and more memory.
    pub m: Option<usize>,
    /// HNSW beam width while building: more is better recall and a slower build.
    pub ef_construct: Option<usize>,
    /// Scalar (int8) quantization of the vectors: a quarter of the memory, with the originals
    /// kept to re-score the best candidates.
    pub quantization: Option<Quantization>,
}

/// A vector quantization a collection can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantization {
    /// One byte per component (Qdrant's scalar quantization, at [`INT8_QUANTILE`]).
    Int8,
}

/// The share of values int8 quantization spans (the rest are clipped), the same on both backends.
pub const INT8_QUANTILE: f32 = 0.99;

impl IndexParams {
    /// Refuses values the engines would refuse later, at a worse moment.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(m) = self.m.filter(|m| !(4..=128).contains(m)) {
            return Err(format!("HNSW m {m} is outside 4..=128"));
        }
        if let Some(ef) = self.ef_construct.filter(|ef| !(4..=4096).contains(ef)) {
            return Err(format!("HNSW ef_construct {ef} is outside 4..=4096"));
        }
        Ok(())
    }
}

/// A collection: cosine distance over one dense vector, plus the payload fields to index. The
/// index parameters apply when the collection is created; an existing collection keeps its own.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionSpec {
    pub name: String,
    pub dimension: usize,
    pub indexes: Vec<(String, FieldType)>,
    pub index_params: IndexParams,
}

impl CollectionSpec {
    pub fn new(name: impl Into<String>, dimension: usize) -> Self {
        Self { name: name.into(), dimension, indexes: Vec::new(), index_params: IndexParams::default() }
    }

    pub fn index(mut self, field: impl Into<String>, kind: FieldType) -> Self {
        self.indexes.push((field.into(), kind));
        self
    }

    pub fn index_params(mut self, params: IndexParams) -> Self {
        self.index_params = params;
        self
    }
}

/// One condition on a payload field.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The keyword field equals one of these values.
    KeywordIn { key: String, any: Vec<String> },
    /// The integer field equals this value.
    IntegerIs { key: String, value: i64 },
    /// The bool field equals this value.
    BoolIs { key: String, value: bool },
    /// The integer field lies in `[gte, lt)`; an open side is `None`.
    IntegerRange { key: String, gte: Option<i64>, lt: Option<i64> },
}

/// Points match when every `must` condition holds and no `must_not` condition does. The empty
/// filter matches every point.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub must: Vec<Condition>,
    pub must_not: Vec<Condition>,
}

impl Filter {
    pub fn all() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.must.is_empty() && self.must_not.is_empty()
    }

    pub fn keyword(mut self, key: &str, value: impl Into<String>) -> Self {
        self.must.push(Condition::KeywordIn { key: key.into(), any: vec![value.into()] });
        self
    }

    pub fn keyword_in(mut self, key: &str, any: Vec<String>) -> Self {
        self.must.push(Condition::KeywordIn { key: key.into(), any });
        self
    }

    pub fn not_keyword(mut self, key: &str, value: impl Into<String>) -> Self {
        self.must_not.push(Condition::KeywordIn { key: key.into(), any: vec![value.into()] });
        self
    }

    pub fn integer(mut self, key: &str, value: i64) -> Self {
        self.must.push(Condition::IntegerIs { key: key.into(), value });
        self
    }

    pub fn flag(mut self, key: &str, value: bool) -> Self {
        self.must.push(Condition::BoolIs { key: key.into(), value });
        self
    }

    pub fn range(mut self, key: &str, gte: Option<i64>, lt: Option<i64>) -> Self {
        self.must.push(Condition::IntegerRange { key: key.into(), gte, lt });
        self
    }
}

/// A nearest-neighbour query.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    pub vector: Vec<f32>,
    pub limit: usize,
    pub filter: Filter,
    /// Exhaustive search instead of the HNSW index (for measuring the index's recall).
    pub exact: bool,
    /// HNSW beam width at search time; the backend's default when `None`.
    pub hnsw_ef: Option<usize>,
    /// Return each hit's vector.
    pub with_vectors: bool,
}

impl SearchQuery {
    pub fn new(vector: Vec<f32>, limit: usize) -> Self {
        Self { vector, limit, filter: Filter::all(), exact: false, hnsw_ef: None, with_vectors: false }
    }

    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    pub fn exact(mut self, exact: bool) -> Self {
        self.exact = exact;
        self
    }

    pub fn with_vectors(mut self, with_vectors: bool) -> Self {
        self.with_vectors = with_vectors;
        self
    }
}

/// Collection and alias names double as folder names in the embedded store: keep them plain.
pub fn validate_name(name: &str) -> StoreResult<()> {
    let plain = !name.is_empty()
        && name.len() <= 200
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if plain { Ok(()) } else { Err(StoreError::InvalidName(name.into())) }
}
