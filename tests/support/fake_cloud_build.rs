//! A fake Cloud Build, because Cloud Build has no emulator.
//!
//! It serves the REST endpoints the official `google-cloud-build-v1` client calls, in the shapes
//! the Cloud Build v1 reference documents, field by field: `projects.builds.create` and
//! `projects.locations.builds.create` (an `Operation` whose `metadata` is a
//! `type.googleapis.com/google.devtools.cloudbuild.v1.BuildOperationMetadata` naming the build),
//! `builds.get`, `builds.list` (filter `tags="…"` only) and `operations.get`. A `Build` carries
//! `name`, `id`, `projectId`, `status`, `statusDetail`, `source.storageSource`,
//! `sourceProvenance`, `steps` (with their status), `results.images[{name, digest}]`,
//! `createTime`/`startTime`/`finishTime`, `timeout`, `queueTtl`, `images`, `logsBucket`,
//! `options`, `logUrl`, `tags`, `serviceAccount` and `failureInfo`. Like the real service it
//! honours the client's `$alt=json;enum-encoding=int` (enums as numbers) and speaks string enums
//! everywhere else.
//!
//! What it does instead of running Docker, honestly: it downloads the source object from
//! fake-gcs-server, unpacks it, runs only `gcr.io/cloud-builders/docker` steps (a `docker pull`
//! finds an image only if an earlier build of this fake pushed it; `docker build` checks the
//! Dockerfile has a `FROM`, that its `COPY`/`ADD` sources are in the context and that the main
//! file its `streamlit run` names exists), fails when a knob says so, writes
//! `log-{id}.txt` to the logs bucket in Cloud Build's log layout, "pushes" `images` with the
//! digest `sha256:` + the hex SHA-256 of the source tarball, and publishes QUEUED → WORKING →
//! SUCCESS/FAILURE to the Pub/Sub emulator's `cloud-builds` topic exactly as Cloud Build does
//! (`data` = base64 of the Build JSON, attributes `buildId` and `status`).

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::extract::{Path, State as Shared};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{SecondsFormat, Utc};
use http::StatusCode;
use runway_http::{ApiResult, Request, Router, json, read_body, serve_router};

use crate::google_rest::{GoogleError, any, operation, query, wants_int_enums};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const METADATA_TYPE: &str =
    "type.googleapis.com/google.devtools.cloudbuild.v1.BuildOperationMetadata";
const BUILD_TYPE: &str = "type.googleapis.com/google.devtools.cloudbuild.v1.Build";
const DOCKER: &str = "gcr.io/cloud-builders/docker";
/// The fake project's number, as logUrl and the default service account show it.
const PROJECT_NUMBER: &str = "123456789012";

/// A running fake, stopped when dropped.
pub struct FakeCloudBuild {
    url: String,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
}

struct State {
    project: String,
    gcs: String,
    pubsub: String,
    http: reqwest::Client,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    builds: BTreeMap<String, Record>,
    /// `METHOD path?query` of every request, in order.
    requests: Vec<String>,
    /// Images an earlier build pushed (so `docker pull` of `:latest` finds them).
    pushed: HashSet<String>,
    failures: Vec<(String, String)>,
    drop_final_notification: bool,
    duration: Duration,
    next: u64,
}

struct Record {
    /// The Build resource, enums as strings.
    build: Value,
    operation: String,
    /// What was built: the unpacked source, path → bytes.
    files: BTreeMap<String, Vec<u8>>,
}

/// Why a step failed: the log's last words and the build's statusDetail.
struct StepFailure {
    log: Vec<String>,
    status: &'static str,
    /// `failureInfo.type`.
    kind: &'static str,
}

impl FakeCloudBuild {
    /// Serves on 127.0.0.1 for `project`, whose `cloud-builds` topic it creates on the Pub/Sub
    /// emulator at `pubsub`; sources and logs live on fake-gcs-server at `gcs`.
    pub async fn start(project: &str, gcs: &str, pubsub: &str) -> anyhow::Result<Self> {
        let state = Arc::new(State {
            project: project.to_owned(),
            gcs: gcs.trim_end_matches('/').to_owned(),
            pubsub: pubsub.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            inner: Mutex::new(Inner {
                duration: Duration::from_millis(100),
                ..Default::default()
            }),
        });
        let topic = format!("{}/v1/projects/{project}/topics/cloud-builds", state.pubsub);
        let response = state.http.put(&topic).json(&json!({})).send().await?;
        if !response.status().is_success() && response.status() != StatusCode::CONFLICT {
            bail!(
                "creating {topic}: {} {}",
                response.status(),
                response.text().await?
            );
        }
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(serve_router(router(state.clone()), listener, async {
            let _ = stopped.await;
        }));
        Ok(Self {
            url,
            state,
            stop: Some(stop),
        })
    }

