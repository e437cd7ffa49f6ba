//! Tracklets as training data: `DIR/<camera>/<start-ms>_<track>/<frame>.jpg`, the layout of the
//! trainer's `tracklets` dataset (each tracklet a pseudo-identity, each camera a camera id). Track
//! folders sort by start time, so the trainer's held-out last fraction is the latest part of the
//! recording. A `tracklet.json` beside the crops keeps boxes, times and qualities.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::delivery::deliver::Tracklet;

fn millis(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

/// A name that is safe as one path component.
fn component(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect()
}

/// The folder a tracklet is written to.
pub fn tracklet_dir(root: &Path, tracklet: &Tracklet) -> PathBuf {
    root.join(component(&tracklet.camera_id)).join(format!(
        "{:013}_{}",
        millis(tracklet.start),
        component(&tracklet.track_id)
    ))
}

/// Removes the exported folders of `camera`'s track `track` (every tracklet it was cut into);
/// returns how many.
pub fn remove_tracklet(root: &Path, camera: &str, track: &str) -> std::io::Result<u64> {
    let track = component(track);
    let dir = root.join(component(camera));
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries.filter_map(Result::ok) {
        // `<start-ms>_<track>`: the track is all after the first '_'.
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.split_once('_').is_some_and(|(_, t)| t == track) && entry.path().is_dir() {
            std::fs::remove_dir_all(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

pub fn write_tracklet(root: &Path, tracklet: &Tracklet) -> std::io::Result<PathBuf> {
    let dir = tracklet_dir(root, tracklet);
    std::fs::create_dir_all(&dir)?;
    let mut crops = Vec::new();
    for c in &tracklet.crops {
        let name = format!("{:08}.jpg", c.frame);
        std::fs::write(dir.join(&name), &c.jpeg)?;
        crops.push(json!({
            "file": name, "frame": c.frame, "captured_at_ms": millis(c.captured_at) as u64, "quality": c.quality,
            "box": [c.bbox.x, c.bbox.y, c.bbox.w, c.bbox.h],
        }));
    }
    let meta = json!({
        "camera": tracklet.camera_id, "track": tracklet.track_id,
        "start_ms": millis(tracklet.start) as u64, "end_ms": millis(tracklet.end) as u64, "crops": crops,
    });
    std::fs::write(dir.join("tracklet.json"), serde_json::to_vec_pretty(&meta).unwrap_or_default())?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::delivery::deliver::EncodedCrop;
    use crate::frame::BBox;

    #[test]
    fn tracklets_land_in_the_trainer_layout_in_time_order() {
        let root = tempfile::tempdir().expect("tempdir");
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        let crop = |frame| EncodedCrop {
            jpeg: vec![0xff, 0xd8],
            bbox: BBox::default(),
            captured_at: at(5),
            frame,
            quality: 0.5,
        };
        for (track, start) in [("s-10", 100), ("s-9", 20)] {
            let t = Tracklet {
                camera_id: "lobby/1".into(),
                track_id: track.into(),
                crops: vec![crop(3), crop(7)],
                start: at(start),
                end: at(start + 1),
            };
            write_tracklet(root.path(), &t).expect("written");
        }
        let cam = root.path().join("lobby_1");
        let mut tracks: Vec<String> = std::fs::read_dir(&cam)
            .expect("camera folder")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        tracks.sort();
        assert_eq!(tracks, vec!["0000000020000_s-9", "0000000100000_s-10"]);
        let first = cam.join(&tracks[0]);
        assert!(first.join("00000003.jpg").is_file() && first.join("00000007.jpg").is_file());
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(first.join("tracklet.json")).expect("meta")).expect("json");
        assert_eq!(meta["track"], "s-9");
        assert_eq!(meta["crops"].as_array().map(Vec::len), Some(2));

        // Erasing one track removes its folder only (not "s-10", nor another camera's "s-9").
        assert_eq!(remove_tracklet(root.path(), "lobby/1", "s-9").expect("remove"), 1);
        assert!(!first.exists());
        assert!(cam.join(&tracks[1]).is_dir());
        assert_eq!(remove_tracklet(root.path(), "lobby/1", "s-9").expect("remove"), 0);
        assert_eq!(remove_tracklet(root.path(), "nowhere", "s-9").expect("remove"), 0);
    }
}
