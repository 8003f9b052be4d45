//! `Forge` on GitHub's REST API: repositories, branch heads and source tarballs (Contents: read),
//! push webhooks (Webhooks: read and write), and each release as a deployment with a commit
//! status (Deployments and Commit statuses: read and write), as a personal/fine-grained token or as a GitHub
//! App installation, which is what Runway asks organisations to install; and `HookSources` on
//! GitHub's public `meta` API (`GitHubMeta`).

mod api;
mod app;
mod comments;
mod deployments;
mod errors;
mod meta;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use async_trait::async_trait;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use self::api::{Api, Call, next_page};
use self::app::AppAuth;
use self::errors::{Op, Permission, scrub};
use runway_archive::{Limits, TooLarge, Unreadable};
use runway_core::domain::{AppName, Branch, CommitSha, HookId, RepoUrl};
use runway_core::ports::{
    BRANCHES_LISTED, DELIVERIES_LISTED, Forge, ForgeError, HOOK_EVENTS, HookDelivery, PullState,
    ReleaseReport, Repository, SourceArchive, Webhook,
};

pub use self::meta::GitHubMeta;

/// GitHub's largest page; fewer round trips for repositories with many hooks.
const PAGE_SIZE: &str = "100";
/// Stops a `Link` header that never ends from looping forever.
const MAX_PAGES: usize = 50;

/// Why a tarball could not be unpacked, as a `ForgeError`: a dropped download is worth another
/// try; a tarball past the limit or not as GitHub makes them is not.
fn unpack_error(error: anyhow::Error, commit: &str) -> ForgeError {
    if let Some(Unreadable(error)) = error.downcast_ref::<Unreadable>() {
        return ForgeError::Unavailable(error.to_string());
    }
    if let Some(too_large) = error.downcast_ref::<TooLarge>() {
        return ForgeError::Rejected(format!("commit {commit}: {too_large}"));
    }
    ForgeError::Rejected(format!(
        "Runway could not unpack the source of commit {commit}: {error:#}"
    ))
}

/// Where GitHub is and who Runway is there.
#[derive(Clone, Debug)]
pub struct GitHubConfig {
    /// `https://api.github.com/`, or a GitHub Enterprise Server's `https://HOST/api/v3/`.
    pub api_base: Url,
    pub auth: GitHubAuth,
}

/// Runway's GitHub credentials. `Debug` shows no secret (`SecretString` redacts itself).
#[derive(Clone, Debug)]
pub enum GitHubAuth {
    /// A fine-grained or classic personal access token.
    Token(SecretString),
    /// A GitHub App: its id, its private key (PEM), and the installation to act as; without
    /// one, the installation is looked up per repository.
    App {
        app_id: u64,
        private_key: SecretString,
        installation_id: Option<u64>,
    },
}

impl GitHubConfig {
    pub const DEFAULT_API_BASE: &str = "https://api.github.com/";

    /// Talks to github.com.
    pub fn new(auth: GitHubAuth) -> Self {
        Self {
            api_base: Url::parse(Self::DEFAULT_API_BASE).expect("a valid constant URL"),
            auth,
        }
    }
}

pub struct GitHubForge {
    api: Api,
    credentials: Credentials,
    /// What `checkout` unpacks at most.
    limits: Limits,
    /// Pages of hook lists as GitHub last sent them, by URL, with their `ETag`s: cleanup lists
    /// every deployed repository's hooks on each run, and a page GitHub answers 304 (nothing
    /// changed) costs no rate limit.
    hook_pages: std::sync::Mutex<HashMap<Url, HookPage>>,
}

#[derive(Clone)]
struct HookPage {
    etag: String,
    hooks: Vec<HookBody>,
    next: Option<Url>,
}

/// Pages kept at most; past it the cache starts again (a 200 refills it).
const MAX_HOOK_PAGES: usize = 4096;

enum Credentials {
    Token(SecretString),
    App(AppAuth),
}

