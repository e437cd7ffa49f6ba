//! Channels from one service to another, with client-side load balancing.
//!
//! An address is one of
//! - `host:port` or a URL (`http://`, `https://`): one endpoint;
//! - a comma-separated list of those: calls are spread over the endpoints that are up
//!   (power of two choices over pending requests, tower's balancer inside tonic);
//! - `dns:///host:port` (or `dns+https:///host:port`): `host` is resolved every
//!   [`RESOLVE_EVERY`] and every address it resolves to is an endpoint; endpoints come and go
//!   with the answers. A Kubernetes headless Service gives one address per ready pod.
//!
//! Every channel connects lazily, so a service starts whether or not the ones it calls are up.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tonic::transport::Endpoint;
use tonic::transport::channel::Change;

use crate::security::{Channel, Security};

/// How often `dns:///` targets are resolved again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(10);

/// What an address names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    One(String),
    List(Vec<String>),
    Dns { host: String, port: u16, tls: bool },
}

impl Target {
    pub fn parse(addr: &str) -> anyhow::Result<Target> {
        let addr = addr.trim();
        for (scheme, tls) in [("dns:///", false), ("dns+https:///", true)] {
            if let Some(rest) = addr.strip_prefix(scheme) {
                let (host, port) =
                    rest.rsplit_once(':').with_context(|| format!("{addr}: expected {scheme}HOST:PORT"))?;
                let port = port.parse().with_context(|| format!("{addr}: bad port"))?;
                anyhow::ensure!(!host.is_empty(), "{addr}: no host");
                return Ok(Target::Dns { host: host.to_owned(), port, tls });
            }
        }
        let parts: Vec<String> = addr.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
        match parts.len() {
            0 => anyhow::bail!("empty address"),
            1 => Ok(Target::One(parts.into_iter().next().unwrap_or_default())),
            _ => Ok(Target::List(parts)),
        }
    }
}

impl Security {
    /// A lazily connecting channel to `addr` (see the module doc for the forms), each endpoint
    /// set up by `configure` (timeouts), carrying this service's key and TLS settings.
    pub fn connect_lazy(
        &self,
        addr: &str,
        configure: impl Fn(Endpoint) -> Endpoint + Send + Sync + 'static,
    ) -> anyhow::Result<Channel> {
        let channel = match Target::parse(addr)? {
            Target::One(a) => configure(self.endpoint(&a)?).connect_lazy(),
            Target::List(list) => {
                let endpoints =
                    list.iter().map(|a| Ok(configure(self.endpoint(a)?))).collect::<anyhow::Result<Vec<_>>>()?;
                tonic::transport::Channel::balance_list(endpoints.into_iter())
            }
            Target::Dns { host, port, tls } => {
                let (channel, changes) = tonic::transport::Channel::balance_channel(64);
                // Read once; certificates name the service, not the pod's address.
                let tls = tls.then(|| self.client_tls().map(|t| t.domain_name(host.clone()))).transpose()?;
                let make = move |ip: SocketAddr| -> anyhow::Result<Endpoint> {
                    let endpoint = match &tls {
                        Some(tls) => Endpoint::from_shared(format!("https://{ip}"))?.tls_config(tls.clone())?,
                        None => Endpoint::from_shared(format!("http://{ip}"))?,
                    };
                    Ok(configure(endpoint))
                };
                tokio::spawn(resolve_forever(host, port, make, changes));
                channel
            }
        };
        Ok(self.channel(channel))
    }
}

/// Whether a call that failed with `code` may succeed when made again later, unchanged: the
/// service was down, overloaded or restarting, or the call timed out or was cut off (a reset
/// connection surfaces as UNKNOWN). The one rule by which reid's clients requeue and retry, and
/// by which the identity service tells its callers that a dependency failed for now.
pub fn is_transient(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Unknown
            | Code::Cancelled
    )
}

