//! `Platform` on Cloud Run Admin v2: one Cloud Run service per app, one revision per release.
//!
//! A deploy is an upsert (`PATCH ...?allowMissing=true`) of the whole service: the new revision's
//! template, and traffic 100% to LATEST. LATEST only ever routes to the latest *ready* revision,
//! so a revision that never gets ready leaves the previous one serving; we detect that from the
//! service (`latestReadyRevision != latestCreatedRevision`, `terminalCondition`) and report it as
//! [`PlatformError::NotReady`]. Setting LATEST again on every deploy also undoes a rollback's pin
//! ([`CloudRunPlatform::route_to`]).
//!
//! Deploys of one app may overlap (build events arrive in any order, a rollback travels on
//! another topic), so every write is fenced by the release's sequence: the service carries the
//! sequence of the last release that wrote it and the etag of each read guards each write
//! ([`CloudRunPlatform::write`]). An older release that comes late is `Superseded`, and a
//! deploy is live only if the service's newest revision carries its own release id.
//!
//! The image's own command starts Streamlit (the generated Dockerfile names the main file), so
//! `DeploySpec::main_file` is not used here.

use std::time::Duration;

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use google_cloud_gax::error::Error as GaxError;
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::polling_error_policy::LimitedElapsedTime;
use google_cloud_iap_v1::client::IdentityAwareProxyAdminService;
use google_cloud_lro::Poller;
use google_cloud_run_v2::client::Services;
use google_cloud_run_v2::model::{
    Container, ContainerPort, EnvVar, HTTPGetAction, Probe, ResourceRequirements, RevisionScaling,
    RevisionTemplate, SecretVolumeSource, Service, TrafficTarget, TrafficTargetAllocationType,
    VersionToPath, Volume, VolumeMount, condition,
};
use google_cloud_wkt::FieldMask;

mod access;
mod identity;

pub use access::{IAP_ACCESSOR, INVOKER, PublicAccess};
use identity::Identities;
pub use identity::{SECRET_ACCESSOR, account_id};

use super::{has_code, is_transient};
use runway_core::domain::{AppName, Region};
use runway_core::ports::{DeploySpec, Deployed, Platform, PlatformError, SecretRef};

/// Label on every service and revision Runway creates, so cleanup and people can tell them apart.
pub const MANAGED_BY_LABEL: &str = "managed-by";
/// Revision annotation naming the release it runs. An annotation, not a label: label values
/// allow only 63 characters of `[a-z0-9_-]`, and a release id need not fit that.
pub const RELEASE_ANNOTATION: &str = "runway/release-id";
/// Service annotation: the sequence of the last release that wrote the service, the fence
/// between overlapping deploys of one app.
pub const SEQ_ANNOTATION: &str = "runway/release-seq";
/// Fenced writes before giving up on a service that keeps changing under them.
const WRITE_ATTEMPTS: usize = 5;
/// Where the app's secrets file is mounted. Not `/app/.streamlit`: a mount there would hide the
/// repository's own `.streamlit/config.toml`.
pub const SECRETS_DIR: &str = "/secrets";
pub const SECRETS_FILE: &str = "secrets.toml";
/// Streamlit's `secrets.files` option as an environment variable.
pub const SECRETS_ENV: &str = "STREAMLIT_SECRETS_FILES";
/// The port the generated Dockerfile tells Streamlit to listen on (`--server.port=$PORT`).
pub const CONTAINER_PORT: i32 = 8080;
/// How long a deploy waits for Cloud Run by default: under the ack deadline of the push it runs
/// in (Pub/Sub's maximum is 600 s; infra/run.tf's deploy_wait sets it).
pub const DEPLOY_WAIT: Duration = Duration::from_secs(540);
/// The startup probe: a revision has this long to answer Streamlit's health check.
const PROBE_PERIOD_SECS: i32 = 3;
const PROBE_TIMEOUT_SECS: i32 = 2;
const PROBE_FAILURES: i32 = 40;
/// The liveness probe: three missed answers 30 s apart restart the instance (as the local
/// platform's health checks do).
const LIVENESS_PERIOD_SECS: i32 = 30;
const LIVENESS_TIMEOUT_SECS: i32 = 5;
const LIVENESS_FAILURES: i32 = 3;
/// Streamlit answers `ok` here once it can serve.
pub const HEALTH_PATH: &str = "/_stcore/health";

#[derive(Clone, Debug)]
pub struct CloudRunConfig {
    /// The project the app services live in.
    pub project: String,
    /// Runway's `name_prefix`: each app runs as its own service account,
    /// `{name_prefix}-a-{app}` ([`account_id`]).
    pub name_prefix: String,
    /// Upper bound on instances per app (Cloud Run's `maxInstanceCount`), a cost guard.
    pub max_instances: i32,
    /// Regions an app may live in. [`Platform::delete`] is given no region, so it deletes the
    /// app's service in each of them.
    pub regions: Vec<String>,
    /// The project's number: IAP names a service's resource by it.
    pub project_number: String,
    /// How a public app is opened to everyone.
    pub public_access: PublicAccess,
    /// Admin API base URL; `None` for `https://run.googleapis.com`. Tests point it at a fake.
    pub endpoint: Option<String>,
    /// IAP Admin API base URL; `None` for `https://iap.googleapis.com`.
    pub iap_endpoint: Option<String>,
    /// IAM API base URL (the apps' service accounts); `None` for Google's.
    pub iam_endpoint: Option<String>,
    /// Secret Manager API base URL (who may read an app's secret); `None` for Google's.
    pub secret_manager_endpoint: Option<String>,
    /// How long a policy naming a new service account is retried while IAM does not know the
    /// account yet (IAM is eventually consistent).
    pub settle_timeout: Duration,
    /// Send no credentials (tests only); otherwise Application Default Credentials.
    pub anonymous: bool,
    /// First wait between polls of a long-running operation; doubles up to `poll_max_delay`.
    pub poll_initial_delay: Duration,
    pub poll_max_delay: Duration,
    /// How long to wait for one operation before giving up with `Unavailable` (the operation
    /// may still finish; a retried deploy is an idempotent upsert).
    pub operation_timeout: Duration,
}

