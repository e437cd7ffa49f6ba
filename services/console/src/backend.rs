//! The services the console shows and changes, called with the logged-in user's key, so that the
//! services' own roles decide what a user may do.

use reid_proto::v1::identity_service_client::IdentityServiceClient;
use reid_proto::v1::ingester_service_client::IngesterServiceClient;
use reid_server::security::ApiKey;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::config::ConsoleConfig;
use crate::session::Session;

type Keyed = InterceptedService<Channel, ApiKey>;

#[derive(Debug, Clone)]
pub struct Backend {
    identity: Channel,
    ingesters: Vec<Channel>,
    max_message_bytes: usize,
}

impl Backend {
    /// Channels to the services, connected on first use.
    pub fn new(config: &ConsoleConfig) -> anyhow::Result<Self> {
        let lazy = |url: &str| -> anyhow::Result<Channel> {
            Ok(config.security.endpoint(url)?.connect_timeout(std::time::Duration::from_secs(5)).connect_lazy())
        };
        Ok(Self {
            identity: lazy(&config.identity_url)?,
            ingesters: config.ingester_urls.iter().map(|u| lazy(u)).collect::<anyhow::Result<_>>()?,
            max_message_bytes: config.max_upload_bytes + (1 << 20),
        })
    }

    fn keyed(channel: &Channel, session: &Session) -> Keyed {
        InterceptedService::new(channel.clone(), ApiKey::new(session.key.as_deref()))
    }

    pub fn identity(&self, session: &Session) -> IdentityServiceClient<Keyed> {
        IdentityServiceClient::new(Self::keyed(&self.identity, session))
            .max_encoding_message_size(self.max_message_bytes)
            .max_decoding_message_size(self.max_message_bytes)
    }

    /// Every ingester (shard) the console knows.
    pub fn ingesters(&self, session: &Session) -> Vec<IngesterServiceClient<Keyed>> {
        self.ingesters.iter().map(|c| IngesterServiceClient::new(Self::keyed(c, session))).collect()
    }
}
