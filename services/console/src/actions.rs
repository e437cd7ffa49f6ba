//! The forms that change something: log in and out, search by photo, enroll, rename, forget,
//! merge, and confirm / reject / split a sighting (the identity service's `Feedback`). Each one
//! checks the session's CSRF token before it calls a service, and answers with a redirect to the
//! page that shows the result (or, for a search, the result itself).

use std::collections::HashMap;

use axum::Form;
use axum::extract::{FromRequest, FromRequestParts, Multipart, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use reid_proto::v1 as pb;
use serde::Serialize;

use reid_proto::time::millis_or_zero as ms;

use crate::pages::{clock, short};
use crate::session::{Session, csrf_ok};
use crate::{Console, PageError};

/// The session of a state-changing request whose form carries its CSRF token.
fn checked(console: &Console, headers: &HeaderMap, form: &HashMap<String, String>) -> Result<Session, PageError> {
    let session = console.session(headers)?;
    if !csrf_ok(&session, form.get("csrf").map_or("", String::as_str)) {
        return Err(PageError::Csrf);
    }
    Ok(session)
}

/// A form posted to `/identities/{id}/...`: the identity, the fields, and the session, whose CSRF
/// token the form carries (checked before the handler runs).
pub(crate) struct IdentityForm {
    id: String,
    form: HashMap<String, String>,
    session: Session,
}

impl FromRequest<Console> for IdentityForm {
    type Rejection = Response;

    async fn from_request(request: Request, console: &Console) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let Path(id) =
            Path::<String>::from_request_parts(&mut parts, console).await.map_err(IntoResponse::into_response)?;
        let headers = parts.headers.clone();
        let Form(form) = Form::<HashMap<String, String>>::from_request(Request::from_parts(parts, body), console)
            .await
            .map_err(IntoResponse::into_response)?;
        let session = checked(console, &headers, &form).map_err(IntoResponse::into_response)?;
        Ok(Self { id, form, session })
    }
}

fn field<'a>(form: &'a HashMap<String, String>, name: &str) -> Result<&'a str, PageError> {
    form.get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| PageError::BadRequest(format!("{name} is missing")))
}

fn to_identity(id: &str) -> Response {
    Redirect::to(&format!("/identities/{id}")).into_response()
}

pub(crate) async fn login(
    State(console): State<Console>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, PageError> {
    let key = form.get("key").map_or("", String::as_str);
    match console.sessions().login(key) {
        Some(id) => {
            let cookie = console.sessions().set_cookie(&id);
            Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response())
        }
        None => {
            tracing::warn!("console login refused");
            let page = console.render("login.html", context! { failed => true })?;
            Ok((StatusCode::UNAUTHORIZED, page).into_response())
        }
    }
}

