//! `SecretStore` on Secret Manager, through the official `google-cloud-secretmanager-v1` (REST)
//! client.
//!
//! One secret per app, `runway-app-{app}` (the prefix `infra/secrets.tf` grants on), labelled
//! `managed-by=runway` and `app={app}`, replicated automatically. Each `put` adds a version and
//! disables none: the revision serving mounts an older one (Secret Manager volumes read on
//! every access), and a rollback returns to the version its release ran with. Once a release is
//! live, `retire` disables the versions no release deployed with. The reference handed to
//! Cloud Run is the version's full name, `projects/P/secrets/S/versions/N`.
//!
//! Runway itself never reads a value back (its service accounts may not: see the custom role in
//! `infra/service_accounts.tf`), and no message or `Debug` output carries one.

use std::time::Duration;

use anyhow::anyhow;
use async_trait::async_trait;
use google_cloud_gax::error::Error as GaxError;
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::options::RequestOptionsBuilder;
use google_cloud_gax::paginator::ItemPaginator;
use google_cloud_gax::retry_policy::{Aip194Strict, NeverRetry, RetryPolicyExt};
use google_cloud_secretmanager_v1::client::SecretManagerService;
use google_cloud_secretmanager_v1::model::replication::Automatic;
use google_cloud_secretmanager_v1::model::secret_version::State;
use google_cloud_secretmanager_v1::model::{Replication, Secret, SecretPayload};

use super::{has_code, is_transient};
use runway_core::domain::{AppName, NotifyTargets, SecretsToml};
use runway_core::ports::{SecretRef, SecretStore, SecretStoreError};
use secrecy::ExposeSecret;

/// Every app secret's id starts with this; IAM conditions in `infra/secrets.tf` match on it.
pub const APP_SECRET_PREFIX: &str = "runway-app-";

/// Each app's notification targets are one secret, `runway-notify-{app}`: hook URLs and
/// signing keys, which the worker reads back to post (`infra/secrets.tf` lets only it).
pub const NOTIFY_SECRET_PREFIX: &str = "runway-notify-";

/// How long one operation keeps retrying transient failures before it reports `Unavailable`.
/// The client's default is a minute; a submit waiting on its secrets should hear sooner.
const RETRY_TIME_LIMIT: Duration = Duration::from_secs(15);

#[derive(Clone, Debug)]
pub struct SecretManagerConfig {
    /// The project the apps' secrets live in.
    pub project: String,
    /// `http://host:port` of an emulator (sent no credentials); `None` talks to Google with
    /// Application Default Credentials.
    pub endpoint: Option<String>,
}

#[derive(Clone, Debug)]
pub struct SecretManagerStore {
    client: SecretManagerService,
    project: String,
}

impl SecretManagerStore {
    /// Builds the client once; keep the store for the life of the process.
    pub async fn connect(config: SecretManagerConfig) -> Result<Self, SecretStoreError> {
        let mut builder = SecretManagerService::builder().with_retry_policy(
            Aip194Strict
                .with_attempt_limit(5)
                .with_time_limit(RETRY_TIME_LIMIT),
        );
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_credentials(super::anonymous_credentials());
        }
        let client = builder.build().await.map_err(|error| {
            SecretStoreError::Other(anyhow!("cannot set up the Secret Manager client: {error}"))
        })?;
        Ok(Self {
            client,
            project: config.project,
        })
    }

    /// Whether Secret Manager answers us: what `/ready` reports. Reads a secret no app can have
    /// (app names start with a letter), because the role Runway holds may get app secrets but
    /// not list the project's: not found is the healthy answer. One attempt, no retries: a
    /// readiness probe asks again by itself.
    pub async fn check(&self) -> Result<(), SecretStoreError> {
        let id = format!("{APP_SECRET_PREFIX}0-readiness");
        match self
            .client
            .get_secret()
            .set_name(self.secret_name(&id))
            .with_retry_policy(NeverRetry)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if has_code(&error, Code::NotFound) => Ok(()),
            Err(error) => Err(store_error(error, "checking access to", &id)),
        }
    }

    fn secret_name(&self, id: &str) -> String {
        format!("projects/{}/secrets/{id}", self.project)
    }

    /// The app's enabled versions as (number, full name), in no particular order. `None` when
    /// the secret does not exist.
    async fn enabled_versions(
        &self,
        id: &str,
    ) -> Result<Option<Vec<(u64, String)>>, SecretStoreError> {
        let mut items = self
            .client
            .list_secret_versions()
            .set_parent(self.secret_name(id))
            .set_filter("state:ENABLED")
            .by_item();
        let mut enabled = Vec::new();
        while let Some(item) = items.next().await {
            let version = match item {
                Ok(version) => version,
                Err(error) if has_code(&error, Code::NotFound) => return Ok(None),
                Err(error) => return Err(store_error(error, "listing the versions of", id)),
            };
            // Checked here too: the emulator ignores the filter.
            if version.state == State::Enabled
                && let Some(number) = version_number(&version.name)
            {
                enabled.push((number, version.name));
            }
        }
        Ok(Some(enabled))
    }
}

