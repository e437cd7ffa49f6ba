//! Identity events: what happens to identities (a tracklet sighted, two identities merged, one
//! split, an enrollment, an erasure), in order, for `Watch` and the webhook.
//!
//! The [`EventLog`] numbers every event and keeps the latest `events.capacity` of them in memory.
//! A watcher reads from a position in it and waits for the next event: a watcher that reconnects
//! with the cursor of the last event it got receives everything after it, once, as long as those
//! events are still kept. The cursor also names this start of the service, so that a cursor from
//! before a restart (whose events are gone) is refused instead of silently skipping them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use reid_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Why two identities became one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeCause {
    /// An operator's `Feedback` merge.
    Feedback,
    /// The merge pass over recent tracklets.
    MergePass,
    /// Two replicas started one person at the same moment.
    Replicas,
}

/// What happened. Every kind says whether the identity it is about is enrolled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// A tracklet was observed and associated with `identity_id`.
    Sighted {
        identity_id: String,
        name: String,
        enrolled: bool,
        camera_id: String,
        track_id: String,
        start_ms: i64,
        end_ms: i64,
        score: f32,
        /// The tracklet started this identity.
        new_identity: bool,
    },
    /// `from_identity_id` was folded into `into_identity_id` and no longer exists.
    Merged { from_identity_id: String, into_identity_id: String, name: String, enrolled: bool, cause: MergeCause },
    /// A tracklet's sightings moved out of `from_identity_id` into the new `into_identity_id`.
    Split { from_identity_id: String, into_identity_id: String, camera_id: String, track_id: String, enrolled: bool },
    /// Images were enrolled.
    Enrolled { identity_id: String, name: String, vectors_stored: u32 },
    /// Everything stored of the identity was erased.
    Forgotten { identity_id: String, enrolled: bool },
    /// The identity's display name changed.
    Renamed { identity_id: String, name: String, enrolled: bool },
}

impl EventKind {
    /// Its `kind`, as the JSON form names it.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Sighted { .. } => "sighted",
            EventKind::Merged { .. } => "merged",
            EventKind::Split { .. } => "split",
            EventKind::Enrolled { .. } => "enrolled",
            EventKind::Forgotten { .. } => "forgotten",
            EventKind::Renamed { .. } => "renamed",
        }
    }

    /// The identities the event is about.
    pub fn identities(&self) -> Vec<&str> {
        match self {
            EventKind::Sighted { identity_id, .. }
            | EventKind::Enrolled { identity_id, .. }
            | EventKind::Forgotten { identity_id, .. }
            | EventKind::Renamed { identity_id, .. } => vec![identity_id],
            EventKind::Merged { from_identity_id, into_identity_id, .. }
            | EventKind::Split { from_identity_id, into_identity_id, .. } => vec![from_identity_id, into_identity_id],
        }
    }

    pub fn enrolled(&self) -> bool {
        match self {
            EventKind::Sighted { enrolled, .. }
            | EventKind::Merged { enrolled, .. }
            | EventKind::Split { enrolled, .. }
            | EventKind::Forgotten { enrolled, .. }
            | EventKind::Renamed { enrolled, .. } => *enrolled,
            EventKind::Enrolled { .. } => true,
        }
    }

    /// The camera of a sighting; other kinds are not camera events.
    pub fn camera(&self) -> Option<&str> {
        match self {
            EventKind::Sighted { camera_id, .. } => Some(camera_id),
            _ => None,
        }
    }
}

