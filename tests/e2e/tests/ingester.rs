//! The ingester with the embedder and the identity service behind it, all in-process over real
//! gRPC on 127.0.0.1:0: `vtest.avi` (a real pedestrian video, apt `opencv-doc`) becomes tracklets
//! of people that reach the identity service; tracklets wait while the identity service is down
//! and are delivered when it comes back.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reid_ingester::IngesterConfig;
use reid_ingester::ingester::Ingester;
use reid_proto::v1 as pb;
use reid_proto::v1::identity_service_client::IdentityServiceClient;
use reid_proto::v1::ingester_service_client::IngesterServiceClient;
use tokio::net::TcpListener;
use tonic::transport::Channel;

const VTEST: &str = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// x, y, width, height in frame pixels.
type Person = (f32, f32, f32, f32);

/// People in `vtest.avi`, by frame: boxes (x, y, w, h) drawn by hand on a 50-pixel grid over the
/// frame, every person visible (one half hidden behind the sign on frame 20 included).
const PEOPLE: [(u64, &[Person]); 4] = [
    (
        20,
        &[
            (362., 192., 38., 85.),
            (438., 232., 45., 88.),
            (686., 270., 38., 108.),
            (727., 268., 30., 102.),
            (412., 168., 20., 80.),
        ],
    ),
    (
        241,
        &[
            (38., 175., 26., 72.),
            (228., 155., 36., 78.),
            (640., 117., 26., 63.),
            (665., 120., 22., 63.),
            (602., 200., 32., 78.),
            (435., 248., 42., 103.),
            (652., 265., 40., 108.),
        ],
    ),
    (
        556,
        &[
            (98., 165., 24., 68.),
            (392., 160., 28., 78.),
            (585., 155., 32., 80.),
            (640., 303., 32., 110.),
            (168., 355., 45., 138.),
            (200., 380., 70., 145.),
        ],
    ),
    (
        697,
        &[
            (175., 165., 25., 72.),
            (355., 170., 30., 82.),
            (298., 215., 35., 85.),
            (408., 152., 30., 50.),
            (460., 138., 30., 62.),
            (522., 165., 28., 68.),
            (705., 218., 30., 90.),
            (108., 292., 45., 108.),
        ],
    ),
];

/// A crop shows a person when a hand-drawn person lies at least 70% inside its box and the box is
/// not more than 6 times that person's size (a box around a whole group does not count).
fn shows_a_person(frame: u64, b: [f32; 4]) -> Option<bool> {
    let people = PEOPLE.iter().find(|(f, _)| *f == frame)?.1;
    Some(people.iter().any(|&(x, y, w, h)| {
        let ix = ((x + w).min(b[0] + b[2]) - x.max(b[0])).max(0.0);
        let iy = ((y + h).min(b[1] + b[3]) - y.max(b[1])).max(0.0);
        ix * iy >= 0.7 * w * h && b[2] * b[3] <= 6.0 * w * h
    }))
}

async fn start_embedder() -> String {
    let config = reid_embedder::EmbedderConfig {
        model_dir: repo().join("models"),
        model: reid_embedder::DEFAULT_MODEL.into(),
        watch_interval: Duration::ZERO,
        ..Default::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(reid_embedder::run(config, listener, std::future::pending()));
    addr
}

async fn start_identity(
    listener: TcpListener,
    data: &Path,
    embedder: &str,
    ingester: Option<String>,
) -> tokio::sync::oneshot::Sender<()> {
    let config = reid_identity::IdentityConfig {
        data_dir: data.to_path_buf(),
        embedder_url: Some(embedder.into()),
        ingester_url: ingester,
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(reid_identity::run(config, listener, async {
        let _ = stopped.await;
    }));
    stop
}

async fn start_ingester(config: IngesterConfig) -> (Arc<Ingester>, IngesterServiceClient<Channel>) {
    start_ingester_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), config).await
}

async fn start_ingester_on(
    listener: TcpListener,
    mut config: IngesterConfig,
) -> (Arc<Ingester>, IngesterServiceClient<Channel>) {
    // The default person detector's model, where set-up puts it (tests run in tests/e2e).
    config.detectors.ssd.model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/ssdlite-person/frozen_inference_graph.pb");
    let ingester = reid_ingester::start(config).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = reid_server::GrpcServer::new(vec![reid_ingester::SERVICE_NAME]);
    tokio::spawn(reid_ingester::serve(ingester.clone(), server, listener, std::future::pending()));
    (ingester, IngesterServiceClient::connect(format!("http://{addr}")).await.unwrap())
}

