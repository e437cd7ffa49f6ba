//! `reid bench identity`: `Identify` latency (p50, p99) through the gRPC identity service at
//! several gallery sizes, and, in the same run, recall@1 of the HNSW index against exact
//! brute-force search over the same vectors. The gallery is synthetic: identities with several
//! noisy views each, like a re-ID gallery.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rand::{Rng, SeedableRng, rngs::StdRng};
use reid_identity::identities::Identities;
use reid_identity::metrics::IdentityMetrics;
use reid_identity::model::ModelKey;
use reid_identity::{IdentityConfig, open_store};
use reid_proto::v1 as pb;
use reid_proto::v1::identity_service_client::IdentityServiceClient;
use reid_server::GrpcServer;
use reid_vector_store::SearchQuery;

#[derive(Debug, Args)]
pub struct IdentityBenchArgs {
    /// Gallery sizes (vectors) to measure, each in a fresh store.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    sizes: Vec<usize>,
    /// Embedding dimension.
    #[arg(long, default_value_t = 512)]
    dim: usize,
    /// Views (vectors) per synthetic identity.
    #[arg(long, default_value_t = 4)]
    views: usize,
    /// Identify calls timed per size, and queries checked against brute force.
    #[arg(long, default_value_t = 500)]
    queries: usize,
    /// A Qdrant server to measure instead of the embedded engine.
    #[arg(long, env = "REID_QDRANT_URL")]
    qdrant_url: Option<String>,
    #[arg(long, env = "REID_QDRANT_API_KEY", hide_env_values = true)]
    qdrant_api_key: Option<String>,
    /// HNSW beam width at search time (the identity service's `association.hnsw_ef`); the
    /// engine's default when unset.
    #[arg(long)]
    hnsw_ef: Option<usize>,
    /// Where the embedded engine stores the galleries (a temporary folder when unset).
    #[arg(long)]
    data: Option<std::path::PathBuf>,
}