    /// The endpoint to give the client (`with_endpoint`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Builds whose source has `needle` in the file at `path` fail in the `docker build` step,
    /// the way a bad requirement fails a real one.
    pub fn fail_when_file_contains(&self, path: &str, needle: &str) {
        self.inner()
            .failures
            .push((path.to_owned(), needle.to_owned()));
    }

    /// Publishes no notification for the build's end (cleanup's poll fallback has to notice).
    pub fn drop_final_notification(&self, drop: bool) {
        self.inner().drop_final_notification = drop;
    }

    /// How long a build stays WORKING (100 ms unless set).
    pub fn set_build_duration(&self, duration: Duration) {
        self.inner().duration = duration;
    }

    /// The Build resource as the REST API shows it (string enums).
    pub fn build(&self, id: &str) -> Option<Value> {
        self.inner()
            .builds
            .get(id)
            .map(|record| record.build.clone())
    }

    /// Every request the client sent, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.inner().requests.clone()
    }

    /// The name of the long-running operation `create` answered for the build.
    pub fn operation_name(&self, id: &str) -> Option<String> {
        Some(self.inner().builds.get(id)?.operation.clone())
    }

    /// The ids of every build created so far.
    pub fn build_ids(&self) -> Vec<String> {
        self.inner().builds.keys().cloned().collect()
    }

    /// A file of the source the build used, once it has fetched it.
    pub fn source_file(&self, id: &str, path: &str) -> Option<Vec<u8>> {
        self.inner().builds.get(id)?.files.get(path).cloned()
    }

    /// Every file path of the source the build used.
    pub fn source_paths(&self, id: &str) -> Vec<String> {
        self.inner()
            .builds
            .get(id)
            .map(|record| record.files.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.state.inner.lock().expect("fake state")
    }
}

impl Drop for FakeCloudBuild {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn router(state: Arc<State>) -> Router {
    axum::Router::new()
        .route("/v1/projects/{project}/builds", post(create).get(list))
        .route(
            "/v1/projects/{project}/locations/{location}/builds",
            post(create).get(list),
        )
        .route("/v1/projects/{project}/builds/{id}", get(get_build))
        .route(
            "/v1/projects/{project}/locations/{location}/builds/{id}",
            get(get_build),
        )
        .route(
            "/v1/projects/{project}/locations/{location}/operations/{operation}",
            get(get_operation),
        )
        .route("/v1/operations/{*operation}", get(get_operation))
        .with_state(state)
}

/// A route's path parameters by name; a name the route lacks reads as "".
#[derive(serde::Deserialize)]
#[serde(transparent)]
struct Params(std::collections::HashMap<String, String>);

impl Params {
    fn get(&self, name: &str) -> &str {
        self.0.get(name).map_or("", String::as_str)
    }
}

/// Google's error body, which the client turns into a status with this code.
fn google_error(code: StatusCode, status: &str, message: &str) -> ApiResult {
    Ok(GoogleError::new(code, status, message).response())
}

fn record(state: &State, request: &Request) {
    let line = format!("{} {}", request.method(), request.uri());
    state.inner.lock().expect("fake state").requests.push(line);
}

/// The build's region: from the path, else from the `parent` query parameter that
/// `projects.builds.create` documents, else global.
fn location(params: &Params, request: &Request) -> String {
    if !params.get("location").is_empty() {
        return params.get("location").to_owned();
    }
    query(request)
        .get("parent")
        .and_then(|parent| parent.split('/').nth(3).map(str::to_owned))
        .filter(|location| !location.is_empty())
        .unwrap_or_else(|| "global".to_owned())
}

fn check_project(state: &State, params: &Params) -> Option<ApiResult> {
    (params.get("project") != state.project).then(|| {
        google_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            &format!(
                "The caller does not have permission (this fake serves project {} only)",
                state.project
            ),
        )
    })
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

async fn create(
    Shared(state): Shared<Arc<State>>,
    Path(params): Path<Params>,
    request: Request,
) -> ApiResult {
    record(&state, &request);
    if let Some(refused) = check_project(&state, &params) {
        return refused;
    }
    let ints = wants_int_enums(&request);
    let location = location(&params, &request);
    let body = read_body(request, 10 << 20).await?;
    let Ok(mut build) = serde_json::from_slice::<Value>(&body) else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "the body is not a Build",
        );
    };
    let Some(storage) = build.pointer("/source/storageSource").cloned() else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "this fake builds only from source.storageSource",
        );
    };
    if build["steps"].as_array().is_none_or(Vec::is_empty) {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "invalid build: build must have at least one step",
        );
    }
    if let Some(bad) = build["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|tag| !is_tag(tag))
    {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            &format!(
                "invalid build tag {bad:?}: must match format \"^[\\\\w][\\\\w.-]{{0,127}}$\""
            ),
        );
    }
    let (id, operation) = {
        let mut inner = state.inner.lock().expect("fake state");
        inner.next += 1;
        let id = uuid_like(inner.next);
        let operation = if location == "global" {
            format!(
                "operations/build/{}/{}",
                state.project,
                BASE64.encode(&id).trim_end_matches('=')
            )
        } else {
            format!(
                "projects/{}/locations/{location}/operations/{}",
                state.project,
                uuid_like(inner.next + 1_000_000)
            )
        };
        (id, operation)
    };
    let fields = build.as_object_mut().expect("a JSON object");
    fields.insert(
        "name".into(),
        json!(format!(
            "projects/{}/locations/{location}/builds/{id}",
            state.project
        )),
    );
    fields.insert("id".into(), json!(id));
    fields.insert("projectId".into(), json!(state.project));
    fields.insert("status".into(), json!("QUEUED"));
    fields.insert("createTime".into(), json!(now()));
    fields.entry("timeout").or_insert(json!("600s"));
    fields.entry("queueTtl").or_insert(json!("3600s"));
    fields.insert(
        "logUrl".into(),
        json!(format!(
            "https://console.cloud.google.com/cloud-build/builds;region={location}/{id}?project={PROJECT_NUMBER}"
        )),
    );
    fields.entry("serviceAccount").or_insert(json!(format!(
        "projects/{}/serviceAccounts/{PROJECT_NUMBER}-compute@developer.gserviceaccount.com",
        state.project
    )));
    fields.insert(
        "sourceProvenance".into(),
        json!({"resolvedStorageSource": storage}),
    );
    if let Some(logging) = fields
        .get_mut("options")
        .and_then(|options| options.get_mut("logging"))
        && let Some(number) = logging.as_i64()
    {
        *logging = json!(logging_name(number));
    }
    let mut inner = state.inner.lock().expect("fake state");
    inner.builds.insert(
        id.clone(),
        Record {
            build: build.clone(),
            operation: operation.clone(),
            files: BTreeMap::new(),
        },
    );
    drop(inner);
    tokio::spawn(run(state.clone(), id.clone()));
    let operation = operation_json(&operation, &build, false);
    Ok(json(StatusCode::OK, &encode(operation, ints)))
}

