//! `status`: what every app is doing — its releases with their states, timings and build logs,
//! and the last webhook deliveries with what was done with each. It serves the console's pages
//! (`/`, `/apps/{app}`) and their JSON twins (`/api/apps`, `/api/apps/{app}`) from the same reads.

use std::sync::Arc;

use runway_core::adapters::{Adapters, Need, Unwired};

use axum::extract::Query;
use axum::extract::State as Shared;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use runway_console::{
    AppPage, AppSummary, AppsPage, AuditPage, AuditRow, HookView, Nav, Page, Pager, PreviewRow,
    STYLESHEET,
};
use runway_core::domain::{
    AppName, AuditEntry, BuildId, Caller, Delivery, Deployment, HookHealth, Release, ReleaseId,
    ReleaseState,
};
use runway_core::ports::{AppReleases, Identity, ImageBuilder, LogError, RuntimeLog, Store};
use runway_http::{
    ApiError, ApiResult, Authenticated, Authenticates, Limits, Path, Router, json, limits,
    with_type,
};
use serde_json::{Value, json};

const RELEASES_SHOWN: usize = 20;
const DELIVERIES_SHOWN: usize = 10;

#[derive(Clone)]
pub struct State {
    pub store: Arc<dyn Store>,
    pub builder: Arc<dyn ImageBuilder>,
    pub identity: Arc<dyn Identity>,
    /// What the apps write as they run.
    pub runtime_log: Arc<dyn RuntimeLog>,
    /// The regions an app may run in: the settings form's choices.
    pub regions: Vec<String>,
}

/// Firestore, Cloud Build's logs and the apps' entries in Cloud Logging on Google Cloud, the
/// user IAP signed in, and the deploy policy (for the regions the settings form offers).
pub const NEEDS: &[Need] = &[
    Need::Store,
    Need::Builder,
    Need::RuntimeLog,
    Need::Users,
    Need::Policy,
];

impl State {
    pub fn new(adapters: &Adapters) -> Result<Self, Unwired> {
        Ok(Self {
            store: adapters.store()?,
            builder: adapters.builder()?,
            identity: adapters.users()?,
            runtime_log: adapters.runtime_log()?,
            regions: adapters.policy()?.allowed_regions,
        })
    }
}

/// Reads only: no body, and answers from the store (a build log from the builder).
const LIMITS: Limits = Limits {
    body: 0,
    timeout: std::time::Duration::from_secs(30),
};

pub fn router(state: State) -> Router {
    let routes = axum::Router::new()
        .route("/", get(apps_page))
        .route("/apps/{app}", get(app_page))
        .route("/apps/{app}/events", get(app_events))
        .route("/apps/{app}/log/events", get(runtime_log_events))
        .route("/audit", get(audit_page))
        .route("/assets/console.css", get(stylesheet))
        .route("/api/apps", get(list))
        .route("/api/apps/{app}", get(show))
        .route("/api/apps/{app}/log", get(runtime_log))
        .route("/api/builds/{build}/log", get(build_log))
        .route("/api/audit", get(audit_trail))
        .with_state(state);
    limits(routes, LIMITS)
}

impl Authenticates for State {
    fn identity(&self) -> &dyn Identity {
        self.identity.as_ref()
    }
}

fn deployment_json(deployment: &Deployment, latest: Option<&Release>) -> Value {
    json!({
        "app": deployment.app,
        "repo_url": deployment.repo,
        "branch": deployment.branch,
        "main_file": deployment.main_file,
        "region": deployment.region,
        "memory": deployment.resources.memory().as_str(),
        "cpu": deployment.resources.cpu().as_str(),
        "env": deployment.runtime.env,
        "min_instances": deployment.runtime.min_instances,
        "access": deployment.access,
        "secret_keys": deployment.secret_keys,
        "notify": deployment.notify,
        "previews": deployment.previews,
        "pull_request": deployment.pull,
        "owner": deployment.owner,
        "url": deployment.url,
        "live_release": deployment.live_release,
        "latest_release": latest.map(release_json),
        "created_at": deployment.created_at,
        "updated_at": deployment.updated_at,
    })
}

