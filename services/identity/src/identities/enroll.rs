//! `Enroll`: images of a person stored as the crops and vectors of an enrolled identity; `Rename`.

use super::*;

impl Identities {
    /// Gives an identity a display name (empty clears it); sealed like every name.
    pub async fn rename(&self, identity: &str, name: &str) -> IdentityResult<()> {
        check_identity_id(identity)?;
        check_text("name", name)?;
        let _associating = self.associating.lock().await;
        let entry =
            self.catalog.identity(identity).await?.ok_or_else(|| IdentityError::IdentityNotFound(identity.into()))?;
        let enrolled = entry.enrolled;
        self.catalog.put_identity(&IdentityEntry { name: name.to_owned(), ..entry }).await?;
        self.publish(EventKind::Renamed { identity_id: identity.to_owned(), name: name.to_owned(), enrolled });
        Ok(())
    }

    pub async fn enroll(&self, request: Enrollment) -> IdentityResult<(String, usize, ModelKey)> {
        if request.images.is_empty() {
            return Err(IdentityError::invalid("enroll needs at least one image"));
        }
        self.check_items("images", request.images.len())?;
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
                        &Filter::all().keyword(field::IDENTITY, &identity),
                        fields([(field::ENROLLED, json!(true))]),
                    )
                    .await?;
            }
        }
        self.metrics.enrolled_images.inc_by(stored as u64);
        self.publish(EventKind::Enrolled {
            identity_id: identity.clone(),
            name: entry.name,
            vectors_stored: stored as u32,
        });
        Ok((identity, stored, gallery.model))
    }
}
