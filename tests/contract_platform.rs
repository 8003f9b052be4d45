//! The `Platform` port's contract (the checks are in `support/platform_contract.rs`), run
//! against `CloudRunPlatform` on the fake Cloud Run Admin API and against the embedded
//! `ProcessPlatform` with nothing faked: the images are built by the real `UvBuilder` (uv and
//! the uv cache shared by the tests) from real git repositories, each revision is a real
//! `streamlit run` process, and every request goes through the real proxy, served on 127.0.0.1
//! at the port the platform's URLs name, by `Host: APP.localhost` as `runway` routes it.
//!
//! The two good images differ only in `static/version.txt` ("one" / "two"), which Streamlit
//! serves at `/app/static/version.txt` with static serving on; the probe reads it to tell which
//! image answers. The broken image sets `global.developmentMode`, which makes Streamlit exit at
//! start when given `--server.port`, so its revision never gets ready.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use async_trait::async_trait;
use runway_core::domain::{AppName, CommitSha, MainFile, RepoUrl};
use runway_core::ports::{
    BuildRequest, BuildStatus, ImageBuilder, OutboundMessage, Platform, Queue, QueueError, Topic,
};
use runway_embedded::process_platform::ProcessPlatformConfig;
use runway_embedded::proxy::{Proxy, Routes, app_from_host};
use runway_embedded::{ProcessPlatform, UvBuilder};
use runway_gcp::CloudRunPlatform;
use runway_http::serve;
use runway_tests::fake_cloud_run::{FakeCloudRun, served};
use runway_tests::image_builder_contract::wait_for_end;
use runway_tests::platform_contract::{self, Fixture};
use runway_tests::{GitRepo, git, processes_mentioning};
use tokio::net::TcpListener;

runway_tests::contract! {
    subjects: [
        process_platform => super::process_platform().await.expect("the embedded platform"),
        cloud_run => super::cloud_run().await.expect("the fake Cloud Run"),
    ],
    checks: [deploys_updates_survives_a_broken_release_and_deletes],
}

const APP: &str = "platform";
const MAIN_FILE: &str = "streamlit_app.py";
const BUILD_TIMEOUT: Duration = Duration::from_secs(240);

/// Build notifications go nowhere: the test polls `status` instead.
struct NoNotifications;

#[async_trait]
impl Queue for NoNotifications {
    async fn publish(&self, _: Topic, _: OutboundMessage) -> Result<String, QueueError> {
        Ok("0".into())
    }
}

/// An app that serves `static/version.txt` saying `version`.
fn versioned_app(version: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            MAIN_FILE,
            "import streamlit as st\n\nst.title('contract')\n".into(),
        ),
        ("requirements.txt", "streamlit\n".into()),
        (
            ".streamlit/config.toml",
            "[server]\nenableStaticServing = true\n".into(),
        ),
        ("static/version.txt", format!("{version}\n")),
    ]
}

/// An app Streamlit refuses to start.
fn broken_app() -> Vec<(&'static str, String)> {
    vec![
        (MAIN_FILE, "import streamlit as st\n".into()),
        ("requirements.txt", "streamlit\n".into()),
        (
            ".streamlit/config.toml",
            "[global]\ndevelopmentMode = true\n".into(),
        ),
    ]
}

