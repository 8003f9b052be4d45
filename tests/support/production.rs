//! Runway as it runs on Google Cloud, on one machine: the five function binaries as separate
//! processes, each with exactly the environment `infra/environment.json` (and so `run.tf`) gives
//! its Cloud Run service, plus the endpoint overrides that point the clients at:
//!
//! - Google's Firestore and Pub/Sub emulators, with real push subscriptions delivering to
//!   `worker` (through `PushRelay`, which adds the OIDC token the emulator leaves out);
//! - fake-gcs-server and drongo for Cloud Storage and Secret Manager;
//! - the fakes in `tests/support` for Cloud Build (which publishes to the emulator's
//!   `cloud-builds` topic), Cloud Run Admin and GitHub;
//! - test-held Google keys for IAP assertions and OIDC tokens;
//! - the console's load balancer with IAP (`load_balancer.rs`, routing by `infra/url_map.json`)
//!   in front of submit, status and github-webhook, as on Google Cloud: one origin for the
//!   pages, the API and GitHub's deliveries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::emulators;
use crate::fake_cloud_build::FakeCloudBuild;
use crate::fake_cloud_logging::FakeCloudLogging;
use crate::fake_cloud_run::{FakeCloudRun, PROJECT_NUMBER};
use crate::fake_github::FakeGitHub;
use crate::google_keys::{GoogleKeys, PushRelay};
use crate::load_balancer::LoadBalancer;
use crate::outage::Relay;

pub const REGION: &str = "europe-west1";
/// The other region apps may run in (`RUNWAY_REGIONS`).
pub const OTHER_REGION: &str = "us-central1";
pub const ADMIN: &str = "admin@example.com";
pub const GITHUB_TOKEN: &str = "ghp_production_test_token";
/// Who IAP lets through to the console (`iap_members`).
pub const IAP_MEMBERS: &str = "domain:example.com";
const FUNCTIONS: [&str; 5] = ["submit", "status", "github-webhook", "worker", "cleanup"];

/// One function binary in its own process, killed when dropped.
pub struct Function {
    pub name: &'static str,
    pub url: String,
    /// Its `/metrics`, on a loopback port of its own as on Cloud Run (`RUNWAY_METRICS_PORT`).
    pub metrics_url: String,
    pub log: PathBuf,
    child: Child,
    /// Its whole environment, to start it again as Cloud Run starts a new instance.
    env: Vec<(String, String)>,
}

impl Function {
    fn spawn(name: &str, env: &[(String, String)], log: &Path) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        Command::new(function_bin(name))
            .env_clear()
            .envs(env.iter().map(|(key, value)| (key, value)))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {name}"))
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Production {
    pub project: String,
    pub keys: Arc<GoogleKeys>,
    pub github: FakeGitHub,
    pub cloud_build: FakeCloudBuild,
    pub cloud_run: FakeCloudRun,
    /// Where the fake Cloud Run writes what revisions print, and `status` reads it.
    pub logging: FakeCloudLogging,
    pub functions: BTreeMap<&'static str, Function>,
    /// The console's one origin: the pages, the API and the webhook.
    pub lb: LoadBalancer,
    /// The values each function's environment is drawn from.
    pub env: BTreeMap<String, String>,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    /// The functions reach Firestore and Pub/Sub through these, which a test may cut.
    pub firestore_link: Relay,
    pub pubsub_link: Relay,
    relay: PushRelay,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The audience IAP signs a backend service's assertions for (`RUNWAY_IAP_AUDIENCE`):
/// `/projects/NUMBER/global/backendServices/ID`.
pub fn iap_audience(function: &str) -> String {
    let id = match function {
        "submit" => "4311722019845317631",
        _ => "7926448611023570173",
    };
    format!("/projects/{PROJECT_NUMBER}/global/backendServices/{id}")
}

/// Whether the process `pid` runs (exists and is no zombie awaiting its parent's wait).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, fields) = stat.rsplit_once(')')?;
            fields.split_whitespace().next().map(|state| state != "Z")
        })
        .unwrap_or(false)
}

/// A function binary cargo built next to the tests.
pub fn function_bin(name: &str) -> PathBuf {
    crate::runway_bin().with_file_name(name)
}

