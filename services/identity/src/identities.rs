//! The domain core: identify, enroll, observe (cross-camera association), sightings, forget,
//! feedback, the retention sweep and the re-embedding of the gallery when the model changes.
//! Handlers in [`crate::service`] only convert to and from these calls. This file holds the
//! values that cross the seam, the [`Identities`] state and the checks every operation shares;
//! each operation has its own file in `identities/`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reid_proto::v1 as pb;
use reid_proto::v1::Image;
use reid_proto::v1::ingester_service_client::IngesterServiceClient;
use reid_vector_store::{CollectionSpec, FieldType, Filter, Hit, Point, SearchQuery, VectorStore};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::association::{self, Match, Verdict};
use crate::catalog::{Catalog, FeedbackPair, IdentityEntry, ModelEntry, active_alias, derived_id};
use crate::config::IdentityConfig;
use crate::crops::{CropStore, ENROLL_PREFIX, SIGHTING_PREFIX, is_plain_id};
use crate::embedder::EmbedderClient;
use crate::error::{IdentityError, IdentityResult};
use crate::events::{EventKind, EventLog, MergeCause};
use crate::metrics::IdentityMetrics;
use crate::model::ModelKey;
use crate::payload::{ENROLLED, EnrolledPayload, GalleryPoint, SIGHTING, SightingPayload, field, fields};

mod enroll;
mod feedback;
mod forget;
mod galleries;
mod identify;
mod merging;
mod observe;
mod replicas;
mod retention;
mod sightings;

pub use galleries::FOLLOW_INTERVAL;
use replicas::{Seen, Written};

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The vectors of one model version, and the threshold its card calibrated.
#[derive(Debug, Clone, PartialEq)]
pub struct Gallery {
    pub model: ModelKey,
    pub collection: String,
    pub match_threshold: f32,
    /// The merge pass threshold its card gave, if any.
    pub merge_threshold: Option<f32>,
}

impl From<&Gallery> for ModelEntry {
    fn from(g: &Gallery) -> Self {
        ModelEntry {
            key: g.model.clone(),
            collection: g.collection.clone(),
            match_threshold: g.match_threshold,
            merge_threshold: g.merge_threshold,
        }
    }
}

impl From<ModelEntry> for Gallery {
    fn from(m: ModelEntry) -> Self {
        Gallery {
            model: m.key,
            collection: m.collection,
            match_threshold: m.match_threshold,
            merge_threshold: m.merge_threshold,
        }
    }
}

/// A probe: an image to embed, or an embedding that names its model.
#[derive(Debug, Clone)]
pub enum Probe {
    Image(Image),
    Embedding(Vec<f32>, ModelKey),
}

