//! The REST surface of the fake Cloud Build: `builds.create` (both paths), `builds.get`,
//! `builds.list` and `operations.get`, in the documented shapes, with int enums on request.

use super::*;
use crate::google_rest::{GoogleError, any, operation, query, wants_int_enums};

pub(super) fn router(state: Arc<State>) -> Router {
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
        .route(
            "/v1/projects/{project}/locations/{location}/repositories/{repository}/packages/{package}",
            axum::routing::delete(delete_package),
        )
        .with_state(state)
}

/// A route's path parameters by name; a name the route lacks reads as "".
#[derive(serde::Deserialize)]
#[serde(transparent)]
pub(super) struct Params(std::collections::HashMap<String, String>);

impl Params {
    fn get(&self, name: &str) -> &str {
        self.0.get(name).map_or("", String::as_str)
    }
}

/// Google's error body, which the client turns into a status with this code.
pub(super) fn google_error(code: StatusCode, status: &str, message: &str) -> ApiResult {
    Ok(GoogleError::new(code, status, message).response())
}

pub(super) fn record(state: &State, request: &Request) {
    let line = format!("{} {}", request.method(), request.uri());
    state.inner.lock().expect("fake state").requests.push(line);
}

/// The build's region: from the path, else from the `parent` query parameter that
/// `projects.builds.create` documents, else global.
pub(super) fn location(params: &Params, request: &Request) -> String {
    if !params.get("location").is_empty() {
        return params.get("location").to_owned();
    }
    query(request)
        .get("parent")
        .and_then(|parent| parent.split('/').nth(3).map(str::to_owned))
        .filter(|location| !location.is_empty())
        .unwrap_or_else(|| "global".to_owned())
}

pub(super) fn check_project(state: &State, params: &Params) -> Option<ApiResult> {
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

pub(super) fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(super) async fn create(
    Shared(state): Shared<Arc<State>>,
    Path(params): Path<Params>,
    request: Request,
) -> ApiResult {
    record(&state, &request);
    if let Some(refused) = check_project(&state, &params) {
        return refused;
    }
    let fault = state
        .inner
        .lock()
        .expect("fake state")
        .create_faults
        .pop_front();
    if let Some(super::CreateFault::Refused(http, status)) = fault {
        let code = StatusCode::from_u16(http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = match status {
            "RESOURCE_EXHAUSTED" => {
                "Quota exceeded for quota metric 'Build requests' and limit 'Build requests per \
                 minute per region'"
            }
            _ => "The service is currently unavailable.",
        };
        return google_error(code, status, message);
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
            cache: None,
        },
    );
    drop(inner);
    tokio::spawn(run(state.clone(), id.clone()));
    if matches!(fault, Some(super::CreateFault::AnswerLost)) {
        return google_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "Internal error encountered.",
        );
    }
    let operation = operation_json(&operation, &build, false);
    Ok(json(StatusCode::OK, &encode(operation, ints)))
}

pub(super) async fn get_build(
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

pub(super) async fn list(
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

pub(super) async fn get_operation(
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

pub(super) fn operation_json(name: &str, build: &Value, done: bool) -> Value {
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

pub(super) fn is_finished(build: &Value) -> bool {
    !matches!(
        build["status"].as_str(),
        Some("QUEUED" | "WORKING" | "PENDING")
    )
}

/// Enums as numbers wherever a `status` or `logging` field holds one of their names.
pub(super) fn encode(mut value: Value, ints: bool) -> Value {
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

pub(super) fn status_number(name: &str) -> i64 {
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

pub(super) const LOGGING: [&str; 6] = [
    "LOGGING_UNSPECIFIED",
    "LEGACY",
    "GCS_ONLY",
    "STACKDRIVER_ONLY",
    "NONE",
    "CLOUD_LOGGING_ONLY",
];

pub(super) fn logging_name(number: i64) -> &'static str {
    usize::try_from(number)
        .ok()
        .and_then(|i| LOGGING.get(i))
        .copied()
        .unwrap_or("LOGGING_UNSPECIFIED")
}

pub(super) const FAILURE_TYPES: [&str; 7] = [
    "FAILURE_TYPE_UNSPECIFIED",
    "PUSH_FAILED",
    "PUSH_IMAGE_NOT_FOUND",
    "PUSH_NOT_AUTHORIZED",
    "LOGGING_FAILURE",
    "USER_BUILD_STEP",
    "FETCH_SOURCE_FAILED",
];

pub(super) fn enum_number(names: &[&str], name: &str) -> i64 {
    names.iter().position(|n| *n == name).unwrap_or(0) as i64
}

pub(super) fn is_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A build id in Cloud Build's shape (a UUID), unique within this fake.
pub(super) fn uuid_like(n: u64) -> String {
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

/// Artifact Registry's `packages.delete`: every version and tag of the package goes.
async fn delete_package(
    Shared(state): Shared<Arc<State>>,
    Path(params): Path<Params>,
) -> ApiResult {
    let (project, location) = (params.get("project"), params.get("location"));
    let image = format!(
        "{location}-docker.pkg.dev/{project}/{}/{}",
        params.get("repository"),
        params.get("package")
    );
    let removed = state
        .inner
        .lock()
        .expect("fake state")
        .registry
        .delete_package(&image);
    if removed == 0 {
        return google_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Requested entity was not found: package {image}"),
        );
    }
    let name = format!(
        "projects/{project}/locations/{location}/operations/{}",
        uuid::Uuid::new_v4()
    );
    let metadata = any(
        "type.googleapis.com/google.devtools.artifactregistry.v1.OperationMetadata",
        &json!({}),
    );
    let done = operation(
        &name,
        metadata,
        Some(Ok(any(
            "type.googleapis.com/google.protobuf.Empty",
            &json!({}),
        ))),
    );
    Ok(json(StatusCode::OK, &done))
}
