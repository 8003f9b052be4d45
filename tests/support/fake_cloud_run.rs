//! A fake Cloud Run Admin API v2, for testing `CloudRunPlatform` with the official
//! `google-cloud-run-v2` client.
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
//! What a real revision would serve is stood in for by the fake itself: `Service.uri` is
//! `{base}/serve/{project}/{location}/{service}` on this server, answering which revision and
//! image have the traffic.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use chrono::{SecondsFormat, Utc};
use http::{Method, StatusCode};
use runway_http::{Request, Response, json, read_body, serve};

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
        let (stop, stopped) = oneshot::channel::<()>();
        let shared = state.clone();
        let service = move |request: Request, _peer: SocketAddr| {
            let state = shared.clone();
            async move { handle(state, request).await }
        };
        tokio::spawn(serve(
            listener,
            service,
            async {
                let _ = stopped.await;
            },
            runway_http::serve::ServeOptions::default(),
        ));
        Ok(Self {
            base_url,
            state,
            _stop: stop,
        })
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
            .insert(image.to_owned(), message.to_owned());
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
    broken_images: HashMap<String, String>,
    injected: VecDeque<Injected>,
    requests: Vec<SeenRequest>,
    pending_polls: u32,
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
            "etag": format!("\"{}-{}\"", self.uid, self.generation),
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
    /// The service when the operation was started (its `metadata`).
    metadata: Value,
    outcome: Result<Value, Failure>,
}

impl Operation {
    fn to_json(&self, name: &str) -> Value {
        let outcome = (self.polls_left == 0).then(|| match &self.outcome {
            Ok(service) => Ok(any(SERVICE_TYPE, service)),
            Err((code, message)) => Err((*code, message.as_str())),
        });
        operation(name, any(SERVICE_TYPE, &self.metadata), outcome)
    }
}

fn error_response(http: u16, status: &str, message: &str) -> Response {
    let code = StatusCode::from_u16(http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    GoogleError::new(code, status, message).response()
}

/// The resource a `/v2/...` path names.
enum Resource {
    Service(String),
    Operation(String),
}

impl Resource {
    fn parse(path: &str) -> Option<Self> {
        let name = path.strip_prefix("/v2/")?;
        let parts: Vec<&str> = name.split('/').collect();
        let named = parts.iter().all(|part| !part.is_empty());
        match parts.as_slice() {
            ["projects", _, "locations", _, "services", _] if named => {
                Some(Self::Service(name.to_owned()))
            }
            ["projects", _, "locations", _, "operations", _] if named => {
                Some(Self::Operation(name.to_owned()))
            }
            _ => None,
        }
    }
}

async fn handle(state: Arc<Mutex<State>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    if let Some(rest) = path.strip_prefix("/serve/") {
        return match serve_app(&lock(&state), rest) {
            Ok(answer) => json(StatusCode::OK, &answer),
            Err(error) => error.response(),
        };
    }
    let method = request.method().clone();
    let query = parse_query(request.uri().query().unwrap_or(""));
    let body = match read_body(request, 1 << 20).await {
        Ok(bytes) if bytes.is_empty() => None,
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(value) => Some(value),
            Err(error) => {
                return GoogleError::invalid(format!("Invalid JSON payload received. {error}"))
                    .response();
            }
        },
        Err(_) => return GoogleError::invalid("unreadable body").response(),
    };
    let seen = SeenRequest {
        method: method.to_string(),
        path,
        query,
        body,
    };
    let mut state = lock(&state);
    state.requests.push(seen.clone());
    if let Some(injected) = take_injected(&mut state, &seen.method) {
        return error_response(injected.http_status, &injected.status, &injected.message);
    }
    let numbers = seen.param("$alt") == Some("json;enum-encoding=int");
    match route(&mut state, &method, &seen) {
        Ok((status, mut body)) => {
            if numbers {
                encode_enums(&mut body, Encoding::Numbers);
            }
            json(status, &body)
        }
        Err(error) => error.response(),
    }
}

fn take_injected(state: &mut State, method: &str) -> Option<Injected> {
    let index = state.injected.iter().position(|i| i.method == method)?;
    state.injected.remove(index)
}

