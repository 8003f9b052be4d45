//! `github-webhook`: the ingress for GitHub push events. Verifies the signature before reading
//! anything else, answers fast, records every delivery with what was done with it (so a push
//! that did not redeploy says why), and queues a release of the hook's app when the push is to
//! its branch. Each app has its own hook, URL and secret (`webhook::app_secret`). Deliveries
//! are limited per source address and per app (429), and, when the operator asks, taken from
//! GitHub's published hook addresses only (`sources`).

mod previews;
pub mod sources;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runway_core::adapters::{Adapters, Need, Unwired};
use runway_core::clock::Clock;

use axum::extract::{ConnectInfo, State as Shared};
use axum::routing::post;
use http::{HeaderMap, StatusCode};
use runway_core::domain::{
    AppName, AuditAction, CommitSha, Delivery, DeliveryId, Deployment, NewRelease, Release,
    Timestamp, Trigger,
};
use runway_core::limits::{HookSources, RateLimits};
use runway_core::ports::{Queue, Store};
use runway_core::releases::{audit, publish};
use runway_http::limit::KeyedLimit;
use runway_http::metrics::{DeliveryOutcome, metrics};
use runway_http::source::{network_of, source_address};
use runway_http::webhook::{self, PushEvent};
use runway_http::{ApiError, ApiResult, Limits, Response, Router, json, limits, parse_json};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use self::sources::HookRanges;

/// GitHub caps a delivery's payload at 25 MB.
const PUSH_BODY_LIMIT: usize = 25 * 1024 * 1024;
/// A pull request's event carries its description (up to 65,536 characters) and three
/// repositories: a few hundred kilobytes at most.
const PULL_BODY_LIMIT: usize = 1024 * 1024;
/// Any other event Runway reads (a ping is a few kilobytes).
const OTHER_BODY_LIMIT: usize = 256 * 1024;

/// The deadline only stops what is stuck: each step of a push is bounded by `State::step` well
/// within it, so the handler answers before it is cut off between recording a delivery and
/// queueing its release.
const LIMITS: Limits = Limits {
    body: PUSH_BODY_LIMIT,
    timeout: Duration::from_secs(30),
};

/// How long one store or queue call on the push path may take. GitHub gives up on a delivery
/// after 10 s and never retries it by itself: better a 503 it shows as failed (and a person can
/// redeliver) than no answer.
pub const STEP: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct State {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    pub secret: SecretString,
    pub clock: Arc<dyn Clock>,
    /// The bound on each store or queue call (`STEP`).
    pub step: Duration,
    /// When each app last had a refused signature recorded (see `UNVERIFIED_EVERY`).
    pub unverified: Arc<Mutex<HashMap<AppName, Timestamp>>>,
    /// What this instance takes per source address and per app.
    pub rates: Arc<Rates>,
    /// GitHub's hook addresses, when deliveries are taken from those only.
    pub sources: Option<Arc<HookRanges>>,
}

/// How many deliveries this instance takes, and where it reads their source address.
pub struct Rates {
    /// Per source address (an IPv6 /64): checked first, so a flood is refused before it costs a
    /// store read or its body is read.
    pub per_source: KeyedLimit<IpAddr>,
    /// Per app, counting verified deliveries only: anyone can post to an app's hook URL, and
    /// forged posts must not use up the app's own pushes.
    pub per_app: KeyedLimit<AppName>,
    /// `RateLimits::trusted_xff_entries`.
    pub trusted_xff_entries: usize,
}

impl Rates {
    pub fn new(limits: &RateLimits, clock: &Arc<dyn Clock>) -> Self {
        Self {
            per_source: KeyedLimit::new(limits.webhook_per_source, clock.clone()),
            per_app: KeyedLimit::new(limits.webhook_per_app, clock.clone()),
            trusted_xff_entries: limits.trusted_xff_entries,
        }
    }
}

/// A push to a known app whose signature does not match is recorded on the app's page ("check
/// the hook secret"), at most once per app this often per instance: anyone can send them.
const UNVERIFIED_EVERY: chrono::Duration = chrono::Duration::minutes(1);

/// Firestore and Pub/Sub on Google Cloud; GitHub's signature is the only credential (GitHub's
/// `meta` API, asked for its hook addresses, needs none).
pub const NEEDS: &[Need] = &[
    Need::Store,
    Need::Queue,
    Need::WebhookSecret,
    Need::RateLimits,
];

