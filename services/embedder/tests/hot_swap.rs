//! Models change under load without failing a request, and every response names the one model
//! version that produced all of its vectors.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use reid_embedder::EmbedderConfig;
use reid_proto::v1 as pb;

#[tokio::test]
async fn requests_in_flight_during_swaps_all_succeed_each_with_one_version() {
    // Two models with different input sizes and dimensions, so that a response mixing them, or
    // pre-processed for the wrong one, cannot go unnoticed.
    let dir = ModelDir::new("swap");
    dir.add("person", "mobilenetv2-imagenet", "person-v1");
    dir.add("face", "facenet", "face-v1");
    let config = EmbedderConfig { model_dir: dir.path.clone(), model: "person".into(), ..config("") };
    let server = start(config).await;
    let dims: BTreeMap<&str, usize> = [("person-v1", 1280), ("face-v1", 512)].into();

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..6u32 {
        let mut client = server.client();
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let images = vec![jpeg(c * 100 + i), jpeg(c * 100 + i + 1)];
                let r = client
                    .embed(request(images))
                    .await
                    .map_err(|s| format!("request failed during swap: {s:?}"))?
                    .into_inner();
                let model = r.model.ok_or("no model in response")?;
                seen.push((
                    model.version,
                    model.dimension,
                    r.embeddings.iter().map(|e| e.values.len()).collect::<Vec<_>>(),
                ));
                i += 2;
            }
            Ok::<_, String>(seen)
        }));
    }
    let mut admin = server.client();
    for name in ["face", "person", "face", "person"] {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let loaded = admin.load_model(pb::LoadModelRequest { name: name.into() }).await.unwrap().into_inner();
        assert_eq!(
            loaded.model.unwrap().r#ref.unwrap().id,
            if name == "face" { "facenet" } else { "mobilenetv2-imagenet" }
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);

    let mut versions = BTreeMap::new();
    for client in clients {
        for (version, dimension, lens) in client.await.unwrap().unwrap() {
            let expected = dims[version.as_str()];
            assert_eq!(dimension as usize, expected, "{version}");
            assert!(lens.iter().all(|l| *l == expected), "{version}: vectors of {lens:?}");
            *versions.entry(version).or_insert(0) += 1;
        }
    }
    println!("responses per version: {versions:?}");
    assert_eq!(versions.len(), 2, "both models served during the run: {versions:?}");
    let swaps = server.embedder.clone().unwrap().metrics().model_swaps.get();
    assert_eq!(swaps, 5, "start-up load plus four swaps");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_new_version_written_to_the_model_folder_is_picked_up() {
    let dir = ModelDir::new("watch");
    dir.add("person", "mobilenetv2-imagenet", "v1");
    let server = start(watched_config(&dir, "person")).await;
    let client = server.client();
    let version = || {
        let mut client = client.clone();
        async move { client.embed(request(vec![jpeg(1)])).await.unwrap().into_inner().model.unwrap().version }
    };
    assert_eq!(version().await, "v1");
    dir.add("person", "mobilenetv2-imagenet", "v2");
    assert!(eventually(|| async { version().await == "v2" }).await, "v2 was not picked up");
    server.stop().await.unwrap();
}
