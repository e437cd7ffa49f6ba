//! The identity service's configuration: one struct, filled from a TOML file, then
//! `REID_IDENTITY_*` environment variables and flags (by the CLI); tests build it directly.

use std::path::PathBuf;
use std::time::Duration;

use reid_server::invalid::{Invalid, ensure, positive};
use serde::Deserialize;

use crate::association::Linkage;
pub use crate::association::TransitRule;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// Local state: the embedded vector store (unless `qdrant_url` is set) and the stored crops.
    pub data_dir: PathBuf,
    /// A Qdrant server's gRPC URL (`http://host:6334`, `https://` for TLS); the embedded engine
    /// under `data_dir` when unset.
    pub qdrant_url: Option<String>,
    pub qdrant_api_key: Option<String>,
    /// Copies of each shard when this service creates a collection on a Qdrant cluster.
    pub qdrant_replication_factor: Option<u32>,
    /// Prefix of every collection and alias this service owns (`<namespace>_catalog`,
    /// `<namespace>_active`, `<namespace>_<model>_<hash>`): deployments (or a benchmark) sharing one
    /// Qdrant server keep apart by it. Changing it starts from an empty store.
    pub namespace: String,
    /// How new galleries are indexed (HNSW `m`, `ef_construct`, int8 quantization), on either
    /// backend; a gallery keeps the parameters it was created with. Search-time `ef` is
    /// `association.hnsw_ef`.
    pub index: reid_vector_store::IndexParams,
    /// The embedder that turns images into embeddings; without one, only embeddings are accepted.
    pub embedder_url: Option<String>,
    /// The ingester whose tracklet exports `Forget` erases too (the tracklets that were the
    /// forgotten person's sightings).
    pub ingester_url: Option<String>,
    /// Deadline of each call to the embedder.
    #[serde(with = "reid_server::duration::millis")]
    pub embedder_timeout: Duration,
    pub association: AssociationConfig,
    pub retention: RetentionConfig,
    /// The event stream (`Watch`) and its webhook.
    pub events: EventsConfig,
    /// Keep the best crop of each observed tracklet as its thumbnail (erased by `Forget` and TTL).
    pub keep_thumbnails: bool,
    /// Most images or embeddings in one request.
    pub max_items_per_request: usize,
    /// Largest gRPC message, in bytes.
    pub max_message_bytes: usize,
    /// How long an `Identify` or `Observe` with images waits for the gallery of a new model version
    /// to be re-embedded before it answers UNAVAILABLE.
    #[serde(with = "reid_server::duration::millis")]
    pub migration_wait: Duration,
    /// Serve Prometheus metrics (`GET /metrics`) on this address.
    pub metrics_listen: Option<String>,
    /// API key and TLS, for callers and for the services this one calls.
    pub security: reid_server::Security,
}

/// How a probe or tracklet is matched to an identity (open-set).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AssociationConfig {
    /// Cosine similarity above which a match is accepted; the model card's calibrated
    /// `match_threshold` when unset.
    pub threshold: Option<f32>,
    /// Cosine similarity above which a tracklet joins an identity seen on another camera (and
    /// only there); `threshold` when unset. Calibrate it on pairs across cameras: one person
    /// seen by two cameras scores lower than two tracks of one camera.
    pub cross_camera_threshold: Option<f32>,
    /// `Identify`: the best identity must beat the runner-up identity by this much, or the answer
    /// is unknown.
    pub min_margin: f32,
    /// `Observe`: the same rule for a tracklet, which starts a new identity when it fails. 0 by
    /// default: a tracklet that starts an identity because two were close makes a third
    /// candidate for the next tracklet of that person, whose margin is then smaller still, and
    /// the person splits into many identities (docs/evaluation.md: 36 identities against 17 at
    /// 0.05, with lower precision).
    pub observe_min_margin: f32,
    /// Nearest vectors fetched per query before grouping them by identity.
    pub search_limit: usize,
    /// Candidates returned by `Identify` when the request does not say.
    pub default_top_k: usize,
    /// HNSW beam width at search time (higher: better recall, slower); the engine's default
    /// (its `ef_construct`, 100) when unset.
    pub hnsw_ef: Option<usize>,
    /// Camera-to-camera transit times: a tracklet on `to` cannot be a person last seen on `from`
    /// less than `min_seconds` before.
    pub transit: Vec<TransitRule>,
    /// A tracklet cannot join an identity already seen on the same camera for at least this long
    /// during it: one person is not two tracks of one camera at once. 0 turns the rule off.
    #[serde(with = "reid_server::duration::millis")]
    pub same_camera_overlap: Duration,
    /// A tracklet of three crops or more is embedded without the crops that disagree with the
    /// rest: those whose cosine similarity to the mean of the others is under this (the most
    /// agreeing half is always kept), so that a crop of someone else, taken while two people
    /// crossed, does not pull the tracklet towards them. Unset: the match threshold (a crop must
    /// agree with its own tracklet as a tracklet must with an identity); -1 keeps every crop.
    pub crop_agreement: Option<f32>,
    /// How a tracklet is scored against an identity's sightings: `{ kind = "average", top = 2 }`
    /// (default: the mean of its two closest sightings), or `{ kind = "nearest" }`, whose single
    /// look-alike sighting draws in the next look-alike (docs/evaluation.md, "Linkage": on four
    /// camera views mean F1 0.661 -> 0.700 over the whole video, 0.506 -> 0.541 held out).
    pub linkage: Linkage,
    /// The merge pass (`identities/merging.rs`), on every upkeep tick: identities whose recent
    /// sightings are on average at least this similar are merged into one. Unset: the model
    /// card's `merge_threshold`, and no pass when the card has none.
    pub merge_threshold: Option<f32>,
    /// `false` turns the merge pass off, whatever the threshold or the card says.
    pub merge_pass: bool,
    /// The sightings the merge pass weighs: those observed in this last stretch of time.
    #[serde(with = "reid_server::duration::secs")]
    pub merge_window: Duration,
    /// k-reciprocal re-ranking of `Identify` requests that ask for it.
    pub rerank: RerankConfig,
}