#[async_trait]
impl SecretStore for SecretManagerStore {
    /// Adds a version and disables nothing: the revision serving, or one a rollback returns
    /// to, may mount an older version (`retire` disables the others once a release is live).
    async fn put(
        &self,
        app: &AppName,
        secrets: &SecretsToml,
    ) -> Result<SecretRef, SecretStoreError> {
        let id = secret_id(app);
        self.create_secret(app, &id).await?;

        let payload = SecretPayload::new().set_data(secrets.expose().as_bytes().to_vec());
        let added = self
            .client
            .add_secret_version()
            .set_parent(self.secret_name(&id))
            .set_payload(payload)
            .send()
            .await
            .map_err(|error| store_error(error, "adding a version to", &id))?;
        if version_number(&added.name).is_none() {
            return Err(SecretStoreError::Other(anyhow!(
                "Secret Manager named the new version of {id} {:?}, not .../versions/N",
                added.name
            )));
        }
        Ok(SecretRef(added.name))
    }

    async fn reference(&self, app: &AppName) -> Result<Option<SecretRef>, SecretStoreError> {
        let versions = self.enabled_versions(&secret_id(app)).await?;
        Ok(versions
            .unwrap_or_default()
            .into_iter()
            .max_by_key(|(number, _)| *number)
            .map(|(_, name)| SecretRef(name)))
    }

    /// Disables every enabled version but the newest and those a release deployed with.
    async fn retire(&self, app: &AppName, keep: &[SecretRef]) -> Result<(), SecretStoreError> {
        let id = secret_id(app);
        let mut enabled = self.enabled_versions(&id).await?.unwrap_or_default();
        enabled.sort_unstable();
        enabled.pop();
        for (_, name) in enabled {
            if keep.iter().any(|kept| kept.0 == name) {
                continue;
            }
            self.client
                .disable_secret_version()
                .set_name(&name)
                .send()
                .await
                .map_err(|error| store_error(error, "disabling an unused version of", &id))?;
        }
        Ok(())
    }

