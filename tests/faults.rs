//! Faults on the embedded default, Jepsen-style: `runway` killed with SIGKILL mid-build,
//! mid-deploy and mid-swap; deliveries duplicated, reordered and replayed; a build that hangs
//! past its timeout; the disk under the data dir full. Real parts throughout (git, uv,
//! Streamlit, the `runway` binary); a fault is injected only by what the world does to a
//! process: a signal, a stalled program, a full file system.
//!
//! Every case ends with [`Case::invariants`]: the newest pushed commit is live, recorded live
//! and served; exactly one release per accepted delivery; no release outside a final state;
//! nothing in the dead letters. Cases where a deploy fails also check, on every poll, that the
//! previous version kept serving.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use runway_tests::{GitRepo, Runway, processes_mentioning, streamlit_app, uv_bin};
use serde_json::{Value, json};

const LIVE_TIMEOUT: Duration = Duration::from_secs(180);
const APP: &str = "other";

/// The files of version `n`: its number is served as a static file, so which version answers
/// is a plain HTTP read.
fn version(n: u32) -> Vec<(String, String)> {
    vec![
        ("streamlit_app.py".into(), streamlit_app(&format!("V{n}"))),
        ("static/version.txt".into(), format!("v{n}")),
        (
            ".streamlit/config.toml".into(),
            "[server]\nenableStaticServing = true\n".into(),
        ),
    ]
}

fn files(version: &[(String, String)]) -> Vec<(&str, &str)> {
    version
        .iter()
        .map(|(path, text)| (path.as_str(), text.as_str()))
        .collect()
}

/// A `uv` that waits while a gate file exists before it runs the real one: a build held at a
/// known step, as a slow index or a big wheel holds it.
struct Gate {
    path: PathBuf,
    uv: PathBuf,
}

impl Gate {
    fn new(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("gate");
        let uv = dir.join("gated-uv");
        std::fs::write(
            &uv,
            format!(
                "#!/bin/sh\nif [ -e '{gate}' ]; then\n  touch '{gate}.entered'\n  while [ -e '{gate}' ]; do sleep 0.1; done\nfi\nexec '{real}' \"$@\"\n",
                gate = path.display(),
                real = uv_bin().display(),
            ),
        )?;
        std::fs::set_permissions(&uv, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        Ok(Self { path, uv })
    }

    fn close(&self) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(self.path.with_extension("entered"));
        std::fs::write(&self.path, "")?;
        Ok(())
    }

