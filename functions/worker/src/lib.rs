//! `worker`: Pub/Sub push endpoints that move releases along.
//!
//! - `/pubsub/deploy-requests`: claims a queued release and hands its build to the builder, then
//!   answers at once (Pub/Sub must not wait for a build).
//! - `/pubsub/build-events`: Cloud Build's notifications; a finished build's image goes to the
//!   platform, and the release goes live or fails with a reason.
//!
//! - `/pubsub/notifications`: release announcements, each posted to its one target (`notify`).
//!
//! Every step is a compare-and-set on the release's state, so a redelivered or duplicated
//! message never builds or deploys twice. Permanent failures are acknowledged (2xx) and recorded
//! on the release; transient ones answer 503 so Pub/Sub redelivers.

mod notify;

use std::sync::Arc;
use std::time::Duration;

pub use notify::{Notifier, SendError};

use runway_core::adapters::{Adapters, Need, Unwired};
use runway_core::clock::Clock;
use runway_core::feedback::Feedback;

use axum::extract::State as Shared;
use axum::routing::post;
use http::StatusCode;
use runway_core::domain::{
    AppName, AuditAction, BuildId, CommitSha, Deployment, Release, ReleaseId, ReleaseState,
    ReleaseUpdate, Timestamp, Trigger,
};
use runway_core::messages::{BuildEnded, BuildNotification, CloudBuildStatus, DeployRequest};
use runway_core::notify::{EventKind, NotifyMessage};
use runway_core::ports::{
    BuildError, BuildRequest, BuildStatus, DeploySpec, Forge, ForgeError, Identity, ImageBuilder,
    Platform, PlatformError, Progress, Queue, SecretRef, SecretStore, Store, StoreError,
};
use runway_core::releases::{audit, flag_repo_gone, publish};
use runway_core::removal::Remover;
use runway_http::metrics::{Ended, metrics};
use runway_http::push::PushEnvelope;
use runway_http::{
    ApiError, ApiResult, Authenticated, Authenticates, Body, Limits, Response, Router, json,
    limits, parse_json,
};
use serde_json::json;

/// Pub/Sub messages are at most 10 MB; a push must be answered within the subscription's ack
/// deadline (at most 600 s), or Pub/Sub redelivers it anyway.
const LIMITS: Limits = Limits {
    body: 10 * 1024 * 1024,
    timeout: std::time::Duration::from_secs(600),
};
/// How much of a failed build's log a release's message carries.
const LOG_EXCERPT_LINES: usize = 20;

#[derive(Clone)]
pub struct State {
    pub store: Arc<dyn Store>,
    /// Where the release queued behind an app's build is published once that build ends.
    pub queue: Arc<dyn Queue>,
    pub forge: Arc<dyn Forge>,
    pub builder: Arc<dyn ImageBuilder>,
    pub platform: Arc<dyn Platform>,
    pub secrets: Arc<dyn SecretStore>,
    /// Who may push to us: Pub/Sub's OIDC identity, or the local queue's token.
    pub pusher: Arc<dyn Identity>,
    pub clock: Arc<dyn Clock>,
    /// Each release's steps, shown on its commit (a GitHub deployment and commit status), and
    /// its outcome announced to the app's notification targets.
    pub feedback: Feedback,
    /// Posts the announcements.
    pub notifier: Notifier,
}

/// Firestore, GitHub, Cloud Build, Cloud Run and Secret Manager on Google Cloud; callers are
/// Pub/Sub push subscriptions with the invoker service account's OIDC token.
pub const NEEDS: &[Need] = &[
    Need::Store,
    Need::Queue,
    Need::Secrets,
    Need::Forge,
    Need::Builder,
    Need::Platform,
    Need::Pushers,
];

impl State {
    pub fn new(adapters: &Adapters) -> Result<Self, Unwired> {
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
            forge,
            builder: adapters.builder()?,
            platform: adapters.platform()?,
            secrets: adapters.secrets()?,
            pusher: adapters.pushers()?,
            notifier: Notifier::new(adapters.private_targets),
        })
    }
}

pub fn router(state: State) -> Router {
    let routes = axum::Router::new()
        .route("/pubsub/deploy-requests", post(deploy_request))
        .route("/pubsub/build-events", post(build_event))
        .route("/pubsub/notifications", post(notification))
        .with_state(state);
    limits(routes, LIMITS)
}

impl Authenticates for State {
    fn identity(&self) -> &dyn Identity {
        self.pusher.as_ref()
    }
}

/// What became of a message, and so what Pub/Sub hears.
#[derive(Debug)]
enum Outcome {
    /// Done, or nothing to do (a duplicate): acknowledge.
    Done(String),
    /// Can never succeed; recorded on the release where there is one. Acknowledge.
    Permanent(String),
    /// Try again later: 503 makes Pub/Sub redeliver with backoff.
    Retry(String),
}

