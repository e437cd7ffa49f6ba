#![allow(clippy::unwrap_used)]
//! Two identity replicas over one store, observing at the same time: the embedded engine shared by
//! two services in this process, and a Qdrant server when `REID_QDRANT_URL` names one.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::*;
use reid_identity::embedder::EmbedderClient;
use reid_identity::identities::{Identities, Tracklet, TrackletCrop};
use reid_identity::metrics::IdentityMetrics;
use reid_vector_store::{
    CollectionSpec, CollectionStats, EdgeStore, Filter, Hit, Payload, Point, PointId, QdrantServerStore, Record,
    SearchQuery, ServerOptions, StoreResult, VectorStore,
};

/// A store whose writes take a while (150 ms), as a loaded server's do: two replicas that start
/// observing one person at the same moment then both search before either writes, which is the
/// race under test, every time instead of now and then.
struct SlowWrites(Arc<dyn VectorStore>);

#[async_trait::async_trait]
impl VectorStore for SlowWrites {
    fn backend(&self) -> &'static str {
        self.0.backend()
    }
    async fn ensure_collection(&self, spec: &CollectionSpec) -> StoreResult<bool> {
        self.0.ensure_collection(spec).await
    }
    async fn list_collections(&self) -> StoreResult<Vec<String>> {
        self.0.list_collections().await
    }
    async fn delete_collection(&self, name: &str) -> StoreResult<()> {
        self.0.delete_collection(name).await
    }
    async fn upsert(&self, collection: &str, points: Vec<Point>) -> StoreResult<()> {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        self.0.upsert(collection, points).await
    }
    async fn search(&self, collection: &str, query: &SearchQuery) -> StoreResult<Vec<Hit>> {
        self.0.search(collection, query).await
    }
    async fn scroll_page(
        &self,
        collection: &str,
        filter: &Filter,
        limit: usize,
        offset: Option<PointId>,
        with_vectors: bool,
    ) -> StoreResult<(Vec<Record>, Option<PointId>)> {
        self.0.scroll_page(collection, filter, limit, offset, with_vectors).await
    }
    async fn count(&self, collection: &str, filter: &Filter) -> StoreResult<u64> {
        self.0.count(collection, filter).await
    }
    async fn delete(&self, collection: &str, filter: &Filter) -> StoreResult<()> {
        self.0.delete(collection, filter).await
    }
    async fn set_payload(&self, collection: &str, filter: &Filter, payload: Payload) -> StoreResult<()> {
        self.0.set_payload(collection, filter, payload).await
    }
    async fn set_alias(&self, alias: &str, collection: &str) -> StoreResult<()> {
        self.0.set_alias(alias, collection).await
    }
    async fn resolve_alias(&self, alias: &str) -> StoreResult<Option<String>> {
        self.0.resolve_alias(alias).await
    }
    async fn stats(&self, collection: &str) -> StoreResult<CollectionStats> {
        self.0.stats(collection).await
    }
    async fn optimize(&self, collection: &str) -> StoreResult<()> {
        self.0.optimize(collection).await
    }
}

const PEOPLE: u64 = 12;
const ROUNDS: u64 = 4;

fn observed(camera: &str, track: &str, person: u64, round: u64, at_ms: i64) -> Tracklet {
    let crops = (0..3)
        .map(|i| TrackletCrop {
            image: Some(image(person, round * 10 + i)),
            embedding: None,
            quality: 0.5,
            bbox: Some([10.0, 20.0, 64.0, 128.0]),
            at_ms: Some(at_ms + 1000 * i as i64),
        })
        .collect();
    Tracklet { camera: camera.into(), track: track.into(), crops, model: None }
}

/// Every person is seen by both cameras in every round, each camera's tracklet observed by its
/// own replica at the same moment: the race in which both replicas find nobody and each starts an
/// identity. In the end each person is one identity, no identity holds two people, and no
/// sighting is lost.
async fn concurrent_observes_make_one_identity_per_person(store: Arc<dyn VectorStore>, namespace: &str) {
    let store: Arc<dyn VectorStore> = Arc::new(SlowWrites(store));
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.namespace = namespace.into();
    let embedder = ScriptedEmbedder::new("A");
    let replica = || async {
        let embedder = embedder.clone() as Arc<dyn EmbedderClient>;
        Arc::new(Identities::open(config.clone(), store.clone(), Some(embedder), IdentityMetrics::new()).await.unwrap())
    };
    let (west, east) = (replica().await, replica().await);
    let base = 1_700_000_000_000i64;
    // One person at a time, both cameras at once. (With every person's pair in flight together,
    // each replica's lock queued them in its own order, and a person whose two tracklets were far
    // apart in the two queues raced nobody: about one run in six saw no race at all.)
    for round in 0..ROUNDS {
        for person in 0..PEOPLE {
            let at = base + 60_000 * round as i64;
            let a = observed("west", &format!("w{round}-{person}"), person, round, at);
            let b = observed("east", &format!("e{round}-{person}"), person, round, at);
            let (x, y) = tokio::join!(west.observe(a), east.observe(b));
            x.unwrap();
            y.unwrap();
        }
    }

    let gallery = west.galleries()[0].collection.clone();
    let sightings = store.scroll_all(&gallery, &Filter::all().keyword("kind", "sighting")).await.unwrap();
    assert_eq!(sightings.len() as u64, 2 * PEOPLE * ROUNDS, "a sighting was lost");
    let mut of_person: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for s in &sightings {
        let track = s.payload["track"].as_str().unwrap();
        let person: u64 = track.split('-').nth(1).unwrap().parse().unwrap();
        of_person.entry(person).or_default().insert(s.payload["identity"].as_str().unwrap().to_owned());
    }
    for (person, identities) in &of_person {
        assert_eq!(identities.len(), 1, "person {person} was split into {identities:?}");
    }
    let distinct: BTreeSet<&String> = of_person.values().flatten().collect();
    assert_eq!(distinct.len() as u64, PEOPLE, "two people share an identity");
    // The catalog agrees: one entry per person, none left over from a merged start.
    let (listed, _) = east.list(1000, None).await.unwrap();
    let listed: BTreeSet<&String> = listed.iter().map(|s| &s.entry.identity).collect();
    assert_eq!(listed, distinct);
    let merges = west.metrics().replica_merges.get() + east.metrics().replica_merges.get();
    // Every person's first pair raced, and at least one of its two replicas saw the race.
    assert!(merges >= PEOPLE, "only {merges} races merged for {PEOPLE} people, so this test showed little");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edge() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn VectorStore> = Arc::new(EdgeStore::open(dir.path()).unwrap());
    concurrent_observes_make_one_identity_per_person(store, "reid").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server() {
    let Ok(url) = std::env::var("REID_QDRANT_URL") else {
        eprintln!("skipped: set REID_QDRANT_URL (and REID_QDRANT_API_KEY) to run this against a Qdrant server");
        return;
    };
    let mut options = ServerOptions::new(url);
    options.api_key = std::env::var("REID_QDRANT_API_KEY").ok();
    let store: Arc<dyn VectorStore> = Arc::new(QdrantServerStore::connect(&options).await.unwrap());
    let namespace = format!("replicas_{}", uuid::Uuid::new_v4().simple());
    concurrent_observes_make_one_identity_per_person(store.clone(), &namespace).await;
    for name in store.list_collections().await.unwrap() {
        if name.starts_with(&namespace) {
            store.delete_collection(&name).await.unwrap();
        }
    }
}