impl State {
    pub fn new(adapters: &Adapters) -> Result<Self, Unwired> {
        let limits = adapters.rate_limits()?;
        let sources = match limits.hook_sources {
            HookSources::Anywhere => None,
            HookSources::GitHub => Some(Arc::new(HookRanges::new(
                adapters.hook_sources()?,
                adapters.clock.clone(),
            ))),
        };
        Ok(Self {
            clock: adapters.clock.clone(),
            store: adapters.store()?,
            queue: adapters.queue()?,
            secret: adapters.webhook_secret()?,
            step: STEP,
            unverified: Arc::default(),
            rates: Arc::new(Rates::new(&limits, &adapters.clock)),
            sources,
        })
    }
}

/// Each app's hook posts to `/github/webhook/{app}`, signed with that app's own secret.
pub fn router(state: State) -> Router {
    let routes = axum::Router::new()
        .route("/github/webhook/{app}", post(receive))
        .with_state(state);
    limits(routes, LIMITS)
}

/// `call`, or 503 once it has taken longer than the state's step.
async fn bounded<T, E>(
    state: &State,
    what: &str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, ApiError>
where
    ApiError: From<E>,
{
    match tokio::time::timeout(state.step, call).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(_) => Err(ApiError::Unavailable(format!(
            "{what} took longer than {:?}; redeliver this delivery from GitHub's webhook page \
             once Runway answers again",
            state.step
        ))),
    }
}

