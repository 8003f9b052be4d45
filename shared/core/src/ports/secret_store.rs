use async_trait::async_trait;

use crate::domain::{AppName, SecretsToml};

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
    async fn reference(&self, app: &AppName) -> Result<Option<SecretRef>, SecretStoreError>;
    async fn delete(&self, app: &AppName) -> Result<(), SecretStoreError>;
}
