//! The reverse proxy in front of the local apps: `http://APP.localhost:PORT/` goes to the app's
//! current process, plain HTTP and the websocket Streamlit uses alike. The routing table is
//! switched atomically by the platform once a new process is healthy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::watch;

use runway_http::{Request, Response, with_type};

/// Where an app's traffic goes now.
#[derive(Clone, Debug)]
pub struct Backend {
    pub addr: SocketAddr,
    pub revision: String,
    /// What the proxy has open to it, so an old process is stopped only once drained.
    pub in_flight: InFlight,
}

/// Requests forwarded to one backend and not yet done: a request counts until its response
/// body has been sent (a streamed body to its end), a websocket until it closes.
#[derive(Clone, Debug)]
pub struct InFlight(Arc<watch::Sender<usize>>);

impl Default for InFlight {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(0)))
    }
}

impl InFlight {
    /// Counts one more until the returned guard is dropped.
    pub fn enter(&self) -> Entered {
        self.0.send_modify(|count| *count += 1);
        Entered(self.clone())
    }

    pub fn count(&self) -> usize {
        *self.0.borrow()
    }

    /// Resolves once nothing is in flight.
    pub async fn drained(&self) {
        let mut count = self.0.subscribe();
        // The sender lives in `self`: `wait_for` cannot fail.
        let _ = count.wait_for(|count| *count == 0).await;
    }
}

/// One request (or websocket) in flight, until dropped.
#[derive(Debug)]
pub struct Entered(InFlight);

impl Drop for Entered {
    fn drop(&mut self) {
        self.0.0.send_modify(|count| *count -= 1);
    }
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

    /// The app's backend, with a request entered in flight there before the table can
    /// change: once [`Routes::set`] has replaced a backend, every request sent to it is
    /// counted, and a drain that sees none in flight sees the last.
    pub fn enter(&self, app: &str) -> Option<(Backend, Entered)> {
        let routes = self.0.read().expect("routes lock");
        let backend = routes.get(app)?.clone();
        let entered = backend.in_flight.enter();
        Some((backend, entered))
    }
}

/// The app named by a `Host` of the form `APP.localhost[:PORT]`.
pub fn app_from_host(host: &str) -> Option<&str> {
    let name = host.rsplit_once(':').map_or(host, |(name, _port)| name);
    let app = name.strip_suffix(".localhost")?;
    (!app.is_empty() && !app.contains('.')).then_some(app)
}

#[derive(Clone)]
pub struct Proxy {
    routes: Routes,
    client: Client<HttpConnector, axum::body::Body>,
}

/// Headers about one connection rather than the request (RFC 9110 §7.6.1), and the
/// credentials a client meant for a proxy: never passed on, in either direction.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