pub(crate) async fn logout(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, PageError> {
    checked(&console, &headers, &form)?;
    if let Some((id, _)) = console.sessions().of(&headers) {
        console.sessions().logout(&id);
    }
    Ok(([(header::SET_COOKIE, console.sessions().clear_cookie())], Redirect::to("/login")).into_response())
}

pub(crate) async fn rename(
    State(console): State<Console>,
    IdentityForm { id, form, session }: IdentityForm,
) -> Result<Response, PageError> {
    let name = form.get("name").cloned().unwrap_or_default();
    console.backend().identity(&session).rename(pb::RenameRequest { identity_id: id.clone(), name }).await?;
    Ok(to_identity(&id))
}

pub(crate) async fn forget(
    State(console): State<Console>,
    IdentityForm { id, form, session }: IdentityForm,
) -> Result<Response, PageError> {
    if form.get("confirm").map(String::as_str) != Some("yes") {
        return Err(PageError::BadRequest("tick the box to confirm that this person is to be erased".into()));
    }
    console.backend().identity(&session).forget(pb::ForgetRequest { identity_id: id }).await?;
    Ok(Redirect::to("/").into_response())
}

/// `other` folded into this identity.
pub(crate) async fn merge(
    State(console): State<Console>,
    IdentityForm { id, form, session }: IdentityForm,
) -> Result<Response, PageError> {
    let request = pb::FeedbackRequest {
        kind: pb::FeedbackKind::Merge as i32,
        identity_a: id,
        identity_b: field(&form, "other")?.to_owned(),
        ..Default::default()
    };
    let kept = console.backend().identity(&session).feedback(request).await?.into_inner().identity_id;
    Ok(to_identity(&kept))
}

/// One sighting (camera + track) of this identity: `confirm` (it is this person), `reject` (it
/// is not) or `split` (move it out into an identity of its own).
pub(crate) async fn feedback(
    State(console): State<Console>,
    IdentityForm { id, form, session }: IdentityForm,
) -> Result<Response, PageError> {
    let kind = match field(&form, "verdict")? {
        "confirm" => pb::FeedbackKind::Confirm,
        "reject" => pb::FeedbackKind::Reject,
        "split" => pb::FeedbackKind::Split,
        other => return Err(PageError::BadRequest(format!("unknown verdict {}", reid_server::truncated(other, 32)))),
    };
    let request = pb::FeedbackRequest {
        kind: kind as i32,
        identity_a: id.clone(),
        camera_id: field(&form, "camera")?.to_owned(),
        track_id: field(&form, "track")?.to_owned(),
        ..Default::default()
    };
    let result = console.backend().identity(&session).feedback(request).await?.into_inner().identity_id;
    // A split shows the identity it made; the other verdicts stay on this one.
    Ok(to_identity(if kind == pb::FeedbackKind::Split { &result } else { &id }))
}

/// The text fields and files of a multipart form.
struct Upload {
    fields: HashMap<String, String>,
    files: Vec<Vec<u8>>,
}

/// A multipart form read whole, and the session, whose CSRF token its fields carry.
async fn checked_upload(
    console: &Console,
    headers: &HeaderMap,
    multipart: Multipart,
) -> Result<(Upload, Session), PageError> {
    let upload = upload(multipart).await?;
    let session = checked(console, headers, &upload.fields)?;
    Ok((upload, session))
}

async fn upload(mut multipart: Multipart) -> Result<Upload, PageError> {
    let bad = |e: axum::extract::multipart::MultipartError| PageError::BadRequest(format!("the upload: {e}"));
    let mut upload = Upload { fields: HashMap::new(), files: Vec::new() };
    while let Some(part) = multipart.next_field().await.map_err(bad)? {
        let name = part.name().unwrap_or_default().to_owned();
        if part.file_name().is_some() {
            let bytes = part.bytes().await.map_err(bad)?;
            if !bytes.is_empty() {
                upload.files.push(bytes.to_vec());
            }
        } else {
            upload.fields.insert(name, part.text().await.map_err(bad)?);
        }
    }
    Ok(upload)
}

fn image(bytes: Vec<u8>) -> pb::Image {
    pb::Image { data: Some(pb::image::Data::Encoded(bytes)) }
}

#[derive(Debug, Serialize)]
struct CandidateView {
    id: String,
    short: String,
    name: String,
    score: String,
    camera: String,
    seen_at: String,
    thumbnail: Option<String>,
}

/// Who is in this photo: the identity service's answer, with a crop of each candidate.
pub(crate) async fn search(
    State(console): State<Console>,
    headers: HeaderMap,
    multipart: Multipart,
) -> Result<Response, PageError> {
    let (upload, session) = checked_upload(&console, &headers, multipart).await?;
    let photo = upload.files.into_iter().next().ok_or_else(|| PageError::BadRequest("choose a photo".into()))?;
    let mut identity = console.backend().identity(&session);
    let request = pb::IdentifyRequest {
        probes: vec![pb::Probe { query: Some(pb::probe::Query::Image(image(photo))) }],
        top_k: 5,
        ..Default::default()
    };
    let result = identity.identify(request).await?.into_inner().results.into_iter().next().unwrap_or_default();
    let mut candidates = Vec::new();
    for c in result.candidates {
        let sightings = identity
            .sightings(pb::SightingsRequest { identity_id: c.identity_id.clone(), ..Default::default() })
            .await
            .map(|r| r.into_inner().sightings)
            .unwrap_or_default();
        let thumbnail = sightings
            .iter()
            .filter(|s| !s.thumbnail.is_empty())
            .max_by(|a, b| a.score.total_cmp(&b.score))
            .map(|s| s.thumbnail.clone());
        candidates.push(CandidateView {
            short: short(&c.identity_id),
            name: c.name,
            id: c.identity_id,
            score: format!("{:.3}", c.score),
            camera: c.camera_id,
            seen_at: clock(ms(c.seen_at.as_ref())),
            thumbnail,
        });
    }
    let known = result.decision == pb::Decision::Known as i32;
    console.render(
        "search.html",
        context! {
            csrf => session.csrf, keyed => console.sessions().keyed(), known, identity => result.identity_id,
            short => short(&result.identity_id), score => format!("{:.3}", result.score),
            margin => format!("{:.3}", result.margin), candidates,
        },
    )
}

/// A new person from photos (or more photos of one, with `identity`).
pub(crate) async fn enroll(
    State(console): State<Console>,
    headers: HeaderMap,
    multipart: Multipart,
) -> Result<Response, PageError> {
    let (upload, session) = checked_upload(&console, &headers, multipart).await?;
    if upload.files.is_empty() {
        return Err(PageError::BadRequest("choose at least one photo".into()));
    }
    let get = |name: &str| upload.fields.get(name).cloned().unwrap_or_default();
    let request = pb::EnrollRequest {
        identity_id: get("identity"),
        name: get("name"),
        external_id: get("external_id"),
        images: upload.files.into_iter().map(image).collect(),
    };
    let enrolled = console.backend().identity(&session).enroll(request).await?.into_inner();
    Ok(to_identity(&enrolled.identity_id))
}