#[derive(Debug, Clone, Default)]
pub struct IdentifyOptions {
    pub top_k: usize,
    pub cameras: Vec<String>,
    /// Overrides the configured and calibrated threshold when set.
    pub threshold: Option<f32>,
    /// Candidates in k-reciprocal re-ranked order ([`association::rerank_identities`]).
    pub rerank: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub identity: String,
    pub name: String,
    pub score: f32,
    pub camera: Option<String>,
    pub seen_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Identification {
    pub verdict: Verdict,
    pub candidates: Vec<Candidate>,
    pub model: ModelKey,
}

#[derive(Debug, Clone, Default)]
pub struct Enrollment {
    pub identity: Option<String>,
    pub name: String,
    pub external_id: String,
    pub images: Vec<Image>,
}

#[derive(Debug, Clone, Default)]
pub struct TrackletCrop {
    pub image: Option<Image>,
    pub embedding: Option<Vec<f32>>,
    pub quality: f32,
    pub bbox: Option<[f32; 4]>,
    pub at_ms: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct Tracklet {
    pub camera: String,
    pub track: String,
    pub crops: Vec<TrackletCrop>,
    /// Required when the crops carry embeddings.
    pub model: Option<ModelKey>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub identity: String,
    pub created: bool,
    pub score: f32,
    pub margin: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sighting {
    pub camera: String,
    pub track: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub bbox: Option<[f32; 4]>,
    pub score: f32,
    pub model_version: String,
    pub thumbnail: Option<String>,
    /// The identity a merge moved this sighting from.
    pub merged_from: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct SightingQuery {
    pub identity: String,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub cameras: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IdentitySummary {
    pub entry: IdentityEntry,
    pub sightings: u64,
    pub cameras: Vec<String>,
    pub first_seen_ms: Option<i64>,
    pub last_seen_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Erasure {
    pub vectors: u64,
    pub crops: u64,
    /// The tracklets (camera, track) that were the identity's sightings.
    pub tracklets: Vec<(String, String)>,
    /// Whether the configured ingester confirmed erasing their exports.
    pub exports_erased: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedbackKind {
    Confirm,
    Reject,
    Merge,
    Split,
}

#[derive(Debug, Clone)]
pub struct Feedback {
    pub kind: FeedbackKind,
    pub a: String,
    pub b: String,
    pub camera: String,
    pub track: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SweepReport {
    pub sightings: u64,
    pub identities: u64,
}

/// Re-embedding in progress: model version, crops done, crops in all.
#[derive(Debug, Clone, Default)]
struct Progress {
    version: String,
    done: usize,
    total: usize,
}

pub struct Identities {
    config: IdentityConfig,
    store: Arc<dyn VectorStore>,
    catalog: Catalog,
    crops: CropStore,
    embedder: Option<Arc<dyn EmbedderClient>>,
    /// The ingester whose exports erasures cover.
    ingester: Option<IngesterServiceClient<reid_server::Channel>>,
    galleries: RwLock<HashMap<(String, String), Gallery>>,
    /// Held while a gallery is created and re-embedded, one model version at a time.
    registering: tokio::sync::Mutex<()>,
    progress: std::sync::Mutex<Option<Progress>>,
    /// Held from an `Observe`'s search to its write, so that concurrent tracklets of one new person
    /// cannot each start an identity.
    associating: tokio::sync::Mutex<()>,
    /// What happened, for `Watch` and the webhook.
    events: Arc<EventLog>,
    metrics: IdentityMetrics,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities").field("backend", &self.store.backend()).finish_non_exhaustive()
    }
}

fn as_match(hit: &Hit) -> Option<Match> {
    let (identity, seen) = match GalleryPoint::from_payload(&hit.payload)? {
        GalleryPoint::Sighting(s) => (s.identity, Some((s.camera, s.start_ms, s.end_ms))),
        GalleryPoint::Enrolled(e) => (e.identity, None),
    };
    Some(Match {
        identity,
        score: hit.score,
        camera: seen.as_ref().map(|(camera, ..)| camera.clone()),
        start_ms: seen.as_ref().map(|s| s.1),
        end_ms: seen.as_ref().map(|s| s.2),
    })
}

fn enrolled_point(identity: &str, crop: &str, vector: Vec<f32>) -> Point {
    let payload = GalleryPoint::Enrolled(EnrolledPayload {
        identity: identity.to_owned(),
        enrolled: true,
        crop: Some(crop.to_owned()),
        merged_from: None,
    })
    .to_payload();
    Point { id: derived_id(&[ENROLLED, identity, crop]), vector, payload }
}

/// Longest name, external id, camera or track id a request may carry: a 48 MB name would make
/// every later listing of identities fail for everyone.
pub const MAX_TEXT_BYTES: usize = 256;
/// Most candidates an `Identify` returns per probe.
pub const MAX_TOP_K: usize = 100;
/// Most cameras a filter may name.
pub const MAX_CAMERAS_IN_FILTER: usize = 256;

/// Refuses a text field over [`MAX_TEXT_BYTES`], without echoing it.
fn check_text(field: &str, value: &str) -> IdentityResult<()> {
    if value.len() > MAX_TEXT_BYTES {
        return Err(IdentityError::invalid(format!("{field} has {} bytes; at most {MAX_TEXT_BYTES}", value.len())));
    }
    Ok(())
}

fn check_cameras(cameras: &[String]) -> IdentityResult<()> {
    if cameras.len() > MAX_CAMERAS_IN_FILTER {
        return Err(IdentityError::invalid(format!(
            "the filter names {} cameras; at most {MAX_CAMERAS_IN_FILTER}",
            cameras.len()
        )));
    }
    cameras.iter().try_for_each(|c| check_text("camera_id", c))
}

/// A `Watch` filter names at most [`MAX_CAMERAS_IN_FILTER`] cameras and as many identities, each
/// a reid id.
pub fn check_watch_filter(identities: &[String], cameras: &[String]) -> IdentityResult<()> {
    check_cameras(cameras)?;
    if identities.len() > MAX_CAMERAS_IN_FILTER {
        return Err(IdentityError::invalid(format!(
            "the filter names {} identities; at most {MAX_CAMERAS_IN_FILTER}",
            identities.len()
        )));
    }
    identities.iter().try_for_each(|i| check_identity_id(i))
}

fn check_model(model: &ModelKey) -> IdentityResult<()> {
    check_text("model id", &model.id)?;
    check_text("model version", &model.version)
}

fn check_identity_id(id: &str) -> IdentityResult<()> {
    if is_plain_id(id) {
        Ok(())
    } else {
        Err(IdentityError::invalid(format!("identity id {:?} is not a reid id", reid_server::truncated(id, 64))))
    }
}

/// Refuses a vector that would poison the gallery, before anything is written.
fn check_embedding(index: usize, v: &[f32], model: &ModelKey) -> IdentityResult<()> {
    if v.is_empty() {
        return Err(IdentityError::invalid(format!("embedding {index} is empty")));
    }
    if model.dimension != 0 && v.len() != model.dimension {
        return Err(IdentityError::WrongDimension {
            index,
            got: v.len(),
            expected: model.dimension,
            model: model.to_string(),
        });
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(IdentityError::invalid(format!("embedding {index} has a NaN or infinite component")));
    }
    if v.iter().all(|x| *x == 0.0) {
        return Err(IdentityError::invalid(format!("embedding {index} is the zero vector")));
    }
    Ok(())
}

impl Identities {
    /// Opens the catalog and the galleries it lists.
    pub async fn open(
        config: IdentityConfig,
        store: Arc<dyn VectorStore>,
        embedder: Option<Arc<dyn EmbedderClient>>,
        metrics: IdentityMetrics,
    ) -> IdentityResult<Self> {
        let keys = Arc::new(crate::personal::PersonalKeys::open(config.data_dir.join("keys"))?);
        let config_events_capacity = config.events.capacity;
        let catalog = Catalog::open(store.clone(), keys, &config.namespace).await?;
        let crops = CropStore::open(config.data_dir.join("crops"))?;
        let galleries = catalog
            .models()
            .await?
            .into_iter()
            .map(|m| ((m.key.id.clone(), m.key.version.clone()), Gallery::from(m)))
            .collect();
        let ingester = match &config.ingester_url {
            Some(url) => Some(IngesterServiceClient::new(
                config
                    .security
                    .connect_lazy(url, |e| e.connect_timeout(Duration::from_secs(5)).timeout(Duration::from_secs(30)))
                    .map_err(|e| IdentityError::invalid(format!("ingester url: {e:#}")))?,
            )),
            None => None,
        };
        let identities = Self {
            config,
            store,
            catalog,
            crops,
            embedder,
            ingester,
            galleries: RwLock::new(galleries),
            registering: Default::default(),
            progress: Default::default(),
            associating: Default::default(),
            events: Arc::new(EventLog::new(config_events_capacity)),
            metrics,
        };
        identities.drop_vanished_galleries().await?;
        // Erasures a crash cut short are finished before anything else is served.
        for (identity, tracklets) in identities.catalog.erasures().await? {
            tracing::info!(%identity, "finishing an erasure begun before the restart");
            identities.erase(&identity).await?;
            identities.erase_exports(&identity, &tracklets).await?;
        }
        Ok(identities)
    }

    /// Vectors stored under `identity`, in every gallery (enrolled images and sightings).
    async fn vectors_of(&self, identity: &str) -> IdentityResult<u64> {
        let mut n = 0;
        for g in self.galleries() {
            n += self.store.count(&g.collection, &Filter::all().keyword(field::IDENTITY, identity)).await?;
        }
        Ok(n)
    }

    /// Refuses a request with more items (images, probes, crops) than `max_items_per_request`.
    fn check_items(&self, what: &str, n: usize) -> IdentityResult<()> {
        let limit = self.config.max_items_per_request;
        if n > limit {
            return Err(IdentityError::invalid(format!("{n} {what}, the limit is {limit}")));
        }
        Ok(())
    }

    pub fn config(&self) -> &IdentityConfig {
        &self.config
    }

    pub fn metrics(&self) -> &IdentityMetrics {
        &self.metrics
    }

    /// The event log `Watch` and the webhook read.
    pub fn events(&self) -> &Arc<EventLog> {
        &self.events
    }

    fn publish(&self, kind: EventKind) {
        self.metrics.events.with_label_values(&[kind.name()]).inc();
        self.events.publish(now_ms(), kind);
    }

    pub fn store(&self) -> &Arc<dyn VectorStore> {
        &self.store
    }

    pub fn crops(&self) -> &CropStore {
        &self.crops
    }

    /// Every gallery built so far, one per model version.
    pub fn galleries(&self) -> Vec<Gallery> {
        let mut all: Vec<Gallery> =
            self.galleries.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        all.sort_by(|a, b| a.collection.cmp(&b.collection));
        all
    }

    fn cached(&self, model: &ModelKey) -> Option<Gallery> {
        self.galleries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(model.id.clone(), model.version.clone()))
            .cloned()
    }

    fn threshold(&self, gallery: &Gallery, requested: Option<f32>) -> f32 {
        requested.or(self.config.association.threshold).unwrap_or(gallery.match_threshold)
    }

    fn embedder(&self) -> IdentityResult<&Arc<dyn EmbedderClient>> {
        self.embedder.as_ref().ok_or(IdentityError::NoEmbedder)
    }
}
