//! `submit`: the form and the API that create, update, redeploy, roll back and delete apps;
//! each caller's changes are limited per minute (429).

use std::sync::Arc;

use runway_core::adapters::{Adapters, Need, Unwired};
use runway_core::clock::Clock;

use axum::extract::Query;
use axum::extract::State as Shared;
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode};
use runway_console::{Nav, NewAppPage, RuntimeFields};
use runway_core::config::Policy;
use runway_core::deployments::{Settings, SubmitRefused, may_submit, submitted};
use runway_core::domain::{
    Access, AppName, AuditAction, Branch, Caller, CommitSha, Cpu, Deployment, EnvVars, HookId,
    MainFile, Memory, MinInstances, NewRelease, NotifyKind, NotifyTarget, NotifyTargets, Previews,
    PrivateTargets, Region, Release, ReleaseId, RepoUrl, Resources, Runtime, SecretsToml, Trigger,
    Viewer,
};
use runway_core::ports::{Forge, Identity, ImageBuilder, Platform, Queue, SecretStore, Store};
use runway_core::releases::{RollbackRefused, audit, enqueue, rollback_target};
use runway_core::removal::Remover;
use runway_http::limit::KeyedLimit;
use runway_http::origin::{CSRF_FIELD, csrf_matches};
use runway_http::webhook;
use runway_http::{
    ApiError, ApiResult, Authenticated, Authenticates, Body, Limits, Path, Router, authenticate,
    forge_error, json, limits, parse_json, with_type,
};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

/// Requests are small; the cap leaves room for the largest secrets TOML (64 KiB). Creating an
/// app talks to GitHub, and deleting one waits for Cloud Run to remove the service.
/// The main files a new app's form offers first, in order: Streamlit Community Cloud's default,
/// then the common other name.
const MAIN_FILE_CANDIDATES: [&str; 2] = ["streamlit_app.py", "app.py"];

#[derive(Deserialize)]
struct RepositoryQuery {
    repo_url: Option<String>,
}

/// `GET /new/repository?repo_url=…`: what the new-app form fills in once a repository is named:
/// its default branch, its branches, and the main file to suggest (`streamlit_app.py` when the
/// default branch has it, else `app.py`, else none). A repository outside the allowed list is
/// refused before the forge is asked anything, as a submit is.
async fn repository_facts(
    Shared(state): Shared<State>,
    Authenticated(_caller): Authenticated,
    Query(query): Query<RepositoryQuery>,
) -> ApiResult {
    let repo = RepoUrl::parse(
        required(&query.repo_url, "repo_url")?,
        state.policy.allow_local_repos,
    )?;
    if let Some(allowed) = &state.policy.allowed_repos
        && !allowed.permits(&repo)
    {
        return Err(allowed.refusal().into());
    }
    let forge = state.forge.as_ref();
    let repository = forge
        .repository(&repo)
        .await
        .map_err(|e| forge_error("repo_url", e))?;
    let branches = forge
        .branches(&repo)
        .await
        .map_err(|e| forge_error("repo_url", e))?;
    let mut main_file = None;
    for candidate in MAIN_FILE_CANDIDATES {
        let found = forge
            .has_file(&repo, &repository.default_branch, candidate)
            .await
            .map_err(|e| forge_error("repo_url", e))?;
        if found {
            main_file = Some(candidate);
            break;
        }
    }
    Ok(json(
        StatusCode::OK,
        &json!({
            "full_name": repository.full_name,
            "default_branch": repository.default_branch,
            "branches": branches,
            "main_file": main_file,
        }),
    ))
}

/// The body of `POST /new/secrets-check`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretsCheck {
    secrets: String,
}

/// `POST /new/secrets-check`: whether secrets TOML would be taken, asked by the forms before
/// they send it, with the parser a submit uses: the names it sets, or the mistake with its line
/// and column (400, field `secrets`). Nothing is kept, and the text is never logged or echoed.
async fn check_secrets(Authenticated(_caller): Authenticated, Body(body): Body) -> ApiResult {
    let check: SecretsCheck = parse_json(&body)?;
    let secrets = SecretsToml::parse(check.secrets)?;
    Ok(json(StatusCode::OK, &json!({ "keys": secrets.keys() })))
}

const LIMITS: Limits = Limits {
    body: 256 * 1024,
    timeout: std::time::Duration::from_secs(300),
};

#[derive(Clone)]
pub struct State {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    pub secrets: Arc<dyn SecretStore>,
    pub forge: Arc<dyn Forge>,
    pub builder: Arc<dyn ImageBuilder>,
    pub platform: Arc<dyn Platform>,
    pub identity: Arc<dyn Identity>,
    pub policy: Policy,
    /// Where GitHub (or the local hook) delivers push events.
    pub webhook_url: String,
    pub webhook_secret: SecretString,
    pub clock: Arc<dyn Clock>,
    /// Each caller's changes a minute (`Changer`).
    pub changes: Arc<KeyedLimit<String>>,
    /// Whether notification targets may be on private networks.
    pub private_targets: PrivateTargets,
}

