//! The domain core: identify, enroll, observe (cross-camera association), sightings, forget,
//! feedback, the retention sweep and the re-embedding of the gallery when the model changes.
//! Handlers in [`crate::service`] only convert to and from these calls.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reid_proto::v1 as pb;
use reid_proto::v1::Image;
use reid_proto::v1::ingester_service_client::IngesterServiceClient;
use reid_vector_store::{CollectionSpec, FieldType, Filter, Hit, Payload, Point, SearchQuery, VectorStore};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::association::{self, Match, Verdict};
use crate::catalog::{Catalog, FeedbackPair, IdentityEntry, ModelEntry, active_alias, derived_id};
use crate::config::IdentityConfig;
use crate::crops::{CropStore, ENROLL_PREFIX, SIGHTING_PREFIX, is_plain_id};
use crate::embedder::EmbedderClient;
use crate::error::{IdentityError, IdentityResult};
use crate::metrics::IdentityMetrics;
use crate::model::ModelKey;
use crate::payload::{float_of, int_of, object, str_of};

mod replicas;

use replicas::{Seen, Written};

/// Threshold for a model whose card nobody told us (embeddings-only deployments without one).
const FALLBACK_THRESHOLD: f32 = 0.5;
/// Images per embedder call while re-embedding a gallery.
const MIGRATION_CHUNK: usize = 32;

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The vectors of one model version, and the threshold its card calibrated.
#[derive(Debug, Clone, PartialEq)]
pub struct Gallery {
    pub model: ModelKey,
    pub collection: String,
    pub match_threshold: f32,
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
    metrics: IdentityMetrics,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities").field("backend", &self.store.backend()).finish_non_exhaustive()
    }
}

fn bbox_of(p: &Payload) -> Option<[f32; 4]> {
    let v: Vec<f32> = p.get("box")?.as_array()?.iter().filter_map(|x| x.as_f64().map(|x| x as f32)).collect();
    v.try_into().ok()
}

