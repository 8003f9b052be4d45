//! Serving: hyper's HTTP/1 connections (with upgrades, so websockets pass through the local
//! proxy), a deadline for the request head, a cap on connections that a slowloris cannot fill
//! (at the cap, the oldest connection still sending its first head is cut for the new one), and
//! a graceful stop that lets requests in flight finish. axum's own `serve` sets neither the head deadline nor a bound on draining, so the
//! accept loop stays here; everything per request is a tower layer (`layers`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tower::ServiceExt;

use crate::{Request, Response, Router};

/// How a server treats its connections.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// How long a client may take to send a request's head (a slowloris client holds a
    /// connection and a task otherwise).
    pub header_read_timeout: Duration,
    /// How long a stopping server waits for the requests in flight.
    pub drain: Duration,
    /// How many connections it holds at once; more wait in the listen backlog until one
    /// closes (a flood of idle connections cannot take every task and file descriptor).
    pub max_connections: usize,
    /// At the cap, a connection that has not sent a whole request head for this long is cut
    /// to make room for a new one: slow heads cannot keep everyone else waiting for the whole
    /// `header_read_timeout`.
    pub slow_head_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(10),
            // Cloud Run sends an instance at most 1000 requests at once.
            max_connections: 1000,
            slow_head_grace: Duration::from_secs(1),
        }
    }
}

/// Serves `service` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// (up to `options.drain`).
pub async fn serve<S, F>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()>,
    options: ServeOptions,
) where
    S: Fn(Request, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let open = Arc::new(OpenConnections::default());
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            // Full: wait for a connection to close, or cut one still sending its first head.
            () = open.make_room(options.slow_head_grace) => continue,
            () = &mut shutdown => break,
        };
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
        let (id, headed, cut) = open.add();
        let handler = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            // hyper calls the service once a request's head is complete.
            headed.store(true, Ordering::Relaxed);
            let mut request = request.map(axum::body::Body::new);
            // Who sent it, for axum's `ConnectInfo` extractor (`source`).
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let response = service(request, peer);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), handler)
            .into_owned();
        let connection = graceful.watch(connection);
        let open = open.clone();
        tokio::spawn(async move {
            tokio::select! {
                ended = connection => if let Err(error) = ended {
                    tracing::debug!(%error, "connection ended with an error");
                },
                // Dropping the connection closes it.
                _ = cut => tracing::debug!(%peer, "cut a connection still sending its first head"),
            }
            open.remove(id);
            drop(slot);
        });
    }
    drop(listener);
    let drain = options.drain;
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: some requests were still running after {drain:?}");
    }
}

/// The connections being served, for cutting a slow one when there is no room.
#[derive(Default)]
struct OpenConnections {
    next: std::sync::atomic::AtomicU64,
    open: Mutex<HashMap<u64, Open>>,
}

struct Open {
    since: Instant,
    /// Whether it has sent a whole request head yet.
    headed: Arc<AtomicBool>,
    cut: Option<oneshot::Sender<()>>,
}

