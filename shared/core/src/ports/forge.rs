use std::path::Path;
use std::pin::Pin;

use async_trait::async_trait;

pub use crate::domain::HookDelivery;
use crate::domain::{AppName, Branch, CommitSha, HookId, ReleaseId, RepoUrl};

#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    /// The repository, branch or commit does not exist (or we may not see it).
    #[error("{0}")]
    NotFound(String),
    /// The forge refused the request as it stands (e.g. a hook that cannot be installed).
    #[error("{0}")]
    Rejected(String),
    #[error("forge unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repository {
    /// Stable across renames.
    pub id: u64,
    pub full_name: String,
    pub default_branch: Branch,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    pub id: HookId,
    pub url: String,
    /// When the hook was made, where the forge says: a hook made moments ago may belong to an
    /// app whose record is still being written.
    pub created_at: Option<crate::domain::Timestamp>,
    /// The events it is sent (GitHub's names); Runway's hooks hear [`HOOK_EVENTS`].
    pub events: Vec<String>,
    /// A hook someone switched off is sent nothing.
    pub active: bool,
    /// How the payload is sent: Runway's hooks send `json` (GitHub's `form` would not parse).
    pub content_type: Option<String>,
}

impl Webhook {
    /// What is wrong with the hook, as Runway set it up (`ensure_webhook`), in words; `None`
    /// when nothing is. The secret cannot be seen: a changed one shows in the deliveries.
    pub fn drift(&self) -> Option<String> {
        let mut wrong = Vec::new();
        if !self.active {
            wrong.push("it was switched off".to_owned());
        }
        let mut events: Vec<&str> = self.events.iter().map(String::as_str).collect();
        events.sort_unstable();
        if events != HOOK_EVENTS {
            wrong.push(format!(
                "it was sent {} instead of {}",
                self.events.join(", "),
                HOOK_EVENTS.join(" and ")
            ));
        }
        if self
            .content_type
            .as_deref()
            .is_some_and(|kind| kind != "json")
        {
            wrong.push(format!(
                "it sent {} instead of json",
                self.content_type.as_deref().unwrap_or_default()
            ));
        }
        (!wrong.is_empty()).then(|| wrong.join("; "))
    }
}

/// The events Runway's hooks are sent (GitHub's names, in order): pushes redeploy, pull requests
/// make and remove previews.
pub const HOOK_EVENTS: [&str; 2] = ["pull_request", "push"];

/// A commit's tree as the forge serves it, read as it arrives: a gzipped tar whose entries all
/// sit in one top-level folder (GitHub's `OWNER-REPO-SHA7/`). `runway_archive` reads it.
pub type SourceArchive = Pin<Box<dyn tokio::io::AsyncRead + Send>>;

/// Where the code lives: GitHub, or local git repositories.
#[async_trait]
pub trait Forge: Send + Sync {
    async fn repository(&self, repo: &RepoUrl) -> Result<Repository, ForgeError>;
    async fn resolve_commit(
        &self,
        repo: &RepoUrl,
        branch: &Branch,
    ) -> Result<CommitSha, ForgeError>;
    /// Writes the tree of `commit` into `dest`, which must not exist yet.
    async fn checkout(
        &self,
        repo: &RepoUrl,
        commit: &CommitSha,
        dest: &Path,
    ) -> Result<(), ForgeError>;
    /// The tree of `commit` as a [`SourceArchive`], streamed: nothing is held or written.
    async fn archive(
        &self,
        repo: &RepoUrl,
        commit: &CommitSha,
    ) -> Result<SourceArchive, ForgeError>;
    /// Makes sure a push webhook to `url` (one app's own, `…/github/webhook/{app}`), signed
    /// with `secret`, exists; returns its id. An existing hook to the same URL is reused and
    /// takes `secret`, so calling this again is how a hook's secret is changed. Apps that share
    /// a repository have a hook each.
    async fn ensure_webhook(
        &self,
        repo: &RepoUrl,
        url: &str,
        secret: &secrecy::SecretString,
    ) -> Result<HookId, ForgeError>;
    async fn delete_webhook(&self, repo: &RepoUrl, hook_id: &HookId) -> Result<(), ForgeError>;
    async fn webhooks(&self, repo: &RepoUrl) -> Result<Vec<Webhook>, ForgeError>;
    /// The hook's recent deliveries, newest first (at most [`DELIVERIES_LISTED`]): what the
    /// receiver answered each, as the forge saw it.
    async fn hook_deliveries(
        &self,
        repo: &RepoUrl,
        hook_id: &HookId,
    ) -> Result<Vec<HookDelivery>, ForgeError>;
    /// The repository's branches by name, the first [`BRANCHES_LISTED`]: what the
    /// new-app form offers.
    async fn branches(&self, repo: &RepoUrl) -> Result<Vec<Branch>, ForgeError>;
    /// Whether `path` is a file at the head of `branch` (a folder or nothing is `false`).
    async fn has_file(
        &self,
        repo: &RepoUrl,
        branch: &Branch,
        path: &str,
    ) -> Result<bool, ForgeError>;
    /// Shows a release's step beside its commit, where people look: on GitHub a deployment for
    /// the commit in the app's environment, moved to `report.progress`, and a commit status
    /// that says the same. The release's first report makes its deployment; later ones find
    /// it again (a report repeated after a crash makes no second one). An `Inactive` report
    /// for a release that never made one does nothing. A commit the repository lacks is
    /// `NotFound`. Callers treat every error as a lost message, never as a failed release.
    async fn report(&self, repo: &RepoUrl, report: &ReleaseReport) -> Result<(), ForgeError>;
    /// Pull request `number` as the forge has it now: whether it is still open, and its head.
    /// `NotFound` when the repository has no pull request of that number.
    async fn pull_request(&self, repo: &RepoUrl, number: u64) -> Result<PullState, ForgeError>;
    /// Writes Runway's comment about `preview` on its pull request `number`: the first call
    /// makes it, later ones replace its text, so the pull request has one comment per preview
    /// that always says where it stands. Callers treat every error as lost feedback.
    async fn comment_on_pull(
        &self,
        repo: &RepoUrl,
        number: u64,
        preview: &AppName,
        body: &str,
    ) -> Result<(), ForgeError>;
}

