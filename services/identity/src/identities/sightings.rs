//! Reading identities back: an identity's timeline of sightings, and the paged list.

use super::*;

fn bbox_of(p: &Payload) -> Option<[f32; 4]> {
    let v: Vec<f32> = p.get("box")?.as_array()?.iter().filter_map(|x| x.as_f64().map(|x| x as f32)).collect();
    v.try_into().ok()
}

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
                    merged_from: str_of(p, "merged_from"),
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