impl OpenConnections {
    fn add(&self) -> (u64, Arc<AtomicBool>, oneshot::Receiver<()>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let headed = Arc::new(AtomicBool::new(false));
        let (cut, cut_off) = oneshot::channel();
        let entry = Open {
            since: Instant::now(),
            headed: headed.clone(),
            cut: Some(cut),
        };
        self.lock().insert(id, entry);
        (id, headed, cut_off)
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Open>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cuts the oldest connection that has sent no whole head within `grace`, once there is
    /// one: a slowloris's, not a client's that is merely keeping its connection open. Pends
    /// while every connection is a client's; checks again every `grace / 4`.
    async fn make_room(&self, grace: Duration) {
        loop {
            let slowest = {
                let mut open = self.lock();
                open.iter_mut()
                    .filter(|(_, o)| {
                        !o.headed.load(Ordering::Relaxed) && o.since.elapsed() >= grace
                    })
                    .filter(|(_, o)| o.cut.is_some())
                    .min_by_key(|(_, o)| o.since)
                    .and_then(|(_, o)| o.cut.take())
            };
            if let Some(cut) = slowest {
                let _ = cut.send(());
                return;
            }
            tokio::time::sleep(grace / 4).await;
        }
    }
}

/// Serves `router` alone on `listener` until `shutdown`, with Runway's layers: what a
/// function binary does.
pub async fn serve_router(
    router: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let app = crate::layers::app(router);
    let service = move |request: Request, _peer| {
        let app = app.clone();
        async move {
            match app.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    };
    serve(listener, service, shutdown, ServeOptions::default()).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use http::StatusCode;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::json;

    /// What every function does on SIGTERM: stop accepting, finish what is in flight.
    #[tokio::test]
    async fn shutdown_finishes_requests_in_flight_and_refuses_new_ones() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(600)).await;
                json(StatusCode::OK, &"done")
            }),
        );
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

    /// A client that never finishes its request head is cut off, not kept forever.
    #[tokio::test]
    async fn a_client_that_sends_its_head_too_slowly_is_disconnected() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let options = ServeOptions {
            header_read_timeout: Duration::from_millis(300),
            ..ServeOptions::default()
        };
        serve_hello(listener, options);
        let mut slow = tokio::net::TcpStream::connect(address).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();

        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer))
            .await
            .expect("the server closes the connection");

        drop(read); // An end of stream or a reset: either way, the connection is gone.
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }

    /// Serves `GET /` → "hello" on `listener` with `options`, until the test ends.
    fn serve_hello(listener: TcpListener, options: ServeOptions) {
        let app = Router::new().route("/", get(|| async { "hello" }));
        tokio::spawn(serve(
            listener,
            move |request: Request, _| {
                let app = app.clone();
                async move { app.oneshot(request).await.unwrap() }
            },
            std::future::pending(),
            options,
        ));
    }

    /// What the server sends on `stream` within half a second, if anything.
    async fn answer(stream: &mut tokio::net::TcpStream) -> Option<String> {
        let mut buffer = vec![0; 1024];
        let read = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buffer)).await;
        read.ok()
            .and_then(Result::ok)
            .map(|n| String::from_utf8_lossy(&buffer[..n]).into_owned())
    }

    /// A slowloris filling every slot with heads it never finishes does not keep others out
    /// for the whole head deadline: at the cap, the oldest connection still sending its first
    /// head after the grace is cut for the next client.
    #[tokio::test]
    async fn slow_heads_filling_every_slot_do_not_keep_a_client_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let options = ServeOptions {
            max_connections: 8,
            header_read_timeout: Duration::from_secs(30),
            slow_head_grace: Duration::from_millis(200),
            ..ServeOptions::default()
        };
        serve_hello(listener, options);
        let mut slow = Vec::new();
        for _ in 0..8 {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            slow.push(stream);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;

        let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut served = None;
        for _ in 0..6 {
            served = served.or(answer(&mut client).await);
        }

        assert!(
            served
                .as_deref()
                .is_some_and(|a| a.starts_with("HTTP/1.1 200")),
            "{served:?}"
        );
    }

    /// Past its connection cap the server takes no more until one closes: a flood of idle
    /// connections waits in the backlog instead of taking a task and a descriptor each.
    #[tokio::test]
    async fn connections_past_the_cap_wait_until_one_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let options = ServeOptions {
            max_connections: 1,
            ..ServeOptions::default()
        };
        serve_hello(listener, options);
        let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        // The first holds the only slot (kept alive after its request).
        let mut first = tokio::net::TcpStream::connect(address).await.unwrap();
        first.write_all(request).await.unwrap();
        assert!(
            answer(&mut first)
                .await
                .unwrap()
                .starts_with("HTTP/1.1 200")
        );
        let mut second = tokio::net::TcpStream::connect(address).await.unwrap();
        second.write_all(request).await.unwrap();

        assert_eq!(answer(&mut second).await, None, "served past the cap");
        drop(first);
        let served = answer(&mut second).await;
        assert!(
            served
                .as_deref()
                .is_some_and(|a| a.starts_with("HTTP/1.1 200")),
            "{served:?}"
        );
    }
}
