//! `cleanup`: what Cloud Scheduler (or `runway`'s timer) calls so nothing is lost or left behind.
//!
//! - Releases queued for too long are published again (the outbox sweep: a failed publish
//!   cannot strand a release).
//! - Builds whose end was never announced are asked for their status (the poll fallback for
//!   lost notifications); a build the builder no longer knows (`runway` was killed under it)
//!   is queued again, and the worker fails it after `Release::MAX_BUILD_ATTEMPTS` claims.
//! - Releases stuck deploying (the worker died mid-way) fail with a reason.
//! - Webhooks whose removal failed when their app was deleted are removed, and so are Runway's
//!   hooks no app stands behind. Each app's own hook is checked: made again when deleted, set
//!   back when edited, given its secret again when Runway refuses its signature; its failed
//!   deliveries, as GitHub logged them, are kept for the app's page.
//! - What is past keeping goes (`State::retention`): old deliveries, each app's finished
//!   releases beyond its newest ones, dead letters, and the builds no release needs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use runway_core::adapters::{Adapters, HookSweep, Keeping, Need, Unwired};
use runway_core::clock::Clock;
use runway_core::feedback::Feedback;
use runway_core::notify::EventKind;
use std::time::Duration;

use axum::extract::State as Shared;
use axum::routing::post;
use http::StatusCode;
use runway_core::domain::{
    AppName, AuditAction, BuildId, Deployment, HookHealth, HookId, Release, ReleaseState,
    ReleaseUpdate, RepoUrl,
};
use runway_core::messages::{
    BuildNotification, BuildResults, BuiltImage, CloudBuildStatus, FailureInfo,
};
use runway_core::ports::{
    BuildStatus, Forge, ForgeError, Identity, ImageBuilder, Platform, Progress, Queue, SecretStore,
    Store, StoreError, Topic, Webhook,
};
use runway_core::releases::{audit, flag_repo_gone, publish};
use runway_core::removal::Remover;
use runway_http::webhook;
use runway_http::{ApiResult, Authenticated, Authenticates, Limits, Router, json, limits};
use secrecy::SecretString;
use serde::Serialize;

#[derive(Clone)]
pub struct State {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    pub builder: Arc<dyn ImageBuilder>,
    pub forge: Arc<dyn Forge>,
    /// Where an app whose repository is gone is stopped, and its secrets removed.
    pub platform: Arc<dyn Platform>,
    pub secrets: Arc<dyn SecretStore>,
    /// Who may call: Cloud Scheduler's OIDC identity, or `runway`'s timer.
    pub caller: Arc<dyn Identity>,
    /// How long a release may sit queued or building before cleanup acts on it (publishes it
    /// again, or polls its build).
    pub stale_after: Duration,
    /// How long a deploy may run before cleanup calls it interrupted: longer than the
    /// platform's own wait for a new revision.
    pub deploy_timeout: Duration,
    /// Where Runway's hooks deliver (`…/github/webhook`): a hook to `{webhook_url}/{app}` whose
    /// app no longer deploys that repository is stale.
    pub webhook_url: String,
    /// The key each app's hook secret is derived from: a hook set right gets its secret again.
    pub webhook_secret: SecretString,
    /// Which repositories' hooks a run lists.
    pub hook_sweep: HookSweep,
    /// What is kept, and for how long; the rest each run prunes.
    pub retention: Keeping,
    pub clock: Arc<dyn Clock>,
    /// A release cleanup fails is shown failed on its commit too.
    pub feedback: Feedback,
}

/// Firestore, Pub/Sub, Cloud Build (polled) and GitHub on Google Cloud; the caller is Cloud
/// Scheduler with the invoker service account's OIDC token.
pub const NEEDS: &[Need] = &[
    Need::Store,
    Need::Queue,
    Need::Forge,
    Need::Builder,
    Need::Pushers,
    Need::Timeouts,
    Need::WebhookUrl,
    Need::WebhookSecret,
    Need::Platform,
    Need::Secrets,
];

