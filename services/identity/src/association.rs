//! The matching rules, as pure functions: tracklet aggregation, ranking hits by identity, the
//! open-set decision (threshold plus margin over the runner-up), and camera transit times.

use serde::Deserialize;

/// `[[association.transit]]`: a tracklet on `to` that starts less than `min_seconds` after one on
/// `from` ended is not that person.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TransitRule {
    pub from: String,
    pub to: String,
    pub min_seconds: f64,
}

/// A tracklet's embedding: the quality-weighted mean of its normalised crop embeddings, normalised.
/// Qualities are clamped to [0, 1]; when none is positive every crop counts the same.
pub fn aggregate(embeddings: &[Vec<f32>], qualities: &[f32]) -> Option<Vec<f32>> {
    let dim = embeddings.first()?.len();
    let weights: Vec<f32> = qualities.iter().map(|q| if q.is_finite() { q.clamp(0.0, 1.0) } else { 0.0 }).collect();
    let uniform = !weights.iter().any(|w| *w > 0.0);
    let mut mean = vec![0.0f32; dim];
    for (i, e) in embeddings.iter().enumerate() {
        let mut e = e.clone();
        if e.len() != dim || !normalise(&mut e) {
            return None;
        }
        let w = if uniform { 1.0 } else { weights.get(i).copied().unwrap_or(0.0) };
        mean.iter_mut().zip(&e).for_each(|(m, x)| *m += w * x);
    }
    normalise(&mut mean).then_some(mean)
}

/// One stored vector that came back from a search, reduced to what ranking needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub identity: String,
    pub score: f32,
    pub camera: Option<String>,
    /// Start and end of the tracklet, in ms since the epoch; absent for enrolled images.
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
}

/// The identities among the matches, each scored by its best match, best first.
pub fn rank_identities(matches: &[Match]) -> Vec<Match> {
    rank_identities_by(matches, Linkage::Nearest)
}

/// How a tracklet is scored against an identity's stored sightings when it is associated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Linkage {
    /// The identity's single closest sighting (single linkage). One look-alike sighting in an
    /// identity draws in the next look-alike, and errors chain.
    Nearest,
    /// The mean of the identity's `top` closest sightings among the hits (all it has, when it
    /// has fewer): an identity must be close on several of its sightings, so one stray sighting
    /// does not decide.
    Average {
        #[serde(default = "default_top")]
        top: usize,
    },
}

fn default_top() -> usize {
    2
}

/// The mean of the two closest sightings: on four camera views of the labelled clip it is never
/// below the single nearest sighting, and three lose where an identity has only one sighting
/// close to a changed camera's colours (docs/evaluation.md, "Linkage").
impl Default for Linkage {
    fn default() -> Self {
        Linkage::Average { top: default_top() }
    }
}

impl Linkage {
    fn top(self) -> usize {
        match self {
            Linkage::Nearest => 1,
            Linkage::Average { top } => top.max(1),
        }
    }
}

/// The identities among the matches, best first, each scored by `linkage` over its matches and
/// carrying its closest match's camera and times.
pub fn rank_identities_by(matches: &[Match], linkage: Linkage) -> Vec<Match> {
    let top = linkage.top();
    let mut sorted: Vec<&Match> = matches.iter().collect();
    sorted.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut ranked: Vec<(Match, f32, usize)> = Vec::new();
    for m in sorted {
        match ranked.iter_mut().find(|(b, _, _)| b.identity == m.identity) {
            Some((_, sum, n)) if *n < top => {
                *sum += m.score;
                *n += 1;
            }
            Some(_) => {}
            None => ranked.push((m.clone(), m.score, 1)),
        }
    }
    let mut out: Vec<Match> =
        ranked.into_iter().map(|(best, sum, n)| Match { score: sum / n as f32, ..best }).collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out
}

