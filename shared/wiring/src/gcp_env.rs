//! The Google Cloud adapters, built from a function's environment as `infra/run.tf` sets it
//! (the list is `infra/environment.json`). Each function asks only for the adapters it uses, so
//! it needs only their variables; whatever is missing is named all at once at start.
//!
//! Endpoint overrides point the clients at emulators and fakes: `FIRESTORE_EMULATOR_HOST`,
//! `PUBSUB_EMULATOR_HOST` and `STORAGE_EMULATOR_HOST` as Google's tools name them, and
//! `RUNWAY_SECRETMANAGER_ENDPOINT`, `RUNWAY_CLOUDBUILD_ENDPOINT`, `RUNWAY_ARTIFACTREGISTRY_ENDPOINT`,
//! `RUNWAY_CLOUDRUN_ENDPOINT`, `RUNWAY_IAP_ENDPOINT`, `RUNWAY_IAM_ENDPOINT`,
//! `RUNWAY_IAP_KEYS_URL` and `RUNWAY_OIDC_KEYS_URL` for the rest. A client with an override
//! sends no credentials.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;
use url::Url;

use runway_core::adapters::{Adapters, HookSweep, Keeping, Need, Timeouts};
use runway_core::config::{Env, Policy};
use runway_core::domain::{
    Access, AppName, Branch, CommitSha, HookId, PrivateTargets, RepoAllowlist, RepoUrl,
};
use runway_core::limits::{HookSources, RateLimits};
use runway_core::ports::{
    Forge, ForgeError, HookDelivery, PullState, ReleaseReport, Repository, SourceArchive, Webhook,
};
use runway_core::ports::{Retention, Topic};
use runway_github::{GitHubAuth, GitHubConfig, GitHubForge, GitHubMeta};
use runway_http::health::Probe;

use runway_gcp::{
    CloudBuildBuilder, CloudBuildConfig, CloudLogging, CloudLoggingConfig, CloudRunConfig,
    CloudRunPlatform, FirestoreConfig, FirestoreStore, IapConfig, IapIdentity, OidcConfig,
    OidcIdentity, PubSubConfig, PubSubQueue, SecretManagerConfig, SecretManagerStore, SourceLimits,
};

/// The project and region every function is configured with.
#[derive(Clone, Debug)]
pub struct GcpEnv {
    /// `GOOGLE_CLOUD_PROJECT`.
    pub project: String,
    /// `RUNWAY_REGION`: where Runway's own builds and images live.
    pub region: String,
}

/// Reads `what`'s variables into `T`, or names every missing one.
/// `RUNWAY_APP_ACCESS` (`public`, the default, or `private`) and `RUNWAY_APP_VIEWERS` (for a
/// private default): who may open an app whose submit does not say.
fn default_access(env: &mut Env) -> Access {
    let mode = env.or("RUNWAY_APP_ACCESS", "public");
    let viewers = env.or("RUNWAY_APP_VIEWERS", "");
    Access::parse(&mode, [viewers.as_str()]).unwrap_or_else(|error| {
        env.problem(format!(
            "RUNWAY_APP_ACCESS and RUNWAY_APP_VIEWERS are not valid: {error}"
        ));
        Access::Public
    })
}

/// `RUNWAY_ALLOWED_REPOS`: the GitHub owners (`acme/*`) and repositories (`acme/tool`) anyone
/// behind IAP may deploy. Required: Runway's credential reads more than any user should deploy.
fn allowed_repos(env: &mut Env) -> RepoAllowlist {
    let listed = env.required("RUNWAY_ALLOWED_REPOS");
    RepoAllowlist::parse(listed.split(',').filter(|entry| !entry.trim().is_empty())).unwrap_or_else(
        |error| {
            env.problem(format!("RUNWAY_ALLOWED_REPOS is not valid: {error}"));
            RepoAllowlist::parse([]).expect("an empty list")
        },
    )
}

