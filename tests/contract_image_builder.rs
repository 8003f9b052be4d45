//! The `ImageBuilder` port's contract, run against every adapter: `UvBuilder` (the embedded
//! default, with real uv installing from PyPI) and `CloudBuildBuilder` against the fake Cloud
//! Build, fake-gcs-server and the Pub/Sub emulator. The checks themselves are in
//! `support/image_builder_contract.rs`, where the Cloud Build tests (`cloud_build.rs`) use them
//! too.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use runway_core::domain::AppName;
use runway_core::ports::{ImageBuilder, OutboundMessage, Queue, QueueError, Topic};
use runway_tests::GitRepo;
use runway_tests::fake_cloud_build::OnEmulators;
use runway_tests::image_builder_contract::{self as contract, GOOD_APP, MISSING_REQUIREMENT};

runway_tests::contract! {
    subjects: [
        uv_builder => super::uv_builder().await,
        cloud_build => super::cloud_build().await,
    ],
    checks: [
        builds_a_commit_into_an_image,
        reads_a_build_log_from_an_offset,
        a_broken_build_fails_with_its_reason_and_the_end_of_its_log,
        knows_nothing_of_builds_it_never_made,
        deleting_an_app_forgets_its_builds_and_no_others,
        a_monorepo_app_installs_the_dependency_files_nearest_its_main_file,
    ],
}

/// A builder, the repositories it builds from, and what must live as long as it.
struct Subject {
    builder: Arc<dyn ImageBuilder>,
    timeout: Duration,
    dir: tempfile::TempDir,
    /// What the builder announced (the embedded builder publishes its ends itself).
    recorded: Option<Arc<Recorded>>,
    _cloud: Option<OnEmulators>,
}

impl Subject {
    fn repo(&self, name: &str, files: &[(&str, &str)]) -> GitRepo {
        GitRepo::create(&self.dir.path().join(name), files).expect("a git repository")
    }

    fn broken_repo(&self, name: &str) -> GitRepo {
        let files = contract::failing_app();
        let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
        self.repo(name, &files)
    }
}

async fn uv_builder() -> Subject {
    let dir = tempfile::tempdir().unwrap();
    let recorded = Arc::new(Recorded::default());
    let builder = runway_tests::uv_builder(dir.path(), Duration::from_secs(300), recorded.clone());
    Subject {
        builder: Arc::new(builder),
        timeout: Duration::from_secs(240),
        dir,
        recorded: Some(recorded),
        _cloud: None,
    }
}

async fn cloud_build() -> Subject {
    let cloud = OnEmulators::start().await;
    // The fake runs no installer: it is told which requirement cannot be satisfied.
    for path in ["requirements.txt", "apps/sales/requirements.txt"] {
        cloud
            .fake
            .fail_when_file_contains(path, MISSING_REQUIREMENT);
    }
    Subject {
        builder: Arc::new(cloud.builder.clone()),
        timeout: Duration::from_secs(30),
        dir: tempfile::tempdir().unwrap(),
        recorded: None,
        _cloud: Some(cloud),
    }
}

/// Keeps what the builder publishes (the UvBuilder announces its ends on a queue).
#[derive(Default)]
struct Recorded(Mutex<Vec<(Topic, OutboundMessage)>>);

#[async_trait]
impl Queue for Recorded {
    async fn publish(&self, topic: Topic, message: OutboundMessage) -> Result<String, QueueError> {
        let mut all = self.0.lock().unwrap();
        all.push((topic, message));
        Ok(all.len().to_string())
    }
}

async fn builds_a_commit_into_an_image(s: &Subject) {
    let good = s.repo("good", GOOD_APP);
    contract::builds_a_commit(
        s.builder.as_ref(),
        contract::request("good", &good),
        s.timeout,
    )
    .await;
}

async fn reads_a_build_log_from_an_offset(s: &Subject) {
    let good = s.repo("good", GOOD_APP);
    let (built, _) = contract::builds_a_commit(
        s.builder.as_ref(),
        contract::request("good", &good),
        s.timeout,
    )
    .await;
    contract::reads_a_log_from_an_offset(s.builder.as_ref(), &built.build_id).await;
}

async fn a_broken_build_fails_with_its_reason_and_the_end_of_its_log(s: &Subject) {
    let bad = s.broken_repo("bad");
    contract::reports_a_failed_build(
        s.builder.as_ref(),
        contract::request("bad", &bad),
        s.timeout,
    )
    .await;
}

