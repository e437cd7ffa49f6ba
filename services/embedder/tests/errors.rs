//! Bad input gets a clear status naming what was wrong, never a panic, and the service keeps
//! serving afterwards.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use reid_embedder::EmbedderConfig;
use reid_proto::v1 as pb;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn is_serving(health: &mut HealthClient<tonic::transport::Channel>) -> bool {
    let status = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner().status;
    status == ServingStatus::Serving as i32
}

async fn status_of(
    client: &mut reid_proto::v1::embedder_service_client::EmbedderServiceClient<tonic::transport::Channel>,
    images: Vec<pb::Image>,
) -> tonic::Status {
    client.embed(request(images)).await.expect_err("must be refused")
}

#[tokio::test]
async fn bad_images_get_the_right_status_naming_the_image() {
    let config =
        EmbedderConfig { max_images_per_request: 8, max_image_bytes: 100_000, ..config("mobilenetv2-imagenet") };
    let server = start(config).await;
    let mut client = server.client();

    // A JPEG cut short after its header.
    let mut corrupt = match jpeg(1).data {
        Some(pb::image::Data::Encoded(b)) => b,
        _ => unreachable!(),
    };
    corrupt.truncate(40);
    let s = status_of(&mut client, vec![jpeg(0), encoded(corrupt)]).await;
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().starts_with("image 1:"), "{}", s.message());

    let s = status_of(&mut client, vec![encoded(b"definitely not an image".to_vec())]).await;
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("image 0"), "{}", s.message());

    let s = status_of(&mut client, vec![raw(0, 10, pb::PixelFormat::Rgb8, vec![])]).await;
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("empty"), "{}", s.message());

    let s = status_of(&mut client, vec![jpeg(0), jpeg(1), raw(4, 4, pb::PixelFormat::Rgb8, vec![0; 47])]).await;
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("image 2") && s.message().contains("needs 48 bytes, got 47"), "{}", s.message());

    let s = status_of(&mut client, vec![raw(4, 4, pb::PixelFormat::Unspecified, vec![0; 48])]).await;
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("pixel format"), "{}", s.message());

    let s = status_of(&mut client, vec![pb::Image { data: None }]).await;
    assert_eq!(s.code(), Code::InvalidArgument);

    let s = status_of(&mut client, vec![]).await;
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("no images"));

    let s = status_of(&mut client, (0..9).map(jpeg).collect()).await;
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("9 images, the limit is 8"), "{}", s.message());

    let s = status_of(&mut client, vec![raw(200, 200, pb::PixelFormat::Rgb8, vec![0; 120_000])]).await;
    assert_eq!(s.code(), Code::InvalidArgument, "too large is the request's fault: not to be retried");
    assert!(s.message().contains("image 0 is too large"), "{}", s.message());

    // Still serving.
    let ok = client.embed(request(vec![jpeg(3)])).await.unwrap().into_inner();
    assert_eq!(ok.embeddings.len(), 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn images_beyond_the_pixel_limit_are_refused() {
    let config = EmbedderConfig { max_image_pixels: 1000, ..config("mobilenetv2-imagenet") };
    let server = start(config).await;
    let s = status_of(&mut server.client(), vec![jpeg(1)]).await; // 64x128 = 8192 pixels
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("exceeds the limit of 1000 pixels"), "{}", s.message());
    server.stop().await.unwrap();
}

/// A JPEG of a few hundred bytes whose header declares 30000x30000 (2.7 GB once decoded).
fn bomb() -> Vec<u8> {
    let Some(pb::image::Data::Encoded(small)) = jpeg(1).data else { unreachable!("jpeg() encodes") };
    let sof = small.windows(2).position(|w| w == [0xFF, 0xC0]).expect("a baseline JPEG");
    let mut bomb = small;
    bomb[sof + 5..sof + 9].copy_from_slice(&[0x75, 0x30, 0x75, 0x30]);
    bomb
}

#[tokio::test]
async fn decompression_bombs_are_refused_from_their_header_without_decoding() {
    let server = start(config("mobilenetv2-imagenet")).await;
    let mut client = server.client();
    let started = std::time::Instant::now();
    // Eight at once: none is decoded, so this takes no memory and no time.
    let image = pb::Image { data: Some(pb::image::Data::Encoded(bomb())) };
    let s = status_of(&mut client, vec![image; 8]).await;
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("30000x30000"), "{}", s.message());
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "took {:?}", started.elapsed());
    let ok = client.embed(request(vec![jpeg(3)])).await.unwrap().into_inner();
    assert_eq!(ok.embeddings.len(), 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn messages_over_the_size_limit_are_refused_by_the_transport() {
    let config =
        EmbedderConfig { max_message_bytes: 200_000, max_image_bytes: 100_000, ..config("mobilenetv2-imagenet") };
    let server = start(config).await;
    let s = status_of(
        &mut server.client(),
        (0..4).map(|_| raw(200, 100, pb::PixelFormat::Rgb8, vec![0; 60_000])).collect(),
    )
    .await;
    // tonic answers OUT_OF_RANGE for a message over the decoding limit.
    assert_eq!(s.code(), Code::OutOfRange, "{s:?}");
    assert!(s.message().contains("message length too large"), "{}", s.message());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_model_names_and_broken_models_change_nothing() {
    let dir = ModelDir::new("broken");
    dir.add("good", "mobilenetv2-imagenet", "v1");
    std::fs::create_dir_all(dir.path.join("broken")).unwrap();
    std::fs::write(dir.path.join("broken/model.json"), "{ not json").unwrap();
    let config = EmbedderConfig { model_dir: dir.path.clone(), model: "good".into(), ..config("") };
    let server = start(config).await;
    let mut client = server.client();

    for (name, code) in [
        ("../models", Code::InvalidArgument),
        ("", Code::InvalidArgument),
        ("a/b", Code::InvalidArgument),
        ("absent", Code::NotFound),
        ("broken", Code::FailedPrecondition),
    ] {
        let s = client.load_model(pb::LoadModelRequest { name: name.into() }).await.expect_err(name);
        assert_eq!(s.code(), code, "{name}: {}", s.message());
    }
    let info = client.get_model(pb::GetModelRequest {}).await.unwrap().into_inner().model.unwrap();
    assert_eq!(info.r#ref.unwrap().version, "v1");
    assert_eq!(client.embed(request(vec![jpeg(1)])).await.unwrap().into_inner().model.unwrap().version, "v1");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn without_a_model_it_says_so_and_picks_one_up_when_it_arrives() {
    let dir = ModelDir::new("late");
    let server = start(watched_config(&dir, "person")).await;
    let mut client = server.client();
    let mut health = HealthClient::new(server.channel.clone());

    let s = status_of(&mut client, vec![jpeg(1)]).await;
    assert_eq!(s.code(), Code::FailedPrecondition);
    assert!(s.message().contains("no model"), "{}", s.message());
    assert_eq!(client.get_model(pb::GetModelRequest {}).await.unwrap_err().code(), Code::FailedPrecondition);
    assert!(!is_serving(&mut health).await);

    dir.add("person", "mobilenetv2-imagenet", "late-v1");
    let serving = || {
        let mut health = health.clone();
        async move { is_serving(&mut health).await }
    };
    assert!(eventually(serving).await, "the watcher should load the model once its card appears");
    let r = client.embed(request(vec![jpeg(1)])).await.unwrap().into_inner();
    assert_eq!(r.model.unwrap().version, "late-v1");
    server.stop().await.unwrap();
}