fn release_json(release: &Release) -> Value {
    let seconds = release
        .finished_at
        .map(|end| (end - release.queued_at).num_milliseconds() as f64 / 1000.0);
    json!({
        "id": release.id,
        "seq": release.seq,
        "state": release.state,
        "trigger": release.trigger,
        "region": release.region,
        "clear_cache": release.clear_cache,
        "actor": release.actor,
        "commit": release.commit,
        "pushed": release.pushed,
        "build_id": release.build_id,
        "log_url": release.log_url,
        "revision": release.revision,
        "url": release.url,
        "message": release.message,
        "rollback_of": release.rollback_of,
        "queued_at": release.queued_at,
        "updated_at": release.updated_at,
        "finished_at": release.finished_at,
        "duration_seconds": seconds,
    })
}

/// How many apps a page of the list shows, and its JSON twin lists: with every app on one
/// page, a team's 200 apps made a 108 KB page.
const APPS_PER_PAGE: usize = 50;

/// One page of the apps a caller may see, each with its newest release and the one that
/// serves.
struct VisibleApps {
    apps: Vec<(Deployment, AppReleases)>,
    /// How many apps all pages hold.
    total: usize,
    page: Page,
}

impl VisibleApps {
    fn more(&self) -> bool {
        self.total > self.page.skip() + self.apps.len()
    }
}

/// The apps `caller` may see, by name, on the page `query` asks for. With `team`, every app of
/// the installation: a deployer sees the team's apps in the list, though only their own open
/// (see `team_json`).
async fn visible_apps(
    state: &State,
    caller: &Caller,
    query: &ListQuery,
) -> Result<VisibleApps, ApiError> {
    let page = Page::new(query.page, APPS_PER_PAGE);
    let visible: Vec<Deployment> = state
        .store
        .deployments()
        .await?
        .into_iter()
        // A preview is listed on its app's page, not among the apps.
        .filter(|deployment| deployment.pull.is_none())
        .filter(|deployment| query.team() || caller.may_manage(deployment))
        .collect();
    let total = visible.len();
    let shown: Vec<Deployment> = visible
        .into_iter()
        .skip(page.skip())
        .take(page.size)
        .collect();
    let releases = state.store.newest_and_live(&shown).await?;
    Ok(VisibleApps {
        apps: shown.into_iter().zip(releases).collect(),
        total,
        page,
    })
}

/// `?team=1`: the team's apps too; `?page=N`: the Nth page of them.
#[derive(serde::Deserialize)]
struct ListQuery {
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    page: Option<usize>,
}

impl ListQuery {
    fn team(&self) -> bool {
        matches!(self.team.as_deref(), Some("1" | "true" | "yes"))
    }

    /// The address of page `number` of the same list.
    fn page_link(&self, number: usize) -> String {
        match self.team() {
            true => format!("/?team=1&page={number}"),
            false => format!("/?page={number}"),
        }
    }
}

/// Another owner's app as the team's list shows it: what the apps page shows of it, not its
/// repository, access or viewers.
fn team_json(deployment: &Deployment, latest: Option<&Release>) -> Value {
    json!({
        "app": deployment.app,
        "branch": deployment.branch,
        "owner": deployment.owner,
        "url": deployment.url,
        "manageable": false,
        "latest_release": latest.map(|release| json!({
            "state": release.state,
            "commit": release.commit,
            "actor": release.actor,
            "finished_at": release.finished_at,
        })),
    })
}

