//! Opens every embedded adapter on one data dir: what `runway` runs on, and what a function
//! binary runs on with `RUNWAY_BACKEND=embedded`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::SecretString;

use super::process_platform::ProcessPlatformConfig;
use super::proxy::Routes;
use super::{
    FileSecretStore, GitForge, LocalIdentity, ProcessPlatform, PushToken, SqliteQueue, SqliteStore,
    UvBuilder, UvBuilderConfig, write_private,
};
use runway_core::adapters::{Adapters, HookSweep, Keeping, Timeouts};
use runway_core::clock::{self, Clock};
use runway_core::config::{self, ConfigError, Env, Policy};
use runway_core::domain::PrivateTargets;
use runway_core::limits::{HookSources, RateLimits};
use runway_core::ports::Retention;

/// In the data dir: the address `runway` listens on now, for the local hooks to find it.
const ADDRESS_FILE: &str = "runway.addr";

/// Configuration of the embedded mode, from the environment.
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    /// `RUNWAY_DATA_DIR`: database, builds, app logs, secrets (default `./.runway`).
    pub data_dir: PathBuf,
    /// `RUNWAY_LISTEN`: where `runway` listens (default `127.0.0.1:8080`; port 0 picks one).
    pub listen: SocketAddr,
    /// `RUNWAY_ALLOWED_HOSTS`: names besides loopback's that the API answers to, as a `Host`
    /// header carries them (`runway.lan:8080`); any other is refused (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// `RUNWAY_USER`: the local user, an admin (default `$USER@localhost`).
    pub user: String,
    /// `RUNWAY_UV`: the uv executable (default `uv` on the PATH).
    pub uv: PathBuf,
    /// `RUNWAY_PYTHON`: the interpreter apps get (default `python3`).
    pub python: String,
    /// `RUNWAY_UV_CACHE_DIR`: uv's cache, shared by builds (default `<data>/uv-cache`).
    pub uv_cache_dir: PathBuf,
    /// `RUNWAY_REGIONS`: regions the form offers (default `local`).
    pub regions: Vec<String>,
    /// `RUNWAY_HEALTH_TIMEOUT_SECS` (default 90).
    pub health_timeout: Duration,
    /// `RUNWAY_HEALTH_CHECK_SECS`: how often a live app is asked `/_stcore/health`; one that
    /// misses three answers in a row is restarted (default 10).
    pub health_check_every: Duration,
    /// `RUNWAY_DRAIN_SECS`: how long a replaced revision keeps serving what is open to it (a
    /// Streamlit page's websocket, its session with it) before it is stopped (default 30).
    pub drain: Duration,
    /// `RUNWAY_BUILD_TIMEOUT_SECS` (default 900).
    pub build_timeout: Duration,
    /// `RUNWAY_KEEP_BUILD_LOGS_DAYS`: how long a build no release needs keeps its log (default
    /// 90, as the logs bucket on Google Cloud); its checkout and environment go after an hour.
    pub keep_build_logs: Duration,
    /// `RUNWAY_INSTALL_PACKAGES=1`: a build installs the `packages.txt` packages this machine
    /// lacks with apt-get, when runway runs as root (default off: the build fails naming them).
    pub install_packages: bool,
    /// `RUNWAY_PYTHON_DOWNLOADS=1`: uv may download the Python an app asks for
    /// (`.python-version`, `runtime.txt`, `requires-python`) when this machine lacks it (default
    /// off: such a build fails naming the version).
    pub python_downloads: bool,
    /// `RUNWAY_CLEANUP_INTERVAL_SECS`: how often `runway` runs cleanup (default 60).
    pub cleanup_interval: Duration,
    /// `RUNWAY_STALE_SECS`: how long a release may sit queued, building or deploying before
    /// cleanup acts on it (default 120).
    pub stale_after: Duration,
    /// The rate limits and where a request's source address is read (`RateLimits::from_env`).
    pub rate_limits: RateLimits,
    /// What cleanup keeps: `RUNWAY_KEEP_DELIVERIES_DAYS` (30), `RUNWAY_KEEP_RELEASES` (an app's
    /// newest 100), `RUNWAY_KEEP_IMAGES` (the builds of an app's newest 10 live releases) and
    /// `RUNWAY_KEEP_DEAD_LETTERS_DAYS` (7).
    pub keep: Keeping,
}

