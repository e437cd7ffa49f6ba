//! `Feedback`: confirmed and rejected pairs, merges and splits.

use super::*;

impl Identities {
    /// Records a correction; merges and splits also move the sightings. Returns the identity that
    /// holds the result and the number of pairs recorded.
    pub async fn feedback(&self, f: Feedback) -> IdentityResult<(String, u64)> {
        check_identity_id(&f.a)?;
        check_text("camera_id", &f.camera)?;
        check_text("track_id", &f.track)?;
        let a = self.catalog.identity(&f.a).await?.ok_or_else(|| IdentityError::IdentityNotFound(f.a.clone()))?;
        let _associating = self.associating.lock().await;
        let at_ms = now_ms();
        let identity = match f.kind {
            FeedbackKind::Confirm | FeedbackKind::Reject => self.record_pair(f, at_ms).await?,
            FeedbackKind::Merge => self.merge(a, f, at_ms).await?,
            FeedbackKind::Split => self.split(a, f, at_ms).await?,
        };
        Ok((identity, 1))
    }

    /// Confirm or reject: a labelled pair of identities, or of an identity and a tracklet.
    async fn record_pair(&self, f: Feedback, at_ms: i64) -> IdentityResult<String> {
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
        let pair = FeedbackPair { same, a: f.a.clone(), b: f.b, camera: f.camera, track: f.track, at_ms };
        self.catalog.put_feedback(&pair).await?;
        Ok(f.a)
    }

    /// Identity `b` merged into `a`, recorded as a "same" pair.
    async fn merge(&self, a: IdentityEntry, f: Feedback, at_ms: i64) -> IdentityResult<String> {
        check_identity_id(&f.b)?;
        if f.a == f.b {
            return Err(IdentityError::invalid("cannot merge an identity into itself"));
        }
        let b = self.catalog.identity(&f.b).await?.ok_or_else(|| IdentityError::IdentityNotFound(f.b.clone()))?;
        self.absorb(&a, &b, at_ms, MergeCause::Feedback).await?;
        let pair =
            FeedbackPair { same: true, a: a.identity.clone(), b: b.identity, camera: f.camera, track: f.track, at_ms };
        self.catalog.put_feedback(&pair).await?;
        Ok(a.identity)
    }

    /// One tracklet's sightings moved out of `a` into a new identity, recorded as a "different"
    /// pair.
    async fn split(&self, a: IdentityEntry, f: Feedback, at_ms: i64) -> IdentityResult<String> {
        if f.camera.is_empty() || f.track.is_empty() {
            return Err(IdentityError::invalid("split needs the camera_id and track_id to move out"));
        }
        let of_track = Filter::all()
            .keyword(field::KIND, SIGHTING)
            .keyword(field::IDENTITY, &a.identity)
            .keyword(field::CAMERA, &f.camera)
            .keyword(field::TRACK, &f.track);
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
        let a_enrolled = a.enrolled;
        let moved_sightings: Vec<SightingPayload> =
            moved_points.iter().filter_map(|r| SightingPayload::from_payload(&r.payload)).collect();
        let thumbnails: Vec<String> = moved_sightings.iter().filter_map(|s| s.crop.clone()).collect();
        for g in self.galleries() {
            let moved = fields([(field::IDENTITY, json!(new_identity)), (field::ENROLLED, json!(false))]);
            self.store.set_payload(&g.collection, &of_track, moved).await?;
        }
        self.crops.move_crops(&a.identity, &new_identity, Some(&thumbnails))?;
        let end = moved_sightings.iter().map(|s| s.end_ms).max().unwrap_or(at_ms);
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
        self.publish(EventKind::Split {
            from_identity_id: pair.a,
            into_identity_id: new_identity.clone(),
            camera_id: pair.camera,
            track_id: pair.track,
            enrolled: a_enrolled,
        });
        Ok(new_identity)
    }

    /// Merges identity `gone` into `keep`: its sightings and crops move, feedback pairs that name
    /// it are renamed, the two catalog entries become one, and its sealing key is shredded. A
    /// merge record is written first, so that an `Observe` on another replica that chose `gone`
    /// and writes after the move follows it. Each step is safe to repeat.
    pub(super) async fn absorb(
        &self,
        keep: &IdentityEntry,
        gone: &IdentityEntry,
        at_ms: i64,
        cause: MergeCause,
    ) -> IdentityResult<()> {
        self.catalog.put_merged(&gone.identity, &keep.identity, at_ms).await?;
        let enrolled = keep.enrolled || gone.enrolled;
        let moved = fields([
            (field::IDENTITY, json!(keep.identity)),
            (field::ENROLLED, json!(enrolled)),
            (field::MERGED_FROM, json!(gone.identity)),
        ]);
        for g in self.galleries() {
            self.store
                .set_payload(&g.collection, &Filter::all().keyword(field::IDENTITY, &gone.identity), moved.clone())
                .await?;
            if enrolled {
                self.store
                    .set_payload(
                        &g.collection,
                        &Filter::all().keyword(field::IDENTITY, &keep.identity),
                        fields([(field::ENROLLED, json!(true))]),
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
        self.publish(EventKind::Merged {
            from_identity_id: gone.identity.clone(),
            into_identity_id: merged.identity,
            name: merged.name,
            enrolled,
            cause,
        });
        Ok(())
    }

    /// The recorded feedback pairs, for the trainer.
    pub async fn feedback_pairs(&self) -> IdentityResult<Vec<FeedbackPair>> {
        self.catalog.feedback().await
    }
}
