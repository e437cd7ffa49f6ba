#![allow(clippy::unwrap_used)]
//! The identity service over real gRPC: open-set identification, cross-camera association on
//! synthetic clusters with known ground truth, erasure, retention, concurrency, feedback, model
//! change and malformed requests.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;
use reid_identity::catalog::active_alias;
use reid_identity::identities::now_ms;
use reid_proto::v1 as pb;
use reid_vector_store::Filter;
use tonic::Code;

/// View noise of the association test (see `ScriptedEmbedder::with_noise`).
const NOISY: f32 = 0.8;

type IdentifyOutcome = Result<tonic::Response<pb::IdentifyResponse>, tonic::Status>;

fn known(result: &pb::IdentifyResult) -> Option<&str> {
    (result.decision == pb::Decision::Known as i32).then_some(result.identity_id.as_str())
}

async fn enroll(
    client: &mut pb::identity_service_client::IdentityServiceClient<tonic::transport::Channel>,
    person: u64,
) -> String {
    let images = (0..3).map(|v| image(person, 1000 + v)).collect();
    let request = pb::EnrollRequest { name: format!("person {person}"), images, ..Default::default() };
    let response = client.enroll(request).await.unwrap().into_inner();
    assert_eq!(response.vectors_stored, 3);
    response.identity_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolled_people_are_known_and_strangers_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path()), ScriptedEmbedder::new("A")).await;
    let mut client = service.client();
    let mut ids = HashMap::new();
    for person in 0..20 {
        ids.insert(person, enroll(&mut client, person).await);
    }
    let probes = (0..20).map(|p| image_probe(p, 7)).chain((100..130).map(|p| image_probe(p, 7))).collect();
    let response =
        client.identify(pb::IdentifyRequest { probes, top_k: 3, ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(response.model.unwrap().version, "A");
    let mut correct = 0;
    let mut false_accepts = 0;
    for (i, result) in response.results.iter().enumerate() {
        if i < 20 {
            correct += usize::from(known(result) == Some(ids[&(i as u64)].as_str()));
            assert_eq!(result.candidates[0].name, format!("person {i}"));
            assert!(result.margin > 0.0);
        } else {
            false_accepts += usize::from(known(result).is_some());
            assert!(!result.candidates.is_empty(), "strangers still get their nearest candidates");
        }
    }
    println!("enrolled recognised {correct}/20, strangers accepted {false_accepts}/30");
    assert_eq!(correct, 20);
    assert_eq!(false_accepts, 0, "an open-set system answers unknown, not the nearest identity");
}

/// People walk past three cameras; strangers pass once. Views are noisy (cosine ~0.78 to their
/// person's centre), tracklets two to four crops long. Identity precision and recall are counted over pairs of
/// tracklets, against the ground truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_associates_tracklets_across_cameras() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path()), ScriptedEmbedder::with_noise("A", NOISY)).await;
    let mut client = service.client();
    let start = now_ms() - 3_600_000;
    let mut truth = Vec::new(); // (person, assigned identity, created)
    for round in 0..3u64 {
        for person in 0..25u64 {
            let camera = format!("cam{}", (person + round) % 3);
            let track = format!("t{round}-{person}");
            let at = start + (round as i64 * 60 + person as i64) * 1000;
            let req = tracklet(&camera, &track, person, round * 10..round * 10 + 2 + person % 3, at);
            let o = client.observe(req).await.unwrap().into_inner();
            truth.push((person, o.identity_id, o.created));
        }
    }
    let mut strangers_matched = 0;
    for stranger in 500..520u64 {
        let req = tracklet("cam1", &format!("s{stranger}"), stranger, 0..3, start + 900_000);
        let o = client.observe(req).await.unwrap().into_inner();
        strangers_matched += usize::from(!o.created);
        truth.push((stranger, o.identity_id, o.created));
    }
    let (mut tp, mut fp, mut fn_) = (0, 0, 0);
    for i in 0..truth.len() {
        for j in i + 1..truth.len() {
            let same_person = truth[i].0 == truth[j].0;
            let same_identity = truth[i].1 == truth[j].1;
            match (same_person, same_identity) {
                (true, true) => tp += 1,
                (false, true) => fp += 1,
                (true, false) => fn_ += 1,
                _ => {}
            }
        }
    }
    let precision = tp as f64 / (tp + fp).max(1) as f64;
    let recall = tp as f64 / (tp + fn_).max(1) as f64;
    let identities: HashSet<&String> = truth.iter().map(|t| &t.1).collect();
    println!(
        "pairwise identity precision {precision:.3}, recall {recall:.3}; {} identities for 45 people; {strangers_matched}/20 strangers matched to someone",
        identities.len()
    );
    assert!(precision >= 0.95, "precision {precision}");
    assert!(recall >= 0.9, "recall {recall}");
    assert!(strangers_matched <= 2, "{strangers_matched} strangers matched");

    // The timeline of person 0: three sightings on three cameras, in time order.
    let id0 = truth[0].1.clone();
    let s = client
        .sightings(pb::SightingsRequest { identity_id: id0.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let cameras: Vec<&str> = s.sightings.iter().map(|s| s.camera_id.as_str()).collect();
    assert_eq!(cameras, ["cam0", "cam1", "cam2"]);
    assert!(s.sightings.windows(2).all(|w| w[0].start.unwrap().seconds <= w[1].start.unwrap().seconds));
    assert!(s.sightings.iter().all(|s| s.r#box.is_some() && s.thumbnail.starts_with(&id0)));
    let only_cam2 = client
        .sightings(pb::SightingsRequest {
            identity_id: id0.clone(),
            cameras: vec!["cam2".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(only_cam2.sightings.len(), 1);
    let range = pb::TimeRange { start: Some(ts(start + 30_000)), end: Some(ts(start + 200_000)) };
    let in_range = client
        .sightings(pb::SightingsRequest { identity_id: id0.clone(), range: Some(range), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(in_range.sightings.len(), 2, "rounds 1 and 2 start at +60 s and +120 s");

    // A retried Observe is answered as the first time and stores nothing new.
    let again = client.observe(tracklet("cam0", "t0-0", 0, 0..4, start)).await.unwrap().into_inner();
    assert_eq!((again.identity_id.as_str(), again.created), (id0.as_str(), false));
    assert_eq!(stored(&service.identities, &Filter::all().keyword("identity", &id0)).await, 3);

    // Listing pages through every identity once.
    let mut listed = HashSet::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_identities(pb::ListIdentitiesRequest { page_size: 7, page_token: token.clone() })
            .await
            .unwrap()
            .into_inner();
        for s in &page.identities {
            assert!(listed.insert(s.identity_id.clone()));
            if s.identity_id == id0 {
                assert_eq!((s.sightings, s.cameras.len()), (3, 3));
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(listed.len(), identities.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transit_rules_keep_apart_what_cannot_be_one_person() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.association.transit =
        vec![reid_identity::config::TransitRule { from: "a".into(), to: "b".into(), min_seconds: 60.0 }];
    let service = Service::start(c, ScriptedEmbedder::new("A")).await;
    let mut client = service.client();
    let t0 = now_ms() - 600_000;
    let first = client.observe(tracklet("a", "1", 7, 0..3, t0)).await.unwrap().into_inner();
    // Ten seconds after leaving camera a: too soon to be on camera b.
    let too_soon = client.observe(tracklet("b", "1", 7, 10..13, t0 + 12_000)).await.unwrap().into_inner();
    assert!(too_soon.created);
    assert_ne!(too_soon.identity_id, first.identity_id);
    // Another person makes the same walk in three minutes: that is allowed.
    let walked = client.observe(tracklet("a", "2", 8, 0..3, t0)).await.unwrap().into_inner();
    let arrived = client.observe(tracklet("b", "2", 8, 10..13, t0 + 180_000)).await.unwrap().into_inner();
    assert!(!arrived.created);
    assert_eq!(arrived.identity_id, walked.identity_id);
}

#[tokio::test]
async fn two_tracks_of_one_camera_at_once_are_two_people() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    // Two identically looking identities would otherwise make every later match ambiguous (the
    // margin rule, off for Observe by default); this test is about the time rule.
    c.association.observe_min_margin = 0.0;
    let service = Service::start(c, ScriptedEmbedder::new("A")).await;
    let mut client = service.client();
    let t0 = now_ms() - 600_000;
    // Person 7 is tracked on camera a for 4 s; a second track there during those seconds that
    // looks the same (a twin, a reflection, the same coat) is somebody else.
    let first = client.observe(tracklet("a", "1", 7, 0..4, t0)).await.unwrap().into_inner();
    let together = client.observe(tracklet("a", "2", 7, 1..4, t0 + 1_000)).await.unwrap().into_inner();
    assert!(together.created, "a simultaneous track of the same camera joined {}", first.identity_id);
    // The same look on camera a after the first track ended (it was cut, or came back) is one person,
    // and so is the same look on another camera at the same time.
    let later = client.observe(tracklet("a", "3", 7, 4..7, t0 + 10_000)).await.unwrap().into_inner();
    assert!(!later.created);
    let elsewhere = client.observe(tracklet("b", "1", 7, 0..3, t0)).await.unwrap().into_inner();
    assert!(!elsewhere.created);
    assert!([first.identity_id.as_str(), together.identity_id.as_str()].contains(&later.identity_id.as_str()));
    // A touch of overlap (under `same_camera_overlap`, 1 s) is a tracker hand-over, not two people.
    let handover = client.observe(tracklet("a", "4", 7, 0..3, t0 + 12_500)).await.unwrap().into_inner();
    assert!(!handover.created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_observes_from_many_cameras_neither_split_nor_merge() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path()), ScriptedEmbedder::new("A")).await;
    let t0 = now_ms() - 600_000;
    let mut tasks = tokio::task::JoinSet::new();
    for camera in 0..4u64 {
        let mut client = service.client();
        tasks.spawn(async move {
            let mut out = Vec::new();
            // Each camera sees the same 15 people, in its own order.
            for k in 0..15u64 {
                let person = (k * 7 + camera * 4) % 15;
                let req = tracklet(
                    &format!("cam{camera}"),
                    &format!("{person}"),
                    person,
                    camera * 10..camera * 10 + 3,
                    t0 + 1000 * k as i64,
                );
                out.push((person, client.observe(req).await.unwrap().into_inner().identity_id));
            }
            out
        });
    }
    let mut by_person: HashMap<u64, HashSet<String>> = HashMap::new();
    while let Some(done) = tasks.join_next().await {
        for (person, identity) in done.unwrap() {
            by_person.entry(person).or_default().insert(identity);
        }
    }
    assert_eq!(by_person.len(), 15);
    assert!(by_person.values().all(|ids| ids.len() == 1), "split: {by_person:?}");
    let distinct: HashSet<&String> = by_person.values().flatten().collect();
    assert_eq!(distinct.len(), 15, "merged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path()), ScriptedEmbedder::new("A")).await;
    let mut client = service.client();
    let id = enroll(&mut client, 3).await;
    let other = enroll(&mut client, 4).await;
    let seen = client.observe(tracklet("cam0", "x", 3, 0..3, now_ms())).await.unwrap().into_inner();
    assert_eq!(seen.identity_id, id, "the enrolled person is recognised on camera");
    let reject = pb::FeedbackRequest {
        kind: pb::FeedbackKind::Reject as i32,
        identity_a: other.clone(),
        identity_b: id.clone(),
        ..Default::default()
    };
    client.feedback(reject).await.unwrap();
    assert!(service.identities.crops().dir(&id).exists());

    let erased = client.forget(pb::ForgetRequest { identity_id: id.clone() }).await.unwrap().into_inner();
    assert_eq!(erased.vectors_removed, 4, "three enrolled images and one sighting");
    assert_eq!(erased.crops_removed, 4, "three enrollment crops and one thumbnail");
    assert_eq!(stored(&service.identities, &Filter::all().keyword("identity", &id)).await, 0);
    assert!(!service.identities.crops().dir(&id).exists());
    let probe = client
        .identify(pb::IdentifyRequest { probes: vec![image_probe(3, 9)], top_k: 50, ..Default::default() })
        .await
        .unwrap();
    let result = &probe.into_inner().results[0];
    assert!(known(result).is_none());
    assert!(result.candidates.iter().all(|c| c.identity_id != id), "a search finds nothing of it");
    let sightings = client.sightings(pb::SightingsRequest { identity_id: id.clone(), ..Default::default() }).await;
    assert_eq!(sightings.unwrap_err().code(), Code::NotFound);
    assert!(service.identities.feedback_pairs().await.unwrap().is_empty(), "pairs naming it are erased too");
    let listed = client.list_identities(pb::ListIdentitiesRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.identities.iter().map(|s| s.identity_id.clone()).collect::<Vec<_>>(), vec![other.clone()]);
    let again = client.forget(pb::ForgetRequest { identity_id: id }).await.unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    assert_eq!(
        stored(&service.identities, &Filter::all().keyword("identity", &other)).await,
        3,
        "the other is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_removes_only_expired_anonymous_sightings() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.retention.anonymous_ttl = Duration::from_secs(3600);
    let service = Service::start(c, ScriptedEmbedder::new("A")).await;
    let mut client = service.client();
    let now = now_ms();
    let enrolled = enroll(&mut client, 1).await;
    let old_enrolled = client.observe(tracklet("cam0", "e", 1, 0..3, now - 7_200_000)).await.unwrap().into_inner();
    assert_eq!(old_enrolled.identity_id, enrolled);
    let old = client.observe(tracklet("cam0", "old", 2, 0..3, now - 7_200_000)).await.unwrap().into_inner();
    let recent = client.observe(tracklet("cam0", "new", 3, 0..3, now - 60_000)).await.unwrap().into_inner();
    // One person seen recently and long ago (reported late, so the sweep cannot have removed it
    // before it is matched): only the old sighting goes.
    let both_new = client.observe(tracklet("cam1", "b2", 4, 10..13, now - 30_000)).await.unwrap().into_inner();
    let both_old = client.observe(tracklet("cam1", "b1", 4, 0..3, now - 7_200_000)).await.unwrap().into_inner();
    assert_eq!(both_old.identity_id, both_new.identity_id, "{both_old:?}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // Both old anonymous sightings (of `old` and of person 4), counted when a sweep ends.
    while service.identities.metrics().expired_sightings.get() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the sweep never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sightings = |id: String| pb::SightingsRequest { identity_id: id, ..Default::default() };
    assert_eq!(client.sightings(sightings(old.identity_id.clone())).await.unwrap_err().code(), Code::NotFound);
    assert!(!service.identities.crops().dir(&old.identity_id).exists(), "its thumbnail went with it");
    assert_eq!(client.sightings(sightings(recent.identity_id)).await.unwrap().into_inner().sightings.len(), 1);
    assert_eq!(
        client.sightings(sightings(enrolled.clone())).await.unwrap().into_inner().sightings.len(),
        1,
        "enrolled people are not anonymous"
    );
    assert_eq!(stored(&service.identities, &Filter::all().keyword("identity", &enrolled)).await, 4);
    let kept = client.sightings(sightings(both_new.identity_id)).await.unwrap().into_inner().sightings;
    assert_eq!(kept.iter().map(|s| s.track_id.as_str()).collect::<Vec<_>>(), ["b2"]);
    assert_eq!(stored(&service.identities, &Filter::all().keyword("identity", &old.identity_id)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_merges_splits_and_records_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path()), ScriptedEmbedder::new("A")).await;
    let mut client = service.client();
    let t = now_ms() - 100_000;
    let a = client.observe(tracklet("cam0", "1", 10, 0..3, t)).await.unwrap().into_inner().identity_id;
    let b = client.observe(tracklet("cam1", "1", 11, 0..3, t + 5_000)).await.unwrap().into_inner().identity_id;
    assert_ne!(a, b);
    let merge = pb::FeedbackRequest {
        kind: pb::FeedbackKind::Merge as i32,
        identity_a: a.clone(),
        identity_b: b.clone(),
        ..Default::default()
    };
    assert_eq!(client.feedback(merge).await.unwrap().into_inner().identity_id, a);
    let timeline = client
        .sightings(pb::SightingsRequest { identity_id: a.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(timeline.sightings.len(), 2);
    assert!(timeline.sightings.iter().all(|s| s.thumbnail.starts_with(&a)));
    assert_eq!(
        client
            .sightings(pb::SightingsRequest { identity_id: b.clone(), ..Default::default() })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    let split = pb::FeedbackRequest {
        kind: pb::FeedbackKind::Split as i32,
        identity_a: a.clone(),
        camera_id: "cam1".into(),
        track_id: "1".into(),
        ..Default::default()
    };
    let c = client.feedback(split).await.unwrap().into_inner().identity_id;
    assert_ne!(c, a);
    let moved = client
        .sightings(pb::SightingsRequest { identity_id: c.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.sightings.iter().map(|s| s.camera_id.as_str()).collect::<Vec<_>>(), ["cam1"]);
    assert_eq!(service.identities.crops().count(&c), 1, "the thumbnail moved with the sighting");
    let pairs = service.identities.feedback_pairs().await.unwrap();
    assert_eq!(pairs.len(), 2);
    assert!(pairs.iter().any(|p| p.same && p.a == a && p.b == b));
    assert!(pairs.iter().any(|p| !p.same && p.a == a && p.b == c && p.camera == "cam1"));
    let bad = pb::FeedbackRequest { kind: 0, identity_a: a, ..Default::default() };
    assert_eq!(client.feedback(bad).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_change_reembeds_the_gallery_and_identify_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let embedder = ScriptedEmbedder::new("A");
    let service = Service::start(config(dir.path()), embedder.clone()).await;
    let mut client = service.client();
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for p in 0..6 {
            ids.push(enroll(&mut client, p).await);
        }
        ids
    };
    let model_a = embedder.key();
    let gallery_a = model_a.collection("reid");
    assert_eq!(service.identities.store().resolve_alias(&active_alias("reid")).await.unwrap(), Some(gallery_a.clone()));

    // The embedder moves to model B, slowly, so the re-embedding takes a while.
    embedder.switch_to("B");
    *embedder.delay.lock().unwrap() = Duration::from_millis(300);
    let mut migrating = service.client();
    let migration = tokio::spawn(async move {
        let r =
            migrating.identify(pb::IdentifyRequest { probes: vec![image_probe(2, 50)], ..Default::default() }).await;
        (r, now_ms())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Meanwhile clients holding model-A embeddings are answered from the A gallery.
    let mut answered_during = 0;
    for p in 0..6u64 {
        let probe = embedding_probe(embedder.embedding("A", p, 77), &model_a);
        let r = client
            .identify(pb::IdentifyRequest { probes: vec![probe], ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(known(&r.results[0]), Some(ids[p as usize].as_str()));
        answered_during += 1;
    }
    let answered_at = now_ms();
    let (result, migrated_at) = migration.await.unwrap();
    assert!(answered_at < migrated_at, "the A answers came while B was being built");
    let r = result.unwrap().into_inner();
    assert_eq!(r.model.as_ref().unwrap().version, "B");
    assert_eq!(known(&r.results[0]), Some(ids[2].as_str()), "person 2 is known under model B");
    println!("{answered_during} identifies answered during the re-embedding");

    let model_b = embedder.key();
    assert_eq!(
        service.identities.store().resolve_alias(&active_alias("reid")).await.unwrap(),
        Some(model_b.collection("reid"))
    );
    let in_b = service
        .identities
        .store()
        .count(&model_b.collection("reid"), &Filter::all().keyword("kind", "enrolled"))
        .await
        .unwrap();
    assert_eq!(in_b, 18, "every enrollment crop re-embedded");
    // Vectors of the two models never meet: an A embedding is not searched in B.
    let probe = embedding_probe(embedder.embedding("B", 4, 3), &model_b);
    let r =
        client.identify(pb::IdentifyRequest { probes: vec![probe], ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(r.model.unwrap().version, "B");
    assert_eq!(known(&r.results[0]), Some(ids[4].as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_clear_codes_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let embedder = ScriptedEmbedder::new("A");
    let service = Service::start(config(dir.path()), embedder.clone()).await;
    let mut client = service.client();
    let id = enroll(&mut client, 1).await;
    client.observe(tracklet("cam0", "t", 2, 0..3, now_ms())).await.unwrap();
    let model = embedder.key();
    let before = stored(&service.identities, &Filter::all()).await;

    let identify = |probes: Vec<pb::Probe>| pb::IdentifyRequest { probes, ..Default::default() };
    let mut nan = embedder.embedding("A", 1, 1);
    nan[3] = f32::NAN;
    let unknown_model = reid_identity::model::ModelKey { version: "never-served".into(), ..model.clone() };
    let cases: Vec<(&str, IdentifyOutcome, Code)> = vec![
        ("no probes", client.identify(identify(vec![])).await, Code::InvalidArgument),
        ("empty probe", client.identify(identify(vec![pb::Probe { query: None }])).await, Code::InvalidArgument),
        (
            "wrong dimension",
            client.identify(identify(vec![embedding_probe(vec![0.5; DIM + 1], &model)])).await,
            Code::InvalidArgument,
        ),
        ("NaN", client.identify(identify(vec![embedding_probe(nan.clone(), &model)])).await, Code::InvalidArgument),
        (
            "zero vector",
            client.identify(identify(vec![embedding_probe(vec![0.0; DIM], &model)])).await,
            Code::InvalidArgument,
        ),
        (
            "empty embedding",
            client.identify(identify(vec![embedding_probe(vec![], &model)])).await,
            Code::InvalidArgument,
        ),
        (
            "unknown model",
            client.identify(identify(vec![embedding_probe(vec![0.5; DIM], &unknown_model)])).await,
            Code::NotFound,
        ),
        (
            "corrupt image",
            client
                .identify(identify(vec![pb::Probe {
                    query: Some(pb::probe::Query::Image(pb::Image {
                        data: Some(pb::image::Data::Encoded(b"\xff\xd8junk".to_vec())),
                    })),
                }]))
                .await,
            Code::InvalidArgument,
        ),
        (
            "threshold",
            client
                .identify(pb::IdentifyRequest { probes: vec![image_probe(1, 1)], threshold: 3.0, ..Default::default() })
                .await,
            Code::InvalidArgument,
        ),
    ];
    for (what, result, code) in cases {
        let status = result.expect_err(what);
        assert_eq!(status.code(), code, "{what}: {}", status.message());
        assert!(!status.message().is_empty());
    }

    let observe = |crops: Vec<pb::TrackletCrop>, model: Option<pb::ModelRef>| pb::ObserveRequest {
        camera_id: "cam9".into(),
        track_id: "bad".into(),
        crops,
        model,
    };
    let embedded =
        |values: Vec<f32>| pb::TrackletCrop { embedding: Some(pb::Embedding { values }), ..Default::default() };
    let mixed = vec![
        embedded(embedder.embedding("A", 1, 1)),
        pb::TrackletCrop { image: Some(image(1, 1)), ..Default::default() },
    ];
    let observe_cases = vec![
        ("no crops", observe(vec![], None), Code::InvalidArgument),
        ("no model", observe(vec![embedded(embedder.embedding("A", 1, 1))], None), Code::InvalidArgument),
        ("wrong dimension", observe(vec![embedded(vec![0.1; 3])], Some(model.to_proto())), Code::InvalidArgument),
        ("NaN", observe(vec![embedded(nan)], Some(model.to_proto())), Code::InvalidArgument),
        ("unknown model", observe(vec![embedded(vec![0.5; DIM])], Some(unknown_model.to_proto())), Code::NotFound),
        ("mixed crops", observe(mixed, Some(model.to_proto())), Code::InvalidArgument),
        (
            "corrupt image",
            observe(vec![pb::TrackletCrop { image: Some(pb::Image { data: None }), ..Default::default() }], None),
            Code::InvalidArgument,
        ),
        (
            "no camera",
            pb::ObserveRequest {
                camera_id: String::new(),
                ..observe(vec![embedded(vec![0.5; DIM])], Some(model.to_proto()))
            },
            Code::InvalidArgument,
        ),
    ];
    for (what, request, code) in observe_cases {
        let status = client.observe(request).await.expect_err(what);
        assert_eq!(status.code(), code, "observe {what}: {}", status.message());
    }
    let enroll_cases = vec![
        ("no images", pb::EnrollRequest::default(), Code::InvalidArgument),
        (
            "unknown identity",
            pb::EnrollRequest {
                identity_id: "00000000-0000-0000-0000-000000000000".into(),
                images: vec![image(1, 1)],
                ..Default::default()
            },
            Code::NotFound,
        ),
        (
            "path in identity",
            pb::EnrollRequest { identity_id: "../../etc".into(), images: vec![image(1, 1)], ..Default::default() },
            Code::InvalidArgument,
        ),
        (
            "corrupt image",
            pb::EnrollRequest {
                images: vec![image(5, 1), pb::Image { data: Some(pb::image::Data::Encoded(b"GIF89a".to_vec())) }],
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
    ];
    for (what, request, code) in enroll_cases {
        let status = client.enroll(request).await.expect_err(what);
        assert_eq!(status.code(), code, "enroll {what}: {}", status.message());
    }
    assert_eq!(
        client.forget(pb::ForgetRequest { identity_id: "../x".into() }).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        client.forget(pb::ForgetRequest { identity_id: String::new() }).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        client
            .list_identities(pb::ListIdentitiesRequest { page_token: "garbage".into(), ..Default::default() })
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );

    assert_eq!(stored(&service.identities, &Filter::all()).await, before, "nothing stored changed");
    assert_eq!(service.identities.crops().count(&id), 3);
    let listed = client.list_identities(pb::ListIdentitiesRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.identities.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let embedder = ScriptedEmbedder::new("A");
    let (id, seen) = {
        let service = Service::start(config(dir.path()), embedder.clone()).await;
        let mut client = service.client();
        let id = enroll(&mut client, 8).await;
        let seen = client.observe(tracklet("cam0", "t", 9, 0..3, now_ms())).await.unwrap().into_inner().identity_id;
        service.stop().await;
        (id, seen)
    };
    let service = Service::start(config(dir.path()), embedder).await;
    let mut client = service.client();
    let r = client
        .identify(pb::IdentifyRequest { probes: vec![image_probe(8, 5), image_probe(9, 5)], ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(known(&r.results[0]), Some(id.as_str()));
    assert_eq!(known(&r.results[1]), Some(seen.as_str()));
    let listed = client.list_identities(pb::ListIdentitiesRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.identities.len(), 2);
}
