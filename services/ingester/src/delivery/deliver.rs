//! Getting finished tracklets out: the bounded outbox every camera writes to, and the delivery
//! worker that embeds crops of all cameras together in one embedder call and sends each tracklet
//! to `IdentityService.Observe`. While a downstream service is slow or down, tracklets wait in the
//! outbox and are retried with back-off; beyond its bound the oldest are dropped and counted.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use prometheus::IntCounter;
use rand::Rng;
use reid_proto::v1 as pb;
use reid_proto::v1::identity_service_client::IdentityServiceClient;
use reid_server::{Channel, Security};
use tokio::sync::Notify;
use tonic::{Code, Status};

use crate::delivery::config::DeliveryConfig;
use crate::frame::{BBox, encoded};
use crate::metrics::IngesterMetrics;

/// One crop of a tracklet, encoded.
#[derive(Debug, Clone)]
pub struct EncodedCrop {
    pub jpeg: Vec<u8>,
    pub bbox: BBox,
    pub captured_at: SystemTime,
    pub frame: u64,
    pub quality: f32,
}

/// A finished track of one camera, ready to be identified.
#[derive(Debug, Clone)]
pub struct Tracklet {
    pub camera_id: String,
    pub track_id: String,
    pub crops: Vec<EncodedCrop>,
    pub start: SystemTime,
    pub end: SystemTime,
}

#[derive(Debug)]
struct Pending {
    tracklet: Tracklet,
    /// Kept once embedded, so that a retried `Observe` does not embed again.
    embedded: Option<(Vec<Vec<f32>>, pb::ModelRef)>,
    /// Deliveries of this tracklet that failed for a reason other than a service being down.
    attempts: u32,
}

/// The bounded buffer between the cameras and the delivery worker.
#[derive(Debug)]
pub struct Outbox {
    /// Waiting tracklets, and how many more the delivery worker holds in flight (they count
    /// against the bound too: they are not delivered yet).
    queue: Mutex<OutboxState>,
    capacity: usize,
    arrived: Notify,
    dropped: IntCounter,
}

#[derive(Debug, Default)]
struct OutboxState {
    waiting: VecDeque<Pending>,
    in_flight: usize,
    /// How many of the oldest in-flight tracklets newcomers have displaced: if their delivery
    /// fails they are dropped instead of waiting again, so that the outbox always keeps the newest.
    evicted: usize,
}

impl Outbox {
    /// `dropped` counts the tracklets the bound costs.
    pub fn new(capacity: usize, dropped: IntCounter) -> Self {
        Self { queue: Mutex::new(OutboxState::default()), capacity, arrived: Notify::new(), dropped }
    }

    /// Queues a tracklet. When the outbox is full the oldest tracklet makes room: an in-flight one
    /// is dropped if its delivery fails; a waiting one is returned (dropped now).
    pub fn submit(&self, tracklet: Tracklet) -> Option<Tracklet> {
        let dropped = {
            let mut q = self.lock();
            let pending = Pending { tracklet, embedded: None, attempts: 0 };
            let held = q.waiting.len() + q.in_flight - q.evicted;
            // Tracklets in flight were taken from the front: they are older than any waiting.
            let dropped = if held < self.capacity {
                None
            } else if q.in_flight > q.evicted {
                q.evicted += 1;
                None
            } else {
                q.waiting.pop_front()
            };
            q.waiting.push_back(pending);
            dropped
        };
        if dropped.is_some() {
            self.dropped.inc();
        }
        self.arrived.notify_one();
        dropped.map(|p| p.tracklet)
    }

    /// Drops the waiting tracklets `forget` picks (an erasure); returns how many.
    pub fn forget(&self, forget: impl Fn(&Tracklet) -> bool) -> usize {
        let mut q = self.lock();
        let before = q.waiting.len();
        q.waiting.retain(|p| !forget(&p.tracklet));
        before - q.waiting.len()
    }

    /// Tracklets not delivered yet, waiting or in flight (displaced ones not counted).
    pub fn len(&self) -> usize {
        let q = self.lock();
        q.waiting.len() + q.in_flight - q.evicted
    }

