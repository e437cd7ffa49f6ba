//! Client verbs of the identity service: `reid enroll`, `reid identify`, `reid forget`,
//! `reid sightings`, `reid identities` and `reid feedback` (list, confirm, reject, merge,
//! split), each printing JSON on stdout.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use reid_proto::v1 as pb;
use reid_proto::v1::identity_service_client::IdentityServiceClient;
use reid_server::Channel;
use serde_json::{Value, json};

use crate::client::connect;

#[derive(Debug, Args)]
pub struct EnrollArgs {
    #[arg(long, default_value = reid_proto::ports::IDENTITY)]
    addr: String,
    /// A display name for the identity.
    #[arg(long, default_value = "")]
    name: String,
    /// Your own id for this person (enrolling it again adds to the same identity).
    #[arg(long, default_value = "")]
    external_id: String,
    /// Add the images to this existing identity instead of creating one.
    #[arg(long)]
    identity: Option<String>,
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct IdentifyArgs {
    #[arg(long, default_value = reid_proto::ports::IDENTITY)]
    addr: String,
    /// Candidates to list per image.
    #[arg(long, default_value_t = 5)]
    top_k: u32,
    /// Only match sightings from these cameras.
    #[arg(long = "camera")]
    cameras: Vec<String>,
    /// Overrides the service's threshold for this request.
    #[arg(long)]
    threshold: Option<f32>,
    /// Order candidates by k-reciprocal re-ranking instead of cosine similarity.
    #[arg(long)]
    rerank: bool,
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    #[arg(long, default_value = reid_proto::ports::IDENTITY)]
    addr: String,
    identity: String,
}

#[derive(Debug, Args)]
pub struct SightingsArgs {
    #[arg(long, default_value = reid_proto::ports::IDENTITY)]
    addr: String,
    #[arg(long = "camera")]
    cameras: Vec<String>,
    identity: String,
}

/// `reid feedback`: with no subcommand, lists the recorded pairs (as `reid feedback list`).
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FeedbackArgs {
    #[arg(long, default_value = reid_proto::ports::IDENTITY)]
    addr: String,
    #[command(subcommand)]
    correction: Option<Correction>,
}

/// An operator's correction, as the console sends it (docs/identity.md, "Feedback").
#[derive(Debug, Subcommand)]
pub enum Correction {
    /// Prints the recorded pairs (same / different) as JSON lines, for training.
    List(AddrArgs),
    /// Says two identities, or an identity and one of its tracklets, are the same person.
    Confirm(PairArgs),
    /// Says two identities, or an identity and one of its tracklets, are different people.
    Reject(PairArgs),
    /// Folds identity B into identity A: its sightings and crops move, B no longer exists.
    Merge(MergeArgs),
    /// Moves one tracklet's sightings out of an identity into a new identity.
    Split(SplitArgs),
}

#[derive(Debug, Args)]
pub struct AddrArgs {
    #[arg(long, default_value = reid_proto::ports::IDENTITY)]
    addr: String,
}

#[derive(Debug, Args)]
pub struct PairArgs {
    #[arg(long, default_value = reid_proto::ports::IDENTITY)]
    addr: String,
    identity_a: String,
    /// The other identity; or give `--camera` and `--track` for one tracklet of A.
    #[arg(required_unless_present = "track", conflicts_with_all = ["camera", "track"])]
    identity_b: Option<String>,
    #[arg(long, requires = "track")]
    camera: Option<String>,
    #[arg(long, requires = "camera")]
    track: Option<String>,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    #[arg(long, default_value = reid_proto::ports::IDENTITY)]
    addr: String,
    /// The identity that stays.
    into: String,
    /// The identity folded into it.
    from: String,
}

#[derive(Debug, Args)]
pub struct SplitArgs {
    #[arg(long, default_value = reid_proto::ports::IDENTITY)]
    addr: String,
    identity: String,
    #[arg(long)]
    camera: String,
    #[arg(long)]
    track: String,
}

#[derive(Debug, Args)]
pub struct IdentitiesArgs {
    #[arg(long, default_value = reid_proto::ports::IDENTITY)]
    addr: String,
}

pub(crate) async fn client(addr: &str) -> anyhow::Result<IdentityServiceClient<Channel>> {
    Ok(IdentityServiceClient::new(connect(addr).await?)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

fn read_image(path: &Path) -> anyhow::Result<pb::Image> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(pb::Image { data: Some(pb::image::Data::Encoded(bytes)) })
}

fn failed(what: &str) -> impl FnOnce(tonic::Status) -> anyhow::Error + '_ {
    move |s| anyhow::anyhow!("{what} failed: {:?}: {}", s.code(), s.message())
}

fn time(t: Option<&prost_types::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| json!(t.seconds as f64 + f64::from(t.nanos) / 1e9))
}

