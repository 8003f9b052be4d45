//! A fake Cloud Run Admin API v2, for testing `CloudRunPlatform` with the official
//! `google-cloud-run-v2` client. `rest` is its REST surface, `simulation` what it imitates of
//! Cloud Run's behaviour; this module holds their shared state and the handle tests drive.
//!
//! Cloud Run has no emulator that runs outside Google (neither Google nor anyone else ships one), so this
//! is a fake, and an honest one only as far as it follows the documented REST surface field by
//! field:
//!
//! - `PATCH /v2/{service.name}` (`projects.locations.services.patch`): query `updateMask`,
//!   `validateOnly`, `allowMissing`; body a `Service`; answers an `Operation`.
//! - `GET /v2/{name}` (`projects.locations.services.get`): a `Service`.
//! - `DELETE /v2/{name}` (`projects.locations.services.delete`): query `validateOnly`, `etag`;
//!   answers an `Operation` whose response is the deleted `Service`.
//! - `GET /v2/{name}` (`projects.locations.operations.get`): an `Operation`
//!   (`name`, `metadata`, `done`, then `response` or `error`; both `Any`s carry `@type`).
//!
//! The client adds `$alt=json;enum-encoding=int`, asking for enums as numbers; the fake honours
//! it and reads numbers or names. Anything else — another path, method or query parameter —
//! is answered 400/404 and recorded, so a test sees when the client sends something unserved.
//!
//! What Cloud Run does and the fake imitates (from the `Service` reference: `reconciling`,
//! `latestReadyRevision`, `terminalCondition`): each PATCH that changes the template creates a
//! revision `{service}-{00001..}-{abc}`; LATEST routes to the latest *ready* revision; a
//! revision that never gets ready fails the operation with `FAILED_PRECONDITION` ("Revision ...
//! is not ready and cannot serve traffic.", as Cloud Run reports it), sets `terminalCondition`
//! to failed and leaves `trafficStatuses` and `latestReadyRevision` on the last serving
//! revision. Operations answer `done: false` first, so the client's polling runs.
//!
//! It also answers for the identities revisions run as (`identity`: service accounts and
//! secrets' IAM policies) and who may open a service (`access`).
//!
//! What a real revision would serve is stood in for by the fake itself: `Service.uri` is
//! `{base}/serve/{project}/{location}/{service}` on this server, answering which revision and
//! image have the traffic.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use chrono::{SecondsFormat, Utc};
use http::{Method, StatusCode};
use runway_http::{Request, Response, json, read_body};

use crate::google_rest::{GoogleError, any, operation};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use uuid::Uuid;

