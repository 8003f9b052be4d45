//! The reverse proxy in front of the local apps: `http://APP.localhost:PORT/` goes to the app's
//! current process, plain HTTP and the websocket Streamlit uses alike. The routing table is
//! switched atomically by the platform once a new process is healthy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{StatusCode, Uri};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use runway_http::{Request, Response, with_type};

/// Where an app's traffic goes now.
#[derive(Clone, Debug)]
pub struct Backend {
    pub addr: SocketAddr,
    pub revision: String,
    /// Requests forwarded and not yet answered, so an old process is stopped only once drained.
    pub in_flight: Arc<AtomicUsize>,
}

/// App name → backend, shared by the platform (writer) and the proxy (reader).
#[derive(Clone, Default)]
pub struct Routes(Arc<RwLock<HashMap<String, Backend>>>);

impl Routes {
    pub fn get(&self, app: &str) -> Option<Backend> {
        self.0.read().expect("routes lock").get(app).cloned()
    }

    /// Points `app` at `backend`; returns the backend it replaces.
    pub fn set(&self, app: &str, backend: Backend) -> Option<Backend> {
        self.0
            .write()
            .expect("routes lock")
            .insert(app.to_owned(), backend)
    }

    pub fn remove(&self, app: &str) -> Option<Backend> {
        self.0.write().expect("routes lock").remove(app)
    }
}

/// The app named by a `Host` of the form `APP.localhost[:PORT]`.
pub fn app_from_host(host: &str) -> Option<&str> {
    let name = host.rsplit_once(':').map_or(host, |(name, _port)| name);
    let app = name.strip_suffix(".localhost")?;
    (!app.is_empty() && !app.contains('.')).then_some(app)
}

struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Clone)]
pub struct Proxy {
    routes: Routes,
    client: Client<HttpConnector, axum::body::Body>,
}

const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

impl Proxy {
    pub fn new(routes: Routes) -> Self {
        Self {
            routes,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn forward(&self, app: &str, mut request: Request, peer: SocketAddr) -> Response {
        let Some(backend) = self.routes.get(app) else {
            return text(
                StatusCode::NOT_FOUND,
                format!("No app named '{app}' is running here. Deploy it, or check the name.\n"),
            );
        };
        let _in_flight = InFlight::enter(&backend.in_flight);
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let headers = request.headers_mut();
        let host = headers.get(header::HOST).cloned();
        if let Ok(value) = HeaderValue::from_str(&peer.ip().to_string()) {
            headers.insert("x-forwarded-for", value);
        }
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        if let Some(host) = host {
            headers.insert("x-forwarded-host", host);
        }
        let result = if is_upgrade(&request) {
            forward_upgrade(backend.addr, &path, request).await
        } else {
            for name in HOP_BY_HOP {
                request.headers_mut().remove(name);
            }
            *request.uri_mut() = match Uri::try_from(format!("http://{}{path}", backend.addr)) {
                Ok(uri) => uri,
                Err(_) => return text(StatusCode::BAD_REQUEST, "bad request path\n".into()),
            };
            self.client
                .request(request)
                .await
                .map(|response| response.map(axum::body::Body::new))
                .map_err(anyhow::Error::from)
        };
        result.unwrap_or_else(|error| {
            tracing::warn!(app, error = format!("{error:#}"), "proxying failed");
            text(
                StatusCode::BAD_GATEWAY,
                format!("The app '{app}' did not answer; it may be restarting. Try again.\n"),
            )
        })
    }
}

fn is_upgrade(request: &Request) -> bool {
    request.headers().contains_key(header::UPGRADE)
        && request
            .headers()
            .get(header::CONNECTION)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                value
                    .split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Forwards an upgrade (websocket) handshake on a connection of its own, then splices the two
/// upgraded connections together.
async fn forward_upgrade(
    addr: SocketAddr,
    path: &str,
    mut request: Request,
) -> anyhow::Result<Response> {
    let client_upgrade = hyper::upgrade::on(&mut request);
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "upgraded backend connection ended");
        }
    });
    let (mut parts, _body) = request.into_parts();
    parts.uri = Uri::try_from(path)?;
    let outgoing = http::Request::from_parts(parts, Empty::<Bytes>::new());
    let mut response = sender.send_request(outgoing).await?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let backend_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, backend_upgrade) {
                Ok((client, backend)) => {
                    let _ = tokio::io::copy_bidirectional(
                        &mut TokioIo::new(client),
                        &mut TokioIo::new(backend),
                    )
                    .await;
                }
                Err(error) => tracing::debug!(%error, "websocket upgrade failed"),
            }
        });
    }
    Ok(response.map(axum::body::Body::new))
}

fn text(status: StatusCode, message: String) -> Response {
    with_type(status, "text/plain; charset=utf-8", message)
}

#[cfg(test)]
mod tests {
    use super::app_from_host;

    #[test]
    fn finds_the_app_in_a_localhost_host() {
        assert_eq!(app_from_host("hello.localhost:8080"), Some("hello"));
        assert_eq!(app_from_host("hello.localhost"), Some("hello"));
        assert_eq!(app_from_host("localhost:8080"), None);
        assert_eq!(app_from_host("127.0.0.1:8080"), None);
        assert_eq!(app_from_host("a.b.localhost:1"), None);
        assert_eq!(app_from_host("hello.example.com"), None);
    }
}
