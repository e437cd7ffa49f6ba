#![allow(clippy::unwrap_used)]
//! `Identify` with `rerank`: a look-alike nearer by cosine loses to the query's own person, whose
//! sightings and the query are each other's nearest neighbours.

mod common;

use common::*;
use reid_identity::identities::{Tracklet, TrackletCrop};
use reid_proto::v1 as pb;

/// A direction on the circle of the first two axes, `0.2 x` radians round.
fn at(x: f32) -> Vec<f32> {
    let mut v = vec![0.0; DIM];
    v[0] = (0.2 * x).cos();
    v[1] = (0.2 * x).sin();
    v
}

#[tokio::test]
async fn re_ranked_identify_prefers_the_person_whose_neighbours_agree() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    // Neighbouring pictures of one person (0.11 rad or less apart) join; a and b (0.21) do not.
    config.association.threshold = Some(0.99);
    // Each picture of a joins a's chain by its nearest sighting (the chain is the test's setting).
    config.association.linkage = reid_identity::association::Linkage::Nearest;
    config.association.rerank = reid_identity::config::RerankConfig { k1: 3, k2: 1, lambda: 0.3 };
    let service = Service::start(config, ScriptedEmbedder::new("A")).await;
    let model = service.embedder.key();
    // Person a drifts along a chain; person b, dressed alike, stands in a tight group beyond.
    let pictures =
        [("a", 0.25), ("a", 0.8), ("a", 1.35), ("a", 1.9), ("a", 2.45), ("b", 3.5), ("b", 3.6), ("b", 3.7), ("b", 3.8)];
    // Ten seconds apart, ending a minute ago: inside the retention time the upkeep ticks enforce.
    let t0 = reid_identity::identities::now_ms() - 60_000 - 10_000 * pictures.len() as i64;
    let mut identity = std::collections::BTreeMap::new();
    for (i, &(who, x)) in pictures.iter().enumerate() {
        let crop = TrackletCrop {
            image: None,
            embedding: Some(at(x)),
            quality: 1.0,
            bbox: None,
            at_ms: Some(t0 + i as i64 * 10_000),
        };
        let tracklet =
            Tracklet { camera: "cam".into(), track: format!("t{i}"), crops: vec![crop], model: Some(model.clone()) };
        let observed = service.identities.observe(tracklet).await.unwrap();
        identity.entry(who).or_insert_with(std::collections::BTreeSet::new).insert(observed.identity);
    }
    assert!(identity.values().all(|ids| ids.len() == 1), "one identity a person: {identity:?}");
    let (a, b) = (identity["a"].first().unwrap().clone(), identity["b"].first().unwrap().clone());

    // The query is a at 3.0: 0.10 rad from b's first picture, 0.11 from a's last.
    let ask = |rerank: bool| pb::IdentifyRequest {
        probes: vec![embedding_probe(at(3.0), &model)],
        threshold: 0.99,
        rerank,
        ..Default::default()
    };
    let mut client = service.client();
    let plain = client.identify(ask(false)).await.unwrap().into_inner();
    let reranked = client.identify(ask(true)).await.unwrap().into_inner();
    let order =
        |r: &pb::IdentifyResponse| r.results[0].candidates.iter().map(|c| c.identity_id.clone()).collect::<Vec<_>>();
    assert_eq!(order(&plain), [b.clone(), a.clone()], "by cosine the look-alike leads");
    assert_eq!(order(&reranked), [a.clone(), b], "re-ranked, the query's person leads");
    let result = &reranked.results[0];
    assert_eq!(result.decision(), pb::Decision::Known);
    assert_eq!(result.identity_id, a);
    // Scores stay cosine similarities: a's best is its picture 0.11 rad away.
    assert!((result.candidates[0].score - (0.2f32 * 0.55).cos()).abs() < 1e-5);
    service.stop().await;
}
