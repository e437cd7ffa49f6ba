//! The ingester's tracklet exports, `ROOT/<camera>/<track>/*.jpg` with `tracklet.json`: each
//! tracklet a pseudo-identity, held out by time, with the [`links`](super::links) people gave
//! between them.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::links::{Links, TrackletKey, read_links};
use super::{Dataset, Identity, MAX_FEEDBACK_BYTES, Span, Split, is_image, read_bounded, samples_of, sorted_entries};
use crate::error::TrainError;

/// The tracklets under `root`, the last `eval_fraction` of their time held out, and the links in
/// the file `links` between those that train.
pub(super) fn tracklets(root: &Path, eval_fraction: f64, links: Option<&Path>) -> Result<Dataset, TrainError> {
    let (mut dataset, keys) = tracklet_split(exported_tracklets(root)?, eval_fraction, root)?;
    if let Some(path) = links {
        dataset.links = Links::resolve(&read_links(path)?, &keys);
    }
    Ok(dataset)
}

/// One exported tracklet: its camera (position among the camera folders), name, time span and
/// images with their capture times.
#[derive(Debug, Clone)]
struct Exported {
    camera: i64,
    key: TrackletKey,
    start_ms: i64,
    end_ms: i64,
    images: Vec<(PathBuf, i64)>,
}

#[derive(Deserialize)]
struct ExportedMeta {
    #[serde(default)]
    camera: Option<String>,
    #[serde(default)]
    track: Option<String>,
    start_ms: i64,
    end_ms: i64,
    crops: Vec<ExportedCrop>,
}

#[derive(Deserialize)]
struct ExportedCrop {
    file: String,
    captured_at_ms: i64,
}

fn exported_tracklets(root: &Path) -> Result<Vec<Exported>, TrainError> {
    let mut tracklets = Vec::new();
    for (camera, dir) in sorted_entries(root)?.into_iter().filter(|p| p.is_dir()).enumerate() {
        for track in sorted_entries(&dir)?.into_iter().filter(|p| p.is_dir()) {
            let files: Vec<PathBuf> = sorted_entries(&track)?.into_iter().filter(|p| is_image(p)).collect();
            if files.is_empty() {
                continue;
            }
            let meta_path = track.join("tracklet.json");
            let meta: Option<ExportedMeta> = if meta_path.is_file() {
                let bytes = read_bounded(&meta_path, MAX_FEEDBACK_BYTES)?;
                Some(
                    serde_json::from_slice(&bytes)
                        .map_err(|e| TrainError::Dataset(format!("{}: {e}", meta_path.display())))?,
                )
            } else {
                None
            };
            // Without its metadata a tracklet is placed at the start time its folder is named by.
            let named_start = track
                .file_name()
                .and_then(|n| n.to_string_lossy().split('_').next().and_then(|t| t.parse::<i64>().ok()))
                .unwrap_or(0);
            let (start_ms, end_ms) = meta.as_ref().map_or((named_start, named_start), |m| (m.start_ms, m.end_ms));
            let time_of = |path: &Path| {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                meta.as_ref()
                    .and_then(|m| m.crops.iter().find(|c| c.file == name))
                    .map_or(start_ms, |c| c.captured_at_ms)
            };
            let images = files.into_iter().map(|p| (time_of(&p), p)).map(|(t, p)| (p, t)).collect();
            // Named as the ingester named it; without metadata, by its folders (`<start>_<track>`).
            let folder = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let key = TrackletKey {
                camera: meta.as_ref().and_then(|m| m.camera.clone()).unwrap_or_else(|| folder(&dir)),
                track: meta.as_ref().and_then(|m| m.track.clone()).unwrap_or_else(|| {
                    let name = folder(&track);
                    name.split_once('_').map_or(name.clone(), |(_, t)| t.to_owned())
                }),
            };
            tracklets.push(Exported { camera: camera as i64, key, start_ms, end_ms, images });
        }
    }
    Ok(tracklets)
}

