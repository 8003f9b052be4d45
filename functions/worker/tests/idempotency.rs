//! The worker's push endpoint with the real embedded adapters: a deploy request delivered twice
//! (Pub/Sub delivers at least once) starts exactly one build, and a release whose worker dies at
//! every attempt is failed instead of coming back forever.

use std::path::Path;
use std::process::Command;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use runway_core::domain::{
    AppName, Branch, BuildId, Deployment, MainFile, NewRelease, Release, ReleaseState, RepoUrl,
    Resources, Trigger,
};
use runway_core::messages::{BuildNotification, DeployRequest};
use runway_core::ports::{
    BuildError, BuildOrigin, BuildRequest, BuildStatus, Forge, ImageBuilder, StartedBuild, Store,
    Topic,
};
use runway_embedded::{Embedded, EmbeddedConfig};
use runway_http::push::{PushEnvelope, PushMessage};
use tower::ServiceExt;

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

fn envelope(data: &[u8]) -> PushEnvelope {
    PushEnvelope {
        message: PushMessage {
            data: PushMessage::encode(data),
            attributes: Default::default(),
            message_id: "1".into(),
            publish_time: "2026-11-23T00:00:00Z".into(),
            ordering_key: None,
        },
        subscription: "projects/local/subscriptions/test".into(),
        delivery_attempt: Some(1),
    }
}

/// An app deployed from a fresh local repository, with one manual release queued.
async fn queued_release() -> (tempfile::TempDir, Embedded, Release) {
    let dir = tempfile::tempdir().unwrap();
    let (bare, work) = (dir.path().join("app.git"), dir.path().join("work"));
    std::fs::create_dir_all(&work).unwrap();
    git(
        dir.path(),
        &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
    );
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("app.py"), "import streamlit as st\n").unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "one"]);
    git(&work, &["push", "-q", bare.to_str().unwrap(), "main"]);

    let mut config = EmbeddedConfig::from_env().unwrap();
    config.data_dir = dir.path().join("data");
    let embedded = Embedded::open(config, 1).unwrap();
    let repo = RepoUrl::parse(bare.to_str().unwrap(), true).unwrap();
    let branch = Branch::parse("main").unwrap();
    let now = chrono::Utc::now();
    let app = AppName::parse("demo").unwrap();
    embedded
        .store
        .put_deployment(&Deployment {
            app: app.clone(),
            repo_id: embedded.forge.repository(&repo).await.unwrap().id,
            repo: repo.clone(),
            branch: branch.clone(),
            main_file: MainFile::parse("app.py").unwrap(),
            region: runway_core::domain::Region::try_from("local".to_owned()).unwrap(),
            resources: Resources::default(),
            runtime: Default::default(),
            access: Default::default(),
            owner: "t@t".into(),
            notify: Vec::new(),
            previews: Default::default(),
            pull: None,
            secret_keys: None,
            webhook_id: None,
            live_release: None,
            url: None,
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
    let commit = embedded.forge.resolve_commit(&repo, &branch).await.unwrap();
    let release = embedded
        .store
        .queue_release(NewRelease {
            app: app.clone(),
            trigger: Trigger::Manual,
            actor: "t@t".into(),
            commit: Some(commit),
            rollback_of: None,
            clear_cache: false,
        })
        .await
        .unwrap();

    (dir, embedded, release)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_deploy_request_never_builds_twice() {
    let (dir, embedded, release) = queued_release().await;
    let app = release.app.clone();
    let router = runway_worker::router(runway_worker::State::new(&embedded.adapters()).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/pubsub/deploy-requests",
        listener.local_addr().unwrap()
    );
    tokio::spawn(runway_http::serve_router(
        router,
        listener,
        std::future::pending(),
    ));
    let request = DeployRequest {
        release_id: release.id.clone(),
        app: app.to_string(),
    };
    let body = envelope(&serde_json::to_vec(&request).unwrap());
    let client = reqwest::Client::new();
    let token = embedded.push_token.token().to_owned();
    let push = |body: PushEnvelope, token: String| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let response = client
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };

    // The same message twice at once, then once more: one build.
    let (a, b) = tokio::join!(
        push(body.clone(), token.clone()),
        push(body.clone(), token.clone())
    );
    let c = push(body.clone(), token.clone()).await;
    for (status, text) in [&a, &b, &c] {
        assert_eq!(*status, 200, "{text}");
    }
    let started = [&a, &b, &c]
        .iter()
        .filter(|(_, t)| t.contains("started"))
        .count();
    assert_eq!(started, 1, "{a:?} {b:?} {c:?}");
    let builds = std::fs::read_dir(dir.path().join("data/builds"))
        .unwrap()
        .count();
    assert_eq!(builds, 1);
    let stored = embedded.store.release(&release.id).await.unwrap().unwrap();
    assert_eq!(stored.state, ReleaseState::Building);
    assert!(stored.build_id.is_some());

    // Without the push token: refused. An undecodable message: acknowledged, not retried forever.
    assert_eq!(push(body.clone(), "wrong".into()).await.0, 401);
    let mut garbage = envelope(b"");
    garbage.message.data = "%%%".into();
    let (status, text) = push(garbage, token).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("failed"), "{text}");
}

