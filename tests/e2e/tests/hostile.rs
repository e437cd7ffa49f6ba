//! The four services against hostile callers, in-process over real gRPC on 127.0.0.1:0: key roles
//! on every RPC, a flood of idle connections, and a mutation fuzzer that sends damaged and random
//! protobuf to every RPC of every service. The rules kept: every answer is a status a client can
//! act on (never a dropped connection or an unknown error), every service stays SERVING, and the
//! process's memory stays bounded.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut};
use prost::Message;
use rand::{Rng, SeedableRng};
use reid_proto::v1 as pb;
use reid_server::{ConnectionLimits, Security};
use tokio::net::TcpListener;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic_health::pb::health_client::HealthClient;

const ADMIN: &str = "admin-key-for-tests";
const EDGE: &str = "edge-key-for-tests";
const VIEWER: &str = "viewer-key-for-tests";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn security(limits: ConnectionLimits) -> Security {
    Security {
        api_key: Some(ADMIN.into()),
        edge_api_key: Some(EDGE.into()),
        viewer_api_key: Some(VIEWER.into()),
        connections: limits,
        ..Security::default()
    }
}

async fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    (listener, addr)
}

struct Services {
    embedder: String,
    identity: String,
    ingester: String,
    trainer: String,
    _data: tempfile::TempDir,
}

