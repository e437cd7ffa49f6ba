#![allow(clippy::unwrap_used)]
//! `Watch`: identity events in order over gRPC, filters, a reconnect with the last cursor that
//! loses nothing and repeats nothing, refused cursors, and streams ended at shutdown.

mod common;

use std::time::Duration;

use common::*;
use reid_identity::events::{Event, EventKind, MergeCause};
use reid_proto::v1 as pb;
use tonic::Streaming;

async fn enroll(service: &Service, person: u64) -> String {
    let images = (0..3).map(|v| image(person, v)).collect();
    let request = pb::EnrollRequest { name: format!("person {person}"), images, ..Default::default() };
    service.client().enroll(request).await.unwrap().into_inner().identity_id
}

async fn observe(service: &Service, camera: &str, track: &str, person: u64) -> pb::ObserveResponse {
    let start = reid_identity::identities::now_ms() - 60_000;
    service.client().observe(tracklet(camera, track, person, 10..13, start)).await.unwrap().into_inner()
}

async fn watch(service: &Service, request: pb::WatchRequest) -> Streaming<pb::IdentityEvent> {
    service.client().watch(request).await.unwrap().into_inner()
}

/// The next `n` events, each within five seconds.
async fn next(stream: &mut Streaming<pb::IdentityEvent>, n: usize) -> Vec<Event> {
    let mut events = Vec::new();
    for _ in 0..n {
        let e = tokio::time::timeout(Duration::from_secs(5), stream.message()).await.expect("an event in time");
        events.push(Event::try_from(e.unwrap().expect("the stream is open")).unwrap());
    }
    events
}

