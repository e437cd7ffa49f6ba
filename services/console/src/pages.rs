//! What the console shows: the login form, the overview (cameras, identities, live events, the
//! search and enroll forms), one identity (its crops per camera, a timeline, corrections) and the
//! stored crops themselves.

use std::collections::BTreeMap;
use std::path::Component;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use reid_proto::time::millis_or_zero as ms;
use reid_proto::v1 as pb;
use serde::Serialize;

use crate::session::Session;
use crate::{Console, PageError};

/// A time as people read it, in UTC (RFC 3339 to the second).
pub(crate) fn clock(ms: i64) -> String {
    if ms <= 0 {
        return String::new();
    }
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
    humantime::format_rfc3339_seconds(at).to_string().replace('T', " ").trim_end_matches('Z').to_owned()
}

/// A short form of an id, for tables.
pub(crate) fn short(id: &str) -> String {
    id.chars().take(8).collect()
}

#[derive(Debug, Serialize)]
struct IdentityRow {
    id: String,
    short: String,
    name: String,
    enrolled: bool,
    sightings: u64,
    cameras: String,
    last_seen: String,
}

#[derive(Debug, Serialize)]
struct CameraRow {
    id: String,
    state: String,
    input_fps: String,
    processed_fps: String,
    frames: u64,
    tracklets: u64,
    reconnects: u32,
    last_error: String,
}

pub(crate) async fn login_form(State(console): State<Console>, headers: HeaderMap) -> Result<Response, PageError> {
    if console.sessions().of(&headers).is_some() {
        return Ok(Redirect::to("/").into_response());
    }
    // Nothing to ask on a deployment without keys: a session, and on.
    if let Some(id) = console.sessions().open_unkeyed() {
        let cookie = console.sessions().set_cookie(&id);
        return Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response());
    }
    console.render("login.html", context! { failed => false })
}

/// Every identity, newest first (at most 1,000: the overview is not a report).
pub(crate) async fn all_identities(
    console: &Console,
    session: &Session,
) -> Result<Vec<pb::IdentitySummary>, PageError> {
    let mut client = console.backend().identity(session);
    let (mut all, mut token) = (Vec::new(), String::new());
    loop {
        let page =
            client.list_identities(pb::ListIdentitiesRequest { page_size: 200, page_token: token }).await?.into_inner();
        all.extend(page.identities);
        if page.next_page_token.is_empty() || all.len() >= 1000 {
            break;
        }
        token = page.next_page_token;
    }
    all.sort_by_key(|i| std::cmp::Reverse(ms(i.last_seen.as_ref())));
    Ok(all)
}

/// The cameras of every ingester shard, by id, and what went wrong asking any of them.
async fn cameras(console: &Console, session: &Session) -> (Vec<CameraRow>, Option<String>) {
    let (mut rows, mut errors) = (Vec::new(), Vec::new());
    for mut ingester in console.backend().ingesters(session) {
        match ingester.list_cameras(pb::ListCamerasRequest::default()).await {
            Ok(r) => rows.extend(r.into_inner().cameras.into_iter().map(|c| CameraRow {
                id: c.config.map(|c| c.camera_id).unwrap_or_default(),
                state:
                    pb::CameraState::try_from(c.state).map_or("unknown".into(), |s| {
                        s.as_str_name().trim_start_matches("CAMERA_STATE_").to_lowercase()
                    }),
                input_fps: format!("{:.1}", c.input_fps),
                processed_fps: format!("{:.1}", c.processed_fps),
                frames: c.frames_processed,
                tracklets: c.tracklets_emitted,
                reconnects: c.reconnects,
                last_error: c.last_error,
            })),
            Err(status) => errors.push(format!("an ingester did not answer: {}", status.message())),
        }
    }
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    (rows, (!errors.is_empty()).then(|| errors.join("; ")))
}

pub(crate) async fn index(State(console): State<Console>, headers: HeaderMap) -> Result<Response, PageError> {
    let session = console.session(&headers)?;
    let identities: Vec<IdentityRow> = all_identities(&console, &session)
        .await?
        .into_iter()
        .map(|i| IdentityRow {
            short: short(&i.identity_id),
            id: i.identity_id,
            name: i.name,
            enrolled: i.enrolled,
            sightings: i.sightings,
            cameras: i.cameras.join(", "),
            last_seen: clock(ms(i.last_seen.as_ref())),
        })
        .collect();
    let (cameras, cameras_error) = cameras(&console, &session).await;
    console.render(
        "index.html",
        context! {
            csrf => session.csrf, may_change => session.may_change(), keyed => console.sessions().keyed(),
            identities, cameras, cameras_error, has_ingester => !console.config().ingester_urls.is_empty(),
        },
    )
}

