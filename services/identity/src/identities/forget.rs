//! `Forget`: an identity erased everywhere, resumable after a crash.

use super::*;

impl Identities {
    /// Erases an identity: every vector in every gallery, its catalog entry, the feedback pairs
    /// that name it, its stored crops, and the key its name and external id are sealed with.
    /// Anything stored under the id is erased, also without a catalog entry (an enrollment cut
    /// short before it); NOT_FOUND only when nothing at all is stored under it.
    pub async fn forget(&self, identity: &str) -> IdentityResult<Erasure> {
        check_identity_id(identity)?;
        let _associating = self.associating.lock().await;
        let filter = Filter::all().keyword(field::IDENTITY, identity);
        let entry = self.catalog.identity(identity).await?;
        let enrolled = entry.as_ref().is_some_and(|e| e.enrolled);
        let mut stored = entry.is_some() || self.crops.count(identity) > 0 || self.catalog.keys().has_key(identity);
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
        self.publish(EventKind::Forgotten { identity_id: identity.to_owned(), enrolled });
        tracing::info!(%identity, vectors = erased.vectors, crops = erased.crops, exports = erased.exports_erased, "identity forgotten");
        Ok(erased)
    }

    /// The steps of an erasure in this service, each one safe to repeat.
    pub(super) async fn erase(&self, identity: &str) -> IdentityResult<Erasure> {
        let filter = Filter::all().keyword(field::IDENTITY, identity);
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
    pub(super) async fn erase_exports(&self, identity: &str, tracklets: &[(String, String)]) -> IdentityResult<bool> {
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
}