impl State {
    pub fn new(adapters: &Adapters) -> Result<Self, Unwired> {
        let timeouts = adapters.timeouts()?;
        let (store, forge) = (adapters.store()?, adapters.forge()?);
        Ok(Self {
            clock: adapters.clock.clone(),
            feedback: Feedback {
                forge: forge.clone(),
                store: store.clone(),
                console: adapters.console_url.clone(),
                queue: adapters.queue()?,
                clock: adapters.clock.clone(),
            },
            store,
            queue: adapters.queue()?,
            builder: adapters.builder()?,
            forge,
            platform: adapters.platform()?,
            secrets: adapters.secrets()?,
            caller: adapters.pushers()?,
            stale_after: timeouts.stale_after,
            deploy_timeout: timeouts.deploy,
            webhook_url: adapters.webhook_url()?,
            webhook_secret: adapters.webhook_secret()?,
            hook_sweep: timeouts.hook_sweep,
            retention: timeouts.keep,
        })
    }
}

/// A sweep lists every app's releases and hooks; Cloud Scheduler waits up to 10 minutes.
const LIMITS: Limits = Limits {
    body: 64 * 1024,
    timeout: Duration::from_secs(600),
};

pub fn router(state: State) -> Router {
    let routes = axum::Router::new()
        .route("/cleanup/run", post(run_handler))
        .with_state(state);
    limits(routes, LIMITS)
}

impl Authenticates for State {
    fn identity(&self) -> &dyn Identity {
        self.caller.as_ref()
    }
}

/// What one run did.
#[derive(Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub republished: usize,
    pub builds_polled: usize,
    pub interrupted: usize,
    pub hooks_removed: usize,
    pub hooks_repaired: usize,
    /// Apps whose repository was gone past the grace period, removed.
    pub apps_removed: usize,
    /// Live apps the platform found unhealthy and restarted since the last look, announced.
    pub apps_unhealthy: usize,
    pub deliveries_pruned: usize,
    pub releases_pruned: usize,
    pub builds_freed: usize,
    pub dead_letters_pruned: usize,
    pub errors: Vec<String>,
}

async fn run_handler(Shared(state): Shared<State>, _: Authenticated) -> ApiResult {
    let report = run(&state).await;
    let status = if report.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    Ok(json(status, &report))
}

/// One sweep; each part goes on even if another fails, and the report says what failed.
pub async fn run(state: &State) -> Report {
    let mut report = Report::default();
    let ago = |duration: Duration| {
        state.clock.now()
            - chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::minutes(2))
    };
    let before = ago(state.stale_after);
    if let Err(error) = republish_queued(state, before, &mut report).await {
        report.errors.push(format!("queued releases: {error}"));
    }
    if let Err(error) = poll_builds(state, before, &mut report).await {
        report.errors.push(format!("building releases: {error}"));
    }
    if let Err(error) = fail_stuck_deploys(state, ago(state.deploy_timeout), &mut report).await {
        report.errors.push(format!("deploying releases: {error}"));
    }
    if let Err(error) = remove_orphan_hooks(state, before, &mut report).await {
        report.errors.push(format!("webhooks: {error}"));
    }
    if let Err(error) = sweep_hooks(state, before, &mut report).await {
        report
            .errors
            .push(format!("webhooks of the repositories: {error}"));
    }
    if let Err(error) = watch_live_apps(state, &mut report).await {
        report.errors.push(format!("live apps: {error}"));
    }
    // At most `Pruned::AT_MOST` of each a run: a backlog goes over the next runs.
    match state
        .store
        .prune(&state.retention.store, state.clock.now())
        .await
    {
        Ok(pruned) => {
            report.deliveries_pruned += pruned.deliveries;
            report.releases_pruned += pruned.releases;
        }
        Err(error) => report.errors.push(format!("pruning the store: {error}")),
    }
    if let Err(error) = free_builds(state, &mut report).await {
        report.errors.push(format!("idle builds: {error}"));
    }
    let dead_before = ago(state.retention.dead_letters_for);
    match state.queue.prune_dead_letters(dead_before).await {
        Ok(pruned) => report.dead_letters_pruned += pruned,
        Err(error) => report.errors.push(format!("dead letters: {error}")),
    }
    if report != Report::default() {
        tracing::info!(?report, "cleanup acted");
    }
    report
}

