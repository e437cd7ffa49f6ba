#![allow(clippy::unwrap_used)]
//! One conformance suite, run against every `VectorStore` backend: the embedded engine always, a
//! Qdrant server when `REID_QDRANT_URL` (and optionally `REID_QDRANT_API_KEY`) names one.

use std::sync::Arc;

use reid_vector_store::{
    CollectionSpec, EdgeStore, FieldType, Filter, IndexParams, Point, PointId, QdrantServerStore, Quantization,
    SearchQuery, ServerOptions, StoreError, VectorStore,
};
use serde_json::json;

/// Opens a store; called again to check what survives a reopen.
#[async_trait::async_trait]
trait Harness: Send + Sync {
    async fn open(&self) -> Arc<dyn VectorStore>;
}

struct Edge(tempfile::TempDir);

#[async_trait::async_trait]
impl Harness for Edge {
    async fn open(&self) -> Arc<dyn VectorStore> {
        Arc::new(EdgeStore::open(self.0.path()).unwrap())
    }
}

struct Server(ServerOptions);

#[async_trait::async_trait]
impl Harness for Server {
    async fn open(&self) -> Arc<dyn VectorStore> {
        Arc::new(QdrantServerStore::connect(&self.0).await.unwrap())
    }
}

fn edge() -> Option<Box<dyn Harness>> {
    Some(Box::new(Edge(tempfile::tempdir().unwrap())))
}

fn server() -> Option<Box<dyn Harness>> {
    let Ok(url) = std::env::var("REID_QDRANT_URL") else {
        eprintln!("skipped: set REID_QDRANT_URL (and REID_QDRANT_API_KEY) to run this against a Qdrant server");
        return None;
    };
    let mut options = ServerOptions::new(url);
    options.api_key = std::env::var("REID_QDRANT_API_KEY").ok();
    Some(Box::new(Server(options)))
}

/// A collection name no other test (or earlier run against the same server) uses.
fn unique(name: &str) -> String {
    format!("conformance_{name}_{}", uuid::Uuid::new_v4().simple())
}

fn spec(name: &str) -> CollectionSpec {
    CollectionSpec::new(name, 4)
        .index("camera", FieldType::Keyword)
        .index("time", FieldType::Integer)
        .index("enrolled", FieldType::Bool)
}

fn id(n: u128) -> PointId {
    PointId::from_u128(n + 1)
}

/// `e_axis` tilted towards axis 3 by `0.01 n`, so no two points share a direction.
fn point(n: u128, axis: usize, camera: &str, time: i64) -> Point {
    let mut v = vec![0.0; 4];
    v[axis] = 1.0;
    v[3] += 0.01 * n as f32;
    let payload = json!({ "camera": camera, "time": time, "enrolled": n.is_multiple_of(2), "n": n as u64 });
    Point { id: id(n), vector: v, payload: payload.as_object().unwrap().clone() }
}

async fn seeded(store: &dyn VectorStore, name: &str) {
    assert!(store.ensure_collection(&spec(name)).await.unwrap());
    let points =
        (0..30).map(|n| point(n, (n % 3) as usize, ["a", "b", "c"][(n % 3) as usize], n as i64 * 10)).collect();
    store.upsert(name, points).await.unwrap();
}

async fn upsert_search_and_payload(h: Box<dyn Harness>) {
    let store = h.open().await;
    let c = unique("search");
    seeded(&*store, &c).await;
    let hits = store.search(&c, &SearchQuery::new(vec![0.0, 1.0, 0.0, 0.0], 5)).await.unwrap();
    assert_eq!(hits.len(), 5);
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score), "hits sorted by score");
    // The best hit is the least tilted point on axis 1: n = 1, at cosine 1 / sqrt(1 + 0.01^2).
    assert_eq!(hits[0].id, id(1));
    let expected = 1.0 / (1.0f32 + 1e-4).sqrt();
    assert!((hits[0].score - expected).abs() < 1e-5, "cosine {} != {expected}", hits[0].score);
    assert_eq!(hits[1].id, id(4), "then n = 4, the next on axis 1");
    assert_eq!(hits[0].payload["camera"], json!("b"));
    assert_eq!(hits[0].payload["time"], json!(10));
}

async fn upsert_is_idempotent(h: Box<dyn Harness>) {
    let store = h.open().await;
    let c = unique("idempotent");
    seeded(&*store, &c).await;
    let mut again = point(4, 0, "z", 1);
    again.payload.insert("retried".into(), json!(true));
    store.upsert(&c, vec![again.clone(), again]).await.unwrap();
    assert_eq!(store.count(&c, &Filter::all()).await.unwrap(), 30);
    assert_eq!(store.count(&c, &Filter::all().keyword("camera", "z")).await.unwrap(), 1);
}

