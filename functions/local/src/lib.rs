//! `runway`: every Runway function in one process on the embedded adapters — the API, the
//! ingress, the worker fed by the local queue, cleanup on a timer, and the proxy that serves
//! each app at `http://APP.localhost:PORT/`.

use std::collections::HashMap;
use std::time::Duration;

use runway_core::domain::ReleaseState;
use runway_core::ports::{DeploySpec, Platform, PlatformError, SecretStore, Store, Topic};
use runway_embedded::proxy::{Proxy, app_from_host};
use runway_embedded::{Embedded, EmbeddedConfig, PushSubscription, RetryPolicy};
use runway_http::origin::AllowedHosts;
use runway_http::serve::ServeOptions;
use runway_http::{Router, serve};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

/// Every function's routes, on every embedded adapter.
pub fn router(embedded: &Embedded) -> Router {
    let adapters = embedded.adapters();
    let all_wired = "the embedded backend wires every port";
    runway_submit::router(runway_submit::State::new(&adapters).expect(all_wired))
        .merge(runway_github_webhook::router(
            runway_github_webhook::State::new(&adapters).expect(all_wired),
        ))
        .merge(runway_status::router(
            runway_status::State::new(&adapters).expect(all_wired),
        ))
        .merge(runway_worker::router(
            runway_worker::State::new(&adapters).expect(all_wired),
        ))
        .merge(runway_cleanup::router(
            runway_cleanup::State::new(&adapters).expect(all_wired),
        ))
        .merge(runway_http::metrics::routes(Some(
            embedded.queue.metrics_source(),
        )))
}

/// Runs Runway on `listener` until `shutdown` resolves, then stops every app.
pub async fn run(
    config: EmbeddedConfig,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let port = listener.local_addr()?.port();
    let embedded = Embedded::open(config, port)?;
    embedded.announce_address()?;
    let app = runway_http::layers::app(router(&embedded));
    let proxy = Proxy::new(embedded.routes.clone());
    let hosts = AllowedHosts::loopback(port, &embedded.config.allowed_hosts);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let subscription = |name: &str, path: &str| PushSubscription {
        name: name.to_owned(),
        endpoint: format!("{}{path}", embedded.public_url),
        token: embedded.push_token.token().to_owned(),
    };
    let subscriptions = HashMap::from([
        (
            Topic::DeployRequests,
            subscription("worker-deploy-requests", "/pubsub/deploy-requests"),
        ),
        (
            Topic::BuildEvents,
            subscription("worker-build-events", "/pubsub/build-events"),
        ),
        (
            Topic::Notifications,
            subscription("worker-notifications", "/pubsub/notifications"),
        ),
    ]);
    // Before any work is taken: what the last run left building is deployed or built again.
    let cleanup_state = runway_cleanup::State::new(&embedded.adapters())
        .expect("the embedded backend wires every port");
    runway_cleanup::resume_builds(&cleanup_state).await;
    let dispatcher = tokio::spawn(embedded.queue.clone().run_dispatcher(
        subscriptions,
        RetryPolicy::default(),
        stopped(stop_rx.clone()),
    ));
    let cleanup = tokio::spawn(cleanup_timer(
        cleanup_state,
        embedded.config.cleanup_interval,
        stopped(stop_rx.clone()),
    ));
    tokio::spawn(restore_live_apps(embedded.clone()));

    println!("runway: listening on {}", embedded.public_url);
    println!("runway: apps are served at http://APP.localhost:{port}/");
    serve(
        listener,
        move |request, peer| {
            let (app, proxy, hosts) = (app.clone(), proxy.clone(), hosts.clone());
            async move {
                let host = request
                    .headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                match app_from_host(&host) {
                    Some(app) => proxy.forward(app, request, peer).await,
                    // A page whose name resolves to 127.0.0.1 is not Runway's page.
                    None if !hosts.allows(&host) => hosts.refuse(&host),
                    None => match app.oneshot(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    },
                }
            }
        },
        shutdown,
        ServeOptions::default(),
    )
    .await;
    let _ = stop_tx.send(true);
    let _ = tokio::join!(dispatcher, cleanup);
    embedded.platform.shutdown().await;
    tracing::info!("runway stopped");
    Ok(())
}

async fn cleanup_timer(
    state: runway_cleanup::State,
    interval: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut interval = tokio::time::interval(interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = interval.tick() => { runway_cleanup::run(&state).await; }
        }
    }
}

/// After a restart, serves every app's live release again.
async fn restore_live_apps(embedded: Embedded) {
    let deployments = match embedded.store.deployments().await {
        Ok(deployments) => deployments,
        Err(error) => {
            tracing::error!(%error, "could not list apps to restore");
            return;
        }
    };
    for deployment in deployments {
        let Some(live_id) = &deployment.live_release else {
            continue;
        };
        let Ok(Some(release)) = embedded.store.release(live_id).await else {
            continue;
        };
        let (Some(image), ReleaseState::Live) = (release.image.clone(), release.state) else {
            continue;
        };
        // The secrets it ran with; releases from before they were recorded, the newest.
        let secrets = match release.secrets.clone() {
            Some(recorded) => Some(runway_core::ports::SecretRef(recorded)),
            None => embedded
                .secrets
                .reference(&deployment.app)
                .await
                .ok()
                .flatten(),
        };
        let spec = DeploySpec::new(&deployment, &release, image, secrets);
        match embedded.platform.deploy(spec).await {
            Ok(deployed) => tracing::info!(app = %deployment.app, url = %deployed.url, "restored"),
            // A newer release went live meanwhile (the dispatcher runs beside this).
            Err(PlatformError::Superseded(why)) => {
                tracing::info!(app = %deployment.app, why, "not restored")
            }
            Err(error) => tracing::error!(app = %deployment.app, %error, "could not restore"),
        }
    }
}