async fn get_build(
    Shared(state): Shared<Arc<State>>,
    Path(params): Path<Params>,
    request: Request,
) -> ApiResult {
    record(&state, &request);
    if let Some(refused) = check_project(&state, &params) {
        return refused;
    }
    let id = params.get("id");
    let build = state
        .inner
        .lock()
        .expect("fake state")
        .builds
        .get(id)
        .map(|record| record.build.clone());
    match build {
        Some(build) => Ok(json(
            StatusCode::OK,
            &encode(build, wants_int_enums(&request)),
        )),
        None => google_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Requested entity was not found: build {id}"),
        ),
    }
}

async fn list(
    Shared(state): Shared<Arc<State>>,
    Path(params): Path<Params>,
    request: Request,
) -> ApiResult {
    record(&state, &request);
    if let Some(refused) = check_project(&state, &params) {
        return refused;
    }
    let query = query(&request);
    let filter = query.get("filter").map(String::as_str).unwrap_or_default();
    let tag = if filter.is_empty() {
        None
    } else {
        match filter
            .strip_prefix("tags")
            .map(str::trim_start)
            .and_then(|rest| rest.strip_prefix('='))
            .map(str::trim)
            .and_then(|rest| rest.strip_prefix('"')?.strip_suffix('"'))
        {
            Some(tag) => Some(tag.to_owned()),
            None => {
                return google_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    &format!("this fake understands only tags=\"…\" filters, not {filter:?}"),
                );
            }
        }
    };
    let page_size: usize = query
        .get("pageSize")
        .and_then(|size| size.parse().ok())
        .filter(|size| *size > 0)
        .unwrap_or(25);
    let offset: usize = query
        .get("pageToken")
        .and_then(|token| token.parse().ok())
        .unwrap_or(0);
    let mut builds: Vec<Value> = state
        .inner
        .lock()
        .expect("fake state")
        .builds
        .values()
        .map(|record| record.build.clone())
        .filter(|build| {
            tag.as_ref().is_none_or(|tag| {
                build["tags"]
                    .as_array()
                    .is_some_and(|tags| tags.iter().any(|t| t == tag.as_str()))
            })
        })
        .collect();
    // Newest first, as the API documents.
    builds.sort_by(|a, b| b["createTime"].as_str().cmp(&a["createTime"].as_str()));
    let page: Vec<Value> = builds
        .iter()
        .skip(offset)
        .take(page_size)
        .cloned()
        .collect();
    let mut body = json!({ "builds": page });
    if offset + page_size < builds.len() {
        body["nextPageToken"] = json!((offset + page_size).to_string());
    }
    Ok(json(
        StatusCode::OK,
        &encode(body, wants_int_enums(&request)),
    ))
}

