//! `pull_request` events as GitHub sends them, through the real router and a real store: which
//! pull requests get a preview (the app's branch as base, its own repository as head unless an
//! admin allowed forks), what is recorded of each, and that closing queues its removal.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use http::StatusCode;
use runway_core::clock;
use runway_core::domain::{AppName, Previews, ReleaseState, RepoUrl, Trigger};
use runway_core::limits::{PerMinute, RateLimits};
use runway_core::ports::{OutboundMessage, Queue, QueueError, Store, Topic};
use runway_embedded::SqliteStore;
use runway_github_webhook::{Rates, STEP, State, router};
use runway_http::webhook;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tower::ServiceExt;

const HEAD: &str = "1111111111111111111111111111111111111111";
const NEWER: &str = "2222222222222222222222222222222222222222";

/// A queue that keeps what is published.
#[derive(Default)]
struct Kept(Mutex<Vec<OutboundMessage>>);

#[async_trait]
impl Queue for Kept {
    async fn publish(&self, _: Topic, message: OutboundMessage) -> Result<String, QueueError> {
        self.0.lock().unwrap().push(message);
        Ok("1".into())
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    state: State,
    store: Arc<SqliteStore>,
    queue: Arc<Kept>,
}

/// The app `demo`, deploying branch `main` of repository 7 (`acme/demo`), with `previews`.
async fn fixture(previews: Previews) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("runway.db")).unwrap());
    let mut app = runway_core::testing::deployment(
        "demo",
        RepoUrl::parse("https://github.com/acme/demo", false).unwrap(),
        7,
        "ada@example.com",
    );
    app.previews = previews;
    app.runtime.min_instances = runway_core::domain::MinInstances::parse("2").unwrap();
    store.put_deployment(&app).await.unwrap();
    let unlimited = RateLimits {
        webhook_per_app: PerMinute::new(0),
        webhook_per_source: PerMinute::new(0),
        ..RateLimits::default()
    };
    let clock = clock::system();
    let queue = Arc::new(Kept::default());
    let state = State {
        store: store.clone(),
        queue: queue.clone(),
        secret: SecretString::from("installation-key".to_owned()),
        rates: Arc::new(Rates::new(&unlimited, &clock)),
        clock,
        step: STEP,
        unverified: Default::default(),
        sources: None,
    };
    Fixture {
        _dir: dir,
        state,
        store,
        queue,
    }
}

fn on() -> Previews {
    Previews {
        enabled: true,
        ..Previews::default()
    }
}

/// A `pull_request` event as GitHub sends it: pull request 5 from `head_repo`'s `feature`
/// into `base` of `acme/demo` (id 7).
fn event(action: &str, head: &str, base: &str, head_repo: Value) -> Value {
    let repository = json!({ "id": 7, "full_name": "acme/demo" });
    json!({
        "action": action,
        "number": 5,
        "pull_request": {
            "number": 5,
            "title": "A <b>new</b> chart",
            "html_url": "https://github.com/acme/demo/pull/5",
            "state": if action == "closed" { "closed" } else { "open" },
            "merged": false,
            "user": { "login": "grace" },
            "head": { "ref": "feature", "sha": head, "repo": head_repo },
            "base": { "ref": base, "sha": HEAD, "repo": repository },
        },
        "repository": repository,
        "sender": { "login": "grace" },
    })
}

fn same_repo() -> Value {
    json!({ "id": 7, "full_name": "acme/demo" })
}

fn fork() -> Value {
    json!({ "id": 99, "full_name": "mallory/demo" })
}

