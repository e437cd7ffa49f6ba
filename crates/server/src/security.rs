//! API keys and TLS, for both ends of every reid connection.
//!
//! A server with an API key refuses, with `UNAUTHENTICATED` and before any handler runs, every
//! call that does not carry a key it knows as `authorization: Bearer KEY` (or `x-api-key: KEY`)
//! metadata. The one exception is `grpc.health.v1.Health`: it says only SERVING or not, and
//! Kubernetes' gRPC probes and load balancers cannot send metadata. Reflection needs a key like
//! everything else.
//!
//! Keys have roles ([`Role`]): `api_key` is the administrator's (every call; services also send it
//! to each other), `edge_api_key` is for cameras and edge devices (pushing frames and detections,
//! embedding, observing tracklets), `viewer_api_key` for read-only clients (identify, sightings,
//! listings). A known key calling outside its role gets `PERMISSION_DENIED`.
//!
//! TLS is rustls (ring): a server certificate and key turn TLS on; a client CA on top requires
//! client certificates signed by it (mutual TLS). Clients trust the system roots plus `tls_ca`,
//! present `tls_client_cert`/`tls_client_key` when the server asks, and use TLS for `https://` URLs.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Context as _;
use serde::Deserialize;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

use crate::invalid::{Invalid, ensure};

/// Health checks stay open: they reveal nothing and probes cannot carry a key.
const OPEN_PREFIX: &str = "/grpc.health.v1.Health/";

/// One service's security: what it requires of its callers and what it shows the services it
/// calls. Every field is optional; the default is plaintext without a key (loopback use).
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Security {
    /// The administrator's key: allowed every call, and sent to the services this one calls.
    pub api_key: Option<String>,
    /// Cameras and edge devices: push frames and detections, embed, observe tracklets.
    pub edge_api_key: Option<String>,
    /// Read-only clients: identify, sightings, listings, model and camera information.
    pub viewer_api_key: Option<String>,
    /// Connection limits of this service's server.
    pub connections: crate::connections::ConnectionLimits,
    /// Server certificate chain (PEM); with `tls_key`, the server speaks TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS.
    pub tls_client_ca: Option<PathBuf>,
    /// Extra CA (PEM) trusted when calling `https://` services.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key (PEM) presented to mutual-TLS services.
    pub tls_client_cert: Option<PathBuf>,
    pub tls_client_key: Option<PathBuf>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |k: &Option<String>| k.as_ref().map(|_| "<set>");
        f.debug_struct("Security")
            .field("api_key", &set(&self.api_key))
            .field("edge_api_key", &set(&self.edge_api_key))
            .field("viewer_api_key", &set(&self.viewer_api_key))
            .field("connections", &self.connections)
            .field("tls_cert", &self.tls_cert)
            .field("tls_client_ca", &self.tls_client_ca)
            .field("tls_ca", &self.tls_ca)
            .field("tls_client_cert", &self.tls_client_cert)
            .finish_non_exhaustive()
    }
}

/// A key must be sendable as a header value, whole: a key that is not would silently be left off
/// every call (and every call refused), so it is refused loudly at start-up instead.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.trim().is_empty() {
        return Err("is empty: leave it unset to accept calls without a key".into());
    }
    if let Some(bad) = key.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(format!(
            "holds {bad:?}, which cannot be sent in a gRPC header: only printable ASCII \
             (a key captured with `docker compose exec` without -T ends in \\r)"
        ));
    }
    Ok(())
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

