//! Helpers for the end-to-end tests: the real `runway` binary in a process of its own, real git
//! repositories pushed with `git push`, and an HTTP client that reaches `APP.localhost` names.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod browser;
pub mod emulators;
pub mod fake_chat;
pub mod fake_cloud_build;
pub mod fake_cloud_logging;
pub mod fake_cloud_run;
pub mod fake_github;
pub mod google_keys;
pub mod google_rest;
pub mod image_builder_contract;
pub mod load_balancer;
pub mod outage;
pub mod platform_contract;
pub mod production;
pub mod push_receiver;

use anyhow::{Context, bail};
use serde_json::Value;

/// A port's contract: every check run against every adapter. Each subject is an expression
/// (evaluated inside the generated `mod ADAPTER`, so its paths start with `super::`) that makes
/// a fresh subject; each check is an `async fn(&Subject)` returning `()` or
/// `anyhow::Result<()>`.
///
/// ```ignore
/// runway_tests::contract! {
///     subjects: [sqlite => super::sqlite().await, firestore => super::firestore().await],
///     checks: [round_trips, refuses_stale_writes],
/// }
/// ```
/// makes `sqlite::round_trips`, `firestore::round_trips`, … as tests.
#[macro_export]
macro_rules! contract {
    (subjects: [$($adapter:ident => $subject:expr),* $(,)?], checks: $checks:tt $(,)?) => {
        $( $crate::contract!(@adapter $adapter, $subject, $checks); )*
    };
    (@adapter $adapter:ident, $subject:expr, [$($check:ident),* $(,)?]) => {
        mod $adapter {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let subject = $subject;
                    $crate::Checked::passed(super::$check(&subject).await);
                }
            )*
        }
    };
}

/// A `UvBuilder` building under `dir` with the test uv and the cache the tests share,
/// announcing its ends on `notifications`.
pub fn uv_builder(
    dir: &Path,
    timeout: Duration,
    notifications: std::sync::Arc<dyn runway_core::ports::Queue>,
) -> runway_embedded::UvBuilder {
    runway_embedded::UvBuilder::new(
        runway_embedded::UvBuilderConfig {
            dir: dir.join("builds"),
            uv: uv_bin(),
            python: "python3".into(),
            uv_cache_dir: std::env::temp_dir().join("runway-test-uv-cache"),
            public_url: "http://127.0.0.1:1".into(),
            timeout,
            keep_logs: Duration::from_secs(90 * 86_400),
            install_packages: false,
            python_downloads: false,
        },
        std::sync::Arc::new(runway_embedded::GitForge::new("/usr/bin/true".into())),
        notifications,
    )
}

/// A push event's body as GitHub sends it (REST API version 2022-11-28, `push` webhook), with
/// every field GitHub documents for one commit, not only those Runway reads, so the ingress is
/// tested on what really arrives.
pub fn github_push_payload(
    repo_id: u64,
    full_name: &str,
    branch: &str,
    before: &str,
    after: &str,
) -> Value {
    let (owner, name) = full_name.split_once('/').unwrap_or(("octo", full_name));
    let html = format!("https://github.com/{full_name}");
    let person = serde_json::json!({
        "name": "Ada Lovelace", "email": "ada@example.com", "username": "ada",
    });
    let commit = serde_json::json!({
        "id": after, "tree_id": "f".repeat(40), "distinct": true, "message": "A change",
        "timestamp": "2026-11-29T12:00:00+00:00", "url": format!("{html}/commit/{after}"),
        "author": person, "committer": person,
        "added": [], "removed": [], "modified": ["app.py"],
    });
    serde_json::json!({
        "ref": format!("refs/heads/{branch}"),
        "before": before,
        "after": after,
        "created": false,
        "deleted": false,
        "forced": false,
        "base_ref": null,
        "compare": format!("{html}/compare/{}...{}", &before[..12.min(before.len())], &after[..12.min(after.len())]),
        "commits": [commit],
        "head_commit": commit,
        "repository": {
            "id": repo_id, "node_id": "R_kgDOAbc", "name": name, "full_name": full_name,
            "private": true,
            "owner": { "name": owner, "login": owner, "id": 1, "type": "Organization" },
            "html_url": html, "url": html, "default_branch": "main", "master_branch": "main",
            "pushed_at": 1_795_000_000, "created_at": 1_700_000_000,
            "visibility": "private", "fork": false, "archived": false,
        },
        "pusher": { "name": "ada", "email": "ada@example.com" },
        "sender": { "login": "ada", "id": 583231, "type": "User", "site_admin": false },
    })
}

