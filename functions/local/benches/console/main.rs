//! How fast the console answers with a team's worth of history (issue 10, "Fast": every page
//! under 50 KB and 20 ms of server time with 200 apps and 2,000 releases). A benchmark, not a
//! test: it prints figures and fails nothing. `scripts/bench-console` runs it.
//!
//! It seeds the embedded store (the `SqliteStore` the laptop's `runway` uses) through the
//! `Store` port, serves the `status` and `submit` routers on loopback through the same serve
//! loop and layers `runway` uses, and asks each page `BENCH_REQUESTS` times (default 200), one
//! after the other on one connection, as an admin and as a deployer. Each page's median and
//! 95th percentile are set against `/health` measured the same way in the same run: the floor
//! of the HTTP stack, so the ratio is the page's own work whatever the machine.

mod seed;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::HeaderMap;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use runway_core::clock::ManualClock;
use runway_core::domain::Caller;
use runway_core::ports::{Identity, IdentityError};
use runway_embedded::{Embedded, EmbeddedConfig, SqliteStore};
use tokio::net::{TcpListener, TcpStream};

/// The budget the console is held to.
const MAX_PAGE_BYTES: usize = 50 * 1024;
const MAX_PAGE_TIME: Duration = Duration::from_millis(20);
/// Requests before measuring: connections, caches and SQLite's statement cache warm up.
const WARM_UP: usize = 20;
/// Who the benchmark signs in as: this header names the caller.
const USER_HEADER: &str = "x-bench-user";

fn main() -> anyhow::Result<()> {
    let requests: usize = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(requests))
}

async fn run(requests: usize) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let started = Instant::now();
    {
        let clock = ManualClock::at(chrono::Utc::now() - chrono::Duration::days(120));
        let store =
            SqliteStore::open(&data.path().join("runway.db"))?.with_clock(Arc::new(clock.clone()));
        seed::seed(&store, &clock).await;
    }
    eprintln!(
        "seeded {} apps, {} releases in {:.1} s",
        seed::APPS,
        seed::RELEASES,
        started.elapsed().as_secs_f64()
    );
    let address = serve_console(data.path()).await?;
    let mut client = Client::connect(address).await?;
    let busy = seed::busy_app();
    let pages = [
        "/".to_owned(),
        "/?team=1".to_owned(),
        format!("/apps/{busy}"),
        "/audit".to_owned(),
        "/new".to_owned(),
        "/api/apps".to_owned(),
        format!("/api/apps/{busy}"),
        "/api/audit".to_owned(),
    ];
    let floor = client.measure("/health", seed::ADMIN, requests).await?;
    let mut rows = vec![("/health".to_owned(), "anyone", floor.clone())];
    for who in [seed::ADMIN, seed::DEPLOYER] {
        for page in &pages {
            let role = if who == seed::ADMIN {
                "admin"
            } else {
                "deployer"
            };
            rows.push((
                page.clone(),
                role,
                client.measure(page, who, requests).await?,
            ));
        }
    }
    print_table(&rows, &floor, requests, &busy.to_string());
    Ok(())
}

/// Serves the console as `runway` does (its routers, layers and serve loop) on the seeded data
/// dir, with callers named by a header instead of the one local user.
async fn serve_console(data_dir: &std::path::Path) -> anyhow::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let mut config = EmbeddedConfig::from_env()?;
    config.data_dir = data_dir.to_owned();
    let embedded = Embedded::open(config, address.port())?;
    let mut adapters = embedded.adapters();
    adapters.users = Some(Arc::new(NamedByHeader));
    let wired = "the embedded backend wires every port";
    let router = runway_status::router(runway_status::State::new(&adapters).expect(wired)).merge(
        runway_submit::router(runway_submit::State::new(&adapters).expect(wired)),
    );
    let router = runway_http::health::with_health(router, Vec::new());
    tokio::spawn(runway_http::serve_router(
        router,
        listener,
        std::future::pending(),
    ));
    Ok(address)
}

/// The caller the request's `x-bench-user` names; the admin is `seed::ADMIN`.
struct NamedByHeader;

#[async_trait]
impl Identity for NamedByHeader {
    async fn caller(&self, headers: &HeaderMap) -> Result<Caller, IdentityError> {
        let email = headers
            .get(USER_HEADER)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| IdentityError::Unauthenticated(format!("no {USER_HEADER}")))?;
        Ok(Caller {
            email: email.to_owned(),
            admin: email == seed::ADMIN,
        })
    }
}

/// One page's figures.
#[derive(Clone)]
struct Figures {
    status: u16,
    html: bool,
    bytes: usize,
    median: Duration,
    p95: Duration,
}

/// What one request got.
struct Answer {
    status: u16,
    html: bool,
    body: Bytes,
}

/// One HTTP/1.1 connection, asked one request at a time.
struct Client {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: String,
}

impl Client {
    async fn connect(address: std::net::SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Self {
            sender,
            host: address.to_string(),
        })
    }

    /// Asks `path` as `who` until the whole answer is read: its status and body.
    async fn get(&mut self, path: &str, who: &str) -> anyhow::Result<Answer> {
        let request = http::Request::get(path)
            .header(http::header::HOST, &self.host)
            .header(USER_HEADER, who)
            .body(Empty::new())?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let html = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(b"text/html"));
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer { status, html, body })
    }

    async fn measure(&mut self, path: &str, who: &str, requests: usize) -> anyhow::Result<Figures> {
        for _ in 0..WARM_UP {
            self.get(path, who).await?;
        }
        let mut times = Vec::with_capacity(requests);
        let mut last = None;
        for _ in 0..requests.max(1) {
            let start = Instant::now();
            last = Some(self.get(path, who).await?);
            times.push(start.elapsed());
        }
        times.sort();
        let at = |fraction: f64| times[((times.len() - 1) as f64 * fraction).round() as usize];
        let last = last.expect("at least one request");
        Ok(Figures {
            status: last.status,
            html: last.html,
            bytes: last.body.len(),
            median: at(0.5),
            p95: at(0.95),
        })
    }
}

fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

fn size(bytes: usize) -> String {
    if bytes < 1024 {
        format!("{bytes} B")
    } else {
        format!("{:.1} KB", bytes as f64 / 1024.0)
    }
}

/// Within the budget: a page's p95 under 20 ms and, for HTML, its size under 50 KB (a JSON
/// twin's size is the API's, for scripts).
fn verdict(figures: &Figures) -> &'static str {
    let small = !figures.html || figures.bytes <= MAX_PAGE_BYTES;
    match figures.status {
        200 if small && figures.p95 <= MAX_PAGE_TIME => "yes",
        200 => "NO",
        _ => "—",
    }
}

fn print_table(rows: &[(String, &str, Figures)], floor: &Figures, requests: usize, busy: &str) {
    println!(
        "\nThe console with {} apps and {} releases (`{busy}` has {}), {requests} requests per \
         page on one connection, {} cores\n",
        seed::APPS,
        seed::RELEASES,
        seed::BUSY_APP_RELEASES,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| page | as | status | size | median | p95 | median ÷ /health | HTML ≤ 50 KB, p95 ≤ 20 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (page, who, figures) in rows {
        let ratio = figures.median.as_secs_f64() / floor.median.as_secs_f64();
        println!(
            "| `{page}` | {who} | {} | {} | {} | {} | {ratio:.0}× | {} |",
            figures.status,
            size(figures.bytes),
            millis(figures.median),
            millis(figures.p95),
            verdict(figures)
        );
    }
}
