//! The real `reid` binary: `reid serve embedder` answers health, `reid health` and `reid embed`
//! work against it, and SIGTERM finishes the request in flight before a clean exit.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reid_proto::v1 as pb;
use reid_proto::v1::embedder_service_client::EmbedderServiceClient;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Starts `reid serve embedder` on a free port; returns the child and its address, read from
/// its log.
fn spawn_embedder() -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_reid"))
        .args(["serve", "embedder", "--listen", "127.0.0.1:0", "--model-dir"])
        .arg(repo().join("models"))
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn reid");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[reid] {line}");
            if let Some(addr) = line.split("addr=").nth(1).filter(|_| line.contains("serving grpc")) {
                let _ = tx.send(addr.split_whitespace().next().unwrap_or_default().to_owned());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).expect("the embedder logs its address");
    (child, addr)
}

fn reid(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_reid")).args(args).output().expect("run reid")
}

fn jpeg(seed: u32) -> Vec<u8> {
    let rgb: Vec<u8> = (0..128u32 * 256 * 3).map(|i| ((i * (seed + 7)) % 251) as u8).collect();
    reid_model::preprocess::encode_jpeg(128, 256, &rgb).expect("jpeg")
}

#[tokio::test]
async fn health_embed_and_graceful_sigterm() {
    let (mut child, addr) = spawn_embedder();

    let health = reid(&["health", "--addr", &addr]);
    assert!(health.status.success(), "{health:?}");
    assert_eq!(String::from_utf8_lossy(&health.stdout).trim(), "SERVING");
    let unknown = reid(&["health", "--addr", &addr, "--service", "reid.v1.NoSuchService"]);
    assert!(!unknown.status.success(), "an unknown service is not SERVING");

    let image = std::env::temp_dir().join(format!("reid-cli-{}.jpg", std::process::id()));
    std::fs::write(&image, jpeg(1)).unwrap();
    let embed = reid(&["embed", "--addr", &addr, image.to_str().unwrap()]);
    assert!(embed.status.success(), "{embed:?}");
    let line: serde_json::Value = serde_json::from_slice(&embed.stdout).expect("one JSON object");
    assert_eq!(line["dimension"], 1280);
    assert_eq!(line["vector"].as_array().unwrap().len(), 1280);
    assert_eq!(line["path"], image.to_str().unwrap());
    std::fs::remove_file(&image).unwrap();

    // A request big enough to still be running when SIGTERM arrives.
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut client = EmbedderServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let images: Vec<pb::Image> = (0..96).map(|i| pb::Image { data: Some(pb::image::Data::Encoded(jpeg(i))) }).collect();
    let in_flight =
        tokio::spawn(async move { client.embed(pb::EmbedRequest { images, request_id: "last".into() }).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!in_flight.is_finished(), "the request should still be running");
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());

    let response = in_flight.await.unwrap().expect("the in-flight request completes").into_inner();
    assert_eq!(response.embeddings.len(), 96);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status:?}");
    let after = reid(&["health", "--addr", &addr]);
    assert!(!after.status.success(), "nothing serves after shutdown");
}

/// Every configuration field is reachable from `--set` and `REID_<SERVICE>__...` variables, with
/// the file's spelling: what they set reaches the service's own validation, and a misspelt key is
/// refused before anything starts.
#[test]
fn any_config_field_can_be_set_from_flags_and_the_environment() {
    let data = tempfile::tempdir().unwrap();
    let run = |sets: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["serve", "identity", "--listen", "127.0.0.1:0", "--data", data.path().to_str().unwrap()];
        for s in sets {
            args.extend(["--set", s]);
        }
        let out = Command::new(env!("CARGO_BIN_EXE_reid")).args(&args).envs(env.iter().copied()).output().unwrap();
        assert!(!out.status.success(), "{args:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&["association.threshhold=0.5"], &[]);
    assert!(err.contains("threshhold"), "{err}");
    let err = run(&[], &[("REID_IDENTITY__ASSOCIATION__MERGE_THRESHOLD", "2")]);
    assert!(err.contains("association.merge_threshold: 2 is not a cosine similarity"), "{err}");
    // A named flag wins over both.
    let err = run(&["association.threshold=0.5"], &[("REID_IDENTITY_THRESHOLD", "3")]);
    assert!(err.contains("association.threshold: 3 is not a cosine similarity"), "{err}");
}
