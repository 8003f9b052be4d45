//! `ImageBuilder` without containers: the "image" is a folder holding the checkout at the exact
//! commit and a virtualenv made by `uv` with the system Python. Like Cloud Build, `start` returns
//! at once and the build's end is published on `Topic::BuildEvents` in Cloud Build's own
//! notification format.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::process::Command;

use super::pid_file::{reap_orphans, record_pid};
use runway_core::domain::{AppName, BuildId, CommitSha};
use runway_core::install::{Install, SourceFiles};
use runway_core::messages::{
    BuildNotification, BuildResults, BuiltImage, CloudBuildStatus, FailureInfo,
};
use runway_core::ports::{
    BuildError, BuildOrigin, BuildRequest, BuildStatus, Forge, IdleBuild, ImageBuilder, Queue,
    StartedBuild, Topic,
};
use runway_core::python::PythonRequest;

#[derive(Clone, Debug)]
pub struct UvBuilderConfig {
    /// Builds go in `<dir>/<build id>/`.
    pub dir: PathBuf,
    pub uv: PathBuf,
    /// The interpreter every app gets (no downloads: a user's app must not change Python
    /// under them).
    pub python: String,
    pub uv_cache_dir: PathBuf,
    /// Log URLs are `<base>/api/builds/<id>/log`.
    pub public_url: String,
    pub timeout: Duration,
    /// How long a build's log is kept once no release needs the build
    /// (`RUNWAY_KEEP_BUILD_LOGS_DAYS`, as the logs bucket's lifecycle on Google Cloud).
    pub keep_logs: Duration,
    /// Whether missing `packages.txt` packages are installed with apt-get (when runway runs as
    /// root): `RUNWAY_INSTALL_PACKAGES`.
    pub install_packages: bool,
    /// Whether uv may download the Python an app asks for when this machine lacks it:
    /// `RUNWAY_PYTHON_DOWNLOADS`.
    pub python_downloads: bool,
}

/// A build younger than this is never pruned: its end may not be recorded on its release yet.
const PRUNE_GRACE: Duration = Duration::from_secs(3600);

#[derive(Clone)]
pub struct UvBuilder {
    config: Arc<UvBuilderConfig>,
    forge: Arc<dyn Forge>,
    notifications: Arc<dyn Queue>,
    running: Arc<Mutex<HashSet<String>>>,
    /// The task of each build started here, so deleting its app can stop it first.
    tasks: Arc<Mutex<HashMap<String, tokio::task::JoinHandle<()>>>>,
}

/// What a build folder says about itself.
#[derive(Serialize, Deserialize)]
struct BuildMeta {
    app: String,
    release_id: String,
    commit: String,
}

#[derive(Serialize, Deserialize)]
struct BuildResult {
    status: String,
    detail: String,
}

impl UvBuilder {
    /// Creates the builder, first stopping builds a `runway` killed before it left running (their
    /// pid files say which): their releases are built again, and two builds of one release must
    /// not run at once.
    pub fn new(
        config: UvBuilderConfig,
        forge: Arc<dyn Forge>,
        notifications: Arc<dyn Queue>,
    ) -> Self {
        reap_orphans(&config.dir);
        Self {
            config: Arc::new(config),
            forge,
            notifications,
            running: Arc::default(),
            tasks: Arc::default(),
        }
    }

    /// Stops the app's builds that still run and waits until they have let go of their
    /// folders: uv killed (its child is dropped), nothing more written by this process.
    async fn stop_builds_of(&self, app: &AppName) {
        let app = app.as_str();
        // Build ids are `{app}-{12 hex}`; app names hold `-` too, so the length decides.
        let of_app = |id: &str| {
            id.len() == app.len() + 13 && id.starts_with(app) && id.as_bytes()[app.len()] == b'-'
        };
        let stopping: Vec<(String, tokio::task::JoinHandle<()>)> = {
            let mut tasks = self.tasks.lock().expect("build tasks");
            let ids: Vec<String> = tasks.keys().filter(|id| of_app(id)).cloned().collect();
            ids.into_iter()
                .filter_map(|id| tasks.remove(&id).map(|task| (id, task)))
                .collect()
        };
        for (id, task) in stopping {
            task.abort();
            let _ = task.await;
            self.running.lock().expect("running builds").remove(&id);
            tracing::info!(build = %id, "stopped the build of a deleted app");
        }
    }