/// Firestore, Pub/Sub, Secret Manager, GitHub, Cloud Build and Cloud Run on Google Cloud, and
/// the user IAP signed in.
pub const NEEDS: &[Need] = &[
    Need::Store,
    Need::Queue,
    Need::Secrets,
    Need::Forge,
    Need::Builder,
    Need::Platform,
    Need::Users,
    Need::Policy,
    Need::WebhookUrl,
    Need::WebhookSecret,
    Need::RateLimits,
];

impl State {
    pub fn new(adapters: &Adapters) -> Result<Self, Unwired> {
        Ok(Self {
            clock: adapters.clock.clone(),
            store: adapters.store()?,
            queue: adapters.queue()?,
            secrets: adapters.secrets()?,
            forge: adapters.forge()?,
            builder: adapters.builder()?,
            platform: adapters.platform()?,
            identity: adapters.users()?,
            policy: adapters.policy()?,
            webhook_url: adapters.webhook_url()?,
            webhook_secret: adapters.webhook_secret()?,
            changes: Arc::new(KeyedLimit::new(
                adapters.rate_limits()?.submit_per_caller,
                adapters.clock.clone(),
            )),
            private_targets: adapters.private_targets,
        })
    }
}

pub fn router(state: State) -> Router {
    let routes = axum::Router::new()
        .route("/new", get(form))
        .route("/new/secrets-check", post(check_secrets))
        .route("/new/repository", get(repository_facts))
        .route(
            "/api/deployments",
            post(create_or_update).get(moved_to_apps),
        )
        .route("/api/deployments/{app}/redeploy", post(redeploy))
        .route("/api/deployments/{app}/rollback", post(rollback))
        .route(
            "/api/deployments/{app}/notifications",
            axum::routing::put(replace_notifications),
        )
        .route(
            "/api/deployments/{app}",
            axum::routing::delete(delete).get(moved_to_apps),
        )
        .with_state(state);
    limits(routes, LIMITS)
}

/// `GET /api/deployments[/{app}]`, the first read paths, for scripts written before: reads are
/// `status`'s and live under `/api/apps` (on Google Cloud the load balancer sends every
/// `/api/deployments` path to submit, whatever the method; `infra/url_map.json`).
async fn moved_to_apps(uri: http::Uri) -> axum::response::Response {
    let moved = uri
        .path_and_query()
        .map_or("/api/deployments", |p| p.as_str())
        .replacen("/api/deployments", "/api/apps", 1);
    axum::response::IntoResponse::into_response((
        StatusCode::PERMANENT_REDIRECT,
        [(http::header::LOCATION, moved)],
    ))
}

impl Authenticates for State {
    fn identity(&self) -> &dyn Identity {
        self.identity.as_ref()
    }
}

/// The caller of an endpoint that changes something, within its changes a minute
/// (`RUNWAY_SUBMIT_CALLER_PER_MINUTE`), or 429 with `Retry-After`: each change asks GitHub,
/// Cloud Build and Cloud Run for work on Runway's one quota, so one caller's runaway script must
/// not spend it for everyone. First among a handler's extractors, like `Authenticated`.
struct Changer(Caller);

impl axum::extract::FromRequestParts<State> for Changer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &State,
    ) -> Result<Self, ApiError> {
        let caller = authenticate(state.identity.as_ref(), &parts.headers).await?;
        state.changes.check(&caller.email).map_err(|wait| {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            ApiError::TooManyRequests {
                message: format!(
                    "{} has made more changes than this Runway takes from one person ({} a \
                     minute); nothing was changed — try again in {seconds} s",
                    caller.email,
                    state.changes.per_minute()
                ),
                retry_after: wait,
            }
        })?;
        Ok(Self(caller))
    }
}

async fn form(
    Shared(state): Shared<State>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
) -> ApiResult {
    let (csrf, cookie) = runway_http::origin::csrf_token(&headers);
    let page = NewAppPage {
        nav: Nav::of(&caller),
        regions: &state.policy.allowed_regions,
        default_region: &state.policy.default_region,
        memories: Memory::ALL.iter().map(|m| m.as_str()).collect(),
        default_memory: Resources::default().memory().as_str(),
        cpus: Cpu::ALL.iter().map(|c| c.as_str()).collect(),
        default_cpu: Resources::default().cpu().as_str(),
        default_access: state.policy.default_access.mode(),
        default_viewers: viewer_list(&state.policy.default_access),
        runtime: RuntimeFields::of(&Runtime::default(), Resources::default()),
        csrf,
        previews_mode: "off",
        forks_allowed: caller.admin,
        preview_secret_keys: Vec::new(),
    };
    let html = askama::Template::render(&page).map_err(|e| ApiError::Internal(e.into()))?;
    let mut response = with_type(StatusCode::OK, "text/html; charset=utf-8", html);
    let cookie = http::HeaderValue::from_str(&cookie).map_err(|e| ApiError::Internal(e.into()))?;
    response
        .headers_mut()
        .insert(http::header::SET_COOKIE, cookie);
    Ok(response)
}

