//! One folder per identity (the identity service's crop folder has this layout), with an
//! operator's feedback pairs; the last identities by name are held out.

use std::path::Path;

use serde::Deserialize;

use super::{
    Dataset, Identity, MAX_FEEDBACK_BYTES, Sample, Split, is_image, market_name, read_json_lines, samples_of,
    sorted_entries,
};
use crate::error::TrainError;

/// One feedback line: two identity folders a person said are (or are not) the same person, or
/// (with `camera` and `track`) one tracklet a person said is (or is not) identity `a`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct FeedbackPair {
    pub same: bool,
    pub a: String,
    #[serde(default)]
    pub b: String,
    #[serde(default)]
    pub camera: String,
    #[serde(default)]
    pub track: String,
}

impl FeedbackPair {
    /// Whether the pair is about one tracklet (a sighting confirmed, rejected or split off).
    pub fn names_a_tracklet(&self) -> bool {
        !self.camera.is_empty() && !self.track.is_empty()
    }
}

/// Reads feedback pairs, one JSON object a line (blank lines skipped).
pub fn read_feedback(path: &Path) -> Result<Vec<FeedbackPair>, TrainError> {
    read_json_lines(path, MAX_FEEDBACK_BYTES)
}

/// Folds same-person pairs into one identity (union-find over folder names, the first name in
/// sorted order keeps the group) and returns the different-person pairs as positions in the
/// resulting list. Pairs naming a folder that is not there are ignored.
pub fn apply_feedback(named: Vec<(String, Identity)>, pairs: &[FeedbackPair]) -> (Vec<Identity>, Vec<(i64, i64)>) {
    let index: std::collections::HashMap<&str, usize> =
        named.iter().enumerate().map(|(i, (name, _))| (name.as_str(), i)).collect();
    let same =
        pairs.iter().filter(|p| p.same).filter_map(|p| Some((*index.get(p.a.as_str())?, *index.get(p.b.as_str())?)));
    // Each group's label is its position in the list: groups in order of their first folder.
    let position = reid_cluster::components(named.len(), same);
    let mut identities: Vec<Identity> = vec![Vec::new(); position.iter().max().map_or(0, |m| m + 1)];
    for ((_, images), &p) in named.iter().zip(&position) {
        identities[p].extend(images.iter().cloned());
    }
    let mut negatives: Vec<(i64, i64)> = pairs
        .iter()
        .filter(|p| !p.same)
        .filter_map(|p| {
            let a = position[*index.get(p.a.as_str())?] as i64;
            let b = position[*index.get(p.b.as_str())?] as i64;
            (a != b).then_some((a.min(b), a.max(b)))
        })
        .collect();
    negatives.sort_unstable();
    negatives.dedup();
    (identities, negatives)
}

pub(super) fn folder_identities(root: &Path) -> Result<Vec<(String, Identity)>, TrainError> {
    let mut identities = Vec::new();
    for dir in sorted_entries(root)?.into_iter().filter(|p| p.is_dir()) {
        let images: Identity = sorted_entries(&dir)?
            .into_iter()
            .filter(|p| is_image(p))
            // A Market-style name inside a folder still tells the camera.
            .map(|p| {
                let cam = market_name(&p).map_or(0, |(_, cam)| cam);
                (p, cam)
            })
            .collect();
        if !images.is_empty() {
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            identities.push((name, images));
        }
    }
    Ok(identities)
}

/// Holds out the last `fraction` of identities. Their first image per camera is a query, the rest
/// the gallery; the re-ID protocol applies when they span cameras.
pub(super) fn held_out(identities: Vec<Identity>, fraction: f64, root: &Path) -> Result<Dataset, TrainError> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(TrainError::Config(format!("eval_fraction {fraction} is not in [0, 1)")));
    }
    if identities.len() < 3 {
        return Err(TrainError::Dataset(format!(
            "{} holds {} identities with images; training and evaluation need at least 3",
            root.display(),
            identities.len()
        )));
    }
    let held = ((identities.len() as f64 * fraction).round() as usize).clamp(1, identities.len() - 2);
    let split_at = identities.len() - held;
    Ok(split_identities(&identities[..split_at], &identities[split_at..]))
}

