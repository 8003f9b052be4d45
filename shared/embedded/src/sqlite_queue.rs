//! `Queue` as a table in the store's SQLite file, with a dispatcher that behaves like a Pub/Sub
//! push subscription: it POSTs the push envelope to the subscriber's endpoint, counts any non-2xx
//! as a failed attempt, retries with exponential backoff, keeps per-key order and moves a message
//! to the dead letters after `max_attempts`. Messages survive a restart.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::Utc;
use rusqlite::{Connection, params};
use tokio::sync::Notify;

use crate::database::Database;
use runway_core::ports::{OutboundMessage, Queue, QueueError, Topic};
use runway_http::metrics::{QueueStats, TopicStats};
use runway_http::push::{PushEnvelope, PushMessage};

/// Where a topic's messages are pushed.
#[derive(Clone, Debug)]
pub struct PushSubscription {
    pub name: String,
    pub endpoint: String,
    /// Sent as `Authorization: Bearer …`, standing in for Pub/Sub's OIDC token.
    pub token: String,
}

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    pub max_attempts: u32,
    /// How long a push may take before it counts as failed (Pub/Sub's ack deadline).
    pub ack_deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_attempts: 8,
            ack_deadline: Duration::from_secs(600),
        }
    }
}

#[derive(Clone)]
pub struct SqliteQueue {
    database: Database,
    wake: Arc<Notify>,
}

struct Due {
    id: i64,
    topic: String,
    data: Vec<u8>,
    attributes: BTreeMap<String, String>,
    ordering_key: Option<String>,
    publish_time: String,
    attempts: u32,
}

