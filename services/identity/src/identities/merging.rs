//! The merge pass: identities that recent tracklets show to be one person become one.
//!
//! `Observe` decides each tracklet alone, as it arrives: a person whose first tracklets were not
//! close enough to each other (a turn, an occlusion, another camera) is left as two identities
//! for good. On every upkeep tick, when `association.merge_threshold` is set, the sightings
//! observed within `merge_window` are grouped again all at once (`reid_cluster::regroup_from`):
//! each identity starts as one group, and two groups merge while the *average* cosine similarity
//! of their tracklets is at least the threshold, so one close pair of look-alikes cannot tie two
//! people together. Identities are never split here. Two groups never merge when any two of
//! their tracklets
//!
//! - were seen on one camera at the same time,
//! - break a camera transit rule,
//! - belong to identities an operator said are different people (feedback `different`), or
//! - belong to two enrolled identities (two people someone named).
//!
//! A merge is [`Identities::absorb`]'s, as a `SAME` feedback does it: the younger identity
//! (enrolled ones first, then the older) keeps the other's sightings, crops and name, and a
//! `merged` record tells tracklets in flight where it went. Each sighting moved carries
//! `merged_from`, shown in `Sightings`; merges are counted in `identity_merges_total`.

use std::collections::{BTreeMap, HashMap, HashSet};

use reid_cluster::{cosine_similarities, overlap_ms, regroup_from};

use super::replicas::survives_over;
use super::*;

/// Most sightings one pass weighs, the latest observed: the grouping costs the square of this
/// in memory and time.
pub(super) const MAX_MERGE_SIGHTINGS: usize = 2_000;

impl Identities {
    /// Runs the merge pass once over every gallery; returns how many identities were merged
    /// away. A gallery's threshold is `association.merge_threshold`, else its model card's; a
    /// gallery with neither is left alone.
    pub async fn merge_pass(&self, now_ms: i64) -> IdentityResult<u64> {
        let threshold_of = |g: &Gallery| self.config.association.merge_threshold.or(g.merge_threshold);
        if !self.config.association.merge_pass || !self.galleries().iter().any(|g| threshold_of(g).is_some()) {
            return Ok(0);
        }
        let since = now_ms - self.config.association.merge_window.as_millis() as i64;
        // No tracklet is associated while identities move.
        let _associating = self.associating.lock().await;
        let different: HashSet<(String, String)> = self
            .catalog
            .feedback()
            .await?
            .into_iter()
            .filter(|f| !f.same)
            .flat_map(|f| [(f.a.clone(), f.b.clone()), (f.b, f.a)])
            .collect();
        let mut merged = 0;
        for gallery in self.galleries() {
            if let Some(threshold) = threshold_of(&gallery) {
                merged += self.merge_gallery(&gallery, since, threshold, &different, now_ms).await?;
            }
        }
        if merged > 0 {
            self.metrics.identity_merges.inc_by(merged);
        }
        Ok(merged)
    }

    /// Where `identity` went: the identity it was merged into (within the last ten minutes, while
    /// the merge record lasts), or itself.
    pub async fn merged_into(&self, identity: &str) -> IdentityResult<String> {
        self.catalog.resolve(identity).await
    }

    async fn merge_gallery(
        &self,
        gallery: &Gallery,
        since: i64,
        threshold: f32,
        different: &HashSet<(String, String)>,
        now_ms: i64,
    ) -> IdentityResult<u64> {
        let recent_filter = Filter::all().keyword(field::KIND, SIGHTING).range(field::OBSERVED, Some(since), None);
        let records = self.store.scroll_all_with_vectors(&gallery.collection, &recent_filter).await?;
        let mut recent: Vec<(SightingPayload, Vec<f32>)> =
            records.into_iter().filter_map(|r| Some((SightingPayload::from_payload(&r.payload)?, r.vector?))).collect();
        if recent.len() > MAX_MERGE_SIGHTINGS {
            recent.sort_by_key(|(s, _)| std::cmp::Reverse(s.observed));
            recent.truncate(MAX_MERGE_SIGHTINGS);
        }
        let (sightings, vectors): (Vec<SightingPayload>, Vec<Vec<f32>>) = recent.into_iter().unzip();
        // Identities by index, and each sighting's identity's index.
        let mut names: Vec<&str> = Vec::new();
        let mut index_of: HashMap<&str, usize> = HashMap::new();
        let initial: Vec<usize> = sightings
            .iter()
            .map(|s| {
                *index_of.entry(s.identity.as_str()).or_insert_with(|| {
                    names.push(&s.identity);
                    names.len() - 1
                })
            })
            .collect();
        if names.len() < 2 {
            return Ok(0);
        }
        let mut entries: Vec<Option<IdentityEntry>> = Vec::with_capacity(names.len());
        for name in &names {
            entries.push(self.catalog.identity(name).await?);
        }
        let enrolled: Vec<bool> = entries.iter().map(|e| e.as_ref().is_some_and(|e| e.enrolled)).collect();
        let apart: HashSet<(usize, usize)> = different
            .iter()
            .filter_map(|(a, b)| Some((*index_of.get(a.as_str())?, *index_of.get(b.as_str())?)))
            .collect();
        let rules = &self.config.association.transit;
        // Made once: the pair test below runs for every two sightings.
        let seen: Vec<Match> = sightings
            .iter()
            .zip(&initial)
            .map(|(s, &i)| Match {
                identity: names[i].to_owned(),
                score: 0.0,
                camera: Some(s.camera.clone()),
                start_ms: Some(s.start_ms),
                end_ms: Some(s.end_ms),
            })
            .collect();
        let cannot_link = |i: usize, j: usize| {
            let (a, b) = (initial[i], initial[j]);
            if a == b {
                return false;
            }
            let (si, sj) = (&sightings[i], &sightings[j]);
            (si.camera == sj.camera && overlap_ms((si.start_ms, si.end_ms), (sj.start_ms, sj.end_ms)) > 0)
                || !association::transit_allows(rules, &seen[i], &sj.camera, sj.start_ms, sj.end_ms)
                || apart.contains(&(a, b))
                || (enrolled[a] && enrolled[b])
        };
        let groups = regroup_from(&cosine_similarities(&vectors), &initial, f64::from(threshold), cannot_link);
        let mut together: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (&identity, group) in initial.iter().zip(groups) {
            let members = together.entry(group).or_default();
            if !members.contains(&identity) {
                members.push(identity);
            }
        }
        let mut merged = 0;
        for members in together.into_values().filter(|m| m.len() > 1) {
            let mut present: Vec<IdentityEntry> = members.iter().filter_map(|&i| entries[i].clone()).collect();
            present.sort_by(
                |a, b| {
                    if survives_over(a, b) { std::cmp::Ordering::Less } else { std::cmp::Ordering::Greater }
                },
            );
            let Some((keep, gone)) = present.split_first() else { continue };
            let mut keep = keep.clone();
            for g in gone {
                tracing::info!(keep = %keep.identity, gone = %g.identity, "merge pass: one person in two identities; merged");
                self.absorb(&keep, g, now_ms, MergeCause::MergePass).await?;
                keep = self.catalog.identity(&keep.identity).await?.unwrap_or(keep);
                merged += 1;
            }
        }
        Ok(merged)
    }
}