/// What `runway` does as it starts, before it takes work: no build of its own runs yet, so
/// every release left building by the process before it is settled now, not once it is stale.
/// A build that finished is deployed; one that was killed with that process is built again.
pub async fn resume_builds(state: &State) -> Report {
    let mut report = Report::default();
    // Every one, however recent: a bound a day ahead also covers a clock that stepped back.
    let all = state.clock.now() + chrono::Duration::days(1);
    if let Err(error) = poll_builds(state, all, &mut report).await {
        report.errors.push(format!("building releases: {error}"));
    }
    if report != Report::default() {
        tracing::info!(?report, "resumed what the last run left building");
    }
    report
}

async fn republish_queued(
    state: &State,
    before: chrono::DateTime<chrono::Utc>,
    report: &mut Report,
) -> Result<(), StoreError> {
    for release in state
        .store
        .releases_in_state(ReleaseState::Queued, before)
        .await?
    {
        match publish(state.queue.as_ref(), &release).await {
            Ok(_) => report.republished += 1,
            Err(error) => report
                .errors
                .push(format!("publishing {}: {error}", release.id)),
        }
    }
    Ok(())
}

async fn poll_builds(
    state: &State,
    before: chrono::DateTime<chrono::Utc>,
    report: &mut Report,
) -> Result<(), StoreError> {
    for release in state
        .store
        .releases_in_state(ReleaseState::Building, before)
        .await?
    {
        let Some(build_id) = release.build_id.clone() else {
            // The worker died between claiming it and starting the build.
            build_again(state, &release, None, report).await?;
            continue;
        };
        let notification = match state.builder.status(&build_id).await {
            Ok(BuildStatus::Running) => continue,
            Ok(BuildStatus::Succeeded { image }) => BuildNotification {
                status: CloudBuildStatus::Success,
                results: Some(BuildResults {
                    images: vec![BuiltImage {
                        name: image,
                        digest: String::new(),
                    }],
                }),
                ..notification_for(&release, &build_id)
            },
            Ok(BuildStatus::Failed { status, detail }) => BuildNotification {
                status: CloudBuildStatus::parse(&status),
                failure_info: Some(FailureInfo {
                    kind: String::new(),
                    detail,
                }),
                ..notification_for(&release, &build_id)
            },
            Ok(BuildStatus::Lost) => {
                let why = "its build was interrupted (Runway stopped while it ran), so it was \
                           queued to build again";
                build_again(state, &release, Some(why), report).await?;
                continue;
            }
            Err(error) => {
                report.errors.push(format!("build {build_id}: {error}"));
                continue;
            }
        };
        // The worker finishes it, exactly as if the notification had arrived.
        match state
            .queue
            .publish(
                Topic::BuildEvents,
                notification.to_message(release.app.as_str()),
            )
            .await
        {
            Ok(_) => report.builds_polled += 1,
            Err(error) => report.errors.push(format!("build {build_id}: {error}")),
        }
    }
    Ok(())
}

/// Building → queued, and published again: the worker claims it as if for the first time.
async fn build_again(
    state: &State,
    release: &Release,
    why: Option<&str>,
    report: &mut Report,
) -> Result<(), StoreError> {
    let update = ReleaseUpdate {
        message: why.map(str::to_owned),
        ..Default::default()
    };
    match state
        .store
        .transition(
            &release.id,
            ReleaseState::Building,
            ReleaseState::Queued,
            update,
        )
        .await
    {
        Ok(_) => {}
        Err(StoreError::Conflict(_)) => return Ok(()), // It moved on by itself meanwhile.
        Err(error) => return Err(error),
    }
    match publish(state.queue.as_ref(), release).await {
        Ok(_) => report.republished += 1,
        // Still queued: the outbox sweep publishes it later.
        Err(error) => report
            .errors
            .push(format!("publishing {}: {error}", release.id)),
    }
    Ok(())
}

fn notification_for(release: &Release, build_id: &BuildId) -> BuildNotification {
    BuildNotification {
        id: build_id.to_string(),
        log_url: release.log_url.clone(),
        tags: vec![BuildNotification::release_tag(&release.id)],
        ..Default::default()
    }
}

