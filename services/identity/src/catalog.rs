//! The catalog: one small collection beside the per-model galleries that holds what is not a
//! vector: identities (name, external id, enrolled, first and last seen), the models a gallery
//! was built for, and feedback pairs. Qdrant needs a vector per point, so each entry carries the
//! constant one-dimensional vector `[1]`; nothing ever searches it.

use std::sync::Arc;

use reid_vector_store::{CollectionSpec, FieldType, Filter, Payload, Point, PointId, Record, VectorStore};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::error::IdentityResult;
use crate::model::ModelKey;
use crate::payload::{field, int_of, object, str_of};
use crate::personal::PersonalKeys;

/// The catalog collection of a namespace.
pub fn catalog_collection(namespace: &str) -> String {
    format!("{namespace}_catalog")
}

/// The alias that points at the gallery of the model served now, in a namespace.
pub fn active_alias(namespace: &str) -> String {
    format!("{namespace}_active")
}

/// Namespace of reid's UUID v5 point ids.
const NAMESPACE: Uuid = Uuid::from_u128(0x5f0e_3c4a_9b1d_4e8a_a0c7_2d6b_7e91_c3f2);

/// A point id derived from its parts, so that a retried write lands on the same point.
pub fn derived_id(parts: &[&str]) -> PointId {
    Uuid::new_v5(&NAMESPACE, parts.join("\u{1f}").as_bytes())
}

