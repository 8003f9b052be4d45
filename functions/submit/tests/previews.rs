//! Previews as the submit API sees them: forks are an admin's to allow, a preview's name is
//! never a new app's, and a preview is managed by its pull request, not through the API.

use std::sync::Arc;

use async_trait::async_trait;
use http::{HeaderMap, StatusCode};
use runway_core::domain::{AppName, Caller, CommitSha, PullRequest, RepoUrl};
use runway_core::ports::{Identity, IdentityError, Store};
use runway_embedded::{Embedded, EmbeddedConfig};
use runway_submit::{State, router};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Whoever `x-test-user` names; `admin@example.com` is an admin.
struct Named;

#[async_trait]
impl Identity for Named {
    async fn caller(&self, headers: &HeaderMap) -> Result<Caller, IdentityError> {
        let email = headers
            .get("x-test-user")
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| IdentityError::Unauthenticated("no x-test-user".into()))?;
        Ok(Caller {
            email: email.to_owned(),
            admin: email == ADMIN,
        })
    }
}

const ADA: &str = "ada@example.com";
const ADMIN: &str = "admin@example.com";
const REPO: &str = "/srv/git/demo.git";

struct Fixture {
    _dir: tempfile::TempDir,
    embedded: Embedded,
    state: State,
}

/// Ada's app `demo`, and the preview of its pull request 3.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::from_env().unwrap();
    config.data_dir = dir.path().join("data");
    let embedded = Embedded::open(config, 8080).unwrap();
    let mut state = State::new(&embedded.adapters()).unwrap();
    state.identity = Arc::new(Named);
    let repo = RepoUrl::parse(REPO, true).unwrap();
    let app = runway_core::testing::deployment("demo", repo.clone(), 7, ADA);
    let mut preview = app.clone();
    preview.app = AppName::preview(&app.app, 3);
    preview.pull = Some(PullRequest {
        number: 3,
        title: "A chart".into(),
        url: "https://github.com/acme/demo/pull/3".into(),
        author: "grace".into(),
        head_branch: "feature".into(),
        fork: None,
        head: CommitSha::parse(&"a".repeat(40)).unwrap(),
    });
    embedded.store.put_deployment(&app).await.unwrap();
    embedded.store.put_deployment(&preview).await.unwrap();
    Fixture {
        _dir: dir,
        embedded,
        state,
    }
}

impl Fixture {
    async fn send(&self, user: &str, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("x-test-user", user)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .unwrap();
        let response = router(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }
}

fn update(previews: &str) -> Value {
    json!({ "repo_url": REPO, "main_file": "app.py", "app_name": "demo", "previews": previews })
}

#[tokio::test]
async fn only_an_admin_may_allow_previews_of_forks() {
    // Arrange
    let f = fixture().await;

    // Act
    let (status, body) = f
        .send(ADA, "POST", "/api/deployments", update("forks"))
        .await;

    // Assert
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("only an admin may allow previews"),
        "{message}"
    );
    let app = AppName::parse("demo").unwrap();
    let stored = f.embedded.store.deployment(&app).await.unwrap().unwrap();
    assert!(!stored.previews.enabled, "nothing changed");
}

#[tokio::test]
async fn previews_take_off_on_or_forks_and_nothing_else() {
    // Arrange
    let f = fixture().await;

    // Act
    let (status, body) = f.send(ADA, "POST", "/api/deployments", update("yes")).await;

    // Assert
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "previews");
    assert!(
        body["error"].as_str().unwrap().contains("off, on"),
        "{body}"
    );
}

#[tokio::test]
async fn a_previews_name_is_no_new_apps_name() {
    // Arrange
    let f = fixture().await;
    let body = json!({ "repo_url": REPO, "main_file": "app.py", "app_name": "other--pr7" });

    // Act
    let (status, answer) = f.send(ADMIN, "POST", "/api/deployments", body).await;

    // Assert
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["field"], "app_name");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("pull-request previews"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_preview_follows_its_pull_request_and_is_not_managed_through_the_api() {
    // Arrange
    let f = fixture().await;

    for (method, path, body) in [
        ("POST", "/api/deployments/demo--pr3/redeploy", json!({})),
        ("POST", "/api/deployments/demo--pr3/rollback", json!({})),
        (
            "PUT",
            "/api/deployments/demo--pr3/notifications",
            json!({ "notify": "" }),
        ),
        ("DELETE", "/api/deployments/demo--pr3", Value::Null),
    ] {
        // Act
        let (status, answer) = f.send(ADMIN, method, path, body).await;

        // Assert
        assert_eq!(status, StatusCode::CONFLICT, "{method} {path}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(message.contains("pull request #3"), "{message}");
    }
    let preview = AppName::parse("demo--pr3").unwrap();
    assert!(
        f.embedded
            .store
            .deployment(&preview)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn secrets_for_previews_are_checked_as_toml_and_named_by_their_field() {
    // Arrange
    let f = fixture().await;
    let mut body = update("on");
    body["preview_secrets"] = json!("key = \"unterminated");

    // Act
    let (status, answer) = f.send(ADA, "POST", "/api/deployments", body).await;

    // Assert
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["field"], "preview_secrets");
    assert!(
        !answer.to_string().contains("unterminated"),
        "the text is never quoted: {answer}"
    );
}
