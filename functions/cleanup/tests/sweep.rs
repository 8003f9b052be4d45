//! Cleanup against the real embedded adapters (SQLite store and queue, a real git repository).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;
use std::sync::Mutex;

use runway_cleanup::{State, run};
use runway_core::clock::{Clock, ManualClock};
use runway_core::domain::CommitSha;
use runway_core::domain::{
    AppName, Deployment, HookId, NewRelease, Release, ReleaseState, ReleaseUpdate, RepoUrl, Trigger,
};
use runway_core::messages::DeployRequest;
use runway_core::ports::{Forge, ForgeError, Repository, SourceArchive, Store, Webhook};
use runway_core::{HookSweep, Keeping};
use runway_embedded::{GitForge, PushToken, SqliteQueue, SqliteStore, UvBuilder, UvBuilderConfig};

const INGRESS: &str = "http://127.0.0.1:1/github/webhook";

/// How long a release may sit before cleanup acts on it, in these tests.
const STALE: Duration = Duration::from_secs(120);

struct Fixture {
    _dir: tempfile::TempDir,
    clock: ManualClock,
    store: Arc<SqliteStore>,
    queue: SqliteQueue,
    forge: Arc<GitForge>,
    state: State,
    repo: RepoUrl,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runway.db");
    let clock = ManualClock::starting_now();
    let store = Arc::new(
        SqliteStore::open(&db)
            .unwrap()
            .with_clock(Arc::new(clock.clone())),
    );
    let queue = SqliteQueue::open(&db).unwrap();
    let forge = Arc::new(GitForge::new("/usr/bin/true".into()));
    let builder = Arc::new(UvBuilder::new(
        UvBuilderConfig {
            dir: dir.path().join("builds"),
            uv: "uv".into(),
            python: "python3".into(),
            uv_cache_dir: dir.path().join("cache"),
            public_url: "http://127.0.0.1:1".into(),
            timeout: Duration::from_secs(60),
            keep_logs: Duration::from_secs(90 * 86_400),
            install_packages: false,
            python_downloads: false,
        },
        forge.clone(),
        Arc::new(queue.clone()),
    ));
    let bare = dir.path().join("repo.git");
    let status = Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(&bare)
        .status()
        .unwrap();
    assert!(status.success());
    let platform = runway_embedded::ProcessPlatform::new(
        runway_embedded::process_platform::ProcessPlatformConfig {
            dir: dir.path().join("apps"),
            public_port: 1,
            health_timeout: Duration::from_secs(10),
            health_check_every: Duration::from_secs(60),
            drain: Duration::from_secs(1),
        },
        runway_embedded::proxy::Routes::default(),
    )
    .unwrap();
    let secrets = runway_embedded::FileSecretStore::new(dir.path().join("secrets")).unwrap();
    let state = State {
        store: store.clone(),
        queue: Arc::new(queue.clone()),
        builder,
        forge: forge.clone(),
        platform: Arc::new(platform),
        secrets: Arc::new(secrets),
        caller: Arc::new(PushToken::random("test")),
        stale_after: STALE,
        deploy_timeout: STALE,
        webhook_url: INGRESS.into(),
        webhook_secret: secrecy::SecretString::from("sweep-test-key"),
        hook_sweep: HookSweep::every_run(STALE),
        retention: Keeping::default(),
        clock: Arc::new(clock.clone()),
        feedback: runway_core::feedback::Feedback {
            forge: forge.clone(),
            store: store.clone(),
            console: None,
            queue: Arc::new(queue.clone()),
            clock: Arc::new(clock.clone()),
        },
    };
    Fixture {
        repo: RepoUrl::parse(bare.to_str().unwrap(), true).unwrap(),
        _dir: dir,
        clock,
        store,
        queue,
        forge,
        state,
    }
}

fn release() -> NewRelease {
    NewRelease {
        app: AppName::parse("demo").unwrap(),
        trigger: Trigger::Manual,
        actor: "ada".into(),
        commit: None,
        rollback_of: None,
        clear_cache: false,
    }
}