/// The variables `infra/environment.json` gives `function` on Cloud Run.
fn cloud_run_variables(function: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/environment.json");
    let contract: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    ["plain", "secret"]
        .iter()
        .flat_map(|kind| contract[function][kind].as_array().unwrap().clone())
        .map(|name| name.as_str().unwrap().to_owned())
        .collect()
}

impl Production {
    pub async fn start() -> anyhow::Result<Self> {
        // A port `free_port` found can be taken by another test's process before the function
        // binds it; then the whole topology starts again on new ports (and a new project).
        let mut attempt = 1;
        loop {
            match Self::start_once().await {
                Err(error)
                    if attempt < 3 && format!("{error:#}").contains("Address already in use") =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn start_once() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let project = emulators::unique_project();
        let suffix = &project[3..15];
        let keys = GoogleKeys::start().await;
        let github = FakeGitHub::start().await?;
        github.accept_token(GITHUB_TOKEN);
        // GitHub's deliveries come from this machine here: the fake's own pings and the tests'
        // signed pushes. The ingress takes them from the addresses GitHub's meta lists only.
        github.set_hook_sources(&["127.0.0.0/8", "::1/128"]);
        let cloud_build =
            FakeCloudBuild::start(&project, &emulators::gcs(), &emulators::pubsub()).await?;
        let cloud_run = FakeCloudRun::start().await?;
        cloud_run.trust(keys.verifier());
        // Secret Manager's IAM policies are the fake's (drongo has none); the rest is drongo's.
        cloud_run.front(&emulators::secret_manager());
        let logging = FakeCloudLogging::start().await?;
        cloud_run.send_logs_to(logging.sink());

        let ports: BTreeMap<&str, u16> = FUNCTIONS.iter().map(|f| (*f, free_port())).collect();
        let url = |function: &str| format!("http://127.0.0.1:{}", ports[function]);
        let metrics_ports: BTreeMap<&str, u16> =
            FUNCTIONS.iter().map(|f| (*f, free_port())).collect();
        let (lb_listener, lb_url) = LoadBalancer::bind().await?;
        let source_bucket = format!("rw-src-{suffix}");
        let logs_bucket = format!("rw-logs-{suffix}");
        emulators::create_bucket(&project, &source_bucket).await;
        emulators::create_bucket(&project, &logs_bucket).await;
        let account = |name: &str| format!("{name}@{project}.iam.gserviceaccount.com");

        let env: BTreeMap<String, String> = [
            ("RUNWAY_BACKEND", "gcp".to_owned()),
            ("GOOGLE_CLOUD_PROJECT", project.clone()),
            ("RUNWAY_REGION", REGION.to_owned()),
            ("RUST_LOG", "info".to_owned()),
            ("RUNWAY_REGIONS", format!("{REGION},{OTHER_REGION}")),
            ("RUNWAY_ADMINS", ADMIN.to_owned()),
            ("RUNWAY_WEBHOOK_URL", format!("{lb_url}/github/webhook")),
            ("RUNWAY_CONSOLE_URL", lb_url.clone()),
            ("RUNWAY_WEBHOOK_SECRET", uuid::Uuid::new_v4().to_string()),
            ("RUNWAY_DEPLOY_TOPIC", "runway-deploy-requests".to_owned()),
            ("RUNWAY_NOTIFY_TOPIC", "runway-notifications".to_owned()),
            // The tests' chat services listen on loopback.
            ("RUNWAY_NOTIFY_PRIVATE_TARGETS", "allow".to_owned()),
            ("RUNWAY_GITHUB_API", github.api_base().to_string()),
            ("RUNWAY_GITHUB_TOKEN", GITHUB_TOKEN.to_owned()),
            ("RUNWAY_SOURCE_BUCKET", source_bucket),
            ("RUNWAY_LOGS_BUCKET", logs_bucket),
            (
                "RUNWAY_IMAGE_REPO",
                format!("{REGION}-docker.pkg.dev/{project}/runway-apps"),
            ),
            ("RUNWAY_BUILD_SERVICE_ACCOUNT", account("runway-app-build")),
            ("RUNWAY_MAX_INSTANCES", "2".to_owned()),
            ("RUNWAY_PROJECT_NUMBER", PROJECT_NUMBER.to_owned()),
            ("RUNWAY_PUBLIC_ACCESS", "all-users".to_owned()),
            ("RUNWAY_APP_ACCESS", "public".to_owned()),
            ("RUNWAY_APP_VIEWERS", String::new()),
            ("RUNWAY_ALLOWED_REPOS", "ada/*".to_owned()),
            // Cleanup polls a build whose notification is a second late, not ten minutes.
            ("RUNWAY_STALE_SECS", "1".to_owned()),
            // Every run looks at every repository's hooks (Terraform spreads them over an hour).
            ("RUNWAY_CLEANUP_EVERY_SECS", "600".to_owned()),
            ("RUNWAY_HOOK_SWEEP_SECS", "600".to_owned()),
            // An app whose repository is gone is removed two seconds after it was first seen so.
            ("RUNWAY_GONE_REPO_GRACE_SECS", "2".to_owned()),
            ("RUNWAY_DEPLOY_TIMEOUT_SECS", "900".to_owned()),
            // Terraform's defaults, and the load balancer's two X-Forwarded-For entries.
            ("RUNWAY_SUBMIT_CALLER_PER_MINUTE", "120".to_owned()),
            ("RUNWAY_WEBHOOK_APP_PER_MINUTE", "300".to_owned()),
            ("RUNWAY_WEBHOOK_SOURCE_PER_MINUTE", "3000".to_owned()),
            ("RUNWAY_TRUSTED_XFF_ENTRIES", "2".to_owned()),
            ("RUNWAY_WEBHOOK_SOURCES", "github".to_owned()),
            ("RUNWAY_KEEP_DELIVERIES_DAYS", "30".to_owned()),
            ("RUNWAY_KEEP_RELEASES", "100".to_owned()),
            (
                "RUNWAY_LOG_VIEW",
                format!("projects/{project}/locations/global/buckets/_Default/views/runway-apps"),
            ),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        let per_function = |function: &str| -> BTreeMap<&'static str, String> {
            match function {
                "submit" | "status" => {
                    BTreeMap::from([("RUNWAY_IAP_AUDIENCE", iap_audience(function))])
                }
                "worker" => BTreeMap::from([
                    ("RUNWAY_OIDC_AUDIENCE", url("worker")),
                    (
                        "RUNWAY_INVOKER_SERVICE_ACCOUNT",
                        account("runway-pubsub-push"),
                    ),
                ]),
                "cleanup" => BTreeMap::from([
                    ("RUNWAY_OIDC_AUDIENCE", url("cleanup")),
                    (
                        "RUNWAY_INVOKER_SERVICE_ACCOUNT",
                        account("runway-scheduler"),
                    ),
                ]),
                _ => BTreeMap::new(),
            }
        };
        // Where the clients go instead of Google: never part of a Cloud Run service's env.
        // Firestore and Pub/Sub through links a test can cut (an outage of either).
        let firestore_link = Relay::start(&emulators::firestore()).await?;
        let pubsub = emulators::pubsub();
        let pubsub_link = Relay::start(pubsub.trim_start_matches("http://")).await?;
        let overrides: BTreeMap<&str, String> = BTreeMap::from([
            ("FIRESTORE_EMULATOR_HOST", firestore_link.host()),
            (
                "PUBSUB_EMULATOR_HOST",
                format!("http://{}", pubsub_link.host()),
            ),
            ("STORAGE_EMULATOR_HOST", emulators::gcs()),
            ("RUNWAY_SECRETMANAGER_ENDPOINT", cloud_run.endpoint()),
            ("RUNWAY_IAM_ENDPOINT", cloud_run.endpoint()),
            ("RUNWAY_CLOUDBUILD_ENDPOINT", cloud_build.url().to_owned()),
            (
                "RUNWAY_ARTIFACTREGISTRY_ENDPOINT",
                cloud_build.url().to_owned(),
            ),
            ("RUNWAY_CLOUDRUN_ENDPOINT", cloud_run.endpoint()),
            ("RUNWAY_IAP_ENDPOINT", cloud_run.endpoint()),
            ("RUNWAY_LOGGING_ENDPOINT", logging.endpoint()),
            ("RUNWAY_IAP_KEYS_URL", keys.iap_keys_url.clone()),
            ("RUNWAY_OIDC_KEYS_URL", keys.oidc_keys_url.clone()),
        ]);

        // Pub/Sub as infra/pubsub.tf sets it up: the deploy and notification topics, and push
        // subscriptions from them and from Cloud Build's topic to the worker, with the push
        // service account's token.
        emulators::create_topic(&project, "runway-deploy-requests").await;
        emulators::create_topic(&project, "runway-notifications").await;
        let relay = PushRelay::start(
            url("worker"),
            keys.clone(),
            url("worker"),
            account("runway-pubsub-push"),
        )
        .await;
        emulators::create_push_subscription(
            &project,
            "runway-deploy-requests-worker",
            "runway-deploy-requests",
            &format!("{}/pubsub/deploy-requests", relay.url),
        )
        .await;
        emulators::create_push_subscription(
            &project,
            "runway-build-events-worker",
            "cloud-builds",
            &format!("{}/pubsub/build-events", relay.url),
        )
        .await;
        emulators::create_push_subscription(
            &project,
            "runway-notifications-worker",
            "runway-notifications",
            &format!("{}/pubsub/notifications", relay.url),
        )
        .await;

        let mut functions = BTreeMap::new();
        for function in FUNCTIONS {
            let mut function_env: Vec<(String, String)> = ["PATH", "HOME", "TMPDIR"]
                .into_iter()
                .filter_map(|name| Some((name.to_owned(), std::env::var(name).ok()?)))
                .collect();
            let mut specific = per_function(function);
            specific.insert("RUNWAY_METRICS_PORT", metrics_ports[function].to_string());
            for name in cloud_run_variables(function) {
                let value = specific
                    .get(name.as_str())
                    .cloned()
                    .or_else(|| env.get(&name).cloned());
                if let Some(value) = value {
                    function_env.push((name, value));
                }
            }
            function_env.extend(
                overrides
                    .iter()
                    .map(|(key, value)| (key.to_string(), value.to_string())),
            );
            function_env.push(("PORT".into(), ports[function].to_string()));
            let log = dir.path().join(format!("{function}.log"));
            let child = Function::spawn(function, &function_env, &log)?;
            functions.insert(
                function,
                Function {
                    name: function,
                    url: url(function),
                    metrics_url: format!("http://127.0.0.1:{}/metrics", metrics_ports[function]),
                    log,
                    child,
                    env: function_env,
                },
            );
        }
        let lb = LoadBalancer::serve(
            lb_listener,
            functions
                .values()
                .map(|f: &Function| (f.name.to_owned(), f.url.clone()))
                .collect(),
            ["submit", "status"]
                .map(|f| (f.to_owned(), iap_audience(f)))
                .into(),
            vec![IAP_MEMBERS.to_owned()],
            keys.clone(),
        )
        .await?;
        let production = Self {
            lb,
            project,
            keys,
            github,
            cloud_build,
            cloud_run,
            logging,
            functions,
            env,
            dir,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            firestore_link,
            pubsub_link,
            relay,
        };
        for function in production.functions.values() {
            production.wait_ready(function).await?;
        }
        Ok(production)
    }

    /// Waits until the function's `/ready` answers 200.
    async fn wait_ready(&self, function: &Function) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last: String;
        let log = || std::fs::read_to_string(&function.log).unwrap_or_default();
        loop {
            // A function that could not bind its port has exited, and whatever took the port
            // (another test's function) may answer `/ready` for it: only a running one counts.
            if !running(function.child.id()) {
                bail!(
                    "{} exited before it was ready; its log:\n{}",
                    function.name,
                    log()
                );
            }
            let ready = self
                .client
                .get(format!("{}/ready", function.url))
                .send()
                .await;
            match ready {
                Ok(response) if response.status().is_success() && running(function.child.id()) => {
                    return Ok(());
                }
                Ok(response) => last = response.text().await.unwrap_or_default(),
                Err(error) => last = error.to_string(),
            }
            if Instant::now() > deadline {
                bail!(
                    "{} never got ready ({last}); its log:\n{}",
                    function.name,
                    log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills `function`'s process with SIGKILL, mid-request if it is in one: an instance Cloud
    /// Run shuts down, or one out of memory.
    pub fn kill(&mut self, function: &str) {
        let function = self.functions.get_mut(function).expect("a function");
        let _ = function.child.kill();
        let _ = function.child.wait();
    }

    /// Starts `function` again, as a new instance, and waits until it is ready.
    pub async fn start_again(&mut self, function: &str) -> anyhow::Result<()> {
        self.kill(function);
        let entry = self.functions.get_mut(function).expect("a function");
        entry.child = Function::spawn(entry.name, &entry.env, &entry.log)?;
        self.wait_ready(&self.functions[function]).await
    }

    /// What `function` answers on its metrics port.
    pub async fn metrics(&self, function: &str) -> anyhow::Result<String> {
        let response = self
            .client
            .get(&self.functions[function].metrics_url)
            .send()
            .await?
            .error_for_status()?;
        Ok(response.text().await?)
    }

    pub fn url(&self, function: &str) -> &str {
        &self.functions[function].url
    }

    /// The Pub/Sub messages whose last push to the worker was not acknowledged, and the answer
    /// (`PushRelay::unacknowledged`). No dead-letter policy is set here: when the emulator gives
    /// up on a message of an ordered subscription (the deploy requests) its push threads die and
    /// it pushes nothing more, and on the others it backs off by its own rules, from half a
    /// minute to several. A message Runway never acknowledged is what Google's Pub/Sub would
    /// dead-letter.
    pub fn unacknowledged(&self) -> Vec<(String, u16)> {
        self.relay.unacknowledged()
    }

    /// Everything the five functions logged.
    pub fn logs(&self) -> String {
        self.functions
            .values()
            .map(|f| std::fs::read_to_string(&f.log).unwrap_or_default())
            .collect()
    }

    /// A script's request as `email` to the console's origin, for a path the load balancer
    /// sends to `function` (the test says which it means; a URL map that disagrees fails it).
    pub fn as_user(
        &self,
        method: reqwest::Method,
        function: &str,
        path: &str,
        email: &str,
    ) -> reqwest::RequestBuilder {
        let routed = self.lb.route(path.split('?').next().unwrap_or(path));
        assert_eq!(
            routed, function,
            "the load balancer sends {path} to {routed}"
        );
        self.client
            .request(method, format!("{}{path}", self.lb.url))
            .bearer_auth(self.lb.id_token(email))
    }

    /// The repository `ada/demo` on the fake GitHub, backed by a real one in `dir`: a Streamlit
    /// app ("Version one") in `app.py` with its `requirements.txt`. Returns it and its id.
    pub fn demo_repo(&self, dir: &Path) -> anyhow::Result<(crate::GitRepo, u64)> {
        let repo = crate::GitRepo::create(
            dir,
            &[
                ("app.py", &crate::streamlit_app("Version one")),
                ("requirements.txt", "streamlit\n"),
            ],
        )?;
        let id = self.github.add_repo("ada", "demo", &repo.bare);
        Ok((repo, id))
    }

    /// The secret GitHub signs `app`'s pushes with (derived from `RUNWAY_WEBHOOK_SECRET`).
    /// Cloud Scheduler's call to cleanup, with its OIDC token: the sweep's status and report.
    pub async fn sweep(&self) -> anyhow::Result<(u16, Value)> {
        let scheduler = format!("runway-scheduler@{}.iam.gserviceaccount.com", self.project);
        let token = self.keys.oidc_token(self.url("cleanup"), &scheduler);
        let response = self
            .client
            .post(format!("{}/cleanup/run", self.url("cleanup")))
            .bearer_auth(token)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    pub fn app_webhook_secret(&self, app: &str) -> String {
        let key = secrecy::SecretString::from(self.env["RUNWAY_WEBHOOK_SECRET"].clone());
        let app = runway_core::domain::AppName::parse(app).unwrap();
        secrecy::ExposeSecret::expose_secret(&runway_http::webhook::app_secret(&key, &app))
            .to_owned()
    }
}
