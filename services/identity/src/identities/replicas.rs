//! Several identity replicas over one store. Within a replica, `Observe`s are serialised by a lock
//! from search to write; across replicas nothing is, and Qdrant has no transactions. So each
//! `Observe` writes first and checks after (optimistic association):
//!
//! 1. The identity's catalog entry is written before its sighting, so whoever finds the sighting
//!    can read the entry.
//! 2. After its write, the tracklet searches again. A sighting that is new since its first search
//!    and written since then (`observed`) came from a concurrent `Observe`. If that sighting's
//!    identity would have been this tracklet's match (above the threshold, under the same rules)
//!    and one of the two identities was only just created, the two are one person that the race
//!    split: the younger identity is merged into the older (enrolled first, then by creation time,
//!    then by id). Both replicas order the pair the same way, so when both see the race they make
//!    the same merge, and of any two racing writes at least one sees the other.
//! 3. Merges leave a record (`kind = "merged"`) before they move anything; a tracklet that chose
//!    an identity merged away meanwhile follows the record and moves its sighting along.
//!
//! Two identities that both existed before the race are never merged here: that would chain
//! look-alikes, which association exists to avoid.

use std::collections::HashSet;

use reid_vector_store::{Filter, Hit, PointId};
use serde_json::json;

use super::{Gallery, Identities, now_ms};
use crate::association::Match;
use crate::catalog::IdentityEntry;
use crate::error::IdentityResult;
use crate::events::MergeCause;
use crate::payload::{SIGHTING, SightingPayload, field, fields};

/// How far apart two replicas' clocks may be for a write to count as concurrent.
const CLOCK_SKEW_MS: i64 = 5_000;

/// Merge records older than this are swept: no `Observe` runs that long.
pub(super) const MERGE_RECORD_TTL_MS: i64 = 10 * 60 * 1000;

/// Where and when a tracklet was seen.
pub(super) struct Seen<'a> {
    pub camera: &'a str,
    pub span: (i64, i64),
}

/// What an `Observe` wrote, to be checked against concurrent writes.
pub(super) struct Written {
    pub point: PointId,
    pub track: String,
    pub identity: String,
    pub created: bool,
    /// When the first search ran (this replica's clock).
    pub searched_ms: i64,
    pub thumbnail: Option<String>,
}

/// The order in which two identities survive a merge: enrolled first, then the older, then the
/// smaller id; the same on every replica.
pub(super) fn survives_over(a: &IdentityEntry, b: &IdentityEntry) -> bool {
    (!a.enrolled, a.created_ms, &a.identity) < (!b.enrolled, b.created_ms, &b.identity)
}

impl Identities {
    /// Checks an `Observe`'s write against concurrent ones (module doc) and returns the identity
    /// the tracklet belongs to in the end.
    pub(super) async fn settle(
        &self,
        gallery: &Gallery,
        embedding: &[f32],
        seen: &Seen<'_>,
        first: &[Hit],
        threshold: f32,
        written: Written,
    ) -> IdentityResult<String> {
        let known: HashSet<PointId> = first.iter().map(|h| h.id).chain([written.point]).collect();
        let since = written.searched_ms - CLOCK_SKEW_MS;
        let fresh: Vec<Hit> = self
            .candidates(gallery, embedding)
            .await?
            .into_iter()
            .filter(|h| {
                !known.contains(&h.id) && SightingPayload::from_payload(&h.payload).is_some_and(|s| s.observed >= since)
            })
            .collect();
        let mut identity = self.catalog.resolve(&written.identity).await?;
        if !fresh.is_empty() {
            let ranked = self.rank(gallery, &fresh, seen, threshold).await?;
            if let Some(rival) = self.rival(&ranked, &identity, threshold).await? {
                identity = self.join_racing(&identity, written.created, &rival, since).await?;
            }
        }
        if identity != written.identity {
            self.follow(gallery, seen, &written, &identity).await?;
        }
        Ok(identity)
    }

    /// The best identity among concurrent sightings above the threshold, other than ours, as it
    /// is now (after any merges).
    async fn rival(&self, ranked: &[Match], ours: &str, threshold: f32) -> IdentityResult<Option<String>> {
        for m in ranked.iter().take_while(|m| m.score >= threshold) {
            let current = self.catalog.resolve(&m.identity).await?;
            if current != ours {
                return Ok(Some(current));
            }
        }
        Ok(None)
    }

    /// Merges our identity and a racing one when either was only just created; returns the one
    /// that holds the tracklet now.
    async fn join_racing(&self, ours: &str, created: bool, rival: &str, since: i64) -> IdentityResult<String> {
        let (Some(a), Some(b)) = (self.catalog.identity(ours).await?, self.catalog.identity(rival).await?) else {
            // One of them was merged away meanwhile; its merge record says where.
            return self.catalog.resolve(ours).await;
        };
        let rival_is_new = b.created_ms >= since;
        if !created && !rival_is_new {
            return Ok(ours.to_owned());
        }
        let (keep, gone) = if survives_over(&a, &b) { (a, b) } else { (b, a) };
        tracing::info!(keep = %keep.identity, gone = %gone.identity, "two replicas started one person twice; merged");
        self.metrics.replica_merges.inc();
        self.absorb(&keep, &gone, now_ms(), MergeCause::Replicas).await?;
        Ok(keep.identity)
    }

    /// Moves this tracklet's sighting (and thumbnail) to `identity`, where its first choice went,
    /// and drops the first choice's catalog entry if that left it with no sighting.
    async fn follow(
        &self,
        gallery: &Gallery,
        seen: &Seen<'_>,
        written: &Written,
        identity: &str,
    ) -> IdentityResult<()> {
        let ours = Filter::all()
            .keyword(field::KIND, SIGHTING)
            .keyword(field::CAMERA, seen.camera)
            .keyword(field::TRACK, &written.track)
            .keyword(field::IDENTITY, &written.identity);
        self.store.set_payload(&gallery.collection, &ours, fields([(field::IDENTITY, json!(identity))])).await?;
        if let Some(thumbnail) = &written.thumbnail {
            self.crops.move_crops(&written.identity, identity, Some(std::slice::from_ref(thumbnail)))?;
        }
        if let Some(mut entry) = self.catalog.identity(identity).await? {
            entry.last_seen_ms = entry.last_seen_ms.max(seen.span.1);
            self.catalog.put_identity(&entry).await?;
        }
        if self.vectors_of(&written.identity).await? == 0 {
            self.catalog.remove_identity(&written.identity).await?;
        }
        Ok(())
    }
}
