//! Where Runway's announcements land, on loopback: Slack and Google Chat incoming webhooks, a
//! Teams workflow trigger, and a plain receiver for signed webhooks. No runnable peer of these
//! services exists, so each follows its documented wire format and refuses what it refuses:
//!
//! - **Slack** (api.slack.com/messaging/webhooks): `POST /services/T…/B…/SECRET`, JSON only.
//!   `200 ok`; `400 invalid_payload` for a body that is not JSON, `400 no_text` for one with
//!   neither `text` nor `blocks`, `400 invalid_blocks` for a block that is not a section with
//!   mrkdwn or plain text of at most 3,000 characters; `404 no_service` for a hook that was
//!   removed (`remove`); `429` past one message a second per hook (not modelled: the tests send
//!   fewer).
//! - **Google Chat** (developers.google.com/workspace/chat/quickstart/webhooks):
//!   `POST /v1/spaces/SPACE/messages?key=…&token=…`. `200` with the created Message; `400
//!   INVALID_ARGUMENT` for a body that is not JSON or a message with neither `text` nor
//!   `cardsV2` or text over 4,096 characters; `401` without `key` and `token`.
//! - **Teams workflows** ("Post to a channel when a webhook request is received"):
//!   `POST /workflows/ID/triggers/manual/paths/invoke?sig=…`. `401` without `sig`; otherwise
//!   `202 Accepted` for any JSON, as the trigger does. Whether the flow then posts is decided
//!   later: a body that is not a message with an Adaptive Card attachment fails the run, which
//!   the sender never hears; `failed_runs` says which.
//! - **Signed webhook**: any other path; records the request and answers 204.
//!
//! `answer_next` makes a service's next requests get a chosen status first (a target that is down).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runway_http::Request;
use serde_json::{Value, json};

/// Which receiver a request reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Slack,
    Chat,
    Teams,
    Webhook,
}

/// One request, as received, and what it was answered.
#[derive(Clone, Debug)]
pub struct Received {
    pub service: Service,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    pub status: u16,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The text a person sees: Slack's or Chat's `text`, or the card's text blocks.
    pub fn text(&self) -> String {
        let body = self.json();
        match self.service {
            Service::Teams => body["attachments"][0]["content"]["body"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|block| block["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            _ => body["text"].as_str().unwrap_or_default().to_owned(),
        }
    }
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    /// Statuses the next requests to a service get instead of its own answer.
    forced: VecDeque<(Service, u16)>,
    /// Slack hooks that were removed (their path).
    removed: Vec<String>,
    /// Teams runs that failed, and why.
    failed_runs: Vec<String>,
}

#[derive(Clone)]
pub struct FakeChat {
    inner: Arc<Mutex<Inner>>,
    pub base: String,
}

impl FakeChat {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let fake = Self {
            inner: Arc::default(),
            base,
        };
        let inner = fake.inner.clone();
        tokio::spawn(runway_http::serve(
            listener,
            move |request: Request, _| {
                let inner = inner.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let body =
                        runway_http::read_body(Request::from_parts(parts.clone(), body), 1 << 20)
                            .await
                            .unwrap_or_default()
                            .to_vec();
                    let mut inner = inner.lock().unwrap();
                    let (service, answered) = answer(&mut inner, &parts, &body);
                    let forced = inner.forced.iter().position(|(s, _)| *s == service);
                    let (status, reply) = match forced.and_then(|i| inner.forced.remove(i)) {
                        Some((_, status)) => (status, json!({ "error": "forced by the test" })),
                        None => answered,
                    };
                    inner.received.push(Received {
                        service,
                        path: parts.uri.to_string(),
                        headers: parts.headers.clone(),
                        body,
                        status,
                    });
                    let status = http::StatusCode::from_u16(status).unwrap();
                    match reply {
                        Value::String(text) => runway_http::with_type(status, "text/plain", text),
                        other => runway_http::json(status, &other),
                    }
                }
            },
            std::future::pending(),
            runway_http::serve::ServeOptions::default(),
        ));
        fake
    }

    /// A Slack hook's URL (the last part is what makes it a secret).
    pub fn slack_url(&self, secret: &str) -> String {
        format!("{}/services/T0RUNWAY/B0RUNWAY/{secret}", self.base)
    }

    pub fn chat_url(&self, space: &str, token: &str) -> String {
        format!(
            "{}/v1/spaces/{space}/messages?key=AIzaKEY&token={token}",
            self.base
        )
    }

    pub fn teams_url(&self, sig: Option<&str>) -> String {
        let query = sig.map(|sig| format!("&sig={sig}")).unwrap_or_default();
        format!(
            "{}/workflows/0a1b/triggers/manual/paths/invoke?api-version=2016-06-01{query}",
            self.base
        )
    }

    pub fn webhook_url(&self, name: &str) -> String {
        format!("{}/hooks/{name}", self.base)
    }

    /// Removes a Slack hook, as a workspace admin does: it answers `404 no_service` after.
    pub fn remove(&self, url: &str) {
        let path = url.trim_start_matches(&self.base).to_owned();
        self.inner.lock().unwrap().removed.push(path);
    }