/// Commits `files` to a new repository under `dir/name`, builds it, and returns the image.
async fn build(
    builder: &UvBuilder,
    dir: &Path,
    name: &str,
    files: Vec<(&'static str, String)>,
) -> anyhow::Result<String> {
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let repo = GitRepo::create(&dir.join(name), &files)?;
    let head = git(&repo.work, &["rev-parse", "HEAD"])?;
    let started = builder
        .start(BuildRequest {
            app: AppName::parse(APP)?,
            release_id: runway_core::domain::ReleaseId::random(),
            repo: RepoUrl::parse(&repo.url(), true)?,
            commit: CommitSha::parse(head.trim())?,
            main_file: MainFile::parse(MAIN_FILE)?,
            cache_from: None,
            clear_cache: false,
        })
        .await?;
    match wait_for_end(builder, &started.build_id, BUILD_TIMEOUT).await {
        BuildStatus::Succeeded { image } => Ok(image),
        other => bail!(
            "building {name}: {other:?}\n{}",
            builder.log(&started.build_id).await.unwrap_or_default()
        ),
    }
}

/// The embedded platform, its proxy, and the images the real uv builder made for it.
async fn process_platform() -> anyhow::Result<Subject> {
    let dir = tempfile::tempdir()?;
    let builder = runway_tests::uv_builder(dir.path(), BUILD_TIMEOUT, Arc::new(NoNotifications));
    let repos = dir.path().join("repos");
    let (one, two, broken) = tokio::try_join!(
        build(&builder, &repos, "one", versioned_app("one")),
        build(&builder, &repos, "two", versioned_app("two")),
        build(&builder, &repos, "broken", broken_app()),
    )?;

    // The proxy, on the port the platform puts in its URLs.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let routes = Routes::default();
    let platform = ProcessPlatform::new(
        ProcessPlatformConfig {
            dir: dir.path().join("apps"),
            public_port: port,
            health_timeout: Duration::from_secs(20),
            health_check_every: Duration::from_secs(10),
            drain: Duration::from_secs(1),
        },
        routes.clone(),
    )?;
    let proxy = Proxy::new(routes);
    let (stop_proxy, proxy_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        move |request, peer| {
            let proxy = proxy.clone();
            async move {
                let host = request
                    .headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let app = app_from_host(&host).unwrap_or_default().to_owned();
                proxy.forward(&app, request, peer).await
            }
        },
        async {
            let _ = proxy_stopped.await;
        },
        runway_http::serve::ServeOptions::default(),
    ));

    let client = reqwest::Client::builder()
        .resolve(
            &format!("{APP}.localhost"),
            SocketAddr::from(([127, 0, 0, 1], port)),
        )
        .timeout(Duration::from_secs(10))
        .build()?;
    let images = [("one", one.clone()), ("two", two.clone())];
    let fixture = Fixture {
        good: [one, two],
        broken,
        region: runway_tests::region("local"),
        serving: Box::new(move |url| {
            let (client, images) = (client.clone(), images.clone());
            Box::pin(async move {
                let response = client
                    .get(format!("{url}app/static/version.txt"))
                    .send()
                    .await?;
                let status = response.status();
                let text = response.text().await?;
                ensure!(status.is_success(), "{url} answers {status}: {text}");
                images
                    .iter()
                    .find(|(version, _)| *version == text.trim())
                    .map(|(_, image)| image.clone())
                    .with_context(|| format!("{url} serves an unknown version {text:?}"))
            })
        }),
    };

    let platform = Arc::new(platform);
    Ok(Subject {
        platform: platform.clone(),
        fixture,
        local: tokio::sync::Mutex::new(Some(Local {
            platform,
            stop_proxy,
            server,
            dir,
        })),
        _cloud_run: None,
    })
}

/// The Cloud Run platform against the fake Cloud Run, where an image is only a name: the fake
/// "runs" the two good ones and refuses to start the broken one, as Cloud Run reports it.
async fn cloud_run() -> anyhow::Result<Subject> {
    const PROJECT: &str = "runway-test";
    const REGION: &str = "europe-west1";
    const GOOD: &str = "europe-docker.pkg.dev/runway-test/apps/hello@sha256:1111";
    const BETTER: &str = "europe-docker.pkg.dev/runway-test/apps/hello@sha256:2222";
    const BROKEN: &str = "europe-docker.pkg.dev/runway-test/apps/hello@sha256:dead";
    let fake = FakeCloudRun::start().await?;
    fake.fail_image(
        BROKEN,
        "The user-provided container failed to start and listen on the port defined provided \
         by the PORT=8080 environment variable.",
    );
    fake.front(&runway_tests::emulators::secret_manager());
    let config = fake.platform_config(PROJECT, &[REGION]);
    Ok(Subject {
        platform: Arc::new(CloudRunPlatform::new(config).await?),
        fixture: Fixture {
            good: [GOOD.into(), BETTER.into()],
            broken: BROKEN.into(),
            region: runway_tests::region(REGION),
            serving: Box::new(|url| {
                Box::pin(async move {
                    let answer = served(&url).await?;
                    Ok(answer["image"].as_str().unwrap_or_default().to_owned())
                })
            }),
        },
        local: tokio::sync::Mutex::new(None),
        _cloud_run: Some(fake),
    })
}

/// A platform, the images the contract deploys on it, and what must live as long as it.
struct Subject {
    platform: Arc<dyn Platform>,
    fixture: Fixture,
    /// The embedded platform's parts, stopped at the end of the check.
    local: tokio::sync::Mutex<Option<Local>>,
    _cloud_run: Option<FakeCloudRun>,
}

struct Local {
    platform: Arc<ProcessPlatform>,
    stop_proxy: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

impl Subject {
    /// Stops the embedded platform and its proxy: no app process may outlive it (replaced
    /// revisions are stopped after their drain).
    async fn tear_down(&self) -> anyhow::Result<()> {
        let Some(local) = self.local.lock().await.take() else {
            return Ok(());
        };
        local.platform.shutdown().await;
        let _ = local.stop_proxy.send(());
        local.server.await?;
        let needle = local.dir.path().display().to_string();
        let deadline = Instant::now() + Duration::from_secs(15);
        while !processes_mentioning(&needle, 0).is_empty() {
            ensure!(
                Instant::now() < deadline,
                "app processes still running: {:?}",
                processes_mentioning(&needle, 0)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }
}

async fn deploys_updates_survives_a_broken_release_and_deletes(s: &Subject) -> anyhow::Result<()> {
    let result = platform_contract::deploys_updates_survives_a_broken_release_and_deletes(
        s.platform.as_ref(),
        &s.fixture,
        &AppName::parse(APP)?,
    )
    .await;
    let stopped = s.tear_down().await;
    result.and(stopped)
}
