use async_trait::async_trait;

use crate::domain::{AppName, NotifyTargets, SecretsToml};

#[derive(Debug, thiserror::Error)]
pub enum SecretStoreError {
    #[error("secret store unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Where the platform finds an app's secrets: a file path locally, a secret version on Google
/// Cloud. Never the value itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRef(pub String);

/// Holds each app's secrets TOML. Values go in and, as a reference, out to the platform only.
#[async_trait]
pub trait SecretStore: Send + Sync {
    async fn put(
        &self,
        app: &AppName,
        secrets: &SecretsToml,
    ) -> Result<SecretRef, SecretStoreError>;
    /// The newest secrets of the app: what its next deploy runs with.
    async fn reference(&self, app: &AppName) -> Result<Option<SecretRef>, SecretStoreError>;
    /// Retires the app's older secrets that nothing will read again: every version but the
    /// newest and those in `keep` (what the app's releases deployed with, which the one serving
    /// reads and a rollback brings back). A store with one copy per app has nothing to retire.
    async fn retire(&self, _app: &AppName, _keep: &[SecretRef]) -> Result<(), SecretStoreError> {
        Ok(())
    }
    /// Replaces the app's notification targets (their URLs and keys are credentials, so they
    /// are kept here and not with the app's record); an empty list removes them.
    async fn put_notifications(
        &self,
        app: &AppName,
        targets: &NotifyTargets,
    ) -> Result<(), SecretStoreError>;
    /// The app's notification targets; none when it has none. Unlike the secrets TOML these
    /// are read back: the worker posts to them.
    async fn notifications(&self, app: &AppName) -> Result<NotifyTargets, SecretStoreError>;
    /// Removes everything the app kept here: its secrets and its notification targets.
    async fn delete(&self, app: &AppName) -> Result<(), SecretStoreError>;
}
