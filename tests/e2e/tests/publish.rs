//! A trained model goes from the trainer to a running embedder: `PublishModel` writes it into
//! the embedder's model directory and calls `LoadModel`, and the embedder then serves it.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use reid_proto::v1 as pb;
use reid_proto::v1::embedder_service_client::EmbedderServiceClient;
use reid_proto::v1::trainer_service_client::TrainerServiceClient;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

async fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_model_is_served_by_the_embedder() {
    let root = std::env::temp_dir().join(format!("reid-e2e-publish-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let models = root.join("models");
    std::fs::create_dir_all(&models).unwrap();

    // An embedder with nothing to serve yet.
    let embedder_config = reid_embedder::EmbedderConfig {
        model_dir: models.clone(),
        model: "fmnist".into(),
        watch_interval: Duration::ZERO,
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let embedder_addr = listener.local_addr().unwrap();
    tokio::spawn(reid_embedder::run(embedder_config, listener, std::future::pending()));
    let mut embedder = EmbedderServiceClient::new(channel(embedder_addr).await);
    assert_eq!(embedder.get_model(pb::GetModelRequest {}).await.unwrap_err().code(), tonic::Code::FailedPrecondition);

    let trainer_config = reid_trainer::TrainerConfig {
        runs_dir: root.join("runs"),
        model_dir: models.clone(),
        embedders: vec![embedder_addr.to_string()],
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trainer_addr = listener.local_addr().unwrap();
    tokio::spawn(reid_trainer::run(trainer_config, listener, std::future::pending()));
    let mut trainer = TrainerServiceClient::new(channel(trainer_addr).await);

    let config = "name = \"fmnist-e2e\"\n[dataset]\nkind = \"fashion_mnist\"\ntrain_per_class = 100\neval_per_class = 30\n\
                  [sampler]\np = 5\nk = 4\n[training]\nepochs = 1\nverification_items = 100\n";
    let run_id = trainer
        .start_run(pb::StartRunRequest {
            config: Some(pb::RunConfig { config: config.into(), resume_run_id: String::new() }),
        })
        .await
        .unwrap()
        .into_inner()
        .run_id;
    let mut events = trainer.watch_run(pb::WatchRunRequest { run_id: run_id.clone() }).await.unwrap().into_inner();
    let mut last = None;
    while let Some(e) = events.next().await {
        last = Some(e.unwrap());
    }
    assert_eq!(last.unwrap().state, pb::RunState::Succeeded as i32);

    let published = trainer
        .publish_model(pb::PublishModelRequest {
            run_id,
            name: "fmnist".into(),
            embedder_addrs: vec![embedder_addr.to_string()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(published.notified, vec![embedder_addr.to_string()]);

    let info = embedder.get_model(pb::GetModelRequest {}).await.unwrap().into_inner().model.unwrap();
    let model = info.r#ref.unwrap();
    assert_eq!(
        (model.id.as_str(), model.version.as_str(), model.dimension),
        ("fmnist-e2e", published.version.as_str(), 10)
    );
    let image = pb::Image {
        data: Some(pb::image::Data::Raw(pb::RawImage {
            width: 28,
            height: 28,
            format: pb::PixelFormat::Gray8 as i32,
            pixels: vec![90; 784],
        })),
    };
    let reply =
        embedder.embed(pb::EmbedRequest { images: vec![image], request_id: String::new() }).await.unwrap().into_inner();
    assert_eq!(reply.embeddings[0].values.len(), 10);
    assert_eq!(reply.model.unwrap().version, published.version);
    std::fs::remove_dir_all(root).unwrap();
}