fn as_match(hit: &Hit) -> Option<Match> {
    Some(Match {
        identity: str_of(&hit.payload, "identity")?,
        score: hit.score,
        camera: str_of(&hit.payload, "camera"),
        start_ms: int_of(&hit.payload, "time"),
        end_ms: int_of(&hit.payload, "end"),
    })
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

fn gallery_spec(g: &Gallery, index: reid_vector_store::IndexParams) -> CollectionSpec {
    CollectionSpec::new(&g.collection, g.model.dimension)
        .index_params(index)
        .index("kind", FieldType::Keyword)
        .index("identity", FieldType::Keyword)
        .index("camera", FieldType::Keyword)
        .index("track", FieldType::Keyword)
        .index("time", FieldType::Integer)
        .index("end", FieldType::Integer)
        .index("enrolled", FieldType::Bool)
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
        let catalog = Catalog::open(store.clone(), keys, &config.namespace).await?;
        let crops = CropStore::open(config.data_dir.join("crops"))?;
        let existing: BTreeSet<String> = store.list_collections().await?.into_iter().collect();
        let mut galleries = HashMap::new();
        for m in catalog.models().await? {
            if !existing.contains(&m.collection) {
                // Deleted behind this service's back (by hand, or a tool that shared the store).
                // Its vectors are gone; enrolled identities are rebuilt from their stored crops
                // the next time that model is served, as for a new model version.
                tracing::warn!(model = %m.key, collection = %m.collection, "the gallery's collection is gone; forgetting it (enrolled crops are re-embedded when this model is next served)");
                catalog.remove_model(&m.collection).await?;
                continue;
            }
            let key = (m.key.id.clone(), m.key.version.clone());
            galleries
                .insert(key, Gallery { model: m.key, collection: m.collection, match_threshold: m.match_threshold });
        }
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
            metrics,
        };
        // Erasures a crash cut short are finished before anything else is served.
        for (identity, tracklets) in identities.catalog.erasures().await? {
            tracing::info!(%identity, "finishing an erasure begun before the restart");
            identities.erase(&identity).await?;
            identities.erase_exports(&identity, &tracklets).await?;
        }
        Ok(identities)
    }

    pub fn config(&self) -> &IdentityConfig {
        &self.config
    }

    pub fn metrics(&self) -> &IdentityMetrics {
        &self.metrics
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

    /// Embeds images in one embedder call and returns the gallery of the model that did it.
    async fn embed(&self, images: Vec<Image>) -> IdentityResult<(Vec<Vec<f32>>, Gallery)> {
        let (vectors, model) = self.embedder()?.embed(images).await?;
        let gallery = self.gallery_for(&model).await?;
        for (i, v) in vectors.iter().enumerate() {
            check_embedding(i, v, &gallery.model)?;
        }
        Ok((vectors, gallery))
    }

    /// The gallery for embeddings a client computed: one built already, or that of the model the
    /// embedder serves now (or of any model when no embedder is configured: the client decides).
    ///
    /// A request never creates a gallery (a collection, and the active alias moved to it) for a
    /// model only it names: only the model the configured embedder serves gets one built on demand.
    /// Without an embedder, galleries come from [`Identities::import`] alone.
    async fn gallery_for_embeddings(&self, model: &ModelKey) -> IdentityResult<Gallery> {
        check_model(model)?;
        if let Some(g) = self.cached(model) {
            return Ok(g);
        }
        let served = match &self.embedder {
            Some(embedder) => embedder.model().await.ok().is_some_and(|d| d.key.same_model(model)),
            None => false,
        };
        if served {
            return self.gallery_for(model).await;
        }
        // Another replica may have built it.
        if let Some(m) = self.catalog.models().await?.into_iter().find(|m| m.key.same_model(model)) {
            let g = Gallery { model: m.key, collection: m.collection, match_threshold: m.match_threshold };
            self.remember(&g);
            return Ok(g);
        }
        Err(IdentityError::UnknownModel { id: model.id.clone(), version: model.version.clone() })
    }

    /// The gallery of `model`, created on first use: the enrolled identities' stored crops are
    /// re-embedded into it, then the active alias moves to it in one step. Galleries of earlier
    /// versions keep answering requests that carry their embeddings while this runs.
    async fn gallery_for(&self, model: &ModelKey) -> IdentityResult<Gallery> {
        if let Some(g) = self.cached(model) {
            return Ok(g);
        }
        if model.id.is_empty() || model.version.is_empty() || model.dimension == 0 {
            return Err(IdentityError::invalid(format!("model {model} needs an id, a version and a dimension")));
        }
        let _registering = match tokio::time::timeout(self.config.migration_wait, self.registering.lock()).await {
            Ok(guard) => guard,
            Err(_) => {
                let p = self.progress.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_default();
                return Err(IdentityError::Migrating { version: p.version, done: p.done, total: p.total });
            }
        };
        if let Some(g) = self.cached(model) {
            return Ok(g);
        }
        // Another replica may have built it.
        if let Some(m) = self.catalog.models().await?.into_iter().find(|m| m.key.same_model(model)) {
            let g = Gallery { model: m.key, collection: m.collection, match_threshold: m.match_threshold };
            self.remember(&g);
            return Ok(g);
        }
        let match_threshold = match &self.embedder {
            Some(e) => e.model().await.ok().filter(|d| d.key.same_model(model)).map(|d| d.match_threshold),
            None => None,
        }
        .filter(|t| *t > 0.0)
        .unwrap_or(FALLBACK_THRESHOLD);
        let gallery =
            Gallery { model: model.clone(), collection: model.collection(&self.config.namespace), match_threshold };
        tracing::info!(model = %model, collection = %gallery.collection, "building the gallery of a new model version");
        self.store.ensure_collection(&gallery_spec(&gallery, self.config.index)).await?;
        let started = std::time::Instant::now();
        let result = self.reembed_enrolled(&gallery).await;
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let reembedded = result?;
        self.store.optimize(&gallery.collection).await?;
        self.catalog
            .put_model(&ModelEntry { key: model.clone(), collection: gallery.collection.clone(), match_threshold })
            .await?;
        self.store.set_alias(&active_alias(&self.config.namespace), &gallery.collection).await?;
        self.metrics.migrations.inc();
        tracing::info!(model = %model, reembedded, seconds = started.elapsed().as_secs_f32(), "gallery ready; active alias switched");
        self.remember(&gallery);
        Ok(gallery)
    }

    fn remember(&self, g: &Gallery) {
        self.galleries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((g.model.id.clone(), g.model.version.clone()), g.clone());
    }

    async fn reembed_enrolled(&self, gallery: &Gallery) -> IdentityResult<usize> {
        let enrolled = self.catalog.enrolled().await?;
        let work: Vec<(String, String, Image)> = enrolled
            .iter()
            .flat_map(|e| {
                self.crops
                    .enrollment_images(&e.identity)
                    .into_iter()
                    .map(|(name, image)| (e.identity.clone(), name, image))
            })
            .collect();
        let total = work.len();
        let set_progress = |done| {
            *self.progress.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(Progress { version: gallery.model.version.clone(), done, total });
        };
        set_progress(0);
        let mut done = 0;
        for chunk in work.chunks(MIGRATION_CHUNK) {
            let images = chunk.iter().map(|(_, _, image)| image.clone()).collect();
            let (vectors, model) = self.embedder()?.embed(images).await?;
            if !model.same_model(&gallery.model) {
                return Err(IdentityError::Embedder(tonic::Status::aborted(format!(
                    "the embedder switched to {model} while re-embedding for {}; will retry on the next request",
                    gallery.model
                ))));
            }
            let points = chunk
                .iter()
                .zip(vectors)
                .map(|((identity, name, _), vector)| enrolled_point(identity, name, vector))
                .collect();
            self.store.upsert(&gallery.collection, points).await?;
            done += chunk.len();
            set_progress(done);
        }
        Ok(total)
    }

    /// Imports embeddings computed elsewhere (a gallery moved from another system, or a
    /// benchmark's synthetic one) as enrolled identities of `model`, one identity per distinct id.
    /// Imported vectors have no stored crop, so they cannot follow a model change.
    pub async fn import(&self, model: &ModelKey, rows: Vec<(String, Vec<f32>)>) -> IdentityResult<usize> {
        let gallery = self.gallery_for(model).await?;
        for (i, (identity, v)) in rows.iter().enumerate() {
            check_identity_id(identity)?;
            check_embedding(i, v, &gallery.model)?;
        }
        let now = now_ms();
        let distinct: BTreeSet<String> = rows.iter().map(|(identity, _)| identity.clone()).collect();
        let mut seen: BTreeSet<String> = self
            .catalog
            .identities_named(distinct.into_iter().collect())
            .await?
            .into_iter()
            .map(|e| e.identity)
            .collect();
        let mut entries = Vec::new();
        let mut points = Vec::with_capacity(rows.len());
        for (i, (identity, vector)) in rows.into_iter().enumerate() {
            if seen.insert(identity.clone()) {
                entries.push(IdentityEntry {
                    identity: identity.clone(),
                    name: String::new(),
                    external_id: String::new(),
                    enrolled: true,
                    created_ms: now,
                    last_seen_ms: now,
                });
            }
            let payload = object(json!({ "kind": "enrolled", "identity": identity, "enrolled": true }));
            points.push(Point {
                id: derived_id(&["imported", &identity, &i.to_string(), &now.to_string()]),
                vector,
                payload,
            });
        }
        let n = points.len();
        self.store.upsert(&gallery.collection, points).await?;
        self.catalog.put_identities(&entries).await?;
        Ok(n)
    }

    pub async fn identify(&self, probes: Vec<Probe>, options: IdentifyOptions) -> IdentityResult<Vec<Identification>> {
        if probes.is_empty() {
            return Err(IdentityError::invalid("no probes"));
        }
        if probes.len() > self.config.max_items_per_request {
            return Err(IdentityError::invalid(format!(
                "{} probes, the limit is {}",
                probes.len(),
                self.config.max_items_per_request
            )));
        }
        if let Some(t) = options.threshold
            && !(-1.0..=1.0).contains(&t)
        {
            return Err(IdentityError::invalid(format!("threshold {t} is not a cosine similarity")));
        }
        if options.top_k > MAX_TOP_K {
            return Err(IdentityError::invalid(format!("top_k {} is over the limit of {MAX_TOP_K}", options.top_k)));
        }
        check_cameras(&options.cameras)?;
        // Validate every embedding and resolve every gallery before searching anything.
        let mut resolved: Vec<Option<(Vec<f32>, Gallery)>> = vec![None; probes.len()];
        let mut images = Vec::new();
        for (i, probe) in probes.into_iter().enumerate() {
            match probe {
                Probe::Image(image) => images.push((i, image)),
                Probe::Embedding(vector, model) => {
                    let gallery = self.gallery_for_embeddings(&model).await?;
                    check_embedding(i, &vector, &gallery.model)?;
                    resolved[i] = Some((vector, gallery));
                }
            }
        }
        if !images.is_empty() {
            let (slots, images): (Vec<usize>, Vec<Image>) = images.into_iter().unzip();
            let (vectors, gallery) = self.embed(images).await?;
            for (slot, vector) in slots.into_iter().zip(vectors) {
                resolved[slot] = Some((vector, gallery.clone()));
            }
        }
        let top_k = if options.top_k == 0 { self.config.association.default_top_k } else { options.top_k };
        let mut out = Vec::with_capacity(resolved.len());
        for (vector, gallery) in resolved.into_iter().flatten() {
            let mut filter = Filter::all();
            if !options.cameras.is_empty() {
                filter = filter.keyword_in("camera", options.cameras.clone());
            }
            let limit = self.config.association.search_limit.max(top_k);
            let query = SearchQuery { hnsw_ef: self.config.association.hnsw_ef, ..SearchQuery::new(vector, limit) };
            let hits = self.store.search(&gallery.collection, &query.filter(filter)).await?;
            let ranked = association::rank_identities(&hits.iter().filter_map(as_match).collect::<Vec<_>>());
            let verdict = association::decide(
                &ranked,
                self.threshold(&gallery, options.threshold),
                self.config.association.min_margin,
            );
            let names: HashMap<String, String> = self
                .catalog
                .identities_named(ranked.iter().take(top_k).map(|m| m.identity.clone()).collect())
                .await?
                .into_iter()
                .map(|e| (e.identity, e.name))
                .collect();
            let candidates = ranked
                .into_iter()
                .take(top_k)
                .map(|m| Candidate {
                    name: names.get(&m.identity).cloned().unwrap_or_default(),
                    identity: m.identity,
                    score: m.score,
                    camera: m.camera,
                    seen_ms: m.end_ms,
                })
                .collect();
            self.metrics
                .identify_decisions
                .with_label_values(&[if matches!(verdict, Verdict::Known { .. }) { "known" } else { "unknown" }])
                .inc();
            out.push(Identification { verdict, candidates, model: gallery.model.clone() });
        }
        Ok(out)
    }

    pub async fn enroll(&self, request: Enrollment) -> IdentityResult<(String, usize, ModelKey)> {
        if request.images.is_empty() {
            return Err(IdentityError::invalid("enroll needs at least one image"));
        }
        if request.images.len() > self.config.max_items_per_request {
            return Err(IdentityError::invalid(format!(
                "{} images, the limit is {}",
                request.images.len(),
                self.config.max_items_per_request
            )));
        }
        check_text("name", &request.name)?;
        check_text("external_id", &request.external_id)?;
        let existing = match &request.identity {
            Some(id) => {
                check_identity_id(id)?;
                Some(self.catalog.identity(id).await?.ok_or_else(|| IdentityError::IdentityNotFound(id.clone()))?)
            }
            None => None,
        };
        // Embed first: a corrupt image fails the request before anything is stored.
        let (vectors, gallery) = self.embed(request.images.clone()).await?;
        let identity = match (&existing, request.external_id.as_str()) {
            (Some(e), _) => e.identity.clone(),
            (None, "") => uuid::Uuid::new_v4().to_string(),
            (None, external) => derived_id(&["external", external]).to_string(),
        };
        let mut points = Vec::with_capacity(vectors.len());
        for (image, vector) in request.images.iter().zip(vectors) {
            let digest = Sha256::digest(prost::Message::encode_to_vec(image));
            let stem: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
            let name = self
                .crops
                .put(&identity, &format!("{ENROLL_PREFIX}{stem}"), image)?
                .ok_or_else(|| IdentityError::invalid("an image has no data"))?;
            points.push(enrolled_point(&identity, &name, vector));
        }
        let stored = points.len();
        self.store.upsert(&gallery.collection, points).await?;
        let now = now_ms();
        let previous = match existing {
            Some(e) => Some(e),
            None => self.catalog.identity(&identity).await?,
        };
        let was_enrolled = previous.as_ref().is_some_and(|e| e.enrolled);
        let entry = IdentityEntry {
            identity: identity.clone(),
            name: if request.name.is_empty() {
                previous.as_ref().map(|e| e.name.clone()).unwrap_or_default()
            } else {
                request.name
            },
            external_id: if request.external_id.is_empty() {
                previous.as_ref().map(|e| e.external_id.clone()).unwrap_or_default()
            } else {
                request.external_id
            },
            enrolled: true,
            created_ms: previous.as_ref().map_or(now, |e| e.created_ms),
            last_seen_ms: previous.as_ref().map_or(now, |e| e.last_seen_ms),
        };
        self.catalog.put_identity(&entry).await?;
        if !was_enrolled {
            // Its sightings are no longer anonymous: the TTL stops applying to them.
            for g in self.galleries() {
                self.store
                    .set_payload(
                        &g.collection,
                        &Filter::all().keyword("identity", &identity),
                        object(json!({ "enrolled": true })),
                    )
                    .await?;
            }
        }
        self.metrics.enrolled_images.inc_by(stored as u64);
        Ok((identity, stored, gallery.model))
    }

    pub async fn observe(&self, tracklet: Tracklet) -> IdentityResult<Observation> {
        let Tracklet { camera, track, crops, model } = tracklet;
        if camera.is_empty() || track.is_empty() {
            return Err(IdentityError::invalid("observe needs a camera_id and a track_id"));
        }
        check_text("camera_id", &camera)?;
        check_text("track_id", &track)?;
        if crops.is_empty() {
            return Err(IdentityError::invalid("a tracklet needs at least one crop"));
        }
        if crops.len() > self.config.max_items_per_request {
            return Err(IdentityError::invalid(format!(
                "{} crops, the limit is {}",
                crops.len(),
                self.config.max_items_per_request
            )));
        }
        let with_images = crops.iter().filter(|c| c.image.is_some()).count();
        let with_embeddings = crops.iter().filter(|c| c.embedding.is_some()).count();
        let (vectors, gallery) = if with_embeddings == crops.len() {
            let model =
                model.ok_or_else(|| IdentityError::invalid("crops carry embeddings but the request names no model"))?;
            let gallery = self.gallery_for_embeddings(&model).await?;
            let vectors: Vec<Vec<f32>> = crops.iter().map(|c| c.embedding.clone().unwrap_or_default()).collect();
            for (i, v) in vectors.iter().enumerate() {
                check_embedding(i, v, &gallery.model)?;
            }
            (vectors, gallery)
        } else if with_images == crops.len() {
            self.embed(crops.iter().map(|c| c.image.clone().unwrap_or_default()).collect()).await?
        } else {
            return Err(IdentityError::invalid("every crop must carry an image, or every crop an embedding"));
        };
        let qualities: Vec<f32> = crops.iter().map(|c| c.quality).collect();
        let embedding = association::aggregate(&vectors, &qualities)
            .ok_or_else(|| IdentityError::invalid("the tracklet's embeddings have no common direction"))?;
        let now = now_ms();
        let start = crops.iter().filter_map(|c| c.at_ms).min().unwrap_or(now);
        let end = crops.iter().filter_map(|c| c.at_ms).max().unwrap_or(now);
        let best =
            crops.iter().enumerate().max_by(|a, b| a.1.quality.total_cmp(&b.1.quality)).map(|(i, _)| i).unwrap_or(0);

        let _associating = self.associating.lock().await;
        let point_id = derived_id(&["sighting", &camera, &track]);
        let same_tracklet =
            Filter::all().keyword("kind", "sighting").keyword("camera", &camera).keyword("track", &track);
        let (already, _) = self.store.scroll(&gallery.collection, &same_tracklet, 1, None).await?;
        if let Some(record) = already.first() {
            // A retried Observe: answer what was decided the first time.
            return Ok(Observation {
                identity: str_of(&record.payload, "identity").unwrap_or_default(),
                created: false,
                score: float_of(&record.payload, "score"),
                margin: float_of(&record.payload, "margin"),
            });
        }
        let searched_ms = now_ms();
        let seen = Seen { camera: &camera, span: (start, end) };
        let hits = self.candidates(&gallery, &embedding).await?;
        let threshold = self.threshold(&gallery, None);
        let ranked = self.rank(&gallery, &hits, &seen, threshold).await?;
        let verdict = association::decide(&ranked, threshold, self.config.association.observe_min_margin);
        let (identity, created, score, margin) = match verdict {
            Verdict::Known { identity, score, margin } => (identity, false, score, margin),
            Verdict::Unknown { best_score, margin } => {
                (derived_id(&["observed", &camera, &track]).to_string(), true, best_score, margin)
            }
        };
        let entry = match self.catalog.identity(&identity).await? {
            Some(e) => IdentityEntry { last_seen_ms: e.last_seen_ms.max(end), ..e },
            None => IdentityEntry {
                identity: identity.clone(),
                name: String::new(),
                external_id: String::new(),
                enrolled: false,
                created_ms: now,
                last_seen_ms: end,
            },
        };
        // The entry goes first: a replica that finds this sighting can read its identity's entry.
        self.catalog.put_identity(&entry).await?;
        let thumbnail = match (&crops[best].image, self.config.keep_thumbnails) {
            (Some(image), true) => self.crops.put(&identity, &format!("{SIGHTING_PREFIX}{point_id}"), image)?,
            _ => None,
        };
        let mut payload = object(json!({
            "kind": "sighting", "identity": identity, "enrolled": entry.enrolled, "camera": camera, "track": track,
            "time": start, "end": end, "crops": crops.len(), "quality": crops[best].quality, "score": score,
            "margin": margin, "model_version": gallery.model.version, "observed": now_ms(),
        }));
        if let Some(b) = crops[best].bbox {
            payload.insert("box".into(), json!(b));
        }
        if let Some(t) = &thumbnail {
            payload.insert("crop".into(), json!(t));
        }
        self.store
            .upsert(&gallery.collection, vec![Point { id: point_id, vector: embedding.clone(), payload }])
            .await?;
        let written = Written { point: point_id, track: track.clone(), identity, created, searched_ms, thumbnail };
        let identity = self.settle(&gallery, &embedding, &seen, &hits, threshold, written).await?;
        self.metrics.observations.with_label_values(&[if created { "new" } else { "existing" }]).inc();
        Ok(Observation { identity, created, score, margin })
    }

    /// The nearest stored vectors to a tracklet's embedding.
    async fn candidates(&self, gallery: &Gallery, embedding: &[f32]) -> IdentityResult<Vec<Hit>> {
        let limit = self.config.association.search_limit;
        let query =
            SearchQuery { hnsw_ef: self.config.association.hnsw_ef, ..SearchQuery::new(embedding.to_vec(), limit) };
        Ok(self.store.search(&gallery.collection, &query).await?)
    }

    /// Candidate identities for a tracklet seen as `seen`, best first, under the association
    /// rules: transit times, the cross-camera threshold, the linkage, and no identity seen on
    /// the same camera at the same time.
    async fn rank(
        &self,
        gallery: &Gallery,
        hits: &[Hit],
        seen: &Seen<'_>,
        threshold: f32,
    ) -> IdentityResult<Vec<Match>> {
        let rules = &self.config.association.transit;
        let (start, end) = seen.span;
        let mut matches: Vec<Match> = hits
            .iter()
            .filter_map(as_match)
            .filter(|m| association::transit_allows(rules, m, seen.camera, start, end))
            .collect();
        if let Some(cross) = self.config.association.cross_camera_threshold {
            association::shift_cross_camera(&mut matches, seen.camera, threshold, cross);
        }
        let ranked = association::rank_identities_by(&matches, self.config.association.linkage);
        self.without_co_occurring(&gallery.collection, ranked, seen.camera, seen.span).await
    }

    /// Drops the candidate identities seen on `camera` during this tracklet (for at least
    /// `same_camera_overlap`): whoever was another track of the same camera at the same time is
    /// someone else. Only the best candidates are checked, until two remain (the decision needs
    /// the best and the runner-up).
    async fn without_co_occurring(
        &self,
        collection: &str,
        ranked: Vec<Match>,
        camera: &str,
        span: (i64, i64),
    ) -> IdentityResult<Vec<Match>> {
        let min = self.config.association.same_camera_overlap.as_millis() as i64;
        if min == 0 || span.1 - span.0 < min {
            return Ok(ranked);
        }
        let mut kept = Vec::with_capacity(ranked.len());
        for candidate in ranked {
            if kept.len() >= 2 {
                kept.push(candidate);
                continue;
            }
            let together = Filter::all()
                .keyword("kind", "sighting")
                .keyword("identity", &candidate.identity)
                .keyword("camera", camera)
                .range("time", None, Some(span.1 - min + 1))
                .range("end", Some(span.0 + min), None);
            let (records, _) = self.store.scroll(collection, &together, 16, None).await?;
            let clash = records.iter().any(|r| {
                let (t, e) = (int_of(&r.payload, "time").unwrap_or(0), int_of(&r.payload, "end").unwrap_or(0));
                association::overlap_ms((t, e), span) >= min
            });
            if clash {
                tracing::debug!(identity = %candidate.identity, %camera, "candidate excluded: seen on this camera at the same time");
            } else {
                kept.push(candidate);
            }
        }
        Ok(kept)
    }

    pub async fn sightings(&self, query: SightingQuery) -> IdentityResult<Vec<Sighting>> {
        check_identity_id(&query.identity)?;
        check_cameras(&query.cameras)?;
        if self.catalog.identity(&query.identity).await?.is_none() {
            return Err(IdentityError::IdentityNotFound(query.identity));
        }
        self.timeline(&query).await
    }

    /// The sightings of an identity known to exist, in every gallery, in time order.
    async fn timeline(&self, query: &SightingQuery) -> IdentityResult<Vec<Sighting>> {
        let mut filter = Filter::all().keyword("kind", "sighting").keyword("identity", &query.identity);
        if !query.cameras.is_empty() {
            filter = filter.keyword_in("camera", query.cameras.clone());
        }
        if let Some(to) = query.to_ms {
            filter = filter.range("time", None, Some(to));
        }
        if let Some(from) = query.from_ms {
            filter = filter.range("end", Some(from), None);
        }
        let mut out = Vec::new();
        for g in self.galleries() {
            for r in self.store.scroll_all(&g.collection, &filter).await? {
                let p = &r.payload;
                out.push(Sighting {
                    camera: str_of(p, "camera").unwrap_or_default(),
                    track: str_of(p, "track").unwrap_or_default(),
                    start_ms: int_of(p, "time").unwrap_or_default(),
                    end_ms: int_of(p, "end").unwrap_or_default(),
                    bbox: bbox_of(p),
                    score: float_of(p, "score"),
                    model_version: str_of(p, "model_version").unwrap_or_default(),
                    thumbnail: str_of(p, "crop").map(|c| format!("{}/{c}", query.identity)),
                });
            }
        }
        out.sort_by(|a, b| (a.start_ms, &a.camera, &a.track).cmp(&(b.start_ms, &b.camera, &b.track)));
        Ok(out)
    }

    pub async fn list(
        &self,
        page_size: usize,
        token: Option<&str>,
    ) -> IdentityResult<(Vec<IdentitySummary>, Option<String>)> {
        let size = if page_size == 0 { 100 } else { page_size.min(1000) };
        let token = match token {
            None | Some("") => None,
            Some(t) => Some(t.parse().map_err(|_| {
                IdentityError::invalid(format!("page token {:?} is not one we gave", reid_server::truncated(t, 64)))
            })?),
        };
        let (entries, next) = self.catalog.identity_page(size, token).await?;
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let sightings =
                self.timeline(&SightingQuery { identity: entry.identity.clone(), ..Default::default() }).await?;
            let cameras: BTreeSet<String> = sightings.iter().map(|s| s.camera.clone()).collect();
            out.push(IdentitySummary {
                sightings: sightings.len() as u64,
                cameras: cameras.into_iter().collect(),
                first_seen_ms: sightings.iter().map(|s| s.start_ms).min(),
                last_seen_ms: sightings.iter().map(|s| s.end_ms).max(),
                entry,
            });
        }
        Ok((out, next.map(|n| n.to_string())))
    }

    /// Erases an identity: every vector in every gallery, its catalog entry, the feedback pairs
    /// that name it, its stored crops, and the key its name and external id are sealed with.
    /// Anything stored under the id is erased, also without a catalog entry (an enrollment cut
    /// short before it); NOT_FOUND only when nothing at all is stored under it.
    pub async fn forget(&self, identity: &str) -> IdentityResult<Erasure> {
        check_identity_id(identity)?;
        let _associating = self.associating.lock().await;
        let filter = Filter::all().keyword("identity", identity);
        let mut stored = self.catalog.identity(identity).await?.is_some()
            || self.crops.count(identity) > 0
            || self.catalog.keys().has_key(identity);
        for g in self.galleries() {
            if stored {
                break;
            }
            stored = self.store.count(&g.collection, &filter).await? > 0;
        }
        if !stored {
            return Err(IdentityError::IdentityNotFound(identity.into()));
        }
        let query = SightingQuery { identity: identity.into(), ..Default::default() };
        let tracklets: Vec<(String, String)> =
            self.timeline(&query).await?.into_iter().map(|s| (s.camera, s.track)).collect();
        self.catalog.put_erasure(identity, &tracklets).await?;
        let mut erased = self.erase(identity).await?;
        erased.exports_erased = self.erase_exports(identity, &tracklets).await?;
        erased.tracklets = tracklets;
        self.metrics.forgotten.inc();
        tracing::info!(%identity, vectors = erased.vectors, crops = erased.crops, exports = erased.exports_erased, "identity forgotten");
        Ok(erased)
    }

    /// The steps of an erasure in this service, each one safe to repeat.
    async fn erase(&self, identity: &str) -> IdentityResult<Erasure> {
        let filter = Filter::all().keyword("identity", identity);
        let mut vectors = 0;
        for g in self.galleries() {
            vectors += self.store.count(&g.collection, &filter).await?;
            self.store.delete(&g.collection, &filter).await?;
        }
        self.catalog.remove_feedback_of(identity).await?;
        self.catalog.remove_identity(identity).await?;
        let crops = self.crops.remove_identity(identity)? as u64;
        self.catalog.keys().shred(identity)?;
        Ok(Erasure { vectors, crops, ..Erasure::default() })
    }

    /// The last step: the ingester erases the tracklets' exported crops, then the erasure's
    /// record goes. When the ingester cannot be reached the record stays, and the next start
    /// tries again; false then (and without a configured ingester).
    async fn erase_exports(&self, identity: &str, tracklets: &[(String, String)]) -> IdentityResult<bool> {
        let confirmed = match (&self.ingester, tracklets.is_empty()) {
            (None, _) => false,
            (Some(_), true) => true,
            (Some(client), false) => {
                let request = pb::ForgetTrackletsRequest {
                    tracklets: tracklets
                        .iter()
                        .map(|(camera, track)| pb::TrackletRef { camera_id: camera.clone(), track_id: track.clone() })
                        .collect(),
                };
                match client.clone().forget_tracklets(request).await {
                    Ok(_) => true,
                    Err(status) => {
                        tracing::warn!(%identity, code = ?status.code(), error = %status.message(), "the ingester did not erase the exported tracklets; will retry at the next start");
                        return Ok(false);
                    }
                }
            }
        };
        self.catalog.remove_erasure(identity).await?;
        Ok(confirmed)
    }

    /// Records a correction; merges and splits also move the sightings. Returns the identity that
    /// holds the result and the number of pairs recorded.
    pub async fn feedback(&self, f: Feedback) -> IdentityResult<(String, u64)> {
        check_identity_id(&f.a)?;
        check_text("camera_id", &f.camera)?;
        check_text("track_id", &f.track)?;
        let a = self.catalog.identity(&f.a).await?.ok_or_else(|| IdentityError::IdentityNotFound(f.a.clone()))?;
        let _associating = self.associating.lock().await;
        let at_ms = now_ms();
        match f.kind {
            FeedbackKind::Confirm | FeedbackKind::Reject => {
                if f.b.is_empty() && f.track.is_empty() {
                    return Err(IdentityError::invalid("confirm and reject need identity_b or a camera and track"));
                }
                if !f.b.is_empty() {
                    check_identity_id(&f.b)?;
                    if self.catalog.identity(&f.b).await?.is_none() {
                        return Err(IdentityError::IdentityNotFound(f.b));
                    }
                }
                let same = f.kind == FeedbackKind::Confirm;
                self.catalog
                    .put_feedback(&FeedbackPair {
                        same,
                        a: f.a.clone(),
                        b: f.b,
                        camera: f.camera,
                        track: f.track,
                        at_ms,
                    })
                    .await?;
                Ok((f.a, 1))
            }
            FeedbackKind::Merge => {
                check_identity_id(&f.b)?;
                if f.a == f.b {
                    return Err(IdentityError::invalid("cannot merge an identity into itself"));
                }
                let b =
                    self.catalog.identity(&f.b).await?.ok_or_else(|| IdentityError::IdentityNotFound(f.b.clone()))?;
                self.absorb(&a, &b, at_ms).await?;
                let pair = FeedbackPair {
                    same: true,
                    a: a.identity.clone(),
                    b: b.identity,
                    camera: f.camera,
                    track: f.track,
                    at_ms,
                };
                self.catalog.put_feedback(&pair).await?;
                Ok((a.identity, 1))
            }
            FeedbackKind::Split => {
                if f.camera.is_empty() || f.track.is_empty() {
                    return Err(IdentityError::invalid("split needs the camera_id and track_id to move out"));
                }
                let of_track = Filter::all()
                    .keyword("kind", "sighting")
                    .keyword("identity", &a.identity)
                    .keyword("camera", &f.camera)
                    .keyword("track", &f.track);
                let mut moved_points = Vec::new();
                for g in self.galleries() {
                    moved_points.extend(self.store.scroll_all(&g.collection, &of_track).await?);
                }
                if moved_points.is_empty() {
                    return Err(IdentityError::invalid(format!(
                        "identity {} has no sighting on camera {:?} track {:?}",
                        a.identity, f.camera, f.track
                    )));
                }
                let new_identity = derived_id(&["split", &a.identity, &f.camera, &f.track]).to_string();
                let thumbnails: Vec<String> = moved_points.iter().filter_map(|r| str_of(&r.payload, "crop")).collect();
                for g in self.galleries() {
                    let moved = object(json!({ "identity": new_identity, "enrolled": false }));
                    self.store.set_payload(&g.collection, &of_track, moved).await?;
                }
                self.crops.move_crops(&a.identity, &new_identity, Some(&thumbnails))?;
                let end = moved_points.iter().filter_map(|r| int_of(&r.payload, "end")).max().unwrap_or(at_ms);
                let entry = IdentityEntry {
                    identity: new_identity.clone(),
                    name: String::new(),
                    external_id: String::new(),
                    enrolled: false,
                    created_ms: at_ms,
                    last_seen_ms: end,
                };
                self.catalog.put_identity(&entry).await?;
                let pair = FeedbackPair {
                    same: false,
                    a: a.identity,
                    b: new_identity.clone(),
                    camera: f.camera,
                    track: f.track,
                    at_ms,
                };
                self.catalog.put_feedback(&pair).await?;
                Ok((new_identity, 1))
            }
        }
    }

    /// Merges identity `gone` into `keep`: its sightings and crops move, feedback pairs that name
    /// it are renamed, the two catalog entries become one, and its sealing key is shredded. A
    /// merge record is written first, so that an `Observe` on another replica that chose `gone`
    /// and writes after the move follows it. Each step is safe to repeat.
    async fn absorb(&self, keep: &IdentityEntry, gone: &IdentityEntry, at_ms: i64) -> IdentityResult<()> {
        self.catalog.put_merged(&gone.identity, &keep.identity, at_ms).await?;
        let enrolled = keep.enrolled || gone.enrolled;
        let moved = object(json!({ "identity": keep.identity, "enrolled": enrolled }));
        for g in self.galleries() {
            self.store
                .set_payload(&g.collection, &Filter::all().keyword("identity", &gone.identity), moved.clone())
                .await?;
            if enrolled {
                self.store
                    .set_payload(
                        &g.collection,
                        &Filter::all().keyword("identity", &keep.identity),
                        object(json!({ "enrolled": true })),
                    )
                    .await?;
            }
        }
        self.crops.move_crops(&gone.identity, &keep.identity, None)?;
        self.catalog.rename_in_feedback(&gone.identity, &keep.identity).await?;
        let merged = IdentityEntry {
            name: if keep.name.is_empty() { gone.name.clone() } else { keep.name.clone() },
            external_id: if keep.external_id.is_empty() { gone.external_id.clone() } else { keep.external_id.clone() },
            enrolled,
            created_ms: keep.created_ms.min(gone.created_ms),
            last_seen_ms: keep.last_seen_ms.max(gone.last_seen_ms),
            identity: keep.identity.clone(),
        };
        self.catalog.put_identity(&merged).await?;
        self.catalog.remove_identity(&gone.identity).await?;
        self.catalog.keys().shred(&gone.identity)?;
        Ok(())
    }

    /// The recorded feedback pairs, for the trainer.
    pub async fn feedback_pairs(&self) -> IdentityResult<Vec<FeedbackPair>> {
        self.catalog.feedback().await
    }

    /// Deletes anonymous sightings that ended before `now - ttl`, with their thumbnails, then the
    /// anonymous identities left with nothing. Enrolled identities and their sightings stay.
    pub async fn sweep_expired(&self, now_ms: i64) -> IdentityResult<SweepReport> {
        self.catalog.remove_merged_before(now_ms - replicas::MERGE_RECORD_TTL_MS).await?;
        let ttl = self.config.retention.anonymous_ttl;
        if ttl.is_zero() {
            return Ok(SweepReport::default());
        }
        let cutoff = now_ms - ttl.as_millis() as i64;
        let _associating = self.associating.lock().await;
        let expired =
            Filter::all().keyword("kind", "sighting").flag("enrolled", false).range("end", None, Some(cutoff));
        let mut report = SweepReport::default();
        for g in self.galleries() {
            let records = self.store.scroll_all(&g.collection, &expired).await?;
            for r in &records {
                if let (Some(identity), Some(crop)) = (str_of(&r.payload, "identity"), str_of(&r.payload, "crop")) {
                    self.crops.remove(&identity, &crop);
                }
            }
            self.store.delete(&g.collection, &expired).await?;
            report.sightings += records.len() as u64;
        }
        for entry in self.catalog.stale_anonymous(cutoff).await? {
            let mut left = 0;
            for g in self.galleries() {
                left += self.store.count(&g.collection, &Filter::all().keyword("identity", &entry.identity)).await?;
            }
            if left == 0 {
                self.catalog.remove_identity(&entry.identity).await?;
                self.catalog.remove_feedback_of(&entry.identity).await?;
                self.crops.remove_identity(&entry.identity)?;
                self.catalog.keys().shred(&entry.identity)?;
                report.identities += 1;
            }
        }
        self.metrics.expired_sightings.inc_by(report.sightings);
        if report.sightings > 0 {
            tracing::info!(
                sightings = report.sightings,
                identities = report.identities,
                "expired anonymous sightings removed"
            );
        }
        Ok(report)
    }

    /// Builds the search index of what was written since the last call (the embedded engine has
    /// no background optimiser).
    pub async fn optimize(&self) -> IdentityResult<()> {
        for g in self.galleries() {
            self.store.optimize(&g.collection).await?;
        }
        Ok(())
    }

    /// Background upkeep: the retention sweep and index building, every `sweep_interval`.
    pub async fn maintain(self: Arc<Self>) {
        let period = self.config.retention.sweep_interval;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            if let Err(e) = self.sweep_expired(now_ms()).await {
                tracing::warn!(error = %e, "retention sweep failed; will retry");
            }
            if let Err(e) = self.optimize().await {
                tracing::warn!(error = %e, "index build failed; will retry");
            }
        }
    }

    /// Re-embeds now if the embedder serves a model no gallery was built for (called at start and
    /// periodically, so that a model change is picked up before the first request needs it).
    pub async fn follow_embedder(&self) -> IdentityResult<Option<ModelKey>> {
        let Some(embedder) = &self.embedder else { return Ok(None) };
        let current = embedder.model().await?.key;
        if current.version.is_empty() || self.cached(&current).is_some() {
            return Ok(None);
        }
        self.gallery_for(&current).await?;
        Ok(Some(current))
    }
}

fn enrolled_point(identity: &str, crop: &str, vector: Vec<f32>) -> Point {
    let payload = object(json!({ "kind": "enrolled", "identity": identity, "enrolled": true, "crop": crop }));
    Point { id: derived_id(&["enrolled", identity, crop]), vector, payload }
}

/// How long [`Identities::maintain`] waits between checks of the embedder's model.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(5);