impl Outcome {
    fn into_response(self) -> Response {
        match self {
            Outcome::Done(message) => {
                tracing::info!(%message, "message handled");
                json(
                    StatusCode::OK,
                    &json!({ "status": "done", "message": message }),
                )
            }
            Outcome::Permanent(message) => {
                tracing::error!(%message, "message failed for good");
                json(
                    StatusCode::OK,
                    &json!({ "status": "failed", "message": message }),
                )
            }
            Outcome::Retry(message) => {
                tracing::warn!(%message, "message will be retried");
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({ "status": "retry", "message": message }),
                )
            }
        }
    }
}

impl From<StoreError> for Outcome {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(message) => Outcome::Retry(message),
            other => Outcome::Retry(format!("{other:#}")),
        }
    }
}

/// The push envelope (a body that is not one is the sender's mistake: 400), and the message's
/// payload (one that is not base64 will never decode: acknowledged, not retried).
fn read_envelope(body: &[u8]) -> Result<(PushEnvelope, Result<Vec<u8>, Outcome>), ApiError> {
    let envelope: PushEnvelope = parse_json(body)?;
    let payload = envelope.message.payload().map_err(|error| {
        Outcome::Permanent(format!(
            "message {} is not base64: {error}",
            envelope.message.message_id
        ))
    });
    Ok((envelope, payload))
}

#[tracing::instrument(skip_all, fields(release))]
async fn deploy_request(
    Shared(state): Shared<State>,
    _: Authenticated,
    Body(body): Body,
) -> ApiResult {
    let (envelope, payload) = match read_envelope(&body)? {
        (envelope, Ok(payload)) => (envelope, payload),
        (_, Err(outcome)) => return Ok(outcome.into_response()),
    };
    let outcome = match serde_json::from_slice::<DeployRequest>(&payload) {
        Ok(deploy) => {
            tracing::Span::current().record("release", deploy.release_id.as_str());
            start_release(&state, &deploy.release_id)
                .await
                .unwrap_or_else(|o| o)
        }
        Err(error) => Outcome::Permanent(format!(
            "message {} is not a deploy request: {error}",
            envelope.message.message_id
        )),
    };
    Ok(outcome.into_response())
}