impl fmt::Debug for GitHubForge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match &self.credentials {
            Credentials::Token(_) => "token".to_owned(),
            Credentials::App(app) => format!("GitHub App {}", app.app_id()),
        };
        f.debug_struct("GitHubForge")
            .field("auth", &auth)
            .finish_non_exhaustive()
    }
}

/// A GitHub repository as the API names it.
pub(crate) struct Repo<'a> {
    owner: &'a str,
    name: &'a str,
}

impl Repo<'_> {
    /// GitHub compares names without case.
    fn key(&self) -> String {
        format!("{}/{}", self.owner, self.name).to_ascii_lowercase()
    }
}

impl fmt::Display for Repo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

fn github_repo(repo: &RepoUrl) -> Result<Repo<'_>, ForgeError> {
    match repo {
        RepoUrl::GitHub { owner, name } => Ok(Repo { owner, name }),
        RepoUrl::Local { .. } => Err(ForgeError::Rejected(
            "this Runway runs with the GitHub forge, which serves GitHub repositories only; \
             local repositories need the local git forge"
                .into(),
        )),
    }
}

/// Answers' fields Runway reads; GitHub sends many more.
#[derive(Deserialize)]
struct RepoBody {
    id: u64,
    full_name: String,
    default_branch: String,
}

#[derive(Deserialize)]
struct BranchBody {
    commit: BranchCommit,
}

/// An entry of GitHub's branch list (only its name is read).
#[derive(Deserialize)]
struct BranchName {
    name: String,
}

#[derive(Deserialize)]
struct BranchCommit {
    sha: String,
}

#[derive(Clone, Deserialize)]
struct HookBody {
    id: u64,
    #[serde(default)]
    config: HookConfig,
    #[serde(default)]
    created_at: Option<runway_core::domain::Timestamp>,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default = "yes")]
    active: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Default, Deserialize)]
struct HookConfig {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
}

/// One item of `GET /repos/{owner}/{repo}/hooks/{hook_id}/deliveries`.
#[derive(Deserialize)]
struct DeliveryBody {
    guid: String,
    delivered_at: runway_core::domain::Timestamp,
    #[serde(default)]
    redelivery: bool,
    #[serde(default)]
    status: String,
    /// 0 when GitHub could not reach the receiver.
    #[serde(default)]
    status_code: u16,
    #[serde(default)]
    event: String,
}

impl GitHubForge {
    pub fn new(config: GitHubConfig) -> anyhow::Result<Self> {
        let credentials = match config.auth {
            GitHubAuth::Token(token) => Credentials::Token(token),
            GitHubAuth::App {
                app_id,
                private_key,
                installation_id,
            } => Credentials::App(AppAuth::new(app_id, &private_key, installation_id)?),
        };
        Ok(Self {
            api: Api::new(config.api_base)?,
            credentials,
            limits: Limits::default(),
            hook_pages: Default::default(),
        })
    }

    /// Bounds what `checkout` unpacks (`archive` is bounded by whoever reads it).
    pub fn with_source_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sends a request about `repo` with the credentials for it, returning a successful answer.
    /// A GitHub App's token that GitHub refuses (revoked, or the App was reinstalled) is
    /// replaced once, so a person never sees a failure Runway could fix by itself.
    async fn send(
        &self,
        repo: &Repo<'_>,
        method: Method,
        url: Url,
        body: Option<&Value>,
        op: &Op,
    ) -> Result<reqwest::Response, ForgeError> {
        self.send_if_changed(repo, method, url, body, None, op)
            .await
    }