#[tokio::test]
async fn a_release_whose_publish_was_lost_is_published_again() {
    let f = fixture();
    // Recorded but never published, as when the queue was down at submit time.
    let queued = f.store.queue_release(release()).await.unwrap();

    // A release queued moments ago may still be on its way to the worker.
    assert_eq!(run(&f.state).await.republished, 0);
    f.clock.advance(STALE + Duration::from_secs(1));
    let report = run(&f.state).await;

    assert_eq!(report.republished, 1, "{report:?}");
    let pending = f.queue.pending().await.unwrap();
    assert_eq!(pending.len(), 1);
    let request: DeployRequest = serde_json::from_slice(&pending[0].1).unwrap();
    assert_eq!(request.release_id, queued.id);
}

/// A release building under a build id its builder never heard of: what the process that ran
/// the build left behind when it was killed.
async fn building_a_lost_build(f: &Fixture) -> Release {
    let queued = f.store.queue_release(release()).await.unwrap();
    let update = ReleaseUpdate {
        build_id: Some("demo-gone".into()),
        ..Default::default()
    };
    f.store
        .transition(
            &queued.id,
            ReleaseState::Queued,
            ReleaseState::Building,
            update,
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn a_build_the_builder_lost_is_queued_to_build_again() {
    let f = fixture();
    let building = building_a_lost_build(&f).await;

    f.clock.advance(STALE + Duration::from_secs(1));
    let report = run(&f.state).await;

    assert_eq!(report.republished, 1, "{report:?}");
    let release = f.store.release(&building.id).await.unwrap().unwrap();
    assert_eq!(release.state, ReleaseState::Queued);
    assert!(release.message.unwrap().contains("interrupted"));
    let pending = f.queue.pending().await.unwrap();
    let request: DeployRequest = serde_json::from_slice(&pending[0].1).unwrap();
    assert_eq!(request.release_id, building.id);
}

/// `runway` starting again does not wait for the release to look stale: nothing of its own
/// builds yet, so whatever the builder does not know was lost with the last run.
#[tokio::test]
async fn resuming_builds_again_at_once_what_the_last_run_left_building() {
    let f = fixture();
    let building = building_a_lost_build(&f).await;

    assert_eq!(run(&f.state).await.republished, 0, "not stale yet");
    let report = runway_cleanup::resume_builds(&f.state).await;

    assert_eq!(report.republished, 1, "{report:?}");
    let release = f.store.release(&building.id).await.unwrap().unwrap();
    assert_eq!(release.state, ReleaseState::Queued);
}

#[tokio::test]
async fn a_hook_left_by_a_deleted_app_is_removed() {
    let f = fixture();
    let secret = secrecy::SecretString::from("s".to_owned());
    let hook = f
        .forge
        .ensure_webhook(&f.repo, "http://127.0.0.1:1/github/webhook/gone", &secret)
        .await
        .unwrap();
    f.store
        .add_orphan_hook(&f.repo.to_string(), &hook)
        .await
        .unwrap();

    let report = run(&f.state).await;

    assert_eq!(report.hooks_removed, 1, "{report:?}");
    assert!(f.forge.webhooks(&f.repo).await.unwrap().is_empty());
    assert!(f.store.orphan_hooks().await.unwrap().is_empty());
    let RepoUrl::Local { path } = &f.repo else {
        unreachable!()
    };
    assert!(!Path::new(path).join("hooks/post-receive").exists());
}

/// An app of `name` on the fixture's repository, with `webhook_id` as its hook.
fn deployment(f: &Fixture, name: &str, webhook_id: Option<HookId>) -> Deployment {
    deployment_on(&f.repo, name, webhook_id)
}

fn deployment_on(repo: &RepoUrl, name: &str, webhook_id: Option<HookId>) -> Deployment {
    let now = chrono::Utc::now();
    Deployment {
        app: AppName::parse(name).unwrap(),
        repo: repo.clone(),
        repo_id: 1,
        branch: runway_core::domain::Branch::parse("main").unwrap(),
        main_file: runway_core::domain::MainFile::parse("app.py").unwrap(),
        region: runway_core::domain::Region::try_from("local".to_owned()).unwrap(),
        resources: Default::default(),
        runtime: Default::default(),
        access: Default::default(),
        owner: "ada".into(),
        notify: Vec::new(),
        previews: Default::default(),
        pull: None,
        secret_keys: None,
        webhook_id,
        live_release: None,
        url: None,
        created_at: now,
        updated_at: now,
    }
}

#[tokio::test]
async fn a_hook_orphaned_by_a_delete_and_taken_up_by_the_re_created_app_is_kept() {
    let f = fixture();
    let secret = secrecy::SecretString::from("s".to_owned());
    // The app was deleted but its hook could not be (GitHub was down): recorded as an orphan.
    let url = format!("{INGRESS}/demo");
    let hook = f
        .forge
        .ensure_webhook(&f.repo, &url, &secret)
        .await
        .unwrap();
    f.store
        .add_orphan_hook(&f.repo.to_string(), &hook)
        .await
        .unwrap();
    // Created again under the same name before cleanup ran: the same URL, so the same hook.
    let again = f
        .forge
        .ensure_webhook(&f.repo, &url, &secret)
        .await
        .unwrap();
    assert_eq!(again, hook);
    f.store
        .put_deployment(&deployment(&f, "demo", Some(again)))
        .await
        .unwrap();

    let report = run(&f.state).await;

    assert_eq!(report.hooks_removed, 0, "{report:?}");
    let hooks = f.forge.webhooks(&f.repo).await.unwrap();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].id, hook);
    // The orphan record is settled: an app stands behind the hook now.
    assert!(f.store.orphan_hooks().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_orphan_hook_waits_while_an_app_is_being_created_on_its_repository() {
    let f = fixture();
    let secret = secrecy::SecretString::from("s".to_owned());
    let url = format!("{INGRESS}/demo");
    let hook = f
        .forge
        .ensure_webhook(&f.repo, &url, &secret)
        .await
        .unwrap();
    f.store
        .add_orphan_hook(&f.repo.to_string(), &hook)
        .await
        .unwrap();
    // Its name claimed, its hook not yet made: submit is between the two.
    f.store
        .insert_deployment(&deployment(&f, "demo", None))
        .await
        .unwrap();

    let report = run(&f.state).await;

    assert_eq!(report.hooks_removed, 0, "{report:?}");
    assert_eq!(f.forge.webhooks(&f.repo).await.unwrap().len(), 1);
    assert_eq!(f.store.orphan_hooks().await.unwrap().len(), 1);
    // A claim that never got its hook (the submit died) holds nothing up for long.
    f.clock.advance(STALE + Duration::from_secs(30));
    let report = run(&f.state).await;
    assert_eq!(report.hooks_removed, 1, "{report:?}");
    assert!(f.store.orphan_hooks().await.unwrap().is_empty());
}

#[tokio::test]
async fn hooks_no_app_stands_behind_are_removed_and_the_rest_kept() {
    let f = fixture();
    let secret = secrecy::SecretString::from("s".to_owned());
    let kept = deployment(&f, "kept", None);
    f.store.put_deployment(&kept).await.unwrap();
    let hook = |url: String| {
        let (forge, repo, secret) = (f.forge.clone(), f.repo.clone(), secret.clone());
        async move { forge.ensure_webhook(&repo, &url, &secret).await.unwrap() }
    };
    let kept_hook = hook(format!("{INGRESS}/kept")).await;
    hook(format!("{INGRESS}/ghost")).await;
    let foreign = hook("https://ci.example.com/hook".to_owned()).await;

    // Hooks made moments ago may belong to an app whose record submit is still writing.
    let patient = State {
        stale_after: Duration::from_secs(3600),
        ..f.state.clone()
    };
    // The forge dates hooks by the machine's clock, which runs on while the test does: move
    // well past the stale window.
    f.clock.advance(STALE + Duration::from_secs(30));
    assert_eq!(run(&patient).await.hooks_removed, 0);
    assert_eq!(f.forge.webhooks(&f.repo).await.unwrap().len(), 3);

    let report = run(&f.state).await;

    assert_eq!(report.hooks_removed, 1, "{report:?}");
    let mut left: Vec<HookId> = f
        .forge
        .webhooks(&f.repo)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.id)
        .collect();
    left.sort();
    let mut expected = vec![kept_hook, foreign];
    expected.sort();
    assert_eq!(left, expected);
}

/// The local forge, counting how often each repository's hooks are listed (GitHub requests).
struct CountingForge {
    inner: Arc<GitForge>,
    lists: Mutex<HashMap<String, usize>>,
}

#[async_trait::async_trait]
impl Forge for CountingForge {
    async fn repository(&self, repo: &RepoUrl) -> Result<Repository, ForgeError> {
        self.inner.repository(repo).await
    }
    async fn resolve_commit(
        &self,
        repo: &RepoUrl,
        branch: &runway_core::domain::Branch,
    ) -> Result<CommitSha, ForgeError> {
        self.inner.resolve_commit(repo, branch).await
    }
    async fn checkout(
        &self,
        repo: &RepoUrl,
        commit: &CommitSha,
        dest: &Path,
    ) -> Result<(), ForgeError> {
        self.inner.checkout(repo, commit, dest).await
    }
    async fn archive(
        &self,
        repo: &RepoUrl,
        commit: &CommitSha,
    ) -> Result<SourceArchive, ForgeError> {
        self.inner.archive(repo, commit).await
    }
    async fn ensure_webhook(
        &self,
        repo: &RepoUrl,
        url: &str,
        secret: &secrecy::SecretString,
    ) -> Result<HookId, ForgeError> {
        self.inner.ensure_webhook(repo, url, secret).await
    }
    async fn delete_webhook(&self, repo: &RepoUrl, hook_id: &HookId) -> Result<(), ForgeError> {
        self.inner.delete_webhook(repo, hook_id).await
    }
    async fn webhooks(&self, repo: &RepoUrl) -> Result<Vec<Webhook>, ForgeError> {
        *self
            .lists
            .lock()
            .unwrap()
            .entry(repo.to_string())
            .or_default() += 1;
        self.inner.webhooks(repo).await
    }
    async fn hook_deliveries(
        &self,
        repo: &RepoUrl,
        hook_id: &HookId,
    ) -> Result<Vec<runway_core::ports::HookDelivery>, ForgeError> {
        self.inner.hook_deliveries(repo, hook_id).await
    }
    async fn branches(
        &self,
        repo: &RepoUrl,
    ) -> Result<Vec<runway_core::domain::Branch>, ForgeError> {
        self.inner.branches(repo).await
    }
    async fn has_file(
        &self,
        repo: &RepoUrl,
        branch: &runway_core::domain::Branch,
        path: &str,
    ) -> Result<bool, ForgeError> {
        self.inner.has_file(repo, branch, path).await
    }
    async fn report(
        &self,
        repo: &RepoUrl,
        report: &runway_core::ports::ReleaseReport,
    ) -> Result<(), ForgeError> {
        self.inner.report(repo, report).await
    }
    async fn pull_request(
        &self,
        repo: &RepoUrl,
        number: u64,
    ) -> Result<runway_core::ports::PullState, ForgeError> {
        self.inner.pull_request(repo, number).await
    }
    async fn comment_on_pull(
        &self,
        repo: &RepoUrl,
        number: u64,
        preview: &runway_core::domain::AppName,
        body: &str,
    ) -> Result<(), ForgeError> {
        self.inner
            .comment_on_pull(repo, number, preview, body)
            .await
    }
}

#[tokio::test]
async fn each_repository_s_hooks_are_listed_once_per_period_spread_over_the_runs() {
    let f = fixture();
    let secret = secrecy::SecretString::from("s".to_owned());
    let mut repos = Vec::new();
    for i in 0..12 {
        let bare = f._dir.path().join(format!("repo-{i}.git"));
        let status = Command::new("git")
            .args(["init", "-q", "--bare", "-b", "main"])
            .arg(&bare)
            .status()
            .unwrap();
        assert!(status.success());
        let repo = RepoUrl::parse(bare.to_str().unwrap(), true).unwrap();
        f.store
            .put_deployment(&deployment_on(&repo, &format!("app-{i}"), None))
            .await
            .unwrap();
        // A hook no app stands behind (a submit that died after making it).
        f.forge
            .ensure_webhook(&repo, &format!("{INGRESS}/ghost-{i}"), &secret)
            .await
            .unwrap();
        repos.push(repo);
    }
    let forge = Arc::new(CountingForge {
        inner: f.forge.clone(),
        lists: Mutex::default(),
    });
    let every = Duration::from_secs(600);
    let state = State {
        forge: forge.clone(),
        hook_sweep: HookSweep {
            run_every: every,
            repo_every: 6 * every,
        },
        ..f.state.clone()
    };
    f.clock.advance(STALE + Duration::from_secs(30));

    let mut removed = 0;
    for _ in 0..6 {
        removed += run(&state).await.hooks_removed;
        f.clock.advance(every);
    }

    let lists = forge.lists.lock().unwrap().clone();
    for repo in &repos {
        assert_eq!(lists.get(&repo.to_string()), Some(&1), "{repo}: {lists:?}");
    }
    assert_eq!(removed, 12);
    // What is left on each is its app's own hook, which the app lacked and was given.
    for (i, repo) in repos.iter().enumerate() {
        let urls: Vec<String> = f
            .forge
            .webhooks(repo)
            .await
            .unwrap()
            .into_iter()
            .map(|hook| hook.url)
            .collect();
        assert_eq!(urls, [format!("{INGRESS}/app-{i}")]);
    }
}

/// A run prunes what is past keeping: a month-old delivery goes, a recent one stays.
#[tokio::test]
async fn deliveries_past_keeping_are_pruned_on_the_runs() {
    use runway_core::domain::{Delivery, DeliveryId};
    let f = fixture();
    let delivery = |id: &str| Delivery {
        id: DeliveryId::new(id.to_owned()),
        app: Some(AppName::parse("demo").unwrap()),
        event: "push".into(),
        repo_id: Some(1),
        git_ref: Some("refs/heads/main".into()),
        commit: None,
        received_at: f.clock.now(),
        outcome: "ignored: a test".into(),
    };
    assert!(f.store.record_delivery(&delivery("old")).await.unwrap());
    f.clock.advance(Duration::from_secs(31 * 86_400));
    assert!(f.store.record_delivery(&delivery("new")).await.unwrap());

    let report = run(&f.state).await;

    assert_eq!(report.deliveries_pruned, 1, "{report:?}");
    let kept = f
        .store
        .deliveries_of_app(&AppName::parse("demo").unwrap(), 10)
        .await
        .unwrap();
    let kept: Vec<&str> = kept.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(kept, ["new"]);
    assert_eq!(run(&f.state).await.deliveries_pruned, 0);
}

/// A build folder as the embedded builder leaves one: its records, log, checkout and
/// environment, ended `ago`.
fn build_folder(f: &Fixture, id: &str, release: &Release, ago: Duration) -> std::path::PathBuf {
    let dir = f._dir.path().join("builds").join(id);
    for part in ["src", "venv/bin"] {
        std::fs::create_dir_all(dir.join(part)).unwrap();
    }
    let meta = serde_json::json!({
        "app": release.app.as_str(), "release_id": release.id.as_str(), "commit": "0".repeat(40),
    });
    std::fs::write(dir.join("meta.json"), meta.to_string()).unwrap();
    std::fs::write(dir.join("log.txt"), "==> build finished\n").unwrap();
    let result = dir.join("result.json");
    std::fs::write(&result, r#"{"status":"SUCCESS","detail":""}"#).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&result)
        .and_then(|file| file.set_modified(std::time::SystemTime::now() - ago))
        .unwrap();
    dir
}

/// A run frees the builds no release needs (the failed release's) and keeps the one serving,
/// whose folder a restart of `runway` runs the app from.
#[tokio::test]
async fn builds_no_release_needs_are_freed_and_the_serving_one_kept() {
    let f = fixture();
    f.store
        .put_deployment(&deployment(&f, "demo", None))
        .await
        .unwrap();
    let to = |id: &str, image: Option<&str>| ReleaseUpdate {
        build_id: Some(id.into()),
        image: image.map(str::to_owned),
        ..Default::default()
    };
    let live = f.store.queue_release(release()).await.unwrap();
    for (from, next) in [
        (ReleaseState::Queued, ReleaseState::Building),
        (ReleaseState::Building, ReleaseState::Deploying),
        (ReleaseState::Deploying, ReleaseState::Live),
    ] {
        f.store
            .transition(&live.id, from, next, to("demo-live", Some("img")))
            .await
            .unwrap();
    }
    let failed = f.store.queue_release(release()).await.unwrap();
    for (from, next) in [
        (ReleaseState::Queued, ReleaseState::Building),
        (ReleaseState::Building, ReleaseState::Failed),
    ] {
        f.store
            .transition(&failed.id, from, next, to("demo-failed", None))
            .await
            .unwrap();
    }
    let hours = Duration::from_secs(7200);
    let serving = build_folder(&f, "demo-live", &live, hours);
    let unneeded = build_folder(&f, "demo-failed", &failed, hours);

    let report = run(&f.state).await;

    assert_eq!(report.builds_freed, 1, "{report:?}");
    assert!(report.errors.is_empty(), "{report:?}");
    assert!(serving.join("venv/bin").exists() && serving.join("src").exists());
    assert!(!unneeded.join("venv").exists() && !unneeded.join("src").exists());
    assert!(
        unneeded.join("log.txt").exists(),
        "the failed build's log went"
    );
    assert_eq!(run(&f.state).await.builds_freed, 0);
}

/// An app's hook that someone deleted from the repository is made again, with the app's own
/// secret, once the app is past its grace period; its record points at the new hook, the
/// repair is recorded for its page and in the audit trail, and a sound hook is left alone.
#[tokio::test]
async fn an_apps_deleted_hook_is_made_again_with_its_secret() {
    let f = fixture();
    let app = AppName::parse("demo").unwrap();
    let url = runway_http::webhook::app_hook_url(INGRESS, &app);
    let secret = runway_http::webhook::app_secret(&f.state.webhook_secret, &app);
    let first = f
        .forge
        .ensure_webhook(&f.repo, &url, &secret)
        .await
        .unwrap();
    f.store
        .put_deployment(&deployment(&f, "demo", Some(first.clone())))
        .await
        .unwrap();
    f.clock.advance(STALE + Duration::from_secs(30));

    let report = run(&f.state).await;
    assert_eq!(report.hooks_repaired, 0, "{report:?}");
    let health = f.store.hook_health(&app).await.unwrap().expect("checked");
    assert_eq!((health.problem, health.repaired), (None, None));

    f.forge.delete_webhook(&f.repo, &first).await.unwrap();
    let report = run(&f.state).await;
    assert_eq!(report.hooks_repaired, 1, "{report:?}");
    assert!(report.errors.is_empty(), "{report:?}");
    let hooks = f.forge.webhooks(&f.repo).await.unwrap();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0].url, url);
    let record = f.store.deployment(&app).await.unwrap().unwrap();
    assert_eq!(record.webhook_id.as_ref(), Some(&hooks[0].id));
    let health = f.store.hook_health(&app).await.unwrap().expect("checked");
    let (_, what) = health.repaired.expect("repaired");
    assert!(what.contains("gone"), "{what}");
    let audit = f.store.audit(Some(&app), 0, 10).await.unwrap();
    assert!(
        audit.iter().any(
            |entry| entry.action == runway_core::domain::AuditAction::HookRepaired
                && entry.detail.contains("made again")
        ),
        "{audit:?}"
    );

    let report = run(&f.state).await;
    assert_eq!(report.hooks_repaired, 0, "{report:?}");
}