/// Where an event sits in the log: this start of the service and the event's number in it.
/// Written `EPOCH.SEQ` (the epoch in hex).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    pub epoch: u64,
    pub seq: u64,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}.{}", self.epoch, self.seq)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || format!("cursor {:?} is not one an event carried", reid_server::truncated(s, 64));
        let (epoch, seq) = s.split_once('.').ok_or_else(malformed)?;
        Ok(Cursor {
            epoch: u64::from_str_radix(epoch, 16).map_err(|_| malformed())?,
            seq: seq.parse().map_err(|_| malformed())?,
        })
    }
}

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// One event, as `Watch` sends it and the webhook posts it (JSON: `cursor`, `at_ms`, `kind` and
/// the kind's fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub cursor: Cursor,
    pub at_ms: i64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Where a watcher starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// With the next event published.
    Now,
    /// With the oldest event kept.
    Oldest,
    /// With the event after this one.
    After(Cursor),
}

/// Why a watcher cannot read from where it asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Missed {
    #[error("cursor {0} is from before the service restarted: its later events are gone")]
    Restarted(Cursor),
    #[error("events after cursor {0} are no longer kept (the service keeps the latest {1})")]
    TooOld(Cursor, usize),
    #[error("cursor {0} names an event that was never sent")]
    Unknown(Cursor),
}

/// The latest events, numbered from 1, and the number of the last one for waiting watchers.
#[derive(Debug)]
pub struct EventLog {
    epoch: u64,
    capacity: usize,
    kept: Mutex<VecDeque<Arc<Event>>>,
    last: watch::Sender<u64>,
}

impl EventLog {
    /// A log that keeps the latest `capacity` events (at least one).
    pub fn new(capacity: usize) -> Self {
        let epoch =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        Self { epoch, capacity: capacity.max(1), kept: Mutex::default(), last: watch::Sender::new(0) }
    }

    /// Numbers and keeps the event, drops the oldest beyond the capacity, and wakes watchers.
    pub fn publish(&self, at_ms: i64, kind: EventKind) -> Arc<Event> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let seq = *self.last.borrow() + 1;
        let event = Arc::new(Event { cursor: Cursor { epoch: self.epoch, seq }, at_ms, kind });
        kept.push_back(event.clone());
        while kept.len() > self.capacity {
            kept.pop_front();
        }
        // Under the lock: a watcher that read the log sees this number change after it.
        self.last.send_replace(seq);
        event
    }

    /// A reader of the log from `start`.
    pub fn watch(self: &Arc<Self>, start: Start) -> Result<Watcher, Missed> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let last = *self.last.borrow();
        let next = match start {
            Start::Now => last + 1,
            Start::Oldest => kept.front().map_or(last + 1, |e| e.cursor.seq),
            Start::After(c) if c.epoch != self.epoch => return Err(Missed::Restarted(c)),
            Start::After(c) if c.seq > last => return Err(Missed::Unknown(c)),
            Start::After(c) => c.seq + 1,
        };
        let oldest = kept.front().map_or(last + 1, |e| e.cursor.seq);
        if next < oldest {
            let cursor = Cursor { epoch: self.epoch, seq: next - 1 };
            return Err(Missed::TooOld(cursor, self.capacity));
        }
        Ok(Watcher { log: self.clone(), next, changes: self.last.subscribe() })
    }
}

/// Reads a log in order, each event once.
#[derive(Debug)]
pub struct Watcher {
    log: Arc<EventLog>,
    /// The number of the next event to read.
    next: u64,
    changes: watch::Receiver<u64>,
}

impl Watcher {
    /// The events published since the last call (waiting for one when there are none yet), or
    /// [`Missed::TooOld`] when some of them were dropped before this watcher read them (it fell
    /// more than the log's capacity behind).
    pub async fn next(&mut self) -> Result<Vec<Arc<Event>>, Missed> {
        loop {
            self.changes.borrow_and_update();
            {
                let kept = self.log.kept.lock().unwrap_or_else(|e| e.into_inner());
                let oldest = kept.front().map_or(self.next, |e| e.cursor.seq);
                if self.next < oldest {
                    let cursor = Cursor { epoch: self.log.epoch, seq: self.next - 1 };
                    return Err(Missed::TooOld(cursor, self.log.capacity));
                }
                let skip = (self.next - oldest) as usize;
                let batch: Vec<Arc<Event>> = kept.iter().skip(skip).cloned().collect();
                if let Some(last) = batch.last() {
                    self.next = last.cursor.seq + 1;
                    return Ok(batch);
                }
            }
            // The log outlives its watchers (they hold it), so the sender is never dropped first.
            if self.changes.changed().await.is_err() {
                return Ok(Vec::new());
            }
        }
    }
}

