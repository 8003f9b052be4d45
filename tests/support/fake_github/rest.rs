//! The REST surface of the fake GitHub: routing, authentication (tokens and GitHub App JWTs),
//! rate limits, redirects for renamed repositories, GitHub's error bodies, and the webhooks
//! endpoints with their validation and pagination.

use super::*;

pub(super) fn respond(status: StatusCode, body: Option<&Value>) -> Response {
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let mut response = http::Response::new(full(bytes));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if body.is_some() {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
    }
    headers.insert(
        "x-github-api-version-selected",
        HeaderValue::from_static("2022-11-28"),
    );
    response
}

pub(super) fn ok(value: Value) -> Response {
    respond(StatusCode::OK, Some(&value))
}

/// GitHub's error body: `{"message", "documentation_url", "status"}`.
pub(super) fn error(status: StatusCode, message: &str) -> Response {
    respond(
        status,
        Some(&json!({
            "message": message,
            "documentation_url": DOCS,
            "status": status.as_u16().to_string(),
        })),
    )
}

pub(super) fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Not Found")
}

pub(super) fn validation_failed(errors: Value) -> Response {
    respond(
        StatusCode::UNPROCESSABLE_ENTITY,
        Some(&json!({
            "message": "Validation Failed",
            "errors": errors,
            "documentation_url": format!("{DOCS}/repos/webhooks#create-a-repository-webhook"),
            "status": "422",
        })),
    )
}

