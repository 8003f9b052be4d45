//! Each app runs as its own service account, which may read the app's own secret and nothing
//! else: app code is untrusted, and with one shared identity any app that called Secret Manager
//! itself could read every other app's secrets.
//!
//! The account is `{prefix}-a-{app}@PROJECT.iam.gserviceaccount.com` (`-a-` keeps it apart from
//! Runway's own accounts, `{prefix}-submit` & co.; a name too long for IAM's 30 characters is
//! shortened and made unique with a hash). The worker creates it before the app's first
//! revision, grants it `roles/secretmanager.secretAccessor` on the app's secret, and submit
//! deletes it with the app. An account of that name Runway did not create (its description
//! says who made it) is refused, as a service of another owner is.
//!
//! IAM is eventually consistent: a policy naming an account created a moment ago can be refused
//! with "Service account … does not exist"; that is retried for a while. A project holds 100
//! service accounts unless its quota was raised; past it, the deploy fails with what to do.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use google_cloud_gax::error::Error as GaxError;
use google_cloud_gax::error::rpc::Code;
use google_cloud_iam_admin_v1::client::Iam;
use google_cloud_iam_admin_v1::model::ServiceAccount;
use google_cloud_secretmanager_v1::client::SecretManagerService;
use sha2::{Digest, Sha256};

use super::{CloudRunConfig, has_code, is_transient, status_message};
use runway_core::domain::AppName;
use runway_core::ports::PlatformError;

/// What the app's account may do on its secret.
pub const SECRET_ACCESSOR: &str = "roles/secretmanager.secretAccessor";
/// IAM's limit on account ids.
const MAX_ACCOUNT_ID: usize = 30;

/// The app's account id: `{prefix}-a-{app}`, or, when that is longer than IAM allows, as much
/// of the app's name as fits and a hash of the whole.
pub fn account_id(prefix: &str, app: &AppName) -> String {
    let id = format!("{prefix}-a-{}", app.as_str());
    if id.len() <= MAX_ACCOUNT_ID {
        return id;
    }
    let hash = hex::encode(&Sha256::digest(app.as_str().as_bytes())[..3]);
    let keep = MAX_ACCOUNT_ID - hash.len() - 1;
    format!("{}-{hash}", id[..keep].trim_end_matches('-'))
}

/// What Runway writes into the description of the accounts it creates, and checks before it
/// uses one.
fn description(app: &AppName) -> String {
    format!("Runway: the identity app {} runs as", app.as_str())
}

/// The IAM and Secret Manager clients the identities need.
#[derive(Clone, Debug)]
pub(super) struct Identities {
    iam: Iam,
    pub(super) secrets: SecretManagerService,
    project: String,
    prefix: String,
    settle_timeout: Duration,
}

impl Identities {
    pub(super) async fn new(config: &CloudRunConfig) -> anyhow::Result<Self> {
        let anonymous = || google_cloud_auth::credentials::anonymous::Builder::new().build();
        let mut iam = Iam::builder();
        if let Some(endpoint) = &config.iam_endpoint {
            iam = iam.with_endpoint(endpoint);
        }
        if config.anonymous {
            iam = iam.with_credentials(anonymous());
        }
        let mut secrets = SecretManagerService::builder();
        if let Some(endpoint) = &config.secret_manager_endpoint {
            secrets = secrets.with_endpoint(endpoint);
        }
        if config.anonymous {
            secrets = secrets.with_credentials(anonymous());
        }
        Ok(Self {
            iam: iam.build().await.context("building the IAM client")?,
            secrets: secrets
                .build()
                .await
                .context("building the Secret Manager client")?,
            project: config.project.clone(),
            prefix: config.name_prefix.clone(),
            settle_timeout: config.settle_timeout,
        })
    }

    pub(super) fn email(&self, app: &AppName) -> String {
        format!(
            "{}@{}.iam.gserviceaccount.com",
            account_id(&self.prefix, app),
            self.project
        )
    }

    fn name(&self, app: &AppName) -> String {
        format!(
            "projects/{}/serviceAccounts/{}",
            self.project,
            self.email(app)
        )
    }

    /// The app's account, created if it does not exist yet. Its e-mail.
    pub(super) async fn ensure(&self, app: &AppName) -> Result<String, PlatformError> {
        // Read first: every deploy after the app's first finds it, with one call.
        let account = match self.read(app).await? {
            Some(account) => account,
            None => self.create(app).await?,
        };
        if account.description != description(app) {
            return Err(PlatformError::Conflict(format!(
                "the service account {} exists and Runway did not create it; choose another \
                 app name",
                account.email
            )));
        }
        Ok(account.email)
    }