/// The apps page's twin: the same page of apps, with how many there are and the next page's
/// number (`null` on the last).
async fn list(
    Shared(state): Shared<State>,
    Authenticated(caller): Authenticated,
    Query(query): Query<ListQuery>,
) -> ApiResult {
    let visible = visible_apps(&state, &caller, &query).await?;
    let apps: Vec<Value> = visible
        .apps
        .iter()
        .map(|(deployment, releases)| {
            let newest = releases.newest.as_ref();
            if caller.may_manage(deployment) {
                let mut shown = deployment_json(deployment, newest);
                shown["manageable"] = true.into();
                shown
            } else {
                team_json(deployment, newest)
            }
        })
        .collect();
    let next_page = visible.more().then_some(visible.page.number + 1);
    Ok(json(
        StatusCode::OK,
        &json!({
            "deployments": apps,
            "total": visible.total,
            "page": visible.page.number,
            "per_page": visible.page.size,
            "next_page": next_page,
        }),
    ))
}

async fn apps_page(
    Shared(state): Shared<State>,
    Authenticated(caller): Authenticated,
    Query(query): Query<ListQuery>,
) -> ApiResult {
    let visible = visible_apps(&state, &caller, &query).await?;
    let pager = Pager::new(visible.page, visible.apps.len(), visible.more(), |n| {
        query.page_link(n)
    });
    let apps = visible
        .apps
        .iter()
        .map(|(deployment, releases)| {
            let mut app =
                AppSummary::of(deployment, releases.newest.as_ref(), releases.live.as_ref());
            app.manageable = caller.may_manage(deployment);
            app
        })
        .collect();
    page(&AppsPage {
        nav: Nav::of(&caller),
        apps,
        total: visible.total,
        pager,
        team: query.team(),
    })
}

/// The app named `app`, if `caller` may see it; one they may not see is as absent as one that
/// does not exist.
async fn managed(state: &State, caller: &Caller, app: &str) -> Result<Deployment, ApiError> {
    let app = AppName::parse(app)?;
    state
        .store
        .deployment(&app)
        .await?
        .filter(|d| caller.may_manage(d))
        .ok_or_else(|| ApiError::NotFound(format!("no app named '{app}'")))
}

/// One app as a caller may see it.
struct OneApp {
    deployment: Deployment,
    /// The newest `RELEASES_SHOWN`, newest first, and the serving one when it is older.
    releases: Vec<Release>,
    /// Where the app's older releases start: the number of the oldest of the newest
    /// `RELEASES_SHOWN`, when there are older ones.
    older_before: Option<u64>,
    /// The page of older history asked for (`?before=N`), when one was.
    history: Option<History>,
    deliveries: Vec<Delivery>,
    /// What cleanup last found of the app's hook on its repository.
    hook: Option<HookHealth>,
    /// Its open pull requests' previews, with each one's newest and serving release.
    previews: Vec<(Deployment, AppReleases)>,
}

/// A page of an app's older releases: those numbered below `before`, newest first.
struct History {
    before: u64,
    releases: Vec<Release>,
    /// Where the page after this one starts, when there are still older releases.
    older_before: Option<u64>,
}

/// `?before=N`: the page of the app's releases numbered below N.
#[derive(serde::Deserialize)]
struct AppQuery {
    #[serde(default)]
    before: Option<u64>,
}

/// Of `releases` (one more than a page holds, newest first), the page, and where the next
/// one starts when there is one.
fn page_of(mut releases: Vec<Release>) -> (Vec<Release>, Option<u64>) {
    let more = releases.len() > RELEASES_SHOWN;
    releases.truncate(RELEASES_SHOWN);
    let next = releases.last().map(|release| release.seq).filter(|_| more);
    (releases, next)
}

