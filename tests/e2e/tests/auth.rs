//! Auth on every service, in-process over real gRPC on 127.0.0.1:0: with an API key configured,
//! calls without it or with a wrong one get UNAUTHENTICATED and change nothing; with it they pass,
//! also from one service to the next. TLS and mutual TLS with certificates made here (rcgen).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use reid_proto::v1 as pb;
use reid_proto::v1::embedder_service_client::EmbedderServiceClient;
use reid_proto::v1::identity_service_client::IdentityServiceClient;
use reid_proto::v1::ingester_service_client::IngesterServiceClient;
use reid_proto::v1::trainer_service_client::TrainerServiceClient;
use reid_server::Security;
use tokio::net::TcpListener;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;

const KEY: &str = "correct horse battery staple";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn keyed(key: &str) -> Security {
    Security { api_key: Some(key.into()), ..Security::default() }
}

async fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    (listener, addr)
}

/// A channel to `addr` that sends `key` (or nothing).
async fn channel(addr: &str, key: Option<&str>) -> reid_server::Channel {
    let security = Security { api_key: key.map(str::to_owned), ..Security::default() };
    let channel = security.endpoint(addr).unwrap().connect().await.unwrap();
    security.channel(channel)
}

async fn wait_serving(addr: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(ch) = tonic::transport::Endpoint::from_shared(addr.to_owned()).unwrap().connect().await {
            let reply =
                HealthClient::new(ch).check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await;
            if reply.is_ok_and(|r| r.into_inner().status == 1) {
                return;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "{addr} never became SERVING");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that `call` is refused without a key and with a wrong one, and passes with the key.
macro_rules! refused_then_passes {
    ($addr:expr, $client:ident, $method:ident, $request:expr) => {{
        for key in [None, Some("wrong key")] {
            let status = $client::new(channel($addr, key).await).$method($request).await.unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{} with key {key:?}", stringify!($method));
        }
        $client::new(channel($addr, Some(KEY)).await).$method($request).await.unwrap().into_inner()
    }};
}

/// A 64x128 picture of one colour, JPEG-encoded.
fn jpeg() -> Vec<u8> {
    reid_model::preprocess::encode_jpeg(64, 128, &[150u8, 120, 90].repeat(64 * 128)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_refuses_calls_without_the_right_key_and_does_nothing() {
    let data = tempfile::tempdir().unwrap();

    let (l, embedder) = listener().await;
    let config = reid_embedder::EmbedderConfig {
        model_dir: repo().join("models"),
        watch_interval: Duration::ZERO,
        security: keyed(KEY),
        ..Default::default()
    };
    tokio::spawn(reid_embedder::run(config, l, std::future::pending()));

    let (l, identity) = listener().await;
    let config = reid_identity::IdentityConfig {
        data_dir: data.path().join("identity"),
        embedder_url: Some(embedder.clone()),
        security: keyed(KEY),
        ..Default::default()
    };
    tokio::spawn(reid_identity::run(config, l, std::future::pending()));

    let (l, ingester) = listener().await;
    let config = reid_ingester::IngesterConfig {
        embedder_url: Some(embedder.clone()),
        identity_url: Some(identity.clone()),
        security: keyed(KEY),
        ..Default::default()
    };
    tokio::spawn(reid_ingester::run(config, l, std::future::pending()));

    let (l, trainer) = listener().await;
    let config = reid_trainer::TrainerConfig {
        runs_dir: data.path().join("runs"),
        model_dir: data.path().join("models"),
        security: keyed(KEY),
        ..Default::default()
    };
    tokio::spawn(reid_trainer::run(config, l, std::future::pending()));

    // Health stays open (probes cannot send metadata), so waiting needs no key.
    for addr in [&embedder, &identity, &ingester, &trainer] {
        wait_serving(addr).await;
    }

    // Embedder: a refused LoadModel does not swap the model.
    let before = refused_then_passes!(&embedder, EmbedderServiceClient, get_model, pb::GetModelRequest {});
    let served = before.model.unwrap().r#ref.unwrap().id;
    for key in [None, Some("wrong key")] {
        let status = EmbedderServiceClient::new(channel(&embedder, key).await)
            .load_model(pb::LoadModelRequest { name: "mobilenetv2-imagenet".into() })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let after = EmbedderServiceClient::new(channel(&embedder, Some(KEY)).await)
        .get_model(pb::GetModelRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.model.unwrap().r#ref.unwrap().id, served, "a refused LoadModel swapped the model");
    let embedded = refused_then_passes!(
        &embedder,
        EmbedderServiceClient,
        embed,
        pb::EmbedRequest {
            images: vec![pb::Image { data: Some(pb::image::Data::Encoded(jpeg())) }],
            request_id: String::new()
        }
    );
    assert_eq!(embedded.embeddings.len(), 1);

    // Identity: a refused Enroll stores nothing; an accepted one reaches the keyed embedder.
    let enroll = pb::EnrollRequest {
        name: "Ada".into(),
        images: vec![pb::Image { data: Some(pb::image::Data::Encoded(jpeg())) }],
        ..Default::default()
    };
    for key in [None, Some("wrong key")] {
        let status =
            IdentityServiceClient::new(channel(&identity, key).await).enroll(enroll.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let listed = refused_then_passes!(
        &identity,
        IdentityServiceClient,
        list_identities,
        pb::ListIdentitiesRequest { page_size: 100, page_token: String::new() }
    );
    assert!(listed.identities.is_empty(), "a refused Enroll stored an identity");
    let enrolled =
        IdentityServiceClient::new(channel(&identity, Some(KEY)).await).enroll(enroll).await.unwrap().into_inner();
    assert!(!enrolled.identity_id.is_empty(), "the identity service could not use the keyed embedder");

    // Ingester: a refused AddCamera adds no camera.
    let camera = pb::CameraConfig { camera_id: "lobby".into(), url: "push".into(), ..Default::default() };
    for key in [None, Some("wrong key")] {
        let status = IngesterServiceClient::new(channel(&ingester, key).await)
            .add_camera(pb::AddCameraRequest { camera: Some(camera.clone()) })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let cameras = refused_then_passes!(&ingester, IngesterServiceClient, list_cameras, pb::ListCamerasRequest {});
    assert!(cameras.cameras.is_empty(), "a refused AddCamera added a camera");

    // Trainer: a refused StartRun starts nothing.
    let start = pb::StartRunRequest {
        config: Some(pb::RunConfig { config: "name = \"x\"".into(), resume_run_id: String::new() }),
    };
    for key in [None, Some("wrong key")] {
        let status =
            TrainerServiceClient::new(channel(&trainer, key).await).start_run(start.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let runs = refused_then_passes!(&trainer, TrainerServiceClient, list_runs, pb::ListRunsRequest {});
    assert!(runs.runs.is_empty(), "a refused StartRun started a run");

    // The `x-api-key` header is accepted too (for clients that cannot set `authorization`).
    let raw = tonic::transport::Endpoint::from_shared(trainer.clone()).unwrap().connect().await.unwrap();
    let mut request = tonic::Request::new(pb::ListRunsRequest {});
    request.metadata_mut().insert("x-api-key", KEY.parse().unwrap());
    TrainerServiceClient::new(raw).list_runs(request).await.unwrap();
}

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, a server certificate for localhost / 127.0.0.1 and a client certificate, all signed
    /// by it; and a second CA that signed nothing here.
    fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        write("ca.pem", ca.pem());
        let leaf = |names: Vec<String>, stem: &str| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
            write(&format!("{stem}.pem"), cert.pem());
            write(&format!("{stem}.key"), key.serialize_pem());
        };
        leaf(vec!["localhost".into(), "127.0.0.1".into()], "server");
        leaf(vec!["camera-gateway".into()], "client");
        let other_key = KeyPair::generate().unwrap();
        let mut other = CertificateParams::new(Vec::<String>::new()).unwrap();
        other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        write("other-ca.pem", other.self_signed(&other_key).unwrap().pem());
        Pki { dir }
    }

    fn path(&self, name: &str) -> Option<PathBuf> {
        Some(self.dir.path().join(name))
    }
}

/// Lists runs on the trainer at `addr` with client settings `security`.
async fn list_runs(addr: &str, security: &Security) -> Result<(), String> {
    let channel =
        security.endpoint(addr).map_err(|e| format!("{e:#}"))?.connect().await.map_err(|e| format!("{e:?}"))?;
    TrainerServiceClient::new(security.channel(channel))
        .list_runs(pb::ListRunsRequest {})
        .await
        .map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

#[tokio::test]
async fn tls_and_mutual_tls() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let start = |security: Security| {
        let runs = data.path().join("runs");
        async move {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = l.local_addr().unwrap().port();
            let config = reid_trainer::TrainerConfig { runs_dir: runs, security, ..Default::default() };
            tokio::spawn(reid_trainer::run(config, l, std::future::pending()));
            tokio::time::sleep(Duration::from_millis(200)).await;
            port
        }
    };
    let server = Security { tls_cert: pki.path("server.pem"), tls_key: pki.path("server.key"), ..Security::default() };
    let trusting = Security { tls_ca: pki.path("ca.pem"), ..Security::default() };
    let with_cert = Security {
        tls_client_cert: pki.path("client.pem"),
        tls_client_key: pki.path("client.key"),
        ..trusting.clone()
    };

    // TLS: a client that trusts the CA gets through, by name and by address.
    let port = start(server.clone()).await;
    list_runs(&format!("https://localhost:{port}"), &trusting).await.unwrap();
    list_runs(&format!("https://127.0.0.1:{port}"), &trusting).await.unwrap();
    let other = Security { tls_ca: pki.path("other-ca.pem"), ..Security::default() };
    assert!(list_runs(&format!("https://localhost:{port}"), &other).await.is_err(), "an untrusted server was accepted");
    assert!(
        list_runs(&format!("http://127.0.0.1:{port}"), &Security::default()).await.is_err(),
        "plaintext got through"
    );

    // Mutual TLS: the server also wants a client certificate signed by the CA.
    let port = start(Security { tls_client_ca: pki.path("ca.pem"), ..server.clone() }).await;
    list_runs(&format!("https://localhost:{port}"), &with_cert).await.unwrap();
    assert!(
        list_runs(&format!("https://localhost:{port}"), &trusting).await.is_err(),
        "a client without a certificate got through mutual TLS"
    );

    // TLS and a key together: the certificate is not enough without the key.
    let port = start(Security { api_key: Some(KEY.into()), ..server }).await;
    let err = list_runs(&format!("https://localhost:{port}"), &trusting).await.unwrap_err();
    assert!(err.starts_with("Unauthenticated"), "{err}");
    list_runs(&format!("https://localhost:{port}"), &Security { api_key: Some(KEY.into()), ..trusting }).await.unwrap();
}
