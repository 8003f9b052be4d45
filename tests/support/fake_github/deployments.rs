//! Deployments, deployment statuses and commit statuses, as GitHub's REST API documents them
//! ("Create a deployment", "List deployments", "Create/List deployment statuses", "Create a
//! commit status"), with the refusals a client meets: a ref GitHub cannot resolve (422 "No ref
//! found for"), a commit it does not have (422 "No commit found for SHA"), a state it does not
//! know, a description past 140 characters, the 1,000 statuses a SHA and context may have, and
//! the two defaults that surprise: `auto_merge` (merge the default branch into the ref first:
//! 409 when the ref is behind) and `required_contexts` (every commit status on the ref must be
//! `success`: 409 otherwise). A credential without the permission gets 403 "Resource not
//! accessible by integration".

use super::*;

/// GitHub's limit on a status's description.
const MAX_DESCRIPTION_CHARS: usize = 140;
/// "There is a limit of 1000 statuses per sha and context within a repository."
const MAX_STATUSES_PER_CONTEXT: usize = 1000;
const DEPLOYMENT_STATES: [&str; 7] = [
    "error",
    "failure",
    "inactive",
    "in_progress",
    "queued",
    "pending",
    "success",
];
const COMMIT_STATES: [&str; 4] = ["error", "failure", "pending", "success"];

/// A deployment as the fake holds it, with its statuses oldest first.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeDeployment {
    pub id: u64,
    pub sha: String,
    /// The ref it was asked for, as given.
    pub git_ref: String,
    pub task: String,
    pub environment: String,
    pub description: String,
    pub payload: Value,
    pub transient_environment: bool,
    pub production_environment: bool,
    pub created_at: DateTime<Utc>,
    pub statuses: Vec<FakeDeploymentStatus>,
}