/// Which events a watcher wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Events about any of these identities (empty: all).
    pub identities: Vec<String>,
    pub enrolled_only: bool,
    /// Sightings on these cameras (empty: all); other kinds pass.
    pub cameras: Vec<String>,
}

impl EventFilter {
    pub fn matches(&self, kind: &EventKind) -> bool {
        (self.identities.is_empty() || kind.identities().iter().any(|i| self.identities.iter().any(|w| w == i)))
            && (!self.enrolled_only || kind.enrolled())
            && (self.cameras.is_empty() || kind.camera().is_none_or(|c| self.cameras.iter().any(|w| w == c)))
    }
}

impl From<MergeCause> for pb::MergeCause {
    fn from(c: MergeCause) -> Self {
        match c {
            MergeCause::Feedback => pb::MergeCause::Feedback,
            MergeCause::MergePass => pb::MergeCause::MergePass,
            MergeCause::Replicas => pb::MergeCause::Replicas,
        }
    }
}

impl From<&Event> for pb::IdentityEvent {
    fn from(e: &Event) -> Self {
        use pb::identity_event::Event as E;
        let time = |ms: i64| Some(reid_proto::time::timestamp(ms));
        let event = match e.kind.clone() {
            EventKind::Sighted {
                identity_id,
                name,
                enrolled,
                camera_id,
                track_id,
                start_ms,
                end_ms,
                score,
                new_identity,
            } => E::Sighted(pb::Sighted {
                identity_id,
                name,
                enrolled,
                camera_id,
                track_id,
                start: time(start_ms),
                end: time(end_ms),
                score,
                new_identity,
            }),
            EventKind::Merged { from_identity_id, into_identity_id, name, enrolled, cause } => E::Merged(pb::Merged {
                from_identity_id,
                into_identity_id,
                name,
                enrolled,
                cause: pb::MergeCause::from(cause) as i32,
            }),
            EventKind::Split { from_identity_id, into_identity_id, camera_id, track_id, enrolled } => {
                E::Split(pb::Split { from_identity_id, into_identity_id, camera_id, track_id, enrolled })
            }
            EventKind::Enrolled { identity_id, name, vectors_stored } => {
                E::Enrolled(pb::Enrolled { identity_id, name, vectors_stored })
            }
            EventKind::Forgotten { identity_id, enrolled } => E::Forgotten(pb::Forgotten { identity_id, enrolled }),
            EventKind::Renamed { identity_id, name, enrolled } => {
                E::Renamed(pb::Renamed { identity_id, name, enrolled })
            }
        };
        pb::IdentityEvent { cursor: e.cursor.to_string(), at: time(e.at_ms), event: Some(event) }
    }
}

/// An event as a client receives it (`reid watch` prints these as JSON lines, the webhook's form).
impl TryFrom<pb::IdentityEvent> for Event {
    type Error = String;