/// Queued → building (or, for a rollback, straight to deploying).
async fn start_release(state: &State, release_id: &ReleaseId) -> Result<Outcome, Outcome> {
    let Some(release) = state.store.release(release_id).await? else {
        return Ok(Outcome::Done(format!(
            "release {release_id} no longer exists"
        )));
    };
    if release.state != ReleaseState::Queued {
        return Ok(Outcome::Done(format!(
            "release {release_id} is already {}",
            release.state
        )));
    }
    let Some(deployment) = state.store.deployment(&release.app).await? else {
        return Ok(Outcome::Done(format!(
            "the app {} was deleted",
            release.app
        )));
    };
    if release.trigger == Trigger::Close {
        return Ok(remove_preview(state, &deployment).await);
    }
    if release.attempts >= Release::MAX_BUILD_ATTEMPTS {
        let message = format!(
            "Runway tried {} times to start this release's build, and each attempt ended before \
             the build began (a worker that runs out of memory or time on a very large \
             repository stops like this); it is not tried again. Redeploy once the cause is fixed",
            release.attempts
        );
        return Ok(fail(state, &release, ReleaseState::Queued, message).await);
    }
    if release.rollback_of.is_some() {
        let release = claim(
            state,
            &release,
            ReleaseState::Deploying,
            ReleaseUpdate::default(),
        )
        .await?;
        let rolling_back = "Rolling back: deploying an earlier release's build";
        report(state, &release, Progress::InProgress, rolling_back).await;
        return Ok(go_live(state, release).await);
    }
    // A push builds what its branch points at now, not the commit it named: a replayed or late
    // delivery then cannot bring back older code (its signature covers only the body). A
    // preview likewise builds its pull request's head now, and a pull request closed meanwhile
    // (its `closed` may have come before a late `synchronize`) has its preview removed.
    let pushed = release
        .commit
        .clone()
        .filter(|_| matches!(release.trigger, Trigger::Push | Trigger::Preview));
    let commit = match release.commit.clone().filter(|_| pushed.is_none()) {
        Some(commit) => commit,
        None if release.trigger == Trigger::Preview => match pull_head(state, &deployment).await? {
            PullHead::Open(head) => head,
            PullHead::Closed => return Ok(remove_preview(state, &deployment).await),
            PullHead::Refused(message) => {
                return Ok(fail(state, &release, ReleaseState::Queued, message).await);
            }
        },
        None => match state
            .forge
            .resolve_commit(&deployment.repo, &deployment.branch)
            .await
        {
            Ok(commit) => commit,
            Err(ForgeError::NotFound(message) | ForgeError::Rejected(message)) => {
                // The repository itself may be gone, or no longer readable: the app's page
                // says so at once, and cleanup removes the app after the grace period.
                if let Err(ForgeError::NotFound(why)) =
                    state.forge.repository(&deployment.repo).await
                {
                    flag_repo_gone(state.store.as_ref(), &release.app, &why, state.clock.now())
                        .await;
                }
                return Ok(fail(state, &release, ReleaseState::Queued, message).await);
            }
            Err(error) => return Err(Outcome::Retry(format!("resolving the commit: {error:#}"))),
        },
    };
    let moved_on = pushed.filter(|pushed| *pushed != commit);
    let message = moved_on.as_ref().map(|pushed| {
        format!(
            "the push named {}, but {} had moved on: built its head {}",
            pushed.short(),
            deployment.branch,
            commit.short()
        )
    });
    // One build per app at a time. Pushes in quick succession queue behind the build that
    // runs, where each newer one supersedes the older (`Store::queue_release`); when it ends,
    // the newest is started (`start_next`). So a burst builds twice, not once per push.
    if let Some(building) = state
        .store
        .releases(&release.app, SLOT_LOOKBACK)
        .await?
        .into_iter()
        .find(|other| other.id != release.id && other.state == ReleaseState::Building)
        && still_building(state, &building).await
    {
        return Ok(Outcome::Done(format!(
            "release {} waits for #{} to finish building; it starts then",
            release.id, building.seq
        )));
    }
    // The live image seeds the layer cache: by digest, as its own build reported it; unless
    // the release was asked to build with no cache.
    let cache_from = match &deployment.live_release {
        Some(live) if !release.clear_cache => {
            state.store.release(live).await?.and_then(|live| live.image)
        }
        _ => None,
    };
    // Claim it first, so a duplicate message finds it building and stops.
    let release = claim(
        state,
        &release,
        ReleaseState::Building,
        ReleaseUpdate {
            commit: Some(commit.clone()),
            pushed: moved_on,
            message,
            ..Default::default()
        },
    )
    .await?;
    let short = commit.short().to_owned();
    let fetching = format!("Fetching the source of {short}");
    report(state, &release, Progress::Queued, &fetching).await;
    let started = state
        .builder
        .start(BuildRequest {
            app: release.app.clone(),
            release_id: release.id.clone(),
            repo: deployment.repo.clone(),
            commit,
            main_file: deployment.main_file.clone(),
            cache_from,
            clear_cache: release.clear_cache,
        })
        .await;
    match started {
        Ok(build) => {
            let recorded = state
                .store
                .transition(
                    &release.id,
                    ReleaseState::Building,
                    ReleaseState::Building,
                    ReleaseUpdate {
                        build_id: Some(build.build_id.clone()),
                        log_url: Some(build.log_url),
                        ..Default::default()
                    },
                )
                .await;
            match recorded {
                Ok(_) => {}
                // The app was deleted while its build started: the build goes with it.
                Err(error @ (StoreError::NotFound(_) | StoreError::Conflict(_))) => {
                    if let Ok(None) = state.store.deployment(&release.app).await {
                        if let Err(error) = state.builder.delete_app(&release.app).await {
                            tracing::warn!(app = %release.app, %error, "could not remove the build of a deleted app");
                        }
                        return Ok(Outcome::Done(format!(
                            "the app {} was deleted as its build started; the build was stopped",
                            release.app
                        )));
                    }
                    return Err(error.into());
                }
                Err(error) => return Err(error.into()),
            }
            let building = format!("Building {short}");
            report(state, &release, Progress::InProgress, &building).await;
            Ok(Outcome::Done(format!("build {} started", build.build_id)))
        }
        Err(BuildError::Unavailable(message)) => {
            // Hand it back to the queue so the redelivery can claim it again.
            state
                .store
                .transition(
                    &release.id,
                    ReleaseState::Building,
                    ReleaseState::Queued,
                    ReleaseUpdate::default(),
                )
                .await?;
            Err(Outcome::Retry(message))
        }
        Err(error) => Ok(fail(
            state,
            &release,
            ReleaseState::Building,
            format!("the build could not start: {error}"),
        )
        .await),
    }
}

/// A preview's pull request as the forge has it when its build is about to start.
enum PullHead {
    /// Open, with this head: what the preview builds.
    Open(CommitSha),
    /// Closed, or gone: the preview goes.
    Closed,
    /// The forge will not say (Runway may not read pull requests): the release fails, saying
    /// what to grant.
    Refused(String),
}