async fn get_operation(
    Shared(state): Shared<Arc<State>>,
    Path(params): Path<Params>,
    request: Request,
) -> ApiResult {
    record(&state, &request);
    let name = match params.get("operation") {
        operation if params.get("project").is_empty() => format!("operations/{operation}"),
        operation => format!(
            "projects/{}/locations/{}/operations/{operation}",
            params.get("project"),
            params.get("location")
        ),
    };
    let found = state
        .inner
        .lock()
        .expect("fake state")
        .builds
        .values()
        .find(|record| record.operation == name)
        .map(|record| record.build.clone());
    match found {
        Some(build) => {
            let done = is_finished(&build);
            Ok(json(
                StatusCode::OK,
                &encode(
                    operation_json(&name, &build, done),
                    wants_int_enums(&request),
                ),
            ))
        }
        None => google_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("operation {name} not found"),
        ),
    }
}

fn operation_json(name: &str, build: &Value, done: bool) -> Value {
    let metadata = any(METADATA_TYPE, &json!({ "build": build }));
    let outcome = done.then(|| {
        if build["status"] == "SUCCESS" {
            Ok(any(BUILD_TYPE, build))
        } else {
            Err((2, "Build failed; check build logs for details"))
        }
    });
    operation(name, metadata, outcome)
}

fn is_finished(build: &Value) -> bool {
    !matches!(
        build["status"].as_str(),
        Some("QUEUED" | "WORKING" | "PENDING")
    )
}

/// Enums as numbers wherever a `status` or `logging` field holds one of their names.
fn encode(mut value: Value, ints: bool) -> Value {
    fn walk(value: &mut Value, parent: &str) {
        match value {
            Value::Object(fields) => {
                for (key, field) in fields.iter_mut() {
                    match (parent, key.as_str(), field.as_str()) {
                        (_, "status", Some(name)) => *field = json!(status_number(name)),
                        (_, "logging", Some(name)) => *field = json!(enum_number(&LOGGING, name)),
                        ("failureInfo", "type", Some(name)) => {
                            *field = json!(enum_number(&FAILURE_TYPES, name));
                        }
                        _ => walk(field, key),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| walk(item, parent)),
            _ => {}
        }
    }
    if ints {
        walk(&mut value, "");
    }
    value
}

fn status_number(name: &str) -> i64 {
    match name {
        "QUEUED" => 1,
        "WORKING" => 2,
        "SUCCESS" => 3,
        "FAILURE" => 4,
        "INTERNAL_ERROR" => 5,
        "TIMEOUT" => 6,
        "CANCELLED" => 7,
        "EXPIRED" => 9,
        "PENDING" => 10,
        _ => 0,
    }
}

const LOGGING: [&str; 6] = [
    "LOGGING_UNSPECIFIED",
    "LEGACY",
    "GCS_ONLY",
    "STACKDRIVER_ONLY",
    "NONE",
    "CLOUD_LOGGING_ONLY",
];

fn logging_name(number: i64) -> &'static str {
    usize::try_from(number)
        .ok()
        .and_then(|i| LOGGING.get(i))
        .copied()
        .unwrap_or("LOGGING_UNSPECIFIED")
}

const FAILURE_TYPES: [&str; 7] = [
    "FAILURE_TYPE_UNSPECIFIED",
    "PUSH_FAILED",
    "PUSH_IMAGE_NOT_FOUND",
    "PUSH_NOT_AUTHORIZED",
    "LOGGING_FAILURE",
    "USER_BUILD_STEP",
    "FETCH_SOURCE_FAILED",
];

fn enum_number(names: &[&str], name: &str) -> i64 {
    names.iter().position(|n| *n == name).unwrap_or(0) as i64
}

fn is_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A build id in Cloud Build's shape (a UUID), unique within this fake.
fn uuid_like(n: u64) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{}-{}-{}-{}-{:012x}",
        &random[..8],
        &random[8..12],
        &random[12..16],
        &random[16..20],
        n
    )
}

impl State {
    fn update(&self, id: &str, change: impl FnOnce(&mut Record)) -> Value {
        let mut inner = self.inner.lock().expect("fake state");
        let record = inner.builds.get_mut(id).expect("a build this fake made");
        change(record);
        record.build.clone()
    }

