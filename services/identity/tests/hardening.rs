#![allow(clippy::unwrap_used)]
//! The identity service against hostile and unlucky callers: oversized fields, enrollments cut
//! short by their deadline, erasures cut short by a crash, names that must not outlive a Forget,
//! and request traffic that tries to create galleries.

mod common;

use std::time::Duration;

use common::*;
use reid_identity::catalog::{catalog_collection, derived_id};
use reid_identity::identities::now_ms;
use reid_proto::v1 as pb;
use reid_vector_store::{Filter, Point};
use tonic::Code;

fn enroll_request(name: &str, external_id: &str, person: u64) -> pb::EnrollRequest {
    pb::EnrollRequest {
        name: name.into(),
        external_id: external_id.into(),
        images: (0..2).map(|v| image(person, v)).collect(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_fields_are_refused_without_echo_and_nobody_else_is_hurt() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path()), ScriptedEmbedder::new("A")).await;
    let mut client = service.client();
    let ok = client.enroll(enroll_request("Ada", "", 1)).await.unwrap().into_inner();
    let huge = "n".repeat(1 << 20);
    for request in [enroll_request(&huge, "", 2), enroll_request("x", &huge, 2)] {
        let e = client.enroll(request).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().len() < 300, "the message echoes the input: {} bytes", e.message().len());
    }
    let mut observe = tracklet(&huge, "t", 1, 0..2, now_ms());
    assert_eq!(client.observe(observe.clone()).await.unwrap_err().code(), Code::InvalidArgument);
    observe.camera_id = "cam".into();
    observe.track_id = huge.clone();
    assert_eq!(client.observe(observe).await.unwrap_err().code(), Code::InvalidArgument);
    let feedback = pb::FeedbackRequest {
        kind: pb::FeedbackKind::Reject as i32,
        identity_a: ok.identity_id.clone(),
        camera_id: huge.clone(),
        track_id: "t".into(),
        ..Default::default()
    };
    assert_eq!(client.feedback(feedback).await.unwrap_err().code(), Code::InvalidArgument);
    let forget = client.forget(pb::ForgetRequest { identity_id: huge.clone() }).await.unwrap_err();
    assert_eq!(forget.code(), Code::InvalidArgument);
    assert!(forget.message().len() < 300, "{}", forget.message());
    let wide = pb::IdentifyRequest { probes: vec![image_probe(1, 7)], top_k: 101, ..Default::default() };
    assert_eq!(client.identify(wide).await.unwrap_err().code(), Code::InvalidArgument);
    let cameras =
        pb::IdentifyRequest { probes: vec![image_probe(1, 7)], cameras: vec![huge.clone()], ..Default::default() };
    assert_eq!(client.identify(cameras).await.unwrap_err().code(), Code::InvalidArgument);

    // Everyone else is served as before.
    let found = client
        .identify(pb::IdentifyRequest { probes: vec![image_probe(1, 7)], top_k: 100, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.results[0].identity_id, ok.identity_id);
    let listed = client.list_identities(pb::ListIdentitiesRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.identities.len(), 1);
    assert_eq!(listed.identities[0].name, "Ada");
}

/// Every identity with crops or vectors also has a catalog entry, and the other way round: the
/// number of identities, or what is inconsistent.
async fn consistent(service: &Service) -> Result<usize, String> {
    let listed = service.identities.list(1000, None).await.unwrap().0;
    let known: std::collections::HashSet<String> = listed.iter().map(|s| s.entry.identity.clone()).collect();
    let crops = dir_names(service.identities.crops().dir("x").parent().unwrap());
    if let Some(id) = crops.iter().find(|id| !known.contains(*id)) {
        return Err(format!("crops of {id} without a catalog entry"));
    }
    for id in &known {
        if stored(&service.identities, &Filter::all().keyword("identity", id)).await == 0 {
            return Err(format!("{id} has no vectors"));
        }
    }
    Ok(known.len())
}

