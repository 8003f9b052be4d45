//! A fake GitHub REST API for the `GitHubForge` tests. `rest` is its REST surface (routes,
//! authentication, errors, webhooks), `repos` the real git repositories behind it; this module
//! holds their shared state and the handle tests drive.
//!
//! A fake is allowed here only because GitHub has no runnable peer: there is no emulator or
//! self-hostable GitHub to test against. So this one stays honest in two ways. It follows
//! GitHub's documented REST shapes field by field (API version 2022-11-28: "Get a repository",
//! "Get a branch", "Download a repository archive (tar)", "List/Create/Get/Update/Delete a
//! repository webhook", "Get a repository installation for the authenticated app", "Create an
//! installation access token for an app", "Get GitHub meta information", and the deployments,
//! deployment statuses and commit statuses of `deployments`), including errors
//! (`{"message", "documentation_url", "status"}`, 422 `errors`), rate-limit headers, `Link`
//! pagination with `/repositories/{id}` URLs, 301/307 for renamed repositories and the 302 from
//! `tarball` to codeload. And everything git is real: each repository is a bare git repository
//! on disk; default branches come from `git symbolic-ref HEAD`, heads from `git rev-parse`,
//! tarballs from `git archive` with GitHub's `OWNER-REPO-SHA7/` folder.
//!
//! Codeload listens on a second port (another origin, as codeload.github.com is), so a test can
//! check that credentials never follow the redirect. Hooks live in memory; tests read them back,
//! secrets included. Authentication is checked: a configured token, or an installation token this
//! fake issued for an App JWT that verified (RS256) against the App's public key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use chrono::{DateTime, Utc};
use http::{HeaderValue, Method, StatusCode, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use runway_http::{Request, Response, full, read_body, serve};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

const DOCS: &str = "https://docs.github.com/rest";
/// GitHub caps `per_page` at 100 and defaults to 30.
const MAX_PER_PAGE: usize = 100;
const DEFAULT_PER_PAGE: usize = 30;
/// GitHub refuses App JWTs that expire more than 10 minutes ahead.
const MAX_JWT_LIFETIME_SECS: i64 = 600;

/// A running fake GitHub; stops serving when dropped.
pub struct FakeGitHub {
    api: String,
    state: Arc<Mutex<State>>,
    _stop: watch::Sender<()>,
}

/// A GitHub App registered with the fake, installed on every repository it serves.
pub struct FakeApp {
    pub app_id: u64,
    pub installation_id: u64,
    /// The App's private key, PKCS#1 PEM, as GitHub hands it out.
    pub private_key_pem: String,
}

/// A repository webhook as the fake holds it, secret included (GitHub never shows it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeHook {
    pub id: u64,
    pub url: String,
    pub secret: Option<String>,
    pub content_type: String,
    pub insecure_ssl: String,
    pub events: Vec<String>,
    pub active: bool,
    /// When it was made and last changed, as GitHub reports them (cleanup's grace period for
    /// young hooks reads `created_at`).
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Default)]
struct State {
    api: String,
    codeload: String,
    tokens: Vec<String>,
    app: Option<AppKey>,
    installation_tokens: HashMap<String, DateTime<Utc>>,
    token_lifetime: Option<chrono::Duration>,
    token_exchanges: usize,
    installation_lookups: usize,
    repos: Vec<Repo>,
    next_id: u64,
    rate_limit_reset: Option<i64>,
    /// Requests counted against the hour's primary rate limit (a 304 is not).
    rate_used: usize,
    hooks_forbidden: bool,
    deployments_forbidden: bool,
    /// The App may not write pull requests (no "Pull requests" permission).
    pulls_forbidden: bool,
    hooks_hidden: bool,
    page_cap: Option<usize>,
    downloads: HashMap<String, (u64, String)>,
    codeload_requests: usize,
    codeload_with_authorization: usize,
    /// Codeload answers a first request with a redirect to itself (a second hop on the same
    /// foreign host, where a client that compares each hop only with the previous one sends
    /// the credentials again).
    codeload_hops_once: bool,
    /// Deliveries decided but not yet sent, and those sent with what their receivers answered.
    outbox: Vec<hookshot::Outgoing>,
    deliveries: Vec<FakeDelivery>,
    /// How many more write requests hit a secondary rate limit, and the `retry-after` they name.
    secondary_limit: Option<(usize, u64)>,
    /// How the next calls under `/repos/` fail (status, `retry-after`), one each.
    outages: std::collections::VecDeque<(u16, Option<u64>)>,
    /// What `GET /meta` lists as `hooks`: where deliveries come from.
    hook_sources: Vec<String>,
}

/// The ranges GitHub's `meta` API listed as `hooks` when this fake was written.
pub const GITHUB_HOOK_SOURCES: [&str; 6] = [
    "192.30.252.0/22",
    "185.199.108.0/22",
    "140.82.112.0/20",
    "143.55.64.0/20",
    "2a0a:a440::/29",
    "2606:50c0::/32",
];

struct AppKey {
    app_id: u64,
    installation_id: u64,
    key: DecodingKey,
}