async fn send(state: &State, path_app: &str, id: &str, body: &Value) -> (StatusCode, Value) {
    let body = serde_json::to_vec(body).unwrap();
    let secret = webhook::app_secret(&state.secret, &AppName::parse(path_app).unwrap());
    let mut request = http::Request::post(format!("/github/webhook/{path_app}"))
        .header("x-github-event", "pull_request")
        .header("x-github-delivery", id)
        .header(
            "x-hub-signature-256",
            webhook::sign(secret.expose_secret().as_bytes(), &body),
        )
        .body(axum::body::Body::from(body))
        .unwrap();
    let peer = std::net::SocketAddr::from(([140, 82, 112, 1], 443));
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

fn preview() -> AppName {
    AppName::parse("demo--pr5").unwrap()
}

#[tokio::test]
async fn an_opened_pull_request_into_the_apps_branch_queues_its_preview_and_records_it() {
    // Arrange
    let f = fixture(on()).await;

    // Act
    let (status, body) = send(
        &f.state,
        "demo",
        "d-1",
        &event("opened", HEAD, "main", same_repo()),
    )
    .await;

    // Assert
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["app"], "demo--pr5");
    let record = f
        .store
        .deployment(&preview())
        .await
        .unwrap()
        .expect("the preview's record");
    let pull = record.pull.as_ref().expect("its pull request");
    assert_eq!((pull.number, pull.head.as_str()), (5, HEAD));
    assert_eq!(pull.title, "A <b>new</b> chart");
    assert_eq!(pull.author, "grace");
    assert_eq!(pull.fork, None);
    assert_eq!(record.branch.as_str(), "feature");
    assert_eq!(record.webhook_id, None, "a preview has no hook of its own");
    assert_eq!(
        record.secret_keys,
        Some(Vec::new()),
        "and none of the app's secrets"
    );
    assert!(record.notify.is_empty());
    assert_eq!(
        record.runtime.min_instances.count(),
        0,
        "no warm instance is billed for it"
    );
    let releases = f.store.releases(&preview(), 10).await.unwrap();
    assert_eq!(releases.len(), 1);
    assert_eq!(releases[0].trigger, Trigger::Preview);
    assert_eq!(releases[0].commit.as_ref().map(|c| c.as_str()), Some(HEAD));
    assert_eq!(
        f.queue.0.lock().unwrap().len(),
        1,
        "its deploy request was published"
    );
    let app = AppName::parse("demo").unwrap();
    let deliveries = f.store.deliveries_of_app(&app, 10).await.unwrap();
    assert_eq!(deliveries[0].outcome, "queued a preview of #5 as demo--pr5");
    let audit = f.store.audit(Some(&preview()), 0, 10).await.unwrap();
    assert_eq!(audit[0].actor, "grace (pull request #5)");
    assert!(
        f.store.releases(&app, 10).await.unwrap().is_empty(),
        "the app itself is not released"
    );
}

#[tokio::test]
async fn a_push_to_the_pull_request_queues_its_head_and_a_replay_queues_nothing() {
    // Arrange
    let f = fixture(on()).await;
    send(
        &f.state,
        "demo",
        "d-1",
        &event("opened", HEAD, "main", same_repo()),
    )
    .await;

    // Act
    let (status, _) = send(
        &f.state,
        "demo",
        "d-2",
        &event("synchronize", NEWER, "main", same_repo()),
    )
    .await;
    let (replayed, body) = send(
        &f.state,
        "demo",
        "d-2",
        &event("synchronize", NEWER, "main", same_repo()),
    )
    .await;

    // Assert
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        (replayed, body["status"].as_str()),
        (StatusCode::OK, Some("duplicate"))
    );
    let releases = f.store.releases(&preview(), 10).await.unwrap();
    assert_eq!(releases.len(), 2, "{releases:#?}");
    assert_eq!(releases[0].commit.as_ref().map(|c| c.as_str()), Some(NEWER));
    // The older one, still queued, gave way to the newer.
    assert_eq!(releases[1].state, ReleaseState::Superseded);
    let record = f.store.deployment(&preview()).await.unwrap().unwrap();
    assert_eq!(record.pull.unwrap().head.as_str(), NEWER);
}

#[tokio::test]
async fn closing_queues_the_previews_removal_and_a_pull_request_without_one_is_ignored() {
    // Arrange
    let f = fixture(on()).await;
    send(
        &f.state,
        "demo",
        "d-1",
        &event("opened", HEAD, "main", same_repo()),
    )
    .await;

    // Act
    let (status, body) = send(
        &f.state,
        "demo",
        "d-2",
        &event("closed", HEAD, "main", same_repo()),
    )
    .await;
    let mut other = event("closed", HEAD, "main", same_repo());
    other["number"] = 6.into();
    let (ignored, why) = send(&f.state, "demo", "d-3", &other).await;

    // Assert
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let releases = f.store.releases(&preview(), 10).await.unwrap();
    assert_eq!(releases[0].trigger, Trigger::Close);
    assert_eq!(releases[0].state, ReleaseState::Queued);
    assert_eq!(ignored, StatusCode::ACCEPTED);
    assert_eq!(why["status"], "ignored");
    assert_eq!(
        why["reason"],
        "pull request #6 was closed; it had no preview"
    );
}

