#![allow(clippy::unwrap_used)]
//! `Observe` with crops the caller embedded: only the thumbnail's picture need come along, and
//! the best crop that carries a picture is the one kept.

mod common;

use common::*;
use reid_identity::identities::{SightingQuery, Tracklet, TrackletCrop};

#[tokio::test]
async fn embedded_crops_need_only_the_thumbnail_s_picture() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path()), ScriptedEmbedder::new("A")).await;
    let embedder = &service.embedder;
    let t0 = reid_identity::identities::now_ms() - 60_000;
    // Three crops of person 1, embedded; only the second carries its picture, and a lower
    // quality than the third: the picture that came is the thumbnail all the same.
    let crop = |view: u64, quality: f32, picture: bool| TrackletCrop {
        image: picture.then(|| image(1, view)),
        embedding: Some(embedder.embedding("A", 1, view)),
        quality,
        bbox: Some([10.0, 20.0, 64.0, 128.0]),
        at_ms: Some(t0 + 1000 * view as i64),
    };
    let tracklet = Tracklet {
        camera: "west".into(),
        track: "1".into(),
        crops: vec![crop(0, 0.2, false), crop(1, 0.5, true), crop(2, 0.9, false)],
        model: Some(embedder.key()),
    };
    let observed = service.identities.observe(tracklet).await.unwrap();
    assert_eq!(*embedder.calls.lock().unwrap(), 0, "nothing was embedded again");
    let query = SightingQuery { identity: observed.identity.clone(), ..Default::default() };
    let sightings = service.identities.sightings(query).await.unwrap();
    assert_eq!(sightings.len(), 1);
    let thumbnail = sightings[0].thumbnail.clone().expect("a thumbnail was kept");
    let stored = std::fs::read(dir.path().join("crops").join(&thumbnail)).unwrap();
    let sent = match image(1, 1).data {
        Some(reid_proto::v1::image::Data::Encoded(bytes)) => bytes,
        other => panic!("{other:?}"),
    };
    assert_eq!(stored, sent, "the picture that came is the one stored");
    service.stop().await;
}

/// A service with `association.crop_agreement` set, its scripted embedder's model "A", and a
/// time ten minutes ago to date crops from.
async fn agreeing(dir: &std::path::Path, crop_agreement: Option<f32>) -> (Service, i64) {
    let mut config = config(dir);
    config.association.crop_agreement = crop_agreement;
    let service = Service::start(config, ScriptedEmbedder::new("A")).await;
    (service, reid_identity::identities::now_ms() - 600_000)
}

/// A crop of `person` seen from `view`, embedded by model "A", taken at `at_ms`.
fn embedded(embedder: &ScriptedEmbedder, person: u64, view: u64, quality: f32, at_ms: i64) -> TrackletCrop {
    TrackletCrop {
        image: None,
        embedding: Some(embedder.embedding("A", person, view)),
        quality,
        bbox: Some([10.0, 20.0, 64.0, 128.0]),
        at_ms: Some(at_ms),
    }
}

fn of(embedder: &ScriptedEmbedder, camera: &str, track: &str, crops: Vec<TrackletCrop>) -> Tracklet {
    Tracklet { camera: camera.into(), track: track.into(), crops, model: Some(embedder.key()) }
}

#[tokio::test]
async fn a_crop_of_someone_else_does_not_draw_the_tracklet_to_them() {
    // Person 1 and person 2 are known from a tracklet each on the east camera. A west tracklet
    // of person 1 holds one crop of person 2 (taken as they crossed), the sharpest of its four.
    async fn observe_crossing(crop_agreement: Option<f32>) -> (String, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let (service, t0) = agreeing(dir.path(), crop_agreement).await;
        let embedder = &service.embedder;
        let mut known = Vec::new();
        for person in [1, 2] {
            let at = |v: u64| t0 + 100_000 * person as i64 + v as i64;
            let crops = (0..3).map(|v| embedded(embedder, person, v, 0.5, at(v))).collect();
            known.push(
                service.identities.observe(of(embedder, "east", &format!("p{person}"), crops)).await.unwrap().identity,
            );
        }
        let mut crossing: Vec<TrackletCrop> =
            (10..13).map(|v| embedded(embedder, 1, v, 0.2, t0 + 400_000 + v as i64)).collect();
        crossing.push(embedded(embedder, 2, 13, 1.0, t0 + 400_020));
        let observed = service.identities.observe(of(embedder, "west", "x", crossing)).await.unwrap();
        service.stop().await;
        (observed.identity, known[0].clone(), known[1].clone())
    }
    let (joined, person_1, _) = observe_crossing(None).await;
    assert_eq!(joined, person_1, "the crop that disagrees with the other three is left out");
    let (joined, _, person_2) = observe_crossing(Some(-1.0)).await;
    assert_eq!(joined, person_2, "every crop counted: the sharp one of person 2 decides");
}

#[tokio::test]
async fn a_sighting_lasts_as_long_as_the_crops_kept() {
    // Person 1 is seen by west track a over seconds 0-10. West track b follows them over seconds
    // 12-20, but its tracker also took a crop of person 2 at second 5, while the two crossed.
    async fn observe_after(crop_agreement: Option<f32>) -> (String, String, (i64, i64)) {
        let dir = tempfile::tempdir().unwrap();
        let (service, t0) = agreeing(dir.path(), crop_agreement).await;
        let embedder = &service.embedder;
        let crop = |person: u64, view: u64, second: i64| embedded(embedder, person, view, 0.5, t0 + 1000 * second);
        let a = vec![crop(1, 0, 0), crop(1, 1, 5), crop(1, 2, 10)];
        let a = service.identities.observe(of(embedder, "west", "a", a)).await.unwrap();
        let b = vec![crop(1, 3, 12), crop(1, 4, 16), crop(1, 5, 20), crop(2, 6, 5)];
        let b = service.identities.observe(of(embedder, "west", "b", b)).await.unwrap();
        let query = SightingQuery { identity: b.identity.clone(), ..Default::default() };
        let sightings = service.identities.sightings(query).await.unwrap();
        let seen = sightings.iter().find(|s| s.track == "b").map(|s| (s.start_ms - t0, s.end_ms - t0)).unwrap();
        service.stop().await;
        (a.identity, b.identity, seen)
    }
    let (a, b, seen) = observe_after(None).await;
    assert_eq!(seen, (12_000, 20_000), "the crop of person 2 is left out, and its time with it");
    assert_eq!(a, b, "b does not overlap a, so the one-place rule lets it join person 1");
    let (_, _, seen) = observe_after(Some(-1.0)).await;
    assert_eq!(seen, (5_000, 20_000), "every crop kept: the sighting spans them all");
}