    /// Tracklets dropped because the outbox was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxState> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes tracklets from the front until `max_crops` crops are taken (at least one tracklet).
    /// They stay in flight until `requeue` or `done`.
    fn take(&self, max_crops: usize) -> Vec<Pending> {
        let mut q = self.lock();
        let mut out = Vec::new();
        let mut crops = 0;
        while let Some(front) = q.waiting.front() {
            let n = front.tracklet.crops.len();
            if !out.is_empty() && crops + n > max_crops {
                break;
            }
            crops += n;
            out.extend(q.waiting.pop_front());
        }
        q.in_flight += out.len();
        out
    }

    /// Puts tracklets whose delivery failed back at the front, in order, except the oldest ones
    /// that newcomers displaced meanwhile: those are dropped (and counted) now.
    fn requeue(&self, pending: Vec<Pending>) {
        let mut q = self.lock();
        q.in_flight = q.in_flight.saturating_sub(pending.len());
        let evicted = q.evicted.min(pending.len());
        q.evicted -= evicted;
        self.dropped.inc_by(evicted as u64);
        for p in pending.into_iter().skip(evicted).rev() {
            q.waiting.push_front(p);
        }
    }

    /// The `n` oldest tracklets in flight are finished with (delivered or refused).
    fn done(&self, n: usize) {
        let mut q = self.lock();
        q.in_flight = q.in_flight.saturating_sub(n);
        q.evicted = q.evicted.saturating_sub(n);
    }
}

/// Where the delivery worker sends tracklets: the embedder and the identity service, as traits so
/// that delivery can be tested against services that fail on cue.
#[async_trait]
pub trait Downstream: Send + Sync {
    /// Embeds `images` in one call; `None` when no embedder is configured (the identity service
    /// then embeds the images itself).
    async fn embed(&self, images: Vec<pb::Image>) -> Result<Option<(Vec<Vec<f32>>, pb::ModelRef)>, Status>;
    async fn observe(&self, request: pb::ObserveRequest) -> Result<pb::ObserveResponse, Status>;
}

/// The embedder and identity service over gRPC (connections are lazy: a service that is down at
/// start-up is retried, not fatal).
#[derive(Debug, Clone)]
pub struct GrpcDownstream {
    embedder: Option<reid_server::client::Embedder>,
    identity: Option<IdentityServiceClient<Channel>>,
}

impl GrpcDownstream {
    pub fn new(
        embedder_url: Option<&str>,
        identity_url: Option<&str>,
        config: &DeliveryConfig,
        max_message_bytes: usize,
        security: &Security,
    ) -> anyhow::Result<Self> {
        // Either address may name several replicas (a list, or `dns:///`): calls are balanced.
        let timeout = config.call_timeout;
        let channel = |url: &str| -> anyhow::Result<Channel> {
            security.connect_lazy(url, move |e| e.connect_timeout(Duration::from_secs(5)).timeout(timeout))
        };
        Ok(Self {
            // No retry inside a call: the worker requeues transient failures with its back-off.
            embedder: embedder_url
                .map(|url| reid_server::client::Embedder::connect_lazy(url, security, timeout, max_message_bytes))
                .transpose()?,
            identity: identity_url.map(channel).transpose()?.map(|c| {
                IdentityServiceClient::new(c)
                    .max_decoding_message_size(max_message_bytes)
                    .max_encoding_message_size(max_message_bytes)
            }),
        })
    }
}

#[async_trait]
impl Downstream for GrpcDownstream {
    async fn embed(&self, images: Vec<pb::Image>) -> Result<Option<(Vec<Vec<f32>>, pb::ModelRef)>, Status> {
        let Some(client) = &self.embedder else { return Ok(None) };
        client.embed(images).await.map(Some)
    }

    async fn observe(&self, request: pb::ObserveRequest) -> Result<pb::ObserveResponse, Status> {
        let Some(mut client) = self.identity.clone() else {
            return Ok(pb::ObserveResponse::default());
        };
        Ok(client.observe(request).await?.into_inner())
    }
}

/// Worth requeueing: [`reid_server::client::is_transient`].
fn transient(status: &Status) -> bool {
    reid_server::client::is_transient(status.code())
}

