//! Queueing a release, shared by submit (manual, rollback), the ingress (push) and cleanup
//! (the outbox sweep).

use crate::clock::Clock;
use crate::domain::{
    AppName, AuditAction, AuditEntry, HookHealth, NewRelease, Release, ReleaseId, ReleaseState,
    Timestamp,
};
use crate::messages::DeployRequest;
use crate::ports::{Queue, QueueError, Store, StoreError, Topic};

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Records the release as queued, then publishes its deploy request. The record is the outbox:
/// if publishing fails, the release stays queued and cleanup publishes it again, so it is never
/// lost; the worker ignores a request for a release that has moved on, so it never runs twice.
pub async fn enqueue(
    store: &dyn Store,
    queue: &dyn Queue,
    release: NewRelease,
) -> Result<Release, EnqueueError> {
    let release = store.queue_release(release).await?;
    if let Err(error) = publish(queue, &release).await {
        tracing::warn!(release = %release.id, %error, "publish failed; cleanup will publish it again");
    }
    Ok(release)
}

pub async fn publish(queue: &dyn Queue, release: &Release) -> Result<String, QueueError> {
    let request = DeployRequest {
        release_id: release.id.clone(),
        app: release.app.to_string(),
    };
    queue
        .publish(Topic::DeployRequests, request.to_message())
        .await
}

/// Appends to the audit trail; a failure is logged, never fatal to the action it records.
pub async fn audit(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &str,
    action: AuditAction,
    app: Option<&str>,
    detail: String,
) {
    let entry = AuditEntry {
        at: clock.now(),
        actor: actor.to_owned(),
        action,
        app: app.map(str::to_owned),
        detail,
    };
    if let Err(error) = store.append_audit(&entry).await {
        tracing::error!(%error, %action, "could not write the audit trail");
    }
}

/// Records that `app`'s repository answers not found (gone, or no longer readable), from `now`
/// unless it was already so; the app's page shows it from then on. Returns since when, or
/// `None` when that could not be read or recorded (nothing is then removed on its account).
pub async fn flag_repo_gone(
    store: &dyn Store,
    app: &AppName,
    why: &str,
    now: Timestamp,
) -> Option<Timestamp> {
    let previous = match store.hook_health(app).await {
        Ok(previous) => previous,
        Err(error) => {
            tracing::warn!(%app, %error, "could not read whether the app's repository was gone");
            return None;
        }
    };
    let since = previous
        .as_ref()
        .and_then(|health| health.repo_gone_since)
        .unwrap_or(now);
    let health = HookHealth {
        problem: Some(format!("the repository cannot be read: {why}")),
        repo_gone_since: Some(since),
        ..HookHealth::after(previous, now)
    };
    match store.put_hook_health(app, &health).await {
        Ok(()) => {
            tracing::warn!(%app, %since, why, "the app's repository is gone or unreadable");
            Some(since)
        }
        Err(error) => {
            tracing::warn!(%app, %error, "could not record that the app's repository is gone");
            None
        }
    }
}

/// Why a rollback cannot happen as asked.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RollbackRefused {
    #[error("'{app}' has no release {release}")]
    NoSuchRelease { app: AppName, release: ReleaseId },
    #[error(
        "release {release} never went live ({state}); only a release that was live can come back"
    )]
    NeverLive {
        release: ReleaseId,
        state: ReleaseState,
    },
    #[error("release {0} is already live")]
    AlreadyLive(ReleaseId),
    #[error("'{0}' has no earlier live release to roll back to")]
    NothingEarlier(AppName),
}

/// Which release a rollback of `app` brings back: `requested`, or by default the newest release
/// that was live before the one live now. Only a release that went live (and so has an image)
/// can come back, and never the one serving. `releases` are the app's, newest first.
pub fn rollback_target<'a>(
    app: &AppName,
    releases: &'a [Release],
    live: Option<&ReleaseId>,
    requested: Option<&ReleaseId>,
) -> Result<&'a Release, RollbackRefused> {
    let was_live = |r: &&Release| r.state == ReleaseState::Live && r.image.is_some();
    match requested {
        Some(id) => {
            let target = releases.iter().find(|r| &r.id == id).ok_or_else(|| {
                RollbackRefused::NoSuchRelease {
                    app: app.clone(),
                    release: id.clone(),
                }
            })?;
            if !was_live(&target) {
                return Err(RollbackRefused::NeverLive {
                    release: id.clone(),
                    state: target.state,
                });
            }
            if Some(id) == live {
                return Err(RollbackRefused::AlreadyLive(id.clone()));
            }
            Ok(target)
        }
        None => releases
            .iter()
            .filter(was_live)
            .find(|r| Some(&r.id) != live)
            .ok_or_else(|| RollbackRefused::NothingEarlier(app.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(id: &str, seq: u64, state: ReleaseState, image: bool) -> Release {
        let mut release = crate::testing::release(id, seq, state, chrono::Utc::now());
        release.image = image.then(|| format!("image-{id}"));
        release
    }

    /// Newest first, as the store lists them: 4 failed, 3 live now, 2 live before, 1 live first.
    fn history() -> Vec<Release> {
        vec![
            release("r4", 4, ReleaseState::Failed, false),
            release("r3", 3, ReleaseState::Live, true),
            release("r2", 2, ReleaseState::Live, true),
            release("r1", 1, ReleaseState::Live, true),
        ]
    }

    fn app() -> AppName {
        AppName::parse("demo").unwrap()
    }

    #[test]
    fn by_default_the_release_live_before_the_current_one_comes_back() {
        let releases = history();
        let target = rollback_target(&app(), &releases, Some(&ReleaseId::new("r3")), None);
        assert_eq!(target.unwrap().id, "r2");
    }

    #[test]
    fn an_earlier_release_can_be_named() {
        let releases = history();
        let live = ReleaseId::new("r3");
        let r1 = ReleaseId::new("r1");
        assert_eq!(
            rollback_target(&app(), &releases, Some(&live), Some(&r1))
                .unwrap()
                .id,
            "r1"
        );
    }

    #[test]
    fn refuses_what_cannot_come_back_and_says_why() {
        let releases = history();
        let live = ReleaseId::new("r3");
        let refused = |id: &str| {
            rollback_target(&app(), &releases, Some(&live), Some(&ReleaseId::new(id))).unwrap_err()
        };
        assert!(matches!(
            refused("r9"),
            RollbackRefused::NoSuchRelease { .. }
        ));
        assert!(matches!(refused("r4"), RollbackRefused::NeverLive { .. }));
        assert_eq!(refused("r3"), RollbackRefused::AlreadyLive(live.clone()));
        let only_one = &releases[1..2];
        assert_eq!(
            rollback_target(&app(), only_one, Some(&live), None).unwrap_err(),
            RollbackRefused::NothingEarlier(app())
        );
    }
}
