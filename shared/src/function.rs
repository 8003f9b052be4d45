//! The body of every function binary: pick the adapters (`RUNWAY_BACKEND`: `embedded`, the
//! default, or `gcp` as on Cloud Run), serve the function's routes on `$PORT` with `GET /health`
//! (alive) and `GET /ready` (each dependency reachable, by name), and on SIGTERM stop taking
//! connections and finish the requests in flight.

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, join_all};
use http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::config;
use crate::gcp::GcpEnv;
use crate::http::{ApiResult, Params, Request, Router, json};
use crate::local::{Embedded, EmbeddedConfig};
use crate::ports::Store;

/// Which adapters a function runs on.
pub enum Backend<'a> {
    Embedded(&'a Embedded),
    Gcp(&'a GcpEnv),
}

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

/// A function's routes and the dependencies its readiness depends on.
pub struct Service {
    pub router: Router,
    pub probes: Vec<Probe>,
}

/// How long one readiness check may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs function `name`: `build` makes its service from the chosen backend. A function that
/// cannot start logs why (one line, no backtrace) and exits with 1.
pub fn serve<B>(name: &'static str, build: B) -> ExitCode
where
    B: AsyncFnOnce(Backend<'_>) -> anyhow::Result<Service>,
{
    crate::telemetry::init();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(name, build)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(
                function = name,
                error = format!("{error:#}"),
                "cannot start"
            );
            ExitCode::FAILURE
        }
    }
}

async fn run<B>(name: &'static str, build: B) -> anyhow::Result<()>
where
    B: AsyncFnOnce(Backend<'_>) -> anyhow::Result<Service>,
{
    {
        let port: u16 = config::parse_or("PORT", 8080)?;
        let backend = config::var_or("RUNWAY_BACKEND", "embedded");
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
        let service = match backend.as_str() {
            "gcp" => {
                let env = GcpEnv::from_env()?;
                build(Backend::Gcp(&env)).await?
            }
            "embedded" => {
                let port = listener.local_addr()?.port();
                let embedded = Embedded::open(EmbeddedConfig::from_env()?, port)?;
                build(Backend::Embedded(&embedded)).await?
            }
            other => anyhow::bail!("RUNWAY_BACKEND is {other:?}; it must be gcp or embedded"),
        };
        tracing::info!(function = name, port, backend, "serving");
        let router = with_health(service.router, service.probes);
        crate::http::serve_router(router, listener, crate::http::shutdown_signal()).await;
        tracing::info!(function = name, "stopped");
        Ok(())
    }
}

/// `main` of a function binary: its state on the embedded backend (`embedded`) or on Google
/// Cloud (`cloud`, with the probes `/ready` runs), served through `router`.
pub fn serve_state<S>(
    name: &'static str,
    embedded: fn(&Embedded) -> S,
    cloud: impl AsyncFnOnce(&GcpEnv) -> anyhow::Result<(S, Vec<Probe>)>,
    router: fn(S) -> Router,
) -> ExitCode {
    serve(name, async |backend| {
        let (state, probes) = match backend {
            Backend::Embedded(e) => (embedded(e), embedded_probes(e)),
            Backend::Gcp(env) => cloud(env).await?,
        };
        Ok(Service {
            router: router(state),
            probes,
        })
    })
}

/// Adds `GET /health` and `GET /ready` to `router`.
pub fn with_health(router: Router, probes: Vec<Probe>) -> Router {
    router.route(Method::GET, "/health", (), health).route(
        Method::GET,
        "/ready",
        Arc::new(probes),
        ready,
    )
}

async fn health((): (), _: Request, _: Params) -> ApiResult {
    Ok(json(StatusCode::OK, &json!({ "status": "ok" })))
}

/// 200 when every dependency answered, else 503; each dependency is named with its state.
async fn ready(probes: Arc<Vec<Probe>>, _: Request, _: Params) -> ApiResult {
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
            let value = match state {
                Ok(()) => json!({ "state": "ok" }),
                Err(error) => json!({ "state": "unavailable", "error": error }),
            };
            (name.to_owned(), value)
        })
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok(json(
        status,
        &json!({ "ready": ready, "dependencies": dependencies }),
    ))
}

/// The embedded backend's one dependency: its database.
pub fn embedded_probes(embedded: &Embedded) -> Vec<Probe> {
    let store = embedded.store.clone();
    vec![Probe::new("store", move || {
        let store = store.clone();
        async move { store.audit(None, 1).await.map(|_| ()) }
    })]
}

/// Probes for the Google Cloud adapters a function holds.
pub mod gcp_probes {
    use super::Probe;
    use crate::gcp::{FirestoreStore, PubSubQueue, SecretManagerStore};
    use crate::ports::Topic;

    pub fn store(store: &FirestoreStore) -> Probe {
        let store = store.clone();
        Probe::new("firestore", move || {
            let store = store.clone();
            async move { store.ping().await }
        })
    }

    pub fn queue(queue: &PubSubQueue) -> Probe {
        let queue = queue.clone();
        Probe::new("pubsub", move || {
            let queue = queue.clone();
            async move { queue.check(Topic::DeployRequests).await }
        })
    }

    pub fn secrets(secrets: &SecretManagerStore) -> Probe {
        let secrets = secrets.clone();
        Probe::new("secret-manager", move || {
            let secrets = secrets.clone();
            async move { secrets.check().await }
        })
    }
}
