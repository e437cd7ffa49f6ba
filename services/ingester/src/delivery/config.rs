//! `[delivery]`: how tracklets reach the embedder and the identity service.

use std::time::Duration;

use serde::Deserialize;

/// Getting tracklets to the embedder and the identity service.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Tracklets held while the embedder or identity service is slow or down; beyond it the
    /// oldest are dropped and counted (`buffer_full`).
    pub buffer_tracklets: usize,
    /// Most crops per embedder call; crops of every camera share a call.
    pub embed_batch: usize,
    /// How long a partial batch waits for more tracklets.
    #[serde(with = "reid_server::duration::millis")]
    pub batch_wait: Duration,
    /// Retry back-off bounds while a downstream service is unavailable.
    #[serde(with = "reid_server::duration::millis")]
    pub retry_initial: Duration,
    #[serde(with = "reid_server::duration::millis")]
    pub retry_max: Duration,
    /// On shutdown, how long buffered tracklets may take to be delivered.
    #[serde(with = "reid_server::duration::millis")]
    pub flush_timeout: Duration,
    /// Per-call deadline.
    #[serde(with = "reid_server::duration::millis")]
    pub call_timeout: Duration,
    /// Failed deliveries after which a tracklet is set aside (counted as `failed`); a downstream
    /// service that is unavailable does not count against its tracklets.
    pub max_attempts: u32,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            buffer_tracklets: 1000,
            embed_batch: 32,
            batch_wait: Duration::from_millis(20),
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(5),
            flush_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(30),
            max_attempts: 5,
        }
    }
}