pub(super) fn redirect(status: StatusCode, location: &str) -> Response {
    let mut response = respond(status, None);
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

pub(super) fn with_rate_limit_headers(
    mut response: Response,
    remaining: u32,
    reset: i64,
) -> Response {
    let headers = response.headers_mut();
    let pairs = [
        ("x-ratelimit-limit", "5000".to_owned()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-used", (5000 - remaining).to_string()),
        ("x-ratelimit-reset", reset.to_string()),
        ("x-ratelimit-resource", "core".to_owned()),
    ];
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}

pub(super) fn repo_json(state: &State, repo: &Repo, default_branch: &str) -> Value {
    let api = state.api.trim_end_matches('/');
    json!({
        "id": repo.id,
        "node_id": format!("R_{}", repo.id),
        "name": repo.name,
        "full_name": repo.full_name(),
        "owner": { "login": repo.owner, "type": "Organization" },
        "private": true,
        "html_url": format!("https://github.com/{}", repo.full_name()),
        "url": format!("{api}/repos/{}", repo.full_name()),
        "hooks_url": format!("{api}/repos/{}/hooks", repo.full_name()),
        "default_branch": default_branch,
        "visibility": "private",
    })
}

pub(super) fn hook_json(state: &State, repo: &Repo, hook: &FakeHook) -> Value {
    let url = format!("{}repos/{}/hooks/{}", state.api, repo.full_name(), hook.id);
    let mut config = json!({
        "url": hook.url,
        "content_type": hook.content_type,
        "insecure_ssl": hook.insecure_ssl,
    });
    // GitHub never shows a secret back, only that there is one.
    if hook.secret.is_some() {
        config["secret"] = json!("********");
    }
    json!({
        "type": "Repository",
        "id": hook.id,
        "name": "web",
        "active": hook.active,
        "events": hook.events,
        "config": config,
        "updated_at": hook.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "created_at": hook.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "url": url,
        "test_url": format!("{url}/test"),
        "ping_url": format!("{url}/pings"),
        "deliveries_url": format!("{url}/deliveries"),
        "last_response": { "code": null, "status": "unused", "message": null },
    })
}

/// "Get GitHub meta information": the address ranges of GitHub's services, `hooks` among them
/// (CIDR notation, IPv4 and IPv6), and fields Runway does not read.
pub(super) fn meta_json(state: &State) -> Value {
    json!({
        "verifiable_password_authentication": false,
        "hooks": state.hook_sources,
        "web": ["192.30.252.0/22", "185.199.108.0/22", "140.82.112.0/20", "2a0a:a440::/29"],
        "api": ["192.30.252.0/22", "185.199.108.0/22", "140.82.112.0/20", "2a0a:a440::/29"],
        "git": ["192.30.252.0/22", "185.199.108.0/22", "140.82.112.0/20", "2a0a:a440::/29"],
        "domains": { "website": ["*.github.com", "*.github.dev"] },
    })
}

// ---------------------------------------------------------------------------------------------
// Routing

/// Who a request authenticated as.
pub(super) enum Caller {
    /// A token: a configured one, or an installation token this fake issued.
    Token,
    /// The App itself, by a JWT that verified.
    App,
    Anonymous,
    Refused(&'static str),
}

pub(super) async fn api_request(state: &Arc<Mutex<State>>, request: Request) -> Response {
    let reset = lock(state).rate_limit_reset;
    if let Some(reset) = reset {
        let response = error(
            StatusCode::FORBIDDEN,
            "API rate limit exceeded for installation. If you reach out to GitHub Support for \
             help, please include the request ID.",
        );
        return with_rate_limit_headers(response, 0, reset);
    }
    let outage = request
        .uri()
        .path()
        .starts_with("/repos/")
        .then(|| lock(state).outages.pop_front())
        .flatten();
    if let Some((status, retry_after)) = outage {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = error(status, "Server Error");
        if let Some(seconds) = retry_after
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    let hour = Utc::now().timestamp() + 3600;
    let writes = [Method::POST, Method::PATCH, Method::DELETE];
    if writes.contains(request.method())
        && let Some(retry_after) = secondary_limit(&mut lock(state))
    {
        let mut response = error(
            StatusCode::FORBIDDEN,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try \
             again. If you reach out to GitHub Support for help, please include the request ID.",
        );
        if let Ok(value) = HeaderValue::from_str(&retry_after.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return with_rate_limit_headers(response, 4999, hour);
    }
    let response = route(state, request).await;
    send_outbox(state);
    // Every request counts against the hour's 5,000, except a conditional one GitHub answers
    // 304 Not Modified ("does not count against your primary rate limit").
    let used = {
        let mut state = lock(state);
        if response.status() != StatusCode::NOT_MODIFIED {
            state.rate_used += 1;
        }
        state.rate_used
    };
    with_rate_limit_headers(response, 5000u32.saturating_sub(used as u32), hour)
}

/// Counts a write against a tripped secondary limit; its `retry-after` while the limit holds.
fn secondary_limit(state: &mut State) -> Option<u64> {
    let (left, retry_after) = state.secondary_limit.as_mut()?;
    let retry_after = *retry_after;
    *left -= 1;
    if *left == 0 {
        state.secondary_limit = None;
    }
    Some(retry_after)
}

pub(super) async fn route(state: &Mutex<State>, request: Request) -> Response {
    let caller = authenticate(state, &request);
    let path = request.uri().path().to_owned();
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match segments.as_slice() {
        // Public: GitHub answers anyone, but not a credential it refuses.
        ["meta"] if request.method() == Method::GET => match caller {
            Caller::Refused(why) => error(StatusCode::UNAUTHORIZED, why),
            _ => ok(meta_json(&lock(state))),
        },
        ["app", "installations", id, "access_tokens"] if request.method() == Method::POST => {
            require_app(state, &caller, |state| create_access_token(state, id))
        }
        ["repos", owner, name, "installation"] => require_app(state, &caller, |state| {
            repo_installation(state, owner, name)
        }),
        ["repos", owner, name, rest @ ..] => {
            let found = {
                let state = lock(state);
                let current = state.repos.iter().find(|r| r.is_named(owner, name));
                let former = state.repos.iter().find(|r| r.was_named(owner, name));
                (current.map(|r| r.id), former.map(|r| r.id))
            };
            match (caller, found) {
                (Caller::Refused(why), _) => error(StatusCode::UNAUTHORIZED, why),
                (Caller::Anonymous | Caller::App, _) => {
                    error(StatusCode::UNAUTHORIZED, "Requires authentication")
                }
                (Caller::Token, (Some(id), _)) => repo_route(state, id, rest, request).await,
                (Caller::Token, (None, Some(id))) => moved(state, id, rest, &request),
                (Caller::Token, (None, None)) => not_found(),
            }
        }
        ["repositories", id, rest @ ..] => {
            let id = id
                .parse::<u64>()
                .ok()
                .filter(|id| lock(state).repo(*id).is_some());
            match (caller, id) {
                (Caller::Token, Some(id)) => repo_route(state, id, rest, request).await,
                (Caller::Token, None) => not_found(),
                (Caller::Refused(why), _) => error(StatusCode::UNAUTHORIZED, why),
                _ => error(StatusCode::UNAUTHORIZED, "Requires authentication"),
            }
        }
        _ => not_found(),
    }
}

/// A renamed repository: GitHub answers 301 for GET and 307 otherwise, to `/repositories/{id}`.
pub(super) fn moved(state: &Mutex<State>, id: u64, rest: &[&str], request: &Request) -> Response {
    let api = lock(state).api.clone();
    let mut location = format!("{api}repositories/{id}");
    for part in rest {
        location.push('/');
        location.push_str(part);
    }
    if let Some(query) = request.uri().query() {
        location.push('?');
        location.push_str(query);
    }
    let status = if request.method() == Method::GET {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::TEMPORARY_REDIRECT
    };
    let mut response = redirect(status, &location);
    let body =
        json!({ "message": "Moved Permanently", "url": location, "documentation_url": DOCS });
    *response.body_mut() = full(body.to_string());
    response
}

pub(super) fn require_app(
    state: &Mutex<State>,
    caller: &Caller,
    handler: impl FnOnce(&mut State) -> Response,
) -> Response {
    match caller {
        Caller::App => handler(&mut lock(state)),
        Caller::Refused(why) => error(StatusCode::UNAUTHORIZED, why),
        _ => error(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        ),
    }
}

pub(super) fn authenticate(state: &Mutex<State>, request: &Request) -> Caller {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Caller::Anonymous;
    };
    let value = value.to_str().unwrap_or_default();
    let Some(credential) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("token "))
    else {
        return Caller::Refused("Bad credentials");
    };
    let state = lock(state);
    if state.tokens.iter().any(|token| token == credential) {
        return Caller::Token;
    }
    if let Some(expires) = state.installation_tokens.get(credential) {
        return if *expires > Utc::now() {
            Caller::Token
        } else {
            Caller::Refused("Bad credentials")
        };
    }
    if credential.matches('.').count() == 2
        && let Some(app) = &state.app
    {
        return verify_app_jwt(app, credential);
    }
    Caller::Refused("Bad credentials")
}

/// GitHub's rules for an App JWT: RS256 by the App's key, `iss` the App id, `exp` at most ten
/// minutes ahead, `iat` not in the future.
pub(super) fn verify_app_jwt(app: &AppKey, jwt: &str) -> Caller {
    let mut validation = Validation::new(Algorithm::RS256);
    // jsonwebtoken reads only a string `iss` and knows no `iat`: both are checked below, as
    // GitHub takes the App id as a number or a string.
    validation.set_required_spec_claims(&["exp"]);
    validation.validate_aud = false;
    let Ok(data) = jsonwebtoken::decode::<Value>(jwt, &app.key, &validation) else {
        return Caller::Refused("A JSON web token could not be decoded");
    };
    let claims = data.claims;
    let issuer_matches = claims["iss"].as_u64() == Some(app.app_id)
        || claims["iss"].as_str() == Some(&app.app_id.to_string());
    if !issuer_matches {
        return Caller::Refused("'Issuer' claim ('iss') must be the App's id");
    }
    let now = Utc::now().timestamp();
    let exp = claims["exp"].as_i64().unwrap_or(0);
    let Some(iat) = claims["iat"].as_i64() else {
        return Caller::Refused("Missing 'issued at' claim ('iat')");
    };
    if exp > now + MAX_JWT_LIFETIME_SECS + 30 {
        return Caller::Refused("'Expiration time' claim ('exp') is too far in the future");
    }
    if iat > now + 30 {
        return Caller::Refused(
            "'Issued at' claim ('iat') must be an Integer representing a time in the past",
        );
    }
    Caller::App
}

pub(super) fn create_access_token(state: &mut State, id: &str) -> Response {
    let Some(app) = &state.app else {
        return not_found();
    };
    if id.parse::<u64>().ok() != Some(app.installation_id) {
        return not_found();
    }
    let lifetime = state.token_lifetime.unwrap_or(chrono::Duration::hours(1));
    let expires_at = Utc::now() + lifetime;
    let token = format!("ghs_{}", uuid::Uuid::new_v4().simple());
    state.installation_tokens.insert(token.clone(), expires_at);
    state.token_exchanges += 1;
    respond(
        StatusCode::CREATED,
        Some(&json!({
            "token": token,
            "expires_at": expires_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "permissions": { "contents": "read", "metadata": "read", "repository_hooks": "write", "deployments": "write", "statuses": "write" },
            "repository_selection": "all",
        })),
    )
}

pub(super) fn repo_installation(state: &mut State, owner: &str, name: &str) -> Response {
    state.installation_lookups += 1;
    let (Some(app), Some(repo)) = (
        &state.app,
        state.repos.iter().find(|r| r.is_named(owner, name)),
    ) else {
        return not_found();
    };
    ok(json!({
        "id": app.installation_id,
        "app_id": app.app_id,
        "account": { "login": repo.owner, "type": "Organization" },
        "repository_selection": "all",
        "target_type": "Organization",
        "permissions": { "contents": "read", "metadata": "read", "repository_hooks": "write", "deployments": "write", "statuses": "write" },
        "events": [],
    }))
}

pub(super) async fn repo_route(
    state: &Mutex<State>,
    id: u64,
    rest: &[&str],
    request: Request,
) -> Response {
    let method = request.method().clone();
    if rest.first() == Some(&"hooks") && lock(state).hooks_forbidden {
        return error(
            StatusCode::FORBIDDEN,
            "Resource not accessible by integration",
        );
    }
    if rest.first() == Some(&"hooks") && lock(state).hooks_hidden {
        return not_found();
    }
    if is_deployments_path(rest) {
        return deployments_route(state, id, rest, request).await;
    }
    if is_comments_path(rest) {
        return comments_route(state, id, rest, request).await;
    }
    match (rest, &method) {
        ([], &Method::GET) => get_repo(state, id).await,
        (["branches", branch @ ..], &Method::GET) if !branch.is_empty() => {
            get_branch(state, id, &branch.join("/")).await
        }
        (["branches"], &Method::GET) => list_branches(state, id, request.uri().query()).await,
        (["contents", path @ ..], &Method::GET) if !path.is_empty() => {
            get_contents(state, id, &path.join("/"), request.uri().query()).await
        }
        (["tarball", reference @ ..], &Method::GET) => {
            tarball(state, id, &reference.join("/")).await
        }
        (["hooks"], &Method::GET) => {
            let if_none_match = request
                .headers()
                .get(header::IF_NONE_MATCH)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            list_hooks(state, id, request.uri().query(), if_none_match.as_deref())
        }
        (["hooks"], &Method::POST) => match json_body(request).await {
            Ok(body) => {
                let default_branch = default_branch(state, id).await.unwrap_or_default();
                create_hook(&mut lock(state), id, &body, &default_branch)
            }
            Err(response) => response,
        },
        (["hooks", hook, "deliveries"], &Method::GET) => {
            let Some(hook) = hook.parse::<u64>().ok() else {
                return not_found();
            };
            list_deliveries(&lock(state), id, hook, request.uri().query())
        }
        (["hooks", hook], _) => {
            let Some(hook) = hook.parse::<u64>().ok() else {
                return not_found();
            };
            match method {
                Method::GET => get_hook(&lock(state), id, hook),
                Method::PATCH => match json_body(request).await {
                    Ok(body) => update_hook(&mut lock(state), id, hook, &body),
                    Err(response) => response,
                },
                Method::DELETE => delete_hook(&mut lock(state), id, hook),
                _ => not_found(),
            }
        }
        _ => not_found(),
    }
}

/// A hook's recent deliveries, newest first, `per_page` of them (GitHub pages them by cursor;
/// Runway reads the first page only). 404 for a hook the repository does not have.
fn list_deliveries(state: &State, id: u64, hook: u64, query: Option<&str>) -> Response {
    let Some(repo) = state.repo(id) else {
        return not_found();
    };
    if !repo.hooks.iter().any(|h| h.id == hook) {
        return not_found();
    }
    let per_page = query
        .and_then(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(key, _)| key == "per_page")
                .and_then(|(_, value)| value.parse::<usize>().ok())
        })
        .unwrap_or(DEFAULT_PER_PAGE)
        .clamp(1, MAX_PER_PAGE);
    let items: Vec<Value> = state
        .deliveries
        .iter()
        .enumerate()
        .filter(|(_, d)| d.hook_id == hook && d.repo_id == id)
        .rev()
        .take(per_page)
        .map(|(index, delivery)| delivery.json(index + 1))
        .collect();
    runway_http::json(StatusCode::OK, &items)
}

pub(super) async fn json_body(request: Request) -> Result<Value, Response> {
    let bytes = read_body(request, 1 << 20)
        .await
        .map_err(|_| error(StatusCode::BAD_REQUEST, "Problems parsing JSON"))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| error(StatusCode::BAD_REQUEST, "Problems parsing JSON"))
}

