//! Client-side load balancing, in-process over real gRPC: the identity service given two embedders
//! spreads its Embed calls over both and keeps working when one goes away; a `dns:///` address
//! finds the embedder behind a name.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reid_proto::v1 as pb;
use reid_proto::v1::identity_service_client::IdentityServiceClient;
use tokio::net::TcpListener;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Embedder {
    addr: String,
    port: u16,
    embedder: Arc<reid_embedder::embedder::Embedder>,
    stop: tokio::sync::oneshot::Sender<()>,
}

async fn embedder() -> Embedder {
    let config = reid_embedder::EmbedderConfig {
        model_dir: repo().join("models"),
        watch_interval: Duration::ZERO,
        ..Default::default()
    };
    let server = reid_server::GrpcServer::new(vec![reid_embedder::SERVICE_NAME]);
    let embedder = reid_embedder::embedder::Embedder::start(config, server.health()).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(reid_embedder::serve(embedder.clone(), server, listener, async {
        let _ = stopped.await;
    }));
    Embedder { addr: format!("http://127.0.0.1:{port}"), port, embedder, stop }
}

async fn identity(embedder_url: String, data: &Path) -> IdentityServiceClient<tonic::transport::Channel> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let config = reid_identity::IdentityConfig {
        data_dir: data.to_path_buf(),
        embedder_url: Some(embedder_url),
        ..Default::default()
    };
    tokio::spawn(reid_identity::run(config, listener, std::future::pending()));
    for _ in 0..100 {
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(addr.clone()).unwrap().connect().await {
            return IdentityServiceClient::new(channel);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the identity service did not start");
}

fn probe() -> pb::IdentifyRequest {
    let jpeg = reid_model::preprocess::encode_jpeg(64, 128, &[160u8, 90, 40].repeat(64 * 128)).unwrap();
    let image = pb::Image { data: Some(pb::image::Data::Encoded(jpeg)) };
    pb::IdentifyRequest {
        probes: vec![pb::Probe { query: Some(pb::probe::Query::Image(image)) }],
        ..Default::default()
    }
}

fn images(e: &Embedder) -> u64 {
    e.embedder.metrics().images.get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_spread_over_the_embedders_listed_and_survive_losing_one() {
    let data = tempfile::tempdir().unwrap();
    let (a, b) = (embedder().await, embedder().await);
    let mut client = identity(format!("{},{}", a.addr, b.addr), data.path()).await;
    for _ in 0..40 {
        client.identify(probe()).await.unwrap();
    }
    let (on_a, on_b) = (images(&a), images(&b));
    assert_eq!(on_a + on_b, 40, "every probe embedded once");
    assert!(on_a >= 5 && on_b >= 5, "calls not spread: {on_a} on a, {on_b} on b");

    // One embedder goes away: the calls go to the other.
    let _ = a.stop.send(());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ok = 0;
    for _ in 0..20 {
        ok += u32::from(client.identify(probe()).await.is_ok());
    }
    assert!(ok >= 19, "only {ok} of 20 calls passed with one embedder left");
    assert!(images(&b) >= on_b + 19);
    let _ = b.stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_name_finds_the_embedders_behind_it() {
    let data = tempfile::tempdir().unwrap();
    let e = embedder().await;
    // localhost may also resolve to ::1, where nothing listens: that endpoint is never ready and
    // the calls go to 127.0.0.1.
    let mut client = identity(format!("dns:///localhost:{}", e.port), data.path()).await;
    for _ in 0..5 {
        client.identify(probe()).await.unwrap();
    }
    assert_eq!(images(&e), 5);
    let _ = e.stop.send(());
}