async fn filters(h: Box<dyn Harness>) {
    let store = h.open().await;
    let c = unique("filters");
    seeded(&*store, &c).await;
    let query = |f: Filter| SearchQuery::new(vec![1.0, 0.0, 0.0, 0.0], 100).filter(f);
    let hits = store.search(&c, &query(Filter::all().keyword("camera", "b"))).await.unwrap();
    assert_eq!(hits.len(), 10);
    assert!(hits.iter().all(|h| h.payload["camera"] == json!("b")));
    let hits =
        store.search(&c, &query(Filter::all().keyword_in("camera", vec!["a".into(), "c".into()]))).await.unwrap();
    assert_eq!(hits.len(), 20);
    let hits = store.search(&c, &query(Filter::all().range("time", Some(50), Some(120)))).await.unwrap();
    let mut times: Vec<i64> = hits.iter().map(|h| h.payload["time"].as_i64().unwrap()).collect();
    times.sort();
    assert_eq!(times, vec![50, 60, 70, 80, 90, 100, 110], "range is [gte, lt)");
    let hits = store.search(&c, &query(Filter::all().flag("enrolled", true).not_keyword("camera", "a"))).await.unwrap();
    assert_eq!(hits.len(), 10);
    assert!(hits.iter().all(|h| h.payload["enrolled"] == json!(true) && h.payload["camera"] != json!("a")));
    assert_eq!(store.count(&c, &Filter::all().integer("time", 70)).await.unwrap(), 1);
    assert_eq!(store.count(&c, &Filter::all().keyword("camera", "nobody")).await.unwrap(), 0);
}

async fn delete_by_filter(h: Box<dyn Harness>) {
    let store = h.open().await;
    let c = unique("delete");
    seeded(&*store, &c).await;
    store.delete(&c, &Filter::all().keyword("camera", "a").range("time", None, Some(150))).await.unwrap();
    // camera a holds n = 0, 3, ..., 27; those with time < 150 are n = 0..=12: five points.
    assert_eq!(store.count(&c, &Filter::all()).await.unwrap(), 25);
    assert_eq!(store.count(&c, &Filter::all().keyword("camera", "a")).await.unwrap(), 5);
    let hits = store.search(&c, &SearchQuery::new(vec![1.0, 0.0, 0.0, 0.0], 100)).await.unwrap();
    assert!(hits.iter().all(|h| !(h.payload["camera"] == json!("a") && h.payload["time"].as_i64().unwrap() < 150)));
}

async fn scroll_and_set_payload(h: Box<dyn Harness>) {
    let store = h.open().await;
    let c = unique("scroll");
    seeded(&*store, &c).await;
    let mut seen = Vec::new();
    let mut offset = None;
    loop {
        let (page, next) = store.scroll(&c, &Filter::all(), 7, offset).await.unwrap();
        assert!(page.len() <= 7);
        seen.extend(page.into_iter().map(|r| r.id));
        match next {
            Some(n) => offset = Some(n),
            None => break,
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 30, "every point exactly once");
    let payload = json!({ "camera": "moved", "extra": 1 }).as_object().unwrap().clone();
    store.set_payload(&c, &Filter::all().keyword("camera", "c"), payload).await.unwrap();
    let moved = store.scroll_all(&c, &Filter::all().keyword("camera", "moved")).await.unwrap();
    assert_eq!(moved.len(), 10);
    assert!(
        moved.iter().all(|r| r.payload["extra"] == json!(1) && r.payload.contains_key("time")),
        "merged, not replaced"
    );
}

async fn vectors_come_back_normalised_when_asked_for(h: Box<dyn Harness>) {
    let store = h.open().await;
    let c = unique("vectors");
    seeded(&*store, &c).await;
    let plain = store.scroll_all(&c, &Filter::all().keyword("camera", "b")).await.unwrap();
    assert!(plain.iter().all(|r| r.vector.is_none()), "a plain scroll carries no vectors");
    let records = store.scroll_all_with_vectors(&c, &Filter::all().keyword("camera", "b")).await.unwrap();
    assert_eq!(records.len(), 10);
    for r in &records {
        // Point n of camera b is e_1 + 0.01 n e_3; the store keeps cosine vectors unit length.
        let n = r.payload["n"].as_f64().unwrap() as f32;
        let norm = (1.0 + (0.01 * n).powi(2)).sqrt();
        let want = [0.0, 1.0 / norm, 0.0, 0.01 * n / norm];
        let got = r.vector.as_ref().unwrap();
        assert!(got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-5), "point {n}: {got:?}, want {want:?}");
    }
    // A search returns the same vectors when asked, and none otherwise.
    let query = SearchQuery::new(vec![0.0, 1.0, 0.0, 0.0], 5).filter(Filter::all().keyword("camera", "b"));
    let plain = store.search(&c, &query).await.unwrap();
    assert!(plain.iter().all(|h| h.vector.is_none()));
    let hits = store.search(&c, &query.with_vectors(true)).await.unwrap();
    assert_eq!(hits.len(), 5);
    for hit in &hits {
        let scrolled = records.iter().find(|r| r.id == hit.id).unwrap();
        assert_eq!(hit.vector, scrolled.vector, "point {}", hit.payload["n"]);
    }
}

