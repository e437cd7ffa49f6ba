//! Upkeep: the retention sweep of anonymous sightings, the merge pass and the periodic index build.

use super::*;

impl Identities {
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
        let expired = Filter::all().keyword(field::KIND, SIGHTING).flag(field::ENROLLED, false).range(
            field::END,
            None,
            Some(cutoff),
        );
        let mut report = SweepReport::default();
        for g in self.galleries() {
            let records = self.store.scroll_all(&g.collection, &expired).await?;
            for r in &records {
                if let Some(SightingPayload { identity, crop: Some(crop), .. }) =
                    SightingPayload::from_payload(&r.payload)
                {
                    self.crops.remove(&identity, &crop);
                }
            }
            self.store.delete(&g.collection, &expired).await?;
            report.sightings += records.len() as u64;
        }
        for entry in self.catalog.stale_anonymous(cutoff).await? {
            if self.vectors_of(&entry.identity).await? == 0 {
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

    /// Background upkeep every `sweep_interval`: galleries whose collection vanished are dropped,
    /// then the retention sweep, the merge pass and the index build.
    pub async fn maintain(self: Arc<Self>) {
        let period = self.config.retention.sweep_interval;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            if let Err(e) = self.drop_vanished_galleries().await {
                tracing::warn!(error = %e, "checking the galleries' collections failed; will retry");
            }
            if let Err(e) = self.sweep_expired(now_ms()).await {
                tracing::warn!(error = %e, "retention sweep failed; will retry");
            }
            if let Err(e) = self.merge_pass(now_ms()).await {
                tracing::warn!(error = %e, "merge pass failed; will retry");
            }
            if let Err(e) = self.optimize().await {
                tracing::warn!(error = %e, "index build failed; will retry");
            }
        }
    }
}
