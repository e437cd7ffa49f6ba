//! The catalog: one small collection beside the per-model galleries that holds what is not a
//! vector: identities (name, external id, enrolled, first and last seen), the models a gallery
//! was built for, and feedback pairs. Qdrant needs a vector per point, so each entry carries the
//! constant one-dimensional vector `[1]`; nothing ever searches it.

use std::sync::Arc;

use reid_vector_store::{CollectionSpec, FieldType, Filter, Payload, Point, PointId, VectorStore};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::error::IdentityResult;
use crate::model::ModelKey;
use crate::payload::{field, fields, object};
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

/// The catalog's own field names, as records store them and filters name them (besides
/// [`field::KIND`] and [`field::IDENTITY`], which gallery points share).
mod key {
    pub(super) const LAST_SEEN: &str = "last_seen";
    /// The two sides of a feedback pair.
    pub(super) const A: &str = "a";
    pub(super) const B: &str = "b";
    /// When a merge happened (ms).
    pub(super) const AT: &str = "at";
    pub(super) const COLLECTION: &str = "collection";
}

/// A catalog record, told apart by its `kind`; the field names are the stored ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum CatalogRecord {
    Identity(IdentityRecord),
    /// An erasure begun: the identity and its tracklets (camera, track) whose exports go with it.
    Erasure {
        identity: String,
        #[serde(default)]
        tracklets: Vec<(String, String)>,
    },
    /// `identity` was merged into `into` at `at` (ms).
    Merged {
        identity: String,
        into: String,
        at: i64,
    },
    Model {
        model_id: String,
        version: String,
        #[serde(default)]
        dimension: usize,
        collection: String,
        #[serde(default = "half")]
        match_threshold: f32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        merge_threshold: Option<f32>,
    },
    Feedback {
        label: Label,
        a: String,
        b: String,
        #[serde(default)]
        camera: String,
        #[serde(default)]
        track: String,
        #[serde(default)]
        at: i64,
    },
}

fn half() -> f32 {
    0.5
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Label {
    Same,
    Different,
}

impl Label {
    /// As stored (and as a part of the pair's point id).
    fn name(self) -> &'static str {
        match self {
            Label::Same => "same",
            Label::Different => "different",
        }
    }
}

/// An identity as stored: its name and external id sealed under the identity's own key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct IdentityRecord {
    identity: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name_sealed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    external_id_sealed: Option<String>,
    /// In the clear: only records written before fields were sealed have these.
    #[serde(default, skip_serializing)]
    name: Option<String>,
    #[serde(default, skip_serializing)]
    external_id: Option<String>,
    #[serde(default)]
    enrolled: bool,
    #[serde(default)]
    created: i64,
    #[serde(default)]
    last_seen: i64,
}

impl CatalogRecord {
    fn read(p: &Payload) -> Option<Self> {
        Self::deserialize(p).ok()
    }
}

/// The kind names records are filtered by.
const IDENTITY: &str = "identity";
const ERASURE: &str = "erasure";
const MERGED: &str = "merged";
const MODEL: &str = "model";
const FEEDBACK: &str = "feedback";

