//! Reading identities back: an identity's timeline of sightings, and the paged list.

use super::*;

impl Identities {
    pub async fn sightings(&self, query: SightingQuery) -> IdentityResult<Vec<Sighting>> {
        check_identity_id(&query.identity)?;
        check_cameras(&query.cameras)?;
        if self.catalog.identity(&query.identity).await?.is_none() {
            return Err(IdentityError::IdentityNotFound(query.identity));
        }
        self.timeline(&query).await
    }

    /// The sightings of an identity known to exist, in every gallery, in time order.
    pub(super) async fn timeline(&self, query: &SightingQuery) -> IdentityResult<Vec<Sighting>> {
        let mut filter = Filter::all().keyword(field::KIND, SIGHTING).keyword(field::IDENTITY, &query.identity);
        if !query.cameras.is_empty() {
            filter = filter.keyword_in(field::CAMERA, query.cameras.clone());
        }
        if let Some(to) = query.to_ms {
            filter = filter.range(field::TIME, None, Some(to));
        }
        if let Some(from) = query.from_ms {
            filter = filter.range(field::END, Some(from), None);
        }
        let mut out = Vec::new();
        for g in self.galleries() {
            for r in self.store.scroll_all(&g.collection, &filter).await? {
                let Some(s) = SightingPayload::from_payload(&r.payload) else { continue };
                out.push(Sighting {
                    thumbnail: s.crop.map(|c| format!("{}/{c}", query.identity)),
                    camera: s.camera,
                    track: s.track,
                    start_ms: s.start_ms,
                    end_ms: s.end_ms,
                    bbox: s.bbox,
                    score: s.score,
                    model_version: s.model_version,
                    merged_from: s.merged_from,
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
}