/// Puts matches from other cameras on the same scale as matches from `camera`: each is shifted
/// by `threshold - cross_camera_threshold`, so that a cross-camera match at its own threshold
/// ranks and decides like a same-camera match at the main one. Cross-camera similarities run
/// lower than one camera's near-duplicates (other light, colour, angle and size), and one
/// threshold for both either joins look-alikes on one camera or misses people between cameras.
/// Enrolled images (no camera) are left as they are.
pub fn shift_cross_camera(matches: &mut [Match], camera: &str, threshold: f32, cross_camera_threshold: f32) {
    let shift = threshold - cross_camera_threshold;
    for m in matches.iter_mut().filter(|m| m.camera.as_deref().is_some_and(|c| c != camera)) {
        m.score += shift;
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Known {
        identity: String,
        score: f32,
        margin: f32,
    },
    /// No identity is close enough, or two are too close to tell apart.
    Unknown {
        best_score: f32,
        margin: f32,
    },
}

/// Open-set decision over identities ranked by [`rank_identities`]. The margin is the best score
/// minus the runner-up identity's (the best score itself when there is no runner-up).
pub fn decide(ranked: &[Match], threshold: f32, min_margin: f32) -> Verdict {
    let Some(best) = ranked.first() else {
        return Verdict::Unknown { best_score: 0.0, margin: 0.0 };
    };
    let margin = best.score - ranked.get(1).map_or(0.0, |r| r.score);
    if best.score >= threshold && margin >= min_margin {
        Verdict::Known { identity: best.identity.clone(), score: best.score, margin }
    } else {
        Verdict::Unknown { best_score: best.score, margin }
    }
}

/// The identities among `hits` (each match with its vector, L2-normalised) in k-reciprocal
/// re-ranked order for `query` ([`reid_cluster::rerank`] over the query and the hits): an
/// identity ranks by its best re-ranked distance, and keeps the cosine score of its best match,
/// so that the threshold still means what it was calibrated for. A look-alike that is close to
/// the query but whose own neighbours are other pictures of the look-alike falls behind the
/// query's person, whose pictures and the query are each other's neighbours.
pub fn rerank_identities(query: &[f32], hits: &[(Match, Vec<f32>)], settings: reid_cluster::Rerank) -> Vec<Match> {
    let n = hits.len() + 1;
    let mut q = query.to_vec();
    normalise(&mut q);
    let vectors: Vec<Vec<f32>> = std::iter::once(q).chain(hits.iter().map(|(_, v)| v.clone())).collect();
    let distance: Vec<Vec<f64>> = reid_cluster::cosine_similarities(&vectors)
        .into_iter()
        .map(|row| row.into_iter().map(|s| (1.0 - s).max(0.0)).collect())
        .collect();
    let reranked = &reid_cluster::rerank(&distance, 0..1, 1..n, settings)[0];
    // Per identity: (best re-ranked distance, best cosine match).
    let mut best: Vec<(f64, Match)> = Vec::new();
    for ((m, _), d) in hits.iter().zip(reranked) {
        match best.iter_mut().find(|(_, b)| b.identity == m.identity) {
            Some((bd, b)) => {
                *bd = bd.min(*d);
                if m.score > b.score {
                    *b = m.clone();
                }
            }
            None => best.push((*d, m.clone())),
        }
    }
    best.sort_by(|a, b| a.0.total_cmp(&b.0));
    best.into_iter().map(|(_, m)| m).collect()
}

/// The open-set decision on a re-ranked list: the first identity is known when its cosine score
/// reaches the threshold. The margin (over the best other cosine score) is reported, not
/// required: re-ranking has already decided between close identities.
pub fn decide_reranked(ranked: &[Match], threshold: f32) -> Verdict {
    let Some(best) = ranked.first() else {
        return Verdict::Unknown { best_score: 0.0, margin: 0.0 };
    };
    let runner_up = ranked[1..].iter().map(|m| m.score).fold(0.0f32, f32::max);
    let margin = best.score - runner_up;
    if best.score >= threshold {
        Verdict::Known { identity: best.identity.clone(), score: best.score, margin }
    } else {
        Verdict::Unknown { best_score: best.score, margin }
    }
}

/// Whether one person could appear in both tracklets given the cameras' transit times: whichever
/// tracklet starts later must start at least the rule's time after the other ends.
pub fn transit_allows(rules: &[TransitRule], a: &Match, b_camera: &str, b_start_ms: i64, b_end_ms: i64) -> bool {
    let (Some(a_camera), Some(a_start), Some(a_end)) = (a.camera.as_deref(), a.start_ms, a.end_ms) else {
        return true;
    };
    if a_camera == b_camera {
        return true;
    }
    let (from, to, gap_ms) = if a_start <= b_start_ms {
        (a_camera, b_camera, b_start_ms - a_end)
    } else {
        (b_camera, a_camera, a_start - b_end_ms)
    };
    rules.iter().filter(|r| r.from == from && r.to == to).all(|r| gap_ms as f64 >= r.min_seconds * 1000.0)
}

pub use reid_cluster::{agreeing, normalise, overlap_ms};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re_ranking_puts_the_query_s_person_before_a_closer_look_alike() {
        // Pictures on the unit circle at 0.2 rad a step: person "a" drifts along a chain
        // (0.25 .. 2.45), person "b" sits tight (3.5 .. 3.8); the query is "a" at 3.0, nearer
        // by cosine to b's first picture than to a's last. Its k-reciprocal neighbours are a's.
        let at = |x: f32| vec![(0.2 * x).cos(), (0.2 * x).sin()];
        let query = at(3.0);
        let pictures = [
            ("a", 0.25),
            ("a", 0.8),
            ("a", 1.35),
            ("a", 1.9),
            ("a", 2.45),
            ("b", 3.5),
            ("b", 3.6),
            ("b", 3.7),
            ("b", 3.8),
        ];
        let hits: Vec<(Match, Vec<f32>)> = pictures
            .iter()
            .map(|&(who, x)| {
                let v = at(x);
                let score = v.iter().zip(&query).map(|(a, b)| a * b).sum();
                (m(who, score), v)
            })
            .collect();
        let plain = rank_identities(&hits.iter().map(|(m, _)| m.clone()).collect::<Vec<_>>());
        assert_eq!(plain[0].identity, "b", "by cosine the look-alike leads");
        let settings = reid_cluster::Rerank { k1: 3, k2: 1, lambda: 0.3 };
        let reranked = rerank_identities(&query, &hits, settings);
        assert_eq!(reranked.iter().map(|m| m.identity.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        // Each keeps its best cosine score: a's is its picture at 2.45 (0.11 rad away).
        assert!((reranked[0].score - (0.2f32 * 0.55).cos()).abs() < 1e-6);
        match decide_reranked(&reranked, 0.99) {
            Verdict::Known { identity, margin, .. } => {
                assert_eq!(identity, "a");
                assert!(margin < 0.0, "b is closer by cosine: {margin}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(decide_reranked(&reranked, 0.999), Verdict::Unknown { .. }));
    }

    fn m(identity: &str, score: f32) -> Match {
        Match { identity: identity.into(), score, camera: None, start_ms: None, end_ms: None }
    }

    #[test]
    fn average_linkage_needs_several_close_sightings() {
        // "look-alike" has one sighting very close (a chained error) and the rest far; "person"
        // is close on all of hers.
        let hits = [
            m("look-alike", 0.93),
            m("person", 0.9),
            m("person", 0.88),
            m("look-alike", 0.6),
            m("person", 0.86),
            m("look-alike", 0.55),
            m("person", 0.5),
        ];
        let nearest = rank_identities(&hits);
        assert_eq!((nearest[0].identity.as_str(), nearest[0].score), ("look-alike", 0.93));
        let average = rank_identities_by(&hits, Linkage::Average { top: 3 });
        assert_eq!(average[0].identity, "person");
        assert!((average[0].score - 0.88).abs() < 1e-6, "{average:?}");
        assert!((average[1].score - (0.93 + 0.6 + 0.55) / 3.0).abs() < 1e-6, "{average:?}");
        // An identity with fewer sightings than `top` is scored on those it has.
        let single = rank_identities_by(&[m("new", 0.8)], Linkage::Average { top: 3 });
        assert_eq!(single[0].score, 0.8);
        assert_eq!(rank_identities_by(&hits, Linkage::Average { top: 1 }), nearest, "top 1 is nearest");
        let parsed: Linkage = toml::from_str("kind = \"average\"").unwrap();
        assert_eq!(parsed, Linkage::Average { top: 2 });
        assert_eq!(parsed, Linkage::default(), "an unconfigured identity service averages the top 2");
    }

    #[test]
    fn aggregate_is_the_weighted_mean_of_normalised_vectors() {
        // [3,4] -> [0.6,0.8]; [0,2] -> [0,1]; weights 1 and 0.5 -> [0.6, 1.3] / |.|
        let got = aggregate(&[vec![3.0, 4.0], vec![0.0, 2.0]], &[1.0, 0.5]).unwrap();
        let n = (0.6f32 * 0.6 + 1.3 * 1.3).sqrt();
        assert!((got[0] - 0.6 / n).abs() < 1e-6 && (got[1] - 1.3 / n).abs() < 1e-6, "{got:?}");
        // No positive quality: uniform weights.
        let got = aggregate(&[vec![1.0, 0.0], vec![0.0, 1.0]], &[0.0, 0.0]).unwrap();
        assert!((got[0] - got[1]).abs() < 1e-6);
        assert_eq!(aggregate(&[vec![0.0, 0.0]], &[1.0]), None);
        assert_eq!(aggregate(&[vec![1.0, 0.0], vec![1.0]], &[1.0, 1.0]), None, "mixed dimensions");
        assert_eq!(aggregate(&[], &[]), None);
    }

    #[test]
    fn cross_camera_matches_are_judged_against_their_own_threshold() {
        let on = |camera: Option<&str>, identity: &str, score: f32| Match {
            camera: camera.map(Into::into),
            ..m(identity, score)
        };
        // "here" was seen on this camera at 0.78; "there" on another at 0.72; "photo" is enrolled.
        let mut hits = vec![on(Some("west"), "here", 0.78), on(Some("east"), "there", 0.72), on(None, "photo", 0.7)];
        assert!(matches!(decide(&rank_identities(&hits), 0.8, 0.05), Verdict::Unknown { .. }), "one threshold");
        shift_cross_camera(&mut hits, "west", 0.8, 0.7);
        let scores: Vec<f32> = hits.iter().map(|h| h.score).collect();
        assert!((scores[0] - 0.78).abs() < 1e-6 && (scores[1] - 0.82).abs() < 1e-6 && (scores[2] - 0.7).abs() < 1e-6);
        // 0.72 is 0.02 above the cross-camera threshold, "here" 0.02 below the main one.
        match decide(&rank_identities(&hits), 0.8, 0.03) {
            Verdict::Known { identity, margin, .. } => {
                assert_eq!(identity, "there");
                assert!((margin - 0.04).abs() < 1e-6, "{margin}");
            }
            v => panic!("{v:?}"),
        }
        // Equal thresholds change nothing.
        let mut same = vec![on(Some("east"), "there", 0.72)];
        shift_cross_camera(&mut same, "west", 0.8, 0.8);
        assert_eq!(same[0].score, 0.72);
    }

    #[test]
    fn decision_needs_threshold_and_margin() {
        let ranked = rank_identities(&[m("a", 0.9), m("b", 0.7), m("a", 0.8), m("c", 0.2)]);
        assert_eq!(ranked.iter().map(|r| r.identity.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(decide(&ranked, 0.8, 0.1), Verdict::Known { identity: "a".into(), score: 0.9, margin: 0.9 - 0.7 });
        assert!(matches!(decide(&ranked, 0.95, 0.1), Verdict::Unknown { .. }), "below threshold");
        assert!(matches!(decide(&ranked, 0.8, 0.25), Verdict::Unknown { .. }), "runner-up too close");
        assert!(matches!(decide(&[], 0.0, 0.0), Verdict::Unknown { .. }));
        assert!(matches!(decide(&[m("a", 0.6)], 0.5, 0.5), Verdict::Known { .. }), "margin to nobody");
    }

    #[test]
    fn transit_rules_forbid_impossible_moves() {
        let rules = vec![TransitRule { from: "a".into(), to: "b".into(), min_seconds: 10.0 }];
        let seen_on_a = Match { camera: Some("a".into()), start_ms: Some(0), end_ms: Some(5_000), ..m("x", 1.0) };
        assert!(!transit_allows(&rules, &seen_on_a, "b", 9_000, 12_000), "4 s after leaving a");
        assert!(transit_allows(&rules, &seen_on_a, "b", 15_000, 16_000), "10 s after leaving a");
        assert!(transit_allows(&rules, &seen_on_a, "c", 6_000, 7_000), "no rule for a -> c");
        assert!(transit_allows(&rules, &seen_on_a, "a", 1_000, 2_000), "same camera");
        // b seen first, then a: the rule is directional, so b -> a is unconstrained.
        let seen_on_a_later = Match { start_ms: Some(20_000), end_ms: Some(21_000), ..seen_on_a.clone() };
        assert!(transit_allows(&rules, &seen_on_a_later, "b", 18_000, 19_000));
        assert!(transit_allows(&rules, &m("enrolled", 1.0), "b", 0, 1), "enrolled images have no camera");
    }
}