    /// [`send`](Self::send) with `If-None-Match: etag`: a 304 answer comes back as it is.
    async fn send_if_changed(
        &self,
        repo: &Repo<'_>,
        method: Method,
        url: Url,
        body: Option<&Value>,
        etag: Option<&str>,
        op: &Op,
    ) -> Result<reqwest::Response, ForgeError> {
        let mut retried = false;
        loop {
            let token = match &self.credentials {
                Credentials::Token(token) => token.clone(),
                Credentials::App(app) => app.token(&self.api, repo).await?,
            };
            let call = Call {
                method: method.clone(),
                url: url.clone(),
                body,
                auth: Some(&token),
                if_none_match: etag,
                op,
            };
            let response = self.api.send(call).await?;
            if response.status() == http::StatusCode::UNAUTHORIZED
                && !retried
                && let Credentials::App(app) = &self.credentials
            {
                app.forget(repo).await;
                retried = true;
                continue;
            }
            if etag.is_some() && response.status() == http::StatusCode::NOT_MODIFIED {
                return Ok(response);
            }
            return self.api.check(response, op).await;
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        repo: &Repo<'_>,
        url: Url,
        op: &Op,
    ) -> Result<T, ForgeError> {
        let response = self.send(repo, Method::GET, url, None, op).await?;
        self.api.read_json(response, op).await
    }

    fn repo_url(&self, repo: &Repo<'_>, rest: &[&str]) -> Url {
        let mut segments = vec!["repos", repo.owner, repo.name];
        segments.extend_from_slice(rest);
        self.api.url(&segments)
    }

    async fn fetch_repository(&self, repo: &Repo<'_>) -> Result<Repository, ForgeError> {
        let op = Op {
            action: format!("read the repository {repo}"),
            needs: Permission::Contents,
            missing: format!(
                "repository {repo} not found or not visible to Runway's GitHub credentials"
            ),
        };
        let body: RepoBody = self.get_json(repo, self.repo_url(repo, &[]), &op).await?;
        let default_branch = Branch::parse(&body.default_branch).map_err(|error| {
            ForgeError::Other(anyhow::anyhow!("{repo}'s default branch: {error}"))
        })?;
        Ok(Repository {
            id: body.id,
            full_name: body.full_name,
            default_branch,
        })
    }

    /// GitHub answers 404 for a missing branch or commit and for a missing repository alike;
    /// asking for the repository tells the person which one it is.
    async fn explain_not_found(&self, repo: &Repo<'_>, error: ForgeError) -> ForgeError {
        match error {
            ForgeError::NotFound(_) => match self.fetch_repository(repo).await {
                Err(missing @ ForgeError::NotFound(_)) => missing,
                _ => error,
            },
            other => other,
        }
    }

    /// Every hook of the repository, following GitHub's `Link` pages.
    async fn list_hooks(&self, repo: &Repo<'_>) -> Result<Vec<HookBody>, ForgeError> {
        let op = Op {
            action: format!("list the webhooks of {repo}"),
            needs: Permission::Webhooks,
            missing: format!(
                "repository {repo} not found or not visible to Runway's GitHub credentials"
            ),
        };
        let mut url = self.repo_url(repo, &["hooks"]);
        url.query_pairs_mut().append_pair("per_page", PAGE_SIZE);
        let mut hooks = Vec::new();
        for _ in 0..MAX_PAGES {
            let page = self.hook_page(repo, url, &op).await?;
            hooks.extend(page.hooks);
            match page.next {
                Some(next) => url = next,
                None => return Ok(hooks),
            }
        }
        Err(ForgeError::Other(anyhow::anyhow!(
            "{repo} lists more than {MAX_PAGES} pages of webhooks"
        )))
    }

    /// One page of a hook list: asked conditionally when an earlier answer is cached, and
    /// taken from the cache when GitHub answers 304.
    async fn hook_page(&self, repo: &Repo<'_>, url: Url, op: &Op) -> Result<HookPage, ForgeError> {
        let cached = self.cached_page(&url);
        let etag = cached.as_ref().map(|page| page.etag.as_str());
        let response = self
            .send_if_changed(repo, Method::GET, url.clone(), None, etag, op)
            .await?;
        if response.status() == http::StatusCode::NOT_MODIFIED
            && let Some(page) = cached
        {
            return Ok(page);
        }
        let next = next_page(response.headers());
        let etag = response
            .headers()
            .get(http::header::ETAG)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let hooks: Vec<HookBody> = self.api.read_json(response, op).await?;
        let page = HookPage {
            etag: etag.unwrap_or_default(),
            hooks,
            next,
        };
        if !page.etag.is_empty() {
            let mut pages = self.hook_pages.lock().expect("hook pages lock");
            if pages.len() >= MAX_HOOK_PAGES {
                pages.clear();
            }
            pages.insert(url, page.clone());
        }
        Ok(page)
    }

    fn cached_page(&self, url: &Url) -> Option<HookPage> {
        self.hook_pages
            .lock()
            .expect("hook pages lock")
            .get(url)
            .cloned()
    }

    /// GitHub's tarball of `commit` (a 302 to codeload, which `Api::send` follows without our
    /// credentials), read as it arrives.
    async fn open_archive(
        &self,
        repo: &Repo<'_>,
        commit: &CommitSha,
    ) -> Result<SourceArchive, ForgeError> {
        let op = Op {
            action: format!("download commit {} of {repo}", commit.short()),
            needs: Permission::Contents,
            missing: format!("commit {} is not in {repo}", commit.short()),
        };
        let url = self.repo_url(repo, &["tarball", commit.as_str()]);
        let response = match self.send(repo, Method::GET, url, None, &op).await {
            Ok(response) => response,
            Err(error) => return Err(self.explain_not_found(repo, error).await),
        };
        let chunks = futures_util::stream::try_unfold(response, |mut response| async move {
            match response.chunk().await {
                Ok(Some(chunk)) => Ok(Some((chunk, response))),
                Ok(None) => Ok(None),
                // reqwest's message names the URL, which for codeload carries a token.
                Err(error) => Err(std::io::Error::other(format!(
                    "downloading the source tarball failed: {}",
                    error.without_url()
                ))),
            }
        });
        Ok(Box::pin(tokio_util::io::StreamReader::new(chunks)))
    }
}

#[async_trait]
impl Forge for GitHubForge {
    #[tracing::instrument(skip_all, fields(repo = %repo))]
    async fn repository(&self, repo: &RepoUrl) -> Result<Repository, ForgeError> {
        self.fetch_repository(&github_repo(repo)?).await
    }