/// Waits for the writes still running after their callers left (they run to completion), then
/// checks: the state must be consistent and stay the same, with no new embedder call, for two
/// seconds (a consistent state is also reached before a late write starts). At most 60 s.
async fn settled(service: &Service) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut last = None;
    loop {
        let calls = *service.embedder.calls.lock().unwrap();
        match consistent(service).await {
            Ok(n) if last == Some((calls, n)) => return n,
            Ok(n) => last = Some((calls, n)),
            Err(e) if std::time::Instant::now() > deadline => panic!("{e}"),
            Err(_) => last = None,
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn dir_names(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollments_cut_short_by_their_deadline_are_whole_or_absent_and_erasable() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path()), ScriptedEmbedder::new("A")).await;
    *service.embedder.delay.lock().unwrap() = Duration::from_millis(5);
    let mut client = service.client();
    let mut cut = 0;
    for i in 0..40u64 {
        let mut request = tonic::Request::new(enroll_request("someone", &format!("emp-{i}"), i));
        request.set_timeout(Duration::from_millis(2 + i % 12));
        match client.enroll(request).await {
            Err(e) if e.code() == Code::DeadlineExceeded || e.code() == Code::Cancelled => cut += 1,
            Err(e) => panic!("enroll {i}: {e:?}"),
            Ok(_) => {}
        }
    }
    assert!(cut > 0, "no enrollment was cut short: the deadlines are too long for this machine");
    let whole = settled(&service).await;
    // Each is erasable by the id its external id gives it, whatever became of the call.
    let mut erased = 0;
    for i in 0..40u64 {
        let id = derived_id(&["external", &format!("emp-{i}")]).to_string();
        match client.forget(pb::ForgetRequest { identity_id: id }).await {
            Ok(_) => erased += 1,
            Err(e) => assert_eq!(e.code(), Code::NotFound),
        }
    }
    assert_eq!(erased, whole);
    assert_eq!(consistent(&service).await, Ok(0));
    assert!(dir_names(service.identities.crops().dir("x").parent().unwrap()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_erases_what_has_no_catalog_entry() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path()), ScriptedEmbedder::new("A")).await;
    let mut client = service.client();
    client.enroll(enroll_request("Ada", "", 1)).await.unwrap();
    let gallery = service.identities.galleries()[0].clone();
    // What an enrollment cut short before its catalog write left behind: a vector and a crop.
    let orphan = "5e1d6a0c-0000-4000-8000-000000000001";
    let vector = service.embedder.embedding("A", 9, 0);
    let payload = serde_json::json!({ "kind": "enrolled", "identity": orphan, "enrolled": true });
    let point = Point { id: derived_id(&["orphan"]), vector, payload: payload.as_object().unwrap().clone() };
    service.identities.store().upsert(&gallery.collection, vec![point]).await.unwrap();
    service.identities.crops().put(orphan, "enroll-1", &image(9, 0)).unwrap();

    let erased = client.forget(pb::ForgetRequest { identity_id: orphan.into() }).await.unwrap().into_inner();
    assert_eq!((erased.vectors_removed, erased.crops_removed), (1, 1));
    assert_eq!(stored(&service.identities, &Filter::all().keyword("identity", orphan)).await, 0);
    assert!(!service.identities.crops().dir(orphan).exists());
    let again = client.forget(pb::ForgetRequest { identity_id: orphan.into() }).await.unwrap_err();
    assert_eq!(again.code(), Code::NotFound, "nothing left: now it is not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_cut_short_is_finished_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path()), ScriptedEmbedder::new("A")).await;
    let mut client = service.client();
    let id = client.enroll(enroll_request("Ada", "", 1)).await.unwrap().into_inner().identity_id;
    // The intent is recorded first; here the process "dies" right after it.
    let point = Point {
        id: derived_id(&["erasure", &id]),
        vector: vec![1.0],
        payload: serde_json::json!({ "kind": "erasure", "identity": id }).as_object().unwrap().clone(),
    };
    service.identities.store().upsert(&catalog_collection("reid"), vec![point]).await.unwrap();
    service.stop().await;

    let service = Service::start(config(dir.path()), ScriptedEmbedder::new("A")).await;
    assert_eq!(stored(&service.identities, &Filter::all().keyword("identity", &id)).await, 0);
    assert!(!service.identities.crops().dir(&id).exists());
    let e = service.client().sightings(pb::SightingsRequest { identity_id: id, ..Default::default() }).await;
    assert_eq!(e.unwrap_err().code(), Code::NotFound);
}

/// Whether `needle` occurs in any file below `dir`.
fn on_disk(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        // The engine may remove a segment's folder between listing it and reading it: a folder
        // that is gone holds nothing.
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)) {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_never_on_disk_in_the_clear_and_unreadable_after_forget() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path()), ScriptedEmbedder::new("A")).await;
    let mut client = service.client();
    let name = "Zebulon Quixote-Marchetti";
    let id = client.enroll(enroll_request(name, "badge-7731", 1)).await.unwrap().into_inner().identity_id;
    let listed = client.list_identities(pb::ListIdentitiesRequest::default()).await.unwrap().into_inner();
    assert_eq!((listed.identities[0].name.as_str(), listed.identities[0].external_id.as_str()), (name, "badge-7731"));
    service.identities.optimize().await.unwrap();
    assert_eq!(
        on_disk(dir.path(), name.as_bytes()),
        Vec::<std::path::PathBuf>::new(),
        "the name is stored in the clear"
    );
    assert!(on_disk(dir.path(), b"badge-7731").is_empty(), "the external id is stored in the clear");
    let key = dir.path().join("keys").join(&id);
    assert!(key.is_file());
    client.forget(pb::ForgetRequest { identity_id: id }).await.unwrap();
    assert!(!key.exists(), "the key that opens every sealed copy is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_never_create_galleries_for_models_only_they_name() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path()), ScriptedEmbedder::new("A")).await;
    let mut client = service.client();
    client.enroll(enroll_request("Ada", "", 1)).await.unwrap();
    let before = service.identities.store().list_collections().await.unwrap();
    let alias = service.identities.store().resolve_alias(&reid_identity::catalog::active_alias("reid")).await.unwrap();
    for i in 0..5 {
        let model = reid_identity::model::ModelKey { id: format!("made-up-{i}"), version: "1".into(), dimension: 4 };
        let probe = embedding_probe(vec![0.5, 0.5, 0.5, 0.5], &model);
        let e = client.identify(pb::IdentifyRequest { probes: vec![probe], ..Default::default() }).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
    }
    assert_eq!(service.identities.store().list_collections().await.unwrap(), before);
    assert_eq!(
        service.identities.store().resolve_alias(&reid_identity::catalog::active_alias("reid")).await.unwrap(),
        alias
    );
}