/// One app as `caller` may see it: its record, newest releases (and the older page `before`
/// asks for) and its hook's deliveries.
async fn one_app(
    state: &State,
    caller: &Caller,
    app: &str,
    before: Option<u64>,
) -> Result<OneApp, ApiError> {
    let deployment = managed(state, caller, app).await?;
    let app = &deployment.app;
    // One more than shown says whether there are older ones.
    let (mut releases, older_before) =
        page_of(state.store.releases(app, RELEASES_SHOWN + 1).await?);
    // The serving release, when it is older than those shown.
    if let Some(live) = &deployment.live_release
        && !releases.iter().any(|release| &release.id == live)
        && let Some(release) = state.store.release(live).await?
    {
        releases.push(release);
    }
    let history = match before {
        None => None,
        Some(before) => {
            let older = state
                .store
                .releases_before(app, before, RELEASES_SHOWN + 1)
                .await?;
            let (releases, older_before) = page_of(older);
            Some(History {
                before,
                releases,
                older_before,
            })
        }
    };
    let deliveries = state
        .store
        .deliveries_of_app(&deployment.app, DELIVERIES_SHOWN)
        .await?;
    let hook = state.store.hook_health(&deployment.app).await?;
    let previews = previews_of(state, &deployment).await?;
    Ok(OneApp {
        previews,
        deployment,
        releases,
        older_before,
        history,
        deliveries,
        hook,
    })
}

/// The previews of `app`'s open pull requests, by number.
async fn previews_of(
    state: &State,
    app: &Deployment,
) -> Result<Vec<(Deployment, AppReleases)>, ApiError> {
    if app.pull.is_some() {
        return Ok(Vec::new());
    }
    let mut previews: Vec<Deployment> = state
        .store
        .deployments_of_repo(app.repo_id)
        .await?
        .into_iter()
        .filter(|other| other.app.is_preview_of(&app.app))
        .collect();
    previews.sort_by_key(|preview| preview.pull.as_ref().map(|pull| pull.number));
    let releases = state.store.newest_and_live(&previews).await?;
    Ok(previews.into_iter().zip(releases).collect())
}

/// One preview as its app's JSON lists it.
fn preview_json(preview: &Deployment, releases: &AppReleases) -> Value {
    json!({
        "app": preview.app,
        "pull_request": preview.pull,
        "url": preview.url,
        "latest_release": releases.newest.as_ref().map(release_json),
    })
}

/// One app. `releases` is its newest 20 (and the serving one when older) or, with
/// `?before=N`, the 20 numbered below N; `next_before` is the `before` of the page after it
/// (null on the last), and `older_releases` whether there is one.
async fn show(
    Shared(state): Shared<State>,
    Authenticated(caller): Authenticated,
    Path(app): Path<String>,
    Query(query): Query<AppQuery>,
) -> ApiResult {
    let one = one_app(&state, &caller, &app, query.before).await?;
    let mut body = deployment_json(&one.deployment, one.releases.first());
    let (releases, next_before) = match &one.history {
        Some(history) => (&history.releases, history.older_before),
        None => (&one.releases, one.older_before),
    };
    body["releases"] = releases.iter().map(release_json).collect();
    body["older_releases"] = next_before.is_some().into();
    body["next_before"] = next_before.into();
    body["deliveries"] = serde_json::to_value(one.deliveries).map_err(anyhow::Error::from)?;
    body["hook"] = serde_json::to_value(one.hook).map_err(anyhow::Error::from)?;
    body["open_previews"] = one
        .previews
        .iter()
        .map(|(preview, releases)| preview_json(preview, releases))
        .collect();
    Ok(json(StatusCode::OK, &body))
}

async fn app_page(
    Shared(state): Shared<State>,
    Authenticated(caller): Authenticated,
    Path(app): Path<String>,
    Query(query): Query<AppQuery>,
) -> ApiResult {
    let one = one_app(&state, &caller, &app, query.before).await?;
    let mut shown = AppPage::of(&caller, &one.deployment, &one.releases, &one.deliveries);
    shown.regions = state.regions.clone();
    shown.hook = one.hook.as_ref().map(HookView::of);
    shown.previews = one
        .previews
        .iter()
        .filter_map(|(preview, releases)| {
            PreviewRow::of(preview, releases.newest.as_ref(), releases.live.as_ref())
        })
        .collect();
    let older_link = |before: u64| format!("/apps/{}?before={before}", one.deployment.app);
    match &one.history {
        None => {
            shown.newest_only = one.older_before.map(|_| RELEASES_SHOWN);
            shown.older = one.older_before.map(older_link);
        }
        Some(history) => {
            shown.show_history(&one.deployment, history.before, &history.releases);
            shown.older = history.older_before.map(older_link);
        }
    }
    page(&shown)
}