    /// Adds the targets as the secret's newest version, then destroys the older ones: no
    /// release ever goes back to old targets, and a hook URL someone replaced should not stay
    /// readable. An empty list deletes the secret.
    async fn put_notifications(
        &self,
        app: &AppName,
        targets: &NotifyTargets,
    ) -> Result<(), SecretStoreError> {
        let id = notify_secret_id(app);
        if targets.is_empty() {
            return self.delete_secret(&id).await;
        }
        self.create_secret(app, &id).await?;
        let payload =
            SecretPayload::new().set_data(targets.to_json().expose_secret().as_bytes().to_vec());
        let added = self
            .client
            .add_secret_version()
            .set_parent(self.secret_name(&id))
            .set_payload(payload)
            .send()
            .await
            .map_err(|error| store_error(error, "adding a version to", &id))?;
        for (_, name) in self.enabled_versions(&id).await?.unwrap_or_default() {
            if name == added.name {
                continue;
            }
            match self
                .client
                .destroy_secret_version()
                .set_name(&name)
                .send()
                .await
            {
                Err(error) if !has_code(&error, Code::NotFound) => {
                    return Err(store_error(error, "destroying an old version of", &id));
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn notifications(&self, app: &AppName) -> Result<NotifyTargets, SecretStoreError> {
        let id = notify_secret_id(app);
        let accessed = self
            .client
            .access_secret_version()
            .set_name(format!("{}/versions/latest", self.secret_name(&id)))
            .send()
            .await;
        let data = match accessed {
            Ok(response) => response
                .payload
                .map(|payload| payload.data)
                .unwrap_or_default(),
            // No secret yet, or every version destroyed: no targets.
            Err(error)
                if has_code(&error, Code::NotFound)
                    || has_code(&error, Code::FailedPrecondition) =>
            {
                return Ok(NotifyTargets::default());
            }
            Err(error) => return Err(store_error(error, "reading", &id)),
        };
        let json = std::str::from_utf8(&data)
            .map_err(|_| SecretStoreError::Other(anyhow!("secret {id} is not UTF-8")))?;
        NotifyTargets::from_json(json).map_err(|error| {
            SecretStoreError::Other(anyhow!("secret {id} does not hold targets: {error}"))
        })
    }

    async fn delete(&self, app: &AppName) -> Result<(), SecretStoreError> {
        self.delete_secret(&notify_secret_id(app)).await?;
        self.delete_secret(&secret_id(app)).await
    }
}

impl SecretManagerStore {
    /// Creates the secret `id` of `app`; one that exists already is fine.
    async fn create_secret(&self, app: &AppName, id: &str) -> Result<(), SecretStoreError> {
        let secret = Secret::new()
            .set_replication(Replication::new().set_automatic(Automatic::new()))
            .set_labels([("managed-by", "runway"), ("app", app.as_str())]);
        let created = self
            .client
            .create_secret()
            .set_parent(format!("projects/{}", self.project))
            .set_secret_id(id)
            .set_secret(secret)
            .send()
            .await;
        match created {
            Err(error) if !has_code(&error, Code::AlreadyExists) => {
                Err(store_error(error, "creating", id))
            }
            _ => Ok(()),
        }
    }

    /// Deletes the secret `id`, versions and all; one already gone is fine.
    async fn delete_secret(&self, id: &str) -> Result<(), SecretStoreError> {
        match self
            .client
            .delete_secret()
            .set_name(self.secret_name(id))
            .send()
            .await
        {
            Err(error) if !has_code(&error, Code::NotFound) => {
                Err(store_error(error, "deleting", id))
            }
            _ => Ok(()),
        }
    }
}

fn notify_secret_id(app: &AppName) -> String {
    format!("{NOTIFY_SECRET_PREFIX}{}", app.as_str())
}

fn secret_id(app: &AppName) -> String {
    format!("{APP_SECRET_PREFIX}{}", app.as_str())
}

/// `projects/P/secrets/S/versions/N` → N.
fn version_number(name: &str) -> Option<u64> {
    let (rest, number) = name.rsplit_once('/')?;
    rest.ends_with("/versions")
        .then(|| number.parse().ok())
        .flatten()
}

/// Transport failures and Secret Manager's own trouble are `Unavailable` (worth a retry);
/// anything else, a denied permission say, is `Other`. Names the secret, never its value: no
/// request body is part of a client error.
fn store_error(error: GaxError, action: &str, id: &str) -> SecretStoreError {
    if is_transient(&error) {
        SecretStoreError::Unavailable(format!("{action} secret {id}: {error}"))
    } else {
        SecretStoreError::Other(anyhow::Error::new(error).context(format!("{action} secret {id}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_number_of_a_version_name() {
        assert_eq!(
            version_number("projects/p/secrets/runway-app-a/versions/12"),
            Some(12)
        );
        assert_eq!(
            version_number("projects/p/secrets/runway-app-a/versions/latest"),
            None
        );
        assert_eq!(version_number("projects/p/secrets/12"), None);
    }
}