/// `RUNWAY_KEEP_DELIVERIES_DAYS` (default 30): how long webhook deliveries are kept. Every
/// function with a store reads it, so that whichever records a delivery stamps it with the same
/// expiry (infra: `delivery_retention_days`).
fn keep_deliveries_for(env: &mut Env) -> chrono::Duration {
    let default = Retention::DEFAULT.deliveries_for.num_days();
    let days: u32 = env.parse_or("RUNWAY_KEEP_DELIVERIES_DAYS", default as u32);
    if days == 0 {
        env.problem(
            "RUNWAY_KEEP_DELIVERIES_DAYS is 0; it must be at least 1 (a delivery kept no time \
             could not say what a push did)",
        );
    }
    chrono::Duration::days(i64::from(days.max(1)))
}

/// `RUNWAY_GITHUB_API`, when set: GitHub Enterprise Server's API, or the tests' fake.
fn github_api(env: &mut Env) -> Option<Url> {
    let api = env.optional("RUNWAY_GITHUB_API")?;
    api.parse()
        .map_err(|error| env.problem(format!("RUNWAY_GITHUB_API is not a URL: {error}")))
        .ok()
}

fn read<T>(what: &str, build: impl FnOnce(&mut Env) -> T) -> anyhow::Result<T> {
    let mut env = Env::new();
    let value = build(&mut env);
    env.finish(what)?;
    Ok(value)
}

fn endpoint_from_host(host: Option<String>) -> Option<String> {
    host.map(|host| {
        if host.contains("://") {
            host
        } else {
            format!("http://{host}")
        }
    })
}

impl GcpEnv {
    /// Reads every variable `needs` require, naming all that are missing or invalid.
    pub fn check(&self, what: &str, needs: &[Need]) -> anyhow::Result<()> {
        let mut env = Env::new();
        for need in needs {
            match need {
                Need::Store => drop(self.store_config(&mut env)),
                Need::Queue => drop(self.queue_config(&mut env)),
                Need::Secrets => drop(self.secrets_config(&mut env)),
                Need::Forge => drop(self.forge_config(&mut env)),
                Need::Builder => drop(self.builder_config(&mut env)),
                Need::Platform => drop(self.platform_config(&mut env)),
                Need::RuntimeLog => drop(self.logging_config(&mut env)),
                Need::Users => drop(self.iap_config(&mut env)),
                Need::Pushers => drop(self.oidc_config(&mut env)),
                Need::Policy => drop(self.policy_config(&mut env)),
                Need::Timeouts => drop(self.timeouts_config(&mut env)),
                Need::WebhookUrl => drop(env.required("RUNWAY_WEBHOOK_URL")),
                Need::WebhookSecret => drop(env.required("RUNWAY_WEBHOOK_SECRET")),
                Need::RateLimits => drop(self.rate_limits_config(&mut env)),
            }
        }
        env.finish(what)?;
        Ok(())
    }

    pub fn from_env() -> anyhow::Result<Self> {
        read("the function", |env| Self {
            project: env.required("GOOGLE_CLOUD_PROJECT"),
            region: env.required("RUNWAY_REGION"),
        })
    }

    fn store_config(&self, env: &mut Env) -> FirestoreConfig {
        FirestoreConfig {
            project: self.project.clone(),
            database: env.or("RUNWAY_FIRESTORE_DATABASE", "(default)"),
            emulator: env.optional("FIRESTORE_EMULATOR_HOST"),
            keep_deliveries_for: keep_deliveries_for(env),
        }
    }

    pub async fn store(&self) -> anyhow::Result<FirestoreStore> {
        let config = read("the Firestore store", |env| self.store_config(env))?;
        Ok(FirestoreStore::connect(&config).await?)
    }

    fn queue_config(&self, env: &mut Env) -> PubSubConfig {
        {
            let mut config = PubSubConfig::new(&self.project);
            config.deploy_topic = env.or("RUNWAY_DEPLOY_TOPIC", &config.deploy_topic);
            config.notify_topic = env.or("RUNWAY_NOTIFY_TOPIC", &config.notify_topic);
            config.emulator = endpoint_from_host(env.optional("PUBSUB_EMULATOR_HOST"));
            config
        }
    }