async fn fail_stuck_deploys(
    state: &State,
    before: chrono::DateTime<chrono::Utc>,
    report: &mut Report,
) -> Result<(), StoreError> {
    for release in state
        .store
        .releases_in_state(ReleaseState::Deploying, before)
        .await?
    {
        interrupt(state, &release, ReleaseState::Deploying, "the deploy was interrupted and did not finish; the previous version keeps serving. Redeploy to try again", report).await?;
    }
    Ok(())
}

async fn interrupt(
    state: &State,
    release: &Release,
    from: ReleaseState,
    message: &str,
    report: &mut Report,
) -> Result<(), StoreError> {
    let update = ReleaseUpdate {
        message: Some(message.to_owned()),
        ..Default::default()
    };
    match state
        .store
        .transition(&release.id, from, ReleaseState::Failed, update)
        .await
    {
        Ok(_) => {
            report.interrupted += 1;
            runway_http::metrics::metrics().release(ReleaseState::Failed.as_str());
            let reason = message.lines().next().unwrap_or_default();
            state
                .feedback
                .report(release, Progress::Failure, reason, None)
                .await;
            state
                .feedback
                .announce(release, EventKind::Failed, Some(reason))
                .await;
        }
        Err(StoreError::Conflict(_)) => {} // It moved on by itself meanwhile.
        Err(error) => return Err(error),
    }
    Ok(())
}

/// Goes over the hooks of the deployed repositories this run includes. Runway's hooks that no
/// app stands behind are removed (a submit that died between making the hook and recording the
/// app), and each app's own hook is checked (`check_hook`).
async fn sweep_hooks(
    state: &State,
    before: chrono::DateTime<chrono::Utc>,
    report: &mut Report,
) -> Result<(), StoreError> {
    let deployments = state.store.deployments().await?;
    let mut repos: Vec<&RepoUrl> = deployments.iter().map(|d| &d.repo).collect();
    repos.sort_by_key(|repo| repo.to_string());
    repos.dedup();
    let ours = format!("{}/", state.webhook_url.trim_end_matches('/'));
    let now = state.clock.now();
    for repo in repos
        .into_iter()
        .filter(|repo| state.hook_sweep.includes(&repo.to_string(), now))
    {
        // An app made moments ago may not have its hook yet. A preview has none: it is its
        // app's, and goes with it.
        let apps = deployments
            .iter()
            .filter(|d| &d.repo == repo && d.created_at < before && d.pull.is_none());
        let hooks = match state.forge.webhooks(repo).await {
            Ok(hooks) => hooks,
            Err(ForgeError::NotFound(why)) => {
                for deployment in apps {
                    repo_gone(state, deployment, &why, report).await;
                }
                continue;
            }
            Err(error) => {
                let problem = format!("could not list the hooks of {repo}: {error}");
                for deployment in apps {
                    note_problem(state, &deployment.app, &problem).await;
                }
                report.errors.push(problem);
                continue;
            }
        };
        // A hook made moments ago may belong to an app whose record submit is still writing.
        for hook in hooks
            .iter()
            .filter(|h| h.created_at.is_none_or(|at| at < before))
        {
            let stale = hook.url.strip_prefix(&ours).is_some_and(|app| {
                !deployments
                    .iter()
                    .any(|d| d.app.as_str() == app && &d.repo == repo)
            });
            if !stale {
                continue;
            }
            match state.forge.delete_webhook(repo, &hook.id).await {
                Ok(()) | Err(ForgeError::NotFound(_)) => report.hooks_removed += 1,
                Err(error) => report
                    .errors
                    .push(format!("stale hook {} on {repo}: {error}", hook.id)),
            }
        }
        for deployment in apps {
            check_hook(state, deployment, &hooks, report).await;
        }
    }
    Ok(())
}

