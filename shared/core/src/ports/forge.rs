use std::path::Path;
use std::pin::Pin;

use async_trait::async_trait;

use crate::domain::{Branch, CommitSha, HookId, RepoUrl};

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
}

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
}

/// How many branches [`Forge::branches`] lists (one page of GitHub's).
pub const BRANCHES_LISTED: usize = 100;