    pub async fn queue(&self) -> anyhow::Result<PubSubQueue> {
        let config = read("the Pub/Sub queue", |env| self.queue_config(env))?;
        Ok(PubSubQueue::connect(config).await?)
    }

    fn secrets_config(&self, env: &mut Env) -> SecretManagerConfig {
        SecretManagerConfig {
            project: self.project.clone(),
            endpoint: env.optional("RUNWAY_SECRETMANAGER_ENDPOINT"),
        }
    }

    pub async fn secrets(&self) -> anyhow::Result<SecretManagerStore> {
        let config = read("the Secret Manager store", |env| self.secrets_config(env))?;
        Ok(SecretManagerStore::connect(config).await?)
    }

    /// GitHub, with a token or as a GitHub App.
    fn forge_config(&self, env: &mut Env) -> GitHubConfig {
        {
            let token = env.optional("RUNWAY_GITHUB_TOKEN");
            let app_id = env.optional("RUNWAY_GITHUB_APP_ID");
            let auth = match (token, app_id) {
                (Some(token), None) => GitHubAuth::Token(SecretString::from(token)),
                (None, Some(app_id)) => GitHubAuth::App {
                    app_id: app_id.parse().unwrap_or_else(|_| {
                        env.problem("RUNWAY_GITHUB_APP_ID is not a number");
                        0
                    }),
                    private_key: SecretString::from(env.required("RUNWAY_GITHUB_APP_KEY")),
                    installation_id: env.optional("RUNWAY_GITHUB_APP_INSTALLATION").and_then(
                        |id| {
                            id.parse().ok().or_else(|| {
                                env.problem("RUNWAY_GITHUB_APP_INSTALLATION is not a number");
                                None
                            })
                        },
                    ),
                },
                (Some(_), Some(_)) => {
                    env.problem("set RUNWAY_GITHUB_TOKEN or RUNWAY_GITHUB_APP_ID, not both");
                    GitHubAuth::Token(SecretString::from(String::new()))
                }
                (None, None) => {
                    env.problem(
                        "GitHub credentials are not set: RUNWAY_GITHUB_TOKEN, or \
                         RUNWAY_GITHUB_APP_ID and RUNWAY_GITHUB_APP_KEY",
                    );
                    GitHubAuth::Token(SecretString::from(String::new()))
                }
            };
            let mut config = GitHubConfig::new(auth);
            if let Some(api) = github_api(env) {
                config.api_base = api;
            }
            config
        }
    }

    /// The rate limits; with deliveries taken from GitHub's hook addresses alone, also where
    /// GitHub's API is (`RUNWAY_GITHUB_API`), to ask it for them.
    fn rate_limits_config(&self, env: &mut Env) -> (RateLimits, Option<Url>) {
        let limits = RateLimits::from_env(env);
        let meta = (limits.hook_sources == HookSources::GitHub).then(|| {
            github_api(env).unwrap_or_else(|| {
                Url::parse(GitHubConfig::DEFAULT_API_BASE).expect("a valid constant URL")
            })
        });
        (limits, meta)
    }

    pub fn forge(&self) -> anyhow::Result<GitHubForge> {
        let config = read("the GitHub forge", |env| self.forge_config(env))?;
        GitHubForge::new(config)
    }

