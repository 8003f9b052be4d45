use async_trait::async_trait;

use crate::domain::{AppName, BuildId, CommitSha, MainFile, ReleaseId, RepoUrl};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    NotFound(String),
    #[error("builder unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

#[derive(Clone, Debug)]
pub struct BuildRequest {
    pub app: AppName,
    pub release_id: ReleaseId,
    pub repo: RepoUrl,
    pub commit: CommitSha,
    pub main_file: MainFile,
    /// The app's own last image, by digest, to take unchanged layers from. Never a tag: any
    /// app's build may push any tag of the shared repository.
    pub cache_from: Option<String>,
    /// Take nothing from a cache: no layers, no downloaded packages (a redeploy's "clear the
    /// build cache", for a build a stale or broken cache upsets).
    pub clear_cache: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartedBuild {
    pub build_id: BuildId,
    pub log_url: String,
}

/// A build's state, as Cloud Build names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildStatus {
    Running,
    Succeeded {
        image: String,
    },
    Failed {
        status: String,
        detail: String,
    },
    /// The builder has no record of it (e.g. it was interrupted by a restart).
    Lost,
}

/// What a build was started for, as the builder itself recorded it when it started the build:
/// never what a notification says (any build in a project may carry any tag).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildOrigin {
    pub release_id: ReleaseId,
    pub commit: CommitSha,
}

/// A build that may be freed, and the app it was made for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdleBuild {
    pub id: BuildId,
    pub app: AppName,
}

/// Turns a commit into something the platform can run. `start` returns at once; the build's end
/// is announced on `Topic::BuildEvents` (with `status` as the poll fallback).
#[async_trait]
pub trait ImageBuilder: Send + Sync {
    async fn start(&self, request: BuildRequest) -> Result<StartedBuild, BuildError>;
    async fn status(&self, build_id: &BuildId) -> Result<BuildStatus, BuildError>;
    /// The whole build log.
    async fn log(&self, build_id: &BuildId) -> Result<String, BuildError>;
    /// The build log's bytes from `from` on, at most `max` of them (fewer at its end, none
    /// past it): a page following a build asks every second for what is new, and reading the
    /// whole log each time grows with the log. Builders read only the range asked; this
    /// default, for stand-ins, reads the whole log and cuts it.
    async fn log_from(
        &self,
        build_id: &BuildId,
        from: u64,
        max: usize,
    ) -> Result<Vec<u8>, BuildError> {
        let log = self.log(build_id).await?.into_bytes();
        let start = usize::try_from(from).unwrap_or(usize::MAX).min(log.len());
        Ok(log[start..start.saturating_add(max).min(log.len())].to_vec())
    }
    /// The last `lines` lines of the build log, for a failed release's message.
    async fn log_tail(&self, build_id: &BuildId, lines: usize) -> Result<String, BuildError> {
        Ok(crate::text::tail(&self.log(build_id).await?, lines))
    }
    /// Removes every image and log of the app.
    async fn delete_app(&self, app: &AppName) -> Result<(), BuildError>;
    /// Builds that ended over an hour ago and still hold something to free: what `free` may
    /// take, once the store says no release needs them. Cloud Build keeps nothing on Runway's
    /// side (the logs bucket's lifecycle rule and Artifact Registry's cleanup policies in
    /// `infra/` prune there), so this default has none, and cleanup reads nothing for it.
    async fn idle_builds(&self) -> Result<Vec<IdleBuild>, BuildError> {
        Ok(Vec::new())
    }
    /// Frees `build`, one of `idle_builds` that no release needs; `false` if nothing was left
    /// to free.
    async fn free(&self, _build: &BuildId) -> Result<bool, BuildError> {
        Ok(false)
    }
    /// What `build_id` was started for, if the builder can vouch for it: a worker that dies
    /// between starting a build and recording it on the release leaves the release with no
    /// build, and this lets the build's end be taken as the release's own. `None`: not one the
    /// builder started for a release (or stand-ins, which never vouch).
    async fn origin(&self, _build_id: &BuildId) -> Result<Option<BuildOrigin>, BuildError> {
        Ok(None)
    }
}