struct Repo {
    id: u64,
    owner: String,
    name: String,
    bare: PathBuf,
    hooks: Vec<FakeHook>,
    deployments: Vec<FakeDeployment>,
    statuses: Vec<FakeCommitStatus>,
    pulls: Vec<FakePull>,
    comments: Vec<FakeComment>,
    /// Names it had before a rename; GitHub redirects them.
    former: Vec<(String, String)>,
}

impl Repo {
    fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    fn is_named(&self, owner: &str, name: &str) -> bool {
        self.owner.eq_ignore_ascii_case(owner) && self.name.eq_ignore_ascii_case(name)
    }

    fn was_named(&self, owner: &str, name: &str) -> bool {
        self.former
            .iter()
            .any(|(o, n)| o.eq_ignore_ascii_case(owner) && n.eq_ignore_ascii_case(name))
    }
}

impl FakeGitHub {
    /// Serves the API and codeload on two ports of 127.0.0.1.
    pub async fn start() -> anyhow::Result<Self> {
        let api_listener = TcpListener::bind("127.0.0.1:0").await?;
        let codeload_listener = TcpListener::bind("127.0.0.1:0").await?;
        let api = format!("http://{}/", api_listener.local_addr()?);
        let codeload_url = format!("http://{}/", codeload_listener.local_addr()?);
        let state = Arc::new(Mutex::new(State {
            api: api.clone(),
            codeload: codeload_url,
            next_id: 1_296_269,
            hook_sources: GITHUB_HOOK_SOURCES.map(str::to_owned).to_vec(),
            ..State::default()
        }));
        let (stop, stopped) = watch::channel(());
        for (listener, is_codeload) in [(api_listener, false), (codeload_listener, true)] {
            let state = state.clone();
            let mut stopped = stopped.clone();
            let service = move |request: Request, _peer: SocketAddr| {
                let state = state.clone();
                async move {
                    if is_codeload {
                        serve_codeload(&state, request).await
                    } else {
                        api_request(&state, request).await
                    }
                }
            };
            let shutdown = async move {
                let _ = stopped.changed().await;
            };
            tokio::spawn(serve(
                listener,
                service,
                shutdown,
                runway_http::serve::ServeOptions::default(),
            ));
        }
        Ok(Self {
            api,
            state,
            _stop: stop,
        })
    }

