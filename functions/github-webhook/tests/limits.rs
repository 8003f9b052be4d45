//! What the ingress takes, and from where: deliveries over an app's or a source address's rate
//! get 429 with `Retry-After` and leave no record (so GitHub's Redeliver is taken as new), a
//! forged `X-Forwarded-For` moves no client to another source, and with
//! `RUNWAY_WEBHOOK_SOURCES=github` only GitHub's published hook ranges get in. Time is a
//! `ManualClock` moved past each wait: nothing here sleeps.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use http::StatusCode;
use ipnet::IpNet;
use runway_core::clock::{Clock, ManualClock};
use runway_core::domain::{AppName, RepoUrl};
use runway_core::limits::{HookSources as Policy, PerMinute, RateLimits};
use runway_core::ports::{
    ForgeError, HookSources, OutboundMessage, Queue, QueueError, Store, Topic,
};
use runway_embedded::SqliteStore;
use runway_github_webhook::sources::HookRanges;
use runway_github_webhook::{Rates, State, router};
use secrecy::{ExposeSecret, SecretString};
use tower::ServiceExt;

/// The load balancer's own address, which it appends after the client's.
const LB: &str = "34.36.0.1";
/// Where requests come from through Google's front end: the TCP peer on Cloud Run.
const FRONT_END: &str = "169.254.8.1";

/// A queue that takes every message.
struct Accepting;

#[async_trait]
impl Queue for Accepting {
    async fn publish(&self, _: Topic, _: OutboundMessage) -> Result<String, QueueError> {
        Ok("published".into())
    }
}

/// GitHub's `meta` hook ranges as a test sets them; `None` while GitHub cannot be reached.
#[derive(Default)]
struct Meta {
    ranges: Mutex<Option<Vec<IpNet>>>,
    asked: AtomicUsize,
}

impl Meta {
    fn lists(&self, ranges: &[&str]) {
        let ranges = ranges.iter().map(|range| range.parse().unwrap()).collect();
        *self.ranges.lock().unwrap() = Some(ranges);
    }

    fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl HookSources for Meta {
    async fn hook_ranges(&self) -> Result<Vec<IpNet>, ForgeError> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        self.ranges
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| ForgeError::Unavailable("api.github.com did not answer".into()))
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    clock: ManualClock,
    meta: Arc<Meta>,
    state: State,
}

/// A delivery as it reaches the ingress.
struct Delivery<'a> {
    app: &'a str,
    id: &'a str,
    /// The TCP peer.
    peer: &'a str,
    forwarded_for: Option<&'a str>,
}

impl<'a> Delivery<'a> {
    fn from(peer: &'a str, app: &'a str, id: &'a str) -> Self {
        Self {
            app,
            id,
            peer,
            forwarded_for: None,
        }
    }

    /// Through the load balancer: `X-Forwarded-For: <sent>, <client>, <load balancer>`.
    fn through_lb(forwarded_for: &'a str, app: &'a str, id: &'a str) -> Self {
        Self {
            app,
            id,
            peer: FRONT_END,
            forwarded_for: Some(forwarded_for),
        }
    }
}

struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: serde_json::Value,
}

const APPS: [(&str, u64); 2] = [("demo", 7), ("other", 8)];

async fn fixture(limits: RateLimits) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("runway.db")).unwrap());
    for (app, repo_id) in APPS {
        store
            .put_deployment(&runway_core::testing::deployment(
                app,
                RepoUrl::parse(&format!("https://github.com/acme/{app}"), false).unwrap(),
                repo_id,
                "ada@example.com",
            ))
            .await
            .unwrap();
    }
    let clock = ManualClock::starting_now();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let meta = Arc::new(Meta::default());
    let state = State {
        store: store.clone(),
        queue: Arc::new(Accepting),
        secret: SecretString::from("installation-key".to_owned()),
        clock: shared.clone(),
        step: Duration::from_secs(2),
        unverified: Default::default(),
        rates: Arc::new(Rates::new(&limits, &shared)),
        sources: (limits.hook_sources == Policy::GitHub)
            .then(|| Arc::new(HookRanges::new(meta.clone(), shared.clone()))),
    };
    Fixture {
        _dir: dir,
        store,
        clock,
        meta,
        state,
    }
}

