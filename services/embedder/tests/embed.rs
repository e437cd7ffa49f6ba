//! The embedder over real gRPC: embeddings, batching, model info and metrics.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use reid_proto::v1 as pb;
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn serves_health_and_unit_length_embeddings_of_the_advertised_dimension() {
    let server = start(config("mobilenetv2-imagenet")).await;
    let mut health = HealthClient::new(server.channel.clone());
    for service in ["", reid_embedder::SERVICE_NAME] {
        let status = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }

    let mut client = server.client();
    let info = client.get_model(pb::GetModelRequest {}).await.unwrap().into_inner().model.unwrap();
    let model = info.r#ref.clone().unwrap();
    assert_eq!((model.id.as_str(), model.dimension), ("mobilenetv2-imagenet", 1280));
    assert_eq!((info.input_width, info.input_height, info.device.as_str()), (128, 256, "cpu"));

    let response = client.embed(request(vec![jpeg(1), jpeg(2), jpeg(3)])).await.unwrap().into_inner();
    assert_eq!(response.model, Some(model));
    assert_eq!(response.embeddings.len(), 3);
    for e in &response.embeddings {
        assert_eq!(e.values.len(), 1280);
        let norm: f32 = e.values.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    assert!(max_abs_diff(&response.embeddings[0].values, &response.embeddings[1].values) > 1e-3);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_image_alone_and_inside_a_batch_of_32_embeds_the_same() {
    let server = start(config("mobilenetv2-imagenet")).await;
    let mut client = server.client();
    let batch: Vec<pb::Image> = (0..32).map(jpeg).collect();
    let together = client.embed(request(batch.clone())).await.unwrap().into_inner().embeddings;

    // The same images as 32 concurrent single-image requests: the batcher coalesces them.
    let singles = futures_join(batch.iter().map(|image| {
        let mut client = server.client();
        let image = image.clone();
        async move { client.embed(request(vec![image])).await.unwrap().into_inner().embeddings.remove(0) }
    }))
    .await;
    for (i, (a, b)) in together.iter().zip(&singles).enumerate() {
        let diff = max_abs_diff(&a.values, &b.values);
        assert!(diff < 1e-5, "image {i}: batch of 32 vs alone differ by {diff}");
    }
    let alone = client.embed(request(vec![batch[5].clone()])).await.unwrap().into_inner().embeddings.remove(0);
    assert!(max_abs_diff(&alone.values, &together[5].values) < 1e-5);

    // Concurrent requests were coalesced into batches bigger than one image.
    let embedder = server.embedder.clone().unwrap();
    let sizes = &embedder.metrics().batch_size;
    let (batches, images) = (sizes.get_sample_count(), sizes.get_sample_sum() as u64);
    assert_eq!(images, 32 + 32 + 1);
    assert!(batches < 1 + 32 + 1, "32 concurrent requests ran as {} batches", batches - 2);
    server.stop().await.unwrap();
}

async fn futures_join<F: std::future::Future + Send + 'static>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn the_stream_answers_each_request_in_order() {
    let server = start(config("mobilenetv2-imagenet")).await;
    let mut client = server.client();
    let requests: Vec<pb::EmbedRequest> =
        (0..3).map(|i| pb::EmbedRequest { images: (0..=i).map(jpeg).collect(), request_id: format!("r{i}") }).collect();
    let mut responses = client.embed_stream(tokio_stream::iter(requests)).await.unwrap().into_inner();
    for i in 0..3 {
        let r = responses.next().await.unwrap().unwrap();
        assert_eq!(r.request_id, format!("r{i}"));
        assert_eq!(r.embeddings.len(), i + 1);
    }
    assert!(responses.next().await.is_none());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_count_requests_by_status_and_batches() {
    let server = start(config("mobilenetv2-imagenet")).await;
    let mut client = server.client();
    client.embed(request(vec![jpeg(1), jpeg(2)])).await.unwrap();
    client.embed(request(vec![encoded(vec![1, 2, 3])])).await.unwrap_err();
    let text = reid_server::metrics::render(&server.embedder.clone().unwrap().metrics().registry);
    assert!(text.contains("reid_embedder_requests_total{code=\"ok\"} 1"), "{text}");
    assert!(text.contains("reid_embedder_requests_total{code=\"invalid_argument\"} 1"), "{text}");
    assert!(text.contains("reid_embedder_images_total 2"), "{text}");
    assert!(text.contains("reid_embedder_batch_size_count 1"), "{text}");
    assert!(text.contains("reid_embedder_inference_seconds_bucket"), "{text}");
    assert!(text.contains("reid_embedder_queue_wait_seconds_bucket"), "{text}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_metrics_endpoint_serves_prometheus_text() {
    // Find a free port for the metrics listener.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut config = config("mobilenetv2-imagenet");
    config.metrics_listen = Some(format!("127.0.0.1:{port}"));
    let server = start(config).await;
    server.client().embed(request(vec![jpeg(1)])).await.unwrap();
    let body = http_get(port, "/metrics").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("reid_embedder_requests_total{code=\"ok\"} 1"), "{body}");
    server.stop().await.unwrap();
}

async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body
}

#[tokio::test]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = start(config("mobilenetv2-imagenet")).await;
    let mut client = ServerReflectionClient::new(server.channel.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client.server_reflection_info(tokio_stream::iter([req])).await.unwrap().into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else { panic!("{response:?}") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["reid.v1.EmbedderService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    assert!(!names.iter().any(|n| n == "reid.v1.IdentityService"), "only served services are listed: {names:?}");
    server.stop().await.unwrap();
}