/// 429 for deliveries over `limit`'s rate: GitHub shows it in the hook's Recent Deliveries, with
/// what to do, and nothing of the delivery was recorded, so its Redeliver is taken as new.
fn over<K: std::hash::Hash + Eq + Clone>(
    limit: &KeyedLimit<K>,
    key: &K,
    what: impl FnOnce() -> String,
) -> Result<(), ApiError> {
    limit.check(key).map_err(|wait| {
        let what = what();
        tracing::debug!(what, ?wait, "delivery refused: over the rate");
        ApiError::TooManyRequests {
            message: format!(
                "too many deliveries {what}: this Runway takes {} a minute; nothing of this one \
                 was recorded, so redeliver it from the hook's Recent Deliveries on GitHub after \
                 {} s",
                limit.per_minute(),
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            ),
            retry_after: wait,
        }
    })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Every delivery is counted by what became of it (`runway_deliveries_total`).
async fn receive(
    state: Shared<State>,
    // Not the API's `Path`: a malformed name is refused like a bad signature below.
    app: axum::extract::Path<String>,
    peer: ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
) -> ApiResult {
    let answered = handle(state, app, peer, request).await;
    let outcome = match &answered {
        Ok((outcome, _)) => *outcome,
        Err(error) => DeliveryOutcome::of_refusal(error.status()),
    };
    metrics().delivery(outcome);
    answered.map(|(_, response)| response)
}

#[tracing::instrument(skip_all, fields(delivery))]
async fn handle(
    Shared(state): Shared<State>,
    axum::extract::Path(app): axum::extract::Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
) -> ApiResult<(DeliveryOutcome, Response)> {
    // Whatever the head alone can refuse is refused before a byte of the body is read: anyone
    // may send one, and a push's may be 25 MB (GitHub's cap).
    let headers = request.headers();
    let source = source_address(headers, peer.ip(), state.rates.trusted_xff_entries);
    if let Some(sources) = &state.sources {
        sources.admit(source, state.step).await?;
    }
    over(&state.rates.per_source, &network_of(source), || {
        format!("from {source}")
    })?;
    let forged = || ApiError::Unauthorized("X-Hub-Signature-256 does not match the body".into());
    // Unknown names are refused like bad signatures: the ingress is public, and says nothing
    // about which apps exist.
    let app = AppName::parse(&app)
        .ok()
        .filter(|app| app.preview_of().is_none())
        .ok_or_else(forged)?;
    let delivery_id = header(headers, "x-github-delivery")
        .unwrap_or_default()
        .to_owned();
    tracing::Span::current().record("delivery", delivery_id.as_str());
    let Some(signature) = header(headers, "x-hub-signature-256").map(str::to_owned) else {
        return Err(ApiError::Unauthorized(
            "X-Hub-Signature-256 is missing".into(),
        ));
    };
    let Some(event) = header(headers, "x-github-event").map(str::to_owned) else {
        return Err(ApiError::bad_request(
            "X-GitHub-Event",
            "X-GitHub-Event is missing",
        ));
    };
    if delivery_id.is_empty() || delivery_id.len() > 100 {
        return Err(ApiError::bad_request(
            "X-GitHub-Delivery",
            "X-GitHub-Delivery is missing",
        ));
    }
    // A push is read only for an app that exists. Other events (GitHub's ping arrives while the
    // app is being created, before its record) are small: a ping is a few kilobytes.
    let limit = match event.as_str() {
        "push" => PUSH_BODY_LIMIT,
        "pull_request" => PULL_BODY_LIMIT,
        _ => OTHER_BODY_LIMIT,
    };
    let deployment = if limit == OTHER_BODY_LIMIT {
        None
    } else {
        let deployment = bounded(&state, "reading the app", state.store.deployment(&app))
            .await?
            .ok_or_else(forged)?;
        Some(deployment)
    };
    let body = axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;
    let secret = webhook::app_secret(&state.secret, &app);
    if !webhook::verify(secret.expose_secret().as_bytes(), &body, &signature) {
        if deployment.is_some() {
            record_unverified(&state, &app, &delivery_id).await;
        }
        return Err(ApiError::Unauthorized(
            "X-Hub-Signature-256 does not match the body; check the webhook secret".into(),
        ));
    }
    over(&state.rates.per_app, &app, || format!("for the app {app}"))?;
    match (event.as_str(), deployment) {
        ("ping", _) => Ok((
            DeliveryOutcome::Ping,
            json(StatusCode::OK, &json!({ "status": "pong" })),
        )),
        ("push", Some(deployment)) => push(state, deployment, delivery_id, &body).await,
        ("pull_request", Some(deployment)) => {
            previews::pull_request(state, deployment, delivery_id, &body).await
        }
        (other, _) => Ok((
            DeliveryOutcome::Ignored,
            json(
                StatusCode::ACCEPTED,
                &json!({ "status": "ignored", "reason": format!("Runway acts on push and pull_request events, not '{other}'") }),
            ),
        )),
    }
}

/// Records a refused push on its app's page, so that "why didn't my push deploy?" has an answer
/// when the hook's secret is wrong. Under an id of its own: GitHub's "Redeliver" of the same
/// delivery, once the secret is right, must not be taken for a replay. Nothing of the body is
/// kept (none of it is to be believed); at most one a minute per app.
async fn record_unverified(state: &State, app: &AppName, delivery_id: &str) {
    let now = state.clock.now();
    {
        let mut last = state.unverified.lock().expect("unverified lock");
        if last.get(app).is_some_and(|at| now - *at < UNVERIFIED_EVERY) {
            return;
        }
        if last.len() >= 10_000 {
            last.clear();
        }
        last.insert(app.clone(), now);
    }
    // The header is the sender's to choose: shown only when it looks like GitHub's GUID.
    let named = delivery_id.len() <= 36
        && delivery_id
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == '-');
    let outcome = format!(
        "refused: the signature did not match{} — check the hook's secret (delete the app's \
         webhook on GitHub and submit the app again to have Runway set it)",
        if named {
            format!(" (GitHub delivery {delivery_id})")
        } else {
            String::new()
        }
    );
    let delivery = Delivery {
        id: DeliveryId::new(format!("unverified-{}", uuid::Uuid::new_v4())),
        app: Some(app.clone()),
        event: "push".into(),
        repo_id: None,
        git_ref: None,
        commit: None,
        received_at: now,
        outcome,
    };
    if let Err(error) = bounded(
        state,
        "recording a refused delivery",
        state.store.record_delivery(&delivery),
    )
    .await
    {
        tracing::warn!(%error, %app, "a refused delivery was not recorded");
    }
}