/// How often a following page hears about its release, and how long one stream lasts (the
/// browser's EventSource connects again by itself).
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
const FOLLOW_AT_MOST: std::time::Duration = std::time::Duration::from_secs(15 * 60);
/// A build log goes out in pieces of at most this much per look.
const LOG_PIECE: usize = 64 * 1024;

/// Server-Sent Events for an app's page: `release` (the newest release's id, sequence, state
/// and message) whenever it changes, `log` with each new piece of its build log as the builder
/// writes it (the uv log locally; the log Cloud Build writes to its bucket), and `done` once
/// the release is over and its log sent.
async fn app_events(
    Shared(state): Shared<State>,
    Authenticated(caller): Authenticated,
    Path(app): Path<String>,
    headers: http::HeaderMap,
) -> ApiResult {
    let app = managed(&state, &caller, &app).await?.app;
    // A browser connecting again names the last event it got: its log goes on from there.
    let (log_of, log_sent) = headers
        .get("last-event-id")
        .and_then(|id| id.to_str().ok())
        .and_then(LogPosition::parse)
        .map_or((None, 0), |position| {
            (Some(position.release), position.sent)
        });
    let follow = Follow {
        state,
        app,
        pending: std::collections::VecDeque::new(),
        shown: None,
        log_of,
        log_sent,
        deadline: tokio::time::Instant::now() + FOLLOW_AT_MOST,
        looked: false,
        finished: false,
    };
    let events = futures_util::stream::unfold(follow, Follow::next);
    Ok(axum::response::sse::Sse::new(events)
        .keep_alive(axum::response::sse::KeepAlive::default())
        .into_response())
}

/// Where one page's stream of events stands.
struct Follow {
    state: State,
    app: AppName,
    pending: std::collections::VecDeque<Event>,
    /// The release and state last sent.
    shown: Option<(ReleaseId, ReleaseState)>,
    /// The release whose build log the page has, and how many of its bytes.
    log_of: Option<ReleaseId>,
    log_sent: u64,
    deadline: tokio::time::Instant,
    looked: bool,
    finished: bool,
}

impl Follow {
    async fn next(mut self) -> Option<(Result<Event, std::convert::Infallible>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            if self.finished || tokio::time::Instant::now() >= self.deadline {
                return None;
            }
            if self.looked {
                tokio::time::sleep(FOLLOW_EVERY).await;
            }
            self.looked = true;
            self.look().await;
        }
    }

    /// Reads the newest release and its log, and queues what the page has not seen.
    async fn look(&mut self) {
        let latest = match self.state.store.releases(&self.app, 1).await {
            Ok(mut releases) => releases.pop(),
            Err(error) => {
                tracing::warn!(%error, app = %self.app, "following an app");
                return; // Look again in a moment.
            }
        };
        let Some(latest) = latest else {
            self.finish();
            return;
        };
        let now = (latest.id.clone(), latest.state);
        if self.log_of.as_ref() != Some(&latest.id) {
            // A newer release: its own log, from the start.
            self.log_of = Some(latest.id.clone());
            self.log_sent = 0;
        }
        if self.shown.as_ref() != Some(&now) {
            let release = json!({
                "id": latest.id, "seq": latest.seq, "state": latest.state,
                "message": latest.message,
            });
            self.pending
                .push_back(Event::default().event("release").data(release.to_string()));
            self.shown = Some(now);
        }
        let mut log_complete = true;
        // Only what is new: the builder reads from where the last look stopped.
        if let Some(build) = &latest.build_id
            && let Ok(piece) = self
                .state
                .builder
                .log_from(build, self.log_sent, LOG_PIECE)
                .await
        {
            let at_end = piece.len() < LOG_PIECE;
            let (text, used) = readable(&piece, at_end && latest.state.is_terminal());
            self.log_sent += used as u64;
            if !text.is_empty() {
                let text = text.replace('\r', "\n");
                let position = LogPosition {
                    release: latest.id.clone(),
                    sent: self.log_sent,
                };
                self.pending.push_back(
                    Event::default()
                        .event("log")
                        .id(position.to_string())
                        .data(text),
                );
            }
            log_complete = at_end && used == piece.len();
        }
        if latest.state.is_terminal() && log_complete {
            self.finish();
        }
    }

    fn finish(&mut self) {
        // With data: a browser's EventSource drops an event whose data is empty.
        let state = self
            .shown
            .as_ref()
            .map_or("none", |(_, state)| state.as_str());
        self.pending
            .push_back(Event::default().event("done").data(state));
        self.finished = true;
    }
}