/// The Observe call for a tracklet. Embedded crops carry their embeddings, and only the best
/// crop its picture (the identity service keeps it as the thumbnail): a crop's JPEG crosses the
/// network once, to the embedder. The best among the crops the identity service keeps in the
/// tracklet's embedding whatever its `crop_agreement` (the most agreeing half), so that the
/// thumbnail is never a crop of someone else it left out. Without an embedder every crop carries
/// its picture.
fn observe_request(p: &Pending) -> pb::ObserveRequest {
    let t = &p.tracklet;
    let surely_kept = p.embedded.as_ref().map(|(e, _)| reid_cluster::agreeing(e, f32::INFINITY)).unwrap_or_default();
    let best = surely_kept.into_iter().max_by(|&a, &b| t.crops[a].quality.total_cmp(&t.crops[b].quality));
    let crops = t
        .crops
        .iter()
        .enumerate()
        .map(|(i, c)| pb::TrackletCrop {
            image: (p.embedded.is_none() || Some(i) == best).then(|| encoded(c.jpeg.clone())),
            r#box: Some(c.bbox.into()),
            captured_at: Some(c.captured_at.into()),
            quality: c.quality,
            embedding: p.embedded.as_ref().map(|(e, _)| pb::Embedding { values: e[i].clone() }),
        })
        .collect();
    pb::ObserveRequest {
        camera_id: t.camera_id.clone(),
        track_id: t.track_id.clone(),
        crops,
        model: p.embedded.as_ref().map(|(_, m)| m.clone()),
    }
}

/// Delivers what the outbox holds until `stop` is set and the outbox is empty (or the flush
/// deadline passes).
pub async fn deliver(
    outbox: std::sync::Arc<Outbox>,
    downstream: std::sync::Arc<dyn Downstream>,
    config: DeliveryConfig,
    metrics: IngesterMetrics,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    let mut flush_deadline: Option<tokio::time::Instant> = None;
    loop {
        metrics.outbox.set(outbox.len() as i64);
        if *stop.borrow() {
            let deadline = *flush_deadline.get_or_insert_with(|| tokio::time::Instant::now() + config.flush_timeout);
            if outbox.is_empty() || tokio::time::Instant::now() >= deadline {
                let left = outbox.len();
                if left > 0 {
                    tracing::warn!(left, "shutdown: tracklets not delivered before the flush deadline");
                }
                return;
            }
        } else if outbox.is_empty() {
            tokio::select! {
                _ = outbox.arrived.notified() => {}
                _ = stop.changed() => {}
            }
            // Let a few more tracklets arrive so that their crops share one embedder call.
            tokio::time::sleep(config.batch_wait).await;
            continue;
        }
        let mut batch = outbox.take(config.embed_batch);
        if batch.is_empty() {
            continue;
        }
        let taken = batch.len();
        let result = deliver_batch(&mut batch, downstream.as_ref(), &metrics).await;
        outbox.done(taken - batch.len());
        match result {
            Ok(()) => failures = 0,
            Err(Failure { status, at_fault }) => {
                // A service that is down is nobody's fault: its tracklets wait (the outbox bound
                // applies). Any other failure counts against the tracklets it happened to, and one
                // that keeps failing is set aside, so that it cannot hold up the queue behind it.
                if status.code() != Code::Unavailable {
                    let (failed, retry): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut batch)
                        .into_iter()
                        .enumerate()
                        .map(|(i, mut p)| {
                            p.attempts += u32::from(i < at_fault);
                            p
                        })
                        .partition(|p| p.attempts >= config.max_attempts);
                    for p in &failed {
                        tracing::warn!(camera = %p.tracklet.camera_id, track = %p.tracklet.track_id, attempts = p.attempts, code = ?status.code(), "tracklet set aside after repeated failures");
                    }
                    metrics.tracklets.with_label_values(&["failed"]).inc_by(failed.len() as u64);
                    outbox.done(failed.len());
                    batch = retry;
                }
                outbox.requeue(batch);
                failures += 1;
                let backoff = backoff(config.retry_initial, config.retry_max, failures);
                tracing::warn!(code = ?status.code(), error = %status.message(), waiting = outbox.len(), retry_in = ?backoff, "delivery failed; will retry");
                metrics.delivery_retries.inc();
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed(), if !*stop.borrow() => {}
                }
            }
        }
    }
}

/// A transient failure of a batch, and how many of its tracklets, from the front, it happened
/// to: all of them when embedding failed, the one at the front when its `Observe` did.
struct Failure {
    status: Status,
    at_fault: usize,
}