    /// The next `statuses.len()` requests to `service` get these statuses, whatever they hold:
    /// a target that is down for a while.
    pub fn answer_next(&self, service: Service, statuses: &[u16]) {
        let mut inner = self.inner.lock().unwrap();
        inner
            .forced
            .extend(statuses.iter().map(|status| (service, *status)));
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    pub fn failed_runs(&self) -> Vec<String> {
        self.inner.lock().unwrap().failed_runs.clone()
    }

    /// The requests `service` answered with 2xx.
    pub fn delivered(&self, service: Service) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.service == service && r.status < 300)
            .collect()
    }

    /// Waits until `service` took `n` requests; panics naming what arrived after `timeout`.
    pub async fn wait_for(&self, service: Service, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let delivered = self.delivered(service);
            if delivered.len() >= n {
                return delivered;
            }
            assert!(
                Instant::now() < deadline,
                "{n} deliveries to {service:?} expected within {timeout:?}; got {:?}",
                self.received()
                    .iter()
                    .map(|r| (r.service, r.status, r.path.clone()))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn query_has(parts: &http::request::Parts, name: &str) -> bool {
    parts.uri.query().is_some_and(|query| {
        url::form_urlencoded::parse(query.as_bytes())
            .any(|(key, value)| key == name && !value.is_empty())
    })
}

fn is_json(parts: &http::request::Parts) -> bool {
    parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The service's own answer to a request.
fn answer(inner: &mut Inner, parts: &http::request::Parts, body: &[u8]) -> (Service, (u16, Value)) {
    let path = parts.uri.path();
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if path.starts_with("/services/") {
        let answer = if inner.removed.iter().any(|removed| removed == path) {
            (404, json!("no_service"))
        } else if parts.method != http::Method::POST {
            (405, json!("invalid_method"))
        } else {
            match parsed {
                Some(message) if is_json(parts) => slack(&message),
                _ => (400, json!("invalid_payload")),
            }
        };
        return (Service::Slack, answer);
    }
    if path.starts_with("/v1/spaces/") && path.ends_with("/messages") {
        let answer = if !query_has(parts, "key") || !query_has(parts, "token") {
            (
                401,
                json!({ "error": { "code": 401, "status": "UNAUTHENTICATED" } }),
            )
        } else {
            match parsed {
                Some(message) => chat(path, &message),
                None => invalid_argument("Invalid JSON payload received."),
            }
        };
        return (Service::Chat, answer);
    }
    if path.starts_with("/workflows/") {
        if !query_has(parts, "sig") {
            let error = json!({ "error": { "code": "DirectApiAuthorizationRequired",
                "message": "The request must be authenticated only by Shared Access scheme." } });
            return (Service::Teams, (401, error));
        }
        let Some(message) = parsed else {
            return (
                Service::Teams,
                (400, json!({ "error": { "code": "InvalidRequestContent" } })),
            );
        };
        if let Err(why) = teams_card(&message) {
            inner.failed_runs.push(why);
        }
        return (Service::Teams, (202, json!("")));
    }
    (Service::Webhook, (204, json!("")))
}

fn slack(message: &Value) -> (u16, Value) {
    let text = message["text"].as_str();
    let blocks = message["blocks"].as_array();
    if text.is_none_or(str::is_empty) && blocks.is_none_or(Vec::is_empty) {
        return (400, json!("no_text"));
    }
    for block in blocks.into_iter().flatten() {
        let kind = block["text"]["type"].as_str();
        let text = block["text"]["text"].as_str().unwrap_or_default();
        if block["type"] != "section"
            || !matches!(kind, Some("mrkdwn" | "plain_text"))
            || text.is_empty()
            || text.chars().count() > 3000
        {
            return (400, json!("invalid_blocks"));
        }
    }
    (200, json!("ok"))
}

fn invalid_argument(message: &str) -> (u16, Value) {
    (
        400,
        json!({ "error": { "code": 400, "message": message, "status": "INVALID_ARGUMENT" } }),
    )
}

fn chat(path: &str, message: &Value) -> (u16, Value) {
    let text = message["text"].as_str().unwrap_or_default();
    if text.is_empty() && message["cardsV2"].as_array().is_none_or(Vec::is_empty) {
        return invalid_argument("Message cannot be empty. Discarded message.");
    }
    if text.chars().count() > 4096 {
        return invalid_argument("Message text is too long.");
    }
    let space = path.trim_end_matches("/messages");
    let name = format!(
        "{}/messages/{}",
        space.trim_start_matches("/v1/"),
        uuid::Uuid::new_v4().simple()
    );
    (
        200,
        json!({ "name": name, "text": text, "sender": { "type": "BOT" } }),
    )
}

/// Whether the workflow's "Post card in a chat or channel" step would post: a message whose
/// first attachment is an Adaptive Card with a body.
fn teams_card(message: &Value) -> Result<(), String> {
    let attachment = &message["attachments"][0];
    if message["type"] != "message" {
        return Err("the body is not a message".into());
    }
    if attachment["contentType"] != "application/vnd.microsoft.card.adaptive" {
        return Err("the first attachment is not an Adaptive Card".into());
    }
    let card = &attachment["content"];
    if card["type"] != "AdaptiveCard" || card["version"].as_str().is_none() {
        return Err("the attachment's content is not an AdaptiveCard with a version".into());
    }
    if card["body"].as_array().is_none_or(Vec::is_empty) {
        return Err("the card has no body".into());
    }
    Ok(())
}
