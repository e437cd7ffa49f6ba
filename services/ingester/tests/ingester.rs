//! The ingester on its own, in-process over real gRPC on 127.0.0.1:0: cameras that drop and come
//! back, pushed frames that are corrupt, truncated or empty, and requests that must be refused
//! with a clear status. (With the embedder and identity service behind it: tests/e2e.)

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use opencv::core::{Mat, Point, Rect, Scalar, Vector};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc};
use reid_ingester::{IngesterConfig, ingester::Ingester};
use reid_proto::v1 as pb;
use reid_proto::v1::ingester_service_client::IngesterServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tonic::Code;
use tonic::transport::Channel;

struct Running {
    ingester: Arc<Ingester>,
    client: IngesterServiceClient<Channel>,
}

async fn start(config: IngesterConfig) -> Running {
    let ingester = reid_ingester::start(config).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = reid_server::GrpcServer::new(vec![reid_ingester::SERVICE_NAME]);
    tokio::spawn(reid_ingester::serve(ingester.clone(), server, listener, std::future::pending()));
    let client = IngesterServiceClient::connect(format!("http://{addr}")).await.unwrap();
    Running { ingester, client }
}

fn camera(id: &str, url: &str, detector: &str) -> pb::AddCameraRequest {
    pb::AddCameraRequest {
        camera: Some(pb::CameraConfig {
            camera_id: id.into(),
            url: url.into(),
            detector: detector.into(),
            ..Default::default()
        }),
    }
}

/// A 320x240 scene with a dark upright "person" walking right: enough for background subtraction.
fn scene_jpeg(i: usize) -> Vec<u8> {
    let mut m = Mat::new_rows_cols_with_default(240, 320, opencv::core::CV_8UC3, Scalar::new(170.0, 170.0, 160.0, 0.0))
        .unwrap();
    let x = 20 + (i * 4) % 260;
    imgproc::rectangle(
        &mut m,
        Rect::new(x as i32, 60, 24, 80),
        Scalar::new(40.0, 30.0, 30.0, 0.0),
        -1,
        imgproc::LINE_8,
        0,
    )
    .unwrap();
    imgproc::circle(
        &mut m,
        Point::new(x as i32 + 12, 50),
        10,
        Scalar::new(60.0, 80.0, 120.0, 0.0),
        -1,
        imgproc::LINE_8,
        0,
    )
    .unwrap();
    let mut buf = Vector::<u8>::new();
    imgcodecs::imencode(".jpg", &m, &mut buf, &Vector::new()).unwrap();
    buf.to_vec()
}

/// A tiny MJPEG-over-HTTP camera. The first connection to `/flaky` is cut after 15 frames;
/// every other connection streams at 25 fps until the client leaves.
async fn mjpeg_server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let flaky_connections = Arc::new(AtomicUsize::new(0));
    let counter = flaky_connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let flaky = String::from_utf8_lossy(&request).contains("/flaky");
                let cut_after = if flaky && counter.fetch_add(1, Ordering::SeqCst) == 0 { 15 } else { usize::MAX };
                let header = "HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n";
                if socket.write_all(header.as_bytes()).await.is_err() {
                    return;
                }
                for i in 0..cut_after {
                    let jpeg = scene_jpeg(i);
                    let part = format!("--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", jpeg.len());
                    let sent = async {
                        socket.write_all(part.as_bytes()).await?;
                        socket.write_all(&jpeg).await?;
                        socket.write_all(b"\r\n").await
                    };
                    if sent.await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
                // Dropping the socket cuts the stream mid-way, as a camera losing power does.
            });
        }
    });
    (addr, flaky_connections)
}