/// A page of the repository's hooks, with GitHub's weak `ETag` of it: asked again with that
/// tag in `If-None-Match` while nothing on the page changed, it answers 304 with no body.
pub(super) fn list_hooks(
    state: &Mutex<State>,
    id: u64,
    query: Option<&str>,
    if_none_match: Option<&str>,
) -> Response {
    let state = lock(state);
    let Some(repo) = state.repo(id) else {
        return not_found();
    };
    let param = |name: &str| {
        query.and_then(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(key, _)| key == name)
                .and_then(|(_, value)| value.parse::<usize>().ok())
        })
    };
    let cap = state.page_cap.unwrap_or(MAX_PER_PAGE).min(MAX_PER_PAGE);
    let per_page = param("per_page").unwrap_or(DEFAULT_PER_PAGE).clamp(1, cap);
    let page = param("page").unwrap_or(1).max(1);
    let items: Vec<Value> = repo
        .hooks
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|hook| hook_json(&state, repo, hook))
        .collect();
    let last = repo.hooks.len().div_ceil(per_page).max(1);
    let etag = {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (Value::Array(items.clone()).to_string(), page, last).hash(&mut hasher);
        format!("W/\"{:016x}\"", hasher.finish())
    };
    let mut response = if if_none_match == Some(etag.as_str()) {
        respond(StatusCode::NOT_MODIFIED, None)
    } else {
        ok(Value::Array(items))
    };
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    let link = |page: usize, rel: &str| {
        format!(
            "<{}repositories/{id}/hooks?per_page={per_page}&page={page}>; rel=\"{rel}\"",
            state.api
        )
    };
    let mut links = Vec::new();
    if page < last {
        links.push(link(page + 1, "next"));
        links.push(link(last, "last"));
    }
    if page > 1 {
        links.push(link(1, "first"));
        links.push(link(page - 1, "prev"));
    }
    if !links.is_empty()
        && let Ok(value) = HeaderValue::from_str(&links.join(", "))
    {
        response.headers_mut().insert(header::LINK, value);
    }
    response
}