    async fn read(&self, app: &AppName) -> Result<Option<ServiceAccount>, PlatformError> {
        match self
            .iam
            .get_service_account()
            .set_name(self.name(app))
            .send()
            .await
        {
            Ok(account) => Ok(Some(account)),
            Err(error) if has_code(&error, Code::NotFound) => Ok(None),
            Err(error) => Err(self.error(error, "reading the app's service account")),
        }
    }

    /// Creates the app's account; one made meanwhile (a concurrent deploy) is read instead.
    async fn create(&self, app: &AppName) -> Result<ServiceAccount, PlatformError> {
        let created = self
            .iam
            .create_service_account()
            .set_name(format!("projects/{}", self.project))
            .set_account_id(account_id(&self.prefix, app))
            .set_service_account(
                ServiceAccount::new()
                    .set_display_name(format!("Runway app {}", app.as_str()))
                    .set_description(description(app)),
            )
            .send()
            .await;
        match created {
            Ok(account) => Ok(account),
            Err(error) if has_code(&error, Code::AlreadyExists) => {
                self.read(app).await?.ok_or_else(|| {
                    PlatformError::Unavailable(format!(
                        "the service account of {app} exists and cannot be read yet"
                    ))
                })
            }
            Err(error) if has_code(&error, Code::ResourceExhausted) => {
                Err(PlatformError::Other(anyhow!(
                    "project {} has as many service accounts as its quota allows ({}); every \
                     app runs as its own. Delete apps (or service accounts) nobody uses, or ask \
                     for a higher \"Service accounts\" quota (IAM & Admin → Quotas)",
                    self.project,
                    status_message(&error)
                )))
            }
            Err(error) => Err(self.error(error, "creating the app's service account")),
        }
    }

    /// Deletes the app's account; one that is not there is already deleted.
    pub(super) async fn remove(&self, app: &AppName) -> Result<(), PlatformError> {
        match self
            .iam
            .delete_service_account()
            .set_name(self.name(app))
            .send()
            .await
        {
            Ok(()) => Ok(()),
            Err(error) if has_code(&error, Code::NotFound) => Ok(()),
            Err(error) => Err(self.error(error, "deleting the app's service account")),
        }
    }

    /// Whether a policy write failed only because IAM does not know a new account yet, and
    /// there is still time to wait for it. Sleeps before answering yes.
    pub(super) async fn settling(
        &self,
        error: &GaxError,
        since: Instant,
        wait: &mut Duration,
    ) -> bool {
        let unknown_account = has_code(error, Code::InvalidArgument)
            && status_message(error).contains("does not exist");
        if !unknown_account || since.elapsed() + *wait > self.settle_timeout {
            return false;
        }
        tracing::info!(wait = ?*wait, "IAM does not know the new service account yet; again");
        tokio::time::sleep(*wait).await;
        *wait = (*wait * 2).min(Duration::from_secs(8));
        true
    }

    fn error(&self, error: GaxError, action: &str) -> PlatformError {
        if has_code(&error, Code::PermissionDenied) {
            return PlatformError::Other(anyhow!(
                "{action} was denied: {}. Runway's worker needs the app deployer role \
                 (iam.serviceAccounts.create, get, actAs) and submit the app remover role \
                 (iam.serviceAccounts.delete) on project {}",
                status_message(&error),
                self.project
            ));
        }
        if is_transient(&error) {
            return PlatformError::Unavailable(format!("{action}: {error}"));
        }
        PlatformError::Other(anyhow::Error::new(error).context(action.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_fit_iam_and_stay_apart_from_runways_own() {
        let app = |name: &str| AppName::parse(name).unwrap();
        assert_eq!(account_id("runway", &app("demo")), "runway-a-demo");
        // "submit" would otherwise be runway-submit, the submit function's own account.
        assert_eq!(account_id("runway", &app("submit")), "runway-a-submit");
        let long = account_id("runway-staging", &app("a-rather-long-app-name-here"));
        assert_eq!(long.len(), 30, "{long}");
        assert!(long.starts_with("runway-staging-a-a-rath-"), "{long}");
        assert!(!long.contains("--"), "{long}");
        assert_ne!(
            long,
            account_id("runway-staging", &app("a-rather-long-app-name-there"))
        );
    }
}