impl Security {
    /// Checks that what is given goes together; called by each service's config validation.
    /// Keys are named within this table (`api_key`, `connections.max_connections`).
    pub fn validate(&self) -> Result<(), Invalid> {
        let keys = [
            ("api_key", &self.api_key),
            ("edge_api_key", &self.edge_api_key),
            ("viewer_api_key", &self.viewer_api_key),
        ];
        for (name, key) in keys {
            if let Some(key) = key {
                check_key(key).map_err(|reason| Invalid::new(name, reason))?;
            }
        }
        ensure(
            self.api_key.is_some() || (self.edge_api_key.is_none() && self.viewer_api_key.is_none()),
            "api_key",
            || "must be set (the administrator's) when edge_api_key or viewer_api_key is".into(),
        )?;
        let given: Vec<&String> = keys.iter().filter_map(|(_, k)| k.as_ref()).collect();
        ensure(!given.iter().enumerate().any(|(i, a)| given[..i].contains(a)), "api_key", || {
            "api_key, edge_api_key and viewer_api_key must differ".into()
        })?;
        self.connections.validate().map_err(|e| e.within("connections"))?;
        ensure(self.tls_cert.is_some() == self.tls_key.is_some(), "tls_key", || {
            "goes with tls_cert: set both or neither".into()
        })?;
        ensure(self.tls_client_ca.is_none() || self.tls_cert.is_some(), "tls_client_ca", || {
            "(mutual TLS) needs tls_cert and tls_key".into()
        })?;
        ensure(self.tls_client_cert.is_some() == self.tls_client_key.is_some(), "tls_client_key", || {
            "goes with tls_client_cert: set both or neither".into()
        })
    }

    /// The server's TLS settings, `None` for plaintext.
    pub fn server_tls(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else { return Ok(None) };
        let mut tls =
            ServerTlsConfig::new().identity(Identity::from_pem(read(cert, "TLS certificate")?, read(key, "TLS key")?));
        if let Some(ca) = &self.tls_client_ca {
            tls = tls.client_ca_root(Certificate::from_pem(read(ca, "client CA")?));
        }
        Ok(Some(tls))
    }

    /// The layer that refuses calls without a known key, or outside the key's role (a no-op
    /// without keys).
    pub fn require_key(&self) -> RequireApiKey {
        let keys =
            [(&self.api_key, Role::Admin), (&self.edge_api_key, Role::Edge), (&self.viewer_api_key, Role::Viewer)]
                .into_iter()
                .filter_map(|(k, role)| k.as_ref().map(|k| (Arc::from(k.as_bytes()), role)))
                .collect::<Vec<_>>();
        RequireApiKey { keys: (!keys.is_empty()).then(|| Arc::from(keys)) }
    }

    /// An endpoint for `addr` (`host:port` or URL): TLS for `https://`, with this service's CA
    /// and client certificate.
    pub fn endpoint(&self, addr: &str) -> anyhow::Result<Endpoint> {
        let url = crate::grpc_url(addr);
        let endpoint = Endpoint::from_shared(url.clone()).with_context(|| format!("invalid address {addr}"))?;
        if !url.starts_with("https://") {
            return Ok(endpoint);
        }
        endpoint.tls_config(self.client_tls()?).with_context(|| format!("TLS settings for {addr}"))
    }

    /// What a client trusts (system roots plus `tls_ca`) and shows (its certificate, if any).
    pub fn client_tls(&self) -> anyhow::Result<ClientTlsConfig> {
        let mut tls = ClientTlsConfig::new().with_native_roots();
        if let Some(ca) = &self.tls_ca {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca, "TLS CA")?));
        }
        if let (Some(cert), Some(key)) = (&self.tls_client_cert, &self.tls_client_key) {
            tls = tls.identity(Identity::from_pem(read(cert, "TLS client certificate")?, read(key, "TLS client key")?));
        }
        Ok(tls)
    }

    /// Wraps `channel` so that every call carries this service's key.
    pub fn channel(&self, channel: tonic::transport::Channel) -> Channel {
        InterceptedService::new(channel, ApiKey::new(self.api_key.as_deref()))
    }
}

/// A channel whose calls carry the API key: what every reid client is built on.
pub type Channel = InterceptedService<tonic::transport::Channel, ApiKey>;

/// Adds `authorization: Bearer KEY` to every outgoing call (nothing without a key).
#[derive(Clone, Debug)]
pub struct ApiKey(Option<MetadataValue<tonic::metadata::Ascii>>);

impl ApiKey {
    pub fn new(key: Option<&str>) -> Self {
        // A key that cannot be a header value is sent as nothing, and the server refuses the call.
        ApiKey(key.and_then(|k| format!("Bearer {k}").parse().ok()))
    }
}

impl Interceptor for ApiKey {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every call.
    Admin,
    /// Cameras and edge devices.
    Edge,
    /// Read-only clients.
    Viewer,
}