/// The `config.url` checks GitHub documents: present, and an http(s) URL.
pub(super) fn invalid_url(url: Option<&str>) -> Option<Value> {
    let Some(url) = url else {
        return Some(json!([{ "resource": "Hook", "code": "missing_field", "field": "url" }]));
    };
    let parsed = url::Url::parse(url).ok();
    let web = parsed.is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    (!web).then(|| {
        json!([{
            "resource": "Hook",
            "code": "custom",
            "field": "url",
            "message": "url is not a valid HTTP or HTTPS URL",
        }])
    })
}

pub(super) fn strings(value: &Value) -> Option<Vec<String>> {
    value.as_array().map(|items| {
        items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    })
}

pub(super) fn config_string(config: &Value, key: &str, default: &str) -> String {
    match &config[key] {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        _ => default.to_owned(),
    }
}

pub(super) fn create_hook(
    state: &mut State,
    id: u64,
    body: &Value,
    default_branch: &str,
) -> Response {
    let config = &body["config"];
    if let Some(errors) = invalid_url(config["url"].as_str()) {
        return validation_failed(errors);
    }
    let url = config["url"].as_str().unwrap_or_default().to_owned();
    let events = strings(&body["events"]).unwrap_or_else(|| vec!["push".to_owned()]);
    let hook_id = state.next_id();
    let Some(repo) = state.repo_mut(id) else {
        return not_found();
    };
    // "Multiple webhooks can share the same config as long as those webhooks do not have any
    // events that overlap."
    let overlaps = repo
        .hooks
        .iter()
        .any(|hook| hook.url == url && hook.events.iter().any(|e| events.contains(e)));
    if overlaps {
        return validation_failed(json!([{
            "resource": "Hook",
            "code": "custom",
            "message": "Hook already exists on this repository",
        }]));
    }
    let hook = FakeHook {
        id: hook_id,
        url,
        secret: config["secret"].as_str().map(str::to_owned),
        content_type: config_string(config, "content_type", "form"),
        insecure_ssl: config_string(config, "insecure_ssl", "0"),
        events,
        active: body["active"].as_bool().unwrap_or(true),
        created_at: Utc::now(),
        updated_at: Utc::now(),
    };
    repo.hooks.push(hook.clone());
    // GitHub delivers nothing to an inactive hook, its ping included.
    if hook.active {
        queue_ping(state, id, &hook, default_branch);
    }
    let state = &*state;
    let Some(repo) = state.repo(id) else {
        return not_found();
    };
    respond(StatusCode::CREATED, Some(&hook_json(state, repo, &hook)))
}