/// Splits tracklets by time: the last `fraction` of the span from the first start to the last
/// end is held out. Tracklets starting in it evaluate; the others train on their images from
/// before it. Also returns each training tracklet's name.
fn tracklet_split(
    mut tracklets: Vec<Exported>,
    fraction: f64,
    root: &Path,
) -> Result<(Dataset, Vec<TrackletKey>), TrainError> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(TrainError::Config(format!("eval_fraction {fraction} is not in [0, 1)")));
    }
    tracklets.sort_by_key(|t| (t.start_ms, t.camera));
    let (Some(first), Some(last)) =
        (tracklets.iter().map(|t| t.start_ms).min(), tracklets.iter().map(|t| t.end_ms).max())
    else {
        return Err(TrainError::Dataset(format!("{} holds no tracklets with images", root.display())));
    };
    let cut = last - ((last - first) as f64 * fraction).round() as i64;
    let (mut train, mut spans, mut keys, mut eval) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for t in tracklets {
        let camera = t.camera;
        if t.start_ms >= cut && fraction > 0.0 {
            eval.push(t.images.into_iter().map(|(p, _)| (p, camera)).collect::<Identity>());
            continue;
        }
        let before: Vec<(PathBuf, i64)> = t.images.into_iter().filter(|(_, at)| fraction == 0.0 || *at < cut).collect();
        if before.is_empty() {
            continue;
        }
        spans.push(Span { camera, start_ms: t.start_ms, end_ms: t.end_ms.min(cut) });
        keys.push(t.key);
        train.push(before.into_iter().map(|(p, _)| (p, camera)).collect::<Identity>());
    }
    if train.len() < 2 || eval.is_empty() {
        return Err(TrainError::Dataset(format!(
            "{}: {} tracklets before the held-out last {:.0}% of the time and {} in it; training needs 2 and \
             evaluation 1",
            root.display(),
            train.len(),
            fraction * 100.0,
            eval.len()
        )));
    }
    // A tracklet is seen by one camera: its images query one another (leave-one-out), whatever
    // cameras the others come from.
    let eval = Split { samples: samples_of(&eval, train.len()), images: None };
    let train = Split { samples: samples_of(&train, 0), images: None };
    Ok((Dataset { spans, ..Dataset::leave_one_out(train, eval) }, keys))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::data::DatasetConfig;
    use crate::eval::Label;

    #[test]
    fn reads_tracklets_held_out_by_time() {
        // Tracklets over 0-10 s, the last 30% (from 7 s) held out. Folder names carry the start;
        // one tracklet's metadata times its crops, and its crop from 8 s is not trained on.
        let root = temp("tracklets");
        for (cam, track) in [
            ("cam-a", "0000000000000_t1"),
            ("cam-a", "0000000004000_t2"),
            ("cam-b", "0000000001000_t1"),
            ("cam-b", "0000000009000_t7"),
        ] {
            for i in 0..2 {
                touch_jpeg(&root.join(cam).join(track).join(format!("{i}.jpg")));
            }
        }
        let meta = serde_json::json!({
            "start_ms": 4000, "end_ms": 8000,
            "crops": [{"file": "0.jpg", "captured_at_ms": 5000}, {"file": "1.jpg", "captured_at_ms": 8000}],
        });
        std::fs::write(root.join("cam-a/0000000004000_t2/tracklet.json"), meta.to_string()).unwrap();
        // The last end is 9 s (the folder-named tracklet ends where it starts): cut at 6.3 s.
        let d = DatasetConfig::Tracklets { path: root.clone(), eval_fraction: 0.3, links: None }.load().unwrap();
        assert_eq!(d.train.identities(), 3, "each tracklet is its own pseudo-identity");
        assert_eq!(d.train.len(), 5, "the crop from after the cut is left out");
        assert_eq!(d.query.pids(), vec![3, 3], "the tracklet starting at 9 s evaluates");
        let span = |camera, start_ms, end_ms| Span { camera, start_ms, end_ms };
        assert_eq!(d.spans, vec![span(0, 0, 0), span(1, 1000, 1000), span(0, 4000, 6300)], "in time order");
        assert_eq!(d.train.samples[2].label, Label { pid: 1, camid: 1 });
        let err = DatasetConfig::Tracklets { path: root.clone(), eval_fraction: 0.95, links: None }.load().unwrap_err();
        assert!(err.to_string().contains("before the held-out"), "{err}");

        // Links name tracklets by `tracklet.json`'s camera and track, else by their folders.
        let meta = serde_json::json!({
            "camera": "lobby", "track": "s1-2", "start_ms": 4000, "end_ms": 8000,
            "crops": [{"file": "0.jpg", "captured_at_ms": 5000}, {"file": "1.jpg", "captured_at_ms": 8000}],
        });
        std::fs::write(root.join("cam-a/0000000004000_t2/tracklet.json"), meta.to_string()).unwrap();
        let link = |same, a: (&str, &str), b: (&str, &str)| serde_json::json!({"same": same, "a": {"camera": a.0, "track": a.1}, "b": {"camera": b.0, "track": b.1}});
        let lines = [
            link(true, ("cam-a", "t1"), ("cam-b", "t1")),
            link(false, ("cam-b", "t1"), ("lobby", "s1-2")),
            link(false, ("cam-a", "t1"), ("cam-b", "t7")),
        ];
        let links = root.join("links.jsonl");
        std::fs::write(&links, lines.map(|l| l.to_string()).join("\n")).unwrap();
        let d = DatasetConfig::Tracklets { path: root.clone(), eval_fraction: 0.3, links: Some(links) }.load().unwrap();
        assert_eq!(d.links.same, vec![(0, 1)]);
        assert_eq!(d.links.different, std::collections::HashSet::from([(1, 2), (2, 1)]), "the held-out t7 left out");
        std::fs::remove_dir_all(root).unwrap();
    }
}
