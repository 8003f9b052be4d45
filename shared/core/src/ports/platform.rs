use async_trait::async_trait;

use crate::domain::{
    Access, AppName, Deployment, MainFile, Region, Release, ReleaseId, Resources, Runtime,
};
use crate::ports::SecretRef;

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// The new revision never became ready; the previous one keeps serving.
    #[error("{0}")]
    NotReady(String),
    #[error("platform unavailable: {0}")]
    Unavailable(String),
    /// Something Runway did not create already has the app's name where it would run.
    #[error("{0}")]
    Conflict(String),
    /// A newer release of the app got to the platform first; this one must not replace it.
    #[error("{0}")]
    Superseded(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

#[derive(Clone, Debug)]
pub struct DeploySpec {
    pub app: AppName,
    pub release_id: ReleaseId,
    /// The release's place in the app's order: the fence that keeps an older release from
    /// replacing a newer one on the platform, however their calls overlap.
    pub seq: u64,
    pub image: String,
    pub main_file: MainFile,
    pub region: Region,
    pub resources: Resources,
    /// Plain environment variables and warm instances.
    pub runtime: Runtime,
    pub secrets: Option<SecretRef>,
    /// Who may open the app.
    pub access: Access,
}

impl DeploySpec {
    /// Runs `image` of `release` with the deployment's settings.
    pub fn new(
        deployment: &Deployment,
        release: &Release,
        image: String,
        secrets: Option<SecretRef>,
    ) -> Self {
        Self {
            app: deployment.app.clone(),
            release_id: release.id.clone(),
            seq: release.seq,
            image,
            main_file: deployment.main_file.clone(),
            region: deployment.region.clone(),
            resources: deployment.resources,
            runtime: deployment.runtime.clone(),
            secrets,
            access: deployment.access.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployed {
    pub url: String,
    pub revision: String,
}

/// Something that happened to a live app on its own: its process died, or it stopped
/// answering its health check, and the platform restarted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incident {
    pub at: crate::domain::Timestamp,
    pub revision: String,
    /// What happened and what the platform did, in words.
    pub what: String,
}

/// Runs a build's output at a stable URL per app.
#[async_trait]
pub trait Platform: Send + Sync {
    /// Starts the new revision and moves traffic to it once it is ready; if it never gets
    /// ready, the previous revision keeps serving and the error says why.
    async fn deploy(&self, spec: DeploySpec) -> Result<Deployed, PlatformError>;
    /// Brings back an earlier release whose image `spec` carries. A platform that keeps
    /// revisions moves all traffic to `revision` (and the next `deploy` moves it back to the
    /// latest); without one, or when that revision is gone, the image is deployed again.
    async fn roll_back(
        &self,
        spec: DeploySpec,
        revision: Option<&str>,
    ) -> Result<Deployed, PlatformError> {
        let _ = revision;
        self.deploy(spec).await
    }
    /// Stops and removes everything of the app. Deleting an unknown app is not an error.
    async fn delete(&self, app: &AppName) -> Result<(), PlatformError>;
    /// Removes the app's service from `region`, where it no longer runs: the app moved, and
    /// its release in the new region serves. Nothing there is not an error; a platform without
    /// regions has nothing to do.
    async fn retire(&self, app: &AppName, region: &Region) -> Result<(), PlatformError> {
        let _ = (app, region);
        Ok(())
    }
    /// Removes the app's services from every region but `keep` (only those Runway made): for
    /// an app whose live release went live before releases recorded their region, where the
    /// region it moves from is not known. Nothing elsewhere is not an error.
    async fn retire_elsewhere(&self, app: &AppName, keep: &Region) -> Result<(), PlatformError> {
        let _ = (app, keep);
        Ok(())
    }
    /// Whether `app` may run in `region`: `Conflict` when something Runway did not create (a
    /// service of someone else's, say) already has its name there. `deploy` checks it too; a
    /// submit asks first, so the person choosing the name hears of it.
    async fn check_name(&self, app: &AppName, region: &Region) -> Result<(), PlatformError> {
        let _ = (app, region);
        Ok(())
    }
    /// What happened to the app's running revisions after `after`, oldest first. A platform
    /// that restarts unhealthy instances without telling (Cloud Run's liveness probe, so far)
    /// reports none.
    async fn incidents(
        &self,
        app: &AppName,
        after: crate::domain::Timestamp,
    ) -> Result<Vec<Incident>, PlatformError> {
        let _ = (app, after);
        Ok(Vec::new())
    }
}
