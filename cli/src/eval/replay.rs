//! `reid eval mtmc --replay`: the tracklets one pipeline run delivered, observed again by a fresh
//! identity service with other association settings. The detector, tracker and embeddings stay
//! exactly as they were, so two settings are compared on the same input, in a deterministic
//! order, in about a second each instead of a whole run.

use std::collections::BTreeMap;

use std::sync::Arc;

use anyhow::Context;
use reid_identity::IdentityError;
use reid_identity::association::{Linkage, aggregate, normalise};
use reid_identity::config::AssociationConfig;
use reid_identity::embedder::{EmbedderClient, ModelDescription};
use reid_identity::identities::{Tracklet, TrackletCrop};
use reid_identity::metrics::IdentityMetrics;
use reid_identity::model::ModelKey;
use reid_identity::{Identities, IdentityConfig};

/// Association settings to replay with; what is unset keeps the run's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Variant {
    pub threshold: Option<f32>,
    pub cross_camera_threshold: Option<f32>,
    pub linkage_top: Option<usize>,
    pub min_margin: Option<f32>,
    /// The merge pass's threshold (`Some(None)`: no pass), run once after every tracklet was
    /// observed.
    pub merge_threshold: Option<Option<f32>>,
    /// `association.same_camera_overlap`, seconds.
    pub same_camera_overlap: Option<f32>,
    /// `association.crop_agreement`.
    pub crop_agreement: Option<f32>,
    /// Every crop embedding less its camera's mean over the whole run ([`centre_per_camera`]).
    pub centre: bool,
    /// Only the crops on each tracklet's own ground-truth person (`reid eval mtmc`): tracklets
    /// as a tracker that never swaps would have made them, an oracle.
    pub pure: bool,
    /// Only tracklets with a crop on a labelled person observed (`reid eval mtmc`, an oracle):
    /// nothing off the labelled people chains their identities.
    pub labelled: bool,
    /// One camera's consecutive tracklets of one labelled person, at most this many seconds
    /// apart, observed as one (`reid eval mtmc`, an oracle: a tracker that carried everyone across
    /// occlusions).
    pub join_s: Option<f32>,
    /// Stitch one camera's tracklets without ground truth ([`stitch`]): at most this many
    /// seconds apart.
    pub stitch_s: Option<f32>,
    /// [`stitch`]'s least cosine similarity of the two tracklets' mean crops (0.7 when unset).
    pub stitch_similarity: Option<f32>,
}