/// Zhong et al.'s settings (the paper's defaults): `k1` reciprocal neighbours, `k2` for the
/// local query expansion, `lambda` the weight of the original distance.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RerankConfig {
    pub k1: usize,
    pub k2: usize,
    pub lambda: f64,
}

impl Default for RerankConfig {
    fn default() -> Self {
        let r = reid_cluster::Rerank::default();
        Self { k1: r.k1, k2: r.k2, lambda: r.lambda }
    }
}

impl From<RerankConfig> for reid_cluster::Rerank {
    fn from(c: RerankConfig) -> Self {
        Self { k1: c.k1, k2: c.k2, lambda: c.lambda }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// How many of the latest events are kept for watchers that reconnect (in memory; a restart
    /// starts afresh).
    pub capacity: usize,
    /// POST every event to this HTTP endpoint too.
    pub webhook: Option<WebhookConfig>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self { capacity: 10_000, webhook: None }
    }
}

/// A webhook: each event is POSTed as JSON, signed, retried with backoff until it is accepted
/// (2xx) or `max_attempts` fail; events are delivered one at a time, in order.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://host:port/path`.
    pub url: String,
    /// HMAC-SHA256 key: each request carries `x-reid-signature: sha256=HEX` of its body. Unset:
    /// requests are not signed.
    pub secret: Option<String>,
    /// Deliveries tried per event before it is dropped (logged and counted).
    pub max_attempts: u32,
    /// Deadline of each attempt.
    #[serde(with = "reid_server::duration::millis")]
    pub timeout: Duration,
    /// Only events about enrolled identities.
    pub enrolled_only: bool,
    /// Only sightings on these cameras (empty: all).
    pub cameras: Vec<String>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            secret: None,
            max_attempts: 8,
            timeout: Duration::from_secs(5),
            enrolled_only: false,
            cameras: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Anonymous sightings (of identities never enrolled) older than this are deleted, with their
    /// thumbnails. Zero keeps them forever.
    #[serde(with = "reid_server::duration::secs")]
    pub anonymous_ttl: Duration,
    /// How often expired sightings are swept.
    #[serde(with = "reid_server::duration::millis")]
    pub sweep_interval: Duration,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data/identity"),
            qdrant_url: None,
            qdrant_api_key: None,
            qdrant_replication_factor: None,
            namespace: DEFAULT_NAMESPACE.into(),
            index: reid_vector_store::IndexParams::default(),
            embedder_url: None,
            embedder_timeout: Duration::from_secs(30),
            ingester_url: None,
            association: AssociationConfig::default(),
            retention: RetentionConfig::default(),
            events: EventsConfig::default(),
            keep_thumbnails: true,
            max_items_per_request: 256,
            max_message_bytes: 64 << 20,
            migration_wait: Duration::from_secs(30),
            metrics_listen: None,
            security: reid_server::Security::default(),
        }
    }
}