fn delivered(ingester: &Ingester) -> u64 {
    ingester.metrics().tracklets.with_label_values(&["delivered"]).get()
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vtest_becomes_tracklets_of_people_that_reach_the_identity_service() {
    let embedder = start_embedder().await;
    let data = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let identity = format!("http://{}", listener.local_addr().unwrap());
    // The identity service erases the ingester's exports of whoever it forgets.
    let ingester_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ingester_url = format!("http://{}", ingester_listener.local_addr().unwrap());
    let _identity_stop = start_identity(listener, data.path(), &embedder, Some(ingester_url)).await;
    let export = tempfile::tempdir().unwrap();
    let config = IngesterConfig {
        embedder_url: Some(embedder),
        identity_url: Some(identity.clone()),
        export_dir: Some(export.path().to_path_buf()),
        sources: reid_ingester::SourcePolicy {
            file_roots: vec!["/usr/share/doc/opencv-doc/examples/data".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    let (ingester, mut client) = start_ingester_on(ingester_listener, config).await;
    let camera =
        pb::CameraConfig { camera_id: "plaza".into(), url: VTEST.into(), detector: "hog".into(), ..Default::default() };
    client.add_camera(pb::AddCameraRequest { camera: Some(camera) }).await.unwrap();

    let started = Instant::now();
    let mut status;
    loop {
        status = client.list_cameras(pb::ListCamerasRequest {}).await.unwrap().into_inner().cameras.remove(0);
        if status.state == pb::CameraState::Finished as i32 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "vtest.avi did not finish: {status:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // FINISHED: every frame processed and the tracks still open at the end flushed.
    let emitted = ingester.metrics().tracklets.with_label_values(&["emitted"]).get();
    wait_for("every tracklet delivered", Duration::from_secs(120), || delivered(&ingester) == emitted).await;
    println!(
        "{} frames in {:.1} s, {emitted} tracklets, all delivered",
        status.frames_processed,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(status.frames_processed, 795, "every frame of the file is processed: {status:?}");
    assert!(emitted >= 40, "a 80-second video of a busy plaza gives many tracklets, got {emitted}");
    assert_eq!(ingester.metrics().tracklets.with_label_values(&["rejected"]).get(), 0);

    // Crops that fall on hand-labelled frames show people.
    let (mut on_people, mut checked) = (0, 0);
    for camera in std::fs::read_dir(export.path()).unwrap() {
        for track in std::fs::read_dir(camera.unwrap().path()).unwrap() {
            let meta: serde_json::Value =
                serde_json::from_slice(&std::fs::read(track.unwrap().path().join("tracklet.json")).unwrap()).unwrap();
            for crop in meta["crops"].as_array().unwrap() {
                let frame = crop["frame"].as_u64().unwrap();
                let b: Vec<f32> = crop["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
                if let Some(person) = shows_a_person(frame, [b[0], b[1], b[2], b[3]]) {
                    checked += 1;
                    on_people += usize::from(person);
                    println!("frame {frame}: box {b:?} {}", if person { "shows a person" } else { "NOT a person" });
                }
            }
        }
    }
    println!("{on_people}/{checked} crops on labelled frames show a person");
    assert!(checked >= 8, "too few crops on the labelled frames to judge ({checked})");
    assert!(on_people * 4 >= checked * 3, "{on_people}/{checked} crops show a person");

    // The identity service holds them: identities with sightings on camera "plaza".
    let mut identities = IdentityServiceClient::connect(identity).await.unwrap();
    let listed = identities
        .list_identities(pb::ListIdentitiesRequest { page_size: 1000, page_token: String::new() })
        .await
        .unwrap()
        .into_inner()
        .identities;
    let sightings: u64 = listed.iter().map(|i| i.sightings).sum();
    println!("{} identities, {sightings} sightings", listed.len());
    assert_eq!(sightings, emitted, "one sighting per tracklet");
    assert!(listed.iter().all(|i| i.cameras == vec!["plaza".to_string()]));
    assert!(listed.len() as u64 <= emitted);

    // Forgetting someone erases their tracklets' exported crops too.
    let exported = |track: &str| {
        std::fs::read_dir(export.path().join("plaza"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().split_once('_').is_some_and(|(_, t)| t == track))
            .count()
    };
    let person = listed.iter().max_by_key(|i| i.sightings).unwrap();
    let erased =
        identities.forget(pb::ForgetRequest { identity_id: person.identity_id.clone() }).await.unwrap().into_inner();
    assert_eq!(erased.tracklets.len() as u64, person.sightings);
    assert!(erased.exports_erased, "the ingester confirmed");
    for t in &erased.tracklets {
        assert_eq!(exported(&t.track_id), 0, "the export of {} is still there", t.track_id);
    }
    let others = std::fs::read_dir(export.path().join("plaza")).unwrap().count() as u64;
    assert_eq!(others, emitted - person.sightings, "the others' exports are kept");
}

fn person_crop(seed: u8) -> pb::Image {
    // A 64x128 crop; different people differ in colour.
    let (red, blue) = (255u8.saturating_sub(seed.saturating_mul(20)), seed.saturating_mul(20));
    let rgb = [red, 90, blue].repeat(64 * 128);
    pb::Image { data: Some(pb::image::Data::Encoded(reid_model::preprocess::encode_jpeg(64, 128, &rgb).unwrap())) }
}

/// Three edge-tracked detections of one object, pushed as they would come from an edge device.
fn detections(track: u8) -> Vec<pb::PushDetectionsRequest> {
    (0..3)
        .map(|i| pb::PushDetectionsRequest {
            camera_id: "edge".into(),
            captured_at: Some(prost_types::Timestamp { seconds: 1_700_000_000 + i64::from(track) * 10 + i, nanos: 0 }),
            detections: vec![pb::Detection {
                r#box: Some(pb::BoundingBox { x: 10.0 * f32::from(track), y: 20.0, width: 64.0, height: 128.0 }),
                score: 0.9,
                crop: Some(person_crop(track)),
                track_id: format!("t{track}"),
            }],
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracklets_wait_while_the_identity_service_is_down_and_beyond_the_bound_are_counted() {
    let embedder = start_embedder().await;
    // Reserve a port for the identity service, then leave it closed: the service is down.
    let reserved = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let identity_addr = reserved.local_addr().unwrap();
    drop(reserved);
    let mut config = IngesterConfig {
        embedder_url: Some(embedder.clone()),
        identity_url: Some(format!("http://{identity_addr}")),
        ..Default::default()
    };
    config.delivery.buffer_tracklets = 5;
    config.delivery.retry_initial = Duration::from_millis(50);
    config.delivery.retry_max = Duration::from_millis(200);
    let (ingester, mut client) = start_ingester(config).await;
    client
        .add_camera(pb::AddCameraRequest {
            camera: Some(pb::CameraConfig { camera_id: "edge".into(), url: "push".into(), ..Default::default() }),
        })
        .await
        .unwrap();
    // Eight tracklets, one push stream each (the end of a stream ends its tracks).
    for track in 0..8u8 {
        let reply = client.push_detections(tokio_stream::iter(detections(track))).await.unwrap().into_inner();
        assert_eq!((reply.detections_received, reply.detections_rejected, reply.tracklets_emitted), (3, 0, 1));
    }
    // Tracklets displaced while in flight are counted when their delivery fails: wait for that.
    wait_for("three tracklets dropped beyond the bound", Duration::from_secs(20), || {
        ingester.metrics().delivery_retries.get() > 0 && ingester.outbox_dropped() == 3
    })
    .await;
    assert_eq!(delivered(&ingester), 0);
    assert_eq!(ingester.outbox_len(), 5, "the bound holds five");
    assert_eq!(ingester.metrics().tracklets.with_label_values(&["dropped"]).get(), 3);

    // The identity service comes up on its address: the five waiting tracklets reach it.
    let data = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind(identity_addr).await.unwrap();
    let _stop = start_identity(listener, data.path(), &embedder, None).await;
    wait_for("the buffered tracklets to be delivered", Duration::from_secs(60), || delivered(&ingester) == 5).await;
    assert_eq!(ingester.outbox_len(), 0);
    let mut identities = IdentityServiceClient::connect(format!("http://{identity_addr}")).await.unwrap();
    let listed = identities
        .list_identities(pb::ListIdentitiesRequest { page_size: 100, page_token: String::new() })
        .await
        .unwrap()
        .into_inner()
        .identities;
    let mut tracks = Vec::new();
    for i in &listed {
        let s = identities
            .sightings(pb::SightingsRequest { identity_id: i.identity_id.clone(), range: None, cameras: vec![] })
            .await
            .unwrap()
            .into_inner();
        tracks.extend(s.sightings.into_iter().map(|s| s.track_id));
    }
    let mut suffixes: Vec<String> = tracks.iter().map(|t| t.rsplit('-').next().unwrap().to_string()).collect();
    suffixes.sort();
    suffixes.dedup();
    assert_eq!(suffixes.len(), 5, "five different tracklets arrived, once each: {tracks:?}");
    assert_eq!(tracks.len(), 5);
    assert_eq!(suffixes, vec!["t3", "t4", "t5", "t6", "t7"], "the newest five: {tracks:?}");
}
