use std::collections::BTreeMap;

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// The topics Runway publishes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Deploy requests: one per queued release.
    DeployRequests,
    /// Build status notifications, in Cloud Build's `cloud-builds` format.
    BuildEvents,
    /// Release announcements: one per release event and target (`notify::NotifyMessage`).
    Notifications,
}

impl Topic {
    pub const ALL: [Topic; 3] = [
        Topic::DeployRequests,
        Topic::BuildEvents,
        Topic::Notifications,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Topic::DeployRequests => "runway-deploy-requests",
            Topic::BuildEvents => "cloud-builds",
            Topic::Notifications => "runway-notifications",
        }
    }
}

/// A message as Pub/Sub carries it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutboundMessage {
    pub data: Vec<u8>,
    pub attributes: BTreeMap<String, String>,
    /// Messages with the same key are delivered in order, one at a time.
    pub ordering_key: Option<String>,
}

/// Publishes messages, delivered at least once to the topic's push subscription.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Returns the message id.
    async fn publish(&self, topic: Topic, message: OutboundMessage) -> Result<String, QueueError>;
    /// Forgets dead letters published before `before`; returns how many. Pub/Sub keeps them
    /// in a subscription whose retention `infra/pubsub.tf` sets, so this default does nothing.
    async fn prune_dead_letters(
        &self,
        _before: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize, QueueError> {
        Ok(0)
    }
}