fn route(
    state: &mut State,
    method: &Method,
    request: &SeenRequest,
) -> Result<(StatusCode, Value), GoogleError> {
    let resource = Resource::parse(&request.path)
        .ok_or_else(|| GoogleError::not_found(&format!("{} {}", method, request.path)))?;
    match (method, resource) {
        (&Method::PATCH, Resource::Service(name)) => {
            only_params(
                request,
                &["updateMask", "validateOnly", "allowMissing", "$alt"],
            )?;
            patch_service(state, &name, request)
        }
        (&Method::GET, Resource::Service(name)) => {
            only_params(request, &["$alt"])?;
            let service = state
                .services
                .get(&name)
                .ok_or_else(|| GoogleError::not_found(&name))?;
            Ok((StatusCode::OK, service.to_json(&name)))
        }
        (&Method::DELETE, Resource::Service(name)) => {
            only_params(request, &["validateOnly", "etag", "$alt"])?;
            delete_service(state, &name, request)
        }
        (&Method::GET, Resource::Operation(name)) => {
            only_params(request, &["$alt"])?;
            get_operation(state, &name)
        }
        (method, _) => Err(GoogleError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNIMPLEMENTED",
            format!("{method} {} is not served by the fake", request.path),
        )),
    }
}

/// Refuses query parameters the API does not document for this method, as Google does.
fn only_params(request: &SeenRequest, allowed: &[&str]) -> Result<(), GoogleError> {
    match request
        .query
        .iter()
        .find(|(key, _)| !allowed.contains(&key.as_str()))
    {
        Some((key, _)) => Err(GoogleError::invalid(format!(
            "Invalid JSON payload received. Unknown name \"{key}\": Cannot bind query parameter."
        ))),
        None => Ok(()),
    }
}

fn flag(request: &SeenRequest, name: &str) -> bool {
    request.param(name) == Some("true")
}