/// Embeds the batch's crops that need it in one call, then observes each tracklet. On a transient
/// failure the undelivered tracklets are left in `batch` for the caller to requeue; tracklets the
/// identity service refuses outright are dropped and counted.
async fn deliver_batch(
    batch: &mut Vec<Pending>,
    downstream: &dyn Downstream,
    metrics: &IngesterMetrics,
) -> Result<(), Failure> {
    let all = |status, batch: &Vec<Pending>| Failure { status, at_fault: batch.len() };
    let images: Vec<pb::Image> = batch
        .iter()
        .filter(|p| p.embedded.is_none())
        .flat_map(|p| p.tracklet.crops.iter().map(|c| encoded(c.jpeg.clone())))
        .collect();
    if !images.is_empty() {
        let n = images.len();
        match downstream.embed(images).await {
            Ok(Some((mut vectors, model))) => {
                metrics.embedded_crops.inc_by(n as u64);
                for p in batch.iter_mut().filter(|p| p.embedded.is_none()) {
                    let rest = vectors.split_off(p.tracklet.crops.len());
                    p.embedded = Some((std::mem::replace(&mut vectors, rest), model.clone()));
                }
            }
            Ok(None) => {}
            Err(status) if transient(&status) => return Err(all(status, batch)),
            Err(status) => {
                // The embedder refuses these crops (too large, say). Only the tracklets at fault
                // are dropped: each is embedded alone to find them.
                tracing::warn!(error = %status.message(), tracklets = batch.len(), "embedder refused a batch; embedding its tracklets one by one");
                if let Err(status) = embed_one_by_one(batch, downstream, metrics).await {
                    return Err(all(status, batch));
                }
            }
        }
    }
    while let Some(p) = batch.first() {
        match downstream.observe(observe_request(p)).await {
            Ok(reply) => {
                tracing::debug!(camera = %p.tracklet.camera_id, track = %p.tracklet.track_id, identity = %reply.identity_id, created = reply.created, "tracklet observed");
                metrics.tracklets.with_label_values(&["delivered"]).inc();
            }
            Err(status) if transient(&status) => return Err(Failure { status, at_fault: 1 }),
            Err(status) => {
                tracing::warn!(camera = %p.tracklet.camera_id, track = %p.tracklet.track_id, code = ?status.code(), error = %status.message(), "identity service refused a tracklet");
                metrics.tracklets.with_label_values(&["rejected"]).inc();
            }
        }
        batch.remove(0);
    }
    Ok(())
}

/// Embeds each tracklet of `batch` that needs it in a call of its own; those the embedder refuses
/// are dropped and counted as rejected.
async fn embed_one_by_one(
    batch: &mut Vec<Pending>,
    downstream: &dyn Downstream,
    metrics: &IngesterMetrics,
) -> Result<(), Status> {
    let mut kept = Vec::with_capacity(batch.len());
    let mut pending = std::mem::take(batch).into_iter();
    while let Some(mut p) = pending.next() {
        if p.embedded.is_some() {
            kept.push(p);
            continue;
        }
        let images = p.tracklet.crops.iter().map(|c| encoded(c.jpeg.clone())).collect();
        match downstream.embed(images).await {
            Ok(embedded) => {
                metrics.embedded_crops.inc_by(p.tracklet.crops.len() as u64);
                p.embedded = embedded;
                kept.push(p);
            }
            Err(status) if transient(&status) => {
                kept.push(p);
                kept.extend(pending);
                *batch = kept;
                return Err(status);
            }
            Err(status) => {
                tracing::warn!(camera = %p.tracklet.camera_id, track = %p.tracklet.track_id, code = ?status.code(), error = %status.message(), "embedder refused a tracklet");
                metrics.tracklets.with_label_values(&["rejected"]).inc();
            }
        }
    }
    *batch = kept;
    Ok(())
}