/// The form's fields, all optional here so each missing one gets its own message. No `Debug`:
/// it holds the secrets as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentForm {
    repo_url: Option<String>,
    main_file: Option<String>,
    branch: Option<String>,
    app_name: Option<String>,
    region: Option<String>,
    memory: Option<String>,
    cpu: Option<String>,
    /// `public` or `private`; omitted on an update, the app keeps its access.
    access: Option<String>,
    /// A private app's viewers: one string (separated by commas, spaces or lines) or a list.
    viewers: Option<serde_json::Value>,
    /// Omitted on an update: the app keeps the secrets it has. Any JSON type is read here, so
    /// a wrong one is refused by us without serde quoting the value back.
    secrets: Option<serde_json::Value>,
    /// Plain environment variables: `NAME=value` lines, or an object of strings. Omitted on an
    /// update, the app keeps its own.
    env: Option<serde_json::Value>,
    /// Instances kept warm on Cloud Run: a number, or the form's text. Omitted, kept.
    min_instances: Option<serde_json::Value>,
    /// Where releases are announced: `KIND URL [success] [secret=KEY]` lines, or a list of
    /// objects. Omitted on an update, the app keeps its own; empty, it has none.
    notify: Option<serde_json::Value>,
    /// Whether pull requests get previews: `off`, `on` (branches of the repository itself) or
    /// `forks` (theirs too; an admin's to allow). Omitted on an update, the app keeps its own.
    previews: Option<String>,
    /// The secrets previews run with, a TOML of their own (never the app's). Omitted on an
    /// update, previews keep theirs; empty, they have none.
    preview_secrets: Option<serde_json::Value>,
}

/// A secrets field as sent: a TOML document in a string. `field` names it in the refusal.
fn secrets_field(
    value: Option<serde_json::Value>,
    field: &'static str,
) -> Result<Option<SecretsToml>, ApiError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(toml)) => SecretsToml::parse(toml)
            .map(Some)
            .map_err(|error| ApiError::bad_request(field, error.message)),
        Some(_) => Err(ApiError::bad_request(
            field,
            format!("{field} must be a string holding a TOML document"),
        )),
    }
}

/// `previews` as sent.
fn previews(value: Option<&str>) -> Result<Option<Previews>, ApiError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let (enabled, forks) = match value {
        "off" => (false, false),
        "on" => (true, false),
        "forks" => (true, true),
        other => {
            return Err(ApiError::bad_request(
                "previews",
                format!(
                    "previews must be off, on (pull requests from the repository's own \
                     branches) or forks (from forks too); got {:?}",
                    other.chars().take(40).collect::<String>()
                ),
            ));
        }
    };
    Ok(Some(Previews {
        enabled,
        forks,
        secret_keys: Vec::new(),
    }))
}

/// A target as an API client sends it. No `Debug`: it holds the URL and key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetForm {
    kind: String,
    url: String,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    on_success: bool,
}

/// `notify` as sent: the form's lines, or a list of targets. A wrong type is refused by us,
/// never by serde, whose message could quote a URL back.
fn notify_targets(
    value: Option<serde_json::Value>,
    private: PrivateTargets,
) -> Result<Option<NotifyTargets>, ApiError> {
    let wrong = || {
        ApiError::bad_request(
            "notify",
            "notify must be KIND URL lines or a list of {kind, url, secret, on_success}",
        )
    };
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(lines)) => {
            Ok(Some(NotifyTargets::parse_lines(&lines, private)?))
        }
        Some(serde_json::Value::Array(items)) => {
            let mut targets = Vec::new();
            for (index, item) in items.into_iter().enumerate() {
                let form: TargetForm = serde_json::from_value(item).map_err(|_| wrong())?;
                targets.push(NotifyTarget::new(
                    NotifyKind::parse(&form.kind)?,
                    &form.url,
                    form.secret.as_deref(),
                    form.on_success,
                    private,
                    index + 1,
                )?);
            }
            Ok(Some(NotifyTargets::new(targets)?))
        }
        Some(_) => Err(wrong()),
    }
}

/// `env` as sent: lines (the form) or an object (an API client).
fn env_vars(value: Option<serde_json::Value>) -> Result<Option<EnvVars>, ApiError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(lines)) => Ok(Some(EnvVars::parse_lines(&lines)?)),
        Some(serde_json::Value::Object(vars)) => {
            let vars = vars
                .into_iter()
                .map(|(name, value)| match value {
                    serde_json::Value::String(value) => Ok((name, value)),
                    _ => Err(ApiError::bad_request(
                        "env",
                        format!("the value of {name} must be a string"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(EnvVars::new(vars)?))
        }
        Some(_) => Err(ApiError::bad_request(
            "env",
            "env must be NAME=value lines or an object of strings",
        )),
    }
}

/// `min_instances` as sent: a number, or the form's text (empty keeps the app's).
fn min_instances(value: Option<serde_json::Value>) -> Result<Option<MinInstances>, ApiError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(text)) if text.trim().is_empty() => Ok(None),
        Some(serde_json::Value::String(text)) => Ok(Some(MinInstances::parse(&text)?)),
        Some(serde_json::Value::Number(number)) => {
            let count = number.as_u64().and_then(|n| u32::try_from(n).ok());
            match count {
                Some(count) => Ok(Some(MinInstances::new(count)?)),
                None => Err(ApiError::bad_request(
                    "min_instances",
                    format!("must be 0 to {}", MinInstances::MAX),
                )),
            }
        }
        Some(_) => Err(ApiError::bad_request(
            "min_instances",
            "min_instances must be a number",
        )),
    }
}

