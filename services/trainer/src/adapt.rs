//! Adapting the served model to the deployment's own cameras, and deciding whether the result
//! may replace it (`reid adapt`).
//!
//! A candidate is trained on the tracklets the ingester exported, with the recipe of the config
//! (pseudo-identities and the cluster memory need no labels). Whether it is better is decided on
//! what people said, not on what the candidate was trained to agree with: the feedback pairs the
//! identity service recorded (an operator's "same person" and "different people" about two
//! identities), each identity represented by the mean embedding of its stored crops. The judge is
//! the ROC AUC of "same" over those pairs (the chance that a random same-person pair scores above
//! a random different-people pair), computed for the served model and the candidate alike; the
//! candidate is published in the served model's place only if its AUC is higher by at least
//! `min_gain`. Too few judged pairs and nothing is trained: an adaptation nobody can check is not
//! deployed.
//!
//! Feedback about one tracklet (a sighting confirmed, rejected or split off in the console)
//! trains instead of judging: [`links_from_feedback`] turns it into links between the exported
//! tracklets, constraints on the pseudo-identities (`crate::data::links`). Each pair is used
//! once, so the judge never scores what the candidate was told.

use std::path::{Path, PathBuf};

use reid_model::EmbeddingModel;
use reid_model::preprocess::{DEFAULT_MAX_PIXELS, ImageInput, preprocess};

use std::collections::{BTreeMap, BTreeSet};

use crate::data::links::{TrackletKey, TrackletLink};
use crate::data::{self, FeedbackPair};
use crate::error::TrainError;

/// Crops per identity embedded for the judge (the first, in name order).
pub const MAX_CROPS_PER_IDENTITY: usize = 16;

/// The pairs the judge scores: identities with crops on disk, and who said what about them.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgedPairs {
    /// Each judged identity and its crop files.
    pub identities: Vec<(String, Vec<PathBuf>)>,
    /// `(a, b, same)`, indices into `identities`.
    pub pairs: Vec<(usize, usize, bool)>,
}

impl JudgedPairs {
    /// The feedback pairs in `feedback` (JSON lines, as `reid feedback` prints them) whose two
    /// identities both have image crops under `crops/<identity>/`; the others, and those about
    /// one tracklet (which train), are left out.
    pub fn read(crops: &Path, feedback: &Path) -> Result<Self, TrainError> {
        let lines = data::read_feedback(feedback)?;
        Self::from_feedback(crops, &lines)
    }

    pub fn from_feedback(crops: &Path, feedback: &[FeedbackPair]) -> Result<Self, TrainError> {
        let mut identities: Vec<(String, Vec<PathBuf>)> = Vec::new();
        let mut index = |id: &str| -> Result<Option<usize>, TrainError> {
            if let Some(i) = identities.iter().position(|(name, _)| name == id) {
                return Ok(Some(i));
            }
            let dir = crops.join(id);
            if id.is_empty() || !reid_model::card::is_folder_name(id) || !dir.is_dir() {
                return Ok(None);
            }
            let mut files: Vec<PathBuf> =
                data::sorted_entries(&dir)?.into_iter().filter(|p| data::is_image(p)).collect();
            files.truncate(MAX_CROPS_PER_IDENTITY);
            if files.is_empty() {
                return Ok(None);
            }
            identities.push((id.to_owned(), files));
            Ok(Some(identities.len() - 1))
        };
        let mut pairs = Vec::new();
        for f in feedback.iter().filter(|f| !f.names_a_tracklet()) {
            if let (Some(a), Some(b)) = (index(&f.a)?, index(&f.b)?)
                && a != b
            {
                pairs.push((a, b, f.same));
            }
        }
        Ok(JudgedPairs { identities, pairs })
    }

    /// How many judged pairs say "same" and how many "different".
    pub fn counts(&self) -> (usize, usize) {
        let same = self.pairs.iter().filter(|p| p.2).count();
        (same, self.pairs.len() - same)
    }
}

/// What the judge says of one model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    /// ROC AUC of "same" over the judged pairs.
    pub auc: f64,
    /// Mean cosine similarity of the same-person and of the different-people pairs.
    pub same_mean: f64,
    pub different_mean: f64,
}