fn of_kind(kind: &str) -> Filter {
    Filter::all().keyword(field::KIND, kind)
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
    pub merge_threshold: Option<f32>,
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
    fn entry(&self, r: IdentityRecord) -> IdentityEntry {
        let personal = |sealed: Option<String>, legacy: Option<String>| match sealed {
            Some(s) => self.keys.open_sealed(&r.identity, &s),
            None => legacy.unwrap_or_default(),
        };
        IdentityEntry {
            name: personal(r.name_sealed.clone(), r.name.clone()),
            external_id: personal(r.external_id_sealed.clone(), r.external_id.clone()),
            enrolled: r.enrolled,
            created_ms: r.created,
            last_seen_ms: r.last_seen,
            identity: r.identity,
        }
    }

    /// The identity entries among `records`.
    fn entries(&self, records: &[reid_vector_store::Record]) -> Vec<IdentityEntry> {
        records
            .iter()
            .filter_map(|r| match CatalogRecord::read(&r.payload)? {
                CatalogRecord::Identity(i) => Some(self.entry(i)),
                _ => None,
            })
            .collect()
    }

    /// Every record of `kind`.
    async fn all_of(&self, kind: &str) -> IdentityResult<Vec<CatalogRecord>> {
        let records = self.store.scroll_all(&self.collection, &of_kind(kind)).await?;
        Ok(records.iter().filter_map(|r| CatalogRecord::read(&r.payload)).collect())
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
            .index(key::LAST_SEEN, FieldType::Integer)
            .index(key::A, FieldType::Keyword)
            .index(key::B, FieldType::Keyword);
        store.ensure_collection(&spec).await?;
        Ok(Self { store, collection, keys })
    }

    fn point(id: PointId, record: &CatalogRecord) -> Point {
        Point { id, vector: vec![1.0], payload: object(serde_json::to_value(record).unwrap_or(Value::Null)) }
    }

    async fn put(&self, id: PointId, record: &CatalogRecord) -> IdentityResult<()> {
        Ok(self.store.upsert(&self.collection, vec![Self::point(id, record)]).await?)
    }

    pub async fn put_identity(&self, e: &IdentityEntry) -> IdentityResult<()> {
        self.put_identities(std::slice::from_ref(e)).await
    }

    pub async fn put_identities(&self, entries: &[IdentityEntry]) -> IdentityResult<()> {
        let points = entries
            .iter()
            .map(|e| {
                let record = CatalogRecord::Identity(IdentityRecord {
                    identity: e.identity.clone(),
                    name_sealed: Some(self.keys.seal(&e.identity, &e.name)?),
                    external_id_sealed: Some(self.keys.seal(&e.identity, &e.external_id)?),
                    name: None,
                    external_id: None,
                    enrolled: e.enrolled,
                    created: e.created_ms,
                    last_seen: e.last_seen_ms,
                });
                Ok(Self::point(derived_id(&[IDENTITY, &e.identity]), &record))
            })
            .collect::<IdentityResult<Vec<_>>>()?;
        Ok(self.store.upsert(&self.collection, points).await?)
    }

    pub async fn identity(&self, identity: &str) -> IdentityResult<Option<IdentityEntry>> {
        let filter = of_kind(IDENTITY).keyword(field::IDENTITY, identity);
        let (records, _) = self.store.scroll(&self.collection, &filter, 1, None).await?;
        Ok(self.entries(&records).into_iter().next())
    }

    pub async fn identities_named(&self, ids: Vec<String>) -> IdentityResult<Vec<IdentityEntry>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let filter = of_kind(IDENTITY).keyword_in(field::IDENTITY, ids);
        Ok(self.entries(&self.store.scroll_all(&self.collection, &filter).await?))
    }

    /// One page of identities in id order, and the token of the next page.
    pub async fn identity_page(
        &self,
        size: usize,
        token: Option<PointId>,
    ) -> IdentityResult<(Vec<IdentityEntry>, Option<PointId>)> {
        let (records, next) = self.store.scroll(&self.collection, &of_kind(IDENTITY), size, token).await?;
        Ok((self.entries(&records), next))
    }

    /// Every enrolled identity.
    pub async fn enrolled(&self) -> IdentityResult<Vec<IdentityEntry>> {
        let filter = of_kind(IDENTITY).flag(field::ENROLLED, true);
        Ok(self.entries(&self.store.scroll_all(&self.collection, &filter).await?))
    }

    /// Identities never enrolled and not seen since `before_ms`.
    pub async fn stale_anonymous(&self, before_ms: i64) -> IdentityResult<Vec<IdentityEntry>> {
        let filter = of_kind(IDENTITY).flag(field::ENROLLED, false).range(key::LAST_SEEN, None, Some(before_ms));
        Ok(self.entries(&self.store.scroll_all(&self.collection, &filter).await?))
    }

    pub async fn remove_identity(&self, identity: &str) -> IdentityResult<()> {
        Ok(self.store.delete(&self.collection, &of_kind(IDENTITY).keyword(field::IDENTITY, identity)).await?)
    }

    /// Records that `identity` is being erased, and the tracklets whose exports are to go with it,
    /// before anything of it is deleted: an erasure cut short (a crash, an ingester that cannot be
    /// reached) is finished when the service starts again.
    pub async fn put_erasure(&self, identity: &str, tracklets: &[(String, String)]) -> IdentityResult<()> {
        let record = CatalogRecord::Erasure { identity: identity.to_owned(), tracklets: tracklets.to_vec() };
        self.put(derived_id(&[ERASURE, identity]), &record).await
    }

    /// Erasures begun and not finished: the identity and its tracklets (camera, track).
    pub async fn erasures(&self) -> IdentityResult<Vec<(String, Vec<(String, String)>)>> {
        Ok(self
            .all_of(ERASURE)
            .await?
            .into_iter()
            .filter_map(|r| match r {
                CatalogRecord::Erasure { identity, tracklets } => Some((identity, tracklets)),
                _ => None,
            })
            .collect())
    }

    pub async fn remove_erasure(&self, identity: &str) -> IdentityResult<()> {
        Ok(self.store.delete(&self.collection, &of_kind(ERASURE).keyword(field::IDENTITY, identity)).await?)
    }

    /// Records that `from` was merged into `into`, before its sightings move: an `Observe` that
    /// chose `from` and writes after the move follows this record to `into`.
    pub async fn put_merged(&self, from: &str, into: &str, at_ms: i64) -> IdentityResult<()> {
        let record = CatalogRecord::Merged { identity: from.to_owned(), into: into.to_owned(), at: at_ms };
        self.put(derived_id(&[MERGED, from]), &record).await
    }

    /// Where `identity` lives now: itself, or the end of the chain of merges it went through.
    pub async fn resolve(&self, identity: &str) -> IdentityResult<String> {
        let mut current = identity.to_owned();
        // A chain is short (each link is a merge); the bound only guards against a cycle.
        for _ in 0..16 {
            let filter = of_kind(MERGED).keyword(field::IDENTITY, &current);
            let (records, _) = self.store.scroll(&self.collection, &filter, 1, None).await?;
            match records.first().and_then(|r| CatalogRecord::read(&r.payload)) {
                Some(CatalogRecord::Merged { into, .. }) if into != current => current = into,
                _ => break,
            }
        }
        Ok(current)
    }

    /// Removes merge records older than `before_ms`: no `Observe` that started before a merge is
    /// still running by then.
    pub async fn remove_merged_before(&self, before_ms: i64) -> IdentityResult<()> {
        Ok(self.store.delete(&self.collection, &of_kind(MERGED).range(key::AT, None, Some(before_ms))).await?)
    }

    pub async fn put_model(&self, m: &ModelEntry) -> IdentityResult<()> {
        let record = CatalogRecord::Model {
            model_id: m.key.id.clone(),
            version: m.key.version.clone(),
            dimension: m.key.dimension,
            collection: m.collection.clone(),
            match_threshold: m.match_threshold,
            merge_threshold: m.merge_threshold,
        };
        self.put(derived_id(&[MODEL, &m.collection]), &record).await
    }

    /// Forgets a model's gallery (its collection is gone); the next use of that model builds it
    /// again.
    pub async fn remove_model(&self, collection: &str) -> IdentityResult<()> {
        Ok(self.store.delete(&self.collection, &of_kind(MODEL).keyword(key::COLLECTION, collection)).await?)
    }

    pub async fn models(&self) -> IdentityResult<Vec<ModelEntry>> {
        Ok(self
            .all_of(MODEL)
            .await?
            .into_iter()
            .filter_map(|r| match r {
                CatalogRecord::Model { model_id, version, dimension, collection, match_threshold, merge_threshold } => {
                    Some(ModelEntry {
                        key: ModelKey { id: model_id, version, dimension },
                        collection,
                        match_threshold,
                        merge_threshold,
                    })
                }
                _ => None,
            })
            .collect())
    }

    pub async fn put_feedback(&self, f: &FeedbackPair) -> IdentityResult<()> {
        let label = if f.same { Label::Same } else { Label::Different };
        let record = CatalogRecord::Feedback {
            label,
            a: f.a.clone(),
            b: f.b.clone(),
            camera: f.camera.clone(),
            track: f.track.clone(),
            at: f.at_ms,
        };
        self.put(derived_id(&[FEEDBACK, label.name(), &f.a, &f.b, &f.camera, &f.track]), &record).await
    }

    pub async fn feedback(&self) -> IdentityResult<Vec<FeedbackPair>> {
        Ok(self
            .all_of(FEEDBACK)
            .await?
            .into_iter()
            .filter_map(|r| match r {
                CatalogRecord::Feedback { label, a, b, camera, track, at } => {
                    Some(FeedbackPair { same: label == Label::Same, a, b, camera, track, at_ms: at })
                }
                _ => None,
            })
            .collect())
    }

    /// Removes the feedback pairs that name an identity (part of erasing it). Returns how many.
    pub async fn remove_feedback_of(&self, identity: &str) -> IdentityResult<u64> {
        let mut removed = 0;
        for side in [key::A, key::B] {
            let filter = of_kind(FEEDBACK).keyword(side, identity);
            removed += self.store.count(&self.collection, &filter).await?;
            self.store.delete(&self.collection, &filter).await?;
        }
        Ok(removed)
    }

    /// Points every feedback pair that names `from` at `to` (after a merge).
    pub async fn rename_in_feedback(&self, from: &str, to: &str) -> IdentityResult<()> {
        for side in [key::A, key::B] {
            let filter = of_kind(FEEDBACK).keyword(side, from);
            self.store.set_payload(&self.collection, &filter, fields([(side, json!(to))])).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_the_stored_field_names_and_older_records_still_read() {
        let merged = CatalogRecord::Merged { identity: "a".into(), into: "b".into(), at: 7 };
        assert_eq!(
            serde_json::to_value(&merged).unwrap(),
            json!({ "kind": MERGED, "identity": "a", "into": "b", key::AT: 7 })
        );
        let pair = CatalogRecord::Feedback {
            label: Label::Different,
            a: "a".into(),
            b: "b".into(),
            camera: "west".into(),
            track: "9".into(),
            at: 3,
        };
        let stored = serde_json::to_value(&pair).unwrap();
        assert_eq!(
            stored,
            json!({ "kind": FEEDBACK, "label": "different", key::A: "a", key::B: "b", "camera": "west", "track": "9", "at": 3 })
        );
        assert_eq!(CatalogRecord::read(&object(stored)), Some(pair));
        for label in [Label::Same, Label::Different] {
            assert_eq!(json!(label), json!(label.name()), "the point id names the label as it is stored");
        }
        // An identity written before names were sealed, and a model record without a dimension.
        let old = object(
            json!({ "kind": IDENTITY, "identity": "x", "name": "Ada", "enrolled": true, "created": 1, "last_seen": 2 }),
        );
        let Some(CatalogRecord::Identity(r)) = CatalogRecord::read(&old) else { panic!("not an identity") };
        assert_eq!((r.name.as_deref(), r.name_sealed, r.enrolled, r.last_seen), (Some("Ada"), None, true, 2));
        let model = object(json!({ "kind": MODEL, "model_id": "m", "version": "v", "collection": "c" }));
        assert!(
            matches!(CatalogRecord::read(&model), Some(CatalogRecord::Model { dimension: 0, match_threshold, .. }) if match_threshold == 0.5)
        );
        assert_eq!(CatalogRecord::read(&object(json!({ "kind": "sighting" }))), None);
    }
}