impl FakeDeployment {
    /// Its statuses' states, oldest first: `["queued", "in_progress", "success"]`.
    pub fn states(&self) -> Vec<String> {
        self.statuses.iter().map(|s| s.state.clone()).collect()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct FakeDeploymentStatus {
    pub id: u64,
    pub state: String,
    pub description: String,
    pub log_url: Option<String>,
    pub environment_url: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FakeCommitStatus {
    pub id: u64,
    pub sha: String,
    pub state: String,
    pub context: String,
    pub description: String,
    pub target_url: Option<String>,
}

impl FakeGitHub {
    /// The deployments of `owner/name`, oldest first.
    pub fn deployments(&self, owner: &str, name: &str) -> Vec<FakeDeployment> {
        self.state()
            .repos
            .iter()
            .find(|repo| repo.is_named(owner, name))
            .map(|repo| repo.deployments.clone())
            .unwrap_or_default()
    }

    /// The commit statuses of `owner/name`, oldest first.
    pub fn commit_statuses(&self, owner: &str, name: &str) -> Vec<FakeCommitStatus> {
        self.state()
            .repos
            .iter()
            .find(|repo| repo.is_named(owner, name))
            .map(|repo| repo.statuses.clone())
            .unwrap_or_default()
    }

    /// Sets a commit status as another integration would (a CI's `ci/tests`).
    pub fn add_commit_status(
        &self,
        owner: &str,
        name: &str,
        sha: &str,
        context: &str,
        state: &str,
    ) {
        let mut guard = self.state();
        let id = guard.next_id();
        if let Some(repo) = guard
            .repos
            .iter_mut()
            .find(|repo| repo.is_named(owner, name))
        {
            repo.statuses.push(FakeCommitStatus {
                id,
                sha: sha.to_owned(),
                state: state.to_owned(),
                context: context.to_owned(),
                description: String::new(),
                target_url: None,
            });
        }
    }

    /// From now on deployments and statuses answer 403 "Resource not accessible by
    /// integration", as for a GitHub App without the Deployments and Commit statuses
    /// permissions.
    pub fn forbid_deployments(&self) {
        self.state().deployments_forbidden = true;
    }
}

/// Whether `rest` (the path after `/repos/OWNER/NAME/`) is one of the endpoints here.
pub(super) fn is_deployments_path(rest: &[&str]) -> bool {
    matches!(rest.first(), Some(&"deployments" | &"statuses"))
}

pub(super) async fn deployments_route(
    state: &Mutex<State>,
    id: u64,
    rest: &[&str],
    request: Request,
) -> Response {
    if lock(state).deployments_forbidden {
        return error(
            StatusCode::FORBIDDEN,
            "Resource not accessible by integration",
        );
    }
    let method = request.method().clone();
    let query = request.uri().query().map(str::to_owned);
    match (rest, method) {
        (["deployments"], Method::GET) => list_deployments(&lock(state), id, query.as_deref()),
        (["deployments"], Method::POST) => match json_body(request).await {
            Ok(body) => create_deployment(state, id, &body).await,
            Err(response) => response,
        },
        (["deployments", deployment, "statuses"], method) => {
            let Ok(deployment) = deployment.parse::<u64>() else {
                return not_found();
            };
            match method {
                Method::GET => list_deployment_statuses(&lock(state), id, deployment),
                Method::POST => match json_body(request).await {
                    Ok(body) => create_deployment_status(&mut lock(state), id, deployment, &body),
                    Err(response) => response,
                },
                _ => not_found(),
            }
        }
        (["statuses", sha], Method::POST) => match json_body(request).await {
            Ok(body) => create_commit_status(state, id, sha, &body).await,
            Err(response) => response,
        },
        _ => not_found(),
    }
}

fn invalid(resource: &str, field: &str, message: Option<&str>) -> Response {
    let mut error = json!({ "resource": resource, "field": field, "code": "invalid" });
    if let Some(message) = message {
        error["code"] = json!("custom");
        error["message"] = json!(message);
    }
    validation_failed(json!([error]))
}

fn too_long(resource: &str, description: &str) -> Option<Response> {
    (description.chars().count() > MAX_DESCRIPTION_CHARS).then(|| {
        invalid(
            resource,
            "description",
            Some("description is too long (maximum is 140 characters)"),
        )
    })
}

fn time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn deployment_json(state: &State, repo: &Repo, deployment: &FakeDeployment) -> Value {
    let url = format!(
        "{}repos/{}/deployments/{}",
        state.api,
        repo.full_name(),
        deployment.id
    );
    json!({
        "url": url,
        "id": deployment.id,
        "node_id": format!("DE_{}", deployment.id),
        "sha": deployment.sha,
        "ref": deployment.git_ref,
        "task": deployment.task,
        "payload": deployment.payload,
        "original_environment": deployment.environment,
        "environment": deployment.environment,
        "description": deployment.description,
        "creator": { "login": "runway[bot]", "type": "Bot" },
        "created_at": time(&deployment.created_at),
        "updated_at": time(&deployment.created_at),
        "statuses_url": format!("{url}/statuses"),
        "repository_url": format!("{}repos/{}", state.api, repo.full_name()),
        "transient_environment": deployment.transient_environment,
        "production_environment": deployment.production_environment,
    })
}

fn status_json(
    state: &State,
    repo: &Repo,
    deployment: u64,
    status: &FakeDeploymentStatus,
) -> Value {
    json!({
        "url": format!("{}repos/{}/deployments/{deployment}/statuses/{}", state.api, repo.full_name(), status.id),
        "id": status.id,
        "node_id": format!("DES_{}", status.id),
        "state": status.state,
        "creator": { "login": "runway[bot]", "type": "Bot" },
        "description": status.description,
        "environment": repo.deployments.iter().find(|d| d.id == deployment).map(|d| d.environment.clone()),
        "target_url": status.log_url.clone().unwrap_or_default(),
        "log_url": status.log_url.clone().unwrap_or_default(),
        "environment_url": status.environment_url.clone().unwrap_or_default(),
        "created_at": time(&status.created_at),
        "updated_at": time(&status.created_at),
        "deployment_url": format!("{}repos/{}/deployments/{deployment}", state.api, repo.full_name()),
        "repository_url": format!("{}repos/{}", state.api, repo.full_name()),
    })
}

/// "List deployments": newest first, filtered by `sha`, `ref`, `task` and `environment`.
fn list_deployments(state: &State, id: u64, query: Option<&str>) -> Response {
    let Some(repo) = state.repo(id) else {
        return not_found();
    };
    let params: HashMap<String, String> = query
        .map(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let matches = |deployment: &&FakeDeployment| {
        let want = |key: &str, value: &str| params.get(key).is_none_or(|wanted| wanted == value);
        want("sha", &deployment.sha)
            && want("ref", &deployment.git_ref)
            && want("task", &deployment.task)
            && want("environment", &deployment.environment)
    };
    let number = |key: &str| {
        params
            .get(key)
            .and_then(|value| value.parse::<usize>().ok())
    };
    let per_page = number("per_page")
        .unwrap_or(DEFAULT_PER_PAGE)
        .clamp(1, MAX_PER_PAGE);
    let page = number("page").unwrap_or(1).max(1);
    let found: Vec<&FakeDeployment> = repo.deployments.iter().rev().filter(matches).collect();
    let items: Vec<Value> = found
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|deployment| deployment_json(state, repo, deployment))
        .collect();
    let mut response = ok(Value::Array(items));
    if page * per_page < found.len() {
        let mut next = url::Url::parse(&format!("{}repositories/{id}/deployments", state.api))
            .expect("the fake's own URL");
        {
            let mut pairs = next.query_pairs_mut();
            for (key, value) in params.iter().filter(|(key, _)| *key != "page") {
                pairs.append_pair(key, value);
            }
            pairs.append_pair("page", &(page + 1).to_string());
        }
        if let Ok(value) = HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    response
}

/// The commit `reference` names in the repository (a branch, a tag or a SHA), if any.
async fn resolve(state: &Mutex<State>, id: u64, reference: &str) -> Option<String> {
    let bare = bare_path(state, id)?;
    let object = format!("{reference}^{{commit}}");
    git(&bare, &["rev-parse", "--verify", "--quiet", &object])
        .await
        .ok()
        .map(|sha| sha.trim().to_owned())
}

async fn is_ancestor(state: &Mutex<State>, id: u64, ancestor: &str, of: &str) -> bool {
    let Some(bare) = bare_path(state, id) else {
        return false;
    };
    git(&bare, &["merge-base", "--is-ancestor", ancestor, of])
        .await
        .is_ok()
}

async fn create_deployment(state: &Mutex<State>, id: u64, body: &Value) -> Response {
    let Some(reference) = body["ref"].as_str() else {
        return validation_failed(json!([
            { "resource": "Deployment", "code": "missing_field", "field": "ref" }
        ]));
    };
    let Some(sha) = resolve(state, id, reference).await else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("No ref found for: {reference}"),
        );
    };
    // auto_merge (default true): the default branch is merged into the ref first. A ref that is
    // behind it would get a merge commit; the fake makes none, and refuses as for a conflict.
    if body["auto_merge"].as_bool().unwrap_or(true)
        && let Some(default) = default_branch(state, id).await
        && let Some(head) = resolve(state, id, &default).await
        && !is_ancestor(state, id, &head, &sha).await
    {
        return error(
            StatusCode::CONFLICT,
            &format!("Conflict merging {default} into {reference}."),
        );
    }
    let mut state = lock(state);
    let deployment_id = state.next_id();
    let Some(repo) = state.repo_mut(id) else {
        return not_found();
    };
    // required_contexts: absent, every context with a status on the commit must be success;
    // given, those listed must (an empty list checks nothing).
    let latest = |context: &str| {
        repo.statuses
            .iter()
            .rev()
            .find(|status| status.sha == sha && status.context == context)
            .map(|status| status.state.as_str())
    };
    let required: Vec<String> = match strings(&body["required_contexts"]) {
        Some(listed) => listed,
        None => {
            let mut all: Vec<String> = repo
                .statuses
                .iter()
                .filter(|status| status.sha == sha)
                .map(|status| status.context.clone())
                .collect();
            all.sort();
            all.dedup();
            all
        }
    };
    let failing: Vec<&String> = required
        .iter()
        .filter(|context| latest(context) != Some("success"))
        .collect();
    if !failing.is_empty() {
        return respond(
            StatusCode::CONFLICT,
            Some(&json!({
                "message": format!("Conflict: Commit status checks failed for {reference}."),
                "errors": [{
                    "contexts": failing.iter().map(|context| json!({
                        "context": context, "state": latest(context).unwrap_or("missing"),
                    })).collect::<Vec<_>>(),
                    "resource": "Deployment",
                    "field": "required_contexts",
                    "code": "invalid",
                }],
                "documentation_url": format!("{DOCS}/deployments/deployments#create-a-deployment"),
                "status": "409",
            })),
        );
    }
    let environment = body["environment"]
        .as_str()
        .unwrap_or("production")
        .to_owned();
    let deployment = FakeDeployment {
        id: deployment_id,
        sha,
        git_ref: reference.to_owned(),
        task: body["task"].as_str().unwrap_or("deploy").to_owned(),
        production_environment: body["production_environment"]
            .as_bool()
            .unwrap_or(environment == "production"),
        environment,
        description: body["description"].as_str().unwrap_or_default().to_owned(),
        payload: match &body["payload"] {
            Value::Null => json!({}),
            payload => payload.clone(),
        },
        transient_environment: body["transient_environment"].as_bool().unwrap_or(false),
        created_at: Utc::now(),
        statuses: Vec::new(),
    };
    repo.deployments.push(deployment.clone());
    let (state, repo) = (
        &*state,
        state.repo(id).expect("the repository just written"),
    );
    respond(
        StatusCode::CREATED,
        Some(&deployment_json(state, repo, &deployment)),
    )
}

fn list_deployment_statuses(state: &State, id: u64, deployment: u64) -> Response {
    let Some(repo) = state.repo(id) else {
        return not_found();
    };
    let Some(found) = repo.deployments.iter().find(|d| d.id == deployment) else {
        return not_found();
    };
    let items: Vec<Value> = found
        .statuses
        .iter()
        .rev()
        .map(|status| status_json(state, repo, deployment, status))
        .collect();
    ok(Value::Array(items))
}

fn create_deployment_status(state: &mut State, id: u64, deployment: u64, body: &Value) -> Response {
    let status_state = body["state"].as_str().unwrap_or_default().to_owned();
    if !DEPLOYMENT_STATES.contains(&status_state.as_str()) {
        return invalid("DeploymentStatus", "state", None);
    }
    let description = body["description"].as_str().unwrap_or_default().to_owned();
    if let Some(refused) = too_long("DeploymentStatus", &description) {
        return refused;
    }
    let url = |key: &str| {
        body[key]
            .as_str()
            .filter(|url| !url.is_empty())
            .map(str::to_owned)
    };
    let status_id = state.next_id();
    let Some(repo) = state.repo_mut(id) else {
        return not_found();
    };
    let Some(index) = repo.deployments.iter().position(|d| d.id == deployment) else {
        return not_found();
    };
    let status = FakeDeploymentStatus {
        id: status_id,
        state: status_state.clone(),
        description,
        log_url: url("log_url").or_else(|| url("target_url")),
        environment_url: url("environment_url"),
        created_at: Utc::now(),
    };
    repo.deployments[index].statuses.push(status.clone());
    // auto_inactive (default true): a success makes the environment's earlier non-transient,
    // non-production deployments whose last status was success inactive.
    if status_state == "success" && body["auto_inactive"].as_bool().unwrap_or(true) {
        let environment = repo.deployments[index].environment.clone();
        let now = Utc::now();
        for (other, earlier) in repo.deployments.iter_mut().enumerate() {
            let was_live = earlier
                .statuses
                .last()
                .is_some_and(|s| s.state == "success");
            if other != index
                && earlier.environment == environment
                && !earlier.transient_environment
                && !earlier.production_environment
                && was_live
            {
                earlier.statuses.push(FakeDeploymentStatus {
                    id: status_id,
                    state: "inactive".into(),
                    description: String::new(),
                    log_url: None,
                    environment_url: None,
                    created_at: now,
                });
            }
        }
    }
    let (state, repo) = (
        &*state,
        state.repo(id).expect("the repository just written"),
    );
    respond(
        StatusCode::CREATED,
        Some(&status_json(state, repo, deployment, &status)),
    )
}

async fn create_commit_status(state: &Mutex<State>, id: u64, sha: &str, body: &Value) -> Response {
    let is_sha = sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit());
    let resolved = match is_sha {
        true => resolve(state, id, sha).await,
        false => None,
    };
    if resolved.is_none() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("No commit found for SHA: {sha}"),
        );
    }
    let status_state = body["state"].as_str().unwrap_or_default().to_owned();
    if !COMMIT_STATES.contains(&status_state.as_str()) {
        return invalid("Status", "state", None);
    }
    let description = body["description"].as_str().unwrap_or_default().to_owned();
    if let Some(refused) = too_long("Status", &description) {
        return refused;
    }
    let context = body["context"].as_str().unwrap_or("default").to_owned();
    let mut state = lock(state);
    let status_id = state.next_id();
    let api = state.api.clone();
    let Some(repo) = state.repo_mut(id) else {
        return not_found();
    };
    let so_far = repo
        .statuses
        .iter()
        .filter(|status| status.sha == sha && status.context == context)
        .count();
    if so_far >= MAX_STATUSES_PER_CONTEXT {
        return invalid(
            "Status",
            "context",
            Some("This SHA and context has reached the maximum number of statuses."),
        );
    }
    let status = FakeCommitStatus {
        id: status_id,
        sha: sha.to_owned(),
        state: status_state,
        context,
        description,
        target_url: body["target_url"].as_str().map(str::to_owned),
    };
    repo.statuses.push(status.clone());
    respond(
        StatusCode::CREATED,
        Some(&json!({
            "url": format!("{api}repos/{}/statuses/{sha}", repo.full_name()),
            "id": status.id,
            "node_id": format!("SC_{}", status.id),
            "state": status.state,
            "description": status.description,
            "target_url": status.target_url,
            "context": status.context,
            "created_at": time(&Utc::now()),
            "updated_at": time(&Utc::now()),
            "creator": { "login": "runway[bot]", "type": "Bot" },
        })),
    )
}