/// A builder whose `start` never returns: the worker dies while it prepares the source, as one
/// out of memory on a very large repository does (the test then drops the request mid-way).
struct DiesWhileStarting(Arc<tokio::sync::Notify>);

#[async_trait]
impl ImageBuilder for DiesWhileStarting {
    async fn start(&self, _: BuildRequest) -> Result<StartedBuild, BuildError> {
        self.0.notify_one();
        std::future::pending().await
    }
    async fn status(&self, _: &BuildId) -> Result<BuildStatus, BuildError> {
        Ok(BuildStatus::Lost)
    }
    async fn log(&self, _: &BuildId) -> Result<String, BuildError> {
        Ok(String::new())
    }
    async fn delete_app(&self, _: &AppName) -> Result<(), BuildError> {
        Ok(())
    }
}

fn push_request(body: &PushEnvelope, token: &str) -> http::Request<axum::body::Body> {
    http::Request::post("/pubsub/deploy-requests")
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body).unwrap().into())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_whose_worker_dies_at_every_attempt_fails_instead_of_coming_back_forever() {
    let (_dir, embedded, release) = queued_release().await;
    let entered = Arc::new(tokio::sync::Notify::new());
    let mut worker = runway_worker::State::new(&embedded.adapters()).unwrap();
    worker.builder = Arc::new(DiesWhileStarting(entered.clone()));
    let router = runway_worker::router(worker);
    let mut cleanup = runway_cleanup::State::new(&embedded.adapters()).unwrap();
    cleanup.stale_after = Duration::ZERO;
    let token = embedded.push_token.token().to_owned();
    let request = DeployRequest {
        release_id: release.id.clone(),
        app: release.app.to_string(),
    };
    let body = envelope(&serde_json::to_vec(&request).unwrap());
    let stored = || async { embedded.store.release(&release.id).await.unwrap().unwrap() };

    for attempt in 1..=Release::MAX_BUILD_ATTEMPTS {
        tokio::select! {
            response = router.clone().oneshot(push_request(&body, &token)) => {
                panic!("attempt {attempt} ended: {response:?}")
            }
            // The worker dies here: its request is dropped mid-way.
            () = entered.notified() => {}
        }
        let died = stored().await;
        assert_eq!(
            (died.state, died.attempts),
            (ReleaseState::Building, attempt)
        );
        // The scheduled cleanup finds it building with no build, and queues it again.
        let report = runway_cleanup::run(&cleanup).await;
        assert_eq!(report.republished, 1, "{report:?}");
        assert_eq!(stored().await.state, ReleaseState::Queued);
    }

    let response = tokio::select! {
        response = router.oneshot(push_request(&body, &token)) => response.unwrap(),
        () = entered.notified() => panic!("a build was started once more"),
    };
    assert_eq!(response.status(), 200);
    let failed = stored().await;
    assert_eq!(failed.state, ReleaseState::Failed);
    let message = failed.message.unwrap_or_default();
    assert!(message.contains("tried 5 times"), "{message}");
    assert!(message.contains("Redeploy"), "{message}");
    // And the cleanup leaves it failed.
    runway_cleanup::run(&cleanup).await;
    assert_eq!(stored().await.state, ReleaseState::Failed);
}

/// A builder that starts the build and never returns: the worker dies after Cloud Build made
/// the build and before the release recorded it (the test then drops the request mid-way).
struct DiesAfterStarting(Arc<dyn ImageBuilder>, Arc<tokio::sync::Notify>);