    /// Publishes the build as Cloud Build does on each status change.
    async fn notify(&self, build: &Value) {
        let data = serde_json::to_vec(build).expect("JSON");
        let body = json!({"messages": [{
            "data": BASE64.encode(data),
            "attributes": {
                "buildId": build["id"],
                "status": build["status"],
            },
        }]});
        let url = format!(
            "{}/v1/projects/{}/topics/cloud-builds:publish",
            self.pubsub, self.project
        );
        match self.http.post(&url).json(&body).send().await {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => eprintln!("fake cloud build: publish answered {}", response.status()),
            Err(error) => eprintln!("fake cloud build: publish failed: {error}"),
        }
    }

    async fn download(
        &self,
        bucket: &str,
        object: &str,
        generation: Option<&str>,
    ) -> anyhow::Result<Vec<u8>> {
        let mut url = url::Url::parse(&self.gcs)?;
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("bad GCS URL"))?
            .pop_if_empty()
            .extend(["storage", "v1", "b", bucket, "o", object]);
        url.query_pairs_mut().append_pair("alt", "media");
        if let Some(generation) = generation {
            url.query_pairs_mut().append_pair("generation", generation);
        }
        let response = self.http.get(url).send().await?;
        if !response.status().is_success() {
            bail!("{}", response.status());
        }
        Ok(response.bytes().await?.to_vec())
    }

    async fn upload_log(&self, bucket: &str, id: &str, log: &[String]) {
        let mut url = match url::Url::parse(&self.gcs) {
            Ok(url) => url,
            Err(_) => return,
        };
        url.set_path("/upload/storage/v1/b/");
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend([bucket, "o"]);
        }
        url.query_pairs_mut()
            .append_pair("uploadType", "media")
            .append_pair("name", &format!("log-{id}.txt"));
        let mut text = log.join("\n");
        text.push('\n');
        match self
            .http
            .post(url)
            .header("content-type", "text/plain; charset=utf-8")
            .body(text)
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => eprintln!(
                "fake cloud build: log upload answered {}",
                response.status()
            ),
            Err(error) => eprintln!("fake cloud build: log upload failed: {error}"),
        }
    }
}