impl CloudRunConfig {
    /// Production defaults: Google's endpoint, default credentials, polls from 1 s up to 10 s
    /// for at most 9 minutes (a revision's startup probe alone may take 2 minutes): the worker
    /// deploys inside a Pub/Sub push, whose ack deadline is at most 10.
    pub fn new(
        project: impl Into<String>,
        project_number: impl Into<String>,
        regions: Vec<String>,
    ) -> Self {
        Self {
            project: project.into(),
            project_number: project_number.into(),
            name_prefix: "runway".into(),
            public_access: PublicAccess::default(),
            iap_endpoint: None,
            iam_endpoint: None,
            secret_manager_endpoint: None,
            settle_timeout: Duration::from_secs(120),
            max_instances: 3,
            regions,
            endpoint: None,
            anonymous: false,
            poll_initial_delay: Duration::from_secs(1),
            poll_max_delay: Duration::from_secs(10),
            operation_timeout: DEPLOY_WAIT,
        }
    }
}

/// Runs each app as a Cloud Run service named after it.
#[derive(Clone, Debug)]
pub struct CloudRunPlatform {
    client: Services,
    iap: IdentityAwareProxyAdminService,
    identities: Identities,
    config: CloudRunConfig,
}

impl CloudRunPlatform {
    /// Builds the Admin API client once; keep the platform for the life of the process.
    pub async fn new(config: CloudRunConfig) -> anyhow::Result<Self> {
        let backoff = ExponentialBackoffBuilder::new()
            .with_initial_delay(config.poll_initial_delay)
            .with_maximum_delay(config.poll_max_delay)
            .build()
            .context("polling backoff for Cloud Run operations")?;
        let mut builder = Services::builder()
            .with_polling_backoff_policy(backoff)
            .with_polling_error_policy(LimitedElapsedTime::new(config.operation_timeout));
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if config.anonymous {
            builder = builder.with_credentials(
                google_cloud_auth::credentials::anonymous::Builder::new().build(),
            );
        }
        let client = builder
            .build()
            .await
            .context("building the Cloud Run Admin API client")?;
        let mut iap = IdentityAwareProxyAdminService::builder();
        if let Some(endpoint) = &config.iap_endpoint {
            iap = iap.with_endpoint(endpoint);
        }
        if config.anonymous {
            iap = iap.with_credentials(
                google_cloud_auth::credentials::anonymous::Builder::new().build(),
            );
        }
        let iap = iap
            .build()
            .await
            .context("building the IAP Admin API client")?;
        Ok(Self {
            client,
            iap,
            identities: Identities::new(&config).await?,
            config,
        })
    }

    /// Rollback: pins 100% of the app's traffic to `revision` (a short revision name, as
    /// [`Deployed::revision`] gives), as release `seq`. The revision must still exist and be
    /// ready; if it is not, traffic stays where it was and the error is `NotReady`. The next
    /// [`Platform::deploy`] moves traffic back to LATEST.
    #[tracing::instrument(skip_all, fields(app = %app.as_str(), %region, %revision))]
    pub async fn route_to(
        &self,
        app: &AppName,
        region: &str,
        revision: &str,
        seq: u64,
    ) -> Result<Deployed, PlatformError> {
        let name = self.service_name(region, app);
        let pin = TrafficTarget::new()
            .set_type(TrafficTargetAllocationType::Revision)
            .set_revision(revision)
            .set_percent(100);
        let service = self
            .write(&name, seq, Change::Traffic(pin), "routing traffic")
            .await?;
        serving_pinned(&service, revision)
    }