async fn knows_nothing_of_builds_it_never_made(s: &Subject) {
    contract::knows_nothing_of_other_builds(s.builder.as_ref()).await;
}

async fn deleting_an_app_forgets_its_builds_and_no_others(s: &Subject) {
    let (gone, kept) = (s.repo("gone", GOOD_APP), s.repo("kept", GOOD_APP));
    let builder = s.builder.as_ref();
    let (gone_build, _) =
        contract::builds_a_commit(builder, contract::request("gone", &gone), s.timeout).await;
    let (kept_build, _) =
        contract::builds_a_commit(builder, contract::request("kept", &kept), s.timeout).await;

    contract::delete_app_forgets_only_that_app(
        builder,
        &AppName::parse("gone").unwrap(),
        &gone_build.build_id,
        &kept_build.build_id,
    )
    .await;
}

/// A monorepo: the root's requirements cannot install, the sales app's own can. Built for
/// `apps/sales/app.py`, the app's own win; when its own are the broken ones, the build fails
/// on them, though the root's would install.
async fn a_monorepo_app_installs_the_dependency_files_nearest_its_main_file(s: &Subject) {
    let app = "import streamlit as st\n\nst.title('sales')\n";
    let broken = format!("streamlit\n{MISSING_REQUIREMENT}\n");
    let sales = runway_core::domain::MainFile::parse("apps/sales/app.py").unwrap();
    let good = s.repo(
        "mono-good",
        &[
            ("requirements.txt", broken.as_str()),
            ("apps/sales/app.py", app),
            ("apps/sales/requirements.txt", "streamlit\n"),
        ],
    );
    let mut request = contract::request("sales", &good);
    request.main_file = sales.clone();
    contract::builds_a_commit(s.builder.as_ref(), request, s.timeout).await;

    let bad = s.repo(
        "mono-bad",
        &[
            ("requirements.txt", "streamlit\n"),
            ("apps/sales/app.py", app),
            ("apps/sales/requirements.txt", broken.as_str()),
        ],
    );
    let mut request = contract::request("sales", &bad);
    request.main_file = sales;
    let (_, _, log) =
        contract::reports_a_failed_build(s.builder.as_ref(), request, s.timeout).await;
    assert!(log.contains("apps/sales/requirements.txt"), "{log}");
}

mod uv_builder_only {
    use super::*;
    use runway_core::domain::BuildId;
    use runway_core::ports::{BuildError, IdleBuild};
    use std::time::SystemTime;

    /// `packages.txt` is never passed over in silence: a package this machine has is noted in
    /// the log; one it lacks fails the build, named, with the command that installs it (this
    /// runway may not install packages).
    #[tokio::test]
    async fn packages_txt_is_noted_when_installed_and_fails_naming_what_is_missing() {
        let s = uv_builder().await;
        let builder = s.builder.as_ref();
        let mut files = GOOD_APP.to_vec();
        files.push(("packages.txt", "# dpkg itself is on every Debian\ndpkg\n"));
        let has = s.repo("has", &files);
        let (built, _) =
            contract::builds_a_commit(builder, contract::request("has", &has), s.timeout).await;
        let log = builder.log(&built.build_id).await.unwrap();
        assert!(
            log.contains("packages.txt: dpkg installed on this machine"),
            "{log}"
        );

        let mut files = GOOD_APP.to_vec();
        files.push(("packages.txt", "dpkg\nrunway-no-such-package-3b7e\n"));
        let lacks = s.repo("lacks", &files);
        let started = builder
            .start(contract::request("lacks", &lacks))
            .await
            .unwrap();
        let status = contract::wait_for_end(builder, &started.build_id, s.timeout).await;
        let runway_core::ports::BuildStatus::Failed { detail, .. } = status else {
            panic!("expected a failure, got {status:?}");
        };
        assert!(
            detail.contains(
                "packages.txt asks for runway-no-such-package-3b7e, which this machine lacks"
            ) && detail.contains("sudo apt-get install runway-no-such-package-3b7e"),
            "{detail}"
        );
    }