/// Exponential back-off with jitter: half fixed, half random, so that many ingesters that lost the
/// same service do not retry in step.
pub fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(max);
    let half = exp / 2;
    half + half.mul_f64(rand::thread_rng().gen_range(0.0..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracklet(track: &str, crops: usize) -> Tracklet {
        let crop = EncodedCrop {
            jpeg: vec![1],
            bbox: BBox::default(),
            captured_at: SystemTime::UNIX_EPOCH,
            frame: 0,
            quality: 0.5,
        };
        Tracklet {
            camera_id: "c".into(),
            track_id: track.into(),
            crops: vec![crop; crops],
            start: SystemTime::UNIX_EPOCH,
            end: SystemTime::UNIX_EPOCH,
        }
    }

    fn outbox(capacity: usize) -> Outbox {
        Outbox::new(capacity, IntCounter::new("dropped", "dropped").unwrap_or_else(|_| unreachable!()))
    }

    fn ids(pending: &[Pending]) -> Vec<&str> {
        pending.iter().map(|p| p.tracklet.track_id.as_str()).collect()
    }

    #[test]
    fn a_full_outbox_drops_its_oldest_tracklets_and_counts_them() {
        let outbox = outbox(2);
        assert!(outbox.submit(tracklet("1", 1)).is_none());
        assert!(outbox.submit(tracklet("2", 1)).is_none());
        assert_eq!(outbox.submit(tracklet("3", 1)).map(|t| t.track_id), Some("1".into()));
        assert_eq!(outbox.dropped(), 1);
        let taken = outbox.take(10);
        assert_eq!(ids(&taken), vec!["2", "3"]);
        // Both in flight when 4 and 5 arrive: they displace 2 and 3, which are dropped when
        // their delivery fails.
        assert_eq!(outbox.len(), 2);
        assert!(outbox.submit(tracklet("4", 1)).is_none());
        assert!(outbox.submit(tracklet("5", 1)).is_none());
        assert_eq!(outbox.len(), 2);
        outbox.requeue(taken);
        assert_eq!(outbox.dropped(), 3);
        assert_eq!(ids(&outbox.take(10)), vec!["4", "5"]);
    }

    #[test]
    fn a_displaced_tracklet_that_is_delivered_is_not_counted_lost() {
        let outbox = outbox(1);
        outbox.submit(tracklet("1", 1));
        let taken = outbox.take(10);
        outbox.submit(tracklet("2", 1));
        outbox.done(taken.len());
        assert_eq!(outbox.dropped(), 0);
        assert_eq!(outbox.len(), 1);
        assert_eq!(ids(&outbox.take(10)), vec!["2"]);
    }

    #[test]
    fn batches_are_cut_by_crops_and_requeued_in_order() {
        let outbox = outbox(10);
        for (t, n) in [("a", 3), ("b", 3), ("c", 3)] {
            outbox.submit(tracklet(t, n));
        }
        let first = outbox.take(7);
        assert_eq!(first.len(), 2, "a and b fit 7 crops, c does not");
        outbox.requeue(first);
        let all: Vec<String> = outbox.take(100).into_iter().map(|p| p.tracklet.track_id).collect();
        assert_eq!(all, vec!["a", "b", "c"]);
        // A tracklet larger than a batch still goes, alone.
        outbox.submit(tracklet("big", 50));
        assert_eq!(outbox.take(7).len(), 1);
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 1..10 {
            let d = backoff(i, m, attempt);
            let exp = (i * (1 << (attempt - 1))).min(m);
            assert!(d >= exp / 2 && d <= exp, "attempt {attempt}: {d:?} outside [{:?}, {exp:?}]", exp / 2);
        }
    }

    #[test]
    fn the_thumbnail_is_never_the_sharp_crop_of_someone_else() {
        let mut t = tracklet("a", 4);
        for (crop, (quality, jpeg)) in t.crops.iter_mut().zip([(0.2, 1u8), (0.5, 2), (0.3, 3), (0.9, 4)]) {
            crop.quality = quality;
            crop.jpeg = vec![jpeg];
        }
        // Three crops of one person and, the sharpest, one of someone else.
        let vectors = vec![vec![1.0, 0.1], vec![1.0, -0.1], vec![1.0, 0.0], vec![0.0, 1.0]];
        let request =
            observe_request(&Pending { tracklet: t, embedded: Some((vectors, pb::ModelRef::default())), attempts: 0 });
        let pictured: Vec<usize> = (0..4).filter(|&i| request.crops[i].image.is_some()).collect();
        // The most agreeing half is crops 2 (the middle of the three) and 0; 2 is the better.
        assert_eq!(pictured, [2], "the best of the crops surely kept, not the sharpest");
    }

    #[test]
    fn an_embedded_tracklet_sends_only_its_best_crop_s_picture() {
        let mut t = tracklet("a", 3);
        for (crop, (quality, jpeg)) in t.crops.iter_mut().zip([(0.2, 1u8), (0.9, 2), (0.4, 3)]) {
            crop.quality = quality;
            crop.jpeg = vec![jpeg];
        }
        let pictures = |request: &pb::ObserveRequest| -> Vec<Option<Vec<u8>>> {
            let bytes = |i: &pb::Image| match &i.data {
                Some(pb::image::Data::Encoded(b)) => b.clone(),
                _ => Vec::new(),
            };
            request.crops.iter().map(|c| c.image.as_ref().map(bytes)).collect()
        };
        let unembedded = Pending { tracklet: t.clone(), embedded: None, attempts: 0 };
        let request = observe_request(&unembedded);
        assert_eq!(pictures(&request), [Some(vec![1]), Some(vec![2]), Some(vec![3])], "the service embeds them all");
        assert!(request.crops.iter().all(|c| c.embedding.is_none()) && request.model.is_none());

        let vectors = vec![vec![1.0], vec![2.0], vec![3.0]];
        let embedded = Pending { tracklet: t, embedded: Some((vectors, pb::ModelRef::default())), attempts: 0 };
        let request = observe_request(&embedded);
        assert_eq!(pictures(&request), [None, Some(vec![2]), None], "only the thumbnail's picture");
        assert_eq!(
            request.crops.iter().map(|c| c.embedding.as_ref().map(|e| e.values[0])).collect::<Vec<_>>(),
            [Some(1.0), Some(2.0), Some(3.0)]
        );
        assert!(request.model.is_some());
    }

    /// Refuses to embed any batch holding the "huge" tracklet, and fails every `Observe` of the
    /// "poison" tracklet with a transient-looking code.
    struct Picky {
        observed: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl Downstream for Picky {
        async fn embed(&self, images: Vec<pb::Image>) -> Result<Option<(Vec<Vec<f32>>, pb::ModelRef)>, Status> {
            let huge = images.iter().any(|i| matches!(&i.data, Some(pb::image::Data::Encoded(b)) if b == &[9]));
            if huge {
                return Err(Status::invalid_argument("image 0 is too large"));
            }
            Ok(Some((vec![vec![1.0]; images.len()], pb::ModelRef::default())))
        }

        async fn observe(&self, request: pb::ObserveRequest) -> Result<pb::ObserveResponse, Status> {
            if request.track_id == "poison" {
                return Err(Status::aborted("always"));
            }
            self.observed.lock().unwrap_or_else(|e| e.into_inner()).push(request.track_id);
            Ok(pb::ObserveResponse::default())
        }
    }

    #[tokio::test]
    async fn a_failing_tracklet_is_set_aside_and_a_refused_one_costs_only_itself() {
        let outbox = std::sync::Arc::new(outbox(100));
        let mut huge = tracklet("huge", 1);
        huge.crops[0].jpeg = vec![9];
        for t in [tracklet("a", 1), huge, tracklet("poison", 1), tracklet("b", 1)] {
            outbox.submit(t);
        }
        let downstream = std::sync::Arc::new(Picky { observed: Mutex::default() });
        let metrics = IngesterMetrics::new();
        let config = DeliveryConfig {
            retry_initial: Duration::from_millis(1),
            retry_max: Duration::from_millis(2),
            max_attempts: 3,
            ..DeliveryConfig::default()
        };
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let worker = tokio::spawn(deliver(outbox.clone(), downstream.clone(), config, metrics.clone(), stop));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !outbox.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = stop_tx.send(true);
        worker.await.unwrap_or_else(|_| unreachable!());
        let count = |outcome: &str| metrics.tracklets.with_label_values(&[outcome]).get();
        assert!(outbox.is_empty(), "the queue was held up");
        assert_eq!(*downstream.observed.lock().unwrap_or_else(|e| e.into_inner()), vec!["a", "b"]);
        assert_eq!((count("delivered"), count("rejected"), count("failed")), (2, 1, 1));
    }
}