fn required<'a>(value: &'a Option<String>, field: &'static str) -> Result<&'a str, ApiError> {
    match value.as_deref().map(str::trim) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(ApiError::bad_request(field, format!("{field} is required"))),
    }
}

fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// A form, validated: every field parsed into its domain type.
struct Validated {
    app: AppName,
    repo: RepoUrl,
    branch: Option<Branch>,
    main_file: MainFile,
    /// `None` (each of these three): the app keeps its own; a new app gets the default.
    region: Option<Region>,
    memory: Option<Memory>,
    cpu: Option<Cpu>,
    /// `None`: the app keeps its access (a new one gets the installation's default).
    access: Option<Access>,
    secrets: Option<SecretsToml>,
    /// `None` (each of these two): the app keeps its own; a new app has none.
    env: Option<EnvVars>,
    min_instances: Option<MinInstances>,
    /// `None`: the app keeps its targets (a new app has none).
    notify: Option<NotifyTargets>,
    /// `None`: the app keeps its previews (a new app has none).
    previews: Option<Previews>,
    /// `None`: previews keep their secrets; an empty document removes them.
    preview_secrets: Option<SecretsToml>,
}

/// The viewers as one line, the way the form shows them.
fn viewer_list(access: &Access) -> String {
    access
        .viewers()
        .iter()
        .map(Viewer::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `access` and `viewers` as sent: `viewers` alone is refused rather than guessed at.
fn access(
    mode: Option<&str>,
    viewers: Option<serde_json::Value>,
) -> Result<Option<Access>, ApiError> {
    let viewers: Vec<String> = match viewers {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::String(list)) => vec![list],
        Some(serde_json::Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                serde_json::Value::String(viewer) => Ok(viewer),
                _ => Err(ApiError::bad_request("viewers", "viewers must be strings")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ApiError::bad_request(
                "viewers",
                "viewers must be a string or a list of strings",
            ));
        }
    };
    let listed = viewers.iter().any(|v| !v.trim().is_empty());
    match mode {
        Some(mode) => Ok(Some(Access::parse(
            mode,
            viewers.iter().map(String::as_str),
        )?)),
        None if listed => Err(ApiError::bad_request(
            "access",
            "viewers are for a private app: set access to private",
        )),
        None => Ok(None),
    }
}

impl Validated {
    /// Where the app runs and on what: what the form names, else what the app has, else the
    /// installation's defaults.
    fn placement(
        &self,
        existing: Option<&Deployment>,
        policy: &Policy,
    ) -> Result<(Region, Resources), ApiError> {
        let region = match (&self.region, existing) {
            (Some(region), _) => region.clone(),
            (None, Some(app)) => app.region.clone(),
            (None, None) => Region::parse(&policy.default_region, &policy.allowed_regions)?,
        };
        let current = existing.map_or_else(Resources::default, |app| app.resources);
        let resources = Resources::new(
            self.memory.unwrap_or(current.memory()),
            self.cpu.unwrap_or(current.cpu()),
        )?;
        Ok((region, resources))
    }

    /// What the app runs with: what the form names, else what the app has.
    fn runtime(&self, existing: Option<&Deployment>) -> Runtime {
        let current = existing.map(|app| app.runtime.clone()).unwrap_or_default();
        Runtime {
            env: self.env.clone().unwrap_or(current.env),
            min_instances: self.min_instances.unwrap_or(current.min_instances),
        }
    }
}

impl DeploymentForm {
    fn validate(self, policy: &Policy, private: PrivateTargets) -> Result<Validated, ApiError> {
        let app = AppName::parse(required(&self.app_name, "app_name")?)?;
        app.check_not_reserved(&policy.reserved_prefix)?;
        app.check_not_preview()?;
        let repo = RepoUrl::parse(
            required(&self.repo_url, "repo_url")?,
            policy.allow_local_repos,
        )?;
        // Before anything asks GitHub: the answer says nothing about the repository itself.
        if let Some(allowed) = &policy.allowed_repos
            && !allowed.permits(&repo)
        {
            return Err(allowed.refusal().into());
        }
        let main_file = MainFile::parse(required(&self.main_file, "main_file")?)?;
        let branch = present(&self.branch).map(Branch::parse).transpose()?;
        let region = present(&self.region)
            .map(|region| Region::parse(region, &policy.allowed_regions))
            .transpose()?;
        let memory = present(&self.memory).map(Memory::parse).transpose()?;
        let cpu = present(&self.cpu).map(Cpu::parse).transpose()?;
        let access = access(present(&self.access), self.viewers)?;
        let env = env_vars(self.env)?;
        let min_instances = min_instances(self.min_instances)?;
        let notify = notify_targets(self.notify, private)?;
        let previews = previews(present(&self.previews))?;
        let preview_secrets = secrets_field(self.preview_secrets, "preview_secrets")?;
        Ok(Validated {
            notify,
            previews,
            preview_secrets,
            env,
            min_instances,
            app,
            repo,
            branch,
            main_file,
            region,
            memory,
            cpu,
            access,
            secrets: secrets_field(self.secrets, "secrets")?,
        })
    }
}

/// The fields of [`DeploymentForm`] that hold text (`viewers` and `secrets` take any JSON).
const TEXT_FIELDS: [&str; 9] = [
    "repo_url",
    "main_file",
    "branch",
    "app_name",
    "region",
    "memory",
    "cpu",
    "access",
    "previews",
];

/// A text field that is not text, refused by its name: serde's message says only where in the
/// body it is, and the form points at the field.
fn mistyped(body: &[u8]) -> Option<ApiError> {
    let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).ok()?;
    TEXT_FIELDS
        .into_iter()
        .find(|field| {
            fields
                .get(*field)
                .is_some_and(|value| !value.is_string() && !value.is_null())
        })
        .map(|field| ApiError::bad_request(field, format!("{field} must be a string")))
}

