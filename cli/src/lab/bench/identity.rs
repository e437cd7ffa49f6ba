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
    /// A Qdrant server to measure instead of the embedded engine. Only this flag selects one
    /// (never REID_QDRANT_URL, which names a deployment's server): the benchmark writes only to
    /// collections of its own namespace there, `reid_bench_<pid>`, and deletes them when done.
    #[arg(long)]
    qdrant_url: Option<String>,
    /// The server's API key, from a file.
    #[arg(long)]
    qdrant_api_key_file: Option<std::path::PathBuf>,
    /// HNSW edges per node of the galleries (the engine's default, 16, when unset).
    #[arg(long)]
    hnsw_m: Option<usize>,
    /// HNSW beam width while building (the engine's default, 100, when unset).
    #[arg(long)]
    ef_construct: Option<usize>,
    /// Quantize the galleries' vectors to int8 (originals kept for re-scoring).
    #[arg(long)]
    int8: bool,
    /// HNSW beam widths at search time to measure, each as the identity service's
    /// `association.hnsw_ef`, over the same index; the engine's default when none.
    #[arg(long, value_delimiter = ',')]
    hnsw_ef: Vec<usize>,
    /// Draw the identities' centres from a random subspace of this dimension (learned embeddings
    /// have a low intrinsic dimension); isotropic in all `dim` dimensions when unset.
    #[arg(long)]
    latent_dim: Option<usize>,
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

/// The benchmark's own namespace: it never reads or writes a deployment's collections.
fn namespace() -> String {
    format!("reid_bench_{}", std::process::id())
}

pub async fn run(args: IdentityBenchArgs) -> anyhow::Result<ExitCode> {
    let api_key = args.qdrant_api_key_file.as_deref().map(crate::client::read_key).transpose()?;
    let backend = match &args.qdrant_url {
        Some(url) => format!("qdrant server {url}, namespace {}", namespace()),
        None => "embedded engine (qdrant-edge)".to_owned(),
    };
    let shape = match args.latent_dim {
        Some(latent) => format!("centres on a random {latent}-d subspace"),
        None => "isotropic centres".to_owned(),
    };
    let index = index_params(&args);
    println!(
        "identify benchmark: {backend}, dim {}, {shape}, {} views per identity, {} queries per size; HNSW m {}, \
         ef_construct {}{}",
        args.dim,
        args.views,
        args.queries,
        index.m.map_or("default".to_owned(), |m| m.to_string()),
        index.ef_construct.map_or("default".to_owned(), |ef| ef.to_string()),
        if args.int8 { ", int8 quantization" } else { "" },
    );
    println!(
        "{:>9}  {:>8}  {:>8}  {:>8}  {:>6}  {:>7}  {:>7}  {:>8}  {:>8}  {:>8}",
        "vectors", "load s", "index s", "indexed", "ef", "p50 ms", "p99 ms", "recall@1", "same id", "exact ms"
    );
    for &size in &args.sizes {
        let result = measure(&args, api_key.clone(), size).await;
        if args.qdrant_url.is_some() {
            // Whatever happened, the server is left as it was found.
            clean_up(&args, api_key.clone()).await?;
        }
        result?;
    }
    println!("indexed: share of vectors in an HNSW index; ef: HNSW beam width at search time (- is the engine's");
    println!("default, 100); p50/p99: Identify over gRPC, one embedding probe, top 5, one call in flight; recall@1:");
    println!("HNSW top hit equal to the exact brute-force top hit over the same vectors; same id: the two top hits");
    println!("belong to the same identity; exact ms: one brute-force search.");
    Ok(ExitCode::SUCCESS)
}

fn index_params(args: &IdentityBenchArgs) -> reid_vector_store::IndexParams {
    reid_vector_store::IndexParams {
        m: args.hnsw_m,
        ef_construct: args.ef_construct,
        quantization: args.int8.then_some(reid_vector_store::Quantization::Int8),
    }
}

/// Deletes every collection of the benchmark's namespace on the server.
async fn clean_up(args: &IdentityBenchArgs, api_key: Option<String>) -> anyhow::Result<()> {
    let store = open_store(&config(args, api_key, std::path::Path::new("."), None)).await?;
    let prefix = format!("{}_", namespace());
    for name in store.list_collections().await?.into_iter().filter(|n| n.starts_with(&prefix)) {
        store.delete_collection(&name).await.with_context(|| format!("deleting the benchmark's {name}"))?;
    }
    Ok(())
}

fn config(
    args: &IdentityBenchArgs,
    api_key: Option<String>,
    data_dir: &std::path::Path,
    hnsw_ef: Option<usize>,
) -> IdentityConfig {
    let mut config = IdentityConfig {
        data_dir: data_dir.to_path_buf(),
        qdrant_url: args.qdrant_url.clone(),
        qdrant_api_key: api_key,
        namespace: namespace(),
        index: index_params(args),
        ..IdentityConfig::default()
    };
    config.association.hnsw_ef = hnsw_ef;
    // The index is built before timing; no background upkeep during the measurement.
    config.retention.sweep_interval = Duration::from_secs(24 * 3600);
    config
}