    #[tracing::instrument(skip_all, fields(repo = %repo, branch = %branch))]
    async fn resolve_commit(
        &self,
        repo: &RepoUrl,
        branch: &Branch,
    ) -> Result<CommitSha, ForgeError> {
        let repo = github_repo(repo)?;
        let op = Op {
            action: format!("read the branch '{branch}' of {repo}"),
            needs: Permission::Contents,
            missing: format!("branch '{branch}' does not exist in {repo}"),
        };
        // A branch name's '/' stays a path separator, as GitHub expects.
        let mut rest = vec!["branches"];
        rest.extend(branch.as_str().split('/'));
        let url = self.repo_url(&repo, &rest);
        let body: BranchBody = match self.get_json(&repo, url, &op).await {
            Ok(body) => body,
            Err(error) => return Err(self.explain_not_found(&repo, error).await),
        };
        CommitSha::parse(&body.commit.sha).map_err(|error| {
            ForgeError::Other(anyhow::anyhow!("the head of {repo} '{branch}': {error}"))
        })
    }

    #[tracing::instrument(skip_all, fields(repo = %repo, commit = %commit))]
    async fn checkout(
        &self,
        repo: &RepoUrl,
        commit: &CommitSha,
        dest: &Path,
    ) -> Result<(), ForgeError> {
        let archive = self.archive(repo, commit).await?;
        let (dest, limits) = (dest.to_path_buf(), self.limits);
        let reader = tokio_util::io::SyncIoBridge::new(archive);
        let short = commit.short().to_owned();
        tokio::task::spawn_blocking(move || runway_archive::unpack(reader, &dest, &limits))
            .await
            .map_err(|error| ForgeError::Other(anyhow::anyhow!("unpacking the tarball: {error}")))?
            .map_err(|error| unpack_error(error, &short))
    }

    #[tracing::instrument(skip_all, fields(repo = %repo, commit = %commit))]
    async fn archive(
        &self,
        repo: &RepoUrl,
        commit: &CommitSha,
    ) -> Result<SourceArchive, ForgeError> {
        self.open_archive(&github_repo(repo)?, commit).await
    }

