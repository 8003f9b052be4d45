//! Queueing a release, shared by submit (manual, rollback), the ingress (push) and cleanup
//! (the outbox sweep).

use crate::clock::Clock;
use crate::domain::{AuditEntry, NewRelease, Release};
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
    action: &str,
    app: Option<&str>,
    detail: String,
) {
    let entry = AuditEntry {
        at: clock.now(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        app: app.map(str::to_owned),
        detail,
    };
    if let Err(error) = store.append_audit(&entry).await {
        tracing::error!(%error, action, "could not write the audit trail");
    }
}