    /// Writes `change` to the service as release `seq`, fenced so that an older release never
    /// replaces a newer one however their calls overlap: the service carries the sequence of
    /// the last release that wrote it (`SEQ_ANNOTATION`), a write from an older one is refused
    /// as [`PlatformError::Superseded`], and each write sends the etag of the service it read,
    /// so Cloud Run refuses it (ABORTED) if another landed in between; then it is read again.
    /// Once the operation is done the service must still carry `seq`, or a newer release
    /// wrote after it.
    async fn write(
        &self,
        name: &str,
        seq: u64,
        change: Change<'_>,
        action: &str,
    ) -> Result<Service, PlatformError> {
        for attempt in 1..=WRITE_ATTEMPTS {
            let existing = match self.client.get_service().set_name(name).send().await {
                Ok(service) => Some(service),
                Err(error) if has_code(&error, Code::NotFound) => None,
                Err(error) => return Err(self.platform_error(error, "reading the service")),
            };
            if let Some(existing) = &existing {
                not_someone_elses(existing)?;
                fenced(existing, seq)?;
            }
            let (mut service, mut fields) = match &change {
                Change::Deploy { spec, account } => {
                    // Who may open the app is set before the new revision on a service that
                    // exists, so no moment serves it to people it no longer should; a new
                    // service has no policy until it exists. Both orders fail closed.
                    if existing.is_some() {
                        self.grant(&spec.app, spec.region.as_str(), &spec.access)
                            .await?;
                    }
                    self.revision_change(name, spec, account, existing.as_ref())?
                }
                Change::Traffic(target) => (
                    Service::new().set_name(name).set_traffic([target.clone()]),
                    vec!["traffic"],
                ),
            };
            // Annotations are one field: keep the ones others put on the service.
            let mut annotations = existing
                .as_ref()
                .map(|service| service.annotations.clone())
                .unwrap_or_default();
            annotations.insert(SEQ_ANNOTATION.to_owned(), seq.to_string());
            service.annotations = annotations;
            fields.push("annotations");
            if let Some(existing) = &existing {
                service.etag = existing.etag.clone();
            }
            let outcome = self
                .client
                .update_service()
                .set_service(service)
                .set_allow_missing(true)
                // Only what Runway owns: an operator's settings on the service (its other
                // invoker settings, its own labels and annotations) survive every deploy.
                .set_update_mask(FieldMask::default().set_paths(fields))
                .poller()
                .until_done()
                .await;
            if let Err(error) = &outcome
                && has_code(error, Code::Aborted)
            {
                tracing::info!(attempt, "the service changed since it was read; again");
                continue;
            }
            let service = self.settle(name, outcome, action).await?;
            if let Change::Deploy { spec, .. } = &change
                && existing.is_none()
            {
                self.grant(&spec.app, spec.region.as_str(), &spec.access)
                    .await?;
            }
            fenced(&service, seq)?;
            if written_seq(&service).is_some_and(|written| written < seq) {
                // Two first deploys raced to create the service (there is no etag to send
                // before it exists) and an older one wrote last: write again.
                continue;
            }
            return Ok(service);
        }
        Err(PlatformError::Unavailable(format!(
            "{action}: the service kept changing under Runway's writes ({WRITE_ATTEMPTS} attempts)"
        )))
    }

    /// A release's revision: template, labels and access switches, and traffic to LATEST
    /// unless a rollback pinned it (then traffic moves once the revision is ready).
    fn revision_change(
        &self,
        name: &str,
        spec: &DeploySpec,
        account: &str,
        existing: Option<&Service>,
    ) -> Result<(Service, Vec<&'static str>), PlatformError> {
        let mut service = desired_service(&self.config, name, spec, account)?;
        let mut fields = vec!["labels", "template", "iap_enabled"];
        let switches = access::switches(&spec.access, self.config.public_access);
        service.iap_enabled = switches.iap_enabled;
        if let Some(disabled) = switches.invoker_iam_disabled {
            service.invoker_iam_disabled = disabled;
            fields.push("invoker_iam_disabled");
        }
        if existing.is_none_or(follows_latest) {
            fields.push("traffic");
        }
        // Labels are one field: keep the ones others put on the service beside Runway's own.
        if let Some(existing) = existing {
            let mut labels = existing.labels.clone();
            labels.extend(service.labels);
            service.labels = labels;
        }
        Ok((service, fields))
    }

    /// Deletes the app's service in `region` if Runway made it: a service of the same name
    /// that someone else made (no `managed-by=runway` label) is not the app's to remove. A
    /// service that is not there is already deleted.
    #[tracing::instrument(skip_all, fields(app = %app.as_str(), %region))]
    async fn delete_ours_in(&self, region: &str, app: &AppName) -> Result<(), PlatformError> {
        let name = self.service_name(region, app);
        match self.client.get_service().set_name(&name).send().await {
            // With the etag read: a service changed since (made someone else's) is not deleted.
            Ok(service) if not_someone_elses(&service).is_ok() => {
                self.delete_in(region, app, &service.etag).await
            }
            Ok(_) => {
                tracing::info!(%app, region, "leaving a service of the app's name Runway did not make");
                Ok(())
            }
            Err(error) if has_code(&error, Code::NotFound) => Ok(()),
            Err(error) => Err(self.platform_error(error, "reading the service")),
        }
    }

    async fn delete_in(
        &self,
        region: &str,
        app: &AppName,
        etag: &str,
    ) -> Result<(), PlatformError> {
        let outcome = self
            .client
            .delete_service()
            .set_name(self.service_name(region, app))
            .set_etag(etag)
            .poller()
            .until_done()
            .await;
        match outcome {
            Ok(_) => Ok(()),
            Err(error) if has_code(&error, Code::NotFound) => Ok(()),
            Err(error) => Err(self.platform_error(error, "deleting the service")),
        }
    }

    fn service_name(&self, region: &str, app: &AppName) -> String {
        format!(
            "projects/{}/locations/{region}/services/{}",
            self.config.project,
            app.as_str()
        )
    }

