//! The gRPC handlers: convert proto to domain, call [`Identities`], convert back, map the error.

use std::sync::Arc;
use std::time::Instant;

use reid_proto::time::{millis, timestamp};
use reid_proto::v1 as pb;
use reid_proto::v1::identity_service_server::IdentityService;
use tonic::{Request, Response, Status};

use crate::association::Verdict;
use crate::events::{Cursor, EventFilter, Start};
use crate::identities::{
    Enrollment, Feedback, FeedbackKind, IdentifyOptions, Identities, Probe, SightingQuery, Tracklet, TrackletCrop,
};
use crate::model::ModelKey;

#[derive(Debug, Clone)]
pub(crate) struct IdentityGrpc {
    identities: Arc<Identities>,
    /// Turns true when the server shuts down: `Watch` streams end then (they never end alone).
    closing: tokio::sync::watch::Receiver<bool>,
}

impl IdentityGrpc {
    pub(crate) fn new(identities: Arc<Identities>, closing: tokio::sync::watch::Receiver<bool>) -> Self {
        Self { identities, closing }
    }

    /// Counts and times every call by method and outcome.
    async fn observe_call<T>(
        &self,
        method: &'static str,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let result = call.await;
        let metrics = self.identities.metrics();
        metrics.request_seconds.with_label_values(&[method]).observe(started.elapsed().as_secs_f64());
        let code = result.as_ref().map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        metrics.requests.with_label_values(&[method, code.description()]).inc();
        result.map(Response::new)
    }
}

/// Runs a multi-step write to its end even when the caller goes away (its deadline passes, it
/// cancels): an enrollment or erasure cut short would leave vectors and crops behind.
async fn to_completion<T: Send + 'static>(
    write: impl Future<Output = crate::error::IdentityResult<T>> + Send + 'static,
) -> Result<T, Status> {
    match tokio::spawn(write).await {
        Ok(result) => result.map_err(Status::from),
        Err(e) => Err(Status::internal(format!("write task failed: {e}"))),
    }
}

fn probe(index: usize, p: pb::Probe) -> Result<Probe, Status> {
    match p.query {
        Some(pb::probe::Query::Image(image)) => Ok(Probe::Image(image)),
        Some(pb::probe::Query::Embedding(e)) => {
            let model = e.model.as_ref().ok_or_else(|| {
                Status::invalid_argument(format!("probe {index}: an embedding must name the model that made it"))
            })?;
            Ok(Probe::Embedding(e.embedding.map(|e| e.values).unwrap_or_default(), ModelKey::from(model)))
        }
        None => Err(Status::invalid_argument(format!("probe {index} is empty"))),
    }
}

/// Where a `Watch` starts, and which events it wants.
fn watch_request(r: pb::WatchRequest) -> Result<(Start, EventFilter), Status> {
    let start = match (r.after.as_str(), r.from_oldest) {
        ("", false) => Start::Now,
        ("", true) => Start::Oldest,
        (after, _) => Start::After(after.parse::<Cursor>().map_err(Status::invalid_argument)?),
    };
    crate::identities::check_watch_filter(&r.identity_ids, &r.cameras)?;
    Ok((start, EventFilter { identities: r.identity_ids, enrolled_only: r.enrolled_only, cameras: r.cameras }))
}

#[tonic::async_trait]
impl IdentityService for IdentityGrpc {
    type WatchStream = tokio_stream::wrappers::ReceiverStream<Result<pb::IdentityEvent, Status>>;

