//! What every request goes through, as tower layers: a request id (taken from
//! `X-Request-Id` or made, and sent back), a span carrying it and Cloud Run's trace id (so every
//! log line of a request can be found together), the refusal of other sites' pages
//! (`origin::same_origin`), and the API's error shape for what the framework refuses. Per-route limits (`limits`) are set by each function on its routes.

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use http::{HeaderName, StatusCode};
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::Router;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// `router` with a 404 for unknown paths and the layers every request goes through.
pub fn app(router: Router) -> Router {
    router
        .fallback(|| async { crate::ApiError::NotFound("no such route".into()) })
        .layer(axum::middleware::from_fn(crate::origin::same_origin))
        .layer(axum::middleware::map_response(crate::error::json_errors))
        .layer(axum::middleware::from_fn(crate::metrics::record))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(span))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
        )
}

/// The span of one request: method, path, request id, and on Cloud Run the trace id from
/// `X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=1`.
fn span(request: &Request) -> tracing::Span {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    let trace = header("x-cloud-trace-context")
        .and_then(|value| value.split('/').next())
        .filter(|id| !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit()));
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = header(REQUEST_ID.as_str()).unwrap_or_default(),
        trace = trace.unwrap_or_default(),
    )
}

/// How much a group of routes accepts: a body limit and a deadline for the whole request,
/// applied by `limits`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub body: usize,
    pub timeout: Duration,
}

/// `routes` with `limits`: larger bodies get 413, slower requests 504.
///
/// The body limit is axum's `DefaultBodyLimit`, which the `Body` extractor enforces while it
/// reads, not tower-http's `RequestBodyLimitLayer`: that one answers 413 on the
/// `Content-Length` alone, and hyper then closes the connection while the client is still
/// sending, so the client sees a broken pipe instead of the 413 (a test caught it).
pub fn limits(routes: Router, limits: Limits) -> Router {
    routes
        .layer(DefaultBodyLimit::max(limits.body))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            limits.timeout,
        ))
}
