//! `/metrics`: what Runway did, in the Prometheus text format (OpenMetrics), for Prometheus or
//! Google Cloud Managed Service for Prometheus to scrape.
//!
//! One registry per process, written by every function that runs in it:
//! - `runway_http_requests_total{route,method,code}` and `runway_http_request_duration_seconds{route}`
//!   for every request (the route as declared, `/apps/{app}`, so a name never becomes a label);
//! - `runway_deliveries_total{outcome}`: each webhook delivery by what became of it;
//! - `runway_releases_total{state}`: releases reaching `building`, `deploying`, `live`,
//!   `failed` or `superseded`;
//! - `runway_build_duration_seconds{outcome}`, `runway_deploy_duration_seconds{outcome}` and
//!   `runway_release_duration_seconds` (queued until live) as histograms;
//! - where the queue is Runway's own (the embedded backend), `runway_queue_messages{topic}`,
//!   `runway_queue_oldest_message_age_seconds{topic}` and `runway_queue_dead_letters{topic}`,
//!   read when scraped. On Google Cloud, Pub/Sub reports these itself
//!   (`subscription/num_undelivered_messages`, `oldest_unacked_message_age`), and
//!   `infra/monitoring.tf` alerts on them.
//!
//! Counts are per process: Prometheus sums the instances. Nothing here carries a name, a
//! commit, a URL or a secret: every label takes one of a few fixed values.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, State};
use axum::middleware::Next;
use axum::routing::get;
use futures_util::future::BoxFuture;
use http::{Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::{Request, Response, Router, with_type};

/// What became of a webhook delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// A release was queued.
    Queued,
    /// Recorded, nothing to do (another branch, another repository, a deleted branch, an event
    /// Runway does not act on).
    Ignored,
    /// The hook's id was received before (a replay or GitHub's redelivery).
    Duplicate,
    /// GitHub's ping.
    Ping,
    /// A bad or missing signature, or no such app.
    Refused,
    /// Over a rate limit, or from outside GitHub's hook ranges.
    Limited,
    /// Malformed: a missing header, a body that is not a push.
    Invalid,
    /// Runway could not record it (its store was down or full): GitHub shows it failed.
    Failed,
}

impl DeliveryOutcome {
    fn label(self) -> &'static str {
        match self {
            DeliveryOutcome::Queued => "queued",
            DeliveryOutcome::Ignored => "ignored",
            DeliveryOutcome::Duplicate => "duplicate",
            DeliveryOutcome::Ping => "ping",
            DeliveryOutcome::Refused => "refused",
            DeliveryOutcome::Limited => "limited",
            DeliveryOutcome::Invalid => "invalid",
            DeliveryOutcome::Failed => "failed",
        }
    }

    /// What an answer's status says became of a delivery that was not accepted.
    pub fn of_refusal(status: StatusCode) -> Self {
        match status.as_u16() {
            401 | 403 | 404 => DeliveryOutcome::Refused,
            429 => DeliveryOutcome::Limited,
            400 | 413 | 415 | 422 => DeliveryOutcome::Invalid,
            _ => DeliveryOutcome::Failed,
        }
    }
}

/// How a build or a deploy ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Succeeded,
    Failed,
}

impl Ended {
    fn label(self) -> &'static str {
        match self {
            Ended::Succeeded => "succeeded",
            Ended::Failed => "failed",
        }
    }
}

/// One topic of a queue, as read when scraped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopicStats {
    pub topic: String,
    /// Waiting for delivery (or being delivered).
    pub messages: u64,
    /// How long the oldest of those has waited; zero when none waits.
    pub oldest_age: Duration,
    /// Given up on after every attempt.
    pub dead_letters: u64,
}

/// Reads the queue's state when `/metrics` is scraped.
pub type QueueStats =
    Arc<dyn Fn() -> BoxFuture<'static, anyhow::Result<Vec<TopicStats>>> + Send + Sync>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    topic: String,
}

type Seconds = Family<OutcomeLabels, Histogram, fn() -> Histogram>;

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    deliveries: Family<OutcomeLabels, Counter>,
    releases: Family<StateLabels, Counter>,
    build_seconds: Seconds,
    deploy_seconds: Seconds,
    release_seconds: Histogram,
    queue_messages: Family<TopicLabels, Gauge>,
    queue_oldest_age: Family<TopicLabels, Gauge<f64, AtomicU64>>,
    dead_letters: Family<TopicLabels, Gauge>,
}