    fn try_from(e: pb::IdentityEvent) -> Result<Self, String> {
        use pb::identity_event::Event as E;
        let ms = |t: Option<prost_types::Timestamp>| reid_proto::time::millis_or_zero(t.as_ref());
        let kind = match e.event.ok_or("an event without a kind")? {
            E::Sighted(s) => EventKind::Sighted {
                identity_id: s.identity_id,
                name: s.name,
                enrolled: s.enrolled,
                camera_id: s.camera_id,
                track_id: s.track_id,
                start_ms: ms(s.start),
                end_ms: ms(s.end),
                score: s.score,
                new_identity: s.new_identity,
            },
            E::Merged(m) => EventKind::Merged {
                cause: match pb::MergeCause::try_from(m.cause) {
                    Ok(pb::MergeCause::Feedback) => MergeCause::Feedback,
                    Ok(pb::MergeCause::MergePass) => MergeCause::MergePass,
                    Ok(pb::MergeCause::Replicas) => MergeCause::Replicas,
                    _ => return Err(format!("unknown merge cause {}", m.cause)),
                },
                from_identity_id: m.from_identity_id,
                into_identity_id: m.into_identity_id,
                name: m.name,
                enrolled: m.enrolled,
            },
            E::Split(s) => EventKind::Split {
                from_identity_id: s.from_identity_id,
                into_identity_id: s.into_identity_id,
                camera_id: s.camera_id,
                track_id: s.track_id,
                enrolled: s.enrolled,
            },
            E::Enrolled(n) => {
                EventKind::Enrolled { identity_id: n.identity_id, name: n.name, vectors_stored: n.vectors_stored }
            }
            E::Forgotten(f) => EventKind::Forgotten { identity_id: f.identity_id, enrolled: f.enrolled },
            E::Renamed(r) => EventKind::Renamed { identity_id: r.identity_id, name: r.name, enrolled: r.enrolled },
        };
        Ok(Event { cursor: e.cursor.parse()?, at_ms: ms(e.at), kind })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forgotten(id: &str) -> EventKind {
        EventKind::Forgotten { identity_id: id.into(), enrolled: false }
    }

    fn seqs(events: &[Arc<Event>]) -> Vec<u64> {
        events.iter().map(|e| e.cursor.seq).collect()
    }

    #[tokio::test]
    async fn a_watcher_reads_every_event_once_in_order_and_resumes_after_its_cursor() {
        let log = Arc::new(EventLog::new(100));
        log.publish(1, forgotten("a"));
        let mut now = log.watch(Start::Now).unwrap();
        let mut oldest = log.watch(Start::Oldest).unwrap();
        for i in 0..3 {
            log.publish(2 + i, forgotten("b"));
        }
        assert_eq!(seqs(&now.next().await.unwrap()), [2, 3, 4]);
        assert_eq!(seqs(&oldest.next().await.unwrap()), [1, 2, 3, 4]);
        // Waits for the next one.
        let waiting = tokio::spawn(async move { now.next().await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        let fifth = log.publish(9, forgotten("c"));
        assert_eq!(seqs(&waiting.await.unwrap().unwrap()), [5]);
        // A reconnect after event 3 gets 4 and 5; after the last, nothing until the next.
        let third = Cursor { epoch: fifth.cursor.epoch, seq: 3 };
        assert_eq!(seqs(&log.watch(Start::After(third)).unwrap().next().await.unwrap()), [4, 5]);
        let mut caught_up = log.watch(Start::After(fifth.cursor)).unwrap();
        log.publish(10, forgotten("d"));
        assert_eq!(seqs(&caught_up.next().await.unwrap()), [6]);
        // The cursor round-trips as text.
        assert_eq!(fifth.cursor.to_string().parse::<Cursor>().unwrap(), fifth.cursor);
        assert!("nope".parse::<Cursor>().is_err() && "zz.1".parse::<Cursor>().is_err());
    }

    #[tokio::test]
    async fn cursors_that_cannot_be_resumed_are_refused_not_skipped() {
        let log = Arc::new(EventLog::new(3));
        let first = log.publish(1, forgotten("a")).cursor;
        for i in 0..4 {
            log.publish(2 + i, forgotten("b"));
        }
        // Kept: 3, 4, 5. Resuming after 1 would skip 2.
        assert!(matches!(log.watch(Start::After(first)), Err(Missed::TooOld(c, 3)) if c.seq == 1));
        let second = Cursor { seq: 2, ..first };
        assert_eq!(seqs(&log.watch(Start::After(second)).unwrap().next().await.unwrap()), [3, 4, 5]);
        assert!(matches!(log.watch(Start::After(Cursor { seq: 9, ..first })), Err(Missed::Unknown(_))));
        let other_start = Cursor { epoch: first.epoch + 1, ..first };
        assert!(matches!(log.watch(Start::After(other_start)), Err(Missed::Restarted(_))));
        // A watcher that falls more than the capacity behind is told, not fed a gap.
        let mut slow = log.watch(Start::Now).unwrap();
        for i in 0..4 {
            log.publish(10 + i, forgotten("c"));
        }
        assert!(matches!(slow.next().await, Err(Missed::TooOld(c, 3)) if c.seq == 5));
    }

    #[test]
    fn filters_select_by_identity_enrolment_and_camera() {
        let sighted = |identity: &str, camera: &str, enrolled: bool| EventKind::Sighted {
            identity_id: identity.into(),
            name: String::new(),
            enrolled,
            camera_id: camera.into(),
            track_id: "t".into(),
            start_ms: 0,
            end_ms: 1,
            score: 0.9,
            new_identity: false,
        };
        let merged = EventKind::Merged {
            from_identity_id: "b".into(),
            into_identity_id: "a".into(),
            name: String::new(),
            enrolled: true,
            cause: MergeCause::MergePass,
        };
        let all = EventFilter::default();
        assert!(all.matches(&sighted("a", "west", false)) && all.matches(&merged));
        let of_b = EventFilter { identities: vec!["b".into()], ..Default::default() };
        assert!(of_b.matches(&merged) && !of_b.matches(&sighted("a", "west", true)));
        let enrolled = EventFilter { enrolled_only: true, ..Default::default() };
        assert!(!enrolled.matches(&sighted("a", "west", false)) && enrolled.matches(&sighted("a", "west", true)));
        let east = EventFilter { cameras: vec!["east".into()], ..Default::default() };
        assert!(!east.matches(&sighted("a", "west", false)) && east.matches(&sighted("a", "east", false)));
        assert!(east.matches(&merged), "a merge is not a camera event");
    }

    #[test]
    fn events_serialize_as_flat_json() {
        let e = Event {
            cursor: Cursor { epoch: 255, seq: 7 },
            at_ms: 1000,
            kind: EventKind::Forgotten { identity_id: "x".into(), enrolled: true },
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json,
            serde_json::json!({ "cursor": "ff.7", "at_ms": 1000, "kind": "forgotten", "identity_id": "x", "enrolled": true })
        );
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), e);
        assert_eq!(e.kind.name(), "forgotten");
        // Through the wire and back, every kind.
        let kinds = [
            EventKind::Sighted {
                identity_id: "a".into(),
                name: "Ann".into(),
                enrolled: true,
                camera_id: "west".into(),
                track_id: "7".into(),
                start_ms: 1_000,
                end_ms: 4_500,
                score: 0.875,
                new_identity: false,
            },
            EventKind::Merged {
                from_identity_id: "b".into(),
                into_identity_id: "a".into(),
                name: "Ann".into(),
                enrolled: true,
                cause: MergeCause::Replicas,
            },
            EventKind::Split {
                from_identity_id: "a".into(),
                into_identity_id: "c".into(),
                camera_id: "east".into(),
                track_id: "9".into(),
                enrolled: true,
            },
            EventKind::Enrolled { identity_id: "a".into(), name: "Ann".into(), vectors_stored: 3 },
            EventKind::Forgotten { identity_id: "a".into(), enrolled: true },
            EventKind::Renamed { identity_id: "a".into(), name: "Ann B".into(), enrolled: false },
        ];
        for kind in kinds {
            let e = Event { cursor: Cursor { epoch: 1, seq: 2 }, at_ms: 5_000, kind };
            assert_eq!(Event::try_from(pb::IdentityEvent::from(&e)).unwrap(), e);
        }
    }
}
