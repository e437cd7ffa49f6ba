//! Galleries: one collection per model version, created when a model is first served (the enrolled
//! identities' crops re-embedded into it), imported galleries, and index upkeep.

use super::*;

/// Threshold for a model whose card nobody told us (embeddings-only deployments without one).
const FALLBACK_THRESHOLD: f32 = 0.5;

/// A gallery's match and merge thresholds from its model's card (the fallback match threshold
/// without a card, or with a card that names none).
fn thresholds(card: Option<&crate::embedder::ModelDescription>) -> (f32, Option<f32>) {
    let matching = card.map(|d| d.match_threshold).filter(|t| *t > 0.0).unwrap_or(FALLBACK_THRESHOLD);
    (matching, card.and_then(|d| d.merge_threshold))
}

/// Images per embedder call while re-embedding a gallery.
const MIGRATION_CHUNK: usize = 32;

/// How long [`Identities::maintain`] waits between checks of the embedder's model.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(5);

fn gallery_spec(g: &Gallery, index: reid_vector_store::IndexParams) -> CollectionSpec {
    CollectionSpec::new(&g.collection, g.model.dimension)
        .index_params(index)
        .index(field::KIND, FieldType::Keyword)
        .index(field::IDENTITY, FieldType::Keyword)
        .index(field::CAMERA, FieldType::Keyword)
        .index(field::TRACK, FieldType::Keyword)
        .index(field::TIME, FieldType::Integer)
        .index(field::END, FieldType::Integer)
        .index(field::OBSERVED, FieldType::Integer)
        .index(field::ENROLLED, FieldType::Bool)
}

impl Identities {
    /// Embeds images in one embedder call and returns the gallery of the model that did it.
    pub(super) async fn embed(&self, images: Vec<Image>) -> IdentityResult<(Vec<Vec<f32>>, Gallery)> {
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
    pub(super) async fn gallery_for_embeddings(&self, model: &ModelKey) -> IdentityResult<Gallery> {
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
        if let Some(g) = self.built_elsewhere(model).await? {
            return Ok(g);
        }
        Err(IdentityError::UnknownModel { id: model.id.clone(), version: model.version.clone() })
    }

    /// The gallery of `model`, created on first use: the enrolled identities' stored crops are
    /// re-embedded into it, then the active alias moves to it in one step. Galleries of earlier
    /// versions keep answering requests that carry their embeddings while this runs.
    pub(super) async fn gallery_for(&self, model: &ModelKey) -> IdentityResult<Gallery> {
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
        if let Some(g) = self.built_elsewhere(model).await? {
            return Ok(g);
        }
        let card = match &self.embedder {
            Some(e) => e.model().await.ok().filter(|d| d.key.same_model(model)),
            None => None,
        };
        let (match_threshold, merge_threshold) = thresholds(card.as_ref());
        let gallery = Gallery {
            model: model.clone(),
            collection: model.collection(&self.config.namespace),
            match_threshold,
            merge_threshold,
        };
        tracing::info!(model = %model, collection = %gallery.collection, "building the gallery of a new model version");
        self.store.ensure_collection(&gallery_spec(&gallery, self.config.index)).await?;
        let started = std::time::Instant::now();
        let result = self.reembed_enrolled(&gallery).await;
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let reembedded = result?;
        self.store.optimize(&gallery.collection).await?;
        self.catalog.put_model(&ModelEntry::from(&gallery)).await?;
        self.store.set_alias(&active_alias(&self.config.namespace), &gallery.collection).await?;
        self.metrics.migrations.inc();
        tracing::info!(model = %model, reembedded, seconds = started.elapsed().as_secs_f32(), "gallery ready; active alias switched");
        self.remember(&gallery);
        Ok(gallery)
    }

    /// Forgets every gallery whose collection is gone (deleted by hand, or by a tool that shared
    /// the store): at start and on every upkeep tick, so that a running service heals too. Its
    /// vectors are gone; the enrolled identities are rebuilt from their stored crops the next
    /// time that model is served, as for a new model version. Returns how many were dropped.
    pub(super) async fn drop_vanished_galleries(&self) -> IdentityResult<usize> {
        let existing: BTreeSet<String> = self.store.list_collections().await?.into_iter().collect();
        let vanished: Vec<Gallery> =
            self.galleries().into_iter().filter(|g| !existing.contains(&g.collection)).collect();
        for g in &vanished {
            tracing::warn!(model = %g.model, collection = %g.collection, "the gallery's collection is gone; forgetting it (enrolled crops are re-embedded when this model is next served)");
            self.catalog.remove_model(&g.collection).await?;
            self.galleries
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(g.model.id.clone(), g.model.version.clone()));
        }
        Ok(vanished.len())
    }

    /// The gallery of `model` when the catalog lists one this replica has not seen (another
    /// replica built it), now remembered here too.
    async fn built_elsewhere(&self, model: &ModelKey) -> IdentityResult<Option<Gallery>> {
        let found = self.catalog.models().await?.into_iter().find(|m| m.key.same_model(model)).map(Gallery::from);
        if let Some(g) = &found {
            self.remember(g);
        }
        Ok(found)
    }

    pub(super) fn remember(&self, g: &Gallery) {
        self.galleries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((g.model.id.clone(), g.model.version.clone()), g.clone());
    }

    pub(super) async fn reembed_enrolled(&self, gallery: &Gallery) -> IdentityResult<usize> {
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
            let payload = GalleryPoint::Enrolled(EnrolledPayload {
                identity: identity.clone(),
                enrolled: true,
                crop: None,
                merged_from: None,
            })
            .to_payload();
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

    /// Builds the search index of what was written since the last call (the embedded engine has
    /// no background optimiser).
    pub async fn optimize(&self) -> IdentityResult<()> {
        for g in self.galleries() {
            self.store.optimize(&g.collection).await?;
        }
        Ok(())
    }

    /// Re-embeds now if the embedder serves a model no gallery was built for (called at start and
    /// periodically, so that a model change is picked up before the first request needs it).
    /// A card recalibrated in place (the same version, other thresholds) takes effect here too.
    pub async fn follow_embedder(&self) -> IdentityResult<Option<ModelKey>> {
        let Some(embedder) = &self.embedder else { return Ok(None) };
        let card = embedder.model().await?;
        let current = card.key.clone();
        if current.version.is_empty() {
            return Ok(None);
        }
        let Some(gallery) = self.cached(&current) else {
            self.gallery_for(&current).await?;
            return Ok(Some(current));
        };
        let (match_threshold, merge_threshold) = thresholds(Some(&card));
        if (gallery.match_threshold, gallery.merge_threshold) != (match_threshold, merge_threshold) {
            let updated = Gallery { match_threshold, merge_threshold, ..gallery };
            tracing::info!(model = %current, match_threshold, ?merge_threshold, "the model card's thresholds changed");
            self.catalog.put_model(&ModelEntry::from(&updated)).await?;
            self.remember(&updated);
        }
        Ok(None)
    }
}
