//! The push path is bounded: GitHub gives up on a delivery after 10 s and never retries it by
//! itself, so a store or queue that hangs must get an answer from the ingress in time, not
//! silence. A queue that hangs is no reason to fail the push at all: the release is durably
//! queued, and cleanup publishes it again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::StatusCode;
use runway_core::clock;
use runway_core::domain::{
    AppName, AuditEntry, BuildId, Delivery, Deployment, HookId, NewRelease, Release, ReleaseId,
    ReleaseState, ReleaseUpdate, RepoUrl, Timestamp,
};
use runway_core::limits::RateLimits;
use runway_core::ports::{
    AppReleases, OutboundMessage, Pruned, Queue, QueueError, Retention, Store, StoreError, Topic,
};
use runway_embedded::SqliteStore;
use runway_github_webhook::{Rates, State, router};
use secrecy::SecretString;
use tower::ServiceExt;

const STEP: Duration = Duration::from_millis(200);

/// A real store, whose recording of a delivery can be made to hang, and whose next queueing of
/// a release can be made to fail (the store unreachable at the worst moment).
struct SometimesHanging {
    inner: SqliteStore,
    hang_on_delivery: bool,
    fail_next_queue: AtomicBool,
}

fn unreachable() -> StoreError {
    StoreError::Unavailable("the store did not answer".into())
}

async fn never<T>() -> T {
    std::future::pending().await
}

#[async_trait]
impl Store for SometimesHanging {
    async fn put_deployment(&self, d: &Deployment) -> Result<(), StoreError> {
        self.inner.put_deployment(d).await
    }
    async fn insert_deployment(&self, d: &Deployment) -> Result<bool, StoreError> {
        self.inner.insert_deployment(d).await
    }
    async fn deployment(&self, app: &AppName) -> Result<Option<Deployment>, StoreError> {
        self.inner.deployment(app).await
    }
    async fn deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        self.inner.deployments().await
    }
    async fn deployments_of_repo(&self, repo_id: u64) -> Result<Vec<Deployment>, StoreError> {
        self.inner.deployments_of_repo(repo_id).await
    }
    async fn delete_deployment(&self, app: &AppName) -> Result<(), StoreError> {
        self.inner.delete_deployment(app).await
    }
    async fn put_hook_health(
        &self,
        app: &AppName,
        health: &runway_core::domain::HookHealth,
    ) -> Result<(), StoreError> {
        self.inner.put_hook_health(app, health).await
    }
    async fn hook_health(
        &self,
        app: &AppName,
    ) -> Result<Option<runway_core::domain::HookHealth>, StoreError> {
        self.inner.hook_health(app).await
    }
    async fn queue_release(&self, release: NewRelease) -> Result<Release, StoreError> {
        if self.fail_next_queue.swap(false, Ordering::SeqCst) {
            return Err(unreachable());
        }
        self.inner.queue_release(release).await
    }
    async fn release(&self, id: &ReleaseId) -> Result<Option<Release>, StoreError> {
        self.inner.release(id).await
    }
    async fn releases(&self, app: &AppName, limit: usize) -> Result<Vec<Release>, StoreError> {
        self.inner.releases(app, limit).await
    }
    async fn releases_before(
        &self,
        app: &AppName,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Release>, StoreError> {
        self.inner.releases_before(app, before, limit).await
    }
    async fn newest_and_live(
        &self,
        deployments: &[Deployment],
    ) -> Result<Vec<AppReleases>, StoreError> {
        self.inner.newest_and_live(deployments).await
    }
    async fn release_by_build(&self, id: &BuildId) -> Result<Option<Release>, StoreError> {
        self.inner.release_by_build(id).await
    }
    async fn releases_in_state(
        &self,
        state: ReleaseState,
        before: Timestamp,
    ) -> Result<Vec<Release>, StoreError> {
        self.inner.releases_in_state(state, before).await
    }
    async fn transition(
        &self,
        id: &ReleaseId,
        from: ReleaseState,
        to: ReleaseState,
        update: ReleaseUpdate,
    ) -> Result<Release, StoreError> {
        self.inner.transition(id, from, to, update).await
    }
    async fn record_delivery(&self, delivery: &Delivery) -> Result<bool, StoreError> {
        if self.hang_on_delivery {
            return never().await;
        }
        self.inner.record_delivery(delivery).await
    }
    async fn accept_push(
        &self,
        delivery: &Delivery,
        release: NewRelease,
    ) -> Result<Option<Release>, StoreError> {
        if self.hang_on_delivery {
            return never().await;
        }
        if self.fail_next_queue.swap(false, Ordering::SeqCst) {
            // Whatever it did is rolled back, as a failed transaction is.
            return Err(unreachable());
        }
        self.inner.accept_push(delivery, release).await
    }
    async fn deliveries_of_app(
        &self,
        app: &AppName,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.inner.deliveries_of_app(app, limit).await
    }
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.inner.append_audit(entry).await
    }
    async fn audit(
        &self,
        app: Option<&AppName>,
        skip: usize,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit(app, skip, limit).await
    }
    async fn add_orphan_hook(&self, repo: &str, hook_id: &HookId) -> Result<(), StoreError> {
        self.inner.add_orphan_hook(repo, hook_id).await
    }
    async fn orphan_hooks(&self) -> Result<Vec<(String, HookId)>, StoreError> {
        self.inner.orphan_hooks().await
    }
    async fn remove_orphan_hook(&self, repo: &str, hook_id: &HookId) -> Result<(), StoreError> {
        self.inner.remove_orphan_hook(repo, hook_id).await
    }
    async fn prune(&self, retention: &Retention, now: Timestamp) -> Result<Pruned, StoreError> {
        self.inner.prune(retention, now).await
    }
}

