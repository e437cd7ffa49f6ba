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

#[tokio::test]
async fn a_crop_of_someone_else_does_not_draw_the_tracklet_to_them() {
    // Person 1 and person 2 are known from a tracklet each on the east camera. A west tracklet
    // of person 1 holds one crop of person 2 (taken as they crossed), the sharpest of its four.
    async fn observe_crossing(crop_agreement: Option<f32>) -> (String, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        config.association.crop_agreement = crop_agreement;
        let service = Service::start(config, ScriptedEmbedder::new("A")).await;
        let embedder = &service.embedder;
        let t0 = reid_identity::identities::now_ms() - 600_000;
        let crop = |person: u64, view: u64, quality: f32, at: i64| TrackletCrop {
            image: None,
            embedding: Some(embedder.embedding("A", person, view)),
            quality,
            bbox: Some([10.0, 20.0, 64.0, 128.0]),
            at_ms: Some(at),
        };
        let tracklet = |camera: &str, track: &str, crops: Vec<TrackletCrop>| Tracklet {
            camera: camera.into(),
            track: track.into(),
            crops,
            model: Some(embedder.key()),
        };
        let mut known = Vec::new();
        for person in [1, 2] {
            let crops = (0..3).map(|v| crop(person, v, 0.5, t0 + 100_000 * person as i64 + v as i64)).collect();
            known.push(
                service.identities.observe(tracklet("east", &format!("p{person}"), crops)).await.unwrap().identity,
            );
        }
        let mut crossing: Vec<TrackletCrop> = (10..13).map(|v| crop(1, v, 0.2, t0 + 400_000 + v as i64)).collect();
        crossing.push(crop(2, 13, 1.0, t0 + 400_020));
        let observed = service.identities.observe(tracklet("west", "x", crossing)).await.unwrap();
        service.stop().await;
        (observed.identity, known[0].clone(), known[1].clone())
    }
    let (joined, person_1, _) = observe_crossing(None).await;
    assert_eq!(joined, person_1, "the crop that disagrees with the other three is left out");
    let (joined, _, person_2) = observe_crossing(Some(-1.0)).await;
    assert_eq!(joined, person_2, "every crop counted: the sharp one of person 2 decides");
}