/// One build, from QUEUED to its end.
async fn run(state: Arc<State>, id: String) {
    let queued = state.update(&id, |_| {});
    state.notify(&queued).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let working = state.update(&id, |record| {
        record.build["status"] = json!("WORKING");
        record.build["startTime"] = json!(now());
    });
    state.notify(&working).await;
    let logs_bucket = working["logsBucket"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("gs://")
        .trim_end_matches('/')
        .to_owned();
    let mut log = vec![format!("starting build \"{id}\""), String::new()];
    let outcome = execute(&state, &id, &working, &mut log, &logs_bucket).await;
    let duration = state.inner.lock().expect("fake state").duration;
    tokio::time::sleep(duration).await;
    let finished = match outcome {
        Ok(images) => {
            log.extend(["DONE".to_owned()]);
            let mut inner = state.inner.lock().expect("fake state");
            inner.pushed.extend(
                images
                    .iter()
                    .filter_map(|i| i["name"].as_str().map(str::to_owned)),
            );
            let record = inner.builds.get_mut(&id).expect("a build this fake made");
            record.build["status"] = json!("SUCCESS");
            record.build["results"] = json!({
                "images": images,
                "buildStepImages": record.build["steps"].as_array().into_iter().flatten()
                    .map(|_| format!("sha256:{}", hex::encode(Sha256::digest(DOCKER))))
                    .collect::<Vec<_>>(),
            });
            record.build["finishTime"] = json!(now());
            record.build.clone()
        }
        Err(StepFailure {
            log: tail,
            status,
            kind,
        }) => {
            log.extend(tail);
            let detail = log
                .last()
                .and_then(|line| line.strip_prefix("ERROR: "))
                .map(|reason| format!("Build step failure: {reason}"))
                .unwrap_or_else(|| "Build failed; check build logs for details".to_owned());
            state.update(&id, |record| {
                record.build["status"] = json!(status);
                record.build["statusDetail"] = json!(detail);
                record.build["failureInfo"] = json!({
                    "type": kind,
                    "detail": detail,
                });
                record.build["finishTime"] = json!(now());
            })
        }
    };
    if !logs_bucket.is_empty() {
        state.upload_log(&logs_bucket, &id, &log).await;
    }
    let drop_it = state
        .inner
        .lock()
        .expect("fake state")
        .drop_final_notification;
    if !drop_it {
        state.notify(&finished).await;
    }
}

/// Fetches the source and runs the steps; the pushed images, or why it failed.
async fn execute(
    state: &State,
    id: &str,
    build: &Value,
    log: &mut Vec<String>,
    logs_bucket: &str,
) -> Result<Vec<Value>, StepFailure> {
    let source = &build["source"]["storageSource"];
    let bucket = source["bucket"].as_str().unwrap_or_default();
    let object = source["object"].as_str().unwrap_or_default();
    let generation = match &source["generation"] {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    };
    log.push("FETCHSOURCE".into());
    log.push(format!(
        "Fetching storage object: gs://{bucket}/{object}#{}",
        generation.as_deref().unwrap_or("0")
    ));
    let tarball = match state.download(bucket, object, generation.as_deref()).await {
        Ok(bytes) => bytes,
        Err(error) => {
            return Err(StepFailure {
                log: vec![
                    "ERROR".into(),
                    format!("ERROR: failed to fetch source gs://{bucket}/{object}: {error}"),
                ],
                status: "FAILURE",
                kind: "FETCH_SOURCE_FAILED",
            });
        }
    };
    let files = match unpack(&tarball) {
        Ok(files) => files,
        Err(error) => {
            return Err(StepFailure {
                log: vec![
                    "ERROR".into(),
                    format!("ERROR: failed to unpack source archive: {error:#}"),
                ],
                status: "FAILURE",
                kind: "FETCH_SOURCE_FAILED",
            });
        }
    };
    log.push(format!(
        "Copying gs://{bucket}/{object}... [1 files][{} B]",
        tarball.len()
    ));
    state.update(id, |record| record.files = files.clone());
    if !logs_bucket.is_empty() {
        // Real builds stream their log; a reader sees the beginning while it runs.
        state.upload_log(logs_bucket, id, log).await;
    }
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&tarball)));
    let failures = state.inner.lock().expect("fake state").failures.clone();
    log.push("BUILD".into());
    let steps = build["steps"].as_array().cloned().unwrap_or_default();
    for (index, step) in steps.iter().enumerate() {
        let label = match step["id"].as_str() {
            Some(step_id) => format!("Step #{index} - \"{step_id}\""),
            None => format!("Step #{index}"),
        };
        log.push(format!("Starting {label}"));
        let result = run_step(state, step, &files, &failures);
        let (lines, failed) = match result {
            Ok(lines) => (lines, None),
            Err((lines, why)) => (lines, Some(why)),
        };
        log.extend(lines.into_iter().map(|line| format!("{label}: {line}")));
        log.push(format!("Finished {label}"));
        state.update(id, |record| {
            record.build["steps"][index]["status"] = json!(if failed.is_some() {
                "FAILURE"
            } else {
                "SUCCESS"
            });
        });
        if let Some(why) = failed {
            let name = step["name"].as_str().unwrap_or_default();
            return Err(StepFailure {
                log: vec![
                    "ERROR".into(),
                    format!("ERROR: build step {index} \"{name}\" failed: {why}"),
                ],
                status: "FAILURE",
                kind: "USER_BUILD_STEP",
            });
        }
    }
    log.push("PUSH".into());
    let mut images = Vec::new();
    for name in build["images"].as_array().into_iter().flatten() {
        let name = name.as_str().unwrap_or_default();
        log.push(format!("Pushing {name}"));
        log.push(format!(
            "{}: digest: {digest} size: {}",
            name.rsplit(':').next().unwrap_or_default(),
            tarball.len()
        ));
        images.push(json!({
            "name": name,
            "digest": digest,
            "pushTiming": {"startTime": now(), "endTime": now()},
        }));
    }
    Ok(images)
}

type StepResult = Result<Vec<String>, (Vec<String>, String)>;

