//! `pull_request` events: a pull request into an app's branch gets a preview of the app, built
//! from its head and updated on every push to it (`opened`, `reopened`, `synchronize`), and
//! removed when it is closed or merged (`closed`) or made to go into another branch
//! (`edited`, which otherwise only brings the preview's title up to date). A preview is an app of its own
//! (`AppName::preview`, `APP--prN`) with the pull request on its record, so it is built, run and
//! shown the way an app is; its releases are queued like a push's.
//!
//! Pull requests from forks run code anyone wrote: they are previewed only when an admin allowed
//! it on the app (`Previews::forks`), and previews never get the app's secrets.

use http::StatusCode;
use runway_core::domain::{
    AppName, AuditAction, Branch, CommitSha, Delivery, DeliveryId, Deployment, MinInstances,
    NewRelease, PullRequest, Runtime, Timestamp, Trigger,
};
use runway_http::metrics::DeliveryOutcome;
use runway_http::webhook::PullRequestEvent;
use runway_http::{ApiError, ApiResult, Response, json, parse_json};
use serde_json::json;

use super::{State, accept, bounded, duplicate, ignored};

/// What a pull request's event asks of its preview.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    /// Build and run its head.
    Deploy,
    /// Remove it.
    Remove,
    /// Bring its record up to date (an edited title), with no build.
    Refresh,
}

/// Whether `event` asks anything of `app`'s previews, and if not, why not (in words the app's
/// page shows beside the delivery).
fn asked(app: &Deployment, event: &PullRequestEvent) -> Result<Asked, String> {
    let number = event.number;
    let asked = match event.action.as_str() {
        "opened" | "reopened" | "synchronize" => Asked::Deploy,
        "closed" => Asked::Remove,
        // Made to go into another branch: no longer a change to the app's.
        "edited" if event.pull_request.base.branch != app.branch.as_str() => Asked::Remove,
        "edited" => Asked::Refresh,
        other => {
            return Err(format!(
                "pull request #{number} was {other}; previews follow opened, reopened, \
                 synchronize, edited and closed"
            ));
        }
    };
    if app.repo_id != event.repository.id {
        return Err(format!(
            "{} does not deploy {}",
            app.app, event.repository.full_name
        ));
    }
    // A closing is always taken: a preview made before previews were switched off still goes.
    if asked == Asked::Remove {
        return Ok(asked);
    }
    if !app.previews.enabled {
        return Err(format!(
            "previews are off for {}: pull request #{number} is not deployed",
            app.app
        ));
    }
    let base = &event.pull_request.base.branch;
    if base != app.branch.as_str() {
        return Err(format!(
            "pull request #{number} is into {base}; {} previews pull requests into {}",
            app.app, app.branch
        ));
    }
    if let Some(fork) = fork(event)
        && !app.previews.forks
    {
        return Err(format!(
            "pull request #{number} comes from the fork {fork}: a fork's code is anyone's, so \
             it is previewed only where an admin allowed previews of forks"
        ));
    }
    Ok(asked)
}

/// The branch an `edited` pull request now goes into, when that is what the edit was.
fn retargeted(event: &PullRequestEvent) -> Option<&str> {
    (event.action == "edited").then_some(event.pull_request.base.branch.as_str())
}

/// The repository the pull request's head is in, when that is not the base repository (a
/// fork, or one since deleted).
fn fork(event: &PullRequestEvent) -> Option<String> {
    match &event.pull_request.head.repo {
        Some(head) if head.id == event.repository.id => None,
        Some(head) => Some(head.full_name.clone()),
        None => Some("(deleted)".to_owned()),
    }
}

/// The preview's record: the app's settings, the pull request's branch, none of the app's
/// secrets, notification targets or hook.
fn preview_of(
    app: &Deployment,
    event: &PullRequestEvent,
    head: &CommitSha,
    now: Timestamp,
) -> Deployment {
    let pull = &event.pull_request;
    Deployment {
        app: AppName::preview(&app.app, event.number),
        branch: Branch::parse(&pull.head.branch).unwrap_or_else(|_| app.branch.clone()),
        owner: app.owner.clone(),
        // No warm instance: a preview is looked at now and then, and each would be billed.
        runtime: Runtime {
            env: app.runtime.env.clone(),
            min_instances: MinInstances::default(),
        },
        // The names of the secrets its app gives previews, never the app's own.
        secret_keys: Some(app.previews.secret_keys.clone()),
        notify: Vec::new(),
        previews: Default::default(),
        pull: Some(PullRequest {
            number: event.number,
            title: pull.title.chars().take(300).collect(),
            url: pull.html_url.clone(),
            author: pull
                .user
                .as_ref()
                .map_or_else(|| "unknown".to_owned(), |user| user.login.clone()),
            head_branch: pull.head.branch.chars().take(255).collect(),
            fork: fork(event),
            head: head.clone(),
        }),
        webhook_id: None,
        live_release: None,
        url: None,
        created_at: now,
        updated_at: now,
        ..app.clone()
    }
}

/// Rewrites the stored preview from the app's settings and the pull request as `event` saw it,
/// keeping when it was made.
async fn refresh(
    state: &State,
    app: &Deployment,
    event: &PullRequestEvent,
    head: &CommitSha,
    stored: &Deployment,
) -> Result<(), ApiError> {
    let mut fresh = preview_of(app, event, head, state.clock.now());
    fresh.created_at = stored.created_at;
    bounded(
        state,
        "updating the preview",
        state.store.put_deployment(&fresh),
    )
    .await
}