    /// The minor version of this machine's `python3`, the one interpreter sure to be here.
    fn machine_python() -> u8 {
        let output = std::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.version_info[1])"])
            .output()
            .expect("python3 runs");
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("a minor version")
    }

    /// A supported Python uv cannot find here, if there is one.
    fn absent_python() -> Option<u8> {
        runway_core::python::SUPPORTED
            .into_iter()
            .find(|minor| !uv_finds(*minor))
    }

    /// A supported Python here other than `python3`'s, if there is one: asking for it proves
    /// the ask is what picks the interpreter.
    fn other_python() -> Option<u8> {
        let own = machine_python();
        runway_core::python::SUPPORTED
            .into_iter()
            .find(|minor| *minor != own && uv_finds(*minor))
    }

    /// Whether uv finds Python 3.`minor`, looked for as the builder looks: from a checkout whose
    /// `.python-version` asks for it (pyenv's shims read that file).
    fn uv_finds(minor: u8) -> bool {
        let checkout = tempfile::tempdir().expect("a folder");
        std::fs::write(
            checkout.path().join(".python-version"),
            format!("3.{minor}\n"),
        )
        .expect("writing .python-version");
        std::process::Command::new(runway_tests::uv_bin())
            .current_dir(checkout.path())
            .args(["python", "find", &format!("3.{minor}")])
            .env("UV_PYTHON_DOWNLOADS", "never")
            .output()
            .expect("uv runs")
            .status
            .success()
    }

    /// Builds the good app with `file` holding `text`, which must fail: the failure's detail.
    async fn fails_asking(s: &Subject, name: &str, file: &str, text: &str) -> String {
        let mut files = GOOD_APP.to_vec();
        files.push((file, text));
        let repo = s.repo(name, &files);
        let builder = s.builder.as_ref();
        let started = builder.start(contract::request(name, &repo)).await.unwrap();
        match contract::wait_for_end(builder, &started.build_id, s.timeout).await {
            runway_core::ports::BuildStatus::Failed { detail, .. } => detail,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    /// The Python a repository asks for is the one its environment gets; one Runway does not
    /// run, or one this machine lacks (and may not download), fails the build saying so.
    #[tokio::test]
    async fn the_python_a_repository_asks_for_is_the_one_it_gets() {
        let s = uv_builder().await;
        let builder = s.builder.as_ref();
        let minor = other_python().unwrap_or_else(machine_python);
        let mut files = GOOD_APP.to_vec();
        let asked = format!("3.{minor}\n");
        files.push((".python-version", asked.as_str()));
        let repo = s.repo("asks", &files);
        let (built, _) =
            contract::builds_a_commit(builder, contract::request("asks", &repo), s.timeout).await;
        let log = builder.log(&built.build_id).await.unwrap();
        assert!(
            log.contains(&format!("Python 3.{minor}, as .python-version asks")),
            "{log}"
        );
        let config = s
            .dir
            .path()
            .join("builds")
            .join(built.build_id.as_str())
            .join("venv/pyvenv.cfg");
        let config = std::fs::read_to_string(&config).unwrap();
        assert!(config.contains(&format!("3.{minor}.")), "{config}");

        let old = fails_asking(&s, "old", "runtime.txt", "python-3.8.10\n").await;
        assert!(
            old.contains("runtime.txt asks for Python 3.8.10, which Runway does not run apps on"),
            "{old}"
        );
        // Every supported version may be on a machine (pyenv's, say); then there is none to
        // miss, and only the other cases are checked.
        if let Some(absent) = absent_python() {
            let asked = format!("3.{absent}\n");
            let missing = fails_asking(&s, "missing", ".python-version", &asked).await;
            assert!(
                missing.contains(&format!(
                    "asks for Python 3.{absent} (.python-version), which is not on this machine"
                )) && missing.contains("RUNWAY_PYTHON_DOWNLOADS=1"),
                "{missing}"
            );
        }
    }

    /// A repository's own Dockerfile cannot run here (no container engine): the log says what
    /// that means, and the app is built from its dependency files.
    #[tokio::test]
    async fn a_repositorys_own_dockerfile_is_named_in_the_log() {
        let s = uv_builder().await;
        let mut files = GOOD_APP.to_vec();
        files.push((
            "Dockerfile",
            "FROM python:3.12-slim\nRUN pip install streamlit\n",
        ));
        let repo = s.repo("own", &files);

        let (built, _) = contract::builds_a_commit(
            s.builder.as_ref(),
            contract::request("own", &repo),
            s.timeout,
        )
        .await;

        let log = s.builder.log(&built.build_id).await.unwrap();
        assert!(
            log.contains("this repository has its own Dockerfile"),
            "{log}"
        );
    }

    /// Makes a build look as if it ended `ago`.
    fn ended(s: &Subject, build: &BuildId, ago: Duration) {
        let result = s
            .dir
            .path()
            .join("builds")
            .join(build.as_str())
            .join("result.json");
        std::fs::File::options()
            .write(true)
            .open(&result)
            .and_then(|file| file.set_modified(SystemTime::now() - ago))
            .unwrap_or_else(|error| panic!("aging {}: {error}", result.display()));
    }

    /// A build loses its checkout and environment an hour after it ended, and its log once the
    /// log's days are over; what is left of it is never offered twice.
    #[tokio::test]
    async fn idle_builds_are_offered_and_freed() {
        let s = uv_builder().await;
        let (good, bad) = (s.repo("good", GOOD_APP), s.broken_repo("bad"));
        let builder = s.builder.as_ref();
        let (built, image) =
            contract::builds_a_commit(builder, contract::request("good", &good), s.timeout).await;
        let (failed, _, _) =
            contract::reports_a_failed_build(builder, contract::request("bad", &bad), s.timeout)
                .await;
        let folder = |build: &BuildId, part: &str| {
            s.dir.path().join("builds").join(build.as_str()).join(part)
        };
        let idle = || async { builder.idle_builds().await.unwrap() };

        assert_eq!(idle().await, [], "builds that just ended are offered");
        assert!(
            !builder.free(&failed.build_id).await.unwrap(),
            "freed at once"
        );
        assert!(folder(&failed.build_id, "venv").exists());

        ended(&s, &built.build_id, Duration::from_secs(7200));
        ended(&s, &failed.build_id, Duration::from_secs(7200));
        let mut offered = idle().await;
        offered.sort_by(|a, b| a.app.as_str().cmp(b.app.as_str()));
        let app = |name: &str| AppName::parse(name).unwrap();
        assert_eq!(
            offered,
            [
                IdleBuild {
                    id: failed.build_id.clone(),
                    app: app("bad")
                },
                IdleBuild {
                    id: built.build_id.clone(),
                    app: app("good")
                },
            ]
        );
        assert!(builder.free(&failed.build_id).await.unwrap());
        assert!(!folder(&failed.build_id, "src").exists());
        assert!(!folder(&failed.build_id, "venv").exists());
        let log = builder.log(&failed.build_id).await.unwrap();
        assert!(
            log.contains("runway-missing-package"),
            "the failed build's log went: {log}"
        );
        assert!(
            std::path::Path::new(&image)
                .join("venv/bin/streamlit")
                .exists(),
            "a build not freed lost its environment"
        );
        let offered: Vec<BuildId> = idle().await.into_iter().map(|idle| idle.id).collect();
        assert_eq!(
            offered,
            std::slice::from_ref(&built.build_id),
            "a freed build is offered again"
        );

        ended(&s, &failed.build_id, Duration::from_secs(100 * 86_400));
        assert!(idle().await.iter().any(|idle| idle.id == failed.build_id));
        assert!(builder.free(&failed.build_id).await.unwrap());
        assert!(!folder(&failed.build_id, "").exists());
        assert!(matches!(
            builder.log(&failed.build_id).await,
            Err(BuildError::NotFound(_))
        ));
    }

    /// The embedded builder publishes each build's end on the build events topic, in Cloud
    /// Build's notification format, as Cloud Build does on `cloud-builds`.
    #[tokio::test]
    async fn announces_each_end_on_the_build_events_topic() {
        let s = uv_builder().await;
        let (good, bad) = (s.repo("good", GOOD_APP), s.broken_repo("bad"));
        let builder = s.builder.as_ref();
        let (built, _) =
            contract::builds_a_commit(builder, contract::request("good", &good), s.timeout).await;
        let (failed, _, log) =
            contract::reports_a_failed_build(builder, contract::request("bad", &bad), s.timeout)
                .await;

        assert!(log.contains("runway-missing-package"), "{log}");
        let recorded = s.recorded.as_ref().expect("the uv builder records");
        let published = recorded.0.lock().unwrap();
        let ids: Vec<(&str, &str)> = published
            .iter()
            .map(|(topic, message)| {
                assert_eq!(*topic, Topic::BuildEvents);
                (
                    message.attributes["buildId"].as_str(),
                    message.attributes["status"].as_str(),
                )
            })
            .collect();
        assert_eq!(
            ids,
            [
                (built.build_id.as_str(), "SUCCESS"),
                (failed.build_id.as_str(), "FAILURE")
            ]
        );
    }
}