/// The calls of cameras and edge devices: what an ingester or an edge box sends.
const EDGE_CALLS: &[&str] = &[
    "/reid.v1.EmbedderService/Embed",
    "/reid.v1.EmbedderService/EmbedStream",
    "/reid.v1.EmbedderService/GetModel",
    "/reid.v1.IdentityService/Observe",
    "/reid.v1.IngesterService/PushFrames",
    "/reid.v1.IngesterService/PushDetections",
];

/// The calls that read and change nothing stored.
const VIEWER_CALLS: &[&str] = &[
    "/reid.v1.EmbedderService/GetModel",
    "/reid.v1.IdentityService/Identify",
    "/reid.v1.IdentityService/ListIdentities",
    "/reid.v1.IdentityService/Sightings",
    "/reid.v1.IdentityService/Watch",
    "/reid.v1.IngesterService/ListCameras",
    "/reid.v1.TrainerService/ListRuns",
    "/reid.v1.TrainerService/WatchRun",
];

/// Server reflection describes the contract, which is public: every key may ask.
const REFLECTION_PREFIX: &str = "/grpc.reflection.";

impl Role {
    /// Whether this role may call the gRPC method at `path`; a method in no list is the
    /// administrator's alone.
    pub fn allows(self, path: &str) -> bool {
        match self {
            Role::Admin => true,
            _ if path.starts_with(REFLECTION_PREFIX) => true,
            Role::Edge => EDGE_CALLS.contains(&path),
            Role::Viewer => VIEWER_CALLS.contains(&path),
        }
    }
}

/// The keys a server knows, each with its role.
type Keys = Arc<[(Arc<[u8]>, Role)]>;

/// Tower layer: refuses calls whose metadata lacks a known key, or whose key's role does not
/// allow the method, before routing.
#[derive(Clone, Debug, Default)]
pub struct RequireApiKey {
    keys: Option<Keys>,
}

impl<S> tower_layer::Layer<S> for RequireApiKey {
    type Service = RequireApiKeyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireApiKeyService { keys: self.keys.clone(), inner, refusals: Arc::default() }
    }
}

#[derive(Clone, Debug)]
pub struct RequireApiKeyService<S> {
    keys: Option<Keys>,
    inner: S,
    refusals: Arc<RefusalLog>,
}

/// Refused calls are logged at most once a second, with how many were refused since: one
/// client's loop of bad calls must not flood the log.
#[derive(Debug, Default)]
struct RefusalLog {
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl RefusalLog {
    fn refused(&self, path: &str, why: &'static str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 += 1;
        if state.0.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(1)) {
            let refused = std::mem::take(&mut state.1);
            state.0 = Some(std::time::Instant::now());
            tracing::warn!(path = %truncated(path, 128), why, refused, "refused calls (API key)");
        }
    }
}