    /// Cloud Build. `forge` fetches the code; `status` and `cleanup`, which only read builds,
    /// pass `None`.
    fn builder_config(&self, env: &mut Env) -> CloudBuildConfig {
        {
            let build_endpoint = env.optional("RUNWAY_CLOUDBUILD_ENDPOINT");
            let storage_endpoint = endpoint_from_host(env.optional("STORAGE_EMULATOR_HOST"));
            CloudBuildConfig {
                project: self.project.clone(),
                location: self.region.clone(),
                source_bucket: env.required("RUNWAY_SOURCE_BUCKET"),
                image_repo: env.required("RUNWAY_IMAGE_REPO"),
                logs_bucket: env.required("RUNWAY_LOGS_BUCKET"),
                service_account: env.optional("RUNWAY_BUILD_SERVICE_ACCOUNT").map(|email| {
                    if email.starts_with("projects/") {
                        email
                    } else {
                        format!("projects/{}/serviceAccounts/{email}", self.project)
                    }
                }),
                anonymous: build_endpoint.is_some() || storage_endpoint.is_some(),
                registry_endpoint: env.optional("RUNWAY_ARTIFACTREGISTRY_ENDPOINT"),
                build_endpoint,
                storage_endpoint,
                timeout: Duration::from_secs(env.parse_or("RUNWAY_BUILD_TIMEOUT_SECS", 1200)),
                source_limits: SourceLimits {
                    max_bytes: env
                        .parse_or::<u64>(
                            "RUNWAY_MAX_SOURCE_MB",
                            SourceLimits::DEFAULT_MAX_BYTES >> 20,
                        )
                        .saturating_mul(1 << 20),
                },
            }
        }
    }

    pub async fn builder(
        &self,
        forge: Option<Arc<dyn Forge>>,
    ) -> anyhow::Result<CloudBuildBuilder> {
        let config = read("the Cloud Build builder", |env| self.builder_config(env))?;
        let forge = forge.unwrap_or_else(|| Arc::new(NoForge));
        Ok(CloudBuildBuilder::new(config, forge).await?)
    }

    fn platform_config(&self, env: &mut Env) -> CloudRunConfig {
        {
            let mut config = CloudRunConfig::new(
                self.project.clone(),
                env.required("RUNWAY_PROJECT_NUMBER"),
                env.list("RUNWAY_REGIONS", &self.region),
            );
            config.name_prefix = env.or("RUNWAY_NAME_PREFIX", "runway");
            config.iam_endpoint = env.optional("RUNWAY_IAM_ENDPOINT");
            config.secret_manager_endpoint = env.optional("RUNWAY_SECRETMANAGER_ENDPOINT");
            // Less than the push's ack deadline it runs in (infra/run.tf: deploy_wait).
            config.operation_timeout = Duration::from_secs(env.parse_or(
                "RUNWAY_DEPLOY_WAIT_SECS",
                config.operation_timeout.as_secs(),
            ));
            config.max_instances = env.parse_or("RUNWAY_MAX_INSTANCES", config.max_instances);
            config.public_access = env.parse_or("RUNWAY_PUBLIC_ACCESS", config.public_access);
            config.endpoint = env.optional("RUNWAY_CLOUDRUN_ENDPOINT");
            config.iap_endpoint = env.optional("RUNWAY_IAP_ENDPOINT");
            config.anonymous = config.endpoint.is_some();
            config
        }
    }

    pub async fn platform(&self) -> anyhow::Result<CloudRunPlatform> {
        let config = read("the Cloud Run platform", |env| self.platform_config(env))?;
        CloudRunPlatform::new(config).await
    }

    /// `RUNWAY_LOG_VIEW` (the log view to read, else the whole project),
    /// `RUNWAY_LOGGING_ENDPOINT` (tests: the fake), `RUNWAY_LOG_FOLLOW_SECS` (default 5).
    fn logging_config(&self, env: &mut Env) -> CloudLoggingConfig {
        let mut config = CloudLoggingConfig::new(self.project.clone());
        if let Some(view) = env.optional("RUNWAY_LOG_VIEW") {
            config.resource = view;
        }
        config.endpoint = env.optional("RUNWAY_LOGGING_ENDPOINT");
        config.anonymous = config.endpoint.is_some();
        config.follow_every = Duration::from_secs(
            env.parse_or("RUNWAY_LOG_FOLLOW_SECS", config.follow_every.as_secs()),
        );
        config
    }