    /// Turns a finished operation into the service's current state. An operation that failed
    /// because the new revision never got ready is not an error of ours: the service says why,
    /// and the caller decides from it. Cloud Run fails such operations with code 9, and with
    /// code 13 for some (a revision denied its secret, say), so whatever the code, the service
    /// is read: a failed reconciliation whose newest revision is not the ready one means "not
    /// ready, the previous revision keeps serving".
    async fn settle(
        &self,
        name: &str,
        outcome: Result<Service, GaxError>,
        action: &str,
    ) -> Result<Service, PlatformError> {
        let Err(error) = outcome else {
            return self.read(name).await;
        };
        let service = match self.read(name).await {
            Ok(service) => service,
            // A service that cannot be read says nothing about the revision: the operation's
            // error stands.
            Err(_) if !has_code(&error, Code::FailedPrecondition) => {
                return Err(self.platform_error(error, action));
            }
            Err(read) => return Err(read),
        };
        let revision_not_ready =
            failed(&service) && service.latest_created_revision != service.latest_ready_revision;
        if revision_not_ready || (failed(&service) && has_code(&error, Code::FailedPrecondition)) {
            return Ok(service);
        }
        if has_code(&error, Code::FailedPrecondition) {
            // The service normally records the failure in `terminalCondition`; when it does
            // not, the operation's own message says why.
            return Err(PlatformError::NotReady(status_message(&error)));
        }
        Err(self.platform_error(error, action))
    }

    async fn read(&self, name: &str) -> Result<Service, PlatformError> {
        self.client
            .get_service()
            .set_name(name)
            .send()
            .await
            .map_err(|error| self.platform_error(error, "reading the service"))
    }

    fn platform_error(&self, error: GaxError, action: &str) -> PlatformError {
        platform_error(&self.config, error, action)
    }
}

#[async_trait]
impl Platform for CloudRunPlatform {
    /// Pins all traffic to the earlier revision: nothing is rebuilt or restarted, and the
    /// next `deploy` sets traffic back to the latest revision. A revision Cloud Run no longer
    /// has (revisions are garbage-collected) is replaced by a new one from the same image.
    async fn roll_back(
        &self,
        spec: DeploySpec,
        revision: Option<&str>,
    ) -> Result<Deployed, PlatformError> {
        if let Some(revision) = revision {
            // Cloud Run reports a revision it no longer has as INTERNAL, not NOT_FOUND, so
            // any failure falls back; if Cloud Run itself is down, `deploy` says so.
            match self
                .route_to(&spec.app, spec.region.as_str(), revision, spec.seq)
                .await
            {
                Ok(deployed) => return Ok(deployed),
                Err(superseded @ PlatformError::Superseded(_)) => return Err(superseded),
                Err(error) => tracing::warn!(
                    revision,
                    error = format!("{error:#}"),
                    "the earlier revision cannot take traffic; deploying its image again"
                ),
            }
        }
        self.deploy(spec).await
    }

    #[tracing::instrument(skip_all, fields(app = %spec.app.as_str(), release = %spec.release_id))]
    async fn deploy(&self, spec: DeploySpec) -> Result<Deployed, PlatformError> {
        let name = self.service_name(spec.region.as_str(), &spec.app);
        // The app's own identity, able to read its own secret, before any revision runs as it.
        let account = self.identities.ensure(&spec.app).await?;
        if let Some(secrets) = &spec.secrets {
            let secret = SecretVersion::parse(secrets)?.secret_name();
            self.let_read(&secret, &account).await?;
        }
        let change = Change::Deploy {
            spec: &spec,
            account: &account,
        };
        let service = self.write(&name, spec.seq, change, "deploying").await?;
        carries(&service, &spec)?;
        // After a rollback traffic is pinned. LATEST would mean the latest *ready* revision,
        // the one rolled back from, should the new one never get ready; so the pin stays until
        // the new revision is ready, and only then does traffic move.
        if follows_latest(&service) {
            return serving_latest(&service);
        }
        if failed(&service) || service.latest_ready_revision != service.latest_created_revision {
            return Err(PlatformError::NotReady(condition_message(&service)));
        }
        let service = self
            .write(
                &name,
                spec.seq,
                Change::Traffic(latest()),
                "moving traffic to the new revision",
            )
            .await?;
        carries(&service, &spec)?;
        serving_latest(&service)
    }

    async fn delete(&self, app: &AppName) -> Result<(), PlatformError> {
        for region in &self.config.regions {
            self.delete_ours_in(region, app).await?;
        }
        // Last: a service still running as it would lose its identity mid-flight.
        self.identities.remove(app).await
    }

    async fn retire(&self, app: &AppName, region: &Region) -> Result<(), PlatformError> {
        self.delete_ours_in(region.as_str(), app).await
    }

    /// Reads the app's service in each region Runway may deploy to but `keep`, and deletes
    /// those Runway made; a service of the same name that someone else made stays.
    async fn retire_elsewhere(&self, app: &AppName, keep: &Region) -> Result<(), PlatformError> {
        for region in &self.config.regions {
            if region == keep.as_str() {
                continue;
            }
            self.delete_ours_in(region, app).await?;
        }
        Ok(())
    }

    async fn check_name(&self, app: &AppName, region: &Region) -> Result<(), PlatformError> {
        let name = self.service_name(region.as_str(), app);
        match self.client.get_service().set_name(&name).send().await {
            Ok(service) => not_someone_elses(&service),
            Err(error) if has_code(&error, Code::NotFound) => Ok(()),
            Err(error) => Err(self.platform_error(error, "reading the service")),
        }
    }
}