/// Approximately standard normal: the sum of four uniforms, centred and scaled.
fn normal(rng: &mut StdRng) -> f32 {
    ((0..4).map(|_| rng.r#gen::<f32>()).sum::<f32>() - 2.0) * 1.732
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// A view of identity `i`: its centre plus noise of length ~0.6 (cosine ~0.85 to the centre).
fn view(centre: &[f32], rng: &mut StdRng) -> Vec<f32> {
    let scale = 0.6 / (centre.len() as f32).sqrt();
    unit(centre.iter().map(|c| c + scale * normal(rng)).collect())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub async fn run(args: IdentityBenchArgs) -> anyhow::Result<ExitCode> {
    let backend = if args.qdrant_url.is_some() { "qdrant server" } else { "embedded engine (qdrant-edge)" };
    println!(
        "identify benchmark: {backend}, dim {}, {} views per identity, {} queries per size",
        args.dim, args.views, args.queries
    );
    println!(
        "{:>9}  {:>8}  {:>8}  {:>9}  {:>7}  {:>7}  {:>8}  {:>8}  {:>8}",
        "vectors", "load s", "index s", "indexed", "p50 ms", "p99 ms", "recall@1", "same id", "exact ms"
    );
    for &size in &args.sizes {
        let scratch = tempfile::tempdir()?;
        let data_dir = args.data.clone().unwrap_or_else(|| scratch.path().to_path_buf()).join(format!("bench-{size}"));
        let _ = std::fs::remove_dir_all(&data_dir);
        let mut config = IdentityConfig {
            data_dir: data_dir.clone(),
            qdrant_url: args.qdrant_url.clone(),
            qdrant_api_key: args.qdrant_api_key.clone(),
            ..IdentityConfig::default()
        };
        config.association.hnsw_ef = args.hnsw_ef;
        // The index is built before timing; no background upkeep during the measurement.
        config.retention.sweep_interval = Duration::from_secs(24 * 3600);
        let store = open_store(&config).await?;
        let identities = Arc::new(Identities::open(config, store.clone(), None, IdentityMetrics::new()).await?);
        // A model version per run, so a server keeps the sizes apart.
        let model =
            ModelKey { id: "bench".into(), version: format!("{size}-{}", std::process::id()), dimension: args.dim };

        let mut rng = StdRng::seed_from_u64(size as u64);
        let n_identities = size.div_ceil(args.views);
        let centres: Vec<Vec<f32>> =
            (0..n_identities).map(|_| unit((0..args.dim).map(|_| normal(&mut rng)).collect())).collect();
        let started = Instant::now();
        let mut loaded = 0;
        while loaded < size {
            let chunk = (size - loaded).min(20_000);
            let rows = (loaded..loaded + chunk)
                .map(|k| (format!("bench-{}", k / args.views), view(&centres[k / args.views], &mut rng)))
                .collect();
            identities.import(&model, rows).await.context("importing the gallery")?;
            loaded += chunk;
        }
        let load_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        identities.optimize().await?;
        let index_s = started.elapsed().as_secs_f64();
        let stats = store.stats(&model.collection()).await?;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(reid_identity::serve(
            identities.clone(),
            GrpcServer::new(vec![reid_identity::SERVICE_NAME]),
            listener,
            async {
                let _ = stopped.await;
            },
        ));
        let mut client = IdentityServiceClient::connect(format!("http://{addr}")).await?;
        let probes: Vec<Vec<f32>> =
            (0..args.queries).map(|_| view(&centres[rng.gen_range(0..n_identities)], &mut rng)).collect();
        let identify = |v: Vec<f32>| pb::IdentifyRequest {
            probes: vec![pb::Probe {
                query: Some(pb::probe::Query::Embedding(pb::EmbeddingWithModel {
                    embedding: Some(pb::Embedding { values: v }),
                    model: Some(model.to_proto()),
                })),
            }],
            top_k: 5,
            ..Default::default()
        };
        for v in probes.iter().take(20) {
            client.identify(identify(v.clone())).await?;
        }
        let mut latencies = Vec::with_capacity(probes.len());
        for v in &probes {
            let t = Instant::now();
            client.identify(identify(v.clone())).await?;
            latencies.push(t.elapsed());
        }
        latencies.sort();

        let collection = model.collection();
        let (mut agree, mut same_identity) = (0, 0);
        let mut exact_time = Duration::ZERO;
        let identity = |h: Option<&reid_vector_store::Hit>| h.and_then(|h| h.payload.get("identity").cloned());
        for v in &probes {
            let query = SearchQuery { hnsw_ef: args.hnsw_ef, ..SearchQuery::new(v.clone(), 1) };
            let approx = store.search(&collection, &query).await?;
            let t = Instant::now();
            let exact = store.search(&collection, &SearchQuery::new(v.clone(), 1).exact(true)).await?;
            exact_time += t.elapsed();
            agree += usize::from(approx.first().map(|h| h.id) == exact.first().map(|h| h.id));
            same_identity += usize::from(identity(approx.first()) == identity(exact.first()));
        }
        let _ = stop.send(());
        server.await??;
        if args.qdrant_url.is_some() {
            store.delete_collection(&collection).await?;
        }
        println!(
            "{:>9}  {:>8.1}  {:>8.1}  {:>8.1}%  {:>7.2}  {:>7.2}  {:>8.4}  {:>8.4}  {:>8.1}",
            size,
            load_s,
            index_s,
            100.0 * stats.indexed_vectors as f64 / stats.points.max(1) as f64,
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            agree as f64 / probes.len() as f64,
            same_identity as f64 / probes.len() as f64,
            exact_time.as_secs_f64() * 1e3 / probes.len() as f64,
        );
        println!("           {} segments, {} points", stats.segments, stats.points);
    }
    println!("indexed: share of vectors in an HNSW index; p50/p99: Identify over gRPC, one embedding probe, top 5,");
    println!(
        "one call in flight; recall@1: HNSW top hit equal to the exact brute-force top hit over the same vectors;"
    );
    println!("same id: the two top hits belong to the same identity; exact ms: one brute-force search.");
    Ok(ExitCode::SUCCESS)
}