pub(super) async fn pull_request(
    state: State,
    app: Deployment,
    delivery_id: String,
    body: &[u8],
) -> ApiResult<(DeliveryOutcome, Response)> {
    let event: PullRequestEvent = parse_json(body)?;
    let number = event.number;
    let mut delivery = Delivery {
        id: DeliveryId::new(delivery_id),
        app: Some(app.app.clone()),
        event: "pull_request".into(),
        repo_id: Some(event.repository.id),
        git_ref: Some(format!("refs/pull/{number}/head")),
        commit: Some(event.pull_request.head.sha.clone()),
        received_at: state.clock.now(),
        outcome: String::new(),
    };
    let head = CommitSha::parse(&event.pull_request.head.sha);
    let asked = match (asked(&app, &event), head) {
        (Err(reason), _) => Err(reason),
        (Ok(_), Err(_)) => Err(format!(
            "'{}' is not a commit id",
            event.pull_request.head.sha
        )),
        (Ok(asked), Ok(head)) => Ok((asked, head)),
    };
    let (asked, head) = match asked {
        Ok(asked) => asked,
        Err(reason) => {
            delivery.outcome = format!("ignored: {reason}");
            return ignored(&state, &delivery, reason).await;
        }
    };
    let name = AppName::preview(&app.app, number);
    let existing = bounded(&state, "reading the preview", state.store.deployment(&name)).await?;
    let sender = event
        .sender
        .as_ref()
        .map_or_else(|| "github".to_owned(), |sender| sender.login.clone());
    let new = match asked {
        Asked::Deploy => {
            let preview = preview_of(&app, &event, &head, state.clock.now());
            // The record first, so the worker finds it; a second event racing this one finds it
            // made and only queues its release.
            if existing.is_none() {
                bounded(
                    &state,
                    "recording the preview",
                    state.store.insert_deployment(&preview),
                )
                .await?;
            }
            delivery.outcome = format!("queued a preview of #{number} as {name}");
            NewRelease {
                app: name.clone(),
                trigger: Trigger::Preview,
                actor: format!("{sender} (pull request #{number})"),
                commit: Some(head.clone()),
                rollback_of: None,
                clear_cache: false,
            }
        }
        Asked::Remove | Asked::Refresh if existing.is_none() => {
            let reason = match (&asked, retargeted(&event)) {
                (Asked::Remove, Some(base)) => {
                    format!("pull request #{number} now goes into {base}; it had no preview")
                }
                (Asked::Remove, None) => {
                    format!("pull request #{number} was closed; it had no preview")
                }
                _ => format!("pull request #{number} was edited; it has no preview"),
            };
            delivery.outcome = format!("ignored: {reason}");
            return ignored(&state, &delivery, reason).await;
        }
        Asked::Refresh => {
            delivery.outcome = format!("updated {name}, the preview of #{number}");
            let recorded = bounded(
                &state,
                "recording the delivery",
                state.store.record_delivery(&delivery),
            )
            .await?;
            if !recorded {
                return duplicate(&delivery);
            }
            if let Some(stored) = &existing {
                refresh(&state, &app, &event, &head, stored).await?;
            }
            return Ok((
                DeliveryOutcome::Ignored,
                json(
                    StatusCode::ACCEPTED,
                    &json!({ "status": "updated", "app": name }),
                ),
            ));
        }
        Asked::Remove => {
            delivery.outcome = match retargeted(&event) {
                Some(base) => format!(
                    "queued the removal of {name}, the preview of #{number}: it now goes into \
                     {base}"
                ),
                None => format!("queued the removal of {name}, the preview of #{number}"),
            };
            NewRelease {
                app: name.clone(),
                trigger: Trigger::Close,
                actor: format!("{sender} (pull request #{number})"),
                commit: None,
                rollback_of: None,
                clear_cache: false,
            }
        }
    };
    let closing = new.trigger == Trigger::Close;
    let (action, detail) = if closing {
        (
            AuditAction::PreviewRemoved,
            match retargeted(&event) {
                Some(base) => format!(
                    "delivery {}: pull request #{number} now goes into {base}",
                    delivery.id
                ),
                None => format!("delivery {}: pull request #{number} closed", delivery.id),
            },
        )
    } else {
        (
            AuditAction::Preview,
            format!(
                "delivery {}: pull request #{number} at {}",
                delivery.id, event.pull_request.head.sha
            ),
        )
    };
    let Some(release) = accept(&state, &delivery, new, action, detail).await? else {
        return duplicate(&delivery);
    };
    // An open preview follows the app's settings and the pull request as this event saw it
    // (title, head). A replayed delivery stopped above, so an old event puts nothing back.
    if !closing
        && let Some(stored) = &existing
        && let Err(error) = refresh(&state, &app, &event, &head, stored).await
    {
        tracing::warn!(app = %name, %error, "the preview's record was not updated");
    }
    Ok((
        DeliveryOutcome::Queued,
        json(
            StatusCode::ACCEPTED,
            &json!({ "status": "queued", "app": name, "release_id": release.id }),
        ),
    ))
}
