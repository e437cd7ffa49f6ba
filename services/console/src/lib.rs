//! The operators' web console (`reid serve console`, and `reid up`): the cameras with their health
//! and frame rates, the identities with their crops per camera and a timeline, search by photo,
//! enroll, rename and forget, confirm / reject / merge / split (feeding `Feedback`), and the
//! identity events as they happen. Server-rendered pages (axum + minijinja templates compiled
//! into the binary, no CDN) over the services' gRPC APIs, called with the key the user logged in
//! with (docs/console.md).
//!
//! - [`session`]: logins, the session cookie and CSRF tokens;
//! - [`backend`]: the gRPC clients, keyed per user;
//! - [`pages`]: what is shown; [`actions`]: the forms that change something; [`live`]: events
//!   as server-sent events.

#![warn(unreachable_pub)]

mod actions;
mod backend;
mod config;
mod live;
mod pages;
mod session;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;

pub use config::ConsoleConfig;
use session::{Session, Sessions};

/// What every handler shares.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    config: ConsoleConfig,
    sessions: Sessions,
    backend: backend::Backend,
    templates: minijinja::Environment<'static>,
    /// True once the server shuts down: live event streams end then.
    closing: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").field("identity", &self.inner.config.identity_url).finish_non_exhaustive()
    }
}

fn templates() -> anyhow::Result<minijinja::Environment<'static>> {
    let mut env = minijinja::Environment::new();
    for (name, source) in [
        ("base.html", include_str!("../templates/base.html")),
        ("login.html", include_str!("../templates/login.html")),
        ("index.html", include_str!("../templates/index.html")),
        ("identity.html", include_str!("../templates/identity.html")),
        ("search.html", include_str!("../templates/search.html")),
        ("error.html", include_str!("../templates/error.html")),
    ] {
        env.add_template(name, source)?;
    }
    Ok(env)
}

impl Console {
    pub fn new(config: ConsoleConfig, closing: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<Self> {
        config.validate()?;
        let sessions = Sessions::new(&config);
        let backend = backend::Backend::new(&config)?;
        Ok(Self { inner: Arc::new(Inner { config, sessions, backend, templates: templates()?, closing }) })
    }

    pub fn config(&self) -> &ConsoleConfig {
        &self.inner.config
    }

    pub fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    pub fn backend(&self) -> &backend::Backend {
        &self.inner.backend
    }

    /// The request's session, or the answer that sends its user to log in.
    pub fn session(&self, headers: &HeaderMap) -> Result<Session, PageError> {
        self.inner.sessions.of(headers).map(|(_, s)| s).ok_or(PageError::Login)
    }

    /// A page from its template.
    pub fn render(&self, name: &str, context: minijinja::Value) -> Result<Response, PageError> {
        let html = self
            .inner
            .templates
            .get_template(name)
            .and_then(|t| t.render(context))
            .map_err(|e| PageError::Internal(format!("template {name}: {e:#}")))?;
        Ok(page(Html(html)))
    }

    /// The router: every page, form and stream.
    pub fn router(self) -> Router {
        let limit = self.inner.config.max_upload_bytes;
        Router::new()
            .route("/", get(pages::index))
            .route("/login", get(pages::login_form).post(actions::login))
            .route("/logout", post(actions::logout))
            .route("/identities/{id}", get(pages::identity))
            .route("/identities/{id}/rename", post(actions::rename))
            .route("/identities/{id}/forget", post(actions::forget))
            .route("/identities/{id}/merge", post(actions::merge))
            .route("/identities/{id}/feedback", post(actions::feedback))
            .route("/search", post(actions::search))
            .route("/enroll", post(actions::enroll))
            .route("/crops/{identity}/{file}", get(pages::crop))
            .route("/events", get(live::events))
            .route(
                "/static/console.css",
                get(|| async { static_file("text/css", include_str!("../static/console.css")) }),
            )
            .route(
                "/static/console.js",
                get(|| async { static_file("text/javascript", include_str!("../static/console.js")) }),
            )
            .route("/healthz", get(|| async { "ok" }))
            .layer(DefaultBodyLimit::max(limit + (64 << 10)))
            .with_state(self)
    }
}

/// Pages are not cached and not framed by other sites.
fn page(body: impl IntoResponse) -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'"),
            (header::REFERRER_POLICY, "same-origin"),
        ],
        body,
    )
        .into_response()
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "max-age=300")], body).into_response()
}

/// Why a page cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("log in first")]
    Login,
    #[error("the form is stale or forged (its CSRF token is not this session's): reload the page")]
    Csrf,
    #[error("{0}")]
    BadRequest(String),
    #[error("{}: {}", .0.code(), .0.message())]
    Service(#[from] tonic::Status),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Internal(String),
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        use tonic::Code;
        let status = match &self {
            PageError::Login => return Redirect::to("/login").into_response(),
            PageError::Csrf => StatusCode::FORBIDDEN,
            PageError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PageError::NotFound(_) => StatusCode::NOT_FOUND,
            PageError::Service(s) => match s.code() {
                Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
                Code::NotFound => StatusCode::NOT_FOUND,
                Code::PermissionDenied | Code::Unauthenticated => StatusCode::FORBIDDEN,
                Code::Unavailable | Code::DeadlineExceeded => StatusCode::BAD_GATEWAY,
                Code::FailedPrecondition => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            PageError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::warn!(error = %self, "console page failed");
        }
        let text = self.to_string();
        let message = reid_server::truncated(&text, 1024);
        let html = minijinja::Environment::new()
            .template_from_named_str("error.html", include_str!("../templates/error.html"))
            .and_then(|t| t.render(minijinja::context! { status => status.as_u16(), message }))
            .unwrap_or_else(|_| "error".to_owned());
        (status, page(Html(html))).into_response()
    }
}

/// Serves the console on `listener` until `shutdown` resolves.
pub async fn run(
    config: ConsoleConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (shutdown, closing) = reid_server::announced(shutdown);
    let console = Console::new(config, closing)?;
    if !console.sessions().keyed() {
        tracing::warn!("the console asks for no login: the deployment has no api_key");
    }
    tracing::info!(addr = %listener.local_addr()?, "serving the console");
    axum::serve(listener, console.router()).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
