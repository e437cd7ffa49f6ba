//! The trainer over real gRPC on 127.0.0.1:0: start, watch, list, cancel, resume, publish.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use reid_proto::v1 as pb;
use reid_proto::v1::trainer_service_client::TrainerServiceClient;
use reid_trainer::TrainerConfig;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

const TINY: &str = r#"
name = "tiny"
[dataset]
kind = "fashion_mnist"
train_per_class = 100
eval_per_class = 30
[sampler]
p = 5
k = 4
[training]
epochs = 2
verification_items = 100
"#;

struct Trainer {
    client: TrainerServiceClient<Channel>,
    root: PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    metrics_port: u16,
}

async fn start(tag: &str) -> Trainer {
    let root = std::env::temp_dir().join(format!("reid-trainer-svc-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = TrainerConfig {
        runs_dir: root.join("runs"),
        model_dir: root.join("models"),
        metrics_listen: Some(format!("127.0.0.1:{metrics_port}")),
        data_roots: vec![PathBuf::from("/usr/share/datasets"), root.join("data")],
        embedders: vec!["127.0.0.1:1".into()],
        notify_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(reid_trainer::run(config, listener, async {
        let _ = stopped.await;
    }));
    let client =
        TrainerServiceClient::new(Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap());
    Trainer { client, root, stop, metrics_port }
}

async fn metrics(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body
}

async fn start_run(
    client: &mut TrainerServiceClient<Channel>,
    config: &str,
    resume: &str,
) -> Result<String, tonic::Status> {
    let config = pb::RunConfig { config: config.into(), resume_run_id: resume.into() };
    Ok(client.start_run(pb::StartRunRequest { config: Some(config) }).await?.into_inner().run_id)
}

async fn watch(client: &mut TrainerServiceClient<Channel>, run_id: &str) -> Vec<pb::RunEvent> {
    let mut stream = client.watch_run(pb::WatchRunRequest { run_id: run_id.into() }).await.unwrap().into_inner();
    let mut events = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(300), stream.next()).await.unwrap() {
        events.push(e.unwrap());
    }
    events
}

fn state(e: &pb::RunEvent) -> pb::RunState {
    pb::RunState::try_from(e.state).unwrap()
}

#[tokio::test]
async fn a_run_is_started_watched_listed_and_published() {
    let mut t = start("run").await;
    let run_id = start_run(&mut t.client, TINY, "").await.unwrap();
    let events = watch(&mut t.client, &run_id).await;
    assert_eq!(state(events.last().unwrap()), pb::RunState::Succeeded);
    let evals: Vec<&pb::EvalMetrics> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(pb::run_event::Event::Eval(m)) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(evals.iter().map(|m| m.epoch).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert!(events.iter().any(|e| matches!(e.event, Some(pb::run_event::Event::Progress(_)))));

    // A late watcher gets the whole history replayed.
    assert_eq!(watch(&mut t.client, &run_id).await.len(), events.len());

    let runs = t.client.list_runs(pb::ListRunsRequest {}).await.unwrap().into_inner().runs;
    let summary = runs.iter().find(|r| r.run_id == run_id).unwrap();
    assert_eq!((summary.state, summary.epochs_done), (pb::RunState::Succeeded as i32, 2));
    assert!(summary.best.is_some());

    let published = t
        .client
        .publish_model(pb::PublishModelRequest {
            run_id: run_id.clone(),
            name: "fmnist".into(),
            embedder_addrs: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let model = reid_model::load_model(&t.root.join("models/fmnist"), Default::default()).unwrap();
    assert_eq!(model.card().version, published.version);
    assert_eq!(model.card().id, "tiny");
    assert!(t.root.join("models/fmnist/training/history.csv").is_file(), "the training record goes with the model");

    let body = metrics(t.metrics_port).await;
    for line in [
        "reid_trainer_runs_ended_total{state=\"succeeded\"} 1",
        "reid_trainer_epochs_total 2",
        "reid_trainer_runs_active 0",
        "reid_trainer_models_published_total 1",
    ] {
        assert!(body.contains(line), "{line} missing from\n{body}");
    }

    for (name, code) in [("../escape", Code::InvalidArgument), ("", Code::InvalidArgument)] {
        let s = t
            .client
            .publish_model(pb::PublishModelRequest {
                run_id: run_id.clone(),
                name: name.into(),
                embedder_addrs: vec![],
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), code, "{name:?}: {}", s.message());
    }
    // A configured embedder that cannot be reached: the model is published all the same, and the
    // reply says who was not told.
    let partial = t
        .client
        .publish_model(pb::PublishModelRequest {
            run_id: run_id.clone(),
            name: "x".into(),
            embedder_addrs: vec!["127.0.0.1:1".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(partial.notified.is_empty());
    assert_eq!(partial.failed.len(), 1);
    assert_eq!(partial.failed[0].embedder_addr, "127.0.0.1:1");
    assert!(t.root.join("models/x/model.json").is_file(), "published although the embedder was down");
    // An address that is not configured is never called (it would receive the deployment's key).
    let s = t
        .client
        .publish_model(pb::PublishModelRequest {
            run_id: run_id.clone(),
            name: "y".into(),
            embedder_addrs: vec!["attacker.example:50051".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{}", s.message());
    assert!(!t.root.join("models/y").exists(), "refused before anything was written");
    let _ = t.stop.send(());
    std::fs::remove_dir_all(&t.root).unwrap();
}

#[tokio::test]
async fn a_cancelled_run_resumes_from_its_checkpoint() {
    let mut t = start("cancel").await;
    let config = TINY.replace("epochs = 2", "epochs = 3");
    let run_id = start_run(&mut t.client, &config, "").await.unwrap();
    let mut stream = t.client.watch_run(pb::WatchRunRequest { run_id: run_id.clone() }).await.unwrap().into_inner();
    // Cancel once epoch 1 is evaluated.
    let mut cancelled = false;
    while let Some(e) = stream.next().await {
        let e = e.unwrap();
        if !cancelled && matches!(&e.event, Some(pb::run_event::Event::Eval(m)) if m.epoch == 1) {
            t.client.cancel_run(pb::CancelRunRequest { run_id: run_id.clone() }).await.unwrap();
            cancelled = true;
        }
        if state(&e) == pb::RunState::Cancelled {
            break;
        }
    }
    assert!(cancelled);

    let resumed = start_run(&mut t.client, "", &run_id).await.unwrap();
    assert_eq!(resumed, run_id);
    let events = watch(&mut t.client, &run_id).await;
    assert_eq!(state(events.last().unwrap()), pb::RunState::Succeeded);
    let first_progress = events.iter().find_map(|e| match &e.event {
        Some(pb::run_event::Event::Progress(p)) => Some(p.epoch),
        _ => None,
    });
    assert!(first_progress.unwrap() >= 2, "resumed after the checkpoint, not from scratch");
    let _ = t.stop.send(());
    std::fs::remove_dir_all(&t.root).unwrap();
}

#[tokio::test]
async fn bad_requests_get_clear_statuses() {
    let mut t = start("bad").await;
    let s = start_run(&mut t.client, "[dataset]\nkind = \"fashion_mnist\"\n[training]\nepochs = 0\n", "")
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("epochs"), "{}", s.message());
    let s = start_run(&mut t.client, "", "no-such-run").await.unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    let s = t.client.watch_run(pb::WatchRunRequest { run_id: "nope".into() }).await.unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    let s = t.client.cancel_run(pb::CancelRunRequest { run_id: "nope".into() }).await.unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    let s = t.client.start_run(pb::StartRunRequest { config: None }).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);

    // Paths outside the data roots, and run names that would leave the runs folder, are refused
    // before anything is read or created.
    for (config, needle) in [
        ("[dataset]\nkind = \"folders\"\npath = \"/nonexistent/people\"\n", "outside"),
        ("[dataset]\nkind = \"folders\"\npath = \"/root\"\n", "outside"),
        ("[dataset]\nkind = \"fashion_mnist\"\npath = \"/usr/share/datasets/../../../etc\"\n", "outside"),
        (
            "[dataset]\nkind = \"idx\"\ntrain_images = \"/dev/zero\"\ntrain_labels = \"/dev/zero\"\neval_images = \"/dev/zero\"\neval_labels = \"/dev/zero\"\n",
            "outside",
        ),
        ("name = \"../../escape\"\n[dataset]\nkind = \"fashion_mnist\"\n", "name"),
        ("name = \"/tmp/abs\"\n[dataset]\nkind = \"fashion_mnist\"\n", "name"),
    ] {
        let s = start_run(&mut t.client, config, "").await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{config}: {}", s.message());
        assert!(s.message().contains(needle), "{config}: {}", s.message());
    }
    assert!(!t.root.join("escape").exists() && !std::path::Path::new("/tmp/abs").exists());

    // A run whose dataset is missing (below a root) fails, and says why.
    let missing = t.root.join("data/people");
    let config = format!("[dataset]\nkind = \"folders\"\npath = \"{}\"\n", missing.display());
    let run_id = start_run(&mut t.client, &config, "").await.unwrap();
    let events = watch(&mut t.client, &run_id).await;
    let last = events.last().unwrap();
    assert_eq!(state(last), pb::RunState::Failed);
    assert!(matches!(&last.event, Some(pb::run_event::Event::Message(m)) if m.contains("data/people")));
    let s = t
        .client
        .publish_model(pb::PublishModelRequest { run_id, name: "m".into(), embedder_addrs: vec![] })
        .await
        .unwrap_err();
    assert!(matches!(s.code(), Code::FailedPrecondition | Code::NotFound), "{s:?}");
    let _ = t.stop.send(());
    let _ = std::fs::remove_dir_all(&t.root);
}