impl Proxy {
    pub fn new(routes: Routes) -> Self {
        Self {
            routes,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn forward(&self, app: &str, mut request: Request, peer: SocketAddr) -> Response {
        let Some((backend, entered)) = self.routes.enter(app) else {
            return text(
                StatusCode::NOT_FOUND,
                format!("No app named '{app}' is running here. Deploy it, or check the name.\n"),
            );
        };
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let upgrade = is_upgrade(&request);
        prepare_headers(request.headers_mut(), peer, upgrade);
        let result = if upgrade {
            forward_upgrade(backend.addr, &path, request, entered).await
        } else {
            *request.uri_mut() = match Uri::try_from(format!("http://{}{path}", backend.addr)) {
                Ok(uri) => uri,
                Err(_) => return text(StatusCode::BAD_REQUEST, "bad request path\n".into()),
            };
            self.client
                .request(request)
                .await
                .map(|mut response| {
                    strip_hop_by_hop(response.headers_mut());
                    held_until_sent(response, entered)
                })
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

/// The request's headers as the app gets them: no hop-by-hop header (bar an upgrade's own),
/// and who sent it and to which host as this proxy saw it, never as the client claims it
/// (`Forwarded` and every `X-Forwarded-*` a client sends are dropped).
fn prepare_headers(headers: &mut HeaderMap, peer: SocketAddr, upgrade: bool) {
    let protocol = headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(headers);
    if upgrade && let Some(protocol) = protocol {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    let claimed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-forwarded-"))
        .cloned()
        .collect();
    for name in claimed {
        headers.remove(name);
    }
    headers.remove(header::FORWARDED);
    if let Ok(value) = HeaderValue::from_str(&peer.ip().to_string()) {
        headers.insert("x-forwarded-for", value);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert("x-forwarded-host", host);
    }
}

/// Removes the hop-by-hop headers and every header `Connection` names as one.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// `response`, counted in flight until its body has been sent or dropped: a streamed body is
/// still being served by the backend, which must not be stopped under it.
fn held_until_sent<B>(response: http::Response<B>, entered: Entered) -> Response
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    response.map(|body| {
        axum::body::Body::new(body.map_frame(move |frame| {
            let _held = &entered;
            frame
        }))
    })
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
    entered: Entered,
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
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        strip_hop_by_hop(response.headers_mut());
        return Ok(held_until_sent(response, entered));
    }
    let backend_upgrade = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        // In flight while the websocket is open: a drain waits for it (up to its grace).
        let _held = entered;
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
    Ok(response.map(axum::body::Body::new))
}

fn text(status: StatusCode, message: String) -> Response {
    with_type(status, "text/plain; charset=utf-8", message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::{Notify, mpsc};

    const APP: &str = "hello";

    #[test]
    fn finds_the_app_in_a_localhost_host() {
        assert_eq!(app_from_host("hello.localhost:8080"), Some("hello"));
        assert_eq!(app_from_host("hello.localhost"), Some("hello"));
        assert_eq!(app_from_host("localhost:8080"), None);
        assert_eq!(app_from_host("127.0.0.1:8080"), None);
        assert_eq!(app_from_host("a.b.localhost:1"), None);
        assert_eq!(app_from_host("hello.example.com"), None);
    }

    /// How the fake app answers.
    #[derive(Clone, Copy)]
    enum Answer {
        /// `ok`, whole.
        Ok,
        /// A first chunk, then the end once `finish` is notified.
        Stream,
        /// 101, then an echo until the client closes.
        Upgrade,
    }

    /// A fake app behind the proxy: the head of each request it gets goes to the receiver.
    struct Upstream {
        addr: SocketAddr,
        heads: mpsc::UnboundedReceiver<String>,
        finish: Arc<Notify>,
    }

    async fn upstream(answer: Answer) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (heads_tx, heads) = mpsc::unbounded_channel();
        let finish = Arc::new(Notify::new());
        let finish_app = finish.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let head = read_head(&mut stream).await;
                let _ = heads_tx.send(head);
                match answer {
                    Answer::Ok => {
                        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nkeep-alive: timeout=5\r\n\r\nok";
                        stream.write_all(ok.as_bytes()).await.unwrap();
                    }
                    Answer::Stream => {
                        let first =
                            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n";
                        stream.write_all(first.as_bytes()).await.unwrap();
                        finish_app.notified().await;
                        stream.write_all(b"4\r\nlast\r\n0\r\n\r\n").await.unwrap();
                    }
                    Answer::Upgrade => {
                        let switch = "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n";
                        stream.write_all(switch.as_bytes()).await.unwrap();
                        let (mut reader, mut writer) = stream.split();
                        let _ = tokio::io::copy(&mut reader, &mut writer).await;
                    }
                }
            }
        });
        Upstream {
            addr,
            heads,
            finish,
        }
    }

    /// Reads up to the end of a head (`\r\n\r\n`), a byte at a time so nothing after it is
    /// taken.
    async fn read_head(stream: &mut TcpStream) -> String {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read_u8().await {
                Ok(byte) => head.push(byte),
                Err(_) => break,
            }
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    /// Reads until `needle` has come.
    async fn read_until(stream: &mut TcpStream, needle: &str) -> String {
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains(needle) {
            let byte = stream.read_u8().await.expect("the connection ended early");
            seen.push(byte);
        }
        String::from_utf8_lossy(&seen).into_owned()
    }

    /// The proxy, served as runway serves it, sending every request to `backend`.
    async fn proxy_to(backend: &Backend) -> SocketAddr {
        let routes = Routes::default();
        routes.set(APP, backend.clone());
        let proxy = Proxy::new(routes);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(runway_http::serve(
            listener,
            move |request, peer| {
                let proxy = proxy.clone();
                async move { proxy.forward(APP, request, peer).await }
            },
            std::future::pending(),
            runway_http::serve::ServeOptions::default(),
        ));
        addr
    }

    fn backend(addr: SocketAddr) -> Backend {
        Backend {
            addr,
            revision: "hello-1".into(),
            in_flight: InFlight::default(),
        }
    }

    /// What is in flight to `backend` now.
    fn in_flight(backend: &Backend) -> usize {
        backend.in_flight.count()
    }

    /// Waits (without a clock deciding anything) until nothing is in flight to `backend`;
    /// the timeout only stops a test that would otherwise hang.
    async fn until_drained(backend: &Backend) {
        tokio::time::timeout(Duration::from_secs(60), backend.in_flight.drained())
            .await
            .expect("still in flight");
    }

    /// The header names of a request head, lowercase.
    fn header_names(head: &str) -> Vec<String> {
        head.lines()
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .map(|(name, _)| name.trim().to_ascii_lowercase())
            .collect()
    }

    #[tokio::test]
    async fn connection_scoped_and_spoofed_forwarding_headers_never_reach_the_app() {
        let mut app = upstream(Answer::Ok).await;
        let backend = backend(app.addr);
        let proxy = proxy_to(&backend).await;
        let mut client = TcpStream::connect(proxy).await.unwrap();
        let request = "GET /page HTTP/1.1\r\nHost: hello.localhost\r\n\
            Connection: close, X-Secret\r\nX-Secret: for-this-hop\r\n\
            Keep-Alive: timeout=5\r\nProxy-Authorization: Basic c2VjcmV0\r\n\
            Proxy-Connection: keep-alive\r\nTE: trailers\r\n\
            Forwarded: for=203.0.113.9;host=bank.example\r\n\
            X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Prefix: /admin\r\n\
            Accept: text/html\r\n\r\n";
        client.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        client.read_to_string(&mut response).await.unwrap();

        assert!(response.ends_with("ok"), "{response}");
        let response_head = response.to_ascii_lowercase();
        assert!(!response_head.contains("keep-alive: timeout"), "{response}");
        let head = app.heads.recv().await.unwrap();
        let names = header_names(&head);
        for leaked in [
            "x-secret",
            "keep-alive",
            "proxy-authorization",
            "proxy-connection",
            "te",
            "forwarded",
            "x-forwarded-prefix",
        ] {
            assert!(
                !names.contains(&leaked.to_owned()),
                "{leaked} reached the app:\n{head}"
            );
        }
        assert!(names.contains(&"accept".to_owned()), "{head}");
        assert!(
            !head.contains("203.0.113.9"),
            "a spoofed address reached the app:\n{head}"
        );
        assert!(head.contains("x-forwarded-for: 127.0.0.1"), "{head}");
    }

    #[tokio::test]
    async fn a_streamed_response_is_in_flight_until_its_body_ends() {
        let app = upstream(Answer::Stream).await;
        let backend = backend(app.addr);
        let proxy = proxy_to(&backend).await;
        let mut client = TcpStream::connect(proxy).await.unwrap();
        let request = "GET /stream HTTP/1.1\r\nHost: hello.localhost\r\nConnection: close\r\n\r\n";
        client.write_all(request.as_bytes()).await.unwrap();

        read_until(&mut client, "first").await;
        assert_eq!(in_flight(&backend), 1, "the app is still sending the body");

        app.finish.notify_one();
        let mut rest = String::new();
        client.read_to_string(&mut rest).await.unwrap();
        assert!(rest.contains("last"), "{rest}");
        until_drained(&backend).await;
    }

    #[tokio::test]
    async fn a_websocket_is_in_flight_until_it_closes() {
        let mut app = upstream(Answer::Upgrade).await;
        let backend = backend(app.addr);
        let proxy = proxy_to(&backend).await;
        let mut client = TcpStream::connect(proxy).await.unwrap();
        let request = "GET /_stcore/stream HTTP/1.1\r\nHost: hello.localhost\r\n\
            Connection: Upgrade, X-Secret\r\nX-Secret: for-this-hop\r\n\
            Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n";
        client.write_all(request.as_bytes()).await.unwrap();

        let switched = read_until(&mut client, "\r\n\r\n").await;
        assert!(switched.starts_with("HTTP/1.1 101"), "{switched}");
        client.write_all(b"ping").await.unwrap();
        read_until(&mut client, "ping").await;
        assert_eq!(in_flight(&backend), 1, "the websocket is open");
        let head = app.heads.recv().await.unwrap().to_ascii_lowercase();
        assert!(head.contains("upgrade: websocket"), "{head}");
        assert!(head.contains("sec-websocket-version: 13"), "{head}");
        assert!(
            !header_names(&head).contains(&"x-secret".to_owned()),
            "{head}"
        );

        drop(client);
        until_drained(&backend).await;
    }
}