impl Variant {
    /// `threshold=0.8,cross=0.7,top=3,margin=0.05,merge=0.7` (or `merge=off`), `overlap=1`
    /// (seconds), `agree=0.7`, `centre=on`, `pure=on`, `labelled=on` and `join=5` (seconds), any of them.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut v = Variant::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| format!("`{part}` is not key=value"))?;
            let number = |value: &str| value.parse::<f32>().map_err(|e| format!("{key}: {e}"));
            match key {
                "threshold" => v.threshold = Some(number(value)?),
                "cross" => v.cross_camera_threshold = Some(number(value)?),
                "margin" => v.min_margin = Some(number(value)?),
                "merge" => v.merge_threshold = Some(crate::playback::merge_threshold(value)?),
                "top" => v.linkage_top = Some(value.parse().map_err(|e| format!("top: {e}"))?),
                "overlap" => v.same_camera_overlap = Some(number(value)?),
                "agree" => v.crop_agreement = Some(number(value)?),
                "centre" => v.centre = on_off(key, value)?,
                "pure" => v.pure = on_off(key, value)?,
                "labelled" => v.labelled = on_off(key, value)?,
                "join" => v.join_s = Some(number(value)?),
                "stitch" => v.stitch_s = Some(number(value)?),
                "stitch_sim" => v.stitch_similarity = Some(number(value)?),
                other => {
                    return Err(format!(
                        "unknown key `{other}` (threshold, cross, top, margin, merge, overlap, agree, centre, pure, labelled, join, stitch, stitch_sim)"
                    ));
                }
            }
        }
        Ok(v)
    }

    pub fn apply(&self, base: &AssociationConfig) -> AssociationConfig {
        let mut a = base.clone();
        if let Some(t) = self.threshold {
            a.threshold = Some(t);
        }
        if let Some(t) = self.cross_camera_threshold {
            a.cross_camera_threshold = Some(t);
        }
        if let Some(m) = self.min_margin {
            a.observe_min_margin = m;
        }
        if let Some(top) = self.linkage_top {
            a.linkage = linkage(top);
        }
        if let Some(t) = self.merge_threshold {
            a.merge_threshold = t;
            a.merge_pass = t.is_some();
        }
        if let Some(seconds) = self.same_camera_overlap {
            a.same_camera_overlap = std::time::Duration::from_secs_f32(seconds.max(0.0));
        }
        if let Some(min) = self.crop_agreement {
            a.crop_agreement = Some(min);
        }
        a
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on = |set: bool, key: &str| set.then(|| format!("{key}=on"));
        let parts: Vec<String> = [
            self.threshold.map(|t| format!("threshold={t}")),
            self.cross_camera_threshold.map(|t| format!("cross={t}")),
            self.linkage_top.map(|t| format!("top={t}")),
            self.min_margin.map(|m| format!("margin={m}")),
            self.merge_threshold.map(|t| t.map_or_else(|| "merge=off".into(), |t| format!("merge={t}"))),
            self.same_camera_overlap.map(|s| format!("overlap={s}")),
            self.crop_agreement.map(|t| format!("agree={t}")),
            on(self.centre, "centre"),
            on(self.pure, "pure"),
            on(self.labelled, "labelled"),
            self.join_s.map(|s| format!("join={s}")),
            self.stitch_s.map(|s| format!("stitch={s}")),
            self.stitch_similarity.map(|s| format!("stitch_sim={s}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        f.write_str(&parts.join(","))
    }
}

fn on_off(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{key}: `{value}` is not on or off")),
    }
}

/// `top` closest sightings averaged; 0 and 1 are the single nearest.
pub fn linkage(top: usize) -> Linkage {
    match top {
        0 | 1 => Linkage::Nearest,
        top => Linkage::Average { top },
    }
}

/// One delivered tracklet as the identity service received it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub camera: String,
    pub track: String,
    /// When it ended on the scene's clock (the camera's own clock less its offset): the order
    /// of delivery.
    pub ended_ms: i64,
    pub crops: Vec<TrackletCrop>,
}

/// The deliveries with every crop embedding L2-normalised and less the mean of its camera's
/// normalised crop embeddings over the whole run: what a camera adds to everyone it sees (its
/// colour cast, its angle) is taken out, as camera-aware normalisation does in unsupervised
/// re-ID. The mean includes tracklets that end after the one being observed, so this is an upper
/// bound on what a running mean in the identity service could give. Similarities of centred
/// embeddings are lower: replay them with a lower threshold.
pub fn centre_per_camera(deliveries: &[Delivery]) -> Vec<Delivery> {
    let mut centred = deliveries.to_vec();
    let mut sums: BTreeMap<String, (Vec<f32>, usize)> = BTreeMap::new();
    for d in &mut centred {
        for e in d.crops.iter_mut().filter_map(|c| c.embedding.as_mut()) {
            normalise(e);
            let (sum, count) = sums.entry(d.camera.clone()).or_insert_with(|| (vec![0.0; e.len()], 0));
            sum.iter_mut().zip(e.iter()).for_each(|(s, x)| *s += x);
            *count += 1;
        }
    }
    for d in &mut centred {
        let (sum, count) = &sums[&d.camera];
        for e in d.crops.iter_mut().filter_map(|c| c.embedding.as_mut()) {
            e.iter_mut().zip(sum).for_each(|(x, s)| *x -= s / *count as f32);
        }
    }
    centred
}

