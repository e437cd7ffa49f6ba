//! What people said about tracklets, as constraints on the pseudo-identities (`reid adapt`): two
//! tracklets *linked as the same* person start in one group and stay there; two *linked as
//! different* people never end up in one group, however alike the model finds them. The second
//! is what teaches the model to tell look-alikes apart: their tracklets stay two pseudo-identities,
//! each the other's negative. Links name tracklets as the ingester exported them (camera and
//! track), one JSON object a line:
//!
//! ```text
//! {"same": false, "a": {"camera": "east", "track": "1a2b-7"}, "b": {"camera": "west", "track": "1a2b-3"}}
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// Largest links file read (a link is about 100 bytes).
const MAX_LINKS_BYTES: u64 = 64 << 20;

/// A tracklet as the ingester exported it (`tracklet.json`'s `camera` and `track`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TrackletKey {
    pub camera: String,
    pub track: String,
}

impl TrackletKey {
    pub fn new(camera: impl Into<String>, track: impl Into<String>) -> Self {
        TrackletKey { camera: camera.into(), track: track.into() }
    }
}

/// Two tracklets of one person (`same`) or of two people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackletLink {
    pub same: bool,
    pub a: TrackletKey,
    pub b: TrackletKey,
}

pub fn read_links(path: &Path) -> Result<Vec<TrackletLink>, TrainError> {
    super::read_json_lines(path, MAX_LINKS_BYTES)
}

pub fn write_links(path: &Path, links: &[TrackletLink]) -> Result<(), TrainError> {
    let mut text = String::new();
    for link in links {
        let line = serde_json::to_string(link).map_err(|e| TrainError::Dataset(format!("a link: {e}")))?;
        text.push_str(&line);
        text.push('\n');
    }
    std::fs::write(path, text).map_err(TrainError::io(path))
}

/// Links between training tracklets, by their index (the tracklet's pid).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    /// Pairs `(i, j)`, `i < j`, of one person.
    pub same: Vec<(usize, usize)>,
    /// Pairs of two people, both ways round.
    pub different: HashSet<(usize, usize)>,
}

impl Links {
    /// `links` between the tracklets `keys` names (`keys[i]` is training tracklet `i`); a link
    /// to a tracklet not among them (held out, or exported elsewhere) is left out, and so is a
    /// link of a tracklet with itself.
    pub fn resolve(links: &[TrackletLink], keys: &[TrackletKey]) -> Self {
        let index: BTreeMap<&TrackletKey, usize> = keys.iter().enumerate().map(|(i, k)| (k, i)).collect();
        let mut out = Links::default();
        for link in links {
            let (Some(&a), Some(&b)) = (index.get(&link.a), index.get(&link.b)) else { continue };
            if a == b {
                continue;
            }
            if link.same {
                out.same.push((a.min(b), a.max(b)));
            } else {
                out.different.extend([(a, b), (b, a)]);
            }
        }
        out.same.sort_unstable();
        out.same.dedup();
        out
    }

    pub fn is_empty(&self) -> bool {
        self.same.is_empty() && self.different.is_empty()
    }

    /// The groups the `same` links make of `n` tracklets (connected components): a label per
    /// tracklet, 0, 1, ... in order of first appearance.
    pub fn components(&self, n: usize) -> Vec<usize> {
        reid_cluster::components(n, self.same.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(track: &str) -> TrackletKey {
        TrackletKey::new("east", track)
    }

    #[test]
    fn links_resolve_to_training_tracklets_and_same_links_make_groups() {
        let keys = vec![key("1"), key("2"), key("3"), key("4")];
        let links = vec![
            TrackletLink { same: true, a: key("1"), b: key("3") },
            TrackletLink { same: true, a: key("3"), b: key("1") },
            TrackletLink { same: false, a: key("2"), b: key("4") },
            // Held out or never exported: left out.
            TrackletLink { same: false, a: key("1"), b: key("9") },
            TrackletLink { same: true, a: key("2"), b: key("2") },
        ];
        let resolved = Links::resolve(&links, &keys);
        assert_eq!(resolved.same, vec![(0, 2)]);
        assert_eq!(resolved.different, HashSet::from([(1, 3), (3, 1)]));
        assert_eq!(resolved.components(4), vec![0, 1, 0, 2]);
        assert!(Links::resolve(&links[3..4], &keys).is_empty());
    }

    #[test]
    fn links_files_round_trip_and_bad_lines_are_named() {
        let dir = std::env::temp_dir().join(format!("reid-links-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("links.jsonl");
        let links = vec![TrackletLink { same: false, a: key("1"), b: TrackletKey::new("west", "2") }];
        write_links(&path, &links).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_links(&path).ok(), Some(links));
        std::fs::write(&path, "\n{\"same\": true}\n").unwrap_or_else(|e| panic!("{e}"));
        let err = read_links(&path).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