#[derive(Debug, Serialize)]
struct SightingView {
    camera: String,
    track: String,
    start: String,
    end: String,
    seconds: String,
    score: String,
    thumbnail: Option<String>,
    merged_from: String,
    /// Where the sighting sits on the identity's timeline, in percent.
    left: f64,
    width: f64,
}

pub(crate) async fn identity(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let session = console.session(&headers)?;
    let everyone = all_identities(&console, &session).await?;
    let summary = everyone
        .iter()
        .find(|i| i.identity_id == id)
        .cloned()
        .ok_or_else(|| PageError::NotFound(format!("no identity {}", reid_server::truncated(&id, 64))))?;
    let sightings = console
        .backend()
        .identity(&session)
        .sightings(pb::SightingsRequest { identity_id: id.clone(), ..Default::default() })
        .await?
        .into_inner()
        .sightings;
    let first = sightings.iter().map(|s| ms(s.start.as_ref())).min().unwrap_or(0);
    let last = sightings.iter().map(|s| ms(s.end.as_ref())).max().unwrap_or(0);
    let span = (last - first).max(1) as f64;
    let mut by_camera: BTreeMap<String, Vec<SightingView>> = BTreeMap::new();
    for s in sightings {
        let (start, end) = (ms(s.start.as_ref()), ms(s.end.as_ref()));
        by_camera.entry(s.camera_id.clone()).or_default().push(SightingView {
            camera: s.camera_id,
            track: s.track_id,
            start: clock(start),
            end: clock(end),
            seconds: format!("{:.1}", (end - start) as f64 / 1000.0),
            score: format!("{:.3}", s.score),
            thumbnail: (!s.thumbnail.is_empty()).then_some(s.thumbnail),
            merged_from: short(&s.merged_from),
            left: 100.0 * (start - first) as f64 / span,
            width: (100.0 * (end - start) as f64 / span).max(0.5),
        });
    }
    let others: Vec<(String, String)> = everyone
        .iter()
        .filter(|i| i.identity_id != id)
        .map(|i| (i.identity_id.clone(), if i.name.is_empty() { short(&i.identity_id) } else { i.name.clone() }))
        .collect();
    console.render(
        "identity.html",
        context! {
            csrf => session.csrf, may_change => session.may_change(), keyed => console.sessions().keyed(),
            id, short => short(&summary.identity_id), name => summary.name, enrolled => summary.enrolled,
            sightings => summary.sightings, first_seen => clock(first), last_seen => clock(last),
            by_camera, others,
        },
    )
}

/// A stored crop (a sighting's thumbnail or an enrolled image), for a logged-in user.
pub(crate) async fn crop(
    State(console): State<Console>,
    headers: HeaderMap,
    Path((identity, file)): Path<(String, String)>,
) -> Result<Response, PageError> {
    console.session(&headers)?;
    let plain =
        |s: &str| !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    let dir = console.config().crops_dir.as_ref().ok_or_else(|| PageError::NotFound("no crops_dir".into()))?;
    let path = dir.join(&identity).join(&file);
    if !plain(&identity) || !plain(&file) || path.components().any(|c| c == Component::ParentDir) {
        return Err(PageError::BadRequest("not a crop".into()));
    }
    let content_type = match file.rsplit('.').next() {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("bmp") => "image/bmp",
        _ => "application/octet-stream",
    };
    let bytes = tokio::fs::read(&path).await.map_err(|_| PageError::NotFound("no such crop".into()))?;
    Ok(([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "private, max-age=300")], bytes).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_utc_dates() {
        assert_eq!(clock(0), "");
        assert_eq!(clock(1_000), "1970-01-01 00:00:01");
        assert_eq!(clock(951_782_400_000 + 3_723_000), "2000-02-29 01:02:03", "a leap day");
        assert_eq!(clock(1_796_515_200_000), "2026-12-06 00:00:00");
    }
}