async fn pull_head(state: &State, preview: &Deployment) -> Result<PullHead, Outcome> {
    let Some(pull) = &preview.pull else {
        return Err(Outcome::Permanent(format!(
            "{} is not a preview",
            preview.app
        )));
    };
    match state.forge.pull_request(&preview.repo, pull.number).await {
        Ok(now) if now.open => Ok(PullHead::Open(now.head)),
        Ok(_) | Err(ForgeError::NotFound(_)) => Ok(PullHead::Closed),
        Err(ForgeError::Rejected(message)) => Ok(PullHead::Refused(format!(
            "could not read pull request #{} to build its head: {message}",
            pull.number
        ))),
        Err(error) => Err(Outcome::Retry(format!(
            "reading pull request #{}: {error:#}",
            pull.number
        ))),
    }
}

/// A preview whose pull request was closed goes: its deployment on GitHub is marked inactive
/// and its comment says so, then it is removed as an app is (the closing release goes with its
/// records). A step that fails is tried again when the message comes back.
async fn remove_preview(state: &State, preview: &Deployment) -> Outcome {
    let Some(pull) = &preview.pull else {
        return Outcome::Permanent(format!("{} is not a preview: not removed", preview.app));
    };
    let live = match &preview.live_release {
        Some(live) => match state.store.release(live).await {
            Ok(live) => live,
            Err(error) => return error.into(),
        },
        None => None,
    };
    if let Some(live) = &live {
        let closed = format!(
            "Pull request #{} was closed; its preview is removed",
            pull.number
        );
        report(state, live, Progress::Inactive, &closed).await;
    }
    state.feedback.preview_removed(preview).await;
    let remover = Remover {
        store: state.store.as_ref(),
        platform: state.platform.as_ref(),
        builder: state.builder.as_ref(),
        secrets: state.secrets.as_ref(),
        forge: state.forge.as_ref(),
    };
    match remover.remove(preview).await {
        Ok(()) => Outcome::Done(format!("the preview {} was removed", preview.app)),
        Err(error) => Outcome::Retry(format!("removing the preview {}: {error}", preview.app)),
    }
}

async fn claim(
    state: &State,
    release: &Release,
    to: ReleaseState,
    update: ReleaseUpdate,
) -> Result<Release, Outcome> {
    match state
        .store
        .transition(&release.id, release.state, to, update)
        .await
    {
        Ok(claimed) => {
            if to != release.state {
                metrics().release(to.as_str());
            }
            Ok(claimed)
        }
        Err(StoreError::Conflict(message)) => {
            Err(Outcome::Done(format!("already handled: {message}")))
        }
        Err(error) => Err(error.into()),
    }
}

/// Deploying → superseded: a newer release serves, or will.
async fn supersede(state: &State, release: &Release, message: String) -> Outcome {
    let update = ReleaseUpdate {
        message: Some(message.clone()),
        ..Default::default()
    };
    match state
        .store
        .transition(
            &release.id,
            ReleaseState::Deploying,
            ReleaseState::Superseded,
            update,
        )
        .await
    {
        Ok(_) => {
            metrics().release(ReleaseState::Superseded.as_str());
            let description = format!("Not deployed: {message}");
            report(state, release, Progress::Inactive, &description).await;
            Outcome::Done(message)
        }
        Err(StoreError::Conflict(_)) => Outcome::Done(message),
        Err(error) => error.into(),
    }
}