/// JSON, or the form encoding a plain HTML form posts.
fn read_form(headers: &HeaderMap, body: &[u8]) -> Result<DeploymentForm, ApiError> {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let mut fields = serde_json::Map::new();
        for (key, value) in url::form_urlencoded::parse(body) {
            fields.insert(key.into_owned(), value.into_owned().into());
        }
        // What any site's HTML form can send: only Runway's own form, with the token its page
        // set in a cookie beside it, is taken.
        let token = fields.remove(CSRF_FIELD);
        if !csrf_matches(headers, token.as_ref().and_then(|token| token.as_str())) {
            return Err(ApiError::Forbidden(
                "the form's token is missing or not this browser's: open the form again and \
                 send it from there (API clients send JSON)"
                    .into(),
            ));
        }
        serde_json::from_value(fields.into()).map_err(|e| ApiError::BadRequest {
            field: None,
            message: format!("the form is not valid: {e}"),
        })
    } else if content_type.is_empty() || content_type.starts_with("application/json") {
        parse_json(body).map_err(|error| mistyped(body).unwrap_or(error))
    } else {
        Err(ApiError::UnsupportedMediaType(
            "send application/json or application/x-www-form-urlencoded".into(),
        ))
    }
}

#[tracing::instrument(skip_all)]
async fn create_or_update(
    Shared(state): Shared<State>,
    Changer(caller): Changer,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult {
    let form = read_form(&headers, &body)?.validate(&state.policy, state.private_targets)?;
    let existing = state.store.deployment(&form.app).await?;
    may_submit(existing.as_ref(), &caller, &form.app, &form.repo).map_err(
        |refused| match refused {
            SubmitRefused::Taken { .. } => ApiError::Forbidden(refused.to_string()),
            SubmitRefused::OtherRepository { .. } => ApiError::Conflict(refused.to_string()),
        },
    )?;
    // A fork's code runs with whatever the preview may read: only an admin opens that door.
    let forks_before = existing.as_ref().is_some_and(|app| app.previews.forks);
    if form.previews.as_ref().is_some_and(|p| p.forks) && !forks_before && !caller.admin {
        return Err(ApiError::Forbidden(
            "only an admin may allow previews of pull requests from forks (their code is \
             anyone's); choose on for the repository's own branches"
                .into(),
        ));
    }
    let (region, resources) = form.placement(existing.as_ref(), &state.policy)?;
    // A service Runway did not create may already have the name where the app would run.
    state.platform.check_name(&form.app, &region).await?;
    let repository = state
        .forge
        .repository(&form.repo)
        .await
        .map_err(|e| forge_error("repo_url", e))?;
    // An update without a branch keeps the app's; a new app follows the default branch.
    let branch = match (&form.branch, &existing) {
        (Some(branch), _) => branch.clone(),
        (None, Some(app)) => app.branch.clone(),
        (None, None) => repository.default_branch,
    };
    let commit = state
        .forge
        .resolve_commit(&form.repo, &branch)
        .await
        .map_err(|e| forge_error("branch", e))?;

    let is_new = existing.is_none();
    let settings = |webhook_id: Option<HookId>| Settings {
        app: form.app.clone(),
        repo: form.repo.clone(),
        repo_id: repository.id,
        branch: branch.clone(),
        main_file: form.main_file.clone(),
        region: region.clone(),
        resources,
        runtime: form.runtime(existing.as_ref()),
        access: form.access.clone().unwrap_or_else(|| {
            existing.as_ref().map_or_else(
                || state.policy.default_access.clone(),
                |app| app.access.clone(),
            )
        }),
        // The names of the secrets it sets; a new app without any has none, an update
        // without them keeps the app's.
        notify: form.notify.as_ref().map(NotifyTargets::summaries),
        // The switches the form names, else the app's; the secrets' names those it sets, else
        // the ones previews have.
        previews: Some({
            let current = existing.as_ref().map(|app| app.previews.clone());
            let mut previews = form
                .previews
                .clone()
                .or(current.clone())
                .unwrap_or_default();
            previews.secret_keys = match &form.preview_secrets {
                Some(secrets) => secrets.keys(),
                None => current
                    .map(|previews| previews.secret_keys)
                    .unwrap_or_default(),
            };
            previews
        }),
        secret_keys: match &form.secrets {
            Some(secrets) => Some(secrets.keys()),
            None => existing.is_none().then(Vec::new),
        },
        webhook_id,
    };
    // A new app's name is claimed before anything else is written: of two creates of one
    // name at once, the second stops here, before its secrets could replace the first's.
    if is_new {
        let claim = submitted(None, settings(None), &caller, state.clock.now());
        if !state.store.insert_deployment(&claim).await? {
            tracing::info!(app = %form.app, "create refused: the name was just taken");
            return Err(ApiError::Conflict(format!(
                "the app {} was created by someone else a moment ago; choose another name",
                form.app
            )));
        }
    }
    // Then what lives outside the store; a new app's is undone if a later step fails, so a
    // failed submit leaves no secret, no hook and no record behind.
    let created = async {
        if let Some(secrets) = &form.secrets {
            state.secrets.put(&form.app, secrets).await?;
        }
        if let Some(targets) = &form.notify {
            state.secrets.put_notifications(&form.app, targets).await?;
        }
        match &form.preview_secrets {
            Some(secrets) if secrets.keys().is_empty() => {
                state.secrets.delete(&form.app.previews_secrets()).await?;
            }
            Some(secrets) => {
                state
                    .secrets
                    .put(&form.app.previews_secrets(), secrets)
                    .await?;
            }
            None => {}
        }
        let webhook_id = state
            .forge
            .ensure_webhook(
                &form.repo,
                &webhook::app_hook_url(&state.webhook_url, &form.app),
                &webhook::app_secret(&state.webhook_secret, &form.app),
            )
            .await
            .map_err(|e| forge_error("repo_url", e))?;
        let deployment = submitted(
            existing.as_ref(),
            settings(Some(webhook_id)),
            &caller,
            state.clock.now(),
        );
        state.store.put_deployment(&deployment).await?;
        Ok::<_, ApiError>(deployment)
    }
    .await;
    let deployment = match created {
        Ok(deployment) => deployment,
        Err(error) => {
            tracing::warn!(app = %form.app, error = %error, "submit failed");
            if is_new {
                undo_new_app(&state, &form.app, &form.repo).await;
            }
            return Err(error);
        }
    };
    let release = queue_manual(&state, &deployment, &caller, &commit, false).await?;
    let action = if is_new {
        AuditAction::Create
    } else {
        AuditAction::Update
    };
    audit(
        state.store.as_ref(),
        state.clock.as_ref(),
        &caller.email,
        action,
        Some(deployment.app.as_str()),
        format!(
            "{} branch {} file {} commit {}{}",
            deployment.repo,
            deployment.branch,
            deployment.main_file,
            commit.short(),
            if form.secrets.is_some() {
                ", secrets replaced"
            } else {
                ""
            }
        ),
    )
    .await;
    Ok(accepted(&release))
}

async fn queue_manual(
    state: &State,
    deployment: &Deployment,
    caller: &Caller,
    commit: &CommitSha,
    clear_cache: bool,
) -> Result<Release, ApiError> {
    let release = NewRelease {
        app: deployment.app.clone(),
        trigger: Trigger::Manual,
        actor: caller.email.clone(),
        commit: Some(commit.clone()),
        rollback_of: None,
        clear_cache,
    };
    Ok(enqueue(state.store.as_ref(), state.queue.as_ref(), release).await?)
}

/// Removes what a failed create wrote outside the store.
async fn undo_new_app(state: &State, app: &AppName, repo: &RepoUrl) {
    if let Err(error) = state.store.delete_deployment(app).await {
        tracing::error!(%app, %error, "could not remove the claim of a failed create");
    }
    for key in [app.clone(), app.previews_secrets()] {
        if let Err(error) = state.secrets.delete(&key).await {
            tracing::error!(%app, %error, "could not remove the secrets of a failed create");
        }
    }
    let hook_url = webhook::app_hook_url(&state.webhook_url, app);
    if let Ok(hooks) = state.forge.webhooks(repo).await {
        for hook in hooks.into_iter().filter(|h| h.url == hook_url) {
            let _ = state.forge.delete_webhook(repo, &hook.id).await;
        }
    }
}

/// 202: the release is queued; its progress is at the status URL.
fn accepted(release: &Release) -> runway_http::Response {
    json(
        StatusCode::ACCEPTED,
        &json!({
            "app": release.app,
            "release_id": release.id,
            "state": release.state,
            "commit": release.commit,
            "status_url": format!("/api/apps/{}", release.app),
            "page_url": format!("/apps/{}", release.app),
        }),
    )
}

async fn managed(state: &State, caller: &Caller, app: &str) -> Result<Deployment, ApiError> {
    let app = AppName::parse(app)?;
    let deployment = state
        .store
        .deployment(&app)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no app named '{app}'")))?;
    if !caller.may_manage(&deployment) {
        return Err(ApiError::Forbidden(format!(
            "only {} or an admin may change '{app}'",
            deployment.owner
        )));
    }
    if let Some(pull) = &deployment.pull {
        return Err(ApiError::Conflict(format!(
            "'{app}' is the preview of pull request #{}: it follows the pull request, so push \
             to {} to update it and close the pull request to remove it",
            pull.number, pull.head_branch
        )));
    }
    Ok(deployment)
}

#[tracing::instrument(skip_all, fields(app = %app))]
async fn redeploy(
    Shared(state): Shared<State>,
    Changer(caller): Changer,
    Path(app): Path<String>,
    Body(body): Body,
) -> ApiResult {
    let deployment = managed(&state, &caller, &app).await?;
    let form: RedeployForm = if body.iter().all(u8::is_ascii_whitespace) {
        RedeployForm::default()
    } else {
        parse_json(&body)?
    };
    let commit = state
        .forge
        .resolve_commit(&deployment.repo, &deployment.branch)
        .await
        .map_err(|e| forge_error("branch", e))?;
    let release = queue_manual(&state, &deployment, &caller, &commit, form.clear_cache).await?;
    audit(
        state.store.as_ref(),
        state.clock.as_ref(),
        &caller.email,
        AuditAction::Redeploy,
        Some(deployment.app.as_str()),
        format!(
            "commit {}{}",
            commit.short(),
            if form.clear_cache {
                ", build cache cleared"
            } else {
                ""
            }
        ),
    )
    .await;
    Ok(accepted(&release))
}

/// The body of `PUT /api/deployments/{app}/notifications`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotificationsForm {
    notify: serde_json::Value,
}