impl Default for AssociationConfig {
    fn default() -> Self {
        Self {
            threshold: None,
            cross_camera_threshold: None,
            min_margin: 0.05,
            observe_min_margin: 0.0,
            search_limit: 64,
            default_top_k: 5,
            hnsw_ef: None,
            transit: Vec::new(),
            same_camera_overlap: Duration::from_secs(1),
            crop_agreement: None,
            linkage: Linkage::default(),
            merge_threshold: None,
            merge_pass: true,
            merge_window: Duration::from_secs(30 * 60),
            rerank: RerankConfig::default(),
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { anonymous_ttl: Duration::from_secs(30 * 24 * 3600), sweep_interval: Duration::from_secs(60) }
    }
}

/// The namespace of a deployment that does not choose one; its collections are named as they were
/// before namespaces existed.
pub const DEFAULT_NAMESPACE: &str = "reid";

impl IdentityConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        self.security.validate().map_err(|e| e.within("security"))?;
        let ns = &self.namespace;
        let fits =
            !ns.is_empty() && ns.len() <= 48 && ns.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        ensure(fits, "namespace", || format!("{ns:?}: use 1 to 48 letters, digits, '_' and '-'"))?;
        self.index.validate().map_err(|reason| Invalid::new("index", reason))?;
        let a = &self.association;
        for (key, threshold) in [
            ("association.threshold", a.threshold),
            ("association.cross_camera_threshold", a.cross_camera_threshold),
            ("association.merge_threshold", a.merge_threshold),
            ("association.crop_agreement", a.crop_agreement),
        ] {
            if let Some(t) = threshold {
                ensure((-1.0..=1.0).contains(&t), key, || format!("{t} is not a cosine similarity in [-1, 1]"))?;
            }
        }
        for (key, margin) in
            [("association.min_margin", a.min_margin), ("association.observe_min_margin", a.observe_min_margin)]
        {
            ensure((0.0..=2.0).contains(&margin), key, || format!("{margin} must lie in [0, 2]"))?;
        }
        positive(&[
            ("association.search_limit", a.search_limit as u64),
            ("association.default_top_k", a.default_top_k as u64),
            ("association.rerank.k1", a.rerank.k1 as u64),
            ("association.rerank.k2", a.rerank.k2 as u64),
            ("max_items_per_request", self.max_items_per_request as u64),
        ])?;
        if let Some(rule) = a.transit.iter().find(|r| r.min_seconds.is_nan() || r.min_seconds < 0.0) {
            return Err(Invalid::new(
                "association.transit.min_seconds",
                format!("{} -> {}: must be >= 0", rule.from, rule.to),
            ));
        }
        let lambda = a.rerank.lambda;
        ensure((0.0..=1.0).contains(&lambda), "association.rerank.lambda", || format!("{lambda} must lie in [0, 1]"))?;
        ensure(!self.retention.sweep_interval.is_zero(), "retention.sweep_interval", || "must be positive".into())?;
        positive(&[("events.capacity", self.events.capacity as u64)])?;
        if let Some(hook) = &self.events.webhook {
            let url = &hook.url;
            ensure(url.starts_with("http://"), "events.webhook.url", || {
                format!(
                    "{:?}: an http:// address (put a TLS proxy in front for https)",
                    reid_server::truncated(url, 64)
                )
            })?;
            positive(&[("events.webhook.max_attempts", u64::from(hook.max_attempts))])?;
            ensure(!hook.timeout.is_zero(), "events.webhook.timeout", || "must be positive".into())?;
            if let Some(secret) = &hook.secret {
                ensure(!secret.is_empty(), "events.webhook.secret", || "is empty: leave it unset to not sign".into())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults_and_typos_are_errors() {
        let c: IdentityConfig = toml::from_str(
            "[association]\nthreshold = 0.6\n[[association.transit]]\nfrom = \"a\"\nto = \"b\"\nmin_seconds = 5\n\
             [retention]\nanonymous_ttl = 3600",
        )
        .unwrap();
        assert_eq!(c.association.threshold, Some(0.6));
        assert_eq!(c.association.transit, vec![TransitRule { from: "a".into(), to: "b".into(), min_seconds: 5.0 }]);
        assert_eq!(c.retention.anonymous_ttl, Duration::from_secs(3600));
        assert_eq!(c.association.min_margin, AssociationConfig::default().min_margin);
        assert!(c.validate().is_ok());
        assert!(toml::from_str::<IdentityConfig>("[association]\nthreshhold = 0.6").is_err());
        let bad = IdentityConfig {
            association: AssociationConfig { threshold: Some(1.5), ..Default::default() },
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "association.threshold");
        for namespace in ["", "a b", "../x"] {
            let bad = IdentityConfig { namespace: namespace.into(), ..Default::default() };
            assert_eq!(bad.validate().unwrap_err().key, "namespace", "{namespace:?}");
        }
        let rerank = RerankConfig { k2: 0, ..Default::default() };
        let bad =
            IdentityConfig { association: AssociationConfig { rerank, ..Default::default() }, ..Default::default() };
        assert_eq!(bad.validate().unwrap_err().key, "association.rerank.k2");
        let hook = |url: &str| IdentityConfig {
            events: EventsConfig {
                webhook: Some(WebhookConfig { url: url.into(), ..Default::default() }),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(hook("http://alarms:8080/reid").validate().is_ok());
        assert_eq!(hook("https://alarms/reid").validate().unwrap_err().key, "events.webhook.url");
        let c: IdentityConfig =
            toml::from_str("[events]\ncapacity = 5\n[events.webhook]\nurl = \"http://h/x\"\nmax_attempts = 0").unwrap();
        assert_eq!(c.events.capacity, 5);
        assert_eq!(c.validate().unwrap_err().key, "events.webhook.max_attempts");
        let c: IdentityConfig =
            toml::from_str("namespace = \"site_b\"\n[index]\nm = 32\nquantization = \"int8\"").unwrap();
        assert_eq!(c.index.m, Some(32));
        assert!(c.validate().is_ok());
        assert_eq!(
            IdentityConfig { index: reid_vector_store::IndexParams { m: Some(1), ..Default::default() }, ..c }
                .validate()
                .unwrap_err()
                .key,
            "index"
        );
    }
}
