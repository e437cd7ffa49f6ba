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