/// How far a page got in a release's build log: the id of each `log` event, which a browser
/// sends back as `Last-Event-ID` when it connects again.
struct LogPosition {
    release: ReleaseId,
    sent: u64,
}

impl LogPosition {
    fn parse(id: &str) -> Option<Self> {
        let (release, sent) = id.split_once(' ')?;
        Some(Self {
            release: ReleaseId::from(release),
            sent: sent.parse().ok()?,
        })
    }
}

impl std::fmt::Display for LogPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.release, self.sent)
    }
}

/// The text of a piece of a build log to send now, and how many of its bytes that is. A
/// character the piece cuts at its end waits for the next look, unless the log is over
/// (`last`); bytes that are no UTF-8 at all go out as U+FFFD, as the whole log does.
fn readable(piece: &[u8], last: bool) -> (String, usize) {
    let usable = match std::str::from_utf8(piece) {
        Err(cut) if cut.error_len().is_none() && !last => cut.valid_up_to(),
        _ => piece.len(),
    };
    (
        String::from_utf8_lossy(&piece[..usable]).into_owned(),
        usable,
    )
}

/// How many lines of an app's runtime log one answer holds at most, and a page starts with.
const LOG_LINES_AT_MOST: usize = 1000;
const LOG_LINES_SHOWN: usize = 200;

/// `?after=CURSOR` (from an earlier answer) for what is new since; `?lines=N` for the newest N.
#[derive(serde::Deserialize)]
struct LogQuery {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    lines: Option<usize>,
}

/// The app's runtime log as JSON: its lines, oldest first (each with its time, revision,
/// stream and text), and the cursor to ask for what comes after.
async fn runtime_log(
    Shared(state): Shared<State>,
    Authenticated(caller): Authenticated,
    Path(app): Path<String>,
    Query(query): Query<LogQuery>,
) -> ApiResult {
    let deployment = managed(&state, &caller, &app).await?;
    let lines = query
        .lines
        .unwrap_or(LOG_LINES_SHOWN)
        .clamp(1, LOG_LINES_AT_MOST);
    let (app, region) = (&deployment.app, &deployment.region);
    let read = match query.after.as_deref() {
        Some(cursor) => state.runtime_log.after(app, region, cursor, lines).await?,
        None => state.runtime_log.tail(app, region, lines).await?,
    };
    Ok(json(
        StatusCode::OK,
        &json!({ "lines": read.lines, "cursor": read.cursor }),
    ))
}

