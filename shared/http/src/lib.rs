//! Runway's HTTP layer, shared by every function and by `runway`: a path router on `matchit`,
//! the one place errors become responses, body limits, a server loop that drains in-flight
//! requests on shutdown, `/health` and `/ready`, logging, and the wire formats that arrive over
//! HTTP (Pub/Sub push, GitHub webhooks).

pub mod health;
pub mod push;
pub mod telemetry;
pub mod webhook;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::TcpListener;

use runway_core::domain::FieldError;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;
pub type Request = http::Request<Incoming>;
pub type Response = http::Response<Body>;
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A handler's outcome; `ApiError` becomes the JSON error response.
pub type ApiResult = Result<Response, ApiError>;

/// The path parameters of a matched route (`{app}` in `/api/deployments/{app}`).
#[derive(Clone, Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .unwrap_or_default()
    }
}

type Handler = Arc<dyn Fn(Request, Params) -> BoxFuture<Response> + Send + Sync>;

/// Routes by path, then by method. Functions build one each; `runway` merges them all.
#[derive(Clone, Default)]
pub struct Router {
    routes: HashMap<String, HashMap<Method, Handler>>,
    matcher: matchit::Router<String>,
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `handler` for `method` on `path`; the handler gets a clone of `state`.
    pub fn route<S, F, Fut>(mut self, method: Method, path: &str, state: S, handler: F) -> Self
    where
        S: Clone + Send + Sync + 'static,
        F: Fn(S, Request, Params) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ApiResult> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let handler: Handler = Arc::new(move |request, params| {
            let (state, handler) = (state.clone(), handler.clone());
            Box::pin(async move {
                handler(state, request, params)
                    .await
                    .unwrap_or_else(ApiError::into_response)
            })
        });
        self.insert(method, path, handler);
        self
    }

    fn insert(&mut self, method: Method, path: &str, handler: Handler) {
        if !self.routes.contains_key(path) {
            self.matcher
                .insert(path, path.to_owned())
                .unwrap_or_else(|e| panic!("route {path}: {e}"));
        }
        let previous = self
            .routes
            .entry(path.to_owned())
            .or_default()
            .insert(method.clone(), handler);
        assert!(previous.is_none(), "route {method} {path} defined twice");
    }

    /// All routes of both; a route defined in both is a programming error.
    pub fn merge(mut self, other: Router) -> Self {
        for (path, methods) in other.routes {
            for (method, handler) in methods {
                self.insert(method, &path, handler);
            }
        }
        self
    }

    pub async fn handle(&self, request: Request) -> Response {
        let Ok(matched) = self.matcher.at(request.uri().path()) else {
            return ApiError::NotFound(format!("no route for {}", request.uri().path()))
                .into_response();
        };
        let params = Params(
            matched
                .params
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        );
        let methods = &self.routes[matched.value];
        match methods.get(request.method()) {
            Some(handler) => handler(request, params).await,
            None => {
                let mut allowed: Vec<&str> = methods.keys().map(Method::as_str).collect();
                allowed.sort_unstable();
                let mut response = ApiError::MethodNotAllowed.into_response();
                if let Ok(value) = HeaderValue::from_str(&allowed.join(", ")) {
                    response.headers_mut().insert(header::ALLOW, value);
                }
                response
            }
        }
    }
}

/// Errors as the API reports them: `{"error": "...", "field": "..."}` with the right status.
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
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A dependency is down; the caller may retry.
    #[error("{0}")]
    Unavailable(String),
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
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn into_response(self) -> Response {
        let status = self.status();
        let (message, field) = match &self {
            Self::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "internal error");
                ("internal error; see the server log".to_owned(), None)
            }
            Self::Unavailable(message) => {
                tracing::warn!(%message, "dependency unavailable");
                (message.clone(), None)
            }
            Self::BadRequest { field, message } => (message.clone(), *field),
            other => (other.to_string(), None),
        };
        json(
            status,
            &serde_json::json!({ "error": message, "field": field }),
        )
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

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> Body {
    full(Bytes::new())
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

/// Reads the whole body, refusing more than `limit` bytes with 413.
pub async fn read_body(request: Request, limit: usize) -> Result<Bytes, ApiError> {
    let body = Limited::new(request.into_body(), limit);
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge(limit))
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

/// Serves `service` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// (up to `drain`). HTTP/1 with upgrades, so websockets pass through.
pub async fn serve<S, F>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) where
    S: Fn(Request, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = service.clone();
        let handler = hyper::service::service_fn(move |request| {
            let response = service(request, peer);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), handler)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: some requests were still running after {drain:?}");
    }
}

/// Serves `router` alone on `listener` until `shutdown`: what a function binary does.
pub async fn serve_router(
    router: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let router = Arc::new(router);
    let service = move |request, _peer| {
        let router = router.clone();
        async move { router.handle(request).await }
    };
    serve(listener, service, shutdown, Duration::from_secs(10)).await;
}

/// Resolves on SIGTERM (what Cloud Run sends) or Ctrl-C.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = terminate => {},
    }
}

/// The caller, or 401 naming what is wrong with the credentials.
pub async fn authenticate(
    identity: &dyn runway_core::ports::Identity,
    request: &Request,
) -> Result<runway_core::domain::Caller, ApiError> {
    use runway_core::ports::IdentityError;
    identity
        .caller(request.headers())
        .await
        .map_err(|error| match error {
            IdentityError::Unauthenticated(message) => ApiError::Unauthorized(message),
            IdentityError::Other(error) => ApiError::Internal(error),
        })
}

// Port errors as API errors: retryable ones become 503, the rest stay opaque 500s.
impl From<runway_core::ports::StoreError> for ApiError {
    fn from(error: runway_core::ports::StoreError) -> Self {
        use runway_core::ports::StoreError;
        match error {
            StoreError::NotFound(what) => Self::NotFound(format!("{what} not found")),
            StoreError::Conflict(message) => Self::Conflict(message),
            StoreError::Unavailable(message) => {
                Self::Unavailable(format!("the store is unavailable, try again ({message})"))
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn slow(delay: Duration, _: Request, _: Params) -> ApiResult {
        tokio::time::sleep(delay).await;
        Ok(json(StatusCode::OK, &"done"))
    }

    /// What every function does on SIGTERM: stop accepting, finish what is in flight.
    #[tokio::test]
    async fn shutdown_finishes_requests_in_flight_and_refuses_new_ones() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = Router::new().route(Method::GET, "/slow", Duration::from_millis(600), slow);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_router(router, listener, async {
            let _ = stopped.await;
        }));
        let in_flight = tokio::spawn(reqwest::get(format!("http://{address}/slow")));
        tokio::time::sleep(Duration::from_millis(200)).await;

        stop.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let refused = tokio::net::TcpStream::connect(address).await;

        let response = in_flight.await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "\"done\"");
        assert!(refused.is_err(), "a connection after shutdown was accepted");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server stops once the request is done")
            .unwrap();
    }
}