impl EmbeddedConfig {
    /// How long a release may stay deploying before cleanup marks it failed. Locally a deploy
    /// is a process start and its health wait: never shorter than that wait (and a margin),
    /// or a deploy that would succeed is failed while it waits.
    pub fn deploy_timeout(&self) -> Duration {
        self.stale_after
            .max(self.health_timeout + Duration::from_secs(30))
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        let data_dir = PathBuf::from(config::var_or("RUNWAY_DATA_DIR", ".runway"));
        let user = std::env::var("USER").unwrap_or_else(|_| "local".into());
        let mut env = Env::new();
        let rate_limits = RateLimits::from_env(&mut env);
        // Pushes reach a laptop's Runway from its own git hooks, on loopback: GitHub's hook
        // addresses are for Runway on Google Cloud, which asks GitHub for them.
        if rate_limits.hook_sources == HookSources::GitHub {
            env.problem(
                "RUNWAY_WEBHOOK_SOURCES=github is for Runway on Google Cloud; the embedded \
                 backend receives pushes from its own git hooks (leave it unset or any)",
            );
        }
        env.finish("the embedded backend")?;
        Ok(Self {
            listen: config::parse_or("RUNWAY_LISTEN", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            allowed_hosts: config::list_or("RUNWAY_ALLOWED_HOSTS", ""),
            user: config::var_or("RUNWAY_USER", &format!("{user}@localhost")),
            uv: PathBuf::from(config::var_or("RUNWAY_UV", "uv")),
            python: config::var_or("RUNWAY_PYTHON", "python3"),
            uv_cache_dir: PathBuf::from(config::var_or(
                "RUNWAY_UV_CACHE_DIR",
                &data_dir.join("uv-cache").display().to_string(),
            )),
            regions: config::list_or("RUNWAY_REGIONS", "local"),
            health_timeout: Duration::from_secs(config::parse_or(
                "RUNWAY_HEALTH_TIMEOUT_SECS",
                90,
            )?),
            health_check_every: Duration::from_secs(
                config::parse_or("RUNWAY_HEALTH_CHECK_SECS", 10u64)?.max(1),
            ),
            drain: Duration::from_secs(config::parse_or("RUNWAY_DRAIN_SECS", 30)?),
            build_timeout: Duration::from_secs(config::parse_or("RUNWAY_BUILD_TIMEOUT_SECS", 900)?),
            keep_build_logs: Duration::from_secs(
                config::parse_or("RUNWAY_KEEP_BUILD_LOGS_DAYS", 90u64)? * 86_400,
            ),
            install_packages: config::parse_or("RUNWAY_INSTALL_PACKAGES", 0u8)? == 1,
            python_downloads: config::parse_or("RUNWAY_PYTHON_DOWNLOADS", 0u8)? == 1,
            cleanup_interval: Duration::from_secs(config::parse_or(
                "RUNWAY_CLEANUP_INTERVAL_SECS",
                60,
            )?),
            stale_after: Duration::from_secs(config::parse_or("RUNWAY_STALE_SECS", 120)?),
            rate_limits,
            keep: Keeping {
                store: Retention::new(
                    chrono::Duration::days(
                        config::parse_or(
                            "RUNWAY_KEEP_DELIVERIES_DAYS",
                            Retention::DEFAULT.deliveries_for.num_days(),
                        )?
                        .max(1),
                    ),
                    config::parse_or("RUNWAY_KEEP_RELEASES", Retention::DEFAULT.releases_kept)?,
                ),
                images: config::parse_or("RUNWAY_KEEP_IMAGES", Keeping::default().images)?,
                dead_letters_for: Duration::from_secs(
                    config::parse_or(
                        "RUNWAY_KEEP_DEAD_LETTERS_DAYS",
                        Keeping::default().dead_letters_for.as_secs() / 86_400,
                    )? * 86_400,
                ),
                gone_repos: Duration::from_secs(config::parse_or(
                    "RUNWAY_GONE_REPO_GRACE_SECS",
                    Keeping::default().gone_repos.as_secs(),
                )?),
            },
            data_dir,
        })
    }
}

/// Every embedded adapter, opened on one data dir.
#[derive(Clone)]
pub struct Embedded {
    pub config: EmbeddedConfig,
    /// `http://127.0.0.1:PORT`, where the API, the ingress and the build logs are.
    pub public_url: String,
    pub clock: Arc<dyn Clock>,
    pub store: Arc<SqliteStore>,
    pub queue: SqliteQueue,
    pub forge: Arc<GitForge>,
    pub builder: Arc<UvBuilder>,
    pub platform: ProcessPlatform,
    pub routes: Routes,
    pub secrets: Arc<FileSecretStore>,
    pub identity: Arc<LocalIdentity>,
    /// Guards the worker and cleanup endpoints (Pub/Sub's and Scheduler's OIDC, locally).
    pub push_token: PushToken,
    pub webhook_secret: SecretString,
    pub policy: Policy,
}

impl Embedded {
    /// Opens the adapters for a server listening on `public_port`.
    pub fn open(config: EmbeddedConfig, public_port: u16) -> anyhow::Result<Self> {
        let data = &config.data_dir;
        std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
        // Secrets, logs, the database and the apps' code live here: no one else's to read.
        std::fs::set_permissions(data, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .with_context(|| format!("making {} private", data.display()))?;
        let data = data.canonicalize()?;
        let public_url = format!("http://127.0.0.1:{public_port}");
        let database = data.join("runway.db");
        let clock = clock::system();
        // One connection for both, on its own thread: the store's and the queue's writes go
        // into one transaction at a time instead of waiting on each other's lock.
        let connection = crate::database::Database::open(&database)?;
        let store = Arc::new(SqliteStore::on(connection.clone()).with_clock(clock.clone()));
        let queue = SqliteQueue::on(connection)?;
        let runway_bin = std::env::current_exe().context("locating the runway executable")?;
        let forge = Arc::new(GitForge::new(runway_bin).following(data.join(ADDRESS_FILE)));
        let builder = Arc::new(UvBuilder::new(
            UvBuilderConfig {
                dir: data.join("builds"),
                uv: config.uv.clone(),
                python: config.python.clone(),
                uv_cache_dir: config.uv_cache_dir.clone(),
                public_url: public_url.clone(),
                timeout: config.build_timeout,
                keep_logs: config.keep_build_logs,
                install_packages: config.install_packages,
                python_downloads: config.python_downloads,
            },
            forge.clone(),
            Arc::new(queue.clone()),
        ));
        let routes = Routes::default();
        let platform = ProcessPlatform::new(
            ProcessPlatformConfig {
                dir: data.join("apps"),
                public_port,
                health_timeout: config.health_timeout,
                health_check_every: config.health_check_every,
                drain: config.drain,
            },
            routes.clone(),
        )?;
        let secrets = Arc::new(FileSecretStore::new(data.join("secrets"))?);
        let webhook_secret = webhook_secret(&data.join("webhook-secret"))?;
        let policy = Policy {
            default_region: config
                .regions
                .first()
                .cloned()
                .unwrap_or_else(|| "local".into()),
            allowed_regions: config.regions.clone(),
            allow_local_repos: true,
            reserved_prefix: "runway-".into(),
            // Apps are served on loopback, to this machine's user only.
            default_access: runway_core::domain::Access::Public,
            // The laptop's own Runway deploys whatever its user (the only one) can read.
            allowed_repos: None,
        };
        Ok(Self {
            identity: Arc::new(LocalIdentity {
                email: config.user.clone(),
            }),
            push_token: PushToken::random("runway-queue@localhost"),
            config,
            public_url,
            clock,
            store,
            queue,
            forge,
            builder,
            platform,
            routes,
            secrets,
            webhook_secret,
            policy,
        })
    }

    /// Writes where this runway listens into the data dir, where the local hooks look for
    /// it (see [`GitForge::following`]). `runway` calls it at start; a function binary on the
    /// embedded backend does not, its address being one function's only.
    pub fn announce_address(&self) -> anyhow::Result<()> {
        let file = self.config.data_dir.canonicalize()?.join(ADDRESS_FILE);
        write_private(&file, self.public_url.as_bytes())
            .with_context(|| format!("writing {}", file.display()))
    }

    pub fn webhook_url(&self) -> String {
        format!("{}/github/webhook", self.public_url)
    }

    /// Every port, wired: what each function's `State::new` takes.
    pub fn adapters(&self) -> Adapters {
        Adapters {
            clock: self.clock.clone(),
            store: Some(self.store.clone()),
            queue: Some(Arc::new(self.queue.clone())),
            secrets: Some(self.secrets.clone()),
            forge: Some(self.forge.clone()),
            builder: Some(self.builder.clone()),
            platform: Some(Arc::new(self.platform.clone())),
            runtime_log: Some(Arc::new(self.platform.runtime_log())),
            users: Some(self.identity.clone()),
            pushers: Some(Arc::new(self.push_token.clone())),
            policy: Some(self.policy.clone()),
            webhook_url: Some(self.webhook_url()),
            console_url: Some(self.public_url.clone()),
            webhook_secret: Some(self.webhook_secret.clone()),
            timeouts: Some(Timeouts {
                stale_after: self.config.stale_after,
                deploy: self.config.deploy_timeout(),
                // Local hooks cost nothing to list.
                hook_sweep: HookSweep::every_run(self.config.cleanup_interval),
                keep: self.config.keep,
            }),
            rate_limits: Some(self.config.rate_limits),
            hook_sources: None,
            // The laptop's own receivers are what a local Runway posts to.
            private_targets: PrivateTargets::Allowed,
        }
    }
}

/// The install-wide webhook secret: made once, kept 0600 in the data dir.
fn webhook_secret(path: &std::path::Path) -> anyhow::Result<SecretString> {
    if let Ok(secret) = std::fs::read_to_string(path) {
        return Ok(SecretString::from(secret.trim().to_owned()));
    }
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    write_private(path, secret.as_bytes()).context("writing the webhook secret")?;
    Ok(SecretString::from(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cleanup fails a release stuck deploying; locally a deploy waits for the app's health
    /// check, so a long health wait must not be cut short by a shorter staleness.
    #[test]
    fn a_deploy_may_take_its_whole_health_wait_before_cleanup_fails_it() {
        let mut config = EmbeddedConfig::from_env().unwrap();
        config.stale_after = Duration::from_secs(120);
        config.health_timeout = Duration::from_secs(200);
        assert!(config.deploy_timeout() > config.health_timeout);
        config.health_timeout = Duration::from_secs(10);
        assert_eq!(config.deploy_timeout(), config.stale_after);
    }
}
