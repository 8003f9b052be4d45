//! `Queue` on Pub/Sub, through the official `google-cloud-pubsub` client.
//!
//! One `Publisher` per topic, built once: it keeps its connections and batches in the
//! background. Deploy requests carry an ordering key per app, so the push subscription (message
//! ordering enabled, see `infra/pubsub.tf`) hands them to the worker one at a time, in order.
//! Delivery is Pub/Sub's: the topics' push subscriptions post the envelope to the worker.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_pubsub::client::{Publisher, TopicAdmin};
use google_cloud_pubsub::error::PublishError;
use google_cloud_pubsub::model::Message;

use runway_core::ports::{OutboundMessage, Queue, QueueError, Topic};

#[derive(Clone, Debug)]
pub struct PubSubConfig {
    pub project: String,
    /// The topic id deploy requests go to (`runway-deploy-requests`).
    pub deploy_topic: String,
    /// The topic id Cloud Build publishes to (always `cloud-builds` on Google Cloud).
    pub build_topic: String,
    /// The topic id release announcements go to (`runway-notifications`).
    pub notify_topic: String,
    /// `http://host:port` of the Pub/Sub emulator; `None` talks to Google.
    pub emulator: Option<String>,
}

impl PubSubConfig {
    pub fn new(project: impl Into<String>) -> Self {
        Self {
            project: project.into(),
            deploy_topic: Topic::DeployRequests.name().to_owned(),
            build_topic: Topic::BuildEvents.name().to_owned(),
            notify_topic: Topic::Notifications.name().to_owned(),
            emulator: None,
        }
    }

    /// The topic's full resource name.
    pub fn topic_path(&self, topic: Topic) -> String {
        let id = match topic {
            Topic::DeployRequests => &self.deploy_topic,
            Topic::BuildEvents => &self.build_topic,
            Topic::Notifications => &self.notify_topic,
        };
        format!("projects/{}/topics/{id}", self.project)
    }
}

#[derive(Clone)]
pub struct PubSubQueue {
    config: PubSubConfig,
    publishers: HashMap<Topic, Publisher>,
    admin: TopicAdmin,
}

impl PubSubQueue {
    pub async fn connect(config: PubSubConfig) -> Result<Self, QueueError> {
        let mut publishers = HashMap::new();
        for topic in Topic::ALL {
            let mut builder = Publisher::builder(config.topic_path(topic))
                // One message per request: waiting to fill a batch only adds latency.
                .set_delay_threshold(Duration::from_millis(1));
            if let Some(endpoint) = &config.emulator {
                builder = builder
                    .with_endpoint(endpoint)
                    .with_credentials(super::anonymous_credentials());
            }
            let publisher = builder.build().await.map_err(|error| {
                QueueError::Unavailable(format!("cannot set up the Pub/Sub publisher: {error}"))
            })?;
            publishers.insert(topic, publisher);
        }
        let mut admin = TopicAdmin::builder();
        if let Some(endpoint) = &config.emulator {
            admin = admin
                .with_endpoint(endpoint)
                .with_credentials(super::anonymous_credentials());
        }
        let admin = admin.build().await.map_err(|error| {
            QueueError::Unavailable(format!("cannot set up the Pub/Sub admin client: {error}"))
        })?;
        Ok(Self {
            config,
            publishers,
            admin,
        })
    }

    /// Whether the topic exists and we may see it: what `/ready` reports.
    pub async fn check(&self, topic: Topic) -> Result<(), QueueError> {
        let path = self.config.topic_path(topic);
        self.admin
            .get_topic()
            .set_topic(&path)
            .send()
            .await
            .map(|_| ())
            .map_err(|error| QueueError::Unavailable(format!("topic {path}: {error}")))
    }
}

#[async_trait]
impl Queue for PubSubQueue {
    async fn publish(&self, topic: Topic, message: OutboundMessage) -> Result<String, QueueError> {
        let publisher = &self.publishers[&topic];
        let mut outbound = Message::new()
            .set_data(bytes::Bytes::from(message.data))
            .set_attributes(message.attributes);
        if let Some(key) = &message.ordering_key {
            outbound = outbound.set_ordering_key(key.clone());
        }
        match publisher.publish(outbound).await {
            Ok(id) => Ok(id),
            Err(PublishError::OrderingKeyPaused) => {
                // An earlier message with this key failed; the caller's retry (or the outbox
                // sweep) publishes again, so let the key go on.
                if let Some(key) = message.ordering_key {
                    publisher.resume_publish(key);
                }
                Err(QueueError::Unavailable(
                    "publishing paused after an earlier failure with the same ordering key".into(),
                ))
            }
            Err(error) => {
                if let Some(key) = message.ordering_key {
                    publisher.resume_publish(key);
                }
                Err(QueueError::Unavailable(format!(
                    "publishing to {}: {error}",
                    self.config.topic_path(topic)
                )))
            }
        }
    }
}