pub async fn enroll(args: EnrollArgs) -> anyhow::Result<ExitCode> {
    let images = args.images.iter().map(|p| read_image(p)).collect::<anyhow::Result<Vec<_>>>()?;
    let request = pb::EnrollRequest {
        identity_id: args.identity.unwrap_or_default(),
        name: args.name,
        external_id: args.external_id,
        images,
    };
    let r = client(&args.addr).await?.enroll(request).await.map_err(failed("enroll"))?.into_inner();
    let model = r.model.unwrap_or_default();
    println!(
        "{}",
        json!({ "identity": r.identity_id, "vectors_stored": r.vectors_stored, "model": model.id, "version": model.version })
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn identify(args: IdentifyArgs) -> anyhow::Result<ExitCode> {
    let probes = args
        .images
        .iter()
        .map(|p| Ok(pb::Probe { query: Some(pb::probe::Query::Image(read_image(p)?)) }))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let request = pb::IdentifyRequest {
        probes,
        top_k: args.top_k,
        cameras: args.cameras,
        threshold: args.threshold.unwrap_or(0.0),
        rerank: args.rerank,
    };
    let r = client(&args.addr).await?.identify(request).await.map_err(failed("identify"))?.into_inner();
    let model = r.model.unwrap_or_default();
    for (path, result) in args.images.iter().zip(r.results) {
        let decision = if result.decision == pb::Decision::Known as i32 { "known" } else { "unknown" };
        let candidates: Vec<Value> = result
            .candidates
            .iter()
            .map(|c| json!({ "identity": c.identity_id, "name": c.name, "score": c.score, "camera": c.camera_id, "seen_at": time(c.seen_at.as_ref()) }))
            .collect();
        let line = json!({
            "path": path, "decision": decision, "identity": result.identity_id, "score": result.score,
            "margin": result.margin, "candidates": candidates, "model": model.id, "version": model.version,
        });
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn forget(args: ForgetArgs) -> anyhow::Result<ExitCode> {
    let request = pb::ForgetRequest { identity_id: args.identity.clone() };
    let r = client(&args.addr).await?.forget(request).await.map_err(failed("forget"))?.into_inner();
    println!(
        "{}",
        json!({ "identity": args.identity, "vectors_removed": r.vectors_removed, "crops_removed": r.crops_removed })
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn sightings(args: SightingsArgs) -> anyhow::Result<ExitCode> {
    let request = pb::SightingsRequest { identity_id: args.identity.clone(), range: None, cameras: args.cameras };
    let r = client(&args.addr).await?.sightings(request).await.map_err(failed("sightings"))?.into_inner();
    let sightings: Vec<Value> = r
        .sightings
        .iter()
        .map(|s| {
            json!({
                "camera": s.camera_id, "track": s.track_id, "start": time(s.start.as_ref()), "end": time(s.end.as_ref()),
                "box": s.r#box.as_ref().map(|b| [b.x, b.y, b.width, b.height]), "score": s.score,
                "model_version": s.model_version, "thumbnail": s.thumbnail,
            })
        })
        .collect();
    println!("{}", json!({ "identity": args.identity, "sightings": sightings }));
    Ok(ExitCode::SUCCESS)
}

/// Every identity, page after page.
pub async fn list_all(client: &mut IdentityServiceClient<Channel>) -> anyhow::Result<Vec<pb::IdentitySummary>> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let request = pb::ListIdentitiesRequest { page_size: 500, page_token: token };
        let page = client.list_identities(request).await.map_err(failed("list identities"))?.into_inner();
        all.extend(page.identities);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        token = page.next_page_token;
    }
}

pub async fn identities(args: IdentitiesArgs) -> anyhow::Result<ExitCode> {
    for s in list_all(&mut client(&args.addr).await?).await? {
        let line = json!({
            "identity": s.identity_id, "name": s.name, "external_id": s.external_id, "enrolled": s.enrolled,
            "sightings": s.sightings, "cameras": s.cameras, "first_seen": time(s.first_seen.as_ref()),
            "last_seen": time(s.last_seen.as_ref()),
        });
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `reid feedback [list|confirm|reject|merge|split]`.
pub async fn feedback(args: FeedbackArgs) -> anyhow::Result<ExitCode> {
    let (addr, request) = match args.correction {
        None => return list_feedback(&args.addr).await,
        Some(Correction::List(a)) => return list_feedback(&a.addr).await,
        Some(Correction::Confirm(p)) => (p.addr.clone(), pair_request(pb::FeedbackKind::Confirm, p)),
        Some(Correction::Reject(p)) => (p.addr.clone(), pair_request(pb::FeedbackKind::Reject, p)),
        Some(Correction::Merge(m)) => (
            m.addr,
            pb::FeedbackRequest {
                kind: pb::FeedbackKind::Merge.into(),
                identity_a: m.into,
                identity_b: m.from,
                ..Default::default()
            },
        ),
        Some(Correction::Split(s)) => (
            s.addr,
            pb::FeedbackRequest {
                kind: pb::FeedbackKind::Split.into(),
                identity_a: s.identity,
                camera_id: s.camera,
                track_id: s.track,
                ..Default::default()
            },
        ),
    };
    let kind = request.kind().as_str_name().trim_start_matches("FEEDBACK_KIND_").to_lowercase();
    let r = client(&addr).await?.feedback(request).await.map_err(failed(&kind))?.into_inner();
    println!("{}", json!({ "kind": kind, "identity": r.identity_id, "pairs_recorded": r.pairs_recorded }));
    Ok(ExitCode::SUCCESS)
}

fn pair_request(kind: pb::FeedbackKind, p: PairArgs) -> pb::FeedbackRequest {
    pb::FeedbackRequest {
        kind: kind.into(),
        identity_a: p.identity_a,
        identity_b: p.identity_b.unwrap_or_default(),
        camera_id: p.camera.unwrap_or_default(),
        track_id: p.track.unwrap_or_default(),
    }
}

/// Prints the recorded feedback pairs as JSON lines: the file a trainer run's `feedback` reads.
async fn list_feedback(addr: &str) -> anyhow::Result<ExitCode> {
    let r = client(addr).await?.list_feedback(pb::ListFeedbackRequest {}).await.map_err(failed("list feedback"))?;
    for p in r.into_inner().pairs {
        let line = json!({
            "same": p.same, "a": p.identity_a, "b": p.identity_b, "camera": p.camera_id, "track": p.track_id,
            "recorded_at": time(p.recorded_at.as_ref()),
        });
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
