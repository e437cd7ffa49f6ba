//! `reid eval mtmc`: the whole pipeline, as `reid demo` runs it (the video played as two
//! cameras that see overlapping parts of the scene differently), scored against the video's
//! ground truth with [`reid_eval::mtmc`].
//!
//! The ingester exports every tracklet it delivers (its crops' frames and boxes, in the camera's
//! view); each box is mapped back through the camera's view into the video's pixels, and the
//! tracklet takes the identity the identity service gave its sighting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use reid_cluster::Rerank;
use reid_eval::Box2;
use reid_eval::mtmc::{Mtmc, Pairs, Tracklet, evaluate_mtmc, majority, person};
use reid_ingester::frame::BBox;
use reid_ingester::view::View;
use reid_proto::v1 as pb;
use serde::Deserialize;
use serde_json::json;

use super::replay::{Delivery, Stitch, Variant, centre_per_camera, replay, stitch};
use crate::playback::{EastCamera, Played, Seen, fresh_config, play};

#[derive(Debug, Args)]
pub struct MtmcArgs {
    /// MOTChallenge ground truth with identities.
    #[arg(long)]
    gt: PathBuf,
    /// The video the ground truth labels.
    video: PathBuf,
    /// Region of interest: boxes whose foot point falls outside are left out on both sides.
    #[arg(long)]
    roi: Option<PathBuf>,
    /// IoU at which a tracklet's box matches a ground-truth person.
    #[arg(long, default_value_t = 0.5)]
    iou: f64,
    /// This run's storage; emptied at the start.
    #[arg(long, default_value = "data/eval-mtmc")]
    data: PathBuf,
    #[arg(long, default_value = "models")]
    model_dir: PathBuf,
    /// The model folder the embedder serves (under --model-dir).
    #[arg(long, default_value = reid_embedder::DEFAULT_MODEL)]
    model: String,
    /// TOML with any `IngesterConfig` field (`[tracker]`, `[detectors.*]`, `[crops]`), in place of
    /// the ingester's defaults: the pipeline under other tracker or detector settings.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Cosine threshold for a match (the model card's `match_threshold` when unset).
    #[arg(long)]
    threshold: Option<f32>,
    /// Cosine threshold for a match with an identity seen on the other camera (the identity
    /// service's `association.cross_camera_threshold`); --threshold when unset.
    #[arg(long)]
    cross_camera_threshold: Option<f32>,
    #[arg(long, default_value_t = crate::playback::DEFAULT_MIN_MARGIN)]
    min_margin: f32,
    /// The identity service's linkage: a tracklet is scored against an identity by the mean of
    /// its N closest sightings (1: the single nearest). Its default when unset.
    #[arg(long)]
    linkage_top: Option<usize>,
    #[command(flatten)]
    merge: crate::playback::MergePass,
    #[command(flatten)]
    east: EastCamera,
    /// Also re-group every delivered tracklet at once (average linkage at each of these cosine
    /// similarities, never two tracklets of one camera that overlap in time), embedded by the
    /// same model, and score those identities too: what global re-clustering would give.
    #[arg(long, value_delimiter = ',')]
    regroup: Vec<f64>,
    /// Re-group on k-reciprocal re-ranked similarities (one minus the re-ranked distance; k1 20,
    /// k2 6, lambda 0.3) instead of plain cosine similarities.
    #[arg(long, requires = "regroup")]
    regroup_rerank: bool,
    /// Re-group starting from the identities the identity service made, which then only merge
    /// (what a merge pass over its identities would give), instead of from single tracklets.
    #[arg(long, requires = "regroup")]
    regroup_merge: bool,
    /// Also observe the delivered tracklets again, in the order they ended, into a fresh
    /// identity service with these association settings (`threshold=0.8,cross=0.7,top=3,margin=0.05`,
    /// `merge=0.7` or `merge=off` for the merge pass at the end, `centre=on` for embeddings less
    /// their camera's mean over the run; what is unset keeps this run's), and score its
    /// identities: the same tracklets and embeddings, only the association changed. Repeat for
    /// several.
    #[arg(long, value_parser = Variant::parse)]
    replay: Vec<Variant>,
    #[command(flatten)]
    report: super::Report,
}