    /// The apps' runtime log: their services' entries in Cloud Logging.
    pub async fn runtime_log(&self) -> anyhow::Result<CloudLogging> {
        let config = read("the apps' runtime log", |env| self.logging_config(env))?;
        CloudLogging::new(config).await
    }

    /// Who calls `submit` and `status`: the user IAP signed in.
    fn iap_config(&self, env: &mut Env) -> IapConfig {
        {
            let mut config = IapConfig::new(
                env.required("RUNWAY_IAP_AUDIENCE"),
                env.list("RUNWAY_ADMINS", ""),
            );
            if let Some(url) = env.optional("RUNWAY_IAP_KEYS_URL") {
                config.keys_url = url;
            }
            config
        }
    }

    pub fn iap(&self) -> anyhow::Result<IapIdentity> {
        let config = read("IAP verification", |env| self.iap_config(env))?;
        Ok(IapIdentity::new(config))
    }

    /// Who calls `worker` and `cleanup`: Pub/Sub push or Cloud Scheduler, as one service account.
    fn oidc_config(&self, env: &mut Env) -> OidcConfig {
        {
            let mut config = OidcConfig::new(
                env.required("RUNWAY_OIDC_AUDIENCE"),
                env.required("RUNWAY_INVOKER_SERVICE_ACCOUNT"),
            );
            if let Some(url) = env.optional("RUNWAY_OIDC_KEYS_URL") {
                config.keys_url = url;
            }
            config
        }
    }

    pub fn oidc(&self) -> anyhow::Result<OidcIdentity> {
        let config = read("OIDC verification", |env| self.oidc_config(env))?;
        Ok(OidcIdentity::new(config))
    }

    /// What users may ask for: the app regions allowed (the first is the default).
    fn policy_config(&self, env: &mut Env) -> Policy {
        let allowed_regions = env.list("RUNWAY_REGIONS", &self.region);
        Policy {
            default_region: allowed_regions.first().cloned().unwrap_or_default(),
            allowed_regions,
            allow_local_repos: false,
            // Runway's services are `${name_prefix}-submit` & co. (infra/run.tf).
            reserved_prefix: format!("{}-", env.or("RUNWAY_NAME_PREFIX", "runway")),
            default_access: default_access(env),
            allowed_repos: Some(allowed_repos(env)),
        }
    }

    pub fn policy(&self) -> anyhow::Result<Policy> {
        read("the deploy policy", |env| self.policy_config(env))
    }

    /// `RUNWAY_STALE_SECS` (default 600) and `RUNWAY_DEPLOY_TIMEOUT_SECS` (default 900: Cloud
    /// Run's operation wait is 10 minutes, so a deploy past 15 is not coming back).
    fn timeouts_config(&self, env: &mut Env) -> Timeouts {
        Timeouts {
            stale_after: Duration::from_secs(env.parse_or("RUNWAY_STALE_SECS", 600)),
            deploy: Duration::from_secs(env.parse_or("RUNWAY_DEPLOY_TIMEOUT_SECS", 900)),
            // Cloud Scheduler's period (infra: cleanup_every_minutes), and each repository's
            // hooks listed once an hour: ~1,000 repositories cost 1,000 of a token's 5,000
            // requests an hour, not 6,000.
            hook_sweep: HookSweep {
                run_every: Duration::from_secs(env.parse_or("RUNWAY_CLEANUP_EVERY_SECS", 600)),
                repo_every: Duration::from_secs(env.parse_or("RUNWAY_HOOK_SWEEP_SECS", 3600)),
            },
            // The builds and dead letters are Google's to prune (infra/); the store is ours.
            keep: Keeping {
                store: Retention::new(
                    keep_deliveries_for(env),
                    env.parse_or("RUNWAY_KEEP_RELEASES", Retention::DEFAULT.releases_kept),
                ),
                gone_repos: Duration::from_secs(env.parse_or(
                    "RUNWAY_GONE_REPO_GRACE_SECS",
                    Keeping::default().gone_repos.as_secs(),
                )),
                ..Keeping::default()
            },
        }
    }