/// How [`stitch`] joins one camera's tracklets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stitch {
    /// The most time from one tracklet's end to the next one's start.
    pub max_gap_ms: i64,
    /// The least cosine similarity of their mean crop embeddings.
    pub min_similarity: f32,
    /// How far a person may have walked between the last crop of one and the first of the next,
    /// in heights of the earlier box per second, plus one height.
    pub heights_per_second: f32,
}

/// Tracklet stitching, without ground truth: each of `kept` (in the order they start, `starts`
/// on the scene's clock) continues the tracklet of its camera that ended at most `max_gap_ms`
/// before it started, whose last crop is near its first one (the person could have walked there
/// in between), and whose mean crop looks most like its own, at least `min_similarity`; a
/// tracklet is continued once. The groups are observed as one tracklet each.
pub fn stitch(deliveries: &[Delivery], starts: &[i64], kept: &[usize], rule: Stitch) -> Vec<Vec<usize>> {
    // Each tracklet's mean crop (as the identity service aggregates, every crop weighed the same)
    // and its first and last crop with a box: compared for every later candidate.
    let means: BTreeMap<usize, Vec<f32>> = kept
        .iter()
        .map(|&i| {
            let embeddings: Vec<Vec<f32>> = deliveries[i].crops.iter().filter_map(|c| c.embedding.clone()).collect();
            (i, aggregate(&embeddings, &[]).unwrap_or_default())
        })
        .collect();
    // (x, y) of a crop's box centre, its height, and when it was taken.
    let place = |c: &TrackletCrop| c.bbox.map(|[x, y, w, h]| (x + w / 2.0, y + h / 2.0, h, c.at_ms));
    let ends: BTreeMap<usize, (Option<_>, Option<_>)> = kept
        .iter()
        .map(|&i| {
            let boxed = || deliveries[i].crops.iter().filter(|c| c.bbox.is_some());
            let first = boxed().min_by_key(|c| c.at_ms).and_then(place);
            let last = boxed().max_by_key(|c| c.at_ms).and_then(place);
            (i, (first, last))
        })
        .collect();
    let mut order = kept.to_vec();
    order.sort_by_key(|&i| (starts[i], i));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    // Group index by the tracklet that ends it, while it can still be continued.
    let mut tails: BTreeMap<usize, usize> = BTreeMap::new();
    for i in order {
        let d = &deliveries[i];
        let best = tails
            .keys()
            .copied()
            .filter(|&j| {
                let e = &deliveries[j];
                let gap = starts[i] - e.ended_ms;
                e.camera == d.camera && (0..=rule.max_gap_ms).contains(&gap)
            })
            .filter(|&j| match (ends[&j].1, ends[&i].0) {
                (Some((x0, y0, h, t0)), Some((x1, y1, _, t1))) => {
                    let seconds = t1.zip(t0).map_or(0.0, |(b, a)| (b - a).max(0) as f32 / 1000.0);
                    ((x1 - x0).powi(2) + (y1 - y0).powi(2)).sqrt() <= h * (1.0 + rule.heights_per_second * seconds)
                }
                _ => false,
            })
            .map(|j| (j, means[&j].iter().zip(&means[&i]).map(|(a, b)| a * b).sum::<f32>()))
            .filter(|(_, similarity)| *similarity >= rule.min_similarity)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((j, _)) => {
                let g = tails.remove(&j).unwrap_or_default();
                groups[g].push(i);
                tails.insert(i, g);
            }
            None => {
                tails.insert(i, groups.len());
                groups.push(vec![i]);
            }
        }
    }
    groups
}

/// The model that made the replayed embeddings, as the identity service asks its embedder for it
/// (so that it builds that model's gallery); it embeds nothing, since every crop carries its
/// embedding.
struct Recorded(ModelDescription);

