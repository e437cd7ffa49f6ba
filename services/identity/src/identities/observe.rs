//! `Observe`: a tracklet associated with the identity it belongs to, new or existing
//! (docs/identity.md, "Association").

use super::*;

impl Identities {
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
        self.check_items("crops", crops.len())?;
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
        let threshold = self.threshold(&gallery, None);
        let kept = association::agreeing(&vectors, self.config.association.crop_agreement.unwrap_or(threshold));
        let qualities: Vec<f32> = kept.iter().map(|&i| crops[i].quality).collect();
        let vectors: Vec<Vec<f32>> = kept.iter().map(|&i| vectors[i].clone()).collect();
        let embedding = association::aggregate(&vectors, &qualities)
            .ok_or_else(|| IdentityError::invalid("the tracklet's embeddings have no common direction"))?;
        let now = now_ms();
        // When the person was seen: the times of the crops kept, not of those left out as
        // someone else's, so that a crop taken while two people crossed does not stretch the
        // sighting over the other's time (where the one-place rule would then part them).
        let start = kept.iter().filter_map(|&i| crops[i].at_ms).min().unwrap_or(now);
        let end = kept.iter().filter_map(|&i| crops[i].at_ms).max().unwrap_or(now);
        // The best crop that carries its picture is the thumbnail (a caller that embedded its
        // crops sends only that one), one the embedding kept when there is one; without
        // pictures, the best crop.
        let by_quality = |a: &(usize, &TrackletCrop), b: &(usize, &TrackletCrop)| a.1.quality.total_cmp(&b.1.quality);
        let pictured = || crops.iter().enumerate().filter(|(_, c)| c.image.is_some());
        let best = pictured()
            .filter(|(i, _)| kept.contains(i))
            .max_by(by_quality)
            .or_else(|| pictured().max_by(by_quality))
            .or_else(|| crops.iter().enumerate().max_by(by_quality))
            .map_or(0, |(i, _)| i);

        let _associating = self.associating.lock().await;
        let point_id = derived_id(&[SIGHTING, &camera, &track]);
        let same_tracklet =
            Filter::all().keyword(field::KIND, SIGHTING).keyword(field::CAMERA, &camera).keyword(field::TRACK, &track);
        let (already, _) = self.store.scroll(&gallery.collection, &same_tracklet, 1, None).await?;
        if let Some(earlier) = already.first().and_then(|r| SightingPayload::from_payload(&r.payload)) {
            // A retried Observe: answer what was decided the first time.
            return Ok(Observation {
                identity: earlier.identity,
                created: false,
                score: earlier.score,
                margin: earlier.margin,
            });
        }
        let searched_ms = now_ms();
        let seen = Seen { camera: &camera, span: (start, end) };
        let hits = self.candidates(&gallery, &embedding).await?;
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
        let payload = GalleryPoint::Sighting(SightingPayload {
            identity: identity.clone(),
            enrolled: entry.enrolled,
            camera: camera.clone(),
            track: track.clone(),
            start_ms: start,
            end_ms: end,
            crops: crops.len() as u64,
            quality: crops[best].quality,
            score,
            margin,
            model_version: gallery.model.version.clone(),
            observed: now_ms(),
            bbox: crops[best].bbox,
            crop: thumbnail.clone(),
            merged_from: None,
        })
        .to_payload();
        self.store
            .upsert(&gallery.collection, vec![Point { id: point_id, vector: embedding.clone(), payload }])
            .await?;
        let written = Written { point: point_id, track: track.clone(), identity, created, searched_ms, thumbnail };
        let identity = self.settle(&gallery, &embedding, &seen, &hits, threshold, written).await?;
        self.metrics.observations.with_label_values(&[if created { "new" } else { "existing" }]).inc();
        self.publish(EventKind::Sighted {
            identity_id: identity.clone(),
            name: entry.name,
            enrolled: entry.enrolled,
            camera_id: camera,
            track_id: track,
            start_ms: start,
            end_ms: end,
            score,
            new_identity: created,
        });
        Ok(Observation { identity, created, score, margin })
    }

    /// The nearest stored vectors to a tracklet's embedding.
    pub(super) async fn candidates(&self, gallery: &Gallery, embedding: &[f32]) -> IdentityResult<Vec<Hit>> {
        let limit = self.config.association.search_limit;
        let query =
            SearchQuery { hnsw_ef: self.config.association.hnsw_ef, ..SearchQuery::new(embedding.to_vec(), limit) };
        Ok(self.store.search(&gallery.collection, &query).await?)
    }

    /// Candidate identities for a tracklet seen as `seen`, best first, under the association
    /// rules: transit times, the cross-camera threshold, the linkage, and no identity seen on
    /// the same camera at the same time.
    pub(super) async fn rank(
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
    pub(super) async fn without_co_occurring(
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
                .keyword(field::KIND, SIGHTING)
                .keyword(field::IDENTITY, &candidate.identity)
                .keyword(field::CAMERA, camera)
                .range(field::TIME, None, Some(span.1 - min + 1))
                .range(field::END, Some(span.0 + min), None);
            let (records, _) = self.store.scroll(collection, &together, 16, None).await?;
            let clash = records.iter().any(|r| {
                let (t, e) = SightingPayload::from_payload(&r.payload).map_or((0, 0), |s| (s.start_ms, s.end_ms));
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
}