#[tokio::test]
async fn pull_requests_an_app_does_not_preview_are_recorded_with_the_reason() {
    let cases = [
        (
            Previews::default(),
            event("opened", HEAD, "main", same_repo()),
            "previews are off for demo",
        ),
        (
            on(),
            event("opened", HEAD, "develop", same_repo()),
            "is into develop; demo previews pull requests into main",
        ),
        (
            on(),
            event("opened", HEAD, "main", fork()),
            "comes from the fork mallory/demo",
        ),
        (
            on(),
            event("opened", HEAD, "main", Value::Null),
            "comes from the fork (deleted)",
        ),
        (
            on(),
            event("labeled", HEAD, "main", same_repo()),
            "was labeled; previews follow opened",
        ),
        (
            on(),
            event("edited", HEAD, "main", same_repo()),
            "was edited; it has no preview",
        ),
        (
            on(),
            event("opened", "not-a-sha", "main", same_repo()),
            "'not-a-sha' is not a commit id",
        ),
    ];
    for (previews, body, reason) in cases {
        // Arrange
        let f = fixture(previews).await;

        // Act
        let (status, answer) = send(&f.state, "demo", "d-1", &body).await;

        // Assert
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        assert_eq!(answer["status"], "ignored", "{answer}");
        let said = answer["reason"].as_str().unwrap_or_default();
        assert!(said.contains(reason), "{said:?} should say {reason:?}");
        assert!(f.store.deployment(&preview()).await.unwrap().is_none());
        assert!(f.queue.0.lock().unwrap().is_empty());
        let app = AppName::parse("demo").unwrap();
        let deliveries = f.store.deliveries_of_app(&app, 10).await.unwrap();
        assert_eq!(deliveries[0].outcome, format!("ignored: {said}"));
    }
}

#[tokio::test]
async fn a_forks_pull_request_is_previewed_where_an_admin_allowed_it() {
    // Arrange
    let f = fixture(Previews {
        enabled: true,
        forks: true,
        ..Previews::default()
    })
    .await;

    // Act
    let (status, _) = send(
        &f.state,
        "demo",
        "d-1",
        &event("opened", HEAD, "main", fork()),
    )
    .await;

    // Assert
    assert_eq!(status, StatusCode::ACCEPTED);
    let record = f.store.deployment(&preview()).await.unwrap().unwrap();
    assert_eq!(record.pull.unwrap().fork.as_deref(), Some("mallory/demo"));
}

#[tokio::test]
async fn a_previews_own_name_has_no_hook_to_deliver_to() {
    // Arrange: the preview exists, and the delivery is signed with what its name would derive.
    let f = fixture(on()).await;
    send(
        &f.state,
        "demo",
        "d-1",
        &event("opened", HEAD, "main", same_repo()),
    )
    .await;

    // Act
    let (status, _) = send(
        &f.state,
        "demo--pr5",
        "d-2",
        &event("opened", NEWER, "main", same_repo()),
    )
    .await;

    // Assert
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(f.store.releases(&preview(), 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_edited_title_updates_the_preview_and_builds_nothing() {
    // Arrange
    let f = fixture(on()).await;
    send(
        &f.state,
        "demo",
        "d-1",
        &event("opened", HEAD, "main", same_repo()),
    )
    .await;
    let mut edited = event("edited", HEAD, "main", same_repo());
    edited["pull_request"]["title"] = "A better chart".into();

    // Act
    let (status, body) = send(&f.state, "demo", "d-2", &edited).await;

    // Assert
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "updated");
    let record = f.store.deployment(&preview()).await.unwrap().unwrap();
    assert_eq!(record.pull.unwrap().title, "A better chart");
    assert_eq!(
        f.store.releases(&preview(), 10).await.unwrap().len(),
        1,
        "nothing rebuilt"
    );
}

#[tokio::test]
async fn a_pull_request_made_to_go_into_another_branch_loses_its_preview() {
    // Arrange
    let f = fixture(on()).await;
    send(
        &f.state,
        "demo",
        "d-1",
        &event("opened", HEAD, "main", same_repo()),
    )
    .await;

    // Act
    let (status, body) = send(
        &f.state,
        "demo",
        "d-2",
        &event("edited", HEAD, "develop", same_repo()),
    )
    .await;

    // Assert
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let releases = f.store.releases(&preview(), 10).await.unwrap();
    assert_eq!(releases[0].trigger, Trigger::Close);
    let app = AppName::parse("demo").unwrap();
    let deliveries = f.store.deliveries_of_app(&app, 10).await.unwrap();
    assert!(
        deliveries[0].outcome.ends_with("it now goes into develop"),
        "{deliveries:#?}"
    );
}