async fn status(client: &mut IngesterServiceClient<Channel>, id: &str) -> pb::CameraStatus {
    let cameras = client.list_cameras(pb::ListCamerasRequest {}).await.unwrap().into_inner().cameras;
    cameras.into_iter().find(|c| c.config.as_ref().unwrap().camera_id == id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_that_drops_is_reconnected_while_the_others_keep_running() {
    let (addr, flaky_connections) = mjpeg_server().await;
    let mut config = IngesterConfig::default();
    config.sources.stream_hosts = vec!["127.0.0.1".into()];
    config.reconnect.initial = Duration::from_millis(100);
    config.reconnect.max = Duration::from_millis(400);
    let Running { mut client, .. } = start(config).await;
    client.add_camera(camera("flaky", &format!("http://{addr}/flaky"), "background")).await.unwrap();
    client.add_camera(camera("steady", &format!("http://{addr}/steady"), "background")).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut flaky, mut steady);
    let mut steady_during_outage = None;
    loop {
        flaky = status(&mut client, "flaky").await;
        steady = status(&mut client, "steady").await;
        if flaky.reconnects >= 1 && steady_during_outage.is_none() {
            steady_during_outage = Some(steady.frames_processed);
        }
        let back =
            flaky.reconnects >= 1 && flaky.state == pb::CameraState::Running as i32 && flaky.frames_processed > 30;
        if back || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("flaky: {flaky:?}\nsteady: {steady:?}");
    assert_eq!(flaky.reconnects, 1, "one drop, one reconnect");
    assert!(flaky_connections.load(Ordering::SeqCst) >= 2, "the camera came back to the server");
    assert_eq!(flaky.state, pb::CameraState::Running as i32);
    assert!(flaky.frames_processed > 30, "frames after the reconnect are processed: {}", flaky.frames_processed);
    assert!(flaky.last_error.contains("read"), "the drop is reported: {:?}", flaky.last_error);
    assert_eq!(steady.reconnects, 0);
    assert_eq!(steady.state, pb::CameraState::Running as i32);
    assert!(
        steady.frames_processed > steady_during_outage.unwrap(),
        "the other camera kept running: {} then {}",
        steady_during_outage.unwrap(),
        steady.frames_processed
    );
    client.remove_camera(pb::RemoveCameraRequest { camera_id: "flaky".into() }).await.unwrap();
    client.remove_camera(pb::RemoveCameraRequest { camera_id: "steady".into() }).await.unwrap();
}

fn frame(camera: &str, data: Option<pb::image::Data>, sequence: u64) -> pb::PushFramesRequest {
    pb::PushFramesRequest {
        camera_id: camera.into(),
        frame: Some(pb::Frame { image: Some(pb::Image { data }), captured_at: None, sequence }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_truncated_and_empty_pushed_frames_are_counted_and_skipped() {
    let Running { mut client, ingester } = start(IngesterConfig::default()).await;
    client.add_camera(camera("door", "push", "background")).await.unwrap();
    let good = |i| Some(pb::image::Data::Encoded(scene_jpeg(i)));
    let mut messages = Vec::new();
    for i in 0..40usize {
        messages.push(frame(if i == 0 { "door" } else { "" }, good(i), i as u64));
        match i {
            10 => messages.push(frame("", Some(pb::image::Data::Encoded(b"garbage, not a jpeg".to_vec())), 1000)),
            20 => messages.push(frame("", Some(pb::image::Data::Encoded(scene_jpeg(3)[..40].to_vec())), 1001)),
            25 => messages.push(frame("", Some(pb::image::Data::Encoded(Vec::new())), 1002)),
            30 => messages.push(frame("", None, 1003)),
            _ => {}
        }
    }
    // Raw pixels whose length does not match their size.
    messages.push(frame(
        "",
        Some(pb::image::Data::Raw(pb::RawImage {
            width: 10,
            height: 10,
            format: pb::PixelFormat::Rgb8 as i32,
            pixels: vec![0; 7],
        })),
        1004,
    ));
    // A camera's pace: a frame every 10 ms (the detector keeps up, so the live queue drops none).
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        for m in messages {
            tx.send(m).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let reply = client.push_frames(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    println!("{reply:?}");
    assert_eq!(reply.frames_received, 45);
    assert_eq!(reply.frames_corrupt, 5);
    let status = status(&mut client, "door").await;
    let dropped: std::collections::BTreeMap<String, u64> =
        status.frames_dropped.iter().map(|d| (d.reason.clone(), d.count)).collect();
    println!("{dropped:?}");
    assert_eq!(dropped.get("corrupt"), Some(&2), "garbage and the truncated JPEG");
    assert_eq!(dropped.get("empty"), Some(&2), "zero-length bytes and a message without image data");
    assert_eq!(dropped.get("wrong_size"), Some(&1));
    // Every good frame went on to the detector, in spite of the bad ones between them (unless the
    // live queue of 8 overflowed on a loaded machine: such frames are counted too).
    let queue_full = dropped.get("queue_full").copied().unwrap_or(0);
    assert_eq!(reply.frames_processed + queue_full, 40);
    assert_eq!(reply.frames_dropped, queue_full);
    assert!(reply.frames_processed >= 30, "{reply:?}");
    assert!(!status.last_error.is_empty());
    assert!(ingester.metrics().frames.with_label_values(&["door", "corrupt"]).get() == 2);

    // The camera takes the next stream as if nothing happened.
    let again = client.push_frames(tokio_stream::iter(vec![frame("door", good(0), 0)])).await.unwrap().into_inner();
    assert_eq!((again.frames_received, again.frames_corrupt, again.frames_processed), (1, 0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_cameras_bad_urls_and_unsupported_detectors_get_clear_errors() {
    let data = "/usr/share/doc/opencv-doc/examples/data";
    let mut config = IngesterConfig::default();
    config.sources.file_roots = vec![data.into()];
    let Running { mut client, .. } = start(config).await;
    let video = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";
    let missing = format!("{data}/no-such-video.avi");
    let cases: Vec<(pb::AddCameraRequest, Code, &str)> = vec![
        (camera("a", "ftp://cam/x", "hog"), Code::InvalidArgument, "unsupported scheme"),
        (camera("a", &missing, "hog"), Code::InvalidArgument, "no such file"),
        // Outside the roots the answer is the same whether the path exists or not.
        (camera("a", "/no/such/video.avi", "hog"), Code::InvalidArgument, "sources.file_roots"),
        (camera("a", "/etc/passwd", "hog"), Code::InvalidArgument, "sources.file_roots"),
        (camera("a", &format!("{data}/../../../../../etc/passwd"), "hog"), Code::InvalidArgument, "sources.file_roots"),
        (camera("a", "http://127.0.0.1:9/x", "hog"), Code::InvalidArgument, "private address"),
        (camera("a", "device:0", "hog"), Code::InvalidArgument, "allow_devices"),
        (camera("..", "push", "hog"), Code::InvalidArgument, "camera id"),
        (camera(".hidden", "push", "hog"), Code::InvalidArgument, "camera id"),
        (camera("a", "rtsp://", "hog"), Code::InvalidArgument, "no host"),
        (camera("a", "device:minus-one", "hog"), Code::InvalidArgument, "device"),
        (camera(&"x".repeat(100_000), "push", "hog"), Code::InvalidArgument, "camera id"),
        (camera("a", "push", "yolo9000"), Code::InvalidArgument, "unsupported detector"),
        (camera("a", "push", "onnx"), Code::FailedPrecondition, "names a model"),
        (camera("bad id!", "push", "hog"), Code::InvalidArgument, "camera id"),
        (camera("", "push", "hog"), Code::InvalidArgument, "camera id"),
        (pb::AddCameraRequest { camera: None }, Code::InvalidArgument, "camera is required"),
    ];
    for (request, code, words) in cases {
        let e = client.add_camera(request.clone()).await.unwrap_err();
        assert_eq!(e.code(), code, "{request:?}: {e:?}");
        assert!(e.message().contains(words), "{request:?}: {:?} does not say {words:?}", e.message());
    }
    assert!(client.list_cameras(pb::ListCamerasRequest {}).await.unwrap().into_inner().cameras.is_empty());

    client.add_camera(camera("lobby", video, "background")).await.unwrap();
    let e = client.add_camera(camera("lobby", "push", "hog")).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let e = client.remove_camera(pb::RemoveCameraRequest { camera_id: "nobody".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("nobody"));

    let push = |id: &str| tokio_stream::iter(vec![frame(id, Some(pb::image::Data::Encoded(scene_jpeg(0))), 0)]);
    let e = client.push_frames(push("nobody")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = client.push_frames(push("lobby")).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = client.push_frames(push("")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = client
        .push_detections(tokio_stream::iter(vec![pb::PushDetectionsRequest {
            camera_id: "nobody".into(),
            ..Default::default()
        }]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    client.remove_camera(pb::RemoveCameraRequest { camera_id: "lobby".into() }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_the_tracks_still_open() {
    let export = tempfile::tempdir().unwrap();
    let config = IngesterConfig { export_dir: Some(export.path().to_path_buf()), ..Default::default() };
    let Running { mut client, ingester } = start(config).await;
    client.add_camera(camera("door", "push", "background")).await.unwrap();
    // A camera that keeps its stream open: 40 frames of someone walking, 10 ms apart, then silence.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let push = tokio::spawn(async move { client.push_frames(tokio_stream::wrappers::ReceiverStream::new(rx)).await });
    for i in 0..40usize {
        tx.send(frame(if i == 0 { "door" } else { "" }, Some(pb::image::Data::Encoded(scene_jpeg(i))), i as u64))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let door = loop {
        assert!(Instant::now() < deadline, "the 40 frames were not processed");
        if let Ok(door) = ingester.camera("door").await
            && door.stats.counts().frames_processed + door.stats.counts().frames_dropped == 40
        {
            break door;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The person is still in view: their track is open (a blip of the background model while it
    // learns the scene may have ended already).
    let before = door.stats.counts().tracklets;
    ingester.shutdown().await;
    let after = door.stats.counts().tracklets;
    assert_eq!(after, before + 1, "shutdown ended the open track");
    let exported = std::fs::read_dir(export.path().join("door")).map_or(0, |d| d.count());
    assert_eq!(exported as u64, after, "every tracklet, the flushed one too, is written");
    drop(tx);
    let _ = push.await;
}

/// A JPEG of `w x h` flat grey.
fn grey_jpeg(w: i32, h: i32) -> Vec<u8> {
    let m = Mat::new_rows_cols_with_default(h, w, opencv::core::CV_8UC3, Scalar::all(120.0)).unwrap();
    let mut buf = Vector::<u8>::new();
    imgcodecs::imencode(".jpg", &m, &mut buf, &Vector::new()).unwrap();
    buf.to_vec()
}

/// The same JPEG with a header that declares 30000x30000.
fn bomb_jpeg() -> Vec<u8> {
    let mut bomb = grey_jpeg(16, 16);
    let sof = bomb.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bomb[sof + 5..sof + 9].copy_from_slice(&[0x75, 0x30, 0x75, 0x30]);
    bomb
}

fn detection(crop: Vec<u8>) -> pb::Detection {
    pb::Detection {
        r#box: Some(pb::BoundingBox { x: 10.0, y: 10.0, width: 40.0, height: 90.0 }),
        score: 0.9,
        crop: Some(pb::Image { data: Some(pb::image::Data::Encoded(crop)) }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cameras_and_pushed_detections_are_bounded_and_bombs_never_decoded() {
    let config = IngesterConfig {
        max_cameras: 2,
        max_detections_per_message: 4,
        max_frame_pixels: 1 << 20,
        ..IngesterConfig::default()
    };
    let Running { mut client, .. } = start(config).await;
    client.add_camera(camera("door", "push", "background")).await.unwrap();
    client.add_camera(camera("hall", "push", "background")).await.unwrap();
    let e = client.add_camera(camera("yard", "push", "background")).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("max_cameras"), "{}", e.message());

    let push = |detections: Vec<pb::Detection>| {
        tokio_stream::iter(vec![pb::PushDetectionsRequest {
            camera_id: "door".into(),
            detections,
            ..Default::default()
        }])
    };
    // Too many in one message.
    let e = client.push_detections(push((0..5).map(|_| detection(grey_jpeg(20, 40))).collect())).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("5 detections"), "{}", e.message());
    // Three crops of 700x700 declare 1.47 MP together, over the 1 MP frame limit: refused whole.
    let e = client.push_detections(push((0..3).map(|_| detection(grey_jpeg(700, 700))).collect())).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("declare"), "{}", e.message());
    // Bombs are refused one by one, from their headers, in no time; the good crop is kept.
    let started = Instant::now();
    let reply = client
        .push_detections(push(vec![detection(bomb_jpeg()), detection(bomb_jpeg()), detection(grey_jpeg(20, 40))]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((reply.detections_received, reply.detections_rejected), (3, 2));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    // A view that would enlarge the frame beyond the source's pixels is refused when it is set.
    let mut big = camera("zoom", "push", "background");
    big.camera.as_mut().unwrap().view = Some(pb::CameraView { scale: 8.0, ..Default::default() });
    client.remove_camera(pb::RemoveCameraRequest { camera_id: "hall".into() }).await.unwrap();
    let e = client.add_camera(big).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("view.scale"), "{}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_camera_answers_while_queued_frames_are_still_being_processed() {
    let config = IngesterConfig {
        sources: reid_ingester::SourcePolicy {
            file_roots: vec!["/usr/share/doc/opencv-doc/examples/data".into()],
            ..Default::default()
        },
        frame_queue: 64,
        ..IngesterConfig::default()
    };
    let Running { mut client, .. } = start(config).await;
    // HOG on full 768x576 frames: a queue of 64 takes many seconds to work through.
    client.add_camera(camera("plaza", "/usr/share/doc/opencv-doc/examples/data/vtest.avi", "hog")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    client.remove_camera(pb::RemoveCameraRequest { camera_id: "plaza".into() }).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "RemoveCamera took {:?}", started.elapsed());
    assert!(client.list_cameras(pb::ListCamerasRequest {}).await.unwrap().into_inner().cameras.is_empty());
}
