use async_trait::async_trait;
use http::HeaderMap;

use crate::domain::Caller;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// No or bad credentials; the message says which, never echoing a token.
    #[error("{0}")]
    Unauthenticated(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Who is calling: the IAP user on Google Cloud, the configured user locally.
#[async_trait]
pub trait Identity: Send + Sync {
    async fn caller(&self, headers: &HeaderMap) -> Result<Caller, IdentityError>;
}

/// The token of an `Authorization: Bearer …` header, if there is one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
}