/// A queue that never answers.
struct HangingQueue;

#[async_trait]
impl Queue for HangingQueue {
    async fn publish(&self, _: Topic, _: OutboundMessage) -> Result<String, QueueError> {
        never().await
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<SometimesHanging>,
    state: State,
}

impl Fixture {
    /// The app's releases, newest first.
    async fn releases(&self) -> Vec<Release> {
        let app = AppName::parse("demo").unwrap();
        self.store.releases(&app, 5).await.unwrap()
    }
}

async fn fixture(hang_on_delivery: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let inner = SqliteStore::open(&dir.path().join("runway.db")).unwrap();
    let store = Arc::new(SometimesHanging {
        inner,
        hang_on_delivery,
        fail_next_queue: AtomicBool::new(false),
    });
    store
        .put_deployment(&runway_core::testing::deployment(
            "demo",
            RepoUrl::parse("https://github.com/acme/demo", false).unwrap(),
            7,
            "ada@example.com",
        ))
        .await
        .unwrap();
    let clock = clock::system();
    let state = State {
        store: store.clone(),
        queue: Arc::new(HangingQueue),
        secret: SecretString::from("installation-key".to_owned()),
        rates: Arc::new(Rates::new(&RateLimits::default(), &clock)),
        clock,
        step: STEP,
        unverified: Default::default(),
        sources: None,
    };
    Fixture {
        _dir: dir,
        store,
        state,
    }
}

/// Sends a signed push to `main` of the app's repository; the status and how long it took.
async fn push(state: &State) -> (StatusCode, Duration) {
    let (status, took, _) = push_answer(state).await;
    (status, took)
}

/// The same push (delivery `d-1`): the status, how long it took, and the body.
async fn push_answer(state: &State) -> (StatusCode, Duration, serde_json::Value) {
    let body = serde_json::json!({
        "ref": "refs/heads/main", "before": "0".repeat(40), "after": "a".repeat(40),
        "deleted": false, "repository": { "id": 7, "full_name": "acme/demo" },
    })
    .to_string();
    let app = AppName::parse("demo").unwrap();
    let secret = runway_http::webhook::app_secret(&state.secret, &app);
    let signature = runway_http::webhook::sign(
        secrecy::ExposeSecret::expose_secret(&secret).as_bytes(),
        body.as_bytes(),
    );
    let request = from_peer(
        http::Request::post("/github/webhook/demo")
            .header("x-github-event", "push")
            .header("x-github-delivery", "d-1")
            .header("x-hub-signature-256", signature)
            .body(axum::body::Body::from(body))
            .unwrap(),
    );
    let started = Instant::now();
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let (status, took) = (response.status(), started.elapsed());
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        took,
        serde_json::from_slice(&body).unwrap_or_default(),
    )
}