/// No limits but those a test names.
fn unlimited() -> RateLimits {
    RateLimits {
        webhook_per_app: PerMinute::new(0),
        webhook_per_source: PerMinute::new(0),
        submit_per_caller: PerMinute::new(0),
        trusted_xff_entries: 0,
        hook_sources: Policy::Anywhere,
    }
}

impl Fixture {
    /// Sends a signed push to `main` of the delivery's app.
    async fn send(&self, delivery: Delivery<'_>) -> Answer {
        let repo_id = APPS.iter().find(|(app, _)| *app == delivery.app).unwrap().1;
        let body = serde_json::json!({
            "ref": "refs/heads/main", "before": "0".repeat(40), "after": "a".repeat(40),
            "deleted": false,
            "repository": { "id": repo_id, "full_name": format!("acme/{}", delivery.app) },
        })
        .to_string();
        let app = AppName::parse(delivery.app).unwrap();
        let secret = runway_http::webhook::app_secret(&self.state.secret, &app);
        let signature =
            runway_http::webhook::sign(secret.expose_secret().as_bytes(), body.as_bytes());
        let mut request = http::Request::post(format!("/github/webhook/{}", delivery.app))
            .header("x-github-event", "push")
            .header("x-github-delivery", delivery.id)
            .header("x-hub-signature-256", signature);
        if let Some(forwarded_for) = delivery.forwarded_for {
            request = request.header("x-forwarded-for", forwarded_for);
        }
        let mut request = request.body(axum::body::Body::from(body)).unwrap();
        let peer = SocketAddr::new(delivery.peer.parse().unwrap(), 443);
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let response = router(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .map(|value| value.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        Answer {
            status,
            retry_after,
            body: serde_json::from_slice(&body).unwrap_or_default(),
        }
    }

    /// How many deliveries the app's page lists.
    async fn recorded(&self, app: &str) -> usize {
        let app = AppName::parse(app).unwrap();
        self.store.deliveries_of_app(&app, 100).await.unwrap().len()
    }
}

fn queued(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    assert_eq!(answer.body["status"], "queued", "{}", answer.body);
}

/// A refusal as the API shapes it: JSON, a message a person can act on, and `Retry-After`.
fn too_many(answer: &Answer, retry_after: &str) {
    assert_eq!(
        answer.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        answer.body
    );
    assert_eq!(answer.retry_after.as_deref(), Some(retry_after));
    let message = answer.body["error"].as_str().unwrap_or_default();
    assert!(message.contains("redeliver"), "{message}");
    assert!(answer.body.get("field").is_some(), "{}", answer.body);
}

#[tokio::test]
async fn a_burst_over_an_apps_rate_gets_429_records_nothing_and_is_taken_once_the_wait_is_over() {
    let f = fixture(RateLimits {
        webhook_per_app: PerMinute::new(2),
        ..unlimited()
    })
    .await;

    queued(&f.send(Delivery::from("140.82.112.1", "demo", "d-1")).await);
    queued(&f.send(Delivery::from("140.82.112.2", "demo", "d-2")).await);
    let refused = f.send(Delivery::from("140.82.112.3", "demo", "d-3")).await;

    // Two a minute: the next in 30 s, whichever address GitHub sends it from.
    too_many(&refused, "30");
    assert!(
        refused.body["error"]
            .as_str()
            .unwrap()
            .contains("the app demo"),
        "{}",
        refused.body
    );
    assert_eq!(
        f.recorded("demo").await,
        2,
        "the refused delivery left a record"
    );
    queued(&f.send(Delivery::from("140.82.112.3", "other", "o-1")).await);

    f.clock.advance(Duration::from_secs(30));
    // GitHub's Redeliver: the same delivery id, taken as new.
    queued(&f.send(Delivery::from("140.82.112.3", "demo", "d-3")).await);
    assert_eq!(f.recorded("demo").await, 3);
}

#[tokio::test]
async fn a_burst_from_one_source_gets_429_while_other_sources_go_on() {
    let f = fixture(RateLimits {
        webhook_per_source: PerMinute::new(2),
        ..unlimited()
    })
    .await;

    queued(&f.send(Delivery::from("203.0.113.5", "demo", "d-1")).await);
    queued(&f.send(Delivery::from("203.0.113.5", "other", "o-1")).await);
    let refused = f.send(Delivery::from("203.0.113.5", "demo", "d-2")).await;

    too_many(&refused, "30");
    assert!(
        refused.body["error"]
            .as_str()
            .unwrap()
            .contains("from 203.0.113.5"),
        "{}",
        refused.body
    );
    assert_eq!(
        f.recorded("demo").await,
        1,
        "the refused delivery left a record"
    );
    queued(&f.send(Delivery::from("203.0.113.6", "demo", "d-3")).await);
    // One IPv6 client holds a /64: its addresses share one bucket.
    queued(
        &f.send(Delivery::from("2001:db8:1:2::a", "demo", "d-4"))
            .await,
    );
    queued(
        &f.send(Delivery::from("2001:db8:1:2::b", "demo", "d-5"))
            .await,
    );
    too_many(
        &f.send(Delivery::from("2001:db8:1:2::c", "demo", "d-6"))
            .await,
        "30",
    );

    f.clock.advance(Duration::from_secs(30));
    queued(&f.send(Delivery::from("203.0.113.5", "demo", "d-2")).await);
}

/// Behind the load balancer every request comes from Google's front end; the client is the
/// entry the load balancer wrote, and whatever the client wrote before it changes nothing.
#[tokio::test]
async fn a_forged_forwarded_for_does_not_move_a_client_to_another_source() {
    let f = fixture(RateLimits {
        webhook_per_source: PerMinute::new(2),
        trusted_xff_entries: 2,
        ..unlimited()
    })
    .await;
    let client = |forged: &str| format!("{forged}, 203.0.113.5, {LB}");

    queued(
        &f.send(Delivery::through_lb(&client("10.0.0.1"), "demo", "d-1"))
            .await,
    );
    queued(
        &f.send(Delivery::through_lb(&client("10.0.0.2"), "demo", "d-2"))
            .await,
    );
    too_many(
        &f.send(Delivery::through_lb(&client("140.82.112.9"), "demo", "d-3"))
            .await,
        "30",
    );
    too_many(
        &f.send(Delivery::through_lb(
            &format!("192.0.2.1, {}", client("x")),
            "demo",
            "d-3",
        ))
        .await,
        "30",
    );

    // Another client through the same front end has its own bucket.
    queued(
        &f.send(Delivery::through_lb(
            &format!("198.51.100.7, {LB}"),
            "demo",
            "d-4",
        ))
        .await,
    );
    assert_eq!(f.recorded("demo").await, 3);
}

#[tokio::test]
async fn without_a_trusted_load_balancer_forwarded_for_is_not_read() {
    let f = fixture(RateLimits {
        webhook_per_source: PerMinute::new(2),
        ..unlimited()
    })
    .await;
    let from = |forwarded_for| Delivery {
        app: "demo",
        id: "",
        peer: "203.0.113.5",
        forwarded_for: Some(forwarded_for),
    };

    queued(
        &f.send(Delivery {
            id: "d-1",
            ..from("198.51.100.1, 34.36.0.1")
        })
        .await,
    );
    queued(
        &f.send(Delivery {
            id: "d-2",
            ..from("198.51.100.2, 34.36.0.1")
        })
        .await,
    );
    too_many(
        &f.send(Delivery {
            id: "d-3",
            ..from("198.51.100.3, 34.36.0.1")
        })
        .await,
        "30",
    );
}

fn github_only() -> RateLimits {
    RateLimits {
        hook_sources: Policy::GitHub,
        trusted_xff_entries: 2,
        ..unlimited()
    }
}

fn forbidden(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    let message = answer.body["error"].as_str().unwrap_or_default();
    assert!(message.contains("GitHub's addresses only"), "{message}");
}

#[tokio::test]
async fn with_github_sources_only_githubs_ranges_get_in_ipv4_and_ipv6() {
    let f = fixture(github_only()).await;
    f.meta.lists(&["140.82.112.0/20", "2a0a:a440::/29"]);
    let via_lb = |client: &str| format!("{client}, {LB}");

    queued(
        &f.send(Delivery::through_lb(&via_lb("140.82.112.5"), "demo", "d-1"))
            .await,
    );
    queued(
        &f.send(Delivery::through_lb(
            &via_lb("2a0a:a440:1::7"),
            "demo",
            "d-2",
        ))
        .await,
    );
    queued(
        &f.send(Delivery::through_lb(
            &via_lb("::ffff:140.82.127.1"),
            "demo",
            "d-3",
        ))
        .await,
    );
    forbidden(
        &f.send(Delivery::through_lb(&via_lb("203.0.113.5"), "demo", "d-4"))
            .await,
    );
    forbidden(
        &f.send(Delivery::through_lb(&via_lb("2001:db8::1"), "demo", "d-5"))
            .await,
    );
    // GitHub's address where the client writes it is the client's own word.
    forbidden(
        &f.send(Delivery::through_lb(
            &format!("140.82.112.5, 203.0.113.5, {LB}"),
            "demo",
            "d-6",
        ))
        .await,
    );
    // Not through the load balancer: the front end's address, never GitHub's.
    forbidden(
        &f.send(Delivery::through_lb("140.82.112.5", "demo", "d-7"))
            .await,
    );

    assert_eq!(
        f.recorded("demo").await,
        3,
        "a refused delivery left a record"
    );
    assert_eq!(f.meta.asked(), 1, "GitHub was asked on every miss");
}

#[tokio::test]
async fn githubs_ranges_are_asked_again_on_a_miss_at_most_once_a_minute_and_every_hour() {
    let f = fixture(github_only()).await;
    f.meta.lists(&["140.82.112.0/20"]);
    let via_lb = |client: &str| format!("{client}, {LB}");
    let new_range = via_lb("185.199.108.9");
    let old_range = via_lb("140.82.112.5");

    forbidden(
        &f.send(Delivery::through_lb(&new_range, "demo", "d-1"))
            .await,
    );
    // GitHub adds a range; a miss within the minute does not ask again.
    f.meta.lists(&["185.199.108.0/22"]);
    forbidden(
        &f.send(Delivery::through_lb(&new_range, "demo", "d-1"))
            .await,
    );
    assert_eq!(f.meta.asked(), 1);

    f.clock.advance(Duration::from_secs(60));
    queued(
        &f.send(Delivery::through_lb(&new_range, "demo", "d-1"))
            .await,
    );
    assert_eq!(f.meta.asked(), 2);

    // GitHub drops a range: it is taken until the list is an hour old, then GitHub is asked.
    f.meta.lists(&["140.82.112.0/20"]);
    f.clock.advance(Duration::from_secs(3599));
    queued(
        &f.send(Delivery::through_lb(&new_range, "demo", "d-2"))
            .await,
    );
    assert_eq!(
        f.meta.asked(),
        2,
        "a known address asked again within the hour"
    );
    f.clock.advance(Duration::from_secs(1));
    forbidden(
        &f.send(Delivery::through_lb(&new_range, "demo", "d-3"))
            .await,
    );
    assert_eq!(
        f.meta.asked(),
        3,
        "an hour-old list was not asked for again"
    );
    queued(
        &f.send(Delivery::through_lb(&old_range, "demo", "d-4"))
            .await,
    );
    assert_eq!(f.meta.asked(), 3);
}

/// GitHub's list cannot be had and none is known: every delivery is refused (503, retry in a
/// minute at most), not let through, until GitHub answers.
#[tokio::test]
async fn without_githubs_ranges_deliveries_are_refused_until_github_answers() {
    let f = fixture(github_only()).await;
    let from_github = format!("140.82.112.5, {LB}");

    let refused = f
        .send(Delivery::through_lb(&from_github, "demo", "d-1"))
        .await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.body
    );
    assert_eq!(refused.retry_after.as_deref(), Some("60"));
    assert!(
        refused.body["error"].as_str().unwrap().contains("meta API"),
        "{}",
        refused.body
    );
    f.clock.advance(Duration::from_secs(20));
    let refused = f
        .send(Delivery::through_lb(&from_github, "demo", "d-1"))
        .await;
    assert_eq!(refused.retry_after.as_deref(), Some("40"));
    assert_eq!(f.meta.asked(), 1);
    assert_eq!(f.recorded("demo").await, 0);

    f.meta.lists(&["140.82.112.0/20"]);
    f.clock.advance(Duration::from_secs(40));
    queued(
        &f.send(Delivery::through_lb(&from_github, "demo", "d-1"))
            .await,
    );

    // Once known, GitHub down keeps the last list.
    *f.meta.ranges.lock().unwrap() = None;
    f.clock.advance(Duration::from_secs(7200));
    queued(
        &f.send(Delivery::through_lb(&from_github, "demo", "d-2"))
            .await,
    );
    assert_eq!(f.meta.asked(), 3);
}