    /// The adapters `needs` name, connected, and the probes `/ready` runs for them. Reads every
    /// variable first (`check`), so a start with several missing names them all.
    pub async fn adapters(
        &self,
        what: &str,
        needs: &[Need],
    ) -> anyhow::Result<(Adapters, Vec<Probe>)> {
        self.check(what, needs)?;
        let mut adapters = Adapters::default();
        let mut probes = Vec::new();
        let needs_forge = needs.contains(&Need::Forge);
        adapters.console_url = self.console_url()?;
        adapters.private_targets = self.private_targets()?;
        for need in needs {
            match need {
                Need::Store => {
                    let store = self.store().await?;
                    probes.push(probe(
                        "firestore",
                        &store,
                        |s| async move { s.ping().await },
                    ));
                    adapters.store = Some(Arc::new(store));
                }
                Need::Queue => {
                    let queue = self.queue().await?;
                    probes.push(probe("pubsub", &queue, |q| async move {
                        q.check(Topic::DeployRequests).await
                    }));
                    adapters.queue = Some(Arc::new(queue));
                }
                Need::Secrets => {
                    let secrets = self.secrets().await?;
                    probes.push(probe("secret-manager", &secrets, |s| async move {
                        s.check().await
                    }));
                    adapters.secrets = Some(Arc::new(secrets));
                }
                Need::Forge => adapters.forge = Some(Arc::new(self.forge()?)),
                // Built after the loop: the builder fetches code through the forge.
                Need::Builder => {}
                Need::Platform => adapters.platform = Some(Arc::new(self.platform().await?)),
                Need::RuntimeLog => {
                    adapters.runtime_log = Some(Arc::new(self.runtime_log().await?))
                }
                Need::Users => adapters.users = Some(Arc::new(self.iap()?)),
                Need::Pushers => adapters.pushers = Some(Arc::new(self.oidc()?)),
                Need::Policy => adapters.policy = Some(self.policy()?),
                Need::Timeouts => {
                    adapters.timeouts = Some(read("the timeouts", |env| self.timeouts_config(env))?)
                }
                Need::WebhookUrl => adapters.webhook_url = Some(self.webhook_url()?),
                Need::WebhookSecret => adapters.webhook_secret = Some(self.webhook_secret()?),
                Need::RateLimits => {
                    let (limits, meta) =
                        read("the rate limits", |env| self.rate_limits_config(env))?;
                    if let Some(api) = meta {
                        adapters.hook_sources = Some(Arc::new(GitHubMeta::new(api)?));
                    }
                    adapters.rate_limits = Some(limits);
                }
            }
        }
        if needs.contains(&Need::Builder) {
            // `status` only reads builds and holds no GitHub credentials.
            let forge = adapters.forge.clone().filter(|_| needs_forge);
            adapters.builder = Some(Arc::new(self.builder(forge).await?));
        }
        Ok((adapters, probes))
    }

    /// `RUNWAY_WEBHOOK_URL`: where GitHub delivers pushes (the `github-webhook` service).
    pub fn webhook_url(&self) -> anyhow::Result<String> {
        read("the webhook URL", |env| env.required("RUNWAY_WEBHOOK_URL"))
    }

    /// `RUNWAY_CONSOLE_URL`, when set: the console's address (`https://CONSOLE_DOMAIN`), which
    /// the releases Runway reports on GitHub link to.
    pub fn console_url(&self) -> anyhow::Result<Option<String>> {
        read("the console URL", |env| {
            let url = env.optional("RUNWAY_CONSOLE_URL")?;
            match url::Url::parse(&url) {
                Ok(parsed) if matches!(parsed.scheme(), "https" | "http") => {
                    Some(url.trim_end_matches('/').to_owned())
                }
                _ => {
                    env.problem(format!(
                        "RUNWAY_CONSOLE_URL is {url:?}, not an http(s) URL such as \
                         https://runway.example.com"
                    ));
                    None
                }
            }
        })
    }