/// Server-Sent Events following an app's runtime log: `lines` (a JSON array, oldest first)
/// with the newest lines first and then each batch of new ones, its id the cursor a browser
/// connecting again sends back; `note` when the log cannot be read for a while, and why. A
/// page that closed its stream (its tab was hidden) opens a new one with `?after=CURSOR`.
async fn runtime_log_events(
    Shared(state): Shared<State>,
    Authenticated(caller): Authenticated,
    Path(app): Path<String>,
    Query(query): Query<LogQuery>,
    headers: http::HeaderMap,
) -> ApiResult {
    let deployment = managed(&state, &caller, &app).await?;
    let cursor = headers
        .get("last-event-id")
        .and_then(|id| id.to_str().ok())
        .map(str::to_owned)
        .or(query.after)
        .filter(|id| !id.is_empty());
    let tail = LogTail {
        state,
        app: deployment.app,
        region: deployment.region,
        cursor,
        wait: None,
        deadline: tokio::time::Instant::now() + FOLLOW_AT_MOST,
    };
    let events = futures_util::stream::unfold(tail, LogTail::next);
    Ok(axum::response::sse::Sse::new(events)
        .keep_alive(axum::response::sse::KeepAlive::default())
        .into_response())
}

/// Where one page following an app's runtime log stands.
struct LogTail {
    state: State,
    app: AppName,
    region: runway_core::domain::Region,
    /// Where the page is in the log: `None` until it has the newest lines.
    cursor: Option<String>,
    /// How long to wait before the next read: `None` before the first.
    wait: Option<std::time::Duration>,
    deadline: tokio::time::Instant,
}

impl LogTail {
    async fn next(mut self) -> Option<(Result<Event, std::convert::Infallible>, Self)> {
        loop {
            if let Some(wait) = self.wait {
                if tokio::time::Instant::now() + wait >= self.deadline {
                    return None;
                }
                tokio::time::sleep(wait).await;
            }
            self.wait = Some(self.state.runtime_log.follow_every());
            let log = &self.state.runtime_log;
            let read = match &self.cursor {
                None => log.tail(&self.app, &self.region, LOG_LINES_SHOWN).await,
                Some(cursor) => {
                    log.after(&self.app, &self.region, cursor, LOG_LINES_AT_MOST)
                        .await
                }
            };
            let read = match read {
                Ok(read) => read,
                Err(error) => {
                    if let LogError::Throttled { retry_after, .. } = &error {
                        self.wait = Some(*retry_after);
                    }
                    tracing::warn!(%error, app = %self.app, "reading the app's log");
                    let note = Event::default().event("note").data(error.to_string());
                    return Some((Ok(note), self));
                }
            };
            let first = self.cursor.is_none();
            self.cursor = Some(read.cursor.clone());
            if first || !read.lines.is_empty() {
                let lines = serde_json::to_string(&read.lines).unwrap_or_else(|_| "[]".into());
                let event = Event::default().event("lines").id(read.cursor).data(lines);
                return Some((Ok(event), self));
            }
        }
    }
}

