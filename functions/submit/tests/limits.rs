//! Each signed-in caller's changes are limited per minute: past the rate a change gets 429 with
//! `Retry-After` and changes nothing, other callers go on, reads are not counted, and once the
//! wait is over the same change goes through. Time is a `ManualClock`: nothing here sleeps.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{HeaderMap, StatusCode};
use runway_core::clock::{Clock, ManualClock};
use runway_core::domain::{AppName, Caller, RepoUrl};
use runway_core::limits::PerMinute;
use runway_core::ports::{Identity, IdentityError, Store};
use runway_embedded::{Embedded, EmbeddedConfig};
use runway_http::limit::KeyedLimit;
use runway_submit::{State, router};
use tower::ServiceExt;

/// Whoever `x-test-user` names, a deployer (IAP's signed assertion on Google Cloud).
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
            admin: false,
        })
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    embedded: Embedded,
    clock: ManualClock,
    state: State,
}

struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: serde_json::Value,
}

const ADA: &str = "ada@example.com";
const BOB: &str = "bob@example.com";

/// The embedded adapters, `per_minute` changes a caller, and ada's app `demo`.
async fn fixture(per_minute: u32) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::from_env().unwrap();
    config.data_dir = dir.path().join("data");
    let embedded = Embedded::open(config, 8080).unwrap();
    let clock = ManualClock::starting_now();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let mut state = State::new(&embedded.adapters()).unwrap();
    state.identity = Arc::new(Named);
    state.changes = Arc::new(KeyedLimit::new(PerMinute::new(per_minute), shared));
    embedded
        .store
        .put_deployment(&runway_core::testing::deployment(
            "demo",
            RepoUrl::parse("/srv/git/demo.git", true).unwrap(),
            7,
            ADA,
        ))
        .await
        .unwrap();
    Fixture {
        _dir: dir,
        embedded,
        clock,
        state,
    }
}

impl Fixture {
    async fn send(&self, user: &str, method: &str, path: &str) -> Answer {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("x-test-user", user)
            .header("content-type", "application/json")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = router(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .map(|value| value.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        Answer {
            status,
            retry_after,
            body: serde_json::from_slice(&body).unwrap_or_default(),
        }
    }

    async fn demo_exists(&self) -> bool {
        let app = AppName::parse("demo").unwrap();
        self.embedded
            .store
            .deployment(&app)
            .await
            .unwrap()
            .is_some()
    }
}

#[tokio::test]
async fn a_callers_changes_past_the_rate_get_429_and_change_nothing_while_others_go_on() {
    let f = fixture(2).await;

    let first = f.send(ADA, "POST", "/api/deployments/ghost/redeploy").await;
    assert_eq!(first.status, StatusCode::NOT_FOUND, "{}", first.body);
    let second = f.send(ADA, "POST", "/api/deployments/ghost/rollback").await;
    assert_eq!(second.status, StatusCode::NOT_FOUND, "{}", second.body);
    let refused = f.send(ADA, "DELETE", "/api/deployments/demo").await;

    // Two a minute: the next in 30 s.
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );
    assert_eq!(refused.retry_after.as_deref(), Some("30"));
    let message = refused.body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains(ADA) && message.contains("try again in 30 s"),
        "{message}"
    );
    assert!(f.demo_exists().await, "a refused delete deleted the app");
    let audit = f.embedded.store.audit(None, 0, 10).await.unwrap();
    assert!(audit.is_empty(), "{audit:?}");

    // Another caller has a rate of its own, and reads are no changes.
    let bob = f.send(BOB, "DELETE", "/api/deployments/ghost").await;
    assert_eq!(bob.status, StatusCode::NOT_FOUND, "{}", bob.body);
    let form = f.send(ADA, "GET", "/new").await;
    assert_eq!(form.status, StatusCode::OK);

    f.clock.advance(Duration::from_secs(30));
    let deleted = f.send(ADA, "DELETE", "/api/deployments/demo").await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    assert!(!f.demo_exists().await);
}

#[tokio::test]
async fn without_a_rate_a_caller_is_not_limited() {
    let f = fixture(0).await;

    for _ in 0..50 {
        let answer = f.send(ADA, "POST", "/api/deployments/ghost/redeploy").await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.body);
    }
}