/// The part of an exported `tracklet.json` read here.
#[derive(Debug, Deserialize)]
struct Exported {
    camera: String,
    track: String,
    start_ms: u64,
    end_ms: u64,
    crops: Vec<ExportedCrop>,
    /// The folder it was read from.
    #[serde(skip)]
    dir: PathBuf,
}

#[derive(Debug, Deserialize)]
struct ExportedCrop {
    file: String,
    frame: u64,
    captured_at_ms: i64,
    quality: f32,
    #[serde(rename = "box")]
    bbox: [f32; 4],
}

pub async fn run(args: MtmcArgs) -> anyhow::Result<ExitCode> {
    // The whole video's labels for the oracles; the scored part for the figures.
    let whole = super::ground_truth(&args.gt, args.roi.as_deref())?;
    let gt = whole.between(args.report.first_frame, u64::MAX);
    let mut config = fresh_config(&args.data, &args.model_dir, &args.model, &args.video)?;
    if let Some(file) = &args.config {
        crate::playback::ingester_from_file(&mut config, file, &args.model_dir)?;
    }
    let threshold = crate::playback::match_threshold(args.threshold, &args.model_dir, &args.model)?;
    config.identity.association.threshold = Some(threshold);
    config.identity.association.cross_camera_threshold = args.cross_camera_threshold;
    config.identity.association.min_margin = args.min_margin;
    config.identity.association.observe_min_margin = args.min_margin;
    args.merge.apply(&mut config);
    if let Some(top) = args.linkage_top {
        config.identity.association.linkage = super::replay::linkage(top);
    }
    let association = config.identity.association.clone();
    let per_tracklet = config.ingester.crops.per_tracklet;
    let exports = args.data.join("exports");
    config.ingester.export_dir = Some(exports.clone());
    let cameras = args.east.cameras(&args.video);
    let played = play(config, &cameras).await?;
    let (cols, rows) = super::frame_size(&args.video)?;
    let views: BTreeMap<&str, &View> = cameras.iter().map(|(id, _, view)| (id.as_str(), view)).collect();
    let mut unobserved = 0;
    let (mut tracklets, mut delivered) = (Vec::new(), Vec::new());
    for exported in read_exports(&exports)? {
        let Some(view) = views.get(exported.camera.as_str()) else { continue };
        let Some(identity) = identity_of(&played, &exported) else {
            unobserved += 1;
            continue;
        };
        let boxes = exported
            .crops
            .iter()
            .map(|c| {
                let [x, y, w, h] = c.bbox;
                let b = view.to_source(BBox::new(x, y, w, h), cols, rows);
                // Sources number frames from 0; MOTChallenge from 1.
                (c.frame + 1, Box2::new(b.x.into(), b.y.into(), b.w.into(), b.h.into()))
            })
            .collect();
        tracklets.push(Tracklet { camera: exported.camera.clone(), track: exported.track.clone(), identity, boxes });
        delivered.push((exported, view.time_offset_ms));
    }
    // Each crop's box over the whole run, for the `pure=on` oracle.
    let crop_boxes: Vec<Vec<(u64, Box2)>> = tracklets.iter().map(|t| t.boxes.clone()).collect();
    let inside = args.roi.as_deref().map(super::roi).transpose()?;
    for t in &mut tracklets {
        t.boxes.retain(|(frame, b)| {
            let (x, y) = b.foot();
            *frame >= args.report.first_frame && inside.as_ref().is_none_or(|inside| inside(x, y))
        });
    }
    // Held out: only what has a box in the scored part is a tracklet to score.
    let scored = |t: &Tracklet| args.report.first_frame <= 1 || !t.boxes.is_empty();
    let score = |identities: &dyn Fn(usize) -> String| {
        let relabelled: Vec<Tracklet> = tracklets
            .iter()
            .enumerate()
            .filter(|(_, t)| scored(t))
            .map(|(i, t)| Tracklet { identity: identities(i), ..t.clone() })
            .collect();
        evaluate_mtmc(&gt, &relabelled, args.iou)
    };
    let m = score(&|i| tracklets[i].identity.clone());
    let embedded = if args.regroup.is_empty() && args.replay.is_empty() {
        Vec::new()
    } else {
        embed_crops(&args, &delivered).await?
    };
    let mut regrouped = Vec::new();
    if !args.regroup.is_empty() {
        let items: Vec<reid_cluster::Tracklet> = delivered
            .iter()
            .zip(&embedded)
            .map(|((t, _), crops)| {
                let qualities: Vec<f32> = t.crops.iter().map(|c| c.quality).collect();
                let embedding = reid_identity::association::aggregate(crops, &qualities)
                    .with_context(|| format!("tracklet {} of {} has no crop", t.track, t.camera))?;
                Ok(reid_cluster::Tracklet {
                    camera: t.camera.clone(),
                    start_ms: t.start_ms as i64,
                    end_ms: t.end_ms as i64,
                    embedding,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let seen_together = |i: usize, j: usize| reid_cluster::seen_together(&items[i], &items[j]);
        let embeddings: Vec<Vec<f32>> = items.iter().map(|t| t.embedding.clone()).collect();
        let similarity = if args.regroup_rerank {
            reid_cluster::reranked_similarities(&embeddings, Rerank::default())
        } else {
            reid_cluster::cosine_similarities(&embeddings)
        };
        let initial: Vec<usize> = if args.regroup_merge {
            let mut numbers = BTreeMap::new();
            tracklets
                .iter()
                .map(|t| {
                    let next = numbers.len();
                    *numbers.entry(t.identity.as_str()).or_insert(next)
                })
                .collect()
        } else {
            (0..items.len()).collect()
        };
        for &threshold in &args.regroup {
            let labels = reid_cluster::regroup_from(&similarity, &initial, threshold, seen_together);
            let groups = labels.iter().max().map_or(0, |l| l + 1);
            regrouped.push((score(&|i| format!("group-{}", labels[i])), groups, threshold));
        }
    }
    let mut replayed = Vec::new();
    if !args.replay.is_empty() {
        let model = played.model.r#ref.as_ref().map(reid_identity::model::ModelKey::from).unwrap_or_default();
        let deliveries: Vec<Delivery> = delivered
            .iter()
            .zip(&embedded)
            .map(|((t, offset_ms), crops)| Delivery {
                camera: t.camera.clone(),
                track: t.track.clone(),
                ended_ms: t.end_ms as i64 - offset_ms,
                crops: t
                    .crops
                    .iter()
                    .zip(crops)
                    .map(|(c, e)| reid_identity::identities::TrackletCrop {
                        image: None,
                        embedding: Some(e.clone()),
                        quality: c.quality,
                        bbox: Some(c.bbox),
                        at_ms: Some(c.captured_at_ms),
                    })
                    .collect(),
            })
            .collect();
        // The oracles' view of each crop: the labelled person its box is on, and its tracklet's.
        let people: Vec<Vec<Option<i64>>> = if args.replay.iter().any(|v| v.pure || v.labelled || v.join_s.is_some()) {
            crop_boxes
                .iter()
                .map(|boxes| boxes.iter().map(|(f, b)| person(&whole, *f, b, args.iou)).collect())
                .collect()
        } else {
            vec![Vec::new(); deliveries.len()]
        };
        let own: Vec<Option<i64>> = people.iter().map(|p| majority(p).map(|(id, _)| id)).collect();
        let pieces: Vec<Piece> = delivered
            .iter()
            .zip(&own)
            .map(|((t, offset_ms), person)| Piece {
                camera: t.camera.clone(),
                person: *person,
                start_ms: t.start_ms as i64 - offset_ms,
                end_ms: t.end_ms as i64 - offset_ms,
            })
            .collect();
        for variant in &args.replay {
            let kept: Vec<usize> = (0..deliveries.len()).filter(|&i| !variant.labelled || own[i].is_some()).collect();
            let join_ms = variant.join_s.map(|s| (s * 1000.0).round() as i64);
            let groups = match (join_ms, variant.stitch_s) {
                (None, Some(seconds)) => {
                    let rule = Stitch {
                        max_gap_ms: (seconds * 1000.0).round() as i64,
                        min_similarity: variant.stitch_similarity.unwrap_or(0.7),
                        heights_per_second: 1.0,
                    };
                    let starts: Vec<i64> = pieces.iter().map(|p| p.start_ms).collect();
                    stitch(&deliveries, &starts, &kept, rule)
                }
                _ => join_pieces(&kept, &pieces, join_ms),
            };
            let mut input: Vec<Delivery> = groups
                .iter()
                .map(|group| {
                    let mut parts = group.iter().map(|&i| {
                        let mut d = deliveries[i].clone();
                        if variant.pure && own[i].is_some() {
                            let on_own = people[i].iter().map(|p| p.is_none() || *p == own[i]);
                            d.crops =
                                d.crops.into_iter().zip(on_own).filter(|(_, keep)| *keep).map(|(c, _)| c).collect();
                        }
                        d
                    });
                    let first = parts.next().unwrap_or_else(|| deliveries[group[0]].clone());
                    parts.fold(first, |joined, next| joined_delivery(joined, next, per_tracklet))
                })
                .collect();
            if variant.centre {
                input = centre_per_camera(&input);
            }
            let observed = replay(variant.apply(&association), &model, &input).await?;
            // What was not observed is its own identity (and on nobody labelled, so unscored).
            let mut given: Vec<String> = (0..deliveries.len()).map(|i| format!("unobserved-{i}")).collect();
            for (group, identity) in groups.iter().zip(observed) {
                for &i in group {
                    given[i] = identity.clone();
                }
            }
            let made = kept.iter().map(|&i| &given[i]).collect::<std::collections::BTreeSet<_>>().len();
            replayed.push((score(&|i| given[i].clone()), made, variant));
        }
    }
    if args.report.json {
        let r = played.model.r#ref.clone().unwrap_or_default();
        let run = json!({
            "model": { "id": r.id, "version": r.version }, "threshold": threshold,
            "cross_camera_threshold": args.cross_camera_threshold, "first_frame": args.report.first_frame,
            "identities_made": played.seen.len(), "unobserved_tracklets": unobserved,
            "regroup_rerank": args.regroup_rerank, "regroup_merge": args.regroup_merge,
            "merge_threshold": association.merge_threshold,
        });
        let regrouped: Vec<_> = regrouped
            .into_iter()
            .map(|(m, groups, threshold)| json!({ "threshold": threshold, "groups": groups, "mtmc": m }))
            .collect();
        let replayed: Vec<_> = replayed
            .into_iter()
            .map(|(m, made, v)| json!({ "settings": v.to_string(), "identities_made": made, "mtmc": m }))
            .collect();
        println!("{}", json!({ "run": run, "mtmc": m, "regrouped": regrouped, "replayed": replayed }));
    } else {
        print_figures(&m, played.seen.len(), unobserved, args.report.explain);
        for (m, groups, threshold) in regrouped {
            println!("\nre-grouped at once, average linkage at {threshold}: {groups} groups");
            print_figures(&m, groups, unobserved, args.report.explain);
        }
        for (m, made, variant) in replayed {
            println!("\nreplayed with {variant}: {made} identities");
            print_figures(&m, made, unobserved, args.report.explain);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A delivered tracklet as the `join` oracle sees it: its camera, its person, its span on the
/// scene's clock.
struct Piece {
    camera: String,
    person: Option<i64>,
    start_ms: i64,
    end_ms: i64,
}

/// The deliveries `kept` as groups observed as one tracklet each: alone, or with `join_ms` a
/// camera's consecutive pieces of one labelled person that start at most that long after the
/// previous one ended (the `join` oracle: a tracker that carried everyone across occlusions).
fn join_pieces(kept: &[usize], pieces: &[Piece], join_ms: Option<i64>) -> Vec<Vec<usize>> {
    let mut order = kept.to_vec();
    order.sort_by_key(|&i| (pieces[i].start_ms, i));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut open: BTreeMap<(&str, i64), usize> = BTreeMap::new();
    for i in order {
        if let (Some(join_ms), Some(person)) = (join_ms, pieces[i].person) {
            let key = (pieces[i].camera.as_str(), person);
            if let Some(&g) = open.get(&key) {
                let end = groups[g].iter().map(|&j| pieces[j].end_ms).max().unwrap_or(i64::MIN);
                if pieces[i].start_ms - end <= join_ms {
                    groups[g].push(i);
                    continue;
                }
            }
            open.insert(key, groups.len());
        }
        groups.push(vec![i]);
    }
    groups
}

/// Two pieces of one person as one tracklet: the later end, and the best `per_tracklet` crops of
/// both by quality, in time order.
fn joined_delivery(a: Delivery, b: Delivery, per_tracklet: usize) -> Delivery {
    let mut crops: Vec<_> = a.crops.into_iter().chain(b.crops).collect();
    crops.sort_by(|x, y| y.quality.total_cmp(&x.quality));
    crops.truncate(per_tracklet.max(1));
    crops.sort_by_key(|c| c.at_ms);
    Delivery { ended_ms: a.ended_ms.max(b.ended_ms), crops, ..a }
}

/// Embeds each delivered tracklet's exported crops with the run's model (an embedder in this
/// process), one embedding per crop.
async fn embed_crops(args: &MtmcArgs, delivered: &[(Exported, i64)]) -> anyhow::Result<Vec<Vec<Vec<f32>>>> {
    let (embedder, mut client) = super::local_embedder(&args.model_dir, &args.model).await?;
    let mut embedded = Vec::with_capacity(delivered.len());
    for (t, _) in delivered {
        let images = t
            .crops
            .iter()
            .map(|c| std::fs::read(t.dir.join(&c.file)).with_context(|| format!("reading {}", t.dir.display())))
            .collect::<anyhow::Result<Vec<_>>>()?;
        embedded.push(client.embed_encoded(images).await?);
    }
    embedder.stop().await?;
    Ok(embedded)
}

pub(super) fn print_figures(m: &Mtmc, identities: usize, unobserved: usize, explain: bool) {
    println!(
        "\n{} tracklets on {} cameras ({} not delivered), {} on a labelled person; {} identities in all",
        m.tracklets, m.cameras, unobserved, m.matched_tracklets, identities
    );
    println!(
        "tracklet purity {:.1}% of {} matched boxes; people covered {} of {}; identities made for them {}",
        100.0 * m.purity,
        m.matched_boxes,
        m.people_covered,
        m.people,
        m.identities
    );
    let line = |name: &str, p: &Pairs| {
        println!(
            "{name:<13} pairs {:>5}  same person {:>4}  same identity {:>4}  precision {:.3}  recall {:.3}  F1 {:.3}",
            p.pairs, p.same_person, p.same_identity, p.precision, p.recall, p.f1
        );
    };
    line("all pairs", &m.all);
    line("cross-camera", &m.cross_camera);
    if explain {
        for (identity, members) in &m.composition {
            let people: std::collections::BTreeSet<i64> = members.iter().map(|t| t.person).collect();
            let mark = if people.len() > 1 { "  (mixed)" } else { "" };
            println!("  identity {identity}{mark}");
            for t in members {
                println!(
                    "    person {:>3}  {:<5} {:<14} frames {:>4}-{:<4} purity {:.2}",
                    t.person, t.camera, t.track, t.frames.0, t.frames.1, t.purity
                );
            }
        }
        let (pairs, joined) = m.spread.iter().fold((0, 0), |(p, j), s| (p + s.pairs, j + s.joined));
        println!("  where recall goes: {} of {pairs} pairs of one person not joined", pairs - joined);
        for s in m.spread.iter().filter(|s| s.joined < s.pairs) {
            println!(
                "    person {:>3}: {} tracklets in {} identities, {} of {} pairs joined; outside their identity {} alone, {} with other people",
                s.person, s.tracklets, s.identities, s.joined, s.pairs, s.apart, s.with_others
            );
        }
    }
}

/// Every `tracklet.json` under the export folder (`<camera>/<start>_<track>/`).
fn read_exports(root: &Path) -> anyhow::Result<Vec<Exported>> {
    let mut out = Vec::new();
    let Ok(cameras) = std::fs::read_dir(root) else { return Ok(out) };
    for camera in cameras {
        for track in std::fs::read_dir(camera?.path())? {
            let path = track?.path().join("tracklet.json");
            if path.is_file() {
                let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                let mut exported: Exported =
                    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))?;
                exported.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                out.push(exported);
            }
        }
    }
    Ok(out)
}

/// The identity whose sighting of the exported tracklet's camera and track overlaps its time
/// span most (a long track is delivered as several tracklets, each its own sighting).
fn identity_of(played: &Played, t: &Exported) -> Option<String> {
    let (start, end) = (t.start_ms as i64, t.end_ms as i64);
    let millis = reid_proto::time::millis_or_zero;
    let overlap = |s: &pb::Sighting| millis(s.end.as_ref()).min(end) - millis(s.start.as_ref()).max(start);
    played
        .seen
        .iter()
        .flat_map(|seen: &Seen| seen.sightings.iter().map(move |s| (seen, s)))
        .filter(|(_, s)| s.camera_id == t.camera && s.track_id == t.track)
        .max_by_key(|(_, s)| overlap(s))
        .map(|(seen, _)| seen.summary.identity_id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_join_oracle_joins_one_cameras_pieces_of_one_person_close_in_time() {
        let piece = |camera: &str, person: Option<i64>, start_ms: i64, end_ms: i64| Piece {
            camera: camera.into(),
            person,
            start_ms,
            end_ms,
        };
        let pieces = vec![
            piece("east", Some(4), 0, 1_000),
            piece("east", Some(4), 2_500, 4_000), // 1.5 s after the first: joined
            piece("west", Some(4), 2_000, 3_000), // another camera
            piece("east", Some(5), 1_500, 2_000), // another person
            piece("east", Some(4), 9_000, 9_500), // 5 s after the second: alone
            piece("east", None, 1_000, 2_000),    // nobody labelled
        ];
        let all: Vec<usize> = (0..pieces.len()).collect();
        assert_eq!(join_pieces(&all, &pieces, Some(2_000)), vec![vec![0, 1], vec![5], vec![3], vec![2], vec![4]]);
        assert_eq!(join_pieces(&all, &pieces, None).len(), pieces.len(), "no join: each alone");
        assert_eq!(join_pieces(&[0, 4], &pieces, Some(10_000)), vec![vec![0, 4]]);
    }

    #[test]
    fn a_joined_tracklet_keeps_the_best_crops_of_both() {
        let crop = |quality: f32, at_ms: i64| reid_identity::identities::TrackletCrop {
            image: None,
            embedding: Some(vec![1.0]),
            quality,
            bbox: None,
            at_ms: Some(at_ms),
        };
        let d = |ended_ms: i64, crops| Delivery { camera: "east".into(), track: "t".into(), ended_ms, crops };
        let joined =
            joined_delivery(d(10, vec![crop(0.9, 1), crop(0.2, 2)]), d(20, vec![crop(0.5, 15), crop(0.8, 12)]), 3);
        assert_eq!(joined.ended_ms, 20);
        let kept: Vec<(f32, Option<i64>)> = joined.crops.iter().map(|c| (c.quality, c.at_ms)).collect();
        assert_eq!(kept, vec![(0.9, Some(1)), (0.8, Some(12)), (0.5, Some(15))]);
    }

    #[test]
    fn exported_tracklets_parse() {
        let text = r#"{"camera":"west","track":"s-1","start_ms":10,"end_ms":20,"crops":[
            {"file":"00000003.jpg","frame":3,"captured_at_ms":12,"quality":0.5,"box":[1.0,2.0,3.0,4.0]}]}"#;
        let e: Exported = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((e.camera.as_str(), e.crops.len(), e.crops[0].frame, e.crops[0].bbox[3]), ("west", 1, 3, 4.0));
        assert_eq!((e.crops[0].file.as_str(), e.crops[0].quality), ("00000003.jpg", 0.5));
    }
}