/// Scores `model` on the judged pairs.
pub fn judge(model: &mut dyn EmbeddingModel, judged: &JudgedPairs) -> Result<Judgement, TrainError> {
    let card = model.card().clone();
    let mut means = Vec::with_capacity(judged.identities.len());
    for (_, files) in &judged.identities {
        let mut inputs = Vec::with_capacity(files.len());
        for file in files {
            let bytes = data::read_bounded(file, data::MAX_IMAGE_FILE_BYTES)?;
            let prepared = preprocess(ImageInput::Encoded(&bytes), card.input, &card.normalization, DEFAULT_MAX_PIXELS)
                .map_err(|e| TrainError::Dataset(format!("{}: {e}", file.display())))?;
            inputs.push(prepared.data);
        }
        let rows: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
        let embedded = model.embed(&rows)?;
        let mut mean = vec![0f32; card.embedding_dim as usize];
        for e in &embedded {
            mean.iter_mut().zip(e).for_each(|(m, x)| *m += x);
        }
        let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        mean.iter_mut().for_each(|x| *x /= norm);
        means.push(mean);
    }
    let scores: Vec<f32> =
        judged.pairs.iter().map(|&(a, b, _)| means[a].iter().zip(&means[b]).map(|(x, y)| x * y).sum()).collect();
    let same: Vec<bool> = judged.pairs.iter().map(|p| p.2).collect();
    let mean_of = |want: bool| {
        let s: Vec<f64> = scores.iter().zip(&same).filter(|(_, s)| **s == want).map(|(v, _)| f64::from(*v)).collect();
        s.iter().sum::<f64>() / s.len().max(1) as f64
    };
    Ok(Judgement { auc: auc(&scores, &same), same_mean: mean_of(true), different_mean: mean_of(false) })
}

/// The links the feedback about single tracklets makes, given each identity's tracklets now
/// (`sightings`, as the identity service lists them):
///
/// - tracklet `t` confirmed as identity `a`: `t` is one person with every other tracklet
///   confirmed as `a`;
/// - `t` rejected from `a`, or split off it: `t` is not the person of any other tracklet of `a`
///   (those it holds now and those confirmed as it), except those rejected from `a` too: two
///   tracklets that are both not `a` may well be one person.
///
/// Pairs of two identities make no link: they judge.
pub fn links_from_feedback(
    feedback: &[FeedbackPair],
    sightings: &BTreeMap<String, Vec<TrackletKey>>,
) -> Vec<TrackletLink> {
    let about_tracklets: Vec<(&FeedbackPair, TrackletKey)> = feedback
        .iter()
        .filter(|f| f.names_a_tracklet())
        .map(|f| (f, TrackletKey::new(f.camera.clone(), f.track.clone())))
        .collect();
    let mut confirmed: BTreeMap<&str, BTreeSet<&TrackletKey>> = BTreeMap::new();
    for (f, t) in about_tracklets.iter().filter(|(f, _)| f.same) {
        confirmed.entry(f.a.as_str()).or_default().insert(t);
    }
    let mut links = BTreeSet::new();
    let mut link = |same: bool, a: &TrackletKey, b: &TrackletKey| {
        if a != b {
            let (a, b) = if a < b { (a, b) } else { (b, a) };
            links.insert((same, a.clone(), b.clone()));
        }
    };
    for tracks in confirmed.values() {
        let tracks: Vec<&&TrackletKey> = tracks.iter().collect();
        for (i, a) in tracks.iter().enumerate() {
            for b in &tracks[i + 1..] {
                link(true, a, b);
            }
        }
    }
    let mut rejected: BTreeMap<&str, BTreeSet<&TrackletKey>> = BTreeMap::new();
    for (f, t) in about_tracklets.iter().filter(|(f, _)| !f.same) {
        rejected.entry(f.a.as_str()).or_default().insert(t);
    }
    for (a, out) in &rejected {
        let held = sightings.get(*a).into_iter().flatten();
        let sure = confirmed.get(a).into_iter().flatten().copied();
        let members: BTreeSet<&TrackletKey> = held.chain(sure).filter(|k| !out.contains(k)).collect();
        for t in out {
            for other in &members {
                link(false, t, other);
            }
        }
    }
    links.into_iter().map(|(same, a, b)| TrackletLink { same, a, b }).collect()
}