/// At most `max` bytes of `s`, cut at a character boundary, marked when cut: error messages and
/// logs never echo a caller's input in full.
pub fn truncated(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...({} bytes)", &s[..end], s.len()).into()
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The role of the key the call carries, if it carries a known one. Every key is compared, so
/// the time taken does not say which one matched.
fn role_of(headers: &http::HeaderMap, keys: &[(Arc<[u8]>, Role)]) -> Option<Role> {
    let bearer = headers.get(http::header::AUTHORIZATION).and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    let plain = headers.get("x-api-key").map(http::HeaderValue::as_bytes);
    let mut found = None;
    for given in bearer.into_iter().chain(plain) {
        for (key, role) in keys {
            if same(given, key) && found.is_none() {
                found = Some(*role);
            }
        }
    }
    found
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> tower_service::Service<http::Request<B>> for RequireApiKeyService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let refusal = match &self.keys {
            None => None,
            Some(_) if path.starts_with(OPEN_PREFIX) => None,
            Some(keys) => match role_of(request.headers(), keys) {
                Some(role) if role.allows(path) => None,
                Some(_) => {
                    Some((tonic::Status::permission_denied("this API key's role does not allow this call"), "role"))
                }
                None => {
                    let given = request.headers().contains_key(http::header::AUTHORIZATION)
                        || request.headers().contains_key("x-api-key");
                    let message =
                        if given { "wrong API key" } else { "missing API key: send `authorization: Bearer KEY`" };
                    Some((tonic::Status::unauthenticated(message), if given { "wrong key" } else { "no key" }))
                }
            },
        };
        match refusal {
            None => Box::pin(self.inner.call(request)),
            Some((status, why)) => {
                self.refusals.refused(path, why);
                let response = status.into_http();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_compared_whole() {
        let carries =
            |headers: &http::HeaderMap, key: &[u8]| role_of(headers, &[(Arc::from(key), Role::Admin)]).is_some();
        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", "Bearer secret".parse().unwrap_or_else(|_| unreachable!()));
        assert!(carries(&headers, b"secret"));
        assert!(!carries(&headers, b"secre"));
        assert!(!carries(&headers, b"secret2"));
        let mut headers = http::HeaderMap::new();
        headers.insert("x-api-key", "secret".parse().unwrap_or_else(|_| unreachable!()));
        assert!(carries(&headers, b"secret"));
        assert!(!carries(&http::HeaderMap::new(), b"secret"));
    }

    #[test]
    fn roles_allow_their_calls_only() {
        assert!(Role::Admin.allows("/reid.v1.IdentityService/Forget"));
        assert!(Role::Edge.allows("/reid.v1.IngesterService/PushFrames"));
        assert!(Role::Edge.allows("/reid.v1.IdentityService/Observe"));
        assert!(!Role::Edge.allows("/reid.v1.IdentityService/Forget"));
        assert!(!Role::Edge.allows("/reid.v1.IdentityService/Identify"));
        assert!(!Role::Edge.allows("/reid.v1.TrainerService/StartRun"));
        assert!(Role::Viewer.allows("/reid.v1.IdentityService/Identify"));
        assert!(!Role::Viewer.allows("/reid.v1.IdentityService/Enroll"));
        assert!(!Role::Viewer.allows("/reid.v1.EmbedderService/LoadModel"));
        assert!(!Role::Viewer.allows("/reid.v1.IdentityService/Identify/x"));
        assert!(Role::Viewer.allows("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"));
    }

    #[test]
    fn long_inputs_are_cut_in_messages() {
        assert_eq!(truncated("short", 10), "short");
        let long = "é".repeat(100);
        let cut = truncated(&long, 9);
        assert!(cut.starts_with("éééé") && cut.ends_with("(200 bytes)"), "{cut}");
    }

    #[test]
    fn settings_that_do_not_go_together_are_refused() {
        let half = Security { tls_cert: Some("c.pem".into()), ..Security::default() };
        assert_eq!(half.validate().unwrap_err().key, "tls_key");
        let mtls = Security { tls_client_ca: Some("ca.pem".into()), ..Security::default() };
        assert!(mtls.validate().unwrap_err().reason.contains("needs tls_cert"));
        let empty = Security { api_key: Some(" ".into()), ..Security::default() };
        assert_eq!(empty.validate().unwrap_err().key, "api_key");
        let tty = Security { edge_api_key: Some("abc\r\n".into()), api_key: Some("a".into()), ..Security::default() };
        let refused = tty.validate().unwrap_err();
        assert_eq!(refused.key, "edge_api_key");
        assert!(refused.reason.contains("-T"), "a key with a carriage return is refused loudly");
        let tab = Security { api_key: Some("two\twords".into()), ..Security::default() };
        assert!(tab.validate().is_err());
        let alone = Security { viewer_api_key: Some("v".into()), ..Security::default() };
        assert_eq!(alone.validate().unwrap_err().key, "api_key");
        let same = Security { api_key: Some("k".into()), edge_api_key: Some("k".into()), ..Security::default() };
        assert!(same.validate().unwrap_err().reason.contains("must differ"));
        let limits = crate::ConnectionLimits { max_connections: 0, ..Default::default() };
        let idle = Security { connections: limits, ..Security::default() };
        assert_eq!(idle.validate().unwrap_err().key, "connections.max_connections");
        let spaced = Security { api_key: Some("correct horse battery staple".into()), ..Security::default() };
        assert!(spaced.validate().is_ok(), "spaces can be sent in a header");
        let fine = Security { api_key: Some("0123abcdef-_.~+/=".into()), ..Security::default() };
        assert!(fine.validate().is_ok());
        assert!(Security::default().validate().is_ok());
    }
}