    #[tracing::instrument(skip_all, fields(repo = %repo))]
    async fn ensure_webhook(
        &self,
        repo: &RepoUrl,
        url: &str,
        secret: &SecretString,
    ) -> Result<HookId, ForgeError> {
        let repo = github_repo(repo)?;
        let config = json!({
            "url": url,
            "content_type": "json",
            "secret": secret.expose_secret(),
            "insecure_ssl": "0",
        });
        let existing = self
            .list_hooks(&repo)
            .await?
            .into_iter()
            .find(|hook| hook.config.url.as_deref() == Some(url));
        // Updating the existing hook is how a new secret reaches it.
        let (method, hook_url, body, action) = match existing {
            Some(hook) => (
                Method::PATCH,
                self.repo_url(&repo, &["hooks", &hook.id.to_string()]),
                json!({ "active": true, "events": HOOK_EVENTS, "config": config }),
                format!("update the webhook {} of {repo}", hook.id),
            ),
            None => (
                Method::POST,
                self.repo_url(&repo, &["hooks"]),
                json!({ "name": "web", "active": true, "events": HOOK_EVENTS, "config": config }),
                format!("create a webhook on {repo}"),
            ),
        };
        let op = Op {
            action,
            needs: Permission::Webhooks,
            missing: format!(
                "repository {repo} not found or not visible to Runway's GitHub credentials"
            ),
        };
        let result = async {
            let response = self.send(&repo, method, hook_url, Some(&body), &op).await?;
            self.api.read_json::<HookBody>(response, &op).await
        }
        .await;
        result
            .map(|hook| HookId::new(hook.id.to_string()))
            .map_err(|error| scrub(error, secret.expose_secret()))
    }

    #[tracing::instrument(skip_all, fields(repo = %repo, hook = %hook_id))]
    async fn delete_webhook(&self, repo: &RepoUrl, hook_id: &HookId) -> Result<(), ForgeError> {
        let repo = github_repo(repo)?;
        let hook_id = hook_id.as_str();
        if hook_id.is_empty() || !hook_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ForgeError::NotFound(format!(
                "no webhook {hook_id:?} on {repo}: GitHub's hook ids are numbers"
            )));
        }
        let op = Op {
            action: format!("delete the webhook {hook_id} of {repo}"),
            needs: Permission::Webhooks,
            missing: String::new(),
        };
        let url = self.repo_url(&repo, &["hooks", hook_id]);
        match self.send(&repo, Method::DELETE, url, None, &op).await {
            Ok(_) => Ok(()),
            // GitHub answers 404 where the credential may not look (a classic token without
            // admin:repo_hook), so 404 proves the hook gone only if the hooks can be listed.
            Err(ForgeError::NotFound(_)) => match self.list_hooks(&repo).await {
                Ok(hooks) if hooks.iter().all(|hook| hook.id.to_string() != hook_id) => Ok(()),
                Ok(_) => Err(ForgeError::Other(anyhow::anyhow!(
                    "GitHub answered 404 to deleting the webhook {hook_id} of {repo}, yet lists it"
                ))),
                Err(ForgeError::NotFound(_)) => Err(ForgeError::Rejected(format!(
                    "GitHub answered 404 to deleting the webhook {hook_id} of {repo} and lets \
                     Runway see none of its webhooks: the credentials lack the permission. {}",
                    errors::webhooks_permission()
                ))),
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        }
    }

    #[tracing::instrument(skip_all, fields(repo = %repo))]
    async fn webhooks(&self, repo: &RepoUrl) -> Result<Vec<Webhook>, ForgeError> {
        let repo = github_repo(repo)?;
        Ok(self
            .list_hooks(&repo)
            .await?
            .into_iter()
            .filter_map(|hook| {
                Some(Webhook {
                    id: HookId::new(hook.id.to_string()),
                    url: hook.config.url?,
                    created_at: hook.created_at,
                    events: hook.events,
                    active: hook.active,
                    content_type: hook.config.content_type,
                })
            })
            .collect())
    }