async fn persists_across_reopen(h: Box<dyn Harness>) {
    let c = unique("persist");
    {
        let store = h.open().await;
        seeded(&*store, &c).await;
        store.delete(&c, &Filter::all().keyword("camera", "c")).await.unwrap();
        store.set_alias(&format!("{c}_alias"), &c).await.unwrap();
    }
    let store = h.open().await;
    assert!(store.list_collections().await.unwrap().contains(&c));
    assert_eq!(store.count(&c, &Filter::all()).await.unwrap(), 20);
    assert_eq!(store.resolve_alias(&format!("{c}_alias")).await.unwrap().as_deref(), Some(c.as_str()));
    let hits = store.search(&c, &SearchQuery::new(vec![0.0, 1.0, 0.0, 0.0], 1)).await.unwrap();
    assert_eq!(hits[0].id, id(1));
    assert!(!store.ensure_collection(&spec(&c)).await.unwrap(), "exists already");
    store.delete_collection(&c).await.unwrap();
    assert!(!store.list_collections().await.unwrap().contains(&c));
}

async fn bad_input_changes_nothing(h: Box<dyn Harness>) {
    let store = h.open().await;
    let c = unique("bad");
    seeded(&*store, &c).await;
    let mut wrong_dim = point(100, 0, "a", 0);
    wrong_dim.vector.push(1.0);
    let mut nan = point(101, 0, "a", 0);
    nan.vector[1] = f32::NAN;
    let zero = Point { vector: vec![0.0; 4], ..point(102, 0, "a", 0) };
    let good = point(103, 0, "a", 0);
    assert!(matches!(
        store.upsert(&c, vec![good.clone(), wrong_dim]).await,
        Err(StoreError::DimensionMismatch { expected: 4, got: 5 })
    ));
    assert!(matches!(store.upsert(&c, vec![good.clone(), nan]).await, Err(StoreError::InvalidVector(_))));
    assert!(matches!(store.upsert(&c, vec![good, zero]).await, Err(StoreError::InvalidVector(_))));
    assert_eq!(store.count(&c, &Filter::all()).await.unwrap(), 30, "a refused batch writes nothing");
    assert!(matches!(
        store.search(&c, &SearchQuery::new(vec![1.0; 3], 1)).await,
        Err(StoreError::DimensionMismatch { .. })
    ));
    assert!(matches!(
        store.search(&unique("missing"), &SearchQuery::new(vec![1.0; 4], 1)).await,
        Err(StoreError::CollectionNotFound(_))
    ));
    assert!(matches!(
        store.ensure_collection(&CollectionSpec::new(&c, 8)).await,
        Err(StoreError::DimensionMismatch { .. })
    ));
    assert!(matches!(
        store.ensure_collection(&CollectionSpec::new("../escape", 4)).await,
        Err(StoreError::InvalidName(_))
    ));
}

async fn alias_switches(h: Box<dyn Harness>) {
    let store = h.open().await;
    let (a, b, alias) = (unique("alias_a"), unique("alias_b"), unique("alias"));
    seeded(&*store, &a).await;
    seeded(&*store, &b).await;
    assert_eq!(store.resolve_alias(&alias).await.unwrap(), None);
    store.set_alias(&alias, &a).await.unwrap();
    assert_eq!(store.resolve_alias(&alias).await.unwrap(), Some(a));
    store.set_alias(&alias, &b).await.unwrap();
    assert_eq!(store.resolve_alias(&alias).await.unwrap(), Some(b));
}

/// Uniform random 16-d vectors from a seed (xorshift), the same on every run.
fn random_vectors(seed: u64) -> impl FnMut() -> Vec<f32> {
    let mut rng = seed;
    move || {
        (0..16)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (rng >> 11) as f32 / (1u64 << 53) as f32 - 0.5
            })
            .collect()
    }
}

