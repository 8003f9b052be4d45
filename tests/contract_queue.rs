//! The `Queue` port's contract, written once and run against every adapter: `SqliteQueue` with
//! its push dispatcher (the embedded default) and `PubSubQueue` on Google's Pub/Sub emulator,
//! whose real push subscriptions deliver to a loopback endpoint standing where the worker stands.
//!
//! What the worker relies on: the push envelope carries the data, attributes and the message id
//! `publish` returned; messages with one ordering key arrive in publish order; a
//! push answered with an error is delivered again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use runway_core::ports::{OutboundMessage, Queue, Topic};
use runway_embedded::{PushSubscription, RetryPolicy, SqliteQueue};
use runway_gcp::{PubSubConfig, PubSubQueue};
use runway_tests::emulators;
use runway_tests::push_receiver::PushReceiver;

const WAIT: Duration = Duration::from_secs(30);

/// The adapter a check runs on; each check opens the queue with the receivers it needs.
enum Adapter {
    Sqlite,
    PubSub,
}

impl Adapter {
    /// A queue whose topics push to two fresh receivers; the first `fail_first` pushes to the
    /// deploy receiver are answered 503.
    async fn open(&self, fail_first: usize) -> Subject {
        let deploys = PushReceiver::start(fail_first).await;
        let builds = PushReceiver::start(0).await;
        let (queue, subscriptions, dir) = match self {
            Adapter::Sqlite => sqlite(&deploys, &builds).await,
            Adapter::PubSub => pubsub(&deploys, &builds).await,
        };
        Subject {
            queue,
            subscriptions,
            deploys,
            builds,
            _dir: dir,
        }
    }
}

/// A queue whose topics push to `deploys` and `builds`, and what must live as long as it.
struct Subject {
    queue: Arc<dyn Queue>,
    /// The subscription names the envelopes must carry, per topic.
    subscriptions: HashMap<Topic, String>,
    deploys: PushReceiver,
    builds: PushReceiver,
    _dir: Option<tempfile::TempDir>,
}

type Opened = (
    Arc<dyn Queue>,
    HashMap<Topic, String>,
    Option<tempfile::TempDir>,
);

async fn sqlite(deploys: &PushReceiver, builds: &PushReceiver) -> Opened {
    let dir = tempfile::tempdir().unwrap();
    let queue = SqliteQueue::open(&dir.path().join("queue.db")).unwrap();
    let subscription = |name: &str, receiver: &PushReceiver| PushSubscription {
        name: name.into(),
        endpoint: receiver.url.clone(),
        token: "push-token".into(),
    };
    let subscriptions = HashMap::from([
        (Topic::DeployRequests, subscription("deploys", deploys)),
        (Topic::BuildEvents, subscription("builds", builds)),
    ]);
    let policy = RetryPolicy {
        first_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        max_attempts: 10,
        ack_deadline: Duration::from_secs(10),
    };
    tokio::spawn(
        queue
            .clone()
            .run_dispatcher(subscriptions, policy, std::future::pending()),
    );
    (
        Arc::new(queue),
        HashMap::from([
            (
                Topic::DeployRequests,
                "projects/local/subscriptions/deploys".into(),
            ),
            (
                Topic::BuildEvents,
                "projects/local/subscriptions/builds".into(),
            ),
        ]),
        Some(dir),
    )
}

async fn pubsub(deploys: &PushReceiver, builds: &PushReceiver) -> Opened {
    let project = emulators::unique_project();
    let mut config = PubSubConfig::new(&project);
    config.emulator = Some(emulators::pubsub());
    for (topic, subscription, receiver) in [
        (&config.deploy_topic, "deploys", deploys),
        (&config.build_topic, "builds", builds),
    ] {
        emulators::create_topic(&project, topic).await;
        emulators::create_push_subscription(&project, subscription, topic, &receiver.url).await;
    }
    let queue = PubSubQueue::connect(config).await.unwrap();
    (
        Arc::new(queue),
        HashMap::from([
            (
                Topic::DeployRequests,
                format!("projects/{project}/subscriptions/deploys"),
            ),
            (
                Topic::BuildEvents,
                format!("projects/{project}/subscriptions/builds"),
            ),
        ]),
        None,
    )
}