    fn open(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// Waits until a build is held at the gate.
    async fn until_held(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + LIVE_TIMEOUT;
        while !self.path.with_extension("entered").exists() {
            ensure!(Instant::now() < deadline, "no build reached the gate");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

/// One app on one `runway`, with what the case did to it.
struct Case {
    dir: tempfile::TempDir,
    repo: GitRepo,
    runway: Runway,
    gate: Gate,
    env: Vec<(String, String)>,
    /// Commits pushed and accepted, oldest first.
    pushed: Vec<String>,
    /// Deliveries answered 202 (a release queued for each).
    accepted: usize,
    newest: u32,
}

impl Case {
    /// `runway` with `env`, and the app's version 1 live.
    async fn start(env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_in(tempfile::tempdir()?, env).await
    }

    async fn start_in(dir: tempfile::TempDir, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let repo = GitRepo::create(dir.path(), &files(&version(1)))?;
        let gate = Gate::new(dir.path())?;
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        env.push(("RUNWAY_UV".into(), gate.uv.display().to_string()));
        let runway = Runway::start_with(dir.path(), &env)?;
        runway
            .deploy(APP, &repo, "streamlit_app.py", "greeting = \"x\"")
            .await?;
        let case = Self {
            dir,
            repo,
            runway,
            gate,
            env,
            pushed: Vec::new(),
            accepted: 1,
            newest: 1,
        };
        case.until_serving(1).await?;
        Ok(case)
    }

    /// Commits version `n` and pushes it (the bare repository's hook delivers the push).
    fn push(&mut self, n: u32) -> anyhow::Result<String> {
        let commit = self.repo.commit(&files(&version(n)), &format!("v{n}"))?;
        let report = self.repo.push("main")?;
        ensure!(
            report.contains("202"),
            "the push was not accepted: {report}"
        );
        self.pushed.push(commit.clone());
        self.accepted += 1;
        self.newest = n;
        Ok(commit)
    }

    fn restart(&mut self) -> anyhow::Result<()> {
        self.runway.kill();
        self.runway = Runway::start_with(self.dir.path(), &self.env)?;
        Ok(())
    }

    /// The version the app's URL serves now, if any.
    async fn serving(&self) -> Option<String> {
        let url = format!("{}/app/static/version.txt", self.runway.app_url(APP));
        let response = self.runway.client.get(url).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.text().await.ok()
    }

    async fn until_serving(&self, n: u32) -> anyhow::Result<()> {
        let deadline = Instant::now() + LIVE_TIMEOUT;
        let want = format!("v{n}");
        while self.serving().await.as_deref() != Some(want.as_str()) {
            ensure!(
                Instant::now() < deadline,
                "v{n} was never served; serving {:?}\n{}",
                self.serving().await,
                self.runway.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// The release of `commit` pushed for the app, once it exists.
    async fn release_of(&self, commit: &str) -> anyhow::Result<Value> {
        let status = self.runway.status(APP).await?;
        status["releases"]
            .as_array()
            .and_then(|all| all.iter().find(|r| r["commit"] == commit).cloned())
            .with_context(|| format!("no release of {commit}: {status:#}"))
    }

    /// Waits until the release of `commit` is in `state`. While it is on its way, every poll
    /// checks that one of `serving` answers (the previous version, or the new one once traffic
    /// moved): no gap, and never an older one. Empty, nothing is checked (runway is starting).
    async fn until_state(&self, commit: &str, state: &str, serving: &[u32]) -> anyhow::Result<()> {
        let deadline = Instant::now() + LIVE_TIMEOUT;
        let allowed: Vec<String> = serving.iter().map(|n| format!("v{n}")).collect();
        loop {
            if let Ok(release) = self.release_of(commit).await {
                if release["state"] == state {
                    return Ok(());
                }
                ensure!(
                    !matches!(
                        release["state"].as_str(),
                        Some("live" | "failed" | "superseded")
                    ),
                    "{commit} ended {} instead: {release:#}",
                    release["state"]
                );
            }
            if !allowed.is_empty() {
                let served = self.serving().await;
                ensure!(
                    served.as_ref().is_some_and(|v| allowed.contains(v)),
                    "served {served:?}, not one of {allowed:?}, before {commit} was {state}\n{}",
                    self.runway.log_text()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "{commit} never became {state}: {:#}\n{}",
                self.runway.status(APP).await?,
                self.runway.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The invariants every case ends with.
    async fn invariants(mut self) -> anyhow::Result<()> {
        self.until_serving(self.newest).await?;
        let status = self.runway.status(APP).await?;
        let releases = status["releases"].as_array().context("releases")?.clone();
        let live = releases
            .iter()
            .find(|r| r["id"] == status["live_release"])
            .with_context(|| format!("no live release: {status:#}"))?;
        let newest = self.pushed.last().context("the case pushed nothing")?;
        ensure!(
            live["commit"] == newest.as_str() && live["state"] == "live",
            "the newest commit {newest} is not the live release: {status:#}"
        );
        ensure!(
            releases.len() == self.accepted,
            "{} releases for {} accepted deliveries: {status:#}",
            releases.len(),
            self.accepted
        );
        let unfinished: Vec<&Value> = releases
            .iter()
            .filter(|r| !matches!(r["state"].as_str(), Some("live" | "failed" | "superseded")))
            .collect();
        ensure!(
            unfinished.is_empty(),
            "releases left unfinished: {unfinished:#?}"
        );
        // The replaced revision is stopped once it has drained.
        let data = self.runway.data_dir.display().to_string();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let apps = processes_mentioning(&data, self.runway.pid());
            if apps.len() == 1 {
                break;
            }
            let commands: Vec<String> = apps
                .iter()
                .map(|pid| {
                    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    String::from_utf8_lossy(&cmdline).replace('\0', " ")
                })
                .collect();
            ensure!(
                Instant::now() < deadline,
                "expected one app process, found {commands:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        self.runway.stop();
        let queue = runway_embedded::SqliteQueue::open(&self.runway.database()?)?;
        let dead = queue.dead_letters().await?;
        ensure!(dead.is_empty(), "dead letters: {dead:?}");
        let pending = queue.pending().await?;
        ensure!(pending.is_empty(), "messages never delivered: {pending:?}");
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runway_killed_mid_build_builds_the_push_again_once_restarted() -> anyhow::Result<()> {
    let mut case = Case::start(&[]).await?;
    case.gate.close()?;
    let commit = case.push(2)?;
    case.gate.until_held().await?;
    ensure!(case.release_of(&commit).await?["state"] == "building");
    let build = processes_mentioning(&case.gate.uv.display().to_string(), 0);
    ensure!(!build.is_empty(), "no build process to leave behind");

    case.restart()?;
    let left: Vec<u32> = build.into_iter().filter(|pid| alive(*pid)).collect();
    ensure!(
        left.is_empty(),
        "the killed runway's build still runs: {left:?}"
    );
    case.gate.open();
    case.until_serving(1).await?;
    case.until_state(&commit, "live", &[1, 2]).await?;
    case.invariants().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runway_killed_mid_deploy_deploys_the_build_once_restarted() -> anyhow::Result<()> {
    let mut case = Case::start(&[]).await?;
    let commit = case.push(2)?;
    case.until_state(&commit, "deploying", &[1]).await?;

    case.restart()?;
    case.until_state(&commit, "live", &[]).await?;
    case.invariants().await
}

/// The swap: the new revision serves and the old one drains what is open to it (a Streamlit
/// session's websocket) before it is stopped. Killed then, runway comes back serving the new
/// release alone: the old process is not left running, nor served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runway_killed_mid_swap_serves_the_new_release_alone_once_restarted() -> anyhow::Result<()>
{
    let mut case = Case::start(&[("RUNWAY_DRAIN_SECS", "600")]).await?;
    let session = websocket(&case.runway, APP).await?;
    let commit = case.push(2)?;
    case.until_state(&commit, "live", &[1, 2]).await?;
    case.until_serving(2).await?;
    let data = case.runway.data_dir.display().to_string();
    let both = processes_mentioning(&data, case.runway.pid());
    ensure!(
        both.len() == 2,
        "the old revision is not draining: {both:?}"
    );

    case.restart()?;
    drop(session);
    case.invariants().await
}

/// What GitHub and the network do to deliveries: the same delivery sent twice (GitHub's
/// Redeliver), an older push arriving after a newer one, and an old payload replayed with a
/// fresh delivery id (its signature still verifies). One release per accepted delivery, and the
/// branch's head is what goes live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_reordered_and_replayed_deliveries_leave_the_head_live() -> anyhow::Result<()> {
    let mut case = Case::start(&[]).await?;
    let v2 = case.push(2)?;
    case.until_state(&v2, "live", &[1, 2]).await?;
    let status = case.runway.status(APP).await?;
    let repo_id = status["deliveries"][0]["repo_id"].clone();
    let v3 = case.repo.commit(&files(&version(3)), "v3")?;
    let v4 = case.repo.commit(&files(&version(4)), "v4")?;
    // Fetched into the bare repository, which runs no hook: the deliveries are the test's to
    // send, in its own order.
    let work = case.repo.work.display().to_string();
    runway_tests::git(&case.repo.bare, &["fetch", "-q", &work, "+main:main"])?;

    let body = |before: &str, after: &str| {
        json!({
            "ref": "refs/heads/main", "before": before, "after": after, "deleted": false,
            "repository": { "id": repo_id, "full_name": "acme/other" },
        })
        .to_string()
    };
    let v4_push = body(&v3, &v4);
    let v3_push = body(&v2, &v3);
    let sends = [
        ("d-4", &v4_push, 202),
        ("d-4", &v4_push, 200), // GitHub's Redeliver: the same id
        ("d-3", &v3_push, 202), // older, arriving late
        ("d-3", &v3_push, 200),
        ("d-2-replayed", &body(&"0".repeat(40), &v2), 202),
    ];
    for (delivery, payload, expected) in sends {
        let code = deliver(&case.runway, delivery, payload).await?;
        ensure!(
            code == expected,
            "{delivery} answered {code}, not {expected}"
        );
        if code == 202 {
            case.accepted += 1;
        }
    }
    case.pushed.extend([v3, v4]);
    case.newest = 4;
    // Each release builds the branch's head: whichever goes live last, v3 is what serves.
    let deadline = Instant::now() + LIVE_TIMEOUT;
    loop {
        let status = case.runway.status(APP).await?;
        let settled = status["releases"].as_array().is_some_and(|all| {
            all.iter()
                .all(|r| matches!(r["state"].as_str(), Some("live" | "failed" | "superseded")))
        });
        if settled {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "releases never settled: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    case.invariants().await
}

/// Pushes in quick succession while a build runs: each is one release, but they wait behind
/// the build, newer ones supersede older ones there, and only the newest is built next. A
/// burst of six pushes builds twice, and the last push is what goes live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_pushes_behind_a_build_is_built_once_more_not_once_each() -> anyhow::Result<()> {
    let mut case = Case::start(&[]).await?;
    case.gate.close()?;
    let first = case.push(2)?;
    case.gate.until_held().await?;
    for n in 3..=7 {
        case.push(n)?;
    }
    case.gate.open();
    let newest = case.pushed.last().cloned().unwrap_or_default();
    case.until_state(&newest, "live", &[1, 2, 7]).await?;

    let status = case.runway.status(APP).await?;
    let built: Vec<&Value> = status["releases"]
        .as_array()
        .context("releases")?
        .iter()
        .filter(|r| r["trigger"] == "push" && !r["log_url"].is_null())
        .collect();
    let commits: Vec<&Value> = built.iter().map(|r| &r["commit"]).collect();
    ensure!(
        commits == [&json!(newest), &json!(first)],
        "built {commits:?}, not the held push and the newest: {status:#}"
    );
    case.invariants().await
}

/// A build that hangs (an index that never answers) is stopped at its timeout and fails with
/// the reason; the previous version serves throughout, and the next push goes live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_that_hangs_past_its_timeout_fails_and_the_next_push_goes_live()
-> anyhow::Result<()> {
    let mut case = Case::start(&[("RUNWAY_BUILD_TIMEOUT_SECS", "5")]).await?;
    case.gate.close()?;
    let hung = case.push(2)?;
    case.gate.until_held().await?;
    case.until_state(&hung, "failed", &[1]).await?;
    let release = case.release_of(&hung).await?;
    let message = release["message"].as_str().unwrap_or_default();
    ensure!(message.contains("timed out after 5s"), "{release:#}");
    let held = processes_mentioning(&case.gate.uv.display().to_string(), case.runway.pid());
    ensure!(held.is_empty(), "the hung build still runs: {held:?}");

    case.gate.open();
    let next = case.push(3)?;
    case.until_state(&next, "live", &[1, 3]).await?;
    case.invariants().await
}

/// An app that stops answering once live (a deadlock, a process the OS stopped: here SIGSTOP)
/// still holds its port and its pid, so only asking finds it. It is restarted, and its log on
/// the app's page says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_stops_answering_once_live_is_restarted_and_its_page_says_why()
-> anyhow::Result<()> {
    let mut case = Case::start(&[("RUNWAY_HEALTH_CHECK_SECS", "1")]).await?;
    let data = case.runway.data_dir.display().to_string();
    let hung = processes_mentioning(&data, case.runway.pid());
    ensure!(hung.len() == 1, "{hung:?}");
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &hung[0].to_string()])
        .status()?;
    ensure!(stopped.success());

    let deadline = Instant::now() + LIVE_TIMEOUT;
    loop {
        let now = processes_mentioning(&data, case.runway.pid());
        if now.len() == 1 && now != hung && case.serving().await.as_deref() == Some("v1") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the hung app was not restarted: {now:?}\n{}",
            case.runway.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, log) = case
        .runway
        .get_json(&format!("/api/apps/{APP}/log"))
        .await?;
    ensure!(code == 200, "{log}");
    ensure!(
        log.to_string().contains("did not answer /_stcore/health"),
        "the page does not say why the app restarted: {log:#}"
    );

    let next = case.push(2)?;
    case.until_state(&next, "live", &[1, 2]).await?;
    case.invariants().await
}

/// The disk under the data dir fills up (here a file system of its own, mounted for the test):
/// a push then cannot be recorded and is refused with a reason GitHub shows, the live version
/// serves on, and once there is room again the next push goes live on an intact database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_what_it_cannot_record_and_corrupts_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let disk = SmallDisk::mount(&dir.path().join("data"), "2g")?;
    let mut case = Case::start_in(dir, &[]).await?;
    let filler = disk.fill()?;

    // A write that still fits (the WAL starts over in room it already had) is acknowledged and
    // recorded; the first that does not is refused with 507, and nothing of it is kept.
    let mut refused = None;
    let mut versions = vec![1];
    for n in 2..=10 {
        let commit = case.repo.commit(&files(&version(n)), &format!("v{n}"))?;
        let report = case.repo.push("main")?;
        if report.contains("507") {
            ensure!(!report.contains("202"), "{report}");
            ensure!(
                case.release_of(&commit).await.is_err(),
                "a release was half-written"
            );
            refused = Some(n);
            break;
        }
        ensure!(
            report.contains("202"),
            "a push on a full disk answered neither 202 nor 507: {report}"
        );
        case.release_of(&commit)
            .await
            .context("an acknowledged push was not recorded")?;
        case.pushed.push(commit);
        case.accepted += 1;
        versions.push(n);
    }
    let refused_version = refused.with_context(|| {
        format!(
            "no push was refused on a full disk\n{}",
            case.runway.log_text()
        )
    })?;
    let (code, refused) = case
        .runway
        .post_json(&format!("/api/deployments/{APP}/redeploy"), &json!({}))
        .await?;
    if code == 202 {
        // It fitted, as a push may: recorded and counted, and it builds the branch's head.
        case.accepted += 1;
        versions.push(refused_version);
    } else {
        ensure!(
            code == 507,
            "a redeploy on a full disk answered {code}: {refused}"
        );
        let reason = refused["error"].as_str().unwrap_or_default();
        ensure!(
            reason.contains("disk"),
            "no reason a person can act on: {refused}"
        );
    }
    let serving = case.serving().await.unwrap_or_default();
    ensure!(
        versions.iter().any(|n| serving == format!("v{n}")),
        "on a full disk the app served {serving:?}, none of {versions:?}"
    );

    std::fs::remove_file(filler)?;
    case.push(11)?;
    versions.push(11);
    case.until_state(case.pushed.last().unwrap(), "live", &versions)
        .await?;
    let database = case.runway.database()?;
    case.invariants().await?;
    let check = std::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('pragma integrity_check').fetchone()[0])"])
        .arg(&database)
        .output()?;
    let verdict = String::from_utf8_lossy(&check.stdout);
    ensure!(verdict.trim() == "ok", "the database is damaged: {verdict}");
    Ok(())
}

/// A tmpfs of its own under a test's folder, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path)?;
        let output = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()?;
        ensure!(
            output.status.success(),
            "this test mounts a small file system and needs root: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(Self {
            path: path.to_owned(),
        })
    }

    /// Fills what is left with one file, and returns it.
    fn fill(&self) -> anyhow::Result<PathBuf> {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler)?;
        let block = vec![0u8; 1 << 20];
        loop {
            if let Err(error) = file.write_all(&block) {
                ensure!(
                    error.raw_os_error() == Some(28),
                    "filling the disk: {error}"
                );
                break;
            }
        }
        // What a partly written block left.
        let small = [0u8; 512];
        while file.write_all(&small).is_ok() {}
        Ok(filler)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-l"])
            .arg(&self.path)
            .status();
    }
}

/// Whether `pid` runs (a zombie waiting for its parent to reap it does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !matches!(rest.trim_start().chars().next(), Some('Z' | 'X')))
    })
}

async fn deliver(runway: &Runway, delivery: &str, body: &str) -> anyhow::Result<u16> {
    use hmac::Mac;
    let key = secrecy::SecretString::from(runway.webhook_secret());
    let app = runway_core::domain::AppName::parse(APP).expect("an app name");
    let secret = runway_http::webhook::app_secret(&key, &app);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(
        secrecy::ExposeSecret::expose_secret(&secret).as_bytes(),
    )?;
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let response = runway
        .client
        .post(runway.url(&format!("/github/webhook/{APP}")))
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", signature)
        .body(body.to_owned())
        .send()
        .await?;
    Ok(response.status().as_u16())
}

/// A Streamlit session's websocket, held open through the proxy: what keeps a replaced
/// revision draining.
async fn websocket(runway: &Runway, app: &str) -> anyhow::Result<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", runway.port)).await?;
    let request = format!(
        "GET /_stcore/stream HTTP/1.1\r\nHost: {app}.localhost:{port}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://{app}.localhost:{port}\r\n\r\n",
        port = runway.port
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = vec![0; 1024];
    let read = stream.read(&mut head).await?;
    let head = String::from_utf8_lossy(&head[..read]);
    if !head.starts_with("HTTP/1.1 101") {
        bail!("the websocket was refused: {head}");
    }
    Ok(stream)
}
