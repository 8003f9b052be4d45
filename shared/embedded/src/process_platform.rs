//! `Platform` as supervised `streamlit run` processes behind the proxy. A new release's process
//! must answer `/_stcore/health` before traffic moves to it; the old one is then drained and
//! stopped. A process that dies unexpectedly is started again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, oneshot};

use super::pid_file::{reap_orphans, record_pid, stat_fields};
use super::proxy::{Backend, InFlight, Routes};
use super::runtime_log::{LogWriter, SharedWriter, copy_lines, note, revision_tail};
use runway_core::domain::AppName;
use runway_core::ports::{DeploySpec, Deployed, Incident, Platform, PlatformError};

#[derive(Clone, Debug)]
pub struct ProcessPlatformConfig {
    /// Per-app runtime logs and pid files go in `<dir>/<app>/`.
    pub dir: PathBuf,
    /// The port `runway` listens on: apps are at `http://APP.localhost:PORT/`.
    pub public_port: u16,
    pub health_timeout: Duration,
    /// How often a running revision is asked `/_stcore/health`: one that misses
    /// [`UNHEALTHY_AFTER`] answers in a row is restarted.
    pub health_check_every: Duration,
    /// How long a replaced revision keeps serving what was already open to it (requests,
    /// streamed responses, websockets) before it is stopped and they are cut.
    pub drain: Duration,
}

#[derive(Clone)]
pub struct ProcessPlatform {
    config: Arc<ProcessPlatformConfig>,
    routes: Routes,
    /// The app's supervised process; the mutex also serializes deploys of one app.
    apps: Arc<Mutex<HashMap<String, Slot>>>,
    http: reqwest::Client,
    /// Each app's runtime log, which all its revisions write to.
    logs: Arc<std::sync::Mutex<HashMap<String, SharedWriter>>>,
    /// Picks the port an app process is told to listen on ([`free_port`]; a test's choice).
    ports: Arc<dyn Fn() -> std::io::Result<u16> + Send + Sync>,
    /// Each app's latest restarts, newest last, at most [`INCIDENTS_KEPT`].
    incidents: Arc<std::sync::Mutex<HashMap<String, VecDeque<Incident>>>>,
}

/// How many of an app's restarts are remembered (cleanup reads them every minute).
const INCIDENTS_KEPT: usize = 20;

type Slot = Arc<Mutex<Option<Supervised>>>;

/// A running revision and the handle that stops its supervisor.
struct Supervised {
    revision: String,
    /// The sequence of the release it runs: an older release never replaces it.
    seq: u64,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

/// What it takes to start (and restart) one revision.
#[derive(Clone)]
struct Launch {
    app: String,
    revision: String,
    image: PathBuf,
    main_file: String,
    secrets: Option<String>,
    /// The app's plain environment variables.
    env: runway_core::domain::EnvVars,
    /// The app's folder: its runtime log and the revision's pid file.
    dir: PathBuf,
    pid_file: PathBuf,
}

struct Started {
    child: Child,
    addr: SocketAddr,
    /// The tasks copying its output to the app's log: they end when the output does.
    output: Vec<tokio::task::JoinHandle<()>>,
}

impl Started {
    /// The last lines the revision wrote before it stopped, once its output has all been
    /// copied (a process leaving a child behind that holds its output open is waited for a
    /// moment only).
    async fn last_words(&mut self, launch: &Launch) -> String {
        for copier in self.output.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), copier).await;
        }
        revision_tail(&launch.dir, &launch.revision, 15)
    }
}

/// Why a started process is not serving.
enum Unready {
    /// Another process listens on the port the app was given; the app is stopped.
    PortTaken,
    Failed(PlatformError),
}

/// Health checks a running revision may miss in a row before it is restarted: a hung app (a
/// deadlock, a stopped process) still holds its port and its process, so only asking finds it.
const UNHEALTHY_AFTER: u32 = 3;

/// How many ports an app is given in turn when another process keeps taking them.
const PORT_ATTEMPTS: usize = 3;

