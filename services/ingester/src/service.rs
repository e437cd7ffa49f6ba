//! The tonic handlers: validate, convert proto to domain, call the [`Ingester`], map the error.

use std::sync::Arc;
use std::time::SystemTime;

use reid_proto::v1 as pb;
use reid_proto::v1::ingester_service_server::IngesterService;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::config::CameraSpec;
use crate::detect::Detection;
use crate::frame::{self, BBox, Frame};
use crate::ingester::{Ingester, PushGuard};
use crate::pipeline::camera::{CameraState, CameraStatus, Work};
use crate::pipeline::view::View;

#[derive(Debug, Clone)]
pub struct IngesterGrpc {
    ingester: Arc<Ingester>,
}

impl IngesterGrpc {
    pub fn new(ingester: Arc<Ingester>) -> Self {
        Self { ingester }
    }
}

fn view_from_proto(v: pb::CameraView) -> Result<View, Status> {
    let region = match v.region.as_slice() {
        [] => None,
        &[x, y, w, h] => Some([x, y, w, h]),
        other => return Err(Status::invalid_argument(format!("view.region has {} numbers, not 4", other.len()))),
    };
    let gains = match v.gains.as_slice() {
        [] => [1.0; 3],
        &[b, g, r] => [b, g, r],
        other => return Err(Status::invalid_argument(format!("view.gains has {} numbers, not 3", other.len()))),
    };
    let scale = if v.scale == 0.0 { 1.0 } else { v.scale };
    Ok(View { region, scale, gains, brightness: v.brightness, time_offset_ms: v.time_offset_ms })
}

/// A camera's view as the contract spells it.
pub fn view_to_proto(v: &View) -> pb::CameraView {
    pb::CameraView {
        region: v.region.map(Vec::from).unwrap_or_default(),
        scale: v.scale,
        gains: v.gains.to_vec(),
        brightness: v.brightness,
        time_offset_ms: v.time_offset_ms,
    }
}

fn to_proto(s: CameraStatus) -> pb::CameraStatus {
    let state = match s.state {
        CameraState::Connecting => pb::CameraState::Connecting,
        CameraState::Running => pb::CameraState::Running,
        CameraState::Reconnecting => pb::CameraState::Reconnecting,
        CameraState::Finished => pb::CameraState::Finished,
        CameraState::Failed => pb::CameraState::Failed,
    };
    pb::CameraStatus {
        config: Some(pb::CameraConfig {
            camera_id: s.spec.id,
            url: s.spec.url,
            target_fps: s.spec.target_fps,
            detector: s.spec.detector,
            view: (!s.spec.view.is_identity()).then(|| view_to_proto(&s.spec.view)),
        }),
        state: state as i32,
        input_fps: s.input_fps,
        processed_fps: s.processed_fps,
        frames_processed: s.frames_processed,
        frames_dropped: s
            .frames_dropped
            .into_iter()
            .map(|(reason, count)| pb::DropCount { reason: reason.into(), count })
            .collect(),
        tracklets_emitted: s.tracklets_emitted,
        last_error: s.last_error,
        reconnects: s.reconnects,
    }
}

fn time_of(t: Option<prost_types::Timestamp>) -> SystemTime {
    t.and_then(|t| SystemTime::try_from(t).ok()).unwrap_or_else(SystemTime::now)
}

/// A message's detections are refused whole when there are too many, or when their crops would
/// together decode to more than one frame's worth of pixels: checked from the headers, before
/// anything is decoded.
fn check_detections(detections: &[pb::Detection], config: &crate::IngesterConfig) -> Result<(), Status> {
    let limit = config.max_detections_per_message;
    if detections.len() > limit {
        return Err(Status::invalid_argument(format!(
            "{} detections in one message; the limit is {limit}",
            detections.len()
        )));
    }
    let declared: u64 = detections
        .iter()
        .filter_map(|d| d.crop.as_ref())
        .filter_map(|c| frame::declared_pixels(c, config.max_frame_pixels).ok())
        .sum();
    if declared > config.max_frame_pixels {
        return Err(Status::invalid_argument(format!(
            "the crops of one message declare {declared} pixels together; the limit is {} (max_frame_pixels)",
            config.max_frame_pixels
        )));
    }
    Ok(())
}

/// The camera a stream pushes to: named by its first message; later messages may repeat the name
/// or leave it empty, but not change it.
async fn stream_camera(
    ingester: &Ingester,
    current: &mut Option<PushGuard>,
    camera_id: &str,
) -> Result<Arc<crate::pipeline::camera::Camera>, Status> {
    if let Some(guard) = current {
        if !camera_id.is_empty() && camera_id != guard.camera.spec.id {
            return Err(Status::invalid_argument(format!(
                "this stream pushes to camera {:?}; open another stream for {camera_id:?}",
                guard.camera.spec.id
            )));
        }
        return Ok(guard.camera.clone());
    }
    if camera_id.is_empty() {
        return Err(Status::invalid_argument("the first message of a push stream must name its camera_id"));
    }
    let guard = ingester.push_camera(camera_id).await?;
    let camera = guard.camera.clone();
    *current = Some(guard);
    Ok(camera)
}