async fn measure(args: &IdentityBenchArgs, api_key: Option<String>, size: usize) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let data_dir = args.data.clone().unwrap_or_else(|| scratch.path().to_path_buf()).join(format!("bench-{size}"));
    let _ = std::fs::remove_dir_all(&data_dir);
    let loader_config = config(args, api_key.clone(), &data_dir, None);
    let store = open_store(&loader_config).await?;
    let loader = Identities::open(loader_config, store.clone(), None, IdentityMetrics::new()).await?;
    // A model version per run, so a server keeps the sizes apart.
    let model = ModelKey { id: "bench".into(), version: format!("{size}-{}", std::process::id()), dimension: args.dim };

    let mut rng = StdRng::seed_from_u64(size as u64);
    let n_identities = size.div_ceil(args.views);
    let basis: Option<Vec<Vec<f32>>> =
        args.latent_dim.map(|latent| (0..latent).map(|_| (0..args.dim).map(|_| normal(&mut rng)).collect()).collect());
    let centre = |rng: &mut StdRng| -> Vec<f32> {
        match &basis {
            Some(basis) => {
                let mut v = vec![0.0f32; args.dim];
                for row in basis {
                    let w = normal(rng);
                    v.iter_mut().zip(row).for_each(|(x, b)| *x += w * b);
                }
                unit(v)
            }
            None => unit((0..args.dim).map(|_| normal(rng)).collect()),
        }
    };
    let centres: Vec<Vec<f32>> = (0..n_identities).map(|_| centre(&mut rng)).collect();
    let started = Instant::now();
    let mut loaded = 0;
    while loaded < size {
        let chunk = (size - loaded).min(20_000);
        let rows = (loaded..loaded + chunk)
            .map(|k| (format!("bench-{}", k / args.views), view(&centres[k / args.views], &mut rng)))
            .collect();
        loader.import(&model, rows).await.context("importing the gallery")?;
        loaded += chunk;
    }
    let load_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    loader.optimize().await?;
    let index_s = started.elapsed().as_secs_f64();
    let collection = model.collection(&namespace());
    let stats = store.stats(&collection).await?;
    drop(loader);

    let probes: Vec<Vec<f32>> =
        (0..args.queries).map(|_| view(&centres[rng.gen_range(0..n_identities)], &mut rng)).collect();
    let identity = |h: Option<&reid_vector_store::Hit>| h.and_then(|h| h.payload.get("identity").cloned());
    let mut exact = Vec::with_capacity(probes.len());
    let started = Instant::now();
    for v in &probes {
        exact.push(store.search(&collection, &SearchQuery::new(v.clone(), 1).exact(true)).await?);
    }
    let exact_ms = started.elapsed().as_secs_f64() * 1e3 / probes.len() as f64;

    let efs: Vec<Option<usize>> =
        if args.hnsw_ef.is_empty() { vec![None] } else { args.hnsw_ef.iter().map(|&ef| Some(ef)).collect() };
    for ef in efs {
        // The service as deployed with `association.hnsw_ef = ef`, over the gallery built above.
        let config = config(args, api_key.clone(), &data_dir, ef);
        let identities = Arc::new(Identities::open(config, store.clone(), None, IdentityMetrics::new()).await?);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(reid_identity::serve(
            identities,
            GrpcServer::new(vec![reid_identity::SERVICE_NAME]),
            listener,
            async {
                let _ = stopped.await;
            },
        ));
        let mut client = IdentityServiceClient::connect(format!("http://{addr}")).await?;
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
        let _ = stop.send(());
        server.await??;

        let (mut agree, mut same_identity) = (0, 0);
        for (v, exact) in probes.iter().zip(&exact) {
            let query = SearchQuery { hnsw_ef: ef, ..SearchQuery::new(v.clone(), 1) };
            let approx = store.search(&collection, &query).await?;
            agree += usize::from(approx.first().map(|h| h.id) == exact.first().map(|h| h.id));
            same_identity += usize::from(identity(approx.first()) == identity(exact.first()));
        }
        println!(
            "{:>9}  {:>8.1}  {:>8.1}  {:>7.1}%  {:>6}  {:>7.2}  {:>7.2}  {:>8.4}  {:>8.4}  {:>8.1}",
            size,
            load_s,
            index_s,
            100.0 * stats.indexed_vectors as f64 / stats.points.max(1) as f64,
            ef.map_or("-".to_owned(), |ef| ef.to_string()),
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            agree as f64 / probes.len() as f64,
            same_identity as f64 / probes.len() as f64,
            exact_ms,
        );
    }
    println!("{:>9}  {} segments", "", stats.segments);
    Ok(())
}
