//! API keys and TLS, for both ends of every reid connection.
//!
//! A server with an API key refuses, with `UNAUTHENTICATED` and before any handler runs, every
//! call that does not carry it as `authorization: Bearer KEY` (or `x-api-key: KEY`) metadata. The
//! one exception is `grpc.health.v1.Health`: it says only SERVING or not, and Kubernetes' gRPC
//! probes and load balancers cannot send metadata. Reflection needs the key like everything else.
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

/// Health checks stay open: they reveal nothing and probes cannot carry a key.
const OPEN_PREFIX: &str = "/grpc.health.v1.Health/";

/// One service's security: what it requires of its callers and what it shows the services it
/// calls. Every field is optional; the default is plaintext without a key (loopback use).
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Security {
    /// Required from callers, and sent to the services this one calls.
    pub api_key: Option<String>,
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
        f.debug_struct("Security")
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("tls_cert", &self.tls_cert)
            .field("tls_client_ca", &self.tls_client_ca)
            .field("tls_ca", &self.tls_ca)
            .field("tls_client_cert", &self.tls_client_cert)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

impl Security {
    /// Checks that what is given goes together; called by each service's config validation.
    pub fn validate(&self) -> Result<(), String> {
        if self.api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
            return Err("api_key is empty: leave it unset to accept calls without a key".into());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("tls_cert and tls_key go together".into());
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err("tls_client_ca (mutual TLS) needs tls_cert and tls_key".into());
        }
        if self.tls_client_cert.is_some() != self.tls_client_key.is_some() {
            return Err("tls_client_cert and tls_client_key go together".into());
        }
        Ok(())
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

    /// The layer that refuses calls without the key (a no-op without one).
    pub fn require_key(&self) -> RequireApiKey {
        RequireApiKey { key: self.api_key.as_ref().map(|k| Arc::from(k.as_bytes())) }
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

/// Tower layer: refuses calls whose metadata lacks the key, before routing.
#[derive(Clone, Debug, Default)]
pub struct RequireApiKey {
    key: Option<Arc<[u8]>>,
}

impl<S> tower_layer::Layer<S> for RequireApiKey {
    type Service = RequireApiKeyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireApiKeyService { key: self.key.clone(), inner }
    }
}

#[derive(Clone, Debug)]
pub struct RequireApiKeyService<S> {
    key: Option<Arc<[u8]>>,
    inner: S,
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn carries(headers: &http::HeaderMap, key: &[u8]) -> bool {
    let bearer = headers.get(http::header::AUTHORIZATION).and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    let plain = headers.get("x-api-key").map(http::HeaderValue::as_bytes);
    bearer.into_iter().chain(plain).any(|given| same(given, key))
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
        let allowed = match &self.key {
            None => true,
            Some(key) => request.uri().path().starts_with(OPEN_PREFIX) || carries(request.headers(), key),
        };
        if allowed {
            return Box::pin(self.inner.call(request));
        }
        let given =
            request.headers().contains_key(http::header::AUTHORIZATION) || request.headers().contains_key("x-api-key");
        tracing::warn!(path = request.uri().path(), key_given = given, "refused: wrong or missing API key");
        let message = if given { "wrong API key" } else { "missing API key: send `authorization: Bearer KEY`" };
        let response = tonic::Status::unauthenticated(message).into_http();
        Box::pin(async move { Ok(response) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_compared_whole() {
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
    fn settings_that_do_not_go_together_are_refused() {
        let half = Security { tls_cert: Some("c.pem".into()), ..Security::default() };
        assert!(half.validate().unwrap_err().contains("tls_key"));
        let mtls = Security { tls_client_ca: Some("ca.pem".into()), ..Security::default() };
        assert!(mtls.validate().unwrap_err().contains("needs tls_cert"));
        let empty = Security { api_key: Some(" ".into()), ..Security::default() };
        assert!(empty.validate().is_err());
        assert!(Security::default().validate().is_ok());
    }
}