#[tonic::async_trait]
impl IngesterService for IngesterGrpc {
    async fn push_frames(
        &self,
        request: Request<Streaming<pb::PushFramesRequest>>,
    ) -> Result<Response<pb::PushFramesResponse>, Status> {
        let mut stream = request.into_inner();
        let mut guard: Option<PushGuard> = None;
        let mut reply = pb::PushFramesResponse::default();
        let mut before = None;
        let max_pixels = self.ingester.config().max_frame_pixels;
        while let Some(message) = stream.next().await {
            let message = message?;
            let camera = stream_camera(&self.ingester, &mut guard, &message.camera_id).await?;
            before.get_or_insert_with(|| camera.stats.counts());
            reply.frames_received += 1;
            let Some(f) = message.frame else {
                camera.refuse("empty", "a message without a frame");
                reply.frames_corrupt += 1;
                continue;
            };
            let image = f.image.unwrap_or_default();
            let decoded = tokio::task::spawn_blocking(move || frame::decode(&image, max_pixels))
                .await
                .map_err(|e| Status::internal(format!("decoder panicked: {e}")))?;
            match decoded {
                Ok(image) => {
                    let frame = Frame { image, captured_at: time_of(f.captured_at), sequence: f.sequence };
                    if !camera.push(Work::Frame(frame)) {
                        return Err(Status::unavailable(format!("camera {} is being removed", camera.spec.id)));
                    }
                }
                Err(e) => {
                    tracing::debug!(camera = %camera.spec.id, error = %e, "pushed frame skipped");
                    camera.refuse(e.reason(), &e.to_string());
                    reply.frames_corrupt += 1;
                }
            }
        }
        if let (Some(guard), Some(before)) = (&guard, before) {
            // The client is gone: its open tracks end, and the reply says what became of its frames.
            guard.flush().await;
            let done = guard.camera.stats.counts().since(before);
            reply.frames_processed = done.frames_processed;
            reply.frames_dropped = done.frames_dropped;
            reply.tracklets_emitted = done.tracklets;
        }
        Ok(Response::new(reply))
    }

    async fn push_detections(
        &self,
        request: Request<Streaming<pb::PushDetectionsRequest>>,
    ) -> Result<Response<pb::PushDetectionsResponse>, Status> {
        let mut stream = request.into_inner();
        let mut guard: Option<PushGuard> = None;
        let mut reply = pb::PushDetectionsResponse::default();
        let mut tracklets_before = None;
        let max_pixels = self.ingester.config().max_frame_pixels;
        while let Some(message) = stream.next().await {
            let message = message?;
            let camera = stream_camera(&self.ingester, &mut guard, &message.camera_id).await?;
            tracklets_before.get_or_insert_with(|| camera.stats.counts());
            let captured_at = time_of(message.captured_at);
            let detections = message.detections;
            check_detections(&detections, self.ingester.config())?;
            reply.detections_received += detections.len() as u64;
            let (items, rejected) = tokio::task::spawn_blocking(move || {
                let mut items = Vec::new();
                let mut rejected = 0u64;
                for d in detections {
                    let bbox = d.r#box.as_ref().map(BBox::from);
                    let crop = d.crop.as_ref().map(|c| frame::decode(c, max_pixels));
                    match (bbox, crop) {
                        (Some(bbox), Some(Ok(crop))) if bbox.w > 0.0 && bbox.h > 0.0 => {
                            let id = (!d.track_id.is_empty()).then_some(d.track_id);
                            items.push((Detection::new(bbox, d.score.clamp(0.0, 1.0)), crop, id));
                        }
                        _ => rejected += 1,
                    }
                }
                (items, rejected)
            })
            .await
            .map_err(|e| Status::internal(format!("decoder panicked: {e}")))?;
            reply.detections_rejected += rejected;
            if rejected > 0 {
                tracing::debug!(camera = %camera.spec.id, rejected, "pushed detections without a box or a decodable crop");
            }
            if !items.is_empty() && !camera.push(Work::Detections { captured_at, items }) {
                return Err(Status::unavailable(format!("camera {} is being removed", camera.spec.id)));
            }
        }
        if let (Some(guard), Some(before)) = (&guard, tracklets_before) {
            guard.flush().await;
            reply.tracklets_emitted = guard.camera.stats.counts().since(before).tracklets;
        }
        Ok(Response::new(reply))
    }

    async fn add_camera(
        &self,
        request: Request<pb::AddCameraRequest>,
    ) -> Result<Response<pb::AddCameraResponse>, Status> {
        let c = request.into_inner().camera.ok_or_else(|| Status::invalid_argument("camera is required"))?;
        let view = c.view.map(view_from_proto).transpose()?.unwrap_or_default();
        let spec = CameraSpec { id: c.camera_id, url: c.url, target_fps: c.target_fps, detector: c.detector, view };
        let status = self.ingester.add_requested(spec).await?;
        Ok(Response::new(pb::AddCameraResponse { status: Some(to_proto(status)) }))
    }

    async fn remove_camera(
        &self,
        request: Request<pb::RemoveCameraRequest>,
    ) -> Result<Response<pb::RemoveCameraResponse>, Status> {
        self.ingester.remove(&request.into_inner().camera_id).await?;
        Ok(Response::new(pb::RemoveCameraResponse {}))
    }

    async fn forget_tracklets(
        &self,
        request: Request<pb::ForgetTrackletsRequest>,
    ) -> Result<Response<pb::ForgetTrackletsResponse>, Status> {
        let tracklets = request.into_inner().tracklets.into_iter().map(|t| (t.camera_id, t.track_id)).collect();
        let (exports_removed, pending_removed) = self.ingester.forget_tracklets(tracklets).await?;
        Ok(Response::new(pb::ForgetTrackletsResponse { exports_removed, pending_removed }))
    }

    async fn list_cameras(
        &self,
        _request: Request<pb::ListCamerasRequest>,
    ) -> Result<Response<pb::ListCamerasResponse>, Status> {
        let cameras = self.ingester.list().await.into_iter().map(to_proto).collect();
        Ok(Response::new(pb::ListCamerasResponse { cameras }))
    }
}