/// A region by name, as stored records carry it.
pub fn region(name: &str) -> runway_core::domain::Region {
    runway_core::domain::Region::try_from(name.to_owned()).expect("a region name")
}

/// What a contract check may return.
pub trait Checked {
    fn passed(self);
}

impl Checked for () {
    fn passed(self) {}
}

impl Checked for anyhow::Result<()> {
    fn passed(self) {
        if let Err(error) = self {
            panic!("{error:#}");
        }
    }
}

/// The `runway` binary: `RUNWAY_BIN`, or the one cargo built next to this test.
pub fn runway_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("RUNWAY_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("the test's path");
    let dir = exe.parent().and_then(Path::parent).expect("target/debug");
    dir.join("runway")
}

/// uv, as `scripts/test` installed it.
pub fn uv_bin() -> PathBuf {
    std::env::var_os("RUNWAY_UV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/uv"))
}

/// A running `runway`, stopped (SIGTERM, as a person's Ctrl-C) when dropped.
pub struct Runway {
    child: Child,
    pub data_dir: PathBuf,
    pub base_url: String,
    pub port: u16,
    pub log: PathBuf,
    pub client: reqwest::Client,
}

/// In `runway`'s environment as a credential would be; no app process may inherit it.
pub const RUNWAYS_OWN_CREDENTIAL: &str = "ghp_runways-own-credential";