/// A pull request as it stands: a preview builds the head it has now (an event may come late,
/// or again), and is removed rather than built once the pull request is closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullState {
    pub open: bool,
    pub head: CommitSha,
}

/// The hidden line that marks Runway's comment about `preview` on a pull request, so the next
/// one finds it again.
pub fn comment_marker(preview: &AppName) -> String {
    format!("<!-- runway-preview:{preview} -->")
}

/// Where a release stands, as the forge shows it beside its commit: on GitHub a deployment's
/// status (and the commit status that says the same), locally a note on the commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Runway has the release and is fetching its source.
    Queued,
    /// Building, or deploying.
    InProgress,
    /// Live: serving at `environment_url`.
    Success,
    Failure,
    /// Never served, and never will: a newer release went live first.
    Inactive,
}

impl Progress {
    /// GitHub's deployment-status `state` for it, which the local notes use too.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::InProgress => "in_progress",
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Inactive => "inactive",
        }
    }
}

/// One step of a release, told to the forge (`Forge::report`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseReport {
    /// The environment, and the commit status's context (`runway/APP`): apps that share a
    /// repository each have their own.
    pub app: AppName,
    /// Which deployment the step belongs to: one per release, made by its first report.
    pub release: ReleaseId,
    pub seq: u64,
    pub commit: CommitSha,
    pub progress: Progress,
    /// One line; the forge may cut it short (GitHub keeps 140 characters).
    pub description: String,
    /// The release on Runway's console.
    pub log_url: Option<String>,
    /// The app's address, once it serves.
    pub environment_url: Option<String>,
}

/// How many deliveries [`Forge::hook_deliveries`] lists (one page of GitHub's).
pub const DELIVERIES_LISTED: usize = 50;

/// How many branches [`Forge::branches`] lists (one page of GitHub's).
pub const BRANCHES_LISTED: usize = 100;

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(events: &[&str]) -> Webhook {
        Webhook {
            id: HookId::new("1"),
            url: "https://runway.example.com/github/webhook/demo".into(),
            created_at: None,
            events: events.iter().map(|event| (*event).to_owned()).collect(),
            active: true,
            content_type: Some("json".into()),
        }
    }

    #[test]
    fn a_hook_hears_push_and_pull_request_in_any_order_and_an_older_push_only_hook_is_set_right() {
        // Act
        let both = hook(&["push", "pull_request"]).drift();
        let sorted = hook(&["pull_request", "push"]).drift();
        let older = hook(&["push"]).drift();
        let more = hook(&["push", "pull_request", "issues"]).drift();

        // Assert
        assert_eq!((both, sorted), (None, None));
        assert_eq!(
            older.as_deref(),
            Some("it was sent push instead of pull_request and push")
        );
        assert!(more.is_some_and(|why| why.contains("issues")));
    }
}