/// `PUT /api/deployments/{app}/notifications`: replaces where the app's releases are announced,
/// without a redeploy. The targets go to the secret store first and the app's record after, so
/// the record never names a target the store lacks for longer than a failed request.
async fn replace_notifications(
    Shared(state): Shared<State>,
    Changer(caller): Changer,
    Path(app): Path<String>,
    Body(body): Body,
) -> ApiResult {
    let mut deployment = managed(&state, &caller, &app).await?;
    let form: NotificationsForm = parse_json(&body).map_err(|_| {
        ApiError::bad_request(
            "notify",
            "send {\"notify\": KIND URL lines or a list of targets}",
        )
    })?;
    let targets = notify_targets(Some(form.notify), state.private_targets)?.unwrap_or_default();
    state
        .secrets
        .put_notifications(&deployment.app, &targets)
        .await?;
    deployment.notify = targets.summaries();
    deployment.updated_at = state.clock.now();
    state.store.put_deployment(&deployment).await?;
    let described: Vec<String> = deployment
        .notify
        .iter()
        .map(|target| {
            let success = if target.on_success {
                " (and successes)"
            } else {
                ""
            };
            format!("{} on {}{success}", target.kind, target.host)
        })
        .collect();
    audit(
        state.store.as_ref(),
        state.clock.as_ref(),
        &caller.email,
        AuditAction::Notifications,
        Some(deployment.app.as_str()),
        if described.is_empty() {
            "no targets".to_owned()
        } else {
            described.join(", ")
        },
    )
    .await;
    Ok(json(
        StatusCode::OK,
        &json!({ "app": deployment.app, "notify": deployment.notify }),
    ))
}