/// What a fenced write sets.
enum Change<'a> {
    /// A release's revision, run as the app's account.
    Deploy {
        spec: &'a DeploySpec,
        account: &'a str,
    },
    /// All traffic to one target.
    Traffic(TrafficTarget),
}

/// The sequence of the last release that wrote the service, if Runway wrote it.
fn written_seq(service: &Service) -> Option<u64> {
    service.annotations.get(SEQ_ANNOTATION)?.parse().ok()
}

/// Refuses a write (or its result) from a release older than the one that wrote last.
fn fenced(service: &Service, seq: u64) -> Result<(), PlatformError> {
    match written_seq(service) {
        Some(newer) if newer > seq => Err(PlatformError::Superseded(format!(
            "release #{newer} of the app reached Cloud Run after this one (#{seq}) and serves \
             in its place"
        ))),
        _ => Ok(()),
    }
}

/// The service's newest revision must be the release's own: the template names it.
fn carries(service: &Service, spec: &DeploySpec) -> Result<(), PlatformError> {
    let carried = service
        .template
        .as_ref()
        .and_then(|template| template.annotations.get(RELEASE_ANNOTATION));
    if carried.map(String::as_str) == Some(spec.release_id.as_str()) {
        return Ok(());
    }
    Err(PlatformError::Superseded(format!(
        "the service's newest revision runs release {}, not {}",
        carried.map_or("(none)", String::as_str),
        spec.release_id
    )))
}

/// Runway updates only the services it created: every one carries `managed-by=runway`. An
/// upsert of another (an operator's, or another team's) would replace it.
fn not_someone_elses(service: &Service) -> Result<(), PlatformError> {
    if service.labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some("runway") {
        return Ok(());
    }
    Err(PlatformError::Conflict(format!(
        "the Cloud Run service {} exists and Runway did not create it (it has no label \
         {MANAGED_BY_LABEL}=runway); choose another app name",
        short_revision(&service.name)
    )))
}

/// Classifies a Cloud Run error: transient ones are retried by the caller, a missing
/// permission names the role to grant.
fn platform_error(config: &CloudRunConfig, error: GaxError, action: &str) -> PlatformError {
    if has_code(&error, Code::PermissionDenied) {
        return PlatformError::Other(anyhow!(
            "{action} in Cloud Run was denied: {}. Runway's worker needs the app deployer role \
             on project {} (Cloud Run services, and actAs on the apps' service accounts)",
            status_message(&error),
            config.project,
        ));
    }
    if is_transient(&error) {
        return PlatformError::Unavailable(format!("{action}: {error}"));
    }
    PlatformError::Other(anyhow::Error::new(error).context(format!("{action} in Cloud Run")))
}

/// All traffic to the latest ready revision.
fn latest() -> TrafficTarget {
    TrafficTarget::new()
        .set_type(TrafficTargetAllocationType::Latest)
        .set_percent(100)
}

/// Whether the service sends all traffic to its latest ready revision (an empty list means
/// that too), rather than pinning it to one revision as a rollback does.
fn follows_latest(service: &Service) -> bool {
    match service.traffic.as_slice() {
        [] => true,
        [only] => only.r#type == TrafficTargetAllocationType::Latest && only.percent == 100,
        _ => false,
    }
}

/// The service as Runway wants it: its labels, template and traffic (access is set apart).
fn desired_service(
    config: &CloudRunConfig,
    name: &str,
    spec: &DeploySpec,
    account: &str,
) -> Result<Service, PlatformError> {
    Ok(Service::new()
        .set_name(name)
        .set_labels(managed_labels())
        .set_template(template(config, spec, account)?)
        .set_traffic([latest()]))
}

fn template(
    config: &CloudRunConfig,
    spec: &DeploySpec,
    account: &str,
) -> Result<RevisionTemplate, PlatformError> {
    let mut container = container(spec);
    let mut template = RevisionTemplate::new()
        .set_labels(managed_labels())
        .set_annotations([(RELEASE_ANNOTATION, spec.release_id.as_str())])
        .set_service_account(account)
        .set_scaling(scaling(config, spec))
        // Streamlit keeps one websocket per browser session, and its state lives in the
        // instance that holds it: reconnects must land on the same instance.
        .set_session_affinity(true)
        // A websocket is one long request; Cloud Run cuts requests at the timeout (at most
        // an hour), so take the maximum.
        .set_timeout(google_cloud_wkt::Duration::clamp(3600, 0));
    let mut env: Vec<EnvVar> = spec
        .runtime
        .env
        .iter()
        .map(|(name, value)| EnvVar::new().set_name(name).set_value(value))
        .collect();
    if let Some(secrets) = &spec.secrets {
        let version = SecretVersion::parse(secrets)?;
        template = template.set_volumes([version.volume(&config.project)]);
        container = container.set_volume_mounts([VolumeMount::new()
            .set_name(SECRETS_VOLUME)
            .set_mount_path(SECRETS_DIR)]);
        env.insert(
            0,
            EnvVar::new()
                .set_name(SECRETS_ENV)
                .set_value(format!("{SECRETS_DIR}/{SECRETS_FILE}")),
        );
    }
    if !env.is_empty() {
        container = container.set_env(env);
    }
    Ok(template.set_containers([container]))
}