/// Runs an idempotent call up to `attempts` times while it fails with UNAVAILABLE (the replica
/// chosen was down or going away: the balancer may pick a dead endpoint of a static list until its
/// reconnection fails), waiting 50 ms, then twice as long each time. Only UNAVAILABLE is retried
/// at once: the other [`is_transient`] failures want the caller's own back-off.
pub async fn retry_unavailable<T, F, Fut>(attempts: u32, mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut wait = Duration::from_millis(50);
    let mut attempt = 1;
    loop {
        match call().await {
            Err(status) if status.code() == tonic::Code::Unavailable && attempt < attempts => {
                tracing::debug!(attempt, error = %status.message(), "unavailable; trying again");
                tokio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Keeps the balancer's endpoints equal to what `host` resolves to, until the channel is dropped.
async fn resolve_forever(
    host: String,
    port: u16,
    make: impl Fn(SocketAddr) -> anyhow::Result<Endpoint>,
    changes: tokio::sync::mpsc::Sender<Change<SocketAddr, Endpoint>>,
) {
    let mut known: BTreeSet<SocketAddr> = BTreeSet::new();
    loop {
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(found) => {
                let found: BTreeSet<SocketAddr> = found.collect();
                for gone in known.difference(&found) {
                    if changes.send(Change::Remove(*gone)).await.is_err() {
                        return;
                    }
                }
                for new in found.difference(&known) {
                    match make(*new) {
                        Ok(endpoint) => {
                            if changes.send(Change::Insert(*new, endpoint)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(%host, addr = %new, error = %e, "cannot make an endpoint"),
                    }
                }
                if found != known {
                    tracing::info!(%host, endpoints = found.len(), "endpoints changed");
                }
                known = found;
            }
            Err(e) => tracing::warn!(%host, error = %e, "cannot resolve; keeping the endpoints known"),
        }
        tokio::time::sleep(RESOLVE_EVERY).await;
        if changes.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_unavailable_is_tried_again_and_only_so_often() {
        let calls = std::cell::Cell::new(0);
        let r: Result<(), _> = retry_unavailable(3, || {
            calls.set(calls.get() + 1);
            async { Err(tonic::Status::unavailable("down")) }
        })
        .await;
        assert_eq!((r.unwrap_err().code(), calls.get()), (tonic::Code::Unavailable, 3));
        calls.set(0);
        let r: Result<(), _> = retry_unavailable(3, || {
            calls.set(calls.get() + 1);
            async { Err(tonic::Status::invalid_argument("bad")) }
        })
        .await;
        assert_eq!((r.unwrap_err().code(), calls.get()), (tonic::Code::InvalidArgument, 1));
        calls.set(0);
        let r = retry_unavailable(3, || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move { if n < 2 { Err(tonic::Status::unavailable("down")) } else { Ok(n) } }
        })
        .await;
        assert_eq!(r.unwrap_or_default(), 2);
    }

    #[test]
    fn addresses_name_one_endpoint_a_list_or_a_dns_name() {
        assert_eq!(Target::parse("127.0.0.1:50051").ok(), Some(Target::One("127.0.0.1:50051".into())));
        assert_eq!(Target::parse("a:1, http://b:2").ok(), Some(Target::List(vec!["a:1".into(), "http://b:2".into()])));
        assert_eq!(
            Target::parse("dns:///embedder:50051").ok(),
            Some(Target::Dns { host: "embedder".into(), port: 50051, tls: false })
        );
        assert!(Target::parse("dns:///embedder").is_err());
        assert!(Target::parse(" , ").is_err());
    }
}

/// The one client of the embedder service, for every service that calls it (the ingester's
/// delivery, the identity service): lazily connected and balanced over the replicas `url` names,
/// carrying the deployment's key and TLS, a deadline per call, the message size limits, and the
/// reply checked (one embedding per image, the model that made them named).
#[derive(Debug, Clone)]
pub struct Embedder {
    client: reid_proto::v1::embedder_service_client::EmbedderServiceClient<Channel>,
    attempts: u32,
}

impl Embedder {
    pub fn connect_lazy(
        url: &str,
        security: &Security,
        timeout: Duration,
        max_message_bytes: usize,
    ) -> anyhow::Result<Self> {
        let channel =
            security.connect_lazy(url, move |e| e.connect_timeout(Duration::from_secs(5)).timeout(timeout))?;
        let client = reid_proto::v1::embedder_service_client::EmbedderServiceClient::new(channel)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        Ok(Self { client, attempts: 1 })
    }

    /// Tries each call up to `attempts` times while it fails with UNAVAILABLE
    /// ([`retry_unavailable`]); once by default.
    pub fn retrying_unavailable(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// Embeds `images` in one call, so that every embedding comes from the same model.
    pub async fn embed(
        &self,
        images: Vec<reid_proto::v1::Image>,
    ) -> Result<(Vec<Vec<f32>>, reid_proto::v1::ModelRef), tonic::Status> {
        let n = images.len();
        let reply = retry_unavailable(self.attempts, || {
            let (mut client, images) = (self.client.clone(), images.clone());
            async move { client.embed(reid_proto::v1::EmbedRequest { images, request_id: String::new() }).await }
        })
        .await?
        .into_inner();
        if reply.embeddings.len() != n {
            return Err(tonic::Status::internal(format!(
                "the embedder answered {} embeddings for {n} images",
                reply.embeddings.len()
            )));
        }
        let model = reply.model.ok_or_else(|| tonic::Status::internal("the embedder's reply names no model"))?;
        Ok((reply.embeddings.into_iter().map(|e| e.values).collect(), model))
    }

    /// The model the embedder serves now.
    pub async fn model(&self) -> Result<reid_proto::v1::ModelInfo, tonic::Status> {
        let reply = retry_unavailable(self.attempts, || {
            let mut client = self.client.clone();
            async move { client.get_model(reid_proto::v1::GetModelRequest {}).await }
        })
        .await?;
        Ok(reply.into_inner().model.unwrap_or_default())
    }
}