async fn stylesheet() -> Response {
    let mut response = with_type(StatusCode::OK, "text/css; charset=utf-8", STYLESHEET);
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// A rendered page. Pages are personal (who is signed in, what they may see): never cached.
fn page(template: &impl askama::Template) -> ApiResult {
    let html = template
        .render()
        .map_err(|error| ApiError::Internal(error.into()))?;
    let mut response = with_type(StatusCode::OK, "text/html; charset=utf-8", html);
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

async fn build_log(
    Shared(state): Shared<State>,
    Authenticated(caller): Authenticated,
    Path(build_id): Path<BuildId>,
) -> ApiResult {
    let release = state
        .store
        .release_by_build(&build_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no build {build_id}")))?;
    let deployment = state.store.deployment(&release.app).await?;
    if !deployment.is_some_and(|d| caller.may_manage(&d)) {
        return Err(ApiError::NotFound(format!("no build {build_id}")));
    }
    let log = state.builder.log(&build_id).await?;
    Ok(with_type(StatusCode::OK, "text/plain; charset=utf-8", log))
}

/// How many entries of the trail a page or its twin holds, newest first: 200 made a 65 KB page.
const AUDIT_PER_PAGE: usize = 100;

/// The audit trail's filters, as the page's form and scripts send them, and the page.
#[derive(serde::Deserialize)]
struct AuditQuery {
    #[serde(default)]
    app: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    page: Option<usize>,
}

impl AuditQuery {
    /// The address of page `number` with the same filters.
    fn page_link(&self, number: usize) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [("app", &self.app), ("actor", &self.actor)] {
            if !value.is_empty() {
                query.append_pair(name, value);
            }
        }
        query.append_pair("page", &number.to_string());
        format!("/audit?{}", query.finish())
    }
}

/// One page of the trail `query` asks for.
struct AuditEntries {
    /// The page's entries that the actor filter keeps.
    entries: Vec<AuditEntry>,
    /// How many entries of the trail the page held before the actor filter.
    held: usize,
    page: Page,
    /// Older entries are on a later page.
    more: bool,
}

/// The page of entries `query` asks for; admins only. The actor filter picks among the page's
/// entries: it matches any part of a name, which Firestore cannot query.
async fn audit_entries(
    state: &State,
    caller: &Caller,
    query: &AuditQuery,
) -> Result<AuditEntries, ApiError> {
    if !caller.admin {
        return Err(ApiError::Forbidden("the audit trail is for admins".into()));
    }
    let app = Some(query.app.trim())
        .filter(|app| !app.is_empty())
        .map(AppName::parse)
        .transpose()?;
    let page = Page::new(query.page, AUDIT_PER_PAGE);
    // One more than the page holds says whether there are older ones.
    let mut entries = state
        .store
        .audit(app.as_ref(), page.skip(), page.size + 1)
        .await?;
    let more = entries.len() > page.size;
    entries.truncate(page.size);
    let held = entries.len();
    let actor = query.actor.trim().to_lowercase();
    if !actor.is_empty() {
        entries.retain(|entry| entry.actor.to_lowercase().contains(&actor));
    }
    Ok(AuditEntries {
        entries,
        held,
        page,
        more,
    })
}

async fn audit_trail(
    Shared(state): Shared<State>,
    Authenticated(caller): Authenticated,
    Query(query): Query<AuditQuery>,
) -> ApiResult {
    let found = audit_entries(&state, &caller, &query).await?;
    Ok(json(
        StatusCode::OK,
        &json!({
            "entries": found.entries,
            "page": found.page.number,
            "per_page": found.page.size,
            "next_page": found.more.then_some(found.page.number + 1),
        }),
    ))
}

async fn audit_page(
    Shared(state): Shared<State>,
    Authenticated(caller): Authenticated,
    Query(query): Query<AuditQuery>,
) -> ApiResult {
    let found = audit_entries(&state, &caller, &query).await?;
    let pager = Pager::new(found.page, found.held, found.more, |n| query.page_link(n));
    page(&AuditPage {
        nav: Nav::of(&caller),
        pager,
        entries: found.entries.iter().map(AuditRow::of).collect(),
        app_filter: query.app,
        actor_filter: query.actor,
    })
}

#[cfg(test)]
mod tests {
    use super::readable;

    #[test]
    fn a_character_cut_by_a_log_piece_waits_for_the_next_look() {
        let text = "ok ✓".as_bytes();
        let cut = &text[..text.len() - 1];

        assert_eq!(readable(cut, false), ("ok ".to_owned(), 3));
        assert_eq!(readable(text, false), ("ok ✓".to_owned(), text.len()));
        // A log that is over ends as it is.
        assert_eq!(readable(cut, true), ("ok \u{fffd}".to_owned(), cut.len()));
    }

    #[test]
    fn bytes_that_are_no_text_go_out_as_replacement_characters() {
        assert_eq!(readable(b"a\xffb", false), ("a\u{fffd}b".to_owned(), 3));
    }
}
