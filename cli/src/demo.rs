//! `reid demo`: what exists of the pipeline, run end to end on this machine. For now: the embedder
//! is started in-process on a loopback port, serves the default person model, embeds the labelled
//! face photos shipped in the face-recognition sdist over real gRPC, then hot-swaps to FaceNet and
//! embeds them again, printing who looks like whom under each model; then the trainer trains the
//! small CNN on a Fashion-MNIST subset for two epochs, publishes it into the embedder's model
//! folder, and the embedder swaps it in.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use reid_embedder::EmbedderConfig;
use reid_proto::v1 as pb;
use reid_proto::v1::embedder_service_client::EmbedderServiceClient;

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[arg(long, default_value = "models")]
    model_dir: PathBuf,
    /// Folder of photos to compare.
    #[arg(long, default_value = ".cache/data/face_recognition/test_images")]
    images: PathBuf,
    /// Where the demo's training run goes.
    #[arg(long, default_value = "runs/demo")]
    runs_dir: PathBuf,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let mut photos: Vec<PathBuf> = std::fs::read_dir(&args.images)
        .with_context(|| format!("reading {} (run `make setup`)", args.images.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    photos.sort();
    let images = photos
        .iter()
        .map(|p| Ok(pb::Image { data: Some(pb::image::Data::Encoded(std::fs::read(p)?)) }))
        .collect::<std::io::Result<Vec<_>>>()?;

    let config = EmbedderConfig {
        model_dir: args.model_dir.clone(),
        watch_interval: Duration::ZERO,
        ..EmbedderConfig::default()
    };
    let server = crate::serve::InProcessEmbedder::start(config).await?;
    println!("embedder serving on {}", server.addr);
    let mut client = EmbedderServiceClient::new(crate::client::connect(&server.addr).await?);

    for model in ["mobilenetv2-imagenet", "facenet"] {
        let loaded = client
            .load_model(pb::LoadModelRequest { name: model.into() })
            .await
            .map_err(|s| anyhow::anyhow!("loading {model}: {}", s.message()))?
            .into_inner();
        let info = loaded.model.unwrap_or_default();
        let r = info.r#ref.unwrap_or_default();
        println!(
            "\nmodel {} version {} ({}-d, {} on {}), threshold {:.2}",
            r.id, r.version, r.dimension, info.backend, info.device, info.match_threshold
        );
        let response = client
            .embed(pb::EmbedRequest { images: images.clone(), request_id: model.into() })
            .await
            .map_err(|s| anyhow::anyhow!("embedding with {model}: {}", s.message()))?
            .into_inner();
        print_similarities(&photos, &response.embeddings, info.match_threshold);
    }
    train_and_publish(&args, &mut client).await?;
    server.stop().await?;
    println!("\nthe identity and ingester services are not part of this build yet: see the open issues");
    Ok(ExitCode::SUCCESS)
}

fn print_similarities(photos: &[PathBuf], embeddings: &[pb::Embedding], threshold: f32) {
    let names: Vec<String> = photos
        .iter()
        .map(|p| p.file_stem().map(|s| s.to_string_lossy().chars().take(10).collect()).unwrap_or_default())
        .collect();
    print!("{:>12}", "cosine");
    for n in &names {
        print!("{n:>11}");
    }
    println!();
    for (i, a) in embeddings.iter().enumerate() {
        print!("{:>12}", names[i]);
        for b in embeddings {
            let cos: f32 = a.values.iter().zip(&b.values).map(|(x, y)| x * y).sum();
            let mark = if cos >= threshold { '*' } else { ' ' };
            print!("{cos:>10.3}{mark}");
        }
        println!();
    }
    println!("(* = at or above the model's match threshold; whole photos, no face detection yet)");
}

/// Trains the small CNN briefly, publishes it into the embedder's model folder and swaps it in.
async fn train_and_publish(
    args: &DemoArgs,
    client: &mut EmbedderServiceClient<reid_server::Channel>,
) -> anyhow::Result<()> {
    println!("\ntraining the small CNN (28x28 -> 10-d, triplet loss, batch-all mining) on a Fashion-MNIST subset");
    let config = reid_trainer::TrainConfig::parse(
        "name = \"demo-fmnist\"\n[dataset]\nkind = \"fashion_mnist\"\ntrain_per_class = 1000\neval_per_class = 200\n\
         [miner]\nkind = \"batch_all\"\n[sampler]\np = 5\nk = 8\n[training]\nepochs = 2\nverification_items = 500\n",
    )?;
    let dir = args.runs_dir.join(reid_trainer::run_id("demo"));
    let run_dir = dir.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        reid_trainer::train(
            &config,
            &run_dir,
            &mut |e| {
                if let reid_trainer::Event::Epoch(r) = e {
                    println!(
                        "  epoch {}: loss {:.4}, active triplets {:.2}, unseen classes: Recall@1 {:.3}, mAP {:.3}",
                        r.epoch, r.loss, r.active_fraction, r.rank1, r.map
                    );
                }
            },
            &std::sync::atomic::AtomicBool::new(false),
        )
    })
    .await??;
    let (version, path) = reid_trainer::publish::publish(&outcome.dir, &args.model_dir, "demo-fmnist")?;
    println!("published {} as {}", path.display(), version);
    let loaded = client
        .load_model(pb::LoadModelRequest { name: "demo-fmnist".into() })
        .await
        .map_err(|s| anyhow::anyhow!("loading the trained model: {}", s.message()))?
        .into_inner();
    let info = loaded.model.unwrap_or_default();
    println!(
        "the embedder now serves {} {} ({}-d, threshold {:.3}); plots in {}",
        info.r#ref.as_ref().map(|r| r.id.as_str()).unwrap_or("?"),
        info.r#ref.as_ref().map(|r| r.version.as_str()).unwrap_or("?"),
        info.r#ref.as_ref().map_or(0, |r| r.dimension),
        info.match_threshold,
        outcome.dir.join("plots").display()
    );
    Ok(())
}