impl Services {
    fn all(&self) -> [(&'static str, &str); 4] {
        [
            ("EmbedderService", &self.embedder),
            ("IdentityService", &self.identity),
            ("IngesterService", &self.ingester),
            ("TrainerService", &self.trainer),
        ]
    }
}

async fn start(limits: ConnectionLimits) -> Services {
    let data = tempfile::tempdir().unwrap();
    let security = security(limits);
    let (l, embedder) = listener().await;
    let config = reid_embedder::EmbedderConfig {
        model_dir: repo().join("models"),
        watch_interval: Duration::ZERO,
        security: security.clone(),
        ..Default::default()
    };
    tokio::spawn(reid_embedder::run(config, l, std::future::pending()));
    let (l, identity) = listener().await;
    let config = reid_identity::IdentityConfig {
        data_dir: data.path().join("identity"),
        embedder_url: Some(embedder.clone()),
        security: security.clone(),
        ..Default::default()
    };
    tokio::spawn(reid_identity::run(config, l, std::future::pending()));
    let (l, ingester) = listener().await;
    let config = reid_ingester::IngesterConfig {
        embedder_url: Some(embedder.clone()),
        identity_url: Some(identity.clone()),
        max_cameras: 8,
        security: security.clone(),
        ..Default::default()
    };
    tokio::spawn(reid_ingester::run(config, l, std::future::pending()));
    let (l, trainer) = listener().await;
    let config = reid_trainer::TrainerConfig {
        runs_dir: data.path().join("runs"),
        model_dir: data.path().join("models"),
        // No data roots: no run can start, whatever the fuzzer sends.
        data_roots: Vec::new(),
        security,
        ..Default::default()
    };
    tokio::spawn(reid_trainer::run(config, l, std::future::pending()));
    let services = Services { embedder, identity, ingester, trainer, _data: data };
    for (_, addr) in services.all() {
        wait_serving(addr, Duration::from_secs(60)).await;
    }
    services
}

async fn serving(addr: &str) -> bool {
    let Ok(ch) = tonic::transport::Endpoint::from_shared(addr.to_owned()).unwrap().connect().await else {
        return false;
    };
    let reply = HealthClient::new(ch).check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await;
    reply.is_ok_and(|r| r.into_inner().status == 1)
}

async fn wait_serving(addr: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !serving(addr).await {
        assert!(Instant::now() < deadline, "{addr} is not SERVING");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Bytes in, bytes out: lets the fuzzer send anything to any method.
#[derive(Debug, Clone, Default)]
struct RawCodec;

#[derive(Debug)]
struct Raw;

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Unary,
    ClientStream,
    ServerStream,
    Bidi,
}

/// Every RPC of the contract, with a valid request to start mutating from.
fn rpcs() -> Vec<(&'static str, &'static str, Kind, Vec<u8>)> {
    let jpeg = reid_model::preprocess::encode_jpeg(64, 128, &[150u8, 120, 90].repeat(64 * 128)).unwrap();
    let image = || pb::Image { data: Some(pb::image::Data::Encoded(jpeg.clone())) };
    let probe = pb::Probe { query: Some(pb::probe::Query::Image(image())) };
    let crop = pb::TrackletCrop {
        image: Some(image()),
        r#box: Some(pb::BoundingBox { x: 1.0, y: 2.0, width: 30.0, height: 60.0 }),
        captured_at: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
        quality: 0.5,
        embedding: None,
    };
    let detection = pb::Detection {
        r#box: Some(pb::BoundingBox { x: 1.0, y: 2.0, width: 30.0, height: 60.0 }),
        score: 0.9,
        crop: Some(image()),
        track_id: "t1".into(),
    };
    let camera = pb::CameraConfig { camera_id: "door".into(), url: "push".into(), ..Default::default() };
    use Kind::*;
    vec![
        (
            "EmbedderService",
            "Embed",
            Unary,
            pb::EmbedRequest { images: vec![image()], request_id: "r".into() }.encode_to_vec(),
        ),
        (
            "EmbedderService",
            "EmbedStream",
            Bidi,
            pb::EmbedRequest { images: vec![image()], request_id: "r".into() }.encode_to_vec(),
        ),
        ("EmbedderService", "GetModel", Unary, pb::GetModelRequest {}.encode_to_vec()),
        ("EmbedderService", "LoadModel", Unary, pb::LoadModelRequest { name: "person-vtest".into() }.encode_to_vec()),
        (
            "IdentityService",
            "Identify",
            Unary,
            pb::IdentifyRequest { probes: vec![probe], top_k: 5, ..Default::default() }.encode_to_vec(),
        ),
        (
            "IdentityService",
            "Enroll",
            Unary,
            pb::EnrollRequest { name: "Ada".into(), images: vec![image()], ..Default::default() }.encode_to_vec(),
        ),
        (
            "IdentityService",
            "Forget",
            Unary,
            pb::ForgetRequest { identity_id: "0b7e3b9c-1f61-4f43-9d57-3c9b1a2b9e11".into() }.encode_to_vec(),
        ),
        (
            "IdentityService",
            "ListIdentities",
            Unary,
            pb::ListIdentitiesRequest { page_size: 10, page_token: String::new() }.encode_to_vec(),
        ),
        (
            "IdentityService",
            "Sightings",
            Unary,
            pb::SightingsRequest { identity_id: "0b7e3b9c-1f61-4f43-9d57-3c9b1a2b9e11".into(), ..Default::default() }
                .encode_to_vec(),
        ),
        (
            "IdentityService",
            "Observe",
            Unary,
            pb::ObserveRequest { camera_id: "c".into(), track_id: "t".into(), crops: vec![crop], model: None }
                .encode_to_vec(),
        ),
        (
            "IdentityService",
            "Feedback",
            Unary,
            pb::FeedbackRequest { kind: 2, identity_a: "a".into(), identity_b: "b".into(), ..Default::default() }
                .encode_to_vec(),
        ),
        ("IdentityService", "ListFeedback", Unary, pb::ListFeedbackRequest {}.encode_to_vec()),
        (
            "IngesterService",
            "PushFrames",
            ClientStream,
            pb::PushFramesRequest {
                camera_id: "door".into(),
                frame: Some(pb::Frame { image: Some(image()), captured_at: None, sequence: 1 }),
            }
            .encode_to_vec(),
        ),
        (
            "IngesterService",
            "PushDetections",
            ClientStream,
            pb::PushDetectionsRequest { camera_id: "door".into(), detections: vec![detection], ..Default::default() }
                .encode_to_vec(),
        ),
        ("IngesterService", "AddCamera", Unary, pb::AddCameraRequest { camera: Some(camera) }.encode_to_vec()),
        (
            "IngesterService",
            "RemoveCamera",
            Unary,
            pb::RemoveCameraRequest { camera_id: "nobody".into() }.encode_to_vec(),
        ),
        ("IngesterService", "ListCameras", Unary, pb::ListCamerasRequest {}.encode_to_vec()),
        (
            "IngesterService",
            "ForgetTracklets",
            Unary,
            pb::ForgetTrackletsRequest {
                tracklets: vec![pb::TrackletRef { camera_id: "c".into(), track_id: "t".into() }],
            }
            .encode_to_vec(),
        ),
        (
            "TrainerService",
            "StartRun",
            Unary,
            pb::StartRunRequest {
                config: Some(pb::RunConfig {
                    config: "[dataset]\nkind = \"fashion_mnist\"\n".into(),
                    resume_run_id: String::new(),
                }),
            }
            .encode_to_vec(),
        ),
        ("TrainerService", "WatchRun", ServerStream, pb::WatchRunRequest { run_id: "nope".into() }.encode_to_vec()),
        ("TrainerService", "ListRuns", Unary, pb::ListRunsRequest {}.encode_to_vec()),
        ("TrainerService", "CancelRun", Unary, pb::CancelRunRequest { run_id: "nope".into() }.encode_to_vec()),
        (
            "TrainerService",
            "PublishModel",
            Unary,
            pb::PublishModelRequest { run_id: "nope".into(), name: "m".into(), embedder_addrs: vec![] }.encode_to_vec(),
        ),
    ]
}

/// Sends `messages` to `/reid.v1.SERVICE/METHOD` with `key`; the status (Ok for success).
async fn call(addr: &str, service: &str, method: &str, kind: Kind, key: &str, messages: Vec<Vec<u8>>) -> tonic::Status {
    let security = Security { api_key: Some(key.into()), ..Security::default() };
    let channel = match security.endpoint(addr).unwrap().timeout(Duration::from_secs(60)).connect().await {
        Ok(c) => security.channel(c),
        Err(e) => return tonic::Status::unavailable(format!("connect: {e}")),
    };
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(256 << 20);
    if let Err(e) = grpc.ready().await {
        return tonic::Status::unavailable(format!("not ready: {e}"));
    }
    let path: http::uri::PathAndQuery = format!("/reid.v1.{service}/{method}").parse().unwrap();
    let result = match kind {
        Kind::Unary => grpc
            .unary(tonic::Request::new(messages.into_iter().next().unwrap_or_default()), path, RawCodec)
            .await
            .map(|_| ()),
        Kind::ClientStream => {
            grpc.client_streaming(tonic::Request::new(tokio_stream::iter(messages)), path, RawCodec).await.map(|_| ())
        }
        Kind::ServerStream => {
            match grpc
                .server_streaming(tonic::Request::new(messages.into_iter().next().unwrap_or_default()), path, RawCodec)
                .await
            {
                Ok(response) => drain(response.into_inner()).await,
                Err(e) => Err(e),
            }
        }
        Kind::Bidi => match grpc.streaming(tonic::Request::new(tokio_stream::iter(messages)), path, RawCodec).await {
            Ok(response) => drain(response.into_inner()).await,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => tonic::Status::new(Code::Ok, ""),
        Err(status) => status,
    }
}

async fn drain(mut stream: tonic::Streaming<Vec<u8>>) -> Result<(), tonic::Status> {
    while stream.message().await?.is_some() {}
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_takes_only_the_roles_it_should() {
    let services = start(ConnectionLimits::default()).await;
    let edge = reid_server::Role::Edge;
    let viewer = reid_server::Role::Viewer;
    let mut checked = 0;
    for (service, method, kind, request) in rpcs() {
        let addr = services.all().into_iter().find(|(s, _)| *s == service).unwrap().1;
        let path = format!("/reid.v1.{service}/{method}");
        for (key, role) in [(EDGE, Some(edge)), (VIEWER, Some(viewer)), (ADMIN, None)] {
            // Empty messages: the handlers refuse most of them, but not for want of a role.
            let status = call(addr, service, method, kind, key, vec![Vec::new()]).await;
            let allowed = role.is_none_or(|r| r.allows(&path));
            if allowed {
                assert!(
                    !matches!(status.code(), Code::PermissionDenied | Code::Unauthenticated),
                    "{path} with the {key}: {status:?}"
                );
            } else {
                assert_eq!(status.code(), Code::PermissionDenied, "{path} with the {key}: {status:?}");
            }
            checked += 1;
        }
        let status = call(addr, service, method, kind, "no-such-key", vec![request]).await;
        assert_eq!(status.code(), Code::Unauthenticated, "{path} with a wrong key");
    }
    println!("{checked} (rpc, role) pairs checked over {} rpcs", rpcs().len());
    // What the roles mean, spelled out for the calls that matter most.
    for (path, role, allowed) in [
        ("/reid.v1.IdentityService/Forget", edge, false),
        ("/reid.v1.IdentityService/Forget", viewer, false),
        ("/reid.v1.TrainerService/StartRun", edge, false),
        ("/reid.v1.EmbedderService/LoadModel", viewer, false),
        ("/reid.v1.IngesterService/PushFrames", edge, true),
        ("/reid.v1.IdentityService/Identify", viewer, true),
        ("/reid.v1.IdentityService/Identify", edge, false),
    ] {
        assert_eq!(role.allows(path), allowed, "{role:?} {path}");
    }
}

/// Peak resident memory of this process, in MiB (Linux).
fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
        .map_or(0, |kb| kb / 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_without_a_key_cannot_starve_a_service() {
    let limits = ConnectionLimits {
        max_connections: 64,
        handshake_timeout: Duration::from_secs(2),
        ..ConnectionLimits::default()
    };
    let services = start(limits).await;
    for (service, addr) in services.all() {
        let target = addr.trim_start_matches("http://").to_owned();
        // Far more idle connections than the server takes, none of them saying a word.
        let mut idle = Vec::new();
        for _ in 0..600 {
            match tokio::net::TcpStream::connect(&target).await {
                Ok(s) => idle.push(s),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        assert!(serving(addr).await, "{service}: health did not answer under the flood");
        let status = call(addr, service, "NoSuchMethod", Kind::Unary, ADMIN, vec![Vec::new()]).await;
        let elapsed = started.elapsed();
        assert_eq!(status.code(), Code::Unimplemented, "{service}: {status:?}");
        println!("{service}: {} idle connections opened, health and a call answered in {elapsed:?}", idle.len());
        assert!(elapsed < Duration::from_secs(5), "{service} took {elapsed:?} under the flood");
        // The server holds at most its cap: the others were closed to make room, and the rest
        // close at their handshake deadline.
        let closed_now = closed(&mut idle).await;
        assert!(closed_now >= idle.len() - 64, "{service}: only {closed_now} of {} closed at once", idle.len());
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let closed_later = closed(&mut idle).await;
        assert_eq!(closed_later, idle.len(), "{service}: silent connections outlived the handshake deadline");
    }
}

/// How many of `streams` the server has closed: reading (past the server's HTTP/2 settings
/// and goodbye frames) reaches the end at once.
async fn closed(streams: &mut [tokio::net::TcpStream]) -> usize {
    use tokio::io::AsyncReadExt;
    let mut n = 0;
    for s in streams.iter_mut() {
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => {
                    n += 1;
                    break;
                }
                Ok(Ok(_)) => continue,
                Err(_) => break,
            }
        }
    }
    n
}

/// One mutation of a valid encoding: what a broken or hostile client sends.
fn mutate(rng: &mut rand::rngs::StdRng, seed: &[u8]) -> Vec<u8> {
    let mut m = seed.to_vec();
    match rng.gen_range(0..8) {
        // Flip some bytes.
        0 => {
            for _ in 0..rng.gen_range(1..8) {
                if !m.is_empty() {
                    let i = rng.gen_range(0..m.len());
                    m[i] ^= rng.r#gen::<u8>() | 1;
                }
            }
        }
        // Truncate.
        1 => m.truncate(rng.gen_range(0..=m.len())),
        // Random bytes appended (unknown or repeated fields).
        2 => m.extend((0..rng.gen_range(1..64)).map(|_| rng.r#gen::<u8>())),
        // Nothing but noise.
        3 => m = (0..rng.gen_range(0..256)).map(|_| rng.r#gen::<u8>()).collect(),
        // A length-delimited field that declares far more than follows.
        4 => {
            let field = rng.gen_range(1u8..16);
            m.push((field << 3) | 2);
            m.extend([0xFF, 0xFF, 0xFF, 0x0F]);
            m.extend((0..rng.gen_range(0..16)).map(|_| rng.r#gen::<u8>()));
        }
        // A string field of every number 1..16 set to 100 KB of text.
        5 => {
            let field = rng.gen_range(1u8..16);
            m.push((field << 3) | 2);
            let mut len = 100_000u32;
            while len >= 0x80 {
                m.push((len as u8 & 0x7F) | 0x80);
                len >>= 7;
            }
            m.push(len as u8);
            m.extend(std::iter::repeat_n(b'x', 100_000));
        }
        // A varint field set to the largest value.
        6 => {
            let field = rng.gen_range(1u8..16);
            m.push(field << 3);
            m.extend([0xFF; 9]);
            m.push(0x01);
        }
        // The message twice (protobuf merges repeated and overrides scalars).
        _ => m.extend_from_slice(seed),
    }
    m
}

/// A status a client can act on. `Internal` only for what tonic says of undecodable protobuf;
/// `Unknown`, `DataLoss` and a dropped connection (`Unavailable`, `Cancelled`) are failures.
fn acceptable(status: &tonic::Status) -> bool {
    match status.code() {
        Code::Ok
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::ResourceExhausted
        | Code::PermissionDenied => true,
        Code::Internal => status.message().contains("decode"),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_requests_to_every_rpc_get_clear_statuses_and_break_nothing() {
    let services = start(ConnectionLimits::default()).await;
    let seed = std::env::var("REID_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20_261_202u64);
    let per_rpc: usize = std::env::var("REID_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let rss_before = peak_rss_mib();
    let started = Instant::now();
    let (mut cases, mut by_code) = (0usize, std::collections::BTreeMap::<String, usize>::new());
    for (service, method, kind, request) in rpcs() {
        let addr = services.all().into_iter().find(|(s, _)| *s == service).unwrap().1;
        for case in 0..per_rpc {
            let messages = match kind {
                Kind::ClientStream | Kind::Bidi => {
                    (0..rng.gen_range(1..4)).map(|_| mutate(&mut rng, &request)).collect()
                }
                _ => vec![mutate(&mut rng, &request)],
            };
            let status = call(addr, service, method, kind, ADMIN, messages).await;
            assert!(
                acceptable(&status),
                "{service}/{method} case {case} (seed {seed}): {:?} {}",
                status.code(),
                status.message()
            );
            *by_code.entry(format!("{:?}", status.code())).or_default() += 1;
            cases += 1;
        }
        for (name, other) in services.all() {
            assert!(serving(other).await, "{name} stopped serving after {service}/{method}");
        }
    }
    let rss_after = peak_rss_mib();
    println!(
        "fuzz: {cases} cases over {} rpcs in {:.1} s (seed {seed}), statuses {by_code:?}, panics 0, \
         peak RSS {rss_before} MiB before, {rss_after} MiB after",
        rpcs().len(),
        started.elapsed().as_secs_f64()
    );
    assert!(rss_after < rss_before + 1536, "memory grew from {rss_before} to {rss_after} MiB");
}