/// The app's warm instances, and the installation's cap on instances (raised to the warm
/// count, which Cloud Run requires to be at most the cap).
fn scaling(config: &CloudRunConfig, spec: &DeploySpec) -> RevisionScaling {
    let min = i32::try_from(spec.runtime.min_instances.count()).unwrap_or(i32::MAX);
    RevisionScaling::new()
        .set_min_instance_count(min)
        .set_max_instance_count(config.max_instances.max(min))
}

const SECRETS_VOLUME: &str = "secrets";

fn managed_labels() -> [(&'static str, &'static str); 1] {
    [(MANAGED_BY_LABEL, "runway")]
}

/// The app's one container: the image by digest, its resources, and a startup probe on
/// Streamlit's health endpoint so traffic only moves once Streamlit answers.
fn container(spec: &DeploySpec) -> Container {
    let limits = [
        ("memory", spec.resources.memory().as_str()),
        ("cpu", spec.resources.cpu().as_str()),
    ];
    Container::new()
        .set_name("app")
        .set_image(&spec.image)
        .set_ports([ContainerPort::new()
            .set_name("http1")
            .set_container_port(CONTAINER_PORT)])
        .set_resources(
            ResourceRequirements::new()
                .set_limits(limits)
                // Setting resources turns request-only CPU off unless asked for again.
                .set_cpu_idle(true)
                .set_startup_cpu_boost(true),
        )
        .set_startup_probe(
            Probe::new()
                .set_http_get(
                    HTTPGetAction::new()
                        .set_path(HEALTH_PATH)
                        .set_port(CONTAINER_PORT),
                )
                .set_timeout_seconds(PROBE_TIMEOUT_SECS)
                .set_period_seconds(PROBE_PERIOD_SECS)
                // Installing nothing at start, Streamlit is up in seconds; two minutes covers
                // an app that imports heavy libraries.
                .set_failure_threshold(PROBE_FAILURES),
        )
        // Once serving, an instance whose Streamlit stops answering (a hung script holding the
        // server, a deadlock) is restarted by Cloud Run, as the local platform restarts one.
        .set_liveness_probe(
            Probe::new()
                .set_http_get(
                    HTTPGetAction::new()
                        .set_path(HEALTH_PATH)
                        .set_port(CONTAINER_PORT),
                )
                .set_timeout_seconds(LIVENESS_TIMEOUT_SECS)
                .set_period_seconds(LIVENESS_PERIOD_SECS)
                .set_failure_threshold(LIVENESS_FAILURES),
        )
}

/// A Secret Manager secret version, `projects/P/secrets/S/versions/N`, as a [`SecretRef`]
/// names it on Google Cloud.
#[derive(Debug, PartialEq, Eq)]
struct SecretVersion<'a> {
    project: &'a str,
    secret: &'a str,
    version: &'a str,
}

impl<'a> SecretVersion<'a> {
    fn parse(reference: &'a SecretRef) -> Result<Self, PlatformError> {
        let parts: Vec<&str> = reference.0.split('/').collect();
        match parts.as_slice() {
            ["projects", project, "secrets", secret, "versions", version]
                if [project, secret, version]
                    .iter()
                    .all(|part| !part.is_empty()) =>
            {
                Ok(Self {
                    project,
                    secret,
                    version,
                })
            }
            _ => Err(PlatformError::Other(anyhow!(
                "secret reference {:?} is not a Secret Manager version \
                 (projects/P/secrets/S/versions/N)",
                reference.0
            ))),
        }
    }

    /// A secret volume exposing exactly this version as `secrets.toml`. Cloud Run wants the
    /// bare secret id for a secret in the service's project and the full name otherwise.
    /// The secret itself, `projects/P/secrets/S`: where who may read it is set.
    fn secret_name(&self) -> String {
        format!("projects/{}/secrets/{}", self.project, self.secret)
    }

    fn volume(&self, service_project: &str) -> Volume {
        let secret = if self.project == service_project {
            self.secret.to_owned()
        } else {
            format!("projects/{}/secrets/{}", self.project, self.secret)
        };
        Volume::new().set_name(SECRETS_VOLUME).set_secret(
            SecretVolumeSource::new()
                .set_secret(secret)
                .set_items([VersionToPath::new()
                    .set_path(SECRETS_FILE)
                    .set_version(self.version)]),
        )
    }
}

/// The service after a deploy: live only if the revision just created is the one that is ready
/// and reconciliation succeeded. Otherwise LATEST still points at the previous ready revision.
fn serving_latest(service: &Service) -> Result<Deployed, PlatformError> {
    if failed(service) || service.latest_ready_revision != service.latest_created_revision {
        return Err(PlatformError::NotReady(condition_message(service)));
    }
    Ok(Deployed {
        url: service.uri.clone(),
        revision: short_revision(&service.latest_ready_revision).to_owned(),
    })
}

/// The service after a rollback: live only if the pinned revision now has all traffic.
fn serving_pinned(service: &Service, revision: &str) -> Result<Deployed, PlatformError> {
    if failed(service) {
        return Err(PlatformError::NotReady(condition_message(service)));
    }
    let pinned = service
        .traffic_statuses
        .iter()
        .any(|status| short_revision(&status.revision) == revision && status.percent == 100);
    if !pinned {
        return Err(PlatformError::Other(anyhow!(
            "Cloud Run accepted the rollback, but {revision} does not have all traffic"
        )));
    }
    Ok(Deployed {
        url: service.uri.clone(),
        revision: revision.to_owned(),
    })
}