runway_tests::contract! {
    subjects: [sqlite => super::Adapter::Sqlite, pubsub => super::Adapter::PubSub],
    checks: [
        the_push_envelope_carries_what_was_published,
        one_ordering_key_is_delivered_in_publish_order,
        a_push_answered_with_an_error_is_delivered_again,
        each_topic_pushes_to_its_own_subscription,
    ],
}

fn message(text: &str, key: Option<&str>) -> OutboundMessage {
    OutboundMessage {
        data: text.as_bytes().to_vec(),
        attributes: BTreeMap::from([
            ("app".to_owned(), "demo".to_owned()),
            ("release".to_owned(), text.to_owned()),
        ]),
        ordering_key: key.map(str::to_owned),
    }
}

async fn the_push_envelope_carries_what_was_published(adapter: &Adapter) {
    let subject = adapter.open(0).await;
    let deploys = &subject.deploys;
    let id = subject
        .queue
        .publish(Topic::DeployRequests, message("r-1", Some("demo")))
        .await
        .unwrap();

    let pushes = deploys.wait_for_acknowledged(1, WAIT).await;
    let envelope = &pushes[0].envelope;
    assert_eq!(envelope.message.message_id, id);
    assert_eq!(envelope.message.payload().unwrap(), b"r-1");
    assert_eq!(envelope.message.attributes["app"], "demo");
    assert_eq!(envelope.message.attributes["release"], "r-1");
    // Not asserted: `orderingKey` in the envelope. Pub/Sub documents it, the emulator leaves it
    // out, and the worker reads the app from the attributes instead.
    assert!(
        chrono::DateTime::parse_from_rfc3339(&envelope.message.publish_time).is_ok(),
        "publishTime is RFC 3339: {}",
        envelope.message.publish_time
    );
    assert_eq!(
        envelope.subscription,
        subject.subscriptions[&Topic::DeployRequests]
    );
}

async fn one_ordering_key_is_delivered_in_publish_order(adapter: &Adapter) {
    let subject = adapter.open(0).await;
    let deploys = &subject.deploys;
    let texts: Vec<String> = (1..=6).map(|i| format!("r-{i}")).collect();
    for text in &texts {
        subject
            .queue
            .publish(Topic::DeployRequests, message(text, Some("demo")))
            .await
            .unwrap();
    }
    let pushes = deploys.wait_for_acknowledged(texts.len(), WAIT).await;
    let received: Vec<String> = pushes
        .iter()
        .map(|push| String::from_utf8(push.envelope.message.payload().unwrap()).unwrap())
        .collect();
    assert_eq!(received, texts);
}

async fn a_push_answered_with_an_error_is_delivered_again(adapter: &Adapter) {
    let subject = adapter.open(2).await;
    let deploys = &subject.deploys;
    let id = subject
        .queue
        .publish(Topic::DeployRequests, message("r-1", Some("demo")))
        .await
        .unwrap();

    let acknowledged = deploys.wait_for_acknowledged(1, WAIT).await;
    let pushes = deploys.pushes();
    assert_eq!(
        pushes.iter().map(|p| p.status).collect::<Vec<_>>()[..3],
        [503, 503, 204]
    );
    assert!(
        pushes
            .iter()
            .all(|push| push.envelope.message.message_id == id),
        "every delivery is the same message"
    );
    assert_eq!(acknowledged[0].envelope.message.payload().unwrap(), b"r-1");
}

async fn each_topic_pushes_to_its_own_subscription(adapter: &Adapter) {
    let subject = adapter.open(0).await;
    let deploys = &subject.deploys;
    let builds = &subject.builds;
    subject
        .queue
        .publish(Topic::BuildEvents, message("build-1", None))
        .await
        .unwrap();
    subject
        .queue
        .publish(Topic::DeployRequests, message("r-1", Some("demo")))
        .await
        .unwrap();

    let build = &builds.wait_for_acknowledged(1, WAIT).await[0];
    assert_eq!(build.envelope.message.payload().unwrap(), b"build-1");
    assert_eq!(
        build.envelope.subscription,
        subject.subscriptions[&Topic::BuildEvents]
    );
    let deploy = &deploys.wait_for_acknowledged(1, WAIT).await[0];
    assert_eq!(deploy.envelope.message.payload().unwrap(), b"r-1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        builds.pushes().len(),
        1,
        "nothing else reached the builds endpoint"
    );
    assert_eq!(
        deploys.pushes().len(),
        1,
        "nothing else reached the deploys endpoint"
    );
}
