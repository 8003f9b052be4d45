//! Extractors that answer in the API's error shape: the authenticated caller, path parameters
//! and the raw body (under the route's `RequestBodyLimitLayer`).

use axum::extract::{FromRequest, FromRequestParts, Request};
use bytes::Bytes;
use http::request::Parts;
use serde::de::DeserializeOwned;

use runway_core::domain::Caller;
use runway_core::ports::{Identity, IdentityError};

use crate::ApiError;

/// A function's state names who may call it: IAP users, Pub/Sub push, Cloud Scheduler…
pub trait Authenticates {
    fn identity(&self) -> &dyn Identity;
}

/// The caller, or 401 naming what is wrong with the credentials. Put it first among a
/// handler's extractors: nothing else is read from a request that is refused.
pub struct Authenticated(pub Caller);

impl<S> FromRequestParts<S> for Authenticated
where
    S: Authenticates + Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        authenticate(state.identity(), &parts.headers)
            .await
            .map(Authenticated)
    }
}

/// The caller `identity` finds in `headers`, or 401.
pub async fn authenticate(
    identity: &dyn Identity,
    headers: &http::HeaderMap,
) -> Result<Caller, ApiError> {
    identity.caller(headers).await.map_err(|error| match error {
        IdentityError::Unauthenticated(message) => ApiError::Unauthorized(message),
        IdentityError::Other(error) => ApiError::Internal(error),
    })
}

/// `axum::extract::Path`, refusing with the API's 400.
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection| ApiError::BadRequest {
                field: None,
                message: rejection.body_text(),
            })
    }
}

/// The whole request body, within the limit the route's `DefaultBodyLimit` sets (413 beyond
/// it). The body is read up to the limit before the refusal, so a client still sending gets the
/// 413 rather than a connection closed under it.
pub struct Body(pub Bytes);

impl<S> FromRequest<S> for Body
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(request, state)
            .await
            .map(Body)
            .map_err(|rejection| {
                if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::BadRequest {
                        field: None,
                        message: format!(
                            "could not read the request body: {}",
                            rejection.body_text()
                        ),
                    }
                }
            })
    }
}