/// Requests take milliseconds: 1 ms to 10 s.
fn request_buckets() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// Builds and deploys take seconds to minutes: 1 s to 30 min.
fn step_buckets() -> Histogram {
    Histogram::new([
        1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
    ])
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("runway");
        let requests = Family::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status code",
            requests.clone(),
        );
        let request_seconds = Family::new_with_constructor(request_buckets as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route",
            request_seconds.clone(),
        );
        let deliveries = Family::default();
        registry.register(
            "deliveries",
            "GitHub webhook deliveries, by what became of them",
            deliveries.clone(),
        );
        let releases = Family::default();
        registry.register(
            "releases",
            "Releases that reached a state (building, deploying, live, failed, superseded)",
            releases.clone(),
        );
        let build_seconds = Family::new_with_constructor(step_buckets as fn() -> Histogram);
        registry.register(
            "build_duration_seconds",
            "How long builds ran, by outcome, as the builder timed them",
            build_seconds.clone(),
        );
        let deploy_seconds = Family::new_with_constructor(step_buckets as fn() -> Histogram);
        registry.register(
            "deploy_duration_seconds",
            "How long deploying a built image took, until it served or failed",
            deploy_seconds.clone(),
        );
        let release_seconds = step_buckets();
        registry.register(
            "release_duration_seconds",
            "From a release queued (a push received, a form sent) until it is live",
            release_seconds.clone(),
        );
        let queue_messages = Family::default();
        registry.register(
            "queue_messages",
            "Messages waiting for delivery in Runway's own queue, by topic",
            queue_messages.clone(),
        );
        let queue_oldest_age = Family::default();
        registry.register(
            "queue_oldest_message_age_seconds",
            "How long the oldest waiting message has waited, by topic",
            queue_oldest_age.clone(),
        );
        let dead_letters = Family::default();
        registry.register(
            "queue_dead_letters",
            "Messages given up on after every attempt, by topic",
            dead_letters.clone(),
        );
        Self {
            registry,
            requests,
            request_seconds,
            deliveries,
            releases,
            build_seconds,
            deploy_seconds,
            release_seconds,
            queue_messages,
            queue_oldest_age,
            dead_letters,
        }
    }

    /// A webhook delivery was answered.
    pub fn delivery(&self, outcome: DeliveryOutcome) {
        self.deliveries
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            })
            .inc();
    }

    /// A release reached `state` (`ReleaseState::as_str`).
    pub fn release(&self, state: &'static str) {
        self.releases.get_or_create(&StateLabels { state }).inc();
    }

    /// A build ended after running for `took`.
    pub fn build(&self, ended: Ended, took: Duration) {
        self.build_seconds
            .get_or_create(&OutcomeLabels {
                outcome: ended.label(),
            })
            .observe(took.as_secs_f64());
    }

    /// A deploy ended after `took`.
    pub fn deploy(&self, ended: Ended, took: Duration) {
        self.deploy_seconds
            .get_or_create(&OutcomeLabels {
                outcome: ended.label(),
            })
            .observe(took.as_secs_f64());
    }

    /// A release went live `took` after it was queued.
    pub fn went_live(&self, took: Duration) {
        self.release_seconds.observe(took.as_secs_f64());
    }

    fn request(&self, route: &str, method: &'static str, code: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method,
                code,
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    fn queue(&self, stats: &[TopicStats]) {
        for topic in stats {
            let labels = TopicLabels {
                topic: topic.topic.clone(),
            };
            let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.queue_messages
                .get_or_create(&labels)
                .set(count(topic.messages));
            self.queue_oldest_age
                .get_or_create(&labels)
                .set(topic.oldest_age.as_secs_f64());
            self.dead_letters
                .get_or_create(&labels)
                .set(count(topic.dead_letters));
        }
    }

    /// Everything, in the text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// This process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Counts and times each request under the route it matched (a tower layer, in `layers::app`).
/// Requests no route matched count under `unmatched`: a scan of random paths adds no series.
pub async fn record(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = match *request.method() {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let response = next.run(request).await;
    metrics().request(
        &route,
        method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// `GET /metrics`, reading `queue` (if any) when scraped.
pub fn routes(queue: Option<QueueStats>) -> Router {
    axum::Router::new()
        .route("/metrics", get(scrape))
        .with_state(queue)
}

async fn scrape(State(queue): State<Option<QueueStats>>) -> Response {
    if let Some(queue) = queue {
        match queue().await {
            Ok(stats) => metrics().queue(&stats),
            // The rest is still worth having; the gauges keep their last reading.
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "reading the queue for /metrics"
            ),
        }
    }
    with_type(
        StatusCode::OK,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        metrics().encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|line| line.starts_with(prefix))
    }

    #[test]
    fn each_family_is_declared_with_its_type() {
        let metrics = Metrics::new();
        // A family shows once it has a series.
        metrics.request("/metrics", "GET", 200, Duration::from_millis(2));
        metrics.delivery(DeliveryOutcome::Ping);
        metrics.release("building");
        metrics.build(Ended::Succeeded, Duration::from_secs(1));
        metrics.deploy(Ended::Succeeded, Duration::from_secs(1));
        metrics.queue(&[TopicStats::default()]);
        let text = metrics.encode();
        for (name, kind) in [
            ("runway_http_requests", "counter"),
            ("runway_http_request_duration_seconds", "histogram"),
            ("runway_deliveries", "counter"),
            ("runway_releases", "counter"),
            ("runway_build_duration_seconds", "histogram"),
            ("runway_deploy_duration_seconds", "histogram"),
            ("runway_release_duration_seconds", "histogram"),
            ("runway_queue_messages", "gauge"),
            ("runway_queue_oldest_message_age_seconds", "gauge"),
            ("runway_queue_dead_letters", "gauge"),
        ] {
            let declared = format!("# TYPE {name} {kind}");
            assert!(text.contains(&declared), "no `{declared}` in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn outcomes_and_durations_are_counted_under_their_labels() {
        let metrics = Metrics::new();
        metrics.delivery(DeliveryOutcome::Queued);
        metrics.delivery(DeliveryOutcome::Queued);
        metrics.delivery(DeliveryOutcome::of_refusal(StatusCode::UNAUTHORIZED));
        metrics.release("live");
        metrics.build(Ended::Succeeded, Duration::from_secs(3));
        metrics.build(Ended::Failed, Duration::from_secs(700));
        metrics.queue(&[TopicStats {
            topic: "deploy-requests".into(),
            messages: 2,
            oldest_age: Duration::from_millis(1500),
            dead_letters: 1,
        }]);
        let text = metrics.encode();
        let expect = |prefix: &str, value: &str| {
            let found = line(&text, prefix).unwrap_or_else(|| panic!("no {prefix} in:\n{text}"));
            assert_eq!(found.rsplit(' ').next(), Some(value), "{found}");
        };
        expect("runway_deliveries_total{outcome=\"queued\"}", "2");
        expect("runway_deliveries_total{outcome=\"refused\"}", "1");
        expect("runway_releases_total{state=\"live\"}", "1");
        expect(
            "runway_build_duration_seconds_bucket{le=\"5.0\",outcome=\"succeeded\"}",
            "1",
        );
        expect(
            "runway_build_duration_seconds_bucket{le=\"600.0\",outcome=\"failed\"}",
            "0",
        );
        expect(
            "runway_build_duration_seconds_bucket{le=\"1200.0\",outcome=\"failed\"}",
            "1",
        );
        expect("runway_queue_messages{topic=\"deploy-requests\"}", "2");
        expect(
            "runway_queue_oldest_message_age_seconds{topic=\"deploy-requests\"}",
            "1.5",
        );
        expect("runway_queue_dead_letters{topic=\"deploy-requests\"}", "1");
    }

    #[test]
    fn a_refusal_is_named_by_its_status() {
        assert_eq!(
            DeliveryOutcome::of_refusal(StatusCode::TOO_MANY_REQUESTS),
            DeliveryOutcome::Limited
        );
        assert_eq!(
            DeliveryOutcome::of_refusal(StatusCode::PAYLOAD_TOO_LARGE),
            DeliveryOutcome::Invalid
        );
        assert_eq!(
            DeliveryOutcome::of_refusal(StatusCode::FORBIDDEN),
            DeliveryOutcome::Refused
        );
        assert_eq!(
            DeliveryOutcome::of_refusal(StatusCode::INSUFFICIENT_STORAGE),
            DeliveryOutcome::Failed
        );
        assert_eq!(
            DeliveryOutcome::of_refusal(StatusCode::SERVICE_UNAVAILABLE),
            DeliveryOutcome::Failed
        );
    }
}