/// Nothing more arrives for a while.
async fn quiet(stream: &mut Streaming<pb::IdentityEvent>) {
    if let Ok(e) = tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
        panic!("an unexpected event: {e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_in_order_and_a_reconnect_with_the_cursor_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path()), ScriptedEmbedder::new("A")).await;
    let mut all = watch(&service, pb::WatchRequest::default()).await;
    let mut enrolled_only = watch(&service, pb::WatchRequest { enrolled_only: true, ..Default::default() }).await;

    let ann = enroll(&service, 1).await;
    let seen = observe(&service, "west", "1", 1).await;
    assert_eq!(seen.identity_id, ann);
    let stranger = observe(&service, "east", "2", 2).await;
    assert!(stranger.created);
    let request = pb::FeedbackRequest {
        kind: pb::FeedbackKind::Merge as i32,
        identity_a: ann.clone(),
        identity_b: stranger.identity_id.clone(),
        ..Default::default()
    };
    service.client().feedback(request).await.unwrap();

    let events = next(&mut all, 4).await;
    let seqs: Vec<u64> = events.iter().map(|e| e.cursor.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "numbered in order: {seqs:?}");
    assert!(matches!(&events[0].kind, EventKind::Enrolled { identity_id, name, vectors_stored: 3 }
        if *identity_id == ann && name == "person 1"));
    assert!(
        matches!(&events[1].kind, EventKind::Sighted { identity_id, camera_id, track_id, enrolled: true, new_identity: false, name, .. }
        if *identity_id == ann && camera_id == "west" && track_id == "1" && name == "person 1")
    );
    assert!(
        matches!(&events[2].kind, EventKind::Sighted { identity_id, camera_id, enrolled: false, new_identity: true, .. }
        if *identity_id == stranger.identity_id && camera_id == "east")
    );
    assert!(
        matches!(&events[3].kind, EventKind::Merged { from_identity_id, into_identity_id, enrolled: true, cause: MergeCause::Feedback, .. }
        if *from_identity_id == stranger.identity_id && *into_identity_id == ann)
    );
    // The enrolled-only watcher saw all but the stranger's sighting.
    let kinds: Vec<_> = next(&mut enrolled_only, 3).await.into_iter().map(|e| e.cursor.seq).collect();
    assert_eq!(kinds, [seqs[0], seqs[1], seqs[3]]);
    quiet(&mut enrolled_only).await;

    // The watcher goes away; meanwhile a sighting and an erasure happen.
    let last = events[3].cursor;
    drop(all);
    let bob = observe(&service, "east", "3", 3).await;
    service.client().forget(pb::ForgetRequest { identity_id: bob.identity_id.clone() }).await.unwrap();
    // Back with the last cursor: exactly what it missed, then what happens next.
    let mut again = watch(&service, pb::WatchRequest { after: last.to_string(), ..Default::default() }).await;
    let missed = next(&mut again, 2).await;
    assert_eq!(missed[0].cursor.seq, last.seq + 1);
    assert!(matches!(&missed[0].kind, EventKind::Sighted { identity_id, .. } if *identity_id == bob.identity_id));
    assert!(
        matches!(&missed[1].kind, EventKind::Forgotten { identity_id, enrolled: false } if *identity_id == bob.identity_id)
    );
    quiet(&mut again).await;
    observe(&service, "west", "4", 4).await;
    let live = next(&mut again, 1).await;
    assert_eq!(live[0].cursor.seq, last.seq + 3);

    // From the oldest kept, filtered to one identity: its enrollment, sighting and merge.
    let request = pb::WatchRequest { from_oldest: true, identity_ids: vec![ann.clone()], ..Default::default() };
    let mut of_ann = watch(&service, request).await;
    let seqs_of_ann: Vec<u64> = next(&mut of_ann, 3).await.iter().map(|e| e.cursor.seq).collect();
    assert_eq!(seqs_of_ann, [seqs[0], seqs[1], seqs[3]]);
    quiet(&mut of_ann).await;
    // Only sightings on east (merges and erasures are not camera events).
    let request = pb::WatchRequest { from_oldest: true, cameras: vec!["east".into()], ..Default::default() };
    let east: Vec<u64> = next(&mut watch(&service, request).await, 5).await.iter().map(|e| e.cursor.seq).collect();
    assert_eq!(east, [seqs[0], seqs[2], seqs[3], last.seq + 1, last.seq + 2]);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_that_cannot_resume_are_refused_with_their_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.events.capacity = 2;
    let service = Service::start(c, ScriptedEmbedder::new("A")).await;
    let mut stream = watch(&service, pb::WatchRequest::default()).await;
    for track in 0..4 {
        observe(&service, "west", &track.to_string(), 1).await;
    }
    let events = next(&mut stream, 4).await;
    let base = service.client();
    let refused = |after: String, cameras: Vec<String>| {
        let mut client = base.clone();
        async move { client.watch(pb::WatchRequest { after, cameras, ..Default::default() }).await.unwrap_err().code() }
    };
    // The last two kept: resuming after the first would skip the second; after the second is fine.
    assert_eq!(refused(events[0].cursor.to_string(), vec![]).await, tonic::Code::OutOfRange);
    let mut client = service.client();
    assert!(client.watch(pb::WatchRequest { after: events[1].cursor.to_string(), ..Default::default() }).await.is_ok());
    let restarted = reid_identity::events::Cursor { epoch: events[0].cursor.epoch + 1, seq: 1 };
    assert_eq!(refused(restarted.to_string(), vec![]).await, tonic::Code::OutOfRange);
    assert_eq!(refused("not a cursor".into(), vec![]).await, tonic::Code::InvalidArgument);
    assert_eq!(refused(String::new(), vec!["x".repeat(300)]).await, tonic::Code::InvalidArgument);
    let bad_id = pb::WatchRequest { identity_ids: vec!["../etc".into()], ..Default::default() };
    assert_eq!(client.watch(bad_id).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_ends_open_streams_with_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path()), ScriptedEmbedder::new("A")).await;
    let mut stream = watch(&service, pb::WatchRequest::default()).await;
    observe(&service, "west", "1", 1).await;
    next(&mut stream, 1).await;
    // A stream never ends by itself: without being told, the server would wait for it forever.
    tokio::time::timeout(Duration::from_secs(20), service.stop()).await.expect("the server stops with a watcher open");
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message()).await.unwrap();
    match end {
        Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
        Ok(None) => {}
        Ok(Some(e)) => panic!("an event after shutdown: {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_changes_the_listed_name_and_is_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path()), ScriptedEmbedder::new("A")).await;
    let seen = observe(&service, "west", "1", 1).await;
    let mut stream = watch(&service, pb::WatchRequest::default()).await;
    let mut client = service.client();
    let rename =
        |identity_id: &str, name: &str| pb::RenameRequest { identity_id: identity_id.into(), name: name.into() };
    client.rename(rename(&seen.identity_id, "Ada")).await.unwrap();
    let listed = client.list_identities(pb::ListIdentitiesRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.identities[0].name, "Ada");
    let renamed = next(&mut stream, 1).await;
    assert!(matches!(&renamed[0].kind, EventKind::Renamed { identity_id, name, enrolled: false }
        if *identity_id == seen.identity_id && name == "Ada"));
    let unknown = "00000000-0000-0000-0000-000000000000";
    assert_eq!(client.rename(rename(unknown, "x")).await.unwrap_err().code(), tonic::Code::NotFound);
    let long = "x".repeat(300);
    assert_eq!(client.rename(rename(&seen.identity_id, &long)).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    quiet(&mut stream).await;
    service.stop().await;
}