const SERVICE_TYPE: &str = "type.googleapis.com/google.cloud.run.v2.Service";
const LATEST: &str = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST";
const REVISION: &str = "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION";
/// gRPC codes, as an `Operation.error` carries them.
const FAILED_PRECONDITION: i64 = 9;
const INTERNAL: i64 = 13;

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl SeenRequest {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A revision the fake created.
#[derive(Clone, Debug)]
pub struct FakeRevision {
    /// Short name, `{service}-{00001}-{abc}`.
    pub name: String,
    pub image: String,
    pub ready: bool,
    /// Why it is not ready (empty when ready).
    pub message: String,
    /// The gRPC code an operation that needs it ready fails with.
    pub failure_code: i64,
    /// The `RevisionTemplate` it was created from, enums as names.
    pub template: Value,
}

/// The fake server; stops when dropped.
pub struct FakeCloudRun {
    base_url: String,
    state: Arc<Mutex<State>>,
    _stop: oneshot::Sender<()>,
}

impl FakeCloudRun {
    /// Serves the fake on `127.0.0.1:0`.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}");
        let state = Arc::new(Mutex::new(State::new(&base_url)));
        let shared = state.clone();
        let stop = crate::serve_until_dropped(listener, move |request: Request, _: SocketAddr| {
            let state = shared.clone();
            async move { handle(state, request).await }
        });
        Ok(Self {
            base_url,
            state,
            _stop: stop,
        })
    }

    /// A `CloudRunPlatform` configuration for `project` in `regions` whose every Google API
    /// (Cloud Run, IAP, IAM, Secret Manager) is this fake, sending no credentials, polling fast.
    pub fn platform_config(&self, project: &str, regions: &[&str]) -> runway_gcp::CloudRunConfig {
        let regions = regions.iter().map(|region| (*region).to_owned()).collect();
        let mut config = runway_gcp::CloudRunConfig::new(project, PROJECT_NUMBER, regions);
        config.endpoint = Some(self.endpoint());
        config.iap_endpoint = Some(self.endpoint());
        config.iam_endpoint = Some(self.endpoint());
        config.secret_manager_endpoint = Some(self.endpoint());
        config.anonymous = true;
        config.poll_initial_delay = std::time::Duration::from_millis(10);
        config.poll_max_delay = std::time::Duration::from_millis(50);
        config.operation_timeout = std::time::Duration::from_secs(10);
        config
    }

    /// What `CloudRunConfig::endpoint` should be.
    pub fn endpoint(&self) -> String {
        self.base_url.clone()
    }

    /// Revisions of `image` will never become ready, failing with `message` (as a container
    /// that does not listen on its port would).
    pub fn fail_image(&self, image: &str, message: &str) {
        self.lock()
            .broken_images
            .insert(image.to_owned(), (FAILED_PRECONDITION, message.to_owned()));
    }

    /// Like `fail_image`, but the operation fails with code 13 (INTERNAL), as Cloud Run reports
    /// some revisions that never get ready, e.g. one denied its secret.
    pub fn fail_image_internally(&self, image: &str, message: &str) {
        self.lock()
            .broken_images
            .insert(image.to_owned(), (INTERNAL, message.to_owned()));
    }

    /// The next request with `method` is answered with this error instead
    /// (e.g. `403, "PERMISSION_DENIED"` or `503, "UNAVAILABLE"`).
    pub fn fail_next(&self, method: &str, http_status: u16, status: &str, message: &str) {
        self.lock().injected.push_back(Injected {
            method: method.to_owned(),
            http_status,
            status: status.to_owned(),
            message: message.to_owned(),
        });
    }

    /// The next PATCH is carried out at once, but its operation answers `done: false` until
    /// [`Self::release_held`]: a deploy that is slow to finish, latched.
    pub fn hold_next_patch(&self) {
        self.lock().hold_next_patches += 1;
    }

    /// Lets every held operation finish.
    pub fn release_held(&self) {
        let mut state = self.lock();
        let held: Vec<(String, i64)> = state
            .operations
            .values_mut()
            .filter(|operation| operation.held)
            .map(|operation| {
                operation.held = false;
                (operation.service.clone(), operation.generation)
            })
            .collect();
        for (service, generation) in held {
            if let Some(operation) = state
                .operations
                .values()
                .find(|o| o.service == service && o.generation == generation)
                && operation.polls_left == 0
            {
                finish(&mut state, &service, generation);
            }
        }
    }

    /// How many GETs an operation answers `done: false` to before it is done (default 1).
    pub fn set_pending_polls(&self, polls: u32) {
        self.lock().pending_polls = polls;
    }

    /// The service `projects/P/locations/L/services/S` as a GET returns it, enums as names.
    pub fn service(&self, name: &str) -> Option<Value> {
        let state = self.lock();
        state
            .services
            .get(name)
            .map(|service| service.to_json(name))
    }

    /// Every revision of the service, oldest first.
    pub fn revisions(&self, name: &str) -> Vec<FakeRevision> {
        self.lock()
            .services
            .get(name)
            .map(|service| service.revisions.clone())
            .unwrap_or_default()
    }

    /// Tokens `verify(token, audience)` accepts (giving the email) count as signed-in callers
    /// of the services' URLs; without it, no token does.
    pub fn trust(&self, verify: Verifier) {
        self.lock().iam.verifier = Some(verify);
    }

    /// Behave as an organization whose policy forbids `allUsers` and `allAuthenticatedUsers`.
    pub fn forbid_public_members(&self) {
        self.lock().iam.forbid_public = true;
    }

    /// `email` is a member of `group` (`group:name@domain`).
    pub fn add_to_group(&self, group: &str, email: &str) {
        self.lock()
            .iam
            .groups
            .entry(group.to_owned())
            .or_default()
            .insert(email.to_ascii_lowercase());
    }

    /// Members of `role`'s unconditional binding on a service (its full name) or an IAP
    /// resource.
    pub fn members(&self, resource: &str, role: &str) -> Vec<String> {
        self.lock()
            .iam
            .members(resource, role)
            .into_iter()
            .collect()
    }

    /// Serves Secret Manager in front of drongo at `url`: IAM policies here, the rest there.
    /// Point Runway's Secret Manager client at [`Self::endpoint`].
    pub fn front(&self, url: &str) {
        self.lock().front = Some(url.trim_end_matches('/').to_owned());
    }

    /// Writes what each new revision prints as it starts (or fails to) to `sink`, as Cloud
    /// Run writes its containers' output to Cloud Logging.
    pub fn send_logs_to(&self, sink: crate::fake_cloud_logging::LogSink) {
        self.lock().logs = Some(sink);
    }

    /// The next service account create waits until [`Self::release_account_create`]: a deploy
    /// latched after the worker read the app and before it wrote anything to Cloud Run.
    pub fn hold_next_account_create(&self) {
        self.lock().held_account_create = Some(Arc::new(tokio::sync::Notify::new()));
    }

    /// Lets a held service account create go on (a permit is kept if none waits yet).
    pub fn release_account_create(&self) {
        if let Some(latch) = self.lock().held_account_create.take() {
            latch.notify_one();
        }
    }

    /// Whether a service account create is waiting on the latch.
    pub fn account_create_waiting(&self) -> bool {
        self.lock().account_create_waiting
    }

    /// The project may have at most `quota` service accounts (Google's default is 100).
    pub fn limit_service_accounts(&self, quota: usize) {
        self.lock().iam.accounts.quota = quota;
    }

    /// A policy naming a new service account is refused this many times before IAM knows it
    /// (default 1).
    pub fn settle_after(&self, refusals: u32) {
        self.lock().iam.accounts.settle_after = refusals;
    }

    /// The service accounts that exist, by e-mail, with their `ServiceAccount` resources.
    pub fn service_accounts(&self) -> BTreeMap<String, Value> {
        self.lock().iam.accounts.by_email.clone()
    }

    /// Every Admin API request so far, oldest first (not those to the served URLs).
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panicking handler must not hide the state from the test's assertions.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Injected {
    method: String,
    http_status: u16,
    status: String,
    message: String,
}