#[tonic::async_trait]
impl EmbedderClient for Recorded {
    async fn embed(&self, _images: Vec<reid_proto::v1::Image>) -> Result<(Vec<Vec<f32>>, ModelKey), IdentityError> {
        Err(IdentityError::NoEmbedder)
    }

    async fn model(&self) -> Result<ModelDescription, IdentityError> {
        Ok(self.0.clone())
    }
}

/// Observes `deliveries` in the order they ended into a fresh identity service (embedded store
/// in a temporary folder) with `association`, runs its merge pass once (when
/// `association.merge_threshold` is set), and returns the identity each is in at the end.
pub async fn replay(
    association: AssociationConfig,
    model: &ModelKey,
    deliveries: &[Delivery],
) -> anyhow::Result<Vec<String>> {
    let dir = tempfile::tempdir()?;
    let config = IdentityConfig {
        data_dir: dir.path().to_path_buf(),
        association,
        keep_thumbnails: false,
        ..IdentityConfig::default()
    };
    config.validate()?;
    let store = reid_identity::open_store(&config).await?;
    let recorded = Recorded(ModelDescription { key: model.clone(), match_threshold: 0.0, merge_threshold: None });
    let identities =
        Identities::open(config, store, Some(Arc::new(recorded) as Arc<dyn EmbedderClient>), IdentityMetrics::new())
            .await?;
    let mut order: Vec<usize> = (0..deliveries.len()).collect();
    order.sort_by_key(|&i| (deliveries[i].ended_ms, i));
    let mut given: BTreeMap<usize, String> = BTreeMap::new();
    for i in order {
        let d = &deliveries[i];
        let tracklet = Tracklet {
            camera: d.camera.clone(),
            track: d.track.clone(),
            crops: d.crops.clone(),
            model: Some(model.clone()),
        };
        let observed = identities
            .observe(tracklet)
            .await
            .with_context(|| format!("observing track {} of {}", d.track, d.camera))?;
        given.insert(i, observed.identity);
    }
    identities.merge_pass(reid_identity::identities::now_ms()).await?;
    let mut out = Vec::with_capacity(given.len());
    for identity in given.into_values() {
        out.push(identities.merged_into(&identity).await?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_parse_and_apply() {
        let v = Variant::parse("threshold=0.8, cross=0.7,top=3").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.to_string(), "threshold=0.8,cross=0.7,top=3");
        let base = AssociationConfig { observe_min_margin: 0.02, ..AssociationConfig::default() };
        let a = v.apply(&base);
        assert_eq!((a.threshold, a.cross_camera_threshold, a.observe_min_margin), (Some(0.8), Some(0.7), 0.02));
        assert_eq!(Variant::parse("margin=0.1").map(|v| v.apply(&base).observe_min_margin), Ok(0.1));
        assert_eq!(Variant::parse("merge=0.7").map(|v| v.apply(&base).merge_threshold), Ok(Some(0.7)));
        let merging = AssociationConfig { merge_threshold: Some(0.75), ..base.clone() };
        assert_eq!(Variant::parse("merge=off").map(|v| v.apply(&merging).merge_threshold), Ok(None));
        assert_eq!(Variant::parse("merge=off").map(|v| v.to_string()), Ok("merge=off".into()));
        assert_eq!(a.linkage, Linkage::Average { top: 3 });
        assert_eq!(Variant::parse("").map(|v| v.apply(&base).linkage), Ok(base.linkage), "no key keeps the run's");
        assert_eq!(Variant::parse("top=1").map(|v| v.apply(&base).linkage), Ok(Linkage::Nearest));
        let agree = Variant::parse("agree=0.7").map(|v| (v.apply(&base).crop_agreement, v.to_string()));
        assert_eq!(agree, Ok((Some(0.7), "agree=0.7".into())));
        let apart = Variant::parse("overlap=2.5").map(|v| (v.apply(&base).same_camera_overlap, v.to_string()));
        assert_eq!(apart, Ok((std::time::Duration::from_millis(2500), "overlap=2.5".into())));
        assert!(Variant::parse("thresh=0.8").unwrap_err().contains("unknown key"));
        assert!(Variant::parse("threshold").is_err());
        assert!(Variant::parse("top=-1").is_err());
    }

    fn crop(v: [f32; 3], at_ms: i64) -> TrackletCrop {
        TrackletCrop { image: None, embedding: Some(v.to_vec()), quality: 1.0, bbox: None, at_ms: Some(at_ms) }
    }

    #[test]
    fn centring_takes_out_what_a_camera_adds_to_everyone() {
        let delivery = |camera: &str, vectors: &[[f32; 3]]| Delivery {
            camera: camera.into(),
            track: "t".into(),
            ended_ms: 0,
            crops: vectors.iter().map(|&v| crop(v, 0)).collect(),
        };
        // West sees two people along x and y; east sees the same two with a cast along z (the
        // same direction after normalising, scaled by 2), and a crop without an embedding.
        let mut east = delivery("east", &[[2.0, 0.0, 2.0], [0.0, 2.0, 2.0]]);
        east.crops.push(TrackletCrop { embedding: None, ..crop([0.0; 3], 0) });
        let centred = centre_per_camera(&[delivery("west", &[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), east]);
        let embedding = |d: usize, c: usize| centred[d].crops[c].embedding.clone().unwrap();
        let near = |a: Vec<f32>, b: [f32; 3]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
        assert!(near(embedding(0, 0), [0.5, -0.5, 0.0]), "{:?}", embedding(0, 0));
        let s = std::f32::consts::FRAC_1_SQRT_2 / 2.0;
        assert!(near(embedding(1, 0), [s, -s, 0.0]), "{:?}", embedding(1, 0));
        assert!(near(embedding(1, 1), [-s, s, 0.0]), "{:?}", embedding(1, 1));
        assert_eq!(centred[1].crops[2].embedding, None);
        // Before, one person's crops on the two cameras were cos 0.71 apart; after, they point
        // the same way.
        let cos = |a: &[f32], b: &[f32]| {
            let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            dot / (a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt())
        };
        assert!((cos(&embedding(0, 0), &embedding(1, 0)) - 1.0).abs() < 1e-6);
        assert!((cos(&embedding(0, 0), &embedding(1, 1)) + 1.0).abs() < 1e-6);
        assert_eq!(Variant::parse("centre=on").map(|v| (v.centre, v.to_string())), Ok((true, "centre=on".into())));
        assert!(Variant::parse("centre=yes").is_err());
        assert_eq!(Variant::parse("pure=on").map(|v| (v.pure, v.to_string())), Ok((true, "pure=on".into())));
        assert!(Variant::parse("pure=1").unwrap_err().contains("not on or off"));
        let both = Variant::parse("labelled=on,pure=on").map(|v| (v.pure, v.labelled, v.to_string()));
        assert_eq!(both, Ok((true, true, "pure=on,labelled=on".into())));
        assert_eq!(Variant::parse("join=2.5").map(|v| (v.join_s, v.to_string())), Ok((Some(2.5), "join=2.5".into())));
    }

    #[test]
    fn stitching_continues_a_cameras_tracklet_nearby_soon_after_and_alike() {
        let piece = |camera: &str, at_ms: i64, x: f32, v: [f32; 3]| Delivery {
            camera: camera.into(),
            track: "t".into(),
            ended_ms: at_ms + 500,
            crops: vec![
                TrackletCrop { bbox: Some([x, 0.0, 10.0, 20.0]), ..crop(v, at_ms) },
                TrackletCrop { bbox: Some([x + 5.0, 0.0, 10.0, 20.0]), ..crop(v, at_ms + 500) },
            ],
        };
        let deliveries = vec![
            piece("east", 0, 0.0, [1.0, 0.0, 0.0]),
            piece("east", 1_500, 10.0, [0.95, 0.31, 0.0]), // 1 s later, a box away, alike: continues 0
            piece("east", 1_600, 400.0, [1.0, 0.0, 0.0]),  // alike, but too far to have walked there
            piece("west", 1_500, 10.0, [1.0, 0.0, 0.0]),   // another camera
            piece("east", 2_500, 20.0, [0.0, 1.0, 0.0]),   // near and soon after 1, but unlike it
            piece("east", 9_000, 20.0, [1.0, 0.0, 0.0]),   // 7 s after 1 ended
        ];
        let starts: Vec<i64> = deliveries.iter().map(|d| d.ended_ms - 500).collect();
        let all: Vec<usize> = (0..deliveries.len()).collect();
        let rule = Stitch { max_gap_ms: 5_000, min_similarity: 0.7, heights_per_second: 1.0 };
        let groups = stitch(&deliveries, &starts, &all, rule);
        assert_eq!(groups, vec![vec![0, 1], vec![3], vec![2], vec![4], vec![5]], "in the order they start");
        let longer = stitch(&deliveries, &starts, &all, Stitch { max_gap_ms: 10_000, ..rule });
        assert_eq!(longer, vec![vec![0, 1, 5], vec![3], vec![2], vec![4]]);
        assert_eq!(
            Variant::parse("stitch=5,stitch_sim=0.6").map(|v| v.to_string()),
            Ok("stitch=5,stitch_sim=0.6".into())
        );
    }

    #[tokio::test]
    async fn replays_in_the_order_tracklets_ended_and_applies_the_settings() {
        let model = ModelKey { id: "m".into(), version: "1".into(), dimension: 3 };
        let d = |camera: &str, track: &str, ended_ms: i64, v: [f32; 3]| Delivery {
            camera: camera.into(),
            track: track.into(),
            ended_ms,
            crops: vec![crop(v, ended_ms - 500), crop(v, ended_ms)],
        };
        // Listed out of order: "a1" ends first and starts the identity the others are scored against.
        let deliveries = vec![
            d("east", "b1", 9_000, [0.6, 0.8, 0.0]),
            d("west", "a1", 1_000, [1.0, 0.0, 0.0]),
            d("west", "a2", 5_000, [0.95, 0.312, 0.0]),
        ];
        let at = |threshold: f32, cross: Option<f32>| AssociationConfig {
            threshold: Some(threshold),
            cross_camera_threshold: cross,
            // Scored on the nearest sighting, so that the similarities below decide alone.
            linkage: Linkage::Nearest,
            ..AssociationConfig::default()
        };
        let one = replay(at(0.9, None), &model, &deliveries).await.unwrap_or_else(|e| panic!("{e:#}"));
        // a2 is cos 0.95 from a1; b1 0.6 from a1 and 0.82 from a2: below 0.9, a new identity.
        assert_eq!(one[1], one[2], "{one:?}");
        assert_ne!(one[0], one[1], "{one:?}");
        let lower = replay(at(0.9, Some(0.8)), &model, &deliveries).await.unwrap_or_else(|e| panic!("{e:#}"));
        assert!(lower[0] == lower[1] && lower[1] == lower[2], "{lower:?}");
        // A merge pass at the end joins b1 to a1 and a2 (their average similarity is 0.71).
        let merged = AssociationConfig { merge_threshold: Some(0.7), ..at(0.9, None) };
        let merged = replay(merged, &model, &deliveries).await.unwrap_or_else(|e| panic!("{e:#}"));
        assert!(merged[0] == merged[1] && merged[1] == merged[2], "{merged:?}");
        let apart = AssociationConfig { merge_threshold: Some(0.75), ..at(0.9, None) };
        let apart = replay(apart, &model, &deliveries).await.unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(apart, one, "above the average similarity nothing merges");
    }
}
