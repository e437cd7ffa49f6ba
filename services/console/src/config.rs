//! What `reid serve console` reads: where the services are, where the identity service keeps its
//! crops, and the deployment's keys (a login is one of them).

use std::path::PathBuf;
use std::time::Duration;

use reid_server::invalid::{Invalid, ensure, positive};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// The identity service (`http://` or `https://`).
    pub identity_url: String,
    /// The ingesters, for the cameras' health: every shard of a sharded ingester (each lists
    /// only its own cameras); no camera panel when empty.
    pub ingester_urls: Vec<String>,
    /// The identity service's `DATA/crops` (read-only here): the thumbnails shown.
    pub crops_dir: Option<PathBuf>,
    /// How long a login lasts.
    #[serde(with = "reid_server::duration::secs")]
    pub session_ttl: Duration,
    /// Mark the session cookie `Secure` (the console is reached over HTTPS through a proxy).
    pub secure_cookie: bool,
    /// Largest upload (a photo to search, photos to enroll), in bytes.
    pub max_upload_bytes: usize,
    /// The deployment's keys: a login is the administrator's `api_key` or the `viewer_api_key`,
    /// and the console calls the services with the key its user logged in with. Without either
    /// key, the console asks for no login (loopback use). TLS settings reach the services.
    pub security: reid_server::Security,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            identity_url: format!("http://{}", reid_proto::ports::IDENTITY),
            ingester_urls: Vec::new(),
            crops_dir: None,
            session_ttl: Duration::from_secs(12 * 3600),
            secure_cookie: false,
            max_upload_bytes: 16 << 20,
            security: reid_server::Security::default(),
        }
    }
}

impl ConsoleConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        self.security.validate().map_err(|e| e.within("security"))?;
        ensure(!self.identity_url.is_empty(), "identity_url", || "must be set".into())?;
        ensure(!self.session_ttl.is_zero(), "session_ttl", || "must be positive".into())?;
        positive(&[("max_upload_bytes", self.max_upload_bytes as u64)])
    }
}