pub(super) fn get_hook(state: &State, id: u64, hook_id: u64) -> Response {
    let found = state
        .repo(id)
        .and_then(|repo| Some((repo, repo.hooks.iter().find(|h| h.id == hook_id)?)));
    match found {
        Some((repo, hook)) => ok(hook_json(state, repo, hook)),
        None => not_found(),
    }
}

/// "Update a repository webhook": a given `config` replaces the old one whole, so a secret not
/// sent again is removed, as GitHub documents.
pub(super) fn update_hook(state: &mut State, id: u64, hook_id: u64, body: &Value) -> Response {
    let config = &body["config"];
    if config.is_object()
        && let Some(errors) = invalid_url(config["url"].as_str())
    {
        return validation_failed(errors);
    }
    let Some(hook) = state
        .repo_mut(id)
        .and_then(|repo| repo.hooks.iter_mut().find(|h| h.id == hook_id))
    else {
        return not_found();
    };
    if config.is_object() {
        hook.url = config["url"].as_str().unwrap_or_default().to_owned();
        hook.updated_at = Utc::now();
        hook.secret = config["secret"].as_str().map(str::to_owned);
        hook.content_type = config_string(config, "content_type", "form");
        hook.insecure_ssl = config_string(config, "insecure_ssl", "0");
    }
    if let Some(events) = strings(&body["events"]) {
        hook.events = events;
    }
    if let Some(add) = strings(&body["add_events"]) {
        for event in add {
            if !hook.events.contains(&event) {
                hook.events.push(event);
            }
        }
    }
    if let Some(remove) = strings(&body["remove_events"]) {
        hook.events.retain(|e| !remove.contains(e));
    }
    if let Some(active) = body["active"].as_bool() {
        hook.active = active;
    }
    get_hook(state, id, hook_id)
}

pub(super) fn delete_hook(state: &mut State, id: u64, hook_id: u64) -> Response {
    let Some(repo) = state.repo_mut(id) else {
        return not_found();
    };
    let before = repo.hooks.len();
    repo.hooks.retain(|hook| hook.id != hook_id);
    if repo.hooks.len() == before {
        return not_found();
    }
    respond(StatusCode::NO_CONTENT, None)
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// `%XX` escapes in a path segment, as clients encode names with unusual characters.
pub(super) fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