#[async_trait]
impl ImageBuilder for DiesAfterStarting {
    async fn start(&self, request: BuildRequest) -> Result<StartedBuild, BuildError> {
        self.0.start(request).await?;
        self.1.notify_one();
        std::future::pending().await
    }
    async fn status(&self, build_id: &BuildId) -> Result<BuildStatus, BuildError> {
        self.0.status(build_id).await
    }
    async fn log(&self, build_id: &BuildId) -> Result<String, BuildError> {
        self.0.log(build_id).await
    }
    async fn delete_app(&self, app: &AppName) -> Result<(), BuildError> {
        self.0.delete_app(app).await
    }
    async fn origin(&self, build_id: &BuildId) -> Result<Option<BuildOrigin>, BuildError> {
        self.0.origin(build_id).await
    }
}

/// The build's end then finds a release with no build recorded. Its redelivered deploy request
/// takes the release as already building, so unless the end is taken as the release's own (the
/// builder vouches for what it started), the release waits for cleanup to build it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_whose_worker_died_before_recording_it_still_finishes_its_release() {
    let (_dir, embedded, release) = queued_release().await;
    let entered = Arc::new(tokio::sync::Notify::new());
    let adapters = embedded.adapters();
    let mut dying = runway_worker::State::new(&adapters).unwrap();
    dying.builder = Arc::new(DiesAfterStarting(
        adapters.builder.clone().unwrap(),
        entered.clone(),
    ));
    let token = embedded.push_token.token().to_owned();
    let request = DeployRequest {
        release_id: release.id.clone(),
        app: release.app.to_string(),
    };
    let body = envelope(&serde_json::to_vec(&request).unwrap());
    tokio::select! {
        response = runway_worker::router(dying).oneshot(push_request(&body, &token)) => {
            panic!("the worker did not die: {response:?}")
        }
        () = entered.notified() => {}
    }
    let stored = || async { embedded.store.release(&release.id).await.unwrap().unwrap() };
    assert_eq!(stored().await.build_id, None);

    // The build goes on without the worker, and announces its end.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let ended = loop {
        let ended = embedded
            .queue
            .pending()
            .await
            .unwrap()
            .into_iter()
            .filter(|(topic, _)| topic == Topic::BuildEvents.name())
            .find_map(|(_, data)| {
                serde_json::from_slice::<BuildNotification>(&data)
                    .ok()
                    .filter(BuildNotification::is_finished)
            });
        if let Some(ended) = ended {
            break ended;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the build never ended"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // A new worker instance takes it.
    let worker = runway_worker::router(runway_worker::State::new(&adapters).unwrap());
    let mut request = push_request(&envelope(&serde_json::to_vec(&ended).unwrap()), &token);
    *request.uri_mut() = "/pubsub/build-events".parse().unwrap();
    let response = worker.oneshot(request).await.unwrap();
    let status = response.status();
    let text = String::from_utf8_lossy(
        &axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap(),
    )
    .into_owned();
    assert_eq!(status, 200, "{text}");
    let finished = stored().await;
    assert_ne!(finished.state, ReleaseState::Building, "{text}");
    if finished.state != ReleaseState::Failed {
        assert_eq!(
            finished.build_id.as_ref().map(BuildId::as_str),
            Some(ended.id.as_str())
        );
    }
}

/// A release that finds its app's repository gone fails saying why, and flags the app at once
/// (its page says so before cleanup's next sweep).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_whose_repository_is_gone_fails_and_flags_the_app() {
    let (dir, embedded, queued) = queued_release().await;
    // A push release builds the branch's head, which the worker asks the repository for.
    let release = embedded
        .store
        .queue_release(NewRelease {
            app: queued.app.clone(),
            trigger: Trigger::Push,
            actor: "t@t".into(),
            commit: None,
            rollback_of: None,
            clear_cache: false,
        })
        .await
        .unwrap();
    std::fs::rename(dir.path().join("app.git"), dir.path().join("deleted.git")).unwrap();
    let router = runway_worker::router(runway_worker::State::new(&embedded.adapters()).unwrap());
    let request = DeployRequest {
        release_id: release.id.clone(),
        app: release.app.to_string(),
    };
    let body = envelope(&serde_json::to_vec(&request).unwrap());
    let response =
        tower::ServiceExt::oneshot(router, push_request(&body, embedded.push_token.token()))
            .await
            .unwrap();
    assert_eq!(response.status(), 200);
    let stored = embedded.store.release(&release.id).await.unwrap().unwrap();
    assert_eq!(stored.state, ReleaseState::Failed, "{stored:?}");
    let health = embedded
        .store
        .hook_health(&release.app)
        .await
        .unwrap()
        .expect("flagged");
    assert!(health.repo_gone_since.is_some(), "{health:?}");
    assert!(
        health
            .problem
            .as_deref()
            .unwrap_or_default()
            .contains("cannot be read"),
        "{health:?}"
    );
}