struct State {
    base_url: String,
    services: BTreeMap<String, FakeService>,
    operations: HashMap<String, Operation>,
    /// Images whose revisions never get ready: the operation's gRPC code and why.
    broken_images: HashMap<String, (i64, String)>,
    injected: VecDeque<Injected>,
    requests: Vec<SeenRequest>,
    pending_polls: u32,
    /// How many of the next PATCHes start a held operation.
    hold_next_patches: usize,
    iam: Iam,
    /// drongo's URL: Secret Manager calls other than IAM policies go there.
    front: Option<String>,
    /// Cloud Logging, where revisions' lines go (Cloud Run writes its containers' output
    /// there).
    logs: Option<crate::fake_cloud_logging::LogSink>,
    /// A latch on the next service account create: it waits until released.
    held_account_create: Option<Arc<tokio::sync::Notify>>,
    account_create_waiting: bool,
}

impl State {
    fn new(base_url: &str) -> Self {
        Self {
            base_url: base_url.to_owned(),
            services: BTreeMap::new(),
            operations: HashMap::new(),
            broken_images: HashMap::new(),
            injected: VecDeque::new(),
            requests: Vec::new(),
            pending_polls: 1,
            hold_next_patches: 0,
            iam: Iam::default(),
            front: None,
            logs: None,
            held_account_create: None,
            account_create_waiting: false,
        }
    }
}

/// A service: what the user wrote (`spec`) and what Cloud Run observed (the rest).
struct FakeService {
    /// The writable `Service` fields, enums as names.
    spec: Map<String, Value>,
    uid: String,
    uri: String,
    generation: i64,
    observed_generation: i64,
    create_time: String,
    update_time: String,
    revisions: Vec<FakeRevision>,
    /// Where traffic actually goes (the spec's `traffic` is only what was asked for).
    serving: Vec<Route>,
    terminal_condition: Value,
    reconciling: bool,
}

impl FakeService {
    fn full_revision(name: &str, revision: &str) -> String {
        if revision.is_empty() {
            String::new()
        } else {
            format!("{name}/revisions/{revision}")
        }
    }

    /// Changes with every write, as Cloud Run's does.
    fn etag(&self) -> String {
        format!("\"{}-{}\"", self.uid, self.generation)
    }

    fn latest_ready(&self) -> Option<&FakeRevision> {
        self.revisions.iter().rev().find(|revision| revision.ready)
    }

    fn revision(&self, name: &str) -> Option<&FakeRevision> {
        self.revisions.iter().find(|revision| revision.name == name)
    }