    /// `RUNWAY_NOTIFY_PRIVATE_TARGETS=allow`: notification targets may be on private networks
    /// (a chat server inside the VPC). Refused by default: anyone who may deploy could
    /// otherwise make Runway post inside its network.
    pub fn private_targets(&self) -> anyhow::Result<PrivateTargets> {
        read("the notification targets", |env| {
            match env.optional("RUNWAY_NOTIFY_PRIVATE_TARGETS").as_deref() {
                None | Some("refuse") => PrivateTargets::Refused,
                Some("allow") => PrivateTargets::Allowed,
                Some(other) => {
                    env.problem(format!(
                        "RUNWAY_NOTIFY_PRIVATE_TARGETS is {other:?}: use allow or refuse"
                    ));
                    PrivateTargets::Refused
                }
            }
        })
    }

    /// `RUNWAY_WEBHOOK_SECRET`: the key GitHub signs pushes with.
    pub fn webhook_secret(&self) -> anyhow::Result<SecretString> {
        read("the webhook secret", |env| {
            SecretString::from(env.required("RUNWAY_WEBHOOK_SECRET"))
        })
    }
}

/// The forge of a function that only reads builds and never fetches code.
struct NoForge;

impl NoForge {
    fn refuse() -> ForgeError {
        ForgeError::Other(anyhow::anyhow!(
            "this function reads builds only and has no GitHub credentials"
        ))
    }
}

#[async_trait]
impl Forge for NoForge {
    async fn repository(&self, _: &RepoUrl) -> Result<Repository, ForgeError> {
        Err(Self::refuse())
    }
    async fn resolve_commit(&self, _: &RepoUrl, _: &Branch) -> Result<CommitSha, ForgeError> {
        Err(Self::refuse())
    }
    async fn checkout(&self, _: &RepoUrl, _: &CommitSha, _: &Path) -> Result<(), ForgeError> {
        Err(Self::refuse())
    }
    async fn archive(&self, _: &RepoUrl, _: &CommitSha) -> Result<SourceArchive, ForgeError> {
        Err(Self::refuse())
    }
    async fn ensure_webhook(
        &self,
        _: &RepoUrl,
        _: &str,
        _: &SecretString,
    ) -> Result<HookId, ForgeError> {
        Err(Self::refuse())
    }
    async fn delete_webhook(&self, _: &RepoUrl, _: &HookId) -> Result<(), ForgeError> {
        Err(Self::refuse())
    }
    async fn webhooks(&self, _: &RepoUrl) -> Result<Vec<Webhook>, ForgeError> {
        Err(Self::refuse())
    }
    async fn hook_deliveries(
        &self,
        _: &RepoUrl,
        _: &HookId,
    ) -> Result<Vec<HookDelivery>, ForgeError> {
        Err(Self::refuse())
    }
    async fn branches(&self, _: &RepoUrl) -> Result<Vec<Branch>, ForgeError> {
        Err(Self::refuse())
    }
    async fn has_file(&self, _: &RepoUrl, _: &Branch, _: &str) -> Result<bool, ForgeError> {
        Err(Self::refuse())
    }
    async fn report(&self, _: &RepoUrl, _: &ReleaseReport) -> Result<(), ForgeError> {
        Err(Self::refuse())
    }
    async fn pull_request(&self, _: &RepoUrl, _: u64) -> Result<PullState, ForgeError> {
        Err(Self::refuse())
    }
    async fn comment_on_pull(
        &self,
        _: &RepoUrl,
        _: u64,
        _: &AppName,
        _: &str,
    ) -> Result<(), ForgeError> {
        Err(Self::refuse())
    }
}

/// A `/ready` check that calls `check` on a clone of `adapter`.
fn probe<A, F, Fut, E>(name: &'static str, adapter: &A, check: F) -> Probe
where
    A: Clone + Send + Sync + 'static,
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let adapter = adapter.clone();
    Probe::new(name, move || check(adapter.clone()))
}
