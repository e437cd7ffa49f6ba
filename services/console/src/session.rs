//! Logins: a user proves they hold one of the deployment's keys once, and gets a session cookie
//! (`HttpOnly`, `SameSite=Strict`) naming a session kept here. The key stays on the server: pages
//! never carry it. Every form that changes something carries the session's CSRF token, checked
//! against the session before anything is sent to a service.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use reid_server::Role;
use sha2::{Digest, Sha256};

use crate::config::ConsoleConfig;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "reid_console";

/// One login.
#[derive(Debug, Clone)]
pub struct Session {
    /// The key the services are called with; `None` on an unkeyed deployment.
    pub key: Option<String>,
    pub role: Role,
    /// Every state-changing form must carry this.
    pub csrf: String,
    expires: Instant,
}

impl Session {
    pub fn may_change(&self) -> bool {
        self.role == Role::Admin
    }
}

#[derive(Debug)]
pub struct Sessions {
    keys: Vec<(String, Role)>,
    ttl: Duration,
    secure: bool,
    live: Mutex<HashMap<String, Session>>,
}

/// 244 random bits, as hex.
fn token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// Equal without telling, by its timing, how much of a guess was right.
fn same(a: &str, b: &str) -> bool {
    Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes())
}

impl Sessions {
    pub fn new(config: &ConsoleConfig) -> Self {
        let s = &config.security;
        let keys = [(&s.api_key, Role::Admin), (&s.viewer_api_key, Role::Viewer)]
            .into_iter()
            .filter_map(|(k, role)| k.clone().map(|k| (k, role)))
            .collect();
        Self { keys, ttl: config.session_ttl, secure: config.secure_cookie, live: Mutex::default() }
    }

    /// Whether a login is needed at all.
    pub fn keyed(&self) -> bool {
        !self.keys.is_empty()
    }

    /// A new session for `key` when it is one of the deployment's console keys; its id.
    pub fn login(&self, key: &str) -> Option<String> {
        let role = self.keys.iter().find(|(k, _)| same(k, key.trim())).map(|(_, role)| *role)?;
        Some(self.open(Some(key.trim().to_owned()), role))
    }

    fn open(&self, key: Option<String>, role: Role) -> String {
        let id = token();
        let session = Session { key, role, csrf: token(), expires: Instant::now() + self.ttl };
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|_, s| s.expires > Instant::now());
        live.insert(id.clone(), session);
        id
    }

    pub fn logout(&self, id: &str) {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    /// The session the request's cookie names, if it is live. On an unkeyed deployment every
    /// request gets one (opened on first use, kept by the cookie set then).
    pub fn of(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = cookie(headers, COOKIE)?;
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let session = live.get(&id).filter(|s| s.expires > Instant::now())?.clone();
        Some((id, session))
    }

    /// A session for an unkeyed deployment (no login to ask for).
    pub fn open_unkeyed(&self) -> Option<String> {
        (!self.keyed()).then(|| self.open(None, Role::Admin))
    }

    /// The `Set-Cookie` value for session `id`.
    pub fn set_cookie(&self, id: &str) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}", self.ttl.as_secs())
    }

    pub fn clear_cookie(&self) -> String {
        format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    }
}

/// Whether a submitted CSRF token is the session's.
pub(crate) fn csrf_ok(session: &Session, submitted: &str) -> bool {
    !submitted.is_empty() && same(&session.csrf, submitted)
}

/// The value of cookie `name` in the request.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sessions() -> Sessions {
        let mut config = ConsoleConfig::default();
        config.security.api_key = Some("admin-key".into());
        config.security.viewer_api_key = Some("viewer-key".into());
        Sessions::new(&config)
    }

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::COOKIE, value.parse().unwrap());
        h
    }

    #[test]
    fn a_login_is_one_of_the_keys_and_its_cookie_names_a_live_session() {
        let s = sessions();
        assert!(s.login("wrong").is_none() && s.login("").is_none());
        let admin = s.login("admin-key").unwrap();
        let (_, session) = s.of(&with_cookie(&format!("theme=dark; {COOKIE}={admin}"))).unwrap();
        assert!(session.may_change() && session.key.as_deref() == Some("admin-key"));
        let viewer = s.login("viewer-key\n").unwrap();
        assert!(!s.of(&with_cookie(&format!("{COOKIE}={viewer}"))).unwrap().1.may_change());
        assert!(s.of(&with_cookie(&format!("{COOKIE}=forged"))).is_none());
        assert!(s.open_unkeyed().is_none(), "a keyed console opens no session without a login");
        s.logout(&admin);
        assert!(s.of(&with_cookie(&format!("{COOKIE}={admin}"))).is_none());
        let cookie = s.set_cookie(&viewer);
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    }

    #[test]
    fn forms_need_the_sessions_own_token() {
        let s = sessions();
        let (_, a) = s.of(&with_cookie(&format!("{COOKIE}={}", s.login("admin-key").unwrap()))).unwrap();
        let (_, b) = s.of(&with_cookie(&format!("{COOKIE}={}", s.login("admin-key").unwrap()))).unwrap();
        assert!(csrf_ok(&a, &a.csrf));
        assert!(!csrf_ok(&a, &b.csrf) && !csrf_ok(&a, ""));
    }
}