    /// The service as GET returns it (enums as names).
    fn to_json(&self, name: &str) -> Value {
        let mut service = self.spec.clone();
        let latest_ready = self.latest_ready().map(|r| r.name.as_str()).unwrap_or("");
        let latest_created = self.revisions.last().map(|r| r.name.as_str()).unwrap_or("");
        let output = json!({
            "name": name,
            "uid": self.uid,
            "generation": self.generation.to_string(),
            "observedGeneration": self.observed_generation.to_string(),
            "createTime": self.create_time,
            "updateTime": self.update_time,
            "creator": "runway-tests@example.com",
            "lastModifier": "runway-tests@example.com",
            "launchStage": "GA",
            "terminalCondition": self.terminal_condition,
            "conditions": self.sub_conditions(),
            "latestReadyRevision": Self::full_revision(name, latest_ready),
            "latestCreatedRevision": Self::full_revision(name, latest_created),
            "trafficStatuses": self.traffic_statuses(),
            "uri": self.uri,
            "urls": [self.uri],
            "reconciling": self.reconciling,
            "etag": self.etag(),
        });
        if let Value::Object(output) = output {
            service.extend(output);
        }
        service
            .entry("ingress")
            .or_insert_with(|| json!("INGRESS_TRAFFIC_ALL"));
        Value::Object(service)
    }

    /// `conditions`: the sub-resources Cloud Run reports beside `terminalCondition`.
    fn sub_conditions(&self) -> Value {
        let state = self.terminal_condition["state"].clone();
        let time = self.terminal_condition["lastTransitionTime"].clone();
        json!([
            { "type": "RoutesReady", "state": state, "lastTransitionTime": time },
            { "type": "ConfigurationsReady", "state": state, "lastTransitionTime": time },
        ])
    }

    /// Like Cloud Run: a LATEST target is reported without a revision.
    fn traffic_statuses(&self) -> Value {
        self.serving
            .iter()
            .map(|route| {
                let mut status = json!({ "type": route.kind, "percent": route.percent });
                if route.kind == REVISION {
                    status["revision"] = json!(route.revision);
                }
                status
            })
            .collect()
    }
}

/// One resolved traffic target.
struct Route {
    revision: String,
    percent: i64,
    /// The target's `type`, as a name.
    kind: String,
}

/// How an operation fails: a gRPC code and Cloud Run's message.
type Failure = (i64, String);

/// A long-running operation and what it ends with.
struct Operation {
    service: String,
    generation: i64,
    polls_left: u32,
    /// Answers `done: false` until the test releases it.
    held: bool,
    /// The service when the operation was started (its `metadata`).
    metadata: Value,
    outcome: Result<Value, Failure>,
}

impl Operation {
    fn to_json(&self, name: &str) -> Value {
        let outcome = (self.polls_left == 0 && !self.held).then(|| match &self.outcome {
            Ok(service) => Ok(any(SERVICE_TYPE, service)),
            Err((code, message)) => Err((*code, message.as_str())),
        });
        operation(name, any(SERVICE_TYPE, &self.metadata), outcome)
    }
}

mod access;
mod identity;
mod rest;
mod simulation;

use access::*;
pub use access::{IAP_ACCESSOR, INVOKER, PROJECT_NUMBER, Verifier, iap_agent};
pub use identity::SECRET_ACCESSOR;
use identity::*;
use rest::*;
use simulation::*;

/// `projects/{project}/locations/{location}/services/{service}`.
pub fn service_name(project: &str, location: &str, service: &str) -> String {
    format!("projects/{project}/locations/{location}/services/{service}")
}

/// What a service's `uri` on the fake answers to an anonymous viewer: `{"service", "revision",
/// "image"}` of the revision that has the traffic.
pub async fn served(url: &str) -> anyhow::Result<Value> {
    served_to(url, None).await
}

/// The status a service's `uri` answers a viewer with this ID token (or none); redirects
/// (IAP's sign-in) are not followed.
pub async fn status_for(url: &str, token: Option<&str>) -> anyhow::Result<StatusCode> {
    let request = viewer_request(url, token)?;
    let status = request
        .send()
        .await
        .context("asking the served URL")?
        .status();
    Ok(StatusCode::from_u16(status.as_u16())?)
}

/// A GET of a served URL as a viewer with this ID token (or none), following no redirect.
fn viewer_request(url: &str, token: Option<&str>) -> anyhow::Result<reqwest::RequestBuilder> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let request = client.get(url);
    Ok(match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    })
}

/// What a service's `uri` answers to a viewer with this ID token (or none).
pub async fn served_to(url: &str, token: Option<&str>) -> anyhow::Result<Value> {
    let request = viewer_request(url, token)?;
    let response = request.send().await.context("asking the served URL")?;
    let status = response.status();
    let body: Value = response.json().await.context("the served URL's JSON")?;
    anyhow::ensure!(status.is_success(), "{url} answered {status}: {body}");
    Ok(body)
}
