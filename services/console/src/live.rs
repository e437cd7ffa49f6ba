//! The identity events, as the browser reads them: server-sent events, one JSON object each
//! (`kind`, `identity_id`, `text`, `at_ms`), from the identity service's `Watch` with the user's
//! key. The browser's `EventSource` reconnects by itself and sends the last event's id, which is
//! the `Watch` cursor: nothing is lost across a reconnect.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use reid_proto::v1 as pb;
use reid_proto::v1::identity_event::Event as E;
use serde_json::json;
use tokio_stream::wrappers::ReceiverStream;

use crate::pages::short;
use crate::{Console, PageError};

/// An identity as a person reads it: its name, else the start of its id.
fn who(name: &str, id: &str) -> String {
    if name.is_empty() { short(id) } else { name.to_owned() }
}

/// The browser's form of an event, or `None` for one it does not show.
pub(crate) fn summary(e: &pb::IdentityEvent) -> Option<serde_json::Value> {
    let (kind, identity, text) = match e.event.as_ref()? {
        E::Sighted(s) if s.new_identity => (
            "sighted",
            &s.identity_id,
            format!("new person {} on {} (track {})", short(&s.identity_id), s.camera_id, s.track_id),
        ),
        E::Sighted(s) => (
            "sighted",
            &s.identity_id,
            format!(
                "{} seen on {} (track {}, score {:.2})",
                who(&s.name, &s.identity_id),
                s.camera_id,
                s.track_id,
                s.score
            ),
        ),
        E::Merged(m) => {
            let cause = pb::MergeCause::try_from(m.cause).map_or("", |c| match c {
                pb::MergeCause::Feedback => "by an operator",
                pb::MergeCause::MergePass => "by the merge pass",
                pb::MergeCause::Replicas => "by two replicas",
                pb::MergeCause::Unspecified => "",
            });
            let into = who(&m.name, &m.into_identity_id);
            ("merged", &m.into_identity_id, format!("{} merged into {into} {cause}", short(&m.from_identity_id)))
        }
        E::Split(s) => (
            "split",
            &s.into_identity_id,
            format!("track {} on {} split out of {}", s.track_id, s.camera_id, short(&s.from_identity_id)),
        ),
        E::Enrolled(n) => (
            "enrolled",
            &n.identity_id,
            format!("{} enrolled ({} images)", who(&n.name, &n.identity_id), n.vectors_stored),
        ),
        E::Forgotten(f) => ("forgotten", &f.identity_id, format!("{} forgotten", short(&f.identity_id))),
        E::Renamed(r) => ("renamed", &r.identity_id, format!("{} is now called {}", short(&r.identity_id), r.name)),
    };
    let at = reid_proto::time::millis_or_zero(e.at.as_ref());
    Some(json!({ "kind": kind, "identity_id": identity, "text": text, "at_ms": at }))
}

/// `GET /events`: the stream, resumed after `Last-Event-ID` when the browser sends one.
pub(crate) async fn events(State(console): State<Console>, headers: HeaderMap) -> Result<Response, PageError> {
    let session = console.session(&headers)?;
    let after = headers.get("last-event-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let mut client = console.backend().identity(&session);
    let mut stream = match client.watch(pb::WatchRequest { after: after.clone(), ..Default::default() }).await {
        Ok(s) => s.into_inner(),
        // Too far behind (or the service restarted): go on from now; the page reloads what it shows.
        Err(status) if status.code() == tonic::Code::OutOfRange && !after.is_empty() => {
            client.watch(pb::WatchRequest::default()).await?.into_inner()
        }
        Err(status) => return Err(status.into()),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut closing = console.inner.closing.clone();
    tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                m = stream.message() => m,
                _ = tx.closed() => return,
                _ = reid_server::until_true(&mut closing) => return,
            };
            let Ok(Some(event)) = message else { return };
            let Some(data) = summary(&event) else { continue };
            if tx.send(Ok(Event::default().id(event.cursor).data(data.to_string()))).await.is_err() {
                return;
            }
        }
    });
    let stream: ReceiverStream<Result<Event, Infallible>> = ReceiverStream::new(rx);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}