/// The store fails while the release is being queued: GitHub shows the delivery as failed, and
/// its "Redeliver" (the same delivery id) must queue the release, not be called a duplicate.
#[tokio::test]
async fn a_push_whose_release_could_not_be_queued_is_queued_when_redelivered() {
    let f = fixture(false).await;
    f.store.fail_next_queue.store(true, Ordering::SeqCst);

    let (status, _, answer) = push_answer(&f.state).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    let (status, _, answer) = push_answer(&f.state).await;

    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["status"], "queued", "{answer}");
    let releases = f.releases().await;
    assert_eq!(releases.len(), 1);
    // And a third time it is a replay.
    let (status, _, answer) = push_answer(&f.state).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "duplicate", "{answer}");
}

#[tokio::test]
async fn a_hanging_queue_does_not_hold_the_answer_and_the_release_stays_queued() {
    let f = fixture(false).await;

    let (status, took) = push(&f.state).await;

    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(took < STEP * 4, "answered after {took:?}");
    let releases = f.releases().await;
    assert_eq!(releases.len(), 1);
    assert_eq!(
        releases[0].state,
        ReleaseState::Queued,
        "cleanup publishes it"
    );
}

#[tokio::test]
async fn a_hanging_store_gets_a_503_in_time_not_silence() {
    let f = fixture(true).await;

    let (status, took) = push(&f.state).await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(took < STEP * 4, "answered after {took:?}");
}

/// A request whose body never ends: the head says a push of many megabytes follows.
fn endless(path: &str, headers: &[(&str, &str)]) -> http::Request<axum::body::Body> {
    let endless = futures_util::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
    let mut request = http::Request::post(path).header("content-length", "20000000");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    from_peer(
        request
            .body(axum::body::Body::from_stream(endless))
            .unwrap(),
    )
}

/// `request` as the serve loop hands it on: with the address of the peer that sent it.
fn from_peer(mut request: http::Request<axum::body::Body>) -> http::Request<axum::body::Body> {
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40_000));
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    request
}

/// What the head alone can refuse is refused before the body is read: anyone may send a body
/// of 25 MB (GitHub's cap), slowly.
#[tokio::test]
async fn a_delivery_the_head_refuses_is_answered_before_its_body_is_read() {
    let f = fixture(false).await;
    let signed = ("x-hub-signature-256", "sha256=00");
    let push = ("x-github-event", "push");
    let delivery = ("x-github-delivery", "d-9");
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, StatusCode);
    let cases: [Case; 5] = [
        (
            "/github/webhook/demo",
            vec![push, delivery],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "/github/webhook/demo",
            vec![signed, delivery],
            StatusCode::BAD_REQUEST,
        ),
        (
            "/github/webhook/demo",
            vec![signed, push],
            StatusCode::BAD_REQUEST,
        ),
        // No such app: the same answer as a bad signature.
        (
            "/github/webhook/nobody",
            vec![signed, push, delivery],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "/github/webhook/Not_An_App",
            vec![signed, push, delivery],
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (path, headers, expected) in cases {
        let answered = tokio::time::timeout(
            Duration::from_secs(2),
            router(f.state.clone()).oneshot(endless(path, &headers)),
        )
        .await;
        let response = answered
            .unwrap_or_else(|_| panic!("{path} {headers:?}: waited for the body"))
            .unwrap();
        assert_eq!(response.status(), expected, "{path} {headers:?}");
    }
}