    #[tracing::instrument(skip_all, fields(repo = %repo, hook = %hook_id))]
    async fn hook_deliveries(
        &self,
        repo: &RepoUrl,
        hook_id: &HookId,
    ) -> Result<Vec<HookDelivery>, ForgeError> {
        let repo = github_repo(repo)?;
        let hook_id = hook_id.as_str();
        if hook_id.is_empty() || !hook_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ForgeError::NotFound(format!(
                "no webhook {hook_id:?} on {repo}: GitHub's hook ids are numbers"
            )));
        }
        let op = Op {
            action: format!("list the deliveries of the webhook {hook_id} of {repo}"),
            needs: Permission::Webhooks,
            missing: format!("no webhook {hook_id} on {repo}, or Runway may not see it"),
        };
        let mut url = self.repo_url(&repo, &["hooks", hook_id, "deliveries"]);
        url.query_pairs_mut()
            .append_pair("per_page", &DELIVERIES_LISTED.to_string());
        let listed: Vec<DeliveryBody> = self.get_json(&repo, url, &op).await?;
        Ok(listed
            .into_iter()
            .map(|delivery| HookDelivery {
                guid: delivery.guid,
                delivered_at: delivery.delivered_at,
                event: delivery.event,
                status_code: (delivery.status_code != 0).then_some(delivery.status_code),
                status: delivery.status,
                redelivery: delivery.redelivery,
            })
            .collect())
    }

    #[tracing::instrument(skip_all, fields(repo = %repo))]
    async fn branches(&self, repo: &RepoUrl) -> Result<Vec<Branch>, ForgeError> {
        let repo = github_repo(repo)?;
        let op = Op {
            action: format!("list the branches of {repo}"),
            needs: Permission::Contents,
            missing: format!(
                "repository {repo} not found or not visible to Runway's GitHub credentials"
            ),
        };
        // GitHub lists branches by name; one page is what the form offers.
        let mut url = self.repo_url(&repo, &["branches"]);
        url.query_pairs_mut()
            .append_pair("per_page", &BRANCHES_LISTED.to_string());
        let listed: Vec<BranchName> = self.get_json(&repo, url, &op).await?;
        Ok(listed
            .into_iter()
            .filter_map(|branch| Branch::parse(&branch.name).ok())
            .collect())
    }

    #[tracing::instrument(skip_all, fields(repo = %repo, branch = %branch, path))]
    async fn has_file(
        &self,
        repo: &RepoUrl,
        branch: &Branch,
        path: &str,
    ) -> Result<bool, ForgeError> {
        let repo = github_repo(repo)?;
        let op = Op {
            action: format!("read {path} on '{branch}' of {repo}"),
            needs: Permission::Contents,
            missing: format!("{path} is not on '{branch}' of {repo}"),
        };
        let mut rest = vec!["contents"];
        rest.extend(path.split('/'));
        let mut url = self.repo_url(&repo, &rest);
        url.query_pairs_mut().append_pair("ref", branch.as_str());
        // A file is an object of type "file"; a folder is a list of its entries.
        match self.get_json::<serde_json::Value>(&repo, url, &op).await {
            Ok(contents) => Ok(contents["type"] == "file"),
            Err(ForgeError::NotFound(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }

    #[tracing::instrument(skip_all, fields(repo = %repo, release = %report.release, progress = report.progress.as_str()))]
    async fn report(&self, repo: &RepoUrl, report: &ReleaseReport) -> Result<(), ForgeError> {
        self.report_release(&github_repo(repo)?, report).await
    }

    #[tracing::instrument(skip_all, fields(repo = %repo, number))]
    async fn pull_request(&self, repo: &RepoUrl, number: u64) -> Result<PullState, ForgeError> {
        self.pull_state(&github_repo(repo)?, number).await
    }

    #[tracing::instrument(skip_all, fields(repo = %repo, number))]
    async fn comment_on_pull(
        &self,
        repo: &RepoUrl,
        number: u64,
        preview: &AppName,
        body: &str,
    ) -> Result<(), ForgeError> {
        self.upsert_comment(&github_repo(repo)?, number, preview, body)
            .await
    }
}
