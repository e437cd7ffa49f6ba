#![allow(clippy::unwrap_used)]
//! The webhook against a real HTTP receiver: every event POSTed in order, signed, retried after
//! a refusal, and dropped (counted) when the endpoint never accepts it, without holding up the
//! next one.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::*;
use reid_identity::config::WebhookConfig;
use reid_identity::webhook::{EVENT_HEADER, SIGNATURE_HEADER, signature};

/// What the receiver got, and how many requests it still refuses.
#[derive(Default)]
struct Received {
    bodies: Vec<(HeaderMap, Bytes)>,
    refuse: usize,
    refused: usize,
}

async fn receive(State(r): State<Arc<Mutex<Received>>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut r = r.lock().unwrap();
    if r.refuse > 0 {
        r.refuse -= 1;
        r.refused += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    r.bodies.push((headers, body));
    StatusCode::NO_CONTENT
}

async fn receiver(refuse: usize) -> (String, Arc<Mutex<Received>>) {
    let received = Arc::new(Mutex::new(Received { refuse, ..Default::default() }));
    let app = Router::new().route("/hook", post(receive)).with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

async fn wait_for(received: &Mutex<Received>, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while received.lock().unwrap().bodies.len() < n {
        assert!(std::time::Instant::now() < deadline, "{n} deliveries in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn observe(service: &Service, camera: &str, track: &str, person: u64) -> String {
    let start = reid_identity::identities::now_ms() - 60_000;
    let r = service.client().observe(tracklet(camera, track, person, 0..3, start)).await.unwrap().into_inner();
    r.identity_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_posted_in_order_signed_and_retried_after_a_refusal() {
    let (url, received) = receiver(1).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    let secret = "s3cret";
    c.events.webhook =
        Some(WebhookConfig { url, secret: Some(secret.into()), cameras: vec!["west".into()], ..Default::default() });
    let service = Service::start(c, ScriptedEmbedder::new("A")).await;
    let first = observe(&service, "west", "1", 1).await;
    observe(&service, "east", "2", 2).await;
    let third = observe(&service, "west", "3", 3).await;
    service.client().forget(reid_proto::v1::ForgetRequest { identity_id: third.clone() }).await.unwrap();
    wait_for(&received, 3).await;

    let bodies = {
        let r = received.lock().unwrap();
        assert_eq!(r.refused, 1, "the first attempt was refused and retried");
        r.bodies.clone()
    };
    let events: Vec<serde_json::Value> = bodies.iter().map(|(_, b)| serde_json::from_slice(b).unwrap()).collect();
    let summary: Vec<(&str, &str)> =
        events.iter().map(|e| (e["kind"].as_str().unwrap(), e["identity_id"].as_str().unwrap())).collect();
    // East's sighting is filtered out; the erasure is not a camera event.
    assert_eq!(summary, [("sighted", first.as_str()), ("sighted", third.as_str()), ("forgotten", third.as_str())]);
    for (headers, body) in &bodies {
        assert_eq!(headers[SIGNATURE_HEADER].to_str().unwrap(), signature(secret.as_bytes(), body));
        let cursor = serde_json::from_slice::<serde_json::Value>(body).unwrap()["cursor"].clone();
        assert_eq!(headers[EVENT_HEADER].to_str().unwrap(), cursor.as_str().unwrap());
        assert_eq!(headers["content-type"], "application/json");
    }
    let deliveries = &service.identities.metrics().webhook_deliveries;
    assert_eq!(deliveries.with_label_values(&["delivered"]).get(), 3);
    assert_eq!(deliveries.with_label_values(&["retried"]).get(), 1);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_endpoint_never_accepts_is_dropped_and_the_next_one_goes() {
    let (url, received) = receiver(2).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.events.webhook = Some(WebhookConfig { url, max_attempts: 2, ..Default::default() });
    let service = Service::start(c, ScriptedEmbedder::new("A")).await;
    observe(&service, "west", "1", 1).await;
    let second = observe(&service, "west", "2", 2).await;
    wait_for(&received, 1).await;
    let (headers, body) = received.lock().unwrap().bodies[0].clone();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["identity_id"], second.as_str(), "the first event was given up after two refusals");
    assert!(!headers.contains_key(SIGNATURE_HEADER), "no secret, no signature");
    assert_eq!(service.identities.metrics().webhook_deliveries.with_label_values(&["dropped"]).get(), 1);
    service.stop().await;
}
