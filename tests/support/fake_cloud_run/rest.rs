//! The REST surface of the fake Cloud Run Admin API v2: the paths and methods it serves, the
//! query parameters each documents, long-running operations, Google's errors, and the
//! service's enums as names or numbers.

use super::*;

pub(super) fn error_response(http: u16, status: &str, message: &str) -> Response {
    let code = StatusCode::from_u16(http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    GoogleError::new(code, status, message).response()
}

/// The resource a `/v2/...` path names.
pub(super) enum Resource {
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

pub(super) async fn handle(state: Arc<Mutex<State>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    if let Some(rest) = path.strip_prefix("/serve/") {
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        return match serve_app(&lock(&state), rest, authorization) {
            Ok(answer) => json(StatusCode::OK, &answer),
            Err(error) => error.response(),
        };
    }
    if is_secret_manager_path(&path) {
        return front(&state, request).await;
    }
    let latch = (request.method() == Method::POST && path.ends_with("/serviceAccounts"))
        .then(|| lock(&state).held_account_create.clone())
        .flatten();
    if let Some(latch) = latch {
        lock(&state).account_create_waiting = true;
        latch.notified().await;
        lock(&state).account_create_waiting = false;
    }
    if let Some(secret) = secret_of_policy_path(&path)
        && let Err(error) = secret_exists(&state, &secret).await
    {
        return error.response();
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
    if is_accounts_path(&seen.path) {
        return match account_request(&mut state, &method, &seen) {
            Ok((status, body)) => json(status, &body),
            Err(error) => error.response(),
        };
    }
    if let Some((resource, verb)) = PolicyResource::parse(&seen.path) {
        return match policy_request(&mut state, &method, resource, verb, &seen) {
            Ok((status, body)) => json(status, &body),
            Err(error) => error.response(),
        };
    }
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

/// Passes a Secret Manager call on to drongo; a deleted secret's policy goes too.
async fn front(state: &Mutex<State>, request: Request) -> Response {
    let Some(base) = lock(state).front.clone() else {
        return GoogleError::not_found("Secret Manager (the fake fronts none)").response();
    };
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let target = match request.uri().query() {
        Some(query) => format!("{base}{path}?{query}"),
        None => format!("{base}{path}"),
    };
    let content_type = request.headers().get(http::header::CONTENT_TYPE).cloned();
    let Ok(body) = read_body(request, 1 << 20).await else {
        return GoogleError::invalid("unreadable body").response();
    };
    let mut forwarded = reqwest::Client::new()
        .request(method.clone(), target)
        .body(body);
    if let Some(content_type) = content_type {
        forwarded = forwarded.header(http::header::CONTENT_TYPE, content_type);
    }
    let answer = match forwarded.send().await {
        Ok(answer) => answer,
        Err(error) => {
            return GoogleError::new(StatusCode::BAD_GATEWAY, "UNAVAILABLE", error.to_string())
                .response();
        }
    };
    let status = answer.status();
    let bytes = answer.bytes().await.unwrap_or_default();
    if method == Method::DELETE && status.is_success() {
        let secret = path.trim_start_matches("/v1/");
        lock(state).iam.forget_secret(secret);
    }
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    json(status, &body)
}

/// A secret's policy exists only while drongo has the secret.
async fn secret_exists(state: &Mutex<State>, secret: &str) -> Result<(), GoogleError> {
    let base = lock(state)
        .front
        .clone()
        .ok_or_else(|| GoogleError::not_found(secret))?;
    let answer = reqwest::get(format!("{base}/v1/{secret}"))
        .await
        .map_err(|error| {
            GoogleError::new(StatusCode::BAD_GATEWAY, "UNAVAILABLE", error.to_string())
        })?;
    match answer.status() {
        status if status.is_success() => Ok(()),
        StatusCode::NOT_FOUND => Err(GoogleError::not_found(secret)),
        status => Err(GoogleError::new(
            StatusCode::BAD_GATEWAY,
            "UNAVAILABLE",
            format!("drongo answered {status}"),
        )),
    }
}

pub(super) fn take_injected(state: &mut State, method: &str) -> Option<Injected> {
    let index = state.injected.iter().position(|i| i.method == method)?;
    state.injected.remove(index)
}

pub(super) fn route(
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
pub(super) fn only_params(request: &SeenRequest, allowed: &[&str]) -> Result<(), GoogleError> {
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

pub(super) fn flag(request: &SeenRequest, name: &str) -> bool {
    request.param(name) == Some("true")
}

/// What Cloud Run refuses in a revision template before it makes anything: more warm instances
/// than the cap allows, and an environment variable named twice or named as one Cloud Run sets.
fn check_template(template: Option<&Value>) -> Result<(), GoogleError> {
    let Some(template) = template else {
        return Ok(());
    };
    let scaling = &template["scaling"];
    if let (Some(min), Some(max)) = (
        scaling["minInstanceCount"].as_i64(),
        scaling["maxInstanceCount"].as_i64(),
    ) && min > max
    {
        return Err(GoogleError::invalid(format!(
            "template.scaling: min_instance_count ({min}) must be less than or equal to \
             max_instance_count ({max})"
        )));
    }
    for container in template["containers"].as_array().into_iter().flatten() {
        for probe in ["startupProbe", "livenessProbe"] {
            let probe = &container[probe];
            let (period, timeout) = (
                probe["periodSeconds"].as_i64().unwrap_or(10),
                probe["timeoutSeconds"].as_i64().unwrap_or(1),
            );
            if probe.is_object() && timeout > period {
                return Err(GoogleError::invalid(format!(
                    "probe timeout_seconds ({timeout}) must be less than or equal to \
                     period_seconds ({period})"
                )));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for var in container["env"].as_array().into_iter().flatten() {
            let name = var["name"].as_str().unwrap_or_default();
            if ["PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"].contains(&name) {
                return Err(GoogleError::invalid(format!(
                    "The following reserved env names were provided: {name}. These values are \
                     automatically set by the system."
                )));
            }
            if !seen.insert(name) {
                return Err(GoogleError::invalid(format!(
                    "Duplicate env var names: {name}"
                )));
            }
        }
    }
    Ok(())
}

/// The fake carries out every write; a dry run it would report as done is refused instead.
fn refuse_validate_only(request: &SeenRequest) -> Result<(), GoogleError> {
    if flag(request, "validateOnly") {
        return Err(GoogleError::invalid(
            "validateOnly is not supported by the fake",
        ));
    }
    Ok(())
}

pub(super) fn patch_service(
    state: &mut State,
    name: &str,
    request: &SeenRequest,
) -> Result<(StatusCode, Value), GoogleError> {
    refuse_validate_only(request)?;
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
    check_template(body.get("template"))?;
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
    // `etag` is the optimistic lock of AIP-154: a write based on a service that changed since
    // it was read is refused, whatever the mask.
    let mut body = body;
    if let Some(sent) = body
        .remove("etag")
        .and_then(|etag| etag.as_str().map(str::to_owned))
        && let Some(current) = state.services.get(name).map(FakeService::etag)
        && sent != current
    {
        return Err(GoogleError::new(
            StatusCode::CONFLICT,
            "ABORTED",
            format!("The etag {sent} does not match the service's current etag {current}."),
        ));
    }
    let mut service = state
        .services
        .remove(name)
        .unwrap_or_else(|| new_service(&state.base_url, name));
    let revisions_before = service.revisions.len();
    let outcome = match apply(
        &mut service,
        name,
        body,
        mask.as_deref(),
        &state.broken_images,
        &state.iam,
    ) {
        Ok(outcome) => outcome,
        Err(error) => {
            if existed {
                state.services.insert(name.to_owned(), service);
            }
            return Err(error);
        }
    };
    if service.revisions.len() > revisions_before
        && let (Some(sink), Some(revision)) = (&state.logs, service.revisions.last())
    {
        super::simulation::log_start(sink, name, revision);
    }
    let held = state.hold_next_patches > 0;
    state.hold_next_patches = state.hold_next_patches.saturating_sub(1);
    let operation = Operation {
        service: name.to_owned(),
        generation: service.generation,
        polls_left: state.pending_polls,
        held,
        metadata: service.to_json(name),
        outcome,
    };
    state.services.insert(name.to_owned(), service);
    Ok((StatusCode::OK, start_operation(state, name, operation)))
}

pub(super) fn delete_service(
    state: &mut State,
    name: &str,
    request: &SeenRequest,
) -> Result<(StatusCode, Value), GoogleError> {
    refuse_validate_only(request)?;
    let current = state
        .services
        .get(name)
        .ok_or_else(|| GoogleError::not_found(name))?
        .etag();
    // AIP-154: a delete based on a service that changed since it was read is refused. The
    // client always sends the parameter; empty is proto3's unset, no condition.
    if let Some(sent) = request.param("etag").filter(|sent| !sent.is_empty())
        && sent != current
    {
        return Err(GoogleError::new(
            StatusCode::CONFLICT,
            "ABORTED",
            format!("The etag {sent} does not match the service's current etag {current}."),
        ));
    }
    let service = state
        .services
        .remove(name)
        .ok_or_else(|| GoogleError::not_found(name))?;
    state.iam.forget(name);
    let last = service.to_json(name);
    let operation = Operation {
        service: name.to_owned(),
        generation: service.generation,
        polls_left: state.pending_polls,
        held: false,
        metadata: last.clone(),
        outcome: Ok(last),
    };
    Ok((StatusCode::OK, start_operation(state, name, operation)))
}

/// Records the operation and answers its first state (not done, unless polls are off).
pub(super) fn start_operation(state: &mut State, service: &str, operation: Operation) -> Value {
    let location = service.split("/services/").next().unwrap_or(service);
    let name = format!("{location}/operations/{}", Uuid::new_v4());
    if operation.polls_left == 0 && !operation.held {
        finish(state, &operation.service, operation.generation);
    }
    let answer = operation.to_json(&name);
    state.operations.insert(name, operation);
    answer
}

pub(super) fn get_operation(
    state: &mut State,
    name: &str,
) -> Result<(StatusCode, Value), GoogleError> {
    let operation = state
        .operations
        .get_mut(name)
        .ok_or_else(|| GoogleError::not_found(name))?;
    if operation.polls_left > 0 && !operation.held {
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

pub(super) fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(super) fn parse_query(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    Names,
    Numbers,
}

/// The enum fields of a `Service` the fake reads or writes, with their proto numbers.
/// An enum's values: (proto number, name).
pub(super) type EnumTable = &'static [(i64, &'static str)];

pub(super) const ENUM_FIELDS: &[(&[&str], EnumTable)] = &[
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

pub(super) const TRAFFIC_TYPES: EnumTable = &[
    (0, "TRAFFIC_TARGET_ALLOCATION_TYPE_UNSPECIFIED"),
    (1, LATEST),
    (2, REVISION),
];
pub(super) const CONDITION_STATES: EnumTable = &[
    (0, "STATE_UNSPECIFIED"),
    (1, "CONDITION_PENDING"),
    (2, "CONDITION_RECONCILING"),
    (3, "CONDITION_FAILED"),
    (4, "CONDITION_SUCCEEDED"),
];
pub(super) const SEVERITIES: EnumTable = &[
    (0, "SEVERITY_UNSPECIFIED"),
    (1, "ERROR"),
    (2, "WARNING"),
    (3, "INFO"),
];
pub(super) const INGRESS: EnumTable = &[
    (0, "INGRESS_TRAFFIC_UNSPECIFIED"),
    (1, "INGRESS_TRAFFIC_ALL"),
    (2, "INGRESS_TRAFFIC_INTERNAL_ONLY"),
    (3, "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"),
    (4, "INGRESS_TRAFFIC_NONE"),
];
pub(super) const LAUNCH_STAGES: EnumTable = &[
    (0, "LAUNCH_STAGE_UNSPECIFIED"),
    (1, "EARLY_ACCESS"),
    (2, "ALPHA"),
    (3, "BETA"),
    (4, "GA"),
    (5, "DEPRECATED"),
    (6, "UNIMPLEMENTED"),
    (7, "PRELAUNCH"),
];
pub(super) const EXECUTION_ENVIRONMENTS: EnumTable = &[
    (0, "EXECUTION_ENVIRONMENT_UNSPECIFIED"),
    (1, "EXECUTION_ENVIRONMENT_GEN1"),
    (2, "EXECUTION_ENVIRONMENT_GEN2"),
];

/// Rewrites the known enum fields of a `Service` (or an `Operation` holding one) as names or
/// as numbers; values it does not know stay as they are.
pub(super) fn encode_enums(value: &mut Value, to: Encoding) {
    for key in ["metadata", "response"] {
        if let Some(inner) = value.get_mut(key) {
            encode_enums(inner, to);
        }
    }
    for (path, table) in ENUM_FIELDS {
        rewrite(value, path, &|field| convert(field, table, to));
    }
}

pub(super) fn rewrite(value: &mut Value, path: &[&str], f: &dyn Fn(&mut Value)) {
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

pub(super) fn convert(field: &mut Value, table: EnumTable, to: Encoding) {
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
