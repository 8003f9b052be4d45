//! Runway's composition root: turns a function's environment into its adapters and serves it.
//!
//! `RUNWAY_BACKEND` picks the adapters: `embedded` (the default: SQLite, local processes, files,
//! all under `RUNWAY_DATA_DIR`) or `gcp` (Firestore, Pub/Sub, Cloud Build, Cloud Run, Secret
//! Manager, IAP and OIDC, GitHub), built from the variables `infra/run.tf` sets. The function
//! is served on `$PORT` with `GET /health` and `GET /ready`, and on SIGTERM stops taking
//! connections and finishes the requests in flight.

mod gcp_env;

use std::process::ExitCode;

use anyhow::Context;
use runway_core::adapters::{Adapters, Need};
use runway_core::config;
use runway_embedded::{Embedded, EmbeddedConfig};
use runway_http::Router;
use runway_http::health::{Probe, with_health};
use runway_http::metrics::{self, QueueStats};

pub use gcp_env::GcpEnv;

/// `main` of a function binary: wires the adapters `needs` names on the chosen backend, and
/// serves the routes `router` makes from them. A function that cannot start logs why (one
/// line, no backtrace) and exits with 1.
pub fn serve(
    name: &'static str,
    needs: &'static [Need],
    router: impl FnOnce(&Adapters) -> anyhow::Result<Router>,
) -> ExitCode {
    runway_http::telemetry::init();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(name, needs, router)));
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

async fn run(
    name: &'static str,
    needs: &'static [Need],
    router: impl FnOnce(&Adapters) -> anyhow::Result<Router>,
) -> anyhow::Result<()> {
    let port: u16 = config::parse_or("PORT", 8080)?;
    let backend = backend()?;
    // Cloud Run sends requests to the container's every interface; on a laptop, the embedded
    // backend (no IAP, the local user an admin) answers loopback only.
    let interface = match backend.as_str() {
        "gcp" => "0.0.0.0",
        _ => "127.0.0.1",
    };
    let listener = tokio::net::TcpListener::bind((interface, port)).await?;
    let (adapters, probes, metrics) = match backend.as_str() {
        "gcp" => {
            let (adapters, probes) = GcpEnv::from_env()?.adapters(name, needs).await?;
            // Pub/Sub reports its own queue's depth and age.
            (adapters, probes, Metrics::OnLoopbackPort)
        }
        "embedded" => {
            let port = listener.local_addr()?.port();
            let embedded = Embedded::open(EmbeddedConfig::from_env()?, port)?;
            let adapters = embedded.adapters();
            let probes = embedded_probes(&adapters)?;
            let metrics = Metrics::OnMainPort(embedded.queue.metrics_source());
            (adapters, probes, metrics)
        }
        other => anyhow::bail!("RUNWAY_BACKEND is {other:?}; it must be gcp or embedded"),
    };
    let mut router = with_health(router(&adapters)?, probes);
    match metrics {
        Metrics::OnMainPort(queue) => router = router.merge(metrics::routes(Some(queue))),
        Metrics::OnLoopbackPort => serve_metrics_on_loopback().await?,
    }
    tracing::info!(function = name, port, backend, "serving");
    runway_http::serve_router(router, listener, runway_http::shutdown_signal()).await;
    tracing::info!(function = name, "stopped");
    Ok(())
}

/// Where a function answers `/metrics`.
enum Metrics {
    /// Beside its routes: the embedded backend answers loopback only.
    OnMainPort(QueueStats),
    /// On Cloud Run the main port is the internet's (the webhook's ingress is public): metrics
    /// go to `127.0.0.1:$RUNWAY_METRICS_PORT`, which only the instance's own containers reach
    /// (the Managed Service for Prometheus sidecar that `infra/run.tf` adds scrapes it).
    OnLoopbackPort,
}

/// Serves `/metrics` alone on `127.0.0.1:$RUNWAY_METRICS_PORT`, unless that is unset or 0.
async fn serve_metrics_on_loopback() -> anyhow::Result<()> {
    let port: u16 = config::parse_or("RUNWAY_METRICS_PORT", 0)?;
    if port == 0 {
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("binding RUNWAY_METRICS_PORT {port} on 127.0.0.1"))?;
    tokio::spawn(runway_http::serve_router(
        metrics::routes(None),
        listener,
        runway_http::shutdown_signal(),
    ));
    Ok(())
}

/// `RUNWAY_BACKEND`, `embedded` unless set. Not on Cloud Run (`K_SERVICE` set): there the
/// embedded backend would serve with no IAP in front and everyone an admin, so a missing
/// variable stops the function instead (fail closed).
fn backend() -> anyhow::Result<String> {
    if let Ok(backend) = config::var("RUNWAY_BACKEND") {
        return Ok(backend);
    }
    if let Ok(service) = config::var("K_SERVICE") {
        anyhow::bail!(
            "RUNWAY_BACKEND is not set, and this is Cloud Run (K_SERVICE={service}): set \
             RUNWAY_BACKEND=gcp (infra/run.tf does); the embedded backend is for a laptop"
        );
    }
    Ok("embedded".to_owned())
}

/// The embedded backend's one dependency: its database.
fn embedded_probes(adapters: &Adapters) -> anyhow::Result<Vec<Probe>> {
    let store = adapters.store()?;
    Ok(vec![Probe::new("store", move || {
        let store = store.clone();
        async move { store.audit(None, 0, 1).await.map(|_| ()) }
    })])
}
