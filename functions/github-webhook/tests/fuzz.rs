//! Bounded fuzzing of the ingress as GitHub and everyone else reach it: any path, headers with
//! odd bytes, any body, signed right or wrong, through the real router and a real store. The
//! answer is always the one the ingress's rules give (never a 5xx, never a panic), and only a
//! push signed with the app's own secret, to its branch, queues a release, once. The committed
//! seeds (`tests/corpus/webhook/`, named `ok-…` when a signed push of them queues a release,
//! `bad-…` when it does not) are replayed first; `PROPTEST_CASES` sets how many generated
//! deliveries follow, to fuzz longer.

use std::sync::Arc;

use async_trait::async_trait;
use http::StatusCode;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseResult;
use runway_core::clock;
use runway_core::domain::{AppName, CommitSha, RepoUrl};
use runway_core::limits::{PerMinute, RateLimits};
use runway_core::ports::{OutboundMessage, Queue, QueueError, Store, Topic};
use runway_embedded::SqliteStore;
use runway_fuzzing::{Corpus, OK_BAD};
use runway_github_webhook::{Rates, STEP, State, router};
use runway_http::webhook::{self, PullRequestEvent, PushEvent};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tower::ServiceExt;

/// This crate's seeds (`tests/corpus/`) and regressions (`proptest-regressions/fuzz.txt`).
const CORPUS: Corpus = Corpus::new(env!("CARGO_MANIFEST_DIR"));

/// A queue that takes every message.
struct Taking;

#[async_trait]
impl Queue for Taking {
    async fn publish(&self, _: Topic, _: OutboundMessage) -> Result<String, QueueError> {
        Ok("1".into())
    }
}

/// The app `demo`, deploying branch `main` of repository 7, in a store of its own.
async fn ingress() -> (tempfile::TempDir, State) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("runway.db")).unwrap();
    store
        .put_deployment(&runway_core::testing::deployment(
            "demo",
            RepoUrl::parse("https://github.com/acme/demo", false).unwrap(),
            7,
            "ada@example.com",
        ))
        .await
        .unwrap();
    // No rates: the answers fuzzed are the ingress's rules for what arrives, whatever the
    // pace (tests/limits.rs has the limits).
    let unlimited = RateLimits {
        webhook_per_app: PerMinute::new(0),
        webhook_per_source: PerMinute::new(0),
        ..RateLimits::default()
    };
    let clock = clock::system();
    let state = State {
        store: Arc::new(store),
        queue: Arc::new(Taking),
        secret: SecretString::from("installation-key".to_owned()),
        rates: Arc::new(Rates::new(&unlimited, &clock)),
        clock,
        step: STEP,
        unverified: Default::default(),
        sources: None,
    };
    (dir, state)
}

/// How a delivery's signature header is made.
#[derive(Clone, Debug)]
enum Signature {
    /// Over the body, with the app's own secret.
    Right,
    /// Over the body, with the installation's key itself, or another app's secret.
    OtherSecret(bool),
    /// Any bytes at all.
    Raw(Vec<u8>),
    Missing,
}

#[derive(Clone, Debug)]
struct Delivery {
    /// The path's last segment as sent, and the app it decodes to (`None`: not UTF-8).
    app: (&'static str, Option<&'static str>),
    event: Option<Vec<u8>>,
    id: Option<Vec<u8>>,
    signature: Signature,
    body: Vec<u8>,
    /// Sent twice in a row.
    twice: bool,
}

/// A header's text as the ingress reads it: only visible ASCII (and tabs) is text.
fn text(value: Option<&[u8]>) -> Option<&str> {
    value
        .filter(|bytes| {
            bytes
                .iter()
                .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        })
        .map(|bytes| std::str::from_utf8(bytes).unwrap())
}

fn header_values(usual: &'static [&'static str]) -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::weighted(
        0.9,
        prop_oneof![
            4 => select(usual).prop_map(|value| value.as_bytes().to_vec()),
            1 => proptest::collection::vec(any::<u8>(), 0..12),
            1 => "[ -~]{90,110}".prop_map(String::into_bytes),
        ],
    )
}