/// Checks an app's own hook and records what it found for the app's page. A hook someone
/// deleted is made again; one someone edited (switched off, other events, another content
/// type) is set back; one whose newest delivery Runway's ingress refused for its signature
/// (401: someone changed the secret) gets its secret again. The hook's recent failed
/// deliveries, as GitHub logged them, are kept.
async fn check_hook(
    state: &State,
    deployment: &Deployment,
    hooks: &[Webhook],
    report: &mut Report,
) {
    let (app, repo) = (&deployment.app, &deployment.repo);
    let url = webhook::app_hook_url(&state.webhook_url, app);
    let now = state.clock.now();
    let previous = state.store.hook_health(app).await.ok().flatten();
    // Its hooks could be listed: the repository is there (again).
    let mut health = HookHealth {
        failed: Vec::new(),
        repo_gone_since: None,
        ..HookHealth::after(previous.clone(), now)
    };
    // The refused delivery a new secret answers, once it is set.
    let mut reset_for = None;
    let wrong = match hooks.iter().find(|hook| hook.url == url) {
        None => Some("the hook was gone from the repository; made again".to_owned()),
        Some(hook) => match hook.drift() {
            Some(drift) => Some(format!("{drift}; set back to push events, json, active")),
            None => match state.forge.hook_deliveries(repo, &hook.id).await {
                Ok(deliveries) => {
                    health.failed = deliveries
                        .iter()
                        .filter(|delivery| !delivery.succeeded())
                        .take(HookHealth::FAILED_KEPT)
                        .cloned()
                        .collect();
                    let refused = deliveries
                        .first()
                        .filter(|newest| newest.status_code == Some(401))
                        .filter(|newest| {
                            health.secret_reset_for.as_deref() != Some(newest.guid.as_str())
                        });
                    refused.map(|newest| {
                        reset_for = Some(newest.guid.clone());
                        "Runway refused the hook's newest delivery for its signature (401): \
                         its secret was changed; set again"
                            .to_owned()
                    })
                }
                Err(error) => {
                    health.problem = Some(format!("could not read the hook's deliveries: {error}"));
                    health.failed = previous.map(|p| p.failed).unwrap_or_default();
                    None
                }
            },
        },
    };
    if let Some(wrong) = wrong {
        let secret = webhook::app_secret(&state.webhook_secret, app);
        match state.forge.ensure_webhook(repo, &url, &secret).await {
            Ok(id) => {
                report.hooks_repaired += 1;
                health.repaired = Some((now, wrong.clone()));
                if reset_for.is_some() {
                    health.secret_reset_for = reset_for;
                }
                audit(
                    state.store.as_ref(),
                    state.clock.as_ref(),
                    "runway",
                    AuditAction::HookRepaired,
                    Some(app.as_str()),
                    format!("hook {id} on {repo}: {wrong}"),
                )
                .await;
                if deployment.webhook_id.as_ref() != Some(&id) {
                    record_hook_id(state, app, id).await;
                }
            }
            Err(error) => {
                let problem = format!("could not set the hook right ({wrong}): {error}");
                report.errors.push(format!("{app}: {problem}"));
                health.problem = Some(problem);
            }
        }
    }
    if let Err(error) = state.store.put_hook_health(app, &health).await {
        report
            .errors
            .push(format!("recording the hook of {app}: {error}"));
    }
}

/// Asks the platform what happened to each live app since it last looked: an app whose
/// process stopped, or stopped answering its health check, and was restarted is shown so on
/// its page and announced to its notification targets, once per new restart.
async fn watch_live_apps(state: &State, report: &mut Report) -> Result<(), StoreError> {
    for deployment in state.store.deployments().await? {
        let Some(live) = &deployment.live_release else {
            continue;
        };
        let app = &deployment.app;
        let incidents = match state.platform.incidents(app, deployment.updated_at).await {
            Ok(incidents) if incidents.is_empty() => continue,
            Ok(incidents) => incidents,
            Err(error) => {
                report
                    .errors
                    .push(format!("asking how {app} runs: {error}"));
                continue;
            }
        };
        let mut health = state
            .store
            .hook_health(app)
            .await?
            .unwrap_or_else(|| HookHealth::empty(state.clock.now()));
        let seen = health.incident.as_ref().map(|(at, _)| *at);
        let new: Vec<_> = incidents
            .iter()
            .filter(|incident| seen.is_none_or(|seen| incident.at > seen))
            .collect();
        let Some(newest) = new.last() else {
            continue;
        };
        let what = if new.len() == 1 {
            newest.what.clone()
        } else {
            format!(
                "{} ({} restarts since the last look)",
                newest.what,
                new.len()
            )
        };
        health.incident = Some((newest.at, what.clone()));
        state.store.put_hook_health(app, &health).await?;
        report.apps_unhealthy += 1;
        if let Some(release) = state.store.release(live).await? {
            state
                .feedback
                .announce(&release, EventKind::Unhealthy, Some(&what))
                .await;
        }
    }
    Ok(())
}