impl Runway {
    /// Starts `runway` on 127.0.0.1:0 with its data under `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(dir, &[])
    }

    /// Starts `runway` as [`Runway::start`] does, with `env` set on top. Its log goes on after
    /// what an earlier `runway` on `dir` wrote.
    pub fn start_with(dir: &Path, env: &[(String, String)]) -> anyhow::Result<Self> {
        let data_dir = dir.join("data");
        let log = dir.join("runway.log");
        let cache = std::env::temp_dir().join("runway-test-uv-cache");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut child = Command::new(runway_bin())
            .env("RUNWAY_LISTEN", "127.0.0.1:0")
            .env("RUNWAY_DATA_DIR", &data_dir)
            .env("RUNWAY_UV", uv_bin())
            .env("RUNWAY_UV_CACHE_DIR", cache)
            .env("RUNWAY_USER", "ada@example.com")
            .env("RUST_LOG", "info")
            // A credential of Runway's own: nothing it starts for an app may see it.
            .env("GITHUB_TOKEN", RUNWAYS_OWN_CREDENTIAL)
            .envs(env.iter().map(|(key, value)| (key, value)))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", runway_bin().display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().context("runway printed nothing")??;
        let base_url = first
            .strip_prefix("runway: listening on ")
            .with_context(|| format!("unexpected first line: {first}"))?
            .to_owned();
        std::thread::spawn(move || lines.for_each(drop));
        let port: u16 = base_url.rsplit(':').next().unwrap_or_default().parse()?;
        Ok(Self {
            child,
            data_dir,
            base_url,
            port,
            log,
            client: client(port),
        })
    }

    pub fn app_url(&self, app: &str) -> String {
        format!("http://{app}.localhost:{}", self.port)
    }

    /// The app's `/_stcore/health` through the proxy: (status, body).
    pub async fn health(&self, app: &str) -> anyhow::Result<(u16, String)> {
        let url = format!("{}/_stcore/health", self.app_url(app));
        let response = self.client.get(url).send().await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let response = self.client.post(self.url(path)).json(body).send().await?;
        Ok((response.status().as_u16(), response.json().await?))
    }

    pub async fn get_json(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let response = self.client.get(self.url(path)).send().await?;
        Ok((response.status().as_u16(), response.json().await?))
    }

    pub async fn status(&self, app: &str) -> anyhow::Result<Value> {
        let (code, body) = self.get_json(&format!("/api/apps/{app}")).await?;
        if code != 200 {
            bail!("status of {app}: {code} {body}");
        }
        Ok(body)
    }

    /// Submits `app` from `repo` with `secrets` and waits for its first release to go live.
    pub async fn deploy(
        &self,
        app: &str,
        repo: &GitRepo,
        main_file: &str,
        secrets: &str,
    ) -> anyhow::Result<Value> {
        let body = serde_json::json!({
            "repo_url": repo.url(),
            "main_file": main_file,
            "app_name": app,
            "secrets": secrets,
        });
        let (code, submitted) = self.post_json("/api/deployments", &body).await?;
        if code != 202 {
            bail!("submit answered {code}: {submitted}");
        }
        if submitted["status_url"] != format!("/api/apps/{app}") {
            bail!("unexpected status URL: {submitted}");
        }
        let id = submitted["release_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let release = self
            .wait_for_release(app, &id, Duration::from_secs(180))
            .await?;
        if release["state"] != "live" {
            bail!("the first release did not go live: {release:#}");
        }
        Ok(release)
    }

    /// Waits until `release_id` of `app` reaches a terminal state, and returns it.
    pub async fn wait_for_release(
        &self,
        app: &str,
        release_id: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(app).await?;
            let release = status["releases"]
                .as_array()
                .and_then(|all| all.iter().find(|r| r["id"] == release_id))
                .cloned();
            if let Some(release) = release
                && matches!(
                    release["state"].as_str(),
                    Some("live" | "failed" | "superseded")
                )
            {
                return Ok(release);
            }
            if Instant::now() > deadline {
                bail!(
                    "release {release_id} of {app} did not finish: {status:#}\nlog:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits for the release a push of `commit` queued for `app` to finish, and returns it.
    pub async fn wait_for_push(
        &self,
        app: &str,
        commit: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let id = self.wait_for_push_release(app, commit, timeout).await?;
        self.wait_for_release(app, &id, timeout).await
    }

    /// Waits for a release of `app` triggered by a push of `commit`, and returns its id.
    async fn wait_for_push_release(
        &self,
        app: &str,
        commit: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(app).await?;
            if let Some(release) = status["releases"].as_array().and_then(|all| {
                all.iter()
                    .find(|r| r["commit"] == commit && r["trigger"] == "push")
            }) {
                return Ok(release["id"].as_str().unwrap_or_default().to_owned());
            }
            if Instant::now() > deadline {
                bail!("no release of {app} for commit {commit}: {status:#}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The install-wide webhook secret (a test stands in for GitHub, which knows it too).
    pub fn webhook_secret(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("webhook-secret"))
            .expect("webhook secret")
            .trim()
            .to_owned()
    }

    /// The SQLite file holding the store and the queue.
    pub fn database(&self) -> anyhow::Result<PathBuf> {
        std::fs::read_dir(&self.data_dir)?
            .flatten()
            .map(|entry| entry.path())
            .find(|path| path.extension().is_some_and(|ext| ext == "db"))
            .context("no database in the data dir")
    }

    /// Kills runway with SIGKILL, as the OOM killer or a power cut would: no shutdown at all,
    /// so what it started (apps, builds) is left behind for the next runway to deal with.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops runway and waits for it, like Ctrl-C.
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Runway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `runway pull-request ARGS…` as a person would, and returns what it printed.
pub fn pull_request(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(runway_bin())
        .arg("pull-request")
        .args(args)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "runway pull-request {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// A client that sends `*.localhost` to loopback, as browsers and curl do by themselves.
pub fn client(port: u16) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
    for app in [
        "hello",
        "e2e",
        "e2e--pr1",
        "browser",
        "browser--pr1",
        "errors",
        "bench",
        "other",
        "crashes",
    ] {
        builder = builder.resolve(
            &format!("{app}.localhost"),
            SocketAddr::from(([127, 0, 0, 1], port)),
        );
    }
    builder.build().expect("an HTTP client")
}

/// A bare repository (what runway deploys from) and a working clone to commit and push with.
pub struct GitRepo {
    pub bare: PathBuf,
    pub work: PathBuf,
}

pub fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Ada")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .output()?;
    if !output.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

impl GitRepo {
    /// The webhooks Runway's local forge keeps for this repository (one file each).
    pub fn hook_files(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.bare.join("runway-webhooks")) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .collect();
        files.sort();
        files
    }

    /// A repository whose `main` holds `files`.
    pub fn create(dir: &Path, files: &[(&str, &str)]) -> anyhow::Result<Self> {
        let bare = dir.join("app.git");
        let work = dir.join("work");
        std::fs::create_dir_all(&bare)?;
        git(&bare, &["init", "-q", "--bare", "-b", "main"])?;
        git(
            dir,
            &[
                "clone",
                "-q",
                bare.to_str().unwrap(),
                work.to_str().unwrap(),
            ],
        )?;
        git(&work, &["checkout", "-q", "-b", "main"])?;
        let repo = Self { bare, work };
        repo.commit(files, "first version")?;
        git(&repo.work, &["push", "-q", "origin", "main"])?;
        Ok(repo)
    }

    /// Writes `files`, commits, and returns the commit id.
    pub fn commit(&self, files: &[(&str, &str)], message: &str) -> anyhow::Result<String> {
        for (path, contents) in files {
            let path = self.work.join(path);
            std::fs::create_dir_all(path.parent().unwrap())?;
            std::fs::write(path, contents)?;
        }
        git(&self.work, &["add", "-A"])?;
        git(&self.work, &["commit", "-q", "-m", message])?;
        Ok(git(&self.work, &["rev-parse", "HEAD"])?.trim().to_owned())
    }

    /// `git push origin HEAD:branch`; returns what git printed (the hook's report included).
    pub fn push(&self, branch: &str) -> anyhow::Result<String> {
        git(
            &self.work,
            &["push", "origin", &format!("HEAD:refs/heads/{branch}")],
        )
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }
}

/// A Streamlit app that shows a value from `st.secrets` under a title, and prints
/// "rendering TITLE" (to its runtime log) each time it runs.
pub fn streamlit_app(title: &str) -> String {
    format!(
        "import streamlit as st\n\nprint({printed:?})\nst.title({title:?})\nst.write('greeting: ' + st.secrets['greeting'])\n",
        printed = format!("rendering {title}"),
    )
}

/// Processes whose command line mentions `needle` (e.g. a data dir), other than runway itself.
pub fn processes_mentioning(needle: &str, except: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != except && *pid != std::process::id())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmd| String::from_utf8_lossy(&cmd).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Every file below `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            } else if std::fs::read(&path)
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
            {
                found.push(path);
            }
        }
    }
    found
}

/// The sequence a test's release id stands for: its first number (`r12` → 12, `r2-late` → 2).
pub fn seq_of(release_id: &str) -> u64 {
    release_id
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(1)
}

/// Serves `service` on `listener` until the returned sender is dropped: how a fake that keeps
/// its handle serves.
pub fn serve_until_dropped<S, F>(
    listener: tokio::net::TcpListener,
    service: S,
) -> tokio::sync::oneshot::Sender<()>
where
    S: Fn(runway_http::Request, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = runway_http::Response> + Send + 'static,
{
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(runway_http::serve(
        listener,
        service,
        async {
            let _ = stopped.await;
        },
        runway_http::serve::ServeOptions::default(),
    ));
    stop
}

/// The value on the line of a `/metrics` text that starts with `series` (a name and its
/// labels, as the text writes them).
pub fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
