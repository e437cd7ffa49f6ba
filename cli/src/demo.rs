//! `reid demo`: what exists of the pipeline, run end to end on this machine. For now that is the
//! embedder: it is started in-process on a loopback port, serves the default person model, embeds
//! the labelled face photos shipped in the face-recognition sdist over real gRPC, then hot-swaps
//! to FaceNet and embeds them again, printing who looks like whom under each model.

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

    let config =
        EmbedderConfig { model_dir: args.model_dir, watch_interval: Duration::ZERO, ..EmbedderConfig::default() };
    let listener = crate::serve::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(reid_embedder::run(config, listener, async {
        let _ = stopped.await;
    }));
    println!("embedder serving on {addr}");
    let mut client = EmbedderServiceClient::new(crate::client::connect(&addr.to_string()).await?);

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
    let _ = stop.send(());
    server.await??;
    println!("\nthe identity, ingester and trainer services are not part of this build yet: see the open issues");
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