    /// What `GitHubConfig::api_base` should be.
    pub fn api_base(&self) -> url::Url {
        url::Url::parse(&self.api).expect("the fake's own URL")
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Accepts `token` as a personal access token.
    pub fn accept_token(&self, token: &str) {
        self.state().tokens.push(token.to_owned());
    }

    /// Registers a GitHub App with a fresh RSA key and installs it on every repository.
    pub fn install_app(&self) -> anyhow::Result<FakeApp> {
        use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey, LineEnding};
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)?;
        let private_key_pem = private.to_pkcs1_pem(LineEnding::LF)?.to_string();
        let public_pem = private.to_public_key().to_pkcs1_pem(LineEnding::LF)?;
        let key = DecodingKey::from_rsa_pem(public_pem.as_bytes())?;
        let mut state = self.state();
        let (app_id, installation_id) = (state.next_id(), state.next_id());
        state.app = Some(AppKey {
            app_id,
            installation_id,
            key,
        });
        Ok(FakeApp {
            app_id,
            installation_id,
            private_key_pem,
        })
    }

    /// Serves the bare repository `bare` as `owner/name`; returns its id.
    pub fn add_repo(&self, owner: &str, name: &str, bare: &Path) -> u64 {
        let mut state = self.state();
        let id = state.next_id();
        state.repos.push(Repo {
            id,
            owner: owner.to_owned(),
            name: name.to_owned(),
            bare: bare.to_owned(),
            hooks: Vec::new(),
            deployments: Vec::new(),
            statuses: Vec::new(),
            pulls: Vec::new(),
            comments: Vec::new(),
            former: Vec::new(),
        });
        id
    }

    /// Renames `owner/name` to `owner/new_name`, keeping its id; the old name redirects.
    pub fn rename_repo(&self, owner: &str, name: &str, new_name: &str) {
        let mut state = self.state();
        let repo = state
            .repos
            .iter_mut()
            .find(|repo| repo.is_named(owner, name))
            .expect("renaming a repository the fake serves");
        repo.former.push((repo.owner.clone(), repo.name.clone()));
        repo.name = new_name.to_owned();
    }

    /// The owner deletes the repository: every API path under it answers 404, hooks included
    /// (they go with it), as does the name it had before a rename.
    pub fn delete_repo(&self, owner: &str, name: &str) {
        self.state()
            .repos
            .retain(|repo| !repo.is_named(owner, name));
    }

    /// The hooks of `owner/name`, secrets included.
    pub fn hooks(&self, owner: &str, name: &str) -> Vec<FakeHook> {
        self.state()
            .repos
            .iter()
            .find(|repo| repo.is_named(owner, name))
            .map(|repo| repo.hooks.clone())
            .unwrap_or_default()
    }

    /// From now on every API request answers 403 with `x-ratelimit-remaining: 0` and
    /// `x-ratelimit-reset: reset` (UTC epoch seconds), as GitHub does when the limit is used up.
    pub fn rate_limit_used(&self) -> usize {
        self.state().rate_used
    }

    pub fn exhaust_rate_limit(&self, reset: i64) {
        self.state().rate_limit_reset = Some(reset);
    }

    /// The next calls under `/repos/` answer as `outages` say, one each: GitHub's own bad
    /// moments (500 "Server Error", 502 from its front end, 429 with `retry-after` when it
    /// sheds load).
    pub fn fail_next_repo_calls(&self, outages: &[(u16, Option<u64>)]) {
        self.state().outages.extend(outages.iter().copied());
    }

    /// How many of the outages set are still to come.
    pub fn outages_left(&self) -> usize {
        self.state().outages.len()
    }

    /// The next `requests` writes (POST, PATCH, DELETE) answer 403 with `retry-after: seconds`
    /// and GitHub's secondary-rate-limit message, while the primary limit has plenty left: GitHub
    /// limits content creation this way, and warns that retrying at once can ban the integration.
    pub fn trip_secondary_rate_limit(&self, requests: usize, retry_after: u64) {
        self.state().secondary_limit = (requests > 0).then_some((requests, retry_after));
    }

    /// From now on `GET /meta` lists `ranges` as the addresses hooks come from.
    pub fn set_hook_sources(&self, ranges: &[&str]) {
        self.state().hook_sources = ranges.iter().map(|range| (*range).to_owned()).collect();
    }

    /// Someone deletes the hook on GitHub's settings page.
    pub fn remove_hook(&self, owner: &str, name: &str, hook_id: u64) {
        let mut state = self.state();
        if let Some(repo) = state
            .repos
            .iter_mut()
            .find(|repo| repo.is_named(owner, name))
        {
            repo.hooks.retain(|hook| hook.id != hook_id);
        }
    }

    /// Someone edits the hook on GitHub's settings page (events, active, content type, secret).
    pub fn edit_hook(
        &self,
        owner: &str,
        name: &str,
        hook_id: u64,
        edit: impl FnOnce(&mut FakeHook),
    ) {
        let mut state = self.state();
        if let Some(hook) = state
            .repos
            .iter_mut()
            .find(|repo| repo.is_named(owner, name))
            .and_then(|repo| repo.hooks.iter_mut().find(|hook| hook.id == hook_id))
        {
            edit(hook);
            hook.updated_at = Utc::now();
        }
    }

    /// The deliveries GitHub made so far (pings to new hooks), with what each receiver answered.
    pub fn deliveries(&self) -> Vec<FakeDelivery> {
        self.state().deliveries.clone()
    }

    /// From now on the hook endpoints answer 403 "Resource not accessible by integration", as
    /// GitHub does for an App or token without the Webhooks permission.
    pub fn forbid_webhooks(&self) {
        self.state().hooks_forbidden = true;
    }

    /// From now on the hook endpoints answer 404, as GitHub does for a classic token without
    /// the `admin:repo_hook` scope: it hides what the credential may not see rather than
    /// saying it is forbidden.
    pub fn hide_webhooks(&self) {
        self.state().hooks_hidden = true;
    }

    /// Revokes every installation token issued so far; GitHub then answers 401.
    pub fn revoke_installation_tokens(&self) {
        self.state().installation_tokens.clear();
    }

    /// Lists at most `per_page` items a page, so a test can see pagination with a few hooks.
    pub fn cap_page_size(&self, per_page: usize) {
        self.state().page_cap = Some(per_page);
    }

    /// How long installation tokens live (GitHub: one hour).
    pub fn set_installation_token_lifetime(&self, lifetime: chrono::Duration) {
        self.state().token_lifetime = Some(lifetime);
    }

    /// How many installation tokens were issued.
    pub fn token_exchanges(&self) -> usize {
        self.state().token_exchanges
    }

    /// How many times an App asked which installation covers a repository.
    pub fn installation_lookups(&self) -> usize {
        self.state().installation_lookups
    }

    /// From now on, codeload first redirects each download to itself once.
    pub fn codeload_redirects_once(&self) {
        lock(&self.state).codeload_hops_once = true;
    }

    /// Tarball downloads codeload served, and how many of them carried an `Authorization`.
    pub fn codeload_requests(&self) -> (usize, usize) {
        let state = self.state();
        (state.codeload_requests, state.codeload_with_authorization)
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn repo(&self, id: u64) -> Option<&Repo> {
        self.repos.iter().find(|repo| repo.id == id)
    }

    fn repo_mut(&mut self, id: u64) -> Option<&mut Repo> {
        self.repos.iter_mut().find(|repo| repo.id == id)
    }
}

// ---------------------------------------------------------------------------------------------
// Responses in GitHub's shapes

mod deployments;
mod hookshot;
mod pulls;
mod repos;
mod rest;

use deployments::*;
pub use deployments::{FakeCommitStatus, FakeDeployment, FakeDeploymentStatus};
pub use hookshot::FakeDelivery;
use hookshot::*;
use pulls::*;
pub use pulls::{FakeComment, FakePull};
use repos::*;
use rest::*;