/// What a `gcr.io/cloud-builders/docker` step would do, as far as it can be known without Docker.
fn run_step(
    state: &State,
    step: &Value,
    files: &BTreeMap<String, Vec<u8>>,
    failures: &[(String, String)],
) -> StepResult {
    let name = step["name"].as_str().unwrap_or_default();
    let args: Vec<&str> = step["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let entrypoint = step["entrypoint"].as_str().unwrap_or_default();
    let exited = |code: u8| format!("step exited with non-zero status: {code}");
    if name != DOCKER {
        return Err((
            vec![format!("this fake runs only {DOCKER} steps, not {name}")],
            exited(1),
        ));
    }
    let mut lines = vec![format!("Already have image (with digest): {DOCKER}")];
    // `bash -c "docker pull IMAGE || exit 0"`: the cache warm-up.
    if entrypoint == "bash" && args.first() == Some(&"-c") {
        let script = args.get(1).copied().unwrap_or_default();
        let Some(image) = script
            .strip_prefix("docker pull ")
            .and_then(|rest| rest.split_whitespace().next())
        else {
            return Err((vec![format!("this fake cannot run {script:?}")], exited(1)));
        };
        let found = state
            .inner
            .lock()
            .expect("fake state")
            .pushed
            .contains(image);
        if found {
            lines.push(format!(
                "{}: Pulling from {}",
                tag_of(image),
                repo_of(image)
            ));
            lines.push(format!("Status: Downloaded newer image for {image}"));
            return Ok(lines);
        }
        lines.push(format!(
            "Error response from daemon: manifest for {image} not found: manifest unknown"
        ));
        return if script.contains("|| exit 0") {
            Ok(lines)
        } else {
            Err((lines, exited(1)))
        };
    }
    if !entrypoint.is_empty() || args.first() != Some(&"build") {
        return Err((
            vec![format!("this fake cannot run docker {}", args.join(" "))],
            exited(1),
        ));
    }
    let dockerfile_path = args
        .windows(2)
        .find(|pair| pair[0] == "-f" || pair[0] == "--file")
        .map(|pair| pair[1].trim_start_matches("./").to_owned())
        .unwrap_or_else(|| "Dockerfile".to_owned());
    if args.last() != Some(&".") {
        return Err((
            vec!["this fake builds only the context \".\"".into()],
            exited(1),
        ));
    }
    let size: usize = files.values().map(Vec::len).sum();
    lines.push(format!(
        "Sending build context to Docker daemon  {:.2}kB",
        size as f64 / 1000.0
    ));
    let Some(dockerfile) = files.get(&dockerfile_path) else {
        lines.push(format!(
            "unable to prepare context: unable to evaluate symlinks in Dockerfile path: lstat \
             /workspace/{dockerfile_path}: no such file or directory"
        ));
        return Err((lines, exited(1)));
    };
    let dockerfile = String::from_utf8_lossy(dockerfile).into_owned();
    let instructions = instructions(&dockerfile);
    if instructions
        .iter()
        .find(|(keyword, _)| keyword != "ARG")
        .is_none_or(|(keyword, _)| keyword != "FROM")
    {
        lines.push(
            "Error response from daemon: dockerfile parse error: no build stage in current \
             context"
                .into(),
        );
        return Err((lines, exited(1)));
    }
    let knob = failures.iter().find_map(|(path, needle)| {
        let text = String::from_utf8_lossy(files.get(path)?);
        let line = text.lines().find(|line| line.contains(needle.as_str()))?;
        Some((path.clone(), line.trim().to_owned()))
    });
    let copies_context = instructions
        .iter()
        .any(|(keyword, rest)| keyword == "COPY" && matches!(rest.as_str(), ". ." | ". ./"));
    let total = instructions.len();
    for (number, (keyword, rest)) in instructions.iter().enumerate() {
        lines.push(format!("Step {}/{total} : {keyword} {rest}", number + 1));
        if matches!(keyword.as_str(), "COPY" | "ADD") {
            for source in copy_sources(rest) {
                let present = source == "."
                    || files.contains_key(&source)
                    || files
                        .keys()
                        .any(|path| path.starts_with(&format!("{source}/")));
                if !present {
                    lines.push(format!(
                        "COPY failed: file not found in build context or excluded by \
                         .dockerignore: stat {source}: file does not exist"
                    ));
                    return Err((lines, exited(1)));
                }
            }
        }
        // A knob's failure surfaces in the first RUN that reads its file (or `uv sync`, which
        // reads the lock); failing that, at the end of the step.
        if keyword == "RUN"
            && let Some((path, line)) = &knob
            && (rest.contains(path.as_str()) || rest.contains("uv sync"))
        {
            lines.extend(knob_failure(path, line, rest));
            return Err((lines, exited(1)));
        }
        // The main file is only known relative to the context when the whole context is the
        // working directory (Runway's Dockerfile, and the usual `COPY . .`).
        if keyword == "CMD"
            && copies_context
            && let Some(main) = streamlit_main(rest)
            && !files.contains_key(&main)
        {
            lines.push(format!(
                "the Dockerfile runs `streamlit run {main}`, but {main} is not in the source"
            ));
            return Err((lines, exited(1)));
        }
    }
    if let Some((path, line)) = &knob {
        lines.extend(knob_failure(path, line, "the last step"));
        return Err((lines, exited(1)));
    }
    let digest = hex::encode(Sha256::digest(dockerfile.as_bytes()));
    lines.push(format!("Successfully built {}", &digest[..12]));
    for pair in args.windows(2).filter(|pair| pair[0] == "-t") {
        lines.push(format!("Successfully tagged {}", pair[1]));
    }
    Ok(lines)
}

fn knob_failure(path: &str, line: &str, command: &str) -> [String; 2] {
    [
        format!(
            "  × No solution found when resolving dependencies: {path} asks for `{line}`, which \
             cannot be installed"
        ),
        format!("The command '/bin/sh -c {command}' returned a non-zero code: 1"),
    ]
}

/// A Dockerfile's instructions, continuation lines joined: (KEYWORD, rest).
fn instructions(dockerfile: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(continued) = trimmed.strip_suffix('\\') {
            current.push_str(continued);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, rest) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        found.push((keyword.to_ascii_uppercase(), rest.trim().to_owned()));
        current.clear();
    }
    found
}