#[derive(Debug, Clone, PartialEq)]
pub struct IdentityEntry {
    pub identity: String,
    pub name: String,
    pub external_id: String,
    pub enrolled: bool,
    pub created_ms: i64,
    pub last_seen_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelEntry {
    pub key: ModelKey,
    pub collection: String,
    pub match_threshold: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackPair {
    pub same: bool,
    pub a: String,
    pub b: String,
    pub camera: String,
    pub track: String,
    pub at_ms: i64,
}

#[derive(Clone)]
pub struct Catalog {
    store: Arc<dyn VectorStore>,
    /// This namespace's catalog collection.
    collection: String,
    /// Names and external ids are stored sealed under these (never in the clear).
    keys: Arc<PersonalKeys>,
}

impl Catalog {
    fn entry(&self, p: &Payload) -> IdentityEntry {
        let identity = str_of(p, "identity").unwrap_or_default();
        let personal = |sealed: &str, legacy: &str| match str_of(p, sealed) {
            Some(s) => self.keys.open_sealed(&identity, &s),
            // Written before fields were sealed.
            None => str_of(p, legacy).unwrap_or_default(),
        };
        IdentityEntry {
            name: personal("name_sealed", "name"),
            external_id: personal("external_id_sealed", "external_id"),
            enrolled: p.get("enrolled").and_then(Value::as_bool).unwrap_or(false),
            created_ms: int_of(p, "created").unwrap_or_default(),
            last_seen_ms: int_of(p, "last_seen").unwrap_or_default(),
            identity,
        }
    }

    pub fn keys(&self) -> &PersonalKeys {
        &self.keys
    }

    pub async fn open(store: Arc<dyn VectorStore>, keys: Arc<PersonalKeys>, namespace: &str) -> IdentityResult<Self> {
        let collection = catalog_collection(namespace);
        let spec = CollectionSpec::new(&collection, 1)
            .index(field::KIND, FieldType::Keyword)
            .index(field::IDENTITY, FieldType::Keyword)
            .index(field::ENROLLED, FieldType::Bool)
            .index("last_seen", FieldType::Integer)
            .index("a", FieldType::Keyword)
            .index("b", FieldType::Keyword);
        store.ensure_collection(&spec).await?;
        Ok(Self { store, collection, keys })
    }

    async fn put(&self, id: PointId, payload: Value) -> IdentityResult<()> {
        let point = Point { id, vector: vec![1.0], payload: object(payload) };
        Ok(self.store.upsert(&self.collection, vec![point]).await?)
    }

    pub async fn put_identity(&self, e: &IdentityEntry) -> IdentityResult<()> {
        self.put_identities(std::slice::from_ref(e)).await
    }

    pub async fn put_identities(&self, entries: &[IdentityEntry]) -> IdentityResult<()> {
        let points = entries
            .iter()
            .map(|e| {
                Ok(Point {
                    id: derived_id(&["identity", &e.identity]),
                    vector: vec![1.0],
                    payload: object(json!({
                        "kind": "identity", "identity": e.identity,
                        "name_sealed": self.keys.seal(&e.identity, &e.name)?,
                        "external_id_sealed": self.keys.seal(&e.identity, &e.external_id)?,
                        "enrolled": e.enrolled, "created": e.created_ms, "last_seen": e.last_seen_ms,
                    })),
                })
            })
            .collect::<IdentityResult<Vec<_>>>()?;
        Ok(self.store.upsert(&self.collection, points).await?)
    }

    pub async fn identity(&self, identity: &str) -> IdentityResult<Option<IdentityEntry>> {
        let filter = Filter::all().keyword(field::KIND, "identity").keyword(field::IDENTITY, identity);
        let (records, _) = self.store.scroll(&self.collection, &filter, 1, None).await?;
        Ok(records.first().map(|r| self.entry(&r.payload)))
    }

    pub async fn identities_named(&self, ids: Vec<String>) -> IdentityResult<Vec<IdentityEntry>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let filter = Filter::all().keyword(field::KIND, "identity").keyword_in("identity", ids);
        let records = self.store.scroll_all(&self.collection, &filter).await?;
        Ok(records.iter().map(|r| self.entry(&r.payload)).collect())
    }

    /// One page of identities in id order, and the token of the next page.
    pub async fn identity_page(
        &self,
        size: usize,
        token: Option<PointId>,
    ) -> IdentityResult<(Vec<IdentityEntry>, Option<PointId>)> {
        let filter = Filter::all().keyword(field::KIND, "identity");
        let (records, next) = self.store.scroll(&self.collection, &filter, size, token).await?;
        Ok((records.iter().map(|r| self.entry(&r.payload)).collect(), next))
    }

    /// Every enrolled identity.
    pub async fn enrolled(&self) -> IdentityResult<Vec<IdentityEntry>> {
        let filter = Filter::all().keyword(field::KIND, "identity").flag(field::ENROLLED, true);
        let records: Vec<Record> = self.store.scroll_all(&self.collection, &filter).await?;
        Ok(records.iter().map(|r| self.entry(&r.payload)).collect())
    }

    /// Identities never enrolled and not seen since `before_ms`.
    pub async fn stale_anonymous(&self, before_ms: i64) -> IdentityResult<Vec<IdentityEntry>> {
        let filter = Filter::all().keyword(field::KIND, "identity").flag(field::ENROLLED, false).range(
            "last_seen",
            None,
            Some(before_ms),
        );
        let records: Vec<Record> = self.store.scroll_all(&self.collection, &filter).await?;
        Ok(records.iter().map(|r| self.entry(&r.payload)).collect())
    }

    pub async fn remove_identity(&self, identity: &str) -> IdentityResult<()> {
        Ok(self
            .store
            .delete(
                &self.collection,
                &Filter::all().keyword(field::KIND, "identity").keyword(field::IDENTITY, identity),
            )
            .await?)
    }

    /// Records that `identity` is being erased, and the tracklets whose exports are to go with it,
    /// before anything of it is deleted: an erasure cut short (a crash, an ingester that cannot be
    /// reached) is finished when the service starts again.
    pub async fn put_erasure(&self, identity: &str, tracklets: &[(String, String)]) -> IdentityResult<()> {
        let payload = json!({ "kind": "erasure", "identity": identity, "tracklets": tracklets });
        self.put(derived_id(&["erasure", identity]), payload).await
    }

    /// Erasures begun and not finished: the identity and its tracklets (camera, track).
    pub async fn erasures(&self) -> IdentityResult<Vec<(String, Vec<(String, String)>)>> {
        let records = self.store.scroll_all(&self.collection, &Filter::all().keyword(field::KIND, "erasure")).await?;
        Ok(records
            .iter()
            .filter_map(|r| {
                let tracklets = r
                    .payload
                    .get("tracklets")
                    .and_then(|t| serde_json::from_value::<Vec<(String, String)>>(t.clone()).ok())
                    .unwrap_or_default();
                Some((str_of(&r.payload, "identity")?, tracklets))
            })
            .collect())
    }

    pub async fn remove_erasure(&self, identity: &str) -> IdentityResult<()> {
        Ok(self
            .store
            .delete(&self.collection, &Filter::all().keyword(field::KIND, "erasure").keyword(field::IDENTITY, identity))
            .await?)
    }

    /// Records that `from` was merged into `into`, before its sightings move: an `Observe` that
    /// chose `from` and writes after the move follows this record to `into`.
    pub async fn put_merged(&self, from: &str, into: &str, at_ms: i64) -> IdentityResult<()> {
        let payload = json!({ "kind": "merged", "identity": from, "into": into, "at": at_ms });
        self.put(derived_id(&["merged", from]), payload).await
    }

    /// Where `identity` lives now: itself, or the end of the chain of merges it went through.
    pub async fn resolve(&self, identity: &str) -> IdentityResult<String> {
        let mut current = identity.to_owned();
        // A chain is short (each link is a merge); the bound only guards against a cycle.
        for _ in 0..16 {
            let filter = Filter::all().keyword(field::KIND, "merged").keyword(field::IDENTITY, &current);
            let (records, _) = self.store.scroll(&self.collection, &filter, 1, None).await?;
            match records.first().and_then(|r| str_of(&r.payload, "into")) {
                Some(into) if into != current => current = into,
                _ => break,
            }
        }
        Ok(current)
    }

    /// Removes merge records older than `before_ms`: no `Observe` that started before a merge is
    /// still running by then.
    pub async fn remove_merged_before(&self, before_ms: i64) -> IdentityResult<()> {
        let filter = Filter::all().keyword(field::KIND, "merged").range("at", None, Some(before_ms));
        Ok(self.store.delete(&self.collection, &filter).await?)
    }

    pub async fn put_model(&self, m: &ModelEntry) -> IdentityResult<()> {
        let payload = json!({
            "kind": "model", "model_id": m.key.id, "version": m.key.version, "dimension": m.key.dimension,
            "collection": m.collection, "match_threshold": m.match_threshold,
        });
        self.put(derived_id(&["model", &m.collection]), payload).await
    }

    /// Forgets a model's gallery (its collection is gone); the next use of that model builds it
    /// again.
    pub async fn remove_model(&self, collection: &str) -> IdentityResult<()> {
        let filter = Filter::all().keyword(field::KIND, "model").keyword("collection", collection);
        Ok(self.store.delete(&self.collection, &filter).await?)
    }

    pub async fn models(&self) -> IdentityResult<Vec<ModelEntry>> {
        let records = self.store.scroll_all(&self.collection, &Filter::all().keyword(field::KIND, "model")).await?;
        Ok(records
            .iter()
            .map(|r| ModelEntry {
                key: ModelKey {
                    id: str_of(&r.payload, "model_id").unwrap_or_default(),
                    version: str_of(&r.payload, "version").unwrap_or_default(),
                    dimension: int_of(&r.payload, "dimension").unwrap_or_default() as usize,
                },
                collection: str_of(&r.payload, "collection").unwrap_or_default(),
                match_threshold: r.payload.get("match_threshold").and_then(Value::as_f64).unwrap_or(0.5) as f32,
            })
            .collect())
    }

    pub async fn put_feedback(&self, f: &FeedbackPair) -> IdentityResult<()> {
        let label = if f.same { "same" } else { "different" };
        let payload = json!({
            "kind": "feedback", "label": label, "a": f.a, "b": f.b, "camera": f.camera, "track": f.track,
            "at": f.at_ms,
        });
        self.put(derived_id(&["feedback", label, &f.a, &f.b, &f.camera, &f.track]), payload).await
    }

    pub async fn feedback(&self) -> IdentityResult<Vec<FeedbackPair>> {
        let records = self.store.scroll_all(&self.collection, &Filter::all().keyword(field::KIND, "feedback")).await?;
        Ok(records
            .iter()
            .map(|r| FeedbackPair {
                same: str_of(&r.payload, "label").unwrap_or_default() == "same",
                a: str_of(&r.payload, "a").unwrap_or_default(),
                b: str_of(&r.payload, "b").unwrap_or_default(),
                camera: str_of(&r.payload, "camera").unwrap_or_default(),
                track: str_of(&r.payload, "track").unwrap_or_default(),
                at_ms: int_of(&r.payload, "at").unwrap_or_default(),
            })
            .collect())
    }

    /// Removes the feedback pairs that name an identity (part of erasing it). Returns how many.
    pub async fn remove_feedback_of(&self, identity: &str) -> IdentityResult<u64> {
        let mut removed = 0;
        for side in ["a", "b"] {
            let filter = Filter::all().keyword(field::KIND, "feedback").keyword(side, identity);
            removed += self.store.count(&self.collection, &filter).await?;
            self.store.delete(&self.collection, &filter).await?;
        }
        Ok(removed)
    }

    /// Points every feedback pair that names `from` at `to` (after a merge).
    pub async fn rename_in_feedback(&self, from: &str, to: &str) -> IdentityResult<()> {
        for side in ["a", "b"] {
            let filter = Filter::all().keyword(field::KIND, "feedback").keyword(side, from);
            self.store.set_payload(&self.collection, &filter, object(json!({ side: to }))).await?;
        }
        Ok(())
    }
}