    /// Sends the events from where the caller asked, then each one as it is published, until the
    /// caller goes away or the server shuts down (UNAVAILABLE: reconnect with the last cursor).
    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let (start, filter) = watch_request(request.into_inner())?;
        let mut watcher = self.identities.events().watch(start).map_err(|e| Status::out_of_range(e.to_string()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let mut closing = self.closing.clone();
        tokio::spawn(async move {
            loop {
                let batch = tokio::select! {
                    batch = watcher.next() => batch,
                    _ = tx.closed() => return,
                    _ = reid_server::until_true(&mut closing) => {
                        let _ = tx.send(Err(Status::unavailable("the service is shutting down: resume with the last cursor"))).await;
                        return;
                    }
                };
                let events = match batch {
                    Ok(events) => events,
                    Err(missed) => {
                        let _ = tx.send(Err(Status::out_of_range(missed.to_string()))).await;
                        return;
                    }
                };
                for event in events.iter().filter(|e| filter.matches(&e.kind)) {
                    if tx.send(Ok(pb::IdentityEvent::from(event.as_ref()))).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn identify(&self, request: Request<pb::IdentifyRequest>) -> Result<Response<pb::IdentifyResponse>, Status> {
        self.observe_call("identify", async {
            let req = request.into_inner();
            let probes = req.probes.into_iter().enumerate().map(|(i, p)| probe(i, p)).collect::<Result<Vec<_>, _>>()?;
            let options = IdentifyOptions {
                top_k: req.top_k as usize,
                cameras: req.cameras,
                threshold: (req.threshold > 0.0).then_some(req.threshold),
                rerank: req.rerank,
            };
            let found = self.identities.identify(probes, options).await?;
            let model = found.first().map(|f| f.model.to_proto());
            let results = found
                .into_iter()
                .map(|f| {
                    let (decision, identity_id, score, margin) = match f.verdict {
                        Verdict::Known { identity, score, margin } => (pb::Decision::Known, identity, score, margin),
                        Verdict::Unknown { best_score, margin } => {
                            (pb::Decision::Unknown, String::new(), best_score, margin)
                        }
                    };
                    pb::IdentifyResult {
                        decision: decision as i32,
                        identity_id,
                        score,
                        margin,
                        candidates: f
                            .candidates
                            .into_iter()
                            .map(|c| pb::Candidate {
                                identity_id: c.identity,
                                name: c.name,
                                score: c.score,
                                camera_id: c.camera.unwrap_or_default(),
                                seen_at: c.seen_ms.map(timestamp),
                            })
                            .collect(),
                    }
                })
                .collect();
            Ok(pb::IdentifyResponse { results, model })
        })
        .await
    }

    async fn enroll(&self, request: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        self.observe_call("enroll", async {
            let req = request.into_inner();
            let enrollment = Enrollment {
                identity: (!req.identity_id.is_empty()).then_some(req.identity_id),
                name: req.name,
                external_id: req.external_id,
                images: req.images,
            };
            let identities = self.identities.clone();
            let (identity_id, stored, model) =
                to_completion(async move { identities.enroll(enrollment).await }).await?;
            Ok(pb::EnrollResponse { identity_id, vectors_stored: stored as u32, model: Some(model.to_proto()) })
        })
        .await
    }

    async fn forget(&self, request: Request<pb::ForgetRequest>) -> Result<Response<pb::ForgetResponse>, Status> {
        self.observe_call("forget", async {
            let (identities, identity) = (self.identities.clone(), request.into_inner().identity_id);
            let erased = to_completion(async move { identities.forget(&identity).await }).await?;
            Ok(pb::ForgetResponse {
                vectors_removed: erased.vectors,
                crops_removed: erased.crops,
                tracklets: erased
                    .tracklets
                    .into_iter()
                    .map(|(camera_id, track_id)| pb::TrackletRef { camera_id, track_id })
                    .collect(),
                exports_erased: erased.exports_erased,
            })
        })
        .await
    }

    async fn rename(&self, request: Request<pb::RenameRequest>) -> Result<Response<pb::RenameResponse>, Status> {
        self.observe_call("rename", async {
            let req = request.into_inner();
            self.identities.rename(&req.identity_id, &req.name).await?;
            Ok(pb::RenameResponse {})
        })
        .await
    }

    async fn list_identities(
        &self,
        request: Request<pb::ListIdentitiesRequest>,
    ) -> Result<Response<pb::ListIdentitiesResponse>, Status> {
        self.observe_call("list_identities", async {
            let req = request.into_inner();
            let (page, next) = self.identities.list(req.page_size as usize, Some(&req.page_token)).await?;
            let identities = page
                .into_iter()
                .map(|s| pb::IdentitySummary {
                    identity_id: s.entry.identity,
                    name: s.entry.name,
                    external_id: s.entry.external_id,
                    enrolled: s.entry.enrolled,
                    sightings: s.sightings,
                    cameras: s.cameras,
                    first_seen: s.first_seen_ms.map(timestamp),
                    last_seen: s.last_seen_ms.map(timestamp),
                })
                .collect();
            Ok(pb::ListIdentitiesResponse { identities, next_page_token: next.unwrap_or_default() })
        })
        .await
    }

    async fn sightings(
        &self,
        request: Request<pb::SightingsRequest>,
    ) -> Result<Response<pb::SightingsResponse>, Status> {
        self.observe_call("sightings", async {
            let req = request.into_inner();
            let range = req.range.unwrap_or_default();
            let query = SightingQuery {
                identity: req.identity_id,
                from_ms: range.start.as_ref().map(millis),
                to_ms: range.end.as_ref().map(millis),
                cameras: req.cameras,
            };
            let sightings = self
                .identities
                .sightings(query)
                .await?
                .into_iter()
                .map(|s| pb::Sighting {
                    camera_id: s.camera,
                    track_id: s.track,
                    start: Some(timestamp(s.start_ms)),
                    end: Some(timestamp(s.end_ms)),
                    r#box: s.bbox.map(pb::BoundingBox::from),
                    score: s.score,
                    model_version: s.model_version,
                    thumbnail: s.thumbnail.unwrap_or_default(),
                    merged_from: s.merged_from.unwrap_or_default(),
                })
                .collect();
            Ok(pb::SightingsResponse { sightings })
        })
        .await
    }

    async fn observe(&self, request: Request<pb::ObserveRequest>) -> Result<Response<pb::ObserveResponse>, Status> {
        self.observe_call("observe", async {
            let req = request.into_inner();
            let crops = req
                .crops
                .into_iter()
                .map(|c| TrackletCrop {
                    image: c.image,
                    embedding: c.embedding.map(|e| e.values),
                    quality: c.quality,
                    bbox: c.r#box.as_ref().map(<[f32; 4]>::from),
                    at_ms: c.captured_at.as_ref().map(millis),
                })
                .collect();
            let tracklet = Tracklet {
                camera: req.camera_id,
                track: req.track_id,
                crops,
                model: req.model.as_ref().map(ModelKey::from),
            };
            let identities = self.identities.clone();
            let o = to_completion(async move { identities.observe(tracklet).await }).await?;
            Ok(pb::ObserveResponse { identity_id: o.identity, created: o.created, score: o.score, margin: o.margin })
        })
        .await
    }

    async fn feedback(&self, request: Request<pb::FeedbackRequest>) -> Result<Response<pb::FeedbackResponse>, Status> {
        self.observe_call("feedback", async {
            let req = request.into_inner();
            let kind = match pb::FeedbackKind::try_from(req.kind) {
                Ok(pb::FeedbackKind::Confirm) => FeedbackKind::Confirm,
                Ok(pb::FeedbackKind::Reject) => FeedbackKind::Reject,
                Ok(pb::FeedbackKind::Merge) => FeedbackKind::Merge,
                Ok(pb::FeedbackKind::Split) => FeedbackKind::Split,
                _ => return Err(Status::invalid_argument("feedback kind must be confirm, reject, merge or split")),
            };
            let feedback =
                Feedback { kind, a: req.identity_a, b: req.identity_b, camera: req.camera_id, track: req.track_id };
            let identities = self.identities.clone();
            let (identity_id, pairs) = to_completion(async move { identities.feedback(feedback).await }).await?;
            Ok(pb::FeedbackResponse { identity_id, pairs_recorded: pairs })
        })
        .await
    }

    async fn list_feedback(
        &self,
        _request: Request<pb::ListFeedbackRequest>,
    ) -> Result<Response<pb::ListFeedbackResponse>, Status> {
        self.observe_call("list_feedback", async {
            let pairs = self
                .identities
                .feedback_pairs()
                .await?
                .into_iter()
                .map(|p| pb::FeedbackPair {
                    same: p.same,
                    identity_a: p.a,
                    identity_b: p.b,
                    camera_id: p.camera,
                    track_id: p.track,
                    recorded_at: Some(timestamp(p.at_ms)),
                })
                .collect();
            Ok(pb::ListFeedbackResponse { pairs })
        })
        .await
    }
}