impl SqliteQueue {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Self::on(Database::open(path)?)
    }

    /// The queue on a connection it shares with the store.
    pub(crate) fn on(database: Database) -> anyhow::Result<Self> {
        // Leases held by a previous process died with it: everything pending is due again.
        database
            .now(|connection| {
                connection.execute(
                    "UPDATE queue_messages SET next_attempt_ms = ?1 WHERE next_attempt_ms > ?1",
                    [Utc::now().timestamp_millis()],
                )
            })?
            .context("releasing the queue's leases")?;
        Ok(Self {
            database,
            wake: Arc::new(Notify::new()),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        self.database
            .with(|connection| work(connection).map_err(anyhow::Error::from))
            .await
    }

    /// Messages waiting for delivery, as (topic, data), oldest first.
    pub async fn pending(&self) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        self.with(|c| {
            let mut statement =
                c.prepare("SELECT topic, data FROM queue_messages WHERE dead = 0 ORDER BY id")?;
            let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    /// Messages that exhausted their attempts, as (topic, last error).
    pub async fn dead_letters(&self) -> anyhow::Result<Vec<(String, String)>> {
        self.with(|c| {
            let mut statement = c.prepare(
                "SELECT topic, COALESCE(last_error, '') FROM queue_messages WHERE dead = 1",
            )?;
            let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    /// Per topic: messages waiting, how long the oldest has waited, and dead letters. Read by
    /// `/metrics` when scraped (one indexed pass over the table).
    pub async fn stats(&self) -> anyhow::Result<Vec<TopicStats>> {
        let rows: Vec<(String, i64, Option<String>, i64)> = self
            .with(|c| {
                let mut statement = c.prepare(
                    "SELECT topic,
                            SUM(dead = 0),
                            MIN(CASE WHEN dead = 0 THEN publish_time END),
                            SUM(dead = 1)
                     FROM queue_messages GROUP BY topic ORDER BY topic",
                )?;
                let rows = statement.query_map([], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })?;
                rows.collect()
            })
            .await?;
        let now = Utc::now();
        // Every topic, empty ones too: a gauge not set again would keep its last reading.
        let mut stats: Vec<TopicStats> = Topic::ALL
            .iter()
            .map(|topic| TopicStats {
                topic: topic.name().to_owned(),
                ..Default::default()
            })
            .collect();
        for (topic, messages, oldest, dead_letters) in rows {
            let index = match stats.iter().position(|known| known.topic == topic) {
                Some(index) => index,
                None => {
                    stats.push(TopicStats {
                        topic,
                        ..Default::default()
                    });
                    stats.len() - 1
                }
            };
            stats[index].messages = messages.unsigned_abs();
            stats[index].oldest_age = oldest
                .and_then(|at| chrono::DateTime::parse_from_rfc3339(&at).ok())
                .and_then(|at| (now - at.with_timezone(&Utc)).to_std().ok())
                .unwrap_or_default();
            stats[index].dead_letters = dead_letters.unsigned_abs();
        }
        Ok(stats)
    }

    /// `stats`, for `/metrics` to read when scraped.
    pub fn metrics_source(&self) -> QueueStats {
        let queue = self.clone();
        Arc::new(move || {
            let queue = queue.clone();
            Box::pin(async move { queue.stats().await })
        })
    }

    /// Delivers messages until `shutdown` resolves. Messages with an ordering key go one at a
    /// time per key, in publish order; the rest go as soon as they are due.
    pub async fn run_dispatcher(
        self,
        subscriptions: HashMap<Topic, PushSubscription>,
        policy: RetryPolicy,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let client = reqwest::Client::builder()
            .timeout(policy.ack_deadline)
            .build()
            .expect("an HTTP client builds");
        let subscriptions: HashMap<String, PushSubscription> = subscriptions
            .into_iter()
            .map(|(topic, subscription)| (topic.name().to_owned(), subscription))
            .collect();
        tokio::pin!(shutdown);
        loop {
            let wait = match self.dispatch_due(&client, &subscriptions, &policy).await {
                Ok(wait) => wait,
                Err(error) => {
                    tracing::error!(error = format!("{error:#}"), "queue dispatch failed");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                () = self.wake.notified() => {},
                () = tokio::time::sleep(wait) => {},
            }
        }
    }

    /// Starts every due message that may go now; returns how long until the next is due.
    async fn dispatch_due(
        &self,
        client: &reqwest::Client,
        subscriptions: &HashMap<String, PushSubscription>,
        policy: &RetryPolicy,
    ) -> anyhow::Result<Duration> {
        let now_ms = Utc::now().timestamp_millis();
        let (pending, next_due) = self
            .with(move |c| {
                let mut statement = c.prepare_cached(
                    "SELECT id, topic, data, attributes, ordering_key, publish_time, attempts,
                            next_attempt_ms
                     FROM queue_messages WHERE dead = 0 ORDER BY id",
                )?;
                let rows = statement.query_map([], |row| {
                    Ok((
                        Due {
                            id: row.get(0)?,
                            topic: row.get(1)?,
                            data: row.get(2)?,
                            attributes: serde_json::from_str(&row.get::<_, String>(3)?)
                                .unwrap_or_default(),
                            ordering_key: row.get(4)?,
                            publish_time: row.get(5)?,
                            attempts: row.get(6)?,
                        },
                        row.get::<_, i64>(7)?,
                    ))
                })?;
                let mut due = Vec::new();
                let mut next_due: Option<i64> = None;
                let mut blocked_keys = HashSet::new();
                for row in rows {
                    let (message, next_attempt_ms) = row?;
                    // Only the oldest pending message of a key may go.
                    if let Some(key) = &message.ordering_key
                        && !blocked_keys.insert((message.topic.clone(), key.clone()))
                    {
                        continue;
                    }
                    if next_attempt_ms <= now_ms {
                        due.push(message);
                    } else {
                        next_due =
                            Some(next_due.map_or(next_attempt_ms, |n| n.min(next_attempt_ms)));
                    }
                }
                Ok((due, next_due))
            })
            .await?;
        for message in pending {
            let Some(subscription) = subscriptions.get(&message.topic).cloned() else {
                continue; // No subscriber yet: it waits, as Pub/Sub keeps it for one.
            };
            let lease = now_ms + policy.ack_deadline.as_millis() as i64;
            if !self.claim(&message, now_ms, lease).await? {
                continue;
            }
            let (queue, client, policy) = (self.clone(), client.clone(), policy.clone());
            tokio::spawn(async move {
                let outcome = push(&client, &subscription, &message).await;
                if let Err(error) = queue.settle(&message, outcome, &policy).await {
                    tracing::error!(error = format!("{error:#}"), "could not record a delivery");
                }
                queue.wake.notify_one();
            });
        }
        let wait = next_due.map_or(Duration::from_secs(3600), |due| {
            Duration::from_millis((due - now_ms).max(0) as u64)
        });
        Ok(wait)
    }

    /// Leases a due message until `lease` (Pub/Sub's ack deadline), unless another dispatch
    /// pass took or settled it since it was read: only the claimant pushes it.
    async fn claim(&self, message: &Due, now_ms: i64, lease: i64) -> anyhow::Result<bool> {
        let (id, attempts) = (message.id, message.attempts);
        let claimed = self
            .with(move |c| {
                c.execute(
                    "UPDATE queue_messages SET next_attempt_ms = ?4
                     WHERE id = ?1 AND attempts = ?2 AND dead = 0 AND next_attempt_ms <= ?3",
                    params![id, attempts, now_ms, lease],
                )
            })
            .await?;
        Ok(claimed == 1)
    }

    async fn settle(
        &self,
        message: &Due,
        outcome: Result<(), String>,
        policy: &RetryPolicy,
    ) -> anyhow::Result<()> {
        let id = message.id;
        match outcome {
            Ok(()) => {
                self.with(move |c| c.execute("DELETE FROM queue_messages WHERE id = ?1", [id]))
                    .await?;
            }
            Err(error) => {
                let attempts = message.attempts + 1;
                let dead = attempts >= policy.max_attempts;
                let backoff = policy
                    .first_backoff
                    .saturating_mul(2u32.saturating_pow(attempts - 1))
                    .min(policy.max_backoff);
                let next = Utc::now().timestamp_millis() + backoff.as_millis() as i64;
                if dead {
                    tracing::error!(topic = %message.topic, attempts, %error, "message dead-lettered");
                } else {
                    tracing::warn!(topic = %message.topic, attempts, %error, ?backoff, "push failed; will retry");
                }
                self.with(move |c| {
                    c.execute(
                        "UPDATE queue_messages SET attempts = ?2, next_attempt_ms = ?3, dead = ?4,
                                last_error = ?5 WHERE id = ?1",
                        params![id, attempts, next, dead, error],
                    )
                })
                .await?;
            }
        }
        Ok(())
    }
}

async fn push(
    client: &reqwest::Client,
    subscription: &PushSubscription,
    message: &Due,
) -> Result<(), String> {
    let envelope = PushEnvelope {
        message: PushMessage {
            data: PushMessage::encode(&message.data),
            attributes: message.attributes.clone(),
            message_id: message.id.to_string(),
            publish_time: message.publish_time.clone(),
            ordering_key: message.ordering_key.clone(),
        },
        subscription: format!("projects/local/subscriptions/{}", subscription.name),
        delivery_attempt: Some(message.attempts + 1),
    };
    let response = client
        .post(&subscription.endpoint)
        .bearer_auth(&subscription.token)
        .json(&envelope)
        .send()
        .await
        .map_err(|e| format!("push to {} failed: {e}", subscription.endpoint))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("push answered {}", response.status()))
    }
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn publish(&self, topic: Topic, message: OutboundMessage) -> Result<String, QueueError> {
        let attributes = serde_json::to_string(&message.attributes).map_err(anyhow::Error::from)?;
        let now = Utc::now();
        let id = self
            .with(move |c| {
                c.execute(
                    "INSERT INTO queue_messages
                        (topic, data, attributes, ordering_key, publish_time, next_attempt_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        topic.name(),
                        message.data,
                        attributes,
                        message.ordering_key,
                        now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        now.timestamp_millis()
                    ],
                )?;
                Ok(c.last_insert_rowid())
            })
            .await
            .map_err(|e| QueueError::Unavailable(format!("{e:#}")))?;
        self.wake.notify_one();
        Ok(id.to_string())
    }

    /// Dead letters are kept for reading (`dead_letters`, the `runway_queue_dead_letters`
    /// gauge) until they are older than the retention, as Pub/Sub's keeping subscription does.
    async fn prune_dead_letters(&self, before: chrono::DateTime<Utc>) -> Result<usize, QueueError> {
        let before = before.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let pruned = self
            .with(move |c| {
                c.execute(
                    "DELETE FROM queue_messages WHERE dead = 1 AND publish_time < ?1",
                    [before],
                )
            })
            .await?;
        Ok(pruned)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use runway_http::Request;

    /// A push endpoint on loopback answering `status` to each push, recording the envelopes.
    async fn endpoint(status: u16) -> (String, Arc<Mutex<Vec<PushEnvelope>>>, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/push", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<PushEnvelope>>> = Arc::default();
        let hits = Arc::new(AtomicUsize::new(0));
        let (seen2, hits2) = (seen.clone(), hits.clone());
        tokio::spawn(runway_http::serve(
            listener,
            move |request: Request, _| {
                let (seen, hits) = (seen2.clone(), hits2.clone());
                async move {
                    assert_eq!(request.headers()["authorization"], "Bearer token");
                    let body = runway_http::read_body(request, 1 << 20).await.unwrap();
                    seen.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                    hits.fetch_add(1, Ordering::SeqCst);
                    runway_http::json(::http::StatusCode::from_u16(status).unwrap(), &"")
                }
            },
            std::future::pending(),
            runway_http::serve::ServeOptions::default(),
        ));
        (url, seen, hits)
    }

    fn subscription(endpoint: &str) -> HashMap<Topic, PushSubscription> {
        HashMap::from([(
            Topic::DeployRequests,
            PushSubscription {
                name: "test".into(),
                endpoint: endpoint.into(),
                token: "token".into(),
            },
        )])
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            first_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(40),
            max_attempts: 3,
            ack_deadline: Duration::from_secs(5),
        }
    }

    fn message(text: &str) -> OutboundMessage {
        OutboundMessage {
            data: text.as_bytes().to_vec(),
            attributes: BTreeMap::from([("app".into(), "demo".into())]),
            ordering_key: Some("demo".into()),
        }
    }

    async fn until(condition: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(tokio::time::Instant::now() < deadline, "timed out");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn delivers_the_pubsub_push_envelope_in_publish_order() {
        let dir = tempfile::tempdir().unwrap();
        let queue = SqliteQueue::open(&dir.path().join("q.db")).unwrap();
        let (url, seen, _) = endpoint(200).await;
        for text in ["one", "two", "three"] {
            queue
                .publish(Topic::DeployRequests, message(text))
                .await
                .unwrap();
        }
        tokio::spawn(queue.clone().run_dispatcher(
            subscription(&url),
            fast(),
            std::future::pending(),
        ));
        until(|| seen.lock().unwrap().len() == 3).await;
        let seen = seen.lock().unwrap();
        let payloads: Vec<Vec<u8>> = seen.iter().map(|e| e.message.payload().unwrap()).collect();
        assert_eq!(
            payloads,
            [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        assert_eq!(seen[0].subscription, "projects/local/subscriptions/test");
        assert_eq!(seen[0].message.attributes["app"], "demo");
        assert_eq!(seen[0].message.ordering_key.as_deref(), Some("demo"));
    }

    #[tokio::test]
    async fn retries_a_failing_push_and_then_dead_letters_it() {
        let dir = tempfile::tempdir().unwrap();
        let queue = SqliteQueue::open(&dir.path().join("q.db")).unwrap();
        let (url, _, hits) = endpoint(503).await;
        queue
            .publish(Topic::DeployRequests, message("doomed"))
            .await
            .unwrap();
        tokio::spawn(queue.clone().run_dispatcher(
            subscription(&url),
            fast(),
            std::future::pending(),
        ));
        until(|| hits.load(Ordering::SeqCst) >= 3).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            hits.load(Ordering::SeqCst),
            3,
            "pushed again after the last attempt"
        );
        let dead = queue.dead_letters().await.unwrap();
        assert_eq!(dead.len(), 1);
        assert!(dead[0].1.contains("503"), "{dead:?}");
        let stats = queue.stats().await.unwrap();
        assert_eq!(
            stats,
            [
                TopicStats {
                    topic: Topic::DeployRequests.name().into(),
                    messages: 0,
                    oldest_age: Duration::ZERO,
                    dead_letters: 1,
                },
                TopicStats {
                    topic: Topic::BuildEvents.name().into(),
                    ..Default::default()
                },
                TopicStats {
                    topic: Topic::Notifications.name().into(),
                    ..Default::default()
                }
            ]
        );
        let day = chrono::Duration::days(1);
        assert_eq!(queue.prune_dead_letters(Utc::now() - day).await.unwrap(), 0);
        assert_eq!(
            queue.dead_letters().await.unwrap().len(),
            1,
            "a recent one went"
        );
        assert_eq!(queue.prune_dead_letters(Utc::now() + day).await.unwrap(), 1);
        assert_eq!(queue.dead_letters().await.unwrap(), []);
    }

    #[tokio::test]
    async fn stats_count_waiting_messages_per_topic_and_age_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let queue = SqliteQueue::open(&dir.path().join("q.db")).unwrap();
        let empty = queue.stats().await.unwrap();
        assert!(
            empty.len() == Topic::ALL.len() && empty.iter().all(|topic| topic.messages == 0),
            "every topic is reported, empty ones too: {empty:?}"
        );
        for text in ["first", "second"] {
            queue
                .publish(Topic::DeployRequests, message(text))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        queue
            .publish(Topic::BuildEvents, message("newer"))
            .await
            .unwrap();
        let stats = queue.stats().await.unwrap();
        let of = |topic: Topic| {
            stats
                .iter()
                .find(|stats| stats.topic == topic.name())
                .unwrap_or_else(|| panic!("no {} in {stats:?}", topic.name()))
        };
        assert_eq!(of(Topic::DeployRequests).messages, 2);
        assert_eq!(of(Topic::BuildEvents).messages, 1);
        assert!(
            of(Topic::DeployRequests).oldest_age >= Duration::from_millis(300),
            "{stats:?}"
        );
        assert!(
            of(Topic::BuildEvents).oldest_age < Duration::from_millis(300),
            "{stats:?}"
        );
        assert_eq!(of(Topic::DeployRequests).dead_letters, 0);
    }

    #[tokio::test]
    async fn a_message_published_before_a_restart_is_delivered_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        SqliteQueue::open(&path)
            .unwrap()
            .publish(Topic::DeployRequests, message("kept"))
            .await
            .unwrap();
        let reopened = SqliteQueue::open(&path).unwrap();
        let (url, seen, _) = endpoint(200).await;
        tokio::spawn(reopened.run_dispatcher(subscription(&url), fast(), std::future::pending()));
        until(|| seen.lock().unwrap().len() == 1).await;
    }
}