/// `n` random points in collection `c`, indexed.
async fn indexed_random_points(store: &dyn VectorStore, c: &str, n: u128, next: &mut impl FnMut() -> Vec<f32>) {
    let points: Vec<Point> = (0..n).map(|i| Point { id: id(i), vector: next(), payload: Default::default() }).collect();
    store.upsert(c, points).await.unwrap();
    store.optimize(c).await.unwrap();
}

/// Of 50 random queries, how many find the exact nearest point through the index.
async fn top_hits_agreeing_with_exact(store: &dyn VectorStore, c: &str, next: &mut impl FnMut() -> Vec<f32>) -> usize {
    let mut agree = 0;
    for _ in 0..50 {
        let q = next();
        let exact = store.search(c, &SearchQuery::new(q.clone(), 1).exact(true)).await.unwrap();
        let approx = store.search(c, &SearchQuery::new(q, 1)).await.unwrap();
        agree += usize::from(exact[0].id == approx[0].id);
    }
    agree
}

async fn indexed_search_agrees_with_exact(h: Box<dyn Harness>) {
    let store = h.open().await;
    let c = unique("hnsw");
    store.ensure_collection(&CollectionSpec::new(&c, 16)).await.unwrap();
    let mut next = random_vectors(0x2545F4914F6CDD1D);
    indexed_random_points(&*store, &c, 2000, &mut next).await;
    let stats = store.stats(&c).await.unwrap();
    assert_eq!(stats.points, 2000);
    assert!(stats.segments >= 1);
    let agree = top_hits_agreeing_with_exact(&*store, &c, &mut next).await;
    assert!(agree >= 48, "recall@1 of the index {agree}/50");
}

async fn index_params_are_applied_and_kept(h: Box<dyn Harness>) {
    let store = h.open().await;
    let c = unique("params");
    let params = IndexParams { m: Some(32), ef_construct: Some(256), quantization: Some(Quantization::Int8) };
    store.ensure_collection(&CollectionSpec::new(&c, 16).index_params(params)).await.unwrap();
    let plain = unique("plain");
    store.ensure_collection(&CollectionSpec::new(&plain, 16)).await.unwrap();
    let mut next = random_vectors(0x9E3779B97F4A7C15);
    indexed_random_points(&*store, &c, 1500, &mut next).await;
    let stats = store.stats(&c).await.unwrap();
    assert_eq!(stats.index_params, params);
    assert_eq!(stats.points, 1500);
    let defaults = store.stats(&plain).await.unwrap().index_params;
    assert_eq!(defaults.quantization, None);
    assert_ne!(defaults.m, Some(32));
    // Quantized search re-scores with the original vectors: the top hit is the exact one.
    let agree = top_hits_agreeing_with_exact(&*store, &c, &mut next).await;
    assert!(agree >= 45, "recall@1 with int8 quantization {agree}/50");
    drop(store);
    // The parameters belong to the collection: a reopen (or another client) sees them.
    assert_eq!(h.open().await.stats(&c).await.unwrap().index_params, params);
}

/// Against a server started with an API key: a wrong key is refused when connecting, with the
/// URL, not at the first write.
#[tokio::test]
async fn a_wrong_api_key_is_refused_at_connect() {
    let (Ok(url), Ok(_)) = (std::env::var("REID_QDRANT_URL"), std::env::var("REID_QDRANT_API_KEY")) else {
        eprintln!("skipped: needs REID_QDRANT_URL and REID_QDRANT_API_KEY (a server with a key)");
        return;
    };
    for key in [Some("not-the-key".to_owned()), None] {
        let mut options = ServerOptions::new(url.clone());
        options.api_key = key.clone();
        let error = QdrantServerStore::connect(&options).await.unwrap_err();
        let StoreError::Unauthorized(message) = &error else { panic!("{key:?}: {error:?}") };
        assert!(message.contains(&url), "{message}");
        let expected = if key.is_some() { "rejected the API key" } else { "needs an API key" };
        assert!(message.contains(expected), "{message}");
    }
}

macro_rules! conformance {
    ($backend:ident: $($test:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(harness) = super::$backend() {
                        super::$test(harness).await;
                    }
                }
            )*
        }
    };
}

conformance!(edge: upsert_search_and_payload, upsert_is_idempotent, filters, delete_by_filter, scroll_and_set_payload,
    vectors_come_back_normalised_when_asked_for, persists_across_reopen, bad_input_changes_nothing, alias_switches, indexed_search_agrees_with_exact,
    index_params_are_applied_and_kept);
conformance!(server: upsert_search_and_payload, upsert_is_idempotent, filters, delete_by_filter, scroll_and_set_payload,
    vectors_come_back_normalised_when_asked_for, persists_across_reopen, bad_input_changes_nothing, alias_switches, indexed_search_agrees_with_exact,
    index_params_are_applied_and_kept);