async fn push(
    state: State,
    deployment: Deployment,
    delivery_id: String,
    body: &[u8],
) -> ApiResult<(DeliveryOutcome, Response)> {
    let app = &deployment.app;
    let event: PushEvent = parse_json(body)?;
    let mut delivery = Delivery {
        id: DeliveryId::new(delivery_id),
        app: Some(app.clone()),
        event: "push".into(),
        repo_id: Some(event.repository.id),
        git_ref: Some(event.git_ref.clone()),
        commit: Some(event.after.clone()),
        received_at: state.clock.now(),
        outcome: String::new(),
    };
    // Decide first, then record once: a replayed delivery id is refused before it acts.
    let branch = event.git_ref.strip_prefix("refs/heads/");
    let commit = CommitSha::parse(&event.after).ok();
    let deployment = match (branch, event.deleted, &commit) {
        (None, _, _) => Err(format!("{} is not a branch", event.git_ref)),
        (Some(branch), true, _) => Err(format!("branch {branch} was deleted")),
        (Some(_), false, None) => Err(format!("'{}' is not a commit id", event.after)),
        (Some(_), false, Some(_)) if deployment.repo_id != event.repository.id => Err(format!(
            "{app} does not deploy {}",
            event.repository.full_name
        )),
        (Some(branch), false, Some(_)) if deployment.branch.as_str() != branch => Err(format!(
            "no app deploys branch {branch} of {} ({app} deploys {})",
            event.repository.full_name, deployment.branch
        )),
        (Some(_), false, Some(_)) => Ok(&deployment),
    };
    delivery.outcome = match &deployment {
        Ok(d) => format!("queued a release of {}", d.app),
        Err(reason) => format!("ignored: {reason}"),
    };
    let deployment = match deployment {
        Ok(deployment) => deployment,
        Err(reason) => return ignored(&state, &delivery, reason).await,
    };
    let actor = event
        .pusher
        .as_ref()
        .map_or_else(|| "github".to_owned(), |p| format!("{} (push)", p.name));
    let new = NewRelease {
        app: deployment.app.clone(),
        trigger: Trigger::Push,
        actor: actor.clone(),
        commit,
        rollback_of: None,
        clear_cache: false,
    };
    let detail = format!("delivery {} commit {}", delivery.id, event.after);
    let accepted = accept(&state, &delivery, new, AuditAction::Push, detail).await?;
    let Some(release) = accepted else {
        return duplicate(&delivery);
    };
    Ok((
        DeliveryOutcome::Queued,
        json(
            StatusCode::ACCEPTED,
            &json!({ "status": "queued", "app": deployment.app, "release_id": release.id }),
        ),
    ))
}

/// Records the delivery and queues the release it asks for, publishes the release and audits
/// it as `action`: `None`, and nothing done, for a delivery the hook received before.
async fn accept(
    state: &State,
    delivery: &Delivery,
    new: NewRelease,
    action: AuditAction,
    detail: String,
) -> Result<Option<Release>, ApiError> {
    let actor = new.actor.clone();
    let app = new.app.clone();
    // The delivery and its release are written together: a failure writes neither, so GitHub's
    // "Redeliver" (the same id) queues the release then instead of being taken for a replay.
    let accepted = bounded(
        state,
        "recording the delivery and queueing the release",
        state.store.accept_push(delivery, new),
    )
    .await?;
    let Some(release) = accepted else {
        return Ok(None);
    };
    // The release is durably queued: the answer need not wait for the queue. The record is the
    // outbox, so a publish that fails or hangs is published again by cleanup.
    match tokio::time::timeout(state.step, publish(state.queue.as_ref(), &release)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::warn!(release = %release.id, %error, "publish failed; cleanup will publish it again");
        }
        Err(_) => {
            tracing::warn!(release = %release.id, "publish took too long; cleanup will publish it again");
        }
    }
    let audited = audit(
        state.store.as_ref(),
        state.clock.as_ref(),
        &actor,
        action,
        Some(app.as_str()),
        detail,
    );
    if tokio::time::timeout(state.step, audited).await.is_err() {
        tracing::warn!(release = %release.id, "the audit entry took too long; left out");
    }
    Ok(Some(release))
}

/// 200 for a delivery the hook received before: nothing was done again.
fn duplicate(delivery: &Delivery) -> ApiResult<(DeliveryOutcome, Response)> {
    Ok((
        DeliveryOutcome::Duplicate,
        json(
            StatusCode::OK,
            &json!({ "status": "duplicate", "reason": format!("delivery {} was already received", delivery.id) }),
        ),
    ))
}

/// Records a delivery Runway does nothing with, and why (the app's page shows it): 202.
async fn ignored(
    state: &State,
    delivery: &Delivery,
    reason: String,
) -> ApiResult<(DeliveryOutcome, Response)> {
    let recorded = bounded(
        state,
        "recording the delivery",
        state.store.record_delivery(delivery),
    )
    .await?;
    if !recorded {
        return duplicate(delivery);
    }
    // The delivery's record says why, on the app's page: no log line per ignored delivery
    // (under a flood of them, formatting the lines showed in the ingress's profile).
    tracing::debug!(%reason, "delivery ignored");
    Ok((
        DeliveryOutcome::Ignored,
        json(
            StatusCode::ACCEPTED,
            &json!({ "status": "ignored", "reason": reason }),
        ),
    ))
}
