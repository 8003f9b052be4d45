//! The one place errors become responses: `{"error": "...", "field": "..."}` with the right
//! status, for the handlers' errors and for what the framework itself refuses (no route, wrong
//! method, body too large, too slow).

use axum::response::IntoResponse;
use http::{StatusCode, header};
use serde_json::json;

use runway_core::domain::FieldError;

use crate::{Response, json};

/// Errors as the API reports them, each with the status it answers.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest {
        field: Option<&'static str>,
        message: String,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("the request body is larger than this endpoint accepts")]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A dependency is down; the caller may retry.
    #[error("{0}")]
    Unavailable(String),
    /// A dependency is down and is not asked again before `retry_after`: 503 with
    /// `Retry-After`.
    #[error("{message}")]
    UnavailableFor {
        message: String,
        retry_after: std::time::Duration,
    },
    /// The disk Runway writes to is full: 507, and nothing was written. Not retried by itself:
    /// someone must make room first.
    #[error("{0}")]
    InsufficientStorage(String),
    /// A dependency refuses more calls for a while: 429 with `Retry-After`.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after: std::time::Duration,
    },
    /// Anything unexpected: logged with its cause chain, reported as an opaque 500.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(field: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            field: Some(field),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) | Self::UnavailableFor { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (message, field) = match &self {
            Self::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "internal error");
                ("internal error; see the server log".to_owned(), None)
            }
            Self::Unavailable(message) | Self::UnavailableFor { message, .. } => {
                tracing::warn!(%message, "dependency unavailable");
                (message.clone(), None)
            }
            Self::InsufficientStorage(message) => {
                tracing::error!(%message, "the disk is full");
                (message.clone(), None)
            }
            Self::BadRequest { field, message } => (message.clone(), *field),
            other => (other.to_string(), None),
        };
        let mut response = json(status, &json!({ "error": message, "field": field }));
        if let Self::TooManyRequests { retry_after, .. }
        | Self::UnavailableFor { retry_after, .. } = &self
        {
            // Whole seconds, rounded up: a client never asks again too soon.
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.max(1).into());
        }
        response
    }
}

impl From<FieldError> for ApiError {
    fn from(error: FieldError) -> Self {
        Self::BadRequest {
            field: Some(error.field),
            message: error.to_string(),
        }
    }
}

/// Gives the framework's own refusals (no route, wrong method, a body over the limit, a
/// request that ran out of time) the API's JSON shape, keeping their status and headers
/// (`Allow` on 405). Responses that are already JSON, and successes, pass unchanged.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let message = match status {
        StatusCode::NOT_FOUND => "no such route".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed.to_string(),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge.to_string(),
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => {
            "the request took too long; try again".to_owned()
        }
        other => other
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_owned(),
    };
    let (parts, _) = response.into_parts();
    let mut answer = json(status, &json!({ "error": message, "field": null }));
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

// Port errors as API errors: retryable ones become 503, the rest stay opaque 500s.
impl From<runway_core::ports::LogError> for ApiError {
    fn from(error: runway_core::ports::LogError) -> Self {
        use runway_core::ports::LogError;
        match error {
            LogError::Throttled {
                message,
                retry_after,
            } => Self::TooManyRequests {
                message,
                retry_after,
            },
            error @ LogError::Unavailable(_) => Self::Unavailable(error.to_string()),
            LogError::Other(error) => Self::Internal(error),
        }
    }
}

impl From<runway_core::ports::StoreError> for ApiError {
    fn from(error: runway_core::ports::StoreError) -> Self {
        use runway_core::ports::StoreError;
        match error {
            StoreError::NotFound(what) => Self::NotFound(format!("{what} not found")),
            StoreError::Conflict(message) => Self::Conflict(message),
            StoreError::Unavailable(message) => {
                Self::Unavailable(format!("the store is unavailable, try again ({message})"))
            }
            StoreError::Full(message) => Self::InsufficientStorage(format!(
                "Runway's disk is full, so nothing was recorded: make room where its data is \
                 kept, then try again (a push: Redeliver it on GitHub, or push again) ({message})"
            )),
            StoreError::Other(error) => Self::Internal(error),
        }
    }
}

impl From<runway_core::ports::QueueError> for ApiError {
    fn from(error: runway_core::ports::QueueError) -> Self {
        match error {
            runway_core::ports::QueueError::Unavailable(message) => Self::Unavailable(message),
            runway_core::ports::QueueError::Other(error) => Self::Internal(error),
        }
    }
}

impl From<runway_core::ports::SecretStoreError> for ApiError {
    fn from(error: runway_core::ports::SecretStoreError) -> Self {
        match error {
            runway_core::ports::SecretStoreError::Unavailable(message) => {
                Self::Unavailable(message)
            }
            runway_core::ports::SecretStoreError::Other(error) => Self::Internal(error),
        }
    }
}

impl From<runway_core::ports::PlatformError> for ApiError {
    fn from(error: runway_core::ports::PlatformError) -> Self {
        use runway_core::ports::PlatformError;
        match error {
            PlatformError::NotReady(message) | PlatformError::Unavailable(message) => {
                Self::Unavailable(message)
            }
            PlatformError::Conflict(message) | PlatformError::Superseded(message) => {
                Self::Conflict(message)
            }
            PlatformError::Other(error) => Self::Internal(error),
        }
    }
}

impl From<runway_core::ports::BuildError> for ApiError {
    fn from(error: runway_core::ports::BuildError) -> Self {
        use runway_core::ports::BuildError;
        match error {
            BuildError::NotFound(message) => Self::NotFound(message),
            BuildError::Unavailable(message) => Self::Unavailable(message),
            BuildError::Other(error) => Self::Internal(error),
        }
    }
}

impl From<runway_core::removal::RemoveError> for ApiError {
    fn from(error: runway_core::removal::RemoveError) -> Self {
        use runway_core::removal::RemoveError;
        match error {
            RemoveError::Platform(error) => error.into(),
            RemoveError::Builder(error) => error.into(),
            RemoveError::Secrets(error) => error.into(),
            RemoveError::Store(error) => error.into(),
        }
    }
}

impl From<runway_core::releases::EnqueueError> for ApiError {
    fn from(error: runway_core::releases::EnqueueError) -> Self {
        match error {
            runway_core::releases::EnqueueError::Store(error) => error.into(),
        }
    }
}

/// A forge error about a field the user gave: their mistake is a 400 on that field.
pub fn forge_error(field: &'static str, error: runway_core::ports::ForgeError) -> ApiError {
    use runway_core::ports::ForgeError;
    match error {
        ForgeError::NotFound(message) | ForgeError::Rejected(message) => {
            ApiError::bad_request(field, message)
        }
        ForgeError::Unavailable(message) => ApiError::Unavailable(message),
        ForgeError::Other(error) => ApiError::Internal(error),
    }
}