fn patch_service(
    state: &mut State,
    name: &str,
    request: &SeenRequest,
) -> Result<(StatusCode, Value), GoogleError> {
    if flag(request, "validateOnly") {
        return Err(GoogleError::invalid(
            "validateOnly is not supported by the fake",
        ));
    }
    let mut body = request
        .body
        .clone()
        .ok_or_else(|| GoogleError::invalid("the request body must be a Service"))?;
    encode_enums(&mut body, Encoding::Names);
    let Value::Object(body) = body else {
        return Err(GoogleError::invalid("the request body must be a Service"));
    };
    if body.get("name").and_then(Value::as_str) != Some(name) {
        return Err(GoogleError::invalid("service.name must match the URL"));
    }
    let mask = request.param("updateMask").map(|mask| {
        mask.split(',')
            .map(str::trim)
            .filter(|field| !field.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    });
    let existed = state.services.contains_key(name);
    if !existed && !flag(request, "allowMissing") {
        return Err(GoogleError::not_found(name));
    }
    let mut service = state
        .services
        .remove(name)
        .unwrap_or_else(|| new_service(&state.base_url, name));
    let outcome = match apply(
        &mut service,
        name,
        body,
        mask.as_deref(),
        &state.broken_images,
    ) {
        Ok(outcome) => outcome,
        Err(error) => {
            if existed {
                state.services.insert(name.to_owned(), service);
            }
            return Err(error);
        }
    };
    let operation = Operation {
        service: name.to_owned(),
        generation: service.generation,
        polls_left: state.pending_polls,
        metadata: service.to_json(name),
        outcome,
    };
    state.services.insert(name.to_owned(), service);
    Ok((StatusCode::OK, start_operation(state, name, operation)))
}

fn new_service(base_url: &str, name: &str) -> FakeService {
    let now = now();
    let path: Vec<&str> = name.split('/').collect();
    let (project, location, id) = (path[1], path[3], path[5]);
    FakeService {
        spec: Map::new(),
        uid: Uuid::new_v4().to_string(),
        uri: format!("{base_url}/serve/{project}/{location}/{id}"),
        generation: 0,
        observed_generation: 0,
        create_time: now.clone(),
        update_time: now,
        revisions: Vec::new(),
        serving: Vec::new(),
        terminal_condition: condition("CONDITION_PENDING", ""),
        reconciling: false,
    }
}

/// Writes the masked (or all) fields, makes a revision if the template changed, and routes
/// traffic. Returns what the operation will end with: the service, or a gRPC error. A request
/// the API would reject changes nothing.
fn apply(
    service: &mut FakeService,
    name: &str,
    body: Map<String, Value>,
    mask: Option<&[String]>,
    broken: &HashMap<String, String>,
) -> Result<Result<Value, Failure>, GoogleError> {
    let mut spec = service.spec.clone();
    write_fields(&mut spec, body, mask)?;
    let template = spec.get("template").cloned().unwrap_or(Value::Null);
    let changed = service.revisions.is_empty() || service.spec.get("template") != Some(&template);
    let revision = match changed {
        true => Some(new_revision(service, name, &template, broken)?),
        false => None,
    };
    service.spec = spec;
    service.revisions.extend(revision);
    service.generation += 1;
    service.update_time = now();
    service.reconciling = true;
    Ok(reconcile(service, name))
}

/// A PATCH without `updateMask` replaces every writable field; with one, only those named.
fn write_fields(
    spec: &mut Map<String, Value>,
    mut body: Map<String, Value>,
    mask: Option<&[String]>,
) -> Result<(), GoogleError> {
    body.remove("name");
    match mask {
        None => *spec = body,
        Some(fields) => {
            for field in fields {
                if field.contains('.') {
                    return Err(GoogleError::invalid(format!(
                        "the fake supports only top-level update mask fields, not {field}"
                    )));
                }
                match body.remove(field) {
                    Some(value) => spec.insert(field.clone(), value),
                    None => spec.remove(field),
                };
            }
        }
    }
    Ok(())
}

fn new_revision(
    service: &FakeService,
    name: &str,
    template: &Value,
    broken: &HashMap<String, String>,
) -> Result<FakeRevision, GoogleError> {
    let containers = template["containers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let [container] = containers else {
        return Err(GoogleError::invalid(
            "template.containers: a service needs exactly one container (the fake serves one)",
        ));
    };
    let image = container["image"].as_str().unwrap_or_default().to_owned();
    if image.is_empty() {
        return Err(GoogleError::invalid(
            "template.containers[0].image is required",
        ));
    }
    let id = name.rsplit('/').next().unwrap_or(name);
    let revision = format!(
        "{id}-{:05}-{}",
        service.revisions.len() + 1,
        random_suffix()
    );
    let failure = broken
        .get(&image)
        .map(|why| format!("Revision '{revision}' is not ready and cannot serve traffic. {why}"));
    Ok(FakeRevision {
        name: revision,
        image,
        ready: failure.is_none(),
        message: failure.unwrap_or_default(),
        template: template.clone(),
    })
}

/// Three random lowercase letters, as Cloud Run ends revision names.
fn random_suffix() -> String {
    Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(3)
        .map(|byte| char::from(b'a' + byte % 26))
        .collect()
}

/// Routes traffic as the spec asks, if it can. On failure the previous routing stays and the
/// terminal condition says why.
fn reconcile(service: &mut FakeService, name: &str) -> Result<Value, Failure> {
    match route_traffic(service) {
        Ok(serving) => {
            service.serving = serving;
            service.observed_generation = service.generation;
            service.terminal_condition = condition("CONDITION_SUCCEEDED", "");
            Ok(service.to_json(name))
        }
        Err((code, message)) => {
            service.terminal_condition = condition("CONDITION_FAILED", &message);
            Err((code, message))
        }
    }
}

fn route_traffic(service: &FakeService) -> Result<Vec<Route>, Failure> {
    if let Some(created) = service.revisions.last()
        && !created.ready
    {
        return Err((FAILED_PRECONDITION, created.message.clone()));
    }
    let default = vec![json!({ "type": LATEST, "percent": 100 })];
    let targets = service
        .spec
        .get("traffic")
        .and_then(Value::as_array)
        .filter(|targets| !targets.is_empty())
        .unwrap_or(&default);
    targets
        .iter()
        .map(|target| {
            let kind = target["type"].as_str().unwrap_or(LATEST).to_owned();
            let percent = target["percent"].as_i64().unwrap_or(0);
            let revision = if kind == REVISION {
                pinned(service, target["revision"].as_str().unwrap_or_default())?
            } else {
                service
                    .latest_ready()
                    .map(|r| r.name.clone())
                    .unwrap_or_default()
            };
            Ok(Route {
                revision,
                percent,
                kind,
            })
        })
        .collect()
}

/// A revision traffic is pinned to must exist and be ready. For a missing one Cloud Run has
/// been seen failing the operation with code 13 and this message (Terraform users report it).
fn pinned(service: &FakeService, revision: &str) -> Result<String, Failure> {
    match service.revision(revision) {
        None => Err((
            INTERNAL,
            format!(
                "Revision '{revision}' does not exist or is deleted. Update all traffic to \
                 route to currently available revisions."
            ),
        )),
        Some(found) if !found.ready => Err((FAILED_PRECONDITION, found.message.clone())),
        Some(found) => Ok(found.name.clone()),
    }
}

fn condition(state: &str, message: &str) -> Value {
    let mut condition = json!({
        "type": "Ready",
        "state": state,
        "lastTransitionTime": now(),
    });
    if !message.is_empty() {
        condition["message"] = json!(message);
        condition["severity"] = json!("ERROR");
    }
    condition
}

fn delete_service(
    state: &mut State,
    name: &str,
    request: &SeenRequest,
) -> Result<(StatusCode, Value), GoogleError> {
    if flag(request, "validateOnly") {
        return Err(GoogleError::invalid(
            "validateOnly is not supported by the fake",
        ));
    }
    let service = state
        .services
        .remove(name)
        .ok_or_else(|| GoogleError::not_found(name))?;
    let last = service.to_json(name);
    let operation = Operation {
        service: name.to_owned(),
        generation: service.generation,
        polls_left: state.pending_polls,
        metadata: last.clone(),
        outcome: Ok(last),
    };
    Ok((StatusCode::OK, start_operation(state, name, operation)))
}

/// Records the operation and answers its first state (not done, unless polls are off).
fn start_operation(state: &mut State, service: &str, operation: Operation) -> Value {
    let location = service.split("/services/").next().unwrap_or(service);
    let name = format!("{location}/operations/{}", Uuid::new_v4());
    if operation.polls_left == 0 {
        finish(state, &operation.service, operation.generation);
    }
    let answer = operation.to_json(&name);
    state.operations.insert(name, operation);
    answer
}

fn get_operation(state: &mut State, name: &str) -> Result<(StatusCode, Value), GoogleError> {
    let operation = state
        .operations
        .get_mut(name)
        .ok_or_else(|| GoogleError::not_found(name))?;
    if operation.polls_left > 0 {
        operation.polls_left -= 1;
        if operation.polls_left == 0 {
            let (service, generation) = (operation.service.clone(), operation.generation);
            finish(state, &service, generation);
        }
    }
    let operation = state
        .operations
        .get(name)
        .ok_or_else(|| GoogleError::not_found(name))?;
    Ok((StatusCode::OK, operation.to_json(name)))
}

/// An operation is done: its service stops reconciling, unless a newer change is under way.
fn finish(state: &mut State, service: &str, generation: i64) {
    if let Some(service) = state.services.get_mut(service)
        && service.generation == generation
    {
        service.reconciling = false;
    }
}

/// The stand-in for the app itself: which revision (and image) answers at the service's URL.
fn serve_app(state: &State, rest: &str) -> Result<Value, GoogleError> {
    let [project, location, id] = rest.split('/').collect::<Vec<_>>()[..] else {
        return Err(GoogleError::not_found(rest));
    };
    let name = format!("projects/{project}/locations/{location}/services/{id}");
    let service = state
        .services
        .get(&name)
        .ok_or_else(|| GoogleError::not_found(&name))?;
    let serving = service
        .serving
        .iter()
        .max_by_key(|route| route.percent)
        .and_then(|route| service.revision(&route.revision));
    match serving {
        Some(revision) => {
            Ok(json!({ "service": id, "revision": revision.name, "image": revision.image }))
        }
        None => Err(GoogleError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "no revision is serving",
        )),
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Names,
    Numbers,
}

/// The enum fields of a `Service` the fake reads or writes, with their proto numbers.
/// An enum's values: (proto number, name).
type EnumTable = &'static [(i64, &'static str)];