/// A push to `main`, or another branch, a tag or a deleted branch, of this repository or
/// another, with a commit id or not, or any JSON, or any bytes.
fn bodies() -> impl Strategy<Value = Vec<u8>> {
    let push = (
        select(
            &[
                "refs/heads/main",
                "refs/heads/other",
                "refs/tags/v1",
                "main",
                "refs/heads/main ",
            ][..],
        ),
        prop_oneof![
            Just(Value::from("a".repeat(40))),
            "[0-9a-fA-F]{39,41}".prop_map(Value::from),
            Just(Value::from(0)),
        ],
        prop_oneof![
            Just(json!(7)),
            Just(json!(8)),
            Just(json!(-7)),
            Just(json!(1e300)),
            Just(json!("7"))
        ],
        any::<Option<bool>>(),
        any::<bool>(),
    )
        .prop_map(|(git_ref, after, repo_id, deleted, pusher)| {
            let mut push = json!({
                "ref": git_ref, "before": "0".repeat(40), "after": after,
                "repository": { "id": repo_id, "full_name": "acme/demo" },
            });
            if let Some(deleted) = deleted {
                push["deleted"] = json!(deleted);
            }
            if pusher {
                push["pusher"] = json!({ "name": "ada" });
            }
            push.to_string().into_bytes()
        });
    prop_oneof![
        4 => push,
        1 => "[ -~]{0,40}".prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

fn deliveries() -> impl Strategy<Value = Delivery> {
    let apps = select(
        &[
            ("demo", Some("demo")),
            ("demo", Some("demo")),
            ("de%6Do", Some("demo")),
            ("nobody", Some("nobody")),
            ("Demo", Some("Demo")),
            ("a%2Fb", Some("a/b")),
            ("demo%00", Some("demo\0")),
            ("%FF", None),
        ][..],
    );
    let signature = prop_oneof![
        6 => Just(Signature::Right),
        1 => any::<bool>().prop_map(Signature::OtherSecret),
        1 => proptest::collection::vec(any::<u8>(), 0..80).prop_map(Signature::Raw),
        1 => "sha256=[0-9a-f]{64}".prop_map(|raw| Signature::Raw(raw.into_bytes())),
        1 => Just(Signature::Missing),
    ];
    (
        apps,
        header_values(&[
            "push",
            "push",
            "push",
            "ping",
            "issues",
            "Push",
            "pull_request",
        ]),
        header_values(&["d-1", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "x"]),
        signature,
        bodies(),
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(app, event, id, signature, body, twice)| Delivery {
            app,
            event,
            id,
            signature,
            body,
            twice,
        })
}

/// What the ingress must answer, by its rules, and whether that answer queues a release.
fn expected(delivery: &Delivery) -> (StatusCode, bool) {
    let Some(app) = delivery.app.1 else {
        return (StatusCode::BAD_REQUEST, false);
    };
    if AppName::parse(app).is_err() {
        return (StatusCode::UNAUTHORIZED, false);
    }
    let signature = match &delivery.signature {
        Signature::Missing => None,
        Signature::Raw(bytes) => text(Some(bytes)),
        Signature::Right | Signature::OtherSecret(_) => Some(""),
    };
    if signature.is_none() {
        return (StatusCode::UNAUTHORIZED, false);
    }
    let Some(event) = text(delivery.event.as_deref()) else {
        return (StatusCode::BAD_REQUEST, false);
    };
    if !text(delivery.id.as_deref()).is_some_and(|id| (1..=100).contains(&id.len())) {
        return (StatusCode::BAD_REQUEST, false);
    }
    let signed = matches!(delivery.signature, Signature::Right) && app == "demo";
    if (matches!(event, "push" | "pull_request") && app != "demo") || !signed {
        return (StatusCode::UNAUTHORIZED, false);
    }
    match event {
        "ping" => (StatusCode::OK, false),
        // Previews are off for `demo`: a pull request's event is recorded and ignored.
        "pull_request" => match serde_json::from_slice::<PullRequestEvent>(&delivery.body) {
            Err(_) => (StatusCode::BAD_REQUEST, false),
            Ok(_) => (StatusCode::ACCEPTED, false),
        },
        "push" => match serde_json::from_slice::<PushEvent>(&delivery.body) {
            Err(_) => (StatusCode::BAD_REQUEST, false),
            Ok(push) => {
                let queues = push.git_ref == "refs/heads/main"
                    && !push.deleted
                    && CommitSha::parse(&push.after).is_ok()
                    && push.repository.id == 7;
                (StatusCode::ACCEPTED, queues)
            }
        },
        _ => (StatusCode::ACCEPTED, false),
    }
}

async fn send(state: &State, delivery: &Delivery) -> (StatusCode, Value) {
    let app = AppName::parse("demo").unwrap();
    let own = webhook::app_secret(&state.secret, &app);
    let other = webhook::app_secret(&state.secret, &AppName::parse("other").unwrap());
    let signed = |secret: &str| webhook::sign(secret.as_bytes(), &delivery.body).into_bytes();
    let signature = match &delivery.signature {
        Signature::Right => Some(signed(own.expose_secret())),
        Signature::OtherSecret(true) => Some(signed(state.secret.expose_secret())),
        Signature::OtherSecret(false) => Some(signed(other.expose_secret())),
        Signature::Raw(bytes) => Some(bytes.clone()),
        Signature::Missing => None,
    };
    let mut request = http::Request::post(format!("/github/webhook/{}", delivery.app.0));
    for (name, value) in [
        ("x-github-event", &delivery.event),
        ("x-github-delivery", &delivery.id),
        ("x-hub-signature-256", &signature),
    ] {
        // Bytes no header may hold (control characters) never reach a server.
        if let Some(value) = value
            .as_ref()
            .and_then(|v| http::HeaderValue::from_bytes(v).ok())
        {
            request = request.header(name, value);
        }
    }
    let mut request = request
        .body(axum::body::Body::from(delivery.body.clone()))
        .unwrap();
    // As the serve loop hands it on: with the peer that sent it.
    let peer = std::net::SocketAddr::from(([140, 82, 112, 1], 443));
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

/// A header the client could not send is as good as missing.
fn sendable(value: &Option<Vec<u8>>) -> Option<Vec<u8>> {
    value
        .clone()
        .filter(|v| http::HeaderValue::from_bytes(v).is_ok())
}

fn check_delivery(runtime: &tokio::runtime::Runtime, mut delivery: Delivery) -> TestCaseResult {
    delivery.event = sendable(&delivery.event);
    delivery.id = sendable(&delivery.id);
    if let Signature::Raw(bytes) = &delivery.signature
        && http::HeaderValue::from_bytes(bytes).is_err()
    {
        delivery.signature = Signature::Missing;
    }
    let (status, queues) = expected(&delivery);
    runtime.block_on(async {
        let (_dir, state) = ingress().await;
        let demo = AppName::parse("demo").unwrap();
        let (answered, body) = send(&state, &delivery).await;
        prop_assert_eq!(answered, status, "{}", body);
        prop_assert_eq!(body["status"] == "queued", queues, "{}", body);
        let releases = state.store.releases(&demo, 10).await.unwrap();
        prop_assert_eq!(releases.len(), usize::from(queues));
        if delivery.twice {
            // GitHub's Redeliver, or a replay: the same answer, or "duplicate" for a push
            // already recorded; never a second release.
            let (again, body) = send(&state, &delivery).await;
            let recorded =
                status == StatusCode::ACCEPTED && text(delivery.event.as_deref()) == Some("push");
            let expected = if recorded { StatusCode::OK } else { status };
            prop_assert_eq!(again, expected, "{}", body);
            let releases = state.store.releases(&demo, 10).await.unwrap();
            prop_assert_eq!(releases.len(), usize::from(queues));
        }
        Ok(())
    })
}

#[test]
fn webhook() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    CORPUS.replay_as("webhook", OK_BAD, |name, body, queues| {
        let delivery = Delivery {
            app: ("demo", Some("demo")),
            event: Some(b"push".to_vec()),
            id: Some(name.as_bytes().to_vec()),
            signature: Signature::Right,
            body,
            twice: true,
        };
        prop_assert_eq!(expected(&delivery).1, queues);
        check_delivery(&runtime, delivery)
    });
    CORPUS.fuzz(300, deliveries(), |delivery| {
        check_delivery(&runtime, delivery)
    });
}