/// The body of a redeploy: optional, as is each field.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedeployForm {
    /// Build with no cache.
    #[serde(default)]
    clear_cache: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackForm {
    /// The release to bring back; default: the one live before the current.
    release_id: Option<ReleaseId>,
}

#[tracing::instrument(skip_all, fields(app = %app))]
async fn rollback(
    Shared(state): Shared<State>,
    Changer(caller): Changer,
    Path(app): Path<String>,
    Body(body): Body,
) -> ApiResult {
    let deployment = managed(&state, &caller, &app).await?;
    let form: RollbackForm = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackForm::default()
    } else {
        parse_json(&body)?
    };
    let releases = state.store.releases(&deployment.app, 200).await?;
    let target = rollback_target(
        &deployment.app,
        &releases,
        deployment.live_release.as_ref(),
        form.release_id.as_ref(),
    )
    .map_err(|refused| match refused {
        RollbackRefused::NothingEarlier(_) => ApiError::Conflict(refused.to_string()),
        _ => ApiError::bad_request("release_id", refused.to_string()),
    })?
    .clone();
    let release = enqueue(
        state.store.as_ref(),
        state.queue.as_ref(),
        NewRelease {
            app: deployment.app.clone(),
            trigger: Trigger::Rollback,
            actor: caller.email.clone(),
            commit: target.commit.clone(),
            rollback_of: Some(target.clone()),
            clear_cache: false,
        },
    )
    .await?;
    audit(
        state.store.as_ref(),
        state.clock.as_ref(),
        &caller.email,
        AuditAction::Rollback,
        Some(deployment.app.as_str()),
        format!("to release {} (seq {})", target.id, target.seq),
    )
    .await;
    Ok(accepted(&release))
}