/// ROC AUC of `same` under `scores` (higher is more alike): over every same/different pair of
/// pairs, the share where the same-person pair scores higher, ties counting half (Mann-Whitney).
/// 0.5 when either kind is missing.
pub fn auc(scores: &[f32], same: &[bool]) -> f64 {
    let positives: Vec<f32> = scores.iter().zip(same).filter(|(_, s)| **s).map(|(v, _)| *v).collect();
    let negatives: Vec<f32> = scores.iter().zip(same).filter(|(_, s)| !**s).map(|(v, _)| *v).collect();
    if positives.is_empty() || negatives.is_empty() {
        return 0.5;
    }
    let mut wins = 0.0;
    for p in &positives {
        for n in &negatives {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (positives.len() * negatives.len()) as f64
}

/// Whether the candidate replaces the served model: it must beat it by `min_gain` of AUC; with no
/// served model (a first deployment) any candidate is taken.
pub fn replaces(candidate: Judgement, served: Option<Judgement>, min_gain: f64) -> bool {
    served.is_none_or(|served| candidate.auc >= served.auc + min_gain && candidate.auc > served.auc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_is_the_share_of_correctly_ordered_same_different_pairs() {
        // Same pairs 0.9, 0.6; different pairs 0.7, 0.6, 0.1: of 6 comparisons, 0.9 wins 3, 0.6
        // beats 0.1, ties 0.6 (half) and loses to 0.7: (3 + 1.5) / 6 = 0.75.
        let scores = [0.9, 0.7, 0.6, 0.6, 0.1];
        let same = [true, false, true, false, false];
        assert!((auc(&scores, &same) - 0.75).abs() < 1e-12);
        assert_eq!(auc(&[0.9, 0.8], &[true, true]), 0.5, "no different pair: no judgement");
        assert_eq!(auc(&[0.2, 0.8], &[false, true]), 1.0);
    }

    #[test]
    fn a_candidate_must_beat_the_served_model() {
        let j = |auc| Judgement { auc, same_mean: 0.0, different_mean: 0.0 };
        assert!(replaces(j(0.8), None, 0.01), "first deployment");
        assert!(replaces(j(0.8), Some(j(0.7)), 0.01));
        assert!(!replaces(j(0.705), Some(j(0.7)), 0.01), "not by enough");
        assert!(!replaces(j(0.7), Some(j(0.7)), 0.0), "equal is not better");
        assert!(!replaces(j(0.6), Some(j(0.7)), 0.0));
    }

    #[test]
    fn only_pairs_of_identities_with_image_crops_are_judged() {
        let dir = tempfile::tempdir().unwrap();
        for (id, file) in [("a", "0.jpg"), ("a", "1.png"), ("b", "x.jpg"), ("c", "raw.rawpb")] {
            std::fs::create_dir_all(dir.path().join(id)).unwrap();
            std::fs::write(dir.path().join(id).join(file), b"").unwrap();
        }
        let pair = |same, a: &str, b: &str| FeedbackPair { same, a: a.into(), b: b.into(), ..Default::default() };
        let feedback = [
            pair(true, "a", "b"),
            // About one tracklet: trains, never judged.
            FeedbackPair { camera: "east".into(), track: "7".into(), ..pair(false, "a", "b") },
            pair(false, "b", "c"), // c has no image crop
            pair(false, "a", "nobody"),
            pair(false, "../a", "b"), // not an identity folder name
            pair(false, "b", "a"),
        ];
        let judged = JudgedPairs::from_feedback(dir.path(), &feedback).unwrap();
        assert_eq!(
            judged.identities.iter().map(|(id, files)| (id.as_str(), files.len())).collect::<Vec<_>>(),
            [("a", 2), ("b", 1)]
        );
        assert_eq!(judged.pairs, vec![(0, 1, true), (1, 0, false)]);
        assert_eq!(judged.counts(), (1, 1));
    }

    #[test]
    fn feedback_about_tracklets_becomes_links_and_pairs_of_identities_do_not() {
        let key = |t: &str| TrackletKey::new("east", t);
        let about = |same, a: &str, track: &str| FeedbackPair {
            same,
            a: a.into(),
            camera: "east".into(),
            track: track.into(),
            ..Default::default()
        };
        let sightings =
            BTreeMap::from([("A".to_owned(), vec![key("1"), key("2"), key("3")]), ("B".to_owned(), vec![key("4")])]);
        let feedback = [
            about(true, "A", "1"),
            about(true, "A", "2"),
            // Rejected from A although A still holds it, and so is 5 (not held): 3 and 5 are both
            // not A, which says nothing of the two.
            about(false, "A", "3"),
            about(false, "A", "5"),
            // Split off B into a new identity (recorded with the new one as `b`).
            FeedbackPair { b: "C".into(), ..about(false, "B", "4") },
            // Two identities: judged, not linked.
            FeedbackPair { same: false, a: "A".into(), b: "B".into(), ..Default::default() },
        ];
        let links = links_from_feedback(&feedback, &sightings);
        let l = |same, a: &str, b: &str| TrackletLink { same, a: key(a), b: key(b) };
        assert_eq!(
            links,
            vec![l(false, "1", "3"), l(false, "1", "5"), l(false, "2", "3"), l(false, "2", "5"), l(true, "1", "2")]
        );
        // B held only the tracklet split off it: nothing to keep it apart from.
        assert!(links_from_feedback(&feedback[4..], &sightings).is_empty());
        assert!(links_from_feedback(&feedback, &BTreeMap::new()).contains(&l(false, "1", "3")), "confirmed as A");
    }
}
