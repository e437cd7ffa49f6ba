#![allow(clippy::unwrap_used)]
//! The console's HTTP surface against a real identity service (in-process, port 0, with keys):
//! login and its cookie, pages that never show a key, CSRF-checked forms, the viewer's
//! read-only view enforced by the service, service errors as pages with their status, and crop
//! paths that cannot leave the crops folder. The browser-level walk-through (identities
//! appearing, search by photo, merge, forget) is `tests/browser/console_check.py`.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use reid_console::{Console, ConsoleConfig};
use reid_server::Security;
use tower::ServiceExt;

const ADMIN: &str = "admin-key-123";
const VIEWER: &str = "viewer-key-456";

struct Fixture {
    console: Console,
    _dir: tempfile::TempDir,
    _closed: tokio::sync::watch::Sender<bool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let security = Security { api_key: Some(ADMIN.into()), viewer_api_key: Some(VIEWER.into()), ..Security::default() };
    let identity = reid_identity::IdentityConfig {
        data_dir: dir.path().join("identity"),
        security: security.clone(),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(reid_identity::run(identity, listener, async move {
        let _ = stopped.await;
    }));
    let config = ConsoleConfig {
        identity_url: format!("http://{addr}"),
        crops_dir: Some(dir.path().join("identity/crops")),
        security,
        ..ConsoleConfig::default()
    };
    let (closed, closing) = tokio::sync::watch::channel(false);
    // Wait until the identity service listens.
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Fixture { console: Console::new(config, closing).unwrap(), _dir: dir, _closed: closed, stop: Some(stop) }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn send(f: &Fixture, request: Request<Body>) -> Response {
    f.console.clone().router().oneshot(request).await.unwrap()
}

async fn body(r: Response) -> String {
    String::from_utf8(axum::body::to_bytes(r.into_body(), 1 << 22).await.unwrap().to_vec()).unwrap()
}

fn get(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut r = Request::get(path);
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    r.body(Body::empty()).unwrap()
}

fn post(path: &str, cookie: Option<&str>, form: &str) -> Request<Body> {
    let mut r = Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    r.body(Body::from(form.to_owned())).unwrap()
}

/// Logs in with `key`; the cookie to send and the CSRF token its pages carry.
async fn login(f: &Fixture, key: &str) -> (String, String) {
    let r = send(f, post("/login", None, &format!("key={key}"))).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let set = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    let page = body(send(f, get("/", Some(&cookie))).await).await;
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    (cookie, csrf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_need_a_login_and_never_show_the_key() {
    let f = fixture().await;
    let r = send(&f, get("/", None)).await;
    assert_eq!((r.status(), r.headers()[header::LOCATION].to_str().unwrap()), (StatusCode::SEE_OTHER, "/login"));
    assert_eq!(send(&f, get("/events", None)).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(send(&f, get("/crops/a/b.jpg", None)).await.status(), StatusCode::SEE_OTHER);
    let refused = send(&f, post("/login", None, "key=guess")).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(!refused.headers().contains_key(header::SET_COOKIE));

    let (cookie, csrf) = login(&f, ADMIN).await;
    let r = send(&f, get("/", Some(&cookie))).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("frame-ancestors 'none'"));
    let page = body(r).await;
    assert!(page.contains("id=\"identities\"") && page.contains("id=\"enroll-form\""), "{page}");
    assert!(!page.contains(ADMIN) && !page.contains(VIEWER), "a page shows a key");
    assert!(csrf.len() >= 32);
    // A forged cookie is no session.
    assert_eq!(send(&f, get("/", Some("reid_console=forged"))).await.status(), StatusCode::SEE_OTHER);
    // Logging out ends the session.
    let out = send(&f, post("/logout", Some(&cookie), &format!("csrf={csrf}"))).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(send(&f, get("/", Some(&cookie))).await.status(), StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_are_checked_for_the_sessions_csrf_token_and_service_errors_keep_their_status() {
    let f = fixture().await;
    let (cookie, csrf) = login(&f, ADMIN).await;
    let (_, other_csrf) = login(&f, ADMIN).await;
    let unknown = "00000000-0000-0000-0000-000000000000";
    let rename = format!("/identities/{unknown}/rename");
    for form in ["name=x".to_owned(), format!("name=x&csrf={other_csrf}")] {
        let r = send(&f, post(&rename, Some(&cookie), &form)).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{form}");
        assert!(body(r).await.contains("CSRF"));
    }
    // With the token the service is asked, and its NOT_FOUND is the page's 404.
    let r = send(&f, post(&rename, Some(&cookie), &format!("name=x&csrf={csrf}"))).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(body(r).await.contains(unknown));
    // Forget wants its confirmation box ticked.
    let forget = format!("/identities/{unknown}/forget");
    assert_eq!(send(&f, post(&forget, Some(&cookie), &format!("csrf={csrf}"))).await.status(), StatusCode::BAD_REQUEST);
    let r = send(&f, post(&forget, Some(&cookie), &format!("csrf={csrf}&confirm=yes"))).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // A crop path cannot leave the crops folder.
    for path in ["/crops/..%2F..%2Fetc/passwd", "/crops/a/..", "/crops/a%2F..%2F../x.jpg"] {
        let status = send(&f, get(path, Some(&cookie))).await.status();
        assert!(status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND, "{path}: {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_sees_no_forms_and_the_service_refuses_its_changes() {
    let f = fixture().await;
    let (cookie, csrf) = login(&f, VIEWER).await;
    let page = body(send(&f, get("/", Some(&cookie))).await).await;
    assert!(page.contains("id=\"search-form\"") && !page.contains("id=\"enroll-form\""));
    let unknown = "00000000-0000-0000-0000-000000000000";
    let r =
        send(&f, post(&format!("/identities/{unknown}/rename"), Some(&cookie), &format!("name=x&csrf={csrf}"))).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "the identity service refuses the viewer's key");
}