impl ProcessPlatform {
    /// Creates the platform, first stopping processes a previous `runway` left behind (its pid
    /// files say which) so that no app runs unsupervised.
    pub fn new(config: ProcessPlatformConfig, routes: Routes) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.dir)?;
        reap_orphans(&config.dir);
        Ok(Self {
            config: Arc::new(config),
            routes,
            apps: Arc::default(),
            logs: Arc::default(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
            ports: Arc::new(free_port),
            incidents: Arc::default(),
        })
    }

    /// Remembers that the app's revision was restarted, and why.
    fn incident(&self, launch: &Launch, what: String) {
        let mut incidents = self.incidents.lock().unwrap_or_else(|e| e.into_inner());
        let kept = incidents.entry(launch.app.clone()).or_default();
        kept.push_back(Incident {
            at: chrono::Utc::now(),
            revision: launch.revision.clone(),
            what,
        });
        while kept.len() > INCIDENTS_KEPT {
            kept.pop_front();
        }
    }

    pub fn url(&self, app: &str) -> String {
        format!("http://{app}.localhost:{}/", self.config.public_port)
    }

    /// Reads what the apps write.
    pub fn runtime_log(&self) -> super::LocalRuntimeLog {
        super::LocalRuntimeLog::new(self.config.dir.clone())
    }

    /// Stops every app; `runway` calls it on shutdown.
    pub async fn shutdown(&self) {
        let apps: Vec<_> = self.apps.lock().await.drain().collect();
        for (app, slot) in apps {
            if let Some(running) = slot.lock().await.take() {
                self.routes.remove(&app);
                stop(running).await;
            }
        }
    }

    async fn slot(&self, app: &str) -> Slot {
        self.apps
            .lock()
            .await
            .entry(app.to_owned())
            .or_default()
            .clone()
    }

    async fn start(&self, launch: &Launch) -> Result<Started, PlatformError> {
        let port = (self.ports)().context("finding a free port")?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        // The venv's script, not `python -m streamlit`: that would put the checkout first on
        // sys.path, and a `streamlit.py` in the repo would shadow Streamlit itself.
        let mut command = Command::new(launch.image.join("venv/bin/streamlit"));
        crate::clean_env(&mut command, &[]);
        command
            .envs(launch.env.iter())
            // Each print in the log as it happens, not 8 KB at a time.
            .env("PYTHONUNBUFFERED", "1")
            .args(["run", &launch.main_file])
            .arg(format!("--server.port={port}"))
            .arg("--server.address=127.0.0.1")
            .arg("--server.headless=true")
            .arg("--server.fileWatcherType=none")
            .arg("--browser.gatherUsageStats=false");
        if let Some(secrets) = &launch.secrets {
            command.arg(format!("--secrets.files={secrets}"));
        }
        let mut child = command
            .current_dir(launch.image.join("src"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting streamlit for {}", launch.app))?;
        if let Some(pid) = child.id() {
            record_pid(&launch.pid_file, pid);
        }
        let log = self.log_of(launch);
        let revision = || launch.revision.clone();
        let mut output = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            output.push(tokio::spawn(copy_lines(
                stdout,
                "stdout",
                revision(),
                log.clone(),
            )));
        }
        if let Some(stderr) = child.stderr.take() {
            output.push(tokio::spawn(copy_lines(stderr, "stderr", revision(), log)));
        }
        Ok(Started {
            child,
            addr,
            output,
        })
    }

    /// The writer of the app's runtime log, which every revision of the app shares.
    fn log_of(&self, launch: &Launch) -> SharedWriter {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(launch.app.clone())
            .or_insert_with(|| LogWriter::new(&launch.dir))
            .clone()
    }

    /// Starts the revision and waits until it is healthy, on another port when another
    /// process took the one it was given first.
    async fn start_healthy(&self, launch: &Launch) -> Result<Started, PlatformError> {
        for _ in 0..PORT_ATTEMPTS {
            let mut started = self.start(launch).await?;
            match self.wait_healthy(launch, &mut started).await {
                Ok(()) => return Ok(started),
                Err(Unready::PortTaken) => tracing::warn!(
                    app = %launch.app,
                    port = started.addr.port(),
                    "another process listens on the port the app was given; trying another"
                ),
                Err(Unready::Failed(error)) => return Err(error),
            }
        }
        Err(PlatformError::NotReady(format!(
            "another process on this machine took the port given to the app, {PORT_ATTEMPTS} \
             times in a row; see what listens on 127.0.0.1 (ss -ltnp) and deploy again"
        )))
    }

    /// Waits until the process answers `ok` on `/_stcore/health` from a socket of its own;
    /// stops it if it never does, or if another process holds its port.
    async fn wait_healthy(&self, launch: &Launch, started: &mut Started) -> Result<(), Unready> {
        let deadline = Instant::now() + self.config.health_timeout;
        let url = format!("http://{}/_stcore/health", started.addr);
        let port = started.addr.port();
        loop {
            if let Ok(Some(status)) = started.child.try_wait() {
                let _ = std::fs::remove_file(&launch.pid_file);
                // It could not listen: someone else does.
                if !listening_sockets(port).is_empty() {
                    return Err(Unready::PortTaken);
                }
                return Err(Unready::Failed(PlatformError::NotReady(format!(
                    "the app exited ({status}) before it was ready:\n{}",
                    started.last_words(launch).await
                ))));
            }
            if self.answers_ok(&url).await {
                if started
                    .child
                    .id()
                    .is_some_and(|pid| listens_alone(pid, port))
                {
                    return Ok(());
                }
                terminate(&mut started.child, Duration::from_secs(5)).await;
                let _ = std::fs::remove_file(&launch.pid_file);
                return Err(Unready::PortTaken);
            }
            if Instant::now() >= deadline {
                terminate(&mut started.child, Duration::from_secs(5)).await;
                let _ = std::fs::remove_file(&launch.pid_file);
                return Err(Unready::Failed(PlatformError::NotReady(format!(
                    "the app did not answer /_stcore/health within {}s:\n{}",
                    self.config.health_timeout.as_secs(),
                    started.last_words(launch).await
                ))));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether whatever listens at `url` answers `ok`.
    async fn answers_ok(&self, url: &str) -> bool {
        match self.http.get(url).send().await {
            Ok(response) if response.status().is_success() => {
                response.text().await.is_ok_and(|text| text == "ok")
            }
            _ => false,
        }
    }

    /// Owns the process: stops it when asked, starts it again when it dies on its own.
    fn supervise(&self, launch: Launch, started: Started, seq: u64) -> Supervised {
        let (stop_tx, mut stop_rx) = oneshot::channel();
        let platform = self.clone();
        let revision = launch.revision.clone();
        let done = tokio::spawn(async move {
            let mut started = started;
            let mut restarts = 0u32;
            let every = platform.config.health_check_every;
            let mut checks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut missed = 0u32;
            loop {
                tokio::select! {
                    _ = &mut stop_rx => {
                        terminate(&mut started.child, Duration::from_secs(5)).await;
                        let _ = std::fs::remove_file(&launch.pid_file);
                        return;
                    }
                    status = started.child.wait() => {
                        tracing::warn!(app = %launch.app, revision = %launch.revision, ?status, "app process died; restarting it");
                        let how = match status {
                            Ok(status) => status.to_string(),
                            Err(error) => error.to_string(),
                        };
                        platform.incident(&launch, format!("its process stopped ({how}); restarted"));
                    }
                    _ = checks.tick() => {
                        let url = format!("http://{}/_stcore/health", started.addr);
                        missed = if platform.answers_ok(&url).await { 0 } else { missed + 1 };
                        if missed < UNHEALTHY_AFTER {
                            continue;
                        }
                        missed = 0;
                        let why = format!(
                            "runway: the app did not answer /_stcore/health {UNHEALTHY_AFTER} \
                             times in a row ({}s apart); restarting it",
                            every.as_secs()
                        );
                        tracing::warn!(app = %launch.app, revision = %launch.revision, "{why}");
                        note(&platform.log_of(&launch), &launch.revision, &why);
                        platform.incident(
                            &launch,
                            format!(
                                "it did not answer its health check {UNHEALTHY_AFTER} times in \
                                 a row; restarted"
                            ),
                        );
                        // SIGKILL: a stopped or hung process may not heed anything gentler.
                        let _ = started.child.kill().await;
                    }
                }
                // Back off when it keeps dying, and stay stoppable while waiting.
                restarts += 1;
                let backoff = Duration::from_millis(500 * u64::from(restarts.min(20)));
                tokio::select! {
                    _ = &mut stop_rx => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                let next = match platform.start_healthy(&launch).await {
                    Ok(next) => next,
                    Err(error) => {
                        tracing::error!(app = %launch.app, %error, "could not restart the app");
                        continue;
                    }
                };
                restarts = 0;
                let still_current = platform
                    .routes
                    .get(&launch.app)
                    .is_some_and(|backend| backend.revision == launch.revision);
                if still_current {
                    platform
                        .routes
                        .set(&launch.app, backend(next.addr, &launch.revision));
                }
                started = next;
            }
        });
        Supervised {
            revision,
            seq,
            stop: stop_tx,
            done,
        }
    }
}

fn backend(addr: SocketAddr, revision: &str) -> Backend {
    Backend {
        addr,
        revision: revision.to_owned(),
        in_flight: InFlight::default(),
    }
}

/// Waits until nothing is in flight to a replaced revision (requests, streamed responses,
/// websockets) or `grace` has passed; says whether it drained. Websockets still open then
/// are cut with the process: Streamlit's page reconnects, to the new revision, with a new
/// session.
async fn drain(in_flight: &InFlight, grace: Duration) -> bool {
    tokio::time::timeout(grace, in_flight.drained())
        .await
        .is_ok()
}

async fn stop(running: Supervised) {
    let _ = running.stop.send(());
    let _ = running.done.await;
}

/// SIGTERM, then SIGKILL if it has not gone within `grace`.
async fn terminate(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Whether every socket listening on `port` is `pid`'s or a descendant's: what answers there
/// is then the app, not a process that took the port between [`free_port`] and the app's
/// bind (which would get the app's traffic).
fn listens_alone(pid: u32, port: u16) -> bool {
    let listening = listening_sockets(port);
    let ours = socket_inodes(&process_tree(pid));
    !listening.is_empty() && listening.is_subset(&ours)
}

/// The inodes of the sockets listening on TCP `port`, IPv4 and IPv6, in this network
/// namespace (the app's).
fn listening_sockets(port: u16) -> HashSet<u64> {
    const LISTEN: &str = "0A";
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| {
            // `sl local_address rem_address st … uid timeout inode`, addresses as HEX:PORT.
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let (_, local_port) = fields.get(1)?.rsplit_once(':')?;
                    let listens_here = u16::from_str_radix(local_port, 16).ok()? == port
                        && *fields.get(3)? == LISTEN;
                    listens_here.then(|| fields.get(9)?.parse().ok())?
                })
                .collect::<Vec<u64>>()
        })
        .collect()
}

/// The inodes of the sockets `pids` hold open.
fn socket_inodes(pids: &[u32]) -> HashSet<u64> {
    pids.iter()
        .filter_map(|pid| std::fs::read_dir(format!("/proc/{pid}/fd")).ok())
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// `root` and every process descended from it.
fn process_tree(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse().ok()?;
            let ppid = stat_fields(pid)?.get(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut tree = vec![root];
    let mut next = 0;
    while let Some(&parent) = tree.get(next) {
        tree.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(pid, _)| *pid),
        );
        next += 1;
    }
    tree
}

#[async_trait]
impl Platform for ProcessPlatform {
    #[tracing::instrument(skip_all, fields(app = %spec.app, release = %spec.release_id))]
    async fn deploy(&self, spec: DeploySpec) -> Result<Deployed, PlatformError> {
        let app = spec.app.to_string();
        let slot = self.slot(&app).await;
        let mut current = slot.lock().await;
        // Deploys of one app queue on the slot; one that waited behind a newer release's
        // must not replace it.
        if let Some(running) = current.as_ref()
            && running.seq > spec.seq
        {
            return Err(PlatformError::Superseded(format!(
                "a newer release (revision {}) is already running",
                running.revision
            )));
        }
        let release = spec.release_id.as_str();
        let revision = format!("{app}-{}", &release[..release.len().min(8)]);
        let app_dir = self.config.dir.join(&app);
        std::fs::create_dir_all(&app_dir).context("creating the app's folder")?;
        let launch = Launch {
            app: app.clone(),
            revision: revision.clone(),
            image: PathBuf::from(&spec.image),
            main_file: spec.main_file.to_string(),
            secrets: spec.secrets.map(|secret| secret.0),
            env: spec.runtime.env.clone(),
            dir: app_dir.clone(),
            pid_file: app_dir.join(format!("{revision}.pid")),
        };
        if !launch.image.join("venv/bin/streamlit").exists() {
            return Err(PlatformError::NotReady(format!(
                "the image {} is gone; build the release again",
                spec.image
            )));
        }
        let started = self.start_healthy(&launch).await?;
        let addr = started.addr;
        let next = self.supervise(launch, started, spec.seq);
        let replaced = self.routes.set(&app, backend(addr, &revision));
        if let Some(old) = current.replace(next) {
            let grace = self.config.drain;
            tokio::spawn(async move {
                // Every request sent to the old process counts in flight by now (the proxy
                // enters it under the routes' lock): let them finish before stopping it.
                if let Some(old_backend) = replaced
                    && !drain(&old_backend.in_flight, grace).await
                {
                    tracing::info!(revision = %old.revision, open = old_backend.in_flight.count(),
                        "the drain grace has passed; cutting what is still open");
                }
                tracing::info!(revision = %old.revision, "stopping the replaced revision");
                stop(old).await;
            });
        }
        Ok(Deployed {
            url: self.url(&app),
            revision,
        })
    }

    async fn delete(&self, app: &AppName) -> Result<(), PlatformError> {
        let slot = self.apps.lock().await.remove(app.as_str());
        self.routes.remove(app.as_str());
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(app.as_str());
        if let Some(slot) = slot
            && let Some(running) = slot.lock().await.take()
        {
            stop(running).await;
        }
        self.incidents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(app.as_str());
        let dir = self.config.dir.join(app.as_str());
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        Ok(())
    }

    async fn incidents(
        &self,
        app: &AppName,
        after: runway_core::domain::Timestamp,
    ) -> Result<Vec<Incident>, PlatformError> {
        let incidents = self.incidents.lock().unwrap_or_else(|e| e.into_inner());
        Ok(incidents
            .get(app.as_str())
            .into_iter()
            .flatten()
            .filter(|incident| incident.at > after)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::pid_file::PidRecord;
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::path::Path;
    use std::sync::atomic::Ordering;

    /// Stands in for the venv's `streamlit`: serves `ok` at the health path and `app`
    /// elsewhere, on the port it is given, as Streamlit would.
    const FAKE_STREAMLIT: &str = r#"#!/usr/bin/env python3
import http.server, sys
port = int(next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--server.port=")))
class App(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok" if self.path == "/_stcore/health" else b"app"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), App).serve_forever()
"#;

    /// A built release whose `streamlit` is [`FAKE_STREAMLIT`].
    fn fake_image(dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let image = dir.join("builds/hello-1");
        std::fs::create_dir_all(image.join("venv/bin")).unwrap();
        std::fs::create_dir_all(image.join("src")).unwrap();
        let streamlit = image.join("venv/bin/streamlit");
        std::fs::write(&streamlit, FAKE_STREAMLIT).unwrap();
        std::fs::set_permissions(&streamlit, std::fs::Permissions::from_mode(0o755)).unwrap();
        image
    }

    fn spec(image: &Path) -> DeploySpec {
        DeploySpec {
            app: AppName::parse("hello").unwrap(),
            release_id: runway_core::domain::ReleaseId::new("r1"),
            seq: 1,
            image: image.display().to_string(),
            main_file: runway_core::domain::MainFile::parse("streamlit_app.py").unwrap(),
            region: runway_core::domain::Region::try_from("local".to_owned()).unwrap(),
            resources: Default::default(),
            runtime: Default::default(),
            secrets: None,
            access: runway_core::domain::Access::Public,
        }
    }

    /// Answers `ok` to every request on `listener`, as a health check wants.
    async fn impostor(listener: tokio::net::TcpListener) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = [0; 1024];
            let _ = stream.read(&mut head).await;
            let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
            let _ = stream.write_all(ok.as_bytes()).await;
        }
    }

    /// Another local process takes the port Runway picked for the app before the app binds
    /// it, and answers the health check: it must not be taken for the app (and get its
    /// traffic). The app gets another port.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_process_that_took_the_app_s_port_does_not_pass_for_the_app() {
        let dir = tempfile::tempdir().unwrap();
        let image = fake_image(dir.path());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let taken = listener.local_addr().unwrap().port();
        tokio::spawn(impostor(listener));
        let routes = Routes::default();
        let mut platform = ProcessPlatform::new(
            ProcessPlatformConfig {
                dir: dir.path().join("apps"),
                public_port: 1,
                health_timeout: Duration::from_secs(60),
                health_check_every: Duration::from_secs(10),
                drain: Duration::ZERO,
            },
            routes.clone(),
        )
        .unwrap();
        let first = std::sync::atomic::AtomicBool::new(true);
        platform.ports = Arc::new(move || match first.swap(false, Ordering::SeqCst) {
            true => Ok(taken),
            false => free_port(),
        });

        let deployed = platform.deploy(spec(&image)).await;

        let serving = routes.get("hello").map(|backend| backend.addr);
        let answer = match serving {
            Some(addr) => reqwest::get(format!("http://{addr}/")).await.ok(),
            None => None,
        };
        let answer = match answer {
            Some(response) => response.text().await.ok(),
            None => None,
        };
        platform.shutdown().await;
        assert!(deployed.is_ok(), "{deployed:?}");
        assert_ne!(
            serving.map(|addr| addr.port()),
            Some(taken),
            "the impostor gets the app's traffic"
        );
        assert_eq!(answer.as_deref(), Some("app"));
    }

    /// A process whose command line says `streamlit`, as anyone's Streamlit would, in `dir`.
    fn streamlit_lookalike(dir: &Path) -> std::process::Child {
        std::process::Command::new("bash")
            .args(["-c", "exec -a streamlit sleep 600"])
            .current_dir(dir)
            .spawn()
            .expect("sh")
    }

    /// The signal `child` ends by once the test sends it SIGTERM: SIGKILL when it had already
    /// been killed (a pending SIGKILL wins), so no sleep decides whether it was.
    fn ended_by(child: &mut std::process::Child) -> Option<Signal> {
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let status = child.wait().unwrap();
        status.signal().and_then(|n| Signal::try_from(n).ok())
    }

    /// A replaced revision is stopped once what is open to it has closed, not before, and at
    /// its grace at the latest.
    #[tokio::test]
    async fn a_drain_waits_for_open_websockets_and_no_longer_than_its_grace() {
        let in_flight = InFlight::default();
        let websocket = in_flight.enter();
        let mut drained = std::pin::pin!(drain(&in_flight, Duration::from_secs(3600)));
        tokio::select! {
            biased;
            _ = &mut drained => panic!("drained with a websocket open"),
            () = std::future::ready(()) => {}
        }
        drop(websocket);
        assert!(
            drained.await,
            "the drain did not end when the websocket closed"
        );

        let _stuck = in_flight.enter();
        assert!(
            !drain(&in_flight, Duration::ZERO).await,
            "not cut at the grace"
        );
    }

    /// After a reboot a pid file can name someone else's process, Streamlit even: it is not
    /// Runway's to kill.
    #[test]
    fn a_foreign_streamlit_named_by_a_stale_pid_file_survives_reaping() {
        let (data, elsewhere) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut foreign = streamlit_lookalike(elsewhere.path());
        let app = data.path().join("apps/hello");
        std::fs::create_dir_all(&app).unwrap();
        // As runway wrote pid files before, and as it writes them now for a process it ran
        // from its data dir before the reboot.
        std::fs::write(app.join("hello-1.pid"), foreign.id().to_string()).unwrap();
        let before_the_reboot = PidRecord {
            pid: foreign.id(),
            start_time: 1,
            cwd: data.path().join("builds/hello-1/src"),
        };
        let record = serde_json::to_vec(&before_the_reboot).unwrap();
        std::fs::write(app.join("hello-2.pid"), record).unwrap();

        reap_orphans(&data.path().join("apps"));

        assert_eq!(
            ended_by(&mut foreign),
            Some(Signal::SIGTERM),
            "a process that is not Runway's was killed"
        );
        assert!(!app.join("hello-1.pid").exists(), "a stale pid file stays");
        assert!(!app.join("hello-2.pid").exists(), "a stale pid file stays");
    }

    /// What a crashed runway left running is still stopped when runway starts again.
    #[test]
    fn an_app_process_left_by_a_previous_runway_is_reaped() {
        let data = tempfile::tempdir().unwrap();
        let checkout = data.path().join("builds/hello-1/src");
        std::fs::create_dir_all(&checkout).unwrap();
        let mut orphan = streamlit_lookalike(&checkout);
        let app = data.path().join("apps/hello");
        std::fs::create_dir_all(&app).unwrap();
        record_pid(&app.join("hello-1.pid"), orphan.id());

        reap_orphans(&data.path().join("apps"));

        assert_eq!(ended_by(&mut orphan), Some(Signal::SIGKILL));
        assert!(!app.join("hello-1.pid").exists());
    }
}