    fn build_dir(&self, build_id: &str) -> Result<PathBuf, BuildError> {
        // Build ids come back from the outside (status URLs); keep them to our own alphabet.
        if build_id.is_empty()
            || !build_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(BuildError::NotFound(format!("no build {build_id:?}")));
        }
        Ok(self.config.dir.join(build_id))
    }

    async fn run(
        &self,
        request: &BuildRequest,
        dir: &Path,
        log: &mut tokio::fs::File,
    ) -> Result<(), String> {
        let src = dir.join("src");
        let venv = dir.join("venv");
        let started = Instant::now();
        note(
            log,
            &format!("checking out {} at {}", request.repo, request.commit),
        )
        .await;
        self.forge
            .checkout(&request.repo, &request.commit, &src)
            .await
            .map_err(|e| format!("checkout failed: {e}"))?;
        if !src.join(request.main_file.as_path()).is_file() {
            return Err(format!(
                "the main file {} is not in commit {}",
                request.main_file,
                request.commit.short()
            ));
        }
        let files = SourceFiles::nearest(&request.main_file, |name| {
            std::fs::read_to_string(src.join(name)).ok()
        });
        // The Python the app asks for, found on this machine by uv (or fetched, where allowed);
        // else the configured interpreter.
        let minor = files.python.minor()?;
        let interpreter = match &files.python {
            PythonRequest::Version { from, .. } => {
                note(log, &format!("Python 3.{minor}, as {from} asks")).await;
                format!("3.{minor}")
            }
            _ => self.config.python.clone(),
        };
        note(log, &format!("creating a virtualenv with {interpreter}")).await;
        let created = self
            .uv(
                log,
                &src,
                &[
                    "venv",
                    "--quiet",
                    "--python",
                    &interpreter,
                    &venv.display().to_string(),
                ],
            )
            .await;
        if let (Err(_), PythonRequest::Version { from, .. }) = (&created, &files.python)
            && !self.config.python_downloads
        {
            return Err(format!(
                "the app asks for Python 3.{minor} ({from}), which is not on this machine, and \
                 runway does not download interpreters: install it (uv python install 3.{minor}, \
                 or your system's package), or set RUNWAY_PYTHON_DOWNLOADS=1, then redeploy"
            ));
        }
        created?;
        let python = venv.join("bin/python").display().to_string();
        // Each build has its own virtualenv; the cache is uv's downloads. Cleared, uv checks
        // every package with the index again instead of trusting what it has.
        let refresh: &[&str] = if request.clear_cache {
            note(
                log,
                "build cache cleared: every package is checked with the index again",
            )
            .await;
            &["--refresh"]
        } else {
            &[]
        };
        // The Dockerfile for Cloud Build follows the same plan; `packages.txt` is the one thing
        // a local build cannot honour (it would need root and Debian). The dependency files are
        // installed from their folder (a monorepo app's own), as the Dockerfile does.
        self.system_packages(log, &src, &files).await?;
        if src.join("Dockerfile").is_file() {
            note(
                log,
                "NOTE: this repository has its own Dockerfile. Cloud Build builds with it; this \
                 machine has no container engine Runway uses, so the app is built with uv from \
                 its Python dependency files instead, and what the Dockerfile adds (system \
                 packages, another command) is not here",
            )
            .await;
        }
        let deps = src.join(&files.dir);
        let mut wants_streamlit = false;
        match files.install() {
            Install::Locked => {
                note(log, &format!("installing from {}", files.path("uv.lock"))).await;
                let args = ["sync", "--frozen", "--no-dev", "--no-install-project"];
                self.uv(log, &deps, &[&args[..], refresh].concat()).await?;
            }
            Install::Requirements { file, .. } => {
                wants_streamlit = file == "requirements.txt" && !files.requirements_name_streamlit;
                note(log, &format!("installing from {}", files.path(file))).await;
                let args = ["pip", "install", "--python", &python, "-r", file];
                self.uv(log, &deps, &[&args[..], refresh].concat()).await?;
            }
            Install::Nothing => {
                note(
                    log,
                    "no uv.lock, requirements.txt or pyproject.toml: installing streamlit only",
                )
                .await;
                wants_streamlit = true;
            }
        }
        if wants_streamlit || !venv.join("bin/streamlit").exists() {
            note(log, "adding streamlit, which the app does not pin").await;
            let args = ["pip", "install", "--python", &python, "streamlit"];
            self.uv(log, &src, &[&args[..], refresh].concat()).await?;
        }
        note(
            log,
            &format!("build finished in {:.1}s", started.elapsed().as_secs_f64()),
        )
        .await;
        Ok(())
    }

    /// The Debian packages `packages.txt` asks for: noted when installed, installed when
    /// allowed, else the build fails naming them.
    async fn system_packages(
        &self,
        log: &mut tokio::fs::File,
        src: &Path,
        files: &SourceFiles,
    ) -> Result<(), String> {
        let Some(path) = files.packages_path() else {
            return Ok(());
        };
        let text = std::fs::read_to_string(src.join(&path)).unwrap_or_default();
        let names = crate::packages::names(&text)?;
        if names.is_empty() {
            return Ok(());
        }
        let listed = names.join(", ");
        let missing = match crate::packages::missing(&names).await {
            crate::packages::Found::Missing(missing) => missing,
            crate::packages::Found::Unknown => {
                note(
                    log,
                    &format!(
                        "NOTE: {path} asks for the Debian packages {listed}; this machine has no \
                         dpkg, so Runway can neither check nor install them. If the app needs \
                         them, install their equivalents yourself"
                    ),
                )
                .await;
                return Ok(());
            }
        };
        if missing.is_empty() {
            note(log, &format!("{path}: {listed} installed on this machine")).await;
            return Ok(());
        }
        let wanting = missing.join(" ");
        if !crate::packages::may_install(self.config.install_packages) {
            return Err(format!(
                "{path} asks for {}, which this machine lacks. Install them (sudo apt-get \
                 install {wanting}) and redeploy, or let runway install them: run it as root \
                 with RUNWAY_INSTALL_PACKAGES=1",
                missing.join(", ")
            ));
        }
        note(
            log,
            &format!("installing {wanting} from {path} with apt-get"),
        )
        .await;
        log.flush().await.ok();
        crate::packages::install(&missing, log).await
    }

    /// The build's own folder (`BUILDS/ID`), which holds `src/`, `venv/` and `uv.pid`, for a
    /// `cwd` anywhere in its checkout.
    fn build_root<'a>(&self, cwd: &'a Path) -> &'a Path {
        cwd.ancestors()
            .find(|dir| dir.parent() == Some(self.config.dir.as_path()))
            .unwrap_or(cwd)
    }

    async fn uv(&self, log: &mut tokio::fs::File, cwd: &Path, args: &[&str]) -> Result<(), String> {
        log.flush().await.ok();
        let (stdout, stderr) = crate::into_log(log).await?;
        let venv = self.build_root(cwd).join("venv");
        let mut command = Command::new(&self.config.uv);
        crate::clean_env(&mut command, crate::BUILD_ENV);
        let mut child = command
            .args(args)
            .current_dir(cwd)
            .env("UV_CACHE_DIR", &self.config.uv_cache_dir)
            .env(
                "UV_PYTHON_DOWNLOADS",
                if self.config.python_downloads {
                    "automatic"
                } else {
                    "never"
                },
            )
            .env("UV_PROJECT_ENVIRONMENT", &venv)
            .env("UV_NO_PROGRESS", "1")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("could not run uv ({}): {e}", self.config.uv.display()))?;
        // A runway killed mid-build cannot stop it: the next one does, by this file.
        let pid_file = self.build_root(cwd).join("uv.pid");
        if let Some(pid) = child.id() {
            record_pid(&pid_file, pid);
        }
        let status = child.wait().await;
        let _ = std::fs::remove_file(&pid_file);
        let status = status.map_err(|e| format!("uv did not finish: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("`uv {}` failed ({status})", args.join(" ")))
        }
    }

    async fn finish(
        &self,
        request: &BuildRequest,
        build_id: &str,
        dir: &Path,
        began: chrono::DateTime<Utc>,
        outcome: Result<(), String>,
    ) {
        let (status, detail) = match outcome {
            Ok(()) => ("SUCCESS", String::new()),
            Err(detail) if detail.starts_with("timed out") => ("TIMEOUT", detail),
            Err(detail) => ("FAILURE", detail),
        };
        let result = BuildResult {
            status: status.into(),
            detail: detail.clone(),
        };
        if let Err(error) = std::fs::write(
            dir.join("result.json"),
            serde_json::to_vec(&result).expect("a result serializes"),
        ) {
            tracing::error!(%error, build_id, "could not record a build result");
        }
        self.running
            .lock()
            .expect("running builds")
            .remove(build_id);
        let mut notification = self.notification(build_id, status, &detail, dir);
        notification.tags = vec![BuildNotification::release_tag(&request.release_id)];
        notification.start_time = Some(began.to_rfc3339());
        notification.finish_time = Some(Utc::now().to_rfc3339());
        if let Err(error) = self
            .notifications
            .publish(
                Topic::BuildEvents,
                notification.to_message(request.app.as_str()),
            )
            .await
        {
            // Cleanup's poll fallback picks the result up from result.json.
            tracing::error!(%error, build_id, "could not publish a build notification");
        }
    }

    fn notification(
        &self,
        build_id: &str,
        status: &str,
        detail: &str,
        dir: &Path,
    ) -> BuildNotification {
        let status = CloudBuildStatus::parse(status);
        let success = status == CloudBuildStatus::Success;
        BuildNotification {
            id: build_id.to_owned(),
            status,
            log_url: Some(self.log_url(build_id)),
            results: success.then(|| BuildResults {
                images: vec![BuiltImage {
                    name: dir.display().to_string(),
                    digest: String::new(),
                }],
            }),
            failure_info: (!success).then(|| FailureInfo {
                kind: "USER_BUILD_STEP".into(),
                detail: detail.to_owned(),
            }),
            status_detail: None,
            ..Default::default()
        }
    }

    /// How long ago the build in `dir` ended (or, with no result, began), if that is longer
    /// than `PRUNE_GRACE`: a build younger than that may not have its end recorded yet.
    fn idle_for(&self, dir: &Path) -> Option<Duration> {
        let changed = ["result.json", "meta.json"]
            .iter()
            .find_map(|file| std::fs::metadata(dir.join(file)).ok()?.modified().ok())?;
        changed.elapsed().ok().filter(|age| *age >= PRUNE_GRACE)
    }

    fn log_url(&self, build_id: &str) -> String {
        format!("{}/api/builds/{build_id}/log", self.config.public_url)
    }
}