/// Points the app's record at the hook made again, so deleting the app removes that one.
async fn record_hook_id(state: &State, app: &AppName, id: HookId) {
    match state.store.deployment(app).await {
        Ok(Some(mut current)) => {
            current.webhook_id = Some(id);
            if let Err(error) = state.store.put_deployment(&current).await {
                tracing::warn!(%app, %error, "could not record the hook made again");
            }
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(%app, %error, "could not record the hook made again"),
    }
}

/// Records that the app's hook could not be checked, keeping what the last check found.
async fn note_problem(state: &State, app: &AppName, problem: &str) {
    let previous = state.store.hook_health(app).await.ok().flatten();
    let health = HookHealth {
        problem: Some(problem.to_owned()),
        ..HookHealth::after(previous, state.clock.now())
    };
    if let Err(error) = state.store.put_hook_health(app, &health).await {
        tracing::warn!(%app, %error, "could not record the hook's problem");
    }
}

/// The app's repository answers not found: gone, or no longer readable by Runway. Flagged the
/// first time (the console shows it at once), and once it has been so for the grace period
/// (`Keeping::gone_repos`), the app is removed with its service, hook, secrets and records.
async fn repo_gone(state: &State, deployment: &Deployment, why: &str, report: &mut Report) {
    let app = &deployment.app;
    let now = state.clock.now();
    let since = flag_repo_gone(state.store.as_ref(), app, why, now).await;
    let grace =
        chrono::Duration::from_std(state.retention.gone_repos).unwrap_or(chrono::Duration::MAX);
    if since.is_none_or(|since| now - since < grace) {
        return;
    }
    let removed = Remover {
        store: state.store.as_ref(),
        platform: state.platform.as_ref(),
        builder: state.builder.as_ref(),
        secrets: state.secrets.as_ref(),
        forge: state.forge.as_ref(),
    }
    .remove(deployment)
    .await;
    match removed {
        Ok(()) => {
            report.apps_removed += 1;
            let since = since.map(|at| at.to_rfc3339()).unwrap_or_default();
            audit(
                state.store.as_ref(),
                state.clock.as_ref(),
                "runway",
                AuditAction::AppRemoved,
                Some(app.as_str()),
                format!(
                    "its repository {} has been gone or unreadable since {since}: service, \
                     images, secrets, hook and records removed",
                    deployment.repo
                ),
            )
            .await;
        }
        Err(error) => report
            .errors
            .push(format!("removing {app}, whose repository is gone: {error}")),
    }
}

/// Frees the builds no release needs. The builder offers those idle for an hour (none on Cloud
/// Build, whose bucket and registry prune themselves); only their apps' releases are read.
async fn free_builds(state: &State, report: &mut Report) -> Result<(), StoreError> {
    let idle = match state.builder.idle_builds().await {
        Ok(idle) => idle,
        Err(error) => {
            report.errors.push(format!("listing idle builds: {error}"));
            return Ok(());
        }
    };
    let mut by_app: HashMap<AppName, Vec<BuildId>> = HashMap::new();
    for build in idle {
        by_app.entry(build.app).or_default().push(build.id);
    }
    for (app, builds) in by_app {
        let needed = match state.store.deployment(&app).await? {
            // Deleted: deleting it removed its builds; one it left behind is nobody's.
            None => HashSet::new(),
            Some(deployment) => {
                let releases = state.store.releases(&app, RELEASES_READ).await?;
                let live = match &deployment.live_release {
                    Some(id) => state.store.release(id).await?,
                    None => None,
                };
                needed_builds(live.as_ref(), &releases, state.retention.images)
            }
        };
        for build in builds.iter().filter(|build| !needed.contains(build)) {
            match state.builder.free(build).await {
                Ok(freed) => report.builds_freed += usize::from(freed),
                Err(error) => report
                    .errors
                    .push(format!("freeing build {build}: {error}")),
            }
        }
    }
    Ok(())
}

/// How many of an app's newest releases are read to learn which builds it needs.
const RELEASES_READ: usize = 200;

/// The builds an app still needs, from its newest releases (newest first): those of releases in
/// flight, the one serving (`live`, read apart: it may be older than every release read), and
/// those of its newest `images_kept` releases that went live, which a rollback may bring back
/// (as Artifact Registry keeps `app_image_keep_count` images on Google Cloud).
pub fn needed_builds(
    live: Option<&Release>,
    releases: &[Release],
    images_kept: usize,
) -> HashSet<BuildId> {
    let went_live = releases
        .iter()
        .filter(|release| release.state == ReleaseState::Live)
        .take(images_kept);
    let in_flight = releases
        .iter()
        .filter(|release| !release.state.is_terminal());
    live.into_iter()
        .chain(went_live)
        .chain(in_flight)
        .filter_map(|release| release.build_id.clone())
        .collect()
}

async fn remove_orphan_hooks(
    state: &State,
    before: chrono::DateTime<chrono::Utc>,
    report: &mut Report,
) -> Result<(), StoreError> {
    let orphans = state.store.orphan_hooks().await?;
    if orphans.is_empty() {
        return Ok(());
    }
    let deployments = state.store.deployments().await?;
    for (repo, hook_id) in orphans {
        let Ok(repo_url) = RepoUrl::parse(&repo, true) else {
            state.store.remove_orphan_hook(&repo, &hook_id).await?;
            continue;
        };
        // An app created again under the deleted one's name reuses its hook (same URL): that
        // hook is live again, not an orphan. One being created on the repository right now
        // may be about to take it up: wait for the next run.
        let of_repo = || deployments.iter().filter(|d| d.repo == repo_url);
        if of_repo().any(|d| d.webhook_id.as_ref() == Some(&hook_id)) {
            state.store.remove_orphan_hook(&repo, &hook_id).await?;
            continue;
        }
        if of_repo().any(|d| d.webhook_id.is_none() && d.created_at >= before) {
            continue;
        }
        match state.forge.delete_webhook(&repo_url, &hook_id).await {
            Ok(()) | Err(ForgeError::NotFound(_)) => {
                state.store.remove_orphan_hook(&repo, &hook_id).await?;
                report.hooks_removed += 1;
            }
            Err(error) => report
                .errors
                .push(format!("hook {hook_id} on {repo}: {error}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use runway_core::testing::release;

    fn built(id: &str, seq: u64, state: ReleaseState) -> Release {
        let mut release = release(id, seq, state, chrono::Utc::now());
        release.build_id = Some(BuildId::new(format!("build-{id}")));
        release
    }

    fn ids(needed: &HashSet<BuildId>) -> Vec<String> {
        let mut ids: Vec<String> = needed.iter().map(ToString::to_string).collect();
        ids.sort();
        ids
    }

    #[test]
    fn an_app_needs_its_builds_in_flight_serving_and_newest_live() {
        use ReleaseState::*;
        // Newest first, as the store lists them.
        let releases = [
            built("r9", 9, Building),
            built("r8", 8, Failed),
            built("r7", 7, Live),
            built("r6", 6, Superseded),
            built("r5", 5, Live),
            built("r4", 4, Live),
            built("r3", 3, Deploying),
        ];
        let serving = built("r1", 1, Live);
        let needed = needed_builds(Some(&serving), &releases, 2);
        assert_eq!(
            ids(&needed),
            ["build-r1", "build-r3", "build-r5", "build-r7", "build-r9"]
        );
        assert_eq!(
            ids(&needed_builds(None, &releases, 0)),
            ["build-r3", "build-r9"],
            "with nothing kept for rollbacks, only what is in flight"
        );
    }
}
