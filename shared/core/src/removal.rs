//! Removing an app and everything Runway made for it: what submit does when its owner deletes
//! it, and cleanup when its repository has been gone past the grace period.

use crate::domain::Deployment;
use crate::ports::{
    BuildError, Forge, ImageBuilder, Platform, PlatformError, SecretStore, SecretStoreError, Store,
    StoreError,
};

/// The step that stopped a removal, with its port's error. The steps before it are done; the
/// removal can be asked again.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error(transparent)]
    Builder(#[from] BuildError),
    #[error(transparent)]
    Secrets(#[from] SecretStoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The ports an app lives in.
pub struct Remover<'a> {
    pub store: &'a dyn Store,
    pub platform: &'a dyn Platform,
    pub builder: &'a dyn ImageBuilder,
    pub secrets: &'a dyn SecretStore,
    pub forge: &'a dyn Forge,
}

impl Remover<'_> {
    /// Stops the app, then removes its images, secrets, webhook and records, in that order: a
    /// step that fails leaves the later ones undone, and asking again goes on from there. A
    /// hook that cannot be removed (its repository is gone, say) is handed to cleanup's
    /// orphan list, so it is never left behind where it still exists.
    ///
    /// An app's previews go first, each the same way: none is left running without its app.
    pub async fn remove(&self, deployment: &Deployment) -> Result<(), RemoveError> {
        if deployment.pull.is_none() {
            let of_repo = self.store.deployments_of_repo(deployment.repo_id).await?;
            for preview in of_repo
                .iter()
                .filter(|other| other.app.is_preview_of(&deployment.app))
            {
                self.remove_one(preview).await?;
            }
            self.secrets
                .delete(&deployment.app.previews_secrets())
                .await?;
        }
        self.remove_one(deployment).await
    }

    async fn remove_one(&self, deployment: &Deployment) -> Result<(), RemoveError> {
        let app = &deployment.app;
        self.platform.delete(app).await?;
        self.builder.delete_app(app).await?;
        self.secrets.delete(app).await?;
        if let Some(hook_id) = &deployment.webhook_id
            && let Err(error) = self.forge.delete_webhook(&deployment.repo, hook_id).await
        {
            tracing::warn!(%app, %error, "could not remove the webhook; cleanup will retry");
            self.store
                .add_orphan_hook(&deployment.repo.to_string(), hook_id)
                .await?;
        }
        self.store.delete_deployment(app).await?;
        // A build a worker started between the first removal and the records going (it claimed
        // the release before): it is stopped here, or by the worker, which finds the release
        // gone.
        if let Err(error) = self.builder.delete_app(app).await {
            tracing::warn!(%app, %error, "could not remove a build started as the app was deleted");
        }
        Ok(())
    }
}