/// A gallery's collection deleted behind the service's back (what a benchmark sharing the store
/// once did): the next start forgets that gallery and rebuilds it from the enrolled crops, and
/// listing, enrolling, identifying and forgetting all work, with nothing left half-stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gallery_whose_collection_is_gone_is_rebuilt_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let embedder = ScriptedEmbedder::new("A");
    let service = Service::start(config(dir.path()), embedder.clone()).await;
    let ada = service.client().enroll(enroll_request("Ada", "", 1)).await.unwrap().into_inner().identity_id;
    let gallery = service.identities.galleries()[0].collection.clone();
    service.stop().await;
    // Deleted while the service is down (the engine's folders are its own while it runs).
    let store = reopen_store(&dir.path().join("qdrant")).await;
    reid_vector_store::VectorStore::delete_collection(&store, &gallery).await.unwrap();
    drop(store);

    let service = Service::start(config(dir.path()), embedder.clone()).await;
    let mut client = service.client();
    let listed = client.list_identities(pb::ListIdentitiesRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.identities.len(), 1);
    let bob = client.enroll(enroll_request("Bob", "", 2)).await.unwrap().into_inner().identity_id;
    // Ada's vectors came back from her stored crops when the served model's gallery was rebuilt.
    for (person, expected) in [(1, &ada), (2, &bob)] {
        let request = pb::IdentifyRequest { probes: vec![image_probe(person, 7)], ..Default::default() };
        let found = client.identify(request).await.unwrap().into_inner();
        assert_eq!(&found.results[0].candidates[0].identity_id, expected);
    }
    assert_eq!(service.identities.galleries().len(), 1);
    client.forget(pb::ForgetRequest { identity_id: ada.clone() }).await.unwrap();
    assert_eq!(stored(&service.identities, &Filter::all().keyword("identity", &ada)).await, 0);
    let listed = client.list_identities(pb::ListIdentitiesRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.identities.iter().map(|i| i.identity_id.as_str()).collect::<Vec<_>>(), [bob.as_str()]);
}

/// The same under a running service: the gallery is dropped on the next upkeep tick and rebuilt
/// for the served model from the enrolled crops, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gallery_deleted_under_a_running_service_heals_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path()), ScriptedEmbedder::new("A")).await;
    let mut client = service.client();
    let ada = client.enroll(enroll_request("Ada", "", 1)).await.unwrap().into_inner().identity_id;
    let gallery = service.identities.galleries()[0].collection.clone();
    service.identities.store().delete_collection(&gallery).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let request = pb::IdentifyRequest { probes: vec![image_probe(1, 7)], ..Default::default() };
        match client.identify(request).await {
            Ok(found) if found.get_ref().results[0].identity_id == ada => break,
            other if std::time::Instant::now() > deadline => panic!("not healed: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let bob = client.enroll(enroll_request("Bob", "", 2)).await.unwrap().into_inner().identity_id;
    client.forget(pb::ForgetRequest { identity_id: ada.clone() }).await.unwrap();
    let listed = client.list_identities(pb::ListIdentitiesRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.identities.iter().map(|i| i.identity_id.as_str()).collect::<Vec<_>>(), [bob.as_str()]);
}