const ENUM_FIELDS: &[(&[&str], EnumTable)] = &[
    (&["traffic", "[]", "type"], TRAFFIC_TYPES),
    (&["trafficStatuses", "[]", "type"], TRAFFIC_TYPES),
    (&["terminalCondition", "state"], CONDITION_STATES),
    (&["terminalCondition", "severity"], SEVERITIES),
    (&["conditions", "[]", "state"], CONDITION_STATES),
    (&["conditions", "[]", "severity"], SEVERITIES),
    (&["ingress"], INGRESS),
    (&["launchStage"], LAUNCH_STAGES),
    (
        &["template", "executionEnvironment"],
        EXECUTION_ENVIRONMENTS,
    ),
];

const TRAFFIC_TYPES: EnumTable = &[
    (0, "TRAFFIC_TARGET_ALLOCATION_TYPE_UNSPECIFIED"),
    (1, LATEST),
    (2, REVISION),
];
const CONDITION_STATES: EnumTable = &[
    (0, "STATE_UNSPECIFIED"),
    (1, "CONDITION_PENDING"),
    (2, "CONDITION_RECONCILING"),
    (3, "CONDITION_FAILED"),
    (4, "CONDITION_SUCCEEDED"),
];
const SEVERITIES: EnumTable = &[
    (0, "SEVERITY_UNSPECIFIED"),
    (1, "ERROR"),
    (2, "WARNING"),
    (3, "INFO"),
];
const INGRESS: EnumTable = &[
    (0, "INGRESS_TRAFFIC_UNSPECIFIED"),
    (1, "INGRESS_TRAFFIC_ALL"),
    (2, "INGRESS_TRAFFIC_INTERNAL_ONLY"),
    (3, "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"),
    (4, "INGRESS_TRAFFIC_NONE"),
];
const LAUNCH_STAGES: EnumTable = &[
    (0, "LAUNCH_STAGE_UNSPECIFIED"),
    (1, "EARLY_ACCESS"),
    (2, "ALPHA"),
    (3, "BETA"),
    (4, "GA"),
    (5, "DEPRECATED"),
    (6, "UNIMPLEMENTED"),
    (7, "PRELAUNCH"),
];
const EXECUTION_ENVIRONMENTS: EnumTable = &[
    (0, "EXECUTION_ENVIRONMENT_UNSPECIFIED"),
    (1, "EXECUTION_ENVIRONMENT_GEN1"),
    (2, "EXECUTION_ENVIRONMENT_GEN2"),
];