/// Whether reconciliation is over and did not succeed.
fn failed(service: &Service) -> bool {
    service
        .terminal_condition
        .as_ref()
        .is_none_or(|condition| condition.state != condition::State::ConditionSucceeded)
}

fn condition_message(service: &Service) -> String {
    let message = service
        .terminal_condition
        .as_ref()
        .map(|condition| condition.message.as_str())
        .unwrap_or_default();
    if message.is_empty() {
        format!(
            "revision {} did not become ready",
            short_revision(&service.latest_created_revision)
        )
    } else {
        message.to_owned()
    }
}

/// `projects/P/locations/R/services/S/revisions/REV` → `REV` (a short name stays as it is).
fn short_revision(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

fn status_message(error: &GaxError) -> String {
    error
        .status()
        .map(|status| status.message.clone())
        .unwrap_or_else(|| error.to_string())
}

#[cfg(test)]
mod tests {
    use google_cloud_gax::error::rpc::Status;
    use google_cloud_run_v2::model::{Condition, TrafficTargetStatus};

    use super::*;
    use runway_core::domain::{Cpu, MainFile, Memory, Region, Resources};

    fn spec(secrets: Option<&str>) -> DeploySpec {
        DeploySpec {
            app: AppName::parse("hello").unwrap(),
            release_id: "rel-1".into(),
            seq: 1,
            image: "europe-docker.pkg.dev/p/apps/hello@sha256:abc".into(),
            main_file: MainFile::parse("app.py").unwrap(),
            region: Region::try_from("europe-west1".to_owned()).unwrap(),
            resources: Resources::new(Memory::Gi2, Cpu::Two).unwrap(),
            runtime: Default::default(),
            secrets: secrets.map(|s| SecretRef(s.into())),
            access: Default::default(),
        }
    }

    fn config() -> CloudRunConfig {
        CloudRunConfig::new("proj", "42", vec![])
    }

    fn service(ready: &str, created: &str, state: condition::State, message: &str) -> Service {
        Service::new()
            .set_uri("https://hello.run.app")
            .set_latest_ready_revision(ready)
            .set_latest_created_revision(created)
            .set_terminal_condition(
                Condition::new()
                    .set_type("Ready")
                    .set_state(state)
                    .set_message(message),
            )
    }

    #[test]
    fn parses_a_secret_manager_version_name() {
        let reference = SecretRef("projects/p/secrets/app-hello/versions/7".into());
        let version = SecretVersion::parse(&reference).unwrap();
        assert_eq!(
            version,
            SecretVersion {
                project: "p",
                secret: "app-hello",
                version: "7"
            }
        );
    }

    #[test]
    fn rejects_a_secret_reference_that_is_not_a_version_name() {
        for bad in [
            "/tmp/secrets.toml",
            "projects/p/secrets/s",
            "projects//secrets/s/versions/1",
        ] {
            let reference = SecretRef(bad.into());
            let result = SecretVersion::parse(&reference);
            assert!(matches!(result, Err(PlatformError::Other(_))), "{bad}");
        }
    }

    #[test]
    fn names_the_secret_by_id_in_its_own_project_and_fully_elsewhere() {
        let reference = SecretRef("projects/p/secrets/s/versions/3".into());
        let version = SecretVersion::parse(&reference).unwrap();
        let json = |volume: Volume| serde_json::to_value(volume).unwrap();
        assert_eq!(json(version.volume("p"))["secret"]["secret"], "s");
        assert_eq!(
            json(version.volume("other"))["secret"]["secret"],
            "projects/p/secrets/s"
        );
        assert_eq!(
            json(version.volume("p"))["secret"]["items"][0],
            serde_json::json!({"path": "secrets.toml", "version": "3"})
        );
    }

    #[test]
    fn mounts_secrets_as_a_file_streamlit_is_told_about() {
        let template = template_for(&config(), &spec(Some("projects/proj/secrets/s/versions/2")));
        let container = &template["containers"][0];
        assert_eq!(container["volumeMounts"][0]["mountPath"], "/secrets");
        assert_eq!(container["env"][0]["name"], "STREAMLIT_SECRETS_FILES");
        assert_eq!(container["env"][0]["value"], "/secrets/secrets.toml");
        assert_eq!(
            template["volumes"][0]["name"],
            container["volumeMounts"][0]["name"]
        );
    }

    #[test]
    fn a_deploy_without_secrets_has_no_volume_and_no_secrets_env() {
        let template = template_for(&config(), &spec(None));
        assert!(template.get("volumes").is_none());
        assert!(template["containers"][0].get("env").is_none());
    }

    #[test]
    fn the_template_carries_resources_affinity_scaling_and_identity() {
        let template = template_for(&config(), &spec(None));
        let container = &template["containers"][0];
        assert_eq!(container["resources"]["limits"]["memory"], "2Gi");
        assert_eq!(container["resources"]["limits"]["cpu"], "2");
        assert_eq!(container["ports"][0]["containerPort"], 8080);
        assert_eq!(
            container["startupProbe"]["httpGet"]["path"],
            "/_stcore/health"
        );
        let liveness = &container["livenessProbe"];
        assert_eq!(liveness["httpGet"]["path"], "/_stcore/health");
        assert_eq!(liveness["httpGet"]["port"], 8080);
        assert_eq!(liveness["periodSeconds"], 30);
        assert_eq!(liveness["timeoutSeconds"], 5);
        assert_eq!(liveness["failureThreshold"], 3);
        assert_eq!(template["sessionAffinity"], true);
        assert_eq!(template["scaling"]["maxInstanceCount"], 3);
        assert_eq!(
            template["serviceAccount"],
            "runway-a-hello@proj.iam.gserviceaccount.com"
        );
        assert_eq!(template["annotations"][RELEASE_ANNOTATION], "rel-1");
        assert_eq!(template["labels"][MANAGED_BY_LABEL], "runway");
    }

    #[test]
    fn plain_variables_follow_the_secrets_file_and_warm_instances_raise_the_cap() {
        let mut spec = spec(Some("projects/proj/secrets/s/versions/2"));
        spec.runtime = runway_core::domain::Runtime {
            env: runway_core::domain::EnvVars::parse_lines("MODEL=small\nLABEL=a b\n").unwrap(),
            min_instances: runway_core::domain::MinInstances::new(3).unwrap(),
        };
        let mut low = config();
        low.max_instances = 2;

        let template = template_for(&low, &spec);

        let env: Vec<(&str, &str)> = template["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|var| {
                (
                    var["name"].as_str().unwrap(),
                    var["value"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            env,
            [
                ("STREAMLIT_SECRETS_FILES", "/secrets/secrets.toml"),
                ("LABEL", "a b"),
                ("MODEL", "small")
            ]
        );
        assert_eq!(template["scaling"]["minInstanceCount"], 3);
        assert_eq!(template["scaling"]["maxInstanceCount"], 3);
    }

    fn template_for(config: &CloudRunConfig, spec: &DeploySpec) -> serde_json::Value {
        serde_json::to_value(
            template(config, spec, "runway-a-hello@proj.iam.gserviceaccount.com").unwrap(),
        )
        .unwrap()
    }

    /// The worker's longest path, a deploy whose revision uses all of its startup probe, ends
    /// inside the wait, which ends inside the longest ack deadline Pub/Sub allows.
    #[test]
    fn the_longest_deploy_fits_the_wait_and_the_wait_fits_a_push() {
        let probe = PROBE_FAILURES * (PROBE_PERIOD_SECS + PROBE_TIMEOUT_SECS);
        // Pulling the image and starting the container come first; give them two minutes.
        let longest = Duration::from_secs(probe as u64 + 120);
        assert!(longest < DEPLOY_WAIT, "{longest:?}");
        assert!(DEPLOY_WAIT + Duration::from_secs(30) <= Duration::from_secs(600));
        assert_eq!(config().operation_timeout, DEPLOY_WAIT);
    }

    #[test]
    fn a_ready_latest_revision_is_live_under_its_short_name() {
        let name = "projects/p/locations/r/services/hello/revisions/hello-00002-abc";
        let service = service(name, name, condition::State::ConditionSucceeded, "");
        let deployed = serving_latest(&service).unwrap();
        assert_eq!(deployed.revision, "hello-00002-abc");
        assert_eq!(deployed.url, "https://hello.run.app");
    }

    #[test]
    fn a_failed_latest_revision_is_not_ready_with_cloud_runs_message() {
        let service = service(
            "hello-00001-abc",
            "hello-00002-xyz",
            condition::State::ConditionFailed,
            "Revision 'hello-00002-xyz' is not ready and cannot serve traffic.",
        );
        let error = serving_latest(&service).unwrap_err();
        assert!(
            matches!(&error, PlatformError::NotReady(m) if m.contains("hello-00002-xyz")),
            "{error:?}"
        );
    }

    #[test]
    fn a_rollback_is_live_when_the_pinned_revision_has_all_traffic() {
        let service = service("b", "b", condition::State::ConditionSucceeded, "")
            .set_traffic_statuses([TrafficTargetStatus::new()
                .set_type(TrafficTargetAllocationType::Revision)
                .set_revision("hello-00001-abc")
                .set_percent(100)]);
        let deployed = serving_pinned(&service, "hello-00001-abc").unwrap();
        assert_eq!(deployed.revision, "hello-00001-abc");
        assert!(serving_pinned(&service, "hello-00002-xyz").is_err());
    }

    #[test]
    fn classifies_errors_for_retry_and_names_the_missing_role() {
        let config = config();
        let service_error =
            |code: Code| GaxError::service(Status::default().set_code(code).set_message("nope"));
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Internal] {
            let error = platform_error(&config, service_error(code), "deploying");
            assert!(matches!(error, PlatformError::Unavailable(_)), "{code:?}");
        }
        let denied = platform_error(&config, service_error(Code::PermissionDenied), "deploying");
        let message = format!("{denied:#}");
        assert!(message.contains("app deployer role"), "{message}");
        assert!(message.contains("actAs"), "{message}");
        let invalid = platform_error(&config, service_error(Code::InvalidArgument), "deploying");
        assert!(matches!(invalid, PlatformError::Other(_)));
    }
}
