//! Faces through the whole matching path: a real embedder serving FaceNet, the identity service
//! on the embedded engine, both in-process over real gRPC. Obama is enrolled from one photo and
//! recognised in two others; Biden, never enrolled, is answered unknown; then Obama is forgotten.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use opencv::core::{Rect, Size, Vector};
use opencv::prelude::*;
use opencv::{imgcodecs, objdetect};
use reid_proto::v1 as pb;
use reid_proto::v1::identity_service_client::IdentityServiceClient;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The largest Haar face with a fifth of its width as margin, JPEG-encoded (what an ingester sends).
fn face(name: &str) -> pb::Image {
    let path = repo().join(".cache/data/face_recognition/test_images").join(name);
    let image = imgcodecs::imread(path.to_str().unwrap(), imgcodecs::IMREAD_COLOR).unwrap();
    assert!(!image.empty(), "{} missing (run `make setup`)", path.display());
    let mut detector =
        objdetect::CascadeClassifier::new("/usr/share/opencv4/haarcascades/haarcascade_frontalface_default.xml")
            .unwrap();
    let mut faces = Vector::<Rect>::new();
    detector.detect_multi_scale(&image, &mut faces, 1.1, 5, 0, Size::new(40, 40), Size::default()).unwrap();
    let f = faces.iter().max_by_key(|r| r.area()).unwrap();
    let m = f.width / 5;
    let (x, y) = ((f.x - m).max(0), (f.y - m).max(0));
    let roi = Rect::new(x, y, (f.width + 2 * m).min(image.cols() - x), (f.height + 2 * m).min(image.rows() - y));
    let crop = Mat::roi(&image, roi).unwrap().try_clone().unwrap();
    let mut jpeg = Vector::<u8>::new();
    imgcodecs::imencode(".jpg", &crop, &mut jpeg, &Vector::new()).unwrap();
    pb::Image { data: Some(pb::image::Data::Encoded(jpeg.to_vec())) }
}

fn probe(name: &str) -> pb::Probe {
    pb::Probe { query: Some(pb::probe::Query::Image(face(name))) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faces_are_enrolled_recognised_refused_and_forgotten() {
    let embedder_config = reid_embedder::EmbedderConfig {
        model_dir: repo().join("models"),
        model: "facenet".into(),
        watch_interval: Duration::ZERO,
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let embedder_addr = listener.local_addr().unwrap();
    tokio::spawn(reid_embedder::run(embedder_config, listener, std::future::pending()));

    let data = tempfile::tempdir().unwrap();
    let identity_config = reid_identity::IdentityConfig {
        data_dir: data.path().to_path_buf(),
        embedder_url: Some(format!("http://{embedder_addr}")),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let identity_addr = listener.local_addr().unwrap();
    tokio::spawn(reid_identity::run(identity_config, listener, std::future::pending()));
    let mut client = IdentityServiceClient::connect(format!("http://{identity_addr}")).await.unwrap();

    let enrolled = client
        .enroll(pb::EnrollRequest {
            name: "Barack Obama".into(),
            images: vec![face("obama.jpg")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(enrolled.model.as_ref().unwrap().id, "facenet");

    let request = pb::IdentifyRequest {
        probes: vec![probe("obama2.jpg"), probe("obama3.jpg"), probe("biden.jpg")],
        ..Default::default()
    };
    let results = client.identify(request.clone()).await.unwrap().into_inner().results;
    for r in &results {
        println!(
            "decision {:?} score {:.3} margin {:.3}",
            pb::Decision::try_from(r.decision).unwrap(),
            r.score,
            r.margin
        );
    }
    for r in &results[..2] {
        assert_eq!(r.decision, pb::Decision::Known as i32);
        assert_eq!(r.identity_id, enrolled.identity_id);
        assert_eq!(r.candidates[0].name, "Barack Obama");
    }
    assert_eq!(results[2].decision, pb::Decision::Unknown as i32, "a stranger is not the nearest enrolled face");
    assert!(results[2].score < results[0].score.min(results[1].score));

    let erased =
        client.forget(pb::ForgetRequest { identity_id: enrolled.identity_id.clone() }).await.unwrap().into_inner();
    assert_eq!((erased.vectors_removed, erased.crops_removed), (1, 1));
    let results = client.identify(request).await.unwrap().into_inner().results;
    assert!(results.iter().all(|r| r.decision == pb::Decision::Unknown as i32 && r.candidates.is_empty()));
}