/// An app whose repository is gone is flagged at once and removed, with its secrets and
/// records, once the grace period has passed; one whose repository comes back in time is kept
/// and its flag cleared.
#[tokio::test]
async fn an_app_whose_repository_is_gone_is_flagged_then_removed_after_the_grace_period() {
    let f = fixture();
    let grace = Duration::from_secs(3 * 86_400);
    let state = State {
        retention: Keeping {
            gone_repos: grace,
            ..Keeping::default()
        },
        ..f.state.clone()
    };
    let secret = secrecy::SecretString::from("s".to_owned());
    let mut apps = Vec::new();
    for name in ["gone", "back"] {
        let bare = f._dir.path().join(format!("{name}.git"));
        let status = Command::new("git")
            .args(["init", "-q", "--bare", "-b", "main"])
            .arg(&bare)
            .status()
            .unwrap();
        assert!(status.success());
        let repo = RepoUrl::parse(bare.to_str().unwrap(), true).unwrap();
        let app = AppName::parse(name).unwrap();
        let url = runway_http::webhook::app_hook_url(INGRESS, &app);
        let hook = f.forge.ensure_webhook(&repo, &url, &secret).await.unwrap();
        f.store
            .put_deployment(&deployment_on(&repo, name, Some(hook)))
            .await
            .unwrap();
        f.state
            .secrets
            .put(
                &app,
                &runway_core::domain::SecretsToml::parse("k = 1".into()).unwrap(),
            )
            .await
            .unwrap();
        apps.push((app, bare));
    }
    f.clock.advance(STALE + Duration::from_secs(30));
    let report = run(&state).await;
    assert_eq!(report.apps_removed, 0, "{report:?}");

    // Both repositories disappear (deleted, or made unreadable to Runway).
    let hidden: Vec<_> = apps
        .iter()
        .map(|(_, bare)| {
            let away = bare.with_extension("away");
            std::fs::rename(bare, &away).unwrap();
            away
        })
        .collect();
    let flagged_at = f.clock.now();
    let report = run(&state).await;
    assert_eq!(report.apps_removed, 0, "{report:?}");
    for (app, _) in &apps {
        let health = f.store.hook_health(app).await.unwrap().expect("checked");
        assert_eq!(health.repo_gone_since, Some(flagged_at), "{health:?}");
    }

    // One comes back within the grace period: its flag goes.
    std::fs::rename(&hidden[1], &apps[1].1).unwrap();
    f.clock.advance(grace - Duration::from_secs(60));
    let report = run(&state).await;
    assert_eq!(report.apps_removed, 0, "{report:?}");
    let back = f
        .store
        .hook_health(&apps[1].0)
        .await
        .unwrap()
        .expect("checked");
    assert_eq!(back.repo_gone_since, None, "{back:?}");
    let gone = f
        .store
        .hook_health(&apps[0].0)
        .await
        .unwrap()
        .expect("checked");
    assert_eq!(
        gone.repo_gone_since,
        Some(flagged_at),
        "the flag keeps its first day"
    );

    // Past the grace period the other is removed: records, secrets, audit entry.
    f.clock.advance(Duration::from_secs(120));
    let report = run(&state).await;
    assert_eq!(report.apps_removed, 1, "{report:?}");
    assert_eq!(f.store.deployment(&apps[0].0).await.unwrap(), None);
    assert_eq!(f.state.secrets.reference(&apps[0].0).await.unwrap(), None);
    assert!(f.store.deployment(&apps[1].0).await.unwrap().is_some());
    assert!(
        f.state
            .secrets
            .reference(&apps[1].0)
            .await
            .unwrap()
            .is_some()
    );
    let audit = f.store.audit(Some(&apps[0].0), 0, 10).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|entry| entry.action == runway_core::domain::AuditAction::AppRemoved),
        "{audit:?}"
    );
}