/// Training identities (pids from 0) and evaluation ones (pids after them). The evaluation
/// identities' first image per camera is a query and the rest the gallery when they span cameras;
/// otherwise every image queries the others.
fn split_identities(trained: &[Identity], evaluated: &[Identity]) -> Dataset {
    let split_at = trained.len();
    let train = Split { samples: samples_of(trained, 0), images: None };
    let eval = samples_of(evaluated, split_at);
    let cameras: std::collections::BTreeSet<i64> = eval.iter().map(|s| s.label.camid).collect();
    if cameras.len() > 1 {
        let mut first_seen = std::collections::BTreeSet::new();
        let (query, gallery): (Vec<Sample>, Vec<Sample>) =
            eval.into_iter().partition(|s| first_seen.insert((s.label.pid, s.label.camid)));
        Dataset {
            train,
            query: Split { samples: query, images: None },
            gallery: Split { samples: gallery, images: None },
            protocol: crate::eval::Protocol::ReId,
            hard_negatives: Vec::new(),
            spans: Vec::new(),
            links: Default::default(),
        }
    } else {
        Dataset::leave_one_out(train, Split { samples: eval, images: None })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::data::DatasetConfig;

    #[test]
    fn reads_folders_with_held_out_identities() {
        let root = temp("folders");
        for id in ["alice", "bob", "carol", "dave", "erin"] {
            for i in 0..3 {
                touch_jpeg(&root.join(id).join(format!("{i}.jpg")));
            }
        }
        std::fs::write(root.join("alice/notes.txt"), "not an image").unwrap();
        let d = DatasetConfig::Folders { path: root.clone(), eval_fraction: 0.4, feedback: None }.load().unwrap();
        assert_eq!(d.train.identities(), 3);
        assert_eq!(d.train.len(), 9);
        assert_eq!(d.query.pids(), vec![3, 3, 3, 4, 4, 4]);
        assert_eq!(d.protocol, crate::eval::Protocol::LeaveOneOut);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn feedback_merges_same_person_folders_and_pairs_hard_negatives() {
        let root = temp("feedback");
        for id in ["a", "b", "c", "d", "e", "f"] {
            for i in 0..2 {
                touch_jpeg(&root.join(id).join(format!("{i}.jpg")));
            }
        }
        let lines = [
            r#"{"same": true, "a": "c", "b": "a", "camera": "", "track": ""}"#,
            r#"{"same": false, "a": "b", "b": "d"}"#,
            r#"{"same": false, "a": "c", "b": "b"}"#,
            r#"{"same": false, "a": "a", "b": "f"}"#,
            r#"{"same": true, "a": "b", "b": "nobody"}"#,
            "",
        ];
        let file = root.join("pairs.jsonl");
        std::fs::write(&file, lines.join("\n")).unwrap();
        // Folders a+c, b, d, e, f: five identities; f (the last fifth) is held out.
        let d = DatasetConfig::Folders { path: root.clone(), eval_fraction: 0.2, feedback: Some(file.clone()) }
            .load()
            .unwrap();
        assert_eq!(d.train.identities(), 4);
        assert_eq!(d.train.pids(), vec![0, 0, 0, 0, 1, 1, 2, 2, 3, 3], "a and c are one identity");
        assert_eq!(d.hard_negatives, vec![(0, 1), (1, 2)], "b-d and (a+c)-b; a-f is held out");
        std::fs::write(&file, "{\"same\": maybe}").unwrap();
        let err =
            DatasetConfig::Folders { path: root.clone(), eval_fraction: 0.2, feedback: Some(file) }.load().unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        std::fs::remove_dir_all(root).unwrap();
    }
}