/// Rewrites the known enum fields of a `Service` (or an `Operation` holding one) as names or
/// as numbers; values it does not know stay as they are.
fn encode_enums(value: &mut Value, to: Encoding) {
    for key in ["metadata", "response"] {
        if let Some(inner) = value.get_mut(key) {
            encode_enums(inner, to);
        }
    }
    for (path, table) in ENUM_FIELDS {
        rewrite(value, path, &|field| convert(field, table, to));
    }
}

fn rewrite(value: &mut Value, path: &[&str], f: &dyn Fn(&mut Value)) {
    match path {
        [] => f(value),
        ["[]", rest @ ..] => {
            if let Some(items) = value.as_array_mut() {
                items.iter_mut().for_each(|item| rewrite(item, rest, f));
            }
        }
        [key, rest @ ..] => {
            if let Some(field) = value.get_mut(*key) {
                rewrite(field, rest, f);
            }
        }
    }
}

fn convert(field: &mut Value, table: EnumTable, to: Encoding) {
    let found = table
        .iter()
        .find(|(number, name)| field.as_i64() == Some(*number) || field.as_str() == Some(*name));
    if let Some((number, name)) = found {
        *field = match to {
            Encoding::Names => json!(name),
            Encoding::Numbers => json!(number),
        };
    }
}

/// `projects/{project}/locations/{location}/services/{service}`.
pub fn service_name(project: &str, location: &str, service: &str) -> String {
    format!("projects/{project}/locations/{location}/services/{service}")
}

/// What a service's `uri` on the fake answers: `{"service", "revision", "image"}` of the revision
/// that has the traffic.
pub async fn served(url: &str) -> anyhow::Result<Value> {
    let response = reqwest::get(url).await.context("asking the served URL")?;
    let status = response.status();
    let body: Value = response.json().await.context("the served URL's JSON")?;
    anyhow::ensure!(status.is_success(), "{url} answered {status}: {body}");
    Ok(body)
}
