//! Runway's HTTP layer, shared by every function and by `runway`: axum routing on hyper, the
//! one place errors become responses (`ApiError`), extractors that answer in that shape, the
//! layers every request goes through (request id, trace span, per-route body limits and
//! deadlines), rate limits per key and the source address a request came from, a server loop
//! that bounds the request head and drains on shutdown, `/health`, `/ready` and `/metrics`, logging, and the
//! wire formats that arrive over HTTP (Pub/Sub push, GitHub webhooks).

pub mod error;
pub mod extract;
pub mod health;
pub mod layers;
pub mod limit;
pub mod metrics;
pub mod origin;
pub mod push;
pub mod serve;
pub mod source;
pub mod telemetry;
pub mod webhook;

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use serde::Serialize;

pub use error::{ApiError, forge_error};
pub use extract::{Authenticated, Authenticates, Body, Path, authenticate};
pub use layers::{Limits, limits};
pub use serve::{serve, serve_router, shutdown_signal};

/// Every function's routes, with its state already given (`Router::with_state`).
pub type Router = axum::Router;
pub type Request = axum::extract::Request;
pub type Response = axum::response::Response;

/// A handler's outcome; `ApiError` becomes the JSON error response.
pub type ApiResult<T = Response> = Result<T, ApiError>;

pub fn full(bytes: impl Into<Bytes>) -> axum::body::Body {
    axum::body::Body::from(bytes.into())
}

pub fn empty() -> axum::body::Body {
    axum::body::Body::empty()
}

pub fn json(status: StatusCode, value: &impl Serialize) -> Response {
    let body = serde_json::to_vec(value).expect("serializing a response cannot fail");
    with_type(status, "application/json", body)
}

pub fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response {
    let mut response = http::Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Reads the whole body, refusing more than `limit` bytes with 413 (for servers without the
/// route layers, like the tests' fakes).
pub async fn read_body(request: Request, limit: usize) -> Result<Bytes, ApiError> {
    let body = Limited::new(request.into_body(), limit);
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge)
        }
        Err(error) => Err(ApiError::BadRequest {
            field: None,
            message: format!("could not read the request body: {error}"),
        }),
    }
}

/// Parses a JSON body into `T`, with a message that says where it went wrong.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|error| ApiError::BadRequest {
        field: None,
        message: format!("request body is not valid JSON for this endpoint: {error}"),
    })
}