async fn fail(state: &State, release: &Release, from: ReleaseState, message: String) -> Outcome {
    let update = ReleaseUpdate {
        message: Some(message.clone()),
        ..Default::default()
    };
    match state
        .store
        .transition(&release.id, from, ReleaseState::Failed, update)
        .await
    {
        Ok(_) => {
            metrics().release(ReleaseState::Failed.as_str());
            if from == ReleaseState::Deploying {
                metrics().deploy(Ended::Failed, since(state, release.updated_at));
            }
            audit(
                state.store.as_ref(),
                state.clock.as_ref(),
                "runway",
                AuditAction::ReleaseFailed,
                Some(release.app.as_str()),
                format!("release {}: {}", release.id, first_line(&message)),
            )
            .await;
            report(state, release, Progress::Failure, first_line(&message)).await;
            state
                .feedback
                .announce(release, EventKind::Failed, Some(first_line(&message)))
                .await;
            Outcome::Permanent(format!(
                "release {} failed: {}",
                release.id,
                first_line(&message)
            ))
        }
        Err(StoreError::Conflict(why)) => Outcome::Done(format!("already handled: {why}")),
        Err(error) => error.into(),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// Shows the release's step on its commit; never fails the step (see `Feedback`).
async fn report(state: &State, release: &Release, progress: Progress, description: &str) {
    state
        .feedback
        .report(release, progress, description, None)
        .await;
}

#[tracing::instrument(skip_all, fields(build))]
async fn build_event(
    Shared(state): Shared<State>,
    _: Authenticated,
    Body(body): Body,
) -> ApiResult {
    let (envelope, payload) = match read_envelope(&body)? {
        (envelope, Ok(payload)) => (envelope, payload),
        (_, Err(outcome)) => return Ok(outcome.into_response()),
    };
    let outcome = match serde_json::from_slice::<BuildNotification>(&payload) {
        Ok(build) => {
            tracing::Span::current().record("build", build.id.as_str());
            finish_build(&state, build).await.unwrap_or_else(|o| o)
        }
        Err(error) => Outcome::Permanent(format!(
            "message {} is not a build notification: {error}",
            envelope.message.message_id
        )),
    };
    Ok(outcome.into_response())
}

#[tracing::instrument(skip_all, fields(release, target))]
async fn notification(
    Shared(state): Shared<State>,
    _: Authenticated,
    Body(body): Body,
) -> ApiResult {
    let (envelope, payload) = match read_envelope(&body)? {
        (envelope, Ok(payload)) => (envelope, payload),
        (_, Err(outcome)) => return Ok(outcome.into_response()),
    };
    let outcome = match serde_json::from_slice::<NotifyMessage>(&payload) {
        Ok(message) => {
            let span = tracing::Span::current();
            span.record("release", message.event.release.as_str());
            span.record("target", message.target.as_str());
            announce(&state, &message, &envelope.message.message_id).await
        }
        Err(error) => Outcome::Permanent(format!(
            "message {} is not a notification: {error}",
            envelope.message.message_id
        )),
    };
    Ok(outcome.into_response())
}

/// Posts one announcement. A target removed since it was queued is skipped; one that refuses
/// for good is recorded in the audit trail; one that is down is tried again (503).
async fn announce(state: &State, message: &NotifyMessage, delivery: &str) -> Outcome {
    let event = &message.event;
    let Ok(app) = AppName::parse(&event.app) else {
        return Outcome::Permanent(format!("{:?} is not an app name", event.app));
    };
    let targets = match state.secrets.notifications(&app).await {
        Ok(targets) => targets,
        Err(error) => return Outcome::Retry(format!("reading the targets of {app}: {error}")),
    };
    let Some(target) = targets.get(&message.target) else {
        return Outcome::Done(format!(
            "{app} no longer has target {}; not announced",
            message.target
        ));
    };
    let what = format!(
        "{} of {app} release #{} to {} target on {}",
        event.event.as_str(),
        event.seq,
        target.kind.label(),
        target.host()
    );
    match state.notifier.send(target, delivery, event).await {
        Ok(()) => Outcome::Done(format!("announced {what}")),
        Err(SendError::Retry(why)) => Outcome::Retry(format!("announcing {what}: {why}")),
        Err(SendError::Refused(why)) => {
            audit(
                state.store.as_ref(),
                state.clock.as_ref(),
                "runway",
                AuditAction::NotifyRefused,
                Some(app.as_str()),
                format!("{what}: {why}"),
            )
            .await;
            Outcome::Permanent(format!("announcing {what}: {why}"))
        }
    }
}

/// How many of an app's newest releases are looked through for one building: more than can be
/// building at once (one, bar a race).
const SLOT_LOOKBACK: usize = 20;

/// Whether `release`'s build still runs. One whose end was never announced (a lost
/// notification, which cleanup's poll finds later) holds nothing up; one being started, or
/// whose builder cannot say, does.
async fn still_building(state: &State, release: &Release) -> bool {
    let Some(build_id) = &release.build_id else {
        return true;
    };
    !matches!(
        state.builder.status(build_id).await,
        Ok(BuildStatus::Succeeded { .. } | BuildStatus::Failed { .. } | BuildStatus::Lost)
    )
}

/// The app's build has ended: the newest release queued behind it starts now, while the one
/// that built deploys. One that cannot be published is published again by cleanup.
async fn start_next(state: &State, app: &AppName) {
    let Ok(releases) = state.store.releases(app, SLOT_LOOKBACK).await else {
        return;
    };
    if releases.iter().any(|r| r.state == ReleaseState::Building) {
        return;
    }
    if let Some(next) = releases.iter().find(|r| r.state == ReleaseState::Queued)
        && let Err(error) = publish(state.queue.as_ref(), next).await
    {
        tracing::warn!(release = %next.id, %error, "could not start the next release; cleanup will");
    }
}

/// Building → deploying → live, or failed with the log's last lines.
async fn finish_build(state: &State, build: BuildNotification) -> Result<Outcome, Outcome> {
    let Some(ended) = build.ended() else {
        return Ok(Outcome::Done(format!(
            "build {} is {}",
            build.id, build.status
        )));
    };
    let build_id = BuildId::new(build.id.clone());
    let release = match build.release_id() {
        Some(release_id) => state.store.release(&release_id).await?,
        None => state.store.release_by_build(&build_id).await?,
    };
    let Some(release) = release else {
        return Ok(Outcome::Done(format!(
            "build {} belongs to no release",
            build.id
        )));
    };
    // A notification is only a hint: any build in the project may carry a release's tag, and
    // its message says what it likes. Only the build the release started counts, and what it
    // made is asked of the builder itself, which takes images only from the apps' repository.
    match &release.build_id {
        Some(own) if *own != build_id => {
            tracing::warn!(build = %build_id, release = %release.id, "a build that is not the release's own claims it");
            return Ok(Outcome::Done(format!(
                "build {build_id} is not release {}'s build ({own}); ignored",
                release.id
            )));
        }
        // The worker that started it has not recorded it yet, or died before it could. The
        // builder says what it started the build for: the release's own build, of the commit
        // the release builds, is taken as recorded; any other is not this release's.
        None if release.state == ReleaseState::Building => {
            match state.builder.origin(&build_id).await {
                Ok(Some(origin))
                    if origin.release_id == release.id
                        && Some(&origin.commit) == release.commit.as_ref() =>
                {
                    tracing::info!(build = %build_id, release = %release.id,
                        "the release had not recorded its build; the builder vouches for it");
                }
                Ok(Some(_)) => {
                    return Ok(Outcome::Done(format!(
                        "build {build_id} was not started for release {} at its commit; ignored",
                        release.id
                    )));
                }
                // Nothing to vouch with: its starter records it, or cleanup builds it again.
                Ok(None) | Err(_) => {
                    return Err(Outcome::Retry(format!(
                        "release {} has not recorded its build yet",
                        release.id
                    )));
                }
            }
        }
        _ => {}
    }
    let ended = match ended {
        BuildEnded::Succeeded { .. } => match state.builder.status(&build_id).await {
            Ok(BuildStatus::Succeeded { image }) => BuildEnded::Succeeded { image: Some(image) },
            Ok(BuildStatus::Failed { status, detail }) => BuildEnded::Failed {
                status: CloudBuildStatus::parse(&status),
                detail,
            },
            Ok(other) => {
                return Err(Outcome::Retry(format!(
                    "build {build_id} was announced finished but the builder says {other:?}"
                )));
            }
            Err(error) => return Err(Outcome::Retry(format!("reading build {build_id}: {error}"))),
        },
        failed => failed,
    };
    let image = match after_build(release.state, ended) {
        AfterBuild::MovedOn(other) => {
            return Ok(Outcome::Done(format!(
                "release {} is already {other}",
                release.id
            )));
        }
        AfterBuild::DeployAgain => return Ok(go_live(state, release).await),
        AfterBuild::Fail { status, detail } => {
            let excerpt = state
                .builder
                .log_tail(&build_id, LOG_EXCERPT_LINES)
                .await
                .unwrap_or_default();
            let message = format!(
                "build {} ({detail}); the previous version keeps serving. Log:\n{excerpt}",
                status.as_str().to_lowercase()
            );
            let failed = fail(state, &release, ReleaseState::Building, message).await;
            if matches!(failed, Outcome::Permanent(_)) {
                timed_build(&build, Ended::Failed);
            }
            start_next(state, &release.app).await;
            return Ok(failed);
        }
        AfterBuild::FailWithoutImage => {
            let failed = fail(
                state,
                &release,
                ReleaseState::Building,
                "the build succeeded but produced no image".into(),
            )
            .await;
            start_next(state, &release.app).await;
            return Ok(failed);
        }
        AfterBuild::Deploy(image) => image,
    };
    let release = claim(
        state,
        &release,
        ReleaseState::Deploying,
        ReleaseUpdate {
            image: Some(image),
            build_id: Some(build_id.clone()),
            log_url: build.log_url.clone(),
            ..Default::default()
        },
    )
    .await?;
    timed_build(&build, Ended::Succeeded);
    start_next(state, &release.app).await;
    report(state, &release, Progress::InProgress, "Built; deploying").await;
    Ok(go_live(state, release).await)
}

/// A build's duration as the builder timed it, counted once: when its end moved its release on.
fn timed_build(build: &BuildNotification, ended: Ended) {
    match build.ran_for() {
        Some(took) => metrics().build(ended, took),
        None => tracing::debug!(build = %build.id, "the build's notification carries no times"),
    }
}

/// How long ago `then` was, by the state's clock (zero if the clock says it is yet to come).
fn since(state: &State, then: Timestamp) -> Duration {
    (state.clock.now() - then).to_std().unwrap_or_default()
}

/// What a finished build means for its release, given the state the release is in.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterBuild {
    /// The release moved on already (a duplicate notification): nothing to do.
    MovedOn(ReleaseState),
    /// The release is deploying: a redelivery after the platform step failed transiently, so
    /// that step is tried again.
    DeployAgain,
    Fail {
        status: CloudBuildStatus,
        detail: String,
    },
    FailWithoutImage,
    /// Building → deploying with this image.
    Deploy(String),
}

/// The worker's decision on a build's end: pure, so every case is tested without a store.
pub fn after_build(state: ReleaseState, ended: BuildEnded) -> AfterBuild {
    match (state, ended) {
        (ReleaseState::Deploying, _) => AfterBuild::DeployAgain,
        (ReleaseState::Building, BuildEnded::Failed { status, detail }) => {
            AfterBuild::Fail { status, detail }
        }
        (ReleaseState::Building, BuildEnded::Succeeded { image: None }) => {
            AfterBuild::FailWithoutImage
        }
        (ReleaseState::Building, BuildEnded::Succeeded { image: Some(image) }) => {
            AfterBuild::Deploy(image)
        }
        (other, _) => AfterBuild::MovedOn(other),
    }
}

/// Once a release is live, the app's secrets that no release deployed with are retired; those
/// the serving release and any rollback target read stay. A failure here costs nothing but an
/// unused version left readable: logged, not retried.
async fn retire_secrets(state: &State, app: &AppName) {
    let keep: Vec<SecretRef> = match state.store.releases(app, usize::MAX >> 1).await {
        Ok(releases) => releases
            .into_iter()
            .filter_map(|release| release.secrets.map(SecretRef))
            .collect(),
        Err(error) => {
            tracing::warn!(%app, %error, "could not list the releases whose secrets to keep");
            return;
        }
    };
    if let Err(error) = state.secrets.retire(app, &keep).await {
        tracing::warn!(%app, %error, "could not retire unused secret versions");
    }
}

/// A release that deployed but could not be recorded live. If its app was deleted meanwhile (a
/// delete between `go_live`'s read and the platform call), what it deployed serves an app with
/// no record: remove it. Otherwise a newer release got there first, and that is all.
async fn removed_if_deleted(state: &State, release: &Release, error: StoreError) -> Outcome {
    match state.store.deployment(&release.app).await {
        Ok(Some(_)) => Outcome::Done(format!("not marked live: {error}")),
        Ok(None) => match state.platform.delete(&release.app).await {
            Ok(()) => {
                tracing::info!(app = %release.app, release = %release.id, "the app was deleted while it deployed; removed what it deployed");
                Outcome::Done(format!(
                    "the app {} was deleted while release {} deployed; its service was removed",
                    release.app, release.id
                ))
            }
            // Nothing would bring this message back to it (the release is gone): say so loudly.
            Err(error) => Outcome::Permanent(format!(
                "the app {} was deleted while it deployed, and removing its service failed: \
                 {error:#}",
                release.app
            )),
        },
        Err(error) => error.into(),
    }
}

/// Whose secrets `app` runs with: its own, or for a preview those its app names for previews.
fn secrets_of(app: &AppName) -> AppName {
    match app.preview_of() {
        Some((parent, _)) => parent.previews_secrets(),
        None => app.clone(),
    }
}

/// Where the app ran before this release, when that was elsewhere.
enum Moved {
    Not,
    From(runway_core::domain::Region),
    /// Its live release went live before releases recorded their region.
    Unknown,
}

/// Deploying → live on the platform, unless a newer release is already live.
async fn go_live(state: &State, release: Release) -> Outcome {
    let deployment = match state.store.deployment(&release.app).await {
        Ok(Some(deployment)) => deployment,
        Ok(None) => return Outcome::Done(format!("the app {} was deleted", release.app)),
        Err(error) => return error.into(),
    };
    let live = match &deployment.live_release {
        Some(live_id) => match state.store.release(live_id).await {
            Ok(live) => live,
            Err(error) => return error.into(),
        },
        None => None,
    };
    if let Some(live) = &live
        && live.seq > release.seq
    {
        let message = format!("the newer release {} is already live", live.id);
        return supersede(state, &release, message).await;
    }
    // The app moved to another region since its live release went live there. A live release
    // from before releases recorded their region may have run anywhere.
    let moved_from = match live.map(|live| live.region) {
        Some(Some(region)) if region != deployment.region => Moved::From(region),
        Some(None) => Moved::Unknown,
        _ => Moved::Not,
    };
    let Some(image) = release.image.clone() else {
        return fail(
            state,
            &release,
            ReleaseState::Deploying,
            "the release has no image to deploy".into(),
        )
        .await;
    };
    // A rollback returns to the release it names: its revision, if the platform keeps it, and
    // the secrets it ran with.
    let target = match &release.rollback_of {
        Some(target) => match state.store.release(target).await {
            Ok(target) => target,
            Err(error) => return error.into(),
        },
        None => None,
    };
    let secrets = match target.as_ref().and_then(|target| target.secrets.clone()) {
        Some(kept) => Some(SecretRef(kept)),
        // A preview runs with the secrets its app names for previews, never the app's own.
        None => match state.secrets.reference(&secrets_of(&release.app)).await {
            Ok(secrets) => secrets,
            Err(error) => return Outcome::Retry(format!("reading the secret reference: {error}")),
        },
    };
    let recorded = secrets.as_ref().map(|secrets| secrets.0.clone());
    let spec = DeploySpec::new(&deployment, &release, image, secrets);
    let deployed = match &release.rollback_of {
        None => state.platform.deploy(spec).await,
        Some(_) => {
            let revision = target
                .as_ref()
                .and_then(|target| target.revision.as_deref());
            state.platform.roll_back(spec, revision).await
        }
    };
    match deployed {
        Ok(deployed) => {
            // The new region serves: the old one's service goes, before the release is recorded
            // live, so a worker that dies in between does it again when the message returns.
            let retired = match &moved_from {
                Moved::Not => Ok(()),
                Moved::From(old) => state.platform.retire(&release.app, old).await,
                Moved::Unknown => {
                    let keep = &deployment.region;
                    state.platform.retire_elsewhere(&release.app, keep).await
                }
            };
            if let Err(error) = retired {
                return Outcome::Retry(format!(
                    "removing {} from the region it moved from: {error:#}",
                    release.app
                ));
            }
            let update = ReleaseUpdate {
                url: Some(deployed.url.clone()),
                revision: Some(deployed.revision),
                secrets: recorded,
                region: Some(deployment.region.clone()),
                ..Default::default()
            };
            match state
                .store
                .transition(
                    &release.id,
                    ReleaseState::Deploying,
                    ReleaseState::Live,
                    update,
                )
                .await
            {
                Ok(_) => {
                    metrics().release(ReleaseState::Live.as_str());
                    metrics().deploy(Ended::Succeeded, since(state, release.updated_at));
                    metrics().went_live(since(state, release.queued_at));
                    audit(
                        state.store.as_ref(),
                        state.clock.as_ref(),
                        "runway",
                        AuditAction::ReleaseLive,
                        Some(release.app.as_str()),
                        format!("release {} at {}", release.id, deployed.url),
                    )
                    .await;
                    let live = format!("Live: release #{} serves", release.seq);
                    state
                        .feedback
                        .report(&release, Progress::Success, &live, Some(&deployed.url))
                        .await;
                    let mut serving = release.clone();
                    serving.url = Some(deployed.url.clone());
                    state
                        .feedback
                        .announce(&serving, EventKind::Live, None)
                        .await;
                    // A preview runs with none of the app's secrets: nothing of its own to retire.
                    if release.app.preview_of().is_none() {
                        retire_secrets(state, &release.app).await;
                    }
                    Outcome::Done(format!(
                        "release {} is live at {}",
                        release.id, deployed.url
                    ))
                }
                Err(error @ (StoreError::Conflict(_) | StoreError::NotFound(_))) => {
                    removed_if_deleted(state, &release, error).await
                }
                Err(error) => error.into(),
            }
        }
        Err(PlatformError::NotReady(message)) => fail(
            state,
            &release,
            ReleaseState::Deploying,
            format!(
                "the new version never became ready; the previous version keeps serving. {message}"
            ),
        )
        .await,
        // Retrying cannot help: someone else's service has the app's name.
        Err(PlatformError::Conflict(message)) => {
            fail(state, &release, ReleaseState::Deploying, message).await
        }
        // A newer release reached the platform first and serves; this one stands aside.
        Err(PlatformError::Superseded(message)) => supersede(state, &release, message).await,
        Err(error) => Outcome::Retry(format!("deploying: {error:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(image: Option<&str>) -> BuildEnded {
        BuildEnded::Succeeded {
            image: image.map(str::to_owned),
        }
    }

    fn failed() -> BuildEnded {
        BuildEnded::Failed {
            status: CloudBuildStatus::Timeout,
            detail: "timed out".into(),
        }
    }

    #[test]
    fn a_building_release_deploys_its_image_or_fails_with_the_reason() {
        assert_eq!(
            after_build(ReleaseState::Building, built(Some("r/app@sha256:1"))),
            AfterBuild::Deploy("r/app@sha256:1".into())
        );
        assert_eq!(
            after_build(ReleaseState::Building, built(None)),
            AfterBuild::FailWithoutImage
        );
        assert_eq!(
            after_build(ReleaseState::Building, failed()),
            AfterBuild::Fail {
                status: CloudBuildStatus::Timeout,
                detail: "timed out".into()
            }
        );
    }

    #[test]
    fn a_redelivered_end_retries_the_deploy_or_is_ignored_once_the_release_moved_on() {
        assert_eq!(
            after_build(ReleaseState::Deploying, built(Some("i"))),
            AfterBuild::DeployAgain
        );
        for done in [
            ReleaseState::Live,
            ReleaseState::Failed,
            ReleaseState::Superseded,
            ReleaseState::Queued,
        ] {
            assert_eq!(after_build(done, failed()), AfterBuild::MovedOn(done));
        }
    }
}