/// The context paths a COPY/ADD reads (not `--from` copies, URLs or globs).
fn copy_sources(rest: &str) -> Vec<String> {
    let mut words: Vec<String> = if rest.trim_start().starts_with('[') {
        serde_json::from_str(rest).unwrap_or_default()
    } else {
        rest.split_whitespace().map(str::to_owned).collect()
    };
    if words.iter().any(|word| word.starts_with("--from")) {
        return Vec::new();
    }
    words.retain(|word| !word.starts_with("--"));
    words.pop(); // the destination
    words
        .into_iter()
        .filter(|word| !word.contains("://") && !word.contains(['*', '?', '[']))
        .map(|word| {
            word.trim_start_matches("./")
                .trim_end_matches('/')
                .to_owned()
        })
        .map(|word| {
            if word.is_empty() {
                ".".to_owned()
            } else {
                word
            }
        })
        .collect()
}

/// The main file a CMD runs with `streamlit run`, in exec form (Runway's `sh -c … "$1"`, or a
/// plain argv) or shell form.
fn streamlit_main(rest: &str) -> Option<String> {
    let argv: Vec<String> = if rest.trim_start().starts_with('[') {
        serde_json::from_str(rest).ok()?
    } else {
        rest.split_whitespace().map(str::to_owned).collect()
    };
    if argv.len() >= 3 && argv[0] == "sh" && argv[1] == "-c" {
        let script = &argv[2];
        if script.contains("streamlit run \"$1\"") {
            return argv.get(4).cloned();
        }
        let words: Vec<String> = script.split_whitespace().map(str::to_owned).collect();
        return after_run(&words);
    }
    after_run(&argv)
}

fn after_run(words: &[String]) -> Option<String> {
    let at = words
        .windows(2)
        .position(|pair| pair[0].ends_with("streamlit") && pair[1] == "run")?;
    let main = words.get(at + 2)?.trim_matches(['"', '\'']);
    (main.ends_with(".py") && !main.contains('$') && !main.starts_with('/'))
        .then(|| main.trim_start_matches("./").to_owned())
}

fn tag_of(image: &str) -> &str {
    image.rsplit_once(':').map_or("latest", |(_, tag)| tag)
}

fn repo_of(image: &str) -> &str {
    image.rsplit_once(':').map_or(image, |(repo, _)| repo)
}

/// The regular files of a gzipped tarball, by path.
fn unpack(tarball: &[u8]) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tarball));
    let mut files = BTreeMap::new();
    for entry in archive.entries().context("reading the archive")? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.display().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        files.insert(path.trim_start_matches("./").to_owned(), bytes);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_main_file_in_runways_cmd_and_in_plain_ones() {
        let runway = r#"["sh", "-c", "exec streamlit run \"$1\" --server.port=\"$PORT\"", "streamlit", "pages/app.py"]"#;
        assert_eq!(streamlit_main(runway).as_deref(), Some("pages/app.py"));
        assert_eq!(
            streamlit_main(r#"["streamlit", "run", "app.py", "--server.port=8080"]"#).as_deref(),
            Some("app.py")
        );
        assert_eq!(
            streamlit_main("streamlit run ./main.py --server.port=$PORT").as_deref(),
            Some("main.py")
        );
        assert_eq!(streamlit_main(r#"["python", "serve.py"]"#), None);
    }

    #[test]
    fn reads_copy_sources_but_not_stage_copies() {
        assert_eq!(
            copy_sources("pyproject.toml uv.lock ./"),
            ["pyproject.toml", "uv.lock"]
        );
        assert_eq!(copy_sources(". ."), ["."]);
        assert!(copy_sources("--from=ghcr.io/astral-sh/uv:0.13.0 /uv /uvx /bin/").is_empty());
        assert_eq!(copy_sources(r#"["a b.txt", "/x/"]"#), ["a b.txt"]);
    }

    #[test]
    fn joins_continued_lines_into_one_instruction() {
        let found = instructions("# c\nFROM x\nENV A=1 \\\n    B=2\nRUN true\n");
        assert_eq!(
            found,
            [
                ("FROM".to_owned(), "x".to_owned()),
                ("ENV".to_owned(), "A=1  B=2".to_owned()),
                ("RUN".to_owned(), "true".to_owned()),
            ]
        );
    }
}
