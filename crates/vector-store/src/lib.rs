//! The vector-store seam. The identity service talks to one [`VectorStore`] trait; behind it sit
//! Qdrant's in-process engine ([`EdgeStore`], the embedded default, on local disk) and a Qdrant
//! server ([`QdrantServerStore`], over gRPC with an optional API key and TLS). Both pass the same
//! conformance suite (`tests/conformance.rs`).
//!
//! The trait is deliberately Qdrant-shaped but small: cosine collections of one unnamed dense
//! vector, UUID point ids, JSON payloads with keyword/integer/bool indexes, filters made of
//! `must`/`must_not` conditions, and aliases for atomic switch-overs.

mod edge;
mod error;
mod server;
mod types;

pub use edge::EdgeStore;
pub use error::{StoreError, StoreResult};
pub use server::{QdrantServerStore, ServerOptions};
pub use types::*;

use async_trait::async_trait;

/// A store of vectors with payloads, grouped in named collections.
///
/// Every write is durable (and visible to reads) when the call returns. Upserts with an existing id
/// replace the point, which is what makes retried writes idempotent.
#[async_trait]
pub trait VectorStore: Send + Sync + 'static {
    /// A short name for logs and metrics: `edge` or `qdrant`.
    fn backend(&self) -> &'static str;

    /// Creates the collection and its payload indexes unless it exists. Returns true when it was
    /// created. An existing collection of another dimension is an error.
    async fn ensure_collection(&self, spec: &CollectionSpec) -> StoreResult<bool>;

    /// Names of all collections, sorted.
    async fn list_collections(&self) -> StoreResult<Vec<String>>;

    /// Deletes a collection and everything in it; a missing collection is not an error.
    async fn delete_collection(&self, name: &str) -> StoreResult<()>;

    /// Inserts or replaces points. Vectors must have the collection's dimension and be finite.
    async fn upsert(&self, collection: &str, points: Vec<Point>) -> StoreResult<()>;

    /// The `limit` nearest points by cosine similarity among those matching the filter.
    async fn search(&self, collection: &str, query: &SearchQuery) -> StoreResult<Vec<Hit>>;

    /// One page of the points matching the filter, in id order, starting at `offset`, each
    /// record with its vector when `with_vectors`. Returns the page and the offset of the next
    /// page, if any.
    async fn scroll_page(
        &self,
        collection: &str,
        filter: &Filter,
        limit: usize,
        offset: Option<PointId>,
        with_vectors: bool,
    ) -> StoreResult<(Vec<Record>, Option<PointId>)>;

    /// [`VectorStore::scroll_page`] without vectors.
    async fn scroll(
        &self,
        collection: &str,
        filter: &Filter,
        limit: usize,
        offset: Option<PointId>,
    ) -> StoreResult<(Vec<Record>, Option<PointId>)> {
        self.scroll_page(collection, filter, limit, offset, false).await
    }

    /// Exact number of points matching the filter.
    async fn count(&self, collection: &str, filter: &Filter) -> StoreResult<u64>;

    /// Deletes the points matching the filter.
    async fn delete(&self, collection: &str, filter: &Filter) -> StoreResult<()>;

    /// Sets (merges) the given payload keys on every point matching the filter.
    async fn set_payload(&self, collection: &str, filter: &Filter, payload: Payload) -> StoreResult<()>;

    /// Points `alias` at `collection`, replacing what it pointed at in one step.
    async fn set_alias(&self, alias: &str, collection: &str) -> StoreResult<()>;

    /// The collection an alias points at.
    async fn resolve_alias(&self, alias: &str) -> StoreResult<Option<String>>;

    /// Point count, indexed vector count and segments of a collection.
    async fn stats(&self, collection: &str) -> StoreResult<CollectionStats>;

    /// Builds search indexes for what was written since the last call. A server does this by
    /// itself; the embedded engine has no background optimiser, so its owner calls this.
    async fn optimize(&self, collection: &str) -> StoreResult<()>;

    /// Scrolls through every point matching the filter.
    async fn scroll_all(&self, collection: &str, filter: &Filter) -> StoreResult<Vec<Record>> {
        every_page(|offset| self.scroll_page(collection, filter, PAGE, offset, false)).await
    }

    /// Scrolls through every point matching the filter, with their vectors.
    async fn scroll_all_with_vectors(&self, collection: &str, filter: &Filter) -> StoreResult<Vec<Record>> {
        every_page(|offset| self.scroll_page(collection, filter, PAGE, offset, true)).await
    }
}

/// Points per page of the `scroll_all` calls.
const PAGE: usize = 1024;

async fn every_page<F, Fut>(mut page: F) -> StoreResult<Vec<Record>>
where
    F: FnMut(Option<PointId>) -> Fut,
    Fut: std::future::Future<Output = StoreResult<(Vec<Record>, Option<PointId>)>>,
{
    let mut out = Vec::new();
    let mut offset = None;
    loop {
        let (records, next) = page(offset).await?;
        out.extend(records);
        match next {
            Some(next) => offset = Some(next),
            None => return Ok(out),
        }
    }
}

/// Checks a vector against a collection's dimension before it reaches a backend, so that both
/// backends refuse the same inputs with the same error.
pub fn validate_vector(vector: &[f32], dimension: usize) -> StoreResult<()> {
    if vector.len() != dimension {
        return Err(StoreError::DimensionMismatch { expected: dimension, got: vector.len() });
    }
    if let Some(i) = vector.iter().position(|v| !v.is_finite()) {
        return Err(StoreError::InvalidVector(format!("component {i} is not finite")));
    }
    if vector.iter().all(|v| *v == 0.0) {
        return Err(StoreError::InvalidVector("the zero vector has no direction".into()));
    }
    Ok(())
}