/// Removes the app and everything Runway made for it (`Remover::remove`), then records who did.
#[tracing::instrument(skip_all, fields(app = %app))]
async fn delete(
    Shared(state): Shared<State>,
    Changer(caller): Changer,
    Path(app): Path<String>,
) -> ApiResult {
    let deployment = managed(&state, &caller, &app).await?;
    let app = &deployment.app;
    Remover {
        store: state.store.as_ref(),
        platform: state.platform.as_ref(),
        builder: state.builder.as_ref(),
        secrets: state.secrets.as_ref(),
        forge: state.forge.as_ref(),
    }
    .remove(&deployment)
    .await?;
    audit(
        state.store.as_ref(),
        state.clock.as_ref(),
        &caller.email,
        AuditAction::Delete,
        Some(app.as_str()),
        format!("{} branch {}", deployment.repo, deployment.branch),
    )
    .await;
    Ok(json(StatusCode::OK, &json!({ "deleted": app })))
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    fn page(regions: &[String], default_region: &str) -> String {
        page_with(regions, default_region, &Access::Public)
    }

    fn page_with(regions: &[String], default_region: &str, access: &Access) -> String {
        askama::Template::render(&NewAppPage {
            nav: Nav {
                user: "ada@example.com".into(),
                admin: false,
            },
            regions,
            default_region,
            memories: Memory::ALL.iter().map(|m| m.as_str()).collect(),
            default_memory: "1Gi",
            cpus: Cpu::ALL.iter().map(|c| c.as_str()).collect(),
            default_cpu: "1",
            default_access: access.mode(),
            default_viewers: viewer_list(access),
            runtime: RuntimeFields::of(&Runtime::default(), Resources::default()),
            csrf: "t0k3n".into(),
            previews_mode: "off",
            forks_allowed: false,
            preview_secret_keys: Vec::new(),
        })
        .unwrap()
    }

    #[test]
    fn the_form_offers_access_with_the_installations_default() {
        let public = page(&["europe-west1".into()], "europe-west1");
        assert!(
            public.contains(r#"<option value="public" selected>"#),
            "{public}"
        );
        assert!(public.contains(r#"<option value="private">"#));

        let private = Access::parse("private", ["group:ds@x.io"]).unwrap();
        let html = page_with(&["europe-west1".into()], "europe-west1", &private);
        assert!(
            html.contains(r#"<option value="private" selected>"#),
            "{html}"
        );
        assert!(html.contains(r#"value="group:ds@x.io""#), "{html}");
    }

    #[test]
    fn access_is_read_from_a_string_or_a_list_and_viewers_alone_are_refused() {
        let listed = access(Some("private"), Some(json!(["ada@x.io", "group:ds@x.io"])))
            .unwrap()
            .unwrap();
        assert_eq!(listed.viewers().len(), 2);
        let line = access(Some("private"), Some(json!("ada@x.io, group:ds@x.io")))
            .unwrap()
            .unwrap();
        assert_eq!(line, listed);
        assert_eq!(access(None, None).unwrap(), None);
        for (mode, viewers, field) in [
            (None, json!("ada@x.io"), "access"),
            (Some("private"), json!(42), "viewers"),
            (Some("private"), json!([1]), "viewers"),
            (Some("public"), json!("ada@x.io"), "viewers"),
        ] {
            let Err(ApiError::BadRequest {
                field: Some(named), ..
            }) = access(mode, Some(viewers))
            else {
                panic!("{mode:?} was not refused");
            };
            assert_eq!(named, field);
        }
    }

    /// Found by fuzzing: a field of the wrong type was refused without its name, which the
    /// form needs to point at it.
    #[test]
    fn a_field_of_the_wrong_type_is_refused_by_its_name() {
        for (body, field) in [
            (
                json!({ "app_name": 5, "repo_url": "https://github.com/o/r" }),
                "app_name",
            ),
            (json!({ "app_name": "demo", "branch": ["main"] }), "branch"),
            (json!({ "cpu": { "count": 2 } }), "cpu"),
        ] {
            let Err(ApiError::BadRequest {
                field: Some(named),
                message,
            }) = read_form(&HeaderMap::new(), body.to_string().as_bytes())
            else {
                panic!("{body} was not refused for a field");
            };
            assert_eq!(named, field, "{message}");
        }
    }

    #[test]
    fn the_form_offers_every_choice_with_the_defaults_selected() {
        let html = page(
            &["europe-west1".into(), "us-central1".into()],
            "us-central1",
        );

        assert!(
            html.contains("<option>europe-west1</option><option selected>us-central1</option>")
        );
        assert!(html.contains("<option selected>1Gi</option>"));
        assert!(html.contains("<option>512Mi</option>"));
        assert!(html.contains("<option selected>1</option><option>2</option><option>4</option>"));
    }

    #[test]
    fn the_form_escapes_what_it_fills_in() {
        let html = page(&["<script>x</script>".into()], "");

        assert!(!html.contains("<script>x"));
        assert!(
            html.contains("&#60;script&#62;x&#60;/script&#62;") || html.contains("&lt;script&gt;")
        );
    }
}
