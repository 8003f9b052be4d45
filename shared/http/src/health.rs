//! `GET /health` (alive) and `GET /ready` (each dependency reachable, by name), which every
//! function serves.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use futures_util::future::{BoxFuture, join_all};
use http::StatusCode;
use serde_json::{Map, Value, json};

use crate::{Response, Router, json};

/// One dependency `/ready` checks.
#[derive(Clone)]
pub struct Probe {
    pub name: &'static str,
    check: Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>,
}

impl Probe {
    pub fn new<F, Fut, E>(name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let check = Arc::new(check);
        Self {
            name,
            check: Arc::new(move || {
                let check = check.clone();
                Box::pin(async move { check().await.map_err(|error| error.to_string()) })
            }),
        }
    }
}

/// How long one readiness check may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Adds `GET /health` and `GET /ready` to `router`.
pub fn with_health(router: Router, probes: Vec<Probe>) -> Router {
    let health = axum::Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(Arc::new(probes));
    router.merge(health)
}

async fn health() -> Response {
    json(StatusCode::OK, &json!({ "status": "ok" }))
}

/// 200 when every dependency answered, else 503; each dependency is named with its state.
async fn ready(State(probes): State<Arc<Vec<Probe>>>) -> Response {
    let checks = probes.iter().map(|probe| async move {
        let state = match tokio::time::timeout(PROBE_TIMEOUT, (probe.check)()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        };
        (probe.name, state)
    });
    let results = join_all(checks).await;
    let ready = results.iter().all(|(_, state)| state.is_ok());
    let dependencies: Map<String, Value> = results
        .into_iter()
        .map(|(name, state)| {
            // The reason goes to the log, not the answer: `/ready` of the public ingress is
            // anyone's to read, and a dependency's error text names hosts, projects and more.
            let value = match state {
                Ok(()) => json!({ "state": "ok" }),
                Err(error) => {
                    tracing::warn!(dependency = name, %error, "not ready");
                    json!({ "state": "unavailable" })
                }
            };
            (name.to_owned(), value)
        })
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(
        status,
        &json!({ "ready": ready, "dependencies": dependencies }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    /// Anyone may ask the public ingress whether it is ready: the answer names the dependency
    /// that is not, and nothing of why (hosts, projects, credentials' names).
    #[tokio::test]
    async fn ready_names_what_is_unavailable_and_keeps_why_to_the_log() {
        let probes = vec![
            Probe::new("store", || async { Ok::<(), String>(()) }),
            Probe::new("queue", || async {
                Err::<(), _>("connecting to 10.1.2.3:8085 for projects/acme-internal failed")
            }),
        ];
        let app = with_health(Router::new(), probes);
        let request = http::Request::get("/ready")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains("\"queue\":{\"state\":\"unavailable\"}"),
            "{body}"
        );
        assert!(
            !body.contains("10.1.2.3") && !body.contains("acme-internal"),
            "{body}"
        );
    }
}