/// Removes the folder `path` and all in it; `false` if there was none.
fn remove(path: &Path) -> Result<bool, BuildError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(BuildError::Other(
            anyhow::Error::from(error).context(format!("removing {}", path.display())),
        )),
    }
}

async fn note(log: &mut tokio::fs::File, line: &str) {
    let _ = log.write_all(format!("==> {line}\n").as_bytes()).await;
}

#[async_trait]
impl ImageBuilder for UvBuilder {
    async fn start(&self, request: BuildRequest) -> Result<StartedBuild, BuildError> {
        let build_id = format!(
            "{}-{}",
            request.app,
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let dir = self.build_dir(&build_id)?;
        std::fs::create_dir_all(&dir).context("creating the build folder")?;
        let meta = BuildMeta {
            app: request.app.to_string(),
            release_id: request.release_id.to_string(),
            commit: request.commit.to_string(),
        };
        std::fs::write(
            dir.join("meta.json"),
            serde_json::to_vec(&meta).context("meta")?,
        )
        .context("writing the build's meta.json")?;
        let mut log = tokio::fs::File::create(dir.join("log.txt"))
            .await
            .context("creating the build log")?;
        self.running
            .lock()
            .expect("running builds")
            .insert(build_id.clone());
        let started = StartedBuild {
            log_url: self.log_url(&build_id),
            build_id: BuildId::new(build_id.clone()),
        };
        let builder = self.clone();
        let task = tokio::spawn(async move {
            let began = Utc::now();
            let timeout = builder.config.timeout;
            let outcome =
                match tokio::time::timeout(timeout, builder.run(&request, &dir, &mut log)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(format!("timed out after {}s", timeout.as_secs())),
                };
            if let Err(detail) = &outcome {
                note(&mut log, &format!("BUILD FAILED: {detail}")).await;
            }
            let _ = log.flush().await;
            builder
                .finish(&request, &build_id, &dir, began, outcome)
                .await;
        });
        let mut tasks = self.tasks.lock().expect("build tasks");
        tasks.retain(|_, task| !task.is_finished());
        tasks.insert(started.build_id.to_string(), task);
        drop(tasks);
        Ok(started)
    }

    async fn status(&self, build_id: &BuildId) -> Result<BuildStatus, BuildError> {
        let build_id = build_id.as_str();
        let dir = self.build_dir(build_id)?;
        if let Ok(bytes) = std::fs::read(dir.join("result.json")) {
            let result: BuildResult = serde_json::from_slice(&bytes).context("result.json")?;
            return Ok(if result.status == "SUCCESS" {
                BuildStatus::Succeeded {
                    image: dir.display().to_string(),
                }
            } else {
                BuildStatus::Failed {
                    status: result.status,
                    detail: result.detail,
                }
            });
        }
        if self
            .running
            .lock()
            .expect("running builds")
            .contains(build_id)
        {
            Ok(BuildStatus::Running)
        } else {
            Ok(BuildStatus::Lost)
        }
    }

    async fn log(&self, build_id: &BuildId) -> Result<String, BuildError> {
        let build_id = build_id.as_str();
        let path = self.build_dir(build_id)?.join("log.txt");
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Err(BuildError::NotFound(format!("no build {build_id}")))
            }
            Err(error) => Err(BuildError::Other(error.into())),
        }
    }

    async fn log_from(
        &self,
        build_id: &BuildId,
        from: u64,
        max: usize,
    ) -> Result<Vec<u8>, BuildError> {
        let build_id = build_id.as_str();
        let path = self.build_dir(build_id)?.join("log.txt");
        let mut log = match tokio::fs::File::open(&path).await {
            Ok(log) => log,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(BuildError::NotFound(format!("no build {build_id}")));
            }
            Err(error) => return Err(BuildError::Other(error.into())),
        };
        log.seek(std::io::SeekFrom::Start(from))
            .await
            .context("seeking in the build log")?;
        let mut piece = Vec::new();
        log.take(max as u64)
            .read_to_end(&mut piece)
            .await
            .context("reading the build log")?;
        Ok(piece)
    }

    async fn origin(&self, build_id: &BuildId) -> Result<Option<BuildOrigin>, BuildError> {
        // Written by `start` in runway's own data dir, before the build id was handed out.
        let Ok(bytes) = std::fs::read(self.build_dir(build_id.as_str())?.join("meta.json")) else {
            return Ok(None);
        };
        let meta: BuildMeta = serde_json::from_slice(&bytes).context("meta.json")?;
        Ok(CommitSha::parse(&meta.commit)
            .ok()
            .map(|commit| BuildOrigin {
                release_id: meta.release_id.into(),
                commit,
            }))
    }

    /// A build loses its checkout and its environment (nearly all of its size) once it is an
    /// hour old and no release needs it; its log and records stay until `keep_logs` has passed,
    /// so a failed release's log can still be read, and then its folder goes.
    async fn idle_builds(&self) -> Result<Vec<IdleBuild>, BuildError> {
        let Ok(entries) = std::fs::read_dir(&self.config.dir) else {
            return Ok(Vec::new());
        };
        let running = self.running.lock().expect("running builds").clone();
        let mut idle = Vec::new();
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if running.contains(&name) || self.build_dir(&name).is_err() {
                continue;
            }
            let dir = entry.path();
            let Some(age) = self.idle_for(&dir) else {
                continue;
            };
            let holds_more = dir.join("src").exists() || dir.join("venv").exists();
            if !holds_more && age < self.config.keep_logs {
                continue;
            }
            let meta: Option<BuildMeta> = std::fs::read(dir.join("meta.json"))
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok());
            // A folder with no app is no build of Runway's to judge: left alone.
            if let Some(app) = meta.and_then(|meta| AppName::parse(&meta.app).ok()) {
                idle.push(IdleBuild {
                    id: BuildId::new(name),
                    app,
                });
            }
        }
        Ok(idle)
    }

    async fn free(&self, build: &BuildId) -> Result<bool, BuildError> {
        let dir = self.build_dir(build.as_str())?;
        if self
            .running
            .lock()
            .expect("running builds")
            .contains(build.as_str())
        {
            return Ok(false);
        }
        let Some(age) = self.idle_for(&dir) else {
            return Ok(false);
        };
        let whole = age >= self.config.keep_logs;
        // A checkout and its environment are thousands of files: removed off the async threads
        // (`runway` serves the apps' traffic on them).
        tokio::task::spawn_blocking(move || {
            if whole {
                remove(&dir)
            } else {
                // Both, whatever the first says.
                Ok(remove(&dir.join("src"))? | remove(&dir.join("venv"))?)
            }
        })
        .await
        .map_err(|error| BuildError::Other(anyhow::anyhow!("freeing a build: {error}")))?
    }

    /// Stops the app's running builds first, then removes every build folder of the app. A
    /// process the build started may still be dying as removal begins (uv's own children are
    /// not its process group's), so a folder that does not go at once is tried again for a
    /// few seconds.
    async fn delete_app(&self, app: &AppName) -> Result<(), BuildError> {
        self.stop_builds_of(app).await;
        let Ok(entries) = std::fs::read_dir(&self.config.dir) else {
            return Ok(());
        };
        let mut doomed = Vec::new();
        for entry in entries.flatten() {
            let meta: Option<BuildMeta> = std::fs::read(entry.path().join("meta.json"))
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok());
            if meta.is_some_and(|meta| meta.app == app.as_str()) {
                doomed.push(entry.path());
            }
        }
        tokio::task::spawn_blocking(move || {
            for dir in doomed {
                let mut attempt = 0;
                loop {
                    match remove(&dir) {
                        Ok(_) => break,
                        Err(_) if attempt < 50 => {
                            attempt += 1;
                            std::thread::sleep(std::time::Duration::from_millis(100));
                        }
                        Err(error) => return Err(error),
                    }
                }
            }
            Ok(())
        })
        .await
        .map_err(|error| BuildError::Other(anyhow::anyhow!("removing builds: {error}")))?
    }
}
